"""Lexical stress in CMUdict at full size: BiLSTM + softmax, BiLSTM-CRF and LSTM-CRF over several seeds.

Every model has (nearly) the same number of parameters: the unidirectional LSTM gets the hidden size whose
parameter count is closest to the BiLSTM-CRF's. Each trains on every training word with exactly one primary
stress (the tagging a position-tag CRF can express) and is scored on every test word.

    python experiments/crf_stress.py                  # 5 seeds, 4 epochs (about 12 minutes on 2 cores)
    python experiments/crf_stress.py --seeds 1 --epochs 1 --out /tmp/crf_stress.json   # a smoke test

Writes tinygrad_birnn/datasets/stored/crf_stress.json (command, machine, date inside), which chapter 14 reads.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import tinygrad_birnn as tg  # noqa: E402
from tinygrad_birnn import taggers  # noqa: E402
from tinygrad_birnn.datasets import pronunciations as P  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "tinygrad_birnn" / "datasets" / "stored" / "crf_stress.json"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--hidden", type=int, default=32, help="hidden size of each direction of the BiLSTMs")
    p.add_argument("--embedding", type=int, default=16)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()

    entries = P.entries()
    train_words = [w for w in P.words("train") if P.stress_marks(entries[w].pronunciations[0]).count(1) == 1]
    test_words = P.words("test")
    bi_params = taggers.Tagger(args.hidden, True, "crf", args.embedding).num_parameters()
    uni_hidden = taggers.matched_hidden_size(bi_params, False, "crf", args.embedding)
    models = {
        "BiLSTM + softmax": (args.hidden, True, "softmax"),
        "BiLSTM-CRF": (args.hidden, True, "crf"),
        "LSTM-CRF": (uni_hidden, False, "crf"),
    }
    runs = []
    for seed in range(args.seeds):
        for name, (hidden, bidirectional, head) in models.items():
            tg.manual_seed(seed)
            model = taggers.Tagger(hidden, bidirectional, head, args.embedding)
            losses, seconds = taggers.timed(taggers.train, model, train_words, args.epochs, args.batch, args.lr, seed)
            run = {"model": name, "seed": seed, "hidden_size": hidden, "parameters": model.num_parameters(),
                   "epoch_losses": losses, "train_seconds": round(seconds, 1),
                   "test": taggers.evaluate(model, test_words)}
            if head == "crf":
                run["test_unconstrained"] = taggers.evaluate(model, test_words, constrained=False)
            runs.append(run)
            print(json.dumps(run), flush=True)
    result = {
        "command": " ".join(["python", *sys.argv]),
        "machine": f"{platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                   f"{os.environ.get('OPENBLAS_NUM_THREADS')} BLAS thread(s)",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "settings": vars(args) | {"out": None},
        "train_words": len(train_words),
        "test_words": len(test_words),
        "runs": runs,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
