"""Differential tests: every public operation against PyTorch on hypothesis-drawn inputs.

Inputs include 0-d tensors, size-0 and size-1 axes, broadcasting, negative axes, bool/int32/int64/float32/
float64 dtypes, and extreme and non-finite values; each test compares raising or not, shapes, dtypes,
values and gradients (tests/differential.py). The default number of examples keeps the file to well under a
minute; ``pytest --hypothesis-profile=deep tests/test_torch_parity.py`` draws many more.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_birnn as tg
from tinygrad_birnn import Tensor
from tinygrad_birnn import functional as F

from differential import (all_dtypes, arrays, assert_same_values, compare, float_dtypes, nonempty_shapes,
                          number_dtypes, shapes, torch)

pairs = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=0, max_side=3)

# --- elementwise functions ----------------------------------------------------------------------------------
UNARY = {
    "neg": (lambda x: -x, lambda x: -x),
    "exp": (Tensor.exp, torch.exp),
    "log": (Tensor.log, torch.log),
    "tanh": (Tensor.tanh, torch.tanh),
    "sigmoid": (Tensor.sigmoid, torch.sigmoid),
    "relu": (Tensor.relu, torch.relu),
    "abs": (Tensor.abs, torch.abs),
    "sqrt": (Tensor.sqrt, torch.sqrt),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@given(data=st.data(), dtype=number_dtypes, shape=shapes)
def test_unary_forward_on_every_dtype_and_extreme_values(name, data, dtype, shape):
    x = data.draw(arrays(dtype, shape, extreme=True))
    ours, theirs = UNARY[name]
    compare(ours, theirs, [x], grad=False)


@pytest.mark.parametrize("name", sorted(UNARY))
@given(data=st.data(), dtype=float_dtypes, shape=shapes)
def test_unary_gradients(name, data, dtype, shape):
    low = 0.1 if name in ("log", "sqrt") else -4.0
    x = data.draw(arrays(dtype, shape, low=low, high=4.0))
    if name in ("relu", "abs"):
        x = np.where(np.abs(x) < 1e-3, 0.5, x).astype(dtype)  # the kink: see the ties test below
    ours, theirs = UNARY[name]
    compare(ours, theirs, [x])


def test_sigmoid_keeps_both_tails_in_float32():
    x = np.array([-100.0, -87.0, -20.0, -15.0, 0.0, 15.0, 20.0], dtype=np.float32)
    compare(Tensor.sigmoid, torch.sigmoid, [x])
    normal = x >= -87  # below, float32 has only subnormal numbers and fewer digits
    exact = 1 / (1 + np.exp(-x.astype(np.float64)))
    np.testing.assert_allclose(Tensor(x).sigmoid().numpy()[normal], exact[normal], rtol=1e-6)


def test_gradients_at_kinks_and_ties_follow_pytorch():
    x = np.array([-1.0, 0.0, 2.0])
    compare(Tensor.relu, torch.relu, [x])
    compare(Tensor.abs, torch.abs, [x])
    a, b = np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 4.0])
    compare(tg.maximum, torch.maximum, [a, b])
    compare(lambda t: t.max(), lambda t: t.max(), [np.array([3.0, 1.0, 3.0])])
    compare(lambda t: t.min(), lambda t: t.min(), [np.array([1.0, 1.0, 3.0])])
    compare(lambda t: t.sqrt(), torch.sqrt, [np.array([0.0, 4.0])])


# --- arithmetic with broadcasting and type promotion --------------------------------------------------------
BINARY = {
    "add": (lambda a, b: a + b), "sub": (lambda a, b: a - b), "mul": (lambda a, b: a * b),
    "div": (lambda a, b: a / b), "pow": (lambda a, b: a ** b),
    "lt": (lambda a, b: a < b), "le": (lambda a, b: a <= b), "gt": (lambda a, b: a > b),
    "ge": (lambda a, b: a >= b), "eq": (lambda a, b: a == b), "ne": (lambda a, b: a != b),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@given(data=st.data(), shapes_=pairs, dtypes_=st.tuples(all_dtypes, all_dtypes))
def test_binary_dtypes_shapes_and_values(name, data, shapes_, dtypes_):
    (sa, sb), _ = shapes_
    a = data.draw(arrays(dtypes_[0], sa, low=0.5, high=3.0))
    b = data.draw(arrays(dtypes_[1], sb, low=0.5, high=3.0))
    if name == "pow":
        assume(not (np.asarray(b).dtype.kind in "iu" and np.asarray(a).dtype.kind in "biu"))  # int ** int < 0
    op = BINARY[name]
    compare(op, op, [a, b], grad=False)


@pytest.mark.parametrize("name", ["add", "sub", "mul", "div", "pow", "lt", "eq"])
@given(data=st.data(), shape=shapes, dtype=all_dtypes,
       scalar=st.one_of(st.integers(1, 3), st.floats(0.5, 2.5), st.booleans()), reflected=st.booleans())
def test_binary_with_python_numbers(name, data, shape, dtype, scalar, reflected):
    a = data.draw(arrays(dtype, shape, low=0.5, high=3.0))
    if name == "pow" and np.dtype(dtype).kind in "biu" and isinstance(scalar, bool):
        scalar = 2
    op = BINARY[name]
    fn = (lambda t, s: op(s, t)) if reflected else op
    compare(fn, fn, [a], scalars=(scalar,), grad=False)


@pytest.mark.parametrize("name", ["add", "sub", "mul", "div", "pow"])
@given(data=st.data(), shapes_=pairs, dtype=float_dtypes)
def test_binary_gradients(name, data, shapes_, dtype):
    (sa, sb), _ = shapes_
    a = data.draw(arrays(dtype, sa, low=0.5, high=2.0))
    b = data.draw(arrays(dtype, sb, low=0.5, high=2.0))
    op = BINARY[name]
    compare(op, op, [a, b])


def test_integer_powers_of_negative_numbers_and_zero():
    x = np.array([-2.0, 0.0, 3.0])
    for exponent in (2, np.int64(2), 0, 3.0, np.float32(2.0)):
        compare(lambda t: t ** exponent, lambda t: t ** exponent, [x])
    compare(lambda t: t ** 0.5, lambda t: t ** 0.5, [np.array([0.0, 4.0])])
    compare(lambda t: 2.0 ** t, lambda t: 2.0 ** t, [x])


# --- reductions --------------------------------------------------------------------------------------------
@st.composite
def reduction_case(draw, allow_empty=True):
    shape = draw(shapes if allow_empty else nonempty_shapes)
    ndim = len(shape)
    choices = [st.none()]
    if ndim:
        choices += [st.integers(-ndim, ndim - 1), st.lists(st.integers(0, ndim - 1), min_size=1,
                                                           max_size=ndim, unique=True).map(tuple)]
    else:
        choices += [st.sampled_from([0, -1])]
    return shape, draw(st.one_of(choices)), draw(st.booleans())


def _torch_reduce(name, t, axis, keepdims):
    if axis is None:
        if name in ("amax", "amin") and not keepdims:
            return getattr(torch, name)(t)
        axis = tuple(range(t.ndim))
    if name == "logsumexp":
        return torch.logsumexp(t, dim=axis, keepdim=keepdims)
    return getattr(torch, name)(t, dim=axis, keepdim=keepdims)


@pytest.mark.parametrize("name,theirs", [("sum", "sum"), ("mean", "mean"), ("max", "amax"), ("min", "amin"),
                                         ("logsumexp", "logsumexp")])
@given(data=st.data(), case=reduction_case(), dtype=all_dtypes)
def test_reductions(name, theirs, data, case, dtype):
    shape, axis, keepdims = case
    if name == "logsumexp" and axis is None:
        axis = tuple(range(len(shape))) or None
    x = data.draw(arrays(dtype, shape))
    compare(lambda t: getattr(t, name)(axis=axis, keepdims=keepdims),
            lambda t: _torch_reduce(theirs, t, axis, keepdims), [x])


@given(data=st.data(), case=reduction_case(), dtype=float_dtypes)
def test_reductions_with_pytorch_argument_names(data, case, dtype):
    shape, axis, keepdims = case
    assume(axis is not None)
    x = data.draw(arrays(dtype, shape))
    compare(lambda t: t.sum(dim=axis, keepdim=keepdims), lambda t: t.sum(dim=axis, keepdim=keepdims), [x])


# --- shapes and indexing -----------------------------------------------------------------------------------
@given(data=st.data(), shape=shapes, dtype=float_dtypes)
def test_shape_functions(data, shape, dtype):
    x = data.draw(arrays(dtype, shape))
    ndim = len(shape)
    compare(lambda t: t.reshape(-1), lambda t: t.reshape(-1), [x])
    compare(lambda t: t.flatten(), lambda t: t.flatten(), [x])
    compare(lambda t: t.squeeze(), lambda t: t.squeeze(), [x])
    d = data.draw(st.integers(-ndim - 1, ndim))
    compare(lambda t: t.unsqueeze(d), lambda t: t.unsqueeze(d), [x])
    if ndim:
        d0, d1 = data.draw(st.integers(-ndim, ndim - 1)), data.draw(st.integers(-ndim, ndim - 1))
        compare(lambda t: t.transpose(d0, d1), lambda t: t.transpose(d0, d1), [x])
        perm = data.draw(st.permutations(range(ndim)))
        compare(lambda t: t.permute(*perm), lambda t: t.permute(*perm), [x])
        compare(lambda t: t.squeeze(d0), lambda t: t.squeeze(d0), [x])
    if ndim == 2:
        compare(lambda t: t.T, lambda t: t.T, [x])
        compare(lambda t: t.t(), lambda t: t.t(), [x])


def test_out_of_range_axes_raise_as_in_pytorch():
    x = np.ones((2, 3))
    for ours, theirs in [(lambda t: t.transpose(0, 2), lambda t: t.transpose(0, 2)),
                         (lambda t: t.permute(0, 0), lambda t: t.permute(0, 0)),
                         (lambda t: t.sum(axis=2), lambda t: t.sum(dim=2)),
                         (lambda t: t.unsqueeze(3), lambda t: t.unsqueeze(3))]:
        compare(ours, theirs, [x])


@st.composite
def index_case(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    items = []
    for n in shape:
        kind = draw(st.sampled_from(["int", "slice", "list", "all"]))
        if kind == "int":
            items.append(draw(st.integers(-n, n - 1)))
        elif kind == "slice":
            items.append(slice(draw(st.integers(0, n)), draw(st.integers(0, n))))
        elif kind == "list":
            items.append(draw(st.lists(st.integers(-n, n - 1), min_size=1, max_size=3)))
        else:
            items.append(slice(None))
    cut = draw(st.integers(1, len(items)))
    return shape, tuple(items[:cut])


@given(case=index_case(), data=st.data())
def test_indexing_with_ints_slices_and_lists(case, data):
    shape, index = case
    x = data.draw(arrays(np.dtype(np.float64), shape))
    lists = [i for i in index if isinstance(i, list)]
    assume(len({len(i) for i in lists}) <= 1)  # lists broadcast together
    compare(lambda t: t[index], lambda t: t[tuple(torch.tensor(i) if isinstance(i, list) else i
                                                      for i in index)], [x])


def test_an_int_and_a_list_separated_by_a_slice_index_as_in_pytorch():
    x = np.arange(24.0).reshape(2, 3, 4)
    out = compare(lambda t: t[0, :, [0, 1]], lambda t: t[0, :, [0, 1]], [x])
    assert out.shape == (3, 2)
    compare(lambda t: t[(0, 1), :], lambda t: t[(0, 1), :], [x])
    compare(lambda t: t[..., 1], lambda t: t[..., 1], [x])
    compare(lambda t: t[None, 1, [2, 0]], lambda t: t[None, 1, [2, 0]], [x])


# --- products, joins, selection ----------------------------------------------------------------------------
@st.composite
def matmul_case(draw):
    n, k, m = (draw(st.integers(0, 3)) for _ in range(3))
    kind = draw(st.sampled_from(["mm", "mv", "vm", "vv", "bmm", "broadcast"]))
    batch = draw(st.integers(1, 3))
    return {"mm": ((n, k), (k, m)), "mv": ((n, k), (k,)), "vm": ((k,), (k, m)), "vv": ((k,), (k,)),
            "bmm": ((batch, n, k), (batch, k, m)), "broadcast": ((batch, n, k), (k, m))}[kind]


@given(case=matmul_case(), dtype=float_dtypes, data=st.data())
def test_matmul(case, dtype, data):
    a, b = (data.draw(arrays(dtype, s)) for s in case)
    compare(lambda x, y: x @ y, lambda x, y: x @ y, [a, b])
    compare(lambda x, y: x.matmul(y), lambda x, y: x.matmul(y), [a, b])


@given(data=st.data(), shape=nonempty_shapes.filter(len), n=st.integers(1, 3), dtypes_=st.lists(
    st.sampled_from([np.dtype(np.int64), np.dtype(np.float32), np.dtype(np.float64)]), min_size=3, max_size=3))
def test_concatenate_and_stack_promote(data, shape, n, dtypes_):
    xs = [data.draw(arrays(dtypes_[i], shape)) for i in range(n)]
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    grad = all(x.dtype.kind == "f" for x in xs)
    compare(lambda *t: tg.concatenate(list(t), axis=axis), lambda *t: torch.cat(list(t), dim=axis), xs, grad=grad)
    compare(lambda *t: tg.stack(list(t), axis=axis), lambda *t: torch.stack(list(t), dim=axis), xs, grad=grad)


@given(data=st.data(), shapes_=pairs, dtype=float_dtypes)
def test_where(data, shapes_, dtype):
    (sa, sb), out_shape = shapes_
    a, b = data.draw(arrays(dtype, sa)), data.draw(arrays(dtype, sb))
    cond = data.draw(hnp.arrays(np.bool_, out_shape))
    compare(lambda x, y: tg.where(cond, x, y), lambda x, y: torch.where(torch.tensor(cond), x, y), [a, b])


# --- functional --------------------------------------------------------------------------------------------
@given(data=st.data(), shape=nonempty_shapes.filter(len), dtype=float_dtypes)
def test_softmax_and_log_softmax(data, shape, dtype):
    x = data.draw(arrays(dtype, shape, low=-30, high=30))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    compare(lambda t: F.softmax(t, axis=axis), lambda t: torch.softmax(t, dim=axis), [x])
    compare(lambda t: F.log_softmax(t, axis=axis), lambda t: torch.log_softmax(t, dim=axis), [x])


@given(data=st.data(), shape=shapes, dtype=all_dtypes, extreme=st.booleans())
def test_softmax_and_log_softmax_at_the_edges(data, shape, dtype, extreme):
    """0-d, empty, size-1 axes, integer and boolean inputs (PyTorch refuses them), inf, nan, 1e38."""
    x = data.draw(arrays(dtype, shape, extreme=extreme))
    axis = data.draw(st.integers(-max(len(shape), 1), max(len(shape), 1) - 1))
    if dtype.kind != "f" and x.size == 0:  # PyTorch returns an empty integer tensor; refused here (semantics.md)
        with pytest.raises(TypeError, match="floating-point"):
            F.log_softmax(Tensor(x), axis=axis)
        return
    compare(lambda t: F.log_softmax(t, axis=axis), lambda t: torch.log_softmax(t, dim=axis), [x])
    compare(lambda t: F.softmax(t, axis=axis), lambda t: torch.softmax(t, dim=axis), [x])


@given(data=st.data(), n=st.integers(0, 40), c=st.integers(1, 20), lead=st.integers(1, 3), dtype=float_dtypes)
def test_cross_entropy_on_many_rows_and_large_logits(data, n, c, lead, dtype):
    """Batches of rows (the sizes where the loss's reductions take their fast paths), logits up to 1e4."""
    logits = data.draw(arrays(dtype, (lead, n, c), low=-1e4, high=1e4))
    targets = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=lead * n, max_size=lead * n)),
                       dtype=np.int64).reshape(lead, n)
    compare(lambda t: F.cross_entropy(t, targets),
            lambda t: torch.nn.functional.cross_entropy(t.reshape(-1, c), torch.tensor(targets.reshape(-1))),
            [logits])


