"""Upgrading V0 and V1 nets to the current format, checked against Caffe's own V2 files."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format

from caffe2py import schema
from caffe2py.errors import TranslationError
from caffe2py.upgrade import upgrade_net

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"

needs_corpus = pytest.mark.skipif(
    not CORPUS.is_dir(), reason=f"the shared corpus is absent ({CORPUS})"
)

_COMPARED_PARAMS = (
    "convolution_param",
    "pooling_param",
    "lrn_param",
    "inner_product_param",
    "dropout_param",
)


def _parse(text: str):
    return text_format.Parse(text, schema.NetParameter())


def _load(relative: str):
    return _parse((CORPUS / relative).read_text(encoding="utf-8"))


def _without_fillers(params):
    copy = type(params)()
    copy.CopyFrom(params)
    for field in ("weight_filler", "bias_filler"):
        if field in copy.DESCRIPTOR.fields_by_name:
            copy.ClearField(field)
    return copy


def _assert_same_layers(upgraded, reference, *, ignore_fillers: bool = False) -> None:
    """Same names, types, bottoms, tops and layer parameters, layer by layer."""
    assert [layer.name for layer in upgraded] == [layer.name for layer in reference]
    for got, want in zip(upgraded, reference, strict=True):
        assert got.type == want.type, got.name
        assert list(got.bottom) == list(want.bottom), got.name
        assert list(got.top) == list(want.top), got.name
        for field in _COMPARED_PARAMS:
            got_params, want_params = getattr(got, field), getattr(want, field)
            if ignore_fillers:
                got_params, want_params = _without_fillers(got_params), _without_fillers(
                    want_params
                )
            assert got_params == want_params, f"{got.name}.{field}"


@needs_corpus
def test_v1_alexnet_matches_the_v2_deploy() -> None:
    v1 = _load("v1_format_bvlc/bvlc_alexnet_deploy_v1.prototxt")
    v2 = _load("bvlc_alexnet/deploy.prototxt")
    upgraded = upgrade_net(v1)

    assert not len(upgraded.layers) and not len(upgraded.input_dim)
    # The V2 file declares its input with an Input layer; the upgrade keeps input + input_shape.
    input_layer, *v2_layers = v2.layer
    assert list(upgraded.input) == list(input_layer.top)
    assert list(upgraded.input_shape) == list(input_layer.input_param.shape)
    _assert_same_layers(upgraded.layer, v2_layers)
    # blobs_lr / weight_decay became the same ParamSpecs that the V2 file spells out.
    for got, want in zip(upgraded.layer, v2_layers, strict=True):
        assert list(got.param) == list(want.param), got.name
    assert v1.layers and not len(v1.layer), "the argument must not be modified"


@needs_corpus
def test_v0_places_net_upgrades_to_caffenet_structure() -> None:
    upgraded = upgrade_net(_load("v0_format_places/hybridCNN_deploy.prototxt"))
    # Places' Hybrid-CNN is CaffeNet with 1183 outputs: compare with BVLC's V2 CaffeNet.
    _, *caffenet = _load("bvlc_reference_caffenet/deploy.prototxt").layer
    caffenet[-2].inner_product_param.num_output = 1183

    assert upgraded.name == "hybridnet"
    assert list(upgraded.input) == ["data"]
    assert [list(shape.dim) for shape in upgraded.input_shape] == [[10, 3, 227, 227]]
    # The V0 file keeps its training fillers; BVLC's deploy file has none.
    _assert_same_layers(upgraded.layer, caffenet, ignore_fillers=True)

    by_name = {layer.name: layer for layer in upgraded.layer}
    conv2 = by_name["conv2"].convolution_param
    assert (conv2.num_output, list(conv2.kernel_size), list(conv2.pad), conv2.group) == (
        256,
        [5],
        [2],
        2,
    )
    assert conv2.weight_filler.type == "gaussian" and conv2.weight_filler.std == pytest.approx(0.01)
    pool1 = by_name["pool1"].pooling_param
    assert (pool1.pool, pool1.kernel_size, pool1.stride) == (pool1.MAX, 3, 2)
    norm1 = by_name["norm1"].lrn_param
    assert (norm1.local_size, norm1.alpha, norm1.beta) == (5, pytest.approx(1e-4), 0.75)
    assert by_name["fc6"].inner_product_param.num_output == 4096
    assert [(p.lr_mult, p.decay_mult) for p in by_name["fc6"].param] == [(1, 1), (2, 0)]
    assert {layer.type for layer in upgraded.layer} == {
        "Convolution",
        "ReLU",
        "Pooling",
        "LRN",
        "InnerProduct",
        "Dropout",
        "Softmax",
    }


V0_WITH_PADDING = """
name: "padded"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
layers {
  layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 stride: 1 biasterm: false }
  bottom: "pad1" top: "conv1"
}
layers { layer { name: "pad2" type: "padding" pad: 1 } bottom: "conv1" top: "pad2" }
layers {
  layer { name: "pool1" type: "pool" pool: AVE kernelsize: 2 stride: 2 }
  bottom: "pad2" top: "pool1"
}
layers {
  layer { name: "data_layer" type: "data" source: "db" batchsize: 8 cropsize: 6 mirror: true }
  top: "unused"
}
"""


def test_v0_padding_layers_fold_into_the_next_conv_and_pool() -> None:
    net = _parse(V0_WITH_PADDING)
    before = net.SerializeToString()
    upgraded = upgrade_net(net)
    assert net.SerializeToString() == before, "the argument must not be modified"
    assert [layer.name for layer in upgraded.layer] == ["conv1", "pool1", "data_layer"]
    conv1, pool1, data = upgraded.layer
    assert conv1.type == "Convolution" and list(conv1.bottom) == ["data"]
    assert list(conv1.convolution_param.pad) == [2]
    assert list(conv1.convolution_param.kernel_size) == [3]
    assert not conv1.convolution_param.bias_term
    assert pool1.type == "Pooling" and list(pool1.bottom) == ["conv1"]
    assert pool1.pooling_param.pad == 1 and pool1.pooling_param.pool == pool1.pooling_param.AVE
    # V0 data layers' preprocessing goes to transform_param, as in Caffe.
    assert data.type == "Data"
    assert (data.data_param.source, data.data_param.batch_size) == ("db", 8)
    assert (data.transform_param.crop_size, data.transform_param.mirror) == (6, True)


@needs_corpus
def test_v1_nin_train_val_keeps_phases() -> None:
    upgraded = upgrade_net(_load("nin/nin_cifar10_train_val.prototxt"))
    phases = [(layer.name, [rule.phase for rule in layer.include]) for layer in upgraded.layer]
    train, test = 0, 1
    assert phases[:2] == [("cifar", [train]), ("cifar", [test])]
    assert ("accuracy", [test]) in phases
    assert upgraded.layer[0].type == "Data"
    assert upgraded.layer[0].data_param.batch_size == 128
    assert [layer.type for layer in upgraded.layer][-2:] == ["Accuracy", "SoftmaxWithLoss"]


@needs_corpus
def test_v1_nin_imagenet_keeps_its_transform_param() -> None:
    upgraded = upgrade_net(_load("nin/nin_imagenet_train_val.prototxt"))
    data = upgraded.layer[0]
    assert data.type == "Data" and data.include[0].phase == 0
    assert (data.transform_param.crop_size, data.transform_param.mirror) == (224, True)
    assert data.transform_param.mean_file.endswith("imagenet-train-mean")


def test_v1_data_params_move_to_transform_param() -> None:
    net = _parse("""
        layers {
          name: "data" type: DATA top: "data" top: "label"
          data_param { source: "db" batch_size: 4 scale: 0.5 mean_file: "m.binaryproto"
                       crop_size: 227 mirror: true }
          include { phase: TRAIN }
        }
        layers {
          name: "images" type: IMAGE_DATA top: "im" top: "label2"
          image_data_param { source: "list.txt" scale: 0.25 }
          exclude { stage: "deploy" }
        }
        """)
    before = net.SerializeToString()
    data, images = upgrade_net(net).layer
    assert net.SerializeToString() == before, "the argument must not be modified"
    assert data.type == "Data" and images.type == "ImageData"
    assert not data.data_param.HasField("scale") and not data.data_param.HasField("crop_size")
    assert data.transform_param.scale == 0.5 and data.transform_param.mean_file == "m.binaryproto"
    assert (data.transform_param.crop_size, data.transform_param.mirror) == (227, True)
    assert images.transform_param.scale == 0.25 and images.image_data_param.source == "list.txt"
    assert data.include[0].phase == 0 and list(images.exclude[0].stage) == ["deploy"]


def test_v1_layer_carries_blobs_params_and_loss_weights() -> None:
    net = _parse("""
        layers {
          name: "ip" type: INNER_PRODUCT bottom: "x" top: "y"
          blobs { num: 1 channels: 1 height: 2 width: 3 data: [1, 2, 3, 4, 5, 6] }
          blobs { shape { dim: 2 } data: [7, 8] }
          param: "shared_w" blob_share_mode: PERMISSIVE
          blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
          loss_weight: 0.5
          inner_product_param { num_output: 2 }
        }
        layers { name: "d" type: DECONVOLUTION bottom: "y" top: "z" }
        layers { name: "l" type: SOFTMAX_LOSS bottom: "z" bottom: "t" top: "loss" }
        """)
    ip, deconv, loss = upgrade_net(net).layer
    assert ip.type == "InnerProduct" and ip.inner_product_param.num_output == 2
    assert [list(blob.data) for blob in ip.blobs] == [[1, 2, 3, 4, 5, 6], [7, 8]]
    assert (ip.blobs[0].height, ip.blobs[0].width, list(ip.blobs[1].shape.dim)) == (2, 3, [2])
    assert ip.param[0].name == "shared_w" and ip.param[0].share_mode == ip.param[0].PERMISSIVE
    assert [(p.lr_mult, p.decay_mult) for p in ip.param] == [(1, 1), (2, 0)]
    assert list(ip.loss_weight) == [0.5]
    assert (deconv.type, loss.type) == ("Deconvolution", "SoftmaxWithLoss")


def test_v2_net_is_returned_unchanged() -> None:
    net = _parse('input: "data" input_shape { dim: 1 dim: 3 } layer { name: "r" type: "ReLU" }')
    assert upgrade_net(net) is net


def test_v2_net_input_dim_becomes_input_shape() -> None:
    net = _parse(
        'input: "a" input_dim: 1 input_dim: 3 input_dim: 4 input_dim: 5 '
        'input: "b" input_dim: 2 input_dim: 1 input_dim: 1 input_dim: 1 '
        'layer { name: "r" type: "ReLU" bottom: "a" top: "r" }'
    )
    upgraded = upgrade_net(net)
    assert [list(shape.dim) for shape in upgraded.input_shape] == [[1, 3, 4, 5], [2, 1, 1, 1]]
    assert not len(upgraded.input_dim) and list(upgraded.input) == ["a", "b"]
    assert len(net.input_dim) == 8, "the argument must not be modified"


def test_wrong_input_dim_count_is_an_error() -> None:
    net = _parse('input: "a" input_dim: 1 input_dim: 3 input_dim: 4 layer { name: "r" }')
    with pytest.raises(TranslationError, match="4 input_dim values"):
        upgrade_net(net, "net.prototxt")


def test_mixing_layer_and_layers_is_an_error() -> None:
    net = _parse('layer { name: "new" type: "ReLU" } layers { name: "old" type: RELU }')
    with pytest.raises(TranslationError) as caught:
        upgrade_net(net, "mixed.prototxt")
    assert caught.value.path == "mixed.prototxt" and caught.value.layer == "old"
    assert "mixed.prototxt" in str(caught.value) and "'old'" in str(caught.value)


def test_unknown_v0_type_is_an_error() -> None:
    net = _parse('layers { layer { name: "weird" type: "warp" } bottom: "x" top: "y" } input: "x"')
    with pytest.raises(TranslationError) as caught:
        upgrade_net(net, "v0.prototxt")
    error = caught.value
    assert (error.path, error.layer, error.layer_type) == ("v0.prototxt", "weird", "warp")
    assert "unknown V0 layer type 'warp'" in str(error)


def test_padding_before_a_non_conv_layer_is_an_error() -> None:
    net = _parse(
        'input: "x" '
        'layers { layer { name: "p" type: "padding" pad: 1 } bottom: "x" top: "p" } '
        'layers { layer { name: "r" type: "relu" } bottom: "p" top: "r" }'
    )
    with pytest.raises(TranslationError, match="neither a convolution nor a pooling"):
        upgrade_net(net)


def test_v0_bottom_without_producer_is_an_error() -> None:
    net = _parse('layers { layer { name: "r" type: "relu" } bottom: "ghost" top: "r" }')
    with pytest.raises(TranslationError, match="'ghost'") as caught:
        upgrade_net(net)
    assert caught.value.layer == "r"
