"""Two reductions where NumPy's own are slow, each to the bit what NumPy computes.

NumPy reduces a C-ordered array along its last axis one output element at a time: quick for long rows, but a
loss over a batch reduces the short class axis of many rows (a (1024, 16) array: ``x.max(axis=1)`` takes
about 50 µs on one core, ten times its arithmetic). :func:`max_last` reads the array transposed, so each step
of the reduction is one vectorised ``maximum`` of two rows. A maximum does not depend on the order it is
taken in, so the result is NumPy's to the bit.

:func:`sum_leading` sums over the leading axes (a bias's gradient: the rows of a (T*B, H) delta). NumPy adds
the rows one after another, out[j] = (..((x[0, j] + x[1, j]) + x[2, j]) + ..), but its iterator pays for
every row: summing a (1024, 16) array takes about 16 µs. ``np.einsum('ij->j')`` adds in that same order, a
row at a time, for a quarter of the cost, so its result is NumPy's to the bit (the tests check it on drawn
shapes). Other sums are left to NumPy: a BLAS product with ones would be faster still, but it adds in
another order, and the chapters' training runs that follow chaotic paths (chapter 5's exploding gradients,
chapter 9's memory task) end elsewhere when the last bits change.

Only float32 and float64 NumPy arrays take these paths (``max_last``: with a last axis of at most
:data:`SHORT` entries; ``sum_leading``: C-ordered, keeping at least two entries, where NumPy's iterator adds
down each column); others go to NumPy's own ``max`` and ``sum``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

SHORT = 256  # a last axis at most this long is reduced here


def _fast(a: Any) -> bool:
    return type(a) is np.ndarray and a.dtype.kind == "f" and a.dtype.itemsize >= 4 and a.size > 0


def max_last(a: Any, keepdims: bool = False) -> Any:
    """``a.max(axis=-1, keepdims=keepdims)`` (nan where a row holds a nan, as NumPy's)."""
    if not _fast(a) or a.ndim < 2 or a.shape[-1] > SHORT or a.shape[-1] == 0:
        return a.max(axis=-1, keepdims=keepdims)
    columns = np.ascontiguousarray(np.moveaxis(a, -1, 0))  # (C, ...): row k = entry k of every row of a
    out = columns.max(axis=0)
    return out[..., None] if keepdims else out


def sum_leading(a: Any, n: int) -> Any:
    """``a.sum(axis=tuple(range(n)))``: the sum over the first ``n`` axes."""
    kept = a.shape[n:]
    width = math.prod(kept)
    if not _fast(a) or n < 1 or width < 2 or not a.flags.c_contiguous:
        return a.sum(axis=tuple(range(n)))
    return np.einsum("ij->j", a.reshape(-1, width)).reshape(kept)
