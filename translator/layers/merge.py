"""Emitters that join blobs: Concat along a Caffe axis, and Eltwise SUM/PROD/MAX."""

from __future__ import annotations

from ..schema import EltwiseParameter
from .common import caffe_axis, keras_axis
from .context import LayerContext
from .registry import layer

PROD, SUM, MAX = EltwiseParameter.PROD, EltwiseParameter.SUM, EltwiseParameter.MAX


def _aligned(ctx: LayerContext):
    """All bottoms in the first bottom's layout, so Keras axes agree across them."""
    first = ctx.inputs[0]
    ranks = {t.rank for t in ctx.inputs}
    if len(ranks) != 1:
        raise ctx.error(f"bottoms have different ranks {sorted(ranks)}")
    if first.flat_of is not None:
        first = ctx.in_layout(first, first.layout)
    return [first] + [ctx.in_layout(t, first.layout) for t in ctx.inputs[1:]]


@layer("Concat")
def concat(ctx: LayerContext) -> None:
    ctx.need_tops(1)
    if len(ctx.inputs) == 1:
        ctx.alias(0, ctx.x)
        return
    p = ctx.p.concat_param
    xs = _aligned(ctx)
    rank = xs[0].rank
    axis = caffe_axis(p.concat_dim if p.HasField("concat_dim") else p.axis, rank)
    shapes = [t.shape for t in xs]
    for j, s in enumerate(shapes[1:], 1):
        if any(a != b for i, (a, b) in enumerate(zip(s, shapes[0])) if i not in (0, axis)):
            raise ctx.error(
                f"bottoms differ outside the concat axis {axis}: {ctx.source_of(0)} is {list(shapes[0])}, "
                f"{ctx.source_of(j)} is {list(s)}"
            )
    k = keras_axis(xs[0].keras_axis(axis), rank)
    target, producer = ctx.call("layers.Concatenate", inputs=xs, **({"axis": k} if k != -1 else {}))
    total = None if any(s[axis] is None for s in shapes) else sum(s[axis] for s in shapes)
    shape = list(shapes[0])
    shape[axis] = total
    ctx.output(0, target, producer, tuple(shape), xs[0].layout)


@layer("Eltwise")
def eltwise(ctx: LayerContext) -> None:
    ctx.need_bottoms(2, 1000)
    ctx.need_tops(1)
    p = ctx.p.eltwise_param
    xs = _aligned(ctx)
    for j, t in enumerate(xs[1:], 1):
        if t.shape[1:] != xs[0].shape[1:]:
            raise ctx.error(
                f"bottoms have different shapes: {ctx.source_of(0)} is {list(xs[0].shape)}, "
                f"{ctx.source_of(j)} is {list(t.shape)}"
            )
    coeffs = list(p.coeff)
    if coeffs and p.operation != SUM:
        raise ctx.error("coeff is only allowed with operation SUM")
    if coeffs and len(coeffs) != len(xs):
        raise ctx.error(f"{len(coeffs)} coeff values for {len(xs)} bottoms")
    if p.operation == SUM and any(c != 1 for c in coeffs):
        helper = ctx.helper("WeightedSum")
        target, producer = ctx.call(helper, tuple(float(c) for c in coeffs), inputs=xs)
    else:
        callee = {SUM: "layers.Add", PROD: "layers.Multiply", MAX: "layers.Maximum"}[p.operation]
        target, producer = ctx.call(callee, inputs=xs)
    ctx.output(0, target, producer, xs[0].shape, xs[0].layout)
