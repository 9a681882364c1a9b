"""Tests for caffe2py.caffemodel: hand-built wire bytes, and real caffemodels against protobuf."""

from __future__ import annotations

import gc
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from caffe2py import caffemodel
from caffe2py.caffemodel import CaffeLayerBlobs, read_caffemodel
from caffe2py.errors import TranslationError

SHARED = Path(__file__).resolve().parents[2] / "shared"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"{SHARED} (real caffemodels, oracle cases) is not present"
)


# --- a tiny protobuf wire writer, independent of the reader under test ------------------------


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 / int32 values are written as 10-byte varints
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tag(number: int, wire: int) -> bytes:
    return varint((number << 3) | wire)


def vint(number: int, value: int) -> bytes:
    return tag(number, 0) + varint(value)


def ld(number: int, payload: bytes | str) -> bytes:
    if isinstance(payload, str):
        payload = payload.encode()
    return tag(number, 2) + varint(len(payload)) + payload


def group(number: int, body: bytes) -> bytes:
    return tag(number, 3) + body + tag(number, 4)


def unknown_fields(base: int) -> list[bytes]:
    """One unknown field of every wire type (a nested group too), numbered from `base`."""
    inner = vint(1, 7) + ld(2, b"\x00\xff") + group(3, vint(4, 1) + tag(5, 5) + b"abcd")
    return [
        vint(base, 300),
        vint(base + 1, -5),
        tag(base + 2, 1) + struct.pack("<d", 1.5),
        ld(base + 3, b"\x0a\x02hi\xa2\x06\x00"),  # looks like a NetParameter; must be skipped
        group(base + 4, inner),
        tag(base + 5, 5) + struct.pack("<f", 2.5),
    ]


def unknowns(base: int) -> bytes:
    return b"".join(unknown_fields(base))


def dims_packed(shape: tuple[int, ...]) -> bytes:
    return ld(1, b"".join(varint(d) for d in shape))


def blob(
    array: np.ndarray,
    *,
    shape: tuple[int, ...] | None = None,
    legacy: tuple[int, ...] | None = None,
    double: bool = False,
    unpacked: bool = False,
    extra: bytes = b"",
) -> bytes:
    """A BlobProto holding `array` (shape from the array unless `shape`/`legacy` given)."""
    out = b""
    if legacy is not None:
        out += b"".join(vint(n, v) for n, v in zip((1, 2, 3, 4), legacy) if v is not None)
    else:
        out += ld(7, dims_packed(array.shape if shape is None else shape))
    flat = array.ravel()
    if double:
        values = flat.astype("<f8")
        if unpacked:
            out += b"".join(tag(8, 1) + v.tobytes() for v in values)
        else:
            out += ld(8, values.tobytes())
    else:
        values = flat.astype("<f4")
        if unpacked:
            out += b"".join(tag(5, 5) + v.tobytes() for v in values)
        else:
            out += ld(5, values.tobytes())
    return out + extra


def layer_v2(name: str, kind: str, blobs: list[bytes], extra: bytes = b"") -> bytes:
    body = ld(1, name) + ld(2, kind) + b"".join(ld(7, b) for b in blobs) + extra
    return ld(100, body)


def layer_v1(name: str, kind: int, blobs: list[bytes], extra: bytes = b"") -> bytes:
    body = ld(2, "bottom") + ld(3, "top") + ld(4, name) + vint(5, kind)
    return ld(2, body + b"".join(ld(6, b) for b in blobs) + extra)


def layer_v0(name: str, kind: str, blobs: list[bytes]) -> bytes:
    v0 = ld(1, name) + ld(2, kind) + vint(3, 20) + b"".join(ld(50, b) for b in blobs)
    return ld(2, ld(2, "data") + ld(3, name) + ld(1, v0))


def write(tmp_path: Path, data: bytes, name: str = "net.caffemodel") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# --- hand-built files ---------------------------------------------------------------------------


