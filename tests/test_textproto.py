"""The plain-text reader gives text_format's message whenever it reads a text, and leaves the rest to it."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import given, settings
from hypothesis import strategies as st

from caffe2py import schema
from caffe2py.textproto import parse_plain

TESTS = Path(__file__).resolve().parent
CORPUS = TESTS.parents[1] / "shared" / "corpus"
PROTOTXTS = sorted(TESTS.rglob("*.prototxt")) + (sorted(CORPUS.rglob("*.prototxt")) if CORPUS.is_dir() else [])


def _protobuf(text: str):
    """text_format's NetParameter for ``text``, or None where it refuses the text."""
    net = schema.NetParameter()
    try:
        text_format.Parse(text, net)
    except text_format.ParseError:
        return None
    return net


def _same(text: str, expected) -> bool:
    """True if the plain reader read ``text`` as protobuf did (``expected``), False if it left it."""
    net = schema.NetParameter()
    if not parse_plain(text, net):
        return False
    assert expected is not None, f"read a text protobuf refuses:\n{text}"
    assert net.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True), text
    return True


def test_prototxts_read_as_protobuf_reads_them():
    assert len(PROTOTXTS) > 30
    for path in PROTOTXTS:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        expected = _protobuf(text)
        read = _same(text, expected)
        # Plain text must take the fast path: only escapes in strings (FCN's param_str) need protobuf's.
        assert read or expected is None or "\\" in text, path


@pytest.mark.parametrize(
    "text",
    [
        'name: "a" name: "b"',  # a singular field twice
        "layer { name: 'a' } force_backward: true force_backward: false",
        "layer { convolution_param { num_output: 4294967296 } }",  # past uint32
        "layer { convolution_param { axis: 2147483648 } }",  # past int32
        "layer { convolution_param { num_output: -1 } }",  # uint32
        "layer { convolution_param { num_output: 0x10 } }",
        "layer { convolution_param { num_output: 010 } }",
        "layer { convolution_param { num_output: 1.5 } }",
        "layer { dropout_param { dropout_ratio: 01.5 } }",
        "layer { dropout_param { dropout_ratio: 0.5f } }",
        "layer { dropout_param { dropout_ratio: nan } }",
        "layer { pooling_param { pool: MEDIAN } }",
        "layer { pooling_param { pool: 7 } }",
        "layer { name: \"a\\tb\" }",  # an escape
        "layer { name: \"a\" \"b\" }",  # adjacent literals
        'layer { name: "unterminated }',
        "layer < name: 'a' >",
        "layer { bottom: ['a', 'b'] }",
        "layer { bottom: 'a',, }",
        "layer { colour: 'blue' }",
        "layer { name: 'a' } }",
        "layer { name: 'a'",
        "layer: 'a'",
        "name { }",
        "[caffe.ext]: 1",
        "name:\u00a0'a'",  # a blank text_format takes and this reader does not
    ],
)
def test_anything_else_is_left_to_protobuf(text):
    assert not parse_plain(text, schema.NetParameter())


def test_plain_forms_read_as_protobuf_reads_them():
    text = (
        "name: 'net' # comment\n layer { name: \"c\", type: 'Convolution'; bottom: 'x' bottom: 'y'\r\n"
        " convolution_param: { num_output: 0 kernel_size: 3 kernel_size: 1 bias_term: f }\n"
        " param { lr_mult: .5 } param { lr_mult: 1e-3 decay_mult: 5. } include { phase: TRAIN } }\n"
        "layer { pooling_param { pool: 1 } dropout_param { dropout_ratio: -0 } } input_dim: -0 force_backward: True"
    )
    assert _same(text, _protobuf(text))


# Values for each kind of field, mostly ones protobuf takes, and text of every kind to put anywhere.
_FD = FieldDescriptor
INTEGERS = ["0", "1", "7", "-1", "-0", "2147483647", "2147483648", "4294967295", "4294967296", "01", "0x10", "+1"]
FLOATS = ["0.5", ".5", "-.5", "5.", "1e-3", "1E+2", "3", "-0", "1e400", "01.5", "1.5f", "inf", "nan", "1.5e"]
BOOLS = ["true", "false", "t", "f", "True", "False", "1", "0", "TRUE"]
STRINGS = ['"a"', "'b'", '"x # y"', '"é"', '""', '"a\\n"', '"a" "b"', "'"]
POOLS = {_FD.CPPTYPE_FLOAT: FLOATS, _FD.CPPTYPE_DOUBLE: FLOATS, _FD.CPPTYPE_BOOL: BOOLS, _FD.CPPTYPE_STRING: STRINGS}
ANYTHING = INTEGERS + FLOATS + BOOLS + STRINGS + ["MAX", "MAXX", "[1, 2]", "{", "}", "<", ":"]
BLANKS = [" ", " ", " ", "\n", "\t", " # note\n", "\r\n", "\f", "\u00a0", ""]
SEPARATORS = ["", "", "", ",", ";", ", ;"]


def _field_text(data, descriptor, depth: int, clean: bool) -> str:
    """One field of ``descriptor`` written at random; ``clean``: in text protobuf takes, mostly."""
    pick = data.draw(st.integers(5 if clean else 0, 19))
    if pick == 0:
        name = data.draw(st.sampled_from(["colour", "Layer", "num-output", "12", "[x]"]))
        field = None
    else:
        field = data.draw(st.sampled_from(list(descriptor.fields)))
        name = field.name
    blank = data.draw(st.sampled_from(BLANKS[:6] if clean else BLANKS))
    separator = data.draw(st.sampled_from(SEPARATORS[:5] if clean else SEPARATORS))
    if field is not None and field.type == _FD.TYPE_MESSAGE and (depth < 3 or pick == 1):
        colon = data.draw(st.sampled_from(["", "", ":"]))
        inner = "".join(_field_text(data, field.message_type, depth + 1, clean) for _ in range(data.draw(st.integers(0, 3))))
        close = "" if pick == 2 else "}"
        return f"{name}{colon}{blank}{{{inner}{close}{separator} "
    if field is None or pick == 3:
        pool = ANYTHING
    elif field.type == _FD.TYPE_ENUM:
        pool = [v.name for v in field.enum_type.values] + [str(v.number) for v in field.enum_type.values] + ["MAXX", "99"]
    else:
        pool = POOLS.get(field.cpp_type, INTEGERS)
    value = data.draw(st.sampled_from(pool[:6] if clean else pool))
    colon = "" if pick == 4 else ":"
    return f"{name}{colon}{blank}{value}{separator}{data.draw(st.sampled_from(BLANKS[:6] if clean else BLANKS))}"


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_random_texts_read_as_protobuf_reads_them(data):
    count, clean = data.draw(st.integers(0, 4)), data.draw(st.booleans())
    text = "".join(_field_text(data, schema.NetParameter.DESCRIPTOR, 0, clean) for _ in range(count))
    _same(text, _protobuf(text))
