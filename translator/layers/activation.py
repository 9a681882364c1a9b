"""Element-wise emitters: ReLU, Sigmoid, TanH, Dropout, and Softmax along a Caffe axis."""

from __future__ import annotations

from translator.layers import layer
from translator.layers.common import caffe_axis, keras_axis


def _same_shape(ctx, callee: str, *args: object, **kwargs: object) -> None:
    """An element-wise layer: the output keeps the input's shape and layout (flattened or not)."""
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    x = ctx.x
    target, producer = ctx.call(callee, *args, inputs=x, **kwargs)
    ctx.output(0, target, producer, x.shape, x.layout, x.flat_of)


@layer("ReLU")
def relu(ctx) -> None:
    slope = ctx.p.relu_param.negative_slope
    if slope:
        _same_shape(ctx, "layers.LeakyReLU", negative_slope=slope)
    else:
        _same_shape(ctx, "layers.ReLU")


@layer("Sigmoid")
def sigmoid(ctx) -> None:
    _same_shape(ctx, "layers.Activation", "sigmoid")


@layer("TanH")
def tanh(ctx) -> None:
    _same_shape(ctx, "layers.Activation", "tanh")


@layer("Dropout")
def dropout(ctx) -> None:
    # Identity at inference (Caffe scales at training time, as Keras does); kept so the model trains.
    _same_shape(ctx, "layers.Dropout", ctx.p.dropout_param.dropout_ratio)


@layer("Softmax")
def softmax(ctx) -> None:
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
def split(ctx) -> None:
    ctx.need_bottoms(1)
    for i in range(len(ctx.node.tops)):
        ctx.alias(i, ctx.x)
