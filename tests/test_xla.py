"""XLA on TensorFlow: models compiled with jit_compile=True predict what the uncompiled ones do, every helper layer included."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from caffe2py.convert import translate
from caffe2py.options import Options
from caffe2py.render import helper_names, render
from tests.refnet import load_module
from tests.test_backends import ZOOS

keras = pytest.importorskip("keras")
pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="jit_compile=True is XLA on TensorFlow")

# The helper the backend zoos leave out: Caffe's ReLU with a negative slope below zero.
EXTRA = """name: "xla_extra"
input: "data"
input_shape { dim: 1 dim: 3 dim: 5 dim: 7 }
layer { name: "relu" type: "ReLU" bottom: "data" top: "relu" relu_param { negative_slope: -0.5 } }
"""
NETS = {**ZOOS, "xla_extra": (EXTRA, {})}
# Helpers of compile_model() (--solver), not of the model that predict runs.
TRAINING = {"CaffeLearningRate", "CaffeSolver", "EuclideanLoss", "HingeLoss", "SigmoidCrossEntropyLoss", "SoftmaxWithLoss"}
# Caffe's BatchNorm with batch statistics (the TRAIN phase): predict runs BatchNormalization itself.
BATCH_STATISTICS = {"CaffeBatchStatsNorm"}
# Fork layers that arrived after this test's nets were chosen; still to be given a net here.
NOT_YET = {"CTCGreedyDecoder", "PSROIPooling", "ROIPooling", "YoloDetectionOutput"}


@pytest.fixture(scope="module")
def translations(tmp_path_factory) -> dict[str, tuple[Path, list[str]]]:
    """name -> (the generated module's path, the helper classes it defines)."""
    work = tmp_path_factory.mktemp("xla")
    out = {}
    for name, (text, options) in NETS.items():
        prototxt = work / f"{name}.prototxt"
        prototxt.write_text(text)
        translation = translate(prototxt, options=Options(**options))
        module = work / f"{name}.py"
        module.write_text(render(translation))
        out[name] = (module, translation.helpers)
    return out


def test_every_helper_layer_is_compiled(translations):
    used = {helper for _, helpers in translations.values() for helper in helpers}
    missing = sorted(helper_names() - used - TRAINING - BATCH_STATISTICS - NOT_YET)
    assert not missing, f"helper layers no net of this test uses (add one to tests/test_backends.py's zoos): {missing}"


@pytest.mark.parametrize("name", sorted(NETS))
def test_jit_compiled_predict_matches(name, translations):
    module = load_module(translations[name][0].read_text())
    model = module.build_model()
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    for variable in model.weights:
        shape = tuple(variable.shape)
        scale = np.sqrt(2.0 / np.prod(shape[:-1])) if len(shape) >= 2 else None
        value = rng.normal(0.0, scale, size=shape) if scale else rng.uniform(0.5, 1.5, size=shape)
        variable.assign(value.astype("float32"))
    feed = [rng.normal(size=(2, *(32 if d is None else d for d in i.shape[1:]))).astype("float32") for i in model.inputs]
    feed = feed if len(feed) > 1 else feed[0]
    want = model.predict(feed, verbose=0)
    model.compile(jit_compile=True)
    assert model.jit_compile
    got = model.predict(feed, verbose=0)
    want, got = (v if isinstance(v, list) else [v] for v in (want, got))
    problems = []
    for out_name, w, g in zip(model.output_names, want, got):
        w, g = np.asarray(w, np.float64), np.asarray(g, np.float64)
        error = float(np.abs(g - w).max()) / max(float(np.abs(w).max()), 1e-6) if w.size else 0.0
        if g.shape != w.shape or not error <= 1e-4:
            problems.append(f"{out_name}: shape {g.shape} vs {w.shape}, relative error {error:.2e}")
    assert not problems, "\n".join(problems)
