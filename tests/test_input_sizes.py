"""A module built at another input size computes what the module translated at that size computes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from caffe2py.convert import translate, translate_to_source
from caffe2py.errors import TranslationError
from caffe2py.ir import Statement
from caffe2py.pysource import GUARD
from caffe2py.render import present
from tests.refnet import load_module
from tests.test_corpus import CORPUS, NETS, OPTIONS, REFUSED

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"no corpus at {CORPUS} (../shared is not beside this checkout)")

# (height, width) changes tried in order until two sizes Caffe can run the net at are found.
OFFSETS = [(1, 1), (-1, 2), (3, -2), (-3, -1), (8, 5), (-7, -3), (17, 16), (-16, -16), (32, 0), (0, 33)]
# Sizes that broke before; each must give what the module translated at that size gives.
REQUIRED = {
    "mtcnn/det1.prototxt": [(120, 97), (97, 120), (13, 13), (31, 12)],
    "resnet/ResNet-50-deploy.prototxt": [(225, 225)],
}


def _spatial_inputs(translation):
    return {i.blob: i.shape for i in translation.inputs if len(i.shape) == 4 and None not in i.shape}


def _at(shapes, size):
    return {blob: (*shape[:2], *size) for blob, shape in shapes.items()}


def _keras_shape(shape):
    return (*shape[2:], shape[1])


def _build(module, shapes):
    if len(shapes) == 1 and hasattr(module, "INPUT_SHAPE"):
        return module.build_model(input_shape=_keras_shape(next(iter(shapes.values()))))
    full = dict(module.INPUT_SHAPES)
    full.update({blob: _keras_shape(shape) for blob, shape in shapes.items()})
    return module.build_model(input_shapes=full)


def _code(translation):
    """What build_model() runs: the helper classes, its statements and block functions, the input size aside.

    A size guard names the shape its layer reads at the translated size: only where it stands counts.
    """
    statements = [
        dataclasses.replace(s, args=s.args[1:]) if isinstance(s, Statement) and s.callee == GUARD else s
        for s in translation.statements
    ]
    fields = present(dataclasses.replace(translation, statements=statements), "net.npz")
    return translation.helpers, fields["body"], fields["blocks"]


def _numeric(net, options, general, shapes):
    """The module built at ``shapes`` and the module translated at ``shapes`` predict the same."""
    here = translate_to_source(CORPUS / net, **{**options, "input_shapes": {**options.get("input_shapes", {}), **shapes}})
    model, reference = _build(general, shapes), load_module(here).build_model()
    reference.set_weights(model.get_weights())
    rng = np.random.default_rng(0)
    feed = [rng.standard_normal((1, *t.shape[1:])).astype("float32") for t in model.inputs]
    feed = feed[0] if len(feed) == 1 else feed  # a single-input model is fed its tensor, as users do
    got, want = model.predict(feed, verbose=0), reference.predict(feed, verbose=0)
    got, want = (got if isinstance(got, list) else [got]), (want if isinstance(want, list) else [want])
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=f"{net} at {shapes}")


@pytest.mark.parametrize("net", sorted(REQUIRED))
def test_sizes_that_broke(net):
    import keras

    keras.utils.set_random_seed(0)
    options = OPTIONS.get(net, {})
    shapes = _spatial_inputs(translate(CORPUS / net, **options))
    general = load_module(translate_to_source(CORPUS / net, **options))
    for size in REQUIRED[net]:
        _numeric(net, options, general, _at(shapes, size))


@pytest.mark.parametrize("net", [n for n in NETS if n not in REFUSED])
def test_other_input_sizes(net):
    """At two other sizes Caffe runs the net at, the code is that of the translation at that size.

    Same helpers, statements and blocks give the same outputs (test_sizes_that_broke checks outputs):
    no padding, pooling, crop or reshape was chosen for the translated size.
    """
    options = OPTIONS.get(net, {})
    try:
        translation = translate(CORPUS / net, **options)
    except TranslationError as exc:
        pytest.skip(f"does not translate: {exc}")
    shapes = _spatial_inputs(translation)
    if not shapes:
        pytest.skip("no input with a fixed spatial size")
    code = _code(translation)
    height, width = next(iter(shapes.values()))[2:]
    checked = 0
    for dh, dw in OFFSETS:
        if checked == 2 or height + dh <= 0 or width + dw <= 0:
            continue
        at = _at(shapes, (height + dh, width + dw))
        try:
            there = translate(CORPUS / net, **{**options, "input_shapes": {**options.get("input_shapes", {}), **at}})
        except TranslationError:
            continue  # Caffe cannot run the net at this size either
        assert _code(there) == code, f"{net}: the code at {at} is another"
        checked += 1
    if not checked:
        pytest.skip("Caffe runs this net at none of the other sizes tried")


def test_size_bound_layers_are_guarded():
    """At a size that changes what an InnerProduct or a literal Reshape reads, build_model names the layer;
    a net with no such layer builds at (None, None, C)."""
    import keras

    alexnet = load_module(translate_to_source(CORPUS / "bvlc_alexnet/deploy.prototxt"))
    with pytest.raises(ValueError, match=r"input shape \(255, 255, 3\): Caffe layer 'fc6' needs an input of shape \(6, 6, 256\)"):
        alexnet.build_model(input_shape=(255, 255, 3))
    assert alexnet.build_model(input_shape=(228, 228, 3)).output.shape == (None, 1000)  # fc6 still reads 6x6
    tsm = load_module(translate_to_source(CORPUS / "tsm/TSM.prototxt", **OPTIONS.get("tsm/TSM.prototxt", {})))
    wider = (tsm.INPUT_SHAPE[0], tsm.INPUT_SHAPE[1] + 32, tsm.INPUT_SHAPE[2])
    with pytest.raises(ValueError, match=r"Caffe layer 'view2'"):  # a Reshape with the sizes written out
        tsm.build_model(input_shape=wider)
    det1 = load_module(translate_to_source(CORPUS / "mtcnn/det1.prototxt"))
    assert "_fixed_size" not in vars(det1)
    model = det1.build_model(input_shape=(None, None, 3))
    assert [tuple(o.shape[1:3]) for o in model.outputs] == [(None, None)] * len(model.outputs)
    assert model.predict(np.zeros((1, 31, 12, 3), "float32"), verbose=0)[0].shape[1:3] == (11, 1)
    keras.backend.clear_session()
