"""Twin of rust/methods/ppo.rs: PPO's clipped surrogate, the lesson's PPO-RLHF step and its bag form.

One step on one prompt's row of logits (docs/METHODS.md section 1): sample a token from the
policy, reward it with the reward model minus ``beta`` times a KL penalty to the frozen
reference, then ``ppo_epochs`` epochs of the clipped surrogate on that one sample, with an
optional per-prompt value baseline trained on TRL's clipped value loss. :func:`bag_rlhf_step`
is the same step for a world's responses, bags of ``L`` tokens drawn i.i.d. from the policy
(docs/METHODS.md section 5); with ``L = 1`` it is :func:`rlhf_step` bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ... import _checks as checks
from ..kernels.kl import KL_ESTIMATORS, KL_PENALTIES, kl_to_log
from ..kernels.sampling import sample_index
from ..kernels.softmax import softmax_row

# PPO epochs per step: far past any use, low enough that a typo cannot stall a run for hours.
MAX_PPO_EPOCHS = 10_000


def is_clipped(advantage: float, ratio: float, eps: float) -> bool:
    """Whether ``min(ratio A, clip(ratio, 1-eps, 1+eps) A)`` is flat in the ratio here."""
    return (advantage >= 0.0 and ratio > 1.0 + eps) or (advantage < 0.0 and ratio < 1.0 - eps)


def clipped_surrogate(logits: Sequence[float], a: int, p_old_a: float, advantage: float, eps: float) -> float:
    """PPO's objective for one sampled token: ``min(r A, clip(r, 1-eps, 1+eps) A)``, ``r = pi(a) / pi_old(a)``."""
    ratio = softmax_row(logits)[a] / p_old_a
    clipped_ratio = min(max(ratio, 1.0 - eps), 1.0 + eps)
    return min(ratio * advantage, clipped_ratio * advantage)


def clipped_surrogate_grad(
    logits: Sequence[float], a: int, p_old_a: float, advantage: float, eps: float
) -> list[float]:
    """Gradient of :func:`clipped_surrogate` in the logits: ``A r (1[j = a] - p_j)``, or 0 where clipped."""
    p = softmax_row(logits)
    ratio = p[a] / p_old_a
    if is_clipped(advantage, ratio, eps):
        return [0.0] * len(logits)
    scale = advantage * ratio
    return [scale * ((1.0 if j == a else 0.0) - p[j]) for j in range(len(logits))]


@dataclass(frozen=True, slots=True)
class PpoParams:
    """The hyper-parameters of a PPO-RLHF step (TRL's names where the lesson has none).

    ``eps`` is the clip range, ``kl_penalty`` one of ``KL_PENALTIES``; ``vf_coef > 0`` turns
    the value baseline on, whose loss ``cliprange_value`` clips.
    """

    eps: float
    lr: float
    ppo_epochs: int
    kl_penalty: str
    vf_coef: float
    cliprange_value: float

    @classmethod
    def new(
        cls, eps: float, lr: float, ppo_epochs: int, kl_penalty: str, vf_coef: float, cliprange_value: float
    ) -> PpoParams:
        """The parameters, checked: ``eps > 0``, ``lr > 0``, ``1 <= ppo_epochs <= MAX_PPO_EPOCHS``,
        ``kl_penalty`` one of ``KL_PENALTIES``, ``vf_coef >= 0``, ``cliprange_value > 0``."""
        return cls(
            checks.positive("eps", eps),
            checks.positive("lr", lr),
            checks.count("ppo_epochs", ppo_epochs, 1, MAX_PPO_EPOCHS),
            checks.option("kl_penalty", kl_penalty, KL_PENALTIES),
            checks.non_negative("vf_coef", vf_coef),
            checks.positive("cliprange_value", cliprange_value),
        )


class StepOutcome(NamedTuple):
    """What one PPO-RLHF step did: the record ``rlhf_step`` returns, in its order."""

    token: int
    score: float
    kl: float  # the exact KL of the policy before the step to the reference: the monitor
    reward: float
    clip_frac: float
    kl_penalty: float  # the KL term that entered the reward
    value_loss: float  # TRL's clipped value loss before the step (0.0 without a baseline)


