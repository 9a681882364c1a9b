"""Generated models predict TensorFlow's outputs on every other Keras backend (JAX, PyTorch), and reload saved."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from caffe2py.convert import translate_to_source
from caffe2py.emit import Options

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
# Backend name for KERAS_BACKEND -> the package it needs.
OTHER_BACKENDS = {"jax": "jax", "torch": "torch"}
# Whole published nets -> (prototxt, the input shape they are translated at: small, to be cheap; None:
# the prototxt's). Between them: ceil-mode pooling and Fire modules (SqueezeNet), LRN and grouped
# convolution (AlexNet), PriorBox, Normalize and DetectionOutput finding detections (YuFaceDetectNet),
# Slice, ShuffleChannel and BatchNorm (ShuffleNet v2).
CORPUS = {
    "squeezenet": ("squeezenet_v1.1/deploy.prototxt", None),
    "alexnet": ("bvlc_alexnet/deploy.prototxt", (1, 3, 67, 67)),
    "yufacedetectnet": ("yufacedetectnet/yufacedetectnet-open-v2.prototxt", (1, 3, 64, 64)),
    "shufflenet_v2": ("shufflenet/shufflenet_v2_1x_deploy.prototxt", (1, 3, 64, 64)),
    "mobilenet_ssd": ("mobilenet_ssd/MobileNetSSD_deploy.prototxt", (1, 3, 160, 160)),
}
# Run on TensorFlow only (saved and reloaded): with seeded weights MobileNet-SSD scores many boxes
# within float rounding of one another, so which of them NMS keeps differs from backend to backend.
TENSORFLOW_ONLY = {"mobilenet_ssd"}
# A TRAIN-phase net with its solver (compile_model): saved compiled, optimizer and loss included.
TRAIN_CASE = "adam_bn_frozen"
# The module that also takes a step of model.fit: BatchNorm layers in training mode.
FIT = "resnet_block"
# The module whose reloaded model is also exported as a TensorFlow SavedModel.
EXPORTED = "alexnet"

# One branch per helper layer and per Keras layer whose backends differ in implementation;
# every unconsumed top is a model output, so each branch is compared on its own.
ZOO = """name: "zoo"
input: "data"
input_shape { dim: 1 dim: 6 dim: 11 dim: 13 }
layer { name: "abs" type: "AbsVal" bottom: "data" top: "abs" }
layer { name: "bnll" type: "BNLL" bottom: "data" top: "bnll" }
layer { name: "elu" type: "ELU" bottom: "data" top: "elu" elu_param { alpha: 0.7 } }
layer { name: "leaky" type: "ReLU" bottom: "data" top: "leaky" relu_param { negative_slope: 0.1 } }
layer { name: "negative_slope" type: "ReLU" bottom: "data" top: "negative_slope" relu_param { negative_slope: -0.3 } }
layer { name: "prelu" type: "PReLU" bottom: "data" top: "prelu" }
layer { name: "sigmoid" type: "Sigmoid" bottom: "data" top: "sigmoid" }
layer { name: "tanh" type: "TanH" bottom: "data" top: "tanh" }
layer { name: "swish" type: "Swish" bottom: "data" top: "swish" swish_param { beta: 1.5 } }
layer { name: "clip" type: "Clip" bottom: "data" top: "clip" clip_param { min: -0.5 max: 0.8 } }
layer { name: "threshold" type: "Threshold" bottom: "data" top: "threshold" threshold_param { threshold: 0.2 } }
layer { name: "power" type: "Power" bottom: "data" top: "power" power_param { power: 2 scale: 0.5 shift: 1 } }
layer { name: "exp" type: "Exp" bottom: "data" top: "exp" exp_param { scale: 0.5 } }
layer { name: "log" type: "Log" bottom: "exp" top: "log" log_param { base: 2 shift: 1 } }
layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" }
layer { name: "bn_scale" type: "Scale" bottom: "bn" top: "bn_scale" scale_param { bias_term: true } }
layer { name: "scale" type: "Scale" bottom: "data" top: "scale" }
layer { name: "bias" type: "Bias" bottom: "data" top: "bias" }
layer { name: "mvn" type: "MVN" bottom: "data" top: "mvn" }
layer { name: "lrn" type: "LRN" bottom: "data" top: "lrn" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 } }
layer {
  name: "lrn_within" type: "LRN" bottom: "data" top: "lrn_within"
  lrn_param { local_size: 3 alpha: 0.5 norm_region: WITHIN_CHANNEL }
}
layer {
  name: "pool_max" type: "Pooling" bottom: "data" top: "pool_max" top: "pool_mask"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }
}
layer { name: "pool_ave" type: "Pooling" bottom: "data" top: "pool_ave" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "pool_max_ceil" type: "Pooling" bottom: "data" top: "pool_max_ceil" pooling_param { pool: MAX kernel_size: 3 stride: 3 pad: 1 } }
layer { name: "pool_ave_ceil" type: "Pooling" bottom: "data" top: "pool_ave_ceil" pooling_param { pool: AVE kernel_size: 3 stride: 3 pad: 1 } }
layer { name: "pool_global" type: "Pooling" bottom: "data" top: "pool_global" pooling_param { pool: AVE global_pooling: true } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 stride: 2 group: 2 } }
layer {
  name: "dilated" type: "Convolution" bottom: "data" top: "dilated"
  convolution_param { num_output: 4 kernel_size: 3 stride: 2 dilation: 2 }
}
layer { name: "dwconv" type: "Convolution" bottom: "data" top: "dwconv" convolution_param { num_output: 6 kernel_size: 3 pad: 1 group: 6 } }
layer { name: "deconv" type: "Deconvolution" bottom: "data" top: "deconv" convolution_param { num_output: 4 kernel_size: 4 stride: 2 pad: 1 } }
layer {
  name: "dwdeconv" type: "Deconvolution" bottom: "data" top: "dwdeconv"
  convolution_param { num_output: 6 kernel_size: 4 stride: 2 pad: 1 group: 6 }
}
layer { name: "crop" type: "Crop" bottom: "data" bottom: "conv" top: "crop" crop_param { axis: 2 offset: 1 } }
layer { name: "sum" type: "Eltwise" bottom: "data" bottom: "abs" top: "sum" eltwise_param { operation: SUM coeff: 0.5 coeff: -2 } }
layer { name: "prod" type: "Eltwise" bottom: "data" bottom: "tanh" top: "prod" eltwise_param { operation: PROD } }
layer { name: "max" type: "Eltwise" bottom: "data" bottom: "sigmoid" top: "max" eltwise_param { operation: MAX } }
layer { name: "argmax" type: "ArgMax" bottom: "data" top: "argmax" argmax_param { axis: 1 } }
layer { name: "embed" type: "Embed" bottom: "argmax" top: "embed" embed_param { num_output: 3 input_dim: 6 } }
layer { name: "reduction" type: "Reduction" bottom: "data" top: "reduction" reduction_param { operation: SUMSQ axis: 2 } }
layer { name: "tile" type: "Tile" bottom: "data" top: "tile" tile_param { axis: 1 tiles: 2 } }
layer { name: "permute" type: "Permute" bottom: "data" top: "permute" permute_param { order: 0 order: 3 order: 1 order: 2 } }
layer { name: "reshape" type: "Reshape" bottom: "data" top: "reshape" reshape_param { shape { dim: 0 dim: 3 dim: -1 } } }
layer {
  name: "batch_reshape" type: "Reshape" bottom: "data" top: "batch_reshape"
  reshape_param { shape { dim: 2 dim: 3 dim: 11 dim: 13 } }
}
layer { name: "slice" type: "Slice" bottom: "data" top: "slice_a" top: "slice_b" slice_param { axis: 1 slice_point: 2 } }
layer { name: "concat" type: "Concat" bottom: "slice_b" bottom: "slice_a" top: "concat" }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "softmax" type: "Softmax" bottom: "fc" top: "softmax" }
layer { name: "softmax_c" type: "Softmax" bottom: "data" top: "softmax_c" }
"""

# Layers of Caffe's forks: SegNet (BN, Upsample), PSPNet (Interp), ShuffleNet, SENet (Axpy), SSD.
ZOO_FORKS = """name: "zoo_forks"
input: "data"
input_shape { dim: 1 dim: 6 dim: 11 dim: 13 }
layer { name: "shuffle" type: "ShuffleChannel" bottom: "data" top: "shuffle" shuffle_channel_param { group: 3 } }
layer { name: "zoom" type: "Interp" bottom: "data" top: "zoom" interp_param { zoom_factor: 2 } }
layer { name: "resize" type: "Interp" bottom: "data" top: "resize" interp_param { height: 7 width: 9 } }
layer {
  name: "l2norm" type: "Normalize" bottom: "data" top: "l2norm"
  norm_param { across_spatial: false channel_shared: false scale_filler { type: "constant" value: 20 } }
}
layer { name: "bn_learn" type: "BN" bottom: "data" top: "bn_learn" }
layer { name: "bn_inference" type: "BN" bottom: "data" top: "bn_inference" bn_param { bn_mode: INFERENCE } }
layer { name: "bn_running" type: "BN" bottom: "data" top: "bn_running" bn_param { frozen: true } }
layer { name: "bn_moments" type: "BN" bottom: "data" top: "bn_moments" top: "bn_mean" top: "bn_var" }
layer { name: "relu6" type: "ReLU6" bottom: "data" top: "relu6" }
layer { name: "mish" type: "Mish" bottom: "data" top: "mish" }
layer { name: "pool2" type: "Pooling" bottom: "data" top: "pool2" top: "pool2_mask" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "unpool" type: "Upsample" bottom: "pool2" bottom: "pool2_mask" top: "unpool" upsample_param { scale: 2 upsample_h: 11 upsample_w: 13 } }
layer { name: "gate_pool" type: "Pooling" bottom: "data" top: "gate_pool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "gate" type: "Sigmoid" bottom: "gate_pool" top: "gate" }
layer { name: "axpy" type: "Axpy" bottom: "gate" bottom: "data" bottom: "data" top: "axpy" }
layer { name: "feat" type: "Convolution" bottom: "data" top: "feat" convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 2 } }
layer { name: "interp_like" type: "Interp" bottom: "feat" bottom: "data" top: "interp_like" }
layer {
  name: "priors" type: "PriorBox" bottom: "feat" bottom: "data" top: "priors"
  prior_box_param { min_size: 4 max_size: 8 aspect_ratio: 2 flip: true clip: true variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 }
}
layer { name: "loc" type: "Convolution" bottom: "feat" top: "loc" convolution_param { num_output: 16 kernel_size: 1 } }
layer { name: "loc_perm" type: "Permute" bottom: "loc" top: "loc_perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "loc_flat" type: "Flatten" bottom: "loc_perm" top: "loc_flat" }
layer { name: "conf" type: "Convolution" bottom: "feat" top: "conf" convolution_param { num_output: 12 kernel_size: 1 } }
layer { name: "conf_perm" type: "Permute" bottom: "conf" top: "conf_perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "conf_rows" type: "Reshape" bottom: "conf_perm" top: "conf_rows" reshape_param { shape { dim: 0 dim: -1 dim: 3 } } }
layer { name: "conf_softmax" type: "Softmax" bottom: "conf_rows" top: "conf_softmax" softmax_param { axis: 2 } }
layer { name: "conf_flat" type: "Flatten" bottom: "conf_softmax" top: "conf_flat" }
layer {
  name: "detections" type: "DetectionOutput" bottom: "loc_flat" bottom: "conf_flat" bottom: "priors" top: "detections"
  detection_output_param {
    num_classes: 3 share_location: true background_label_id: 0 code_type: CENTER_SIZE keep_top_k: 20 confidence_threshold: 0.2
    nms_param { nms_threshold: 0.45 top_k: 50 }
  }
}
"""

# Translated with --fully-conv: free spatial sizes take the helpers' symbolic-shape paths.
ZOO_FREE = """name: "zoo_free"
input: "data"
input_shape { dim: 1 dim: 4 dim: 20 dim: 20 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "crop" type: "Crop" bottom: "data" bottom: "conv" top: "crop" crop_param { axis: 2 offset: 1 } }
layer { name: "pool_max" type: "Pooling" bottom: "data" top: "pool_max" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "pool_ave" type: "Pooling" bottom: "data" top: "pool_ave" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "zoom" type: "Interp" bottom: "data" top: "zoom" interp_param { zoom_factor: 2 } }
layer { name: "lrn" type: "LRN" bottom: "data" top: "lrn" lrn_param { local_size: 3 norm_region: WITHIN_CHANNEL } }
layer { name: "deconv" type: "Deconvolution" bottom: "data" top: "deconv" convolution_param { num_output: 4 kernel_size: 4 stride: 2 pad: 1 group: 4 } }
"""

# BVLC's recurrent layers: time-major inputs, several streams, a static input and exposed states.
ZOO_RECURRENT = """name: "zoo_recurrent"
input: "x" input_shape { dim: 5 dim: 2 dim: 3 }
input: "cont" input_shape { dim: 5 dim: 2 }
input: "x_static" input_shape { dim: 2 dim: 4 }
input: "h0" input_shape { dim: 1 dim: 2 dim: 6 }
input: "c0" input_shape { dim: 1 dim: 2 dim: 6 }
layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" bottom: "x_static" top: "lstm" recurrent_param { num_output: 6 } }
layer {
  name: "lstm_exposed" type: "LSTM" bottom: "x" bottom: "cont" bottom: "h0" bottom: "c0"
  top: "lstm_exposed" top: "lstm_h" top: "lstm_c" recurrent_param { num_output: 6 expose_hidden: true }
}
layer { name: "rnn" type: "RNN" bottom: "x" bottom: "cont" top: "rnn" recurrent_param { num_output: 4 } }
layer { name: "fc" type: "InnerProduct" bottom: "lstm" top: "fc" inner_product_param { num_output: 3 axis: 2 } }
"""

# C3D's 3-D layers on an N x C x L x H x W clip with odd sizes (ceil-mode windows overhang it).
ZOO_VIDEO = """name: "zoo_video"
input: "clip"
input_shape { dim: 1 dim: 2 dim: 5 dim: 7 dim: 6 }
layer { name: "conv" type: "Convolution3D" bottom: "clip" top: "conv" convolution3d_param { num_output: 3 kernel_size: 3 kernel_depth: 2 pad: 1 stride: 2 } }
layer { name: "pool_max" type: "Pooling3D" bottom: "clip" top: "pool_max" pooling3d_param { pool: MAX kernel_size: 2 kernel_depth: 2 stride: 2 temporal_stride: 2 } }
layer { name: "pool_ave" type: "Pooling3D" bottom: "clip" top: "pool_ave" pooling3d_param { pool: AVE kernel_size: 3 kernel_depth: 2 stride: 2 pad: 1 } }
"""

# Layers of Caffe's forks on 4-D and time-major 3-D blobs: Im2col, Reverse, Transpose.
ZOO_MORE = """name: "zoo_more"
input: "data" input_shape { dim: 1 dim: 6 dim: 11 dim: 13 }
input: "seq" input_shape { dim: 5 dim: 2 dim: 3 }
layer { name: "cols" type: "Im2col" bottom: "data" top: "cols" convolution_param { kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "reverse" type: "Reverse" bottom: "data" top: "reverse" reverse_param { axis: 1 } }
layer { name: "t021" type: "Transpose" bottom: "seq" top: "t021" transpose_param { dim: 0 dim: 2 dim: 1 } }
layer { name: "t102" type: "Transpose" bottom: "seq" top: "t102" transpose_param { dim: 1 dim: 0 dim: 2 } }
layer { name: "rev_time" type: "Reverse" bottom: "t102" top: "rev_time" reverse_param { axis: 1 } }
"""

# name -> (prototxt, translation options)
ZOOS = {
    "zoo": (ZOO, {}),
    "zoo_forks": (ZOO_FORKS, {}),
    "zoo_free": (ZOO_FREE, {"fully_conv": True}),
    "zoo_recurrent": (ZOO_RECURRENT, {}),
    "zoo_video": (ZOO_VIDEO, {}),
    "zoo_more": (ZOO_MORE, {}),
}

# Runs in a fresh interpreter per backend (Keras picks its backend once, at import), through
# predict (traced, and jit-compiled where the backend compiles), as users run models.
# Weights come from one seeded generator in layer order, so every backend gets the same values:
# He-scaled normals for kernels (activations stay in range through deep nets) and values in
# [0.5, 1.5] for vectors (BatchNorm variances must be positive). Free input sizes become 32.
# Modules given with "+fit" also take one SGD step of model.fit, whose loss and weights are kept.
# On TensorFlow each model is also saved to a .keras file beside its module, with its inputs.
RUNNER = """
import importlib.util, sys, zlib
import numpy as np
import keras

results = {}
for arg in sys.argv[2:]:
    path, batch, fit = arg.split("+")[0], int(arg.split("+")[1]), arg.endswith("+fit")
    name = path.rsplit("/", 1)[-1][:-3]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.build_model()
    if hasattr(module, "compile_model"):
        module.compile_model(model)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    names = []
    for layer in model.layers:
        for variable in layer.weights:
            shape = tuple(variable.shape)
            if len(shape) >= 2:
                value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), size=shape)
            else:
                value = rng.uniform(0.5, 1.5, size=shape)
            variable.assign(value.astype("float32"))
            names.append(f"{layer.name}/{variable.name}")
    shapes = [module.INPUT_SHAPE] if hasattr(module, "INPUT_SHAPE") else list(module.INPUT_SHAPES.values())
    feed = [rng.normal(size=(batch, *(32 if d is None else d for d in s))).astype("float32") for s in shapes]
    outputs = model.predict(feed if len(feed) > 1 else feed[0], batch_size=batch, verbose=0)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    for out_name, value in zip(model.output_names, outputs):
        results[f"{name}:{out_name}"] = np.asarray(value)
    results[f"{name}:weights"] = np.array(names)
    if keras.backend.backend() == "tensorflow":
        model.save(path[:-3] + ".keras")
        for i, value in enumerate(feed):
            np.save(f"{path[:-3]}.feed{i}.npy", value)
    if fit:
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
        targets = [np.zeros(o.shape, "float32") for o in outputs]
        loss = model.fit(feed[0], targets[0], batch_size=batch, epochs=1, shuffle=False, verbose=0)
        results[f"{name}:fit:loss"] = np.array(loss.history["loss"])
        for layer in model.layers:
            for variable in layer.weights:
                results[f"{name}:fit:{layer.name}/{variable.name}"] = keras.ops.convert_to_numpy(variable)
np.savez(sys.argv[1], **results)
"""
@pytest.fixture(scope="module")
def modules(tmp_path_factory) -> list[Path]:
    """The published examples, the zoos, the training nets and the corpus nets, translated beside one another."""
    from tests.test_training import LOSSES, REGRESSION

    work = tmp_path_factory.mktemp("backend_modules")
    found = []
    for example in sorted((ROOT / "generated_examples").glob("*.py")):  # copied: saved models go beside them
        (work / example.name).write_text(example.read_text())
        found.append(work / example.name)
    sources = {}
    for name, (text, options) in ZOOS.items():
        (work / f"{name}.prototxt").write_text(text)
        sources[name] = (work / f"{name}.prototxt", {"options": Options(**options)})
    (work / "solver.prototxt").write_text('base_lr: 0.1 lr_policy: "fixed"\n')
    for name, text in (("train_losses", LOSSES), ("train_regression", REGRESSION)):
        (work / f"{name}.prototxt").write_text(text)
        sources[name] = (work / f"{name}.prototxt", {"phase": "TRAIN", "solver": work / "solver.prototxt"})
    if SHARED.is_dir():
        case = SHARED / "oracle" / "train_cases" / TRAIN_CASE
        sources[TRAIN_CASE] = (case / "net.prototxt", {"phase": "TRAIN", "solver": case / "solver.prototxt"})
        for name, (net, shape) in CORPUS.items():
            sources[name] = (SHARED / "corpus" / net, {"input_shapes": {"data": shape}} if shape else {})
    for name, (source, kwargs) in sources.items():
        (work / f"{name}.py").write_text(translate_to_source(source, **kwargs))
        found.append(work / f"{name}.py")
    return found


def run_args(modules: list[Path], backend: str) -> list[str]:
    """RUNNER's arguments: each module with its batch size (1 for the corpus nets), and +fit for FIT."""
    chosen = [m for m in modules if backend == "tensorflow" or m.stem not in TENSORFLOW_ONLY]
    return [f"{m}+{1 if m.stem in CORPUS else 2}{'+fit' if m.stem == FIT else ''}" for m in chosen]


# A fresh TensorFlow process imports every module (registering its helpers: all of them live in one
# program), then loads each model saved by RUNNER with Keras' default safe mode and predicts the same
# inputs. It checks that each module's helpers are registered under its PACKAGE, that a loaded model is
# made of its own module's classes, and that every helper object in it (layers, and a compiled model's
# optimizer, learning-rate schedule and losses) comes back from from_config(get_config()) with the same
# config, every constructor argument in it. One model is also exported as a SavedModel and run.
RELOADER = """
import importlib.util, inspect, json, sys
import numpy as np
import keras
import tensorflow as tf
from caffe2py.render import BUILDERS, helper_names

helpers = helper_names() - BUILDERS
modules = {}
for path in sys.argv[3:]:
    name = path.rsplit("/", 1)[-1][:-3]
    spec = importlib.util.spec_from_file_location(name, path)
    modules[name] = (path, importlib.util.module_from_spec(spec))
    spec.loader.exec_module(modules[name][1])
results, problems, checked = {}, [], set()


def objects(model):
    for layer in model._flatten_layers(include_self=False):
        yield layer
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        yield optimizer
        yield optimizer._learning_rate
    losses = getattr(model, "loss", None)
    yield from losses.values() if isinstance(losses, dict) else losses if isinstance(losses, (list, tuple)) else [losses]


def text(config):  # nested objects (an optimizer's schedule) serialized, as in a saved file
    return json.dumps(keras.saving.serialize_keras_object(config), sort_keys=True, default=repr)


for name, (path, module) in modules.items():
    for helper in sorted(helpers):
        defined = getattr(module, helper, None)
        if defined is not None and keras.saving.get_registered_object(f"{module.PACKAGE}>{helper}") is not defined:
            problems.append(f"{name}: {helper} is not registered as {module.PACKAGE}>{helper}")
    model = keras.models.load_model(path[:-3] + ".keras")
    feed = [np.load(f"{path[:-3]}.feed{i}.npy") for i in range(len(model.inputs))]
    outputs = model.predict(feed if len(feed) > 1 else feed[0], batch_size=len(feed[0]), verbose=0)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    for out_name, value in zip(model.output_names, outputs):
        results[f"{name}:{out_name}"] = np.asarray(value)
    for obj in objects(model):
        cls = type(obj)
        if cls.__name__ not in helpers:
            continue
        if cls is not getattr(module, cls.__name__):
            problems.append(f"{name}: its {cls.__name__} was loaded as another module's class")
        config = obj.get_config()
        wanted = [p for p, v in inspect.signature(cls.__init__).parameters.items() if p != "self" and v.kind == v.POSITIONAL_OR_KEYWORD]
        missing = [p for p in wanted if p not in config]
        if missing:
            problems.append(f"{name}: {cls.__name__}.get_config() lacks constructor arguments {missing}")
        if text(cls.from_config(config).get_config()) != text(config):
            problems.append(f"{name}: {cls.__name__}.from_config(get_config()) has another config")
        checked.add(cls.__name__)
    if name == sys.argv[2]:
        model.export(path[:-3] + "_savedmodel", verbose=False)
        artifact = tf.saved_model.load(path[:-3] + "_savedmodel")
        results[f"{name}:served"] = np.asarray(artifact.serve(*feed))
np.savez(sys.argv[1], **results)
print(json.dumps({"problems": problems, "checked": sorted(checked)}))
"""


@pytest.fixture(scope="module")
def runs(modules, tmp_path_factory):
    """Every installed backend's run, started at once: JAX spends its time compiling, not computing."""
    started = {}
    for backend in ("tensorflow", *sorted(OTHER_BACKENDS)):
        if backend != "tensorflow" and importlib.util.find_spec(OTHER_BACKENDS[backend]) is None:
            continue
        work = tmp_path_factory.mktemp(backend)
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
        if backend == "jax":
            # XLA compiles each new shape of each op; unoptimized CPU code compiles several times faster.
            env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
        # A file, not a pipe, for the log: a pipe nobody reads yet would stall a chatty run.
        with open(work / "stderr.txt", "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-c", RUNNER, str(work / "outputs.npz"), *run_args(modules, backend)],
                env=env,
                stdout=log,
                stderr=log,
            )
        started[backend] = (process, work)
    yield started
    for process, _ in started.values():
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def outputs(runs):
    """backend -> its outputs, waiting for its run on first use."""
    done: dict[str, dict[str, np.ndarray]] = {}

    def get(backend: str) -> dict[str, np.ndarray]:
        if backend not in done:
            process, work = runs[backend]
            process.wait(timeout=900)
            log = (work / "stderr.txt").read_text(errors="replace")
            assert process.returncode == 0, f"{backend}:\n{log[-4000:]}"
            with np.load(work / "outputs.npz") as archive:
                done[backend] = {key: archive[key] for key in archive.files}
        return done[backend]

    return get


