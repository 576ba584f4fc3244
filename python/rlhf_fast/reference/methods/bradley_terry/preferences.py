"""Twin of rust/methods/bradley_terry/preferences.rs: a preference set tokenised once.

Each pair keeps its prompt and its two responses as bags, the form the reward model's SGD
reads. The Rust set also stores the bags padded to a fixed width and takes a shortcut
through the SGD chain where that cannot amplify rounding; :meth:`PreferenceSet.fit` is the
plain loop it is measured against.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .... import _checks as checks
from ...lesson import PAIR_BYTES, VOCAB, make_dataset
from . import bag, rm_update


class PreferenceSet:
    """A preference set tokenised once: each pair's prompt and its two responses as bags.

    ``PreferenceSet(pairs)`` takes ``(prompt, chosen, rejected)`` triples or TRL rows;
    ``PreferenceSet.make_dataset(n, seed)`` is ``PreferenceSet(make_dataset(n, seed))``.
    ``train_rm``, ``pairwise_accuracy`` and ``sweep_rm`` take it in place of pairs, so a set
    used many times is tokenised once. Tokens ``0..8`` are ``VOCAB``; other words follow in
    first-seen order (``vocab``). ``len(s)`` is the number of pairs.

    Parameters
    ----------
    pairs : iterable of (str, str, str) or of dict
        ``(prompt, chosen, rejected)`` triples or rows with those keys; a response is a string
        of white-space-separated words or a list of words.

    Raises
    ------
    TypeError
        ``pairs`` is not iterable, or an item is not a triple or row, or a prompt or response
        is not a string (the message names ``pairs[i]``).
    ValueError
        A triple of the wrong length or a row lacking a key (named ``pairs[i]``).

    Examples
    --------
    >>> s = rl.PreferenceSet([("help me", "clear kind", "rude vague"), ("help me", "new", "rude")])
    >>> len(s), s.vocab[8:]
    (2, ['new'])
    >>> round(rl.pairwise_accuracy({"kind": 1.0, "rude": -1.0}, s), 4)
    1.0
    """

    def __init__(self, pairs: Iterable[tuple[str, str, str] | Mapping[str, str]]):
        self.prompts: list[str] = []
        self.bags: list[tuple[dict[str, int], dict[str, int]]] = []
        for x, chosen, rejected in checks.preference_triples("pairs", pairs):
            self.prompts.append(x)
            self.bags.append((bag(chosen), bag(rejected)))

    @classmethod
    def make_dataset(cls, n: int, seed: int = 0) -> PreferenceSet:
        """``PreferenceSet(make_dataset(n, seed))``, without the strings in between.

        Parameters
        ----------
        n : int
            How many pairs, >= 0.
        seed : int, optional
            The stream's seed (default 0).

        Returns
        -------
        PreferenceSet
            The pairs ``make_dataset(n, seed)`` draws, tokenised.

        Raises
        ------
        TypeError
            ``n`` or ``seed`` is not an int (named).
        ValueError
            ``n < 0``, or ``n`` pairs too many for half the machine's memory (refused before any
            is drawn): ``"n=... needs ... bytes, more than max_memory=... bytes"``.
        KeyboardInterrupt
            Ctrl-C during a long draw (Rust backend).

        Examples
        --------
        >>> s = rl.PreferenceSet.make_dataset(1000, seed=0)
        >>> len(s), s.to_pairs()[0]
        (1000, ('answer me', 'thorough clear', 'vague wrong'))
        """
        n = checks.count("n", n, 0)
        seed = checks.integer("seed", seed)
        checks.fits("n", n, n * PAIR_BYTES)
        return cls(make_dataset(n, seed))

    def __len__(self) -> int:
        return len(self.bags)

    @property
    def vocab(self) -> list[str]:
        """The token strings by id: ``VOCAB``, then every other token in first-seen order.

        Returns
        -------
        list[str]
            A new list.

        Examples
        --------
        >>> rl.PreferenceSet([("help me", "kind new", "rude")]).vocab[-2:]
        ['wrong', 'new']
        """
        seen = dict.fromkeys(VOCAB)
        for b_pos, b_neg in self.bags:
            seen.update(dict.fromkeys(b_pos))
            seen.update(dict.fromkeys(b_neg))
        return list(seen)

    def to_pairs(self) -> list[tuple[str, str, str]]:
        """The pairs, each response rebuilt from its bag (tokens grouped in first-seen order).

        Returns
        -------
        list[tuple[str, str, str]]
            ``(prompt, chosen, rejected)`` triples; a response repeating a word has its copies
            side by side.

        Examples
        --------
        >>> rl.PreferenceSet([("help me", "kind clear kind", "rude")]).to_pairs()
        [('help me', 'kind kind clear', 'rude')]
        """

        def text(b: dict[str, int]) -> str:
            return " ".join(tok for tok, cnt in b.items() for _ in range(cnt))

        return [(x, text(b_pos), text(b_neg)) for x, (b_pos, b_neg) in zip(self.prompts, self.bags)]

    def fit(self, indices: range, epochs: int, lr: float, w: dict[str, float], name: str) -> None:
        """``epochs`` SGD passes over the pairs ``indices`` in order (:func:`rm_update`); updates ``w``.

        After each epoch every weight of ``w`` is checked: one overflowed
        (:func:`~rlhf_fast._checks.overflowed`) raises ``FloatingPointError`` naming the run
        (``name``), the 0-based epoch and ``lr``, with ``w`` as that epoch left it.
        """
        bags = self.bags[indices.start : indices.stop]
        for epoch in range(epochs):
            for b_pos, b_neg in bags:
                rm_update(w, b_pos, b_neg, lr)
            if checks.overflowed(w.values()):
                raise FloatingPointError(f"{name} diverged in epoch {epoch}: weights overflowed (lr={lr!r})")
