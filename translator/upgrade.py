"""Upgrade a parsed NetParameter from Caffe's V0 and V1 layer formats to the current (V2) one."""

from __future__ import annotations

import logging
from typing import Any

from . import schema
from .errors import TranslationError

__all__ = ["upgrade_net"]

_log = logging.getLogger(__name__)

# Caffe's UpgradeV0LayerType: V0 type strings and the V1 LayerType they became.
_V0_TYPES = {
    "accuracy": "ACCURACY",
    "bnll": "BNLL",
    "concat": "CONCAT",
    "conv": "CONVOLUTION",
    "data": "DATA",
    "dropout": "DROPOUT",
    "euclidean_loss": "EUCLIDEAN_LOSS",
    "flatten": "FLATTEN",
    "hdf5_data": "HDF5_DATA",
    "hdf5_output": "HDF5_OUTPUT",
    "im2col": "IM2COL",
    "images": "IMAGE_DATA",
    "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT",
    "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS",
    "pool": "POOLING",
    "relu": "RELU",
    "sigmoid": "SIGMOID",
    "softmax": "SOFTMAX",
    "softmax_loss": "SOFTMAX_LOSS",
    "split": "SPLIT",
    "tanh": "TANH",
    "window_data": "WINDOW_DATA",
}

# Caffe's UpgradeV0LayerParameter: where each V0 field goes, by V0 layer type, as
# (V1 parameter message, its field); "*" applies to every type, field None copies the message.
_ANY = "*"
_V0_FIELDS: dict[str, dict[str, tuple[str, str | None]]] = {
    "num_output": {
        "conv": ("convolution_param", "num_output"),
        "innerproduct": ("inner_product_param", "num_output"),
    },
    "biasterm": {
        "conv": ("convolution_param", "bias_term"),
        "innerproduct": ("inner_product_param", "bias_term"),
    },
    "weight_filler": {
        "conv": ("convolution_param", "weight_filler"),
        "innerproduct": ("inner_product_param", "weight_filler"),
    },
    "bias_filler": {
        "conv": ("convolution_param", "bias_filler"),
        "innerproduct": ("inner_product_param", "bias_filler"),
    },
    "pad": {"conv": ("convolution_param", "pad"), "pool": ("pooling_param", "pad")},
    "kernelsize": {
        "conv": ("convolution_param", "kernel_size"),
        "pool": ("pooling_param", "kernel_size"),
    },
    "group": {"conv": ("convolution_param", "group")},
    "stride": {"conv": ("convolution_param", "stride"), "pool": ("pooling_param", "stride")},
    # V0 and V1 PoolMethod share their values (MAX=0, AVE=1, STOCHASTIC=2).
    "pool": {"pool": ("pooling_param", "pool")},
    "dropout_ratio": {"dropout": ("dropout_param", "dropout_ratio")},
    "local_size": {"lrn": ("lrn_param", "local_size")},
    "alpha": {"lrn": ("lrn_param", "alpha")},
    "beta": {"lrn": ("lrn_param", "beta")},
    "k": {"lrn": ("lrn_param", "k")},
    "source": {
        "data": ("data_param", "source"),
        "hdf5_data": ("hdf5_data_param", "source"),
        "images": ("image_data_param", "source"),
        "window_data": ("window_data_param", "source"),
        "infogain_loss": ("infogain_loss_param", "source"),
    },
    "scale": {_ANY: ("transform_param", "scale")},
    "meanfile": {_ANY: ("transform_param", "mean_file")},
    "batchsize": {
        "data": ("data_param", "batch_size"),
        "hdf5_data": ("hdf5_data_param", "batch_size"),
        "images": ("image_data_param", "batch_size"),
        "window_data": ("window_data_param", "batch_size"),
    },
    "cropsize": {_ANY: ("transform_param", "crop_size")},
    "mirror": {_ANY: ("transform_param", "mirror")},
    "rand_skip": {
        "data": ("data_param", "rand_skip"),
        "images": ("image_data_param", "rand_skip"),
    },
    "shuffle_images": {"images": ("image_data_param", "shuffle")},
    "new_height": {"images": ("image_data_param", "new_height")},
    "new_width": {"images": ("image_data_param", "new_width")},
    "concat_dim": {"concat": ("concat_param", "concat_dim")},
    "det_fg_threshold": {"window_data": ("window_data_param", "fg_threshold")},
    "det_bg_threshold": {"window_data": ("window_data_param", "bg_threshold")},
    "det_fg_fraction": {"window_data": ("window_data_param", "fg_fraction")},
    "det_context_pad": {"window_data": ("window_data_param", "context_pad")},
    "det_crop_mode": {"window_data": ("window_data_param", "crop_mode")},
    "hdf5_output_param": {"hdf5_output": ("hdf5_output_param", None)},
}

