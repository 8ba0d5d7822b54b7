"""One training step of a 1-layer bidirectional RNN (tanh) or LSTM + linear readout + cross-entropy, float32:
the library on NumPy and on CuPy (each implementation: ``bptt``, ``bptt_batched``, and ``graph``: the batched step
captured once as a CUDA graph and replayed, :mod:`tinygrad_birnn.cuda_graph`) against PyTorch on the CPU and on
CUDA (cuDNN, FP32 and TF32), side by side.

    python benchmarks/bench_gpu_rnn.py                 # all sizes, all peers present
    python benchmarks/bench_gpu_rnn.py --sizes S M --cells rnn --repeats 20 --json out.json
    python benchmarks/bench_gpu_rnn.py --impls graph   # only the captured batched step of the library

Prints ms per step (medians) and each row's ratio to cuDNN FP32 in the same run; peers that are not installed
(cupy, torch, a CUDA device) are skipped with a message. Never a unit test: timings are for reading, not asserting.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tinygrad_birnn as tg  # noqa: E402
from tinygrad_birnn import backend, nn, optim  # noqa: E402
from tinygrad_birnn import functional as F  # noqa: E402
from tinygrad_birnn.cuda_graph import CapturedStep  # noqa: E402

SIZES = {"S": (32, 32, 32, 64), "M": (64, 64, 64, 128), "L": (128, 128, 128, 256), "XL": (256, 256, 256, 1024)}
N_CLASSES = 16


def median_ms(step, sync, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def data(size: str, seed: int = 0):
    T, B, D, _ = SIZES[size]
    rng = np.random.default_rng(seed)
    return rng.standard_normal((T, B, D)).astype(np.float32), rng.integers(0, N_CLASSES, size=(T, B))


def library_step(size: str, cell: str, name: str, impl: str):
    """A closure running one training step of the library on backend ``name``; impl 'graph' is the batched
    layer's step captured as a CUDA graph."""
    tg.set_backend(name)
    tg.manual_seed(0)
    T, B, D, H = SIZES[size]
    x_host, y_host = data(size)
    layer = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell](
        D, H, bidirectional=True, impl="bptt_batched" if impl == "graph" else impl)
    readout = nn.Linear(2 * H, N_CLASSES)
    params = list(layer.parameters()) + list(readout.parameters())
    opt = optim.Adam(params, lr=1e-3)
    x = tg.Tensor(x_host)
    y = backend.to_backend(y_host, name)

    def step() -> None:
        opt.zero_grad()
        out, _ = layer(x)
        loss = F.cross_entropy(readout(out), y)
        loss.backward()
        opt.step()

    if impl == "graph":
        captured = CapturedStep(step)
        return captured, backend.synchronize
    return step, backend.synchronize


def torch_step(size: str, cell: str, device: str, tf32: bool = False):
    import torch

    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.manual_seed(0)
    T, B, D, H = SIZES[size]
    x_host, y_host = data(size)
    layer = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell](D, H, bidirectional=True).to(device)
    readout = torch.nn.Linear(2 * H, N_CLASSES).to(device)
    opt = torch.optim.Adam(list(layer.parameters()) + list(readout.parameters()), lr=1e-3)
    x = torch.from_numpy(x_host).to(device)
    y = torch.from_numpy(y_host).to(device)

    def step() -> None:
        opt.zero_grad()
        out, _ = layer(x)
        loss = torch.nn.functional.cross_entropy(readout(out).reshape(-1, N_CLASSES), y.reshape(-1))
        loss.backward()
        opt.step()

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    return step, sync


def library_label(name: str, impl: str) -> str:
    return f"tinygrad_birnn {name} {impl}"


def peers(args):
    """(label, factory) for every peer that can run here; prints why the others are skipped."""
    names = ["numpy"]
    if backend.gpu_available():
        names.append("cupy")
    else:
        print("skip tinygrad_birnn cupy: no CUDA GPU usable by cupy")
    rows = [(library_label(name, impl), lambda s, c, name=name, impl=impl: library_step(s, c, name, impl=impl))
            for name in names for impl in args.impls if not (impl == "graph" and name == "numpy")]
    try:
        import torch
    except ImportError:
        print("skip PyTorch: not installed")
        return rows
    torch.set_num_threads(args.threads)
    rows.append(("PyTorch CPU", lambda s, c: torch_step(s, c, "cpu")))
    if torch.cuda.is_available():
        rows.append(("PyTorch cuDNN FP32", lambda s, c: torch_step(s, c, "cuda")))
        rows.append(("PyTorch cuDNN TF32", lambda s, c: torch_step(s, c, "cuda", tf32=True)))
    else:
        print("skip PyTorch CUDA: no CUDA device")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--cells", nargs="+", default=["rnn", "lstm"], choices=["rnn", "lstm", "gru"])
    parser.add_argument("--impls", nargs="+", default=["bptt", "bptt_batched", "graph"],
                        choices=["bptt", "bptt_batched", "graph", "autograd"],
                        help="the library's implementations to time (impl= of its layers)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for PyTorch (match your BLAS)")
    parser.add_argument("--cpu-max", default="L", choices=list(SIZES), help="largest size the CPU peers run")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    results = {"machine": platform.node(), "python": platform.python_version(), "rows": []}
    try:
        import cupy

        results["gpu"] = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    except Exception:
        results["gpu"] = None
    print(f"GPU: {results['gpu']}")
    order = list(SIZES)
    for cell in args.cells:
        for size in args.sizes:
            base = None
            line = []
            for label, factory in peers(args):
                if "CPU" in label or "numpy" in label:
                    if order.index(size) > order.index(args.cpu_max):
                        continue
                try:
                    step, sync = factory(size, cell)
                    ms = median_ms(step, sync, args.warmup, args.repeats if "CPU" not in label and "numpy" not in label else max(3, args.repeats // 3))
                except Exception as error:  # a peer that fails is reported, not fatal
                    print(f"{cell} {size} {label}: failed: {type(error).__name__}: {error}")
                    continue
                finally:
                    tg.set_backend("numpy")
                impl = label.split()[-1] if label.startswith("tinygrad_birnn") else None
                if isinstance(step, CapturedStep) and step.mode != "graph":
                    print(f"{cell} {size} {label}: not captured, timed uncaptured: {step.reason}")
                    label += " (uncaptured)"
                if label == "PyTorch cuDNN FP32":
                    base = ms
                line.append((label, ms))
                results["rows"].append({"cell": cell, "size": size, "TBDH": SIZES[size], "peer": label, "impl": impl,
                                        "ms": ms})
            print(f"\n{cell.upper()} {size} (T, B, D, H) = {SIZES[size]}")
            for label, ms in line:
                ratio = f"{ms / base:6.2f}x cuDNN" if base else ""
                print(f"  {label:<30} {ms:9.2f} ms  {ratio}")
    for row in results["rows"]:
        fp32 = [r["ms"] for r in results["rows"] if r["cell"] == row["cell"] and r["size"] == row["size"] and r["peer"] == "PyTorch cuDNN FP32"]
        row["ratio_to_cudnn_fp32"] = row["ms"] / fp32[0] if fp32 else None
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
