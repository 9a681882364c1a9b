"""Numeric tests of BVLC's recurrent layers (LSTM, RNN) against NumPy restatements of Caffe's unrolled nets."""

from __future__ import annotations

import numpy as np

from tests.refnet import assert_close, keras_forward


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _lstm_reference(x, cont, w_x, b, w_h, w_s=None, x_static=None, h0=None, c0=None):
    """LSTMLayer's unrolled net: gates = W_xc x_t + b_c (+ W_xc_static x_static) + W_hc (cont_t h_{t-1}),
    split i, f, o, g; LSTMUnit: c_t = cont_t f c_{t-1} + i g, h_t = o tanh(c_t)."""
    steps, streams = cont.shape
    hidden = w_h.shape[1]
    x = x.reshape(steps, streams, -1).astype(np.float64)
    h = np.zeros((streams, hidden)) if h0 is None else h0[0].astype(np.float64)
    c = np.zeros((streams, hidden)) if c0 is None else c0[0].astype(np.float64)
    static = 0 if w_s is None else x_static.reshape(streams, -1) @ w_s.T
    out = []
    for t in range(steps):
        k = cont[t][:, None]
        gates = x[t] @ w_x.T + b + static + (k * h) @ w_h.T
        i, f, o, g = (gates[:, j * hidden : (j + 1) * hidden] for j in range(4))
        c = k * _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        out.append(h)
    return np.stack(out).astype(np.float32), h[None].astype(np.float32), c[None].astype(np.float32)


def _rnn_reference(x, cont, w_x, b, w_h, w_o, b_o, w_s=None, x_static=None, h0=None):
    """RNNLayer's unrolled net: h_t = tanh(W_xh x_t + b_h (+ W_xh_static x_static) + W_hh (cont_t h_{t-1})),
    o_t = tanh(W_ho h_t + b_o)."""
    steps, streams = cont.shape
    x = x.reshape(steps, streams, -1).astype(np.float64)
    h = np.zeros((streams, w_h.shape[1])) if h0 is None else h0[0].astype(np.float64)
    static = 0 if w_s is None else x_static.reshape(streams, -1) @ w_s.T
    out = []
    for t in range(steps):
        h = np.tanh(x[t] @ w_x.T + b + static + (cont[t][:, None] * h) @ w_h.T)
        out.append(np.tanh(h @ w_o.T + b_o))
    return np.stack(out).astype(np.float32), h[None].astype(np.float32)


# Three streams: one sequence, one restarting at t = 3, one restarting at every other step.
CONT = np.array([[0, 0, 0], [1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 1], [1, 1, 0], [1, 1, 1]], np.float32)


def _inputs(rng, steps=7, streams=3):
    return {
        "x": rng.normal(size=(steps, streams, 4, 2)).astype(np.float32),  # flattened from axis 2, as Caffe
        "cont": CONT,
        "static": rng.normal(size=(streams, 3)).astype(np.float32),
        "h0": rng.normal(size=(1, streams, 5)).astype(np.float32),
        "c0": rng.normal(size=(1, streams, 5)).astype(np.float32),
    }


def _net(feed, body):
    text = ""
    for name, value in feed.items():
        text += f'input: "{name}"\ninput_shape {{ {" ".join(f"dim: {d}" for d in value.shape)} }}\n'
    return text + body


def test_lstm():
    rng = np.random.default_rng(15)
    feed = _inputs(rng)
    hidden, features = 5, 8

    def blobs(static):
        shapes = [(4 * hidden, features), (4 * hidden,)] + [(4 * hidden, 3)] * static + [(4 * hidden, hidden)]
        return [rng.normal(0, 0.5, size=s).astype(np.float32) for s in shapes]

    plain, with_static, exposed = blobs(False), blobs(True), blobs(False)
    body = (
        'layer { name: "plain" type: "LSTM" bottom: "x" bottom: "cont" top: "plain" recurrent_param { num_output: 5 } }\n'
        'layer { name: "with_static" type: "LSTM" bottom: "x" bottom: "cont" bottom: "static" top: "with_static" '
        "recurrent_param { num_output: 5 } }\n"
        'layer { name: "exposed" type: "LSTM" bottom: "x" bottom: "cont" bottom: "h0" bottom: "c0" '
        'top: "exposed" top: "h_t" top: "c_t" recurrent_param { num_output: 5 expose_hidden: true } }\n'
    )
    weights = [("plain", "LSTM", plain), ("with_static", "LSTM", with_static), ("exposed", "LSTM", exposed)]
    names = ["plain", "with_static", "exposed", "h_t", "c_t"]
    got = keras_forward(_net(feed, body), feed, weights, outputs=names)
    x, cont = feed["x"], feed["cont"]
    assert_close(got["plain"], _lstm_reference(x, cont, *plain)[0])
    w_x, b, w_s, w_h = with_static
    assert_close(got["with_static"], _lstm_reference(x, cont, w_x, b, w_h, w_s, feed["static"])[0])
    seq, h_t, c_t = _lstm_reference(x, cont, *exposed, h0=feed["h0"], c0=feed["c0"])
    assert_close(got["exposed"], seq)
    assert_close(got["h_t"], h_t)
    assert_close(got["c_t"], c_t)
    # The restarts matter: the same weights on one unbroken sequence per stream differ.
    assert not np.allclose(_lstm_reference(x, np.ones_like(cont), *plain)[0], got["plain"], atol=1e-3)


