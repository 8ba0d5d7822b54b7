"""The maximum over a short last axis, where NumPy's own reduction is slow.

NumPy reduces a C-ordered array along its last axis one output element at a time: quick for long rows, but a
loss over a batch reduces the short class axis of many rows (a (1024, 16) array: ``x.max(axis=1)`` takes
about 50 µs on one core, ten times its arithmetic). :func:`max_last` reads the array transposed, so each step
of the reduction is one vectorised ``maximum`` of two rows. A maximum does not depend on the order it is
taken in, so the result is NumPy's to the bit. (Sums are left to NumPy: a BLAS product with ones would be as
fast, but it adds in another order, and the chapters' training runs that follow chaotic paths, chapter 5's
exploding gradients, chapter 9's memory task, end elsewhere when the last bits change.)

Only float32 and float64 NumPy arrays with a last axis of at most :data:`SHORT` entries take this path;
others go to their own ``max``.
"""
from __future__ import annotations

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
