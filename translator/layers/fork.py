"""Emitters for layers of Caffe forks: SegNet's and PSPNet's BN, PSPNet/DeepLab's Interp, ShuffleNet's ShuffleChannel, SENet's Axpy."""

from __future__ import annotations

from .. import layout
from ..ir import Tensor, channels_last
from ..schema import BNParameter
from .common import keras_axis
from .context import LayerContext
from .registry import layer

INFERENCE = BNParameter.INFERENCE


def _channel_axis(ctx: LayerContext, x):
    """Keyword arguments naming the Keras axis of Caffe's channels, empty when it is the last."""
    axis = keras_axis(x.keras_axis(1), x.rank)
    return {} if axis == -1 else {"axis": axis}


_RUNNING_STATS_FIELDS = ("slope_filler", "bias_filler", "momentum", "frozen", "eps")


@layer("BN")
def bn(ctx: LayerContext) -> None:
    ctx.need_bottoms(1)
    p = ctx.p.bn_param
    x = ctx.x
    if x.rank < 2:
        raise ctx.error("BN needs a blob with a channel axis")
    if x.flat_of is not None:
        x = ctx.in_layout(x, x.layout)
    # Forks share the type: SegNet's (scale, shift), the TSN one (yjxiong's) with running
    # statistics, and PSPNet's (moving_average, decay), told apart by the latter two's own fields.
    if any(p.HasField(f) for f in _PSPNET_FIELDS):
        _pspnet_bn(ctx, p, x)
    elif any(p.HasField(f) for f in _RUNNING_STATS_FIELDS):
        _running_stats_bn(ctx, p, x)
    else:
        _segnet_bn(ctx, p, x)


def _running_stats_bn(ctx: LayerContext, p, x: Tensor, epsilon: float | None = None) -> None:
    """yjxiong's BN at TEST (or frozen): slope * (x - mean) / sqrt(var + eps) + bias, four (1, C, 1, 1) blobs."""
    ctx.need_tops(1)
    channels = x.shape[1]
    ctx.expect_blobs(*[(1, channels, 1, 1)] * 4)
    kwargs = _channel_axis(ctx, x)
    epsilon = p.eps if epsilon is None else epsilon
    if epsilon != 1e-3:  # Keras' default epsilon
        kwargs["epsilon"] = epsilon
    target, producer = ctx.call("layers.BatchNormalization", inputs=x, **kwargs)
    for i, name in enumerate(("gamma", "beta", "moving_mean", "moving_variance")):
        ctx.weight(producer, name, lambda b, i=i: layout.vector(b[i]))
    ctx.output(0, target, producer, x.shape, x.layout)


# PSPNet's bn_layer adds var_eps (its field 3, default 1e-10, not in the schema) to the variance.
_PSPNET_FIELDS = ("moving_average", "decay")
_PSPNET_VAR_EPS = 1e-10


def _pspnet_bn(ctx: LayerContext, p, x: Tensor) -> None:
    """PSPNet's BN: scale, shift, running mean and variance as four (1, C, 1, 1) blobs.

    At TEST with moving_average it normalizes with the stored mean and variance; otherwise (TRAIN,
    or moving_average false) with the batch's, as SegNet's LEARN mode does. decay only weighs the
    running averages it updates in TRAIN, so it does not change the forward pass.
    """
    if ctx.phase == "TEST" and p.moving_average:
        _running_stats_bn(ctx, p, x, epsilon=_PSPNET_VAR_EPS)
        return
    ctx.need_tops(1)
    channels = x.shape[1]
    ctx.expect_blobs(*[(1, channels, 1, 1)] * 4)
    # The batch's variance E((x - mean)^2) plus var_eps 1e-10; the helper adds 1e-9, which moves
    # sqrt(variance + eps) by less than float32 rounding unless the variance is below about 1e-2.
    ctx.comment(f"{ctx.node.name}: without moving_average, Caffe normalizes with the batch's own statistics")
    target, producer = ctx.call(ctx.helper("BatchStatNorm"), inputs=x, **_channel_axis(ctx, x))
    ctx.weight(producer, "gamma", lambda b: layout.vector(b[0]))
    ctx.weight(producer, "beta", lambda b: layout.vector(b[1]))
    ctx.output(0, target, producer, x.shape, x.layout)


