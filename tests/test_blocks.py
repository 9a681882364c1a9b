"""Block functions for repeated units build, layer for layer and edge for edge, the model the --flat module builds."""

from __future__ import annotations

import dataclasses

import keras
import pytest

from tests.refnet import load_module
from tests.test_corpus import CORPUS, NETS, OPTIONS, REFUSED

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"no corpus at {CORPUS} (../shared is not beside this checkout)")


def _structure(model) -> list:
    """Every layer's name, class, config (a Python lambda's code aside), weight shapes and inbound layers."""
    config = model.get_config()
    out = []
    for layer, entry in zip(model.layers, config["layers"]):
        assert layer.name == entry["name"]
        inner = dict(entry["config"])
        if isinstance(inner.get("function"), dict):  # a lambda's code object differs between modules
            inner["function"] = inner["function"].get("class_name")
        shapes = [tuple(w.shape) for w in layer.weights]
        out.append((entry["name"], entry["class_name"], repr(inner), shapes, repr(entry["inbound_nodes"])))
    return out


@pytest.mark.parametrize("net", [n for n in NETS if n not in REFUSED])
def test_default_and_flat_build_the_same_model(net):
    from caffe2py.convert import translate
    from caffe2py.errors import TranslationError
    from caffe2py.render import render

    try:
        translation = translate(CORPUS / net, **OPTIONS.get(net, {}))
    except TranslationError as exc:
        pytest.skip(f"not translated: {exc}")
    default = render(translation)
    translation.flat = True
    flat = render(translation)
    if default == flat:
        return  # nothing repeats: the very same text
    flat_module, default_module = load_module(flat), load_module(default)
    assert default_module.BLOBS == flat_module.BLOBS
    keras.backend.clear_session()
    want = _structure(flat_module.build_model())
    keras.backend.clear_session()
    got = _structure(default_module.build_model())
    assert [g[0] for g in got] == [w[0] for w in want]
    for g, w in zip(got, want):
        assert g == w


def _triplet(name: str, bottom: str, relu: str, kernel: str) -> str:
    return (
        f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}"\n'
        f"  convolution_param {{ num_output: 4 {kernel} }} }}\n"
        f'layer {{ name: "{name}_bn" type: "BatchNorm" bottom: "{name}" top: "{name}" }}\n'
        f'layer {{ name: "{relu}" type: "ReLU" bottom: "{name}" top: "{name}" }}\n'
    )


def test_a_unit_leaves_out_the_occurrences_named_otherwise(tmp_path):
    """Four convolution + BatchNorm + ReLU runs, one whose ReLU is named after another part: three calls.

    Square and 1x7 kernels are one unit (the kernel size is a value that varies).
    """
    from caffe2py.convert import translate
    from caffe2py.render import render

    net = 'input: "data"\ninput_shape { dim: 1 dim: 3 dim: 12 dim: 12 }\n'
    net += _triplet("stem_s2", "data", "stem_relu", "kernel_size: 3")
    net += _triplet("a1", "stem_s2", "a1_relu", "kernel_size: 3")
    net += _triplet("a2", "a1", "a2_relu", "kernel_h: 1 kernel_w: 3")
    net += _triplet("a3", "a2", "a3_relu", "kernel_size: 1")
    (tmp_path / "net.prototxt").write_text(net)
    translation = translate(tmp_path / "net.prototxt")
    default = render(translation)
    assert default.count('_block(') == 4  # the definition and three calls
    assert 'name="stem_relu"' in default and 'name="a2_relu"' not in default
    flat = render(dataclasses.replace(translation, flat=True))
    want = _structure(load_module(flat).build_model())
    keras.backend.clear_session()
    assert _structure(load_module(default).build_model()) == want


def test_code_arguments_equal_by_text_do_not_stop_a_unit():
    """A unit whose statements pass the same code (a registered function, say) and vary in data folds."""
    from caffe2py.blocks import fold
    from caffe2py.ir import Statement
    from caffe2py.pysource import Code

    statements, previous, calls = [], "data", []
    for k, stop in enumerate((4, 8, 16, 32), start=1):
        bounds = {"start": 0, "stop": stop // 2}
        statements += [
            Statement(f"c{k}", "layers.Conv2D", (stop, 1), (("name", f"s{k}_conv"),), (previous,)),
            Statement(f"r{k}", "layers.ReLU", (), (("name", f"s{k}_relu"),), (f"c{k}",)),
            Statement(f"p{k}", "layers.Lambda", (Code("slice_axis"),), (("arguments", bounds), ("name", f"s{k}_cut")), (f"r{k}",)),
            Statement(f"q{k}", "layers.ReLU", (), (("name", f"s{k}_out"),), (f"p{k}",)),
        ]
        previous = f"q{k}"
        calls.append((stop, bounds))
    folded, blocks = fold(statements, kept={previous}, reserved=set())
    assert len(blocks) == 1
    assert [call.args for call in folded] == calls
