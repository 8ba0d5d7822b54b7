"""SGD (plain, momentum, Nesterov, weight decay), Adam (with and without weight decay) and clip_grad_norm_:
against updates written out in NumPy here, and against torch.optim on the same parameters and gradients."""
from __future__ import annotations

import numpy as np
import pytest

from tinygrad_birnn import Tensor, backend, nn, optim

STEPS = 5


def make_problem(seed=0, shapes=((3, 2), (4,))):
    """Initial parameters and a fixed sequence of gradients, one list per step."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(STEPS)]
    return params, grads


def run_ours(make_optimizer, params, grads):
    tensors = [nn.Parameter(p.copy()) for p in params]
    opt = make_optimizer(tensors)
    history = []
    for step_grads in grads:
        for t, g in zip(tensors, step_grads):
            t.grad = Tensor(g.copy())
        opt.step()
        history.append([t.numpy() for t in tensors])
    return history


# --- the update rules, written out ---------------------------------------------------------------------------------------
def sgd_by_hand(params, grads, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
    params = [p.copy() for p in params]
    velocity = [None] * len(params)
    history = []
    for step_grads in grads:
        for i, g in enumerate(step_grads):
            d = g + weight_decay * params[i]
            if momentum:
                velocity[i] = d.copy() if velocity[i] is None else momentum * velocity[i] + d
                d = d + momentum * velocity[i] if nesterov else velocity[i]
            params[i] = params[i] - lr * d
        history.append([p.copy() for p in params])
    return history


def adam_by_hand(params, grads, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    b1, b2 = betas
    params = [p.copy() for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    history = []
    for t, step_grads in enumerate(grads, start=1):
        for i, g in enumerate(step_grads):
            g = g + weight_decay * params[i]
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            m_hat, v_hat = m[i] / (1 - b1**t), v[i] / (1 - b2**t)
            params[i] = params[i] - lr * m_hat / (np.sqrt(v_hat) + eps)
        history.append([p.copy() for p in params])
    return history


SGD_CONFIGS = {
    "plain": {"lr": 0.1},
    "momentum": {"lr": 0.1, "momentum": 0.9},
    "nesterov": {"lr": 0.05, "momentum": 0.8, "nesterov": True},
    "weight decay": {"lr": 0.1, "weight_decay": 0.01},
    "momentum and weight decay": {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.05},
    "nesterov and weight decay": {"lr": 0.1, "momentum": 0.5, "nesterov": True, "weight_decay": 0.1},
}
ADAM_CONFIGS = {
    "default": {"lr": 1e-3},
    "custom betas and eps": {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-6},
    "weight decay": {"lr": 0.01, "weight_decay": 0.1},
}


def assert_histories_equal(ours, reference, rtol):
    for step, (a, b) in enumerate(zip(ours, reference)):
        for i, (x, y) in enumerate(zip(a, b)):
            np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-15, err_msg=f"step {step}, parameter {i}")


@pytest.mark.parametrize("config", sorted(SGD_CONFIGS))
def test_sgd_matches_the_update_written_out(config):
    params, grads = make_problem()
    kwargs = SGD_CONFIGS[config]
    ours = run_ours(lambda ps: optim.SGD(ps, **kwargs), params, grads)
    assert_histories_equal(ours, sgd_by_hand(params, grads, **kwargs), rtol=1e-14)


def test_sgd_first_steps_by_hand():
    p = nn.Parameter(np.array([1.0, -2.0]))
    opt = optim.SGD([p], lr=0.5, momentum=0.9)
    p.grad = Tensor(np.array([0.2, 0.4]))
    opt.step()  # v = g; p -= lr v
    np.testing.assert_allclose(p.numpy(), [0.9, -2.2], rtol=1e-15)
    opt.step()  # v = 0.9 g + g = 1.9 g
    np.testing.assert_allclose(p.numpy(), [0.9 - 0.5 * 0.38, -2.2 - 0.5 * 0.76], rtol=1e-15)


@pytest.mark.parametrize("config", sorted(ADAM_CONFIGS))
def test_adam_matches_the_update_written_out(config):
    params, grads = make_problem(1)
    kwargs = ADAM_CONFIGS[config]
    ours = run_ours(lambda ps: optim.Adam(ps, **kwargs), params, grads)
    assert_histories_equal(ours, adam_by_hand(params, grads, **kwargs), rtol=1e-13)


def test_adam_first_step_moves_each_weight_by_about_lr():
    p = nn.Parameter(np.array([1.0, 1.0, 1.0]))
    g = np.array([1e-3, -5.0, 100.0])
    p.grad = Tensor(g)
    optim.Adam([p], lr=0.01).step()  # m_hat = g, v_hat = g^2: the step is lr * g / (|g| + eps)
    np.testing.assert_allclose(p.numpy(), 1.0 - 0.01 * g / (np.abs(g) + 1e-8), rtol=1e-14)
    np.testing.assert_allclose(p.numpy(), 1.0 - 0.01 * np.sign(g), rtol=1e-6)  # about lr, whatever |g|


@pytest.mark.parametrize("name, config",
                         [("SGD", c) for c in sorted(SGD_CONFIGS)] + [("Adam", c) for c in sorted(ADAM_CONFIGS)])
def test_optimizers_match_torch(name, config):
    torch = pytest.importorskip("torch")
    kwargs = (SGD_CONFIGS if name == "SGD" else ADAM_CONFIGS)[config]
    params, grads = make_problem(2)
    ours = run_ours(lambda ps: getattr(optim, name)(ps, **kwargs), params, grads)
    tensors = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    opt = getattr(torch.optim, name)(tensors, **kwargs)
    for step, step_grads in enumerate(grads):
        for t, g in zip(tensors, step_grads):
            t.grad = torch.tensor(g.copy())
        opt.step()
        for i, t in enumerate(tensors):
            np.testing.assert_allclose(ours[step][i], t.detach().numpy(), rtol=1e-12, atol=1e-15,
                                       err_msg=f"{name} {config}: step {step}, parameter {i}")


def test_a_parameter_without_gradient_is_skipped():
    a, b = nn.Parameter(np.array([1.0])), nn.Parameter(np.array([2.0]))
    opt = optim.Adam([a, b], lr=0.1)
    a.grad = Tensor(np.array([1.0]))
    opt.step()
    assert b.numpy()[0] == 2.0 and opt.state[1] == {} and opt.state[0]["step"] == 1
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_steps_keep_float32_parameters_float32():
    for opt_class, kwargs in [(optim.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.1}),
                              (optim.Adam, {"weight_decay": 0.1})]:
        p = nn.Parameter([1.0, 2.0])
        opt = opt_class([p], **kwargs)
        for _ in range(2):
            p.grad = Tensor([0.5, -0.5])
            opt.step()
        assert p.dtype == np.float32


def test_optimizer_argument_errors():
    p = nn.Parameter([1.0])
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="parameter 1 must be a Tensor with requires_grad=True; got Tensor"):
        optim.SGD([p, Tensor([1.0])], lr=0.1)
    with pytest.raises(TypeError, match="parameter 0 must be a Tensor .*got ndarray"):
        optim.Adam([np.ones(2)])
    with pytest.raises(ValueError, match="learning rate must be >= 0; got -1"):
        optim.SGD([p], lr=-1)
    with pytest.raises(ValueError, match="nesterov momentum needs momentum > 0"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match=r"betas must lie in \[0, 1\); got \(0.9, 1.0\)"):
        optim.Adam([p], betas=(0.9, 1.0))


# --- clip_grad_norm_ ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("max_norm", [0.5, 3.0, 1e6])
def test_clip_grad_norm_matches_torch(max_norm):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    grads = [rng.standard_normal((3, 2)), rng.standard_normal(5)]
    ours = [nn.Parameter(np.zeros_like(g)) for g in grads]
    for p, g in zip(ours, grads):
        p.grad = Tensor(g.copy())
    theirs = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for t, g in zip(theirs, grads):
        t.grad = torch.tensor(g.copy())
    norm = optim.clip_grad_norm_(ours, max_norm)
    ref = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    assert norm.item() == pytest.approx(ref.item(), rel=1e-14)
    assert norm.item() == pytest.approx(np.sqrt(sum((g**2).sum() for g in grads)), rel=1e-14)
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.grad.numpy(), t.grad.numpy(), rtol=1e-14)
    clipped = np.sqrt(sum((p.grad.numpy() ** 2).sum() for p in ours))
    assert clipped <= max_norm * (1 + 1e-12)


def test_clip_grad_norm_by_hand_keeps_dtype_and_ignores_missing_gradients():
    p = nn.Parameter([3.0, 4.0])  # float32
    p.grad = Tensor([3.0, 4.0])
    q = nn.Parameter([1.0])  # no gradient: ignored
    norm = optim.clip_grad_norm_([p, q], 1.0)
    assert norm.item() == pytest.approx(5.0)
    assert p.grad.dtype == np.float32
    np.testing.assert_allclose(p.grad.numpy(), [3.0 / (5.0 + 1e-6), 4.0 / (5.0 + 1e-6)], rtol=1e-6)
    assert optim.clip_grad_norm_([q], 1.0).item() == 0.0  # as PyTorch: no gradient, nothing to clip
    with pytest.raises(ValueError, match="max_norm must be >= 0"):
        optim.clip_grad_norm_([p], float("nan"))


def test_optimizer_steps_keep_arrays_on_the_device(xp_backend):
    name = backend.backend_name()
    params, grads = make_problem(3)
    for opt_class, kwargs, by_hand in [(optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}, sgd_by_hand),
                                       (optim.Adam, {"lr": 0.01, "weight_decay": 0.1}, adam_by_hand)]:
        tensors = [nn.Parameter(p.copy()) for p in params]
        opt = opt_class(tensors, **kwargs)
        for step_grads in grads:
            for t, g in zip(tensors, step_grads):
                t.grad = Tensor(g.copy())
            optim.clip_grad_norm_(tensors, 1e9)
            opt.step()
        for t in tensors:
            assert t.device == name and t.grad.device == name
        for state in opt.state:
            for value in state.values():
                if hasattr(value, "shape"):
                    assert backend.xp_of(value) is xp_backend
        for t, expected in zip(tensors, by_hand(params, grads, **kwargs)[-1]):
            np.testing.assert_allclose(t.numpy(), expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype,ctype", [(np.float32, "float"), (np.float64, "double")])
def test_adam_gpu_kernel_body_equals_the_numpy_update_on_the_host(tmp_path, dtype, ctype):
    """The CUDA body of Adam's fused kernel (optim._ADAM_SOURCE), compiled for the CPU, equals Adam on NumPy.

    The step count enters as a float64 scalar, as on the GPU, where it lives in a 0-d device array."""
    import ctypes
    import shutil
    import subprocess

    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        pytest.skip("no C++ compiler to run the kernel body on the host")
    in_params, out_params, body = optim._ADAM_SOURCE
    assert in_params.startswith("T g, float64 t") and out_params == "T p, T m, T v"
    source = (f"#include <cmath>\nusing std::pow; using std::sqrt; typedef {ctype} T;\n"
              'extern "C" void adam(long n, const T* g_, double t, double lr, double b1, double b2, double eps,'
              " T* p_, T* m_, T* v_) {\n  for (long i = 0; i < n; ++i) { const T& g = g_[i]; T& p = p_[i];"
              f" T& m = m_[i]; T& v = v_[i]; {body} }}\n}}\n")
    (tmp_path / "adam.cpp").write_text(source)
    subprocess.run([compiler, "-O1", "-shared", "-fPIC", "-o", str(tmp_path / "adam.so"), str(tmp_path / "adam.cpp")],
                   check=True, capture_output=True)
    kernel = ctypes.CDLL(str(tmp_path / "adam.so")).adam
    params, grads = make_problem(shapes=((7, 3),))
    lr, betas, eps = 0.05, (0.8, 0.99), 1e-6
    expected = run_ours(lambda ps: optim.Adam(ps, lr=lr, betas=betas, eps=eps), [params[0].astype(dtype)],
                        [[g[0].astype(dtype)] for g in grads])
    p, m, v = params[0].astype(dtype), np.zeros((7, 3), dtype), np.zeros((7, 3), dtype)
    ptr = lambda a: a.ctypes.data_as(ctypes.c_void_p)  # noqa: E731
    for t, step_grads in enumerate(grads, start=1):
        g = np.ascontiguousarray(step_grads[0].astype(dtype))
        kernel(ctypes.c_long(p.size), ptr(g), ctypes.c_double(t), ctypes.c_double(lr), ctypes.c_double(betas[0]),
               ctypes.c_double(betas[1]), ctypes.c_double(eps), ptr(p), ptr(m), ptr(v))
        np.testing.assert_allclose(p, expected[t - 1][0], rtol=1e-5 if dtype == np.float32 else 1e-13)


# --- all parameters updated at once (one update() on their concatenation) ------------------------------------
def _twins(make_optimizer, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(3, 4), (4,), (2, 2, 2), ()]
    values = [rng.standard_normal(s) for s in shapes]
    together = [nn.Parameter(v.copy(), dtype=np.float64) for v in values]
    one_by_one = [nn.Parameter(v.copy(), dtype=np.float64) for v in values]
    a, b = make_optimizer(together), make_optimizer(one_by_one)
    b._update_together = lambda live: False  # the per-parameter loop
    return together, one_by_one, a, b


@pytest.mark.parametrize("make_optimizer", [
    lambda ps: optim.Adam(ps, lr=0.1),
    lambda ps: optim.Adam(ps, lr=0.05, betas=(0.5, 0.9), weight_decay=0.1),
    lambda ps: optim.SGD(ps, lr=0.1),
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
])
def test_updating_all_parameters_at_once_is_the_per_parameter_rule_to_the_bit(make_optimizer):
    together, one_by_one, a, b = _twins(make_optimizer)
    rng = np.random.default_rng(1)
    for step in range(7):
        skipped = 1 if step in (3, 4) else None  # a parameter without a gradient for two steps
        for i, (p, q) in enumerate(zip(together, one_by_one)):
            g = rng.standard_normal(p.shape)
            p.grad = None if i == skipped else Tensor(g.copy())
            q.grad = None if i == skipped else Tensor(g.copy())
        a.step()
        b.step()
        for p, q in zip(together, one_by_one):
            np.testing.assert_array_equal(p.numpy(), q.numpy())
        for sa, sb in zip(a.state, b.state):
            assert sa.keys() == sb.keys()
            for key in sa:
                np.testing.assert_array_equal(sa[key], sb[key])


def test_updating_at_once_is_taken_and_keeps_each_parameters_state_a_view():
    together, _, a, _ = _twins(lambda ps: optim.Adam(ps, lr=0.1))
    calls = []
    original = a.update
    a.update = lambda p, g, state: (calls.append(p.shape), original(p, g, state))
    for p in together:
        p.grad = Tensor(np.ones(p.shape))
    a.step()
    assert calls == [(12 + 4 + 8 + 1,)]  # one call, on the concatenation
    versions = [p._version for p in together]
    a.step()
    assert [p._version for p in together] == [v + 1 for v in versions]  # every parameter counted as changed
    assert all(st["m"].shape == p.shape and st["step"] == 2 for st, p in zip(a.state, together))
