"""Translate many random nets and compare each with OpenCV's Caffe importer: python scripts/fuzz_nets.py [-n N]."""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_random_nets import check, random_net


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("-n", "--nets", type=int, default=500, help="how many nets, e.g. -n 5000 (default 500)")
    args.add_argument("--seed", type=int, default=0, help="first seed; net i uses seed + i, e.g. --seed 1000")
    args.add_argument("--max-layers", type=int, default=10, help="layers per net at most (default 10)")
    args.add_argument("--keep-going", action="store_true", help="report every failing net instead of stopping at the first")
    args.add_argument("--save", metavar="DIR", help="write each failing net to DIR/fuzz_SEED.prototxt")
    opts = args.parse_args(argv)
    kinds: Counter[str] = Counter()
    failures = opencv_wrong = 0
    start = time.perf_counter()
    for i in range(opts.nets):
        seed = opts.seed + i
        rng = random.Random(seed)
        net = random_net(rng.randint, seed, opts.max_layers)
        kinds.update(line.split('type: "')[1].split('"')[0] for line in net.lines)
        try:
            wrong = check(net)
        except Exception:  # noqa: BLE001 - every failure is a finding: report it with its net
            failures += 1
            print(f"--- seed {seed} FAILED\n{net.prototxt()}{traceback.format_exc(limit=-3)}", flush=True)
            if opts.save:
                Path(opts.save).mkdir(parents=True, exist_ok=True)
                (Path(opts.save) / f"fuzz_{seed}.prototxt").write_text(net.prototxt())
            if not opts.keep_going:
                break
        else:
            if wrong:
                opencv_wrong += 1
                print(f"--- seed {seed}: OpenCV departs from Caffe on {wrong} (the translation matches Caffe)")
                print(net.prototxt(), flush=True)
        if (i + 1) % 50 == 0:
            print(f"{i + 1} nets, {failures} failed, {time.perf_counter() - start:.0f} s", flush=True)
    done = i + 1 if opts.nets else 0
    print(
        f"{done} nets, {failures} failed, {opencv_wrong} where OpenCV departs from Caffe, "
        f"{time.perf_counter() - start:.0f} s; layers: {dict(kinds.most_common())}"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
