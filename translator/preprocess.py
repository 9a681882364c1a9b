"""How the generated preprocess() prepares images: Caffe's TEST-time data transform, from the prototxt or a mean file."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf.message import DecodeError

from . import schema
from .errors import TranslationError
from .files import rename_into_place, write_atomically
from .ir import Translation
from .normalize import Graph
from .pysource import docstring_text, literal, string

if TYPE_CHECKING:  # only a mean file needs numpy, which a translation otherwise never loads
    import numpy as np

_FILE_NAME_BAD = re.compile(r"[^0-9A-Za-z_.-]")


def read_mean(path: str | Path) -> np.ndarray:
    """A mean .binaryproto (a BlobProto, e.g. from compute_image_mean) as a float32 (C, H, W) image."""
    import numpy as np

    shown = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TranslationError(f"cannot read the mean file: {exc.strerror}", path=shown) from None
    blob = schema.BlobProto()
    try:
        blob.ParseFromString(data)
    except DecodeError:
        raise TranslationError("not a BlobProto (a mean .binaryproto)", path=shown) from None
    shape = tuple(blob.shape.dim) if blob.HasField("shape") else (blob.num, blob.channels, blob.height, blob.width)
    values = np.asarray(blob.data if len(blob.data) else blob.double_data, dtype=np.float32)
    # Caffe's mean blob is one image: (1, C, H, W), or (C, H, W) in the newer shape form.
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 3 or min(shape) <= 0 or values.size != np.prod(shape):
        raise TranslationError(
            f"the mean blob has shape {list(shape)} and {values.size} values; Caffe needs one C x H x W image",
            path=shown,
        )
    return values.reshape(shape)


def _mean_file_name(source: str) -> str:
    # The .npy takes the binaryproto's name (never its folders: the text comes from the prototxt).
    stem = _FILE_NAME_BAD.sub("_", Path(source.replace("\\", "/")).stem).strip(".") or "mean"
    return f"{stem}.npy"


def _find(mean_file: str, prototxt: Path) -> Path | None:
    # Caffe opens mean_file relative to where it runs (usually Caffe's root); also try the prototxt's folder.
    for candidate in (Path(mean_file), prototxt.parent / mean_file):
        try:
            if candidate.is_file():
                return candidate
        except OSError:  # a name the file system cannot hold (too long, ...) is simply not there
            continue
    return None


def describe(graph: Graph, prototxt: str | Path, mean: str | Path | None = None) -> dict[str, Any] | None:
    """What preprocess() does for ``graph`` (Translation.preprocess), or None when nothing says.

    Caffe's DataTransformer at TEST: (image - mean) * scale over the centre crop, where the mean is
    per channel (mean_value) or an image (mean_file, or ``mean`` given by the user, which wins).
    """
    inputs = {key[0]: shape for key, shape in graph.inputs}
    transforms = [(blob, t) for blob, t in graph.transforms if blob in inputs]
    if not transforms and mean is None:
        return None
    where = {"path": graph.path}
    if transforms:
        blob, t = transforms[0]
    elif inputs:
        blob, t = next(iter(inputs)), schema.message_class("TransformationParameter")()
    else:
        raise TranslationError("a mean file was given, but the net has no input", **where)
    shape = inputs[blob]
    if len(shape) != 4:
        raise TranslationError(f"preprocessing needs a 4-D image input, {blob!r} is {len(shape)}-D", **where)
    channels = shape[1]
    if t.mean_file and t.mean_value:
        raise TranslationError(f"data layer of {blob!r}: mean_file and mean_value together (Caffe refuses both)", **where)
    mean_values = list(t.mean_value)
    if mean_values and len(mean_values) not in (1, channels):
        raise TranslationError(
            f"data layer of {blob!r}: {len(mean_values)} mean_value(s) for {channels} channels (1 or {channels})",
            **where,
        )
    crop = (t.crop_size, t.crop_size) if t.crop_size else (t.crop_h, t.crop_w) if t.crop_h and t.crop_w else None
    mean_image, source = None, None
    if mean is not None:
        mean_image, source, mean_values = read_mean(mean), Path(mean).name, []
    elif t.mean_file:
        source = t.mean_file
        found = _find(t.mean_file, Path(prototxt))
        mean_image = read_mean(found) if found else None
    if mean_image is not None:
        if mean_image.shape[0] != channels:
            raise TranslationError(
                f"the mean image has {mean_image.shape[0]} channels, input {blob!r} has {channels}", **where
            )
        net_size = tuple(shape[2:])
        if crop is None and mean_image.shape[1:] != net_size:
            # A deploy net fed by a larger mean (256x256 for a 227x227 input): crop like its train_val did.
            crop = net_size
        if crop is not None and (crop[0] > mean_image.shape[1] or crop[1] > mean_image.shape[2]):
            size = "x".join(map(str, mean_image.shape[1:]))
            raise TranslationError(f"the {size} mean image is smaller than the {crop[0]}x{crop[1]} input", **where)
    return {
        "input": blob,
        "channels": channels,
        "mean_values": [float(v) for v in (mean_values * channels if len(mean_values) == 1 else mean_values)] or None,
        "mean_source": source,
        "mean_file": _mean_file_name(source) if source else None,
        "mean_image": mean_image,
        "crop": crop,
        "scale": float(t.scale) if t.scale != 1 else None,
        "mirror": bool(t.mirror),
    }


def mean_npy(translation: Translation) -> bytes | None:
    """The .npy bytes of the mean image preprocess() loads (``MEAN_FILE``), or None when it needs none or it was not found."""
    info = translation.preprocess
    if not info or info["mean_image"] is None:
        return None
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, info["mean_image"].astype("<f4"), allow_pickle=False)
    return buffer.getvalue()


def mean_path(translation: Translation, module: str | Path) -> Path | None:
    """Where the module written to ``module`` expects its mean image: ``MEAN_FILE`` in the module's folder."""
    info = translation.preprocess
    if not info or info["mean_image"] is None:
        return None
    return Path(module).parent / info["mean_file"]


