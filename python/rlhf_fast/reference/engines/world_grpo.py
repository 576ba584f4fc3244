"""Twin of rust/engines/world_grpo.rs: GRPO in a world, one run (:func:`train_world_grpo`) or many.

A run starts at the world's reference (SFT) policy and owns its stream: each step draws the
prompt as the lesson's GRPO does (``rng.choice`` over the prompts), then the group's ``G L``
draws of ``rng.random()``, response after response, and takes
:func:`~rlhf_fast.reference.methods.grpo.bag_grpo_update`. What a run records besides the
step's own record is exact (:class:`~rlhf_fast.reference.methods.world_stats.ExactMeans`):
the means over prompts of the proxy score, the gold and ``L KL(pi || pi_ref)`` under the
policy after the step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from ... import _checks as checks
from ..methods.grpo import GrpoOutcome, GrpoParams, bag_grpo_update, check_group_tokens
from ..methods.world_stats import ExactMeans, WorldStats, WorldTables
from ..rng import from_key, seed_key
from .driver import RunOutput, check_summary, mean, sweep

# The group's record (TRL's names) and the exact means over prompts after the step.
WORLD_GRPO_HISTORY_FIELDS = (
    "reward", "reward_std", "kl", "clip_ratio", "loss", "proxy_score", "gold_score", "mean_kl",
)
WORLD_GRPO_SUMMARY_FIELDS = (
    "final_proxy_score", "final_gold_score", "final_kl", "mean_score", "mean_reward_std", "mean_kl", "clip_frac",
    "mean_loss",
)
# A step's record in the order it is checked (Rust's GrpoOutcome::nonfinite_key).
STEP_KEYS = ("score", "reward_std", "kl", "clip_frac", "loss")
MEAN_KEYS = ("proxy_score", "gold_score", "mean_kl")
HISTORY_KEYS = ("prompt", "tokens", *STEP_KEYS, *MEAN_KEYS)


class WorldGrpoRun:
    """A GRPO run in a world on one stream: what :func:`train_world_grpo` and the sweep share."""

    def __init__(self, world: WorldTables, theta: list[list[float]], params: GrpoParams, seed_key: list[int]):
        check_group_tokens(params.num_generations, world.response_len)
        self.world = world
        self.theta = theta
        self.params = params
        self.rng = from_key(seed_key)
        self.prompts = range(world.n_prompts)
        self.draws = range(params.num_generations * world.response_len)
        self.exact = ExactMeans(world)

    def _diverged(self, name: str, t: int, key: str) -> FloatingPointError:
        return FloatingPointError(
            f"{name} diverged at step {t}: {key} overflowed (lr={self.params.lr!r}, beta={self.params.beta!r})"
        )

    def step(self, t: int, name: str) -> tuple[int, GrpoOutcome, list[int]]:
        """Step ``t``: ``prompt = rng.choice(prompts)``, ``G L`` draws of ``rng.random()``, one bag
        GRPO step; returns the prompt, the outcome and the tokens. A step whose logits overflow,
        or whose record holds a float that is not finite, raises ``FloatingPointError`` that
        ``name`` (``train_world_grpo``, ``sweep run 3``) begins."""
        rng = self.rng
        x = rng.choice(self.prompts)
        uniforms = [rng.random() for _ in self.draws]
        logits = self.theta[x]
        out, tokens = bag_grpo_update(logits, self.world.ref_log_probs[x], self.world.weights, uniforms, self.params)
        self.exact.changed(x)
        if checks.overflowed(logits):
            raise self._diverged(name, t, "logits")
        if (key := checks.non_finite(STEP_KEYS, out)) is not None:
            raise self._diverged(name, t, key)
        return x, out, tokens

    def recorded_means(self, t: int, name: str) -> WorldStats:
        """The exact means over prompts after step ``t``, or the ``FloatingPointError`` naming the first not finite."""
        means = self.exact.means(self.world, self.theta)
        if (key := checks.non_finite(MEAN_KEYS, means)) is not None:
            raise self._diverged(name, t, key)
        return means


def train_world_grpo(
    world: WorldTables,
    theta: list[list[float]],
    steps: int,
    seed_key: list[int],
    params: GrpoParams,
    name: str = "train_world_grpo",
) -> dict[str, list]:
    """``steps`` GRPO steps in ``world`` on the stream of ``random.Random(seed)``.

    ``theta`` (one row of logits per prompt; a world's runs start at a copy of its
    ``ref_logits``) is updated in place. Returns the per-step history (``HISTORY_KEYS``): the
    prompt, the group's tokens (a list per step, response after response), the step's record
    and the exact means over prompts after the step. A run whose logits overflow, or whose
    record (the step's, then the means) holds a float that is not finite, raises
    ``FloatingPointError`` naming the run (``name``), the step, ``lr`` and ``beta``; ``theta``
    then holds the failing step's update.
    """
    run = WorldGrpoRun(world, theta, params, seed_key)
    history: dict[str, list] = {key: [] for key in HISTORY_KEYS}
    for t in range(steps):
        x, out, tokens = run.step(t, name)
        means = run.recorded_means(t, name)
        history["prompt"].append(x)
        history["tokens"].append(tokens)
        for key in STEP_KEYS:
            history[key].append(getattr(out, key))
        for key, value in zip(MEAN_KEYS, means):
            history[key].append(value)
    return history


class WorldGrpoRunSpec(NamedTuple):
    """One run of a world GRPO sweep: its stream and its step's parameters."""

    seed_key: list[int]
    params: GrpoParams


class WorldGrpoEngine:
    """The world GRPO sweep engine: every run from the world's reference policy."""

    history_fields: tuple[str, ...] = WORLD_GRPO_HISTORY_FIELDS
    summary_fields: tuple[str, ...] = WORLD_GRPO_SUMMARY_FIELDS

    def __init__(self, world: WorldTables, steps: int, record_every: int):
        self.world = world
        self.steps = steps
        self.record_every = record_every
        self.kept = steps // record_every if record_every else 0
        self.param_shape: tuple[int, ...] = (world.n_prompts, world.vocab_size)

    def run(self, spec: WorldGrpoRunSpec, index: int) -> RunOutput:
        theta = [list(row) for row in self.world.ref_logits]
        run = WorldGrpoRun(self.world, theta, spec.params, spec.seed_key)
        name = f"sweep run {index}"
        every = self.record_every
        # The driver keeps steps every-1, 2 every-1, ...: only those means are computed.
        history = {field: [math.nan] * self.steps if every else [] for field in self.history_fields}
        records: dict[str, list[float]] = {key: [] for key in STEP_KEYS}
        for t in range(self.steps):
            _, out, _ = run.step(t, name)
            for key in STEP_KEYS:
                records[key].append(getattr(out, key))
            if every and (t + 1) % every == 0:
                means = run.recorded_means(t, name)
                for field, value in zip(self.history_fields, (*out, *means)):
                    history[field][t] = value
        summary = [*run.exact.means(self.world, theta), *(mean(records[key]) for key in STEP_KEYS)]
        check_summary(self.summary_fields, summary, index, spec.params.lr, spec.params.beta)
        return RunOutput(history, theta, summary)

    def work(self, spec: WorldGrpoRunSpec) -> int:
        return self.steps


def sweep_world_grpo(
    ref_logits: Any,
    weights: Any,
    gold_token: Any,
    count_once: Any,
    response_len: Any,
    steps: Any,
    runs: Sequence[tuple],
    record_every: Any = 1,
    n_threads: int | None = None,
    progress: Callable[[int], None] | None = None,
    max_memory: int | None = None,
) -> dict[str, Any]:
    """Every GRPO run of ``runs`` in the world of these tables, from its reference policy.

    The tables as :func:`~.world_ppo.sweep_world_rlhf` takes them. A run is ``(seed,
    num_generations, beta, epsilon, epsilon_high_or_None, lr, scale_rewards,
    num_iterations)``: :func:`train_world_grpo` from a copy of ``ref_logits``, keeping every
    ``record_every``-th step. Returns the sweep contract's dict (:func:`~.driver.sweep`); the
    summary holds the final policy's exact means, then the means over all steps of the
    group's score, reward std, KL, clip fraction and loss. ``n_threads`` chooses how Rust
    computes; the reference computes one way.
    """
    record_every = checks.int64("record_every", record_every)  # the core converts it with the runs
    ref_logits = checks.float_array("ref_logits", ref_logits, 2)
    weights = checks.float_array("weights", weights, 1)
    gold_token = checks.float_array("gold_token", gold_token, 2)
    count_once = checks.boolean("count_once", count_once)
    response_len = checks.int64("response_len", response_len)
    steps = checks.count("steps", steps, 1)
    record_every = checks.count("record_every", record_every, 0)
    world = WorldTables.new(ref_logits, weights, gold_token, count_once, response_len)
    specs = [
        WorldGrpoRunSpec(
            seed_key(checks.integer("seed", seed)),
            GrpoParams.new(num_generations, beta, epsilon, epsilon_high, lr, scale_rewards, num_iterations),
        )
        for seed, num_generations, beta, epsilon, epsilon_high, lr, scale_rewards, num_iterations in runs
    ]
    for spec in specs:
        check_group_tokens(spec.params.num_generations, response_len)
    return sweep(WorldGrpoEngine(world, steps, record_every), specs, max_memory, progress)
