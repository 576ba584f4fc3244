"""Sweeps: a grid of PPO-RLHF runs (or reward models) in Rust, on every core, numpy out.

Run ``(beta_i, seed_j, ...)`` of :func:`sweep_rlhf` is ``reference.train_rlhf(...,
beta=beta_i, seed=seed_j, ...)``: the same tokens, floats within 1e-9, whatever the thread
count, the executor or the CPU's vector unit.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import reference
from ._backend import BACKEND
from .methods import _axis as _as_axis
from .methods import _bounded as _real
from .methods import _count as _integer
from .methods import _Grid, _mean, _policy_array, _progress, _scores_by_content, _seed_axis, _total_memory
from .reference import KL_CONTROLLERS, PROMPTS, VOCAB, init_policy

KL_PENALTIES = ("full", "k1", "k2", "k3")

__all__ = ["sweep_rlhf", "SweepResult", "sweep_rm", "RMSweepResult"]

HISTORY_FIELDS = ("prompt", "token", "score", "kl", "reward", "clip_frac", "beta", "mean_kl", "kl_penalty", "value_loss")
# TRL's names for the per-step statistics, where TRL has one.
TRL_NAMES = {
    "score": "objective/scores",
    "kl": "objective/kl",
    "reward": "objective/rlhf_reward",
    "clip_frac": "policy/clipfrac_avg",
    "beta": "objective/kl_coef",
    "value_loss": "loss/value_avg",
}
# Grid axes that may be given as a sequence, in the order they index the result.
_OPTIONAL_AXES = ("eps", "lr", "ppo_epochs", "kl_ctl", "target", "horizon", "kl_penalty", "vf_coef", "cliprange_value")
_BYTES_PER_KEPT_STEP = 2 * 1 + 8 * 8  # prompt and token as uint8, eight float64 series
SUMMARY_FIELDS = ("final_score", "final_kl", "mean_score", "mean_reward", "mean_kl", "clip_frac", "final_beta")


def _controller_name(name: str, value: Any) -> str:
    if value not in KL_CONTROLLERS:
        raise ValueError(f"{name} must be one of {KL_CONTROLLERS}, got {value!r}")
    return value


def _penalty_name(name: str, value: Any) -> str:
    if value not in KL_PENALTIES:
        raise ValueError(f"{name} must be one of {KL_PENALTIES}, got {value!r}")
    return value


@dataclass
class SweepResult(_Grid):
    """A finished PPO-RLHF sweep; arrays are indexed ``[*axes, step]`` (``[beta, seed, step]``
    for a beta x seed grid).

    ``axes`` maps each grid axis to its values, in index order (``beta`` first, ``seed``
    last). History arrays keep the steps in ``steps`` (every ``record_every``-th step, 0-based
    indices); ``final_theta`` is ``[*axes, P, V]`` and ``runs`` holds per-run summaries
    (``final_score``: exact expected RM score of the final policy, ``final_kl``: its exact KL
    to the reference averaged over prompts, ``mean_score``, ``mean_reward``, ``mean_kl``,
    ``clip_frac``: means over all steps, ``final_beta``), each ``[*axes]``.
    """

    axes: dict[str, list]
    steps: np.ndarray
    total_steps: int
    prompt: np.ndarray
    token: np.ndarray
    score: np.ndarray
    kl: np.ndarray
    reward: np.ndarray
    clip_frac: np.ndarray
    beta: np.ndarray
    mean_kl: np.ndarray
    kl_penalty: np.ndarray
    value_loss: np.ndarray
    final_theta: np.ndarray
    runs: dict[str, np.ndarray]
    simd: str
    seconds: float = field(default=0.0)

    _TABLE = (
        ("final_score", "final E[score]"),
        ("final_kl", "final KL"),
        ("mean_kl", "mean KL"),
        ("clip_frac", "clip frac"),
    )

    def run(self, **where: Any) -> dict[str, np.ndarray]:
        """One run's history, e.g. ``result.run(beta=0.1, seed=3)``."""
        i = self._index(where)
        return {name: getattr(self, name)[i] for name in HISTORY_FIELDS}

    def to_pandas(self):
        """Long format: one row per run and kept step, TRL's metric names where TRL has one."""
        import pandas as pd

        grid = np.meshgrid(*[np.arange(len(v)) for v in self.axes.values()], np.arange(len(self.steps)), indexing="ij")
        columns: dict[str, Any] = {}
        for (axis, values), idx in zip(self.axes.items(), grid[:-1]):
            columns[axis] = np.asarray(values, dtype=object if axis == "kl_ctl" else None)[idx.ravel()]
        columns["step"] = self.steps[grid[-1].ravel()]
        columns["prompt"] = self.prompt.ravel()
        columns["token"] = self.token.ravel()
        for name in ("score", "kl", "reward", "clip_frac", "beta", "mean_kl", "kl_penalty", "value_loss"):
            columns[TRL_NAMES.get(name, name)] = getattr(self, name).ravel()
        return pd.DataFrame(columns)

    def plot(self, path: str | os.PathLike | None = None, *, points: int = 60):
        """The lesson's medium exercise: RM score and KL over updates, and score against KL.

        One curve per grid point (beta), averaged over seeds in windows of the kept steps
        (``points`` windows), with a band of one standard deviation over seeds. Returns the
        matplotlib figure; saves it to ``path`` if given.
        """
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        n_kept = len(self.steps)
        if n_kept == 0:
            raise ValueError("this sweep kept no history (record_every=0): nothing to plot")
        windows = np.array_split(np.arange(n_kept), min(points, n_kept))
        x_steps = np.array([self.steps[w].mean() + 1 for w in windows])

        def windowed(series: np.ndarray) -> np.ndarray:  # [..., seed, kept] -> [..., seed, window]
            return np.stack([series[..., w].mean(axis=-1) for w in windows], axis=-1)

        score, kl = windowed(self.score), windowed(self.kl)
        point_axes = [a for a in self.axes if a != "seed"]
        fig, (ax_score, ax_kl, ax_front) = plt.subplots(1, 3, figsize=(15, 4.6), constrained_layout=True)
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for n, index in enumerate(np.ndindex(*[len(self.axes[a]) for a in point_axes])):
            label = ", ".join(f"{'β' if a == 'beta' else a}={self.axes[a][i]:g}" if isinstance(self.axes[a][i], float)
                              else f"{a}={self.axes[a][i]}" for a, i in zip(point_axes, index))
            colour = colours[n % len(colours)]
            s_mean, s_std = score[index].mean(axis=0), score[index].std(axis=0)
            k_mean, k_std = kl[index].mean(axis=0), kl[index].std(axis=0)
            ax_score.plot(x_steps, s_mean, color=colour, label=label)
            ax_score.fill_between(x_steps, s_mean - s_std, s_mean + s_std, color=colour, alpha=0.15)
            ax_kl.plot(x_steps, k_mean, color=colour, label=label)
            ax_kl.fill_between(x_steps, k_mean - k_std, k_mean + k_std, color=colour, alpha=0.15)
            ax_front.plot(k_mean, s_mean, color=colour, marker=".", markersize=3, label=label)
            ax_front.fill_between(k_mean, s_mean - s_std, s_mean + s_std, color=colour, alpha=0.15)
        n_seeds = len(self.axes["seed"])
        ax_score.set(xlabel="update", ylabel="RM score of the sampled token", title="RM score over updates")
        ax_kl.set(xlabel="update", ylabel="KL(π_θ || π_ref)", title="KL to the reference over updates")
        ax_kl.axhline(math.log(len(VOCAB)), color="grey", linestyle=":", linewidth=1)
        ax_kl.text(x_steps[-1], math.log(len(VOCAB)), "log V: a single token ", va="top", ha="right", color="grey", fontsize=8)
        ax_front.set(xlabel="KL(π_θ || π_ref)", ylabel="RM score", title="RM score against KL (reward hacking: far right)")
        ax_front.legend(loc="lower right", fontsize=8)
        fig.suptitle(
            f"PPO-RLHF sweep: {n_seeds} seeds per curve, mean ± 1 std over seeds, "
            f"{self.total_steps} updates in {len(windows)} windows"
        )
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig


