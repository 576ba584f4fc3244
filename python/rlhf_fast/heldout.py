"""Held-out preference pairs that share no response with the training pairs.

In the lesson's world a response is a bag (a multiset) of two words out of four, so there are
only 10 good and 10 bad bags, and ``make_dataset(100, 1)`` as a held-out set repeats the
training set: 99 of its 100 pairs have the chosen and the rejected bag of some pair of
``make_dataset(500, 0)``. Accuracy on it measures recall, not generalisation.

:func:`heldout_split` holds out a fixed subset of the bags on each side — the three made of two
*different neighbouring* words in sorted order (``clear kind``, ``kind specific``,
``specific thorough``; ``rude short``, ``short vague``, ``vague wrong``) — and draws the
training pairs from the other seven and the held-out pairs from these three. No held-out pair
has a chosen or a rejected bag that occurs in training, while every held-out word occurs in
training (the seven training bags on each side include every word doubled): the held-out set
measures generalisation to new combinations of known words, not to unknown words.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from . import _checks as check
from . import make_dataset
from .reference import BAD_WORDS, GOOD_WORDS

__all__ = ["HELDOUT_BAGS", "heldout_split", "response_bag"]


def _neighbour_bags(words: tuple[str, ...]) -> frozenset[tuple[str, ...]]:
    ordered = sorted(words)
    return frozenset(itertools.pairwise(ordered))


# The held-out bags, chosen (good) and rejected (bad) alike, as sorted word tuples.
HELDOUT_BAGS = _neighbour_bags(GOOD_WORDS) | _neighbour_bags(BAD_WORDS)


def response_bag(response: str) -> tuple[str, ...]:
    """A response as a bag of words: its words sorted, a hashable multiset.

    Parameters
    ----------
    response : str
        Words separated by white space.

    Returns
    -------
    tuple[str, ...]
        ``tuple(sorted(response.split()))``: ``"thorough clear"`` and ``"clear thorough"``
        are the same bag.
    """
    return tuple(sorted(response.split()))


def heldout_split(
    train_pairs: int = 500, heldout_pairs: int = 100, seed: int = 0
) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """Training and held-out preference pairs drawn from disjoint sets of response bags.

    The training pairs are the pairs of ``make_dataset(m, seed)``, in order, whose chosen and
    rejected bags are both training bags (not in :data:`HELDOUT_BAGS`); the held-out pairs
    those of ``make_dataset(m, seed + 1)`` whose bags are both held-out bags (``m`` as large
    as needed). About 39% of the lesson's pairs qualify for training and 14% for held-out.

    Parameters
    ----------
    train_pairs : int, optional
        Training pairs (>= 1), 500 as in the lesson.
    heldout_pairs : int, optional
        Held-out pairs (>= 1).
    seed : int, optional
        Seed of the training pairs' stream; the held-out pairs use ``seed + 1``.

    Returns
    -------
    train, heldout : list of (prompt, chosen, rejected)
        No bag of a held-out pair (chosen or rejected) occurs in any training pair.

    Raises
    ------
    ValueError, TypeError
        A count below 1 or not an int, a seed not an int, or counts whose pairs would not
        fit in memory (``make_dataset``'s check).

    Examples
    --------
    >>> train, heldout = heldout_split(500, 100)
    >>> len(train), len(heldout)
    (500, 100)
    >>> {response_bag(y) for _, y, _ in heldout} & {response_bag(y) for _, y, _ in train}
    set()
    """
    train_pairs = check.count("train_pairs", train_pairs, 1)
    heldout_pairs = check.count("heldout_pairs", heldout_pairs, 1)
    seed = check.integer("seed", seed)
    return _draw(train_pairs, seed, held_out=False), _draw(heldout_pairs, seed + 1, held_out=True)


def _draw(n: int, seed: int, *, held_out: bool) -> list[tuple[str, str, str]]:
    """The first ``n`` pairs of ``make_dataset(., seed)`` whose two bags are (not) held out.

    A bag of two different words is drawn twice as often as a doubled word, so the three
    held-out bags take 6/16 of each side's draws: 14% of the pairs are held-out pairs, 39%
    training pairs, and ``8 * n`` draws are nearly always enough. When they are not, twice as
    many give the same pairs and more (``make_dataset(m, seed)`` is a prefix of
    ``make_dataset(2 * m, seed)``).
    """
    m = 8 * n + 64
    while True:
        kept = list(_select(make_dataset(m, seed), held_out))
        if len(kept) >= n:
            return kept[:n]
        m *= 2


def _select(pairs: Iterable[tuple[str, str, str]], held_out: bool) -> Iterable[tuple[str, str, str]]:
    for pair in pairs:
        if (response_bag(pair[1]) in HELDOUT_BAGS) == held_out and (response_bag(pair[2]) in HELDOUT_BAGS) == held_out:
            yield pair
