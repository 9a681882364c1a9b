"""Numeric tests of MobileNet-YOLO's output layers against NumPy restatements of their C++ loops."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.refnet import assert_close, keras_forward, load_module


def _sigmoid(v):
    return np.float32(1) / (np.float32(1) + np.exp(-np.float32(v)))


def _nms_rows(predicts, threshold, images):
    """The fork's sort by confidence, ApplyNms (class-blind, IoU >= threshold drops) and top rows."""
    predicts = sorted(predicts, key=lambda p: -p[5])  # stable: ties keep the loop order

    def overlap(c1, s1, c2, s2):
        return min(c1 + s1 / 2, c2 + s2 / 2) - max(c1 - s1 / 2, c2 - s2 / 2)

    def iou(a, b):
        w, h = overlap(a[0], a[2], b[0], b[2]), overlap(a[1], a[3], b[1], b[3])
        inter = 0 if w < 0 or h < 0 else w * h
        return inter / (a[2] * a[3] + b[2] * b[3] - inter)

    dropped = set()
    for i in range(len(predicts) - 1):
        if i in dropped:
            continue
        for j in range(i + 1, len(predicts)):
            if j not in dropped and iou(predicts[i], predicts[j]) >= threshold:
                dropped.add(j)
    rows = [
        [0, c + 1, conf, x - w / 2, y - h / 2, x + w / 2, y + h / 2]
        for k, (x, y, w, h, c, conf) in enumerate(predicts)
        if k not in dropped
    ]
    if not rows:
        rows = [[i, -1, -1, -1, -1, -1, -1] for i in range(images)]
    return np.array(rows, np.float32), len(dropped)


def _v2_reference(maps, num_box, classes, biases, confidence, nms):
    """YoloDetectionOutputLayer::Forward_cpu: get_region_box, softmax's best class, >= threshold."""
    predicts = []
    for x in maps:
        n, c, _, side = x.shape
        length = c // num_box
        for b in range(n):
            for j in range(side):
                for i in range(side):
                    for k in range(num_box):
                        v = x[b, k * length : (k + 1) * length, j, i]
                        e = np.exp(v[5 : 5 + classes] - v[5 : 5 + classes].max())
                        prob = e / e.sum()
                        best = int(np.argmax(prob))
                        conf = _sigmoid(v[4]) * prob[best]
                        if conf >= confidence:
                            box = (
                                (i + _sigmoid(v[0])) / side,
                                (j + _sigmoid(v[1])) / side,
                                np.exp(v[2]) * biases[2 * k] / side,
                                np.exp(v[3]) * biases[2 * k + 1] / side,
                            )
                            predicts.append((*box, best, conf))
    return _nms_rows(predicts, nms, maps[0].shape[0])


def _v3_reference(maps, num_box, classes, biases, mask, scales, confidence, nms):
    """Yolov3DetectionOutputLayer::Forward_cpu: get_region_box2, every sigmoid class times objectness."""
    predicts, group = [], len(mask) // len(maps)
    length = 5 + classes
    for t, x in enumerate(maps):
        n, _, _, side = x.shape
        for b in range(n):
            for s in range(side * side):
                j, i = divmod(s, side)
                for k in range(num_box):
                    v = x[b, k * length : (k + 1) * length, j, i]
                    m = mask[t * group + k]
                    box = (
                        (i + _sigmoid(v[0])) / side,
                        (j + _sigmoid(v[1])) / side,
                        np.exp(v[2]) * biases[2 * m] / (side * scales[t]),
                        np.exp(v[3]) * biases[2 * m + 1] / (side * scales[t]),
                    )
                    for c in range(classes):
                        score = _sigmoid(v[5 + c]) * _sigmoid(v[4])
                        if score > confidence:
                            predicts.append((*box, c, score))
    return _nms_rows(predicts, nms, maps[0].shape[0])


def _input(name, shape):
    return f'input: "{name}" input_shape {{ {" ".join(f"dim: {d}" for d in shape)} }}\n'


