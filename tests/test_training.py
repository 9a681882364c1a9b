"""Training as Caffe trains: frozen variables (lr_mult 0) and BatchNorm's statistics, against NumPy restatements."""

from __future__ import annotations

import json
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
"""


def _weights(rng):
    stats = [rng.normal(size=4).astype(np.float32), rng.uniform(1, 2, size=4).astype(np.float32), np.float32([2.5])]
    return [
        ("conv1", "Convolution", [rng.normal(size=(4, 3, 3, 3)).astype(np.float32), rng.normal(size=4).astype(np.float32)]),
        ("bn1", "BatchNorm", [s.copy() for s in stats]),
        ("scale1", "Scale", [rng.uniform(0.5, 2, size=4).astype(np.float32), rng.normal(size=4).astype(np.float32)]),
        ("bn2", "BatchNorm", stats),
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
    assert trainable == {"conv1/bias", "bn1/gamma", "bn1/beta"}
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
    # lr_mult 0 and use_global_stats: true are never changed by training.
    np.testing.assert_array_equal(model.get_layer("conv1").kernel.numpy(), kernel)
    assert not np.array_equal(model.get_layer("bn1").gamma.numpy(), gamma)
    np.testing.assert_array_equal(bn2.moving_mean.numpy(), frozen_stats[0])
    np.testing.assert_array_equal(bn2.moving_variance.numpy(), frozen_stats[1])


def test_batchnorm_default_follows_the_phase(tmp_path):
    from caffe2py.convert import translate_to_source

    path = tmp_path / "net.prototxt"
    path.write_text(NET.replace("use_global_stats: false ", ""))
    assert "use_global_stats=False," not in translate_to_source(path)
    assert "use_global_stats=False," in translate_to_source(path, phase="TRAIN")


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
