"""Fields the schema lacks, Python layers and --custom-layers: exact errors, warnings and stubs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from caffe2py import cli
from caffe2py.convert import translate, translate_to_source
from caffe2py.errors import TranslationError
from caffe2py.options import Options

HEAD = 'name: "t"\ninput: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'

FORK_NET = HEAD + textwrap.dedent(
    """\
    frob: 3
    layer { name: "c" type: "Convolution" bottom: "data" top: "c"
      convolution_param { num_output: 4 kernel_size: 3 kernel_depth: 2 } }
    layer { name: "l" type: "Frobnicate" bottom: "c" top: "l"
      frobnicate_param { num_output: 4 } }
    layer { name: "l2" type: "Frobnicate" bottom: "l" top: "l2" frobnicate_param { num_output: 5 } }
    layer { name: "t" type: "ReLU" bottom: "l2" top: "t" colour: 'blue' }
    layer { name: "train_only" type: "Frob" bottom: "t" top: "u" include { phase: TRAIN } frob_param { a: 1 } }
    """
)


def write(tmp_path: Path, text: str, name: str = "net.prototxt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_one_error_lists_every_unknown_field_and_type(tmp_path):
    path = write(tmp_path, FORK_NET)
    with pytest.raises(TranslationError) as info:
        translate(path)
    # Fields of layers the phase leaves out (train_only) are not the translation's concern.
    assert str(info.value) == (
        f"{path}:4: 5 unknown field(s) and 2 layer(s) of unsupported type: "
        "line 4: unknown field 'frob'; "
        "line 6: layer 'c' (Convolution): unknown field 'convolution_param.kernel_depth'; "
        "line 7: layer 'l' of type 'Frobnicate'; "
        "line 8: layer 'l' (Frobnicate): unknown field 'frobnicate_param'; "
        "line 9: layer 'l2' (Frobnicate): unknown field 'frobnicate_param'; "
        "line 9: layer 'l2' of type 'Frobnicate'; "
        "line 10: layer 't' (ReLU): unknown field 'colour' "
        "(see caffe2py --list-layers, or --stub-unknown; --ignore-unknown-fields translates without the fields)"
    )


def test_stubbed_layers_keep_their_fields_and_the_others_are_listed(tmp_path):
    path = write(tmp_path, FORK_NET)
    with pytest.raises(TranslationError) as info:
        translate(path, options=Options(stub_unknown=True))
    assert str(info.value) == (
        f"{path}:4: 3 unknown field(s): line 4: unknown field 'frob'; "
        "line 6: layer 'c' (Convolution): unknown field 'convolution_param.kernel_depth'; "
        "line 10: layer 't' (ReLU): unknown field 'colour' "
        "(--ignore-unknown-fields translates without the fields)"
    )
    translation = translate(path, options=Options(stub_unknown=True, ignore_unknown_fields=True))
    assert translation.warnings == [
        f"{path}:4: unknown field 'frob' ignored",
        f"{path}:6: layer 'c' (Convolution): unknown field 'convolution_param.kernel_depth' ignored",
        f"{path}:10: layer 't' (ReLU): unknown field 'colour' ignored",
    ]
    [(name, kind, params)] = translation.stubs
    assert (name, kind) == ("FrobnicateStub", "Frobnicate")
    assert params.endswith(
        "\nFields caffe2py does not know:\nfrobnicate_param { num_output: 4 }"
        "\nFields caffe2py does not know, of layer 'l2':\nfrobnicate_param { num_output: 5 }"
    )


def test_ignored_fields_warn_on_the_command_line(tmp_path, capsys):
    path = write(tmp_path, HEAD + 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" colour: "blue" }\n')
    assert cli.main([str(path), "--ignore-unknown-fields", "-o", str(tmp_path / "m.py")]) == 0
    assert capsys.readouterr().err == f"caffe2py: warning: {path}:4: layer 'r' (ReLU): unknown field 'colour' ignored\n"


def test_a_c3d_field_outside_c3d_is_reported_on_its_own_line(tmp_path):
    # A comment naming the field, and the pooling_param's field of the same name, are not its line.
    layer = textwrap.dedent(
        """\
        layer { name: "c" type: "Convolution" bottom: "data" top: "c"
          # temporal_stride: 2 was tried
          pooling_param { kernel_depth: 2 }
          convolution_param { num_output: 4 kernel_size: 3
            temporal_stride: 2 kernel_depth: 3 } }
        """
    )
    path = write(tmp_path, HEAD + layer)
    with pytest.raises(TranslationError) as info:
        translate(path)
    assert str(info.value).startswith(
        f"{path}:6: 3 unknown field(s): "
        "line 6: layer 'c' (Convolution): unknown field 'pooling_param.kernel_depth'; "
        "line 8: layer 'c' (Convolution): unknown field 'convolution_param.kernel_depth'; "
        "line 8: layer 'c' (Convolution): unknown field 'convolution_param.temporal_stride' "
    )


def test_text_that_is_no_prototxt_keeps_its_syntax_error(tmp_path):
    path = write(tmp_path, "This is not a network definition.\n")
    with pytest.raises(TranslationError, match='column 1: Message type "caffe.NetParameter" has no field named "This"'):
        translate(path)


def test_a_syntax_error_past_an_unknown_field_is_the_one_reported(tmp_path):
    path = write(tmp_path, HEAD + 'colour: "blue"\nlayer { name: "r" type: "ReLU" bottom: "data" top: "r" }\nlayer {\n')
    with pytest.raises(TranslationError) as info:
        translate(path)
    assert str(info.value) == f'{path}:6: column 7: Expected "}}".'


def test_fork_fields_in_the_schema_parse(tmp_path):
    """Fields of forks' data, quantized and writer layers, and V1 enum values of DeepLab."""
    path = write(
        tmp_path,
        textwrap.dedent(
            """\
            name: "f"
            layer { name: "v" type: "VideoData" top: "data" top: "label"
              video_data_param { source: "list.txt" batch_size: 2 new_length: 5 num_segments: 3 modality: RGB }
              transform_param { crop_size: 8 } }
            layer { name: "q" type: "ConvolutionRistretto" bottom: "data" top: "q"
              quantization_param { precision: DYNAMIC_FIXED_POINT bw_layer_in: 8 fl_layer_in: 2 fl_params: 7 } }
            layer { name: "w" type: "MatWrite" bottom: "q" mat_write_param { prefix: "out/" period: 1 } }
            layer { name: "seg" type: "ImageSegData" top: "im" top: "gt"
              image_data_param { source: "list.txt" label_type: PIXEL ignore_label: 255 } }
            """
        ),
    )
    from caffe2py.parse import read_prototxt

    parsed = read_prototxt(path)
    assert parsed.unknown_fields == ()
    assert parsed.net.layer[0].video_data_param.num_segments == 3
    assert list(parsed.net.layer[1].quantization_param.fl_params) == [7]
    assert parsed.net.layer[3].image_data_param.label_type == 2
    v1 = write(
        tmp_path,
        'name: "d"\ninput: "data"\ninput_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8\n'
        'layers { name: "i" type: INTERP bottom: "data" top: "i" interp_param { zoom_factor: 2 } }\n'
        'layers { name: "w" type: MAT_WRITE bottom: "i" mat_write_param { prefix: "x" } }\n'
        'layers { name: "s" type: IMAGE_SEG_DATA top: "im" top: "seg" }\n',
        "v1.prototxt",
    )
    assert [layer.type for layer in read_prototxt(v1).net.layer] == ["Interp", "MatWrite", "ImageSegData"]


