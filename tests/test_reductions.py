"""The fast reductions (tinygrad_birnn.reductions) against NumPy's own, on drawn shapes, dtypes and values."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygrad_birnn.reductions import SHORT, max_last, sum_last, sum_leading

DTYPES = [np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_]
shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)


def _values(dtype, extreme):
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return st.booleans()
    if dtype.kind in "iu":
        return st.integers(-1000, 1000)
    width = 16 if dtype == np.float16 else 32 if dtype == np.float32 else 64
    if extreme:
        return st.floats(allow_nan=True, allow_infinity=True, width=width)
    return st.floats(-1e3, 1e3, width=width)


def _close(got, want, magnitude):
    """Equal in shape and dtype; values equal up to the order of additions: |got - want| within a few
    units of the last place of ``magnitude`` (the sum of the absolute values), non-finite ones alike."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype
    if want.dtype.kind != "f":
        np.testing.assert_array_equal(got, want)
        return
    finite = np.isfinite(want) & np.isfinite(magnitude)
    np.testing.assert_array_equal(got[~finite], want[~finite])
    bound = 8 * np.finfo(want.dtype).eps * magnitude[finite]
    assert np.all(np.abs(got[finite].astype(np.float64) - want[finite]) <= bound)


@given(data=st.data(), shape=shapes, dtype=st.sampled_from(DTYPES), extreme=st.booleans())
def test_sum_leading_equals_numpy(data, shape, dtype, extreme):
    a = data.draw(hnp.arrays(dtype, shape, elements=_values(dtype, extreme)))
    n = data.draw(st.integers(0, len(shape)))
    axes = tuple(range(n))
    with np.errstate(all="ignore"):
        _close(sum_leading(a, n), a.sum(axis=axes), np.abs(a.astype(np.float64)).sum(axis=axes))


@given(data=st.data(), shape=shapes.filter(len), dtype=st.sampled_from(DTYPES), extreme=st.booleans(),
       keepdims=st.booleans())
def test_sum_last_and_max_last_equal_numpy(data, shape, dtype, extreme, keepdims):
    a = data.draw(hnp.arrays(dtype, shape, elements=_values(dtype, extreme)))
    with np.errstate(all="ignore"):
        _close(sum_last(a, keepdims), a.sum(axis=-1, keepdims=keepdims),
               np.abs(a.astype(np.float64)).sum(axis=-1, keepdims=keepdims))
        if shape[-1] == 0:  # NumPy has no maximum of nothing: the same error, not a made-up value
            with pytest.raises(ValueError):
                max_last(a, keepdims)
        else:
            np.testing.assert_array_equal(max_last(a, keepdims), a.max(axis=-1, keepdims=keepdims))


def test_the_fast_paths_are_taken_and_exact_on_integers_held_as_floats():
    rows = np.arange(4096 * 16, dtype=np.float32).reshape(4096, 16) % 7
    np.testing.assert_array_equal(sum_leading(rows, 1), rows.sum(axis=0))
    np.testing.assert_array_equal(sum_last(rows), rows.sum(axis=1))
    np.testing.assert_array_equal(max_last(rows, keepdims=True), rows.max(axis=1, keepdims=True))
    long_rows = np.ones((3, SHORT + 1), dtype=np.float32)  # a long last axis: NumPy's pairwise sum
    np.testing.assert_array_equal(sum_last(long_rows), np.full(3, SHORT + 1, dtype=np.float32))


def test_views_and_non_contiguous_inputs():
    a = np.random.default_rng(0).standard_normal((6, 5, 8))[:, ::2, 1::3]
    np.testing.assert_allclose(sum_leading(a, 2), a.sum(axis=(0, 1)), rtol=1e-12)
    np.testing.assert_allclose(sum_last(a, True), a.sum(axis=-1, keepdims=True), rtol=1e-12)
    np.testing.assert_array_equal(max_last(a), a.max(axis=-1))