def _segnet_bn(ctx: LayerContext, p, x: Tensor) -> None:
    """caffe-segnet's BN: scale and shift as (1, C, 1, 1) blobs and no statistics."""
    ctx.need_tops(1, 3)
    channels = x.shape[1]
    ctx.expect_blobs((1, channels, 1, 1), (1, channels, 1, 1))
    kwargs = _channel_axis(ctx, x)
    if p.bn_mode == INFERENCE:
        if len(ctx.node.tops) > 1:
            raise ctx.error("only LEARN mode writes the batch mean and variance tops")
        # Statistics already folded into scale and shift (SegNet's compute_bn_statistics.py).
        target, producer = ctx.call(ctx.helper("Scale"), inputs=x, use_bias=True, **kwargs)
    else:
        ctx.comment(f"{ctx.node.name}: LEARN mode, so Caffe normalizes with the batch's own statistics, even in tests")
        target, producer = ctx.call(ctx.helper("BatchStatNorm"), inputs=x, **kwargs)
    ctx.weight(producer, "gamma", lambda b: layout.vector(b[0]))
    ctx.weight(producer, "beta", lambda b: layout.vector(b[1]))
    ctx.output(0, target, producer, x.shape, x.layout)
    if len(ctx.node.tops) > 1:
        # Tops 1 and 2: the batch mean and variance E(x^2) - E(x)^2, each (1, C, 1, 1).
        shape = (1, channels) + (1,) * (x.rank - 2)
        for i in range(1, len(ctx.node.tops)):
            moment = ("mean", "variance")[i - 1]
            target, producer = ctx.call(
                ctx.helper("BatchMoments"), moment, inputs=x, target=ctx.top_var(i), name=ctx.derived_name(moment), **kwargs
            )
            ctx.output(i, target, producer, shape, x.layout)


def _interp_size(ctx: LayerContext, p, height: int | None, width: int | None):
    """Interp's arguments and output size, choosing among its fields in the order Caffe's Reshape does."""
    has = p.HasField
    if (has("shrink_factor") and p.shrink_factor < 1) or (has("zoom_factor") and p.zoom_factor < 1):
        raise ctx.error("shrink_factor and zoom_factor must be at least 1")
    if has("shrink_factor") and not has("zoom_factor"):
        kwargs = {"shrink_factor": p.shrink_factor}
    elif has("zoom_factor") and not has("shrink_factor"):
        kwargs = {"zoom_factor": p.zoom_factor}
    elif has("height") and has("width"):
        if p.height <= 0 or p.width <= 0:
            raise ctx.error(f"height {p.height} and width {p.width} must be positive")
        return {"size": (p.height, p.width)}, (p.height, p.width)
    elif has("shrink_factor") and has("zoom_factor"):
        kwargs = {"shrink_factor": p.shrink_factor, "zoom_factor": p.zoom_factor}
    else:
        raise ctx.error("Interp needs height and width, zoom_factor or shrink_factor")
    out = []
    for size in (height, width):
        if size is not None:
            size = size + p.pad_beg + p.pad_end
            size = (size - 1) // kwargs.get("shrink_factor", 1) + 1
            size = size + (size - 1) * (kwargs.get("zoom_factor", 1) - 1)
        out.append(size)
    return kwargs, tuple(out)


