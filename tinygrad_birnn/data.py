"""Batches of variable-length sequences: padding, lengths, masks, a masked loss and a seeded batch iterator.

Everything here returns host (NumPy) arrays; ``Tensor(array)`` moves them to the current backend. The time
axis comes first unless ``batch_first=True``, as in PyTorch and the recurrent layers of :mod:`tinygrad_birnn.nn`.
The lengths check and the mask builder are those of the layers, :mod:`tinygrad_birnn.rnn.lengths`.
"""
from __future__ import annotations

from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np

from . import functional as F
from .backend import to_numpy
from .rnn.lengths import check_lengths, lengths_mask
from .tensor import Tensor


def _host(a: Any) -> np.ndarray:
    """A host copy of an array, a Tensor or a list."""
    return to_numpy(a.data if isinstance(a, Tensor) else a)


def pad_sequences(
    sequences: Sequence[Any],
    batch_first: bool = False,
    padding_value: float = 0.0,
    dtype: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Stack sequences of shapes ``(L_i, *features)`` into ``(T, B, *features)`` (or
    ``(B, T, ...)``), T = max L_i.

    Returns the padded array and the lengths (int64). Sequence i fills steps 0..L_i - 1;
    the rest is ``padding_value``. Integer sequences (token ids) stay integer unless
    ``dtype`` says otherwise.
    """
    if isinstance(sequences, (str, bytes)) or not hasattr(sequences, "__len__"):
        raise TypeError(
            f"pad_sequences expects a list of sequences; got {type(sequences).__name__}"
        )
    if len(sequences) == 0:
        raise ValueError("pad_sequences needs at least one sequence; got an empty list")
    arrays = [_host(s) for s in sequences]
    for i, a in enumerate(arrays):
        if a.ndim == 0:
            raise ValueError(
                f"pad_sequences: sequence {i} is a scalar; each sequence needs a time "
                "axis (shape (L, ...))"
            )
        if a.shape[0] == 0:
            raise ValueError(
                f"pad_sequences: sequence {i} is empty; every sequence needs at least "
                "one step"
            )
        if a.shape[1:] != arrays[0].shape[1:]:
            raise ValueError(
                f"pad_sequences: sequence {i} has feature shape {a.shape[1:]}, "
                f"expected {arrays[0].shape[1:]} "
                "(that of sequence 0); only the first axis, time, may differ"
            )
    lengths = np.array([a.shape[0] for a in arrays], dtype=np.int64)
    out_dtype = np.dtype(dtype) if dtype is not None else np.result_type(*arrays)
    T, B = int(lengths.max()), len(arrays)
    padded = np.full((B, T) + arrays[0].shape[1:], padding_value, dtype=out_dtype)
    for i, a in enumerate(arrays):
        padded[i, : a.shape[0]] = a
    return (
        padded if batch_first else np.ascontiguousarray(np.swapaxes(padded, 0, 1))
    ), lengths


def lengths_to_mask(
    lengths: Any,
    max_len: int | None = None,
    batch_first: bool = False,
    dtype: Any = np.float32,
) -> np.ndarray:
    """mask[t, b] = 1.0 if t < lengths[b] else 0.0, shape (T, B) ((B, T) with
    batch_first); T = max_len or max(lengths)."""
    arr = check_lengths(lengths, longest=max_len)
    T = int(arr.max()) if max_len is None else int(max_len)
    mask = lengths_mask(arr, T, np, shortest=0)[:, :, 0].astype(dtype)
    return mask.T.copy() if batch_first else mask


def sequence_cross_entropy(
    logits: Tensor,
    targets: Any,
    lengths: Any,
    batch_first: bool = False,
    reduction: str = "mean",
) -> Tensor:
    """Cross-entropy of per-step predictions, counting only the steps t < lengths[b].

    ``logits`` (T, B, C) ((B, T, C) with batch_first), ``targets`` (T, B) integer
    classes; 'mean' averages over the sum of the lengths, so padding never dilutes the
    loss.
    """
    if logits.ndim != 3:
        raise ValueError(
            "sequence_cross_entropy: logits must have shape "
            f"({'B, T' if batch_first else 'T, B'}, C); "
            f"got {logits.shape}"
        )
    T, B = (
        (logits.shape[1], logits.shape[0])
        if batch_first
        else (logits.shape[0], logits.shape[1])
    )
    arr = check_lengths(lengths, B, T)
    mask = lengths_to_mask(
        arr,
        T,
        batch_first,
        dtype=np.float64 if logits.dtype == np.float64 else np.float32,
    )
    return F.cross_entropy(logits, targets, mask=mask, reduction=reduction)


class Batch(NamedTuple):
    """One padded batch: inputs (T, B, ...) or (B, T, ...), targets (padded the same way, or (B,)) and lengths (B,)."""

    inputs: np.ndarray
    targets: np.ndarray | None
    lengths: np.ndarray
    indices: np.ndarray


class BatchIterator:
    """Iterate over (sequences, targets) in shuffled batches, each padded to its own longest sequence.

    The order is drawn from ``np.random.default_rng(seed)`` created once, so every epoch (each ``for`` loop)
    has a new order while the whole run is reproducible. Targets that are sequences (one label per step)
    are padded with ``target_padding_value``; scalar targets (one label per sequence) are stacked to (B,).
    """

    def __init__(self, sequences: Sequence[Any], targets: Sequence[Any] | None = None, batch_size: int = 32,
                 shuffle: bool = True, seed: int | None = 0, batch_first: bool = False, padding_value: float = 0.0,
                 target_padding_value: Any = 0, drop_last: bool = False, dtype: Any = None):
        if isinstance(sequences, (str, bytes)) or not hasattr(sequences, "__len__"):
            raise TypeError(f"BatchIterator expects a list of sequences; got {type(sequences).__name__}")
        if len(sequences) == 0:
            raise ValueError("BatchIterator needs at least one sequence; got none")
        if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
        if targets is not None and len(targets) != len(sequences):
            raise ValueError(f"BatchIterator: {len(targets)} targets for {len(sequences)} sequences; expected one per sequence")
        self.sequences, self.targets = list(sequences), None if targets is None else list(targets)
        self.batch_size, self.shuffle, self.batch_first, self.drop_last = int(batch_size), shuffle, batch_first, drop_last
        self.padding_value, self.target_padding_value, self.dtype = padding_value, target_padding_value, dtype
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        n, b = len(self.sequences), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def _targets(self, idx: np.ndarray, lengths: np.ndarray) -> np.ndarray | None:
        if self.targets is None:
            return None
        items = [_host(self.targets[i]) for i in idx]
        if all(a.ndim == 0 for a in items):
            return np.stack(items)
        for i, a, n in zip(idx, items, lengths):
            if a.ndim == 0 or a.shape[0] != n:
                raise ValueError(f"BatchIterator: target {i} has shape {a.shape}, expected a scalar or a sequence of "
                                 f"length {n} (the length of sequence {i})")
        return pad_sequences(items, self.batch_first, self.target_padding_value)[0]

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.sequences)
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start:start + self.batch_size]
            inputs, lengths = pad_sequences([self.sequences[i] for i in idx], self.batch_first, self.padding_value,
                                            self.dtype)
            yield Batch(inputs, self._targets(idx, lengths), lengths, idx)


def batches(sequences: Sequence[Any], targets: Sequence[Any] | None = None, batch_size: int = 32,
            shuffle: bool = True, seed: int | None = 0, **kwargs: Any) -> Iterator[Batch]:
    """One pass over the data in padded batches (a one-epoch :class:`BatchIterator`)."""
    return iter(BatchIterator(sequences, targets, batch_size, shuffle, seed, **kwargs))