def test_v2_layers_with_shape(tmp_path: Path) -> None:
    w, b, s = rand(4, 3, 2, 2, seed=1), rand(4, seed=2), rand(seed=3)
    ip = rand(5, 48, seed=4)
    data = (
        ld(1, "net")
        + layer_v2("data", "Input", [])
        + layer_v2("conv1", "Convolution", [blob(w), blob(b)])
        + layer_v2("relu1", "ReLU", [])
        + layer_v2("ip", "InnerProduct", [blob(ip)])
        + layer_v2("scale", "Scale", [blob(s)])  # shape with no dims: a scalar, count 1
    )
    layers = read_caffemodel(write(tmp_path, data))
    assert list(layers) == ["conv1", "ip", "scale"]  # file order; blob-less layers left out
    conv = layers["conv1"]
    assert isinstance(conv, CaffeLayerBlobs)
    assert (conv.name, conv.type, conv.legacy_shapes) == ("conv1", "Convolution", (False, False))
    np.testing.assert_array_equal(conv.blobs[0], w)
    np.testing.assert_array_equal(conv.blobs[1], b)
    np.testing.assert_array_equal(layers["ip"].blobs[0], ip)
    assert layers["scale"].blobs[0].shape == ()
    assert layers["scale"].blobs[0] == s
    for array in conv.blobs:
        assert array.dtype == np.float32
        assert not array.flags.writeable  # a view into the read-only map, not a copy
        assert array.flags.c_contiguous


def test_arrays_outlive_the_call(tmp_path: Path) -> None:
    w = rand(64, 32, seed=5)
    path = write(tmp_path, layer_v2("ip", "InnerProduct", [blob(w)]))
    array = read_caffemodel(path)["ip"].blobs[0]
    gc.collect()
    np.testing.assert_array_equal(array, w)
    assert float(array.sum()) == pytest.approx(float(w.sum()), rel=1e-5)


def test_v1_enum_types_and_legacy_shapes(tmp_path: Path) -> None:
    w, b = rand(8, 3, 5, 5, seed=6), rand(8, seed=7)
    ip = rand(10, 200, seed=8)
    data = (
        ld(1, "v1net")
        + layer_v1("conv1", 4, [blob(w, legacy=(8, 3, 5, 5)), blob(b, legacy=(1, 1, 1, 8))])
        + layer_v1("pool1", 17, [])
        + layer_v1("ip1", 14, [blob(ip, legacy=(1, 1, 10, 200))])
        + layer_v1("odd", 999, [blob(b, legacy=(1, 1, 1, 8))])  # enum value Caffe does not know
        # Only width given: the others default to 0, so the count is 0 and no values fit.
        + layer_v1("deconv", 39, [blob(np.empty(0), legacy=(None, None, None, 8))])
    )
    layers = read_caffemodel(write(tmp_path, data))
    assert [(n, x.type) for n, x in layers.items()] == [
        ("conv1", "Convolution"),
        ("ip1", "InnerProduct"),
        ("odd", ""),
        ("deconv", "Deconvolution"),
    ]
    conv = layers["conv1"]
    assert conv.legacy_shapes == (True, True)
    assert [a.shape for a in conv.blobs] == [(8, 3, 5, 5), (1, 1, 1, 8)]  # recorded as given
    np.testing.assert_array_equal(conv.blobs[0], w)
    np.testing.assert_array_equal(conv.blobs[1].ravel(), b)
    assert layers["ip1"].blobs[0].shape == (1, 1, 10, 200)
    np.testing.assert_array_equal(layers["ip1"].blobs[0][0, 0], ip)
    assert layers["deconv"].blobs[0].shape == (0, 0, 0, 8)
    assert layers["deconv"].legacy_shapes == (True,)


