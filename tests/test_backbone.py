"""build_model(outputs=...) and load_weights(skip_missing=True): a converted net reused as a backbone."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from caffe2py.convert import translate
from caffe2py.emit import Options
from caffe2py.render import render
from caffe2py.weights import write_npz
from tests.refnet import assert_close, caffemodel_bytes, load_module, opencv_forward, to_caffe

pytest.importorskip("cv2", reason="opencv-python-headless<5 is the independent Caffe runtime")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
VGG16 = SHARED / "corpus" / "vgg16_v1" / "VGG_ILSVRC_16_layers_deploy.prototxt"
DOC = ROOT / "docs" / "backbone.md"

NET = """input: "data"
input_shape { dim: 2 dim: 3 dim: 9 dim: 11 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""
# OpenCV names a blob by the layer that last wrote it: conv1's final value is relu1's output.
OPENCV_NAME = {"conv1": "relu1", "pool1": "pool1", "fc": "fc", "prob": "prob"}


def _translate_with_weights(tmp_path: Path, prototxt: Path, layers, **kwargs):
    translation = translate(prototxt, **kwargs)
    (tmp_path / "net.caffemodel").write_bytes(caffemodel_bytes(layers))
    write_npz(translation, tmp_path / "net.caffemodel", tmp_path / "net.npz")
    return translation, load_module(render(translation, "net.npz"))


@pytest.mark.parametrize("outputs", [["fc", "conv1", "prob", "pool1"], ["pool1", "fc"], ["conv1", "prob", "conv1"]])
def test_outputs_are_the_requested_blobs_in_order(tmp_path, outputs):
    rng = np.random.default_rng(len(outputs))
    (tmp_path / "net.prototxt").write_text(NET)
    weights = [
        ("conv1", "Convolution", [rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4)]),
        ("fc", "InnerProduct", [rng.normal(size=(5, 4 * 4 * 5)), rng.normal(size=5)]),
    ]
    _, module = _translate_with_weights(tmp_path, tmp_path / "net.prototxt", weights)
    model = module.build_model(outputs=outputs)
    module.load_weights(model, tmp_path / "net.npz")
    assert len(model.outputs) == len(outputs)
    x = rng.normal(size=(2, 3, 9, 11)).astype(np.float32)
    got = model(np.transpose(x, (0, 2, 3, 1)))
    want = opencv_forward(NET, {"data": x}, weights, outputs=sorted({OPENCV_NAME[b] for b in outputs}))
    for blob, value in zip(outputs, got):
        assert_close(to_caffe(np.asarray(value), module.BLOBS[blob][1]), want[OPENCV_NAME[blob]])


def _doc_example() -> str:
    """The worked example's code in docs/backbone.md, so that the documentation cannot rot."""
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)[0]


@pytest.mark.skipif(not VGG16.is_file(), reason=f"{VGG16} is not present")
def test_vgg16_backbone_of_a_unet_loads_by_name(tmp_path, monkeypatch):
    # At a 32x32 input pool5 is 1x1, so fc6 takes 512 inputs: random weights for the whole net stay
    # ~150 MB instead of VGG16's 550 MB, and the five stages are the same as at 224x224.
    translation = translate(VGG16, options=Options(fully_conv=True), input_shapes={"data": (1, 3, 32, 32)})
    rng = np.random.default_rng(16)
    caffe = [
        (e.layer, e.layer_type, [rng.normal(0, np.sqrt(2 / np.prod(s[1:])) if len(s) > 1 else 0.1, s) for s in e.shapes])
        for e in translation.expectations
    ]
    (tmp_path / "vgg16.caffemodel").write_bytes(caffemodel_bytes(caffe))
    write_npz(translation, tmp_path / "vgg16.caffemodel", tmp_path / "vgg16.npz")
    monkeypatch.setitem(sys.modules, "vgg16", load_module(render(translation, "vgg16.npz")))
    monkeypatch.chdir(tmp_path)
    example = load_module(_doc_example())
    unet, loaded, skipped = example.unet, example.loaded, example.skipped

    convs = [f"conv{stage}_{i}" for stage, n in zip(range(1, 6), (2, 2, 3, 3, 3)) for i in range(1, n + 1)]
    assert loaded == convs
    assert skipped == ["decode4", "decode3", "decode2", "decode1", "logits"]
    backbone = unet.get_layer("VGG_ILSVRC_16_layers")
    blobs = {name: blobs for name, _, blobs in caffe}
    with np.load(tmp_path / "vgg16.npz") as arrays:
        for name in convs:
            kernel, bias = backbone.get_layer(name).weights
            np.testing.assert_array_equal(kernel.numpy(), arrays[f"{name}/kernel"])
            np.testing.assert_array_equal(bias.numpy(), arrays[f"{name}/bias"])
            # ... and those arrays are Caffe's (O, I, kh, kw) weights in Keras' (kh, kw, I, O) layout.
            np.testing.assert_allclose(arrays[f"{name}/kernel"], blobs[name][0].transpose(2, 3, 1, 0), rtol=1e-6)

    # The loaded encoder computes Caffe's stage blobs; the decoder restores the input size.
    x = rng.uniform(-1, 1, (1, 3, 32, 48)).astype(np.float32)
    stages = backbone(np.transpose(x, (0, 2, 3, 1)))
    relus = [f"relu{name[4:]}" for name in example.STAGES]  # conv1_2 holds relu1_2's output
    want = opencv_forward(VGG16.read_text(), {"data": x}, caffe, outputs=relus)
    for value, relu in zip(stages, relus):
        assert_close(np.transpose(np.asarray(value), (0, 3, 1, 2)), want[relu])
    assert tuple(unet(np.zeros((2, 64, 48, 3), np.float32)).shape) == (2, 64, 48, 21)
