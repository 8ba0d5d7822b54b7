"""Modules and parameters, shaped like ``torch.nn``: ``Module``, ``Parameter``, ``Linear``, ``Embedding``.

A module's ``state_dict()`` maps dotted names to host NumPy arrays, so it saves to ``.npz`` bit for bit
(:func:`save`, :func:`load`) and loads into PyTorch with ``torch.from_numpy``; ``load_state_dict`` takes
NumPy arrays, our Tensors or PyTorch tensors, and checks every name and shape before it changes anything.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Iterator

import numpy as np

from .. import backend
from .. import functional as F
from ..tensor import Tensor


class Parameter(Tensor):
    """A leaf tensor that a module trains: it requires a gradient, and is float32 unless told otherwise."""

    def __init__(self, data: Any, dtype: Any = None):
        super().__init__(data, requires_grad=True, dtype=dtype)

    def __repr__(self) -> str:
        return "Parameter" + super().__repr__()[len("Tensor"):]


def uniform_parameter(shape: tuple, bound: float, dtype: Any = np.float32) -> Parameter:
    """U(-bound, bound) drawn with the host generator, then moved to the backend: CPU and GPU start alike."""
    return Parameter(backend.host_rng().uniform(-bound, bound, size=shape).astype(dtype))


def _host_array(value: Any) -> np.ndarray:
    """A NumPy array from a NumPy array, a Tensor, a CuPy array or a PyTorch tensor."""
    if isinstance(value, Tensor):
        return value.numpy()
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch.Tensor, without importing torch
        return value.detach().cpu().numpy()
    if backend.is_cupy_array(value):
        return value.get()
    return np.asarray(value)


class StateDictError(ValueError):
    """A state dict that does not fit the module: missing, unexpected or misshaped entries."""


class Module:
    """Base class: attributes that are Parameters or Modules are registered, in the order they are set."""

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"call super().__init__() in {type(self).__name__}.__init__ before setting attributes")
        # a replaced entry keeps its place in the order, as in PyTorch; anything else is unregistered
        if isinstance(value, Parameter):
            self._modules.pop(name, None)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._parameters.pop(name, None)
            self._modules[name] = value
        else:
            self._parameters.pop(name, None)
            self._modules.pop(name, None)
        object.__setattr__(self, name, value)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # --- traversal --------------------------------------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        stack, seen = [(prefix, self)], set()
        while stack:
            name, module = stack.pop()
            if id(module) in seen:  # a module reachable twice (shared weights) is listed once, as in PyTorch
                continue
            seen.add(id(module))
            yield name, module
            children = [(f"{name}.{k}" if name else k, m) for k, m in module._modules.items()]
            stack.extend(reversed(children))

    def modules(self) -> Iterator["Module"]:
        return (m for _, m in self.named_modules())

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, parameter) for this module and every submodule, in registration order."""
        seen = set()
        for name, module in self.named_modules():
            for pname, p in module._parameters.items():
                if id(p) not in seen:  # a tied parameter is listed (and trained) once
                    seen.add(id(p))
                    yield (f"{name}.{pname}" if name else pname), p

    def parameters(self) -> Iterator[Parameter]:
        return (p for _, p in self.named_parameters())

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    # --- state ------------------------------------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Dotted name -> a host (NumPy) copy of each parameter."""
        return OrderedDict((name, p.numpy()) for name, p in self.named_parameters())

    def load_state_dict(self, state: Any, strict: bool = True) -> None:
        """Copy ``state`` into the parameters; every name and shape is checked before anything changes."""
        own = OrderedDict(self.named_parameters())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        arrays, problems = {}, []
        for name, p in own.items():
            if name in state:
                arr = _host_array(state[name])
                if tuple(arr.shape) != p.shape:
                    problems.append(f"{name}: expected shape {p.shape}, got {tuple(arr.shape)}")
                    continue
                try:  # convert now, so a bad entry fails before any parameter has changed
                    arrays[name] = arr.astype(p.dtype)
                except (TypeError, ValueError) as error:
                    problems.append(f"{name}: cannot convert {arr.dtype} to {p.dtype} ({error})")
        if strict and (missing or unexpected):
            problems.insert(0, f"missing keys {missing}, unexpected keys {unexpected}")
        if problems:
            raise StateDictError(f"cannot load state dict into {type(self).__name__}: " + "; ".join(problems))
        for name, arr in arrays.items():
            p = own[name]
            p.data = backend.to_backend(arr, p.device)

    # --- modes, gradients, dtypes, devices ------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self) -> None:
        """Forget accumulated gradients (set them to None, as PyTorch does by default)."""
        for p in self.parameters():
            p.grad = None

    def to(self, target: Any) -> "Module":
        """Cast every parameter to a dtype, or move it to backend 'numpy'/'cupy'; in place, returns self."""
        for p in self.parameters():
            if isinstance(target, str) and target in backend.BACKENDS:
                p.data = backend.to_backend(p.data, target)
            else:
                p.data = p.data.astype(np.dtype(target))
            p.grad = None
        return self

    def double(self) -> "Module":
        return self.to(np.float64)

    def float(self) -> "Module":
        return self.to(np.float32)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}" + (")" if not self._modules else "")]
        for name, m in self._modules.items():
            child = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child}")
        if self._modules:
            lines.append(")")
        return "\n".join(lines)


class Linear(Module):
    """y = x W^T + b; W is (out_features, in_features); both drawn from U(-1/sqrt(in), 1/sqrt(in))."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: Any = np.float32):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features)
        self.weight = uniform_parameter((out_features, in_features), bound, dtype)
        self.bias = uniform_parameter((out_features,), bound, dtype) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"Linear expected input whose last axis has size in_features={self.in_features}; got shape {x.shape}")
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A lookup table: row i of ``weight`` (num_embeddings, embedding_dim) for index i; weights ~ N(0, 1)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype: Any = np.float32):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(backend.host_rng().standard_normal((num_embeddings, embedding_dim)).astype(dtype))

    def forward(self, indices: Any) -> Tensor:
        idx = indices.data if isinstance(indices, Tensor) else indices
        if not hasattr(idx, "dtype"):
            idx = np.asarray(idx)
        if not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"Embedding expected integer indices; got dtype {idx.dtype}")
        if isinstance(idx, np.ndarray) and idx.size and (idx.min() < 0 or idx.max() >= self.num_embeddings):
            raise IndexError(f"Embedding indices must lie in [0, {self.num_embeddings}); got values from {idx.min()} to {idx.max()}")
        return self.weight[idx]

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class Dropout(Module):
    """Dropout with probability p in training mode; the identity in eval mode."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1); got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Sequential(Module):
    """Modules applied one after another."""

    def __init__(self, *modules: Module):
        super().__init__()
        for i, m in enumerate(modules):
            setattr(self, str(i), m)

    def forward(self, x: Any) -> Any:
        for m in self._modules.values():
            x = m(x)
        return x


class Tanh(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.tanh()


class ReLU(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.relu()


def save(state: Any, path: str) -> None:
    """Write a state dict (or a module's) to an ``.npz`` file; :func:`load` gives it back bit for bit."""
    if isinstance(state, Module):
        state = state.state_dict()
    np.savez(path, **{k: _host_array(v) for k, v in state.items()})


def load(path: str) -> "OrderedDict[str, np.ndarray]":
    """Read a state dict written by :func:`save`."""
    with np.load(path) as f:
        return OrderedDict((k, f[k]) for k in f.files)


from ..rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell  # noqa: E402  (rnn.py builds on Module and Parameter)
from .attention import AdditiveAttention, attention_mask, masked_softmax  # noqa: E402,F401  (structured outputs: attention)