def _reference_sweep_rlhf(
    theta, ref, w, steps, runs, record_every=1, exact=False, simd=None, n_threads=None, progress=None
):
    """The sweep engine's twin: one ``reference.train_rlhf`` per run, the same output layout."""
    kept = slice(record_every - 1, None, record_every) if record_every else slice(0, 0)
    out: dict[str, list] = {name: [] for name in (*HISTORY_FIELDS, "final_theta", "summary")}
    for seed, eps, lr, ppo_epochs, kl_ctl, beta, target, horizon, kl_penalty, vf_coef, cliprange_value in runs:
        policy = {x: [float(v) for v in row] for x, row in zip(PROMPTS, theta)}
        frozen = {x: [float(v) for v in row] for x, row in zip(PROMPTS, ref)}
        history = reference.train_rlhf(
            policy, frozen, w, steps, seed, eps=eps, beta=beta, lr=lr, ppo_epochs=ppo_epochs, kl_ctl=kl_ctl,
            target=target, horizon=horizon, kl_threshold=sys.float_info.max, kl_penalty=kl_penalty,
            vf_coef=vf_coef, cliprange_value=cliprange_value,
        )
        for name in HISTORY_FIELDS:
            out[name].append(history[name][kept])
        controller = reference.make_kl_controller(kl_ctl, history["beta"][-1], target, horizon)
        controller.update(history["kl"][-1], 1)
        out["summary"].append([
            reference.expected_score(policy, w),
            reference.policy_kl(policy, frozen),
            *(_mean(history[name]) for name in ("score", "reward", "kl", "clip_frac")),
            controller.value,
        ])
        out["final_theta"].append([policy[x] for x in PROMPTS])
        if progress is not None:
            progress(steps)
    arrays = {name: np.array(values, dtype=np.uint8 if name in ("prompt", "token") else np.float64)
              for name, values in out.items()}
    arrays["summary_fields"] = list(SUMMARY_FIELDS)
    arrays["simd"] = "python"
    return arrays




