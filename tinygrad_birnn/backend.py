"""The array backend: NumPy on the CPU, CuPy on a GPU.

This is the only module that imports :mod:`cupy`. Everything else asks :func:`get_backend` for the module
new arrays are made with, or :func:`xp_of` for the module that existing arrays belong to, so one piece of
code serves both backends (the pattern Chainer calls ``get_array_module``).

The backend is chosen once at import from the environment variable ``TINYGRAD_BIRNN_BACKEND``
(``numpy``, the default, or ``cupy``) and can be changed with :func:`set_backend`.
"""
from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import numpy as np

BACKENDS = ("numpy", "cupy")
ENV_VAR = "TINYGRAD_BIRNN_BACKEND"

_cupy: ModuleType | None = None
_xp: ModuleType = np


def _import_cupy() -> ModuleType:
    """Import cupy and check that it can reach a GPU, or say exactly what is missing."""
    global _cupy
    if _cupy is not None:
        return _cupy
    try:
        import cupy  # noqa: PLC0415 (the one import of cupy in the project)
    except ImportError as error:
        raise RuntimeError(
            "backend 'cupy' needs the cupy package, which is not installed "
            f"({error}); install it with `pip install -r requirements-gpu.txt` "
            "(cupy-cuda12x or cupy-cuda13x, matching your CUDA driver)"
        ) from error
    try:
        available = bool(cupy.cuda.is_available())
    except Exception as error:  # a broken driver install raises instead of returning False
        raise RuntimeError(f"backend 'cupy' needs a working CUDA driver; cupy reported: {error}") from error
    if not available:
        raise RuntimeError(
            "backend 'cupy' needs a CUDA GPU: cupy is installed, but cupy.cuda.is_available() is False "
            "(no NVIDIA device or no driver on this machine); use the 'numpy' backend here"
        )
    _cupy = cupy
    return cupy


def gpu_available() -> bool:
    """True when cupy is installed and sees a CUDA device (never raises)."""
    try:
        _import_cupy()
    except RuntimeError:
        return False
    return True


def cupy_module() -> ModuleType:
    """The cupy module itself (for CuPy-only tools such as ElementwiseKernel); raises where no GPU is usable."""
    return _import_cupy()


def available_backends() -> list[str]:
    """The backends that can run on this machine: always 'numpy', and 'cupy' where a GPU is usable."""
    return ["numpy", "cupy"] if gpu_available() else ["numpy"]


def set_backend(name: str) -> ModuleType:
    """Make ``name`` ('numpy' or 'cupy') the module new tensors are created with;
    returns that module."""
    global _xp
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: expected one of {BACKENDS}")
    _xp = np if name == "numpy" else _import_cupy()
    return _xp


def get_backend() -> ModuleType:
    """The array module (numpy or cupy) that new tensors are created with."""
    return _xp


def backend_name(xp: ModuleType | None = None) -> str:
    """'numpy' or 'cupy' for an array module (default: the current backend)."""
    return "cupy" if (xp or _xp) is not np else "numpy"


def is_cupy_array(a: Any) -> bool:
    return type(a).__module__.split(".")[0] == "cupy"


def xp_of(*arrays: Any) -> ModuleType:
    """The array module that ``arrays`` live in; raises if they live on different
    backends.

    Python scalars belong to neither and are ignored. No array is ever copied between
    host and device here: mixing is an error, so every transfer in a program is one the
    programmer wrote.
    """
    found = None
    for a in arrays:
        if isinstance(a, np.ndarray) or isinstance(a, np.generic):
            kind = "numpy"
        elif is_cupy_array(a):
            kind = "cupy"
        else:
            continue
        if found is None:
            found = kind
        elif found != kind:
            raise TypeError(
                "arrays on different backends were mixed in one operation: expected all "
                "on "
                f"{found}, got one on {kind}; move one explicitly, e.g. "
                "tensor.to('numpy') or tensor.to('cupy')"
            )
    if found == "cupy":
        return _import_cupy()
    return np


