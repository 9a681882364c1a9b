"""Translation time of every corpus prototxt as a whole `python -m caffe2py` process, and where it goes.

usage: python benchmarks/bench_translate.py [--repeat N] [--match TEXT] [--no-profile] [--baseline DIR]

For each ../shared/corpus/**/*.prototxt: the median wall time of `python -m caffe2py NET > /dev/null`
over N runs (a fresh interpreter each time, so imports are included), the lines printed, and whether
TensorFlow or Keras was imported (one extra run under `python -X importtime`). Then ResNet-152
against `python -c "import black"` (issue 17's yardstick: at most 3x), interleaved; the ResNet
family with a linear fit of time against Caffe layers, the time of each phase (measured inside one
child, without a profiler) for ResNet-152 and the largest outputs, and a cProfile of ResNet-152
summed by package. With --baseline (a checkout of another revision, e.g. made with
`git worktree add /tmp/before REV`), that checkout's ResNet-152 against `import black` too, and
the ResNets and the largest outputs translated by both, runs interleaved.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import pstats
import re
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

from machine import CORPUS, ROOT, child_env, describe, load, median, run_measured

RESNETS = [CORPUS / "resnet" / f"ResNet-{depth}-deploy.prototxt" for depth in (50, 101, 152)]
FORBIDDEN = ("tensorflow", "keras", "jax", "torch")


def _versions() -> list[str]:
    import black
    import google.protobuf
    import jinja2

    return [f"black {black.__version__}", f"jinja2 {jinja2.__version__}", f"protobuf {google.protobuf.__version__}"]


def _counts(path: Path) -> tuple[int, int]:
    """(Caffe layers in the prototxt, Keras layer calls emitted), in this process."""
    sys.path.insert(0, str(ROOT))
    from caffe2py.convert import translate
    from caffe2py.ir import Statement
    from caffe2py.parse import read_prototxt

    caffe = len(read_prototxt(path).net.layer)
    keras = sum(isinstance(s, Statement) for s in translate(path).statements)
    return caffe, keras


def _command(path: Path, *flags: str) -> list[str]:
    return [sys.executable, *flags, "-m", "caffe2py", str(path)]


def _imported(path: Path) -> list[str]:
    """Top-level packages of FORBIDDEN that one translation imports."""
    argv = _command(path, "-X", "importtime")
    err = subprocess.run(argv, check=False, cwd=ROOT, env=child_env(), capture_output=True, text=True).stderr
    names = {m.group(1).split(".")[0] for m in re.finditer(r"^import time:.*\|\s+(\S+)$", err, re.MULTILINE)}
    return sorted(names & set(FORBIDDEN))


def _measure(path: Path, repeat: int) -> dict:
    first = subprocess.run(_command(path), check=False, cwd=ROOT, env=child_env(), capture_output=True, text=True)
    if first.returncode != 0:
        message = (first.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": message.removeprefix("caffe2py: error: ").replace(str(path), "", 1).lstrip(":0123456789 ")}
    runs = [run_measured(_command(path)) for _ in range(repeat)]
    caffe, keras = _counts(path)
    return {
        "seconds": median([r.wall for r in runs]),
        "best": min(r.wall for r in runs),
        "cpu": median([r.cpu for r in runs]),
        "lines": first.stdout.count("\n"),
        "caffe": caffe,
        "keras": keras,
        "imported": _imported(path),
    }


def _against(baseline: Path, paths: list[Path], repeat: int) -> None:
    """Whole-process times of this checkout and ``baseline`` on ``paths``, their runs interleaved."""
    print(f"\nThis checkout against {baseline} ({_revision(baseline)}), {repeat} interleaved runs each:\n")
    print("| prototxt | before: median s | best s | CPU s | now: median s | best s | CPU s | median speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for path in paths:
        runs: dict[Path, list] = {baseline: [], ROOT: []}
        for _ in range(repeat):
            for root, measured in runs.items():
                measured.append(run_measured(_command(path), root=root))
        before, now = (
            (median([r.wall for r in runs[root]]), min(r.wall for r in runs[root]), median([r.cpu for r in runs[root]]))
            for root in (baseline, ROOT)
        )
        print(
            f"| {_name(path)} | {before[0]:.3f} | {before[1]:.3f} | {before[2]:.3f} | {now[0]:.3f} | {now[1]:.3f} |"
            f" {now[2]:.3f} | {before[0] / now[0]:.2f}x |",
            flush=True,
        )


def _against_import_black(path: Path, repeat: int, baseline: Path | None) -> None:
    """Issue 17's yardstick: a whole translation against `python -c "import black"`, runs interleaved.

    With ``baseline``, that checkout's translation too, in the same rounds.
    """
    black_argv = [sys.executable, "-c", "import black"]
    roots = {"translation": ROOT} | ({f"translation by {_revision(baseline)[:7]} (--baseline)": baseline} if baseline else {})
    runs: dict[str, list] = {"import black": []} | {label: [] for label in roots}
    for _ in range(repeat):
        runs["import black"].append(run_measured(black_argv))
        for label, root in roots.items():
            runs[label].append(run_measured(_command(path), root=root))
    wall = {k: median([r.wall for r in v]) for k, v in runs.items()}
    cpu = {k: median([r.cpu for r in v]) for k, v in runs.items()}
    print(f"\n{_name(path)} against `python -c \"import black\"`, {repeat} interleaved runs each (load average {load()}):\n")
    print("| process | median wall s | best wall s | CPU s | ratio of medians, wall | CPU | median of per-round ratios |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, measured in runs.items():
        paired = median([t.wall / b.wall for b, t in zip(runs["import black"], measured)])
        print(
            f"| {label} | {wall[label]:.3f} | {min(r.wall for r in measured):.3f} | {cpu[label]:.3f} |"
            f" {wall[label] / wall['import black']:.2f}x | {cpu[label] / cpu['import black']:.2f}x | {paired:.2f}x |"
        )
    print(f"\nLoad average at the end: {load()}.")


def _revision(root: Path) -> str:
    out = subprocess.run(["git", "log", "-1", "--format=%h %s"], cwd=root, capture_output=True, text=True, check=False)
    return out.stdout.strip()[:72] or "not a git checkout"


def _phases_child(path: Path) -> None:
    """Time each phase of one translation in a fresh interpreter; print them as JSON."""
    times = {}
    start = time.perf_counter()
    from caffe2py.emit import Emitter, Options
    from caffe2py.normalize import build_graph
    from caffe2py.parse import read_prototxt
    from caffe2py.render import black_mode, unformatted

    times["imports (caffe2py, protobuf, jinja2)"] = time.perf_counter() - start
    gc.disable()  # as the CLI translates (cli._collector_paused), black's import included
    mark = time.perf_counter()
    import black

    times["import black"] = time.perf_counter() - mark

    def step(label, fn):
        began = time.perf_counter()
        value = fn()
        times[label] = time.perf_counter() - began
        return value

    mode = black_mode(black)
    parsed = step("parse (prototxt reader + upgrade)", lambda: read_prototxt(path))
    graph = step("normalize (graph)", lambda: build_graph(parsed))
    translation = step("emit (layer emitters)", lambda: Emitter(graph, Options(), path.name).run())
    text = step("present + jinja2 render (+ black on lines left long)", lambda: unformatted(translation, "net.npz", black, mode))
    out = step("black", lambda: black.format_str(text, mode=mode))
    times["total in process"] = time.perf_counter() - start
    print(json.dumps({"times": times, "lines": out.count("\n"), "one pass": out == text}))


def _phases(path: Path, repeat: int) -> dict:
    """The fastest of ``repeat`` fresh children for each phase (other load only ever adds time)."""
    runs = []
    for _ in range(repeat):
        argv = [sys.executable, __file__, "--phases-child", str(path)]
        out = subprocess.run(argv, cwd=ROOT, env=child_env(), capture_output=True, text=True, check=True).stdout
        runs.append(json.loads(out.splitlines()[-1]))
    times = {label: min(r["times"][label] for r in runs) for label in runs[0]["times"]}
    return {"times": times, "lines": runs[0]["lines"], "one pass": runs[0]["one pass"]}


def _category(filename: str, function: str) -> str:
    if "black" in function or "/black/" in filename or "blib2to3" in filename:
        return "black"
    if "google/protobuf/text_format" in filename:
        return "protobuf text_format"
    if "translator/layers/" in filename or filename.endswith("translator/emit.py"):
        return "translator emitters"
    if "/translator/" in filename:
        return "translator (other)"
    if filename.startswith("<frozen") or function.startswith(("<built-in method marshal", "<built-in method _imp")):
        return "import machinery"
    if "site-packages/" in filename:
        return filename.split("site-packages/")[1].split("/")[0]
    if "/lib/python3" in filename:
        return "stdlib: " + filename.rsplit("/lib/python3", 1)[1].split("/")[1].removesuffix(".py")
    return "builtins / other"


def _profile(path: Path) -> tuple[float, list[tuple[str, float]], list[tuple[str, float]]]:
    """cProfile one CLI run in this process; (total, seconds per category, top functions by own time)."""
    sys.path.insert(0, str(ROOT))
    from caffe2py.cli import main

    profiler = cProfile.Profile()
    with open(os.devnull, "w") as sink, redirect_stdout(sink):  # the CLI writes to sys.stdout.buffer
        profiler.runcall(main, [str(path)])
    stats = pstats.Stats(profiler)
    by_category: dict[str, float] = {}
    functions = []
    for (filename, line, function), (_, _, own, _, _) in stats.stats.items():
        label = _category(filename, function)
        by_category[label] = by_category.get(label, 0.0) + own
        short = filename.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
        functions.append((f"{short}:{line}({function})", own))
    total = sum(by_category.values())
    return (
        total,
        sorted(by_category.items(), key=lambda kv: -kv[1]),
        sorted(functions, key=lambda kv: -kv[1])[:12],
    )


def _name(path: Path) -> str:
    return str(path.relative_to(CORPUS))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--match", default="", help="only prototxts whose path contains this")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--baseline", type=Path, help="a checkout of another revision to compare with")
    parser.add_argument("--phases-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phases_child:
        _phases_child(args.phases_child)
        return 0

    print(describe(_versions()))
    print(
        f"\n{args.repeat} runs of `python -m caffe2py NET > /dev/null`, each a fresh interpreter: median and"
        f" best wall time, median CPU time (user + system; less sensitive to other load). Load average at"
        f" start: {load()}.\n"
    )
    print("| prototxt | Caffe layers | Keras layers | output lines | median s | best s | CPU s | CPU ms / line | TF/Keras imported |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    results = {}
    for path in sorted(CORPUS.rglob("*.prototxt")):
        if args.match not in str(path):
            continue
        r = results[path] = _measure(path, args.repeat)
        if "error" in r:
            print(f"| {_name(path)} | fails: {r['error'][:160].replace('|', '/')} | | | | | | | |")
        else:
            print(
                f"| {_name(path)} | {r['caffe']} | {r['keras']} | {r['lines']} | {r['seconds']:.3f} | {r['best']:.3f} |"
                f" {r['cpu']:.3f} | {1000 * r['cpu'] / r['lines']:.2f} | {', '.join(r['imported']) or 'no'} |",
                flush=True,
            )
    ok = {p: r for p, r in results.items() if "error" not in r}
    print(f"\n{len(ok)} of {len(results)} translate. Load average at end: {load()}.")

    if RESNETS[-1].is_file():
        _against_import_black(RESNETS[-1], 2 * args.repeat + 1, args.baseline.resolve() if args.baseline else None)
    family = [(p, ok.get(p) or _measure(p, args.repeat)) for p in RESNETS]
    family = [(p, r) for p, r in family if "error" not in r]
    if len(family) >= 2:
        xs = [r["caffe"] for _, r in family]
        ys = [r["cpu"] for _, r in family]
        mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
        fixed = mean_y - slope * mean_x
        print("\n| net | Caffe layers | Keras layers | output lines | median wall s | best wall s | CPU s | linear fit of CPU s |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for p, r in family:
            print(
                f"| {p.stem} | {r['caffe']} | {r['keras']} | {r['lines']} | {r['seconds']:.3f} | {r['best']:.3f} |"
                f" {r['cpu']:.3f} | {fixed + slope * r['lines']:.3f} |"
            )
        print(f"\nLinear fit of CPU time: {fixed:.3f} s fixed + {1000 * slope:.3f} ms per Caffe layer.")

    largest = sorted(ok, key=lambda p: -ok[p]["lines"])[:3]
    if args.baseline:
        _against(args.baseline.resolve(), RESNETS + [p for p in largest if p not in RESNETS], args.repeat)
    if args.no_profile or not ok:
        return 0
    targets = [RESNETS[-1]] + [p for p in largest if p != RESNETS[-1]]
    phases = {p: _phases(p, 3) for p in targets if p.is_file()}
    labels = list(next(iter(phases.values()))["times"])
    print("\nPhases inside one process (no profiler), seconds, best of 3 fresh processes each:\n")
    print("| phase | " + " | ".join(f"{p.stem} ({phases[p]['lines']} lines)" for p in phases) + " |")
    print("|---|" + "---:|" * len(phases))
    for label in labels:
        print(f"| {label} | " + " | ".join(f"{phases[p]['times'][label]:.3f}" for p in phases) + " |")
    print("| black's first pass changed nothing (so it made one pass, not two) | "
          + " | ".join("yes" if phases[p]["one pass"] else "no" for p in phases) + " |")

    total, categories, functions = _profile(RESNETS[-1])
    print(f"\ncProfile of one ResNet-152 translation ({total:.2f} s under the profiler), own time by package:\n")
    print("| package | seconds | share |")
    print("|---|---:|---:|")
    for label, seconds in categories[:12]:
        print(f"| {label} | {seconds:.3f} | {100 * seconds / total:.0f}% |")
    print("\n| function (top own time) | seconds |")
    print("|---|---:|")
    for label, seconds in functions:
        print(f"| `{label}` | {seconds:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
