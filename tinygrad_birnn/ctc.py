"""Connectionist temporal classification (Graves et al., 2006): the loss, its gradient, and two decoders.

A network emits, at each of T input steps, a distribution over C classes, one of them the *blank*. A path
(one class per step) reads as a label sequence after merging repeated classes and then dropping blanks:
``a a - b b - b`` reads ``a b b``. CTC's likelihood of a target sequence l is the sum of the probabilities
of all paths that read l, computed by a forward-backward recursion over the *extended* target
l' = (blank, l_1, blank, l_2, ..., l_S, blank) of length 2S+1:

- forward: alpha_t(s) = y_t(l'_s) * (alpha_{t-1}(s) + alpha_{t-1}(s-1) + [skip] alpha_{t-1}(s-2)), where the
  skip is allowed when l'_s is not blank and differs from l'_{s-2};
- backward: beta_t(s) = sum over the successors s' in {s, s+1, s+2 (skip)} of y_{t+1}(l'_{s'}) beta_{t+1}(s')
  (here beta excludes y_t, so alpha_t(s) beta_t(s) is the mass of the paths through (t, s));
- loss: -log p(l | x) = -log(alpha_{T-1}(2S) + alpha_{T-1}(2S-1));
- gradient: d loss / d log y_t(k) = -sum_{s: l'_s = k} alpha_t(s) beta_t(s) / p(l | x).

Everything runs in log space, vectorised over the batch and the extended targets; only time is a Python
loop. The arrays may be NumPy or CuPy (the module follows the data).

:func:`ctc_loss` has the signature and the values of ``torch.nn.functional.ctc_loss``. One difference, on
purpose: its gradient is the true derivative with respect to ``log_probs``. PyTorch returns
``exp(log_probs) - occupation``, the gradient with respect to the logits *behind* a log-softmax; the two agree
once the gradient has passed through ``log_softmax``, which is how CTC is always used.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import backend
from .backend import xp_of
from .ops import PRIMITIVES, defprim
from .tensor import Tensor, apply

REDUCTIONS = ("none", "sum", "mean")


# --- the forward-backward recursion on arrays --------------------------------------------------------------------


def _logsumexp3(a: Any, b: Any, c: Any, xp: Any) -> Any:
    """log(exp a + exp b + exp c), elementwise; -inf where all three are -inf (log 0: call it under
    ``np.errstate(divide="ignore")``)."""
    m = xp.maximum(xp.maximum(a, b), c)
    m = xp.maximum(m, np.finfo(m.dtype).min)  # a finite shift, also where all three are -inf
    return xp.log(xp.exp(a - m) + xp.exp(b - m) + xp.exp(c - m)) + m


def extended_targets(targets: np.ndarray, target_lengths: np.ndarray, blank: int) -> tuple:
    """The extended targets l' (N, 2S+1), blanks between and around the labels, and the additive skip mask.

    ``skip[n, s]`` is 0 where the transition s-2 -> s is allowed (l'_s is a label different from l'_{s-2})
    and -inf elsewhere, so that adding it to alpha_{t-1}(s-2) switches the transition off.
    """
    n, s_max = targets.shape
    ext = np.full((n, 2 * s_max + 1), blank, dtype=np.int64)
    labels = np.arange(s_max)[None, :] < target_lengths[:, None]
    ext[:, 1::2] = np.where(labels, targets, blank)
    skip = np.full(ext.shape, -np.inf)
    if s_max > 1:
        allowed = (ext[:, 2:] != blank) & (ext[:, 2:] != ext[:, :-2])
        skip[:, 2:] = np.where(allowed, 0.0, -np.inf)
    return ext, skip


def _emissions(log_probs: Any, ext: Any) -> Any:
    """log y_t(l'_s) for every t, n, s: shape (T, N, 2S+1)."""
    xp = xp_of(log_probs)
    rows = xp.arange(log_probs.shape[1])[:, None]
    return log_probs[:, rows, ext]


def ctc_alpha(emit: Any, skip: Any, ext_lengths: Any) -> Any:
    """log alpha_t(s) for all t, n, s: shape (T, N, 2S+1); a Python loop over t only."""
    xp = xp_of(emit)
    steps, n, width = emit.shape
    # two -inf columns on the left, so that s-1 and s-2 exist for every s
    alpha = xp.full((steps, n, width + 2), -np.inf, dtype=emit.dtype)
    start = xp.full((n, width), -np.inf, dtype=emit.dtype)
    start[:, 0] = 0.0  # a path starts in the first blank ...
    if width > 1:  # ... or in the first label, if there is one
        start[:, 1] = xp.where(ext_lengths > 1, 0.0, -np.inf)
    if steps:
        alpha[0, :, 2:] = emit[0] + start
    with np.errstate(divide="ignore"):  # log 0 = -inf: no path reaches (t, s)
        for t in range(1, steps):
            a = alpha[t - 1]  # stay at s, come from s-1, or skip from s-2 where allowed
            came = _logsumexp3(a[:, 2:], a[:, 1:-1], a[:, :-2] + skip, xp)
            alpha[t, :, 2:] = came + emit[t]
    return alpha[:, :, 2:]


def ctc_beta(emit: Any, skip: Any, input_lengths: Any, ext_lengths: Any) -> Any:
    """log beta_t(s) (beta excluding y_t), shape (T, N, 2S+1).

    Sequence n ends at step input_lengths[n] - 1, where beta is 1 at its last two
    extended positions; beta is 0 (log: -inf) at every later step.
    """
    xp = xp_of(emit)
    steps, n, width = emit.shape
    s = xp.arange(width)[None, :]
    last_two = (s == ext_lengths[:, None] - 1) | (s == ext_lengths[:, None] - 2)
    end = xp.where(last_two, 0.0, -np.inf).astype(emit.dtype)
    # beta_t(s) reads s, s+1 and s+2 at t+1; the skip into s+2 is allowed by skip[s+2]
    skip_ahead = xp.full((n, width + 2), -np.inf, dtype=emit.dtype)
    skip_ahead[:, :width] = skip
    skip_ahead = skip_ahead[:, 2:]
    beta = xp.full((steps, n, width), -np.inf, dtype=emit.dtype)
    # y_{t+1} beta_{t+1}, with two -inf columns on the right
    ahead = xp.full((n, width + 2), -np.inf, dtype=emit.dtype)
    last = (input_lengths - 1)[:, None]
    with np.errstate(divide="ignore"):  # log 0 = -inf: no path goes on from (t, s)
        for t in range(steps - 1, -1, -1):
            if t < steps - 1:
                b = ahead
                went = _logsumexp3(b[:, :width], b[:, 1:-1], b[:, 2:] + skip_ahead, xp)
                beta[t] = xp.where(t < last, went, -np.inf)
            beta[t] = xp.where(t == last, end, beta[t])
            ahead[:, :width] = beta[t] + emit[t]
    return beta


def ctc_forward(log_probs: Any, ext: Any, skip: Any, input_lengths: Any,
                target_lengths: Any, zero_infinity: bool = False) -> tuple:
    """The forward: the (N,) losses -log p(l | x), and (emissions, alpha) kept."""
    xp = xp_of(log_probs)
    steps, n = log_probs.shape[:2]
    ext_lengths = 2 * target_lengths + 1
    emit = _emissions(log_probs, ext)
    alpha = ctc_alpha(emit, skip, ext_lengths)
    nll = xp.full((n,), np.inf, dtype=log_probs.dtype)
    has_steps = input_lengths > 0
    if steps and n:
        rows = xp.arange(n)
        final = alpha[xp.maximum(input_lengths - 1, 0), rows]  # (N, 2S+1)
        a_end = final[rows, ext_lengths - 1]
        before = final[rows, xp.maximum(ext_lengths - 2, 0)]
        a_before = xp.where(ext_lengths > 1, before, -np.inf)
        m = xp.maximum(a_end, a_before)
        m = xp.where(m == -np.inf, 0, m)
        with np.errstate(divide="ignore"):
            log_p = xp.log(xp.exp(a_end - m) + xp.exp(a_before - m)) + m
        nll = xp.where(has_steps, -log_p, nll)
    nll = xp.where(~has_steps & (target_lengths == 0), 0.0, nll)  # 0 steps read ""
    if zero_infinity:  # then alpha * beta is 0 everywhere, and so is the gradient
        nll = xp.where(xp.isinf(nll), 0.0, nll)
    return nll.astype(log_probs.dtype), (emit, alpha)


def ctc_vjp(
    g: Any,
    ans: Any,
    log_probs: Any,
    res: tuple,
    ext: Any,
    skip: Any,
    input_lengths: Any,
    target_lengths: Any,
    zero_infinity: bool = False,
) -> tuple:
    """d nll / d log y_t(k) = -sum over s with l'_s = k of alpha_t(s) beta_t(s) / p."""
    xp = xp_of(log_probs)
    emit, alpha = res
    beta = ctc_beta(emit, skip, input_lengths, 2 * target_lengths + 1)
    with np.errstate(invalid="ignore"):  # nan where the loss is inf: no path at all
        occupation = xp.exp(alpha + beta + ans[None, :, None])  # (T, N, 2S+1)
    steps, n, classes = log_probs.shape
    one_hot = ext[:, :, None] == xp.arange(classes)[None, None, :]  # (N, 2S+1, C)
    per_class = backend.matmul(
        occupation.transpose(1, 0, 2), one_hot.astype(log_probs.dtype)
    ).transpose(1, 0, 2)
    inside = (xp.arange(steps)[:, None] < input_lengths[None, :])[:, :, None]
    grad = xp.where(inside, -per_class, 0.0).astype(log_probs.dtype)
    return (grad * g[None, :, None],)


defprim(
    "ctc_loss",
    ctc_forward,
    ctc_vjp,
    "d nll / d log y_t(k) = -sum_{s: l'_s = k} alpha_t(s) beta_t(s) / p(l|x) (forward-backward in log space)",
    has_residuals=True,
)


# --- the loss, as torch.nn.functional.ctc_loss -------------------------------------------------------------------


def _host_integers(value: Any, what: str) -> np.ndarray:
    """A host integer array from a Tensor, an array, a sequence or a number; raises for other dtypes."""
    if isinstance(value, Tensor):
        value = value.data
    array = backend.to_numpy(value) if backend.is_cupy_array(value) else np.asarray(value)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"ctc_loss: {what} must hold integers; got dtype {array.dtype}")
    return array.astype(np.int64)


