"""Optimizers that update parameters in place from their ``.grad``: ``SGD`` and ``Adam`` with PyTorch's
update rules, and ``clip_grad_norm_``. Updates run on raw arrays, outside the graph, on the parameters'
own device, so a training step never copies to the host."""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from .backend import xp_of
from .tensor import Tensor, as_tensor


def _check_hyper(name: str, value: Any, low: float = 0.0, high: float | None = None,
                 high_open: bool = False) -> float:
    """A finite number in [low, high] (or [low, high)); else ValueError naming the hyperparameter."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number; got {type(value).__name__}") from None
    ok = math.isfinite(number) and number >= low
    if high is not None:
        ok = ok and (number < high if high_open else number <= high)
    if not ok:
        bound = "" if high is None else f" and {'<' if high_open else '<='} {high}"
        raise ValueError(f"{name} must be >= {low:g}{bound}; got {value} (expected a finite number)")
    return number


class Optimizer:
    """Holds the parameters and per-parameter state; ``zero_grad`` forgets gradients.

    ``step()`` checks every gradient (shape, dtype, backend) before it changes any parameter, so a step that
    raises leaves parameters and optimizer state as they were.
    """

    def __init__(self, params: Iterable[Tensor], lr: float):
        if isinstance(params, Tensor):
            raise TypeError("params must be an iterable of Tensors (e.g. model.parameters() or [w, b]); got a "
                            f"single Tensor of shape {params.shape}: wrap it in a list")
        try:
            self.params = list(params)
        except TypeError:
            raise TypeError(f"params must be an iterable of Tensors; got {type(params).__name__}") from None
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        for i, p in enumerate(self.params):
            if not isinstance(p, Tensor) or not p.requires_grad:
                raise TypeError(f"parameter {i} must be a Tensor with requires_grad=True; got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(f"parameter {i} is not a leaf tensor (it was computed by an operation); "
                                 "an optimizer can only update leaves")
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError("optimizer got the same parameter more than once")
        self.lr = _check_hyper("learning rate", lr)
        self.state: list[dict[str, Any]] = [{} for _ in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        live = []
        for i, p in enumerate(self.params):  # every check before any update: all or nothing
            if p.grad is None:
                continue
            g, data = p.grad.data, p.data
            if g.shape != data.shape or g.dtype != data.dtype:
                raise ValueError(f"parameter {i}: its gradient has shape {tuple(g.shape)} and dtype {g.dtype}, "
                                 f"expected shape {p.shape} and dtype {p.dtype} (the parameter's)")
            if type(g) is not type(data):
                xp_of(data, g)  # raises: the gradient lives on another backend
            live.append(i)
        if not self._update_together(live):
            for i in live:
                self.update(self.params[i], self.params[i].grad.data, self.state[i])
        for i in live:
            self.params[i].bump_version()

    def update(self, p: Tensor, g: Any, state: dict) -> None:
        """The update rule: change ``p.data`` in place from its gradient ``g`` and its ``state`` dict."""
        raise NotImplementedError

    # Where the rule treats every entry on its own (``elementwise``), one call of update() on the
    # concatenation of the parameters does the work of one call per parameter, entry for entry the same
    # arithmetic, in a dozen array operations instead of a dozen per parameter (PyTorch's "foreach" Adam).
    # The state of each parameter stays in self.state[i], its arrays views into the concatenated ones.
    elementwise = False

    def _update_together(self, live: list) -> bool:
        params = [self.params[i] for i in live]
        if not self.elementwise or len(params) < 2:
            return False
        dtype = params[0].data.dtype
        if any([type(p.data) is not np.ndarray or p.data.base is not None or p.data.dtype != dtype
                for p in params]):  # parameters owning their arrays, one dtype
            return False
        flat = self._flat_state(live, params)
        if flat is None:
            return False
        data = np.concatenate([p.data.ravel() for p in params])
        grads = np.concatenate([p.grad.data.ravel() for p in params])
        self.update(Tensor._make(data, False, None), grads, flat["state"])
        for p, (start, stop) in zip(params, flat["spans"]):
            np.copyto(p.data, data[start:stop].reshape(p.data.shape))
        states = [self.state[i] for i in live]
        for key, value in flat["state"].items():  # each parameter's state: views of the joint arrays
            if not isinstance(value, np.ndarray):
                for state in states:
                    state[key] = value
            elif flat["views"].get(key, (None,))[0] is not value:  # a new joint array: new views
                views = [value[a:b].reshape(p.shape) for p, (a, b) in zip(params, flat["spans"])]
                flat["views"][key] = (value, views)
                for state, view in zip(states, views):
                    state[key] = view
        return True

    def _flat_state(self, live: list, params: list) -> dict | None:
        """The joint state of the parameters ``live``: kept from the last step when every parameter's state
        still is what that step left (its arrays the views made then), else gathered from the parameters'
        own states (None where they do not fit together: different keys or step counts)."""
        flat = getattr(self, "_flat", None)
        states = [self.state[i] for i in live]
        if flat is not None and flat["live"] == live and self._unchanged(flat, states):
            return flat
        if any(st.keys() != states[0].keys() for st in states):
            return None
        gathered = {}
        for key, value in states[0].items():
            if isinstance(value, np.ndarray):
                gathered[key] = np.concatenate([st[key].ravel() for st in states])
            elif all(st[key] == value for st in states):
                gathered[key] = value
            else:
                return None
        stops = np.cumsum([p.data.size for p in params]).tolist()
        self._flat = {"live": live, "state": gathered, "spans": list(zip([0] + stops[:-1], stops)), "views": {}}
        return self._flat

    @staticmethod
    def _unchanged(flat: dict, states: list) -> bool:
        joint, views = flat["state"], flat["views"]
        for i, state in enumerate(states):
            if state.keys() != joint.keys():
                return False
            for key, value in state.items():
                if key in views:
                    if value is not views[key][1][i]:
                        return False
                elif isinstance(value, np.ndarray) or value != joint[key]:
                    return False
        return True


class SGD(Optimizer):
    """v <- momentum v + (g + wd p); p <- p - lr v (or lr (g + momentum v) with nesterov)."""

    elementwise = True

    def __init__(self, params: Iterable[Tensor], lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False):
        super().__init__(params, lr)
        momentum, weight_decay = _check_hyper("momentum", momentum), _check_hyper("weight_decay", weight_decay)
        if nesterov and momentum <= 0:
            raise ValueError("nesterov momentum needs momentum > 0")
        self.momentum, self.weight_decay, self.nesterov = momentum, weight_decay, bool(nesterov)

    def update(self, p: Tensor, g: Any, state: dict) -> None:
        if self.weight_decay:
            g = g + self.weight_decay * p.data
        if self.momentum:
            if "velocity" not in state:
                state["velocity"] = g.copy()
            else:
                state["velocity"] *= self.momentum
                state["velocity"] += g
            g = (
                g + self.momentum * state["velocity"]
                if self.nesterov
                else state["velocity"]
            )
        p.data -= self.lr * g


class Adam(Optimizer):
    """Adam (Kingma & Ba): m, v running moments of g and g^2; p <- p - lr m_hat / (sqrt(v_hat) + eps)."""

    elementwise = True

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2); got {betas!r}")
        if not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise ValueError(f"betas must lie in [0, 1); got {tuple(betas)}")
        betas = tuple(float(b) for b in betas)
        self.betas, self.eps = betas, _check_hyper("eps", eps)
        self.weight_decay = _check_hyper("weight_decay", weight_decay)

    def update(self, p: Tensor, g: Any, state: dict) -> None:
        xp = xp_of(p.data)
        b1, b2 = self.betas
        if self.weight_decay:
            g = g + self.weight_decay * p.data
        if xp is not np:
            return self._update_on_gpu(xp, p, g, state)
        if not state:
            state["step"], state["m"], state["v"] = (
                0,
                xp.zeros_like(p.data),
                xp.zeros_like(p.data),
            )
        state["step"] += 1
        t, m, v = state["step"], state["m"], state["v"]
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        correction1, correction2 = 1 - b1**t, 1 - b2**t
        denom = xp.sqrt(v) / (correction2**0.5) + self.eps
        p.data -= (self.lr / correction1) * m / denom

    def _update_on_gpu(self, xp: Any, p: Tensor, g: Any, state: dict) -> None:
        """The same update as one fused kernel; the step count t lives on the device (a 0-d array), so a step
        captured as a CUDA graph counts on when replayed instead of repeating the t it was captured with."""
        if not state:
            state["step"], state["m"], state["v"] = xp.zeros((), np.float64), xp.zeros_like(p.data), xp.zeros_like(p.data)
        state["step"] += 1
        _adam_kernel(xp)(g, state["step"], self.lr, *self.betas, self.eps, p.data, state["m"], state["v"])


def clip_grad_norm_(params: Iterable[Tensor], max_norm: float) -> Tensor:
    """Scale all gradients together so their joint L2 norm is at most ``max_norm``;
    returns the norm before.

    As in PyTorch the scale min(1, max_norm / (norm + 1e-6)) is applied without asking
    the host, so no GPU synchronisation happens here.
    """
    if isinstance(params, Tensor):
        params = [params]
    if not max_norm >= 0:  # inf is allowed: it measures the norm without clipping
        raise ValueError(f"max_norm must be >= 0; got {max_norm}")
    grads = [p.grad.data for p in params if p.grad is not None]
    if not grads:  # as PyTorch: nothing to clip, the norm is 0
        return as_tensor(np.zeros((), np.float32))
    xp = xp_of(*grads)
    total = xp.sqrt(sum((g.astype(xp.float64) ** 2).sum() for g in grads))
    scale = xp.minimum(max_norm / (total + 1e-6), 1.0)
    for g in grads:
        g *= scale.astype(g.dtype)
    return as_tensor(total)


_ADAM_SOURCE = (
    "T g, float64 t, float64 lr, float64 b1, float64 b2, float64 eps", "T p, T m, T v",
    "m = (T)b1 * m + (T)(1 - b1) * g; v = (T)b2 * v + (T)(1 - b2) * g * g;"
    " double c1 = 1 - pow(b1, t), c2 = 1 - pow(b2, t);"
    " p -= (T)(lr / c1) * m / (sqrt(v) / (T)sqrt(c2) + (T)eps);")
_adam: list = []


def _adam_kernel(xp: Any) -> Any:
    """Adam's update of p, m and v (and the bias corrections from t) as one CuPy ElementwiseKernel."""
    if not _adam:
        _adam.append(xp.ElementwiseKernel(*_ADAM_SOURCE, "tinygrad_birnn_adam"))
    return _adam[0]
