"""CUDA-graph capture of a training step (tinygrad_birnn/cuda_graph.py) and the matmul routing it relies on.

* On any machine: the GEMM plan (which operand goes where, op N or T, leading dimensions, batch strides, copies)
  is replayed by a NumPy emulation of column-major ``gemmStridedBatched`` and must equal ``np.matmul`` for every
  layout the library produces and some it does not; ``CapturedStep`` on NumPy runs the step as written and says
  why; a host-to-device copy inside a capture is refused with a message.
* With a GPU (skipped elsewhere, saying why): our cuBLAS handle equals ``cupy.matmul``; a captured training
  step equals the same step run uncaptured, step after step, with new data copied in between; a step that
  cannot be captured warns, falls back and stays correct.
"""
from __future__ import annotations

import types

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

import tinygrad_birnn as tg
from tinygrad_birnn import backend, cuda_graph, nn, optim
from tinygrad_birnn import functional as F
from tinygrad_birnn.cuda_graph import CapturedStep, CaptureError, plan_gemm


def emulate(plan) -> np.ndarray:
    """What cublas<t>gemmStridedBatched computes from ``plan`` (NumPy arrays), read back in row-major order."""

    def stored(operand, rows, cols):  # the column-major (rows x cols) matrices cuBLAS reads, one per batch entry
        e = operand.array.itemsize
        return as_strided(operand.array, shape=(plan.batch, rows, cols), strides=(operand.stride * e, e, operand.ld * e))

    first = stored(plan.first, *((plan.m, plan.k) if plan.first.op == "N" else (plan.k, plan.m)))
    second = stored(plan.second, *((plan.k, plan.n) if plan.second.op == "N" else (plan.n, plan.k)))
    op_first = first if plan.first.op == "N" else first.transpose(0, 2, 1)
    op_second = second if plan.second.op == "N" else second.transpose(0, 2, 1)
    c = (op_first @ op_second).transpose(0, 2, 1)                # column-major C (m x n) = row-major (n x m)
    c = c.reshape(plan.shape)
    return c.reshape([n for i, n in enumerate(plan.shape) if i not in plan.drop])


def layouts(rng):
    """(a, b) pairs: contiguous, transposed, sliced, reversed, batched, broadcast, vectors."""
    r = lambda *s: rng.standard_normal(s)  # noqa: E731
    big = r(6, 7, 8)
    return {
        "2d": (r(3, 4), r(4, 5)),
        "a transposed": (r(4, 3).T, r(4, 5)),
        "b transposed (x W^T)": (r(3, 4), r(5, 4).T),
        "both transposed": (r(4, 3).T, r(5, 4).T),
        "column slice": (r(3, 9)[:, 2:6], r(4, 5)),
        "row step": (r(6, 4)[::2], r(4, 5)),
        "reversed rows": (r(3, 4)[::-1], r(4, 5)),
        "one row": (r(1, 4), r(4, 5)),
        "one column": (r(3, 4), r(4, 1)),
        "batched @ matrix": (r(2, 3, 4), r(4, 5)),
        "matrix @ batched": (r(3, 4), r(2, 4, 5)),
        "batched @ batched": (r(2, 3, 4), r(2, 4, 5)),
        "batched, transposed batch": (r(3, 2, 4).transpose(1, 0, 2), r(2, 5, 4).transpose(0, 2, 1)),
        "broadcast batch axes": (r(2, 1, 3, 4), r(3, 4, 5)),
        "partly broadcast": (r(2, 1, 3, 4), r(1, 3, 4, 5)),
        "two batch axes": (r(2, 3, 3, 4), r(2, 3, 4, 5)),
        "batch slice": (big[::2, :3, :4], r(3, 4, 2)),
        "states @ W_hh^T per direction": (r(5, 2, 3, 4)[1], r(2, 6, 4).transpose(0, 2, 1)),
        "vector @ matrix": (r(4), r(4, 5)),
        "matrix @ vector": (r(3, 4), r(4)),
        "vector @ vector": (r(4), r(4)),
        "vector @ batched": (r(4), r(2, 4, 5)),
        "empty rows": (r(0, 4), r(4, 5)),
        "empty inner": (r(3, 0), r(0, 5)),
    }


