"""Emitters that reduce or index along axes: Reduction, ArgMax, and Embed (a table lookup by index)."""

from __future__ import annotations

from .. import layout
from ..ir import identity
from ..schema import ReductionParameter
from .common import caffe_axis
from .context import LayerContext
from .registry import layer

# Keyed by ReductionOp value; the helper names each operation in lower case.
REDUCTIONS = {value: name.lower() for name, value in ReductionParameter.ReductionOp.items()}


@layer("Reduction")
def reduction(ctx: LayerContext) -> None:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    p = ctx.p.reduction_param
    x = ctx.x
    axis = caffe_axis(p.axis, x.rank)
    if p.operation not in REDUCTIONS:
        raise ctx.error(f"unknown reduction operation {p.operation}")
    # Caffe reduces every axis from `axis` to the end, wherever Keras keeps them; the element order
    # does not matter to a sum, so a flattened tensor needs no reordering.
    axes = tuple(k for k, a in enumerate(x.layout) if a >= axis)
    kwargs = {"coeff": p.coeff} if p.coeff != 1 else {}
    helper = ctx.helper("Reduction")
    target, producer = ctx.call(helper, REDUCTIONS[p.operation], axes, inputs=x, **kwargs)
    ctx.output(0, target, producer, x.shape[:axis], tuple(a for a in x.layout if a < axis))


@layer("ArgMax")
def argmax(ctx: LayerContext) -> None:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    p = ctx.p.argmax_param
    x = ctx.x
    k = p.top_k
    if k < 1:
        raise ctx.error("top_k must be at least 1")
    helper = ctx.helper("ArgMax")
    kwargs = {"top_k": k} if k != 1 else {}
    if p.out_max_val:
        kwargs["out_max_val"] = True
    if p.HasField("axis"):
        axis = caffe_axis(p.axis, x.rank)
        if x.shape[axis] is not None and k > x.shape[axis]:
            raise ctx.error(f"top_k {k} exceeds the size {x.shape[axis]} of axis {axis}")
        if x.flat_of is not None:
            x = ctx.in_layout(x, x.layout)
        target, producer = ctx.call(helper, inputs=x, axis=x.keras_axis(axis), **kwargs)
        shape = list(x.shape)
        shape[axis] = k
        ctx.output(0, target, producer, tuple(shape), x.layout)
        return
    # Without an axis Caffe ranks each sample's elements in its own C,H,W order.
    x = ctx.in_layout(x, identity(x.rank))
    target, producer = ctx.call(helper, inputs=x, **kwargs)
    shape = (x.shape[0], 2 if p.out_max_val else 1, k, *[1] * (x.rank - 3))
    ctx.output(0, target, producer, shape, identity(len(shape)))


@layer("Embed")
def embed(ctx: LayerContext) -> None:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    p = ctx.p.embed_param
    x = ctx.x
    if p.num_output <= 0 or p.input_dim <= 0:
        raise ctx.error("num_output and input_dim must be positive")
    if x.flat_of is not None:
        x = ctx.in_layout(x, x.layout)
    ctx.expect_blobs((p.input_dim, p.num_output), *([(p.num_output,)] if p.bias_term else []))
    # Caffe truncates the float indices to integers, as Keras' Embedding casts them.
    callee = ctx.helper("Embed") if p.bias_term else "layers.Embedding"
    target, producer = ctx.call(callee, p.input_dim, p.num_output, inputs=x)
    ctx.weight(producer, "embeddings", lambda b: b[0])
    if p.bias_term:
        ctx.weight(producer, "bias", lambda b: layout.vector(b[1]))
    # The new last axis holds the embedding, in Keras as in Caffe.
    ctx.output(0, target, producer, (*x.shape, p.num_output), (*x.layout, x.rank))