def test_v1_fork_types_upgrade_to_the_types_the_emitters_register(tmp_path):
    """C3D's and Fast R-CNN's V1 enum values, DeepLab's hole and PSPNet's BN fields parse."""
    v1 = write(
        tmp_path,
        'name: "v"\ninput: "rois"\ninput_dim: 1 input_dim: 5 input_dim: 1 input_dim: 1\n'
        'layers { name: "v" type: VIDEO_DATA top: "data" top: "label" }\n'
        'layers { name: "c3" type: CONVOLUTION3D bottom: "data" top: "c3" }\n'
        'layers { name: "p3" type: POOLING3D bottom: "c3" top: "p3" }\n'
        'layers { name: "h" type: HOLE_CONVOLUTION bottom: "p3" top: "h" convolution_param { hole: 2 } }\n'
        'layers { name: "r" type: ROI_POOLING bottom: "h" bottom: "rois" top: "r"\n'
        "  roi_pooling_param { pooled_w: 6 pooled_h: 6 spatial_scale: 0.0625 } }\n"
        'layers { name: "b" type: CONVOLUTION bottom: "r" top: "b" convolution_param { hole_h: 2 hole_w: 3 } }\n',
        "v1.prototxt",
    )
    import caffe2py.layers  # noqa: F401  (registers the emitters)
    from caffe2py.layers.registry import REGISTRY
    from caffe2py.parse import read_prototxt

    parsed = read_prototxt(v1)
    assert parsed.unknown_fields == ()
    layers = parsed.net.layer
    types = [layer.type for layer in layers]
    assert types == ["VideoData", "Convolution3D", "Pooling3D", "HoleConvolution", "ROIPooling", "Convolution"]
    assert set(types[1:]) - {"Convolution3D", "Pooling3D"} <= set(REGISTRY)
    assert layers[3].convolution_param.hole == 2
    assert (layers[5].convolution_param.hole_h, layers[5].convolution_param.hole_w) == (2, 3)
    assert layers[4].roi_pooling_param.pooled_w == 6
    assert layers[4].roi_pooling_param.spatial_scale == 0.0625
    bn = write(
        tmp_path,
        'layer { name: "bn" type: "BN" bottom: "x" top: "y" bn_param { moving_average: true decay: 0.05 } }\n',
        "bn.prototxt",
    )
    parsed = read_prototxt(bn)
    assert parsed.unknown_fields == ()
    assert parsed.net.layer[0].bn_param.moving_average


