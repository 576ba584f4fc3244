"""Twin of rust/methods/world_stats.rs: a world's tables and the exact statistics of a policy in it.

A world's responses are bags of ``L`` tokens drawn i.i.d. from the policy's row for the
prompt, so what a run records of its policy is exact, never sampled: per prompt, the proxy
score ``L sum_a pi(a) w(a)``, the gold (``sum_a g(a) (1 - (1 - pi(a))^L)`` when a repeated
token counts once, ``L sum_a pi(a) g(a)`` when every copy counts) and the response's KL
``L KL(pi || pi_ref)``; :class:`ExactMeans` keeps their means over prompts, recomputing only
the rows a step changed. Shared by the world engines (PPO, DPO, GRPO), so that they record the
same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ..kernels.kl import kl_to_log
from ..kernels.softmax import log_softmax_row, softmax_row

MAX_PROMPTS = 1 << 16
MAX_VOCAB = 1 << 20
MAX_RESPONSE_LEN = 1 << 12


class WorldStats(NamedTuple):
    """The exact statistics of a policy in a world: one prompt's, or their means over prompts."""

    proxy_score: float  # the reward model's expected score of a response, L sum_a pi(a) w(a)
    gold_score: float  # the gold's expectation over responses
    kl: float  # L KL(pi || pi_ref), the response's KL to the reference (log space)


def _finite_table(name: str, table: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(table))
    if bad.size:
        row, col = divmod(int(bad[0]), table.shape[1])
        raise ValueError(f"{name}[{row}, {col}] must be finite, got {float(table[row, col])!r}")


class WorldTables:
    """A world's tables, checked: what every run in it shares (Rust's ``WorldTables``).

    ``ref_logits`` and ``gold_token`` are ``[n_prompts, vocab]`` rows, ``weights`` the reward
    model's weight of each token, ``count_once`` whether the gold counts a repeated token once.
    """

    def __init__(self, ref_logits, weights, gold_token, count_once: bool, response_len: int):
        self.ref_logits: list[list[float]] = ref_logits
        self.weights: list[float] = weights
        self.gold_token: list[list[float]] = gold_token
        self.count_once = count_once
        self.response_len = response_len
        self.n_prompts = len(ref_logits)
        self.vocab_size = len(weights)
        # The frozen reference never changes: its log-probabilities once per prompt.
        self.ref_log_probs = [log_softmax_row(row) for row in ref_logits]

    @classmethod
    def new(
        cls, ref_logits: np.ndarray, weights: np.ndarray, gold_token: np.ndarray, count_once: bool, response_len: int
    ) -> WorldTables:
        """Checks the tables' shapes (``ref_logits`` 1 to 2**16 prompts by 2 to 2**20 tokens,
        ``weights`` one per token, ``gold_token`` of ``ref_logits``' shape), their values
        (finite) and ``1 <= response_len <= 4096``, each error naming its argument; the arrays
        are float64 arrays of the right dimensions (:func:`rlhf_fast._checks.float_array`)."""
        n_prompts, vocab_size = ref_logits.shape
        if not 1 <= n_prompts <= MAX_PROMPTS:
            raise ValueError(f"ref_logits must have 1 to {MAX_PROMPTS} rows (one per prompt), got {n_prompts}")
        if not 2 <= vocab_size <= MAX_VOCAB:
            raise ValueError(f"ref_logits must have 2 to {MAX_VOCAB} columns (one per token), got {vocab_size}")
        _finite_table("ref_logits", ref_logits)
        if len(weights) != vocab_size:
            raise ValueError(
                f"weights must have {vocab_size} entries (one per token of ref_logits), got {len(weights)}"
            )
        bad = np.flatnonzero(~np.isfinite(weights))
        if bad.size:
            raise ValueError(f"weights[{int(bad[0])}] must be finite, got {float(weights[bad[0]])!r}")
        if gold_token.shape != ref_logits.shape:
            raise ValueError(
                f"gold_token must have the shape of ref_logits, ({n_prompts}, {vocab_size}), "
                f"got ({gold_token.shape[0]}, {gold_token.shape[1]})"
            )
        _finite_table("gold_token", gold_token)
        if response_len < 1:
            raise ValueError(f"response_len must be >= 1, got {response_len}")
        if response_len > MAX_RESPONSE_LEN:
            raise ValueError(f"response_len must be <= {MAX_RESPONSE_LEN}, got {response_len}")
        return cls(ref_logits.tolist(), weights.tolist(), gold_token.tolist(), count_once, response_len)

    def prompt_stats(self, x: int, logits: Sequence[float]) -> WorldStats:
        """Prompt ``x``'s exact statistics under the policy row ``logits``."""
        length = self.response_len
        p = softmax_row(logits)
        proxy = 0.0
        for pa, wa in zip(p, self.weights):
            proxy += pa * wa
        gold = 0.0
        if self.count_once:
            for pa, ga in zip(p, self.gold_token[x]):
                # P(a among L draws) = 1 - (1 - p)^L, without the cancellation of 1 - (1 - tiny p)
                seen = -math.expm1(length * math.log1p(-pa)) if pa < 1.0 else 1.0
                gold += seen * ga
        else:
            for pa, ga in zip(p, self.gold_token[x]):
                gold += pa * ga
            gold *= length
        return WorldStats(length * proxy, gold, length * kl_to_log(p, self.ref_log_probs[x]))


class ExactMeans:
    """The exact means over prompts of a run's policy, each prompt's statistics kept until a
    step changes its row (Rust's ``ExactMeans``)."""

    def __init__(self, world: WorldTables):
        self.prompts = range(world.n_prompts)
        self.stats: list[WorldStats | None] = [None] * world.n_prompts  # None: a step changed the row

    def changed(self, x: int) -> None:
        """A step changed prompt ``x``'s row."""
        self.stats[x] = None

    def means(self, world: WorldTables, theta: Sequence[Sequence[float]]) -> WorldStats:
        """The exact means over prompts under the policy ``theta`` (each prompt's statistics
        summed left to right, over the number of prompts), recomputing the rows changed since
        the last call."""
        proxy = gold = kl = 0.0
        for x in self.prompts:
            stats = self.stats[x]
            if stats is None:
                stats = self.stats[x] = world.prompt_stats(x, theta[x])
            proxy += stats.proxy_score
            gold += stats.gold_score
            kl += stats.kl
        n = world.n_prompts
        return WorldStats(proxy / n, gold / n, kl / n)
