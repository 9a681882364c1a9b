"""Element-wise arithmetic emitters: Power, Exp, Log, and Scale and Bias broadcast from an axis."""

from __future__ import annotations

import math

from .. import layout
from ..ir import Tensor
from .activation import same_shape
from .common import caffe_axis
from .context import LayerContext
from .registry import layer


@layer("Power")
def power(ctx: LayerContext) -> None:
    p = ctx.p.power_param
    if p.power == 1 and p.scale == 1 and p.shift == 0:
        same_shape(ctx, "layers.Identity")
    elif p.power == 1 and p.scale != 0:  # with scale 0 Caffe writes a constant, even over inf and NaN
        same_shape(ctx, "layers.Rescaling", p.scale, **({"offset": p.shift} if p.shift else {}))
    else:
        same_shape(ctx, ctx.helper("Power"), **_nondefault(power=(p.power, 1), scale=(p.scale, 1), shift=(p.shift, 0)))


@layer("Exp")
def exp(ctx: LayerContext) -> None:
    p = ctx.p.exp_param
    _check_base(ctx, p.base)
    if p.base == -1 and p.scale == 1 and p.shift == 0:
        same_shape(ctx, "layers.Activation", "exponential")
    else:
        same_shape(ctx, ctx.helper("Exp"), **_nondefault(base=(p.base, -1), scale=(p.scale, 1), shift=(p.shift, 0)))


@layer("Log")
def log(ctx: LayerContext) -> None:
    p = ctx.p.log_param
    _check_base(ctx, p.base)
    if p.base == 1:
        raise ctx.error("base 1 has no logarithm")
    same_shape(ctx, ctx.helper("Log"), **_nondefault(base=(p.base, -1), scale=(p.scale, 1), shift=(p.shift, 0)))


def _check_base(ctx: LayerContext, base: float) -> None:
    # Caffe's -1 stands for e; any other base must be a positive finite number.
    if base != -1 and not (base > 0 and math.isfinite(base)):
        raise ctx.error(f"base {base} must be positive (or -1 for e)")


def _nondefault(**values: tuple[float, float]) -> dict[str, float]:
    """The keyword arguments that differ from Caffe's defaults (the helpers' too; base -1, e, is None there)."""
    return {k: float(v) for k, (v, default) in values.items() if v != default}


@layer("Scale")
def scale(ctx: LayerContext) -> None:
    ctx.need_bottoms(1, 2)
    ctx.need_tops(1)
    p = ctx.p.scale_param
    if len(ctx.inputs) == 2:
        if p.bias_term:
            # Caffe's bias would span bottom 1's axes, the batch axis among them.
            raise ctx.error("bias_term with a second bottom (a learned bias along the batch axis) is not supported")
        x, factors = _broadcast_operand(ctx, p.axis)
        target, producer = ctx.call("layers.Multiply", inputs=[x, factors])
        ctx.output(0, target, producer, x.shape, x.layout)
        return
    x, covered = _learned_axes(ctx, p.axis, p.num_axes)
    names = ("gamma", "beta") if p.bias_term else ("gamma",)
    extra = {"use_bias": True} if p.bias_term else {}
    target, producer = _learned(ctx, x, covered, ctx.helper("Scale"), names, **extra)
    ctx.output(0, target, producer, x.shape, x.layout, x.flat_of)


@layer("Bias")
def bias(ctx: LayerContext) -> None:
    ctx.need_bottoms(1, 2)
    ctx.need_tops(1)
    p = ctx.p.bias_param
    if len(ctx.inputs) == 2:
        x, terms = _broadcast_operand(ctx, p.axis)
        target, producer = ctx.call("layers.Add", inputs=[x, terms])
        ctx.output(0, target, producer, x.shape, x.layout)
        return
    x, covered = _learned_axes(ctx, p.axis, p.num_axes)
    target, producer = _learned(ctx, x, covered, ctx.helper("Bias"), ("bias",))
    ctx.output(0, target, producer, x.shape, x.layout, x.flat_of)


