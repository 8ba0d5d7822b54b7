"""The fast reductions of tinygrad_birnn.reductions against NumPy's own, to the bit."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygrad_birnn.reductions import SHORT, max_last, sum_leading

DTYPES = [np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_]
shapes = hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6)


def _values(dtype, extreme):
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return st.booleans()
    if dtype.kind in "iu":
        return st.integers(-1000, 1000)
    width = {2: 16, 4: 32, 8: 64}[dtype.itemsize]
    if extreme:
        return st.floats(allow_nan=True, allow_infinity=True, width=width)
    return st.floats(-1e3, 1e3, width=width)


@given(data=st.data(), shape=shapes, dtype=st.sampled_from(DTYPES), extreme=st.booleans(),
       keepdims=st.booleans())
def test_max_last_equals_numpy(data, shape, dtype, extreme, keepdims):
    a = data.draw(hnp.arrays(dtype, shape, elements=_values(dtype, extreme)))
    if shape[-1] == 0:  # NumPy has no maximum of nothing: the same error, not a made-up value
        with pytest.raises(ValueError):
            max_last(a, keepdims)
        return
    got, want = max_last(a, keepdims), a.max(axis=-1, keepdims=keepdims)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_the_fast_path_on_many_rows_views_and_long_rows():
    rows = np.random.default_rng(0).standard_normal((4096, 16)).astype(np.float32)
    np.testing.assert_array_equal(max_last(rows, keepdims=True), rows.max(axis=1, keepdims=True))
    view = np.random.default_rng(1).standard_normal((6, 5, 8))[:, ::2, 1::3]
    np.testing.assert_array_equal(max_last(view), view.max(axis=-1))
    long_rows = np.random.default_rng(2).standard_normal((3, SHORT + 1))
    np.testing.assert_array_equal(max_last(long_rows), long_rows.max(axis=-1))


def _same_bits(got, want):
    """Equal to the bit (so -0.0 differs from 0.0), any nan matching any nan."""
    assert got.shape == want.shape and got.dtype == want.dtype
    nan = np.isnan(want) if want.dtype.kind == "f" else np.zeros(want.shape, bool)
    np.testing.assert_array_equal(np.isnan(got) if got.dtype.kind == "f" else nan, nan)
    assert got[~nan].tobytes() == want[~nan].tobytes()


@given(data=st.data(), shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=40),
       dtype=st.sampled_from(DTYPES), extreme=st.booleans())
def test_sum_leading_equals_numpy_to_the_bit(data, shape, dtype, extreme):
    a = data.draw(hnp.arrays(dtype, shape, elements=_values(dtype, extreme)))
    n = data.draw(st.integers(1, len(shape)))
    with np.errstate(all="ignore"):
        _same_bits(sum_leading(a, n), a.sum(axis=tuple(range(n))))


@pytest.mark.parametrize("shape, n", [((1024, 16), 1), ((1024, 64), 1), ((32, 32, 16), 2), ((4096, 2), 1),
                                      ((8, 7, 3, 5), 2), ((1000, 1), 1), ((5, 0, 3), 1), ((0, 4), 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sum_leading_on_gradient_shapes(shape, n, dtype):
    rng = np.random.default_rng(sum(shape))
    a = (rng.standard_normal(shape) * rng.uniform(1e-3, 1e3, size=shape[:1] + (1,) * (len(shape) - 1)))
    _same_bits(sum_leading(a.astype(dtype), n), a.astype(dtype).sum(axis=tuple(range(n))))
    view = a.astype(dtype)[::-1]  # not C-ordered: NumPy's own sum
    _same_bits(sum_leading(view, n), view.sum(axis=tuple(range(n))))
