"""Read a prototxt into a current-format NetParameter, with errors that point at file:line."""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from google.protobuf import text_format

from . import schema
from .errors import TranslationError
from .textproto import parse_plain
from .upgrade import upgrade_net


@dataclass(frozen=True)
class UnknownField:
    """A field the schema does not know, skipped by the parser and kept here so it is never lost."""

    line: int
    layer: int | None  # index of the top-level layer block it is in; None outside any layer
    path: str  # dotted from the layer (or the net): "lstm_param", "convolution_param.hole"
    text: str  # the field as written, value included
    layer_name: str | None = None  # filled in once the layer is known
    layer_type: str | None = None

    def describe(self) -> str:
        """``line 12: layer 'lstm1' (Lstm): unknown field 'lstm_param'``, for error lists."""
        where = f"layer {self.layer_name!r} ({self.layer_type}): " if self.layer_name is not None else ""
        return f"line {self.line}: {where}unknown field {self.path!r}"


@dataclass(frozen=True)
class ParsedNet:
    """A parsed net, plus the line on which each of its layers starts."""

    net: object  # caffe.NetParameter, current format
    path: str
    data: bytes
    layer_lines: tuple[int, ...]
    unknown_fields: tuple[UnknownField, ...] = ()

    def field_line(self, layer: int, path: str) -> int | None:
        """The line on which layer ``layer`` first sets the field at ``path`` ("convolution_param.kernel_depth")."""
        return self._field_lines.get((layer, path))

    @cached_property
    def _field_lines(self) -> dict[tuple[int, str], int]:
        # Scanned only when asked for: no field's line is needed unless a field is reported.
        return _FieldScanner(self.data.decode("utf-8"), schema.NetParameter.DESCRIPTOR).lines


def read_prototxt(path: str | Path, display: str | None = None) -> ParsedNet:
    """Parse ``path`` as a text NetParameter, upgrading V0/V1 nets to the current form."""
    shown = display or str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TranslationError(f"cannot read: {exc.strerror}", path=shown) from None
    if b"\0" in data[:4096]:
        raise TranslationError("binary data, not a text prototxt (is it a caffemodel?)", path=shown, line=1)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise TranslationError(f"not UTF-8 text (byte {exc.start})", path=shown, line=line) from None
    net = schema.NetParameter()
    unknown: tuple[UnknownField, ...] = ()
    if not parse_plain(text, net):
        net, unknown = _parse_text(text, shown)
    lines = _layer_lines(text, "layers" if len(net.layers) else "layer")
    net = upgrade_net(net, shown)
    return ParsedNet(net=net, path=shown, data=data, layer_lines=lines, unknown_fields=unknown)


def _parse_text(text: str, shown: str) -> tuple[object, tuple[UnknownField, ...]]:
    """``text`` read by protobuf's text_format, and the fields the schema does not know."""
    net = schema.NetParameter()
    unknown: tuple[UnknownField, ...] = ()
    try:
        # Parse, not Merge: like Caffe's TextFormat::Parse, a field given twice where one is allowed is an error.
        text_format.Parse(text, net)
    except text_format.ParseError as exc:
        # Forks add fields: parse again without them, so that every unknown field (and layer type)
        # is reported at once, or handled as the options say, instead of the first one stopping here.
        # Text that fails even so is no prototxt with extra fields: the first error describes it.
        if "has no field named" not in str(exc):
            raise syntax_error(exc, text, shown) from None
        net = schema.NetParameter()
        try:
            text_format.Parse(text, net, allow_unknown_field=True)
        except text_format.ParseError as other:
            # Past the unknown field, the text has an error of its own: that one is the problem.
            # On the field's own line (prose parsed as fields), the unknown name says it better.
            raise syntax_error(other if other.GetLine() > exc.GetLine() else exc, text, shown) from None
        unknown = tuple(_FieldScanner(text, net.DESCRIPTOR).unknown)
    return net, unknown


def syntax_error(exc: text_format.ParseError, text: str, shown: str) -> TranslationError:
    message = re.sub(r"^\d+(:\d+)? : ", "", str(exc))
    line, column = exc.GetLine(), exc.GetColumn()
    # Protobuf quotes the whole offending line before some messages; file:line says where already.
    lines = text.split("\n")
    if line and line <= len(lines):
        message = message.removeprefix(f"'{lines[line - 1]}': ")
    where = f"column {column}: " if column else ""
    return TranslationError(f"{where}{message}", path=shown, line=line)


