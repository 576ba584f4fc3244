"""The over-optimisation lab: Goodhart's law in a world, measured (Gao, Schulman & Hilton 2022).

For reward models trained on more and more labelled pairs (from human labels and from an AI
judge), PPO at several KL coefficients and Best-of-N at several ``n`` optimise the learned
proxy; the world's hidden gold says what was really gained. Everything is plotted against
``d = sqrt(KL(pi || ref))``, gold relative to the reference policy's, with Gao's functional
forms fitted: ``R_bon(d) = d (alpha - beta d)`` and ``R_RL(d) = d (alpha - beta log d)``.

The lesson names three fixes, and each is a column of the table: *stop early* (the guard:
stop when the gold, evaluated every ``record_every`` steps, has fallen ``patience`` times in a
row while the proxy rose), *raise beta* (the final point of each run with ``beta > 0``), and
*broaden the RM's data* (the rows, by ``rm_pairs``). Gao's finding about beta — that a KL
penalty moves a run along the gold-against-KL curve, like stopping early, rather than lifting
it — is checked: each ``beta > 0`` run's final gold is set beside the ``beta = 0`` runs' gold
at the same KL.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _checks as checks
from .result import new_figure, text_table
from .worlds import (
    Frontier,
    GaoFit,
    Judge,
    Labeller,
    RewardModel,
    World,
    _rm_weights,
    best_of_n_kl,
    fit_gao,
    softmax_rows,
    train_reward_model,
)

__all__ = ["overoptimization", "Overoptimization", "guard_stop"]

LABELLERS = {"human": Labeller(), "ai": Judge()}
MAX_BON_N = 1 << 16
MAX_BON_DRAWS = 1 << 20
FRONTIER_BETAS = np.geomspace(100.0, 0.01, 40)


def guard_stop(gold: np.ndarray, proxy: np.ndarray, patience: int) -> np.ndarray:
    """Where an over-optimisation guard stops each run: the first record at which the gold has
    fallen ``patience`` records in a row while the proxy rose over them.

    Parameters
    ----------
    gold, proxy : numpy.ndarray
        ``[..., records]``: the gold (evaluated on a hold-out) and the proxy of each record.
    patience : int
        Falls in a row that stop a run.

    Returns
    -------
    numpy.ndarray
        ``[...]`` int: the record index the guard stops at, or the last record where it never fires.

    Examples
    --------
    >>> gold = np.array([0.0, 1.0, 2.0, 1.5, 1.0, 0.5])
    >>> proxy = np.arange(6.0)
    >>> int(rl.overopt.guard_stop(gold, proxy, patience=2))
    4
    """
    patience = checks.count("patience", patience, 1)
    gold = checks.real_array("gold", gold, "an array of records (its last axis)")
    if gold.ndim < 1 or gold.shape[-1] < 1:
        raise ValueError(f"gold must have at least one record (its last axis), got shape {gold.shape}")
    proxy = checks.real_array("proxy", proxy, "an array of records (its last axis)", shape=gold.shape)
    falls = np.diff(gold, axis=-1) < 0.0
    rises = np.diff(proxy, axis=-1) > 0.0
    bad = (falls & rises).astype(np.int64)
    if bad.shape[-1] == 0:  # one record: nothing can fall, the guard stops at it
        return np.zeros(bad.shape[:-1], dtype=np.int64)
    # runs of consecutive bad records: a cumulative count that restarts at every good one
    counts = np.zeros_like(bad)
    running = np.zeros(bad.shape[:-1], dtype=np.int64)
    for k in range(bad.shape[-1]):
        running = (running + 1) * bad[..., k]
        counts[..., k] = running
    fired = counts >= patience
    stop = np.where(fired.any(axis=-1), fired.argmax(axis=-1) + 1, gold.shape[-1] - 1)
    return stop


@dataclass
class Curve:
    """One optimisation of one reward model: points along ``d = sqrt(KL)``, means over seeds.

    ``gold`` and ``proxy`` are relative to the reference policy's; ``gold_spread`` is one
    standard deviation over seeds (zero for Best-of-N, whose points average many draws).
    """

    labeller: str
    rm_pairs: int
    method: str  # "ppo" or "bon"
    setting: float  # beta for PPO, n for Best-of-N
    kl: np.ndarray
    gold: np.ndarray
    proxy: np.ndarray
    gold_spread: np.ndarray
    steps: np.ndarray | None = None  # PPO: the recorded steps

    @property
    def d(self) -> np.ndarray:
        return np.sqrt(np.maximum(self.kl, 0.0))


@dataclass
class Row:
    """One reward model's line of the table."""

    labeller: str
    rm_pairs: int
    label_cost: float
    gold_accuracy: float
    ppo_fit: GaoFit
    bon_fit: GaoFit
    peak_gold: float  # of the beta = 0 PPO curve (mean over seeds)
    peak_kl: float
    final_gold: float
    final_proxy: float
    final_kl: float
    guard_gold: float  # where the guard stopped (mean over seeds)
    guard_kl: float
    beta_finals: dict[float, tuple[float, float, float]]  # beta -> (kl, gold, beta=0 gold at that kl)
    frontier: Frontier  # the proxy's KL-regularised optima, gold relative to the reference's


