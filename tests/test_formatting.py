"""The shortcut that keeps black to one pass gives black's own output: lines pre-wrapped as black wraps them."""

from __future__ import annotations

import keyword

import black
from hypothesis import given, settings
from hypothesis import strategies as st

from caffe2py.formatting import LINE_LENGTH, prewrap, split_at_brackets, wrap_call
from caffe2py.pysource import Source
from caffe2py.render import black_mode

MODE = black_mode(black)
NAME = st.from_regex(r"[a-z][a-z0-9_]{0,40}", fullmatch=True).filter(lambda name: not keyword.iskeyword(name))
ARG = st.one_of(
    st.integers(0, 100000).map(str),
    NAME.map(lambda n: f'name="{n}"'),
    st.tuples(NAME, st.integers(0, 999)).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.lists(st.integers(1, 9), min_size=1, max_size=12).map(lambda v: f"pad=({', '.join(map(str, v))})"),
)


def _in_function(line: str) -> str:
    return f"def f():\n    {line}\n"


@settings(max_examples=400, deadline=None)
@given(target=NAME, callee=st.sampled_from(["layers.Conv2D", "layers.BatchNormalization", "CaffePooling2D"]),
       args=st.lists(ARG, max_size=8), inputs=st.lists(NAME, min_size=1, max_size=40), as_list=st.booleans())
def test_wrapped_calls_are_what_black_makes(target, callee, args, inputs, as_list):
    joined = ", ".join(inputs)
    call = f"([{joined}])" if as_list or len(inputs) > 1 else f"({joined})"
    line = wrap_call(f"{target} = {callee}(", args, call)
    one_line = f"{target} = {callee}({', '.join(args)}){call}"
    if line == one_line and len(line) + 4 > LINE_LENGTH:
        return  # left to black: no claim to check
    assert black.format_str(_in_function(one_line), mode=MODE) == _in_function(line)


def test_long_lines_left_to_black_come_back_formatted():
    long = Source("x = layers.Lambda(lambda t: t[..., 0:4] + t[..., 4:8] * t[..., 8:12], name=\"" + "n" * 40 + "\")(x)")
    body = [Source("# a comment line is never wrapped " + "c" * 80), long, Source("y = layers.ReLU(name=\"r\")(x)")]
    out = prewrap(body, black, MODE)
    assert out[0] == body[0] and out[2] == body[2]
    assert "\n" in out[1]
    assert black.format_str(_in_function(out[1]), mode=MODE) == _in_function(out[1])


@settings(max_examples=300, deadline=None)
@given(name=NAME, items=st.lists(NAME, min_size=2, max_size=30), kind=st.sampled_from(["def", "for", "assign", "return"]))
def test_split_lines_are_what_black_makes(name, items, kind):
    one_line = None
    if kind == "def":  # a block function's signature: the parameters on one line where they fit
        indent, head, tail, collection, body = "", f"def {name}(", "):", False, "    pass\n"
    elif kind == "for":  # a blob rule's loop over a tuple: one item a line
        indent, head, tail, collection, body = "", "for _name in (", "):  # fn", True, "    pass\n"
    elif kind == "assign":
        indent, head, tail, collection, body = "", f'BLOBS["{name}"] = (', ")", True, ""
    else:  # a block function returning several tensors: black parenthesizes the tuple
        indent, head, tail, collection, body = "    ", "return (", ")", True, ""
        one_line = f"    return {', '.join(items)}"
    one_line = one_line or f"{indent}{head}{', '.join(items)}{tail}"
    split = split_at_brackets(indent, head, items, tail, collection)
    if split == one_line or indent and len(one_line) <= LINE_LENGTH:
        return  # short enough: written on one line
    wrap = (lambda text: f"def f():\n{text}") if indent else (lambda text: text)
    assert black.format_str(wrap(f"{one_line}\n{body}"), mode=MODE) == wrap(f"{split}\n{body}")


def test_helper_templates_are_black_clean():
    # A helper black would change makes black format every module using it twice.
    from caffe2py.render import templates_dir

    for helper in sorted((templates_dir() / "helpers").glob("*.py.jinja")):
        text = helper.read_text()
        assert black.format_str(text, mode=MODE) == text, f"{helper.name} is not as black prints it"