@given(data=st.data(), n=st.integers(0, 5), c=st.integers(1, 4), dtype=float_dtypes,
       reduction=st.sampled_from(["mean", "sum", "none"]), masked=st.booleans(), ignore=st.booleans())
def test_cross_entropy(data, n, c, dtype, reduction, masked, ignore):
    logits = data.draw(arrays(dtype, (n, c), low=-5, high=5))
    targets = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)), dtype=np.int64)
    if masked and n:  # a common mask: -inf on classes other than the target
        other = (targets + 1) % c
        if c > 1:
            logits[np.arange(n), other] = -np.inf
    if ignore and n:
        targets[0] = -100
    compare(lambda t: F.cross_entropy(t, targets, reduction=reduction),
            lambda t: torch.nn.functional.cross_entropy(t, torch.tensor(targets), reduction=reduction), [logits])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(0, 0), (0, 5), (2, 0, 3), (3, 0, 0)])
def test_cross_entropy_of_no_rows(shape, reduction):
    """No rows, with classes or without: an empty loss (nan as a mean, 0 as a sum), as PyTorch's."""
    logits, targets = np.zeros(shape, np.float32), np.zeros(shape[:-1], np.int64)
    flat = logits.reshape(math.prod(shape[:-1]), shape[-1])  # not -1: ambiguous with no entries
    compare(lambda t: F.cross_entropy(t, targets, reduction=reduction),
            lambda t: torch.nn.functional.cross_entropy(t.reshape(flat.shape), torch.tensor(targets.reshape(-1)),
                                                        reduction=reduction).reshape(
                                                            shape[:-1] if reduction == "none" else ()),
            [logits])