@dataclass
class Overoptimization:
    """What :func:`overoptimization` measured: curves, fits and one table row per reward model."""

    world: World
    curves: list[Curve]
    rows: list[Row]
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"Overoptimization({self.world!r}, {len(self.rows)} reward models, {len(self.curves)} curves, "
                f"{self.seconds:.1f} s)")

    def table(self) -> str:
        """One line per reward model: its accuracy, where gold peaks, where it ends, the fixes.

        Returns
        -------
        str
        """
        betas = sorted({b for row in self.rows for b in row.beta_finals})
        header = ["labels", "pairs", "gold acc", "peak gold", "at KL", "fit peak KL", "end gold", "end proxy",
                  "end KL", "guard gold", "guard KL", "BoN fit peak KL"]
        header += [f"β={b:g}: gold (β=0 at KL)" for b in betas]
        lines = []
        for row in self.rows:
            line = [row.labeller, f"{row.rm_pairs:,}", f"{row.gold_accuracy:.3f}", f"{row.peak_gold:+.2f}",
                    f"{row.peak_kl:.1f}", _kl(row.ppo_fit.peak_kl), f"{row.final_gold:+.2f}",
                    f"{row.final_proxy:+.2f}", f"{row.final_kl:.1f}", f"{row.guard_gold:+.2f}", f"{row.guard_kl:.1f}",
                    _kl(row.bon_fit.peak_kl)]
            for b in betas:
                kl, gold, along = row.beta_finals[b]
                line.append(f"{gold:+.2f} ({along:+.2f}) at {kl:.1f}")
            lines.append(line)
        return text_table(header, lines)

    def to_rows(self) -> list[dict[str, Any]]:
        """The table as flat records (for a CSV).

        Returns
        -------
        list of dict
        """
        records = []
        for row in self.rows:
            record = {"labeller": row.labeller, "rm_pairs": row.rm_pairs, "label_cost": row.label_cost,
                      "gold_accuracy": row.gold_accuracy, "peak_gold": row.peak_gold, "peak_kl": row.peak_kl,
                      "final_gold": row.final_gold, "final_proxy": row.final_proxy, "final_kl": row.final_kl,
                      "guard_gold": row.guard_gold, "guard_kl": row.guard_kl,
                      "rl_fit_alpha": row.ppo_fit.alpha, "rl_fit_beta": row.ppo_fit.beta,
                      "rl_fit_peak_kl": row.ppo_fit.peak_kl, "bon_fit_alpha": row.bon_fit.alpha,
                      "bon_fit_beta": row.bon_fit.beta, "bon_fit_peak_kl": row.bon_fit.peak_kl}
            for b, (kl, gold, along) in row.beta_finals.items():
                record.update({f"beta_{b:g}_kl": kl, f"beta_{b:g}_gold": gold, f"beta_{b:g}_gold_at_same_kl": along})
            records.append(record)
        return records

    def plot(self, path: str | os.PathLike | None = None):
        """Gold (solid) and proxy (dashed) against ``d = sqrt(KL)``, one panel per labeller.

        Colour is the RM's data; PPO at beta = 0 is a line with its band over seeds, its
        fitted ``R_RL`` thin; Best-of-N are diamonds with the fitted ``R_bon``; the final
        point of each ``beta > 0`` run is a star; the guard's stops are crosses.

        Parameters
        ----------
        path : str or os.PathLike, optional
            Save the figure there (PNG, PDF, ... by the suffix).

        Returns
        -------
        matplotlib.figure.Figure
        """
        labellers = list(dict.fromkeys(row.labeller for row in self.rows))
        fig = new_figure(path, figsize=(6.4 * len(labellers), 5.2), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(labellers), sharey=True))
        sizes = sorted({row.rm_pairs for row in self.rows})
        import matplotlib

        cmap = matplotlib.colormaps["viridis"]
        colour = {n: cmap(0.15 + 0.7 * i / max(1, len(sizes) - 1)) for i, n in enumerate(sizes)}
        for ax, labeller in zip(axes, labellers):
            for row in (r for r in self.rows if r.labeller == labeller):
                c = colour[row.rm_pairs]
                mine = [cv for cv in self.curves if cv.labeller == labeller and cv.rm_pairs == row.rm_pairs]
                ppo = next(cv for cv in mine if cv.method == "ppo" and cv.setting == 0.0)
                ax.plot(ppo.d, ppo.gold, color=c, linewidth=2, label=f"{row.rm_pairs:,} pairs: gold (PPO β=0)")
                ax.fill_between(ppo.d, ppo.gold - ppo.gold_spread, ppo.gold + ppo.gold_spread, color=c, alpha=0.15)
                ax.plot(ppo.d, ppo.proxy, color=c, linestyle="--", linewidth=1)
                front = row.frontier.kl <= ppo.kl.max()
                ax.plot(np.sqrt(row.frontier.kl[front]), row.frontier.gold[front], color=c, linestyle="-.",
                        linewidth=1, alpha=0.8)
                grid = np.linspace(0.0, ppo.d.max(), 100)
                ax.plot(grid, row.ppo_fit(grid), color=c, linewidth=0.8, alpha=0.7)
                bon = [cv for cv in mine if cv.method == "bon"]
                bon_d = np.array([cv.d[0] for cv in bon])
                ax.plot(bon_d, [cv.gold[0] for cv in bon], "D", color=c, markersize=4)
                ax.plot(np.linspace(0, bon_d.max(), 50), row.bon_fit(np.linspace(0, bon_d.max(), 50)), color=c,
                        linestyle=":", linewidth=1)
                for beta, (kl, gold, _) in row.beta_finals.items():
                    ax.plot(math.sqrt(max(kl, 0.0)), gold, "*", color=c, markersize=10)
                ax.plot(math.sqrt(row.guard_kl), row.guard_gold, "x", color=c, markersize=9, markeredgewidth=2)
            ax.axhline(0.0, color="grey", linewidth=0.8)
            ax.set(xlabel="d = sqrt(KL(π || π_ref))", title=f"{labeller} labels")
            ax.legend(loc="lower left", fontsize=8)
        axes[0].set_ylabel("score relative to the reference policy")
        fig.suptitle("Gold (solid) and proxy (dashed) of PPO β=0 against d = sqrt(KL); thin: Gao's R_RL fit\n"
                     "dash-dot: gold along the proxy's optima π ∝ π_ref exp(r/β); Best-of-N ◆ (dotted: R_bon fit)\n"
                     "final points of β > 0 ★; where the guard stops ✕", fontsize=10)
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig


