"""Every oracle case: the translated model computes what BVLC Caffe computed (../shared/oracle)."""

from __future__ import annotations

import pytest

from tests import conformance

pytestmark = pytest.mark.skipif(
    not conformance.CASES.is_dir(), reason=f"no oracle cases at {conformance.CASES} (../shared is not beside this checkout)"
)

# Compared by tests/test_fully_conv.py: it needs --fully-conv and the weights of another case.
SEPARATE = {"caffenet_surgery"}


@pytest.mark.parametrize("case", [c for c in conformance.case_names() if c not in SEPARATE])
def test_case_matches_caffe(case):
    result = conformance.run_case(case)
    assert result.status != "unsupported", result.reason
    assert result.blobs > 0, "nothing was compared"
    assert result.status == "pass", "; ".join(result.failures)
