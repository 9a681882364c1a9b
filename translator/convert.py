"""The translator's entry point: prototxt path in, Translation (and module text) out."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import keyword
from collections.abc import Mapping, Sequence
from pathlib import Path

from .emit import Emitter
from .errors import TranslationError
from .ir import Shape, Translation
from .normalize import Graph, build_graph
from .options import Options
from .parse import read_prototxt
from .preprocess import describe as describe_preprocess
from .render import render
from .solver import describe as describe_solver
from .solver import loss_graph, read_solver
from .training import frozen_variables, variable_multipliers


def translate(
    prototxt: str | Path,
    *,
    options: Options | None = None,
    phase: str = "TEST",
    level: int = 0,
    stages: Sequence[str] = (),
    input_shapes: Mapping[str, Shape] | None = None,
    display: str | None = None,
    mean: str | Path | None = None,
    solver: str | Path | None = None,
    custom_layers: str | Path | None = None,
) -> Translation:
    """Parse, filter and emit one net; raises TranslationError on bad input.

    ``mean``: a mean .binaryproto for the module's preprocess(), overriding the data layer's mean.
    ``solver``: a solver.prototxt for the module's compile_model() (with phase TRAIN).
    ``custom_layers``: the path of a .py file (beside the module) that defines the classes that
    would be stubs; the module imports them from it instead.
    """
    options = options or Options()
    if options.inference and solver is not None:
        raise TranslationError("--inference folds BatchNorm into convolutions for deployment; train the default rendering (--solver) instead")
    if custom_layers is not None:
        options = dataclasses.replace(options, custom_layers=custom_module_name(custom_layers))
    parsed = read_prototxt(prototxt, display)
    graph = build_graph(parsed, phase=phase, level=level, stages=stages, input_shapes=input_shapes)
    solver_param = read_solver(solver) if solver is not None else None
    if solver_param is not None:
        graph = loss_graph(graph, str(solver))
    if options.fully_conv:
        graph = _with_fixed_bottoms(graph, options, Path(prototxt).name)
    emitter = Emitter(graph, options, Path(prototxt).name)
    translation = emitter.run()
    translation.preprocess = describe_preprocess(graph, prototxt, mean)
    translation.frozen = frozen_variables(variable_multipliers(graph, translation, only_frozen=True))
    if solver_param is not None:
        translation.training = describe_solver(solver_param, str(solver), graph, translation, emitter.values)
        for helper in ("CaffeLearningRate", "CaffeSolver", *(kind for kind, _, _ in translation.training["losses"])):
            translation.use_helper(helper)
    if custom_layers is not None:
        _check_custom_layers(Path(custom_layers), [name for name, _, _ in translation.stubs])
    return translation


def translate_with_options(prototxt: str | Path, args: argparse.Namespace) -> Translation:
    """Translate with the command line's option values (``caffe2py --help``): what the CLI and the API share."""
    options = Options(
        fully_conv=args.fully_conv,
        native_groups=args.native_groups,
        stub_unknown=args.stub_unknown,
        ignore_unknown_fields=args.ignore_unknown_fields,
        rename=tuple(args.rename),
        flat=args.flat,
        inference=args.inference,
    )
    return translate(
        prototxt,
        options=options,
        phase=args.phase,
        level=args.level,
        stages=args.stage,
        input_shapes=dict(args.input_shape),
        mean=args.mean,
        solver=args.solver,
        custom_layers=args.custom_layers,
    )


def custom_module_name(path: str | Path) -> str:
    """The module name under which the generated code imports a --custom-layers file."""
    path = Path(path)
    stem = path.stem
    # The name is written into an import statement: only a plain identifier may get there.
    if path.suffix != ".py" or not stem.isidentifier() or keyword.iskeyword(stem) or not stem.isascii():
        raise TranslationError(f"--custom-layers {path}: needs a NAME.py file whose NAME is a Python identifier")
    if stem in ("keras", "numpy", "np"):
        raise TranslationError(f"--custom-layers {path}: {stem}.py would hide the {stem} package the module imports")
    return stem


def _check_custom_layers(path: Path, needed: Sequence[str]) -> None:
    """The file must define every class the module imports from it (read, never run)."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except OSError as exc:
        raise TranslationError(f"--custom-layers: cannot read: {exc.strerror}", path=str(path)) from None
    except SyntaxError as exc:
        raise TranslationError(f"--custom-layers: not valid Python: {exc.msg}", path=str(path), line=exc.lineno) from None
    defined = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Assign):
            defined.update(t.id for t in node.targets if isinstance(t, ast.Name))
    missing = [name for name in needed if name not in defined]
    if missing:
        raise TranslationError(
            f"--custom-layers: defines no {', '.join(missing)} (the classes the module imports from it; "
            "--stub-unknown prints them as stubs to start from)",
            path=str(path),
        )


def _with_fixed_bottoms(graph: Graph, options: Options, source_name: str) -> Graph:
    """The graph with each node's bottoms as a translation at the prototxt's own input size sees them.

    --fully-conv frees the spatial sizes, but an InnerProduct's kernel must still cover exactly the
    input it was trained on: a first pass at the fixed size records that input.
    """
    fixed = Emitter(graph, dataclasses.replace(options, fully_conv=False), source_name)
    fixed.run()
    nodes = tuple(
        dataclasses.replace(node, fixed_bottoms=tuple(fixed.values[key] for key in node.bottoms))
        for node in graph.nodes
    )
    return dataclasses.replace(graph, nodes=nodes)


def translate_to_source(prototxt: str | Path, *, npz_name: str | None = None, **kwargs) -> str:
    """The formatted module text for ``prototxt`` (what ``caffe2py net.prototxt`` prints)."""
    translation = translate(prototxt, **kwargs)
    return render(translation, npz_name or Path(prototxt).with_suffix(".npz").name)
