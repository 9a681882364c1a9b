"""Turn a Translation into module text: present every value as Source, render the template, run black."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import textwrap
from collections import Counter
from collections.abc import Callable, Iterator
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from .blocks import Block, blob_rules, fold
from .formatting import LINE_LENGTH, prewrap, split_at_brackets, wrap_call
from .ir import Statement, Translation, channels_last
from .preprocess import present as preprocess_fields
from .pysource import (
    CHAIN,
    GUARD,
    KERAS_NAME_BAD,
    MODULE_NAMES,
    NHWC,
    Names,
    Source,
    Template,
    comment,
    docstring_text,
    fstring,
    literal,
    string,
)
from .solver import present as training_fields
from .version import __version__

NHWC_AXES = channels_last(4)
# A Python layer's stub or custom class keeps its author's name, which need not be capitalised.
_CALLEE = re.compile(r"(layers\.)?[A-Za-z_][A-Za-z0-9_]*")
_FUNCTION = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
BLOB_NAME, BLOB_INDEX = "_name", "_i"  # the module-level loop variables that fill BLOBS from the rules
_DIGITS = re.compile(r"0|[1-9][0-9]*")


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


# Helpers that make layers inside build_model(): they are not part of a saved model, so not registered.
BUILDERS = frozenset({"grouped_conv"})


@lru_cache(maxsize=64)
def helper_text(name: str) -> str:
    """The source of helper template ``name``."""
    return (templates_dir() / "helpers" / f"{name}.py.jinja").read_text()


def package_name(t: Translation) -> str:
    """The package the module registers its helpers under: one per net and version of the helpers' code.

    Keras finds a saved model's classes by ``package>name`` in one registry per process; modules of
    two nets, or of one net by two caffe2py versions whose helpers differ, must not take each other's.
    """
    digest = hashlib.sha256(t.source_sha256.encode())
    for helper in t.helpers:
        digest.update(helper_text(helper).encode())
    return f"caffe2py_{Names(prefix='net').clean(t.net_name)[:40]}_{digest.hexdigest()[:8]}"


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
    if s.inline:
        if not _FUNCTION.fullmatch(s.callee):
            raise ValueError(f"not a function of the module: {s.callee!r}")
        args = list(s.inputs) + [literal(a) for a in s.args] + [f"{k}={literal(v)}" for k, v in s.kwargs]
        return wrap_call(f"{s.target} = {s.callee}(", args, "")
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
        for target in s.target.split(", "):
            live[target] = k
    external = {live[var] for var in kept if var in live}
    to_x = [
        r == {k + 1} and k not in external and set(calls[k + 1][1].inputs) == {s.target} and ", " not in s.target
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
    # A 5-D clip (C3D's N x C x L x H x W) has its length first.
    axes = "length, height, width, channels" if all(len(i.shape) == 5 for i in t.inputs) else "height, width, channels"
    what = f"input_shape: ({axes}) of the input" if single else f"input_shapes: {{input blob: ({axes})}}"
    if any(d is None for i in t.inputs for d in i.shape[2:]):
        return f"{what}; height and width may be None (any size)."
    if not _guarded(t):
        return f"{what}; any size Caffe can run\n    the net at, or None for height and width."
    # Caffe sizes InnerProduct weights and fixed reshapes from the input: those layers are Caffe's only at that size.
    constant = "INPUT_SHAPE" if single else "INPUT_SHAPES"
    return (
        f"{what}. Any size that gives the\n"
        f"    layers whose weights fix their input (InnerProduct, ...) the input they have at {constant};\n"
        "    another raises ValueError naming the layer (translate with --input-shape, or --fully-conv)."
    )


def _guarded(t: Translation) -> bool:
    return any(isinstance(s, Statement) and s.callee == GUARD for s in t.statements)


def _lines(statements: list[Statement | str], kept: set[str]) -> list[Source]:
    """Statements (after ``chained``) as lines; a run of calls of one block function becomes a loop."""
    variables = {v for s in statements if isinstance(s, Statement) for v in (*s.target.split(", "), *s.inputs)}
    names = Names(reserved=MODULE_NAMES | variables | {"name"})
    loop_vars = (names.new("i"), names.new("part"))
    reads = Counter(v for s in statements if isinstance(s, Statement) for v in s.inputs)
    reads.update(kept)
    body: list[Source] = []
    k = 0
    while k < len(statements):
        s = statements[k]
        run = _loop_run(statements, k)
        if len(run) >= 2:
            body.append(_loop(run, *loop_vars))
            k += len(run)
            continue
        run = _chain_run(statements, k, reads)
        if len(run) >= 3:
            # Each call reads what the one before it returned: one set of variables carries them.
            carried = run[-1].target
            if tuple(carried.split(", ")) != run[0].inputs:
                body.append(Source(f"{carried} = {', '.join(run[0].inputs)}"))
            first = dataclasses.replace(run[0], target=carried, inputs=tuple(carried.split(", ")))
            body.append(_loop([first, *run[1:]], *loop_vars))
            k += len(run)
            continue
        # A comment goes on its own line above its statement, so black need not wrap the call.
        note = s if isinstance(s, str) else s.comment
        if note:
            body.append(Source(f"# {comment(note)}"))
        if isinstance(s, Statement):
            body.append(_statement(s))
        k += 1
    return body


def _chain_run(statements: list[Statement | str], k: int, reads: Counter) -> list[Statement]:
    """The calls from ``k`` on, each reading exactly the values the one before returned, and nothing else them."""
    run: list[Statement] = []
    for s in statements[k:]:
        if not (isinstance(s, Statement) and s.inline) or s.comment:
            break
        if run:
            before = run[-1]
            targets = before.target.split(", ")
            if (s.callee, s.args, s.kwargs[:-1]) != (before.callee, before.args, before.kwargs[:-1]):
                break
            if s.inputs != tuple(targets) or any(reads[t] != 1 for t in targets):
                break
        elif len(s.inputs) != len(s.target.split(", ")) or len(set(s.inputs)) != len(s.inputs):
            break
        run.append(s)
    return run


def _loop_run(statements: list[Statement | str], k: int) -> list[Statement]:
    """The calls from ``k`` on that read and write ``x`` and differ in their ``name`` alone."""
    run: list[Statement] = []
    for s in statements[k:]:
        if not (isinstance(s, Statement) and s.inline and s.target == CHAIN and set(s.inputs) == {CHAIN}) or s.comment:
            break
        if run and (s.callee, s.args, s.kwargs[:-1]) != (run[0].callee, run[0].args, run[0].kwargs[:-1]):
            break
        run.append(s)
    return run


def _loop(run: list[Statement], number: str, part: str) -> Source:
    names = [s.kwargs[-1][1] for s in run]
    if all(isinstance(n, str) for n in names):
        texts, lead = names, ()
    elif all(isinstance(n, Template) and n.pieces[:-1] == names[0].pieces[:-1] for n in names):
        texts, lead = [n.pieces[-1] for n in names], names[0].pieces[:-1]
    else:
        texts, lead = None, ()
    numbers = _numbered(texts) if texts else None
    if numbers is not None:
        prefix, first, suffix = numbers
        head = f"for {number} in range({first}, {first + len(names)}):"
        name = fstring(*lead, prefix, number, suffix) if lead else _numbered_name(prefix, number, suffix)
    else:
        head = f"for {part} in {literal(tuple(names))}:"
        name = Source(part)
    call = _statement(dataclasses.replace(run[0], kwargs=(*run[0].kwargs[:-1], ("name", name))))
    return Source(head + "\n        " + call.replace("\n", "\n    "))


def _numbered_name(prefix: str, var: str, suffix: str) -> Source:
    """The string ``prefix + str(var) + suffix``; ``var`` may hold an int."""
    return fstring(prefix, var, suffix) if prefix or suffix else Source(f"str({var})")


def _numbered(parts: list[str]) -> tuple[str, int, str] | None:
    """``(prefix, first, suffix)`` when the parts are prefix + consecutive integers + suffix."""
    reading = _numbers(parts)
    if reading is None or not _consecutive(reading[1]):
        return None
    prefix, numbers, suffix = reading
    return prefix, numbers[0], suffix


def _numbers(parts: list[str]) -> tuple[str, list[int], str] | None:
    """``(prefix, numbers, suffix)`` when every part is prefix + an integer + suffix, consecutive ones if they can be."""
    readings = _readings(parts)
    first = next(readings, None)
    if first is None or _consecutive(first[1]):
        return first
    return next((r for r in readings if _consecutive(r[1])), first)


def _readings(parts: list[str]) -> Iterator[tuple[str, list[int], str]]:
    """Each way to read every part as prefix + a distinct integer + suffix: shortest prefix, then longest integer, first."""
    head = parts[0]
    for cut in range(len(head)):
        prefix = head[:cut]
        if not all(p.startswith(prefix) for p in parts):
            return
        for end in range(len(head), cut, -1):
            if not _DIGITS.fullmatch(head, cut, end):
                continue
            suffix = head[end:]
            middles = [p[cut : len(p) - len(suffix)] for p in parts]
            if all(p.endswith(suffix) and _DIGITS.fullmatch(m) for p, m in zip(parts, middles)):
                numbers = [int(m) for m in middles]
                if len(set(numbers)) == len(numbers):
                    yield prefix, numbers, suffix


def _consecutive(numbers: list[int]) -> bool:
    return numbers == list(range(numbers[0], numbers[0] + len(numbers)))


def _runs(items: list, consecutive: Callable[[list], bool]) -> Iterator[list]:
    """The items in order, one at a time but for each longest run of three or more that is ``consecutive``."""
    k = 0
    while k < len(items):
        end = k + 1
        while end < len(items) and consecutive(items[k : end + 1]):
            end += 1
        if end - k < 3:
            end = k + 1
        yield items[k:end]
        k = end


def _number_items(numbers: list[int]) -> list[str]:
    """``numbers`` as tuple items, each run of three or more consecutive ones as ``*range(a, b)``."""
    return [f"*range({run[0]}, {run[-1] + 1})" if len(run) >= 3 else str(run[0]) for run in _runs(numbers, _consecutive)]


def _block(block: Block) -> dict[str, Any]:
    params = [*block.tensors, *block.values, "name"]
    statements = chained(list(block.body), set(block.returns))
    returns = ", ".join(block.returns)
    if statements[-1].target == returns and ", " not in returns:  # read by nothing but the return
        statements[-1] = dataclasses.replace(statements[-1], target=CHAIN)
        returns = CHAIN
    body = _lines(statements, {returns})
    if ", " in returns and len(f"    return {returns}") > LINE_LENGTH:  # black parenthesizes the tuple
        returns = split_at_brackets("    ", "return (", list(block.returns), ")", collection=True)[len("    return ") :]
    return {
        "signature": Source(split_at_brackets("", f"def {block.fn}(", params, "):", collection=False)),
        "doc": docstring_text(block.doc),
        "body": body,
        "returns": Source(returns),
    }


def _names(parts: list[str]) -> list[str]:
    """The items of a tuple of ``parts``, each run of three or more numbered alike written as a range."""
    items = []
    for run in _runs(parts, lambda run: _numbered(run) is not None):
        numbered = _numbered(run) if len(run) >= 3 else None
        if numbered is None:
            items.append(literal(run[0]))
            continue
        prefix, first, suffix = numbered
        name = _numbered_name(prefix, BLOB_INDEX, suffix)
        items.append(f"*({name} for {BLOB_INDEX} in range({first}, {first + len(run)}))")
    return items


def _axes(axes) -> Source:
    return Source(NHWC) if axes == NHWC_AXES else literal(axes)


def _blob_rule(block: Block, entries) -> dict[str, Any]:
    """A loop over the names ``block`` is called with, setting the BLOBS entries of each."""
    reading = _numbers(list(block.parts))
    if reading is not None:
        prefix, numbers, suffix = reading
        if _consecutive(numbers):
            head = f"for {BLOB_INDEX} in range({numbers[0]}, {numbers[-1] + 1}):  # {block.fn}"
        else:
            items = _number_items(numbers)
            head = split_at_brackets("", f"for {BLOB_INDEX} in (", items, f"):  # {block.fn}", collection=True)
        around = (prefix, BLOB_INDEX, suffix)
    else:
        names = _names(list(block.parts))
        if len(names) == 1:
            head = f"for {BLOB_NAME} in ({names[0]},):  # {block.fn}"
        else:
            head = split_at_brackets("", f"for {BLOB_NAME} in (", names, f"):  # {block.fn}", collection=True)
        around = ("", BLOB_NAME, "")
    lines = []
    for bp, bs, lp, ls, axes in entries:
        blob = _numbered_name(bp + around[0], around[1], around[2] + bs)
        layer = _numbered_name(lp + around[0], around[1], around[2] + ls)
        lines.append(Source(split_at_brackets("    ", f"BLOBS[{blob}] = (", [layer, _axes(axes)], ")", collection=True)[4:]))
    return {"head": Source(head), "lines": lines}


def _folded_doc(t: Translation) -> Source | None:
    """What the inference rendering left out, for the module's docstring (None when it changed nothing)."""
    if not t.folded:
        return None
    counts = Counter(kind for kind, _ in t.folded)
    folded = [f"{n} {kind}" for kind, n in counts.items() if kind != "Dropout"]
    parts = []
    if folded:
        parts.append(
            f"{' and '.join(folded)} layer(s) are folded into the kernel and bias of the convolution or"
            " InnerProduct before them (BLOBS lacks any blob that only held a folded layer's input)"
        )
    if "Dropout" in counts:
        parts.append(f"{counts['Dropout']} Dropout layer(s) (the identity at inference) are removed")
    text = f"Inference rendering (--inference): {'; '.join(parts)}. To fine-tune, translate without --inference."
    return Source("\n".join(textwrap.wrap(docstring_text(text), 100)))


