"""Twin of rust/engines/best_of_n.rs: Best-of-N for one ``n`` (:func:`best_of_n`) or many (:func:`sweep_best_of_n`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from ... import _checks as checks
from ..kernels.softmax import softmax_row
from ..methods.best_of_n import MAX_N, bon_exact, bon_kl_analytic, bon_sampled_score
from ..methods.bradley_terry import vocab_weights
from ..methods.reward_checks import check_not_length_only
from ..rng import seed_key
from .driver import RunOutput, sweep


class BonOutcome(NamedTuple):
    """What :func:`best_of_n` reports."""

    expected_score: float  # mean over prompts of sum_a P_bon(a) R(a)
    kl_analytic: float  # log n - (n - 1) / n
    kl_exact: float  # mean over prompts of KL(P_bon || pi)
    sampled_score: float | None  # mean kept score of the Monte-Carlo run (None without samples)
    p_bon: list[list[float]]  # per prompt, the exact law of the kept token


def best_of_n(
    policy: Sequence[Sequence[float]], weights: Sequence[float], n: int, samples: int, seed_key: list[int]
) -> BonOutcome:
    """Best-of-``n`` against ``weights`` for the policy table ``policy`` (one row of logits per
    prompt): the exact law of the kept token and its statistics, and with ``samples > 0`` the
    Monte-Carlo mean kept score on the stream of ``random.Random(seed)``."""
    pi_table = [softmax_row(row) for row in policy]
    expected, kl_exact, p_bon = bon_exact(pi_table, weights, n)
    sampled = bon_sampled_score(pi_table, weights, n, samples, seed_key) if samples > 0 else None
    return BonOutcome(expected, bon_kl_analytic(n), kl_exact, sampled, p_bon)


SUMMARY_FIELDS = ("expected_score", "kl_analytic", "kl_exact", "sampled_score")


class BonRun(NamedTuple):
    """One run of a Best-of-N sweep: ``n``, and its Monte-Carlo draws and stream."""

    n: int
    samples: int
    seed_key: list[int]


class BonEngine:
    """The Best-of-N sweep engine: every run on the same policy and reward model.

    Runs without Monte-Carlo samples have no sampled score: the field is left out of the
    summary rather than filled with NaN, so the runs of one sweep all sample or none does.
    """

    history_fields: tuple[str, ...] = ()
    record_every = 0
    kept = 0
    param_shape: tuple[int, ...] = (0,)

    def __init__(self, policy, weights: list[float], sampled: bool):
        self.policy = policy
        self.weights = weights
        self.summary_fields: tuple[str, ...] = SUMMARY_FIELDS if sampled else SUMMARY_FIELDS[:3]

    def run(self, spec: BonRun, index: int) -> RunOutput:
        out = best_of_n(self.policy, self.weights, spec.n, spec.samples, spec.seed_key)
        sampled = () if out.sampled_score is None else (out.sampled_score,)
        summary = [out.expected_score, out.kl_analytic, out.kl_exact, *sampled]
        if (field := checks.non_finite(self.summary_fields, summary)) is not None:
            value = summary[self.summary_fields.index(field)]
            raise FloatingPointError(f"sweep run {index} overflowed: {field} is {value!r} (n={spec.n})")
        return RunOutput({}, [], summary)

    def work(self, spec: BonRun) -> int:
        return spec.samples


def sweep_best_of_n(
    policy: Any,
    w: Mapping[str, float],
    runs: Sequence[tuple],
    n_threads: int | None = None,
    progress: Callable[[int], None] | None = None,
    max_memory: int | None = None,
) -> dict[str, Any]:
    """Every Best-of-N run of ``runs`` on ``policy`` (a ``[P, V]`` table) against ``w``.

    A run is ``(n, samples, seed)``: ``best_of_n(policy, w, n, samples, seed)``. Returns the
    sweep contract's dict (:func:`~.driver.sweep`): no history, no parameters, the summary
    ``expected_score``, ``kl_analytic``, ``kl_exact`` and, when the runs sample
    (``samples > 0`` in every run; a mix is refused), ``sampled_score``. ``n_threads``
    chooses how Rust computes; the reference computes one way.
    """
    table = checks.table("policy", policy)
    checks.weights(w)
    weights = vocab_weights(w)
    check_not_length_only(weights)
    specs = [
        BonRun(
            checks.count("n", n, 1, MAX_N),
            checks.count("samples", samples, 0),
            seed_key(checks.integer("seed", seed)),
        )
        for n, samples, seed in runs
    ]
    sampled = {spec.samples > 0 for spec in specs}
    if len(sampled) > 1:
        raise ValueError("samples must be > 0 in every run of a sweep or 0 in every run, got both")
    return sweep(BonEngine(table, weights, sampled == {True}), specs, max_memory, progress)
