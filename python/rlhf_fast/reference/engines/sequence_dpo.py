"""Twin of rust/engines/sequence_dpo.rs: DPO in a sequence world, a sweep of runs.

The policy is a table of logits ``theta[P][L][V]`` (prompt, position; EOS is token 0),
starting at the world's reference (which stays frozen). A response's log-probability is the
sum over its tokens, the EOS included and the padding excluded, of ``log
softmax(theta[p][t])[y_t]``; the losses are the lesson's (:meth:`DpoParams.loss_and_step`),
IPO's log-ratios each divided by the response's length (EOS included), as TRL's
``dpo_trainer.py`` divides by ``completion_mask.sum(dim=1)``. The gradient of ``u`` at
position ``t`` is ``w+ [t < n+] (onehot(y+_t) - pi_t) - w- [t < n-] (onehot(y-_t) - pi_t)``
(``w = 1``, ``1 / n`` for IPO): only the positions a response reaches move.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np

from ... import _checks as checks
from ..kernels.softmax import log_softmax_row, softmax_row
from ..methods.dpo import DpoOutcome, DpoParams, pair_label
from ..methods.token_ppo import EOS, SequenceStats, TokenWorld, prompt_sequence_stats, response_lengths
from ..rng import from_key, seed_key
from .dpo import longest_run_steps
from .driver import RunOutput, check_summary, mean, sweep

SEQUENCE_DPO_HISTORY_FIELDS = (
    "prompt_index",
    "loss",
    "rewards_chosen",
    "rewards_rejected",
    "rewards_margins",
    "rewards_accuracies",
    "proxy_score",
    "gold_score",
    "mean_kl",
    "mean_length",
)
SEQUENCE_DPO_HISTORY_FIELDS_GOLD = tuple(f for f in SEQUENCE_DPO_HISTORY_FIELDS if f != "proxy_score")
SEQUENCE_DPO_SUMMARY_FIELDS = (
    "final_proxy_score",
    "final_gold_score",
    "final_kl",
    "final_length",
    "last_epoch_loss",
    "last_epoch_accuracy",
    "last_epoch_margin",
)
STEP_KEYS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


def sequence_dpo_update(
    theta: list[list[float]],
    ref_logp: Sequence[Sequence[float]],
    chosen: Sequence[int],
    rejected: Sequence[int],
    smoothing: float,
    params: DpoParams,
) -> DpoOutcome:
    """One DPO step on one prompt's rows ``theta [L][V]`` (mutated) from a chosen and a rejected
    response (tokens, EOS included) against the reference's log-probabilities ``ref_logp``;
    ``smoothing`` is the pair's label smoothing (:func:`pair_label`). Returns TRL's record
    before the step."""
    n_pos, n_neg = len(chosen), len(rejected)
    reached = max(n_pos, n_neg)
    probs = [softmax_row(theta[t]) for t in range(reached)]
    logp = [log_softmax_row(theta[t]) for t in range(reached)]

    def log_ratio(tokens: Sequence[int]) -> float:
        total = 0.0
        for t, a in enumerate(tokens):
            total += logp[t][a] - ref_logp[t][a]
        return total

    pos_logratio, neg_logratio = log_ratio(chosen), log_ratio(rejected)
    ipo = params.loss_type == "ipo"
    u = pos_logratio / n_pos - neg_logratio / n_neg if ipo else pos_logratio - neg_logratio
    loss, step = replace(params, label_smoothing=smoothing).loss_and_step(u)
    w_pos, w_neg = (1.0 / n_pos, 1.0 / n_neg) if ipo else (1.0, 1.0)
    for t in range(reached):
        pos, pos_weight = (chosen[t], w_pos) if t < n_pos else (-1, 0.0)
        neg, neg_weight = (rejected[t], w_neg) if t < n_neg else (-1, 0.0)
        policy_weight = pos_weight - neg_weight
        row, p = theta[t], probs[t]
        for v in range(len(row)):
            pos_term = pos_weight if v == pos else 0.0
            neg_term = neg_weight if v == neg else 0.0
            row[v] -= step * (pos_term - neg_term - policy_weight * p[v])
    chosen_reward = params.beta * pos_logratio
    rejected_reward = params.beta * neg_logratio
    return DpoOutcome(loss, chosen_reward, rejected_reward, chosen_reward - rejected_reward,
                      1.0 if chosen_reward > rejected_reward else 0.0)


class CachedStats:
    """Each prompt's exact statistics, recomputed for the prompts changed since last asked."""

    def __init__(self, world: TokenWorld):
        self.world = world
        self.per_prompt: list[SequenceStats | None] = [None] * world.n_prompts

    def changed(self, p: int) -> None:
        self.per_prompt[p] = None

    def means(self, theta: Sequence) -> SequenceStats:
        """Means over prompts, summed in prompt order (Rust's ``TokenWorld::stats``)."""
        w = self.world
        proxy = gold = kl = length = 0.0
        for p in range(w.n_prompts):
            s = self.per_prompt[p]
            if s is None:
                s = self.per_prompt[p] = prompt_sequence_stats(theta[p], w.ref_logp[p], w.w, w.bias[p], w.w_len,
                                                               w.g, w.offset[p], w.count_once)
            proxy += s.proxy_score
            gold += s.gold_score
            kl += s.kl
            length += s.length
        n = w.n_prompts
        return SequenceStats(proxy / n, gold / n, kl / n, length / n)


