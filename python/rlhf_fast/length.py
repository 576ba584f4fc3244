"""Length hacking, reproduced and remedied (issue 11, item 3).

A labeller who prefers longer answers (:class:`~rlhf_fast.worlds.Labeller` with a
``length_bias``) teaches a count-based proxy that every content token is worth something: PPO
against it grows the responses of a :class:`~rlhf_fast.sequences.SequenceWorld`, whose gold
has no length term. :func:`length_lab` trains the proxies, runs token PPO
(:func:`~rlhf_fast.sweep_rlhf` with ``world=SequenceWorld``) against each, and measures, per
remedy the lesson names, the exact expected content length, gold, proxy and KL of the final
policies:

- the baseline, PPO on a proxy trained on the length-biased labels;
- a length-normalised reward (``length_normalize=True``: the score over the content length);
- a length penalty (``length_penalty=c``: ``score - c * n_content``), at ``c`` the biased
  proxy's worth of a reference token and at twice that;
- a length-aware RM, debiased (``train_sequence_reward_model(..., length_feature=True)
  .debiased()``);
- RLAIF with a length-aware judge (labels from ``Judge(length_bias=b, length_aware=1.0)``);
- a control: a proxy trained on the same labeller without its length bias.

Every number is an exact expectation under the policy (``SequenceWorld.stats``' recursions,
computed in the engine), averaged over the world's prompts and then over PPO seeds.

The world's gold has no length term, so the extra tokens of a hacked response are neutral to
it, not harmful. A reader who pays for every token is the other view: with ``reading_cost=c``
the table adds the gold's change net of ``c`` per content token, ``gold Δ - c Δlength``, under
which the biased proxy's run loses gold while the unbiased labels' run gains.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _checks as checks
from .result import new_figure, text_table
from .sequences import SequenceRewardModel, SequenceWorld, train_sequence_reward_model
from .worlds import Judge, Labeller

__all__ = ["LengthRow", "LengthLab", "length_lab", "per_token_worth"]


def per_token_worth(world: SequenceWorld, rm: SequenceRewardModel) -> float:
    """What one more content token drawn from the reference is worth to ``rm``, on average.

    ``(sum_v w(v) E_ref[copies of v]) / E_ref[content length] + w_len``, means over prompts:
    the gold's is 0 by construction (``docs/METHODS.md`` section 10), so a positive value is
    the proxy's taste for length. It is also the length penalty that makes a reference token
    worth nothing to the shaped reward, :func:`length_lab`'s default ``length_penalty``.

    Parameters
    ----------
    world : SequenceWorld
    rm : SequenceRewardModel
        A proxy of the world's vocabulary.

    Returns
    -------
    float

    Examples
    --------
    >>> from rlhf_fast.sequences import SequenceRewardModel, SequenceWorld
    >>> world = SequenceWorld(n_prompts=2, vocab=8, max_len=4, seed=0)
    >>> per_token_worth(world, SequenceRewardModel(np.r_[0.0, np.ones(7)], length_weight=0.5))
    1.5
    """
    if not isinstance(world, SequenceWorld):
        raise TypeError(f"world must be a SequenceWorld, got {type(world).__name__}")
    stats = world.stats(world.ref_logits)
    tokens = world.expected_score(world.ref_logits, rm) - rm.prompt_bias(world.n_prompts) \
        - rm.length_weight * stats.content_length
    return float(tokens.sum() / stats.content_length.sum() + rm.length_weight)


@dataclass(frozen=True, eq=False)
class LengthRow:
    """One remedy's PPO runs: final exact statistics (means and standard deviations over
    seeds) and the seed-mean curves over the recorded steps.

    Attributes
    ----------
    name, flag : str
        The remedy and the setting that turns it on.
    rm_per_token : float
        :func:`per_token_worth` of the proxy PPO climbs (before any shaping).
    length, length_std : float
        Final expected content length.
    gold_change, gold_change_std : float
        Final expected gold less the reference policy's.
    net_gold_change, net_gold_change_std : float
        The same net of the lab's ``reading_cost`` per content token: ``gold_change -
        reading_cost * (length - the reference's length)``, per seed.
    proxy_change : float
        Final expected score of the proxy (unshaped) less the reference's.
    kl : float
        Final ``KL(pi || pi_ref)`` of a response.
    length_curve, gold_curve : numpy.ndarray
        Expected content length and gold change at each recorded step.
    """

    name: str
    flag: str
    rm_per_token: float
    length: float
    length_std: float
    gold_change: float
    gold_change_std: float
    net_gold_change: float
    net_gold_change_std: float
    proxy_change: float
    kl: float
    length_curve: np.ndarray
    gold_curve: np.ndarray


@dataclass(frozen=True, eq=False)
class LengthLab:
    """What :func:`length_lab` measured: one row per remedy.

    Attributes
    ----------
    world : SequenceWorld
    ref_length, ref_gold : float
        The reference policy's expected content length and gold.
    steps : numpy.ndarray
        The recorded steps (1-based) of the curves.
    rows : list of LengthRow
    seconds : float
        Wall time of the lab.
    settings : dict
        Its arguments.
    """

    world: SequenceWorld
    ref_length: float
    ref_gold: float
    steps: np.ndarray
    rows: list[LengthRow]
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"LengthLab({self.world!r}, {len(self.rows)} remedies, {self.seconds:.1f} s)"

    def row(self, name: str) -> LengthRow:
        """The row of remedy ``name`` (``"baseline"``, ``"normalised"``, ``"penalty"``,
        ``"penalty x2"``, ``"debiased"``, ``"judge"`` or ``"unbiased"``).

        Parameters
        ----------
        name : str

        Returns
        -------
        LengthRow
        """
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no remedy {name!r}: one of {[row.name for row in self.rows]}")

    def table(self) -> str:
        """One line per remedy: the proxy's taste for length, then the final policy's length
        (the reference's in the header), gold change (and, with a ``reading_cost``, net of
        it), proxy change and KL.

        Returns
        -------
        str
        """
        cost = self.settings.get("reading_cost", 0.0)
        net = [f"gold Δ − {cost:g}·Δlength"] if cost else []
        header = ["remedy", "flag", "RM per token", f"length (ref {self.ref_length:.2f})", "gold Δ", *net, "proxy Δ",
                  "KL"]
        lines = [[row.name, row.flag, f"{row.rm_per_token:+.3f}", f"{row.length:.2f} ± {row.length_std:.2f}",
                  f"{row.gold_change:+.3f} ± {row.gold_change_std:.3f}",
                  *([f"{row.net_gold_change:+.3f} ± {row.net_gold_change_std:.3f}"] if cost else []),
                  f"{row.proxy_change:+.2f}", f"{row.kl:.2f}"]
                 for row in self.rows]
        return text_table(header, lines)

    def to_rows(self) -> list[dict[str, Any]]:
        """The table as flat records (for a CSV).

        Returns
        -------
        list of dict
        """
        return [{"remedy": row.name, "flag": row.flag, "rm_per_token": row.rm_per_token,
                 "ref_length": self.ref_length, "length": row.length, "length_std": row.length_std,
                 "gold_change": row.gold_change, "gold_change_std": row.gold_change_std,
                 "reading_cost": self.settings.get("reading_cost", 0.0), "net_gold_change": row.net_gold_change,
                 "net_gold_change_std": row.net_gold_change_std, "proxy_change": row.proxy_change, "kl": row.kl} for row in self.rows]

    def plot(self, path: str | os.PathLike | None = None):
        """Expected content length (left) and gold change (right) over PPO steps, one line per
        remedy (seed means); the reference's length dotted.

        Parameters
        ----------
        path : str or os.PathLike, optional
            Save the figure there (PNG, PDF, ... by the suffix).

        Returns
        -------
        matplotlib.figure.Figure
        """
        fig = new_figure(path, figsize=(12.0, 4.8), layout="constrained")
        length_ax, gold_ax = fig.subplots(1, 2)
        for row in self.rows:
            label = f"{row.name} ({row.flag})"
            length_ax.plot(self.steps, row.length_curve, label=label)
            gold_ax.plot(self.steps, row.gold_curve, label=label)
        length_ax.axhline(self.ref_length, color="grey", linestyle=":", linewidth=1, label="reference")
        gold_ax.axhline(0.0, color="grey", linestyle=":", linewidth=1)
        length_ax.set(xlabel="PPO step", ylabel="E[content tokens] of a response", title="response length")
        gold_ax.set(xlabel="PPO step", ylabel="E[gold] − the reference's", title="gold")
        for ax in (length_ax, gold_ax):
            ax.legend(loc="best", fontsize=8)
        bias = self.settings.get("length_bias")
        fig.suptitle(f"Length hacking (labeller length_bias={bias}) and its remedies: token PPO, "
                     f"{self.settings.get('seeds')} seeds per line", fontsize=11)
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig


def length_lab(
    world: SequenceWorld | None = None,
    *,
    length_bias: float = 2.0,
    pairs: int = 400,
    rm_epochs: int = 1,
    steps: int = 400,
    lr: float = 1.0,
    beta: float = 0.05,
    seeds: int = 3,
    length_penalty: float | None = None,
    judge_aware: float = 1.0,
    reading_cost: float = 0.1,
    batch_size: int = 64,
    record_every: int = 20,
    n_threads: int | None = None,
    progress: bool = False,
) -> LengthLab:
    """Length hacking under a length-biased proxy, and each remedy of the lesson, in one table.

    ``pairs`` pairs from the reference are labelled three ways (seed 1): by a
    :class:`~rlhf_fast.worlds.Labeller` with ``length_bias``, by the same labeller without it,
    and by a :class:`~rlhf_fast.worlds.Judge` with ``length_bias`` told to ignore length
    (``length_aware=judge_aware``). Proxies are trained on them
    (:func:`~rlhf_fast.sequences.train_sequence_reward_model`, ``rm_epochs`` passes), plus one
    on the biased labels with the length as a feature, debiased. Each remedy is then ``seeds``
    token PPO runs (:func:`~rlhf_fast.sweep_rlhf`, ``world=world``, TRL's defaults but
    ``betas=[beta]``, ``lr`` and ``batch_size``) from the reference policy.

    Parameters
    ----------
    world : SequenceWorld, optional
        ``SequenceWorld(n_prompts=8, vocab=128, max_len=8, seed=0)`` by default: a vocabulary
        large enough for ``pairs`` labels to leave the proxy noisy.
    length_bias : float
        The labeller's (and the judge's) taste for length per content token.
    pairs, rm_epochs : int
        Labelled pairs per proxy, and its SGD passes.
    steps, lr, beta, seeds, batch_size : int, float, float, int, int
        PPO's steps, SGD learning rate, ``kl_coef``, runs per remedy and rollouts per step.
    length_penalty : float, optional
        The penalty remedy's ``c``; by default :func:`per_token_worth` of the biased proxy
        (a reference token then earns the shaped reward nothing, as it earns the gold). The
        remedy runs with ``c`` and with ``2 c`` (row ``"penalty x2"``).
    judge_aware : float
        The judge's ``length_aware``, in [0, 1].
    reading_cost : float
        What a reader pays per content token, in gold units (``>= 0``; 0 leaves the column
        out): the table's "gold Δ − c·Δlength". The gold itself has no length term; at the
        default 0.1, a token must be worth a tenth of a standard gold value to be worth reading.
    record_every : int
        Steps between the points of the curves.
    n_threads : int, optional
        Worker threads of the sweeps.
    progress : bool
        A progress bar per sweep on stderr.

    Returns
    -------
    LengthLab

    Examples
    --------
    >>> from rlhf_fast.sequences import SequenceWorld
    >>> lab = length_lab(SequenceWorld(n_prompts=2, vocab=12, max_len=4, seed=0), pairs=100,
    ...                  steps=20, seeds=2, batch_size=8, record_every=10)
    >>> [row.name for row in lab.rows]
    ['baseline', 'normalised', 'penalty', 'penalty x2', 'debiased', 'judge', 'unbiased']
    >>> lab.row("baseline").length > lab.ref_length
    True
    """
    from .sweep import sweep_rlhf

    started = time.perf_counter()
    world = SequenceWorld(n_prompts=8, vocab=128, max_len=8, seed=0) if world is None else world
    if not isinstance(world, SequenceWorld):
        raise TypeError(f"world must be a SequenceWorld, got {type(world).__name__}")
    settings = {"length_bias": checks.non_negative("length_bias", checks.finite("length_bias", length_bias)),
                "pairs": checks.count("pairs", pairs, 1, 10**7), "rm_epochs": checks.count("rm_epochs", rm_epochs, 1, 10_000),
                "steps": checks.count("steps", steps, 1), "lr": checks.positive("lr", lr),
                "beta": checks.non_negative("beta", beta),
                "seeds": checks.count("seeds", seeds, 1, 1000), "length_penalty": length_penalty,
                "judge_aware": checks.finite("judge_aware", judge_aware),
                "reading_cost": checks.non_negative("reading_cost", reading_cost), "batch_size": batch_size,
                "record_every": checks.count("record_every", record_every, 1)}
    if settings["steps"] // settings["record_every"] < 1:
        raise ValueError(f"record_every must leave at least one recorded step, got record_every={record_every} "
                         f"with steps={steps}")
    bias = settings["length_bias"]
    n, epochs = settings["pairs"], settings["rm_epochs"]

    def proxy(labeller: Labeller | Judge, length_feature: bool = False) -> SequenceRewardModel:
        labelled = world.preferences(n, seed=1, labeller=labeller)
        return train_sequence_reward_model(world, labelled, epochs=epochs, length_feature=length_feature)

    biased = proxy(Labeller(length_bias=bias))
    c = per_token_worth(world, biased) if length_penalty is None else length_penalty
    c = checks.non_negative("length_penalty", checks.finite("length_penalty", c))
    remedies = [
        ("baseline", "", biased, {}),
        ("normalised", "length_normalize=True", biased, {"length_normalize": True}),
        ("penalty", f"length_penalty={c:.3g}", biased, {"length_penalty": c}),
        ("penalty x2", f"length_penalty={2 * c:.3g}", biased, {"length_penalty": 2 * c}),
        ("debiased", "length_feature=True, debiased()", proxy(Labeller(length_bias=bias), True).debiased(), {}),
        ("judge", f"Judge(length_aware={settings['judge_aware']:g})",
         proxy(Judge(length_bias=bias, length_aware=settings["judge_aware"])), {}),
        ("unbiased", "Labeller(length_bias=0)", proxy(Labeller()), {}),
    ]
    ref = world.ref_logits
    ref_length = float(world.expected_content_length(ref).mean())
    ref_gold = float(world.expected_gold(ref).mean())
    rows = []
    steps_kept = np.arange(0)
    for name, flag, rm, options in remedies:
        result = sweep_rlhf(rm, world=world, betas=[settings["beta"]], seeds=settings["seeds"], steps=settings["steps"],
                            lr=settings["lr"], batch_size=batch_size, record_every=settings["record_every"],
                            n_threads=n_threads, progress=progress, **options)
        runs = {key: value[0] for key, value in result.runs.items()}
        history = {key: result.history[0, :, result.fields.index(key), :] for key in
                   ("expected_length", "expected_gold_score")}
        steps_kept = result.steps + 1
        net_gold = runs["final_gold_score"] - ref_gold - settings["reading_cost"] * (runs["final_length"] - ref_length)
        rows.append(LengthRow(
            name=name, flag=flag or "none", rm_per_token=per_token_worth(world, rm),
            length=float(runs["final_length"].mean()), length_std=float(runs["final_length"].std()),
            gold_change=float(runs["final_gold_score"].mean() - ref_gold),
            gold_change_std=float(runs["final_gold_score"].std()),
            net_gold_change=float(net_gold.mean()), net_gold_change_std=float(net_gold.std()),
            proxy_change=float(runs["final_proxy_score"].mean() - world.expected_score(ref, rm).mean()),
            kl=float(runs["final_kl"].mean()),
            length_curve=history["expected_length"].mean(axis=0),
            gold_curve=history["expected_gold_score"].mean(axis=0) - ref_gold,
        ))
    settings["length_penalty"] = c
    return LengthLab(world, ref_length, ref_gold, np.asarray(steps_kept), rows, time.perf_counter() - started,
                     settings)
