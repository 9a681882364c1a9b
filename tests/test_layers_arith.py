"""Numeric tests of the element-wise arithmetic and activation layers against OpenCV and NumPy restatements of Caffe."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from caffe2py.errors import TranslationError
from tests.refnet import assert_close, keras_forward, opencv_forward


def _rng(*key: object) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _net(inputs: dict[str, tuple[int, ...]], body: str) -> str:
    lines = [
        f'input: "{name}"\ninput_shape {{ {" ".join(f"dim: {d}" for d in shape)} }}' for name, shape in inputs.items()
    ]
    return "\n".join(lines) + "\n" + body


def _layer(kind: str, params: str = "", bottoms: tuple[str, ...] = ("data",), name: str = "out") -> str:
    bottom = " ".join(f'bottom: "{b}"' for b in bottoms)
    return f'layer {{ name: "{name}" type: "{kind}" {bottom} top: "{name}" {params} }}\n'


def _source(shape: tuple[int, ...], name: str = "data") -> tuple[dict, str, str]:
    """Inputs, layers and bottom name giving a blob of ``shape``.

    The harness feeds only 4-D inputs in Keras' layout, so a 3-D blob is flattened from a 4-D one.
    """
    if len(shape) != 3:
        return {name: shape}, "", name
    return {name: (*shape, 1)}, _layer("Flatten", "flatten_param { axis: 2 }", (name,), name=f"{name}3"), f"{name}3"


def _fed(x: np.ndarray) -> np.ndarray:
    """The input array behind a ``_source`` blob."""
    return x[..., None] if x.ndim == 3 else x


def _identity_ip(size: int, bottom: str = "out") -> tuple[str, tuple]:
    """A Dense layer that leaves its input as is: a flattened blob back in Caffe's element order."""
    params = f"inner_product_param {{ num_output: {size} bias_term: false }}"
    weights = ("ip", "InnerProduct", [np.eye(size, dtype=np.float32)])
    return _layer("InnerProduct", params, (bottom,), name="ip"), weights


def _along(blob: np.ndarray, axis: int, rank: int) -> np.ndarray:
    """``blob`` shaped to broadcast over a ``rank``-D array from ``axis`` on, as Caffe applies it."""
    return blob.reshape((1,) * axis + blob.shape + (1,) * (rank - axis - blob.ndim))


# -- against OpenCV's Caffe importer ---------------------------------------------------------------
# (type, params, blob shapes, input shape, input spread)
OPENCV_CASES = [
    ("Power", "power_param { power: 2 scale: 0.5 shift: 1 }", [], (2, 3, 11, 13), 1.0),
    ("Power", "power_param { power: 3 scale: -1.5 shift: 0.25 }", [], (2, 3, 11, 13), 1.0),
    ("Power", "power_param { power: 0.5 shift: 6 }", [], (2, 3, 11, 13), 1.0),
    ("Power", "power_param { scale: 2 shift: -1 }", [], (2, 3, 11, 13), 1.0),
    ("Power", "power_param { scale: -0.5 }", [], (2, 6), 1.0),
    ("Power", "", [], (2, 3, 5, 7), 1.0),
    ("Exp", "", [], (2, 3, 11, 13), 1.0),
    ("Exp", "exp_param { base: 2 scale: 0.5 shift: 1 }", [], (2, 3, 11, 13), 1.0),
    ("Exp", "exp_param { base: 10 scale: -0.3 shift: -0.5 }", [], (2, 5), 1.0),
    ("AbsVal", "", [], (2, 3, 11, 13), 1.0),
    ("BNLL", "", [], (2, 3, 11, 13), 40.0),  # exp(+-100) would overflow a naive log(1 + exp(x))
    ("ELU", "", [], (2, 3, 11, 13), 2.0),
    ("ELU", "elu_param { alpha: 0.3 }", [], (2, 4, 9), 2.0),
    ("Swish", "", [], (2, 3, 11, 13), 3.0),
    ("PReLU", "", [(3,)], (2, 3, 11, 13), 1.0),
    ("PReLU", "", [(5,)], (2, 5), 1.0),
    ("Scale", "", [(3,)], (2, 3, 11, 13), 1.0),
    ("Scale", "scale_param { bias_term: true }", [(3,), (3,)], (2, 3, 11, 13), 1.0),
    ("Scale", "scale_param { axis: 1 num_axes: 2 }", [(3, 11)], (2, 3, 11, 13), 1.0),
    ("Scale", "scale_param { axis: 2 num_axes: -1 bias_term: true }", [(11, 13), (11, 13)], (2, 3, 11, 13), 1.0),
]


