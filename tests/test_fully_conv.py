"""--fully-conv: InnerProduct layers slid as convolutions, checked against the plain net on crops and Caffe's net surgery."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from caffe2py.convert import translate
from caffe2py.emit import Options
from caffe2py.errors import TranslationError
from caffe2py.render import render
from caffe2py.weights import write_npz
from tests.refnet import (
    assert_close,
    caffemodel_bytes,
    keras_forward,
    load_module,
    opencv_forward,
    oracle_case,
    to_caffe,
)

pytest.importorskip("cv2", reason="opencv-python-headless<5 is the independent Caffe runtime")

SHARED = Path(__file__).resolve().parents[2] / "shared"
CASES = SHARED / "oracle" / "cases"


def fully_conv_forward(prototxt: str, caffemodel: bytes, x: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
    """Translate with --fully-conv (kernels from the prototxt's own input size), run on NCHW ``x`` of any size."""
    work = Path(tempfile.mkdtemp(prefix="caffe2py_fc_"))
    (work / "net.prototxt").write_text(prototxt)
    (work / "net.caffemodel").write_bytes(caffemodel)
    translation = translate(work / "net.prototxt", options=Options(fully_conv=True))
    module = load_module(render(translation, "net.npz"))
    write_npz(translation, work / "net.caffemodel", work / "net.npz")
    model = module.build_model(outputs=outputs)
    module.load_weights(model, work / "net.npz")
    values = model(np.transpose(x, (0, 2, 3, 1)))
    values = values if isinstance(values, (list, tuple)) else [values]
    return {name: to_caffe(np.asarray(v), module.BLOBS[name][1]) for name, v in zip(outputs, values)}


# conv 3x3 (no padding, so a window of the big input is exactly a crop) and a 2x2/2 max pool: the
# first InnerProduct sees 4x2x3 at the prototxt's 6x8 input and slides in steps of 2 input pixels.
NET = """input: "data"
input_shape {{ dim: 1 dim: 3 dim: 6 dim: 8 }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param {{ num_output: 4 kernel_size: 3 }} }}
layer {{ name: "pool" type: "Pooling" bottom: "conv" top: "pool"
  pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "fc1" type: "InnerProduct" bottom: "pool" top: "fc1"
  inner_product_param {{ num_output: 5 {fc1} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "fc1" top: "fc1" }}
layer {{ name: "drop1" type: "Dropout" bottom: "fc1" top: "fc1" }}
layer {{ name: "fc2" type: "InnerProduct" bottom: "fc1" top: "fc2"
  inner_product_param {{ num_output: 6 {fc2} }} }}
layer {{ name: "prob" type: "Softmax" bottom: "fc2" top: "prob" }}
"""


@pytest.mark.parametrize(
    "fc1,fc2",
    [("", ""), ("transpose: true", "bias_term: false"), ("bias_term: false", "transpose: true")],
)
def test_each_location_is_the_plain_net_on_its_crop(fc1, fc2):
    rng = np.random.default_rng(len(fc1) * 7 + len(fc2))
    proto = NET.format(fc1=fc1, fc2=fc2)

    def ip(num, inputs, params):
        w = rng.normal(0, 0.3, (inputs, num) if "transpose" in params else (num, inputs))
        return [w, rng.normal(0, 0.3, num)] if "bias_term" not in params else [w]

    weights = [
        ("conv", "Convolution", [rng.normal(0, 0.5, (4, 3, 3, 3)), rng.normal(0, 0.1, 4)]),
        ("fc1", "InnerProduct", ip(5, 4 * 2 * 3, fc1)),
        ("fc2", "InnerProduct", ip(6, 5, fc2)),
    ]
    x = rng.uniform(-1, 1, (2, 3, 10, 12)).astype(np.float32)
    got = fully_conv_forward(proto, caffemodel_bytes(weights), x, ["fc2", "prob"])
    assert got["prob"].shape == (2, 6, 3, 3)
    crops = np.concatenate([x[:, :, 2 * i : 2 * i + 6, 2 * j : 2 * j + 8] for i in range(3) for j in range(3)])
    # OpenCV ignores `transpose`: give it the (O, K) weights Caffe's transposed (K, O) blob stands for.
    transposed = {"fc1": "transpose" in fc1, "fc2": "transpose" in fc2}
    plain = [(n, t, [b[0].T, *b[1:]] if transposed.get(n) else b) for n, t, b in weights]
    want = opencv_forward(proto.replace("transpose: true", ""), {"data": crops}, plain, outputs=["fc2", "prob"])
    for name in ("fc2", "prob"):
        # crops are stacked location-major: (i, j, n, c) -> (n, c, i, j)
        maps = want[name].reshape(3, 3, 2, 6).transpose(2, 3, 0, 1)
        assert_close(got[name], maps)


def test_input_shape_is_free_and_the_fixed_size_gives_plain_outputs():
    rng = np.random.default_rng(3)
    proto = NET.format(fc1="", fc2="")
    weights = [
        ("conv", "Convolution", [rng.normal(0, 0.5, (4, 3, 3, 3)), rng.normal(0, 0.1, 4)]),
        ("fc1", "InnerProduct", [rng.normal(0, 0.3, (5, 24)), rng.normal(0, 0.3, 5)]),
        ("fc2", "InnerProduct", [rng.normal(0, 0.3, (6, 5)), rng.normal(0, 0.3, 6)]),
    ]
    x = rng.uniform(-1, 1, (2, 3, 6, 8)).astype(np.float32)
    got = fully_conv_forward(proto, caffemodel_bytes(weights), x, ["prob"])["prob"]
    assert got.shape == (2, 6, 1, 1)
    want = opencv_forward(proto, {"data": x}, weights, outputs=["prob"])["prob"]
    assert_close(got.reshape(2, 6), want)


def test_inner_product_on_a_non_spatial_input_stays_dense():
    rng = np.random.default_rng(4)
    proto = (
        'input: "data"\ninput_shape { dim: 3 dim: 10 }\n'
        'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 4 } }'
    )
    weights = [("fc", "InnerProduct", [rng.normal(size=(4, 10)), rng.normal(size=4)])]
    x = rng.normal(size=(3, 10)).astype(np.float32)
    got = keras_forward(proto, {"data": x}, weights, outputs=["fc"], fully_conv=True)["fc"]
    assert got.shape == (3, 4)
    assert_close(got, opencv_forward(proto, {"data": x}, weights, outputs=["fc"])["fc"])


def test_flatten_before_inner_product_is_refused_with_a_fix(tmp_path):
    (tmp_path / "net.prototxt").write_text(
        'input: "data"\ninput_shape { dim: 1 dim: 3 dim: 4 dim: 4 }\n'
        'layer { name: "flat" type: "Flatten" bottom: "data" top: "flat" }\n'
        'layer { name: "fc" type: "InnerProduct" bottom: "flat" top: "fc" inner_product_param { num_output: 2 } }'
    )
    with pytest.raises(TranslationError, match="remove the Flatten layer"):
        translate(tmp_path / "net.prototxt", options=Options(fully_conv=True))


@pytest.mark.skipif(not CASES.is_dir(), reason=f"{CASES} (BVLC Caffe reference outputs) is not present")
def test_caffenet_net_surgery_matches_caffe(tmp_path):
    """Caffe's net surgery example: CaffeNet made fully convolutional gives 8x8 maps on a 451x451 input."""
    case, inputs = oracle_case(CASES, "caffenet_surgery", tmp_path)  # weights of case bvlc_reference_caffenet
    prototxt = SHARED / case["prototxt"]
    translation = translate(prototxt, options=Options(fully_conv=True))
    module = load_module(render(translation, "net.npz"))
    write_npz(translation, tmp_path / "net.caffemodel", tmp_path / "net.npz")
    # The reference's surgered prototxt renames the classifier fc6..fc8 to fc6-conv..fc8-conv.
    names = {"prob": "prob", "fc8": "fc8-conv"}
    model = module.build_model(outputs=list(names))
    module.load_weights(model, tmp_path / "net.npz")
    got = model(np.transpose(inputs["data"], (0, 2, 3, 1)))
    expected = np.load(CASES / "caffenet_surgery" / "expected.npz")
    for (ours, theirs), value in zip(names.items(), got):
        want = expected[f"out/{theirs}"]
        assert want.shape == (1, 1000, 8, 8)
        assert_close(to_caffe(np.asarray(value), module.BLOBS[ours][1]), want)
