"""C3D's Convolution3D and Pooling3D (V1.1 and V1.0 files) against NumPy restatements of its C++ loops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from caffe2py.errors import TranslationError
from tests.refnet import caffemodel_bytes, load_module

FLT_MAX = np.float32(3.4028235e38)


def conv3d_reference(x, weight, bias, pad, temporal_pad, stride, temporal_stride):
    """Convolution3DLayer::Forward_cpu: vol2col with zero padding, one GEMM, the bias added."""
    _, kd, k = weight.shape[1], weight.shape[2], weight.shape[3]
    padded = np.pad(x, ((0, 0), (0, 0), (temporal_pad,) * 2, (pad,) * 2, (pad,) * 2)).astype(np.float64)
    n, _, length, height, width = padded.shape
    out = ((length - kd) // temporal_stride + 1, (height - k) // stride + 1, (width - k) // stride + 1)
    y = np.zeros((n, weight.shape[0], *out))
    for i in range(kd):
        for j in range(k):
            for m in range(k):
                window = padded[
                    :, :,
                    i : i + temporal_stride * (out[0] - 1) + 1 : temporal_stride,
                    j : j + stride * (out[1] - 1) + 1 : stride,
                    m : m + stride * (out[2] - 1) + 1 : stride,
                ]
                y += np.einsum("nclhw,oc->nolhw", window, weight[:, :, i, j, m].astype(np.float64))
    if bias is not None:
        y += bias.reshape(1, -1, 1, 1, 1)
    return y.astype(np.float32)


def pool3d_reference(x, method, kernel_size, kernel_depth, stride, temporal_stride, pad):
    """Pooling3DLayer::Forward_cpu, loop for loop (pad only for AVE, never on the length axis)."""
    n, c, length, height, width = x.shape
    pooled = (
        math.ceil((length - kernel_depth) / temporal_stride) + 1,
        math.ceil((height + 2 * pad - kernel_size) / stride) + 1,
        math.ceil((width + 2 * pad - kernel_size) / stride) + 1,
    )
    y = np.zeros((n, c, *pooled), np.float32)
    for pl in range(pooled[0]):
        for ph in range(pooled[1]):
            for pw in range(pooled[2]):
                lstart = pl * temporal_stride
                lend = min(lstart + kernel_depth, length)
                if method == "max":
                    hstart, wstart = ph * stride, pw * stride
                    hend, wend = min(hstart + kernel_size, height), min(wstart + kernel_size, width)
                    window = x[:, :, lstart:lend, hstart:hend, wstart:wend]
                    y[:, :, pl, ph, pw] = np.maximum(window.max(axis=(2, 3, 4)), -FLT_MAX)
                else:
                    hstart, wstart = ph * stride - pad, pw * stride - pad
                    hend = min(hstart + kernel_size, height + pad)
                    wend = min(wstart + kernel_size, width + pad)
                    pool_size = (hend - hstart) * (wend - wstart) * (lend - lstart)
                    hstart, wstart = max(hstart, 0), max(wstart, 0)
                    hend, wend = min(hend, height), min(wend, width)
                    total = x[:, :, lstart:lend, hstart:hend, wstart:wend].sum(axis=(2, 3, 4), dtype=np.float64)
                    y[:, :, pl, ph, pw] = total / pool_size
    return y


# One net, every branch reading the clip: padding, strides, "same", filter_group, ceil-mode overhang.
CONVS = {
    "conv_strided": {"num_output": 4, "kernel_size": 3, "kernel_depth": 2, "pad": 1, "temporal_pad": 1, "stride": 2, "temporal_stride": 1},
    "conv_same": {"num_output": 3, "kernel_size": 3, "kernel_depth": 3, "pad": 1, "temporal_pad": 1, "bias_term": "false"},
    "conv_groups": {"num_output": 4, "kernel_size": 2, "kernel_depth": 2, "temporal_stride": 2, "filter_group": 2},
}
POOLS = {
    "pool_max": {"pool": "MAX", "kernel_size": 2, "kernel_depth": 2, "stride": 2, "temporal_stride": 2},
    "pool_max_overlap": {"pool": "MAX", "kernel_size": 3, "kernel_depth": 3, "stride": 2, "temporal_stride": 2},
    "pool_max_dense": {"pool": "MAX", "kernel_size": 2, "kernel_depth": 1},
    "pool_ave_pad": {"pool": "AVE", "kernel_size": 3, "kernel_depth": 2, "stride": 2, "temporal_stride": 1, "pad": 1},
    "pool_ave": {"pool": "AVE", "kernel_size": 2, "kernel_depth": 3, "stride": 2, "temporal_stride": 2},
}


def _fields(params: dict) -> str:
    return " ".join(f"{k}: {v}" for k, v in params.items())


def branches_prototxt(shape) -> str:
    text = f'name: "c3d_branches"\ninput: "data"\ninput_shape {{ {" ".join(f"dim: {d}" for d in shape)} }}\n'
    for name, params in CONVS.items():
        text += f'layer {{ name: "{name}" type: "Convolution3D" bottom: "data" top: "{name}" convolution3d_param {{ {_fields(params)} }} }}\n'
    for name, params in POOLS.items():
        text += f'layer {{ name: "{name}" type: "Pooling3D" bottom: "data" top: "{name}" pooling3d_param {{ {_fields(params)} }} }}\n'
    return text


def _conv_blobs(rng, params, channels):
    k, kd, out = params["kernel_size"], params["kernel_depth"], params["num_output"]
    blobs = [rng.normal(0, 0.3, (out, channels, kd, k, k)).astype(np.float32)]
    if params.get("bias_term") != "false":
        blobs.append(rng.normal(0, 0.3, (1, 1, 1, 1, out)).astype(np.float32))
    return blobs


def _branch_references(x, blobs):
    want = {}
    for name, p in CONVS.items():
        b = blobs[name]
        want[name] = conv3d_reference(
            x, b[0], b[1] if len(b) > 1 else None, p.get("pad", 0), p.get("temporal_pad", 0), p.get("stride", 1), p.get("temporal_stride", 1)
        )
    for name, p in POOLS.items():
        want[name] = pool3d_reference(
            x, p["pool"].lower(), p["kernel_size"], p["kernel_depth"], p.get("stride", 1), p.get("temporal_stride", 1), p.get("pad", 0)
        )
    return want


def _translate(tmp_path, text, caffemodel=None, name="net"):
    from caffe2py.convert import translate
    from caffe2py.render import render
    from caffe2py.weights import write_npz

    prototxt = tmp_path / f"{name}.prototxt"
    prototxt.write_text(text)
    translation = translate(prototxt)
    module = load_module(render(translation, f"{name}.npz"))
    if caffemodel:
        (tmp_path / f"{name}.caffemodel").write_bytes(caffemodel)
        write_npz(translation, tmp_path / f"{name}.caffemodel", tmp_path / f"{name}.npz")
    return translation, module


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def c3d_v1_caffemodel(layers) -> bytes:
    """A caffemodel as C3D v1.0 writes it: V1 layers whose BlobProtos number num, channels, length,
    height, width 1-5 and data 6, every blob 5-D (an InnerProduct's weights 1 x 1 x 1 x O x K)."""
    net = _field(1, b"tiny_c3d")
    for name, kind, blobs in layers:
        layer = _field(4, name.encode()) + _field(5, kind)
        for array in blobs:
            dims = (1,) * (5 - array.ndim) + array.shape
            blob = b"".join(_field(i + 1, int(d)) for i, d in enumerate(dims))
            layer += _field(6, blob + _field(6, np.asarray(array, "<f4").tobytes()))
        net += _field(2, layer)
    return net


def _max_error(got, want):
    assert got.shape == want.shape, f"shape {got.shape} != reference {want.shape}"
    return float(np.abs(got - want).max()) / max(float(np.abs(want).max()), 1e-6)


def test_convolution3d_and_pooling3d_match_c3d_at_two_sizes(tmp_path):
    rng = np.random.default_rng(3)
    shape = (2, 3, 5, 7, 6)  # odd sizes: ceil-mode windows overhang the clip
    blobs = {name: _conv_blobs(rng, p, shape[1]) for name, p in CONVS.items()}
    layers = [(n, "Convolution3D", b) for n, b in blobs.items()]
    translation, module = _translate(tmp_path, branches_prototxt(shape), caffemodel_bytes(layers))
    assert "CaffePooling3D" in translation.helpers
    names = [*CONVS, *POOLS]
    # The same module at the translated size and at another one it was not translated for.
    for size in (shape[2:], (4, 9, 8)):
        x = rng.normal(size=(2, 3, *size)).astype(np.float32)
        model = module.build_model(input_shape=(*size, 3), outputs=names)
        module.load_weights(model, tmp_path / "net.npz")
        got = model.predict(np.transpose(x, (0, 2, 3, 4, 1)), verbose=0)
        want = _branch_references(x, blobs)
        errors = {
            name: _max_error(np.transpose(value, np.argsort(module.BLOBS[name][1])), want[name])
            for name, value in zip(names, got)
        }
        assert max(errors.values()) <= 1e-5, errors


# A tiny C3D v1.0 net: V1 layers, five input_dim values, C3D's fields in convolution_param/pooling_param.
V1_NET = """name: "tiny_c3d"
input: "data"
input_dim: 1
input_dim: 3
input_dim: 4
input_dim: 6
input_dim: 6
layers { name: "conv1" type: CONVOLUTION3D bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 kernel_depth: 3 pad: 1 temporal_pad: 1 } }
layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
layers { name: "pool1" type: POOLING3D bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 kernel_depth: 2 stride: 2 temporal_stride: 2 } }
layers { name: "fc" type: INNER_PRODUCT bottom: "pool1" top: "fc" inner_product_param { num_output: 5 } }
layers { name: "prob" type: SOFTMAX bottom: "fc" top: "prob" }
"""


def test_a_c3d_v1_net_runs_end_to_end(tmp_path):
    """Translated from its V1 prototxt, weights read from a caffemodel in C3D v1.0's own blob format."""
    rng = np.random.default_rng(5)
    conv = [rng.normal(0, 0.3, (4, 3, 3, 3, 3)).astype(np.float32), rng.normal(0, 0.3, (1, 1, 1, 1, 4)).astype(np.float32)]
    fc = [rng.normal(0, 0.3, (5, 4 * 2 * 3 * 3)).astype(np.float32), rng.normal(0, 0.3, (5,)).astype(np.float32)]
    # C3D's own V1 LayerType numbers: CONVOLUTION3D 30, INNER_PRODUCT 14.
    caffemodel = c3d_v1_caffemodel([("conv1", 30, conv), ("fc", 14, fc)])
    translation, module = _translate(tmp_path, V1_NET, caffemodel, name="tiny")
    assert [t.shape for t in translation.inputs] == [(1, 3, 4, 6, 6)]
    model = module.build_model()
    module.load_weights(model, tmp_path / "tiny.npz")
    x = rng.normal(size=(2, 3, 4, 6, 6)).astype(np.float32)
    got = model.predict(np.transpose(x, (0, 2, 3, 4, 1)), verbose=0)
    hidden = np.maximum(conv3d_reference(x, conv[0], conv[1], 1, 1, 1, 1), 0)
    pooled = pool3d_reference(hidden, "max", 2, 2, 2, 2, 0)
    # InnerProduct reads the pooled clip in Caffe's C, L, H, W order.
    logits = pooled.reshape(2, -1).astype(np.float64) @ fc[0].T.astype(np.float64) + fc[1]
    want = np.exp(logits - logits.max(axis=1, keepdims=True))
    want /= want.sum(axis=1, keepdims=True)
    assert _max_error(got, want) <= 1e-5


def _error(tmp_path, text) -> str:
    from caffe2py.convert import translate

    (tmp_path / "bad.prototxt").write_text(text)
    with pytest.raises(TranslationError) as info:
        translate(tmp_path / "bad.prototxt")
    return str(info.value)


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (
            'type: "Pooling3D" pooling3d_param { pool: MAX kernel_size: 3 kernel_depth: 1 pad: 1 }',
            "C3D pads only AVE pooling (its Pooling3D refuses pad with MAX)",
        ),
        (
            'type: "Pooling3D" pooling3d_param { pool: MAX kernel_size: 2 kernel_depth: 1 stride: 3 }',
            "stride (1, 3, 3) larger than the kernel (1, 2, 2) (L, H, W) is not supported",
        ),
        ('type: "Convolution3D" convolution3d_param { num_output: 2 kernel_size: 3 }', "kernel_size and kernel_depth must both be set"),
        (
            'type: "Convolution3D" convolution3d_param { num_output: 3 kernel_size: 1 kernel_depth: 1 filter_group: 2 }',
            "filter_group 2 must divide num_output 3",
        ),
    ],
)
def test_c3d_errors(tmp_path, layer, message):
    text = f'input: "data"\ninput_shape {{ dim: 1 dim: 2 dim: 3 dim: 4 dim: 4 }}\nlayer {{ name: "l" bottom: "data" top: "l" {layer} }}\n'
    assert message in _error(tmp_path, text)


