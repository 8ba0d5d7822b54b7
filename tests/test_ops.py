"""The primitive registry: every primitive's vector-Jacobian product, checked two independent ways.

Each gradient test runs ``tinygrad_birnn.gradcheck`` (central differences plus a dot-product test, in
float64) and compares the engine's gradient with HIPS autograd's for the same function (rtol 1e-10), on
shapes drawn by hypothesis, broadcast ones included. Each is marked ``@pytest.mark.primitive("<name>")``;
``test_every_primitive_has_a_marked_gradient_test`` scans tests/*.py for those marks, so a primitive
registered anywhere (here or in another module, such as the fused RNN op) without a gradient test fails
the run. ``test_a_broken_vjp_is_caught`` plants wrong gradients to show the checks are not vacuous.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
from pathlib import Path

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_birnn as tg
from tinygrad_birnn import GradcheckError, Tensor, backend, gradcheck, ops
from tinygrad_birnn import functional as F
from tinygrad_birnn.ops import PRIMITIVES, unbroadcast
from tinygrad_birnn.tensor import _topological_order, apply

GRAD = settings(max_examples=25, deadline=None)
seeds = st.integers(0, 2**32 - 1)
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)
nonscalar_shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)
broadcast_pairs = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=1, max_side=4)
broadcast_triples = hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, min_side=1, max_side=4)

MARKER = re.compile(r"""pytest\.mark\.primitive\(\s*["']([A-Za-z0-9_.\-]+)["']\s*\)""")
# the primitives this file's module registers; others (e.g. the fused RNN op) are tested in their own files
ENGINE_PRIMITIVES = {
    "add", "mul", "div", "neg", "pow", "power", "maximum", "exp", "log", "tanh", "sigmoid", "relu", "abs", "matmul",
    "sum", "max", "logsumexp", "log_softmax", "softmax_cross_entropy", "reshape", "transpose", "getitem", "concatenate", "stack", "where", "cast",
}


# --- the two checks -------------------------------------------------------------------------------------------
def primitives_used(out: Tensor) -> set[str]:
    """The names of the primitives in the graph that produced ``out``."""
    return {node.prim.name for node in _topological_order(out._node)} if out._node is not None else set()


def check_vjp(primitive, ours, theirs, inputs, seed=0, **gradcheck_options):
    """``ours`` (on Tensors) must run ``primitive``, match ``theirs`` (autograd.numpy) forward, and have
    gradients that pass gradcheck and equal autograd's to rtol 1e-10, in float64 on the current backend."""
    inputs = [np.asarray(a, dtype=np.float64) for a in inputs]
    assert gradcheck(ours, inputs, seed=seed, **gradcheck_options)

    leaves = [Tensor(a.copy(), requires_grad=True) for a in inputs]
    out = ours(*leaves)
    assert primitive in primitives_used(out), f"the function does not exercise primitive {primitive!r}"
    expected = np.asarray(theirs(*inputs))
    assert out.shape == expected.shape
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)

    # a cotangent exactly representable in the output's dtype, so both sides contract with the same numbers
    v = np.random.default_rng(seed).standard_normal(out.shape).astype(out.dtype).astype(np.float64)
    out.backward(backend.to_backend(v.astype(out.dtype), backend.backend_name()))
    for i, (leaf, a) in enumerate(zip(leaves, inputs)):
        reference = autograd.grad(lambda *xs: anp.sum(theirs(*xs) * v), i)(*inputs)
        assert leaf.grad is not None, f"input {i} got no gradient"
        assert leaf.grad.device == backend.backend_name()
        got = leaf.grad.numpy()
        assert got.shape == a.shape and got.dtype == np.float64
        np.testing.assert_allclose(got, reference, rtol=1e-10, atol=1e-12, err_msg=f"input {i}")


def values(seed, shape, low=-2.0, high=2.0):
    return np.random.default_rng(seed).uniform(low, high, size=shape)


def positive(seed, shape):
    return values(seed, shape, 0.5, 2.5)


def away_from_zero(seed, shape):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.2, 2.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)


# --- elementwise --------------------------------------------------------------------------------------------
UNARY = {
    "neg": (lambda x: -x, lambda x: -x, values),
    "exp": (Tensor.exp, anp.exp, values),
    "log": (Tensor.log, anp.log, positive),
    "tanh": (Tensor.tanh, anp.tanh, values),
    "sigmoid": (Tensor.sigmoid, lambda x: 1 / (1 + anp.exp(-x)), values),
    "relu": (Tensor.relu, lambda x: anp.maximum(x, 0.0), away_from_zero),
    "abs": (Tensor.abs, anp.abs, away_from_zero),
}


