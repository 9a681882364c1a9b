"""caffe2py verify: translated model against a Caffe runtime, blob by blob, on corpus nets and broken translations."""

from __future__ import annotations

import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from caffe2py import verify
from caffe2py.convert import translate
from caffe2py.weights import write_npz

pytest.importorskip("cv2", reason="opencv-python-headless<5 is the independent Caffe runtime")

SHARED = Path(__file__).resolve().parents[2] / "shared"
CORPUS = SHARED / "corpus"
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} (corpus nets, oracle cases) is not present")


def case_weights(case: str, tmp_path: Path) -> Path:
    """The random weights of an oracle case, as its make_case.py writes them."""
    script, folder = SHARED / "oracle" / "make_case.py", SHARED / "oracle" / "cases" / case
    subprocess.run([sys.executable, str(script), str(folder), str(tmp_path)], check=True)
    return tmp_path / "weights.caffemodel"


def run(capsys, *argv) -> tuple[int, str, str]:
    code = verify.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "prototxt,weights,extra",
    [
        ("lenet_pretrained/lenet.prototxt", "lenet_pretrained/lenet_iter_10000.caffemodel", []),
        ("cifar10/cifar10_quick.prototxt", "cifar10_quick", []),
        ("squeezenet_v1.1/deploy.prototxt", "squeezenet_v1.1", ["--input-shape", "data=1,3,227,227"]),
    ],
)
def test_corpus_nets_pass(capsys, tmp_path, prototxt, weights, extra):
    caffemodel = CORPUS / weights if weights.endswith(".caffemodel") else case_weights(weights, tmp_path)
    code, out, _ = run(capsys, CORPUS / prototxt, caffemodel, *extra)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[1].split() == ["blob", "shape", "max", "abs", "error", "relative", "error"]
    translation = translate(CORPUS / prototxt)
    blobs = [line.split()[0] for line in lines[2:-1] if not line.startswith("not compared")]
    # every blob the translation computes, in network order (the inputs are given, not computed)
    assert blobs == [b for b in translation.blobs if b not in {t.blob for t in translation.inputs}]
    assert lines[-1] == f"ok: all {len(blobs)} blobs within 0.0001"


def swapped(npz: Path, a: str, b: str, out: Path) -> Path:
    """A copy of ``npz`` with the arrays of keys ``a`` and ``b`` exchanged."""
    with np.load(npz) as arrays:
        values = {k: arrays[k] for k in arrays.files}
    values[a], values[b] = values[b], values[a]
    np.savez(out, **values)
    return out


def test_swapped_weights_name_the_first_divergent_blob(capsys, tmp_path):
    prototxt = CORPUS / "squeezenet_v1.1" / "deploy.prototxt"
    caffemodel = case_weights("squeezenet_v1.1", tmp_path)
    write_npz(translate(prototxt), caffemodel, tmp_path / "good.npz")
    # Same shapes, so the model loads them: only the numbers give the mistake away.
    broken = swapped(tmp_path / "good.npz", "fire4_expand3x3/kernel", "fire5_expand3x3/kernel", tmp_path / "bad.npz")
    code, out, _ = run(capsys, prototxt, caffemodel, "--input-shape", "data=1,3,227,227", "--npz", broken)
    assert code == 1
    assert "the first is 'fire4/expand3x3'" in out.splitlines()[-1]
    rows = {line.split()[0]: line for line in out.splitlines()[2:-1]}
    assert not rows["fire4/expand1x1"].endswith("FAIL") and rows["fire4/expand3x3"].endswith("FAIL")
    code, out, _ = run(capsys, prototxt, caffemodel, "--input-shape", "data=1,3,227,227", "--npz", tmp_path / "good.npz")
    assert code == 0, out


def test_bad_input_exits_2_with_one_line(capsys, tmp_path):
    prototxt = CORPUS / "lenet_pretrained" / "lenet.prototxt"
    code, out, err = run(capsys, prototxt, tmp_path / "missing.caffemodel")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("caffe2py: error: ") and "missing.caffemodel" in err
    with zipfile.ZipFile(tmp_path / "other.npz", "w"):
        pass  # an empty archive: every array missing
    code, _, err = run(capsys, prototxt, CORPUS / "lenet_pretrained" / "lenet_iter_10000.caffemodel", "--npz", tmp_path / "other.npz")
    assert code == 2 and err.count("\n") == 1 and "missing conv1/kernel" in err


