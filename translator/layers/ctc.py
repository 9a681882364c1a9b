"""CTC emitter of the CTC fork (OCR nets): CTCGreedyDecoder, a helper layer."""

from __future__ import annotations

from ..ir import identity
from .context import LayerContext
from .registry import layer


@layer("CTCGreedyDecoder")
def ctc_greedy_decoder(ctx: LayerContext) -> None:
    ctx.need_bottoms(2, 3)
    if len(ctx.inputs) == 3:
        raise ctx.error("a third bottom (target sequences) makes the fork score its accuracy, a training-time output; not supported")
    ctx.need_tops(1, 2)
    p = ctx.p.ctc_decoder_param
    probabilities, indicators = ctx.inputs
    if probabilities.rank != 3:
        raise ctx.error(f"{ctx.source_of(0)} is {probabilities.rank}-D; the fork reads probabilities as T x N x C")
    steps, batch, classes = probabilities.shape
    if indicators.rank < 2 or any(d not in (1, None) for d in indicators.shape[2:]):
        raise ctx.error(f"{ctx.source_of(1)} has shape {list(indicators.shape)}; sequence indicators are T x N")
    for want, got, what in ((steps, indicators.shape[0], "steps"), (batch, indicators.shape[1], "sequences")):
        if None not in (want, got) and want != got:
            raise ctx.error(f"{ctx.source_of(0)} has {want} {what} but {ctx.source_of(1)} has {got}")
    if classes is not None and p.blank_index >= classes:
        raise ctx.error(f"blank_index {p.blank_index} is not one of the {classes} classes")
    inputs = [ctx.in_layout(probabilities, identity(3)), ctx.in_layout(indicators, identity(indicators.rank))]
    kwargs: dict[str, object] = {"blank_index": p.blank_index}
    if not p.ctc_merge_repeated:
        kwargs["merge_repeated"] = False
    helper = ctx.helper("CTCGreedyDecoder")
    target, producer = ctx.call(helper, inputs=inputs, **kwargs)
    ctx.output(0, target, producer, (batch, steps, 1, 1), identity(4))
    if len(ctx.node.tops) == 2:
        target, producer = ctx.call(
            helper, inputs=inputs, target=ctx.top_var(1), name=ctx.derived_name("scores"), returns="scores", **kwargs
        )
        ctx.output(1, target, producer, (batch, 1, 1, 1), identity(4))
