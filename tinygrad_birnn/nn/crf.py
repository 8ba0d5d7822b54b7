"""``CRF``: a linear-chain conditional random field on top of per-step emission scores.

The interface is that of the ``pytorch-crf`` package (``torchcrf.CRF``), so code moves between the two: the
same constructor, parameter names (and so state-dict keys), ``forward`` returning the log-likelihood with the
same reductions, and ``decode`` returning lists of tags. The computation lives in :mod:`tinygrad_birnn.crf`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import crf as chain
from ..backend import xp_of
from ..grad_mode import no_grad
from ..tensor import Tensor
from .modules import Module, uniform_parameter

REDUCTIONS = ("none", "sum", "mean", "token_mean")


class CRF(Module):
    """Conditional random field (Lafferty, McCallum & Pereira 2001) over ``num_tags`` tags.

    Args:
        num_tags: the number of tags K.
        batch_first: when True, emissions are (B, T, K) and tags and masks (B, T); else (T, B, K) and (T, B).

    Attributes:
        start_transitions: (K,) score of starting in each tag.
        end_transitions: (K,) score of ending in each tag.
        transitions: (K, K) score ``transitions[i, j]`` of tag j following tag i.
        All three start from U(-0.1, 0.1), as in pytorch-crf.

    Shapes:
        emissions (T, B, K) floating; tags (T, B) integers in [0, K); mask (T, B) booleans or 0/1, on from
        the first step to each sequence's last (optional; all on when left out).

    Example:
        >>> crf = CRF(3)
        >>> emissions = Tensor(np.zeros((4, 2, 3), dtype=np.float32), requires_grad=True)
        >>> tags = np.array([[0, 1], [2, 0], [1, 1], [0, 2]])
        >>> crf(emissions, tags).backward()
        >>> [len(path) for path in crf.decode(emissions)]
        [4, 4]
    """

    def __init__(self, num_tags: int, batch_first: bool = False, dtype: Any = np.float32):
        if not isinstance(num_tags, (int, np.integer)) or num_tags <= 0:
            raise ValueError(f"invalid number of tags: {num_tags!r} (expected a positive integer)")
        super().__init__()
        self.num_tags, self.batch_first = int(num_tags), bool(batch_first)
        self.start_transitions = uniform_parameter((self.num_tags,), 0.1, dtype)
        self.end_transitions = uniform_parameter((self.num_tags,), 0.1, dtype)
        self.transitions = uniform_parameter((self.num_tags, self.num_tags), 0.1, dtype)

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}"

    def forward(
        self, emissions: Tensor, tags: Any, mask: Any = None, reduction: str = "sum"
    ) -> Tensor:
        """The log-likelihood log P(tags | emissions): (B,) with ``reduction='none'``,
        else a scalar: summed ('sum'), averaged over the sequences ('mean') or over
        the unmasked steps ('token_mean')."""
        if reduction not in REDUCTIONS:
            raise ValueError(
                f"invalid reduction: {reduction!r} " f"(expected one of {REDUCTIONS})"
            )
        emissions, tags, mask = self._validate(emissions, tags, mask)
        params = (self.start_transitions, self.end_transitions, self.transitions)
        numerator = chain.sequence_score(emissions, tags, *params, mask=mask)
        llh = numerator - chain.log_partition(emissions, *params, mask=mask)
        if reduction == "none":
            return llh
        if reduction == "sum":
            return llh.sum()
        if reduction == "mean":
            return llh.mean()
        return llh.sum() / float(mask.sum())

    def decode(self, emissions: Tensor, mask: Any = None) -> list:
        """The most likely tagging of each sequence (Viterbi): a list of B lists of ints."""
        emissions, _, mask = self._validate(emissions, None, mask)
        with no_grad():
            return chain.viterbi_decode(emissions.data, self.start_transitions.data, self.end_transitions.data,
                                        self.transitions.data, mask)

    def _validate(self, emissions: Any, tags: Any, mask: Any) -> tuple:
        """Emissions, tags and mask checked and turned time-major: (T, B, K), (T, B) integers, (T, B) bool."""
        if not isinstance(emissions, Tensor):
            raise TypeError(f"emissions must be a Tensor; got {type(emissions).__name__}")
        if emissions.ndim != 3:
            raise ValueError(f"emissions must have 3 dimensions ({'B, T' if self.batch_first else 'T, B'}, "
                             f"num_tags); got shape {emissions.shape}")
        if emissions.shape[2] != self.num_tags:
            raise ValueError(f"expected the last dimension of emissions to be num_tags={self.num_tags}; "
                             f"got shape {emissions.shape}")
        if not np.issubdtype(emissions.dtype, np.floating):
            raise TypeError(f"emissions must be floating point; got dtype {emissions.dtype}")
        xp = xp_of(emissions.data)
        steps, batch = emissions.shape[:2]
        if self.batch_first:
            emissions = emissions.transpose(1, 0, 2)
            steps, batch = batch, steps
        if steps == 0:
            raise ValueError(f"emissions must have at least one time step; got shape {emissions.shape}")
        if tags is not None:
            tags = self._check_tags(tags, xp)
        if mask is not None:
            mask = mask.data if isinstance(mask, Tensor) else mask
            mask = mask if hasattr(mask, "dtype") else np.asarray(mask)
            mask = mask.T if self.batch_first else mask
        mask = chain.check_mask(mask, steps, batch, xp)
        if tags is not None and tuple(tags.shape) != (steps, batch):
            raise ValueError(f"the first two dimensions of emissions and tags must match; got emissions "
                             f"{emissions.shape[:2]} and tags {tuple(tags.shape)} (time-major)")
        return emissions, tags, mask

    def _check_tags(self, tags: Any, xp: Any) -> Any:
        y = tags.data if isinstance(tags, Tensor) else tags
        if not hasattr(y, "dtype"):
            y = np.asarray(y)
        if not np.issubdtype(y.dtype, np.integer):
            raise TypeError(f"tags must be integers; got dtype {y.dtype}")
        if y.ndim != 2:
            raise ValueError(f"tags must have 2 dimensions; got shape {tuple(y.shape)}")
        if isinstance(y, np.ndarray) and y.size and (y.min() < 0 or y.max() >= self.num_tags):
            raise ValueError(f"tags must lie in [0, {self.num_tags}); got values from {y.min()} to {y.max()}")
        if isinstance(y, np.ndarray) and xp is not np:
            y = xp.asarray(y)
        return y.T if self.batch_first else y