@pytest.fixture(scope="module")
def reloaded(modules, outputs, runs, tmp_path_factory):
    """The models TensorFlow's run saved, loaded in a fresh process: (outputs, the RELOADER's report)."""
    outputs("tensorflow")  # the run that saves them
    work = tmp_path_factory.mktemp("reloaded")
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-c", RELOADER, str(work / "outputs.npz"), EXPORTED, *map(str, modules)],
        env=env, capture_output=True, text=True, check=False, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    with np.load(work / "outputs.npz") as archive:
        return {key: archive[key] for key in archive.files}, json.loads(done.stdout.splitlines()[-1])


def test_tensorflow_outputs_are_usable_references(modules, outputs):
    tensorflow = {k: v for k, v in outputs("tensorflow").items() if not k.endswith(":weights")}
    assert {k.split(":")[0] for k in tensorflow} == {m.stem for m in modules}
    for name, (text, _) in ZOOS.items():
        unconsumed = set(re.findall(r'top: "(\w+)"', text)) - set(re.findall(r'bottom: "(\w+)"', text))
        assert len([k for k in tensorflow if k.startswith(f"{name}:")]) == len(unconsumed), name
    # A comparison with all-zero or NaN outputs would pass or fail for the wrong reason.
    bad = [k for k, v in tensorflow.items() if not np.isfinite(v).all() or not v.any()]
    assert not bad, f"zero or non-finite outputs: {bad}"


