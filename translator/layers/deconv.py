"""Deconvolution emitter: Conv2DTranspose (per channel group when grouped), then Caffe's pad as a crop."""

from __future__ import annotations

from .. import layout
from ..ir import channels_last
from .common import compact, slice_call
from .context import LayerContext
from .conv import check_sizes, conv_geometry
from .registry import layer


def deconv_out(size: int | None, k: int, s: int, p: int, d: int) -> int | None:
    """Caffe's deconvolution output size: the full transposed convolution, less ``pad`` on each side."""
    if size is None:
        return None
    return s * (size - 1) + d * (k - 1) + 1 - 2 * p


@layer("Deconvolution")
def deconvolution(ctx: LayerContext) -> None:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    p = ctx.p.convolution_param
    if ctx.x.rank != 4:
        raise ctx.error(f"only 2-D deconvolution of 4-D blobs is supported, got a {ctx.x.rank}-D blob")
    if p.axis != 1:
        raise ctx.error("convolution_param.axis other than 1 is not supported")
    x = ctx.in_layout(ctx.x, channels_last(4))
    kernel, stride, pad, dilation = conv_geometry(p)
    n, channels, height, width = x.shape
    filters, groups = p.num_output, p.group
    check_sizes(ctx, filters, groups, channels, kernel, stride, dilation)
    out_h = deconv_out(height, kernel[0], stride[0], pad[0], dilation[0])
    out_w = deconv_out(width, kernel[1], stride[1], pad[1], dilation[1])
    if (out_h is not None and out_h <= 0) or (out_w is not None and out_w <= 0):
        raise ctx.error(f"pad {pad} crops away the whole {height}x{width} deconvolution output")
    # Caffe's deconvolution weights are those of the convolution it transposes: (inputs, outputs/group, kh, kw).
    ctx.expect_blobs((channels, filters // groups, *kernel), *([(filters,)] if p.bias_term else []))
    kwargs = {} if stride == (1, 1) else {"strides": compact(stride)}
    if not p.bias_term:
        kwargs["use_bias"] = False
    bias = (lambda b: layout.vector(b[1])) if p.bias_term else None

    if groups == channels and groups > 1:
        # Each channel upsampled by its own filters: one helper layer instead of a split per channel.
        if dilation != (1, 1):
            kwargs["dilation_rate"] = compact(dilation)
        if filters != channels:
            kwargs = {"depth_multiplier": filters // channels, **kwargs}
        helper = ctx.helper("DepthwiseConv2DTranspose")
        target, producer = ctx.call(helper, compact(kernel), inputs=x, **kwargs)
        ctx.weight(producer, "kernel", lambda b: layout.depthwise_deconv_kernel(b[0]))
        if bias:
            ctx.weight(producer, "bias", bias)
    else:
        size = kernel
        if max(dilation) > 1:
            # Keras refuses stride and dilation together, and TensorFlow's CPU kernel refuses any dilated
            # transposed convolution: the same filter, dilated with zero taps, is exact everywhere.
            size = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation))
            ctx.comment(f"{ctx.node.name}: kernel {list(kernel)} at dilation {list(dilation)} as {list(size)} with zero taps")
        if any((k - 1) * d + 1 < s for k, d, s in zip(kernel, dilation, stride)):
            # Keras' default then rounds the output up to size * stride; Caffe's ends at the last tap.
            kwargs["output_padding"] = 0

        def convert(weight):
            k = layout.deconv_kernel(weight)
            return layout.dilate_kernel(k, dilation) if size != kernel else k

        if groups == 1:
            target, producer = ctx.call("layers.Conv2DTranspose", filters, compact(size), inputs=x, **kwargs)
            ctx.weight(producer, "kernel", lambda b: convert(b[0]))
            if bias:
                ctx.weight(producer, "bias", bias)
        else:
            ctx.comment(f"{ctx.node.name}: group {groups} -> one Conv2DTranspose per channel group, then Concatenate")
            part_size = channels // groups
            parts = []
            for g in range(groups):
                part = ctx.new_var(f"{ctx.top_var()}_g{g}")
                start, stop = g * part_size, (g + 1) * part_size
                slice_call(ctx, x, -1, start, stop, target=part, name=ctx.derived_name(f"split{g}"))
                _, name = ctx.call(
                    "layers.Conv2DTranspose", filters // groups, compact(size), inputs=part, target=part,
                    name=ctx.derived_name(f"g{g}"), **kwargs,
                )
                ctx.weight(name, "kernel", lambda b, g=g: convert(layout.group_slice(b[0], g, groups)))
                if bias:
                    ctx.weight(name, "bias", lambda b, g=g: layout.group_slice(layout.vector(b[1]), g, groups))
                parts.append(part)
            target, producer = ctx.call("layers.Concatenate", inputs=parts)
    if pad != (0, 0):
        # Caffe's pad shrinks a deconvolution's output: crop it from every side.
        target, producer = ctx.call("layers.Cropping2D", compact(pad), inputs=target, name=ctx.derived_name("crop"))
    ctx.output(0, target, producer, (n, filters, out_h, out_w))
