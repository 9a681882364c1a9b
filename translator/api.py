"""The Python API: translate a prototxt into module text, and convert a caffemodel into the module's .npz."""

from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .files import discard, rename_into_place, write_atomically
from .options import NOT_PER_NET

if TYPE_CHECKING:
    from .ir import Translation

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class TranslatedNet:
    """One translated net: the module's text, its layer-by-layer plan, and its weights' conversion."""

    prototxt: Path
    """The prototxt it was translated from."""
    source: str = field(repr=False)
    """The generated Keras module, black-formatted (what ``caffe2py net.prototxt`` prints)."""
    plan: tuple[str, ...]
    """One line per Caffe layer: the Keras layers it became and its top shapes (what ``-v`` prints)."""
    translation: Translation = field(repr=False)
    """The translator's own record of the net (inputs, outputs, weights needed): not a stable interface."""

    def write(self, path: PathLike) -> Path:
        """Write the module to ``path`` (replacing it whole, or not at all); returns the path.

        A module whose preprocess() subtracts a mean image also gets that image beside it, as the
        ``.npy`` its ``MEAN_FILE`` names.
        """
        from .preprocess import mean_npy, mean_path

        target = Path(path)
        pending = [(write_atomically(target, self.source.encode("utf-8")), target)]
        mean = mean_npy(self.translation)
        if mean is not None:
            beside = mean_path(self.translation, target)
            try:
                pending.append((write_atomically(beside, mean), beside))
            except BaseException:
                discard(pending)
                raise
        rename_into_place(pending)
        return target

    def convert_weights(
        self, caffemodel: PathLike, npz: PathLike, *, warn: Callable[[str], object] | None = None
    ) -> list[str]:
        """Write ``caffemodel``'s blobs to ``npz`` in the module's Keras layout; returns the keys written.

        Raises TranslationError when the caffemodel lacks a layer the net needs or holds a blob of the
        wrong shape; ``npz`` is then left as it was. Warnings (NaN weights, ...) go to ``warn``, by
        default to ``warnings.warn``.
        """
        return _convert(self.translation, caffemodel, npz, warn or warnings.warn)


def translate(prototxt: PathLike, *, npz: PathLike | None = None, **options: Any) -> TranslatedNet:
    """Translate ``prototxt`` into a Keras module; ``.source`` of the result is the module's text.

    ``options`` are the command line's options with ``_`` for ``-``: ``input_shape`` (a mapping
    ``{"data": (1, 3, 224, 224)}`` or strings ``"data=1,3,224,224"``), ``phase`` ("TEST" or "TRAIN"),
    ``stage``, ``level``, ``fully_conv``, ``inference``, ``native_groups``, ``stub_unknown``, ``mean`` (a
    .binaryproto) and the others ``caffe2py --help`` lists. ``npz`` is the weights file the module's
    docstring names (default: the prototxt's name with ``.npz``). Raises TranslationError on bad
    input and TypeError or ValueError on an unknown option or a bad option value.
    """
    from .convert import translate_with_options
    from .render import render

    path = Path(prototxt)
    translation = translate_with_options(str(path), namespace(options))
    npz_name = Path(npz).name if npz is not None else path.with_suffix(".npz").name
    return TranslatedNet(path, render(translation, npz_name), tuple(translation.plan), translation)


def convert_weights(
    prototxt: PathLike, caffemodel: PathLike, npz: PathLike, **options: Any
) -> list[str]:
    """Translate ``prototxt`` with ``options`` (as for ``translate``) and write its weights to ``npz``."""
    from .convert import translate_with_options

    # The module's text is not needed, so it is not rendered (black is most of a translation).
    return _convert(translate_with_options(str(Path(prototxt)), namespace(options)), caffemodel, npz, warnings.warn)


def _convert(translation: Translation, caffemodel: PathLike, npz: PathLike, warn: Callable[[str], object]) -> list[str]:
    """Write the weights ``translation`` needs from ``caffemodel`` to ``npz``, replacing it whole or not at all."""
    from .weights import write_npz

    target = Path(npz)
    keys: list[str] = []

    def fill(tmp: Path) -> None:
        keys.extend(write_npz(translation, caffemodel, tmp, warn=warn))

    rename_into_place([(write_atomically(target, fill=fill), target)])
    return keys


def namespace(options: Mapping[str, Any]) -> argparse.Namespace:
    """The command line's option values with ``options`` (keyword names, Python values) in place of defaults."""
    from .cli import parser

    actions = {action.dest: action for action in parser()._actions if action.option_strings}
    values = argparse.Namespace(**{dest: action.default for dest, action in actions.items()})
    for name, value in options.items():
        action = actions.get(name)
        if action is None or name in NOT_PER_NET:
            known = ", ".join(sorted(d for d in actions if d not in NOT_PER_NET))
            raise TypeError(f"unknown translation option {name!r} (options: {known})")
        setattr(values, name, _value(action, value))
    return values


def _value(action: argparse.Action, value: Any) -> Any:
    """``value`` as argparse would store it for ``action``: strings through its type, lists for repeatables."""
    if isinstance(action, argparse._AppendAction):
        if isinstance(value, Mapping):  # input_shape={"data": (1, 3, 224, 224)}
            return [(key, tuple(item)) for key, item in value.items()]
        items = [value] if isinstance(value, str) else list(value)
        return [_typed(action, item) for item in items]
    if action.nargs == 0:  # a flag
        if not isinstance(value, bool):
            raise TypeError(f"option {action.dest!r} is a flag: pass True or False, not {value!r}")
        return value
    return _typed(action, value)


def _typed(action: argparse.Action, value: Any) -> Any:
    if isinstance(value, str) and action.type is not None:
        try:
            value = action.type(value)
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise ValueError(f"option {action.dest!r}: {exc}") from None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"option {action.dest!r} is {value!r}; choose one of {', '.join(map(str, action.choices))}")
    return value
