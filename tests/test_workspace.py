"""The scratch-array pool: an array is handed out again only when nobody can see it any more."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import tinygrad_birnn as tg
from tinygrad_birnn import workspace


@pytest.fixture(autouse=True)
def fresh_pool():
    workspace.clear()
    yield
    workspace.clear()


def test_a_taken_array_is_not_handed_out_twice_and_a_dropped_one_is_reused():
    a = workspace.empty(np, (4, 3), np.float32)
    b = workspace.empty(np, (4, 3), np.float32)
    assert a is not b and not np.shares_memory(a, b)
    address = a.ctypes.data
    del a
    c = workspace.empty(np, (4, 3), np.float32)
    assert c.ctypes.data == address  # the dropped one, not fresh memory
    assert c.shape == (4, 3) and c.dtype == np.float32


def test_a_view_or_a_tensor_keeps_its_array_taken():
    a = workspace.empty(np, (5,), np.float64)
    view = a[1:3]
    t = tg.Tensor._make(a, False, None)
    del a
    b = workspace.empty(np, (5,), np.float64)
    assert not np.shares_memory(b, view)
    assert not np.shares_memory(b, t.data)
    del view, b
    c = workspace.empty(np, (5,), np.float64)
    assert not np.shares_memory(c, t.data)  # the tensor still holds it


def test_shapes_and_dtypes_are_kept_apart():
    a = workspace.empty(np, (2, 6), np.float32)
    del a  # free, but only for (2, 6) float32
    other_shape = workspace.empty(np, (6, 2), np.float32)
    other_dtype = workspace.empty(np, (2, 6), np.float64)
    same = workspace.empty(np, (2, 6), np.float32)
    assert other_shape.shape == (6, 2) and other_dtype.dtype == np.float64
    assert not np.shares_memory(same, other_shape) and not np.shares_memory(same, other_dtype)


def test_the_pool_stays_under_its_limit(monkeypatch):
    monkeypatch.setattr(workspace, "LIMIT", 10_000)
    kept = [workspace.empty(np, (1000,), np.float32) for _ in range(5)]  # 4000 bytes each
    assert workspace.held_bytes() <= 10_000
    assert all(k.shape == (1000,) for k in kept)
    del kept
    workspace.empty(np, (2000,), np.float32)  # another shape: the free ones of the old shape are let go
    assert workspace.held_bytes() <= 10_000


def test_threads_never_share_an_array():
    taken, errors = [], []
    lock = threading.Lock()

    def work(seed):
        for _ in range(200):
            a = workspace.empty(np, (64,), np.float64)
            a.fill(seed)
            if not np.all(a == seed):
                errors.append(seed)
            with lock:
                taken.append(a.ctypes.data)
            del a

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_a_layers_results_survive_the_next_call():
    """The recurrent layer draws its buffers from the pool: outputs and saved arrays of one call must not be
    overwritten by the next, whatever is kept or dropped in between."""
    tg.manual_seed(0)
    rnn = tg.nn.RNN(3, 4, bidirectional=True)
    x1 = tg.Tensor(np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32), requires_grad=True)
    x2 = tg.Tensor(np.random.default_rng(1).standard_normal((5, 2, 3)).astype(np.float32), requires_grad=True)
    out1, h1 = rnn(x1)
    kept = out1.numpy().copy(), h1.numpy().copy()
    out2, _ = rnn(x2)  # a second graph while the first is alive
    np.testing.assert_array_equal(out1.numpy(), kept[0])
    np.testing.assert_array_equal(h1.numpy(), kept[1])
    out1.sum().backward()
    g1 = x1.grad.numpy().copy()
    del out1, h1
    out2.sum().backward()
    x1.grad = None
    out3, _ = rnn(x1)
    out3.sum().backward()
    np.testing.assert_array_equal(x1.grad.numpy(), g1)  # the same graph again gives the same gradient
