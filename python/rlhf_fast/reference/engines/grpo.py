"""Twin of rust/engines/grpo.rs: whole GRPO runs, one (:func:`train_grpo`) or many (:func:`sweep_grpo`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from ... import _checks as checks
from ..kernels.policy import expected_score, policy_kl
from ..kernels.softmax import log_softmax_row
from ..methods.bradley_terry import vocab_weights
from ..methods.grpo import GrpoParams, grpo_update
from ..methods.reward_checks import check_not_length_only
from ..rng import from_key, seed_key
from .driver import RunOutput, check_summary, mean, sweep, warn_kl

GRPO_HISTORY_KEYS = ("prompt", "score", "reward_std", "kl", "clip_frac", "loss", "mean_kl")
FLOAT_KEYS = GRPO_HISTORY_KEYS[1:]  # what a step's record is checked for (prompt is an int)


def train_grpo(
    theta: Sequence[list[float]],
    ref: Sequence[Sequence[float]],
    weights: Sequence[float],
    steps: int,
    seed_key: list[int],
    params: GrpoParams,
    kl_threshold: float = math.inf,
    name: str = "train_grpo",
) -> dict[str, list]:
    """``steps`` GRPO steps on the stream of ``random.Random(seed)``; updates ``theta`` in place.

    ``theta`` and ``ref`` are tables (one row of logits per prompt), ``weights[a]`` the
    reward of token ``a``, ``seed_key`` the run's seed as a key. Each step draws ``prompt =
    rng.choice(PROMPTS)``, then the group's ``num_generations`` draws of ``rng.random()``,
    and takes :func:`~.methods.grpo.grpo_update`. Returns the per-step history
    (``GRPO_HISTORY_KEYS``) with ``mean_kl``, the running mean of the exact KL, which warns
    with :class:`~.driver.KLWarning` once it passes ``kl_threshold``. A step that leaves a
    logit overflowed (:func:`~rlhf_fast._checks.overflowed`) raises ``FloatingPointError``
    naming the run (``name``), the step, ``lr`` and ``beta``; so does, after that check, a step
    whose record has a value that is not finite (the first of ``FLOAT_KEYS`` is named:
    ``"... diverged at step 7: reward_std overflowed ..."``). ``theta`` and the history then
    hold every step before it and the failing step's update (the failing step is not recorded).
    """
    # The frozen reference never changes: its log-probabilities once per prompt.
    ref_log_probs = [log_softmax_row(row) for row in ref]
    rng = from_key(seed_key)
    choice = rng.choice
    random = rng.random
    prompts = range(len(theta))
    group = range(params.num_generations)
    overflowed = checks.overflowed
    non_finite = checks.non_finite
    history: dict[str, list] = {key: [] for key in GRPO_HISTORY_KEYS}
    (
        record_prompt, record_score, record_reward_std, record_kl, record_clip_frac, record_loss, record_mean_kl,
    ) = (history[key].append for key in GRPO_HISTORY_KEYS)
    kl_sum = 0.0
    warned = False
    for t in range(steps):
        x = choice(prompts)
        logits = theta[x]
        out, _ = grpo_update(logits, ref_log_probs[x], weights, [random() for _ in group], params)
        if overflowed(logits):
            raise FloatingPointError(
                f"{name} diverged at step {t}: logits overflowed (lr={params.lr!r}, beta={params.beta!r})"
            )
        kl_sum += out.kl
        mean_kl = kl_sum / (t + 1)
        record = (out.score, out.reward_std, out.kl, out.clip_frac, out.loss, mean_kl)
        if (key := non_finite(FLOAT_KEYS, record)) is not None:
            raise FloatingPointError(
                f"{name} diverged at step {t}: {key} overflowed (lr={params.lr!r}, beta={params.beta!r})"
            )
        record_prompt(x)
        record_score(out.score)
        record_reward_std(out.reward_std)
        record_kl(out.kl)
        record_clip_frac(out.clip_frac)
        record_loss(out.loss)
        record_mean_kl(mean_kl)
        if not warned and mean_kl > kl_threshold:
            warned = True
            warn_kl(mean_kl, kl_threshold, t)
    return history


# The sweep's history fields (TRL's names where TRL has one), each from train_grpo's record.
SWEEP_HISTORY_FIELDS = {
    "prompt": "prompt",
    "reward": "score",
    "reward_std": "reward_std",
    "kl": "kl",
    "clip_ratio": "clip_frac",
    "loss": "loss",
    "mean_kl": "mean_kl",
}
SUMMARY_FIELDS = ("final_score", "final_kl", "mean_score", "mean_reward_std", "mean_kl", "clip_frac", "mean_loss")


class GrpoRun(NamedTuple):
    """One run of a GRPO sweep: its stream and its step's parameters."""

    seed_key: list[int]
    params: GrpoParams


