"""Twin of rust/kernels/logistic.rs: the logistic function and softplus, stable for any input."""

from __future__ import annotations

import math


def sigmoid(z: float) -> float:
    """Logistic function, stable for any input (never evaluates ``exp`` of a large positive)."""
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def softplus(z: float) -> float:
    """``log(1 + exp(z))`` without overflow: the loss ``-log sigmoid(m)`` is ``softplus(-m)``."""
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))
