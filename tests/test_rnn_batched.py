"""The batched layer (``impl="bptt_batched"``, tinygrad_birnn/rnn/batched.py) and the step functions of
tinygrad_birnn/rnn/steps.py: equal to the per-direction layer, gradient-checked, and the CuPy kernels checked three ways.

* On the CPU the batched layer runs the NumPy step functions; it must equal the per-direction layer (``"bptt"``)
  to 1e-10 in float64.
* The kernels' exact CUDA bodies are compiled for the host with the C++ compiler (where one is installed) and
  run in place of CuPy: each cell's kernel path then equals its NumPy twin, and a whole layer running through
  the kernel path equals the fused layer. This checks the formulas and the argument passing without a GPU.
* With a GPU (the ``xp_backend`` fixture's cupy case, skipped elsewhere) the real kernels are compared with
  their NumPy twins, and the layer with the NumPy result (float32) and with the fused layer (float64).
"""
from __future__ import annotations

import ctypes
import functools
import shutil
import subprocess
import types

import numpy as np
import pytest

import tinygrad_birnn as tg
from tinygrad_birnn import backend, fast_rnn, nn, rnn
from tinygrad_birnn.rnn import batched, steps
from tinygrad_birnn.tensor import _topological_order

MODES = [("RNN", "tanh"), ("RNN", "relu"), ("LSTM", None), ("GRU", None)]
CASES = [  # (num_layers, bidirectional, batch_first, bias, hx given, lengths)
    (1, False, False, True, False, None),
    (1, True, False, True, True, [2, 5, 1, 4]),
    (2, True, True, False, True, [5, 3, 3, 1]),
    (2, False, False, True, True, [1, 2, 5, 4]),
    (2, True, False, True, False, None),
]


def make(mode, nonlinearity, *args, **kwargs):
    extra = {"nonlinearity": nonlinearity} if mode == "RNN" else {}
    return getattr(nn, mode)(*args, **extra, **kwargs)


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def outputs_and_grads(layer, x, hx, lengths, seed=1):
    """Forward, then backward of a random contraction of all outputs; host arrays of outputs and every gradient."""
    rng = np.random.default_rng(seed)
    xt = tg.Tensor(x, requires_grad=True)
    hxt = [tg.Tensor(h, requires_grad=True) for h in hx or []]
    out, state = layer(xt, (tuple(hxt) if len(hxt) == 2 else hxt[0]) if hxt else None, lengths=lengths)
    outs = [out] + (list(state) if isinstance(state, tuple) else [state])
    layer.zero_grad()
    sum((o * tg.Tensor(rng.standard_normal(o.shape).astype(x.dtype))).sum() for o in outs).backward()
    grads = {"x": xt.grad.numpy(), **{f"hx{i}": h.grad.numpy() for i, h in enumerate(hxt)}}
    grads.update({n: p.grad.numpy() for n, p in layer.named_parameters()})
    return [o.numpy() for o in outs], grads


def compare_impls(mode, nonlinearity, case, impls=("fused", "batched"), dtype=np.float64, backends=("numpy", "numpy")):
    """The largest relative error between two (implementation, backend) runs over outputs and gradients."""
    layers, bidirectional, batch_first, bias, given_hx, lengths = case
    T, B, I, H = 5, 4, 3, 4
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(dtype)
    D = 2 if bidirectional else 1
    hx = [rng.standard_normal((layers * D, B, H)).astype(dtype) for _ in range(2 if mode == "LSTM" else 1)] \
        if given_hx else None
    results = []
    for impl, name in zip(impls, backends):
        tg.set_backend(name)
        tg.manual_seed(0)
        layer = make(mode, nonlinearity, I, H, num_layers=layers, bidirectional=bidirectional,
                     batch_first=batch_first, bias=bias, impl=impl, dtype=dtype).to(name)
        results.append(outputs_and_grads(layer, x, hx, lengths))
    tg.set_backend("numpy")
    (out_a, g_a), (out_b, g_b) = results
    assert g_a.keys() == g_b.keys()
    return max([rel_err(a, b) for a, b in zip(out_a, out_b)] + [rel_err(g_a[k], g_b[k]) for k in g_a])


def force_split(patch, n):
    """Make every step's product split its inner dimension into n pieces (or the most that divide it), as on a
    GPU at large sizes, whatever the backend and size."""
    patch.setattr(batched, "split_k", lambda inner, a: next(s for s in (n, 2, 1) if inner % s == 0))


