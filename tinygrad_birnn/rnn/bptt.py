"""Backpropagation through time by hand: a whole (bi)directional layer as one autograd node (``impl="bptt"``).

The forward pass projects the inputs of every step of a direction with one matmul (``pre``), then runs the
direction's chain over time, one step function of :mod:`.steps` per step, into preallocated buffers.
The VJP is backpropagation through time written by hand (Schuster & Paliwal's procedure for a bidirectional
layer: the forward chain t = 1..T, the backward chain t = T..1, then the deltas back through both): each
direction's chain is walked in reverse, one backward step function per step (:func:`direction_vjp`), and the
weight and input gradients come from one matmul each over all steps.

Every buffer here is in *schedule order*, indexed by the step s a direction takes: s = t for the forward
chain and s = T-1-t for the backward one. What a chain reads at every step (its inputs, the gradient of its
output) is first copied into that order, contiguous (:func:`in_step_order`), so each step's row is one block
of memory. A state buffer has T+1 entries: step s reads [s] and writes [s + 1]; a carry buffer of the VJP
likewise, read at [s + 1] and written at [s]. The buffers come from :mod:`tinygrad_birnn.workspace`, reused
from one training step to the next. The loops (:func:`forward_loop`, :func:`backward_loop`) serve both
drivers, this one and :mod:`.batched`, which steps all directions together.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .. import workspace
from ..backend import matmul, xp_of
from ..ops import PRIMITIVES, defprim
from ..reductions import sum_leading
from ..tensor import Tensor, apply
from . import steps
from .steps import CELLS, Cell


def unpack_weights(weights: tuple, bias: bool) -> list:
    """The flat weight list (W_ih, W_hh[, b_ih, b_hh]) per direction -> [(W_ih, W_hh, b_ih, b_hh), ...]."""
    k = 4 if bias else 2
    groups = [weights[i:i + k] for i in range(0, len(weights), k)]
    return [tuple(w) if bias else (w[0], w[1], None, None) for w in groups]


def project_inputs(xp: Any, cell: Cell, x: Any, w: list, dtype: Any) -> tuple:
    """pre = x W_ih^T + b for every step and direction, as one (T*B, I) @ (I, D*G*H) matmul; b = b_ih + b_hh
    (for the GRU b_ih: its step adds b_hh to the product, b_hn belonging inside r (.))."""
    T, B, I = x.shape
    w_ih = xp.concatenate([wd[0] for wd in w], axis=0) if len(w) > 1 else w[0][0]
    if xp is np and x.dtype == w_ih.dtype == dtype:  # into a reused buffer (workspace)
        pre = matmul(x.reshape(T * B, I), w_ih.T, out=workspace.empty(xp, (T * B, w_ih.shape[0]), dtype))
    else:
        pre = matmul(x.reshape(T * B, I), w_ih.T).astype(dtype, copy=False)
    if w[0][2] is not None:
        pre += xp.concatenate([b_ih if cell.bias_inside else b_ih + b_hh for _, _, b_ih, b_hh in w])
    return pre.reshape(T, B, pre.shape[-1]), w_ih


def input_grads(
    xp: Any, x: Any, dpre: Any, w_ih: Any, w: list, needs_input_grad: bool
) -> tuple:
    """From the pre-activation deltas of all steps: dx = dpre W_ih, dW_ih = dpre^T x, db
    = sum dpre (one matmul each)."""
    T, B, I = x.shape
    flat = dpre.reshape(T * B, dpre.shape[-1])
    dx = matmul(flat, w_ih).reshape(T, B, I) if needs_input_grad else None
    dw_ih = matmul(flat.T, x.reshape(T * B, I))
    db = sum_leading(flat, 1) if w[0][2] is not None else None
    rows = dw_ih.shape[0] // len(w)
    split = [slice(d * rows, (d + 1) * rows) for d in range(len(w))]
    return dx, [dw_ih[s] for s in split], [None if db is None else db[s] for s in split]


def hidden_weight_grad(delta: Any, h_before: Any) -> Any:
    """dW_hh = sum_t delta_t^T h_{t-1}, one (G*H, T*B) @ (T*B, H) matmul."""
    T, B, GH = delta.shape
    return matmul(
        delta.reshape(T * B, GH).T, h_before.reshape(T * B, h_before.shape[-1])
    )


def pack_grads(dx: Any, dstates: Sequence, dw_ih: list, dw_hh: list, db_ih: list, db_hh: list, bias: bool) -> tuple:
    """The VJP's results in the primitive's argument order: x, the initial states, then each direction's weights."""
    grads = [dx, *dstates]
    for d in range(len(dw_ih)):
        grads += [dw_ih[d], dw_hh[d]] + ([db_ih[d], db_hh[d]] if bias else [])
    return tuple(grads)


