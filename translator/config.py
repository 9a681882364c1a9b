"""Per-file options from the pyproject.toml of the project being worked in: ``[tool.caffe2py.files."GLOB"]``."""

from __future__ import annotations

import argparse
import fnmatch
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import TranslationError
from .options import NOT_PER_NET

# Options whose value is a file: relative paths in pyproject.toml are relative to the project root.
PATH_OPTIONS = frozenset({"mean", "solver"})


def find_project_root(paths: Sequence[str | Path]) -> Path | None:
    """The first folder holding a pyproject.toml or .git, from the given files' common parent up (as black does)."""
    if not paths:
        return None
    parents = [str(Path(p).resolve().parent) for p in paths]
    start = Path(os.path.commonpath(parents))
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file() or (folder / ".git").exists():
            return folder
    return None


@dataclass(frozen=True)
class ProjectOptions:
    """The ``[tool.caffe2py.files]`` tables of one pyproject.toml, as command-line arguments."""

    pyproject: Path
    tables: tuple[tuple[str, tuple[str, ...]], ...]  # (path or glob, arguments), in the file's order

    def arguments_for(self, prototxt: str | Path) -> list[str]:
        """The arguments of every table whose key matches ``prototxt`` (later tables after earlier ones)."""
        try:
            relative = Path(prototxt).resolve().relative_to(self.pyproject.parent).as_posix()
        except ValueError:  # outside the project
            return []
        arguments: list[str] = []
        for pattern, args in self.tables:
            if fnmatch.fnmatchcase(relative, pattern.removeprefix("./")):
                arguments += args
        return arguments


def load(
    paths: Sequence[str | Path], parser: argparse.ArgumentParser, *, only_known: bool = False
) -> ProjectOptions | None:
    """The per-file options of the project the given prototxts are in, checked against ``parser``'s options.

    ``only_known``: skip the options ``parser`` lacks (``caffe2py verify`` takes only some of them).
    """
    root = find_project_root(paths)
    if root is None or not (root / "pyproject.toml").is_file():
        return None
    pyproject = root / "pyproject.toml"
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    try:
        with pyproject.open("rb") as handle:
            document = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise TranslationError(f"not valid TOML: {exc}", path=str(pyproject)) from None
    files = document.get("tool", {}).get("caffe2py", {}).get("files", {})
    if not isinstance(files, dict):
        raise TranslationError("[tool.caffe2py.files] must be a table of tables", path=str(pyproject))
    tables = []
    for pattern, table in files.items():
        where = f'[tool.caffe2py.files."{pattern}"]'
        if not isinstance(table, dict):
            raise TranslationError(f"{where} must be a table of options", path=str(pyproject))
        if only_known:
            table = {key: value for key, value in table.items() if f"--{key}" in parser._option_string_actions}
        args = [arg for key, value in table.items() for arg in _arguments(parser, key, value, root, where, pyproject)]
        tables.append((pattern, tuple(args)))
    return ProjectOptions(pyproject, tuple(tables))


def _arguments(
    parser: argparse.ArgumentParser, key: str, value: Any, root: Path, where: str, pyproject: Path
) -> list[str]:
    """``key = value`` as command-line arguments, checked as the command line would check them."""
    action = parser._option_string_actions.get(f"--{key}")
    if action is None or action.dest in NOT_PER_NET or key.replace("-", "_") != action.dest:
        raise TranslationError(f"{where}: {key!r} is not a per-file option of caffe2py", path=str(pyproject))
    option = f"--{key}"
    if action.nargs == 0:
        if not isinstance(value, bool):
            raise TranslationError(f"{where}: {key} is a flag: true or false, not {value!r}", path=str(pyproject))
        return [option] if value else []
    repeatable = isinstance(action.default, list)
    values = value if repeatable and isinstance(value, list) else [value]
    if len(values) > 1 and not repeatable:
        raise TranslationError(f"{where}: {key} takes one value, not a list", path=str(pyproject))
    arguments = []
    for item in values:
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise TranslationError(f"{where}: {key} = {item!r} is not a string or a number", path=str(pyproject))
        text = str(item)
        if key in PATH_OPTIONS:
            text = str(root / text)
        try:
            checked = action.type(text) if action.type is not None else text
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise TranslationError(f"{where}: {key}: {exc}", path=str(pyproject)) from None
        if action.choices is not None and checked not in action.choices:
            choices = ", ".join(map(str, action.choices))
            raise TranslationError(f"{where}: {key} = {item!r}; choose one of {choices}", path=str(pyproject))
        arguments += [option, text]
    return arguments
