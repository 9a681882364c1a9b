"""Weight conversion of VGG16 (~550 MB caffemodel) by the CLI against a plain copy of the file: time and peak RSS.

usage: python benchmarks/bench_weights.py [--repeat N] [--workdir DIR] [--no-reader] [--baseline DIR] [--floor]

The caffemodel is the random-weights VGG16 of ../shared/oracle/cases/vgg16, made with
../shared/oracle/make_case.py in --workdir (kept there, so a second run skips it) or in a
temporary directory. Every measurement is one child process whose peak RSS comes from wait4, so it
is that child's alone; `sync` runs before each so that writing back the previous run's output does
not land in the next one. The caffemodel is in the page cache throughout: this measures CPU and
memory, not the disk. Runs are interleaved (one of each method per round). With --baseline DIR (another
revision's package as DIR/caffe2py with DIR/templates beside it: `git archive REV translator templates |
tar -x -C DIR && mv DIR/translator DIR/caffe2py`), that revision converts too, in the same rounds.
With --floor, three bare Python processes show the least a conversion must do (FLOOR).
Then benchmarks/bench_caffemodel_read.py gives the reader's own numbers.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import CORPUS, ROOT, describe, load, make_case, median, run_measured

PROTOTXT = CORPUS / "vgg16_v1" / "VGG_ILSVRC_16_layers_deploy.prototxt"
MB = 1e6
# The least any conversion must do, as a Python process: import numpy, map the file, and write its bytes
# out in 256 KB pieces (argv: caffemodel, output, "crc" to also compute the zip's CRC-32, "permute" to
# also permute the rows of a 4096 x (512*7*7) float32 matrix as VGG16's fc6 needs, through one buffer).
FLOOR = """
import mmap, sys, zlib
import numpy as np
source, target, steps = sys.argv[1], sys.argv[2], sys.argv[3:]
with open(source, "rb") as f:
    data = np.frombuffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), np.uint8)
buffer = np.empty(1 << 18, np.uint8)
crc, done = 0, 0
with open(target, "wb", buffering=0) as out:
    if "permute" in steps:
        rows = data[: 4096 * 25088 * 4].view(np.float32).reshape(4096, 512, 49)
        block = buffer.view(np.float32)[: 2 * 25088].reshape(2, 49, 512)
        for i in range(0, 4096, 2):
            np.copyto(block, rows[i : i + 2].transpose(0, 2, 1))
            crc = zlib.crc32(block, crc) if "crc" in steps else 0
            out.write(block)
        done = rows.nbytes
    for start in range(done, data.size, 1 << 18):
        piece = data[start : start + (1 << 18)]
        crc = zlib.crc32(piece, crc) if "crc" in steps else 0
        out.write(piece)
"""


def _methods(caffemodel: Path, out: Path, baseline: Path | None, floor: bool) -> dict[str, tuple[list[str], Path]]:
    translate = [sys.executable, "-m", "caffe2py", str(PROTOTXT)]
    convert = [*translate, "--weights", str(caffemodel), "-o", str(out / "vgg16.py")]
    methods = {
        "`cp` (plain file copy)": (["cp", str(caffemodel), str(out / "copy.caffemodel")], ROOT),
        "`caffe2py NET -o out.py` (no weights)": ([*translate, "-o", str(out / "plain.py")], ROOT),
    }
    if floor:
        floor_run = [sys.executable, "-c", FLOOR, str(caffemodel), str(out / "floor.bin")]
        methods["floor: python + numpy, map the file, write it in 256 KB pieces"] = (floor_run, ROOT)
        methods["floor + CRC-32 of every piece"] = ([*floor_run, "crc"], ROOT)
        methods["floor + CRC-32 + 411 MB of rows permuted as fc6's"] = ([*floor_run, "crc", "permute"], ROOT)
    if baseline:
        methods[f"baseline {baseline}: `caffe2py NET --weights CAFFEMODEL -o out.py`"] = (convert, baseline)
    methods["`caffe2py NET --weights CAFFEMODEL -o out.py`"] = (convert, ROOT)
    return methods


def _clean(out: Path) -> None:
    for path in out.iterdir():
        path.unlink()
    subprocess.run(["sync"], check=True)


def _report(caffemodel: Path, repeat: int, reader: bool, baseline: Path | None, floor: bool) -> None:
    import numpy

    size = caffemodel.stat().st_size
    print(describe([f"numpy {numpy.__version__}"]))
    print(
        f"\n{caffemodel.name} of VGG16: {size / MB:.0f} MB, in the page cache. Median of {repeat} runs (wall and"
        f" CPU = user + system), largest peak RSS. Load average at start: {load()}.\n"
    )
    print("| method | median wall s | CPU s | MB/s (wall) | peak RSS MB | peak RSS / file | wall / copy |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="bench_weights_out_") as directory:
        out = Path(directory)
        methods = _methods(caffemodel, out, baseline, floor)
        runs: dict[str, list] = {label: [] for label in methods}
        for _ in range(repeat):
            for label, (argv, root) in methods.items():
                _clean(out)
                run = run_measured(argv, root=root)
                if run.code != 0:
                    sys.exit(f"{' '.join(argv)} failed with exit code {run.code}")
                runs[label].append(run)
        results = {
            label: {"wall": median([x.wall for x in r]), "cpu": median([x.cpu for x in r]), "rss": max(x.peak_rss for x in r)}
            for label, r in runs.items()
        }
        copy = next(iter(results.values()))["wall"]
        for label, r in results.items():
            print(
                f"| {label} | {r['wall']:.2f} | {r['cpu']:.2f} | {size / MB / r['wall']:,.0f} | {r['rss'] / MB:,.0f} |"
                f" {r['rss'] / size:.2f} | {r['wall'] / copy:.1f}x |"
            )
        npz = out / "vgg16.npz"
        npz_size = npz.stat().st_size if npz.exists() else 0
    copy, plain, full = (results[label]["wall"] for label in list(results)[:2] + list(results)[-1:])
    print(
        f"\nThe weights alone (full minus no-weights run): {full - plain:.2f} s, {size / MB / (full - plain):,.0f} MB/s,"
        f" {(full - plain) / copy:.1f}x the copy. The .npz written: {npz_size / MB:.0f} MB."
        f" Load average at end: {load()}."
    )
    if reader:
        print("\nbenchmarks/bench_caffemodel_read.py on the same file:\n")
        script = Path(__file__).with_name("bench_caffemodel_read.py")
        sys.stdout.flush()
        subprocess.run([sys.executable, str(script), str(caffemodel)], check=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="where the VGG16 caffemodel is made (and kept)")
    parser.add_argument("--no-reader", action="store_true", help="skip bench_caffemodel_read.py")
    parser.add_argument("--baseline", type=Path, help="another revision's package, as DIR/caffe2py, to compare with")
    parser.add_argument("--floor", action="store_true", help="also time the least a conversion must do (see FLOOR)")
    args = parser.parse_args(argv)
    baseline = args.baseline.resolve() if args.baseline else None
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
        _report(make_case("vgg16", args.workdir), args.repeat, not args.no_reader, baseline, args.floor)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench_weights_") as directory:
        _report(make_case("vgg16", Path(directory)), args.repeat, not args.no_reader, baseline, args.floor)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
