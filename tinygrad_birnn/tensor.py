"""``Tensor``: an array that remembers how it was made, and ``backward``, which walks that record in reverse.

Each operation on tensors runs a primitive from :mod:`tinygrad_birnn.ops` and, when any input requires a
gradient, records a :class:`Node`: the primitive, its input tensors, the arrays its gradient needs and its
parameters. ``backward`` orders the nodes topologically with an explicit stack (no recursion, so a chain
of a hundred thousand nodes is fine), runs each node's vector-Jacobian product once, reduces broadcast
gradients in one place, and adds the results into the ``.grad`` of the leaves, as PyTorch does.
"""
from __future__ import annotations

import functools
from typing import Any, Iterable, Sequence

import numpy as np

from . import backend
from .backend import xp_of
from .ops import PRIMITIVES, Primitive, unbroadcast

_grad_enabled = True


def is_grad_enabled() -> bool:
    """False inside ``no_grad()``: operations then record no graph."""
    return _grad_enabled


class no_grad:
    """Context manager (and decorator) under which operations record no graph, as ``torch.no_grad``."""

    def __enter__(self) -> "no_grad":
        global _grad_enabled
        self._previous, _grad_enabled = _grad_enabled, False
        return self

    def __exit__(self, *exc: Any) -> None:
        global _grad_enabled
        _grad_enabled = self._previous

    def __call__(self, function: Any) -> Any:
        @functools.wraps(function)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with no_grad():
                return function(*args, **kwargs)

        return wrapped


class Node:
    """One recorded operation: what ran, on which tensors, and what its gradient needs."""

    __slots__ = ("prim", "parents", "inputs", "params", "ans", "res", "n_out", "freed", "retained")

    def __init__(self, prim: Primitive, parents: tuple, inputs: tuple, params: dict, ans: Any, res: Any):
        self.prim, self.parents, self.inputs, self.params = prim, parents, inputs, params
        self.ans, self.res = ans, res
        self.n_out = len(ans) if isinstance(ans, tuple) else 1
        self.freed = False
        self.retained: dict[int, Tensor] | None = None

    def vjp(self, gs: list) -> tuple:
        """The gradients of this node's inputs, given the gradients of its outputs (None counts as zero)."""
        if self.n_out == 1:
            g = gs[0]
        else:
            g = tuple(backend.xp_of(a).zeros_like(a) if gi is None else gi for gi, a in zip(gs, self.ans))
        if self.prim.has_residuals:
            return self.prim.vjp(g, self.ans, *self.inputs, res=self.res, **self.params)
        return self.prim.vjp(g, self.ans, *self.inputs, **self.params)

    def release(self) -> None:
        """Drop the saved arrays; a second backward through this node then fails loudly."""
        self.inputs = self.ans = self.res = None
        self.freed = True


def _is_float(dtype: Any) -> bool:
    return np.issubdtype(np.dtype(dtype), np.floating)


