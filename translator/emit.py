"""Run the per-layer emitters over a Graph, giving each a context that names and records what it emits."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .errors import TranslationError
from .ir import (
    BlobExpectation,
    Layout,
    Node,
    Shape,
    Statement,
    Tensor,
    Translation,
    WeightSpec,
    channels_last,
    identity,
)
from .layers import REGISTRY
from .layers.recurrent import time_major_bottom
from .layers.stub import stub
from .normalize import Graph
from .options import Options
from .parse import UnknownField
from .pysource import GUARD, KERAS_NAME_BAD, MODULE_NAMES, Names, Source
from .render import helper_names

if TYPE_CHECKING:  # translating without weights never loads numpy
    import numpy as np


class Emitter:
    """Walks the graph once; owns the variable and layer namespaces of one generated module."""

    def __init__(self, graph: Graph, options: Options, source_name: str) -> None:
        self.graph = graph
        self.options = options
        self.out = Translation(
            net_name=graph.name, source_name=source_name, source_sha256=graph.sha256, flat=options.flat
        )
        self.vars = Names(reserved=MODULE_NAMES | helper_names(), prefix="blob")
        self.keras_names = Names(pattern=KERAS_NAME_BAD, prefix="layer")
        self.values: dict[tuple[str, int], Tensor] = {}
        self.primary: dict[int, str] = {}
        self._blob_vars: dict[str, str] = {}
        self._layout_cache: dict[tuple[Tensor, Layout], Tensor] = {}
        self.absorbed: dict[int, str] = {}  # node index -> the layer it was fused into
        self.hidden: set[str] = set()  # blobs whose own value a fusion removed
        self.size_free: set[Tensor] = set()  # values whose shape is the same at every input size
        self.stub_fields: dict[str, list[str]] = {}  # stubbed layer -> its unknown fields, as written
        self.sources: dict[str, str] = {}  # layer -> the caffemodel layer it takes its blobs from
        self.consumers: dict[tuple[str, int], list[int]] = {}
        # By identity: nodes compare by value, protobuf parameters included, which is slow.
        self.index_of = {id(node): index for index, node in enumerate(graph.nodes)}
        for index, node in enumerate(graph.nodes):
            for key in node.bottoms:
                self.consumers.setdefault(key, []).append(index)
        self.input_names = {key: self.keras_names.new(key[0]) for key, _ in graph.inputs}
        for index, node in enumerate(graph.nodes):
            self.primary[index] = self.keras_names.new(node.name)

    def blob_var(self, blob: str) -> str:
        """The Python variable that holds every value of one Caffe blob (in-place layers reassign it)."""
        if blob not in self._blob_vars:
            self._blob_vars[blob] = self.vars.new(blob)
        return self._blob_vars[blob]

    def run(self) -> Translation:
        self.out.warnings.extend(self.graph.warnings)
        self._check_unknown()
        names = {node.name for node in self.graph.nodes}
        for old, new in self.options.rename:
            if new not in names:
                raise TranslationError(f"--rename {old}={new}: the net has no layer {new!r}", path=self.graph.path)
            if self.sources.setdefault(new, old) != old:
                raise TranslationError(f"--rename: layer {new!r} is given two sources", path=self.graph.path)
        for (blob, version), shape in self.graph.inputs:
            if self.options.fully_conv and len(shape) == 4:
                shape = (shape[0], shape[1], None, None)
            name = self.input_names[(blob, version)]
            tensor = Tensor(blob, shape, self._input_layout((blob, version), len(shape)), self.blob_var(blob), name)
            self.values[(blob, version)] = tensor
            self.out.inputs.append(tensor)
            self.out.blobs[blob] = tensor
        for index, node in enumerate(self.graph.nodes):
            if index in self.absorbed:
                self.values[node.tops[0]] = self.values[node.bottoms[0]]
                self.out.blobs[node.tops[0][0]] = self.values[node.tops[0]]
                self.out.plan.append(f"{node.name} ({node.type}) -> fused into {self.absorbed[index]!r}")
                continue
            emit = REGISTRY.get(node.type, stub)
            ctx = EmitContext(self, node, self.primary[index])
            try:
                emit(ctx)
            except TranslationError as exc:
                raise exc.located(path=self.graph.path, line=node.line, layer=node.name, layer_type=node.type)
            for i, top in enumerate(node.tops):
                if top not in self.values:
                    raise ctx.error(f"emitter produced no value for top {i} ({top[0]!r})")
                self.out.blobs[top[0]] = self.values[top]
            self.out.plan.append(ctx.plan_line())
        self._outputs_in_caffe_order()
        if self.graph.silenced:
            silenced = ", ".join(repr(blob) for blob, _ in self.graph.silenced)
            self.out.statements.append(f"model outputs that Caffe passes only to Silence layers (which discard them): {silenced}")
        self.out.custom_layers = self.options.custom_layers
        self.out.outputs = [self.values[key] for key in self.graph.outputs]
        for blob in self.hidden:
            self.out.blobs.pop(blob, None)
        return self.out

    def _input_layout(self, key: tuple[str, int], rank: int) -> Layout:
        """Channels last; but a time-major input (T x N x ...) read only by recurrent layers has its
        streams (Caffe axis 1) as the Keras batch axis, so that Keras batches sequences, not time steps."""
        readers = [(self.graph.nodes[i], self.graph.nodes[i].bottoms.index(key)) for i in self.consumers.get(key, [])]
        if rank >= 2 and readers and all(time_major_bottom(node, b) for node, b in readers):
            return (1, 0, *range(2, rank))
        return channels_last(rank)

    def _outputs_in_caffe_order(self) -> None:
        """Net outputs that Keras flattened H,W,C (a Flatten, then element-wise layers) in Caffe's C,H,W order."""
        for key in self.graph.outputs:
            tensor = self.values[key]
            if tensor.flat_of is None:
                continue
            index = next(i for i, node in enumerate(self.graph.nodes) if key in node.tops)
            ctx = EmitContext(self, self.graph.nodes[index], self.primary[index])
            self.values[key] = ctx.in_layout(tensor, identity(tensor.rank))
            self.out.blobs[key[0]] = self.values[key]


    def _check_unknown(self) -> None:
        """Unknown types and fields: one error naming them all, or stubs, or a warning per field ignored."""
        types = [n for n in self.graph.nodes if n.type not in REGISTRY]
        stubbed = {n.name for n in types} if self.options.stubs else set()
        # A stub's docstring keeps its layer's unknown fields: nothing is lost.
        fields = [f for f in self.graph.unknown_fields if f.layer_name not in stubbed]
        for field in self.graph.unknown_fields:
            if field.layer_name in stubbed:
                self.stub_fields.setdefault(field.layer_name, []).append(field.text)
        listed = [] if self.options.stubs else types
        if not self.options.ignore_unknown_fields and (fields or listed):
            raise _unknown_error(self.graph, listed, fields)
        for field in fields:
            where = {"path": self.graph.path, "line": field.line, "layer": field.layer_name, "layer_type": field.layer_type}
            self.out.warnings.append(str(TranslationError(f"unknown field {field.path!r} ignored", **where)))
        if listed:
            raise _unknown_error(self.graph, listed, [])


