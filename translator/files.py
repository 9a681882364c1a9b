"""Outputs written atomically: a temporary file beside each target, renamed into place only on success."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path


def _mode_for(path: Path) -> int:
    """The permissions ``path`` should get: its current ones, else what a plain open() would give."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _about(path: Path, exc: OSError) -> OSError:
    """``exc`` naming ``path``, the file the user asked for, instead of a temporary name beside it."""
    return type(exc)(exc.errno, exc.strerror, str(path))


def write_atomically(path: Path, data: bytes | None = None, fill: Callable[[Path], object] | None = None) -> Path:
    """Write ``data`` (or let ``fill`` write) a temporary file beside ``path``; the caller renames it into place."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _about(path, exc) from None
    tmp_path = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as handle:
            if data is not None:
                handle.write(data)
        if fill is not None:
            fill(tmp_path)
        # mkstemp makes the file private (0600); the output should not lose the access it had.
        os.chmod(tmp_path, _mode_for(path))
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        if exc.filename in (None, tmp, str(tmp_path)):
            raise _about(path, exc) from None
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return tmp_path


def rename_into_place(pending: list[tuple[Path, Path]]) -> None:
    """Move each (temporary, final) pair into place; on failure, no temporary file is left behind."""
    for done, (tmp, final) in enumerate(pending):
        try:
            os.replace(tmp, final)
        except OSError as exc:
            discard(pending[done:])
            raise _about(final, exc) from None
        except BaseException:
            discard(pending[done:])
            raise


def discard(pending: list[tuple[Path, Path]]) -> None:
    """Remove the temporary files of (temporary, final) pairs that will not be renamed."""
    for tmp, _ in pending:
        tmp.unlink(missing_ok=True)
