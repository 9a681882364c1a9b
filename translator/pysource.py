"""The only producer of generated-module text: Python literals, identifiers and comments."""

from __future__ import annotations

import keyword
import math
import re
import struct
import unicodedata
from collections.abc import Iterable
from decimal import Decimal


class Source(str):
    """Text that is already valid Python source; templates accept nothing else."""

    __slots__ = ()


class Code:
    """A fixed Python expression chosen by an emitter (never built from input text)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Code({self.text!r})"


def literal(value: object) -> Source:
    """Render a plain value (number, string, tuple, list, dict, None) as a Python literal."""
    if isinstance(value, Source):
        return value
    if isinstance(value, Code):
        return Source(value.text)
    if isinstance(value, Template):
        return fstring(*value.pieces)
    if value is None or isinstance(value, bool):
        return Source(repr(value))
    if isinstance(value, int):
        return Source(str(int(value)))
    if isinstance(value, float):
        return float_literal(value)
    if isinstance(value, str):
        return string(value)
    if isinstance(value, tuple):
        items = [literal(v) for v in value]
        return Source(f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})")
    if isinstance(value, list):
        return Source(f"[{', '.join(literal(v) for v in value)}]")
    if isinstance(value, dict):
        pairs = ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items())
        return Source(f"{{{pairs}}}")
    if hasattr(value, "item"):  # numpy scalar
        return literal(value.item())
    raise TypeError(f"no literal for {type(value).__name__}")


def float_literal(value: float) -> Source:
    """The shortest text that reads back as the same float32, so 1e-4 stays ``0.0001``."""
    if math.isnan(value):
        return Source('float("nan")')
    single = _float32(value)
    if math.isinf(single):
        return Source('float("inf")' if single > 0 else '-float("inf")')
    return Source(repr(_shortest_float32(single)))


def _float32(value: float) -> float:
    """``value`` rounded to float32, as Caffe's float fields hold it (infinite beyond its range)."""
    try:
        return struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)


def _shortest_float32(single: float) -> float:
    """The decimal with the fewest digits that rounds to the float32 ``single``; of two, the nearer.

    This is the number numpy prints for a float32, found without numpy, which a translation never loads.
    """
    exact = Decimal(single)
    for digits in range(1, 10):
        nearest = Decimal(f"{single:.{digits - 1}e}")
        # Beside a power of two the float32 grid is twice as fine below as above, so the nearest
        # decimal of this length may miss while its neighbour on the far side reads back.
        step = Decimal(1).scaleb(nearest.adjusted() - digits + 1)
        for candidate in (nearest, nearest + step if nearest < exact else nearest - step):
            if _float32(float(candidate)) == single:
                return float(candidate)
    return single


def string(text: str) -> Source:
    """A double-quoted string literal; every non-printable or non-ASCII char is escaped."""
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return Source('"' + "".join(out) + '"')


class Template:
    """A string made of untrusted text around variables the caller chose: ``Template("res", "name", "_relu")``.

    Pieces alternate text, variable, text, ...; it is written as an f-string.
    """

    __slots__ = ("pieces",)

    def __init__(self, *pieces: str) -> None:
        self.pieces = pieces

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Template) and other.pieces == self.pieces

    def __hash__(self) -> int:
        return hash(self.pieces)

    def __repr__(self) -> str:
        return f"Template{self.pieces!r}"


def fstring(*pieces: str) -> Source:
    """Pieces alternating untrusted text and identifiers the caller chose, as an f-string (or the lone name)."""
    if len(pieces) == 3 and not pieces[0] and not pieces[2]:
        return Source(pieces[1])

    def text(part: str) -> str:
        return string(part)[1:-1].replace("{", "{{").replace("}", "}}")

    body = "".join(text(p) if i % 2 == 0 else f"{{{p}}}" for i, p in enumerate(pieces))
    return Source(f'f"{body}"')


def comment(text: str) -> Source:
    """Untrusted text made safe for a ``#`` comment: one line, printable, shown as a repr-like escape."""
    return Source(string(text)[1:-1])


_BARE_QUOTE = re.compile(r'(?<=[^"\\])\\"(?=[^"\\])')


def docstring_text(text: str) -> Source:
    """Untrusted text made safe inside a triple-quoted docstring, whatever quotes the template puts around it.

    A quote stays unescaped only between two characters that are not quotes, so no run of three
    quotes can form with the template's own (``input "{name}"`` with a name of ``""``).
    """
    return Source(_BARE_QUOTE.sub('"', string(text)[1:-1]))


_IDENT_BAD = re.compile(r"[^0-9a-zA-Z_]")


def _ascii_fold(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


class Names:
    """Deterministic unique names within one namespace, with collision counters."""

    def __init__(self, reserved: Iterable[str] = (), pattern: re.Pattern[str] = _IDENT_BAD, prefix: str = "v") -> None:
        self._taken: set[str] = set(reserved)
        self._bad = pattern
        self._prefix = prefix

    def clean(self, raw: str) -> str:
        """The sanitized form of ``raw``, before collision handling."""
        base = self._bad.sub("_", _ascii_fold(raw)).strip("_") or self._prefix
        if not base[0].isalpha():
            base = f"{self._prefix}_{base}"
        if keyword.iskeyword(base) or keyword.issoftkeyword(base) or base.startswith("__"):
            base = f"{base}_"
        return base

    def new(self, raw: str) -> str:
        """A fresh name derived from ``raw``; never one handed out before."""
        base = self.clean(raw)
        name, n = base, 1
        while name in self._taken:
            name = f"{base}_{n}"
            n += 1
        self._taken.add(name)
        return name


# The variable of a value that only the next statement reads (``x = layers.ReLU()(x)``).
CHAIN = "x"
# The module's name for the layout of a channels-last 4-D blob, the most common entry of BLOBS.
NHWC = "NHWC"

# Names the generated module defines or imports at top level, plus builtins it relies on.
# build_model()'s check before a layer bound to the translated input size (templates/module.py.jinja).
GUARD = "_fixed_size"
MODULE_NAMES = frozenset(
    {CHAIN, NHWC, "keras", "layers", "ops", "np", "numpy", "build_model", "load_weights", "preprocess", "input_shape",
     "input_shapes", "outputs", "model", "picked", "INPUT_SHAPE", "INPUT_SHAPES", "BLOBS", "PACKAGE", "FROZEN", "_freeze", "MULTIPLIERS", "compile_model", "schedule", "optimizer",
     "_layers_with_weights", GUARD, "_pair", "_name", "_i", "int", "float", "tuple", "list", "dict", "len", "range", "print",
     "object", "super", "isinstance", "zip", "sorted", "set", "str", "type", "min", "max", "sum"}
)

KERAS_NAME_BAD = re.compile(r"[^0-9a-zA-Z_.\-]")
