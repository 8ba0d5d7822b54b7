"""The array backend: selection (set_backend, the environment variable), what a missing cupy or GPU says,
the array module following the data, host/device transfers, and the random generators."""
from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import tinygrad_birnn as tg
from tinygrad_birnn import Tensor, backend

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def uncached_cupy(monkeypatch):
    """Forget any cupy module the backend already holds, so the import is attempted again (and put it back)."""
    monkeypatch.setattr(backend, "_cupy", None)


def test_numpy_is_the_default_backend():
    assert tg.get_backend() is np
    assert backend.backend_name() == "numpy" and backend.backend_name(np) == "numpy"
    assert "numpy" in backend.available_backends()
    assert backend.available_backends() == (["numpy", "cupy"] if tg.gpu_available() else ["numpy"])


def test_set_backend_rejects_an_unknown_name_and_keeps_the_current_backend():
    with pytest.raises(ValueError, match=r"unknown backend 'jax': expected one of \('numpy', 'cupy'\)"):
        tg.set_backend("jax")
    assert tg.get_backend() is np
    assert tg.set_backend("numpy") is np


def test_cupy_backend_when_cupy_is_not_installed(monkeypatch, uncached_cupy):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` fail
    with pytest.raises(RuntimeError, match=r"backend 'cupy' needs the cupy package, which is not installed .*"
                                           r"pip install -r requirements-gpu.txt"):
        tg.set_backend("cupy")
    assert tg.get_backend() is np  # nothing changed
    assert not tg.gpu_available() and backend.available_backends() == ["numpy"]
    with pytest.raises(RuntimeError, match="not installed"):
        backend.to_backend(np.ones(2), "cupy")


def test_cupy_backend_when_cupy_sees_no_gpu(monkeypatch, uncached_cupy):
    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(is_available=lambda: False)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.raises(RuntimeError, match=r"backend 'cupy' needs a CUDA GPU: cupy is installed, but "
                                           r"cupy.cuda.is_available\(\) is False .*use the 'numpy' backend"):
        tg.set_backend("cupy")
    assert tg.get_backend() is np and backend._cupy is None  # not cached, not switched
    assert not tg.gpu_available()


def test_cupy_backend_when_the_driver_is_broken(monkeypatch, uncached_cupy):
    def broken():
        raise OSError("libcuda.so.1: cannot open shared object file")

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(is_available=broken)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.raises(RuntimeError, match="needs a working CUDA driver; cupy reported: libcuda.so.1: cannot open"):
        tg.set_backend("cupy")
    assert tg.get_backend() is np


def test_xp_of_follows_the_data():
    assert backend.xp_of(np.ones(2), np.float32(1.0), 3, 2.5, None) is np
    assert backend.xp_of() is np and backend.xp_of(1.0) is np  # Python scalars belong to no backend


def test_an_array_that_claims_to_be_cupy_needs_cupy(monkeypatch, uncached_cupy):
    class FakeCupyArray:
        __module__ = "cupy._core.core"

    monkeypatch.setitem(sys.modules, "cupy", None)
    assert backend.is_cupy_array(FakeCupyArray())
    with pytest.raises(RuntimeError, match="needs the cupy package"):
        backend.xp_of(FakeCupyArray())
    with pytest.raises(TypeError, match="expected all on cupy, got one on numpy"):
        backend.xp_of(FakeCupyArray(), np.zeros(1))


def test_to_numpy_and_to_backend():
    a = np.arange(3.0)
    host = backend.to_numpy(a)
    assert host is not a and np.array_equal(host, a)
    host[0] = 9.0
    assert a[0] == 0.0  # a copy
    assert backend.to_backend(a, "numpy") is a  # already there: no copy
    assert isinstance(tg.to_numpy([1, 2]), np.ndarray)
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        backend.to_backend(a, "gpu")


def test_scatter_add_accumulates_repeated_indices():
    target = np.zeros(4)
    backend.scatter_add(target, np.array([0, 2, 2, 2]), np.array([1.0, 1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(target, [1.0, 0.0, 6.0, 0.0])


def test_manual_seed_makes_the_host_generator_reproducible():
    tg.manual_seed(7)
    first = backend.host_rng().standard_normal(5)
    u1 = backend.uniform_like(np.zeros((2, 3), dtype=np.float32))
    tg.manual_seed(7)
    assert np.array_equal(backend.host_rng().standard_normal(5), first)
    u2 = backend.uniform_like(np.zeros((2, 3), dtype=np.float32))
    assert np.array_equal(u1, u2) and u1.dtype == np.float32 and u1.shape == (2, 3)
    assert ((u1 >= 0) & (u1 < 1)).all()
    tg.manual_seed(8)
    assert not np.array_equal(backend.host_rng().standard_normal(5), first)
    backend.synchronize()  # a no-op without a GPU, and never an error


# --- the environment variable, read once at import: checked in a fresh interpreter --------------------------------
def _import_with(value: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TINYGRAD_BIRNN_BACKEND=value)
    code = "import tinygrad_birnn as tg; print(tg.backend.backend_name(), tg.get_backend().__name__)"
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("value", ["numpy", " NumPy ", ""])
def test_environment_variable_selects_numpy(value):
    done = _import_with(value)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["numpy", "numpy"]


def test_environment_variable_with_an_unknown_backend_fails_clearly():
    done = _import_with("bogus")
    assert done.returncode != 0
    assert "TINYGRAD_BIRNN_BACKEND='bogus' names an unknown backend: expected one of ('numpy', 'cupy')" in done.stderr


def test_environment_variable_cupy():
    done = _import_with("cupy")
    if tg.gpu_available():
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["cupy", "cupy"]
    else:  # asked for explicitly, a missing GPU is an error that says what is missing
        assert done.returncode != 0
        assert "backend 'cupy' needs" in done.stderr


# --- on each backend present ----------------------------------------------------------------------------------------
def test_tensors_are_created_on_the_current_backend(xp_backend):
    name = backend.backend_name()
    for t in (Tensor([1.0, 2.0]), Tensor(np.ones(3)), tg.zeros(2, 2), tg.ones(3), tg.tensor(2.5),
              Tensor([1.0]) * 2, Tensor(np.ones(2)).sum()):
        assert t.device == name
        assert backend.xp_of(t.data) is xp_backend
    assert Tensor([1.0]).dtype == np.float32 and Tensor(np.ones(2)).dtype == np.float64


def test_gradients_live_on_the_current_backend(xp_backend):
    name = backend.backend_name()
    x = Tensor(np.array([[1.0, -2.0, 0.5]]), requires_grad=True)
    w = Tensor(np.array([[0.1], [0.2], [0.3]]), requires_grad=True)
    loss = ((x @ w).tanh() * 2.0 + x[:, np.array([0, 0])].sum()).sum()
    loss.backward()
    for t in (x, w):
        assert t.grad.device == name and backend.xp_of(t.grad.data) is xp_backend
    a = 1 - np.tanh(x.numpy() @ w.numpy()) ** 2
    np.testing.assert_allclose(w.grad.numpy(), 2 * x.numpy().T * a, rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), 2 * a * w.numpy().T + np.array([[2.0, 0, 0]]), rtol=1e-12)


def test_moving_between_backends_round_trips(xp_backend):
    name = backend.backend_name()
    t = Tensor(np.arange(4.0), requires_grad=True)
    host = t.to("numpy")
    assert host.device == "numpy" and host.is_leaf and host.requires_grad
    back = host.to(name)
    assert back.device == name and np.array_equal(back.numpy(), np.arange(4.0))
    assert isinstance(tg.to_numpy(t.data), np.ndarray)
