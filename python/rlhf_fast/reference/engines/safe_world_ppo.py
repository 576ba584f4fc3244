"""Twin of rust/engines/safe_world_ppo.rs: PPO in a world under a safety cost (Safe RLHF).

Each step is world PPO's (:class:`~.world_ppo.WorldRun`) on the combined per-token reward
``(w - lambda w_c) / (1 + lambda)`` (:func:`~..methods.lagrangian.combined_weights`), so the
response's reward is ``(R - lambda C) / (1 + lambda) - beta * penalty``; then the run's
:class:`~..methods.lagrangian.LagrangeMultiplier` observes the cost (the response's cost-model
score, or with ``cost_estimate="expected"`` the cost model's exact expected score under the
updated policy, mean over prompts), and the next step uses the multiplier it leaves. Besides
world PPO's record a run records the exact means over prompts of the cost model's expected
score and of the gold cost (a second world's proxy and linear gold,
:class:`~..methods.world_stats.ExactMeans` on the cost tables) and the multiplier after the
step. With ``lr_decay`` the policy's learning rate falls linearly to 0
over the run (step ``t`` of ``T`` at ``lr * (1 - t / T)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

from ... import _checks as checks
from ..methods.lagrangian import COST_ESTIMATES, LagrangeMultiplier, LagrangeParams, combined_weights
from ..methods.ppo import PpoParams
from ..methods.world_stats import ExactMeans, WorldTables
from ..rng import seed_key
from .driver import RunOutput, check_summary, sweep
from .world_ppo import WorldPpoRun, WorldRun

SAFE_WORLD_PPO_HISTORY_FIELDS = (
    "objective_scores",
    "objective_costs",
    "objective_rlhf_reward",
    "policy_clipfrac_avg",
    "penalised_kl",
    "proxy_score",
    "gold_score",
    "mean_kl",
    "cost_score",
    "gold_cost",
    "lagrange_multiplier",
)
SAFE_WORLD_PPO_SUMMARY_FIELDS = (
    "final_proxy_score", "final_gold_score", "final_kl", "final_cost_score", "final_gold_cost", "final_lambda",
)


class SafeWorldPpoRun(NamedTuple):
    """One run of a safety sweep: world PPO's run, its multiplier's settings, whether its
    learning rate decays linearly to 0 and what cost its multiplier observes."""

    ppo: WorldPpoRun
    lagrange: LagrangeParams
    lr_decay: bool
    cost_estimate: str


class SafeWorldPpoEngine:
    """The safety sweep engine: every run from the world's reference policy."""

    history_fields: tuple[str, ...] = SAFE_WORLD_PPO_HISTORY_FIELDS
    summary_fields: tuple[str, ...] = SAFE_WORLD_PPO_SUMMARY_FIELDS

    def __init__(self, world: WorldTables, cost: WorldTables, steps: int, record_every: int):
        self.world = world
        self.cost = cost
        self.steps = steps
        self.record_every = record_every
        self.kept = steps // record_every if record_every else 0
        self.param_shape: tuple[int, ...] = (world.n_prompts, world.vocab_size)

    def run(self, spec: SafeWorldPpoRun, index: int) -> RunOutput:
        ppo = spec.ppo
        theta = [list(row) for row in self.world.ref_logits]
        run = WorldRun(self.world, theta, ppo.params, ppo.beta, ppo.seed_key)
        multiplier = LagrangeMultiplier(spec.lagrange)
        cost_means = ExactMeans(self.cost)
        weights, cost_weights = self.world.weights, self.cost.weights
        lam = multiplier.value
        combined = combined_weights(weights, cost_weights, lam)
        name = f"sweep run {index}"
        every = self.record_every
        history = {field: [math.nan] * self.steps if every else [] for field in self.history_fields}
        for t in range(self.steps):
            if multiplier.value != lam:
                lam = multiplier.value
                combined = combined_weights(weights, cost_weights, lam)
            if spec.lr_decay:
                run.params = replace(ppo.params, lr=ppo.params.lr * (1.0 - t / self.steps))
            x, out = run.step_with(t, name, combined)
            cost_means.changed(x)
            helpful = cost = 0.0
            for a in out.tokens:
                helpful += weights[a]
                cost += cost_weights[a]
            if spec.cost_estimate == "sampled":
                multiplier.observe(cost)
            else:
                multiplier.observe(cost_means.means(self.cost, theta).proxy_score)
            if every and (t + 1) % every == 0:
                means = run.recorded_means(t, name)
                costs = cost_means.means(self.cost, theta)
                values = (helpful, cost, out.reward, out.clip_frac, out.kl_penalty, *means, costs.proxy_score,
                          costs.gold_score, multiplier.value)
                for field, value in zip(self.history_fields, values):
                    history[field][t] = value
        last = run.exact_means()
        costs = cost_means.means(self.cost, theta)
        summary = [*last, costs.proxy_score, costs.gold_score, multiplier.value]
        check_summary(self.summary_fields, summary, index, ppo.params.lr, ppo.beta)
        return RunOutput(history, theta, summary)

    def work(self, spec: SafeWorldPpoRun) -> int:
        return self.steps


