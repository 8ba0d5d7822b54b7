"""Indexing a tensor as PyTorch does, on top of NumPy's (and CuPy's) indexing.

The two agree except in one place: PyTorch treats an integer in an index as *basic* indexing (it selects
and removes its axis first), NumPy as an *advanced* index that takes part in broadcasting with the
integer arrays. They differ when an integer and an array are separated by a slice: for ``x`` of shape
(2, 3, 4), ``x[0, :, [0, 1]]`` has shape (3, 2) in PyTorch and (2, 3) in NumPy. :func:`plan_index`
splits such an index in two NumPy indexes applied one after the other: the integers first, then the rest.
Lists and tuples inside an index become integer (or boolean) arrays, as in PyTorch.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .backend import xp_of


def _is_int(i: Any) -> bool:
    return isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_))


def _as_index_item(i: Any, data: Any) -> Any:
    """One item of an index, checked: Tensors and sequences become arrays on ``data``'s backend."""
    if hasattr(i, "data") and hasattr(i, "requires_grad"):  # a Tensor
        i = i.data
    if isinstance(i, (bool, np.bool_)):
        i = np.asarray(i)
    if isinstance(i, (list, tuple)):
        i = np.asarray(i)
        if i.size == 0:
            i = i.astype(np.int64)
    if hasattr(i, "dtype"):
        if not (np.issubdtype(i.dtype, np.integer) or i.dtype == np.bool_):
            raise IndexError(f"index arrays must hold integers or booleans; got dtype {i.dtype}")
        xp = xp_of(data)
        if isinstance(i, np.ndarray) and xp is not np:
            i = xp.asarray(i)
        xp_of(i, data)
        return i
    if _is_int(i) or isinstance(i, slice) or i is None or i is Ellipsis:
        return i
    raise IndexError(
        "a tensor can be indexed by integers, slices, None, Ellipsis, lists or integer/boolean arrays; "
        f"got {i!r} of type {type(i).__name__}")


def _dims_used(i: Any) -> int:
    if i is None:
        return 0
    if hasattr(i, "dtype") and i.dtype == np.bool_:
        return max(i.ndim, 1) if i.ndim else 0
    return 1


def plan_index(index: Any, data: Any) -> list:
    """The NumPy indexes that, applied in turn to ``data``, select what PyTorch's ``data[index]`` does."""
    items = [_as_index_item(i, data) for i in (index if isinstance(index, tuple) else (index,))]
    if sum(i is Ellipsis for i in items) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    has_int = any(_is_int(i) for i in items)
    has_array = any(hasattr(i, "dtype") and i.ndim > 0 for i in items)
    if not (has_int and has_array):
        return [tuple(items)]
    # expand the ellipsis, so each item's axis is known
    used = sum(_dims_used(i) for i in items if i is not Ellipsis)
    if used > data.ndim:
        raise IndexError(f"too many indices for a tensor of dimension {data.ndim}: the index uses {used} axes")
    if Ellipsis in [i for i in items if not hasattr(i, "dtype")]:
        k = next(n for n, i in enumerate(items) if i is Ellipsis and not hasattr(i, "dtype"))
        items[k:k + 1] = [slice(None)] * (data.ndim - used)
    first, second = [], []
    for i in items:
        if _is_int(i):
            first.append(i)
        elif i is None:
            second.append(i)
        else:
            first.extend([slice(None)] * _dims_used(i))
            second.append(i)
    return [tuple(first), tuple(second)]
