"""Modules and parameters, shaped like ``torch.nn``: ``Module``, ``Parameter``, ``Linear``, ``Embedding``.

A module's ``state_dict()`` maps dotted names to host NumPy arrays, so it saves to ``.npz`` bit for bit
(:func:`save`, :func:`load`) and loads into PyTorch with ``torch.from_numpy``; ``load_state_dict`` takes
NumPy arrays, our Tensors or PyTorch tensors, and checks every name and shape before it changes anything.
"""
from __future__ import annotations

import math
import os
import tempfile
from collections import OrderedDict
from typing import Any, Iterator, NamedTuple

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


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict`` returns, as PyTorch: the names it did not find, and those it did not use."""

    missing_keys: list
    unexpected_keys: list


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
        """The computation; every subclass defines it. Call the module, not ``forward``."""
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # --- traversal --------------------------------------------------------------------------------------------

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        """(dotted name, module) for this module and every submodule, each once, depth first."""
        stack, seen = [(prefix, self)], set()
        while stack:
            name, module = stack.pop()
            if id(module) in seen:  # a module reachable twice (shared weights) is listed once, as in PyTorch
                continue
            seen.add(id(module))
            yield name, module
            children = [(f"{name}.{k}" if name else k, m) for k, m in module._modules.items()]
            stack.extend(reversed(children))

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        """(name, module) for the direct submodules, in registration order."""
        return iter(list(self._modules.items()))

    def children(self) -> Iterator["Module"]:
        """The direct submodules, in registration order."""
        return (m for _, m in self.named_children())

    def modules(self) -> Iterator["Module"]:
        """This module and every submodule, each once (shared ones too), depth first."""
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
        """Every parameter of this module and its submodules, each once, in registration order."""
        return (p for _, p in self.named_parameters())

    def num_parameters(self) -> int:
        """The number of trained numbers: the sum of the parameters' sizes."""
        return sum(p.size for p in self.parameters())

    # --- state ------------------------------------------------------------------------------------------------

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Dotted name -> a host (NumPy) copy of each parameter."""
        return OrderedDict((name, p.numpy()) for name, p in self.named_parameters())

    def load_state_dict(self, state: Any, strict: bool = True) -> IncompatibleKeys:
        """Copy ``state`` into the parameters; every name and shape is checked before anything changes.

        With ``strict=False`` missing and unexpected names are allowed; either way the names are returned
        as ``(missing_keys, unexpected_keys)``, as PyTorch returns them.
        """
        own = OrderedDict(self.named_parameters())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        arrays, problems = {}, []
        for name, p in own.items():
            if name in state:
                try:
                    arr = backend.to_numpy(state[name])
                except TypeError as error:
                    given = getattr(state[name], "dtype", type(state[name]).__name__)
                    problems.append(f"{name}: cannot convert {given} to {p.dtype} ({error})")
                    continue
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
            p.bump_version()  # a graph recorded with the old values must not be used with the new ones
        return IncompatibleKeys(missing, unexpected)

    # --- modes, gradients, dtypes, devices ------------------------------------------------------------------

    def train(self, mode: bool = True) -> "Module":
        """Training mode (``mode=True``) or evaluation mode for this module and every submodule."""
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> "Module":
        """Evaluation mode (dropout off): ``train(False)``; returns the module."""
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
            p.bump_version()
        return self

    def double(self) -> "Module":
        """Every parameter cast to float64, in place; returns the module."""
        return self.to(np.float64)

    def float(self) -> "Module":
        """Every parameter cast to float32, in place; returns the module."""
        return self.to(np.float32)

    def extra_repr(self) -> str:
        """What ``repr`` shows inside the parentheses (subclasses override it)."""
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
    """A fully connected layer, y = x W^T + b, as ``torch.nn.Linear``.

    Args:
        in_features: size of each input's last axis.
        out_features: size of each output's last axis.
        bias: add the learned bias ``b`` (default True).
        dtype: dtype of the parameters (default float32).

    Attributes:
        weight: (out_features, in_features), drawn from U(-k, k) with k = 1/sqrt(in_features).
        bias: (out_features,), drawn from the same distribution, or None.

    Shape:
        - Input: ``(*, in_features)``, any number of leading axes.
        - Output: ``(*, out_features)``.

    Example:
        >>> import numpy as np
        >>> from tinygrad_birnn import Tensor, nn
        >>> layer = nn.Linear(3, 2)
        >>> layer(Tensor(np.ones((4, 3), np.float32))).shape
        (4, 2)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dtype: Any = np.float32,
    ):
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
    """A lookup table of learned vectors, as ``torch.nn.Embedding``: index i gives row i of ``weight``.

    Args:
        num_embeddings: the number of rows (indices lie in [0, num_embeddings)).
        embedding_dim: the length of each vector.
        dtype: dtype of the weights (default float32).

    Attributes:
        weight: (num_embeddings, embedding_dim), drawn from N(0, 1).

    Shape:
        - Input: integer indices of any shape ``(*)``.
        - Output: ``(*, embedding_dim)``. Repeated indices add up their gradients.

    Example:
        >>> from tinygrad_birnn import nn
        >>> nn.Embedding(10, 4)([[1, 2, 2]]).shape
        (1, 3, 4)
    """

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
    """Dropout, as ``torch.nn.Dropout``: in training mode each element is zeroed with probability ``p``
    and the others are scaled by 1/(1-p); in eval mode (``module.eval()``) it is the identity.

    Args:
        p: the probability of zeroing an element, in [0, 1] (default 0.5).

    Shape:
        - Input: any shape. Output: the same shape.

    Example:
        >>> from tinygrad_birnn import Tensor, nn
        >>> nn.Dropout(0.5).eval()(Tensor([1.0, 2.0]))
        Tensor([1., 2.])
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1]; got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Sequential(Module):
    """Modules applied one after another, as ``torch.nn.Sequential``; ``model[i]`` is the i-th.

    Args:
        *modules: the modules, in order (each a :class:`Module`; a plain function is refused).

    Shape:
        - Input: what the first module takes. Output: what the last one returns.

    Example:
        >>> import numpy as np
        >>> from tinygrad_birnn import Tensor, nn
        >>> model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
        >>> model(Tensor(np.ones((2, 3), np.float32))).shape
        (2, 1)
    """

    def __init__(self, *modules: Module):
        super().__init__()
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Sequential takes Modules; argument {i} is a {type(m).__name__} "
                                "(wrap a function in a Module subclass with a forward method)")
            setattr(self, str(i), m)

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def forward(self, x: Any) -> Any:
        for m in self._modules.values():
            x = m(x)
        return x


class Tanh(Module):
    """The elementwise tanh as a module (for :class:`Sequential`), as ``torch.nn.Tanh``."""

    def forward(self, x: Tensor) -> Tensor:
        """tanh(x), elementwise."""
        return x.tanh()


class ReLU(Module):
    """The elementwise max(x, 0) as a module, as ``torch.nn.ReLU`` (gradient 0 at 0)."""

    def forward(self, x: Tensor) -> Tensor:
        """max(x, 0), elementwise."""
        return x.relu()


def save(state: Any, path: Any) -> None:
    """Write a state dict (or a module's) to the file ``path`` (NumPy's ``.npz`` format, under exactly the
    name given, as ``torch.save``); :func:`load` gives it back bit for bit.

    The file is written beside the target and renamed over it only when complete, so a failure (a full
    disk, an entry that cannot be converted) leaves any previous checkpoint as it was.
    """
    if isinstance(state, Module):
        state = state.state_dict()
    arrays = {k: backend.to_numpy(v) for k, v in state.items()}  # converted first: a bad entry writes nothing
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(handle, "wb") as f:
            np.savez(f, **arrays)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def load(path: Any) -> "OrderedDict[str, np.ndarray]":
    """Read a state dict written by :func:`save` (a file saved by ``np.savez`` under ``path + ".npz"``,
    as earlier versions of :func:`save` named it, is found too)."""
    path = os.fspath(path)
    if not os.path.exists(path) and os.path.exists(path + ".npz"):
        path = path + ".npz"
    with np.load(path, allow_pickle=False) as f:
        return OrderedDict((k, f[k]) for k in f.files)
