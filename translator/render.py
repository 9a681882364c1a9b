"""Turn a Translation into module text: present every value as Source, render the template, run black."""

from __future__ import annotations

import dataclasses
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from .formatting import LINE_LENGTH, STATEMENT, format_module, prewrap, wrap_call
from .ir import Statement, Translation, channels_last
from .preprocess import present as preprocess_fields
from .pysource import CHAIN, KERAS_NAME_BAD, NHWC, Names, Source, comment, docstring_text, literal, string
from .solver import present as training_fields
from .version import __version__

NHWC_AXES = channels_last(4)
_CALLEE = re.compile(r"(layers\.)?[A-Z][A-Za-z0-9_]*")


def templates_dir() -> Path:
    """``templates/`` of a checkout, or the copy installed inside the package."""
    checkout = Path(__file__).resolve().parent.parent / "templates"
    if (checkout / "module.py.jinja").is_file():
        return checkout
    return Path(str(resources.files(__package__) / "templates"))


@lru_cache(maxsize=1)
def helper_names() -> frozenset[str]:
    """The helper classes a module may define (one template each)."""
    return frozenset(p.name.split(".")[0] for p in (templates_dir() / "helpers").glob("*.py.jinja"))


def _only_source(value: Any) -> Source:
    # Every value printed by a template must come from pysource: untrusted text never gets in raw.
    if isinstance(value, Source):
        return value
    raise TypeError(f"template printed a {type(value).__name__} that is not Source: {value!r}")


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_only_source,
        auto_reload=False,  # templates are part of the package: no stat() per module rendered
    )


def _statement(s: Statement) -> Source:
    if not _CALLEE.fullmatch(s.callee):
        raise ValueError(f"not a layer class: {s.callee!r}")
    args = [literal(a) for a in s.args] + [f"{k}={literal(v)}" for k, v in s.kwargs]
    inputs = ", ".join(s.inputs)
    if s.as_list:
        inputs = f"[{inputs}]"
    return wrap_call(f"{s.target} = {s.callee}(", args, f"({inputs})")


def chained(statements: list[Statement | str], kept: set[str]) -> list[Statement | str]:
    """The statements with ``x`` for every value that only the next statement reads, as Keras code is written.

    A value keeps its blob's variable when a later statement or the model (``kept``) reads it, and
    when the next statement joins it with other values (the branches of an Add stay named alike).
    """
    calls = [(i, s) for i, s in enumerate(statements) if isinstance(s, Statement)]
    readers: list[set[int]] = [set() for _ in calls]
    live: dict[str, int] = {}
    for k, (_, s) in enumerate(calls):
        for var in s.inputs:
            if var in live:
                readers[live[var]].add(k)
        live[s.target] = k
    external = {live[var] for var in kept if var in live}
    to_x = [
        r == {k + 1} and k not in external and set(calls[k + 1][1].inputs) == {s.target}
        for k, ((_, s), r) in enumerate(zip(calls, readers))
    ]
    out = list(statements)
    for k, (i, s) in enumerate(calls):
        previous = calls[k - 1][1].target if k and to_x[k - 1] else None
        inputs = tuple(CHAIN if var == previous else var for var in s.inputs)
        out[i] = dataclasses.replace(s, target=CHAIN if to_x[k] else s.target, inputs=inputs)
    return out


def _shape_doc(t: Translation) -> str:
    single = len(t.inputs) == 1
    what = "input_shape: (height, width, channels) of the input" if single else (
        "input_shapes: {input blob: (height, width, channels)}"
    )
    if any(d is None for i in t.inputs for d in i.shape[2:]):
        return f"{what}; height and width may be None (any size)."
    # Caffe sizes pooling windows, crops and flattened lengths from the input: the layers are Caffe's at this size.
    constant = "INPUT_SHAPE" if single else "INPUT_SHAPES"
    return (
        f"{what}. The layers compute what Caffe\n"
        f"    computes at {constant}; for another size, translate with --input-shape (or --fully-conv)."
    )


