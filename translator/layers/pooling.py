"""Pooling emitter: Caffe's ceil-mode output size, padding MAX never selects, AVE's divisor, MAX's mask top."""

from __future__ import annotations

from ..ir import channels_last
from ..schema import PoolingParameter
from .common import compact, hw
from .context import LayerContext
from .registry import layer

MAX, AVE, STOCHASTIC = PoolingParameter.MAX, PoolingParameter.AVE, PoolingParameter.STOCHASTIC


def pool_out(size: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    """Caffe's PoolingLayer::Reshape: ceil (or floor) division, then the last window must start inside."""
    span = size + 2 * p - k
    out = -(-span // s) + 1 if ceil_mode else span // s + 1
    if p and (out - 1) * s >= size + p:
        out -= 1
    return out


def native_padding(method: int, k: int, s: int, p: int, ceil_mode: bool) -> str | None:
    """The Keras padding mode that gives exactly Caffe's windows on this axis for every input size, or None.

    "valid" when no window can overhang the (explicitly zero-padded, AVE only) input: floor mode, or
    stride 1. "same" for MAX at stride 1 with pad (k - 1) / 2, where Keras pads as Caffe does, and for
    MAX in ceil mode at stride 2 with kernel 2 * pad + 2 (VGG's 2x2): Keras then pads the start by the
    pad and the end by Caffe's ceil-mode overhang, which is 0 or 1 with the input's parity, as Keras'
    odd pixel of padding goes at the end; MAX never selects padding in either.
    Anywhere else Caffe's ceil-mode overhang depends on the input's size and parity.
    """
    if (not ceil_mode or s == 1) and (p == 0 or method == AVE):
        return "valid"
    if method == MAX and s == 1 and 2 * p == k - 1:
        return "same"
    if method == MAX and ceil_mode and s == 2 and k == 2 * p + 2:
        return "same"
    return None


@layer("Pooling")
def pooling(ctx: LayerContext) -> None:
    ctx.need_bottoms(1)
    p = ctx.p.pooling_param
    ctx.need_tops(1, 2 if p.pool == MAX else 1)  # MAX may also output where each maximum was
    if ctx.x.rank != 4:
        raise ctx.error(f"pooling needs a 4-D blob, got {ctx.x.rank}-D")
    x = ctx.in_layout(ctx.x, channels_last(4))
    n, channels, height, width = x.shape
    if p.pool == STOCHASTIC:
        raise ctx.error("STOCHASTIC pooling is not supported")
    method = "Max" if p.pool == MAX else "Average"
    if p.global_pooling:
        if p.pad or p.pad_h or p.pad_w:
            raise ctx.error("global pooling takes no padding")
        target, producer = ctx.call(f"layers.Global{method}Pooling2D", inputs=x, keepdims=True)
        ctx.output(0, target, producer, (n, channels, 1, 1))
        if len(ctx.node.tops) == 2:
            if height is None or width is None:
                raise ctx.error("the mask top of global pooling needs a fixed input size")
            _mask(ctx, x, (height, width), (1, 1), (0, 0), True, (1, 1))
        return
    has = p.HasField
    kernel = hw([p.kernel_size] if has("kernel_size") else [], p.kernel_h, p.kernel_w, has("kernel_h") or has("kernel_w"), "kernel", None)
    stride = hw([p.stride] if has("stride") else [], p.stride_h, p.stride_w, has("stride_h") or has("stride_w"), "stride", 1)
    pad = hw([p.pad] if has("pad") else [], p.pad_h, p.pad_w, has("pad_h") or has("pad_w"), "pad", 0)
    if min(kernel) <= 0 or min(stride) <= 0:
        raise ctx.error(f"kernel {kernel} and stride {stride} must be positive")
    if pad[0] >= kernel[0] or pad[1] >= kernel[1]:
        raise ctx.error(f"pad {pad} must be smaller than the kernel {kernel}")
    # round_mode (BVLC) and ceil_mode (forks) both choose floor over Caffe's default ceil.
    ceil_mode = p.round_mode == PoolingParameter.CEIL and (not has("ceil_mode") or p.ceil_mode)
    out = tuple(
        None if size is None else pool_out(size, k, s, q, ceil_mode)
        for size, k, s, q in zip((height, width), kernel, stride, pad)
    )
    # A window larger than the padded input is Caffe's too: ceil mode still gives one output per
    # axis while the overhang is less than a stride, and that window is clipped to the input.
    if any(o is not None and o <= 0 for o in out):
        raise ctx.error(
            f"kernel {kernel} (stride {stride}, pad {pad}) does not fit the input {height}x{width}: "
            f"Caffe's pooled size would be {out[0]}x{out[1]}"
        )
    # Decided for every input size, not the translated one: build_model may be given any size.
    modes = {native_padding(p.pool, k, s, q, ceil_mode) for k, s, q in zip(kernel, stride, pad)}
    kwargs = {"strides": compact(stride)} if stride != kernel else {}
    if modes == {"valid"}:
        src = x
        if pad != (0, 0):  # AVE only: Caffe's divisor counts the zero padding
            src, _ = ctx.call("layers.ZeroPadding2D", compact(pad), inputs=x, name=ctx.derived_name("pad"))
        target, producer = ctx.call(f"layers.{method}Pooling2D", compact(kernel), inputs=src, **kwargs)
    elif modes == {"same"}:
        target, producer = ctx.call(f"layers.{method}Pooling2D", compact(kernel), inputs=x, **kwargs, padding="same")
    else:
        helper = ctx.helper("CaffePooling2D")
        extra = {"padding": compact(pad)} if pad != (0, 0) else {}
        if not ceil_mode:
            extra["ceil_mode"] = False
        target, producer = ctx.call(
            helper, "max" if p.pool == MAX else "avg", compact(kernel), inputs=x,
            **({"strides": compact(stride)} if stride != (1, 1) else {}), **extra,
        )
    ctx.output(0, target, producer, (n, channels, *out))
    if len(ctx.node.tops) == 2:
        _mask(ctx, x, kernel, stride, pad, ceil_mode, out)


def _mask(ctx: LayerContext, x, kernel, stride, pad, ceil_mode, out) -> None:
    """Top 1 of MAX pooling: each maximum's index h * W + w in its channel plane (SegNet's unpooling)."""
    kwargs = {"strides": compact(stride)} if stride != (1, 1) else {}
    if pad != (0, 0):
        kwargs["padding"] = compact(pad)
    if not ceil_mode:
        kwargs["ceil_mode"] = False
    target, producer = ctx.call(
        ctx.helper("MaxPoolingMask"), compact(kernel), inputs=x, target=ctx.top_var(1),
        name=ctx.derived_name("mask"), **kwargs,
    )
    ctx.output(1, target, producer, (x.shape[0], x.shape[1], *out))
