"""Both directions of a layer in one batched step: ``impl="batched"``, the fused layer rearranged for a GPU.

The fused layer (:mod:`tinygrad_birnn.rnn`) runs the forward chain, then the backward chain, each step a
handful of small array operations. On a GPU every operation is a kernel launch, and at small sizes the
launches cost more than the arithmetic. Here step s of the forward chain (time s) and step s of the backward
chain (time T-1-s) run together:

* the input projections of every step come from one matmul (as in the fused layer) and are copied once into
  *schedule order*, pre2 indexed [s, b, d]: pre2[s, :, 0] belongs to time s, pre2[s, :, 1] to time T-1-s;
* the states live in (T+1, B, D, H) buffers in the same order: step s reads [s] and writes [s + 1];
* each step is ONE batched matmul over the directions, state (D, B, H) @ W_hh^T (D, H, G*H), and ONE
  elementwise kernel for the whole cell; backward likewise, one kernel for all deltas of a step and one
  batched matmul that carries dE/dh a step back. dW_hh is one batched matmul over all steps; dx, dW_ih and
  the biases come from rnn.py's helpers, one matmul each.

On a GPU a step's product is small: (B x H) @ (H x G*H) per direction gives cuBLAS only a few tiles to share
among a hundred-odd multiprocessors, each walking all H of the inner dimension. So the inner dimension is cut
into S pieces (*split-K*): one batched call computes D*S partial products, which the cell kernel adds up. The
buffers are indexed [step, b, d, k] throughout; in memory they are direction-major, each step's (D, B, K) block
contiguous, except the inputs of a split product, which are batch-major, (B, D, K) per step: there the S pieces
of both directions sit at one fixed stride from each other, the layout a single strided-batched call needs. The
cell functions see the (D, B, .) views.

Each cell function exists once with two bodies of the same arithmetic: a ``cupy.ElementwiseKernel`` (one
launch) when the arrays live on the GPU, NumPy ufuncs with ``out=`` otherwise. Variable lengths enter as
``m ? new : old``; a padded step passes dE/dh through unchanged, carried in ``skip``: dE/dh_{s-1} =
delta_s W_hh + skip_s, where skip_s = (1 - m_s) dE/dh_s. GRU layers fall back to the fused implementation.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import backend
from .backend import is_cupy_array, matmul, xp_of
from .ops import PRIMITIVES, defprim
from .rnn import _input_grads, _pack_grads, _project, _sigmoid_, _unpack, fused_layer
from .tensor import Tensor, apply

# --- the cell kernels for CuPy: (inputs, outputs, body); T is the float type (float32 or float64) ------------
# Plain elementwise formulas over same-shaped arguments (m, the mask, broadcasts over H); no index arithmetic.
# The product arriving from the step's matmul comes in n partial sums (split-K), n = 1, 2 or 4: a kernel named
# NAME handles one, NAME_split{n} adds up n.
_PREAMBLE = "template <typename U> __device__ U sigmoid_of(U a) { return (U)0.5 * tanh((U)0.5 * a) + (U)0.5; }"
_ACT = {"tanh": "tanh(a)", "relu": "(a > (T)0 ? a : (T)0)"}                  # act(a)
_DACT = {"tanh": "((T)1 - h * h)", "relu": "(h > (T)0 ? (T)1 : (T)0)"}      # act'(a), from h = act(a)
SPLITS = (1, 2, 4)
GATES = "ifgo"


def _sum(names: Sequence[str]) -> str:
    return " + ".join(names)


def _sources(n: int) -> dict:
    """The kernels whose product input comes in n partial sums."""
    zs = [f"z{j}" for j in range(n)]
    dhs = [f"dh{j}" for j in range(n)]
    params = lambda names: ", ".join(f"T {a}" for a in names)  # noqa: E731
    out = {}
    for act in ("tanh", "relu"):
        out[f"rnn_forward_{act}"] = (
            f"{params(zs)}, T pre, T h_prev, bool m", "T h",
            f"T a = {_sum(zs)} + pre; h = m ? {_ACT[act]} : h_prev;")
        out[f"rnn_backward_{act}"] = (
            f"{params(dhs)}, T skip, T g, T h, bool m", "T delta, T skip_out",
            f"T dh = {_sum(dhs)} + skip + (m ? g : (T)0);"
            f" delta = m ? dh * {_DACT[act]} : (T)0;"
            " skip_out = m ? (T)0 : dh;")
    gate_z = [f"z{j}_{k}" for j in range(n) for k in GATES]
    out["lstm_forward"] = (
        f"{params(gate_z)}, T p_i, T p_f, T p_g, T p_o, T c_prev, T h_prev, bool m",
        "T g_i, T g_f, T g_g, T g_o, T tanh_c, T c, T h",
        "".join(f"T a_{k} = {_sum([f'z{j}_{k}' for j in range(n)])} + p_{k}; " for k in GATES) +
        "g_i = sigmoid_of(a_i); g_f = sigmoid_of(a_f); g_g = tanh(a_g); g_o = sigmoid_of(a_o);"
        " T c_new = g_f * c_prev + g_i * g_g;"
        " tanh_c = tanh(c_new);"
        " c = m ? c_new : c_prev;"
        " h = m ? g_o * tanh_c : h_prev;")
    out["lstm_backward"] = (
        f"{params(dhs)}, T skip, T g, T dc, T g_i, T g_f, T g_g, T g_o, T tanh_c, T c_prev, bool m",
        "T d_i, T d_f, T d_g, T d_o, T dc_out, T skip_out",
        f"T dh = {_sum(dhs)} + skip + (m ? g : (T)0);"
        " T dc_all = dc + (m ? dh * g_o * ((T)1 - tanh_c * tanh_c) : (T)0);"
        " d_i = m ? dc_all * g_g * g_i * ((T)1 - g_i) : (T)0;"
        " d_f = m ? dc_all * c_prev * g_f * ((T)1 - g_f) : (T)0;"
        " d_g = m ? dc_all * g_i * ((T)1 - g_g * g_g) : (T)0;"
        " d_o = m ? dh * tanh_c * g_o * ((T)1 - g_o) : (T)0;"
        " dc_out = m ? dc_all * g_f : dc_all;"
        " skip_out = m ? (T)0 : dh;")
    return {(name if n == 1 else f"{name}_split{n}"): source for name, source in out.items()}


KERNEL_SOURCES: dict[str, tuple[str, str, str]] = {k: v for n in SPLITS for k, v in _sources(n).items()}
_kernels: dict[str, Any] = {}


def kernel(name: str) -> Any:
    """The ElementwiseKernel ``name``, built on first use (CuPy compiles and caches one binary per dtype)."""
    if name not in _kernels:
        in_params, out_params, body = KERNEL_SOURCES[name]
        _kernels[name] = backend.cupy_module().ElementwiseKernel(
            in_params, out_params, body, f"tinygrad_birnn_{name}", preamble=_PREAMBLE)
    return _kernels[name]


def _kernel_for(name: str, parts: Sequence) -> Any:
    return kernel(name if len(parts) == 1 else f"{name}_split{len(parts)}")


def _gate_views(a: Any, gates: int = 4) -> tuple:
    """The gate blocks of the last axis as views: (..., G*H) -> G arrays (..., H)."""
    H = a.shape[-1] // gates
    return tuple(a[..., k * H:(k + 1) * H] for k in range(gates))


def _parts(z: Any) -> list:
    """A product given whole or as a list of partial sums (split-K) -> the list."""
    return list(z) if isinstance(z, (list, tuple)) else [z]


def _add_parts(parts: list, extra: Any, out: Any) -> Any:
    """out = sum(parts) + extra, with NumPy ufuncs."""
    np.add(parts[0], extra, out=out)
    for p in parts[1:]:
        out += p
    return out


# --- one step of both directions: the cells ------------------------------------------------------------------
def rnn_cell_forward(z: Any, pre: Any, h_prev: Any, mask: Any, h: Any, nonlinearity: str = "tanh") -> None:
    """h = m ? act(z + pre) : h_prev, with z = h_prev W_hh^T (whole or in partial sums); act = tanh or relu;
    mask None means m = 1."""
    z = _parts(z)
    if is_cupy_array(h):
        _kernel_for(f"rnn_forward_{nonlinearity}", z)(*z, pre, h_prev, True if mask is None else mask, h)
        return
    _add_parts(z, pre, h)
    if nonlinearity == "tanh":
        np.tanh(h, out=h)
    else:
        np.maximum(h, 0, out=h)
    if mask is not None:
        np.copyto(h, h_prev, where=~mask)


def rnn_cell_backward(dh_next: Any, skip: Any, g: Any, h: Any, mask: Any, delta: Any, skip_out: Any,
                      nonlinearity: str = "tanh") -> None:
    """dh = dh_next + skip + m g; delta = m dh act'(a), tanh' = 1 - h^2, relu' = [h > 0]; skip_out = (1 - m) dh.

    dh_next, the delta of the step after carried back through W_hh, may come in partial sums."""
    dh_next = _parts(dh_next)
    if is_cupy_array(h):
        _kernel_for(f"rnn_backward_{nonlinearity}", dh_next)(*dh_next, skip, g, h, True if mask is None else mask,
                                                             delta, skip_out)
        return
    dh = _add_parts(dh_next, skip, skip_out)  # dh is built in skip_out's storage, which keeps (1 - m) dh at the end
    dh += g if mask is None else g * mask
    if nonlinearity == "tanh":
        np.multiply(h, h, out=delta)
        np.subtract(1, delta, out=delta)
    else:
        np.greater(h, 0, out=delta)
    delta *= dh
    if mask is None:
        dh.fill(0)
    else:
        delta *= mask
        dh *= ~mask


def lstm_cell_forward(z: Any, pre: Any, c_prev: Any, h_prev: Any, mask: Any, gates: Any, tanh_c: Any, c: Any,
                      h: Any) -> None:
    """(i, f, g, o) = (sig, sig, tanh, sig)(z + pre); c = m ? f c_prev + i g : c_prev; h = m ? o tanh(c) : h_prev.

    z = h_prev W_hh^T, whole or in partial sums."""
    z = _parts(z)
    if is_cupy_array(h):
        _kernel_for("lstm_forward", z)(*[v for part in z for v in _gate_views(part)], *_gate_views(pre), c_prev,
                                       h_prev, True if mask is None else mask, *_gate_views(gates), tanh_c, c, h)
        return
    H = h.shape[-1]
    _add_parts(z, pre, gates)
    i, f, g, o = _gate_views(gates)
    _sigmoid_(np, gates[..., :2 * H])  # i and f
    np.tanh(g, out=g)
    _sigmoid_(np, o)
    np.multiply(f, c_prev, out=c)
    np.multiply(i, g, out=tanh_c)
    c += tanh_c
    np.tanh(c, out=tanh_c)
    np.multiply(o, tanh_c, out=h)
    if mask is not None:
        np.copyto(c, c_prev, where=~mask)
        np.copyto(h, h_prev, where=~mask)


def lstm_cell_backward(dh_next: Any, skip: Any, g: Any, dc: Any, gates: Any, tanh_c: Any, c_prev: Any, mask: Any,
                       delta: Any, dc_out: Any, skip_out: Any) -> None:
    """dh = dh_next + skip + m g; dc' = dc + m dh o tanh'(c); d(i,f,g,o) = m (dc' g, dc' c_prev, dc' i, dh tanh c) act'.

    Also dc_out = m ? dc' f : dc' and skip_out = (1 - m) dh; act' is s(1 - s) for the sigmoid gates, 1 - g^2 for g.
    dh_next may come in partial sums.
    """
    dh_next = _parts(dh_next)
    if is_cupy_array(dc):
        _kernel_for("lstm_backward", dh_next)(*dh_next, skip, g, dc, *_gate_views(gates), tanh_c, c_prev,
                                              True if mask is None else mask, *_gate_views(delta), dc_out, skip_out)
        return
    i, f, gg, o = _gate_views(gates)
    d_i, d_f, d_g, d_o = _gate_views(delta)
    dh = _add_parts(dh_next, skip, skip_out)  # as in rnn_cell_backward
    dh += g if mask is None else g * mask
    np.multiply(dh, o, out=dc_out)
    dc_out *= 1 - tanh_c * tanh_c
    if mask is not None:
        dc_out *= mask
    dc_out += dc                                      # dc' = dE/dc of this step
    np.multiply(dc_out, gg, out=d_i)
    d_i *= i * (1 - i)
    np.multiply(dc_out, c_prev, out=d_f)
    d_f *= f * (1 - f)
    np.multiply(dc_out, i, out=d_g)
    d_g *= 1 - gg * gg
    np.multiply(dh, tanh_c, out=d_o)
    d_o *= o * (1 - o)
    if mask is None:
        dc_out *= f
        dh.fill(0)
    else:
        delta *= mask
        np.copyto(dc_out, dc_out * f, where=mask)
        dh *= ~mask


# --- the step's product, split along its inner dimension -----------------------------------------------------
def split_k(inner: int, a: Any) -> int:
    """Into how many pieces a step's product cuts its inner dimension: 4 or 2 (each piece keeping at least 16)
    when the products go through the library's own cuBLAS handle, in a step captured as a CUDA graph (measured on
    an H200: the (2, 128, 256) @ (2, 256, 256) product of size L takes 7.2 µs whole, 4.1 µs in four pieces).
    Otherwise 1: NumPy gains nothing from it, and CuPy's own matmul would copy the strided pieces first."""
    if not is_cupy_array(a) or not backend.products_routed():
        return 1
    return next((s for s in (4, 2) if inner % s == 0 and inner // s >= 16), 1)


class StepProduct:
    """state (B, D, K) -> state @ w per direction, w (D, K, N), as ``split`` partial sums (D, B, N) from one
    batched matmul over D * split matrices (the pieces of direction d are matrices d*split .. d*split+split-1)."""

    def __init__(self, xp: Any, w: Any, batch: int, split: int):
        D, K, N = w.shape
        self.split, self.inner = split, K // split
        self.w = w.reshape(D * split, self.inner, N)
        self.out = xp.empty((D * split, batch, N), dtype=w.dtype)
        self.parts = [self.out.reshape(D, split, batch, N)[:, j] for j in range(split)]

    def __call__(self, state: Any) -> list:
        B, D, K = state.shape
        pieces = state.reshape(B, D * self.split, self.inner).transpose(1, 0, 2)
        matmul(pieces, self.w, out=self.out)
        return self.parts

    def start(self, whole: Any) -> list:
        """The parts standing for ``whole`` (D, B, N), before the first product: it in part 0, zeros elsewhere."""
        self.out.fill(0)
        self.parts[0][...] = whole
        return self.parts


# --- schedule order ------------------------------------------------------------------------------------------
def schedule_buffer(xp: Any, shape: tuple, dtype: Any, batch_major: bool = False) -> Any:
    """An array indexed [step, b, d, k] of ``shape``; in memory direction-major (each step's (D, B, K) block
    contiguous, what matmul and the kernels read fastest), or batch-major for the input of a split product."""
    if batch_major:
        return xp.empty(shape, dtype=dtype)
    T, B, D, K = shape
    return xp.empty((T, D, B, K), dtype=dtype).transpose(0, 2, 1, 3)


def _dbk(a: Any) -> Any:
    """A step's (B, D, K) buffer as the (D, B, K) view the cell functions take."""
    return a.swapaxes(0, 1)


def _to_schedule(xp: Any, parts: Sequence[Any], dtype: Any) -> Any:
    """Per-direction (T, B, K) arrays -> one (T, B, D, K) array; step s of direction 1 is its time T-1-s."""
    T, B, K = parts[0].shape
    out = schedule_buffer(xp, (T, B, len(parts), K), dtype)
    for d, part in enumerate(parts):
        out[:, :, d] = part if d == 0 else part[::-1]
    return out


def _to_time_order(xp: Any, a2: Any, mask: Any = None) -> Any:
    """(T, B, D, K) in schedule order -> (T, B, D*K) in time order, [direction 0 || direction 1], times mask."""
    T, B, D, K = a2.shape
    out = xp.empty((T, B, D * K), dtype=a2.dtype)
    for d in range(D):
        part = a2[:, :, d] if d == 0 else a2[::-1, :, d]
        if mask is None:
            out[:, :, d * K:(d + 1) * K] = part
        else:
            xp.multiply(part, mask, out=out[:, :, d * K:(d + 1) * K])
    return out


def _directions(a: Any, D: int) -> list:
    """(T, B, D*K) -> D arrays (T, B, K), one per direction."""
    return list(_gate_views(a, D))


def _stacked_hidden(xp: Any, w: list, dtype: Any, transpose: bool) -> Any:
    """W_hh of every direction as one contiguous (D, G*H, H) array, or W_hh^T as (D, H, G*H)."""
    return xp.ascontiguousarray(xp.stack([wd[1].T if transpose else wd[1] for wd in w]).astype(dtype, copy=False))


def _schedule_mask(xp: Any, mask: Any, D: int) -> Any:
    return None if mask is None else _to_schedule(xp, [mask] * D, bool)


def _step_mask(m2: Any, s: int) -> Any:
    return None if m2 is None else _dbk(m2[s])


def _hidden_weight_grads(xp: Any, delta2: Any, h_before2: Any) -> list:
    """dW_hh[d] = sum_s delta_s[d]^T h_{s-1}[d], for both directions one (D, G*H, T*B) @ (D, T*B, H) matmul."""
    T, B, D, _ = delta2.shape

    def per_direction(a: Any) -> Any:
        return xp.ascontiguousarray(a.transpose(2, 0, 1, 3)).reshape(D, T * B, a.shape[-1])

    return list(matmul(per_direction(delta2).transpose(0, 2, 1), per_direction(h_before2)))


def _forward_setup(x: Any, states: tuple, weights: tuple, bias: bool, mask: Any) -> tuple:
    """What every batched forward starts from: xp, the dtype, (T, B, D, H), the projected inputs and W_ih, the
    mask in schedule order, and the step's product through W_hh^T."""
    xp = xp_of(x, *states, *weights)
    w = _unpack(weights, bias)
    dtype = np.result_type(x.dtype, *[a.dtype for a in states], *[a.dtype for a in weights])
    (T, B, _), D, H = x.shape, len(w), states[0].shape[-1]
    pre, w_ih = _project(xp, x, w, True, dtype)
    w_hh_t = _stacked_hidden(xp, w, dtype, transpose=True)
    product = StepProduct(xp, w_hh_t, B, split_k(H, w_hh_t))
    pre2 = _to_schedule(xp, _directions(pre, D), dtype)
    return xp, dtype, (T, B, D, H), pre2, w_ih, _schedule_mask(xp, mask, D), product


def _backward_setup(hs2: Any, weights: tuple, bias: bool, g_out: Any, mask: Any) -> tuple:
    """What every batched VJP starts from: xp, the weights per direction, (T, B, D, H), the output gradient and
    the mask in schedule order, and the product that carries a delta back through W_hh."""
    xp = xp_of(hs2)
    w = _unpack(weights, bias)
    dims = (hs2.shape[0] - 1, *hs2.shape[1:])
    g2 = _to_schedule(xp, _directions(g_out, dims[2]), hs2.dtype)
    w_hh = _stacked_hidden(xp, w, hs2.dtype, transpose=False)
    product = StepProduct(xp, w_hh, dims[1], split_k(w_hh.shape[1], w_hh))
    return xp, w, dims, g2, _schedule_mask(xp, mask, dims[2]), product


def _start_states(xp: Any, dims: tuple, dtype: Any, initial: Any, batch_major: bool = False) -> Any:
    """A (T+1, B, D, H) state buffer in schedule order, its first step holding ``initial`` (D, B, H)."""
    T, B, D, H = dims
    buffer = schedule_buffer(xp, (T + 1, B, D, H), dtype, batch_major)
    _dbk(buffer[0])[...] = initial
    return buffer


# --- Elman RNN ------------------------------------------------------------------------------------------------
def _rnn_batched_forward(x: Any, h0: Any, *weights: Any, nonlinearity: str = "tanh", mask: Any = None,
                         bias: bool = True, needs_input_grad: bool = True) -> tuple:
    """h_s = m ? act(pre_s + h_{s-1} W_hh^T) : h_{s-1} for all directions at once, pre = x W_ih^T + b_ih + b_hh."""
    xp, dtype, dims, pre2, w_ih, m2, product = _forward_setup(x, (h0,), weights, bias, mask)
    T = dims[0]
    hs2 = _start_states(xp, dims, dtype, h0, batch_major=product.split > 1)
    for s in range(T):
        rnn_cell_forward(product(hs2[s]), _dbk(pre2[s]), _dbk(hs2[s]), _step_mask(m2, s), _dbk(hs2[s + 1]),
                         nonlinearity)
    return (_to_time_order(xp, hs2[1:], mask), _dbk(hs2[T]).copy()), (hs2, w_ih)


def _rnn_batched_vjp(g: tuple, ans: tuple, x: Any, h0: Any, *weights: Any, res: tuple, nonlinearity: str = "tanh",
                     mask: Any = None, bias: bool = True, needs_input_grad: bool = True) -> tuple:
    """BPTT, all directions per step: delta_s = m dE/dh_s act'; dE/dh_{s-1} = delta_s W_hh + (1 - m) dE/dh_s."""
    hs2, w_ih = res
    g_out, g_hn = g
    xp, w, (T, B, D, H), g2, m2, product = _backward_setup(hs2, weights, bias, g_out, mask)
    dtype = hs2.dtype
    delta2 = schedule_buffer(xp, (T, B, D, H), dtype, batch_major=product.split > 1)
    skip2 = schedule_buffer(xp, (T + 1, B, D, H), dtype)
    skip2[...] = 0
    dh_next = product.start(g_hn)
    for s in reversed(range(T)):
        rnn_cell_backward(dh_next, _dbk(skip2[s + 1]), _dbk(g2[s]), _dbk(hs2[s + 1]), _step_mask(m2, s),
                          _dbk(delta2[s]), _dbk(skip2[s]), nonlinearity)
        dh_next = product(delta2[s])
    dh0 = _dbk(skip2[0]) + sum(dh_next)
    dw_hh = _hidden_weight_grads(xp, delta2, hs2[:-1])
    dx, dw_ih, db = _input_grads(xp, x, _to_time_order(xp, delta2), w_ih, w, needs_input_grad)
    db_hh = [None if b is None else b.copy() for b in db]
    return _pack_grads(dx, [dh0], dw_ih, dw_hh, db, db_hh, bias)


# --- LSTM -----------------------------------------------------------------------------------------------------
def _lstm_batched_forward(x: Any, h0: Any, c0: Any, *weights: Any, mask: Any = None, bias: bool = True,
                          needs_input_grad: bool = True) -> tuple:
    """(i, f, g, o) = (sig, sig, tanh, sig)(pre_s + h_{s-1} W_hh^T); c = f c + i g; h = o tanh(c); all directions."""
    xp, dtype, dims, pre2, w_ih, m2, product = _forward_setup(x, (h0, c0), weights, bias, mask)
    T, B, D, H = dims
    gates2 = schedule_buffer(xp, (T, B, D, 4 * H), dtype)  # the gate values (i, f, g, o) of every step
    tanh_c2 = schedule_buffer(xp, (T, B, D, H), dtype)
    hs2 = _start_states(xp, dims, dtype, h0, batch_major=product.split > 1)
    cs2 = _start_states(xp, dims, dtype, c0)
    for s in range(T):
        lstm_cell_forward(product(hs2[s]), _dbk(pre2[s]), _dbk(cs2[s]), _dbk(hs2[s]), _step_mask(m2, s),
                          _dbk(gates2[s]), _dbk(tanh_c2[s]), _dbk(cs2[s + 1]), _dbk(hs2[s + 1]))
    out = _to_time_order(xp, hs2[1:], mask)
    return (out, _dbk(hs2[T]).copy(), _dbk(cs2[T]).copy()), (hs2, cs2, gates2, tanh_c2, w_ih)


def _lstm_batched_vjp(g: tuple, ans: tuple, x: Any, h0: Any, c0: Any, *weights: Any, res: tuple, mask: Any = None,
                      bias: bool = True, needs_input_grad: bool = True) -> tuple:
    """BPTT through h = o tanh(c), c = f c_prev + i g, all directions per step; dc and skip carried alongside."""
    hs2, cs2, gates2, tanh_c2, w_ih = res
    g_out, g_hn, g_cn = g
    xp, w, (T, B, D, H), g2, m2, product = _backward_setup(hs2, weights, bias, g_out, mask)
    dtype = hs2.dtype
    delta2 = schedule_buffer(xp, (T, B, D, 4 * H), dtype, batch_major=product.split > 1)
    skip2 = schedule_buffer(xp, (T + 1, B, D, H), dtype)
    skip2[...] = 0
    dc2 = schedule_buffer(xp, (T + 1, B, D, H), dtype)   # dE/dc after each step; dc2[T] from the loss
    _dbk(dc2[T])[...] = g_cn
    dh_next = product.start(g_hn)
    for s in reversed(range(T)):
        lstm_cell_backward(dh_next, _dbk(skip2[s + 1]), _dbk(g2[s]), _dbk(dc2[s + 1]), _dbk(gates2[s]),
                           _dbk(tanh_c2[s]), _dbk(cs2[s]), _step_mask(m2, s), _dbk(delta2[s]), _dbk(dc2[s]),
                           _dbk(skip2[s]))
        dh_next = product(delta2[s])
    dh0 = _dbk(skip2[0]) + sum(dh_next)
    dw_hh = _hidden_weight_grads(xp, delta2, hs2[:-1])
    dx, dw_ih, db = _input_grads(xp, x, _to_time_order(xp, delta2), w_ih, w, needs_input_grad)
    db_hh = [None if b is None else b.copy() for b in db]
    return _pack_grads(dx, [dh0, _dbk(dc2[0]).copy()], dw_ih, dw_hh, db, db_hh, bias)


defprim("rnn_layer_batched", _rnn_batched_forward, _rnn_batched_vjp,
        "rnn_layer's BPTT with all directions per step: delta_s = m dE/dh_s act'(a_s); "
        "dE/dh_{s-1} = delta_s W_hh + (1 - m) dE/dh_s; dW_hh = sum_s delta_s^T h_{s-1}", has_residuals=True)
defprim("lstm_layer_batched", _lstm_batched_forward, _lstm_batched_vjp,
        "lstm_layer's BPTT with all directions per step: dc = dc_next + m dh o tanh'(c); "
        "(di, df, dg, do) = m (dc g, dc c_prev, dc i, dh tanh(c)) act'; dc_prev = m ? dc f : dc", has_residuals=True)


def batched_layer(mode: str, x: Tensor, hx: Any, weights: Sequence[Sequence[Tensor]], mask: Any = None,
                  nonlinearity: str = "tanh") -> tuple:
    """One (bi)directional layer, all directions stepped together; same arguments and results as fused_layer."""
    if mode == "GRU":
        return fused_layer(mode, x, hx, weights, mask, nonlinearity)
    flat = [w for group in weights for w in group]
    params = dict(mask=mask, bias=len(weights[0]) == 4, needs_input_grad=x.requires_grad)
    if mode == "LSTM":
        out, h_n, c_n = apply(PRIMITIVES["lstm_layer_batched"], x, hx[0], hx[1], *flat, **params)
        return out, (h_n, c_n)
    return apply(PRIMITIVES["rnn_layer_batched"], x, hx, *flat, nonlinearity=nonlinearity, **params)