def test_c3d_layers_need_5d_blobs(tmp_path):
    text = 'input: "data"\ninput_shape { dim: 1 dim: 2 dim: 4 dim: 4 }\nlayer { name: "l" type: "Convolution3D" bottom: "data" top: "l" convolution3d_param { num_output: 2 kernel_size: 1 kernel_depth: 1 } }\n'
    assert "Convolution3D needs a 5-D N x C x L x H x W blob, got a 4-D one" in _error(tmp_path, text)


def test_v1_c3d_fields_move_and_foreign_ones_are_refused(tmp_path):
    from google.protobuf import text_format

    from caffe2py import schema
    from caffe2py.upgrade import upgrade_net

    net = upgrade_net(text_format.Parse(V1_NET, schema.NetParameter()))
    assert list(net.input_shape[0].dim) == [1, 3, 4, 6, 6]
    conv, pool = net.layer[0], net.layer[2]
    assert (conv.type, pool.type) == ("Convolution3D", "Pooling3D")
    assert not conv.HasField("convolution_param") and not pool.HasField("pooling_param")
    c = conv.convolution3d_param
    assert (c.num_output, c.kernel_size, c.kernel_depth, c.pad, c.temporal_pad, c.stride) == (4, 3, 3, 1, 1, 1)
    p = pool.pooling3d_param
    assert (p.kernel_size, p.kernel_depth, p.stride, p.temporal_stride) == (2, 2, 2, 2)
    dilated = V1_NET.replace("temporal_pad: 1 }", "temporal_pad: 1 dilation: 2 }")
    assert "convolution_param.dilation is not a field of C3D's CONVOLUTION3D" in _error(tmp_path, dilated)
    six = V1_NET.replace("input_dim: 6\ninput_dim: 6\n", "input_dim: 6\ninput_dim: 6\ninput_dim: 6\n")
    assert "1 input(s) need 4 input_dim values (4 per input; C3D's 5-D inputs 5), found 6" in _error(tmp_path, six)
