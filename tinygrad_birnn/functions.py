"""Functions of several tensors, and ways to make tensors: ``tensor``, ``as_tensor``, ``zeros``, ``ones``,
``concatenate``, ``stack``, ``unstack``, ``where``, ``maximum``. Mixed dtypes are promoted as PyTorch's
``torch.cat`` and ``torch.where`` promote them (:mod:`tinygrad_birnn.dtypes`)."""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from . import backend, dtypes
from .ops import PRIMITIVES
from .shapes import normalize_axis
from .tensor import Tensor, apply, as_tensor


def tensor(data: Any, requires_grad: bool = False, dtype: Any = None) -> Tensor:
    """``Tensor(data, ...)``, spelled as in PyTorch."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def _as_tensors(items: Iterable[Any]) -> list[Tensor]:
    return [t if isinstance(t, Tensor) else Tensor(t) for t in items]


def _promoted(ts: list) -> list:
    dtype = ts[0].dtype
    for t in ts[1:]:
        dtype = dtypes.promote_types(dtype, t.dtype)
    return [t.to(dtype) for t in ts]


def concatenate(tensors: Sequence[Any], axis: int = 0) -> Tensor:
    """Join tensors along an existing axis (dtypes promoted as PyTorch; gradients split back)."""
    ts = _as_tensors(tensors)
    if not ts:
        raise ValueError("concatenate needs at least one tensor")
    if len({t.ndim for t in ts}) != 1 or ts[0].ndim == 0:
        raise ValueError(f"concatenate needs tensors with the same number (>= 1) of axes; got shapes {[t.shape for t in ts]}")
    axis = normalize_axis(axis, ts[0].ndim)
    try:
        return apply(PRIMITIVES["concatenate"], *_promoted(ts), axis=axis)
    except ValueError as error:
        raise ValueError(f"concatenate along axis {axis}: shapes {[t.shape for t in ts]} differ off that axis ({error})") from None


def stack(tensors: Sequence[Any], axis: int = 0) -> Tensor:
    """Join tensors of one shape along a new axis."""
    ts = _as_tensors(tensors)
    if not ts:
        raise ValueError("stack needs at least one tensor")
    shapes = {t.shape for t in ts}
    if len(shapes) != 1:
        raise ValueError(f"stack needs tensors of one shape; got shapes {[t.shape for t in ts]}")
    axis = normalize_axis(axis, ts[0].ndim + 1)
    return apply(PRIMITIVES["stack"], *_promoted(ts), axis=axis)


def unstack(x: Tensor) -> tuple:
    """The slices x[0], ..., x[n-1] along the first axis, as one autograd node (the inverse of ``stack``)."""
    if x.ndim == 0:
        raise ValueError("unstack needs a tensor with at least one axis; got a 0-d tensor")
    if x.shape[0] == 0:
        return ()
    return apply(PRIMITIVES["unstack"], x)


def where(condition: Any, a: Any, b: Any) -> Tensor:
    """``a`` where ``condition`` holds, else ``b`` (dtypes promoted as PyTorch); the condition gets no gradient."""
    cond = condition.data if isinstance(condition, Tensor) else condition
    if not hasattr(cond, "dtype"):
        cond = backend.to_backend(np.asarray(cond), backend.backend_name())
    dtype = dtypes.result_type(*(x.data if isinstance(x, Tensor) else x for x in (a, b)))
    xp = backend.xp_of(*(x.data for x in (a, b) if isinstance(x, Tensor))) if any(
        isinstance(x, Tensor) for x in (a, b)) else backend.get_backend()
    ta, tb = (x if isinstance(x, Tensor) else as_tensor(xp.asarray(x, dtype=dtype)) for x in (a, b))
    return apply(PRIMITIVES["where"], ta.to(dtype), tb.to(dtype), condition=cond.astype(bool))


def maximum(a: Any, b: Any) -> Tensor:
    """Elementwise maximum (the gradient goes to the larger input, half to each on ties, as PyTorch)."""
    return a.maximum(b) if isinstance(a, Tensor) else Tensor(b).maximum(a) if not isinstance(b, Tensor) \
        else b.maximum(a)


def zeros(*shape: Any, dtype: Any = np.float32, requires_grad: bool = False) -> Tensor:
    shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return Tensor(backend.get_backend().zeros(shape, dtype=dtype), requires_grad=requires_grad)


def ones(*shape: Any, dtype: Any = np.float32, requires_grad: bool = False) -> Tensor:
    shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return Tensor(backend.get_backend().ones(shape, dtype=dtype), requires_grad=requires_grad)