@pytest.mark.parametrize("name", [
    pytest.param("neg", marks=pytest.mark.primitive("neg")),
    pytest.param("exp", marks=pytest.mark.primitive("exp")),
    pytest.param("log", marks=pytest.mark.primitive("log")),
    pytest.param("tanh", marks=pytest.mark.primitive("tanh")),
    pytest.param("sigmoid", marks=pytest.mark.primitive("sigmoid")),
    pytest.param("relu", marks=pytest.mark.primitive("relu")),
    pytest.param("abs", marks=pytest.mark.primitive("abs")),
])
@GRAD
@given(shape=shapes, seed=seeds)
def test_unary_vjp(name, shape, seed):
    ours, theirs, draw = UNARY[name]
    check_vjp(name, ours, theirs, [draw(seed, shape)], seed=seed)


BINARY = {
    "add": (lambda a, b: a + b, lambda a, b: a + b, values),
    "mul": (lambda a, b: a * b, lambda a, b: a * b, values),
    "div": (lambda a, b: a / b, lambda a, b: a / b, away_from_zero),
    "maximum": (tg.maximum, anp.maximum, values),
}


@pytest.mark.parametrize("name", [
    pytest.param("add", marks=pytest.mark.primitive("add")),
    pytest.param("mul", marks=pytest.mark.primitive("mul")),
    pytest.param("div", marks=pytest.mark.primitive("div")),
    pytest.param("maximum", marks=pytest.mark.primitive("maximum")),
])
@GRAD
@given(shapes=broadcast_pairs, seed=seeds)
def test_binary_vjp_with_broadcasting(name, shapes, seed):
    ours, theirs, draw_b = BINARY[name]
    a_shape, b_shape = shapes.input_shapes
    check_vjp(name, ours, theirs, [values(seed, a_shape), draw_b(seed + 1, b_shape)], seed=seed)


@pytest.mark.primitive("pow")
@GRAD
@given(shape=shapes, exponent=st.sampled_from([2, 3, -1, 0.5, 1.5, -2.5, 2.0]), seed=seeds)
def test_pow_vjp(shape, exponent, seed):
    integer_power = float(exponent).is_integer() and exponent > 0
    x = values(seed, shape) if integer_power else positive(seed, shape)
    check_vjp("pow", lambda t: t**exponent, lambda a: a**exponent, [x], seed=seed)


@pytest.mark.primitive("power")
@GRAD
@given(shapes_=broadcast_pairs, seed=seeds)
def test_power_vjp(shapes_, seed):
    """x ** y with both a tensor: gradients for the base and for the exponent."""
    (sx, sy), _ = shapes_
    check_vjp("power", lambda a, b: a ** b, lambda a, b: a ** b, [positive(seed, sx), values(seed + 1, sy)], seed=seed)


@GRAD
@given(shape=shapes, seed=seeds)
def test_sqrt_vjp(shape, seed):
    """sqrt is composed: x ** 0.5."""
    check_vjp("pow", lambda t: t.sqrt(), anp.sqrt, [positive(seed, shape)], seed=seed)


@GRAD
@given(shapes_=broadcast_pairs, seed=seeds)
def test_sub_vjp(shapes_, seed):
    """a - b is composed: a + (-b)."""
    (sa, sb), _ = shapes_
    check_vjp("neg", lambda a, b: a - b, lambda a, b: a - b, [values(seed, sa), values(seed + 1, sb)], seed=seed)


# --- matmul ----------------------------------------------------------------------------------------------------
@st.composite
def matmul_shapes(draw):
    n, k, m = (draw(st.integers(1, 4)) for _ in range(3))
    batch = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2, min_side=1, max_side=3))
    kinds = st.sampled_from(["vector", "matrix", "batched"])
    kind_a, kind_b = draw(kinds), draw(kinds)
    a = {"vector": (k,), "matrix": (n, k), "batched": batch.input_shapes[0] + (n, k)}[kind_a]
    b = {"vector": (k,), "matrix": (k, m), "batched": batch.input_shapes[1] + (k, m)}[kind_b]
    return a, b


@pytest.mark.primitive("matmul")
@GRAD
@given(shapes=matmul_shapes(), seed=seeds)
def test_matmul_vjp(shapes, seed):
    a_shape, b_shape = shapes
    check_vjp("matmul", lambda a, b: a @ b, lambda a, b: a @ b, [values(seed, a_shape), values(seed + 1, b_shape)], seed=seed)


@pytest.mark.primitive("matmul")
@pytest.mark.parametrize("a_shape, b_shape", [((3,), (3,)), ((3,), (3, 2)), ((2, 3), (3,)), ((2, 3), (3, 4)),
                                              ((5, 1, 2, 3), (4, 3, 2)), ((3,), (2, 3, 4)), ((2, 1, 4, 3), (3,))])
