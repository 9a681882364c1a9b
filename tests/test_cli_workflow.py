"""The command line as a build and pre-commit tool: --write/--check, errors, verify routing, reproducible output."""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import os
import re
import shlex
import stat
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from caffe2py import __version__, cli
from tests.refnet import caffemodel_bytes

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

NET = """name: "tiny"
input: "data"
input_shape {{ dim: 1 dim: 3 dim: 9 dim: 11 }}
layer {{
  name: "conv"  type: "Convolution"  bottom: "data"  top: "conv"
  convolution_param {{ num_output: {outputs} kernel_size: 3 }}
}}
layer {{ name: "relu"  type: "ReLU"  bottom: "conv"  top: "conv" }}
"""

# Line 4 is a layer whose bottom nothing produces: an error that names the file, line and layer.
BROKEN = """name: "broken"
input: "data"
input_shape { dim: 1 dim: 3 dim: 9 dim: 11 }
layer { name: "relu"  type: "ReLU"  bottom: "missing"  top: "relu" }
"""

# Pip's words when it cannot reach the index, as opposed to a package that fails to install.
OFFLINE = re.compile(r"NewConnectionError|Temporary failure in name resolution|Network is unreachable|No route to host|ProxyError")


def _net(path: Path, outputs: int = 4) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(NET.format(outputs=outputs))
    return path


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _stamp(path: Path) -> tuple[int, int]:
    """What changes when a file is replaced or rewritten: its inode and modification time."""
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def _reference(tmp_path: Path, source: Path, name: str) -> bytes:
    """The module `caffe2py SOURCE -o NAME.py` writes: what --write must produce too."""
    out = tmp_path / "reference" / f"{name}.py"
    out.parent.mkdir(exist_ok=True)
    assert cli.main([str(source), "-o", str(out)]) == 0
    return out.read_bytes()


