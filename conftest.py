"""Settings for every pytest run of this repository (unit tests and notebooks alike).

The chapters' arrays are small: on a 2-core machine several BLAS threads cost far more in synchronisation
than they give (a small BiRNN training loop ran about 17x slower with them), so the notebook kernels, which
inherit this environment, use one thread unless the caller asked for something else.
"""
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
