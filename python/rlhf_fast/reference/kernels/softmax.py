"""Twin of rust/kernels/softmax.rs: softmax and log-softmax of one row of logits.

Both subtract the row's maximum before exponentiating, so logits as large as 1e4 in
magnitude are exact, and sum left to right, as the Rust kernels do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def libm_exp(v: float) -> float:
    """libm's ``exp``, as the core calls it: ``inf`` past the floats where Python's ``math.exp``
    raises ``OverflowError``."""
    try:
        return math.exp(v)
    except OverflowError:
        return math.inf


def softmax_row(z: Sequence[float]) -> list[float]:
    """``exp(z - max z)`` normalised."""
    m = max(z)
    e = [math.exp(v - m) for v in z]
    total = 0.0
    for v in e:
        total += v
    return [v / total for v in e]


def log_softmax_row(z: Sequence[float]) -> list[float]:
    """``z - logsumexp(z)``, with the max subtracted before exponentiating."""
    m = max(z)
    shifted = [v - m for v in z]
    total = 0.0
    for v in shifted:
        total += math.exp(v)
    lse = math.log(total)
    return [v - lse for v in shifted]
