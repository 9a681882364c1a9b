"""Turn a NetParameter into a Graph: phase rules applied, inputs found, blobs renamed SSA-style."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import text_format

from .errors import TranslationError
from .ir import Node, Shape
from .parse import ParsedNet, UnknownField
from .schema import enum_values

# Layers that produce training data; at inference their data top becomes a model input.
DATA_TYPES = frozenset(
    {"Data", "ImageData", "HDF5Data", "MemoryData", "WindowData", "DummyData", "DenseImageData",
     "AnnotatedData", "VideoData"}
)
PHASES = enum_values("Phase")  # {"TRAIN": 0, "TEST": 1}


@dataclass(frozen=True)
class Graph:
    """A filtered Caffe net: nodes in Caffe order over SSA blob keys ``(blob, version)``."""

    name: str
    path: str
    sha256: str
    inputs: tuple[tuple[tuple[str, int], Shape], ...]
    nodes: tuple[Node, ...]
    outputs: tuple[tuple[str, int], ...]
    notes: tuple[str, ...] = ()
    # (input blob, caffe.TransformationParameter) of each kept data layer that has one: how Caffe
    # prepared its images (mean, scale, crop), for the module's preprocess().
    transforms: tuple[tuple[str, Any], ...] = ()
    phase: str = "TEST"  # what Caffe layers default to (BatchNorm's use_global_stats)
    # The loss layers (no tops) over the blobs they read, and the inputs only they read (labels).
    losses: tuple[Node, ...] = ()
    targets: tuple[tuple[tuple[str, int], Shape], ...] = ()
    # Fields the schema does not know, of the net and of the layers kept, in file order.
    unknown_fields: tuple[UnknownField, ...] = ()
    # Outputs that only Silence layers read in Caffe (which then discards them).
    silenced: tuple[tuple[str, int], ...] = ()
    warnings: tuple[str, ...] = ()


def _is_data_layer(layer) -> bool:
    # Forks name their data layers *Data (ImageLabelmapData, ...); a Python layer without bottoms
    # is a data source too (FCN's VOC loader). At inference each becomes a model input.
    sourceless = not layer.bottom
    return layer.type in DATA_TYPES or (sourceless and (layer.type.endswith("Data") or layer.type == "Python"))


def _is_training_only(kind: str) -> bool:
    return kind == "Accuracy" or kind.endswith("Loss")


# Layers that score or save what the net computes rather than compute it: dropped, with a warning.
DROPPED = {
    "DetectionEvaluate": "an evaluation layer (it scores detections against labels)",
    "SegAccuracy": "an evaluation layer (it scores a segmentation against labels)",
    "MatWrite": "a writer (it saves blobs to .mat files)",
}


def _rule_met(rule, phase: int, level: int, stages: set[str]) -> bool:
    # Caffe's Net::StateMeetsRule: every condition the rule states must hold.
    if rule.HasField("phase") and rule.phase != phase:
        return False
    if rule.HasField("min_level") and level < rule.min_level:
        return False
    if rule.HasField("max_level") and level > rule.max_level:
        return False
    if any(s not in stages for s in rule.stage):
        return False
    return not any(s in stages for s in rule.not_stage)


def _included(layer, phase: int, level: int, stages: set[str]) -> bool:
    # Caffe's Net::FilterNet: with include rules a layer needs one met; with exclude rules, none.
    if layer.include:
        return any(_rule_met(r, phase, level, stages) for r in layer.include)
    return not any(_rule_met(r, phase, level, stages) for r in layer.exclude)


def _hint(net, blob: str, phase: str) -> str:
    """Name the phase/stage rules that left out the layers producing ``blob``, if any did."""
    rules = [
        " ".join(text_format.MessageToString(r, as_one_line=True) for r in layer.include)
        for layer in net.layer
        if blob in layer.top and layer.include
    ]
    if not rules:
        return ""
    return f" in phase {phase} (its producers need include {{{'} or {'.join(rules)}}}: see --phase/--stage)"


_INT_MAX = 2**31 - 1


def _dims(values: Sequence[int], where: dict) -> Shape:
    shape = tuple(int(v) for v in values)
    if any(d <= 0 or d > _INT_MAX for d in shape):
        raise TranslationError(
            f"input shape {list(shape)}: every dimension must be positive and below 2**31", **where
        )
    # Caffe's Blob::Reshape refuses a blob of more than INT_MAX elements.
    if math.prod(shape) > _INT_MAX:
        raise TranslationError(
            f"input shape {list(shape)} has {math.prod(shape)} elements; a Caffe blob holds at most 2**31-1", **where
        )
    return shape


def _data_shape(layer, overrides: Mapping[str, Shape], where: dict) -> Shape | None:
    top = layer.top[0]
    if top in overrides:
        return overrides[top]
    if layer.type == "MemoryData":
        p = layer.memory_data_param
        return _dims([p.batch_size, p.channels, p.height, p.width], where)
    if layer.type == "DummyData" and layer.dummy_data_param.shape:
        return _dims(layer.dummy_data_param.shape[0].dim, where)
    crop = layer.transform_param.crop_size
    if crop:
        batch = 1
        for name in ("data_param", "image_data_param", "window_data_param", "video_data_param"):
            if layer.HasField(name) and getattr(layer, name).batch_size:
                batch = getattr(layer, name).batch_size
        means = len(layer.transform_param.mean_value)
        channels = means if means > 1 else 3
        return _dims([batch, channels, crop, crop], where)
    return None


def build_graph(
    parsed: ParsedNet,
    *,
    phase: str = "TEST",
    level: int = 0,
    stages: Sequence[str] = (),
    input_shapes: Mapping[str, Shape] | None = None,
) -> Graph:
    """Apply Caffe's phase rules and wire the layers over SSA blob keys."""
    builder = _GraphBuilder(parsed, phase, input_shapes or {})
    builder.add_net_inputs()
    unknown_fields = [field for field in parsed.unknown_fields if field.layer is None]
    warnings = []
    for index, layer, where in _kept_layers(parsed, phase, level, stages):
        if layer.type in DROPPED:
            warnings.append(str(TranslationError(f"dropped: {DROPPED[layer.type]}", **where)))
            continue
        builder.add_layer(layer, where)
        # A layer left out takes its fields with it; a kept layer's unknown fields must be dealt with.
        unknown_fields += [
            dataclasses.replace(field, layer_name=layer.name, layer_type=layer.type)
            for field in parsed.unknown_fields
            if field.layer == index
        ]
        unknown_fields += _c3d_fields_elsewhere(parsed, index, layer, where)
    if not builder.nodes and not builder.inputs:
        raise TranslationError("the net has no layers (empty or not a prototxt?)", path=parsed.path, line=1)
    inputs = builder.deployed_inputs()
    outputs = builder.net_outputs()
    return Graph(
        name=parsed.net.name or "net",
        path=parsed.path,
        sha256=hashlib.sha256(parsed.data).hexdigest(),
        inputs=tuple(inputs),
        nodes=tuple(builder.nodes),
        outputs=tuple(outputs),
        notes=tuple(builder.notes),
        transforms=tuple(builder.transforms),
        phase=phase,
        losses=tuple(builder.losses),
        targets=tuple(builder.targets()),
        unknown_fields=tuple(sorted(unknown_fields, key=lambda field: field.line)),
        silenced=tuple(key for key in outputs if key in builder.silenced),
        warnings=tuple(warnings),
    )


