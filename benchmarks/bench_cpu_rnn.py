"""One training step of a bidirectional tanh RNN on the CPU: the library's BPTT layer against its peers.

The model: a 1-layer bidirectional tanh RNN, a linear readout on [h_t || h'_t] at every step, cross-entropy
over all steps, float32; one step = forward, backward, optimizer step (Adam). The peers:

* ``bptt``: the library, ``impl="bptt"`` (one autograd node per layer, BPTT by hand; the CPU default);
* ``bptt_batched``: the library, ``impl="bptt_batched"`` (both directions per step: the GPU's default);
* ``autograd``: the library, ``impl="autograd"`` (the cells step by step, the engine differentiates them);
* ``before``: the library as it was at the git revision ``--before`` names, ``impl="fused"`` (its name there),
  imported from a copy of that revision's package under another name, so both versions run in one process;
* ``numpy``: the floor, the same step hand-written in plain NumPy (input projection hoisted out of the loop,
  preallocated buffers, the readout, cross-entropy and Adam by hand): what a Python library can approach;
* ``torch``: ``torch.nn.RNN`` on the CPU.

All peers run in one process, interleaved round by round, with the same number of BLAS threads; medians over
repeats after warm-up, and each peer's ratio to torch and to the floor.

    python benchmarks/bench_cpu_rnn.py            # sizes S (32, 32, 32, 64), M (64, 64, 64, 128), L (128, 128, 128, 256)
    python benchmarks/bench_cpu_rnn.py --quick    # a tiny run (seconds)
    python benchmarks/bench_cpu_rnn.py --before 259d31f --peers before,bptt,numpy,torch   # before/after a change
    python benchmarks/bench_cpu_rnn.py --unset-openblas-env   # re-exec without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE

Writes a JSON file to benchmarks/results/ (gitignored).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (a smoke test)")
    p.add_argument("--threads", type=int, default=2, help="BLAS threads for NumPy and PyTorch (default 2)")
    p.add_argument("--repeats", type=int, default=None, help="timed steps per peer (default 20, 5 with --quick)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per peer first")
    p.add_argument("--sizes", default=None, help="comma-separated T:B:D:H, e.g. 64:64:64:128")
    p.add_argument("--classes", type=int, default=16, help="readout classes")
    p.add_argument("--peers", default="bptt,autograd,numpy,torch",
                   help="which of bptt, bptt_batched, autograd, before, numpy, torch to time (comma-separated)")
    p.add_argument("--before", default=None, help="git revision whose library the 'before' peer runs")
    p.add_argument("--clock", choices=["wall", "process"], default="wall",
                   help="wall time, or this process's CPU time (all its threads): steadier on a shared machine, "
                        "and with --threads 1 the time a step needs when it has a core to itself")
    p.add_argument("--order", choices=["shuffled", "fixed"], default="shuffled",
                   help="the peers' order within each round: shuffled anew every round (default), or as listed; "
                        "in a fixed order the peer that follows PyTorch always starts with the caches PyTorch "
                        "left (measured: about 0.1 ms of a 2 ms step at size S)")
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

    sys.path.insert(0, str(ROOT))
    import tinygrad_birnn as tg  # noqa: PLC0415

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
        sizes = [(32, 32, 32, 64), (64, 64, 64, 128), (128, 128, 128, 256)]
    repeats = args.repeats or (5 if args.quick else 20)
    peers = [p for p in args.peers.split(",") if p != "torch" or torch is not None]
    if "before" in peers and not args.before:
        raise SystemExit("the 'before' peer needs --before REVISION")
    libraries = {"bptt": (tg, "bptt"), "bptt_batched": (tg, "bptt_batched"), "autograd": (tg, "autograd")}
    if "before" in peers:
        libraries["before"] = (library_at(args.before), "fused")
    C = args.classes

    def ours(peer: str, T: int, B: int, D: int, H: int, x: np.ndarray, y: np.ndarray):
        lib, impl = libraries[peer]
        F = importlib.import_module(lib.__name__ + ".functional")
        lib.manual_seed(0)
        rnn = lib.nn.RNN(D, H, bidirectional=True, impl=impl)
        readout = lib.nn.Linear(2 * H, C)
        params = list(rnn.parameters()) + list(readout.parameters())
        opt = lib.optim.Adam(params, lr=1e-3)
        xt = lib.Tensor(x)

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

    clock = time.perf_counter if args.clock == "wall" else time.process_time
    results = []
    for T, B, D, H in sizes:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((T, B, D)).astype(np.float32)
        y = rng.integers(0, C, size=(T, B))
        steps = {}
        for peer in peers:
            if peer == "torch":
                steps[peer] = theirs(T, B, D, H, x, y)
            elif peer == "numpy":
                steps[peer] = NumpyFloor(T, B, D, H, C, x, y).step
            else:
                steps[peer] = ours(peer, T, B, D, H, x, y)
        for peer, fn in steps.items():
            for _ in range(args.warmup):
                fn()
        times: dict[str, list] = {p: [] for p in steps}
        order = list(steps)
        shuffler = np.random.default_rng(T * 1000 + H)
        for _ in range(repeats):  # interleaved, so drift in the machine's speed hits every peer alike
            if args.order == "shuffled":  # and no peer always runs right after the same one (see --order)
                shuffler.shuffle(order)
            for peer in order:
                t0 = clock()
                steps[peer]()
                times[peer].append((clock() - t0) * 1e3)
        med = {p: float(np.median(v)) for p, v in times.items()}
        results.append({"T": T, "B": B, "D": D, "H": H, "median_ms": med,
                        "min_ms": {p: float(np.min(v)) for p, v in times.items()},
                        "times_ms": times})
        print(f"{(T, B, D, H)}: " + ", ".join(f"{p} {m:.2f} ms" for p, m in med.items()), flush=True)

    print(f"one training step (forward + backward + Adam), 1-layer bidirectional tanh RNN + linear readout "
          f"+ cross-entropy, float32, {args.threads} threads, median of {repeats} after {args.warmup} warm-up, "
          f"peers interleaved round by round ({args.order} order), {args.clock} clock")
    print("OpenBLAS env: " + (", ".join(f"{v}={os.environ[v]}" for v in OPENBLAS_VARS if v in os.environ) or "unset"))
    if args.before:
        print(f"before = the library at {args.before} (impl='fused')")
    print_table(results, peers)

    out = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / f"cpu_rnn_{time.strftime('%Y%m%d_%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "node": platform.node(), "cpus": os.cpu_count(), "before": args.before, "clock": args.clock, "order": args.order, "threads": args.threads, "repeats": repeats, "warmup": args.warmup, "classes": C, "quick": args.quick,
            "openblas_env": {v: os.environ.get(v) for v in OPENBLAS_VARS}, "blas": blas,
            "numpy": np.__version__, "torch": None if torch is None else torch.__version__,
            "python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor()}
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=str))
    print(f"wrote {out}")


def print_table(results: list, peers: list) -> None:
    """Medians in ms, then each peer's ratio to torch and to the NumPy floor (where they ran)."""
    header = f"{'(T, B, D, H)':<22}" + "".join(f"{p + ' ms':>12}" for p in peers)
    refs = [r for r in ("torch", "numpy") if r in peers]
    ratios = [(p, r) for r in refs for p in peers if p != r]
    header += "".join(f"{p + '/' + r:>16}" for p, r in ratios)
    print(header)
    for r in results:
        med = r["median_ms"]
        row = f"{str((r['T'], r['B'], r['D'], r['H'])):<22}" + "".join(f"{med[p]:>12.2f}" for p in peers)
        row += "".join(f"{med[p] / med[ref]:>15.2f}x" for p, ref in ratios)
        print(row)