class GrpoEngine:
    """The GRPO sweep engine: every run from the same starting policy, against the same reference."""

    history_fields: tuple[str, ...] = tuple(SWEEP_HISTORY_FIELDS)
    summary_fields: tuple[str, ...] = SUMMARY_FIELDS

    def __init__(self, theta, ref, weights: list[float], steps: int, record_every: int):
        self.theta = theta
        self.ref = ref
        self.weights = weights
        self.steps = steps
        self.record_every = record_every
        self.kept = steps // record_every if record_every else 0
        self.param_shape: tuple[int, ...] = (len(theta), len(theta[0]))

    def run(self, spec: GrpoRun, index: int) -> RunOutput:
        theta = [list(row) for row in self.theta]
        history = train_grpo(
            theta, self.ref, self.weights, self.steps, spec.seed_key, spec.params, name=f"sweep run {index}"
        )
        summary = [
            expected_score(theta, self.weights),
            policy_kl(theta, self.ref),
            *(mean(history[key]) for key in ("score", "reward_std", "kl", "clip_frac", "loss")),
        ]
        check_summary(SUMMARY_FIELDS, summary, index, spec.params.lr, spec.params.beta)
        return RunOutput({field: history[key] for field, key in SWEEP_HISTORY_FIELDS.items()}, theta, summary)

    def work(self, spec: GrpoRun) -> int:
        return self.steps


def sweep_grpo(
    theta: Any,
    ref: Any,
    w: Mapping[str, float],
    steps: int,
    runs: Sequence[tuple],
    record_every: int = 1,
    n_threads: int | None = None,
    progress: Callable[[int], None] | None = None,
    max_memory: int | None = None,
) -> dict[str, Any]:
    """Every GRPO run of ``runs`` from ``theta`` against ``ref`` (``[P, V]`` tables).

    A run is ``(seed, num_generations, beta, epsilon, epsilon_high_or_None, lr,
    scale_rewards, num_iterations)``: ``train_grpo(theta, ref, w, steps, seed, ...)`` from
    a copy of ``theta``. Returns the sweep contract's dict (:func:`~.driver.sweep`); the
    summary holds the final policy's exact expected score and KL and the means over all
    steps of the score, reward std, KL, clip fraction and loss. ``n_threads`` chooses how
    Rust computes; the reference computes one way.
    """
    theta0 = checks.table("theta", theta)
    reference = checks.table("ref", ref)
    checks.weights(w)
    weights = vocab_weights(w)
    check_not_length_only(weights)
    steps = checks.count("steps", steps, 1)
    record_every = checks.count("record_every", record_every, 0)
    specs = [
        GrpoRun(
            seed_key(checks.integer("seed", seed)),
            GrpoParams.new(num_generations, beta, epsilon, epsilon_high, lr, scale_rewards, num_iterations),
        )
        for seed, num_generations, beta, epsilon, epsilon_high, lr, scale_rewards, num_iterations in runs
    ]
    return sweep(GrpoEngine(theta0, reference, weights, steps, record_every), specs, max_memory, progress)