V2_BIASES = [1.1, 1.4, 2.5, 2.0, 0.7, 3.1]


def _v2_proto(threshold):
    return (
        _input("a", (2, 3 * 8, 5, 5))
        + _input("b", (2, 3 * 8, 3, 3))
        + 'layer { name: "det" type: "YoloDetectionOutput" bottom: "a" bottom: "b" top: "det"\n'
        + f"  yolo_detection_output_param {{ num_classes: 3 num_box: 3 confidence_threshold: {threshold} "
        + f"nms_threshold: 0.3 biases: [{', '.join(map(str, V2_BIASES))}] }} }}\n"
    )


def test_yolo_v2_detection_output():
    rng = np.random.default_rng(30)
    a = rng.normal(size=(2, 24, 5, 5)).astype(np.float32)
    b = rng.normal(size=(2, 24, 3, 3)).astype(np.float32)
    got = keras_forward(_v2_proto(0.3), {"a": a, "b": b})["det"]
    want, dropped = _v2_reference([a, b], 3, 3, V2_BIASES, 0.3, 0.3)
    assert dropped > 0 and len(want) > 5
    assert got.shape == (1, 1, len(want), 7)
    assert_close(got[0, 0], want, rtol=1e-5)
    # No score reaches the threshold: one placeholder row per image.
    none = keras_forward(_v2_proto(0.99), {"a": a, "b": b})["det"]
    assert_close(none[0, 0], _v2_reference([a, b], 3, 3, V2_BIASES, 0.99, 0.3)[0], rtol=0)


V3_BIASES = [10, 14, 23, 27, 37, 58, 81, 82, 135, 169, 344, 319]
V3 = (
    _input("coarse", (2, 3 * 7, 3, 3))
    + _input("fine", (2, 3 * 7, 6, 6))
    + 'layer { name: "det" type: "Yolov3DetectionOutput" bottom: "coarse" bottom: "fine" top: "det"\n'
    + "  yolov3_detection_output_param { num_classes: 2 num_box: 3 confidence_threshold: 0.35 nms_threshold: 0.4 "
    + f"biases: [{', '.join(map(str, V3_BIASES))}] mask: [3, 4, 5, 0, 1, 2] anchors_scale: [32, 16] "
    + "mask_group_num: 2 } }\n"
)


def test_yolov3_detection_output():
    rng = np.random.default_rng(31)
    coarse = rng.normal(size=(2, 21, 3, 3)).astype(np.float32)
    fine = rng.normal(size=(2, 21, 6, 6)).astype(np.float32)
    got = keras_forward(V3, {"coarse": coarse, "fine": fine})["det"]
    want, dropped = _v3_reference([coarse, fine], 3, 2, V3_BIASES, [3, 4, 5, 0, 1, 2], [32, 16], 0.35, 0.4)
    assert dropped > 0 and len(want) > 5
    assert got.shape == (1, 1, len(want), 7)
    assert_close(got[0, 0], want, rtol=1e-5)


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("num_classes: 2 mask_group_num: 1 mask: [0, 1, 2] anchors_scale: 32 biases: [1, 2, 3, 4, 5, 6]",
         "mask_group_num is 1 but the layer has 2 bottoms; they must agree"),
        ("num_classes: 2 mask: [0, 1, 2, 3, 4, 5] anchors_scale: 32 biases: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]",
         "anchors_scale needs a positive input-to-map ratio for each of the 2 bottoms"),
        ("num_classes: 2 mask: [0, 1, 2, 3, 4, 6] anchors_scale: [32, 16] biases: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]",
         "mask refers to an anchor beyond the 6 given in biases"),
        ("num_classes: 3 mask: [0, 1, 2, 3, 4, 5] anchors_scale: [32, 16] biases: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]",
         "'coarse' from the net's input has 21 channels; 3 boxes of 4 coordinates, objectness and 3 class scores need 24"),
    ],
)
def test_yolov3_refusals(param, message):
    from caffe2py.convert import translate_to_source
    from caffe2py.errors import TranslationError

    proto = V3.split("layer {")[0] + (
        'layer { name: "det" type: "Yolov3DetectionOutput" bottom: "coarse" bottom: "fine" top: "det"\n'
        f"  yolov3_detection_output_param {{ {param} }} }}\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "net.prototxt"
        path.write_text(proto)
        with pytest.raises(TranslationError) as caught:
            translate_to_source(path)
    assert str(caught.value) == f"{path}:3: layer 'det' (Yolov3DetectionOutput): {message}"


def test_yolo_in_compiled_predict():
    """The YOLO helper traces: predict (a compiled function) gives what the eager call gives."""
    from caffe2py.convert import translate_to_source

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "net.prototxt").write_text(V3)
        module = load_module(translate_to_source(Path(tmp) / "net.prototxt"))
    model = module.build_model()
    rng = np.random.default_rng(32)
    inputs = [rng.normal(size=(2, 3, 3, 21)).astype(np.float32), rng.normal(size=(2, 6, 6, 21)).astype(np.float32)]
    eager = np.asarray(model(inputs))
    compiled = model.predict(inputs, verbose=0, batch_size=2)
    assert eager.shape[2] > 1
    assert_close(compiled, eager, rtol=1e-6)


