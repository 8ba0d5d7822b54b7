"""``Tensor`` and ``backward``: accumulation as in PyTorch, retain_graph, no_grad, detach, retain_grad, deep
graphs, dtypes, the composed operators, and every user error with its message (and no state changed)."""
from __future__ import annotations

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

import tinygrad_birnn as tg
from tinygrad_birnn import Tensor, backend, gradcheck, nn, no_grad
from tinygrad_birnn.tensor import _topological_order


def leaf(values, dtype=np.float64):
    return Tensor(np.array(values, dtype=dtype), requires_grad=True)


# --- accumulation, retain_graph, no_grad, detach, retain_grad ----------------------------------------------------
def test_gradients_accumulate_over_backward_calls():
    x = leaf([1.0, -2.0, 3.0])
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, -4.0, 6.0])
    (x * x).sum().backward()  # a second graph: its gradient adds to the first, as in PyTorch
    np.testing.assert_array_equal(x.grad.numpy(), [4.0, -8.0, 12.0])
    x.grad = None
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0, 3.0])


def test_retain_graph_allows_a_second_backward_and_without_it_a_second_backward_raises():
    x = leaf([1.0, 2.0])
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()  # allowed: the first call kept the saved arrays
    np.testing.assert_array_equal(x.grad.numpy(), [4.0, 8.0])
    with pytest.raises(RuntimeError, match="released by an earlier backward.*retain_graph=True"):
        y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [4.0, 8.0])  # the failed call added nothing


def test_second_backward_through_a_shared_freed_part_raises_before_changing_anything():
    x = leaf([1.0, 2.0])
    w = leaf([0.5, 0.5])
    z = x * 2.0  # shared by both losses
    first, second = z.sum(), (z * w).sum()
    first.backward()  # frees z's node
    grad_before = x.grad.numpy()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        second.backward()
    np.testing.assert_array_equal(x.grad.numpy(), grad_before)
    assert w.grad is None  # w's branch was not half-applied either


def test_no_grad_context_records_nothing_and_restores_the_flag():
    x = leaf([1.0, 2.0])
    assert tg.is_grad_enabled()
    with no_grad():
        assert not tg.is_grad_enabled()
        y = (x * 2.0).tanh().sum()
        with no_grad():
            pass
        assert not tg.is_grad_enabled()  # an inner block restores the outer state, not True
    assert tg.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf and y._node is None
    with pytest.raises(RuntimeError, match="does not require grad.*no_grad"):
        y.backward()
    with pytest.raises(ZeroDivisionError):
        with no_grad():
            raise ZeroDivisionError
    assert tg.is_grad_enabled()  # restored after an exception too


def test_no_grad_as_a_decorator():
    @no_grad()
    def step(t):
        """docstring kept"""
        assert not tg.is_grad_enabled()
        return t * 3.0

    x = leaf([1.0])
    y = step(x)
    assert not y.requires_grad and y._node is None
    assert tg.is_grad_enabled()
    assert step.__doc__ == "docstring kept" and step.__name__ == "step"
    np.testing.assert_array_equal(y.numpy(), [3.0])


def test_detach_cuts_the_graph():
    x = leaf([1.0, 2.0, 3.0])
    d = x.detach()
    assert not d.requires_grad and d.is_leaf
    np.testing.assert_array_equal(d.numpy(), x.numpy())
    (d * x).sum().backward()  # d is a constant: d(d*x)/dx = d, not 2x
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 2.0, 3.0])
    assert d.grad is None


def test_retain_grad_and_leaf_versus_non_leaf_grad():
    x = leaf([1.0, 2.0])
    h = x * 3.0
    k = h + 1.0
    assert x.is_leaf and not h.is_leaf and not k.is_leaf
    assert h.retain_grad() is h
    loss = (k * k).sum()
    loss.backward(retain_graph=True)
    np.testing.assert_array_equal(h.grad.numpy(), 2 * (3 * x.numpy() + 1))
    assert k.grad is None  # an intermediate keeps no gradient unless asked
    assert x.grad is not None and x.grad.is_leaf and not x.grad.requires_grad
    loss.backward()  # the retained gradient accumulates, as in PyTorch
    np.testing.assert_array_equal(h.grad.numpy(), 4 * (3 * x.numpy() + 1))


