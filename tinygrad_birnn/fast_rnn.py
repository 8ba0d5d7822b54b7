"""Former home of the batched layer (now :mod:`tinygrad_birnn.rnn.batched`) and its kernels (now
:mod:`tinygrad_birnn.rnn.steps`); these names are kept for one release."""
from .rnn.batched import StepProduct, batched_layer, schedule_buffer, split_k  # noqa: F401
from .rnn.steps import KERNEL_PREAMBLE, KERNEL_SOURCES, SPLITS, kernel  # noqa: F401

__all__ = ["StepProduct", "batched_layer", "schedule_buffer", "split_k", "KERNEL_PREAMBLE", "KERNEL_SOURCES",
           "SPLITS", "kernel"]
