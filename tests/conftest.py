"""Shared pytest fixtures for the engine's unit tests."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import tinygrad_birnn as tg

# Hypothesis: a small default run for `make test`, and a deep one (`pytest --hypothesis-profile=deep`).
settings.register_profile("tinygrad_birnn", max_examples=30, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
settings.register_profile("deep", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def pytest_configure(config):
    """The small profile unless the command line named one (``--hypothesis-profile=deep``)."""
    if config.getoption("hypothesis_profile", None) is None:
        settings.load_profile("tinygrad_birnn")


@pytest.fixture(params=["numpy", "cupy"])
def xp_backend(request):
    """Run the test once per backend: 'numpy' always, 'cupy' only where a GPU is usable.

    The cupy case skips with the library's own explanation of what is missing. The backend is set for the
    test and put back to 'numpy' afterwards, whatever happens.
    """
    yield from _on_backend(request.param)


@pytest.fixture
def gpu():
    """The cupy module with the cupy backend set, for GPU-only tests; skips with the reason where no GPU is usable."""
    yield from _on_backend("cupy")


def _on_backend(name):
    try:
        xp = tg.set_backend(name)
    except RuntimeError as error:
        pytest.skip(f"{name} backend unavailable: {error}")
    try:
        yield xp
    finally:
        tg.set_backend("numpy")


@pytest.fixture
def rng():
    """A seeded NumPy generator, so every test draws the same numbers on every run."""
    return np.random.default_rng(1234)