def test_accumulation_retain_grad_and_leaves_match_torch():
    torch = pytest.importorskip("torch")
    values = np.array([0.3, -1.2, 2.0])
    x = leaf(values)
    h = (x * x).tanh()
    h.retain_grad()
    y = (h * x).sum() + h.sum()
    y.backward(retain_graph=True)
    y.backward()
    tx = torch.tensor(values, requires_grad=True)
    th = (tx * tx).tanh()
    th.retain_grad()
    ty = (th * tx).sum() + th.sum()
    ty.backward(retain_graph=True)
    ty.backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-14)
    np.testing.assert_allclose(h.grad.numpy(), th.grad.numpy(), rtol=1e-14)
    assert Tensor([1.0]).is_leaf == torch.tensor([1.0]).is_leaf
    assert (Tensor([1.0]) * 2).is_leaf == (torch.tensor([1.0]) * 2).is_leaf  # no grad needed: still a leaf


def test_a_tensor_used_twice_gets_the_sum_of_its_gradients():
    x = leaf([1.0, -2.0])
    (x * x + x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), 2 * x.numpy() + 1)
    # a diamond: a feeds two branches that meet again
    x.grad = None
    a = x * 2.0
    (a + a * a).sum().backward()  # d/dx (2x + 4x^2) = 2 + 8x
    np.testing.assert_array_equal(x.grad.numpy(), 2 + 8 * x.numpy())
    # the same tensor on both sides of one primitive
    x.grad = None
    (x @ x).backward()
    np.testing.assert_array_equal(x.grad.numpy(), 2 * x.numpy())


def test_backward_accepts_a_gradient_as_tensor_array_or_list_and_on_a_leaf():
    x = leaf([[1.0, 2.0], [3.0, 4.0]])
    y = x * 2.0
    y.backward(Tensor(np.ones((2, 2))), retain_graph=True)
    y.backward(np.full((2, 2), 0.5), retain_graph=True)
    y.backward([[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(x.grad.numpy(), [[5.0, 3.0], [3.0, 5.0]])
    z = leaf([1.0])
    z.backward()
    z.backward([2.0])
    np.testing.assert_array_equal(z.grad.numpy(), [3.0])


def test_grad_does_not_alias_the_gradient_passed_in():
    x = leaf([1.0, 2.0])
    g = np.array([1.0, 1.0])
    x.backward(g)
    x.backward(g)
    np.testing.assert_array_equal(g, [1.0, 1.0])
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0])


def test_inputs_without_requires_grad_get_no_gradient():
    x, c = leaf([1.0, 2.0]), Tensor(np.array([3.0, 4.0]))
    (x * c).sum().backward()
    assert c.grad is None
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 4.0])


# --- deep graphs -------------------------------------------------------------------------------------------------
def test_backward_through_a_100000_node_recurrent_chain():
    """10,000 steps of h = tanh(h w + x_t u + b) with a squared-error loss: 10 nodes a step, no recursion."""
    steps = 10_000
    rng = np.random.default_rng(0)
    xs, ys = rng.uniform(-1, 1, steps), rng.uniform(-0.5, 0.5, steps)
    w, u, b = leaf(0.9), leaf(0.7), leaf(0.1)
    x = leaf(xs)
    h, loss = Tensor(np.float64(0.0)), Tensor(np.float64(0.0))
    for t in range(steps):
        h = (h * w + x[t] * u + b).tanh()  # getitem, mul, mul, add, add, tanh
        loss = loss + (h - ys[t]) ** 2 * 0.5  # add, pow, mul, add
    assert len(_topological_order(loss._node)) >= 100_000
    loss.backward()

    # the same gradient by hand: NumPy forward, then backpropagation through time
    hs = np.zeros(steps + 1)
    for t in range(steps):
        hs[t + 1] = np.tanh(0.9 * hs[t] + 0.7 * xs[t] + 0.1)
    dw = du = db = dh = 0.0
    dx = np.zeros(steps)
    for t in reversed(range(steps)):
        dh += hs[t + 1] - ys[t]
        da = dh * (1 - hs[t + 1] ** 2)
        dw, du, db, dx[t] = dw + da * hs[t], du + da * xs[t], db + da, da * 0.7
        dh = da * 0.9
    assert loss.item() == pytest.approx(0.5 * ((hs[1:] - ys) ** 2).sum(), rel=1e-12)
    np.testing.assert_allclose([w.grad.item(), u.grad.item(), b.grad.item()], [dw, du, db], rtol=1e-10)
    np.testing.assert_allclose(x.grad.numpy(), dx, rtol=1e-10, atol=1e-14)