def _learned_axes(ctx: LayerContext, axis: int, num_axes: int) -> tuple[Tensor, tuple[int, ...]]:
    """The input and the Caffe axes a learned Scale/Bias blob spans: ``num_axes`` from ``axis``."""
    x = ctx.x
    if num_axes < -1:
        raise ctx.error(f"num_axes {num_axes} must be -1 (to the last axis) or more")
    if num_axes == 0:  # one value for the whole blob; Caffe ignores axis then
        return x, ()
    start = caffe_axis(axis, x.rank)
    end = x.rank if num_axes == -1 else start + num_axes
    if end > x.rank:
        raise ctx.error(f"axis {start} and num_axes {num_axes} reach past the {x.rank}-D bottom")
    if start == 0:
        raise ctx.error("a learned blob along the batch axis is not supported")
    if x.flat_of is not None:  # the blob is indexed in Caffe's element order
        x = ctx.in_layout(x, x.layout)
    return x, tuple(range(start, end))


def _learned(ctx: LayerContext, x: Tensor, covered: tuple[int, ...], helper: str, variables: tuple[str, ...], **kwargs):
    """One helper layer holding, per variable, a blob over the Caffe axes ``covered`` of ``x``."""
    dims = tuple(x.shape[a] for a in covered)
    if any(d is None for d in dims):
        raise ctx.error(f"a learned blob over axes {list(covered)} needs their sizes fixed (not --fully-conv)")
    ctx.expect_blobs(*[dims] * len(variables))
    # The helper's weights hold the covered axes in the order the Keras tensor does.
    keras_axes = sorted(x.keras_axis(a) for a in covered)
    order = tuple(covered.index(x.layout[k]) for k in keras_axes)
    shape = tuple(dims[i] for i in order)
    if keras_axes == [x.rank - 1]:
        axis = {}  # the helpers' default, the last axis
    else:
        axis = {"axis": keras_axes[0] if len(keras_axes) == 1 else tuple(keras_axes)}
    target, producer = ctx.call(helper, inputs=x, **axis, **kwargs)
    for i, variable in enumerate(variables):
        ctx.weight(producer, variable, lambda b, i=i: layout.spread(b[i], order, shape))
    return target, producer


def _broadcast_operand(ctx: LayerContext, axis: int) -> tuple[Tensor, Tensor]:
    """Bottom 0, and bottom 1 shaped to broadcast over it as Caffe does.

    Caffe lines bottom 1's axes up with bottom 0's from ``axis`` on and repeats it over the rest.
    """
    x, other = ctx.inputs
    start = caffe_axis(axis, x.rank)
    if (
        other.rank == 0
        or start + other.rank > x.rank
        or any(a is not None and b is not None and a != b for a, b in zip(other.shape, x.shape[start:]))
    ):
        raise ctx.error(f"bottom 1 {list(other.shape)} does not match bottom 0 {list(x.shape)} from axis {start}")
    if start != 0:
        # Keras' first axis is always the batch, and here bottom 1's first axis is not.
        raise ctx.error(f"a second bottom applied from axis {start} (not the batch axis 0) is not supported")
    if x.flat_of is not None:
        x = ctx.in_layout(x, x.layout)
    # Bottom 1 holds x's leading axes: put them in x's Keras order, then insert ones for the rest.
    other = ctx.in_layout(other, tuple(a for a in x.layout if a < other.rank))
    if other.rank == x.rank:
        return x, other
    sizes = tuple(x.shape[a] if a < other.rank else 1 for a in x.layout[1:])
    if any(s is None for s in sizes):
        raise ctx.error("broadcasting a second bottom needs fixed sizes on the axes it spans")
    if other.rank > 2:  # the sizes of its spatial axes are the translated input's
        ctx.fixed_size(other)
    ctx.comment(f"{other.blob} shaped to broadcast over {x.blob} as Caffe does")
    var, name = ctx.call(
        "layers.Reshape", sizes, inputs=other, target=ctx.new_var(f"{other.var}_b"), name=ctx.derived_name("broadcast")
    )
    return x, Tensor(other.blob, other.shape, other.layout, var, name)
