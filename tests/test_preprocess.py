"""The generated preprocess() against a NumPy restatement of Caffe's DataTransformer::Transform at TEST."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from caffe2py import schema
from caffe2py.convert import translate
from caffe2py.errors import TranslationError
from caffe2py.preprocess import read_mean, write_mean
from caffe2py.render import render
from tests.refnet import load_module

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
ALEXNET = CORPUS / "bvlc_alexnet"
needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"{CORPUS} is not present")


def caffe_transform(datum, crop=0, scale=1.0, mean_image=None, mean_values=()):
    """DataTransformer<float>::Transform(const Datum&, float*) in the TEST phase, element by element.

    ``datum`` is (C, H, W) as Caffe stores it (BGR); returns the (C, crop, crop) float32 blob.
    """
    channels, datum_height, datum_width = datum.shape
    height, width, h_off, w_off = datum_height, datum_width, 0, 0
    if crop:
        height = width = crop
        h_off, w_off = (datum_height - crop) // 2, (datum_width - crop) // 2
    values = list(mean_values) * channels if len(mean_values) == 1 else list(mean_values)
    data = datum.reshape(-1).astype(np.float32)
    mean = None if mean_image is None else mean_image.reshape(-1).astype(np.float32)
    out = np.empty(channels * height * width, np.float32)
    w = np.arange(width)
    for c in range(channels):
        for h in range(height):
            data_index = (c * datum_height + h_off + h) * datum_width + w_off + w
            top_index = (c * height + h) * width + w
            if mean is not None:
                out[top_index] = (data[data_index] - mean[data_index]) * np.float32(scale)
            elif values:
                out[top_index] = (data[data_index] - np.float32(values[c])) * np.float32(scale)
            else:
                out[top_index] = data[data_index] * np.float32(scale)
    return out.reshape(channels, height, width)


def caffe_batch(images_rgb, **transform):
    """What Caffe's data layer gives for RGB NHWC images (stored BGR, CHW), back in NHWC."""
    datums = [np.transpose(image[..., ::-1], (2, 0, 1)) for image in images_rgb]
    return np.stack([np.transpose(caffe_transform(d, **transform), (1, 2, 0)) for d in datums])


def write_binaryproto(path: Path, mean: np.ndarray, legacy: bool) -> Path:
    blob = schema.BlobProto()
    if legacy:  # compute_image_mean's form: num/channels/height/width
        blob.num, (blob.channels, blob.height, blob.width) = 1, mean.shape
    else:
        blob.shape.dim.extend([1, *mean.shape])
    blob.data.extend(mean.reshape(-1).tolist())
    path.write_bytes(blob.SerializeToString())
    return path


def module_of(prototxt: Path, **kwargs):
    translation = translate(prototxt, **kwargs)
    return translation, load_module(render(translation, "net.npz"))


@needs_corpus
@pytest.mark.parametrize("legacy", [True, False])
def test_alexnet_mean_image_and_crop(tmp_path, legacy):
    rng = np.random.default_rng(int(legacy))
    mean = rng.uniform(0, 255, (3, 256, 256)).astype(np.float32)
    proto = write_binaryproto(tmp_path / "imagenet_mean.binaryproto", mean, legacy)
    translation, module = module_of(ALEXNET / "train_val.prototxt", mean=proto)
    mean_npy = write_mean(translation, tmp_path)
    assert mean_npy == tmp_path / module.MEAN_FILE
    images = rng.integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    want = caffe_batch(images, crop=227, mean_image=mean)
    np.testing.assert_array_equal(module.preprocess(images, mean_file=mean_npy), want)
    bgr = images[..., ::-1]
    np.testing.assert_array_equal(module.preprocess(bgr, bgr=True, mean_file=mean_npy), want)
    np.testing.assert_array_equal(module.preprocess(images[0], mean_file=mean_npy), want[:1])
    assert module.build_model().input_shape[1:] == want.shape[1:]
    with pytest.raises(ValueError, match="mean image"):
        module.preprocess(images[:, :250], mean_file=mean_npy)


@needs_corpus
def test_mean_file_named_by_the_prototxt_is_found_beside_it(tmp_path):
    shutil.copy(ALEXNET / "train_val.prototxt", tmp_path)
    (tmp_path / "data" / "ilsvrc12").mkdir(parents=True)
    rng = np.random.default_rng(5)
    mean = rng.uniform(0, 255, (3, 256, 256)).astype(np.float32)
    write_binaryproto(tmp_path / "data" / "ilsvrc12" / "imagenet_mean.binaryproto", mean, legacy=True)
    translation, module = module_of(tmp_path / "train_val.prototxt")
    images = rng.uniform(0, 255, (1, 256, 256, 3)).astype(np.float32)
    got = module.preprocess(images, mean_file=write_mean(translation, tmp_path))
    np.testing.assert_array_equal(got, caffe_batch(images, crop=227, mean_image=mean))