class Tensor:
    """An n-dimensional array with an optional gradient, shaped like PyTorch's ``torch.Tensor``.

    ``Tensor(data)`` places ``data`` on the current backend. Python floats and lists of them become
    float32 (the default, as in PyTorch); a NumPy array keeps its dtype, so float64 stays float64. The data
    is copied, as ``torch.tensor`` copies it.
    """

    __slots__ = ("data", "grad", "requires_grad", "_node", "_index", "__weakref__")
    __array_priority__ = 1000  # ndarray (op) Tensor defers to Tensor's reflected operator

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None):
        given = data.data if isinstance(data, Tensor) else data
        if isinstance(data, Tensor) or backend.is_cupy_array(data):
            data = given
        elif isinstance(data, (np.ndarray, np.generic)):
            data = backend.to_backend(data, backend.backend_name())
        else:
            host = np.asarray(data)
            if host.dtype == np.float64 and dtype is None:
                host = host.astype(np.float32)  # Python floats default to float32, as torch.tensor does
            if host.dtype == object:
                raise TypeError(f"Tensor data must be numbers or nested lists of numbers; got {type(data).__name__}")
            data = backend.to_backend(host, backend.backend_name())
        if dtype is not None and data.dtype != np.dtype(dtype):
            data = data.astype(dtype)
        if data is given:
            data = data.copy()  # as torch.tensor: the tensor owns its data, so in-place updates never leak out
        if requires_grad and not _is_float(data.dtype):
            raise TypeError(f"only floating-point tensors can require gradients; got dtype {data.dtype}")
        self.data = data
        self.grad: Tensor | None = None
        self.requires_grad = bool(requires_grad)
        self._node: Node | None = None
        self._index = 0

    @classmethod
    def _make(cls, data: Any, requires_grad: bool, node: Node | None, index: int = 0) -> "Tensor":
        t = cls.__new__(cls)
        t.data, t.grad, t.requires_grad, t._node, t._index = data, None, requires_grad, node, index
        return t

    # --- properties -----------------------------------------------------------------------------------------
    shape = property(lambda self: tuple(self.data.shape), doc="The shape, as a tuple.")
    dtype = property(lambda self: self.data.dtype, doc="The array dtype.")
    ndim = property(lambda self: self.data.ndim, doc="The number of axes.")
    size = property(lambda self: int(self.data.size), doc="The number of elements.")
    device = property(lambda self: "cupy" if backend.is_cupy_array(self.data) else "numpy",
                      doc="The backend the data lives on: 'numpy' (host) or 'cupy' (GPU).")
    is_leaf = property(lambda self: self._node is None, doc="True for tensors made by the user, not by an op.")
    T = property(lambda self: self.transpose(), doc="The tensor with its axes reversed.")

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        body = np.array2string(backend.to_numpy(self.data), separator=", ", precision=4, prefix="Tensor(")
        extra = ", requires_grad=True" if self.requires_grad else ""
        if self.dtype != np.float32:
            extra = f", dtype={self.dtype}" + extra
        return f"Tensor({body}{extra})"

    def numpy(self) -> np.ndarray:
        """A host (NumPy) copy of the data, detached from the graph."""
        return backend.to_numpy(self.data)

    def item(self) -> float:
        """The value of a single-element tensor as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"item() needs a single-element tensor; got shape {self.shape}")
        return self.data.item()

    def tolist(self) -> Any:
        return self.numpy().tolist()

    def detach(self) -> "Tensor":
        """The same data, cut from the graph (no gradient flows through the result)."""
        return Tensor._make(self.data, False, None)

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        if flag and not _is_float(self.dtype):
            raise TypeError(f"only floating-point tensors can require gradients; got dtype {self.dtype}")
        if not self.is_leaf:
            raise RuntimeError("requires_grad_ can only be set on a leaf tensor (one made by the user, not by an op)")
        self.requires_grad = flag
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
        if dtype == self.dtype:
            return self
        return apply(PRIMITIVES["cast"], self, dtype=dtype)

    def float(self) -> "Tensor":
        return self.to(np.float32)

    def double(self) -> "Tensor":
        return self.to(np.float64)

    # --- backward -------------------------------------------------------------------------------------------
    def backward(self, grad: Any = None, retain_graph: bool = False) -> None:
        """Add d(self)/d(leaf) contracted with ``grad`` into every leaf's ``.grad``.

        ``grad`` may be left out only for a single-element tensor (it is then 1). The graph's saved arrays
        are released afterwards unless ``retain_graph=True``.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require grad: none of its inputs has requires_grad=True, "
                "or it was computed under no_grad()"
            )
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() without a gradient needs a single-element output; got shape {self.shape}: "
                    "pass grad= with that shape"
                )
            g = xp_of(self.data).ones_like(self.data)
        else:
            g = grad.data if isinstance(grad, Tensor) else grad
            if not hasattr(g, "shape"):
                g = xp_of(self.data).asarray(g, dtype=self.dtype)
            xp_of(g, self.data)
            if tuple(g.shape) != self.shape:
                raise ValueError(f"backward(): grad has shape {tuple(g.shape)}, expected {self.shape} (the tensor's shape)")
            g = g.astype(self.dtype, copy=False)
        if self._node is None:
            self._accumulate(g)
            return
        order = _topological_order(self._node)
        grads: dict[int, list] = {id(self._node): [None] * self._node.n_out}
        grads[id(self._node)][self._index] = g
        leaf_grads: dict[int, list] = {}
        for node in reversed(order):
            gs = grads.pop(id(node), None)
            if gs is None:
                continue
            if node.retained:
                for i, t in node.retained.items():
                    if gs[i] is not None:
                        t._accumulate(gs[i])
            for parent, pg, x in zip(node.parents, node.vjp(gs), node.inputs):
                if pg is None or not parent.requires_grad:
                    continue
                if pg.shape != x.shape:
                    pg = unbroadcast(pg, x.shape)
                if pg.dtype != x.dtype:
                    pg = pg.astype(x.dtype)
                if parent._node is None:
                    slot = leaf_grads.setdefault(id(parent), [parent, None])
                    slot[1] = pg if slot[1] is None else slot[1] + pg
                else:
                    slots = grads.setdefault(id(parent._node), [None] * parent._node.n_out)
                    i = parent._index
                    slots[i] = pg if slots[i] is None else slots[i] + pg
        for leaf, pg in leaf_grads.values():
            leaf._accumulate(pg)
        if not retain_graph:
            for node in order:
                node.release()

    def _accumulate(self, g: Any) -> None:
        if self.grad is None:
            self.grad = Tensor._make(xp_of(g).array(g, dtype=self.dtype, copy=True), False, None)
        else:
            self.grad.data += g

    # --- operators -------------------------------------------------------------------------------------------
    def _lift(self, other: Any) -> "Tensor":
        if isinstance(other, Tensor):
            return other
        if isinstance(other, (bool, int, float)):
            xp = xp_of(self.data)
            dtype = self.dtype if _is_float(self.dtype) else np.asarray(other).dtype
            return Tensor._make(xp.full((), other, dtype=dtype), False, None)  # filled on the device: no copy
        if hasattr(other, "shape"):
            xp_of(self.data, other)  # raises if other lives on another backend
            return Tensor._make(other, False, None)
        raise TypeError(f"cannot combine a Tensor with {type(other).__name__}: expected a Tensor, array or number")

    def _binary(self, name: str, other: Any, reflected: bool = False) -> "Tensor":
        other = self._lift(other)
        a, b = (other, self) if reflected else (self, other)
        try:
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
        return self._binary("add", -self._lift(other))

    def __rsub__(self, other: Any) -> "Tensor":
        return self._lift(other)._binary("add", -self)

    def __mul__(self, other: Any) -> "Tensor":
        return self._binary("mul", other)

    def __rmul__(self, other: Any) -> "Tensor":
        return self._binary("mul", other, reflected=True)

    def __truediv__(self, other: Any) -> "Tensor":
        return self._binary("div", other)

    def __rtruediv__(self, other: Any) -> "Tensor":
        return self._binary("div", other, reflected=True)

    def __neg__(self) -> "Tensor":
        return apply(PRIMITIVES["neg"], self)

    def __pow__(self, exponent: Any) -> "Tensor":
        if isinstance(exponent, (int, float)):
            return apply(PRIMITIVES["pow"], self, exponent=exponent)
        return (self._lift(exponent) * self.log()).exp()  # x**y = exp(y log x) for a tensor exponent

    def __rpow__(self, base: Any) -> "Tensor":
        return (self * float(np.log(base))).exp()

    def __matmul__(self, other: Any) -> "Tensor":
        other = self._lift(other)
        _check_matmul(self.shape, other.shape)
        return apply(PRIMITIVES["matmul"], self, other)

    def __rmatmul__(self, other: Any) -> "Tensor":
        return self._lift(other).__matmul__(self)

    def _compare(self, other: Any, op: str) -> "Tensor":
        o = self._lift(other).data
        return Tensor._make(getattr(self.data, op)(o), False, None)

    __lt__ = lambda self, o: self._compare(o, "__lt__")  # noqa: E731
    __le__ = lambda self, o: self._compare(o, "__le__")  # noqa: E731
    __gt__ = lambda self, o: self._compare(o, "__gt__")  # noqa: E731
    __ge__ = lambda self, o: self._compare(o, "__ge__")  # noqa: E731
    __eq__ = lambda self, o: self._compare(o, "__eq__")  # noqa: E731
    __ne__ = lambda self, o: self._compare(o, "__ne__")  # noqa: E731
    __hash__ = object.__hash__

    # --- elementwise functions -----------------------------------------------------------------------------
    def exp(self) -> "Tensor":
        return apply(PRIMITIVES["exp"], self)

    def log(self) -> "Tensor":
        return apply(PRIMITIVES["log"], self)

    def tanh(self) -> "Tensor":
        return apply(PRIMITIVES["tanh"], self)

    def sigmoid(self) -> "Tensor":
        return apply(PRIMITIVES["sigmoid"], self)

    def relu(self) -> "Tensor":
        return apply(PRIMITIVES["relu"], self)

    def abs(self) -> "Tensor":
        return apply(PRIMITIVES["abs"], self)

    def sqrt(self) -> "Tensor":
        return self**0.5

    # --- reductions ------------------------------------------------------------------------------------------
    def sum(self, axis: Any = None, keepdims: bool = False) -> "Tensor":
        return apply(PRIMITIVES["sum"], self, axis=_axis(axis, self.ndim), keepdims=keepdims)

    def mean(self, axis: Any = None, keepdims: bool = False) -> "Tensor":
        axis = _axis(axis, self.ndim)
        axes = range(self.ndim) if axis is None else ((axis,) if isinstance(axis, int) else axis)
        count = int(np.prod([self.shape[a] for a in axes]))
        return self.sum(axis, keepdims) * (1.0 / count)

    def max(self, axis: Any = None, keepdims: bool = False) -> "Tensor":
        return apply(PRIMITIVES["max"], self, axis=_axis(axis, self.ndim), keepdims=keepdims)

    def min(self, axis: Any = None, keepdims: bool = False) -> "Tensor":
        return -((-self).max(axis, keepdims))

    def logsumexp(self, axis: int = -1, keepdims: bool = False) -> "Tensor":
        return apply(PRIMITIVES["logsumexp"], self, axis=_axis(axis, self.ndim), keepdims=keepdims)

    # --- shape -----------------------------------------------------------------------------------------------
    def reshape(self, *shape: Any) -> "Tensor":
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        new_shape = _resolve_shape(self.shape, tuple(int(n) for n in shape))
        return apply(PRIMITIVES["reshape"], self, shape=new_shape)

    def transpose(self, *axes: Any) -> "Tensor":
        axes = tuple(axes[0]) if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        axes = axes or tuple(reversed(range(self.ndim)))
        if sorted(a % max(self.ndim, 1) for a in axes) != list(range(self.ndim)):
            raise ValueError(f"transpose: axes {axes} are not a permutation of the {self.ndim} axes of shape {self.shape}")
        return apply(PRIMITIVES["transpose"], self, axes=tuple(a % self.ndim for a in axes))

    def __getitem__(self, index: Any) -> "Tensor":
        return apply(PRIMITIVES["getitem"], self, index=_check_index(index, self))


