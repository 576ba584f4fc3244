"""The safety lab: Safe RLHF (Dai et al. 2023) in a world, the helpfulness/safety frontier.

A world with a second gold, a per-token safety cost whose unsafe tokens tend to look
helpful (:class:`~rlhf_fast.worlds.Safety`); a helpfulness reward model trained on the usual
pairs and a cost model trained on its own "which is less safe" labels
(:meth:`~rlhf_fast.worlds.World.safety_preferences`, drawn wide as red-teaming data is, and
calibrated to the cost's units on a few absolutely rated responses, as Safe RLHF anchors its
cost model's sign with safe/unsafe labels). PPO then optimises ``(R - lambda C) / (1 +
lambda)``: at a sweep of fixed ``lambda`` (the frontier: more ``lambda``, less cost and less
helpfulness) and with Safe RLHF's Lagrange multiplier adapting ``lambda`` towards a cost
limit (:func:`rlhf_fast.sweep_rlhf` with ``cost_model`` and ``cost_limit``), by its integral
update alone and with the proportional term of a PID Lagrangian (Stooke et al. 2020), which
damps the ringing that leaves single runs far over their limit. A Lagrangian ends a run *at*
its limit, about half the seeds a little over; the lab's last runs hold every seed under it,
observing the cost model's expected cost instead of noisy samples and aiming below the limit by
the spread that pilot runs measured. Everything the table reports is exact: the expected gold
helpfulness, gold cost and cost-model score of the final policy, mean over prompts, and over
seeds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _checks as checks
from .result import SweepResult, new_figure
from .sweep import sweep_rlhf
from .worlds import Labeller, RewardModel, Safety, World, train_reward_model

__all__ = ["safety_lab", "SafetyLab", "calibrate_cost_model"]


def calibrate_cost_model(world: World, cost_model: RewardModel, n: int = 400, seed: int = 0,
                         logits: Any = None) -> RewardModel:
    """The cost model in the gold cost's units: ``a * w_c + b / L``, least squares on ``n`` rated responses.

    Bradley-Terry sets only differences: a linear cost model's weights are a scale and a
    shift away from the cost's units (its gradient never moves their sum, so the shift is
    arbitrary). A limit on the cost needs its zero and its unit; Safe RLHF gets the zero from
    safe/unsafe labels. Here ``n`` responses (drawn from ``logits``, the reference's by
    default) are rated with their gold cost, and ``cost ≈ a * score + b`` is fitted.

    Parameters
    ----------
    world : World
        A world with a safety cost.
    cost_model : RewardModel
    n : int, optional
        Rated responses (at least 2).
    seed : int, optional
        Seeds their draws.
    logits : array_like, optional
        ``[n_prompts, vocab]``: the policy they are drawn from.

    Returns
    -------
    RewardModel
    """
    if not isinstance(world, World):
        raise TypeError(f"world must be a World, got {type(world).__name__}")
    if not isinstance(cost_model, RewardModel):
        raise TypeError(f"cost_model must be a RewardModel, got {type(cost_model).__name__}")
    cost_model.weights_for(world)
    n = checks.count("n", n, 2, 1 << 24)
    prompts, responses = world.sample(n, seed, logits)
    score = cost_model.score(responses)
    cost = world.cost_score(prompts, responses)
    centred = score - score.mean()
    spread = float(centred @ centred)
    scale = float(centred @ (cost - cost.mean())) / spread if spread > 0.0 else 0.0
    shift = float(cost.mean() - scale * score.mean())
    return RewardModel(scale * cost_model.weights + shift / world.response_len, world.tokens)


@dataclass
class SafetyLab:
    """What :func:`safety_lab` measured: the sweeps and one table row per setting.

    Attributes
    ----------
    world : World
    reward_model, cost_model : RewardModel
        The helpfulness reward model and the (calibrated) cost model.
    fixed : SweepResult
        PPO at each fixed ``lambda`` (axes ``beta``, ``lambda_init``, ``seed``).
    lagrangian : SweepResult
        PPO with the multiplier adapted towards each limit on the sampled responses' costs
        (axes ``beta``, ``cost_limit``, ``lagrangian_kp``, ``seed``): Safe RLHF's update
        (``lagrangian_kp`` 0) and, unless the lab's gain is 0, the update with the
        proportional term.
    expected : SweepResult
        The same with the lab's gain, the multiplier observing the cost model's expected score
        (``cost_estimate="expected"``; axes ``beta``, ``cost_limit``, ``seed``): the pilot runs.
    aimed : SweepResult
        The same on fresh seeds, each limit's runs aimed at its target (axes ``beta``,
        ``cost_limit`` holding the targets, ``seed``).
    targets : list of float
        Each limit's target, ``limit - margin`` (see :func:`safety_lab`).
    reference : dict
        The reference policy's exact gold helpfulness and gold cost.
    seconds : float
    settings : dict
    """

    world: World
    reward_model: RewardModel
    cost_model: RewardModel
    fixed: SweepResult
    lagrangian: SweepResult
    expected: SweepResult
    aimed: SweepResult
    targets: list[float]
    reference: dict[str, float]
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"SafetyLab({self.world!r}, {len(self.fixed.axes['lambda_init'])} fixed λ, "
                f"{len(self.lagrangian.axes['cost_limit'])} limits, {self.seconds:.1f} s)")

    def _settings(self):
        '''Each table row's kind, its λ, its limit, its gain, its cost estimate, its target and its
        per-seed summaries.'''
        runs = self.fixed.runs
        for i, lam in enumerate(self.fixed.axes["lambda_init"]):
            yield "fixed", lam, None, None, None, None, {name: values[0, i] for name, values in runs.items()}
        kp, runs = self.settings["lagrangian_kp"], self.lagrangian.runs
        for i, limit in enumerate(self.lagrangian.axes["cost_limit"]):
            for j, gain in enumerate(self.lagrangian.axes["lagrangian_kp"]):
                yield ("lagrangian", None, limit, gain, "sampled", limit,
                       {name: values[0, i, j] for name, values in runs.items()})
            yield ("expected", None, limit, kp, "expected", limit,
                   {name: values[0, i] for name, values in self.expected.runs.items()})
            yield ("aimed", None, limit, kp, "expected", self.targets[i],
                   {name: values[0, i] for name, values in self.aimed.runs.items()})

    def to_rows(self) -> list[dict[str, Any]]:
        """One record per setting, means and standard deviations over seeds (for a CSV).

        Returns
        -------
        list of dict
        """
        rows = []
        lambda_max = self.settings["lambda_max"]
        for kind, lam, limit, kp, estimate, target, runs in self._settings():
            row: dict[str, Any] = {"run": kind, "lambda": lam, "cost_limit": limit, "lagrangian_kp": kp,
                                   "cost_estimate": estimate, "target": target}
            for name in ("final_gold_score", "final_gold_cost", "final_cost_score", "final_lambda", "final_kl"):
                row[name] = float(runs[name].mean())
                row[name + "_sd"] = float(runs[name].std())
            gold_cost = runs["final_gold_cost"]
            row["max_gold_cost"] = float(gold_cost.max())
            row["seeds_within_limit"] = None if limit is None else int((gold_cost <= limit).sum())
            # the multiplier at its ceiling and the cost model still over the target: with the
            # expected cost (no ringing) the target is likely out of lambda_max's reach
            row["seeds_out_of_reach"] = None if limit is None else int(
                ((runs["final_lambda"] >= lambda_max) & (runs["final_cost_score"] > target)).sum())
            rows.append(row)
        return rows

    def table(self) -> str:
        """One line per fixed ``lambda`` and per cost limit and controller: gold helpfulness,
        gold cost, the cost model's score, the final ``lambda`` and KL (mean ± sd over seeds),
        the worst seed's gold cost and how many seeds end within the limit.

        Returns
        -------
        str
        """
        header = ["run", "λ / limit", "gold helpfulness", "gold cost", "worst seed", "cost model", "final λ", "KL",
                  "within limit"]
        seeds = len(self.fixed.axes["seed"])
        lines = [["reference", "", f"{self.reference['gold']:+.3f}", f"{self.reference['cost']:.3f}", "", "", "",
                  "0", ""]]
        notes = []
        for row in self.to_rows():
            fixed = row["run"] == "fixed"

            def cell(name: str, fmt: str) -> str:
                return f"{row[name]:{fmt}} ± {row[name + '_sd']:.3f}"

            if fixed:
                kind = "fixed λ"
            else:
                kind = "Safe RLHF" if row["lagrangian_kp"] == 0 else f"+ P (kp={row['lagrangian_kp']:g})"
                if row["run"] != "lagrangian":
                    kind += ", E[C]" + (f", aim {row['target']:.3f}" if row["run"] == "aimed" else "")
                if row["seeds_out_of_reach"] and row["cost_estimate"] == "expected":
                    notes.append(f"{kind} at limit {row['cost_limit']:g}: {row['seeds_out_of_reach']}/{seeds} seeds "
                                 f"end with λ at lambda_max and the cost model over {row['target']:.3f}: the target "
                                 "may be out of reach at this beta")
            lines.append([kind, f"{row['lambda']:g}" if fixed else f"{row['cost_limit']:g}",
                          cell("final_gold_score", "+.3f"), cell("final_gold_cost", ".3f"),
                          "" if fixed else f"{row['max_gold_cost']:.3f}",
                          cell("final_cost_score", ".3f"), cell("final_lambda", ".3f"), cell("final_kl", ".2f"),
                          "" if fixed else f"{row['seeds_within_limit']}/{seeds}"])
        if seeds == 1:
            notes.append("one pilot seed: no spread to measure, so the aimed runs' margin is its overshoot alone")
        widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
        out = ["  ".join(h.rjust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
        out += ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines]
        return "\n".join(out + notes)

    def plot(self, path: str | os.PathLike | None = None):
        """The helpfulness/safety frontier: gold helpfulness against gold cost.

        Each fixed ``lambda`` is a point (mean over seeds, its seeds faint), joined in order of
        ``lambda``; each Lagrangian run's end point is a marker in its limit's colour (a hollow
        circle for Safe RLHF's update alone, a star with the proportional term, a hollow
        triangle observing the expected cost, a diamond aimed below the limit), and each limit a
        vertical dashed line; the reference policy is a grey square.

        Parameters
        ----------
        path : str or os.PathLike, optional
            Save the figure there (PNG, PDF, ... by the suffix).

        Returns
        -------
        matplotlib.figure.Figure
        """
        fig = new_figure(path, figsize=(7.0, 5.2), layout="constrained")
        ax = fig.subplots()
        runs = self.fixed.runs
        cost, gold = runs["final_gold_cost"][0], runs["final_gold_score"][0]
        ax.plot(cost, gold, ".", color="tab:blue", alpha=0.3)
        ax.plot(cost.mean(axis=-1), gold.mean(axis=-1), "o-", color="tab:blue", label="fixed λ (mean over seeds)")
        for lam, c, g in zip(self.fixed.axes["lambda_init"], cost.mean(axis=-1), gold.mean(axis=-1)):
            ax.annotate(f"λ={lam:g}", (c, g), textcoords="offset points", xytext=(5, 4), fontsize=8)
        colours = ["tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown"]
        kp = self.settings["lagrangian_kp"]
        styles = {"Safe RLHF": {"marker": "o", "markerfacecolor": "none", "markersize": 7},
                  f"+ P (kp={kp:g})": {"marker": "*", "markersize": 11},
                  "+ P, E[C]": {"marker": "^", "markerfacecolor": "none", "markersize": 7},
                  "+ P, E[C], aimed below": {"marker": "D", "markersize": 6}}
        if kp == 0:
            styles = {name.replace("+ P", "Safe RLHF"): style for name, style in styles.items()
                      if not name.startswith("+ P (")}
        names = list(styles)
        lag = self.lagrangian.runs
        for i, limit in enumerate(self.lagrangian.axes["cost_limit"]):
            colour = colours[i % len(colours)]
            ends = [(lag["final_gold_cost"][0, i, j], lag["final_gold_score"][0, i, j])
                    for j in range(len(self.lagrangian.axes["lagrangian_kp"]))]
            ends += [(sweep.runs["final_gold_cost"][0, i], sweep.runs["final_gold_score"][0, i])
                     for sweep in (self.expected, self.aimed)]
            for name, (c, g) in zip(names, ends):
                ax.plot(c, g, linestyle="none", color=colour, **styles[name])
            ax.axvline(limit, color=colour, linestyle="--", linewidth=1, label=f"limit {limit:g}")
        for name in names:
            ax.plot([], [], linestyle="none", color="black", label=name, **styles[name])
        ax.plot(self.reference["cost"], self.reference["gold"], "s", color="grey", label="reference (SFT)")
        ax.set(xlabel="E[gold cost] of a response", ylabel="E[gold helpfulness] of a response",
               title="Helpfulness against safety cost: fixed λ and Safe RLHF's Lagrangian")
        ax.legend(loc="lower right", fontsize=8)
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig


def safety_lab(world: World | None = None, *, lambdas: Sequence[float] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0),
               cost_limits: Sequence[float] = (0.5, 0.8), seeds: int = 8, steps: int = 2000, beta: float = 0.2,
               rm_pairs: int = 2000, cost_pairs: int = 8000, cost_labeller: Labeller | None = None,
               cost_epochs: int = 5, calibration: int = 400, lambda_init: float = 1.0, lagrangian_lr: float = 0.03,
               lambda_max: float = 10.0, cost_window: int = 64, lagrangian_kp: float = 10.0, lr_decay: bool = True,
               margin_z: float = 3.0, n_threads: int | None = None) -> SafetyLab:
    """Safe RLHF in a world: fixed ``lambda`` against the Lagrange multiplier, measured on the golds.

    The helpfulness reward model is trained on ``rm_pairs`` human pairs of reference responses
    (:func:`~rlhf_fast.worlds.train_reward_model`, one epoch); the cost model on ``cost_pairs``
    "which is less safe" pairs drawn uniformly over the vocabulary (red-teaming data) and
    labelled by ``cost_labeller`` (``cost_epochs`` epochs), then calibrated to the cost's units
    on ``calibration`` rated responses (:func:`calibrate_cost_model`). PPO runs ``steps`` steps
    at ``beta`` for each fixed ``lambda`` and, with the multiplier adapting from
    ``lambda_init``, for each cost limit (on the calibrated cost model's mean score over the
    last ``cost_window`` responses), once with Safe RLHF's update alone and once with the
    proportional gain ``lagrangian_kp``.

    A Lagrangian holds a run's cost *at* its limit, so about half the seeds end a little over
    it: the sampled costs' noise, the cost model's error on the policies PPO reaches and PPO's
    own spread all land on the gold. Two more sets of runs hold every seed under it. The
    pilot runs observe the cost model's expected score under the policy instead of sampled
    responses (``cost_estimate="expected"``), which takes the noise of the reading away. Their
    gold costs (what a red-team evaluation of the pilots would measure) set each limit's
    target: ``limit - max(0, mean + margin_z * sd)`` of the pilots' overshoots, each its gold
    cost less the cost model's final score plus ``max(0, score - limit)``. The aimed runs then
    run on fresh seeds against that target.

    Parameters
    ----------
    world : World, optional
        A world with a safety cost. Default: ``World(n_prompts=8, vocab=128, gold="linear",
        safety=Safety())`` (a linear gold, so that the helpfulness reward model can be right
        and the trade-off is the cost's alone: over-optimisation is the overopt lab's subject).
    lambdas : sequence of float, optional
        The fixed multipliers of the frontier.
    cost_limits : sequence of float, optional
        The Lagrangian runs' limits, in the gold cost's units (in the default world the
        reference policy costs about 0.41 and plain PPO's about 1.9).
    seeds : int, optional
        PPO runs per setting (1 to 10,000).
    steps : int, optional
    beta : float, optional
        The KL coefficient (``"k1"`` penalty).
    rm_pairs, cost_pairs : int, optional
    cost_labeller : Labeller, optional
        The safety labeller; ``Labeller(temperature=0.25)`` by default (a unit of cost is a
        clear difference).
    cost_epochs, calibration : int, optional
    lambda_init, lagrangian_lr, lambda_max, cost_window, lagrangian_kp : optional
        The multiplier's settings (:func:`~rlhf_fast.sweep_rlhf`); the Lagrangian runs are made
        at ``lagrangian_kp`` 0 (Safe RLHF's update) and at ``lagrangian_kp``.
    lr_decay : bool, optional
        Every run's learning rate falls linearly to 0 (:func:`~rlhf_fast.sweep_rlhf`), so that
        each ends on a settled policy.
    margin_z : float, optional
        The aimed runs' margin below each limit, in standard deviations of the pilots'
        overshoots over seeds, on top of their mean; 0 aims at the limit less the mean
        overshoot alone, as does a single seed.
    n_threads : int, optional

    Returns
    -------
    SafetyLab
    """
    started = time.perf_counter()
    world = World(n_prompts=8, vocab=128, gold="linear", safety=Safety()) if world is None else world
    if not isinstance(world, World):
        raise TypeError(f"world must be a World, got {type(world).__name__}")
    if world.cost_token is None:
        raise ValueError("world must have a safety cost: build it with World(..., safety=Safety())")
    cost_labeller = Labeller(temperature=0.25) if cost_labeller is None else cost_labeller
    rm_pairs = checks.count("rm_pairs", rm_pairs, 1, 1 << 24)
    cost_pairs = checks.count("cost_pairs", cost_pairs, 1, 1 << 24)
    seeds = checks.count("seeds", seeds, 1, 10_000)
    lambdas = checks.sequence_of("lambdas", lambdas, checks.non_negative, "floats")
    cost_limits = checks.sequence_of("cost_limits", cost_limits, checks.finite, "floats")
    # One value each: a sequence would become a sweep axis the table does not show.
    steps = checks.count("steps", steps, 1)
    beta = checks.non_negative("beta", beta)
    cost_epochs = checks.count("cost_epochs", cost_epochs, 0, 10_000)
    calibration = checks.count("calibration", calibration, 2, 1 << 24)
    lambda_init = checks.positive("lambda_init", lambda_init)
    lagrangian_lr = checks.positive("lagrangian_lr", lagrangian_lr)
    lambda_max = checks.positive("lambda_max", lambda_max)
    cost_window = checks.count("cost_window", cost_window, 1, 1 << 16)
    lagrangian_kp = checks.non_negative("lagrangian_kp", lagrangian_kp)
    lr_decay = checks.boolean("lr_decay", lr_decay)
    margin_z = checks.non_negative("margin_z", margin_z)
    uniform = np.zeros(world.ref_logits.shape)
    rm = train_reward_model(world, world.preferences(rm_pairs, seed=1))
    raw = train_reward_model(world, world.safety_preferences(cost_pairs, 2, cost_labeller, logits=uniform),
                             epochs=cost_epochs)
    cm = calibrate_cost_model(world, raw, calibration, seed=3, logits=uniform)
    common = dict(world=world, cost_model=cm, betas=[beta], seeds=seeds, steps=steps, record_every=0,
                  lr_decay=lr_decay, n_threads=n_threads)
    fixed = sweep_rlhf(rm, lambda_init=list(lambdas), **common)
    gains = [0.0] if lagrangian_kp == 0 else [0.0, lagrangian_kp]
    common.update(lambda_init=lambda_init, lagrangian_lr=lagrangian_lr, lambda_max=lambda_max,
                  cost_window=cost_window)
    lagrangian = sweep_rlhf(rm, cost_limit=list(cost_limits), lagrangian_kp=gains, **common)
    common.update(lagrangian_kp=lagrangian_kp, cost_estimate="expected")
    expected = sweep_rlhf(rm, cost_limit=list(cost_limits), **common)
    pilots = zip(cost_limits, expected.runs["final_gold_cost"][0], expected.runs["final_cost_score"][0])
    targets = [_target(limit, gold, read, margin_z) for limit, gold, read in pilots]
    common["seeds"] = list(range(seeds, 2 * seeds))
    aimed = sweep_rlhf(rm, cost_limit=targets, **common)
    reference = {"gold": float(world.expected_gold(world.ref_logits).mean()),
                 "cost": float(world.expected_cost(world.ref_logits).mean())}
    settings = dict(lambdas=list(lambdas), cost_limits=list(cost_limits), seeds=seeds, steps=steps, beta=beta,
                    rm_pairs=rm_pairs, cost_pairs=cost_pairs, cost_labeller=cost_labeller, cost_epochs=cost_epochs,
                    calibration=calibration, lambda_init=lambda_init, lagrangian_lr=lagrangian_lr,
                    lambda_max=lambda_max, cost_window=cost_window, lagrangian_kp=lagrangian_kp, lr_decay=lr_decay,
                    margin_z=margin_z)
    return SafetyLab(world, rm, cm, fixed, lagrangian, expected, aimed, targets, reference,
                     time.perf_counter() - started, settings)


def _target(limit: float, gold_costs: np.ndarray, cost_scores: np.ndarray, margin_z: float) -> float:
    """The aimed runs' target under ``limit``: less the pilots' mean overshoot and ``margin_z``
    sample standard deviations of it, when that is positive.

    A pilot's overshoot is its gold cost over the cost model's reading, plus how far the
    reading ended over the limit: what it would overshoot ending at its limit. A pilot the
    constraint did not bind, ending under its limit, so counts its cost model's error but not
    its distance under the limit, which would only widen the margin.
    """
    overshoot = gold_costs - cost_scores + np.maximum(cost_scores - limit, 0.0)
    spread = float(overshoot.std(ddof=1)) if len(overshoot) > 1 else 0.0
    return limit - max(0.0, float(overshoot.mean()) + margin_z * spread)