@needs_corpus
def test_missing_mean_file_says_how_to_get_it(tmp_path):
    translation, module = module_of(ALEXNET / "train_val.prototxt")
    assert write_mean(translation, tmp_path) is None
    assert "--mean PATH" in module.preprocess.__doc__
    with pytest.raises(FileNotFoundError):
        module.preprocess(np.zeros((1, 256, 256, 3)), mean_file=tmp_path / module.MEAN_FILE)


@needs_corpus
def test_squeezenet_mean_values_on_any_image_size():
    _, module = module_of(CORPUS / "squeezenet_v1.1" / "train_val.prototxt")
    assert not hasattr(module, "MEAN_FILE")
    rng = np.random.default_rng(11)
    images = rng.integers(0, 256, (3, 250, 261, 3), dtype=np.uint8)
    want = caffe_batch(images, crop=227, mean_values=(104, 117, 123))
    np.testing.assert_array_equal(module.preprocess(images), want)
    with pytest.raises(ValueError, match="smaller than the 227x227 crop"):
        module.preprocess(images[:, :200])


DATA_NET = """layer {{ name: "data" type: "Data" top: "data" top: "label"
  include {{ phase: TEST }}
  transform_param {{ {transform} }}
  data_param {{ source: "val_lmdb" batch_size: 4 }} }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param {{ num_output: 2 kernel_size: 3 }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "conv" bottom: "label" top: "loss" }}
"""


@pytest.mark.parametrize(
    "transform,caffe",
    [
        # MobileNet's numbers: floats that need float32 rendering to equal Caffe's.
        ("scale: 0.017 crop_size: 5 mean_value: 103.94 mean_value: 116.78 mean_value: 123.68",
         {"crop": 5, "scale": 0.017, "mean_values": (103.94, 116.78, 123.68)}),
        ("mean_value: 127.5 scale: 0.0078125 crop_size: 6 mirror: true",
         {"crop": 6, "scale": 0.0078125, "mean_values": (127.5,)}),
        ("crop_size: 7", {"crop": 7}),
    ],
)
def test_mean_values_scale_and_crop(tmp_path, transform, caffe):
    (tmp_path / "net.prototxt").write_text(DATA_NET.format(transform=transform))
    _, module = module_of(tmp_path / "net.prototxt")
    rng = np.random.default_rng(len(transform))
    images = rng.integers(0, 256, (2, 9, 10, 3), dtype=np.uint8)
    np.testing.assert_array_equal(module.preprocess(images), caffe_batch(images, **caffe))
    assert ("mirror" in transform) == ("not applied" in module.preprocess.__doc__)


@needs_corpus
def test_lenet_scale_on_one_channel():
    _, module = module_of(CORPUS / "mnist_lenet" / "lenet_train_test.prototxt", input_shapes={"data": (1, 1, 28, 28)})
    images = np.random.default_rng(2).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    got = module.preprocess(images)  # one channel: nothing to reorder, so no bgr argument
    np.testing.assert_array_equal(got, caffe_batch(images, scale=0.00390625))


@needs_corpus
def test_deploy_net_gets_preprocess_only_from_a_mean_file(tmp_path):
    _, plain = module_of(ALEXNET / "deploy.prototxt")
    assert not hasattr(plain, "preprocess")
    mean = np.random.default_rng(9).uniform(0, 255, (3, 256, 256)).astype(np.float32)
    proto = write_binaryproto(tmp_path / "mean.binaryproto", mean, legacy=False)
    translation, module = module_of(ALEXNET / "deploy.prototxt", mean=proto)
    images = np.random.default_rng(10).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    got = module.preprocess(images, mean_file=write_mean(translation, tmp_path))
    # The deploy input is 227x227: the 256x256 mean image is cropped like the train_val net did.
    np.testing.assert_array_equal(got, caffe_batch(images, crop=227, mean_image=mean))