# What can hide a bracket or a field name (comments, quoted strings), the brackets, and the field names.
_SCAN = re.compile(r"""#[^\n]*|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|[{}<>]|\blayers?\b""")


def _layer_lines(text: str, field: str) -> tuple[int, ...]:
    """Line numbers of the top-level ``field { ... }`` blocks, in order (the i-th is net.layer[i]).

    The text has parsed, so a field name outside any block starts one of the net's own fields.
    """
    lines: list[int] = []
    depth, line, counted = 0, 1, 0
    for match in _SCAN.finditer(text):
        token = match.group()
        if token in ("{", "<"):
            depth += 1
        elif token in ("}", ">"):
            depth -= 1
        elif depth == 0 and token == field:
            line += text.count("\n", counted, match.start())
            counted = match.start()
            lines.append(line)
    return tuple(lines)


# Text-format tokens: blanks and comments (skipped), strings, punctuation, and words (names, numbers).
_TOKEN = re.compile(r"""\s+|#[^\n]*|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|[{}<>\[\]:,;]|[^\s{}<>\[\]:,;"'#]+""")
_CLOSE = {"{": "}", "<": ">"}


class _FieldScanner:
    """Walks text that parsed (unknown fields allowed) against the schema: each layer field's line, the unknown fields."""

    def __init__(self, text: str, descriptor) -> None:
        self.text = text
        self.tokens = [
            (m.start(), m.end(), m.group())
            for m in _TOKEN.finditer(text)
            if not m.group()[0].isspace() and m.group()[0] != "#"
        ]
        self.at = 0
        self.newlines = [i for i, c in enumerate(text) if c == "\n"]
        self.unknown: list[UnknownField] = []
        self.lines: dict[tuple[int, str], int] = {}  # (layer index, dotted path): the line first setting it
        counts: dict[str, int] = {}
        while self.at < len(self.tokens):
            name = self._peek()
            layer = None
            if name in ("layer", "layers"):
                layer = counts.get(name, 0)
                counts[name] = layer + 1
            self._field(descriptor, (), layer)

    def _peek(self) -> str:
        return self.tokens[self.at][2] if self.at < len(self.tokens) else ""

    def _take(self) -> tuple[int, int, str]:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def _line(self, offset: int) -> int:
        return bisect.bisect_left(self.newlines, offset) + 1

    def _message(self, descriptor, path: tuple[str, ...], layer: int | None, close: str) -> None:
        while self.at < len(self.tokens) and self._peek() != close:
            if self._peek() in (",", ";"):
                self._take()
                continue
            self._field(descriptor, path, layer)
        if self.at < len(self.tokens):
            self._take()

    def _field(self, descriptor, path: tuple[str, ...], layer: int | None) -> None:
        start, _, name = self._take()
        if name == "[":  # an extension or Any type name: nothing this schema defines
            while self._take()[2] != "]":
                pass
            name = ""
        field = descriptor.fields_by_name.get(name) if descriptor is not None else None
        inner = field.message_type if field is not None else None
        if self._peek() == ":":
            self._take()
        self._value(inner, path + (name,), layer)
        # Paths start below the layer block (or at the net, for the net's own fields).
        dotted = ".".join((path[1:] if layer is not None else path) + (name,))
        if layer is not None and path:
            self.lines.setdefault((layer, dotted), self._line(start))
        if field is None and descriptor is not None:
            end = self.tokens[self.at - 1][1]
            self.unknown.append(UnknownField(self._line(start), layer, dotted, self.text[start:end]))

    def _value(self, descriptor, path: tuple[str, ...], layer: int | None) -> None:
        token = self._peek()
        if token in _CLOSE:
            self._take()
            self._message(descriptor, path, layer, _CLOSE[token])
        elif token == "[":
            self._take()
            while self.at < len(self.tokens) and self._peek() != "]":
                if self._peek() == ",":
                    self._take()
                else:
                    self._value(descriptor, path, layer)
            self._take()
        else:
            first = self._take()[2]
            # Adjacent string literals are one value ("a" "b" is "ab").
            while first[0] in "\"'" and self._peek()[:1] in ("\"", "'"):
                self._take()
