"""CTCGreedyDecoder against a NumPy restatement of the CTC fork's CTCDecoderLayer::Forward_cpu and Decode."""

from __future__ import annotations

import numpy as np

from tests.refnet import assert_close, keras_forward


def _greedy_reference(probs, indicators, blank_index, merge_repeated):
    """Decode loop for loop; sequences (N, T, 1, 1) padded with -1 and scores (N, 1, 1, 1)."""
    steps, batch, classes = probs.shape
    blank = classes - 1 if blank_index < 0 else blank_index
    sequences = -np.ones((batch, steps, 1, 1), np.float32)
    scores = np.zeros((batch, 1, 1, 1), np.float32)
    for n in range(batch):
        previous, out, t = -1, [], 0
        while True:
            best = 0
            for c in range(1, classes):
                if probs[t, n, c] > probs[t, n, best]:
                    best = c
            scores[n] += -probs[t, n, best]
            if best != blank and not (merge_repeated and best == previous):
                out.append(best)
            previous = best
            if t + 1 == steps or indicators[t + 1, n] == 0:
                break
            t += 1
        sequences[n, : len(out), 0, 0] = out
    return sequences, scores


LABELS = np.array([[1, 1, 4, 1, 2, 2, 3], [4, 3, 3, 4, 4, 0, 0], [2, 2, 1, 0, 0, 3, 3]]).T  # (T, N)
INDICATORS = np.array([[0, 1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 0, 1, 1], [0, 0, 1, 1, 1, 1, 1]], np.float32).T


def _probs(seed):
    rng = np.random.default_rng(seed)
    probs = rng.uniform(size=(7, 3, 5)).astype(np.float32)
    np.put_along_axis(probs, LABELS[..., None], 1.5, axis=-1)
    return probs


def _net(param, tops):
    return (
        'input: "p" input_shape { dim: 7 dim: 3 dim: 5 }\ninput: "ind" input_shape { dim: 7 dim: 3 }\n'
        f'layer {{ name: "ctc" type: "CTCGreedyDecoder" bottom: "p" bottom: "ind" {tops} {param} }}\n'
    )


def test_ctc_greedy_decoder_defaults():
    """Blank is the last class; repeats merge; sequences end at their first zero indicator."""
    probs = _probs(40)
    got = keras_forward(_net("", 'top: "seq"'), {"p": probs, "ind": INDICATORS})["seq"]
    want, _ = _greedy_reference(probs, INDICATORS, -1, True)
    assert_close(got, want, rtol=0)
    assert want[:, :, 0, 0].tolist() == [[1, 1, 2, 3, -1, -1, -1], [3, -1, -1, -1, -1, -1, -1], [2, -1, -1, -1, -1, -1, -1]]


def test_ctc_greedy_decoder_blank_zero_no_merge_with_scores():
    probs = _probs(41)
    param = "ctc_decoder_param { blank_index: 0 ctc_merge_repeated: false }"
    got = keras_forward(_net(param, 'top: "seq" top: "score"'), {"p": probs, "ind": INDICATORS}, outputs=["seq", "score"])
    sequences, scores = _greedy_reference(probs, INDICATORS, 0, False)
    assert_close(got["seq"], sequences, rtol=0)
    assert_close(got["score"], scores, rtol=1e-6)


def test_ctc_greedy_decoder_in_compiled_predict():
    """The helper traces: predict (a compiled function) gives what the eager call gives."""
    import tempfile
    from pathlib import Path

    from caffe2py.convert import translate_to_source
    from tests.refnet import load_module

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "net.prototxt").write_text(_net("", 'top: "seq" top: "score"'))
        module = load_module(translate_to_source(Path(tmp) / "net.prototxt"))
    model = module.build_model()
    inputs = [_probs(42).transpose(0, 2, 1), INDICATORS]  # the model takes 3-D inputs channels last
    eager = [np.asarray(t) for t in model(inputs)]
    compiled = model.predict(inputs, verbose=0, batch_size=7)
    assert len(eager) == len(compiled) == 2
    for want, got in zip(eager, compiled):
        assert_close(got, want, rtol=1e-6)