class SequencePairRows(NamedTuple):
    """Labelled pairs: prompt, the two responses' tokens (EOS included, no padding), target."""

    prompts: list[int]
    first: list[list[int]]
    second: list[list[int]]
    target: list[float]

    def check_labels_for(self, loss_type: str) -> None:
        """Soft labels are a cross-entropy target of the sigmoid loss only."""
        if loss_type == "sigmoid":
            return
        for i, t in enumerate(self.target):
            if t != 0.0 and t != 1.0:
                raise ValueError(
                    f"loss_type {loss_type!r} needs hard labels (targets 0 or 1), but target[{i}] is {t!r}: "
                    "soft labels are only defined for loss_type 'sigmoid'"
                )


class SequenceDpoRun(NamedTuple):
    params: DpoParams
    epochs: int
    shuffle_seed: list[int] | None


class SequenceDpoEngine:
    """The sequence DPO sweep engine: every run from the world's reference, over the same pairs."""

    def __init__(self, world: TokenWorld, pairs: SequencePairRows, with_proxy: bool, record_every: int,
                 specs: Sequence[SequenceDpoRun]):
        self.world = world
        self.pairs = pairs
        self.with_proxy = with_proxy
        self.history_fields = SEQUENCE_DPO_HISTORY_FIELDS if with_proxy else SEQUENCE_DPO_HISTORY_FIELDS_GOLD
        self.summary_fields = SEQUENCE_DPO_SUMMARY_FIELDS if with_proxy else SEQUENCE_DPO_SUMMARY_FIELDS[1:]
        self.record_every = record_every
        max_steps = longest_run_steps(specs, len(pairs.prompts),
                                      lambda spec: pairs.check_labels_for(spec.params.loss_type))
        self.kept = max_steps // record_every if record_every else 0
        self.param_shape: tuple[int, ...] = (world.n_prompts, world.max_len, world.vocab_size)

    def run(self, spec: SequenceDpoRun, index: int) -> RunOutput:
        world, pairs, params = self.world, self.pairs, spec.params
        theta = [[list(row) for row in rows] for rows in world.ref_logits]
        every = self.record_every
        steps = spec.epochs * len(pairs.prompts)
        history = {field: [math.nan] * steps if every else [] for field in self.history_fields}
        stats = CachedStats(world)
        rng = None if spec.shuffle_seed is None else from_key(spec.shuffle_seed)
        last: dict[str, list[float]] = {"loss": [], "accuracy": [], "margin": []}
        name = f"sweep run {index}"
        t = 0
        for epoch in range(spec.epochs):
            order = list(range(len(pairs.prompts)))
            if rng is not None:
                rng.shuffle(order)
            for i in order:
                x = pairs.prompts[i]
                first_is_chosen, smoothing = pair_label(pairs.target[i], params.label_smoothing)
                chosen, rejected = (pairs.first[i], pairs.second[i]) if first_is_chosen else (pairs.second[i],
                                                                                              pairs.first[i])
                out = sequence_dpo_update(theta[x], world.ref_logp[x], chosen, rejected, smoothing, params)
                stats.changed(x)

                def diverged(key: str) -> FloatingPointError:
                    return FloatingPointError(f"{name} diverged at step {t}: {key} overflowed "
                                              f"(lr={params.lr!r}, beta={params.beta!r})")

                if checks.overflowed(v for row in theta[x] for v in row):
                    raise diverged("logits")
                if (key := checks.non_finite(STEP_KEYS, out)) is not None:
                    raise diverged(key)
                if epoch == spec.epochs - 1:
                    last["loss"].append(out.loss)
                    last["accuracy"].append(out.accuracy)
                    last["margin"].append(out.margin)
                if every and (t + 1) % every == 0:
                    record = (float(x), *out, *stats.means(theta))
                    if (key := checks.non_finite(SEQUENCE_DPO_HISTORY_FIELDS, record)) is not None:
                        raise diverged(key)
                    kept = [v for f, v in zip(SEQUENCE_DPO_HISTORY_FIELDS, record)
                            if self.with_proxy or f != "proxy_score"]
                    for field, value in zip(self.history_fields, kept):
                        history[field][t] = value
                t += 1
        final = stats.means(theta)
        summary = [*final, mean(last["loss"]), mean(last["accuracy"]), mean(last["margin"])]
        if not self.with_proxy:
            summary = summary[1:]
        check_summary(self.summary_fields, summary, index, params.lr, params.beta)
        return RunOutput(history, theta, summary)

    def work(self, spec: SequenceDpoRun) -> int:
        return spec.epochs * len(self.pairs.prompts)


