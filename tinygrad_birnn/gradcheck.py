"""Gradient checks: central differences element by element, and a random-direction dot-product test.

``gradcheck(f, inputs)`` recomputes ``f`` in float64, contracts its output with a random cotangent ``v``
(so any output shape works) and compares the engine's gradient with finite differences of
``phi(x) = <f(x), v>``: one central difference per input element (up to ``max_elements`` per input,
chosen at random beyond that), then one along a random direction ``u`` through all inputs at once:
``(phi(x + eps u) - phi(x - eps u)) / 2 eps`` must equal ``sum_i <grad_i, u_i>``.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from . import backend
from .tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    """An analytic gradient that disagrees with finite differences."""


def _phi(f: Callable, arrays: list, v: np.ndarray, xp: Any) -> float:
    with no_grad():
        out = f(*[Tensor(a) for a in arrays])
    return float((backend.to_numpy(out.data).astype(np.float64) * v).sum())


def gradcheck(
    f: Callable[..., Tensor],
    inputs: Sequence[Any],
    eps: float = 1e-6,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    max_elements: int = 256,
    seed: int = 0,
) -> bool:
    """Check ``f``'s gradients with respect to every input; returns True or raises :class:`GradcheckError`.

    ``inputs`` are Tensors or arrays; they are copied to float64, so the check is exact to about 1e-9.
    """
    rng = np.random.default_rng(seed)
    hosts = [np.array(backend.to_numpy(x.data if isinstance(x, Tensor) else np.asarray(x)), dtype=np.float64) for x in inputs]
    xp = backend.get_backend()
    to_dev = lambda a: backend.to_backend(a, backend.backend_name())  # noqa: E731
    leaves = [Tensor(to_dev(h), requires_grad=True) for h in hosts]
    out = f(*leaves)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: f must return a Tensor; got {type(out).__name__}")
    v = rng.standard_normal(out.shape)
    if out.requires_grad:
        out.backward(to_dev(v).astype(out.dtype))
    analytic = [np.zeros_like(h) if t.grad is None else backend.to_numpy(t.grad.data).astype(np.float64)
                for h, t in zip(hosts, leaves)]

    def phi(arrays: list) -> float:
        return _phi(f, [to_dev(a) for a in arrays], v, xp)

    for i, h in enumerate(hosts):
        flat_ids = np.arange(h.size)
        if h.size > max_elements:
            flat_ids = rng.choice(h.size, size=max_elements, replace=False)
        for j in flat_ids:
            idx = np.unravel_index(j, h.shape)
            plus = [a.copy() for a in hosts]
            minus = [a.copy() for a in hosts]
            plus[i][idx] += eps
            minus[i][idx] -= eps
            numeric = (phi(plus) - phi(minus)) / (2 * eps)
            got = analytic[i][idx]
            if not abs(got - numeric) <= atol + rtol * abs(numeric):
                raise GradcheckError(
                    f"gradcheck: input {i}, element {tuple(int(k) for k in idx)}: analytic gradient {got:.10g} "
                    f"differs from the central difference {numeric:.10g} (|diff| {abs(got - numeric):.3g} > "
                    f"atol {atol} + rtol {rtol} * |numeric|)"
                )
    directions = [rng.standard_normal(h.shape) for h in hosts]
    numeric = (phi([h + eps * u for h, u in zip(hosts, directions)])
               - phi([h - eps * u for h, u in zip(hosts, directions)])) / (2 * eps)
    predicted = float(sum((g * u).sum() for g, u in zip(analytic, directions)))
    if not abs(predicted - numeric) <= atol + rtol * abs(numeric):
        raise GradcheckError(
            f"gradcheck: dot-product test failed: <grad, u> = {predicted:.10g} but the directional "
            f"difference is {numeric:.10g}"
        )
    return True