def test_legacy_dims_take_precedence_over_shape(tmp_path: Path) -> None:
    b = rand(6, seed=9)
    # Blob::FromProto looks at num/channels/height/width first, even when shape is present.
    both = ld(7, dims_packed((6,))) + vint(1, 1) + vint(2, 1) + vint(3, 2) + vint(4, 3)
    both += ld(5, b.astype("<f4").tobytes())
    layers = read_caffemodel(write(tmp_path, layer_v2("x", "Bias", [both])))
    assert layers["x"].legacy_shapes == (True,)
    assert layers["x"].blobs[0].shape == (1, 1, 2, 3)


def test_v0_layers(tmp_path: Path) -> None:
    w, b = rand(20, 1, 5, 5, seed=10), rand(20, seed=11)
    data = (
        ld(1, "v0net")
        + layer_v0("conv1", "conv", [blob(w, legacy=(20, 1, 5, 5)), blob(b, legacy=(1, 1, 1, 20))])
        + layer_v0("relu1", "relu", [])
        + layer_v0("fc", "innerproduct", [blob(w.reshape(20, 25), legacy=(1, 1, 20, 25))])
    )
    layers = read_caffemodel(write(tmp_path, data))
    assert [(n, x.type) for n, x in layers.items()] == [("conv1", "conv"), ("fc", "innerproduct")]
    np.testing.assert_array_equal(layers["conv1"].blobs[0], w)
    assert layers["conv1"].legacy_shapes == (True, True)
    assert layers["fc"].blobs[0].shape == (1, 1, 20, 25)


def test_double_data_becomes_float32(tmp_path: Path) -> None:
    values = np.random.default_rng(12).normal(size=(3, 4))
    both = blob(values.astype(np.float32) + 100, extra=ld(8, values.astype("<f8").tobytes()))
    data = layer_v2("a", "InnerProduct", [blob(values, double=True), both])
    layers = read_caffemodel(write(tmp_path, data))
    first, second = layers["a"].blobs
    assert first.dtype == np.float32 and first.shape == (3, 4)
    np.testing.assert_array_equal(first, values.astype(np.float32))
    # As in Caffe, non-empty double_data wins over data.
    np.testing.assert_array_equal(second, values.astype(np.float32))


def test_unpacked_elements(tmp_path: Path) -> None:
    big = rand(3000, seed=13)  # long enough to cross the reader's scan chunks
    small = rand(2, 3, seed=14)
    doubles = np.random.default_rng(15).normal(size=7)
    # Unpacked values split by an unknown field, then a packed chunk: all one repeated field.
    mixed = ld(7, vint(1, 2) + vint(1, 5))  # dims as unpacked varints
    mixed += b"".join(tag(5, 5) + v.tobytes() for v in big[:2].astype("<f4"))
    mixed += vint(30, 1)
    mixed += b"".join(tag(5, 5) + v.tobytes() for v in big[2:5].astype("<f4"))
    mixed += ld(5, big[5:10].astype("<f4").tobytes())
    data = layer_v2(
        "u",
        "Thing",
        [
            blob(big, unpacked=True),
            blob(small, unpacked=True),
            blob(doubles, double=True, unpacked=True),
            mixed,
        ],
    )
    got = read_caffemodel(write(tmp_path, data))["u"].blobs
    np.testing.assert_array_equal(got[0], big)
    np.testing.assert_array_equal(got[1], small)
    np.testing.assert_array_equal(got[2], doubles.astype(np.float32))
    np.testing.assert_array_equal(got[3], big[:10].reshape(2, 5))
    assert all(a.flags.c_contiguous for a in got)


