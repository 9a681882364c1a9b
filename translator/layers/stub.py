"""The stand-in emitter for layer types without one (``--stub-unknown``): a named stub class."""

from __future__ import annotations

from google.protobuf import text_format

from ..pysource import Names
from .context import LayerContext


def stub(ctx: LayerContext) -> None:
    """Emit a call of a stub layer class that carries the Caffe parameters in its docstring."""
    param = type(ctx.p)()
    param.CopyFrom(ctx.p)
    param.ClearField("blobs")
    class_name = f"{Names().clean(ctx.node.type).title().replace('_', '')}Stub"
    params = text_format.MessageToString(param, as_utf8=False)
    callee = ctx.stub(class_name, ctx.node.type, params)
    inputs = ctx.inputs if len(ctx.inputs) != 1 else ctx.x
    for i in range(len(ctx.node.tops)):
        name = ctx.keras_name if i == 0 else ctx.derived_name(f"top{i}")
        target, producer = ctx.call(callee, inputs=inputs, target=ctx.top_var(i), name=name, comment="stub: fill in")
        like = ctx.x if ctx.inputs else None
        if like is None:
            raise ctx.error("a stub needs at least one bottom to take its shape from")
        ctx.output(i, target, producer, like.shape, like.layout)