def _rows(buffers: Sequence, steps: int) -> list:
    """[(b[s] for b in buffers) for s < steps] as tuples of views, made in C by zip; a None buffer gives None."""
    if not buffers:
        return [()] * steps
    return list(zip(*[[None] * steps if b is None else b for b in buffers]))


def forward_loop(
    cell: Cell,
    product: Any,
    pre: Any,
    mask: Any,
    states: Sequence,
    saved: Sequence,
    extra: tuple = (),
) -> None:
    """Run a chain: for each step s, ``cell.forward(h_s W, pre[s], states[s], mask[s],
    saved[s], states[s+1], *extra)``, the product h_s W from ``product.call``.

    ``states`` and ``saved`` are tuples of buffers indexed by step; ``mask`` is indexed
    by step, or None; ``extra`` the cell's own argument (:func:`cell_params`).
    """
    T = pre.shape[0]
    rows, kept = _rows(states, T + 1), _rows(saved, T)
    pres, masks, h = (
        list(pre),
        [None] * T if mask is None else list(mask),
        list(states[0]),
    )  # views, made in C
    forward, (mm, w, z) = cell.forward, product.call
    for s in range(T):
        z_s = mm(h[s], w, out=z)  # the step's product, h_s W
        forward(z_s, pres[s], rows[s], masks[s], kept[s], rows[s + 1], *extra)


def backward_loop(
    cell: Cell,
    product: Any,
    dh_last: Any,
    g: Any,
    mask: Any,
    states: Sequence,
    saved: Sequence,
    delta: Any,
    delta_input: Any,
    carries: Sequence,
    extra: tuple = (),
) -> Any:
    """Walk a chain backwards: step s takes the delta of step s+1 through W_hh
    (``dh_last`` after the last step), reads carries[s+1] and writes carries[s] and
    delta[s] (and delta_input[s] for the GRU). The cell's local derivatives are prepared
    for all steps first. Returns the product of delta[0], the part of dE/dh_0 that went
    through W_hh."""
    T = g.shape[0]
    prepared = cell.prepare_backward(
        tuple(saved),
        tuple(s[:-1] for s in states),
        tuple(s[1:] for s in states),
        mask,
        *extra
    )
    rows, kept, carry = _rows(states, T + 1), _rows(prepared, T), _rows(carries, T + 1)
    gs, deltas = list(g), list(delta)  # views, made in C
    masks = [None] * T if mask is None else list(mask)
    inputs = [None] * T if delta_input is None else list(delta_input)
    backward, (mm, w, z), dh_next = cell.backward, product.call, dh_last
    for s in reversed(range(T)):
        backward(
            dh_next,
            carry[s + 1],
            gs[s],
            kept[s],
            rows[s],
            rows[s + 1],
            masks[s],
            deltas[s],
            inputs[s],
            carry[s],
            *extra
        )
        dh_next = mm(deltas[s], w, out=z)
    return dh_next


class Product:
    """state (B, K) -> state @ w (K, N), into one reused buffer. The loops call
    ``mm(state, w, out=z)`` from ``call = (mm, w, z)``: NumPy's matmul itself on the
    host, where no capture can route it (no Python call in between), else the
    library's."""

    def __init__(self, xp: Any, w: Any, batch: int):
        self.w, self.out = w, xp.empty((batch, w.shape[1]), dtype=w.dtype)
        self.call = (np.matmul if xp is np else matmul, self.w, self.out)


def in_schedule_order(a: Any, d: int) -> Any:
    """A time-ordered array (T, ...) as direction d steps through it: itself, or reversed for d = 1."""
    return a if d == 0 else a[::-1]


