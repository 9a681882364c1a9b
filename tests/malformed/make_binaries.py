"""Write the binary members of the malformed corpus (caffemodels for tiny.prototxt): python make_binaries.py DIR."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from caffe2py import schema

HERE = Path(__file__).resolve().parent

# tiny.prototxt: data 1x3x8x8 -> conv1 (4 filters, 3x3) -> relu1 -> fc (2 outputs of 4*6*6).
SHAPES = {"conv1": ((4, 3, 3, 3), (4,)), "fc": ((2, 144), (2,))}
TYPES = {"conv1": "Convolution", "fc": "InnerProduct"}


def _net(shapes=SHAPES, names=None, fill=None) -> object:
    rng = np.random.default_rng(7)
    net = schema.NetParameter(name="tiny")
    for layer, blob_shapes in shapes.items():
        entry = net.layer.add(name=(names or {}).get(layer, layer), type=TYPES.get(layer, "Convolution"))
        for shape in blob_shapes:
            values = rng.normal(size=shape).astype(np.float32)
            if fill is not None:
                values = fill(layer, values)
            blob = entry.blobs.add()
            blob.shape.dim.extend(shape)
            blob.data.extend(values.reshape(-1).tolist())
    return net


def good() -> bytes:
    return _net().SerializeToString()


def _with_nan(layer: str, values: np.ndarray) -> np.ndarray:
    if layer == "fc" and values.ndim == 1:
        values[1] = np.nan
    return values


def _v1_and_v2() -> bytes:
    net = _net({"conv1": SHAPES["conv1"]})
    v1 = net.layers.add(name="fc", type=14)  # INNER_PRODUCT in V1LayerParameter.LayerType
    for shape in SHAPES["fc"]:
        blob = v1.blobs.add()
        blob.shape.dim.extend(shape)
        blob.data.extend([0.5] * int(np.prod(shape)))
    return net.SerializeToString()


def _data_count_mismatch() -> bytes:
    net = _net()
    del net.layer[0].blobs[0].data[100:]
    return net.SerializeToString()


def _legacy_shapes() -> bytes:
    # Caffe before shape{} wrote num/channels/height/width: (1, 1, 2, 144) is fc's (2, 144).
    net = _net()
    for blob in net.layer[1].blobs:
        dims = list(blob.shape.dim)
        blob.ClearField("shape")
        blob.num, blob.channels, blob.height, blob.width = [1] * (4 - len(dims)) + dims
    return net.SerializeToString()


def _v1_unknown_type() -> bytes:
    # A V1 layer whose type number no LayerType has: proto2 keeps it as an unknown field, so the
    # layer reads as typeless and Caffe still loads its blobs by name.
    net = schema.NetParameter(name="tiny")
    for layer, kind in (("conv1", 77), ("fc", 14)):
        v1 = schema.V1LayerParameter(name=layer)
        for shape in SHAPES[layer]:
            blob = v1.blobs.add()
            blob.shape.dim.extend(shape)
            blob.data.extend([0.25] * int(np.prod(shape)))
        payload = v1.SerializeToString() + bytes([5 << 3, kind])  # field 5 (type), a varint
        net.MergeFromString(bytes([2 << 3 | 2]) + _varint(len(payload)) + payload)
    return net.SerializeToString()


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out) + bytes([value])


BINARIES = {
    "binary_as_prototxt.prototxt": good,
    "empty.caffemodel": lambda: b"",
    "truncated.caffemodel": lambda: good()[: len(good()) // 2],
    "other_net.caffemodel": lambda: _net(names={"conv1": "conv_a", "fc": "fc_a"}).SerializeToString(),
    "wrong_blob_count.caffemodel": lambda: _net({"conv1": SHAPES["conv1"][:1], "fc": SHAPES["fc"]}).SerializeToString(),
    "wrong_blob_shape.caffemodel": lambda: _net(
        {"conv1": ((4, 3, 5, 5), (4,)), "fc": SHAPES["fc"]}
    ).SerializeToString(),
    "nan_weights.caffemodel": lambda: _net(fill=_with_nan).SerializeToString(),
    "v1_v2_mix.caffemodel": _v1_and_v2,
    "data_count_mismatch.caffemodel": _data_count_mismatch,
    "garbage.caffemodel": lambda: np.random.default_rng(3).integers(0, 256, 300, dtype=np.uint8).tobytes(),
    "text.caffemodel": lambda: (HERE / "tiny.prototxt").read_bytes(),
    "legacy_shapes.caffemodel": _legacy_shapes,
    "v1_unknown_type.caffemodel": _v1_unknown_type,
}


def write_all(directory: str | Path) -> list[Path]:
    """Write every binary file into ``directory``; returns their paths."""
    written = []
    for name, make in BINARIES.items():
        path = Path(directory) / name
        path.write_bytes(make())
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_all(sys.argv[1] if len(sys.argv) > 1 else HERE):
        print(path)