def test_unknown_fields_of_every_wire_type(tmp_path: Path) -> None:
    w, b = rand(2, 3, 3, 3, seed=16), rand(2, seed=17)
    shape = ld(1, b"".join(varint(d) for d in w.shape)) + unknowns(40)
    blob_w = unknowns(20) + ld(7, shape) + unknowns(30) + ld(5, w.astype("<f4").tobytes())
    blob_w += ld(6, b"\x00" * 8) + ld(9, b"")  # diff and double_diff: known, ignored
    blob_b = blob(b, extra=unknowns(50))
    v2 = (
        unknowns(200)
        + ld(1, "net")
        + vint(5, 1)  # force_backward
        + ld(3, "data")  # input
        + layer_v2(
            "conv", "Convolution", [blob_w, blob_b],
            extra=unknowns(300) + ld(6, ld(1, "w_shared")) + ld(3, "conv"),
        )
        + unknowns(400)
    )  # fmt: skip
    layers = read_caffemodel(write(tmp_path, v2))
    np.testing.assert_array_equal(layers["conv"].blobs[0], w)
    np.testing.assert_array_equal(layers["conv"].blobs[1], b)

    v1 = layer_v1(
        "conv", 4, [blob(w, legacy=w.shape, extra=unknowns(60))],
        extra=unknowns(500) + tag(7, 5) + struct.pack("<f", 1.0),  # blobs_lr, unpacked
    ) + unknowns(600)  # fmt: skip
    np.testing.assert_array_equal(read_caffemodel(write(tmp_path, v1))["conv"].blobs[0], w)


def test_duplicate_names_keep_the_first(tmp_path: Path) -> None:
    a, b = rand(3, seed=18), rand(3, seed=19)
    data = (
        layer_v2("x", "Scale", [])
        + layer_v2("x", "Scale", [blob(a)])
        + layer_v2("x", "Bias", [blob(b)])
    )
    layers = read_caffemodel(write(tmp_path, data))
    assert list(layers) == ["x"]
    assert layers["x"].type == "Scale"
    np.testing.assert_array_equal(layers["x"].blobs[0], a)


def test_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"".join(layer_v2(f"l{i}", "Scale", [blob(rand(50, seed=i))]) for i in range(20))
    path = write(tmp_path, data)
    monkeypatch.setattr(caffemodel, "_PROGRESS_STEP", 1000)
    calls: list[tuple[int, int]] = []
    read_caffemodel(path, progress=lambda done, total: calls.append((done, total)))
    assert len(calls) > 3
    assert calls[-1] == (len(data), len(data))
    assert all(total == len(data) for _, total in calls)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


# --- errors -------------------------------------------------------------------------------------


def small_model() -> tuple[bytes, list[int]]:
    """A V2 model and the offsets where its top-level fields start (valid places to end)."""
    fields = [
        ld(1, "tiny"),
        layer_v2("conv1", "Convolution", [blob(rand(2, 1, 3, 3, seed=20)), blob(rand(2))]),
        layer_v2("ip1", "InnerProduct", [blob(rand(3, 8, seed=21), extra=unknowns(20))]),
        *unknown_fields(200),
    ]
    starts, offset = [], 0
    for field in fields:
        starts.append(offset)
        offset += len(field)
    return b"".join(fields), starts + [offset]


def test_truncated_everywhere(tmp_path: Path) -> None:
    data, boundaries = small_model()
    whole = read_caffemodel(write(tmp_path, data))
    for cut in range(1, len(data)):
        path = write(tmp_path, data[:cut], f"cut{cut}.caffemodel")
        if cut in boundaries:  # a whole number of top-level fields is a valid (shorter) file
            names = list(read_caffemodel(path))
            assert names == list(whole)[: len(names)]
            continue
        with pytest.raises(TranslationError) as info:
            read_caffemodel(path)
        error = info.value
        assert error.path == str(path)
        assert error.message.startswith("truncated: "), (cut, error.message)
        assert f"runs past the end of the file (size {cut})" in error.message
        assert "at byte " in error.message


