"""The CRF's log-likelihood, forward and backward, on the CPU: tinygrad_birnn.nn.CRF beside pytorch-crf.

One step = the summed log-likelihood of a batch (tags given, every sequence full length, or lengths drawn
with --ragged) and its backward pass into the emissions and the three transition parameters, float32. Both
peers run in one process, interleaved round by round, with the same number of threads; medians after warm-up.

    python benchmarks/bench_crf.py                      # K=20, T=50, B=64
    python benchmarks/bench_crf.py --tags 5 --steps 12 --batch 256
    python benchmarks/bench_crf.py --quick              # a few repeats (seconds)

Prints the medians and the ratio (pytorch-crf time / ours: above 1 means ours is faster); writes a JSON file to
benchmarks/results/ (gitignored) with the command, machine and date.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tags", type=int, default=20, help="K, the number of tags (default 20)")
    p.add_argument("--steps", type=int, default=50, help="T, the sequence length (default 50)")
    p.add_argument("--batch", type=int, default=64, help="B, the batch size (default 64)")
    p.add_argument("--ragged", action="store_true", help="lengths drawn from [1, T] (a mask) instead of all T")
    p.add_argument("--threads", type=int, default=2, help="threads for NumPy's BLAS and PyTorch (default 2)")
    p.add_argument("--repeats", type=int, default=30, help="timed steps per peer (default 30, 5 with --quick)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per peer first")
    p.add_argument("--quick", action="store_true", help="few repeats (a smoke test)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/crf_<time>.json)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before NumPy loads its BLAS
    import numpy as np  # noqa: PLC0415

    import tinygrad_birnn as tg  # noqa: PLC0415
    from tinygrad_birnn import nn  # noqa: PLC0415

    import torch  # noqa: PLC0415
    import torchcrf  # noqa: PLC0415

    torch.set_num_threads(args.threads)
    repeats = 5 if args.quick else args.repeats
    K, T, B = args.tags, args.steps, args.batch
    rng = np.random.default_rng(0)
    emissions = rng.standard_normal((T, B, K)).astype(np.float32)
    tags = rng.integers(0, K, size=(T, B))
    lengths = rng.integers(1, T + 1, size=B) if args.ragged else np.full(B, T)
    lengths[0] = T
    mask = np.arange(T)[:, None] < lengths[None, :]

    ours = nn.CRF(K)
    peer = torchcrf.CRF(K)
    peer.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    tags_t, mask_t = torch.from_numpy(tags), torch.from_numpy(mask)

    def step_ours() -> float:
        ours.zero_grad()
        e = tg.Tensor(emissions, requires_grad=True)
        llh = ours(e, tags, mask)
        llh.backward()
        return llh.item()

    def step_peer() -> float:
        peer.zero_grad()
        e = torch.tensor(emissions, requires_grad=True)
        llh = peer(e, tags_t, mask_t)
        llh.backward()
        return llh.item()

    values = (step_ours(), step_peer())
    print(f"log-likelihood: ours {values[0]:.4f}, pytorch-crf {values[1]:.4f}")
    times: dict[str, list] = {"tinygrad_birnn": [], "pytorch-crf": []}
    for i in range(args.warmup + repeats):
        for name, step in (("tinygrad_birnn", step_ours), ("pytorch-crf", step_peer)):
            start = time.perf_counter()
            step()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)
    medians = {name: float(np.median(t)) for name, t in times.items()}
    ratio = medians["pytorch-crf"] / medians["tinygrad_birnn"]
    print(f"K={K} T={T} B={B}{' ragged' if args.ragged else ''}, {args.threads} thread(s), {repeats} repeats")
    for name, m in medians.items():
        print(f"  {name:15s} {1e3 * m:8.2f} ms (median forward + backward)")
    print(f"  ratio pytorch-crf / tinygrad_birnn: {ratio:.2f} (above 1: ours is faster)")
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "numpy": np.__version__, "torch": torch.__version__, "pytorch_crf": torchcrf.__version__,
        "sizes": {"K": K, "T": T, "B": B, "ragged": args.ragged}, "threads": args.threads,
        "median_seconds": medians, "ratio_torchcrf_over_ours": ratio,
    }
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"crf_{time.strftime('%Y%m%d_%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
