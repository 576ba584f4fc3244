"""One result type for every sweep: PPO-RLHF, reward models, DPO, GRPO and Best-of-N.

A :class:`SweepResult` is built by :meth:`SweepResult.from_engine` from the dict a sweep
engine returns (the Rust ``_core.sweep_*`` and their pure-Python twins alike), with the
run-major arrays reshaped to ``[*axes, ...]`` as views: the history is never copied.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .reference import PROMPTS, VOCAB

__all__ = ["METHODS", "SweepResult"]

# History fields that hold an index into a tuple of strings (as a float: NaN is padding).
_CATEGORIES = {"prompt": PROMPTS, "token": VOCAB}


@dataclass(frozen=True)
class _Spec:
    """What differs between methods; everything else is one code path."""

    title: str
    params: str | None  # what the engine's final_params hold: "final_theta", "weights" or nothing
    # (run summary, column title) of summary_table; when none is present, every run summary.
    table: tuple[tuple[str, str], ...]
    # (history field, y label, title): one panel each, seed-averaged over windows of updates.
    curves: tuple[tuple[str, str, str], ...] = ()
    # (score, kl, label): the score-against-KL panel, from the history windows when
    # front_from_history, else from the run summaries along the first swept axis.
    front: tuple[tuple[str, str, str], ...] = ()
    front_from_history: bool = False
    # Run summaries against the first swept axis: (y label, title, names); "" and () for
    # the names themselves and every run summary.
    along: tuple[str, str, tuple[str, ...]] | None = None
    # The front panel's x label, y label and title.
    front_labels: tuple[str, str, str] = (
        "KL(π_θ || π_ref)", "RM score", "RM score against KL (reward hacking: far right)"
    )
    # A line at log V on KL panels: the KL of a single token from the lesson's uniform reference.
    log_v: bool = True


_KL_LABEL = "KL(π_θ || π_ref)"
_SPECS = {
    "ppo": _Spec(
        title="PPO-RLHF",
        params="final_theta",
        table=(("final_score", "final E[score]"), ("final_kl", "final KL"), ("mean_kl", "mean KL"),
               ("clip_frac", "clip frac")),
        curves=(("objective_scores", "RM score of the sampled token", "RM score over updates"),
                ("objective_kl", _KL_LABEL, "KL to the reference over updates")),
        front=(("objective_scores", "objective_kl", ""),),
        front_from_history=True,
    ),
    "grpo": _Spec(
        title="GRPO",
        params="final_theta",
        table=(("final_score", "final E[score]"), ("final_kl", "final KL"), ("mean_kl", "mean KL"),
               ("clip_frac", "clip frac")),
        curves=(("reward", "mean RM score of the group", "RM score over updates"),
                ("kl", _KL_LABEL, "KL to the reference over updates")),
        front=(("reward", "kl", ""),),
        front_from_history=True,
    ),
    "dpo": _Spec(
        title="DPO",
        params="final_theta",
        table=(("final_score", "final E[score]"), ("final_kl", "final KL"), ("last_epoch_loss", "last-epoch loss"),
               ("last_epoch_accuracy", "accuracy")),
        curves=(("loss", "DPO loss", "loss over updates"),
                ("rewards_accuracies", "implied-reward accuracy", "preference accuracy over updates")),
        front=(("final_score", "final_kl", "final policy"),),
    ),
    "best_of_n": _Spec(
        title="Best-of-N",
        params=None,
        table=(("expected_score", "E[score]"), ("sampled_score", "sampled score"), ("kl_exact", "KL exact"),
               ("kl_analytic", "KL analytic")),
        front=(("expected_score", "kl_exact", "E[score], exact KL"),
               ("expected_score", "kl_analytic", "E[score], analytic KL"),
               ("sampled_score", "kl_exact", "sampled score, exact KL")),
        along=("KL(π_BoN || π)", "KL of Best-of-N to the policy", ("kl_exact", "kl_analytic")),
    ),
    "rm": _Spec(title="Reward model", params="weights", table=(("accuracy", "accuracy"),), along=("", "", ())),
    "world_ppo": _Spec(
        title="PPO in a world",
        params="final_theta",
        table=(("final_proxy_score", "final proxy"), ("final_gold_score", "final gold"), ("final_kl", "final KL")),
        curves=(("proxy_score", "E[proxy score] of a response", "proxy score over updates"),
                ("gold_score", "E[gold score] of a response", "gold score over updates"),
                ("mean_kl", "KL(π_θ^L || π_ref^L)", "KL to the reference over updates")),
        front=(("gold_score", "mean_kl", "gold"), ("proxy_score", "mean_kl", "proxy")),
        front_from_history=True,
        front_labels=("KL(π_θ^L || π_ref^L)", "expected score of a response",
                      "gold (solid) and proxy (dashed) against KL"),
        log_v=False,
    ),
    "world_best_of_n": _Spec(
        title="Best-of-N in a world",
        params=None,
        table=(("sampled_proxy_score", "proxy"), ("sampled_gold_score", "gold"), ("kl_analytic", "KL analytic"),
               ("ref_gold_score", "reference gold")),
        front=(("sampled_gold_score", "kl_analytic", "gold"), ("sampled_proxy_score", "kl_analytic", "proxy")),
        along=("expected score of a response", "proxy and gold", ("sampled_proxy_score", "sampled_gold_score")),
        front_labels=("KL(π_BoN || π_ref), log n - (n-1)/n", "expected score of a response",
                      "gold and proxy against KL"),
        log_v=False,
    ),
    "world_dpo": _Spec(
        title="DPO in a world",
        params="final_theta",
        table=(("final_proxy_score", "final proxy"), ("final_gold_score", "final gold"), ("final_kl", "final KL"),
               ("last_epoch_loss", "last-epoch loss"), ("last_epoch_accuracy", "accuracy")),
        curves=(("loss", "DPO loss", "loss over updates"),
                ("gold_score", "E[gold score] of a response", "gold score over updates"),
                ("mean_kl", "KL(π_θ^L || π_ref^L)", "KL to the reference over updates")),
        front=(("gold_score", "mean_kl", "gold"), ("proxy_score", "mean_kl", "proxy")),
        front_from_history=True,
        front_labels=("KL(π_θ^L || π_ref^L)", "expected score of a response",
                      "gold (solid) and proxy (dashed, with w) against KL"),
        log_v=False,
    ),
    "world_grpo": _Spec(
        title="GRPO in a world",
        params="final_theta",
        table=(("final_proxy_score", "final proxy"), ("final_gold_score", "final gold"), ("final_kl", "final KL"),
               ("clip_frac", "clip frac")),
        curves=(("proxy_score", "E[proxy score] of a response", "proxy score over updates"),
                ("gold_score", "E[gold score] of a response", "gold score over updates"),
                ("mean_kl", "KL(π_θ^L || π_ref^L)", "KL to the reference over updates")),
        front=(("gold_score", "mean_kl", "gold"), ("proxy_score", "mean_kl", "proxy")),
        front_from_history=True,
        front_labels=("KL(π_θ^L || π_ref^L)", "expected score of a response",
                      "gold (solid) and proxy (dashed) against KL"),
        log_v=False,
    ),
    "token_ppo": _Spec(
        title="PPO on token sequences (TRL's layout)",
        params="final_theta",
        table=(("final_proxy_score", "final proxy"), ("final_gold_score", "final gold"), ("final_kl", "final KL"),
               ("final_length", "final length")),
        curves=(("expected_proxy_score", "E[proxy score] of a response", "proxy score over updates"),
                ("expected_gold_score", "E[gold score] of a response", "gold score over updates"),
                ("expected_length", "E[content tokens] of a response", "response length over updates")),
        front=(("expected_gold_score", "expected_kl", "gold"), ("expected_proxy_score", "expected_kl", "proxy")),
        front_from_history=True,
        front_labels=("KL(π_θ || π_ref) of a response", "expected score of a response",
                      "gold (solid) and proxy (dashed) against KL"),
        log_v=False,
    ),
    "sequence_grpo": _Spec(
        title="GRPO on token sequences",
        params="final_theta",
        table=(("final_proxy_score", "final proxy"), ("final_gold_score", "final gold"), ("final_kl", "final KL"),
               ("final_length", "final length")),
        curves=(("expected_proxy_score", "E[proxy score] of a response", "proxy score over updates"),
                ("expected_gold_score", "E[gold score] of a response", "gold score over updates"),
                ("expected_length", "E[content tokens] of a response", "response length over updates")),
        front=(("expected_gold_score", "expected_kl", "gold"), ("expected_proxy_score", "expected_kl", "proxy")),
        front_from_history=True,
        front_labels=("KL(π_θ || π_ref) of a response", "expected score of a response",
                      "gold (solid) and proxy (dashed) against KL"),
        log_v=False,
    ),
    "sequence_dpo": _Spec(
        title="DPO on token sequences",
        params="final_theta",
        table=(("final_proxy_score", "final proxy"), ("final_gold_score", "final gold"), ("final_kl", "final KL"),
               ("final_length", "final length"), ("last_epoch_accuracy", "accuracy")),
        curves=(("loss", "DPO loss", "loss over updates"),
                ("gold_score", "E[gold score] of a response", "gold score over updates"),
                ("mean_length", "E[content tokens]", "response length over updates")),
        front=(("gold_score", "mean_kl", "gold"), ("proxy_score", "mean_kl", "proxy")),
        front_from_history=True,
        front_labels=("KL(π_θ || π_ref) of a response", "expected score of a response",
                      "gold (solid) and proxy (dashed, with w) against KL"),
        log_v=False,
    ),
    "sequence_best_of_n": _Spec(
        title="Best-of-N on token sequences",
        params=None,
        table=(("sampled_proxy_score", "proxy"), ("sampled_gold_score", "gold"), ("sampled_length", "length"),
               ("kl_analytic", "KL analytic"), ("ref_gold_score", "reference gold")),
        front=(("sampled_gold_score", "kl_analytic", "gold"), ("sampled_proxy_score", "kl_analytic", "proxy")),
        along=("expected score of a response", "proxy and gold", ("sampled_proxy_score", "sampled_gold_score")),
        front_labels=("KL(π_BoN || π_ref), log n - (n-1)/n", "expected score of a response",
                      "gold and proxy against KL"),
        log_v=False,
    ),
}
_SPECS["world_ppo_safe"] = _Spec(
    title="Safe RLHF in a world",
    params="final_theta",
    table=(("final_gold_score", "final gold"), ("final_gold_cost", "final gold cost"),
           ("final_cost_score", "final cost model"), ("final_lambda", "final λ"), ("final_kl", "final KL")),
    curves=(("gold_score", "E[gold score] of a response", "gold helpfulness over updates"),
            ("gold_cost", "E[gold cost] of a response", "gold cost over updates"),
            ("lagrange_multiplier", "λ", "the Lagrange multiplier over updates")),
    front=(("gold_score", "mean_kl", "gold"), ("proxy_score", "mean_kl", "proxy")),
    front_from_history=True,
    front_labels=("KL(π_θ^L || π_ref^L)", "expected score of a response", "gold (solid) and proxy (dashed) against KL"),
    log_v=False,
)
METHODS = tuple(_SPECS)


class SweepResult:
    """A finished sweep of any method: the grid, the histories, the per-run summaries.

    Every array is indexed by the grid first, ``[*axes, ...]`` in the order of ``axes``
    (``seed`` last where there is one), and is a view of the engine's output.

    Attributes
    ----------
    method : str
        One of ``"ppo"``, ``"rm"``, ``"dpo"``, ``"grpo"``, ``"best_of_n"``, ``"world_ppo"``,
        ``"world_grpo"``.
    axes : dict[str, list]
        Each grid axis and its values, in index order; the grid is their product.
    shape : tuple[int, ...]
        The grid's shape, ``tuple(len(v) for v in axes.values())``.
    steps : numpy.ndarray
        The kept step indices, 0-based: ``record_every - 1, 2 * record_every - 1, ...``
        (empty without history).
    total_steps : int
        Steps per run (the longest run for DPO; 0 for methods without history).
    record_every : int
        Every how many steps the history keeps one (0: none).
    history : numpy.ndarray
        float64 ``[*shape, field, kept]``; categorical fields hold their index as a float,
        NaN past the end of a DPO run shorter than the longest.
    fields : tuple[str, ...]
        The names along ``history``'s field axis (TRL's names, ``/`` written ``_``). Each is
        also an attribute: ``result.objective_kl`` is ``result.history[..., f, :]``, a view;
        ``prompt`` and ``token`` are int64 indices into ``PROMPTS`` / ``VOCAB``, -1 where
        the history holds NaN.
    runs : dict[str, numpy.ndarray]
        Per-run summaries, each ``[*shape]``; each is also an attribute
        (``result.final_score``), unless a history field has the same name (``mean_kl`` of
        PPO and GRPO is the history; its summary is ``runs["mean_kl"]``).
    final_theta : numpy.ndarray or None
        ``[*shape, P, V]`` final logits (ppo, dpo, grpo), else None.
    weights : numpy.ndarray or None
        ``[*shape, len(vocab)]`` final reward weights (rm), else None.
    vocab : tuple[str, ...] or None
        The tokens of ``weights`` (rm), else None.
    seconds : float
        Wall time of the engine.
    simd : str
        The engine's vector path (``"scalar"``, ``"python"`` for the reference, ...).
    nbytes : int
        Bytes held by the arrays above.

    Parameters
    ----------
    method, axes
        The attributes of the same names; build one with :meth:`from_engine` (every sweep
        front end does).
    history, fields, runs, total_steps, record_every, final_theta, weights, vocab, seconds, simd
        Keyword-only: the attributes of the same names.

    Examples
    --------
    >>> w = rl.train_rm(rl.make_dataset(200, seed=0), epochs=2)
    >>> result = rl.sweep_rlhf(w, betas=[0.0, 0.1], seeds=2, steps=50)
    >>> result.method, result.shape, result.steps[-1]
    ('ppo', (2, 2), np.int64(49))
    >>> result.history.shape, result.fields.index("objective_kl")
    ((2, 2, 10, 50), 3)
    >>> result.final_theta.shape, round(float(result.final_score[1, 0]), 4)
    ((2, 2, 3, 8), 0.442)
    """

    def __init__(
        self,
        method: str,
        axes: Mapping[str, Sequence],
        *,
        history: np.ndarray,
        fields: Sequence[str],
        runs: Mapping[str, np.ndarray],
        total_steps: int = 0,
        record_every: int = 0,
        final_theta: np.ndarray | None = None,
        weights: np.ndarray | None = None,
        vocab: Sequence[str] | None = None,
        seconds: float = 0.0,
        simd: str = "",
    ) -> None:
        """Build one with :meth:`from_engine`; the arguments are the attributes of the same names."""
        self.method = method
        self.axes = {name: list(values) for name, values in axes.items()}
        self.shape = tuple(len(values) for values in self.axes.values())
        self.total_steps = total_steps
        self.record_every = record_every
        self.steps = (np.arange(record_every - 1, total_steps, record_every) if record_every
                      else np.zeros(0, dtype=np.int64))
        self.history = history
        self.fields = tuple(fields)
        self.runs = dict(runs)
        self.final_theta = final_theta
        self.weights = weights
        self.vocab = None if vocab is None else tuple(vocab)
        self.seconds = seconds
        self.simd = simd
        # A world sweep's world and reward model: what its plot draws the analytic frontier of.
        self.world: Any = None
        self.reward_model: Any = None

    def _in_world(self, world: Any, reward_model: Any) -> SweepResult:
        """This result, knowing the world its runs ran in and the reward model they optimised
        (a world sweep's front end calls it), so that :meth:`plot` draws the frontier."""
        self.world = world
        self.reward_model = reward_model
        return self

    @classmethod
    def from_engine(
        cls,
        method: str,
        axes: Mapping[str, Sequence],
        out: Mapping[str, Any],
        *,
        total_steps: int = 0,
        record_every: int = 0,
        seconds: float = 0.0,
        extra_runs: Mapping[str, Any] | None = None,
    ) -> SweepResult:
        """The result of a sweep engine's output; the single way the sweep front ends build one.

        Parameters
        ----------
        method : str
            ``"ppo"``, ``"rm"``, ``"dpo"``, ``"grpo"``, ``"best_of_n"``, ``"world_ppo"`` or
            ``"world_grpo"``.
        axes : Mapping[str, Sequence]
            Each grid axis and its values, in order (``seed`` last where there is one). The
            engine's runs are the product of the axes in C order: run ``r`` is grid point
            ``numpy.unravel_index(r, shape)``.
        out : Mapping[str, Any]
            The engine's dict: ``history`` float64 ``[run, field, kept]``,
            ``history_fields``, ``final_params`` ``[run, ...]`` (``[run, P, V]`` logits,
            ``[run, vocab]`` weights for rm, ``[run, 0]`` for best_of_n), ``summary``
            float64 ``[run, field]``, ``summary_fields``, ``simd``, and ``vocab`` for rm.
        total_steps : int, optional
            Steps per run (DPO: the longest run's, epochs x pairs); 0 without history.
        record_every : int, optional
            The ``record_every`` the engine was given; ``kept`` must be
            ``total_steps // record_every`` (0 when ``record_every`` is 0).
        seconds : float, optional
            Wall time of the sweep.
        extra_runs : Mapping[str, Any], optional
            Per-run summaries the front end computed itself (the RM's held-out
            ``accuracy``), each ``[run]`` or ``[*shape]``; added after the engine's.

        Returns
        -------
        SweepResult
            Arrays reshaped to ``[*shape, ...]`` as views of ``out``'s (no copy).

        Raises
        ------
        ValueError
            An unknown method, or arrays whose sizes disagree with the grid or each other.

        Examples
        --------
        >>> out = {"history": np.zeros((2, 0, 0)), "history_fields": [],
        ...        "final_params": np.zeros((2, 0)), "summary": np.array([[0.5], [0.7]]),
        ...        "summary_fields": ["score"], "simd": "scalar"}
        >>> result = rl.SweepResult.from_engine("best_of_n", {"n": [1, 2], "seed": [0]}, out)
        >>> result.shape, result.score.tolist()
        ((2, 1), [[0.5], [0.7]])
        """
        if method not in _SPECS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        missing = [key for key in ("history", "history_fields", "final_params", "summary", "summary_fields", "simd")
                   if key not in out]
        if method == "rm" and "vocab" not in out:
            missing.append("vocab")
        if missing:
            raise ValueError(f"the {method} engine's output lacks {missing}")
        axes = {name: list(values) for name, values in axes.items()}
        shape = tuple(len(values) for values in axes.values())
        n_runs = math.prod(shape)
        grid = " x ".join(f"{name}[{len(values)}]" for name, values in axes.items())

        def by_grid(name: str, array: Any) -> np.ndarray:
            array = np.asarray(array, dtype=np.float64)
            if array.ndim == 0 or array.shape[0] != n_runs:
                raise ValueError(f"{name} has shape {array.shape}, expected {n_runs} runs first (grid {grid})")
            return array.reshape(*shape, *array.shape[1:])

        fields = [str(name) for name in out["history_fields"]]
        kept = total_steps // record_every if record_every else 0
        history = by_grid("history", out["history"])
        if history.shape[len(shape):] != (len(fields), kept):
            raise ValueError(
                f"history has shape {np.shape(out['history'])}, expected [{n_runs}, {len(fields)}, {kept}] "
                f"({len(fields)} history_fields, total_steps={total_steps} // record_every={record_every} kept)"
            )
        summary = by_grid("summary", out["summary"])
        names = [str(name) for name in out["summary_fields"]]
        if summary.shape[len(shape):] != (len(names),):
            raise ValueError(f"summary has shape {np.shape(out['summary'])}, expected [{n_runs}, {len(names)}]")
        runs = {name: summary[..., i] for i, name in enumerate(names)}
        for name, values in (extra_runs or {}).items():
            if name in runs:
                raise ValueError(f"extra_runs[{name!r}] is already a summary of the engine")
            values = np.asarray(values, dtype=np.float64)
            if values.size != n_runs:
                raise ValueError(f"extra_runs[{name!r}] has {values.size} values, expected {n_runs} (grid {grid})")
            runs[name] = values.reshape(shape)
        params = by_grid("final_params", out["final_params"])
        spec = _SPECS[method]
        return cls(
            method,
            axes,
            history=history,
            fields=fields,
            runs=runs,
            total_steps=total_steps,
            record_every=record_every,
            final_theta=params if spec.params == "final_theta" else None,
            weights=params if spec.params == "weights" else None,
            vocab=out["vocab"] if spec.params == "weights" else None,
            seconds=float(seconds),
            simd=str(out["simd"]),
        )

    # ------------------------------------------------------------------ names and runs

    def __getattr__(self, name: str) -> np.ndarray:
        # Only reached when ordinary lookup fails; the guard keeps copy/pickle (which probe
        # dunders before __dict__ is filled) from recursing.
        if name.startswith("_") or "fields" not in self.__dict__:
            raise AttributeError(name)
        if name in self.fields:
            return _decoded(name, self.history[..., self.fields.index(name), :])
        if name in self.runs:
            return self.runs[name]
        raise AttributeError(
            f"{self.method} SweepResult has no attribute {name!r}; history fields: "
            f"{', '.join(self.fields) or 'none'}; run summaries: {', '.join(self.runs) or 'none'}"
        )

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *self.fields, *self.runs})

    @property
    def nbytes(self) -> int:
        """Bytes held by ``history``, ``final_theta``, ``weights`` and ``runs``.

        Returns
        -------
        int
            The arrays' ``nbytes`` summed (views of the engine's output count in full).

        Examples
        --------
        >>> w = rl.train_rm(rl.make_dataset(200, seed=0), epochs=2)
        >>> result = rl.sweep_rlhf(w, betas=[0.0, 0.1], seeds=2, steps=50)
        >>> result.nbytes == result.history.nbytes + result.final_theta.nbytes + 7 * 4 * 8
        True
        """
        arrays = [self.history, self.final_theta, self.weights, *self.runs.values()]
        return sum(a.nbytes for a in arrays if a is not None)

    def _index(self, where: Mapping[str, Any]) -> tuple[int, ...]:
        """The grid index of one run: every axis named, except those of length 1."""
        where = dict(where)
        index = []
        for axis, values in self.axes.items():
            if axis not in where and len(values) == 1:
                index.append(0)
                continue
            if axis not in where:
                raise ValueError(f"say which {axis}: one of {values}")
            try:
                index.append(values.index(where.pop(axis)))
            except ValueError:
                raise ValueError(f"{axis} is not on this grid; it has {values}") from None
        if where:
            raise ValueError(f"unknown axes {sorted(where)}; the grid's axes are {list(self.axes)}")
        return tuple(index)

    def run(self, **where: Any) -> dict[str, np.ndarray]:
        """One run's history, e.g. ``result.run(beta=0.1, seed=3)``.

        Parameters
        ----------
        **where
            A value for every axis (an axis of length 1 may be left out).

        Returns
        -------
        dict[str, numpy.ndarray]
            Each history field over the kept steps; ``prompt`` and ``token`` as int64
            indices (-1: padding).

        Raises
        ------
        ValueError
            An axis or value not on the grid, an axis left out, or a method that keeps no
            history (rm, best_of_n: see ``runs`` and :meth:`w`).

        Examples
        --------
        >>> w = rl.train_rm(rl.make_dataset(200, seed=0), epochs=2)
        >>> result = rl.sweep_rlhf(w, betas=[0.0, 0.1], seeds=2, steps=50)
        >>> one = result.run(beta=0.1, seed=1)
        >>> one["token"].dtype, one["objective_kl"].shape, round(float(one["mean_kl"][-1]), 4)
        (dtype('int64'), (50,), 0.0742)
        """
        if not self.fields:
            raise ValueError(f"a {self.method} sweep keeps no history: its runs are in result.runs")
        one = self.history[self._index(where)]
        return {name: _decoded(name, one[f]) for f, name in enumerate(self.fields)}

    def w(self, **where: Any) -> dict[str, float]:
        """One reward model of an RM sweep as the lesson's dict token -> weight.

        Parameters
        ----------
        **where
            A value for every axis, e.g. ``result.w(lr=0.1, epochs=5, n_pairs=500)``.

        Returns
        -------
        dict[str, float]
            The final weights of that run.

        Raises
        ------
        ValueError
            Not an RM sweep, or an axis or value not on the grid.

        Examples
        --------
        >>> pairs = rl.PreferenceSet.make_dataset(200, seed=0)
        >>> result = rl.sweep_rm(pairs, lrs=[0.1, 1.0], epochs=2)
        >>> round(result.w(lr=0.1)["kind"], 4)
        1.0421
        """
        if self.weights is None or self.vocab is None:
            raise ValueError(f"w() is the reward model of an rm sweep; this is a {self.method} sweep")
        return dict(zip(self.vocab, self.weights[self._index(where)].tolist()))

    # ----------------------------------------------------------------------- tables

    def _pooled(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Mean and std (ddof=1; 0 for one seed) over the seed axis: ``[*points, ...]`` each."""
        if "seed" not in self.axes:
            return values, np.zeros_like(values), 1
        at = list(self.axes).index("seed")
        values = np.moveaxis(values, at, 0)
        n = values.shape[0]
        spread = values.std(axis=0, ddof=1) if n > 1 else np.zeros_like(values[0])
        return values.mean(axis=0), spread, n

    @property
    def _point_axes(self) -> list[str]:
        return [a for a in self.axes if a != "seed"]

    def summary(self) -> list[dict[str, Any]]:
        """Per grid point, seeds pooled: each run summary's mean and standard deviation.

        Returns
        -------
        list[dict[str, Any]]
            One dict per point of the non-seed axes (C order): the axis values, ``seeds``,
            and for each run summary ``name`` its mean over seeds and ``name_std`` (ddof=1,
            0.0 with one seed). A grid without a seed axis (rm) pools nothing: one row per
            run, ``seeds`` 1.

        Examples
        --------
        >>> w = rl.train_rm(rl.make_dataset(200, seed=0), epochs=2)
        >>> result = rl.sweep_rlhf(w, betas=[0.0, 0.1], seeds=2, steps=50)
        >>> row = result.summary()[0]
        >>> row["beta"], row["seeds"], round(row["final_score"], 4)
        (0.0, 2, 0.4671)
        """
        pooled = {name: self._pooled(values) for name, values in self.runs.items()}
        n_seeds = len(self.axes.get("seed", [None]))
        rows = []
        for index in np.ndindex(*(len(self.axes[a]) for a in self._point_axes)):
            row: dict[str, Any] = {a: self.axes[a][i] for a, i in zip(self._point_axes, index)}
            row["seeds"] = n_seeds
            for name, (mean, spread, _) in pooled.items():
                row[name] = float(mean[index])
                row[f"{name}_std"] = float(spread[index])
            rows.append(row)
        return rows

    def guard(self, patience: int = 3) -> dict[str, np.ndarray]:
        """Where an over-optimisation guard would have stopped each run of a world sweep.

        The guard is the Ship It "holdout human eval": the gold, evaluated at every kept
        step, has fallen ``patience`` evaluations in a row while the proxy rose
        (:func:`rlhf_fast.overopt.guard_stop`). It flags; the runs went on.

        Parameters
        ----------
        patience : int, optional
            Falls in a row that stop a run.

        Returns
        -------
        dict of numpy.ndarray
            Each ``[*shape]``: ``fired`` (bool), ``step`` (1-based update of the stop, the
            last kept one where the guard never fired), ``gold``, ``proxy`` and ``kl`` there,
            and ``final_gold`` for comparison.

        Raises
        ------
        ValueError
            Not a world sweep, or one that kept no history.

        Examples
        --------
        >>> world = rl.World(n_prompts=4, vocab=64, seed=0)
        >>> rm = rl.train_reward_model(world, world.preferences(300, seed=1))
        >>> result = rl.sweep_rlhf(rm, world=world, betas=[0.0], seeds=2, steps=200, record_every=10)
        >>> sorted(result.guard())
        ['final_gold', 'fired', 'gold', 'kl', 'proxy', 'step']
        """
        from .overopt import guard_stop

        if not {"proxy_score", "gold_score", "mean_kl"} <= set(self.fields):  # a world sweep's exact means
            raise ValueError(
                f"guard() needs a world sweep with a proxy (sweep_rlhf, sweep_grpo or sweep_dpo with w=..., "
                f"given world=...), not a {self.method} sweep" + (" without w" if self.method == "world_dpo" else "")
            )
        if len(self.steps) == 0:
            raise ValueError("this sweep kept no history (record_every=0): the guard has nothing to evaluate")
        gold, proxy, kl = self.gold_score, self.proxy_score, self.mean_kl
        stop = guard_stop(gold, proxy, patience)
        index = stop[..., None]
        take = lambda series: np.take_along_axis(series, index, axis=-1)[..., 0]  # noqa: E731
        return {"fired": stop < len(self.steps) - 1, "step": self.steps[stop] + 1, "gold": take(gold),
                "proxy": take(proxy), "kl": take(kl), "final_gold": gold[..., -1].copy()}

    def summary_table(self) -> str:
        """:meth:`summary` as aligned text, one line per grid point.

        Returns
        -------
        str
            The non-seed axes, the number of seeds, then the method's columns as
            ``mean ± std`` (ppo and grpo: final E[score], final KL, mean KL, clip frac; dpo:
            final E[score], final KL, last-epoch loss, accuracy; best_of_n: E[score],
            sampled score, KL exact, KL analytic; rm: accuracy, or whatever run summaries
            there are; world_ppo: final proxy, final gold, final KL). Without a seed axis,
            the values alone.

        Examples
        --------
        >>> w = rl.train_rm(rl.make_dataset(200, seed=0), epochs=2)
        >>> result = rl.sweep_rlhf(w, betas=[0.0, 0.1], seeds=2, steps=50)
        >>> print(result.summary_table())  # doctest: +NORMALIZE_WHITESPACE
        beta  seeds  final E[score]       final KL        mean KL      clip frac
        ----  -----  --------------  -------------  -------------  -------------
           0      2   0.467 ± 0.035  0.196 ± 0.078  0.063 ± 0.017  0.000 ± 0.000
         0.1      2   0.466 ± 0.034  0.194 ± 0.076  0.062 ± 0.017  0.000 ± 0.000
        """
        columns = [(n, t) for n, t in _SPECS[self.method].table if n in self.runs] or [(n, n) for n in self.runs]
        pooled = "seed" in self.axes
        header = [*self._point_axes, *(["seeds"] if pooled else []), *(title for _, title in columns)]
        lines = []
        for row in self.summary():
            cells = [_fmt(row[a]) for a in self._point_axes]
            if pooled:
                cells.append(str(row["seeds"]))
            for name, _ in columns:
                cells.append(f"{row[name]:.3f} ± {row[name + '_std']:.3f}" if pooled else f"{row[name]:.3f}")
            lines.append(cells)
        return text_table(header, lines)

    def _long_columns(self, runs: range | None = None) -> dict[str, np.ndarray]:
        """The long table of :meth:`to_pandas` and :meth:`to_arrow` as numpy columns, in order;
        ``prompt`` and ``token`` as int8 codes into ``PROMPTS`` / ``VOCAB``, -1 where missing.
        ``runs``: the rows of these runs only (flat indices in C order), all by default."""
        n_runs = math.prod(self.shape)
        runs = range(n_runs) if runs is None else runs
        chosen = slice(runs.start, runs.stop)
        per_run = not self.fields
        repeat = 1 if per_run else len(self.steps)
        data: dict[str, np.ndarray] = {}
        if per_run:
            data.update({name: values.reshape(n_runs)[chosen] for name, values in self.runs.items()})
            if self.weights is not None and self.vocab is not None:
                flat = self.weights.reshape(n_runs, len(self.vocab))[chosen]
                data.update({f"w[{tok}]": flat[:, j] for j, tok in enumerate(self.vocab)})
        else:
            data["step"] = np.tile(self.steps, len(runs))
            flat = self.history.reshape(n_runs, len(self.fields), repeat)[chosen]
            for f, name in enumerate(self.fields):
                values = flat[:, f, :].reshape(-1)
                data[name] = _codes(values).astype(np.int8) if name in _CATEGORIES else values
        columns: dict[str, np.ndarray] = {}
        for axis, index in zip(self.axes, np.unravel_index(np.arange(runs.start, runs.stop), self.shape)):
            columns[f"{axis}_axis" if axis in data else axis] = np.repeat(_column(self.axes[axis])[index], repeat)
        columns.update(data)
        return columns

    def to_pandas(self):
        """A long table: one row per run and kept step (per run, for methods without history).

        Returns
        -------
        pandas.DataFrame
            One column per axis, ``step``, and one per history field under its name,
            ``prompt`` and ``token`` as ``pandas.Categorical`` of ``PROMPTS`` / ``VOCAB``
            strings (missing where the history is padding). For rm and best_of_n: one row
            per run, the axes, the run summaries and, for rm, ``w[token]`` per token. An
            axis whose name is also a column's (PPO's ``kl_penalty``) is ``<axis>_axis``.

        Raises
        ------
        ImportError
            Without pandas.

        Examples
        --------
        >>> w = rl.train_rm(rl.make_dataset(200, seed=0), epochs=2)
        >>> result = rl.sweep_rlhf(w, betas=[0.0, 0.1], seeds=2, steps=50)
        >>> df = result.to_pandas()
        >>> df.shape, list(df.columns[:5])
        ((200, 13), ['beta', 'seed', 'step', 'prompt', 'token'])
        """
        pd = _require("pandas", "to_pandas()")
        # Not to_arrow().to_pandas(): Arrow turns an axis that mixes None with numbers (a DPO
        # seed axis [None, 1]) into floats with NaN, where this frame keeps None.
        columns: dict[str, Any] = self._long_columns()
        for name, categories in _CATEGORIES.items():
            if name in self.fields:
                columns[name] = pd.Categorical.from_codes(columns[name], categories=list(categories))
        return pd.DataFrame(columns)

    def to_arrow(self):
        """The long table of :meth:`to_pandas` as a ``pyarrow.Table``, built from the arrays.

        No pandas on the way: each numeric column is a numpy array handed to Arrow without a
        copy (a history field is copied once out of ``history``, where its values are
        strided), ``prompt`` and ``token`` are their int8 codes with a dictionary. Write it
        with ``pyarrow.parquet.write_table`` or ``pyarrow.csv.write_csv``.

        Returns
        -------
        pyarrow.Table
            The columns of :meth:`to_pandas`, in its order and under its names; ``prompt``
            and ``token`` dictionary-encoded strings of ``PROMPTS`` / ``VOCAB`` (null where
            the history is padding).

        Raises
        ------
        ImportError
            Without pyarrow.

        Examples
        --------
        >>> w = rl.train_rm(rl.make_dataset(200, seed=0), epochs=2)
        >>> result = rl.sweep_rlhf(w, betas=[0.0, 0.1], seeds=2, steps=50)
        >>> table = result.to_arrow()
        >>> table.num_rows, table.column_names == list(result.to_pandas().columns)
        (200, True)
        """
        pa = _require("pyarrow", "to_arrow()")
        return self._arrow_table(pa, None)

    def to_arrow_batches(self, max_rows: int = 1 << 20):
        """The table of :meth:`to_arrow` in pieces of whole runs, for writing a large history
        with bounded memory (``pyarrow.parquet.ParquetWriter``, ``pyarrow.csv.CSVWriter``).

        Parameters
        ----------
        max_rows : int, optional
            Rows per piece, at most (a piece holds at least one run).

        Yields
        ------
        pyarrow.Table
            Consecutive runs' rows, all with the schema of :meth:`to_arrow`;
            ``pyarrow.concat_tables`` of them is :meth:`to_arrow`.

        Raises
        ------
        ImportError
            Without pyarrow.

        Examples
        --------
        >>> w = rl.train_rm(rl.make_dataset(200, seed=0), epochs=2)
        >>> result = rl.sweep_rlhf(w, betas=[0.0, 0.1], seeds=2, steps=50)
        >>> [piece.num_rows for piece in result.to_arrow_batches(max_rows=120)]
        [100, 100]
        """
        pa = _require("pyarrow", "to_arrow_batches()")
        n_runs = math.prod(self.shape)
        rows_per_run = len(self.steps) if self.fields else 1
        runs_per_piece = max(1, max_rows // rows_per_run)
        for start in range(0, n_runs, runs_per_piece):
            yield self._arrow_table(pa, range(start, min(start + runs_per_piece, n_runs)))

    def _arrow_table(self, pa, runs: range | None):
        columns = {}
        for name, values in self._long_columns(runs).items():
            if name in _CATEGORIES:
                columns[name] = _arrow_categorical(pa, values, _CATEGORIES[name])
            elif values.dtype.kind in "iuf":
                columns[name] = _arrow_numbers(pa, values)
            else:  # an axis of strings, None or a mix: the general conversion (it imports pandas)
                columns[name] = pa.array(values.tolist())
        return pa.table(columns)

    # ------------------------------------------------------------------------ plots

    def plot(self, path: str | os.PathLike | None = None, *, points: int = 60):
        """The method's picture, one panel per view, a legend on each.

        ppo and grpo: RM score and KL over updates, and RM score against KL (the lesson's
        medium exercise); dpo: loss and preference accuracy over updates, and final score
        against final KL; best_of_n: score against KL (exact and analytic), and KL over n;
        rm: the run summaries (held-out accuracy) against the first swept axis; world_ppo:
        proxy score, gold score and KL over updates, and gold (solid) and proxy (dashed)
        against KL, where over-optimisation shows as gold turning down. Curves over
        updates are averaged over seeds in ``points`` windows of the kept steps, with a band
        of one standard deviation over seeds; each curve or line is one grid point.

        Parameters
        ----------
        path : str or os.PathLike, optional
            Save the figure there (PNG, PDF, ... by the suffix). From a script that never
            imported pyplot the figure is then a bare one, pyplot's otherwise
            (:func:`~rlhf_fast.result.new_figure`).
        points : int, optional
            Windows of the kept steps in the curves over updates.

        Returns
        -------
        matplotlib.figure.Figure

        Raises
        ------
        ImportError
            Without matplotlib.
        ValueError
            Curves over updates from a sweep that kept no history (``record_every=0``), or
            an RM sweep without run summaries.

        Examples
        --------
        >>> w = rl.train_rm(rl.make_dataset(200, seed=0), epochs=2)
        >>> result = rl.sweep_rlhf(w, betas=[0.0, 0.1], seeds=2, steps=50)
        >>> import os, tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     fig = result.plot(os.path.join(tmp, "sweep.png"), points=10)
        ...     saved = os.path.exists(os.path.join(tmp, "sweep.png"))
        >>> len(fig.axes), saved
        (3, True)
        """
        matplotlib = _require("matplotlib", "plot()")
        spec = _SPECS[self.method]
        if spec.curves and len(self.steps) == 0:
            raise ValueError("this sweep kept no history (record_every=0): nothing to plot over updates")
        ylabel, title, along = spec.along or ("", "", ())
        along = along or (tuple(self.runs) if spec.along else ())
        if spec.along is not None and not along:
            raise ValueError(f"this {self.method} sweep has no run summaries to plot (e.g. a held-out accuracy)")
        n_panels = len(spec.curves) + bool(spec.front) + bool(along)
        # Margins fixed in inches, not a layout engine: constrained layout measures every tick
        # label twice more before drawing, a fifth of the time the CLI's B1 sweep command takes.
        # They fit tick labels of up to 6 characters and one-line axis labels and titles.
        left, right, gap, bottom, top = 0.85, 0.2, 1.0, 0.6, 0.75
        width, height = 5.2 * n_panels, 4.6
        fig = new_figure(path, figsize=(width, height))
        panels = list(fig.subplots(1, n_panels, squeeze=False, gridspec_kw={
            "left": left / width, "right": 1 - right / width, "bottom": bottom / height, "top": 1 - top / height,
            "wspace": gap / ((width - left - right - gap * (n_panels - 1)) / n_panels)})[0])
        colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
        log_v = {"color": "grey", "linestyle": ":", "linewidth": 1, "label": "log V: a single token"}
        notes = []
        labels: list[tuple[float, float, str, str]] = []  # the front's points, labelled once laid out

        if spec.curves:
            x, windowed = self._windows(points)
            notes.append(f"{self.total_steps} updates in {len(x)} windows")
            names = {name for name, _, _ in spec.curves}
            front = [score_kl for score_kl in spec.front if set(score_kl[:2]) <= set(self.fields)]
            if spec.front_from_history:
                names.update(name for score_kl in front for name in score_kl[:2])
            pooled = {name: self._pooled(windowed(name)) for name in names}
            for n, (label, index) in enumerate(self._points()):
                colour = colours[n % len(colours)]
                for ax, (name, _, _) in zip(panels, spec.curves):
                    mean, spread, _ = pooled[name]
                    ax.plot(x, mean[index], color=colour, label=label)
                    ax.fill_between(x, mean[index] - spread[index], mean[index] + spread[index], color=colour,
                                    alpha=0.15)
                if spec.front_from_history:
                    ax = panels[len(spec.curves)]
                    # One line per score (the world's gold solid, its proxy dashed), one colour per point.
                    for (score_name, kl_name, what), style in zip(front, ("-", "--", ":")):
                        (score, spread, _), (kl, _, _) = pooled[score_name], pooled[kl_name]
                        ax.plot(kl[index], score[index], color=colour, linestyle=style, marker=".", markersize=3,
                                label=", ".join(part for part in (what, label) if part))
                        ax.fill_between(kl[index], score[index] - spread[index], score[index] + spread[index],
                                        color=colour, alpha=0.15)
            for ax, (name, ylabel, title) in zip(panels, spec.curves):
                ax.set(xlabel="update", ylabel=ylabel, title=title)
                if _is_kl(name) and spec.log_v:
                    ax.axhline(math.log(len(VOCAB)), **log_v)
        if spec.front:
            ax = panels[len(spec.curves)]
            if not spec.front_from_history:
                labels = self._along_panel(ax, list(spec.front), colours)
                # Also the legend's one entry when a DPO sweep had no RM to score its policies.
                if spec.log_v:
                    ax.axvline(math.log(len(VOCAB)), **log_v)
            if self.world is not None:
                draw_frontier(ax, self.world, self.reward_model)
            front_x, front_y, front_title = spec.front_labels
            ax.set(xlabel=front_x, ylabel=front_y, title=front_title)
        if along:
            ax = panels[-1]
            axis = self._along_axis()
            self._along_panel(ax, [(name, None, name) for name in along], colours)
            ax.set(xlabel=axis, ylabel=ylabel or ", ".join(along), title=f"{title or ', '.join(along)} against {axis}")
            if all(_is_kl(name) for name in along):
                ax.axhline(math.log(len(VOCAB)), **log_v)
        for ax in panels:
            ax.legend(loc="best", fontsize=8)
        n_seeds = len(self.axes.get("seed", ()))
        if n_seeds > 1:
            notes.insert(0, f"{n_seeds} seeds per point, mean ± 1 std over seeds")
        fig.suptitle(f"{spec.title} sweep" + (": " + ", ".join(notes) if notes else ""))
        if labels:
            fig.draw_without_rendering()  # the layout and the limits are final: labels are placed on them
            front = panels[len(spec.curves)]
            place_labels(front, labels, avoid=[front.get_legend().get_window_extent()])
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig

    def _windows(self, points: int):
        """Window centres (1-based updates) and a function averaging a field over each window."""
        n_kept = len(self.steps)
        n = max(1, min(points, n_kept))
        sizes = np.full(n, n_kept // n)
        sizes[: n_kept % n] += 1
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        x = np.add.reduceat(self.steps, starts) / sizes + 1

        def windowed(name: str) -> np.ndarray:
            series = self.history[..., self.fields.index(name), :]
            return np.add.reduceat(series, starts, axis=-1) / sizes

        return x, windowed

    def _label(self, axes: Sequence[str], index: Sequence[int]) -> str:
        return ", ".join(f"{'β' if a == 'beta' else a}={_fmt(self.axes[a][i])}" for a, i in zip(axes, index))

    def _points(self) -> list[tuple[str, tuple[int, ...]]]:
        """Every point of the non-seed axes with its label (naming the axes that vary)."""
        point_axes = self._point_axes
        shown = [a for a in point_axes if len(self.axes[a]) > 1] or point_axes
        out = []
        for index in np.ndindex(*(len(self.axes[a]) for a in point_axes)):
            label = self._label(shown, [index[point_axes.index(a)] for a in shown])
            out.append((label or _SPECS[self.method].title, index))
        return out

    def _along_axis(self) -> str:
        point_axes = self._point_axes
        if not point_axes:
            raise ValueError("this grid has no axis but seed to plot against")
        return next((a for a in point_axes if len(self.axes[a]) > 1), point_axes[0])

    def _along_panel(
        self, ax, series: list[tuple[str, str | None, str]], colours: list[str]
    ) -> list[tuple[float, float, str, str]]:
        """Run summaries (seed means ± std) along the first swept axis, one line per other point.

        ``series`` holds ``(y, x, label)``: with ``x`` None the axis' values are the x
        coordinates, else the run summary ``x`` gives them (a score against KL). A series whose
        summaries are absent (no sampled score, no RM to score DPO with) is left out. Returns the
        labels of the first line's points, ``(x, y, axis value, colour)``, when ``x`` is a run
        summary (the axis value is not on either axis then) and there are at most 12.
        """
        axis = self._along_axis()
        values = self.axes[axis]
        others = [a for a in self._point_axes if a != axis]
        shown = [a for a in others if len(self.axes[a]) > 1]
        at = self._point_axes.index(axis)
        n = 0
        labels = []
        for y_name, x_name, series_label in series:
            if y_name not in self.runs or (x_name is not None and x_name not in self.runs):
                continue
            y_mean, y_std, _ = self._pooled(self.runs[y_name])
            if np.all(np.isnan(y_mean)):
                continue
            for other in np.ndindex(*(len(self.axes[a]) for a in others)):
                line = [(*other[:at], i, *other[at:]) for i in range(len(values))]
                point = self._label(shown, [other[others.index(a)] for a in shown])
                label = ", ".join(p for p in (series_label if len(series) > 1 else "", point) if p) or series_label
                colour = colours[n % len(colours)]
                ys, yerr = np.array([y_mean[i] for i in line]), np.array([y_std[i] for i in line])
                xs, xerr = _column(values), None
                if x_name is not None:
                    x_mean, x_std, _ = self._pooled(self.runs[x_name])
                    xs, xerr = np.array([x_mean[i] for i in line]), np.array([x_std[i] for i in line])
                ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, color=colour, marker="o", markersize=4, capsize=3,
                            label=label)
                if x_name is not None and n == 0 and len(values) <= 12:
                    labels = [(x, y, self._label([axis], [i]), colour) for i, (x, y) in enumerate(zip(xs, ys))]
                n += 1
        numbers = _column(values)
        if series and series[0][1] is None and numbers.dtype.kind in "iuf" and 0 < 100 * numbers.min() <= numbers.max():
            ax.set_xscale("log")  # learning rates, n of Best-of-N: spread over decades
        return labels

    # ------------------------------------------------------------------------- repr

    def __repr__(self) -> str:
        grid = " x ".join(f"{name}[{len(values)}]" for name, values in self.axes.items())
        if self.fields:
            content = (f"steps: {self.total_steps} ({len(self.steps)} kept), "
                       f"history: {len(self.fields)} fields")
        else:
            content = f"summaries: {', '.join(self.runs) or 'none'}"
        return (f"SweepResult(method={self.method!r}, grid: {grid} = {math.prod(self.shape)} runs,\n"
                f"            {content}, {_size(self.nbytes)}, simd={self.simd!r}, {self.seconds:.2f} s)")


# ------------------------------------------------------------------------------ helpers


# KL coefficients the frontier is traced over: from near the reference (KL ~ 0) to near the
# reward's argmax (the largest KL a policy tilted by it reaches), 8 per decade.
FRONTIER_BETAS = np.geomspace(1e4, 1e-4, 65)
FRONTIER_LABELS = ("frontier: proxy of π ∝ π_ref exp(r/β)", "frontier: gold of π ∝ π_ref exp(g/β)")


def draw_frontier(ax, world: Any, reward_model: Any, *, gold: bool = True) -> None:
    """The analytic frontier of a world on a score-against-KL panel, up to the panel's KL.

    The KL-regularised optima ``pi*_beta ∝ pi_ref exp(r / beta)``
    (:meth:`rlhf_fast.worlds.Frontier.of`), traced over beta: the proxy's expected score
    along the reward model's optima (no policy scores more proxy at its KL: each optimum
    maximises ``E[r] - beta KL``), and with ``gold`` the gold's along its own (exactly the
    best gold at each KL for a linear gold; the best linear tilt for a count-once one). Black
    lines, dashed for the proxy, labelled :data:`FRONTIER_LABELS`; drawn up to the largest KL
    already on the panel.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        A panel with the response's KL on x and expected scores on y, data already drawn.
    world : rlhf_fast.worlds.World
    reward_model : rlhf_fast.worlds.RewardModel or None
        The proxy whose frontier is drawn (none without one: a DPO sweep scored by no RM).
    gold : bool, optional
        Also the gold's frontier.
    """
    from .worlds import Frontier

    kl_max = ax.dataLim.x1 if np.isfinite(ax.dataLim.x1) and ax.dataLim.x1 > 0 else 1.0
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    traces = []
    if reward_model is not None:
        traces.append((Frontier.of(world, reward_model, FRONTIER_BETAS), "proxy", "--", FRONTIER_LABELS[0]))
    if gold:
        traces.append((Frontier.of(world, "gold", FRONTIER_BETAS), "gold", "-", FRONTIER_LABELS[1]))
    low, high = ylim
    for frontier, score, style, label in traces:
        # up to the first point past the panel's KL, which the kept limits then cut at the edge
        shown = np.flatnonzero(frontier.kl <= kl_max)
        last = min(len(frontier.kl), (shown[-1] + 2) if shown.size else 2)
        values = getattr(frontier, score)
        ax.plot(frontier.kl[:last], values[:last], color="black", linestyle=style, linewidth=1.2, alpha=0.7,
                label=label)
        inside = values[: max(1, last - 1)]
        low, high = min(low, float(inside.min())), max(high, float(inside.max()))
    ax.set_xlim(xlim)
    ax.set_ylim(low, high + 0.03 * (high - low))


def _decoded(name: str, values: np.ndarray) -> np.ndarray:
    """A history field as returned to users: categorical fields as int64 indices."""
    return _codes(values) if name in _CATEGORIES else values


def _codes(values: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(values), -1, values).astype(np.int64)


def _column(values: list) -> np.ndarray:
    """Axis values as an array: numbers keep their dtype, anything else (str, None) is object."""
    array = np.asarray(values)
    return array if array.dtype.kind in "biuf" else np.asarray(values, dtype=object)


# Label offsets in points, nearest first: beside, above or below, then diagonally, then further out.
_OFFSETS = [(dx * d, dy * d) for d in (7, 14, 24, 36)
            for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1))]


def place_labels(ax, labels: Sequence[tuple[float, float, str, str]], avoid: Sequence = (), *,
                 marker_size: float = 4.0) -> None:
    """Annotate points so that no label overlaps another label, a point, a line or a box to avoid.

    Each label in turn gets the first offset of ``_OFFSETS`` (nearest first) whose text box
    stays inside the axes, covers nothing (no label placed so far, no point, nothing in
    ``avoid``, no drawn line or error bar) and is nearer its own point than any other. When
    none does, it gets the one that stays inside, overlaps the least label, point and box
    area, is nearer its own point, and crosses the least line, in that order. Labels set off
    further than the nearest ring get a thin line to their point. Boxes are computed in display space, so the figure must be laid out first (e.g.
    ``fig.draw_without_rendering()``); the labels are kept out of the layout so that it stays.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        The axes holding the points, laid out.
    labels : sequence of (x, y, text, colour)
        The points in data coordinates and their labels.
    avoid : sequence of matplotlib.transforms.Bbox, optional
        Display boxes no label may cover (a legend's ``get_window_extent()``).
    marker_size : float, optional
        The points' marker size in points: the box around each point labels keep off.
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    pixels = fig.dpi / 72  # per point
    frame = ax.get_window_extent(renderer)
    anchors = ax.transData.transform([(x, y) for x, y, _, _ in labels])
    half = (marker_size / 2 + 1) * pixels  # half a marker, and a little room
    boxes = [*([b.x0, b.y0, b.x1, b.y1] for b in avoid), *([px - half, py - half, px + half, py + half]
                                                            for px, py in anchors)]
    lines = _line_points(ax, spacing=2 * pixels)
    for i, ((x, y, text, colour), (px, py)) in enumerate(zip(labels, anchors)):
        probe = ax.text(0, 0, text, fontsize=7)
        extent = probe.get_window_extent(renderer)
        probe.remove()
        taken = np.array(boxes)
        best = None
        for dx, dy in _OFFSETS:
            # The box as annotate() aligns it: left of the point for a negative dx, and so on.
            x0 = px + dx * pixels - (extent.width if dx < 0 else extent.width / 2 if dx == 0 else 0)
            y0 = py + dy * pixels - (extent.height if dy < 0 else extent.height / 2 if dy == 0 else 0)
            x1, y1 = x0 + extent.width, y0 + extent.height
            inside = frame.x0 <= x0 and x1 <= frame.x1 and frame.y0 <= y0 and y1 <= frame.y1
            width = np.clip(np.minimum(x1, taken[:, 2]) - np.maximum(x0, taken[:, 0]), 0, None)
            height = np.clip(np.minimum(y1, taken[:, 3]) - np.maximum(y0, taken[:, 1]), 0, None)
            crossed = np.count_nonzero((lines[:, 0] > x0) & (lines[:, 0] < x1) & (lines[:, 1] > y0) & (lines[:, 1] < y1))
            # Distance from the box to each point: a label nearer another point reads as that one's.
            reach = np.hypot(np.maximum(np.maximum(x0 - anchors[:, 0], anchors[:, 0] - x1), 0),
                             np.maximum(np.maximum(y0 - anchors[:, 1], anchors[:, 1] - y1), 0))
            ambiguous = bool((np.delete(reach, i) < reach[i]).any())
            cost = (not inside, float((width * height).sum()), ambiguous, crossed)
            if best is None or cost < best[0]:
                best = (cost, dx, dy, [x0, y0, x1, y1])
            if cost == (False, 0.0, False, 0):
                break
        _, dx, dy, box = best
        far = max(abs(dx), abs(dy)) > _OFFSETS[0][0]
        ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=7, color=colour,
                    ha="left" if dx > 0 else "right" if dx < 0 else "center",
                    va="bottom" if dy > 0 else "top" if dy < 0 else "center",
                    arrowprops={"arrowstyle": "-", "color": colour, "linewidth": 0.6, "shrinkA": 0, "shrinkB": 4}
                    if far else None).set_in_layout(False)
        boxes.append(box)


