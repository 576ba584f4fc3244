"""PPO on token sequences as TRL runs it (issue 11): a sweep over plain arrays.

:func:`sweep_token_ppo_arrays` runs a grid of ``(kl_coef, lr, seed)`` in one sequence world
given as arrays (the contract of issue 11: ``ref_logits [P, L, V]`` with EOS token 0, the
linear reward model ``w``, ``bias``, ``w_len``, the gold ``g``, ``offset``, ``count_once``) on the
Rust engine, or its pure-Python twin with ``RLHF_FAST_BACKEND=python``, and returns a
:class:`~rlhf_fast.SweepResult`. Private until the public ``sweep_rlhf(world=SequenceWorld)``
is wired to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import _checks as check
from . import sweep as _sweep_module
from ._backend import BACKEND
from .result import SweepResult

if BACKEND == "rust":
    from ._core import sweep_token_ppo as _engine
else:
    from .reference.engines.token_ppo import sweep_token_ppo as _engine

# Per-run summaries of the engine (TOKEN_PPO_SUMMARY_FIELDS).
_SUMMARIES = 4


def sweep_token_ppo_arrays(
    ref_logits: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray,
    w_len: float,
    g: np.ndarray,
    offset: np.ndarray,
    count_once: bool,
    *,
    steps: int,
    kl_coef: Any = 0.05,
    lr: Any = 0.1,
    seeds: Any = 1,
    batch_size: int = 64,
    gamma: float = 1.0,
    lam: float = 0.95,
    cliprange: float = 0.2,
    cliprange_value: float = 0.2,
    vf_coef: float = 0.1,
    kl_estimator: str = "k1",
    num_ppo_epochs: int = 4,
    num_mini_batches: int = 1,
    missing_eos_penalty: float | None = None,
    length_normalize: bool = False,
    length_penalty: float = 0.0,
    record_every: int = 1,
    n_threads: int | None = None,
    progress: bool | Callable[[int], None] | None = None,
    max_memory: int | None = None,
    step_rewards: np.ndarray | None = None,
    outcome_factors: np.ndarray | None = None,
) -> SweepResult:
    """A grid of token PPO runs in the sequence world of these arrays.

    Parameters
    ----------
    ref_logits : numpy.ndarray
        float64 ``[P, L, V]``: the reference (SFT) policy's logits per prompt and position;
        token 0 is EOS. Every run starts here.
    w, bias, w_len : numpy.ndarray, numpy.ndarray, float
        The reward model: ``score = bias[p] + sum of content w[a] + w_len * n_content``.
    g, offset, count_once : numpy.ndarray, numpy.ndarray, bool
        The gold: ``offset[p] + sum of content g[a]``, each distinct token once if ``count_once``.
    steps : int
        PPO steps per run (each a batch of ``batch_size`` rollouts).
    kl_coef, lr : float or sequence of float
        TRL's ``kl_coef`` (β) and the SGD learning rate; a sequence is a grid axis.
    seeds : int or sequence of int
        A count (seeds ``0 .. seeds-1``) or the seeds themselves; the last axis.
    batch_size, gamma, lam, cliprange, cliprange_value, vf_coef, kl_estimator, num_ppo_epochs, num_mini_batches, missing_eos_penalty
        TRL's PPO settings (its defaults).
    length_normalize, length_penalty : bool, float
        Issue 11's length-hacking remedies: the score over the content length (at least 1),
        and ``score - length_penalty * n_content``.
    record_every, n_threads, progress, max_memory
        As every sweep takes them.
    step_rewards, outcome_factors : numpy.ndarray or None
        Process rewards (issue 11 item 4), float64 ``[P, L, V]`` like ``ref_logits``:
        ``step_rewards[p, t, a_t]`` is added to the reward of token ``t`` (and to
        ``objective_scores``), and the score gains the product of a response's
        ``outcome_factors`` (0/1 factors: a verifier's reward). ``final_proxy_score`` includes
        the expected product.

    Returns
    -------
    SweepResult
        Method ``"token_ppo"``: TRL's metrics per kept step (``objective_kl``, ...,
        ``val_num_eos_tokens``, '/' written '_'), ``mean_length`` and ``gold_score`` of the
        batch; run summaries ``final_proxy_score``, ``final_gold_score``, ``final_kl``,
        ``final_length`` (exact, under the final policy); ``final_theta [..., P, L, V]``.

    Examples
    --------
    >>> from rlhf_fast.token_ppo import sweep_token_ppo_arrays
    >>> rng = np.random.default_rng(0)
    >>> w = rng.normal(size=5); w[0] = 0.0
    >>> result = sweep_token_ppo_arrays(rng.normal(size=(2, 4, 5)), w, np.zeros(2), 0.0, w, np.zeros(2), True,
    ...                                 steps=5, kl_coef=[0.05, 0.5], seeds=2, batch_size=4)
    >>> result.shape, result.runs["final_kl"].shape
    ((2, 2), (2, 2))
    """
    n_threads, progress, max_memory = _sweep_module._options(n_threads, progress, max_memory)
    steps = check.count("steps", steps, 1)
    record_every = _sweep_module._kept_every(check.count("record_every", record_every, 0), steps)
    grid = _sweep_module._Grid()
    grid.setting("kl_coef", kl_coef, check.non_negative)
    grid.setting("lr", lr, check.positive)
    grid.axis("seed", check.seed_axis(seeds, False))
    check.float_array("ref_logits", ref_logits, 3)
    n_params = int(np.prod(ref_logits.shape))

    def engine(runs, callback, limit):
        return _engine(ref_logits, w, bias, w_len, g, offset, count_once, steps, runs, batch_size=batch_size,
                       gamma=gamma, lam=lam, cliprange=cliprange, cliprange_value=cliprange_value, vf_coef=vf_coef,
                       kl_estimator=kl_estimator, num_ppo_epochs=num_ppo_epochs, num_mini_batches=num_mini_batches,
                       missing_eos_penalty=missing_eos_penalty, length_normalize=length_normalize,
                       length_penalty=length_penalty, record_every=record_every, n_threads=n_threads,
                       progress=callback, max_memory=limit, step_rewards=step_rewards,
                       outcome_factors=outcome_factors)

    return _sweep_module._sweep(
        "token_ppo", grid, lambda s: (s["seed"], s["kl_coef"], s["lr"]), engine, steps=steps,
        record_every=record_every, summaries=_SUMMARIES, params=n_params, work=lambda runs: len(runs) * steps,
        progress=progress, max_memory=max_memory,
    )