def library_at(revision: str):
    """The package tinygrad_birnn as it was at a git revision, imported as ``tinygrad_birnn_before``."""
    folder = Path(tempfile.mkdtemp(prefix="tinygrad_birnn_before_"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "tinygrad_birnn"], check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    (folder / "tinygrad_birnn").rename(folder / "tinygrad_birnn_before")
    sys.path.insert(0, str(folder))
    return importlib.import_module("tinygrad_birnn_before")


class NumpyFloor:
    """The same training step written by hand in plain NumPy: the projection of every step's input hoisted out
    of the loop, the tanh derivative of all steps at once, every array of the size of a sequence allocated once
    and written with ``out=``, so no step waits for fresh pages from the system, whatever the other peers left
    the C allocator in (allocated anew at every step, these buffers made the floor 0.1-0.3 ms slower at size S
    in some peers' company and not in others')."""

    def __init__(self, T: int, B: int, D: int, H: int, C: int, x, y):
        import numpy as np  # noqa: PLC0415
        self.np, self.T, self.B, self.D, self.H, self.C = np, T, B, D, H, C
        rng = np.random.default_rng(0)
        k, f32 = 1 / np.sqrt(H), np.float32
        u = lambda *shape: rng.uniform(-k, k, size=shape).astype(f32)  # noqa: E731
        self.params = {"w_ih": u(2 * H, D), "w_hh": u(2, H, H), "b": u(2 * H) + u(2 * H),
                       "v": u(C, 2 * H), "c": u(C)}
        self.m = {n: np.zeros_like(p) for n, p in self.params.items()}
        self.s = {n: np.zeros_like(p) for n, p in self.params.items()}
        self.t = 0
        self.x, self.y = x, y.reshape(-1)
        n = T * B
        self.rows = np.arange(n)
        self.hs = np.empty((2, T + 1, B, H), f32)
        self.pre = np.empty((n, 2 * H), f32)
        self.out = np.empty((T, B, 2 * H), f32)
        self.logits = np.empty((n, C), f32)
        self.dout = np.empty((n, 2 * H), f32)
        self.deriv = np.empty((T, B, 2 * H), f32)
        self.dpre = np.empty((T, B, 2 * H), f32)
        self.delta_sched = np.empty((T * B, H), f32)
        self.carry = np.empty((B, H), f32)

    def forward(self) -> None:
        np, T, H, p = self.np, self.T, self.H, self.params
        np.matmul(self.x.reshape(T * self.B, self.D), p["w_ih"].T, out=self.pre)
        self.pre += p["b"]
        pre = self.pre.reshape(T, self.B, 2 * H)
        for d in range(2):
            hs, w_t = self.hs[d], p["w_hh"][d].T
            hs[0] = 0
            order = range(T) if d == 0 else reversed(range(T))
            for s, t in enumerate(order):
                np.matmul(hs[s], w_t, out=hs[s + 1])
                hs[s + 1] += pre[t, :, d * H:(d + 1) * H]
                np.tanh(hs[s + 1], out=hs[s + 1])
            self.out[:, :, d * H:(d + 1) * H] = hs[1:] if d == 0 else hs[:0:-1]

    def step(self) -> float:
        np, T, B, H, p = self.np, self.T, self.B, self.H, self.params
        self.forward()
        flat = self.out.reshape(T * B, 2 * H)
        logits = np.matmul(flat, p["v"].T, out=self.logits)
        logits += p["c"]
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits, out=logits)
        e /= e.sum(axis=1, keepdims=True)
        n = T * B
        loss = -float(np.log(e[self.rows, self.y]).mean())
        e[self.rows, self.y] -= 1
        e /= n
        grads = {"v": e.T @ flat, "c": e.sum(axis=0)}
        dout = np.matmul(e, p["v"], out=self.dout).reshape(T, B, 2 * H)
        deriv = np.multiply(self.out, self.out, out=self.deriv)
        np.subtract(1, deriv, out=deriv)
        w_hh_grad = np.empty_like(p["w_hh"])
        for d in range(2):
            cols, hs = slice(d * H, (d + 1) * H), self.hs[d]
            carry = self.carry
            carry.fill(0)
            order = list(range(T)) if d == 0 else list(reversed(range(T)))
            for s in reversed(range(T)):
                t = order[s]
                carry += dout[t, :, cols]
                delta = self.dpre[t, :, cols]
                np.multiply(carry, deriv[t, :, cols], out=delta)
                np.matmul(delta, p["w_hh"][d], out=carry)
            delta_sched = self.dpre[:, :, cols] if d == 0 else self.dpre[::-1, :, cols]
            np.copyto(self.delta_sched.reshape(T, B, H), delta_sched)
            w_hh_grad[d] = self.delta_sched.T @ hs[:-1].reshape(T * B, H)
        d2 = self.dpre.reshape(T * B, 2 * H)
        grads.update(w_ih=d2.T @ self.x.reshape(T * B, self.D), w_hh=w_hh_grad, b=2 * d2.sum(axis=0))
        self.adam(grads)
        return loss

    def adam(self, grads: dict, lr: float = 1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> None:
        self.t += 1
        for name, g in grads.items():
            m, s, p = self.m[name], self.s[name], self.params[name]
            m *= b1
            m += (1 - b1) * g
            s *= b2
            s += (1 - b2) * g * g
            p -= lr / (1 - b1 ** self.t) * m / (self.np.sqrt(s / (1 - b2 ** self.t)) + eps)


if __name__ == "__main__":
    main()