@pytest.mark.parametrize("name", list(layouts(np.random.default_rng(0))))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_plan_equals_matmul(name, dtype):
    a, b = (x.astype(dtype) for x in layouts(np.random.default_rng(0))[name])
    plan = plan_gemm(np, a, b)
    expected = np.matmul(a, b)
    got = emulate(plan) if expected.size and plan.k else np.zeros(expected.shape, dtype)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)
    for operand in (plan.first, plan.second):  # what cuBLAS requires of a leading dimension
        rows = plan.m if operand is plan.first else plan.k
        if operand.op == "T":
            rows = plan.k if operand is plan.first else plan.n
        assert operand.ld >= max(1, rows)


def test_gemm_plan_copies_only_what_it_must():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 4))
    x = rng.standard_normal((3, 4))
    plan = plan_gemm(np, x, w.T)                           # x W^T: both read in place, W as op T
    assert plan.first.array.base is w or np.shares_memory(plan.first.array, w)
    assert plan.first.op == "T" and plan.second.op == "N"
    reversed_plan = plan_gemm(np, x[::-1], w.T)            # a negative stride cannot be walked: copied
    assert not np.shares_memory(reversed_plan.second.array, x)


def test_gemm_plan_rejects_what_matmul_rejects():
    with pytest.raises(ValueError, match="do not align"):
        plan_gemm(np, np.ones((2, 3)), np.ones((4, 5)))
    with pytest.raises(ValueError, match="at least one axis"):
        plan_gemm(np, np.ones(()), np.ones((4, 5)))


def test_backend_matmul_is_numpy_matmul_on_the_cpu():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 5))
    out = np.empty((2, 3, 5))
    assert backend.matmul(a, b, out=out) is out
    np.testing.assert_array_equal(out, a @ b)


def test_a_host_copy_inside_a_capture_is_refused(monkeypatch):
    monkeypatch.setattr(backend, "_capture", types.SimpleNamespace(capturing=True))
    assert backend.capturing()
    with pytest.raises(CaptureError, match=r"host array of shape \(2, 3\) is copied to the GPU inside a step"):
        backend.to_backend(np.ones((2, 3)), "cupy")


def test_lengths_inside_a_capture_make_the_mask_on_the_device(monkeypatch):
    """Inside a capture the mask comes from a device array of lengths, with no host round trip; it equals the
    mask made on the host. Lengths the host would have to copy are refused with the reason."""
    layer = nn.RNN(3, 4, bidirectional=True)
    x = tg.Tensor(np.random.default_rng(0).standard_normal((5, 3, 3)).astype(np.float32))
    lengths = np.array([5, 2, 3])
    expected = layer(x, lengths=lengths)[0].numpy()
    monkeypatch.setattr(backend, "_capture", types.SimpleNamespace(capturing=True))
    from tinygrad_birnn.rnn import lengths as lengths_module
    made = []
    monkeypatch.setattr(lengths_module, "check_lengths", lambda *a: made.append(a))  # the host path must not run
    np.testing.assert_array_equal(layer(x, lengths=lengths)[0].numpy(), expected)
    assert made == []
    with pytest.raises(CaptureError, match=r"lengths must be a \(3,\) integer array on the same device"):
        layer(x, lengths=[5, 2, 3])


def tiny_step(seed=0, T=5, B=3, D=4, H=6, classes=3, backend_name="numpy", impl="auto", dropout=0.0, cell="lstm",
              clip=None):
    """A 1-layer bidirectional LSTM (or tanh RNN, or GRU) + readout + cross-entropy + Adam training step (with
    gradient clipping at ``clip``) with static inputs; returns (step, x, parameters)."""
    tg.set_backend(backend_name)
    tg.manual_seed(seed)
    rng = np.random.default_rng(seed)
    layer = {"lstm": nn.LSTM, "rnn": nn.RNN, "gru": nn.GRU}[cell](D, H, bidirectional=True, impl=impl)
    readout = nn.Linear(2 * H, classes)
    params = list(layer.parameters()) + list(readout.parameters())
    opt = optim.Adam(params, lr=1e-2)
    x = tg.Tensor(rng.standard_normal((T, B, D)).astype(np.float32))
    y = backend.to_backend(rng.integers(0, classes, size=(T, B)), backend_name)

    def step():
        opt.zero_grad()
        out, _ = layer(x)
        if dropout:
            out = F.dropout(out, dropout, True)
        loss = F.cross_entropy(readout(out), y)
        loss.backward()
        if clip is not None:
            optim.clip_grad_norm_(params, clip)
        opt.step()
        return loss

    return step, x, params


