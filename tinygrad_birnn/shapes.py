"""Checking shapes and axes: one place for the rules (and the messages) of axes, reshapes and products."""
from __future__ import annotations

import math
from typing import Any

import numpy as np


def normalize_axis(axis: Any, ndim: int) -> Any:
    """Validate an axis argument (None, an int or a tuple of ints) against ``ndim``."""
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    for a in axes:
        if not isinstance(a, (int, np.integer)) or not -max(ndim, 1) <= a < max(ndim, 1):
            raise ValueError(f"axis {a!r} is out of range for a tensor with {ndim} axes")
    normalised = tuple(int(a) % max(ndim, 1) for a in axes)
    return normalised[0] if isinstance(axis, (int, np.integer)) else normalised


def resolve_shape(old: tuple, shape: tuple) -> tuple:
    """``shape`` with a single -1 filled in; raises if it does not hold the same number of elements."""
    size = math.prod(old)
    known = math.prod([n for n in shape if n != -1])
    if shape.count(-1) == 1 and known > 0 and size % known == 0:
        shape = tuple(size // known if n == -1 else n for n in shape)
    if shape.count(-1) or any(n < 0 for n in shape) or math.prod(shape) != size:
        raise ValueError(f"reshape: cannot reshape a tensor of shape {old} ({size} elements) into {shape}")
    return shape


def check_matmul(a: tuple, b: tuple) -> None:
    if not a or not b:
        raise ValueError(f"matmul needs operands with at least one axis; got shapes {a} and {b}")
    inner_b = b[0] if len(b) == 1 else b[-2]
    if a[-1] != inner_b:
        where = "only" if len(b) == 1 else "second-to-last"
        raise ValueError(
            f"matmul: shapes {a} and {b} do not align: the left operand's last axis ({a[-1]}) must equal "
            f"the right operand's {where} axis ({inner_b})"
        )
    try:
        np.broadcast_shapes(a[:-2], b[:-2])
    except ValueError:
        raise ValueError(f"matmul: the batch axes of shapes {a} and {b} cannot be broadcast together") from None


def reduction_args(ndim: int, axis: Any, keepdims: bool, dim: Any, keepdim: Any) -> tuple:
    """The axis and keepdims of a reduction, from NumPy's names or PyTorch's; a 0-d tensor accepts axis 0 or -1."""
    if dim is not None:
        axis = dim
    if keepdim is not None:
        keepdims = bool(keepdim)
    if ndim == 0 and axis is not None:
        for a in ((axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)):
            normalize_axis(a, 0)
        return None, keepdims
    if isinstance(axis, (tuple, list)) and not axis:
        return None, keepdims
    return normalize_axis(axis, ndim), keepdims
