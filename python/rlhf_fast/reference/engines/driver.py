"""Twin of rust/engines/driver.rs: what every sweep engine shares, and the lesson's KL monitor.

:func:`sweep` runs an engine over its runs, in the order given, and holds the plumbing
every engine would otherwise repeat: the memory check against ``max_memory`` before any
work, the history steps a sweep keeps (``k-1, 2k-1, ...`` for ``record_every = k``), the
stacking of each run's outputs into the arrays of the sweep contract, and the progress
callback after each run. Rust spreads the runs over threads; the reference runs them one
after another, which gives the same arrays.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np

from ... import _checks as checks


class KLWarning(UserWarning):
    """The running mean KL(pi_theta || pi_ref) passed the monitor's threshold.

    ``train_rlhf`` and ``train_grpo`` warn with it once per run, when the running mean of the
    exact KL first passes ``kl_threshold``: the policy is drifting from the reference (raise
    beta or stop early). A ``UserWarning``; filter it with ``warnings.simplefilter``.

    Examples
    --------
    >>> import warnings
    >>> w = rl.train_rm(rl.make_dataset(200, seed=0), epochs=2)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = rl.train_rlhf(rl.init_policy(), rl.init_policy(), w, 100, 0, kl_threshold=0.01)
    >>> [c.category.__name__ for c in caught]
    ['KLWarning']
    >>> str(caught[0].message)  # doctest: +ELLIPSIS
    'mean KL(pi_theta || pi_ref) passed kl_threshold=0.01 at step ... nats): ...'
    """


def warn_kl(mean_kl: float, kl_threshold: float, t: int) -> None:
    """The lesson's KL monitor, raised from a training loop on behalf of its caller's caller."""
    warnings.warn(
        f"mean KL(pi_theta || pi_ref) passed kl_threshold={kl_threshold:.4g} at step {t} ({mean_kl:.4g} nats): "
        "the policy is drifting from the reference (raise beta or stop early)",
        KLWarning,
        stacklevel=4,  # warn_kl <- the engine's loop <- the lesson-level function <- its caller
    )


def mean(values: Sequence[float]) -> float:
    """Left to right, as the Rust summaries sum."""
    total = 0.0
    for v in values:
        total += v
    return total / len(values)


def check_summary(fields: Sequence[str], summary: Sequence[float], index: int, lr: float, beta: float) -> None:
    """A run's summary, computed at its end, holds only finite values: the first that is not
    (in ``fields`` order) ends the sweep with ``"sweep run {index} diverged: {field} overflowed
    (lr=..., beta=...)"`` (a mean of finite records can still overflow)."""
    if (field := checks.non_finite(fields, summary)) is not None:
        raise FloatingPointError(f"sweep run {index} diverged: {field} overflowed (lr={lr!r}, beta={beta!r})")


class RunOutput(NamedTuple):
    """One run's results: every step's record per history field, its final parameters and
    its summary (in the engine's field orders)."""

    history: dict[str, Sequence[float]]
    final_params: Any
    summary: Sequence[float]


class Engine(Protocol):
    """What :func:`sweep` needs of an engine (Rust's ``Engine`` trait)."""

    history_fields: tuple[str, ...]
    summary_fields: tuple[str, ...]
    param_shape: tuple[int, ...]  # one run's final parameters
    record_every: int  # 0: no history kept
    kept: int  # history steps kept per run (of the longest run)

    def run(self, spec: Any, index: int) -> RunOutput:
        """The run ``spec`` describes, from the engine's shared inputs; ``index`` is its place in
        the sweep, which a run that diverges names (``"sweep run {index} diverged ..."``)."""

    def work(self, spec: Any) -> int:
        """What the run counts as done for the progress callback (steps, pairs, samples)."""


def sweep(
    engine: Engine, runs: Sequence[Any], max_memory: int | None = None, progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Every run of ``runs`` on ``engine``, stacked into the sweep contract's dict.

    ``history`` is ``[run, field, kept]`` (a run shorter than the longest is NaN past its
    end; categorical fields hold their index as a float), ``final_params`` ``[run,
    *param_shape]`` and ``summary`` ``[run, field]``, with ``history_fields`` and
    ``summary_fields`` naming the middle and last axes; ``simd`` is ``"python"``. A sweep
    whose arrays would exceed ``max_memory`` bytes (``None``: half the machine's memory) is
    refused before any work; ``progress`` gets each run's work once it is done. A run that
    diverges raises its ``FloatingPointError``, ``"sweep run {r} diverged ..."``.
    """
    if not runs:
        raise ValueError("a sweep needs at least one run")
    n_runs = len(runs)
    n_fields = len(engine.history_fields)
    need = 8 * n_runs * (n_fields * engine.kept + math.prod(engine.param_shape) + len(engine.summary_fields))
    checks.memory(need, max_memory, n_runs, engine.kept if n_fields else 0)

    history = np.full((n_runs, n_fields, engine.kept), np.nan)
    final_params = np.zeros((n_runs, *engine.param_shape))
    summary = np.zeros((n_runs, len(engine.summary_fields)))
    every = engine.record_every
    for r, spec in enumerate(runs):
        out = engine.run(spec, r)
        if every:
            for f, name in enumerate(engine.history_fields):
                kept = out.history[name][every - 1 :: every]
                history[r, f, : len(kept)] = kept
        final_params[r] = out.final_params
        summary[r] = out.summary
        if progress is not None:
            progress(engine.work(spec))
    return {
        "history": history,
        "history_fields": list(engine.history_fields),
        "final_params": final_params,
        "summary": summary,
        "summary_fields": list(engine.summary_fields),
        "simd": "python",
    }
