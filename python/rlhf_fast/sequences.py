"""Sequence worlds: responses generated token by token, of variable length, and length bias.

A :class:`~rlhf_fast.worlds.World`'s response is a bag of ``response_len`` i.i.d. tokens:
nothing in it can grow longer. A :class:`SequenceWorld`'s response is generated token by
token, ``a_t ~ softmax(theta[p, t])`` for ``t = 0, 1, ...``, conditioned on the prompt and the
position, and ends right after the first end-of-sequence token (token 0, ``EOS``; it is part
of the response, as in TRL) or after ``max_len`` tokens (truncated: "missing EOS"). The
shapes are ``docs/METHODS.md``'s (section "Sequence worlds") and the issue-11 contract's:

- a policy is ``[n_prompts, max_len, vocab]`` logits; the reference's are
  :attr:`SequenceWorld.ref_logits`;
- responses are ``[n, max_len]`` token indices padded with ``-1`` after their end, with
  ``lengths`` (tokens generated, the EOS included, 1 to ``max_len``) and ``has_eos``; the
  *content* tokens are the non-EOS ones, ``n_content = lengths - has_eos``;
- the gold is ``offset[p] + sum of g[a]`` over the content tokens, each distinct token once
  (``count_once=True``, the default) or every copy; it has **no length term**;
- a proxy reward model (:class:`SequenceRewardModel`) is linear, ``bias[p] + sum of w[a]``
  over the content tokens ``+ w_len * n_content``.

The labellers of :mod:`rlhf_fast.worlds` label a sequence world's pairs too, with a
``length_bias`` the gold does not share (:class:`~rlhf_fast.worlds.Labeller`,
:class:`~rlhf_fast.worlds.Judge`, whose ``length_aware`` option removes it): a proxy trained on
their labels learns that longer is better, and a policy optimised against it grows its
responses while the gold does not follow. :func:`train_sequence_reward_model` fits the proxy
(TRL's RewardTrainer loss, as :func:`~rlhf_fast.worlds.train_reward_model`), with the content
length as a feature if asked (``length_feature=True``), which
:meth:`SequenceRewardModel.debiased` then drops: the "length-aware RM, debiased" remedy.

Every expectation under a policy is exact, O(n_prompts * max_len * vocab), from
``alive_t``, the chance that no EOS came before position ``t`` (:meth:`SequenceWorld.stats`).

Random numbers come from NumPy's PCG64 stream of a seed, under either backend; the labels,
scores and the reward model's SGD go through the backend as :mod:`rlhf_fast.worlds`'
(the reward model's passes: ``rust/engines/sequence_world.rs`` and its twin
``reference/engines/sequence_world.py``; a policy's statistics:
``rust/methods/sequence_stats.rs`` and ``reference/methods/sequence_stats.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from . import _checks as checks
from ._backend import BACKEND
from .reference.engines import sequence_world as _reference_sequence_world
from .reference.methods import sequence_stats as _reference_sequence_stats
from .worlds import MAX_PROMPTS, MAX_VOCAB, MAX_WEIGHT, Judge, Labeller, _bag_score, _Pairs, _read_only, _scale
from .worlds import _engines as _world_engines
from .worlds import _gold_accuracy, _margins, _sgd_settings, log_softmax_rows, softmax_rows

__all__ = [
    "EOS",
    "SequenceWorld",
    "SequenceStats",
    "SequencePairs",
    "SequenceRewardModel",
    "train_sequence_reward_model",
    "response_lengths",
]

# The end-of-sequence token: token 0 of every sequence world's vocabulary.
EOS = 0
# Padding after a response's end.
PAD = -1
MAX_LEN = 1 << 10


class _ReferenceEngines:
    """The reference's twins of the reward model's passes and of a policy's statistics, under
    the core's names."""

    @staticmethod
    def sequence_stats(logits, ref_logits):
        series = _reference_sequence_stats.sequence_stats(logits.tolist(), ref_logits.tolist())
        return tuple(np.array(values, dtype=np.float64) for values in series)

    @staticmethod
    def train_reward_model_rows(vocab, first, first_len, second, second_len, target, margin, epochs, lr,
                                center_rewards_coefficient):
        weights = _reference_sequence_world.train_reward_model_rows(
            vocab, first.tolist(), first_len.tolist(), second.tolist(), second_len.tolist(), target.tolist(),
            margin.tolist(), epochs, lr, center_rewards_coefficient)
        return np.array(weights, dtype=np.float64)


if BACKEND == "rust":
    from . import _core as _engines
else:
    _engines = _ReferenceEngines


