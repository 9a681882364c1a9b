"""Block functions for repeated units build, layer for layer and edge for edge, the model the --flat module builds."""

from __future__ import annotations

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
