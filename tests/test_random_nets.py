"""Random valid nets of the core layers: each translation builds and matches OpenCV's Caffe importer."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caffe2py.convert import translate_to_source
from tests.refnet import assert_close, caffemodel_bytes, keras_forward, load_module

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless<5 is the independent Caffe runtime")

# pick(lo, hi) -> an int in [lo, hi]: random.Random.randint for the script, a Hypothesis draw here.
Pick = Callable[[int, int], int]


@dataclass
class RandomNet:
    """A Caffe net grown one random layer at a time, every parameter within Caffe's rules."""

    pick: Pick
    rng: np.random.Generator
    lines: list[str] = field(default_factory=list)
    weights: list[tuple[str, str, list[np.ndarray]]] = field(default_factory=list)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # blob -> Caffe shape
    writer: dict[str, str] = field(default_factory=dict)  # blob -> the layer that wrote it last
    read: set[str] = field(default_factory=set)
    count: int = 0
    native_groups: bool = False  # the translator option for grouped convolutions
    # (top, bottoms, function of the bottoms' values): Caffe's forward pass, restated in NumPy
    steps: list[tuple[str, list[str], Callable]] = field(default_factory=list)

    def choice(self, options):
        return options[self.pick(0, len(options) - 1)]

    def chance(self, percent: int) -> bool:
        return self.pick(1, 100) <= percent

    def normal(self, *shape: int, scale: float = 0.5) -> np.ndarray:
        return (self.rng.normal(0.0, scale, size=shape)).astype(np.float32)

    # -- growing the net ----------------------------------------------------------------------
    def layer(self, kind, bottoms, shape, params="", blobs=(), top=None, compute=lambda x: x) -> str:
        """Append a layer; its top is a new blob named after the layer unless ``top`` (in place).

        ``compute`` is the layer's forward pass in NumPy, on its bottoms' values.
        """
        self.count += 1
        name = f"{kind.lower()}{self.count}"
        top = top or name
        links = " ".join([*(f'bottom: "{b}"' for b in bottoms), f'top: "{top}"'])
        self.lines.append(f'layer {{ name: "{name}" type: "{kind}" {links} {params} }}')
        if blobs:
            self.weights.append((name, kind, list(blobs)))
        self.read.update(bottoms)
        self.read.discard(top)  # in place: the new value is not read yet
        self.shapes[top] = shape
        self.writer[top] = name
        self.steps.append((top, list(bottoms), compute))
        return top

    def blobs(self, rank: int | None = None) -> list[str]:
        return [b for b, s in self.shapes.items() if rank is None or len(s) == rank]

    def outputs(self) -> list[str]:
        """Blobs whose last value no layer reads: Caffe's net outputs."""
        return [b for b in self.shapes if b not in self.read]

    def prototxt(self) -> str:
        head = 'input: "data"\ninput_shape { ' + " ".join(f"dim: {d}" for d in self.shapes["data"]) + " }\n"
        return head + "\n".join(self.lines) + "\n"

    # -- one method per layer type; each returns None when no blob suits it -----------------------
    def convolution(self) -> str | None:
        x = self.choice(self.blobs(4))
        n, c, h, w = self.shapes[x]
        groups = self.choice([g for g in (1, 2, 3, c) if c % g == 0])
        out = groups * self.pick(1, max(1, 6 // groups))
        kernel = [self.pick(1, 4), self.pick(1, 4)]
        stride = [self.pick(1, 3), self.pick(1, 3)]
        pad = [self.pick(0, 2), self.pick(0, 2)]
        dilation = self.pick(1, 2)
        size = [(d + 2 * p - (dilation * (k - 1) + 1)) // s + 1 for d, k, s, p in zip((h, w), kernel, stride, pad)]
        if min(size) < 1:
            return None
        if any(o == 1 and s > 1 for o, s in zip(size, stride)):
            # TensorFlow's oneDNN convolution gets a stride over a single output row or column
            # wrong (garbage values; right with TF_ENABLE_ONEDNN_OPTS=0): not the translation's doing.
            return None
        if kernel[0] == kernel[1] and stride[0] == stride[1] and pad[0] == pad[1] and self.chance(60):
            geometry = f"kernel_size: {kernel[0]} stride: {stride[0]} pad: {pad[0]}"
        else:  # rectangular: Caffe's _h/_w fields
            geometry = " ".join(
                f"{f}_h: {a} {f}_w: {b}" for f, (a, b) in (("kernel", kernel), ("stride", stride), ("pad", pad))
            )
        bias = self.chance(70)
        params = (
            f"convolution_param {{ num_output: {out} group: {groups} {geometry} dilation: {dilation}"
            f"{'' if bias else ' bias_term: false'} }}"
        )
        blobs = [self.normal(out, c // groups, *kernel)] + ([self.normal(out)] if bias else [])

        def compute(v):
            return _conv(v, blobs, stride, pad, dilation, groups)

        return self.layer("Convolution", [x], (n, out, *size), params, blobs, compute=compute)

    def pooling(self) -> str | None:
        x = self.choice(self.blobs(4))
        n, c, h, w = self.shapes[x]
        method = self.choice(["MAX", "AVE"])
        if self.chance(15):
            reduce = np.max if method == "MAX" else np.mean
            params = f"pooling_param {{ pool: {method} global_pooling: true }}"
            return self.layer(
                "Pooling", [x], (n, c, 1, 1), params, compute=lambda v: reduce(v, axis=(2, 3), keepdims=True)
            )
        k, s = self.pick(1, 4), self.pick(1, 3)
        p = self.pick(0, k - 1)
        ceil = self.chance(60)
        if min(h, w) + 2 * p < k:
            return None
        size = [_pool_out(d, k, s, p, ceil) for d in (h, w)]
        if method == "AVE" and p == 0 and any((o - 1) * s >= d for o, d in zip(size, (h, w))):
            return None  # a last window wholly outside the input: see test_empty_average_pooling_window
        rounding = "" if ceil else " ceil_mode: false"
        params = f"pooling_param {{ pool: {method} kernel_size: {k} stride: {s} pad: {p}{rounding} }}"
        return self.layer("Pooling", [x], (n, c, *size), params, compute=lambda v: _pool(v, method, k, s, p, size))

    def inner_product(self) -> str | None:
        x = self.choice(self.blobs())
        shape = self.shapes[x]
        out, bias = self.pick(1, 8), self.chance(70)
        blobs = [self.normal(out, int(np.prod(shape[1:])))] + ([self.normal(out)] if bias else [])
        params = f"inner_product_param {{ num_output: {out}{'' if bias else ' bias_term: false'} }}"
        return self.layer("InnerProduct", [x], (shape[0], out), params, blobs, compute=lambda v: _dense(v, blobs))

    def relu(self) -> str | None:
        x = self.choice(self.blobs())
        # Negative slopes are legal Caffe too: see test_negative_relu_slope.
        slope = self.choice(["", "relu_param { negative_slope: 0.1 }", "relu_param { negative_slope: 2.5 }"])
        a = float(slope.split(": ")[1].split()[0]) if slope else 0.0
        compute = lambda v: np.where(v > 0, v, a * v)
        return self.layer("ReLU", [x], self.shapes[x], slope, top=self._in_place(x), compute=compute)

    def lrn(self) -> str | None:
        x = self.choice(self.blobs(4))
        region = self.choice(["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
        size = self.choice([1, 3, 5])
        alpha, beta = self.choice([1e-4, 0.5, 2.0]), self.choice([0.75, 0.5, 1.0])
        # k stays 1: OpenCV ignores it.
        params = f"lrn_param {{ local_size: {size} alpha: {alpha} beta: {beta} norm_region: {region} }}"
        compute = lambda v: _lrn(v, size, alpha, beta, region == "WITHIN_CHANNEL")
        return self.layer("LRN", [x], self.shapes[x], params, compute=compute)

    def concat(self) -> str | None:
        x = self.choice(self.blobs())
        shape = self.shapes[x]
        axis = self.choice([a for a in range(1, len(shape))])
        fits = [b for b in self.blobs(len(shape)) if _same_except(self.shapes[b], shape, axis)]
        bottoms = [x] + [self.choice(fits) for _ in range(self.pick(1, 2))]
        total = sum(self.shapes[b][axis] for b in bottoms)
        out = tuple(total if i == axis else d for i, d in enumerate(shape))
        params = "" if axis == 1 else f"concat_param {{ axis: {axis} }}"
        return self.layer("Concat", bottoms, out, params, compute=lambda *vs: np.concatenate(vs, axis))

    def eltwise(self) -> str | None:
        x = self.choice(self.blobs())
        same = [b for b in self.blobs() if self.shapes[b] == self.shapes[x] and b != x]
        if not same:
            return None
        bottoms = [x] + [self.choice(same) for _ in range(self.pick(1, 2))]
        operation = self.choice(["SUM", "PROD", "MAX"])
        params = f"eltwise_param {{ operation: {operation}"
        coeffs = [1.0] * len(bottoms)
        if operation == "SUM" and self.chance(50):
            coeffs = [self.choice([-1.5, 0.5, 2.0, 1.0]) for _ in bottoms]
            params += "".join(f" coeff: {c}" for c in coeffs)

        def compute(*vs):
            if operation == "SUM":
                return sum(c * v for c, v in zip(coeffs, vs))
            return np.prod(vs, axis=0) if operation == "PROD" else np.max(vs, axis=0)

        return self.layer("Eltwise", bottoms, self.shapes[x], params + " }", compute=compute)

    def softmax(self) -> str | None:
        x = self.choice(self.blobs())
        axis = self.pick(1, len(self.shapes[x]) - 1)
        params = "" if axis == 1 else f"softmax_param {{ axis: {axis} }}"
        return self.layer("Softmax", [x], self.shapes[x], params, compute=lambda v: _softmax(v, axis))

    def batch_norm(self) -> str | None:
        x = self.choice(self.blobs())
        c = self.shapes[x][1]
        factor = self.choice([1.0, 2.5])
        stats = [self.normal(c) * factor, (self.rng.uniform(0.5, 2.0, c) * factor).astype(np.float32)]
        eps = self.choice([1e-5, 1e-3])
        params = f"batch_norm_param {{ use_global_stats: true eps: {eps} }}"
        blobs = [*stats, np.array([factor], np.float32)]

        def compute(v):
            return (v - _channel(stats[0] / factor, v)) / np.sqrt(_channel(stats[1] / factor, v) + eps)

        y = self.layer("BatchNorm", [x], self.shapes[x], params, blobs, top=self._in_place(x), compute=compute)
        if self.chance(70):  # the usual Scale after it, which the translator fuses
            bias = self.chance(70)
            blobs = [self.normal(c)] + ([self.normal(c)] if bias else [])
            params = f"scale_param {{ bias_term: {'true' if bias else 'false'} }}"

            def scale(v, blobs=blobs):
                return v * _channel(blobs[0], v) + (_channel(blobs[1], v) if len(blobs) > 1 else 0)

            y = self.layer("Scale", [y], self.shapes[y], params, blobs, top=self._in_place(y), compute=scale)
        return y

    def flatten(self) -> str | None:
        x = self.choice(self.blobs(4))
        n, *rest = self.shapes[x]
        return self.layer("Flatten", [x], (n, int(np.prod(rest))), compute=lambda v: v.reshape(n, -1))

    def dropout(self) -> str | None:
        x = self.choice(self.blobs())
        ratio = self.choice([0.5, 0.25])
        return self.layer(
            "Dropout", [x], self.shapes[x], f"dropout_param {{ dropout_ratio: {ratio} }}", top=self._in_place(x)
        )

    def _in_place(self, x: str) -> str | None:
        # In place only over a blob no one else reads: Caffe would otherwise change what they see.
        return x if x != "data" and x not in self.read and self.chance(50) else None


KINDS = (
    RandomNet.convolution,
    RandomNet.pooling,
    RandomNet.inner_product,
    RandomNet.relu,
    RandomNet.lrn,
    RandomNet.concat,
    RandomNet.eltwise,
    RandomNet.softmax,
    RandomNet.batch_norm,
    RandomNet.flatten,
    RandomNet.dropout,
)


# --- Caffe's forward pass in NumPy (float64), for when Keras and OpenCV disagree ---------------


def _channel(vector: np.ndarray, like: np.ndarray) -> np.ndarray:
    """A per-channel vector shaped to broadcast along axis 1 of ``like``."""
    return vector.astype(np.float64).reshape((1, -1) + (1,) * (like.ndim - 2))


def _dense(x: np.ndarray, blobs) -> np.ndarray:
    y = x.reshape(x.shape[0], -1) @ blobs[0].astype(np.float64).T
    return y + blobs[1] if len(blobs) > 1 else y


def _conv(x, blobs, stride, pad, dilation, groups) -> np.ndarray:
    weight = blobs[0].astype(np.float64)
    out, _, kh, kw = weight.shape
    xp = np.pad(x, [(0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])])
    span_h, span_w = dilation * (kh - 1) + 1, dilation * (kw - 1) + 1
    oh, ow = (xp.shape[2] - span_h) // stride[0] + 1, (xp.shape[3] - span_w) // stride[1] + 1
    y = np.zeros((x.shape[0], out, oh, ow))
    cin, cout = x.shape[1] // groups, out // groups
    for i in range(oh):
        for j in range(ow):
            top, left = i * stride[0], j * stride[1]
            patch = xp[:, :, top : top + span_h : dilation, left : left + span_w : dilation]
            for g in range(groups):
                y[:, g * cout : (g + 1) * cout, i, j] = np.einsum(
                    "nchw,ochw->no", patch[:, g * cin : (g + 1) * cin], weight[g * cout : (g + 1) * cout]
                )
    return y + _channel(blobs[1], y) if len(blobs) > 1 else y


def _pool(x, method, k, s, p, size) -> np.ndarray:
    # Caffe's PoolingLayer loops: AVE divides by the window clipped to the padded input.
    n, c, h, w = x.shape
    y = np.zeros((n, c, *size))
    for i in range(size[0]):
        for j in range(size[1]):
            hs, ws = i * s - p, j * s - p
            he, we = min(hs + k, h + p), min(ws + k, w + p)
            area = (he - hs) * (we - ws)
            window = x[:, :, max(hs, 0) : min(he, h), max(ws, 0) : min(we, w)]
            if method == "MAX":  # Caffe starts from -FLT_MAX, which an empty window keeps
                y[:, :, i, j] = window.max(axis=(2, 3), initial=-np.finfo(np.float32).max)
            else:  # area may be 0 (NaN) or negative (-0) for a window past the input, as in Caffe
                with np.errstate(invalid="ignore"):
                    y[:, :, i, j] = window.sum(axis=(2, 3)) / area
    return y


def _lrn(x, size, alpha, beta, within) -> np.ndarray:
    half, squares = size // 2, x**2
    if within:  # Caffe averages the zero-padded squares: the divisor is always size * size
        padded = np.pad(squares, [(0, 0), (0, 0), (half, half), (half, half)])
        total = sum(padded[:, :, i : i + x.shape[2], j : j + x.shape[3]] for i in range(size) for j in range(size))
        return x * (1 + alpha * total / size**2) ** -beta
    padded = np.pad(squares, [(0, 0), (half, half), (0, 0), (0, 0)])
    total = sum(padded[:, i : i + x.shape[1]] for i in range(size))
    return x * (1 + alpha / size * total) ** -beta


def _softmax(x, axis) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def caffe_forward(net: RandomNet, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every blob's last value, from the layers' NumPy restatements."""
    values = {"data": x.astype(np.float64)}
    for top, bottoms, compute in net.steps:
        values[top] = compute(*(values[b] for b in bottoms))
    return values


def _pool_out(size: int, k: int, s: int, p: int, ceil: bool) -> int:
    # Caffe's PoolingLayer::Reshape: round, then drop a last window that would start in the padding.
    span = size + 2 * p - k
    out = -(-span // s) + 1 if ceil else span // s + 1
    return out - 1 if p and (out - 1) * s >= size + p else out


def _same_except(a: tuple[int, ...], b: tuple[int, ...], axis: int) -> bool:
    return len(a) == len(b) and all(x == y for i, (x, y) in enumerate(zip(a, b)) if i != axis)


def random_net(pick: Pick, seed: int, max_layers: int = 7) -> RandomNet:
    """A random net over a small input: 1 to ``max_layers`` layers of the kinds in KINDS."""
    net = RandomNet(pick, np.random.default_rng(seed))
    net.shapes["data"] = (net.pick(1, 2), net.pick(1, 6), net.pick(3, 13), net.pick(3, 13))
    net.native_groups = net.chance(30)
    for _ in range(net.pick(1, max_layers)):
        # A kind with no suitable blob returns None; the next draw tries again.
        for _ in range(10):
            if net.choice(KINDS)(net) is not None:
                break
    # A flattened output may be in Keras' order (test_flattened_output_order): an InnerProduct
    # after every 2-D output compares those values in Caffe's order.
    for blob in [b for b in net.outputs() if len(net.shapes[b]) == 2]:
        out = net.pick(1, 4)
        weights = [net.normal(out, net.shapes[blob][1]), net.normal(out)]
        params = f"inner_product_param {{ num_output: {out} }}"
        compute = lambda v, w=weights: _dense(v, w)
        net.layer("InnerProduct", [blob], (net.shapes[blob][0], out), params, weights, compute=compute)
    return net


def opencv_outputs(net: RandomNet, x: np.ndarray) -> dict[str, np.ndarray]:
    """The net's outputs as OpenCV computes them, asked for by the layer that wrote each last."""
    cv_net = cv2.dnn.readNetFromCaffe(bytearray(net.prototxt().encode()), bytearray(caffemodel_bytes(net.weights)))
    cv_net.setInput(x, "data")
    names = net.outputs()
    values = cv_net.forward([net.writer[b] for b in names])
    return {b: np.asarray(v).reshape(net.shapes[b]) for b, v in zip(names, values)}


def check(net: RandomNet) -> list[str]:
    """Translate, build and run the net with Keras: every output within 1e-4 of OpenCV's and of
    Caffe's forward pass restated in NumPy.

    OpenCV has bugs of its own (BatchNorm after an Eltwise of 2-D blobs): where it alone departs
    from the NumPy restatement, the translation is held to the latter. Returns those outputs.
    """
    x = np.random.default_rng(len(net.lines)).normal(size=net.shapes["data"]).astype(np.float32)
    want = opencv_outputs(net, x)
    got = keras_forward(net.prototxt(), {"data": x}, net.weights, outputs=list(want), native_groups=net.native_groups)
    caffe = caffe_forward(net, x)
    opencv_wrong = []
    for blob, value in want.items():
        assert got[blob].shape == net.shapes[blob], f"{blob}: shape {got[blob].shape} != Caffe's {net.shapes[blob]}"
        assert_close(got[blob], caffe[blob])
        try:
            assert_close(got[blob], value)
        except AssertionError:
            opencv_wrong.append(blob)
    return opencv_wrong


@st.composite
def nets(draw) -> RandomNet:
    return random_net(lambda lo, hi: draw(st.integers(lo, hi)), draw(st.integers(0, 2**32 - 1)))


# 100 nets take about half a minute; scripts/fuzz_nets.py runs thousands.
EXAMPLES = int(os.environ.get("CAFFE2PY_RANDOM_NETS", "100"))


@pytest.mark.filterwarnings("ignore:You are using a softmax over axis")  # Caffe allows a softmax over 1 value
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(nets())
def test_random_nets_match_opencv(net):
    try:
        check(net)
    except Exception as exc:
        exc.add_note(f"the net:\n{net.prototxt()}")
        raise


def test_batchnorm_after_eltwise_of_flattened_blobs():
    # OpenCV departs from Caffe here; the translation matches Caffe's arithmetic.
    net = RandomNet(lambda lo, hi: lo, np.random.default_rng(0))
    net.shapes["data"] = (1, 2, 2, 3)
    flat = [net.layer("Flatten", ["data"], (1, 12), compute=lambda v: v.reshape(1, 12)) for _ in range(2)]
    total = net.layer("Eltwise", flat, (1, 12), "eltwise_param { operation: SUM }", compute=lambda a, b: a + b)
    mean, var = net.normal(12), net.rng.uniform(0.5, 2.0, 12).astype(np.float32)
    params = "batch_norm_param { use_global_stats: true }"
    blobs = [mean, var, np.ones(1, np.float32)]
    net.layer("BatchNorm", [total], (1, 12), params, blobs, compute=lambda v: (v - mean) / np.sqrt(var + 1e-5))
    assert check(net) == ["batchnorm4"]


def test_negative_relu_slope():
    net = RandomNet(lambda lo, hi: lo, np.random.default_rng(0))
    net.shapes["data"] = (1, 2, 3, 3)
    params = "relu_param { negative_slope: -0.5 }"
    net.layer("ReLU", ["data"], (1, 2, 3, 3), params, compute=lambda v: np.where(v > 0, v, -0.5 * v))
    check(net)  # every output as Caffe's, restated in NumPy


def test_flattened_output_order(tmp_path):
    net = RandomNet(lambda lo, hi: lo, np.random.default_rng(0))
    net.shapes["data"] = (1, 2, 2, 3)
    net.layer("ReLU", [net.layer("Flatten", ["data"], (1, 12))], (1, 12))
    x = np.arange(12, dtype=np.float32).reshape(1, 2, 2, 3)
    (tmp_path / "net.prototxt").write_text(net.prototxt())
    module = load_module(translate_to_source(tmp_path / "net.prototxt"))
    assert_close(np.asarray(module.build_model()(x.transpose(0, 2, 3, 1))), x.reshape(1, 12))


def _overhanging_pool(method: str, caffe) -> RandomNet:
    """Ceil mode over 5 columns, kernel 1, stride 3: the third window starts at 6, past the input."""
    net = RandomNet(lambda lo, hi: lo, np.random.default_rng(0))
    net.shapes["data"] = (1, 1, 1, 5)
    params = f"pooling_param {{ pool: {method} kernel_size: 1 stride: 3 }}"
    net.layer("Pooling", ["data"], (1, 1, 1, 3), params, compute=lambda v: np.concatenate([v[..., ::3], caffe], -1))
    return net


def test_empty_max_pooling_window():
    # Caffe's MAX starts from -FLT_MAX, which an empty window keeps; OpenCV gives 0 there.
    assert check(_overhanging_pool("MAX", np.full((1, 1, 1, 1), -np.finfo(np.float32).max))) == ["pooling1"]


def test_empty_average_pooling_window():
    # Caffe divides the empty sum by (hend - hstart) * (wend - wstart), -1 here: -0, never NaN.
    assert check(_overhanging_pool("AVE", np.zeros((1, 1, 1, 1)))) == []  # OpenCV agrees
