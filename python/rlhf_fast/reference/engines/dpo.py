"""Twin of rust/engines/dpo.rs: whole DPO runs, one (:func:`train_dpo`) or many (:func:`sweep_dpo`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from ... import _checks as checks
from ..kernels.policy import expected_score, policy_kl
from ..kernels.softmax import log_softmax_row
from ..methods.bradley_terry import vocab_weights
from ..methods.dpo import DpoParams, dpo_update
from ..rng import from_key, seed_key
from .driver import RunOutput, check_summary, mean, sweep

DPO_HISTORY_KEYS = (
    "prompt", "loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"
)
FLOAT_KEYS = DPO_HISTORY_KEYS[1:]  # what a step's record is checked for (prompt is an int)


def train_dpo(
    theta: Sequence[list[float]],
    ref: Sequence[Sequence[float]],
    pairs: Sequence[tuple[int, Sequence[int], Sequence[int]]],
    epochs: int,
    params: DpoParams,
    shuffle_seed: list[int] | None,
    name: str = "train_dpo",
) -> dict[str, list]:
    """``epochs`` passes of :func:`~.methods.dpo.dpo_update` over ``pairs``; updates ``theta`` in place.

    ``theta`` and ``ref`` are tables (one row of logits per prompt), each pair ``(prompt
    index, chosen ids, rejected ids)``. Each epoch walks the pairs in order, or, with a
    ``shuffle_seed`` (a seed key), in the order of ``order = list(range(n));
    rng.shuffle(order)``, one ``rng = random.Random(seed)`` shuffling a fresh ``list(range(n))``
    every epoch (Rust's ``EpochOrder``). Returns the history in TRL's names
    (``DPO_HISTORY_KEYS``), all before each step. A step that leaves a logit overflowed
    (:func:`~rlhf_fast._checks.overflowed`) raises ``FloatingPointError`` naming the run
    (``name``), the step (counted over all epochs), ``lr`` and ``beta``; so does, after that
    check, a step whose record has a value that is not finite (the first of ``FLOAT_KEYS`` is
    named: ``"... diverged at step 4: rewards/chosen overflowed ..."``). ``theta`` and the
    history then hold every step before it and the failing step's update (the failing step is
    not recorded).
    """
    # The frozen reference never changes: its log-probabilities once per prompt.
    ref_log_probs = [log_softmax_row(row) for row in ref]
    rng = None if shuffle_seed is None else from_key(shuffle_seed)
    history: dict[str, list] = {key: [] for key in DPO_HISTORY_KEYS}
    (
        record_prompt, record_loss, record_chosen, record_rejected, record_margin, record_accuracy,
    ) = (history[key].append for key in DPO_HISTORY_KEYS)
    overflowed = checks.overflowed
    non_finite = checks.non_finite
    n = len(pairs)
    t = 0
    for _ in range(epochs):
        order = list(range(n))
        if rng is not None:
            rng.shuffle(order)
        for i in order:
            x, chosen, rejected = pairs[i]
            logits = theta[x]
            out = dpo_update(logits, ref_log_probs[x], chosen, rejected, params)
            if overflowed(logits):
                raise FloatingPointError(
                    f"{name} diverged at step {t}: logits overflowed (lr={params.lr!r}, beta={params.beta!r})"
                )
            if (key := non_finite(FLOAT_KEYS, out)) is not None:  # out: the record's floats, in order
                raise FloatingPointError(
                    f"{name} diverged at step {t}: {key} overflowed (lr={params.lr!r}, beta={params.beta!r})"
                )
            record_prompt(x)
            record_loss(out.loss)
            record_chosen(out.chosen)
            record_rejected(out.rejected)
            record_margin(out.margin)
            record_accuracy(out.accuracy)
            t += 1
    return history


# The sweep's history fields (TRL's names, '/' written '_'), each from train_dpo's record.
SWEEP_HISTORY_FIELDS = {
    "prompt": "prompt",
    "loss": "loss",
    "rewards_chosen": "rewards/chosen",
    "rewards_rejected": "rewards/rejected",
    "rewards_margins": "rewards/margins",
    "rewards_accuracies": "rewards/accuracies",
}
SUMMARY_FIELDS = ("final_score", "final_kl", "last_epoch_loss", "last_epoch_accuracy", "last_epoch_margin")


class DpoRun(NamedTuple):
    """One run of a DPO sweep: its loss settings, its epochs and its shuffle stream (``None``:
    the pairs in order)."""

    params: DpoParams
    epochs: int
    shuffle_seed: list[int] | None


def longest_run_steps(specs: Sequence, n_pairs: int, check: Callable[[Any], None] = lambda spec: None) -> int:
    """Steps of the longest of DPO sweep runs of ``spec.epochs`` passes over ``n_pairs`` pairs,
    after ``check`` run by run (Rust's ``dpo::longest_run_steps``; each run's epochs were
    checked >= 1 as it was built)."""
    for spec in specs:
        check(spec)
    return max((spec.epochs for spec in specs), default=0) * n_pairs


class DpoEngine:
    """The DPO sweep engine: every run from the same starting policy, over the same pairs.

    Without a reward model there is no ``final_score`` to report: the field is left out of
    the summary rather than filled with NaN.
    """

    history_fields: tuple[str, ...] = tuple(SWEEP_HISTORY_FIELDS)

    def __init__(self, theta, ref, pairs, weights: list[float] | None, record_every: int, max_epochs: int):
        self.theta = theta
        self.ref = ref
        self.pairs = pairs
        self.weights = weights
        self.summary_fields: tuple[str, ...] = SUMMARY_FIELDS if weights is not None else SUMMARY_FIELDS[1:]
        self.record_every = record_every
        self.kept = max_epochs * len(pairs) // record_every if record_every else 0
        self.param_shape: tuple[int, ...] = (len(theta), len(theta[0]))

    def run(self, spec: DpoRun, index: int) -> RunOutput:
        theta = [list(row) for row in self.theta]
        history = train_dpo(
            theta, self.ref, self.pairs, spec.epochs, spec.params, spec.shuffle_seed, name=f"sweep run {index}"
        )
        steps = len(history["loss"])
        last_epoch = slice(steps - len(self.pairs), steps)
        summary = [
            policy_kl(theta, self.ref),
            mean(history["loss"][last_epoch]),
            mean(history["rewards/accuracies"][last_epoch]),
            mean(history["rewards/margins"][last_epoch]),
        ]
        if self.weights is not None:
            summary.insert(0, expected_score(theta, self.weights))
        check_summary(self.summary_fields, summary, index, spec.params.lr, spec.params.beta)
        return RunOutput({field: history[key] for field, key in SWEEP_HISTORY_FIELDS.items()}, theta, summary)

    def work(self, spec: DpoRun) -> int:
        return spec.epochs * len(self.pairs)


def sweep_dpo(
    theta: Any,
    ref: Any,
    pairs: Any,
    runs: Sequence[tuple],
    w: Mapping[str, float] | None = None,
    record_every: int = 1,
    n_threads: int | None = None,
    progress: Callable[[int], None] | None = None,
    max_memory: int | None = None,
) -> dict[str, Any]:
    """Every DPO run of ``runs`` from ``theta`` against ``ref`` (``[P, V]`` tables).

    A run is ``(beta, lr, loss_type, label_smoothing, epochs, seed_or_None)``:
    ``train_dpo(theta, ref, pairs, epochs, ...)`` from a copy of ``theta``, the pairs
    reshuffled every epoch on ``random.Random(seed)`` (in order for ``None``). Returns the
    sweep contract's dict (:func:`~.driver.sweep`); the summary holds the final policy's
    exact expected score under ``w`` (no ``final_score`` field without ``w``) and KL, and the
    means over the run's last epoch of the loss, accuracy and margin. ``n_threads`` chooses
    how Rust computes; the reference computes one way.
    """
    theta0 = checks.table("theta", theta)
    reference = checks.table("ref", ref)
    token_pairs = checks.token_pairs(pairs)
    if w is not None:
        checks.weights(w)
    record_every = checks.count("record_every", record_every, 0)
    specs = [
        DpoRun(
            DpoParams.new(beta, lr, loss_type, label_smoothing),
            checks.count("epochs", epochs, 1),
            None if seed is None else seed_key(checks.integer("seed", seed)),
        )
        for beta, lr, loss_type, label_smoothing, epochs, seed in runs
    ]
    weights = None if w is None else vocab_weights(w)
    max_epochs = max((spec.epochs for spec in specs), default=0)
    engine = DpoEngine(theta0, reference, token_pairs, weights, record_every, max_epochs)
    return sweep(engine, specs, max_memory, progress)