def test_read_mean_refuses_what_is_not_one_image(tmp_path):
    write_binaryproto(tmp_path / "ok.binaryproto", np.ones((3, 2, 4), np.float32), legacy=True)
    assert read_mean(tmp_path / "ok.binaryproto").shape == (3, 2, 4)
    blob = schema.BlobProto()
    blob.shape.dim.extend([2, 3, 2, 2])
    blob.data.extend([0.0] * 24)
    (tmp_path / "two.binaryproto").write_bytes(blob.SerializeToString())
    with pytest.raises(TranslationError, match="one C x H x W image"):
        read_mean(tmp_path / "two.binaryproto")
    (tmp_path / "junk.binaryproto").write_bytes(b"\xff\xff\xff")
    with pytest.raises(TranslationError, match="not a BlobProto"):
        read_mean(tmp_path / "junk.binaryproto")


@pytest.mark.parametrize(
    "transform,message",
    [
        ('mean_file: "m.binaryproto" mean_value: 1', "mean_file and mean_value together"),
        ("mean_value: 1 mean_value: 2", "2 mean_value"),
    ],
)
def test_contradictory_transforms_are_refused(tmp_path, transform, message):
    (tmp_path / "net.prototxt").write_text(DATA_NET.format(transform=transform + " crop_size: 5"))
    with pytest.raises(TranslationError, match=message):
        translate(tmp_path / "net.prototxt", input_shapes={"data": (1, 3, 5, 5)})


def test_mean_with_other_channels_is_refused(tmp_path):
    (tmp_path / "net.prototxt").write_text(DATA_NET.format(transform="crop_size: 5"))
    proto = write_binaryproto(tmp_path / "m.binaryproto", np.zeros((1, 8, 8), np.float32), legacy=True)
    with pytest.raises(TranslationError, match="1 channels"):
        translate(tmp_path / "net.prototxt", mean=proto)


def import_file(path: Path):
    spec = importlib.util.spec_from_file_location(f"generated_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("given", ["--mean", "mean_file"])
def test_cli_writes_the_mean_beside_the_module(tmp_path, monkeypatch, given):
    nets, out, elsewhere = tmp_path / "nets", tmp_path / "out", tmp_path / "elsewhere"
    for folder in (nets, out, elsewhere):
        folder.mkdir()
    rng = np.random.default_rng(21)
    mean = rng.uniform(0, 255, (3, 8, 9)).astype(np.float32)
    write_binaryproto(nets / "m.binaryproto", mean, legacy=given == "mean_file")
    transform = 'crop_size: 5 scale: 0.5' + (' mean_file: "m.binaryproto"' if given == "mean_file" else "")
    (nets / "net.prototxt").write_text(DATA_NET.format(transform=transform))
    args = [str(nets / "net.prototxt"), *(["--mean", str(nets / "m.binaryproto")] if given == "--mean" else [])]

    def caffe2py(*extra):
        command = [sys.executable, "-m", "caffe2py", *args, *extra]
        return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, check=False)

    # On stdout the module would have no folder to find its mean in: refused, nothing written.
    refused = caffe2py()
    assert refused.returncode == 2 and refused.stdout == ""
    assert "-o MODULE.py" in refused.stderr and ("--mean" in refused.stderr) == (given == "--mean")
    run = caffe2py("-o", str(out / "net.py"))
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["m.npy", "net.py"]
    assert np.load(out / "m.npy", allow_pickle=False).dtype == np.float32
    # Imported from another working directory, preprocess() still finds the mean beside the module.
    monkeypatch.chdir(elsewhere)
    module = import_file(out / "net.py")
    images = rng.integers(0, 256, (2, 8, 9, 3), dtype=np.uint8)
    want = caffe_batch(images, crop=5, scale=0.5, mean_image=mean)
    np.testing.assert_array_equal(module.preprocess(images), want)
    np.testing.assert_array_equal(module.preprocess(images[..., ::-1], bgr=True), want)


def test_api_write_puts_the_mean_beside_the_module(tmp_path, monkeypatch):
    from caffe2py.api import translate as api_translate

    mean = np.random.default_rng(22).uniform(0, 255, (3, 6, 6)).astype(np.float32)
    write_binaryproto(tmp_path / "mean.binaryproto", mean, legacy=False)
    (tmp_path / "net.prototxt").write_text(DATA_NET.format(transform='mean_file: "mean.binaryproto"'))
    (tmp_path / "models").mkdir()
    net = api_translate(tmp_path / "net.prototxt", input_shape={"data": (1, 3, 6, 6)})
    written = net.write(tmp_path / "models" / "net.py")
    assert sorted(p.name for p in written.parent.iterdir()) == ["mean.npy", "net.py"]
    monkeypatch.chdir(tmp_path)
    images = np.random.default_rng(23).integers(0, 256, (1, 6, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(import_file(written).preprocess(images), caffe_batch(images, mean_image=mean))
