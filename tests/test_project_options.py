"""Per-file options from the project's pyproject.toml: found as black finds it, command line wins, real pre-commit."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import caffe2py
from caffe2py import cli
from caffe2py.config import find_project_root

ROOT = Path(__file__).resolve().parents[1]
FCN = ROOT.parent / "shared" / "corpus" / "fcn" / "voc-fcn32s-val.prototxt"

# The data layer's shape comes only from options: translating it without one is an error.
NET = """name: "tiny"
layer { name: "data" type: "Data" top: "data" }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 2 kernel_size: 3 } }
"""


def _project(tmp_path: Path, pyproject: str) -> Path:
    project = tmp_path / "project"
    (project / "nets" / "sub").mkdir(parents=True)
    (project / "pyproject.toml").write_text(pyproject)
    for name in ("nets/a.prototxt", "nets/b.prototxt", "nets/sub/c.prototxt"):
        (project / name).write_text(NET)
    return project


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_project_root_is_found_as_black_finds_it(tmp_path):
    project = _project(tmp_path, "")
    (project / "nets" / "sub" / ".git").mkdir()
    assert find_project_root([project / "nets" / "a.prototxt", project / "nets" / "b.prototxt"]) == project
    assert find_project_root([project / "nets" / "sub" / "c.prototxt"]) == project / "nets" / "sub"
    # The common parent of files in both folders is nets/, below which the root is searched for.
    assert find_project_root([project / "nets" / "sub" / "c.prototxt", project / "nets" / "a.prototxt"]) == project


def test_tables_by_path_and_glob_and_the_command_line_wins(tmp_path, monkeypatch, capsys):
    project = _project(
        tmp_path,
        '[tool.caffe2py.files."nets/*.prototxt"]\ninput-shape = ["data=1,3,8,8"]\n\n'
        '[tool.caffe2py.files."nets/b.prototxt"]\ninput-shape = ["data=1,3,10,10"]\nfully-conv = true\n',
    )
    monkeypatch.chdir(project / "nets")  # paths relative to the current folder, keys to the project root
    shapes = {"data": (1, 3, 8, 8)}
    code, out, err = _run(capsys, "a.prototxt")
    assert (code, err) == (0, "") and out == caffe2py.translate(project / "nets" / "a.prototxt", input_shape=shapes).source
    # A later table adds to (and overrides) an earlier one.
    code, out, _ = _run(capsys, "b.prototxt")
    want = caffe2py.translate(project / "nets" / "b.prototxt", input_shape={"data": (1, 3, 10, 10)}, fully_conv=True)
    assert code == 0 and out == want.source
    # The command line wins over the file.
    code, out, _ = _run(capsys, "a.prototxt", "--input-shape", "data=1,3,12,12")
    assert code == 0 and out == caffe2py.translate(project / "nets" / "a.prototxt", input_shape={"data": (1, 3, 12, 12)}).source
    # --write reads the tables too (the glob's * crosses folders, as fnmatch's does).
    code, out, err = _run(capsys, "a.prototxt", "sub/c.prototxt", "--write")
    assert (code, err) == (1, ""), err
    assert "INPUT_SHAPE = (8, 8, 3)" in (project / "nets" / "sub" / "c.py").read_text()
    assert _run(capsys, "a.prototxt", "sub/c.prototxt", "--check")[0] == 0


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('weights = "x.caffemodel"', "'weights' is not a per-file option"),
        ("input_shape = []", "'input_shape' is not a per-file option"),
        ('input-shape = ["data=1,x"]', "input-shape: 'data=1,x' is not NAME=N,C,H,W"),
        ("fully-conv = 1", "fully-conv is a flag"),
        ('phase = "DEPLOY"', "phase = 'DEPLOY'; choose one of TEST, TRAIN"),
    ],
)
def test_bad_tables_name_the_pyproject(tmp_path, monkeypatch, capsys, table, message):
    project = _project(tmp_path, f'[tool.caffe2py.files."nets/a.prototxt"]\n{table}\n')
    monkeypatch.chdir(project)
    code, out, err = _run(capsys, "nets/a.prototxt")
    assert (code, out) == (2, "")
    assert err.startswith(f"caffe2py: error: {project / 'pyproject.toml'}: [tool.caffe2py.files.\"nets/a.prototxt\"]: ")
    assert message in err


def test_pre_commit_with_a_prototxt_that_needs_an_input_shape(tmp_path):
    """FCN's val net has a Python data layer: only the pyproject.toml table gives it a shape."""
    if not FCN.is_file():
        pytest.skip(f"{FCN} is not present")
    pytest.importorskip("pre_commit", reason="pre-commit is not installed")
    import yaml  # pre-commit's own dependency

    (hook,) = [h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text()) if h["id"] == "caffe2py"]
    _, *hook_args = shlex.split(hook["entry"])
    local = {**hook, "language": "system", "entry": shlex.join([sys.executable, "-m", "caffe2py", *hook_args])}
    repo = tmp_path / "repo"
    (repo / "nets").mkdir(parents=True)
    (repo / ".pre-commit-config.yaml").write_text(yaml.safe_dump({"repos": [{"repo": "local", "hooks": [local]}]}))
    net = repo / "nets" / "fcn32s.prototxt"
    net.write_bytes(FCN.read_bytes())
    (repo / "pyproject.toml").write_text('[tool.caffe2py.files."nets/fcn*.prototxt"]\ninput-shape = ["data=1,3,500,500"]\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home")}

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args], cwd=repo, check=True, capture_output=True)

    def pre_commit() -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "pre_commit", "run", "--all-files", "--color", "never"]
        return subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=300, check=False)

    git("init", "-q")
    git("add", ".")
    first = pre_commit()
    assert first.returncode == 1, first.stdout + first.stderr
    assert "wrote nets/fcn32s.py" in first.stdout
    module = (repo / "nets" / "fcn32s.py").read_text()
    assert module == caffe2py.translate(net, input_shape={"data": (1, 3, 500, 500)}).source
    git("add", ".")
    second = pre_commit()
    assert second.returncode == 0, second.stdout + second.stderr


def test_file_options_are_relative_to_the_project_root(tmp_path):
    from caffe2py.config import load

    project = _project(tmp_path, '[tool.caffe2py.files."nets/a.prototxt"]\nmean = "means/imagenet.binaryproto"\nlevel = 2\n')
    options = load([project / "nets" / "a.prototxt"], cli.parser())
    assert options.arguments_for(project / "nets" / "a.prototxt") == [
        "--mean", str(project / "means" / "imagenet.binaryproto"), "--level", "2",
    ]
    assert options.arguments_for(project / "nets" / "b.prototxt") == []
    assert options.arguments_for(tmp_path / "elsewhere.prototxt") == []