def test_matmul_vjp_fixed_shapes(a_shape, b_shape, rng):
    """The shapes hypothesis might not draw in a short run: vector-vector, vector-batch, broadcast batches."""
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    check_vjp("matmul", lambda x, y: x @ y, lambda x, y: x @ y, [a, b])


@st.composite
def linear_shapes(draw):
    """x (..., k), W (n, k), with or without a bias (n,)."""
    lead = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=4))
    k, n = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return lead + (k,), (n, k), draw(st.booleans())


@pytest.mark.primitive("linear")
@GRAD
@given(shapes=linear_shapes(), seed=seeds)
def test_linear_vjp(shapes, seed):
    x_shape, w_shape, bias = shapes
    inputs = [values(seed, x_shape), values(seed + 1, w_shape)] + ([values(seed + 2, w_shape[:1])] if bias else [])
    check_vjp("linear", F.linear, lambda x, w, b=0.0: x @ w.T + b, inputs, seed=seed)


@pytest.mark.primitive("linear")
@pytest.mark.parametrize("x_shape", [(32, 32, 128), (5, 128), (128,), (0, 128), (1, 128), (3, 0, 128)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_is_bitwise_the_composition_it_replaced(x_shape, dtype, rng):
    """One node for x W^T + b gives the bits of the two nodes x @ W.T and + b, value and gradients."""
    x, w = rng.standard_normal(x_shape).astype(dtype), rng.standard_normal((16, 128)).astype(dtype)
    b = rng.standard_normal(16).astype(dtype)
    results = []
    for fused in (True, False):
        X, W, B = (Tensor(a, requires_grad=True) for a in (x, w, b))
        y = F.linear(X, W, B) if fused else X @ W.T + B
        assert ("linear" in primitives_used(y)) == fused
        y.backward(np.random.default_rng(1).standard_normal(y.shape).astype(dtype))
        results.append([y.numpy(), X.grad.numpy(), W.grad.numpy(), B.grad.numpy()])
    for fused, composed in zip(*results):
        assert fused.tobytes() == composed.tobytes()


def test_linear_outside_the_common_case_is_the_composition():
    """Mixed dtypes, integer inputs, a 1-D weight or a bias of another shape: x @ W.T + b, its promotion and
    its errors, as before."""
    x32, w64 = Tensor(np.ones((2, 3), np.float32)), Tensor(np.ones((4, 3)), requires_grad=True)
    y = F.linear(x32, w64, Tensor(np.ones(4)))
    assert y.dtype == np.float64 and "linear" not in primitives_used(y)
    assert F.linear(Tensor(np.ones((2, 3), np.int64)), Tensor(np.ones((4, 3), np.int64))).dtype == np.int64
    np.testing.assert_array_equal(F.linear(Tensor(np.ones((2, 3))), Tensor(np.ones((4, 3))),
                                           Tensor(np.ones((2, 1)))).numpy(), np.full((2, 4), 4.0))
    with pytest.raises(ValueError):
        F.linear(Tensor(np.ones((2, 3))), Tensor(np.ones((4, 5))))


# --- reductions ------------------------------------------------------------------------------------------------
@st.composite
def reductions(draw):
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=4))
    ndim = len(shape)
    axis_choices = [st.none()]
    if ndim:
        axis_choices += [st.integers(-ndim, ndim - 1), hnp.valid_tuple_axes(ndim, min_size=1)]
    return shape, draw(st.one_of(axis_choices)), draw(st.booleans())


REDUCTIONS = {
    "sum": (lambda x, axis, k: x.sum(axis=axis, keepdims=k), lambda x, axis, k: anp.sum(x, axis=axis, keepdims=k)),
    "max": (lambda x, axis, k: x.max(axis=axis, keepdims=k), lambda x, axis, k: anp.max(x, axis=axis, keepdims=k)),
    "min": (lambda x, axis, k: x.min(axis=axis, keepdims=k), lambda x, axis, k: anp.min(x, axis=axis, keepdims=k)),
    "logsumexp": (lambda x, axis, k: x.logsumexp(axis=axis, keepdims=k),
                  lambda x, axis, k: anp.log(anp.sum(anp.exp(x), axis=axis, keepdims=k))),
}


@pytest.mark.parametrize("name", [
    pytest.param("sum", marks=pytest.mark.primitive("sum")),
    pytest.param("max", marks=pytest.mark.primitive("max")),
    pytest.param("min", marks=pytest.mark.primitive("max")),
    pytest.param("logsumexp", marks=pytest.mark.primitive("logsumexp")),
])
@GRAD
@given(case=reductions(), seed=seeds)
def test_reduction_vjp(name, case, seed):
    shape, axis, keepdims = case
    ours, theirs = REDUCTIONS[name]
    primitive = "max" if name == "min" else name  # min is composed: -max(-x)
    check_vjp(primitive, lambda x: ours(x, axis, keepdims), lambda x: theirs(x, axis, keepdims), [values(seed, shape)],
              seed=seed)