def write_mean(translation: Translation, directory: str | Path) -> Path | None:
    """Save the mean image preprocess() loads (``MEAN_FILE``) into ``directory``, whole or not at all.

    Returns the file written, or None when the module needs none or the mean was not found.
    """
    data = mean_npy(translation)
    if data is None:
        return None
    path = Path(directory) / translation.preprocess["mean_file"]
    rename_into_place([(write_atomically(path, data), path)])
    return path


def present(info: dict[str, Any] | None) -> dict[str, Any] | None:
    """The template fields of preprocess(), every printed value already Python source."""
    if info is None:
        return None
    channels, crop, mean_image = info["channels"], info["crop"], info["mean_image"]
    swap = channels == 3
    kind = "RGB images (BGR with bgr=True)" if swap else f"{channels}-channel images"
    images = f"images: a batch (N, H, W, {channels}) of {kind}, uint8 or float in 0..255"
    if mean_image is not None:
        images += f", {mean_image.shape[1]}x{mean_image.shape[2]} like Caffe's mean image"
    images += f"; one (H, W, {channels}) image is a batch of one."
    steps = []
    if swap:
        steps.append("the channels reversed to BGR (Caffe's images were OpenCV's BGR)")
    if info["mean_values"]:
        steps.append(f"the mean pixel {literal(info['mean_values'])} subtracted (in Caffe's channel order)")
    elif info["mean_file"]:
        steps.append(f"the mean image of {info['mean_source']} subtracted")
    if crop:
        steps.append(f"the centre {crop[0]}x{crop[1]} cut out")
    if info["scale"]:
        steps.append(f"multiplied by {literal(info['scale'])}")
    notes = ["As Caffe does: " + "; ".join(steps) + "." if steps else "Caffe's data layer only converts to float."]
    if info["mirror"]:
        notes.append("Caffe's mirror (a random flip) is training-time augmentation and is not applied.")
    if info["mean_file"] and mean_image is None:
        notes.append(
            "That file was not found when this module was generated: regenerate the module with "
            "caffe2py --mean PATH -o MODULE.py to write MEAN_FILE beside it."
        )
    if info["mean_file"]:
        notes.append("mean_file: the mean image's .npy; by default MEAN_FILE in this module's folder.")
    size = f"{crop[0]}, {crop[1]}" if crop else "H, W"
    returns = f"Returns float32 (N, {size}, {channels}), channels in Caffe's order, for the model of build_model()."
    lines: list[str] = []
    for paragraph in (images, " ".join(notes), returns):
        lines += [*textwrap.wrap(paragraph, 84), ""]
    return {
        "input": docstring_text(info["input"]),
        "swap": swap,
        "doc": [docstring_text(line) for line in lines[:-1]],
        "mean_values": literal(info["mean_values"]) if info["mean_values"] else None,
        "mean_file": string(info["mean_file"]) if info["mean_file"] else None,
        "crop_h": literal(crop[0]) if crop else None,
        "crop_w": literal(crop[1]) if crop else None,
        "scale": literal(info["scale"]) if info["scale"] else None,
    }
