"""Write a caffemodel's blobs as an .npz in Keras layout, streamed from the memory-mapped file."""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .caffemodel import read_caffemodel
from .errors import TranslationError
from .ir import BlobExpectation, Translation
from .layout import FortranArray
from .npzwriter import Member, write_npz_members

_CHUNK = 1 << 20  # elements per NaN check: bounded memory however large a blob is


def _fits(found: tuple[int, ...], legacy: bool, wanted: tuple[int, ...]) -> bool:
    if found == wanted:
        return True
    # Caffe's Blob::ShapeEquals: a legacy (num, channels, height, width) blob matches any shape that
    # pads to it with leading ones, e.g. an InnerProduct's (1, 1, O, K); so does C3D's 5-D one.
    return legacy and len(wanted) <= len(found) and found == (1,) * (len(found) - len(wanted)) + wanted


def _checked_blobs(expect: BlobExpectation, layers: dict, path: str) -> list[np.ndarray]:
    where = {"path": path, "layer": expect.layer, "layer_type": expect.layer_type}
    entry = layers.get(expect.source or expect.layer)
    if entry is None:
        if expect.source:
            raise TranslationError(
                f"the caffemodel has no layer {expect.source!r} (--rename {expect.source}={expect.layer})", **where
            )
        raise TranslationError("the caffemodel has no weights for this layer (is it for another net?)", **where)
    if len(entry.blobs) != len(expect.shapes):
        raise TranslationError(
            f"the caffemodel has {len(entry.blobs)} blob(s), the net needs {len(expect.shapes)}", **where
        )
    blobs = []
    for i, (blob, legacy, wanted) in enumerate(zip(entry.blobs, entry.legacy_shapes, expect.shapes)):
        found = tuple(int(d) for d in blob.shape)
        # Caffe's net surgery copies a renamed layer's blobs element by element (an InnerProduct's
        # (O, C*H*W) matrix into a convolution's (O, C, H, W) kernel): same count, C order.
        surgery = expect.source is not None and math.prod(found) == math.prod(wanted)
        if not (_fits(found, legacy, wanted) or surgery):
            source = f" (layer {expect.source!r})" if expect.source else ""
            raise TranslationError(
                f"blob {i} has shape {list(found)} in the caffemodel{source}, the net needs {list(wanted)}", **where
            )
        blobs.append(blob.reshape(wanted))
    return blobs


def _has_nonfinite(blob: np.ndarray) -> bool:
    flat = blob.reshape(-1)
    return any(not np.isfinite(flat[i : i + _CHUNK]).all() for i in range(0, flat.size, _CHUNK))


def _member(key: str, value: np.ndarray | FortranArray) -> Member:
    """What ``np.save`` writes for ``value`` (a transposed InnerProduct kernel stays Fortran-ordered).

    The writer copies the array's bytes piece by piece, so no whole converted copy is ever held, and a
    contiguous array (a bias, a transposed InnerProduct kernel) goes from the mapped file straight out.
    """
    if isinstance(value, FortranArray):
        fortran, shape, data = True, value.shape, value.view
    else:
        array = np.asarray(value)
        fortran = array.flags.f_contiguous and not array.flags.c_contiguous
        shape, data = array.shape, array.T if fortran else array
    header = io.BytesIO()
    fields = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": fortran, "shape": shape}
    np.lib.format.write_array_header_1_0(header, fields)
    return f"{key}.npy", header.getvalue(), np.asarray(data, dtype="<f4")


def write_npz(
    translation: Translation,
    caffemodel: str | Path,
    destination: str | Path,
    *,
    display: str | None = None,
    warn: Callable[[str], None] = lambda message: None,
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Convert the blobs every emitted layer needs into ``destination``; returns the keys written."""
    shown = display or str(caffemodel)
    layers = read_caffemodel(caffemodel, progress=progress)
    checked: dict[str, Sequence[np.ndarray]] = {}
    for expect in translation.expectations:
        blobs = _checked_blobs(expect, layers, shown)
        if any(_has_nonfinite(b) for b in blobs):
            warn(f"{shown}: layer {expect.layer!r}: weights contain NaN or infinity")
        checked[expect.layer] = blobs
    # A generator: each conversion (transpose, fold) runs only when the writer reaches its member.
    members = (
        _member(spec.key, spec.convert(checked[spec.layer], *(checked[f] for f in spec.folded)))
        for spec in translation.weights
    )
    write_npz_members(destination, members)
    return [spec.key for spec in translation.weights]
