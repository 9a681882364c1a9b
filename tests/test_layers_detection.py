"""Numeric tests of the detection forks' region layers against NumPy restatements of their C++ loops."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np

from tests.refnet import assert_close, keras_forward, load_module


def _c_round(v: float) -> int:
    """C's round(): halves away from zero."""
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def _roi_pooling_reference(x, rois, pooled_h, pooled_w, scale):
    """py-faster-rcnn's ROIPoolingLayer::Forward_cpu, loop for loop (float32 bin sizes)."""
    n_rois, (_, channels, height, width) = len(rois), x.shape
    top = np.zeros((n_rois, channels, pooled_h, pooled_w), np.float32)
    for n, roi in enumerate(rois.astype(np.float32)):
        b = int(roi[0])
        x1, y1, x2, y2 = (_c_round(float(np.float32(v * np.float32(scale)))) for v in roi[1:])
        bin_h = np.float32(max(y2 - y1 + 1, 1)) / np.float32(pooled_h)
        bin_w = np.float32(max(x2 - x1 + 1, 1)) / np.float32(pooled_w)
        for ph in range(pooled_h):
            for pw in range(pooled_w):
                hs = min(max(int(np.floor(np.float32(ph) * bin_h)) + y1, 0), height)
                he = min(max(int(np.ceil(np.float32(ph + 1) * bin_h)) + y1, 0), height)
                ws = min(max(int(np.floor(np.float32(pw) * bin_w)) + x1, 0), width)
                we = min(max(int(np.ceil(np.float32(pw + 1) * bin_w)) + x1, 0), width)
                if he > hs and we > ws:
                    top[n, :, ph, pw] = x[b, :, hs:he, ws:we].max(axis=(1, 2))
    return top


def test_roi_pooling():
    rng = np.random.default_rng(20)
    x = rng.normal(size=(2, 3, 9, 11)).astype(np.float32)
    rois = np.array(
        [
            [0, 0, 0, 21, 17],  # the whole map at scale 0.5
            [1, 3, 5, 12, 9],  # 1.5 and 2.5 round away from zero
            [1, 7, 7, 7, 7],  # one pixel: every bin is that pixel
            [0, -6, 4, 40, 30],  # partly outside: bins clipped to the map
            [0, 30, 1, 36, 5],  # wholly right of the map: empty bins are 0
        ],
        np.float32,
    )
    body = (
        'layer { name: "pool" type: "ROIPooling" bottom: "data" bottom: "rois" top: "pool" '
        "roi_pooling_param { pooled_h: 3 pooled_w: 2 spatial_scale: 0.5 } }\n"
    )
    proto = 'input: "data" input_shape { dim: 2 dim: 3 dim: 9 dim: 11 }\ninput: "rois" input_shape { dim: 5 dim: 5 }\n' + body
    got = keras_forward(proto, {"data": x, "rois": rois})["pool"]
    want = _roi_pooling_reference(x, rois, 3, 2, 0.5)
    assert not want[4].any() and want[0].all()
    assert_close(got, want, rtol=0)


def _im2col_reference(x, kernel, stride, pad, dilation):
    """BVLC's im2col_cpu: column c * kh * kw + i * kw + j, zero outside the input."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, pad, dilation
    n, c, h, w = x.shape
    out_h = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    out_w = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    cols = np.zeros((n, c * kh * kw, out_h, out_w), np.float32)
    for ch in range(c):
        for i in range(kh):
            for j in range(kw):
                for oh in range(out_h):
                    for ow in range(out_w):
                        r, q = oh * sh - ph + i * dh, ow * sw - pw + j * dw
                        if 0 <= r < h and 0 <= q < w:
                            cols[:, (ch * kh + i) * kw + j, oh, ow] = x[:, ch, r, q]
    return cols


def test_im2col():
    rng = np.random.default_rng(21)
    x = rng.normal(size=(2, 3, 7, 8)).astype(np.float32)
    cases = {
        "plain": ("kernel_size: 3", (3, 3), (1, 1), (0, 0), (1, 1)),
        "strided": ("kernel_h: 2 kernel_w: 3 stride: 2 pad: 1", (2, 3), (2, 2), (1, 1), (1, 1)),
        "dilated": ("kernel_size: 2 dilation: 2 pad_h: 0 pad_w: 2 stride_h: 1 stride_w: 3", (2, 2), (1, 3), (0, 2), (2, 2)),
    }
    body = "".join(
        f'layer {{ name: "{n}" type: "Im2col" bottom: "data" top: "{n}" convolution_param {{ {p} }} }}\n'
        for n, (p, *_) in cases.items()
    )
    got = keras_forward('input: "data" input_shape { dim: 2 dim: 3 dim: 7 dim: 8 }\n' + body, {"data": x}, outputs=list(cases))
    for name, (_, *geometry) in cases.items():
        assert_close(got[name], _im2col_reference(x, *geometry), rtol=0)


def _psroi_reference(x, rois, output_dim, k, scale):
    """R-FCN's PSROIPoolingForward (CPU port), loop for loop in float32."""
    _, _, height, width = x.shape
    top = np.zeros((len(rois), output_dim, k, k), np.float32)
    scale = np.float32(scale)
    for n, roi in enumerate(rois.astype(np.float32)):
        b = int(roi[0])
        x1, y1, x2, y2 = (np.float32(_c_round(float(v))) for v in roi[1:])
        start_w, start_h = x1 * scale, y1 * scale
        end_w, end_h = np.float32(x2 + 1) * scale, np.float32(y2 + 1) * scale
        bin_h = np.float32(max(end_h - start_h, np.float32(0.1))) / np.float32(k)
        bin_w = np.float32(max(end_w - start_w, np.float32(0.1))) / np.float32(k)
        for d in range(output_dim):
            for ph in range(k):
                for pw in range(k):
                    hs = min(max(int(np.floor(np.float32(ph) * bin_h + start_h)), 0), height)
                    he = min(max(int(np.ceil(np.float32(ph + 1) * bin_h + start_h)), 0), height)
                    ws = min(max(int(np.floor(np.float32(pw) * bin_w + start_w)), 0), width)
                    we = min(max(int(np.ceil(np.float32(pw + 1) * bin_w + start_w)), 0), width)
                    if he > hs and we > ws:
                        c = (d * k + ph) * k + pw
                        top[n, d, ph, pw] = x[b, c, hs:he, ws:we].sum(dtype=np.float64) / ((he - hs) * (we - ws))
    return top


