"""Protobuf text format's plain subset read in one pass; anything else is left to protobuf's text_format.

protobuf's text parser is pure Python and the slowest step of a translation. Nearly every prototxt
uses only ``name: value`` and ``name { ... }`` with decimal numbers, enum names and strings without
escapes; ``parse_plain`` reads exactly that into a message as ``text_format.Parse`` would, and gives
up (returns False) at anything else: other syntax, an unknown field, a value text_format would
refuse or read otherwise, a field given twice where one is allowed. The caller then parses with
text_format, whose errors (and line numbers) are the ones users see.
"""

from __future__ import annotations

import functools
import re

from google.protobuf.descriptor import FieldDescriptor

from . import schema

# Blanks and comments, skipped, then one of text_format's tokens (strings only without escapes), any
# other character (which stops the reader), or the end. The group after the blanks always matches, so the
# blanks are never backtracked into (Python 3.10, which the package supports, has no possessive `*+`).
_TOKEN = re.compile(
    r"""(?:[ \t\n\r\f\v]+|#[^\n]*)*"""
    r"""(?:("[^"\\\n]*"|'[^'\\\n]*'|[a-zA-Z_][0-9a-zA-Z_+-]*|(?:[0-9+-]|\.[0-9])[0-9a-zA-Z_.+-]*|[{}:,;])|(.)|\Z)""",
    re.DOTALL,
)
_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")
# Python's float() reads these as text_format's ParseFloat does (no octal-looking "01.5", no "1f").
_FLOAT = re.compile(r"-?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_BOOLS = {"true": True, "t": True, "1": True, "True": True, "false": False, "f": False, "0": False, "False": False}
_MAX_DEPTH = 50  # nets nest a few levels; deeper text is left to text_format
_FD = FieldDescriptor
_RANGES = {
    **dict.fromkeys((_FD.TYPE_INT32, _FD.TYPE_SINT32, _FD.TYPE_SFIXED32), (-(2**31), 2**31 - 1)),
    **dict.fromkeys((_FD.TYPE_INT64, _FD.TYPE_SINT64, _FD.TYPE_SFIXED64), (-(2**63), 2**63 - 1)),
    **dict.fromkeys((_FD.TYPE_UINT32, _FD.TYPE_FIXED32), (0, 2**32 - 1)),
    **dict.fromkeys((_FD.TYPE_UINT64, _FD.TYPE_FIXED64), (0, 2**64 - 1)),
}


def parse_plain(text: str, message) -> bool:
    """Read ``text`` into the empty ``message`` if it is plain; False (message half-filled) if not."""
    # Any other character is an empty token here, and the text is not plain.
    tokens = [token for token, other in _TOKEN.findall(text) if token or other]
    if "" in tokens:
        return False
    tokens += ["", ""]  # the end
    stack = []
    fields = _fields(message.DESCRIPTOR)
    i = 0
    while tokens[i]:
        token = tokens[i]
        if token == "}":
            if not stack:
                return False
            message, fields = stack.pop()
            i += 1
        else:
            field = fields.get(token)
            if field is None:
                return False
            name, repeated, kind = field
            i += 1
            if kind is None:  # a message
                if tokens[i] == ":":
                    i += 1
                if tokens[i] != "{" or len(stack) == _MAX_DEPTH:
                    return False
                i += 1
                if repeated:
                    inner = getattr(message, name).add()
                elif message.HasField(name):
                    return False
                else:
                    inner = getattr(message, name)
                    inner.SetInParent()
                stack.append((message, fields))
                message, fields = inner, _fields(inner.DESCRIPTOR)
                continue
            if tokens[i] != ":":
                return False
            value = _value(kind, tokens[i + 1], tokens[i + 2])
            if value is None:
                return False
            i += 2
            if repeated:
                getattr(message, name).append(value)
            elif message.HasField(name):
                return False
            else:
                setattr(message, name, value)
        if tokens[i] in (",", ";"):
            i += 1
    return not stack


def _value(kind, token: str, after: str):
    """The value of a scalar field of ``kind`` written ``token``; None where text_format must decide."""
    if kind == "string":
        # Adjacent literals are one value: left to text_format.
        return token[1:-1] if token[:1] in ("'", '"') and after[:1] not in ("'", '"') else None
    if kind == "float":
        return float(token) if _FLOAT.fullmatch(token) else None
    if kind == "bool":
        return _BOOLS.get(token)
    if isinstance(kind, dict):  # an enum: its values by name and number
        return kind.get(token)
    low, high = kind
    if _INTEGER.fullmatch(token) and low <= int(token) <= high:
        return int(token)
    return None


@functools.cache
def _fields(descriptor) -> dict[str, tuple[str, bool, object]]:
    """The fields this reader handles, by name: (name, repeated, kind); kind None for a message."""
    out = {}
    for field in descriptor.fields:
        # caffe.proto is proto2: every singular field has presence (a second value is an error) and
        # every enum is closed (a number is read as a value only if the enum has it).
        if field.containing_oneof is not None:
            continue
        if field.type == _FD.TYPE_MESSAGE:
            kind = None
        elif field.type == _FD.TYPE_STRING:
            kind = "string"
        elif field.type in (_FD.TYPE_FLOAT, _FD.TYPE_DOUBLE):
            kind = "float"
        elif field.type == _FD.TYPE_BOOL:
            kind = "bool"
        elif field.type == _FD.TYPE_ENUM:
            values = field.enum_type.values
            kind = {value.name: value.number for value in values} | {str(value.number): value.number for value in values}
        elif field.type in _RANGES:
            kind = _RANGES[field.type]
        else:  # bytes, groups
            continue
        out[field.name] = (field.name, schema.is_repeated(field), kind)
    return out
