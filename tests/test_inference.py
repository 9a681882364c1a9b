"""--inference: BatchNorm and Scale folded into the layer before them, Dropout removed, outputs unchanged."""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np
import pytest

from caffe2py.convert import translate
from caffe2py.options import Options
from caffe2py.render import render
from tests.refnet import assert_close, keras_forward

# Every folding path: a convolution without bias (BatchNorm + Scale with bias, in place), a grouped
# strided one (BatchNorm alone, its own top), a depthwise one with multiplier 2 (Scale alone, no
# bias), a BatchNorm whose input another layer also reads (not folded), an InnerProduct with
# transposed weights (BatchNorm + Scale), a Dropout, and an InnerProduct over a 4-D blob (rows
# permuted from Caffe's C,H,W order) whose BatchNorm top is a net output.
NET = """
input: "data"
input_shape { dim: 2 dim: 4 dim: 9 dim: 9 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 6 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" batch_norm_param { eps: 0.001 } }
layer { name: "sc1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 6 kernel_size: 3 stride: 2 group: 2 } }
layer { name: "bn2" type: "BatchNorm" bottom: "conv2" top: "bn2" }
layer { name: "dw" type: "Convolution" bottom: "bn2" top: "dw"
  convolution_param { num_output: 12 kernel_size: 3 pad: 1 group: 6 } }
layer { name: "sc_dw" type: "Scale" bottom: "dw" top: "sc_dw" scale_param { bias_term: false } }
layer { name: "conv3" type: "Convolution" bottom: "sc_dw" top: "conv3" convolution_param { num_output: 12 kernel_size: 1 } }
layer { name: "bn3" type: "BatchNorm" bottom: "conv3" top: "bn3" }
layer { name: "sum" type: "Eltwise" bottom: "conv3" bottom: "bn3" top: "sum" }
layer { name: "fc" type: "InnerProduct" bottom: "sum" top: "fc" inner_product_param { num_output: 7 transpose: true } }
layer { name: "bn_fc" type: "BatchNorm" bottom: "fc" top: "fc" }
layer { name: "sc_fc" type: "Scale" bottom: "fc" top: "fc" scale_param { bias_term: true } }
layer { name: "drop" type: "Dropout" bottom: "fc" top: "fc" dropout_param { dropout_ratio: 0.5 } }
layer { name: "fc2" type: "InnerProduct" bottom: "sum" top: "fc2" inner_product_param { num_output: 3 } }
layer { name: "bn_fc2" type: "BatchNorm" bottom: "fc2" top: "out2" }
"""


def _rng(*key: object) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _stats(rng, c: int) -> list[np.ndarray]:
    factor = np.float32(0.999)
    mean, var = rng.normal(size=c), rng.uniform(0.2, 3.0, size=c)
    return [(mean * factor).astype(np.float32), (var * factor).astype(np.float32), np.array([factor], np.float32)]


def _weights() -> list:
    rng = _rng("inference")

    def normal(*shape):
        return rng.normal(0.0, 0.5, size=shape).astype(np.float32)

    return [
        ("conv1", "Convolution", [normal(6, 4, 3, 3)]),
        ("bn1", "BatchNorm", _stats(rng, 6)),
        ("sc1", "Scale", [normal(6), normal(6)]),
        ("conv2", "Convolution", [normal(6, 3, 3, 3), normal(6)]),
        ("bn2", "BatchNorm", _stats(rng, 6)),
        ("dw", "Convolution", [normal(12, 1, 3, 3), normal(12)]),
        ("sc_dw", "Scale", [normal(12)]),
        ("conv3", "Convolution", [normal(12, 12, 1, 1), normal(12)]),
        ("bn3", "BatchNorm", _stats(rng, 12)),
        ("fc", "InnerProduct", [normal(12 * 4 * 4, 7), normal(7)]),
        ("bn_fc", "BatchNorm", _stats(rng, 7)),
        ("sc_fc", "Scale", [normal(7), normal(7)]),
        ("fc2", "InnerProduct", [normal(3, 12 * 4 * 4), normal(3)]),
        ("bn_fc2", "BatchNorm", _stats(rng, 3)),
    ]


@pytest.fixture(scope="module")
def net_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inference") / "net.prototxt"
    path.write_text(NET)
    return path


def test_outputs_match_the_trainable_rendering():
    x = _rng("input").uniform(-1, 1, size=(2, 4, 9, 9)).astype(np.float32)
    blobs = ["conv1", "bn2", "sc_dw", "sum", "fc", "out2"]
    default = keras_forward(NET, {"data": x}, _weights(), outputs=blobs)
    folded = keras_forward(NET, {"data": x}, _weights(), outputs=blobs, inference=True)
    for name in blobs:
        assert_close(folded[name], default[name], 1e-5)


def test_what_is_folded(net_file):
    source = render(translate(net_file, options=Options(inference=True)))
    default = render(translate(net_file))
    # Only bn3 stays: conv3's output is also read by the Eltwise, which needs it unnormalized.
    batch_norms = re.compile(r"= (layers\.)?\w*Batch\w*\((.*)name=\"(\w+)\"")
    assert [m[-1] for m in batch_norms.findall(default)] == ["bn1", "bn2", "bn3", "bn_fc", "bn_fc2"]
    assert [m[-1] for m in batch_norms.findall(source)] == ["bn3"]
    assert "layers.Dropout(" in default and "layers.Dropout(" not in source
    assert "# + BatchNorm 'bn1', Scale 'sc1' folded into kernel and bias" in source
    assert "use_bias=False" in default and "use_bias=False" not in source
    # conv2's own top held the values before bn2; the folded model has no such value any more.
    assert '"conv2": (' in default and '"conv2": (' not in source
    assert "4 BatchNorm and 3 Scale layer(s) are folded" in source
    assert "1 Dropout layer(s)" in source


def test_nothing_to_fold_renders_identically(tmp_path):
    path = tmp_path / "plain.prototxt"
    path.write_text(NET.split('layer { name: "bn1"')[0])
    assert render(translate(path, options=Options(inference=True))) == render(translate(path))


def test_batch_statistics_are_not_folded(tmp_path):
    path = tmp_path / "batch_stats.prototxt"
    path.write_text(
        NET.split('layer { name: "bn1"')[0]
        + 'layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" batch_norm_param { use_global_stats: false } }'
    )
    # Each batch's own statistics, even at test time: nothing the converter could fold.
    assert translate(path, options=Options(inference=True)).folded == []


def test_cli_flag(net_file, tmp_path, capsys):
    from caffe2py.cli import main

    assert main([str(net_file), "--inference", "-o", str(tmp_path / "m.py")]) == 0
    assert "folded into kernel and bias" in (tmp_path / "m.py").read_text()