# --- dtypes --------------------------------------------------------------------------------------------------------
def test_dtype_rules_at_creation():
    assert Tensor(1.5).dtype == np.float32
    assert Tensor([1.0, 2.0]).dtype == np.float32  # Python floats -> float32, as torch.tensor
    assert Tensor([[1, 2]], dtype=np.float64).dtype == np.float64
    assert Tensor(np.array([1.0, 2.0])).dtype == np.float64  # NumPy float64 is kept
    assert Tensor(np.array([1.0], dtype=np.float32)).dtype == np.float32
    assert Tensor(np.float64(1.0)).dtype == np.float64
    assert Tensor([1, 2]).dtype.kind == "i"
    assert tg.tensor([1.0], requires_grad=True).requires_grad
    assert tg.zeros(2, 3).dtype == np.float32 and tg.ones((2,), dtype=np.float64).dtype == np.float64
    assert nn.Parameter([1.0, 2.0]).dtype == np.float32


def test_a_float32_graph_stays_float32_and_gives_float32_gradients():
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((3, 4)).astype(np.float32), requires_grad=True)
    w = Tensor(rng.standard_normal((4, 2)).astype(np.float32), requires_grad=True)
    steps = [
        x * 2.5, x / 3, x - 1, 1 - x, 2.0 * x, x**2, 2**x, x.abs().sqrt(), x.mean(axis=0), x.min(),
        x.sigmoid(), (x @ w).tanh(), x.logsumexp(axis=1), tg.maximum(x, 0.5), tg.where(x > 0, x, 0.0), x.T,
        tg.functional.softmax(x), tg.functional.log_softmax(x, axis=0),
    ]
    for i, y in enumerate(steps):
        assert y.dtype == np.float32, f"step {i} gave {y.dtype}"
    loss = sum((y.abs() + 1).log().sum() for y in steps[:6]) + (x @ w).sum()
    assert loss.dtype == np.float32
    loss.backward()
    assert x.grad.dtype == np.float32 and w.grad.dtype == np.float32


def test_mixing_float32_and_float64_promotes_and_gradients_keep_each_input_dtype():
    a = Tensor(np.ones(2, dtype=np.float32), requires_grad=True)
    b = Tensor(np.ones(2, dtype=np.float64), requires_grad=True)
    y = (a * b).sum()
    assert y.dtype == np.float64
    y.backward()
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float64


def test_to_dtype_is_differentiable_and_to_backend_makes_a_leaf():
    x = leaf([1.0, 2.0])
    assert x.to(np.float64) is x
    y = x.float()
    assert y.dtype == np.float32 and not y.is_leaf
    assert y.double().dtype == np.float64
    moved = x.to("numpy")
    assert moved.is_leaf and moved.requires_grad and moved.device == "numpy"


# --- composed operators (no VJP of their own) -------------------------------------------------------------------------
COMPOSED = {
    "sub": (lambda a, b: a - b, lambda a, b: a - b, 2),
    "rsub": (lambda a: 1.5 - a, lambda a: 1.5 - a, 1),
    "rtruediv": (lambda a: 2.0 / a, lambda a: 2.0 / a, 1),
    "rpow": (lambda a: 3.0**a, lambda a: 3.0**a, 1),
    "tensor pow": (lambda a, b: a**b, lambda a, b: a**b, 2),
    "mean": (lambda a: a.mean(axis=(0, 2)), lambda a: anp.mean(a, axis=(0, 2)), 1),
    "min": (lambda a: a.min(axis=1, keepdims=True), lambda a: anp.min(a, axis=1, keepdims=True), 1),
    "sqrt": (lambda a: a.sqrt(), anp.sqrt, 1),
    "T": (lambda a: a.T * np.arange(2.0), lambda a: anp.transpose(a) * np.arange(2.0), 1),
    "array op tensor": (lambda a: np.linspace(1, 2, 4) * a - np.ones(4), lambda a: np.linspace(1, 2, 4) * a - 1, 1),
    "array @ tensor": (lambda a: np.ones((2, 2)) @ a, lambda a: np.ones((2, 2)) @ a, 1),
}