def cell_params(cell: Cell, nonlinearity: str, bias_hh: Any = None, backward: bool = False) -> tuple:
    """The last argument of cell's step functions, as a tuple (empty where it has none): the RNN's
    nonlinearity; forward, the GRU's b_hh (None: no biases)."""
    if cell.name == "RNN":
        return (nonlinearity,)
    if cell.bias_inside and not backward:
        return (0 if bias_hh is None else bias_hh,)
    return ()


def in_step_order(xp: Any, a: Any, d: int) -> Any:
    """A time-ordered array (T, ...) as a contiguous copy in direction d's step order
    (reversed for d = 1)."""
    view = in_schedule_order(a, d)
    if view.flags.c_contiguous:
        return view
    out = workspace.empty(xp, a.shape, a.dtype)
    out[...] = view
    return out


def layer_forward(
    x: Any,
    *args: Any,
    cell: str,
    nonlinearity: str = "tanh",
    mask: Any = None,
    bias: bool = True,
    needs_input_grad: bool = True
) -> tuple:
    """Each direction's chain over time, one step function per step. Returns (output,
    ``*final_states``)."""
    spec = CELLS[cell]
    initial, weights = args[: spec.states], args[spec.states :]
    xp = xp_of(x, *args)
    w = unpack_weights(weights, bias)
    dtype = np.result_type(*[a.dtype for a in (x, *args)])
    (T, B, _), D, H = x.shape, len(w), initial[0].shape[-1]
    runs = []
    for d in range(D):
        x_d = in_step_order(xp, x, d)  # the inputs as this chain reads them
        pre, _ = project_inputs(xp, spec, x_d, [w[d]], dtype)
        states = tuple(
            workspace.empty(xp, (T + 1, B, H), dtype) for _ in range(spec.states)
        )
        for buffer, start in zip(states, initial):
            buffer[0] = start[d]
        saved = tuple(workspace.empty(xp, (T, B, k * H), dtype) for k in spec.saved)
        product = Product(xp, w[d][1].astype(dtype, copy=False).T, B)
        m = None if mask is None else in_schedule_order(mask, d)
        b_hh = None if w[d][3] is None else w[d][3].astype(dtype, copy=False)
        extra = cell_params(spec, nonlinearity, b_hh)
        forward_loop(spec, product, pre, m, states, saved, extra)
        del pre  # its buffer is free for the next direction's
        runs.append((states, saved, x_d))
    out = workspace.empty(xp, (T, B, D * H), dtype)
    for d, (states, _, _) in enumerate(runs):
        h = in_schedule_order(states[0][1:], d)
        if mask is None:
            out[:, :, d * H : (d + 1) * H] = h
        else:
            xp.multiply(h, mask, out=out[:, :, d * H : (d + 1) * H])
    finals = tuple(
        xp.stack([states[k][T] for states, _, _ in runs]) for k in range(spec.states)
    )
    return (out, *finals), runs


def direction_vjp(
    spec: Cell,
    run: tuple,
    d: int,
    g_out: Any,
    g_states: tuple,
    wd: tuple,
    mask: Any,
    nonlinearity: str,
) -> tuple:
    """BPTT along direction d's chain. Returns (dE/d its initial states, delta,
    input-side delta), the deltas (T, B, G*H) in the chain's step order; for the GRU
    the input side's differ in the n block."""
    states, saved, _ = run
    xp, (T1, B, H) = xp_of(states[0]), states[0].shape
    T, GH, dtype = T1 - 1, spec.gates * H, states[0].dtype
    delta = workspace.empty(xp, (T, B, GH), dtype)
    input_delta = workspace.empty(xp, (T, B, GH), dtype) if spec.bias_inside else delta
    # skip, what bypasses W_hh: on NumPy, without padding, nothing ever does (the GRU's
    # h_prev always does), and the chain gets no buffer for it (None reads as zero)
    no_skip = mask is None and not steps.is_cupy_array(delta) and not spec.direct_path
    carries = tuple(
        None if k == 0 and no_skip else workspace.empty(xp, (T + 1, B, H), dtype)
        for k in range(spec.states)
    )
    if carries[0] is not None:
        carries[0][T] = 0  # nothing bypasses W_hh after the last step
    for buffer, gk in zip(carries[1:], g_states[1:]):
        buffer[T] = gk[d]  # dE/dc after the last step
    # the gradient of the chain's output, in the chain's order
    g_d = in_step_order(xp, g_out[:, :, d * H : (d + 1) * H], d)
    through = backward_loop(
        spec,
        Product(xp, wd[1].astype(dtype, copy=False), B),
        g_states[0][d].astype(dtype),
        g_d,
        None if mask is None else in_schedule_order(mask, d),
        states,
        saved,
        delta,
        input_delta[..., 2 * H :] if spec.bias_inside else None,
        carries,
        cell_params(spec, nonlinearity, backward=True),
    )
    first = through.copy() if carries[0] is None else carries[0][0] + through
    if spec.bias_inside:
        # r and z: the same delta on both sides
        input_delta[..., : 2 * H] = delta[..., : 2 * H]
    return (first, *[c[0] for c in carries[1:]]), delta, input_delta