@pytest.mark.primitive("max")
def test_max_splits_the_gradient_evenly_among_ties():
    x = Tensor(np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]]), requires_grad=True)
    x.max(axis=1).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])


@pytest.mark.primitive("logsumexp")
def test_logsumexp_does_not_overflow():
    x = Tensor(np.array([1000.0, 1000.0, -1000.0]), requires_grad=True)
    out = x.logsumexp()
    assert out.item() == pytest.approx(1000.0 + np.log(2.0), rel=1e-15)
    out.backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.5, 0.5, 0.0], atol=1e-300)


def _anp_log_softmax(x, axis):
    return x - anp.log(anp.sum(anp.exp(x), axis=axis, keepdims=True))


def _ce(x, index):
    return apply(PRIMITIVES["softmax_cross_entropy"], x, index=index)


def _anp_ce(x, index):
    picked = anp.sum(x * (index[..., None] == np.arange(x.shape[-1])), axis=-1)
    return anp.log(anp.sum(anp.exp(x), axis=-1)) - picked


@pytest.mark.primitive("log_softmax")
@GRAD
@given(shape=nonscalar_shapes, data=st.data(), seed=seeds)
def test_log_softmax_vjp(shape, data, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    check_vjp("log_softmax", lambda x: F.log_softmax(x, axis=axis) * 1.0, lambda x: _anp_log_softmax(x, axis),
              [values(seed, shape)], seed=seed)


@pytest.mark.primitive("log_softmax")
def test_log_softmax_does_not_overflow_and_keeps_masked_classes_harmless():
    x = Tensor(np.array([[1e4, 0.0, -1e4], [0.0, -np.inf, 1e4]]), requires_grad=True)
    out = F.log_softmax(x)
    np.testing.assert_allclose(out.numpy(), [[0.0, -1e4, -2e4], [-1e4, -np.inf, 0.0]])
    out[:, 0].sum().backward()  # d out[0] / dx = onehot(0) - softmax(x)
    np.testing.assert_allclose(x.grad.numpy(), [[0.0, 0.0, 0.0], [1.0, 0.0, -1.0]], atol=1e-300)


@pytest.mark.primitive("softmax_cross_entropy")
@GRAD
@given(shape=nonscalar_shapes, seed=seeds)
def test_softmax_cross_entropy_vjp(shape, seed):
    index = np.random.default_rng(seed).integers(0, shape[-1], size=shape[:-1])
    check_vjp("softmax_cross_entropy", lambda x: _ce(x, index), lambda x: _anp_ce(x, index),
              [values(seed, shape)], seed=seed)


@pytest.mark.primitive("softmax_cross_entropy")
def test_softmax_cross_entropy_reads_the_target_only_and_its_gradient_is_softmax_minus_onehot():
    x = Tensor(np.array([[1e4, -np.inf, 0.0], [2.0, 2.0, -np.inf]]), requires_grad=True)
    out = _ce(x, np.array([2, 0]))
    np.testing.assert_allclose(out.numpy(), [1e4, np.log(2.0)])
    (out * Tensor(np.array([2.0, 3.0]))).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[2.0, 0.0, -2.0], [-1.5, 1.5, 0.0]], atol=1e-300)


def test_cross_entropy_is_bitwise_the_composition_it_replaced():
    """log_softmax then the target's entry, negated: the fused primitive gives the same bits, value and
    gradient (so trained models and the chapters' stored numbers do not move)."""
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        z = (rng.standard_normal((7, 5, 6)) * 4).astype(dtype)
        y = rng.integers(0, 6, size=(7, 5))
        a, b = Tensor(z, requires_grad=True), Tensor(z, requires_grad=True)
        F.cross_entropy(a, y).backward()
        chosen = y[..., None] == np.arange(6)
        (-tg.where(chosen, F.log_softmax(b), 0.0).sum(axis=-1)).mean().backward()
        np.testing.assert_array_equal(F.cross_entropy(a, y).numpy(),
                                      (-tg.where(chosen, F.log_softmax(b), 0.0).sum(axis=-1)).mean().numpy())
        np.testing.assert_array_equal(a.grad.numpy(), b.grad.numpy())


# --- shape and indexing ----------------------------------------------------------------------------------------
@st.composite
def reshapes(draw):
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=4))
    kind = draw(st.sampled_from(["permuted", "flat", "with -1"]))
    if kind == "flat":
        return shape, (int(np.prod(shape)),)
    target = list(draw(st.permutations(shape)))
    target.insert(draw(st.integers(0, len(target))), 1)
    if kind == "with -1":
        target[draw(st.integers(0, len(target) - 1))] = -1
    return shape, tuple(target)


