"""The intermediate representation: nodes of the Caffe graph, tensors with layouts, emitted records."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # translating without weights never loads numpy
    import numpy as np

# A layout says, for each Keras axis, which Caffe axis it holds: NHWC for an NCHW blob is (0, 2, 3, 1).
Layout = tuple[int, ...]
Shape = tuple[int | None, ...]

# The other helpers a helper's code calls, which the module must define first.
HELPER_NEEDS: dict[str, tuple[str, ...]] = {"grouped_conv": ("slice_axis",)}


def channels_last(rank: int) -> Layout:
    """Keras' own convention: Caffe's axis 1 (channels) moved to the end."""
    if rank < 3:
        return tuple(range(rank))
    return (0, *range(2, rank), 1)


def identity(rank: int) -> Layout:
    """Keras axes in Caffe's order."""
    return tuple(range(rank))


@dataclass(frozen=True)
class Node:
    """One Caffe layer after phase filtering, with SSA-resolved bottoms and tops."""

    name: str
    type: str
    param: Any  # caffe.LayerParameter; read-only
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    line: int | None = None
    # Under --fully-conv, where spatial sizes are free: each bottom as it is at the prototxt's own
    # input size, for layers (InnerProduct) whose translation depends on that fixed size.
    fixed_bottoms: tuple[Tensor, ...] = ()


@dataclass(frozen=True)
class Tensor:
    """One value of a Caffe blob as it exists in the generated Keras code."""

    blob: str
    shape: Shape  # Caffe (NCHW) shape, batch first
    layout: Layout  # Keras axis -> Caffe axis
    var: str  # the Python variable holding it
    producer: str  # the Keras layer whose output it is
    # For a 2-D tensor made by flattening a tensor whose layout was not Caffe's: the Caffe shape and
    # layout it was flattened from, so that the Keras element order can be mapped back.
    flat_of: tuple[Shape, Layout] | None = None

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def keras_shape(self) -> Shape:
        return tuple(self.shape[a] for a in self.layout)

    def keras_axis(self, caffe_axis: int) -> int:
        """The Keras axis that holds ``caffe_axis`` (negative Caffe axes count from the end)."""
        return self.layout.index(caffe_axis % self.rank)

    @property
    def in_caffe_order(self) -> bool:
        return self.flat_of is None and self.layout == identity(self.rank)


@dataclass(frozen=True)
class Statement:
    """``target = callee(*args, **kwargs)(inputs)``: one line of build_model().

    ``inline``: a call of a function of the module, ``target = callee(*inputs, *args, **kwargs)``.
    """

    target: str
    callee: str
    args: tuple[Any, ...]
    kwargs: tuple[tuple[str, Any], ...]
    inputs: tuple[str, ...]
    as_list: bool = False  # pass inputs as a list (merge layers) rather than one tensor
    comment: str | None = None
    inline: bool = False


@dataclass(frozen=True)
class WeightSpec:
    """How one Keras variable (``conv1/kernel``) is made from one Caffe layer's blobs."""

    key: str
    layer: str
    convert: Callable[..., np.ndarray]  # called with the blobs of ``layer``, then those of each ``folded`` layer
    folded: tuple[str, ...] = ()  # layers whose blobs are folded in (--inference: BatchNorm, Scale)


@dataclass(frozen=True)
class BlobExpectation:
    """The blob shapes a Caffe layer must have in the caffemodel."""

    layer: str
    layer_type: str
    shapes: tuple[tuple[int, ...], ...]
    # The caffemodel layer whose blobs it takes, when --rename gave it another's (net surgery).
    source: str | None = None


@dataclass
class Translation:
    """Everything the templates and the weight writer need, with no protobuf left in it."""

    net_name: str
    source_name: str
    source_sha256: str
    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[Tensor] = field(default_factory=list)
    statements: list[Statement | str] = field(default_factory=list)  # str: a comment line
    helpers: list[str] = field(default_factory=list)  # helper templates, in first-use order
    stubs: list[tuple[str, str, str]] = field(default_factory=list)  # (class, Caffe type, parameters)
    param_str_stubs: set[str] = field(default_factory=set)  # stubs of Python layers, given param_str
    custom_layers: str | None = None  # the module, beside this one, that defines the stub classes
    blobs: dict[str, Tensor] = field(default_factory=dict)  # final value of every Caffe blob
    weights: list[WeightSpec] = field(default_factory=list)
    expectations: list[BlobExpectation] = field(default_factory=list)
    plan: list[str] = field(default_factory=list)  # one line per Caffe layer, for -v
    warnings: list[str] = field(default_factory=list)  # what was translated though not understood
    folded: list[tuple[str, str]] = field(default_factory=list)  # (Caffe type, layer) folded away by --inference
    preprocess: dict[str, Any] | None = None
    frozen: dict[str, str] = field(default_factory=dict)  # Keras variable -> why Caffe never updates it
    training: dict[str, Any] | None = None  # --solver: what compile_model() does (solver.describe)
    flat: bool = False  # one statement per layer: no block functions for repeated units

    def use_helper(self, name: str) -> str:
        """Put helper template ``name`` in the module after those it needs (each once, in first-use order); returns its name."""
        if name not in self.helpers:
            for needed in HELPER_NEEDS.get(name, ()):
                self.use_helper(needed)
            self.helpers.append(name)
        return name