def test_psroi_pooling():
    rng = np.random.default_rng(22)
    x = rng.normal(size=(2, 2 * 3 * 3, 10, 12)).astype(np.float32)
    rois = np.array(
        [[0, 0, 0, 23, 19], [1, 4.5, 3, 13, 9.5], [1, 8, 8, 8, 8], [0, -10, 6, 50, 30], [0, 40, 2, 46, 8]], np.float32
    )
    body = (
        'layer { name: "ps" type: "PSROIPooling" bottom: "data" bottom: "rois" top: "ps" '
        "psroi_pooling_param { spatial_scale: 0.5 output_dim: 2 group_size: 3 } }\n"
    )
    proto = 'input: "data" input_shape { dim: 2 dim: 18 dim: 10 dim: 12 }\ninput: "rois" input_shape { dim: 5 dim: 5 }\n' + body
    got = keras_forward(proto, {"data": x, "rois": rois})["ps"]
    want = _psroi_reference(x, rois, 2, 3, 0.5)
    assert not want[4].any()
    assert_close(got, want, rtol=1e-5)


PREDICTED = """
input: "data" input_shape { dim: 2 dim: 8 dim: 6 dim: 7 }
input: "rois" input_shape { dim: 2 dim: 5 }
layer { name: "roi" type: "ROIPooling" bottom: "data" bottom: "rois" top: "roi" roi_pooling_param { pooled_h: 2 pooled_w: 3 } }
layer {
  name: "psroi" type: "PSROIPooling" bottom: "data" bottom: "rois" top: "psroi"
  psroi_pooling_param { spatial_scale: 1 output_dim: 2 group_size: 2 }
}
layer { name: "cols" type: "Im2col" bottom: "data" top: "cols" convolution_param { kernel_size: 2 stride: 2 } }
layer { name: "bn" type: "BN" bottom: "data" top: "bn" top: "bn_mean" top: "bn_var" }
layer { name: "like" type: "Interp" bottom: "cols" bottom: "data" top: "like" }
"""


def test_helpers_in_compiled_predict():
    """The helper layers trace: predict (a compiled function) gives what the eager call gives.

    predict needs as many rois as images (Keras batches every input alike).
    """
    from caffe2py.convert import translate_to_source

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "net.prototxt").write_text(PREDICTED)
        module = load_module(translate_to_source(Path(tmp) / "net.prototxt"))
    model = module.build_model()
    rng = np.random.default_rng(23)
    data = rng.normal(size=(2, 6, 7, 8)).astype(np.float32)
    rois = np.array([[0, 0, 0, 6, 5], [1, 5, 3, 9, 9]], np.float32)
    eager = model([data, rois])
    compiled = model.predict([data, rois], verbose=0, batch_size=2)
    assert len(eager) == len(compiled) == 6
    for want, got in zip(eager, compiled):
        assert_close(np.asarray(got), np.asarray(want), rtol=1e-6)


def test_convolution_ristretto_is_a_float_convolution():
    """Ristretto's layer translates as the Convolution it wraps (its rounding is not reproduced)."""
    from tests.refnet import opencv_forward

    rng = np.random.default_rng(24)
    x = rng.normal(size=(1, 3, 6, 5)).astype(np.float32)
    blobs = [rng.normal(size=(4, 3, 3, 3)).astype(np.float32), rng.normal(size=(4,)).astype(np.float32)]
    layer = 'layer {{ name: "c" type: "{}" bottom: "data" top: "c" convolution_param {{ num_output: 4 kernel_size: 3 pad: 1 }} }}\n'
    head = 'input: "data" input_shape { dim: 1 dim: 3 dim: 6 dim: 5 }\n'
    got = keras_forward(head + layer.format("ConvolutionRistretto"), {"data": x}, [("c", "ConvolutionRistretto", blobs)])["c"]
    want = opencv_forward(head + layer.format("Convolution"), {"data": x}, [("c", "Convolution", blobs)], outputs=["c"])["c"]
    assert_close(got, want)
