"""Small helpers shared by emitters: Caffe's spatial parameters and Keras argument spelling."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import TranslationError
from ..pysource import Code


def hw(values: Sequence[int], h: int, w: int, has_hw: bool, what: str, default: int | None) -> tuple[int, int]:
    """Resolve Caffe's repeated ``kernel_size``-style field and its ``_h``/``_w`` overrides."""
    if has_hw:
        if values:
            raise TranslationError(f"{what} given both as {what}_size-style value and {what}_h/{what}_w")
        return int(h), int(w)
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) == 2:
        return int(values[0]), int(values[1])
    if not values and default is not None:
        return default, default
    if not values:
        raise TranslationError(f"{what} is not set")
    raise TranslationError(f"{what} has {len(values)} values; 2-D layers take 1 or 2")


def compact(values: tuple[int, ...]) -> int | tuple[int, ...]:
    """Keras accepts one int for a square pair (or cube triple); write the short form."""
    return values[0] if len(set(values)) == 1 else values


def keras_axis(axis: int, rank: int) -> int:
    """Keras' default axis is -1: spell the last axis that way so it can be omitted."""
    return -1 if axis == rank - 1 else axis


def caffe_axis(axis: int, rank: int, what: str = "axis") -> int:
    """A Caffe axis field (negative counts from the end), checked against the blob's rank."""
    if not -rank <= axis < rank:
        raise TranslationError(f"{what} {axis} is out of range for a {rank}-D blob")
    return axis % rank


def slice_call(ctx, tensor, axis: int, start: int, stop: int | None, *, target: str, name: str) -> tuple[str, str]:
    """``target = tensor[start:stop]`` on Keras ``axis``: a Lambda of the module's registered ``slice_axis``.

    A registered module-level function with its bounds in ``arguments=`` (not a Python lambda) keeps
    a saved model loadable in Keras' safe mode; ``stop`` None runs to the end of the axis.
    """
    arguments = {"start": start, "stop": stop, **({} if axis == -1 else {"axis": axis})}
    function = Code(ctx.helper("slice_axis"))
    return ctx.call("layers.Lambda", function, inputs=tensor, target=target, name=name, arguments=arguments)
