"""What a bidirectional RNN layer costs next to a unidirectional one of the same width, on the CPU.

One forward and backward pass of a tanh RNN layer (float32, input gradient included), unidirectional and
bidirectional, for the library's fused and batched implementations and for PyTorch's nn.RNN as the peer.
All six run in one process, interleaved round by round with one BLAS thread, so that load on the machine
hits each alike. The best (least disturbed) and the median time of each, and the ratio bidirectional /
unidirectional of the best times, are written to a JSON file with the command, machine and date
(chapter 7 reads it). On a machine shared with other work the best time is the steadier estimate.

    python benchmarks/bench_bidirectional_cost.py             # 31 rounds
    python benchmarks/bench_bidirectional_cost.py --rounds 5  # a quick look
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before NumPy and PyTorch load their BLAS

import numpy as np  # noqa: E402

import tinygrad_birnn as tg  # noqa: E402
from tinygrad_birnn import Tensor, nn  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "tinygrad_birnn" / "datasets" / "stored"
SIZES = [(50, 16, 16, 32), (100, 16, 16, 32), (50, 64, 64, 128)]  # (T, B, D, H)


def library_runner(impl, T, B, D, H, bidirectional):
    tg.manual_seed(0)
    layer = nn.RNN(D, H, bidirectional=bidirectional, impl=impl)
    r = np.random.default_rng(0)
    x = Tensor(r.standard_normal((T, B, D)).astype(np.float32), requires_grad=True)
    g = Tensor(r.standard_normal((T, B, (2 if bidirectional else 1) * H)).astype(np.float32))

    def run():
        layer.zero_grad()
        x.grad = None
        output, _ = layer(x)
        output.backward(g)
    return run


def torch_runner(T, B, D, H, bidirectional):
    import torch  # noqa: PLC0415

    torch.set_num_threads(1)
    torch.manual_seed(0)
    layer = torch.nn.RNN(D, H, bidirectional=bidirectional)
    x = torch.randn(T, B, D, requires_grad=True)
    g = torch.randn(T, B, (2 if bidirectional else 1) * H)

    def run():
        layer.zero_grad()
        x.grad = None
        output, _ = layer(x)
        output.backward(g)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--out", default=str(OUT / "bidirectional_cost.json"))
    args = parser.parse_args()
    try:
        import torch  # noqa: F401, PLC0415
        peers = ["tinygrad_birnn fused", "tinygrad_birnn batched", "PyTorch nn.RNN"]
    except ImportError:
        peers = ["tinygrad_birnn fused", "tinygrad_birnn batched"]
    rows = []
    for size in SIZES:
        runners = {}
        for peer in peers:
            for bi in (False, True):
                if peer.startswith("PyTorch"):
                    runners[(peer, bi)] = torch_runner(*size, bi)
                else:
                    runners[(peer, bi)] = library_runner(peer.split()[-1], *size, bi)
        times = {key: [] for key in runners}
        for run in runners.values():
            run()  # warm-up
        for _ in range(args.rounds):
            for key, run in runners.items():
                start = time.perf_counter()
                run()
                times[key].append(time.perf_counter() - start)
        for peer in peers:
            uni, bi = (1e3 * min(times[(peer, b)]) for b in (False, True))
            uni_med, bi_med = (1e3 * statistics.median(times[(peer, b)]) for b in (False, True))
            rows.append({"TBDH": list(size), "peer": peer, "uni_ms": round(uni, 4),
                         "bi_ms": round(bi, 4), "ratio": round(bi / uni, 4),
                         "uni_median_ms": round(uni_med, 4), "bi_median_ms": round(bi_med, 4)})
            print(f"{str(size):<20} {peer:<24} one way {uni:8.2f} ms, both {bi:8.2f} ms,"
                  f" ratio {bi / uni:.2f}", flush=True)
    result = {
        "command": "python benchmarks/bench_bidirectional_cost.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs)",
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(), "numpy": np.__version__,
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "rounds": args.rounds, "threads": 1, "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
