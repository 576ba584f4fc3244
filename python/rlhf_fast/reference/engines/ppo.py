"""Twin of rust/engines/ppo.rs: whole PPO-RLHF runs, one (:func:`train_rlhf`) or many (:func:`sweep_rlhf`)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from ... import _checks as checks
from ..._checks import OVERFLOW
from ..kernels.policy import expected_score, policy_kl
from ..kernels.softmax import log_softmax_row
from ..methods.bradley_terry import one_token_scores, vocab_weights
from ..methods.kl_control import make_kl_controller
from ..methods.ppo import PpoParams, rlhf_step
from ..methods.reward_checks import check_not_length_only
from ..rng import from_key, seed_key
from .driver import RunOutput, check_summary, mean, sweep, warn_kl

HISTORY_KEYS = (
    "prompt", "token", "score", "kl", "reward", "clip_frac", "beta", "mean_kl", "kl_penalty", "value_loss"
)
FLOAT_KEYS = HISTORY_KEYS[2:]  # what a step's record is checked for (prompt and token are ints)


def train_rlhf(
    theta: Sequence[list[float]],
    ref: Sequence[Sequence[float]],
    weights: Sequence[float],
    steps: int,
    seed_key: list[int],
    params: PpoParams,
    controller: Any,
    values: Any,
    kl_threshold: float = math.inf,
    name: str = "train_rlhf",
) -> dict[str, list]:
    """``steps`` PPO-RLHF steps on the stream of ``random.Random(seed)``; updates ``theta`` in place.

    ``theta`` and ``ref`` are tables (one row of logits per prompt), ``weights[a]`` the
    reward model's score of token ``a``, ``seed_key`` the run's seed as a key, ``values`` the
    per-prompt value baseline (updated in place when ``params.vf_coef > 0``). Each step
    draws ``prompt = rng.choice(PROMPTS)`` and takes :func:`~.methods.ppo.rlhf_step` with the
    controller's current beta, then feeds the controller the step's exact KL (one sample
    per step, so ``n_steps = 1``). Returns the per-step history (``HISTORY_KEYS``), the
    running mean of the exact KL included: the lesson's monitor, which warns with
    :class:`~.driver.KLWarning` once it passes ``kl_threshold``.

    A step that leaves a logit or the prompt's value overflowed (:func:`~rlhf_fast._checks.overflowed`)
    raises ``FloatingPointError`` naming the run (``name``), the step, ``lr`` and the step's
    beta; so does, after that check, a step whose record has a value that is not finite
    (the first of ``FLOAT_KEYS``, ``mean_kl`` the running mean with this step, is named:
    ``"... diverged at step 3: reward overflowed ..."``). ``theta``, ``values`` and the
    history then hold every step before it and the failing step's update; the failing step
    is not recorded and the controller is not fed it. A controller whose coefficient the
    step's KL would take past the floats (the doubling rule, ~1,000 doublings on) ends the
    run after that step is recorded: ``"... diverged at step 1040: beta overflowed ..."``.
    """
    # The frozen reference never changes: its log-probabilities once per prompt.
    ref_log_probs = [log_softmax_row(row) for row in ref]
    rng = from_key(seed_key)
    choice = rng.choice
    random = rng.random
    prompts = range(len(theta))
    overflowed = checks.overflowed
    non_finite = checks.non_finite
    history: dict[str, list] = {key: [] for key in HISTORY_KEYS}
    (
        record_prompt, record_token, record_score, record_kl, record_reward, record_clip_frac, record_beta,
        record_mean_kl, record_kl_penalty, record_value_loss,
    ) = (history[key].append for key in HISTORY_KEYS)
    kl_sum = 0.0
    warned = False
    for t in range(steps):
        x = choice(prompts)
        beta = controller.value
        logits = theta[x]
        out, values[x] = rlhf_step(logits, ref_log_probs[x], weights, random(), beta, params, values[x])
        if overflowed(logits) or not abs(values[x]) < OVERFLOW:
            raise FloatingPointError(f"{name} diverged at step {t}: logits overflowed (lr={params.lr!r}, beta={beta!r})")
        kl_sum += out.kl
        mean_kl = kl_sum / (t + 1)
        record = (out.score, out.kl, out.reward, out.clip_frac, beta, mean_kl, out.kl_penalty, out.value_loss)
        if (key := non_finite(FLOAT_KEYS, record)) is not None:
            raise FloatingPointError(f"{name} diverged at step {t}: {key} overflowed (lr={params.lr!r}, beta={beta!r})")
        record_prompt(x)
        record_token(out.token)
        record_score(out.score)
        record_kl(out.kl)
        record_reward(out.reward)
        record_clip_frac(out.clip_frac)
        record_beta(beta)
        record_mean_kl(mean_kl)
        record_kl_penalty(out.kl_penalty)
        record_value_loss(out.value_loss)
        if not warned and mean_kl > kl_threshold:
            warned = True
            warn_kl(mean_kl, kl_threshold, t)
        try:
            controller.update(out.kl, 1)  # the controllers are fed the exact KL
        except FloatingPointError:  # the doubling rule, doubled past the floats
            raise FloatingPointError(
                f"{name} diverged at step {t}: beta overflowed (lr={params.lr!r}, beta={beta!r})"
            ) from None
    return history


# The sweep's history fields (TRL's names, '/' written '_'), each from train_rlhf's record.
SWEEP_HISTORY_FIELDS = {
    "prompt": "prompt",
    "token": "token",
    "objective_scores": "score",
    "objective_kl": "kl",
    "objective_rlhf_reward": "reward",
    "policy_clipfrac_avg": "clip_frac",
    "objective_kl_coef": "beta",
    "mean_kl": "mean_kl",
    "penalised_kl": "kl_penalty",
    "loss_value_avg": "value_loss",
}
SUMMARY_FIELDS = ("final_score", "final_kl", "mean_score", "mean_reward", "mean_kl", "clip_frac", "final_beta")


class PpoRun(NamedTuple):
    """One run of a PPO sweep: its stream, its step's parameters and its KL controller."""

    seed_key: list[int]
    params: PpoParams
    controller: Any


