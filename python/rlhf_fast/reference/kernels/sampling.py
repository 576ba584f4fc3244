"""Twin of rust/kernels/sampling.rs: one draw from a probability row by inverse CDF.

The Rust file adds faster routes to the same draw (running sums computed once, a bucket
table for Best-of-N's millions of draws); each picks the index :func:`sample_index` picks.
"""

from __future__ import annotations

from collections.abc import Sequence


def sample_index(probs: Sequence[float], u: float) -> int:
    """The first index whose running sum exceeds ``u`` (one ``rng.random()``)."""
    running = 0.0
    for i, p in enumerate(probs):
        running += p
        if running > u:
            return i
    return len(probs) - 1  # rounding left the running sum at or below u
