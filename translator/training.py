"""What Caffe's solver knows about each learnable Keras variable: its layer's lr_mult and decay_mult."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import TranslationError
from .ir import Translation
from .normalize import Graph

# Caffe's BatchNorm forces lr_mult 0 on its statistics; Keras never trains them either.
_STATISTICS = frozenset({"BatchNorm"})


@dataclass(frozen=True)
class Multipliers:
    """Caffe's ParamSpec of the blob a Keras variable is converted from."""

    layer: str
    blob: int | None  # None: every blob of the layer has the same ParamSpec
    lr_mult: float = 1.0
    decay_mult: float = 1.0


class _Probe(list):
    """Blobs that remember which indices a weight converter read (the Caffe blob behind a variable)."""

    def __init__(self, shapes) -> None:
        import numpy as np

        super().__init__(np.broadcast_to(np.zeros((), np.float32), shape) for shape in shapes)
        self.read: set[int] = set()

    def __getitem__(self, index):
        self.read.add(index)
        return super().__getitem__(index)


def variable_multipliers(graph: Graph, translation: Translation, only_frozen: bool = False) -> dict[str, Multipliers]:
    """Keras variable key ("conv1/bias") -> the lr_mult and decay_mult Caffe applies to its blob.

    only_frozen: just the variables of layers with some lr_mult 0 (a translation without a solver
    needs no more, and most then need no numpy).
    """
    nodes = {node.name: node for node in graph.nodes}
    shapes = {e.layer: e.shapes for e in translation.expectations}
    result = {}
    for spec in translation.weights:
        node = nodes.get(spec.layer)
        if node is None or node.type in _STATISTICS:
            continue
        specs = [(p.lr_mult, p.decay_mult) for p in node.param.param]
        if only_frozen and all(lr != 0 for lr, _ in specs):
            continue
        if len(set(specs)) == 1 and len(specs) >= len(shapes[spec.layer]):
            blob, (lr_mult, decay_mult) = None, specs[0]
        else:
            read = sorted(_blobs_read(spec, shapes[spec.layer]))
            # Blobs beyond the listed ParamSpecs get Caffe's defaults.
            given = {specs[i] if i < len(specs) else (1.0, 1.0) for i in read}
            if len(given) != 1:
                raise TranslationError(
                    f"blobs {read} make one Keras variable ({spec.key}) but have different lr_mult/decay_mult",
                    path=graph.path, line=node.line, layer=node.name, layer_type=node.type,
                )
            blob, (lr_mult, decay_mult) = read[0], given.pop()
        result[spec.key] = Multipliers(spec.layer, blob, lr_mult, decay_mult)
    return result


def _blobs_read(spec, shapes) -> set[int]:
    probe = _Probe(shapes)
    spec.convert(probe)
    return probe.read


def frozen_variables(multipliers: dict[str, Multipliers]) -> dict[str, str]:
    """Keras variable key -> why it is not trainable (Caffe never updates a blob with lr_mult 0)."""
    return {
        key: f"layer {m.layer!r}" + ("" if m.blob is None else f" param {m.blob}") + ": lr_mult 0"
        for key, m in multipliers.items()
        if m.lr_mult == 0
    }