@pytest.mark.parametrize("name", sorted(COMPOSED))
def test_composed_operators_have_correct_gradients(name):
    ours, theirs, n_inputs = COMPOSED[name]
    rng = np.random.default_rng(0)
    shape = {"T": (2, 3), "array op tensor": (3, 4), "array @ tensor": (2, 3)}.get(name, (2, 3, 4))
    inputs = [rng.uniform(0.5, 2.0, shape) for _ in range(n_inputs)]
    assert gradcheck(ours, inputs)
    leaves = [leaf(a) for a in inputs]
    out = ours(*leaves)
    np.testing.assert_allclose(out.numpy(), theirs(*inputs), rtol=1e-13)
    out.sum().backward()
    for i, t in enumerate(leaves):
        np.testing.assert_allclose(t.grad.numpy(), autograd.grad(lambda *xs: anp.sum(theirs(*xs)), i)(*inputs), rtol=1e-10)


def test_comparisons_give_boolean_tensors_without_gradients():
    x = leaf([1.0, 2.0, 3.0])
    for result in (x > 2.0, x >= 2.0, x < 2.0, x <= 2.0, x == 2.0, x != 2.0):
        assert result.dtype == np.bool_ and not result.requires_grad
    np.testing.assert_array_equal((x > 1.5).numpy(), [False, True, True])
    np.testing.assert_array_equal(x[x > 1.5].numpy(), [2.0, 3.0])


def test_basic_tensor_api():
    x = Tensor(np.arange(6.0).reshape(2, 3))
    assert x.shape == (2, 3) and x.ndim == 2 and x.size == 6 and len(x) == 2 and x.device == "numpy"
    assert x.reshape(-1).shape == (6,) and x.reshape(3, 2).shape == (3, 2) and x.reshape((1, 6)).shape == (1, 6)
    assert x.transpose().shape == (3, 2) and x.T.shape == (3, 2)
    assert x.sum().item() == 15.0 and x.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert "dtype=float64" in repr(x) and "requires_grad=True" in repr(leaf([1.0]))
    copy = x.numpy()
    copy[0, 0] = 100.0
    assert x.numpy()[0, 0] == 0.0  # numpy() is a copy


# --- errors: each with its message, each leaving the state as it was -------------------------------------------------
def test_matmul_shape_errors():
    a, b = leaf(np.ones((2, 3))), leaf(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"matmul: shapes \(2, 3\) and \(2, 3\) do not align: "
                                         r".*last axis \(3\).*second-to-last axis \(2\)"):
        a @ b
    with pytest.raises(ValueError, match=r"only axis \(4\)"):
        a @ leaf(np.ones(4))
    with pytest.raises(ValueError, match=r"batch axes of shapes \(2, 2, 3\) and \(3, 3, 4\) cannot be broadcast"):
        leaf(np.ones((2, 2, 3))) @ leaf(np.ones((3, 3, 4)))
    with pytest.raises(ValueError, match="at least one axis"):
        a @ Tensor(np.float64(2.0))
    assert a.grad is None and b.grad is None


def test_broadcasting_errors():
    a, b = leaf(np.ones((2, 3))), leaf(np.ones(4))
    for op, name in [(lambda: a + b, "add"), (lambda: a * b, "mul"), (lambda: a / b, "div"), (lambda: a - b, "sub"),
                     (lambda: tg.maximum(a, b), "maximum")]:
        message = rf"{name}: shapes \(2, 3\) and \(4,\) cannot be broadcast together: aligned from the right"
        with pytest.raises(ValueError, match=message):
            op()
    assert a.grad is None and b.grad is None


def test_backward_on_a_non_scalar_without_a_gradient():
    x = leaf([1.0, 2.0])
    x.backward(np.array([1.0, 1.0]))
    y = x * 3.0
    with pytest.raises(RuntimeError, match=r"single-element output; got shape \(2,\): pass grad="):
        y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 1.0])  # untouched
    y.backward(np.ones(2))  # the graph was not released by the failed call
    np.testing.assert_array_equal(x.grad.numpy(), [4.0, 4.0])


