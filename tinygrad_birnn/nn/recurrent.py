"""The recurrent modules, shaped like PyTorch's: ``RNN``, ``LSTM``, ``GRU`` and ``RNNCell``, ``LSTMCell``, ``GRUCell``.

They hold the weights, named and ordered as in ``torch.nn``, check their inputs, and hand each layer to one of
the layer functions of :mod:`tinygrad_birnn.rnn` (the ``impl`` attribute says which).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import backend
from .. import functional as F
from ..backend import xp_of
from ..rnn import FORMER_NAMES, GATE_COUNTS, IMPLEMENTATIONS, gru_cell, lengths_mask, lstm_cell, rnn_cell
from ..functions import concatenate, zeros
from ..tensor import Tensor
from .modules import Module, uniform_parameter

_LAYER_ARGS = """
    Args:
        input_size: the number of features of each step's input, I.
        hidden_size: the number of features of the hidden state, H.
        num_layers: stacked layers, each reading the outputs of the one below (default 1).
        bias: whether the layers have the biases b_ih and b_hh (default True).
        batch_first: inputs and outputs are (B, T, feature) instead of (T, B, feature); the states are not
            affected (default False).
        dropout: the probability of dropout on the outputs of every layer but the last, in training mode
            (default 0).
        bidirectional: whether each layer also runs a chain from the last step to the first (default False).
        impl: 'autograd' (the cells step by step, the engine differentiates them), 'bptt' (one autograd node
            per layer, backpropagation through time by hand), 'bptt_batched' (the same with all directions in
            one batched step, fused CUDA kernels on a GPU), or 'auto' (default: 'bptt_batched' for arrays on a
            GPU, 'bptt' on the CPU). 'steps', 'fused' and 'batched' are the former names of the first three.
        dtype: the parameters' dtype (default float32).

    Inputs:
        input: (T, B, I), (B, T, I) with batch_first, or (T, I) unbatched.
        hx: the initial state{state}, each (num_layers * D, B, H) ((num_layers * D, H) unbatched), D = 2 if
            bidirectional else 1; zeros when omitted.
        lengths: optional, one length per sequence (in [1, T]) of a padded batch: each sequence is run
            over its own steps only (the backward chain starts at its last real step), its outputs past
            the end are zero and its final state is the one at its end, as PyTorch computes on
            ``pack_padded_sequence(input, lengths, enforce_sorted=False)``.

    Outputs:
        output: (T, B, D * H) ((B, T, D * H) with batch_first): the last layer's h_t of every step, the
            forward direction's features first.
        {final}: the final state of every layer and direction, each (num_layers * D, B, H)
            ((num_layers * D, H) unbatched).

    Attributes:
        weight_ih_l[k], weight_hh_l[k], bias_ih_l[k], bias_hh_l[k]: layer k's weights, ({rows}, I or D * H),
            ({rows}, H), ({rows},), ({rows},); ``_reverse`` names the backward direction's. All drawn from
            U(-1/sqrt(H), 1/sqrt(H)).
