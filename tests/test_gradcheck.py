"""``gradcheck`` itself: it passes correct gradients, names the input and element of a wrong one, handles several
inputs and any output shape, samples large inputs, and its dot-product test catches errors on its own."""
from __future__ import annotations

import numpy as np
import pytest

import tinygrad_birnn as tg
from tinygrad_birnn import GradcheckError, Tensor, backend, gradcheck
from tinygrad_birnn.ops import Primitive
from tinygrad_birnn.tensor import apply


def square_with_vjp(vjp):
    """x**2 through a primitive of our own (not registered, so the registry test does not see it)."""
    prim = Primitive("square_under_test", lambda x: x * x, vjp, "d x^2 = 2 g x")
    return lambda x: apply(prim, x)


def test_passes_on_correct_functions_with_several_inputs_and_non_scalar_outputs(rng):
    a, b, c = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal(2)
    assert gradcheck(lambda a, b, c: (a @ b + c).tanh(), [a, b, c]) is True  # output (3, 2)
    assert gradcheck(lambda a, b, c: (a @ b * c).sum(), [a, b, c]) is True  # scalar output
    assert gradcheck(lambda a: a[:, None, :] * a[None], [a]) is True  # output (3, 3, 4)
    assert gradcheck(square_with_vjp(lambda g, ans, x: (2 * g * x,)), [a])


def test_inputs_may_be_tensors_or_arrays_and_are_checked_in_float64(rng):
    seen = []

    def f(x, y):
        seen.append((x.dtype, y.dtype))
        return x * y

    x32 = Tensor(rng.standard_normal(3).astype(np.float32))
    assert gradcheck(f, [x32, [1.0, 2.0, 3.0]])
    assert set(seen) == {(np.dtype(np.float64), np.dtype(np.float64))}
    assert x32.dtype == np.float32 and x32.grad is None  # the caller's tensor is left alone


def test_a_wrong_gradient_raises_a_helpful_error(rng):
    def vjp_wrong_at_one_element(g, ans, x):
        out = 2 * g * x
        out[1, 2] = 0.0
        return (out,)

    x = rng.standard_normal((2, 4))
    message = (r"input 0, element \(1, 2\): analytic gradient 0 differs from the central difference -?\d+\.\d+ "
               r"\(\|diff\| .* > atol 1e-06 \+ rtol 1e-05 \* \|numeric\|\)")
    with pytest.raises(GradcheckError, match=message):
        gradcheck(square_with_vjp(vjp_wrong_at_one_element), [x])


def test_the_error_names_the_input_that_is_wrong(rng):
    prim = Primitive("mul_wrong_b", lambda a, b: a * b, lambda g, ans, a, b: (g * b, g * b), "wrong for b")
    with pytest.raises(GradcheckError, match=r"input 1, element \(0,\)"):
        gradcheck(lambda a, b: apply(prim, a, b), [rng.standard_normal(3), rng.standard_normal(3)])


def test_a_missing_gradient_path_is_caught(rng):
    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(lambda x: x.detach() * x, [rng.standard_normal(3)])  # detach hides half the gradient


def test_the_dot_product_test_alone_catches_a_wrong_gradient(rng):
    wrong = square_with_vjp(lambda g, ans, x: (2.01 * g * x,))
    with pytest.raises(GradcheckError, match=r"dot-product test failed: <grad, u> = .* but the directional difference is"):
        gradcheck(wrong, [rng.standard_normal(5)], max_elements=0)


def test_tolerances_are_honoured(rng):
    slightly_wrong = square_with_vjp(lambda g, ans, x: (2 * (1 + 1e-3) * g * x,))
    x = rng.uniform(0.5, 1.0, 4)
    with pytest.raises(GradcheckError):
        gradcheck(slightly_wrong, [x])
    assert gradcheck(slightly_wrong, [x], rtol=1e-2, atol=1e-3)


def test_large_inputs_are_sampled(rng):
    calls = []

    def f(x):
        calls.append(1)
        return (x * x).sum()

    assert gradcheck(f, [rng.standard_normal(1000)], max_elements=10)
    assert len(calls) == 1 + 2 * 10 + 2  # the graph, two evaluations per sampled element, the dot-product test


def test_functions_that_ignore_an_input_or_return_constants_pass(rng):
    assert gradcheck(lambda x, y: x * 2.0, [rng.standard_normal(2), rng.standard_normal(3)])
    assert gradcheck(lambda x: Tensor(np.ones(2)), [rng.standard_normal(2)])


def test_f_must_return_a_tensor(rng):
    with pytest.raises(TypeError, match="gradcheck: f must return a Tensor; got ndarray"):
        gradcheck(lambda x: x.numpy(), [rng.standard_normal(2)])


def test_gradcheck_error_is_an_assertion_error():
    assert issubclass(GradcheckError, AssertionError)
    assert tg.GradcheckError is GradcheckError and tg.gradcheck is gradcheck


def test_gradcheck_runs_on_the_current_backend(xp_backend):
    devices = []

    def f(x, w):
        devices.append(x.device)
        return (x @ w).sigmoid()

    rng = np.random.default_rng(0)
    assert gradcheck(f, [rng.standard_normal((2, 3)), rng.standard_normal((3, 2))])
    assert set(devices) == {backend.backend_name()}
    with pytest.raises(GradcheckError):
        gradcheck(square_with_vjp(lambda g, ans, x: (g * x,)), [rng.standard_normal(3)])
