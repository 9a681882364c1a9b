"""How build_model() names values: ``x`` for a value only the next statement reads, the blob's name otherwise."""

from __future__ import annotations

from caffe2py.ir import Statement
from caffe2py.render import chained


def _call(target: str, *inputs: str) -> Statement:
    return Statement(target, "layers.ReLU", (), (("name", target),), inputs)


def test_only_a_value_that_the_next_statement_alone_reads_is_x():
    body = [_call("a", "data"), "a comment", _call("a", "a"), _call("b", "a"), _call("c", "a"), _call("d", "b", "c"), _call("e", "d")]
    out = chained(body, kept={"e"})
    assert out[1] == "a comment"
    calls = [s for s in out if isinstance(s, Statement)]
    # a: read twice, so named; b: read two lines on; c: joined with b; e: the model's output.
    assert [s.target for s in calls] == ["x", "a", "b", "c", "x", "e"]
    assert [s.inputs for s in calls] == [("data",), ("x",), ("a",), ("a",), ("b", "c"), ("x",)]


def test_a_model_output_keeps_its_name_even_when_read_next():
    out = chained([_call("a", "data"), _call("b", "a")], kept={"a", "b"})
    assert [(s.target, s.inputs) for s in out] == [("a", ("data",)), ("b", ("a",))]
