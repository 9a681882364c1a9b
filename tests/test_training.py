"""Training as Caffe trains: frozen variables (lr_mult 0) and BatchNorm's statistics, against NumPy restatements."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.refnet import caffemodel_bytes, load_module

NET = """
name: "finetune"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 dim: 5 dim: 5 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "c1"
  param { lr_mult: 0 } param { lr_mult: 1 }
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "bn1" type: "BatchNorm" bottom: "c1" top: "b1"
  batch_norm_param { use_global_stats: false moving_average_fraction: 0.8 eps: 0.001 } }
layer { name: "scale1" type: "Scale" bottom: "b1" top: "b1" scale_param { bias_term: true } }
layer { name: "bn2" type: "BatchNorm" bottom: "b1" top: "b2" batch_norm_param { use_global_stats: true } }
layer { name: "scale2" type: "Scale" bottom: "b2" top: "b2" scale_param { bias_term: true } }
"""


def _weights(rng):
    stats = [rng.normal(size=4).astype(np.float32), rng.uniform(1, 2, size=4).astype(np.float32), np.float32([2.5])]
    return [
        ("conv1", "Convolution", [rng.normal(size=(4, 3, 3, 3)).astype(np.float32), rng.normal(size=4).astype(np.float32)]),
        ("bn1", "BatchNorm", [s.copy() for s in stats]),
        ("scale1", "Scale", [rng.uniform(0.5, 2, size=4).astype(np.float32), rng.normal(size=4).astype(np.float32)]),
        ("bn2", "BatchNorm", stats),
        ("scale2", "Scale", [rng.uniform(0.5, 2, size=4).astype(np.float32), rng.normal(size=4).astype(np.float32)]),
    ]


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    from caffe2py.convert import translate
    from caffe2py.render import render
    from caffe2py.weights import write_npz

    work = tmp_path_factory.mktemp("finetune")
    (work / "net.prototxt").write_text(NET)
    weights = _weights(np.random.default_rng(13))
    (work / "net.caffemodel").write_bytes(caffemodel_bytes(weights))
    translation = translate(work / "net.prototxt", phase="TRAIN")
    write_npz(translation, work / "net.caffemodel", work / "net.npz")
    source = render(translation, "net.npz")
    return source, load_module(source), work / "net.npz", weights


def test_lr_mult_zero_freezes_one_variable_and_says_why(net):
    source, module, _, _ = net
    assert module.FROZEN == {"conv1/kernel": "layer 'conv1' param 0: lr_mult 0"}
    assert "# Variables Caffe never updates" in source
    model = module.build_model()
    trainable = {v.path for v in model.trainable_variables}
    assert trainable == {"conv1/bias", "bn1/gamma", "bn1/beta", "bn2/gamma", "bn2/beta"}
    assert module.build_model(outputs=["c1"]).get_layer("conv1").kernel.trainable is False


def test_batchnorm_statistics_follow_caffe_in_training(net):
    import keras

    _, module, npz, weights = net
    model = module.build_model()
    module.load_weights(model, npz)
    conv = keras.Model(model.input, model.get_layer("conv1").output)
    kernel = model.get_layer("conv1").kernel.numpy().copy()
    gamma = model.get_layer("bn1").gamma.numpy().copy()
    bn2 = model.get_layer("bn2")
    frozen_stats = bn2.moving_mean.numpy().copy(), bn2.moving_variance.numpy().copy()
    bn2_gamma = bn2.gamma.numpy().copy()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    # Caffe's BatchNorm blobs: S_mean, S_var, S (the statistics are S_mean / S and S_var / S).
    s_mean, s_var, (s,) = (b.astype(np.float64) for b in weights[1][2])
    rng = np.random.default_rng(7)
    for _ in range(3):
        x = rng.uniform(-1, 1, size=(4, 5, 5, 3)).astype(np.float32)
        c1 = np.asarray(conv.predict(x, verbose=0), np.float64).reshape(-1, 4)
        m = c1.shape[0]
        mean, var = c1.mean(0), c1.var(0)
        s, s_mean, s_var = 0.8 * s + 1, 0.8 * s_mean + mean, 0.8 * s_var + var * m / (m - 1)
        model.train_on_batch(x, rng.normal(size=(4, 5, 5, 4)).astype(np.float32))
        bn1 = model.get_layer("bn1")
        np.testing.assert_allclose(bn1.moving_mean.numpy(), s_mean / s, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bn1.moving_variance.numpy(), s_var / s, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bn1.scale_factor.numpy(), s, rtol=1e-6)
    # The training forward pass normalizes with the batch's biased variance.
    x = rng.uniform(-1, 1, size=(4, 5, 5, 3)).astype(np.float32)
    c1 = np.asarray(conv.predict(x, verbose=0), np.float64)
    bn1 = model.get_layer("bn1")
    want = (c1 - c1.mean((0, 1, 2))) / np.sqrt(c1.var((0, 1, 2)) + 0.001) * bn1.gamma.numpy() + bn1.beta.numpy()
    got = keras.Model(model.input, model.get_layer("bn1").output)(x, training=True)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)
    # use_global_stats: true normalizes with the stored statistics in training too.
    b1 = np.asarray(got, np.float64)
    want = (b1 - bn2.moving_mean.numpy()) / np.sqrt(bn2.moving_variance.numpy() + 1e-5) * bn2.gamma.numpy() + bn2.beta.numpy()
    np.testing.assert_allclose(np.asarray(model(x, training=True)), want, rtol=1e-4, atol=1e-4)
    # lr_mult 0 and use_global_stats: true are never changed by training.
    np.testing.assert_array_equal(model.get_layer("conv1").kernel.numpy(), kernel)
    assert not np.array_equal(model.get_layer("bn1").gamma.numpy(), gamma)
    assert not np.array_equal(bn2.gamma.numpy(), bn2_gamma)  # a fused Scale trains either way
    np.testing.assert_array_equal(bn2.moving_mean.numpy(), frozen_stats[0])
    np.testing.assert_array_equal(bn2.moving_variance.numpy(), frozen_stats[1])


def test_batchnorm_default_follows_the_phase(tmp_path):
    from caffe2py.convert import translate_to_source

    path = tmp_path / "net.prototxt"
    path.write_text(NET.replace("use_global_stats: false ", ""))
    assert "CaffeBatchStatsNorm" not in translate_to_source(path)
    assert "CaffeBatchStatsNorm(moving_average_fraction=0.8," in translate_to_source(path, phase="TRAIN")


# -- --solver: the real-Caffe training runs ------------------------------------------------------

CASES = Path(__file__).resolve().parents[2] / "shared" / "oracle" / "train_cases"
CASE_NAMES = ("sgd_step_lenet", "adam_bn_frozen", "nesterov_multistep_clip")


def _materialized(array):
    return array.materialize() if hasattr(array, "materialize") else np.asarray(array)


def _nhwc(array):
    return np.transpose(array, (0, 2, 3, 1)) if array.ndim == 4 else array


@pytest.mark.parametrize("case", CASE_NAMES)
def test_train_case_reproduces_caffe_iteration_by_iteration(case, tmp_path):
    if not (CASES / case).is_dir():
        pytest.skip(f"{CASES / case} is absent: the real-Caffe training runs live beside the repository")
    from caffe2py.cli import main
    from caffe2py.convert import translate

    folder = CASES / case
    info = json.loads((folder / "case.json").read_text())
    net, solver = folder / "net.prototxt", folder / "solver.prototxt"
    argv = [str(net), "--phase", "TRAIN", "--solver", str(solver), "--weights", str(folder / "init.caffemodel")]
    assert main([*argv, "-o", str(tmp_path / "train.py")]) == 0
    # The project's own Caffe -> Keras weight conversion maps Caffe's recorded blobs to Keras layout.
    translation = translate(net, phase="TRAIN", solver=solver)
    module = load_module((tmp_path / "train.py").read_text())
    model = module.compile_model(module.build_model())
    module.load_weights(model, tmp_path / "train.npz")
    batches, expected = np.load(folder / "batches.npz"), np.load(folder / "expected.npz")
    inputs, targets = [t.blob for t in translation.inputs], translation.training["targets"]
    counts = {name: len(shapes) for name, _, shapes in info["layers"]}
    variables = {f"{layer.name}/{v.name}": v for layer in model.layers for v in layer.weights}
    iter_size = info["iter_size"]
    for k in range(1, info["iterations"] + 1):
        np.testing.assert_allclose(float(model.optimizer.learning_rate), expected[f"lr/iter{k}"], rtol=1e-5)
        losses = []
        for j in range(iter_size):
            key = f"/iter{k}" + (f"/sub{j}" if iter_size > 1 else "")
            x = [_nhwc(batches[name + key]) for name in inputs]
            y = [_nhwc(batches[name + key]) for name in targets]
            losses.append(float(model.train_on_batch(x if len(x) > 1 else x[0], y if len(y) > 1 else y[0])))
        want = float(expected[f"loss/iter{k}"])
        assert abs(np.mean(losses) - want) <= 1e-4 * abs(want), (k, losses, want)
        caffe = {layer: [expected[f"params/{layer}/{i}/iter{k}"] for i in range(n)] for layer, n in counts.items()}
        for spec in translation.weights:
            got, ref = variables[spec.key].numpy(), _materialized(spec.convert(caffe[spec.layer]))
            error = np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-12)
            assert error <= 1e-4, f"iteration {k}: {spec.key} differs from Caffe's by {error:.2e} of its largest value"


# -- --solver: the other solvers and policies, against a NumPy restatement of Caffe's solvers -------

REGRESSION = """
name: "regression"
layer { name: "input" type: "Input" top: "data" top: "target"
  input_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  param { lr_mult: 1 } param { lr_mult: 2 decay_mult: 0 } inner_product_param { num_output: 2 } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "target" top: "loss" }