# C3D v1.0's fields of its V1 CONVOLUTION3D/POOLING3D layers, which the upgrade moves out; in any
# other layer's convolution_param or pooling_param no emitter reads them: unknown there.
_C3D_ONLY = {
    "convolution_param": ("kernel_depth", "temporal_stride", "filter_group", "temporal_pad"),
    "pooling_param": ("kernel_depth", "temporal_stride"),
}


def _c3d_fields_elsewhere(parsed: ParsedNet, index: int, layer: Any, where: dict) -> list[UnknownField]:
    found = []
    for message, fields in _C3D_ONLY.items():
        params = getattr(layer, message)
        for name in fields:
            if params.HasField(name):
                line = parsed.field_line(index, f"{message}.{name}") or where["line"]
                text = f"{name}: {getattr(params, name)}"
                found.append(UnknownField(line, index, f"{message}.{name}", text, layer.name, layer.type))
    return found


def _kept_layers(
    parsed: ParsedNet, phase: str, level: int, stages: Sequence[str]
) -> Iterator[tuple[int, Any, dict]]:
    """The layers Caffe's Net::FilterNet keeps for this state: index, layer, where it is in the prototxt."""
    net = parsed.net
    phase_id = PHASES[phase]
    level = level or net.state.level
    stage_set = set(net.state.stage) | set(stages)
    lines = parsed.layer_lines
    for index, layer in enumerate(net.layer):
        line = lines[index] if index < len(lines) else None
        where = {"path": parsed.path, "line": line, "layer": layer.name, "layer_type": layer.type}
        if layer.include and layer.exclude:
            raise TranslationError("has both include and exclude rules (Caffe allows one kind)", **where)
        if _included(layer, phase_id, level, stage_set):
            yield index, layer, where