def value_update(v: float, v_old: float, ret: float, params: PpoParams) -> float:
    """One SGD step on TRL's clipped value loss ``0.5 max((v - ret)^2, (v_clipped - ret)^2)``.

    ``v`` is the value after the step's earlier epochs, ``v_old`` the one before the step;
    returns the updated value.
    """
    cliprange_value = params.cliprange_value
    v_clipped = v_old + min(max(v - v_old, -cliprange_value), cliprange_value)
    d_unclipped = v - ret
    d_clipped = v_clipped - ret
    loss_unclipped = d_unclipped * d_unclipped
    loss_clipped = d_clipped * d_clipped
    if loss_unclipped >= loss_clipped:
        grad = v - ret  # d(0.5 * (v - ret)^2) / dv
    elif -cliprange_value < v - v_old < cliprange_value:
        # the clamp is inactive: v_clipped is v up to the rounding of v_old + (v - v_old),
        # which can make the clipped loss the larger by an ulp; its slope is still 1
        grad = v_clipped - ret
    else:
        grad = 0.0  # the clamped branch is flat in v
    return v - params.lr * params.vf_coef * grad


def advantage_and_value_loss(reward: float, v_old: float, params: PpoParams) -> tuple[float, float]:
    """The step's advantage and TRL's value loss before any update (where the clipped and
    unclipped terms coincide): ``reward - v_old`` and ``0.5 (v_old - reward)^2`` with a value
    baseline (``vf_coef > 0``), else the reward itself (it is the return) and 0."""
    if params.vf_coef > 0.0:
        return reward - v_old, 0.5 * ((v_old - reward) * (v_old - reward))
    return reward, 0.0


def rlhf_step(
    logits: list[float],
    ref_log_probs: Sequence[float],
    weights: Sequence[float],
    u: float,
    beta: float,
    params: PpoParams,
    value: float,
) -> tuple[StepOutcome, float]:
    """One PPO-RLHF step on one prompt's ``logits``; mutates them, returns ``(outcome, value)``.

    ``ref_log_probs`` is the frozen reference's log-softmax for the prompt (in log space the
    KL stays finite for logits of 1e4), ``weights[a]`` the reward model's score of token
    ``a`` and ``u`` the ``rng.random()`` draw that picks the token. ``reward = score - beta *
    penalty``, the penalty being the exact ``KL(pi_theta || pi_ref)`` or an estimate on the
    sampled token (``params.kl_penalty``). Each epoch recomputes the ratio
    ``pi(a) / pi_old(a)``; an epoch whose ratio is outside the clip region on the side the
    advantage pushes to is clipped and changes nothing. With ``params.vf_coef == 0`` the
    reward is the advantage (no baseline) and ``value`` comes back as it went in; otherwise
    ``advantage = reward - value`` and every epoch also takes one step of the value loss
    (:func:`value_update`), which returns the prompt's new value.
    """
    eps = params.eps
    lr = params.lr
    ppo_epochs = params.ppo_epochs
    p_old = softmax_row(logits)
    a = sample_index(p_old, u)
    kl_t = kl_to_log(p_old, ref_log_probs)  # the monitor: always the exact KL
    score = weights[a]
    if params.kl_penalty == "full":
        penalty = kl_t
    else:  # Schulman's estimator on the sampled token, log p_old(a) from the softmax value
        penalty = KL_ESTIMATORS[params.kl_penalty](math.log(p_old[a]), ref_log_probs[a])
    reward = score - beta * penalty  # the KL enters the reward only
    baseline = params.vf_coef > 0.0
    v_old = float(value)
    advantage, value_loss = advantage_and_value_loss(reward, v_old, params)
    if baseline:
        value = v_old
    clipped = 0
    for _ in range(ppo_epochs):
        p = softmax_row(logits)
        ratio = p[a] / p_old[a]
        if is_clipped(advantage, ratio, eps):
            clipped += 1  # the clipped surrogate is flat here: no gradient, no update
        else:
            step = lr * advantage * ratio
            for j in range(len(logits)):
                logits[j] += step * ((1.0 if j == a else 0.0) - p[j])
        if baseline:
            value = value_update(value, v_old, reward, params)
    outcome = StepOutcome(a, score, kl_t, reward, clipped / ppo_epochs, penalty, value_loss)
    return outcome, value


