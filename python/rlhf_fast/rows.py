"""Batches of large-vocabulary rows: softmax, log-softmax, KL, sampling and PPO's gradient.

Every function takes a ``[rows, V]`` float64 table of logits (``V`` up to 65,536 and past it)
and treats each row as the lesson's one-row kernels do. On the Rust backend each input row is
read from memory once and each output row written once (past the caches), vectorised along
the vocabulary, rows in parallel on ``n_threads`` threads (default: every core, or
``RAYON_NUM_THREADS``), off the GIL (Ctrl-C stops it); ``RLHF_FAST_BACKEND=python`` runs the
pure-Python twin (:mod:`rlhf_fast.reference.kernels.rows`), serially. The backends agree to a
few ulps on floats (1e-12 relative, tested) and exactly on sampled tokens; the Rust results do
not depend on ``n_threads`` or the CPU.

A KL needs the reference's log-softmax, one ``exp`` per reference logit. When the reference
is fixed for a batch, compute it once, ``lq = log_softmax_rows(ref_logits)``, and pass
``lq`` with ``ref_normalized=True`` to :func:`kl_rows` and :func:`ppo_batch_step`: they then
take one ``exp`` per logit instead of two.

Arguments are numpy arrays: tables 2-D, C-contiguous, float64 and finite; per-row arguments
1-D with one entry per row. Anything else is refused with a ``TypeError`` or ``ValueError``
naming the argument (``np.ascontiguousarray(x, dtype=np.float64)`` converts). Finite inputs
whose results pass the floats (a log-softmax of a row spanning more than them, a KL, reward or
gradient scale past them) raise ``FloatingPointError`` naming what overflowed; no result holds
NaN or an infinity.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from . import _checks as check
from ._backend import BACKEND
from .reference.kernels import rows as _ref

if BACKEND == "rust":
    from . import _core

__all__ = [
    "softmax_rows",
    "log_softmax_rows",
    "kl_rows",
    "sample_rows",
    "ppo_grad_rows",
    "ppo_batch_step",
    "PpoBatchStep",
    "stream_sum",
    "stream_add",
]

_RUST = BACKEND == "rust"
# More threads than this is a mistake, not a machine (the sweeps' bound).
_MAX_THREADS = 1024


class PpoBatchStep(NamedTuple):
    """What :func:`ppo_batch_step` returns, one entry (or row) per row of logits."""

    tokens: np.ndarray  # int64: the sampled token
    kl: np.ndarray  # KL(pi || pi_ref)
    reward: np.ndarray  # weights[token] - beta * kl: the advantage
    p_token: np.ndarray  # pi(token): p_old of later PPO epochs
    grad: np.ndarray  # [rows, V]: the clipped surrogate's gradient in the logits


# ------------------------------------------------------------------------------- checks


def _describe(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return f"a {x.ndim}-D {x.dtype} array"
    return type(x).__name__


def _table(name: str, x: Any) -> np.ndarray:
    if not (isinstance(x, np.ndarray) and x.ndim == 2 and x.dtype == np.float64):
        raise TypeError(f"{name} must be a 2-D numpy float64 array, got {_describe(x)}")
    if not x.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
    if x.size == 0:
        raise ValueError(f"{name} must not be empty, got shape ({x.shape[0]}, {x.shape[1]})")
    return x if type(x) is np.ndarray else x.view(np.ndarray)  # np.matrix: rows are rows


def _same_shape(name: str, x: Any, shape: tuple[int, ...]) -> np.ndarray:
    x = _table(name, x)
    if x.shape != shape:
        raise ValueError(f"{name} must have the shape of logits {list(shape)}, got {list(x.shape)}")
    return x


def _vector(name: str, x: Any, length: int, dtype: type) -> np.ndarray:
    if not (isinstance(x, np.ndarray) and x.ndim == 1 and x.dtype == dtype):
        raise TypeError(f"{name} must be a 1-D numpy {np.dtype(dtype).name} array, got {_describe(x)}")
    if len(x) != length:
        raise ValueError(f"{name} must have {length} entries, got {len(x)}")
    return x


def _each(name: str, x: np.ndarray, what: str, ok: np.ndarray) -> None:
    bad = np.flatnonzero(~ok)
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"{name}[{i}] must be {what}, got {float(x[i])!r}")


def _draws(u: Any, rows: int) -> np.ndarray:
    u = _vector("u", u, rows, np.float64)
    with np.errstate(invalid="ignore"):
        _each("u", u, "in [0, 1)", (u >= 0.0) & (u < 1.0))
    return u


def _scalar(name: str, value: Any, what: str, ok: bool) -> float:
    if not ok:
        raise ValueError(f"{name} must be {what}, got {float(value)!r}")
    return float(value)


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def _finite_table(name: str, x: np.ndarray) -> None:
    """The first non-finite entry, named (the Rust kernels check this in their own pass)."""
    bad = np.argwhere(~np.isfinite(x))
    if len(bad):
        i, j = (int(k) for k in bad[0])
        raise ValueError(f"{name}[{i}, {j}] must be finite, got {float(x[i, j])!r}")


def _lists(x: np.ndarray) -> list:
    return x.tolist()


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def _threads(n_threads: Any) -> int | None:
    return check.optional(check.counts(1, _MAX_THREADS))("n_threads", n_threads)


def _overflowed(function: str, name: str, values: np.ndarray) -> None:
    """A ``FloatingPointError`` naming the first entry of ``values`` that is not finite (finite
    inputs whose results pass the floats; the Rust kernels' message)."""
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        where = ", ".join(str(int(k)) for k in bad[0])
        raise FloatingPointError(f"{function} overflowed: {name}[{where}] is {float(values[tuple(bad[0])])!r}")


def _first_non_finite(names: tuple[str, ...], tables: tuple[np.ndarray, ...]) -> None:
    for name, x in zip(names, tables):
        _finite_table(name, x)


def _log_probs(name: str, x: np.ndarray) -> None:
    """A reference given as log-probabilities has no positive entry (the Rust kernels check
    this in their own pass)."""
    bad = np.argwhere(x > 0.0)
    if len(bad):
        i, j = (int(k) for k in bad[0])
        raise ValueError(
            f"{name}[{i}, {j}] must be <= 0 with ref_normalized=True (a log-softmax, such as "
            f"log_softmax_rows(ref_logits)), got {float(x[i, j])!r}"
        )


def _writeable_out(out: Any, shape: tuple[int, ...], like: str, inputs: tuple[np.ndarray, ...], names: str) -> None:
    if not (isinstance(out, np.ndarray) and out.ndim == 2 and out.dtype == np.float64):
        raise TypeError(f"out must be a 2-D numpy float64 array, got {_describe(out)}")
    if out.shape != shape or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous array of the shape of {like} {list(shape)}")
    if not out.flags.writeable or any(np.may_share_memory(out, x) for x in inputs):
        raise ValueError(f"out must be writeable and share no memory with {names}")



# ------------------------------------------------------------------------------ kernels


def softmax_rows(logits: np.ndarray, *, n_threads: int | None = None) -> np.ndarray:
    """Softmax of every row: ``exp(z - max z) / sum``.

    Parameters
    ----------
    logits : numpy.ndarray
        ``[rows, V]`` float64, C-contiguous, finite (±1e4 is fine: the max is subtracted).
    n_threads : int, optional
        Worker threads, 1 to 1,024 (default: every core, or ``RAYON_NUM_THREADS``); the results do not
        depend on it. The reference backend runs serially and ignores it.

    Returns
    -------
    numpy.ndarray
        ``[rows, V]`` float64; each row sums to 1.

    Raises
    ------
    TypeError
        ``logits`` is not a 2-D float64 array.
    ValueError
        ``logits`` is empty, not C-contiguous or has a non-finite entry
        (``"logits[2, 4] must be finite, got nan"``).

    Examples
    --------
    >>> import numpy as np
    >>> from rlhf_fast.rows import softmax_rows
    >>> softmax_rows(np.log(np.array([[1.0, 3.0], [1.0, 1.0]]))).round(6).tolist()
    [[0.25, 0.75], [0.5, 0.5]]
    """
    logits = _table("logits", logits)
    n_threads = _threads(n_threads)
    if _RUST:
        return _core.rows_softmax(logits, n_threads=n_threads)
    _finite_table("logits", logits)
    return np.array(_ref.softmax_rows(_lists(logits)), dtype=np.float64)


def log_softmax_rows(logits: np.ndarray, *, n_threads: int | None = None) -> np.ndarray:
    """Log-softmax of every row: ``(z - max z) - log sum exp(z - max z)``.

    Parameters
    ----------
    logits : numpy.ndarray
        ``[rows, V]`` float64, C-contiguous, finite.
    n_threads : int, optional
        Worker threads, 1 to 1,024 (default: every core, or ``RAYON_NUM_THREADS``); the results do not
        depend on it. The reference backend runs serially and ignores it.

    Returns
    -------
    numpy.ndarray
        ``[rows, V]`` float64, every entry <= 0.

    Raises
    ------
    TypeError
        ``logits`` is not a 2-D float64 array.
    ValueError
        ``logits`` is empty, not C-contiguous or has a non-finite entry.
    FloatingPointError
        A row spans more than the floats (``max - min`` overflows): its smallest entries'
        log-probabilities are below every float (``"log_softmax_rows overflowed: result[1, 0]
        is -inf"``).

    Examples
    --------
    >>> import numpy as np
    >>> from rlhf_fast.rows import log_softmax_rows
    >>> log_softmax_rows(np.array([[0.0, 0.0], [-1e4, 1e4]])).round(6).tolist()
    [[-0.693147, -0.693147], [-20000.0, 0.0]]
    """
    logits = _table("logits", logits)
    n_threads = _threads(n_threads)
    if _RUST:
        return _core.rows_log_softmax(logits, n_threads=n_threads)
    _finite_table("logits", logits)
    out = np.array(_ref.log_softmax_rows(_lists(logits)), dtype=np.float64)
    _overflowed("log_softmax_rows", "result", out)
    return out


def kl_rows(
    logits: np.ndarray, ref_logits: np.ndarray, *, ref_normalized: bool = False, n_threads: int | None = None
) -> np.ndarray:
    """``KL(softmax(logits[i]) || softmax(ref_logits[i]))`` for every row, exactly.

    Parameters
    ----------
    logits : numpy.ndarray
        ``[rows, V]`` float64, C-contiguous, finite: the policy.
    ref_logits : numpy.ndarray
        The reference policy's logits, of the same shape; with ``ref_normalized``, its
        log-softmax instead.
    ref_normalized : bool, default False
        ``ref_logits`` is already the reference's log-softmax (every entry ``<= 0``), for
        instance ``log_softmax_rows(ref_logits)`` computed once for a batch whose reference
        is fixed: the KL is then ``sum p (log p - ref_logits)``, one ``exp`` per logit
        instead of two. Passing logits that are not a log-softmax gives a wrong KL; a
        positive entry is refused.
    n_threads : int, optional
        Worker threads, 1 to 1,024 (default: every core, or ``RAYON_NUM_THREADS``); the results do not
        depend on it. The reference backend runs serially and ignores it.

    Returns
    -------
    numpy.ndarray
        ``[rows]`` float64, >= 0 up to rounding; finite even where the reference's
        probabilities underflow (it works in log space).

    Raises
    ------
    TypeError
        An argument is not a 2-D float64 array (named).
    ValueError
        Shapes differ, an entry is not finite (``"ref_logits[0, 7] must be finite, got inf"``),
        or, with ``ref_normalized``, a reference entry is positive.
    FloatingPointError
        A KL is past the floats (the reference gives a token the policy can draw a
        log-probability of about -1e308): ``"kl_rows overflowed: result[0] is inf"``.

    Examples
    --------
    >>> import numpy as np
    >>> from rlhf_fast.rows import kl_rows, log_softmax_rows
    >>> z = np.log(np.array([[0.5, 0.5], [0.9, 0.1]]))
    >>> kl_rows(z, np.zeros((2, 2))).round(6).tolist()
    [0.0, 0.368064]
    >>> lq = log_softmax_rows(np.zeros((2, 2)))  # once per batch
    >>> kl_rows(z, lq, ref_normalized=True).round(6).tolist()
    [0.0, 0.368064]
    """
    logits = _table("logits", logits)
    ref_logits = _same_shape("ref_logits", ref_logits, logits.shape)
    ref_normalized = _flag("ref_normalized", ref_normalized)
    n_threads = _threads(n_threads)
    if _RUST:
        return _core.rows_kl(logits, ref_logits, ref_normalized=ref_normalized, n_threads=n_threads)
    _finite_table("logits", logits)
    _finite_table("ref_logits", ref_logits)
    if ref_normalized:
        _log_probs("ref_logits", ref_logits)
    kls = np.array(_ref.kl_rows(_lists(logits), _lists(ref_logits), ref_normalized), dtype=np.float64)
    _overflowed("kl_rows", "result", kls)
    return kls


def sample_rows(logits: np.ndarray, u: np.ndarray, *, n_threads: int | None = None) -> np.ndarray:
    """One token per row by inverse CDF: the first index whose running sum of ``softmax(row)``
    exceeds ``u[i]``, the last index if rounding leaves none (the lesson's ``sample``).

    Parameters
    ----------
    logits : numpy.ndarray
        ``[rows, V]`` float64, C-contiguous, finite.
    u : numpy.ndarray
        ``[rows]`` float64 draws in ``[0, 1)``, e.g. ``rng.random()`` each.
    n_threads : int, optional
        Worker threads, 1 to 1,024 (default: every core, or ``RAYON_NUM_THREADS``); the results do not
        depend on it. The reference backend runs serially and ignores it.

    Returns
    -------
    numpy.ndarray
        ``[rows]`` int64 tokens, the same on both backends for every draw.

    Raises
    ------
    TypeError
        ``logits`` or ``u`` is not an array of the right kind.
    ValueError
        ``u`` has the wrong length or an entry outside ``[0, 1)``; a logit is not finite.

    Examples
    --------
    >>> import numpy as np
    >>> from rlhf_fast.rows import sample_rows
    >>> z = np.log(np.array([[0.25, 0.5, 0.25], [0.25, 0.5, 0.25]]))
    >>> sample_rows(z, np.array([0.2, 0.8])).tolist()
    [0, 2]
    """
    logits = _table("logits", logits)
    u = _draws(u, logits.shape[0])
    n_threads = _threads(n_threads)
    if _RUST:
        return _core.rows_sample(logits, u, n_threads=n_threads)
    _finite_table("logits", logits)
    return np.array(_ref.sample_rows(_lists(logits), u.tolist()), dtype=np.int64)


def ppo_grad_rows(
    logits: np.ndarray,
    tokens: np.ndarray,
    p_old: np.ndarray,
    advantages: np.ndarray,
    eps: float = 0.2,
    *,
    n_threads: int | None = None,
) -> np.ndarray:
    """Gradient in the logits of PPO's clipped surrogate for one sampled token per row.

    For row ``i`` with token ``a``, ``r = softmax(logits[i])[a] / p_old[i]`` and advantage
    ``A``: the surrogate ``min(r A, clip(r, 1 - eps, 1 + eps) A)`` has gradient
    ``A r (1[j = a] - p_j)``, or 0 where the clip is flat (``A >= 0`` and ``r > 1 + eps``,
    or ``A < 0`` and ``r < 1 - eps``) — ``clipped_surrogate_grad`` of the lesson, row by row.

    Parameters
    ----------
    logits : numpy.ndarray
        ``[rows, V]`` float64, C-contiguous, finite: the current policy.
    tokens : numpy.ndarray
        ``[rows]`` int64, each in ``[0, V)``.
    p_old : numpy.ndarray
        ``[rows]`` float64 in ``(0, 1]``: each token's probability when it was sampled.
    advantages : numpy.ndarray
        ``[rows]`` float64, finite.
    eps : float, default 0.2
        The clip range, > 0.
    n_threads : int, optional
        Worker threads, 1 to 1,024 (default: every core, or ``RAYON_NUM_THREADS``); the results do not
        depend on it. The reference backend runs serially and ignores it.

    Returns
    -------
    numpy.ndarray
        ``[rows, V]`` float64 gradient (ascent direction of the surrogate).

    Raises
    ------
    TypeError
        An array argument is not of the right kind, or ``eps`` is not a real number.
    ValueError
        A length, a token, a probability, an advantage, ``eps`` or a logit is out of range.
    FloatingPointError
        An unclipped row's scale ``advantages[i] * ratio`` is past the floats (a ``p_old``
        near the smallest float), named.

    Examples
    --------
    >>> import numpy as np
    >>> from rlhf_fast.rows import ppo_grad_rows
    >>> z = np.zeros((2, 2))
    >>> g = ppo_grad_rows(z, np.array([0, 1]), np.array([0.5, 0.1]), np.array([1.0, 1.0]))
    >>> g.tolist()  # row 1: ratio 5 > 1.2 with A > 0, clipped
    [[0.5, -0.5], [0.0, 0.0]]
    """
    logits = _table("logits", logits)
    rows, v = logits.shape
    tokens = _vector("tokens", tokens, rows, np.int64)
    _each("tokens", tokens, f"in [0, {v})", (tokens >= 0) & (tokens < v))
    p_old = _vector("p_old", p_old, rows, np.float64)
    with np.errstate(invalid="ignore"):
        _each("p_old", p_old, "in (0, 1]", (p_old > 0.0) & (p_old <= 1.0))
    advantages = _vector("advantages", advantages, rows, np.float64)
    _each("advantages", advantages, "finite", np.isfinite(advantages))
    eps = _real("eps", eps)
    eps = _scalar("eps", eps, "finite and > 0", np.isfinite(eps) and eps > 0.0)
    n_threads = _threads(n_threads)
    if _RUST:
        return _core.rows_ppo_grad(logits, tokens, p_old, advantages, eps, n_threads=n_threads)
    _finite_table("logits", logits)
    table = _lists(logits)
    for i, (z, a, po, adv) in enumerate(zip(table, tokens.tolist(), p_old.tolist(), advantages.tolist())):
        ratio = _ref.softmax_row(z)[a] / po
        scale = adv * ratio
        clipped = (adv >= 0.0 and ratio > 1.0 + eps) or (adv < 0.0 and ratio < 1.0 - eps)
        if not math.isfinite(scale) and not clipped:
            raise FloatingPointError(
                f"ppo_grad_rows overflowed: row {i}'s gradient is scaled by advantages[{i}] * ratio = {scale!r}"
            )
    grads = _ref.ppo_grad_rows(table, tokens.tolist(), p_old.tolist(), advantages.tolist(), eps)
    return np.array(grads, dtype=np.float64)


def ppo_batch_step(
    logits: np.ndarray,
    ref_logits: np.ndarray,
    u: np.ndarray,
    weights: np.ndarray,
    beta: float = 0.1,
    out: np.ndarray | None = None,
    *,
    ref_normalized: bool = False,
    n_threads: int | None = None,
) -> PpoBatchStep:
    """Benchmark B3's fused step on every row: softmax, a sample, KL to the reference, and
    PPO's gradient — the lesson's ``rlhf_step`` up to its first epoch, on a batch.

    Per row: ``p = softmax(z)``; the token ``a`` sampled with ``u[i]`` (as :func:`sample_rows`);
    ``kl = KL(p || softmax(z_ref))``; ``reward = weights[a] - beta * kl``, which is the
    advantage (no baseline); and the clipped surrogate's gradient at the first PPO epoch,
    where the policy is the one that sampled: the ratio is 1, the clip cannot act, and the
    gradient is ``reward * (1[j = a] - p_j)``. Later epochs are :func:`ppo_grad_rows` with
    ``p_old = p_token``. Each row is read from memory once and its gradient written once.

    Parameters
    ----------
    logits, ref_logits : numpy.ndarray
        ``[rows, V]`` float64, C-contiguous, finite: the policy and the frozen reference
        (with ``ref_normalized``, the reference's log-softmax).
    u : numpy.ndarray
        ``[rows]`` float64 draws in ``[0, 1)``.
    weights : numpy.ndarray
        ``[V]`` float64, finite: the reward model's score of each token.
    beta : float, default 0.1
        KL coefficient, finite and >= 0.
    out : numpy.ndarray, optional
        A writeable C-contiguous float64 array of the shape of ``logits`` (sharing no memory
        with the inputs) to write the gradient into, instead of a fresh one.
    ref_normalized : bool, default False
        ``ref_logits`` is already the reference's log-softmax (every entry ``<= 0``), as
        :func:`log_softmax_rows` gives it: compute that once per batch when the reference is
        fixed, and each call takes one ``exp`` per logit instead of two. Logits that are not
        a log-softmax give a wrong KL; a positive entry is refused.
    n_threads : int, optional
        Worker threads, 1 to 1,024 (default: every core, or ``RAYON_NUM_THREADS``); the results do not
        depend on it. The reference backend runs serially and ignores it.

    Returns
    -------
    PpoBatchStep
        ``(tokens, kl, reward, p_token, grad)``: ``[rows]`` arrays and the ``[rows, V]`` gradient.

    Raises
    ------
    TypeError
        An argument is not of the right kind (named).
    ValueError
        Shapes or lengths differ, or a draw, weight, ``beta`` or logit is out of range.
    FloatingPointError
        A KL, or a reward ``weights[a] - beta * kl``, is past the floats (named:
        ``"ppo_batch_step overflowed: reward[3] is -inf"``).

    Examples
    --------
    >>> import numpy as np
    >>> from rlhf_fast.rows import log_softmax_rows, ppo_batch_step
    >>> z = np.log(np.array([[0.25, 0.5, 0.25]]))
    >>> step = ppo_batch_step(z, z.copy(), np.array([0.6]), np.array([0.0, 2.0, 0.0]))
    >>> int(step.tokens[0]), float(step.kl[0]), float(step.reward[0]), float(step.p_token[0])
    (1, 0.0, 2.0, 0.5)
    >>> step.grad.tolist()
    [[-0.5, 1.0, -0.5]]
    >>> lq = log_softmax_rows(z)  # the reference's log-softmax, once per batch
    >>> again = ppo_batch_step(z, lq, np.array([0.6]), np.array([0.0, 2.0, 0.0]), ref_normalized=True)
    >>> int(again.tokens[0]), abs(float(again.kl[0])) < 1e-15
    (1, True)
    """
    logits = _table("logits", logits)
    ref_logits = _same_shape("ref_logits", ref_logits, logits.shape)
    rows, v = logits.shape
    u = _draws(u, rows)
    weights = _vector("weights", weights, v, np.float64)
    _each("weights", weights, "finite", np.isfinite(weights))
    beta = _real("beta", beta)
    beta = _scalar("beta", beta, "finite and >= 0", np.isfinite(beta) and beta >= 0.0)
    if out is not None:
        _writeable_out(out, logits.shape, "logits", (logits, ref_logits), "logits or ref_logits")
    ref_normalized = _flag("ref_normalized", ref_normalized)
    n_threads = _threads(n_threads)
    if _RUST:
        return PpoBatchStep(
            *_core.rows_ppo_batch_step(
                logits, ref_logits, u, weights, beta, out, ref_normalized=ref_normalized, n_threads=n_threads
            )
        )
    _finite_table("logits", logits)
    _finite_table("ref_logits", ref_logits)
    if ref_normalized:
        _log_probs("ref_logits", ref_logits)
    tokens, kl, reward, p_token, grad = _ref.ppo_batch_step(
        _lists(logits), _lists(ref_logits), u.tolist(), weights.tolist(), beta, ref_normalized
    )
    _overflowed("ppo_batch_step", "kl", np.array(kl, dtype=np.float64))
    _overflowed("ppo_batch_step", "reward", np.array(reward, dtype=np.float64))
    if out is None:
        out = np.array(grad, dtype=np.float64).reshape(logits.shape)
    else:
        out[...] = grad
    return PpoBatchStep(
        np.array(tokens, dtype=np.int64),
        np.array(kl, dtype=np.float64),
        np.array(reward, dtype=np.float64),
        np.array(p_token, dtype=np.float64),
        out,
    )


def stream_sum(a: np.ndarray, b: np.ndarray, *, n_threads: int | None = None) -> float:
    """``a.sum() + b.sum()`` as fast as memory delivers the bytes: how fast this machine reads
    what the row kernels read (benchmark B3 prints it beside :func:`stream_add`).

    Parameters
    ----------
    a, b : numpy.ndarray
        2-D, C-contiguous float64 tables (any shapes), finite.
    n_threads : int, optional
        Worker threads, 1 to 1,024 (default: every core, or ``RAYON_NUM_THREADS``). The reference
        backend runs serially and ignores it.

    Returns
    -------
    float
        The sum (its order of additions differs between backends; only its time matters).

    Raises
    ------
    TypeError
        An argument is not a 2-D float64 array.
    ValueError
        An argument is empty or not C-contiguous, or has a non-finite entry (named, found once
        the sum is not finite).
    FloatingPointError
        The sum of finite entries is past the floats.

    Examples
    --------
    >>> import numpy as np
    >>> from rlhf_fast.rows import stream_sum
    >>> stream_sum(np.ones((2, 3)), np.full((1, 2), 0.5))
    7.0
    """
    a = _table("a", a)
    b = _table("b", b)
    n_threads = _threads(n_threads)
    total = _core.rows_stream_sum(a, b, n_threads=n_threads) if _RUST else _ref.stream_sum(_lists(a), _lists(b))
    if not math.isfinite(total):
        _first_non_finite(("a", "b"), (a, b))
        raise FloatingPointError(f"stream_sum overflowed: the sum is {total!r}")
    return total


def stream_add(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None, *, n_threads: int | None = None) -> np.ndarray:
    """``out = a + b`` as fast as memory moves the bytes: two tables read, one written, the
    traffic of :func:`ppo_batch_step` with ``out=`` — benchmark B3's memory ceiling.

    The Rust backend writes ``out`` as the row kernels write their outputs (non-temporal
    stores where 64-byte aligned: the lines go to memory without being read first), in
    parallel; only its time matters.

    Parameters
    ----------
    a, b : numpy.ndarray
        2-D, C-contiguous float64 tables of one shape, finite.
    out : numpy.ndarray, optional
        A writeable C-contiguous float64 array of that shape, sharing no memory with ``a``
        or ``b`` (default: a fresh one).
    n_threads : int, optional
        Worker threads, 1 to 1,024 (default: every core, or ``RAYON_NUM_THREADS``). The reference
        backend runs serially and ignores it.

    Returns
    -------
    numpy.ndarray
        ``out``.

    Raises
    ------
    TypeError
        An argument is not a 2-D float64 array.
    ValueError
        An argument is empty or not C-contiguous, shapes differ, ``out`` shares memory with an
        input, or an input has a non-finite entry (named; the Rust backend notes whether every
        sum is finite as it writes them, and only then looks for the entry).
    FloatingPointError
        A sum of finite entries is past the floats (``out`` then holds it).

    Examples
    --------
    >>> import numpy as np
    >>> from rlhf_fast.rows import stream_add
    >>> stream_add(np.ones((2, 3)), np.full((2, 3), 0.5)).tolist()
    [[1.5, 1.5, 1.5], [1.5, 1.5, 1.5]]
    """
    a = _table("a", a)
    b = _table("b", b)
    if b.shape != a.shape:
        raise ValueError(f"b must have the shape of a {list(a.shape)}, got {list(b.shape)}")
    if out is None:
        out = np.empty_like(a)
    else:
        _writeable_out(out, a.shape, "a", (a, b), "a or b")
    n_threads = _threads(n_threads)
    if _RUST:
        finite = _core.rows_stream_add(a, b, out, n_threads=n_threads)
    else:
        out[...] = _ref.stream_add(_lists(a), _lists(b))
        finite = bool(np.isfinite(out).all())
    if not finite:
        _first_non_finite(("a", "b"), (a, b))
        _overflowed("stream_add", "out", out)
    return out