def test_backward_with_a_gradient_of_the_wrong_shape():
    x = leaf(np.ones((2, 3)))
    y = x * 2.0
    with pytest.raises(ValueError, match=r"grad has shape \(3,\), expected \(2, 3\)"):
        y.backward(np.ones(3))  # would broadcast, but a gradient must match exactly
    with pytest.raises(ValueError, match=r"grad has shape \(3, 2\), expected \(2, 3\)"):
        y.backward(Tensor(np.ones((3, 2))))
    assert x.grad is None
    y.backward(np.ones((2, 3)))
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 3), 2.0))


def test_backward_on_a_tensor_without_requires_grad():
    with pytest.raises(RuntimeError, match="does not require grad"):
        (Tensor([1.0]) * 2).backward()


def test_float_indices_are_rejected():
    x = leaf(np.arange(4.0))
    with pytest.raises(IndexError, match=r"indexed by integers, slices, None, Ellipsis.*got 1.5"):
        x[1.5]
    with pytest.raises(IndexError, match="index arrays must hold integers or booleans; got dtype float64"):
        x[np.array([0.0, 1.0])]
    with pytest.raises(IndexError, match="got dtype float64"):
        x[[0.5, 1.0]]
    with pytest.raises(IndexError, match="got dtype float32"):
        x[Tensor([1.0])]
    with pytest.raises(IndexError, match="indexed by integers"):
        x[0, 1.0]
    assert x.grad is None
    assert x[np.int64(1)].item() == 1.0 and x[[3, 0]].tolist() == [3.0, 0.0]


def test_requires_grad_on_integer_data():
    with pytest.raises(TypeError, match="only floating-point tensors can require gradients; got dtype int"):
        Tensor([1, 2], requires_grad=True)
    t = Tensor([1, 2])
    with pytest.raises(TypeError, match="only floating-point tensors can require gradients"):
        t.requires_grad_()
    assert not t.requires_grad
    with pytest.raises(TypeError, match="only floating-point tensors"):
        nn.Parameter(np.array([1, 2]))


def test_requires_grad_on_a_non_leaf():
    y = leaf([1.0]) * 2
    with pytest.raises(RuntimeError, match="only be set on a leaf"):
        y.requires_grad_(False)
    assert y.requires_grad


class FakeCupyArray:
    """Stands in for a CuPy array on a machine without one: its type lives in a module named 'cupy'."""

    __module__ = "cupy"

    def __init__(self, shape):
        self.shape, self.dtype, self.ndim = tuple(shape), np.dtype(np.float64), len(shape)


def test_mixing_arrays_of_two_backends():
    assert backend.is_cupy_array(FakeCupyArray((2,))) and not backend.is_cupy_array(np.ones(2))
    with pytest.raises(TypeError, match="different backends were mixed.*expected all on numpy, got one on cupy.*tensor.to"):
        backend.xp_of(np.ones(2), 1.0, FakeCupyArray((2,)))
    with pytest.raises(TypeError, match="expected all on cupy, got one on numpy"):
        backend.xp_of(FakeCupyArray((2,)), np.ones(2))
    x = leaf([1.0, 2.0])
    with pytest.raises(TypeError, match="different backends were mixed"):
        x + FakeCupyArray((2,))
    y = x * 2.0
    with pytest.raises(TypeError, match="different backends were mixed"):
        y.backward(FakeCupyArray((2,)))
    assert x.grad is None
    y.backward(np.ones(2))  # still usable
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0])


def test_other_user_errors():
    x = leaf(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"cannot reshape a tensor of shape \(2, 3\) \(6 elements\) into \(4, 2\)"):
        x.reshape(4, 2)
    with pytest.raises(ValueError, match="not a permutation"):
        x.permute(0, 0)
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        x.transpose(0, 2)
    with pytest.raises(ValueError, match="axis 2 is out of range for a tensor with 2 axes"):
        x.sum(axis=2)
    with pytest.raises(ValueError, match="stack needs tensors of one shape"):
        tg.stack([x, leaf(np.ones(3))])
    with pytest.raises(ValueError, match="concatenate along axis 0: shapes .* differ off that axis"):
        tg.concatenate([x, leaf(np.ones((2, 4)))])
    with pytest.raises(ValueError, match="at least one tensor"):
        tg.concatenate([])
    with pytest.raises(ValueError, match=r"item\(\) needs a single-element tensor"):
        x.item()
    with pytest.raises(TypeError, match="cannot combine a Tensor with str"):
        x + "a"
    with pytest.raises(TypeError, match="numbers or nested lists of numbers"):
        Tensor([object()])
    assert x.grad is None
