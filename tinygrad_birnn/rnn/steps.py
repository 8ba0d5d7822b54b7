"""Each cell's forward and backward step, written once as array code, with its CUDA twin beside it.

A step function works on arrays of any leading shape: (B, .) for one direction, or (D, B, .) for all
directions of a layer at once. Its arguments are always in the same order,

    forward(z, pre, prev, mask, saved, new)
    backward(dh_next, carry, g, saved, prev, new, mask, delta, delta_input, carry_out)
    prepare_backward(saved, prev, new, mask)      (all steps at once, before the backward loop)

where ``z`` = h_prev W_hh^T is the step's product (whole, or as a list of partial sums when its inner dimension
was split), ``pre`` the input projection x W_ih^T + b, ``prev`` and ``new`` the states before and after the step
as tuples, (h,) or (h, c), and ``saved`` what the backward step needs from the forward one (the gate values).
``mask`` (., B, 1) is True where the step is a real one (t < len_b); None means every step is.

Backward, ``dh_next`` is the delta of the step after, carried back through W_hh (whole or in partial sums),
``g`` the loss's gradient at this step's output, and ``carry`` what else flows back from the step after:
``skip``, the part of dE/dh that bypasses W_hh, and for the LSTM dE/dc. The step writes the pre-activation
deltas ``delta`` (the rows that go back through W_hh) and ``carry_out``. A padded step (m false) passes its
state through unchanged, and so passes the gradient through: skip_out = dE/dh, delta = 0. Where no step of a
chain is padded, nothing of an RNN's or LSTM's dE/dh bypasses W_hh; a NumPy caller may then pass ``skip`` None
(read as zero), and skip_out None too: nothing is written there. (The GRU's h_prev reaches h directly, so its
skip is never zero: :attr:`Cell.direct_path`.)

Each function has two bodies of the same arithmetic: one ``cupy.ElementwiseKernel`` launch when the arrays live
on a GPU (the source is in :data:`KERNEL_SOURCES`, named as the function's first line says), NumPy ufuncs with
``out=`` otherwise. NumPy pays for every call, so its backward steps read the local derivatives (which do not
depend on the recurrence) computed for all steps at once by the cell's ``prepare_backward``; a kernel computes
them inline. The tests compile the CUDA sources for the host and check both bodies give the same numbers.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

from .. import backend, workspace

KERNEL_PREAMBLE = ("template <typename U> __device__ U sigmoid_of(U a) {"
                   " U e = exp(-fabs(a)); return a >= (U)0 ? (U)1 / ((U)1 + e) : e / ((U)1 + e); }")
_ACT = {"tanh": "tanh(a)", "relu": "(a > (T)0 ? a : (T)0)"}                  # act(a)
_DACT = {"tanh": "((T)1 - h * h)", "relu": "(h > (T)0 ? (T)1 : (T)0)"}      # act'(a), from h = act(a)
SPLITS = (1, 2, 4)
LSTM_GATES, GRU_GATES = "ifgo", "rzn"


def sigmoid_(a: Any) -> Any:
    """a <- sigmoid(a) in place, exact in both tails (``e = exp(-abs(a))`` never overflows; for a < 0 the result is
    e/(1+e), so float32 keeps its precision down to sigmoid(-87)): the formula of ``ops.sigmoid`` and of
    ``sigmoid_of`` in :data:`KERNEL_PREAMBLE`."""
    e = np.exp(-np.abs(a))
    np.divide(np.where(a >= 0, 1, e), 1 + e, out=a)
    return a


def is_cupy_array(a: Any) -> bool:
    """Whether a step runs its kernel: the array is not NumPy's (checked first, it is the cheap test)."""
    return type(a) is not np.ndarray and backend.is_cupy_array(a)


def _sum(names: Sequence[str]) -> str:
    return " + ".join(names)


