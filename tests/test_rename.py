"""--rename OLD=NEW: Caffe's net surgery by hand, checked against the real-Caffe caffenet_surgery case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from caffe2py import cli
from caffe2py.convert import translate
from caffe2py.errors import TranslationError
from caffe2py.options import Options
from caffe2py.render import render
from caffe2py.weights import write_npz
from tests.refnet import assert_close, caffemodel_bytes, load_module, oracle_case, to_caffe

SHARED = Path(__file__).resolve().parents[2] / "shared"
CASES = SHARED / "oracle" / "cases"

NET = (
    'name: "s"\ninput: "data"\ninput_shape { dim: 1 dim: 2 dim: 3 dim: 3 }\n'
    'layer { name: "fc-conv" type: "Convolution" bottom: "data" top: "y"\n'
    "  convolution_param { num_output: 4 kernel_size: 3 } }\n"
)


def surgery_files(tmp_path: Path, weight_shape=(4, 18)) -> tuple[Path, Path, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    blobs = [rng.normal(size=weight_shape).astype(np.float32), rng.normal(size=(4,)).astype(np.float32)]
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "net.caffemodel").write_bytes(caffemodel_bytes([("fc", "InnerProduct", blobs)]))
    return tmp_path / "net.prototxt", tmp_path / "net.caffemodel", blobs


def test_a_renamed_convolution_computes_the_inner_product_it_was(tmp_path):
    prototxt, caffemodel, (weight, bias) = surgery_files(tmp_path)
    translation = translate(prototxt, options=Options(rename=(("fc", "fc-conv"),)))
    write_npz(translation, caffemodel, tmp_path / "net.npz")
    module = load_module(render(translation, "net.npz"))
    model = module.build_model()
    module.load_weights(model, tmp_path / "net.npz")
    x = np.random.default_rng(1).normal(size=(2, 2, 3, 3)).astype(np.float32)
    got = to_caffe(np.asarray(model(np.transpose(x, (0, 2, 3, 1)))), module.BLOBS["y"][1])
    # The InnerProduct on the C,H,W-flattened input, as Caffe computed it before the surgery.
    want = (x.reshape(2, -1) @ weight.T + bias).reshape(2, 4, 1, 1)
    assert_close(got, want)


def test_rename_errors(tmp_path, capsys):
    prototxt, caffemodel, _ = surgery_files(tmp_path)
    with pytest.raises(TranslationError) as info:
        translate(prototxt, options=Options(rename=(("fc", "fc-conv2"),)))
    assert str(info.value) == f"{prototxt}: --rename fc=fc-conv2: the net has no layer 'fc-conv2'"
    with pytest.raises(TranslationError) as info:
        write_npz(translate(prototxt, options=Options(rename=(("fc6", "fc-conv"),))), caffemodel, tmp_path / "w.npz")
    assert str(info.value) == f"{caffemodel}: layer 'fc-conv' (Convolution): the caffemodel has no layer 'fc6' (--rename fc6=fc-conv)"
    prototxt, caffemodel, _ = surgery_files(tmp_path, weight_shape=(4, 17))
    with pytest.raises(TranslationError) as info:
        write_npz(translate(prototxt, options=Options(rename=(("fc", "fc-conv"),))), caffemodel, tmp_path / "w.npz")
    assert str(info.value) == (
        f"{caffemodel}: layer 'fc-conv' (Convolution): blob 0 has shape [4, 17] in the caffemodel (layer 'fc'), "
        "the net needs [4, 2, 3, 3]"
    )
    with pytest.raises(SystemExit):
        cli.main([str(prototxt), "--rename", "fc"])
    assert "argument --rename: 'fc' is not OLD=NEW (two layer names)" in capsys.readouterr().err


@pytest.mark.skipif(not CASES.is_dir(), reason=f"{CASES} (BVLC Caffe reference outputs) is not present")
def test_caffe_surgery_prototxt_with_caffenet_weights_matches_caffe(tmp_path):
    """Caffe's own surgered prototxt (fc6-conv, ...) with the original CaffeNet caffemodel."""
    case, inputs = oracle_case(CASES, "caffenet_surgery", tmp_path)  # weights of case bvlc_reference_caffenet
    rename = tuple((f"fc{i}", f"fc{i}-conv") for i in (6, 7, 8))
    translation = translate(SHARED / case["fully_conv_reference"], options=Options(rename=rename))
    module = load_module(render(translation, "net.npz"))
    write_npz(translation, tmp_path / "net.caffemodel", tmp_path / "net.npz")
    model = module.build_model(outputs=case["outputs"])
    module.load_weights(model, tmp_path / "net.npz")
    got = model(np.transpose(inputs["data"], (0, 2, 3, 1)))
    expected = np.load(CASES / "caffenet_surgery" / "expected.npz")
    for name, value in zip(case["outputs"], got):
        want = expected[f"out/{name}"]
        assert want.shape == (1, 1000, 8, 8)
        assert_close(to_caffe(np.asarray(value), module.BLOBS[name][1]), want)
