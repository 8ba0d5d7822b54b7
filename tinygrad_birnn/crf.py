"""The linear-chain conditional random field: its score, its log-partition function, and Viterbi.

A tagging of ``T`` steps with tags ``y_0 .. y_{T-1}`` out of ``K`` scores

    s(y) = start[y_0] + sum_t emissions[t, y_t] + sum_{t>=1} transitions[y_{t-1}, y_t] + end[y_{T-1}],

and the CRF's probability of it is ``exp(s(y) - log Z)``, where ``log Z = logsumexp over all K**T taggings``.
``log Z`` is computed by the forward recursion (``alpha``) in ``O(T K^2)``; its gradient is the expected count
of every emission and transition under the CRF, the *marginals*, which the backward recursion (``beta``)
gives. :data:`log_partition` is that pair as one primitive: the forward recursion in its forward, the
backward recursion and the marginals in its vector-Jacobian product, all in log space, vectorised over the
batch, with a Python loop over time only. Arrays are NumPy or CuPy (the module follows the data).

Shapes follow ``pytorch-crf`` with ``batch_first=False``: emissions ``(T, B, K)``, tags and mask ``(T, B)``.
A mask switches steps off at the end of each sequence (``mask[t, b]`` is ``t < length_b``); its first step
must be on for every sequence.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import backend
from .backend import xp_of
from .ops import defprim
from .tensor import Tensor, apply, as_tensor


def logsumexp(x: Any, axis: int) -> Any:
    """log(sum(exp(x), axis)), shifted by the max, finite where x has a finite entry (a -inf row gives -inf)."""
    xp = xp_of(x)
    m = x.max(axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0)
    with np.errstate(divide="ignore"):  # log(0) = -inf is the right answer for an all -inf row
        return (xp.log(xp.exp(x - m).sum(axis=axis, keepdims=True)) + m).squeeze(axis)


def log_matmul_exp(x: Any, a: Any) -> Any:
    """``logsumexp_i(x[b, i] + a[i, j])`` for x (B, K) and a (K, K): one step of the
    recursions, as one matrix product of exponentials instead of a (B, K, K) array.

    Each row of x is shifted by its max and each column of a by its max, so no exp
    overflows; where a sum comes out too small to keep full precision (every term
    underflowed, or every term is -inf), that row is recomputed with :func:`logsumexp`.
    """
    xp = xp_of(x)
    m = x.max(axis=1, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0)
    c = a.max(axis=0, keepdims=True)
    c = xp.where(xp.isfinite(c), c, 0)
    total = backend.matmul(xp.exp(x - m), xp.exp(a - c))
    small = total < np.finfo(total.dtype).tiny * 2.0 ** np.finfo(total.dtype).nmant
    with np.errstate(divide="ignore"):
        out = xp.log(total) + m + c
    if small.any():  # rare: recompute those rows exactly
        rows = small.any(axis=1)
        out[rows] = logsumexp(x[rows][:, :, None] + a, axis=1)
    return out


def forward_recursion(
    emissions: Any, start: Any, end: Any, transitions: Any, mask: Any
) -> tuple:
    """``alpha`` (T, B, K) and ``log Z`` (B,).

    ``alpha[t, b, j]``: the log of the summed exp-scores of every tagging of steps 0..t
    that ends in tag ``j``. ``alpha[0] = start + emissions[0]``, and
    ``alpha[t, :, j] = logsumexp_i(alpha[t-1, :, i] + transitions[i, j])
    + emissions[t, :, j]``. Past a sequence's end, ``alpha`` keeps its last value, so
    ``log Z = logsumexp_j(alpha[T-1, :, j] + end[j])`` serves every length at once.
    """
    xp = xp_of(emissions)
    alpha = xp.empty_like(emissions)
    alpha[0] = start + emissions[0]
    for t in range(1, emissions.shape[0]):
        step = log_matmul_exp(alpha[t - 1], transitions) + emissions[t]
        alpha[t] = xp.where(mask[t][:, None], step, alpha[t - 1])
    return alpha, logsumexp(alpha[-1] + end, axis=1)


def backward_recursion(emissions: Any, end: Any, transitions: Any, mask: Any) -> Any:
    """``beta`` (T, B, K): ``beta[t, b, i]`` is the log of the summed exp-scores of every
    way to finish from tag ``i`` at step t: ``beta[L-1] = end`` at the sequence's last
    step L-1, and before it ``beta[t, :, i] = logsumexp_j(transitions[i, j]
    + emissions[t+1, :, j] + beta[t+1, :, j])``."""
    xp = xp_of(emissions)
    beta = xp.empty_like(emissions)
    beta[-1] = xp.broadcast_to(end, beta[-1].shape)
    for t in range(emissions.shape[0] - 2, -1, -1):
        step = log_matmul_exp(emissions[t + 1] + beta[t + 1], transitions.T)
        beta[t] = xp.where(mask[t + 1][:, None], step, beta[t + 1])
    return beta


def _log_partition_forward(emissions: Any, start: Any, end: Any, transitions: Any, mask: Any) -> tuple:
    alpha, log_z = forward_recursion(emissions, start, end, transitions, mask)
    return log_z, alpha


def _log_partition_vjp(g: Any, log_z: Any, emissions: Any, start: Any, end: Any,
                       transitions: Any, mask: Any, res: Any) -> tuple:
    """The marginals, each weighted by its sequence's ``g[b]``:
    d log Z / d emissions[t, b, j] = P(y_t = j),
    d log Z / d transitions[i, j] = sum_t P(y_{t-1} = i, y_t = j),
    d log Z / d start = P(y_0 = j), d log Z / d end = P(y_last = j)."""
    xp = xp_of(emissions)
    alpha = res
    beta = backward_recursion(emissions, end, transitions, mask)
    weight = (g * mask)[:, :, None]  # (T, B, 1): g[b] where the step is on, else 0
    unary = xp.exp(alpha + beta - log_z[:, None]) * weight  # P(y_t = j) g[b]
    last = xp.arange(mask.shape[0])[:, None] == mask.sum(axis=0)[None, :] - 1
    g_transitions = xp.zeros_like(transitions)
    for t in range(1, emissions.shape[0]):
        # log P(y_{t-1} = i, y_t = j)
        #   = alpha[t-1, i] + transitions[i, j] + emissions[t, j] + beta[t, j] - log Z
        before = (alpha[t - 1] - log_z[:, None])[:, :, None]
        after = xp.where(mask[t][:, None], emissions[t] + beta[t], -xp.inf)[:, None, :]
        pair = xp.exp(before + transitions + after)  # 0 past the end (there, unbounded)
        g_transitions += xp.tensordot(weight[t][:, 0], pair, axes=(0, 0))
    return unary, unary[0], unary[last].sum(axis=0), g_transitions


log_partition_primitive = defprim(
    "crf_log_partition",
    _log_partition_forward,
    _log_partition_vjp,
    "d log Z = the marginals: P(y_t = j) for emissions, start and end, P(y_{t-1}=i, y_t=j) for transitions",
    has_residuals=True,
)


def check_mask(mask: Any, steps: int, batch: int, xp: Any) -> Any:
    """``mask`` as a (T, B) boolean array on ``xp`` (all on when None), checked: each sequence's steps are on
    from step 0 up to its length and off after it."""
    if mask is None:
        return xp.ones((steps, batch), dtype=bool)
    m = mask.data if isinstance(mask, Tensor) else mask
    if not hasattr(m, "dtype"):
        m = np.asarray(m)
    if tuple(m.shape) != (steps, batch):
        raise ValueError(f"mask has shape {tuple(m.shape)}, expected {(steps, batch)} (the emissions' T, B)")
    if not (m.dtype == np.bool_ or np.issubdtype(m.dtype, np.integer)):
        raise TypeError(f"mask must hold booleans or 0/1 integers; got dtype {m.dtype}")
    host = backend.to_numpy(m)
    if host.size and not np.isin(host, (0, 1)).all():
        raise ValueError("mask must hold only 0 and 1")
    host = host.astype(bool)
    if batch and not host[0].all():
        raise ValueError("mask of the first time step must be on for every sequence")
    if steps > 1 and (host[1:] & ~host[:-1]).any():
        raise ValueError("mask must switch each sequence off once, after its last step (no gaps)")
    return backend.to_backend(host, "cupy" if xp is not np else "numpy")


def log_partition(emissions: Tensor, start: Tensor, end: Tensor, transitions: Tensor, mask: Any = None) -> Tensor:
    """``log Z`` for each sequence, (B,): emissions (T, B, K), start and end (K,), transitions (K, K)."""
    T, B, _ = emissions.shape
    m = check_mask(mask, T, B, xp_of(emissions.data))
    return apply(log_partition_primitive, emissions, start, end, transitions, mask=m)


def sequence_score(emissions: Tensor, tags: Any, start: Tensor, end: Tensor, transitions: Tensor,
                   mask: Any = None) -> Tensor:
    """``s(y)`` for each sequence, (B,), composed from indexing (its gradient counts the tags it used)."""
    T, B, _ = emissions.shape
    xp = xp_of(emissions.data)
    m = check_mask(mask, T, B, xp)
    y = tags.data if isinstance(tags, Tensor) else tags
    on = as_tensor(m.astype(emissions.dtype))
    batch = xp.arange(B)
    score = start[y[0]] + (emissions[xp.arange(T)[:, None], batch[None, :], y] * on).sum(axis=0)
    if T > 1:
        score = score + (transitions[y[:-1], y[1:]] * on[1:]).sum(axis=0)
    last = y[m.sum(axis=0) - 1, batch]
    return score + end[last]


def viterbi_decode(emissions: Any, start: Any, end: Any, transitions: Any, mask: Any) -> list:
    """The best tagging of each sequence (a list of B lists of ints, each as long as its sequence).

    The forward recursion with max for logsumexp, keeping each step's argmax (``history``), then a walk back
    from the best last tag, vectorised over the batch. Arrays in, plain Python lists out.
    """
    xp = xp_of(emissions)
    T, B, _ = emissions.shape
    score = start + emissions[0]
    history = []
    for t in range(1, T):
        candidates = score[:, :, None] + transitions
        best = candidates.argmax(axis=1)
        step = xp.take_along_axis(candidates, best[:, None, :], axis=1)[:, 0] + emissions[t]
        score = xp.where(mask[t][:, None], step, score)
        history.append(best)
    batch = xp.arange(B)
    tag = (score + end).argmax(axis=1)
    path = xp.empty((T, B), dtype=np.int64)
    for t in range(T - 1, -1, -1):
        path[t] = tag
        if t > 0:  # past a sequence's end the tag stays the best last tag until its last step is reached
            tag = xp.where(mask[t], history[t - 1][batch, tag], tag)
    lengths = backend.to_numpy(mask.sum(axis=0))
    host = backend.to_numpy(path)
    return [host[: int(lengths[b]), b].tolist() for b in range(B)]


__all__ = ["logsumexp", "log_matmul_exp", "forward_recursion", "backward_recursion", "log_partition", "sequence_score",
           "viterbi_decode", "check_mask", "log_partition_primitive"]
