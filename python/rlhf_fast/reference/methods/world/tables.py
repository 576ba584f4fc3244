"""Twin of rust/methods/world/tables.rs: a world's tables from its draws, and a judge's values.

``rlhf_fast.World`` draws, from NumPy's PCG64 stream of its seed, a ``[n_prompts, vocab]``
table of uniforms (each prompt's order of the tokens), ``vocab`` shared normals ``v`` and a
``[n_prompts, vocab]`` table of per-prompt normals ``u``. From them, token ``j`` of prompt
``x`` has the reference logit ``-zipf * log1p(order[j])``, ``order`` being the row's
uniforms' indices in increasing order (``np.argsort``; equal draws, all but impossible, in
index order), and the gold value ``v[j] + prompt_scale * u[x, j]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ...kernels.softmax import log_softmax_row

# The spread of the reference's log-probabilities below which it has no familiar tokens.
MIN_SPREAD = 1e-12


def world_tables(
    rank_uniforms: Sequence[Sequence[float]],
    shared_normals: Sequence[float],
    prompt_normals: Sequence[Sequence[float]],
    zipf: float,
    prompt_scale: float,
) -> tuple[list[list[float]], list[list[float]]]:
    """``(ref_logits, gold_token)``, lists of rows, from the world's draws."""
    ref_logits = []
    for row in rank_uniforms:
        order = sorted(range(len(row)), key=lambda j: (row[j], j))
        ref_logits.append([-zipf * math.log1p(rank) for rank in order])
    gold_token = [[v + prompt_scale * u for v, u in zip(shared_normals, row)] for row in prompt_normals]
    return ref_logits, gold_token


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """The mean and the standard deviation (over ``n``, NumPy's ``std``), summed left to right."""
    n = len(values)
    total = 0.0
    for v in values:
        total += v
    mean = total / n
    squares = 0.0
    for v in values:
        centred = v - mean
        squares += centred * centred
    return mean, math.sqrt(squares / n)


def judge_token_values(
    gold_token: Sequence[Sequence[float]],
    ref_logits: Sequence[Sequence[float]],
    noise: Sequence[Sequence[float]],
    rho: float,
    bias: float,
) -> list[list[float]]:
    """An AI judge's token values: ``rho`` times the gold's, plus ``sqrt(1 - rho^2)`` times
    ``noise`` (standard normals) at the gold's spread, plus ``bias`` times the reference's
    log-probabilities standardised to the gold's spread (a judge that favours familiar text;
    none when their spread is at most ``MIN_SPREAD``)."""
    familiar = [log_softmax_row(row) for row in ref_logits]
    _, gold_std = mean_and_std([g for row in gold_token for g in row])
    familiar_mean, familiar_std = mean_and_std([f for row in familiar for f in row])
    noise_weight = math.sqrt(1.0 - rho * rho)
    values = []
    for gold_row, noise_row, familiar_row in zip(gold_token, noise, familiar):
        row = []
        for g, z, f in zip(gold_row, noise_row, familiar_row):
            # A reference with no spread (uniform everywhere) has no familiar tokens: its
            # log-probabilities differ by rounding alone, which standardising would blow up.
            standardised = (f - familiar_mean) / familiar_std * gold_std if familiar_std > MIN_SPREAD else 0.0
            row.append(rho * g + noise_weight * (z * gold_std) + bias * standardised)
        values.append(row)
    return values