def _check_lengths(lengths: np.ndarray, n: int, upper: int | None, what: str, bound: str) -> np.ndarray:
    if lengths.shape != (n,):
        raise ValueError(f"ctc_loss: {what} must have shape ({n},), one length per sequence; got shape "
                         f"{lengths.shape}")
    if n and lengths.min() < 0:
        raise ValueError(f"ctc_loss: {what} must be >= 0; got {lengths.tolist()}")
    if upper is not None and n and lengths.max() > upper:
        raise ValueError(f"ctc_loss: {what} must be at most {bound} = {upper}; got {lengths.tolist()}")
    return lengths


def _padded_targets(targets: np.ndarray, target_lengths: np.ndarray, n: int) -> np.ndarray:
    """Targets as a padded (N, S) array, from (N, S) or from the 1-D concatenation of all targets."""
    if targets.ndim == 2:
        if targets.shape[0] != n:
            raise ValueError(f"ctc_loss: padded targets must have shape (N={n}, S); got {targets.shape}")
        _check_lengths(target_lengths, n, targets.shape[1], "target_lengths", "the targets' width S")
        return targets
    if targets.ndim != 1:
        raise ValueError(f"ctc_loss: targets must be (N, S) padded or 1-D concatenated; got shape {targets.shape}")
    _check_lengths(target_lengths, n, None, "target_lengths", "")
    if int(target_lengths.sum()) != targets.shape[0]:
        raise ValueError(f"ctc_loss: 1-D targets must hold sum(target_lengths) = {int(target_lengths.sum())} "
                         f"labels; got {targets.shape[0]}")
    padded = np.zeros((n, int(target_lengths.max()) if n else 0), dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(target_lengths)[:-1]]).astype(np.int64)
    for i, (start, length) in enumerate(zip(starts, target_lengths)):
        padded[i, :length] = targets[start:start + length]
    return padded