def _kl(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:.1f}"


@dataclass(frozen=True)
class Candidates:
    """Reference responses for Best-of-N: ``draws`` prompts, ``n_max`` responses to each.

    They come from the reference alone, so one set serves every reward model of a lab.
    """

    prompts: np.ndarray  # [draws]
    responses: np.ndarray  # [draws, n_max, response_len]
    gold: np.ndarray  # [draws, n_max]

    @classmethod
    def draw(cls, world: World, draws: int, n_max: int, seed: int) -> Candidates:
        rng = np.random.default_rng(seed)
        prompts = rng.integers(world.n_prompts, size=draws)
        every = np.repeat(prompts, n_max)
        responses = world._respond(rng, every, softmax_rows(world.ref_logits))
        gold = world.gold_score(every, responses)
        return cls(prompts, responses.reshape(draws, n_max, -1), gold.reshape(draws, n_max))


def best_of_n_curve(world: World, rm: RewardModel, ns: Sequence[int], draws: int, seed: int,
                    candidates: Candidates | None = None) -> list[tuple]:
    """Best-of-N against the proxy from the reference: ``(n, kl, gold, proxy)`` per ``n``.

    ``draws`` prompts each get ``max(ns)`` reference responses (``candidates``, or drawn
    with ``seed``); the best of the first ``n`` by the proxy is kept (the first of equals),
    so every ``n`` sees the same draws. Gold and proxy are means over the draws; the KL is
    ``log n - (n - 1) / n``.
    """
    if not isinstance(world, World):
        raise TypeError(f"world must be a World, got {type(world).__name__}")
    _rm_weights("rm", rm, world)
    ns = checks.sequence_of("ns", ns, checks.counts(1, MAX_BON_N), "ints")
    draws = checks.count("draws", draws, 1, MAX_BON_DRAWS)
    checks.fits("draws", draws, 8 * draws * max(ns) * (world.response_len + 3))
    seed = checks.count("seed", seed, 0)
    n_max = max(ns)
    if candidates is None:
        candidates = Candidates.draw(world, draws, n_max, seed)
    draws = len(candidates.prompts)
    proxy = rm.score(candidates.responses.reshape(draws * n_max, -1)).reshape(draws, n_max)
    best = np.maximum.accumulate(proxy, axis=1)
    rows = []
    for n in ns:
        pick = (proxy[:, :n] == best[:, n - 1 : n]).argmax(axis=1)
        rows.append((n, float(best_of_n_kl(n)), float(candidates.gold[np.arange(draws), pick].mean()),
                     float(proxy[np.arange(draws), pick].mean())))
    return rows


