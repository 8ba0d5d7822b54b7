"""Grad mode: whether operations record a graph. Per thread, as in PyTorch.

Each thread starts with grad mode on. ``no_grad()`` turns it off for the thread that entered it, and
only that thread: a thread evaluating a model under ``no_grad`` does not stop another thread's training
step from recording its graph. Contexts nest, and each exit restores the mode its own entry found.
"""
from __future__ import annotations

import functools
import threading
from typing import Any

_state = threading.local()


def is_grad_enabled() -> bool:
    """False inside ``no_grad()`` (in this thread): operations then record no graph."""
    return getattr(_state, "enabled", True)


def _set(mode: bool) -> None:
    _state.enabled = bool(mode)


def _stack() -> list:
    stack = getattr(_state, "stack", None)
    if stack is None:
        stack = _state.stack = []
    return stack


class _GradMode:
    """A context manager (and decorator) that sets grad mode for its thread and restores it on exit."""

    mode = True

    def __enter__(self) -> "_GradMode":
        _stack().append(is_grad_enabled())  # per thread: exits in one thread come in the reverse order
        _set(self.mode)
        return self

    def __exit__(self, *exc: Any) -> None:
        _set(_stack().pop())

    def __call__(self, function: Any) -> Any:
        mode = self.mode

        @functools.wraps(function)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with set_grad_enabled(mode):
                return function(*args, **kwargs)

        return wrapped


class no_grad(_GradMode):
    """Operations inside record no graph, as ``torch.no_grad``; per thread, nestable, usable as a decorator."""

    mode = False


class enable_grad(_GradMode):
    """Turn grad mode back on inside a ``no_grad`` block, as ``torch.enable_grad``."""

    mode = True


class set_grad_enabled(_GradMode):
    """``set_grad_enabled(mode)``: grad mode on or off, as a context manager or, called plainly, for the
    rest of the thread, as ``torch.set_grad_enabled``."""

    def __init__(self, mode: bool) -> None:
        if not isinstance(mode, (bool, int)):
            raise TypeError(f"set_grad_enabled expects a bool; got {type(mode).__name__}")
        self.mode = bool(mode)
        self._found = is_grad_enabled()
        _set(self.mode)

    def __enter__(self) -> "set_grad_enabled":
        _stack().append(self._found)  # the mode was set by __init__; __exit__ restores what it found
        return self

    def __call__(self, function: Any) -> Any:
        _set(self._found)  # used as a decorator: the mode applies inside the function only
        return super().__call__(function)
