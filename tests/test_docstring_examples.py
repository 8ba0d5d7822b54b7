"""The examples in the library's docstrings run and print what they say (doctest)."""
from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest

import tinygrad_birnn as tg

MODULES = ["tinygrad_birnn.tensor", "tinygrad_birnn.nn.modules", "tinygrad_birnn.nn.recurrent",
           "tinygrad_birnn.datasets.pronunciations", "tinygrad_birnn.optim"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    names = {"np": np, "tg": tg, "Tensor": tg.Tensor, "nn": tg.nn}  # what the examples may take as imported
    result = doctest.testmod(module, extraglobs=names, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"
