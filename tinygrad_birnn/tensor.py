"""``Tensor``: an array that remembers how it was made, and ``backward``, which walks that record in reverse.

Each operation on tensors runs a primitive from :mod:`tinygrad_birnn.ops` and, when grad mode is on
(:mod:`tinygrad_birnn.grad_mode`, per thread) and any input requires a gradient, records a node of the graph
(:mod:`tinygrad_birnn.graph`). Values, dtypes (:mod:`tinygrad_birnn.dtypes`), shapes, indexing
(:mod:`tinygrad_birnn.indexing`) and gradients follow PyTorch; the differences are listed, with their
reasons, in the book's page on semantics.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import backend, dtypes
from .backend import xp_of
from .grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled  # noqa: F401 (re-exported)
from .graph import Node, backward_pass, topological_order
from .conversions import ConversionMixin
from .inplace import InPlaceMixin
from .reshaping import ShapeMixin
from .ops import PRIMITIVES, Primitive
from .shapes import check_matmul, reduction_args

_topological_order = topological_order  # the name chapter 3 used; topological_order is the public one
_is_float = dtypes.is_float


class Tensor(ConversionMixin, InPlaceMixin, ShapeMixin):
    """An n-dimensional array with an optional gradient, shaped like PyTorch's ``torch.Tensor``.

    ``Tensor(data)`` places an independent copy of ``data`` on the current backend. Python floats and lists
    of them become float32 (the default, as in PyTorch), Python ints int64; arrays and array-likes keep
    their dtype (a float64 NumPy array, or a float64 torch tensor, stays float64).

    >>> x = Tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    >>> (x * x).sum().backward()
    >>> x.grad
    Tensor([[2., 4.],
            [6., 8.]])
    """

    __slots__ = ("data", "grad", "requires_grad", "_node", "_index", "_version", "__weakref__")
    __array_priority__ = 1000  # ndarray (op) Tensor defers to Tensor's reflected operator

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None):
        if isinstance(data, Tensor):
            data = data.data
        if backend.is_cupy_array(data):
            data = data.astype(dtype if dtype is not None else data.dtype, copy=True)
            dtypes.category(data.dtype)
        else:
            data = backend.to_backend(dtypes.as_array(data, dtype), backend.backend_name())
        if requires_grad and not _is_float(data.dtype):
            raise TypeError(f"only floating-point tensors can require gradients; got dtype {data.dtype}")
        self.data = data
        self.grad: Tensor | None = None
        self.requires_grad = bool(requires_grad)
        self._node: Node | None = None
        self._index = 0
        self._version = 0

    @classmethod
    def _make(cls, data: Any, requires_grad: bool, node: Node | None, index: int = 0) -> "Tensor":
        t = cls.__new__(cls)
        if isinstance(data, np.generic):  # NumPy reductions return scalars: a tensor always holds an array
            data = np.asarray(data)
        t.data, t.grad, t.requires_grad, t._node, t._index, t._version = data, None, requires_grad, node, index, 0
        return t

    # --- properties -----------------------------------------------------------------------------------------
    shape = property(lambda self: tuple(self.data.shape), doc="The shape, as a tuple.")
    dtype = property(lambda self: self.data.dtype, doc="The array dtype.")
    ndim = property(lambda self: self.data.ndim, doc="The number of axes.")
    size = property(lambda self: int(self.data.size), doc="The number of elements.")
    device = property(lambda self: "cupy" if backend.is_cupy_array(self.data) else "numpy",
                      doc="The backend the data lives on: 'numpy' (host) or 'cupy' (GPU).")
    is_leaf = property(lambda self: self._node is None, doc="True for tensors made by the user, not by an op.")
    grad_fn = property(lambda self: self._node,
                       doc="The graph node (see :mod:`tinygrad_birnn.graph`) of the operation that made this "
                           "tensor, or None for a leaf or without grad mode, as PyTorch's ``grad_fn``.")
    T = property(lambda self: self.permute(*reversed(range(self.ndim))), doc="The tensor with its axes reversed.")

    def any(self) -> "Tensor":
        """True where any element is nonzero (a 0-d bool tensor, no gradient)."""
        return Tensor._make(self.data.any(), False, None)

    def all(self) -> "Tensor":
        """True where every element is nonzero (a 0-d bool tensor, no gradient)."""
        return Tensor._make(self.data.all(), False, None)

    def detach(self) -> "Tensor":
        """The same data, cut from the graph (no gradient flows through the result)."""
        return Tensor._make(self.data, False, None)

    def clone(self) -> "Tensor":
        """A copy of the data that stays in the graph (gradients flow back to ``self``)."""
        return apply(PRIMITIVES["cast"], self, dtype=self.dtype)

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        """Set ``requires_grad`` on a leaf, in place (floating point only); returns the tensor."""
        if flag and not _is_float(self.dtype):
            raise TypeError(f"only floating-point tensors can require gradients; got dtype {self.dtype}")
        if not self.is_leaf:
            raise RuntimeError("requires_grad_ can only be set on a leaf tensor (one made by the user, not by an op)")
        self.requires_grad = bool(flag)
        return self

    def retain_grad(self) -> "Tensor":
        """Keep this intermediate tensor's gradient in ``.grad`` after backward (leaves always keep theirs)."""
        if self._node is not None:
            if self._node.retained is None:
                self._node.retained = {}
            self._node.retained[self._index] = self
        return self

    def to(self, target: Any) -> "Tensor":
        """A copy on backend ``'numpy'``/``'cupy'`` (a new leaf), or cast to a dtype (differentiable)."""
        if isinstance(target, str) and target in backend.BACKENDS:
            moved = backend.to_backend(self.data, target)
            return Tensor._make(moved, self.requires_grad and self.is_leaf, None)
        dtype = np.dtype(target)
        dtypes.category(dtype)
        if dtype == self.dtype:
            return self
        return apply(PRIMITIVES["cast"], self, dtype=dtype)

    def float(self) -> "Tensor":
        """Cast to float32 (differentiable)."""
        return self.to(np.float32)

    def double(self) -> "Tensor":
        """Cast to float64 (differentiable)."""
        return self.to(np.float64)

    def long(self) -> "Tensor":
        """Cast to int64."""
        return self.to(np.int64)

    def int(self) -> "Tensor":
        """Cast to int32."""
        return self.to(np.int32)

    def bool(self) -> "Tensor":
        """Cast to bool."""
        return self.to(np.bool_)

    # --- backward -------------------------------------------------------------------------------------------

    def backward(self, grad: Any = None, retain_graph: bool = False) -> None:
        """Add d(self)/d(leaf) contracted with ``grad`` into every leaf's ``.grad``.

        ``grad`` may be left out only for a single-element tensor (it is then 1). The
        graph (its saved arrays and its links to intermediate tensors) is released
        afterwards unless ``retain_graph=True``. Raises if a tensor the graph used was
        changed in place since (version counters, as PyTorch).
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require grad: none of its inputs "
                "has requires_grad=True, "
                "or it was computed under no_grad()"
            )
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    "backward() without a gradient needs a single-element output; got "
                    f"shape {self.shape}: "
                    "pass grad= with that shape"
                )
            g = xp_of(self.data).ones_like(self.data)
        else:
            g = grad.data if isinstance(grad, Tensor) else grad
            if not hasattr(g, "shape"):
                g = xp_of(self.data).asarray(g, dtype=self.dtype)
            xp_of(g, self.data)
            if tuple(g.shape) != self.shape:
                raise ValueError(
                    f"backward(): grad has shape {tuple(g.shape)}, expected "
                    f"{self.shape} (the tensor's shape)"
                )
            g = g.astype(self.dtype, copy=False)
        if self._node is None:
            self._accumulate(g)
            return
        backward_pass(self, g, retain_graph)

    def _accumulate(self, g: Any) -> None:
        if self.grad is None:
            self.grad = Tensor._make(xp_of(g).array(g, dtype=self.data.dtype, copy=True), False, None)
        else:
            self.grad.data += g

    # --- operators -------------------------------------------------------------------------------------------

    def _lift(self, other: Any) -> "Tensor":
        if isinstance(other, Tensor):
            return other
        if type(other) is float and type(self.data) is np.ndarray and self.dtype.kind == "f":
            return Tensor._make(np.array(other, dtype=self.dtype), False, None)  # a float keeps the dtype
        if isinstance(other, (bool, int, float, np.generic)):
            dtypes.scalar_dtype(other)
            xp = xp_of(self.data)
            dtype = dtypes.result_type(self.data, other)
            return Tensor._make(xp.full((), other, dtype=dtype), False, None)  # filled on the device: no copy
        if hasattr(other, "shape") and hasattr(other, "dtype"):
            xp_of(self.data, other)  # raises if other lives on another backend
            dtypes.category(other.dtype)
            return Tensor._make(other, False, None)
        if isinstance(other, (list, tuple)):
            return Tensor(other)
        raise TypeError(f"cannot combine a Tensor with {type(other).__name__}: expected a Tensor, array or number")

    def _binary(self, name: str, other: Any, reflected: bool = False) -> "Tensor":
        lifted = self._lift(other)
        a, b = (lifted, self) if reflected else (self, lifted)
        if a.dtype == b.dtype and (a.dtype.kind == "f" or not isinstance(other, (bool, float))):
            dtype = a.dtype  # the common case: nothing to promote
        elif isinstance(other, Tensor) or hasattr(other, "shape"):
            dtype = dtypes.result_type(a.data, b.data)
        else:
            dtype = dtypes.result_type(self.data, other)
        if name == "div":
            dtype = dtypes.float_result(dtype)
        elif name == "sub" and (a.dtype == np.bool_ or b.dtype == np.bool_ or isinstance(other, bool)):
            raise TypeError("subtraction with a bool tensor is not supported (as in PyTorch): to invert a mask "
                            "use ~mask; otherwise cast it to an integer or float dtype first")
        elif name == "power" and dtype == np.bool_:
            raise TypeError("pow is not defined for bool tensors: cast one operand to an integer or float dtype")
        a, b = _cast(a, dtype), _cast(b, dtype)
        try:
            if name == "sub":  # composed: a - b = a + (-b)
                return apply(PRIMITIVES["add"], a, apply(PRIMITIVES["neg"], b))
            return apply(PRIMITIVES[name], a, b)
        except ValueError as error:
            if "broadcast" not in str(error):
                raise
            raise ValueError(
                f"{name}: shapes {a.shape} and {b.shape} cannot be broadcast together: aligned from the right, "
                "each pair of axes must be equal or one of them 1"
            ) from None

    def __add__(self, other: Any) -> "Tensor":
        return self._binary("add", other)

    def __radd__(self, other: Any) -> "Tensor":
        return self._binary("add", other, reflected=True)

    def __sub__(self, other: Any) -> "Tensor":
        return self._binary("sub", other)

    def __rsub__(self, other: Any) -> "Tensor":
        return self._binary("sub", other, reflected=True)

    def __mul__(self, other: Any) -> "Tensor":
        return self._binary("mul", other)

    def __rmul__(self, other: Any) -> "Tensor":
        return self._binary("mul", other, reflected=True)

    def __truediv__(self, other: Any) -> "Tensor":
        return self._binary("div", other)

    def __rtruediv__(self, other: Any) -> "Tensor":
        return self._binary("div", other, reflected=True)

    def __neg__(self) -> "Tensor":
        if self.dtype == np.bool_:
            raise TypeError("negation of a bool tensor is not supported: use ~ (logical not) instead")
        return apply(PRIMITIVES["neg"], self)

    def __pos__(self) -> "Tensor":
        return self

    def __invert__(self) -> "Tensor":
        if self.dtype.kind not in "biu":
            raise TypeError(f"~ needs a bool or integer tensor; got dtype {self.dtype}")
        return Tensor._make(~self.data, False, None)

    def __pow__(self, exponent: Any) -> "Tensor":
        if isinstance(exponent, (bool, int, float, np.number)) and not isinstance(exponent, np.ndarray):
            dtype = dtypes.result_type(self.data, exponent)
            if dtype == np.bool_:
                raise TypeError("pow is not defined for bool tensors: cast to an integer or float dtype first")
            if dtype.kind in "iu" and exponent < 0:
                raise ValueError(f"integers to negative integer powers are not allowed: {self.dtype} ** {exponent}")
            value = float(exponent) if dtype.kind == "f" else int(exponent)
            return apply(PRIMITIVES["pow"], _cast(self, dtype), exponent=value)
        return self._binary("power", exponent)

    def __rpow__(self, base: Any) -> "Tensor":
        return self._binary("power", base, reflected=True)

    def pow(self, exponent: Any) -> "Tensor":
        """``self ** exponent`` (a number, a NumPy number or a tensor)."""
        return self**exponent

    def maximum(self, other: Any) -> "Tensor":
        """Elementwise maximum (the gradient goes to the larger input, half to each on ties, as PyTorch)."""
        return self._binary("maximum", other)

    def __matmul__(self, other: Any) -> "Tensor":
        other = self._lift(other)
        check_matmul(self.shape, other.shape)
        dtype = dtypes.promote_types(self.dtype, other.dtype)
        return apply(PRIMITIVES["matmul"], _cast(self, dtype), _cast(other, dtype))

    def __rmatmul__(self, other: Any) -> "Tensor":
        return self._lift(other).__matmul__(self)

    def matmul(self, other: Any) -> "Tensor":
        """``self @ other`` (PyTorch's ``Tensor.matmul``)."""
        return self @ other

    def _compare(self, other: Any, op: str) -> "Tensor":
        if other is None or isinstance(other, str):
            return NotImplemented
        o = self._lift(other).data
        dtype = dtypes.result_type(self.data, o if isinstance(other, Tensor) or hasattr(other, "shape") else other)
        a, b = self.data.astype(dtype, copy=False), o.astype(dtype, copy=False)  # compared as PyTorch promotes
        return Tensor._make(getattr(a, op)(b), False, None)

    __lt__ = lambda self, o: self._compare(o, "__lt__")  # noqa: E731
    __le__ = lambda self, o: self._compare(o, "__le__")  # noqa: E731
    __gt__ = lambda self, o: self._compare(o, "__gt__")  # noqa: E731
    __ge__ = lambda self, o: self._compare(o, "__ge__")  # noqa: E731
    __eq__ = lambda self, o: self._compare(o, "__eq__")  # noqa: E731
    __ne__ = lambda self, o: self._compare(o, "__ne__")  # noqa: E731
    __hash__ = object.__hash__

    # --- elementwise functions -----------------------------------------------------------------------------

    def _float_unary(self, name: str) -> "Tensor":
        return apply(PRIMITIVES[name], _cast(self, dtypes.float_result(self.dtype)))

    def exp(self) -> "Tensor":
        """e**x, elementwise (integers give float32)."""
        return self._float_unary("exp")

    def log(self) -> "Tensor":
        """The natural logarithm, elementwise (integers give float32)."""
        return self._float_unary("log")

    def tanh(self) -> "Tensor":
        """tanh(x), elementwise (integers give float32)."""
        return self._float_unary("tanh")

    def sigmoid(self) -> "Tensor":
        """1/(1 + e**-x), elementwise, exact in both tails (integers give float32)."""
        return self._float_unary("sigmoid")

    def sqrt(self) -> "Tensor":
        """The square root, elementwise (integers give float32; the gradient at 0 is inf)."""
        return _cast(self, dtypes.float_result(self.dtype)) ** 0.5

    def relu(self) -> "Tensor":
        """max(x, 0), elementwise (gradient 0 at 0)."""
        return apply(PRIMITIVES["relu"], self)

    def abs(self) -> "Tensor":
        """The absolute value, elementwise (gradient 0 at 0)."""
        return apply(PRIMITIVES["abs"], self)

    # --- reductions (axis/keepdims, or PyTorch's dim/keepdim) ------------------------------------------------

    def sum(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None, keepdim: Any = None) -> "Tensor":
        """The sum over ``axis`` (all axes by default; ``dim``/``keepdim`` as in PyTorch)."""
        axis, keepdims = reduction_args(self.ndim, axis, keepdims, dim, keepdim)
        return apply(PRIMITIVES["sum"], self, axis=axis, keepdims=keepdims)

    def mean(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None, keepdim: Any = None) -> "Tensor":
        """The mean over ``axis`` (floating point only; nan over no elements)."""
        if not _is_float(self.dtype):
            raise TypeError(f"mean() needs a floating-point tensor; got dtype {self.dtype}: cast it with .float()")
        axis, keepdims = reduction_args(self.ndim, axis, keepdims, dim, keepdim)
        axes = range(self.ndim) if axis is None else ((axis,) if isinstance(axis, int) else axis)
        count = math.prod([self.shape[a] for a in axes])
        return self.sum(axis, keepdims) * (1.0 / count if count else float("nan"))  # empty: nan, as PyTorch

    def max(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None, keepdim: Any = None) -> "Tensor":
        """The largest value over ``axis``, like ``torch.amax``: ties share the gradient evenly."""
        return self._extreme("max", axis, keepdims, dim, keepdim)

    def min(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None, keepdim: Any = None) -> "Tensor":
        """The smallest value over ``axis``, like ``torch.amin``: ties share the gradient evenly."""
        return self._extreme("min", axis, keepdims, dim, keepdim)

    def _extreme(self, name: str, axis: Any, keepdims: bool, dim: Any, keepdim: Any) -> "Tensor":
        axis, keepdims = reduction_args(self.ndim, axis, keepdims, dim, keepdim)
        axes = range(self.ndim) if axis is None else ((axis,) if isinstance(axis, int) else axis)
        if any(self.shape[a] == 0 for a in axes) or (axis is None and self.size == 0):
            raise ValueError(f"{name}() of an empty tensor (shape {self.shape}) over axis {axis}: it has no "
                             "identity; reduce over a non-empty axis")
        if name == "max":
            return apply(PRIMITIVES["max"], self, axis=axis, keepdims=keepdims)
        if self.dtype.kind in "biu":  # no gradient to carry, and -x would overflow the most negative integer
            return Tensor._make(self.data.min(axis=axis, keepdims=keepdims), False, None)
        return -((-self).max(axis=axis, keepdims=keepdims))  # composed: min(x) = -max(-x)

    def logsumexp(self, axis: int = -1, keepdims: bool = False, *, dim: Any = None, keepdim: Any = None) -> "Tensor":
        """log(sum(exp(x))) over ``axis``, shifted by the max so it never overflows."""
        axis, keepdims = reduction_args(self.ndim, axis, keepdims, dim, keepdim)
        return apply(PRIMITIVES["logsumexp"], _cast(self, dtypes.float_result(self.dtype)), axis=axis,
                     keepdims=keepdims)

    def _apply(self, prim: Primitive, *inputs: "Tensor", **params: Any) -> Any:
        """:func:`apply`, for the mixins (which cannot import this module)."""
        return apply(prim, *inputs, **params)


def _cast(t: Tensor, dtype: Any) -> Tensor:
    """``t`` in ``dtype`` (differentiable), or ``t`` itself when it has that dtype already."""
    if t.dtype == dtype:
        return t
    if t.is_leaf and not t.requires_grad:
        return Tensor._make(t.data.astype(dtype), False, None)
    return apply(PRIMITIVES["cast"], t, dtype=np.dtype(dtype))


def apply(prim: Primitive, *inputs: Tensor, **params: Any) -> Any:
    """Run ``prim`` on the inputs' arrays; record a node when a gradient will be
    needed."""
    arrays = tuple([t.data for t in inputs])
    out = prim.forward(*arrays, **params)
    res = None
    if prim.has_residuals:
        out, res = out
    need = is_grad_enabled() and any([t.requires_grad for t in inputs])
    node = Node(prim, inputs, arrays, params, out, res) if need else None
    if isinstance(out, tuple):
        return tuple(Tensor._make(o, need, node, i) for i, o in enumerate(out))
    return Tensor._make(out, need, node)


def as_tensor(data: Any, dtype: Any = None) -> Tensor:
    """A tensor that shares ``data``'s memory when it is a plain array of the current backend, as
    ``torch.as_tensor``; otherwise a copy, as ``Tensor(data)``. Never records a graph."""
    if isinstance(data, Tensor):
        return data if dtype is None or data.dtype == np.dtype(dtype) else data.detach().to(dtype)
    plain = type(data) is np.ndarray if backend.backend_name() == "numpy" else backend.is_cupy_array(data)
    if plain and (dtype is None or np.dtype(dtype) == data.dtype):
        dtypes.category(data.dtype)
        return Tensor._make(data, False, None)
    return Tensor(data, dtype=dtype)
