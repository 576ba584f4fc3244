"""Sweeps: grids of runs of any method, on every core, one :class:`SweepResult` out.

Each front end turns its keyword arguments into a grid — an argument given as a sequence is
an axis (in the order of the signature, ``seed`` last), a scalar is a constant — checks every
value and the memory the outputs need before any run exists, and hands one tuple per run to
the method's engine: the Rust core (``rlhf_fast._core.sweep_*``) or, with
``RLHF_FAST_BACKEND=python``, its pure-Python twin (``rlhf_fast.reference.engines``). Run
``(beta_i, ..., seed_j)`` of a sweep is the method's single-run function with those arguments:
the same tokens, floats within 1e-9, whatever the thread count, the executor or the CPU.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from typing import Any

import numpy as np

from . import _checks as check
from . import reference as _reference
from ._backend import BACKEND
from .reference import DPO_LOSS_TYPES, KL_CONTROLLERS, KL_PENALTIES, KL_TARGET, PROMPTS, SCALE_REWARDS, VOCAB
from .reference import engines as _reference_engines
from .reference.engines import world_best_of_n as _reference_world_best_of_n
from .reference.engines import world_dpo as _reference_world_dpo
from .reference.engines import world_grpo as _reference_world_grpo
from .reference.engines import world_ppo as _reference_world_ppo
from .reference.engines import safe_world_ppo as _reference_safe_world_ppo
from .reference.engines import sequence_best_of_n as _reference_sequence_best_of_n
from .reference.engines import sequence_dpo as _reference_sequence_dpo
from .reference.engines import token_ppo as _reference_token_ppo
from .reference.engines import verifier_grpo as _reference_verifier_grpo
from .reference.methods.best_of_n import MAX_N
from .reference.methods.lagrangian import COST_ESTIMATES
from .reference.methods import grpo as _reference_grpo
from .reference.methods.grpo import MAX_NUM_GENERATIONS, MAX_NUM_ITERATIONS
from .reference.methods.ppo import MAX_PPO_EPOCHS
from .result import SweepResult
from .worlds import RewardModel, World, WorldPairs, _pairs_of
from .sequences import SequenceRewardModel, SequenceWorld, _rm_for


class _ReferenceEngines:
    """The reference's engines (and preference sets) under the core's names."""

    sweep_rlhf = staticmethod(_reference_engines.ppo.sweep_rlhf)
    sweep_rm = staticmethod(_reference_engines.reward_model.sweep_rm)
    sweep_dpo = staticmethod(_reference_engines.dpo.sweep_dpo)
    sweep_grpo = staticmethod(_reference_engines.grpo.sweep_grpo)
    sweep_best_of_n = staticmethod(_reference_engines.best_of_n.sweep_best_of_n)
    sweep_world_rlhf = staticmethod(_reference_world_ppo.sweep_world_rlhf)
    sweep_world_best_of_n = staticmethod(_reference_world_best_of_n.sweep_world_best_of_n)
    sweep_world_dpo = staticmethod(_reference_world_dpo.sweep_world_dpo)
    sweep_world_grpo = staticmethod(_reference_world_grpo.sweep_world_grpo)
    sweep_safe_world_rlhf = staticmethod(_reference_safe_world_ppo.sweep_safe_world_rlhf)
    sweep_sequence_dpo = staticmethod(_reference_sequence_dpo.sweep_sequence_dpo)
    sweep_sequence_best_of_n = staticmethod(_reference_sequence_best_of_n.sweep_sequence_best_of_n)
    sweep_token_ppo = staticmethod(_reference_token_ppo.sweep_token_ppo)
    sweep_verifier_grpo = staticmethod(_reference_verifier_grpo.sweep_verifier_grpo)
    PreferenceSet = _reference.PreferenceSet
    pairwise_accuracy = staticmethod(_reference.pairwise_accuracy)


# What every front end runs its grid on: the Rust core, or its twin on the python backend.
if BACKEND == "rust":
    from . import _core as _engines
else:
    _engines = _ReferenceEngines


__all__ = ["sweep_rlhf", "sweep_rm", "sweep_dpo", "sweep_grpo", "sweep_best_of_n", "SweepResult"]

# Per-run series each engine records (history), for the memory estimate.
_HISTORY_FIELDS = {"ppo": 10, "dpo": 6, "grpo": 7, "world_ppo": 7, "world_dpo": 9, "token_ppo": 20}
_HISTORY_FIELDS["world_ppo_safe"] = 11
_HISTORY_FIELDS["sequence_grpo"] = len(_reference_verifier_grpo.VERIFIER_GRPO_HISTORY_FIELDS)
_TABLE = len(PROMPTS) * len(VOCAB)
# Bytes a run costs beyond its outputs: its tuple of settings, its spec in the engine, its
# row of the result's bookkeeping. Counted so that a grid of a billion tiny runs is refused.
_BOOKKEEPING = 256
# Worker threads a sweep may ask for (each is an OS thread; results never depend on the count).
_MAX_THREADS = 1024
# Steps of a run: the core counts them in an i64 (a summaries-only sweep needs no memory per step).
_MAX_STEPS = 2**63 - 1


class _Grid:
    """A sweep's axes, in the order they index the result, and the constants beside them.

    An axis is any sequence, a seed count a ``range``: the grid knows its shape from the
    axes' lengths, so its size is checked before any run's settings exist.
    """

    def __init__(self) -> None:
        self.axes: dict[str, Sequence] = {}
        self.constants: dict[str, Any] = {}

    def axis(self, name: str, values: Sequence) -> None:
        self.axes[name] = values

    def setting(self, name: str, value: Any, check_one: Callable[[str, Any], Any]) -> None:
        """``value`` as an axis when it is a sequence, else as a constant (checked either way)."""
        values, is_axis = check.grid_axis(name, value, check_one)
        if is_axis:
            self.axes[name] = values
        else:
            self.constants[name] = values[0]

    def values(self, name: str) -> Sequence:
        """The values ``name`` takes: its axis, or its constant alone."""
        return self.axes[name] if name in self.axes else [self.constants[name]]

    @property
    def n_runs(self) -> int:
        return math.prod(_length(values) for values in self.axes.values())

    def settings(self) -> Iterator[dict[str, Any]]:
        """Every run's settings, the axes in C order."""
        names = list(self.axes)
        for values in itertools.product(*self.axes.values()):
            yield {**self.constants, **dict(zip(names, values))}


def _length(values: Sequence) -> int:
    """``len(values)``, also of a range past ``sys.maxsize`` (``range(2**64)``: seeds=2**64)."""
    try:
        return len(values)
    except OverflowError:
        step = values.step
        return max(0, (values.stop - values.start + step - (1 if step > 0 else -1)) // step)


@contextmanager
def _progress(progress: bool | Callable[[int], None] | None, total: int, desc: str):
    """The callback to hand an engine for a ``progress`` request: a tqdm bar for ``True``
    (closed when the sweep ends, however it ends), the callable itself, or nothing."""
    if callable(progress) or not progress:
        yield progress or None
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:  # a broken install: no bar rather than no sweep
        yield None
        return
    bar = tqdm(total=total, unit="step", unit_scale=True, smoothing=0.1, desc=desc)
    try:
        yield bar.update
    finally:
        bar.close()


def _options(n_threads: Any, progress: Any, max_memory: Any) -> tuple[int | None, Any, int | None]:
    """The options every sweep takes, checked: ``n_threads``, ``progress``, ``max_memory``."""
    if not (progress is None or isinstance(progress, bool) or callable(progress)):
        raise TypeError(f"progress must be a bool or a callable taking a step count, got {type(progress).__name__}")
    max_memory = check.optional(check.counts(1))("max_memory", max_memory)
    return (
        check.optional(check.counts(1, _MAX_THREADS))("n_threads", n_threads),
        progress,
        # more than a u64 counts is more than any machine has: no limit, which the core takes
        None if max_memory is None else min(max_memory, 2**64 - 1),
    )


def _kept_every(record_every: int, steps: int) -> int:
    """``record_every`` as the engines take it: any period past ``steps`` keeps no step, as
    ``steps + 1`` does (and fits the core's integers where ``10**30`` does not)."""
    return min(record_every, steps + 1)


def _sweep(
    method: str,
    grid: _Grid,
    make_run: Callable[[dict[str, Any]], tuple],
    engine: Callable[[list[tuple], Callable[[int], None] | None, int], Mapping[str, Any]],
    *,
    steps: int,
    record_every: int,
    summaries: int,
    params: int,
    work: Callable[[list[tuple]], int],
    progress: bool | Callable[[int], None] | None,
    max_memory: int | None,
    extra_runs: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
) -> SweepResult:
    """The one sweep driver of the front ends.

    Checks that the grid's outputs (``summaries`` run summaries, ``params`` final parameters
    and the kept history of each run, 8 bytes a number) and its bookkeeping fit in
    ``max_memory`` before building anything per run; then builds the runs (``make_run`` of
    each run's settings), shows the progress bar (``work(runs)`` steps in all), calls
    ``engine(runs, progress_callback, max_memory_bytes)`` and wraps its output.
    """
    kept = steps // record_every if record_every else 0
    per_run = (_HISTORY_FIELDS.get(method, 0) * kept + summaries + params) * 8 + _BOOKKEEPING
    limit = check.default_max_memory() if max_memory is None else max_memory
    check.memory(grid.n_runs * per_run, limit, grid.n_runs, kept)
    if steps > _MAX_STEPS:  # summaries only: no memory per step, but the core counts them in an i64
        raise ValueError(f"steps must be <= {_MAX_STEPS}, got {steps}")
    try:
        runs = [make_run(settings) for settings in grid.settings()]
    except MemoryError:  # a max_memory past what the machine has
        raise MemoryError(f"cannot hold the settings of {grid.n_runs} runs (max_memory={limit})") from None
    started = time.perf_counter()
    with _progress(progress, work(runs), f"sweep ({method})") as callback:
        out = engine(runs, callback, limit)
    seconds = time.perf_counter() - started
    axes = {name: list(values) for name, values in grid.axes.items()}
    return SweepResult.from_engine(
        method, axes, out, total_steps=steps if kept else 0, record_every=record_every, seconds=seconds,
        extra_runs=extra_runs(out) if extra_runs else None,
    )


def _first_axis(name: str, values: Any, check_one: Callable[[str, Any], Any], what: str) -> list:
    """A sweep's first axis (``betas``, ``ns``), which must be given as a sequence."""
    # not np.ndim(values): of a range it builds an array (range(10**12): 8 TB)
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)) or (
        isinstance(values, np.ndarray) and values.ndim == 0
    ):
        raise TypeError(f"{name} must be a sequence of {what}, got {type(values).__name__}")
    return check.grid_axis(name, values, check_one)[0]


