"""The recurrent cells as a few Tensor operations each, and a layer that applies them step by step.

This is the version to read first: :func:`rnn_cell`, :func:`lstm_cell` and :func:`gru_cell` are the cells'
formulas in Tensor code, :func:`run_direction` walks one direction over time, and :func:`autograd_layer` runs
every direction of a layer (``impl="autograd"``). The engine records every operation and differentiates them one
by one, so this layer is also the oracle the hand-written BPTT (:mod:`.bptt`, :mod:`.batched`) is tested against.

Variable lengths use one mask m_t = [t < len_b] per step: the state is updated only where m_t holds,
h <- m_t * cell(x_t, h) + (1 - m_t) * h, for both directions (the backward one runs t = T-1 ... 0), and
outputs past a sequence's end are zero. This gives exactly what PyTorch computes on
``pack_padded_sequence(..., enforce_sorted=False)``: the backward chain starts at each sequence's own
last element, and the forward chain's final state is its state at that element.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from .. import functional as F
from ..functions import concatenate, stack, unstack
from ..tensor import Tensor


def rnn_cell(
    x: Tensor,
    h: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    nonlinearity: str = "tanh",
) -> Tensor:
    """h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)   (or relu)."""
    a = F.linear(x, weight_ih, bias_ih) + F.linear(h, weight_hh, bias_hh)
    return a.tanh() if nonlinearity == "tanh" else a.relu()


def lstm_cell(
    x: Tensor,
    state: tuple,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> tuple:
    """Gates i, f, g, o from x W_ih^T + b_ih + h W_hh^T + b_hh; c' = f*c + i*g; h' =
    o*tanh(c')."""
    h, c = state
    H = h.shape[-1]
    gates = F.linear(x, weight_ih, bias_ih) + F.linear(h, weight_hh, bias_hh)
    i = gates[..., 0 * H : 1 * H].sigmoid()  # input gate
    f = gates[..., 1 * H : 2 * H].sigmoid()  # forget gate
    g = gates[..., 2 * H : 3 * H].tanh()  # candidate cell
    o = gates[..., 3 * H : 4 * H].sigmoid()  # output gate
    c = f * c + i * g
    h = o * c.tanh()
    return h, c


def gru_cell(
    x: Tensor,
    h: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> Tensor:
    """r, z = sigmoid(...); n = tanh(W_in x + b_in + r*(W_hn h + b_hn)); h' = (1 - z)*n
    + z*h."""
    H = h.shape[-1]
    gx = F.linear(x, weight_ih, bias_ih)  # input side, blocks (r, z, n)
    gh = F.linear(h, weight_hh, bias_hh)  # hidden side, blocks (r, z, n)
    r = (gx[..., 0 * H : 1 * H] + gh[..., 0 * H : 1 * H]).sigmoid()  # reset gate
    z = (gx[..., 1 * H : 2 * H] + gh[..., 1 * H : 2 * H]).sigmoid()  # update gate
    n = (gx[..., 2 * H : 3 * H] + r * gh[..., 2 * H : 3 * H]).tanh()  # candidate state
    return (1 - z) * n + z * h


def keep_where(m: Tensor, new: Any, old: Any) -> Any:
    """m*new + (1-m)*old for a state or an (h, c) pair: the state moves on only where m
    = 1."""
    if isinstance(new, tuple):
        return tuple(keep_where(m, a, b) for a, b in zip(new, old))
    return m * new + (1 - m) * old


def run_direction(
    step: Callable,
    inputs: Sequence[Tensor],
    state: Any,
    masks: Sequence[Tensor] | None = None,
    reverse: bool = False,
) -> tuple:
    """One direction of a layer: state_t = step(x_t, state_{t-1}) for t = 0..T-1 (T-1..0
    when reverse).

    ``masks[t]`` (B, 1) is 1 while t < len_b: elsewhere the state stays as it was and
    the output is 0. Returns the T outputs h_t (in time order) and the final state.
    """
    T = len(inputs)
    outputs: list = [None] * T
    for t in (reversed(range(T)) if reverse else range(T)):
        new_state = step(inputs[t], state)
        state = new_state if masks is None else keep_where(masks[t], new_state, state)
        h = state[0] if isinstance(state, tuple) else state
        outputs[t] = h if masks is None else h * masks[t]
    return outputs, state


def autograd_layer(mode: str, x: Tensor, hx: Any, weights: Sequence[Sequence[Tensor]], mask: Any = None,
                   nonlinearity: str = "tanh") -> tuple:
    """One (bi)directional layer, one cell call per step and direction; the engine differentiates it.

    ``x`` (T, B, I); ``hx`` the initial state, (h0,) or (h0, c0) for an LSTM, each (D, B, H) (a bare h0 also
    works); ``weights[d]`` = (W_ih, W_hh[, b_ih, b_hh]) for direction d (0 forward, 1 backward); ``mask``
    (T, B, 1) bool or None. Returns (output (T, B, D*H), the final state in hx's form).
    """
    if mode == "LSTM":
        cell: Callable = lstm_cell
    elif mode == "GRU":
        def cell(x: Tensor, state: tuple, *w: Tensor) -> tuple:
            return (gru_cell(x, state[0], *w),)
    else:
        def cell(x: Tensor, state: tuple, *w: Tensor) -> tuple:
            return (rnn_cell(x, state[0], *w, nonlinearity=nonlinearity),)
    state = tuple(hx) if isinstance(hx, (tuple, list)) else (hx,)
    inputs = unstack(x)
    masks = None if mask is None else unstack(Tensor(mask.astype(x.dtype)))
    outputs, finals = [], []
    for d, w in enumerate(weights):
        start = tuple(s[d] for s in state)
        outs, final = run_direction(lambda x_t, s, w=w: cell(x_t, s, *w), inputs, start, masks, reverse=d == 1)
        outputs.append(stack(outs))
        finals.append(final)
    output = outputs[0] if len(outputs) == 1 else concatenate(outputs, axis=-1)
    final = tuple(stack([f[k] for f in finals]) for k in range(len(state)))
    return output, (final if isinstance(hx, (tuple, list)) else final[0])
