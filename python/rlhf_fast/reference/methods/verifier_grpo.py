"""Twin of rust/methods/verifier_grpo.rs: GRPO on token sequences with one reward per sequence,
as TRL's ``GRPOTrainer`` computes it: group-relative advantages ``(r - mean) / (std + 1e-4)``
(unbiased std; ``r - mean`` with ``scale_rewards="none"``), and per token the clipped term
``-min(ratio A, clip(ratio, 1 - eps, 1 + eps_high) A)`` plus ``beta k3``, averaged over the
batch's completion tokens (``loss_type="dapo"``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..kernels.softmax import libm_exp

GROUP_STD_EPS = 1e-4


def group_advantages(rewards: Sequence[float], scale_by_std: bool) -> tuple[list[float], float, float]:
    """The group's advantages, its mean and unbiased std (at least two rewards)."""
    n = len(rewards)
    total = 0.0
    for r in rewards:
        total += r
    mean = total / n
    squares = 0.0
    for r in rewards:
        squares += (r - mean) * (r - mean)
    std = math.sqrt(squares / (n - 1.0))
    advantages = [(r - mean) / (std + GROUP_STD_EPS) if scale_by_std else r - mean for r in rewards]
    return advantages, mean, std


def grpo_token_term(advantage: float, logp: float, old_logp: float, ref_logp: float, epsilon: float,
                    epsilon_high: float, beta: float) -> tuple[float, float, bool]:
    """One token's ``(loss, d loss / d log pi(a), clipped)``."""
    lower, upper = 1.0 - epsilon, 1.0 + epsilon_high
    ratio = libm_exp(logp - old_logp)
    flat = (advantage >= 0.0 and ratio > upper) or (advantage < 0.0 and ratio < lower)
    log_ratio_ref = ref_logp - logp
    ratio_ref = libm_exp(log_ratio_ref)
    k3 = ratio_ref - log_ratio_ref - 1.0
    clipped_ratio = min(max(ratio, lower), upper)
    loss = -min(ratio * advantage, clipped_ratio * advantage) + beta * k3
    slope = (0.0 if flat else -advantage * ratio) + beta * (1.0 - ratio_ref)
    return loss, slope, flat
