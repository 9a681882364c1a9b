"""Every prototxt of ../shared/corpus translates to a black-stable module whose model builds with Caffe's shapes."""

from __future__ import annotations

import ast
from pathlib import Path

import black
import pytest

from tests.refnet import load_module

SHARED = Path(__file__).resolve().parents[2] / "shared"
CORPUS = SHARED / "corpus"
pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"no corpus at {CORPUS} (../shared is not beside this checkout)")

# What a user passes for nets whose data layers give no shape, or whose TEST phase needs a stage.
OPTIONS = {
    "cifar10/cifar10_full_sigmoid_train_test_bn.prototxt": {"input_shapes": {"data": (1, 3, 32, 32)}},
    "lenet_v1_pretrained/lenet_train_test.prototxt": {"input_shapes": {"data": (1, 1, 28, 28)}},
    "mnist_lenet/lenet_train_test.prototxt": {"input_shapes": {"data": (1, 1, 28, 28)}},
    "mnist_autoencoder/mnist_autoencoder.prototxt": {"stages": ["test-on-test"], "input_shapes": {"data": (1, 1, 28, 28)}},
    "nin/nin_cifar10_train_val.prototxt": {"input_shapes": {"data": (1, 3, 32, 32)}},
    "fcn/voc-fcn-alexnet-val.prototxt": {"input_shapes": {"data": (1, 3, 256, 256)}},
    "fcn/voc-fcn16s-val.prototxt": {"input_shapes": {"data": (1, 3, 256, 256)}},
    "fcn/voc-fcn32s-val.prototxt": {"input_shapes": {"data": (1, 3, 256, 256)}},
    "hed/train_val.prototxt": {"input_shapes": {"data": (1, 3, 320, 320)}},
    "segnet/segnet_basic_train.prototxt": {"input_shapes": {"data": (1, 3, 360, 480)}},
    "segnet/segnet_inference.prototxt": {"input_shapes": {"data": (1, 3, 360, 480)}},
    "yufacedetectnet/yufacedetectnet-open-v2.train.prototxt": {"phase": "TRAIN", "input_shapes": {"data": (1, 3, 320, 320)}},
}
# S2VT feeds its LSTMs computed sequences (embedded frames), while a recurrent layer's time axis is
# the Keras batch axis only for sequences that come straight from a net input: refused, clearly.
REFUSED = {"s2vt_lstm/s2vt.prototxt": r"'lstm1' \(LSTM\): x 'embedded_input_frames' must come from a net input"}
OPTIONS["s2vt_lstm/s2vt.prototxt"] = {
    "stages": ["test-on-val", "factored"],
    # 80 time steps of 32 streams, as its reshape_stg_indicator layer states.
    "input_shapes": {
        "cont_sentence": (80, 32),
        "input_sentence": (80, 32),
        "target_sentence": (80, 32),
        "stage_indicator": (80, 32),
        "frame_fc7": (80, 32, 4096),
    },
}

NETS = sorted(str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*.prototxt")) if CORPUS.is_dir() else []


@pytest.mark.parametrize("net", NETS)
def test_corpus_net(net):
    from caffe2py.convert import translate
    from caffe2py.errors import TranslationError
    from caffe2py.render import render

    options = OPTIONS.get(net, {})
    if net in REFUSED:
        with pytest.raises(TranslationError, match=REFUSED[net]):
            translate(CORPUS / net, **options)
        return
    translation = translate(CORPUS / net, **options)
    source = render(translation)
    assert black.format_str(source, mode=black.Mode()) == source
    tree = ast.parse(source)
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"keras", "numpy"}
    model = load_module(source).build_model()
    got = [tuple(o.shape[1:]) for o in (model.outputs if isinstance(model.outputs, list) else [model.outputs])]
    want = [tuple(t.keras_shape[1:]) for t in translation.outputs]
    assert got == want, f"Keras output shapes {got} differ from Caffe's {want}"