def _renamed(error: ValueError, names: dict[str, str]) -> ValueError:
    message = str(error)
    for old, new in names.items():
        if message.startswith(old):
            return ValueError(new + message[len(old):])
    return error


def sweep_safe_world_rlhf(
    ref_logits: Any,
    weights: Any,
    gold_token: Any,
    count_once: Any,
    response_len: Any,
    steps: Any,
    runs: Sequence[tuple],
    cost_weights: Any,
    gold_cost: Any,
    record_every: Any = 1,
    exact: bool = False,
    n_threads: int | None = None,
    progress: Callable[[int], None] | None = None,
    max_memory: int | None = None,
) -> dict[str, Any]:
    """Every PPO run of ``runs`` in the world of these tables under a cost, from its reference.

    The world's tables are :func:`~.world_ppo.sweep_world_rlhf`'s; ``cost_weights`` the cost
    model's float64 ``[vocab]``, ``gold_cost`` the float64 ``[n_prompts, vocab]`` gold cost of
    each token. A run is ``(seed, eps, lr, ppo_epochs, beta, kl_penalty, vf_coef,
    cliprange_value, lambda_init, cost_limit, lagrangian_lr, lambda_max, cost_window,
    lagrangian_kp, lr_decay, cost_estimate)``,
    ``cost_limit`` None for a fixed multiplier. Returns the sweep contract's dict
    (:func:`~.driver.sweep`).
    """
    record_every = checks.int64("record_every", record_every)
    ref_logits = checks.float_array("ref_logits", ref_logits, 2)
    weights = checks.float_array("weights", weights, 1)
    gold_token = checks.float_array("gold_token", gold_token, 2)
    count_once = checks.boolean("count_once", count_once)
    response_len = checks.int64("response_len", response_len)
    cost_weights = checks.float_array("cost_weights", cost_weights, 1)
    gold_cost = checks.float_array("gold_cost", gold_cost, 2)
    steps = checks.count("steps", steps, 1)
    record_every = checks.count("record_every", record_every, 0)
    world = WorldTables.new(ref_logits, weights, gold_token, count_once, response_len)
    try:
        cost = WorldTables.new(ref_logits, cost_weights, gold_cost, False, response_len)
    except ValueError as error:
        raise _renamed(error, {"weights": "cost_weights", "gold_token": "gold_cost"}) from None
    specs = [
        SafeWorldPpoRun(
            WorldPpoRun(
                seed_key(checks.integer("seed", seed)),
                PpoParams.new(eps, lr, ppo_epochs, kl_penalty, vf_coef, cliprange_value),
                checks.non_negative("beta", beta),
            ),
            LagrangeParams.new(lambda_init, cost_limit, lagrangian_lr, lambda_max, cost_window, lagrangian_kp),
            checks.boolean("lr_decay", lr_decay),
            checks.option("cost_estimate", cost_estimate, COST_ESTIMATES),
        )
        for ((seed, eps, lr, ppo_epochs, beta, kl_penalty, vf_coef, cliprange_value),
             (lambda_init, cost_limit, lagrangian_lr, lambda_max, cost_window, lagrangian_kp, lr_decay,
              cost_estimate)) in runs
    ]
    return sweep(SafeWorldPpoEngine(world, cost, steps, record_every), specs, max_memory, progress)
