"""Twin of rust/engines/distill.rs: reward distillation's passes over the scored responses."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..._checks import overflowed
from ..methods.world.distill import distill_step, response_features


def distill_reward_model(phi: Sequence[Sequence[float]], responses: Sequence[Sequence[int]],
                         targets: Sequence[float], epochs: int, lr: float) -> tuple[list[float], float, list[float]]:
    """``(theta, bias, epoch_mse)`` after ``epochs`` passes of :func:`distill_step` over the
    responses, in order, from ``theta = 0``, ``b = 0``, the step decaying linearly from ``lr``
    towards 0 over the ``K = epochs * n`` steps (step ``k`` takes ``lr * ((K - k) / K)``);
    ``epoch_mse`` is each pass's mean squared error, measured on each response before its step. A head that overflows
    (2**512 in magnitude, or NaN) after a pass, or a pass whose squared error does, stops with a
    ``FloatingPointError``."""
    theta = [0.0] * len(phi[0])
    bias = 0.0
    epoch_mse = []
    n = len(targets)
    total = float(epochs * n)
    for epoch in range(epochs):
        squared = 0.0
        for i, (response, target) in enumerate(zip(responses, targets)):
            remaining = total - float(epoch * n + i)
            bias, error = distill_step(theta, bias, response_features(phi, response), target, lr * (remaining / total))
            squared += error * error
        what = None
        if overflowed(theta) or overflowed([bias]):
            what = "the student's head"
        elif not math.isfinite(squared):  # the head can swing past 1e154 and back as the step decays
            what = "its squared error"
        if what is not None:
            raise FloatingPointError(f"distill_reward_model diverged in epoch {epoch}: {what} overflowed (lr={lr!r})")
        epoch_mse.append(squared / len(targets))
    return theta, bias, epoch_mse
