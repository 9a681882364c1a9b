"""InnerProduct emitter: Flatten + Dense, with weight rows permuted from Caffe's C,H,W order."""

from __future__ import annotations

import math

from translator import layout
from translator.ir import identity
from translator.layers import layer
from translator.layers.common import caffe_axis


@layer("InnerProduct")
def inner_product(ctx) -> None:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    p = ctx.p.inner_product_param
    x = ctx.x
    axis = caffe_axis(p.axis, x.rank)
    if p.num_output <= 0:
        raise ctx.error("num_output must be positive")
    if axis != 1:
        # Caffe keeps the axes before `axis` and flattens the rest: in Caffe's order, Dense on the last.
        x = ctx.in_layout(x, identity(x.rank))
    if x.flat_of is not None:
        dims, order = x.flat_of[0][1:], [a - 1 for a in x.flat_of[1][1:]]
    else:
        dims, order = x.shape[axis:], [a - axis for a in x.layout[axis:]]
    if any(d is None for d in dims):
        raise ctx.error("InnerProduct needs a fixed input size (use --fully-conv for free sizes)")
    inputs = math.prod(dims)
    outputs = p.num_output
    ctx.expect_blobs((inputs, outputs) if p.transpose else (outputs, inputs), *([(outputs,)] if p.bias_term else []))
    src = x
    if axis == 1 and x.rank > 2:
        src, _ = ctx.call("layers.Flatten", inputs=x, name=ctx.derived_name("flatten"))
    elif axis > 1 and axis < x.rank - 1:
        src, _ = ctx.call("layers.Reshape", (*x.shape[1:axis], inputs), inputs=x, name=ctx.derived_name("flatten"))
    kwargs = {} if p.bias_term else {"use_bias": False}
    target, producer = ctx.call("layers.Dense", outputs, inputs=src, **kwargs)
    transpose = p.transpose
    ctx.weight(producer, "kernel", lambda b: layout.dense_kernel(b[0].reshape(-1, inputs) if not transpose else b[0].reshape(inputs, -1), dims, order, transpose))
    if p.bias_term:
        ctx.weight(producer, "bias", lambda b: layout.vector(b[1]))
    ctx.output(0, target, producer, (*x.shape[:axis], outputs), identity(axis + 1))
