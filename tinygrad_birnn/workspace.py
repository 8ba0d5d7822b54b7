"""Scratch arrays kept from one call to the next, so a training step does not pay for fresh memory.

A recurrent layer's forward and backward passes fill a dozen buffers of the same shapes at every training
step (states, gate values, deltas, carries). Allocated anew each time, buffers of a few hundred kilobytes come
from memory the C allocator has just mapped (or given back to the system, then mapped again), and the first
write to each page traps into the kernel: at the small size of ``benchmarks/bench_cpu_rnn.py`` that costs
about a fifth of the step. A hand-written loop avoids it by allocating once; :func:`empty` gives the library
the same: an array of the requested shape and dtype, reused when nothing references it any more.

An array is free when the pool's own reference is the only one left (``sys.getrefcount``): a caller, a graph
that saved it, or a view of it (a view holds its base) all keep it taken, so a reused array is one nobody can
observe. The pool holds at most :data:`LIMIT` bytes; beyond that, free arrays of other shapes are let go first,
then new ones are simply not kept. CuPy arrays (CuPy has its own memory pool) and interpreters without
reference counts get a fresh ``empty``.
"""
from __future__ import annotations

import sys
import threading
from typing import Any

import numpy as np

LIMIT = 256 * 2**20  # bytes the pool may hold

_FREE_REFS = 3  # the pool's list, the loop's name, getrefcount's argument
_pool: dict[tuple, list] = {}
_held = 0
_lock = threading.Lock()


def empty(xp: Any, shape: tuple, dtype: Any) -> Any:
    """``xp.empty(shape, dtype)``, from the pool when ``xp`` is NumPy (contents undefined, as ``empty``'s)."""
    global _held
    if xp is not np or not hasattr(sys, "getrefcount"):
        return xp.empty(shape, dtype=dtype)
    key = (tuple(shape), np.dtype(dtype))
    with _lock:
        arrays = _pool.setdefault(key, [])
        for a in arrays:
            if sys.getrefcount(a) == _FREE_REFS:
                return a
        a = np.empty(shape, dtype=dtype)
        if _held + a.nbytes > LIMIT:
            _release_free(keep=key)
        if _held + a.nbytes <= LIMIT:
            arrays.append(a)
            _held += a.nbytes
        return a


def _release_free(keep: tuple) -> None:
    """Let go of the free arrays of every shape but ``keep`` (called with the lock held)."""
    global _held
    for key in list(_pool):
        if key == keep:
            continue
        taken = [a for a in _pool[key] if sys.getrefcount(a) > _FREE_REFS]
        _held -= sum(a.nbytes for a in _pool[key]) - sum(a.nbytes for a in taken)
        if taken:
            _pool[key] = taken
        else:
            del _pool[key]


def held_bytes() -> int:
    """How many bytes the pool holds (free and taken)."""
    return _held


def clear() -> None:
    """Forget every array (taken ones stay valid for whoever holds them)."""
    global _held
    with _lock:
        _pool.clear()
        _held = 0
