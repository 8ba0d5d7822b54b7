"""CTC loss, forward + backward, against torch.nn.functional.ctc_loss on the CPU, side by side in one run.

    python benchmarks/bench_ctc.py [--repeats 30] [--threads 2]

The size is the one of the speed table (T=100 steps, N=64 sequences, C=50 classes, targets of up to S=30
labels, lengths drawn below those maxima). Both libraries receive the same log-probabilities (float32, the
output of a log-softmax) and the same targets; each timed call computes the summed loss and its gradient with
respect to the logits behind the log-softmax. The median of the repeats is printed, with the ratio.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2, help="threads for PyTorch and BLAS")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--target", type=int, default=30)
    args = parser.parse_args()
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    import torch  # noqa: PLC0415 (after the thread settings)

    from tinygrad_birnn import Tensor  # noqa: PLC0415
    from tinygrad_birnn import functional as F  # noqa: PLC0415

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    T, N, C, S = args.steps, args.batch, args.classes, args.target
    logits = rng.standard_normal((T, N, C)).astype(np.float32)
    input_lengths = rng.integers(T // 2, T + 1, N)
    input_lengths[0] = T
    target_lengths = rng.integers(1, S + 1, N)
    target_lengths[0] = S
    targets = rng.integers(1, C, (N, S))

    def ours() -> None:
        x = Tensor(logits, requires_grad=True)
        F.ctc_loss(F.log_softmax(x, axis=-1), targets, input_lengths, target_lengths, reduction="sum").backward()

    t_targets, t_in, t_tl = (torch.tensor(a) for a in (targets, input_lengths, target_lengths))

    def theirs() -> None:
        x = torch.tensor(logits, requires_grad=True)
        torch.nn.functional.ctc_loss(x.log_softmax(-1), t_targets, t_in, t_tl, reduction="sum").backward()

    times: dict[str, list[float]] = {"tinygrad_birnn": [], "torch": []}
    for fn in (ours, theirs):  # warm-up
        fn()
    for _ in range(args.repeats):  # interleaved, so both see the same load on a shared machine
        for name, fn in (("tinygrad_birnn", ours), ("torch", theirs)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"CTC loss forward + backward, T={T} N={N} C={C} S={S}, float32, {args.threads} threads, "
          f"median of {args.repeats}; {platform.processor() or platform.machine()}, torch {torch.__version__}")
    for name, value in med.items():
        print(f"  {name:15s} {value * 1e3:8.2f} ms")
    print(f"  ratio tinygrad_birnn / torch: {med['tinygrad_birnn'] / med['torch']:.2f}x")


if __name__ == "__main__":
    main()
