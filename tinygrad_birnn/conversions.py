"""How a tensor turns into Python and NumPy values: ``item``, ``tolist``, ``numpy``, ``bool``, ``float``,
``int``, ``len``, ``repr``, as PyTorch's do (``bool`` of a tensor with more than one element raises)."""
from __future__ import annotations

from typing import Any

import numpy as np

from . import backend


class ConversionMixin:
    """The conversions of :class:`~tinygrad_birnn.tensor.Tensor` (``data`` is the tensor's array)."""

    __slots__ = ()

    def dim(self) -> int:
        """The number of axes (PyTorch's name)."""
        return self.ndim

    def numel(self) -> int:
        """The number of elements (PyTorch's name)."""
        return self.size

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return len(self.data)

    def __bool__(self) -> bool:
        if self.size != 1:
            raise RuntimeError(
                f"the truth value of a tensor with {self.size} elements (shape {self.shape}) is ambiguous: "
                "use .any() or .all(), or compare a single element")
        return bool(self.data.item())

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self.size != 1 or self.dtype.kind not in "iu":
            raise TypeError(f"only a single-element integer tensor can be used as an index; got {self.dtype} "
                            f"of shape {self.shape}")
        return int(self.item())

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        host = backend.to_numpy(self.data)
        return host if dtype is None else host.astype(dtype)

    def __repr__(self) -> str:
        body = np.array2string(backend.to_numpy(self.data), separator=", ", precision=4, prefix="Tensor(")
        extra = ", requires_grad=True" if self.requires_grad else ""
        if self.dtype != np.float32:
            extra = f", dtype={self.dtype}" + extra
        return f"Tensor({body}{extra})"

    def numpy(self) -> np.ndarray:
        """A host (NumPy) copy of the data, detached from the graph."""
        return backend.to_numpy(self.data)

    def item(self) -> Any:
        """The value of a single-element tensor as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"item() needs a single-element tensor; got shape {self.shape}")
        return self.data.item()

    def tolist(self) -> Any:
        return self.numpy().tolist()
