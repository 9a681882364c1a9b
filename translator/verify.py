"""caffe2py verify: run a translation and an independent Caffe runtime on one random input and compare every blob."""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import TranslationError
from .ir import Tensor, Translation
from .options import shape_argument
from .pysource import comment


@dataclass(frozen=True)
class Row:
    """One compared blob."""

    blob: str
    shape: tuple[int, ...]
    max_abs: float
    relative: float
    problem: str = ""  # set when the two runtimes disagree on the shape


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="caffe2py verify",
        description="Run the translated Keras model and a Caffe runtime (pycaffe if importable, else OpenCV's "
        "Caffe importer) on the same random input; print every blob's error; exit 1 if any exceeds the tolerance.",
    )
    p.add_argument("prototxt", help="the net definition, e.g. deploy.prototxt")
    p.add_argument("caffemodel", nargs="?", help="its weights, e.g. net.caffemodel; without it, seeded random weights (He-scaled, positive variances)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest relative error allowed: max |difference| over max |Caffe value| (default 1e-4)")
    p.add_argument("--input-shape", action="append", type=shape_argument, default=[], metavar="NAME=N,C,H,W", help="shape of an input blob instead of the prototxt's (repeatable)")
    p.add_argument("--npz", metavar="PATH", help="Keras weights to use instead of converting the caffemodel (to check a given .npz)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input, uniform in [-1, 1], and of random weights (default 0)")
    return p


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def random_blobs(rng: np.random.Generator, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    """Weights that keep activations near unit scale through a deep net, and that Caffe accepts.

    Weight blobs (two or more axes of size > 1) are He-scaled: normal with variance 2 / fan-in.
    Per-channel blobs of a layer with weights are biases (small); those of a layer without weights
    are scales, slopes, means and variances: uniform in [0.5, 1.5], so a variance is positive.
    """

    def per_channel(shape: tuple[int, ...]) -> bool:
        return sum(d > 1 for d in shape) <= 1

    has_weights = not all(per_channel(s) for s in shapes)
    blobs = []
    for shape in shapes:
        if not per_channel(shape):
            blob = rng.normal(0.0, np.sqrt(2.0 / max(1, int(np.prod(shape[1:])))), shape)
        elif has_weights:
            blob = rng.normal(0.0, 0.1, shape)
        else:
            blob = rng.uniform(0.5, 1.5, shape)
        blobs.append(blob.astype("<f4"))
    return blobs


def write_random_caffemodel(translation: Translation, seed: int, path: Path) -> None:
    """A binary caffemodel with seeded random weights for every layer the translation needs."""
    from .schema import BlobProto, LayerParameter

    rng = np.random.default_rng(seed)
    with open(path, "wb") as out:
        for expect in translation.expectations:
            layer = LayerParameter(name=expect.layer, type=expect.layer_type).SerializeToString()
            for blob in random_blobs(rng, [tuple(s) for s in expect.shapes]):
                proto = BlobProto()
                proto.shape.dim.extend(blob.shape)
                # The packed float data (BlobProto field 5) straight from the array: no Python floats.
                layer += _field(7, proto.SerializeToString() + _field(5, blob.tobytes()))
            out.write(_field(100, layer))  # NetParameter.layer


def caffe_writers(prototxt: Path, input_shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[str, int]]:
    """For each blob, the Caffe layer that writes its final value and the top index there."""
    from .normalize import build_graph
    from .parse import read_prototxt

    graph = build_graph(read_prototxt(prototxt), input_shapes=input_shapes)
    return {top[0]: (node.name, i) for node in graph.nodes for i, top in enumerate(node.tops)}


def to_caffe_order(value: np.ndarray, tensor: Tensor) -> np.ndarray:
    """A Keras value of ``tensor`` in Caffe's NCHW element order."""
    if tensor.flat_of is not None:
        shape, layout = tensor.flat_of
        spatial = value.reshape(len(value), *(shape[a] for a in layout[1:]))
        return np.transpose(spatial, np.argsort(layout)).reshape(len(value), -1)
    return np.transpose(value, np.argsort(tensor.layout))


def keras_blobs(translation: Translation, npz: Path, inputs: Mapping[str, np.ndarray], blobs: list[str]) -> dict[str, np.ndarray]:
    """Every blob in ``blobs`` as the translated model computes it, in Caffe's order."""
    from .render import render

    with tempfile.TemporaryDirectory(prefix="caffe2py_verify_") as tmp:
        path = Path(tmp) / "verified_model.py"
        path.write_text(render(translation, npz.name))
        spec = importlib.util.spec_from_file_location("verified_model", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    model = module.build_model(outputs=blobs)
    try:
        module.load_weights(model, npz)
    except ValueError as exc:  # the .npz is for another net (a missing, extra or misshapen array)
        raise TranslationError(str(exc)) from None
    feed = [
        np.transpose(inputs[t.blob], (0, 2, 3, 1)) if t.rank == 4 else inputs[t.blob] for t in translation.inputs
    ]
    values = model(feed if len(feed) > 1 else feed[0])
    values = values if len(blobs) > 1 else [values]
    return {b: to_caffe_order(np.asarray(v), translation.blobs[b]) for b, v in zip(blobs, values)}


def pycaffe_blobs(prototxt: Path, caffemodel: Path, inputs: Mapping[str, np.ndarray], blobs: list[str]) -> dict[str, np.ndarray]:
    """The blobs as BVLC Caffe itself computes them (TEST phase)."""
    import caffe

    caffe.set_mode_cpu()
    net = caffe.Net(str(prototxt), str(caffemodel), caffe.TEST)
    for name, value in inputs.items():
        net.blobs[name].reshape(*value.shape)
        net.blobs[name].data[...] = value
    net.forward()
    return {b: np.array(net.blobs[b].data) for b in blobs if b in net.blobs}


def opencv_blobs(
    prototxt: Path, caffemodel: Path, inputs: Mapping[str, np.ndarray], writers: Mapping[str, tuple[str, int]]
) -> dict[str, np.ndarray]:
    """The blobs as OpenCV's Caffe importer computes them; it names outputs by the layer that writes them."""
    import cv2

    try:
        net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    except cv2.error as exc:
        raise TranslationError(f"OpenCV cannot load the net: {_first_line(exc)}", path=str(prototxt)) from None
    net.enableFusion(False)  # keep every layer's own output, as Caffe has it
    for name, value in inputs.items():
        net.setInput(np.ascontiguousarray(value, dtype=np.float32), name)
    layers = sorted({layer for layer, _ in writers.values() if net.getLayerId(layer) >= 0})
    try:
        outputs = dict(zip(layers, net.forwardAndRetrieve(layers)))
    except cv2.error as exc:
        raise TranslationError(f"OpenCV cannot run the net: {_first_line(exc)}", path=str(prototxt)) from None
    return {
        blob: np.asarray(outputs[layer][i])
        for blob, (layer, i) in writers.items()
        if layer in outputs and i < len(outputs[layer])
    }


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def compare(ours: Mapping[str, np.ndarray], theirs: Mapping[str, np.ndarray], order: list[str]) -> list[Row]:
    """One row per blob of ``order`` (which both runtimes have)."""
    rows = []
    for blob in order:
        got, want = ours[blob], theirs[blob]
        if got.shape != want.shape:
            rows.append(Row(blob, want.shape, np.inf, np.inf, f"Keras shape {got.shape}"))
            continue
        max_abs = float(np.abs(got.astype(np.float64) - want).max()) if want.size else 0.0
        rows.append(Row(blob, want.shape, max_abs, max_abs / max(float(np.abs(want).max()) if want.size else 0.0, 1e-6)))
    return rows


def table(rows: list[Row], tolerance: float) -> str:
    names = [comment(r.blob) for r in rows]
    shapes = ["x".join(map(str, r.shape)) for r in rows]
    width = max([4, *map(len, names)])
    shape_width = max([5, *map(len, shapes)])
    lines = [f"{'blob':<{width}}  {'shape':<{shape_width}}  {'max abs error':>13}  {'relative error':>14}"]
    for row, name, shape in zip(rows, names, shapes):
        if row.problem:
            lines.append(f"{name:<{width}}  {shape:<{shape_width}}  {'-':>13}  {'-':>14}  FAIL: {row.problem}")
            continue
        mark = "  FAIL" if row.relative > tolerance else ""
        lines.append(f"{name:<{width}}  {shape:<{shape_width}}  {row.max_abs:>13.3g}  {row.relative:>14.3g}{mark}")
    return "\n".join(lines)


def run(argv: list[str] | None = None) -> int:
    from .config import load as load_project_options
    from .convert import translate

    argv = sys.argv[1:] if argv is None else list(argv)
    p = parser()
    args = p.parse_args(argv)
    # The options pyproject.toml gives this prototxt (those verify takes), then the command line's.
    project = load_project_options([args.prototxt], p, only_known=True)
    extra = project.arguments_for(args.prototxt) if project else []
    if extra:
        args = p.parse_args([*extra, *argv])

    prototxt = Path(args.prototxt)
    if args.caffemodel is None and args.npz:
        raise TranslationError("--npz needs the caffemodel it was converted from")
    if args.caffemodel is not None and not Path(args.caffemodel).is_file():
        raise TranslationError("no such caffemodel file", path=args.caffemodel)
    shapes = dict(args.input_shape)
    translation = translate(prototxt, input_shapes=shapes)
    with tempfile.TemporaryDirectory(prefix="caffe2py_verify_") as tmp:
        if args.caffemodel is None:
            caffemodel = Path(tmp) / f"{prototxt.stem}.random.caffemodel"
            write_random_caffemodel(translation, args.seed, caffemodel)
        else:
            caffemodel = Path(args.caffemodel)
        return _compare(args, prototxt, caffemodel, translation, shapes, Path(tmp))


def _compare(
    args: argparse.Namespace, prototxt: Path, caffemodel: Path, translation: Translation, shapes: dict, tmp: Path
) -> int:
    """Run both runtimes on one seeded input; print the table; 0 when every blob is within the tolerance."""
    from .weights import write_npz

    rng = np.random.default_rng(args.seed)
    inputs = {}
    for tensor in translation.inputs:
        if any(d is None for d in tensor.shape):
            raise TranslationError(f"input {tensor.blob!r} has no fixed shape: pass --input-shape", path=str(prototxt))
        inputs[tensor.blob] = rng.uniform(-1.0, 1.0, tensor.shape).astype(np.float32)
    order = [b for b in translation.blobs if b not in inputs]
    writers = caffe_writers(prototxt, shapes)

    if _importable("caffe"):
        runtime, theirs = "pycaffe", pycaffe_blobs(prototxt, caffemodel, inputs, order)
    elif _importable("cv2"):
        import cv2

        runtime, theirs = f"OpenCV {cv2.__version__}", opencv_blobs(prototxt, caffemodel, inputs, writers)
    else:
        raise TranslationError("no Caffe runtime to compare with: install pycaffe, or pip install 'opencv-python-headless<5'")

    common = [b for b in order if b in theirs]
    weights = "" if args.caffemodel else f", random weights (seed {args.seed})"
    print(f"{prototxt.name}: Keras against {runtime}, input uniform in [-1, 1] (seed {args.seed}){weights}")
    if not common:
        print(f"no blob could be compared: {runtime} exposed none of the translation's blobs")
        return 1
    npz = Path(args.npz) if args.npz else tmp / "weights.npz"
    if not args.npz:
        write_npz(translation, caffemodel, npz, display=args.caffemodel)
    ours = keras_blobs(translation, npz, inputs, common)

    rows = compare(ours, theirs, common)
    print(table(rows, args.tolerance))
    unseen = [comment(b) for b in order if b not in theirs]
    if unseen:
        print(f"not compared ({runtime} does not expose them): {', '.join(unseen)}")
    failed = [r for r in rows if r.problem or r.relative > args.tolerance]
    if failed:
        first = failed[0]
        why = first.problem or f"relative error {first.relative:.3g} > {args.tolerance:g}"
        print(f"FAIL: {len(failed)} of {len(rows)} blobs differ; the first is {comment(first.blob)!r} ({why})")
        return 1
    print(f"ok: all {len(rows)} blobs within {args.tolerance:g}")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except TranslationError as exc:
        print(f"caffe2py: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"caffe2py: error: {exc.filename or ''}: {exc.strerror}", file=sys.stderr)
        return 2