def present(t: Translation, npz_name: str) -> dict[str, Any]:
    """Every field the module template prints, already valid Python source."""
    body = []
    for s in chained(t.statements, {o.var for o in t.outputs}):
        # A comment goes on its own line above its statement, so black need not wrap the call.
        note = s if isinstance(s, str) else s.comment
        if note:
            body.append(Source(f"# {comment(note)}"))
        if isinstance(s, Statement):
            body.append(_statement(s))
    inputs = [
        {
            "name": string(i.blob),
            "keras_name": string(i.producer),
            "var": Source(i.var),
            "shape": literal(tuple(i.keras_shape[1:])),
            "caffe": comment("x".join("?" if d is None else str(d) for d in i.shape)),
            "shape_expr": Source("input_shape" if len(t.inputs) == 1 else f"input_shapes[{string(i.blob)}]"),
        }
        for i in t.inputs
    ]
    axes = [None if tensor.flat_of is not None else tensor.layout for tensor in t.blobs.values()]
    blobs = [
        {"name": string(name), "layer": string(tensor.producer), "axes": Source(NHWC) if a == NHWC_AXES else literal(a)}
        for (name, tensor), a in zip(t.blobs.items(), axes)
    ]
    outputs = [o.var for o in t.outputs]
    single = len(t.inputs) == 1
    model_name = string(Names(pattern=KERAS_NAME_BAD, prefix="net").clean(t.net_name))
    model_args = [
        t.inputs[0].var if single else f"[{', '.join(i.var for i in t.inputs)}]",
        outputs[0] if len(outputs) == 1 else f"[{', '.join(outputs)}]",
        f"name={model_name}",
    ]
    body.append(wrap_call("model = keras.Model(", model_args, ""))
    return {
        "net_name": docstring_text(t.net_name),
        "source_name": docstring_text(t.source_name),
        "sha256": Source(t.source_sha256),
        "version": Source(__version__),
        "npz_name": docstring_text(npz_name),
        "single_input": single,
        "inputs": inputs,
        "blobs": blobs,
        "nhwc": literal(NHWC_AXES) if NHWC_AXES in axes else None,
        "helpers": t.helpers,
        "stubs": [
            {
                "class_name": Source(name),
                "caffe_type": docstring_text(kind),
                # Each line ends the docstring line: a final quote meets no template quote.
                "params": Source("\n".join(f"        {docstring_text(line + ' ')[:-1]}" for line in params.splitlines())),
                "message": string(f"Caffe layer type {kind!r} is not translated: fill in {name}.call()"),
                "param_str": name in t.param_str_stubs,
            }
            for name, kind, params in t.stubs
        ],
        "custom_layers": {
            "file": comment(f"{t.custom_layers}.py"),
            "module": Source(t.custom_layers),
            "names": Source(", ".join(sorted(name for name, _, _ in t.stubs))),
        }
        if t.custom_layers and t.stubs
        else None,
        "shape_param": Source("input_shape=INPUT_SHAPE" if single else "input_shapes=INPUT_SHAPES"),
        "shape_doc": Source(_shape_doc(t)),
        "body": body,
        "model_name": model_name,
        "preprocess": preprocess_fields(t.preprocess),
        "training": training_fields(t.training),
        "frozen": [{"key": string(k), "why": string(v)} for k, v in t.frozen.items()],
    }


def black_mode(black):
    """The black settings every generated module is formatted with."""
    return black.Mode(target_versions={black.TargetVersion.PY310}, line_length=LINE_LENGTH)


def unformatted(t: Translation, npz_name: str, black, mode) -> str:
    """The rendered module before black: statements of build_model() pre-wrapped, each after a STATEMENT line."""
    fields = present(t, npz_name)
    fields["body"] = [Source(STATEMENT.lstrip() + "    " + line) for line in prewrap(fields["body"], black, mode)]
    return _environment().get_template("module.py.jinja").render(**fields)


def render(t: Translation, npz_name: str = "weights.npz", workers: int = 1) -> str:
    """The formatted module text for ``t``; ``workers=2`` formats it in two processes (see format_module)."""
    import black

    mode = black_mode(black)
    return format_module(unformatted(t, npz_name, black, mode), black, mode, workers)
