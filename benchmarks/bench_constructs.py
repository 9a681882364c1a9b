"""What each generated construct costs at inference: rewritten copies of the generated module, timed against it.

usage: python benchmarks/bench_constructs.py [--batch N] [--rounds N] [--nets NAME,...] [--workdir DIR]

Each net is translated by the CLI with the random weights of its ../shared/oracle case. Variants
are made by rewriting the generated module's syntax tree (copies are written to --workdir, or a
temporary directory, for reading), each one an exact equivalent of the baseline:
  explicit-pad  Conv2D/DepthwiseConv2D(padding="same") -> ZeroPadding2D + a valid convolution, as the
                generated code had it before it folded Caffe's padding into "same" where that is exact
  relu-in-conv  Conv2D/Dense followed by ReLU -> activation="relu" on the Conv2D/Dense
  bn-folded     Conv2D/DepthwiseConv2D followed by BatchNormalization -> BN folded into kernel and bias
  lrn-tf        the LRN helper (across channels) -> tf.nn.local_response_normalization in a Lambda
  pool-zero     CaffePooling2D max reading a ReLU's output, floor mode -> ZeroPadding2D + MaxPooling2D
                (exact because a ReLU's output is never negative)
  native-groups the module generated with --native-groups (Conv2D(groups=g) instead of a Lambda split
                and one Conv2D per group)
Each variant's logits are checked against the baseline's, then all run interleaved (see
bench_inference.py) with keras.applications' model of the architecture where there is one.
"""

from __future__ import annotations

import argparse
import ast
import math
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench_inference import generate, load_module, race
from machine import CORPUS, describe, load, make_case, median

CHAIN = "x"  # the generated code's variable for a value only the next statement reads


@dataclass(frozen=True)
class Net:
    label: str
    prototxt: Path
    case: str
    logits: str  # the blob compared between variants (the last one before Softmax)
    variants: tuple[tuple[str, ...], ...]
    application: str | None = None


NETS = {
    "resnet50": Net(
        "ResNet-50", CORPUS / "resnet" / "ResNet-50-deploy.prototxt", "resnet50", "fc1000",
        (("explicit-pad",), ("bn-folded",)), "ResNet50",
    ),
    "vgg16": Net(
        "VGG16", CORPUS / "vgg16_v1" / "VGG_ILSVRC_16_layers_deploy.prototxt", "vgg16", "fc8",
        (("explicit-pad",), ("relu-in-conv",)), "VGG16",
    ),
    "mobilenet_v1": Net(
        "MobileNet v1", CORPUS / "mobilenet_v1" / "mobilenet_deploy.prototxt", "mobilenet_v1", "fc7",
        (("explicit-pad",), ("bn-folded",)), "MobileNet",
    ),
    "alexnet": Net(
        "AlexNet", CORPUS / "bvlc_alexnet" / "deploy.prototxt", "bvlc_alexnet", "fc8",
        (("native-groups",), ("lrn-tf",), ("native-groups", "lrn-tf"), ("native-groups", "lrn-tf", "relu-in-conv")),
    ),
    "resnext50": Net(
        "ResNeXt-50 32x4d", CORPUS / "resnext" / "deploy_resnext50-32x4d.prototxt", "resnext50", "classifier",
        (("native-groups",), ("pool-zero",), ("native-groups", "pool-zero"), ("explicit-pad",)),
    ),
}


# -- rewriting the generated build_model ------------------------------------------------------------
@dataclass
class Call:
    """One `target = callee(args...)(inputs)` statement of build_model."""

    stmt: ast.Assign
    target: str
    callee: str
    layer: ast.Call  # callee(args...)
    inputs: ast.expr

    @property
    def name(self) -> str:
        return next(k.value.value for k in self.layer.keywords if k.arg == "name")

    def kwarg(self, key: str):
        found = [k.value for k in self.layer.keywords if k.arg == key]
        return ast.literal_eval(found[0]) if found else None

    def set_kwarg(self, key: str, value) -> None:
        self.layer.keywords = [k for k in self.layer.keywords if k.arg != key]
        if value is not None:
            self.layer.keywords.insert(len(self.layer.keywords) - 1, ast.keyword(key, ast.Constant(value)))


