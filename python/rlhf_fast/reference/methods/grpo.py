"""Twin of rust/methods/grpo.rs: GRPO (Shao et al. 2024) on one prompt's logits.

As docs/METHODS.md section 3 writes it: ``G`` sampled tokens per step, advantages
normalised within the group (TRL's ``scale_rewards``), the clipped surrogate (DAPO's
``epsilon_high``) and the ``k3`` KL to the reference in the loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ... import _checks as checks
from ..kernels.kl import kl_to_log
from ..kernels.sampling import sample_index
from ..kernels.softmax import softmax_row

SCALE_REWARDS = ("group", "none")
# Added to the group's std before dividing by it (TRL's 1e-4): a group whose rewards are all
# equal gets zero advantages instead of a division by zero.
GROUP_STD_EPS = 1e-4
# Bounds on the counts, far past any use: a group of 2**31 samples would take 16 GiB of draws.
MAX_NUM_GENERATIONS = 65_536
MAX_NUM_ITERATIONS = 10_000


@dataclass(frozen=True, slots=True)
class GrpoParams:
    """The hyper-parameters of a GRPO step (TRL's names); ``epsilon_high`` is resolved."""

    num_generations: int
    beta: float
    epsilon: float
    epsilon_high: float
    lr: float
    scale_rewards: str
    num_iterations: int

    @classmethod
    def new(
        cls,
        num_generations: int,
        beta: float,
        epsilon: float,
        epsilon_high: float | None,
        lr: float,
        scale_rewards: str,
        num_iterations: int,
    ) -> GrpoParams:
        """The parameters, checked: ``2 <= num_generations <= MAX_NUM_GENERATIONS``, ``beta >= 0``,
        ``epsilon > 0``, ``epsilon_high > 0`` (``None``: ``epsilon``), ``lr > 0``,
        ``1 <= num_iterations <= MAX_NUM_ITERATIONS``."""
        num_generations = checks.count("num_generations", num_generations, 2, MAX_NUM_GENERATIONS)
        beta = checks.non_negative("beta", beta)
        epsilon = checks.positive("epsilon", epsilon)
        epsilon_high = checks.optional(checks.positive)("epsilon_high", epsilon_high)
        lr = checks.positive("lr", lr)
        scale_rewards = checks.option("scale_rewards", scale_rewards, SCALE_REWARDS)
        num_iterations = checks.count("num_iterations", num_iterations, 1, MAX_NUM_ITERATIONS)
        return cls(
            num_generations,
            beta,
            epsilon,
            epsilon if epsilon_high is None else epsilon_high,
            lr,
            scale_rewards,
            num_iterations,
        )


class GrpoOutcome(NamedTuple):
    """What one GRPO step did: the group's mean reward and its std, the exact KL of the policy
    before the step, the clipped share of (sample, iteration) terms and the loss."""

    score: float
    reward_std: float
    kl: float
    clip_frac: float
    loss: float


def _log(v: float) -> float:
    """libm ``log``: ``-inf`` at 0 where Python's ``math.log`` raises."""
    return math.log(v) if v > 0.0 else -math.inf


def _exp(v: float) -> float:
    """libm ``exp``: ``inf`` on overflow where Python's ``math.exp`` raises."""
    try:
        return math.exp(v)
    except OverflowError:
        return math.inf


def grpo_update(
    logits: list[float],
    ref_log_probs: Sequence[float],
    weights: Sequence[float],
    uniforms: Sequence[float],
    params: GrpoParams,
) -> tuple[GrpoOutcome, list[int]]:
    """One GRPO step on one prompt's ``logits``; mutates them, returns the outcome and the tokens.

    ``uniforms`` are the step's ``num_generations`` draws of ``rng.random()``, in order, one
    token each from the current policy; ``weights[a]`` is the reward of token ``a`` and
    ``ref_log_probs`` the frozen reference's log-softmax for the prompt. The rewards become
    group-relative advantages ``(r - mean) / (std + 1e-4)`` (Bessel-corrected std, TRL's
    ``scale_rewards="group"``) or ``r - mean`` (``"none"``, Dr. GRPO); then
    ``num_iterations`` gradient steps on
    ``mean_i(-min(ratio_i A_i, clip(ratio_i, 1-epsilon, 1+epsilon_high) A_i) + beta * k3_i)``,
    ``k3`` being Schulman's estimate of ``KL(pi_theta || pi_ref)`` on each sampled token.
    The loss is the one at the first iteration.
    """
    G = params.num_generations
    beta = params.beta
    epsilon = params.epsilon
    epsilon_high = params.epsilon_high
    lr = params.lr
    num_iterations = params.num_iterations
    p_old = softmax_row(logits)
    tokens = [sample_index(p_old, u) for u in uniforms]
    rewards = [weights[a] for a in tokens]
    total = 0.0
    for r in rewards:
        total += r
    mean = total / G
    squares = 0.0
    for r in rewards:
        d = r - mean
        squares += d * d
    std = math.sqrt(squares / (G - 1))  # Bessel-corrected, as torch.std
    if params.scale_rewards == "group":
        advantages = [(r - mean) / (std + GROUP_STD_EPS) for r in rewards]
    else:  # "none": Dr. GRPO
        advantages = [r - mean for r in rewards]
    kl_t = kl_to_log(p_old, ref_log_probs)  # the monitor

    clipped = 0
    loss = 0.0
    for iteration in range(num_iterations):
        p = softmax_row(logits)
        grad = [0.0] * len(logits)
        loss_sum = 0.0
        for i in range(G):
            a = tokens[i]
            adv = advantages[i]
            ratio = p[a] / p_old[a]
            flat = (adv >= 0 and ratio > 1 + epsilon_high) or (adv < 0 and ratio < 1 - epsilon)
            if flat:  # min(r A, clip(r) A) is the clipped, constant branch
                clipped += 1
                coef = 0.0
            else:
                coef = -adv * ratio
            log_r = ref_log_probs[a] - _log(p[a])  # log(pi_ref(a) / pi(a))
            coef += beta * (1 - _exp(log_r))  # d(beta * k3) / d log pi(a)
            if iteration == 0:
                clipped_ratio = min(max(ratio, 1 - epsilon), 1 + epsilon_high)
                k3 = _exp(log_r) - log_r - 1
                loss_sum += -min(ratio * adv, clipped_ratio * adv) + beta * k3
            for j in range(len(logits)):
                grad[j] += coef * ((1.0 if j == a else 0.0) - p[j])
        if iteration == 0:
            loss = loss_sum / G
        for j in range(len(logits)):
            logits[j] -= lr * grad[j] / G
    return GrpoOutcome(mean, std, kl_t, clipped / (G * num_iterations), loss), tokens
