"""The caffe2py command line: prototxt in, Keras module out (and an .npz of weights)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from translator import __version__
from translator.errors import TranslationError

EXAMPLES = """examples:
  caffe2py deploy.prototxt > model.py
  caffe2py deploy.prototxt --weights net.caffemodel -o model.py      # also writes model.npz
  caffe2py train_val.prototxt --input-shape data=1,3,227,227 -o model.py
  caffe2py deploy.prototxt --fully-conv -o fcn.py                     # InnerProduct as convolution
  caffe2py --list-layers
"""


def _shape(text: str) -> tuple[str, tuple[int, ...]]:
    name, sep, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        shape = ()
    if not sep or not name or not shape or min(shape) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=N,C,H,W with positive integers")
    return name, shape


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="caffe2py",
        description="Translate a Caffe net (prototxt, and optionally its caffemodel) into a readable Keras 3 module.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("prototxt", nargs="?", help="the net definition, e.g. deploy.prototxt")
    p.add_argument("-o", "--output", metavar="PY", help="write the module here instead of stdout, e.g. -o model.py")
    p.add_argument("--weights", metavar="CAFFEMODEL", help="also convert these weights, e.g. --weights net.caffemodel")
    p.add_argument("--npz", metavar="PATH", help="where the weights go (default: the module's path with .npz)")
    p.add_argument("--phase", choices=("TEST", "TRAIN"), default="TEST", help="net phase whose layers are kept (default TEST)")
    p.add_argument("--stage", action="append", default=[], metavar="NAME", help="a net stage for include/exclude rules, e.g. --stage deploy (repeatable)")
    p.add_argument("--level", type=int, default=0, help="net level for include/exclude rules, e.g. --level 1")
    p.add_argument("--input-shape", action="append", type=_shape, default=[], metavar="NAME=N,C,H,W", help="shape of an input or data blob, e.g. --input-shape data=1,3,224,224 (repeatable)")
    p.add_argument("--fully-conv", action="store_true", help="InnerProduct on spatial input becomes a convolution; spatial input sizes become free")
    p.add_argument("--native-groups", action="store_true", help="grouped convolution as Conv2D(groups=g) instead of one Conv2D per group")
    p.add_argument("--stub-unknown", action="store_true", help="emit a stub layer class for each unsupported layer type instead of failing")
    p.add_argument("--list-layers", action="store_true", help="print the supported Caffe layer types and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="print the layer-by-layer plan (Caffe layer -> Keras layers, shapes) to stderr")
    p.add_argument("--version", action="version", version=f"caffe2py {__version__}")
    return p


def _write_atomically(path: Path, data: bytes | None = None, fill=None) -> Path:
    """Write to a temporary file beside ``path``; the caller renames it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp_path = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as handle:
            if data is not None:
                handle.write(data)
        if fill is not None:
            fill(tmp_path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return tmp_path


def run(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.list_layers:
        from translator.layers import supported_types

        print("\n".join(supported_types()))
        return 0
    if not args.prototxt:
        parser().error("a prototxt is required")
    from translator.convert import translate
    from translator.emit import Options
    from translator.render import render

    output = Path(args.output) if args.output else None
    npz = Path(args.npz) if args.npz else (output.with_suffix(".npz") if output else None)
    if args.weights and npz is None:
        raise TranslationError("--weights with the module on stdout needs --npz PATH for the weights")
    options = Options(fully_conv=args.fully_conv, native_groups=args.native_groups, stub_unknown=args.stub_unknown)
    translation = translate(
        args.prototxt,
        options=options,
        phase=args.phase,
        level=args.level,
        stages=args.stage,
        input_shapes=dict(args.input_shape),
    )
    if args.verbose:
        print("\n".join(translation.plan), file=sys.stderr)
    npz_name = npz.name if npz else Path(args.prototxt).with_suffix(".npz").name
    source = render(translation, npz_name).encode("utf-8")
    pending: list[tuple[Path, Path]] = []
    try:
        if args.weights:
            from translator.weights import write_npz

            def fill(tmp: Path) -> None:
                write_npz(translation, args.weights, tmp, warn=lambda m: print(f"caffe2py: warning: {m}", file=sys.stderr), progress=_progress(args.weights))

            pending.append((_write_atomically(npz, fill=fill), npz))
        if output is not None:
            pending.append((_write_atomically(output, source), output))
    except BaseException:
        for tmp, _ in pending:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, final in pending:
        os.replace(tmp, final)
    if output is None:
        sys.stdout.buffer.write(source)
        sys.stdout.flush()
    return 0


def _progress(path: str):
    """A stderr progress line for large files, only when stderr is a terminal."""
    if not sys.stderr.isatty() or os.path.getsize(path) < 100 << 20:
        return None

    def report(done: int, total: int) -> None:
        end = "\n" if done >= total else ""
        print(f"\rcaffe2py: reading {Path(path).name}: {done * 100 // max(total, 1)}%", end=end, file=sys.stderr, flush=True)

    return report


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except TranslationError as exc:
        print(f"caffe2py: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"caffe2py: error: {exc.filename or ''}: {exc.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
