"""Repeated units of a net (ResNet's res2a, res2b, ...) found among the emitted statements, as block functions.

A unit is a run of statements that occurs two or more times with the same layer classes, wiring and
arguments (up to a few values that vary, such as filters and strides), and whose Keras layer names
differ in one part only: each name is ``prefix + part + suffix`` with the same prefix and suffix in
every occurrence. The unit becomes a function taking the part as ``name``; its calls build exactly
the layers, names and wiring of the statements they replace. Folding repeats until nothing more pays,
so a unit may be made of calls of smaller units.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .ir import Statement
from .pysource import CHAIN, GUARD, Code, Names, Source, Template

MAX_LENGTH = 64  # statements in one unit
MAX_INPUTS = 4  # tensors a unit reads from outside
MAX_OUTPUTS = 3  # tensors a unit returns
MAX_VALUES = 5  # varying arguments a unit takes besides its tensors and name
NAME_PARAM = "name"
# Keras defaults of convolution arguments some occurrences of a unit spell out and others leave out.
CONV_DEFAULTS = {"strides": 1, "padding": "valid", "dilation_rate": 1, "use_bias": True, "depth_multiplier": 1}
CONVOLUTIONS = {"layers.Conv2D", "layers.DepthwiseConv2D", "layers.Conv2DTranspose", "grouped_conv"}
POSITIONAL = {
    "grouped_conv": ("groups", "filters", "kernel_size"),
    "layers.Conv2D": ("filters", "kernel_size"),
    "layers.DepthwiseConv2D": ("kernel_size",),
    "layers.Conv2DTranspose": ("filters", "kernel_size"),
    "layers.Dense": ("units",),
    "layers.ZeroPadding2D": ("padding",),
    "layers.Cropping2D": ("cropping",),
    "layers.MaxPooling2D": ("pool_size",),
    "layers.AveragePooling2D": ("pool_size",),
    "layers.Dropout": ("rate",),
    "layers.Reshape": ("target_shape",),
}


@dataclass(frozen=True)
class Block:
    """A module-level function: ``def fn(*tensors, *values, name)`` whose body is ``body``."""

    fn: str
    tensors: tuple[str, ...]
    values: tuple[str, ...]
    body: tuple[Statement | str, ...]
    returns: tuple[str, ...]
    doc: str  # untrusted text: names from the prototxt
    parts: tuple[str, ...]  # the name of each call, in the net's order
    # (prefix, suffix) around ``name`` of the Keras layer each statement of the body makes itself
    layers: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class _Item:
    stmt: Statement
    targets: tuple[str, ...]
    name: str  # the Keras layer name, or for a call of a block its part
    notes: tuple[str, ...] = ()


def statement_name(s: Statement) -> str:
    return next((v for k, v in s.kwargs if k == "name"), "")  # a size guard names no Keras layer


def call_of(block: Block, inputs: Sequence[str], values: Sequence[object], part: object, targets: Sequence[str]):
    """The statement ``targets = block.fn(*inputs, *values, name=part)``."""
    return Statement(", ".join(targets), block.fn, tuple(values), (("name", part),), tuple(inputs), inline=True)


def fold(
    statements: Sequence[Statement | str], kept: Iterable[str], reserved: Iterable[str]
) -> tuple[list[Statement | str], list[Block]]:
    """``statements`` with their repeated units replaced by calls, and the block functions (inner first)."""
    items, notes = [], []
    for s in statements:
        if isinstance(s, str):
            notes.append(s)
            continue
        items.append(_Item(s, (s.target,), statement_name(s), tuple(notes)))
        notes = []
    taken = set(reserved) | {t for i in items for t in i.targets} | {v for i in items for v in i.stmt.inputs}
    functions = Names(reserved=taken, prefix="block")
    kept = set(kept)
    blocks: list[Block] = []
    while True:
        best = _best_unit(items, kept)
        if best is None:
            break
        items, block = _apply(items, best, functions, {b.fn: b for b in blocks})
        blocks.append(block)
    out: list[Statement | str] = []
    for item in items:
        out += item.notes
        out.append(item.stmt)
    return out + notes, blocks


# -- finding units ------------------------------------------------------------------------------------


def _fixed(value: object) -> bool:
    """Values that are code rather than data: they must be equal in every occurrence."""
    return isinstance(value, (Code, Source, Template))


def _defaults(s: Statement) -> dict:
    return CONV_DEFAULTS if s.callee in CONVOLUTIONS else {}


def _kind(value: object) -> str:
    """What an argument is, for matching: a kernel size 3 and (1, 7) are alike, a size and a string not."""
    return "number" if isinstance(value, (int, float, tuple)) and not isinstance(value, bool) else type(value).__name__


def _local_sig(item: _Item) -> tuple:
    s = item.stmt
    if s.callee == GUARD:  # it reads build_model()'s input_shape: never inside a block function
        return (GUARD, id(s))
    defaults = _defaults(s)
    args = tuple(repr(a) if _fixed(a) else _kind(a) for a in s.args)
    kwargs = tuple(
        (k, repr(v) if _fixed(v) else "") for k, v in s.kwargs if k != "name" and k not in defaults
    )
    return (s.callee, s.inline, s.as_list, len(item.targets), args, kwargs)


@dataclass
class _Unit:
    length: int
    starts: list[int]
    outputs: list[tuple[int, int]]  # (offset, target slot) of the values read after the unit
    prefixes: list[str]
    suffixes: list[str]
    parts: list[str]
    slots: list[list[tuple[int, object]]]  # per value parameter: (offset, arg index or kwarg key)
    values: list[list[object]]  # per occurrence: the value of each parameter
    tensors: list[list[tuple[int, int]]]  # per tensor parameter: the (offset, input index) reading it
    saving: int


def _best_unit(items: list[_Item], kept: set[str]) -> _Unit | None:
    n = len(items)
    last_def: dict[str, tuple[int, int]] = {}
    producers: list[tuple] = []
    last_use: dict[tuple[int, int], int] = {}
    for k, item in enumerate(items):
        refs = tuple(last_def.get(v, ("in", v)) for v in item.stmt.inputs)
        producers.append(refs)
        for r in refs:
            if isinstance(r[0], int):
                last_use[r] = k
        for j, t in enumerate(item.targets):
            last_def[t] = (k, j)
    for v in kept:
        if v in last_def:
            last_use[last_def[v]] = n
    local = [_local_sig(i) for i in items]

    def signature(s: int, length: int) -> list:
        sig = []
        for k in range(s, s + length):
            refs = tuple((k - r[0], r[1]) if isinstance(r[0], int) and r[0] >= s else "in" for r in producers[k])
            sig.append((local[k], refs))
        return sig

    # A run's key chains the keys of its statements: kind and reads, from inside the run by distance,
    # from outside as "in". Keys are interned, so that a run hashes ints, and a statement whose
    # inputs are all made inside the run (most of them) has its key ready.
    interned: dict[tuple, int] = {}
    reads, first, whole = [], [], []
    for k, refs in enumerate(producers):
        reads.append([(r[0], (k - r[0], r[1]), r) if isinstance(r[0], int) else (-1, "in", r) for r in refs])
        first.append(min((at for at, _, _ in reads[k]), default=k))
        whole.append(interned.setdefault((local[k], *(read for _, read, _ in reads[k])), len(interned)))
    runs: list[dict[int, list[int]]] = [defaultdict(list) for _ in range(MAX_LENGTH + 1)]  # starts by length, key
    for s in range(n):
        outside: set = set()
        h = 0
        for k in range(s, min(s + MAX_LENGTH, n)):
            if first[k] >= s:
                h = hash((h, whole[k]))
            else:
                refs = []
                for at, read, r in reads[k]:
                    if at >= s:
                        refs.append(read)
                    else:
                        outside.add(r)
                        refs.append("in")
                if len(outside) > MAX_INPUTS:
                    break
                h = hash((h, interned.setdefault((local[k], *refs), len(interned))))
            if k > s:
                runs[k - s + 1][h].append(s)
    candidates = []
    for length, by_key in enumerate(runs):
        for starts in by_key.values():
            chosen = _disjoint(starts, length) if len(starts) >= 2 else starts
            if len(chosen) >= 2 and _saving(len(chosen), length) > 0:
                candidates.append((_saving(len(chosen), length), length, chosen))
    candidates.sort(key=lambda c: (-c[0], -c[1], c[2][0]))
    best = None
    for bound, length, starts in candidates:
        if best is not None and bound <= best.saving:
            break  # a unit may keep fewer occurrences than its bound counts: the next ones may save more
        unit = _check(items, starts, length, signature, last_use, producers)
        if unit is not None and (best is None or unit.saving > best.saving):
            best = unit
    return best


def _disjoint(starts: list[int], length: int) -> list[int]:
    chosen, end = [], -1
    for s in starts:
        if s >= end:
            chosen.append(s)
            end = s + length
    return chosen


def _saving(count: int, length: int) -> int:
    """Lines saved: each occurrence becomes one call, the unit is written once as a function."""
    return count * (length - 1) - (length + 4)


def _check(items, starts, length, signature, last_use, producers) -> _Unit | None:
    first = signature(starts[0], length)
    starts = [s for s in starts if s == starts[0] or signature(s, length) == first]
    if len(starts) < 2:
        return None
    names = [[items[s + u].name for u in range(length)] for s in starts]
    naming = _naming(names)
    if naming is None:  # the occurrences whose names follow one pattern, if some do
        kept = _named_alike(names)
        starts = [starts[i] for i in kept]
        naming = _naming([names[i] for i in kept]) if len(kept) >= 2 else None
    if naming is None:
        return None
    outputs = None
    for s in starts:
        outs = [
            (u, j)
            for u in range(length)
            for j in range(len(items[s + u].targets))
            if last_use.get((s + u, j), -1) >= s + length
        ]
        if outputs is None:
            outputs = outs
        elif outs != outputs:
            return None
    if not outputs or len(outputs) > MAX_OUTPUTS:
        return None
    prefixes, suffixes, parts = naming
    slots, values = _parameters(items, starts, length)
    if slots is None or len(slots) > MAX_VALUES:
        return None
    tensors = _tensors(items, starts, length, producers)
    if len(tensors) > MAX_INPUTS:
        return None
    saving = _saving(len(starts), length)
    return _Unit(length, starts, outputs, prefixes, suffixes, parts, slots, values, tensors, saving)


def _tensors(items, starts, length, producers) -> list[list[tuple[int, int]]]:
    """The reads from outside the unit, grouped when they read one value in every occurrence."""
    reads = []  # per occurrence: [(offset, input index, value)]
    for s in starts:
        reads.append([
            (u, i, r)
            for u in range(length)
            for i, r in enumerate(producers[s + u])
            if not (isinstance(r[0], int) and r[0] >= s)
        ])
    groups: list[list[int]] = []
    for a in range(len(reads[0])):
        for g in groups:
            if all(occ[a][2] == occ[g[0]][2] for occ in reads):
                g.append(a)
                break
        else:
            groups.append([a])
    return [[reads[0][a][:2] for a in g] for g in groups]


def _naming(names: list[list[str]]):
    """Per position a prefix and suffix shared by every occurrence, and per occurrence its part; or None."""
    prefixes, suffixes = [], []
    parts = None
    for column in zip(*names):
        shortest = min(len(n) for n in column)
        p = 0
        while p < shortest and all(n[p] == column[0][p] for n in column):
            p += 1
        q = 0
        while q < shortest - p and all(n[-1 - q] == column[0][-1 - q] for n in column):
            q += 1
        middle = [n[p : len(n) - q] for n in column]
        if parts is None:
            parts = middle
        elif middle != parts:
            return None
        prefixes.append(column[0][:p])
        suffixes.append(column[0][len(column[0]) - q :])
    if parts is None or not all(parts) or len(set(parts)) != len(parts):
        return None
    return prefixes, suffixes, parts


def _named_alike(names: list[list[str]]) -> list[int]:
    """The largest group of occurrences whose other names hold the first one at the same place.

    Each layer of a unit named ``conv + "_bn"``, ``conv + "_relu"`` in most occurrences and otherwise
    in a few: the few are left out rather than the unit.
    """
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, occurrence in enumerate(names):
        head = occurrence[0]
        key = []
        for name in occurrence[1:]:
            at = name.find(head) if head else -1
            key.append((name[:at], name[at + len(head) :]) if at >= 0 else None)
        groups[tuple(key)].append(i)
    return max(groups.values(), key=len)


def _arguments(stmt: Statement) -> dict:
    out: dict = {i: a for i, a in enumerate(stmt.args)}
    for k, v in stmt.kwargs:
        if k != "name":
            out[k] = v
    return out


def _parameters(items, starts, length):
    """The arguments that vary between occurrences, grouped when they vary alike."""
    by_values: dict[tuple, list[tuple[int, object]]] = {}
    for u in range(length):
        per = [_arguments(items[s + u].stmt) for s in starts]
        defaults = _defaults(items[starts[0] + u].stmt)
        keys = list(per[0])
        keys += [k for a in per[1:] for k in a if k not in keys]
        for key in keys:
            if any(key not in a and key not in defaults for a in per):
                return None, None
            column = tuple(a.get(key, defaults.get(key)) for a in per)
            if all(_same(v, column[0]) for v in column):
                continue
            if any(_fixed(v) for v in column):
                return None, None
            by_values.setdefault(tuple((type(v).__name__, repr(v)) for v in column), []).append((u, key))
    slots = list(by_values.values())
    values = []
    for s in starts:
        values.append([_argument(items[s + slot[0][0]].stmt, slot[0][1]) for slot in slots])
    return slots, values


def _same(value: object, other: object) -> bool:
    """Equal arguments: code by its text (a Code is equal only to itself), data by value and type."""
    if _fixed(value) or _fixed(other):
        return repr(value) == repr(other)
    return value == other and type(value) is type(other)


def _argument(stmt: Statement, key: object) -> object:
    return _arguments(stmt).get(key, _defaults(stmt).get(key))


# -- folding one unit -------------------------------------------------------------------------------


def _apply(items: list[_Item], unit: _Unit, functions: Names, inner: dict[str, Block]) -> tuple[list[_Item], Block]:
    s0 = unit.starts[0]
    template = items[s0 : s0 + unit.length]
    base = Names(prefix="unit").clean(unit.prefixes[0])
    kind = "stack" if any(item.stmt.callee in inner for item in template) else "block"
    fn = functions.new(f"{base}_{kind}")
    local = Names(reserved=set(functions._taken) | {CHAIN, NAME_PARAM}, prefix="t")
    tensors = [local.new("inputs") for _ in unit.tensors]
    tensor_of = {read: tensors[g] for g, reads in enumerate(unit.tensors) for read in reads}
    value_names = []
    for slot in unit.slots:
        u, key = slot[0]
        callee = template[u].stmt.callee
        if isinstance(key, int) and callee in inner:
            hint = inner[callee].values[key]
        elif isinstance(key, int):
            known = POSITIONAL.get(callee, ())
            hint = known[key] if key < len(known) else "value"
        else:
            hint = key
        value_names.append(local.new(hint))
    param_of = {(u, key): value_names[i] for i, slot in enumerate(unit.slots) for (u, key) in slot}
    # The body: every statement of the first occurrence with local variables, parameters and name templates.
    var_of: dict[str, str] = {}
    local_of: dict[tuple[int, int], str] = {}
    body: list[Statement | str] = []
    for u, item in enumerate(template):
        notes = [n for n in item.notes if all(items[s + u].notes == item.notes for s in unit.starts)]
        body += notes
        s = item.stmt
        inputs = tuple(tensor_of[(u, i)] if (u, i) in tensor_of else var_of[v] for i, v in enumerate(s.inputs))
        args = tuple(Source(param_of[(u, i)]) if (u, i) in param_of else a for i, a in enumerate(s.args))
        kwargs = []
        given = {k for k, _ in s.kwargs}
        for k, v in s.kwargs:
            if k == "name":
                continue
            if (u, k) in param_of:
                kwargs.append((k, Source(param_of[(u, k)])))
            elif not (k in _defaults(s) and v == _defaults(s)[k]):
                kwargs.append((k, v))
        for (pu, k), p in param_of.items():
            if pu == u and isinstance(k, str) and k not in given:
                kwargs.append((k, Source(p)))
        kwargs.append(("name", Template(unit.prefixes[u], NAME_PARAM, unit.suffixes[u])))
        hint = unit.prefixes[u] + unit.suffixes[u]
        targets = tuple(local.new(hint if len(item.targets) == 1 else f"{hint}_{j}") for j in range(len(item.targets)))
        comment = s.comment if all(items[o + u].stmt.comment == s.comment for o in unit.starts) else None
        body.append(dataclasses.replace(s, target=", ".join(targets), args=args, kwargs=tuple(kwargs), inputs=inputs,
                                        comment=comment))
        for j, (v, t) in enumerate(zip(item.targets, targets)):
            var_of[v] = t
            local_of[(u, j)] = t
    returns = tuple(local_of[out] for out in unit.outputs)
    layers = [f"{p}{{{NAME_PARAM}}}{q}" for p, q in zip(unit.prefixes, unit.suffixes)]
    doc = f"Layers {layers[0]} to {layers[-1]} of one unit ({unit.length} calls)."
    own = tuple((unit.prefixes[u], unit.suffixes[u]) for u, item in enumerate(template) if not item.stmt.inline)
    block = Block(fn, tuple(tensors), tuple(value_names), tuple(body), returns, doc, tuple(unit.parts), own)
    # Each occurrence becomes one call.
    out: list[_Item] = []
    k = 0
    starts = set(unit.starts)
    occurrence = {s: i for i, s in enumerate(unit.starts)}
    while k < len(items):
        if k not in starts:
            out.append(items[k])
            k += 1
            continue
        i = occurrence[k]
        occ = items[k : k + unit.length]
        seen = [occ[reads[0][0]].stmt.inputs[reads[0][1]] for reads in unit.tensors]
        targets = tuple(occ[u].targets[j] for u, j in unit.outputs)
        stmt = call_of(block, seen, unit.values[i], unit.parts[i], targets)
        out.append(_Item(stmt, targets, unit.parts[i]))
        k += unit.length
    return out, block


def blob_rules(
    blobs: Sequence[tuple[str, str, object]], blocks: Sequence[Block]
) -> tuple[list[tuple[str, str, object]], list[tuple[Block, list[tuple[str, str, str, str, object]]]]]:
    """BLOBS entries ``(blob, layer, axes)`` split into those listed one by one and rules of the blocks.

    A rule ``(blob prefix, blob suffix, layer prefix, layer suffix, axes)`` of a block says that for every
    name the block is called with, blob ``prefix + name + suffix`` is the output of the layer so named.
    """
    where: dict[str, tuple[int, int, str]] = {}
    for b, block in enumerate(blocks):
        for part in block.parts:
            for u, (p, q) in enumerate(block.layers):
                where[p + part + q] = (b, u, part)
    found: dict[tuple[int, int], list[tuple[str, str, object]]] = defaultdict(list)
    for blob, layer, axes in blobs:
        if layer in where:
            b, u, part = where[layer]
            found[(b, u)].append((part, blob, axes))
    ruled: set[str] = set()
    rules: dict[int, list] = defaultdict(list)
    for (b, u), entries in found.items():
        block = blocks[b]
        if [e[0] for e in entries] != list(block.parts) or len({repr(e[2]) for e in entries}) != 1:
            continue
        split = _blob_split(entries)
        if split is None:
            continue
        p, q = block.layers[u]
        rules[b].append((*split, p, q, entries[0][2]))
        ruled.update(e[1] for e in entries)
    listed = [e for e in blobs if e[0] not in ruled]
    return listed, [(blocks[b], rules[b]) for b in sorted(rules)]


def _blob_split(entries: list[tuple[str, str, object]]) -> tuple[str, str] | None:
    """``(prefix, suffix)`` with every blob ``prefix + part + suffix``, if there is one."""
    part, blob, _ = entries[0]
    start = blob.find(part)
    while start >= 0:
        prefix, suffix = blob[:start], blob[start + len(part) :]
        if all(b == prefix + p + suffix for p, b, _ in entries):
            return prefix, suffix
        start = blob.find(part, start + 1)
    return None
