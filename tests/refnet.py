"""Test harness: run a small prototxt through caffe2py+Keras and through a Caffe reference runtime."""

from __future__ import annotations

import importlib.util
import itertools
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from caffe2py import schema

_counter = itertools.count()


def caffemodel_bytes(layers: Sequence[tuple[str, str, Sequence[np.ndarray]]]) -> bytes:
    """A binary NetParameter holding ``(layer name, type, blobs)`` entries."""
    net = schema.NetParameter()
    for name, kind, blobs in layers:
        layer = net.layer.add(name=name, type=kind)
        for array in blobs:
            blob = layer.blobs.add()
            blob.shape.dim.extend(int(d) for d in array.shape)
            blob.data.extend(np.asarray(array, dtype=np.float32).reshape(-1).tolist())
    return net.SerializeToString()


def random_blobs(rng: np.random.Generator, shapes: Sequence[Sequence[int]]) -> list[np.ndarray]:
    return [rng.normal(0.0, 0.5, size=tuple(s)).astype(np.float32) for s in shapes]


def load_module(source: str):
    """Import generated module text as a fresh module."""
    name = f"generated_{next(_counter)}"
    with tempfile.TemporaryDirectory(prefix="caffe2py_test_") as directory:
        path = Path(directory) / f"{name}.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def to_caffe(array: np.ndarray, axes) -> np.ndarray:
    """A Keras array in Caffe's axis order, given its BLOBS axes entry."""
    return np.transpose(array, np.argsort(axes))


def keras_forward(
    prototxt: str,
    inputs: Mapping[str, np.ndarray],
    weights: Sequence[tuple[str, str, Sequence[np.ndarray]]] = (),
    outputs: Sequence[str] | None = None,
    **options,
) -> dict[str, np.ndarray]:
    """Translate ``prototxt`` (text), load ``weights``, run on NCHW ``inputs``; blobs in NCHW."""
    with tempfile.TemporaryDirectory(prefix="caffe2py_net_") as directory:
        return _keras_forward(Path(directory), prototxt, inputs, weights, outputs, **options)


def _keras_forward(work, prototxt, inputs, weights, outputs, **options) -> dict[str, np.ndarray]:
    from caffe2py.convert import translate
    from caffe2py.emit import Options
    from caffe2py.render import render
    from caffe2py.weights import write_npz

    (work / "net.prototxt").write_text(prototxt)
    shapes = {k: tuple(v.shape) for k, v in inputs.items()}
    translation = translate(work / "net.prototxt", options=Options(**options), input_shapes=shapes)
    module = load_module(render(translation, "net.npz"))
    names = list(outputs) if outputs is not None else [t.blob for t in translation.outputs]
    model = module.build_model(outputs=names)
    if weights:
        (work / "net.caffemodel").write_bytes(caffemodel_bytes(weights))
        write_npz(translation, work / "net.caffemodel", work / "net.npz")
        module.load_weights(model, work / "net.npz")
    feed = [np.transpose(inputs[t.blob], t.layout) for t in translation.inputs]
    values = model(feed if len(feed) > 1 else feed[0])
    values = values if isinstance(values, (list, tuple)) else [values]
    axes = {name: module.BLOBS[name][1] for name in names}
    unmapped = [name for name in names if axes[name] is None]
    if unmapped:
        raise ValueError(f"blobs {unmapped} are flattened in Keras order; compare them after a layer that restores Caffe's")
    return {name: to_caffe(np.asarray(v), axes[name]) for name, v in zip(names, values)}


def opencv_forward(
    prototxt: str,
    inputs: Mapping[str, np.ndarray],
    weights: Sequence[tuple[str, str, Sequence[np.ndarray]]] = (),
    outputs: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """The same net run by OpenCV's Caffe importer (an independent Caffe runtime)."""
    import cv2

    net = cv2.dnn.readNetFromCaffe(bytearray(prototxt.encode()), bytearray(caffemodel_bytes(weights)))
    for name, value in inputs.items():
        net.setInput(np.ascontiguousarray(value, dtype=np.float32), name)
    names = list(outputs)
    values = net.forward(names)
    return dict(zip(names, (np.asarray(v) for v in values)))


def assert_close(got: np.ndarray, want: np.ndarray, rtol: float = 1e-4) -> None:
    """Equal within ``rtol`` of the reference's largest magnitude (float32 over a few ops)."""
    assert got.shape == want.shape, f"shape {got.shape} != reference {want.shape}"
    scale = max(float(np.abs(want).max()), 1e-6)
    error = float(np.abs(got - want).max()) / scale
    assert error <= rtol, f"relative error {error:.2e} > {rtol:g}"


def oracle_case(cases: Path, name: str, work: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Reference case ``name``: its case.json and input, its weights written to work/net.caffemodel."""
    import json

    spec = importlib.util.spec_from_file_location("make_case", cases.parent / "make_case.py")
    make_case = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_case)
    case = json.loads((cases / name / "case.json").read_text())
    caffemodel, inputs = make_case.build(case, cases)
    (work / "net.caffemodel").write_bytes(caffemodel)
    return case, inputs
