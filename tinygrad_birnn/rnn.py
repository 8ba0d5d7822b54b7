"""Recurrent layers with PyTorch's interface: ``RNN``, ``LSTM``, ``GRU`` and their cells.

Two implementations compute the same layers:

* **step by step** (:func:`steps_layer`): each cell is a few Tensor operations (:func:`rnn_cell`,
  :func:`lstm_cell`, :func:`gru_cell`), applied once per time step (:func:`run_direction`); the engine
  records every operation and differentiates them one by one. This is the version to read first.
* **fused** (:func:`fused_layer`, the default on the CPU): one autograd node per layer. Its forward runs both
  directions over time on raw arrays with preallocated buffers; its VJP is backpropagation through time
  written by hand (Schuster & Paliwal's procedure for a bidirectional layer: the forward chain t = 1..T,
  the backward chain t = T..1, then the deltas back through both).

Variable lengths use one mask m_t = [t < len_b] per step: the state is updated only where m_t holds,
h <- m_t * cell(x_t, h) + (1 - m_t) * h, for both directions (the backward one runs t = T-1 ... 0), and
outputs past a sequence's end are zero. This gives exactly what PyTorch computes on
``pack_padded_sequence(..., enforce_sorted=False)``: the backward chain starts at each sequence's own
last element, and the forward chain's final state is its state at that element.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from . import backend
from . import functional as F
from .backend import matmul, xp_of
from .nn import Module, uniform_parameter
from .ops import PRIMITIVES, defprim
from .functions import concatenate, stack, unstack, zeros
from .tensor import Tensor, apply

GATES = {"RNN": 1, "LSTM": 4, "GRU": 3}  # gate blocks per weight matrix: LSTM (i, f, g, o), GRU (r, z, n)

# =============================================================================================================
# Step by step: the cells, composed of Tensor operations
# =============================================================================================================
def rnn_cell(x: Tensor, h: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor | None = None,
             bias_hh: Tensor | None = None, nonlinearity: str = "tanh") -> Tensor:
    """h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)   (or relu)."""
    a = F.linear(x, weight_ih, bias_ih) + F.linear(h, weight_hh, bias_hh)
    return a.tanh() if nonlinearity == "tanh" else a.relu()


def lstm_cell(x: Tensor, state: tuple, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor | None = None,
              bias_hh: Tensor | None = None) -> tuple:
    """Gates i, f, g, o from x W_ih^T + b_ih + h W_hh^T + b_hh; c' = f*c + i*g; h' = o*tanh(c')."""
    h, c = state
    H = h.shape[-1]
    gates = F.linear(x, weight_ih, bias_ih) + F.linear(h, weight_hh, bias_hh)
    i = gates[..., 0 * H:1 * H].sigmoid()  # input gate
    f = gates[..., 1 * H:2 * H].sigmoid()  # forget gate
    g = gates[..., 2 * H:3 * H].tanh()     # candidate cell
    o = gates[..., 3 * H:4 * H].sigmoid()  # output gate
    c = f * c + i * g
    h = o * c.tanh()
    return h, c


def gru_cell(x: Tensor, h: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor | None = None,
             bias_hh: Tensor | None = None) -> Tensor:
    """r, z = sigmoid(...); n = tanh(W_in x + b_in + r*(W_hn h + b_hn)); h' = (1 - z)*n + z*h."""
    H = h.shape[-1]
    gx = F.linear(x, weight_ih, bias_ih)  # input side, blocks (r, z, n)
    gh = F.linear(h, weight_hh, bias_hh)  # hidden side, blocks (r, z, n)
    r = (gx[..., 0 * H:1 * H] + gh[..., 0 * H:1 * H]).sigmoid()  # reset gate
    z = (gx[..., 1 * H:2 * H] + gh[..., 1 * H:2 * H]).sigmoid()  # update gate
    n = (gx[..., 2 * H:3 * H] + r * gh[..., 2 * H:3 * H]).tanh()  # candidate state
    return (1 - z) * n + z * h


def _keep_where(m: Tensor, new: Any, old: Any) -> Any:
    """m*new + (1-m)*old for a state or an (h, c) pair: the state moves on only where m = 1."""
    if isinstance(new, tuple):
        return tuple(_keep_where(m, a, b) for a, b in zip(new, old))
    return m * new + (1 - m) * old


def run_direction(step: Callable, inputs: Sequence[Tensor], state: Any, masks: Sequence[Tensor] | None = None,
                  reverse: bool = False) -> tuple:
    """One direction of a layer: state_t = step(x_t, state_{t-1}) for t = 0..T-1 (T-1..0 when reverse).

    ``masks[t]`` (B, 1) is 1 while t < len_b: elsewhere the state stays as it was and the output is 0.
    Returns the T outputs h_t (in time order) and the final state.
    """
    T = len(inputs)
    outputs: list = [None] * T
    for t in (reversed(range(T)) if reverse else range(T)):
        new_state = step(inputs[t], state)
        state = new_state if masks is None else _keep_where(masks[t], new_state, state)
        h = state[0] if isinstance(state, tuple) else state
        outputs[t] = h if masks is None else h * masks[t]
    return outputs, state


def steps_layer(mode: str, x: Tensor, hx: Any, weights: Sequence[Sequence[Tensor]], mask: Any = None,
                nonlinearity: str = "tanh") -> tuple:
    """One (bi)directional layer, one cell call per step and direction; the engine differentiates it.

    ``x`` (T, B, I); ``hx`` = h0 (D, B, H), or (h0, c0) for an LSTM; ``weights[d]`` = (W_ih, W_hh[, b_ih, b_hh])
    for direction d (0 forward, 1 backward); ``mask`` (T, B, 1) bool or None.
    Returns (output (T, B, D*H), h_n (D, B, H)), or (output, (h_n, c_n)) for an LSTM.
    """
    if mode == "LSTM":
        cell: Callable = lstm_cell
    elif mode == "GRU":
        cell = gru_cell
    else:
        def cell(x: Tensor, h: Tensor, *w: Tensor) -> Tensor:
            return rnn_cell(x, h, *w, nonlinearity=nonlinearity)
    inputs = unstack(x)
    masks = None if mask is None else unstack(Tensor._make(mask.astype(x.dtype), False, None))
    outputs, finals = [], []
    for d, w in enumerate(weights):
        state = (hx[0][d], hx[1][d]) if mode == "LSTM" else hx[d]
        outs, final = run_direction(lambda x_t, s, w=w: cell(x_t, s, *w), inputs, state, masks, reverse=d == 1)
        outputs.append(stack(outs))
        finals.append(final)
    output = outputs[0] if len(outputs) == 1 else concatenate(outputs, axis=-1)
    if mode == "LSTM":
        return output, (stack([h for h, _ in finals]), stack([c for _, c in finals]))
    return output, stack(finals)


# =============================================================================================================
# Fused: one autograd node per layer, backpropagation through time by hand
# =============================================================================================================
# Both directions share one buffer layout. The input projections of all steps and both directions come from
# one matmul into ``pre`` (T, B, D*G*H): direction d's gate blocks are columns [d*G*H, (d+1)*G*H). States
# live in ``hs`` (D, T+1, B, H): the forward chain reads hs[0, t] and writes hs[0, t+1]; the backward chain
# reads hs[1, t+1] and writes hs[1, t], starting from hs[1, T]. So for either direction the state *after*
# step t is ``_after(hs, d)[t]`` and the state it read is ``_before(hs, d)[t]``, both contiguous (T, B, H).


def _schedule(T: int, d: int) -> list:
    """(t, read, write) for each step of direction d, in the order the forward pass runs them."""
    if d == 0:
        return [(t, t, t + 1) for t in range(T)]
    return [(t, t + 1, t) for t in reversed(range(T))]


def _after(states: Any, d: int) -> Any:
    return states[d, 1:] if d == 0 else states[d, :-1]


def _before(states: Any, d: int) -> Any:
    return states[d, :-1] if d == 0 else states[d, 1:]


def _unpack(weights: tuple, bias: bool) -> list:
    """The flat weight list (W_ih, W_hh[, b_ih, b_hh]) per direction -> [(W_ih, W_hh, b_ih, b_hh), ...]."""
    k = 4 if bias else 2
    groups = [weights[i:i + k] for i in range(0, len(weights), k)]
    return [tuple(w) if bias else (w[0], w[1], None, None) for w in groups]


def _project(xp: Any, x: Any, w: list, fold_hidden_bias: bool, dtype: Any) -> tuple:
    """pre = x W_ih^T + b for every step and direction, as one (T*B, I) @ (I, D*G*H) matmul."""
    T, B, I = x.shape
    w_ih = xp.concatenate([wd[0] for wd in w], axis=0) if len(w) > 1 else w[0][0]
    pre = matmul(x.reshape(T * B, I), w_ih.T).astype(dtype, copy=False)
    if w[0][2] is not None:
        b = xp.concatenate([wd[2] + wd[3] if fold_hidden_bias else wd[2] for wd in w])
        pre += b
    return pre.reshape(T, B, -1), w_ih


def _sigmoid_(xp: Any, a: Any) -> None:
    """a <- sigmoid(a) = (1 + tanh(a/2))/2, in place (never overflows)."""
    a *= 0.5
    xp.tanh(a, out=a)
    a *= 0.5
    a += 0.5


def _outputs(xp: Any, hs: Any, mask: Any, dtype: Any) -> tuple:
    """output[t] = [h_t || h'_t] (zero where masked) and h_n = (forward's last state, backward's first)."""
    D, T1, B, H = hs.shape
    T = T1 - 1
    out = xp.empty((T, B, D * H), dtype=dtype)
    for d in range(D):
        if mask is None:
            out[:, :, d * H:(d + 1) * H] = _after(hs, d)
        else:
            xp.multiply(_after(hs, d), mask, out=out[:, :, d * H:(d + 1) * H])
    h_n = xp.stack([hs[0, T]] + ([hs[1, 0]] if D == 2 else []))
    return out, h_n


def _input_grads(xp: Any, x: Any, dpre: Any, w_ih: Any, w: list, needs_input_grad: bool) -> tuple:
    """From the pre-activation deltas of all steps: dx = dpre W_ih, dW_ih = dpre^T x, db = sum dpre (one matmul each)."""
    T, B, I = x.shape
    d2 = dpre.reshape(T * B, -1)
    dx = matmul(d2, w_ih).reshape(T, B, I) if needs_input_grad else None
    dw_ih = matmul(d2.T, x.reshape(T * B, I))
    db = d2.sum(axis=0) if w[0][2] is not None else None
    rows = dw_ih.shape[0] // len(w)
    split = [slice(d * rows, (d + 1) * rows) for d in range(len(w))]
    return dx, [dw_ih[s] for s in split], [None if db is None else db[s] for s in split]


def _hidden_weight_grad(delta: Any, h_before: Any) -> Any:
    """dW_hh = sum_t delta_t^T h_{t-1}, one (G*H, T*B) @ (T*B, H) matmul."""
    T, B, GH = delta.shape
    return matmul(delta.reshape(T * B, GH).T, h_before.reshape(T * B, -1))


def _pack_grads(dx: Any, dstates: list, dw_ih: list, dw_hh: list, db_ih: list, db_hh: list, bias: bool) -> tuple:
    grads = [dx, *dstates]
    for d in range(len(dw_ih)):
        grads += [dw_ih[d], dw_hh[d]] + ([db_ih[d], db_hh[d]] if bias else [])
    return tuple(grads)


# --- Elman RNN ------------------------------------------------------------------------------------------------
def _rnn_layer_forward(x: Any, h0: Any, *weights: Any, nonlinearity: str = "tanh", mask: Any = None,
                       bias: bool = True, needs_input_grad: bool = True) -> tuple:
    """h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) for both directions; act = tanh or relu."""
    xp = xp_of(x, h0, *weights)
    w = _unpack(weights, bias)
    T, B, _ = x.shape
    D, H = len(w), h0.shape[-1]
    dtype = np.result_type(x.dtype, h0.dtype, *[a.dtype for a in weights])
    pre, w_ih = _project(xp, x, w, True, dtype)
    hs = xp.empty((D, T + 1, B, H), dtype=dtype)
    keep = None if mask is None else ~mask
    for d in range(D):
        w_hh_t = w[d][1].T
        cols = slice(d * H, (d + 1) * H)
        hs[d, 0 if d == 0 else T] = h0[d]
        for t, read, write in _schedule(T, d):
            h = hs[d, write]
            matmul(hs[d, read], w_hh_t, out=h)
            h += pre[t, :, cols]
            if nonlinearity == "tanh":
                xp.tanh(h, out=h)
            else:
                xp.maximum(h, 0, out=h)
            if keep is not None:  # past the end of a sequence the state stays
                xp.copyto(h, hs[d, read], where=keep[t])
    out, h_n = _outputs(xp, hs, mask, dtype)
    return (out, h_n), (hs, w_ih)


def _rnn_layer_vjp(g: tuple, ans: tuple, x: Any, h0: Any, *weights: Any, res: tuple, nonlinearity: str = "tanh",
                   mask: Any = None, bias: bool = True, needs_input_grad: bool = True) -> tuple:
    """BPTT: delta_t = (dE/dh_t + delta_{t+1} W_hh) * act'(a_t), run backwards along each direction's own order."""
    hs, w_ih = res
    g_out, g_hn = g
    xp = xp_of(hs)
    w = _unpack(weights, bias)
    T, B, _ = x.shape
    D, H = len(w), hs.shape[-1]
    dpre = xp.empty((T, B, D * H), dtype=hs.dtype)
    dh0, dw_hh = [], []
    carry_tmp = xp.empty((B, H), dtype=hs.dtype)
    for d in range(D):
        cols = slice(d * H, (d + 1) * H)
        h_after = _after(hs, d)
        if nonlinearity == "tanh":  # tanh' = 1 - h^2, computed in place
            deriv = h_after * h_after
            xp.subtract(1, deriv, out=deriv)
        else:
            deriv = (h_after > 0).astype(hs.dtype)
        g_d = g_out[:, :, cols]
        if mask is not None:
            deriv *= mask
            g_d = g_d * mask
        w_hh = w[d][1]
        carry = xp.array(g_hn[d], dtype=hs.dtype, copy=True)  # dE/dh after the last step of this direction
        for t, _, _ in reversed(_schedule(T, d)):
            carry += g_d[t]
            delta = dpre[t, :, cols]
            xp.multiply(carry, deriv[t], out=delta)
            if mask is None:
                matmul(delta, w_hh, out=carry)
            else:  # a padded step passed its state through unchanged, so it passes the gradient through too
                matmul(delta, w_hh, out=carry_tmp)
                xp.copyto(carry, carry_tmp, where=mask[t])
        dh0.append(carry)
        dw_hh.append(_hidden_weight_grad(dpre[:, :, cols], _before(hs, d)))
    dx, dw_ih, db = _input_grads(xp, x, dpre, w_ih, w, needs_input_grad)
    db_hh = [None if b is None else b.copy() for b in db]
    return _pack_grads(dx, [xp.stack(dh0)], dw_ih, dw_hh, db, db_hh, bias)


# --- LSTM -----------------------------------------------------------------------------------------------------
def _lstm_layer_forward(x: Any, h0: Any, c0: Any, *weights: Any, mask: Any = None, bias: bool = True,
                        needs_input_grad: bool = True) -> tuple:
    """Gates (i, f, g, o) = (sig, sig, tanh, sig)(x W_ih^T + b_ih + h W_hh^T + b_hh); c = f c + i g; h = o tanh(c)."""
    xp = xp_of(x, h0, c0, *weights)
    w = _unpack(weights, bias)
    T, B, _ = x.shape
    D, H = len(w), h0.shape[-1]
    dtype = np.result_type(x.dtype, h0.dtype, c0.dtype, *[a.dtype for a in weights])
    gates, w_ih = _project(xp, x, w, True, dtype)  # pre-activations, overwritten by the gate values
    hs = xp.empty((D, T + 1, B, H), dtype=dtype)
    cs = xp.empty((D, T + 1, B, H), dtype=dtype)
    tanh_c = xp.empty((D, T, B, H), dtype=dtype)
    z = xp.empty((B, 4 * H), dtype=dtype)
    keep = None if mask is None else ~mask
    for d in range(D):
        w_hh_t = w[d][1].T
        start = 0 if d == 0 else T
        hs[d, start], cs[d, start] = h0[d], c0[d]
        for t, read, write in _schedule(T, d):
            a = gates[t, :, d * 4 * H:(d + 1) * 4 * H]
            matmul(hs[d, read], w_hh_t, out=z)
            a += z
            i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
            _sigmoid_(xp, a[:, :2 * H])  # i and f
            xp.tanh(g, out=g)
            _sigmoid_(xp, o)
            c, h = cs[d, write], hs[d, write]
            xp.multiply(f, cs[d, read], out=c)
            c += i * g
            xp.tanh(c, out=tanh_c[d, t])
            xp.multiply(o, tanh_c[d, t], out=h)
            if keep is not None:
                xp.copyto(c, cs[d, read], where=keep[t])
                xp.copyto(h, hs[d, read], where=keep[t])
    out, h_n = _outputs(xp, hs, mask, dtype)
    c_n = xp.stack([cs[0, T]] + ([cs[1, 0]] if D == 2 else []))
    return (out, h_n, c_n), (hs, cs, gates, tanh_c, w_ih)


def _lstm_layer_vjp(g: tuple, ans: tuple, x: Any, h0: Any, c0: Any, *weights: Any, res: tuple, mask: Any = None,
                    bias: bool = True, needs_input_grad: bool = True) -> tuple:
    """BPTT through h = o tanh(c), c = f c_prev + i g: the cell-state delta runs alongside the hidden one."""
    hs, cs, gates, tanh_c, w_ih = res
    g_out, g_hn, g_cn = g
    xp = xp_of(hs)
    w = _unpack(weights, bias)
    T, B, _ = x.shape
    D, H = len(w), hs.shape[-1]
    dpre = xp.empty((T, B, D * 4 * H), dtype=hs.dtype)
    dh0, dc0, dw_hh = [], [], []
    tmp = xp.empty((B, H), dtype=hs.dtype)
    for d in range(D):
        dh = xp.empty((B, H), dtype=hs.dtype)  # its own per direction: with a mask it swaps with carry_h
        blk = slice(d * 4 * H, (d + 1) * 4 * H)
        act = gates[:, :, blk]
        i, f, gg, o = act[..., :H], act[..., H:2 * H], act[..., 2 * H:3 * H], act[..., 3 * H:]
        # local derivatives of every step at once: sig' = s(1-s), tanh' = 1 - t^2
        dact = xp.concatenate([i * (1 - i), f * (1 - f), 1 - gg * gg, o * (1 - o)], axis=-1)
        dtanh_c = 1 - tanh_c[d] * tanh_c[d]
        g_d = g_out[:, :, d * H:(d + 1) * H]
        if mask is not None:  # padded steps: no gate deltas; the carried deltas pass through
            dact *= mask
            dtanh_c *= mask
            g_d = g_d * mask
        c_before, w_hh = _before(cs, d), w[d][1]
        carry_h = xp.array(g_hn[d], dtype=hs.dtype, copy=True)
        carry_c = xp.array(g_cn[d], dtype=hs.dtype, copy=True)
        for t, _, _ in reversed(_schedule(T, d)):
            delta = dpre[t, :, blk]
            xp.add(carry_h, g_d[t], out=dh)
            xp.multiply(dh, tanh_c[d, t], out=delta[:, 3 * H:])            # dE/do
            xp.multiply(dh, o[t], out=tmp)
            tmp *= dtanh_c[t]
            carry_c += tmp                                                 # dE/dc
            xp.multiply(carry_c, gg[t], out=delta[:, :H])                  # dE/di
            xp.multiply(carry_c, c_before[t], out=delta[:, H:2 * H])       # dE/df
            xp.multiply(carry_c, i[t], out=delta[:, 2 * H:3 * H])          # dE/dg
            delta *= dact[t]                                               # through the gate nonlinearities
            if mask is None:
                carry_c *= f[t]
                matmul(delta, w_hh, out=carry_h)
            else:
                xp.multiply(carry_c, f[t], out=tmp)
                xp.copyto(carry_c, tmp, where=mask[t])
                matmul(delta, w_hh, out=tmp)
                xp.copyto(dh, tmp, where=mask[t])
                carry_h, dh = dh, carry_h
        dh0.append(carry_h)
        dc0.append(carry_c)
        dw_hh.append(_hidden_weight_grad(dpre[:, :, blk], _before(hs, d)))
    dx, dw_ih, db = _input_grads(xp, x, dpre, w_ih, w, needs_input_grad)
    db_hh = [None if b is None else b.copy() for b in db]
    return _pack_grads(dx, [xp.stack(dh0), xp.stack(dc0)], dw_ih, dw_hh, db, db_hh, bias)


# --- GRU ------------------------------------------------------------------------------------------------------
def _gru_layer_forward(x: Any, h0: Any, *weights: Any, mask: Any = None, bias: bool = True,
                       needs_input_grad: bool = True) -> tuple:
    """r, z = sig(x W_i^T + b_i + h W_h^T + b_h); n = tanh(x W_in^T + b_in + r (h W_hn^T + b_hn)); h = n + z (h - n)."""
    xp = xp_of(x, h0, *weights)
    w = _unpack(weights, bias)
    T, B, _ = x.shape
    D, H = len(w), h0.shape[-1]
    dtype = np.result_type(x.dtype, h0.dtype, *[a.dtype for a in weights])
    gates, w_ih = _project(xp, x, w, False, dtype)  # input side + b_ih, overwritten by r, z, n
    hidden = xp.empty((D, T, B, 3 * H), dtype=dtype)  # h W_hh^T + b_hh of every step
    hs = xp.empty((D, T + 1, B, H), dtype=dtype)
    rh = xp.empty((B, H), dtype=dtype)
    keep = None if mask is None else ~mask
    for d in range(D):
        w_hh_t, b_hh = w[d][1].T, w[d][3]
        hs[d, 0 if d == 0 else T] = h0[d]
        for t, read, write in _schedule(T, d):
            a, gh, h = gates[t, :, d * 3 * H:(d + 1) * 3 * H], hidden[d, t], hs[d, write]
            matmul(hs[d, read], w_hh_t, out=gh)
            if b_hh is not None:
                gh += b_hh
            rz, n = a[:, :2 * H], a[:, 2 * H:]
            rz += gh[:, :2 * H]
            _sigmoid_(xp, rz)
            xp.multiply(rz[:, :H], gh[:, 2 * H:], out=rh)
            n += rh
            xp.tanh(n, out=n)
            xp.subtract(hs[d, read], n, out=h)  # h = n + z (h_prev - n)
            h *= rz[:, H:]
            h += n
            if keep is not None:
                xp.copyto(h, hs[d, read], where=keep[t])
    out, h_n = _outputs(xp, hs, mask, dtype)
    return (out, h_n), (hs, gates, hidden, w_ih)


def _gru_layer_vjp(g: tuple, ans: tuple, x: Any, h0: Any, *weights: Any, res: tuple, mask: Any = None,
                   bias: bool = True, needs_input_grad: bool = True) -> tuple:
    """BPTT through h = (1-z) n + z h_prev; the hidden side's n-delta is r * (the input side's)."""
    hs, gates, hidden, w_ih = res
    g_out, g_hn = g
    xp = xp_of(hs)
    w = _unpack(weights, bias)
    T, B, _ = x.shape
    D, H = len(w), hs.shape[-1]
    dpre = xp.empty((T, B, D * 3 * H), dtype=hs.dtype)       # deltas of the input-side pre-activations
    dhidden = xp.empty((D, T, B, 3 * H), dtype=hs.dtype)     # deltas of h W_hh^T + b_hh
    tmp = xp.empty((B, H), dtype=hs.dtype)
    dh0, dw_hh, db_hh = [], [], []
    for d in range(D):
        dh = xp.empty((B, H), dtype=hs.dtype)  # its own per direction: with a mask it swaps with carry
        blk = slice(d * 3 * H, (d + 1) * 3 * H)
        act = gates[:, :, blk]
        r, z, n = act[..., :H], act[..., H:2 * H], act[..., 2 * H:]
        h_before = _before(hs, d)
        one_minus_z, dn_act = 1 - z, 1 - n * n
        dz_act = z * one_minus_z * (h_before - n)  # d h / d a_z, times sig'
        dr_act = r * (1 - r) * hidden[d, :, :, 2 * H:]  # d a_n / d a_r through r (W_hn h + b_hn)
        g_d = g_out[:, :, d * H:(d + 1) * H]
        if mask is not None:
            dn_act *= mask
            dz_act *= mask
            g_d = g_d * mask
        w_hh = w[d][1]
        carry = xp.array(g_hn[d], dtype=hs.dtype, copy=True)
        for t, _, _ in reversed(_schedule(T, d)):
            dx_t, dh_t = dpre[t, :, blk], dhidden[d, t]
            xp.add(carry, g_d[t], out=dh)
            xp.multiply(dh, one_minus_z[t], out=dx_t[:, 2 * H:])  # dE/dn
            dx_t[:, 2 * H:] *= dn_act[t]                          # dE/da_n
            xp.multiply(dx_t[:, 2 * H:], r[t], out=dh_t[:, 2 * H:])
            xp.multiply(dx_t[:, 2 * H:], dr_act[t], out=dh_t[:, :H])  # dE/da_r
            xp.multiply(dh, dz_act[t], out=dh_t[:, H:2 * H])      # dE/da_z
            matmul(dh_t, w_hh, out=tmp)
            if mask is None:
                xp.multiply(dh, z[t], out=carry)
                carry += tmp
            else:
                tmp += dh * z[t]
                xp.copyto(dh, tmp, where=mask[t])
                carry, dh = dh, carry
        dpre[:, :, d * 3 * H:d * 3 * H + 2 * H] = dhidden[d, :, :, :2 * H]  # r and z: same delta on both sides
        dh0.append(carry)
        dw_hh.append(_hidden_weight_grad(dhidden[d], h_before))
        db_hh.append(dhidden[d].sum(axis=(0, 1)) if bias else None)
    dx, dw_ih, db_ih = _input_grads(xp, x, dpre, w_ih, w, needs_input_grad)
    return _pack_grads(dx, [xp.stack(dh0)], dw_ih, dw_hh, db_ih, db_hh, bias)


defprim("rnn_layer", _rnn_layer_forward, _rnn_layer_vjp,
        "BPTT: delta_t = (dE/dh_t + delta_{t+1} W_hh) * act'(a_t); dW_hh = sum_t delta_t^T h_{t-1}",
        has_residuals=True)
defprim("lstm_layer", _lstm_layer_forward, _lstm_layer_vjp,
        "BPTT with dc_t = dh_t o_t tanh'(c_t) + dc_{t+1} f_{t+1}; gate deltas di = dc g, df = dc c_{t-1}, dg = dc i, "
        "do = dh tanh(c_t)", has_residuals=True)
defprim("gru_layer", _gru_layer_forward, _gru_layer_vjp,
        "BPTT with dn = dh (1-z), dz = dh (h_{t-1} - n), dr = da_n (W_hn h_{t-1} + b_hn); dh_{t-1} = dh z + delta_h W_hh",
        has_residuals=True)


def fused_layer(mode: str, x: Tensor, hx: Any, weights: Sequence[Sequence[Tensor]], mask: Any = None,
                nonlinearity: str = "tanh") -> tuple:
    """One (bi)directional layer as a single autograd node; same arguments and results as :func:`steps_layer`."""
    flat = [w for group in weights for w in group]
    bias = len(weights[0]) == 4
    params = dict(mask=mask, bias=bias, needs_input_grad=x.requires_grad)
    if mode == "LSTM":
        out, h_n, c_n = apply(PRIMITIVES["lstm_layer"], x, hx[0], hx[1], *flat, **params)
        return out, (h_n, c_n)
    if mode == "GRU":
        return apply(PRIMITIVES["gru_layer"], x, hx, *flat, **params)
    return apply(PRIMITIVES["rnn_layer"], x, hx, *flat, nonlinearity=nonlinearity, **params)


from .fast_rnn import batched_layer  # noqa: E402 (fast_rnn builds on the helpers above)

IMPLEMENTATIONS = {"fused": fused_layer, "steps": steps_layer, "batched": batched_layer}


# =============================================================================================================
# Modules
# =============================================================================================================
def _lengths_array(lengths: Any, batch: int, steps: int) -> np.ndarray:
    """``lengths`` (list, NumPy/CuPy array or Tensor) as host int64, checked against the batch and T."""
    if isinstance(lengths, Tensor):
        lengths = lengths.numpy()
    elif backend.is_cupy_array(lengths):
        lengths = lengths.get()
    arr = np.asarray(lengths)
    if arr.ndim != 1:
        raise ValueError(f"lengths must be one integer per sequence, a 1-D sequence; got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not (np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr))):
            raise TypeError(f"lengths must be integers; got dtype {arr.dtype}")
    if arr.shape[0] != batch:
        raise ValueError(f"lengths has {arr.shape[0]} entries, expected {batch} (one per sequence in the batch)")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 1 or arr.max() > steps):
        raise ValueError(f"lengths must lie in [1, T={steps}]; got values from {arr.min()} to {arr.max()}")
    return arr


def _lengths_mask_in_capture(lengths: Any, batch: int, steps: int, xp: Any) -> Any:
    """The (T, B, 1) mask inside a step being captured as a CUDA graph: computed on the device from lengths that
    already live there, without asking the host (the warm-up step checked the lengths it was given; what is
    copied into that array later is the caller's to keep in [1, T])."""
    data = lengths.data if isinstance(lengths, Tensor) else lengths
    if not hasattr(data, "shape") or xp_of(data) is not xp or tuple(data.shape) != (batch,):
        raise backend.CaptureError(
            f"inside a captured step, lengths must be a ({batch},) integer array on the same device as the input, "
            f"so that each batch's lengths can be copied into it; got {type(data).__name__} "
            f"of shape {getattr(data, 'shape', None)}")
    return (xp.arange(steps)[:, None] < data[None, :])[:, :, None]


def lengths_mask(lengths: np.ndarray, steps: int, xp: Any) -> Any:
    """The (T, B, 1) boolean mask m[t, b] = t < lengths[b], on the array module ``xp``."""
    mask = np.arange(steps)[:, None] < np.asarray(lengths)[None, :]
    return xp.asarray(mask[:, :, None])


class RNNBase(Module):
    """Shared by RNN, LSTM and GRU: parameters named and ordered as in PyTorch, forward over layers."""

    mode = "RNN"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 nonlinearity: str = "tanh", impl: str = "auto", dtype: Any = np.float32):
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1); got {dropout!r}")
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu'; got {nonlinearity!r}")
        self.input_size, self.hidden_size, self.num_layers = int(input_size), int(hidden_size), int(num_layers)
        self.bias, self.batch_first, self.dropout = bool(bias), bool(batch_first), float(dropout)
        self.bidirectional, self.nonlinearity = bool(bidirectional), nonlinearity
        self.impl = impl
        self.num_directions = 2 if bidirectional else 1
        gate_rows = GATES[self.mode] * hidden_size
        bound = 1.0 / math.sqrt(hidden_size)
        self._weight_names: list[list[str]] = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * self.num_directions
            for d in range(self.num_directions):
                suffix = f"_l{layer}" + ("_reverse" if d == 1 else "")
                shapes = {f"weight_ih{suffix}": (gate_rows, layer_input), f"weight_hh{suffix}": (gate_rows, hidden_size)}
                if bias:
                    shapes.update({f"bias_ih{suffix}": (gate_rows,), f"bias_hh{suffix}": (gate_rows,)})
                for name, shape in shapes.items():  # registered (and drawn) in PyTorch's order
                    setattr(self, name, uniform_parameter(shape, bound, dtype))
                self._weight_names.append(list(shapes))

    @property
    def impl(self) -> str:
        """'fused' (one autograd node per layer), 'steps' (the cells, step by step), 'batched' (both directions
        in one batched step with fused cell kernels on CuPy: :mod:`tinygrad_birnn.fast_rnn`), or 'auto' (the
        default: 'batched' for arrays on a GPU, 'fused' on the CPU, the faster of the two on each)."""
        return self._impl

    @impl.setter
    def impl(self, value: str) -> None:
        if value not in IMPLEMENTATIONS and value != "auto":
            raise ValueError(f"impl must be one of {sorted(IMPLEMENTATIONS) + ['auto']}; got {value!r}")
        object.__setattr__(self, "_impl", value)

    @property
    def all_weights(self) -> list:
        """[[W_ih, W_hh(, b_ih, b_hh)] for each layer and direction], as in PyTorch."""
        return [[getattr(self, n) for n in names] for names in self._weight_names]

    def _layer_weights(self, layer: int) -> list:
        D = self.num_directions
        return self.all_weights[layer * D:(layer + 1) * D]

    def _check_state(self, h: Any, shape: tuple, what: str, x: Tensor) -> Tensor:
        if not isinstance(h, Tensor):
            h = Tensor(h)
        if h.shape != shape:
            raise ValueError(f"{type(self).__name__}: {what} has shape {h.shape}, expected {shape} "
                             "(num_layers * num_directions, batch, hidden_size)")
        xp_of(h.data, x.data)
        return h

    def forward(self, x: Tensor, hx: Any = None, lengths: Any = None) -> tuple:
        """output (T, B, D*H) ((B, T, D*H) with batch_first) and h_n (num_layers*D, B, H); LSTM: (h_n, c_n)."""
        name = type(self).__name__
        if not isinstance(x, Tensor):
            x = Tensor(x)
        if x.ndim not in (2, 3):
            raise ValueError(f"{name}: expected input of rank 3 ({'B, T' if self.batch_first else 'T, B'}, "
                             f"input_size) or rank 2 (T, input_size) unbatched; got shape {x.shape}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"{name}: expected input with input_size={self.input_size} features on the last axis; "
                             f"got shape {x.shape}")
        batched = x.ndim == 3
        if not batched:
            if lengths is not None:
                raise ValueError(f"{name}: lengths need a batch; got unbatched input of shape {x.shape}")
            x = x.reshape(x.shape[0], 1, x.shape[1])
        elif self.batch_first:
            x = x.transpose(1, 0, 2)
        T, B = x.shape[0], x.shape[1]
        L, D, H = self.num_layers, self.num_directions, self.hidden_size
        shape = (L * D, B, H) if batched else (L * D, H)
        if hx is None:
            h0 = zeros((L * D, B, H), dtype=x.dtype)
            state = (h0, h0) if self.mode == "LSTM" else h0
        else:
            if self.mode == "LSTM":
                if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                    raise TypeError(f"LSTM: hx must be a tuple (h_0, c_0) of two tensors of shape {shape}; "
                                    f"got {type(hx).__name__}")
                state = tuple(self._check_state(h, shape, w, x).reshape(L * D, B, H) for h, w in zip(hx, ("h_0", "c_0")))
            else:
                state = self._check_state(hx, shape, "hx", x).reshape(L * D, B, H)
        mask = None
        if lengths is not None:
            if backend.capturing():
                mask = _lengths_mask_in_capture(lengths, B, T, xp_of(x.data))
            else:
                mask = lengths_mask(_lengths_array(lengths, B, T), T, xp_of(x.data))
        impl = self.impl if self.impl != "auto" else "batched" if backend.is_cupy_array(x.data) else "fused"
        layer_fn = IMPLEMENTATIONS[impl]
        finals = []
        for layer in range(L):
            rows = slice(layer * D, (layer + 1) * D)
            s = (state[0][rows], state[1][rows]) if self.mode == "LSTM" else state[rows]
            x, final = layer_fn(self.mode, x, s, self._layer_weights(layer), mask, self.nonlinearity)
            finals.append(final)
            if self.dropout and self.training and layer < L - 1:
                x = F.dropout(x, self.dropout, True)
        if self.mode == "LSTM":
            h_n = finals[0][0] if L == 1 else concatenate([f[0] for f in finals], axis=0)
            c_n = finals[0][1] if L == 1 else concatenate([f[1] for f in finals], axis=0)
        else:
            h_n = finals[0] if L == 1 else concatenate(finals, axis=0)
        if not batched:
            x = x.reshape(T, D * H)
            h_n = h_n.reshape(L * D, H)
            c_n = c_n.reshape(L * D, H) if self.mode == "LSTM" else None
        elif self.batch_first:
            x = x.transpose(1, 0, 2)
        return (x, (h_n, c_n)) if self.mode == "LSTM" else (x, h_n)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.mode == "RNN" and self.nonlinearity != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        for flag, default in (("bias", True), ("batch_first", False), ("dropout", 0.0), ("bidirectional", False)):
            if getattr(self, flag) != default:
                s += f", {flag}={getattr(self, flag)}"
        return s + (f", impl={self.impl!r}" if self.impl != "auto" else "")