# ----------------------------------------------------------------------------------- PPO


def _shard_runs(theta, ref, w, steps, runs, record_every, exact, simd):
    """One shard of a PPO sweep, for an executor's worker (module-level so it pickles)."""
    return _engines.sweep_rlhf(theta, ref, w, steps, runs, record_every=record_every, exact=exact, simd=simd,
                               n_threads=1)


def _concat_shards(parts: list[Mapping[str, Any]]) -> dict[str, Any]:
    merged = dict(parts[0])
    for key in ("history", "final_params", "summary"):
        merged[key] = np.concatenate([part[key] for part in parts])
    return merged


def sweep_rlhf(
    w: Mapping[str, float] | RewardModel | SequenceRewardModel,
    *,
    betas: Sequence[float],
    seeds: int | Sequence[int],
    steps: int,
    eps: float | Sequence[float] = 0.2,
    lr: float | Sequence[float] = 0.05,
    ppo_epochs: int | Sequence[int] = 4,
    kl_ctl: str | Sequence[str] = "fixed",
    target: float | Sequence[float] = KL_TARGET,
    horizon: float | Sequence[float] = 10000.0,
    kl_penalty: str | Sequence[str] | None = None,
    vf_coef: float | Sequence[float] | None = None,
    cliprange_value: float | Sequence[float] = 0.2,
    theta: Any = None,
    ref: Any = None,
    world: World | SequenceWorld | None = None,
    batch_size: int | None = None,
    gamma: float | None = None,
    lam: float | None = None,
    num_mini_batches: int | None = None,
    missing_eos_penalty: float | None = None,
    length_normalize: bool | None = None,
    length_penalty: float | None = None,
    record_every: int = 1,
    n_threads: int | None = None,
    executor: Executor | None = None,
    shards: int | None = None,
    progress: bool | Callable[[int], None] = False,
    exact: bool = False,
    simd: str | None = None,
    max_memory: int | None = None,
    cost_model: RewardModel | None = None,
    lambda_init: float | Sequence[float] | None = None,
    cost_limit: float | Sequence[float] | None = None,
    lagrangian_lr: float | Sequence[float] | None = None,
    lambda_max: float | Sequence[float] | None = None,
    cost_window: int | Sequence[int] | None = None,
    lagrangian_kp: float | Sequence[float] | None = None,
    lr_decay: bool | Sequence[bool] | None = None,
    cost_estimate: str | Sequence[str] | None = None,
) -> SweepResult:
    """Every PPO-RLHF run of the grid ``betas x seeds`` (x any other setting given as a sequence).

    Run ``(beta, ..., seed)`` is ``train_rlhf(theta, ref, w, steps, seed, beta=beta, eps=...,
    lr=..., ppo_epochs=..., kl_ctl=..., target=..., horizon=..., kl_penalty=..., vf_coef=...,
    cliprange_value=...)`` from a copy of ``theta`` against ``ref`` (both uniform by default),
    each with its own zero value baseline.

    With a ``world`` (:class:`rlhf_fast.worlds.World`), the runs are PPO in that world
    instead: a response is a bag of ``world.response_len`` tokens drawn i.i.d. from the
    policy, ``w`` is a :class:`~rlhf_fast.worlds.RewardModel` scoring it ``sum_i w(y_i)``,
    each run starts at the world's reference policy with a fixed beta, and the history keeps
    the exact means over prompts of the proxy score, the hidden gold and the response's KL.

    With a :class:`~rlhf_fast.sequences.SequenceWorld`, the runs are PPO on token sequences
    as TRL runs it (``docs/METHODS.md``, section 11): ``w`` is a
    :class:`~rlhf_fast.sequences.SequenceRewardModel`, ``betas`` are TRL's ``kl_coef``,
    ``eps`` its ``cliprange``, ``ppo_epochs`` its ``num_ppo_epochs``, ``kl_penalty`` its
    ``kl_estimator`` (``"k1"`` or ``"k3"``), ``vf_coef`` 0.1 by default (TRL's); the
    optimiser is SGD with ``lr``. Only ``betas``, ``lr`` and ``seeds`` can be axes there.

    Parameters
    ----------
    w : Mapping[str, float] or RewardModel
        The reward model: ``train_rm``'s dict (one that scores by length alone is refused),
        or with ``world`` a :class:`~rlhf_fast.worlds.RewardModel` with one weight per token
        of the world's vocabulary.
    betas : sequence of float
        KL coefficients (the starting ones for the adaptive and doubling controllers): the
        first axis.
    seeds : int or sequence of int
        A count ``N`` (seeds ``0..N-1``) or the seeds themselves: the last axis.
    steps : int
        PPO steps per run.
    eps, lr, ppo_epochs, kl_ctl, target, horizon, kl_penalty, vf_coef, cliprange_value
        ``train_rlhf``'s settings; each given as a sequence becomes an axis between ``beta``
        and ``seed``, in this order. In a world ``kl_ctl`` must be ``"fixed"``.
        ``kl_penalty=None`` (the default) is ``"full"`` without a world, as the lesson has
        it, and ``"k1"`` in a world, TRL's default: with ``"full"`` the penalty is the
        same for every response the policy could sample, so it only shifts the baseline
        and has no first-order effect on the gradient, ``E_y[beta KL grad log pi(y)] = 0``;
        a sampled estimator is what pulls the policy back to the reference.
    theta, ref : policy, optional
        The starting policy and the frozen reference (dicts or ``[3, 8]`` arrays); not with
        a world, whose runs start at its reference ``world.ref_logits``.
    world : World or SequenceWorld, optional
        Run PPO in this world (``rlhf_fast.worlds.World``; ``World.lesson()`` is the
        lesson's own) rather than the lesson's default one; in a
        :class:`~rlhf_fast.sequences.SequenceWorld`, token PPO.
    batch_size, gamma, lam, num_mini_batches, missing_eos_penalty : optional
        Token PPO's settings, only with a ``SequenceWorld``: TRL's defaults 64 rollouts per
        step, γ = 1, λ = 0.95, 1 minibatch, no penalty for a response without EOS.
    length_normalize, length_penalty : optional
        Only with a ``SequenceWorld``: the length-hacking remedies of issue 11, the RM score
        divided by the content length (at least 1) and ``score - length_penalty *
        n_content`` (:func:`rlhf_fast.length.length_lab` measures them). Off by default.
    record_every : int
        Keep every k-th step of the history (0: per-run summaries only).
    n_threads : int, optional
        Worker threads (default: every core, or ``RAYON_NUM_THREADS``).
    executor : concurrent.futures.Executor, optional
        Run ``shards`` pieces of the grid on its workers instead (e.g. a Dask client's
        ``get_executor()``); the arrays are the same. Not with a world.
    progress : bool or callable
        ``True`` shows a tqdm bar; a callable gets the number of steps finished since its last call.
    exact : bool
        libm's ``exp``/``ln`` in every lane: every float bit-identical to ``train_rlhf``, a
        few times slower. The default's vectorised functions stay within 1e-9 of the
        reference unless a run is ill-conditioned (the doubling rule driving beta to
        astronomic values). With a world, likewise: by default its engine computes along the
        row with the vectorised ``exp`` (the reference's tokens, floats within 1e-9 of it
        while a run is well-conditioned), and ``exact=True`` takes libm's steps, bit for bit
        the reference's.
    simd : str, optional
        Force a vector path (``rlhf_fast.simd_paths()`` lists this CPU's); not with a world,
        whose engine picks this CPU's best unit itself.
    max_memory : int, optional
        Bytes the outputs may take (default: half the machine's memory); a grid needing more
        is refused before any work.
    cost_model : RewardModel, optional
        With a ``world`` that has a safety cost (``World(..., safety=Safety())``): Safe RLHF
        (Dai et al. 2023). The cost model (a reward model trained on
        ``world.safety_preferences``) enters the reward as ``(w - lambda w_c) / (1 + lambda)``
        per token, the KL penalty outside the normalisation; ``method="world_ppo_safe"``.
    lambda_init : float or sequence of float, optional
        The multiplier, fixed without a ``cost_limit`` (1.0 by default; 0 is plain PPO on
        ``w``, bit for bit); the starting one (``> 0``) with a limit.
    cost_limit : float or sequence of float, optional
        Adapt the multiplier towards this limit on the expected cost-model score, Safe RLHF's
        update ``ln lambda += lagrangian_lr * lambda * (J_C - cost_limit)``, ``ln lambda``
        clamped at ``ln lambda_max``; ``J_C`` is the mean cost-model score of the last
        ``cost_window`` sampled responses (what a trainer sees, never the gold cost). The
        step's reward uses the multiplier the previous step left.
    lagrangian_lr : float or sequence of float, optional
        The multiplier's learning rate (0.05 by default).
    lambda_max : float or sequence of float, optional
        The multiplier's ceiling (100.0 by default).
    cost_window : int or sequence of int, optional
        Responses ``J_C`` averages (16 by default).
    lagrangian_kp : float or sequence of float, optional
        The proportional gain of Stooke et al.'s PID Lagrangian (2020), 0.0 by default (Safe
        RLHF's update alone): the reward uses ``exp(ln lambda) + lagrangian_kp * (J_C -
        cost_limit)``, clamped to ``[0, lambda_max]``. The integral update alone answers an
        over-limit cost only once it has summed, and PPO answers the multiplier only after many
        steps, so the pair rings and a run can end far from its limit; the proportional term
        damps that (``docs/METHODS.md``, section 16).
    lr_decay : bool or sequence of bool, optional
        Let the policy's learning rate fall linearly to 0 over the run, step ``t`` at ``lr *
        (1 - t / steps)`` (the linear schedule of TRL's and safe-rlhf's trainers; False by
        default), so that a run ends on a settled policy.
    cost_estimate : str or sequence of str, optional
        What ``J_C`` averages: ``"sampled"`` (the default, Safe RLHF's), each step's response's
        cost-model score, or ``"expected"``, the cost model's expected score under the policy
        after the step, mean over prompts, exact in a bag world: the limit of a step that
        samples many responses. One response per step makes a window of them a noisy
        reading, and the multiplier follows the noise.
        Each of the eight, given as a sequence, becomes an axis after the PPO settings and
        before ``seed``, in this order.

    Returns
    -------
    SweepResult
        ``method="ppo"``: history fields ``prompt``, ``token``, ``objective_scores``,
        ``objective_kl``, ``objective_rlhf_reward``, ``policy_clipfrac_avg``,
        ``objective_kl_coef``, ``mean_kl``, ``penalised_kl``, ``loss_value_avg`` (each
        ``[*axes, step]``), ``final_theta`` and the run summaries ``final_score``,
        ``final_kl``, ``mean_score``, ``mean_reward``, ``mean_kl``, ``clip_frac``,
        ``final_beta``. With a world, ``method="world_ppo"``: history fields
        ``objective_scores`` (the sampled response's proxy score), ``objective_rlhf_reward``,
        ``policy_clipfrac_avg``, ``penalised_kl`` (the penalty that entered the reward) and
        the exact means over prompts under the policy after the step, ``proxy_score``,
        ``gold_score`` and ``mean_kl`` (``L KL(pi || pi_ref)``); ``final_theta`` ``[*axes,
        n_prompts, vocab]``; the run summaries ``final_proxy_score``, ``final_gold_score``,
        ``final_kl``. In a ``SequenceWorld``, ``method="token_ppo"``: TRL's metrics per step
        (``objective_kl``, ``objective_scores``, ..., ``val_num_eos_tokens``), the batch's
        ``mean_length`` and ``gold_score``, and the exact expectations under the policy after
        the step, ``expected_proxy_score``, ``expected_gold_score``, ``expected_kl`` and
        ``expected_length`` (content tokens), means over prompts; ``final_theta`` ``[*axes,
        n_prompts, max_len, vocab]``; the run summaries ``final_proxy_score``,
        ``final_gold_score``, ``final_kl``, ``final_length``.

    Raises
    ------
    ValueError, TypeError
        A setting out of range or of the wrong type, named in the message (``"betas must
        be a sequence of floats, got float"``, ``"lr must be > 0, got -1.0"``); a reward
        model that scores by length alone; or a grid over ``max_memory``: ``"this sweep
        would keep ... bytes (... runs x ... kept steps), over max_memory=... bytes: pass
        record_every=k to keep every k-th step (or 0 for summaries only)"``. With a world:
        ``w`` not a ``RewardModel`` of its vocabulary, a ``kl_ctl`` other than
        ``"fixed"``, or ``theta``, ``ref``, ``executor``, ``shards`` or ``simd`` given.
    FloatingPointError
        A run diverges (a logit overflows): ``"sweep run 12 diverged at step 345: logits
        overflowed (lr=..., beta=...)"``, ``r`` counting the runs in C order.
    MemoryError
        The outputs could not be allocated (Rust backend).
    KeyboardInterrupt
        Ctrl-C, within about 25 ms; nothing is returned.

    Examples
    --------
    >>> w = rl.train_rm(rl.make_dataset(200, seed=0), epochs=2)
    >>> result = rl.sweep_rlhf(w, betas=[0.0, 0.1], seeds=2, steps=50)
    >>> result.axes, result.objective_kl.shape
    ({'beta': [0.0, 0.1], 'seed': [0, 1]}, (2, 2, 50))
    >>> result.final_score.round(4)
    array([[0.4422, 0.492 ],
           [0.442 , 0.4898]])

    In a world, a reward model learned from its labelled pairs:

    >>> from rlhf_fast.worlds import World, train_reward_model
    >>> world = World(n_prompts=4, vocab=64, response_len=8, seed=0)
    >>> rm = train_reward_model(world, world.preferences(300, seed=1))
    >>> result = rl.sweep_rlhf(rm, world=world, betas=[0.05, 0.5], seeds=2, steps=100)
    >>> result.method, result.final_theta.shape
    ('world_ppo', (2, 2, 4, 64))
    >>> result.runs["final_kl"].round(3)
    array([[0.198, 0.458],
           [0.099, 0.288]])

    On token sequences, against a proxy that learned a length bias from its labeller:

    >>> from rlhf_fast.sequences import SequenceWorld, train_sequence_reward_model
    >>> from rlhf_fast.worlds import Labeller
    >>> world = SequenceWorld(n_prompts=4, vocab=16, max_len=6, seed=0)
    >>> pairs = world.preferences(300, seed=1, labeller=Labeller(length_bias=1.0))
    >>> rm = train_sequence_reward_model(world, pairs)
    >>> result = rl.sweep_rlhf(rm, world=world, betas=[0.05], seeds=2, steps=50, lr=1.0,
    ...                        batch_size=16)
    >>> result.method, result.final_theta.shape
    ('token_ppo', (1, 2, 4, 6, 16))
    >>> start = world.expected_content_length(world.ref_logits).mean()
    >>> bool((result.runs["final_length"] > start).all())
    True
    """
    sequence_options = {"batch_size": batch_size, "gamma": gamma, "lam": lam, "num_mini_batches": num_mini_batches,
                        "missing_eos_penalty": missing_eos_penalty, "length_normalize": length_normalize,
                        "length_penalty": length_penalty}
    if isinstance(world, SequenceWorld):
        safety = {"cost_model": cost_model, "lambda_init": lambda_init, "cost_limit": cost_limit,
                  "lagrangian_lr": lagrangian_lr, "lambda_max": lambda_max, "cost_window": cost_window,
                  "lagrangian_kp": lagrangian_kp, "lr_decay": lr_decay, "cost_estimate": cost_estimate}
        for name, value in safety.items():
            if value is not None:
                raise ValueError(f"{name} is a setting of Safe RLHF in a bag World; a SequenceWorld has no safety "
                                 f"cost, got {name}={value!r}")
        return _sweep_sequence_world(w, world, betas, seeds, steps, eps, lr, ppo_epochs, kl_ctl, target, horizon,
                                     kl_penalty, vf_coef, cliprange_value, record_every, n_threads, progress,
                                     max_memory, sequence_options, theta=theta, ref=ref, executor=executor,
                                     shards=shards, simd=simd, exact=exact)
    for name, value in sequence_options.items():
        if value is not None:
            raise ValueError(f"{name} is a setting of PPO on token sequences: it needs world=SequenceWorld(...)")
    if vf_coef is None:
        vf_coef = 0.0
    in_world = world is not None
    if in_world:
        weights = _world_weights(w, world)
    else:
        check.scores_by_content(w)
    if kl_penalty is None:
        kl_penalty = "k1" if in_world else "full"
    grid = _Grid()
    grid.axis("beta", _first_axis("betas", betas, check.non_negative, "floats"))
    steps = check.count("steps", steps, 1)
    record_every = _kept_every(check.count("record_every", record_every, 0), steps)
    for name, value, check_one in (
        ("eps", eps, check.positive),
        ("lr", lr, check.positive),
        ("ppo_epochs", ppo_epochs, check.counts(1, MAX_PPO_EPOCHS)),
        ("kl_ctl", kl_ctl, check.one_of(KL_CONTROLLERS)),
        ("target", target, check.positive),
        ("horizon", horizon, check.positive),
        ("kl_penalty", kl_penalty, check.one_of(KL_PENALTIES)),
        ("vf_coef", vf_coef, check.non_negative),
        ("cliprange_value", cliprange_value, check.positive),
    ):
        grid.setting(name, value, check_one)
    safe = _safety_settings(grid, world, cost_model, lambda_init=lambda_init, cost_limit=cost_limit,
                            lagrangian_lr=lagrangian_lr, lambda_max=lambda_max, cost_window=cost_window,
                            lagrangian_kp=lagrangian_kp, lr_decay=lr_decay, cost_estimate=cost_estimate)
    grid.axis("seed", check.seed_axis(seeds, allow_none=False))
    theta0 = check.policy_array("theta", theta)
    ref0 = check.policy_array("ref", ref)
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(f"executor must be a concurrent.futures.Executor, got {type(executor).__name__}")
    shards = check.optional(check.counts(1))("shards", shards)
    if not isinstance(exact, bool):
        raise TypeError(f"exact must be a bool, got {type(exact).__name__}")
    if simd is not None and not isinstance(simd, str):
        raise TypeError(f"simd must be a str (one of rlhf_fast.simd_paths()) or None, got {type(simd).__name__}")
    n_threads, progress, max_memory = _options(n_threads, progress, max_memory)
    if in_world:
        _refuse_in_world(grid, theta=theta, ref=ref, executor=executor, shards=shards, simd=simd)
        if safe is not None:
            return _sweep_world(world, weights, grid, steps, record_every, n_threads, progress, max_memory,
                                exact=exact, method="world_ppo_safe", make_run=_safe_world_ppo_run,
                                engine="sweep_safe_world_rlhf", summaries=6, cost_weights=safe,
                                gold_cost=np.ascontiguousarray(world.gold_cost))._in_world(world, w)
        return _sweep_world(world, weights, grid, steps, record_every, n_threads, progress, max_memory,
                            exact=exact)._in_world(
            world, w)

    def make_run(s):
        return (s["seed"], s["eps"], s["lr"], s["ppo_epochs"], s["kl_ctl"], s["beta"], s["target"], s["horizon"],
                s["kl_penalty"], s["vf_coef"], s["cliprange_value"])

    def engine(runs, callback, limit):
        if executor is None:
            return _engines.sweep_rlhf(theta0, ref0, w, steps, runs, record_every=record_every, exact=exact, simd=simd,
                                       n_threads=n_threads, progress=callback, max_memory=limit)
        _engines.sweep_rlhf(theta0, ref0, w, 1, runs[:1], record_every=0, simd=simd)  # fail here, not remotely
        n_shards = shards if shards is not None else min(len(runs), 4 * (os.cpu_count() or 2))
        bounds = np.linspace(0, len(runs), n_shards + 1).astype(int)
        pieces = [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        futures = [executor.submit(_shard_runs, theta0, ref0, dict(w), steps, runs[a:b], record_every, exact, simd)
                   for a, b in pieces]
        parts = []
        for future, (a, b) in zip(futures, pieces):
            parts.append(future.result())
            if callback is not None:
                callback(int(b - a) * steps)
        return _concat_shards(parts)

    return _sweep("ppo", grid, make_run, engine, steps=steps, record_every=record_every, summaries=7, params=_TABLE,
                  work=lambda runs: len(runs) * steps, progress=progress, max_memory=max_memory)


def _world_weights(w: Any, world: Any) -> np.ndarray:
    """The reward model's weights for a world sweep: ``w`` a ``RewardModel`` of the world's tokens."""
    if not isinstance(world, World):
        raise TypeError(f"world must be a rlhf_fast.worlds.World, got {type(world).__name__}")
    if not isinstance(w, RewardModel):
        raise TypeError(
            f"w must be a rlhf_fast.worlds.RewardModel in a world (one weight per token), got {type(w).__name__}"
        )
    if len(w.weights) != world.vocab:
        raise ValueError(f"w must weigh the world's {world.vocab} tokens, got {len(w.weights)} weights")
    return w.weights


def _refuse_in_world(grid: _Grid, **lesson_only: Any) -> None:
    """A world's engine keeps beta fixed and starts at the world's reference, on this machine."""
    has_kl_ctl = "kl_ctl" in grid.axes or "kl_ctl" in grid.constants  # PPO's grid has one
    for i, value in enumerate(grid.values("kl_ctl") if has_kl_ctl else []):
        if value != "fixed":
            name = "kl_ctl" if "kl_ctl" in grid.constants else f"kl_ctl[{i}]"
            raise ValueError(f"{name} must be 'fixed' with a world (its engine keeps beta fixed), got {value!r}")
    for name, value in lesson_only.items():
        if value is not None:
            why = {"theta": "its runs start at its reference, world.ref_logits",
                   "ref": "its reference is world.ref_logits",
                   "simd": "its engine picks the vector unit itself"}.get(name, "its runs are spread over this machine's threads")
            raise ValueError(f"{name} cannot be given with a world: {why}")


def _world_ppo_run(s: dict[str, Any]) -> tuple:
    """A run of :func:`sweep_rlhf`'s grid as the world PPO engine takes it."""
    return (s["seed"], s["eps"], s["lr"], s["ppo_epochs"], s["beta"], s["kl_penalty"], s["vf_coef"],
            s["cliprange_value"])


def _sweep_world(world: World, weights: np.ndarray, grid: _Grid, steps: int, record_every: int,
                 n_threads: int | None, progress: Any, max_memory: int | None, *, method: str = "world_ppo",
                 make_run: Callable[[dict[str, Any]], tuple] = _world_ppo_run, engine: str = "sweep_world_rlhf",
                 summaries: int = 3, **engine_options: Any) -> SweepResult:
    """A grid run in ``world`` by a world engine (``engine``, the name of the core's function,
    given ``engine_options`` too): :func:`sweep_rlhf`'s PPO grid by default, :func:`sweep_grpo`'s
    with ``method="world_grpo"``."""
    gold, count_once, offset = _world_gold(world)

    def run_engine(runs, callback, limit):
        return getattr(_engines, engine)(world.ref_logits, weights, gold, count_once, world.response_len, steps, runs,
                                         record_every=record_every, n_threads=n_threads, progress=callback,
                                         max_memory=limit, **engine_options)

    result = _sweep(method, grid, make_run, run_engine, steps=steps, record_every=record_every, summaries=summaries,
                    params=world.n_prompts * world.vocab, work=lambda runs: len(runs) * steps, progress=progress,
                    max_memory=max_memory)
    return _shift_gold(result, offset)


# What the Safe RLHF settings of sweep_rlhf take when a cost model is given without them.
_SAFETY_DEFAULTS = {"lambda_init": 1.0, "cost_limit": None, "lagrangian_lr": 0.05, "lambda_max": 100.0,
                    "cost_window": 16, "lagrangian_kp": 0.0, "lr_decay": False, "cost_estimate": "sampled"}


def _safety_settings(grid: _Grid, world: Any, cost_model: Any, **settings: Any) -> np.ndarray | None:
    """The cost model's weights with its settings added to ``grid`` (each a constant or an
    axis), or None without a cost model (and then none of the settings may be given)."""
    if cost_model is None:
        for name, value in settings.items():
            if value is not None:
                raise ValueError(f"{name} applies with a cost_model (Safe RLHF in a world), got {value!r}")
        return None
    if world is None:
        raise ValueError("cost_model needs a world with a safety cost (World(..., safety=Safety()))")
    if not isinstance(cost_model, RewardModel):
        raise TypeError(f"cost_model must be a rlhf_fast.worlds.RewardModel, got {type(cost_model).__name__}")
    if len(cost_model.weights) != world.vocab:
        raise ValueError(f"cost_model must weigh the world's {world.vocab} tokens, got {len(cost_model.weights)} "
                         "weights")
    weights = cost_model.weights
    if world.cost_token is None:
        raise ValueError("world must have a safety cost with a cost_model: build it with World(..., safety=Safety())")
    checkers = {"lambda_init": check.non_negative, "cost_limit": check.optional(check.finite),
                "lagrangian_lr": check.non_negative, "lambda_max": check.positive,
                "cost_window": check.counts(1, 1 << 16), "lagrangian_kp": check.non_negative,
                "lr_decay": check.boolean, "cost_estimate": check.one_of(COST_ESTIMATES)}
    for name, value in settings.items():
        grid.setting(name, _SAFETY_DEFAULTS[name] if value is None else value, checkers[name])
    return weights


def _safe_world_ppo_run(s: dict[str, Any]) -> tuple:
    """A run of :func:`sweep_rlhf`'s grid with a cost model, as the safety engine takes it."""
    return (_world_ppo_run(s), (s["lambda_init"], s["cost_limit"], s["lagrangian_lr"], s["lambda_max"],
                                s["cost_window"], s["lagrangian_kp"], s["lr_decay"], s["cost_estimate"]))


# TRL's PPOConfig defaults for what only PPO on token sequences takes (and its vf_coef).
_SEQUENCE_DEFAULTS = {"batch_size": 64, "gamma": 1.0, "lam": 0.95, "num_mini_batches": 1, "missing_eos_penalty": None,
                      "length_normalize": False, "length_penalty": 0.0}
_SEQUENCE_VF_COEF = 0.1
# The grid axes a token PPO sweep can take: the engine shares every other setting between runs.
_SEQUENCE_AXES = ("beta", "lr", "seed")


def _sweep_sequence_world(rm: Any, world: SequenceWorld, betas: Any, seeds: Any, steps: Any, eps: Any, lr: Any,
                          ppo_epochs: Any, kl_ctl: Any, target: Any, horizon: Any, kl_penalty: Any, vf_coef: Any,
                          cliprange_value: Any, record_every: Any, n_threads: Any, progress: Any, max_memory: Any,
                          sequence_options: dict[str, Any], **lesson_only: Any) -> SweepResult:
    """:func:`sweep_rlhf` in a :class:`~rlhf_fast.sequences.SequenceWorld`: PPO on token
    sequences as TRL runs it (the core's ``sweep_token_ppo``), ``rm`` a
    :class:`~rlhf_fast.sequences.SequenceRewardModel` of the world."""
    rm = _rm_for("w", rm, world)
    grid = _Grid()
    grid.axis("beta", _first_axis("betas", betas, check.non_negative, "floats"))
    steps = check.count("steps", steps, 1)
    record_every = _kept_every(check.count("record_every", record_every, 0), steps)
    for name, value, check_one in (
        ("eps", eps, check.positive),
        ("lr", lr, check.positive),
        ("ppo_epochs", ppo_epochs, check.counts(1, _reference_token_ppo.MAX_PPO_EPOCHS)),
        ("kl_ctl", kl_ctl, check.one_of(KL_CONTROLLERS)),
        ("target", target, check.positive),
        ("horizon", horizon, check.positive),
        ("kl_penalty", "k1" if kl_penalty is None else kl_penalty, check.one_of(_reference_token_ppo.KL_ESTIMATORS)),
        ("vf_coef", _SEQUENCE_VF_COEF if vf_coef is None else vf_coef, check.non_negative),
        ("cliprange_value", cliprange_value, check.positive),
    ):
        grid.setting(name, value, check_one)
    grid.axis("seed", check.seed_axis(seeds, allow_none=False))
    for name in grid.axes:
        if name not in _SEQUENCE_AXES:
            raise ValueError(f"{name} must be a single value with a SequenceWorld (only betas, lr and seeds can be "
                             "swept: its engine shares every other setting between runs)")
    n_threads, progress, max_memory = _options(n_threads, progress, max_memory)
    _refuse_in_world(grid, **{name: value for name, value in lesson_only.items() if name != "exact"})
    if not isinstance(lesson_only["exact"], bool):
        raise TypeError(f"exact must be a bool, got {type(lesson_only['exact']).__name__}")
    options = {name: _SEQUENCE_DEFAULTS[name] if value is None else value for name, value in sequence_options.items()}
    # Checked here, as the reference checks them, so that both engines refuse with one message.
    options["batch_size"] = check.count("batch_size", options["batch_size"], 2, _reference_token_ppo.MAX_BATCH_SIZE)
    for name in ("gamma", "lam"):
        options[name] = check.finite(name, options[name])
    options["num_mini_batches"] = check.count("num_mini_batches", options["num_mini_batches"], 1)
    if options["missing_eos_penalty"] is not None:
        options["missing_eos_penalty"] = check.finite("missing_eos_penalty", options["missing_eos_penalty"])
    options["length_normalize"] = check.boolean("length_normalize", options["length_normalize"])
    options["length_penalty"] = check.non_negative("length_penalty", options["length_penalty"])
    constants = grid.constants
    bias = np.ascontiguousarray(rm.prompt_bias(world.n_prompts), dtype=np.float64)

    def engine(runs, callback, limit):
        return _engines.sweep_token_ppo(
            world.ref_logits, rm.weights, bias, rm.length_weight, world.gold_token, world.gold_offset,
            world.count_once, steps, runs, cliprange=constants["eps"], cliprange_value=constants["cliprange_value"],
            vf_coef=constants["vf_coef"], kl_estimator=constants["kl_penalty"],
            num_ppo_epochs=constants["ppo_epochs"], record_every=record_every, n_threads=n_threads, progress=callback,
            max_memory=limit, **options)

    return _sweep("token_ppo", grid, lambda s: (s["seed"], s["beta"], s["lr"]), engine, steps=steps,
                  record_every=record_every, summaries=4, params=world.n_prompts * world.max_len * world.vocab,
                  work=lambda runs: len(runs) * steps, progress=progress, max_memory=max_memory)


def _world_gold(world: World) -> tuple[np.ndarray, bool, float]:
    """What a world engine is handed of the gold: ``(gold_token table, count_once, offset)``.

    A count-once gold is ``sum_a gold_seen(a) s(a) - repeat_penalty * L``: the engines sum
    the first part, and the constant ``offset`` is added by :func:`_shift_gold`, once, to what
    they recorded.
    """
    count_once = world.gold == "count_once"
    gold = world.gold_seen if count_once else world.gold_token
    return gold, count_once, world.repeat_penalty * world.response_len if count_once else 0.0


def _shift_gold(result: SweepResult, offset: float) -> SweepResult:
    """A world sweep's gold (history and final) less the constant ``offset`` of :func:`_world_gold`."""
    if offset:
        if "gold_score" in result.fields:
            result.history[..., result.fields.index("gold_score"), :] -= offset
        result.runs["final_gold_score"] -= offset
    return result


# --------------------------------------------------------------------------- reward models


def sweep_rm(
    pairs: Any,
    *,
    lrs: float | Sequence[float] = 0.1,
    epochs: int | Sequence[int] = 5,
    n_pairs: int | Sequence[int] | None = None,
    heldout: Any = None,
    n_threads: int | None = None,
    progress: bool | Callable[[int], None] = False,
    max_memory: int | None = None,
) -> SweepResult:
    """Many Bradley-Terry reward models at once: the grid ``lrs x epochs x n_pairs``.

    Model ``(lr, e, n)`` is ``train_rm(pairs[:n], epochs=e, lr=lr)`` (within 1e-9).

    Parameters
    ----------
    pairs : PreferenceSet or iterable of pairs
        A :class:`PreferenceSet` (tokenised once: ``PreferenceSet.make_dataset(n, seed)``) or
        ``(prompt, chosen, rejected)`` triples or TRL rows.
    lrs, epochs, n_pairs : scalar or sequence
        The axes ``lr``, ``epochs``, ``n_pairs`` (default: all the pairs).
    heldout : PreferenceSet or iterable of pairs, optional
        Scores every model's ``pairwise_accuracy``: the run summary ``accuracy``.
    n_threads, progress, max_memory
        As :func:`sweep_rlhf`.

    Returns
    -------
    SweepResult
        ``method="rm"``: ``weights [lr, epochs, n_pairs, token]`` over ``vocab``,
        ``w(lr=..., epochs=..., n_pairs=...)`` as the lesson's dict, and ``accuracy`` with
        ``heldout``.

    Raises
    ------
    ValueError, TypeError
        A setting out of range or of the wrong type, named in the message (``"lrs[1] must be
        > 0, got 0.0"``); empty ``pairs`` or ``heldout``; ``n_pairs`` above the number of
        pairs (``"n_pairs=500 is more than the 200 pairs given"``); or a grid over
        ``max_memory`` (``"this sweep would keep ... bytes ..., over max_memory=...
        bytes: sweep fewer runs"``).
    FloatingPointError
        A model's weights overflow: ``"sweep run 3 diverged in epoch 1: weights
        overflowed (lr=...)"``.
    MemoryError
        The outputs could not be allocated (Rust backend).
    KeyboardInterrupt
        Ctrl-C, within about 25 ms; nothing is returned.

    Examples
    --------
    >>> pairs = rl.PreferenceSet.make_dataset(200, seed=0)
    >>> result = rl.sweep_rm(pairs, lrs=[0.1, 1.0], epochs=2, heldout=rl.make_dataset(50, 1))
    >>> result.shape, result.accuracy.ravel().tolist()
    ((2, 1, 1), [1.0, 1.0])
    >>> round(result.w(lr=0.1)["kind"], 4)  # train_rm(pairs, epochs=2, lr=0.1)["kind"]
    1.0421
    """
    preference_set = _engines.PreferenceSet
    prefs = pairs if isinstance(pairs, preference_set) else preference_set(pairs)
    if not len(prefs):
        raise ValueError("pairs must not be empty")
    grid = _Grid()
    grid.axis("lr", check.grid_axis("lrs", lrs, check.positive)[0])
    grid.axis("epochs", check.grid_axis("epochs", epochs, check.counts(0))[0])
    sizes = check.grid_axis("n_pairs", len(prefs) if n_pairs is None else n_pairs, check.counts(1))[0]
    for n in sizes:
        if n > len(prefs):
            raise ValueError(f"n_pairs={n} is more than the {len(prefs)} pairs given")
    grid.axis("n_pairs", sizes)
    held = None
    if heldout is not None:
        if not isinstance(heldout, preference_set):  # checked here, so that the errors name heldout
            heldout = preference_set(check.preference_triples("heldout", heldout))
        if not len(heldout):
            raise ValueError("heldout must not be empty")
        held = heldout
    n_threads, progress, max_memory = _options(n_threads, progress, max_memory)

    def engine(runs, callback, limit):
        return _engines.sweep_rm(prefs, runs, n_threads=n_threads, progress=callback, max_memory=limit)

    def accuracy(out):
        if held is None:
            return {}
        vocab = list(out["vocab"])
        return {
            "accuracy": [_engines.pairwise_accuracy(dict(zip(vocab, row.tolist())), held) for row in out["final_params"]]
        }

    return _sweep("rm", grid, lambda s: (s["lr"], s["epochs"], 0, s["n_pairs"]), engine, steps=0, record_every=0,
                  summaries=0 if held is None else 1, params=len(prefs.vocab), work=lambda runs: sum(e * n for _, e, _, n in runs),
                  progress=progress, max_memory=max_memory, extra_runs=accuracy)


# ----------------------------------------------------------------------------------- DPO


def _dpo_pairs(pairs: Any) -> list:
    """Pairs as a list (a generator is read once); a ``PreferenceSet`` lost the token order."""
    if isinstance(pairs, WorldPairs):
        raise TypeError("pairs is a rlhf_fast.worlds.WorldPairs: pass the world it came from too (world=...)")
    if hasattr(pairs, "bags") or type(pairs).__name__ == "PreferenceSet":
        raise TypeError(
            "pairs must be (prompt, chosen, rejected) triples or rows, not a PreferenceSet "
            "(its bags lose the token order DPO sums log-probabilities in): pass pairs.to_pairs()"
        )
    if isinstance(pairs, (str, bytes)) or not hasattr(pairs, "__iter__"):
        raise TypeError(
            f"pairs must be a sequence of (prompt, chosen, rejected) triples or rows, got {type(pairs).__name__}"
        )
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs must not be empty")
    return pairs


def sweep_dpo(
    pairs: Sequence[tuple[str, str, str] | Mapping[str, str]] | WorldPairs,
    *,
    betas: Sequence[float],
    seeds: int | Sequence[int | None] | None = None,
    loss_type: str | Sequence[str] = "sigmoid",
    label_smoothing: float | Sequence[float] = 0.0,
    lr: float | Sequence[float] = 0.05,
    epochs: int | Sequence[int] = 1,
    theta: Any = None,
    ref: Any = None,
    w: Mapping[str, float] | RewardModel | None = None,
    world: World | None = None,
    record_every: int = 1,
    n_threads: int | None = None,
    progress: bool | Callable[[int], None] = False,
    max_memory: int | None = None,
) -> SweepResult:
    """Every DPO run of the grid ``betas x loss_type x label_smoothing x lr x epochs x seeds``.

    Run ``(beta, ..., seed)`` is ``train_dpo(theta, ref, pairs, epochs=..., beta=..., lr=...,
    loss_type=..., label_smoothing=..., seed=seed)`` from a copy of ``theta`` against ``ref``
    (both uniform by default).

    With a ``world`` (:class:`rlhf_fast.worlds.World`), the runs are DPO in that world on its
    labelled pairs (``world.preferences(n, seed, labeller)``): the policy is one row of logits
    per prompt, starting at ``world.ref_logits``, which is also the frozen reference; a
    response is a bag of ``L = world.response_len`` i.i.d. tokens, ``log pi(y|x) = sum_i log
    softmax(theta_x)[y_i]``. Each pair is one SGD step of the lesson's DPO on the response its
    label prefers; the gradient in the logits is ``count(y+) - count(y-)`` times the loss's
    derivative (the policy's terms cancel for equal lengths; IPO's log-ratios are averaged over
    the ``L`` tokens, as TRL's are). A soft label ``t = P(first preferred)`` (an AI judge with
    ``soft=True``) makes the sigmoid loss the cross-entropy ``-t log sigmoid(h) - (1 - t) log
    sigmoid(-h)``, ``h`` the DPO logit of the first over the second: cDPO's label smoothing
    with the preferred response as chosen and ``min(t, 1 - t)`` as its smoothing (a hard label
    is the ordinary loss). ``label_smoothing`` then smooths the target once more, ``t' = (1 -
    ls) t + ls (1 - t)``. The robust, IPO and hinge losses are defined for hard labels only,
    and refuse soft ones. The history also holds the exact means over prompts, under the
    policy after each step, of the gold, the response's KL and, with ``w``, the proxy score.

    Parameters
    ----------
    pairs : sequence of pairs or WorldPairs
        ``(prompt, chosen, rejected)`` triples or TRL rows, every token in ``VOCAB``; with a
        ``world``, its labelled pairs (:class:`~rlhf_fast.worlds.WorldPairs`).
    betas : sequence of float
        The first axis.
    seeds : int, sequence of int or None, or None
        The shuffle seeds, the last axis: a count (``0..N-1``), a list, or ``None`` (one run
        per point, the pairs in order).
    loss_type, label_smoothing, lr, epochs : scalar or sequence
        Each given as a sequence becomes an axis, in this order; a point pairing a non-zero
        ``label_smoothing`` with ``ipo`` or ``hinge`` is refused, as ``train_dpo`` refuses it.
    theta, ref : policy, optional
        The starting policy and the frozen reference; not with a world, whose runs start at
        its reference ``world.ref_logits``.
    w : Mapping[str, float] or RewardModel, optional
        A reward model to score each final policy with (``final_score``; without one the
        summary has no ``final_score``); with a world, a
        :class:`~rlhf_fast.worlds.RewardModel` of its vocabulary whose exact score the
        history records as ``proxy_score`` (DPO never sees it).
    world : World, optional
        Run DPO in this world on ``pairs``, its labelled pairs.
    record_every, n_threads, progress, max_memory
        As :func:`sweep_rlhf`.

    Returns
    -------
    SweepResult
        ``method="dpo"``: history fields ``prompt``, ``loss``, ``rewards_chosen``,
        ``rewards_rejected``, ``rewards_margins``, ``rewards_accuracies`` (a run with fewer
        epochs than the longest is NaN past its end, ``prompt`` -1), ``final_theta``, and the
        run summaries ``final_score`` (with ``w``), ``final_kl``, ``last_epoch_loss``,
        ``last_epoch_accuracy``, ``last_epoch_margin``. With a world, ``method="world_dpo"``:
        history fields ``prompt_index`` (the pair's prompt), ``loss``, ``rewards_chosen``,
        ``rewards_rejected``, ``rewards_margins``, ``rewards_accuracies`` (before the step),
        then the exact means after it, ``proxy_score`` (with ``w``), ``gold_score`` and
        ``mean_kl`` (``L KL(pi || pi_ref)``); ``final_theta`` ``[*axes, n_prompts, vocab]``;
        the run summaries ``final_proxy_score`` (with ``w``), ``final_gold_score``,
        ``final_kl`` and the last epoch's three means.

    Raises
    ------
    ValueError, TypeError
        A setting out of range or of the wrong type, named in the message; empty
        ``pairs``, a pair with a token outside ``VOCAB``, or a :class:`PreferenceSet`
        (its bags lose the token order: pass ``pairs.to_pairs()``); a point pairing a
        non-zero ``label_smoothing`` with ``ipo`` or ``hinge``; or a grid over
        ``max_memory`` (``"this sweep would keep ... bytes ..., over max_memory=...
        bytes: pass record_every=k ..."``). With a world: ``pairs`` not a ``WorldPairs`` of
        it (another response length, a prompt or token past the world's), ``w`` not a
        ``RewardModel`` of its vocabulary, ``theta`` or ``ref`` given, or soft labels with a
        ``loss_type`` other than ``"sigmoid"``; a ``WorldPairs`` without its world.
    FloatingPointError
        A run diverges (a logit overflows): ``"sweep run 12 diverged at step 345: logits
        overflowed (lr=..., beta=...)"``, ``r`` counting the runs in C order.
    MemoryError
        The outputs could not be allocated (Rust backend).
    KeyboardInterrupt
        Ctrl-C, within about 25 ms; nothing is returned.

    Examples
    --------
    >>> w = rl.train_rm(rl.make_dataset(200, seed=0), epochs=2)
    >>> result = rl.sweep_dpo(rl.make_dataset(50, seed=0), betas=[0.1, 0.5], seeds=2, w=w)
    >>> result.loss.shape, result.final_score.round(4)
    ((2, 2, 50), array([[0.0228, 0.0228],
           [0.1076, 0.1077]]))

    In a world, on pairs its human labeller judged (the gold of the reference policy is
    -3.317 here; DPO raises it, further at the larger beta in three epochs of plain SGD):

    >>> from rlhf_fast.worlds import World
    >>> world = World(n_prompts=4, vocab=64, response_len=8, seed=0)
    >>> pairs = world.preferences(200, seed=1)
    >>> result = rl.sweep_dpo(pairs, world=world, betas=[0.1, 0.5], seeds=2, epochs=3, lr=0.5,
    ...                       record_every=50)
    >>> result.method, result.gold_score.shape
    ('world_dpo', (2, 2, 12))
    >>> result.runs["final_gold_score"].round(3)
    array([[-1.731, -1.738],
           [-0.433, -0.299]])
    """
    pairs = _dpo_pairs(pairs) if world is None else _world_pairs(pairs, world)
    grid = _Grid()
    grid.axis("beta", _first_axis("betas", betas, check.positive, "floats"))
    record_every = check.count("record_every", record_every, 0)
    for name, value, check_one in (
        ("loss_type", loss_type, check.one_of(DPO_LOSS_TYPES)),
        ("label_smoothing", label_smoothing, check.non_negative),
        ("lr", lr, check.positive),
        ("epochs", epochs, check.counts(1)),
    ):
        grid.setting(name, value, check_one)
    grid.axis("seed", check.seed_axis(seeds, allow_none=True))
    for ls in grid.values("label_smoothing"):
        if not 0.0 <= ls < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {ls!r}")
        for kind in grid.values("loss_type"):
            if ls != 0.0 and kind not in ("sigmoid", "robust"):
                raise ValueError(
                    "label_smoothing is only defined for loss_type 'sigmoid' and 'robust', got "
                    f"{ls!r} with loss_type={kind!r}: sweep those losses separately"
                )
    if isinstance(world, SequenceWorld):
        from . import sequence_sweeps
        return sequence_sweeps.sweep_sequence_dpo(world, pairs, w, grid, theta, ref, record_every, n_threads,
                                                  progress, max_memory)
    if world is not None:
        return _sweep_world_dpo(world, pairs, w, grid, theta, ref, record_every, n_threads, progress, max_memory)
    if w is not None:
        check.weights(w)
    theta0 = check.policy_array("theta", theta)
    ref0 = check.policy_array("ref", ref)
    record_every = _kept_every(record_every, max(grid.values("epochs")) * len(pairs))
    n_threads, progress, max_memory = _options(n_threads, progress, max_memory)

    def engine(runs, callback, limit):
        return _engines.sweep_dpo(theta0, ref0, pairs, runs, w=w, record_every=record_every, n_threads=n_threads,
                                  progress=callback, max_memory=limit)

    return _sweep("dpo", grid, lambda s: (s["beta"], s["lr"], s["loss_type"], s["label_smoothing"], s["epochs"],
                                          s["seed"]),
                  engine, steps=max(grid.values("epochs")) * len(pairs), record_every=record_every,
                  summaries=5 if w is not None else 4, params=_TABLE,
                  work=lambda runs: sum(run[4] for run in runs) * len(pairs), progress=progress, max_memory=max_memory)


def _world_pairs(pairs: Any, world: Any) -> WorldPairs:
    """``pairs`` for a world DPO sweep: labelled pairs of the world's responses, at least one."""
    if isinstance(world, SequenceWorld):
        from . import sequence_sweeps
        return sequence_sweeps.sequence_pairs(pairs, world)
    if not isinstance(world, World):
        raise TypeError(f"world must be a rlhf_fast.worlds.World, got {type(world).__name__}")
    pairs = _pairs_of("pairs", pairs, world)
    if not len(pairs):
        raise ValueError("pairs must not be empty")
    return pairs


def _sweep_world_dpo(world: World, pairs: WorldPairs, w: Any, grid: _Grid, theta: Any, ref: Any, record_every: int,
                     n_threads: Any, progress: Any, max_memory: Any) -> SweepResult:
    """The DPO grid of :func:`sweep_dpo` run in ``world`` by its engine."""
    weights = None if w is None else _world_weights(w, world)
    for name, value in (("theta", theta), ("ref", ref)):
        if value is not None:
            why = ("its runs start at its reference, world.ref_logits" if name == "theta"
                   else "its reference is world.ref_logits")
            raise ValueError(f"{name} cannot be given with a world: {why}")
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
    record_every = _kept_every(record_every, steps)
    n_threads, progress, max_memory = _options(n_threads, progress, max_memory)
    gold, count_once, offset = _world_gold(world)

    def engine(runs, callback, limit):
        return _engines.sweep_world_dpo(world.ref_logits, weights, gold, count_once, world.response_len, pairs.prompts,
                                        pairs.first, pairs.second, pairs.target, runs, record_every=record_every,
                                        n_threads=n_threads, progress=callback, max_memory=limit)

    result = _sweep("world_dpo", grid, lambda s: (s["beta"], s["lr"], s["loss_type"], s["label_smoothing"],
                                                  s["epochs"], s["seed"]),
                    engine, steps=steps, record_every=record_every, summaries=6 if w is not None else 5,
                    params=world.n_prompts * world.vocab, work=lambda runs: sum(run[4] for run in runs) * len(pairs),
                    progress=progress, max_memory=max_memory)
    return _shift_gold(result, offset)._in_world(world, w)


# ---------------------------------------------------------------------------------- GRPO

_HISTORY_FIELDS["world_grpo"] = 8
_HISTORY_FIELDS["sequence_dpo"] = 10


def sweep_grpo(
    w: Mapping[str, float] | RewardModel,
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
    world: World | SequenceWorld | None = None,
    record_every: int = 1,
    n_threads: int | None = None,
    progress: bool | Callable[[int], None] = False,
    max_memory: int | None = None,
) -> SweepResult:
    """Every GRPO run of the grid ``betas x seeds`` (x any other setting given as a sequence).

    ``num_generations``, ``epsilon``, ``lr`` and ``num_iterations`` given as sequences are
    axes, in that order between beta and seed. Run ``(beta, ..., seed)`` is
    ``train_grpo(theta, ref, w, steps, seed, beta=..., ...)`` from a copy of ``theta`` against
    ``ref`` (both uniform by default).

    With a ``world`` (:class:`rlhf_fast.worlds.World`), the runs are GRPO in that world
    instead: each step samples ``num_generations`` responses, bags of ``world.response_len``
    tokens drawn i.i.d. from the policy, scored ``sum_i w(y_i)`` by ``w``, a
    :class:`~rlhf_fast.worlds.RewardModel`; the loss is TRL's per-token one (each token has its
    own ratio, clipped term and ``k3``, averaged over the group's tokens, as TRL's default
    ``loss_type="dapo"`` does when every completion has the same length). Each run starts at
    the world's reference policy, which is also the ``k3`` term's reference, and the history
    keeps the exact means over prompts of the proxy score, the hidden gold and the
    response's KL.

    Parameters
    ----------
    w : Mapping[str, float] or RewardModel
        The reward model; one that scores by length alone is refused. With ``world``, a
        :class:`~rlhf_fast.worlds.RewardModel` with one weight per token of the world.
    betas : sequence of float
        KL coefficients of the ``k3`` term: the first axis.
    seeds : int or sequence of int
        A count (``0..N-1``) or the seeds: the last axis.
    steps : int
        GRPO steps (groups) per run.
    num_generations, epsilon, lr, num_iterations : scalar or sequence
        ``train_grpo``'s settings; sequences become axes.
    epsilon_high, scale_rewards
        ``train_grpo``'s, the same for every run.
    theta, ref, record_every, n_threads, progress, max_memory
        As :func:`sweep_rlhf`; ``theta`` and ``ref`` not with a world.
    world : World or SequenceWorld, optional
        Run GRPO in this world (``rlhf_fast.worlds.World``) rather than the lesson's. In a
        :class:`~rlhf_fast.sequences.SequenceWorld` (``w`` a
        :class:`~rlhf_fast.sequences.SequenceRewardModel`), each step draws one prompt and
        ``num_generations`` completions of it token by token, and ``method="sequence_grpo"``:
        the history has the batch's statistics and the exact expected proxy score, gold, KL and
        length of each kept step's policy; only ``betas``, ``lr`` and ``seeds`` can be axes.

    Returns
    -------
    SweepResult
        ``method="grpo"``: history fields ``prompt``, ``reward`` (the group's mean),
        ``reward_std``, ``kl`` (exact), ``clip_ratio``, ``loss``, ``mean_kl``; ``final_theta``;
        run summaries ``final_score``, ``final_kl``, ``mean_score``, ``mean_reward_std``,
        ``mean_kl``, ``clip_frac``, ``mean_loss``. With a world, ``method="world_grpo"``:
        history fields ``reward`` (the group's mean proxy score), ``reward_std``, ``kl``
        (the sampled prompt's exact ``L KL(pi_old || pi_ref)`` before the step),
        ``clip_ratio`` (of the (token, iteration) terms), ``loss`` and the exact means over
        prompts under the policy after the step, ``proxy_score``, ``gold_score`` and
        ``mean_kl`` (``L KL(pi || pi_ref)``); ``final_theta`` ``[*axes, n_prompts, vocab]``;
        run summaries ``final_proxy_score``, ``final_gold_score``, ``final_kl``, then
        ``mean_score``, ``mean_reward_std``, ``mean_kl`` (the mean of ``kl`` over the steps,
        in ``runs["mean_kl"]``), ``clip_frac`` and ``mean_loss``.

    Raises
    ------
    ValueError, TypeError
        A setting out of range or of the wrong type, named in the message
        (``"num_generations must be >= 2, got 1"``); a reward model that scores by length
        alone; or a grid over ``max_memory`` (``"this sweep would keep ... bytes ..., over
        max_memory=... bytes: pass record_every=k ..."``). With a world: ``w`` not a
        ``RewardModel`` of its vocabulary, ``theta`` or ``ref`` given, or a group of more
        than 2**20 tokens (``num_generations * response_len``).
    FloatingPointError
        A run diverges (a logit overflows): ``"sweep run 12 diverged at step 345: logits
        overflowed (lr=..., beta=...)"``, ``r`` counting the runs in C order.
    MemoryError
        The outputs could not be allocated (Rust backend).
    KeyboardInterrupt
        Ctrl-C, within about 25 ms; nothing is returned.

    Examples
    --------
    >>> w = rl.train_rm(rl.make_dataset(200, seed=0), epochs=2)
    >>> result = rl.sweep_grpo(w, betas=[0.04], seeds=2, steps=20)
    >>> result.fields
    ('prompt', 'reward', 'reward_std', 'kl', 'clip_ratio', 'loss', 'mean_kl')
    >>> result.final_score.round(4)
    array([[0.0391, 0.0404]])

    In a world, a reward model learned from its labelled pairs:

    >>> from rlhf_fast.worlds import World, train_reward_model
    >>> world = World(n_prompts=4, vocab=64, response_len=8, seed=0)
    >>> rm = train_reward_model(world, world.preferences(300, seed=1))
    >>> result = rl.sweep_grpo(rm, world=world, betas=[0.0, 0.5], seeds=2, steps=100, lr=0.5)
    >>> result.method, result.final_theta.shape
    ('world_grpo', (2, 2, 4, 64))
    >>> result.runs["final_kl"].round(3)
    array([[0.238, 0.251],
           [0.136, 0.143]])
    """
    in_world = world is not None
    if isinstance(world, SequenceWorld):
        w = _rm_for("w", w, world)
    elif in_world:
        weights = _world_weights(w, world)
    else:
        check.scores_by_content(w)
    grid = _Grid()
    grid.axis("beta", _first_axis("betas", betas, check.non_negative, "floats"))
    steps = check.count("steps", steps, 1)
    record_every = _kept_every(check.count("record_every", record_every, 0), steps)
    epsilon_high = check.optional(check.positive)("epsilon_high", epsilon_high)
    scale_rewards = check.option("scale_rewards", scale_rewards, SCALE_REWARDS)
    for name, value, check_one in (
        ("num_generations", num_generations, check.counts(2, MAX_NUM_GENERATIONS)),
        ("epsilon", epsilon, check.positive),
        ("lr", lr, check.positive),
        ("num_iterations", num_iterations, check.counts(1, MAX_NUM_ITERATIONS)),
    ):
        grid.setting(name, value, check_one)
    grid.axis("seed", check.seed_axis(seeds, allow_none=False))
    theta0 = check.policy_array("theta", theta)
    ref0 = check.policy_array("ref", ref)
    n_threads, progress, max_memory = _options(n_threads, progress, max_memory)
    if isinstance(world, SequenceWorld):
        _refuse_in_world(grid, theta=theta, ref=ref)
        return _sweep_sequence_grpo(w, world, grid, steps, epsilon_high, scale_rewards, record_every, n_threads,
                                    progress, max_memory)

    def make_run(s):
        return (s["seed"], s["num_generations"], s["beta"], s["epsilon"], epsilon_high, s["lr"], scale_rewards,
                s["num_iterations"])

    if in_world:
        _refuse_in_world(grid, theta=theta, ref=ref)
        for n in grid.values("num_generations"):
            _reference_grpo.check_group_tokens(n, world.response_len)
        return _sweep_world(world, weights, grid, steps, record_every, n_threads, progress, max_memory,
                            method="world_grpo", make_run=make_run, engine="sweep_world_grpo",
                            summaries=8)._in_world(world, w)

    def engine(runs, callback, limit):
        return _engines.sweep_grpo(theta0, ref0, w, steps, runs, record_every=record_every, n_threads=n_threads,
                                   progress=callback, max_memory=limit)

    return _sweep("grpo", grid, make_run, engine, steps=steps, record_every=record_every, summaries=7, params=_TABLE,
                  work=lambda runs: len(runs) * steps, progress=progress, max_memory=max_memory)


def _sweep_sequence_grpo(rm: SequenceRewardModel, world: SequenceWorld, grid: _Grid, steps: int,
                         epsilon_high: float | None, scale_rewards: str, record_every: int, n_threads: Any,
                         progress: Any, max_memory: Any) -> SweepResult:
    """:func:`sweep_grpo` in a :class:`~rlhf_fast.sequences.SequenceWorld`: each step one prompt
    and ``num_generations`` completions of it sampled token by token, scored by ``rm`` (the
    core's ``sweep_verifier_grpo``, which takes any per-sequence reward)."""
    for name in grid.axes:
        if name not in _SEQUENCE_AXES:
            raise ValueError(f"{name} must be a single value with a SequenceWorld (only betas, lr and seeds can be "
                             "swept: its engine shares every other setting between runs)")
    constants = grid.constants
    bias = np.ascontiguousarray(rm.prompt_bias(world.n_prompts), dtype=np.float64)

    def engine(runs, callback, limit):
        return _engines.sweep_verifier_grpo(
            world.ref_logits, rm.weights, bias, rm.length_weight, world.gold_token, world.gold_offset,
            world.count_once, steps, runs, num_generations=constants["num_generations"], prompts_per_step=1,
            epsilon=constants["epsilon"], epsilon_high=epsilon_high, scale_rewards=scale_rewards,
            num_iterations=constants["num_iterations"], record_every=record_every, n_threads=n_threads,
            progress=callback, max_memory=limit)

    return _sweep("sequence_grpo", grid, lambda s: (s["seed"], s["beta"], s["lr"]), engine, steps=steps,
                  record_every=record_every, summaries=4, params=world.n_prompts * world.max_len * world.vocab,
                  work=lambda runs: len(runs) * steps, progress=progress, max_memory=max_memory)


# ----------------------------------------------------------------------------- Best-of-N


def sweep_best_of_n(
    w: Mapping[str, float] | RewardModel,
    *,
    ns: Sequence[int],
    seeds: int | Sequence[int] = 1,
    samples: int | None = None,
    policy: Any = None,
    world: World | None = None,
    n_threads: int | None = None,
    progress: bool | Callable[[int], None] = False,
    max_memory: int | None = None,
) -> SweepResult:
    """Best-of-N for every ``n`` of ``ns`` and every seed.

    Run ``(n, seed)`` is ``best_of_n(policy, w, n, samples=samples, seed=seed)``.

    With a ``world`` (:class:`rlhf_fast.worlds.World`), the runs are Best-of-N in that world
    instead, from its reference policy: run ``(n, seed)`` draws ``samples`` times a prompt
    (uniform, as world PPO draws it) and ``n`` responses of ``world.response_len`` tokens,
    keeps the first of those ``w`` scores highest, and records the kept responses' mean
    proxy score and gold with their standard errors. Its KL is ``log n - (n - 1) / n``
    (Stiennon et al. 2020, Gao et al. 2022: an upper bound where responses tie); the
    reference's exact proxy and gold, the ``n = 1`` expectation, stand beside them.

    Parameters
    ----------
    w : Mapping[str, float] or RewardModel
        The reward model; one that scores by length alone is refused. With ``world`` a
        :class:`~rlhf_fast.worlds.RewardModel` with one weight per token of the world.
    ns : sequence of int
        The first axis.
    seeds : int or sequence of int
        The Monte-Carlo streams, the last axis (the exact statistics depend on ``n`` only).
    samples : int, optional
        Monte-Carlo draws per run: by default 0 (the exact statistics only) without a
        world, 1,000 in a world, where Best-of-N is sampled and needs at least 2 (a
        standard error).
    policy : policy, optional
        The policy to sample from (default: uniform, the SFT policy); not with a world,
        whose Best-of-N samples its reference ``world.ref_logits``.
    world : World, optional
        Run Best-of-N in this world (``rlhf_fast.worlds.World``).
    n_threads, progress, max_memory
        As :func:`sweep_rlhf`.

    Returns
    -------
    SweepResult
        ``method="best_of_n"``: run summaries ``expected_score``, ``kl_analytic``,
        ``kl_exact`` and, with ``samples > 0``, ``sampled_score``, each ``[n, seed]``.
        With a world, ``method="world_best_of_n"``: run summaries ``sampled_proxy_score``,
        ``sampled_proxy_score_se``, ``sampled_gold_score``, ``sampled_gold_score_se``,
        ``kl_analytic``, ``ref_proxy_score`` and ``ref_gold_score``.

    Raises
    ------
    ValueError, TypeError
        A setting out of range or of the wrong type, named in the message (``"ns must be a
        sequence of ints, got int"``, ``"ns[0] must be >= 1, got 0"``); a reward model that
        scores by length alone; or a grid over ``max_memory``. With a world: ``w`` not a
        ``RewardModel`` of its vocabulary, ``samples`` below 2, or ``policy`` given.
    MemoryError
        The outputs could not be allocated (Rust backend).
    KeyboardInterrupt
        Ctrl-C, within about 25 ms; nothing is returned.

    Examples
    --------
    >>> w = rl.train_rm(rl.make_dataset(200, seed=0), epochs=2)
    >>> result = rl.sweep_best_of_n(w, ns=[2, 4, 16])
    >>> result.expected_score.ravel().round(4), result.kl_exact.ravel().round(4)
    (array([0.5619, 0.9654, 1.1043]), array([0.1875, 0.6246, 1.6799]))

    In a world, against a reward model learned from its labelled pairs:

    >>> from rlhf_fast.worlds import World, train_reward_model
    >>> world = World(n_prompts=4, vocab=64, response_len=8, seed=0)
    >>> rm = train_reward_model(world, world.preferences(300, seed=1))
    >>> result = rl.sweep_best_of_n(rm, world=world, ns=[1, 16], seeds=2, samples=500)
    >>> result.method, result.sampled_gold_score.shape
    ('world_best_of_n', (2, 2))
    >>> bool((result.sampled_proxy_score[1] > result.sampled_proxy_score[0]).all())
    True
    """
    if isinstance(world, SequenceWorld):
        from . import sequence_sweeps
        return sequence_sweeps.sweep_sequence_best_of_n(w, world, ns, seeds, samples, policy, n_threads, progress,
                                                        max_memory)
    if world is not None:
        return _sweep_world_best_of_n(w, world, ns, seeds, samples, policy, n_threads, progress, max_memory)
    check.scores_by_content(w)
    grid = _Grid()
    grid.axis("n", _first_axis("ns", ns, check.counts(1, MAX_N), "ints"))
    grid.axis("seed", check.seed_axis(seeds, allow_none=False))
    samples = check.count("samples", 0 if samples is None else samples, 0)
    table = check.policy_array("policy", policy)
    n_threads, progress, max_memory = _options(n_threads, progress, max_memory)

    def engine(runs, callback, limit):
        return _engines.sweep_best_of_n(table, w, runs, n_threads=n_threads, progress=callback, max_memory=limit)

    return _sweep("best_of_n", grid, lambda s: (s["n"], samples, s["seed"]), engine, steps=0, record_every=0,
                  summaries=4 if samples else 3, params=0, work=lambda runs: len(runs) * samples, progress=progress,
                  max_memory=max_memory)


def _sweep_world_best_of_n(w: Any, world: Any, ns: Any, seeds: Any, samples: Any, policy: Any, n_threads: Any,
                           progress: Any, max_memory: Any) -> SweepResult:
    """The Best-of-N grid of :func:`sweep_best_of_n` run in ``world`` by its engine."""
    weights = _world_weights(w, world)
    grid = _Grid()
    grid.axis("n", _first_axis("ns", ns, check.counts(1, MAX_N), "ints"))
    grid.axis("seed", check.seed_axis(seeds, allow_none=False))
    samples = check.count("samples", 1000 if samples is None else samples, 2)
    if policy is not None:
        raise ValueError("policy cannot be given with a world: its Best-of-N samples its reference, world.ref_logits")
    n_threads, progress, max_memory = _options(n_threads, progress, max_memory)
    gold, count_once, offset = _world_gold(world)

    def engine(runs, callback, limit):
        return _engines.sweep_world_best_of_n(world.ref_logits, weights, gold, count_once, world.response_len, runs,
                                              n_threads=n_threads, progress=callback, max_memory=limit)

    result = _sweep("world_best_of_n", grid, lambda s: (s["n"], samples, s["seed"]), engine, steps=0,
                    record_every=0, summaries=7, params=0, work=lambda runs: len(runs) * samples, progress=progress,
                    max_memory=max_memory)
    if offset:
        for name in ("sampled_gold_score", "ref_gold_score"):
            result.runs[name] -= offset
    return result._in_world(world, w)


# Each reads a reward model w: also a RewardModel of the lesson's VOCAB where no world is given.
check.accept_reward_models(globals())