def _shard_runs(theta, ref, w, steps, runs, record_every, exact, simd):
    """One shard of a sweep, for an executor's worker (module-level so it pickles)."""
    return _sweep_engine(theta, ref, w, steps, runs, record_every=record_every, exact=exact, simd=simd, n_threads=1)


def _concat_shards(parts: list[dict]) -> dict:
    merged = {key: np.concatenate([p[key] for p in parts]) for key in (*HISTORY_FIELDS, "final_theta", "summary")}
    merged["summary_fields"] = parts[0]["summary_fields"]
    merged["simd"] = parts[0]["simd"]
    return merged


def sweep_rlhf(
    w: Mapping[str, float],
    *,
    betas: Sequence[float],
    seeds: int | Sequence[int],
    steps: int,
    eps: float | Sequence[float] = 0.2,
    lr: float | Sequence[float] = 0.05,
    ppo_epochs: int | Sequence[int] = 4,
    kl_ctl: str | Sequence[str] = "fixed",
    target: float | Sequence[float] = 6.0,
    horizon: float | Sequence[float] = 10000.0,
    kl_penalty: str | Sequence[str] = "full",
    vf_coef: float | Sequence[float] = 0.0,
    cliprange_value: float | Sequence[float] = 0.2,
    theta: Any = None,
    ref: Any = None,
    record_every: int = 1,
    n_threads: int | None = None,
    executor: Executor | None = None,
    shards: int | None = None,
    progress: bool | Callable[[int], None] = False,
    exact: bool = False,
    simd: str | None = None,
    max_memory: int | None = None,
) -> SweepResult:
    """Every run of the grid ``betas x seeds`` (x any other argument given as a sequence).

    Each run is ``train_rlhf(theta, ref, w, steps, seed, eps=..., beta=..., lr=...,
    ppo_epochs=..., kl_ctl=..., target=..., horizon=..., kl_penalty=..., vf_coef=...,
    cliprange_value=...)`` from a copy of ``theta`` (uniform by default) against ``ref``
    (uniform by default), each with its own zero value baseline. ``seeds`` is a count
    (seeds ``0..N-1``) or a list. Any of those settings given as a sequence becomes a grid
    axis between ``beta`` and ``seed``.

    Runs go to Rust on every core (``n_threads`` threads; ``RAYON_NUM_THREADS`` sets the
    default), or, with ``executor`` (a ``concurrent.futures.Executor``, e.g. a Dask
    client's ``get_executor()``), in ``shards`` pieces to its workers; the arrays are the
    same either way. ``record_every=k`` keeps every k-th step of the history (0: none, only
    per-run summaries); a grid needing more than ``max_memory`` bytes (default: half the
    machine's memory) is refused before any work. ``progress=True`` shows a tqdm bar
    (a callable gets the number of steps finished since its last call). Ctrl-C stops the
    sweep within ~0.1 s.

    The lanes use vectorised ``exp``/``ln`` within two ulps of libm's: runs agree with the
    reference to 1e-9 unless they are ill-conditioned (a KL coefficient the doubling rule
    drives to astronomic values amplifies ulps). ``exact=True`` uses libm's functions:
    every float bit-identical to ``train_rlhf``, a few times slower. ``simd`` forces a
    vector path (``rlhf_fast.simd_paths()`` lists this CPU's; the default is the best).
    """
    import time

    betas_list, _ = _as_axis("betas", betas, _real(0.0))
    if not isinstance(betas, (Sequence, np.ndarray)) or isinstance(betas, str):
        raise TypeError("betas must be a sequence of floats")
    seed_list = _seed_axis(seeds, allow_none=False)
    steps = _integer(1)("steps", steps)
    record_every = _integer(0)("record_every", record_every)
    if n_threads is not None:
        n_threads = _integer(1)("n_threads", n_threads)
    checks = {
        "eps": _real(0.0, strict=True),
        "lr": _real(0.0, strict=True),
        "ppo_epochs": _integer(1),
        "kl_ctl": _controller_name,
        "target": _real(0.0, strict=True),
        "horizon": _real(0.0, strict=True),
        "kl_penalty": _penalty_name,
        "vf_coef": _real(0.0),
        "cliprange_value": _real(0.0, strict=True),
    }
    given = {
        "eps": eps, "lr": lr, "ppo_epochs": ppo_epochs, "kl_ctl": kl_ctl, "target": target, "horizon": horizon,
        "kl_penalty": kl_penalty, "vf_coef": vf_coef, "cliprange_value": cliprange_value,
    }
    axes: dict[str, list] = {"beta": betas_list}
    constants: dict[str, Any] = {}
    for name in _OPTIONAL_AXES:
        values, is_axis = _as_axis(name, given[name], checks[name])
        if is_axis:
            axes[name] = values
        else:
            constants[name] = values[0]
    axes["seed"] = seed_list

    shape = tuple(len(v) for v in axes.values())
    n_runs = math.prod(shape)
    kept = steps // record_every if record_every else 0
    need = n_runs * (kept * _BYTES_PER_KEPT_STEP + (len(PROMPTS) * len(VOCAB) + 8) * 8)
    limit = _total_memory() // 2 if max_memory is None else max_memory
    if need > limit:
        raise ValueError(
            f"this sweep would keep {need / 2**30:.1f} GiB of history ({n_runs} runs x {kept} steps), "
            f"over max_memory={limit / 2**30:.1f} GiB: pass record_every=k to keep every k-th step "
            "(or 0 for summaries only)"
        )

    _scores_by_content(w)
    theta0 = _policy_array("theta", theta if theta is not None else init_policy())
    ref0 = _policy_array("ref", ref if ref is not None else init_policy())
    runs = []
    for index in np.ndindex(*shape):
        point = {name: axes[name][i] for name, i in zip(axes, index)}
        setting = {**constants, **point}
        runs.append(
            (
                setting["seed"],
                setting["eps"],
                setting["lr"],
                setting["ppo_epochs"],
                setting["kl_ctl"],
                setting["beta"],
                setting["target"],
                setting["horizon"],
                setting["kl_penalty"],
                setting["vf_coef"],
                setting["cliprange_value"],
            )
        )

    started = time.perf_counter()
    with _progress(progress, n_runs * steps, "sweep") as callback:
        if executor is None:
            out = _sweep_engine(
                theta0, ref0, w, steps, runs, record_every=record_every, exact=exact, simd=simd,
                n_threads=n_threads, progress=callback,
            )
        else:
            _sweep_engine(theta0, ref0, w, 1, runs[:1], record_every=0, simd=simd)  # fail here, not remotely
            n_shards = shards or min(n_runs, 4 * (os.cpu_count() or 2))
            bounds = np.linspace(0, n_runs, n_shards + 1).astype(int)
            futures = [
                executor.submit(_shard_runs, theta0, ref0, dict(w), steps, runs[a:b], record_every, exact, simd)
                for a, b in zip(bounds[:-1], bounds[1:])
                if b > a
            ]
            parts = []
            for future, a, b in zip(futures, bounds[:-1], bounds[1:]):
                parts.append(future.result())
                if callback is not None:
                    callback(int(b - a) * steps)
            out = _concat_shards(parts)
    seconds = time.perf_counter() - started

    def grid(array: np.ndarray) -> np.ndarray:
        return array.reshape(*shape, *array.shape[1:])

    summary = out["summary"]
    return SweepResult(
        axes=axes,
        steps=np.arange(record_every - 1, steps, record_every) if record_every else np.zeros(0, dtype=np.int64),
        total_steps=steps,
        **{name: grid(out[name]) for name in HISTORY_FIELDS},
        final_theta=grid(out["final_theta"]),
        runs={name: grid(summary[:, i]) for i, name in enumerate(out["summary_fields"])},
        simd=out["simd"],
        seconds=seconds,
    )