def test_pycaffe_is_preferred_when_importable(capsys, tmp_path, monkeypatch):
    """A stand-in with pycaffe's interface (computing with OpenCV) takes the pycaffe route."""
    calls = []

    class Blob:
        def __init__(self, data):
            self.data = data

        def reshape(self, *shape):
            self.data = np.zeros(shape, np.float32)

    class Net:
        def __init__(self, prototxt, caffemodel, phase):
            calls.append(("Net", phase))
            self.prototxt, self.caffemodel = Path(prototxt), Path(caffemodel)
            self.blobs = {"data": Blob(None)}

        def forward(self):
            writers = verify.caffe_writers(self.prototxt, {})
            inputs = {"data": self.blobs["data"].data}
            for blob, value in verify.opencv_blobs(self.prototxt, self.caffemodel, inputs, writers).items():
                self.blobs[blob] = Blob(value * np.float32(1.5) if blob == "ip2" else value)

    caffe = types.SimpleNamespace(TEST="TEST", Net=Net, set_mode_cpu=lambda: calls.append("cpu"))
    monkeypatch.setitem(sys.modules, "caffe", caffe)
    prototxt = CORPUS / "lenet_pretrained" / "lenet.prototxt"
    code, out, _ = run(capsys, prototxt, CORPUS / "lenet_pretrained" / "lenet_iter_10000.caffemodel")
    assert calls == ["cpu", ("Net", "TEST")]
    assert "against pycaffe" in out.splitlines()[0]
    assert code == 1 and "the first is 'ip2'" in out.splitlines()[-1]


# The input's shape comes from the project's pyproject.toml.
BN_NET = """name: "bn"
input: "data"
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 8 kernel_size: 3 } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "relu" type: "PReLU" bottom: "conv" top: "conv" }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" inner_product_param { num_output: 5 } }
"""


def test_without_a_caffemodel_random_weights_go_through_both_runtimes(capsys, tmp_path):
    prototxt = tmp_path / "bn.prototxt"
    prototxt.write_text(BN_NET)
    # fully-conv is not an option of verify: the table's options verify lacks are left out.
    (tmp_path / "pyproject.toml").write_text(
        '[tool.caffe2py.files."*.prototxt"]\ninput-shape = ["data=1,3,12,12"]\nfully-conv = true\n'
    )
    code, out, err = run(capsys, prototxt, "--seed", "3")
    assert (code, err) == (0, ""), out + err
    lines = out.splitlines()
    assert lines[0].endswith("random weights (seed 3)")
    assert [line.split()[0] for line in lines[2:-1]] == ["conv", "fc"] and lines[-1] == "ok: all 2 blobs within 0.0001"
    # The same seed gives the same weights; --npz has no caffemodel to be checked against.
    translation = translate(prototxt, input_shapes={"data": (1, 3, 12, 12)})
    verify.write_random_caffemodel(translation, 3, tmp_path / "a.caffemodel")
    verify.write_random_caffemodel(translation, 3, tmp_path / "b.caffemodel")
    assert (tmp_path / "a.caffemodel").read_bytes() == (tmp_path / "b.caffemodel").read_bytes()
    code, _, err = run(capsys, prototxt, "--npz", tmp_path / "w.npz")
    assert code == 2 and "--npz needs the caffemodel" in err


def test_random_weights_are_he_scaled_with_positive_variances():
    rng = np.random.default_rng(0)
    kernel, bias = verify.random_blobs(rng, [(64, 32, 3, 3), (64,)])
    assert abs(kernel.std() / np.sqrt(2 / (32 * 9)) - 1) < 0.05 and abs(kernel.mean()) < 0.01
    assert 0 < np.abs(bias).max() < 0.6
    _, variance, factor = verify.random_blobs(rng, [(64,), (64,), (1,)])  # BatchNorm's blobs
    assert variance.min() >= 0.5 and factor[0] > 0
    scale, _ = verify.random_blobs(rng, [(1, 16, 1, 1), (1, 16, 1, 1)])  # SegNet's BN: per channel
    assert scale.min() >= 0.5
