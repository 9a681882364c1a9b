"""InnerProduct emitter: Flatten + Dense with weight rows permuted from Caffe's C,H,W order, or a convolution."""

from __future__ import annotations

import math

from .. import layout
from ..ir import channels_last, identity
from .common import caffe_axis, compact
from .context import LayerContext
from .fold import fold_following
from .registry import layer


@layer("InnerProduct")
def inner_product(ctx: LayerContext) -> None:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    p = ctx.p.inner_product_param
    x = ctx.x
    axis = caffe_axis(p.axis, x.rank)
    if p.num_output <= 0:
        raise ctx.error("num_output must be positive")
    if ctx.options.fully_conv and axis == 1 and x.rank == 4:
        _as_convolution(ctx, x, p)
        return
    if x.flat_of is not None and any(d is None for d in x.flat_of[0]):
        raise ctx.error(
            "--fully-conv cannot slide an InnerProduct that reads a Flatten of free spatial sizes: "
            "remove the Flatten layer (InnerProduct flattens by itself)"
        )
    if axis != 1 and x.layout[axis:] != tuple(range(axis, x.rank)):
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
    # The weights fix the length Dense reads: Caffe runs this layer only where the input keeps its size.
    ctx.fixed_size(x)
    ctx.size_free()
    # A BatchNorm normalizes Caffe axis 1: the outputs only when Caffe's axis is 1.
    folded = fold_following(ctx, outputs, 1 if p.transpose else 0) if axis == 1 else None
    src = x
    if axis == 1 and x.rank > 2:
        src, _ = ctx.call("layers.Flatten", inputs=x, name=ctx.derived_name("flatten"))
    elif axis > 1 and axis < x.rank - 1:
        src, _ = ctx.call("layers.Reshape", (*x.keras_shape[1:axis], inputs), inputs=x, name=ctx.derived_name("flatten"))
    kwargs = {} if p.bias_term or folded else {"use_bias": False}
    target, producer = ctx.call("layers.Dense", outputs, inputs=src, comment=folded, **kwargs)
    transpose = p.transpose
    ctx.weight(producer, "kernel", lambda b: layout.dense_kernel(b[0].reshape(-1, inputs) if not transpose else b[0].reshape(inputs, -1), dims, order, transpose))
    if p.bias_term or folded:
        ctx.weight(producer, "bias", lambda b: layout.vector(b[1]))
    # The kept axes stay where Keras holds them (a recurrent output has its streams first).
    kept = x.layout[:axis] if axis > 1 else (0,)
    ctx.output(0, target, producer, (*x.shape[:axis], outputs), (*kept, axis))


def _as_convolution(ctx: LayerContext, x, p) -> None:
    """Caffe's net surgery: the InnerProduct slides over the input as a convolution.

    The first one's kernel covers the spatial size its input has at the prototxt's own input size;
    one reading an earlier convolved InnerProduct (whose fixed-size input was 2-D) is 1x1.
    """
    fixed = ctx.node.fixed_bottoms[0]
    fixed_shape = fixed.flat_of[0] if fixed.flat_of is not None else fixed.shape
    kernel = tuple(fixed_shape[2:]) if len(fixed_shape) == 4 else (1, 1)
    n, channels, height, width = x.shape
    if fixed_shape[1] != channels:
        raise ctx.error(f"--fully-conv: the input has {channels} channels here, {fixed_shape[1]} at the fixed size")
    out_h = None if height is None else height - kernel[0] + 1
    out_w = None if width is None else width - kernel[1] + 1
    if (out_h is not None and out_h <= 0) or (out_w is not None and out_w <= 0):
        raise ctx.error(f"--fully-conv: the {height}x{width} input is smaller than the {kernel[0]}x{kernel[1]} kernel")
    outputs = p.num_output
    inputs = channels * kernel[0] * kernel[1]
    ctx.expect_blobs((inputs, outputs) if p.transpose else (outputs, inputs), *([(outputs,)] if p.bias_term else []))
    folded = fold_following(ctx, outputs, 1 if p.transpose else 0)
    x = ctx.in_layout(x, channels_last(4))
    kwargs = {} if p.bias_term or folded else {"use_bias": False}
    ctx.comment(f"{ctx.node.name}: InnerProduct over a {kernel[0]}x{kernel[1]} input, slid as a convolution (--fully-conv)")
    target, producer = ctx.call("layers.Conv2D", outputs, compact(kernel), inputs=x, comment=folded, **kwargs)
    transpose = p.transpose
    ctx.weight(producer, "kernel", lambda b: layout.inner_product_conv_kernel(b[0], channels, kernel, transpose))
    if p.bias_term or folded:
        ctx.weight(producer, "bias", lambda b: layout.vector(b[1]))
    ctx.output(0, target, producer, (n, outputs, out_h, out_w))
