"""Time and peak RSS of reading a VGG16-size caffemodel: file copy vs read_caffemodel vs protobuf.

usage: python benchmarks/bench_caffemodel_read.py [CAFFEMODEL] [--repeat N]

Without CAFFEMODEL, the random-weights VGG16 of ../shared/oracle/cases/vgg16 (~550 MB) is written
to a temporary directory with ../shared/oracle/make_case.py. Each measurement runs in its own
subprocess so that ru_maxrss is that method's peak alone. The file is in the page cache for all
methods (it was just written or read), so this compares CPU and memory cost, not disk speed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
METHODS = {
    "copy": "shutil.copyfile",
    "reader": "read_caffemodel + sum every array",
    "protobuf": "ParseFromString + np.asarray per blob + sum",
}


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def _net_parameter_class() -> type:
    """NetParameter with only the fields that hold weights, from a throwaway descriptor."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    package = "bench_caffemodel"
    proto = descriptor_pb2.FileDescriptorProto(
        name=f"{package}.proto", package=package, syntax="proto2"
    )
    layouts = {
        "BlobShape": [("dim", 1, field.TYPE_INT64, True, None)],
        "BlobProto": [
            ("num", 1, field.TYPE_INT32, False, None),
            ("channels", 2, field.TYPE_INT32, False, None),
            ("height", 3, field.TYPE_INT32, False, None),
            ("width", 4, field.TYPE_INT32, False, None),
            ("data", 5, field.TYPE_FLOAT, True, None),
            ("shape", 7, field.TYPE_MESSAGE, False, "BlobShape"),
            ("double_data", 8, field.TYPE_DOUBLE, True, None),
        ],
        "LayerParameter": [
            ("name", 1, field.TYPE_STRING, False, None),
            ("type", 2, field.TYPE_STRING, False, None),
            ("blobs", 7, field.TYPE_MESSAGE, True, "BlobProto"),
        ],
        "V1LayerParameter": [
            ("name", 4, field.TYPE_STRING, False, None),
            ("type", 5, field.TYPE_INT32, False, None),
            ("blobs", 6, field.TYPE_MESSAGE, True, "BlobProto"),
        ],
        "NetParameter": [
            ("name", 1, field.TYPE_STRING, False, None),
            ("layers", 2, field.TYPE_MESSAGE, True, "V1LayerParameter"),
            ("layer", 100, field.TYPE_MESSAGE, True, "LayerParameter"),
        ],
    }
    for name, fields in layouts.items():
        message = proto.message_type.add(name=name)
        for field_name, number, kind, repeated, type_name in fields:
            label = field.LABEL_REPEATED if repeated else field.LABEL_OPTIONAL
            one = message.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                one.type_name = f".{package}.{type_name}"
            elif repeated:
                one.options.packed = True
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.NetParameter"))


def _child(method: str, path: Path) -> None:
    """Run one method and print {seconds, peak_rss, baseline_rss, checksum} as JSON."""
    import numpy as np

    if method == "reader":
        sys.path.insert(0, str(ROOT))
        from caffe2py.caffemodel import read_caffemodel
    elif method == "protobuf":
        net_class = _net_parameter_class()
    baseline = _peak_rss_bytes()  # interpreter + imports, before any file data

    checksum = 0.0
    start = time.perf_counter()
    if method == "copy":
        target = path.with_name(path.name + f".copy{os.getpid()}")
        shutil.copyfile(path, target)
        seconds = time.perf_counter() - start
        target.unlink()
    elif method == "reader":
        layers = read_caffemodel(path)
        for layer in layers.values():
            for array in layer.blobs:
                checksum += float(array.sum(dtype=np.float64))
        seconds = time.perf_counter() - start
    else:
        net = net_class()
        net.ParseFromString(path.read_bytes())
        for layer in list(net.layer) + list(net.layers):
            for blob in layer.blobs:
                values = blob.double_data if len(blob.double_data) else blob.data
                checksum += float(np.asarray(values, dtype=np.float32).sum(dtype=np.float64))
        seconds = time.perf_counter() - start
    result = {
        "seconds": seconds,
        "peak_rss": _peak_rss_bytes(),
        "baseline_rss": baseline,
        "checksum": checksum,
    }
    print(json.dumps(result))


def _measure(method: str, path: Path, repeat: int) -> dict[str, float]:
    runs = []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, __file__, "--child", method, str(path)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        runs.append(json.loads(out.splitlines()[-1]))
    best = min(runs, key=lambda r: r["seconds"])
    best["peak_rss"] = max(r["peak_rss"] for r in runs)
    return best


def _vgg16(directory: Path) -> Path:
    case = SHARED / "oracle" / "cases" / "vgg16"
    if not case.is_dir():
        sys.exit(f"no caffemodel given and {case} is missing; pass a caffemodel path")
    subprocess.run(
        [sys.executable, str(SHARED / "oracle" / "make_case.py"), str(case), str(directory)],
        check=True,
    )
    return directory / "weights.caffemodel"


def _report(path: Path, repeat: int) -> None:
    import google.protobuf
    import numpy

    size = path.stat().st_size
    mb = 1e6
    print(
        f"{path.name}: {size / mb:.0f} MB; Python {sys.version.split()[0]}, numpy"
        f" {numpy.__version__}, protobuf {google.protobuf.__version__}; best of {repeat},"
        " file in page cache\n"
    )
    print("| method | seconds | MB/s | peak RSS MB | RSS/file | RSS before reading MB |")
    print("|---|---:|---:|---:|---:|---:|")
    checksums = {}
    for method, label in METHODS.items():
        r = _measure(method, path, repeat)
        if method != "copy":
            checksums[method] = r["checksum"]
        print(
            f"| {label} | {r['seconds']:.3f} | {size / mb / r['seconds']:,.0f} |"
            f" {r['peak_rss'] / mb:,.0f} | {r['peak_rss'] / size:.2f} |"
            f" {r['baseline_rss'] / mb:,.0f} |"
        )
    if len(set(checksums.values())) > 1:
        print(f"\nchecksums differ: {checksums}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("caffemodel", nargs="?", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.caffemodel)
        return 0
    if args.caffemodel is not None:
        _report(args.caffemodel, args.repeat)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench_caffemodel_") as directory:
        _report(_vgg16(Path(directory)), args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