def sequence_world(ref_logits: Any, w: Any, bias: Any, w_len: Any, g: Any, offset: Any,
                   count_once: Any) -> TokenWorld:
    """The bindings' checks of a sequence world's arrays (Rust's ``OwnedWorld``)."""
    return TokenWorld.new(checks.float_array("ref_logits", ref_logits, 3), checks.float_array("w", w, 1),
                          checks.float_array("bias", bias, 1), checks.real("w_len", w_len),
                          checks.float_array("g", g, 1), checks.float_array("offset", offset, 1),
                          checks.boolean("count_once", count_once))


def int64_array(name: str, value: Any, ndim: int) -> np.ndarray:
    """An int64 array of ``ndim`` dimensions (Rust's ``int_array``)."""
    if not (isinstance(value, np.ndarray) and value.dtype == np.int64 and value.ndim == ndim):
        raise TypeError(f"{name} must be a {ndim}-D int64 array, got {type(value).__name__}")
    return value


def sequence_pairs(world: TokenWorld, prompts: Any, first: Any, second: Any, target: Any) -> SequencePairRows:
    """The labelled pairs as the bindings check them: int64 ``prompts [n]``, ``first``/``second
    [n, L]`` padded with -1 after the first EOS, float64 ``target [n]`` in [0, 1]."""
    prompts = int64_array("prompts", prompts, 1)
    n = len(prompts)
    for i, p in enumerate(prompts.tolist()):
        if not 0 <= p < world.n_prompts:
            raise ValueError(f"prompts[{i}] must be in [0, {world.n_prompts}), got {p}")
    sides = []
    for name, tokens in (("first", first), ("second", second)):
        tokens = int64_array(name, tokens, 2)
        if tokens.shape != (n, world.max_len):
            raise ValueError(f"{name} must have shape [{n}, {world.max_len}], got {list(tokens.shape)}")
        try:
            lengths = response_lengths(tokens, world.vocab_size)
        except ValueError as err:
            raise ValueError(str(err).replace("tokens", name, 1)) from None
        sides.append([row[:n_row] for row, n_row in zip(tokens.tolist(), lengths)])
    target = checks.float_array("target", target, 1)
    if len(target) != n:
        raise ValueError(f"target must have {n} entries (one per pair), got {len(target)}")
    for i, t in enumerate(target.tolist()):
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"target[{i}] must be a probability in [0, 1], got {t!r}")
    if n == 0:
        raise ValueError("pairs must not be empty")
    return SequencePairRows(prompts.tolist(), sides[0], sides[1], target.tolist())


def sweep_sequence_dpo(
    ref_logits: Any, w: Any, bias: Any, w_len: Any, g: Any, offset: Any, count_once: Any,
    prompts: Any, first: Any, second: Any, target: Any, runs: Sequence[tuple], with_proxy: Any = True,
    record_every: Any = 1, n_threads: int | None = None, progress: Callable[[int], None] | None = None,
    max_memory: int | None = None,
) -> dict[str, Any]:
    """Every DPO run of ``runs`` (``(beta, lr, loss_type, label_smoothing, epochs, seed or
    None)``) in the sequence world of these arrays over its labelled pairs, each from the
    reference policy. Returns the sweep contract's dict (:func:`~.driver.sweep`); ``n_threads``
    is Rust's (ignored here)."""
    world = sequence_world(ref_logits, w, bias, w_len, g, offset, count_once)
    pairs = sequence_pairs(world, prompts, first, second, target)
    with_proxy = checks.boolean("with_proxy", with_proxy)
    record_every = checks.count("record_every", record_every, 0)
    specs = [
        SequenceDpoRun(DpoParams.new(beta, lr, loss_type, label_smoothing), checks.count("epochs", epochs, 1),
                       None if seed is None else seed_key(checks.integer("seed", seed)))
        for beta, lr, loss_type, label_smoothing, epochs, seed in runs
    ]
    return sweep(SequenceDpoEngine(world, pairs, with_proxy, record_every, specs), specs, max_memory, progress)


__all__ = ["EOS", "sequence_dpo_update", "sweep_sequence_dpo"]
