"""Both directions of a layer in one batched step: ``impl="batched"``, the fused layer rearranged for a GPU.

The fused layer (:mod:`tinygrad_birnn.rnn`) runs the forward chain, then the backward chain, each step a
handful of small array operations. On a GPU every operation is a kernel launch, and at small sizes the
launches cost more than the arithmetic. Here step s of the forward chain (time s) and step s of the backward
chain (time T-1-s) run together:

* the input projections of every step come from one matmul (as in the fused layer) and are copied once into
  *schedule order*, pre2 (T, D, B, G*H): pre2[s, 0] belongs to time s, pre2[s, 1] to time T-1-s;
* the states live in (T+1, D, B, H) buffers in the same order: step s reads [s] and writes [s + 1];
* each step is ONE batched matmul over the direction axis, state (D, B, H) @ W_hh^T (D, H, G*H), and ONE
  elementwise kernel for the whole cell; backward likewise, one kernel for all deltas of a step and one
  batched matmul that carries dE/dh a step back. dW_hh is one batched matmul over all steps; dx, dW_ih and
  the biases come from rnn.py's helpers, one matmul each.

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
_PREAMBLE = "template <typename U> __device__ U sigmoid_of(U a) { return (U)0.5 * tanh((U)0.5 * a) + (U)0.5; }"
_ACT = {"tanh": "tanh(a)", "relu": "(a > (T)0 ? a : (T)0)"}                  # act(a)
_DACT = {"tanh": "((T)1 - h * h)", "relu": "(h > (T)0 ? (T)1 : (T)0)"}      # act'(a), from h = act(a)
KERNEL_SOURCES: dict[str, tuple[str, str, str]] = {}
for _name in ("tanh", "relu"):
    KERNEL_SOURCES[f"rnn_forward_{_name}"] = (
        "T z, T pre, T h_prev, bool m", "T h",
        f"T a = z + pre; h = m ? {_ACT[_name]} : h_prev;")
    KERNEL_SOURCES[f"rnn_backward_{_name}"] = (
        "T dh_next, T skip, T g, T h, bool m", "T delta, T skip_out",
        "T dh = dh_next + skip + (m ? g : (T)0);"
        f" delta = m ? dh * {_DACT[_name]} : (T)0;"
        " skip_out = m ? (T)0 : dh;")
del _name
KERNEL_SOURCES["lstm_forward"] = (
    "T z_i, T z_f, T z_g, T z_o, T p_i, T p_f, T p_g, T p_o, T c_prev, T h_prev, bool m",
    "T g_i, T g_f, T g_g, T g_o, T tanh_c, T c, T h",
    "g_i = sigmoid_of(z_i + p_i); g_f = sigmoid_of(z_f + p_f); g_g = tanh(z_g + p_g); g_o = sigmoid_of(z_o + p_o);"
    " T c_new = g_f * c_prev + g_i * g_g;"
    " tanh_c = tanh(c_new);"
    " c = m ? c_new : c_prev;"
    " h = m ? g_o * tanh_c : h_prev;")
KERNEL_SOURCES["lstm_backward"] = (
    "T dh_next, T skip, T g, T dc, T g_i, T g_f, T g_g, T g_o, T tanh_c, T c_prev, bool m",
    "T d_i, T d_f, T d_g, T d_o, T dc_out, T skip_out",
    "T dh = dh_next + skip + (m ? g : (T)0);"
    " T dc_all = dc + (m ? dh * g_o * ((T)1 - tanh_c * tanh_c) : (T)0);"
    " d_i = m ? dc_all * g_g * g_i * ((T)1 - g_i) : (T)0;"
    " d_f = m ? dc_all * c_prev * g_f * ((T)1 - g_f) : (T)0;"
    " d_g = m ? dc_all * g_i * ((T)1 - g_g * g_g) : (T)0;"
    " d_o = m ? dh * tanh_c * g_o * ((T)1 - g_o) : (T)0;"
    " dc_out = m ? dc_all * g_f : dc_all;"
    " skip_out = m ? (T)0 : dh;")
_kernels: dict[str, Any] = {}


def kernel(name: str) -> Any:
    """The ElementwiseKernel ``name``, built on first use (CuPy compiles and caches one binary per dtype)."""
    if name not in _kernels:
        in_params, out_params, body = KERNEL_SOURCES[name]
        _kernels[name] = backend.cupy_module().ElementwiseKernel(
            in_params, out_params, body, f"tinygrad_birnn_{name}", preamble=_PREAMBLE)
    return _kernels[name]


def _gate_views(a: Any, gates: int = 4) -> tuple:
    """The gate blocks of the last axis as views: (..., G*H) -> G arrays (..., H)."""
    H = a.shape[-1] // gates
    return tuple(a[..., k * H:(k + 1) * H] for k in range(gates))


# --- one step of both directions: the cells ------------------------------------------------------------------
def rnn_cell_forward(z: Any, pre: Any, h_prev: Any, mask: Any, h: Any, nonlinearity: str = "tanh") -> None:
    """h = m ? act(z + pre) : h_prev, with z = h_prev W_hh^T; act = tanh or relu; mask None means m = 1."""
    if is_cupy_array(h):
        kernel(f"rnn_forward_{nonlinearity}")(z, pre, h_prev, True if mask is None else mask, h)
        return
    np.add(z, pre, out=h)
    if nonlinearity == "tanh":
        np.tanh(h, out=h)
    else:
        np.maximum(h, 0, out=h)
    if mask is not None:
        np.copyto(h, h_prev, where=~mask)


def rnn_cell_backward(dh_next: Any, skip: Any, g: Any, h: Any, mask: Any, delta: Any, skip_out: Any,
                      nonlinearity: str = "tanh") -> None:
    """dh = dh_next + skip + m g; delta = m dh act'(a), tanh' = 1 - h^2, relu' = [h > 0]; skip_out = (1 - m) dh."""
    if is_cupy_array(h):
        kernel(f"rnn_backward_{nonlinearity}")(dh_next, skip, g, h, True if mask is None else mask, delta, skip_out)
        return
    dh = skip_out  # dh is built in skip_out's storage, which keeps (1 - m) dh at the end
    np.add(dh_next, skip, out=dh)
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
    """(i, f, g, o) = (sig, sig, tanh, sig)(z + pre); c = m ? f c_prev + i g : c_prev; h = m ? o tanh(c) : h_prev."""
    if is_cupy_array(h):
        kernel("lstm_forward")(*_gate_views(z), *_gate_views(pre), c_prev, h_prev, True if mask is None else mask,
                               *_gate_views(gates), tanh_c, c, h)
        return
    H = h.shape[-1]
    np.add(z, pre, out=gates)
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
    """
    if is_cupy_array(dh_next):
        kernel("lstm_backward")(dh_next, skip, g, dc, *_gate_views(gates), tanh_c, c_prev,
                                True if mask is None else mask, *_gate_views(delta), dc_out, skip_out)
        return
    i, f, gg, o = _gate_views(gates)
    d_i, d_f, d_g, d_o = _gate_views(delta)
    dh = skip_out  # as in rnn_cell_backward
    np.add(dh_next, skip, out=dh)
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


# --- schedule order ------------------------------------------------------------------------------------------
def _to_schedule(xp: Any, parts: Sequence[Any], dtype: Any) -> Any:
    """Per-direction (T, B, K) arrays -> one (T, D, B, K) array; step s of direction 1 is its time T-1-s."""
    T, B, K = parts[0].shape
    out = xp.empty((T, len(parts), B, K), dtype=dtype)
    for d, part in enumerate(parts):
        out[:, d] = part if d == 0 else part[::-1]
    return out


def _to_time_order(xp: Any, a2: Any, mask: Any = None) -> Any:
    """(T, D, B, K) in schedule order -> (T, B, D*K) in time order, [direction 0 || direction 1], times mask."""
    T, D, B, K = a2.shape
    out = xp.empty((T, B, D * K), dtype=a2.dtype)
    for d in range(D):
        part = a2[:, d] if d == 0 else a2[::-1, d]
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


def _hidden_weight_grads(xp: Any, delta2: Any, h_before2: Any) -> list:
    """dW_hh[d] = sum_s delta_s[d]^T h_{s-1}[d], for both directions one (D, G*H, T*B) @ (D, T*B, H) matmul."""
    T, D, B, _ = delta2.shape

    def per_direction(a: Any) -> Any:
        return xp.ascontiguousarray(a.transpose(1, 0, 2, 3)).reshape(D, T * B, a.shape[-1])

    return list(matmul(per_direction(delta2).transpose(0, 2, 1), per_direction(h_before2)))


def _backward_setup(hs2: Any, weights: tuple, bias: bool, g_out: Any, mask: Any) -> tuple:
    """What every batched VJP starts from: xp, the weights per direction, (T, D, B, H), the output gradient and
    the mask in schedule order, and W_hh of all directions stacked."""
    xp = xp_of(hs2)
    w = _unpack(weights, bias)
    dims = (hs2.shape[0] - 1, *hs2.shape[1:])
    g2 = _to_schedule(xp, _directions(g_out, dims[1]), hs2.dtype)
    return xp, w, dims, g2, _schedule_mask(xp, mask, dims[1]), _stacked_hidden(xp, w, hs2.dtype, transpose=False)


# --- Elman RNN ------------------------------------------------------------------------------------------------
def _rnn_batched_forward(x: Any, h0: Any, *weights: Any, nonlinearity: str = "tanh", mask: Any = None,
                         bias: bool = True, needs_input_grad: bool = True) -> tuple:
    """h_s = m ? act(pre_s + h_{s-1} W_hh^T) : h_{s-1} for all directions at once, pre = x W_ih^T + b_ih + b_hh."""
    xp = xp_of(x, h0, *weights)
    w = _unpack(weights, bias)
    T, B, _ = x.shape
    D, H = len(w), h0.shape[-1]
    dtype = np.result_type(x.dtype, h0.dtype, *[a.dtype for a in weights])
    pre, w_ih = _project(xp, x, w, True, dtype)
    pre2, m2 = _to_schedule(xp, _directions(pre, D), dtype), _schedule_mask(xp, mask, D)
    w_hh_t = _stacked_hidden(xp, w, dtype, transpose=True)
    hs2 = xp.empty((T + 1, D, B, H), dtype=dtype)
    z = xp.empty((D, B, H), dtype=dtype)
    hs2[0] = h0
    for s in range(T):
        matmul(hs2[s], w_hh_t, out=z)
        rnn_cell_forward(z, pre2[s], hs2[s], None if m2 is None else m2[s], hs2[s + 1], nonlinearity)
    return (_to_time_order(xp, hs2[1:], mask), hs2[T].copy()), (hs2, w_ih)


def _rnn_batched_vjp(g: tuple, ans: tuple, x: Any, h0: Any, *weights: Any, res: tuple, nonlinearity: str = "tanh",
                     mask: Any = None, bias: bool = True, needs_input_grad: bool = True) -> tuple:
    """BPTT, all directions per step: delta_s = m dE/dh_s act'; dE/dh_{s-1} = delta_s W_hh + (1 - m) dE/dh_s."""
    hs2, w_ih = res
    g_out, g_hn = g
    xp, w, (T, D, B, H), g2, m2, w_hh = _backward_setup(hs2, weights, bias, g_out, mask)
    dtype = hs2.dtype
    delta2 = xp.empty((T, D, B, H), dtype=dtype)
    skip2 = xp.zeros((T + 1, D, B, H), dtype=dtype)
    dh_next = xp.empty((D, B, H), dtype=dtype)
    dh_next[...] = g_hn
    for s in reversed(range(T)):
        rnn_cell_backward(dh_next, skip2[s + 1], g2[s], hs2[s + 1], None if m2 is None else m2[s], delta2[s],
                          skip2[s], nonlinearity)
        matmul(delta2[s], w_hh, out=dh_next)
    dh0 = dh_next + skip2[0]
    dw_hh = _hidden_weight_grads(xp, delta2, hs2[:-1])
    dx, dw_ih, db = _input_grads(xp, x, _to_time_order(xp, delta2), w_ih, w, needs_input_grad)
    db_hh = [None if b is None else b.copy() for b in db]
    return _pack_grads(dx, [dh0], dw_ih, dw_hh, db, db_hh, bias)