def test_truncated_message_names_the_layer(tmp_path: Path) -> None:
    data, boundaries = small_model()
    cut = boundaries[2] + 40  # inside ip1's blob
    with pytest.raises(TranslationError) as info:
        read_caffemodel(write(tmp_path, data[:cut]))
    assert info.value.layer == "ip1"
    assert f"field 100 (layer) at byte {boundaries[2]}" in info.value.message
    assert str(info.value).startswith(f"{tmp_path / 'net.caffemodel'}: layer 'ip1': truncated")


def test_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path, b"")
    with pytest.raises(TranslationError, match="empty file: not a caffemodel") as info:
        read_caffemodel(path)
    assert info.value.path == str(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TranslationError, match="cannot read"):
        read_caffemodel(tmp_path / "absent.caffemodel")


LENET_TEXT = """name: "LeNet"
layer {
  name: "data"
  type: "Input"
  top: "data"
  input_param { shape: { dim: 64 dim: 1 dim: 28 dim: 28 } }
}
layer {
  name: "conv1"
  type: "Convolution"
  bottom: "data"
  top: "conv1"
  convolution_param { num_output: 20 kernel_size: 5 }
}
"""


@pytest.mark.parametrize(
    "text",
    [
        LENET_TEXT,
        "# a comment first\n" + LENET_TEXT,
        'layers {\n  name: "conv1"\n  type: CONVOLUTION\n}\n',
        "input: 'data'\r\ninput_dim: 1\r\n",
        'name: "Ünïcode net"\n',
    ],
)
def test_prototxt_given_as_caffemodel(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text.encode())
    with pytest.raises(TranslationError) as info:
        read_caffemodel(path)
    assert info.value.message.startswith("not a binary caffemodel (is it a prototxt?)")
    assert info.value.path == str(path)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\x0f\x00\x00", "invalid wire type 7 in the field tag at byte 0"),
        (ld(1, "x") + b"\x16\x01", "invalid wire type 6 in the field tag at byte 3"),
        (b"\x0c\x01\x02", "end-group tag of field 1 at byte 0 without a start-group"),
        (group(9, vint(1, 1)) + b"\x00\x01", "invalid field number 0"),
        (b"\x1b\x08\x01\x24", "end-group tag of field 4 at byte 3 closes the group of field 3"),
    ],
)
def test_binary_garbage(tmp_path: Path, data: bytes, words: str) -> None:
    with pytest.raises(TranslationError) as info:
        read_caffemodel(write(tmp_path, data))
    assert info.value.message.startswith("not a binary caffemodel (is it a prototxt?): ")
    assert words in info.value.message


def test_other_formats(tmp_path: Path) -> None:
    hdf5 = write(tmp_path, b"\x89HDF\r\n\x1a\n" + b"\x00" * 100, "a.caffemodel.h5")
    with pytest.raises(TranslationError, match="HDF5"):
        read_caffemodel(hdf5)
    lfs = b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 5\n"
    with pytest.raises(TranslationError, match="Git LFS pointer"):
        read_caffemodel(write(tmp_path, lfs))


def test_count_shape_mismatch(tmp_path: Path) -> None:
    good = blob(rand(4, seed=22))
    bad = blob(rand(5, seed=23), shape=(2, 3))
    data = (
        ld(1, "n") + layer_v2("ok", "Scale", [good]) + layer_v2("fc", "InnerProduct", [good, bad])
    )
    with pytest.raises(TranslationError) as info:
        read_caffemodel(write(tmp_path, data))
    error = info.value
    assert (error.layer, error.layer_type) == ("fc", "InnerProduct")
    assert "blob 1 at byte " in error.message
    assert "has 5 data values but its shape (2, 3) needs 6" in error.message


def test_legacy_count_mismatch(tmp_path: Path) -> None:
    data = layer_v1("ip", 14, [blob(rand(10, seed=24), legacy=(1, 1, 2, 4))])
    with pytest.raises(TranslationError, match=r"num/channels/height/width \(1, 1, 2, 4\) needs 8"):
        read_caffemodel(write(tmp_path, data))