def _checked_batch(log_probs: Tensor, targets: Any, input_lengths: Any, target_lengths: Any, blank: int,
                   unbatched: bool) -> tuple:
    """(log_probs as (T, N, C), padded (N, S) targets, lengths) after checking them; raises for bad input."""
    targets = _host_integers(targets, "targets")
    input_lengths = _host_integers(input_lengths, "input_lengths")
    target_lengths = _host_integers(target_lengths, "target_lengths")
    if unbatched:
        if targets.ndim != 1 or input_lengths.ndim or target_lengths.ndim:
            raise ValueError("ctc_loss: unbatched (T, C) log_probs take 1-D targets and two numbers as lengths; "
                             f"got targets {targets.shape}, lengths {input_lengths.shape} and {target_lengths.shape}")
        log_probs = log_probs.reshape(log_probs.shape[0], 1, log_probs.shape[1])
        targets, input_lengths, target_lengths = targets[None], input_lengths[None], target_lengths[None]
    steps, n, classes = log_probs.shape
    if steps * n * classes == 0:
        raise ValueError(f"ctc_loss: log_probs must not be empty (as in PyTorch); got shape {log_probs.shape}")
    if not 0 <= blank < classes:
        raise ValueError(f"ctc_loss: blank must be a class index in [0, C={classes}); got {blank}")
    _check_lengths(input_lengths, n, steps, "input_lengths", "the input's length T")
    padded = _padded_targets(targets, target_lengths, n)
    labels = padded[np.arange(padded.shape[1])[None, :] < target_lengths[:, None]]
    if labels.size and (labels.min() < 0 or labels.max() >= classes or (labels == blank).any()):
        raise ValueError(f"ctc_loss: target labels must lie in [0, C={classes}) and differ from blank={blank}; "
                         f"got values from {labels.min()} to {labels.max()}"
                         + (" including the blank" if (labels == blank).any() else ""))
    return log_probs, padded, input_lengths, target_lengths