def layer_vjp(g: tuple, ans: tuple, x: Any, *args: Any, res: tuple, cell: str,
              nonlinearity: str = "tanh", mask: Any = None, bias: bool = True,
              needs_input_grad: bool = True) -> tuple:
    """BPTT: each direction's chain walked backwards, one backward step per time step;
    then the weight and input gradients of each direction from one matmul each."""
    spec, runs = CELLS[cell], res
    w = unpack_weights(args[spec.states :], bias)
    dx, dstates, dw_ih, dw_hh, db_ih, db_hh = None, [], [], [], [], []
    xp = xp_of(g[0])
    for d, run in enumerate(runs):
        first, delta, input_delta = direction_vjp(
            spec, run, d, g[0], g[1:], w[d], mask, nonlinearity
        )
        dstates.append(first)
        states, _, x_d = run  # x_d: the inputs in the chain's order
        # both in the chain's order
        dw_hh.append(hidden_weight_grad(delta, states[0][:-1]))
        dx_d, (dw,), (db,) = input_grads(
            xp, x_d, input_delta, w[d][0], [w[d]], needs_input_grad
        )
        if dx_d is not None:  # back in time order, the chains' contributions added
            dx_d = in_schedule_order(dx_d, d)
            dx = dx_d if dx is None else dx + dx_d
        dw_ih.append(dw)
        db_ih.append(db)
        if bias:
            db_hh.append(delta.sum(axis=(0, 1)) if spec.bias_inside else db.copy())
        else:
            db_hh.append(None)
        del delta, input_delta  # their buffers are free for the next direction's
    dstate_arrays = [xp.stack([s[k] for s in dstates]) for k in range(spec.states)]
    return pack_grads(dx, dstate_arrays, dw_ih, dw_hh, db_ih, db_hh, bias)


def rnn_layer_forward(x: Any, h0: Any, *weights: Any, nonlinearity: str = "tanh", mask: Any = None,
                      bias: bool = True, needs_input_grad: bool = True) -> tuple:
    """h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) for each direction; act = tanh or relu."""
    return layer_forward(x, h0, *weights, cell="RNN", nonlinearity=nonlinearity, mask=mask, bias=bias)


def rnn_layer_vjp(g: tuple, ans: tuple, x: Any, h0: Any, *weights: Any, res: tuple, nonlinearity: str = "tanh",
                  mask: Any = None, bias: bool = True, needs_input_grad: bool = True) -> tuple:
    """BPTT: delta_t = (dE/dh_t + delta_{t+1} W_hh) * act'(a_t), walked backwards along each direction."""
    return layer_vjp(g, ans, x, h0, *weights, res=res, cell="RNN", nonlinearity=nonlinearity, mask=mask,
                      bias=bias, needs_input_grad=needs_input_grad)


def lstm_layer_forward(x: Any, h0: Any, c0: Any, *weights: Any, mask: Any = None, bias: bool = True,
                       needs_input_grad: bool = True) -> tuple:
    """Gates (i, f, g, o) = (sig, sig, tanh, sig)(x W_ih^T + b_ih + h W_hh^T + b_hh); c = f c + i g; h = o tanh(c)."""
    return layer_forward(x, h0, c0, *weights, cell="LSTM", mask=mask, bias=bias)


def lstm_layer_vjp(g: tuple, ans: tuple, x: Any, h0: Any, c0: Any, *weights: Any, res: tuple, mask: Any = None,
                   bias: bool = True, needs_input_grad: bool = True) -> tuple:
    """BPTT through h = o tanh(c), c = f c_prev + i g: the cell-state delta runs alongside the hidden one."""
    return layer_vjp(g, ans, x, h0, c0, *weights, res=res, cell="LSTM", mask=mask, bias=bias,
                      needs_input_grad=needs_input_grad)


