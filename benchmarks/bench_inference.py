"""Inference throughput of generated ResNet-50, VGG16, MobileNet v1/v2 against keras.applications and OpenCV.

usage: python benchmarks/bench_inference.py [--batch N] [--rounds N] [--nets NAME,...] [--workdir DIR] [--jit] [--profile]

Each net is translated by the CLI with the random weights of its ../shared/oracle case (made with
make_case.py in --workdir, kept there, or in a temporary directory) and loaded with the module's
load_weights, twice: the default (trainable) rendering and the --inference one (BatchNorm folded,
Dropout removed), whose logits are compared with the default's. With --jit, each of the two also
runs compiled with jit_compile=True (XLA). They run against keras.applications' model of the same
architecture (weights=None, random) and OpenCV's Caffe importer on the same prototxt and caffemodel. All take the same input
(batch x 224 x 224 x 3; NCHW for OpenCV). After warm-up, the runners are called in turn, one batch
each, for --rounds rounds, starting with a different runner each round so that slow phases of
other load on the machine spread evenly; the table gives the median seconds per batch.
Keras models run through predict_on_batch (a compiled tf.function) on the TensorFlow backend.
With --profile, the --inference model and keras.applications' are then traced with TensorFlow's
profiler: the time of each kind of TensorFlow op as executed (after grappler's rewrites, so fused
ops show as such), and each model's multiply-accumulates per image in convolutions and Dense layers.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from machine import CORPUS, ROOT, child_env, describe, load, make_case, median


@dataclass(frozen=True)
class Net:
    label: str
    prototxt: Path
    case: str
    application: str  # the keras.applications constructor
    logits: str  # the blob before the final Softmax, compared with OpenCV's (softmax saturates)


NETS = {
    "resnet50": Net("ResNet-50", CORPUS / "resnet" / "ResNet-50-deploy.prototxt", "resnet50", "ResNet50", "fc1000"),
    "vgg16": Net("VGG16", CORPUS / "vgg16_v1" / "VGG_ILSVRC_16_layers_deploy.prototxt", "vgg16", "VGG16", "fc8"),
    "mobilenet_v1": Net("MobileNet v1", CORPUS / "mobilenet_v1" / "mobilenet_deploy.prototxt", "mobilenet_v1", "MobileNet", "fc7"),
    "mobilenet_v2": Net("MobileNet v2", CORPUS / "mobilenet_v2" / "mobilenet_v2_deploy.prototxt", "mobilenet_v2", "MobileNetV2", "fc7"),
}


def generate(prototxt: Path, caffemodel: Path, module_path: Path, *flags: str) -> None:
    """Translate with the CLI, weights included (module_path and its .npz)."""
    argv = [sys.executable, "-m", "caffe2py", str(prototxt), "--weights", str(caffemodel), "-o", str(module_path)]
    subprocess.run([*argv, *flags], check=True, cwd=ROOT, env=child_env())


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generated_model(prototxt: Path, caffemodel: Path, directory: Path, *flags: str):
    """The generated module and its model with the caffemodel's weights loaded."""
    path = directory / f"{prototxt.stem}{''.join(flags).replace('-', '_')}.py"
    generate(prototxt, caffemodel, path, *flags)
    module = load_module(path)
    model = module.build_model()
    module.load_weights(model, path.with_suffix(".npz"))
    return module, model