def test_a_v1_video_data_layer_becomes_an_input(tmp_path):
    path = write(
        tmp_path,
        'name: "v"\n'
        'layers { name: "v" type: VIDEO_DATA top: "data" top: "label" }\n'
        'layers { name: "relu" type: RELU bottom: "data" top: "r" }\n',
    )
    source = translate_to_source(path, input_shapes={"data": (1, 3, 8, 8)})
    assert "INPUT_SHAPE = (8, 8, 3)  # Caffe 1x3x8x8" in source
    assert 'data = keras.Input(shape=input_shape, name="data")' in source


PYTHON_NET = HEAD + textwrap.dedent(
    """\
    layer { name: "p1" type: "Python" bottom: "data" top: "p1"
      python_param { module: "rpn.proposal" layer: "ProposalLayer" param_str: "'feat_stride': 16" } }
    layer { name: "p2" type: "Python" bottom: "p1" top: "p2"
      python_param { module: "rpn.proposal" layer: "ProposalLayer" param_str: "'feat_stride': 8" } }
    layer { name: "p3" type: "Python" bottom: "p2" top: "p3" python_param { module: "m" layer: "Add One\\"))" } }
    layer { name: "p4" type: "Python" bottom: "p3" top: "p4" python_param { module: "m" layer: "lower_case" } }
    """
)


def test_one_stub_per_python_class_with_its_param_str(tmp_path):
    path = write(tmp_path, PYTHON_NET)
    translation = translate(path, options=Options(stub_unknown=True))
    assert [(name, kind) for name, kind, _ in translation.stubs] == [
        ("ProposalLayer", "Python (rpn.proposal.ProposalLayer)"),
        ("Add_One", 'Python (m.Add One")))'),
        ("lower_case", "Python (m.lower_case)"),
    ]
    source = translate_to_source(path, options=Options(stub_unknown=True))
    assert "x = ProposalLayer(param_str=\"'feat_stride': 16\", name=\"p1\")(data)" in source
    assert "x = ProposalLayer(param_str=\"'feat_stride': 8\", name=\"p2\")(x)" in source
    assert 'x = Add_One(name="p3")(x)' in source
    assert 'p4 = lower_case(name="p4")(x)' in source
    compile(source, "model.py", "exec")


CUSTOM = """\
import keras


class ProposalLayer(keras.layers.Layer):
    def __init__(self, param_str="", **kwargs):
        super().__init__(**kwargs)
        self.stride = float(param_str.split(":")[1])

    def call(self, x):
        return x * self.stride


class Add_One(keras.layers.Layer):
    def call(self, x):
        return x + 1.0


class lower_case(keras.layers.Layer):
    def call(self, x):
        return x * 2.0
"""

RUN = """\
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import pkg.model as member
sys.path.insert(0, sys.argv[1] + "/pkg")
import model as top_level
for module in (member, top_level):
    out = module.build_model().predict(np.ones((1, 8, 8, 3), "float32"), verbose=0)
    print(float(out[0, 0, 0, 0]))
"""


def test_custom_layers_are_imported_from_beside_the_module(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    path = write(package, PYTHON_NET)
    (package / "my_layers.py").write_text(CUSTOM)
    assert cli.main([str(path), "--custom-layers", str(package / "my_layers.py"), "-o", str(package / "model.py")]) == 0
    source = (package / "model.py").read_text()
    assert "class ProposalLayer" not in source
    assert "from .my_layers import Add_One, ProposalLayer, lower_case\n" in source
    # As a member of a package and as a top-level module: (1 * 16 * 8 + 1) * 2.
    # JAX imports in a fraction of TensorFlow's time; the import mechanism is what is tested.
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    run = subprocess.run([sys.executable, "-c", RUN, str(tmp_path)], check=False, capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["258.0", "258.0"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("my-layers.py", CUSTOM, "--custom-layers {path}: needs a NAME.py file whose NAME is a Python identifier"),
        ("numpy.py", CUSTOM, "--custom-layers {path}: numpy.py would hide the numpy package the module imports"),
        ("partial.py", CUSTOM.split("class Add_One")[0], "{path}: --custom-layers: defines no Add_One, lower_case (the classes the module imports from it; --stub-unknown prints them as stubs to start from)"),
        ("broken.py", "class (:\n", "{path}:1: --custom-layers: not valid Python: invalid syntax"),
    ],
)
def test_custom_layers_errors(tmp_path, name, content, message):
    path = write(tmp_path, PYTHON_NET)
    custom = tmp_path / name
    custom.write_text(content)
    with pytest.raises(TranslationError) as info:
        translate(path, custom_layers=custom)
    assert str(info.value) == message.format(path=custom)


def test_custom_layers_must_be_beside_the_module(tmp_path, capsys):
    path = write(tmp_path, PYTHON_NET)
    (tmp_path / "my_layers.py").write_text(CUSTOM)
    (tmp_path / "out").mkdir()
    assert cli.main([str(path), "--custom-layers", str(tmp_path / "my_layers.py"), "-o", str(tmp_path / "out" / "m.py")]) == 2
    assert capsys.readouterr().err == (
        f"caffe2py: error: --custom-layers {tmp_path / 'my_layers.py'}: must be in the folder of the module {tmp_path / 'out' / 'm.py'}\n"
    )
