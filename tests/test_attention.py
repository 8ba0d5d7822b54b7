"""Additive attention and the attention encoder–decoder: gradients by finite differences, values and
gradients against the same equations written in PyTorch (float64, 1e-9) on hypothesis-drawn shapes and
lengths, exactly zero weight (and gradient) at masked positions, errors on bad input, and the decoders:
teacher forcing by hand, beam search of width 1 = greedy, a wide beam = exhaustive search."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_birnn as tg
from tinygrad_birnn import Tensor, functional as F, gradcheck, nn, seq2seq

SETTINGS = settings(max_examples=30, deadline=None)


def make_attention(query_size, key_size, hidden_size, batch_first=False, seed=0):
    tg.manual_seed(seed)
    return nn.AdditiveAttention(query_size, key_size, hidden_size, batch_first=batch_first).double()


def layout(array, batch_first):
    """(T, B, ...) -> the module's layout."""
    return np.ascontiguousarray(np.swapaxes(array, 0, 1)) if batch_first else array


@st.composite
def problems(draw):
    B = draw(st.integers(0, 3))
    T = draw(st.integers(1, 5))
    sizes = draw(st.tuples(*[st.integers(1, 4)] * 4))  # query, key, hidden, value
    lengths = draw(st.lists(st.integers(1, T), min_size=B, max_size=B))
    scale = draw(st.sampled_from([1e-3, 1.0, 30.0]))  # tiny, ordinary and saturating scores
    return B, T, sizes, np.array(lengths, dtype=np.int64), scale, draw(st.booleans()), draw(st.integers(0, 999))


# --- against PyTorch ------------------------------------------------------------------------------------------
def torch_attention(torch, query, keys, values, W, U, v, lengths):
    """The paper's equations in PyTorch: e_j = v^T tanh(W q + U k_j), masked softmax, weighted sum."""
    scores = torch.tanh((query @ W.T)[None] + keys @ U.T) @ v  # (T, B)
    T = keys.shape[0]
    real = torch.arange(T)[:, None] < torch.as_tensor(lengths)[None, :]
    weights = torch.softmax(scores.masked_fill(~real, float("-inf")), dim=0)
    return (weights[:, :, None] * values).sum(0), weights.T