def to_numpy(a: Any) -> np.ndarray:
    """A host (NumPy) copy of an array from either backend, of a Tensor or a PyTorch tensor: the library's one
    host-copy helper. Object, complex and string data are refused with a clear TypeError."""
    if is_cupy_array(a):
        return a.get()
    if isinstance(a, np.ndarray) and a.dtype.kind in "biuf":
        return np.array(a, copy=True, subok=False)
    from .dtypes import as_array  # noqa: PLC0415 (dtypes imports nothing of the package)

    return as_array(a)  # a Tensor arrives through its __array__, a torch tensor through its .numpy()


def to_backend(a: Any, name: str) -> Any:
    """``a`` moved to backend ``name`` (a copy across host and device; the same array if already there)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: expected one of {BACKENDS}")
    if name == "numpy":
        return a.get() if is_cupy_array(a) else np.asarray(a)
    if _capture is not None and _capture.capturing and not is_cupy_array(a):
        raise CaptureError(
            f"a host array of shape {np.shape(a)} is copied to the GPU inside a step being captured as a CUDA "
            "graph; a graph replays device work only, so create it on the device before the step (or outside it)")
    return _import_cupy().asarray(a)


# --- matrix products, and the hook a CUDA-graph capture routes them through -----------------------------------

class CaptureError(RuntimeError):
    """Something in a step cannot be captured as a CUDA graph (see :mod:`tinygrad_birnn.cuda_graph`)."""


_capture: Any = None  # while a step is warmed up or captured: the object whose .gemm(a, b, out) runs products,
#                       with .capturing True while the stream records


def matmul(a: Any, b: Any, out: Any = None) -> Any:
    """``a @ b`` (NumPy's matmul rules), written into ``out`` when given: every matrix product of the library.

    Inside :class:`tinygrad_birnn.cuda_graph.CapturedStep` the products of CuPy arrays go through a cuBLAS
    handle of the library's own (CuPy refuses its own during a capture); elsewhere this is ``xp.matmul``.
    """
    if _capture is not None and is_cupy_array(a):
        return _capture.gemm(a, b, out)
    return xp_of(a, b).matmul(a, b, out=out)


def products_routed() -> bool:
    """True while the library's matrix products go through a CUDA-graph step's own cuBLAS handle."""
    return _capture is not None


def capturing() -> bool:
    """True while a step is being captured as a CUDA graph (recorded, not run)."""
    return _capture is not None and _capture.capturing


def scatter_add(target: Any, index: Any, values: Any) -> None:
    """``target[index] += values`` where repeated indices accumulate (NumPy's ``add.at``)."""
    if is_cupy_array(target):
        cupy = _import_cupy()
        if hasattr(cupy.add, "at"):  # CuPy 13+: cupyx.scatter_add is deprecated in its favour
            cupy.add.at(target, index, values)
        else:
            import cupyx  # noqa: PLC0415

            cupyx.scatter_add(target, index, values)
    else:
        np.add.at(target, index, values)


def synchronize() -> None:
    """Wait for the GPU to finish queued work (a no-op on NumPy); use it around
    timings."""
    if _cupy is not None:
        _cupy.cuda.get_current_stream().synchronize()



# --- random numbers ----------------------------------------------------------------------------------------------
_host_rng = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Seed the generators behind weight initialisation and dropout (host, and the GPU where in use)."""
    global _host_rng
    _host_rng = np.random.default_rng(seed)
    if _cupy is not None:
        _cupy.random.seed(seed)


def host_rng() -> np.random.Generator:
    """The NumPy generator that initial weights are drawn from, so CPU and GPU runs start alike."""
    return _host_rng


def uniform_like(a: Any) -> Any:
    """Uniform [0, 1) numbers of ``a``'s shape and dtype, drawn on ``a``'s device."""
    if is_cupy_array(a):
        return _import_cupy().random.random(a.shape, dtype=a.dtype)
    return _host_rng.random(a.shape).astype(a.dtype, copy=False)


_requested = os.environ.get(ENV_VAR, "numpy").strip().lower() or "numpy"
if _requested not in BACKENDS:
    raise ValueError(f"environment variable {ENV_VAR}={_requested!r} names an unknown backend: expected one of {BACKENDS}")
set_backend(_requested)
