"""Compositions of primitives: activations, softmax, losses, dropout.

Nothing here has a hand-written gradient: each function is built from the primitives in
:mod:`tinygrad_birnn.ops`, so its gradient follows from theirs. The numerically delicate pieces
are primitives themselves: ``log_softmax`` (log-sum-exp subtracted) and, for the loss every
classifier trains with, ``softmax_cross_entropy`` (logsumexp(z) - z_target per position, whose
gradient is softmax - onehot), as in PyTorch, where both are kernels of their own.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import backend
from .backend import xp_of
from .ctc import ctc_loss  # noqa: F401  (re-exported: the CTC loss lives in ctc.py beside its decoders)
from .functions import where
from .ops import PRIMITIVES
from .shapes import normalize_axis
from .tensor import Tensor, apply, as_tensor


def _as_tensor(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """softmax(x)_i = exp(x_i - logsumexp(x))."""
    return log_softmax(x, axis).exp()


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """log softmax(x)_i = x_i - logsumexp(x), stable for any size of x: the primitive
    ``log_softmax`` subtracts the max first (a constant shift: log_softmax(x - c) =
    log_softmax(x)), so large logits keep their precision, and its gradient is
    g - softmax(x) sum(g)."""
    x = _as_tensor(x)
    if x.dtype.kind != "f":
        raise TypeError(f"log_softmax: expected floating-point logits; got dtype {x.dtype}")
    axis = normalize_axis(axis, x.ndim)
    if x.ndim == 0:  # one entry (axis 0 or -1, as in PyTorch): log 1 = 0
        return apply(PRIMITIVES["log_softmax"], x.reshape(1), axis=0).reshape(())
    return apply(PRIMITIVES["log_softmax"], x, axis=axis)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x W^T + b, with W of shape (out_features, in_features) as in PyTorch."""
    fast = (
        isinstance(x, Tensor) and isinstance(weight, Tensor) and weight.ndim == 2
        and x.ndim >= 1 and x.shape[-1] == weight.shape[1]
        and x.dtype == weight.dtype and x.dtype.kind == "f"
        and (bias is None or (isinstance(bias, Tensor) and bias.dtype == x.dtype
                              and bias.shape == (weight.shape[0],)))
    )
    if fast:  # the common case as one node: the same numbers as the composition below
        inputs = (x, weight) if bias is None else (x, weight, bias)
        xp_of(*[t.data for t in inputs])  # raises where they live on different backends
        return apply(PRIMITIVES["linear"], *inputs)
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
        # nothing counted (all padding): the loss is nan, as PyTorch's, but its gradient is 0, not 0/0
        xp = xp_of(weight.data)
        count = weight.data.sum()
        safe = as_tensor(xp.where(count == 0, 1, count).astype(loss.dtype))
        offset = as_tensor(xp.where(count == 0, np.nan, 0).astype(loss.dtype))
        return (loss * weight).sum() / safe + offset
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none'; got {reduction!r}")


def _check_mask(mask: Any, shape: tuple, what: str) -> Tensor | None:
    if mask is None:
        return None
    m = _as_tensor(mask)
    if m.shape != shape:
        raise ValueError(f"{what}: mask has shape {m.shape}, expected {shape} (one weight per target)")
    return as_tensor(m.data.astype(np.float64 if m.dtype == np.float64 else np.float32))


def cross_entropy(logits: Tensor, targets: Any, mask: Any = None,
                  reduction: str = "mean", ignore_index: int = -100) -> Tensor:
    """Mean of -log softmax(logits)[target] over the positions where ``mask`` is
    nonzero.

    ``logits`` is (..., C); ``targets`` holds integer classes of shape (...); ``mask``
    (optional, same shape as ``targets``) weights each position, 0 for padding; a target
    equal to ``ignore_index`` (-100, as in PyTorch) counts as padding too. With a mask,
    'mean' divides by the mask's sum; on an empty batch it is nan, as PyTorch's. Logits
    of -inf (a masked class) are fine: the loss only reads the target's entry.
    """
    targets = targets.data if isinstance(targets, Tensor) else targets
    xp = xp_of(logits.data)
    if not isinstance(targets, np.ndarray) and not backend.is_cupy_array(targets):
        targets = np.asarray(targets)
    if not np.issubdtype(targets.dtype, np.integer):
        raise TypeError(
            "cross_entropy: targets must be integer class indices; got dtype "
            f"{targets.dtype}"
        )
    if logits.ndim == 0 or tuple(targets.shape) != logits.shape[:-1]:
        raise ValueError(
            f"cross_entropy: targets have shape {tuple(targets.shape)}, expected "
            f"{logits.shape[:-1]} "
            f"(the logits' shape {logits.shape} without its class axis)"
        )
    n_classes = logits.shape[-1]
    ignored = targets == ignore_index
    any_ignored = bool(ignored.any()) if isinstance(ignored, np.ndarray) else True
    if isinstance(
        targets, np.ndarray
    ):  # checked on the host only: on a GPU this would force a sync
        real = targets[~ignored] if any_ignored else targets
        if real.size and (real.min() < 0 or real.max() >= n_classes):
            raise ValueError(
                f"cross_entropy: targets must lie in [0, {n_classes}); got values from "
                f"{real.min()} to "
                f"{real.max()} (a target equal to ignore_index={ignore_index} is "
                "skipped)"
            )
        if xp is not np:
            targets, ignored = backend.to_backend(targets, "cupy"), backend.to_backend(
                ignored, "cupy"
            )
    weight = _check_mask(mask, tuple(targets.shape), "cross_entropy")
    if any_ignored:
        keep = as_tensor((~ignored).astype(logits.dtype))
        weight = keep if weight is None else weight * keep
        targets = xp.where(ignored, 0, targets)
    # one primitive: logsumexp(z) - z_target per position, shifted by the max; only the
    # target's entry is read (not a product with a one-hot: 0 * -inf = nan at a masked
    # class), so -inf logits elsewhere are harmless; its gradient is softmax - onehot
    nll = apply(PRIMITIVES["softmax_cross_entropy"], logits, index=targets)
    if (
        weight is not None
    ):  # a masked-out position may hold -inf logits: its loss must not be 0 * inf
        nll = where(weight.data != 0, nll, 0.0)
    return _reduce(nll, weight, reduction)


def mse_loss(prediction: Tensor, target: Any, mask: Any = None, reduction: str = "mean") -> Tensor:
    """Mean of (prediction - target)^2 (weighted by ``mask`` when given)."""
    target = _as_tensor(target) if not isinstance(target, Tensor) else target
    if target.shape != prediction.shape:
        raise ValueError(f"mse_loss: target has shape {target.shape}, expected {prediction.shape}")
    return _reduce((prediction - target) ** 2, _check_mask(mask, prediction.shape, "mse_loss"), reduction)


def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p); identity when not training.
    With p = 1 every element is zeroed, as in PyTorch."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1]; got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    keep = (backend.uniform_like(x.data) >= p).astype(x.dtype) / (1.0 - p)
    return x * as_tensor(keep)