def _sources(n: int) -> dict:
    """The kernels whose product input comes in n partial sums; (inputs, outputs, body), T the float type."""
    zs, dhs = [f"z{j}" for j in range(n)], [f"dh{j}" for j in range(n)]
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
    gate_z = [f"z{j}_{k}" for j in range(n) for k in LSTM_GATES]
    out["lstm_forward"] = (
        f"{params(gate_z)}, T p_i, T p_f, T p_g, T p_o, T c_prev, T h_prev, bool m",
        "T g_i, T g_f, T g_g, T g_o, T tanh_c, T c, T h",
        "".join(f"T a_{k} = {_sum([f'z{j}_{k}' for j in range(n)])} + p_{k}; " for k in LSTM_GATES) +
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
    gru_z = [f"z{j}_{k}" for j in range(n) for k in GRU_GATES]
    out["gru_forward"] = (
        f"{params(gru_z)}, T p_r, T p_z, T p_n, T b_r, T b_z, T b_n, T h_prev, bool m",
        "T g_r, T g_z, T g_n, T hn, T h",
        "".join(f"T s_{k} = {_sum([f'z{j}_{k}' for j in range(n)])} + b_{k}; " for k in GRU_GATES) +
        "g_r = sigmoid_of(s_r + p_r); g_z = sigmoid_of(s_z + p_z); hn = s_n;"
        " g_n = tanh(p_n + g_r * hn);"
        " h = m ? g_n + g_z * (h_prev - g_n) : h_prev;")
    out["gru_backward"] = (
        f"{params(dhs)}, T skip, T g, T g_r, T g_z, T g_n, T hn, T h_prev, bool m",
        "T d_r, T d_z, T d_hn, T d_n, T skip_out",
        f"T dh = {_sum(dhs)} + skip + (m ? g : (T)0);"
        " d_n = m ? dh * ((T)1 - g_z) * ((T)1 - g_n * g_n) : (T)0;"
        " d_hn = d_n * g_r;"
        " d_r = d_n * hn * g_r * ((T)1 - g_r);"
        " d_z = m ? dh * (h_prev - g_n) * g_z * ((T)1 - g_z) : (T)0;"
        " skip_out = m ? dh * g_z : dh;")
    return {(name if n == 1 else f"{name}_split{n}"): source for name, source in out.items()}


KERNEL_SOURCES: dict[str, tuple[str, str, str]] = {k: v for n in SPLITS for k, v in _sources(n).items()}
_kernels: dict[str, Any] = {}


def kernel(name: str) -> Any:
    """The ElementwiseKernel ``name``, built on first use (CuPy compiles and caches one binary per dtype)."""
    if name not in _kernels:
        in_params, out_params, body = KERNEL_SOURCES[name]
        _kernels[name] = backend.cupy_module().ElementwiseKernel(
            in_params, out_params, body, f"tinygrad_birnn_{name}", preamble=KERNEL_PREAMBLE)
    return _kernels[name]


def launch(name: str, splits: int, *args: Any) -> None:
    """Run kernel ``name``, its variant for a product in ``splits`` partial sums, on ``args``."""
    kernel(name if splits == 1 else f"{name}_split{splits}")(*args)


def gate_views(a: Any, gates: int) -> tuple:
    """The gate blocks of the last axis as views: (..., G*H) -> G arrays (..., H)."""
    H = a.shape[-1] // gates
    return tuple(a[..., k * H:(k + 1) * H] for k in range(gates))


def parts_of(z: Any) -> list:
    """A product given whole or as a list of partial sums (split-K) -> the list."""
    return list(z) if isinstance(z, (list, tuple)) else [z]


def _add_parts(z: Any, extra: Any, out: Any) -> Any:
    """out = z + extra, z whole or a list of partial sums, with NumPy ufuncs."""
    if type(z) is np.ndarray:
        return np.add(z, extra, out=out)
    np.add(z[0], extra, out=out)
    for p in z[1:]:
        out += p
    return out


def _gradient_in(dh_next: Any, skip: Any, g: Any, mask: Any, out: Any) -> Any:
    """dE/dh of a step: the delta carried back through W_hh (whole or in partial sums), the skip (None: zero),
    and the output's gradient where the step is real."""
    if skip is None:
        return _add_parts(dh_next, g, out)
    _add_parts(dh_next, skip, out)
    out += g if mask is None else g * mask
    return out


def _flags(mask: Any) -> Any:
    return True if mask is None else mask


# --- Elman RNN --------------------------------------------------------------------------------------------------
def rnn_step_forward(
    z: Any,
    pre: Any,
    prev: tuple,
    mask: Any,
    saved: tuple,
    new: tuple,
    nonlinearity: str = "tanh",
) -> None:
    """rnn_forward_{tanh,relu}: h = m ? act(z + pre) : h_prev."""
    (h_prev,), (h,) = prev, new
    if is_cupy_array(h):
        z = parts_of(z)
        return launch(
            f"rnn_forward_{nonlinearity}", len(z), *z, pre, h_prev, _flags(mask), h
        )
    _add_parts(z, pre, h)
    if nonlinearity == "tanh":
        np.tanh(h, out=h)
    else:
        np.maximum(h, 0, out=h)
    if mask is not None:  # h = m ? h : h_prev
        np.copyto(h, h_prev, where=~mask)


def rnn_prepare_backward(
    saved: tuple, prev: tuple, new: tuple, mask: Any, nonlinearity: str = "tanh"
) -> tuple:
    """What the NumPy backward step reads besides ``saved``, for all steps at once
    (arrays indexed by step): m act'(a), from h = act(a). A kernel computes it inline,
    so on a GPU ``saved`` comes back as it is.
    """
    (h,) = new
    if is_cupy_array(h):
        return saved
    if nonlinearity == "tanh":
        deriv = np.multiply(h, h, out=workspace.empty(np, h.shape, h.dtype))
        np.subtract(1, deriv, out=deriv)
    else:
        deriv = (h > 0).astype(h.dtype)
    if mask is not None:
        deriv *= mask
    return saved + (deriv,)


def rnn_step_backward(
    dh_next: Any,
    carry: tuple,
    g: Any,
    saved: tuple,
    prev: tuple,
    new: tuple,
    mask: Any,
    delta: Any,
    delta_input: Any,
    carry_out: tuple,
    nonlinearity: str = "tanh",
) -> None:
    """rnn_backward_{tanh,relu}: dh = dh_next + skip + m g; delta = m dh act'(a) (tanh'
    = 1 - h^2, relu' = [h > 0]); skip_out = (1 - m) dh."""
    (skip,), (h,), (skip_out,) = carry, new, carry_out
    if is_cupy_array(h):
        dh_next = parts_of(dh_next)
        return launch(
            f"rnn_backward_{nonlinearity}",
            len(dh_next),
            *dh_next,
            skip,
            g,
            h,
            _flags(mask),
            delta,
            skip_out,
        )
    (deriv,) = saved  # m act'(a), from rnn_prepare_backward
    if skip_out is None:  # no padding: skip is zero, dh is built in delta
        _add_parts(dh_next, g, delta)
        delta *= deriv
        return
    dh = _gradient_in(
        dh_next, skip, g, mask, skip_out
    )  # built in skip_out, which keeps (1 - m) dh at the end
    np.multiply(dh, deriv, out=delta)
    if mask is None:
        dh.fill(0)
    else:
        dh *= ~mask


# --- LSTM -------------------------------------------------------------------------------------------------------
def lstm_step_forward(z: Any, pre: Any, prev: tuple, mask: Any, saved: tuple, new: tuple) -> None:
    """lstm_forward: (i, f, g, o) = (sig, sig, tanh, sig)(z + pre); c = m ? f c_prev + i g : c_prev;
    h = m ? o tanh(c) : h_prev. Saved: the gate values and tanh(c)."""
    (h_prev, c_prev), (gates, tanh_c), (h, c) = prev, saved, new
    if is_cupy_array(h):
        z = parts_of(z)
        return launch("lstm_forward", len(z), *[v for part in z for v in gate_views(part, 4)], *gate_views(pre, 4),
                      c_prev, h_prev, _flags(mask), *gate_views(gates, 4), tanh_c, c, h)
    H = h.shape[-1]
    _add_parts(z, pre, gates)
    i, f, g, o = gate_views(gates, 4)
    sigmoid_(gates[..., :2 * H])  # i and f
    np.tanh(g, out=g)
    sigmoid_(o)
    np.multiply(f, c_prev, out=c)
    np.multiply(i, g, out=tanh_c)
    c += tanh_c
    np.tanh(c, out=tanh_c)
    np.multiply(o, tanh_c, out=h)
    if mask is not None:
        np.copyto(c, c_prev, where=~mask)
        np.copyto(h, h_prev, where=~mask)


def lstm_prepare_backward(saved: tuple, prev: tuple, new: tuple, mask: Any) -> tuple:
    """The NumPy backward step's local derivatives, for all steps at once: m (i(1-i), f(1-f), 1-g^2, o(1-o))
    and m (1 - tanh(c)^2). A kernel computes them inline, so on a GPU ``saved`` comes back as it is."""
    gates, tanh_c = saved
    if is_cupy_array(gates):
        return saved
    i, f, g, o = gate_views(gates, 4)
    dact = np.concatenate([i * (1 - i), f * (1 - f), 1 - g * g, o * (1 - o)], axis=-1)
    dtanh_c = 1 - tanh_c * tanh_c
    if mask is not None:
        dact *= mask
        dtanh_c *= mask
    return saved + (dact, dtanh_c)


def lstm_step_backward(dh_next: Any, carry: tuple, g: Any, saved: tuple, prev: tuple, new: tuple, mask: Any,
                       delta: Any, delta_input: Any, carry_out: tuple) -> None:
    """lstm_backward: dh = dh_next + skip + m g; dc' = dc + m dh o tanh'(c);
    d(i, f, g, o) = m (dc' g, dc' c_prev, dc' i, dh tanh c) act'; dc_out = m ? dc' f : dc'; skip_out = (1 - m) dh.
    act' is s(1 - s) for the sigmoid gates and 1 - g^2 for g."""
    (skip, dc), (_, c_prev), (skip_out, dc_out) = carry, prev, carry_out
    gates, tanh_c = saved[:2]
    if is_cupy_array(dc):
        dh_next = parts_of(dh_next)
        return launch("lstm_backward", len(dh_next), *dh_next, skip, g, dc, *gate_views(gates, 4), tanh_c, c_prev,
                      _flags(mask), *gate_views(delta, 4), dc_out, skip_out)
    dact, dtanh_c = saved[2:]                         # from lstm_prepare_backward, masked
    i, f, gg, o = gate_views(gates, 4)
    d_i, d_f, d_g, d_o = gate_views(delta, 4)
    dh = _gradient_in(dh_next, skip, g, mask, d_o if skip_out is None else skip_out)  # as in rnn_step_backward
    np.multiply(dh, o, out=dc_out)
    dc_out *= dtanh_c
    dc_out += dc                                      # dc' = dE/dc of this step
    np.multiply(dc_out, gg, out=d_i)
    np.multiply(dc_out, c_prev, out=d_f)
    np.multiply(dc_out, i, out=d_g)
    np.multiply(dh, tanh_c, out=d_o)                  # (in place when dh was built in d_o)
    delta *= dact                                     # through the gate nonlinearities; 0 where padded
    if mask is None:
        dc_out *= f
        if skip_out is not None:
            dh.fill(0)
    else:
        np.copyto(dc_out, dc_out * f, where=mask)
        dh *= ~mask


# --- GRU --------------------------------------------------------------------------------------------------------
def gru_step_forward(z: Any, pre: Any, prev: tuple, mask: Any, saved: tuple, new: tuple, bias_hh: Any = 0) -> None:
    """gru_forward: (s_r, s_z, hn) = z + b_hh; r, u = sig(s_r + p_r), sig(s_z + p_z); n = tanh(p_n + r hn);
    h = m ? n + u (h_prev - n) : h_prev, with ``pre`` = x W_ih^T + b_ih: b_hn stays inside r (.), as in PyTorch.
    ``bias_hh`` (., G*H) broadcasts over the batch (0: no biases). Saved: the gate values (r, u, n) and hn."""
    (h_prev,), (gates, hn), (h,) = prev, saved, new
    if is_cupy_array(h):
        z = parts_of(z)
        biases = (0, 0, 0) if np.isscalar(bias_hh) else gate_views(bias_hh, 3)
        return launch("gru_forward", len(z), *[v for part in z for v in gate_views(part, 3)], *gate_views(pre, 3),
                      *biases, h_prev, _flags(mask), *gate_views(gates, 3), hn, h)
    H = h.shape[-1]
    _add_parts(z, bias_hh, gates)                     # h W_hh^T + b_hh, for now
    np.copyto(hn, gates[..., 2 * H:])
    rz = gates[..., :2 * H]
    rz += pre[..., :2 * H]
    sigmoid_(rz)                                      # r and u
    r, u, n = gate_views(gates, 3)
    np.multiply(r, hn, out=n)
    n += pre[..., 2 * H:]
    np.tanh(n, out=n)
    np.subtract(h_prev, n, out=h)
    h *= u
    h += n
    if mask is not None:
        np.copyto(h, h_prev, where=~mask)


def gru_prepare_backward(saved: tuple, prev: tuple, new: tuple, mask: Any) -> tuple:
    """The NumPy backward step's local derivatives, for all steps at once: 1-u, m (1-n^2), m u(1-u) (h_prev - n)
    and r(1-r) hn. A kernel computes them inline, so on a GPU ``saved`` comes back as it is."""
    gates, hn = saved
    if is_cupy_array(gates):
        return saved
    r, u, n = gate_views(gates, 3)
    dn = 1 - n * n
    du = u * (1 - u) * (prev[0] - n)
    if mask is not None:
        dn *= mask
        du *= mask
    return saved + (1 - u, dn, du, r * (1 - r) * hn)


def gru_step_backward(dh_next: Any, carry: tuple, g: Any, saved: tuple, prev: tuple, new: tuple, mask: Any,
                      delta: Any, delta_input: Any, carry_out: tuple) -> None:
    """gru_backward: dh = dh_next + skip + m g; d_n = m dh (1 - u) tanh'; d_r = d_n hn r(1 - r);
    d_z = m dh (h_prev - n) u(1 - u); skip_out = m ? dh u : dh. ``delta`` gets the deltas of h W_hh^T + b_hh,
    (d_r, d_z, r d_n); ``delta_input`` (., H) the input side's n block d_n (its r and z blocks equal delta's)."""
    (skip,), (h_prev,), (skip_out,) = carry, prev, carry_out
    gates, hn = saved[:2]
    if is_cupy_array(skip_out):
        dh_next = parts_of(dh_next)
        return launch("gru_backward", len(dh_next), *dh_next, skip, g, *gate_views(gates, 3), hn, h_prev,
                      _flags(mask), *gate_views(delta, 3), delta_input, skip_out)
    one_minus_u, dn, du, dr = saved[2:]               # from gru_prepare_backward, masked
    r, u, _ = gate_views(gates, 3)
    d_r, d_z, d_hn = gate_views(delta, 3)
    dh = _gradient_in(dh_next, skip, g, mask, skip_out)
    np.multiply(dh, one_minus_u, out=delta_input)
    delta_input *= dn
    np.multiply(delta_input, r, out=d_hn)
    np.multiply(delta_input, dr, out=d_r)
    np.multiply(dh, du, out=d_z)
    if mask is None:
        dh *= u
    else:
        np.copyto(dh, dh * u, where=mask)


class Cell(NamedTuple):
    """What a driver needs to know about a cell: its gate blocks per weight matrix, the states it carries, the
    widths (in units of H) of what a forward step saves, its two step functions, and what the backward one
    needs prepared for all steps at once."""

    name: str
    gates: int
    states: int
    saved: tuple
    forward: Any
    backward: Any
    prepare_backward: Any

    @property
    def direct_path(self) -> bool:
        """True for the GRU: h_prev reaches h without W_hh, so its skip carries gradient even without padding."""
        return self.name == "GRU"

    @property
    def bias_inside(self) -> bool:
        """True for the GRU: b_hh is added to the step's product, not folded into the input projection (b_hn
        sits inside r (.)), and the input side's deltas differ from the hidden side's in the n block."""
        return self.name == "GRU"


CELLS = {
    "RNN": Cell("RNN", 1, 1, (), rnn_step_forward, rnn_step_backward, rnn_prepare_backward),
    "LSTM": Cell("LSTM", 4, 2, (4, 1), lstm_step_forward, lstm_step_backward, lstm_prepare_backward),
    "GRU": Cell("GRU", 3, 1, (3, 1), gru_step_forward, gru_step_backward, gru_prepare_backward),
}
GATE_COUNTS = {name: cell.gates for name, cell in CELLS.items()}