def _line_points(ax, spacing: float) -> np.ndarray:
    """``[n, 2]`` display points every ``spacing`` pixels along the drawn lines and error bars."""
    from matplotlib.collections import LineCollection

    segments = []
    for line in ax.lines:
        if line.get_linestyle() not in ("None", "none", "", " "):  # markers alone are points, not lines
            xy = line.get_transform().transform(line.get_xydata())
            segments.extend(itertools.pairwise(xy))
    for collection in ax.collections:
        if not isinstance(collection, LineCollection):  # error bars are; fill_between's bands are areas
            continue
        for segment in collection.get_segments():
            xy = collection.get_transform().transform(segment)
            segments.extend(itertools.pairwise(xy))
    points = [np.linspace(a, b, 2 + int(np.hypot(*(b - a)) / spacing)) for a, b in segments]
    return np.concatenate(points) if points else np.zeros((0, 2))


# pyarrow.array() imports pandas, whatever it is given (half a second, more than writing the
# B1 sweep's history), to ask whether its argument is a pandas object: the arrays of numbers
# and of categories are built from their buffers instead.


def _arrow_numbers(pa, values: np.ndarray):
    """A numeric numpy column as an Arrow array, sharing its memory."""
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])


def _arrow_categorical(pa, codes: np.ndarray, categories: Sequence[str]):
    """int8 ``codes`` into ``categories`` (-1: missing) as a dictionary-encoded string array."""
    encoded = [category.encode() for category in categories]
    offsets = np.cumsum([0, *map(len, encoded)], dtype=np.int32)
    dictionary = pa.StringArray.from_buffers(len(encoded), pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded)))
    codes = np.ascontiguousarray(codes, dtype=np.int8)
    valid = np.packbits(codes >= 0, bitorder="little")
    indices = pa.Array.from_buffers(pa.int8(), len(codes), [pa.py_buffer(valid), pa.py_buffer(codes)])
    return pa.DictionaryArray.from_arrays(indices, dictionary)


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _is_kl(name: str) -> bool:
    return "kl" in name.split("_")


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:.1f} {unit}"


