"""Twin of rust/methods/reward_checks.rs: reward models no method should optimise against."""

from __future__ import annotations

from collections.abc import Sequence


def check_not_length_only(weights: Sequence[float]) -> None:
    """The lesson's "Ship It" refusal: a reward model that cannot tell one word from another.

    ``weights`` are the reward model's weights of ``VOCAB``'s words, in its order. If every
    word weighs the same (an all-zero or empty ``w`` included), every one-token response
    gets the same reward: the score depends on the response's length alone, and optimising
    a policy against it is pointless (PPO's and GRPO's advantages are all equal or zero,
    Best-of-N keeps the first sample). Refused by the training loops and Best-of-N; the
    single-step functions take any ``w`` (they are drop-in).
    """
    first = weights[0]
    if all(weight == first for weight in weights):
        raise ValueError(
            f"w scores responses by length alone: every word of VOCAB weighs {first!r}, so every "
            "one-token response gets the same reward and there is nothing to optimise "
            "(train the reward model first)"
        )