def apply(prim: Primitive, *inputs: Tensor, **params: Any) -> Any:
    """Run ``prim`` on the inputs' arrays; record a node when a gradient will be needed."""
    arrays = tuple(t.data for t in inputs)
    out = prim.forward(*arrays, **params)
    res = None
    if prim.has_residuals:
        out, res = out
    need = _grad_enabled and any(t.requires_grad for t in inputs)
    node = Node(prim, inputs, arrays, params, out, res) if need else None
    if isinstance(out, tuple):
        return tuple(Tensor._make(o, need, node, i) for i, o in enumerate(out))
    return Tensor._make(out, need, node)


def _topological_order(root: Node) -> list[Node]:
    """Nodes reachable from ``root``, each after all the nodes it depends on (iterative depth-first search)."""
    order: list[Node] = []
    seen: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        if node.freed:
            raise RuntimeError(
                "backward() through a graph whose saved arrays were released by an earlier backward(); "
                "pass retain_graph=True to the first backward() to go through the graph twice"
            )
        seen.add(id(node))
        stack.append((node, True))
        for parent in node.parents:
            if parent._node is not None and id(parent._node) not in seen:
                stack.append((parent._node, False))
    return order


def _axis(axis: Any, ndim: int) -> Any:
    """Validate an axis argument (None, an int or a tuple of ints) against ``ndim``."""
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    for a in axes:
        if not isinstance(a, (int, np.integer)) or not -max(ndim, 1) <= a < max(ndim, 1):
            raise ValueError(f"axis {a!r} is out of range for a tensor with {ndim} axes")
    normalised = tuple(int(a) % max(ndim, 1) for a in axes)
    return normalised[0] if isinstance(axis, (int, np.integer)) else normalised