class PpoEngine:
    """The PPO sweep engine: every run from the same starting policy, against the same reference."""

    history_fields: tuple[str, ...] = tuple(SWEEP_HISTORY_FIELDS)
    summary_fields: tuple[str, ...] = SUMMARY_FIELDS

    def __init__(self, theta, ref, w: Mapping[str, float], steps: int, record_every: int):
        self.theta = theta
        self.ref = ref
        self.scores = one_token_scores(w)
        self.weights = vocab_weights(w)
        self.steps = steps
        self.record_every = record_every
        self.kept = steps // record_every if record_every else 0
        self.param_shape: tuple[int, ...] = (len(theta), len(theta[0]))

    def run(self, spec: PpoRun, index: int) -> RunOutput:
        theta = [list(row) for row in self.theta]
        controller = copy.copy(spec.controller)  # the spec's stays at the starting beta
        history = train_rlhf(
            theta, self.ref, self.scores, self.steps, spec.seed_key, spec.params, controller, [0.0] * len(theta),
            name=f"sweep run {index}",
        )
        summary = [
            expected_score(theta, self.weights),
            policy_kl(theta, self.ref),
            mean(history["score"]),
            mean(history["reward"]),
            mean(history["kl"]),
            mean(history["clip_frac"]),
            controller.value,
        ]
        check_summary(SUMMARY_FIELDS, summary, index, spec.params.lr, controller.value)  # its final beta, as Rust
        return RunOutput({field: history[key] for field, key in SWEEP_HISTORY_FIELDS.items()}, theta, summary)

    def work(self, spec: PpoRun) -> int:
        return self.steps


def sweep_rlhf(
    theta: Any,
    ref: Any,
    w: Mapping[str, float],
    steps: int,
    runs: Sequence[tuple],
    record_every: int = 1,
    exact: bool = False,
    simd: str | None = None,
    n_threads: int | None = None,
    progress: Callable[[int], None] | None = None,
    max_memory: int | None = None,
) -> dict[str, Any]:
    """Every PPO-RLHF run of ``runs`` from ``theta`` against ``ref`` (``[P, V]`` tables).

    A run is ``(seed, eps, lr, ppo_epochs, kl_ctl, beta, target, horizon, kl_penalty,
    vf_coef, cliprange_value)``: ``train_rlhf(theta, ref, w, steps, seed, ...)`` from a
    copy of ``theta``, with its own zero value baseline. Returns the sweep contract's dict
    (:func:`~.driver.sweep`); the summary holds the final policy's exact expected score and
    KL, the means over all steps of the score, reward, KL and clip fraction, and the final
    beta. ``exact``, ``simd`` and ``n_threads`` choose how Rust computes; the reference
    computes one way.
    """
    theta0 = checks.table("theta", theta)
    reference = checks.table("ref", ref)
    checks.weights(w)
    check_not_length_only(vocab_weights(w))
    steps = checks.count("steps", steps, 1)
    record_every = checks.count("record_every", record_every, 0)
    specs = [
        PpoRun(
            seed_key(checks.integer("seed", seed)),
            PpoParams.new(eps, lr, ppo_epochs, kl_penalty, vf_coef, cliprange_value),
            make_kl_controller(kl_ctl, beta, target, horizon),
        )
        for seed, eps, lr, ppo_epochs, kl_ctl, beta, target, horizon, kl_penalty, vf_coef, cliprange_value in runs
    ]
    return sweep(PpoEngine(theta0, reference, w, steps, record_every), specs, max_memory, progress)
