"""The primitive registry: every operation the engine differentiates, its forward beside its gradient.

A primitive works on raw arrays (NumPy or CuPy). ``forward(*inputs, **params)`` computes the result;
``vjp(g, ans, *inputs, **params)`` receives the gradient ``g`` of the loss with respect to that result, the
result ``ans`` itself (so tanh, exp and sigmoid reuse it) and the inputs, and returns the vector-Jacobian
product for each input, or ``None`` where an input gets no gradient.

Gradients of broadcasting operations may come back in the broadcast shape: the engine reduces them to each
input's shape in one place, :func:`unbroadcast`, never inside a rule.

Everything not listed here (softmax, losses, ``-``, ``mean``, ...) is composed from these primitives, so the
calculus to check lives in this one file. ``PRIMITIVES`` is a plain dict so tests can loop over it.
"""
from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Any, Callable

import numpy as np

from .backend import matmul, scatter_add, xp_of
from . import workspace
from .reductions import max_last, sum_leading


@dataclass(frozen=True)
class Primitive:
    """One differentiable operation: its name, forward, VJP and the formula in one
    line."""

    name: str
    forward: Callable[..., Any]
    vjp: Callable[..., tuple]
    formula: str
    # a primitive whose forward returns (outputs, residuals): residuals are kept for the
    # VJP as ``res=``
    has_residuals: bool = False


PRIMITIVES: dict[str, Primitive] = {}


def defprim(name: str, forward: Callable, vjp: Callable, formula: str, has_residuals: bool = False) -> Primitive:
    """Register a primitive; a name can be registered once."""
    if name in PRIMITIVES:
        raise ValueError(f"primitive {name!r} is already registered")
    prim = Primitive(name, forward, vjp, formula, has_residuals)
    PRIMITIVES[name] = prim
    return prim


def unbroadcast(g: Any, shape: tuple) -> Any:
    """Sum ``g`` over the axes that broadcasting added or stretched, so it has
    ``shape``."""
    if g.shape == tuple(shape):
        return g
    extra = g.ndim - len(shape)
    if extra > 0:
        g = sum_leading(g, extra)
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if stretched:
        g = g.sum(axis=stretched, keepdims=True)
    return g


def _expand_reduced(g: Any, x_shape: tuple, axis: Any, keepdims: bool) -> Any:
    """Put back the axes a reduction removed, so ``g`` broadcasts against its input."""
    if keepdims:
        return g
    if axis is None:
        return g.reshape((1,) * len(x_shape))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    axes = tuple(a % len(x_shape) for a in axes)
    return g.reshape(tuple(1 if i in axes else n for i, n in enumerate(x_shape)))


# --- elementwise arithmetic (broadcasting) -------------------------------------------------------------

defprim("add", lambda a, b: a + b, lambda g, ans, a, b: (g, g), "d(a+b) = (g, g)")
defprim("mul", lambda a, b: a * b, lambda g, ans, a, b: (g * b, g * a), "d(a*b) = (g*b, g*a)")
defprim("div", lambda a, b: a / b, lambda g, ans, a, b: (g / b, -g * ans / b), "d(a/b) = (g/b, -g*a/b**2)")
defprim("neg", lambda x: -x, lambda g, ans, x: (-g,), "d(-x) = -g")


def _pow_vjp(g: Any, ans: Any, x: Any, exponent: Any) -> tuple:
    if exponent == 0:  # d(x**0)/dx = 0 everywhere, also at x = 0 (where p*x**(p-1) would be 0*inf)
        return (xp_of(x).zeros_like(g),)
    return (g * exponent * x ** (exponent - 1),)


defprim("pow", lambda x, exponent: x**exponent, _pow_vjp, "d(x**p) = g*p*x**(p-1), p a constant (0 for p = 0)")


