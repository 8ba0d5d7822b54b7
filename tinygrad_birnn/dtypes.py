"""Dtypes as PyTorch has them: the default float32, and the rules by which mixed operands are promoted.

NumPy and PyTorch disagree on promotion, and users arrive with PyTorch's habits, so the engine follows
PyTorch (``torch.result_type``):

- the categories are bool < integer < floating point; operands of one category promote as usual
  (int32 with int64 is int64, float32 with float64 is float64), and across categories the higher category
  wins *without widening*: an int64 tensor with a float32 tensor is float32 (NumPy says float64);
- a Python number is weaker than any tensor: it can lift the category (an int tensor times 0.5 is
  float32, the default dtype) but never the width (a float32 tensor times a Python float stays float32);
- a 0-d tensor is weaker than a tensor with axes in the same way, but stronger than a Python number;
- true division and the floating-point functions (exp, log, tanh, sigmoid, ...) of integers give the
  default dtype, float32.

:func:`as_array` turns anything a user may hand to ``Tensor(...)`` into an independent host array.
"""
from __future__ import annotations

from typing import Any

import numpy as np

DEFAULT_FLOAT = np.dtype(np.float32)


def category(dtype: Any) -> int:
    """0 for bool, 1 for integers, 2 for floating point."""
    kind = np.dtype(dtype).kind
    if kind == "b":
        return 0
    if kind in "iu":
        return 1
    if kind == "f":
        return 2
    raise TypeError(f"unsupported dtype {np.dtype(dtype)}: expected bool, an integer or a floating-point dtype")


def is_float(dtype: Any) -> bool:
    return np.dtype(dtype).kind == "f"


def promote_types(a: Any, b: Any) -> np.dtype:
    """The dtype two tensors of dtypes ``a`` and ``b`` combine into (``torch.promote_types``)."""
    a, b = np.dtype(a), np.dtype(b)
    ca, cb = category(a), category(b)
    if ca != cb:
        return a if ca > cb else b
    return np.promote_types(a, b)


def _combine(higher: Any, lower: Any) -> Any:
    """Operands of a stronger group (``higher``) keep their dtype unless ``lower`` has a higher category."""
    if higher is None:
        return lower
    if lower is None or category(higher) >= category(lower):
        return higher
    return promote_types(higher, lower)


def scalar_dtype(value: Any) -> np.dtype:
    """The dtype a Python number takes in an operation: bool, int64 or the default float."""
    if isinstance(value, (bool, np.bool_)):
        return np.dtype(bool)
    if isinstance(value, (int, np.integer)):
        return np.dtype(np.int64)
    if isinstance(value, (float, np.floating)):
        return DEFAULT_FLOAT
    raise TypeError(f"expected a Python number (bool, int or float); got {type(value).__name__}")


def result_type(*operands: Any) -> np.dtype:
    """The dtype of an elementwise operation on ``operands`` (arrays or Python numbers), as PyTorch's."""
    groups: list[Any] = [None, None, None]  # tensors with axes, 0-d tensors, Python numbers
    for x in operands:
        if hasattr(x, "dtype") and hasattr(x, "ndim") and not isinstance(x, np.generic):
            group, dtype = (0 if x.ndim else 1), x.dtype
        else:
            group, dtype = 2, scalar_dtype(x)
        groups[group] = dtype if groups[group] is None else promote_types(groups[group], dtype)
    return np.dtype(_combine(groups[0], _combine(groups[1], groups[2])))


def float_result(dtype: Any) -> np.dtype:
    """``dtype`` if it is floating point, else the default float (for division and transcendental functions)."""
    return np.dtype(dtype) if is_float(dtype) else DEFAULT_FLOAT


def as_array(data: Any, dtype: Any = None) -> np.ndarray:
    """An independent host array holding ``data``, with PyTorch's rules for its dtype.

    Arrays and array-likes (NumPy arrays and their subclasses: masked arrays, matrices, memory maps; PyTorch
    tensors; anything with ``__array__``) keep their dtype; Python floats and nested lists of them become
    float32, Python ints int64, Python bools bool. The result never shares memory with ``data``.
    """
    if hasattr(data, "detach") and hasattr(data, "cpu") and hasattr(data, "numpy"):  # a torch.Tensor
        data = data.detach().cpu().resolve_conj().resolve_neg().numpy()
    if isinstance(data, np.ma.MaskedArray):
        data = data.data
    has_dtype = hasattr(data, "dtype") or hasattr(data, "__array__") or hasattr(data, "__array_interface__")
    try:
        host = np.array(data, copy=True, subok=False)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"Tensor data must be numbers or nested lists of numbers (of one shape), or an array; got {type(data).__name__} "
            f"({error})") from None
    if host.dtype == object or host.dtype.kind not in "biuf":
        raise TypeError(
            "Tensor data must be numbers or nested lists of numbers (bools, integers, floating point), "
            f"or an array of them; got dtype {host.dtype} from {type(data).__name__}")
    if not has_dtype and host.dtype == np.float64 and dtype is None:
        host = host.astype(DEFAULT_FLOAT)  # Python floats default to float32, as torch.tensor does
    if dtype is not None:
        target = np.dtype(dtype)
        category(target)
        host = host.astype(target, copy=False)
    return host
