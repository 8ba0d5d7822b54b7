"""softmax, log_softmax, linear, cross_entropy (with masks), mse_loss and dropout: values and gradients against
PyTorch (float64), stability at +-1000, and the errors for bad targets."""
from __future__ import annotations

import numpy as np
import pytest

import tinygrad_birnn as tg
from tinygrad_birnn import Tensor, backend, gradcheck
from tinygrad_birnn import functional as F

EXTREME = np.array([[1000.0, -1000.0, 0.0], [1000.0, 1000.0, 1000.0], [-1000.0, -1000.0, -999.0], [0.0, 1.0, 2.0]])


def reference_log_softmax(x, axis=-1):
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_and_log_softmax_are_stable_at_plus_minus_1000(dtype):
    x = Tensor(EXTREME.astype(dtype), requires_grad=True)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        log_p = F.log_softmax(x)
        p = F.softmax(x)
        (log_p[:, 0].sum() + p[:, 1].sum()).backward()
    assert log_p.dtype == dtype and p.dtype == dtype and x.grad.dtype == dtype
    expected = reference_log_softmax(EXTREME)
    np.testing.assert_allclose(log_p.numpy(), expected, rtol=1e-6 if dtype == np.float32 else 1e-14)
    np.testing.assert_allclose(p.numpy(), np.exp(expected), rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(p.numpy().sum(axis=1), 1.0, rtol=1e-6)
    assert log_p.numpy()[0, 1] == -2000.0  # exact, not -inf
    assert np.isfinite(x.grad.numpy()).all()


def test_softmax_and_log_softmax_match_torch_with_gradients(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((3, 4, 5)) * 5
    for axis in (-1, 0, 1):
        ours = Tensor(x, requires_grad=True)
        theirs = torch.tensor(x, requires_grad=True)
        weights = rng.standard_normal(x.shape)
        ((F.softmax(ours, axis) + F.log_softmax(ours, axis)) * weights).sum().backward()
        s, ls = torch.softmax(theirs, dim=axis), torch.log_softmax(theirs, dim=axis)
        ((s + ls) * torch.tensor(weights)).sum().backward()
        np.testing.assert_allclose(F.softmax(Tensor(x), axis).numpy(), s.detach().numpy(), rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(F.log_softmax(Tensor(x), axis).numpy(), ls.detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_softmax_gradients_pass_gradcheck(rng):
    assert gradcheck(lambda x: F.softmax(x, axis=0), [rng.standard_normal((3, 2))])
    assert gradcheck(lambda x: F.log_softmax(x), [rng.standard_normal((2, 4)) * 10])


def test_linear_is_x_w_transposed_plus_b(rng):
    x, w, b = rng.standard_normal((5, 3)), rng.standard_normal((2, 3)), rng.standard_normal(2)
    np.testing.assert_allclose(F.linear(Tensor(x), Tensor(w), Tensor(b)).numpy(), x @ w.T + b, rtol=1e-14)
    np.testing.assert_allclose(F.linear(Tensor(x), Tensor(w)).numpy(), x @ w.T, rtol=1e-14)
    assert gradcheck(F.linear, [x, w, b])


# --- cross_entropy ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_torch(reduction, rng):
    torch = pytest.importorskip("torch")
    logits = rng.standard_normal((7, 5)) * 3
    targets = rng.integers(0, 5, size=7)
    ours = Tensor(logits, requires_grad=True)
    loss = F.cross_entropy(ours, targets, reduction=reduction)
    theirs = torch.tensor(logits, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(theirs, torch.tensor(targets), reduction=reduction)
    np.testing.assert_allclose(loss.numpy(), ref.detach().numpy(), rtol=1e-12)
    cotangent = rng.standard_normal(loss.shape)
    loss.backward(cotangent)
    ref.backward(torch.tensor(cotangent))
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_cross_entropy_on_sequences_matches_torch_flattened(rng):
    torch = pytest.importorskip("torch")
    logits = rng.standard_normal((4, 3, 6))  # (T, B, C)
    targets = rng.integers(0, 6, size=(4, 3))
    ours = Tensor(logits, requires_grad=True)
    F.cross_entropy(ours, Tensor(targets)).backward()
    theirs = torch.tensor(logits.reshape(12, 6), requires_grad=True)
    ref = torch.nn.functional.cross_entropy(theirs, torch.tensor(targets.reshape(12)))
    ref.backward()
    assert F.cross_entropy(Tensor(logits), targets).item() == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(ours.grad.numpy().reshape(12, 6), theirs.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_cross_entropy_with_a_mask(rng):
    torch = pytest.importorskip("torch")
    logits = rng.standard_normal((5, 3, 4))  # (T, B, C)
    targets = rng.integers(0, 4, size=(5, 3))
    mask = np.ones((5, 3), dtype=bool)
    mask[3:, 0] = mask[4:, 2] = False  # padded steps of shorter sequences
    ours = Tensor(logits, requires_grad=True)
    loss = F.cross_entropy(ours, targets, mask=mask)
    loss.backward()
    # the mean divides by the number of real positions (the mask's sum), not by T*B
    per_position = torch.nn.functional.cross_entropy(torch.tensor(logits.reshape(15, 4)), torch.tensor(targets.reshape(15)),
                                                     reduction="none").numpy().reshape(5, 3)
    assert loss.item() == pytest.approx(per_position[mask].sum() / mask.sum(), rel=1e-12)
    assert loss.item() != pytest.approx(per_position[mask].sum() / mask.size, rel=1e-6)
    # masked positions contribute nothing: no gradient reaches them, and changing their logits changes nothing
    assert (ours.grad.numpy()[~mask] == 0).all() and (ours.grad.numpy()[mask] != 0).any()
    scrambled = logits.copy()
    scrambled[~mask] = rng.standard_normal(scrambled[~mask].shape) * 100
    assert F.cross_entropy(Tensor(scrambled), targets, mask=mask).item() == pytest.approx(loss.item(), rel=1e-14)
    # a float (weight) mask or a Tensor mask gives the same; 'sum' and 'none' weight each position
    float_mask = Tensor(mask.astype(np.float64))
    assert F.cross_entropy(Tensor(logits), targets, mask=float_mask).item() == pytest.approx(loss.item(), rel=1e-14)
    summed = F.cross_entropy(Tensor(logits), targets, mask=mask, reduction="sum")
    assert summed.item() == pytest.approx(per_position[mask].sum(), rel=1e-12)
    np.testing.assert_allclose(F.cross_entropy(Tensor(logits), targets, mask=mask, reduction="none").numpy(),
                               per_position * mask, rtol=1e-12)
    assert gradcheck(lambda z: F.cross_entropy(z, targets, mask=mask), [logits])


def test_cross_entropy_rejects_bad_targets():
    logits = Tensor(np.zeros((2, 4)), requires_grad=True)
    with pytest.raises(TypeError, match="targets must be integer class indices; got dtype float64"):
        F.cross_entropy(logits, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"targets have shape \(3,\), expected \(2,\) "
                                         r"\(the logits' shape \(2, 4\) without its class axis\)"):
        F.cross_entropy(logits, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 4\); got values from 0 to 4"):
        F.cross_entropy(logits, np.array([0, 4]))
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 4\); got values from -1 to 2"):
        F.cross_entropy(logits, [-1, 2])
    with pytest.raises(ValueError, match=r"mask has shape \(3,\), expected \(2,\)"):
        F.cross_entropy(logits, np.array([0, 1]), mask=np.ones(3))
    with pytest.raises(ValueError, match="reduction must be 'mean', 'sum' or 'none'; got 'avg'"):
        F.cross_entropy(logits, np.array([0, 1]), reduction="avg")
    assert logits.grad is None


def test_cross_entropy_keeps_float32(rng):
    logits = Tensor(rng.standard_normal((3, 4)).astype(np.float32), requires_grad=True)
    loss = F.cross_entropy(logits, np.array([0, 1, 3]), mask=np.array([True, True, False]))
    assert loss.dtype == np.float32
    loss.backward()
    assert logits.grad.dtype == np.float32


# --- mse_loss ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_matches_torch(reduction, rng):
    torch = pytest.importorskip("torch")
    prediction, target = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    ours = Tensor(prediction, requires_grad=True)
    loss = F.mse_loss(ours, target, reduction=reduction)
    theirs = torch.tensor(prediction, requires_grad=True)
    ref = torch.nn.functional.mse_loss(theirs, torch.tensor(target), reduction=reduction)
    np.testing.assert_allclose(loss.numpy(), ref.detach().numpy(), rtol=1e-13)
    cotangent = rng.standard_normal(loss.shape)
    loss.backward(cotangent)
    ref.backward(torch.tensor(cotangent))
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-12)


def test_mse_loss_by_hand_with_a_mask_and_errors(rng):
    prediction, target = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    mask = rng.random((4, 3)) < 0.6
    mask[0, 0] = True
    expected = ((prediction - target) ** 2 * mask).sum() / mask.sum()
    assert F.mse_loss(Tensor(prediction), Tensor(target), mask=mask).item() == pytest.approx(expected, rel=1e-13)
    assert F.mse_loss(Tensor(prediction), target).item() == pytest.approx(((prediction - target) ** 2).mean(), rel=1e-13)
    assert gradcheck(lambda p, t: F.mse_loss(p, t, mask=mask), [prediction, target])
    with pytest.raises(ValueError, match=r"mse_loss: target has shape \(3,\), expected \(4, 3\)"):
        F.mse_loss(Tensor(prediction), np.ones(3))
    with pytest.raises(ValueError, match=r"mse_loss: mask has shape \(4,\), expected \(4, 3\)"):
        F.mse_loss(Tensor(prediction), target, mask=np.ones(4))


# --- dropout -------------------------------------------------------------------------------------------------------------
def test_dropout_is_the_identity_when_not_training_or_p_is_0():
    x = Tensor(np.ones((3, 4)), requires_grad=True)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0, training=True) is x


def test_dropout_in_training_zeroes_and_rescales_and_preserves_the_mean():
    tg.manual_seed(0)
    p = 0.3
    x = Tensor(np.ones(200_000, dtype=np.float32), requires_grad=True)
    y = F.dropout(x, p)
    out = y.numpy()
    assert y.dtype == np.float32
    assert set(np.unique(out).tolist()) == {0.0, np.float32(1 / (1 - p))}
    assert abs((out == 0).mean() - p) < 0.01
    assert abs(out.mean() - 1.0) < 0.02  # the expectation is preserved
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), out)  # d/dx of x*keep/(1-p) is keep/(1-p)


def test_dropout_is_reproducible_with_a_seed():
    x = Tensor(np.ones((50, 20)))
    tg.manual_seed(123)
    a = F.dropout(x, 0.5).numpy()
    tg.manual_seed(123)
    b = F.dropout(x, 0.5).numpy()
    c = F.dropout(x, 0.5).numpy()
    assert np.array_equal(a, b) and not np.array_equal(b, c)


def test_dropout_rejects_bad_probabilities():
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match=rf"dropout probability must be in \[0, 1\]; got {p}"):
            F.dropout(Tensor([1.0]), p)
    # p = 1 zeroes everything, as torch.nn.functional.dropout(x, 1.0)
    np.testing.assert_array_equal(F.dropout(Tensor([1.0, 2.0]), 1.0).numpy(), [0.0, 0.0])


def test_functional_on_each_backend(xp_backend):
    name = backend.backend_name()
    logits = Tensor(EXTREME, requires_grad=True)
    loss = F.cross_entropy(logits, np.array([0, 1, 2, 2]), mask=np.array([1.0, 1.0, 1.0, 0.0]))
    loss.backward()
    assert loss.device == name and logits.grad.device == name
    expected = -(reference_log_softmax(EXTREME)[np.arange(3), [0, 1, 2]]).mean()
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    tg.manual_seed(0)
    dropped = F.dropout(Tensor(np.ones((10, 10))), 0.5)
    assert dropped.device == name
