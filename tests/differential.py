"""The machinery of the differential tests: run one computation in the library and in PyTorch on the same
inputs and compare everything a user can observe.

:func:`compare` checks, for a function written once against a tiny common interface (``ours`` gets
``tinygrad_birnn`` Tensors, ``theirs`` torch tensors): whether each side raises, the result's shape,
dtype and values (NaN equal to NaN; integers and bools exactly), and, when the inputs are floating point,
the gradient of a random contraction of the output with respect to every input.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygrad_birnn import Tensor

torch = pytest.importorskip("torch")

DTYPES = {np.dtype(np.bool_): torch.bool, np.dtype(np.int32): torch.int32, np.dtype(np.int64): torch.int64,
          np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
TOLERANCE = {np.dtype(np.float32): (2e-5, 1e-6), np.dtype(np.float64): (1e-10, 1e-12)}

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
nonempty_shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)
all_dtypes = st.sampled_from(list(DTYPES))
float_dtypes = st.sampled_from(FLOATS)
number_dtypes = st.sampled_from([np.dtype(np.int32), np.dtype(np.int64), *FLOATS])


def elements(dtype: np.dtype, extreme: bool = False, low: float = -3.0, high: float = 3.0):
    """Values of ``dtype``: moderate ones, or (``extreme``) also +-inf, nan, the largest and the tiniest."""
    if dtype == np.bool_:
        return st.booleans()
    if dtype.kind == "i":
        return st.integers(-5, 5)
    width = 32 if dtype == np.float32 else 64
    moderate = st.floats(float(dtype.type(low)), float(dtype.type(high)), width=width)
    if not extreme:
        return moderate
    info = np.finfo(dtype)
    specials = st.sampled_from([np.inf, -np.inf, np.nan, float(info.max), -float(info.max), float(info.tiny),
                                0.0, -0.0, 88.0, -88.0, 20.0, -20.0])
    return st.one_of(moderate, specials)


def arrays(dtype, shape, extreme=False, low=-3.0, high=3.0):
    return hnp.arrays(dtype, shape, elements=elements(np.dtype(dtype), extreme, low, high))


def _run(fn, inputs):
    try:
        return fn(*inputs), None
    except Exception as error:  # noqa: BLE001 (whether each side raises is part of the comparison)
        return None, error


def _flatten(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def assert_same_values(ours, theirs, dtype=None, what="result"):
    """``ours`` (a Tensor or array) equals ``theirs`` (a torch tensor) in shape, dtype and values."""
    got = ours.numpy() if isinstance(ours, Tensor) else np.asarray(ours)
    want = theirs.detach().cpu().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, PyTorch {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, PyTorch {want.dtype}"
    if got.dtype.kind in "biu":
        np.testing.assert_array_equal(got, want, err_msg=what)
    else:
        rtol, atol = TOLERANCE[np.dtype(dtype or got.dtype)]
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)


def compare(ours, theirs, arrays_in, grad=True, seed=0, scalars=()):
    """Run ``ours`` on Tensors and ``theirs`` on torch tensors made from ``arrays_in`` (plus the Python
    values ``scalars``, passed to both as they are) and compare raising, values, dtypes and gradients."""
    arrays_in = [np.asarray(a) for a in arrays_in]
    differentiable = grad and all(a.dtype in FLOATS for a in arrays_in) and len(arrays_in) > 0
    mine = [Tensor(a, requires_grad=differentiable) for a in arrays_in]
    peers = [torch.tensor(a, requires_grad=differentiable) for a in arrays_in]
    out, error = _run(ours, mine + list(scalars))
    ref, ref_error = _run(theirs, peers + list(scalars))
    if ref_error is not None or error is not None:
        assert (error is None) == (ref_error is None), (
            f"PyTorch {'raised ' + repr(ref_error) if ref_error else 'did not raise'}, "
            f"the library {'raised ' + repr(error) if error else 'did not raise'}")
        return None
    outs, refs = _flatten(out), _flatten(ref)
    assert len(outs) == len(refs)
    for k, (o, r) in enumerate(zip(outs, refs)):
        assert_same_values(o, r, what=f"output {k}")
    if not differentiable:
        return out
    rng = np.random.default_rng(seed)
    float_outs = [(o, r) for o, r in zip(outs, refs) if r.dtype.is_floating_point and r.requires_grad]
    if not float_outs:
        return out
    total_ours, total_theirs = None, None
    for o, r in float_outs:
        v = rng.standard_normal(r.shape).astype(o.dtype)
        term_o = (o * Tensor(v)).sum()
        term_t = (r * torch.tensor(v)).sum()
        total_ours = term_o if total_ours is None else total_ours + term_o
        total_theirs = term_t if total_theirs is None else total_theirs + term_t
    total_ours.backward()
    total_theirs.backward()
    for i, (m, p) in enumerate(zip(mine, peers)):
        if p.grad is None:
            assert m.grad is None or not np.any(m.grad.numpy()), f"input {i}: PyTorch gives no gradient"
            continue
        assert m.grad is not None, f"input {i}: no gradient, PyTorch has one"
        assert_same_values(m.grad, p.grad, what=f"gradient of input {i}")
    return out