@pytest.mark.parametrize("backend", sorted(OTHER_BACKENDS))
def test_backend_matches_tensorflow(backend, runs, outputs):
    if backend not in runs:
        pytest.skip(f"{OTHER_BACKENDS[backend]} is not installed: the {backend} backend is not tested")
    want_all = {k: v for k, v in outputs("tensorflow").items() if k.split(":")[0] not in TENSORFLOW_ONLY}
    got = outputs(backend)
    assert sorted(got) == sorted(want_all)
    problems = []
    for key, want in want_all.items():
        if key.endswith(":weights"):
            assert list(got[key]) == list(want), f"{key}: the variables differ, so the seeded weights do too"
        elif got[key].shape != want.shape:
            problems.append(f"{key}: shape {got[key].shape}, TensorFlow {want.shape}")
        else:
            # Relative to the output's largest magnitude, as tests/refnet.py's assert_close.
            error = float(np.abs(got[key] - want).max()) / max(float(np.abs(want).max()), 1e-6)
            if error > 1e-5:
                problems.append(f"{key}: relative error {error:.2e}")
    assert not problems, f"{backend} differs from TensorFlow:\n  " + "\n  ".join(problems)


def predicted(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in outputs.items() if not k.endswith(":weights") and ":fit:" not in k}


def test_saved_models_reload_identically(modules, outputs, reloaded):
    """model.save, then keras.models.load_model in a fresh process (safe mode): the same outputs, bit for bit."""
    got, report = reloaded
    want = predicted(outputs("tensorflow"))
    assert sorted(k for k in got if not k.endswith(":served")) == sorted(want)
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    # The exported SavedModel serves what the model predicts.
    served = got[f"{EXPORTED}:served"] if SHARED.is_dir() else None
    if served is not None:
        np.testing.assert_allclose(served, want[f"{EXPORTED}:prob"], rtol=1e-5, atol=1e-7)
    assert not report["problems"], "\n".join(report["problems"])


