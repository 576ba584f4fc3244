"""Twin of rust/methods/world/scores.rs: the score of a bag of tokens (a world's gold, an AI
judge's score, a reward model's)."""

from __future__ import annotations

from collections.abc import Sequence


def bag_score(
    values: Sequence[Sequence[float]],
    prompts: Sequence[int],
    responses: Sequence[Sequence[int]],
    count_once: bool,
    offset: float,
) -> list[float]:
    """For each response the sum of ``values[prompts[i]][token] + offset`` over its tokens,
    left to right, or over its distinct tokens in increasing order when ``count_once``. The
    gold of ``gold="count_once"`` is that with ``offset = repeat_penalty``, less
    ``repeat_penalty * response_len``; a reward model, which ignores the prompt, is one row."""
    scores = []
    for x, response in zip(prompts, responses):
        row = values[x]
        tokens = sorted(set(response)) if count_once else response
        total = 0.0
        for a in tokens:
            total += row[a] + offset
        scores.append(total)
    return scores