def test_captured_step_on_numpy_runs_the_step_and_says_why():
    step, _, params = tiny_step()
    captured = CapturedStep(step)
    assert captured.mode == "eager" and "numpy backend" in captured.reason
    before = params[0].numpy().copy()
    losses = [captured().item() for _ in range(3)]
    assert losses[2] < losses[0] and not np.array_equal(params[0].numpy(), before)
    assert "mode='eager'" in repr(captured)
    assert CapturedStep(step, enabled=False).reason == "capture disabled (enabled=False)"


# --- on a GPU (the ``gpu`` fixture of conftest.py skips, saying why, where none is usable) ------------------------
@pytest.mark.parametrize("name", list(layouts(np.random.default_rng(0))))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_our_cublas_equals_cupy_matmul(gpu, name, dtype):
    a, b = (gpu.asarray(x.astype(dtype)) for x in layouts(np.random.default_rng(0))[name])
    stream = gpu.cuda.Stream(non_blocking=True)
    blas = cuda_graph.Cublas(stream)
    with stream:
        got = blas.gemm(a, b)
        out = gpu.full(got.shape, np.nan, dtype=dtype)
        assert blas.gemm(a, b, out=out) is out
        strided_out = gpu.full(got.shape[:-1] + (2 * got.shape[-1],), np.nan, dtype=dtype)[..., ::2] if got.ndim else None
        if strided_out is not None:
            blas.gemm(a, b, out=strided_out)                # a non-contiguous out is filled through a copy
    stream.synchronize()
    expected = gpu.matmul(a, b).get()
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    for result in [got, out] + ([strided_out] if strided_out is not None else []):
        np.testing.assert_allclose(result.get(), expected, **tol)
    blas.close()


def test_our_cublas_hands_mixed_dtypes_to_cupy_and_refuses_them_in_a_capture(gpu):
    blas = cuda_graph.Cublas(gpu.cuda.Stream(non_blocking=True))
    a, b = gpu.ones((2, 2), np.float32), gpu.ones((2, 2), np.float64)
    np.testing.assert_array_equal(blas.gemm(a, b).get(), np.full((2, 2), 2.0))   # outside a capture: CuPy's matmul
    assert "float32 @ float64" in blas.unsupported                                  # ... and the capture is skipped
    blas.capturing = True
    with pytest.raises(CaptureError, match="float32 @ float64"):
        blas.gemm(a, b)
    blas.close()


@pytest.mark.parametrize("impl,cell,H,clip", [("batched", "lstm", 6, None), ("fused", "lstm", 6, None),
                                              ("batched", "lstm", 64, None), ("batched", "rnn", 64, None),
                                              ("auto", "gru", 16, None), ("auto", "lstm", 32, 0.5)])
def test_a_captured_step_equals_the_uncaptured_one(gpu, impl, cell, H, clip):
    """Six steps with new data each: losses and parameters of the graph replay match plain CuPy runs (H = 64:
    the captured batched layer cuts each step's product into four pieces, the plain one does not; GRU runs the
    fused layer; clipping scales the gradients on the device)."""
    plain, x_plain, p_plain = tiny_step(backend_name="cupy", impl=impl, cell=cell, H=H, clip=clip)
    graphed, x_graph, p_graph = tiny_step(backend_name="cupy", impl=impl, cell=cell, H=H, clip=clip)
    captured = CapturedStep(graphed)
    rng = np.random.default_rng(7)
    modes = []
    for _ in range(6):
        batch = gpu.asarray(rng.standard_normal(x_plain.shape).astype(np.float32))
        x_plain.data[...] = batch
        x_graph.data[...] = batch
        modes.append(captured.mode)
        loss_graph = captured().item()
        loss_plain = plain().item()
        assert loss_graph == pytest.approx(loss_plain, rel=1e-4)
    assert modes == ["warmup", "capture", "graph", "graph", "graph", "graph"] and captured.mode == "graph"
    for a, b in zip(p_graph, p_plain):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)


