"""Im2col emitter: every kernel window of the padded input as a column, in Caffe's channel order."""

from __future__ import annotations

from ..ir import channels_last
from .context import LayerContext
from .conv import conv_geometry, conv_out
from .registry import layer


@layer("Im2col")
def im2col(ctx: LayerContext) -> None:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    p = ctx.p.convolution_param
    if ctx.x.rank != 4:
        raise ctx.error(f"only 2-D Im2col of 4-D blobs is supported, got a {ctx.x.rank}-D blob")
    x = ctx.in_layout(ctx.x, channels_last(4))
    kernel, stride, pad, dilation = conv_geometry(p)
    if min(kernel) <= 0 or min(stride) <= 0 or min(dilation) <= 0:
        raise ctx.error(f"kernel {kernel}, stride {stride} and dilation {dilation} must be positive")
    n, channels, height, width = x.shape
    out = [conv_out(s, *args) for s, args in zip((height, width), zip(kernel, stride, pad, dilation))]
    if any(o is not None and o <= 0 for o in out):
        raise ctx.error(f"the {height}x{width} input is smaller than the {kernel[0]}x{kernel[1]} window")
    kwargs = {
        k: v
        for k, v, default in (("strides", stride, (1, 1)), ("padding", pad, (0, 0)), ("dilation", dilation, (1, 1)))
        if v != default
    }
    target, producer = ctx.call(ctx.helper("Im2col"), kernel, inputs=x, **kwargs)
    ctx.output(0, target, producer, (n, channels * kernel[0] * kernel[1], *out))