def _unknown_error(graph: Graph, nodes: Sequence[Node], fields: Sequence[UnknownField]) -> TranslationError:
    items = [(f.line, f.describe()) for f in fields]
    items += [(n.line, f"line {n.line}: layer {n.name!r} of type {n.type!r}") for n in nodes]
    items.sort(key=lambda item: item[0] or 0)
    counts = []
    if fields:
        counts.append(f"{len(fields)} unknown field(s)")
    if nodes:
        counts.append(f"{len(nodes)} layer(s) of unsupported type")
    hints = []
    if nodes:
        hints.append("see caffe2py --list-layers, or --stub-unknown")
    if fields:
        hints.append("--ignore-unknown-fields translates without the fields")
    listed = "; ".join(text for _, text in items)
    return TranslationError(
        f"{' and '.join(counts)}: {listed} ({'; '.join(hints)})", path=graph.path, line=items[0][0]
    )


def _folding(convert: Callable, fold: Callable) -> Callable:
    return lambda own, *others: convert(fold(own, others))


class EmitContext:
    """The translator's side of ``layers.context.LayerContext``, where its contract is documented."""

    def __init__(self, emitter: Emitter, node: Node, keras_name: str) -> None:
        self._e = emitter
        self.node = node
        self.p = node.param
        self.keras_name = keras_name
        self.options = emitter.options
        self.inputs = [emitter.values[key] for key in node.bottoms]
        self.graph_outputs = frozenset(emitter.graph.outputs)
        self.phase = emitter.graph.phase
        self._lines: list[str] = []
        self._named = False
        self._fold: tuple[tuple[str, ...], Callable] | None = None
        self._outputs_size_free = bool(self.inputs) and all(t in emitter.size_free for t in self.inputs)

    # -- inputs and errors ------------------------------------------------------------------------
    @property
    def x(self) -> Tensor:
        if not self.inputs:
            raise self.error("needs a bottom")
        return self.inputs[0]

    def need_bottoms(self, low: int, high: int | None = None) -> None:
        n = len(self.inputs)
        high = low if high is None else high
        if not low <= n <= high:
            want = str(low) if low == high else f"{low} to {high}"
            raise self.error(f"takes {want} bottom(s), got {n}")

    def need_tops(self, low: int, high: int | None = None) -> None:
        n = len(self.node.tops)
        high = low if high is None else high
        if not low <= n <= high:
            want = str(low) if low == high else f"{low} to {high}"
            raise self.error(f"takes {want} top(s), got {n}")

    def error(self, message: str) -> TranslationError:
        return TranslationError(message)

    def source_of(self, i: int) -> str:
        """``'blob' from layer 'name'`` for bottom ``i``: where a shape that must agree came from."""
        key = self.node.bottoms[i]
        producer = next((n.name for n in self._e.graph.nodes if key in n.tops), None)
        return f"{key[0]!r} from " + (f"layer {producer!r}" if producer is not None else "the net's input")

    def sole_consumer(self, i: int) -> Node | None:
        """The one layer that reads top ``i``, when exactly one does and the top is no net output."""
        return self.sole_reader(self.node, i)

    def sole_reader(self, node: Node, i: int = 0) -> Node | None:
        key = node.tops[i]
        readers = self._e.consumers.get(key, [])
        if len(readers) != 1 or key in self.graph_outputs:
            return None
        return self._e.graph.nodes[readers[0]]

    def absorb(self, other: Node) -> None:
        index = self._e.index_of[id(other)]
        self._e.absorbed[index] = self.keras_name
        if other.tops[0][0] != other.bottoms[0][0]:
            self._e.hidden.add(other.bottoms[0][0])

    def fold(
        self,
        layers: Sequence[Node],
        blobs: Callable[[Sequence[np.ndarray], Sequence[Sequence[np.ndarray]]], Sequence[np.ndarray]],
    ) -> None:
        for other in layers:
            self.absorb(other)
            self._e.out.folded.append((other.type, other.name))
        self._fold = (tuple(n.name for n in layers), blobs)

    def removed(self) -> None:
        self.alias(0, self.x)
        self._e.out.folded.append((self.node.type, self.node.name))

    # -- naming -----------------------------------------------------------------------------------
    def derived_name(self, suffix: str) -> str:
        """A Keras layer name for a helper layer of this Caffe layer (``conv1_pad``)."""
        return self._e.keras_names.new(f"{self.keras_name}_{suffix}")

    def top_var(self, i: int = 0) -> str:
        return self._e.blob_var(self.node.tops[i][0])

    def new_var(self, hint: str) -> str:
        return self._e.vars.new(hint)

    # -- recording --------------------------------------------------------------------------------
    def call(
        self,
        callee: str,
        *args: object,
        inputs: Tensor | str | Sequence[Tensor | str],
        target: str | None = None,
        name: str | None = None,
        comment: str | None = None,
        inline: bool = False,
        **kwargs: object,
    ) -> tuple[str, str]:
        """Record ``target = callee(*args, **kwargs, name=...)(inputs)``; return (target, layer name).

        ``inline``: ``callee`` is a function of the module, called ``callee(inputs, *args, **kwargs, name=...)``.
        """
        as_list = isinstance(inputs, (list, tuple))
        items = inputs if as_list else [inputs]
        names = tuple(i.var if isinstance(i, Tensor) else i for i in items)
        layer_name = name or self.keras_name
        if layer_name == self.keras_name and self.keras_name != self.node.name and not self._named:
            # Keras forbids some characters (and names must be unique): keep Caffe's name in sight.
            self._named = True
            joint = " " if comment and comment.startswith("+") else "; "
            comment = f"Caffe layer '{self.node.name}'" + (f"{joint}{comment}" if comment else "")
        target = target or self.top_var(0)
        kw = tuple((k, v) for k, v in kwargs.items()) + (("name", layer_name),)
        self._e.out.statements.append(Statement(target, callee, args, kw, names, as_list, comment, inline))
        self._lines.append(f"{callee.split('.')[-1]} {layer_name!r}")
        return target, layer_name

    def fixed_size(self, tensor: Tensor) -> None:
        """The next statement needs ``tensor`` at the shape it has at the translated input size."""
        shape = tuple(tensor.keras_shape[1:])
        if tensor in self._e.size_free or None in shape:
            return
        requested = Source("input_shape" if len(self._e.graph.inputs) == 1 else "input_shapes")
        note = "Caffe's weights or fixed dims bind the next layer to this shape: another input size stops here"
        guard = Statement(tensor.var, GUARD, (shape, requested), (("layer", self.node.name),), (tensor.var,), False, note, True)
        self._e.out.statements.append(guard)
        self._lines.append("size-bound")

    def size_free(self) -> None:
        """This layer's outputs have the same shape at every input size (Dense, global pooling)."""
        self._outputs_size_free = True

    def stub(self, class_name: str, caffe_type: str, params: str, takes_param_str: bool = False) -> str:
        """Ask for a stub class for an untranslated type; returns its name for use as a callee.

        The docstring shows the first such layer's parameters, and every such layer's fields that
        the schema does not know, as written in the prototxt.
        """
        stubs = self._e.out.stubs
        fields = self._e.stub_fields.get(self.node.name, [])
        index = next((i for i, s in enumerate(stubs) if s[1] == caffe_type), None)
        if index is None:
            name = self._e.vars.new(class_name)
            if fields:
                params += "\nFields caffe2py does not know:\n" + "\n".join(fields)
            stubs.append((name, caffe_type, params))
            if takes_param_str:
                self._e.out.param_str_stubs.add(name)
            return name
        name, kind, text = stubs[index]
        if fields:
            text += f"\nFields caffe2py does not know, of layer {self.node.name!r}:\n" + "\n".join(fields)
            stubs[index] = (name, kind, text)
        return name

    def comment(self, text: str) -> None:
        self._e.out.statements.append(text)

    def output(
        self,
        i: int,
        var: str,
        producer: str,
        shape: Shape,
        layout: Layout | None = None,
        flat_of: tuple[Shape, Layout] | None = None,
    ) -> Tensor:
        blob = self.node.tops[i][0]
        layout = channels_last(len(shape)) if layout is None else layout
        tensor = Tensor(blob, tuple(shape), tuple(layout), var, producer, flat_of)
        self._e.values[self.node.tops[i]] = tensor
        if self._outputs_size_free:
            self._e.size_free.add(tensor)
        return tensor

    def alias(self, i: int, tensor: Tensor) -> None:
        """Top ``i`` is the very value ``tensor`` (Split, identity layers): no code."""
        self._e.values[self.node.tops[i]] = tensor
        self._lines.append(f"alias of {tensor.blob!r}")

    def helper(self, name: str) -> str:
        """Ask for a helper class in the module; returns its name for use as a callee."""
        return self._e.out.use_helper(name)

    def expect_blobs(self, *shapes: tuple[int, ...], layer: Node | None = None) -> None:
        node = layer or self.node
        self._e.out.expectations.append(BlobExpectation(node.name, node.type, tuple(shapes), self._e.sources.get(node.name)))

    def weight(
        self, layer_name: str, variable: str, convert: Callable[[Sequence[np.ndarray]], np.ndarray], *, source: Node | None = None
    ) -> None:
        """Variable ``layer_name/variable`` of the Keras model comes from ``convert(blobs)``."""
        caffe_layer = (source or self.node).name
        folded: tuple[str, ...] = ()
        if self._fold is not None and source is None:
            folded, fold = self._fold
            convert = _folding(convert, fold)
        self._e.out.weights.append(WeightSpec(f"{layer_name}/{variable}", caffe_layer, convert, folded))

    # -- layouts ----------------------------------------------------------------------------------
    def in_layout(self, tensor: Tensor, layout: Layout) -> Tensor:
        """``tensor`` with its Keras axes holding Caffe axes in ``layout``; a Permute layer if needed."""
        layout = tuple(layout)
        if tensor.flat_of is None and tensor.layout == layout:
            return tensor
        key = (tensor, layout)
        if key not in self._e._layout_cache:
            source = self._unflatten_to_caffe_order(tensor) if tensor.flat_of is not None else tensor
            if source.layout != layout:
                dims = tuple(source.layout.index(a) for a in layout)
                if dims[0] != 0:
                    raise self.error("cannot move the batch axis")
                var = self._e.vars.new(f"{source.var}_t")
                name = self._e.keras_names.new(f"{source.producer}_transpose")
                self.comment(f"Caffe axes {list(layout)} in Keras order for {self.node.name!r}")
                self.call("layers.Permute", tuple(dims[1:]), inputs=source, target=var, name=name)
                source = Tensor(source.blob, source.shape, layout, var, name)
            if tensor in self._e.size_free:
                self._e.size_free.add(source)
            self._e._layout_cache[key] = source
        return self._e._layout_cache[key]

    def _unflatten_to_caffe_order(self, tensor: Tensor) -> Tensor:
        shape, layout = tensor.flat_of
        keras_dims = tuple(shape[a] for a in layout[1:])
        if None not in keras_dims:  # the sizes it restores are those of the translated input
            self.fixed_size(tensor)
        var = self._e.vars.new(f"{tensor.var}_unflat")
        name = self._e.keras_names.new(f"{tensor.producer}_unflatten")
        self.comment("Caffe flattens C,H,W and Keras H,W,C: restore Caffe's element order")
        self.call("layers.Reshape", keras_dims, inputs=tensor, target=var, name=name)
        spatial = Tensor(tensor.blob, shape, layout, var, name)
        caffe = self.in_layout(spatial, tuple(range(len(shape))))
        var2 = self._e.vars.new(f"{tensor.var}_flat")
        name2 = self._e.keras_names.new(f"{tensor.producer}_reflatten")
        self.call("layers.Flatten", inputs=caffe, target=var2, name=name2)
        return Tensor(tensor.blob, tensor.shape, (0, 1), var2, name2)

    def plan_line(self) -> str:
        shapes = ", ".join(str(list(self._e.values[t].shape)) for t in self.node.tops if t in self._e.values)
        made = "; ".join(self._lines) or "nothing"
        return f"{self.node.name} ({self.node.type}) -> {made} -> {shapes}"
