"""Every oracle case: the translated model computes what BVLC Caffe computed (../shared/oracle)."""

from __future__ import annotations

import json

import pytest

from tests import conformance

pytestmark = pytest.mark.skipif(
    not conformance.CASES.is_dir(), reason=f"no oracle cases at {conformance.CASES} (../shared is not beside this checkout)"
)

# Compared by tests/test_fully_conv.py: it needs --fully-conv and the weights of another case.
SEPARATE = {"caffenet_surgery"}


@pytest.mark.parametrize("case", [c for c in conformance.case_names() if c not in SEPARATE])
def test_case_matches_caffe(case):
    """In the default module and, where it is other text, the --flat one (one line per layer)."""
    result = conformance.run_case(case, flat=True)
    assert result.status != "unsupported", result.reason
    assert result.blobs > 0, "nothing was compared"
    assert result.status == "pass", "; ".join(result.failures)


@pytest.mark.parametrize("case", [c for c in conformance.case_names() if c not in SEPARATE])
def test_case_matches_caffe_in_the_inference_rendering(case):
    """--inference folds BatchNorm/Scale and drops Dropout; a net with neither translates as by default."""
    from caffe2py.convert import translate
    from caffe2py.errors import TranslationError
    from caffe2py.options import Options

    spec = json.loads((conformance.CASES / case / "case.json").read_text())
    net = conformance.SHARED / spec["prototxt"]
    try:
        folded = translate(net, options=Options(inference=True))
    except TranslationError as exc:
        pytest.skip(f"not translated in either rendering: {exc}")
    if not folded.folded:
        default = translate(net)
        assert (folded.statements, [w.key for w in folded.weights]) == (default.statements, [w.key for w in default.weights])
        return
    result = conformance.run_case(case, inference=True)
    assert result.blobs > 0, "nothing was compared"
    assert result.status == "pass", "; ".join(result.failures)
