"""Twin of rust/engines/reward_model.rs: Bradley-Terry reward models, one (:func:`train_rm`) or many
(:func:`sweep_rm`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from ... import _checks as checks
from ..methods.bradley_terry.preferences import PreferenceSet
from .driver import RunOutput, sweep


def train_rm(pairs: PreferenceSet, epochs: int, lr: float, w: dict[str, float]) -> None:
    """``epochs`` SGD passes over every pair in order, updating ``w`` in place; an epoch that
    leaves a weight overflowed raises ``FloatingPointError`` (:meth:`PreferenceSet.fit`)."""
    pairs.fit(range(len(pairs)), epochs, lr, w, "train_rm")


class RmRun(NamedTuple):
    """One reward model of an RM sweep: SGD at ``lr`` for ``epochs`` passes over ``pairs[start:stop]``."""

    lr: float
    epochs: int
    start: int
    stop: int


class RmEngine:
    """The RM sweep engine: every model from the same weights, over a slice of the same pairs."""

    history_fields: tuple[str, ...] = ()
    summary_fields: tuple[str, ...] = ()
    record_every = 0
    kept = 0

    def __init__(self, pairs: PreferenceSet, w0: dict[str, float]):
        self.pairs = pairs
        self.w0 = w0
        self.vocab = list(w0)
        self.param_shape: tuple[int, ...] = (len(self.vocab),)

    def run(self, spec: RmRun, index: int) -> RunOutput:
        w = dict(self.w0)
        self.pairs.fit(range(spec.start, spec.stop), spec.epochs, spec.lr, w, f"sweep run {index}")
        return RunOutput({}, [w[tok] for tok in self.vocab], [])

    def work(self, spec: RmRun) -> int:
        return spec.epochs * (spec.stop - spec.start)


def sweep_rm(
    pairs: Any,
    specs: Sequence[tuple],
    w: Mapping[str, float] | None = None,
    n_threads: int | None = None,
    progress: Callable[[int], None] | None = None,
    max_memory: int | None = None,
) -> dict[str, Any]:
    """One reward model per spec ``(lr, epochs, start, stop)``: ``train_rm(pairs[start:stop],
    epochs, lr)`` from ``w`` (zeros when ``None``), over the tokens of ``pairs``.

    ``pairs`` is a :class:`PreferenceSet`, pairs or rows. Returns the sweep contract's dict
    (:func:`~.driver.sweep`): ``final_params`` holds each model's weights over ``vocab`` (the
    set's tokens: ``VOCAB``, then the others in first-seen order), there is no history and
    no summary. ``n_threads`` chooses how Rust computes; the reference computes one way.
    """
    prefs = pairs if isinstance(pairs, PreferenceSet) else PreferenceSet(pairs)
    if w is not None:
        checks.weights(w)
    runs = []
    for lr, epochs, start, stop in specs:
        run = RmRun(
            checks.positive("lr", lr),
            checks.count("epochs", epochs, 0),
            checks.count("start", start, 0),
            checks.count("stop", stop, 0),
        )
        if run.start > run.stop or run.stop > len(prefs):
            raise ValueError(f"pair range {run.start}..{run.stop} is outside the {len(prefs)} pairs")
        runs.append(run)
    vocab = prefs.vocab
    w0 = {tok: 0.0 if w is None else float(w.get(tok, 0.0)) for tok in vocab}
    out = sweep(RmEngine(prefs, w0), runs, max_memory, progress)
    out["vocab"] = vocab
    return out