# --- on the CPU: the batched layer equals the fused one ------------------------------------------------------
@pytest.mark.parametrize("mode,nonlinearity", MODES)
@pytest.mark.parametrize("case", CASES)
def test_batched_equals_fused_in_float64(mode, nonlinearity, case):
    assert compare_impls(mode, nonlinearity, case) < 1e-10


@pytest.mark.parametrize("split", [2, 4])
@pytest.mark.parametrize("mode,nonlinearity", MODES)
@pytest.mark.parametrize("case", CASES[1:3])
def test_batched_with_split_products_equals_fused(monkeypatch, split, mode, nonlinearity, case):
    force_split(monkeypatch, split)
    assert compare_impls(mode, nonlinearity, case) < 1e-10


def test_split_k_cuts_only_routed_gpu_products_with_room(monkeypatch):
    assert batched.split_k(256, np.ones(1)) == 1                     # NumPy: never
    monkeypatch.setattr(batched, "is_cupy_array", lambda a: True)    # CuPy arrays ...
    assert batched.split_k(256, None) == 1                           # ... with CuPy's own matmul: never
    monkeypatch.setattr(backend, "_capture", types.SimpleNamespace(capturing=False))  # our cuBLAS handle
    assert [batched.split_k(k, None) for k in (1024, 64, 32, 24)] == [4, 4, 2, 1]
    product = batched.StepProduct(np, np.arange(2 * 8 * 3, dtype=float).reshape(2, 8, 3), batch=5, split=4)
    state = np.random.default_rng(0).standard_normal((5, 2, 8))        # (B, D, K), batch-major
    mm, w, out = product.call                                          # what the loops call
    parts = mm(state.swapaxes(0, 1), w, out=out)                       # given as the step's (D, B, K) view
    assert len(parts) == 4 and parts[0].shape == (2, 5, 3)
    expected = np.matmul(state.swapaxes(0, 1), np.arange(2 * 8 * 3, dtype=float).reshape(2, 8, 3))
    np.testing.assert_allclose(sum(parts), expected, rtol=1e-12)


def test_batched_is_an_implementation_choice():
    layer = nn.LSTM(3, 4, bidirectional=True, impl="batched")
    assert "impl='batched'" in repr(layer) and rnn.IMPLEMENTATIONS["batched"] is fast_rnn.batched_layer
    x = tg.Tensor(np.ones((3, 2, 3), dtype=np.float32), requires_grad=True)
    out, (h, c) = layer(x, lengths=[3, 2])
    assert out.shape == (3, 2, 8) and h.shape == c.shape == (2, 2, 4) and out.dtype == np.float32
    assert "lstm_layer_batched" in {node.prim.name for node in _topological_order(out._node)}


# --- gradient checks of the primitives ---------------------------------------------------------------------------
def gradcheck_layer(mode, D, bias, lengths, nonlinearity="tanh", T=3, B=2, I=2, H=2):
    rng = np.random.default_rng(0)
    G, n_states = rnn.GATES[mode], 2 if mode == "LSTM" else 1
    inputs = [rng.standard_normal((T, B, I))] + [rng.standard_normal((D, B, H)) * 0.5 for _ in range(n_states)]
    for _ in range(D):
        inputs += [rng.uniform(-0.7, 0.7, (G * H, I)), rng.uniform(-0.7, 0.7, (G * H, H))]
        inputs += [rng.uniform(-0.7, 0.7, G * H), rng.uniform(-0.7, 0.7, G * H)] if bias else []
    mask = None if lengths is None else rnn.lengths_mask(np.array(lengths), T, np)
    per_dir = 4 if bias else 2

    def f(x, *rest):
        states, weights = rest[:n_states], rest[n_states:]
        hx = tuple(states) if mode == "LSTM" else states[0]
        groups = [weights[d * per_dir:(d + 1) * per_dir] for d in range(D)]
        out, state = batched.batched_layer(mode, x, hx, groups, mask, nonlinearity)
        flat = [out] + (list(state) if isinstance(state, tuple) else [state])
        return tg.concatenate([t.reshape(-1) for t in flat])

    assert tg.gradcheck(f, inputs, atol=1e-7, rtol=1e-6)


