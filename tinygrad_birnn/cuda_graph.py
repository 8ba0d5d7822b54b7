"""A whole training step captured once as a CUDA graph and replayed: ``step = CapturedStep(train_step)``.

On a GPU a small training step is a few hundred short kernels, and launching each from Python costs more than
running it. A CUDA graph records the kernels of one step once (stream capture) and replays them with a single
launch. :class:`CapturedStep` wraps a step function that takes no arguments:

1. the first call runs it normally, on a stream and a memory pool of its own (the *warm-up*: kernels compile,
   the optimizer creates its state, the pool learns the step's allocations);
2. the second call runs it under stream capture, which records instead of executing, then launches the graph;
3. every later call launches the graph: the same kernels, on the same memory, in one call.

What a step must do to be captured: read its inputs from arrays that stay where they are (copy a new batch in
with ``x.data[...] = batch`` between calls), update parameters in place (the optimizers here do), and never
ask the host for a value (``float(loss)``, ``.item()``, a host-to-device copy) inside the step. Variable lengths
work the same way: keep them in a device array, ``lengths = cupy.asarray(...)``, copy each batch's lengths into it,
and pass it to the layer; inside a capture the mask is then made on the device. The returned object (the loss,
say) is the one made during the capture; each replay rewrites its array.

Two obstacles of CuPy are met here, and nowhere else in the library:

* CuPy refuses cuBLAS calls on a stream being captured (its ``setStream`` raises). Every matrix product of the
  library goes through :func:`tinygrad_birnn.backend.matmul`; during warm-up and capture that calls
  :class:`Cublas`, a cuBLAS handle of our own on the same ``libcublas`` (reached with :mod:`ctypes`), bound to
  the capture stream *before* capture begins and given its own workspace, so nothing is set or allocated
  behind the capture's back.
* Memory freed during the capture must not be handed to anyone else while the graph lives, or a replay would
  write into somebody's array. Warm-up, capture and the arrays they make use a private
  ``cupy.cuda.MemoryPool`` kept alive by the graph.

Anything that cannot be captured (a step with dropout draws from cuRAND, a host sync, a dtype cuBLAS is not
asked for) makes the capture fail; the step then warns once with the reason and runs uncaptured from then on,
which is always correct. On the NumPy backend there is nothing to capture and the step simply runs.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import math
import warnings
from typing import Any, Callable, NamedTuple

import numpy as np

from . import backend
from .backend import CaptureError

__all__ = ["CapturedStep", "CaptureError", "Cublas", "plan_gemm"]


# --- a matrix product as one strided-batched GEMM call ------------------------------------------------------------
class Operand(NamedTuple):
    """One GEMM operand as cuBLAS reads it: an array, its op ('N' or 'T'), leading dimension and batch stride
    (in elements; 0 repeats one matrix for every batch entry)."""
    array: Any
    op: str
    ld: int
    stride: int


class GemmPlan(NamedTuple):
    """C = A @ B for row-major arrays, said in cuBLAS's column-major terms: C^T (n x m) = op(B') op(A')."""
    first: Operand    # cuBLAS's A argument: comes from B (its (n, k) view)
    second: Operand   # cuBLAS's B argument: comes from A (its (k, m) view)
    m: int            # cuBLAS's m = our n, n = our m, k = k
    n: int
    k: int
    batch: int
    shape: tuple      # the result's shape before vector axes are dropped: batch + (rows, cols)
    drop: tuple       # axes of that shape to drop because an operand was a vector (NumPy's matmul rules)


def _layout(a: Any) -> tuple | None:
    """How cuBLAS can read the (r, c) matrices in a's last two axes without a copy: ('N', ld) when rows are
    contiguous runs (row-major), ('T', ld) when columns are; None when neither (then it is copied first)."""
    r, c = a.shape[-2:]
    e = a.itemsize
    sr, sc = a.strides[-2:]
    if sr % e or sc % e:
        return None
    sr, sc = sr // e, sc // e
    if (c == 1 or sc == 1) and (r == 1 or sr >= c):
        return "N", max(c, sr if r > 1 else c, 1)
    if (r == 1 or sr == 1) and (c == 1 or sc >= r):
        return "T", max(r, sc if c > 1 else r, 1)
    return None


def _batch_stride(a: Any, batch_shape: tuple) -> int | None:
    """The element stride between consecutive matrices of a over ``batch_shape`` (0: one matrix for all), or
    None when its batch axes cannot be walked with a single stride."""
    own = a.shape[:-2]
    if math.prod(own) == 1:
        return 0
    if (1,) * (len(batch_shape) - len(own)) + tuple(own) != tuple(batch_shape):
        return None  # broadcast along some batch axes only
    axes = [(n, s) for n, s in zip(own, a.strides[:-2]) if n != 1]
    for (_, outer), (n_inner, inner) in zip(axes, axes[1:]):
        if outer != inner * n_inner:
            return None
    stride = axes[-1][1]
    return stride // a.itemsize if stride % a.itemsize == 0 and stride >= 0 else None


def _operand(xp: Any, a: Any, batch_shape: tuple) -> Operand:
    if a.size == 0:  # nothing to read: the product is empty or all zeros, and cuBLAS is not called
        return Operand(a, "N", max(1, a.shape[-1]), 0)
    layout, stride = _layout(a), _batch_stride(a, batch_shape)
    if layout is None or stride is None:
        a = xp.ascontiguousarray(xp.broadcast_to(a, tuple(batch_shape) + a.shape[-2:]))
        layout, stride = _layout(a), _batch_stride(a, batch_shape)
    return Operand(a, layout[0], layout[1], stride)


def plan_gemm(xp: Any, a: Any, b: Any) -> GemmPlan:
    """The one strided-batched GEMM that computes ``a @ b`` (NumPy's matmul rules, vectors included); operands
    whose layout cuBLAS cannot walk are copied here. Pure shape and stride arithmetic: works on NumPy too."""
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul needs operands with at least one axis; got shapes {a.shape} and {b.shape}")
    drop = []
    if a.ndim == 1:
        a = a[None, :]
        drop.append(-2)
    if b.ndim == 1:
        b = b[:, None]
        drop.append(-1)
    (m, k), (k2, n) = a.shape[-2:], b.shape[-2:]
    if k != k2:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align ({k} != {k2})")
    batch_shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    shape = tuple(batch_shape) + (m, n)
    return GemmPlan(first=_operand(xp, b, batch_shape), second=_operand(xp, a, batch_shape), m=n, n=m, k=k,
                    batch=math.prod(batch_shape), shape=shape, drop=tuple(len(shape) + d for d in drop))


def _finish(c: Any, plan: GemmPlan) -> Any:
    return c.reshape([n for i, n in enumerate(plan.shape) if i not in plan.drop])


# --- our own cuBLAS handle -----------------------------------------------------------------------------------------
_OP = {"N": 0, "T": 1}                       # cublasOperation_t
_GEMM = {np.dtype(np.float32): ("cublasSgemmStridedBatched", ctypes.c_float),
         np.dtype(np.float64): ("cublasDgemmStridedBatched", ctypes.c_double)}
WORKSPACE_BYTES = 32 * 1024 * 1024           # what cuBLAS's documentation asks of a user workspace on Hopper


def _libcublas() -> ctypes.CDLL:
    """The libcublas CuPy already loaded (found in this process's memory map), else the first that loads."""
    cupy = backend.cupy_module()
    cupy.cuda.device.get_cublas_handle()     # makes sure CuPy has loaded it
    names = []
    with contextlib.suppress(OSError):
        with open("/proc/self/maps") as maps:
            names = sorted({line.split()[-1] for line in maps if "/libcublas.so" in line})
    for name in names + ["libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"]:
        with contextlib.suppress(OSError):
            return ctypes.CDLL(name)
    raise CaptureError("could not load libcublas through ctypes (looked for CuPy's copy and libcublas.so.*)")


class Cublas:
    """A cuBLAS handle of the library's own, bound to one stream, with a workspace set: ``gemm(a, b, out)``
    runs ``a @ b`` for float32 or float64 CuPy arrays even while that stream is being captured."""

    def __init__(self, stream: Any):
        self.handle, self.capturing, self.unsupported = None, False, None
        try:
            self._open(stream)
        except (AttributeError, OSError) as error:  # an old libcublas without a function we call
            raise CaptureError(f"this libcublas cannot serve a capture: {error}") from error

    def _open(self, stream: Any) -> None:
        cupy = backend.cupy_module()
        self.cupy, self.lib, self.stream = cupy, _libcublas(), stream
        handle = ctypes.c_void_p()
        self._check(self.lib.cublasCreate_v2(ctypes.byref(handle)), "cublasCreate")
        self.handle = handle
        self._check(self.lib.cublasSetStream_v2(handle, ctypes.c_void_p(stream.ptr)), "cublasSetStream")
        self.workspace = cupy.empty(WORKSPACE_BYTES, dtype=np.uint8)
        if hasattr(self.lib, "cublasSetWorkspace_v2"):
            self._check(self.lib.cublasSetWorkspace_v2(handle, ctypes.c_void_p(self.workspace.data.ptr),
                                                       ctypes.c_size_t(WORKSPACE_BYTES)), "cublasSetWorkspace")
        for name, _ in _GEMM.values():
            fn = getattr(self.lib, name)
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                           ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong,
                           ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong, ctypes.c_void_p,
                           ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong, ctypes.c_int]

    @staticmethod
    def _check(status: int, what: str) -> None:
        if status != 0:
            raise CaptureError(f"{what} failed with cuBLAS status {status}")

    def gemm(self, a: Any, b: Any, out: Any = None) -> Any:
        dtype = np.result_type(a.dtype, b.dtype)
        if dtype not in _GEMM or a.dtype != dtype or b.dtype != dtype:
            reason = f"a captured matmul takes two float32 or two float64 arrays; got {a.dtype} @ {b.dtype}"
            if self.capturing:
                raise CaptureError(reason)
            self.unsupported = self.unsupported or reason  # CuPy's matmul serves now; the capture is skipped
            return self.cupy.matmul(a, b, out=out)
        plan = plan_gemm(self.cupy, a, b)
        final_shape = tuple(n for i, n in enumerate(plan.shape) if i not in plan.drop)
        direct = (out is not None and out.dtype == dtype and tuple(out.shape) == final_shape
                  and out.flags.c_contiguous)
        c = out if direct else self.cupy.empty(plan.shape, dtype=dtype)
        if c.size == 0:
            pass
        elif plan.k == 0:
            c.fill(0)
        else:
            name, scalar = _GEMM[dtype]
            one, zero = scalar(1), scalar(0)
            first, second = plan.first, plan.second
            self._check(getattr(self.lib, name)(
                self.handle, _OP[first.op], _OP[second.op], plan.m, plan.n, plan.k, ctypes.byref(one),
                first.array.data.ptr, first.ld, first.stride, second.array.data.ptr, second.ld, second.stride,
                ctypes.byref(zero), c.data.ptr, plan.m, plan.m * plan.n, plan.batch), name)
        if direct:
            return out
        c = _finish(c, plan)
        if out is None:
            return c
        out[...] = c
        return out

    def close(self) -> None:
        """Destroy the handle; during some capture, only after it (destroying may synchronise the device)."""
        if self.handle is not None:
            _retired.append((self.lib, self.handle))
            self.handle = None
        if not backend.capturing():
            while _retired:
                lib, handle = _retired.pop()
                lib.cublasDestroy_v2(handle)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


