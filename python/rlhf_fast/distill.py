"""Reward distillation: a small reward head on frozen features, fitted to a large reward model.

A production pipeline often serves a *distilled* reward model: a small head on a frozen
backbone's features, trained to reproduce a large reward model's scores. Here the backbone is a
fixed random projection of the vocabulary to ``dim`` numbers per token (``phi``, ``[vocab,
dim]``, entries ``N(0, 1/dim)``), so the student's score of a bag ``y`` is
``b + theta . sum_i phi[y_i]`` and its token weights ``phi @ theta`` live in a
``dim``-dimensional subspace of the teacher's ``vocab``-dimensional ones. The head is fitted by
SGD on the squared error to the teacher's scores of responses drawn from the reference policy
(the data a distillation run has). :func:`distillation` measures what the student's size does to
reward over-optimisation: the rule "refuse a reward model smaller than the target policy" from
the lesson's Ship-It list, with numbers.

The SGD runs in the Rust core (``rust/engines/distill.rs``) or, with
``RLHF_FAST_BACKEND=python``, in its pure-Python twin (``reference/engines/distill.py``); the
projection and the responses are NumPy's PCG64 draws under either backend.
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
from ._backend import BACKEND
from .result import new_figure, text_table
from .worlds import Frontier, RewardModel, World, train_reward_model

__all__ = ["Distilled", "distill_reward_model", "Distillation", "distillation"]

# A student has at most this many features (rust/engines/distill.rs MAX_FEATURES).
MAX_FEATURES = 1 << 16
# The optima pi ∝ ref exp(r / beta) the frontier peak is read from (overopt.FRONTIER_BETAS).
FRONTIER_BETAS = np.geomspace(100.0, 0.01, 40)

if BACKEND == "rust":
    from ._core import distill_reward_model as _fit_head
else:
    from .reference.engines.distill import distill_reward_model as _reference_fit

    def _fit_head(phi: np.ndarray, responses: np.ndarray, targets: np.ndarray, epochs: int, lr: float):
        theta, bias, mse = _reference_fit(phi.tolist(), responses.tolist(), targets.tolist(), epochs, lr)
        return np.array(theta, dtype=np.float64), bias, np.array(mse, dtype=np.float64)


@dataclass(frozen=True, eq=False)
class Distilled:
    """A student reward model distilled from a teacher.

    Attributes
    ----------
    rm : RewardModel
        The student as a reward model of the world: token weights ``phi @ theta + bias / L``
        (the bias spread over the response's ``L`` tokens, so that ``rm.score`` is the
        student's score). Every method that takes a reward model takes it.
    dim : int
        Features per token.
    phi : numpy.ndarray
        ``[vocab, dim]``: the frozen features.
    theta : numpy.ndarray
        ``[dim]``: the fitted head.
    bias : float
    epoch_mse : numpy.ndarray
        Mean squared error to the teacher in each pass (before each response's step).
    heldout_r2 : float
        ``1 - MSE / Var`` of the teacher's scores on fresh reference responses (where those do
        not vary: 1 if the student matches them, 0 if not).
    """

    rm: RewardModel
    dim: int
    phi: np.ndarray
    theta: np.ndarray
    bias: float
    epoch_mse: np.ndarray
    heldout_r2: float

    def __repr__(self) -> str:
        return f"Distilled(dim={self.dim}, vocab={len(self.rm.weights)}, heldout_r2={self.heldout_r2:.3f})"


def distill_reward_model(world: World, teacher: RewardModel, dim: int, *, samples: int = 20_000, epochs: int = 5,
                         lr: float | None = None, seed: int = 0) -> Distilled:
    """Fit a ``dim``-feature student reward head to ``teacher``'s scores.

    Parameters
    ----------
    world : World
        Where the responses come from (its reference policy) and whose vocabulary the
        teacher scores.
    teacher : RewardModel
        The large reward model to imitate.
    dim : int
        Features per token of the frozen random projection (1 to 65,536). At ``dim >= vocab``
        the student can represent the teacher exactly.
    samples : int, optional
        Reference responses the head is fitted on (and as many fresh ones for
        ``heldout_r2``).
    epochs : int, optional
        Passes of SGD over them.
    lr : float, optional
        SGD's step; ``0.5 / (response_len + 1)`` by default: a response's features have a
        squared norm of about ``response_len`` (plus the bias's 1), so each step moves the
        prediction for the response it sees about half way to the teacher's score.
    seed : int, optional
        Seeds the projection and the responses (NumPy's PCG64).

    Returns
    -------
    Distilled

    Raises
    ------
    ValueError
        A bad argument, or a teacher of another vocabulary.
    FloatingPointError
        The SGD diverged (a step too large), naming the epoch.
    """
    if not isinstance(world, World):
        raise TypeError(f"world must be a World, got {type(world).__name__}")
    if not isinstance(teacher, RewardModel):
        raise TypeError(f"teacher must be a RewardModel, got {type(teacher).__name__}")
    if len(teacher.weights) != world.vocab:
        raise ValueError(f"teacher must weigh the world's {world.vocab} tokens, got {len(teacher.weights)} weights")
    weights = teacher.weights
    dim = checks.count("dim", dim, 1, MAX_FEATURES)
    samples = checks.count("samples", samples, 1)
    checks.fits("samples", samples, 16 * samples * (world.response_len + 2))
    epochs = checks.count("epochs", epochs, 0, 10_000)
    lr = 0.5 / (world.response_len + 1) if lr is None else checks.positive("lr", checks.finite("lr", lr))
    seed = checks.count("seed", seed, 0)
    checks.fits("dim", dim, 8 * world.vocab * dim)
    phi = np.random.default_rng([seed, 0]).normal(0.0, 1.0 / math.sqrt(dim), size=(world.vocab, dim))
    _, responses = world.sample(samples, seed=seed)
    targets = weights[responses].sum(axis=1)
    theta, bias, epoch_mse = _fit_head(phi, np.ascontiguousarray(responses), targets, epochs, lr)
    rm = RewardModel(phi @ theta + bias / world.response_len, world.tokens)
    _, fresh = world.sample(samples, seed=seed + 1)
    truth = weights[fresh].sum(axis=1)
    spread, mse = float(np.var(truth)), float(np.mean((rm.score(fresh) - truth) ** 2))
    # A teacher whose held-out scores do not vary leaves nothing to explain: 1 if matched, else 0.
    r2 = 1.0 - mse / spread if spread > 0.0 else float(mse == 0.0)
    return Distilled(rm, dim, phi, theta, float(bias), epoch_mse, r2)


# ------------------------------------------------------------------ the lab


@dataclass
class StudentRow:
    """One reward model's line of :meth:`Distillation.table`: means over projection seeds."""

    dim: int | None  # None: the teacher itself
    heldout_r2: float
    gold_accuracy: float
    frontier_peak_gold: float
    frontier_peak_kl: float
    ppo_peak_gold: float
    ppo_peak_kl: float
    ppo_final_gold: float
    ppo_final_kl: float
    # The beta = 0 PPO curve, mean over seeds: KL, gold, and the student's own score.
    kl: np.ndarray = field(repr=False)
    gold: np.ndarray = field(repr=False)
    proxy: np.ndarray = field(repr=False)
    # The gold along the model's optima pi ∝ ref exp(r / beta) over FRONTIER_BETAS, mean over seeds.
    frontier_kl: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    frontier_gold: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    @property
    def name(self) -> str:
        return "teacher" if self.dim is None else f"dim {self.dim}"


@dataclass
class Distillation:
    """What :func:`distillation` measured: one row per student size, and the teacher's."""

    world: World
    teacher_pairs: int
    rows: list[StudentRow]
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        dims = [row.dim for row in self.rows if row.dim is not None]
        return f"Distillation({self.world!r}, dims={dims}, {self.seconds:.1f} s)"

    def table(self) -> str:
        """One line per reward model: its fit, and where the gold peaks when it is optimised.

        Returns
        -------
        str
        """
        header = ["reward model", "R² to teacher", "gold acc", "optimum: peak gold", "at KL", "PPO: peak gold",
                  "at KL", "end gold", "end KL"]
        lines = [[row.name, f"{row.heldout_r2:.3f}", f"{row.gold_accuracy:.3f}", f"{row.frontier_peak_gold:+.2f}",
                  f"{row.frontier_peak_kl:.1f}", f"{row.ppo_peak_gold:+.2f}", f"{row.ppo_peak_kl:.1f}",
                  f"{row.ppo_final_gold:+.2f}", f"{row.ppo_final_kl:.1f}"] for row in self.rows]
        return text_table(header, lines)

    def to_rows(self) -> list[dict[str, Any]]:
        """The table as flat records (for a CSV).

        Returns
        -------
        list of dict
        """
        return [{"reward_model": row.name, "dim": row.dim if row.dim is not None else "",
                 "teacher_pairs": self.teacher_pairs, "heldout_r2": row.heldout_r2,
                 "gold_accuracy": row.gold_accuracy, "frontier_peak_gold": row.frontier_peak_gold,
                 "frontier_peak_kl": row.frontier_peak_kl, "ppo_peak_gold": row.ppo_peak_gold,
                 "ppo_peak_kl": row.ppo_peak_kl, "ppo_final_gold": row.ppo_final_gold,
                 "ppo_final_kl": row.ppo_final_kl} for row in self.rows]

    def plot(self, path: str | os.PathLike | None = None):
        """Gold against ``d = sqrt(KL)`` for each reward model, one colour per student size,
        the teacher in black: along the model's exact optima ``pi ∝ pi_ref exp(r / beta)``
        (left), and under PPO at beta = 0 with the model's own score dashed (right); each
        gold curve's peak marked.

        Parameters
        ----------
        path : str or os.PathLike, optional
            Save the figure there (PNG, PDF, ... by the suffix).

        Returns
        -------
        matplotlib.figure.Figure
        """
        import matplotlib

        fig = new_figure(path, figsize=(12.0, 5.0), layout="constrained")
        optima, ppo = fig.subplots(1, 2)
        students = [row for row in self.rows if row.dim is not None]
        cmap = matplotlib.colormaps["viridis"]
        for i, row in enumerate(self.rows):
            c = "black" if row.dim is None else cmap(0.1 + 0.8 * i / max(1, len(students) - 1))
            for ax, kl, gold in ((optima, row.frontier_kl, row.frontier_gold), (ppo, row.kl, row.gold)):
                d = np.sqrt(np.maximum(kl, 0.0))
                ax.plot(d, gold, color=c, linewidth=2, label=f"{row.name}: gold")
                peak = int(np.argmax(gold))
                ax.plot(d[peak], gold[peak], "o", color=c, markersize=7)
            ppo.plot(np.sqrt(np.maximum(row.kl, 0.0)), row.proxy, color=c, linewidth=1, linestyle="--")
        for ax, title in ((optima, "along each model's optima π ∝ π_ref exp(r/β)"),
                          (ppo, "PPO β=0 (dashed: the optimised model's own score)")):
            ax.axhline(0.0, color="grey", linewidth=0.8)
            ax.set(xlabel="d = sqrt(KL(π || π_ref))", title=title)
            ax.legend(loc="upper left", fontsize=8)
        optima.set_ylabel("gold relative to the reference policy")
        fig.suptitle(f"Distilled reward models (teacher: {self.teacher_pairs:,} pairs): the smaller the student, the "
                     "lower and earlier the gold peaks (●)", fontsize=11)
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig


def distillation(
    world: World | None = None,
    *,
    teacher_pairs: int = 30_000,
    dims: Sequence[int] = (16, 64, 256, 1024),
    seeds: int = 3,
    samples: int = 20_000,
    epochs: int = 5,
    steps: int = 1500,
    lr: float = 0.1,
    record_every: int = 50,
    progress: bool = False,
) -> Distillation:
    """How a distilled reward model's size moves the over-optimisation peak.

    A teacher is trained on ``teacher_pairs`` human-labelled pairs (:func:`train_reward_model`,
    one epoch); for each ``dim`` and each of ``seeds`` projections a student is distilled from
    it (:func:`distill_reward_model`). Each reward model is then optimised two ways, and the
    gold read where it peaks: exactly along its optima ``pi ∝ pi_ref exp(r / beta)``
    (:meth:`Frontier.of`), and by PPO at ``beta = 0`` (``sweep_rlhf`` in the world,
    ``kl_penalty="k1"``, ``vf_coef=1``; one run per projection seed, and ``seeds`` runs for the
    teacher). Scores are relative to the reference policy's.

    Parameters
    ----------
    world : World, optional
        ``World()`` by default (1,024 tokens, responses of 8, a count-once gold).
    teacher_pairs : int
        Labelled pairs the teacher is trained on.
    dims : sequence of int
        Student sizes (features per token).
    seeds : int
        Projections per size (and PPO runs of the teacher).
    samples, epochs : int
        Each student's distillation data and passes.
    steps, lr, record_every : int, float, int
        PPO's steps, learning rate, and how often the gold, score and KL are recorded.
    progress : bool
        A progress bar on stderr.

    Returns
    -------
    Distillation
    """
    import rlhf_fast as rl

    world = World() if world is None else world
    if not isinstance(world, World):
        raise TypeError(f"world must be a World, got {type(world).__name__}")
    teacher_pairs = checks.count("teacher_pairs", teacher_pairs, 2, 10**7)
    dims = checks.sequence_of("dims", dims, checks.counts(1, MAX_FEATURES), "ints")
    seeds = checks.count("seeds", seeds, 1, 1000)
    samples = checks.count("samples", samples, 1)
    epochs = checks.count("epochs", epochs, 0, 10_000)
    steps = checks.count("steps", steps, 1)
    lr = checks.positive("lr", checks.finite("lr", lr))
    record_every = checks.count("record_every", record_every, 1)
    if steps // record_every < 2:
        raise ValueError(f"record_every must leave at least two recorded steps, got record_every={record_every} "
                         f"with steps={steps}")
    progress = checks.boolean("progress", progress)
    started = time.perf_counter()
    teacher = train_reward_model(world, world.preferences(teacher_pairs, seed=1), epochs=1)
    heldout = world.preferences(4000, seed=10**6)
    base_gold = float(world.expected_gold(world.ref_logits).mean())
    from tqdm.auto import tqdm

    def optimise(rm: RewardModel, ppo_seeds: Any) -> dict[str, Any]:
        frontier = Frontier.of(world, rm, FRONTIER_BETAS)
        peak = int(np.argmax(frontier.gold))  # FRONTIER_BETAS fall: the KL grows along them
        base_proxy = float(world.expected_score(world.ref_logits, rm).mean())
        result = rl.sweep_rlhf(rm, world=world, betas=[0.0], seeds=ppo_seeds, steps=steps, lr=lr, vf_coef=1.0,
                               kl_penalty="k1", record_every=record_every)
        gold, kl = result.gold_score[0] - base_gold, result.mean_kl[0]  # [seed, kept]
        at = gold.argmax(axis=1)
        runs = np.arange(len(gold))
        return {"accuracy": rm.gold_accuracy(world, heldout), "frontier_gold": frontier.gold[peak] - base_gold,
                "frontier_kl": frontier.kl[peak], "ppo_gold": gold[runs, at].mean(), "ppo_kl": kl[runs, at].mean(),
                "final_gold": gold[:, -1].mean(), "final_kl": kl[:, -1].mean(), "kl": kl.mean(0),
                "gold": gold.mean(0), "proxy": (result.proxy_score[0] - base_proxy).mean(0),
                "frontier_kls": frontier.kl, "frontier_golds": frontier.gold - base_gold}

    def row(dim: int | None, r2: float, runs: list[dict[str, Any]]) -> StudentRow:
        mean = {key: np.mean([run[key] for run in runs], axis=0) for key in runs[0]}
        return StudentRow(dim, r2, float(mean["accuracy"]), float(mean["frontier_gold"]), float(mean["frontier_kl"]),
                          float(mean["ppo_gold"]), float(mean["ppo_kl"]), float(mean["final_gold"]),
                          float(mean["final_kl"]), mean["kl"], mean["gold"], mean["proxy"], mean["frontier_kls"],
                          mean["frontier_golds"])

    rows = []
    with tqdm(total=len(dims) * seeds + 1, desc="distill", unit="RM", disable=not progress, leave=False) as bar:
        for dim in dims:
            runs, r2 = [], []
            for s in range(seeds):
                student = distill_reward_model(world, teacher, dim, samples=samples, epochs=epochs, seed=s)
                r2.append(student.heldout_r2)
                runs.append(optimise(student.rm, [s]))
                bar.update()
            rows.append(row(dim, float(np.mean(r2)), runs))
        rows.append(row(None, 1.0, [optimise(teacher, seeds)]))
        bar.update()
    settings = {"teacher_pairs": teacher_pairs, "dims": dims, "seeds": seeds, "samples": samples, "epochs": epochs,
                "steps": steps, "lr": lr, "record_every": record_every}
    return Distillation(world, teacher_pairs, rows, time.perf_counter() - started, settings)