def race(runners: dict, rounds: int, warmup: int = 2, cpu: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Seconds per call of each runner: warm-up, then interleaved rounds, rotating who goes first.

    With ``cpu``, each call's process CPU time (all threads) is appended there too: steadier than wall
    time when other work shares the cores.
    """
    for run in runners.values():
        for _ in range(warmup):
            run()
    names = list(runners)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start, used = time.perf_counter(), time.process_time()
            runners[name]()
            times[name].append(time.perf_counter() - start)
            if cpu is not None:
                cpu.setdefault(name, []).append(time.process_time() - used)
    return times


def _relative(got, want) -> float:
    import numpy as np

    return float(np.abs(got - want).max() / np.abs(want).max())


def op_times(model, x, calls: int = 8) -> dict[str, float]:
    """Milliseconds per batch spent in each kind of TensorFlow op (`_FusedConv2D`, `Pad`, ...).

    The TensorFlow profiler traces `calls` predict_on_batch calls; every op the executor ran is an
    event named "scope/op:Type" on a tf_Compute line. An op's time includes its wait for the
    intra-op threads that compute it, so ops running side by side both count.
    """
    import glob
    from collections import Counter

    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    model.predict_on_batch(x)
    with tempfile.TemporaryDirectory(prefix="bench_profile_") as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(calls):
            model.predict_on_batch(x)
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        space.ParseFromString(Path(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)[0]).read_bytes())
    spent: Counter[str] = Counter()
    for plane in space.planes:
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = names.get(event.metadata_id, "")
                if ":" in name and "::" not in name:  # not ExecutorState::Process and the like
                    spent[name.rsplit(":", 1)[1]] += event.duration_ps / 1e9 / calls
    return dict(spent)


def multiply_adds(model) -> float:
    """Multiply-accumulates per image of the model's convolutions and Dense layers."""
    import math

    import keras

    total = 0
    for layer in _leaves(model):
        kernel = getattr(layer, "kernel", None)
        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)) or kernel is None:
            continue
        per_output = math.prod(kernel.shape[:-1]) if not isinstance(layer, keras.layers.DepthwiseConv2D) else math.prod(kernel.shape[:2])
        total += math.prod(layer.output.shape[1:]) * per_output
    return total


def _leaves(model):
    for layer in model.layers:
        yield from _leaves(layer) if hasattr(layer, "layers") else [layer]


