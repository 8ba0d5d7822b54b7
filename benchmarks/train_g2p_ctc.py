"""Train a bidirectional LSTM with a CTC output on CMUdict grapheme-to-phoneme, and store its test error rates.

    python benchmarks/train_g2p_ctc.py [--train-words N] [--epochs 5] [--hidden 128] [--layers 1] ...

The full-size run of the CTC chapter (book/13_ctc.ipynb), which trains on a subset to fit its one-minute
budget. Data, encoding and metrics come from :mod:`tinygrad_birnn.datasets.g2p`: the training words are the
``train`` part of the book's hashed split (all of them by default, or ``--train-words`` picked by the
module's fixed rule), model selection uses ``--valid-words`` words of the ``valid`` part, and the result is
scored on every word of the ``test`` part, with greedy and prefix-beam decoding. The result, with the
command, machine, date, sizes and a SHA-256 of the test word list, goes to
``tinygrad_birnn/datasets/stored/g2p_ctc.json`` (``--out`` to write elsewhere).

Each letter is read ``--repeat`` times (2 by default), so that a word can have more phonemes than letters;
the few words that still cannot be written (more phonemes plus repeated neighbours than input steps) get a
loss of 0 in training (``zero_infinity``) and count as errors in the test.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

import tinygrad_birnn as tg  # noqa: E402
from tinygrad_birnn import Tensor, ctc, nn, optim  # noqa: E402
from tinygrad_birnn import functional as F  # noqa: E402
from tinygrad_birnn.datasets import describe_machine, g2p, stored_file  # noqa: E402


class CTCReader(nn.Module):
    """Letters -> embedding -> (bi)LSTM -> linear -> log-softmax over the phonemes and the blank."""

    def __init__(self, hidden: int, layers: int = 1, embedding: int = 32, bidirectional: bool = True):
        super().__init__()
        self.embed = nn.Embedding(g2p.NUM_LETTERS, embedding)
        self.rnn = nn.LSTM(embedding, hidden, num_layers=layers, bidirectional=bidirectional)
        self.out = nn.Linear(hidden * (2 if bidirectional else 1), g2p.NUM_CLASSES)

    def forward(self, inputs: np.ndarray, lengths: np.ndarray) -> Tensor:
        h, _ = self.rnn(self.embed(inputs), lengths=lengths)
        return F.log_softmax(self.out(h), axis=-1)


def decode(model: CTCReader, batch: list, repeat: int, beam: int, chunk: int = 512) -> tuple:
    """Greedy and beam-search predictions for ``batch``, ``chunk`` words at a time."""
    greedy, beams = [], []
    model.eval()
    for i in range(0, len(batch), chunk):
        e = g2p.encode(batch[i:i + chunk], repeat)
        with tg.no_grad():
            log_probs = model(e.inputs, e.input_lengths)
        greedy += ctc.greedy_decode(log_probs, e.input_lengths)
        if beam:
            beams += ctc.beam_search_decode(log_probs, e.input_lengths, beam_width=beam, candidates=beam)
    model.train()
    return greedy, beams


machine = describe_machine  # the machine, in words, stored beside the results


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-words", type=int, default=None, help="default: the whole train part")
    parser.add_argument("--valid-words", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--embedding", type=int, default=32)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--decay", type=float, default=0.6, help="lr factor per epoch after the second")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--beam", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(stored_file("gpu_benchmark.json").parent / "g2p_ctc.json"))
    return parser.parse_args()


def train_model(model: CTCReader, train: list, valid: list, args: argparse.Namespace) -> list:
    """Adam with a learning rate that decays after the second epoch; one history entry per epoch."""
    opt = optim.Adam(model.parameters(), lr=args.lr)
    rng = np.random.default_rng(args.seed)
    history = []
    start = time.perf_counter()
    for epoch in range(args.epochs):
        opt.lr = args.lr * args.decay ** max(0, epoch - 1)
        order = rng.permutation(len(train))
        total = 0.0
        for i in range(0, len(train), args.batch):
            e = g2p.encode([train[j] for j in order[i:i + args.batch]], args.repeat)
            loss = F.ctc_loss(model(e.inputs, e.input_lengths), e.targets, e.input_lengths, e.target_lengths,
                              zero_infinity=True)
            opt.zero_grad()
            loss.backward()
            optim.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            total += loss.item() * len(e.input_lengths)
        greedy, _ = decode(model, valid, args.repeat, beam=0)
        rates = g2p.error_rates(greedy, valid)
        history.append({"epoch": epoch + 1, "lr": opt.lr, "train_loss": total / len(train),
                        "valid_per_greedy": rates.phoneme_error_rate, "valid_wer_greedy": rates.word_error_rate,
                        "seconds": time.perf_counter() - start})
        print(json.dumps(history[-1]), flush=True)
    return history


def main() -> None:
    args = arguments()
    tg.manual_seed(args.seed)
    train = g2p.examples("train", args.train_words, seed=args.seed)
    valid = g2p.examples("valid", args.valid_words, seed=0)
    test_words = g2p.subset_words("test")
    test = [g2p.example(w) for w in test_words]
    model = CTCReader(args.hidden, args.layers, args.embedding)
    history = train_model(model, train, valid, args)
    greedy, beams = decode(model, test, args.repeat, args.beam)
    results = {name: g2p.error_rates(predictions, test)._asdict()
               for name, predictions in (("greedy", greedy), ("beam", beams))}
    examples = [{"word": e.word, "predicted": g2p.phoneme_names(p),
                 "reference": g2p.phoneme_names(g2p.closest_reference(p, e)[1])}
                for e, p in zip(test, beams) if g2p.closest_reference(p, e)[0] > 0][:20]
    record = {
        "what": "CTC grapheme-to-phoneme: a bidirectional LSTM on CMUdict, scored on the test part",
        "command": "python benchmarks/train_g2p_ctc.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "settings": vars(args) | {"out": None},
        "train_words": len(train), "valid_words": len(valid),
        "test_rule": "every word of pronunciations.words('test') (the hashed split), scored against its "
                     "closest pronunciation with stress removed",
        "test_words": len(test_words), "test_sha256": g2p.digest(test_words),
        "parameters": model.num_parameters(),
        "train_seconds": round(history[-1]["seconds"] if history else 0.0, 1),
        "history": history, "test": results, "beam_width": args.beam, "beam_errors": examples,
    }
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