@layer("Interp")
def interp(ctx: LayerContext) -> None:
    ctx.need_bottoms(1, 2)
    ctx.need_tops(1)
    p = ctx.p.interp_param
    if any(t.rank != 4 for t in ctx.inputs):
        raise ctx.error(f"Interp needs 4-D blobs, got {[t.rank for t in ctx.inputs]}-D")
    if p.pad_beg > 0 or p.pad_end > 0:
        raise ctx.error("pad_beg and pad_end only crop (Caffe supports no positive padding)")
    x = ctx.in_layout(ctx.x, channels_last(4))
    n, channels, height, width = x.shape
    inputs = x
    if len(ctx.inputs) == 2:
        # The output takes the second bottom's height and width (PSPNet's fork); sizes in fields
        # would be ambiguous, and Caffe refuses them.
        if any(p.HasField(f) for f in ("height", "width", "zoom_factor", "shrink_factor")):
            raise ctx.error("with a second bottom, height, width, zoom_factor and shrink_factor must not be given")
        like = ctx.in_layout(ctx.inputs[1], channels_last(4))
        kwargs, out, inputs = {"size_from_second": True}, tuple(like.shape[2:]), [x, like]
    else:
        kwargs, out = _interp_size(ctx, p, height, width)
    for size, full in zip(out, (height, width)):
        if (size is not None and size <= 0) or (full is not None and full + p.pad_beg + p.pad_end <= 0):
            raise ctx.error(f"the {height}x{width} input gives an empty output")
    if p.pad_beg or p.pad_end:
        kwargs["crop"] = (-p.pad_beg, -p.pad_end)
    target, producer = ctx.call(ctx.helper("Interp"), inputs=inputs, **kwargs)
    ctx.output(0, target, producer, (n, channels, *out))


@layer("ShuffleChannel")
def shuffle_channel(ctx: LayerContext) -> None:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    x = ctx.x
    groups = ctx.p.shuffle_channel_param.group
    if x.rank < 2:
        raise ctx.error("ShuffleChannel needs a blob with a channel axis")
    if x.flat_of is not None:
        x = ctx.in_layout(x, x.layout)
    channels = x.shape[1]
    if groups <= 0 or channels % groups:
        raise ctx.error(f"group {groups} must divide the {channels} channels")
    if groups == 1:
        ctx.alias(0, x)
        return
    target, producer = ctx.call(ctx.helper("ChannelShuffle"), groups, inputs=x, **_channel_axis(ctx, x))
    ctx.output(0, target, producer, x.shape, x.layout)


@layer("Axpy")
def axpy(ctx: LayerContext) -> None:
    ctx.need_bottoms(3)
    ctx.need_tops(1)
    a, x, y = ctx.inputs
    # SENet's a * x + y: a holds one factor per (image, channel), broadcast over x's positions.
    if x.rank != 4 or a.shape[:2] != x.shape[:2] or a.rank not in (2, 4) or a.shape[2:] not in ((), (1, 1)):
        raise ctx.error(f"Axpy needs a of shape (N, C) or (N, C, 1, 1) and x (N, C, H, W), got {list(a.shape)}, {list(x.shape)}")
    if tuple(y.shape[1:]) != tuple(x.shape[1:]):
        raise ctx.error(f"x {list(x.shape)} and y {list(y.shape)} differ in shape")
    x = ctx.in_layout(x, channels_last(4))
    y = ctx.in_layout(y, channels_last(4))
    if a.rank == 2:
        a = ctx.in_layout(a, a.layout)
        factors, _ = ctx.call(
            "layers.Reshape", (1, 1, a.shape[1]), inputs=a, target=ctx.new_var(f"{a.var}_4d"), name=ctx.derived_name("a")
        )
    else:
        factors = ctx.in_layout(a, channels_last(4))
    scaled, _ = ctx.call(
        "layers.Multiply", inputs=[factors, x], target=ctx.new_var(f"{ctx.top_var()}_ax"), name=ctx.derived_name("ax")
    )
    target, producer = ctx.call("layers.Add", inputs=[scaled, y])
    ctx.output(0, target, producer, x.shape, x.layout)