@dataclass
class RMSweepResult:
    """Reward models of an RM sweep: ``weights[*axes, token]`` over ``vocab``, and, when a
    held-out set was given, ``accuracy[*axes]``."""

    axes: dict[str, list]
    vocab: list[str]
    weights: np.ndarray
    accuracy: np.ndarray | None

    def w(self, **where: Any) -> dict[str, float]:
        """One reward model as the lesson's dict, e.g. ``result.w(lr=0.1, epochs=5, n_pairs=500)``."""
        index = []
        for axis, values in self.axes.items():
            if axis not in where and len(values) == 1:
                index.append(0)
            else:
                index.append(values.index(where[axis]))
        return dict(zip(self.vocab, self.weights[tuple(index)].tolist()))


def _reference_sweep_rm(prefs, specs, n_threads=None, progress=None):
    """The RM sweep engine's twin: the reference's SGD step over each model's pairs."""
    vocab = prefs.vocab
    weights = []
    for lr, epochs, start, stop in specs:
        w = dict.fromkeys(vocab, 0.0)
        for _ in range(epochs):
            for b_pos, b_neg in prefs.bags[start:stop]:
                reference._rm_train_step(w, b_pos, b_neg, lr)
        weights.append([w[tok] for tok in vocab])
        if progress is not None:
            progress(epochs * (stop - start))
    return np.array(weights, dtype=np.float64).reshape(len(specs), len(vocab)), vocab