def _power_vjp(g: Any, ans: Any, x: Any, y: Any) -> tuple:
    """d(x**y): g*y*x**(y-1) for x (0 where y = 0) and g*x**y*log(x) for y (0 where x = 0 and y >= 0)."""
    xp = xp_of(x, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        gx = xp.where(y == 0, 0, g * y * x ** xp.where(y == 0, 1, y - 1))
        gy = xp.where((x == 0) & (y >= 0), 0, g * ans * xp.log(x))
    return gx, gy


def _power(x: Any, y: Any) -> Any:
    if y.dtype.kind not in "iu" or not (y < 0).any():
        return x**y
    # integers to negative powers, as PyTorch: 1/x**|y| truncated, so 0 unless x is 1 or -1
    xp = xp_of(x, y)
    magnitude = x ** xp.abs(y)
    odd = (xp.abs(y) % 2) == 1
    small = xp.where(x == 1, 1, xp.where(x == -1, xp.where(odd, -1, 1), 0)).astype(magnitude.dtype)
    return xp.where(y < 0, small, magnitude)


defprim("power", _power, _power_vjp, "d(x**y) = (g*y*x**(y-1), g*x**y*log x)")


def _maximum_vjp(g: Any, ans: Any, a: Any, b: Any) -> tuple:
    tie = (a == b) * 0.5  # at ties each input gets half, as PyTorch's maximum
    return g * ((a > b) + tie), g * ((a < b) + tie)


defprim("maximum", lambda a, b: xp_of(a, b).maximum(a, b), _maximum_vjp,
        "d max(a,b) = g to the larger input, g/2 to each on ties")

# --- elementwise functions ------------------------------------------------------------------------------

defprim("exp", lambda x: xp_of(x).exp(x), lambda g, ans, x: (g * ans,), "d exp(x) = g*ans")
defprim("log", lambda x: xp_of(x).log(x), lambda g, ans, x: (g / x,), "d log(x) = g/x")
defprim("tanh", lambda x: xp_of(x).tanh(x), lambda g, ans, x: (g * (1 - ans * ans),), "d tanh(x) = g*(1-ans**2)")


def sigmoid(x: Any) -> Any:
    """The logistic function of an array, exact in both tails: 1/(1+e^-x) for x >= 0, e^x/(1+e^x) below.

    Both branches evaluate ``exp(-abs(x)) <= 1``, which never overflows, and neither subtracts nearly equal numbers,
    so float32 keeps its relative precision down to sigmoid(-87) ~ 1.6e-38 (0.5*(1+tanh(x/2)) loses the
    negative tail: it rounds sigmoid(-20) to 0).
    """
    xp = xp_of(x)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


defprim("sigmoid", sigmoid, lambda g, ans, x: (g * ans * (1 - ans),), "d sigmoid(x) = g*ans*(1-ans)")
# maximum, not x*(x>0): that gives nan at -inf and -0.0 for negative x
defprim("relu", lambda x: xp_of(x).maximum(x, 0), lambda g, ans, x: (g * (x > 0),), "d relu(x) = g*[x>0]")
defprim("abs", lambda x: xp_of(x).abs(x), lambda g, ans, x: (g * xp_of(x).sign(x),), "d |x| = g*sign(x)")

# --- linear algebra ----------------------------------------------------------------------------------------



def _matmul_vjp(g: Any, ans: Any, a: Any, b: Any) -> tuple:
    """d(a@b) = (g @ b^T, a^T @ g), with vectors promoted to matrices and back."""
    xp = xp_of(a, b)
    if a.ndim == 1 and b.ndim == 1:
        return g * b, g * a
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    g2 = g
    if a.ndim == 1:
        g2 = xp.expand_dims(g2, -2)
    if b.ndim == 1:
        g2 = xp.expand_dims(g2, -1)
    ga = _matmul(g2, xp.swapaxes(b2, -1, -2))
    if (
        a2.ndim > 2 and b2.ndim == 2
    ):  # a stack of rows times one matrix (a Linear layer on (T, B, D)):
        k = a2.shape[-1]  # one (k, N) @ (N, n) product instead of a batch of small ones
        rows = math.prod(a2.shape[:-1])  # not -1: a size-0 axis makes -1 ambiguous
        gb = matmul(a2.reshape(rows, k).T, g2.reshape(rows, g2.shape[-1]))
    else:
        gb = matmul(xp.swapaxes(a2, -1, -2), g2)
    if a.ndim == 1:
        ga = ga.reshape(ga.shape[:-2] + ga.shape[-1:])
    if b.ndim == 1:
        gb = gb.reshape(gb.shape[:-1])
    return ga, gb


def _matmul(a: Any, b: Any) -> Any:
    """backend.matmul (every product of the library, so a CUDA-graph capture can reroute them); a stack of
    rows times one matrix (a Linear layer on (T, B, D)) as one 2-D product, not a loop of small ones."""
    if a.ndim > 2 and b.ndim == 2 and a.flags.c_contiguous:
        rows = math.prod(a.shape[:-1])  # not -1: a size-0 axis makes -1 ambiguous
        return _matmul(a.reshape(rows, a.shape[-1]), b).reshape(a.shape[:-1] + b.shape[-1:])
    if a.ndim == b.ndim == 2 and type(a) is type(b) is np.ndarray and a.dtype == b.dtype:
        out = workspace.empty(np, (a.shape[0], b.shape[1]), a.dtype)  # reused memory: no fresh pages
        return matmul(a, b, out=out)
    return matmul(a, b)


defprim("matmul", _matmul, _matmul_vjp, "d(a@b) = (g @ b.T, a.T @ g)")


def _linear(x: Any, w: Any, b: Any = None) -> Any:
    """x @ w^T (+ b): a Linear layer as one node, the same arithmetic as the composition
    ``x @ w.T + b`` (the sum written into the product's buffer)."""
    y = _matmul(x, w.T)
    if b is not None:
        y += b  # the caller checked that b's dtype and shape are y's
    return y


def _linear_vjp(g: Any, ans: Any, x: Any, w: Any, b: Any = None) -> tuple:
    """matmul's VJP with w^T in the place of b (so the same bits as the composition),
    its second part transposed back; the bias gets g, reduced by the engine."""
    gx, gwt = _matmul_vjp(g, ans, x, w.T)
    return (gx, gwt.T) if b is None else (gx, gwt.T, g)


defprim("linear", _linear, _linear_vjp, "d(x@w.T + b) = (g @ w, g.T @ x, g summed over rows)")

# --- reductions ----------------------------------------------------------------------------------------------

defprim(
    "sum",
    lambda x, axis=None, keepdims=False: x.sum(axis=axis, keepdims=keepdims),
    lambda g, ans, x, axis=None, keepdims=False: (
        xp_of(x).broadcast_to(_expand_reduced(g, x.shape, axis, keepdims), x.shape),
    ),
    "d sum(x) = g broadcast back over the summed axes",
)


def _max_vjp(g: Any, ans: Any, x: Any, axis: Any = None, keepdims: bool = False) -> tuple:
    ans_k = _expand_reduced(ans, x.shape, axis, keepdims)
    hit = x == ans_k
    hit = hit.astype(g.dtype)
    share = hit / hit.sum(axis=axis, keepdims=True)  # ties split the gradient evenly
    return (_expand_reduced(g, x.shape, axis, keepdims) * share,)


defprim(
    "max",
    lambda x, axis=None, keepdims=False: x.max(axis=axis, keepdims=keepdims),
    _max_vjp,
    "d max(x) = g to the maximal entries, split evenly among ties",
)


def _logsumexp(x: Any, axis: Any = -1, keepdims: bool = False) -> Any:
    xp = xp_of(x)
    if x.size == 0:  # the log of an empty sum is -inf, as in PyTorch (max has no identity to shift by)
        return xp.log(x.sum(axis=axis, keepdims=keepdims) * 0)
    m = x.max(axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0)
    out = xp.log(xp.exp(x - m).sum(axis=axis, keepdims=True)) + m
    return out if keepdims else out.squeeze(axis=axis)


defprim(
    "logsumexp",
    _logsumexp,
    lambda g, ans, x, axis=-1, keepdims=False: (
        _expand_reduced(g, x.shape, axis, keepdims) * xp_of(x).exp(x - _expand_reduced(ans, x.shape, axis, keepdims)),
    ),
    "d logsumexp(x) = g*softmax(x); forward shifted by the max, so it never overflows",
)

def _shifted_log_total(x: Any, axis: int) -> tuple:
    """(x - max, log sum exp(x - max)) along ``axis``: the stable pieces of log-softmax and cross-entropy
    (shifted by the max, as PyTorch's, by an infinite max too: nan)."""
    xp = xp_of(x)
    last = axis in (-1, x.ndim - 1)
    shifted = x - (max_last(x, keepdims=True) if last else x.max(axis=axis, keepdims=True))
    return shifted, xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


def _log_softmax(x: Any, axis: int = -1) -> Any:
    if x.shape[axis] == 0:  # nothing to normalise over: an empty result, as in PyTorch
        return x.copy()
    shifted, log_total = _shifted_log_total(x, axis)
    return shifted - log_total


def _log_softmax_vjp(g: Any, ans: Any, x: Any, axis: int = -1) -> tuple:
    return (g - xp_of(g).exp(ans) * g.sum(axis=axis, keepdims=True),)


defprim(
    "log_softmax",
    _log_softmax,
    _log_softmax_vjp,
    "d log_softmax(x) = g - softmax(x)*sum(g); forward shifted by the max, so it never overflows",
)


def _target_positions(xp: Any, index: Any, classes: int) -> Any:
    """Where entry ``index`` of each row lies in a C-ordered (..., classes) array read flat:
    x.reshape(-1)[positions] is x[..., index] (``take_along_axis`` without its index grids)."""
    return index.reshape(-1) + xp.arange(0, index.size * classes, classes)


def _softmax_cross_entropy(x: Any, index: Any) -> tuple:
    """-log softmax(x)[..., index] per position: logsumexp(x) - x[index], both shifted by the max."""
    xp = xp_of(x)
    if x.size == 0:  # no rows (and so, with no classes, nothing to pick): an empty loss, as PyTorch's
        return xp.zeros(index.shape, dtype=x.dtype), None
    shifted, log_total = _shifted_log_total(x, -1)
    picked = shifted.reshape(-1)[_target_positions(xp, index, x.shape[-1])]
    return log_total[..., 0] - picked.reshape(index.shape), (shifted, log_total)


def _softmax_cross_entropy_vjp(g: Any, ans: Any, x: Any, index: Any, res: tuple) -> tuple:
    xp = xp_of(g)
    if res is None:  # an empty input
        return (xp.zeros_like(x),)
    shifted, log_total = res
    grad = xp.ascontiguousarray(xp.exp(shifted - log_total) * g[..., None])  # softmax(x) g
    flat = grad.reshape(-1)  # a view: grad is C-ordered
    flat[_target_positions(xp, index, x.shape[-1])] -= g.reshape(-1)  # minus g at the target
    return (grad,)


defprim(
    "softmax_cross_entropy",
    _softmax_cross_entropy,
    _softmax_cross_entropy_vjp,
    "d ce(x, y) = g*(softmax(x) - onehot(y)) along the last axis; y of shape x.shape[:-1]",
    has_residuals=True,
)

# --- shape and indexing ---------------------------------------------------------------------------------------

defprim(
    "reshape",
    lambda x, shape: x.reshape(shape),
    lambda g, ans, x, shape: (g.reshape(x.shape),),
    "d reshape(x) = g reshaped back",
)
def _inverse_permutation(axes: tuple) -> tuple:
    inverse = [0] * len(axes)
    for i, a in enumerate(axes):
        inverse[a] = i
    return tuple(inverse)


defprim(
    "transpose",
    lambda x, axes: x.transpose(axes),
    lambda g, ans, x, axes: (g.transpose(_inverse_permutation(axes)),),
    "d transpose(x, axes) = g transposed by the inverse permutation",
)


def _is_basic_index(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis for i in items)


def _getitem_vjp(g: Any, ans: Any, x: Any, index: Any) -> tuple:
    out = xp_of(x).zeros_like(x)
    if _is_basic_index(index):
        out[index] = g  # a basic index selects each element at most once
    else:
        scatter_add(
            out, index, g
        )  # an integer array may repeat an index: gradients add up
    return (out,)


defprim("getitem", lambda x, index: x[index], _getitem_vjp, "d x[i] = scatter-add of g into zeros at i")


def _concatenate_vjp(g: Any, ans: Any, *xs: Any, axis: int = 0) -> tuple:
    ends = np.cumsum([x.shape[axis] for x in xs])
    return tuple(xp_of(g).split(g, ends[:-1].tolist(), axis=axis))


defprim(
    "concatenate",
    lambda *xs, axis=0: xp_of(*xs).concatenate(xs, axis=axis),
    _concatenate_vjp,
    "d concatenate(xs) = g split at the inputs' boundaries",
)
defprim(
    "stack",
    lambda *xs, axis=0: xp_of(*xs).stack(xs, axis=axis),
    lambda g, ans, *xs, axis=0: tuple(xp_of(g).moveaxis(g, axis, 0)),
    "d stack(xs) = g unstacked along the new axis",
)
# Indexing x[t] for every t would record one node per slice whose gradient fills a zero array of x's full size
# (O(T^2) work for a sequence); one multi-output node hands out all slices and stacks their gradients back.
defprim(
    "unstack",
    lambda x: tuple(x),
    lambda g, ans, x: (xp_of(x).stack(g, axis=0),),
    "d unstack(x) = the gradients of the slices stacked back along axis 0",
)
defprim(
    "where",
    lambda a, b, condition: xp_of(a, b, condition).where(condition, a, b),
    lambda g, ans, a, b, condition: (g * condition, g * ~condition),
    "d where(c, a, b) = (g*c, g*~c); the condition gets no gradient",
)
defprim(
    "cast",
    lambda x, dtype: x.astype(dtype),
    lambda g, ans, x, dtype: (g.astype(x.dtype),),
    "d cast(x) = g cast back to x's dtype",
)
