"""Numeric tests of the shape and axis layers against OpenCV's Caffe importer and NumPy restatements of Caffe."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from caffe2py.convert import translate
from caffe2py.errors import TranslationError
from tests.refnet import assert_close, caffemodel_bytes, keras_forward

pytest.importorskip("cv2", reason="opencv-python-headless<5 is the independent Caffe runtime")

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def _net(shapes: dict[str, tuple[int, ...]], body: str) -> str:
    lines = []
    for name, shape in shapes.items():
        if len(shape) == 3:
            # The harness feeds only 4-D inputs channels-last: a 3-D blob comes from a 2-D input.
            lines.append(f'input: "{name}_flat"\ninput_shape {{ dim: {shape[0]} dim: {int(np.prod(shape[1:]))} }}\n')
            lines.append(
                _layer(
                    "Reshape",
                    f"reshape_param {{ shape {{ dim: 0 {' '.join(f'dim: {d}' for d in shape[1:])} }} }}",
                    (f"{name}_flat",),
                    (name,),
                    name,
                )
            )
        else:
            lines.insert(0, f'input: "{name}"\ninput_shape {{ {" ".join(f"dim: {d}" for d in shape)} }}\n')
    return "".join(lines) + body


def _feed(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {f"{k}_flat" if v.ndim == 3 else k: v.reshape(len(v), -1) if v.ndim == 3 else v for k, v in inputs.items()}


def _layer(kind: str, params: str = "", bottoms=("data",), tops=("out",), name: str = "out") -> str:
    links = "".join(f' bottom: "{b}"' for b in bottoms) + "".join(f' top: "{t}"' for t in tops)
    return f'layer {{ name: "{name}" type: "{kind}"{links} {params} }}\n'


def _rng(*key: object) -> np.random.Generator:
    # crc32, not hash(): str hashes change per process, and the weights must be the same every run.
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _data(rng, shape) -> np.ndarray:
    return rng.normal(size=shape).astype(np.float32)


def _opencv(proto: str, inputs: dict[str, np.ndarray], weights, blobs) -> dict[str, np.ndarray]:
    """OpenCV's values of Caffe blobs.

    OpenCV names outputs by layer and reuses the memory of a layer's other tops once their readers
    ran, so each wanted blob gets an identity (Power) layer of its own, run last.
    """
    import cv2

    copies = "".join(_layer("Power", "", (b,), (f"{b}_copy",), f"{b}_copy") for b in blobs)
    net = cv2.dnn.readNetFromCaffe(bytearray((proto + copies).encode()), bytearray(caffemodel_bytes(weights)))
    for name, value in inputs.items():
        net.setInput(value, name)
    return dict(zip(blobs, (np.asarray(v) for v in net.forward([f"{b}_copy" for b in blobs]))))


def _compare(proto: str, inputs: dict[str, np.ndarray], outputs, weights=(), **options) -> dict[str, np.ndarray]:
    got = keras_forward(proto, _feed(inputs), weights, outputs=outputs, **options)
    want = _opencv(proto, _feed(inputs), weights, outputs)
    for name in outputs:
        assert_close(got[name], want[name])
    return got


def _keras(proto: str, x: np.ndarray, outputs=("out",), weights=()) -> dict[str, np.ndarray]:
    return keras_forward(proto, _feed({"data": x}), weights, outputs=list(outputs))


# A convolution after a layer checks that the layout it hands on is honoured downstream.
CONV = "convolution_param { num_output: 3 kernel_size: 1 }"


def _conv_weights(rng, channels: int):
    return [("conv", "Convolution", [_data(rng, (3, channels, 1, 1)), _data(rng, (3,))])]


RESHAPE_CASES = [
    # (input shape, reshape_param, output shape)
    ((2, 6, 5, 7), "shape { dim: 0 dim: -1 }", (2, 210)),
    ((2, 6, 5, 7), "shape { dim: 0 dim: 3 dim: 2 dim: 35 }", (2, 3, 2, 35)),  # layout kept
    ((2, 6, 5, 7), "shape { dim: 0 dim: 6 dim: -1 }", (2, 6, 35)),
    ((2, 6, 5, 7), "shape { dim: 2 dim: 3 } axis: 1 num_axes: 1", (2, 2, 3, 5, 7)),
    ((2, 6, 5, 7), "shape { dim: 1 } axis: -1", (2, 6, 5, 7, 1)),
    ((2, 6, 5, 7), "shape { dim: 35 } axis: 2", (2, 6, 35)),
    ((2, 6, 5, 7), "shape { dim: -1 dim: 35 }", (12, 35)),  # across the batch axis
    ((2, 6, 5, 7), "shape { dim: 1 dim: -1 dim: 5 dim: 7 }", (1, 12, 5, 7)),
    ((3, 8, 1, 1), "shape { dim: 0 dim: -1 }", (3, 8)),
    ((2, 24), "shape { dim: 0 dim: 2 dim: 3 dim: 4 }", (2, 2, 3, 4)),
    ((2, 4, 6), "shape { dim: 0 dim: 0 dim: 3 dim: -1 }", (2, 4, 3, 2)),
]


@pytest.mark.parametrize("shape,params,out", RESHAPE_CASES)
def test_reshape(shape, params, out):
    rng = _rng("reshape", shape, params)
    x = _data(rng, shape)
    proto = _net({"data": shape}, _layer("Reshape", f"reshape_param {{ {params} }}"))
    # Caffe's Reshape reinterprets the NCHW buffer; the expected shapes above are worked out by hand.
    assert_close(_keras(proto, x)["out"], x.reshape(out))


@pytest.mark.parametrize(
    "shape,params",
    [((2, 24), "shape { dim: 0 dim: 6 dim: 2 dim: 2 }"), ((2, 6, 5, 7), "shape { dim: 0 dim: 3 dim: 2 dim: 35 }")],
)
def test_reshape_then_convolution(shape, params):
    rng = _rng("reshape conv", shape)
    proto = _net(
        {"data": shape},
        _layer("Reshape", f"reshape_param {{ {params} }}") + _layer("Convolution", CONV, ("out",), ("conv",), "conv"),
    )
    channels = int(params.split("dim: ")[2].split()[0])
    _compare(proto, {"data": _data(rng, shape)}, ["out", "conv"], _conv_weights(rng, channels))


def test_reshape_across_the_batch_and_back():
    # TSM's temporal shift: (N*T, C, H, W) -> (N, T, C, H, W), slice and concat along T, then back.
    rng = _rng("tsm")
    body = (
        _layer("Reshape", "reshape_param { shape { dim: 1 dim: 4 dim: 6 dim: 5 dim: 3 } }", tops=("clip",), name="clip")
        + _layer("Slice", "slice_param { axis: 1 slice_point: 1 }", ("clip",), ("first", "rest"), "split")
        + _layer("Concat", "concat_param { axis: 1 }", ("rest", "first"), ("rolled",), "rolled")
        + _layer("Reshape", "reshape_param { shape { dim: -1 dim: 6 dim: 5 dim: 3 } }", ("rolled",), ("out",))
        + _layer("Convolution", CONV, ("out",), ("conv",), "conv")
    )
    proto = _net({"data": (4, 6, 5, 3)}, body)
    _compare(proto, {"data": _data(rng, (4, 6, 5, 3))}, ["clip", "first", "rest", "out", "conv"], _conv_weights(rng, 6))


@pytest.mark.parametrize(
    "params",
    ["shape { dim: 0 dim: -1 dim: -1 }", "shape { dim: 0 dim: 7 }", "shape { dim: 0 dim: 0 dim: 0 dim: 0 dim: 0 }"],
)
def test_reshape_refuses_bad_shapes(params, tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(_net({"data": (2, 6, 5, 7)}, _layer("Reshape", f"reshape_param {{ {params} }}")))
    with pytest.raises(TranslationError):
        translate(path)


FLATTEN_CASES = [
    ((2, 3, 5, 7), ""),
    ((2, 3, 5, 7), "axis: 2"),
    ((2, 3, 5, 7), "axis: 1 end_axis: 2"),
    ((2, 3, 5, 7), "axis: 1 end_axis: -2"),
    ((2, 3, 5, 7), "axis: 0 end_axis: 1"),
    ((2, 3, 5, 7), "axis: 2 end_axis: 2"),
    ((3, 8, 1, 1), ""),
    ((2, 4, 6), "axis: 1"),
]


@pytest.mark.parametrize("shape,params", FLATTEN_CASES)
def test_flatten(shape, params):
    rng = _rng("flatten", shape, params)
    proto = _net({"data": shape}, _layer("Flatten", f"flatten_param {{ {params} }}"))
    _compare(proto, {"data": _data(rng, shape)}, ["out"])


def test_flatten_inside_the_net_keeps_keras_order_for_a_slice():
    # The flatten is no output, so Keras flattens H,W,C; the Slice must still cut Caffe's C,H,W order.
    rng = _rng("flatten slice")
    body = _layer("Flatten", tops=("flat",), name="flat") + _layer(
        "Slice", "slice_param { slice_point: 10 slice_point: 41 }", ("flat",), ("a", "b", "c"), "cut"
    )
    proto = _net({"data": (2, 3, 5, 7)}, body)
    _compare(proto, {"data": _data(rng, (2, 3, 5, 7))}, ["a", "b", "c"])


PERMUTE_CASES = [
    # (input shape, permute_param, the full order: unnamed axes follow in their own order)
    ((2, 3, 5, 7), "order: 0 order: 2 order: 3 order: 1", (0, 2, 3, 1)),
    ((2, 3, 5, 7), "order: 0 order: 3 order: 1 order: 2", (0, 3, 1, 2)),
    ((2, 3, 5, 7), "order: 0 order: 1 order: 3 order: 2", (0, 1, 3, 2)),
    ((2, 3, 5, 7), "order: 0 order: 3", (0, 3, 1, 2)),
    ((2, 3, 5, 7), "order: 0 order: 1 order: 2 order: 3", (0, 1, 2, 3)),
    ((2, 4, 6), "order: 0 order: 2 order: 1", (0, 2, 1)),
]


@pytest.mark.parametrize("shape,params,order", PERMUTE_CASES)
def test_permute(shape, params, order):
    # OpenCV refuses partial orders; PermuteLayer is a plain transpose.
    rng = _rng("permute", shape, params)
    x = _data(rng, shape)
    proto = _net({"data": shape}, _layer("Permute", f"permute_param {{ {params} }}"))
    assert_close(_keras(proto, x)["out"], x.transpose(order))


def test_permute_reshape_softmax_chain():
    # The SSD / UltraFace head: NCHW -> NHWC in Caffe, then (N, boxes, classes) and a softmax over classes.
    rng = _rng("head")
    body = (
        _layer("Permute", "permute_param { order: 0 order: 2 order: 3 order: 1 }", tops=("perm",), name="perm")
        + _layer("Reshape", "reshape_param { shape { dim: 0 dim: -1 dim: 2 } }", ("perm",), ("boxes",), "boxes")
        + _layer("Softmax", "softmax_param { axis: 2 }", ("boxes",), ("scores",), "scores")
        + _layer("Flatten", "", ("perm",), ("flat",), "flat")
        + _layer("Convolution", CONV, ("perm",), ("conv",), "conv")
    )
    proto = _net({"data": (2, 6, 5, 7)}, body)
    _compare(
        proto, {"data": _data(rng, (2, 6, 5, 7))}, ["perm", "boxes", "scores", "flat", "conv"], _conv_weights(rng, 5)
    )


def test_permute_cannot_move_the_batch(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(_net({"data": (2, 3, 4, 5)}, _layer("Permute", "permute_param { order: 1 order: 0 }")))
    with pytest.raises(TranslationError, match="batch"):
        translate(path)


SLICE_CASES = [
    # (input shape, slice_param, axis, the bounds between tops)
    ((2, 7, 5, 6), "slice_param { axis: 1 slice_point: 2 slice_point: 3 }", 1, [2, 3]),
    ((2, 6, 5, 7), "slice_param { axis: 2 slice_point: 1 }", 2, [1]),
    ((2, 6, 5, 7), "slice_param { axis: -1 slice_point: 3 slice_point: 4 slice_point: 6 }", 3, [3, 4, 6]),
    ((2, 6, 5, 7), "slice_param { axis: 1 }", 1, [2, 4]),  # three equal parts
    ((2, 6, 5, 8), "slice_param { slice_dim: 3 }", 3, [4]),  # legacy field
    ((3, 10), "slice_param { slice_point: 4 }", 1, [4]),
    ((4, 3, 5), "slice_param { axis: 0 slice_point: 1 }", 0, [1]),
]


@pytest.mark.parametrize("shape,params,axis,points", SLICE_CASES)
def test_slice(shape, params, axis, points):
    # OpenCV refuses equal parts when slice_point is absent; numpy splits the same way Caffe does.
    rng = _rng("slice", shape, params)
    x = _data(rng, shape)
    names = [f"s{i}" for i in range(len(points) + 1)]
    proto = _net({"data": shape}, _layer("Slice", params, tops=names, name="s0"))
    got = _keras(proto, x, names)
    for name, want in zip(names, np.split(x, points, axis)):
        assert_close(got[name], want)


def test_slice_chain_against_opencv():
    rng = _rng("slice chain")
    body = _layer("Slice", "slice_param { axis: 1 slice_point: 2 slice_point: 5 }", tops=("a", "b", "c"), name="cut")
    body += _layer("Convolution", CONV, ("b",), ("conv",), "conv")
    proto = _net({"data": (2, 7, 5, 6)}, body)
    _compare(proto, {"data": _data(rng, (2, 7, 5, 6))}, ["a", "b", "c", "conv"], _conv_weights(rng, 3))


CROP_CASES = [
    # (data shape, reference shape, crop_param)
    ((2, 3, 11, 13), (1, 1, 7, 6), "offset: 2"),
    ((2, 3, 11, 13), (1, 1, 7, 6), "offset: 3 offset: 5"),
    ((2, 3, 11, 13), (1, 1, 7, 6), ""),
    ((2, 5, 11, 13), (2, 3, 7, 6), "axis: 1 offset: 1 offset: 2 offset: 4"),
    ((2, 3, 11, 13), (1, 1, 1, 6), "axis: 3 offset: 7"),
    ((2, 3, 11, 13), (1, 1, 4, 6), "axis: -2 offset: 4"),
]


@pytest.mark.parametrize("fully_conv", [False, True])
@pytest.mark.parametrize("shape,ref,params", CROP_CASES)
def test_crop(shape, ref, params, fully_conv):
    rng = _rng("crop", shape, ref, params)
    body = _layer("Crop", f"crop_param {{ {params} }}", ("data", "ref")) + _layer(
        "Convolution", CONV, ("out",), ("conv",), "conv"
    )
    proto = _net({"data": shape, "ref": ref}, body)
    inputs = {"data": _data(rng, shape), "ref": _data(rng, ref)}
    channels = ref[1] if "axis: 1" in params else shape[1]
    _compare(proto, inputs, ["out", "conv"], _conv_weights(rng, channels), fully_conv=fully_conv)


def test_crop_out_of_bounds_is_refused(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(
        _net({"data": (1, 3, 8, 8), "ref": (1, 3, 6, 6)}, _layer("Crop", "crop_param { offset: 3 }", ("data", "ref")))
    )
    with pytest.raises(TranslationError, match="out of bounds"):
        translate(path)


@pytest.mark.parametrize(
    "shape,axis,tiles",
    [((2, 3, 5, 7), 1, 3), ((2, 3, 5, 7), 2, 2), ((2, 3, 5, 7), -1, 4), ((2, 5), 1, 3), ((2, 3, 4), 0, 2)],
)
def test_tile(shape, axis, tiles):
    rng = _rng("tile", shape, axis)
    x = _data(rng, shape)
    proto = _net({"data": shape}, _layer("Tile", f"tile_param {{ axis: {axis} tiles: {tiles} }}"))
    # Caffe copies the block of axes from `axis` on, `tiles` times, for each index of the axes before.
    outer = int(np.prod(shape[: axis % len(shape)]))
    want = np.concatenate([x.reshape(outer, -1)] * tiles, axis=1)
    want = want.reshape(*shape[: axis % len(shape)], -1, *shape[axis % len(shape) + 1 :])
    assert_close(_keras(proto, x)["out"], want)


def _caffe_reduction(x: np.ndarray, op: str, axis: int, coeff: float) -> np.ndarray:
    rows = x.reshape(int(np.prod(x.shape[:axis])), -1).astype(np.float64)
    value = {
        "SUM": rows.sum(1),
        "ASUM": np.abs(rows).sum(1),
        "SUMSQ": (rows * rows).sum(1),
        "MEAN": rows.sum(1) / rows.shape[1],
    }[op]
    return (value * coeff).reshape(x.shape[:axis]).astype(np.float32)


@pytest.mark.parametrize("op", ["SUM", "ASUM", "SUMSQ", "MEAN"])
@pytest.mark.parametrize(
    "shape,axis,coeff", [((2, 3, 5, 7), 1, 1.0), ((2, 3, 5, 7), 2, -0.5), ((2, 3, 5, 7), -1, 2.0), ((2, 3, 4), 0, 1.0)]
)
def test_reduction(op, shape, axis, coeff):
    rng = _rng("reduction", op, shape, axis)
    x = _data(rng, shape)
    proto = _net(
        {"data": shape}, _layer("Reduction", f"reduction_param {{ operation: {op} axis: {axis} coeff: {coeff} }}")
    )
    assert_close(_keras(proto, x)["out"], _caffe_reduction(x, op, axis % len(shape), coeff), 1e-5)


def test_reduction_after_flatten_and_permute():
    rng = _rng("reduction chain")
    body = (
        _layer("Permute", "permute_param { order: 0 order: 3 order: 1 order: 2 }", tops=("perm",), name="perm")
        + _layer("Reduction", "reduction_param { operation: SUMSQ axis: 2 }", ("perm",), ("out",))
        + _layer("Flatten", "", tops=("flat",), name="flat")
        + _layer("Reduction", "reduction_param { operation: MEAN axis: 1 }", ("flat",), ("mean",), "mean")
    )
    x = _data(rng, (2, 3, 5, 7))
    got = _keras(_net({"data": x.shape}, body), x, ["out", "mean"])
    assert_close(got["out"], _caffe_reduction(x.transpose(0, 3, 1, 2), "SUMSQ", 2, 1.0), 1e-5)
    assert_close(got["mean"], _caffe_reduction(x, "MEAN", 1, 1.0), 1e-5)


def _caffe_argmax(x: np.ndarray, top_k: int, out_max_val: bool, axis: int | None) -> np.ndarray:
    """ArgMaxLayer::Forward_cpu: sort (value, index) pairs descending, so ties favour the higher index."""

    def ranked(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.array([sorted(range(len(r)), key=lambda j: (r[j], j), reverse=True)[:top_k] for r in rows])
        return np.take_along_axis(rows, idx, 1), idx.astype(np.float32)

    if axis is None:
        values, idx = ranked(x.reshape(x.shape[0], -1))
        rows = np.stack([idx, values] if out_max_val else [idx], axis=1)
        return rows.reshape(x.shape[0], rows.shape[1], top_k, *[1] * (x.ndim - 3))
    moved = np.moveaxis(x, axis, -1)
    values, idx = ranked(moved.reshape(-1, moved.shape[-1]))
    result = (values if out_max_val else idx).reshape(*moved.shape[:-1], top_k)
    return np.moveaxis(result, -1, axis)


ARGMAX_CASES = [
    ((2, 5, 4, 3), 1, False, 1),
    ((2, 5, 4, 3), 3, True, 1),
    ((2, 5, 4, 3), 2, False, 3),
    ((2, 5, 4, 3), 1, False, -1),
    ((2, 5, 4, 3), 2, True, 2),
    ((2, 5, 4, 3), 1, False, None),
    ((2, 5, 4, 3), 4, True, None),
    ((3, 9), 2, True, None),
]


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("shape,top_k,out_max_val,axis", ARGMAX_CASES)
def test_argmax(shape, top_k, out_max_val, axis, ties):
    rng = _rng("argmax", shape, top_k, axis, ties)
    # Small integers make equal values common, which checks Caffe's tie order.
    x = rng.integers(-2, 3, size=shape).astype(np.float32) if ties else _data(rng, shape)
    params = f"top_k: {top_k} out_max_val: {str(out_max_val).lower()}" + ("" if axis is None else f" axis: {axis}")
    proto = _net({"data": shape}, _layer("ArgMax", f"argmax_param {{ {params} }}"))
    want = _caffe_argmax(x, top_k, out_max_val, None if axis is None else axis % len(shape))
    got = _keras(proto, x)["out"]
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 4)])
def test_embed(shape, bias):
    rng = _rng("embed", shape, bias)
    vocab, width = 11, 6
    # Caffe truncates the float indices.
    x = (rng.integers(0, vocab, size=shape) + rng.uniform(0, 0.9, size=shape)).astype(np.float32)
    table = _data(rng, (vocab, width))
    blobs = [table, _data(rng, (width,))] if bias else [table]
    params = f"embed_param {{ num_output: {width} input_dim: {vocab} bias_term: {str(bias).lower()} }}"
    proto = _net({"data": shape}, _layer("Embed", params))
    want = table[x.astype(np.int64)] + (blobs[1] if bias else 0)
    assert_close(_keras(proto, x, weights=[("out", "Embed", blobs)])["out"], want, 1e-6)


@pytest.mark.parametrize("shape,axis", [((2, 3, 5, 7), 2), ((2, 3, 5, 7), 3), ((2, 6, 5), -1), ((2, 3, 5, 7), -3)])
def test_inner_product_axis(shape, axis):
    rng = _rng("ip axis", shape, axis)
    inputs = int(np.prod(shape[axis % len(shape) :]))
    proto = _net({"data": shape}, _layer("InnerProduct", f"inner_product_param {{ num_output: 4 axis: {axis} }}"))
    weights = [("out", "InnerProduct", [_data(rng, (4, inputs)), _data(rng, (4,))])]
    _compare(proto, {"data": _data(rng, shape)}, ["out"], weights)


ULTRAFACE = CORPUS / "ultraface_slim320"


@pytest.mark.skipif(not (ULTRAFACE / "slim-320.caffemodel").is_file(), reason="needs the shared corpus")
def test_ultraface_with_its_real_weights():
    # Permute + Reshape + Concat + Softmax(axis 2) heads, with the published weights.
    from caffe2py.caffemodel import read_caffemodel

    proto = (ULTRAFACE / "slim-320.prototxt").read_text()
    weights = [(b.name, b.type, b.blobs) for b in read_caffemodel(ULTRAFACE / "slim-320.caffemodel").values()]
    x = _rng("ultraface").uniform(-1, 1, (1, 3, 240, 320)).astype(np.float32)
    _compare(proto, {"input": x}, ["233", "243", "boxes", "scores"], weights)