def overoptimization(
    world: World | None = None,
    *,
    rm_pairs: Sequence[int] = (300, 3000, 30000),
    labellers: Sequence[str | Labeller | Judge] = ("human", "ai"),
    betas: Sequence[float] = (0.0, 0.2),
    ns: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
    seeds: int = 4,
    steps: int = 2000,
    lr: float = 0.1,
    record_every: int = 50,
    patience: int = 3,
    bon_draws: int = 500,
    progress: bool = False,
) -> Overoptimization:
    """Reward over-optimisation in a world: gold and proxy against KL for PPO and Best-of-N.

    For each labeller and each ``rm_pairs``: pairs of reference responses labelled (seed
    fixed per size), a proxy reward model trained on them (:func:`train_reward_model`, one
    epoch), its held-out gold accuracy on 4,000 fresh pairs; then ``sweep_rlhf`` in the world
    (``kl_penalty="k1"``, value baseline ``vf_coef=1``) over ``betas x seeds`` and Best-of-N
    over ``ns``; Gao's forms fitted to the ``beta = 0`` mean curve and to the Best-of-N points.

    Parameters
    ----------
    world : World, optional
        ``World()`` by default: 16 prompts, 1,024 tokens, responses of 8, a count-once gold
        with a repeat penalty (misspecified for a linear proxy).
    rm_pairs : sequence of int
        Labelled pairs for each reward model.
    labellers : sequence of {"human", "ai"} or of Labeller / Judge
        Human labels (``Labeller()``: Bradley-Terry on the gold) and an AI judge's
        (``Judge()``), or labellers of your own (shown as ``"human"`` / ``"ai"`` and their
        position).
    betas : sequence of float
        PPO's KL coefficients; must include 0 (the over-optimising run the fits use).
    ns : sequence of int
        Best-of-N candidate counts.
    seeds : int
        PPO runs per setting.
    steps : int
        PPO steps per run.
    lr : float
        PPO's learning rate.
    record_every : int
        Every how many steps the gold, proxy and KL are recorded (the guard's evaluations).
    patience : int
        Falls of the gold in a row (while the proxy rises) that make the guard stop a run.
    bon_draws : int
        Prompts Best-of-N is averaged over.
    progress : bool
        A progress bar on stderr.

    Returns
    -------
    Overoptimization

    Raises
    ------
    ValueError
        ``betas`` without 0, an unknown labeller, a bad count; or a reward model whose held-out
        gold accuracy is within two standard errors of chance (nothing to optimise but noise).
    """
    import rlhf_fast as rl

    world = World() if world is None else world
    if not isinstance(world, World):
        raise TypeError(f"world must be a World, got {type(world).__name__}")
    rm_pairs = checks.sequence_of("rm_pairs", rm_pairs, checks.counts(2, 10**7), "ints")
    labellers = dict(_labeller(i, item) for i, item in enumerate(checks.sequence_of(
        "labellers", labellers, lambda name, item: item, "labeller names or labellers")))
    betas = checks.sequence_of("betas", betas, checks.non_negative, "floats")
    if 0.0 not in betas:
        raise ValueError("betas must include 0.0: the over-optimising run the fits and the guard are drawn from")
    ns = checks.sequence_of("ns", ns, checks.counts(1, MAX_BON_N), "ints")
    if len({n for n in ns if n > 1}) < 2:
        raise ValueError(f"ns must hold at least two counts above 1 for the Best-of-N fit, got {ns}")
    seeds = checks.count("seeds", seeds, 1, 10_000)
    steps = checks.count("steps", steps, 1)
    lr = checks.positive("lr", lr)
    record_every = checks.count("record_every", record_every, 1)
    if steps // record_every < 2:
        raise ValueError(f"record_every must leave at least two recorded steps for Gao's fit, got "
                         f"record_every={record_every} with steps={steps}")
    patience = checks.count("patience", patience, 1)
    bon_draws = checks.count("bon_draws", bon_draws, 1, MAX_BON_DRAWS)
    checks.fits("bon_draws", bon_draws, 8 * bon_draws * max(ns) * (world.response_len + 3))
    progress = checks.boolean("progress", progress)
    started = time.perf_counter()
    heldout = world.preferences(4000, seed=10**6)
    candidates = Candidates.draw(world, bon_draws, max(ns), seed=7)
    base_gold = float(world.expected_gold(world.ref_logits).mean())
    from tqdm.auto import tqdm

    curves, rows = [], []
    with tqdm(total=len(labellers) * len(rm_pairs), desc="overopt", unit="RM", disable=not progress,
              leave=False) as bar:
        for labeller, labels in labellers.items():
            for i, n in enumerate(rm_pairs):
                pairs = world.preferences(n, seed=1 + i, labeller=labels)
                rm = train_reward_model(world, pairs, epochs=1)
                accuracy = rm.gold_accuracy(world, heldout)
                _refuse_at_chance(accuracy, len(heldout), f"{n} {labeller}-labelled pairs")
                base_proxy = float(world.expected_score(world.ref_logits, rm).mean())
                result = rl.sweep_rlhf(rm, world=world, betas=betas, seeds=seeds, steps=steps, lr=lr, vf_coef=1.0,
                                       kl_penalty="k1", record_every=record_every)
                gold = result.gold_score - base_gold  # [beta, seed, kept]
                proxy = result.proxy_score - base_proxy
                kl = result.mean_kl
                mine = []
                for b, beta in enumerate(betas):
                    mine.append(Curve(labeller, n, "ppo", beta, kl[b].mean(0), gold[b].mean(0), proxy[b].mean(0),
                                      gold[b].std(0), result.steps + 1))
                for n_bon, kl_bon, gold_bon, proxy_bon in best_of_n_curve(world, rm, ns, bon_draws, seed=0,
                                                                           candidates=candidates):
                    mine.append(Curve(labeller, n, "bon", float(n_bon), np.array([kl_bon]),
                                      np.array([gold_bon - base_gold]), np.array([proxy_bon - base_proxy]),
                                      np.zeros(1)))
                curves += mine
                frontier = Frontier.of(world, rm, FRONTIER_BETAS)
                frontier = Frontier(frontier.betas, frontier.kl, frontier.proxy - base_proxy, frontier.gold - base_gold)
                rows.append(_row(labeller, n, pairs.cost, accuracy, mine, gold, proxy, kl,
                                 betas, patience, frontier, steps, lr))
                bar.update()
    settings = {"rm_pairs": rm_pairs, "labellers": list(labellers), "betas": betas, "ns": ns, "seeds": seeds,
                "steps": steps, "lr": lr, "record_every": record_every, "patience": patience}
    return Overoptimization(world, curves, rows, time.perf_counter() - started, settings)


