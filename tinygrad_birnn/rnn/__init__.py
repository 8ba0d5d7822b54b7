"""The recurrent layers as functions: the cells in Tensor code, their steps as array code, and three drivers.

==================  ==========================================================================================
:mod:`.cells`       the cells as Tensor operations and the step-by-step layer (``impl="autograd"``)
:mod:`.steps`       each cell's forward and backward step, written once as array code with its CUDA twin
:mod:`.bptt`        one autograd node per layer, each direction's chain by hand (``impl="bptt"``)
:mod:`.batched`     the same with all directions in one step, split-K products (``impl="bptt_batched"``)
:mod:`.lengths`     the one lengths check and the one mask builder
==================  ==========================================================================================

Every layer function takes ``(mode, x, hx, weights, mask, nonlinearity)`` and returns ``(output, final state)``;
the modules that hold the weights (``RNN``, ``LSTM``, ``GRU`` and their cells) are in :mod:`tinygrad_birnn.nn`.
The names ``"steps"``, ``"fused"`` and ``"batched"`` (and :func:`steps_layer`, :func:`fused_layer`) are the
implementations' former names, kept as aliases for one release.
"""
from __future__ import annotations

from . import batched, bptt, cells, lengths, steps
from .batched import StepProduct, batched_layer, split_k
from .bptt import (backward_loop, bptt_layer, forward_loop, gru_layer_forward, hidden_weight_grad, input_grads,
                   layer_forward, layer_vjp, lstm_layer_forward, rnn_layer_forward)
from .cells import autograd_layer, gru_cell, keep_where, lstm_cell, rnn_cell, run_direction
from .lengths import check_lengths, lengths_mask
from .steps import CELLS, GATE_COUNTS, KERNEL_SOURCES

IMPLEMENTATIONS = {"autograd": autograd_layer, "bptt": bptt_layer, "bptt_batched": batched_layer}
FORMER_NAMES = {"steps": "autograd", "fused": "bptt", "batched": "bptt_batched"}  # aliases for one release
IMPLEMENTATIONS.update({old: IMPLEMENTATIONS[new] for old, new in FORMER_NAMES.items()})


def step_order(steps: int, direction: int) -> list:
    """The time steps in the order direction 0 (forward) or 1 (backward) visits them."""
    return list(range(steps)) if direction == 0 else list(reversed(range(steps)))


# Former names, kept for one release.
steps_layer, fused_layer, GATES = autograd_layer, bptt_layer, GATE_COUNTS
_input_grads, _hidden_weight_grad, _keep_where, _rnn_layer_forward = (input_grads, hidden_weight_grad, keep_where,
                                                                      rnn_layer_forward)


def _schedule(T: int, d: int) -> list:
    """Former helper: (t, read, write) per step of direction d, state buffers holding T+1 entries."""
    return [(t, t, t + 1) for t in range(T)] if d == 0 else [(t, t + 1, t) for t in reversed(range(T))]


__all__ = ["rnn_cell", "lstm_cell", "gru_cell", "run_direction", "keep_where", "autograd_layer", "bptt_layer",
           "batched_layer", "IMPLEMENTATIONS", "FORMER_NAMES", "check_lengths", "lengths_mask", "CELLS",
           "GATE_COUNTS", "KERNEL_SOURCES", "input_grads", "hidden_weight_grad", "step_order", "split_k",
           "StepProduct", "layer_forward", "layer_vjp", "forward_loop", "backward_loop", "rnn_layer_forward",
           "lstm_layer_forward", "gru_layer_forward", "batched", "bptt", "cells", "lengths", "steps"]