@pytest.mark.primitive("reshape")
@GRAD
@given(case=reshapes(), seed=seeds)
def test_reshape_vjp(case, seed):
    shape, target = case
    check_vjp("reshape", lambda x: x.reshape(target), lambda x: anp.reshape(x, target), [values(seed, shape)], seed=seed)


@st.composite
def transposes(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4))
    return shape, tuple(draw(st.permutations(range(len(shape)))))


@pytest.mark.primitive("transpose")
@GRAD
@given(case=transposes(), seed=seeds)
def test_transpose_vjp(case, seed):
    shape, axes = case
    check_vjp("transpose", lambda x: x.permute(axes), lambda x: anp.transpose(x, axes), [values(seed, shape)], seed=seed)


@st.composite
def basic_indexing(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5))
    return shape, draw(hnp.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True))


@pytest.mark.primitive("getitem")
@GRAD
@given(case=basic_indexing(), seed=seeds)
def test_getitem_vjp_basic_slices(case, seed):
    shape, index = case
    check_vjp("getitem", lambda x: x[index], lambda x: x[index], [values(seed, shape)], seed=seed)


@st.composite
def integer_indexing(draw):
    """Integer index arrays, always with at least one repeated index, so the VJP must scatter-add."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    layout = draw(st.sampled_from(["first axis", "second axis", "two axes", "2-d index"]))
    if len(shape) < 2:
        layout = "first axis"
    rng = np.random.default_rng(draw(seeds))
    n = draw(st.integers(1, 5))

    def index_for(axis):
        i = rng.integers(-shape[axis], shape[axis], size=n)
        return np.concatenate([i, i[:1]])  # a repeated index, possibly written once negative once not

    if layout == "first axis":
        return shape, index_for(0)
    if layout == "second axis":
        return shape, (slice(None), index_for(1))
    if layout == "two axes":
        return shape, (index_for(0), index_for(1))
    return shape, index_for(0).reshape(1, -1).repeat(2, axis=0)


@pytest.mark.primitive("getitem")
@GRAD
@given(case=integer_indexing(), seed=seeds)
def test_getitem_vjp_integer_arrays_scatter_add(case, seed):
    shape, index = case
    check_vjp("getitem", lambda x: x[index], lambda x: x[index], [values(seed, shape)], seed=seed)


@st.composite
def mask_indexing(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    layout = draw(st.sampled_from(["full mask", "first-axis mask", "mask and slice"]))
    rng = np.random.default_rng(draw(seeds))
    if layout == "full mask":
        return shape, rng.random(shape) < 0.5
    mask = rng.random(shape[0]) < 0.5
    if layout == "mask and slice" and len(shape) > 1:
        return shape, (mask, slice(None, None, -1))
    return shape, mask


@pytest.mark.primitive("getitem")
@GRAD
@given(case=mask_indexing(), seed=seeds)
def test_getitem_vjp_boolean_masks(case, seed):
    shape, index = case
    check_vjp("getitem", lambda x: x[index], lambda x: x[index], [values(seed, shape)], seed=seed)


@pytest.mark.primitive("getitem")
def test_getitem_repeated_index_adds_up():
    x = Tensor(np.arange(4.0), requires_grad=True)
    x[np.array([1, 1, 1, 3, -1])].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0, 3, 0, 2])


@st.composite
def concatenations(draw):
    base = list(draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=3)))
    axis = draw(st.integers(-len(base), len(base) - 1))
    sizes = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    return [tuple(base[:axis % len(base)] + [s] + base[axis % len(base) + 1:]) for s in sizes], axis


@pytest.mark.primitive("concatenate")
@GRAD
@given(case=concatenations(), seed=seeds)
def test_concatenate_vjp(case, seed):
    in_shapes, axis = case
    inputs = [values(seed + i, s) for i, s in enumerate(in_shapes)]
    check_vjp("concatenate", lambda *xs: tg.concatenate(xs, axis=axis), lambda *xs: anp.concatenate(xs, axis=axis),
              inputs, seed=seed)


@st.composite
def stackings(draw):
    shape = draw(shapes)
    return shape, draw(st.integers(1, 3)), draw(st.integers(-len(shape) - 1, len(shape)))


@pytest.mark.primitive("stack")
@GRAD
@given(case=stackings(), seed=seeds)
def test_stack_vjp(case, seed):
    shape, count, axis = case
    inputs = [values(seed + i, shape) for i in range(count)]
    check_vjp("stack", lambda *xs: tg.stack(xs, axis=axis), lambda *xs: anp.stack(xs, axis=axis), inputs, seed=seed)


@pytest.mark.primitive("where")
@GRAD
@given(shapes=broadcast_triples, seed=seeds)
def test_where_vjp_with_broadcasting(shapes, seed):
    c_shape, a_shape, b_shape = shapes.input_shapes
    condition = np.random.default_rng(seed).random(c_shape) < 0.5
    check_vjp("where", lambda a, b: tg.where(condition, a, b), _autograd_where(condition, shapes.result_shape),
              [values(seed + 1, a_shape), values(seed + 2, b_shape)], seed=seed)


def _autograd_where(condition, shape):
    # autograd's where does not sum its gradient back over broadcast axes: broadcast first, by adding zeros
    zeros = np.zeros(shape)
    return lambda a, b: anp.where(condition, a + zeros, b + zeros)


@pytest.mark.primitive("cast")
@GRAD
@given(shape=shapes, seed=seeds)
def test_cast_vjp(shape, seed):
    # a cast to the same dtype runs the primitive with nothing rounded: the check is exact
    check_vjp("cast", lambda x: apply(PRIMITIVES["cast"], x, dtype=np.dtype(np.float64)) * 3.0,
              lambda x: x.astype(np.float64) * 3.0, [values(seed, shape)], seed=seed)
    # through float32 and back: the forward rounds to 24 bits, so finite differences need a large step and
    # a loose tolerance; the comparison with autograd stays at rtol 1e-10
    check_vjp("cast", lambda x: x.to(np.float32).to(np.float64) * 3.0,
              lambda x: x.astype(np.float32).astype(np.float64) * 3.0, [values(seed, shape)], seed=seed,
              eps=1e-2, atol=1e-3, rtol=1e-3)


@pytest.mark.primitive("cast")
def test_cast_gradient_has_the_input_dtype():
    x = Tensor(np.array([1.0, 2.0], dtype=np.float32), requires_grad=True)
    y = x.to(np.float64)
    assert y.dtype == np.float64
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 4.0])


# --- every primitive, once, on each backend present --------------------------------------------------------------
def _r(*shape, seed=0, low=-2.0, high=2.0):
    return np.random.default_rng(seed + len(shape)).uniform(low, high, size=shape)


_cond = np.array([[True, False, True]])
_targets = np.array([[0, 3, 3], [1, 2, 0]])
EXAMPLES = {
    "add": (lambda a, b: a + b, lambda a, b: a + b, [_r(2, 3), _r(3)]),
    "mul": (lambda a, b: a * b, lambda a, b: a * b, [_r(2, 1, 3), _r(4, 1)]),
    "div": (lambda a, b: a / b, lambda a, b: a / b, [_r(2, 3), _r(3, low=0.5)]),
    "neg": (lambda x: -x, lambda x: -x, [_r(2, 3)]),
    "pow": (lambda x: x**1.5, lambda x: x**1.5, [_r(2, 3, low=0.5)]),
    "power": (lambda x, y: x**y, lambda x, y: x**y, [_r(2, 3, low=0.5), _r(3)]),
    "maximum": (tg.maximum, anp.maximum, [_r(2, 3), _r(3, seed=7)]),
    "exp": (Tensor.exp, anp.exp, [_r(2, 3)]),
    "log": (Tensor.log, anp.log, [_r(2, 3, low=0.5)]),
    "tanh": (Tensor.tanh, anp.tanh, [_r(2, 3)]),
    "sigmoid": (Tensor.sigmoid, lambda x: 1 / (1 + anp.exp(-x)), [_r(2, 3)]),
    "relu": (Tensor.relu, lambda x: anp.maximum(x, 0.0), [np.array([[-1.5, 0.3, 2.0], [0.7, -0.2, -3.0]])]),
    "abs": (Tensor.abs, anp.abs, [np.array([[-1.5, 0.3, 2.0], [0.7, -0.2, -3.0]])]),
    "matmul": (lambda a, b: a @ b, lambda a, b: a @ b, [_r(2, 1, 3, 4), _r(5, 4, 2)]),
    "sum": (lambda x: x.sum(axis=(0, 2), keepdims=True), lambda x: anp.sum(x, axis=(0, 2), keepdims=True), [_r(2, 3, 4)]),
    "max": (lambda x: x.max(axis=1), lambda x: anp.max(x, axis=1), [_r(2, 3, 4)]),
    "logsumexp": (lambda x: x.logsumexp(axis=-1), lambda x: anp.log(anp.sum(anp.exp(x), axis=-1)), [_r(2, 3, 4)]),
    "log_softmax": (lambda x: F.log_softmax(x, axis=1), lambda x: _anp_log_softmax(x, 1), [_r(2, 3, 4)]),
    "softmax_cross_entropy": (lambda x: _ce(x, _targets), lambda x: _anp_ce(x, _targets), [_r(2, 3, 4)]),
    "reshape": (lambda x: x.reshape(4, -1), lambda x: anp.reshape(x, (4, 6)), [_r(2, 3, 4)]),
    "transpose": (lambda x: x.transpose(2, 0, 1), lambda x: anp.transpose(x, (2, 0, 1)), [_r(2, 3, 4)]),
    "getitem": (lambda x: x[np.array([0, 2, 0]), 1:], lambda x: x[np.array([0, 2, 0]), 1:], [_r(3, 4)]),
    "concatenate": (lambda a, b: tg.concatenate([a, b], axis=1), lambda a, b: anp.concatenate([a, b], axis=1),
                    [_r(2, 3), _r(2, 1)]),
    "stack": (lambda a, b: tg.stack([a, b], axis=-1), lambda a, b: anp.stack([a, b], axis=-1), [_r(2, 3), _r(2, 3, seed=5)]),
    "where": (lambda a, b: tg.where(_cond, a, b), _autograd_where(_cond, (2, 3)), [_r(2, 3), _r(2, 1)]),
    "cast": (lambda x: x.to(np.float32).to(np.float64), lambda x: x.astype(np.float32).astype(np.float64), [_r(2, 3)]),
}


def test_examples_cover_the_engine_primitives():
    assert set(EXAMPLES) == ENGINE_PRIMITIVES
    assert ENGINE_PRIMITIVES <= set(PRIMITIVES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_primitive_gradients_on_each_backend(name, xp_backend):
    ours, theirs, inputs = EXAMPLES[name]
    options = {"eps": 1e-2, "atol": 1e-3, "rtol": 1e-3} if name == "cast" else {}
    if name == "where":  # the condition must live where the data does
        cond = backend.to_backend(_cond, backend.backend_name())
        ours = lambda a, b: tg.where(cond, a, b)  # noqa: E731
    check_vjp(name, ours, theirs, inputs, **options)


# --- the registry itself ---------------------------------------------------------------------------------------------
def _import_every_module():
    """Import every module of the package, so primitives registered outside ops.py (rnn.py, ...) are listed."""
    for module in pkgutil.iter_modules(tg.__path__):
        importlib.import_module(f"{tg.__name__}.{module.name}")


def _marked_primitives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        for name in MARKER.findall(path.read_text(encoding="utf-8")):
            found.setdefault(name, []).append(path.name)
    return found


def test_marker_pattern_finds_marks():
    mark = "pytest.mark." + "primitive"  # spelled in two pieces, so this file's scan does not count these samples
    source = f'@{mark}("tanh")\npytest.param(1, marks={mark}( \'rnn_tanh\' ))'
    assert MARKER.findall(source) == ["tanh", "rnn_tanh"]
    assert MARKER.findall(f'pytest.mark.primitiv("x") mark.primitive("y") {mark}(name)') == []


def _primitives_without_a_test() -> list[str]:
    _import_every_module()
    return sorted(set(PRIMITIVES) - set(_marked_primitives()))


def test_every_primitive_has_a_marked_gradient_test():
    missing = _primitives_without_a_test()
    assert not missing, (
        f"registered primitives without a gradient test: {missing}; add a test decorated "
        '@pytest.mark.primitive("<name>") that checks its VJP (tinygrad_birnn.gradcheck and a trusted peer)'
    )


def test_a_primitive_without_a_test_is_reported(monkeypatch):
    monkeypatch.setitem(PRIMITIVES, "untested_op", dataclasses.replace(PRIMITIVES["neg"], name="untested_op"))
    assert "untested_op" in _primitives_without_a_test()
    with pytest.raises(AssertionError, match=r"without a gradient test: \[.*'untested_op'"):
        test_every_primitive_has_a_marked_gradient_test()


def test_every_marked_primitive_is_registered():
    _import_every_module()
    stale = {name: files for name, files in _marked_primitives().items() if name not in PRIMITIVES}
    assert not stale, f"tests marked with primitives that are not registered (typo or removed primitive?): {stale}"


def test_registry_entries_are_complete_and_unique():
    for name, prim in PRIMITIVES.items():
        assert prim.name == name
        assert callable(prim.forward) and callable(prim.vjp)
        assert isinstance(prim.formula, str) and prim.formula
    with pytest.raises(ValueError, match="'tanh' is already registered"):
        ops.defprim("tanh", np.tanh, lambda g, ans, x: (g,), "")
    assert PRIMITIVES["tanh"].forward is not np.tanh  # the failed registration changed nothing


# --- the checks are not vacuous: a planted wrong gradient must fail them -------------------------------------------
def _scaled(name, factor):
    original = PRIMITIVES[name].vjp
    return lambda *args, **kwargs: tuple(None if g is None else g * factor for g in original(*args, **kwargs))


def _getitem_by_assignment(g, ans, x, index):
    out = np.zeros_like(x)
    out[index] = g  # loses all but one contribution of a repeated index
    return (out,)


BROKEN = {
    "tanh (1 + ans**2)": ("tanh", lambda g, ans, x: (g * (1 + ans**2),), Tensor.tanh, [_r(2, 3)]),
    "mul (inputs swapped)": ("mul", lambda g, ans, a, b: (g * a, g * b), lambda a, b: a * b, [_r(2, 3), _r(3, seed=4)]),
    "matmul (1% off)": ("matmul", _scaled("matmul", 1.01), lambda a, b: a @ b, [_r(2, 3), _r(3, 4)]),
    "sum (no broadcast back)": ("sum", lambda g, ans, x, axis=None, keepdims=False: (np.ones_like(x),),
                                lambda x: (x.sum(axis=0) * np.arange(1.0, 4.0)), [_r(2, 3)]),
    "getitem (repeats lost)": ("getitem", _getitem_by_assignment, lambda x: x[np.array([0, 0, 1])], [_r(3)]),
    "log_softmax (softmax term left out)": ("log_softmax", lambda g, ans, x, axis=-1: (g,),
                                            lambda x: F.log_softmax(x) * np.arange(1.0, 4.0), [_r(2, 3)]),
    "softmax_cross_entropy (the target's -1 left out)": (
        "softmax_cross_entropy", lambda g, ans, x, index, res: (np.exp(res[0] - res[1]) * g[..., None],),
        lambda x: _ce(x, np.array([0, 2])), [_r(2, 3)]),
    "linear (weight gradient transposed wrongly)": (
        "linear", lambda g, ans, x, w, b=None: (g @ w, x.T @ g, g),  # dW = (g^T x)^T: wrong
        lambda x, w, b: F.linear(x, w, b), [_r(3, 3), _r(3, 3, seed=5), _r(3, seed=6)]),
    "logsumexp (unnormalised)": ("logsumexp", lambda g, ans, x, axis=-1, keepdims=False: (g[..., None] * np.exp(x),),
                                 lambda x: x.logsumexp(axis=-1), [_r(2, 3)]),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_vjp_is_caught(case, monkeypatch):
    name, wrong_vjp, f, inputs = BROKEN[case]
    assert gradcheck(f, inputs)  # the function passes with the real gradient ...
    monkeypatch.setitem(PRIMITIVES, name, dataclasses.replace(PRIMITIVES[name], vjp=wrong_vjp))
    with pytest.raises(GradcheckError, match="analytic gradient|dot-product test failed"):
        gradcheck(f, inputs)  # ... and fails with the planted one
    with pytest.raises(GradcheckError, match="dot-product test failed"):
        gradcheck(f, inputs, max_elements=0)  # the random-direction test alone catches it too


def test_tanh_broken_as_in_the_issue_fails_the_primitive_check(monkeypatch):
    monkeypatch.setitem(PRIMITIVES, "tanh", dataclasses.replace(PRIMITIVES["tanh"], vjp=lambda g, ans, x: (g * (1 + ans**2),)))
    with pytest.raises(GradcheckError):
        check_vjp("tanh", Tensor.tanh, anp.tanh, [_r(3, 2)])


# --- unbroadcast ------------------------------------------------------------------------------------------------------
@GRAD
@given(shapes=broadcast_pairs, seed=seeds)
def test_unbroadcast_sums_over_broadcast_axes(shapes, seed):
    (shape, other), result = shapes.input_shapes, shapes.result_shape
    g = values(seed, result)
    got = unbroadcast(g, shape)
    assert got.shape == tuple(shape)
    # the adjoint of broadcasting: <broadcast(u), g> == <u, unbroadcast(g)> for every u
    u = values(seed + 1, shape)
    np.testing.assert_allclose((np.broadcast_to(u, result) * g).sum(), (u * got).sum(), rtol=1e-12, atol=1e-12)


def test_unbroadcast_examples():
    g = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(unbroadcast(g, (4,)), g.sum(axis=(0, 1)))
    np.testing.assert_array_equal(unbroadcast(g, (3, 1)), g.sum(axis=(0, 2))[:, None])
    np.testing.assert_array_equal(unbroadcast(g, ()), g.sum())
    assert unbroadcast(g, (2, 3, 4)) is g


def test_apply_records_only_when_a_gradient_is_needed():
    x, c = Tensor(np.ones(2), requires_grad=True), Tensor(np.ones(2))
    assert apply(PRIMITIVES["add"], c, c)._node is None
    node = apply(PRIMITIVES["add"], x, c)._node
    assert node is not None and node.prim is PRIMITIVES["add"] and node.parents == (x, c)
