"""Region emitters of the detection forks: py-faster-rcnn's ROIPooling, R-FCN's PSROIPooling, each a helper layer."""

from __future__ import annotations

from ..ir import Tensor, channels_last
from .context import LayerContext
from .registry import layer


def _regions(ctx: LayerContext) -> tuple[Tensor, Tensor]:
    """The feature map (channels last) and the rois (R x 5, Caffe's order) of a region layer."""
    ctx.need_bottoms(2)
    ctx.need_tops(1)
    features, rois = ctx.inputs
    if features.rank != 4:
        raise ctx.error(f"{ctx.node.type} needs a 4-D feature map, got {features.rank}-D")
    rest = 1
    for d in rois.shape[1:]:
        rest = None if d is None or rest is None else rest * d
    if rest != 5:
        raise ctx.error(f"rois must hold 5 values per region (image, x1, y1, x2, y2), got shape {list(rois.shape)}")
    return ctx.in_layout(features, channels_last(4)), ctx.in_layout(rois, tuple(range(rois.rank)))


@layer("ROIPooling")
def roi_pooling(ctx: LayerContext) -> None:
    p = ctx.p.roi_pooling_param
    if p.pooled_h <= 0 or p.pooled_w <= 0:
        raise ctx.error("pooled_h and pooled_w must be positive")
    features, rois = _regions(ctx)
    kwargs = {"spatial_scale": p.spatial_scale} if p.spatial_scale != 1 else {}
    target, producer = ctx.call(ctx.helper("ROIPooling"), p.pooled_h, p.pooled_w, inputs=[features, rois], **kwargs)
    ctx.output(0, target, producer, (rois.shape[0], features.shape[1], p.pooled_h, p.pooled_w))


@layer("PSROIPooling")
def psroi_pooling(ctx: LayerContext) -> None:
    p = ctx.p.psroi_pooling_param
    if not all(p.HasField(f) for f in ("spatial_scale", "output_dim", "group_size")):
        raise ctx.error("psroi_pooling_param needs spatial_scale, output_dim and group_size")
    if p.output_dim <= 0 or p.group_size <= 0:
        raise ctx.error("output_dim and group_size must be positive")
    features, rois = _regions(ctx)
    channels = features.shape[1]
    if channels != p.output_dim * p.group_size**2:
        raise ctx.error(
            f"the {channels} input channels must be output_dim * group_size^2 = {p.output_dim * p.group_size**2}"
        )
    kwargs = {"spatial_scale": p.spatial_scale} if p.spatial_scale != 1 else {}
    target, producer = ctx.call(ctx.helper("PSROIPooling"), p.output_dim, p.group_size, inputs=[features, rois], **kwargs)
    ctx.output(0, target, producer, (rois.shape[0], p.output_dim, p.group_size, p.group_size))
