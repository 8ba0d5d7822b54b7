"""Grapheme-to-phoneme conversion on the CMU Pronouncing Dictionary: encoding, subsets and error rates.

Shared by every chapter and script that reads letters and writes phonemes (CTC, attention), so that their
numbers are comparable: the same words, the same encoding, the same metrics.

- **Words**: those of :mod:`tinygrad_birnn.datasets.pronunciations` (spelled a-z) in one part of its fixed
  hashed split. :func:`examples` takes a whole part, or a subset picked by a fixed rule: the part's sorted
  word list shuffled by ``numpy.random.default_rng(seed)``, its first ``limit`` words kept (after an
  optional cap on the number of letters).
- **Targets**: a word's first pronunciation in the dictionary, stress digits removed (39 phonemes). A word
  may have several pronunciations; all distinct ones are kept as references for scoring.
- **Encoding**: letters 1..26 (0 is padding and the end-of-word input of a delayed model); phonemes 1..39
  (0 is CTC's blank). :func:`encode` repeats each letter ``repeat`` times so that a word can have more phonemes
  than letters ("x" reads K S), and appends ``delay`` end-of-word steps for unidirectional models that need
  to see ahead before they write.
- **Error rates** (:func:`error_rates`): the phoneme error rate (PER) is the total edit distance
  (Levenshtein, from the ``rapidfuzz`` package) between each prediction and its closest reference,
  divided by the total length of those references; the word error rate (WER) is the fraction of words
  whose prediction equals none of their references.
"""
from __future__ import annotations

import hashlib
from typing import NamedTuple, Sequence

import numpy as np

from . import pronunciations

LETTERS = pronunciations.LETTERS
PHONEMES = pronunciations.PHONEMES
PAD = 0  # the letter index of padding (and of the end-of-word steps a delayed model reads)
BLANK = 0  # the phoneme index of CTC's blank
NUM_LETTERS = len(LETTERS) + 1  # input classes, padding included
NUM_CLASSES = len(PHONEMES) + 1  # output classes, blank included
LETTER_INDEX = {c: i + 1 for i, c in enumerate(LETTERS)}
PHONEME_INDEX = {p: i + 1 for i, p in enumerate(PHONEMES)}


class Example(NamedTuple):
    """One word: its letters and target phonemes as indices, and every distinct reference pronunciation."""

    word: str
    letters: tuple
    phonemes: tuple
    references: tuple


def example(word: str) -> Example:
    """The :class:`Example` of a dictionary word (raises KeyError for a word not in the dictionary)."""
    entry = pronunciations.entries()[word]
    refs = []
    for pron in entry.pronunciations:
        indices = tuple(PHONEME_INDEX[p] for p in pronunciations.strip_stress(pron))
        if indices not in refs:
            refs.append(indices)
    return Example(word, tuple(LETTER_INDEX[c] for c in word), refs[0], tuple(refs))


def subset_words(part: str, limit: int | None = None, max_letters: int | None = None, seed: int = 0) -> list:
    """The words of one part of the split, or ``limit`` of them picked by the module's fixed rule."""
    words = pronunciations.words(part)
    if max_letters is not None:
        words = [w for w in words if len(w) <= max_letters]
    if limit is None:
        return words
    if limit < 0:
        raise ValueError(f"limit must be a non-negative number of words; got {limit}")
    order = np.random.default_rng(seed).permutation(len(words))
    return [words[i] for i in order[:limit]]


def examples(part: str, limit: int | None = None, max_letters: int | None = None, seed: int = 0) -> list:
    """The :class:`Example` of each word :func:`subset_words` picks."""
    return [example(w) for w in subset_words(part, limit, max_letters, seed)]


def digest(words: Sequence[str]) -> str:
    """A SHA-256 of the word list (joined by newlines), to record exactly which words a result used."""
    return hashlib.sha256("\n".join(words).encode("ascii")).hexdigest()


class Encoded(NamedTuple):
    """A batch ready for a recurrent network and ``ctc_loss``: (T, N) inputs, lengths, (N, S) targets."""

    inputs: np.ndarray
    input_lengths: np.ndarray
    targets: np.ndarray
    target_lengths: np.ndarray


def encode(batch: Sequence[Example], repeat: int = 2, delay: int = 0) -> Encoded:
    """Letters repeated ``repeat`` times, ``delay`` end-of-word steps appended, padded to (T, N) with ``PAD``."""
    if repeat < 1 or delay < 0:
        raise ValueError(f"repeat must be >= 1 and delay >= 0; got repeat={repeat}, delay={delay}")
    input_lengths = np.array([repeat * len(e.letters) + delay for e in batch], dtype=np.int64)
    target_lengths = np.array([len(e.phonemes) for e in batch], dtype=np.int64)
    inputs = np.full((int(input_lengths.max(initial=0)), len(batch)), PAD, dtype=np.int64)
    targets = np.zeros((len(batch), int(target_lengths.max(initial=0))), dtype=np.int64)
    for i, e in enumerate(batch):
        inputs[:repeat * len(e.letters), i] = np.repeat(e.letters, repeat)
        targets[i, :len(e.phonemes)] = e.phonemes
    return Encoded(inputs, input_lengths, targets, target_lengths)


def fits(e: Example, repeat: int = 2, delay: int = 0) -> bool:
    """Whether CTC can write the target from the input: steps >= labels + repeated neighbours (each needs a blank)."""
    repeats = sum(a == b for a, b in zip(e.phonemes, e.phonemes[1:]))
    return repeat * len(e.letters) + delay >= len(e.phonemes) + repeats


def phoneme_names(indices: Sequence[int]) -> str:
    """Phoneme indices as ARPAbet symbols separated by spaces."""
    return " ".join(PHONEMES[i - 1] for i in indices)


def _distance(a: Sequence[int], b: Sequence[int]) -> int:
    from rapidfuzz.distance import Levenshtein  # noqa: PLC0415 (only the metrics need it)

    return Levenshtein.distance(list(a), list(b))


class ErrorRates(NamedTuple):
    """Phoneme and word error rates, with the counts they were computed from."""

    phoneme_error_rate: float
    word_error_rate: float
    edits: int
    reference_phonemes: int
    wrong_words: int
    words: int


def closest_reference(prediction: Sequence[int], e: Example) -> tuple:
    """(edit distance, reference) for the reference pronunciation nearest to ``prediction``."""
    return min(((_distance(prediction, r), r) for r in e.references), key=lambda item: item[0])


def error_rates(predictions: Sequence[Sequence[int]], batch: Sequence[Example]) -> ErrorRates:
    """PER and WER of ``predictions`` (one phoneme-index list per example), each against its closest reference."""
    if len(predictions) != len(batch):
        raise ValueError(f"error_rates: {len(predictions)} predictions for {len(batch)} examples")
    edits = length = wrong = 0
    for prediction, e in zip(predictions, batch):
        distance, reference = closest_reference(prediction, e)
        edits += distance
        length += len(reference)
        wrong += distance > 0
    n = len(batch)
    return ErrorRates(edits / max(length, 1), wrong / max(n, 1), edits, length, wrong, n)
