"""Edge semantics decided at translation: Silence outputs, dropped evaluation layers, shapes that must agree."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from caffe2py.convert import translate, translate_to_source
from caffe2py.errors import TranslationError

HEAD = 'name: "t"\ninput: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "net.prototxt"
    path.write_text(HEAD + textwrap.dedent(body))
    return path


def test_a_blob_only_silence_reads_is_an_output_and_the_module_says_so(tmp_path):
    path = write(
        tmp_path,
        """\
        layer { name: "r" type: "ReLU" bottom: "data" top: "r" }
        layer { name: "s" type: "Sigmoid" bottom: "r" top: "s" }
        layer { name: "t" type: "TanH" bottom: "r" top: "t" }
        layer { name: "silence" type: "Silence" bottom: "s" bottom: "t" }
        """,
    )
    translation = translate(path)
    assert [t.blob for t in translation.outputs] == ["s", "t"]
    source = translate_to_source(path)
    assert "    # model outputs that Caffe passes only to Silence layers (which discard them): 's', 't'\n" in source


def test_evaluation_and_writer_layers_are_dropped_with_a_warning(tmp_path):
    path = write(
        tmp_path,
        """\
        layer { name: "r" type: "ReLU" bottom: "data" top: "r" }
        layer { name: "ev" type: "DetectionEvaluate" bottom: "r" bottom: "data" top: "ev" }
        layer { name: "seg" type: "SegAccuracy" bottom: "r" bottom: "data" top: "acc" }
        layer { name: "mw" type: "MatWrite" bottom: "r" mat_write_param { prefix: "out/" } }
        """,
    )
    translation = translate(path)
    assert [t.blob for t in translation.outputs] == ["r"]
    assert translation.warnings == [
        f"{path}:5: layer 'ev' (DetectionEvaluate): dropped: an evaluation layer (it scores detections against labels)",
        f"{path}:6: layer 'seg' (SegAccuracy): dropped: an evaluation layer (it scores a segmentation against labels)",
        f"{path}:7: layer 'mw' (MatWrite): dropped: a writer (it saves blobs to .mat files)",
    ]


def test_a_pooling_window_that_leaves_no_output_is_an_error(tmp_path):
    path = write(tmp_path, 'layer { name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param { pool: MAX kernel_size: 12 stride: 2 } }\n')
    with pytest.raises(TranslationError) as info:
        translate(path)
    assert str(info.value) == (
        f"{path}:4: layer 'p' (Pooling): kernel (12, 12) (stride (2, 2), pad (0, 0)) does not fit the input 8x8: "
        "Caffe's pooled size would be -1x-1"
    )


def detection_net(loc: int, conf: int, prior_fields: str = "") -> str:
    """Inputs for the heads; 4 priors at each of 5x4 locations (ratios 1, 2, 1/2 and the max size)."""
    return (
        'name: "ssd"\n'
        + "".join(
            f'input: "{name}"\ninput_shape {{ {" ".join(f"dim: {d}" for d in shape)} }}\n'
            for name, shape in (("data", (1, 3, 40, 36)), ("feat", (1, 4, 5, 4)), ("loc", (1, loc)), ("conf", (1, conf)))
        )
        + 'layer { name: "p" type: "PriorBox" bottom: "feat" bottom: "data" top: "p"\n'
        f"  prior_box_param {{ min_size: 10 max_size: 20 aspect_ratio: 2 {prior_fields} }} }}\n"
        'layer { name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "p" top: "det"\n'
        "  detection_output_param { num_classes: 3 } }\n"
    )


def test_detection_heads_must_match_the_prior_boxes(tmp_path):
    path = tmp_path / "ssd.prototxt"
    path.write_text(detection_net(80 * 4, 80 * 3))
    assert [t.blob for t in translate(path).outputs] == ["det"]
    path.write_text(detection_net(81 * 4, 80 * 3))
    with pytest.raises(TranslationError) as info:
        translate(path)
    assert str(info.value) == (
        f"{path}:12: layer 'det' (DetectionOutput): 'p' from layer 'p' holds 80 prior boxes, but 'loc' from the net's "
        "input has 324 values per image where 80 boxes of 4 location values need 320"
    )
    path.write_text(detection_net(80 * 4, 80 * 2))
    with pytest.raises(TranslationError) as info:
        translate(path)
    assert str(info.value) == (
        f"{path}:12: layer 'det' (DetectionOutput): 'p' from layer 'p' holds 80 prior boxes, but 'conf' from the net's "
        "input has 160 values per image where 80 boxes of 3 class scores need 240"
    )


def test_prior_box_fields_of_face_detector_forks_are_refused_at_translation(tmp_path):
    # FaceBoxes-style density/fixed_size make more boxes per location than the schema's fields say:
    # refused by name instead of a DetectionOutput that fails at run time.
    path = tmp_path / "faces.prototxt"
    path.write_text(detection_net(80 * 4, 80 * 3, "fixed_size: 32 density: 4"))
    with pytest.raises(TranslationError) as info:
        translate(path)
    assert str(info.value) == (
        f"{path}:11: 2 unknown field(s): line 11: layer 'p' (PriorBox): unknown field 'prior_box_param.fixed_size'; "
        "line 11: layer 'p' (PriorBox): unknown field 'prior_box_param.density' "
        "(--ignore-unknown-fields translates without the fields)"
    )
