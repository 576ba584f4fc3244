"""Twin of rust/methods/bradley_terry/mod.rs: the Bradley-Terry reward model.

A linear score over a bag of tokens, ``R(y) = sum w[tok] * count`` (the prompt is not a
feature), trained by SGD on ``-log sigmoid(R(y+) - R(y-))``. Weights and bags are dicts
(token -> weight, token -> count); a bag iterates in first-seen order, the order the Rust
bags keep, so sums round alike. The tokenised preference set is in :mod:`.preferences`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ...kernels.logistic import sigmoid, softplus
from ...lesson import VOCAB

if TYPE_CHECKING:
    from .preferences import PreferenceSet


def bag(tokens: Sequence[str]) -> dict[str, int]:
    """Token counts of a response's tokens, in first-seen order."""
    counts: dict[str, int] = {}
    for tok in tokens:
        counts[tok] = counts.get(tok, 0) + 1
    return counts


def dot(w: Mapping[str, float], b: Mapping[str, int]) -> float:
    """``sum(w[tok] * cnt)`` over the bag, tokens missing from ``w`` weighing 0."""
    total = 0.0
    for tok, cnt in b.items():
        total += w.get(tok, 0.0) * cnt
    return total


def rm_update(w: dict[str, float], chosen: Mapping[str, int], rejected: Mapping[str, int], lr: float) -> float:
    """One SGD step on ``-log sigmoid(R(y+) - R(y-))``; mutates ``w``, returns the margin before it.

    The training loops never read the loss, so this step leaves it to :func:`rm_train_step`.
    """
    margin = dot(w, chosen) - dot(w, rejected)
    grad = sigmoid(-margin)  # 1 - sigmoid(margin), without the cancellation
    for tok, cnt in chosen.items():
        w[tok] = w.get(tok, 0.0) + lr * grad * cnt
    for tok, cnt in rejected.items():
        w[tok] = w.get(tok, 0.0) - lr * grad * cnt
    return margin


def rm_train_step(w: dict[str, float], chosen: Mapping[str, int], rejected: Mapping[str, int], lr: float) -> float:
    """:func:`rm_update`, returning the loss before the step: ``softplus(-margin)``."""
    return softplus(-rm_update(w, chosen, rejected, lr))


def pairwise_accuracy(w: Mapping[str, float], pairs: PreferenceSet) -> float:
    """Share of the (non-empty) pairs the reward model orders strictly right: ``R(y+) > R(y-)``."""
    right = 0
    for b_pos, b_neg in pairs.bags:
        if dot(w, b_pos) > dot(w, b_neg):
            right += 1
    return right / len(pairs.bags)


def vocab_weights(w: Mapping[str, float]) -> list[float]:
    """``w`` as the kernels read it: the weight of each word of ``VOCAB``, in order (0 if absent).

    GRPO and Best-of-N reward token ``a`` with ``vocab_weights(w)[a]``.
    """
    return [float(w.get(tok, 0.0)) for tok in VOCAB]


def one_token_scores(w: Mapping[str, float]) -> list[float]:
    """``R(y) = dot(w, bag(y))`` of each one-token response ``y = [VOCAB[a]]``: PPO's reward of ``a``.

    The same numbers as :func:`vocab_weights` except that ``dot``'s sum starts from 0.0: a
    weight of -0.0 scores 0.0, as the lesson's PPO step has always scored it.
    """
    return [dot(w, {tok: 1}) for tok in VOCAB]
