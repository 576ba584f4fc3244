"""Twin of rust/methods/world/labels.rs: who labels a world's pairs.

A human (Bradley-Terry on the gold, then a flip) or an AI judge (its own token values, a
position bias, soft labels, one order or both). Each gets the scores of both responses of
every pair and its uniform draws in the order ``World.preferences`` draws them (NumPy's
PCG64), and returns the label of each pair: the probability that the first response is
preferred (0 or 1 when the label is hard).
"""

from __future__ import annotations

from collections.abc import Sequence

from ...kernels.logistic import sigmoid


def labeller_labels(
    gold_first: Sequence[float],
    gold_second: Sequence[float],
    temperature: float,
    flip: float,
    prefer_uniforms: Sequence[float],
    flip_uniforms: Sequence[float],
) -> list[float]:
    """Hard labels: the first response is preferred when ``prefer_uniforms[i] <
    sigmoid((gold_first - gold_second) / temperature)``, the label flipped when
    ``flip_uniforms[i] < flip``. A temperature so small that the margin passes the floats
    makes the preference certain."""
    labels = []
    for a, b, u_prefer, u_flip in zip(gold_first, gold_second, prefer_uniforms, flip_uniforms):
        prefer_first = u_prefer < sigmoid((a - b) / temperature)
        flipped = u_flip < flip
        labels.append(1.0 if prefer_first != flipped else 0.0)
    return labels


def judge_labels(
    score_first: Sequence[float],
    score_second: Sequence[float],
    temperature: float,
    position_bias: float,
    soft: bool,
    both_orders: bool,
    order_uniforms: Sequence[float],
    draw_uniforms: Sequence[float],
) -> list[float]:
    """An AI judge's labels: ``P(first preferred)`` is ``position_bias + (1 - position_bias) *
    preference`` when the first is shown first, ``(1 - position_bias) * preference`` when it
    is shown second; shown first when ``order_uniforms[i] < 0.5`` (none with ``both_orders``,
    which averages the two), and the hard label is ``draw_uniforms[i] < P`` (none when
    ``soft``, which returns ``P``)."""
    pb = position_bias
    labels = []
    for i, (a, b) in enumerate(zip(score_first, score_second)):
        preference = sigmoid((a - b) / temperature)
        shown_first = pb + (1.0 - pb) * preference
        shown_second = (1.0 - pb) * preference
        if both_orders:
            p = 0.5 * (shown_first + shown_second)
        elif order_uniforms[i] < 0.5:
            p = shown_first
        else:
            p = shown_second
        if soft:
            labels.append(p)
        else:
            labels.append(1.0 if draw_uniforms[i] < p else 0.0)
    return labels
