"""The .npz that --weights writes: a standard stored zip whose members are np.save's bytes; errors reach the caller."""

from __future__ import annotations

import io
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

import caffe2py
from caffe2py.npzwriter import write_npz_members
from tests.refnet import caffemodel_bytes

# fc1 follows a convolution (its rows are permuted to Keras' H,W,C flattening), fc2 an InnerProduct
# (its kernel is the caffemodel's matrix transposed, written Fortran-ordered from the map); fc2 is
# over a million floats, so it goes out in several pieces.
NET = """name: "pieces"
input: "data" input_shape { dim: 1 dim: 2 dim: 5 dim: 4 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 3 kernel_size: 3 pad: 1 } }
layer { name: "fc1" type: "InnerProduct" bottom: "conv" top: "fc1" inner_product_param { num_output: 1100 } }
layer { name: "fc\u00e9" type: "InnerProduct" bottom: "fc1" top: "fc2" inner_product_param { num_output: 1001 } }
"""


def _npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def test_members_are_np_save_bytes_in_a_stored_zip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    conv = [rng.normal(size=(3, 2, 3, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)]
    fc1 = [rng.normal(size=(1100, 3 * 5 * 4)).astype(np.float32), rng.normal(size=1100).astype(np.float32)]
    fc2 = [rng.normal(size=(1001, 1100)).astype(np.float32), rng.normal(size=1001).astype(np.float32)]
    net = tmp_path / "pieces.prototxt"
    net.write_text(NET, encoding="utf-8")
    model = tmp_path / "pieces.caffemodel"
    model.write_bytes(
        caffemodel_bytes([("conv", "Convolution", conv), ("fc1", "InnerProduct", fc1), ("fc\u00e9", "InnerProduct", fc2)])
    )
    npz = tmp_path / "pieces.npz"
    keys = caffe2py.convert_weights(net, model, npz)
    # Restated from Caffe's layouts: Keras kernels (kh, kw, in, out), an InnerProduct after a
    # convolution reading the input flattened H,W,C instead of C,H,W. InnerProduct kernels are
    # stored Fortran-ordered (the caffemodel's rows are their columns), as np.save stores such arrays.
    expected = {
        "conv/kernel": conv[0].transpose(2, 3, 1, 0),
        "conv/bias": conv[1],
        "fc1/kernel": np.asfortranarray(fc1[0].reshape(1100, 3, 5, 4).transpose(2, 3, 1, 0).reshape(60, 1100)),
        "fc1/bias": fc1[1],
        "fce/kernel": fc2[0].T,  # keys are ASCII identifiers made from the layer names
        "fce/bias": fc2[1],
    }
    assert sorted(keys) == sorted(expected)
    with zipfile.ZipFile(npz) as archive:
        assert archive.testzip() is None  # every CRC-32 matches
        infos = archive.infolist()
        assert [i.filename for i in infos] == [f"{k}.npy" for k in keys]
        assert {i.compress_type for i in infos} == {zipfile.ZIP_STORED}
        for key in keys:
            assert archive.read(f"{key}.npy") == _npy(expected[key]), key
    with np.load(npz, allow_pickle=False) as arrays:
        for key, value in expected.items():
            np.testing.assert_array_equal(arrays[key], value)
    if shutil.which("unzip"):
        subprocess.run(["unzip", "-tqq", str(npz)], check=True)


def _members(*members: tuple[str, np.ndarray] | Exception):
    """Members as weights.py gives them: a generator, so a failing conversion raises in the middle of writing."""
    for member in members:
        if isinstance(member, Exception):
            raise member
        name, array = member
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
        yield name, header.getvalue(), array


def test_errors_reach_the_caller(tmp_path: Path) -> None:
    out = tmp_path / "x.npz"
    small = np.arange(10, dtype=np.float32)
    # Raised while making the members.
    with pytest.raises(RuntimeError, match="conversion failed"):
        write_npz_members(out, _members(("a.npy", small), RuntimeError("conversion failed")))
    # Raised by the file system in the middle of a member.
    if Path("/dev/full").exists():
        with pytest.raises(OSError, match="No space left"):
            write_npz_members("/dev/full", _members(("b.npy", np.zeros((1 << 12, 1 << 10), np.float32).T)))


def test_any_layout_any_size_round_trips(tmp_path: Path) -> None:
    """Strided views are copied in blocks of whole trailing axes (or runs of one axis), through reused buffers."""
    rng = np.random.default_rng(1)
    arrays = {
        "kernel": rng.normal(size=(64, 96, 5, 7)).astype(np.float32).transpose(2, 3, 1, 0),  # blocks of (96, 64) rows
        "long_rows": rng.normal(size=(3, 70_001)).astype(np.float32)[:, ::-1],  # a row larger than a piece
        "wide": rng.normal(size=(300, 50_000)).astype(np.float32).T,  # Fortran-ordered, many pieces
        "contiguous": rng.normal(size=200_003).astype(np.float32),
        "\u00e9": np.float32(3.5).reshape(()),
        "empty": np.zeros((0, 4), np.float32),
    }
    out = tmp_path / "x.npz"
    members = ((f"{k}.npy", v.T if v.flags.f_contiguous and not v.flags.c_contiguous else v) for k, v in arrays.items())
    write_npz_members(out, _members(*members))
    with zipfile.ZipFile(out) as archive:
        assert archive.testzip() is None
    with np.load(out, allow_pickle=False) as loaded:
        assert sorted(loaded.files) == sorted(arrays)
        for key, value in arrays.items():
            stored = value.T if value.flags.f_contiguous and not value.flags.c_contiguous else value
            np.testing.assert_array_equal(loaded[key], stored, err_msg=key)


def test_a_longer_file_is_cut_to_the_archive(tmp_path: Path) -> None:
    """The file is not truncated when opened (ext4 would write it back on close); its old tail is cut at the end."""
    out = tmp_path / "x.npz"
    out.write_bytes(b"\xff" * 200_000)
    small = np.arange(10, dtype=np.float32)
    write_npz_members(out, _members(("a.npy", small)))
    fresh = tmp_path / "fresh.npz"
    write_npz_members(fresh, _members(("a.npy", small)))
    assert out.read_bytes() == fresh.read_bytes()
    with np.load(out) as loaded:
        np.testing.assert_array_equal(loaded["a"], small)
