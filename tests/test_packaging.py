"""The wheel: built from the checkout, installed in a clean venv, its caffe2py script gives the checkout's output."""

from __future__ import annotations

import email.parser
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from caffe2py.convert import translate_to_source
from caffe2py.layers import supported_types

ROOT = Path(__file__).resolve().parents[1]
# Pip's words when it cannot reach the index, as opposed to a package that fails to install.
OFFLINE = re.compile(r"NewConnectionError|Temporary failure in name resolution|Network is unreachable|No route to host|ProxyError")
# What a source tree holds besides the package: none of it may be needed to build the wheel.
NOT_SHIPPED = shutil.ignore_patterns(
    ".git", ".venv", "tests", "generated_examples", "benchmarks", "docs", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
)

NET = """name: "packaged"
input: "data"
input_shape { dim: 1 dim: 3 dim: 12 dim: 12 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "norm" type: "LRN" bottom: "conv" top: "norm" lrn_param { local_size: 3 } }
layer { name: "pool" type: "Pooling" bottom: "norm" top: "pool" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
"""


def _run(*argv, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=600, check=False, **kwargs)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # A copy, so the build's egg-info and build/ folders never land in the checkout.
    tree = tmp_path_factory.mktemp("source") / "caffe2py"
    shutil.copytree(ROOT, tree, ignore=NOT_SHIPPED)
    dist = tmp_path_factory.mktemp("dist")
    # The test environment's setuptools, so the build itself needs no download.
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--disable-pip-version-check", "-w", dist, tree)
    assert built.returncode == 0, built.stdout + built.stderr
    (found,) = dist.glob("caffe2py-*.whl")
    return found


def test_wheel_holds_the_package_templates_and_schema(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"caffe2py/{p.relative_to(ROOT / 'translator').as_posix()}" for p in (ROOT / "translator").rglob("*.py")}
    expected |= {f"caffe2py/templates/{p.relative_to(ROOT / 'templates').as_posix()}" for p in (ROOT / "templates").rglob("*.jinja")}
    expected |= {"caffe2py/schema/caffe.proto", "caffe2py/schema/caffe.desc"}
    assert not expected - names, f"missing from the wheel: {sorted(expected - names)}"

    (dist_info,) = {n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")}
    with zipfile.ZipFile(wheel) as archive:
        metadata = email.parser.Parser().parsestr(archive.read(f"{dist_info}/METADATA").decode())
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    requires = {re.split(r"[ ;<>=!\[]", r, maxsplit=1)[0].lower() for r in metadata.get_all("Requires-Dist")}
    assert {"jinja2", "protobuf", "numpy", "black"} <= requires
    assert re.search(r"^caffe2py = caffe2py\.cli:main$", entry_points, re.MULTILINE)


def test_installed_console_script_translates(wheel, tmp_path):
    venv = tmp_path / "venv"
    made = _run(sys.executable, "-m", "venv", venv)
    assert made.returncode == 0, made.stderr
    python, script = venv / "bin" / "python", venv / "bin" / "caffe2py"
    installed = _run(python, "-m", "pip", "install", "--disable-pip-version-check", wheel)
    if installed.returncode != 0 and OFFLINE.search(installed.stdout + installed.stderr):
        pytest.skip("PyPI cannot be reached to install the wheel's dependencies (jinja2, protobuf, numpy, black)")
    assert installed.returncode == 0, installed.stdout + installed.stderr

    net = tmp_path / "work" / "packaged.prototxt"
    net.parent.mkdir()
    net.write_text(NET)
    # Run away from the checkout, so only the installed package can be imported.
    where = _run(python, "-c", "import caffe2py.render as r; print(r.__file__); print(r.templates_dir())", cwd=net.parent)
    assert where.returncode == 0, where.stderr
    assert all(Path(line).is_relative_to(venv) for line in where.stdout.splitlines()), where.stdout

    translated = _run(script, net.name, cwd=net.parent)
    assert translated.returncode == 0, translated.stderr
    assert translated.stdout == translate_to_source(net)
    assert "class LRN(layers.Layer):" in translated.stdout

    listed = _run(script, "--list-layers", cwd=net.parent)
    assert listed.stdout.split() == list(supported_types())

    broken = net.with_name("broken.prototxt")
    broken.write_text(NET.replace('bottom: "norm"', 'bottom: "nowhere"'))
    failed = _run(script, broken.name, "-o", "broken.py", cwd=net.parent)
    assert failed.returncode == 2 and failed.stdout == ""
    assert re.fullmatch(r"caffe2py: error: broken\.prototxt:\d+: layer 'pool' \(Pooling\): [^\n]+\n", failed.stderr)
    assert not (net.parent / "broken.py").exists()
