"""--solver: a solver.prototxt and the net's loss layers as the module's compile_model()."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from . import schema
from .errors import TranslationError
from .ir import Tensor, Translation, channels_last
from .normalize import Graph
from .parse import syntax_error
from .pysource import Source, docstring_text, literal, string
from .training import variable_multipliers

SOLVER_TYPES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")
LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")
# Fields that change what Caffe trains but that a translation of one prototxt cannot honour.
_REFUSED = {
    "net_param": "translate the net from its own prototxt",
    "train_net_param": "translate the net from its own prototxt",
    "train_state": "give its stages and level with --stage/--level and leave it out",
    "weights": "give the initial weights with --weights",
}
LOSS_TYPES = ("SoftmaxWithLoss", "EuclideanLoss", "SigmoidCrossEntropyLoss", "HingeLoss")


def read_solver(path: str | Path):
    """Parse a text SolverParameter; errors at file:line."""
    shown = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TranslationError(f"cannot read: {exc.strerror}", path=shown) from None
    except UnicodeDecodeError:
        raise TranslationError("not UTF-8 text", path=shown) from None
    solver = schema.message_class("SolverParameter")()
    try:
        text_format.Parse(text, solver)
    except text_format.ParseError as exc:
        raise syntax_error(exc, text, shown) from None
    return solver


def loss_graph(graph: Graph, solver_path: str) -> Graph:
    """The graph whose outputs are the blobs its loss layers compare (bottom 0 of each, in order)."""
    if graph.phase != "TRAIN":
        raise TranslationError("--solver trains the TRAIN-phase net: add --phase TRAIN", path=solver_path)
    if not graph.losses:
        raise TranslationError("the net has no loss layer in phase TRAIN, nothing to train", path=graph.path)
    weighted = [node for node in graph.nodes if any(node.param.loss_weight)]
    if weighted:
        first = weighted[0]
        raise TranslationError(
            "loss_weight on a layer that is not a loss layer is not supported with --solver",
            path=graph.path, line=first.line, layer=first.name, layer_type=first.type,
        )
    outputs = tuple(dict.fromkeys(node.bottoms[0] for node in graph.losses if node.bottoms))
    return dataclasses.replace(graph, outputs=outputs)


def _enum_name(message, field: str) -> str:
    enum = message.DESCRIPTOR.fields_by_name[field].enum_type
    return enum.values_by_number[getattr(message, field)].name


def _field_error(solver_path: str, field: str, message: str) -> TranslationError:
    return TranslationError(f"{field}: {message}", path=solver_path)


def _solver_type(solver, path: str) -> str:
    if solver.HasField("type"):
        kind = solver.type
    elif solver.HasField("solver_type"):
        # The deprecated enum (NESTEROV, ...), as Caffe's UpgradeSolverType names it.
        kind = {t.upper(): t for t in SOLVER_TYPES}[_enum_name(solver, "solver_type")]
    else:
        kind = "SGD"
    if kind not in SOLVER_TYPES:
        raise _field_error(path, "type", f"{kind!r} is not one of Caffe's solvers ({', '.join(SOLVER_TYPES)})")
    if kind in ("AdaGrad", "RMSProp") and solver.momentum != 0:
        raise _field_error(path, "momentum", f"Caffe's {kind} solver takes no momentum")
    return kind


def _schedule(solver, path: str) -> dict[str, Any]:
    policy = solver.lr_policy
    if policy not in LR_POLICIES:
        raise _field_error(path, "lr_policy", f"{policy!r} is not one of Caffe's policies ({', '.join(LR_POLICIES)})")
    kwargs: dict[str, Any] = {"base_lr": solver.base_lr, "lr_policy": policy}
    if policy in ("step", "exp", "inv", "multistep", "sigmoid"):
        kwargs["gamma"] = solver.gamma
    if policy in ("inv", "poly"):
        kwargs["power"] = solver.power
    if policy in ("step", "sigmoid"):
        if policy == "step" and solver.stepsize <= 0:
            raise _field_error(path, "stepsize", "lr_policy step needs a positive stepsize")
        kwargs["stepsize"] = solver.stepsize
    if policy == "multistep":
        values = list(solver.stepvalue)
        # Caffe advances one step per iteration when the next stepvalue is reached: with increasing
        # stepvalues that is the count of those reached.
        if any(b <= a for a, b in itertools.pairwise(values)):
            raise _field_error(path, "stepvalue", f"{values} must increase")
        kwargs["stepvalue"] = tuple(values)
    if policy == "poly":
        if solver.max_iter <= 0:
            raise _field_error(path, "max_iter", "lr_policy poly needs a positive max_iter")
        kwargs["max_iter"] = solver.max_iter
    return kwargs


def _optimizer(solver, path: str, kind: str) -> dict[str, Any]:
    for field, advice in _REFUSED.items():
        if solver.HasField(field) if field != "weights" else len(solver.weights):
            raise _field_error(path, field, f"not supported ({advice})")
    if solver.regularization_type not in ("L1", "L2"):
        raise _field_error(path, "regularization_type", f"{solver.regularization_type!r} is neither L1 nor L2")
    if solver.iter_size < 1:
        raise _field_error(path, "iter_size", "must be at least 1")
    kwargs: dict[str, Any] = {"solver_type": kind}
    if kind in ("SGD", "Nesterov", "AdaDelta", "Adam"):
        kwargs["momentum"] = solver.momentum
    if kind == "Adam":
        kwargs["momentum2"] = solver.momentum2
    if kind in ("AdaGrad", "RMSProp", "AdaDelta", "Adam"):
        kwargs["delta"] = solver.delta
    if kind == "RMSProp":
        kwargs["rms_decay"] = solver.rms_decay
    if solver.weight_decay:
        kwargs["weight_decay"] = solver.weight_decay
        if solver.regularization_type != "L2":
            kwargs["regularization_type"] = solver.regularization_type
    if solver.clip_gradients >= 0:
        kwargs["clip_gradients"] = solver.clip_gradients
    if solver.iter_size > 1:
        kwargs["iter_size"] = solver.iter_size
    return kwargs


def _loss(node, values: dict, targets: set, graph: Graph) -> tuple[str, dict[str, Any], float]:
    where = {"path": graph.path, "line": node.line, "layer": node.name, "layer_type": node.type}
    if node.type not in LOSS_TYPES:
        raise TranslationError(f"loss type not supported with --solver ({', '.join(LOSS_TYPES)})", **where)
    if len(node.bottoms) != 2:
        raise TranslationError(f"takes 2 bottoms (prediction, target), got {len(node.bottoms)}", **where)
    if node.bottoms[1] not in targets:
        raise TranslationError(
            f"bottom {node.bottoms[1][0]!r} must be an input that only loss layers read (the target)", **where
        )
    if any(not down for down in node.param.propagate_down[:1]):
        raise TranslationError("propagate_down: false on the prediction is not supported", **where)
    pred: Tensor = values[node.bottoms[0]]
    target_shape = dict(graph.targets)[node.bottoms[1]]
    if node.type in ("SoftmaxWithLoss", "HingeLoss") and not (
        len(target_shape) <= 2 or (len(target_shape) == 4 and target_shape[1] == 1)
    ):
        raise TranslationError(f"labels of shape {list(target_shape)}: N, (N, 1) or (N, 1, H, W) only", **where)
    if pred.flat_of is not None:
        raise TranslationError("the prediction is flattened in Keras' element order, not Caffe's", **where)
    p = node.param.loss_param
    if p.class_weighting or p.weight_by_label_freqs:
        raise TranslationError("loss_param class_weighting is not supported", **where)
    kwargs: dict[str, Any] = {}
    if node.type in ("SoftmaxWithLoss", "SigmoidCrossEntropyLoss") and p.HasField("ignore_label"):
        kwargs["ignore_label"] = p.ignore_label
    if node.type == "SoftmaxWithLoss":
        axis = pred.keras_axis(node.param.softmax_param.axis)
        if axis != pred.rank - 1:
            kwargs["axis"] = axis
        if pred.layout[:axis] + pred.layout[axis + 1 :] != tuple(a for a in range(pred.rank) if a != pred.layout[axis]):
            raise TranslationError("the prediction's non-class axes are not in Caffe's order", **where)
        default = "VALID"
    elif node.type == "SigmoidCrossEntropyLoss":
        default = "BATCH_SIZE"
    else:
        default = None
    if default is not None:
        if p.HasField("normalization"):
            mode = _enum_name(p, "normalization")
        elif p.HasField("normalize"):
            mode = "VALID" if p.normalize else "BATCH_SIZE"
        else:
            mode = default
        if mode != default:
            kwargs["normalization"] = mode
    if node.type in ("EuclideanLoss", "SigmoidCrossEntropyLoss") and pred.layout != channels_last(pred.rank):
        raise TranslationError("the prediction is not channels-last like its target", **where)
    if node.type == "HingeLoss":
        if pred.rank != 2:
            raise TranslationError(f"HingeLoss of a {pred.rank}-D prediction is not supported (2-D only)", **where)
        if node.param.hinge_loss_param.norm == 2:
            kwargs["norm"] = "L2"
    weight = node.param.loss_weight[0] if node.param.loss_weight else 1.0
    return node.type, kwargs, weight


def describe(solver, solver_path: str, graph: Graph, translation: Translation, values: dict) -> dict[str, Any]:
    """Everything compile_model() says, as plain values; raises TranslationError naming what cannot be honoured."""
    kind = _solver_type(solver, solver_path)
    schedule = _schedule(solver, solver_path)
    if solver.iter_size > 1:
        schedule["iter_size"] = solver.iter_size
    optimizer = _optimizer(solver, solver_path, kind)
    targets = {key for key, _ in graph.targets}
    losses = [_loss(node, values, targets, graph) for node in graph.losses]
    multipliers = {
        key: (m.lr_mult, m.decay_mult)
        for key, m in variable_multipliers(graph, translation).items()
        if m.lr_mult != 0 and (m.lr_mult, m.decay_mult) != (1.0, 1.0)
    }
    return {
        "solver_name": Path(solver_path).name,
        "schedule": schedule,
        "optimizer": optimizer,
        "losses": losses,
        "targets": [node.bottoms[1][0] for node in graph.losses],
        "multipliers": multipliers,
    }


def _call(callee: str, kwargs: dict[str, Any], first: str = "") -> Source:
    args = ([first] if first else []) + [f"{k}={literal(v)}" for k, v in kwargs.items()]
    return Source(f"{callee}({', '.join(args)})")


def present(training: dict[str, Any] | None) -> dict[str, Any] | None:
    """The template's fields for compile_model(), every value already Python source."""
    if training is None:
        return None
    losses = [_call(kind, kwargs) for kind, kwargs, _ in training["losses"]]
    weights = [literal(float(w)) for _, _, w in training["losses"]]
    single = len(losses) == 1
    optimizer = dict(training["optimizer"])
    if training["multipliers"]:
        optimizer["multipliers"] = Source("MULTIPLIERS")
    return {
        "solver_name": docstring_text(training["solver_name"]),
        "schedule": _call("CaffeLearningRate", training["schedule"]),
        "optimizer": _call("CaffeSolver", optimizer, "schedule"),
        "loss": losses[0] if single else Source(f"[{', '.join(losses)}]"),
        "loss_weights": weights[0] if single else Source(f"[{', '.join(weights)}]"),
        "targets": docstring_text(", ".join(training["targets"])),
        "multipliers": [
            {"key": string(k), "value": literal(tuple(float(x) for x in v))} for k, v in training["multipliers"].items()
        ],
    }
