"""DPO, GRPO and Best-of-N in a sequence world (issue 11): what :func:`~rlhf_fast.sweep_dpo`,
:func:`~rlhf_fast.sweep_grpo` and :func:`~rlhf_fast.sweep_best_of_n` run when given
``world=SequenceWorld(...)``.

A policy is a table of logits ``theta [n_prompts, max_len, vocab]`` (EOS is token 0), starting
at the world's reference; a response is generated token by token until its first EOS or
``max_len`` tokens. The engines are ``rlhf_fast._core.sweep_sequence_*`` (Rust) and their twins
in ``rlhf_fast.reference.engines`` (``RLHF_FAST_BACKEND=python``), picked by :mod:`rlhf_fast.sweep`; docs/METHODS.md section 12
has the formulas as implemented.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _checks as check
from . import sweep as _sweep_module
from .result import SweepResult
from .reference.methods.best_of_n import MAX_N
from .sequences import SequencePairs, SequenceRewardModel, SequenceWorld, _pairs_of, _rm_for

def _world_arrays(world: SequenceWorld, rm: SequenceRewardModel | None) -> tuple:
    """The engines' world arguments: ``ref_logits, w, bias, w_len, g, offset, count_once``
    (zeros for the reward model when there is none)."""
    if rm is None:
        w, bias, w_len = np.zeros(world.vocab), np.zeros(world.n_prompts), 0.0
    else:
        w, bias, w_len = rm.weights, rm.prompt_bias(world.n_prompts), rm.length_weight
    return (world.ref_logits, np.asarray(w, dtype=np.float64), np.asarray(bias, dtype=np.float64), float(w_len),
            world.gold_token, world.gold_offset, world.count_once)


def sequence_pairs(pairs: Any, world: SequenceWorld) -> SequencePairs:
    """``pairs`` for a sequence DPO sweep: labelled pairs of the world's responses, at least one."""
    pairs = _pairs_of("pairs", pairs, world)
    if not len(pairs):
        raise ValueError("pairs must not be empty")
    return pairs


def _no_policy_arguments(**given: Any) -> None:
    for name, value in given.items():
        if value is not None:
            why = ("its runs start at its reference, world.ref_logits" if name == "theta"
                   else "its reference is world.ref_logits")
            raise ValueError(f"{name} cannot be given with a world: {why}")


def sweep_sequence_dpo(world: SequenceWorld, pairs: SequencePairs, w: Any, grid: Any, theta: Any, ref: Any,
                       record_every: int, n_threads: Any, progress: Any, max_memory: Any) -> SweepResult:
    """The DPO grid of :func:`~rlhf_fast.sweep_dpo` run in a sequence world by its engine."""
    rm = None if w is None else _rm_for("w", w, world)
    _no_policy_arguments(theta=theta, ref=ref)
    soft = np.flatnonzero((pairs.target != 0.0) & (pairs.target != 1.0))
    for loss_type in grid.values("loss_type"):
        if soft.size and loss_type != "sigmoid":
            i = int(soft[0])
            raise ValueError(
                f"loss_type {loss_type!r} needs hard labels (targets 0 or 1), but pairs.target[{i}] is "
                f"{float(pairs.target[i])!r}, a soft label (a Judge's with soft=True): soft labels are only "
                "defined for loss_type 'sigmoid'"
            )
    steps = max(grid.values("epochs")) * len(pairs)
    record_every = _sweep_module._kept_every(record_every, steps)
    n_threads, progress, max_memory = _sweep_module._options(n_threads, progress, max_memory)
    arrays = _world_arrays(world, rm)
    prompts = np.asarray(pairs.prompts, dtype=np.int64)
    first = np.asarray(pairs.first, dtype=np.int64)
    second = np.asarray(pairs.second, dtype=np.int64)
    target = np.asarray(pairs.target, dtype=np.float64)

    def engine(runs, callback, limit):
        return _sweep_module._engines.sweep_sequence_dpo(*arrays, prompts, first, second, target, runs, with_proxy=rm is not None,
                                           record_every=record_every, n_threads=n_threads, progress=callback,
                                           max_memory=limit)

    result = _sweep_module._sweep(
        "sequence_dpo", grid,
        lambda s: (s["beta"], s["lr"], s["loss_type"], s["label_smoothing"], s["epochs"], s["seed"]),
        engine, steps=steps, record_every=record_every, summaries=7 if rm is not None else 6,
        params=world.n_prompts * world.max_len * world.vocab,
        work=lambda runs: sum(run[4] for run in runs) * len(pairs), progress=progress, max_memory=max_memory)
    return result._in_world(world, w)


def sweep_sequence_best_of_n(w: Any, world: SequenceWorld, ns: Any, seeds: Any, samples: Any, policy: Any,
                             n_threads: Any, progress: Any, max_memory: Any) -> SweepResult:
    """The Best-of-N grid of :func:`~rlhf_fast.sweep_best_of_n` run in a sequence world by its engine."""
    rm = _rm_for("w", w, world)
    grid = _sweep_module._Grid()
    grid.axis("n", _sweep_module._first_axis("ns", ns, check.counts(1, MAX_N), "ints"))
    grid.axis("seed", check.seed_axis(seeds, allow_none=False))
    samples = check.count("samples", 1000 if samples is None else samples, 2)
    if policy is not None:
        raise ValueError("policy cannot be given with a world: its Best-of-N samples its reference, world.ref_logits")
    n_threads, progress, max_memory = _sweep_module._options(n_threads, progress, max_memory)
    arrays = _world_arrays(world, rm)

    def engine(runs, callback, limit):
        return _sweep_module._engines.sweep_sequence_best_of_n(*arrays, runs, n_threads=n_threads, progress=callback,
                                                 max_memory=limit)

    result = _sweep_module._sweep(
        "sequence_best_of_n", grid, lambda s: (s["n"], samples, s["seed"]), engine, steps=0, record_every=0,
        summaries=10, params=0, work=lambda runs: len(runs) * samples, progress=progress, max_memory=max_memory)
    return result._in_world(world, w)
