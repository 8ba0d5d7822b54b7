"""Sequence lengths: the one check and the one mask builder that the layers and :mod:`tinygrad_birnn.data` share.

The mask is m[t, b] = t < lengths[b]. It is made with the array module of the data, from the lengths on that
device. Outside a CUDA-graph capture the lengths are first copied to the host and checked (one integer per
sequence, each in its range); inside a capture the host must not be asked, so the lengths must already be a
device array of the right shape, and the values copied into it are the caller's to keep in range.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import backend
from ..backend import xp_of
from ..tensor import Tensor


def check_lengths(lengths: Any, batch: int | None = None, longest: int | None = None, shortest: int = 0,
                  longest_name: str = "max_len") -> np.ndarray:
    """``lengths`` (a list, a NumPy or CuPy array, a Tensor) as a checked host int64 array.

    It must be 1-D with integer values (integral floats are accepted), ``batch`` entries when given, each at
    least ``shortest`` and, when ``longest`` is given, at most ``longest`` (called ``longest_name`` in the
    message). Raises ValueError or TypeError naming what was expected and what was given.
    """
    arr = backend.to_numpy(lengths.data if isinstance(lengths, Tensor) else lengths)
    if arr.ndim != 1:
        raise ValueError(f"lengths must be a 1-D sequence of integers, one per sequence; got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not (np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr))):
            raise TypeError(f"lengths must be integers; got dtype {arr.dtype}")
    if batch is not None and arr.shape[0] != batch:
        raise ValueError(f"lengths has {arr.shape[0]} entries, expected {batch} (one per sequence in the batch)")
    arr = arr.astype(np.int64)
    if arr.size and longest is not None and (arr.min() < shortest or arr.max() > longest):
        raise ValueError(f"lengths must lie in [{shortest}, {longest_name}={longest}]; "
                         f"got values from {arr.min()} to {arr.max()}")
    if arr.size and arr.min() < shortest:
        raise ValueError(f"lengths must be >= {shortest}; got {arr.min()}")
    return arr


def lengths_mask(lengths: Any, steps: int, xp: Any = None, batch: int | None = None, shortest: int = 1) -> Any:
    """The (T, B, 1) boolean mask m[t, b] = t < lengths[b], T = ``steps``, on the array module ``xp``.

    Outside a capture the lengths are checked first (:func:`check_lengths`, each in [``shortest``, T]); inside
    a capture they must be a (B,) integer array on the same device, and the mask is made there.
    """
    xp = np if xp is None else xp
    data = lengths.data if isinstance(lengths, Tensor) else lengths
    if backend.capturing():
        if not hasattr(data, "shape") or xp_of(data) is not xp or (batch is not None and data.shape != (batch,)):
            raise backend.CaptureError(
                f"inside a captured step, lengths must be a ({batch},) integer array on the same device as the "
                f"input, so that each batch's lengths can be copied into it; got {type(data).__name__} "
                f"of shape {getattr(data, 'shape', None)}")
    else:
        data = check_lengths(data, batch, steps, shortest, "T")
    return (xp.arange(steps)[:, None] < xp.asarray(data)[None, :])[:, :, None]
