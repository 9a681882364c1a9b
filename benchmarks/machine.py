"""Shared bits of the benchmark scripts: paths, the machine description, medians, child processes."""

from __future__ import annotations

import hashlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CORPUS = SHARED / "corpus"
MAKE_CASE = SHARED / "oracle" / "make_case.py"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe(extra: Sequence[str] = ()) -> str:
    """One Markdown line: cores, CPU, Python and the versions of the packages that matter here."""
    parts = [f"{os.cpu_count()} cores ({cpu_model()})", f"Python {platform.python_version()}"]
    parts += extra
    return "Machine: " + ", ".join(parts)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def load() -> str:
    """The 1-minute load average: other work on the machine makes every number here slower."""
    return f"{os.getloadavg()[0]:.1f}"


def _package_path(root: Path) -> str:
    """A folder where ``import caffe2py`` finds checkout ``root``'s ``translator/``, not the installed package.

    The source folder is not named as the package, so ``root`` on the path alone would import
    whichever checkout is installed; "" for a checkout without ``translator/``.
    """
    if not (root / "translator" / "__init__.py").is_file():
        return ""
    folder = Path(tempfile.gettempdir()) / "caffe2py-bench-path" / hashlib.sha256(str(root).encode()).hexdigest()[:12]
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "caffe2py"
    if not link.is_symlink():
        link.symlink_to(root / "translator", target_is_directory=True)
    return str(folder)


def child_env(root: Path = ROOT) -> dict[str, str]:
    """The environment for child runs: the checkout ``root`` importable, TensorFlow's C++ logs quiet.

    Bytecode is cached (as for an installed package) but outside the checkout, so that a
    PYTHONDONTWRITEBYTECODE in the environment does not add compile time to every run.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_package_path(root), str(root), env.get("PYTHONPATH")]))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "caffe2py-bench-pycache")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


@dataclass(frozen=True)
class Run:
    """One child process: wall and CPU (user + system) seconds, peak RSS in bytes, exit code."""

    wall: float
    cpu: float
    peak_rss: int
    code: int


def run_measured(argv: Sequence[str], *, stdout=subprocess.DEVNULL, root: Path = ROOT) -> Run:
    """Run ``argv`` in checkout ``root``, its resource usage taken from wait4, so it is that child's alone."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.DEVNULL, cwd=root, env=child_env(root))
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    # Linux reports ru_maxrss in KiB.
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, child.returncode)


def make_case(case: str, directory: Path) -> Path:
    """The random-weights caffemodel of oracle case ``case`` in ``directory`` (made once)."""
    model = directory / "weights.caffemodel"
    if not model.is_file():
        subprocess.run(
            [sys.executable, str(MAKE_CASE), str(SHARED / "oracle" / "cases" / case), str(directory)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return model