def test_modules_register_under_their_own_package(modules):
    """Every module names its own package, so two of them (both with an LRN, say) live in one program."""
    packages = [re.search(r'^PACKAGE = "(\w+)"$', m.read_text(), re.MULTILINE) for m in modules]
    names = {m.stem: p.group(1) for m, p in zip(modules, packages) if p}
    assert len(set(names.values())) == len(names) >= len(modules) - 1, names  # simple.py may need none


# Helpers no module above makes. Regions of interest and sequence indicators are not the random values
# RUNNER feeds (tests/test_layers_detection.py and test_layers_ctc.py run them through predict), and on
# JAX YOLO's output is padded to a static size (tests/test_layers_yolo.py compares it there).
NOT_YET = {"CTCGreedyDecoder", "PSROIPooling", "ROIPooling", "YoloDetectionOutput"}


def test_modules_use_every_helper(modules, reloaded):
    """Between them the modules define every helper (but NOT_YET), and every helper class round-trips its config."""
    from caffe2py.render import BUILDERS, helper_names

    defined = set()
    for path in modules:
        defined |= set(re.findall(r"^(?:class|def) (\w+)", path.read_text(), re.MULTILINE)) & helper_names()
    assert defined == helper_names() - NOT_YET, "add a net using the new helper here, or list it in NOT_YET"
    functions = {name for name in defined if not name[0].isupper()}
    assert set(reloaded[1]["checked"]) == defined - BUILDERS - functions