def gru_layer_forward(x: Any, h0: Any, *weights: Any, mask: Any = None, bias: bool = True,
                      needs_input_grad: bool = True) -> tuple:
    """r, z = sig(x W_i^T + b_i + h W_h^T + b_h); n = tanh(x W_in^T + b_in + r (h W_hn^T + b_hn)); h = n + z (h - n)."""
    return layer_forward(x, h0, *weights, cell="GRU", mask=mask, bias=bias)


def gru_layer_vjp(g: tuple, ans: tuple, x: Any, h0: Any, *weights: Any, res: tuple, mask: Any = None,
                  bias: bool = True, needs_input_grad: bool = True) -> tuple:
    """BPTT through h = (1-z) n + z h_prev; the hidden side's n-delta is r * (the input side's)."""
    return layer_vjp(g, ans, x, h0, *weights, res=res, cell="GRU", mask=mask, bias=bias,
                      needs_input_grad=needs_input_grad)


defprim("rnn_layer", rnn_layer_forward, rnn_layer_vjp,
        "BPTT: delta_t = (dE/dh_t + delta_{t+1} W_hh) * act'(a_t); dW_hh = sum_t delta_t^T h_{t-1}",
        has_residuals=True)
defprim("lstm_layer", lstm_layer_forward, lstm_layer_vjp,
        "BPTT with dc_t = dh_t o_t tanh'(c_t) + dc_{t+1} f_{t+1}; gate deltas di = dc g, df = dc c_{t-1}, dg = dc i, "
        "do = dh tanh(c_t)", has_residuals=True)
defprim("gru_layer", gru_layer_forward, gru_layer_vjp,
        "BPTT with dn = dh (1-z), dz = dh (h_{t-1} - n), dr = da_n (W_hn h_{t-1} + b_hn); dh_{t-1} = dh z + delta_h W_hh",
        has_residuals=True)
PRIMITIVE_NAMES = {"RNN": "rnn_layer", "LSTM": "lstm_layer", "GRU": "gru_layer"}


def apply_layer(names: dict, mode: str, x: Tensor, state: tuple, weights: Sequence[Sequence[Tensor]], mask: Any,
                nonlinearity: str) -> tuple:
    """Apply the layer primitive ``names[mode]`` to x, the state tuple and the weights: (output, final states)."""
    if mode not in CELLS:
        raise ValueError(f"mode must be one of {sorted(CELLS)}; got {mode!r}")
    params = dict(mask=mask, bias=len(weights[0]) == 4, needs_input_grad=x.requires_grad)
    if mode == "RNN":
        params["nonlinearity"] = nonlinearity
    out, *finals = apply(PRIMITIVES[names[mode]], x, *state, *[w for group in weights for w in group], **params)
    return out, tuple(finals)


def as_state(hx: Any) -> tuple:
    """A layer's state as a tuple: (h,) or (h, c), given either that tuple or a bare h."""
    return tuple(hx) if isinstance(hx, (tuple, list)) else (hx,)


def like_given(final: tuple, hx: Any) -> Any:
    """The final state in the form the initial one was given: a tuple, or a bare h."""
    return final if isinstance(hx, (tuple, list)) else final[0]


def bptt_layer(mode: str, x: Tensor, hx: Any, weights: Sequence[Sequence[Tensor]], mask: Any = None,
               nonlinearity: str = "tanh") -> tuple:
    """One (bi)directional layer as a single autograd node, BPTT by hand (``impl="bptt"``).

    ``mode`` 'RNN', 'LSTM' or 'GRU'; ``x`` (T, B, I); ``hx`` the initial state, (h0,) or (h0, c0) with each
    (D, B, H) (a bare h0 also works); ``weights[d]`` = (W_ih, W_hh[, b_ih, b_hh]) for direction d (0 forward,
    1 backward); ``mask`` (T, B, 1) bool or None. Returns (output (T, B, D*H), final state in hx's form).
    """
    out, final = apply_layer(PRIMITIVE_NAMES, mode, x, as_state(hx), weights, mask, nonlinearity)
    return out, like_given(final, hx)
