"""Sums and maxima along the axes where NumPy's own reductions are slow.

NumPy reduces a C-ordered array one output element at a time along the last axis, and row
by row along the first: both are quick for long axes, but a loss over a batch reduces the
short class axis of many rows (a (1024, 16) array: ``x.max(axis=1)`` takes about 50 µs on
one core, ten times its arithmetic), and a bias gradient sums many rows. Here the sums are
matrix-vector products with a vector of ones (BLAS, in the array's dtype, as fast as a
copy), and the maximum over a short last axis reads the array transposed, so each step of
the reduction is one vectorised ``maximum`` of two rows.

The results are those of ``a.sum`` and ``a.max`` up to the order of additions: BLAS adds in
blocks, NumPy pairwise along a contiguous axis; both err by a few units in the last place for
the lengths these are used on (a sum over a last axis longer than :data:`SHORT` goes to
NumPy). Integer, boolean and CuPy arrays go to their own ``sum``/``max`` unchanged.
"""
from __future__ import annotations

from typing import Any

import numpy as np

SHORT = 256  # a last axis at most this long is reduced here; a longer one by NumPy (pairwise, exact enough)


def _by_blas(a: Any) -> bool:
    return type(a) is np.ndarray and a.dtype.kind == "f" and a.dtype.itemsize >= 4 and a.size > 0


def sum_leading(a: Any, n: int) -> Any:
    """``a.sum(axis=tuple(range(n)))``: the sum over the first ``n`` axes (a bias's gradient over a batch)."""
    if not _by_blas(a) or n == 0 or a.ndim == n:
        return a.sum(axis=tuple(range(n)))
    rest = a.shape[n:]
    rows = a.reshape(-1, int(np.prod(rest)))
    return (np.ones(rows.shape[0], dtype=a.dtype) @ rows).reshape(rest)


def sum_last(a: Any, keepdims: bool = False) -> Any:
    """``a.sum(axis=-1, keepdims=keepdims)``."""
    if not _by_blas(a) or a.ndim < 2 or a.shape[-1] > SHORT:
        return a.sum(axis=-1, keepdims=keepdims)
    out = a @ np.ones(a.shape[-1], dtype=a.dtype)
    return out[..., None] if keepdims else out


def max_last(a: Any, keepdims: bool = False) -> Any:
    """``a.max(axis=-1, keepdims=keepdims)`` (nan where a row holds a nan, as NumPy's)."""
    if not _by_blas(a) or a.ndim < 2 or a.shape[-1] > SHORT or a.shape[-1] == 0:
        return a.max(axis=-1, keepdims=keepdims)
    columns = np.ascontiguousarray(np.moveaxis(a, -1, 0))  # (C, ...): row k = entry k of every row of a
    out = columns.max(axis=0)
    return out[..., None] if keepdims else out
