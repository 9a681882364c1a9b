"""Emitters that change a blob's shape: Flatten."""

from __future__ import annotations

import math

from translator.ir import identity
from translator.layers import layer
from translator.layers.common import caffe_axis


@layer("Flatten")
def flatten(ctx) -> None:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    p = ctx.p.flatten_param
    x = ctx.x
    start = caffe_axis(p.axis, x.rank)
    end = caffe_axis(p.end_axis, x.rank, "end_axis")
    if start == 0:
        raise ctx.error("flattening the batch axis is not supported")
    merged = x.shape[start : end + 1]
    size = None if any(d is None for d in merged) else math.prod(merged)
    shape = (*x.shape[:start], size, *x.shape[end + 1 :])
    is_output = ctx.node.tops[0] in ctx.graph_outputs
    if start == 1 and end == x.rank - 1 and x.flat_of is None and not is_output:
        # Keras flattens in its own axis order; remember it so a following InnerProduct permutes
        # its weights instead of the activations being transposed.
        target, producer = ctx.call("layers.Flatten", inputs=x)
        flat_of = None if x.in_caffe_order else (x.shape, x.layout)
        ctx.output(0, target, producer, shape, identity(2), flat_of)
        return
    x = ctx.in_layout(x, identity(x.rank))
    if len(shape) == 2:
        target, producer = ctx.call("layers.Flatten", inputs=x)
    else:
        target, producer = ctx.call("layers.Reshape", tuple(shape[1:]), inputs=x)
    ctx.output(0, target, producer, shape, identity(len(shape)))