JAX_RUNNER = """
import importlib.util, sys
import numpy as np
results = {}
with np.load(sys.argv[2]) as feeds:
    for path in sys.argv[3:]:
        name = path.rsplit("/", 1)[-1][:-3]
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        model = module.build_model()
        inputs = [feeds[f"{name}:{i}"] for i in range(len(model.inputs))]
        results[name] = model.predict(inputs, verbose=0, batch_size=2)
np.savez(sys.argv[1], **results)
"""


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
def test_yolo_in_jax_compiled_predict(tmp_path):
    """On JAX, predict jit-compiles: the kept rows first, as Caffe's, then a row of -1 per other candidate."""
    from caffe2py.convert import translate_to_source

    rng = np.random.default_rng(33)
    v2 = [rng.normal(size=(2, 24, 5, 5)).astype(np.float32), rng.normal(size=(2, 24, 3, 3)).astype(np.float32)]
    v3 = [rng.normal(size=(2, 21, 3, 3)).astype(np.float32), rng.normal(size=(2, 21, 6, 6)).astype(np.float32)]
    nets = {
        "v2": (_v2_proto(0.3), v2, _v2_reference(v2, 3, 3, V2_BIASES, 0.3, 0.3)[0]),
        "v2_none": (_v2_proto(0.99), v2, _v2_reference(v2, 3, 3, V2_BIASES, 0.99, 0.3)[0]),
        "v3": (V3, v3, _v3_reference(v3, 3, 2, V3_BIASES, [3, 4, 5, 0, 1, 2], [32, 16], 0.35, 0.4)[0]),
    }
    feeds = {}
    for name, (proto, maps, _) in nets.items():
        (tmp_path / f"{name}.prototxt").write_text(proto)
        (tmp_path / f"{name}.py").write_text(translate_to_source(tmp_path / f"{name}.prototxt"))
        feeds.update({f"{name}:{i}": np.transpose(m, (0, 2, 3, 1)) for i, m in enumerate(maps)})
    np.savez(tmp_path / "feeds.npz", **feeds)
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
    run = subprocess.run(
        [sys.executable, "-c", JAX_RUNNER, str(tmp_path / "out.npz"), str(tmp_path / "feeds.npz"), *(str(tmp_path / f"{n}.py") for n in nets)],
        check=False, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    with np.load(tmp_path / "out.npz") as out:
        for name, (_, maps, want) in nets.items():
            got = out[name][0, 0]
            candidates = sum(m.shape[0] * m.shape[2] * m.shape[3] * 3 for m in maps) * (2 if name == "v3" else 1)
            assert got.shape == (candidates + 2, 7), name
            assert_close(got[: len(want)], want, rtol=1e-5)
            assert (got[len(want) :] == -1).all(), name