GRAD_CASES = [(1, True, None), (2, True, None), (2, False, [3, 1]), (1, True, [1, 2]), (2, True, [1, 2])]


@pytest.mark.primitive("rnn_layer_batched")
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("D,bias,lengths", GRAD_CASES)
def test_gradcheck_rnn_layer_batched(D, bias, lengths, nonlinearity):
    gradcheck_layer("RNN", D, bias, lengths, nonlinearity)


@pytest.mark.primitive("lstm_layer_batched")
@pytest.mark.parametrize("D,bias,lengths", GRAD_CASES)
def test_gradcheck_lstm_layer_batched(D, bias, lengths):
    gradcheck_layer("LSTM", D, bias, lengths)


@pytest.mark.primitive("gru_layer_batched")
@pytest.mark.parametrize("D,bias,lengths", GRAD_CASES)
def test_gradcheck_gru_layer_batched(D, bias, lengths):
    gradcheck_layer("GRU", D, bias, lengths)


# --- the kernels: random inputs for each step function -----------------------------------------------------------
def cell_cases(dtype, masked, seed=0):
    """(kernel name, step function, its arguments, paths to its outputs) for every step, shapes (D, B, G*H).

    The arguments follow the step functions' order: forward (z, pre, prev, mask, saved, new), backward
    (dh_next, carry, g, saved, prev, new, mask, delta, delta_input, carry_out); a path is an argument's index,
    then the index inside a tuple argument. The NumPy body of a backward step reads ``saved`` as the cell's
    prepare_backward extends it (see numpy_args)."""
    rng = np.random.default_rng(seed)
    D, B, H = 2, 5, 3

    def r(*shape):
        return rng.standard_normal(shape).astype(dtype)

    def empty(*shape):
        return np.full(shape, np.nan, dtype=dtype)  # an entry the step forgets to write stays NaN

    def sig(*shape):
        return (1 / (1 + np.exp(-r(*shape)))).astype(dtype)

    mask = rng.random((D, B, 1)) < 0.5 if masked else None
    cases = []
    for act in ("tanh", "relu"):
        h = np.tanh(r(D, B, H)) if act == "tanh" else np.maximum(r(D, B, H), 0)
        cases.append((f"rnn_forward_{act}", functools.partial(steps.rnn_step_forward, nonlinearity=act),
                      [r(D, B, H), r(D, B, H), (r(D, B, H),), mask, (), (empty(D, B, H),)], [(5, 0)]))
        cases.append((f"rnn_backward_{act}", functools.partial(steps.rnn_step_backward, nonlinearity=act),
                      [r(D, B, H), (r(D, B, H),), r(D, B, H), (), (r(D, B, H),), (h,), mask, empty(D, B, H), None,
                       (empty(D, B, H),)], [(7,), (9, 0)]))
    cases.append(("lstm_forward", steps.lstm_step_forward,
                  [r(D, B, 4 * H), r(D, B, 4 * H), (r(D, B, H), r(D, B, H)), mask, (empty(D, B, 4 * H),
                   empty(D, B, H)), (empty(D, B, H), empty(D, B, H))], [(4, 0), (4, 1), (5, 0), (5, 1)]))
    gates = np.concatenate([sig(D, B, H), sig(D, B, H), np.tanh(r(D, B, H)), sig(D, B, H)], axis=-1)
    cases.append(("lstm_backward", steps.lstm_step_backward,
                  [r(D, B, H), (r(D, B, H), r(D, B, H)), r(D, B, H), (gates, np.tanh(r(D, B, H))),
                   (r(D, B, H), r(D, B, H)), (r(D, B, H), r(D, B, H)), mask, empty(D, B, 4 * H), None,
                   (empty(D, B, H), empty(D, B, H))], [(7,), (9, 0), (9, 1)]))
    for bias_hh in (0, r(D, 1, 3 * H)):
        cases.append(("gru_forward", functools.partial(steps.gru_step_forward, bias_hh=bias_hh),
                      [r(D, B, 3 * H), r(D, B, 3 * H), (r(D, B, H),), mask, (empty(D, B, 3 * H), empty(D, B, H)),
                       (empty(D, B, H),)], [(4, 0), (4, 1), (5, 0)]))
    gates = np.concatenate([sig(D, B, H), sig(D, B, H), np.tanh(r(D, B, H))], axis=-1)
    cases.append(("gru_backward", steps.gru_step_backward,
                  [r(D, B, H), (r(D, B, H),), r(D, B, H), (gates, r(D, B, H)), (r(D, B, H),), (r(D, B, H),), mask,
                   empty(D, B, 3 * H), empty(D, B, H), (empty(D, B, H),)], [(7,), (8,), (9, 0)]))
    split_cases = []
    for name, cell, args, outs in cases:                   # the same steps, the product in 2 and 4 partial sums
        for n in (2, 4):
            pieces = [r(*args[0].shape) for _ in range(n - 1)]
            split_cases.append((f"{name}_split{n}", cell, [[args[0] - sum(pieces)] + pieces] + args[1:], outs))
    return cases + split_cases


