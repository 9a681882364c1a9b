"""The package's inside: no import cycles, and emitters written against the documented LayerContext."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import caffe2py
from caffe2py.convert import translate
from caffe2py.emit import EmitContext, Emitter
from caffe2py.layers import REGISTRY
from caffe2py.layers.context import LayerContext
from caffe2py.normalize import build_graph
from caffe2py.options import Options
from caffe2py.parse import read_prototxt

PACKAGE = Path(caffe2py.__file__).resolve().parent


def _module_name(path: Path) -> tuple[str, list[str]]:
    """The dotted name of a source file, and the package its relative imports start from."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    package = parts[:-1]
    if parts[-1] == "__init__":
        parts = package = parts[:-1]
    return ".".join(["caffe2py", *parts]), ["caffe2py", *package]


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere (top level, functions, TYPE_CHECKING blocks)."""
    files = {}
    for path in PACKAGE.rglob("*.py"):
        name, package = _module_name(path)
        files[name] = (path, package)
    graph: dict[str, set[str]] = {}
    for name, (path, package) in files.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names if alias.name in files)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                for alias in node.names:
                    # `from . import conv` imports a module; `from .ir import Node` imports from one.
                    target = f"{base}.{alias.name}"
                    edges.add(target if target in files else base)
        graph[name] = {edge for edge in edges if edge in files and edge != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that starts and ends at the same module, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for other in sorted(graph[module]):
            if state.get(other) == 1:
                return [*path[path.index(other) :], other]
            if other not in state and (cycle := visit(other)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert {"caffe2py.emit", "caffe2py.layers", "caffe2py.cli", "caffe2py.verify"} <= set(graph)
    assert "caffe2py.layers.registry" in graph["caffe2py.layers.conv"]  # the walk sees relative imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_each_helper_needs_the_helpers_its_code_calls():
    from caffe2py.ir import HELPER_NEEDS
    from caffe2py.render import helper_names, templates_dir

    calls = {}
    for name in helper_names():
        tree = ast.parse((templates_dir() / "helpers" / f"{name}.py.jinja").read_text())
        called = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)} & helper_names() - {name}
        if called:
            calls[name] = set(called)
    assert calls == {name: set(needed) for name, needed in HELPER_NEEDS.items()}


def test_a_helper_follows_the_helpers_it_needs():
    from caffe2py.ir import Translation

    translation = Translation("net", "net.prototxt", "0")
    assert translation.use_helper("grouped_conv") == "grouped_conv"
    translation.use_helper("slice_axis")
    assert translation.helpers == ["slice_axis", "grouped_conv"]


def test_the_context_emitters_get_is_the_documented_one(tmp_path):
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text('input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
                        'layer { name: "relu" type: "ReLU" bottom: "data" top: "out" }\n')
    graph = build_graph(read_prototxt(prototxt))
    emitter = Emitter(graph, Options(), "net.prototxt")
    emitter.run()
    ctx = EmitContext(emitter, graph.nodes[0], "relu")
    assert isinstance(ctx, LayerContext)
    # Every public member of the context is part of the contract (plan_line is the translator's own).
    public = {name for name in dir(ctx) if not name.startswith("_")} - {"plan_line"}
    documented = {name for name in dir(LayerContext) if not name.startswith("_")} | set(LayerContext.__annotations__)
    assert public <= documented, public - documented
    assert translate(prototxt).outputs[0].blob == "out"


def test_every_emitter_is_annotated_with_the_contract():
    for kind, emit in REGISTRY.items():
        (param,) = inspect.signature(emit).parameters.values()
        assert param.annotation in ("LayerContext", LayerContext), f"{kind}: {emit.__qualname__}"
