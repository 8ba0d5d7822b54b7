"""Each class of silent wrong result once found in the library, as a test that would catch its return.

Threads and grad mode, copies and aliasing, version counters, all-or-nothing state changes, files, edge
sizes, and the memory a training loop holds. The per-operation comparisons with PyTorch live in
tests/test_torch_parity.py.
"""
from __future__ import annotations

import gc
import os
import threading
import tracemalloc

import numpy as np
import pytest

import tinygrad_birnn as tg
from tinygrad_birnn import Tensor, nn, optim
from tinygrad_birnn import functional as F


# --- grad mode is per thread ----------------------------------------------------------------------------------
def _train(model, steps, use_no_grad, barrier, out, key):
    opt = optim.SGD(model.parameters(), lr=0.1)
    rng = np.random.default_rng(0)
    x, y = Tensor(rng.standard_normal((8, 3))), Tensor(rng.standard_normal((8, 1)))
    barrier.wait()
    for _ in range(steps):
        if use_no_grad:  # an evaluation thread: only no_grad forward passes
            with tg.no_grad():
                model(x)
            continue
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        out.setdefault(key, []).append(all(p.grad is not None for p in model.parameters()))
        opt.step()


def test_no_grad_in_one_thread_does_not_switch_off_another_threads_graph():
    trained, evaluated = nn.Linear(3, 1), nn.Linear(3, 1)
    barrier, out = threading.Barrier(2), {}
    threads = [threading.Thread(target=_train, args=(trained, 300, False, barrier, out, "train")),
               threading.Thread(target=_train, args=(evaluated, 3000, True, barrier, out, "eval"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out["train"]) == 300 and all(out["train"])
    assert tg.is_grad_enabled()


def test_overlapping_no_grad_blocks_in_threads_restore_each_threads_mode():
    inside, release = threading.Event(), threading.Event()

    def hold():
        with tg.no_grad():
            inside.set()
            release.wait()

    t = threading.Thread(target=hold)
    t.start()
    inside.wait()
    assert tg.is_grad_enabled()  # the other thread's no_grad is not ours
    with tg.no_grad():
        release.set()
        t.join()
    assert tg.is_grad_enabled()


# --- copies ----------------------------------------------------------------------------------------------------
def test_tensor_never_shares_memory_with_its_source(tmp_path):
    memmap = np.lib.format.open_memmap(tmp_path / "w.npy", mode="w+", dtype=np.float32, shape=(3,))
    memmap[:] = 1.0
    sources = [np.ma.masked_array([1.0, 2.0], mask=[0, 1]), np.matrix([[1.0, 2.0]]), memmap,
               np.arange(6.0)[::2], np.float64(3.0)]
    for source in sources:
        before = np.array(source, copy=True)
        t = Tensor(source)
        assert type(t.data) is np.ndarray
        t.data[...] = 7
        np.testing.assert_array_equal(np.asarray(source), before)
    p = nn.Parameter(memmap)
    p.grad = Tensor(np.ones(3, np.float32))
    optim.SGD([p], lr=1.0).step()
    np.testing.assert_array_equal(np.load(tmp_path / "w.npy"), [1.0, 1.0, 1.0])  # the file is untouched


def test_tensor_from_a_torch_tensor_keeps_its_dtype_and_copies():
    torch = pytest.importorskip("torch")
    source = torch.arange(3, dtype=torch.float64)
    t = Tensor(source)
    assert t.dtype == np.float64
    t.data[0] = 9
    assert source[0].item() == 0
    assert Tensor(torch.tensor([1, 2], dtype=torch.int32)).dtype == np.int32


@pytest.mark.parametrize("bad", [np.array([1 + 2j]), np.array([None, 1.0], dtype=object), ["a", "b"],
                                 [[1.0], [2.0, 3.0]]])
def test_tensor_refuses_what_is_not_numbers(bad):
    with pytest.raises(TypeError, match="Tensor data must be numbers"):
        Tensor(bad)


# --- version counters ------------------------------------------------------------------------------------------
def test_backward_through_weights_changed_by_a_step_raises():
    w = nn.Parameter(np.ones((2, 2)))
    loss = (Tensor(np.ones((1, 2))) @ w).tanh().sum()
    loss.backward(retain_graph=True)
    optim.SGD([w], lr=0.1).step()
    with pytest.raises(RuntimeError, match="modified in place"):
        loss.backward()


def test_inplace_operators_as_pytorch():
    w = nn.Parameter([1.0, 2.0])
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        w += 1
    y = w * 2
    y += 1  # inside a graph: out of place, as Python's fallback
    y.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [2.0, 2.0])
    with tg.no_grad():
        w -= 0.5 * w.grad  # a hand-written SGD step updates the parameter itself
    np.testing.assert_array_equal(w.numpy(), [0.0, 1.0])
    i = Tensor([1, 2])
    with pytest.raises(TypeError, match="cannot be stored"):
        i += 0.5


# --- all or nothing --------------------------------------------------------------------------------------------
def test_a_failing_optimizer_step_changes_nothing():
    a, b = nn.Parameter(np.ones(2)), nn.Parameter(np.ones(3))
    opt = optim.Adam([a, b], lr=0.1)
    a.grad, b.grad = Tensor(np.ones(2)), Tensor(np.ones(2))  # b's gradient has the wrong shape
    with pytest.raises(ValueError, match="parameter 1: its gradient has shape"):
        opt.step()
    np.testing.assert_array_equal(a.numpy(), np.ones(2))
    assert opt.state == [{}, {}]


def test_save_is_atomic_and_load_finds_what_save_wrote(tmp_path):
    model = nn.Linear(2, 2)
    path = tmp_path / "ckpt"
    nn.save(model, path)
    assert path.exists() and not (tmp_path / "ckpt.npz").exists()
    before = path.read_bytes()
    with pytest.raises(TypeError):
        nn.save({"weight": np.array([None], dtype=object)}, path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]
    restored = nn.Linear(2, 2)
    restored.load_state_dict(nn.load(path))
    np.testing.assert_array_equal(restored.weight.numpy(), model.weight.numpy())
    np.savez(tmp_path / "old", **model.state_dict())  # the name earlier versions wrote: old.npz
    assert set(nn.load(tmp_path / "old")) == {"weight", "bias"}


@pytest.mark.parametrize("bad", [np.array([[None, 1.0], [1.0, 1.0]], dtype=object),
                                 np.ones((2, 2), dtype=complex)])
def test_load_state_dict_refuses_object_and_complex_arrays(bad):
    model = nn.Linear(2, 2)
    before = model.weight.numpy()
    with pytest.raises(nn.StateDictError, match="weight"):
        model.load_state_dict({"weight": bad, "bias": np.zeros(2)})
    np.testing.assert_array_equal(model.weight.numpy(), before)


def test_sequential_takes_modules_only():
    with pytest.raises(TypeError, match="argument 1 is a function"):
        nn.Sequential(nn.Linear(2, 2), lambda x: x)


# --- edge sizes ------------------------------------------------------------------------------------------------
def test_unstack_of_a_length_one_axis_gives_the_right_gradient():
    x = Tensor(np.ones((1, 2, 3)), requires_grad=True)
    tg.unstack(x)[0].sum().backward()
    assert x.grad.shape == (1, 2, 3)


def test_reductions_on_0d_and_empty_tensors():
    assert Tensor(3.0).sum(axis=0).item() == 3.0
    assert np.isnan(Tensor(np.zeros((0, 2))).mean().item())
    assert Tensor(np.zeros((0, 2))).mean(axis=0).shape == (2,)
    assert np.isnan(F.mse_loss(Tensor(np.zeros(0)), Tensor(np.zeros(0))).item())
    assert Tensor(np.array([0, -2**31], dtype=np.int32)).min().item() == -2**31


# --- memory ----------------------------------------------------------------------------------------------------
def test_a_training_loop_that_keeps_its_losses_holds_little_memory():
    """After backward, a loss keeps its value and a released node, not the graph's arrays (PyTorch: the
    same). 200 steps of a (64, 256) MLP keeping every loss must hold well under a megabyte."""
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.Tanh(), nn.Linear(256, 1))
    opt = optim.SGD(model.parameters(), lr=0.01)
    x, y = Tensor(rng.standard_normal((64, 64)).astype(np.float32)), Tensor(np.zeros((64, 1), np.float32))
    losses = []
    for _ in range(5):  # warm up caches
        F.mse_loss(model(x), y).backward()
    gc.collect()
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    for _ in range(200):
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss)
    del loss
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - start
    tracemalloc.stop()
    per_step = held / 200
    assert per_step < 4_000, f"{per_step:.0f} bytes held per step"  # one activation alone is 64 KB


def test_grad_fn_names_the_operation_that_made_a_tensor():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = (x * 2).sum()
    assert x.grad_fn is None and y.grad_fn.prim.name == "sum"
    with tg.no_grad():
        assert (x * 2).grad_fn is None