def _resolve_shape(old: tuple, shape: tuple) -> tuple:
    """``shape`` with a single -1 filled in; raises if it does not hold the same number of elements."""
    size = int(np.prod(old))
    known = int(np.prod([n for n in shape if n != -1]))
    if shape.count(-1) == 1 and known > 0 and size % known == 0:
        shape = tuple(size // known if n == -1 else n for n in shape)
    if shape.count(-1) or any(n < 0 for n in shape) or int(np.prod(shape)) != size:
        raise ValueError(f"reshape: cannot reshape a tensor of shape {old} ({size} elements) into {shape}")
    return shape


def _check_matmul(a: tuple, b: tuple) -> None:
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


def _check_index(index: Any, t: Tensor) -> Any:
    """Turn Tensors and lists in an index into arrays and reject what is not an index (floats, say)."""
    items = index if isinstance(index, tuple) else (index,)
    out = []
    xp = xp_of(t.data)
    for i in items:
        if isinstance(i, Tensor):
            i = i.data
        if isinstance(i, list):
            i = np.asarray(i)
        if hasattr(i, "dtype"):
            if not (np.issubdtype(i.dtype, np.integer) or i.dtype == np.bool_):
                raise IndexError(f"index arrays must hold integers or booleans; got dtype {i.dtype}")
            if isinstance(i, np.ndarray) and xp is not np:
                i = xp.asarray(i)
            xp_of(i, t.data)
        elif not (isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis):
            raise IndexError(
                f"a tensor can be indexed by integers, slices, None, Ellipsis or integer/boolean arrays; got {i!r}"
            )
        out.append(i)
    return tuple(out) if isinstance(index, tuple) else out[0]


# --- functions on several tensors ------------------------------------------------------------------------------
def tensor(data: Any, requires_grad: bool = False, dtype: Any = None) -> Tensor:
    """``Tensor(data, ...)``, spelled as in PyTorch."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def _as_tensors(items: Iterable[Any]) -> list[Tensor]:
    return [t if isinstance(t, Tensor) else Tensor(t) for t in items]


def concatenate(tensors: Sequence[Any], axis: int = 0) -> Tensor:
    """Join tensors along an existing axis (gradients split back)."""
    ts = _as_tensors(tensors)
    if not ts:
        raise ValueError("concatenate needs at least one tensor")
    try:
        return apply(PRIMITIVES["concatenate"], *ts, axis=axis)
    except ValueError as error:
        raise ValueError(f"concatenate along axis {axis}: shapes {[t.shape for t in ts]} differ off that axis ({error})") from None


def stack(tensors: Sequence[Any], axis: int = 0) -> Tensor:
    """Join tensors of one shape along a new axis."""
    ts = _as_tensors(tensors)
    shapes = {t.shape for t in ts}
    if len(shapes) != 1:
        raise ValueError(f"stack needs tensors of one shape; got shapes {[t.shape for t in ts]}")
    return apply(PRIMITIVES["stack"], *ts, axis=axis)


def unstack(x: Tensor) -> tuple:
    """The slices x[0], ..., x[n-1] along the first axis, as one autograd node (the inverse of ``stack``)."""
    out = apply(PRIMITIVES["unstack"], x)
    return out if isinstance(out, tuple) else (out,)


def where(condition: Any, a: Any, b: Any) -> Tensor:
    """``a`` where ``condition`` holds, else ``b``; the condition gets no gradient."""
    cond = condition.data if isinstance(condition, Tensor) else condition
    ta = a if isinstance(a, Tensor) else (b._lift(a) if isinstance(b, Tensor) else Tensor(a))
    tb = b if isinstance(b, Tensor) else ta._lift(b)
    return apply(PRIMITIVES["where"], ta, tb, condition=cond.astype(bool))


def maximum(a: Any, b: Any) -> Tensor:
    """Elementwise maximum of two tensors (the gradient goes to the larger)."""
    ta = a if isinstance(a, Tensor) else b._lift(a)
    return ta._binary("maximum", b)


def zeros(*shape: Any, dtype: Any = np.float32, requires_grad: bool = False) -> Tensor:
    shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return Tensor(backend.get_backend().zeros(shape, dtype=dtype), requires_grad=requires_grad)


def ones(*shape: Any, dtype: Any = np.float32, requires_grad: bool = False) -> Tensor:
    shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return Tensor(backend.get_backend().ones(shape, dtype=dtype), requires_grad=requires_grad)
