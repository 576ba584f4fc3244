"""The methods the lesson sets against PPO -- DPO, GRPO, Best-of-N -- and their sweeps.

``dpo_step``, ``train_dpo``, ``grpo_step``, ``train_grpo`` and ``best_of_n`` have the names,
arguments and numbers of their twins in :mod:`rlhf_fast.reference` (docs/METHODS.md
sections 2-4): the same tokens for the same seed, floats within 1e-9 (in practice
bit-identical). On the Rust backend they run in ``rlhf_fast._core``; with
``RLHF_FAST_BACKEND=python`` they are the reference's own functions.

``sweep_dpo``, ``sweep_grpo`` and ``sweep_best_of_n`` run a grid of such runs in parallel
(every core, numpy out, whatever the thread count the same arrays) and return small result
objects indexed ``[*axes, seed, step]``, like :class:`rlhf_fast.sweep.SweepResult`. Run
``(beta_i, ..., seed_j)`` of a sweep is the single-run function with those arguments.
"""

from __future__ import annotations

import math
import numbers
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import reference
from ._backend import BACKEND
from .reference import PROMPTS, VOCAB, KLWarning, init_policy

__all__ = [
    "dpo_step",
    "train_dpo",
    "grpo_step",
    "train_grpo",
    "best_of_n",
    "sweep_dpo",
    "DPOSweepResult",
    "sweep_grpo",
    "GRPOSweepResult",
    "sweep_best_of_n",
    "BestOfNSweepResult",
]

DPO_LOSS_TYPES = ("sigmoid", "robust", "ipo", "hinge")
SCALE_REWARDS = ("group", "none")
# TRL's per-step DPO statistics, and the attribute each is kept under in a DPOSweepResult.
DPO_HISTORY_FIELDS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")
_DPO_ATTRS = dict(zip(DPO_HISTORY_FIELDS, ("loss", "chosen", "rejected", "margins", "accuracies")))
DPO_SUMMARY_FIELDS = ("final_score", "final_kl", "last_epoch_loss", "last_epoch_accuracy", "last_epoch_margin")
GRPO_HISTORY_FIELDS = ("score", "reward_std", "kl", "clip_frac", "loss", "mean_kl")
GRPO_SUMMARY_FIELDS = (
    "final_score", "final_kl", "mean_score", "mean_reward_std", "mean_kl", "clip_frac", "mean_loss"
)
BON_FIELDS = ("expected_score", "kl_analytic", "kl_exact", "sampled_score")


# --------------------------------------------------------------------------- argument checks


