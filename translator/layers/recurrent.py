"""Recurrent emitters: BVLC's LSTM and RNN (cont, expose_hidden, a static input), the OCR forks' Lstm, Reverse, Transpose."""

from __future__ import annotations

from .. import layout
from ..ir import Node, Tensor
from .context import LayerContext
from .registry import layer

RECURRENT = ("LSTM", "RNN", "Lstm")


def _recurrent_states(node: Node) -> int:
    return 2 if node.type == "LSTM" else 1


def _has_static(node: Node) -> bool:
    if node.type == "Lstm":
        return False
    exposed = _recurrent_states(node) if node.param.recurrent_param.expose_hidden else 0
    return len(node.bottoms) > 2 + exposed


def time_major_bottom(node: Node, index: int) -> bool:
    """Whether bottom ``index`` of ``node`` is time-major (T x N x ...): x, cont and the exposed states."""
    if node.type not in RECURRENT:
        return False
    return index != 2 or not _has_static(node)


def _stream_major(ctx: LayerContext, tensor: Tensor, what: str) -> Tensor:
    """``tensor`` (T x N x ...) as Keras holds it: streams as the batch axis, then time, then Caffe's order."""
    want = (1, 0, *range(2, tensor.rank))
    if tensor.flat_of is None and tensor.layout == want:
        return tensor
    raise ctx.error(
        f"{what} {tensor.blob!r} must come from a net input (or another recurrent layer): its time axis is "
        "the Keras batch axis here"
    )


def _recurrent(ctx: LayerContext, helper: str, gates: int) -> None:
    """x (T x N x ...), cont (T x N), [x_static (N x ...)], [h_0 (, c_0) (1 x N x H)] -> o (T x N x H), [h_T (, c_T)]."""
    p = ctx.p.recurrent_param
    states = 2 if gates == 4 else 1
    exposed = states if p.expose_hidden else 0
    ctx.need_bottoms(2 + exposed, 3 + exposed)
    ctx.need_tops(1 + exposed)
    if p.num_output <= 0:
        raise ctx.error("num_output must be positive")
    static = _has_static(ctx.node)
    x, cont = ctx.inputs[0], ctx.inputs[1]
    if x.rank < 3 or cont.rank != 2 or tuple(cont.shape) != tuple(x.shape[:2]):
        raise ctx.error(f"needs x of shape (T, N, ...) and cont (T, N), got {list(x.shape)} and {list(cont.shape)}")
    x = _stream_major(ctx, x, "x")
    cont = _stream_major(ctx, cont, "cont")
    inputs = [x, cont]
    steps, streams = x.shape[:2]
    features = 1
    for d in x.shape[2:]:
        features = None if d is None or features is None else features * d
    hidden = p.num_output
    width = gates * hidden
    kwargs: dict = {}
    # Blob order of Caffe's unrolled net: input weights and bias, the static input's weights, the
    # recurrent weights (and for RNN the output layer's weights and bias).
    shapes = [(width, features), (width,)]
    if static:
        x_static = ctx.inputs[2]
        if x_static.shape[0] != streams and None not in (x_static.shape[0], streams):
            raise ctx.error(f"x_static {list(x_static.shape)} must have one row per stream ({streams})")
        x_static = ctx.in_layout(x_static, tuple(range(x_static.rank)))
        static_features = 1
        for d in x_static.shape[1:]:
            static_features *= d
        shapes.append((width, static_features))
        inputs.append(x_static)
        kwargs["static_input"] = True
    shapes.append((width, hidden))
    if gates == 1:
        shapes += [(hidden, hidden), (hidden,)]
    ctx.expect_blobs(*shapes)
    for i in range(exposed):
        state = ctx.inputs[2 + static + i]
        if tuple(state.shape) != (1, streams, hidden):
            raise ctx.error(f"exposed state {state.blob!r} must be (1, {streams}, {hidden}), got {list(state.shape)}")
        inputs.append(_stream_major(ctx, state, "the exposed state"))
    if exposed:
        kwargs["expose_hidden"] = True
    ctx.comment(
        f"{ctx.node.name}: time-major in Caffe (T x N); here streams are the batch axis. cont 0 starts a new sequence"
    )
    target = ctx.top_var(0) if not exposed else ctx.new_var(f"{ctx.top_var(0)}_and_states")
    target, producer = ctx.call(ctx.helper(helper), hidden, inputs=inputs, target=target, **kwargs)
    names = ["kernel", "bias"] + (["static_kernel"] if static else []) + ["recurrent_kernel"]
    names += ["output_kernel", "output_bias"] if gates == 1 else []
    for i, name in enumerate(names):
        if name.endswith("bias"):
            ctx.weight(producer, name, lambda b, i=i: layout.vector(b[i]))
        else:
            # Caffe's InnerProduct weights are (outputs, inputs); Keras multiplies x @ kernel.
            ctx.weight(producer, name, lambda b, i=i: b[i].reshape(b[i].shape[0], -1).T.copy())
    seq_layout = (1, 0, 2)
    if not exposed:
        ctx.output(0, target, producer, (steps, streams, hidden), seq_layout)
        return
    # The helper appends h_T (and c_T) after the T steps along the time axis; cut them apart.
    known = steps is not None
    if not known:
        raise ctx.error("expose_hidden needs a fixed number of time steps")
    pieces = [(0, states)] + [(steps + i, states - 1 - i) for i in range(states)]
    for i, crop in enumerate(pieces):
        var, name = ctx.call(
            "layers.Cropping1D", crop, inputs=target, target=ctx.top_var(i), name=ctx.derived_name(("o", "h", "c")[i])
        )
        ctx.output(i, var, name, (steps if i == 0 else 1, streams, hidden), seq_layout)


