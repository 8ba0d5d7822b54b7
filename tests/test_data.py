"""Padding, masks, the masked sequence loss and the seeded batch iterator."""
from __future__ import annotations

import numpy as np
import pytest

import tinygrad_birnn as tg
from tinygrad_birnn import functional as F
from tinygrad_birnn.data import Batch, BatchIterator, batches, lengths_to_mask, pad_sequences, sequence_cross_entropy


def test_pad_sequences_time_major_and_batch_first():
    seqs = [np.ones((2, 3)), 2 * np.ones((4, 3)), 3 * np.ones((1, 3))]
    padded, lengths = pad_sequences(seqs, padding_value=-1.0)
    assert padded.shape == (4, 3, 3) and lengths.dtype == np.int64
    np.testing.assert_array_equal(lengths, [2, 4, 1])
    np.testing.assert_array_equal(padded[:2, 0], 1)
    np.testing.assert_array_equal(padded[2:, 0], -1)
    np.testing.assert_array_equal(padded[:, 1], 2)
    bf, _ = pad_sequences(seqs, batch_first=True, padding_value=-1.0)
    assert bf.shape == (3, 4, 3) and bf.flags.c_contiguous and padded.flags.c_contiguous
    np.testing.assert_array_equal(bf, padded.transpose(1, 0, 2))


def test_pad_sequences_keeps_token_ids_integer_and_accepts_tensors():
    padded, lengths = pad_sequences([[1, 2, 3], [4]])
    assert padded.dtype.kind == "i"
    np.testing.assert_array_equal(padded, [[1, 4], [2, 0], [3, 0]])
    as_float, _ = pad_sequences([[1, 2, 3], [4]], dtype=np.float32)
    assert as_float.dtype == np.float32
    from_tensors, lengths = pad_sequences([tg.Tensor(np.ones((2, 2))), tg.Tensor(np.zeros((3, 2)))])
    assert from_tensors.shape == (3, 2, 2) and list(lengths) == [2, 3]


def test_pad_sequences_errors():
    with pytest.raises(ValueError, match="at least one sequence"):
        pad_sequences([])
    with pytest.raises(ValueError, match=r"sequence 1 has feature shape \(2,\), expected \(3,\)"):
        pad_sequences([np.ones((2, 3)), np.ones((2, 2))])
    with pytest.raises(ValueError, match="sequence 1 is empty"):
        pad_sequences([np.ones((2, 3)), np.ones((0, 3))])
    with pytest.raises(ValueError, match="sequence 0 is a scalar"):
        pad_sequences([np.float32(1.0)])
    with pytest.raises(TypeError, match="list of sequences"):
        pad_sequences("abc")


def test_lengths_to_mask():
    mask = lengths_to_mask([2, 3, 1])
    assert mask.dtype == np.float32 and mask.shape == (3, 3)
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 1, 0], [0, 1, 0]])
    np.testing.assert_array_equal(lengths_to_mask(np.array([2, 3, 1]), max_len=5, batch_first=True),
                                  np.array([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]]))
    assert lengths_to_mask([1], dtype=np.float64).dtype == np.float64
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, max_len=2\]; got values from 3 to 3"):
        lengths_to_mask([3], max_len=2)
    with pytest.raises(ValueError, match=">= 0"):
        lengths_to_mask([-1])
    with pytest.raises(TypeError, match="integers"):
        lengths_to_mask([1.5])
    with pytest.raises(ValueError, match="1-D"):
        lengths_to_mask([[1]])


@pytest.mark.parametrize("batch_first", [False, True])
def test_sequence_cross_entropy_counts_only_real_steps(batch_first):
    rng = np.random.default_rng(0)
    T, B, C, lengths = 5, 3, 4, [5, 2, 3]
    logits_np = rng.standard_normal((T, B, C))
    targets = rng.integers(0, C, size=(T, B))
    if batch_first:
        logits_in, targets_in = logits_np.transpose(1, 0, 2).copy(), targets.T.copy()
    else:
        logits_in, targets_in = logits_np, targets
    logits = tg.Tensor(logits_in, requires_grad=True)
    loss = sequence_cross_entropy(logits, targets_in, lengths, batch_first=batch_first)
    log_p = logits_np - np.log(np.exp(logits_np).sum(-1, keepdims=True))
    picked = [-log_p[t, b, targets[t, b]] for b, n in enumerate(lengths) for t in range(n)]
    assert abs(loss.item() - np.mean(picked)) < 1e-12
    loss.backward()
    grad = logits.grad.numpy() if not batch_first else logits.grad.numpy().transpose(1, 0, 2)
    assert np.all(grad[2:, 1] == 0) and np.all(grad[3:, 2] == 0) and np.abs(grad[:, 0]).min() > 0
    total = sequence_cross_entropy(logits, targets_in, lengths, batch_first=batch_first, reduction="sum")
    assert abs(total.item() - np.sum(picked)) < 1e-10
    same = F.cross_entropy(logits, targets_in, mask=lengths_to_mask(lengths, T, batch_first, np.float64))
    assert abs(same.item() - loss.item()) < 1e-14