def _token_array(name: str, value: Any, what: str) -> np.ndarray:
    """An int64 array of tokens and padding (ints >= -1)."""
    array = checks.as_array(name, value, what)
    if array.dtype.kind not in "iu" and not (array.size == 0 and array.dtype.kind == "f"):
        raise TypeError(f"{name} must hold integers, got an array of {array.dtype.name}")
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got a {array.ndim}-D array of shape {array.shape}")
    if array.size and array.dtype.kind == "u" and array.max() > 2**63 - 1:
        raise ValueError(f"{name} must hold tokens in 64 bits, got {int(array.max())}")
    array = array.astype(np.int64, copy=False)
    if array.size and array.min() < PAD:
        flat = int(array.argmin())
        raise ValueError(f"{name}[{', '.join(str(int(i)) for i in np.unravel_index(flat, array.shape))}] must be a "
                         f"token >= 0 or the padding -1, got {int(array.flat[flat])}")
    return array


def response_lengths(responses: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(lengths, has_eos)`` of ``[n, max_len]`` responses, checked.

    A response is its tokens up to and including its first EOS (token 0), then ``-1``
    padding; one without an EOS fills every position (truncated at ``max_len``).

    Parameters
    ----------
    responses : array_like
        ``[n, max_len]`` int tokens, ``-1`` after the end.

    Returns
    -------
    lengths : numpy.ndarray
        ``[n]`` tokens generated, the EOS included (1 to ``max_len``).
    has_eos : numpy.ndarray
        ``[n]`` bools: whether the response ended with an EOS (else it was truncated).

    Examples
    --------
    >>> lengths, has_eos = rl.response_lengths([[3, 0, -1], [2, 1, 1]])
    >>> lengths.tolist(), has_eos.tolist()
    ([2, 3], [True, False])
    """
    return _structure("responses", _token_array("responses", responses, "an [n, max_len] array of tokens"))


def _structure(name: str, responses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(lengths, has_eos)`` of checked int64 ``[n, max_len]`` responses: padding only after
    the end, an EOS only as the last token, a response without one fills every position."""
    width = responses.shape[1]
    if width < 1:
        raise ValueError(f"{name} must have at least one position (max_len >= 1), got 0")
    padded = responses == PAD
    lengths = width - padded.sum(axis=1)
    positions = np.arange(width)
    bad = np.flatnonzero((padded != (positions >= lengths[:, None])).any(axis=1) | (lengths < 1))
    if bad.size:
        raise ValueError(f"{name}[{int(bad[0])}] must be tokens then -1 padding, with at least one token")
    eos = responses == EOS
    bad = np.flatnonzero((eos & (positions != (lengths - 1)[:, None])).any(axis=1))
    if bad.size:
        raise ValueError(f"{name}[{int(bad[0])}] must end at its first EOS (token 0): tokens follow it")
    has_eos = eos.any(axis=1)
    bad = np.flatnonzero(~has_eos & (lengths < width))
    if bad.size:
        raise ValueError(f"{name}[{int(bad[0])}] must end with an EOS (token 0) or fill all {width} positions")
    return lengths.astype(np.int64), has_eos


class SequenceStats(NamedTuple):
    """A policy's exact statistics in a :class:`SequenceWorld`, per prompt.

    Attributes
    ----------
    alive : numpy.ndarray
        ``[n_prompts, max_len + 1]``: ``alive_t``, the chance no EOS came before position
        ``t`` (``alive_0 = 1``; ``alive_{max_len}`` is the chance of a truncated response).
    length : numpy.ndarray
        ``[n_prompts]`` expected tokens generated, the EOS included: ``sum_t alive_t``.
    content_length : numpy.ndarray
        ``[n_prompts]`` expected content tokens: ``sum_t alive_t (1 - pi_t(EOS))``.
    kl : numpy.ndarray
        ``[n_prompts]`` sequence ``KL(pi || ref) = sum_t alive_t KL(pi_t || ref_t)``.
    counts : numpy.ndarray
        ``[n_prompts, vocab]`` expected copies of each token, ``sum_t alive_t pi_t(v)``
        (column 0: the chance of an EOS).
    appears : numpy.ndarray
        ``[n_prompts, vocab]`` the chance each token appears at least once (column 0: of an EOS).
    """

    alive: np.ndarray
    length: np.ndarray
    content_length: np.ndarray
    kl: np.ndarray
    counts: np.ndarray
    appears: np.ndarray


@dataclass(frozen=True, eq=False, repr=False)
class SequenceWorld:
    """A seeded, immutable world of variable-length responses generated token by token.

    Parameters
    ----------
    n_prompts : int, optional
        Prompts, drawn uniformly.
    vocab : int, optional
        Tokens, the EOS (token 0) included: at least 2.
    max_len : int, optional
        Most tokens a response has (the EOS included); a response that reaches it without an
        EOS is truncated.
    zipf : float, optional
        The reference's content tokens (1 to ``vocab - 1``) have probabilities falling as
        ``rank ** -zipf``, each prompt ranking them in its own random order (the same at every
        position), as :class:`~rlhf_fast.worlds.World`'s do.
    prompt_scale : float, optional
        Spread of the gold's per-prompt part: ``offset[p] = prompt_scale * N(0, 1)``.
    count_once : bool, optional
        The gold counts each distinct content token once (diminishing returns), so a proxy
        linear in token counts is misspecified; ``False``: every copy counts.
    seed : int, optional
        Seeds NumPy's PCG64 generator that draws the world's tables.

    Attributes
    ----------
    ref_logits : numpy.ndarray
        ``[n_prompts, max_len, vocab]``: the reference (SFT) policy's logits. Its EOS
        probability at position ``t`` is ``1 / (max_len + 1 - t)``, rising with position, so
        the response's content length is uniform on ``0 .. max_len`` (a truncated response has
        ``max_len``): mean content length ``max_len / 2``, mean length (EOS included)
        ``max_len / 2 + max_len / (max_len + 1)``, and a truncated response one time in
        ``max_len + 1``.
    gold_token : numpy.ndarray
        ``[vocab]``: ``g``, the gold value of each content token (``g[0] = 0``): standard
        normals less their mean under the reference's content tokens (averaged over prompts),
        so that a longer reference response is no better on average: the gold has no length
        term, and no length bias hides in its values.
    gold_offset : numpy.ndarray
        ``[n_prompts]``: the gold's per-prompt part.

    Examples
    --------
    >>> world = rl.SequenceWorld(n_prompts=4, vocab=32, max_len=6, seed=0)
    >>> world
    SequenceWorld(n_prompts=4, vocab=32, max_len=6, zipf=1.1, count_once=True, seed=0)
    >>> float(world.expected_content_length(world.ref_logits).mean())
    3.0
    """

    n_prompts: int = 8
    vocab: int = 64
    max_len: int = 8
    zipf: float = 1.1
    prompt_scale: float = 0.5
    count_once: bool = True
    seed: int = 0
    ref_logits: np.ndarray = field(init=False)
    gold_token: np.ndarray = field(init=False)
    gold_offset: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n_prompts = checks.count("n_prompts", self.n_prompts, 1, MAX_PROMPTS)
        vocab = checks.count("vocab", self.vocab, 2, MAX_VOCAB)
        max_len = checks.count("max_len", self.max_len, 1, MAX_LEN)
        zipf = _scale("zipf", self.zipf)
        prompt_scale = _scale("prompt_scale", self.prompt_scale)
        count_once = checks.boolean("count_once", self.count_once)
        seed = checks.count("seed", self.seed, 0)
        checks.fits("vocab", vocab, 3 * 8 * n_prompts * max_len * vocab)
        rng = np.random.default_rng(seed)
        content = vocab - 1
        rank_uniforms = rng.random((n_prompts, content))
        shared_normals = rng.standard_normal(content)
        content_logits, gold_rows = _world_engines.world_tables(rank_uniforms, shared_normals,
                                                                np.zeros((n_prompts, content)), zipf, 0.0)
        offset = prompt_scale * rng.standard_normal(n_prompts)
        content_probs = softmax_rows(content_logits)
        gold = gold_rows[0] - float((content_probs @ gold_rows[0]).mean())
        # EOS odds of 1 / (max_len - t) against all content tokens: P(EOS at t) = 1 / (max_len + 1 - t)
        log_content_mass = np.log(np.exp(content_logits - content_logits.max(axis=1, keepdims=True)).sum(axis=1)) \
            + content_logits.max(axis=1)
        ref_logits = np.empty((n_prompts, max_len, vocab))
        ref_logits[:, :, 1:] = content_logits[:, None, :]
        ref_logits[:, :, EOS] = log_content_mass[:, None] - np.log(max_len - np.arange(max_len))[None, :]
        for name, value in [("n_prompts", n_prompts), ("vocab", vocab), ("max_len", max_len), ("zipf", zipf),
                            ("prompt_scale", prompt_scale), ("count_once", count_once), ("seed", seed),
                            ("ref_logits", _read_only(ref_logits)),
                            ("gold_token", _read_only(np.concatenate([[0.0], gold]))),
                            ("gold_offset", _read_only(offset))]:
            object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return (f"SequenceWorld(n_prompts={self.n_prompts}, vocab={self.vocab}, max_len={self.max_len}, "
                f"zipf={self.zipf:g}, count_once={self.count_once}, seed={self.seed})")

    @property
    def ref_log_probs(self) -> np.ndarray:
        """``[n_prompts, max_len, vocab]``: the reference policy's log-probabilities."""
        return log_softmax_rows(self.ref_logits)

    def _policy(self, name: str, logits: Any) -> np.ndarray:
        shape = self.ref_logits.shape
        what = f"a {list(shape)} array of logits (n_prompts, max_len, vocab)"
        logits = checks.real_array(name, logits, what, finite=False)
        if logits.shape != shape:
            raise ValueError(f"{name} must have shape {shape} (n_prompts, max_len, vocab), got {logits.shape}")
        return checks.real_array(name, logits)

    # ------------------------------------------------------------ exact expectations

    def stats(self, logits: Any) -> SequenceStats:
        """A policy's exact statistics, per prompt (no sampling).

        With ``alive_0 = 1`` and ``alive_{t+1} = alive_t (1 - pi_t(EOS))``: expected length
        ``sum_t alive_t``, expected content length ``sum_t alive_t (1 - pi_t(EOS))``, sequence
        KL ``sum_t alive_t KL(pi_t || ref_t)``, expected copies of ``v`` ``sum_t alive_t pi_t(v)``
        and the chance ``v`` appears, ``1 - sum_t q_t pi_t(EOS) - q_L`` with ``q_0 = 1``,
        ``q_{t+1} = q_t (1 - pi_t(EOS) - pi_t(v))``.

        Parameters
        ----------
        logits : array_like
            ``[n_prompts, max_len, vocab]``: the policy's logits.

        Returns
        -------
        SequenceStats
        """
        return SequenceStats(*_engines.sequence_stats(np.ascontiguousarray(self._policy("logits", logits)),
                                                      self.ref_logits))

    def kl(self, logits: Any) -> np.ndarray:
        """``KL(pi || ref)`` of a whole response, per prompt: ``sum_t alive_t KL(pi_t || ref_t)``.

        Parameters
        ----------
        logits : array_like
            ``[n_prompts, max_len, vocab]``.

        Returns
        -------
        numpy.ndarray
            ``[n_prompts]``, in nats.
        """
        return self.stats(logits).kl

    def expected_length(self, logits: Any) -> np.ndarray:
        """Expected tokens of a response, the EOS included (``lengths``' mean), per prompt.

        Parameters
        ----------
        logits : array_like
            ``[n_prompts, max_len, vocab]``.

        Returns
        -------
        numpy.ndarray
            ``[n_prompts]``.
        """
        return self.stats(logits).length

    def expected_content_length(self, logits: Any) -> np.ndarray:
        """Expected content tokens of a response (``lengths - has_eos``' mean), per prompt.

        Parameters
        ----------
        logits : array_like
            ``[n_prompts, max_len, vocab]``.

        Returns
        -------
        numpy.ndarray
            ``[n_prompts]``.
        """
        return self.stats(logits).content_length

    def expected_gold(self, logits: Any) -> np.ndarray:
        """The gold's expectation under the policy, per prompt (exact).

        ``offset[p] + sum_v g(v) P(v appears)`` when each distinct token counts once, else
        ``offset[p] + sum_v g(v) E[copies of v]``.

        Parameters
        ----------
        logits : array_like
            ``[n_prompts, max_len, vocab]``.

        Returns
        -------
        numpy.ndarray
            ``[n_prompts]``.
        """
        stats = self.stats(logits)
        return self.gold_offset + (stats.appears if self.count_once else stats.counts)[:, 1:] @ self.gold_token[1:]

    def expected_score(self, logits: Any, rm: SequenceRewardModel) -> np.ndarray:
        """A proxy's expected score under the policy, per prompt (exact).

        ``bias[p] + sum_v w(v) E[copies of v] + w_len E[content length]``.

        Parameters
        ----------
        logits : array_like
            ``[n_prompts, max_len, vocab]``.
        rm : SequenceRewardModel

        Returns
        -------
        numpy.ndarray
            ``[n_prompts]``.
        """
        stats = self.stats(logits)
        rm = _rm_for("rm", rm, self)
        return rm.prompt_bias(self.n_prompts) + stats.counts[:, 1:] @ rm.weights[1:] \
            + rm.length_weight * stats.content_length

    # ------------------------------------------------------------------ responses

    def sample(self, n: int, seed: int, logits: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``n`` prompts and responses generated token by token (from the reference by default).

        Each response draws ``max_len`` uniforms, one per position, and stops after its first
        EOS (the draws past its end go unused).

        Parameters
        ----------
        n : int
            Responses.
        seed : int
            Seeds NumPy's PCG64 generator.
        logits : array_like, optional
            ``[n_prompts, max_len, vocab]``; the reference's by default.

        Returns
        -------
        prompts : numpy.ndarray
            ``[n]`` prompt indices, uniform.
        responses : numpy.ndarray
            ``[n, max_len]`` tokens, ``-1`` after the end.
        lengths : numpy.ndarray
            ``[n]`` tokens generated, the EOS included.
        has_eos : numpy.ndarray
            ``[n]`` whether the response ended with an EOS.

        Examples
        --------
        >>> world = rl.SequenceWorld(n_prompts=2, vocab=8, max_len=4, seed=0)
        >>> prompts, responses, lengths, has_eos = world.sample(3, seed=1)
        >>> responses.shape, bool((lengths >= 1).all())
        ((3, 4), True)
        """
        n = checks.count("n", n, 0)
        checks.fits("n", n, 8 * n * (2 * self.max_len + 3))
        rng = np.random.default_rng(checks.count("seed", seed, 0))
        logits = self.ref_logits if logits is None else self._policy("logits", logits)
        prompts = rng.integers(self.n_prompts, size=n)
        responses = self._generate(rng, prompts, softmax_rows(logits))
        lengths, has_eos = _structure("responses", responses)
        return prompts, responses, lengths, has_eos

    def _generate(self, rng: np.random.Generator, prompts: np.ndarray, p: np.ndarray) -> np.ndarray:
        """Responses to ``prompts`` from the probabilities ``p`` ``[P, L, V]``, padded."""
        n, max_len = len(prompts), self.max_len
        uniforms = rng.random((n, max_len))
        tokens = np.empty((n, max_len), dtype=np.int64)
        for x in range(self.n_prompts):
            rows = np.flatnonzero(prompts == x)
            if not rows.size:
                continue
            for t in range(max_len):
                cdf = np.cumsum(p[x, t])
                tokens[rows, t] = np.minimum(np.searchsorted(cdf, uniforms[rows, t] * cdf[-1], side="right"),
                                             self.vocab - 1)
        eos = tokens == EOS
        lengths = np.where(eos.any(axis=1), eos.argmax(axis=1) + 1, max_len)
        tokens[np.arange(max_len)[None, :] >= lengths[:, None]] = PAD
        return tokens

    def _responses(self, prompts: Any, responses: Any, name: str = "responses"
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Checked ``(prompts, responses, n_content)``."""
        prompts = checks.index_array("prompts", prompts, "a 1-D array of prompt indices", ndim=1)
        responses = _token_array(name, responses, f"an [n, {self.max_len}] array of tokens")
        if responses.shape != (len(prompts), self.max_len):
            raise ValueError(f"{name} must have shape {(len(prompts), self.max_len)}, got {responses.shape}")
        if prompts.size and prompts.max() >= self.n_prompts:
            raise ValueError(f"prompts must be prompt indices in [0, {self.n_prompts}), got {int(prompts.max())}")
        if responses.size and responses.max() >= self.vocab:
            raise ValueError(f"{name} must be tokens in [0, {self.vocab}), got {int(responses.max())}")
        lengths, has_eos = _structure(name, responses)
        return prompts, responses, lengths - has_eos

    def gold_score(self, prompts: Any, responses: Any) -> np.ndarray:
        """The gold of given responses: ``offset[p] + sum of g`` over their content tokens.

        Parameters
        ----------
        prompts : array_like
            ``[n]`` prompt indices.
        responses : array_like
            ``[n, max_len]`` tokens, ``-1`` after the end.

        Returns
        -------
        numpy.ndarray
            ``[n]``.
        """
        prompts, responses, _ = self._responses(prompts, responses)
        return self._gold(prompts, responses)

    def _gold(self, prompts: np.ndarray, responses: np.ndarray) -> np.ndarray:
        return self.gold_offset[prompts] + _content_score(self.gold_token[None, :], np.zeros_like(prompts), responses,
                                                          self.count_once)

    # ------------------------------------------------------------------ labels

    def preferences(self, n: int, seed: int, labeller: Labeller | Judge | None = None) -> SequencePairs:
        """``n`` pairs of reference responses to one prompt each, labelled.

        A human :class:`~rlhf_fast.worlds.Labeller` prefers the first response with
        probability ``sigmoid((g1 - g2 + length_bias (n1 - n2)) / temperature)`` (``n`` the
        content tokens), then flips the label with probability ``flip``; an AI
        :class:`~rlhf_fast.worlds.Judge` scores each response with its own token values (each
        distinct token once when the gold does) plus ``effective_length_bias * n``, then
        labels as in a bag world (position bias, soft labels, both orders).

        Parameters
        ----------
        n : int
            Pairs.
        seed : int
            Seeds the draws of prompts, responses and labels (NumPy's PCG64).
        labeller : Labeller or Judge, optional
            A human (the default) or an AI judge.

        Returns
        -------
        SequencePairs

        Examples
        --------
        >>> world = rl.SequenceWorld(n_prompts=4, vocab=32, max_len=6, seed=0)
        >>> pairs = world.preferences(100, seed=1, labeller=rl.Labeller(length_bias=0.5))
        >>> len(pairs), pairs.first.shape
        (100, (100, 6))
        """
        labeller = Labeller() if labeller is None else labeller
        if not isinstance(labeller, (Labeller, Judge)):
            raise TypeError(f"labeller must be a Labeller or a Judge, got {type(labeller).__name__}")
        n = checks.count("n", n, 0)
        checks.fits("n", n, 8 * n * (4 * self.max_len + 4))
        rng = np.random.default_rng(checks.count("seed", seed, 0))
        p = softmax_rows(self.ref_logits)
        prompts = rng.integers(self.n_prompts, size=n)
        first = self._generate(rng, prompts, p)
        second = self._generate(rng, prompts, p)
        n_first = _n_content(first)
        n_second = _n_content(second)
        if isinstance(labeller, Labeller):
            bias = float(labeller.length_bias)
            prefer_uniforms = rng.random(n)
            flip_uniforms = rng.random(n)
            target = _world_engines.labeller_labels(
                self._gold(prompts, first) + bias * n_first, self._gold(prompts, second) + bias * n_second,
                float(labeller.temperature), float(labeller.flip), prefer_uniforms, flip_uniforms)
        else:
            values = self.judge_values(labeller)
            bias = labeller.effective_length_bias
            score_first = _content_score(values, prompts, first, self.count_once) + bias * n_first
            score_second = _content_score(values, prompts, second, self.count_once) + bias * n_second
            order_uniforms = np.empty(0) if labeller.both_orders else rng.random(n)
            draw_uniforms = np.empty(0) if labeller.soft else rng.random(n)
            target = _world_engines.judge_labels(score_first, score_second, float(labeller.temperature),
                                                 float(labeller.position_bias), bool(labeller.soft),
                                                 bool(labeller.both_orders), order_uniforms, draw_uniforms)
        cost = labeller.cost * n
        if not math.isfinite(cost):
            raise FloatingPointError(f"preferences overflowed: {n} labels at {labeller.cost!r} each cost {cost!r}")
        return SequencePairs(prompts, first, second, target, cost)

    def judge_values(self, judge: Judge) -> np.ndarray:
        """``[n_prompts, vocab]``: an AI judge's value of each token for each prompt (EOS: 0).

        As :meth:`~rlhf_fast.worlds.Judge.token_values` in a bag world, on the content
        tokens: ``rho`` times the gold's values plus independent noise, plus ``bias`` times
        the reference's standardised log-probabilities (its content tokens, the same at every
        position). The length bias is not here: it is added per response.

        Parameters
        ----------
        judge : Judge

        Returns
        -------
        numpy.ndarray
        """
        if not isinstance(judge, Judge):
            raise TypeError(f"judge must be a Judge, got {type(judge).__name__}")
        content = self.vocab - 1
        noise = np.random.default_rng([judge.seed, self.seed]).standard_normal((self.n_prompts, content))
        gold_rows = np.ascontiguousarray(np.broadcast_to(self.gold_token[1:], (self.n_prompts, content)))
        values = _world_engines.judge_token_values(gold_rows, np.ascontiguousarray(self.ref_logits[:, 0, 1:]), noise,
                                                   float(judge.rho), float(judge.bias))
        return np.concatenate([np.zeros((self.n_prompts, 1)), values], axis=1)


def _n_content(responses: np.ndarray) -> np.ndarray:
    """Content tokens of each of well-formed padded responses."""
    return (responses > EOS).sum(axis=1)


def _content_score(values: np.ndarray, prompts: np.ndarray, responses: np.ndarray, count_once: bool) -> np.ndarray:
    """``[n]``: the sum of ``values[prompt, token]`` over each response's content tokens (each
    distinct token once if ``count_once``); the EOS and the padding count as token 0, whose
    value is 0."""
    table = np.array(values, dtype=np.float64)
    table[:, EOS] = 0.0
    return _bag_score(table, prompts, np.maximum(responses, EOS), count_once)


def _world(name: str, world: Any) -> SequenceWorld:
    if not isinstance(world, SequenceWorld):
        raise TypeError(f"{name} must be a SequenceWorld, got {type(world).__name__}")
    return world


@dataclass(frozen=True, eq=False, repr=False)
class SequencePairs(_Pairs):
    """Labelled pairs of responses from a :class:`SequenceWorld`.

    Attributes
    ----------
    prompts : numpy.ndarray
        ``[n]`` prompt indices.
    first, second : numpy.ndarray
        ``[n, max_len]`` tokens of the two responses, ``-1`` after the end.
    target : numpy.ndarray
        ``[n]``: the probability that ``first`` is preferred (0 or 1 for hard labels).
    cost : float
        What the labels cost.
    """

    _width_name = "max_len"

    def __post_init__(self) -> None:
        """Read-only copies, checked: well-formed responses (a world checks the bounds of the
        prompts and tokens where the pairs are used), one target in [0, 1] per pair."""
        prompts = checks.index_array("prompts", self.prompts, "a 1-D array of prompt indices", ndim=1)
        n = len(prompts)
        first = _token_array("first", self.first, "an [n, max_len] array of tokens")
        if first.shape[0] != n:
            raise ValueError(f"first must have {n} rows (one per pair), got {first.shape[0]}")
        second = _token_array("second", self.second, "an [n, max_len] array of tokens")
        if second.shape != first.shape:
            raise ValueError(f"second must have shape {first.shape}, got {second.shape}")
        _structure("first", first)
        _structure("second", second)
        self._seal(prompts, first, second)

    def content_lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """``[n]`` content tokens of the first and of the second responses."""
        return _n_content(self.first), _n_content(self.second)


def _pairs_of(name: str, pairs: Any, world: SequenceWorld) -> SequencePairs:
    if not isinstance(pairs, SequencePairs):
        raise TypeError(f"{name} must be a SequencePairs (SequenceWorld.preferences), got {type(pairs).__name__}")
    if pairs.first.shape[1] != world.max_len:
        raise ValueError(f"{name} must hold responses of the world's max_len {world.max_len}, "
                         f"got {pairs.first.shape[1]}")
    pairs._within(name, world.n_prompts, world.vocab)
    return pairs


@dataclass(frozen=True, eq=False)
class SequenceRewardModel:
    """A linear proxy on a response's content: ``bias[p] + sum of w[a] + w_len * n_content``.

    Attributes
    ----------
    weights : numpy.ndarray
        ``[vocab]``: ``w``, one weight per token; ``w[0]`` (the EOS's) must be 0.
    length_weight : float
        ``w_len``, the weight of the content length (0 unless trained with
        ``length_feature=True``).
    bias : numpy.ndarray or None
        ``[n_prompts]`` per-prompt part (None: 0 for every prompt; Bradley-Terry on pairs to
        one prompt cannot learn it).
    """

    weights: np.ndarray
    length_weight: float = 0.0
    bias: np.ndarray | None = None

    def __post_init__(self) -> None:
        weights = np.array(checks.real_array("weights", self.weights, "a 1-D array of token weights", ndim=1))
        if len(weights) < 2:
            raise ValueError(f"weights must weigh the EOS and at least one token, got {len(weights)}")
        if weights[EOS] != 0.0:
            raise ValueError(f"weights[0] is the EOS's and must be 0, got {float(weights[EOS])!r}")
        length_weight = checks.finite("length_weight", self.length_weight)
        for name, values in (("weights", weights), ("length_weight", np.array([length_weight]))):
            if (np.abs(values) >= MAX_WEIGHT).any():
                raise ValueError(f"{name} must be below 2**512 in magnitude, got {float(np.abs(values).max())!r}")
        object.__setattr__(self, "weights", _read_only(weights))
        object.__setattr__(self, "length_weight", length_weight)
        if self.bias is not None:
            bias = np.array(checks.real_array("bias", self.bias, "a 1-D array of per-prompt biases", ndim=1))
            if (np.abs(bias) >= MAX_WEIGHT).any():
                raise ValueError(f"bias must be below 2**512 in magnitude, got {float(np.abs(bias).max())!r}")
            object.__setattr__(self, "bias", _read_only(bias))

    def __repr__(self) -> str:
        return f"SequenceRewardModel(vocab={len(self.weights)}, length_weight={self.length_weight:.4g})"

    def prompt_bias(self, n_prompts: int) -> np.ndarray:
        """``[n_prompts]``: the per-prompt part (zeros without one)."""
        return np.zeros(n_prompts) if self.bias is None else self.bias

    def debiased(self) -> SequenceRewardModel:
        """The same model with ``length_weight = 0``: the length-aware RM, debiased.

        Returns
        -------
        SequenceRewardModel
        """
        return SequenceRewardModel(self.weights, 0.0, self.bias)

    def score(self, prompts: Any, responses: Any) -> np.ndarray:
        """``[n]``: the score of each response.

        Parameters
        ----------
        prompts : array_like
            ``[n]`` prompt indices (they pick ``bias``).
        responses : array_like
            ``[n, max_len]`` tokens, ``-1`` after the end.

        Returns
        -------
        numpy.ndarray
        """
        prompts = checks.index_array("prompts", prompts, "a 1-D array of prompt indices", ndim=1)
        responses = _token_array("responses", responses, "an [n, max_len] array of tokens")
        if len(responses) != len(prompts):
            raise ValueError(f"responses must have {len(prompts)} rows (one per prompt), got {len(responses)}")
        if responses.size and responses.max() >= len(self.weights):
            raise ValueError(f"responses must be tokens in [0, {len(self.weights)}), got {int(responses.max())}")
        bias = self.prompt_bias(int(prompts.max()) + 1 if prompts.size else 0)
        if prompts.size and prompts.max() >= len(bias):
            raise ValueError(f"prompts must be prompt indices in [0, {len(bias)}), got {int(prompts.max())}")
        lengths, has_eos = _structure("responses", responses)
        tokens = _content_score(self.weights[None, :], np.zeros_like(prompts), responses, False)
        return bias[prompts] + tokens + self.length_weight * (lengths - has_eos)

    def gold_accuracy(self, world: SequenceWorld, pairs: SequencePairs) -> float:
        """Share of pairs whose gold order the model gets strictly right (gold ties skipped).

        Parameters
        ----------
        world : SequenceWorld
        pairs : SequencePairs
            Their labels are ignored: the gold decides.

        Returns
        -------
        float
        """
        world = _world("world", world)
        _rm_for("self", self, world)
        pairs = _pairs_of("pairs", pairs, world)
        gold = world._gold(pairs.prompts, pairs.first) - world._gold(pairs.prompts, pairs.second)
        proxy = self.score(pairs.prompts, pairs.first) - self.score(pairs.prompts, pairs.second)
        return _gold_accuracy(gold, proxy)


def _rm_for(name: str, rm: Any, world: SequenceWorld) -> SequenceRewardModel:
    if not isinstance(rm, SequenceRewardModel):
        raise TypeError(f"{name} must be a SequenceRewardModel, got {type(rm).__name__}")
    if len(rm.weights) != world.vocab:
        raise ValueError(f"{name} must weigh the world's {world.vocab} tokens, got {len(rm.weights)} weights")
    if rm.bias is not None and len(rm.bias) != world.n_prompts:
        raise ValueError(f"{name} must have one bias per prompt of the world's {world.n_prompts}, got {len(rm.bias)}")
    return rm


def train_sequence_reward_model(world: SequenceWorld, pairs: SequencePairs, *, epochs: int = 1, lr: float = 0.1,
                                margin: Any = None, center_rewards_coefficient: float = 0.0,
                                length_feature: bool = False) -> SequenceRewardModel:
    """A proxy trained by Bradley-Terry SGD on labelled sequence pairs, from zero weights.

    The features of a response are the counts of its content tokens, plus its content length
    with ``length_feature=True``; per pair, in order, for ``epochs`` passes, the step is
    :func:`~rlhf_fast.worlds.train_reward_model`'s (TRL's RewardTrainer loss, soft labels,
    ``margin`` and ``center_rewards_coefficient``). The length is one more feature column,
    counted once per content token.

    Parameters
    ----------
    world : SequenceWorld
    pairs : SequencePairs
    epochs : int, optional
    lr : float, optional
    margin : array_like, optional
        ``[n]`` per-pair margins (TRL's ``margin`` column); none by default.
    center_rewards_coefficient : float, optional
        TRL's coefficient pulling rewards towards 0 (0.01 is its recommendation).
    length_feature : bool, optional
        Learn a weight of the content length (``length_weight``), which
        :meth:`SequenceRewardModel.debiased` can then drop.

    Returns
    -------
    SequenceRewardModel

    Examples
    --------
    >>> world = rl.SequenceWorld(n_prompts=4, vocab=32, max_len=6, seed=0)
    >>> pairs = world.preferences(500, seed=1, labeller=rl.Labeller(length_bias=1.0))
    >>> rm = rl.train_sequence_reward_model(world, pairs, length_feature=True)
    >>> rm.length_weight > 0, rm.debiased().length_weight
    (True, 0.0)
    """
    world = _world("world", world)
    pairs = _pairs_of("pairs", pairs, world)
    epochs, lr, c = _sgd_settings(epochs, lr, center_rewards_coefficient)
    length_feature = checks.boolean("length_feature", length_feature)
    margins = _margins(pairs, margin)
    first, first_len = _feature_rows(pairs.first, world.vocab, length_feature)
    second, second_len = _feature_rows(pairs.second, world.vocab, length_feature)
    columns = world.vocab + 1 if length_feature else world.vocab
    weights = _engines.train_reward_model_rows(columns, first, first_len, second, second_len,
                                               np.ascontiguousarray(pairs.target),
                                               np.ascontiguousarray(margins, dtype=np.float64), epochs, lr, c)
    return SequenceRewardModel(weights[:world.vocab], float(weights[world.vocab]) if length_feature else 0.0)


def _feature_rows(responses: np.ndarray, vocab: int, length_feature: bool) -> tuple[np.ndarray, np.ndarray]:
    """``([n, width], [n])``: each response's content tokens, then (with ``length_feature``)
    the length column ``vocab`` once per content token, left-aligned; the row lengths say where
    each row ends (what follows is 0 and unread)."""
    n_content = _n_content(responses)
    content = np.where(responses > EOS, responses, 0)
    if not length_feature:
        return np.ascontiguousarray(content), n_content.astype(np.int64)
    max_len = responses.shape[1]
    rows = np.zeros((len(responses), 2 * max_len), dtype=np.int64)
    rows[:, :max_len] = content
    positions = np.arange(2 * max_len)[None, :]
    # content tokens sit at positions 0 .. n - 1 (the EOS, if any, comes last): the length
    # column follows them at n .. 2n - 1
    rows[(positions >= n_content[:, None]) & (positions < 2 * n_content[:, None])] = vocab
    return rows, (2 * n_content).astype(np.int64)
