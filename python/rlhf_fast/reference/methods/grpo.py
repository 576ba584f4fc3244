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


# Most tokens a world GRPO step samples, num_generations * response_len: the group's draws and
# tokens stay small beside a row of the vocabulary.
MAX_GROUP_TOKENS = 1 << 20


def check_group_tokens(num_generations: int, response_len: int) -> int:
    """``num_generations * response_len``, or the ``ValueError`` naming both past ``MAX_GROUP_TOKENS``."""
    n = num_generations * response_len
    if n > MAX_GROUP_TOKENS:
        raise ValueError(
            f"num_generations * response_len must be <= {MAX_GROUP_TOKENS} (the tokens of a group), "
            f"got {num_generations} * {response_len}"
        )
    return n


def _ratio(p: float, p_old: float) -> float:
    """IEEE's ``p / p_old``, where Python raises at 0: a token the draw fell through to at the
    end of a row whose last probability underflowed (its ratio is NaN, and the step diverges)."""
    if p_old == 0.0:
        return math.nan if p == 0.0 else math.inf
    return p / p_old


def bag_grpo_update(
    logits: list[float],
    ref_log_probs: Sequence[float],
    weights: Sequence[float],
    uniforms: Sequence[float],
    params: GrpoParams,
) -> tuple[GrpoOutcome, list[int]]:
    """One GRPO step on one prompt's ``logits`` whose responses are bags of tokens; mutates
    them, returns the outcome and the tokens (response after response).

    The ``G = num_generations`` responses are bags of ``L = len(uniforms) // G`` tokens drawn
    i.i.d. from ``p_old = softmax(logits)``, response ``i`` from ``uniforms[i L:(i + 1) L]``; a
    response's reward is ``sum_t weights[y_t]`` (from 0.0) and its advantage
    :func:`grpo_update`'s. TRL's per-token loss: each token of each response has its own
    ratio ``pi(y) / p_old(y)``, clipped term and ``beta * k3``, averaged over the group's
    ``G L`` tokens (TRL's default ``loss_type="dapo"``, and ``"grpo"``, when every response
    is ``L`` long). The gradient in logit ``j``, ``sum c (1[j = y] - p_j) / (G L)`` over the
    terms, is summed as ``(c_j - C p_j) / (G L)``: ``c_j`` the coefficients of the terms
    sampling ``j``, ``C`` all of them. The record's ``kl`` is the response's exact ``L
    KL(p_old || pi_ref)``, ``clip_frac`` the clipped share of (token, iteration) terms. With
    ``L = 1`` this is :func:`grpo_update` (the same tokens; floats within rounding).
    """
    G = params.num_generations
    L = len(uniforms) // G
    n_terms = len(uniforms)
    beta = params.beta
    epsilon = params.epsilon
    epsilon_high = params.epsilon_high
    lr = params.lr
    num_iterations = params.num_iterations
    p_old = softmax_row(logits)
    tokens = [sample_index(p_old, u) for u in uniforms]
    rewards = []
    for i in range(G):
        r = 0.0
        for a in tokens[i * L:(i + 1) * L]:
            r += weights[a]
        rewards.append(r)
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
    kl_t = L * kl_to_log(p_old, ref_log_probs)  # the monitor: the response's exact KL

    V = len(logits)
    clipped = 0
    loss = 0.0
    for iteration in range(num_iterations):
        p = softmax_row(logits)
        coef_of = [0.0] * V
        coef_total = 0.0
        loss_sum = 0.0
        for i in range(G):
            adv = advantages[i]
            for a in tokens[i * L:(i + 1) * L]:
                ratio = _ratio(p[a], p_old[a])
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
                coef_of[a] += coef
                coef_total += coef
        if iteration == 0:
            loss = loss_sum / n_terms
        for j in range(V):
            logits[j] -= lr * (coef_of[j] - coef_total * p[j]) / n_terms
    return GrpoOutcome(mean, std, kl_t, clipped / (n_terms * num_iterations), loss), tokens
