"""generated_examples/ is current, deterministic, lint-clean, and every module builds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from caffe2py.convert import translate_to_source

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "generated_examples").glob("*.prototxt"))


@pytest.mark.parametrize("prototxt", EXAMPLES, ids=lambda p: p.stem)
def test_example_is_current(prototxt):
    committed = prototxt.with_suffix(".py").read_text()
    assert translate_to_source(prototxt) == committed, (
        f"{prototxt.with_suffix('.py').name} is stale: regenerate with `caffe2py {prototxt.name} -o {prototxt.stem}.py`"
    )


def test_examples_are_ruff_and_black_clean():
    files = [str(p.with_suffix(".py")) for p in EXAMPLES]
    ruff = subprocess.run([sys.executable, "-m", "ruff", "check", "--isolated", *files], capture_output=True, text=True, check=False)
    assert ruff.returncode == 0, ruff.stdout + ruff.stderr
    black = subprocess.run([sys.executable, "-m", "black", "--check", "--quiet", *files], capture_output=True, text=True, check=False)
    assert black.returncode == 0, black.stderr


@pytest.mark.parametrize("prototxt", EXAMPLES, ids=lambda p: p.stem)
def test_example_builds(prototxt):
    from tests.refnet import load_module

    module = load_module(prototxt.with_suffix(".py").read_text())
    model = module.build_model()
    assert len(model.layers) > 1
    assert module.BLOBS, "every Caffe blob is mapped to a Keras layer"
    for name, (layer, _) in module.BLOBS.items():
        assert model.get_layer(layer) is not None, name


def test_generated_module_imports_only_keras_and_numpy():
    import ast

    for prototxt in EXAMPLES:
        tree = ast.parse(prototxt.with_suffix(".py").read_text())
        modules = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        modules |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert modules <= {"keras", "numpy"}, (prototxt.name, modules)


def test_translation_imports_neither_tensorflow_nor_numpy():
    # numpy takes a fifth of a small translation's time to import, and only weights need it.
    code = (
        "import sys; from caffe2py.convert import translate_to_source; "
        f"[translate_to_source(p) for p in {[str(p) for p in EXAMPLES]!r}]; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'jax', 'torch', 'numpy')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