def test_a_captured_step_with_variable_lengths(gpu):
    """Padded batches: each call copies new inputs and new lengths (a device array) in; the graph's masks follow."""
    def make():
        tg.manual_seed(0)
        layer, readout = nn.LSTM(4, 32, bidirectional=True), nn.Linear(64, 3)
        opt = optim.Adam(list(layer.parameters()) + list(readout.parameters()), lr=1e-2)
        x = tg.Tensor(np.zeros((6, 3, 4), np.float32))
        lengths, y = gpu.full((3,), 6, dtype=np.int64), gpu.zeros((6, 3), dtype=np.int64)

        def step():
            opt.zero_grad()
            out, _ = layer(x, lengths=lengths)
            mask = (gpu.arange(6)[:, None] < lengths[None, :]).astype(np.float32)
            loss = F.cross_entropy(readout(out), y, mask=mask)
            loss.backward()
            opt.step()
            return loss
        return step, x, lengths, y, list(layer.parameters())

    tg.set_backend("cupy")
    plain, graphed = make(), make()
    captured = CapturedStep(graphed[0])
    rng = np.random.default_rng(5)
    for _ in range(5):
        batch = gpu.asarray(rng.standard_normal((6, 3, 4)).astype(np.float32))
        lengths = gpu.asarray(rng.integers(1, 7, size=3))
        targets = gpu.asarray(rng.integers(0, 3, size=(6, 3)))
        losses = []
        for step, x, lengths_buffer, y, _ in (plain, graphed):
            x.data[...], lengths_buffer[...], y[...] = batch, lengths, targets
            losses.append((captured if step is graphed[0] else step)().item())
        assert losses[1] == pytest.approx(losses[0], rel=1e-4)
    assert captured.mode == "graph"
    for a, b in zip(graphed[4], plain[4]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)


def test_a_step_that_cannot_be_captured_warns_and_stays_correct(gpu):
    """A host-to-device copy in the step: fine in the warm-up (an ordinary step), refused by the capture, after
    which the step runs uncaptured; no step is lost or run twice."""
    step, x, params = tiny_step(backend_name="cupy")

    def step_with_a_host_copy():
        return step() + tg.Tensor(np.zeros((), np.float32))

    reference, _, ref_params = tiny_step(backend_name="cupy")
    captured = CapturedStep(step_with_a_host_copy)
    losses = [captured().item()]
    with pytest.warns(RuntimeWarning, match=r"runs uncaptured \(CaptureError: a host array of shape \(\) is copied"):
        losses.append(captured().item())
    assert captured.mode == "eager"
    losses += [captured().item() for _ in range(2)]
    expected = [reference().item() for _ in range(4)]
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
    for a, b in zip(params, ref_params):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_dropout_cannot_be_captured_and_falls_back(gpu):
    step, _, _ = tiny_step(backend_name="cupy", dropout=0.5)
    captured = CapturedStep(step)
    captured()
    with pytest.warns(RuntimeWarning, match="runs uncaptured"):
        captured()
    assert captured.mode == "eager" and np.isfinite(captured().item())


def test_adam_on_the_gpu_equals_adam_on_numpy(gpu):
    rng = np.random.default_rng(3)
    p0, grads = rng.standard_normal((4, 5)), [rng.standard_normal((4, 5)) for _ in range(4)]
    results = []
    for name in ("numpy", "cupy"):
        tg.set_backend(name)
        p = tg.Tensor(p0, requires_grad=True)
        opt = optim.Adam([p], lr=0.1, weight_decay=0.01)
        for g in grads:
            p.grad = tg.Tensor(g)
            opt.step()
        results.append(p.numpy())
    np.testing.assert_allclose(results[1], results[0], rtol=1e-12, atol=1e-14)
