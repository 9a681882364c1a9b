"""The public Python API, used as a build script would: only the names ``caffe2py`` exports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import caffe2py
from tests.refnet import caffemodel_bytes

ROOT = Path(__file__).resolve().parents[1]

# A data layer: its shape comes only from input_shape, as with `--input-shape`.
NET = """name: "tiny"
layer { name: "data" type: "Data" top: "data" top: "label" }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 3 kernel_size: 3 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" inner_product_param { num_output: 4 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
"""


@pytest.fixture
def net(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.prototxt"
    path.write_text(NET)
    return path


def test_exports():
    assert sorted(caffe2py.__all__) == ["TranslatedNet", "TranslationError", "__version__", "convert_weights", "translate"]
    for name in caffe2py.__all__:
        assert getattr(caffe2py, name).__doc__ or name == "__version__"


def test_import_is_light():
    code = (
        "import sys, caffe2py; "
        "heavy = {'numpy', 'tensorflow', 'keras', 'jinja2', 'black', 'google'} & {m.split('.')[0] for m in sys.modules}; "
        "sys.exit(sorted(heavy) or 0)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_translate_is_the_command_line_with_keyword_options(net, tmp_path):
    result = caffe2py.translate(net, input_shape={"data": (1, 2, 6, 5)}, fully_conv=True)
    assert isinstance(result, caffe2py.TranslatedNet)
    cli = subprocess.run(
        [sys.executable, "-m", "caffe2py", str(net), "--input-shape", "data=1,2,6,5", "--fully-conv"],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )
    assert result.source == cli.stdout
    assert "layers.Conv2D(4, (4, 3)" in result.source  # the InnerProduct became a convolution
    assert result.plan[0].startswith("conv (Convolution) -> Conv2D 'conv'")
    # The same options spelled as on the command line.
    again = caffe2py.translate(str(net), input_shape=["data=1,2,6,5"], fully_conv=True, phase="TEST")
    assert again.source == result.source
    assert result.write(tmp_path / "tiny.py").read_text() == result.source


def test_convert_weights(net, tmp_path):
    rng = np.random.default_rng(0)
    kernel, bias = rng.normal(size=(3, 2, 3, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    fc = rng.normal(size=(4, 3 * 2 * 2)).astype(np.float32)
    model = tmp_path / "tiny.caffemodel"
    model.write_bytes(caffemodel_bytes([("conv", "Convolution", [kernel, bias]), ("fc", "InnerProduct", [fc, np.zeros(4)])]))
    npz = tmp_path / "weights.npz"
    keys = caffe2py.convert_weights(net, model, npz, input_shape={"data": (1, 2, 4, 4)})
    assert sorted(keys) == ["conv/bias", "conv/kernel", "fc/bias", "fc/kernel"]
    with np.load(npz, allow_pickle=False) as arrays:
        np.testing.assert_array_equal(arrays["conv/kernel"], kernel.transpose(2, 3, 1, 0))
        # Keras flattens H,W,C where Caffe flattens C,H,W: the rows are permuted, not reshaped.
        np.testing.assert_array_equal(arrays["fc/kernel"], fc.reshape(4, 3, 2, 2).transpose(2, 3, 1, 0).reshape(12, 4))
    translated = caffe2py.translate(net, input_shape={"data": (1, 2, 4, 4)}, npz=npz)
    assert '"weights.npz"' in translated.source
    kernel[0, 0, 0, 0] = np.nan
    model.write_bytes(caffemodel_bytes([("conv", "Convolution", [kernel, bias]), ("fc", "InnerProduct", [fc, np.zeros(4)])]))
    with pytest.warns(UserWarning, match=r"tiny\.caffemodel: layer 'conv': weights contain NaN"):
        translated.convert_weights(model, npz)


def test_errors(net, tmp_path):
    with pytest.raises(caffe2py.TranslationError, match=r"tiny\.prototxt.*the shape of input 'data' is unknown"):
        caffe2py.translate(net)
    with pytest.raises(TypeError, match="unknown translation option 'input_shapes'"):
        caffe2py.translate(net, input_shapes={"data": (1, 2, 4, 4)})
    with pytest.raises(TypeError, match="unknown translation option 'write'"):
        caffe2py.translate(net, write=True)
    with pytest.raises(ValueError, match="input_shape.*NAME=N,C,H,W"):
        caffe2py.translate(net, input_shape="data=1,2,x")
    with pytest.raises(ValueError, match="phase"):
        caffe2py.translate(net, input_shape={"data": (1, 2, 4, 4)}, phase="DEPLOY")
    # A caffemodel for another net: the error names the user's file, and no .npz is left behind.
    other = tmp_path / "other.caffemodel"
    other.write_bytes(caffemodel_bytes([("conv", "Convolution", [np.zeros((3, 2, 5, 5)), np.zeros(3)])]))
    with pytest.raises(caffe2py.TranslationError, match=r"other\.caffemodel: layer 'conv' \(Convolution\): blob 0 has shape"):
        caffe2py.convert_weights(net, other, tmp_path / "w.npz", input_shape={"data": (1, 2, 4, 4)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.caffemodel", "tiny.prototxt"]
