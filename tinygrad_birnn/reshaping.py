"""Reshaping a tensor: new shapes, merged and new axes, axis orders, and indexing, as PyTorch has them.

The methods of :class:`~tinygrad_birnn.tensor.Tensor` that change how its elements are laid out, not their
values: each one checks its arguments against the tensor's shape (the rules and messages are in
:mod:`tinygrad_birnn.shapes` and :mod:`tinygrad_birnn.indexing`) and runs one primitive, ``reshape``,
``transpose`` or ``getitem``, whose gradient puts the elements back.
"""
from __future__ import annotations

from typing import Any, TypeVar

from .indexing import plan_index
from .ops import PRIMITIVES
from .shapes import normalize_axis as _axis, resolve_shape

# each method returns a tensor of the caller's own class; the mixin cannot import Tensor (tensor.py imports
# this module), so the annotations name the class of self
Tensor = TypeVar("Tensor", bound="ShapeMixin")


class ShapeMixin:
    """The reshaping half of :class:`~tinygrad_birnn.tensor.Tensor` (``shape``, ``ndim``, ``data`` and
    ``_apply`` are the tensor's own)."""

    __slots__ = ()

    def reshape(self: Tensor, *shape: Any) -> "Tensor":
        """The same elements in a new shape (one axis may be -1)."""
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        new_shape = resolve_shape(self.shape, tuple(int(n) for n in shape))
        return self._apply(PRIMITIVES["reshape"], self, shape=new_shape)

    view = reshape

    def flatten(self: Tensor, start_dim: int = 0, end_dim: int = -1) -> "Tensor":
        """Axes ``start_dim`` to ``end_dim`` merged into one, as ``torch.flatten``."""
        if self.ndim == 0:
            return self.reshape(1)
        start, end = _axis(start_dim, self.ndim), _axis(end_dim, self.ndim)
        return self.reshape(self.shape[:start] + (-1,) + self.shape[end + 1:])

    def unsqueeze(self: Tensor, dim: int) -> "Tensor":
        """A new axis of size 1 at position ``dim``."""
        d = _axis(dim, self.ndim + 1)
        return self.reshape(self.shape[:d] + (1,) + self.shape[d:])

    def squeeze(self: Tensor, dim: Any = None) -> "Tensor":
        """Axes of size 1 removed (all of them, or only ``dim``)."""
        if dim is None:
            return self.reshape(tuple(n for n in self.shape if n != 1))
        if self.ndim == 0:
            _axis(dim, 0)
            return self
        d = _axis(dim, self.ndim)
        return self if self.shape[d] != 1 else self.reshape(self.shape[:d] + self.shape[d + 1:])

    def permute(self: Tensor, *dims: Any) -> "Tensor":
        """The axes reordered: axis i of the result is axis ``dims[i]`` of ``self`` (PyTorch's ``permute``)."""
        dims = tuple(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        if len(dims) != self.ndim:
            raise ValueError(f"permute: dims {dims} must name each of the {self.ndim} axes of shape {self.shape} once")
        axes = tuple(_axis(d, self.ndim) for d in dims) if self.ndim else ()
        if sorted(axes) != list(range(self.ndim)):
            raise ValueError(f"permute: dims {dims} are not a permutation of the {self.ndim} axes of shape {self.shape}")
        return self._apply(PRIMITIVES["transpose"], self, axes=axes)

    def transpose(self: Tensor, *dims: Any) -> "Tensor":
        """``transpose(dim0, dim1)`` swaps two axes, as PyTorch; with no argument, or a full permutation of
        the axes, it reorders them as NumPy's ``transpose`` does."""
        dims = tuple(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        if not dims:
            return self.permute(*reversed(range(self.ndim)))
        if len(dims) == 2:  # PyTorch: swap two axes (on a 0-d tensor only 0 and -1 are allowed)
            d0, d1 = (_axis(d, max(self.ndim, 1)) for d in dims)
            order = list(range(self.ndim))
            if self.ndim:
                order[d0], order[d1] = order[d1], order[d0]
            return self.permute(*order)
        return self.permute(*dims)

    def t(self: Tensor) -> "Tensor":
        """The transpose of a tensor with at most 2 axes."""
        if self.ndim > 2:
            raise ValueError(f"t() expects a tensor with at most 2 axes; got shape {self.shape}: use transpose(0, 1)")
        return self.transpose()

    def __getitem__(self: Tensor, index: Any) -> "Tensor":
        out = self
        for step in plan_index(index, self.data):
            out = self._apply(PRIMITIVES["getitem"], out, index=step if len(step) != 1 else step[0])
        return out
