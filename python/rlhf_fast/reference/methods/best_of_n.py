"""Twin of rust/methods/best_of_n.rs: Best-of-N against the reward model (docs/METHODS.md section 4).

Draw ``n`` responses from a policy and keep the one the reward model scores highest. The
law of the kept token is exact here (ties go to the first sampled, which is
``pi``-proportional within the tie group), as are its expected score and its KL to the
policy, next to the analytic ``log n - (n - 1) / n``; a Monte-Carlo run draws the same
tokens as the Rust one for the same seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..kernels.kl import kl_unchecked
from ..kernels.sampling import sample_index
from ..rng import from_key

# The largest n: a Monte-Carlo sample draws n tokens, so past this one sample takes minutes.
MAX_N = 1_000_000_000


def bon_distribution(pi: Sequence[float], weights: Sequence[float], n: int) -> list[float]:
    """The exact law of the kept token: ``pi(a) / pi(T) * (F_le^n - F_lt^n)`` for ``a`` in tie group ``T``.

    ``F_le`` (``F_lt``) is the mass of the tokens scoring ``<= R(a)`` (``< R(a)``).
    """
    out = []
    for a in range(len(pi)):
        f_le = 0.0
        f_lt = 0.0
        pi_tie = 0.0
        for b in range(len(pi)):
            if weights[b] <= weights[a]:
                f_le += pi[b]
            if weights[b] < weights[a]:
                f_lt += pi[b]
            if weights[b] == weights[a]:
                pi_tie += pi[b]
        if pi_tie > 0.0:
            out.append(pi[a] / pi_tie * (math.pow(f_le, n) - math.pow(f_lt, n)))
        else:  # the whole tie group underflowed to probability 0: it is never drawn
            out.append(0.0)
    return out


def bon_kl_analytic(n: int) -> float:
    """``log n - (n - 1) / n``: the continuous-limit KL of Best-of-n, an upper bound here."""
    return math.log(n) - (n - 1) / n


def bon_exact(
    pi_table: Sequence[Sequence[float]], weights: Sequence[float], n: int
) -> tuple[float, float, list[list[float]]]:
    """``(expected_score, kl_exact, p_bon)`` from the policy's probabilities, one row per prompt.

    ``expected_score`` is the mean over prompts of ``sum_a P_bon(a) R(a)``, ``kl_exact`` the
    mean of ``KL(P_bon || pi)``, ``p_bon`` the kept token's law per prompt.
    """
    p_bon_table = []
    score_sum = 0.0
    kl_sum = 0.0
    for pi in pi_table:
        p_bon = bon_distribution(pi, weights, n)
        p_bon_table.append(p_bon)
        per_prompt = 0.0
        for a in range(len(weights)):
            per_prompt += p_bon[a] * weights[a]
        score_sum += per_prompt
        kl_sum += kl_unchecked(p_bon, pi)
    return score_sum / len(pi_table), kl_sum / len(pi_table), p_bon_table


def bon_sampled_score(
    pi_table: Sequence[Sequence[float]], weights: Sequence[float], n: int, samples: int, seed_key: list[int]
) -> float:
    """The mean kept score of ``samples`` Monte-Carlo draws on ``random.Random(seed)``.

    Per draw: ``x = rng.choice(PROMPTS)``, then ``n`` draws of ``sample(pi[x], rng)``; the
    first of the highest-scoring tokens is kept (only its score is reported).
    """
    rng = from_key(seed_key)
    choice = rng.choice
    random = rng.random
    prompts = range(len(pi_table))
    total = 0.0
    for _ in range(samples):
        pi = pi_table[choice(prompts)]
        best = weights[sample_index(pi, random())]
        for _ in range(n - 1):
            s = weights[sample_index(pi, random())]
            if s > best:  # strictly better: ties keep the first sampled
                best = s
        total += best
    return total / samples


def draw_bag(p: Sequence[float], weights: Sequence[float], length: int, rng) -> tuple[list[int], float]:
    """One response of a world: ``length`` tokens drawn i.i.d. from the prompt's probabilities
    ``p``, one ``rng.random()`` each, as world PPO's bag step draws them. Returns the bag and
    its proxy score ``sum_i w(y_i)``, summed left to right from 0.0."""
    random = rng.random
    bag = [sample_index(p, random()) for _ in range(length)]
    score = 0.0
    for a in bag:
        score += weights[a]
    return bag, score


def bag_gold(gold_row: Sequence[float], bag: Sequence[int], count_once: bool) -> float:
    """The gold of one bag from one prompt's row: every copy counted (summed in the bag's
    order), or with ``count_once`` each distinct token once, summed in increasing token order.
    A count-once world's constant repeat penalty is the caller's."""
    gold = 0.0
    for a in sorted(set(bag)) if count_once else bag:
        gold += gold_row[a]
    return gold
