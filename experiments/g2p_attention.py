"""Grapheme-to-phoneme conversion with attention: a bidirectional against a unidirectional encoder.

Trains the attention encoder-decoder of :mod:`tinygrad_birnn.seq2seq` on the CMU Pronouncing Dictionary
(the split and encoding of :mod:`tinygrad_birnn.datasets.g2p`, shared with the CTC chapter), once with a
bidirectional LSTM encoder and once with a unidirectional one of (nearly) the same parameter count, for each
seed; scores greedy and beam-search decoding on the held-out test words (PER, WER against the closest
reference pronunciation); stores the results, the attention weights of a few test words, and the command,
machine and date, as JSON.

    python experiments/g2p_attention.py                       # the whole training part, 2 epochs, seeds 0 and 1
    python experiments/g2p_attention.py --train-words 2000 --epochs 1 --seeds 0 --test-words 200   # a smoke test

Writes tinygrad_birnn/datasets/stored/g2p_attention.json (``--out`` to change).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before NumPy loads its BLAS: small products, one thread is fastest

import numpy as np  # noqa: E402

import tinygrad_birnn as tg  # noqa: E402
from tinygrad_birnn import optim, seq2seq  # noqa: E402
from tinygrad_birnn.datasets import describe_machine, g2p  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
START, END = g2p.NUM_CLASSES, 0  # target tokens: phonemes 1..39, end 0 (CTC's blank slot), start 40
EXAMPLE_RULES = ("ph", "x", "gh", "kn", "qu", "tion")  # heatmap words: the first test word containing each


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-words", type=int, default=None, help="training words (default: the whole part)")
    p.add_argument("--test-words", type=int, default=None, help="test words (default: the whole part)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--encoder-size", type=int, default=64, help="units per direction, bidirectional encoder")
    p.add_argument("--decoder-size", type=int, default=128)
    p.add_argument("--embedding-size", type=int, default=32)
    p.add_argument("--attention-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--beam-size", type=int, default=5)
    p.add_argument("--out", default=str(ROOT / "tinygrad_birnn/datasets/stored/g2p_attention.json"))
    return p.parse_args()


def build(args: argparse.Namespace, bidirectional: bool, encoder_size: int) -> seq2seq.Seq2Seq:
    return seq2seq.Seq2Seq(g2p.NUM_LETTERS, g2p.NUM_CLASSES + 1, args.embedding_size, encoder_size,
                           args.decoder_size, args.attention_size, START, END, bidirectional=bidirectional)


def matching_unidirectional_size(args: argparse.Namespace) -> int:
    """The unidirectional encoder size whose model has the parameter count nearest the bidirectional one."""
    target = build(args, True, args.encoder_size).num_parameters()
    sizes = range(args.encoder_size, 4 * args.encoder_size)
    return min(sizes, key=lambda h: abs(build(args, False, h).num_parameters() - target))


def batch_arrays(batch: list) -> tuple:
    enc = g2p.encode(batch, repeat=1)
    return enc.inputs, enc.input_lengths, enc.targets.T, enc.target_lengths


def train(model: seq2seq.Seq2Seq, train_set: list, args: argparse.Namespace, seed: int) -> list:
    """Adam on the teacher-forced loss, gradients clipped to norm 5; returns per-epoch (loss, seconds)."""
    optimizer = optim.Adam(model.parameters(), lr=args.lr)
    rng = np.random.default_rng(seed)
    history = []
    for epoch in range(args.epochs):
        optimizer.lr = args.lr * 0.5 ** epoch  # halved after every epoch
        start, total, count = time.perf_counter(), 0.0, 0
        order = rng.permutation(len(train_set))
        for i in range(0, len(order), args.batch_size):
            inputs, lengths, targets, target_lengths = batch_arrays([train_set[j] for j in order[i:i + args.batch_size]])
            loss = model.loss(inputs, lengths, targets, target_lengths)
            optimizer.zero_grad()
            loss.backward()
            optim.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            total, count = total + loss.item(), count + 1
        history.append({"epoch": epoch + 1, "loss": total / count, "seconds": time.perf_counter() - start})
        print(f"  epoch {epoch + 1}: loss {total / count:.4f}, {history[-1]['seconds']:.0f} s", flush=True)
    return history


def monotonic(weights: np.ndarray) -> bool:
    """Whether the most attended letter never moves left from one output phoneme to the next."""
    peaks = weights.argmax(axis=1)
    return bool((np.diff(peaks) >= 0).all())


def decode(model: seq2seq.Seq2Seq, test_set: list, beam_size: int) -> dict:
    """PER and WER of greedy and beam-search decoding on ``test_set``, with the seconds each took, and the
    fraction of words whose greedy attention moves monotonically left to right."""
    results, monotonic_words, answered = {}, 0, 0
    for name in ("greedy", "beam"):
        start, predictions = time.perf_counter(), []
        for i in range(0, len(test_set), 256):
            inputs, lengths, _, _ = batch_arrays(test_set[i:i + 256])
            if name == "greedy":
                sequences, weights = seq2seq.greedy_decode(model, inputs, lengths, max_length=30)
                monotonic_words += sum(monotonic(w) for w in weights if len(w))
                answered += sum(len(w) > 0 for w in weights)
                predictions += sequences
            else:
                predictions += seq2seq.beam_search(model, inputs, lengths, beam_size, max_length=30)[0]
        seconds = time.perf_counter() - start
        rates = g2p.error_rates(predictions, test_set)
        results[name] = {"per": rates.phoneme_error_rate, "wer": rates.word_error_rate, "seconds": seconds,
                         "words_per_second": len(test_set) / seconds}
    results["monotonic_fraction"] = monotonic_words / max(answered, 1)  # of the words with an output
    return results


machine = describe_machine  # the machine, in words, stored beside the results


def attention_examples(model: seq2seq.Seq2Seq, test_set: list) -> list:
    """Greedy outputs and attention weights for the first test word containing each of EXAMPLE_RULES."""
    chosen = []
    for rule in EXAMPLE_RULES:
        found = next((e for e in test_set if rule in e.word and e not in chosen), None)
        if found is not None:
            chosen.append(found)
    inputs, lengths, _, _ = batch_arrays(chosen)
    sequences, weights = seq2seq.greedy_decode(model, inputs, lengths, max_length=30)
    return [{"word": e.word, "reference": g2p.phoneme_names(e.phonemes), "prediction": g2p.phoneme_names(s),
             "weights": np.round(w[:, :len(e.word)], 4).tolist()} for e, s, w in zip(chosen, sequences, weights)]


def main() -> None:
    args = parse_args()
    train_set = g2p.examples("train", limit=args.train_words)
    test_set = g2p.examples("test", limit=args.test_words)
    uni_size = matching_unidirectional_size(args)
    configs = {"bidirectional": (True, args.encoder_size), "unidirectional": (False, uni_size)}
    runs, examples = [], {}
    for seed in args.seeds:
        for name, (bidirectional, size) in configs.items():
            tg.manual_seed(seed)
            model = build(args, bidirectional, size)
            print(f"{name} encoder ({size} units), seed {seed}: {model.num_parameters()} parameters", flush=True)
            history = train(model, train_set, args, seed)
            scores = decode(model, test_set, args.beam_size)
            print(f"  test: {scores}", flush=True)
            runs.append({"encoder": name, "encoder_size": size, "seed": seed, "parameters": model.num_parameters(),
                         "train_seconds": sum(h["seconds"] for h in history), "history": history, "test": scores})
            if name not in examples:
                examples[name] = attention_examples(model, test_set)
    result = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]),
        "what": "attention encoder-decoders for grapheme-to-phoneme on CMUdict, bidirectional against "
                "unidirectional encoder, scored on the test part",
        "machine": machine(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "train_words": len(train_set), "test_words": len(test_set),
        "test_rule": "every word of pronunciations.words('test') (the hashed split) unless --test-words, "
                     "scored against its closest pronunciation with stress removed",
        "test_sha256": g2p.digest([e.word for e in test_set]),
        "runs": runs, "attention_examples": examples,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