@given(data=st.data(), shape=shapes, dtype=float_dtypes, reduction=st.sampled_from(["mean", "sum", "none"]))
def test_mse_loss(data, shape, dtype, reduction):
    a, b = data.draw(arrays(dtype, shape)), data.draw(arrays(dtype, shape))
    compare(lambda x, y: F.mse_loss(x, y, reduction=reduction),
            lambda x, y: torch.nn.functional.mse_loss(x, y, reduction=reduction), [a, b])


# --- Tensor construction, conversion, truthiness -------------------------------------------------------------
@given(data=st.data(), dtype=all_dtypes, shape=shapes)
def test_tensor_from_arrays_keeps_dtype_and_copies(data, dtype, shape):
    x = data.draw(arrays(dtype, shape))
    t = Tensor(x)
    assert_same_values(t, torch.tensor(x))
    if x.size:
        before = x.copy()
        t.data[...] = 0
        np.testing.assert_array_equal(x, before)


def test_tensor_from_python_values_as_pytorch():
    for value in [1.5, [1.0, 2.0], 3, [[1, 2]], True, [True, False], [], [[]]]:
        assert_same_values(Tensor(value), torch.tensor(value))


def test_truthiness_as_pytorch():
    for values in ([0.0], [2.0], 0.0, [[1]]):
        assert bool(Tensor(values)) == bool(torch.tensor(values))
    for values in ([1.0, 2.0], []):
        with pytest.raises(RuntimeError):
            bool(torch.tensor(values))
        with pytest.raises(RuntimeError):
            bool(Tensor(values))
    a, b = Tensor([1.0, 2.0]), Tensor([1.0, 2.0])
    assert a in [a]
    with pytest.raises(RuntimeError):
        a in [b]  # noqa: B015 (as in PyTorch: == is elementwise, so `in` asks for an ambiguous truth value)
    assert float(Tensor([2.5])) == 2.5 and int(Tensor([3])) == 3


