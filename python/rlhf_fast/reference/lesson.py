"""Twin of rust/lesson.rs: the lesson's world, its prompts, its words and the pairs it draws.

Sorted tuples, not the lesson's sets: a set of strings iterates in a hash-randomised order,
so the lesson's data would differ from one process to the next (SPEC section 2).
"""

from __future__ import annotations

import math
import random

PROMPTS = ("help me", "answer me", "explain this")
GOOD_WORDS = ("clear", "kind", "specific", "thorough")
BAD_WORDS = ("rude", "short", "vague", "wrong")
# The policy's action space, and the first tokens of every reward model's vocabulary.
VOCAB = tuple(sorted(GOOD_WORDS + BAD_WORDS))

# From the uniform starting policy no policy gets further than KL = log V (2.08 nats here, a
# single token): the KL controllers' target and the monitor's threshold default to fractions
# of it, so that both can be reached (TRL's target of 6 nats is for vocabularies of 50,000).
KL_TARGET = 0.5 * math.log(len(VOCAB))
KL_THRESHOLD = 0.75 * math.log(len(VOCAB))

# What one generated pair nominally takes (its tuple and strings): the size checked against
# max_memory before n pairs are drawn.
PAIR_BYTES = 256


def make_pair(rng: random.Random) -> tuple[str, str, str]:
    """One synthetic preference ``(prompt, chosen, rejected)``: two good words beat two bad ones."""
    x = rng.choice(PROMPTS)
    y_good = rng.choice(GOOD_WORDS) + " " + rng.choice(GOOD_WORDS)
    y_bad = rng.choice(BAD_WORDS) + " " + rng.choice(BAD_WORDS)
    return (x, y_good, y_bad)


def make_dataset(n: int, seed: int) -> list[tuple[str, str, str]]:
    """``n`` calls of :func:`make_pair` on one ``random.Random(seed)``."""
    rng = random.Random(seed)
    return [make_pair(rng) for _ in range(n)]
