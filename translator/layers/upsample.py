"""Upsample emitter: SegNet's max-unpooling (values + pooling mask), or nearest-neighbour with one bottom."""

from __future__ import annotations

from ..ir import channels_last
from .common import compact
from .context import LayerContext
from .registry import layer


def _geometry(ctx: LayerContext):
    """(size, scale, pad_out) as caffe-segnet's UpsampleLayer::LayerSetUp reads upsample_param."""
    p = ctx.p.upsample_param
    has = p.HasField
    if has("upsample_h") and has("upsample_w"):
        if p.upsample_h <= 1 or p.upsample_w <= 1:
            raise ctx.error("upsample_h and upsample_w must be greater than 1")
        return (p.upsample_h, p.upsample_w), None, (0, 0)
    if has("scale_h") or has("scale_w"):
        if has("scale") or not (has("scale_h") and has("scale_w")):
            raise ctx.error("give upsample_h and upsample_w, or scale, or both scale_h and scale_w")
        scale = (p.scale_h, p.scale_w)
    else:
        scale = (p.scale, p.scale)
    if min(scale) <= 1:
        raise ctx.error(f"scale {scale} must be greater than 1")
    pad_out = (int(p.pad_out_h), int(p.pad_out_w))
    if any(pad and s != 2 for pad, s in zip(pad_out, scale)):
        raise ctx.error("pad_out_h/pad_out_w need a scale of 2 on that axis")
    return None, scale, pad_out


@layer("Upsample")
def upsample(ctx: LayerContext) -> None:
    ctx.need_bottoms(1, 2)
    ctx.need_tops(1)
    if any(t.rank != 4 for t in ctx.inputs):
        raise ctx.error("Upsample needs 4-D bottoms")
    size, scale, pad_out = _geometry(ctx)
    x = ctx.in_layout(ctx.x, channels_last(4))
    n, channels, height, width = x.shape
    if len(ctx.inputs) == 1:
        # The one-bottom Upsample of the YOLO ports: every pixel repeated scale times.
        if size is not None or pad_out != (0, 0):
            raise ctx.error("upsample_h/upsample_w and pad_out need the pooling mask as a second bottom")
        target, producer = ctx.call("layers.UpSampling2D", compact(scale), inputs=x)
    else:
        mask = ctx.in_layout(ctx.inputs[1], channels_last(4))
        if any(a is not None and b is not None and a != b for a, b in zip(x.shape[1:], mask.shape[1:])):
            raise ctx.error(f"values {list(x.shape)} and mask {list(mask.shape)} differ in shape")
        kwargs = {"size": size} if size is not None else {}
        if scale is not None and scale != (2, 2):
            kwargs["scale"] = compact(scale)
        if pad_out != (0, 0):
            kwargs["pad_out"] = compact(pad_out)
        target, producer = ctx.call(ctx.helper("MaxUnpooling2D"), inputs=[x, mask], **kwargs)
    if size is None:
        size = tuple(None if d is None else d * s - q for d, s, q in zip((height, width), scale, pad_out))
    ctx.output(0, target, producer, (n, channels, *size))