def _real(name: str, value: Any) -> float:
    """A real number (not a bool): the reference's TypeError before the core sees it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def _optional_real(name: str, value: Any) -> float | None:
    return None if value is None else _real(name, value)


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return int(value)


def _str(name: str, value: Any, options: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, one of {options}, got {type(value).__name__}")
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def _kl_threshold(value: Any) -> float:
    value = _real("kl_threshold", value)
    if not math.isfinite(value):
        raise ValueError(f"kl_threshold must be finite, got {value!r}")
    if value <= 0.0:
        raise ValueError(f"kl_threshold must be > 0, got {value!r}")
    return value


def _scores_by_content(w: Any) -> None:
    """Refuse a reward model whose every ``VOCAB`` word weighs the same (the reference's rule)."""
    if not isinstance(w, Mapping):
        raise TypeError(f"w must be a dict token -> weight, got {type(w).__name__}")
    weights = [w.get(tok, 0.0) for tok in VOCAB]
    for tok, value in zip(VOCAB, weights):
        _real(f"w[{tok!r}]", value)
    first = float(weights[0])
    if all(float(v) == first for v in weights):
        raise ValueError(
            f"w scores responses by length alone: every word of VOCAB weighs {first!r}, so every "
            "one-token response gets the same reward and there is nothing to optimise "
            "(train the reward model first)"
        )


def _warn_past(mean_kl: np.ndarray, kl_threshold: float) -> None:
    over = np.flatnonzero(mean_kl > kl_threshold)
    if over.size:
        t = int(over[0])
        warnings.warn(
            f"mean KL(pi_theta || pi_ref) = {mean_kl[t]:.3g} passed {kl_threshold:g} at step {t}: "
            "the policy is drifting from the reference (raise beta or stop early)",
            KLWarning,
            stacklevel=3,
        )


# ------------------------------------------------------------------ the single-run functions

if BACKEND == "rust":
    from . import _core

    def dpo_step(
        theta: dict[str, list[float]] | np.ndarray,
        ref: Mapping[str, Sequence[float]] | np.ndarray,
        x: str,
        y_pos: str | Sequence[str],
        y_neg: str | Sequence[str],
        beta: float = 0.1,
        lr: float = 0.05,
        loss_type: str = "sigmoid",
        label_smoothing: float = 0.0,
    ) -> float:
        """One SGD step on a DPO loss; mutates ``theta[x]`` and returns the loss before it.

        ``loss_type`` is TRL's: ``sigmoid`` (with ``label_smoothing``: cDPO), ``robust``,
        ``ipo`` or ``hinge`` (docs/METHODS.md section 2). Same arguments and numbers as
        :func:`rlhf_fast.reference.dpo_step`; ``theta`` may also be a float64 ``[3, 8]`` array.
        """
        record = _core.dpo_step_metrics(
            theta, ref, x, y_pos, y_neg, _real("beta", beta), _real("lr", lr),
            _str("loss_type", loss_type, DPO_LOSS_TYPES), _real("label_smoothing", label_smoothing),
        )
        return record["loss"]

    def train_dpo(
        theta: dict[str, list[float]] | np.ndarray,
        ref: Mapping[str, Sequence[float]] | np.ndarray,
        pairs: Sequence[tuple[str, str, str] | Mapping[str, str]],
        epochs: int = 1,
        beta: float = 0.1,
        lr: float = 0.05,
        loss_type: str = "sigmoid",
        label_smoothing: float = 0.0,
        seed: int | None = None,
    ) -> dict[str, np.ndarray]:
        """``epochs`` passes of :func:`dpo_step` over ``pairs``, run entirely in Rust.

        Same arguments and numbers as :func:`rlhf_fast.reference.train_dpo` (pairs in order,
        or reshuffled every epoch on ``random.Random(seed)``); ``theta`` is updated in place.
        Returns the per-step history as numpy arrays: ``prompt``, ``loss``,
        ``rewards/chosen``, ``rewards/rejected``, ``rewards/margins``, ``rewards/accuracies``.
        """
        return _core.train_dpo(
            theta, ref, pairs, _int("epochs", epochs), _real("beta", beta), _real("lr", lr),
            _str("loss_type", loss_type, DPO_LOSS_TYPES), _real("label_smoothing", label_smoothing),
            None if seed is None else _int("seed", seed),
        )

    def grpo_step(
        theta: dict[str, list[float]] | np.ndarray,
        ref: Mapping[str, Sequence[float]] | np.ndarray,
        w: Mapping[str, float],
        prompt: str,
        rng: Any,
        num_generations: int = 8,
        beta: float = 0.04,
        epsilon: float = 0.2,
        epsilon_high: float | None = None,
        lr: float = 0.05,
        scale_rewards: str = "group",
        num_iterations: int = 1,
    ) -> dict:
        """One GRPO step on ``prompt`` (docs/METHODS.md section 3); mutates ``theta[prompt]``.

        Draws ``num_generations`` tokens with ``rng.random()``; returns ``tokens``, ``score``,
        ``reward_std``, ``kl``, ``clip_frac`` and ``loss`` as the reference does.
        """
        return _core.grpo_step(
            theta, ref, w, prompt, rng, _int("num_generations", num_generations), _real("beta", beta),
            _real("epsilon", epsilon), _optional_real("epsilon_high", epsilon_high), _real("lr", lr),
            _str("scale_rewards", scale_rewards, SCALE_REWARDS), _int("num_iterations", num_iterations),
        )

    def train_grpo(
        theta: dict[str, list[float]] | np.ndarray,
        ref: Mapping[str, Sequence[float]] | np.ndarray,
        w: Mapping[str, float],
        steps: int,
        seed: int,
        num_generations: int = 8,
        beta: float = 0.04,
        epsilon: float = 0.2,
        epsilon_high: float | None = None,
        lr: float = 0.05,
        scale_rewards: str = "group",
        num_iterations: int = 1,
        kl_threshold: float = 5.0,
    ) -> dict[str, np.ndarray]:
        """``steps`` GRPO steps on ``random.Random(seed)``'s stream, run entirely in Rust.

        Same arguments and numbers as :func:`rlhf_fast.reference.train_grpo`; ``theta`` is
        updated in place. Returns the per-step history as numpy arrays (``prompt``,
        ``score``, ``reward_std``, ``kl``, ``clip_frac``, ``loss``, ``mean_kl``) and warns with
        :class:`KLWarning` once the running mean KL passes ``kl_threshold``. A reward model
        that scores responses by length alone is refused (ValueError naming ``w``).
        """
        options = (
            _int("num_generations", num_generations), _real("beta", beta), _real("epsilon", epsilon),
            _optional_real("epsilon_high", epsilon_high), _real("lr", lr),
            _str("scale_rewards", scale_rewards, SCALE_REWARDS), _int("num_iterations", num_iterations),
        )
        threshold = _kl_threshold(kl_threshold)
        history = _core.train_grpo(theta, ref, w, _int("steps", steps), _int("seed", seed), *options)
        _warn_past(history["mean_kl"], threshold)
        return history

    def best_of_n(
        policy: Mapping[str, Sequence[float]] | np.ndarray,
        w: Mapping[str, float],
        n: int,
        samples: int = 0,
        seed: int = 0,
    ) -> dict:
        """Best-of-``n`` from ``policy`` (usually ``ref``) against ``w`` (docs/METHODS.md section 4).

        Returns ``expected_score``, ``kl_analytic`` (``log n - (n - 1) / n``), ``kl_exact``,
        ``distribution`` (prompt -> the law of the kept token) and ``sampled_score`` (the
        Monte-Carlo mean kept score on ``random.Random(seed)`` with ``samples > 0``, else
        ``None``), as :func:`rlhf_fast.reference.best_of_n`.
        """
        return _core.best_of_n(policy, w, _int("n", n), _int("samples", samples), _int("seed", seed))

else:
    from .reference import best_of_n, dpo_step, grpo_step, train_dpo, train_grpo  # noqa: F401


# ------------------------------------------------------------------------------- the sweeps


def _total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _check_memory(need: int, max_memory: int | None, what: str) -> None:
    limit = _total_memory() // 2 if max_memory is None else max_memory
    if need > limit:
        raise ValueError(
            f"this sweep would keep {need / 2**30:.1f} GiB of history ({what}), over "
            f"max_memory={limit / 2**30:.1f} GiB: pass record_every=k to keep every k-th step "
            "(or 0 for summaries only)"
        )


def _axis(name: str, value: Any, check: Callable[[str, Any], Any]) -> tuple[list, bool]:
    """``(values, is_axis)``: a sequence is a grid axis, a scalar a constant."""
    if value is None or isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        return [check(name, value)], False
    values = [check(f"{name}[{i}]", v) for i, v in enumerate(value)]
    if not values:
        raise ValueError(f"{name} must not be empty")
    return values, True


def _bounded(lower: float | None = None, strict: bool = False) -> Callable[[str, Any], float]:
    def check(name: str, value: Any) -> float:
        value = _real(name, value)
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
        if lower is not None and (value <= lower if strict else value < lower):
            raise ValueError(f"{name} must be {'>' if strict else '>='} {lower:g}, got {value!r}")
        return value

    return check


def _count(lower: int) -> Callable[[str, Any], int]:
    def check(name: str, value: Any) -> int:
        value = _int(name, value)
        if value < lower:
            raise ValueError(f"{name} must be >= {lower}, got {value!r}")
        return value

    return check


def _option(options: tuple[str, ...]) -> Callable[[str, Any], str]:
    return lambda name, value: _str(name, value, options)


def _optional(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    return lambda name, value: None if value is None else check(name, value)


def _seed_axis(seeds: Any, allow_none: bool) -> list:
    """A count ``N`` (seeds ``0..N-1``) or a list of ints (``None``: the pairs in order)."""
    if seeds is None and allow_none:
        return [None]
    if isinstance(seeds, numbers.Integral) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1 (a count) or a list of ints, got {seeds!r}")
        return list(range(int(seeds)))
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, (Sequence, np.ndarray)):
        raise TypeError(f"seeds must be an int count or a sequence of ints, got {type(seeds).__name__}")
    check = _optional(_int) if allow_none else _int
    values = [check(f"seeds[{i}]", s) for i, s in enumerate(seeds)]
    if not values:
        raise ValueError("seeds must not be empty")
    return values


def _policy_array(name: str, policy: Any) -> np.ndarray:
    if policy is None:
        return np.zeros((len(PROMPTS), len(VOCAB)))
    if isinstance(policy, Mapping):
        missing = [p for p in PROMPTS if p not in policy]
        if missing:
            raise ValueError(f"{name} has no logits for prompt {missing[0]!r}")
        return np.array([list(policy[p]) for p in PROMPTS], dtype=np.float64)
    return np.ascontiguousarray(policy, dtype=np.float64)


def _as_dict(table: np.ndarray) -> dict[str, list[float]]:
    return {x: [float(v) for v in row] for x, row in zip(PROMPTS, table)}


@contextmanager
def _progress(progress: bool | Callable[[int], None], total: int, desc: str):
    """The callback to hand a sweep engine for a ``progress`` request (a tqdm bar for ``True``,
    closed when the sweep ends, however it ends)."""
    if callable(progress) or not progress:
        yield progress or None
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is an optional extra
        yield None
        return
    bar = tqdm(total=total, unit="step", unit_scale=True, smoothing=0.1, desc=desc)
    try:
        yield bar.update
    finally:
        bar.close()


def _mean(values: Sequence[float]) -> float:
    """Left to right, as the Rust summaries sum."""
    total = 0.0
    for v in values:
        total += v
    return total / len(values)


def _grid(axes: dict[str, list], constants: dict[str, Any]) -> list[dict[str, Any]]:
    shape = tuple(len(v) for v in axes.values())
    return [{**constants, **{a: axes[a][i] for a, i in zip(axes, index)}} for index in np.ndindex(*shape)]


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


class _Grid:
    """What the sweep results share: the grid's axes, one run's index, per-point summaries."""

    axes: dict[str, list]
    runs: dict[str, np.ndarray]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.axes.values())

    def _index(self, where: dict[str, Any]) -> tuple[int, ...]:
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

    def summary(self) -> list[dict[str, Any]]:
        """Per grid point (seeds pooled): mean and standard deviation over seeds of each run summary."""
        point_axes = [a for a in self.axes if a != "seed"]
        n_seeds = len(self.axes["seed"])
        rows = []
        for index in np.ndindex(*[len(self.axes[a]) for a in point_axes]):
            row: dict[str, Any] = {a: self.axes[a][i] for a, i in zip(point_axes, index)}
            row["seeds"] = n_seeds
            for name, values in self.runs.items():
                over_seeds = values[index]
                row[name] = float(np.mean(over_seeds))
                row[f"{name}_std"] = float(np.std(over_seeds, ddof=1)) if n_seeds > 1 else 0.0
            rows.append(row)
        return rows

    _TABLE: tuple[tuple[str, str], ...] = ()

    def summary_table(self) -> str:
        """:meth:`summary` as aligned text."""
        rows = self.summary()
        shown = [a for a in self.axes if a != "seed"]
        header = [*shown, "seeds", *(title for _, title in self._TABLE)]
        lines = []
        for row in rows:
            cells = [_fmt(row[a]) for a in shown]
            cells.append(str(row["seeds"]))
            for name, _ in self._TABLE:
                cells.append(f"{row[name]:.3f} ± {row[name + '_std']:.3f}")
            lines.append(cells)
        widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
        out = ["  ".join(h.rjust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
        out.extend("  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines)
        return "\n".join(out)

    def _long(self, series: dict[str, np.ndarray], steps: np.ndarray):
        import pandas as pd

        grid = np.meshgrid(*[np.arange(len(v)) for v in self.axes.values()], np.arange(len(steps)), indexing="ij")
        columns: dict[str, Any] = {}
        for (axis, values), idx in zip(self.axes.items(), grid[:-1]):
            columns[axis] = np.asarray(values, dtype=object)[idx.ravel()]
        columns["step"] = steps[grid[-1].ravel()]
        for name, values in series.items():
            columns[name] = values.ravel()
        return pd.DataFrame(columns)


# ------------------------------------------------------------------------------- DPO sweep


@dataclass
class DPOSweepResult(_Grid):
    """A finished DPO sweep; arrays are indexed ``[*axes, step]`` (``[beta, seed, step]`` for a
    beta x seed grid).

    ``axes`` maps each grid axis to its values in index order (``beta`` first, then any of
    ``loss_type``, ``label_smoothing``, ``lr``, ``epochs`` given as sequences, ``seed`` last;
    seed ``None`` walks the pairs in order). History arrays (TRL's ``loss``,
    ``rewards/chosen`` as ``chosen``, ``rewards/rejected``, ``rewards/margins``,
    ``rewards/accuracies``) keep the steps in ``steps``; a run with fewer epochs than the
    longest is padded with NaN (``prompt`` -1). ``runs`` holds per-run summaries:
    ``final_score`` (exact expected RM score of the final policy, NaN without ``w``),
    ``final_kl`` (its exact KL to the reference averaged over prompts) and the means over
    the run's last epoch of the loss, accuracy and margin.
    """

    axes: dict[str, list]
    steps: np.ndarray
    total_steps: int
    prompt: np.ndarray
    loss: np.ndarray
    chosen: np.ndarray
    rejected: np.ndarray
    margins: np.ndarray
    accuracies: np.ndarray
    final_theta: np.ndarray
    runs: dict[str, np.ndarray]
    seconds: float = field(default=0.0)

    _TABLE = (
        ("final_score", "final E[score]"),
        ("final_kl", "final KL"),
        ("last_epoch_loss", "last-epoch loss"),
        ("last_epoch_accuracy", "accuracy"),
    )

    def run(self, **where: Any) -> dict[str, np.ndarray]:
        """One run's history in TRL's names, e.g. ``result.run(beta=0.1, seed=3)``."""
        i = self._index(where)
        out = {"prompt": self.prompt[i]}
        out.update({name: getattr(self, attr)[i] for name, attr in _DPO_ATTRS.items()})
        return out

    def to_pandas(self):
        """Long format: one row per run and kept step, TRL's metric names."""
        series = {"prompt": self.prompt, **{name: getattr(self, attr) for name, attr in _DPO_ATTRS.items()}}
        return self._long(series, self.steps)


def _tokenised(pairs: Any) -> list:
    """Pairs as a list (a generator is read once), ``PreferenceSet`` refused: its bags lost the order."""
    if hasattr(pairs, "bags") or type(pairs).__name__ == "PreferenceSet":
        raise TypeError(
            "pairs must be (prompt, chosen, rejected) triples or rows, not a PreferenceSet "
            "(its bags lose the token order DPO sums log-probabilities in): pass pairs.to_pairs()"
        )
    if isinstance(pairs, (str, bytes)) or not hasattr(pairs, "__iter__"):
        raise TypeError(
            f"pairs must be a sequence of (prompt, chosen, rejected) triples or rows, got {type(pairs).__name__}"
        )
    return list(pairs)


def _reference_sweep_dpo(theta, ref, pairs, runs, w=None, record_every=1, n_threads=None, progress=None):
    """The DPO sweep engine's twin: one ``reference.train_dpo`` per run, the same output layout."""
    max_steps = max(epochs for *_, epochs, _ in runs) * len(pairs)
    kept = max_steps // record_every if record_every else 0
    n = len(runs)
    prompt = np.full((n, kept), -1, dtype=np.int32)
    history = np.full((n, len(DPO_HISTORY_FIELDS), kept), np.nan)
    final_theta = np.zeros((n, len(PROMPTS), len(VOCAB)))
    summary = np.zeros((n, len(DPO_SUMMARY_FIELDS)))
    frozen = _as_dict(ref)
    for r, (beta, lr, loss_type, label_smoothing, epochs, seed) in enumerate(runs):
        policy = _as_dict(theta)
        out = reference.train_dpo(
            policy, frozen, pairs, epochs=epochs, beta=beta, lr=lr, loss_type=loss_type,
            label_smoothing=label_smoothing, seed=seed,
        )
        steps = len(out["loss"])
        if kept:
            sel = slice(record_every - 1, steps, record_every)
            got = len(out["loss"][sel])
            prompt[r, :got] = out["prompt"][sel]
            for f, name in enumerate(DPO_HISTORY_FIELDS):
                history[r, f, :got] = out[name][sel]
        last = slice(steps - len(pairs), steps)
        summary[r] = [
            reference.expected_score(policy, w) if w is not None else math.nan,
            reference.policy_kl(policy, frozen),
            _mean(out["loss"][last]),
            _mean(out["rewards/accuracies"][last]),
            _mean(out["rewards/margins"][last]),
        ]
        final_theta[r] = [policy[x] for x in PROMPTS]
        if progress is not None:
            progress(steps)
    return {
        "prompt": prompt, "history": history, "history_fields": list(DPO_HISTORY_FIELDS),
        "final_theta": final_theta, "summary": summary, "summary_fields": list(DPO_SUMMARY_FIELDS),
    }


def sweep_dpo(
    pairs: Sequence[tuple[str, str, str] | Mapping[str, str]],
    *,
    betas: Sequence[float],
    seeds: int | Sequence[int | None] | None = None,
    loss_type: str | Sequence[str] = "sigmoid",
    label_smoothing: float | Sequence[float] = 0.0,
    lr: float | Sequence[float] = 0.05,
    epochs: int | Sequence[int] = 1,
    theta: Any = None,
    ref: Any = None,
    w: Mapping[str, float] | None = None,
    record_every: int = 1,
    n_threads: int | None = None,
    progress: bool | Callable[[int], None] = False,
    max_memory: int | None = None,
) -> DPOSweepResult:
    """Every DPO run of the grid ``betas x loss_type x label_smoothing x lr x epochs x seeds``.

    Run ``(beta, ..., seed)`` is ``train_dpo(theta, ref, pairs, epochs=..., beta=...,
    lr=..., loss_type=..., label_smoothing=..., seed=seed)`` from a copy of ``theta``
    (uniform by default) against ``ref`` (uniform by default). ``seeds`` are the shuffle
    seeds: a count (``0..N-1``), a list, or ``None`` (default: one run per point, the pairs
    in order). ``loss_type``, ``label_smoothing``, ``lr`` and ``epochs`` given as
    sequences become grid axes between ``beta`` and ``seed``; a point pairing a non-zero
    ``label_smoothing`` with ``ipo`` or ``hinge`` is refused, as ``train_dpo`` refuses it.
    ``w`` (optional) scores each final policy (``runs["final_score"]``).

    Runs go to Rust on every core (``n_threads`` threads; ``RAYON_NUM_THREADS`` sets the
    default); the arrays do not depend on the thread count. ``record_every=k`` keeps every
    k-th step (0: summaries only). ``progress=True`` shows a tqdm bar (a callable gets the
    steps finished since its last call). Ctrl-C stops the sweep.
    """
    pairs = _tokenised(pairs)
    if isinstance(betas, (str, bytes)) or not isinstance(betas, (Sequence, np.ndarray)):
        raise TypeError("betas must be a sequence of floats")
    betas_list, _ = _axis("betas", betas, _bounded(0.0, strict=True))
    seed_list = _seed_axis(seeds, allow_none=True)
    record_every = _count(0)("record_every", record_every)
    if n_threads is not None:
        n_threads = _count(1)("n_threads", n_threads)
    checks = {
        "loss_type": _option(DPO_LOSS_TYPES),
        "label_smoothing": _bounded(0.0),
        "lr": _bounded(0.0, strict=True),
        "epochs": _count(1),
    }
    given = {"loss_type": loss_type, "label_smoothing": label_smoothing, "lr": lr, "epochs": epochs}
    axes: dict[str, list] = {"beta": betas_list}
    constants: dict[str, Any] = {}
    for name, check in checks.items():
        values, is_axis = _axis(name, given[name], check)
        if is_axis:
            axes[name] = values
        else:
            constants[name] = values[0]
    axes["seed"] = seed_list
    settings = _grid(axes, constants)
    for s in settings:
        if not 0.0 <= s["label_smoothing"] < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {s['label_smoothing']!r}")
        if s["label_smoothing"] != 0.0 and s["loss_type"] not in ("sigmoid", "robust"):
            raise ValueError(
                "label_smoothing is only defined for loss_type 'sigmoid' and 'robust', got "
                f"{s['label_smoothing']!r} with loss_type={s['loss_type']!r}: sweep those losses separately"
            )
    if not pairs:
        raise ValueError("pairs must not be empty")
    runs = [(s["beta"], s["lr"], s["loss_type"], s["label_smoothing"], s["epochs"], s["seed"]) for s in settings]
    max_steps = max(r[4] for r in runs) * len(pairs)
    kept = max_steps // record_every if record_every else 0
    _check_memory(len(runs) * (kept * (4 + 5 * 8) + 32 * 8), max_memory, f"{len(runs)} runs x {kept} steps")

    theta0 = _policy_array("theta", theta if theta is not None else init_policy())
    ref0 = _policy_array("ref", ref if ref is not None else init_policy())
    if w is not None:
        _scores_or_type(w)
    started = time.perf_counter()
    with _progress(progress, sum(r[4] for r in runs) * len(pairs), "sweep_dpo") as callback:
        out = _dpo_engine(theta0, ref0, pairs, runs, w=w, record_every=record_every, n_threads=n_threads,
                          progress=callback)
    seconds = time.perf_counter() - started
    shape = tuple(len(v) for v in axes.values())

    def grid(array: np.ndarray) -> np.ndarray:
        return array.reshape(*shape, *array.shape[1:])

    history = grid(out["history"])  # [*axes, field, step]: each field a view, no copy
    return DPOSweepResult(
        axes=axes,
        steps=np.arange(record_every - 1, max_steps, record_every) if record_every else np.zeros(0, dtype=np.int64),
        total_steps=max_steps,
        prompt=grid(out["prompt"]),
        **{attr: history[..., f, :] for f, attr in enumerate(_DPO_ATTRS.values())},
        final_theta=grid(out["final_theta"]),
        runs={name: grid(out["summary"][:, i]) for i, name in enumerate(out["summary_fields"])},
        seconds=seconds,
    )


def _scores_or_type(w: Any) -> None:
    """``w`` a dict of finite real weights (any weights: DPO only scores its final policies)."""
    if not isinstance(w, Mapping):
        raise TypeError(f"w must be a dict token -> weight, got {type(w).__name__}")
    for tok, value in w.items():
        value = _real(f"w[{tok!r}]", value)
        if not math.isfinite(value):
            raise ValueError(f"w[{tok!r}] must be finite, got {value!r}")


# ------------------------------------------------------------------------------ GRPO sweep


@dataclass
class GRPOSweepResult(_Grid):
    """A finished GRPO sweep; arrays are indexed ``[*axes, step]`` (``[beta, seed, step]`` for a
    beta x seed grid).

    ``axes``: ``beta`` first, then any of ``num_generations``, ``epsilon``, ``lr``,
    ``num_iterations`` given as sequences, ``seed`` last. History arrays (``prompt``,
    ``score`` the group's mean reward, ``reward_std``, the exact ``kl``, ``clip_frac``,
    ``loss``, the running ``mean_kl``) keep the steps in ``steps``; ``final_theta`` is
    ``[*axes, P, V]``; ``runs`` holds per-run summaries (``final_score``, ``final_kl``, and
    means over all steps ``mean_score``, ``mean_reward_std``, ``mean_kl``, ``clip_frac``,
    ``mean_loss``), each ``[*axes]``.
    """

    axes: dict[str, list]
    steps: np.ndarray
    total_steps: int
    prompt: np.ndarray
    score: np.ndarray
    reward_std: np.ndarray
    kl: np.ndarray
    clip_frac: np.ndarray
    loss: np.ndarray
    mean_kl: np.ndarray
    final_theta: np.ndarray
    runs: dict[str, np.ndarray]
    seconds: float = field(default=0.0)

    _TABLE = (
        ("final_score", "final E[score]"),
        ("final_kl", "final KL"),
        ("mean_kl", "mean KL"),
        ("clip_frac", "clip frac"),
    )

    def run(self, **where: Any) -> dict[str, np.ndarray]:
        """One run's history, e.g. ``result.run(beta=0.04, seed=3)``."""
        i = self._index(where)
        return {name: getattr(self, name)[i] for name in ("prompt", *GRPO_HISTORY_FIELDS)}

    def to_pandas(self):
        """Long format: one row per run and kept step."""
        return self._long({name: getattr(self, name) for name in ("prompt", *GRPO_HISTORY_FIELDS)}, self.steps)


def _reference_sweep_grpo(theta, ref, w, steps, runs, record_every=1, n_threads=None, progress=None):
    """The GRPO sweep engine's twin: one ``reference.train_grpo`` per run, the same output layout."""
    kept = slice(record_every - 1, None, record_every) if record_every else slice(0, 0)
    n = len(runs)
    n_kept = steps // record_every if record_every else 0
    prompt = np.zeros((n, n_kept), dtype=np.uint8)
    history = np.zeros((n, len(GRPO_HISTORY_FIELDS), n_kept))
    final_theta = np.zeros((n, len(PROMPTS), len(VOCAB)))
    summary = np.zeros((n, len(GRPO_SUMMARY_FIELDS)))
    frozen = _as_dict(ref)
    for r, (seed, g, beta, epsilon, epsilon_high, lr, scale_rewards, iterations) in enumerate(runs):
        policy = _as_dict(theta)
        out = reference.train_grpo(
            policy, frozen, w, steps, seed, num_generations=g, beta=beta, epsilon=epsilon,
            epsilon_high=epsilon_high, lr=lr, scale_rewards=scale_rewards, num_iterations=iterations,
            kl_threshold=sys.float_info.max,
        )
        prompt[r] = out["prompt"][kept]
        for f, name in enumerate(GRPO_HISTORY_FIELDS):
            history[r, f] = out[name][kept]
        summary[r] = [
            reference.expected_score(policy, w),
            reference.policy_kl(policy, frozen),
            *(_mean(out[name]) for name in ("score", "reward_std", "kl", "clip_frac", "loss")),
        ]
        final_theta[r] = [policy[x] for x in PROMPTS]
        if progress is not None:
            progress(steps)
    return {
        "prompt": prompt, "history": history, "history_fields": list(GRPO_HISTORY_FIELDS),
        "final_theta": final_theta, "summary": summary, "summary_fields": list(GRPO_SUMMARY_FIELDS),
    }


def sweep_grpo(
    w: Mapping[str, float],
    *,
    betas: Sequence[float],
    seeds: int | Sequence[int],
    steps: int,
    num_generations: int | Sequence[int] = 8,
    epsilon: float | Sequence[float] = 0.2,
    epsilon_high: float | None = None,
    lr: float | Sequence[float] = 0.05,
    scale_rewards: str = "group",
    num_iterations: int | Sequence[int] = 1,
    theta: Any = None,
    ref: Any = None,
    record_every: int = 1,
    n_threads: int | None = None,
    progress: bool | Callable[[int], None] = False,
    max_memory: int | None = None,
) -> GRPOSweepResult:
    """Every GRPO run of the grid ``betas x seeds`` (x ``num_generations``, ``epsilon``,
    ``lr``, ``num_iterations`` given as sequences, in that order between beta and seed).

    Run ``(beta, ..., seed)`` is ``train_grpo(theta, ref, w, steps, seed, beta=..., ...)``
    from a copy of ``theta`` (uniform by default) against ``ref`` (uniform by default): the
    same tokens, the same floats. ``seeds`` is a count (``0..N-1``) or a list. Runs go to
    Rust on every core (``n_threads``; ``RAYON_NUM_THREADS``), the arrays independent of
    the thread count; ``record_every=k`` keeps every k-th step (0: summaries only);
    ``progress`` as :func:`rlhf_fast.sweep_rlhf`. A reward model that scores responses by
    length alone is refused (ValueError naming ``w``).
    """
    _scores_by_content(w)
    if isinstance(betas, (str, bytes)) or not isinstance(betas, (Sequence, np.ndarray)):
        raise TypeError("betas must be a sequence of floats")
    betas_list, _ = _axis("betas", betas, _bounded(0.0))
    seed_list = _seed_axis(seeds, allow_none=False)
    steps = _count(1)("steps", steps)
    record_every = _count(0)("record_every", record_every)
    if n_threads is not None:
        n_threads = _count(1)("n_threads", n_threads)
    epsilon_high = _optional(_bounded(0.0, strict=True))("epsilon_high", epsilon_high)
    scale_rewards = _str("scale_rewards", scale_rewards, SCALE_REWARDS)
    checks = {
        "num_generations": _count(2),
        "epsilon": _bounded(0.0, strict=True),
        "lr": _bounded(0.0, strict=True),
        "num_iterations": _count(1),
    }
    given = {"num_generations": num_generations, "epsilon": epsilon, "lr": lr, "num_iterations": num_iterations}
    axes: dict[str, list] = {"beta": betas_list}
    constants: dict[str, Any] = {}
    for name, check in checks.items():
        values, is_axis = _axis(name, given[name], check)
        if is_axis:
            axes[name] = values
        else:
            constants[name] = values[0]
    axes["seed"] = seed_list
    runs = [
        (s["seed"], s["num_generations"], s["beta"], s["epsilon"], epsilon_high, s["lr"], scale_rewards,
         s["num_iterations"])
        for s in _grid(axes, constants)
    ]
    kept = steps // record_every if record_every else 0
    _check_memory(len(runs) * (kept * (1 + 6 * 8) + 32 * 8), max_memory, f"{len(runs)} runs x {kept} steps")

    theta0 = _policy_array("theta", theta if theta is not None else init_policy())
    ref0 = _policy_array("ref", ref if ref is not None else init_policy())
    started = time.perf_counter()
    with _progress(progress, len(runs) * steps, "sweep_grpo") as callback:
        out = _grpo_engine(theta0, ref0, w, steps, runs, record_every=record_every, n_threads=n_threads,
                           progress=callback)
    seconds = time.perf_counter() - started
    shape = tuple(len(v) for v in axes.values())

    def grid(array: np.ndarray) -> np.ndarray:
        return array.reshape(*shape, *array.shape[1:])

    history = grid(out["history"])  # [*axes, field, step]: each field a view, no copy
    return GRPOSweepResult(
        axes=axes,
        steps=np.arange(record_every - 1, steps, record_every) if record_every else np.zeros(0, dtype=np.int64),
        total_steps=steps,
        prompt=grid(out["prompt"]),
        **{name: history[..., f, :] for f, name in enumerate(GRPO_HISTORY_FIELDS)},
        final_theta=grid(out["final_theta"]),
        runs={name: grid(out["summary"][:, i]) for i, name in enumerate(out["summary_fields"])},
        seconds=seconds,
    )


# ------------------------------------------------------------------------- Best-of-N sweep


@dataclass
class BestOfNSweepResult(_Grid):
    """A finished Best-of-N sweep over ``axes = {"n": [...], "seed": [...]}``.

    ``expected_score``, ``kl_analytic`` and ``kl_exact`` are exact (``[n]``);
    ``sampled_score`` is the Monte-Carlo mean kept score of each run (``[n, seed]``, NaN
    with ``samples=0``). ``runs`` holds every field as ``[n, seed]`` for :meth:`summary`.
    """

    axes: dict[str, list]
    samples: int
    expected_score: np.ndarray
    kl_analytic: np.ndarray
    kl_exact: np.ndarray
    sampled_score: np.ndarray
    runs: dict[str, np.ndarray]
    seconds: float = field(default=0.0)

    _TABLE = (
        ("expected_score", "E[score]"),
        ("sampled_score", "sampled score"),
        ("kl_exact", "KL exact"),
        ("kl_analytic", "KL analytic"),
    )

    def to_pandas(self):
        """One row per ``(n, seed)`` run."""
        import pandas as pd

        n_idx, s_idx = np.meshgrid(np.arange(len(self.axes["n"])), np.arange(len(self.axes["seed"])), indexing="ij")
        columns: dict[str, Any] = {
            "n": np.asarray(self.axes["n"])[n_idx.ravel()],
            "seed": np.asarray(self.axes["seed"])[s_idx.ravel()],
        }
        for name in BON_FIELDS:
            columns[name] = self.runs[name].ravel()
        return pd.DataFrame(columns)


def _reference_sweep_best_of_n(policy, w, runs, n_threads=None, progress=None):
    """The Best-of-N sweep engine's twin: one ``reference.best_of_n`` per run."""
    table = _as_dict(policy)
    results = np.zeros((len(runs), len(BON_FIELDS)))
    for r, (n, samples, seed) in enumerate(runs):
        out = reference.best_of_n(table, w, n, samples=samples, seed=seed)
        sampled = out["sampled_score"]
        results[r] = [out["expected_score"], out["kl_analytic"], out["kl_exact"],
                      math.nan if sampled is None else sampled]
        if progress is not None:
            progress(samples)
    return {"results": results, "fields": list(BON_FIELDS)}


def sweep_best_of_n(
    w: Mapping[str, float],
    *,
    ns: Sequence[int],
    seeds: int | Sequence[int] = 1,
    samples: int = 0,
    policy: Any = None,
    n_threads: int | None = None,
    progress: bool | Callable[[int], None] = False,
) -> BestOfNSweepResult:
    """Best-of-N for every ``n`` of ``ns`` and every seed: run ``(n, seed)`` is
    ``best_of_n(policy, w, n, samples=samples, seed=seed)`` (``policy``: uniform, the SFT
    policy, by default). The exact statistics depend on ``n`` only; each seed adds a
    Monte-Carlo run of ``samples`` draws. Runs go to Rust on every core. A reward model
    that scores responses by length alone is refused (ValueError naming ``w``).
    """
    _scores_by_content(w)
    if isinstance(ns, (str, bytes)) or not isinstance(ns, (Sequence, np.ndarray)):
        raise TypeError("ns must be a sequence of ints")
    n_list, _ = _axis("ns", ns, _count(1))
    seed_list = _seed_axis(seeds, allow_none=False)
    samples = _count(0)("samples", samples)
    if n_threads is not None:
        n_threads = _count(1)("n_threads", n_threads)
    table = _policy_array("policy", policy if policy is not None else init_policy())
    runs = [(n, samples, seed) for n in n_list for seed in seed_list]
    started = time.perf_counter()
    with _progress(progress, len(runs) * samples, "sweep_best_of_n") as callback:
        out = _bon_engine(table, w, runs, n_threads=n_threads, progress=callback)
    seconds = time.perf_counter() - started
    results = out["results"].reshape(len(n_list), len(seed_list), len(BON_FIELDS))
    runs_by_field = {name: results[:, :, f] for f, name in enumerate(out["fields"])}
    return BestOfNSweepResult(
        axes={"n": n_list, "seed": seed_list},
        samples=samples,
        expected_score=runs_by_field["expected_score"][:, 0].copy(),
        kl_analytic=runs_by_field["kl_analytic"][:, 0].copy(),
        kl_exact=runs_by_field["kl_exact"][:, 0].copy(),
        sampled_score=runs_by_field["sampled_score"],
        runs=runs_by_field,
        seconds=seconds,
    )


if BACKEND == "rust":
    _dpo_engine = _core.sweep_dpo
    _grpo_engine = _core.sweep_grpo
    _bon_engine = _core.sweep_best_of_n
else:
    _dpo_engine = _reference_sweep_dpo
    _grpo_engine = _reference_sweep_grpo
    _bon_engine = _reference_sweep_best_of_n
