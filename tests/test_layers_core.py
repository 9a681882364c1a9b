"""Numeric tests of the core layer set against OpenCV's Caffe importer and NumPy restatements of Caffe."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from tests.refnet import assert_close, keras_forward, opencv_forward

pytest.importorskip("cv2", reason="opencv-python-headless<5 is the independent Caffe runtime")


def _net(shape, body: str) -> str:
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'input: "data"\ninput_shape {{ {dims} }}\n{body}'


def _compare(proto: str, x: np.ndarray, weights, outputs, rtol=1e-4):
    got = keras_forward(proto, {"data": x}, weights, outputs=outputs)
    want = opencv_forward(proto, {"data": x}, weights, outputs=outputs)
    for name in outputs:
        assert_close(got[name], want[name], rtol)


def _rng(*key: object) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


CONV_CASES = [
    # (channels, H, W, num_output, params, group)
    (3, 11, 13, 4, "kernel_size: 3", 1),
    (4, 11, 13, 6, "kernel_size: 3 pad: 1 stride: 2", 2),
    (4, 12, 12, 4, "kernel_size: 3 pad: 1", 4),  # depthwise
    (4, 12, 12, 8, "kernel_size: 3 pad: 1 stride: 2", 4),  # depthwise, multiplier 2
    (6, 13, 11, 6, "kernel_h: 3 kernel_w: 5 pad_h: 1 pad_w: 2 stride_h: 2 stride_w: 1", 3),
    (3, 15, 15, 5, "kernel_size: 3 dilation: 2 pad: 2", 1),
    (3, 17, 16, 5, "kernel_size: 3 dilation: 2 stride: 2 pad: 1", 1),  # Keras refuses both at once
    (3, 11, 13, 4, "kernel_size: 5 stride: 3 pad: 2 bias_term: false", 1),
    (8, 9, 9, 8, "kernel_size: 1 stride: 2", 2),
]


@pytest.mark.parametrize("channels,h,w,out,params,group", CONV_CASES)
def test_convolution(channels, h, w, out, params, group):
    rng = _rng("conv", params, group)
    proto = _net(
        (2, channels, h, w),
        f'layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"\n'
        f"  convolution_param {{ num_output: {out} group: {group} {params} }} }}",
    )
    kernel = [int(v) for v in params.split("kernel_size: ")[1].split()[:1]] * 2 if "kernel_size" in params else [
        int(params.split("kernel_h: ")[1].split()[0]),
        int(params.split("kernel_w: ")[1].split()[0]),
    ]
    blobs = [rng.normal(size=(out, channels // group, *kernel)).astype(np.float32)]
    if "bias_term: false" not in params:
        blobs.append(rng.normal(size=(out,)).astype(np.float32))
    x = rng.normal(size=(2, channels, h, w)).astype(np.float32)
    _compare(proto, x, [("conv", "Convolution", blobs)], ["conv"])


def test_native_groups_match_the_split():
    rng = _rng("native")
    proto = _net(
        (1, 8, 10, 10),
        'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"\n'
        "  convolution_param { num_output: 12 kernel_size: 3 pad: 1 group: 4 } }",
    )
    weights = [("conv", "Convolution", [rng.normal(size=(12, 2, 3, 3)).astype(np.float32), np.zeros(12, np.float32)])]
    x = rng.normal(size=(1, 8, 10, 10)).astype(np.float32)
    split = keras_forward(proto, {"data": x}, weights)["conv"]
    native = keras_forward(proto, {"data": x}, weights, native_groups=True)["conv"]
    assert_close(native, split, 1e-5)


POOL_CASES = [
    ("MAX", "kernel_size: 3 stride: 2", 13, 11),  # ceil-mode overhang
    ("MAX", "kernel_size: 3 stride: 2 pad: 1", 11, 13),  # padding never selected
    ("MAX", "kernel_size: 3 stride: 1 pad: 1", 12, 12),  # matches Keras "same"
    ("MAX", "kernel_size: 2 stride: 2", 12, 12),
    ("AVE", "kernel_size: 3 stride: 2", 13, 11),
    ("AVE", "kernel_size: 3 stride: 2 pad: 1", 11, 13),  # padding counts, overhang does not
    ("AVE", "kernel_size: 3 stride: 1 pad: 1", 12, 12),
    ("AVE", "kernel_size: 5 stride: 3", 14, 14),
    ("AVE", "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0", 9, 10),
    ("MAX", "global_pooling: true", 7, 9),
    ("AVE", "global_pooling: true", 7, 9),
]


@pytest.mark.parametrize("method,params,h,w", POOL_CASES)
def test_pooling(method, params, h, w):
    rng = _rng("pool", method, params)
    proto = _net(
        (2, 3, h, w),
        f'layer {{ name: "pool" type: "Pooling" bottom: "data" top: "pool"\n'
        f"  pooling_param {{ pool: {method} {params} }} }}",
    )
    x = rng.normal(size=(2, 3, h, w)).astype(np.float32) - 3.0  # negative inputs: MAX must not see zeros
    _compare(proto, x, [], ["pool"])


def _caffe_pool_reference(x, k, s, p, method, ceil_mode=True):
    """Caffe's pooling_layer.cpp loops, written out in NumPy."""
    n, c, h, w = x.shape
    out = []
    for size in (h, w):
        span = size + 2 * p - k
        o = -(-span // s) + 1 if ceil_mode else span // s + 1
        if p and (o - 1) * s >= size + p:
            o -= 1
        out.append(o)
    y = np.zeros((n, c, *out), np.float32)
    for i in range(out[0]):
        for j in range(out[1]):
            hs, ws = i * s - p, j * s - p
            he, we = min(hs + k, h + p), min(ws + k, w + p)
            count = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            window = x[:, :, hs:he, ws:we]
            y[:, :, i, j] = window.max(axis=(2, 3)) if method == "MAX" else window.sum(axis=(2, 3)) / count
    return y


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("h,k,s,p", [(7, 2, 3, 0), (10, 4, 3, 2), (7, 3, 3, 1), (8, 2, 2, 1), (13, 3, 2, 1)])
@pytest.mark.parametrize("rounding", ["", "round_mode: FLOOR", "ceil_mode: false"])
def test_pooling_against_caffe_loops(method, h, k, s, p, rounding):
    # OpenCV reads neither BVLC's round_mode nor the forks' ceil_mode: compare with Caffe's loops.
    rng = _rng("loops", method, h, k, s, p, rounding)
    proto = _net(
        (1, 2, h, h + 1),
        f'layer {{ name: "pool" type: "Pooling" bottom: "data" top: "pool"\n'
        f"  pooling_param {{ pool: {method} kernel_size: {k} stride: {s} pad: {p} {rounding} }} }}",
    )
    x = rng.normal(size=(1, 2, h, h + 1)).astype(np.float32) - 1.0
    got = keras_forward(proto, {"data": x})["pool"]
    assert_close(got, _caffe_pool_reference(x, k, s, p, method, ceil_mode=not rounding), 1e-5)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("h,w,k,s,p", [(1, 1, 2, 2, 0), (2, 3, 4, 3, 0), (3, 4, 6, 4, 1), (1, 1, 4, 4, 1)])
def test_pooling_window_larger_than_the_padded_input(method, h, w, k, s, p):
    # OpenPose declares 1x1 inputs: Caffe's ceil mode still gives an output, its window clipped.
    rng = _rng("larger", method, h, w, k, s, p)
    proto = _net(
        (1, 2, h, w),
        f'layer {{ name: "pool" type: "Pooling" bottom: "data" top: "pool"\n'
        f"  pooling_param {{ pool: {method} kernel_size: {k} stride: {s} pad: {p} }} }}",
    )
    x = rng.normal(size=(1, 2, h, w)).astype(np.float32) - 1.0
    want = _caffe_pool_reference(x, k, s, p, method)
    assert want.shape[2:] == (1, 1)
    assert_close(keras_forward(proto, {"data": x})["pool"], want, 1e-5)


# Each pooling's module layer is chosen for every input size (build_model takes any): these are checked at
# sizes of both parities. MAX in ceil mode at stride 2 with kernel 2 * pad + 2 is Keras' "same"; a 3x3
# window (an overhang Keras would put at the start) and AVE (Caffe's divisor) need the helper.
SIZED_POOLS = [  # (name, method, kernel, stride, pad, Keras layer)
    ("p_k2", "MAX", 2, 2, 0, 'layers.MaxPooling2D(2, padding="same", name="p_k2")'),
    ("p_k4", "MAX", 4, 2, 1, 'layers.MaxPooling2D(4, strides=2, padding="same", name="p_k4")'),
    ("p_k3", "MAX", 3, 2, 0, 'CaffePooling2D("max", 3, strides=2, name="p_k3")'),
    ("p_ave", "AVE", 2, 2, 0, 'CaffePooling2D("avg", 2, strides=2, name="p_ave")'),
]


def test_pooling_layers_hold_at_every_input_size(tmp_path):
    from caffe2py.convert import translate
    from caffe2py.render import render
    from tests.refnet import load_module

    body = "\n".join(
        f'layer {{ name: "{name}" type: "Pooling" bottom: "data" top: "{name}"\n'
        f"  pooling_param {{ pool: {method} kernel_size: {k} stride: {s} pad: {p} }} }}"
        for name, method, k, s, p, _ in SIZED_POOLS
    )
    path = tmp_path / "pools.prototxt"
    path.write_text(_net((1, 3, 11, 11), body))
    source = render(translate(path))
    for *_, layer in SIZED_POOLS:
        assert f"= {layer}(" in source, layer
    model_of = load_module(source).build_model
    names = [name for name, *_ in SIZED_POOLS]
    for size in ((11, 11), (12, 12), (7, 10), (3, 4)):
        x = _rng("sized", size).normal(size=(2, 3, *size)).astype(np.float32) - 1.0
        got = model_of((*size, 3), outputs=names).predict(x.transpose(0, 2, 3, 1), verbose=0)
        for (name, method, k, s, p, _), out in zip(SIZED_POOLS, got):
            want = _caffe_pool_reference(x, k, s, p, method)
            assert_close(out.transpose(0, 3, 1, 2), want, 1e-6)


def _lrn_reference(x, n, alpha, beta, k, region):
    """Caffe's lrn_layer.cpp: across channels, or a power-of-pooled-squares within each channel."""
    half = n // 2
    sq = x.astype(np.float64) ** 2
    if region == "ACROSS_CHANNELS":
        padded = np.pad(sq, ((0, 0), (half, half), (0, 0), (0, 0)))
        total = sum(padded[:, i : i + x.shape[1]] for i in range(n))
        scale = k + alpha / n * total
    else:
        padded = np.pad(sq, ((0, 0), (0, 0), (half, half), (half, half)))
        h, w = x.shape[2:]
        total = sum(padded[:, :, i : i + h, j : j + w] for i in range(n) for j in range(n))
        scale = 1.0 + alpha * total / (n * n)
    return (x / scale**beta).astype(np.float32)


@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
@pytest.mark.parametrize("n,alpha,beta,k", [(5, 1e-4, 0.75, 1.0), (3, 0.9, 0.5, 2.0), (1, 0.3, 1.2, 0.5)])
def test_lrn(region, n, alpha, beta, k):
    rng = _rng("lrn", region, n)
    proto = _net(
        (2, 7, 9, 11),
        f'layer {{ name: "lrn" type: "LRN" bottom: "data" top: "lrn"\n'
        f"  lrn_param {{ local_size: {n} alpha: {alpha} beta: {beta} k: {k} norm_region: {region} }} }}",
    )
    x = rng.normal(scale=3.0, size=(2, 7, 9, 11)).astype(np.float32)
    got = keras_forward(proto, {"data": x})["lrn"]
    assert_close(got, _lrn_reference(x, n, alpha, beta, k, region), 1e-5)
    if k == 1.0:  # OpenCV ignores k: compare with it only where k is Caffe's default
        assert_close(got, opencv_forward(proto, {"data": x}, outputs=["lrn"])["lrn"], 1e-4)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("factor", [0.999, 0.0])
def test_batchnorm_with_scale(bias, factor):
    rng = _rng("bn", bias, factor)
    c = 5
    proto = _net(
        (2, c, 6, 7),
        'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" batch_norm_param { eps: 0.001 } }\n'
        f'layer {{ name: "sc" type: "Scale" bottom: "bn" top: "bn" scale_param {{ bias_term: {str(bias).lower()} }} }}',
    )
    mean, var = rng.normal(size=c).astype(np.float32), rng.uniform(0.5, 2, size=c).astype(np.float32)
    stats = [mean * factor, var * factor, np.array([factor], np.float32)]
    scale = [rng.uniform(0.5, 1.5, size=c).astype(np.float32)] + ([rng.normal(size=c).astype(np.float32)] if bias else [])
    weights = [("bn", "BatchNorm", stats), ("sc", "Scale", scale)]
    x = rng.normal(size=(2, c, 6, 7)).astype(np.float32)
    got = keras_forward(proto, {"data": x}, weights)["bn"]
    m, v = (mean, var) if factor else (np.zeros(c), np.zeros(c))
    want = (x - m[:, None, None]) / np.sqrt(v[:, None, None] + 1e-3) * scale[0][:, None, None]
    if bias:
        want = want + scale[1][:, None, None]
    assert_close(got, want.astype(np.float32), 1e-5)


@pytest.mark.parametrize(
    "before",
    [
        "",  # InnerProduct straight on a 4-D blob: Caffe flattens C,H,W
        'layer { name: "flat" type: "Flatten" bottom: "data" top: "data2" }',
        (
            'layer { name: "conv" type: "Convolution" bottom: "data" top: "data2" '
            "convolution_param { num_output: 3 kernel_size: 1 } }"
        ),
    ],
)
@pytest.mark.parametrize("transpose", [False, True])
def test_inner_product_weight_order(before, transpose):
    rng = _rng("ip", before, transpose)
    bottom = "data2" if before else "data"
    c = 3
    proto = _net(
        (2, c, 5, 4),
        f"{before}\n"
        f'layer {{ name: "fc" type: "InnerProduct" bottom: "{bottom}" top: "fc"\n'
        f"  inner_product_param {{ num_output: 7 transpose: {str(transpose).lower()} }} }}",
    )
    k = c * 5 * 4
    weights = [("fc", "InnerProduct", [rng.normal(size=(k, 7) if transpose else (7, k)).astype(np.float32), rng.normal(size=7).astype(np.float32)])]
    if "Convolution" in before:
        weights.insert(0, ("conv", "Convolution", [rng.normal(size=(3, c, 1, 1)).astype(np.float32), np.zeros(3, np.float32)]))
    x = rng.normal(size=(2, c, 5, 4)).astype(np.float32)
    got = keras_forward(proto, {"data": x}, weights)["fc"]
    flat = x
    if "Convolution" in before:
        flat = np.einsum("oc,nchw->nohw", weights[0][2][0][:, :, 0, 0], x)
    w, b = weights[-1][2]
    # OpenCV ignores `transpose`; Caffe then stores the weights as (K, O).
    want = flat.reshape(2, -1) @ (w if transpose else w.T) + b
    assert_close(got, want.astype(np.float32), 1e-5)
    if not transpose:
        assert_close(got, opencv_forward(proto, {"data": x}, weights, outputs=["fc"])["fc"])


@pytest.mark.parametrize("axis", [1, 2, 3, -1])
def test_softmax_axis(axis):
    rng = _rng("softmax", axis)
    proto = _net((2, 4, 5, 6), f'layer {{ name: "sm" type: "Softmax" bottom: "data" top: "sm" softmax_param {{ axis: {axis} }} }}')
    x = rng.normal(size=(2, 4, 5, 6)).astype(np.float32)
    got = keras_forward(proto, {"data": x})["sm"]
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    assert_close(got, e / e.sum(axis=axis, keepdims=True), 1e-5)


@pytest.mark.parametrize("axis", [1, 2, 3])
def test_concat_axis(axis):
    rng = _rng("concat", axis)
    proto = _net(
        (2, 3, 4, 5),
        'layer { name: "relu" type: "ReLU" bottom: "data" top: "r" }\n'
        f'layer {{ name: "cat" type: "Concat" bottom: "data" bottom: "r" top: "cat" concat_param {{ axis: {axis} }} }}',
    )
    x = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    got = keras_forward(proto, {"data": x})["cat"]
    assert_close(got, np.concatenate([x, np.maximum(x, 0)], axis=axis), 1e-6)


@pytest.mark.parametrize(
    "params,combine",
    [
        ("operation: SUM", lambda a, b: a + b),
        ("operation: SUM coeff: 0.5 coeff: -2", lambda a, b: 0.5 * a - 2 * b),
        ("operation: PROD", lambda a, b: a * b),
        ("operation: MAX", np.maximum),
    ],
)
def test_eltwise(params, combine):
    rng = _rng("eltwise", params)
    proto = _net(
        (2, 3, 4, 5),
        'layer { name: "act" type: "TanH" bottom: "data" top: "t" }\n'
        f'layer {{ name: "el" type: "Eltwise" bottom: "data" bottom: "t" top: "el" eltwise_param {{ {params} }} }}',
    )
    x = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    got = keras_forward(proto, {"data": x})["el"]
    assert_close(got, combine(x, np.tanh(x)).astype(np.float32), 1e-5)


@pytest.mark.parametrize(
    "layer,reference",
    [
        ('type: "ReLU"', lambda x: np.maximum(x, 0)),
        ('type: "ReLU" relu_param { negative_slope: 0.1 }', lambda x: np.where(x > 0, x, 0.1 * x)),
        ('type: "Sigmoid"', lambda x: 1 / (1 + np.exp(-x))),
        ('type: "TanH"', np.tanh),
        ('type: "Dropout" dropout_param { dropout_ratio: 0.3 }', lambda x: x),
        ('type: "ReLU6"', lambda x: np.minimum(np.maximum(x, 0), 6)),  # ReLU6Layer's loop
        ('type: "Mish"', lambda x: x * np.tanh(np.log1p(np.exp(x.astype(np.float64))))),  # MishLayer
    ],
)
def test_elementwise(layer, reference):
    rng = _rng("act", layer)
    proto = _net((2, 3, 4, 5), f'layer {{ name: "act" {layer} bottom: "data" top: "out" }}')
    x = rng.normal(size=(2, 3, 4, 5)).astype(np.float32) * 4  # beyond ReLU6's 6 and Mish's bends
    assert_close(keras_forward(proto, {"data": x})["out"], reference(x).astype(np.float32), 1e-6)