class RNN(RNNBase):
    """Elman RNN, h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) (or relu), as ``torch.nn.RNN``."""

    mode = "RNN"


class _GatedBase(RNNBase):
    """LSTM and GRU: PyTorch's signature, which has no ``nonlinearity`` (the gates fix their own)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 impl: str = "auto", dtype: Any = np.float32):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         impl=impl, dtype=dtype)


class LSTM(_GatedBase):
    """Long short-term memory, gates (i, f, g, o), as ``torch.nn.LSTM``; hx and the final state are (h, c)."""

    mode = "LSTM"


class GRU(_GatedBase):
    """Gated recurrent unit, gates (r, z, n) with b_hn inside r*(W_hn h + b_hn), as ``torch.nn.GRU``."""

    mode = "GRU"


# --- cells ------------------------------------------------------------------------------------------------------
class _CellBase(Module):
    mode = "RNN"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, dtype: Any = np.float32):
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        self.input_size, self.hidden_size, self.bias = int(input_size), int(hidden_size), bool(bias)
        rows, bound = GATES[self.mode] * hidden_size, 1.0 / math.sqrt(hidden_size)
        self.weight_ih = uniform_parameter((rows, input_size), bound, dtype)
        self.weight_hh = uniform_parameter((rows, hidden_size), bound, dtype)
        self.bias_ih = uniform_parameter((rows,), bound, dtype) if bias else None
        self.bias_hh = uniform_parameter((rows,), bound, dtype) if bias else None

    def _check(self, x: Any, hx: Any) -> tuple:
        name = type(self).__name__
        if not isinstance(x, Tensor):
            x = Tensor(x)
        if x.ndim not in (1, 2) or x.shape[-1] != self.input_size:
            raise ValueError(f"{name}: expected input of shape (batch, {self.input_size}) or ({self.input_size},); "
                             f"got {x.shape}")
        shape = x.shape[:-1] + (self.hidden_size,)
        if hx is None:
            h = zeros(shape, dtype=x.dtype)
            return x, ((h, h) if self.mode == "LSTM" else h)
        if self.mode == "LSTM" and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise TypeError(f"{name}: hx must be a tuple (h, c) of two tensors of shape {shape}; got {type(hx).__name__}")
        states = hx if self.mode == "LSTM" else (hx,)
        states = tuple(s if isinstance(s, Tensor) else Tensor(s) for s in states)
        for s in states:
            if s.shape != shape:
                raise ValueError(f"{name}: hidden state has shape {s.shape}, expected {shape}")
        return x, (states if self.mode == "LSTM" else states[0])

    def _weights(self) -> tuple:
        return (self.weight_ih, self.weight_hh) + ((self.bias_ih, self.bias_hh) if self.bias else ())

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")


class RNNCell(_CellBase):
    """One Elman step, h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh) (or relu), as ``torch.nn.RNNCell``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 dtype: Any = np.float32):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu'; got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, x: Tensor, hx: Tensor | None = None) -> Tensor:
        x, h = self._check(x, hx)
        return rnn_cell(x, h, *self._weights(), nonlinearity=self.nonlinearity)


class LSTMCell(_CellBase):
    """One LSTM step, returning (h', c'), as ``torch.nn.LSTMCell``."""

    mode = "LSTM"

    def forward(self, x: Tensor, hx: tuple | None = None) -> tuple:
        x, state = self._check(x, hx)
        return lstm_cell(x, state, *self._weights())


class GRUCell(_CellBase):
    """One GRU step, as ``torch.nn.GRUCell``."""

    mode = "GRU"

    def forward(self, x: Tensor, hx: Tensor | None = None) -> Tensor:
        x, h = self._check(x, hx)
        return gru_cell(x, h, *self._weights())