def test_rnn():
    rng = np.random.default_rng(16)
    feed = _inputs(rng)
    hidden, features = 5, 8

    def blobs(static):
        shapes = [(hidden, features), (hidden,)] + [(hidden, 3)] * static + [(hidden, hidden), (hidden, hidden), (hidden,)]
        return [rng.normal(0, 0.5, size=s).astype(np.float32) for s in shapes]

    plain, with_static, exposed = blobs(False), blobs(True), blobs(False)
    body = (
        'layer { name: "plain" type: "RNN" bottom: "x" bottom: "cont" top: "plain" recurrent_param { num_output: 5 } }\n'
        'layer { name: "with_static" type: "RNN" bottom: "x" bottom: "cont" bottom: "static" top: "with_static" '
        "recurrent_param { num_output: 5 } }\n"
        'layer { name: "exposed" type: "RNN" bottom: "x" bottom: "cont" bottom: "h0" '
        'top: "exposed" top: "h_t" recurrent_param { num_output: 5 expose_hidden: true } }\n'
    )
    feed = {k: v for k, v in feed.items() if k != "c0"}
    weights = [("plain", "RNN", plain), ("with_static", "RNN", with_static), ("exposed", "RNN", exposed)]
    names = ["plain", "with_static", "exposed", "h_t"]
    got = keras_forward(_net(feed, body), feed, weights, outputs=names)
    x, cont = feed["x"], feed["cont"]
    assert_close(got["plain"], _rnn_reference(x, cont, *plain)[0])
    w_x, b, w_s, w_h, w_o, b_o = with_static
    assert_close(got["with_static"], _rnn_reference(x, cont, w_x, b, w_h, w_o, b_o, w_s, feed["static"])[0])
    seq, h_t = _rnn_reference(x, cont, *exposed, h0=feed["h0"])
    assert_close(got["exposed"], seq)
    assert_close(got["h_t"], h_t)


def test_ocr_lstm_reverse_transpose():
    """CTPN's bidirectional pattern: Lstm, and Reverse -> Lstm -> Reverse; Transpose keeping or moving axis 0."""
    rng = np.random.default_rng(17)
    x = rng.normal(size=(6, 3, 4)).astype(np.float32)  # T x N x I
    hidden = 5
    fwd, bwd = ([rng.normal(0, 0.5, size=s).astype(np.float32) for s in ((4 * hidden, 4), (4 * hidden, hidden), (4 * hidden,))]
                for _ in range(2))
    body = (
        'layer { name: "fwd" type: "Lstm" bottom: "x" top: "fwd" lstm_param { num_output: 5 } }\n'
        'layer { name: "rev_in" type: "Reverse" bottom: "x" top: "rev_in" reverse_param { axis: 0 } }\n'
        'layer { name: "bwd" type: "Lstm" bottom: "rev_in" top: "bwd_out" lstm_param { num_output: 5 } }\n'
        'layer { name: "rev_out" type: "Reverse" bottom: "bwd_out" top: "bwd" reverse_param { axis: 0 } }\n'
        'layer { name: "t021" type: "Transpose" bottom: "fwd" top: "t021" transpose_param { dim: 0 dim: 2 dim: 1 } }\n'
        'layer { name: "t102" type: "Transpose" bottom: "bwd" top: "t102" transpose_param { dim: 1 dim: 0 dim: 2 } }\n'
        'layer { name: "rev2" type: "Reverse" bottom: "t102" top: "rev2" reverse_param { axis: 2 } }\n'
        'layer { name: "only" type: "Lstm" bottom: "y" top: "only" lstm_param { num_output: 5 } }\n'
    )
    weights = [("fwd", "Lstm", fwd), ("bwd", "Lstm", bwd), ("only", "Lstm", fwd)]
    names = ["fwd", "bwd", "t021", "t102", "rev2", "only"]
    # y is read only by an Lstm, so its streams are the Keras batch axis; x is also reversed, so time is.
    got = keras_forward(_net({"x": x, "y": x}, body), {"x": x, "y": x}, weights, outputs=names)
    # junhyukoh's LstmLayer without a clip bottom: zero state, f and h dropped at t = 0 (cont 0, then 1).
    cont = (np.arange(6) > 0).astype(np.float32)[:, None].repeat(3, axis=1)
    w_i, w_h, b = fwd
    want_fwd = _lstm_reference(x, cont, w_i, b, w_h)[0]
    w_i, w_h, b = bwd
    want_bwd = _lstm_reference(x[::-1], cont, w_i, b, w_h)[0][::-1]
    assert_close(got["fwd"], want_fwd)
    assert_close(got["only"], want_fwd)
    assert_close(got["bwd"], want_bwd)
    assert_close(got["t021"], want_fwd.transpose(0, 2, 1))
    assert_close(got["t102"], want_bwd.transpose(1, 0, 2))
    assert_close(got["rev2"], want_bwd.transpose(1, 0, 2)[:, :, ::-1])
