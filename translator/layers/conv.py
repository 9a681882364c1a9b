"""Convolution emitters: plain, grouped (a channel split per group) and depthwise."""

from __future__ import annotations

from .. import layout
from ..errors import TranslationError
from ..ir import channels_last
from ..pysource import Code
from .common import compact, hw, slice_call
from .context import LayerContext
from .fold import fold_following
from .registry import layer


def conv_geometry(p, what: str = "kernel"):
    """Kernel, stride, pad and dilation of a ConvolutionParameter, each as (h, w)."""
    kernel = hw(p.kernel_size, p.kernel_h, p.kernel_w, p.HasField("kernel_h") or p.HasField("kernel_w"), what, None)
    stride = hw(p.stride, p.stride_h, p.stride_w, p.HasField("stride_h") or p.HasField("stride_w"), "stride", 1)
    pad = hw(p.pad, p.pad_h, p.pad_w, p.HasField("pad_h") or p.HasField("pad_w"), "pad", 0)
    dilation = hw(p.dilation, 1, 1, False, "dilation", 1)
    if any(p.HasField(f) for f in ("hole", "hole_h", "hole_w")):
        # DeepLab's hole spreads the filter taps hole apart, as dilation does (its im2col is Caffe's).
        if len(p.dilation):
            raise TranslationError("dilation and DeepLab's hole are both given; give one")
        has_hw = p.HasField("hole_h") or p.HasField("hole_w")
        dilation = (p.hole_h, p.hole_w) if has_hw else (p.hole, p.hole)
    return kernel, stride, pad, dilation


def check_sizes(ctx: LayerContext, filters: int, groups: int, channels: int, kernel, stride, dilation) -> None:
    """Caffe's checks of a (de)convolution's sizes: all positive, ``group`` dividing both channel counts."""
    if filters <= 0:
        raise ctx.error("num_output must be positive")
    if min(kernel) <= 0 or min(stride) <= 0 or min(dilation) <= 0:
        raise ctx.error(f"kernel {kernel}, stride {stride} and dilation {dilation} must be positive")
    if groups <= 0 or channels % groups or filters % groups:
        raise ctx.error(f"group {groups} must divide both the {channels} input channels and num_output {filters}")


def conv_out(size: int | None, k: int, s: int, p: int, d: int) -> int | None:
    """Caffe's convolution output size (floor)."""
    if size is None:
        return None
    return (size + 2 * p - (d * (k - 1) + 1)) // s + 1


DEPTHWISE = ("ConvolutionDepthwise", "DepthwiseConvolution")