def _labeller(i: int, item: Any) -> tuple[str, Labeller | Judge]:
    if isinstance(item, (Labeller, Judge)):
        return f"{'human' if isinstance(item, Labeller) else 'ai'} #{i}", item
    name = checks.option("labellers", item, tuple(LABELLERS))
    return name, LABELLERS[name]


def _refuse_at_chance(accuracy: float, n: int, source: str) -> None:
    """An RM that orders held-out gold no better than a coin flip (within two standard errors
    of 0.5 on ``n`` pairs) has nothing to teach a policy; optimising it is pure reward hacking."""
    if accuracy <= 0.5 + 2.0 * math.sqrt(0.25 / n):
        raise ValueError(f"the reward model trained on {source} orders held-out gold pairs no better than chance "
                         f"(accuracy {accuracy:.3f} on {n}): refusing to optimise against it; give it more pairs")


def _row(labeller, n, cost, accuracy, curves, gold, proxy, kl, betas, patience, frontier, steps, lr) -> Row:
    zero = betas.index(0.0)
    ppo = next(cv for cv in curves if cv.method == "ppo" and cv.setting == 0.0)
    try:
        ppo_fit = fit_gao(ppo.d, ppo.gold, "rl")
    except ValueError:
        raise ValueError(
            f"steps={steps} with lr={lr!r} left the beta = 0 PPO run against the {labeller} reward model of {n} "
            f"pairs with fewer than two recorded points of KL > 0, and Gao's fit needs two: give it more steps or "
            f"a larger lr"
        ) from None
    bon = [cv for cv in curves if cv.method == "bon"]
    k = int(ppo.gold.argmax())
    stop = guard_stop(gold[zero], proxy[zero], patience)  # [seed]
    seeds = np.arange(gold.shape[1])
    beta_finals = {}
    for b, beta in enumerate(betas):
        if beta == 0.0:
            continue
        final_kl, final_gold = float(kl[b, :, -1].mean()), float(gold[b, :, -1].mean())
        order = np.argsort(ppo.kl)
        along = float(np.interp(final_kl, ppo.kl[order], ppo.gold[order]))
        beta_finals[beta] = (final_kl, final_gold, along)
    return Row(
        labeller=labeller, rm_pairs=n, label_cost=cost, gold_accuracy=accuracy,
        ppo_fit=ppo_fit,
        bon_fit=fit_gao(np.array([cv.d[0] for cv in bon]), np.array([cv.gold[0] for cv in bon]), "bon"),
        peak_gold=float(ppo.gold[k]), peak_kl=float(ppo.kl[k]), final_gold=float(ppo.gold[-1]),
        final_proxy=float(ppo.proxy[-1]), final_kl=float(ppo.kl[-1]),
        guard_gold=float(gold[zero][seeds, stop].mean()), guard_kl=float(kl[zero][seeds, stop].mean()),
        beta_finals=beta_finals, frontier=frontier,
    )
