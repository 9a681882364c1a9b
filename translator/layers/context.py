"""The contract between the translator and an emitter: everything one emitter may read and record.

An emitter is a function ``emit(ctx: LayerContext) -> None`` registered for one or more Caffe types
with ``@layer("Type")`` (see ``registry.py``). It is called once per Caffe layer of that type, in
Caffe's order, and must:

1. check the layer's bottoms and tops (``need_bottoms``, ``need_tops``) and parameters (``p``);
2. record the Keras calls that compute the layer (``call``, ``comment``, ``helper``), in order;
3. give every top a value (``output`` for a new Keras tensor, ``alias`` for an existing one);
4. say which Keras variables come from which Caffe blobs (``weight``) and which blob shapes the
   caffemodel must hold (``expect_blobs``).

Bad input is reported by raising ``ctx.error("what is wrong")``; the translator adds the file, line
and layer. Values are ``Tensor`` records: a Caffe shape (NCHW order) and a layout saying which Caffe
axis each Keras axis holds; ``in_layout`` returns a tensor in the layout an emitter needs, inserting
a ``Permute`` when it must. Names from the prototxt are untrusted: they reach the generated code only
through the names and literals this context (and ``pysource``) makes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..errors import TranslationError
from ..ir import Layout, Node, Shape, Tensor
from ..options import Options

if TYPE_CHECKING:  # translating without weights never loads numpy
    import numpy as np


@runtime_checkable
class LayerContext(Protocol):
    """What one emitter sees of the translation: its layer, its input tensors, and ways to record code."""

    node: Node
    """The Caffe layer being translated (name, type, SSA bottom and top keys, prototxt line)."""
    p: Any
    """The layer's ``caffe.LayerParameter`` (read only): ``ctx.p.convolution_param`` and so on."""
    keras_name: str
    """The Keras name of the layer's main call: Caffe's name, made valid and unique."""
    options: Options
    """The choices of this translation (``--fully-conv``, ``--native-groups``, ...)."""
    inputs: list[Tensor]
    """The current value of each bottom, in Caffe's order."""
    graph_outputs: frozenset[tuple[str, int]]
    """The SSA keys of the net's outputs (a fusion must not hide one)."""
    phase: str
    """The net's phase, "TEST" or "TRAIN": what some layers default to (BatchNorm's use_global_stats)."""

    # -- inputs and errors ----------------------------------------------------------------------
    @property
    def x(self) -> Tensor:
        """The first bottom's value; an error when the layer has none."""
        ...

    def need_bottoms(self, low: int, high: int | None = None) -> None:
        """Raise an error unless the layer has ``low`` (to ``high``) bottoms."""
        ...

    def need_tops(self, low: int, high: int | None = None) -> None:
        """Raise an error unless the layer has ``low`` (to ``high``) tops."""
        ...

    def error(self, message: str) -> TranslationError:
        """An error about this layer, for ``raise``; the translator adds file, line and layer."""
        ...

    def source_of(self, i: int) -> str:
        """``'blob' from layer 'name'`` for bottom ``i``, to name both sides of a shape mismatch."""
        ...

    # -- fusion ---------------------------------------------------------------------------------
    def sole_consumer(self, i: int) -> Node | None:
        """The one layer that reads top ``i``, when exactly one does and the top is no net output."""
        ...

    def sole_reader(self, node: Node, i: int = 0) -> Node | None:
        """The one layer that reads top ``i`` of ``node``, when exactly one does and it is no net output."""
        ...

    def absorb(self, other: Node) -> None:
        """``other`` (a later layer reading this one's top, or an absorbed one's) is folded into what this emitter made."""
        ...

    def fold(
        self,
        layers: Sequence[Node],
        blobs: Callable[[Sequence[np.ndarray], Sequence[Sequence[np.ndarray]]], Sequence[np.ndarray]],
    ) -> None:
        """Absorb ``layers`` (--inference); every weight of this layer is then converted from
        ``blobs(its own blobs, those of each of layers)`` instead of its own blobs."""
        ...

    def removed(self) -> None:
        """Top 0 is bottom 0 and the layer leaves no code (--inference: Dropout); it is listed as removed."""
        ...

    # -- naming ---------------------------------------------------------------------------------
    def derived_name(self, suffix: str) -> str:
        """A fresh Keras layer name for a helper layer of this Caffe layer (``conv1_pad``)."""
        ...

    def top_var(self, i: int = 0) -> str:
        """The Python variable that holds Caffe blob ``tops[i]`` (in-place layers reassign it)."""
        ...

    def new_var(self, hint: str) -> str:
        """A fresh Python variable name for an intermediate value."""
        ...

    # -- recording code -------------------------------------------------------------------------
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

        ``target`` defaults to the variable of top 0 and ``name`` to ``keras_name``; a list of inputs
        is passed as a list (merge layers). Arguments are Python values, written as literals.
        ``inline``: ``callee`` is a function of the module (a helper), ``callee(inputs, *args, **kwargs)``.
        """
        ...

    def comment(self, text: str) -> None:
        """Record a comment line (saying why, in Caffe's terms) before the next call."""
        ...

    def helper(self, name: str) -> str:
        """Ask for the helper class ``name`` (a template in ``templates/helpers``); returns the callee."""
        ...

    def stub(self, class_name: str, caffe_type: str, params: str, takes_param_str: bool = False) -> str:
        """Ask for a stub class for an untranslated type; returns its name for use as a callee.

        ``takes_param_str``: the class is given a Python layer's ``param_str`` keyword.
        """
        ...

    def fixed_size(self, tensor: Tensor) -> None:
        """The next call needs ``tensor`` at its translated shape (weights or fixed dims bind it).

        build_model() checks it there and names the layer when another input size changes it;
        nothing is recorded for a value whose shape holds at every input size.
        """
        ...

    def size_free(self) -> None:
        """This layer's outputs have the same shape at every input size (Dense, global pooling)."""
        ...

    # -- results --------------------------------------------------------------------------------
    def output(
        self,
        i: int,
        var: str,
        producer: str,
        shape: Shape,
        layout: Layout | None = None,
        flat_of: tuple[Shape, Layout] | None = None,
    ) -> Tensor:
        """Top ``i`` is ``var``, made by Keras layer ``producer``, with Caffe ``shape`` and ``layout``.

        ``layout`` defaults to channels-last; ``flat_of`` marks a 2-D value flattened from a tensor
        whose layout was not Caffe's (its Caffe shape and layout), so its element order is known.
        """
        ...

    def alias(self, i: int, tensor: Tensor) -> None:
        """Top ``i`` is the very value ``tensor`` (Split, identity layers): no code."""
        ...

    def weight(
        self,
        layer_name: str,
        variable: str,
        convert: Callable[[Sequence[np.ndarray]], np.ndarray],
        *,
        source: Node | None = None,
    ) -> None:
        """Keras variable ``layer_name/variable`` is ``convert(blobs)`` of this (or ``source``'s) Caffe blobs."""
        ...

    def expect_blobs(self, *shapes: tuple[int, ...], layer: Node | None = None) -> None:
        """The caffemodel must hold blobs of these shapes for this (or ``layer``'s) Caffe layer."""
        ...

    # -- layouts --------------------------------------------------------------------------------
    def in_layout(self, tensor: Tensor, layout: Layout) -> Tensor:
        """``tensor`` with its Keras axes holding Caffe axes in ``layout``; a Permute layer if needed."""
        ...
