"""The caffe2py command line: prototxts in, Keras modules out (and an .npz of weights)."""

from __future__ import annotations

import argparse
import difflib
import gc
import importlib
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .config import load as load_project_options
from .errors import TranslationError
from .files import discard, rename_into_place, write_atomically
from .forked import Forked
from .options import shape_argument
from .version import __version__

EXAMPLES = """examples:
  caffe2py deploy.prototxt > model.py
  caffe2py deploy.prototxt --weights net.caffemodel -o model.py   # also writes model.npz
  caffe2py train_val.prototxt --input-shape data=1,3,227,227 -o model.py
  caffe2py deploy.prototxt --fully-conv -o fcn.py                  # InnerProduct as convolution
  caffe2py deploy.prototxt --weights net.caffemodel --inference -o model.py   # BatchNorm folded, for deployment
  caffe2py nets/*.prototxt --write                                 # nets/a.py beside nets/a.prototxt, if it changed
  caffe2py nets/*.prototxt --check                                 # print a diff of stale modules, write nothing
  caffe2py nets/*.prototxt --write --out-dir models                # the modules in models/ instead
  caffe2py deploy.prototxt --weights net.caffemodel --npz w.npz    # the module on stdout, the weights in w.npz
  caffe2py train_val.prototxt --phase TRAIN --input-shape data=1,3,227,227 > train.py
  caffe2py train.prototxt --phase TRAIN --solver solver.prototxt --weights init.caffemodel -o train.py
  caffe2py resnext.prototxt --native-groups > resnext.py           # Conv2D(groups=32), not 32 convolutions
  caffe2py resnet.prototxt --flat > resnet.py                       # one line per layer, no block functions
  caffe2py fork_net.prototxt --stub-unknown > model.py             # a stub class for each unknown layer type
  caffe2py fork_net.prototxt --ignore-unknown-fields > model.py    # translate without fields the schema lacks (warned)
  caffe2py rcnn.prototxt --custom-layers my_layers.py -o model.py  # import the stub classes from my_layers.py
  caffe2py full_conv.prototxt --weights net.caffemodel --rename fc6=fc6-conv -o model.py  # net surgery
  caffe2py deploy.prototxt -v > model.py                           # the layer-by-layer plan on stderr
  caffe2py verify --help                                           # compare a translation with a Caffe runtime
  caffe2py --list-layers

--write and --check exit 1 when a module is (or would be) changed and 0 when all are up to date,
as a pre-commit hook expects; any error exits 2.

Options for one prototxt can live in the pyproject.toml of its project (the first folder up from the
prototxts with a pyproject.toml or .git), keyed by path or glob relative to that folder; options given
on the command line win:
  [tool.caffe2py.files."nets/fcn32s.prototxt"]
  input-shape = ["data=1,3,500,500"]
"""