# --- LSTM -----------------------------------------------------------------------------------------------------
def _lstm_batched_forward(x: Any, h0: Any, c0: Any, *weights: Any, mask: Any = None, bias: bool = True,
                          needs_input_grad: bool = True) -> tuple:
    """(i, f, g, o) = (sig, sig, tanh, sig)(pre_s + h_{s-1} W_hh^T); c = f c + i g; h = o tanh(c); all directions."""
    xp = xp_of(x, h0, c0, *weights)
    w = _unpack(weights, bias)
    T, B, _ = x.shape
    D, H = len(w), h0.shape[-1]
    dtype = np.result_type(x.dtype, h0.dtype, c0.dtype, *[a.dtype for a in weights])
    pre, w_ih = _project(xp, x, w, True, dtype)
    pre2, m2 = _to_schedule(xp, _directions(pre, D), dtype), _schedule_mask(xp, mask, D)
    w_hh_t = _stacked_hidden(xp, w, dtype, transpose=True)
    gates2 = xp.empty((T, D, B, 4 * H), dtype=dtype)  # the gate values (i, f, g, o) of every step
    hs2 = xp.empty((T + 1, D, B, H), dtype=dtype)
    cs2 = xp.empty((T + 1, D, B, H), dtype=dtype)
    tanh_c2 = xp.empty((T, D, B, H), dtype=dtype)
    z = xp.empty((D, B, 4 * H), dtype=dtype)
    hs2[0], cs2[0] = h0, c0
    for s in range(T):
        matmul(hs2[s], w_hh_t, out=z)
        lstm_cell_forward(z, pre2[s], cs2[s], hs2[s], None if m2 is None else m2[s], gates2[s], tanh_c2[s],
                          cs2[s + 1], hs2[s + 1])
    out = _to_time_order(xp, hs2[1:], mask)
    return (out, hs2[T].copy(), cs2[T].copy()), (hs2, cs2, gates2, tanh_c2, w_ih)


