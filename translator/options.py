"""The translation options every front end shares (command line, Python API, pyproject.toml)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from .ir import Shape

# Command-line options that say where outputs go or what to print, not how to translate a net: the
# Python API and pyproject.toml's per-file tables refuse them.
NOT_PER_NET = frozenset(
    {"output", "write", "check", "out_dir", "weights", "npz", "list_layers", "verbose", "help", "version"}
)


@dataclass(frozen=True)
class Options:
    """Choices that change the generated code."""

    fully_conv: bool = False
    native_groups: bool = False
    stub_unknown: bool = False
    inference: bool = False  # fold BatchNorm/Scale into the layer before them, drop Dropout
    ignore_unknown_fields: bool = False
    # The module (a file beside the generated one) whose classes replace the stubs: --custom-layers.
    custom_layers: str | None = None
    # (old, new): layer new takes layer old's blobs from the caffemodel (--rename, Caffe's net surgery).
    rename: tuple[tuple[str, str], ...] = ()
    flat: bool = False  # one statement per layer: no functions for repeated units

    @property
    def stubs(self) -> bool:
        return self.stub_unknown or self.custom_layers is not None


def parse_shape(text: str) -> tuple[str, Shape]:
    """``data=1,3,224,224`` -> ``("data", (1, 3, 224, 224))``; ValueError when it is not NAME=N,... with N > 0."""
    name, sep, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        shape = ()
    if not sep or not name or not shape or min(shape) <= 0:
        raise ValueError(f"{text!r} is not NAME=N,C,H,W with positive integers")
    return name, shape


def shape_argument(text: str) -> tuple[str, Shape]:
    """``parse_shape`` as an argparse ``type=``, so that a bad value gets argparse's usage error."""
    try:
        return parse_shape(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
