"""Region emitters of the detection forks: py-faster-rcnn's ROIPooling, each a helper layer."""

from __future__ import annotations

from ..ir import channels_last
from .context import LayerContext
from .registry import layer


@layer("ROIPooling")
def roi_pooling(ctx: LayerContext) -> None:
    ctx.need_bottoms(2)
    ctx.need_tops(1)
    p = ctx.p.roi_pooling_param
    features, rois = ctx.inputs
    if p.pooled_h <= 0 or p.pooled_w <= 0:
        raise ctx.error("pooled_h and pooled_w must be positive")
    if features.rank != 4:
        raise ctx.error(f"ROIPooling needs a 4-D feature map, got {features.rank}-D")
    rest = 1
    for d in rois.shape[1:]:
        rest = None if d is None or rest is None else rest * d
    if rest != 5:
        raise ctx.error(f"rois must hold 5 values per region (image, x1, y1, x2, y2), got shape {list(rois.shape)}")
    features = ctx.in_layout(features, channels_last(4))
    rois = ctx.in_layout(rois, tuple(range(rois.rank)))
    kwargs = {"spatial_scale": p.spatial_scale} if p.spatial_scale != 1 else {}
    target, producer = ctx.call(ctx.helper("ROIPooling"), p.pooled_h, p.pooled_w, inputs=[features, rois], **kwargs)
    ctx.output(0, target, producer, (rois.shape[0], features.shape[1], p.pooled_h, p.pooled_w))
