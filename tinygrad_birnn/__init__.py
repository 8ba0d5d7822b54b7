"""tinygrad_birnn: a small autograd engine on NumPy/CuPy and the recurrent networks built on it."""
from . import backend, functional, gradcheck as _gradcheck_module, nn, ops, optim, rnn, data, fast_rnn  # noqa: F401
from .backend import get_backend, gpu_available, manual_seed, set_backend, to_numpy
from .gradcheck import GradcheckError, gradcheck
from .grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .functions import concatenate, maximum, ones, stack, tensor, unstack, where, zeros
from .tensor import Tensor, as_tensor

__version__ = "0.1.0"

__all__ = [
    "Tensor", "tensor", "as_tensor", "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "concatenate", "stack", "unstack", "where", "maximum", "zeros", "ones",
    "gradcheck", "GradcheckError", "set_backend", "get_backend", "gpu_available", "manual_seed", "to_numpy",
    "backend", "functional", "nn", "ops", "optim", "rnn", "data",
]