def test_translates_with_the_collector_paused_and_leaves_it_as_found(tmp_path, monkeypatch, capsys):
    source = _net(tmp_path / "a.prototxt")
    during = []
    translate = cli._translate
    monkeypatch.setattr(cli, "_translate", lambda *a: during.append(gc.isenabled()) or translate(*a))
    assert gc.isenabled()
    assert _run(capsys, str(source))[0] == 0
    assert _run(capsys, str(tmp_path / "missing.prototxt"))[0] == 2
    assert gc.isenabled() and during == [False, False]
    gc.disable()
    try:
        assert _run(capsys, str(source))[0] == 0
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_write_creates_modules_then_is_a_no_op(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _net(tmp_path / "a.prototxt", 4)
    _net(tmp_path / "sub" / "b.prototxt", 6)

    code, out, err = _run(capsys, "a.prototxt", "sub/b.prototxt", "--write")
    assert (code, out, err) == (1, "wrote a.py\nwrote sub/b.py\n", "")
    assert (tmp_path / "a.py").read_bytes() == _reference(tmp_path, tmp_path / "a.prototxt", "a")
    assert (tmp_path / "sub" / "b.py").read_bytes() == _reference(tmp_path, tmp_path / "sub" / "b.prototxt", "b")

    before = [_stamp(tmp_path / "a.py"), _stamp(tmp_path / "sub" / "b.py")]
    assert _run(capsys, "a.prototxt", "sub/b.prototxt", "--write") == (0, "", "")
    assert [_stamp(tmp_path / "a.py"), _stamp(tmp_path / "sub" / "b.py")] == before


def test_write_replaces_only_the_stale_module(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _net(tmp_path / "a.prototxt", 4)
    _net(tmp_path / "b.prototxt", 4)
    assert _run(capsys, "a.prototxt", "b.prototxt", "--write")[0] == 1
    untouched = _stamp(tmp_path / "b.py")

    _net(tmp_path / "a.prototxt", 5)
    assert _run(capsys, "a.prototxt", "b.prototxt", "--write") == (1, "rewrote a.py\n", "")
    assert "layers.Conv2D(5, 3" in (tmp_path / "a.py").read_text()
    assert _stamp(tmp_path / "b.py") == untouched
    # Nothing is left behind from the atomic writes.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.prototxt", "a.py", "b.prototxt", "b.py"]


def test_out_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _net(tmp_path / "nets" / "a.prototxt")
    assert _run(capsys, "nets/a.prototxt", "--write", "--out-dir", "gen/models") == (1, "wrote gen/models/a.py\n", "")
    assert (tmp_path / "gen" / "models" / "a.py").read_bytes() == _reference(tmp_path, tmp_path / "nets" / "a.prototxt", "a")
    assert not (tmp_path / "nets" / "a.py").exists()
    assert _run(capsys, "nets/a.prototxt", "--check", "--out-dir", "gen/models") == (0, "", "")


def test_out_dir_refuses_two_sources_for_one_module(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _net(tmp_path / "x" / "deploy.prototxt")
    _net(tmp_path / "y" / "deploy.prototxt")
    code, out, err = _run(capsys, "x/deploy.prototxt", "y/deploy.prototxt", "--write", "--out-dir", "gen")
    assert (code, out) == (2, "")
    assert err == "caffe2py: error: x/deploy.prototxt and y/deploy.prototxt would both write gen/deploy.py\n"
    assert not (tmp_path / "gen").exists()


def test_check_prints_a_diff_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _net(tmp_path / "a.prototxt", 4)

    code, out, err = _run(capsys, "a.prototxt", "--check")
    assert (code, err) == (1, "would write a.py\n")
    assert out.startswith("--- /dev/null\n+++ a.py\n")
    assert not (tmp_path / "a.py").exists()

    assert _run(capsys, "a.prototxt", "--write")[0] == 1
    written = (tmp_path / "a.py").read_bytes()
    assert _run(capsys, "a.prototxt", "--check") == (0, "", "")

    _net(tmp_path / "a.prototxt", 7)
    code, out, err = _run(capsys, "a.prototxt", "--check")
    assert (code, err) == (1, "would rewrite a.py\n")
    assert out.startswith("--- a.py\n+++ a.py\n@@ ")
    changed = [line for line in out.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    # The prototxt's hash in the header and the convolution line are all that differ.
    assert len(changed) == 4
    assert any(line.startswith("-") and "layers.Conv2D(4, 3" in line for line in changed)
    assert any(line.startswith("+") and "layers.Conv2D(7, 3" in line for line in changed)
    assert (tmp_path / "a.py").read_bytes() == written


def test_check_diff_applies_with_patch(tmp_path, monkeypatch, capsys):
    if not any((Path(d) / "patch").is_file() for d in os.get_exec_path()):
        pytest.skip("the patch program is not installed")
    monkeypatch.chdir(tmp_path)
    _net(tmp_path / "a.prototxt", 4)
    assert _run(capsys, "a.prototxt", "--write")[0] == 1
    _net(tmp_path / "a.prototxt", 3)
    code, diff, _ = _run(capsys, "a.prototxt", "--check")
    assert code == 1
    subprocess.run(["patch", "-s", "-p0"], input=diff, text=True, check=True, cwd=tmp_path)
    assert _run(capsys, "a.prototxt", "--check") == (0, "", "")


def test_error_is_one_line_and_only_the_failing_file_is_skipped(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.prototxt").write_text(BROKEN)
    (tmp_path / "bad.py").write_text("# kept\n")
    _net(tmp_path / "good.prototxt")

    code, out, err = _run(capsys, "bad.prototxt", "good.prototxt", "--write")
    assert code == 2
    assert out == "wrote good.py\n"
    assert re.fullmatch(r"caffe2py: error: bad\.prototxt:4: layer 'relu' \(ReLU\): [^\n]*'missing'[^\n]*\n", err)
    assert (tmp_path / "bad.py").read_text() == "# kept\n"

    code, out, err = _run(capsys, "bad.prototxt", "good.prototxt", "--check")
    assert (code, out) == (2, "")
    assert err.startswith("caffe2py: error: bad.prototxt:4: ") and err.count("\n") == 1


@pytest.mark.parametrize("failing", ["chmod", "replace"])
def test_a_failed_write_keeps_the_old_module_whole(tmp_path, monkeypatch, capsys, failing):
    monkeypatch.chdir(tmp_path)
    _net(tmp_path / "a.prototxt", 4)
    assert _run(capsys, "a.prototxt", "--write")[0] == 1
    old = (tmp_path / "a.py").read_bytes()
    _net(tmp_path / "a.prototxt", 5)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", "a.py")

    # chmod fails after the temporary file is written, replace when it is about to be renamed.
    monkeypatch.setattr(cli.os, failing, disk_full)
    code, out, err = _run(capsys, "a.prototxt", "--write")
    monkeypatch.undo()
    assert (code, out, err) == (2, "", "caffe2py: error: a.py: No space left on device\n")
    assert (tmp_path / "a.py").read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.prototxt", "a.py"]


def test_errors_about_outputs_name_the_users_paths(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _net(tmp_path / "a.prototxt", 4)
    blobs = [np.zeros((4, 3, 3, 3), np.float32), np.zeros(4, np.float32)]
    (tmp_path / "a.caffemodel").write_bytes(caffemodel_bytes([("conv", "Convolution", blobs)]))
    (tmp_path / "w.npz").mkdir()
    code, out, err = _run(capsys, "a.prototxt", "--weights", "a.caffemodel", "--npz", "w.npz")
    assert (code, out, err) == (2, "", "caffe2py: error: w.npz: Is a directory\n")
    code, out, err = _run(capsys, "a.prototxt", "--weights", "a.caffemodel", "-o", "missing/a.py")
    assert (code, out, err) == (2, "", "caffe2py: error: missing/a.npz: No such file or directory\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.caffemodel", "a.prototxt", "w.npz"]


def test_permissions_of_written_modules(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    umask = os.umask(0o027)
    try:
        _net(tmp_path / "a.prototxt", 4)
        _net(tmp_path / "b.prototxt", 4)
        (tmp_path / "b.py").write_text("# old\n")
        os.chmod(tmp_path / "b.py", 0o604)
        assert _run(capsys, "a.prototxt", "b.prototxt", "--write")[0] == 1
    finally:
        os.umask(umask)
    # A new module gets what open() would give it (not mkstemp's private 0600); a rewritten one keeps its mode.
    assert stat.S_IMODE((tmp_path / "a.py").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "b.py").stat().st_mode) == 0o604


def test_single_prototxt_still_goes_to_stdout_or_o(tmp_path, monkeypatch, capsysbinary):
    monkeypatch.chdir(tmp_path)
    _net(tmp_path / "a.prototxt")
    assert cli.main(["a.prototxt"]) == 0
    printed = capsysbinary.readouterr().out
    assert printed == _reference(tmp_path, tmp_path / "a.prototxt", "a")
    assert not (tmp_path / "a.py").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["a.prototxt", "b.prototxt"], "several prototxts need --write or --check"),
        (["a.prototxt", "--write", "-o", "x.py"], "-o/--output cannot be combined with --write/--check"),
        (["a.prototxt", "--check", "--weights", "a.caffemodel"], "--weights cannot be combined"),
        (["a.prototxt", "--write", "--check"], "not allowed with argument"),
        (["a.prototxt", "--out-dir", "gen"], "--out-dir goes with --write or --check"),
    ],
)
def test_option_conflicts_are_usage_errors(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    _net(tmp_path / "a.prototxt")
    _net(tmp_path / "b.prototxt")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.prototxt", "b.prototxt"]


def test_verify_is_routed_to_caffe2py_verify(monkeypatch):
    calls = []
    fake = types.ModuleType("caffe2py.verify")
    fake.main = lambda argv: calls.append(argv) or 3
    monkeypatch.setitem(sys.modules, "caffe2py.verify", fake)
    assert cli.main(["verify", "net.prototxt", "--weights", "net.caffemodel"]) == 3
    assert calls == [["net.prototxt", "--weights", "net.caffemodel"]]


def test_verify_missing_is_a_clear_error(monkeypatch, capsys):
    # None in sys.modules makes the import fail as it does when the file is absent.
    monkeypatch.setitem(sys.modules, "caffe2py.verify", None)
    assert cli.main(["verify", "net.prototxt"]) == 2
    assert capsys.readouterr().err == "caffe2py: error: 'caffe2py verify' is not part of this installation of caffe2py\n"


def test_header_names_version_file_and_hash_but_no_time_or_place(tmp_path, capsysbinary):
    first = _net(tmp_path / "one" / "net.prototxt")
    second = tmp_path / "two" / "elsewhere" / "net.prototxt"
    second.parent.mkdir(parents=True)
    second.write_bytes(first.read_bytes())
    os.utime(second, ns=(10**18, 10**18))
    texts = []
    for path in (first, second):
        assert cli.main([str(path)]) == 0
        texts.append(capsysbinary.readouterr().out.decode())
    assert texts[0] == texts[1]

    text = texts[0]
    sha = hashlib.sha256(first.read_bytes()).hexdigest()
    header = text.split('"""')[1]
    assert f"caffe2py {__version__}" in header and "net.prototxt" in header
    assert re.findall(r"\b[0-9a-f]{64}\b", text) == [sha]
    assert str(tmp_path) not in text and "/one/" not in text
    assert not re.search(r"\b(19|20)\d\d-\d\d-\d\d\b|\b\d\d:\d\d(:\d\d)?\b", text)


def test_output_does_not_depend_on_the_hash_seed():
    sources = sorted((ROOT / "generated_examples").glob("*.prototxt"))
    if SHARED.is_dir():
        sources += sorted((SHARED / "corpus").glob("**/*.prototxt"))
    if not sources:
        pytest.skip(f"neither {ROOT / 'generated_examples'} nor {SHARED / 'corpus'} holds a prototxt")
    # black is a pure function of its input and is most of the run time on big nets, so it is
    # replaced by the identity: the digests are of the text the translator itself produced.
    # A net that fails is retried with --stub-unknown, so its stubs are compared too.
    script = """
import hashlib, sys
import black
from caffe2py.convert import translate_to_source
from caffe2py.emit import Options
from caffe2py.errors import TranslationError

black.format_str = lambda text, mode: text
for path in sys.argv[1:]:
    try:
        text = translate_to_source(path)
    except TranslationError:
        try:
            text = translate_to_source(path, options=Options(stub_unknown=True))
        except TranslationError as exc:
            text = "error: " + str(exc)
    print(path, hashlib.sha256(text.encode()).hexdigest())
"""
    runs = {
        seed: subprocess.Popen(
            [sys.executable, "-c", script, *map(str, sources)],
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in ("0", "12345")
    }
    outputs = {}
    for seed, process in runs.items():
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err
        outputs[seed] = out.splitlines()
    assert len(outputs["0"]) == len(sources)
    differ = [a.split()[0] for a, b in zip(outputs["0"], outputs["12345"]) if a != b]
    assert not differ, f"output depends on PYTHONHASHSEED: {differ}"


def _ensure_pre_commit() -> None:
    if importlib.util.find_spec("pre_commit") is not None:
        return
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "pre-commit"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        if OFFLINE.search(done.stdout + done.stderr):
            pytest.skip("pre-commit is not installed and PyPI cannot be reached to install it")
        pytest.fail(f"pip install pre-commit failed:\n{done.stdout}{done.stderr}")


def test_pre_commit_hook(tmp_path):
    _ensure_pre_commit()
    import yaml  # pre-commit's own dependency

    manifest = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    (hook,) = [h for h in manifest if h["id"] == "caffe2py"]
    assert hook["language"] == "python" and re.search(hook["files"], "nets/deploy.prototxt")
    command, *hook_args = shlex.split(hook["entry"])
    assert command == "caffe2py"
    # The hook as published, but run from this checkout rather than installed from a git tag.
    local = {**hook, "language": "system", "entry": shlex.join([sys.executable, "-m", "caffe2py", *hook_args])}
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / ".pre-commit-config.yaml").write_text(yaml.safe_dump({"repos": [{"repo": "local", "hooks": [local]}]}))
    net = _net(repo / "models" / "net.prototxt", 4)
    (repo / "README.md").write_text("not a net\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home")}

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args], cwd=repo, check=True, capture_output=True)

    def pre_commit() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "pre_commit", "run", "--all-files", "--color", "never"],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    git("init", "-q")
    git("add", ".")
    first = pre_commit()
    assert first.returncode == 1, first.stdout + first.stderr
    assert "rewrote" not in first.stdout and "wrote models/net.py" in first.stdout
    module = repo / "models" / "net.py"
    assert module.read_bytes() == _reference(tmp_path, net, "net")
    assert not (repo / "README.py").exists()

    git("add", ".")
    second = pre_commit()
    assert second.returncode == 0, second.stdout + second.stderr

    _net(net, 8)
    git("add", ".")
    third = pre_commit()
    assert third.returncode == 1, third.stdout + third.stderr
    assert "rewrote models/net.py" in third.stdout
    assert "layers.Conv2D(8, 3" in module.read_text()
    git("add", ".")
    assert pre_commit().returncode == 0
