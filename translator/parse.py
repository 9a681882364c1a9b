"""Read a prototxt into a current-format NetParameter, with errors that point at file:line."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from . import schema
from .errors import TranslationError
from .upgrade import upgrade_net


@dataclass(frozen=True)
class ParsedNet:
    """A parsed net, plus the line on which each of its layers starts."""

    net: object  # caffe.NetParameter, current format
    path: str
    data: bytes
    layer_lines: tuple[int, ...]


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
    try:
        # Parse, not Merge: like Caffe's TextFormat::Parse, a field given twice where one is allowed is an error.
        text_format.Parse(text, net)
    except text_format.ParseError as exc:
        raise syntax_error(exc, text, shown) from None
    lines = _layer_lines(text, "layers" if len(net.layers) else "layer")
    net = upgrade_net(net, shown)
    return ParsedNet(net=net, path=shown, data=data, layer_lines=lines)


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