# Ristretto's ConvolutionRistretto is a Convolution whose inputs, weights and outputs it rounds
# to fixed point (or minifloat, or powers of two: quantization_param) at TEST time. The
# translation computes the convolution in float32 and does not reproduce that rounding.
@layer("Convolution", "HoleConvolution", "ConvolutionRistretto", *DEPTHWISE)
def convolution(ctx: LayerContext) -> None:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    p = ctx.p.convolution_param
    x = ctx.in_layout(ctx.x, channels_last(4)) if ctx.x.rank == 4 else ctx.x
    if x.rank != 4:
        raise ctx.error(f"only 2-D convolution of 4-D blobs is supported, got a {x.rank}-D blob")
    if p.axis != 1:
        raise ctx.error("convolution_param.axis other than 1 is not supported")
    kernel, stride, pad, dilation = conv_geometry(p)
    n, channels, height, width = x.shape
    filters = p.num_output
    groups = channels if ctx.node.type in DEPTHWISE else p.group
    if ctx.node.type == "ConvolutionRistretto":
        ctx.comment(f"{ctx.node.name}: Ristretto's fixed-point rounding of inputs, weights and outputs is not reproduced")
    check_sizes(ctx, filters, groups, channels, kernel, stride, dilation)
    out_h = conv_out(height, kernel[0], stride[0], pad[0], dilation[0])
    out_w = conv_out(width, kernel[1], stride[1], pad[1], dilation[1])
    if (out_h is not None and out_h <= 0) or (out_w is not None and out_w <= 0):
        raise ctx.error(f"kernel {kernel} (dilation {dilation}) is larger than the padded input {height}x{width}")
    ctx.expect_blobs((filters, channels // groups, *kernel), *([(filters,)] if p.bias_term else []))
    folded = fold_following(ctx, filters)

    # Caffe pads symmetrically; Keras' "same" does so only at stride 1, where it pads d*(k-1)/2 on
    # each side whatever the input size. Any other padding is its own layer before a valid conv.
    src = x
    kwargs = {}
    if pad != (0, 0) and stride == (1, 1) and all(2 * p == d * (k - 1) for p, k, d in zip(pad, kernel, dilation)):
        kwargs["padding"] = "same"
    elif pad != (0, 0):
        src, _ = ctx.call("layers.ZeroPadding2D", compact(pad), inputs=x, name=ctx.derived_name("pad"))
    # Keras refuses stride > 1 together with dilation > 1: convolve densely, then subsample.
    subsample = stride if max(dilation) > 1 and max(stride) > 1 else None
    if stride != (1, 1) and subsample is None:
        kwargs["strides"] = compact(stride)
    if dilation != (1, 1):
        kwargs["dilation_rate"] = compact(dilation)
    # A folded BatchNorm or Scale leaves a bias even where Caffe's convolution had none.
    if not p.bias_term and not folded:
        kwargs["use_bias"] = False
    bias = (lambda b: layout.vector(b[1])) if p.bias_term or folded else None

    if groups == channels and groups > 1 and not ctx.options.native_groups:
        multiplier = filters // channels
        if multiplier != 1:
            kwargs = {"depth_multiplier": multiplier, **kwargs}
        target, producer = ctx.call("layers.DepthwiseConv2D", compact(kernel), inputs=src, comment=folded, **kwargs)
        ctx.weight(producer, "kernel", lambda b: layout.depthwise_kernel(b[0], channels))
        if bias:
            ctx.weight(producer, "bias", bias)
    elif groups == 1 or ctx.options.native_groups:
        if groups > 1:
            kwargs["groups"] = groups
        target, producer = ctx.call("layers.Conv2D", filters, compact(kernel), inputs=src, comment=folded, **kwargs)
        ctx.weight(producer, "kernel", lambda b: layout.conv_kernel(b[0]))
        if bias:
            ctx.weight(producer, "bias", bias)
    else:
        size = channels // groups
        names = [(ctx.derived_name(f"split{g}"), ctx.derived_name(f"g{g}")) for g in range(groups)]
        for g, (_, conv_name) in enumerate(names):
            ctx.weight(conv_name, "kernel", lambda b, g=g: layout.conv_kernel(layout.group_slice(b[0], g, groups)))
            if bias:
                ctx.weight(conv_name, "bias", lambda b, g=g: layout.group_slice(layout.vector(b[1]), g, groups))
        if names == [(f"{ctx.keras_name}_split{g}", f"{ctx.keras_name}_g{g}") for g in range(groups)]:
            helper = ctx.helper("grouped_conv")
            target, producer = ctx.call(helper, groups, filters, compact(kernel), inputs=src, inline=True, comment=folded, **kwargs)
        else:  # a name the helper would make is taken: the same layers, one statement each
            ctx.comment(f"{ctx.node.name}: group {groups} -> one Conv2D per channel group, then Concatenate" + (f"; {folded[2:]}" if folded else ""))
            parts = []
            for g, (split_name, conv_name) in enumerate(names):
                part = ctx.new_var(f"{ctx.top_var()}_g{g}")
                slice_call(ctx, src, -1, g * size, (g + 1) * size, target=part, name=split_name)
                ctx.call(
                    "layers.Conv2D", filters // groups, compact(kernel), inputs=part, target=part, name=conv_name,
                    **kwargs,
                )
                parts.append(part)
            target, producer = ctx.call("layers.Concatenate", inputs=parts)
    if subsample is not None:
        sh, sw = subsample
        target, producer = ctx.call(
            "layers.Lambda", Code(ctx.helper("subsample")), inputs=target, name=ctx.derived_name("stride"),
            arguments={"strides": (int(sh), int(sw))},
        )
    ctx.output(0, target, producer, (n, filters, out_h, out_w))
