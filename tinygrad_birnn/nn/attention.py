"""Additive attention (Bahdanau, Cho & Bengio 2015), with masks for padded inputs.

A decoder state (the *query*) scores every position j of an encoded input (the *keys* k_j),

    e_j = v^T tanh(W q + U k_j),        a = softmax(e) over the positions j that exist,

and reads the weighted average of the *values* (by default the keys themselves), the context
c = sum_j a_j k_j. Positions past a sequence's length get a weight of exactly zero, and so does their
gradient: the scores there are replaced by -inf before the softmax (:func:`masked_softmax`).

Everything is composed of the engine's primitives (matmul, tanh, where, logsumexp), so the gradient follows
from theirs. The keys' projection U k_j does not depend on the query: a decoder computes it once per input
(:meth:`AdditiveAttention.project_keys`) and passes it to every step.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import backend
from .. import functional as F
from ..backend import xp_of
from ..functions import where
from ..tensor import Tensor
from .modules import Module, uniform_parameter


def _host(a: Any) -> np.ndarray:
    if isinstance(a, Tensor):
        return a.numpy()
    if backend.is_cupy_array(a):
        return a.get()
    return np.asarray(a)


def attention_mask(lengths: Any = None, mask: Any = None, batch: int = 0, steps: int = 0) -> np.ndarray | None:
    """The (batch, steps) boolean mask of the positions a query may attend to, from ``lengths`` or ``mask``.

    ``lengths`` holds one integer per sequence in [1, steps] (position j is attended to when j < length);
    ``mask`` is a (batch, steps) array that is true (or nonzero) where a position may be attended to: the
    layout of ``data.lengths_to_mask(lengths, batch_first=True)``. Give at most one of the two; with neither,
    every position counts and the result is None. Each row must keep at least one position.
    """
    if lengths is not None and mask is not None:
        raise ValueError("give lengths or mask, not both")
    if lengths is not None:
        arr = _host(lengths)
        if arr.shape != (batch,):
            raise ValueError(f"lengths must have shape ({batch},), one per sequence; got shape {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"lengths must be integers; got dtype {arr.dtype}")
        if arr.size and (arr.min() < 1 or arr.max() > steps):
            raise ValueError(f"lengths must lie in [1, {steps}] (each query needs a position to attend to); "
                             f"got values from {arr.min()} to {arr.max()}")
        return np.arange(steps)[None, :] < arr[:, None]
    if mask is None:
        return None
    arr = _host(mask)
    if arr.shape != (batch, steps):
        raise ValueError(f"mask must have shape (batch, steps) = ({batch}, {steps}); got shape {arr.shape}")
    if not (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.number)):
        raise TypeError(f"mask must be boolean or numeric; got dtype {arr.dtype}")
    arr = arr.astype(bool)
    if arr.size and not arr.any(axis=1).all():
        empty = np.flatnonzero(~arr.any(axis=1)).tolist()
        raise ValueError(f"mask rows {empty} attend to nothing; each query needs at least one position")
    return arr


def masked_softmax(scores: Tensor, mask: Any = None, axis: int = -1) -> Tensor:
    """softmax(scores) along ``axis`` where ``mask`` holds; exactly 0 elsewhere.

    ``mask``: boolean, broadcastable to ``scores``, or None for a plain softmax. Masked
    scores become -inf, so exp gives exactly 0 there and no gradient reaches them; each
    slice along ``axis`` needs one true entry.
    """
    if mask is None:
        return F.softmax(scores, axis)
    allowed = _host(mask).astype(bool)
    if xp_of(scores.data) is not np:
        allowed = backend.to_backend(allowed, "cupy")
    return F.softmax(where(allowed, scores, -math.inf), axis)


class AdditiveAttention(Module):
    """Additive (Bahdanau) attention: e_j = v^T tanh(W q + U k_j), a = masked softmax(e), c = sum_j a_j v_j.

    Args:
        query_size: features of a query q (a decoder state).
        key_size: features of a key k_j (an encoder annotation: 2 * hidden_size for a bidirectional encoder).
        hidden_size: size of the space where query and key meet (the rows of W and U, the length of v).
        batch_first: keys and values are (B, T, K) instead of (T, B, K), as for the recurrent layers.

    Parameters (as in the paper, no biases): ``query_weight`` W (hidden_size, query_size), ``key_weight`` U
    (hidden_size, key_size), ``score_weight`` v (hidden_size,), each drawn from U(-1/sqrt(fan_in), ...).

    Shapes: query (B, query_size); keys (T, B, key_size); values (T, B, V), default the keys. Returns the
    context (B, V) and the weights (B, T), which sum to 1 over each sequence's positions and are 0 beyond.

    >>> attention = AdditiveAttention(query_size=8, key_size=6, hidden_size=5)
    >>> keys, query = Tensor(np.ones((4, 2, 6))), Tensor(np.ones((2, 8)))
    >>> context, weights = attention(query, keys, lengths=[4, 2])
    >>> context.shape, weights.numpy()[1].round(2).tolist()
    ((2, 6), [0.5, 0.5, 0.0, 0.0])
    """

    def __init__(self, query_size: int, key_size: int, hidden_size: int, batch_first: bool = False,
                 dtype: Any = np.float32):
        super().__init__()
        for name, value in (("query_size", query_size), ("key_size", key_size), ("hidden_size", hidden_size)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        self.query_size, self.key_size, self.hidden_size = int(query_size), int(key_size), int(hidden_size)
        self.batch_first = bool(batch_first)
        self.query_weight = uniform_parameter((hidden_size, query_size), 1 / math.sqrt(query_size), dtype)
        self.key_weight = uniform_parameter((hidden_size, key_size), 1 / math.sqrt(key_size), dtype)
        self.score_weight = uniform_parameter((hidden_size,), 1 / math.sqrt(hidden_size), dtype)

    def _batch_first(self, x: Tensor) -> Tensor:
        return x if self.batch_first else x.transpose(1, 0, 2)

    def project_keys(self, keys: Tensor) -> Tensor:
        """U k_j for every position: (T, B, hidden_size) (or (B, T, ...)), computed once per input."""
        if not isinstance(keys, Tensor):
            keys = Tensor(keys)
        layout = "(B, T, key_size)" if self.batch_first else "(T, B, key_size)"
        if keys.ndim != 3 or keys.shape[-1] != self.key_size:
            raise ValueError(f"AdditiveAttention: keys must have shape {layout} with key_size={self.key_size}; "
                             f"got shape {keys.shape}")
        return keys @ self.key_weight.T

    def scores(self, query: Tensor, projected_keys: Tensor) -> Tensor:
        """e_j = v^T tanh(W q + U k_j), shape (B, T), before any mask."""
        keys = self._batch_first(projected_keys)                   # U k_j: (B, T, A)
        B, A = query.shape[0], self.hidden_size
        queries = (query @ self.query_weight.T).reshape(B, 1, A)   # W q: (B, 1, A)
        return (queries + keys).tanh() @ self.score_weight          # (B, T)

    def forward(self, query: Tensor, keys: Tensor, values: Tensor | None = None, lengths: Any = None,
                mask: Any = None, projected_keys: Tensor | None = None) -> tuple:
        """(context (B, V), weights (B, T)); ``lengths`` (B,) or ``mask`` (B, T) marks the real positions."""
        query = query if isinstance(query, Tensor) else Tensor(query)
        projected = self.project_keys(keys) if projected_keys is None else projected_keys
        values = keys if values is None else (values if isinstance(values, Tensor) else Tensor(values))
        keys_bt = self._batch_first(keys if isinstance(keys, Tensor) else Tensor(keys))
        B, T = keys_bt.shape[0], keys_bt.shape[1]
        if query.ndim != 2 or query.shape != (B, self.query_size):
            raise ValueError(f"AdditiveAttention: query must have shape (batch, query_size) = ({B}, "
                             f"{self.query_size}); got shape {query.shape}")
        if T == 0:
            raise ValueError(f"AdditiveAttention: keys have no positions (shape {keys.shape}); "
                             "a query needs at least one to attend to")
        values_bt = self._batch_first(values)
        if values_bt.ndim != 3 or values_bt.shape[:2] != (B, T):
            raise ValueError(f"AdditiveAttention: values must have the keys' batch and time axes "
                             f"({B}, {T}); got shape {values.shape}")
        if tuple(projected.shape) != tuple(keys.shape[:2]) + (self.hidden_size,):
            raise ValueError(f"AdditiveAttention: projected_keys must have shape {keys.shape[:2] + (self.hidden_size,)} "
                             f"(from project_keys); got {projected.shape}")
        allowed = attention_mask(lengths, mask, B, T)
        weights = masked_softmax(self.scores(query, projected), allowed, axis=-1)  # (B, T)
        context = (weights.reshape(B, 1, T) @ values_bt).reshape(B, values_bt.shape[2])
        return context, weights

    def extra_repr(self) -> str:
        s = f"query_size={self.query_size}, key_size={self.key_size}, hidden_size={self.hidden_size}"
        return s + (", batch_first=True" if self.batch_first else "")