def test_empty_blob_is_a_scalar_without_value(tmp_path: Path) -> None:
    # No shape and no data: Caffe reshapes to () (count 1) and then CHECKs 1 == 0.
    with pytest.raises(TranslationError, match=r"has 0 data values but its shape \(\) needs 1"):
        read_caffemodel(write(tmp_path, layer_v2("e", "Scale", [b""])))


def test_negative_dimension(tmp_path: Path) -> None:
    data = layer_v2("n", "Scale", [blob(rand(6, seed=25), shape=(-2, -3))])
    with pytest.raises(TranslationError, match="negative dimension"):
        read_caffemodel(write(tmp_path, data))


@pytest.mark.parametrize(
    ("blob_bytes", "words"),
    [
        (ld(5, b"\x00" * 7), "holds 7 bytes, not a multiple of 4"),
        (b"\x2f", "invalid wire type 7"),
        (tag(5, 2) + varint(50) + b"\x00" * 8, "runs past the end of its enclosing message"),
        (tag(5, 5) + b"\x00\x00", "field 5 (data) at byte "),
    ],
)
def test_corrupt_blob(tmp_path: Path, blob_bytes: bytes, words: str) -> None:
    data = layer_v2("conv9", "Convolution", [blob_bytes]) + layer_v2("after", "ReLU", [])
    with pytest.raises(TranslationError) as info:
        read_caffemodel(write(tmp_path, data))
    assert info.value.layer == "conv9"
    assert words in info.value.message
    assert info.value.message.startswith("corrupt caffemodel: ")


def test_both_layer_and_layers(tmp_path: Path) -> None:
    data = layer_v2("a", "Scale", [blob(rand(2))]) + layer_v1("b", 4, [blob(rand(2))])
    with pytest.raises(TranslationError, match="both V2 `layer` .* and V1 `layers`"):
        read_caffemodel(write(tmp_path, data))


# --- real caffemodels, against an independent protobuf reading ----------------------------------


