"""Compositions of primitives: activations, softmax, losses, dropout.

Nothing here has a hand-written gradient: each function is built from the primitives in
:mod:`tinygrad_birnn.ops`, so its gradient follows from theirs. The one numerically delicate piece,
log-sum-exp, is itself a primitive.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import backend
from .backend import xp_of
from .ctc import ctc_loss  # noqa: F401  (re-exported: the CTC loss lives in ctc.py beside its decoders)
from .tensor import Tensor


def _as_tensor(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """softmax(x)_i = exp(x_i - logsumexp(x))."""
    return log_softmax(x, axis).exp()


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """log softmax(x)_i = x_i - logsumexp(x), stable for any size of x.

    Computed as s - logsumexp(s) with s = x - max(x): the max is a constant shift (log_softmax(x - c) =
    log_softmax(x)), and subtracting it first keeps the result's precision when the logits are large.
    """
    xp = xp_of(x.data)
    m = x.data.max(axis=axis, keepdims=True)
    shifted = x - xp.where(xp.isfinite(m), m, 0)
    return shifted - shifted.logsumexp(axis=axis, keepdims=True)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x W^T + b, with W of shape (out_features, in_features) as in PyTorch."""
    y = x @ weight.T
    return y if bias is None else y + bias


def _reduce(loss: Tensor, weight: Tensor | None, reduction: str) -> Tensor:
    if reduction == "none":
        return loss if weight is None else loss * weight
    if reduction == "sum":
        return (loss if weight is None else loss * weight).sum()
    if reduction == "mean":
        if weight is None:
            return loss.mean()
        return (loss * weight).sum() / weight.sum()
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none'; got {reduction!r}")


def _check_mask(mask: Any, shape: tuple, what: str) -> Tensor | None:
    if mask is None:
        return None
    m = _as_tensor(mask)
    if m.shape != shape:
        raise ValueError(f"{what}: mask has shape {m.shape}, expected {shape} (one weight per target)")
    return Tensor._make(m.data.astype(np.float64 if m.dtype == np.float64 else np.float32), False, None)


def cross_entropy(logits: Tensor, targets: Any, mask: Any = None, reduction: str = "mean") -> Tensor:
    """Mean of -log softmax(logits)[target] over the positions where ``mask`` is nonzero.

    ``logits`` is (..., C); ``targets`` holds integer classes of shape (...); ``mask`` (optional, same shape
    as ``targets``) weights each position, 0 for padding. With a mask, 'mean' divides by the mask's sum.
    """
    targets = targets.data if isinstance(targets, Tensor) else targets
    xp = xp_of(logits.data)
    if not isinstance(targets, np.ndarray) and not backend.is_cupy_array(targets):
        targets = np.asarray(targets)
    if not np.issubdtype(targets.dtype, np.integer):
        raise TypeError(f"cross_entropy: targets must be integer class indices; got dtype {targets.dtype}")
    if tuple(targets.shape) != logits.shape[:-1]:
        raise ValueError(
            f"cross_entropy: targets have shape {tuple(targets.shape)}, expected {logits.shape[:-1]} "
            f"(the logits' shape {logits.shape} without its class axis)"
        )
    n_classes = logits.shape[-1]
    if isinstance(targets, np.ndarray):  # checked on the host only: on a GPU this would force a sync
        if targets.size and (targets.min() < 0 or targets.max() >= n_classes):
            raise ValueError(f"cross_entropy: targets must lie in [0, {n_classes}); got values from {targets.min()} to {targets.max()}")
        if xp is not np:
            targets = backend.to_backend(targets, "cupy")
    weight = _check_mask(mask, tuple(targets.shape), "cross_entropy")
    one_hot = (targets[..., None] == xp.arange(n_classes)).astype(logits.dtype)
    nll = -(log_softmax(logits, axis=-1) * one_hot).sum(axis=-1)
    return _reduce(nll, weight, reduction)


def mse_loss(prediction: Tensor, target: Any, mask: Any = None, reduction: str = "mean") -> Tensor:
    """Mean of (prediction - target)^2 (weighted by ``mask`` when given)."""
    target = _as_tensor(target) if not isinstance(target, Tensor) else target
    if target.shape != prediction.shape:
        raise ValueError(f"mse_loss: target has shape {target.shape}, expected {prediction.shape}")
    return _reduce((prediction - target) ** 2, _check_mask(mask, prediction.shape, "mse_loss"), reduction)


def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p); identity when not training."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1); got {p}")
    if not training or p == 0.0:
        return x
    keep = (backend.uniform_like(x.data) >= p).astype(x.dtype) / (1.0 - p)
    return x * Tensor._make(keep, False, None)