# Caffe's UpgradeV1LayerType: V1 LayerType names and the V2 type strings they became.
_V1_TYPES = {
    "NONE": "",
    "ABSVAL": "AbsVal",
    "ACCURACY": "Accuracy",
    "ARGMAX": "ArgMax",
    "BNLL": "BNLL",
    "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution",
    "DATA": "Data",
    "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise",
    "EXP": "Exp",
    "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss",
    "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN",
    "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN",
    "POOLING": "Pooling",
    "POWER": "Power",
    "RELU": "ReLU",
    "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence",
    "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split",
    "SLICE": "Slice",
    "TANH": "TanH",
    "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
    # DeepLab v1's own types, named as its V2 successor (DeepLab v2) names them.
    "IMAGE_SEG_DATA": "ImageSegData",
    "HOLE_CONVOLUTION": "HoleConvolution",
    "SEG_ACCURACY": "SegAccuracy",
    "INTERP": "Interp",
    "PADDING": "Padding",
    "MAT_WRITE": "MatWrite",
    "MAT_READ": "MatRead",
    "DENSE_CRF": "DenseCRF",
    "DOMINANT_CHANNEL": "DominantChannel",
    "BIAS_CHANNEL": "BiasChannel",
    # C3D's video layers and Fast R-CNN's ROI pooling, named as their V2 successors name them.
    "CONVOLUTION3D": "Convolution3D",
    "POOLING3D": "Pooling3D",
    "VIDEO_DATA": "VideoData",
    "ROI_POOLING": "ROIPooling",
}

# Caffe's UpgradeNetDataTransformation: V1 data layers whose own parameters still held the
# preprocessing fields that later moved to transform_param.
_DATA_PARAMS = {
    "DATA": "data_param",
    "IMAGE_DATA": "image_data_param",
    "WINDOW_DATA": "window_data_param",
}
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def upgrade_net(net: Any, path: str | None = None) -> Any:
    """Return ``net`` (a caffe.NetParameter) in the current format, as Caffe's UpgradeNetAsNeeded.

    V0 layers (``layers { layer { type: "conv" } }``, with "padding" layers folded into the
    convolution or pooling they feed) become V1 layers; V1 data layers' preprocessing fields move
    to ``transform_param``; V1 layers (``layers { type: CONVOLUTION }``) become ``layer`` entries
    with string types, ``param`` specs from ``blobs_lr``/``weight_decay``, and their blobs,
    include/exclude rules and ``*_param`` messages. Legacy ``input_dim`` (4 per input) becomes one
    ``input_shape`` per ``input``; unlike Caffe, the inputs stay ``input`` + ``input_shape``
    rather than becoming an Input layer.

    The argument is never modified: a net with nothing to upgrade is returned as is, any other
    is upgraded in a copy. Raises TranslationError (with ``path`` when given) for a net that mixes
    ``layer`` and ``layers``, an unknown V0 layer type, a misplaced V0 padding layer, a V0 bottom
    no earlier layer produces, or an ``input_dim`` count that is not 4 per input.
    """
    if len(net.layer) and len(net.layers):
        first = net.layers[0]
        raise TranslationError(
            "the net mixes `layer` blocks with old-format `layers` blocks; "
            "write all layers in one format",
            path=path,
            layer=_v1_name(first),
            layer_type=_v1_type_name(first),
        )
    needs_input_upgrade = len(net.input_dim) > 0
    if not len(net.layers) and not needs_input_upgrade:
        return net
    upgraded = schema.NetParameter()
    if len(net.layers):
        _copy_net_fields(net, upgraded)
        v1_layers = list(net.layers)
        if any(v1.HasField("layer") for v1 in v1_layers):
            v1_layers = _upgrade_v0_layers(net, path)
        for v1 in v1_layers:
            layer = upgraded.layer.add()
            _v1_to_v2(v1, layer)
            _upgrade_data_transformation(v1, layer)
            _upgrade_c3d_params(v1, layer, path)
    else:
        upgraded.CopyFrom(net)
    if needs_input_upgrade:
        _upgrade_input_dim(upgraded, path)
    return upgraded


def _copy_net_fields(net: Any, upgraded: Any) -> None:
    """Copy everything but the layers, so that no blob is copied twice."""
    for field, value in net.ListFields():
        if field.name in ("layer", "layers"):
            continue
        if schema.is_repeated(field):
            getattr(upgraded, field.name).extend(value)
        elif field.message_type is not None:
            getattr(upgraded, field.name).CopyFrom(value)
        else:
            setattr(upgraded, field.name, value)