def numpy_args(name, args):
    """The arguments as the NumPy body of step ``name`` reads them: a backward step's ``saved`` prepared."""
    if "backward" not in name:
        return args
    cell = steps.CELLS[name.split("_")[0].upper()]
    params = {"nonlinearity": "relu" if "relu" in name else "tanh"} if cell.name == "RNN" else {}
    return args[:3] + [cell.prepare_backward(args[3], args[4], args[5], args[6], **params)] + args[4:]


def copy_args(args):
    """A copy of every array in the arguments, tuples and partial-sum lists included."""
    if isinstance(args, (list, tuple)):
        return type(args)(copy_args(a) for a in args)
    return args.copy() if isinstance(args, np.ndarray) else args


def output(args, path):
    return args[path[0]] if len(path) == 1 else args[path[0]][path[1]]


def tolerances(dtype):
    """Room for a few ulp of libm/CUDA tanh and fused multiply-adds; a wrong formula is off by O(1)."""
    return dict(rtol=1e-12, atol=1e-14) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)


# --- the kernels' CUDA bodies, compiled for the host and run in place of CuPy ----------------------------------
class HostKernel:
    """An ElementwiseKernel body run on the CPU with CuPy's calling convention: inputs then outputs, broadcast
    to the outputs' shape, every T argument of one dtype, Python scalars allowed for inputs."""

    def __init__(self, lib, name, in_params, out_params):
        self.lib, self.name = lib, name
        self.types = [p.split()[0] for p in (in_params + ", " + out_params).split(",")]
        self.n_in = len(in_params.split(","))

    def __call__(self, *args):
        assert len(args) == len(self.types), f"{self.name}: {len(args)} arguments for {len(self.types)} parameters"
        outs = args[self.n_in:]
        dtype, shape = outs[0].dtype, outs[0].shape
        assert all(o.shape == shape for o in outs), "CuPy: Out shape is mismatched"
        arrays = []
        for a, typ in zip(args, self.types):
            if isinstance(a, np.ndarray):
                assert a.dtype == (np.dtype(bool) if typ == "bool" else dtype), f"{self.name}: type mismatch"
            arrays.append(np.ascontiguousarray(np.broadcast_to(np.asarray(a, bool if typ == "bool" else dtype), shape)))
        fn = getattr(self.lib, f"run_{self.name}_{'float' if dtype == np.float32 else 'double'}")
        fn(ctypes.c_long(int(np.prod(shape))), *[a.ctypes.data_as(ctypes.c_void_p) for a in arrays])
        for o, a in zip(outs, arrays[self.n_in:]):
            o[...] = a


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory):
    """steps.KERNEL_SOURCES compiled for the host (float and double), as HostKernels by name."""
    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        pytest.skip("no C++ compiler to run the kernel bodies on the host")
    parts = ["#include <cmath>\n#define __device__\nusing std::tanh;"]
    for name, (in_params, out_params, body) in steps.KERNEL_SOURCES.items():
        params = [p.split() for p in (in_params + ", " + out_params).split(",")]
        for ctype in ("float", "double"):
            args = [f"{'const ' if k < len(in_params.split(',')) else ''}{'bool' if t == 'bool' else 'T'}* _raw_{n}"
                    for k, (t, n) in enumerate(params)]
            binds = [f"{a.replace('* _raw_', ' &')} = _raw_{n}[idx];" for a, (_, n) in zip(args, params)]
            parts.append(f"namespace {name}_{ctype} {{ typedef {ctype} T; {steps.KERNEL_PREAMBLE}\n"
                         f'extern "C" void run_{name}_{ctype}(long n, {", ".join(args)}) {{\n'
                         f"  for (long idx = 0; idx < n; ++idx) {{ {' '.join(binds)} {body} }}\n}} }}")
    folder = tmp_path_factory.mktemp("kernels")
    (folder / "kernels.cpp").write_text("\n".join(parts))
    subprocess.run([compiler, "-O1", "-std=c++17", "-shared", "-fPIC", "-o", str(folder / "kernels.so"),
                    str(folder / "kernels.cpp")], check=True, capture_output=True)
    lib = ctypes.CDLL(str(folder / "kernels.so"))
    return {name: HostKernel(lib, name, i, o) for name, (i, o, _) in steps.KERNEL_SOURCES.items()}


