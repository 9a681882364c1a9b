"""Inference folding (--inference): the BatchNorm and Scale after a convolution or InnerProduct become its weights."""

from __future__ import annotations

from .. import layout
from ..ir import Node
from .context import LayerContext


def _global_batch_norm(node: Node | None) -> bool:
    # use_global_stats: false normalizes with each batch's own statistics, even at test time.
    p = node.param.batch_norm_param if node is not None else None
    return node is not None and node.type == "BatchNorm" and not (p.HasField("use_global_stats") and not p.use_global_stats)


def _channel_scale(node: Node | None) -> bool:
    """A Scale with its own learned factor per channel (Caffe axis 1), not one read from a second bottom."""
    if node is None or node.type != "Scale" or len(node.bottoms) != 1:
        return False
    p = node.param.scale_param
    return p.axis == 1 and p.num_axes == 1


def fold_following(ctx: LayerContext, channels: int, weight_axis: int = 0) -> str | None:
    """Under --inference, absorb the BatchNorm and/or Scale that alone read this layer's output.

    ``channels`` is the layer's output channels (Caffe axis 1 of its top) and ``weight_axis`` the axis
    of its Caffe weight blob that runs over them. Only a top that one layer reads and that is no net
    output is folded: any other reader would see the values before the normalization. Returns the
    comment for the emitted layer, or None when nothing was folded (the emitter then runs as usual).
    """
    if not ctx.options.inference:
        return None
    batch_norm = ctx.sole_consumer(0)
    if not _global_batch_norm(batch_norm):
        batch_norm = None
    scale = ctx.sole_reader(batch_norm) if batch_norm is not None else ctx.sole_consumer(0)
    if not _channel_scale(scale):
        scale = None
    if batch_norm is None and scale is None:
        return None
    folded = [n for n in (batch_norm, scale) if n is not None]
    if batch_norm is not None:
        ctx.expect_blobs((channels,), (channels,), (1,), layer=batch_norm)
    bias = scale is not None and scale.param.scale_param.bias_term
    if scale is not None:
        ctx.expect_blobs((channels,), *([(channels,)] if bias else []), layer=scale)
    eps = batch_norm.param.batch_norm_param.eps if batch_norm is not None else 0.0

    def fold(own, others):
        stats = others[0] if batch_norm is not None else None
        factors = others[-1] if scale is not None else None
        return layout.fold_affine(own, weight_axis, stats, eps, factors)

    ctx.fold(folded, fold)
    return "+ " + ", ".join(f"{n.type} {n.name!r}" for n in folded) + " folded into kernel and bias"