@pytest.mark.parametrize("kind,params,blob_shapes,shape,spread", OPENCV_CASES)
def test_against_opencv(kind, params, blob_shapes, shape, spread):
    rng = _rng(kind, params, shape)
    inputs, prefix, bottom = _source(shape)
    proto = _net(inputs, prefix + _layer(kind, params, (bottom,)))
    weights = (
        [("out", kind, [rng.normal(0.0, 0.7, size=s).astype(np.float32) for s in blob_shapes])] if blob_shapes else []
    )
    x = _fed((rng.normal(size=shape) * spread).astype(np.float32))
    got = keras_forward(proto, {"data": x}, weights, outputs=["out"])["out"]
    want = opencv_forward(proto, {"data": x}, weights, outputs=["out"])["out"]
    assert_close(got, want)


# -- against NumPy restatements of Caffe's forward passes --------------------------------------------


def _check(proto: str, inputs: dict[str, np.ndarray], want: np.ndarray, weights=(), rtol=1e-5, output="out", **options):
    got = keras_forward(proto, inputs, weights, outputs=[output], **options)[output]
    assert_close(got, want, rtol)


@pytest.mark.parametrize(
    "params,base,scale,shift",
    [
        ("", np.e, 1.0, 0.0),
        ("log_param { shift: 6 }", np.e, 1.0, 6.0),
        ("log_param { base: 2 scale: 0.5 shift: 10 }", 2.0, 0.5, 10.0),
        ("log_param { base: 10 scale: -2 shift: 12 }", 10.0, -2.0, 12.0),
    ],
)
def test_log(params, base, scale, shift):
    # NumPy, not OpenCV: OpenCV's importer reads Log as the natural log and ignores log_param.
    x = _rng("log", params).normal(size=(2, 3, 11, 13)).astype(np.float32)
    if not params:
        x = np.abs(x) + 0.1
    want = np.log(shift + scale * x.astype(np.float64)) / np.log(base)
    _check(_net({"data": x.shape}, _layer("Log", params)), {"data": x}, want)


@pytest.mark.parametrize("threshold", [0.0, 0.3, -0.5])
def test_threshold(threshold):
    x = _rng("threshold", threshold).normal(size=(2, 3, 11, 13)).astype(np.float32)
    x[0, 0, 0, :4] = np.float32(threshold)  # Caffe's test is strict: x == threshold gives 0
    params = f"threshold_param {{ threshold: {threshold} }}"
    _check(
        _net({"data": x.shape}, _layer("Threshold", params)),
        {"data": x},
        (x > np.float32(threshold)).astype(np.float32),
    )


@pytest.mark.parametrize("low,high,spread", [(-0.5, 0.7, 1.0), (0.0, 6.0, 5.0), (0.5, -0.5, 1.0), (-2.0, 0.0, 2.0)])
def test_clip(low, high, spread):
    x = (_rng("clip", low, high).normal(size=(2, 3, 11, 13)) * spread).astype(np.float32)
    proto = _net({"data": x.shape}, _layer("Clip", f"clip_param {{ min: {low} max: {high} }}"))
    _check(proto, {"data": x}, np.maximum(np.float32(low), np.minimum(x, np.float32(high))))  # Caffe's order


@pytest.mark.parametrize("beta", [2.0, 0.5, -1.0])
def test_swish_beta(beta):
    x = (_rng("swish", beta).normal(size=(2, 3, 11, 13)) * 3).astype(np.float32)
    proto = _net({"data": x.shape}, _layer("Swish", f"swish_param {{ beta: {beta} }}"))
    _check(proto, {"data": x}, x / (1 + np.exp(-beta * x)))


@pytest.mark.parametrize(
    "power,scale,shift,value",
    [(0.0, 2.0, 1.0, 1.0), (3.0, 0.0, 2.0, 8.0), (0.0, 0.0, -1.0, 1.0), (1.0, 0.0, -2.5, -2.5)],
)
def test_power_constant(power, scale, shift, value):
    # Caffe fills a constant when the derivative scale power * scale is zero: 1 for power 0, shift ** power.
    x = _rng("power", power, scale).normal(size=(2, 3, 5, 7)).astype(np.float32)
    x[0, 0, 0, 0] = np.inf
    params = f"power_param {{ power: {power} scale: {scale} shift: {shift} }}"
    _check(_net({"data": x.shape}, _layer("Power", params)), {"data": x}, np.full_like(x, value))


def _mvn(x: np.ndarray, across: bool, variance: bool, eps: float) -> np.ndarray:
    """Caffe's MVNLayer::Forward_cpu: center per sample (and channel), divide by sqrt(var) + eps."""
    axes = tuple(range(1 if across else 2, x.ndim))
    centered = x - x.mean(axis=axes, keepdims=True)
    if not variance:
        return centered
    return centered / (np.sqrt((centered**2).mean(axis=axes, keepdims=True)) + eps)