def _as_call(stmt: ast.stmt) -> Call | None:
    if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
        return None
    outer = stmt.value
    if not (isinstance(outer, ast.Call) and isinstance(outer.func, ast.Call) and len(outer.args) == 1):
        return None
    return Call(stmt, stmt.targets[0].id, ast.unparse(outer.func.func), outer.func, outer.args[0])


def _int(node: ast.expr) -> int | None:
    return node.value if isinstance(node, ast.Constant) and type(node.value) is int else None


def _reads(call: Call, var: str) -> bool:
    return isinstance(call.inputs, ast.Name) and call.inputs.id == var


def _explicit_pad(body: list[ast.stmt], folded: list) -> list[ast.stmt]:
    out = []
    for stmt in body:
        conv = _as_call(stmt)
        if conv and conv.callee in ("layers.Conv2D", "layers.DepthwiseConv2D") and conv.kwarg("padding") == "same":
            kernel = ast.literal_eval(conv.layer.args[1 if conv.callee == "layers.Conv2D" else 0])
            dilation = conv.kwarg("dilation_rate") or 1
            kh, kw = kernel if isinstance(kernel, tuple) else (kernel, kernel)
            dh, dw = dilation if isinstance(dilation, tuple) else (dilation, dilation)
            pad = ((kh - 1) * dh // 2, (kw - 1) * dw // 2)
            conv.set_kwarg("padding", None)
            name = conv.name + "_pad"
            out.append(ast.parse(f"padded = layers.ZeroPadding2D({pad!r}, name={name!r})({ast.unparse(conv.inputs)})").body[0])
            conv.stmt.value.args[0] = ast.Name("padded")
        out.append(stmt)
    return out


def _fusable(first: Call | None, second: Call | None) -> bool:
    """``second`` reads ``first``'s value, which nothing else reads, so the two can become one layer."""
    return bool(first and second and _reads(second, first.target) and first.target in (CHAIN, second.target))


def _relu_in_conv(body: list[ast.stmt], folded: list) -> list[ast.stmt]:
    out = list(body)
    i = 0
    while i + 1 < len(out):
        conv, relu = _as_call(out[i]), _as_call(out[i + 1])
        if (
            conv and relu and conv.callee in ("layers.Conv2D", "layers.Dense")
            and relu.callee == "layers.ReLU" and [k.arg for k in relu.layer.keywords] == ["name"]
            and _fusable(conv, relu) and conv.kwarg("activation") is None
        ):
            conv.set_kwarg("activation", "relu")
            conv.stmt.targets = relu.stmt.targets
            del out[i + 1]
        i += 1
    return out


def _bn_folded(body: list[ast.stmt], folded: list) -> list[ast.stmt]:
    out = list(body)
    i = 0
    while i + 1 < len(out):
        conv, bn = _as_call(out[i]), _as_call(out[i + 1])
        if (
            conv and bn and conv.callee in ("layers.Conv2D", "layers.DepthwiseConv2D")
            and bn.callee in ("layers.BatchNormalization", "CaffeBatchNorm") and bn.kwarg("axis") in (None, -1, 3)
            and bn.kwarg("use_global_stats") is None
            and _fusable(conv, bn)
        ):
            conv.set_kwarg("use_bias", None)  # the folded BN brings a bias
            conv.stmt.targets = bn.stmt.targets
            folded.append((conv.name, bn.name))
            del out[i + 1]
        i += 1
    return out


LRN_TF = "layers.Lambda(lambda t: tf.nn.local_response_normalization(t, depth_radius={r}, bias={k!r}, alpha={a!r}, beta={b!r}))"


def _lrn_tf(body: list[ast.stmt], folded: list) -> list[ast.stmt]:
    for stmt in body:
        call = _as_call(stmt)
        if call and call.callee == "LRN" and not call.kwarg("within_channel"):
            n = call.kwarg("local_size") or 5
            alpha, beta, k = call.kwarg("alpha") or 1.0, call.kwarg("beta") or 0.75, call.kwarg("k") or 1.0
            # Caffe divides alpha by the window size; TensorFlow does not.
            text = LRN_TF.format(r=n // 2, k=float(k), a=alpha / n, b=beta)
            layer = ast.parse(text, mode="eval").body
            layer.keywords.append(ast.keyword("name", ast.Constant(call.name)))
            stmt.value.func = layer
    return body


def _pool_zero(body: list[ast.stmt], folded: list) -> list[ast.stmt]:
    out = list(body)
    producers: dict[str, Call] = {}
    i = 0
    while i < len(out):
        call = _as_call(out[i])
        if call and call.callee == "CaffePooling2D" and isinstance(call.inputs, ast.Name):
            source = producers.get(call.inputs.id)
            args = [ast.literal_eval(a) for a in call.layer.args]
            if source and source.callee == "layers.ReLU" and args[0] == "max" and call.kwarg("ceil_mode") is False:
                pad = call.kwarg("padding") or 0
                kwargs = {"strides": call.kwarg("strides") or 1, "name": call.name}
                pool = ast.parse(f"layers.MaxPooling2D({args[1]!r}, **{kwargs!r})", mode="eval").body
                call.stmt.value.func = pool
                padded = ast.parse(
                    f"{call.target} = layers.ZeroPadding2D({pad!r}, name={call.name + '_pad'!r})({call.inputs.id})"
                ).body[0]
                call.stmt.value.args[0] = ast.Name(call.target)
                out.insert(i, padded)
                i += 1
        if call:
            producers[call.target] = call
        i += 1
    return out


REWRITES: dict[str, Callable[[list[ast.stmt], list], list[ast.stmt]]] = {
    "explicit-pad": _explicit_pad,
    "relu-in-conv": _relu_in_conv,
    "bn-folded": _bn_folded,
    "lrn-tf": _lrn_tf,
    "pool-zero": _pool_zero,
}


def rewrite(source: str, names: tuple[str, ...]) -> tuple[str, list[tuple[str, str]]]:
    """The module with build_model rewritten, and the (conv, bn) layer pairs that bn-folded merged."""
    tree = ast.parse(source)
    build = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "build_model")
    folded: list[tuple[str, str]] = []
    for name in names:
        if name in REWRITES:
            build.body = REWRITES[name](build.body, folded)
    if "lrn-tf" in names:
        tree.body.insert(0, ast.parse("import tensorflow as tf").body[0])
    ast.fix_missing_locations(tree)
    return ast.unparse(tree), folded


def fold_weights(model, baseline, folded: list[tuple[str, str]]) -> None:
    """Copy the baseline's weights into ``model``, folding each BN into the convolution before it."""
    import numpy as np

    pairs = dict(folded)
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in pairs:
            layer.set_weights(baseline.get_layer(layer.name).get_weights())
            continue
        conv, bn = baseline.get_layer(layer.name), baseline.get_layer(pairs[layer.name])
        kernel = np.asarray(conv.kernel)
        bias = np.asarray(conv.bias) if conv.use_bias else 0.0
        gamma = np.asarray(bn.gamma) if bn.scale else 1.0
        beta = np.asarray(bn.beta) if bn.center else 0.0
        factor = gamma / np.sqrt(np.asarray(bn.moving_variance) + bn.epsilon)
        shift = beta - np.asarray(bn.moving_mean) * factor
        if kernel.shape[-1] == np.size(factor):
            new_kernel = kernel * factor
        else:  # DepthwiseConv2D (kh, kw, C, m): output c*m + j
            new_kernel = kernel * np.reshape(factor, kernel.shape[2:])
        layer.set_weights([new_kernel.astype(np.float32), (bias * factor + shift).astype(np.float32)])


# -- measuring ------------------------------------------------------------------------------------------
def _bench(net: Net, directory: Path, batch: int, rounds: int) -> list[tuple[str, list[float], float, int]]:
    """(variant, seconds per batch of each round, logits difference, Keras layers) for the baseline and each variant."""
    import keras
    import numpy as np

    case_dir = directory / net.case
    caffemodel = make_case(net.case, case_dir)
    sources = {}
    for native in {False} | {"native-groups" in v for v in net.variants}:
        path = case_dir / f"{net.case}{'_native_groups' if native else ''}.py"
        generate(net.prototxt, caffemodel, path, *(["--native-groups"] if native else []))
        sources[native] = path
    base_module = load_module(sources[False])
    baseline = base_module.build_model()
    base_module.load_weights(baseline, sources[False].with_suffix(".npz"))
    shape = base_module.INPUT_SHAPE
    x = np.random.default_rng(0).uniform(-1, 1, (batch, *shape)).astype(np.float32)

    def logits(model, module):
        return keras.Model(model.input, model.get_layer(module.BLOBS[net.logits][0]).output)(x, training=False)

    expected = np.asarray(logits(baseline, base_module))
    models = {"generated (baseline)": (baseline, 0.0)}
    for variant in net.variants:
        native = "native-groups" in variant
        text, folded = rewrite(sources[native].read_text(), variant)
        path = case_dir / f"{net.case}__{'+'.join(variant).replace('-', '_')}.py"
        path.write_text(text)
        module = load_module(path)
        model = module.build_model()
        if folded:
            fold_weights(model, baseline, folded)
        else:
            module.load_weights(model, sources[native].with_suffix(".npz"))
        got = np.asarray(logits(model, module))
        difference = float(np.abs(got - expected).max() / np.abs(expected).max())
        models[" + ".join(variant)] = (model, difference)
    if net.application:
        reference = getattr(keras.applications, net.application)(weights=None, input_shape=shape)
        models[f"keras.applications.{net.application}"] = (reference, float("nan"))
    runners = {label: (lambda m=m: m.predict_on_batch(x)) for label, (m, _) in models.items()}
    times = race(runners, rounds)
    return [(label, times[label], models[label][1], len(models[label][0].layers)) for label in models]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--nets", default=",".join(NETS), help=f"comma-separated, from {', '.join(NETS)}")
    parser.add_argument("--workdir", type=Path, help="where caffemodels and rewritten modules go (kept)")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    print(describe([f"TensorFlow {tf.__version__}", f"Keras {keras.__version__}"]))
    print(
        f"\nBatch {args.batch}, median seconds per batch over {args.rounds} interleaved rounds after 2 warm-up"
        f" calls (predict_on_batch). Logits difference: max |variant - baseline| / max |baseline|."
        f" Load average at start: {load()}.\n"
    )
    print("| net | variant | Keras layers | s / batch (median) | best | images/s | vs baseline (median) | (best) | logits difference |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="bench_constructs_") as scratch:
        directory = args.workdir or Path(scratch)
        for key in args.nets.split(","):
            net = NETS[key]
            rows = _bench(net, directory, args.batch, args.rounds)
            keras.backend.clear_session()
            base = rows[0][1]
            for label, times, difference, count in rows:
                shown = "" if math.isnan(difference) else f"{difference:.1e}"  # NaN: another model
                seconds = median(times)
                print(
                    f"| {net.label} | {label} | {count} | {seconds:.3f} | {min(times):.3f} | {args.batch / seconds:.1f} |"
                    f" {median(base) / seconds:.2f}x | {min(base) / min(times):.2f}x | {shown} |",
                    flush=True,
                )
    print(f"\nLoad average at end: {load()}.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
