"""Twin of rust/rng.rs: CPython's ``random.Random``, which the Rust ``Mt19937`` reproduces.

The reference draws from ``random.Random`` itself; what it shares with the Rust side is the
key a seed becomes. ``random.Random(seed)`` seeds MT19937 by ``init_by_array`` with the
32-bit words of ``abs(seed)``, so a run is named by that key on both sides (SPEC section 3).
"""

from __future__ import annotations

import random


def seed_key(seed: int) -> list[int]:
    """The key ``random.Random(seed)`` seeds MT19937 with (``init_by_array``): ``abs(seed)``
    in 32-bit little-endian words, ``[0]`` for 0 (SPEC section 3)."""
    magnitude = abs(seed)
    key = []
    while magnitude:
        key.append(magnitude & 0xFFFFFFFF)
        magnitude >>= 32
    return key or [0]


def from_key(key: list[int]) -> random.Random:
    """The generator ``Mt19937::from_key(key)`` is: ``random.Random`` of the seed whose key this is."""
    seed = 0
    for word in reversed(key):
        seed = seed << 32 | word
    return random.Random(seed)