@pytest.mark.parametrize(
    "shape,across,variance,eps",
    [
        ((2, 3, 11, 13), False, True, None),
        ((2, 3, 11, 13), True, True, None),
        ((2, 3, 11, 13), False, False, None),
        ((2, 3, 11, 13), True, False, None),
        ((2, 3, 11, 13), False, True, 0.5),  # eps is added to the deviation, not the variance
        ((2, 4, 9), False, True, 0.01),
        ((3, 10), True, True, None),
    ],
)
def test_mvn(shape, across, variance, eps):
    x = (_rng("mvn", shape, across, variance).normal(size=shape) * 0.3 + 1.0).astype(np.float32)
    fields = [f"across_channels: {str(across).lower()}", f"normalize_variance: {str(variance).lower()}"]
    fields += [f"eps: {eps}"] if eps is not None else []
    inputs, prefix, bottom = _source(shape)
    proto = _net(inputs, prefix + _layer("MVN", f"mvn_param {{ {' '.join(fields)} }}", (bottom,)))
    _check(
        proto, {"data": _fed(x)}, _mvn(x.astype(np.float64), across, variance, 1e-9 if eps is None else eps), rtol=1e-4
    )


def test_mvn_after_flatten_keeps_keras_order():
    x = _rng("mvn-flat").normal(size=(2, 3, 5, 7)).astype(np.float32)
    ip, weights = _identity_ip(105)
    body = _layer("Flatten", name="flat") + _layer("MVN", "mvn_param { across_channels: true }", ("flat",)) + ip
    want = _mvn(x.reshape(2, -1).astype(np.float64), True, True, 1e-9)
    _check(_net({"data": x.shape}, body), {"data": x}, want, [weights], rtol=1e-4, output="ip")


