"""Modules and parameters, shaped like ``torch.nn``: ``Module``, ``Parameter``, ``Linear``, ``Embedding``.

A module's ``state_dict()`` maps dotted names to host NumPy arrays, so it saves to ``.npz`` bit for bit
(:func:`save`, :func:`load`) and loads into PyTorch with ``torch.from_numpy``; ``load_state_dict`` takes
NumPy arrays, our Tensors or PyTorch tensors, and checks every name and shape before it changes anything.
"""
from __future__ import annotations

from .modules import (Dropout, Embedding, IncompatibleKeys, Linear, Module, Parameter, ReLU,  # noqa: F401
                      Sequential, StateDictError, Tanh, load, save, uniform_parameter)
from .recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNBase, RNNCell, RNNCellBase  # noqa: F401
from .crf import CRF  # noqa: F401
from .attention import AdditiveAttention, attention_mask, masked_softmax  # noqa: F401
