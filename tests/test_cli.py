"""The command line: module on stdout, one-line located errors with exit 2, weights beside the module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.refnet import caffemodel_bytes

ROOT = Path(__file__).resolve().parents[1]
NET = """name: "tiny"
input: "data"
input_shape { dim: 1 dim: 2 dim: 5 dim: 5 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 3 kernel_size: 3 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
"""


def caffe2py(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "caffe2py", *args], capture_output=True, text=True, cwd=cwd, check=False)


def test_module_on_stdout(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    run = caffe2py(str(tmp_path / "net.prototxt"))
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith('"""Keras model of the Caffe net tiny')
    assert "layers.Conv2D(3, 3, name=\"conv\")" in run.stdout
    assert run.stderr == ""


def _error(tmp_path, text: str, *extra: str) -> str:
    (tmp_path / "bad.prototxt").write_text(text)
    run = caffe2py(str(tmp_path / "bad.prototxt"), *extra)
    assert run.returncode == 2
    assert run.stdout == ""
    assert "Traceback" not in run.stderr
    assert run.stderr.count("\n") == 1, run.stderr
    return run.stderr


def test_syntax_error_names_file_and_line(tmp_path):
    message = _error(tmp_path, NET + "layer { name: 'x' type: 'ReLU' bottom: 'conv' top 'x' }\n")
    assert "bad.prototxt:7:" in message and "column" in message


def test_unknown_type_names_every_layer(tmp_path):
    message = _error(
        tmp_path,
        NET + 'layer { name: "a" type: "Mystery" bottom: "conv" top: "a" }\n'
        'layer { name: "b" type: "Enigma" bottom: "a" top: "b" }\n',
    )
    assert "bad.prototxt:7:" in message and "'a'" in message and "'Mystery'" in message
    assert "line 8: layer 'b' of type 'Enigma'" in message


def test_missing_bottom_names_layer_and_line(tmp_path):
    message = _error(tmp_path, NET + 'layer { name: "p" type: "ReLU" bottom: "nowhere" top: "p" }\n')
    assert "bad.prototxt:7: layer 'p' (ReLU): bottom 'nowhere' is not produced" in message


def test_weights_written_beside_module(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    rng = np.random.default_rng(0)
    blobs = [rng.normal(size=(3, 2, 3, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)]
    (tmp_path / "net.caffemodel").write_bytes(caffemodel_bytes([("conv", "Convolution", blobs)]))
    run = caffe2py(str(tmp_path / "net.prototxt"), "--weights", str(tmp_path / "net.caffemodel"), "-o", str(tmp_path / "model.py"))
    assert run.returncode == 0, run.stderr
    with np.load(tmp_path / "model.npz", allow_pickle=False) as npz:
        assert sorted(npz.files) == ["conv/bias", "conv/kernel"]
        np.testing.assert_array_equal(npz["conv/kernel"], blobs[0].transpose(2, 3, 1, 0))
        np.testing.assert_array_equal(npz["conv/bias"], blobs[1])


def test_bad_weights_leave_nothing_behind(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    wrong = [np.zeros((3, 2, 5, 5), np.float32), np.zeros(3, np.float32)]
    (tmp_path / "net.caffemodel").write_bytes(caffemodel_bytes([("conv", "Convolution", wrong)]))
    run = caffe2py(str(tmp_path / "net.prototxt"), "--weights", str(tmp_path / "net.caffemodel"), "-o", str(tmp_path / "model.py"))
    assert run.returncode == 2
    assert "layer 'conv' (Convolution): blob 0 has shape [3, 2, 5, 5] in the caffemodel, the net needs [3, 2, 3, 3]" in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.caffemodel", "net.prototxt"]


def test_list_layers_comes_from_the_registry():
    from caffe2py.layers import supported_types

    run = caffe2py("--list-layers")
    assert run.stdout.split() == supported_types()
    assert {"Convolution", "Pooling", "InnerProduct", "LRN", "BatchNorm"} <= set(supported_types())


def test_mean_file_gives_preprocess(tmp_path):
    from caffe2py import schema

    mean = schema.BlobProto()
    mean.shape.dim.extend([1, 2, 5, 5])
    mean.data.extend([float(i) for i in range(50)])
    (tmp_path / "mean.binaryproto").write_bytes(mean.SerializeToString())
    (tmp_path / "net.prototxt").write_text(NET)
    plain = caffe2py(str(tmp_path / "net.prototxt"))
    assert "def preprocess" not in plain.stdout
    run = caffe2py(str(tmp_path / "net.prototxt"), "--mean", str(tmp_path / "mean.binaryproto"), "-o", str(tmp_path / "net.py"))
    assert run.returncode == 0, run.stderr
    assert "def preprocess(" in (tmp_path / "net.py").read_text()
    assert (tmp_path / "mean.npy").is_file()
