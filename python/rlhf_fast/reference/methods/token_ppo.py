"""Twin of rust/methods/token_ppo.rs: PPO on token sequences, as TRL's PPO trainer computes it.

A response is generated token by token from a tabular policy ``theta[p][t]`` (one row of
logits per prompt and position) until EOS (token 0) or ``max_len``; the value head is one
number per state ``V[p][t]``. What one PPO step computes, read from TRL's
``trl/experimental/ppo/ppo_trainer.py`` (mirror HEAD f2cd577) and its helpers in the same
file:

- per-token KL and rewards (lines 770-779): ``logr = ref_logp - logp``, ``kl = -logr`` (k1)
  or ``(exp(logr) - 1) - logr`` (k3), ``r_t = -kl_coef * kl_t``, the score added at the last
  real token (TRL adds it one slot after EOS when the response is padded: we depart, SPEC §7);
  ``missing_eos_penalty`` subtracted from the score of a response without EOS (757-759);
- GAE (786-796): ``delta = r_t + gamma V_{t+1} - V_t``, ``A_t = delta + gamma lam A_{t+1}``,
  ``returns = A + V``, with ``V`` and ``r`` zero past the response's end;
- ``masked_whiten`` (237-270, 797): mean and unbiased variance over the batch's valid tokens,
  ``(A - mean) * rsqrt(var + 1e-8)``;
- the clipped losses (829-847): ``pg = masked_mean(max(-A r, -A clip(r, 1 +- eps)))``,
  ``vf = 0.5 masked_mean(max((V - R)^2, (clip(V, V_old +- cv) - R)^2))``, ``loss = pg +
  vf_coef vf``; the gradient of a ``max`` goes to the larger branch (both, halved, on a tie,
  which is the same thing here) and a clamp passes none outside its range;
- the minibatch statistics (852-868): ``approxkl = 0.5 mean(logratio^2)``, ``ratio.mean()`` and
  ``entropy.mean()`` over every position of the minibatch, padding included (a padded
  position's log-ratio is 0, its ratio 1, its entropy the entropy of the state's row).

Everything is plain Python over lists, summed left to right as the Rust twin sums.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ..kernels.softmax import log_softmax_row, softmax_row
from .sequence_stats import prompt_stats

KL_ESTIMATORS = ("k1", "k3")
# TRL's masked_whiten: rsqrt(var + 1e-8).
WHITEN_EPSILON = 1e-8
EOS = 0


class TokenPpoParams(NamedTuple):
    """What a token PPO step does besides ``kl_coef`` and ``lr`` (TRL's defaults)."""

    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    kl_estimator: str = "k1"
    num_ppo_epochs: int = 4
    num_mini_batches: int = 1
    missing_eos_penalty: float = 0.0
    length_normalize: bool = False
    length_penalty: float = 0.0


def per_token_kl(logp: Sequence[float], ref_logp: Sequence[float], kl_estimator: str) -> list[float]:
    """TRL's per-token KL estimate of one response: ``-logr`` (k1) or ``(exp(logr) - 1) - logr`` (k3)."""
    out = []
    for lp, rlp in zip(logp, ref_logp):
        logr = rlp - lp
        out.append(-logr if kl_estimator == "k1" else (math.exp(logr) - 1.0) - logr)
    return out


def per_token_rewards(kl: Sequence[float], score: float, kl_coef: float) -> list[float]:
    """``-kl_coef * kl_t`` at every token, ``score`` added at the last (the last real token)."""
    rewards = [-kl_coef * k for k in kl]
    rewards[-1] += score
    return rewards


def gae(rewards: Sequence[float], values: Sequence[float], gamma: float, lam: float) -> tuple[list[float], list[float]]:
    """GAE over one response (values zero past its end): ``(advantages, returns = A + V)``."""
    n = len(rewards)
    advantages = [0.0] * n
    last = 0.0
    for t in reversed(range(n)):
        next_value = values[t + 1] if t + 1 < n else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        last = delta + gamma * lam * last
        advantages[t] = last
    return advantages, [a + v for a, v in zip(advantages, values)]


def masked_whiten(values: Sequence[float]) -> list[float]:
    """TRL's ``masked_whiten`` (shift_mean) of the batch's valid entries, given flat: ``(x - mean)
    * rsqrt(var + 1e-8)`` with the unbiased variance (at least two entries)."""
    n = len(values)
    total = 0.0
    for v in values:
        total += v
    mean = total / n
    squares = 0.0
    for v in values:
        squares += (v - mean) * (v - mean)
    var = squares / n * (n / (n - 1))
    scale = 1.0 / math.sqrt(var + WHITEN_EPSILON)
    return [(v - mean) * scale for v in values]


def shaped_score(rm_score: float, n_content: int, has_eos: bool, params: TokenPpoParams) -> float:
    """The score PPO is given: the reward model's, length-normalised and length-penalised if
    asked (issue 11's remedies), less ``missing_eos_penalty`` without EOS (TRL)."""
    score = rm_score
    if params.length_normalize:
        score = score / max(n_content, 1)
    score = score - params.length_penalty * n_content
    if not has_eos:
        score = score - params.missing_eos_penalty
    return score


def clipped_policy_term(advantage: float, logp: float, old_logp: float, cliprange: float) -> tuple[float, float, bool]:
    """One token's ``max(-A r, -A clip(r))``, its derivative in ``logp`` and whether the clipped
    branch is the larger (TRL's ``pg_clipfrac``)."""
    ratio = math.exp(logp - old_logp)
    unclipped = -advantage * ratio
    clipped = -advantage * min(max(ratio, 1.0 - cliprange), 1.0 + cliprange)
    if clipped > unclipped:
        return clipped, 0.0, True
    return unclipped, unclipped, False


def clipped_value_term(value: float, old_value: float, ret: float, cliprange_value: float) -> tuple[float, float, bool]:
    """One token's ``max((V - R)^2, (clip(V, V_old +- cv) - R)^2)``, its derivative in ``V`` and
    whether the clipped branch is the larger (TRL's ``vf_clipfrac``)."""
    value_clipped = min(max(value, old_value - cliprange_value), old_value + cliprange_value)
    unclipped = (value - ret) * (value - ret)
    clipped = (value_clipped - ret) * (value_clipped - ret)
    if clipped > unclipped:
        return clipped, 0.0, True
    return unclipped, 2.0 * (value - ret), False


class Rollouts(NamedTuple):
    """A batch of responses and what the old policy made of them; per response, lists of its
    ``lengths[b]`` tokens (``tokens`` include the EOS when there is one)."""

    prompts: list[int]
    tokens: list[list[int]]
    old_logp: list[list[float]]
    old_values: list[list[float]]
    advantages: list[list[float]]  # whitened
    returns: list[list[float]]


class MinibatchOutcome(NamedTuple):
    """The losses of one minibatch, TRL's statistics of it, and the gradients of ``loss``."""

    pg_loss: float
    vf_loss: float
    loss: float
    pg_clipfrac: float
    vf_clipfrac: float
    approxkl: float
    ratio_mean: float
    entropy_mean: float
    grad_theta: list[list[list[float]]]  # [P][L][V]
    grad_values: list[list[float]]  # [P][L]


def row_entropy(probs: Sequence[float], logp: Sequence[float]) -> float:
    """``-sum_v p_v log p_v`` of one row, left to right."""
    total = 0.0
    for p, lp in zip(probs, logp):
        total -= p * lp
    return total


def minibatch_loss_and_grads(
    theta: list[list[list[float]]],
    values: list[list[float]],
    rollouts: Rollouts,
    indices: Sequence[int],
    max_len: int,
    params: TokenPpoParams,
) -> MinibatchOutcome:
    """TRL's loss ``pg + vf_coef vf`` on the responses ``indices`` of ``rollouts`` under the
    current ``theta`` and ``values``, and its gradients in both (``d log pi(a) / d theta_v =
    [v = a] - pi_v``); the statistics as TRL logs them."""
    n_valid = 0
    for b in indices:
        n_valid += len(rollouts.tokens[b])
    grad_theta = [[[0.0] * len(row) for row in rows] for rows in theta]
    grad_values = [[0.0] * len(row) for row in values]
    pg_sum = vf_sum = 0.0
    pg_clipped = vf_clipped = 0
    squares = ratios = entropies = 0.0
    for b in indices:
        p = rollouts.prompts[b]
        tokens = rollouts.tokens[b]
        for t in range(max_len):
            probs = softmax_row(theta[p][t])
            logp = log_softmax_row(theta[p][t])
            entropies += row_entropy(probs, logp)
            if t >= len(tokens):
                ratios += 1.0  # a padded position: log-ratio 0
                continue
            a = tokens[t]
            logratio = logp[a] - rollouts.old_logp[b][t]
            squares += logratio * logratio
            ratios += math.exp(logratio)
            loss, slope, clipped = clipped_policy_term(
                rollouts.advantages[b][t], logp[a], rollouts.old_logp[b][t], params.cliprange
            )
            pg_sum += loss
            pg_clipped += clipped
            coef = slope / n_valid
            row = grad_theta[p][t]
            for v in range(len(row)):
                row[v] += coef * ((1.0 if v == a else 0.0) - probs[v])
            vloss, vslope, vclipped = clipped_value_term(
                values[p][t], rollouts.old_values[b][t], rollouts.returns[b][t], params.cliprange_value
            )
            vf_sum += vloss
            vf_clipped += vclipped
            grad_values[p][t] += params.vf_coef * 0.5 * vslope / n_valid
    positions = len(indices) * max_len
    pg_loss = pg_sum / n_valid
    vf_loss = 0.5 * (vf_sum / n_valid)
    return MinibatchOutcome(
        pg_loss=pg_loss,
        vf_loss=vf_loss,
        loss=pg_loss + params.vf_coef * vf_loss,
        pg_clipfrac=pg_clipped / n_valid,
        vf_clipfrac=vf_clipped / n_valid,
        approxkl=0.5 * (squares / positions),
        ratio_mean=ratios / positions,
        entropy_mean=entropies / positions,
        grad_theta=grad_theta,
        grad_values=grad_values,
    )


def response_lengths(tokens: np.ndarray, vocab_size: int) -> list[int]:
    """The lengths of stored responses ``tokens [B, L]`` (the contract's layout: the first EOS
    ends a response, -1 after its end), each checked, or a ValueError naming ``tokens[b, t]``."""
    lengths = []
    for b, response in enumerate(tokens.tolist()):
        length = response.index(EOS) + 1 if EOS in response else len(response)
        for t, a in enumerate(response):
            ok = 0 <= a < vocab_size if t < length else a == -1
            if not ok:
                want = f"a token in [0, {vocab_size})" if t < length else "-1 (padding after EOS)"
                raise ValueError(f"tokens[{b}, {t}] must be {want}, got {a}")
        lengths.append(length)
    return lengths


class BatchTerms(NamedTuple):
    """Per-token terms of a batch, lists per response, and the loss with its gradients."""

    kl: list[list[float]]
    rewards: list[list[float]]
    raw_advantages: list[list[float]]
    advantages: list[list[float]]
    returns: list[list[float]]
    outcome: MinibatchOutcome


def batch_loss_and_grads(world: TokenWorld, old_theta, theta, old_values, values, prompts: Sequence[int],
                         tokens: Sequence[Sequence[int]], scores: Sequence[float], kl_coef: float,
                         params: TokenPpoParams) -> BatchTerms:
    """One PPO update's terms on stored responses (``tokens`` a list per response), as the engine
    computes them: ``old_theta`` and ``old_values`` give the per-token KL, rewards (with the given
    ``scores``), GAE, returns and whitened advantages; the loss over the whole batch is then taken
    under ``theta`` and ``values``."""
    kls, rewards_all, raw, rets, old_logps, olds = [], [], [], [], [], []
    for p, response, score in zip(prompts, tokens, scores):
        old_logp = [log_softmax_row(old_theta[p][t])[a] for t, a in enumerate(response)]
        ref_logp = [world.ref_logp[p][t][a] for t, a in enumerate(response)]
        old = [old_values[p][t] for t in range(len(response))]
        kl = per_token_kl(old_logp, ref_logp, params.kl_estimator)
        rewards = per_token_rewards(kl, score, kl_coef)
        world.add_step_rewards(p, response, rewards)
        advantages, returns = gae(rewards, old, params.gamma, params.lam)
        kls.append(kl)
        rewards_all.append(rewards)
        raw.append(advantages)
        rets.append(returns)
        old_logps.append(old_logp)
        olds.append(old)
    whitened = masked_whiten([a for advantages in raw for a in advantages])
    advantages, start = [], 0
    for response in tokens:
        advantages.append(whitened[start : start + len(response)])
        start += len(response)
    rollouts = Rollouts(list(prompts), [list(r) for r in tokens], old_logps, olds, advantages, rets)
    outcome = minibatch_loss_and_grads(theta, values, rollouts, range(len(prompts)), world.max_len, params)
    return BatchTerms(kls, rewards_all, raw, advantages, rets, outcome)


class SequenceStats(NamedTuple):
    """Exact expectations over responses under a policy, means over prompts (issue 11 contract)."""

    proxy_score: float  # bias[p] + sum of content w + w_len * n_content
    gold_score: float  # offset[p] + sum of content g (each distinct token once when count_once)
    kl: float  # KL(pi || pi_ref) of whole responses
    length: float  # content tokens


def prompt_sequence_stats(
    rows: Sequence[Sequence[float]],
    ref_logp_rows: Sequence[Sequence[float]],
    w: Sequence[float],
    bias: float,
    w_len: float,
    g: Sequence[float],
    offset: float,
    count_once: bool,
) -> SequenceStats:
    """One prompt's :class:`SequenceStats`, ``O(L V)``, from
    :func:`~rlhf_fast.reference.methods.sequence_stats.prompt_stats` (the sequence world's one
    implementation of the ``alive_t`` recursions): the proxy weighs the expected copies of each
    token, the gold the chance each appears (``count_once``) or its copies."""
    _, _, content_length, kl, counts, appears = prompt_stats(rows, ref_logp_rows)
    counted_w, gold = 0.0, offset
    for v in range(1, len(w)):
        counted_w += w[v] * counts[v]
        gold += g[v] * (appears[v] if count_once else counts[v])
    return SequenceStats(bias + counted_w + w_len * content_length, gold, kl, content_length)


MAX_PROMPTS = 1 << 16
MAX_VOCAB = 1 << 20
MAX_LEN = 1 << 12


def _finite(name: str, array: np.ndarray) -> None:
    bad = np.argwhere(~np.isfinite(array))
    if bad.size:
        at = tuple(int(i) for i in bad[0])
        raise ValueError(f"{name}[{', '.join(map(str, at))}] must be finite, got {float(array[at])!r}")


class TokenWorld:
    """A sequence world's arrays, checked (Rust's ``TokenWorld``): ``ref_logits [P, L, V]`` (EOS
    is token 0), the reward model ``w [V]``, ``bias [P]``, ``w_len``, the gold ``g [V]``,
    ``offset [P]`` and ``count_once``."""

    def __init__(self, ref_logits, w, bias, w_len, g, offset, count_once):
        self.ref_logits: list[list[list[float]]] = ref_logits
        self.w: list[float] = w
        self.bias: list[float] = bias
        self.w_len: float = w_len
        self.g: list[float] = g
        self.offset: list[float] = offset
        self.count_once: bool = count_once
        self.n_prompts = len(ref_logits)
        self.max_len = len(ref_logits[0])
        self.vocab_size = len(w)
        self.ref_logp = [[log_softmax_row(row) for row in rows] for rows in ref_logits]
        self.step_rewards: list[list[list[float]]] | None = None
        self.outcome_factors: list[list[list[float]]] | None = None

    def with_process_rewards(self, step_rewards: np.ndarray | None, outcome_factors: np.ndarray | None) -> TokenWorld:
        """The world with process rewards and outcome factors (each ``[P, L, V]`` like
        ``ref_logits``, finite; float64 arrays or None), each error naming its argument (Rust's
        ``TokenWorld::with_process_rewards``)."""
        shape = [self.n_prompts, self.max_len, self.vocab_size]
        for name, table in (("step_rewards", step_rewards), ("outcome_factors", outcome_factors)):
            if table is not None:
                if table.size != self.n_prompts * self.max_len * self.vocab_size:
                    raise ValueError(f"{name} must have the shape of ref_logits, {shape}: got {table.size} values")
                _finite(name, table.reshape(shape))
        self.step_rewards = None if step_rewards is None else step_rewards.reshape(shape).tolist()
        self.outcome_factors = None if outcome_factors is None else outcome_factors.reshape(shape).tolist()
        return self

    def outcome(self, p: int, tokens: Sequence[int]) -> float:
        """The product of a response's outcome factors (EOS's included), 0 without them."""
        if self.outcome_factors is None:
            return 0.0
        product = 1.0
        for t, a in enumerate(tokens):
            product *= self.outcome_factors[p][t][a]
        return product

    def add_step_rewards(self, p: int, tokens: Sequence[int], rewards: list[float]) -> float:
        """Adds each token's process reward to ``rewards`` in place; returns their sum."""
        if self.step_rewards is None:
            return 0.0
        total = 0.0
        for t, a in enumerate(tokens):
            step = self.step_rewards[p][t][a]
            rewards[t] += step
            total += step
        return total

    def expected_outcome(self, p: int, rows: Sequence[Sequence[float]]) -> float:
        """The exact expected :meth:`outcome` of prompt ``p`` under ``rows [L][V]``: ``sum_t
        (prod_{s<t} m_s) e_t + prod_s m_s``, ``m_s = sum_{v != EOS} pi_s(v) f_s(v)``, ``e_t =
        pi_t(EOS) f_t(EOS)``."""
        if self.outcome_factors is None:
            return 0.0
        going = 1.0
        ended = 0.0
        for t in range(self.max_len):
            probs = softmax_row(rows[t])
            f = self.outcome_factors[p][t]
            ended += going * (probs[EOS] * f[EOS])
            total = 0.0
            for v in range(1, self.vocab_size):
                total += probs[v] * f[v]
            going *= total
        return ended + going

    @classmethod
    def new(cls, ref_logits: np.ndarray, w: np.ndarray, bias: np.ndarray, w_len: float, g: np.ndarray,
            offset: np.ndarray, count_once: bool) -> TokenWorld:
        """Checks shapes (1 to 2**16 prompts, 1 to 4096 positions, 2 to 2**20 tokens; ``w`` and
        ``g`` one per token, ``bias`` and ``offset`` one per prompt) and finite values, each error
        naming its argument; the arrays are float64 arrays of the right dimensions."""
        n_prompts, max_len, vocab = ref_logits.shape
        if not 1 <= n_prompts <= MAX_PROMPTS:
            raise ValueError(f"ref_logits must have 1 to {MAX_PROMPTS} prompts, got {n_prompts}")
        if not 1 <= max_len <= MAX_LEN:
            raise ValueError(f"ref_logits must have 1 to {MAX_LEN} positions (max_len), got {max_len}")
        if not 2 <= vocab <= MAX_VOCAB:
            raise ValueError(f"ref_logits must have 2 to {MAX_VOCAB} tokens (EOS is token 0), got {vocab}")
        _finite("ref_logits", ref_logits)
        for name, array, size, what in (("w", w, vocab, "token"), ("bias", bias, n_prompts, "prompt"),
                                        ("g", g, vocab, "token"), ("offset", offset, n_prompts, "prompt")):
            if len(array) != size:
                raise ValueError(f"{name} must have {size} entries (one per {what}), got {len(array)}")
            _finite(name, array)
        if not math.isfinite(w_len):
            raise ValueError(f"w_len must be finite, got {w_len!r}")
        return cls(ref_logits.tolist(), w.tolist(), bias.tolist(), w_len, g.tolist(), offset.tolist(), count_once)

    def rm_score(self, p: int, tokens: Sequence[int]) -> float:
        """The reward model's score of a response: ``bias[p] + sum of content w + w_len * n_content``."""
        score = self.bias[p]
        n_content = 0
        for a in tokens:
            if a != EOS:
                score += self.w[a]
                n_content += 1
        return score + self.w_len * n_content + self.outcome(p, tokens)

    def gold(self, p: int, tokens: Sequence[int]) -> float:
        """The gold of a response: ``offset[p] + sum of content g``, each distinct token once when ``count_once``."""
        gold = self.offset[p]
        seen = set()
        for a in tokens:
            if a != EOS and not (self.count_once and a in seen):
                gold += self.g[a]
                seen.add(a)
        return gold

    def stats(self, theta: Sequence[Sequence[Sequence[float]]]) -> SequenceStats:
        """:func:`prompt_sequence_stats` of every prompt, means over prompts (summed left to right)."""
        proxy = gold = kl = length = 0.0
        for p in range(self.n_prompts):
            s = prompt_sequence_stats(theta[p], self.ref_logp[p], self.w, self.bias[p], self.w_len, self.g,
                                      self.offset[p], self.count_once)
            proxy += s.proxy_score + self.expected_outcome(p, theta[p])
            gold += s.gold_score
            kl += s.kl
            length += s.length
        n = self.n_prompts
        return SequenceStats(proxy / n, gold / n, kl / n, length / n)
