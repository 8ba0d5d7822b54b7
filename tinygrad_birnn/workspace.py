"""Scratch arrays kept from one call to the next, so a training step does not pay for fresh memory.

A recurrent layer's forward and backward passes fill a dozen buffers of the same shapes at every training
step (states, gate values, deltas, carries). Allocated anew each time, buffers of a few hundred kilobytes come
from memory the C allocator has just mapped (or given back to the system, then mapped again), and the first
write to each page traps into the kernel: at the small size of ``benchmarks/bench_cpu_rnn.py`` that costs
about a fifth of the step. A hand-written loop avoids it by allocating once; :func:`empty` gives the library
the same: an array of the requested shape and dtype, reused when nothing references it any more.

An array is free when the pool's own reference is the only one left (``sys.getrefcount``, compared with
that of a sentinel only the pool holds): a caller, a graph that saved it, or a view of it (a view holds its
base) all keep it taken, so a reused array is one nobody can observe. The pool holds at most :data:`LIMIT` bytes; beyond that, free arrays of other shapes are let go first,
then new ones are simply not kept. CuPy arrays (CuPy has its own memory pool) and interpreters without
reference counts get a fresh ``empty``.
"""
from __future__ import annotations

import sys
import threading
from typing import Any

import numpy as np

LIMIT = 256 * 2**20  # bytes the pool may hold

_pool: dict[tuple, list] = {}
_held = 0
_lock = threading.Lock()


def empty(xp: Any, shape: tuple, dtype: Any) -> Any:
    """``xp.empty(shape, dtype)``, from the pool when ``xp`` is NumPy (contents undefined, as ``empty``'s)."""
    global _held
    if xp is not np or not hasattr(sys, "getrefcount"):
        return xp.empty(shape, dtype=dtype)
    key = (shape if type(shape) is tuple else tuple(shape), np.dtype(dtype))
    with _lock:
        arrays = _pool.get(key)
        if arrays is None:
            arrays = _pool[key] = [np.empty(0)]  # the sentinel first (see _free_flags)
        for i, free in enumerate(_free_flags(arrays)):  # counted before anything else refers to them
            if free:
                return arrays[i + 1]
        a = np.empty(shape, dtype=dtype)
        if _held + a.nbytes > LIMIT:
            _release_free(keep=key)
        if _held + a.nbytes <= LIMIT:
            arrays.append(a)
            _held += a.nbytes
        return a


def _free_flags(arrays: list) -> list:
    """For each array after the first of ``arrays``, whether only the pool references it.

    The first entry is a sentinel that nothing else ever references: its reference count, taken in this
    same loop, is what "only the pool" reads as. Counting against it, not against a fixed number, keeps the
    test right whatever references the interpreter itself holds (Python 3.14 skips some that 3.11 takes).
    """
    flags, baseline = [], None
    for a in arrays:
        count = sys.getrefcount(a)
        if baseline is None:
            baseline = count
        else:
            flags.append(count == baseline)
    return flags


def _release_free(keep: tuple) -> None:
    """Let go of the free arrays of every shape but ``keep`` (called with the lock held)."""
    global _held
    for key in list(_pool):
        if key == keep:
            continue
        arrays = _pool[key]
        flags = _free_flags(arrays)
        _held -= sum(a.nbytes for a, free in zip(arrays[1:], flags) if free)
        taken = [a for a, free in zip(arrays[1:], flags) if not free]
        del flags
        if taken:
            _pool[key] = arrays[:1] + taken
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
