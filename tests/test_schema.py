"""The Caffe schema: the corpus parses, caffe.desc is current, Caffe's field numbers hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import text_format

from caffe2py import schema

SHARED = Path(__file__).resolve().parents[2] / "shared"
CORPUS = SHARED / "corpus"


def _corpus_prototxts() -> list:
    if not CORPUS.is_dir():
        reason = f"the shared corpus is absent ({CORPUS})"
        return [pytest.param(None, id="no-corpus", marks=pytest.mark.skip(reason=reason))]
    return [
        pytest.param(path, id=str(path.relative_to(CORPUS)))
        for path in sorted(CORPUS.rglob("*.prototxt"))
    ]


@pytest.mark.parametrize("path", _corpus_prototxts())
def test_corpus_prototxt_parses(path: Path) -> None:
    net = text_format.Merge(path.read_text(encoding="utf-8"), schema.NetParameter())
    assert len(net.layer) or len(net.layers)


def test_v0_layers_parse_nested_in_v1() -> None:
    net = text_format.Parse(
        'layers { layer { name: "c" type: "conv" kernelsize: 3 } bottom: "x" top: "c" }',
        schema.NetParameter(),
    )
    assert net.layers[0].layer.kernelsize == 3


def test_fork_fields_parse() -> None:
    text = """
    layer { pooling_param { round_mode: FLOOR ceil_mode: false } }
    layer { bn_param { bn_mode: INFERENCE scale_filler { value: 1 } eps: 1e-3 momentum: 0.9 } }
    layer { upsample_param { scale: 2 upsample_h: 23 upsample_w: 30 pad_out_h: true } }
    layer { interp_param { zoom_factor: 8 pad_beg: 0 } }
    layer { shuffle_channel_param { group: 3 } }
    layer { dense_image_data_param { source: "a.txt" batch_size: 4 shuffle: true } }
    layer { permute_param { order: 0 order: 2 order: 3 order: 1 } }
    layer { norm_param { across_spatial: false channel_shared: false eps: 1e-10 } }
    layer { prior_box_param { min_size: 30 aspect_ratio: 2 flip: true step: 8 offset: 0.5 } }
    layer { detection_output_param { num_classes: 21 nms_param { nms_threshold: 0.45 top_k: 100 }
                                     code_type: CENTER_SIZE keep_top_k: 100 } }
    layer { convolution_param { axis: 1 force_nd_im2col: true dilation: 2 } }
    """
    net = text_format.Parse(text, schema.NetParameter())
    pooling = net.layer[0].pooling_param
    assert pooling.round_mode == pooling.FLOOR and not pooling.ceil_mode
    assert net.layer[1].bn_param.bn_mode == net.layer[1].bn_param.INFERENCE
    assert net.layer[2].upsample_param.upsample_w == 30


def test_defaults_follow_caffe() -> None:
    pooling = schema.message_class("PoolingParameter")()
    assert (
        pooling.pool == pooling.MAX and pooling.stride == 1 and pooling.round_mode == pooling.CEIL
    )
    lrn = schema.message_class("LRNParameter")()
    assert (lrn.local_size, lrn.beta, lrn.k) == (5, pytest.approx(0.75), pytest.approx(1.0))
    assert lrn.norm_region == lrn.ACROSS_CHANNELS
    conv = schema.message_class("ConvolutionParameter")()
    assert conv.bias_term and conv.group == 1 and conv.axis == 1
    phase = schema.NetState.DESCRIPTOR.fields_by_name["phase"].enum_type
    assert schema.NetState().phase == phase.values_by_name["TEST"].number
    assert schema.message_class("BatchNormParameter")().eps == pytest.approx(1e-5)


def test_descriptor_set_is_current() -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools is not installed")
    from caffe2py.schema import build

    assert (
        build.main(["--check"]) == 0
    ), "caffe.desc is stale: run python -m caffe2py.schema.build"


def test_stale_descriptor_set_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools is not installed")
    from google.protobuf import descriptor_pb2

    from caffe2py.schema import build

    stale = descriptor_pb2.FileDescriptorSet()
    stale.file.add(name="caffe.proto", package="caffe")
    monkeypatch.setattr(build, "DESC", tmp_path / "caffe.desc")
    assert build.main(["--check"]) == 1, "a missing caffe.desc must count as stale"
    build.DESC.write_bytes(stale.SerializeToString())
    assert build.main(["--check"]) == 1


# Field numbers that a binary .caffemodel depends on (Caffe's caffe.proto).
@pytest.mark.parametrize(
    ("message", "field", "number"),
    [
        ("NetParameter", "layer", 100),
        ("NetParameter", "layers", 2),
        ("NetParameter", "name", 1),
        ("NetParameter", "input", 3),
        ("NetParameter", "input_dim", 4),
        ("NetParameter", "input_shape", 8),
        ("LayerParameter", "name", 1),
        ("LayerParameter", "type", 2),
        ("LayerParameter", "bottom", 3),
        ("LayerParameter", "top", 4),
        ("LayerParameter", "blobs", 7),
        ("V1LayerParameter", "name", 4),
        ("V1LayerParameter", "type", 5),
        ("V1LayerParameter", "blobs", 6),
        ("V1LayerParameter", "layer", 1),
        ("V0LayerParameter", "blobs", 50),
        ("BlobProto", "data", 5),
        ("BlobProto", "shape", 7),
        ("BlobProto", "num", 1),
        ("BlobProto", "channels", 2),
        ("BlobProto", "height", 3),
        ("BlobProto", "width", 4),
        ("BlobProto", "double_data", 8),
        ("BlobShape", "dim", 1),
        ("BlobProtoVector", "blobs", 1),
    ],
)
def test_caffe_field_numbers(message: str, field: str, number: int) -> None:
    assert schema.message_class(message).DESCRIPTOR.fields_by_name[field].number == number


@pytest.mark.parametrize(("message", "field"), [("BlobProto", "data"), ("BlobShape", "dim")])
def test_blob_arrays_are_packed(message: str, field: str) -> None:
    assert schema.message_class(message).DESCRIPTOR.fields_by_name[field].GetOptions().packed


def test_v1_layer_type_numbers() -> None:
    layer_type = schema.V1LayerParameter.LayerType
    assert layer_type.Value("CONVOLUTION") == 4
    assert layer_type.Value("INNER_PRODUCT") == 14
    assert layer_type.Value("POOLING") == 17
    assert layer_type.Value("DECONVOLUTION") == 39


def test_exports_and_message_class() -> None:
    assert schema.message_class("caffe.LayerParameter") is schema.LayerParameter
    net = schema.NetParameter()
    assert type(net.layer.add()) is schema.LayerParameter
    assert type(net.layers.add().layer) is schema.V0LayerParameter
    for name in ("BlobProto", "BlobShape", "BlobProtoVector", "NetState", "NetStateRule"):
        assert getattr(schema, name).DESCRIPTOR.full_name == f"caffe.{name}"
    with pytest.raises(KeyError):
        schema.message_class("NoSuchParameter")
    with pytest.raises(AttributeError):
        _ = schema.NoSuchParameter


def test_import_is_light() -> None:
    code = (
        "import sys, caffe2py.schema as s; s.NetParameter(); "
        "heavy = {'tensorflow', 'keras', 'numpy', 'jinja2', 'grpc_tools'} & set(sys.modules); "
        "sys.exit(sorted(heavy) or 0)"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