"""


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
        gate_rows = GATE_COUNTS[self.mode] * hidden_size
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
        """The layer function: 'autograd', 'bptt', 'bptt_batched' or 'auto' (see the class's Args)."""
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

    def _layer_function(self, x: Tensor) -> Any:
        impl = FORMER_NAMES.get(self.impl, self.impl)
        if impl == "auto":
            impl = "bptt_batched" if backend.is_cupy_array(x.data) else "bptt"
        return IMPLEMENTATIONS[impl]

    def _input(self, x: Any, lengths: Any) -> tuple:
        """x as a (T, B, I) Tensor, and whether it came batched."""
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
        if x.shape[0] == 0:
            raise ValueError(f"{name}: expected a sequence length T >= 1; got input of shape {x.shape} "
                             f"({'B, T' if self.batch_first and batched else 'T, B'}, input_size)")
        return x, batched

    def _initial_state(self, hx: Any, x: Tensor, batched: bool) -> tuple:
        """hx as a tuple of (L*D, B, H) Tensors, (h_0,) or (h_0, c_0); zeros when None."""
        L, D, H, B = self.num_layers, self.num_directions, self.hidden_size, x.shape[1]
        n_states = 2 if self.mode == "LSTM" else 1
        shape = (L * D, B, H) if batched else (L * D, H)
        if hx is None:
            return (zeros((L * D, B, H), dtype=x.dtype),) * n_states
        if self.mode == "LSTM":
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"LSTM: hx must be a tuple (h_0, c_0) of two tensors of shape {shape}; "
                                f"got {type(hx).__name__}")
            given, names = tuple(hx), ("h_0", "c_0")
        else:
            given, names = (hx,), ("hx",)
        state = []
        for h, what in zip(given, names):
            h = h if isinstance(h, Tensor) else Tensor(h)
            if h.shape != shape:
                raise ValueError(f"{type(self).__name__}: {what} has shape {h.shape}, expected {shape} "
                                 "(num_layers * num_directions, batch, hidden_size)")
            xp_of(h.data, x.data)
            state.append(h.reshape(L * D, B, H))
        return tuple(state)

    def forward(self, x: Any, hx: Any = None, lengths: Any = None) -> tuple:
        """output (T, B, D*H) ((B, T, D*H) with batch_first) and h_n (num_layers*D, B, H); LSTM: (h_n, c_n)."""
        x, batched = self._input(x, lengths)
        T, B = x.shape[0], x.shape[1]
        L, D, H = self.num_layers, self.num_directions, self.hidden_size
        state = self._initial_state(hx, x, batched)
        mask = None if lengths is None else lengths_mask(lengths, T, xp_of(x.data), batch=B)
        layer_fn = self._layer_function(x)
        finals = []
        for layer in range(L):
            rows = slice(layer * D, (layer + 1) * D)
            layer_state = state if L == 1 else tuple(s[rows] for s in state)
            x, final = layer_fn(self.mode, x, layer_state, self._layer_weights(layer), mask, self.nonlinearity)
            finals.append(final)
            if self.dropout and self.training and layer < L - 1:
                x = F.dropout(x, self.dropout, True)
        final = tuple(f[0] if L == 1 else concatenate(list(f), axis=0) for f in zip(*finals))
        if not batched:
            x = x.reshape(T, D * H)
            final = tuple(f.reshape(L * D, H) for f in final)
        elif self.batch_first:
            x = x.transpose(1, 0, 2)
        return x, (final if self.mode == "LSTM" else final[0])

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
    __doc__ = """An Elman RNN, as ``torch.nn.RNN``: for each layer, direction and step,

        h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)      (or relu)

    Args (besides those below):
        nonlinearity: 'tanh' (default) or 'relu'.
    """ + _LAYER_ARGS.format(state="", rows="H", final="h_n") + """
    Example:
        >>> rnn = nn.RNN(10, 20, num_layers=2, bidirectional=True)
        >>> output, h_n = rnn(Tensor(np.zeros((5, 3, 10), np.float32)))
        >>> output.shape, h_n.shape
        ((5, 3, 40), (4, 3, 20))
    """
    mode = "RNN"


class _GatedBase(RNNBase):
    """LSTM and GRU: PyTorch's signature, which has no ``nonlinearity`` (the gates fix their own)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 impl: str = "auto", dtype: Any = np.float32):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         impl=impl, dtype=dtype)


class LSTM(_GatedBase):
    __doc__ = """Long short-term memory, as ``torch.nn.LSTM``: for each layer, direction and step,

        (i, f, g, o) = (sig, sig, tanh, sig)(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)
        c_t = f * c_{t-1} + i * g,    h_t = o * tanh(c_t)

    the four gate blocks stacked in this order in the weights' rows.
    """ + _LAYER_ARGS.format(state=" (h_0, c_0)", rows="4 H", final="(h_n, c_n)") + """
    Example:
        >>> lstm = nn.LSTM(10, 20, bidirectional=True)
        >>> x = Tensor(np.zeros((5, 3, 10), np.float32))
        >>> output, (h_n, c_n) = lstm(x, lengths=[5, 2, 4])
        >>> output.shape, h_n.shape, c_n.shape
        ((5, 3, 40), (2, 3, 20), (2, 3, 20))
    """
    mode = "LSTM"


class GRU(_GatedBase):
    __doc__ = """A gated recurrent unit, as ``torch.nn.GRU``: for each layer, direction and step,

        r = sig(x_t W_ir^T + b_ir + h_{t-1} W_hr^T + b_hr),    z = sig(x_t W_iz^T + b_iz + h_{t-1} W_hz^T + b_hz)
        n = tanh(x_t W_in^T + b_in + r * (h_{t-1} W_hn^T + b_hn)),    h_t = (1 - z) * n + z * h_{t-1}

    the three gate blocks (r, z, n) stacked in this order in the weights' rows.
    """ + _LAYER_ARGS.format(state="", rows="3 H", final="h_n") + """
    Example:
        >>> gru = nn.GRU(10, 20, batch_first=True)
        >>> output, h_n = gru(Tensor(np.zeros((3, 5, 10), np.float32)))
        >>> output.shape, h_n.shape
        ((3, 5, 20), (1, 3, 20))
    """
    mode = "GRU"


_CELL_DOC = """
    Args:
        input_size: the number of features of the input, I.
        hidden_size: the number of features of the hidden state, H.
        bias: whether the cell has the biases b_ih and b_hh (default True).{extra}
        dtype: the parameters' dtype (default float32).

    Inputs:
        input: (B, I), or (I,) unbatched.
        hx: the state{state}, each (B, H) ((H,) unbatched); zeros when omitted.

    Outputs:
        state: the new state{state}, each (B, H) ((H,) unbatched).

    Attributes:
        weight_ih ({rows}, I), weight_hh ({rows}, H), bias_ih ({rows},), bias_hh ({rows},): drawn from
        U(-1/sqrt(H), 1/sqrt(H)).