@layer("LSTM")
def lstm(ctx: LayerContext) -> None:
    _recurrent(ctx, "CaffeLSTM", 4)


@layer("RNN")
def rnn(ctx: LayerContext) -> None:
    _recurrent(ctx, "CaffeRNN", 1)



@layer("Lstm")
def ocr_lstm(ctx: LayerContext) -> None:
    """The CTPN/OCR forks' Lstm (junhyukoh's): x (T x N x I), zero initial state, gates i, f, o, g."""
    ctx.need_bottoms(1, 2)
    ctx.need_tops(1)
    if len(ctx.inputs) == 2:
        raise ctx.error("a clip bottom carries h and c over from the previous forward pass; not supported")
    p = ctx.p.lstm_param
    if p.num_output <= 0:
        raise ctx.error("num_output must be positive")
    x = ctx.x
    if x.rank != 3:
        raise ctx.error(f"Lstm needs a (T, N, I) blob, got {list(x.shape)}")
    hidden, features = p.num_output, x.shape[2]
    # At t = 0 the layer drops h and zeroes f, which is Caffe's LSTM with cont 0 then 1.
    if x.flat_of is None and x.layout == (1, 0, 2):
        kwargs, out_layout = {}, (1, 0, 2)
    else:
        x = ctx.in_layout(x, (0, 1, 2))
        kwargs, out_layout = {"time_major": True}, (0, 1, 2)
    ctx.expect_blobs((4 * hidden, features), (4 * hidden, hidden), (4 * hidden,))
    target, producer = ctx.call(ctx.helper("CaffeLSTM"), hidden, inputs=x, **kwargs)
    ctx.weight(producer, "kernel", lambda b: b[0].T.copy())
    ctx.weight(producer, "recurrent_kernel", lambda b: b[1].T.copy())
    ctx.weight(producer, "bias", lambda b: layout.vector(b[2]))
    ctx.output(0, target, producer, (x.shape[0], x.shape[1], hidden), out_layout)


@layer("Reverse")
def reverse(ctx: LayerContext) -> None:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    x = ctx.x
    if x.flat_of is not None:
        x = ctx.in_layout(x, x.layout)
    axis = ctx.p.reverse_param.axis
    if not 0 <= axis < x.rank:
        raise ctx.error(f"axis {axis} is out of range for a {x.rank}-D blob")
    target, producer = ctx.call(ctx.helper("Reverse"), x.keras_axis(axis), inputs=x)
    ctx.output(0, target, producer, x.shape, x.layout)


@layer("Transpose")
def transpose(ctx: LayerContext) -> None:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    x = ctx.x
    dims = list(ctx.p.transpose_param.dim)
    if sorted(dims) != list(range(x.rank)):
        raise ctx.error(f"dim {dims} must order all {x.rank} axes")
    if x.flat_of is not None:
        x = ctx.in_layout(x, x.layout)
    shape = tuple(x.shape[d] for d in dims)
    if x.keras_axis(dims[0]) == 0:
        # The Keras batch axis stays first: only the labels of the axes change, no data moves.
        ctx.output(0, x.var, x.producer, shape, tuple(dims.index(a) for a in x.layout))
        return
    # Another axis becomes the first: transpose the Keras tensor itself, batch axis included.
    x = ctx.in_layout(x, tuple(range(x.rank)))
    target, producer = ctx.call(ctx.helper("Transpose"), tuple(dims), inputs=x)
    ctx.output(0, target, producer, shape, tuple(range(x.rank)))