def text_table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    """``lines`` of cells under ``header``, each column right-aligned to its widest cell, with a
    rule of dashes under the header."""
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = ["  ".join(h.rjust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


def new_figure(path: str | os.PathLike | None, **figure):
    """An empty figure: a bare one to save from a script, pyplot's where pyplot may show it.

    A script that saves a figure and never imported pyplot gets a plain
    :class:`matplotlib.figure.Figure`, which saves through the Agg canvas and is freed like
    any object: importing pyplot and its backend machinery would be a sixth of the CLI's B1
    sweep command. A session that uses pyplot, or asks for a figure without saving it (to
    show it), gets one from :func:`matplotlib.pyplot.figure`.

    Parameters
    ----------
    path : str or os.PathLike or None
        Where the caller saves the figure, or None.
    **figure
        Keyword arguments of :class:`matplotlib.figure.Figure` (``figsize``, ``layout``, ...).

    Returns
    -------
    matplotlib.figure.Figure
    """
    _require("matplotlib", "a plot")
    if path is not None and "matplotlib.pyplot" not in sys.modules:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(**figure)
        FigureCanvasAgg(fig)  # a renderer for laying out labels; savefig picks the file's own
        return fig
    import matplotlib.pyplot as plt

    return plt.figure(**figure)


def _require(module: str, what: str):
    try:
        return __import__(module)
    except ImportError as err:
        raise ImportError(f"{what} needs {module}, a dependency of rlhf_fast missing here: pip install {module}") from err
