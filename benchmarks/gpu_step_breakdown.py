"""Where the time of a captured training step goes on a GPU: the recurrence's matrix products and cell kernels
timed alone, each as a CUDA graph of T launches, next to the whole captured step.

    python benchmarks/gpu_step_breakdown.py            # sizes S M L XL, tanh RNN and LSTM
    python benchmarks/gpu_step_breakdown.py --sizes L --json out.json

For each size it replays, as one graph each (CUDA events, median of several replays):

* ``step``: the whole training step (batched layer + readout + cross-entropy + Adam) through ``CapturedStep``;
* ``forward``: the layer's forward pass alone;
* ``gemm batched``: T recurrent products as the batched layer issues them, (D, B, H) @ (D, H, G*H), one call;
* ``gemm per direction``: the same as D separate (B, H) @ (H, G*H) calls;
* ``gemm split-K s``: the same products with the inner dimension cut into s pieces, one call over D*s matrices
  (what a layout of the states as (B, D, H) would allow; the s partial sums would be added by the cell kernel);
* ``cell kernel``: T launches of the fused forward cell kernel.

Needs a CUDA GPU and cupy; prints a table in microseconds per recurrent step. Timings are for reading, not
asserting.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tinygrad_birnn as tg  # noqa: E402
from tinygrad_birnn import backend, cuda_graph, nn, optim  # noqa: E402
from tinygrad_birnn.rnn import steps  # noqa: E402
from tinygrad_birnn import functional as F  # noqa: E402

SIZES = {"S": (32, 32, 32, 64), "M": (64, 64, 64, 128), "L": (128, 128, 128, 256), "XL": (256, 256, 256, 1024)}


def replay_ms(cp, stream, fn, repeats: int = 7, launches: int = 5) -> float:
    """Capture fn() on ``stream`` (after one plain run), then the median ms of one replay."""
    with stream:
        fn()
        stream.synchronize()
        stream.begin_capture()
        fn()
        graph = stream.end_capture()
    graph.upload(stream)
    times = []
    for _ in range(repeats):
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record(stream)
        for _ in range(launches):
            graph.launch(stream)
        end.record(stream)
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end) / launches)
    return statistics.median(times)


def step_ms(cp, size: str, cell: str, part: str) -> float:
    T, B, D, H = SIZES[size]
    tg.manual_seed(0)
    rng = np.random.default_rng(0)
    layer = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell](D, H, bidirectional=True, impl="bptt_batched")
    readout = nn.Linear(2 * H, 16)
    opt = optim.Adam(list(layer.parameters()) + list(readout.parameters()), lr=1e-3)
    x = tg.Tensor(rng.standard_normal((T, B, D)).astype(np.float32))
    y = backend.to_backend(rng.integers(0, 16, size=(T, B)), "cupy")

    def train_step():
        opt.zero_grad()
        loss = F.cross_entropy(readout(layer(x)[0]), y)
        loss.backward()
        opt.step()
        return loss

    def forward():
        with tg.no_grad():
            return layer(x)

    step = cuda_graph.CapturedStep(train_step if part == "step" else forward)
    for _ in range(3):
        step()
    assert step.mode == "graph", step.reason
    start, end = cp.cuda.Event(), cp.cuda.Event()
    times = []
    for _ in range(7):
        start.record()
        for _ in range(5):
            step()
        end.record()
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end) / 5)
    return statistics.median(times)


def recurrence_parts(cp, size: str, cell: str) -> dict:
    """ms for T launches of each variant of the recurrent product, and of the cell kernel."""
    T, B, _, H = SIZES[size]
    D, GH = 2, {"lstm": 4, "gru": 3, "rnn": 1}[cell] * H
    f32 = np.float32
    stream = cp.cuda.Stream(non_blocking=True)
    blas = cuda_graph.Cublas(stream)
    h = cp.random.standard_normal((D, B, H), dtype=f32)
    w_t = cp.random.standard_normal((D, H, GH), dtype=f32)
    z = cp.empty((D, B, GH), f32)
    out = {}
    out["gemm batched"] = replay_ms(cp, stream, lambda: [blas.gemm(h, w_t, out=z) for _ in range(T)])
    out["gemm per direction"] = replay_ms(
        cp, stream, lambda: [blas.gemm(h[d], w_t[d], out=z[d]) for _ in range(T) for d in range(D)])
    h_bdh = cp.random.standard_normal((B, D * H), dtype=f32)   # states stored (B, D, H)
    for s in (2, 4):
        hs = H // s
        h_split = cp.lib.stride_tricks.as_strided(h_bdh, shape=(D * s, B, hs), strides=(hs * 4, D * H * 4, 4))
        w_split = w_t.reshape(D * s, hs, GH)
        z_split = cp.empty((D * s, B, GH), f32)
        out[f"gemm split-K {s}"] = replay_ms(cp, stream, lambda: [blas.gemm(h_split, w_split, out=z_split)
                                                                  for _ in range(T)])
    pre, new = cp.random.standard_normal((D, B, GH), dtype=f32), cp.empty((D, B, H), f32)
    if cell == "lstm":
        c, tanh_c, gates = cp.zeros((D, B, H), f32), cp.empty((D, B, H), f32), cp.empty((D, B, GH), f32)
        c2 = cp.empty((D, B, H), f32)
        kernel = lambda: steps.lstm_step_forward(z, pre, (h, c), None, (gates, tanh_c), (new, c2))  # noqa: E731
    elif cell == "gru":
        gates, hn = cp.empty((D, B, GH), f32), cp.empty((D, B, H), f32)
        kernel = lambda: steps.gru_step_forward(z, pre, (h,), None, (gates, hn), (new,))  # noqa: E731
    else:
        kernel = lambda: steps.rnn_step_forward(z, pre, (h,), None, (), (new,))  # noqa: E731
    out["cell kernel"] = replay_ms(cp, stream, lambda: [kernel() for _ in range(T)])
    blas.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--cells", nargs="+", default=["rnn", "lstm", "gru"], choices=["rnn", "lstm", "gru"])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if not backend.gpu_available():
        print("skip: no CUDA GPU usable by cupy")
        return
    cp = tg.set_backend("cupy")
    print("GPU:", cp.cuda.runtime.getDeviceProperties(0)["name"].decode())
    results = []
    for cell in args.cells:
        for size in args.sizes:
            T = SIZES[size][0]
            row = {"cell": cell, "size": size, "T": T, "ms": {}}
            row["ms"]["step"] = step_ms(cp, size, cell, "step")
            row["ms"]["forward"] = step_ms(cp, size, cell, "forward")
            row["ms"].update(recurrence_parts(cp, size, cell))
            results.append(row)
            print(f"\n{cell.upper()} {size} (T, B, D, H) = {SIZES[size]}: ms per replay, µs per recurrent step")
            for part, ms in row["ms"].items():
                steps = 2 * T if part == "step" else T
                print(f"  {part:<20}{ms:9.3f} ms {1e3 * ms / steps:9.2f} µs")
    if args.json:
        gpu = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
        Path(args.json).write_text(json.dumps({"gpu": gpu, "script": "benchmarks/gpu_step_breakdown.py",
                                               "rows": results}, indent=2))


if __name__ == "__main__":
    main()
