"""Numeric tests of Deconvolution and the fork layers (SSD, SegNet, PSPNet, ShuffleNet, SENet).

Each compares against OpenCV's Caffe importer where it implements the layer as Caffe does, and
otherwise against a NumPy restatement of the fork's C++ loops.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from caffe2py.convert import translate
from caffe2py.errors import TranslationError
from tests.refnet import assert_close, keras_forward, opencv_forward

pytest.importorskip("cv2", reason="opencv-python-headless<5 is the independent Caffe runtime")


def _net(inputs, body: str) -> str:
    text = ""
    for name, shape in inputs.items():
        dims = " ".join(f"dim: {d}" for d in shape)
        text += f'input: "{name}"\ninput_shape {{ {dims} }}\n'
    return text + body


def _rng(*key: object) -> np.random.Generator:
    # crc32, not hash(): str hashes change per process, and the weights must be the same every run.
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _normal(rng, *shape) -> np.ndarray:
    return rng.normal(size=shape).astype(np.float32)


# --- Deconvolution ------------------------------------------------------------------------------


def _deconv_reference(x, weight, bias, stride, pad, dilation, group):
    """Caffe's DeconvolutionLayer: every input pixel scatters its weighted kernel (col2im), then the pad is cut."""
    n, c, h, w = x.shape
    _, per_group, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    full = np.zeros((n, per_group * group, (h - 1) * sh + dh * (kh - 1) + 1, (w - 1) * sw + dw * (kw - 1) + 1))
    inputs = c // group
    for g in range(group):
        xs = x[:, g * inputs : (g + 1) * inputs].astype(np.float64)
        ws = weight[g * inputs : (g + 1) * inputs].astype(np.float64)  # (inputs, per_group, kh, kw)
        for a in range(kh):
            for b in range(kw):
                contrib = np.einsum("nchw,co->nohw", xs, ws[:, :, a, b])
                full[:, g * per_group : (g + 1) * per_group, a * dh : a * dh + (h - 1) * sh + 1 : sh,
                     b * dw : b * dw + (w - 1) * sw + 1 : sw] += contrib
    out = full[:, :, ph : full.shape[2] - ph, pw : full.shape[3] - pw]
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return out.astype(np.float32)


def _bilinear(channels, kernel):
    """Caffe's bilinear filler for (channels, 1, k, k): the FCN upsampling kernel."""
    f = np.ceil(kernel / 2)
    c = (2 * f - 1 - f % 2) / (2 * f)
    ramp = 1 - np.abs(np.arange(kernel) / f - c)
    return np.broadcast_to(np.outer(ramp, ramp), (channels, 1, kernel, kernel)).astype(np.float32)


# (name, num_output, group, params): sharing one 6-channel input. "dw" ones go through the
# depthwise helper, dense when channels <= stride**2 and zero-spread otherwise.
DECONV_OPENCV = [
    ("plain", 3, 1, "kernel_size: 3 stride: 2"),
    ("pad", 4, 1, "kernel_size: 4 stride: 2 pad: 1 bias_term: false"),
    ("grouped", 4, 2, "kernel_size: 4 stride: 2 pad: 1"),
    ("grouped3", 6, 3, "kernel_size: 3 stride: 1 pad: 1"),
    ("dw_spread", 6, 6, "kernel_size: 4 stride: 2 pad: 1"),
    ("dw_dense", 12, 6, "kernel_size: 8 stride: 4 pad: 2 bias_term: false"),
    ("dw_stride1", 6, 6, "kernel_size: 3 pad: 1"),
    ("short_kernel", 2, 1, "kernel_size: 2 stride: 3"),  # kernel < stride: Keras would round up
]


def _kernel(params):
    if "kernel_size" in params:
        k = int(params.split("kernel_size: ")[1].split()[0])
        return k, k
    return int(params.split("kernel_h: ")[1].split()[0]), int(params.split("kernel_w: ")[1].split()[0])


