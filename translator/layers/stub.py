"""The stand-in emitter for layer types without one (``--stub-unknown``): a named stub class."""

from __future__ import annotations

from google.protobuf import text_format

from ..pysource import Names
from .context import LayerContext


def stub(ctx: LayerContext) -> None:
    """Emit a call of a stub layer class that carries the Caffe parameters in its docstring.

    A Python layer's stub is named after its Python class (one stub per class, not per type) and
    is given the layer's ``param_str``, as Caffe gives it to the class.
    """
    param = type(ctx.p)()
    param.CopyFrom(ctx.p)
    param.ClearField("blobs")
    python = ctx.p.python_param if ctx.node.type == "Python" else None
    if python is not None and python.layer:
        class_name = Names(prefix="PythonLayer").clean(python.layer)
        kind = f"Python ({python.module}.{python.layer})" if python.module else f"Python ({python.layer})"
    else:
        class_name = f"{Names().clean(ctx.node.type).title().replace('_', '')}Stub"
        kind = ctx.node.type
    params = text_format.MessageToString(param, as_utf8=False)
    callee = ctx.stub(class_name, kind, params, takes_param_str=python is not None)
    inputs = ctx.inputs if len(ctx.inputs) != 1 else ctx.x
    comment = None if ctx.options.custom_layers else "stub: fill in"
    kwargs = {"param_str": python.param_str} if python is not None and python.param_str else {}
    for i in range(len(ctx.node.tops)):
        name = ctx.keras_name if i == 0 else ctx.derived_name(f"top{i}")
        target, producer = ctx.call(callee, inputs=inputs, target=ctx.top_var(i), name=name, comment=comment, **kwargs)
        like = ctx.x if ctx.inputs else None
        if like is None:
            raise ctx.error("a stub needs at least one bottom to take its shape from")
        ctx.output(i, target, producer, like.shape, like.layout)