def present(t: Translation, npz_name: str) -> dict[str, Any]:
    """Every field the module template prints, already valid Python source."""
    kept = {o.var for o in t.outputs}
    statements, blocks = t.statements, []
    if not t.flat:
        reserved = MODULE_NAMES | helper_names() | {s[0] for s in t.stubs} | {i.var for i in t.inputs}
        statements, blocks = fold(t.statements, kept, reserved)
    body = _lines(chained(list(statements), kept), kept)
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
    listed, rules = blob_rules([(b, tensor.producer, a) for (b, tensor), a in zip(t.blobs.items(), axes)], blocks)
    blobs = [{"name": string(name), "layer": string(layer), "axes": _axes(a)} for name, layer, a in listed]
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
        "folded": _folded_doc(t),
        "single_input": single,
        "inputs": inputs,
        "blobs": blobs,
        "blob_rules": [_blob_rule(block, entries) for block, entries in rules],
        "nhwc": literal(NHWC_AXES) if NHWC_AXES in axes else None,
        "helpers": [{"name": h, "registered": h not in BUILDERS} for h in t.helpers],
        "uses_ops": any("ops." in helper_text(h) for h in t.helpers),
        "registered": bool(set(t.helpers) - BUILDERS or (t.stubs and not t.custom_layers)),
        "package": string(package_name(t)),
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
        "guarded": _guarded(t),
        "body": body,
        "blocks": [_block(b) for b in reversed(blocks)],
        "model_name": model_name,
        "preprocess": preprocess_fields(t.preprocess),
        "training": training_fields(t.training),
        "frozen": [{"key": string(k), "why": string(v)} for k, v in t.frozen.items()],
    }


def black_mode(black):
    """The black settings every generated module is formatted with."""
    return black.Mode(target_versions={black.TargetVersion.PY310}, line_length=LINE_LENGTH)


def unformatted(t: Translation, npz_name: str, black, mode) -> str:
    """The rendered module before black, its lines already wrapped as black wraps them."""
    fields = present(t, npz_name)
    fields["body"] = prewrap(fields["body"], black, mode)
    return _environment().get_template("module.py.jinja").render(**fields)


def render(t: Translation, npz_name: str = "weights.npz") -> str:
    """The formatted module text for ``t``: black's, in one pass (black stops after a pass that changes nothing)."""
    import black

    mode = black_mode(black)
    return black.format_str(unformatted(t, npz_name, black, mode), mode=mode)
