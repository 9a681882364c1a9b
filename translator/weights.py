"""Write a caffemodel's blobs as an .npz in Keras layout, streamed from the memory-mapped file."""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .caffemodel import read_caffemodel
from .errors import TranslationError
from .ir import BlobExpectation, Translation
from .layout import FortranArray

_CHUNK = 1 << 22  # elements per streamed piece: bounded memory however large a blob is


def _fits(found: tuple[int, ...], legacy: bool, wanted: tuple[int, ...]) -> bool:
    if found == wanted:
        return True
    # Caffe's Blob::ShapeEquals: a legacy (num, channels, height, width) blob matches any shape that
    # pads to it with leading ones, e.g. an InnerProduct's (1, 1, O, K).
    return legacy and len(wanted) <= 4 and found == (1,) * (4 - len(wanted)) + wanted


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


def _write_array(archive: zipfile.ZipFile, key: str, value: np.ndarray | FortranArray) -> None:
    with archive.open(f"{key}.npy", "w", force_zip64=True) as out:
        if isinstance(value, FortranArray):
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": True, "shape": value.shape}
            np.lib.format.write_array_header_2_0(out, header)
            step = max(1, _CHUNK // max(1, math.prod(value.view.shape[1:])))
            for start in range(0, value.view.shape[0], step):
                out.write(np.ascontiguousarray(value.view[start : start + step], dtype="<f4").data)
        else:
            # What np.save writes, without its copy of every chunk into a bytes object: a contiguous
            # array (a bias, a transposed InnerProduct kernel) goes from the mapped file straight out.
            array = np.asarray(value, dtype="<f4")
            if not (array.flags.c_contiguous or array.flags.f_contiguous):
                array = np.ascontiguousarray(array)
            header = np.lib.format.header_data_from_array_1_0(array)
            np.lib.format.write_array_header_1_0(out, header)
            out.write((array.T if header["fortran_order"] else array).data)


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
    keys = []
    with zipfile.ZipFile(destination, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for spec in translation.weights:
            _write_array(archive, spec.key, spec.convert(checked[spec.layer], *(checked[f] for f in spec.folded)))
            keys.append(spec.key)
    return keys
