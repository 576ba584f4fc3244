"""Twin of rust/kernels/policy.rs: the exact statistics every method reports of a policy.

A policy is a table: one row of logits per prompt, in ``PROMPTS`` order. Rust's
``check_table`` is :func:`rlhf_fast._checks.table` here, with the other argument checks.
"""

from __future__ import annotations

from collections.abc import Sequence

from .kl import kl_to_log
from .softmax import log_softmax_row, softmax_row


def expected_score(table: Sequence[Sequence[float]], weights: Sequence[float]) -> float:
    """Exact expected RM score of the policy: ``sum_x sum_a pi(a|x) weights[a] / n_prompts``."""
    total = 0.0
    for row in table:
        p = softmax_row(row)
        per_prompt = 0.0
        for a, weight in enumerate(weights):
            per_prompt += p[a] * weight
        total += per_prompt
    return total / len(table)


def policy_kl(table: Sequence[Sequence[float]], ref: Sequence[Sequence[float]]) -> float:
    """Exact ``KL(pi_theta || pi_ref)`` averaged over the prompts, in log space."""
    total = 0.0
    for row, ref_row in zip(table, ref):
        total += kl_to_log(softmax_row(row), log_softmax_row(ref_row))
    return total / len(table)