def ctc_loss(log_probs: Tensor, targets: Any, input_lengths: Any, target_lengths: Any, blank: int = 0,
             reduction: str = "mean", zero_infinity: bool = False) -> Tensor:
    """The CTC loss -log p(target | input), as ``torch.nn.functional.ctc_loss``.

    Args:
        log_probs: (T, N, C) log-probabilities (the output of ``log_softmax`` over C), or (T, C) unbatched.
        targets: (N, S) labels padded to a common width S, or 1-D, all targets concatenated; the labels lie in
            [0, C) and are never ``blank``. Unbatched: (S,).
        input_lengths: (N,) integers <= T: the steps of each input sequence (a number when unbatched).
        target_lengths: (N,) integers: the labels of each target (a number when unbatched); 0 is allowed.
        blank: the class index of the blank.
        reduction: 'none' (the (N,) losses), 'sum', or 'mean' (each loss divided by its target length, at
            least 1, then the mean over the batch; as PyTorch).
        zero_infinity: replace infinite losses (no path fits: the input is too short) and their gradients by 0.

    Returns:
        the (N,) losses for 'none', else a 0-d tensor.

    >>> import numpy as np
    >>> from tinygrad_birnn import Tensor, functional as F
    >>> # T=3, N=1, C=2 (blank and 'a'); 6 of the 8 paths read 'a', so the loss is -log(6/8)
    >>> log_probs = F.log_softmax(Tensor(np.zeros((3, 1, 2))), axis=-1)
    >>> round(float(ctc_loss(log_probs, [[1]], [3], [1], reduction="sum").item()), 6)
    0.287682
    """
    if not isinstance(log_probs, Tensor):
        log_probs = Tensor(log_probs)
    if reduction not in REDUCTIONS:
        raise ValueError(f"ctc_loss: reduction must be one of {REDUCTIONS}; got {reduction!r}")
    if not np.issubdtype(log_probs.dtype, np.floating):
        raise TypeError(f"ctc_loss: log_probs must be floating point; got dtype {log_probs.dtype}")
    unbatched = log_probs.ndim == 2
    if log_probs.ndim not in (2, 3):
        raise ValueError(f"ctc_loss: log_probs must be (T, N, C) or unbatched (T, C); got shape {log_probs.shape}")
    log_probs, padded, input_lengths, target_lengths = _checked_batch(
        log_probs, targets, input_lengths, target_lengths, blank, unbatched)
    ext, skip = extended_targets(padded, target_lengths, blank)
    xp = xp_of(log_probs.data)
    on_device = (lambda a: backend.to_backend(a, "cupy")) if xp is not np else (lambda a: a)
    loss = apply(PRIMITIVES["ctc_loss"], log_probs, ext=on_device(ext), skip=on_device(skip.astype(log_probs.dtype)),
                 input_lengths=on_device(input_lengths), target_lengths=on_device(target_lengths),
                 zero_infinity=bool(zero_infinity))
    if unbatched:
        loss = loss.reshape(())
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    divisor = on_device(np.maximum(target_lengths, 1).astype(log_probs.dtype))
    return (loss / (divisor[0] if unbatched else divisor)).mean()


