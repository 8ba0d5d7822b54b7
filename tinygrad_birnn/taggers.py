"""Sequence taggers for the CRF chapter: lexical stress in the CMU Pronouncing Dictionary.

The task: read a word's phonemes without their stress digits, and tag each vowel 0, 1 or 2 (unstressed,
primary, secondary stress). Nearly every word has exactly one primary stress; a tag set that says where a
vowel lies with respect to it, :data:`POSITION_TAGS`, lets a first-order CRF express that constraint exactly:
the tags before the primary stress, the primary stress itself, the tags after it, with transitions that go
only forward (:func:`allowed_transitions`).

:class:`Tagger` is one model with three heads: an LSTM (bidirectional or not) over the phonemes, a linear
layer on its output at each vowel, and either a per-vowel softmax over the three stress digits or a CRF over
the five position tags. :func:`train` and :func:`evaluate` run the experiment; the chapter and
``experiments/crf_stress.py`` both call them.
"""
from __future__ import annotations

import time
from typing import Any, NamedTuple

import numpy as np

from . import crf as chain
from . import functional as F
from . import nn, optim
from .datasets import pronunciations as P
from .tensor import Tensor, no_grad

STRESS = (0, 1, 2)
# where a vowel lies with respect to the word's one primary stress, and its own stress
POSITION_TAGS = ("before/0", "before/2", "primary", "after/0", "after/2")
PHONEME_IDS = {p: i + 1 for i, p in enumerate(P.PHONEMES)}  # 0 pads


def position_tags(marks: tuple) -> tuple:
    """Stress digits with exactly one 1 -> position tags: (0, 2, 1, 0) -> (0, 1, 2, 3)."""
    if marks.count(1) != 1:
        raise ValueError(f"position tags need exactly one primary stress; got stress marks {marks}")
    at = marks.index(1)
    return tuple(2 if i == at else (0 if i < at else 3) + (m == 2) for i, m in enumerate(marks))


def marks_of(tags: Any) -> tuple:
    """Position tags -> stress digits: (0, 1, 2, 3) -> (0, 2, 1, 0)."""
    return tuple((0, 2, 1, 0, 2)[t] for t in tags)


def allowed_transitions() -> tuple:
    """Boolean (start (5,), end (5,), transitions (5, 5)): a word starts before or at its primary stress, ends
    at or after it, and moves only forward (before -> before or primary; primary or after -> after)."""
    before, primary, after = [0, 1], [2], [3, 4]
    start, end = np.zeros(5, bool), np.zeros(5, bool)
    start[before + primary] = True
    end[primary + after] = True
    trans = np.zeros((5, 5), bool)
    trans[np.ix_(before, before + primary)] = True
    trans[np.ix_(primary + after, after)] = True
    return start, end, trans


class Batch(NamedTuple):
    """A padded batch: phoneme ids (T, B), lengths (B,), vowel positions and stress digits (V, B) and the
    vowel mask (V, B); ``words`` in batch order."""

    phonemes: np.ndarray
    lengths: np.ndarray
    vowels: np.ndarray
    marks: np.ndarray
    mask: np.ndarray
    words: list


def encode(words: list) -> Batch:
    """Each word's first pronunciation, stress removed, as a padded batch (words without vowels are left out)."""
    entries = P.entries()
    prons = [(w, entries[w].pronunciations[0]) for w in words]
    prons = [(w, p) for w, p in prons if P.stress_marks(p)]
    B = len(prons)
    T = max((len(p) for _, p in prons), default=1)
    V = max((len(P.stress_marks(p)) for _, p in prons), default=1)
    phonemes, vowels = np.zeros((T, B), np.int64), np.zeros((V, B), np.int64)
    marks, mask = np.zeros((V, B), np.int64), np.zeros((V, B), bool)
    for b, (_, p) in enumerate(prons):
        phonemes[: len(p), b] = [PHONEME_IDS[s] for s in P.strip_stress(p)]
        at = [t for t, s in enumerate(p) if s[-1] in "012"]
        vowels[: len(at), b], marks[: len(at), b], mask[: len(at), b] = at, P.stress_marks(p), True
    return Batch(phonemes, np.array([len(p) for _, p in prons]), vowels, marks, mask, [w for w, _ in prons])


