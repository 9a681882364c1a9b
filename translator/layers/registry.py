"""The registry of per-layer emitters: one function per Caffe layer type, registered by decorator."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .context import LayerContext

Emitter = Callable[["LayerContext"], None]
REGISTRY: dict[str, Emitter] = {}


def layer(*types: str) -> Callable[[Emitter], Emitter]:
    """Register the decorated function as the emitter of the given Caffe types; refuse duplicates."""

    def register(fn: Emitter) -> Emitter:
        for kind in types:
            if kind in REGISTRY:
                raise RuntimeError(f"Caffe type {kind!r} registered twice")
            REGISTRY[kind] = fn
        return fn

    return register


def supported_types() -> list[str]:
    """Every Caffe type with an emitter, sorted."""
    return sorted(REGISTRY)


def markdown_table() -> str:
    """The README's table of supported types, grouped by emitter family."""
    families: dict[str, list[str]] = {}
    for kind in supported_types():
        module = sys.modules[REGISTRY[kind].__module__]
        families.setdefault((module.__doc__ or "").strip().splitlines()[0], []).append(f"`{kind}`")
    rows = ["| family | Caffe layer types |", "|---|---|"]
    rows += [f"| {family} | {', '.join(kinds)} |" for family, kinds in sorted(families.items())]
    return "\n".join(rows)
