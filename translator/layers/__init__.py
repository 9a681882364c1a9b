"""The registry of per-layer emitters: one function per Caffe layer type, registered by decorator."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from translator.emit import LayerContext

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
    return sorted(k for k in REGISTRY if not k.startswith("__"))


# Importing the families fills the registry.
from translator.layers import activation, conv, dense, merge, norm, pooling, reshape  # noqa: E402, F401
