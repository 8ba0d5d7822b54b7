"""Both directions of a layer in one batched step (``impl="bptt_batched"``): BPTT rearranged for a GPU.

The per-direction driver (:mod:`.bptt`) runs the forward chain, then the backward chain, each step a handful of
small array operations. On a GPU every operation is a kernel launch, and at small sizes the launches cost more
than the arithmetic. Here step s of the forward chain (time s) and step s of the backward chain (time T-1-s)
run together:

* the input projections of every step come from one matmul (as in :mod:`.bptt`) and are copied once into
  schedule order, indexed [s, b, d]: [s, :, 0] belongs to time s, [s, :, 1] to time T-1-s;
* the states live in (T+1, B, D, H) buffers in the same order: step s reads [s] and writes [s + 1];
* each step is ONE batched matmul over the directions, state (D, B, H) @ W_hh^T (D, H, G*H), and ONE call of
  the cell's step function (one kernel on a GPU) for both directions; backward likewise. dW_hh is one batched
  matmul over all steps; dx, dW_ih and the biases come from one matmul each.

On a GPU a step's product is small: (B x H) @ (H x G*H) per direction gives cuBLAS only a few tiles to share
among a hundred-odd multiprocessors, each walking all H of the inner dimension. So the inner dimension is cut
into S pieces (*split-K*): one batched call computes D*S partial products, which the step kernel adds up. The
buffers are indexed [step, b, d, k] throughout; in memory they are direction-major, each step's (D, B, K) block
contiguous, except the inputs of a split product, which are batch-major, (B, D, K) per step: there the S pieces
of both directions sit at one fixed stride from each other, the layout a single strided-batched call needs. The
step functions see the (D, B, .) views.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .. import backend
from ..backend import is_cupy_array, matmul, xp_of
from ..tensor import Tensor
from .bptt import (apply_layer, as_state, backward_loop, cell_params, forward_loop, input_grads,
                   like_given, pack_grads, project_inputs, unpack_weights)
from ..ops import defprim
from .steps import CELLS, gate_views


def split_k(inner: int, a: Any) -> int:
    """Into how many pieces a step's product cuts its inner dimension: 4 or 2 (each piece keeping at least 16)
    when the products go through the library's own cuBLAS handle, in a step captured as a CUDA graph (measured on
    an H200: the (2, 128, 256) @ (2, 256, 256) product of size L takes 7.2 µs whole, 4.1 µs in four pieces).
    Otherwise 1: NumPy gains nothing from it, and CuPy's own matmul would copy the strided pieces first."""
    if not is_cupy_array(a) or not backend.products_routed():
        return 1
    return next((s for s in (4, 2) if inner % s == 0 and inner // s >= 16), 1)


class StepProduct:
    """state (D, B, K) -> state @ w per direction, w (D, K, N), as ``split`` partial sums (D, B, N) from one
    batched matmul over D * split matrices (the pieces of direction d are matrices d*split .. d*split+split-1).
    The state is a step's view of a schedule buffer; with split > 1 that buffer is batch-major."""

    def __init__(self, xp: Any, w: Any, batch: int, split: int):
        D, K, N = w.shape
        self.split, self.inner = split, K // split
        self.w = w.reshape(D * split, self.inner, N)
        self.out = xp.empty((D * split, batch, N), dtype=w.dtype)
        self.parts = [self.out.reshape(D, split, batch, N)[:, j] for j in range(split)]
        self.call = (self.product, self.w, self.out)  # what the loops call: mm(state, w, out=out)

    def product(self, state: Any, w: Any, out: Any) -> list:
        D, B, K = state.shape
        pieces = state.swapaxes(0, 1).reshape(B, D * self.split, self.inner).transpose(1, 0, 2)
        matmul(pieces, w, out=out)
        return self.parts

    def start(self, whole: Any) -> list:
        """The parts standing for ``whole`` (D, B, N), before the first product: it in part 0, zeros elsewhere."""
        self.out.fill(0)
        self.parts[0][...] = whole
        return self.parts


def schedule_buffer(xp: Any, shape: tuple, dtype: Any, batch_major: bool = False) -> Any:
    """An array indexed [step, b, d, k] of ``shape``; in memory direction-major (each step's (D, B, K) block
    contiguous, what matmul and the kernels read fastest), or batch-major for the input of a split product."""
    if batch_major:
        return xp.empty(shape, dtype=dtype)
    T, B, D, K = shape
    return xp.empty((T, D, B, K), dtype=dtype).transpose(0, 2, 1, 3)


def by_step(a: Any) -> Any:
    """A schedule buffer [step, b, d, k] as [step, d, b, k]: what the loops index, each step a (D, B, K) view."""
    return a.swapaxes(1, 2)


def to_schedule(xp: Any, parts: Sequence[Any], dtype: Any) -> Any:
    """Per-direction (T, B, K) arrays -> one (T, B, D, K) array; step s of direction 1 is its time T-1-s."""
    T, B, K = parts[0].shape
    out = schedule_buffer(xp, (T, B, len(parts), K), dtype)
    for d, part in enumerate(parts):
        out[:, :, d] = part if d == 0 else part[::-1]
    return out


def to_time_order(xp: Any, scheduled: Any, mask: Any = None) -> Any:
    """(T, B, D, K) in schedule order -> (T, B, D*K) in time order, [direction 0 || direction 1], times mask."""
    T, B, D, K = scheduled.shape
    out = xp.empty((T, B, D * K), dtype=scheduled.dtype)
    for d in range(D):
        part = scheduled[:, :, d] if d == 0 else scheduled[::-1, :, d]
        if mask is None:
            out[:, :, d * K:(d + 1) * K] = part
        else:
            xp.multiply(part, mask, out=out[:, :, d * K:(d + 1) * K])
    return out


def _stacked_hidden(xp: Any, w: list, dtype: Any, transpose: bool) -> Any:
    """W_hh of every direction as one contiguous (D, G*H, H) array, or W_hh^T as (D, H, G*H)."""
    return xp.ascontiguousarray(xp.stack([wd[1].T if transpose else wd[1] for wd in w]).astype(dtype, copy=False))


def _schedule_mask(xp: Any, mask: Any, D: int) -> Any:
    return None if mask is None else by_step(to_schedule(xp, [mask] * D, bool))


def _hidden_weight_grads(xp: Any, deltas: Any, h_before: Any) -> list:
    """dW_hh[d] = sum_s delta_s[d]^T h_{s-1}[d], for both directions one (D, G*H, T*B) @ (D, T*B, H) matmul."""
    T, B, D, _ = deltas.shape

    def per_direction(a: Any) -> Any:
        return xp.ascontiguousarray(a.transpose(2, 0, 1, 3)).reshape(D, T * B, a.shape[-1])

    return list(matmul(per_direction(deltas).transpose(0, 2, 1), per_direction(h_before)))


def _hidden_bias(xp: Any, w: list, dtype: Any) -> Any:
    """b_hh of every direction as (D, 1, G*H), or None without biases."""
    return None if w[0][3] is None else xp.stack([wd[3] for wd in w]).astype(dtype, copy=False)[:, None, :]


def batched_forward(x: Any, *args: Any, cell: str, nonlinearity: str = "tanh", mask: Any = None,
                     bias: bool = True, needs_input_grad: bool = True) -> tuple:
    """All directions' chains at once, one step function call per step. Returns ``(output, *final_states)``."""
    spec = CELLS[cell]
    initial, weights = args[:spec.states], args[spec.states:]
    xp = xp_of(x, *args)
    w = unpack_weights(weights, bias)
    dtype = np.result_type(*[a.dtype for a in (x, *args)])
    (T, B, _), D, H = x.shape, len(w), initial[0].shape[-1]
    pre, w_ih = project_inputs(xp, spec, x, w, dtype)
    w_hh_t = _stacked_hidden(xp, w, dtype, transpose=True)
    product = StepProduct(xp, w_hh_t, B, split_k(H, w_hh_t))
    states = []
    for k, start in enumerate(initial):  # h is the product's input: batch-major when the product is split
        buffer = schedule_buffer(xp, (T + 1, B, D, H), dtype, batch_major=k == 0 and product.split > 1)
        by_step(buffer)[0] = start
        states.append(buffer)
    saved = [schedule_buffer(xp, (T, B, D, n * H), dtype) for n in spec.saved]
    pre_scheduled = to_schedule(xp, list(gate_views(pre, D)), dtype)
    forward_loop(spec, product, by_step(pre_scheduled), _schedule_mask(xp, mask, D), [by_step(s) for s in states],
                 [by_step(s) for s in saved], cell_params(spec, nonlinearity, _hidden_bias(xp, w, dtype)))
    finals = [by_step(s)[T].copy() for s in states]
    return (to_time_order(xp, states[0][1:], mask), *finals), (states, saved, w_ih)


def batched_vjp(g: tuple, ans: tuple, x: Any, *args: Any, res: tuple, cell: str, nonlinearity: str = "tanh",
                 mask: Any = None, bias: bool = True, needs_input_grad: bool = True) -> tuple:
    """BPTT, all directions per step: delta_s = m dE/dh_s act'; dE/dh_{s-1} = delta_s W_hh + skip_s."""
    spec = CELLS[cell]
    states, saved, w_ih = res
    g_out, g_states = g[0], g[1:]
    xp = xp_of(states[0])
    w = unpack_weights(args[spec.states:], bias)
    dtype = states[0].dtype
    T, (_, B, D, H) = x.shape[0], states[0].shape
    GH = spec.gates * H
    w_hh = _stacked_hidden(xp, w, dtype, transpose=False)
    product = StepProduct(xp, w_hh, B, split_k(w_hh.shape[1], w_hh))
    g_scheduled = to_schedule(xp, list(gate_views(g_out, D)), dtype)
    deltas = schedule_buffer(xp, (T, B, D, GH), dtype, batch_major=product.split > 1)
    n_deltas = schedule_buffer(xp, (T, B, D, H), dtype) if spec.bias_inside else None
    carries = [schedule_buffer(xp, (T + 1, B, D, H), dtype) for _ in range(spec.states)]
    by_step(carries[0])[T] = 0                       # skip: nothing bypasses W_hh after the last step
    for buffer, gk in zip(carries[1:], g_states[1:]):
        by_step(buffer)[T] = gk                      # dE/dc after the last step
    through = backward_loop(spec, product, product.start(g_states[0]), by_step(g_scheduled), _schedule_mask(xp, mask, D),
                            [by_step(s) for s in states], [by_step(s) for s in saved], by_step(deltas),
                            None if n_deltas is None else by_step(n_deltas), [by_step(c) for c in carries],
                            cell_params(spec, nonlinearity, backward=True))
    dstates = [by_step(carries[0])[0] + sum(through)] + [by_step(c)[0].copy() for c in carries[1:]]
    dw_hh = _hidden_weight_grads(xp, deltas, states[0][:-1])
    if spec.bias_inside:
        db_hh = list(deltas.sum(axis=(0, 1))) if bias else [None] * D
        deltas = deltas.copy()
        deltas[..., 2 * H:] = n_deltas                    # the input side's n block; r and z are the same both sides
    dx, dw_ih, db = input_grads(xp, x, to_time_order(xp, deltas), w_ih, w, needs_input_grad)
    if not spec.bias_inside:
        db_hh = [None if b is None else b.copy() for b in db]
    return pack_grads(dx, dstates, dw_ih, dw_hh, db, db_hh, bias)


def _register(cell: str, name: str, formula: str) -> None:
    def forward(x: Any, *args: Any, **params: Any) -> tuple:
        return batched_forward(x, *args, cell=cell, **params)

    def vjp(g: tuple, ans: tuple, x: Any, *args: Any, res: tuple, **params: Any) -> tuple:
        return batched_vjp(g, ans, x, *args, res=res, cell=cell, **params)

    forward.__doc__, vjp.__doc__ = batched_forward.__doc__, batched_vjp.__doc__
    defprim(name, forward, vjp, formula, has_residuals=True)


_register("RNN", "rnn_layer_batched",
          "rnn_layer's BPTT with all directions per step: delta_s = m dE/dh_s act'(a_s); "
          "dE/dh_{s-1} = delta_s W_hh + (1 - m) dE/dh_s; dW_hh = sum_s delta_s^T h_{s-1}")
_register("LSTM", "lstm_layer_batched",
          "lstm_layer's BPTT with all directions per step: dc = dc_next + m dh o tanh'(c); "
          "(di, df, dg, do) = m (dc g, dc c_prev, dc i, dh tanh(c)) act'; dc_prev = m ? dc f : dc")
_register("GRU", "gru_layer_batched",
          "gru_layer's BPTT with all directions per step: dn = m dh (1-z) tanh'; dz = m dh (h_prev - n) sig'; "
          "dr = dn (W_hn h_prev + b_hn) sig'; dE/dh_{s-1} = delta_s W_hh + (m ? dh z : dh)")
PRIMITIVE_NAMES = {"RNN": "rnn_layer_batched", "LSTM": "lstm_layer_batched", "GRU": "gru_layer_batched"}


def batched_layer(mode: str, x: Tensor, hx: Any, weights: Sequence[Sequence[Tensor]], mask: Any = None,
                  nonlinearity: str = "tanh") -> tuple:
    """One (bi)directional layer, all directions stepped together (``impl="bptt_batched"``); same arguments and
    results as :func:`tinygrad_birnn.rnn.bptt_layer`."""
    out, final = apply_layer(PRIMITIVE_NAMES, mode, x, as_state(hx), weights, mask, nonlinearity)
    return out, like_given(final, hx)