def _v1_name(v1: Any) -> str:
    return v1.layer.name if v1.HasField("layer") else v1.name


def _v1_type_name(v1: Any) -> str | None:
    """The layer's type as written: a V0 type string or a V1 LayerType name."""
    if v1.HasField("layer"):
        return v1.layer.type or None
    return _layer_type_enum_name(v1) if v1.HasField("type") else None


def _layer_type_enum_name(v1: Any) -> str:
    return v1.LayerType.Name(v1.type)


# ---- V0 -> V1 ----


def _upgrade_v0_layers(net: Any, path: str | None) -> list[Any]:
    """The V1 layers that ``net.layers`` hold in V0 form (Caffe's UpgradeV0Net)."""
    return [
        _v0_to_v1(connection, path) if connection.HasField("layer") else connection
        # Caffe would keep only bottom and top of a V1 entry here; it is kept whole instead.
        for connection in _fold_padding_layers(net, path)
    ]


def _fold_padding_layers(net: Any, path: str | None) -> list[Any]:
    """Drop V0 "padding" layers; the conv/pool each feeds takes its pad (UpgradeV0PaddingLayers)."""
    last_producer: dict[str, int] = {name: -1 for name in net.input}
    kept: list[Any] = []
    for i, connection in enumerate(net.layers):
        v0 = connection.layer
        current = None
        if v0.type != "padding":
            current = schema.V1LayerParameter()
            current.CopyFrom(connection)
            kept.append(current)
        for j, blob in enumerate(connection.bottom):
            if blob not in last_producer:
                raise TranslationError(
                    f"bottom {blob!r} is not produced by an earlier layer or an input",
                    path=path,
                    layer=_v1_name(connection),
                    layer_type=_v1_type_name(connection),
                )
            producer = last_producer[blob]
            if producer < 0 or net.layers[producer].layer.type != "padding":
                continue
            padding = net.layers[producer]
            if current is None or v0.type not in ("conv", "pool"):
                raise TranslationError(
                    f"padding layer {padding.layer.name!r} feeds a layer that is neither "
                    "a convolution nor a pooling",
                    path=path,
                    layer=_v1_name(connection),
                    layer_type=_v1_type_name(connection),
                )
            if len(connection.bottom) != 1 or len(padding.bottom) != 1 or len(padding.top) != 1:
                raise TranslationError(
                    f"padding layer {padding.layer.name!r} and the layer it feeds must each "
                    "have a single input (and the padding layer a single output)",
                    path=path,
                    layer=_v1_name(connection),
                    layer_type=_v1_type_name(connection),
                )
            current.layer.pad = padding.layer.pad
            current.bottom[j] = padding.bottom[0]
        for blob in connection.top:
            last_producer[blob] = i
    return kept


def _v0_to_v1(connection: Any, path: str | None) -> Any:
    """One V0 layer as a V1 layer (Caffe's UpgradeV0LayerParameter and UpgradeV0LayerType)."""
    v0 = connection.layer
    v1 = schema.V1LayerParameter()
    v1.bottom.extend(connection.bottom)
    v1.top.extend(connection.top)
    if v0.HasField("name"):
        v1.name = v0.name
    kind = v0.type
    if v0.HasField("type"):
        if kind not in _V0_TYPES:
            raise TranslationError(
                f"unknown V0 layer type {kind!r}",
                path=path,
                layer=v0.name or None,
                layer_type=kind,
            )
        v1.type = v1.LayerType.Value(_V0_TYPES[kind])
    v1.blobs.extend(v0.blobs)
    v1.blobs_lr.extend(v0.blobs_lr)
    v1.weight_decay.extend(v0.weight_decay)
    for field, targets in _V0_FIELDS.items():
        if not v0.HasField(field):
            continue
        target = targets.get(kind, targets.get(_ANY))
        if target is None:
            # Caffe logs this and carries on without the field.
            _log.warning(
                "%slayer %r: V0 parameter %s does not apply to type %r; ignored",
                f"{path}: " if path else "",
                v0.name,
                field,
                kind,
            )
            continue
        _set(getattr(v1, target[0]), target[1], getattr(v0, field))
    return v1


def _set(message: Any, field: str | None, value: Any) -> None:
    if field is None:
        message.CopyFrom(value)
        return
    descriptor = message.DESCRIPTOR.fields_by_name[field]
    if descriptor.message_type is not None:
        getattr(message, field).CopyFrom(value)
    elif schema.is_repeated(descriptor):
        getattr(message, field).append(value)
    else:
        setattr(message, field, value)


# ---- V1 data layers' preprocessing fields ----


