"""The lesson's functions backed by the Rust core: same names, arguments and numbers.

Most names here are ``rlhf_fast._core`` functions themselves; the few adapters pick the
kernel for the input's type (a list or a numpy array) and raise the reference's warnings.
Plumbing that has nothing to compute (the constants, ``make_pair``, row conversion, the
controller classes) is the reference's own.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from . import _core
from ._core import PreferenceSet  # noqa: F401
from .methods import best_of_n, dpo_step, grpo_step, train_dpo, train_grpo  # noqa: F401
from .reference import (  # noqa: F401  (plumbing with nothing to compute: the reference's own)
    BAD_WORDS,
    GOOD_WORDS,
    PROMPTS,
    VOCAB,
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


def _check_threshold(kl_threshold: float) -> float:
    if isinstance(kl_threshold, bool) or not isinstance(kl_threshold, numbers.Real):
        raise TypeError(f"kl_threshold must be a real number, got {type(kl_threshold).__name__}")
    if not kl_threshold > 0 or kl_threshold == float("inf"):
        raise ValueError(f"kl_threshold must be finite and > 0, got {kl_threshold!r}")
    return float(kl_threshold)


def _int_arg(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return int(value)


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
    target: float = 6.0,
    horizon: float = 10000.0,
    kl_threshold: float = 5.0,
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
    kl_threshold = _check_threshold(kl_threshold)
    history = _core.train_rlhf(
        theta,
        ref,
        w,
        _int_arg("steps", steps),
        seed,
        eps,
        beta,
        lr,
        _int_arg("ppo_epochs", ppo_epochs),
        kl_ctl,
        target,
        horizon,
        kl_penalty,
        vf_coef,
        cliprange_value,
        value,
    )
    over = np.flatnonzero(history["mean_kl"] > kl_threshold)
    if over.size:
        t = int(over[0])
        warnings.warn(
            f"mean KL(pi_theta || pi_ref) = {history['mean_kl'][t]:.3g} passed {kl_threshold:g} at step {t}: "
            "the policy is drifting from the reference (raise beta or stop early)",
            KLWarning,
            stacklevel=2,
        )
    return history

