"""Training as Caffe trains: frozen variables (lr_mult 0) and BatchNorm's statistics, against NumPy restatements."""

from __future__ import annotations

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
