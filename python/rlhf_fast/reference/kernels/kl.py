"""Twin of rust/kernels/kl.rs: the exact KL divergence and Schulman's sampled estimators.

Schulman's estimators ("Approximating KL divergence") are for a token ``a`` drawn from the
policy: with ``log r = log q(a) - log p(a)``, ``k1 = -log r``, ``k2 = (log r)^2 / 2`` and
``k3 = (r - 1) - log r``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# Which KL enters PPO's reward (TRL's ``kl_penalty``): the exact one or an estimator.
KL_PENALTIES = ("full", "k1", "k2", "k3")


def kl_unchecked(p: Sequence[float], q: Sequence[float]) -> float:
    """Exact ``KL(p || q) = sum p_i (log p_i - log q_i)`` with ``0 log 0 = 0``."""
    total = 0.0
    for pi, qi in zip(p, q):
        if pi > 0.0:
            total += pi * (math.log(pi) - math.log(qi)) if qi > 0.0 else math.inf
    return total


def kl_to_log(p: Sequence[float], ln_q: Sequence[float]) -> float:
    """``KL(p || q)`` from ``log q``: finite even where ``q`` underflows to 0 (logits of 1e4)."""
    total = 0.0
    for pi, log_qi in zip(p, ln_q):
        if pi > 0.0:
            total += pi * (math.log(pi) - log_qi)
    return total


def kl_k1(logp: float, logq: float) -> float:
    """Unbiased, high-variance, can be negative: ``log p(a) - log q(a)``."""
    return logp - logq


def kl_k2(logp: float, logq: float) -> float:
    """Biased, low-variance, never negative: ``(log q(a) - log p(a))^2 / 2``."""
    log_ratio = logq - logp
    return 0.5 * log_ratio * log_ratio


# Past this log-ratio k3 is reported infinite (e^x overflows a double a little above 709.78).
K3_LOG_RATIO_LIMIT = 709.0


def kl_k3(logp: float, logq: float) -> float:
    """Unbiased, low-variance, never negative: ``(r - 1) - log r`` with ``r = q(a) / p(a)``."""
    log_ratio = logq - logp
    if log_ratio > K3_LOG_RATIO_LIMIT:
        return math.inf
    return math.expm1(log_ratio) - log_ratio


# Rust's ``KlPenalty::value`` for the sampled penalties (``"full"`` is the exact KL itself).
KL_ESTIMATORS = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}
