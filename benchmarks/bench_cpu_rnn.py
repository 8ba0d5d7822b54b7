"""One training step of a bidirectional tanh RNN on the CPU: the fused BPTT op, the step-by-step graph, PyTorch.

The model: a 1-layer bidirectional tanh RNN, a linear readout on [h_t || h'_t] at every step, cross-entropy
over all steps, float32; one step = forward, backward, optimizer step (Adam). All three peers run in one
process, interleaved round by round, with the same number of BLAS threads; medians over repeats after warm-up.

    python benchmarks/bench_cpu_rnn.py            # sizes M (64, 64, 64, 128) and L (128, 128, 128, 256)
    python benchmarks/bench_cpu_rnn.py --quick    # a tiny run (seconds)
    python benchmarks/bench_cpu_rnn.py --unset-openblas-env   # re-exec without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE

Writes a JSON file to benchmarks/results/ (gitignored).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (a smoke test)")
    p.add_argument("--threads", type=int, default=2, help="BLAS threads for NumPy and PyTorch (default 2)")
    p.add_argument("--repeats", type=int, default=None, help="timed steps per peer (default 20, 5 with --quick)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per peer first")
    p.add_argument("--sizes", default=None, help="comma-separated T:B:D:H, e.g. 64:64:64:128")
    p.add_argument("--classes", type=int, default=16, help="readout classes")
    p.add_argument("--peers", default="fused,steps,torch", help="which of fused, steps, torch to time")
    p.add_argument("--unset-openblas-env", action="store_true",
                   help=f"run without {', '.join(OPENBLAS_VARS)} (re-executes itself; applies to every peer)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/cpu_rnn_<time>.json)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.unset_openblas_env and any(v in os.environ for v in OPENBLAS_VARS):
        env = {k: v for k, v in os.environ.items() if k not in OPENBLAS_VARS}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    threads = str(args.threads)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = threads  # before NumPy loads its BLAS

    import numpy as np  # noqa: PLC0415

    import tinygrad_birnn as tg  # noqa: PLC0415
    from tinygrad_birnn import functional as F  # noqa: PLC0415
    from tinygrad_birnn import nn, optim  # noqa: PLC0415

    try:
        import torch  # noqa: PLC0415
    except ImportError:
        torch = None
    try:
        from threadpoolctl import threadpool_info, threadpool_limits  # noqa: PLC0415
        threadpool_limits(args.threads)
        blas = [(i.get("internal_api"), i.get("num_threads"), i.get("architecture")) for i in threadpool_info()]
    except ImportError:
        blas = "threadpoolctl not installed"
    if torch is not None:
        torch.set_num_threads(args.threads)

    if args.sizes:
        sizes = [tuple(int(n) for n in s.split(":")) for s in args.sizes.split(",")]
    elif args.quick:
        sizes = [(16, 8, 8, 16)]
    else:
        sizes = [(64, 64, 64, 128), (128, 128, 128, 256)]
    repeats = args.repeats or (5 if args.quick else 20)
    peers = [p for p in args.peers.split(",") if p != "torch" or torch is not None]
    C = args.classes

    def ours(impl: str, T: int, B: int, D: int, H: int, x: np.ndarray, y: np.ndarray):
        tg.manual_seed(0)
        rnn = nn.RNN(D, H, bidirectional=True, impl=impl)
        readout = nn.Linear(2 * H, C)
        params = list(rnn.parameters()) + list(readout.parameters())
        opt = optim.Adam(params, lr=1e-3)
        xt = tg.Tensor(x)

        def step() -> float:
            opt.zero_grad()
            out, _ = rnn(xt)
            loss = F.cross_entropy(readout(out), y)
            loss.backward()
            opt.step()
            return loss.item()

        return step

    def theirs(T: int, B: int, D: int, H: int, x: np.ndarray, y: np.ndarray):
        torch.manual_seed(0)
        rnn = torch.nn.RNN(D, H, bidirectional=True)
        readout = torch.nn.Linear(2 * H, C)
        opt = torch.optim.Adam(list(rnn.parameters()) + list(readout.parameters()), lr=1e-3)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y.reshape(-1))

        def step() -> float:
            opt.zero_grad()
            out, _ = rnn(xt)
            loss = torch.nn.functional.cross_entropy(readout(out).reshape(-1, C), yt)
            loss.backward()
            opt.step()
            return loss.item()

        return step

    results = []
    for T, B, D, H in sizes:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((T, B, D)).astype(np.float32)
        y = rng.integers(0, C, size=(T, B))
        steps = {}
        for peer in peers:
            steps[peer] = theirs(T, B, D, H, x, y) if peer == "torch" else ours(peer, T, B, D, H, x, y)
        for peer, fn in steps.items():
            for _ in range(args.warmup):
                fn()
        times: dict[str, list] = {p: [] for p in steps}
        for _ in range(repeats):  # interleaved, so drift in the machine's speed hits every peer alike
            for peer, fn in steps.items():
                t0 = time.perf_counter()
                fn()
                times[peer].append((time.perf_counter() - t0) * 1e3)
        med = {p: float(np.median(v)) for p, v in times.items()}
        results.append({"T": T, "B": B, "D": D, "H": H, "median_ms": med,
                        "min_ms": {p: float(np.min(v)) for p, v in times.items()},
                        "times_ms": times})

    names = {"fused": "fused BPTT op", "steps": "step-by-step graph", "torch": "torch.nn.RNN"}
    print(f"one training step (forward + backward + Adam), 1-layer bidirectional tanh RNN + linear readout "
          f"+ cross-entropy, float32, {args.threads} threads, median of {repeats} after {args.warmup} warm-up")
    print("OpenBLAS env: " + (", ".join(f"{v}={os.environ[v]}" for v in OPENBLAS_VARS if v in os.environ) or "unset"))
    header = f"{'(T, B, D, H)':<22}" + "".join(f"{names[p]:>22}" for p in peers)
    if "torch" in peers:
        header += "".join(f"{names[p] + ' / torch':>30}" for p in peers if p != "torch")
    print(header)
    for r in results:
        row = f"{str((r['T'], r['B'], r['D'], r['H'])):<22}" + "".join(f"{r['median_ms'][p]:>19.2f} ms" for p in peers)
        if "torch" in peers:
            row += "".join(f"{r['median_ms'][p] / r['median_ms']['torch']:>29.2f}x" for p in peers if p != "torch")
        print(row)

    out = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / f"cpu_rnn_{time.strftime('%Y%m%d_%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"threads": args.threads, "repeats": repeats, "warmup": args.warmup, "classes": C, "quick": args.quick,
            "openblas_env": {v: os.environ.get(v) for v in OPENBLAS_VARS}, "blas": blas,
            "numpy": np.__version__, "torch": None if torch is None else torch.__version__,
            "python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor()}
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
