"""C3D's 3-D layers: Convolution3D and Pooling3D over N x C x L x H x W clips, as Keras NDHWC."""

from __future__ import annotations

from .. import layout
from ..ir import channels_last
from ..schema import Pooling3DParameter
from .common import compact
from .context import LayerContext
from .conv import conv_out
from .registry import layer

MAX, AVE = Pooling3DParameter.MAX, Pooling3DParameter.AVE


def _geometry(ctx: LayerContext, p) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(L, H, W) kernel and stride: C3D's windows are kernel_size square over H and W."""
    if not p.HasField("kernel_size") or not p.HasField("kernel_depth"):
        raise ctx.error("kernel_size and kernel_depth must both be set")
    kernel = (p.kernel_depth, p.kernel_size, p.kernel_size)
    stride = (p.temporal_stride, p.stride, p.stride)
    if min(kernel) <= 0 or min(stride) <= 0:
        raise ctx.error(f"kernel {kernel} and stride {stride} (L, H, W) must be positive")
    return kernel, stride


def _clip(ctx: LayerContext):
    """The bottom as a 5-D N x L x H x W x C tensor."""
    if ctx.x.rank != 5:
        raise ctx.error(f"{ctx.node.type} needs a 5-D N x C x L x H x W blob, got a {ctx.x.rank}-D one")
    return ctx.in_layout(ctx.x, channels_last(5))


@layer("Convolution3D")
def convolution3d(ctx: LayerContext) -> None:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    p = ctx.p.convolution3d_param
    x = _clip(ctx)
    kernel, stride = _geometry(ctx, p)
    pad = (p.temporal_pad, p.pad, p.pad)
    n, channels, *sizes = x.shape
    filters = p.num_output
    if filters <= 0:
        raise ctx.error("num_output must be positive")
    # filter_group only splits C3D's GEMM into parts (every part sees every channel): one
    # convolution computes the same. C3D reads group but never uses it.
    if filters % p.filter_group:
        raise ctx.error(f"filter_group {p.filter_group} must divide num_output {filters}")
    out = tuple(conv_out(size, k, s, q, 1) for size, k, s, q in zip(sizes, kernel, stride, pad))
    if any(o is not None and o <= 0 for o in out):
        raise ctx.error(f"kernel {kernel} (L, H, W) is larger than the padded input {'x'.join(map(str, sizes))}")
    ctx.expect_blobs((filters, channels, *kernel), *([(1, 1, 1, 1, filters)] if p.bias_term else []))
    src, kwargs = x, {}
    # Zero padding on both sides, as vol2col reads it; Keras' "same" is that only at stride 1.
    if pad != (0, 0, 0) and stride == (1, 1, 1) and all(2 * q == k - 1 for q, k in zip(pad, kernel)):
        kwargs["padding"] = "same"
    elif pad != (0, 0, 0):
        src, _ = ctx.call("layers.ZeroPadding3D", compact(pad), inputs=x, name=ctx.derived_name("pad"))
    if stride != (1, 1, 1):
        kwargs["strides"] = compact(stride)
    if not p.bias_term:
        kwargs["use_bias"] = False
    target, producer = ctx.call("layers.Conv3D", filters, compact(kernel), inputs=src, **kwargs)
    ctx.weight(producer, "kernel", lambda b: layout.conv3d_kernel(b[0]))
    if p.bias_term:
        ctx.weight(producer, "bias", lambda b: layout.vector(b[1]))
    ctx.output(0, target, producer, (n, filters, *out))


def pool3d_out(size: int, k: int, s: int, p: int) -> int:
    """Pooling3DLayer::LayerSetUp: ceil((size + 2p - k) / s) + 1, with no check where the last window starts."""
    return -(-(size + 2 * p - k) // s) + 1


@layer("Pooling3D")
def pooling3d(ctx: LayerContext) -> None:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    p = ctx.p.pooling3d_param
    x = _clip(ctx)
    kernel, stride = _geometry(ctx, p)
    if p.pool not in (MAX, AVE):
        raise ctx.error("STOCHASTIC pooling is not supported")
    if p.pad and p.pool != AVE:
        raise ctx.error("C3D pads only AVE pooling (its Pooling3D refuses pad with MAX)")
    if any(s > k for s, k in zip(stride, kernel)):
        # Some ceil-mode windows would then lie wholly past the input, which C3D fills with
        # -FLT_MAX (MAX) or divides by a size <= 0 (AVE).
        raise ctx.error(f"stride {stride} larger than the kernel {kernel} (L, H, W) is not supported")
    pad = (0, p.pad, p.pad)  # C3D never pads the length axis
    n, channels, *sizes = x.shape
    out = tuple(None if size is None else pool3d_out(size, k, s, q) for size, k, s, q in zip(sizes, kernel, stride, pad))
    if any(o is not None and o <= 0 for o in out):
        raise ctx.error(f"kernel {kernel} (L, H, W) does not fit the input {'x'.join(map(str, sizes))}")
    method = "max" if p.pool == MAX else "avg"
    kwargs = {"strides": compact(stride)} if stride != kernel else {}
    if stride == (1, 1, 1) and pad == (0, 0, 0):
        # No ceil-mode overhang and no padding: Keras' own valid windows are C3D's.
        keras_class = "MaxPooling3D" if method == "max" else "AveragePooling3D"
        target, producer = ctx.call(f"layers.{keras_class}", compact(kernel), inputs=x, **kwargs)
    else:
        extra = {"padding": p.pad} if p.pad else {}
        helper = ctx.helper("CaffePooling3D")
        target, producer = ctx.call(helper, method, compact(kernel), inputs=x, **kwargs, **extra)
    ctx.output(0, target, producer, (n, channels, *out))
