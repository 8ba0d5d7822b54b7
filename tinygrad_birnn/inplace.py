"""In-place operations on a tensor, with version counters as PyTorch keeps them.

An in-place change of a tensor's data (``+=`` under ``no_grad``, ``add_``, ``zero_``, ``copy_``, item
assignment, an optimizer step, ``load_state_dict``) bumps its version; a recorded operation remembers the
versions of its inputs, and ``backward`` through it raises if one has changed since, instead of silently
using the new values. A leaf that requires grad may be changed in place only under ``no_grad``; inside a
graph, ``+=`` and friends fall back to the out-of-place operator (Python rebinds the name).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import dtypes
from .backend import xp_of
from .grad_mode import is_grad_enabled
from .indexing import plan_index

_METHODS = {"add": "__iadd__", "sub": "__isub__", "mul": "__imul__", "div": "__itruediv__"}


class InPlaceMixin:
    """The in-place half of :class:`~tinygrad_birnn.tensor.Tensor` (``data``, ``requires_grad`` and
    ``_version`` are the tensor's own)."""

    __slots__ = ()

    def bump_version(self) -> None:
        """Count an in-place change of the data, so a graph that saved the old values refuses to use them
        (optimizers and ``load_state_dict`` call it after they write into ``.data``)."""
        self._version += 1

    _bump = bump_version

    def _inplace(self, name: str, other: Any) -> "Tensor":
        if is_grad_enabled() and self.requires_grad:
            if self.is_leaf:
                raise RuntimeError(
                    f"in-place {name} on a leaf tensor that requires grad: wrap it in `with no_grad():` "
                    "(as an optimizer step does), or use the out-of-place operator")
            return NotImplemented  # inside a graph: Python falls back to the out-of-place operator
        value = getattr(other, "data", other) if hasattr(other, "requires_grad") else other
        result = dtypes.result_type(self.data, value) if name != "div" else dtypes.float_result(
            dtypes.result_type(self.data, value))
        if dtypes.promote_types(result, self.dtype) != self.dtype:
            raise TypeError(f"in-place {name}: the result type {result} cannot be stored in a tensor of dtype "
                            f"{self.dtype}")
        if hasattr(value, "shape") and np.broadcast_shapes(self.shape, tuple(value.shape)) != self.shape:
            raise ValueError(f"in-place {name}: a tensor of shape {tuple(value.shape)} cannot be broadcast "
                             f"to this tensor's shape {self.shape}")
        xp_of(self.data, value)
        if name == "copy":
            self.data[...] = value
        else:
            getattr(self.data, _METHODS[name])(value)
        self._bump()
        return self

    def __iadd__(self, other: Any) -> "Tensor":
        return self._inplace("add", other)

    def __isub__(self, other: Any) -> "Tensor":
        return self._inplace("sub", other)

    def __imul__(self, other: Any) -> "Tensor":
        return self._inplace("mul", other)

    def __itruediv__(self, other: Any) -> "Tensor":
        return self._inplace("div", other)

    def add_(self, other: Any, alpha: float = 1.0) -> "Tensor":
        """``self += alpha * other`` in place (under ``no_grad`` for a leaf that requires grad)."""
        return self._checked_inplace("add", other if alpha == 1 else other * alpha)

    def sub_(self, other: Any, alpha: float = 1.0) -> "Tensor":
        """``self -= alpha * other`` in place."""
        return self._checked_inplace("sub", other if alpha == 1 else other * alpha)

    def mul_(self, other: Any) -> "Tensor":
        """``self *= other`` in place."""
        return self._checked_inplace("mul", other)

    def div_(self, other: Any) -> "Tensor":
        """``self /= other`` in place (floating-point tensors)."""
        return self._checked_inplace("div", other)

    def copy_(self, source: Any) -> "Tensor":
        """The values of ``source`` (broadcast, cast to this dtype) written into this tensor."""
        src = getattr(source, "data", source) if hasattr(source, "requires_grad") else source
        return self._checked_inplace("copy", src.astype(self.dtype) if hasattr(src, "astype") else src)

    def zero_(self) -> "Tensor":
        """Every element set to 0, in place."""
        return self._checked_inplace("mul", 0)

    def fill_(self, value: Any) -> "Tensor":
        """Every element set to ``value``, in place."""
        return self._checked_inplace("copy", value)

    def _checked_inplace(self, name: str, other: Any) -> "Tensor":
        out = self._inplace(name, other)
        if out is NotImplemented:
            raise RuntimeError(f"{name}_ on a tensor inside a graph that requires grad is not supported; "
                               "use the out-of-place operation")
        return out

    def __setitem__(self, index: Any, value: Any) -> None:
        if is_grad_enabled() and self.requires_grad:
            raise RuntimeError("item assignment on a tensor that requires grad is not supported: build the "
                               "result with where() or concatenate(), or assign under no_grad()")
        v = value.data if hasattr(value, "requires_grad") else value
        steps = plan_index(index, self.data)
        if len(steps) != 1:
            raise IndexError("assignment through an index that mixes integers and arrays is not supported")
        self.data[steps[0] if len(steps[0]) != 1 else steps[0][0]] = v
        self._bump()