_retired: list = []  # handles closed during a capture, destroyed after it


@contextlib.contextmanager
def _routed(blas: Cublas, capturing: bool):
    """While inside: the library's matrix products go through ``blas``; when ``capturing``, host-to-device
    copies of the library raise (a graph cannot replay them)."""
    previous, backend._capture, blas.capturing = backend._capture, blas, capturing
    try:
        yield
    finally:
        backend._capture, blas.capturing = previous, False


# --- the captured step -----------------------------------------------------------------------------------------------
class CapturedStep:
    """``fn`` (one training step, no arguments) run as a CUDA graph on the CuPy backend; see the module text.

    ``mode`` says how the next call runs: 'warmup', 'capture', 'graph', or 'eager' (NumPy backend, or a step
    that could not be captured; ``reason`` says why). ``enabled=False`` always runs ``fn`` as it is.
    """

    def __init__(self, fn: Callable[[], Any], enabled: bool = True):
        self.fn = fn
        self.mode, self.reason = "warmup", None
        if not enabled:
            self.mode, self.reason = "eager", "capture disabled (enabled=False)"
        elif backend.backend_name() != "cupy":
            self.mode, self.reason = "eager", "the numpy backend runs on the CPU: there is no CUDA graph to capture"
        self.graph = self.result = self._pool = self._stream = self._blas = None

    def __repr__(self) -> str:
        return f"CapturedStep({getattr(self.fn, '__name__', 'fn')}, mode={self.mode!r})" + (
            f"  # {self.reason}" if self.reason else "")

    def _private(self, capturing: bool):
        """Run on our stream, allocating from our pool, with the library's products on our cuBLAS handle."""
        cupy = backend.cupy_module()
        stack = contextlib.ExitStack()
        stack.enter_context(self._stream)
        stack.enter_context(cupy.cuda.using_allocator(self._pool.malloc))
        stack.enter_context(_routed(self._blas, capturing))
        return stack

    def _give_up(self, error: BaseException, run: bool = True) -> Any:
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.synchronize()         # what the warm-up queued, before the default stream goes on
        self.mode, self.reason = "eager", f"{type(error).__name__}: {error}"
        self.graph = None
        warnings.warn(f"CapturedStep: the step cannot be captured as a CUDA graph and runs uncaptured ({self.reason})",
                      RuntimeWarning, stacklevel=3)
        return self.fn() if run else None

    def __call__(self) -> Any:
        if self.mode == "graph":
            self.graph.launch()                    # on the current stream, ordered with the caller's own work
            return self.result
        if self.mode == "eager":
            return self.fn()
        cupy = backend.cupy_module()
        if self.mode == "warmup":                  # a real step, run as it will be captured
            cupy.cuda.Device().synchronize()       # our stream does not wait for the default stream by itself
            try:
                self._stream = cupy.cuda.Stream(non_blocking=True)
                self._pool = cupy.cuda.MemoryPool()
                self._blas = Cublas(self._stream)
            except CaptureError as error:
                return self._give_up(error)
            with self._private(capturing=False):
                result = self.fn()
            self._stream.synchronize()
            if self._blas.unsupported:
                self._give_up(CaptureError(self._blas.unsupported), run=False)
            else:
                self.mode = "capture"
            return result
        # capture: record one step (nothing runs), then launch it. The cyclic garbage collector is kept out of
        # the capture: collecting an old CuPy stream, pool or cuBLAS handle frees device memory, and a cudaFree
        # (which synchronises the device) during a capture invalidates it (seen as cuBLAS status 13 on an H200).
        gc.collect()
        collecting = gc.isenabled()
        gc.disable()
        try:
            with self._private(capturing=True):
                self._stream.begin_capture()
                try:
                    result = self.fn()
                except BaseException:
                    with contextlib.suppress(Exception):
                        self._stream.end_capture()  # an invalidated capture still has to be ended
                    raise
                graph = self._stream.end_capture()
            if hasattr(graph, "upload"):
                graph.upload()
        except Exception as error:  # anything the capture refused: the step stays correct, uncaptured
            return self._give_up(error)
        finally:
            if collecting:
                gc.enable()
        self.graph, self.result, self.mode = graph, result, "graph"
        self.graph.launch()
        return result