class _GraphBuilder:
    """The state of wiring one net: the current SSA version of every blob, and what reads it."""

    def __init__(self, parsed: ParsedNet, phase: str, overrides: Mapping[str, Shape]) -> None:
        self.net, self.path, self.phase = parsed.net, parsed.path, phase
        self.overrides = dict(overrides)
        self.version: dict[str, int] = {}
        self.consumed: dict[tuple[str, int], int] = {}
        self.inputs: list[tuple[tuple[str, int], Shape]] = []
        self.unknown_inputs: list[tuple[str, dict]] = []
        self.nodes: list[Node] = []
        self.notes: list[str] = []
        self.transforms: list[tuple[str, Any]] = []
        self.losses: list[Node] = []
        self.silenced: set[tuple[str, int]] = set()

    def add_input(self, name: str, shape: Shape | None, where: dict) -> None:
        if name in self.version:
            raise TranslationError(f"input {name!r} is declared twice", **where)
        self.version[name] = 0
        if shape is None:
            self.unknown_inputs.append((name, where))
        self.inputs.append(((name, 0), shape or ()))

    def add_net_inputs(self) -> None:
        """Net-level inputs: `input:` with `input_shape` or four `input_dim` each."""
        net = self.net
        for i, name in enumerate(net.input):
            where = {"path": self.path}
            if name in self.overrides:
                shape = self.overrides[name]
            elif len(net.input_shape) > i:
                shape = _dims(net.input_shape[i].dim, where)
            elif len(net.input_dim) >= 4 * (i + 1):
                shape = _dims(net.input_dim[4 * i : 4 * i + 4], where)
            else:
                shape = None
            self.add_input(name, shape, where)

    def add_layer(self, layer, where: dict) -> None:
        """An Input layer or a data layer declares inputs; any other layer becomes a node."""
        if _is_training_only(layer.type):
            self._add_loss(layer, where)
        elif layer.type == "Input":
            self._add_input_layer(layer, where)
        elif _is_data_layer(layer):
            self._add_data_layer(layer, where)
        else:
            self._add_node(layer, where)

    def _add_loss(self, layer, where: dict) -> None:
        """A loss layer is kept aside (for --solver) over the blobs it reads; accuracies are dropped."""
        if layer.type.endswith("Loss") and all(blob in self.version for blob in layer.bottom):
            read = tuple((blob, self.version[blob]) for blob in layer.bottom)
            self.losses.append(Node(layer.name, layer.type, layer, read, (), where["line"]))

    def _add_input_layer(self, layer, where: dict) -> None:
        shapes = layer.input_param.shape
        for i, top in enumerate(layer.top):
            given = shapes[i] if len(shapes) > i else (shapes[0] if len(shapes) == 1 else None)
            shape = self.overrides.get(top) or (_dims(given.dim, where) if given is not None else None)
            self.add_input(top, shape, where)

    def _add_data_layer(self, layer, where: dict) -> None:
        if not layer.top:
            raise TranslationError("data layer has no top", **where)
        self.add_input(layer.top[0], _data_shape(layer, self.overrides, where), where)
        if layer.HasField("transform_param"):
            self.transforms.append((layer.top[0], layer.transform_param))
        for extra in layer.top[1:]:  # labels: only losses and accuracies read them
            self.add_input(extra, self.overrides.get(extra) or (1,), where)

    def _add_node(self, layer, where: dict) -> None:
        """Read each bottom's current version; give each top a new one (the same blob again when in place)."""
        bottoms = []
        for blob in layer.bottom:
            if blob not in self.version:
                hint = _hint(self.net, blob, self.phase)
                raise TranslationError(f"bottom {blob!r} is not produced by any earlier layer{hint}", **where)
            key = (blob, self.version[blob])
            # Silence only keeps Caffe from listing a blob as a net output; here the blob stays one.
            if layer.type == "Silence":
                self.silenced.add(key)
            else:
                self.consumed[key] = self.consumed.get(key, 0) + 1
            bottoms.append(key)
        tops = []
        for i, blob in enumerate(layer.top):
            in_place = i < len(layer.bottom) and layer.bottom[i] == blob
            if blob in layer.top[:i]:
                raise TranslationError(f"top {blob!r} is listed twice", **where)
            if blob in self.version and not in_place:
                raise TranslationError(f"top {blob!r} is already produced by an earlier layer", **where)
            self.version[blob] = self.version[blob] + 1 if in_place else 0
            tops.append((blob, self.version[blob]))
        if layer.type == "Silence":
            return
        self.nodes.append(Node(layer.name, layer.type, layer, tuple(bottoms), tuple(tops), where["line"]))

    def deployed_inputs(self) -> list[tuple[tuple[str, int], Shape]]:
        """The inputs some kept layer reads (labels that only losses read are not model inputs)."""
        missing = [(name, where) for name, where in self.unknown_inputs if self.consumed.get((name, 0))]
        if missing:
            name, where = missing[0]
            raise TranslationError(
                f"the shape of input {name!r} is unknown: pass --input-shape {name}=N,C,H,W", **where
            )
        return [(key, shape) for key, shape in self.inputs if self.consumed.get(key)]

    def targets(self) -> list[tuple[tuple[str, int], Shape]]:
        """The inputs that only loss layers read (labels, regression targets)."""
        read = {key for node in self.losses for key in node.bottoms}
        return [(key, shape) for key, shape in self.inputs if not self.consumed.get(key) and key in read]

    def net_outputs(self) -> list[tuple[str, int]]:
        """Caffe's net outputs: blobs left unconsumed at the end, in the order of its std::set (by name)."""
        produced = [top for node in self.nodes for top in node.tops]
        outputs = sorted(
            (key for key in produced if not self.consumed.get(key) and self.version[key[0]] == key[1]),
            key=lambda k: k[0].encode("utf-8"),
        )
        if outputs:
            return outputs
        topless = [node for node in self.nodes if not node.tops]
        if topless:
            first = topless[0]
            raise TranslationError(
                "writes no top, and the net has no other output (a layer needs a top: blob)",
                path=self.path, line=first.line, layer=first.name, layer_type=first.type,
            )
        if not self.nodes:
            raise TranslationError("the net declares inputs but has no layers to run on them", path=self.path)
        raise TranslationError("the net has no output blob (every blob is consumed)", path=self.path)