# --- modules and optimizers ---------------------------------------------------------------------------------
@given(data=st.data(), batch=st.lists(st.integers(0, 3), min_size=0, max_size=2), features=st.integers(1, 4),
       out=st.integers(1, 3), bias=st.booleans(), dtype=float_dtypes)
def test_linear(data, batch, features, out, bias, dtype):
    layer = tg.nn.Linear(features, out, bias=bias, dtype=dtype)
    peer = torch.nn.Linear(features, out, bias=bias, dtype=torch.float64 if dtype == np.float64 else torch.float32)
    peer.load_state_dict({k: torch.tensor(v) for k, v in layer.state_dict().items()})
    x = data.draw(arrays(dtype, (*batch, features)))
    compare(layer, peer, [x])
    for (name, p), q in zip(layer.named_parameters(), peer.parameters()):
        assert_same_values(p.grad, q.grad, what=f"gradient of {name}")


@pytest.mark.parametrize("make,kwargs", [
    ("SGD", {"lr": 0.1}), ("SGD", {"lr": 0.05, "momentum": 0.9}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("Adam", {"lr": 0.01}), ("Adam", {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}),
])
def test_optimizers_follow_pytorch_over_steps(make, kwargs):
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((3, 2))
    w = tg.nn.Parameter(w0, dtype=np.float64)
    v = torch.tensor(w0, requires_grad=True)
    opt, peer = getattr(tg.optim, make)([w], **kwargs), getattr(torch.optim, make)([v], **kwargs)
    for step in range(6):
        x = rng.standard_normal((4, 3))
        opt.zero_grad()
        peer.zero_grad()
        ((Tensor(x) @ w).tanh() ** 2).sum().backward()
        ((torch.tensor(x) @ v).tanh() ** 2).sum().backward()
        opt.step()
        peer.step()
        np.testing.assert_allclose(w.numpy(), v.detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=f"step {step}")


def test_a_nan_learning_rate_is_refused():
    """A deliberate difference: PyTorch's SGD accepts lr=nan (and then writes nan into every weight)."""
    for make in (tg.optim.SGD, tg.optim.Adam):
        with pytest.raises(ValueError, match="learning rate must be >= 0"):
            make([tg.nn.Parameter([0.0])], lr=float("nan"))


@pytest.mark.parametrize("kwargs", [{"lr": -1.0}, {"lr": 0.1, "momentum": -0.5},
                                    {"lr": 0.1, "weight_decay": -1.0}])
def test_sgd_refuses_what_pytorch_refuses(kwargs):
    with pytest.raises(ValueError):
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], **kwargs)
    with pytest.raises(ValueError):
        tg.optim.SGD([tg.nn.Parameter([0.0])], **kwargs)


