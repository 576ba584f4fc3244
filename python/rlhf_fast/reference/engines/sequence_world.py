"""Twin of rust/engines/sequence_world.rs: a sequence world's proxy reward model's passes.

:func:`rlhf_fast.train_sequence_reward_model` hands each response as a row of feature
columns (its content tokens, then the length column once per content token when the length is
a feature) and the row's length; a row is read up to its length only. Each pair's step is
:func:`~rlhf_fast.reference.methods.world.reward_model.rm_pair_step`, the bag world's, on the
two rows: a response's score is the sum of its columns' weights.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..._checks import overflowed
from ..methods.world.reward_model import rm_pair_step


def train_reward_model_rows(vocab: int, first: Sequence[Sequence[int]], first_len: Sequence[int],
                            second: Sequence[Sequence[int]], second_len: Sequence[int], target: Sequence[float],
                            margin: Sequence[float], epochs: int, lr: float,
                            center_rewards_coefficient: float) -> list[float]:
    """The weights of ``vocab`` columns after ``epochs`` passes of :func:`rm_pair_step` over the
    pairs of rows (``first[i][:first_len[i]]`` against ``second[i][:second_len[i]]``), in order,
    from zero. Weights that overflow (2**512 in magnitude, or NaN) after a pass stop the
    training with a ``FloatingPointError`` naming the epoch."""
    w = [0.0] * vocab
    for epoch in range(epochs):
        for a, n_a, b, n_b, t, mu in zip(first, first_len, second, second_len, target, margin):
            rm_pair_step(w, a[:n_a], b[:n_b], t, mu, lr, center_rewards_coefficient)
        if overflowed(w):
            raise FloatingPointError(
                f"train_sequence_reward_model diverged in epoch {epoch}: weights overflowed (lr={lr!r})")
    return w