if BACKEND == "rust":
    from . import _core

    _sweep_engine = _core.sweep_rlhf
    _PreferenceSet, _rm_engine, _accuracy = _core.PreferenceSet, _core.sweep_rm, _core.pairwise_accuracy
else:
    _sweep_engine = _reference_sweep_rlhf
    _PreferenceSet, _rm_engine, _accuracy = reference.PreferenceSet, _reference_sweep_rm, reference.pairwise_accuracy


def sweep_rm(
    pairs: Any,
    *,
    lrs: float | Sequence[float] = 0.1,
    epochs: int | Sequence[int] = 5,
    n_pairs: int | Sequence[int] | None = None,
    heldout: Any = None,
    n_threads: int | None = None,
    progress: bool | Callable[[int], None] = False,
) -> RMSweepResult:
    """Many Bradley-Terry reward models at once, in parallel: the grid ``lrs x epochs x n_pairs``.

    Model ``(lr, e, n)`` is ``train_rm(pairs[:n], epochs=e, lr=lr)`` (within 1e-9). ``pairs`` is a
    :class:`PreferenceSet` (tokenised once; build one with ``PreferenceSet.make_dataset(n, seed)`` or
    ``PreferenceSet(pairs)``) or pairs / rows. ``heldout`` pairs give each model's
    ``pairwise_accuracy``.
    """
    prefs = pairs if isinstance(pairs, _PreferenceSet) else _PreferenceSet(pairs)
    lr_list, _ = _as_axis("lrs", lrs, _real(0.0, strict=True))
    epoch_list, _ = _as_axis("epochs", epochs, _integer(0))
    size_list, _ = _as_axis("n_pairs", len(prefs) if n_pairs is None else n_pairs, _integer(0))
    for n in size_list:
        if n > len(prefs):
            raise ValueError(f"n_pairs={n} is more than the {len(prefs)} pairs given")
    axes = {"lr": lr_list, "epochs": epoch_list, "n_pairs": size_list}
    specs = [(lr, e, 0, n) for lr in lr_list for e in epoch_list for n in size_list]
    with _progress(progress, sum(e * n for _, e, _, n in specs), "reward models") as callback:
        weights, vocab = _rm_engine(prefs, specs, n_threads=n_threads, progress=callback)
    shape = tuple(len(v) for v in axes.values())
    accuracy = None
    if heldout is not None:
        held = heldout if isinstance(heldout, _PreferenceSet) else _PreferenceSet(heldout)
        accuracy = np.array([_accuracy(dict(zip(vocab, row.tolist())), held) for row in weights])
        accuracy = accuracy.reshape(shape)
    return RMSweepResult(axes=axes, vocab=vocab, weights=weights.reshape(*shape, len(vocab)), accuracy=accuracy)
