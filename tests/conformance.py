"""Compare translated models with BVLC Caffe's own outputs in ../shared/oracle (a library and a script).

    python -m tests.conformance                 # print the table
    python -m tests.conformance --write docs/conformance.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tests.refnet import load_module, to_caffe

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CASES = SHARED / "oracle" / "cases"
RELATIVE_TOLERANCE = 1e-4  # of the blob's largest magnitude: float32 over a deep net


@dataclass
class Result:
    case: str
    status: str  # "pass", "FAIL", "unsupported"
    blobs: int = 0
    worst: str = ""
    worst_error: float = 0.0
    seconds: float = 0.0
    reason: str = ""
    renderings: int = 1  # 2 where the --flat module, of other text, was compared too
    failures: list[str] = field(default_factory=list)


def case_names() -> list[str]:
    return sorted(p.name for p in CASES.iterdir() if (p / "case.json").is_file()) if CASES.is_dir() else []


def case_files(case: str, workdir: Path) -> tuple[dict, Path, dict[str, np.ndarray]]:
    """The case description, its exact weights file, and its NCHW inputs."""
    spec = json.loads((CASES / case / "case.json").read_text())
    subprocess.run(
        [sys.executable, str(SHARED / "oracle" / "make_case.py"), str(CASES / case), str(workdir)], check=True
    )
    with np.load(workdir / "input.npz") as data:
        inputs = {k: data[k] for k in data.files}
    return spec, workdir / "weights.caffemodel", inputs


def run_case(
    case: str, *, fully_conv: bool = False, inference: bool = False, flat: bool = False, prototxt: Path | None = None
) -> Result:
    """Translate, convert, run and compare one oracle case (``inference``: in the --inference rendering).

    ``flat``: the --flat module too, where its text differs (same weights file); its failures say so.
    """
    from caffe2py.convert import translate
    from caffe2py.emit import Options
    from caffe2py.errors import TranslationError
    from caffe2py.render import render
    from caffe2py.weights import write_npz

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"case_{case}_") as tmp:
        workdir = Path(tmp)
        spec, weights, inputs = case_files(case, workdir)
        net = prototxt or SHARED / spec["prototxt"]
        try:
            translation = translate(net, options=Options(fully_conv=fully_conv, inference=inference))
        except TranslationError as exc:
            return Result(case, "unsupported", reason=str(exc))
        sources = {"": render(translation, "weights.npz")}
        if flat:
            text = render(dataclasses.replace(translation, flat=True), "weights.npz")
            if text != sources[""]:
                sources["--flat: "] = text
        write_npz(translation, weights, workdir / "weights.npz")
        expected = np.load(CASES / case / "expected.npz")
        # Inputs the case fixes rather than draws (a recurrent net's cont indicators).
        inputs.update({name: np.asarray(v["values"], np.float32) for name, v in spec.get("fixed_inputs", {}).items()})
        layouts = {t.blob: t.layout for t in translation.inputs}
        shapes = {name: tuple(inputs[name].shape[a] for a in axes[1:]) for name, axes in layouts.items()}
        arg = next(iter(shapes.values())) if len(shapes) == 1 else shapes
        if fully_conv:
            arg = (None, None, arg[-1]) if len(shapes) == 1 else {k: (None, None, v[-1]) for k, v in shapes.items()}
        feed = [np.transpose(inputs[name], axes) for name, axes in layouts.items()]
        result = Result(case, "pass", renderings=len(sources))
        for label, source in sources.items():
            module = load_module(source)
            names = [b for b, (_, axes) in module.BLOBS.items() if axes is not None]
            model = module.build_model(arg, outputs=names)
            module.load_weights(model, workdir / "weights.npz")
            x = feed if len(feed) > 1 else feed[0]
            # predict() in the default module; the --flat one is called, which costs no tracing.
            values = model.predict(x, verbose=0, batch_size=len(feed[0])) if not label else model(x, training=False)
            values = [np.asarray(v) for v in (values if isinstance(values, list) else [values])]
            _compare(result, label, expected, {name: to_caffe(v, module.BLOBS[name][1]) for name, v in zip(names, values)})
        if result.failures:
            result.status = "FAIL"
        result.seconds = time.perf_counter() - start
        return result


def _compare(result: Result, label: str, expected, blobs: dict[str, np.ndarray]) -> None:
    """Every net output and probe of ``expected`` against the model's blobs, in Caffe's layout."""
    for name, caffe in blobs.items():
        checks = []
        if f"out/{name}" in expected.files:
            ref = expected[f"out/{name}"]
            got = caffe.reshape(ref.shape) if caffe.size == ref.size else None
            checks.append((ref, got, np.abs(ref).max()))
        if f"probe/{name}" in expected.files:
            stats = expected[f"stats/{name}"]
            index = expected[f"probe_index/{name}"]
            values = caffe.reshape(-1)
            got = values[index] if values.size > index.max() else None
            checks.append((expected[f"probe/{name}"], got, max(abs(stats[2]), abs(stats[3]))))
        for ref, got, scale in checks:
            result.blobs += 1
            if got is None:
                result.failures.append(f"{label}{name}: shape {caffe.shape} does not match Caffe's")
                continue
            error = float(np.abs(got - ref).max()) / max(float(scale), 1e-12)
            if error > result.worst_error:
                result.worst, result.worst_error = label + name, error
            if error > RELATIVE_TOLERANCE:
                result.failures.append(f"{label}{name}: relative error {error:.2e}")


def table(results: list[Result]) -> str:
    lines = [
        "| case | result | blobs compared | worst blob | worst error / max\\|ref\\| | seconds | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        note = r.reason or "; ".join(r.failures[:3])
        lines.append(
            f"| {r.case} | {r.status} | {r.blobs} | {r.worst} | {r.worst_error:.1e} | {r.seconds:.1f} | {note} |"
        )
    passed = sum(r.status == "pass" for r in results)
    lines.append("")
    lines.append(f"{passed} of {len(results)} cases pass (tolerance {RELATIVE_TOLERANCE:g} of each blob's max |value|).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("cases", nargs="*", help="case names (default: all)")
    args.add_argument("--write", metavar="MD", help="also write the table as Markdown")
    opts = args.parse_args(argv)
    results = []
    for case in opts.cases or case_names():
        if case == "caffenet_surgery":
            continue  # compared by the fully-convolutional test, not as a plain translation
        try:
            result = run_case(case)
        except Exception as exc:  # noqa: BLE001 -- a crash is one failed case; the table still covers the rest
            result = Result(case, "FAIL", reason=f"{type(exc).__name__}: {exc}"[:300])
        print(f"{case}: {result.status} {result.worst_error:.1e} {result.reason or '; '.join(result.failures[:3])}", flush=True)
        results.append(result)
    text = table(results)
    print(text)
    if opts.write:
        header = (
            "# Conformance with BVLC Caffe\n\nEvery case of `../shared/oracle` (outputs of the real BVLC Caffe 1.0) "
            "translated, its weights converted, and run with Keras on the case's input; every net output and the "
            "64 probed values of every intermediate blob are compared. Regenerate with "
            "`python -m tests.conformance --write docs/conformance.md`.\n\n"
        )
        Path(opts.write).write_text(header + text + "\n")
    return 0 if all(r.status != "FAIL" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