def _rename(text: str) -> tuple[str, str]:
    old, sep, new = text.partition("=")
    if not sep or not old or not new:
        raise argparse.ArgumentTypeError(f"{text!r} is not OLD=NEW (two layer names)")
    return old, new


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="caffe2py",
        description="Translate a Caffe net (prototxt, and optionally its caffemodel) into a readable Keras 3 module.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("prototxt", nargs="*", help="the net definition, e.g. deploy.prototxt (several with --write or --check)")
    p.add_argument("-o", "--output", metavar="PY", help="write the module here instead of stdout, e.g. -o model.py")
    sync = p.add_mutually_exclusive_group()
    sync.add_argument("--write", action="store_true", help="write each NAME.prototxt's module to NAME.py, replacing it only when its text changes")
    sync.add_argument("--check", action="store_true", help="write nothing; print a diff of every module --write would change")
    p.add_argument("--out-dir", metavar="DIR", help="with --write/--check: the modules' folder instead of each prototxt's own")
    p.add_argument("--weights", metavar="CAFFEMODEL", help="also convert these weights, e.g. --weights net.caffemodel")
    p.add_argument("--rename", action="append", type=_rename, default=[], metavar="OLD=NEW", help="layer NEW takes layer OLD's blobs from the caffemodel, an InnerProduct's reshaped for a convolution (net surgery), e.g. --rename fc6=fc6-conv (repeatable)")
    p.add_argument("--npz", metavar="PATH", help="where the weights go (default: the module's path with .npz)")
    p.add_argument("--phase", choices=("TEST", "TRAIN"), default="TEST", help="net phase whose layers are kept (default TEST)")
    p.add_argument("--stage", action="append", default=[], metavar="NAME", help="a net stage for include/exclude rules, e.g. --stage deploy (repeatable)")
    p.add_argument("--level", type=int, default=0, help="net level for include/exclude rules, e.g. --level 1")
    p.add_argument("--input-shape", action="append", type=shape_argument, default=[], metavar="NAME=N,C,H,W", help="shape of an input or data blob, e.g. --input-shape data=1,3,224,224 (repeatable)")
    p.add_argument("--fully-conv", action="store_true", help="InnerProduct on spatial input becomes a convolution; spatial input sizes become free")
    p.add_argument("--mean", metavar="BINARYPROTO", help="the mean image Caffe subtracts, for preprocess(), e.g. --mean imagenet_mean.binaryproto")
    p.add_argument("--inference", action="store_true", help="for deployment: BatchNorm and Scale folded into the convolution or InnerProduct before them, Dropout removed")
    p.add_argument("--solver", metavar="PROTOTXT", help="with --phase TRAIN: add compile_model() doing what this solver.prototxt and the net's loss layers do")
    p.add_argument("--native-groups", action="store_true", help="grouped convolution as Conv2D(groups=g) instead of one Conv2D per group")
    p.add_argument("--flat", action="store_true", help="one line per Keras layer: no functions for repeated units")
    p.add_argument("--stub-unknown", action="store_true", help="emit a stub layer class for each unsupported layer type instead of failing")
    p.add_argument("--ignore-unknown-fields", action="store_true", help="translate although fields are not in caffe2py's schema, with a warning for each")
    p.add_argument("--custom-layers", metavar="FILE.py", help="the module imports the classes of unsupported layers (and Python layers) from FILE.py beside it, instead of stubs")
    p.add_argument("--list-layers", action="store_true", help="print the supported Caffe layer types and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="print the layer-by-layer plan (Caffe layer -> Keras layers, shapes) to stderr")
    p.add_argument("--version", action="version", version=f"caffe2py {__version__}")
    return p


def _translate(args: argparse.Namespace, prototxt: str):
    from .convert import translate_with_options

    translation = translate_with_options(prototxt, args)
    for warning in translation.warnings:
        print(f"caffe2py: warning: {warning}", file=sys.stderr)
    if args.verbose:
        print("\n".join(translation.plan), file=sys.stderr)
    return translation


def _check_beside(custom_layers: str | None, module: Path) -> None:
    """The module imports --custom-layers by name, which finds the file only in the module's folder."""
    if custom_layers and Path(custom_layers).resolve().parent != module.resolve().parent:
        raise TranslationError(f"--custom-layers {custom_layers}: must be in the folder of the module {module}")


def run(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = parser()
    args = p.parse_args(argv)
    if args.list_layers:
        from .layers import supported_types

        print("\n".join(supported_types()))
        return 0
    if not args.prototxt:
        p.error("a prototxt is required")
    project = load_project_options(args.prototxt, p)

    def options_for(prototxt: str) -> argparse.Namespace:
        """Its pyproject.toml options, then the command line's, so that the command line wins."""
        extra = project.arguments_for(prototxt) if project else []
        return p.parse_args([*extra, *argv]) if extra else args

    if args.write or args.check:
        for flag, value in (("-o/--output", args.output), ("--weights", args.weights), ("--npz", args.npz)):
            if value:
                p.error(f"{flag} cannot be combined with --write/--check (each module goes beside its prototxt or in --out-dir)")
        return _sync(args, options_for)
    if len(args.prototxt) > 1:
        p.error("several prototxts need --write or --check")
    if args.out_dir:
        p.error("--out-dir goes with --write or --check; use -o for a single module")
    from .preprocess import mean_npy, mean_path
    from .render import render

    prototxt = args.prototxt[0]
    output = Path(args.output) if args.output else None
    if output is not None:
        _check_beside(options_for(prototxt).custom_layers, output)
    npz = Path(args.npz) if args.npz else (output.with_suffix(".npz") if output else None)
    if args.weights and npz is None:
        raise TranslationError("--weights with the module on stdout needs --npz PATH for the weights")
    translation = _translate(options_for(prototxt), prototxt)
    mean = mean_npy(translation)
    if mean is not None and output is None:
        # preprocess() loads the mean from the module's folder, which a module on stdout does not have.
        what = f"--mean {args.mean}" if args.mean else f"the data layer's mean_file {translation.preprocess['mean_source']}"
        raise TranslationError(f"{what}: the module's mean image is written beside it, so give -o MODULE.py (or --write)")
    npz_name = npz.name if npz else Path(prototxt).with_suffix(".npz").name
    # Converting weights takes one CPU; the module is rendered on another meanwhile.
    rendering = Forked(lambda: render(translation, npz_name)) if args.weights and _cpus() > 1 and hasattr(os, "fork") else None
    pending: list[tuple[Path, Path]] = []
    try:
        if mean is not None:
            target = mean_path(translation, output)
            pending.append((write_atomically(target, mean), target))
        if args.weights:
            from .weights import write_npz

            def fill(tmp: Path) -> None:
                write_npz(translation, args.weights, tmp, warn=lambda m: print(f"caffe2py: warning: {m}", file=sys.stderr), progress=_progress(args.weights))

            pending.append((write_atomically(npz, fill=fill), npz))
        source = (rendering.result() if rendering else render(translation, npz_name)).encode("utf-8")
        if output is not None:
            pending.append((write_atomically(output, source), output))
    except BaseException:
        if rendering:
            rendering.close()
        discard(pending)
        raise
    rename_into_place(pending)
    if output is None:
        sys.stdout.buffer.write(source)
        sys.stdout.flush()
    return 0


def _cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _sync(args: argparse.Namespace, options_for: Callable[[str], argparse.Namespace]) -> int:
    """--write/--check: the contract of a pre-commit fixer (1 when anything changed, 2 on any error)."""
    from .preprocess import mean_npy, mean_path
    from .render import render

    out_dir = Path(args.out_dir) if args.out_dir else None
    jobs = [(source, (out_dir or Path(source).parent) / Path(source).with_suffix(".py").name) for source in args.prototxt]
    claimed: dict[Path, str] = {}
    for source, module in jobs:
        _check_beside(options_for(source).custom_layers, module)
        # With --out-dir, a/deploy.prototxt and b/deploy.prototxt would overwrite each other's module.
        other = claimed.setdefault(module.resolve(), source)
        if other != source:
            raise TranslationError(f"{other} and {source} would both write {module}")
    if out_dir is not None and args.write:
        out_dir.mkdir(parents=True, exist_ok=True)
    changed = failed = False
    means: dict[Path, tuple[str, bytes]] = {}  # the mean .npy each written path gets, and from which prototxt
    for source, module in jobs:
        try:
            # The npz name the module's docstring mentions, as `caffe2py a.prototxt -o a.py` gives it.
            translation = _translate(options_for(source), source)
            new = render(translation, module.with_suffix(".npz").name).encode("utf-8")
            outputs = [(module, new)]
            mean = mean_npy(translation)
            if mean is not None:
                target = mean_path(translation, module)
                other = means.setdefault(target.resolve(), (source, mean))
                if other[1] != mean:
                    raise TranslationError(f"{other[0]} and {source} would both write {target}, with different means")
                outputs.append((target, mean))
            for path, data in outputs:
                old = path.read_bytes() if path.exists() else None
                if data == old:
                    continue
                changed = True
                if args.check:
                    if path == module:
                        _print_diff(module, old, data)
                    print(f"would {'rewrite' if old is not None else 'write'} {path}", file=sys.stderr)
                else:
                    rename_into_place([(write_atomically(path, data), path)])
                    print(f"{'rewrote' if old is not None else 'wrote'} {path}")
        except (TranslationError, OSError) as exc:
            _report(exc)
            failed = True
        gc.collect()  # this net's cyclic garbage (see _collector_paused)
    sys.stdout.flush()
    return 2 if failed else 1 if changed else 0


def _print_diff(module: Path, old: bytes | None, new: bytes) -> None:
    before = old.decode("utf-8", errors="replace").splitlines(keepends=True) if old is not None else []
    diff = difflib.unified_diff(
        before,
        new.decode("utf-8").splitlines(keepends=True),
        fromfile=str(module) if old is not None else "/dev/null",
        tofile=str(module),
    )
    for line in diff:
        # A file that lacks its final newline would run into the next diff line.
        sys.stdout.write(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")


def _progress(path: str):
    """A stderr progress line for large files, only when stderr is a terminal."""
    if not sys.stderr.isatty() or os.path.getsize(path) < 100 << 20:
        return None

    def report(done: int, total: int) -> None:
        end = "\n" if done >= total else ""
        print(f"\rcaffe2py: reading {Path(path).name}: {done * 100 // max(total, 1)}%", end=end, file=sys.stderr, flush=True)

    return report


def _verify(argv: list[str]) -> int:
    """``caffe2py verify ...``: imported only when asked for, since it needs Keras and OpenCV."""
    try:
        verify = importlib.import_module(f"{__package__}.verify")
    except ModuleNotFoundError as exc:
        if exc.name == f"{__package__}.verify":
            print("caffe2py: error: 'caffe2py verify' is not part of this installation of caffe2py", file=sys.stderr)
        else:
            print(f"caffe2py: error: 'caffe2py verify' needs the {exc.name} package: pip install 'caffe2py[verify]'", file=sys.stderr)
        return 2
    return verify.main(argv)


def _report(exc: Exception) -> None:
    if isinstance(exc, OSError):
        print(f"caffe2py: error: {exc.filename or ''}: {exc.strerror}", file=sys.stderr)
    else:
        print(f"caffe2py: error: {exc}", file=sys.stderr)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off until the command is done (as it was, after).

    A translation makes hundreds of thousands of small containers that their reference counts free;
    the collector, run every 700 of them, walks the live ones (the imported modules', the net's, black's
    tree) over and over: a tenth of a ResNet-152 translation's CPU. What it would free (3-4 MB of
    black's trees for ResNet-152 or DPN-68) is left to the end of the process, or, with --write, to
    a collection after each net.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["verify"]:
            return _verify(argv[1:])
        with _collector_paused():
            return run(argv)
    except (TranslationError, OSError) as exc:
        _report(exc)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
