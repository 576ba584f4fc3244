"""Twin of rust/engines/world_ppo.rs: PPO-RLHF in a world, one run (:func:`train_world_rlhf`) or many.

A world's responses are bags of ``L`` tokens drawn i.i.d. from the policy; its reward model
is linear in the tokens and a hidden gold reward says what a policy is really worth
(:mod:`rlhf_fast.worlds`). A run starts at the world's reference (SFT) policy and owns its
stream: each step draws the prompt as the lesson does (``rng.choice`` over the prompts), the
response's ``L`` draws of ``rng.random()``, and takes
:func:`~rlhf_fast.reference.methods.ppo.bag_rlhf_step` with a fixed ``beta``. What a run
records besides the step's own record is exact: the means over prompts of the proxy score
``L sum_a pi(a) w(a)``, the gold (``sum_a g(a) (1 - (1 - pi(a))^L)`` when a repeated token
counts once, ``L sum_a pi(a) g(a)`` when every copy counts) and ``L KL(pi || pi_ref)``
(:mod:`~rlhf_fast.reference.methods.world_stats`, which every world engine shares). A step
changes one prompt's row, so only the rows changed since the last record are recomputed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from ... import _checks as checks
from ..._checks import OVERFLOW
from ..methods.ppo import BagOutcome, PpoParams, bag_rlhf_step
from ..methods.world_stats import ExactMeans, WorldStats, WorldTables
from ..rng import from_key, seed_key
from .driver import RunOutput, check_summary, sweep

# The sampled response's record (TRL's names, '/' written '_') and the exact means over prompts.
WORLD_PPO_HISTORY_FIELDS = (
    "objective_scores",
    "objective_rlhf_reward",
    "policy_clipfrac_avg",
    "penalised_kl",
    "proxy_score",
    "gold_score",
    "mean_kl",
)
WORLD_PPO_SUMMARY_FIELDS = ("final_proxy_score", "final_gold_score", "final_kl")
# A step's record in the order it is checked (Rust's BagOutcome::nonfinite_key).
STEP_KEYS = ("score", "kl", "reward", "clip_frac", "kl_penalty", "value_loss")
MEAN_KEYS = ("proxy_score", "gold_score", "mean_kl")
HISTORY_KEYS = ("prompt", "tokens", *STEP_KEYS, *MEAN_KEYS)


class WorldRun:
    """A PPO run in a world on one stream: what :func:`train_world_rlhf` and the sweep share."""

    def __init__(self, world: WorldTables, theta: list[list[float]], params: PpoParams, beta: float,
                 seed_key: list[int]):
        self.world = world
        self.theta = theta
        self.params = params
        self.beta = beta
        self.rng = from_key(seed_key)
        self.prompts = range(world.n_prompts)
        self.draws = range(world.response_len)
        self.values = [0.0] * world.n_prompts  # each prompt's value baseline
        self.means = ExactMeans(world)

    def _diverged(self, name: str, t: int, key: str) -> FloatingPointError:
        return FloatingPointError(
            f"{name} diverged at step {t}: {key} overflowed (lr={self.params.lr!r}, beta={self.beta!r})"
        )

    def step(self, t: int, name: str) -> tuple[int, BagOutcome]:
        """Step ``t``: ``prompt = rng.choice(prompts)``, ``L`` draws of ``rng.random()``, one bag
        step; a step whose logits or value overflow, or whose record holds a float that is not
        finite, raises ``FloatingPointError`` that ``name`` (``train_world_rlhf``, ``sweep run 3``)
        begins."""
        return self.step_with(t, name, self.world.weights)

    def step_with(self, t: int, name: str, weights: Sequence[float]) -> tuple[int, BagOutcome]:
        """:meth:`step` with the reward model's ``weights`` in place of the world's (the safety
        engine's per-step combination of reward and cost)."""
        rng = self.rng
        x = rng.choice(self.prompts)
        uniforms = [rng.random() for _ in self.draws]
        logits = self.theta[x]
        out, self.values[x] = bag_rlhf_step(
            logits, self.world.ref_log_probs[x], weights, uniforms, self.beta, self.params, self.values[x]
        )
        self.means.changed(x)
        if checks.overflowed(logits) or not abs(self.values[x]) < OVERFLOW:
            raise self._diverged(name, t, "logits")
        record = (out.score, out.kl, out.reward, out.clip_frac, out.kl_penalty, out.value_loss)
        if (key := checks.non_finite(STEP_KEYS, record)) is not None:
            raise self._diverged(name, t, key)
        return x, out

    def exact_means(self) -> WorldStats:
        """The exact means over prompts under the current policy (:meth:`ExactMeans.means`)."""
        return self.means.means(self.world, self.theta)

    def recorded_means(self, t: int, name: str) -> WorldStats:
        """:meth:`exact_means` after step ``t``, or the ``FloatingPointError`` naming the first not finite."""
        means = self.exact_means()
        if (key := checks.non_finite(MEAN_KEYS, means)) is not None:
            raise self._diverged(name, t, key)
        return means


def train_world_rlhf(
    world: WorldTables,
    theta: list[list[float]],
    steps: int,
    seed_key: list[int],
    params: PpoParams,
    beta: float,
    name: str = "train_world_rlhf",
) -> dict[str, list]:
    """``steps`` PPO steps in ``world`` with a fixed ``beta`` on the stream of ``random.Random(seed)``.

    ``theta`` (one row of logits per prompt; a world's runs start at a copy of its
    ``ref_logits``) is updated in place, with a zero value baseline per prompt. Returns the
    per-step history (``HISTORY_KEYS``): the prompt, the response's tokens (a list per step),
    the step's record and the exact means over prompts after the step. A run whose logits or
    value overflow, or whose record (the step's, then the means) holds a float that is not
    finite, raises ``FloatingPointError`` naming the run (``name``), the step, ``lr`` and
    ``beta``; ``theta`` then holds the failing step's update.
    """
    run = WorldRun(world, theta, params, beta, seed_key)
    history: dict[str, list] = {key: [] for key in HISTORY_KEYS}
    for t in range(steps):
        x, out = run.step(t, name)
        means = run.recorded_means(t, name)
        history["prompt"].append(x)
        history["tokens"].append(list(out.tokens))
        for key in STEP_KEYS:
            history[key].append(getattr(out, key))
        for key, value in zip(MEAN_KEYS, means):
            history[key].append(value)
    return history


class WorldPpoRun(NamedTuple):
    """One run of a world PPO sweep: its stream, its step's parameters and its fixed beta."""

    seed_key: list[int]
    params: PpoParams
    beta: float


class WorldPpoEngine:
    """The world PPO sweep engine: every run from the world's reference policy."""

    history_fields: tuple[str, ...] = WORLD_PPO_HISTORY_FIELDS
    summary_fields: tuple[str, ...] = WORLD_PPO_SUMMARY_FIELDS

    def __init__(self, world: WorldTables, steps: int, record_every: int):
        self.world = world
        self.steps = steps
        self.record_every = record_every
        self.kept = steps // record_every if record_every else 0
        self.param_shape: tuple[int, ...] = (world.n_prompts, world.vocab_size)

    def run(self, spec: WorldPpoRun, index: int) -> RunOutput:
        theta = [list(row) for row in self.world.ref_logits]
        run = WorldRun(self.world, theta, spec.params, spec.beta, spec.seed_key)
        name = f"sweep run {index}"
        every = self.record_every
        # The driver keeps steps every-1, 2 every-1, ...: only those are computed.
        history = {field: [math.nan] * self.steps if every else [] for field in self.history_fields}
        for t in range(self.steps):
            _, out = run.step(t, name)
            if every and (t + 1) % every == 0:
                means = run.recorded_means(t, name)
                values = (out.score, out.reward, out.clip_frac, out.kl_penalty, *means)
                for field, value in zip(self.history_fields, values):
                    history[field][t] = value
        summary = list(run.exact_means())
        check_summary(self.summary_fields, summary, index, spec.params.lr, spec.beta)
        return RunOutput(history, theta, summary)

    def work(self, spec: WorldPpoRun) -> int:
        return self.steps


def sweep_world_rlhf(
    ref_logits: Any,
    weights: Any,
    gold_token: Any,
    count_once: Any,
    response_len: Any,
    steps: Any,
    runs: Sequence[tuple],
    record_every: Any = 1,
    exact: bool = False,
    n_threads: int | None = None,
    progress: Callable[[int], None] | None = None,
    max_memory: int | None = None,
) -> dict[str, Any]:
    """Every PPO run of ``runs`` in the world of these tables, from its reference policy.

    ``ref_logits`` and ``gold_token`` are float64 ``[n_prompts, vocab]`` arrays, ``weights``
    the reward model's float64 ``[vocab]``, ``count_once`` a bool, ``response_len`` the
    tokens of a response. A run is ``(seed, eps, lr, ppo_epochs, beta, kl_penalty, vf_coef,
    cliprange_value)``: :func:`train_world_rlhf` from a copy of ``ref_logits`` with that fixed
    ``beta``, keeping every ``record_every``-th step. Returns the sweep contract's dict
    (:func:`~.driver.sweep`); the summary holds the final policy's exact means. ``exact`` and
    ``n_threads`` choose how Rust computes (libm's arithmetic, the threads); the reference
    computes one way, libm's.
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
        WorldPpoRun(
            seed_key(checks.integer("seed", seed)),
            PpoParams.new(eps, lr, ppo_epochs, kl_penalty, vf_coef, cliprange_value),
            checks.non_negative("beta", beta),
        )
        for seed, eps, lr, ppo_epochs, beta, kl_penalty, vf_coef, cliprange_value in runs
    ]
    return sweep(WorldPpoEngine(world, steps, record_every), specs, max_memory, progress)