def _bench(net: Net, directory: Path, batch: int, rounds: int, jit: bool, profile: bool = False):
    """Wall and CPU seconds per batch of each runner, a note per runner (its logits' difference), and
    with ``profile`` the op times and multiply-adds of the --inference model and keras.applications'."""
    import cv2
    import keras
    import numpy as np

    case_dir = directory / net.case
    caffemodel = make_case(net.case, case_dir)
    module, generated = generated_model(net.prototxt, caffemodel, case_dir)
    inference_module, inference = generated_model(net.prototxt, caffemodel, case_dir, "--inference")
    reference = getattr(keras.applications, net.application)(weights=None, input_shape=(224, 224, 3))
    opencv = cv2.dnn.readNetFromCaffe(str(net.prototxt), str(caffemodel))
    x = np.random.default_rng(0).uniform(-1, 1, (batch, 224, 224, 3)).astype(np.float32)
    x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def run_opencv():
        opencv.setInput(x_nchw)
        return opencv.forward()

    def logits(model, module):
        picked = keras.Model(model.input, model.get_layer(module.BLOBS[net.logits][0]).output)
        return np.asarray(picked.predict_on_batch(x)).reshape(batch, -1)

    # The same weights and input through two runtimes: the comparison is of equal work.
    ours = logits(generated, module)
    opencv.setInput(x_nchw)
    theirs = opencv.forward(net.logits).reshape(batch, -1)
    notes = {
        "generated": f"{_relative(ours, theirs):.1e} vs OpenCV",
        "generated --inference": f"{_relative(logits(inference, inference_module), ours):.1e} vs generated",
    }
    models = {"generated": generated, "generated --inference": inference}
    if jit:
        for label, (mod, model) in {"generated": (module, generated), "generated --inference": (inference_module, inference)}.items():
            compiled = mod.build_model()
            compiled.set_weights(model.get_weights())
            compiled.compile(jit_compile=True)
            models[f"{label}, jit_compile"] = compiled
            notes[f"{label}, jit_compile"] = f"{_relative(np.asarray(compiled.predict_on_batch(x)), np.asarray(model.predict_on_batch(x))):.1e} vs {label}"
    runners = {label: (lambda m=m: m.predict_on_batch(x)) for label, m in models.items()}
    runners["keras.applications"] = lambda: reference.predict_on_batch(x)
    runners["OpenCV"] = run_opencv
    cpu: dict[str, list[float]] = {}
    times = race(runners, rounds, cpu=cpu)
    profiles = {}
    if profile:
        profiles = {label: (op_times(m, x), multiply_adds(m)) for label, m in (("generated --inference", inference), ("keras.applications", reference))}
    return times, cpu, notes, profiles


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--nets", default=",".join(NETS), help=f"comma-separated, from {', '.join(NETS)}")
    parser.add_argument("--workdir", type=Path, help="where the caffemodels and generated modules go (kept)")
    parser.add_argument("--jit", action="store_true", help="also run the generated models compiled with jit_compile=True")
    parser.add_argument("--profile", action="store_true", help="then trace the --inference model and keras.applications' op by op")
    args = parser.parse_args(argv)

    import cv2
    import keras
    import tensorflow as tf

    print(describe([f"TensorFlow {tf.__version__}", f"Keras {keras.__version__}", f"OpenCV {cv2.__version__}"]))
    print(
        f"\nBatch {args.batch} of 224x224x3, median seconds per batch over {args.rounds} interleaved rounds after"
        f" 2 warm-up calls; images/s = batch / median. TensorFlow threads: intra-op"
        f" {tf.config.threading.get_intra_op_parallelism_threads() or 'default'}, OpenCV threads"
        f" {cv2.getNumThreads()}. Load average at start: {load()}.\n"
    )
    print(
        "| net | runtime | s / batch (median) | best | images/s (median) | vs keras.applications (median) | (best) |"
        " CPU s / batch (median) | vs keras.applications (CPU) | output difference (max abs diff / max abs) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    profiles = {}
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as scratch:
        directory = args.workdir or Path(scratch)
        for key in args.nets.split(","):
            net = NETS[key]
            times, cpu, notes, profiles[net.label] = _bench(net, directory, args.batch, args.rounds, args.jit, args.profile)
            keras.backend.clear_session()
            reference = times["keras.applications"]
            for name, values in times.items():
                m = median(values)
                shown = notes.get(name, "")
                print(
                    f"| {net.label} | {name} | {m:.3f} | {min(values):.3f} | {args.batch / m:.1f} |"
                    f" {median(reference) / m:.2f}x | {min(reference) / min(values):.2f}x | {median(cpu[name]):.3f} |"
                    f" {median(cpu['keras.applications']) / median(cpu[name]):.2f}x | {shown} |",
                    flush=True,
                )
    print(f"\nLoad average at end: {load()}.")
    for label, runs in profiles.items():
        if runs:
            _print_profile(label, runs)
    return 0


def _print_profile(label: str, runs: dict[str, tuple[dict[str, float], float]]) -> None:
    """One table per net: ms per batch in each kind of op, the --inference model beside keras.applications."""
    kinds = sorted({k for spent, _ in runs.values() for k in spent}, key=lambda k: -max(spent.get(k, 0) for spent, _ in runs.values()))
    print(f"\n{label}, TensorFlow ops as executed (ms per batch; {', '.join(f'{n}: {m / 1e6:.0f} M multiply-adds per image' for n, (_, m) in runs.items())}):\n")
    print(f"| op | {' | '.join(runs)} |")
    print(f"|---|{'---:|' * len(runs)}")
    for kind in [*kinds, "total"]:
        cells = [sum(spent.values()) if kind == "total" else spent.get(kind, 0.0) for spent, _ in runs.values()]
        if kind == "total" or max(cells) >= 0.05:
            print(f"| {kind} | {' | '.join(f'{c:.1f}' for c in cells)} |")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
