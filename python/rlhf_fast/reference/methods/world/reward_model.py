"""Twin of rust/methods/world/reward_model.rs: one SGD step of a world's proxy reward model.

Linear in the response's token counts: Bradley-Terry with TRL's RewardTrainer's ``margin`` and
``center_rewards_coefficient``, generalised to soft labels. With ``m = R(first) - R(second)``
and target ``t``, the loss is ``-t log sigmoid(m - margin) - (1 - t) log sigmoid(-m - margin)
+ c (R(first) + R(second))^2``; for a hard label ``t = 1`` it is TRL's exactly. The passes
over the pairs are :func:`rlhf_fast.reference.engines.world.train_reward_model`'s.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...kernels.logistic import sigmoid


def score(w: Sequence[float], response: Sequence[int]) -> float:
    """``R(y) = sum_i w[y_i]``, left to right."""
    total = 0.0
    for token in response:
        total += w[token]
    return total


def rm_pair_step(w: list[float], first: Sequence[int], second: Sequence[int], target: float, margin: float,
                 lr: float, c: float) -> None:
    """One step of ``lr`` on the pair ``(first, second)`` with label ``target`` and ``margin``,
    ``c`` being ``center_rewards_coefficient``; updates ``w`` in place."""
    r_a = score(w, first)
    r_b = score(w, second)
    m = r_a - r_b
    # d loss / d m, each sigmoid taken where it does not cancel
    d_m = -target * sigmoid(-(m - margin)) + (1.0 - target) * sigmoid(m + margin)
    d_sum = 2.0 * c * (r_a + r_b)
    for token in first:
        w[token] -= lr * (d_m + d_sum)
    for token in second:
        w[token] -= lr * (d_sum - d_m)