def proto_net_class() -> type:
    """NetParameter with just the fields needed here, built from a throwaway descriptor."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    optional, repeated = field.LABEL_OPTIONAL, field.LABEL_REPEATED
    package = "caffemodel_test"
    proto = descriptor_pb2.FileDescriptorProto(
        name="caffemodel_test.proto", package=package, syntax="proto2"
    )

    def message(name: str, *fields: tuple) -> None:
        described = proto.message_type.add(name=name)
        for field_name, number, kind, label, *rest in fields:
            one = described.field.add(name=field_name, number=number, type=kind, label=label)
            if rest and rest[0] == "packed":
                one.options.packed = True
            elif rest:
                one.type_name = f".{package}.{rest[0]}"

    message("BlobShape", ("dim", 1, field.TYPE_INT64, repeated, "packed"))
    message(
        "BlobProto",
        ("num", 1, field.TYPE_INT32, optional),
        ("channels", 2, field.TYPE_INT32, optional),
        ("height", 3, field.TYPE_INT32, optional),
        ("width", 4, field.TYPE_INT32, optional),
        ("data", 5, field.TYPE_FLOAT, repeated, "packed"),
        ("shape", 7, field.TYPE_MESSAGE, optional, "BlobShape"),
        ("double_data", 8, field.TYPE_DOUBLE, repeated, "packed"),
    )
    message(
        "LayerParameter",
        ("name", 1, field.TYPE_STRING, optional),
        ("type", 2, field.TYPE_STRING, optional),
        ("blobs", 7, field.TYPE_MESSAGE, repeated, "BlobProto"),
    )
    message(
        "V1LayerParameter",
        ("name", 4, field.TYPE_STRING, optional),
        ("type", 5, field.TYPE_INT32, optional),
        ("blobs", 6, field.TYPE_MESSAGE, repeated, "BlobProto"),
    )
    message(
        "NetParameter",
        ("name", 1, field.TYPE_STRING, optional),
        ("layers", 2, field.TYPE_MESSAGE, repeated, "V1LayerParameter"),
        ("layer", 100, field.TYPE_MESSAGE, repeated, "LayerParameter"),
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.NetParameter"))


V1_NAMES = {4: "Convolution", 14: "InnerProduct", 39: "Deconvolution"}


def expected_by_protobuf(path: Path) -> dict[str, tuple[str, list[np.ndarray], list[bool]]]:
    net = proto_net_class()()
    net.ParseFromString(path.read_bytes())
    assert not (len(net.layer) and len(net.layers))
    expected = {}
    for layer in list(net.layer) + list(net.layers):
        if not layer.blobs or layer.name in expected:
            continue
        kind = layer.type if isinstance(layer.type, str) else V1_NAMES[layer.type]
        arrays, legacy = [], []
        for b in layer.blobs:
            old = any(b.HasField(f) for f in ("num", "channels", "height", "width"))
            shape = (b.num, b.channels, b.height, b.width) if old else tuple(b.shape.dim)
            values = b.double_data if len(b.double_data) else b.data
            arrays.append(np.asarray(values, dtype=np.float32).reshape(shape))
            legacy.append(old)
        expected[layer.name] = (kind, arrays, legacy)
    return expected


REAL_MODELS = [
    "mtcnn/det1.caffemodel",
    "mtcnn/det2.caffemodel",
    "mtcnn/det3.caffemodel",
    "lenet_pretrained/lenet_iter_10000.caffemodel",
    "lenet_v1_pretrained/lenet_iter_10000.caffemodel",
    "cifar10_quick_v1_pretrained/cifar10_quick_iter_5000.caffemodel",
    "ultraface_slim320/slim-320.caffemodel",
    "yufacedetectnet/yufacedetectnet-open-v2.caffemodel",
]


@needs_shared
@pytest.mark.parametrize("name", REAL_MODELS)
def test_real_caffemodel_matches_protobuf(name: str) -> None:
    path = SHARED / "corpus" / name
    if not path.exists():
        pytest.skip(f"{path} is not present")
    got = read_caffemodel(path)
    expected = expected_by_protobuf(path)
    assert list(got) == list(expected)
    for layer_name, (kind, arrays, legacy) in expected.items():
        layer = got[layer_name]
        assert (layer.name, layer.type) == (layer_name, kind)
        assert list(layer.legacy_shapes) == legacy
        assert len(layer.blobs) == len(arrays)
        for mine, theirs in zip(layer.blobs, arrays):
            assert mine.dtype == np.float32
            assert mine.shape == theirs.shape
            np.testing.assert_array_equal(mine, theirs)


@needs_shared
def test_v1_real_model_is_legacy() -> None:
    layers = read_caffemodel(SHARED / "corpus/lenet_v1_pretrained/lenet_iter_10000.caffemodel")
    assert layers["ip1"].type == "InnerProduct"
    assert layers["ip1"].legacy_shapes == (True, True)
    assert layers["ip1"].blobs[0].shape == (1, 1, 500, 800)


@needs_shared
def test_random_weights_case(tmp_path: Path) -> None:
    case_dir = SHARED / "oracle" / "cases" / "mnist_lenet"
    subprocess.run(
        [sys.executable, str(SHARED / "oracle" / "make_case.py"), str(case_dir), str(tmp_path)],
        check=True,
    )
    case = json.loads((case_dir / "case.json").read_text())
    path = tmp_path / "weights.caffemodel"
    got = read_caffemodel(path)
    assert [(n, x.type, [list(b.shape) for b in x.blobs]) for n, x in got.items()] == [
        (name, kind, shapes) for name, kind, shapes in case["layers"]
    ]
    expected = expected_by_protobuf(path)
    for name, layer in got.items():
        for mine, theirs in zip(layer.blobs, expected[name][1]):
            np.testing.assert_array_equal(mine, theirs)