def route_to_host(patch, host_kernels):
    """The step functions take their CuPy path for NumPy arrays, and that path runs the host-compiled kernels."""
    patch.setattr(steps, "is_cupy_array", lambda a: True)
    patch.setattr(steps, "kernel", host_kernels.__getitem__)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("masked", [False, True])
def test_kernel_bodies_equal_their_numpy_twins_on_the_host(host_kernels, monkeypatch, dtype, masked):
    for name, cell, args, outs in cell_cases(dtype, masked):
        expected = copy_args(args)
        expected[0] = args[0] if isinstance(args[0], np.ndarray) else sum(args[0])  # NumPy twin, the product whole
        cell(*numpy_args(name, expected))
        with monkeypatch.context() as patch:
            route_to_host(patch, host_kernels)
            cell(*args)
        for k in outs:
            assert not np.isnan(output(args, k)).any(), name
            np.testing.assert_allclose(output(args, k), output(expected, k), err_msg=name, **tolerances(dtype))


@pytest.mark.parametrize("split", [1, 4])
@pytest.mark.parametrize("mode,nonlinearity", MODES)
@pytest.mark.parametrize("case", CASES[1:4])
def test_a_layer_through_the_host_kernels_equals_fused(host_kernels, monkeypatch, split, mode, nonlinearity, case):
    route_to_host(monkeypatch, host_kernels)
    force_split(monkeypatch, split)
    assert compare_impls(mode, nonlinearity, case) < 1e-10


@pytest.mark.parametrize("mode,nonlinearity", MODES)
@pytest.mark.parametrize("case", CASES[:4])
def test_the_per_direction_layer_through_the_host_kernels_equals_autograd(host_kernels, monkeypatch, mode,
                                                                           nonlinearity, case):
    """impl="bptt" on a GPU runs the same kernels, one direction at a time (on reversed views for the backward
    chain); the step-by-step layer does not use them, so it is the reference."""
    route_to_host(monkeypatch, host_kernels)
    assert compare_impls(mode, nonlinearity, case, ("autograd", "bptt")) < 1e-10


# --- on a GPU (the cupy case; skipped where no GPU is usable) -----------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("masked", [False, True])
def test_cupy_kernels_equal_their_numpy_twins(xp_backend, dtype, masked):
    if backend.backend_name(xp_backend) == "numpy":
        pytest.skip("compares the CuPy kernels with NumPy")
    def to_gpu(a):
        if isinstance(a, (list, tuple)):
            return type(a)(to_gpu(v) for v in a)
        return xp_backend.asarray(a) if isinstance(a, np.ndarray) else a

    for name, cell, args, outs in cell_cases(dtype, masked):
        on_gpu = to_gpu(args)
        cell(*on_gpu)
        cell(*numpy_args(name, args))
        for k in outs:
            np.testing.assert_allclose(backend.to_numpy(output(on_gpu, k)), output(args, k), err_msg=name,
                                       **tolerances(dtype))


@pytest.mark.parametrize("mode,nonlinearity", MODES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("split", [1, 4])
def test_batched_on_every_backend(xp_backend, monkeypatch, split, mode, nonlinearity, case):
    """float64: batched == fused on this backend to 1e-10; float32: batched here == batched on NumPy to 1e-4."""
    force_split(monkeypatch, split)
    name = backend.backend_name(xp_backend)
    assert compare_impls(mode, nonlinearity, case, backends=(name, name)) < 1e-10
    assert compare_impls(mode, nonlinearity, case, ("batched", "batched"), np.float32, ("numpy", name)) < 1e-4
