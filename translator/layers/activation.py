"""Element-wise activation emitters (ReLU, PReLU, ELU, BNLL, Swish, Clip, ...) and Softmax along an axis."""

from __future__ import annotations

from .. import layout
from .common import caffe_axis, keras_axis
from .context import LayerContext
from .registry import layer


def same_shape(ctx: LayerContext, callee: str, *args: object, **kwargs: object) -> None:
    """An element-wise layer: the output keeps the input's shape and layout (flattened or not)."""
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    x = ctx.x
    target, producer = ctx.call(callee, *args, inputs=x, **kwargs)
    ctx.output(0, target, producer, x.shape, x.layout, x.flat_of)


@layer("ReLU")
def relu(ctx: LayerContext) -> None:
    slope = ctx.p.relu_param.negative_slope
    if slope < 0:  # Caffe computes max(x, 0) + slope * min(x, 0) for any slope; LeakyReLU refuses this one
        same_shape(ctx, ctx.helper("CaffeReLU"), negative_slope=slope)
    elif slope:
        same_shape(ctx, "layers.LeakyReLU", negative_slope=slope)
    else:
        same_shape(ctx, "layers.ReLU")


@layer("Sigmoid")
def sigmoid(ctx: LayerContext) -> None:
    same_shape(ctx, "layers.Activation", "sigmoid")


@layer("TanH")
def tanh(ctx: LayerContext) -> None:
    same_shape(ctx, "layers.Activation", "tanh")


@layer("Dropout")
def dropout(ctx: LayerContext) -> None:
    # Identity at inference (Caffe scales at training time, as Keras does); kept so the model trains.
    if ctx.options.inference:
        ctx.need_bottoms(1)
        ctx.need_tops(1)
        ctx.removed()
        return
    same_shape(ctx, "layers.Dropout", ctx.p.dropout_param.dropout_ratio)


@layer("AbsVal")
def absval(ctx: LayerContext) -> None:
    same_shape(ctx, ctx.helper("AbsVal"))


@layer("BNLL")
def bnll(ctx: LayerContext) -> None:
    # Caffe's BNLL, log(1 + exp(x)) computed without overflow, is Keras' softplus.
    same_shape(ctx, "layers.Activation", "softplus")


@layer("ELU")
def elu(ctx: LayerContext) -> None:
    alpha = ctx.p.elu_param.alpha
    same_shape(ctx, "layers.ELU", **({"alpha": alpha} if alpha != 1 else {}))


@layer("Threshold")
def threshold(ctx: LayerContext) -> None:
    t = ctx.p.threshold_param.threshold
    same_shape(ctx, ctx.helper("Threshold"), **({"threshold": t} if t else {}))


@layer("Clip")
def clip(ctx: LayerContext) -> None:
    p = ctx.p.clip_param
    if not (p.HasField("min") and p.HasField("max")):
        raise ctx.error("clip_param needs both min and max")
    if p.min == 0 and p.max > 0:
        same_shape(ctx, "layers.ReLU", max_value=p.max)
    else:
        same_shape(ctx, ctx.helper("Clip"), min_value=p.min, max_value=p.max)


@layer("ReLU6")
def relu6(ctx: LayerContext) -> None:
    # The MobileNet v2/v3 forks' ReLU6Layer: min(max(x, 0), 6), no parameters.
    same_shape(ctx, "layers.ReLU", max_value=6.0)


@layer("Mish")
def mish(ctx: LayerContext) -> None:
    # The YOLOv4 ports' MishLayer: x * tanh(log(1 + exp(x))), Keras' mish.
    same_shape(ctx, "layers.Activation", "mish")


@layer("Swish")
def swish(ctx: LayerContext) -> None:
    beta = ctx.p.swish_param.beta
    if beta == 1:
        same_shape(ctx, "layers.Activation", "silu")
    else:
        same_shape(ctx, ctx.helper("Swish"), beta=beta)


@layer("PReLU")
def prelu(ctx: LayerContext) -> None:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    shared = ctx.p.prelu_param.channel_shared
    x = ctx.x
    if x.rank < 2:
        raise ctx.error("PReLU needs a blob with a channel axis")
    if x.flat_of is not None and not shared:  # one slope per Caffe channel: Caffe's element order
        x = ctx.in_layout(x, x.layout)
    channels = x.shape[1]
    ctx.expect_blobs(() if shared else (channels,))
    # Keras' alpha has the input's shape, with ones on the axes that share a slope.
    axis = None if shared else x.keras_axis(1)
    alpha = tuple(channels if k == axis else 1 for k in range(1, x.rank))
    shared_axes = [k for k in range(1, x.rank) if k != axis]
    target, producer = ctx.call("layers.PReLU", inputs=x, **({"shared_axes": shared_axes} if shared_axes else {}))
    ctx.weight(producer, "alpha", lambda b: layout.spread(b[0], range(b[0].ndim), alpha))
    ctx.output(0, target, producer, x.shape, x.layout, x.flat_of)


@layer("Softmax")
def softmax(ctx: LayerContext) -> None:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    x = ctx.x
    axis = caffe_axis(ctx.p.softmax_param.axis, x.rank)
    if x.flat_of is not None and axis != 1:
        x = ctx.in_layout(x, x.layout)
    k = keras_axis(x.keras_axis(axis), x.rank)
    target, producer = ctx.call("layers.Softmax", inputs=x, **({"axis": k} if k != -1 else {}))
    ctx.output(0, target, producer, x.shape, x.layout, x.flat_of)


@layer("Split")
def split(ctx: LayerContext) -> None:
    ctx.need_bottoms(1)
    for i in range(len(ctx.node.tops)):
        ctx.alias(i, ctx.x)
