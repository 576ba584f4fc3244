"""Twin of rust/engines/world.rs: whole computations over a world (:mod:`rlhf_fast.worlds`).

The proxy reward model's passes over labelled pairs (:func:`train_reward_model`), a policy's
exact expectations per prompt (:func:`world_expectations`: ``World.kl``,
``World.expected_gold``, ``World.expected_score``) and the frontier of KL-regularised optima
``pi*_beta ∝ pi_ref exp(r / beta)`` over beta (:func:`world_frontier`: ``Frontier.of``).

The proxy score and the gold under a policy are :meth:`.world_ppo.WorldTables.prompt_stats`'s,
the one place they are computed. The KL is taken in log space, ``sum_a pi(a) (log pi(a) - log
pi_ref(a))`` with ``log pi`` the policy's log-softmax, and held at 0 from below: the reference's own KL
is exactly 0 (its log-probabilities are the same floats), where ``prompt_stats``' KL, from
``log`` of the probabilities, can be a rounding error of either sign. A ``"count_once"`` gold
is the sum of ``gold_token + repeat_penalty`` over the distinct tokens less
``repeat_penalty * response_len``: its tables carry that sum's values.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..._checks import overflowed
from ..kernels.softmax import log_softmax_row, softmax_row
from ..methods.world.reward_model import rm_pair_step
from .world_ppo import WorldStats, WorldTables


def train_reward_model(vocab: int, first: Sequence[Sequence[int]], second: Sequence[Sequence[int]],
                       target: Sequence[float], margin: Sequence[float], epochs: int, lr: float,
                       center_rewards_coefficient: float) -> list[float]:
    """The weights of ``vocab`` tokens after ``epochs`` passes of :func:`rm_pair_step` over the
    pairs, in order, from zero. Weights that overflow (2**512 in magnitude, or NaN) after a
    pass stop the training with a ``FloatingPointError`` naming the epoch."""
    w = [0.0] * vocab
    for epoch in range(epochs):
        for a, b, t, mu in zip(first, second, target, margin):
            rm_pair_step(w, a, b, t, mu, lr, center_rewards_coefficient)
        if overflowed(w):
            raise FloatingPointError(f"train_reward_model diverged in epoch {epoch}: weights overflowed (lr={lr!r})")
    return w


def _tables(ref_logits, gold_token, count_once: bool, repeat_penalty: float, response_len: int,
            weights: Sequence[float] | None) -> WorldTables:
    """The world's tables with the reward model ``weights`` (zeros when None): the
    ``count_once`` gold's table is ``gold_token + repeat_penalty``."""
    vocab = len(ref_logits[0])
    gold_seen = [[g + repeat_penalty for g in row] for row in gold_token]
    return WorldTables(ref_logits, list(weights) if weights is not None else [0.0] * vocab, gold_seen, count_once,
                       response_len)


def kl_from_log_probs(p: Sequence[float], log_p: Sequence[float], ref_log_probs: Sequence[float]) -> float:
    """``max(sum_a p(a) (log_p(a) - ref_log_probs(a)), 0)`` from the policy's probabilities
    ``p`` and log-probabilities ``log_p``; a token of probability 0 adds nothing."""
    total = 0.0
    for pa, lp, lq in zip(p, log_p, ref_log_probs):
        if pa > 0.0:
            total += pa * (lp - lq)
    return max(total, 0.0)


def _stats(world: WorldTables, repeat_penalty: float, x: int, logits: Sequence[float]) -> WorldStats:
    """Prompt ``x``'s exact statistics under the policy row ``logits``."""
    stats = world.prompt_stats(x, logits)
    gold = stats.gold_score - repeat_penalty * world.response_len if world.count_once else stats.gold_score
    kl = world.response_len * kl_from_log_probs(softmax_row(logits), log_softmax_row(logits), world.ref_log_probs[x])
    return WorldStats(stats.proxy_score, gold, kl)


def world_expectations(ref_logits, gold_token, count_once: bool, repeat_penalty: float, response_len: int,
                       logits, weights: Sequence[float] | None = None) -> tuple[list[float], list[float], list[float]]:
    """``(kl, proxy, gold)``, one entry per prompt: the exact expectations of the policy
    ``logits`` (rows of finite logits), the proxy under the reward model ``weights`` (0 without)."""
    world = _tables(ref_logits, gold_token, count_once, repeat_penalty, response_len, weights)
    kl, proxy, gold = [], [], []
    for x, row in enumerate(logits):
        stats = _stats(world, repeat_penalty, x, row)
        kl.append(stats.kl)
        proxy.append(stats.proxy_score)
        gold.append(stats.gold_score)
    return kl, proxy, gold


def world_frontier(ref_logits, gold_token, count_once: bool, repeat_penalty: float, response_len: int, reward,
                   betas: Sequence[float], weights: Sequence[float] | None = None
                   ) -> tuple[list[float], list[float], list[float]]:
    """``(kl, proxy, gold)``, one entry per beta: the means over prompts under
    ``pi ∝ pi_ref exp(r / beta)``, ``r`` a row of ``reward`` (one row for every prompt, or one
    per prompt). The tilt is taken from each row's maximum, ``(r - max r) / beta <= 0``; where
    it passes the floats (a tiny beta), its ``-inf`` is held at ``-1e300``, a probability of 0."""
    world = _tables(ref_logits, gold_token, count_once, repeat_penalty, response_len, weights)
    tilt = [[r - max(row) for r in row] for row in reward]
    kl, proxy, gold = [], [], []
    n = world.n_prompts
    for beta in betas:
        total_kl = total_proxy = total_gold = 0.0
        for x in range(n):
            r = tilt[0] if len(tilt) == 1 else tilt[x]
            logits = [ref + max(ra / beta, -1e300) for ref, ra in zip(world.ref_logits[x], r)]
            stats = _stats(world, repeat_penalty, x, logits)
            total_kl += stats.kl
            total_proxy += stats.proxy_score
            total_gold += stats.gold_score
        kl.append(total_kl / n)
        proxy.append(total_proxy / n)
        gold.append(total_gold / n)
    return kl, proxy, gold
