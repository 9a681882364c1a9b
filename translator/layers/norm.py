"""Normalization emitters: LRN (both regions), BatchNorm fused with its Scale, and MVN."""

from __future__ import annotations

from .. import layout
from ..ir import channels_last
from ..pysource import float_literal
from ..schema import LRNParameter
from .common import keras_axis
from .context import LayerContext
from .registry import layer

WITHIN_CHANNEL = LRNParameter.WITHIN_CHANNEL
KERAS_EPSILON = 0.001  # BatchNormalization's default
CAFFE_FRACTION = 0.999  # moving_average_fraction's default, CaffeBatchStatsNorm's too


@layer("LRN")
def lrn(ctx: LayerContext) -> None:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    p = ctx.p.lrn_param
    if ctx.x.rank != 4:
        raise ctx.error(f"LRN needs a 4-D blob, got {ctx.x.rank}-D")
    if p.local_size % 2 == 0:
        raise ctx.error(f"local_size {p.local_size} must be odd (Caffe centres the window)")
    x = ctx.in_layout(ctx.x, channels_last(4))
    kwargs = {"local_size": p.local_size, "alpha": p.alpha, "beta": p.beta}
    if p.norm_region == WITHIN_CHANNEL:
        kwargs["within_channel"] = True  # Caffe's shift is 1 here; `k` does not apply
    elif p.k != 1:
        kwargs["k"] = p.k
    target, producer = ctx.call(ctx.helper("LRN"), inputs=x, **kwargs)
    ctx.output(0, target, producer, x.shape, x.layout)


def _fusable_scale(ctx: LayerContext):
    """The Scale layer that only rescales this BatchNorm's output per channel, if any."""
    consumer = ctx.sole_consumer(0)
    if consumer is None or consumer.type != "Scale" or len(consumer.bottoms) != 1:
        return None
    sp = consumer.param.scale_param
    if sp.axis != 1 or sp.num_axes != 1:
        return None
    return consumer


@layer("BatchNorm")
def batch_norm(ctx: LayerContext) -> None:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    p = ctx.p.batch_norm_param
    x = ctx.x
    if x.rank < 2:
        raise ctx.error("BatchNorm needs a blob with a channel axis")
    if x.flat_of is not None:
        x = ctx.in_layout(x, x.layout)
    channels = x.shape[1]
    ctx.expect_blobs((channels,), (channels,), (1,))
    scale = _fusable_scale(ctx)
    axis = keras_axis(x.keras_axis(1), x.rank)
    kwargs = {"axis": axis} if axis != -1 else {}
    if float_literal(p.eps) != float_literal(KERAS_EPSILON):
        kwargs["epsilon"] = p.eps
    # Caffe's default: the stored statistics in the TEST phase, the batch's in TRAIN.
    global_stats = p.use_global_stats if p.HasField("use_global_stats") else ctx.phase == "TEST"
    if not global_stats and float_literal(p.moving_average_fraction) != float_literal(CAFFE_FRACTION):
        kwargs["moving_average_fraction"] = p.moving_average_fraction
    bias = scale is not None and scale.param.scale_param.bias_term
    if scale is None:
        kwargs.update(center=False, scale=False)
    elif not bias:
        kwargs["center"] = False
    # A fused Scale is said once, in the docstring of the BatchNorm class (gamma and beta).
    # Only batch statistics need Caffe's moving averages; the stored ones never move, in training too.
    helper = ctx.helper("CaffeBatchNorm" if global_stats else "CaffeBatchStatsNorm")
    target, producer = ctx.call(helper, inputs=x, **kwargs)
    if scale is not None:
        ctx.expect_blobs((channels,), *([(channels,)] if bias else []), layer=scale)
        ctx.weight(producer, "gamma", lambda b: layout.vector(b[0]), source=scale)
        if bias:
            ctx.weight(producer, "beta", lambda b: layout.vector(b[1]), source=scale)
        ctx.absorb(scale)
    ctx.weight(producer, "moving_mean", lambda b: layout.batchnorm_stats(b, 0))
    ctx.weight(producer, "moving_variance", lambda b: layout.batchnorm_stats(b, 1))
    if not global_stats:
        ctx.weight(producer, "scale_factor", lambda b: layout.scalar(b[2]))
    ctx.output(0, target, producer, x.shape, x.layout)


@layer("MVN")
def mvn(ctx: LayerContext) -> None:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    p = ctx.p.mvn_param
    x = ctx.x
    if not 2 <= x.rank <= 4:
        raise ctx.error(f"MVN takes a 2-D to 4-D blob (Caffe's num/channels view), got {x.rank}-D")
    # Each sample (and channel, unless across_channels) is normalized over the remaining axes;
    # a mean over whole axes does not depend on the order Keras holds their elements in.
    first = 1 if p.across_channels else 2
    axes = tuple(k for k in range(1, x.rank) if x.layout[k] >= first)
    kwargs = {} if p.normalize_variance else {"normalize_variance": False}
    if p.normalize_variance and p.HasField("eps"):
        kwargs["eps"] = p.eps
    target, producer = ctx.call(ctx.helper("MVN"), inputs=x, axis=axes, **kwargs)
    ctx.output(0, target, producer, x.shape, x.layout, x.flat_of)