# --- decoding -----------------------------------------------------------------------------------------------------


def _host_log_probs(log_probs: Any, input_lengths: Any) -> tuple:
    array = log_probs.data if isinstance(log_probs, Tensor) else log_probs
    array = backend.to_numpy(array) if backend.is_cupy_array(array) else np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"CTC decoding needs log_probs of shape (T, N, C); got shape {array.shape}")
    steps, n = array.shape[:2]
    lengths = np.full(n, steps) if input_lengths is None else _host_integers(input_lengths, "input_lengths")
    return array, _check_lengths(lengths, n, steps, "input_lengths", "the input's length T")


def collapse(path: Sequence[int], blank: int = 0) -> list:
    """The labels a path reads: repeated classes merged, then blanks dropped ([1, 1, 0, 1, 2, 2] -> [1, 1, 2])."""
    out, previous = [], None
    for k in path:
        k = int(k)
        if k != previous and k != blank:
            out.append(k)
        previous = k
    return out


def greedy_decode(log_probs: Any, input_lengths: Any = None, blank: int = 0) -> list:
    """Best-path decoding: the most probable class at each step, collapsed; one label list per sequence.

    The best path is not the most probable label sequence (that sums over paths; see :func:`beam_search_decode`),
    but is often close to it when the network is confident.
    """
    array, lengths = _host_log_probs(log_probs, input_lengths)
    best = array.argmax(axis=-1)  # (T, N)
    return [collapse(best[:length, i], blank) for i, length in enumerate(lengths)]


def _add_log(a: float, b: float) -> float:
    if a == -np.inf:
        return b
    if b == -np.inf:
        return a
    return max(a, b) + float(np.log1p(np.exp(-abs(a - b))))


def prefix_beam_search(log_probs: np.ndarray, beam_width: int = 8, blank: int = 0,
                       candidates: int | None = None) -> list:
    """Prefix beam search over one sequence's (T, C) log-probabilities; the beams as (labels, log p), best first.

    Each prefix keeps two numbers: the log-probability of the paths so far that read it and end in a blank,
    and of those that end in its last label. A new label equal to the last one extends the prefix only after a
    blank (else it merges). Only the ``beam_width`` best prefixes survive each step; ``candidates`` limits
    the labels tried at each step to the most probable ones (all when None). With ``beam_width`` large enough,
    it returns the exact most probable label sequence.
    """
    if beam_width < 1:
        raise ValueError(f"beam_width must be a positive integer; got {beam_width}")
    steps, classes = log_probs.shape
    beams = {(): (0.0, -np.inf)}  # prefix -> (log p ending in blank, log p ending in its last label)
    for t in range(steps):
        row = log_probs[t]
        tried = range(classes) if candidates is None else np.argsort(row)[::-1][:candidates]
        grown: dict = {}
        for prefix, (p_blank, p_label) in beams.items():
            total = _add_log(p_blank, p_label)
            b, lab = grown.get(prefix, (-np.inf, -np.inf))
            grown[prefix] = (_add_log(b, total + float(row[blank])), lab)
            for k in tried:
                k = int(k)
                if k == blank:
                    continue
                p = float(row[k])
                if prefix and prefix[-1] == k:
                    b, lab = grown[prefix]
                    grown[prefix] = (b, _add_log(lab, p_label + p))  # the repeat merges into the prefix
                    new = p_blank + p  # a blank in between: a second k
                else:
                    new = total + p
                longer = prefix + (k,)
                b, lab = grown.get(longer, (-np.inf, -np.inf))
                grown[longer] = (b, _add_log(lab, new))
        ranked = sorted(grown.items(), key=lambda item: _add_log(*item[1]), reverse=True)
        beams = dict(ranked[:beam_width])
    return [(list(prefix), _add_log(*scores)) for prefix, scores in beams.items()]


def beam_search_decode(log_probs: Any, input_lengths: Any = None, beam_width: int = 8, blank: int = 0,
                       candidates: int | None = None) -> list:
    """Prefix beam search (Hannun et al., 2014, without a language model): the best label list per sequence."""
    array, lengths = _host_log_probs(log_probs, input_lengths)
    return [prefix_beam_search(array[:length, i], beam_width, blank, candidates)[0][0]
            for i, length in enumerate(lengths)]