@pytest.mark.parametrize("kwargs", [{"lr": -1.0}, {"eps": -1e-8}, {"betas": (1.0, 0.9)}, {"weight_decay": -1.0}])
def test_adam_refuses_what_pytorch_refuses(kwargs):
    with pytest.raises(ValueError):
        torch.optim.Adam([torch.zeros(1, requires_grad=True)], **kwargs)
    with pytest.raises(ValueError):
        tg.optim.Adam([tg.nn.Parameter([0.0])], **kwargs)


def test_a_single_tensor_is_not_a_parameter_list():
    with pytest.raises(TypeError):
        torch.optim.SGD(torch.zeros(2, requires_grad=True), lr=0.1)
    with pytest.raises(TypeError, match="wrap it in a list"):
        tg.optim.SGD(tg.nn.Parameter([1.0, 2.0]), lr=0.1)


def test_load_state_dict_reports_keys_as_pytorch():
    ours, theirs = tg.nn.Linear(2, 3), torch.nn.Linear(2, 3)
    state = {"weight": np.ones((3, 2), np.float32), "extra": np.zeros(1, np.float32)}
    got = ours.load_state_dict(state, strict=False)
    want = theirs.load_state_dict({k: torch.tensor(v) for k, v in state.items()}, strict=False)
    assert (got.missing_keys, got.unexpected_keys) == (want.missing_keys, want.unexpected_keys)
    assert [name for name, _ in tg.nn.Sequential(ours).named_children()] == ["0"]


def test_deliberate_differences_behave_as_the_semantics_page_says():
    # max over an axis returns values only (torch.amax), ties split evenly
    x = Tensor(np.array([[1.0, 3.0, 3.0]]), requires_grad=True)
    x.max(axis=1).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0.0, 0.5, 0.5]])
    # transpose with a full permutation, as NumPy
    assert Tensor(np.zeros((2, 3, 4))).transpose(2, 0, 1).shape == (4, 2, 3)
    # matmul promotes mixed float dtypes (PyTorch raises)
    assert (Tensor(np.ones((2, 2), np.float32)) @ Tensor(np.ones((2, 2)))).dtype == np.float64
    # the same parameter twice is refused
    p = tg.nn.Parameter([1.0])
    with pytest.raises(ValueError, match="more than once"):
        tg.optim.SGD([p, p], lr=0.1)