def test_sequence_cross_entropy_errors():
    logits = tg.Tensor(np.zeros((4, 2, 3)))
    with pytest.raises(ValueError, match="lengths has 3 entries, expected 2"):
        sequence_cross_entropy(logits, np.zeros((4, 2), dtype=np.int64), [1, 2, 3])
    with pytest.raises(ValueError, match="max_len=4"):
        sequence_cross_entropy(logits, np.zeros((4, 2), dtype=np.int64), [1, 5])
    with pytest.raises(ValueError, match=r"logits must have shape \(T, B, C\)"):
        sequence_cross_entropy(tg.Tensor(np.zeros((4, 3))), np.zeros(4, dtype=np.int64), [4])


def make_data(n=10, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 7, size=n)
    xs = [rng.standard_normal((k, 2)).astype(np.float32) for k in lengths]
    per_step = [rng.integers(0, 3, size=k) for k in lengths]
    labels = list(rng.integers(0, 5, size=n))
    return xs, per_step, labels


def test_batch_iterator_pads_each_batch_and_covers_every_sequence_once():
    xs, per_step, _ = make_data()
    it = BatchIterator(xs, per_step, batch_size=4, seed=0, target_padding_value=-1)
    assert len(it) == 3
    seen = []
    for batch in it:
        assert isinstance(batch, Batch)
        T = int(batch.lengths.max())
        assert batch.inputs.shape == (T, len(batch.indices), 2) and batch.targets.shape == (T, len(batch.indices))
        for col, i in enumerate(batch.indices):
            n = len(xs[i])
            assert batch.lengths[col] == n
            np.testing.assert_array_equal(batch.inputs[:n, col], xs[i])
            np.testing.assert_array_equal(batch.targets[:n, col], per_step[i])
            assert np.all(batch.targets[n:, col] == -1) and np.all(batch.inputs[n:, col] == 0)
        seen += list(batch.indices)
    assert sorted(seen) == list(range(10))


def test_batch_iterator_is_seeded_and_reshuffles_each_epoch():
    xs, _, labels = make_data()
    a = [b.indices.tolist() for b in BatchIterator(xs, labels, batch_size=3, seed=5)]
    b = [b.indices.tolist() for b in BatchIterator(xs, labels, batch_size=3, seed=5)]
    assert a == b
    it = BatchIterator(xs, labels, batch_size=3, seed=5)
    first, second = [x.indices.tolist() for x in it], [x.indices.tolist() for x in it]
    assert first != second  # a new order per epoch
    plain = [x.indices.tolist() for x in BatchIterator(xs, labels, batch_size=3, shuffle=False)]
    assert plain == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    batch = next(iter(BatchIterator(xs, labels, batch_size=3, shuffle=False, batch_first=True)))
    assert batch.targets.tolist() == labels[:3] and batch.inputs.shape[0] == 3  # scalar labels stacked to (B,)
    assert len(BatchIterator(xs, batch_size=3, drop_last=True)) == 3
    assert sum(len(b.indices) for b in BatchIterator(xs, batch_size=3, drop_last=True)) == 9
    one_pass = list(batches(xs, labels, batch_size=4, seed=1))
    assert [b.indices.tolist() for b in one_pass] == [b.indices.tolist() for b in BatchIterator(xs, labels, 4, seed=1)]
    assert all(b.targets is None for b in batches(xs, batch_size=4))


def test_batch_iterator_feeds_a_recurrent_layer():
    xs, per_step, _ = make_data()
    tg.manual_seed(0)
    layer = tg.nn.GRU(2, 3, bidirectional=True)
    readout = tg.nn.Linear(6, 3)
    for batch in BatchIterator(xs, per_step, batch_size=4, seed=0):
        out, _ = layer(tg.Tensor(batch.inputs), lengths=batch.lengths)
        loss = sequence_cross_entropy(readout(out), batch.targets, batch.lengths)
        loss.backward()
        assert np.isfinite(loss.item())


def test_batch_iterator_errors():
    xs, per_step, _ = make_data()
    with pytest.raises(ValueError, match="batch_size must be a positive integer; got 0"):
        BatchIterator(xs, batch_size=0)
    with pytest.raises(ValueError, match="3 targets for 10 sequences"):
        BatchIterator(xs, per_step[:3])
    with pytest.raises(ValueError, match="at least one sequence"):
        BatchIterator([])
    bad = list(per_step)
    bad[0] = np.zeros(len(xs[0]) + 1, dtype=np.int64)
    with pytest.raises(ValueError, match="target 0 has shape"):
        list(BatchIterator(xs, bad, batch_size=10, shuffle=False))
