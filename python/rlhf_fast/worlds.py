"""Worlds: a reference policy, a hidden gold reward and a labeller, for seeing reward hacking.

The lesson's world (3 prompts, 8 words, one-word responses, a reward model that is exactly
right) cannot over-optimise anything. A :class:`World` is larger and its reward model is
learned: ``n_prompts`` prompts, a vocabulary of ``vocab`` tokens, responses of
``response_len`` tokens drawn i.i.d. from the policy (the reward sees the bag), a reference
(SFT) policy with Zipf-like token probabilities, and a hidden **gold** reward — per-token
values plus a per-prompt part, counting a repeated token once (``gold="count_once"``, the
default) so that a reward model linear in token counts is misspecified. The gold is what
"human evaluation" would say; the proxy is what the pipeline learns from labelled pairs
(:meth:`World.preferences`, :func:`train_reward_model`). ``../shared/SPEC.md`` section 6 and
``docs/METHODS.md`` give the semantics.

Everything a world computes for a policy is exact, not sampled: for a bag of ``L`` i.i.d.
tokens, ``E[sum_i w(y_i)] = L * sum_a pi(a) w(a)``, ``E[gold] = sum_a g(a) (1 - (1 - pi(a))^L)``
when each distinct token counts once, and ``KL(pi^L || ref^L) = L * KL(pi || ref)``.

A world's random numbers come from NumPy's PCG64 stream of its ``seed`` (not CPython's), under
either backend. What a world computes from them goes through the backend (``_engines``, as in
:mod:`rlhf_fast.sweep`): the Rust core, or with ``RLHF_FAST_BACKEND=python`` its pure-Python
twin, which agree (the same tables and labels, floats within 1e-9;
``tests/test_worlds_twins.py``):

- the tables from the draws (``World``) and an AI judge's token values (``Judge.token_values``):
  ``rust/methods/world/tables.rs``, ``reference/methods/world/tables.py``;
- the labels of a :class:`Labeller` and of a :class:`Judge`, given the scores of both
  responses and the draws: ``methods/world/labels``;
- a bag's score (``World.gold_score``, ``RewardModel.score``, the judge's margin):
  ``methods/world/scores``;
- :func:`train_reward_model`: one pair's SGD step in ``methods/world/reward_model``, the passes
  over the pairs in ``engines/world``;
- the exact expectations (``World.kl``, ``World.expected_gold``, ``World.expected_score``)
  and :meth:`Frontier.of`: ``engines/world``, on ``engines/world_ppo``'s ``prompt_stats``;
- :func:`fit_gao`: ``methods/world/gao``.

Responses (``World.sample``, the pairs of ``World.preferences``) are NumPy's draws.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from . import _checks as checks
from ._backend import BACKEND
from .reference.engines import world as _reference_world
from .reference.lesson import BAD_WORDS, GOOD_WORDS, PROMPTS, VOCAB
from .reference.methods.world import gao as _reference_gao
from .reference.methods.world import labels as _reference_labels
from .reference.methods.world import scores as _reference_scores
from .reference.methods.world import tables as _reference_tables

__all__ = [
    "World",
    "Safety",
    "Labeller",
    "Judge",
    "WorldPairs",
    "RewardModel",
    "train_reward_model",
    "Frontier",
    "GaoFit",
    "fit_gao",
    "best_of_n_kl",
]

GOLD_KINDS = ("count_once", "linear")
# A world's tables are [n_prompts, vocab] float64: bounded so a typo cannot ask for terabytes.
MAX_VOCAB = 1 << 20
MAX_PROMPTS = 1 << 16
MAX_RESPONSE_LEN = 1 << 12
# zipf, prompt_scale, repeat_penalty and a judge's bias are at most this: past it a world's
# logits or values would overflow (zipf=1e308 makes -inf logits) or every sum over its tokens
# would, and a world that extreme is no model of text.
MAX_SCALE = 1e6
# A reward model's weights are below this in magnitude (rlhf_fast._checks.OVERFLOW: a parameter
# past 2**512 has overflowed), so that a response's score, a sum of them, is finite.
MAX_WEIGHT = 2.0**512


def _floats(values: Any) -> np.ndarray:
    return np.array(values, dtype=np.float64)


class _ReferenceEngines:
    """The reference's twins of a world's computations under the core's names: NumPy arrays in
    and out, as the core takes and gives them, lists in between."""

    @staticmethod
    def world_tables(rank_uniforms, shared_normals, prompt_normals, zipf, prompt_scale):
        ref_logits, gold_token = _reference_tables.world_tables(
            rank_uniforms.tolist(), shared_normals.tolist(), prompt_normals.tolist(), zipf, prompt_scale)
        return _floats(ref_logits), _floats(gold_token)

    @staticmethod
    def judge_token_values(gold_token, ref_logits, noise, rho, bias):
        return _floats(_reference_tables.judge_token_values(gold_token.tolist(), ref_logits.tolist(), noise.tolist(),
                                                            rho, bias))

    @staticmethod
    def labeller_labels(gold_first, gold_second, temperature, flip, prefer_uniforms, flip_uniforms):
        return _floats(_reference_labels.labeller_labels(gold_first.tolist(), gold_second.tolist(), temperature, flip,
                                                         prefer_uniforms.tolist(), flip_uniforms.tolist()))

    @staticmethod
    def judge_labels(score_first, score_second, temperature, position_bias, soft, both_orders, order_uniforms,
                     draw_uniforms):
        return _floats(_reference_labels.judge_labels(score_first.tolist(), score_second.tolist(), temperature,
                                                      position_bias, soft, both_orders, order_uniforms.tolist(),
                                                      draw_uniforms.tolist()))

    @staticmethod
    def bag_score(values, prompts, responses, count_once, offset):
        return _floats(_reference_scores.bag_score(values.tolist(), prompts.tolist(), responses.tolist(), count_once,
                                                   offset))

    @staticmethod
    def train_reward_model(vocab, first, second, target, margin, epochs, lr, center_rewards_coefficient):
        return _floats(_reference_world.train_reward_model(vocab, first.tolist(), second.tolist(), target.tolist(),
                                                           margin.tolist(), epochs, lr, center_rewards_coefficient))

    @staticmethod
    def world_expectations(ref_logits, gold_token, count_once, repeat_penalty, response_len, logits, weights=None):
        series = _reference_world.world_expectations(
            ref_logits.tolist(), gold_token.tolist(), count_once, repeat_penalty, response_len, logits.tolist(),
            None if weights is None else weights.tolist())
        return tuple(_floats(values) for values in series)

    @staticmethod
    def world_frontier(ref_logits, gold_token, count_once, repeat_penalty, response_len, reward, betas, weights=None):
        series = _reference_world.world_frontier(
            ref_logits.tolist(), gold_token.tolist(), count_once, repeat_penalty, response_len, reward.tolist(),
            betas.tolist(), None if weights is None else weights.tolist())
        return tuple(_floats(values) for values in series)

    @staticmethod
    def fit_gao(d, gold, form):
        return _reference_gao.fit_gao(d.tolist(), gold.tolist(), form == "bon")


# What a world computes with: the Rust core, or its twin on the python backend.
if BACKEND == "rust":
    from . import _core as _engines
else:
    _engines = _ReferenceEngines


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _scale(name: str, value: Any) -> float:
    """A finite real in ``[0, MAX_SCALE]``."""
    value = checks.non_negative(name, value)
    if value > MAX_SCALE:
        raise ValueError(f"{name} must be <= 1e6, got {value!r}")
    return value


def _shifted(logits: np.ndarray) -> np.ndarray:
    """Each row less its maximum: ``-inf`` where a row spans more than the floats (1e308 and
    -1e308), which is a probability of exactly 0."""
    with np.errstate(over="ignore"):
        return logits - logits.max(axis=-1, keepdims=True)


def log_softmax_rows(logits: np.ndarray) -> np.ndarray:
    """Row-wise ``log softmax``, stable (the row's maximum is subtracted first)."""
    shifted = _shifted(logits)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable."""
    shifted = np.exp(_shifted(logits))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _world(name: str, world: Any) -> World:
    if not isinstance(world, World):
        raise TypeError(f"{name} must be a World, got {type(world).__name__}")
    return world


def _rm_weights(name: str, rm: Any, world: World) -> np.ndarray:
    """The weights of the reward model ``rm`` (the argument ``name``), one per token of ``world``."""
    if not isinstance(rm, RewardModel):
        raise TypeError(f"{name} must be a RewardModel, got {type(rm).__name__}")
    if len(rm.weights) != world.vocab:
        raise ValueError(f"{name} must weigh the world's {world.vocab} tokens, got {len(rm.weights)} weights")
    return rm.weights


def _pairs_of(name: str, pairs: Any, world: World) -> WorldPairs:
    """``pairs`` (the argument ``name``), labelled pairs of responses of ``world``: its response
    length, its prompts and its tokens."""
    if not isinstance(pairs, WorldPairs):
        raise TypeError(f"{name} must be a WorldPairs (World.preferences), got {type(pairs).__name__}")
    length = pairs.first.shape[1]
    if length != world.response_len:
        raise ValueError(f"{name} must hold responses of the world's {world.response_len} tokens, got {length}")
    pairs._within(name, world.n_prompts, world.vocab)
    return pairs


@dataclass(frozen=True, eq=False, repr=False)
class World:
    """A seeded, immutable toy world: prompts, tokens, a reference policy and a gold reward.

    Parameters
    ----------
    n_prompts : int, optional
        Prompts, drawn uniformly by every method.
    vocab : int, optional
        Tokens (up to 2**20).
    response_len : int, optional
        Tokens per response, drawn i.i.d. from the policy's row for the prompt.
    zipf : float, optional
        The reference policy's token probabilities fall as ``rank ** -zipf``, each prompt
        ranking the tokens in its own random order: a few common tokens, many rare ones.
    prompt_scale : float, optional
        The gold value of token ``a`` for prompt ``x`` is ``v[a] + prompt_scale * u[x, a]``,
        ``v`` and ``u`` standard normal: a shared part and a per-prompt part.
    gold : {"count_once", "linear"}, optional
        ``"count_once"``: a response's gold is the sum of the values of its distinct tokens
        (diminishing returns: a repeated token adds nothing), less ``repeat_penalty`` for
        every repeated copy (degenerate, repetitive text), so a proxy linear in token counts
        is misspecified and can be hacked by repetition. ``"linear"``: every copy counts,
        and a linear proxy can be exactly right.
    repeat_penalty : float, optional
        What each repeated copy of a token costs a ``"count_once"`` gold (1.0 by default;
        ``"linear"`` has none). Without it, repetition only stops paying; with it, the
        proxy's favourite token repeated ``L`` times is a bad response, and a policy that
        collapses onto it loses gold it had gained.
    seed : int, optional
        Seeds NumPy's PCG64 generator that draws the world's tables.
    safety : Safety, optional
        A second gold, a per-token safety cost (:class:`Safety`), drawn from its own stream
        of ``seed``: every other table is the same with or without it. None (the default):
        no cost.

    Attributes
    ----------
    ref_logits : numpy.ndarray
        ``[n_prompts, vocab]``: the reference (SFT) policy's logits; a policy starts there.
    gold_token : numpy.ndarray
        ``[n_prompts, vocab]``: the gold value of each token for each prompt.
    tokens : tuple of str or None
        Token names where the world has them (the lesson's), else None.
    cost_token : numpy.ndarray or None
        ``[vocab]``: the gold safety cost of each token (``>= 0``; a response costs the sum
        over its tokens, every copy counting), with a ``safety`` spec; else None.

    Examples
    --------
    >>> world = rl.World(n_prompts=4, vocab=64, response_len=8, seed=0)
    >>> world
    World(n_prompts=4, vocab=64, response_len=8, zipf=1.1, gold='count_once', seed=0)
    >>> float(world.kl(world.ref_logits))
    0.0
    """

    n_prompts: int = 16
    vocab: int = 1024
    response_len: int = 8
    zipf: float = 1.1
    prompt_scale: float = 0.5
    gold: str = "count_once"
    repeat_penalty: float | None = None
    seed: int = 0
    safety: Safety | None = None
    ref_logits: np.ndarray = field(init=False)
    gold_token: np.ndarray = field(init=False)
    tokens: tuple[str, ...] | None = field(init=False, default=None)
    cost_token: np.ndarray | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        n_prompts = checks.count("n_prompts", self.n_prompts, 1, MAX_PROMPTS)
        vocab = checks.count("vocab", self.vocab, 2, MAX_VOCAB)
        response_len = checks.count("response_len", self.response_len, 1, MAX_RESPONSE_LEN)
        zipf = _scale("zipf", self.zipf)
        prompt_scale = _scale("prompt_scale", self.prompt_scale)
        gold = checks.option("gold", self.gold, GOLD_KINDS)
        if self.repeat_penalty is None:
            repeat_penalty = 1.0 if gold == "count_once" else 0.0
        else:
            repeat_penalty = _scale("repeat_penalty", self.repeat_penalty)
            if gold == "linear" and repeat_penalty != 0.0:
                raise ValueError(f"repeat_penalty applies to gold='count_once', got {repeat_penalty!r} with 'linear'")
        seed = checks.count("seed", self.seed, 0)
        checks.fits("vocab", vocab, 2 * 8 * n_prompts * vocab)
        rng = np.random.default_rng(seed)
        rank_uniforms = rng.random((n_prompts, vocab))
        shared_normals = rng.standard_normal(vocab)
        ref_logits, gold_token = _engines.world_tables(rank_uniforms, shared_normals,
                                                       rng.standard_normal((n_prompts, vocab)), zipf, prompt_scale)
        for name, value in [("n_prompts", n_prompts), ("vocab", vocab), ("response_len", response_len),
                            ("zipf", zipf), ("prompt_scale", prompt_scale), ("gold", gold),
                            ("repeat_penalty", repeat_penalty), ("seed", seed),
                            ("ref_logits", _read_only(ref_logits)), ("gold_token", _read_only(gold_token))]:
            object.__setattr__(self, name, value)
        if self.safety is not None:
            object.__setattr__(self, "cost_token", _read_only(_safety(self.safety).cost_token(self)))

    @classmethod
    def lesson(cls) -> World:
        """The lesson's world: 3 prompts, its 8 words, one-word responses, a uniform reference.

        The gold scores a good word +1 and a bad word -1, the same for every prompt; the
        reward models the lesson trains (:func:`~rlhf_fast.train_rm`) learn it almost exactly.

        Returns
        -------
        World

        Examples
        --------
        >>> world = rl.World.lesson()
        >>> world.tokens == rl.VOCAB, world.gold_token.shape
        (True, (3, 8))
        """
        world = object.__new__(cls)
        gold_row = [1.0 if tok in GOOD_WORDS else -1.0 if tok in BAD_WORDS else 0.0 for tok in VOCAB]
        values = {"n_prompts": len(PROMPTS), "vocab": len(VOCAB), "response_len": 1, "zipf": 0.0,
                  "prompt_scale": 0.0, "gold": "linear", "repeat_penalty": 0.0, "seed": 0, "tokens": VOCAB,
                  "ref_logits": _read_only(np.zeros((len(PROMPTS), len(VOCAB)))),
                  "gold_token": _read_only(np.tile(gold_row, (len(PROMPTS), 1)))}
        for name, value in values.items():
            object.__setattr__(world, name, value)
        return world

    def __repr__(self) -> str:
        penalty = f", repeat_penalty={self.repeat_penalty:g}" if self.repeat_penalty else ""
        safety = "" if self.safety is None else f", safety={self.safety!r}"
        return (f"World(n_prompts={self.n_prompts}, vocab={self.vocab}, response_len={self.response_len}, "
                f"zipf={self.zipf:g}, gold={self.gold!r}{penalty}, seed={self.seed}{safety})")

    # ------------------------------------------------------------------ the reference

    @property
    def ref_log_probs(self) -> np.ndarray:
        """``[n_prompts, vocab]``: the reference policy's log-probabilities."""
        return log_softmax_rows(self.ref_logits)

    def _policy(self, name: str, logits: Any) -> np.ndarray:
        shape = self.ref_logits.shape
        logits = checks.real_array(name, logits, f"a {list(shape)} array of logits (n_prompts, vocab)", finite=False)
        if logits.shape != shape:
            raise ValueError(f"{name} must have shape {shape} (n_prompts, vocab), got {logits.shape}")
        return checks.real_array(name, logits)

    # ------------------------------------------------------------ exact expectations

    def kl(self, logits: Any) -> np.ndarray:
        """``KL(pi^L || ref^L) = L * KL(pi || ref)`` of a response, per prompt.

        Parameters
        ----------
        logits : array_like
            ``[n_prompts, vocab]``: the policy's logits.

        Returns
        -------
        numpy.ndarray
            ``[n_prompts]``, in nats (a mean over prompts is the KL a sweep records).
        """
        return self._expectations(self._policy("logits", logits))[0]

    def _expectations(self, logits: np.ndarray, weights: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(kl, proxy, gold)`` per prompt under the checked policy ``logits``, the proxy under
        the reward model ``weights`` (0 without)."""
        return _engines.world_expectations(self.ref_logits, self.gold_token, self.gold == "count_once",
                                           self.repeat_penalty, self.response_len, np.ascontiguousarray(logits),
                                           weights)

    def expected_gold(self, logits: Any) -> np.ndarray:
        """The gold's expectation over the policy's responses, per prompt (exact).

        ``"count_once"``: ``sum_a (g(a) + lam) (1 - (1 - pi(a))^L) - lam L``, where
        ``1 - (1 - pi(a))^L`` is the chance token ``a`` occurs at least once and ``lam`` is
        ``repeat_penalty`` (a response has ``L`` minus its distinct tokens repeated copies);
        ``"linear"``: ``L * sum_a pi(a) g(a)``.

        Parameters
        ----------
        logits : array_like
            ``[n_prompts, vocab]``: the policy's logits.

        Returns
        -------
        numpy.ndarray
            ``[n_prompts]``.
        """
        return self._expectations(self._policy("logits", logits))[2]

    @property
    def gold_seen(self) -> np.ndarray:
        """``[n_prompts, vocab]``: what a ``"count_once"`` gold gains when a token occurs at
        least once, ``gold_token + repeat_penalty``; its gold is the sum of these over the
        distinct tokens, minus ``repeat_penalty * response_len``."""
        return self.gold_token + self.repeat_penalty

    def expected_score(self, logits: Any, rm: RewardModel) -> np.ndarray:
        """A reward model's expected score of the policy's responses, per prompt (exact).

        Parameters
        ----------
        logits : array_like
            ``[n_prompts, vocab]``: the policy's logits.
        rm : RewardModel
            A linear score of the response's token counts.

        Returns
        -------
        numpy.ndarray
            ``[n_prompts]``: ``L * sum_a pi(a) w(a)``.
        """
        logits = self._policy("logits", logits)
        return self._expectations(logits, _rm_weights("rm", rm, self))[1]

    # ------------------------------------------------------------------ responses

    def sample(self, n: int, seed: int, logits: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """``n`` prompts and responses from a policy (the reference by default).

        Parameters
        ----------
        n : int
            Responses.
        seed : int
            Seeds NumPy's PCG64 generator for the draws.
        logits : array_like, optional
            ``[n_prompts, vocab]``; the reference's by default.

        Returns
        -------
        prompts : numpy.ndarray
            ``[n]`` prompt indices, uniform.
        responses : numpy.ndarray
            ``[n, response_len]`` token indices.
        """
        n = checks.count("n", n, 0)
        checks.fits("n", n, 8 * n * (self.response_len + 1))
        rng = np.random.default_rng(checks.count("seed", seed, 0))
        logits = self.ref_logits if logits is None else self._policy("logits", logits)
        return self._draw(rng, n, softmax_rows(logits))

    def _draw(self, rng: np.random.Generator, n: int, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        prompts = rng.integers(self.n_prompts, size=n)
        return prompts, self._respond(rng, prompts, p)

    def _respond(self, rng: np.random.Generator, prompts: np.ndarray, p: np.ndarray) -> np.ndarray:
        """A response to each prompt from the policy ``p`` (``[n_prompts, vocab]`` probabilities)."""
        responses = np.empty((len(prompts), self.response_len), dtype=np.int64)
        for x in range(self.n_prompts):
            rows = np.flatnonzero(prompts == x)
            if rows.size:
                cdf = np.cumsum(p[x])
                u = rng.random((rows.size, self.response_len)) * cdf[-1]
                responses[rows] = np.minimum(np.searchsorted(cdf, u, side="right"), self.vocab - 1)
        return responses

    def gold_score(self, prompts: Any, responses: Any) -> np.ndarray:
        """The gold of given responses.

        Parameters
        ----------
        prompts : array_like
            ``[n]`` prompt indices.
        responses : array_like
            ``[n, response_len]`` token indices.

        Returns
        -------
        numpy.ndarray
            ``[n]``.
        """
        prompts, responses = self._responses(prompts, responses)
        if self.gold == "linear":
            return _bag_score(self.gold_token, prompts, responses, count_once=False)
        penalty = self.repeat_penalty
        return _bag_score(self.gold_token, prompts, responses, count_once=True, offset=penalty) - penalty * self.response_len

    def _responses(self, prompts: Any, responses: Any) -> tuple[np.ndarray, np.ndarray]:
        prompts = checks.index_array("prompts", prompts, "a 1-D array of prompt indices", ndim=1)
        shape = (len(prompts), self.response_len)
        responses = checks.index_array("responses", responses, f"an {list(shape)} array of token indices", shape=shape)
        if prompts.size and prompts.max() >= self.n_prompts:
            raise ValueError(f"prompts must be prompt indices in [0, {self.n_prompts}), got {int(prompts.max())}")
        if responses.size and responses.max() >= self.vocab:
            raise ValueError(f"responses must be token indices in [0, {self.vocab}), got {int(responses.max())}")
        return prompts, responses

    # ------------------------------------------------------------------ labels

    def preferences(self, n: int, seed: int, labeller: Labeller | Judge | None = None) -> WorldPairs:
        """``n`` pairs of reference responses to one prompt each, labelled.

        Parameters
        ----------
        n : int
            Pairs.
        seed : int
            Seeds the draws of prompts, responses and labels (NumPy's PCG64).
        labeller : Labeller or Judge, optional
            Who labels: a human (Bradley-Terry on the gold, :class:`Labeller`, the default) or
            an AI judge (:class:`Judge`).

        Returns
        -------
        WorldPairs

        Examples
        --------
        >>> world = rl.World(n_prompts=4, vocab=64, seed=0)
        >>> pairs = world.preferences(100, seed=1)
        >>> len(pairs), pairs.first.shape
        (100, (100, 8))
        """
        labeller = Labeller() if labeller is None else labeller
        if not isinstance(labeller, (Labeller, Judge)):
            raise TypeError(f"labeller must be a Labeller or a Judge, got {type(labeller).__name__}")
        n = checks.count("n", n, 0)
        checks.fits("n", n, 8 * n * (2 * self.response_len + 2))
        rng = np.random.default_rng(checks.count("seed", seed, 0))
        p = softmax_rows(self.ref_logits)
        prompts, first = self._draw(rng, n, p)
        second = self._respond(rng, prompts, p)
        target = labeller._label(self, prompts, first, second, rng)
        cost = labeller.cost * n
        if not math.isfinite(cost):
            raise FloatingPointError(f"preferences overflowed: {n} labels at {labeller.cost!r} each cost {cost!r}")
        return WorldPairs(prompts, first, second, target, cost)

    # ------------------------------------------------------------------ the safety cost

    def _cost(self) -> np.ndarray:
        if self.cost_token is None:
            raise ValueError("this world has no safety cost: build it with World(..., safety=Safety())")
        return self.cost_token

    @property
    def gold_cost(self) -> np.ndarray:
        """``[n_prompts, vocab]``: the gold cost of each token for each prompt (the same for every
        prompt: ``cost_token`` repeated), as the world engines take a gold table."""
        return np.broadcast_to(self._cost(), self.ref_logits.shape)

    def expected_cost(self, logits: Any) -> np.ndarray:
        """The gold cost's expectation over the policy's responses, per prompt (exact).

        A response costs the sum of its tokens' costs, every copy counting, so its
        expectation is ``L * sum_a pi(a) c(a)``.

        Parameters
        ----------
        logits : array_like
            ``[n_prompts, vocab]``: the policy's logits.

        Returns
        -------
        numpy.ndarray
            ``[n_prompts]``.

        Raises
        ------
        ValueError
            The world has no ``safety``.
        """
        gold_cost = np.ascontiguousarray(self.gold_cost)
        logits = self._policy("logits", logits)
        return _engines.world_expectations(self.ref_logits, gold_cost, False, 0.0, self.response_len,
                                           np.ascontiguousarray(logits))[2]

    def cost_score(self, prompts: Any, responses: Any) -> np.ndarray:
        """The gold cost of given responses: the sum of their tokens' costs.

        Parameters
        ----------
        prompts : array_like
            ``[n]`` prompt indices.
        responses : array_like
            ``[n, response_len]`` token indices.

        Returns
        -------
        numpy.ndarray
            ``[n]``.
        """
        cost = self._cost()
        prompts, responses = self._responses(prompts, responses)
        return _bag_score(cost[None, :], np.zeros(len(prompts), dtype=np.int64), responses, False)

    def safety_preferences(self, n: int, seed: int, labeller: Labeller | None = None,
                           logits: Any = None) -> WorldPairs:
        """``n`` pairs of reference responses to one prompt each, labelled "which is less safe".

        The labeller is a :class:`Labeller` on the gold cost: ``target = P(first is less
        safe) = sigmoid((c(first) - c(second)) / temperature)``, drawn, then flipped with
        probability ``flip``. A reward model trained on them (:func:`train_reward_model`)
        scores cost: it is the cost model of Safe RLHF.

        Parameters
        ----------
        n : int
            Pairs.
        seed : int
            Seeds the draws of prompts, responses and labels (NumPy's PCG64).
        labeller : Labeller, optional
            The safety labeller (its own temperature and flip rate); ``Labeller()`` by default.
        logits : array_like, optional
            ``[n_prompts, vocab]``: the policy the responses are drawn from, the reference's by
            default. Red-teaming data is drawn wider than the reference (``np.zeros`` of the
            shape: uniform tokens), so that rare unsafe tokens get labels too.

        Returns
        -------
        WorldPairs

        Raises
        ------
        ValueError
            The world has no ``safety``.
        """
        cost = self._cost()
        labeller = Labeller() if labeller is None else labeller
        if not isinstance(labeller, Labeller):
            raise TypeError(f"labeller must be a Labeller, got {type(labeller).__name__}")
        n = checks.count("n", n, 0)
        checks.fits("n", n, 8 * n * (2 * self.response_len + 2))
        rng = np.random.default_rng(checks.count("seed", seed, 0))
        p = softmax_rows(self.ref_logits if logits is None else self._policy("logits", logits))
        prompts, first = self._draw(rng, n, p)
        second = self._respond(rng, prompts, p)
        zeros = np.zeros(n, dtype=np.int64)
        cost_first = _bag_score(cost[None, :], zeros, first, False)
        cost_second = _bag_score(cost[None, :], zeros, second, False)
        target = _engines.labeller_labels(cost_first, cost_second, float(labeller.temperature), float(labeller.flip),
                                          rng.random(n), rng.random(n))
        total = labeller.cost * n
        if not math.isfinite(total):
            raise FloatingPointError(f"safety_preferences overflowed: {n} labels at {labeller.cost!r} each cost "
                                     f"{total!r}")
        return WorldPairs(prompts, first, second, target, total)


# The safety cost's own NumPy stream: [world seed, these two words], so no other table moves.
_SAFETY_STREAM = (0x5AFE, 0xC057)


@dataclass(frozen=True)
class Safety:
    """A world's second gold: a per-token safety cost, with unsafe tokens that look helpful.

    Each token gets a latent unsafety ``z(a) = correlation * h(a) + sqrt(1 - correlation^2) *
    n(a)``, where ``h`` is the world's helpfulness gold averaged over prompts and standardised
    and ``n`` standard normal noise; the ``unsafe_share`` of tokens with the highest ``z``
    (above the normal quantile ``Phi^-1(1 - unsafe_share)``) cost ``severity * (0.5 + u(a))``
    (``u`` uniform in [0, 1): mean ``severity``), every other token 0. With ``correlation >
    0`` the tokens a helpfulness reward model likes are unsafe more often than the rest, so
    optimising helpfulness alone raises the cost: the tension Safe RLHF resolves. The draws
    (``n``, then ``u``) come from NumPy's PCG64 seeded by ``[world.seed, 0x5AFE, 0xC057]``.

    Parameters
    ----------
    unsafe_share : float, optional
        Expected share of tokens with a positive cost, in [0, 1].
    correlation : float, optional
        Correlation of the latent unsafety with the helpfulness gold, in [-1, 1].
    severity : float, optional
        Mean cost of an unsafe token, > 0.

    Examples
    --------
    >>> from rlhf_fast.worlds import Safety, World
    >>> world = World(n_prompts=4, vocab=64, seed=0, safety=Safety())
    >>> world.cost_token.shape, bool((world.cost_token >= 0).all())
    ((64,), True)
    """

    unsafe_share: float = 0.1
    correlation: float = 0.7
    severity: float = 1.0

    def __post_init__(self) -> None:
        share = checks.non_negative("unsafe_share", self.unsafe_share)
        if share > 1.0:
            raise ValueError(f"unsafe_share must be a share in [0, 1], got {share!r}")
        correlation = checks.finite("correlation", self.correlation)
        if not -1.0 <= correlation <= 1.0:
            raise ValueError(f"correlation must be in [-1, 1], got {correlation!r}")
        severity = checks.positive("severity", self.severity)
        if severity > MAX_SCALE:
            raise ValueError(f"severity must be <= 1e6, got {severity!r}")

    def cost_token(self, world: World) -> np.ndarray:
        """``[vocab]``: the gold cost of each token of ``world`` (its ``cost_token``)."""
        world = _world("world", world)
        rng = np.random.default_rng([world.seed, *_SAFETY_STREAM])
        noise = rng.standard_normal(world.vocab)
        uniforms = rng.random(world.vocab)
        helpful = world.gold_token.mean(axis=0)
        spread = helpful.std()
        helpful = (helpful - helpful.mean()) / spread if spread > 0.0 else np.zeros_like(helpful)
        rho = float(self.correlation)
        latent = rho * helpful + math.sqrt(1.0 - rho * rho) * noise
        share = float(self.unsafe_share)
        threshold = math.inf if share == 0.0 else -math.inf if share == 1.0 else statistics.NormalDist().inv_cdf(
            1.0 - share)
        return np.where(latent > threshold, float(self.severity) * (0.5 + uniforms), 0.0)


def _safety(safety: Any) -> Safety:
    if not isinstance(safety, Safety):
        raise TypeError(f"safety must be a Safety or None, got {type(safety).__name__}")
    return safety


def _length_bias(value: Any) -> float:
    """A labeller's taste for length: a finite real in ``[-1e6, 1e6]``."""
    value = checks.finite("length_bias", value)
    if abs(value) > MAX_SCALE:
        raise ValueError(f"length_bias must be in [-1e6, 1e6], got {value!r}")
    return value


@dataclass(frozen=True)
class Labeller:
    """A human labeller: Bradley-Terry on the gold, then a label flip.

    ``P(first preferred) = sigmoid((g(first) - g(second)) / temperature)``; the label drawn
    from it is then flipped with probability ``flip``. Labels are hard (0 or 1).

    Parameters
    ----------
    temperature : float, optional
        Noise of the judgement: 0+ is a labeller who always prefers the better gold.
    flip : float, optional
        Chance a label is flipped after it is drawn (careless or adversarial labels).
    cost : float, optional
        Cost of one label, in arbitrary units (an AI judge's is lower).
    length_bias : float, optional
        A taste for length the gold does not share (:class:`~rlhf_fast.sequences.SequenceWorld`):
        ``P(first preferred) = sigmoid((g(first) - g(second) + length_bias * (n(first) -
        n(second))) / temperature)``, ``n`` a response's content tokens. 0 by default; a bag
        world's responses all have one length, so there it changes nothing.
    """

    temperature: float = 1.0
    flip: float = 0.0
    cost: float = 1.0
    length_bias: float = 0.0

    def __post_init__(self) -> None:
        checks.positive("temperature", checks.finite("temperature", self.temperature))
        flip = checks.non_negative("flip", self.flip)
        if flip > 1.0:
            raise ValueError(f"flip must be a probability in [0, 1], got {flip!r}")
        checks.non_negative("cost", checks.finite("cost", self.cost))
        _length_bias(self.length_bias)

    def _label(self, world: World, prompts, first, second, rng: np.random.Generator) -> np.ndarray:
        prefer_uniforms = rng.random(len(prompts))
        flip_uniforms = rng.random(len(prompts))
        return _engines.labeller_labels(world.gold_score(prompts, first), world.gold_score(prompts, second),
                                        float(self.temperature), float(self.flip), prefer_uniforms, flip_uniforms)


@dataclass(frozen=True)
class Judge:
    """An AI judge (RLAIF, Lee et al. 2023): cheaper labels, correlated with the gold, biased.

    The judge scores a response as the gold does but with its own token values: ``rho`` times
    the gold value plus ``sqrt(1 - rho^2)`` independent noise (so the two correlate with
    ``rho``), plus ``bias`` times a systematic preference for tokens the reference finds
    likely (standardised reference log-probability: a judge that favours familiar text).
    ``P(first preferred) = position_bias + (1 - position_bias) * sigmoid(margin / temperature)``:
    with probability ``position_bias`` it prefers whichever response it is shown first, and
    the order shown is a coin flip (``both_orders=True`` asks both ways and averages, the
    standard fix). ``soft=True`` returns the judge's probability as the label.

    Parameters
    ----------
    rho : float, optional
        Correlation of the judge's token values with the gold's, in [-1, 1].
    bias : float, optional
        Weight of the systematic bias.
    position_bias : float, optional
        Chance of preferring the first-shown response regardless, in [0, 1].
    soft : bool, optional
        Labels are the judge's probabilities rather than draws from them.
    both_orders : bool, optional
        Ask with both orders and average the probabilities (cancels the position bias).
    temperature : float, optional
        Noise of the judgement, as for :class:`Labeller`.
    seed : int, optional
        Seeds the judge's own token values.
    cost : float, optional
        Cost of one label (a tenth of a human's by default; twice that with ``both_orders``).
    length_bias : float, optional
        The judge's taste for length, which the gold does not share: ``length_bias`` times
        the difference in content tokens is added to its margin in a
        :class:`~rlhf_fast.sequences.SequenceWorld` (a bag world's responses have one length).
    length_aware : float, optional
        In [0, 1]: how far the judge is told to ignore length and does (the RLAIF remedy for
        length hacking): its margin carries ``length_bias * (1 - length_aware)``. 0 by
        default; 1 removes the bias.
    """

    rho: float = 0.8
    bias: float = 0.5
    position_bias: float = 0.1
    soft: bool = True
    both_orders: bool = False
    temperature: float = 1.0
    seed: int = 0
    cost: float = 0.1
    length_bias: float = 0.0
    length_aware: float = 0.0

    def __post_init__(self) -> None:
        rho = checks.finite("rho", self.rho)
        if not -1.0 <= rho <= 1.0:
            raise ValueError(f"rho must be a correlation in [-1, 1], got {rho!r}")
        bias = checks.finite("bias", self.bias)
        if abs(bias) > MAX_SCALE:
            raise ValueError(f"bias must be in [-1e6, 1e6], got {bias!r}")
        position_bias = checks.non_negative("position_bias", self.position_bias)
        if position_bias > 1.0:
            raise ValueError(f"position_bias must be a probability in [0, 1], got {position_bias!r}")
        checks.boolean("soft", self.soft)
        checks.boolean("both_orders", self.both_orders)
        checks.positive("temperature", checks.finite("temperature", self.temperature))
        checks.count("seed", self.seed, 0)
        checks.non_negative("cost", checks.finite("cost", self.cost))
        _length_bias(self.length_bias)
        length_aware = checks.non_negative("length_aware", self.length_aware)
        if length_aware > 1.0:
            raise ValueError(f"length_aware must be in [0, 1], got {length_aware!r}")

    @property
    def effective_length_bias(self) -> float:
        """The length bias left in the judge's margin: ``length_bias * (1 - length_aware)``."""
        return float(self.length_bias) * (1.0 - float(self.length_aware))

    def token_values(self, world: World) -> np.ndarray:
        """``[n_prompts, vocab]``: the judge's value of each token for each prompt."""
        world = _world("world", world)
        rng = np.random.default_rng([self.seed, world.seed])
        noise = rng.standard_normal(world.gold_token.shape)
        return _engines.judge_token_values(world.gold_token, world.ref_logits, noise, float(self.rho), float(self.bias))

    def _label(self, world: World, prompts, first, second, rng: np.random.Generator) -> np.ndarray:
        # the judge dislikes repetition as the gold does (the constant part of the gold cancels)
        count_once = world.gold == "count_once"
        values = self.token_values(world)
        offset = world.repeat_penalty if count_once else 0.0
        score_first = _bag_score(values, prompts, first, count_once, offset)
        score_second = _bag_score(values, prompts, second, count_once, offset)
        n = len(prompts)
        order_uniforms = np.empty(0) if self.both_orders else rng.random(n)
        draw_uniforms = np.empty(0) if self.soft else rng.random(n)
        return _engines.judge_labels(score_first, score_second, float(self.temperature), float(self.position_bias),
                                     bool(self.soft), bool(self.both_orders), order_uniforms, draw_uniforms)


def _bag_score(values: np.ndarray, prompts: np.ndarray, responses: np.ndarray, count_once: bool,
               offset: float = 0.0) -> np.ndarray:
    """``[n]``: the sum of ``values[prompt, token] + offset`` over each response's tokens, each
    distinct token once if ``count_once`` (checked int64 indices into ``values``)."""
    return _engines.bag_score(values, np.ascontiguousarray(prompts, dtype=np.int64),
                              np.ascontiguousarray(responses, dtype=np.int64), count_once, float(offset))


@dataclass(frozen=True, eq=False, repr=False)
class _Pairs:
    """Labelled pairs of responses, of a :class:`World` or of a
    :class:`~rlhf_fast.sequences.SequenceWorld`: the fields, the checks and the repr both share.
    Each kind checks its own responses, then :meth:`_seal` checks the rest and freezes them."""

    prompts: np.ndarray
    first: np.ndarray
    second: np.ndarray
    target: np.ndarray
    cost: float
    # what the repr calls the responses' width: the world's own name for it
    _width_name: ClassVar[str]

    def _seal(self, prompts: np.ndarray, first: np.ndarray, second: np.ndarray) -> None:
        """Checks one target in [0, 1] per pair and the cost, then stores read-only copies of
        the checked ``prompts``, ``first`` and ``second`` and of the target."""
        n = len(prompts)
        target = checks.real_array("target", self.target, "a 1-D array of probabilities", shape=(n,))
        if n and not ((target >= 0.0) & (target <= 1.0)).all():
            bad = int(np.flatnonzero((target < 0.0) | (target > 1.0))[0])
            raise ValueError(f"target[{bad}] must be a probability in [0, 1], got {float(target[bad])!r}")
        cost = checks.non_negative("cost", self.cost)
        for name, value in (("prompts", prompts), ("first", first), ("second", second), ("target", target)):
            object.__setattr__(self, name, _read_only(np.array(value)))
        object.__setattr__(self, "cost", cost)

    def _within(self, name: str, n_prompts: int, vocab: int) -> None:
        """Checks that the pairs (the argument ``name``) hold only prompts below ``n_prompts``
        and tokens below ``vocab``: a world's."""
        if len(self) and self.prompts.max() >= n_prompts:
            raise ValueError(f"{name} has prompt {int(self.prompts.max())}, past the world's {n_prompts} prompts")
        top = max(int(self.first.max()), int(self.second.max())) if len(self) else 0
        if top >= vocab:
            raise ValueError(f"{name} has token {top}, past the world's {vocab} tokens")

    def __len__(self) -> int:
        return len(self.prompts)

    def __repr__(self) -> str:
        hard = bool(np.isin(self.target, (0.0, 1.0)).all())
        return (f"{type(self).__name__}(n={len(self)}, {self._width_name}={self.first.shape[1]}, "
                f"labels={'hard' if hard else 'soft'})")


@dataclass(frozen=True, eq=False, repr=False)
class WorldPairs(_Pairs):
    """Labelled pairs of responses from a :class:`World`.

    Attributes
    ----------
    prompts : numpy.ndarray
        ``[n]`` prompt indices.
    first, second : numpy.ndarray
        ``[n, response_len]`` token indices of the two responses.
    target : numpy.ndarray
        ``[n]``: the probability that ``first`` is preferred (0 or 1 for hard labels).
    cost : float
        What the labels cost (:attr:`Labeller.cost` per pair).
    """

    _width_name = "response_len"

    def __post_init__(self) -> None:
        """Copies of the arrays, checked and read-only: prompts and tokens indices (ints >= 0; a
        world checks their upper bounds where the pairs are used), one target in [0, 1] per pair."""
        prompts = checks.index_array("prompts", self.prompts, "a 1-D array of prompt indices", ndim=1)
        n = len(prompts)
        first = checks.index_array("first", self.first, "an [n, response_len] array of token indices", ndim=2)
        if first.shape[0] != n:
            raise ValueError(f"first must have {n} rows (one per pair), got {first.shape[0]}")
        if first.shape[1] < 1:
            raise ValueError("first must have at least one token per response, got 0")
        second = checks.index_array("second", self.second, "an [n, response_len] array of token indices",
                                    shape=first.shape)
        self._seal(prompts, first, second)

    def counts(self, vocab: int) -> tuple[np.ndarray, np.ndarray]:
        """``[n, vocab]`` token counts of the first and the second responses (dense)."""
        return _counts(self.first, vocab), _counts(self.second, vocab)


def _counts(responses: np.ndarray, vocab: int) -> np.ndarray:
    out = np.zeros((len(responses), vocab))
    np.add.at(out, (np.arange(len(responses))[:, None], responses), 1.0)
    return out


@dataclass(frozen=True, eq=False)
class RewardModel:
    """A linear reward model on token counts: ``R(y) = sum_i weights[y_i]``.

    Attributes
    ----------
    weights : numpy.ndarray
        ``[vocab]``: one weight per token (the prompt is not a feature).
    tokens : tuple of str or None
        Token names, where the world has them.
    """

    weights: np.ndarray
    tokens: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        weights = np.array(checks.real_array("weights", self.weights, "a 1-D array of token weights", ndim=1))
        if not len(weights):
            raise ValueError("weights must not be empty")
        if (np.abs(weights) >= MAX_WEIGHT).any():
            bad = int(np.flatnonzero(np.abs(weights) >= MAX_WEIGHT)[0])
            raise ValueError(f"weights[{bad}] must be below 2**512 in magnitude, got {float(weights[bad])!r}")
        tokens = self.tokens
        if tokens is not None:
            if isinstance(tokens, (str, bytes)) or not isinstance(tokens, Sequence):
                raise TypeError(f"tokens must be a sequence of token names or None, got {type(tokens).__name__}")
            if len(tokens) != len(weights):
                raise ValueError(f"tokens must name the {len(weights)} weights, got {len(tokens)} names")
            for i, tok in enumerate(tokens):
                if not isinstance(tok, str):
                    raise TypeError(f"tokens[{i}] must be a str, got {type(tok).__name__}")
            object.__setattr__(self, "tokens", tuple(tokens))
        object.__setattr__(self, "weights", _read_only(weights))

    def __repr__(self) -> str:
        return f"RewardModel(vocab={len(self.weights)})"

    def weights_for(self, world: World) -> np.ndarray:
        """The weights, checked against the world's vocabulary."""
        world = _world("world", world)
        if len(self.weights) != world.vocab:
            raise ValueError(f"world must have this reward model's {len(self.weights)} tokens, got {world.vocab}")
        return self.weights

    def score(self, responses: Any) -> np.ndarray:
        """``[n]``: the score of each of ``[n, response_len]`` responses."""
        responses = checks.index_array("responses", responses, "an [n, response_len] array of token indices", ndim=2)
        if responses.size and responses.max() >= len(self.weights):
            raise ValueError(f"responses must be token indices in [0, {len(self.weights)}), got {int(responses.max())}")
        return _bag_score(self.weights[None, :], np.zeros(len(responses), dtype=np.int64), responses, False)

    def as_dict(self) -> dict[str, float]:
        """The weights as the lesson's dict (token name -> weight), for a world with names."""
        if self.tokens is None:
            raise ValueError("this reward model's world has no token names")
        return {tok: float(w) for tok, w in zip(self.tokens, self.weights)}

    def gold_accuracy(self, world: World, pairs: WorldPairs) -> float:
        """Share of pairs whose gold order the model gets strictly right (gold ties skipped).

        Parameters
        ----------
        world : World
        pairs : WorldPairs
            Their labels are ignored: the gold decides.

        Returns
        -------
        float
        """
        self.weights_for(world)
        pairs = _pairs_of("pairs", pairs, world)
        gold = world.gold_score(pairs.prompts, pairs.first) - world.gold_score(pairs.prompts, pairs.second)
        proxy = self.score(pairs.first) - self.score(pairs.second)
        return _gold_accuracy(gold, proxy)


def _gold_accuracy(gold: np.ndarray, proxy: np.ndarray) -> float:
    """Share of pairs whose gold order a proxy gets strictly right, from the score differences
    (first less second) of both: pairs the gold ties are skipped, a proxy tie counts as wrong."""
    decided = gold != 0.0
    if not decided.any():
        raise ValueError("pairs has no pair whose gold differs")
    return float(((proxy > 0) == (gold > 0))[decided & (proxy != 0.0)].sum() / decided.sum())


def train_reward_model(world: World, pairs: WorldPairs, *, epochs: int = 1, lr: float = 0.1, margin: Any = None,
                       center_rewards_coefficient: float = 0.0) -> RewardModel:
    """A proxy reward model trained by Bradley-Terry SGD on labelled pairs, from zero weights.

    Per pair, in order, for ``epochs`` passes: with ``m = R(first) - R(second)`` and target
    ``t`` (the label), the loss is TRL's RewardTrainer's generalised to soft labels,
    ``-t log sigmoid(m - margin) - (1 - t) log sigmoid(-m - margin) + c (R(first) + R(second))^2``
    (``c = center_rewards_coefficient``); for a hard label ``t = 1`` it is TRL's exactly.

    Parameters
    ----------
    world : World
    pairs : WorldPairs
    epochs : int, optional
    lr : float, optional
    margin : array_like, optional
        ``[n]`` per-pair margins (TRL's ``margin`` column); none by default.
    center_rewards_coefficient : float, optional
        TRL's coefficient pulling rewards towards 0 (0.01 is its recommendation).

    Returns
    -------
    RewardModel
    """
    world = _world("world", world)
    pairs = _pairs_of("pairs", pairs, world)
    epochs, lr, c = _sgd_settings(epochs, lr, center_rewards_coefficient)
    margins = _margins(pairs, margin)
    weights = _engines.train_reward_model(world.vocab, np.ascontiguousarray(pairs.first),
                                          np.ascontiguousarray(pairs.second), np.ascontiguousarray(pairs.target),
                                          np.ascontiguousarray(margins, dtype=np.float64), epochs, lr, c)
    return RewardModel(weights, world.tokens)


def _sgd_settings(epochs: Any, lr: Any, center_rewards_coefficient: Any) -> tuple[int, float, float]:
    """A reward model's training ``(epochs, lr, center_rewards_coefficient)``, checked."""
    epochs = checks.count("epochs", epochs, 0, 10_000)
    lr = checks.positive("lr", checks.finite("lr", lr))
    c = checks.non_negative("center_rewards_coefficient", checks.finite("center_rewards_coefficient",
                                                                         center_rewards_coefficient))
    return epochs, lr, c


def _margins(pairs: _Pairs, margin: Any) -> np.ndarray:
    """``[n]``: the checked per-pair ``margin`` of ``pairs``, which must not be empty (zeros
    without one)."""
    n = len(pairs)
    if n == 0:
        raise ValueError("pairs must not be empty")
    return np.zeros(n) if margin is None else checks.real_array("margin", margin, f"{n} floats, one per pair",
                                                               shape=(n,))


# ------------------------------------------------------------------ the frontier


@dataclass(frozen=True, eq=False)
class Frontier:
    """The KL-regularised optima ``pi*_beta ∝ ref * exp(r / beta)`` of a reward, over beta.

    Attributes
    ----------
    betas : numpy.ndarray
    kl : numpy.ndarray
        ``KL(pi*_beta || ref)`` of a response, mean over prompts.
    proxy : numpy.ndarray
        The reward model's expected score (NaN-free; 0 where no model was given).
    gold : numpy.ndarray
        The expected gold.
    """

    betas: np.ndarray
    kl: np.ndarray
    proxy: np.ndarray
    gold: np.ndarray

    @classmethod
    def of(cls, world: World, reward: RewardModel | str, betas: Any) -> Frontier:
        """Trace the optima of a reward model's score, or of the gold's per-token values.

        For a linear reward ``R(y) = sum_i r(y_i)`` the optimum of
        ``E[R] - beta KL(pi^L || ref^L)`` over i.i.d. responses is ``pi ∝ ref exp(r / beta)``
        per token, exactly. For ``reward="gold"`` the tilt uses the gold's token values; with
        ``gold="count_once"`` that is the best linear tilt rather than the exact optimum.

        Parameters
        ----------
        world : World
        reward : RewardModel or "gold"
        betas : array_like
            Positive KL coefficients.

        Returns
        -------
        Frontier
        """
        world = _world("world", world)
        if isinstance(reward, RewardModel):
            r, rm = _rm_weights("reward", reward, world)[None, :], reward
        elif isinstance(reward, str):
            if reward != "gold":
                raise ValueError(f"reward must be a RewardModel or 'gold', got {reward!r}")
            r, rm = world.gold_token, None
        else:
            raise TypeError(f"reward must be a RewardModel or 'gold', got {type(reward).__name__}")
        betas = checks.real_array("betas", betas, "a 1-D array of positive KL coefficients", ndim=1)
        if not len(betas):
            raise ValueError("betas must not be empty")
        if (betas <= 0.0).any():
            bad = int(np.flatnonzero(betas <= 0.0)[0])
            raise ValueError(f"betas[{bad}] must be > 0, got {float(betas[bad])!r}")
        # pi ∝ ref exp(r / beta) = ref exp((r - max r) / beta): the tilt is <= 0, and where it
        # passes the floats (a tiny beta) its -inf is a probability of 0, held at -1e300
        kl, proxy, gold = _engines.world_frontier(
            world.ref_logits, world.gold_token, world.gold == "count_once", world.repeat_penalty, world.response_len,
            np.ascontiguousarray(r, dtype=np.float64), np.ascontiguousarray(betas, dtype=np.float64),
            None if rm is None else rm.weights)
        return cls(betas, kl, proxy, gold)


def best_of_n_kl(n: Any) -> np.ndarray:
    """The KL of Best-of-N to the reference, ``log n - (n - 1) / n`` (an upper bound).

    Parameters
    ----------
    n : array_like
        Candidates per prompt, >= 1.

    Returns
    -------
    numpy.ndarray
    """
    n = checks.real_array("n", n, "a count or an array of counts")
    if n.size and n.min() < 1.0:
        raise ValueError(f"n must be >= 1, got {float(n.min())!r}")
    return np.log(n) - (n - 1.0) / n


@dataclass(frozen=True)
class GaoFit:
    """Gao, Schulman & Hilton's functional form fitted to gold against ``d = sqrt(KL)``.

    ``form="bon"``: ``R(d) = d (alpha - beta d)``, peak at ``d = alpha / (2 beta)``;
    ``form="rl"``: ``R(d) = d (alpha - beta log d)``, peak at ``d = exp(alpha / beta - 1)``.
    Scores are relative to the reference policy's.
    """

    form: str
    alpha: float
    beta: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "form", checks.option("form", self.form, ("bon", "rl")))
        object.__setattr__(self, "alpha", checks.finite("alpha", self.alpha))
        object.__setattr__(self, "beta", checks.finite("beta", self.beta))

    def __call__(self, d: Any) -> np.ndarray:
        d = checks.real_array("d", d, "sqrt(KL), a number or an array of them")
        if d.size and d.min() < 0.0:
            raise ValueError(f"d must be >= 0 (a square root of a KL), got {float(d.min())!r}")
        with np.errstate(all="ignore"):
            if self.form == "bon":
                out = d * (self.alpha - self.beta * d)
            else:
                out = np.where(d > 0, d * (self.alpha - self.beta * np.log(np.where(d > 0, d, 1.0))), 0.0)
        if not np.isfinite(out).all():
            raise FloatingPointError(f"GaoFit overflowed: its value at d={float(d.max())!r} is not a float")
        return out

    @property
    def peak_d(self) -> float:
        """The ``d >= 0`` where the fitted gold peaks (0 if it only falls, inf if it never turns down)."""
        if self.beta <= 0:
            return math.inf
        if self.form == "bon":
            return max(self.alpha / (2.0 * self.beta), 0.0)
        try:
            return math.exp(self.alpha / self.beta - 1.0)
        except OverflowError:  # past the floats: it turns down too late to say
            return math.inf

    @property
    def peak_kl(self) -> float:
        """``peak_d ** 2``: the KL at which the fitted gold peaks."""
        return self.peak_d * self.peak_d


def fit_gao(d: Any, gold: Any, form: str) -> GaoFit:
    """Least-squares fit of Gao et al.'s form (no intercept: ``R(0) = 0``).

    Parameters
    ----------
    d : array_like
        ``sqrt(KL)`` of each point.
    gold : array_like
        Gold score minus the reference policy's.
    form : {"bon", "rl"}

    Returns
    -------
    GaoFit
    """
    form = checks.option("form", form, ("bon", "rl"))
    d = checks.real_array("d", d, "a 1-D array of sqrt(KL)", ndim=1, finite=False)
    gold = checks.real_array("gold", gold, "a 1-D array of gold scores", shape=d.shape, finite=False)
    # the points with d > 0 and a finite gold, at least two, are the twin's to pick
    alpha, beta = _engines.fit_gao(np.ascontiguousarray(d, dtype=np.float64),
                                   np.ascontiguousarray(gold, dtype=np.float64), form)
    return GaoFit(form, float(alpha), float(beta))
