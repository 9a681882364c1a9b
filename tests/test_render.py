"""How build_model() names values (``x`` for a value only the next statement reads) and reads numbered names."""

from __future__ import annotations

from caffe2py.ir import Statement
from caffe2py.render import _names, _number_items, _numbered, _numbers, chained


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


def test_numbered_names_read_with_consecutive_numbers_where_they_can_be():
    assert _numbers(["conv1", "conv2", "conv3"]) == ("conv", [1, 2, 3], "")
    assert _numbered(["a12", "a22"]) == ("a", 1, "2")  # not 12 and 22
    assert _numbers(["a12", "a32"]) == ("a", [12, 32], "")  # no consecutive reading: the longest numbers
    assert _numbered(["11", "12"]) == ("", 11, "")  # the shortest prefix first
    assert _numbered(["18", "19", "110"]) == ("1", 8, "")
    assert _numbered(["x01", "x02"]) == ("x0", 1, "")  # a number has no leading zero: str() gives it back
    assert _numbers(["a", "b"]) is None and _numbered(["a1", "a3"]) is None


def test_runs_of_three_or_more_become_ranges():
    assert _number_items([1, 2, 3, 5, 6, 9]) == ["*range(1, 4)", "5", "6", "9"]
    assert _names(["a", "b1", "b2", "b3", "c", "d1", "d2"]) == [
        '"a"', '*(f"b{_i}" for _i in range(1, 4))', '"c"', '"d1"', '"d2"'
    ]
