"""Float literals: the shortest text that reads back as Caffe's float32, as numpy prints it, without numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from caffe2py.pysource import float_literal


def _numpy_float(value: float) -> str:
    """What float_literal gave when it used numpy: the shortest repr that reads back as the float32."""
    shortest = np.format_float_positional(np.float32(value), unique=True, trim="0")
    return repr(float(shortest))


def test_float_literals_are_numpys_shortest_float32():
    bits = np.random.default_rng(0).integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    values = [float(v) for v in bits.view(np.float32) if np.isfinite(v)]
    powers = [float(np.float32(2.0**k)) for k in range(-149, 128)]
    beside = [float(np.nextafter(np.float32(p), np.float32(d))) for p in powers for d in (0, np.inf)]
    common = [1e-5, 1e-4, 1e-3, 0.1, 0.5, 0.75, 1 / 3, 0.017, 255.0, 0.00390625, 1e-10, 0.0, -0.0, 1e-45]
    wrong = [v for v in values + powers + beside + common if math.isfinite(float(np.float32(v)))
             and float_literal(v) != _numpy_float(v)]
    assert not wrong, wrong[:5]


@pytest.mark.parametrize(("value", "text"), [(1e39, 'float("inf")'), (-1e39, '-float("inf")'), (math.nan, 'float("nan")')])
def test_float_literals_beyond_float32(value, text):
    assert float_literal(value) == text