def _deconv_net(cases, shape, rng):
    body, weights = "", []
    for name, out, group, params in cases:
        body += (
            f'layer {{ name: "{name}" type: "Deconvolution" bottom: "data" top: "{name}"\n'
            f"  convolution_param {{ num_output: {out} group: {group} {params} }} }}\n"
        )
        blobs = [_normal(rng, shape[1], out // group, *_kernel(params))]
        if "bias_term: false" not in params:
            blobs.append(_normal(rng, out))
        weights.append((name, "Deconvolution", blobs))
    return _net({"data": shape}, body), weights


def test_deconvolution_against_opencv():
    rng = _rng("deconv")
    shape = (2, 6, 5, 7)
    proto, weights = _deconv_net(DECONV_OPENCV, shape, rng)
    weights[5] = ("dw_dense", "Deconvolution", [np.repeat(_bilinear(6, 8), 2, axis=1)])  # FCN-style bilinear
    x = _normal(rng, *shape)
    names = [c[0] for c in DECONV_OPENCV]
    got = keras_forward(proto, {"data": x}, weights, outputs=names)
    want = opencv_forward(proto, {"data": x}, weights, outputs=names)
    for name in names:
        assert_close(got[name], want[name])


# OpenCV ignores dilation and pad_h/pad_w in Deconvolution: these go against the NumPy loops.
DECONV_NUMPY = [
    ("dilated_strided", 3, 1, "kernel_size: 3 stride: 2 dilation: 2 pad: 1"),  # Keras: zero taps
    ("dilated", 4, 1, "kernel_size: 3 dilation: 2 pad: 1"),
    ("dilated_grouped", 4, 2, "kernel_size: 3 stride: 2 dilation: 2"),
    ("dw_dilated_dense", 6, 6, "kernel_size: 3 stride: 3 dilation: 2"),
    ("dw_dilated_spread", 6, 6, "kernel_size: 2 dilation: 3 bias_term: false"),
    ("rect", 3, 1, "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 pad_h: 1 pad_w: 0"),
]


def test_deconvolution_dilated_and_rectangular():
    rng = _rng("deconv numpy")
    shape = (2, 6, 5, 4)
    proto, weights = _deconv_net(DECONV_NUMPY, shape, rng)
    x = _normal(rng, *shape)
    names = [c[0] for c in DECONV_NUMPY]
    got = keras_forward(proto, {"data": x}, weights, outputs=names)
    for (name, _, group, params), (_, _, blobs) in zip(DECONV_NUMPY, weights):
        fields = dict(zip(params.split()[::2], params.split()[1::2]))
        stride, pad, dilation = (_field_pair(fields, key, default) for key, default in (("stride", 1), ("pad", 0), ("dilation", 1)))
        want = _deconv_reference(x, blobs[0], blobs[1] if len(blobs) > 1 else None, stride, pad, dilation, group)
        assert_close(got[name], want)


def _field_pair(fields, key, default):
    """A ``kernel_size``-style value from parsed params, with its ``_h``/``_w`` overrides."""
    both = int(fields.get(f"{key}:", default))
    return int(fields.get(f"{key}_h:", both)), int(fields.get(f"{key}_w:", both))


# --- Pooling's mask top and SegNet's Upsample ----------------------------------------------------


def _pool_with_mask(x, kernel, s, p, ceil_mode=True):
    """Caffe's MAX pooling loop: the window's first strict maximum and its index h * W + w."""
    n, c, h, w = x.shape
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    sizes = []
    for size, k in ((h, kh), (w, kw)):
        span = size + 2 * p - k
        out = -(-span // s) + 1 if ceil_mode else span // s + 1
        if p and (out - 1) * s >= size + p:
            out -= 1
        sizes.append(out)
    pooled = np.full((n, c, *sizes), -np.finfo(np.float32).max, np.float32)
    mask = np.full((n, c, *sizes), -1, np.float32)
    for i in range(sizes[0]):
        for j in range(sizes[1]):
            hs, ws = i * s - p, j * s - p
            he, we = min(hs + kh, h), min(ws + kw, w)
            hs, ws = max(hs, 0), max(ws, 0)
            for a in range(hs, he):
                for b in range(ws, we):
                    better = x[:, :, a, b] > pooled[:, :, i, j]
                    pooled[:, :, i, j] = np.where(better, x[:, :, a, b], pooled[:, :, i, j])
                    mask[:, :, i, j] = np.where(better, a * w + b, mask[:, :, i, j])
    return pooled, mask


def _unpool(values, mask, out_h, out_w):
    """caffe-segnet's UpsampleLayer loop: top[mask[i]] = bottom[i], later writes winning."""
    n, c = values.shape[:2]
    top = np.zeros((n, c, out_h * out_w), np.float32)
    flat_values, flat_mask = values.reshape(n, c, -1), mask.reshape(n, c, -1).astype(int)
    for i in range(flat_values.shape[2]):
        np.put_along_axis(top, flat_mask[:, :, i : i + 1], flat_values[:, :, i : i + 1], axis=2)
    return top.reshape(n, c, out_h, out_w)


def test_pooling_mask_and_unpooling():
    rng = _rng("unpool")
    odd, even, odd_h = (2, 3, 13, 11), (2, 3, 12, 10), (2, 3, 11, 10)
    x = np.round(_normal(rng, *odd) * 2) / 2  # repeated values: ties go to the first in row-major order
    y, z = _normal(rng, *even), _normal(rng, *odd_h)
    v = _normal(rng, 2, 3, 6, 5)  # SegNet unpools decoder features, not the pooled maxima
    pool = 'layer {{ name: "{0}" type: "Pooling" bottom: "{1}" top: "{0}" top: "{0}_mask" pooling_param {{ pool: MAX {2} }} }}\n'
    up = 'layer {{ name: "{0}" type: "Upsample" bottom: "{1}" bottom: "{2}" top: "{0}" upsample_param {{ {3} }} }}\n'
    body = (
        pool.format("p1", "data", "kernel_size: 2 stride: 2")  # ceil mode: 7x6 from 13x11
        + up.format("u1", "p1", "p1_mask", "scale: 2 upsample_h: 13 upsample_w: 11")
        + pool.format("p2", "data", "kernel_size: 3 stride: 2")  # overlapping windows share maxima
        + up.format("u2", "v", "p2_mask", "upsample_h: 13 upsample_w: 11")
        + pool.format("p3", "data", "kernel_size: 3 stride: 2 pad: 1")
        + pool.format("p4", "data", "kernel_size: 3 stride: 2 round_mode: FLOOR")
        + pool.format("p5", "data", "global_pooling: true")
        + pool.format("p6", "even", "kernel_size: 2 stride: 2")
        + up.format("u6", "p6", "p6_mask", "scale: 2")
        + pool.format("p7", "odd_h", "kernel_size: 2 stride: 2")
        + up.format("u7", "p7", "p7_mask", "scale_h: 2 scale_w: 2 pad_out_h: true")  # SegNet-basic's odd heights
    )
    proto = _net({"data": odd, "v": v.shape, "even": even, "odd_h": odd_h}, body)
    names = ["p1_mask", "u1", "p2", "p2_mask", "u2", "p3", "p3_mask", "p4_mask", "p5_mask", "p6_mask", "u6", "u7"]
    got = keras_forward(proto, {"data": x, "v": v, "even": y, "odd_h": z}, outputs=names)

    p1, m1 = _pool_with_mask(x, 2, 2, 0)
    p2, m2 = _pool_with_mask(x, 3, 2, 0)
    p6, m6 = _pool_with_mask(y, 2, 2, 0)
    p7, m7 = _pool_with_mask(z, 2, 2, 0)
    want = {
        "p1_mask": m1,
        "u1": _unpool(p1, m1, 13, 11),
        "p2": p2,
        "p2_mask": m2,
        "u2": _unpool(v, m2, 13, 11),
        "p3_mask": _pool_with_mask(x, 3, 2, 1)[1],
        "p3": _pool_with_mask(x, 3, 2, 1)[0],
        "p4_mask": _pool_with_mask(x, 3, 2, 0, ceil_mode=False)[1],
        "p5_mask": _pool_with_mask(x, (13, 11), 1, 0)[1],
        "p6_mask": m6,
        "u6": _unpool(p6, m6, 12, 10),
        "u7": _unpool(p7, m7, 11, 10),
    }
    assert any(len(np.unique(plane)) < plane.size for plane in m2.reshape(6, -1))  # overlapping windows share maxima
    for name in names:
        assert_close(got[name], want[name], rtol=0)


def test_nearest_upsample():
    rng = _rng("nearest")
    x = _normal(rng, 2, 3, 5, 4)
    body = (
        'layer { name: "u2" type: "Upsample" bottom: "data" top: "u2" upsample_param { scale: 2 } }\n'
        'layer { name: "u23" type: "Upsample" bottom: "data" top: "u23" upsample_param { scale_h: 2 scale_w: 3 } }\n'
    )
    got = keras_forward(_net({"data": x.shape}, body), {"data": x}, outputs=["u2", "u23"])
    assert_close(got["u2"], x.repeat(2, axis=2).repeat(2, axis=3), rtol=0)
    assert_close(got["u23"], x.repeat(2, axis=2).repeat(3, axis=3), rtol=0)


# --- SegNet's BN, SSD's Normalize, SENet's Axpy, ShuffleChannel, Interp ------------------------


def test_segnet_bn():
    rng = _rng("bn")
    x = _normal(rng, 3, 4, 5, 6) * 2 + 1.5
    scale, shift = _normal(rng, 1, 4, 1, 1), _normal(rng, 1, 4, 1, 1)
    body = (
        'layer { name: "learn" type: "BN" bottom: "data" top: "learn" bn_param { bn_mode: LEARN } }\n'
        'layer { name: "infer" type: "BN" bottom: "data" top: "infer" bn_param { bn_mode: INFERENCE } }\n'
    )
    weights = [("learn", "BN", [scale, shift]), ("infer", "BN", [scale, shift])]
    got = keras_forward(_net({"data": x.shape}, body), {"data": x}, weights, outputs=["learn", "infer"])
    # LEARN: the batch's own statistics at every phase, var = E(x^2) - E(x)^2, eps 1e-9.
    mean = x.mean(axis=(0, 2, 3), keepdims=True, dtype=np.float64)
    var = (x.astype(np.float64) ** 2).mean(axis=(0, 2, 3), keepdims=True) - mean**2
    assert_close(got["learn"], ((x - mean) / np.sqrt(var + 1e-9) * scale + shift).astype(np.float32))
    assert_close(got["infer"], x * scale + shift)


NORMALIZE = [
    ("shared", ""),
    ("per_position", "across_spatial: false"),
    ("per_channel", "channel_shared: false"),
    ("both", "across_spatial: false channel_shared: false eps: 0.5"),
]


def test_normalize():
    rng = _rng("normalize")
    x = _normal(rng, 2, 6, 7, 9)
    body = "".join(
        f'layer {{ name: "{n}" type: "Normalize" bottom: "data" top: "{n}" norm_param {{ {p} }} }}\n' for n, p in NORMALIZE
    )
    # Caffe keeps a shared scale as a 0-d blob (which OpenCV cannot read).
    scales = {n: _normal(rng, *(() if "channel_shared: false" not in p else (6,))) for n, p in NORMALIZE}
    weights = [(n, "Normalize", [scales[n]]) for n, _ in NORMALIZE]
    got = keras_forward(_net({"data": x.shape}, body), {"data": x}, weights, outputs=list(scales))
    for name, params in NORMALIZE:
        eps = 0.5 if "eps" in params else 1e-10
        axes = (1,) if "across_spatial: false" in params else (1, 2, 3)
        norm = np.sqrt((x.astype(np.float64) ** 2).sum(axis=axes, keepdims=True) + eps)
        assert_close(got[name], (x / norm * scales[name].reshape(1, -1, 1, 1)).astype(np.float32))


def test_axpy():
    rng = _rng("axpy")
    x, y = _normal(rng, 2, 5, 4, 3), _normal(rng, 2, 5, 4, 3)
    a4, a2 = _normal(rng, 2, 5, 1, 1), _normal(rng, 2, 5)
    body = (
        'layer { name: "f4" type: "Axpy" bottom: "a4" bottom: "x" bottom: "y" top: "f4" }\n'
        'layer { name: "f2" type: "Axpy" bottom: "a2" bottom: "x" bottom: "y" top: "f2" }\n'
    )
    proto = _net({"a4": a4.shape, "a2": a2.shape, "x": x.shape, "y": y.shape}, body)
    got = keras_forward(proto, {"a4": a4, "a2": a2, "x": x, "y": y}, outputs=["f4", "f2"])
    assert_close(got["f4"], a4 * x + y)
    assert_close(got["f2"], a2[:, :, None, None] * x + y)


def test_shuffle_channel():
    rng = _rng("shuffle")
    x = _normal(rng, 2, 12, 5, 3)
    body = "".join(
        f'layer {{ name: "s{g}" type: "ShuffleChannel" bottom: "data" top: "s{g}" shuffle_channel_param {{ group: {g} }} }}\n'
        for g in (2, 3, 4)
    )
    proto = _net({"data": x.shape}, body)
    names = ["s2", "s3", "s4"]
    got = keras_forward(proto, {"data": x}, outputs=names)
    want = opencv_forward(proto, {"data": x}, outputs=names)
    for name in names:
        assert_close(got[name], want[name], rtol=0)
    # And Caffe's definition itself: (g, C/g) -> (C/g, g).
    assert_close(got["s3"], x.reshape(2, 3, 4, 5, 3).transpose(0, 2, 1, 3, 4).reshape(x.shape), rtol=0)


def _interp_reference(x, out_h, out_w, pad_beg=0, pad_end=0):
    """caffe_cpu_interp2 over the input less the (non-positive) pads: float32 ratios, aligned corners."""
    x = x[:, :, -pad_beg : x.shape[2] + pad_end, -pad_beg : x.shape[3] + pad_end].astype(np.float64)

    def axis_weights(size_in, size_out):
        ratio = np.float32(size_in - 1) / np.float32(size_out - 1) if size_out > 1 else np.float32(0)
        pos = (ratio * np.arange(size_out, dtype=np.float32)).astype(np.float32)
        low = pos.astype(int)
        high = low + (low < size_in - 1)
        return low, high, (pos - low).astype(np.float64)

    hl, hh, hw = axis_weights(x.shape[2], out_h)
    wl, wh, ww = axis_weights(x.shape[3], out_w)
    rows = x[:, :, hl] * (1 - hw)[:, None] + x[:, :, hh] * hw[:, None]
    return (rows[..., wl] * (1 - ww) + rows[..., wh] * ww).astype(np.float32)


INTERP = [
    # (name, params, output size for a 9x11 input); OpenCV has the ones without shrink or pads.
    ("size", "height: 13 width: 5", (13, 5), True),
    ("zoom", "zoom_factor: 3", (25, 31), True),
    ("one", "height: 1 width: 1", (1, 1), True),
    ("shrink", "shrink_factor: 2", (5, 6), False),
    ("both", "shrink_factor: 3 zoom_factor: 2", (5, 7), False),
    ("first_wins", "shrink_factor: 2 height: 4 width: 4", (5, 6), False),  # Caffe checks shrink first
    ("cropped", "zoom_factor: 2 pad_beg: -1 pad_end: -2", (11, 15), False),
]


def test_interp():
    rng = _rng("interp")
    x = _normal(rng, 2, 3, 9, 11)

    def net(cases):
        layer = 'layer {{ name: "{}" type: "Interp" bottom: "data" top: "{}" interp_param {{ {} }} }}\n'
        return _net({"data": x.shape}, "".join(layer.format(n, n, p) for n, p, _, _ in cases))

    got = keras_forward(net(INTERP), {"data": x}, outputs=[c[0] for c in INTERP])
    for name, params, size, _ in INTERP:
        pads = [int(params.split(f"{k}: ")[1].split()[0]) if k in params else 0 for k in ("pad_beg", "pad_end")]
        assert_close(got[name], _interp_reference(x, *size, *pads))
    opencv = [c for c in INTERP if c[3]]
    want = opencv_forward(net(opencv), {"data": x}, outputs=[c[0] for c in opencv])
    for name, *_ in opencv:
        assert_close(got[name], want[name])


# --- SSD: PriorBox and DetectionOutput ------------------------------------------------------------


def _prior_reference(feature_hw, image_hw, min_size, max_size=(), aspect_ratio=(), flip=True, clip=False,
                     variance=(0.1,), img=None, step=None, offset=0.5):
    """weiliu89's PriorBoxLayer::Forward_cpu, sizes truncated to int as there."""
    (fh, fw), (ih, iw) = feature_hw, img or image_hw
    sh, sw = step or (np.float32(ih / fh), np.float32(iw / fw))
    ratios = [1.0]
    for ar in aspect_ratio:
        if all(abs(ar - r) >= 1e-6 for r in ratios):
            ratios += [ar, 1 / ar] if flip else [ar]
    boxes = []
    for h in range(fh):
        for w in range(fw):
            cx, cy = np.float32((w + offset) * sw), np.float32((h + offset) * sh)
            for i, low in enumerate(int(m) for m in min_size):
                sizes = [(low, low)]
                if max_size:
                    side = np.sqrt(low * int(max_size[i]))
                    sizes.append((side, side))
                sizes += [(low * np.sqrt(r), low / np.sqrt(r)) for r in ratios if abs(r - 1) >= 1e-6]
                for bw, bh in sizes:
                    boxes += [(cx - bw / 2) / iw, (cy - bh / 2) / ih, (cx + bw / 2) / iw, (cy + bh / 2) / ih]
    boxes = np.array(boxes, np.float32)
    if clip:
        boxes = np.clip(boxes, 0, 1)
    var = np.tile(np.array(variance if len(variance) == 4 else variance * 4, np.float32), len(boxes) // 4)
    return np.stack([boxes, var])[None]


PRIORS = [
    # (params, reference kwargs, also against OpenCV, which clips by default and ignores img_size)
    ("min_size: 10 variance: 0.1 clip: true", {"min_size": [10], "clip": True}, True),
    ("min_size: 10 max_size: 20 aspect_ratio: 2 aspect_ratio: 3 variance: 0.2 clip: true",
     {"min_size": [10], "max_size": [20], "aspect_ratio": [2, 3], "clip": True, "variance": (0.2,)}, True),
    ("min_size: 8 aspect_ratio: 2 flip: false clip: true variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2",
     {"min_size": [8], "aspect_ratio": [2], "flip": False, "clip": True, "variance": (0.1, 0.1, 0.2, 0.2)}, True),
    ("min_size: 12 max_size: 30 min_size: 20 max_size: 35 aspect_ratio: 2 step: 9 offset: 0.25 clip: true variance: 0.1",
     {"min_size": [12, 20], "max_size": [30, 35], "aspect_ratio": [2], "step": (9, 9), "offset": 0.25, "clip": True}, True),
    ("min_size: 16.7 max_size: 30.9 aspect_ratio: 0.5 aspect_ratio: 2",  # 2 repeats 1 / 0.5; sizes truncated
     {"min_size": [16.7], "max_size": [30.9], "aspect_ratio": [0.5, 2]}, False),
    ("min_size: 16 img_size: 50 step_h: 7 step_w: 8",
     {"min_size": [16], "img": (50, 50), "step": (7, 8)}, False),
    ("min_size: 16 img_h: 30 img_w: 44 aspect_ratio: 3 clip: true",
     {"min_size": [16], "img": (30, 44), "aspect_ratio": [3], "clip": True}, False),
]


def test_prior_box():
    rng = _rng("priors")
    data, feat = _normal(rng, 2, 3, 40, 36), _normal(rng, 2, 4, 5, 4)
    feed = {"data": data, "feat": feat}
    names = [f"p{i}" for i in range(len(PRIORS))]

    def net(picked):
        layer = 'layer {{ name: "{}" type: "PriorBox" bottom: "feat" bottom: "data" top: "{}" prior_box_param {{ {} }} }}\n'
        body = "".join(layer.format(n, n, PRIORS[names.index(n)][0]) for n in picked)
        return _net({"data": data.shape, "feat": feat.shape}, body)

    got = keras_forward(net(names), feed, outputs=names)
    for name, (_, kwargs, _) in zip(names, PRIORS):
        assert_close(got[name], _prior_reference((5, 4), (40, 36), **kwargs), rtol=1e-6)
    opencv = [n for n, (_, _, cv) in zip(names, PRIORS) if cv]
    want = opencv_forward(net(opencv), feed, outputs=opencv)
    for name in opencv:
        assert_close(got[name], want[name], rtol=1e-6)


def _iou(a, b):
    """bbox_util.cpp's JaccardOverlap of normalized boxes, in float32."""
    if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
        return np.float32(0)
    w = np.float32(min(a[2], b[2]) - max(a[0], b[0]))
    h = np.float32(min(a[3], b[3]) - max(a[1], b[1]))
    if not (w > 0 and h > 0):
        return np.float32(0)

    def size(box):
        return np.float32(0) if box[2] < box[0] or box[3] < box[1] else np.float32((box[2] - box[0]) * (box[3] - box[1]))

    inter = np.float32(w * h)
    return np.float32(inter / np.float32(size(a) + size(b) - inter))


def _detections_reference(loc, conf, priors, num_classes, share_location=True, background_label_id=0,
                          code_type="CORNER", variance_encoded_in_target=False, confidence_threshold=None,
                          nms_threshold=0.3, top_k=-1, eta=1.0, keep_top_k=-1):
    """DetectionOutputLayer::Forward_cpu with DecodeBBox and ApplyNMSFast, loop for loop."""
    n_img, count = loc.shape[0], priors.shape[2] // 4
    boxes, variances = priors[0, 0].reshape(-1, 4), priors[0, 1].reshape(-1, 4)
    if variance_encoded_in_target:
        variances = np.ones_like(variances)
    loc = loc.reshape(n_img, count, 1 if share_location else num_classes, 4)
    conf = conf.reshape(n_img, count, num_classes)
    threshold = -np.finfo(np.float32).max if confidence_threshold is None else np.float32(confidence_threshold)
    v0, v1, v2, v3 = variances.T
    x0, y0, x1, y1 = boxes.T
    pw, ph = x1 - x0, y1 - y0
    rows = []
    for n in range(n_img):
        kept, scores, decoded = {}, {}, {}
        for c in range(num_classes):
            if c == background_label_id:
                continue
            l0, l1, l2, l3 = loc[n, :, 0 if share_location else c].T
            if code_type == "CORNER":
                d = np.stack([x0 + v0 * l0, y0 + v1 * l1, x1 + v2 * l2, y1 + v3 * l3], 1)
            elif code_type == "CORNER_SIZE":
                d = np.stack([x0 + v0 * l0 * pw, y0 + v1 * l1 * ph, x1 + v2 * l2 * pw, y1 + v3 * l3 * ph], 1)
            else:
                cx, cy = v0 * l0 * pw + (x0 + x1) / 2, v1 * l1 * ph + (y0 + y1) / 2
                w, h = np.exp(v2 * l2) * pw, np.exp(v3 * l3) * ph
                d = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
            s = conf[n, :, c]
            order = sorted((i for i in range(count) if s[i] > threshold), key=lambda i: -s[i])  # stable
            if top_k > -1:
                order = order[:top_k]
            keep, limit = [], np.float32(nms_threshold)
            for i in order:
                ok = all(_iou(d[i], d[j]) <= limit for j in keep)
                if ok:
                    keep.append(i)
                if ok and eta < 1 and limit > 0.5:
                    limit = np.float32(limit * eta)
            kept[c], scores[c], decoded[c] = keep, s, d
        if keep_top_k > -1 and sum(map(len, kept.values())) > keep_top_k:
            pairs = sorted(((scores[c][i], c, i) for c in kept for i in kept[c]), key=lambda t: -t[0])[:keep_top_k]
            kept = {c: [i for _, c2, i in pairs if c2 == c] for c in kept}
        for c in sorted(kept):
            rows += [[n, c, scores[c][i], *decoded[c][i]] for i in kept[c]]
    if not rows:
        rows = [[n, -1, -1, -1, -1, -1, -1] for n in range(n_img)]
    return np.array(rows, np.float32).reshape(1, 1, -1, 7)


def _same_detections(got, opencv):
    """The same rows as OpenCV's, which sorts them by score alone and pads them with zeros."""
    rows, cv = got[0, 0], opencv[0, 0]
    assert not cv[len(rows) :].any()

    def ordered(r):
        return r[np.lexsort((-r[:, 2], r[:, 1], r[:, 0]))]

    assert_close(ordered(rows), ordered(cv[: len(rows)]), rtol=1e-5)


DETECTIONS = [
    # (params, reference kwargs, loc classes, OpenCV comparable: it orders rows by score, pads with
    # zeros, wants keep_top_k and top_k, and has neither CORNER_SIZE nor Caffe's empty result).
    ("code_type: CENTER_SIZE keep_top_k: 30 confidence_threshold: 0.2 nms_param { nms_threshold: 0.45 top_k: 40 }",
     {"code_type": "CENTER_SIZE", "keep_top_k": 30, "confidence_threshold": 0.2, "nms_threshold": 0.45, "top_k": 40}, 1, True),
    ("code_type: CORNER confidence_threshold: 0.05 keep_top_k: 1000 nms_param { nms_threshold: 0.3 top_k: 50 }",
     {"confidence_threshold": 0.05, "keep_top_k": 1000, "top_k": 50}, 1, True),
    ("code_type: CENTER_SIZE share_location: false background_label_id: 2 keep_top_k: 10 nms_param { nms_threshold: 0.5 top_k: 20 }",
     {"code_type": "CENTER_SIZE", "share_location": False, "background_label_id": 2, "keep_top_k": 10,
      "nms_threshold": 0.5, "top_k": 20}, 4, True),
    ("code_type: CORNER_SIZE confidence_threshold: 0.1 nms_param { nms_threshold: 0.7 eta: 0.9 }",
     {"code_type": "CORNER_SIZE", "confidence_threshold": 0.1, "nms_threshold": 0.7, "eta": 0.9}, 1, False),
    ("code_type: CENTER_SIZE variance_encoded_in_target: true keep_top_k: 0",
     {"code_type": "CENTER_SIZE", "variance_encoded_in_target": True, "keep_top_k": 0}, 1, False),
    ("confidence_threshold: 0.999 nms_param { nms_threshold: 0.5 }", {"confidence_threshold": 0.999, "nms_threshold": 0.5}, 1, False),
]


@pytest.mark.parametrize(
    "params,kwargs,loc_classes,opencv",
    DETECTIONS,
    ids=["center_size", "corner", "per_class_locations", "corner_size_eta", "variance_in_target", "nothing_found"],
)
def test_detection_output(params, kwargs, loc_classes, opencv):
    rng = _rng("detections", params)
    classes, count = 4, 5 * 4 * 4
    data, feat = _normal(rng, 2, 3, 40, 36), _normal(rng, 2, 4, 5, 4)
    loc = _normal(rng, 2, count * loc_classes * 4) * 0.5
    logits = rng.normal(size=(2, count, classes)) * 2
    conf = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).reshape(2, -1).astype(np.float32)
    extra = " ".join(f"{k}: {v}" for k, v in (("share_location", "true"), ("background_label_id", 0)) if k not in params)
    body = (
        'layer { name: "p" type: "PriorBox" bottom: "feat" bottom: "data" top: "p" prior_box_param {\n'
        "  min_size: 10 max_size: 20 aspect_ratio: 2 clip: true variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 } }\n"
        'layer { name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "p" top: "det"\n'
        f"  detection_output_param {{ num_classes: {classes} {params} {extra} }} }}\n"
    )
    proto = _net({"data": data.shape, "feat": feat.shape, "loc": loc.shape, "conf": conf.shape}, body)
    feed = {"data": data, "feat": feat, "loc": loc, "conf": conf}
    got = keras_forward(proto, feed, outputs=["det", "p"])
    want = _detections_reference(loc, conf, got["p"], classes, **kwargs)
    assert_close(got["det"], want, rtol=1e-5)
    if opencv:
        _same_detections(got["det"], opencv_forward(proto, feed, outputs=["det"])["det"])


def test_mobilenet_ssd_detections_match_opencv():
    """The corpus MobileNet-SSD with random weights: priors, flattened heads and detections."""
    path = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "mobilenet_ssd" / "MobileNetSSD_deploy.prototxt"
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    rng = _rng("mobilenet-ssd")
    weights = []
    for expect in translate(path).expectations:
        blobs = [
            (rng.normal(size=s) * (np.sqrt(2.0 / np.prod(s[1:])) if len(s) > 1 else 0.1)).astype(np.float32)
            for s in expect.shapes
        ]
        weights.append((expect.layer, expect.layer_type, blobs))
    text = path.read_text()
    x = _normal(rng, 1, 3, 300, 300)
    names = ["mbox_loc", "mbox_conf_flatten", "mbox_priorbox", "detection_out"]
    got = keras_forward(text, {"data": x}, weights, outputs=names)
    want = opencv_forward(text, {"data": x}, weights, outputs=names)
    for name in names[:3]:
        assert_close(got[name], want[name], rtol=1e-5)
    assert got["detection_out"].shape[2] > 1
    _same_detections(got["detection_out"], want["detection_out"])


# --- The running-statistics BN, SegNet BN's extra tops, Interp sized by a second bottom ---------


def test_running_stats_bn():
    rng = _rng("running bn")
    x = _normal(rng, 2, 4, 3, 5) * 2 + 1
    slope, bias, mean = (_normal(rng, 1, 4, 1, 1) for _ in range(3))
    var = np.abs(_normal(rng, 1, 4, 1, 1)) + 0.1
    body = (
        'layer { name: "bn" type: "BN" bottom: "data" top: "bn" '
        "bn_param { slope_filler { type: 'constant' value: 1 } frozen: true momentum: 0.95 } }\n"
        'layer { name: "bn_eps" type: "BN" bottom: "data" top: "bn_eps" bn_param { eps: 0.5 } }\n'
    )
    weights = [(n, "BN", [slope, bias, mean, var]) for n in ("bn", "bn_eps")]
    got = keras_forward(_net({"data": x.shape}, body), {"data": x}, weights, outputs=["bn", "bn_eps"])
    # yjxiong's BNLayer at TEST (or frozen): the stored statistics, eps 1e-5 unless given.
    for name, eps in (("bn", 1e-5), ("bn_eps", 0.5)):
        want = slope * (x - mean) / np.sqrt(var.astype(np.float64) + eps) + bias
        assert_close(got[name], want.astype(np.float32))


def test_segnet_bn_batch_moment_tops():
    rng = _rng("bn tops")
    x = _normal(rng, 3, 4, 5, 6) * 2 + 1.5
    scale, shift = _normal(rng, 1, 4, 1, 1), _normal(rng, 1, 4, 1, 1)
    body = 'layer { name: "bn" type: "BN" bottom: "data" top: "bn" top: "bn_mean" top: "bn_var" bn_param { bn_mode: LEARN } }\n'
    got = keras_forward(_net({"data": x.shape}, body), {"data": x}, [("bn", "BN", [scale, shift])], outputs=["bn", "bn_mean", "bn_var"])
    # caffe-segnet: top[1] the batch mean, top[2] E(x^2) - E(x)^2, both (1, C, 1, 1), before eps.
    mean = x.mean(axis=(0, 2, 3), keepdims=True, dtype=np.float64)
    var = (x.astype(np.float64) ** 2).mean(axis=(0, 2, 3), keepdims=True) - mean**2
    assert_close(got["bn_mean"], mean.astype(np.float32))
    assert_close(got["bn_var"], var.astype(np.float32))
    assert_close(got["bn"], ((x - mean) / np.sqrt(var + 1e-9) * scale + shift).astype(np.float32))


def test_interp_sized_by_second_bottom():
    rng = _rng("interp like")
    x, like = _normal(rng, 2, 3, 5, 4), _normal(rng, 2, 7, 9, 11)
    body = (
        'layer { name: "up" type: "Interp" bottom: "data" bottom: "like" top: "up" }\n'
        'layer { name: "cut" type: "Interp" bottom: "data" bottom: "like" top: "cut" interp_param { pad_beg: -1 } }\n'
    )
    got = keras_forward(_net({"data": x.shape, "like": like.shape}, body), {"data": x, "like": like}, outputs=["up", "cut"])
    assert_close(got["up"], _interp_reference(x, 9, 11))
    assert_close(got["cut"], _interp_reference(x, 9, 11, pad_beg=-1))


def test_bn_and_interp_refusals():
    cases = [
        ('layer { name: "i" type: "Interp" bottom: "data" bottom: "data" top: "i" interp_param { zoom_factor: 2 } }',
         "with a second bottom, height, width, zoom_factor and shrink_factor must not be given"),
        ('layer { name: "b" type: "BN" bottom: "data" top: "b" top: "m" bn_param { bn_mode: INFERENCE } }',
         "only LEARN mode writes the batch mean and variance tops"),
    ]
    for body, message in cases:
        with pytest.raises(TranslationError, match=message):
            keras_forward(_net({"data": (1, 2, 3, 3)}, body), {"data": np.zeros((1, 2, 3, 3), np.float32)})


# --- DeepLab's hole, PSPNet's BN ----------------------------------------------------------------


def _dilated_conv_reference(x, weight, bias, stride, pad, dilation):
    """Caffe's convolution (DeepLab's im2col with hole taps) as NumPy sums over the kernel taps."""
    n, c, h, w = x.shape
    out, _, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw), np.float64)
    padded[:, :, ph : ph + h, pw : pw + w] = x
    oh = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    ow = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    y = np.zeros((n, out, oh, ow)) + bias.reshape(1, -1, 1, 1)
    for i in range(kh):
        for j in range(kw):
            patch = padded[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw]
            y += np.einsum("nchw,oc->nohw", patch, weight[:, :, i, j])
    return y.astype(np.float32)


def test_deeplab_hole_is_dilation():
    rng = _rng("hole")
    x = _normal(rng, 2, 3, 13, 12)
    weight, bias = _normal(rng, 4, 3, 3, 3), _normal(rng, 4)
    conv = 'layer {{ name: "{}" type: "{}" bottom: "data" top: "{}" convolution_param {{ num_output: 4 {} }} }}\n'
    body = (
        conv.format("dil", "Convolution", "dil", "kernel_size: 3 pad: 2 dilation: 2")
        + conv.format("hole", "HoleConvolution", "hole", "kernel_size: 3 pad: 2 hole: 2")
        + conv.format("hole_hw", "Convolution", "hole_hw", "kernel_size: 3 pad_h: 2 pad_w: 3 stride: 2 hole_h: 2 hole_w: 3")
    )
    weights = [(n, "Convolution", [weight, bias]) for n in ("dil", "hole", "hole_hw")]
    got = keras_forward(_net({"data": x.shape}, body), {"data": x}, weights, outputs=["dil", "hole", "hole_hw"])
    np.testing.assert_array_equal(got["hole"], got["dil"])
    assert_close(got["hole"], _dilated_conv_reference(x, weight, bias, (1, 1), (2, 2), (2, 2)))
    assert_close(got["hole_hw"], _dilated_conv_reference(x, weight, bias, (2, 2), (2, 3), (2, 3)))


def test_hole_and_dilation_together_are_refused(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(
        _net(
            {"data": (1, 3, 8, 8)},
            'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
            "convolution_param { num_output: 2 kernel_size: 3 dilation: 2 hole: 2 } }\n",
        )
    )
    with pytest.raises(TranslationError, match="dilation and DeepLab's hole are both given; give one"):
        translate(path)


def test_pspnet_bn():
    rng = _rng("pspnet bn")
    x = _normal(rng, 2, 4, 3, 5) * 2 + 1
    scale, shift, mean = (_normal(rng, 1, 4, 1, 1) for _ in range(3))
    var = np.abs(_normal(rng, 1, 4, 1, 1)) + 0.1
    bn = 'layer {{ name: "{0}" type: "BN" bottom: "data" top: "{0}" bn_param {{ {1} }} }}\n'
    body = bn.format("moving", "moving_average: true decay: 0.05") + bn.format("batch", "moving_average: false decay: 0.05")
    weights = [(n, "BN", [scale, shift, mean, var]) for n in ("moving", "batch")]
    got = keras_forward(_net({"data": x.shape}, body), {"data": x}, weights, outputs=["moving", "batch"])
    # PSPNet's BNLayer at TEST: the stored statistics with moving_average, else the batch's
    # (mean and mean square deviation over N, H, W); var_eps 1e-10 either way, decay unused.
    x64 = x.astype(np.float64)
    want = scale * (x64 - mean) / np.sqrt(var.astype(np.float64) + 1e-10) + shift
    assert_close(got["moving"], want.astype(np.float32))
    batch_mean = x64.mean(axis=(0, 2, 3), keepdims=True)
    batch_var = ((x64 - batch_mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)
    want = scale * (x64 - batch_mean) / np.sqrt(batch_var + 1e-10) + shift
    assert_close(got["batch"], want.astype(np.float32))