def _upgrade_data_transformation(v1: Any, layer: Any) -> None:
    """Move a V1 data layer's scale/mean_file/crop_size/mirror into the V2 transform_param."""
    param_field = _DATA_PARAMS.get(_layer_type_enum_name(v1))
    if param_field is None or not layer.HasField(param_field):
        return
    params = getattr(layer, param_field)
    for field in _TRANSFORM_FIELDS:
        if params.HasField(field):
            setattr(layer.transform_param, field, getattr(params, field))
            params.ClearField(field)


# ---- C3D v1.0's 3-D layers ----

# C3D v1.0's V1 CONVOLUTION3D and POOLING3D read their parameters from convolution_param and
# pooling_param (its own versions of them); C3D v1.1's Convolution3D and Pooling3D from the
# messages below, which hold the same fields.
_C3D_PARAMS = {
    "CONVOLUTION3D": ("convolution_param", "convolution3d_param"),
    "POOLING3D": ("pooling_param", "pooling3d_param"),
}


def _upgrade_c3d_params(v1: Any, layer: Any, path: str | None) -> None:
    """Move a C3D v1.0 layer's convolution_param/pooling_param into its v1.1 parameter message."""
    fields = _C3D_PARAMS.get(_layer_type_enum_name(v1)) if v1.HasField("type") else None
    if fields is None or not layer.HasField(fields[0]):
        return
    source, target = getattr(layer, fields[0]), getattr(layer, fields[1])
    known = target.DESCRIPTOR.fields_by_name
    for field, value in source.ListFields():
        if field.name not in known:
            raise TranslationError(
                f"{fields[0]}.{field.name} is not a field of C3D's {_layer_type_enum_name(v1)}",
                path=path,
                layer=layer.name,
                layer_type=layer.type,
            )
        if schema.is_repeated(field):  # BVLC's repeated pad/kernel_size/stride; C3D's hold one value
            if len(value) != 1:
                raise TranslationError(
                    f"{fields[0]}.{field.name} has {len(value)} values; C3D's takes one",
                    path=path,
                    layer=layer.name,
                    layer_type=layer.type,
                )
            value = value[0]
        _set(target, field.name, value)
    layer.ClearField(fields[0])


# ---- V1 -> V2 ----


def _v1_to_v2(v1: Any, layer: Any) -> None:
    """Fill the empty V2 ``layer`` from a V1 layer (Caffe's UpgradeV1LayerParameter)."""
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    if v1.HasField("name"):
        layer.name = v1.name
    layer.include.extend(v1.include)
    layer.exclude.extend(v1.exclude)
    if v1.HasField("type"):
        layer.type = _V1_TYPES[_layer_type_enum_name(v1)]
    layer.blobs.extend(v1.blobs)
    for i, name in enumerate(v1.param):
        _param_spec(layer, i).name = name
    for i, mode in enumerate(v1.blob_share_mode):
        # V1 DimCheckMode and ParamSpec.DimCheckMode share their values (STRICT=0, PERMISSIVE=1).
        _param_spec(layer, i).share_mode = mode
    for i, lr in enumerate(v1.blobs_lr):
        _param_spec(layer, i).lr_mult = lr
    for i, decay in enumerate(v1.weight_decay):
        _param_spec(layer, i).decay_mult = decay
    layer.loss_weight.extend(v1.loss_weight)
    # Every *_param of V1 (transform_param and loss_param included) exists in V2 under its name.
    for field in v1.DESCRIPTOR.fields:
        if field.name.endswith("_param") and v1.HasField(field.name):
            getattr(layer, field.name).CopyFrom(getattr(v1, field.name))


def _param_spec(layer: Any, index: int) -> Any:
    while len(layer.param) <= index:
        layer.param.add()
    return layer.param[index]


# ---- legacy input dimensions ----


def _upgrade_input_dim(net: Any, path: str | None) -> None:
    """Turn ``input_dim`` (4 per input) into one ``input_shape`` per input (UpgradeNetInput).

    C3D's Net::Init reads 5 per input (N, C, L, H, W) instead; a count of 5 per input is taken so.
    """
    if not len(net.input_shape):
        dims = list(net.input_dim)
        inputs = len(net.input)
        if inputs and len(dims) == 5 * inputs:
            per_input = 5
        elif len(dims) == 4 * inputs:
            per_input = 4
        else:
            raise TranslationError(
                f"{inputs} input(s) need {4 * inputs} input_dim values "
                f"(4 per input; C3D's 5-D inputs {5 * inputs}), found {len(dims)}",
                path=path,
            )
        for i in range(inputs):
            net.input_shape.add().dim.extend(dims[per_input * i : per_input * (i + 1)])
    # As in Caffe, input_shape wins when both are given.
    net.ClearField("input_dim")