def _lstm_batched_vjp(g: tuple, ans: tuple, x: Any, h0: Any, c0: Any, *weights: Any, res: tuple, mask: Any = None,
                      bias: bool = True, needs_input_grad: bool = True) -> tuple:
    """BPTT through h = o tanh(c), c = f c_prev + i g, all directions per step; dc and skip carried alongside."""
    hs2, cs2, gates2, tanh_c2, w_ih = res
    g_out, g_hn, g_cn = g
    xp, w, (T, D, B, H), g2, m2, w_hh = _backward_setup(hs2, weights, bias, g_out, mask)
    dtype = hs2.dtype
    delta2 = xp.empty((T, D, B, 4 * H), dtype=dtype)
    skip2 = xp.zeros((T + 1, D, B, H), dtype=dtype)
    dc2 = xp.empty((T + 1, D, B, H), dtype=dtype)
    dh_next = xp.empty((D, B, H), dtype=dtype)
    dh_next[...], dc2[T] = g_hn, g_cn
    for s in reversed(range(T)):
        lstm_cell_backward(dh_next, skip2[s + 1], g2[s], dc2[s + 1], gates2[s], tanh_c2[s], cs2[s],
                           None if m2 is None else m2[s], delta2[s], dc2[s], skip2[s])
        matmul(delta2[s], w_hh, out=dh_next)
    dh0 = dh_next + skip2[0]
    dw_hh = _hidden_weight_grads(xp, delta2, hs2[:-1])
    dx, dw_ih, db = _input_grads(xp, x, _to_time_order(xp, delta2), w_ih, w, needs_input_grad)
    db_hh = [None if b is None else b.copy() for b in db]
    return _pack_grads(dx, [dh0, dc2[0].copy()], dw_ih, dw_hh, db, db_hh, bias)


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
