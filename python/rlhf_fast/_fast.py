"""The lesson's functions backed by the Rust core: same names, arguments and numbers.

Most names here are ``rlhf_fast._core`` functions themselves; the few adapters check the
types the core cannot tell apart, pick the kernel for the input's type (a list or a numpy
array) and raise the reference's warnings. Plumbing that has nothing to compute (the
constants, ``make_pair``, row conversion, the controller classes) is the reference's own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import _core
from ._checks import integer, option, optional, positive, real
from ._core import PreferenceSet  # noqa: F401
from .reference import (  # noqa: F401  (plumbing with nothing to compute: the reference's own)
    BAD_WORDS,
    GOOD_WORDS,
    PROMPTS,
    VOCAB,
    DPO_LOSS_TYPES,
    KL_TARGET,
    KL_THRESHOLD,
    SCALE_REWARDS,
    AdaptiveKLController,
    DoublingKLController,
    FixedKLController,
    KLWarning,
    init_policy,
    make_kl_controller,
    make_pair,
    pairs_to_rows,
    policy_logits,
    rows_to_pairs,
)
from .reference import __all__ as _reference_all

__all__ = list(_reference_all)

seed_key = _core.seed_key
make_dataset = _core.make_dataset
bag = _core.bag
dot = _core.dot
sigmoid = _core.sigmoid
rm_train_step = _core.rm_train_step
train_rm = _core.train_rm
pairwise_accuracy = _core.pairwise_accuracy
kl_k1 = _core.kl_k1
kl_k2 = _core.kl_k2
kl_k3 = _core.kl_k3
sample = _core.sample
clipped_surrogate = _core.clipped_surrogate
clipped_surrogate_grad = _core.clipped_surrogate_grad
rlhf_step = _core.rlhf_step
kl = _core.kl
expected_score = _core.expected_score
policy_kl = _core.policy_kl

def _rows_kernel(z, one_row, rows):
    if isinstance(z, np.ndarray):
        if z.dtype.kind not in "biuf":
            raise TypeError(f"z must be an array of real numbers, got dtype {z.dtype}")
        array = np.ascontiguousarray(z, dtype=np.float64)
        if array.ndim == 1:
            return rows(array[None, :])[0]
        if array.ndim == 2:
            return rows(array)
        raise ValueError(f"z must be 1-D or 2-D, got {array.ndim}-D")
    return one_row(z)


def softmax(z: Sequence[float] | np.ndarray) -> list[float] | np.ndarray:
    """``exp(z - max z)`` normalised; a numpy array gets a numpy array back (2-D: row-wise)."""
    return _rows_kernel(z, _core.softmax, _core.softmax_rows)


def log_softmax(z: Sequence[float] | np.ndarray) -> list[float] | np.ndarray:
    """``z - logsumexp(z)``; a numpy array gets a numpy array back (2-D: row-wise)."""
    return _rows_kernel(z, _core.log_softmax, _core.log_softmax_rows)


def train_rlhf(
    theta: dict[str, list[float]] | np.ndarray,
    ref: Mapping[str, Sequence[float]] | np.ndarray,
    w: Mapping[str, float],
    steps: int,
    seed: int,
    eps: float = 0.2,
    beta: float = 0.1,
    lr: float = 0.05,
    ppo_epochs: int = 4,
    kl_ctl: str = "fixed",
    target: float = KL_TARGET,
    horizon: float = 10000.0,
    kl_threshold: float = KL_THRESHOLD,
    kl_penalty: str = "full",
    vf_coef: float = 0.0,
    cliprange_value: float = 0.2,
    value: dict[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """``steps`` PPO-RLHF steps on ``random.Random(seed)``'s stream, run entirely in Rust.

    Same arguments and numbers as :func:`rlhf_fast.reference.train_rlhf`; ``theta`` (a dict
    of lists or a float64 ``[3, 8]`` array) is updated in place. Returns the per-step
    history as numpy arrays: ``prompt``, ``token``, ``score``, ``kl``, ``reward``,
    ``clip_frac``, the ``beta`` used and the running ``mean_kl``; warns with
    :class:`KLWarning` once the running mean KL passes ``kl_threshold``.
    """
    kl_threshold = positive("kl_threshold", kl_threshold)
    return _core.train_rlhf(
        theta,
        ref,
        w,
        integer("steps", steps),
        seed,
        eps,
        beta,
        lr,
        integer("ppo_epochs", ppo_epochs),
        kl_ctl,
        target,
        horizon,
        kl_penalty,
        vf_coef,
        cliprange_value,
        value,
        kl_threshold,
    )


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
        theta, ref, x, y_pos, y_neg, real("beta", beta), real("lr", lr),
        option("loss_type", loss_type, DPO_LOSS_TYPES), real("label_smoothing", label_smoothing),
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
        theta, ref, pairs, integer("epochs", epochs), real("beta", beta), real("lr", lr),
        option("loss_type", loss_type, DPO_LOSS_TYPES), real("label_smoothing", label_smoothing),
        None if seed is None else integer("seed", seed),
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
        theta, ref, w, prompt, rng, integer("num_generations", num_generations), real("beta", beta),
        real("epsilon", epsilon), optional(real)("epsilon_high", epsilon_high), real("lr", lr),
        option("scale_rewards", scale_rewards, SCALE_REWARDS), integer("num_iterations", num_iterations),
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
    kl_threshold: float = KL_THRESHOLD,
) -> dict[str, np.ndarray]:
    """``steps`` GRPO steps on ``random.Random(seed)``'s stream, run entirely in Rust.

    Same arguments and numbers as :func:`rlhf_fast.reference.train_grpo`; ``theta`` is
    updated in place. Returns the per-step history as numpy arrays (``prompt``,
    ``score``, ``reward_std``, ``kl``, ``clip_frac``, ``loss``, ``mean_kl``) and warns with
    :class:`KLWarning` once the running mean KL passes ``kl_threshold``. A reward model
    that scores responses by length alone is refused (ValueError naming ``w``).
    """
    options = (
        integer("num_generations", num_generations), real("beta", beta), real("epsilon", epsilon),
        optional(real)("epsilon_high", epsilon_high), real("lr", lr),
        option("scale_rewards", scale_rewards, SCALE_REWARDS), integer("num_iterations", num_iterations),
    )
    threshold = positive("kl_threshold", kl_threshold)
    return _core.train_grpo(theta, ref, w, integer("steps", steps), integer("seed", seed), *options, threshold)

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
    return _core.best_of_n(policy, w, integer("n", n), integer("samples", samples), integer("seed", seed))