@SETTINGS
@given(problem=problems())
def test_values_and_gradients_match_pytorch(problem):
    torch = pytest.importorskip("torch")
    B, T, (Q, K, A, V), lengths, scale, batch_first, seed = problem
    rng = np.random.default_rng(seed)
    attention = make_attention(Q, K, A, batch_first, seed)
    for p in attention.parameters():
        p.data *= scale
    arrays = {"query": rng.standard_normal((B, Q)), "keys": rng.standard_normal((T, B, K)),
              "values": rng.standard_normal((T, B, V))}
    ours = {k: Tensor(layout(a, batch_first) if k != "query" else a, requires_grad=True) for k, a in arrays.items()}
    context, weights = attention(ours["query"], ours["keys"], ours["values"], lengths=lengths)
    theirs = {k: torch.tensor(a, requires_grad=True) for k, a in arrays.items()}
    params = [torch.tensor(p.numpy(), requires_grad=True) for p in
              (attention.query_weight, attention.key_weight, attention.score_weight)]
    t_context, t_weights = torch_attention(torch, theirs["query"], theirs["keys"], theirs["values"], *params,
                                           lengths)
    np.testing.assert_allclose(context.numpy(), t_context.detach().numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(weights.numpy(), t_weights.detach().numpy(), rtol=1e-9, atol=1e-9)
    g_context, g_weights = rng.standard_normal((B, V)), rng.standard_normal((B, T))
    ((context * Tensor(g_context)).sum() + (weights * Tensor(g_weights)).sum()).backward()
    ((t_context * torch.tensor(g_context)).sum() + (t_weights * torch.tensor(g_weights)).sum()).backward()
    for k in arrays:
        ours_grad = ours[k].grad.numpy() if ours[k].grad is not None else np.zeros(ours[k].shape)
        theirs_grad = layout(theirs[k].grad.numpy(), batch_first) if k != "query" else theirs[k].grad.numpy()
        np.testing.assert_allclose(ours_grad, theirs_grad, rtol=1e-9, atol=1e-9, err_msg=k)
    for p, t in zip((attention.query_weight, attention.key_weight, attention.score_weight), params):
        ours_grad = p.grad.numpy() if p.grad is not None else np.zeros(p.shape)
        np.testing.assert_allclose(ours_grad, t.grad.numpy(), rtol=1e-9, atol=1e-9)


# --- finite differences -------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_first", [False, True])
def test_gradcheck_every_input_and_parameter(batch_first):
    rng = np.random.default_rng(3)
    attention = make_attention(3, 4, 5, batch_first)
    lengths = np.array([4, 1, 3])
    keys, values = rng.standard_normal((4, 3, 4)), rng.standard_normal((4, 3, 2))
    query = rng.standard_normal((3, 3))

    def f(q, k, v, W, U, s):
        # the parameters are leaves that gradcheck made: the module's own equations run with them
        context, weights = nn.AdditiveAttention.forward(_Bound(attention, W, U, s), q, k, v, lengths=lengths)
        return tg.concatenate([context.reshape(-1), weights.reshape(-1)])

    params = (attention.query_weight.numpy(), attention.key_weight.numpy(), attention.score_weight.numpy())
    assert gradcheck(f, [query, layout(keys, batch_first), layout(values, batch_first), *params])


class _Bound:
    """The module's methods, with leaf tensors in place of its parameters (for gradcheck)."""

    def __init__(self, module, W, U, s):
        self.module, self.query_weight, self.key_weight, self.score_weight = module, W, U, s
        self.query_size, self.key_size, self.hidden_size = module.query_size, module.key_size, module.hidden_size
        self.batch_first = module.batch_first

    _batch_first = nn.AdditiveAttention._batch_first
    project_keys = nn.AdditiveAttention.project_keys
    scores = nn.AdditiveAttention.scores


def test_gradcheck_masked_softmax_at_extreme_scores():
    mask = np.array([[True, True, False], [True, False, False]])
    for scale in (1.0, 1e3):
        x = np.random.default_rng(0).standard_normal((2, 3)) * scale
        assert gradcheck(lambda s: nn.masked_softmax(s, mask), [x])
        weights = nn.masked_softmax(Tensor(x), mask).numpy()
        assert np.isfinite(weights).all() and np.allclose(weights.sum(1), 1.0)


# --- masks ---------------------------------------------------------------------------------------------------
def test_masked_positions_get_exactly_zero_weight_and_gradient():
    rng = np.random.default_rng(1)
    attention = make_attention(3, 4, 5)
    lengths = np.array([5, 2, 1])
    keys = Tensor(rng.standard_normal((5, 3, 4)) * 50, requires_grad=True)  # large keys: saturated scores
    query = Tensor(rng.standard_normal((3, 3)), requires_grad=True)
    context, weights = attention(query, keys, lengths=lengths)
    (context.sum() + (weights * weights).sum()).backward()
    padded = ~(np.arange(5)[None, :] < lengths[:, None])  # (B, T)
    assert (weights.numpy()[padded] == 0.0).all()
    assert (keys.grad.numpy().transpose(1, 0, 2)[padded] == 0.0).all()
    np.testing.assert_allclose(weights.numpy().sum(axis=1), 1.0, rtol=1e-12)


def test_what_lies_past_a_length_changes_nothing():
    rng = np.random.default_rng(2)
    attention = make_attention(2, 3, 4)
    keys = rng.standard_normal((4, 2, 3))
    query = Tensor(rng.standard_normal((2, 2)))
    changed = keys.copy()
    changed[2:, 1] = 1e6  # past the second sequence's length 2
    a = attention(query, Tensor(keys), lengths=[4, 2])
    b = attention(query, Tensor(changed), lengths=[4, 2])
    np.testing.assert_array_equal(a[0].numpy()[1], b[0].numpy()[1])
    np.testing.assert_array_equal(a[1].numpy()[1], b[1].numpy()[1])


def test_mask_and_lengths_agree_and_no_mask_is_plain_softmax():
    rng = np.random.default_rng(4)
    attention = make_attention(2, 3, 4)
    keys, query = Tensor(rng.standard_normal((4, 2, 3))), Tensor(rng.standard_normal((2, 2)))
    by_lengths = attention(query, keys, lengths=[3, 4])[1].numpy()
    by_mask = attention(query, keys, mask=tg.data.lengths_to_mask([3, 4], batch_first=True))[1].numpy()
    np.testing.assert_array_equal(by_lengths, by_mask)
    full = attention(query, keys)[1].numpy()
    np.testing.assert_array_equal(full, attention(query, keys, lengths=[4, 4])[1].numpy())
    scores = attention.scores(query, attention.project_keys(keys))
    np.testing.assert_allclose(full, F.softmax(scores).numpy(), rtol=1e-12)


@pytest.mark.parametrize("kwargs, error, words", [
    ({"lengths": [0, 2]}, ValueError, "lengths must lie in [1, 3]"),
    ({"lengths": [4, 2]}, ValueError, "got values from 2 to 4"),
    ({"lengths": [1.0, 2.0]}, TypeError, "lengths must be integers"),
    ({"lengths": [1, 2, 3]}, ValueError, "shape (2,)"),
    ({"lengths": [1, 2], "mask": np.ones((2, 3))}, ValueError, "not both"),
    ({"mask": np.ones((3, 2))}, ValueError, "mask must have shape (batch, steps) = (2, 3)"),
    ({"mask": np.array([[1, 0, 0], [0, 0, 0]])}, ValueError, "mask rows [1] attend to nothing"),
])
def test_bad_masks_raise_clearly(kwargs, error, words):
    attention = make_attention(2, 3, 4)
    keys, query = Tensor(np.zeros((3, 2, 3))), Tensor(np.zeros((2, 2)))
    with pytest.raises(error) as info:
        attention(query, keys, **kwargs)
    assert words in str(info.value)


def test_bad_shapes_raise_clearly_and_change_nothing():
    attention = make_attention(2, 3, 4)
    before = attention.state_dict()
    keys = Tensor(np.zeros((3, 2, 3)))
    with pytest.raises(ValueError, match=r"query must have shape \(batch, query_size\) = \(2, 2\)"):
        attention(Tensor(np.zeros((2, 5))), keys)
    with pytest.raises(ValueError, match="keys must have shape"):
        attention(Tensor(np.zeros((2, 2))), Tensor(np.zeros((3, 2, 7))))
    with pytest.raises(ValueError, match="values must have the keys' batch and time axes"):
        attention(Tensor(np.zeros((2, 2))), keys, Tensor(np.zeros((4, 2, 1))))
    with pytest.raises(ValueError, match="keys have no positions"):
        attention(Tensor(np.zeros((2, 2))), Tensor(np.zeros((0, 2, 3))))
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        nn.AdditiveAttention(2, 3, 0)
    after = attention.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_float32_by_default_and_state_dict_names():
    attention = nn.AdditiveAttention(2, 3, 4)
    assert [n for n, _ in attention.named_parameters()] == ["query_weight", "key_weight", "score_weight"]
    context, weights = attention(Tensor(np.zeros((1, 2), np.float32)), Tensor(np.ones((2, 1, 3), np.float32)))
    assert context.dtype == np.float32 and weights.dtype == np.float32
    np.testing.assert_array_equal(weights.numpy(), [[0.5, 0.5]])  # equal keys: equal weights


# --- the encoder–decoder -------------------------------------------------------------------------------------
def tiny_model(seed, bidirectional=True, scale=3.0):
    tg.manual_seed(seed)
    model = seq2seq.Seq2Seq(6, 5, embedding_size=3, encoder_size=3, decoder_size=4, attention_size=3,
                            start_index=0, end_index=1, bidirectional=bidirectional).double()
    for p in model.parameters():
        p.data *= scale  # peaked distributions: decoders that disagree would show it
    return model


SOURCE = np.array([[2, 3, 4, 5], [3, 5, 2, 0], [4, 0, 5, 0]])  # (T, B) = (3, 4); lengths below
LENGTHS = np.array([3, 1, 3, 2])


def test_teacher_forcing_by_hand():
    targets = np.array([[7, 8], [9, 0]])  # lengths 2 and 1
    inputs, outputs, lengths = seq2seq.teacher_forcing(targets, [2, 1], start_index=1, end_index=2)
    np.testing.assert_array_equal(inputs, [[1, 1], [7, 8], [9, 0]])
    np.testing.assert_array_equal(outputs, [[7, 8], [9, 2], [2, 0]])
    np.testing.assert_array_equal(lengths, [3, 2])
    with pytest.raises(ValueError, match=r"lengths must be 2 integers in \[0, 2\]"):
        seq2seq.teacher_forcing(targets, [3, 1], 1, 2)


def test_teacher_forced_loss_equals_the_step_by_step_log_probability():
    model = tiny_model(0)
    sequences = [[2, 3], [4], [], [3, 3, 2]]
    targets = np.array([[2, 4, 0, 3], [3, 0, 0, 3], [0, 0, 0, 2]])  # (U, B), padded with 0
    target_lengths = np.array([len(s) for s in sequences])
    loss = model.loss(SOURCE, LENGTHS, targets, target_lengths)
    total = seq2seq.sequence_log_probability(model, SOURCE, LENGTHS, sequences)
    np.testing.assert_allclose(loss.item(), -total.sum() / (target_lengths + 1).sum(), rtol=1e-12)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_gradient_of_the_loss_by_finite_differences(bidirectional):
    model = tiny_model(1, bidirectional, scale=1.0)
    targets, target_lengths = np.array([[2, 3, 4, 2], [4, 0, 4, 0]]), np.array([2, 1, 2, 1])
    loss = model.loss(SOURCE, LENGTHS, targets, target_lengths)
    loss.backward()
    rng = np.random.default_rng(0)
    params = list(model.parameters())
    directions = [rng.standard_normal(p.shape) for p in params]
    analytic = sum(float((p.grad.numpy() * u).sum()) for p, u in zip(params, directions))

    def at(eps):
        for p, u in zip(params, directions):
            p.data = p.data + eps * u
        value = model.loss(SOURCE, LENGTHS, targets, target_lengths).item()
        for p, u in zip(params, directions):
            p.data = p.data - eps * u
        return value

    numeric = (at(1e-6) - at(-1e-6)) / 2e-6
    assert abs(numeric - analytic) < 1e-7 * max(1.0, abs(analytic))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_of_one_is_greedy(seed):
    model = tiny_model(seed)
    greedy, weights = seq2seq.greedy_decode(model, SOURCE, LENGTHS, max_length=5)
    beam, scores = seq2seq.beam_search(model, SOURCE, LENGTHS, beam_size=1, max_length=5)
    assert beam == greedy
    ended = [len(s) < 5 for s in greedy]
    for b, seq in enumerate(greedy):
        np.testing.assert_allclose(
            scores[b], seq2seq.sequence_log_probability(model, SOURCE, LENGTHS, [seq] * 4, ended[b])[b], rtol=1e-12)
    for w, seq, n in zip(weights, greedy, LENGTHS):
        assert w.shape == (len(seq), 3) and (w[:, n:] == 0).all()
        np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_wide_beam_is_exhaustive_search(seed):
    model, max_length = tiny_model(seed), 3
    tokens = [0, 2, 3, 4]  # every token but the end token
    best = np.full(4, -np.inf)
    for n in range(max_length + 1):
        for seq in itertools.product(tokens, repeat=n):
            # a sequence shorter than max_length ends with the end token; one of max_length stops there
            lp = seq2seq.sequence_log_probability(model, SOURCE, LENGTHS, [list(seq)] * 4, ended=n < max_length)
            best = np.maximum(best, lp)
    _, scores = seq2seq.beam_search(model, SOURCE, LENGTHS, beam_size=len(tokens) ** max_length, max_length=max_length)
    np.testing.assert_allclose(scores, best, rtol=1e-12)
    _, narrow = seq2seq.beam_search(model, SOURCE, LENGTHS, beam_size=2, max_length=max_length)
    assert (narrow <= best + 1e-12).all()


def test_decoder_errors():
    model = tiny_model(0)
    with pytest.raises(ValueError, match="beam_size must be a positive integer"):
        seq2seq.beam_search(model, SOURCE, LENGTHS, beam_size=0, max_length=3)
    with pytest.raises(ValueError, match="max_length must be a non-negative integer; got 2.5"):
        seq2seq.greedy_decode(model, SOURCE, LENGTHS, max_length=2.5)
    with pytest.raises(ValueError, match="max_length must be a non-negative integer; got -1"):
        seq2seq.beam_search(model, SOURCE, LENGTHS, beam_size=2, max_length=-1)
    assert seq2seq.greedy_decode(model, SOURCE, LENGTHS, max_length=0)[0] == [[]] * 4
    with pytest.raises(ValueError, match="source must be a"):
        model.encode(SOURCE[0], LENGTHS)
    with pytest.raises(ValueError, match="end_index must lie in"):
        seq2seq.Seq2Seq(3, 3, 2, 2, 2, 2, start_index=0, end_index=3)
