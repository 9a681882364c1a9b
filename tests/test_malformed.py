"""The command line on bad input: one line on stderr, exit code 2, no traceback, no output file touched."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.malformed import make_binaries

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "malformed"
ERROR = "caffe2py: error: "
# What a run finds in its folder when the outputs existed before: they must stay as they were.
PREVIOUS = {"out.py": b"# the module of an earlier run\n", "out.npz": b"earlier weights"}


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    code: int
    pattern: str

    @property
    def id(self) -> str:
        return " ".join(self.args)


def manifest() -> list[Case]:
    cases = []
    for line in (CORPUS / "expected.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            args, code, pattern = (part.strip() for part in line.split("|", 2))
            cases.append(Case(tuple(args.split()), int(code), pattern))
    return cases


CASES = manifest()


def caffe2py(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-m", "caffe2py", *args], check=False, cwd=cwd, env=env, capture_output=True, timeout=120
    )


def _resolve(args: tuple[str, ...], binaries: Path) -> list[str]:
    """Corpus names as paths: the text files live in the corpus, the binary ones are written per run."""
    found = []
    for arg in args:
        if arg.startswith("-"):
            found.append(arg)
        else:
            found.append(str(CORPUS / arg if (CORPUS / arg).exists() else binaries / arg))
    return found


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[tuple[str, bool], tuple[subprocess.CompletedProcess, Path]]:
    """Every case run twice, in parallel: in an empty folder, and where out.py and out.npz exist."""
    binaries = tmp_path_factory.mktemp("binaries")
    make_binaries.write_all(binaries)
    jobs = {}
    for case in CASES:
        for existing in (False, True):
            folder = tmp_path_factory.mktemp("run")
            if existing:
                for name, data in PREVIOUS.items():
                    (folder / name).write_bytes(data)
            jobs[(case.id, existing)] = ([*_resolve(case.args, binaries), "-o", "out.py"], folder)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        futures = {key: pool.submit(caffe2py, args, folder) for key, (args, folder) in jobs.items()}
        return {key: (future.result(), jobs[key][1]) for key, future in futures.items()}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.parametrize("existing", [False, True], ids=["fresh", "outputs-exist"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, existing, runs):
    result, folder = runs[(case.id, existing)]
    stderr = result.stderr.decode("utf-8", errors="replace")
    lines = stderr.splitlines()
    assert result.returncode == case.code, stderr
    assert "Traceback" not in stderr
    assert result.stdout == b"", "with -o, stdout carries nothing"
    files = _files(folder)
    if case.code == 2:
        assert len(lines) == 1 and lines[0].startswith(ERROR), stderr
        assert re.search(case.pattern, lines[0][len(ERROR) :]), f"{lines[0]!r} does not match {case.pattern!r}"
        assert files == (PREVIOUS if existing else {}), "an output file was created or changed"
        return
    assert len(lines) == (1 if case.pattern else 0), stderr
    if case.pattern:
        assert re.search(case.pattern, lines[0]), f"{lines[0]!r} does not match {case.pattern!r}"
    wrote = {"out.py", "out.npz"} if "--weights" in case.args else {"out.py"}
    assert set(files) == wrote | (set(PREVIOUS) if existing else set()), "temporary files left behind"
    assert files["out.py"] != PREVIOUS["out.py"] and files["out.py"].startswith(b'"""')


def test_the_manifest_covers_the_corpus():
    named = {arg for case in CASES for arg in case.args if not arg.startswith("-")}
    corpus = {p.name for p in CORPUS.iterdir() if p.suffix in (".prototxt", ".caffemodel")}
    assert corpus | set(make_binaries.BINARIES) == named
    assert len(named) >= 40


# --- options: help, where output goes, misuse -------------------------------------------------

# Options whose help the argparse module itself writes.
STANDARD = {"-h", "--help", "--version"}


def _options_without_example() -> list[str]:
    from caffe2py.cli import EXAMPLES, parser

    examples = [line.strip() for line in EXAMPLES.splitlines() if line.strip().startswith("caffe2py ")]
    missing = []
    for action in parser()._actions:
        names = [o for o in action.option_strings if o not in STANDARD]
        if not names:
            continue
        in_examples = any(re.search(rf"\s{re.escape(o)}(\s|=|$)", f" {e}") for e in examples for o in names)
        in_help = any(f"e.g. {o}" in (action.help or "") for o in names)
        if not (in_examples or in_help):
            missing.append(names[-1])
    return missing


def test_help_is_complete(tmp_path):
    from caffe2py.cli import parser

    result = caffe2py(["--help"], tmp_path)
    assert result.returncode == 0 and result.stderr == b""
    text = result.stdout.decode()
    for action in parser()._actions:
        for option in action.option_strings:
            assert option in text
        assert action.help, f"{action.option_strings or action.dest} has no help"


def test_help_gives_every_option_an_example():
    assert _options_without_example() == []


def test_stdout_carries_only_the_module(tmp_path):
    binaries = tmp_path / "binaries"
    binaries.mkdir()
    make_binaries.write_all(binaries)
    tiny = str(CORPUS / "tiny.prototxt")
    assert caffe2py([tiny, "-o", "tiny.py"], tmp_path).returncode == 0
    module = (tmp_path / "tiny.py").read_bytes()
    plain = caffe2py([tiny], tmp_path)
    assert (plain.returncode, plain.stdout, plain.stderr) == (0, module, b"")
    verbose = caffe2py([tiny, "-v"], tmp_path)
    assert verbose.stdout == module and b"conv1 (Convolution)" in verbose.stderr
    warned = caffe2py([tiny, "--weights", str(binaries / "nan_weights.caffemodel"), "--npz", "tiny.npz"], tmp_path)
    assert warned.returncode == 0 and warned.stdout == module
    assert warned.stderr.decode().startswith("caffe2py: warning: ") and len(warned.stderr.splitlines()) == 1


MISUSE = [
    (["missing.prototxt"], r"^missing\.prototxt: cannot read: No such file or directory$"),
    ([str(CORPUS)], r"malformed: cannot read: Is a directory$"),
    (["TINY", "-o", "out.py", "--weights", "missing.caffemodel"], r"^missing\.caffemodel: cannot read the caffemodel"),
    (["TINY", "--weights", "missing.caffemodel"], r"--weights with the module on stdout needs --npz PATH"),
    (["TINY", "-o", "no/such/dir/out.py"], r"no/such/dir.*No such file or directory"),
    (["TINY", "--input-shape", "data=1,x"], r"argument --input-shape: 'data=1,x' is not NAME=N,C,H,W"),
]


@pytest.mark.parametrize("args,pattern", MISUSE, ids=[" ".join(a) for a, _ in MISUSE])
def test_misuse(args, pattern, tmp_path):
    result = caffe2py([str(CORPUS / "tiny.prototxt") if a == "TINY" else a for a in args], tmp_path)
    stderr = result.stderr.decode()
    assert result.returncode == 2 and result.stdout == b"" and "Traceback" not in stderr
    # argparse's own errors come after its usage lines; the error itself is the last line.
    last = stderr.splitlines()[-1]
    assert last.startswith(ERROR) and re.search(pattern, last[len(ERROR) :]), stderr
    assert list(tmp_path.iterdir()) == []