class Tagger(nn.Module):
    """Embedding -> LSTM -> Linear at each vowel -> softmax over stress digits (``head='softmax'``) or a CRF
    over :data:`POSITION_TAGS` (``head='crf'``)."""

    def __init__(self, hidden_size: int, bidirectional: bool = True, head: str = "crf", embedding_dim: int = 16):
        super().__init__()
        if head not in ("softmax", "crf"):
            raise ValueError(f"head must be 'softmax' or 'crf'; got {head!r}")
        self.head = head
        self.embed = nn.Embedding(len(PHONEME_IDS) + 1, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_size, bidirectional=bidirectional)
        features = hidden_size * (2 if bidirectional else 1)
        self.out = nn.Linear(features, len(STRESS) if head == "softmax" else len(POSITION_TAGS))
        if head == "crf":
            self.crf = nn.CRF(len(POSITION_TAGS))

    def scores(self, batch: Batch) -> Tensor:
        """(V, B, classes): the linear layer on the LSTM's output at each vowel."""
        h, _ = self.lstm(self.embed(batch.phonemes), lengths=batch.lengths)
        return self.out(h[batch.vowels, np.arange(batch.vowels.shape[1])[None, :]])

    def loss(self, batch: Batch) -> Tensor:
        """Mean negative log-likelihood per vowel (every word must have one primary stress for the CRF)."""
        scores = self.scores(batch)
        if self.head == "softmax":
            return F.cross_entropy(scores, batch.marks, mask=batch.mask)
        tags = np.zeros_like(batch.marks)
        for b in range(tags.shape[1]):
            n = int(batch.mask[:, b].sum())
            tags[:n, b] = position_tags(tuple(batch.marks[:n, b]))
        return -self.crf(scores, tags, batch.mask, reduction="token_mean")

    def predict(self, batch: Batch, constrained: bool = True) -> list:
        """Stress digits per word. The CRF decodes with its learned scores, plus -inf on every start, end and
        transition that :func:`allowed_transitions` forbids when ``constrained``."""
        with no_grad():
            scores = self.scores(batch)
            counts = batch.mask.sum(axis=0)
            if self.head == "softmax":
                best = scores.numpy().argmax(axis=2)
                return [tuple(int(m) for m in best[: counts[b], b]) for b in range(best.shape[1])]
            params = [p.numpy() for p in (self.crf.start_transitions, self.crf.end_transitions, self.crf.transitions)]
            if constrained:
                params = [np.where(ok, p, -np.inf) for p, ok in zip(params, allowed_transitions())]
            paths = chain.viterbi_decode(scores.numpy(), *params, batch.mask)
            return [marks_of(path) for path in paths]


def matched_hidden_size(target: int, bidirectional: bool = False, head: str = "crf", embedding_dim: int = 16) -> int:
    """The hidden size (8 to 128) whose :class:`Tagger` has the parameter count closest to ``target``."""
    counts = {h: Tagger(h, bidirectional, head, embedding_dim).num_parameters() for h in range(8, 129)}
    return min(counts, key=lambda h: abs(counts[h] - target))


def batches(words: list, batch_size: int, rng: np.random.Generator) -> list:
    """Shuffled batches of words of similar length (sorted within chunks of 20 batches), so padding is short."""
    order = [words[i] for i in rng.permutation(len(words))]
    entries = P.entries()
    out = []
    for start in range(0, len(order), 20 * batch_size):
        chunk = sorted(order[start:start + 20 * batch_size], key=lambda w: len(entries[w].pronunciations[0]))
        out += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [out[i] for i in rng.permutation(len(out))]


def train(model: Tagger, words: list, epochs: int, batch_size: int = 64, lr: float = 0.01, seed: int = 0) -> list:
    """Adam on the words' losses; returns the mean loss of each epoch."""
    rng = np.random.default_rng(seed)
    opt = optim.Adam(model.parameters(), lr=lr)
    history = []
    for _ in range(epochs):
        losses = []
        for chunk in batches(words, batch_size, rng):
            loss = model.loss(encode(chunk))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        history.append(float(np.mean(losses)))
    return history


def evaluate(model: Tagger, words: list, constrained: bool = True, batch_size: int = 512) -> dict:
    """Per-vowel and per-word accuracy, and how many predicted words have other than one primary stress."""
    right = vowels = words_right = off = counted = 0
    for start in range(0, len(words), batch_size):
        batch = encode(words[start:start + batch_size])
        for b, guess in enumerate(model.predict(batch, constrained)):
            truth = tuple(int(m) for m in batch.marks[: len(guess), b])
            right += sum(g == t for g, t in zip(guess, truth))
            vowels += len(truth)
            words_right += guess == truth
            off += guess.count(1) != 1
            counted += 1
    return {"vowel_accuracy": right / vowels, "word_accuracy": words_right / counted, "words": counted,
            "not_one_primary": off}


def timed(function: Any, *args: Any, **kwargs: Any) -> tuple:
    """(result, seconds) of one call."""
    start = time.perf_counter()
    return function(*args, **kwargs), time.perf_counter() - start