"""


def caffe_learning_rate(s: dict, it: int) -> float:
    """SGDSolver::GetLearningRate, ``it`` being Caffe's iter_ (0 in the first iteration)."""
    policy, base, gamma = s["lr_policy"], s["base_lr"], s.get("gamma", 0.0)
    if policy == "fixed":
        return base
    if policy == "step":
        return base * gamma ** (it // s["stepsize"])
    if policy == "exp":
        return base * gamma**it
    if policy == "inv":
        return base * (1 + gamma * it) ** -s["power"]
    if policy == "multistep":
        step = 0
        for i in range(it + 1):  # current_step_ advances at most once per iteration
            if step < len(s["stepvalue"]) and i >= s["stepvalue"][step]:
                step += 1
        return base * gamma**step
    if policy == "poly":
        return base * (1 - it / s["max_iter"]) ** s["power"]
    return base / (1 + np.exp(-gamma * (it - s["stepsize"])))  # sigmoid


def caffe_train(s: dict, params: list, grads, iterations: int) -> list[list[np.ndarray]]:
    """Solver::Step + SGDSolver::ApplyUpdate and each solver's ComputeUpdateValue (src/caffe/solvers/)."""
    lr_mult, decay_mult = (1.0, 2.0), (1.0, 0.0)  # the net's ParamSpecs (weights, bias)
    kind, momentum, delta = s.get("type", "SGD"), s.get("momentum", 0.0), s.get("delta", 1e-8)
    iter_size, clip = s.get("iter_size", 1), s.get("clip_gradients", -1.0)
    history = [np.zeros_like(p) for p in params]
    history2 = [np.zeros_like(p) for p in params]
    trace = []
    for it in range(iterations):
        diffs = [sum(g) for g in zip(*(grads(params, it, j) for j in range(iter_size)))]
        rate = caffe_learning_rate(s, it)
        norm = np.sqrt(sum((d**2).sum() for d in diffs))  # ClipGradients
        if 0 <= clip < norm:
            diffs = [d * (clip / norm) for d in diffs]
        for i, (p, d) in enumerate(zip(params, diffs)):
            d = d / iter_size  # Normalize
            decay = s.get("weight_decay", 0.0) * decay_mult[i]  # Regularize
            d = d + decay * (p if s.get("regularization_type", "L2") == "L2" else np.sign(p))
            local = rate * lr_mult[i]
            h, h2 = history[i], history2[i]
            if kind == "SGD":
                h[...] = local * d + momentum * h
                update = h.copy()
            elif kind == "Nesterov":
                old = h.copy()
                h[...] = momentum * h + local * d
                update = (1 + momentum) * h - momentum * old
            elif kind == "AdaGrad":
                h += d**2
                update = local * d / (np.sqrt(h) + delta)
            elif kind == "RMSProp":
                h[...] = (1 - s["rms_decay"]) * d**2 + s["rms_decay"] * h
                update = local * d / (np.sqrt(h) + delta)
            elif kind == "AdaDelta":
                h[...] = (1 - momentum) * d**2 + momentum * h
                d = d * np.sqrt((h2 + delta) / (h + delta))
                h2[...] = (1 - momentum) * d**2 + momentum * h2
                update = local * d
            else:  # Adam
                t = it + 1
                correction = np.sqrt(1 - s["momentum2"] ** t) / (1 - momentum**t)
                h[...] = (1 - momentum) * d + momentum * h
                h2[...] = (1 - s["momentum2"]) * d**2 + s["momentum2"] * h2
                update = local * correction * h / (np.sqrt(h2) + delta)
            p -= update
        trace.append([p.copy() for p in params])
    return trace


SOLVERS = {
    "adagrad_exp": {"type": "AdaGrad", "base_lr": 0.5, "lr_policy": "exp", "gamma": 0.8, "delta": 1e-6,
                    "weight_decay": 0.01},
    "rmsprop_inv": {"type": "RMSProp", "base_lr": 0.05, "lr_policy": "inv", "gamma": 0.5, "power": 0.75,
                    "rms_decay": 0.9, "weight_decay": 0.01, "regularization_type": "L1"},
    "adadelta_poly_iter_size": {"type": "AdaDelta", "base_lr": 1.0, "lr_policy": "poly", "power": 1.5,
                                "max_iter": 8, "momentum": 0.95, "delta": 1e-6, "iter_size": 2},
    "sgd_sigmoid_clip_l1": {"type": "SGD", "base_lr": 0.2, "lr_policy": "sigmoid", "gamma": -0.5, "stepsize": 2,
                            "momentum": 0.8, "weight_decay": 0.02, "regularization_type": "L1",
                            "clip_gradients": 0.5, "iter_size": 2},
}


def _solver_text(s: dict) -> str:
    lines = ['net: "net.prototxt"', "max_iter: 8"] if "max_iter" not in s else ['net: "net.prototxt"']
    for key, value in s.items():
        lines.append(f'{key}: "{value}"' if isinstance(value, str) else f"{key}: {value}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("name", list(SOLVERS))
def test_solver_matches_numpy_restatement_of_caffe(name, tmp_path):
    from caffe2py.convert import translate
    from caffe2py.render import render
    from caffe2py.weights import write_npz

    s = SOLVERS[name]
    (tmp_path / "net.prototxt").write_text(REGRESSION)
    (tmp_path / "solver.prototxt").write_text(_solver_text(s))
    rng = np.random.default_rng(len(name))
    weight, bias = rng.normal(size=(2, 3)).astype(np.float32), rng.normal(size=2).astype(np.float32)
    (tmp_path / "net.caffemodel").write_bytes(caffemodel_bytes([("ip", "InnerProduct", [weight, bias])]))
    translation = translate(tmp_path / "net.prototxt", phase="TRAIN", solver=tmp_path / "solver.prototxt")
    write_npz(translation, tmp_path / "net.caffemodel", tmp_path / "net.npz")
    module = load_module(render(translation, "net.npz"))
    model = module.compile_model(module.build_model())
    module.load_weights(model, tmp_path / "net.npz")
    iter_size, iterations = s.get("iter_size", 1), 6
    batches = [[(rng.uniform(-1, 1, (4, 3)), rng.uniform(-1, 1, (4, 2))) for _ in range(iter_size)] for _ in range(iterations)]

    def euclidean_grads(params, it, j):  # EuclideanLoss over InnerProduct: sum((xW'+b-t)**2) / 2N
        x, t = batches[it][j]
        diff = x @ params[0].T + params[1] - t
        return [diff.T @ x / len(x), diff.sum(0) / len(x)]

    trace = caffe_train(s, [weight.astype(np.float64), bias.astype(np.float64)], euclidean_grads, iterations)
    layer = model.get_layer("ip")
    for it in range(iterations):
        np.testing.assert_allclose(float(model.optimizer.learning_rate), caffe_learning_rate(s, it), rtol=1e-5)
        for x, t in batches[it]:
            model.train_on_batch(x.astype(np.float32), t.astype(np.float32))
        for got, want in ((layer.kernel.numpy().T, trace[it][0]), (layer.bias.numpy(), trace[it][1])):
            assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), (name, it, got, want)


@pytest.mark.parametrize("policy", ["fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid"])
def test_learning_rate_policies_match_caffe(policy):
    import keras  # noqa: F401  (the module's classes need Keras)

    from caffe2py.render import templates_dir

    source = "import keras\nfrom keras import ops\n\n\n" + (templates_dir() / "helpers" / "CaffeLearningRate.py.jinja").read_text()
    module = load_module(source)
    s = {"base_lr": 0.1, "lr_policy": policy, "gamma": 0.9 if policy != "sigmoid" else -0.2, "power": 0.7,
         "stepsize": 4, "stepvalue": (3, 5, 11), "max_iter": 40}
    for iter_size in (1, 3):
        schedule = module.CaffeLearningRate(**s, iter_size=iter_size)
        for step in range(0, 40 * iter_size, 2):
            want = caffe_learning_rate(s, step // iter_size)
            np.testing.assert_allclose(float(schedule(step)), want, rtol=2e-6, err_msg=f"{policy} step {step}")


LOSSES = """
name: "losses"
layer { name: "input" type: "Input" top: "data" top: "labels" top: "bits" top: "classes"
  input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } shape { dim: 2 dim: 1 dim: 4 dim: 4 }
                shape { dim: 2 dim: 2 dim: 4 dim: 4 } shape { dim: 2 } } }
layer { name: "score" type: "Convolution" bottom: "data" top: "score" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "seg_loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "labels" top: "seg_loss"
  loss_weight: 0.5 loss_param { ignore_label: 255 normalization: FULL } }
layer { name: "logit" type: "Convolution" bottom: "data" top: "logit" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "bit_loss" type: "SigmoidCrossEntropyLoss" bottom: "logit" bottom: "bits" top: "bit_loss" }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 3 } }
layer { name: "hinge" type: "HingeLoss" bottom: "ip" bottom: "classes" top: "hinge" loss_weight: 2
  hinge_loss_param { norm: L2 } }
"""


def test_loss_layers_match_caffe(tmp_path):
    from caffe2py.convert import translate_to_source

    (tmp_path / "net.prototxt").write_text(LOSSES)
    (tmp_path / "solver.prototxt").write_text('base_lr: 0 lr_policy: "fixed"\n')
    module = load_module(translate_to_source(tmp_path / "net.prototxt", phase="TRAIN", solver=tmp_path / "solver.prototxt"))
    model = module.compile_model(module.build_model())
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (2, 4, 4, 3)).astype(np.float32)
    labels = rng.integers(0, 4, (2, 4, 4, 1)).astype(np.float32)
    labels[0, 0, :2] = 255
    bits = rng.integers(0, 2, (2, 4, 4, 2)).astype(np.float32)
    classes = np.float32([2, 0])
    score, logit, ip = (np.asarray(v, np.float64) for v in model.predict(x, verbose=0))
    # SoftmaxWithLoss: -log softmax over channels at each labelled position; FULL divides by N*H*W.
    log_prob = score - score.max(-1, keepdims=True)
    log_prob -= np.log(np.exp(log_prob).sum(-1, keepdims=True))
    flat, label = log_prob.reshape(-1, 4), labels.reshape(-1).astype(int)
    kept = label != 255
    seg = -flat[kept, label[kept]].sum() / label.size
    # SigmoidCrossEntropyLoss (Caffe's stable form), divided by the batch size by default.
    positive = (logit >= 0).astype(np.float64)
    bit = -(logit * (bits - positive) - np.log(1 + np.exp(logit - 2 * logit * positive))).sum() / 2
    # HingeLoss L2: squared margins max(0, 1 -+ score) over the batch size.
    sign = np.where(np.arange(3) == classes[:, None], -1.0, 1.0)
    hinge = (np.maximum(0, 1 + sign * ip) ** 2).sum() / 2
    total = model.train_on_batch(x, [labels, bits, classes])
    np.testing.assert_allclose(float(np.ravel(total)[0]), 0.5 * seg + bit + 2 * hinge, rtol=1e-5)


@pytest.mark.parametrize(
    ("solver", "net_change", "message"),
    [
        ('base_lr: 0.1 lr_policy: "cosine"', None, "lr_policy: 'cosine' is not one of Caffe's policies"),
        ('base_lr: 0.1 lr_policy: "fixed" type: "Lion"', None, "type: 'Lion' is not one of Caffe's solvers"),
        ('base_lr: 0.1 lr_policy: "fixed" regularization_type: "L3"', None, "regularization_type: 'L3'"),
        ('base_lr: 0.1 lr_policy: "step"', None, "stepsize: lr_policy step needs a positive stepsize"),
        ('base_lr: 0.1 lr_policy: "fixed" type: "AdaGrad" momentum: 0.9', None, "momentum: Caffe's AdaGrad"),
        ('base_lr: 0.1 lr_policy: "multistep" stepvalue: 5 stepvalue: 2', None, "stepvalue: [5, 2] must increase"),
        ('base_lr: 0.1 lr_policy: "fixed" weights: "a.caffemodel"', None, "weights: not supported"),
        ('base_lr: 0.1 lr_policy: "fixed"', ('"EuclideanLoss"', '"ContrastiveLoss"'), "loss type not supported"),
        ('base_lr: 0.1 lr_policy: "fixed"', ('bottom: "target" top: "loss"', 'bottom: "data" top: "loss"'),
         "bottom 'data' must be an input that only loss layers read"),
    ],
)
def test_what_cannot_be_honoured_is_an_error_naming_it(tmp_path, solver, net_change, message):
    from caffe2py.convert import translate
    from caffe2py.errors import TranslationError

    net = REGRESSION if net_change is None else REGRESSION.replace(*net_change)
    (tmp_path / "net.prototxt").write_text(net)
    (tmp_path / "solver.prototxt").write_text(solver + "\n")
    with pytest.raises(TranslationError, match=re.escape(message)):
        translate(tmp_path / "net.prototxt", phase="TRAIN", solver=tmp_path / "solver.prototxt")


def test_solver_needs_the_train_phase(tmp_path):
    from caffe2py.cli import main

    (tmp_path / "net.prototxt").write_text(REGRESSION)
    (tmp_path / "solver.prototxt").write_text('base_lr: 0.1 lr_policy: "fixed"\n')
    assert main([str(tmp_path / "net.prototxt"), "--solver", str(tmp_path / "solver.prototxt"), "-o", str(tmp_path / "m.py")]) == 2
    assert not (tmp_path / "m.py").exists()


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_solver_on_other_backends(backend, tmp_path):
    """CaffeSolver is keras.ops only: the same NumPy restatement holds on JAX and PyTorch."""
    import os
    import subprocess
    import sys

    pytest.importorskip(backend)
    root = Path(__file__).resolve().parents[1]
    script = (
        "import pathlib, sys\n"
        "from tests.test_training import test_solver_matches_numpy_restatement_of_caffe as check\n"
        "for i, name in enumerate(sys.argv[2:]):\n"
        "    folder = pathlib.Path(sys.argv[1]) / str(i)\n"
        "    folder.mkdir()\n"
        "    check(name, folder)\n"
    )
    names = ["sgd_sigmoid_clip_l1", "adadelta_poly_iter_size"]
    env = {**os.environ, "KERAS_BACKEND": backend}
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path), *names], cwd=root, env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
