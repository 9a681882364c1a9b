"""Turn a Translation into module text: present every value as Source, render the template, run black."""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from translator import __version__
from translator.ir import Statement, Translation
from translator.preprocess import present as preprocess_fields
from translator.pysource import KERAS_NAME_BAD, Names, Source, comment, docstring_text, literal, string

_CALLEE = re.compile(r"(layers\.)?[A-Z][A-Za-z0-9_]*")


def templates_dir() -> Path:
    """``templates/`` of a checkout, or the copy installed inside the package."""
    checkout = Path(__file__).resolve().parent.parent / "templates"
    if (checkout / "module.py.jinja").is_file():
        return checkout
    return Path(str(resources.files("translator") / "templates"))


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
    return Source(f"{s.target} = {s.callee}({', '.join(args)})({inputs})")


def present(t: Translation, npz_name: str) -> dict[str, Any]:
    """Every field the module template prints, already valid Python source."""
    body = []
    for s in t.statements:
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
    blobs = [
        {
            "name": string(name),
            "layer": string(tensor.producer),
            "axes": literal(None if tensor.flat_of is not None else tensor.layout),
        }
        for name, tensor in t.blobs.items()
    ]
    outputs = [o.var for o in t.outputs]
    single = len(t.inputs) == 1
    model_name = Names(pattern=KERAS_NAME_BAD, prefix="net").clean(t.net_name)
    return {
        "net_name": docstring_text(t.net_name),
        "source_name": docstring_text(t.source_name),
        "sha256": Source(t.source_sha256),
        "version": Source(__version__),
        "npz_name": docstring_text(npz_name),
        "single_input": single,
        "inputs": inputs,
        "blobs": blobs,
        "helpers": t.helpers,
        "stubs": [
            {
                "class_name": Source(name),
                "caffe_type": docstring_text(kind),
                # Each line ends the docstring line: a final quote meets no template quote.
                "params": Source("\n".join(f"        {docstring_text(line + ' ')[:-1]}" for line in params.splitlines())),
                "message": string(f"Caffe layer type {kind!r} is not translated: fill in {name}.call()"),
            }
            for name, kind, params in t.stubs
        ],
        "shape_param": Source("input_shape=INPUT_SHAPE" if single else "input_shapes=INPUT_SHAPES"),
        "shape_doc": Source(
            "input_shape: (height, width, channels) of the input; None for a free size."
            if single
            else "input_shapes: {input blob: (height, width, channels)}; None for a free size."
        ),
        "body": body,
        "model_inputs": Source(t.inputs[0].var if single else f"[{', '.join(i.var for i in t.inputs)}]"),
        "model_outputs": Source(outputs[0] if len(outputs) == 1 else f"[{', '.join(outputs)}]"),
        "model_name": string(model_name),
        "preprocess": preprocess_fields(t.preprocess),
    }


def render(t: Translation, npz_name: str = "weights.npz") -> str:
    """The formatted module text for ``t``."""
    import black

    text = _environment().get_template("module.py.jinja").render(**present(t, npz_name))
    return black.format_str(text, mode=black.Mode(target_versions={black.TargetVersion.PY310}))
