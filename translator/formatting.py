"""Lines of a generated module pre-wrapped as black wraps them, so that black formats it in one pass."""

from __future__ import annotations

from .pysource import Source

LINE_LENGTH = 88  # black's default, which the generated modules keep
# Separates the long lines given to black together (see prewrap); no generated line can start with it
# (strings and comments are escaped).
STATEMENT = "    # caffe2py: statement\n"


def wrap_call(head: str, args: list[str], call: str) -> Source:
    """``head args) call`` as a line of build_model(), wrapped the way black wraps such a line.

    Black formats a module twice unless its first pass changes nothing, so the common splits are
    made here; any other long line is left to black (see ``prewrap``).
    """
    joined = ", ".join(args)
    line = f"{head}{joined}){call}"
    if len(line) + 4 <= LINE_LENGTH:
        return Source(line)
    inner = call[1:-1]
    opened = line[: -len(inner) - 1]  # up to the bracket of ``call``
    if inner and len(opened) + 4 <= LINE_LENGTH:
        if len(inner) + 8 <= LINE_LENGTH:
            return Source(f"{opened}\n        {inner}\n    )")
        items = inner[1:-1].split(", ") if inner[0] == "[" else []
        if items and all(len(item) + 13 <= LINE_LENGTH for item in items):
            listed = "".join(f"            {item},\n" for item in items)
            return Source(f"{opened}\n        [\n{listed}        ]\n    )")
    if len(head) + 4 > LINE_LENGTH or len(call) + 5 > LINE_LENGTH:
        return Source(line)
    if len(joined) + 8 <= LINE_LENGTH:
        return Source(f"{head}\n        {joined}\n    ){call}")
    if all(len(a) + 9 <= LINE_LENGTH for a in args):
        return Source(head + "".join(f"\n        {a}," for a in args) + f"\n    ){call}")
    return Source(line)


def split_at_brackets(indent: str, head: str, items: list[str], tail: str, collection: bool) -> str:
    """``head items tail`` at ``indent``, split inside its brackets as black splits it when too long.

    Black puts the items on one line of their own where they fit, except in a collection literal
    (``collection``: a tuple, list), which it spreads one item a line with a trailing comma.
    """
    joined = ", ".join(items)
    line = f"{indent}{head}{joined}{tail}"
    if len(line) <= LINE_LENGTH:
        return line
    inner = indent + "    "
    if not collection and len(inner) + len(joined) <= LINE_LENGTH:
        return f"{indent}{head}\n{inner}{joined}\n{indent}{tail}"
    return f"{indent}{head}\n" + "".join(f"{inner}{item},\n" for item in items) + f"{indent}{tail}"


def prewrap(body: list[Source], black, mode) -> list[Source]:
    """``body`` (lines of build_model()) with each line still too long wrapped by black, in one small call."""
    long = [i for i, line in enumerate(body) if len(line) + 4 > LINE_LENGTH and "\n" not in line and line[0] != "#"]
    if not long:
        return body
    text = black.format_str("def f():\n" + "".join(f"{STATEMENT}    {body[i]}\n" for i in long), mode=mode)
    out = list(body)
    for i, piece in zip(long, text.split(STATEMENT)[1:]):
        out[i] = Source(piece[4:].rstrip("\n"))
    return out