class BagOutcome(NamedTuple):
    """What one PPO-RLHF step on a bag of ``L`` tokens did (Rust's ``BagOutcome`` and the tokens)."""

    tokens: tuple[int, ...]
    score: float
    kl: float  # L * KL(p_old || pi_ref): the exact KL of the response before the step
    reward: float
    clip_frac: float
    kl_penalty: float  # the KL term that entered the reward
    value_loss: float


def _log(v: float) -> float:
    """libm ``log``: ``-inf`` at 0 where Python's ``math.log`` raises."""
    return math.log(v) if v > 0.0 else -math.inf


def _ratio(p: float, p_old: float) -> float:
    """IEEE's ``p / p_old``, where Python raises at 0: a token the draw fell through to at the
    end of a row whose last probability underflowed (its ratio is NaN, and the step diverges)."""
    if p_old == 0.0:
        return math.nan if p == 0.0 else math.inf
    return p / p_old


def bag_rlhf_step(
    logits: list[float],
    ref_log_probs: Sequence[float],
    weights: Sequence[float],
    uniforms: Sequence[float],
    beta: float,
    params: PpoParams,
    value: float,
) -> tuple[BagOutcome, float]:
    """One PPO-RLHF step whose response is a bag of ``L = len(uniforms)`` i.i.d. tokens; mutates
    ``logits``, returns ``(outcome, value)``.

    Token ``i`` is ``sample_index(p_old, uniforms[i])``, ``p_old = softmax(logits)``; the
    response scores ``sum_i weights[y_i]`` (from 0.0, as the lesson scores one token) and
    pays ``beta`` times the penalty: ``L * KL(p_old || pi_ref)`` exactly (``"full"``), or
    Schulman's estimator summed over the tokens (TRL sums the per-token KL over the
    response). Each epoch the ratio is ``prod_i pi(y_i) / p_old(y_i)`` and an unclipped epoch
    moves logit ``j`` by ``lr * A * ratio * (count_j - L * p_j)``, the gradient of
    ``A * ratio``. With ``L = 1`` every operation is :func:`rlhf_step`'s.
    """
    eps = params.eps
    lr = params.lr
    ppo_epochs = params.ppo_epochs
    p_old = softmax_row(logits)
    tokens = [sample_index(p_old, u) for u in uniforms]
    length = len(tokens)
    kl_t = length * kl_to_log(p_old, ref_log_probs)  # the monitor: the response's exact KL
    score = 0.0
    for a in tokens:
        score += weights[a]
    if params.kl_penalty == "full":
        penalty = kl_t
    else:  # summed from the first token's term: one token's penalty is rlhf_step's
        estimator = KL_ESTIMATORS[params.kl_penalty]
        penalty = estimator(_log(p_old[tokens[0]]), ref_log_probs[tokens[0]])
        for a in tokens[1:]:
            penalty += estimator(_log(p_old[a]), ref_log_probs[a])
    reward = score - beta * penalty  # the KL enters the reward only
    baseline = params.vf_coef > 0.0
    v_old = float(value)
    advantage, value_loss = advantage_and_value_loss(reward, v_old, params)
    if baseline:
        value = v_old
    counts = [0.0] * len(logits)
    for a in tokens:
        counts[a] += 1.0
    clipped = 0
    for _ in range(ppo_epochs):
        p = softmax_row(logits)
        ratio = 1.0
        for a in tokens:
            ratio *= _ratio(p[a], p_old[a])
        if is_clipped(advantage, ratio, eps):
            clipped += 1  # the clipped surrogate is flat here: no gradient, no update
        else:
            step = lr * advantage * ratio
            for j in range(len(logits)):
                logits[j] += step * (counts[j] - length * p[j])
        if baseline:
            value = value_update(value, v_old, reward, params)
    outcome = BagOutcome(tuple(tokens), score, kl_t, reward, clipped / ppo_epochs, penalty, value_loss)
    return outcome, value