def _prelu(x: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """Caffe's PReLU: max(x, 0) + slope[c] * min(x, 0), c along axis 1 (one slope if shared)."""
    s = slope.reshape(1) if slope.ndim == 0 else _along(slope, 1, x.ndim)
    return np.maximum(x, 0) + s * np.minimum(x, 0)


@pytest.mark.parametrize(
    "shape,shared,flatten,fully_conv",
    [
        ((2, 3, 11, 13), True, False, False),
        ((2, 4, 9), False, False, False),
        ((2, 3, 5, 7), False, True, False),  # a slope per element of the flattened C*H*W axis
        ((2, 3, 5, 7), True, True, False),
        ((1, 4, 11, 13), False, False, True),
    ],
)
def test_prelu(shape, shared, flatten, fully_conv):
    rng = _rng("prelu", shape, shared, flatten)
    x = rng.normal(size=shape).astype(np.float32)
    params = "prelu_param { channel_shared: true }" if shared else ""
    inputs, body, bottom = _source(shape)
    weights, output = [], "out"
    if flatten:
        size = int(np.prod(shape[1:]))
        ip, identity = _identity_ip(size)
        body += _layer("Flatten", name="flat") + _layer("PReLU", params, ("flat",)) + ip
        weights, output, x_ref = [identity], "ip", x.reshape(shape[0], -1)
    else:
        body += _layer("PReLU", params, (bottom,))
        x_ref = x
    slope = rng.normal(0.0, 0.5, size=() if shared else (x_ref.shape[1],)).astype(np.float32)
    weights.append(("out", "PReLU", [slope]))
    want = _prelu(x_ref, slope)
    _check(_net(inputs, body), {"data": _fed(x)}, want, weights, output=output, fully_conv=fully_conv)


@pytest.mark.parametrize(
    "kind,shape,axis,num_axes,bias",
    [
        ("Scale", (2, 3, 11, 13), 1, 1, True),
        ("Scale", (2, 3, 11, 13), 1, 2, False),  # C, H: Keras holds them as H, C
        ("Scale", (2, 3, 11, 13), 1, -1, True),
        ("Scale", (2, 3, 11, 13), -1, 1, False),
        ("Scale", (2, 3, 11, 13), 2, 0, True),  # one factor; axis ignored
        ("Scale", (2, 4, 9), 1, 2, True),
        ("Scale", (2, 6), 1, 1, True),
        ("Bias", (2, 3, 11, 13), 1, 1, None),
        ("Bias", (2, 3, 11, 13), 1, 3, None),
        ("Bias", (2, 3, 11, 13), 3, 1, None),
        ("Bias", (2, 3, 11, 13), 1, 0, None),
        ("Bias", (2, 4, 9), 2, 1, None),
    ],
)
def test_learned_scale_and_bias(kind, shape, axis, num_axes, bias):
    rng = _rng("learned", kind, shape, axis, num_axes)
    x = rng.normal(size=shape).astype(np.float32)
    start = axis % len(shape)
    dims = () if num_axes == 0 else shape[start:] if num_axes == -1 else shape[start : start + num_axes]
    start = 0 if num_axes == 0 else start
    blobs = [rng.normal(size=dims).astype(np.float32) for _ in range(2 if bias else 1)]
    if kind == "Scale":
        params = f"scale_param {{ axis: {axis} num_axes: {num_axes} bias_term: {str(bias).lower()} }}"
        want = x * _along(blobs[0], start, x.ndim) + (_along(blobs[1], start, x.ndim) if bias else 0)
    else:
        params = f"bias_param {{ axis: {axis} num_axes: {num_axes} }}"
        want = x + _along(blobs[0], start, x.ndim)
    inputs, prefix, bottom = _source(shape)
    _check(_net(inputs, prefix + _layer(kind, params, (bottom,))), {"data": _fed(x)}, want, [("out", kind, blobs)])


@pytest.mark.parametrize("kind", ["Scale", "Bias"])
def test_learned_after_flatten(kind):
    rng = _rng("learned-flat", kind)
    x = rng.normal(size=(2, 3, 5, 7)).astype(np.float32)
    blob = rng.normal(size=(105,)).astype(np.float32)
    body = _layer("Flatten", name="flat") + _layer(kind, "", ("flat",))
    flat = x.reshape(2, -1)
    want = flat * blob if kind == "Scale" else flat + blob
    _check(_net({"data": x.shape}, body), {"data": x}, want, [("out", kind, [blob])])


@pytest.mark.parametrize("kind", ["Scale", "Bias"])
@pytest.mark.parametrize("other_shape", [(2, 3), (2, 3, 11), (2, 3, 11, 13)])
def test_second_bottom_broadcast(kind, other_shape):
    rng = _rng("two", kind, other_shape)
    x = rng.normal(size=(2, 3, 11, 13)).astype(np.float32)
    other = rng.normal(size=other_shape).astype(np.float32)
    param = "scale_param" if kind == "Scale" else "bias_param"
    inputs, prefix, bottom = _source(other_shape, "other")
    proto = _net({"data": x.shape, **inputs}, prefix + _layer(kind, f"{param} {{ axis: 0 }}", ("data", bottom)))
    b = _along(other, 0, x.ndim)
    _check(proto, {"data": x, "other": _fed(other)}, x * b if kind == "Scale" else x + b)


def test_se_style_scale_after_inner_product():
    # Squeeze-and-excitation without Axpy: per-sample channel weights from a 2-D blob, axis 0.
    rng = _rng("se")
    x = rng.normal(size=(2, 4, 5, 7)).astype(np.float32)
    weight = rng.normal(size=(4, 4)).astype(np.float32)
    body = (
        _layer("Pooling", "pooling_param { pool: AVE global_pooling: true }", name="pool")
        + _layer("InnerProduct", "inner_product_param { num_output: 4 bias_term: false }", ("pool",), name="fc")
        + _layer("Sigmoid", "", ("fc",), name="gate")
        + _layer("Scale", "scale_param { axis: 0 }", ("data", "gate"))
    )
    gate = 1 / (1 + np.exp(-(x.mean(axis=(2, 3)) @ weight.T)))
    _check(_net({"data": x.shape}, body), {"data": x}, x * gate[:, :, None, None], [("fc", "InnerProduct", [weight])])


@pytest.mark.parametrize(
    "body,inputs,message",
    [
        (_layer("Log", "log_param { base: 1 }"), {"data": (1, 2)}, "base 1"),
        (_layer("Exp", "exp_param { base: -2 }"), {"data": (1, 2)}, "must be positive"),
        (_layer("Clip", "clip_param { min: 0 }"), {"data": (1, 2)}, "both min and max"),
        (
            _layer("Scale", "scale_param { axis: 1 }", ("data", "s")),
            {"data": (1, 3, 4, 5), "s": (3,)},
            "not the batch axis",
        ),
        (
            _layer("Scale", "scale_param { axis: 0 bias_term: true }", ("data", "s")),
            {"data": (1, 3, 4), "s": (1, 3)},
            "bias_term",
        ),
        (_layer("Bias", "bias_param { axis: 0 }", ("data", "s")), {"data": (1, 3, 4), "s": (1, 4)}, "does not match"),
        (_layer("Scale", "scale_param { axis: 2 num_axes: 3 }"), {"data": (1, 3, 4, 5)}, "reach past"),
        (_layer("MVN"), {"data": (1, 2, 3, 4, 5)}, "2-D to 4-D"),
    ],
)
def test_refused(body, inputs, message):
    arrays = {k: np.zeros(v, np.float32) for k, v in inputs.items()}
    with pytest.raises(TranslationError, match=message):
        keras_forward(_net(inputs, body), arrays, outputs=["out"])