"""


class RNNCellBase(Module):
    """Shared by the cells: the weights of one step, named as in PyTorch, and the input checks."""

    mode = "RNN"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, dtype: Any = np.float32):
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        self.input_size, self.hidden_size, self.bias = int(input_size), int(hidden_size), bool(bias)
        rows, bound = GATE_COUNTS[self.mode] * hidden_size, 1.0 / math.sqrt(hidden_size)
        self.weight_ih = uniform_parameter((rows, input_size), bound, dtype)
        self.weight_hh = uniform_parameter((rows, hidden_size), bound, dtype)
        self.bias_ih = uniform_parameter((rows,), bound, dtype) if bias else None
        self.bias_hh = uniform_parameter((rows,), bound, dtype) if bias else None

    def _check(self, x: Any, hx: Any) -> tuple:
        """x as a Tensor and the state as a tuple of Tensors, (h,) or (h, c)."""
        name = type(self).__name__
        if not isinstance(x, Tensor):
            x = Tensor(x)
        if x.ndim not in (1, 2) or x.shape[-1] != self.input_size:
            raise ValueError(f"{name}: expected input of shape (batch, {self.input_size}) or ({self.input_size},); "
                             f"got {x.shape}")
        shape = x.shape[:-1] + (self.hidden_size,)
        n_states = 2 if self.mode == "LSTM" else 1
        if hx is None:
            return x, (zeros(shape, dtype=x.dtype),) * n_states
        if self.mode == "LSTM" and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise TypeError(f"{name}: hx must be a tuple (h, c) of two tensors of shape {shape}; got {type(hx).__name__}")
        states = tuple(s if isinstance(s, Tensor) else Tensor(s) for s in (hx if self.mode == "LSTM" else (hx,)))
        for s in states:
            if s.shape != shape:
                raise ValueError(f"{name}: hidden state has shape {s.shape}, expected {shape}")
        return x, states

    def _weights(self) -> tuple:
        return (self.weight_ih, self.weight_hh) + ((self.bias_ih, self.bias_hh) if self.bias else ())

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")


class RNNCell(RNNCellBase):
    __doc__ = """One Elman step, as ``torch.nn.RNNCell``: h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh) (or relu).
    """ + _CELL_DOC.format(extra="\n        nonlinearity: 'tanh' (default) or 'relu'.", state="", rows="H") + """
    Example:
        >>> cell = nn.RNNCell(10, 20)
        >>> h = cell(Tensor(np.zeros((3, 10), np.float32)))
        >>> h.shape
        (3, 20)
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 dtype: Any = np.float32):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu'; got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, x: Any, hx: Any = None) -> Tensor:
        x, (h,) = self._check(x, hx)
        return rnn_cell(x, h, *self._weights(), nonlinearity=self.nonlinearity)


class LSTMCell(RNNCellBase):
    __doc__ = """One LSTM step, as ``torch.nn.LSTMCell``: gates (i, f, g, o), c' = f c + i g, h' = o tanh(c').
    """ + _CELL_DOC.format(extra="", state=" (h, c)", rows="4 H") + """
    Example:
        >>> cell = nn.LSTMCell(10, 20)
        >>> h, c = cell(Tensor(np.zeros((3, 10), np.float32)))
        >>> h.shape, c.shape
        ((3, 20), (3, 20))
    """

    mode = "LSTM"

    def forward(self, x: Any, hx: Any = None) -> tuple:
        x, state = self._check(x, hx)
        return lstm_cell(x, state, *self._weights())


class GRUCell(RNNCellBase):
    __doc__ = """One GRU step, as ``torch.nn.GRUCell``: gates (r, z, n), h' = (1 - z) n + z h, b_hn inside r (.).
    """ + _CELL_DOC.format(extra="", state="", rows="3 H") + """
    Example:
        >>> cell = nn.GRUCell(10, 20)
        >>> h = cell(Tensor(np.zeros((3, 10), np.float32)))
        >>> h.shape
        (3, 20)
    """

    mode = "GRU"

    def forward(self, x: Any, hx: Any = None) -> Tensor:
        x, (h,) = self._check(x, hx)
        return gru_cell(x, h, *self._weights())


_CellBase = RNNCellBase  # former name, kept for one release
