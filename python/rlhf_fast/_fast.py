"""The lesson's functions backed by the Rust core: same names, arguments and numbers.

Most names here are ``rlhf_fast._core`` functions themselves; the few adapters check the
types the core cannot tell apart, pick the kernel for the input's type (a list or a numpy
array) and raise the reference's warnings; each takes its reference twin's docstring (at the
end of this module), and each ``_core`` function carries the same text, so ``help()`` reads
the same on both backends. Plumbing that has nothing to compute (the
constants, ``make_pair``, row conversion, the controller classes) is the reference's own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import _core
from ._checks import accept_reward_models, integer, option, optional, positive, real
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
from .reference import api as _reference_api

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
    return _rows_kernel(z, _core.softmax, _core.softmax_rows)


def log_softmax(z: Sequence[float] | np.ndarray) -> list[float] | np.ndarray:
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
    return _core.best_of_n(policy, w, integer("n", n), integer("samples", samples), integer("seed", seed))


# One text for both backends: each adapter above documents itself with its reference twin's
# docstring (tests/test_docs.py runs its examples against both).
for _name in (
    "softmax", "log_softmax", "train_rlhf", "dpo_step", "train_dpo", "grpo_step", "train_grpo", "best_of_n"
):
    globals()[_name].__doc__ = getattr(_reference_api, _name).__doc__
del _name

# Each reads a reward model w: also a RewardModel of the lesson's VOCAB (one converter for every function).
accept_reward_models(globals())
