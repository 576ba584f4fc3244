"""Twin of rust/python/: the lesson's functions, called the way the lesson calls them.

Each function takes the lesson's arguments (dict or float64 ``[3, 8]`` array policies, dict
reward weights, strings, a ``random.Random``), checks them (:mod:`rlhf_fast._checks`; the
first bad argument, in the order listed, is the one named), converts them to what the
kernels, methods and engines take (rows in ``PROMPTS`` order, weights in ``VOCAB`` order,
token ids, seed keys) and calls them, as the PyO3 bindings do for the Rust core. A policy
the call updates is read into rows of floats and written back into the caller's dict lists
or array when the call ends, however it ends; a single step writes nothing back when its
update overflowed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .. import _checks as checks
from . import lesson
from .engines import best_of_n as bon_engine
from .engines import dpo as dpo_engine
from .engines import grpo as grpo_engine
from .engines import ppo as ppo_engine
from .engines import reward_model
from .kernels import kl as kl_kernels
from .kernels import policy as policy_kernels
from .kernels.logistic import sigmoid as sigmoid_unchecked
from .kernels.sampling import sample_index
from .kernels.softmax import log_softmax_row, softmax_row
from .lesson import KL_TARGET, KL_THRESHOLD, PAIR_BYTES, PROMPTS, VOCAB
from .methods import bradley_terry as bt
from .methods import dpo, grpo, ppo
from .methods.best_of_n import MAX_N
from .methods.bradley_terry.preferences import PreferenceSet
from .methods.kl_control import make_kl_controller
from .methods.ppo import MAX_PPO_EPOCHS
from .methods.reward_checks import check_not_length_only
from .rng import seed_key as seed_key_unchecked

Policy = Mapping[str, Sequence[float]] | np.ndarray


def _write_row(policy: Any, x: int, row: list[float]) -> None:
    """Row ``x`` of a checked policy, in place: a dict's list keeps its identity."""
    if isinstance(policy, np.ndarray):
        policy[x] = row
    else:
        policy[PROMPTS[x]][:] = row


def _write_back(policy: Any, rows: list[list[float]]) -> None:
    """Every row of a checked policy, in place."""
    for x, row in enumerate(rows):
        _write_row(policy, x, row)


def _write_back_values(value: Any, values: list[float]) -> None:
    """A value baseline (a dict prompt -> float or a list in ``PROMPTS`` order), in place."""
    for i, v in enumerate(values):
        value[PROMPTS[i] if isinstance(value, Mapping) else i] = v


def _preference_set(pairs: Sequence[tuple[str, str, str]] | PreferenceSet) -> PreferenceSet:
    return pairs if isinstance(pairs, PreferenceSet) else PreferenceSet(pairs)


# --------------------------------------------------------------------------------- data


def seed_key(seed: int) -> list[int]:
    """The key ``random.Random(seed)`` seeds MT19937 with (``init_by_array``).

    ``abs(seed)`` in 32-bit little-endian words, ``[0]`` for 0 (SPEC section 3): two seeds with
    the same key give the same stream, which is why ``seed`` and ``-seed`` run alike.

    Parameters
    ----------
    seed : int
        Any int, of any size.

    Returns
    -------
    list[int]
        The key's 32-bit words, least significant first.

    Raises
    ------
    TypeError
        ``seed`` is not an int (a bool neither): ``"seed must be an int, got float"``.

    Examples
    --------
    >>> rl.seed_key(0), rl.seed_key(-7), rl.seed_key(2**32 + 5)
    ([0], [7], [5, 1])
    """
    return seed_key_unchecked(checks.integer("seed", seed))


def make_pair(rng: random.Random) -> tuple[str, str, str]:
    """One synthetic preference ``(prompt, chosen, rejected)``: two good words beat two bad ones.

    Draws from the ``random.Random`` passed, as the lesson's ``make_pair``: a prompt, then two
    distinct good words, then two distinct bad ones (``rng.choice`` and ``rng.sample`` on the
    sorted ``PROMPTS``, ``GOOD_WORDS`` and ``BAD_WORDS``).

    Parameters
    ----------
    rng : random.Random
        The stream to draw from.

    Returns
    -------
    tuple[str, str, str]
        ``(prompt, chosen, rejected)``; each response is two words joined by a space.

    Raises
    ------
    TypeError
        ``rng`` is not a ``random.Random``: ``"rng must be a random.Random, got int"``.

    Examples
    --------
    >>> import random
    >>> rl.make_pair(random.Random(0))
    ('answer me', 'thorough clear', 'vague wrong')
    """
    return lesson.make_pair(checks.choice_rng(rng))


def make_dataset(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """``n`` synthetic preference pairs, drawn on one ``random.Random(seed)``.

    ``n`` calls of ``make_pair`` on the same stream: the very pairs the lesson's loop draws
    for the same seed. The Rust backend draws them off the GIL and stops on Ctrl-C.

    Parameters
    ----------
    n : int
        How many pairs, >= 0.
    seed : int, optional
        The stream's seed (default 0).

    Returns
    -------
    list[tuple[str, str, str]]
        ``(prompt, chosen, rejected)`` triples: two good words beat two bad ones.

    Raises
    ------
    TypeError
        ``n`` or ``seed`` is not an int (named).
    ValueError
        ``n < 0``, or ``n`` pairs would not fit in half the machine's memory:
        ``"n=... needs ... bytes, more than max_memory=... bytes"``.
    KeyboardInterrupt
        Ctrl-C during a long draw (Rust backend).

    Examples
    --------
    >>> rl.make_dataset(2, seed=0)  # doctest: +NORMALIZE_WHITESPACE
    [('answer me', 'thorough clear', 'vague wrong'),
     ('answer me', 'specific thorough', 'vague short')]
    """
    n = checks.count("n", n, 0)
    seed = checks.integer("seed", seed)
    checks.fits("n", n, n * PAIR_BYTES)
    return lesson.make_dataset(n, seed)


def pairs_to_rows(pairs: Sequence[tuple[str, str, str]]) -> list[dict[str, str]]:
    """Pairs as ``{"prompt", "chosen", "rejected"}`` rows (the TRL / HF datasets format).

    Parameters
    ----------
    pairs : iterable of (str, str, str)
        ``(prompt, chosen, rejected)`` triples.

    Returns
    -------
    list[dict[str, str]]
        One row per pair, in order.

    Raises
    ------
    TypeError
        ``pairs`` is not an iterable of triples (a row, a string, ...), named ``pairs[i]``.
    ValueError
        An item that is not three items long: ``"pairs[0] must be a (prompt, chosen,
        rejected) triple, got 2 items"``.

    Examples
    --------
    >>> rl.pairs_to_rows([("help me", "clear kind", "rude vague")])
    [{'prompt': 'help me', 'chosen': 'clear kind', 'rejected': 'rude vague'}]
    """
    rows = []
    for i, item in enumerate(checks.sequence("pairs", pairs, "an iterable of (prompt, chosen, rejected) triples")):
        if isinstance(item, Mapping):
            raise TypeError(f"pairs[{i}] must be a (prompt, chosen, rejected) triple, got {type(item).__name__}")
        x, y_pos, y_neg = checks.triple(i, item)
        rows.append({"prompt": x, "chosen": y_pos, "rejected": y_neg})
    return rows


def rows_to_pairs(rows: Sequence[Mapping[str, str]]) -> list[tuple[str, str, str]]:
    """Rows in the TRL preference format back to ``(prompt, chosen, rejected)`` pairs.

    Parameters
    ----------
    rows : iterable of Mapping[str, str]
        Dicts with the keys ``prompt``, ``chosen`` and ``rejected`` (others are ignored).

    Returns
    -------
    list[tuple[str, str, str]]
        One pair per row, in order.

    Raises
    ------
    TypeError
        ``rows`` is not an iterable of dicts (named ``rows[i]``).
    ValueError
        A row lacking a key: ``"rows[0] lacks ['rejected']"``.

    Examples
    --------
    >>> rl.rows_to_pairs([{"prompt": "help me", "chosen": "clear kind", "rejected": "rude vague"}])
    [('help me', 'clear kind', 'rude vague')]
    """
    pairs = []
    for i, row in enumerate(checks.sequence("rows", rows, "an iterable of TRL rows (dicts)")):
        if not isinstance(row, Mapping):
            raise TypeError(f"rows[{i}] must be a dict with prompt, chosen and rejected, got {type(row).__name__}")
        missing = {"prompt", "chosen", "rejected"} - set(row)
        if missing:
            raise ValueError(f"rows[{i}] lacks {sorted(missing)}")
        pairs.append((row["prompt"], row["chosen"], row["rejected"]))
    return pairs


# ------------------------------------------------------------------------- reward model


def bag(y: str | Sequence[str]) -> dict[str, int]:
    """Token counts of a response, in first-seen order.

    Parameters
    ----------
    y : str or sequence of str
        A string (split on white space) or a list of tokens.

    Returns
    -------
    dict[str, int]
        Token -> how many times it occurs.

    Raises
    ------
    TypeError
        ``y`` is neither a string nor a sequence of strings:
        ``"y must be a str or a sequence of token strings, got int"``.

    Examples
    --------
    >>> rl.bag("kind kind clear")
    {'kind': 2, 'clear': 1}
    """
    return bt.bag(checks.tokens("y", y))


def dot(w: Mapping[str, float], b: Mapping[str, int]) -> float:
    """The reward of a bag: ``sum(w[tok] * cnt)``, tokens missing from ``w`` weighing 0.

    Parameters
    ----------
    w : Mapping[str, float]
        The reward model: token -> weight.
    b : Mapping[str, int]
        A bag (:func:`bag`): token -> count.

    Returns
    -------
    float
        The sum, left to right over ``b``.

    Raises
    ------
    TypeError
        ``w`` or ``b`` is not a dict (named): ``"w must be a dict token -> weight, got list"``.
    FloatingPointError
        The result overflows for finite but extreme arguments (logits 1e308 apart, a
        log-ratio past 709): ``"dot overflowed: the result is inf"``.

    Examples
    --------
    >>> rl.dot({"kind": 1.0, "rude": -1.0}, rl.bag("kind kind rude vague"))
    1.0
    """
    checks.weights(w)
    checks.weights(b, "b")
    return checks.finite_result("dot", bt.dot(w, b))


def sigmoid(z: float) -> float:
    """The logistic function ``1 / (1 + exp(-z))``, stable for any input.

    It never evaluates ``exp`` of a large positive number, so it neither overflows nor warns:
    ``sigmoid(-1000.0)`` is ``0.0`` and ``sigmoid(1000.0)`` is ``1.0``.

    Parameters
    ----------
    z : float
        Any real number; infinities allowed.

    Returns
    -------
    float
        In ``[0, 1]``.

    Raises
    ------
    TypeError
        ``z`` is not a real number: ``"z must be a real number, got str"``.
    ValueError
        ``z`` is NaN: ``"z must not be NaN"``.

    Examples
    --------
    >>> rl.sigmoid(0.0), round(rl.sigmoid(2.0), 4), rl.sigmoid(-1000.0)
    (0.5, 0.8808, 0.0)
    """
    return sigmoid_unchecked(checks.not_nan("z", z))


def rm_train_step(w: dict[str, float], x: str, y_pos: str, y_neg: str, lr: float) -> float:
    """One SGD step on the Bradley-Terry loss ``-log sigmoid(R(y+) - R(y-))``; mutates ``w``.

    ``R(y)`` is :func:`dot` of ``w`` and the response's :func:`bag`. The step adds
    ``lr * (1 - sigmoid(margin)) * count`` to each chosen token's weight and subtracts it from
    each rejected token's, creating missing tokens at 0. The prompt ``x`` is not a feature.

    Parameters
    ----------
    w : dict[str, float]
        The reward model, updated in place.
    x : str
        The prompt (unused: the lesson's reward model scores responses only).
    y_pos, y_neg : str or sequence of str
        The chosen and the rejected response.
    lr : float
        Learning rate, > 0.

    Returns
    -------
    float
        The loss before the step.

    Raises
    ------
    TypeError, ValueError
        An argument of the wrong type or out of range, named: ``"lr must be > 0, got 0.0"``.
    FloatingPointError
        The step would leave a weight overflowed (NaN, or ``2**512`` or more in magnitude):
        ``"rm_train_step diverged: weights overflowed (lr=...)"``; ``w`` is left as it was.

    Examples
    --------
    >>> w = {}
    >>> round(rl.rm_train_step(w, "help me", "clear kind", "rude vague", lr=0.1), 4)
    0.6931
    >>> w
    {'clear': 0.05, 'kind': 0.05, 'rude': -0.05, 'vague': -0.05}
    """
    checks.weights(w)
    lr = checks.positive("lr", lr)
    chosen = bt.bag(checks.tokens("y_pos", y_pos))
    rejected = bt.bag(checks.tokens("y_neg", y_neg))
    touched = {tok: w.get(tok, 0.0) for tok in (*chosen, *rejected)}  # the weights the step writes
    loss = bt.rm_train_step(touched, chosen, rejected, lr)
    if checks.overflowed(touched.values()):
        raise FloatingPointError(f"rm_train_step diverged: weights overflowed (lr={lr!r})")
    w.update(touched)
    return loss


def train_rm(
    pairs: Sequence[tuple[str, str, str]] | PreferenceSet,
    epochs: int = 5,
    lr: float = 0.1,
    w: dict[str, float] | None = None,
) -> dict[str, float]:
    """Train a Bradley-Terry reward model: ``epochs`` passes of ``rm_train_step`` over the pairs.

    The pairs are walked in order, every epoch. A new ``w`` starts at 0 for every word of
    ``VOCAB``; a given one is updated in place. The Rust backend runs off the GIL and stops on
    Ctrl-C (an interrupted call changes nothing). Where every response has at most four distinct
    tokens and ``lr * |d|^2 <= 8`` for every pair (``d``: chosen minus rejected token counts; the
    lesson's pairs qualify up to lr = 1) it computes each margin from the weights before the
    previous step plus that step's effect, which halves the loop's latency; the weights then stay
    within a few ulps of the reference's. Otherwise it follows the reference operation for
    operation.

    Parameters
    ----------
    pairs : PreferenceSet or iterable of pairs
        A :class:`PreferenceSet`, or ``(prompt, chosen, rejected)`` triples or TRL rows; at
        least one.
    epochs : int, optional
        Passes over the pairs, >= 0 (default 5).
    lr : float, optional
        Learning rate, > 0 (default 0.1).
    w : dict[str, float], optional
        Weights to start from, updated in place (default: a new dict of zeros).

    Returns
    -------
    dict[str, float]
        ``w``: token -> weight.

    Raises
    ------
    TypeError, ValueError
        An argument of the wrong type or out of range, named (``"epochs must be >= 0, got
        -1"``), or empty ``pairs``: ``"pairs must not be empty"``.
    FloatingPointError
        An epoch leaves a weight overflowed: ``"train_rm diverged in epoch 3: weights
        overflowed (lr=...)"``; ``w`` holds what that epoch left.
    KeyboardInterrupt
        Ctrl-C (Rust backend; ``w`` is left as it was).

    Examples
    --------
    >>> w = rl.train_rm(rl.make_dataset(200, seed=0), epochs=2, lr=0.1)
    >>> {tok: round(v, 4) for tok, v in w.items()}  # doctest: +NORMALIZE_WHITESPACE
    {'clear': 1.0973, 'kind': 1.0421, 'rude': -1.2735, 'short': -1.0278,
     'specific': 1.0913, 'thorough': 1.1054, 'vague': -1.0974, 'wrong': -0.9374}
    """
    epochs = checks.count("epochs", epochs, 0)
    lr = checks.positive("lr", lr)
    if w is None:
        w = {tok: 0.0 for tok in VOCAB}
    else:
        checks.weights(w)
    prefs = _preference_set(pairs)
    if not len(prefs):
        raise ValueError("pairs must not be empty")
    reward_model.train_rm(prefs, epochs, lr, w)
    return w


def pairwise_accuracy(w: Mapping[str, float], pairs: Sequence[tuple[str, str, str]] | PreferenceSet) -> float:
    """The share of pairs the reward model orders strictly right: ``R(chosen) > R(rejected)``.

    A tie counts as wrong: a pair whose two responses score the same (an untrained all-zero
    ``w``, or two responses with the same bag) adds 0, not 1/2, so a reward model that scores
    everything alike has accuracy 0.0. Tokens missing from ``w`` weigh 0.

    Parameters
    ----------
    w : Mapping[str, float]
        The reward model: token -> weight.
    pairs : PreferenceSet or iterable of pairs
        A :class:`PreferenceSet`, or ``(prompt, chosen, rejected)`` triples or TRL rows; at
        least one.

    Returns
    -------
    float
        In ``[0, 1]``.

    Raises
    ------
    TypeError, ValueError
        ``w`` not a dict, a malformed pair (named ``pairs[i]``), or empty ``pairs``:
        ``"pairs must not be empty"``.

    Examples
    --------
    >>> pairs = [("help me", "clear kind", "rude vague"), ("help me", "kind", "vague")]
    >>> rl.pairwise_accuracy({"clear": 1.0, "rude": -1.0}, pairs)  # the second pair ties: wrong
    0.5
    >>> rl.pairwise_accuracy({}, pairs)
    0.0
    """
    checks.weights(w)
    prefs = _preference_set(pairs)
    if not len(prefs):
        raise ValueError("pairs must not be empty")
    return bt.pairwise_accuracy(w, prefs)


# ----------------------------------------------------------------------------- policy


def init_policy() -> dict[str, list[float]]:
    """All-zero logits for every prompt: the uniform pi_SFT.

    Call it twice for a policy and its frozen reference: two calls share no list.

    Returns
    -------
    dict[str, list[float]]
        Prompt -> 8 zeros, in ``PROMPTS`` and ``VOCAB`` order.

    Examples
    --------
    >>> theta, ref = rl.init_policy(), rl.init_policy()
    >>> theta["help me"], theta["help me"] is ref["help me"]
    ([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], False)
    """
    return {x: [0.0] * len(VOCAB) for x in PROMPTS}


def policy_logits(theta: Policy, prompt: str) -> Sequence[float]:
    """The logits row of ``prompt``: the row itself, so updates to it update ``theta``.

    A dict's list, or a view of an array's row.

    Parameters
    ----------
    theta : dict[str, list[float]] or numpy.ndarray
        The policy: prompt -> 8 logits, or a float64 ``[3, 8]`` array in ``PROMPTS`` order.
    prompt : str
        One of ``PROMPTS``.

    Returns
    -------
    list[float] or numpy.ndarray
        The row, not a copy.

    Raises
    ------
    TypeError, ValueError
        A malformed policy (named ``theta``) or an unknown prompt: ``"prompt 'hi' is unknown;
        known prompts: ['help me', 'answer me', 'explain this']"``.

    Examples
    --------
    >>> theta = np.zeros((3, 8))
    >>> rl.policy_logits(theta, "answer me")[0] = 1.0
    >>> float(theta[1, 0])
    1.0
    """
    checks.policy("theta", theta)
    x = checks.prompt_index(prompt)
    return theta[x] if isinstance(theta, np.ndarray) else theta[prompt]


def _array_rows(z: np.ndarray, row_kernel: Callable[[list[float]], list[float]]) -> np.ndarray:
    """A kernel applied to a numpy array's rows (a 1-D array is one row), as the Rust backend
    applies it: the array of real numbers converted to float64, then checked as one flat
    sequence (``z[i]`` counts across rows)."""
    if z.dtype.kind not in "biuf":
        raise TypeError(f"z must be an array of real numbers, got dtype {z.dtype}")
    array = np.ascontiguousarray(z, dtype=np.float64)
    if array.ndim not in (1, 2):
        raise ValueError(f"z must be 1-D or 2-D, got {array.ndim}-D")
    table = array[None, :] if array.ndim == 1 else array
    if table.size == 0:
        raise ValueError("z must not be empty")
    for i, v in enumerate(table.flat):
        if not np.isfinite(v):
            raise ValueError(f"z[{i}] must be finite, got {float(v)!r}")
    return np.array([row_kernel(row) for row in table.tolist()]).reshape(array.shape)


def softmax(z: Sequence[float] | np.ndarray) -> list[float] | np.ndarray:
    """``exp(z - max z)`` normalised: a probability distribution over the entries of ``z``.

    Subtracting the max first makes it exact for logits as large as 1e4 in magnitude. A numpy
    array gets a numpy array back, row-wise for a 2-D array.

    Parameters
    ----------
    z : sequence of float or numpy.ndarray
        Finite logits, at least one; or a 1-D or 2-D array of real numbers.

    Returns
    -------
    list[float] or numpy.ndarray
        Probabilities of the same shape, summing to 1 (per row).

    Raises
    ------
    TypeError
        ``z`` is not a sequence of real numbers: ``"z must be a sequence of floats, got
        str"`` (an array of another dtype: ``"z must be an array of real numbers, got
        dtype ..."``).
    ValueError
        ``z`` is empty, an entry is not finite (``"z[2] must be finite, got inf"``), or an
        array is not 1-D or 2-D.

    Examples
    --------
    >>> [round(p, 4) for p in rl.softmax([0.0, 1.0, 2.0])]
    [0.09, 0.2447, 0.6652]
    >>> rl.softmax(np.zeros((2, 4)))
    array([[0.25, 0.25, 0.25, 0.25],
           [0.25, 0.25, 0.25, 0.25]])
    """
    if isinstance(z, np.ndarray):
        return _array_rows(z, softmax_row)
    return softmax_row(checks.logits("z", z))


def log_softmax(z: Sequence[float] | np.ndarray) -> list[float] | np.ndarray:
    """``z - logsumexp(z)``: the log-probabilities of :func:`softmax`, computed in log space.

    The max is subtracted before exponentiating, so no entry overflows and tiny probabilities
    keep their logarithm. A numpy array gets a numpy array back, row-wise for a 2-D array.

    Parameters
    ----------
    z : sequence of float or numpy.ndarray
        Finite logits, at least one; or a 1-D or 2-D array of real numbers.

    Returns
    -------
    list[float] or numpy.ndarray
        Log-probabilities of the same shape.

    Raises
    ------
    TypeError
        ``z`` is not a sequence (or array) of real numbers (named ``z``).
    ValueError
        ``z`` is empty, an entry is not finite (``"z[2] must be finite, got inf"``), or an
        array is not 1-D or 2-D.
    FloatingPointError
        The result overflows for finite but extreme arguments (logits 1e308 apart, a
        log-ratio past 709): ``"log_softmax overflowed: result[1] is -inf"``.

    Examples
    --------
    >>> [round(v, 4) for v in rl.log_softmax([0.0, 1.0, 2.0])]
    [-2.4076, -1.4076, -0.4076]
    >>> rl.log_softmax(np.array([0.0, 0.0])).round(4)
    array([-0.6931, -0.6931])
    """
    if isinstance(z, np.ndarray):
        return checks.finite_result("log_softmax", _array_rows(z, log_softmax_row))
    return checks.finite_result("log_softmax", log_softmax_row(checks.logits("z", z)))


def kl(p: Sequence[float], q: Sequence[float]) -> float:
    """Exact ``KL(p || q) = sum_i p_i (log p_i - log q_i)``, with ``0 log 0 = 0``.

    Parameters
    ----------
    p, q : sequence of float
        Probability distributions of the same length: entries >= 0 summing to 1 (within 1e-6).

    Returns
    -------
    float
        >= 0, finite.

    Raises
    ------
    TypeError
        ``p`` or ``q`` is not a sequence of real numbers (named).
    ValueError
        ``p`` or ``q`` is not a distribution (``"p must sum to 1 (within 1e-6), got 0.9"``),
        their lengths differ (``"p and q must have the same length, got 2 and 3"``), or
        ``q`` is 0 where ``p`` is not, so that the KL is infinite: ``"q[1] must be > 0 where
        p[1] > 0 (KL(p || q) is infinite), got 0.0"``.
    FloatingPointError
        The result overflows for finite but extreme arguments (logits 1e308 apart, a
        log-ratio past 709): ``"kl overflowed: the result is inf"``.

    Examples
    --------
    >>> round(rl.kl([0.5, 0.5], [0.9, 0.1]), 4)
    0.5108
    >>> round(rl.kl([1.0, 0.0], [0.5, 0.5]), 4)
    0.6931
    """
    p = checks.probabilities("p", p)
    q = checks.probabilities("q", q)
    if len(p) != len(q):
        raise ValueError(f"p and q must have the same length, got {len(p)} and {len(q)}")
    for j, (p_j, q_j) in enumerate(zip(p, q)):
        if q_j == 0.0 and p_j > 0.0:
            raise ValueError(f"q[{j}] must be > 0 where p[{j}] > 0 (KL(p || q) is infinite), got {q_j!r}")
    return checks.finite_result("kl", kl_kernels.kl_unchecked(p, q))


def kl_k1(logp: float, logq: float) -> float:
    """Schulman's k1 estimate of ``KL(p || q)`` from one token ``a ~ p``: ``log p(a) - log q(a)``.

    Unbiased, high-variance, and can be negative.

    Parameters
    ----------
    logp, logq : float
        ``log p(a)`` and ``log q(a)`` of the sampled token; finite.

    Returns
    -------
    float

    Raises
    ------
    TypeError
        An argument that is not a real number (named).
    ValueError
        An argument that is not finite: ``"logp must be finite, got -inf"``.
    FloatingPointError
        The result overflows for finite but extreme arguments (logits 1e308 apart, a
        log-ratio past 709): ``"kl_k1 overflowed: the result is inf"``.

    Examples
    --------
    >>> import math
    >>> round(rl.kl_k1(math.log(0.5), math.log(0.25)), 4)
    0.6931
    """
    return checks.finite_result("kl_k1", kl_kernels.kl_k1(checks.finite("logp", logp), checks.finite("logq", logq)))


def kl_k2(logp: float, logq: float) -> float:
    """Schulman's k2 estimate of ``KL(p || q)`` from one token ``a ~ p``.

    ``(log q(a) - log p(a))^2 / 2``: biased, low-variance, never negative.

    Parameters
    ----------
    logp, logq : float
        ``log p(a)`` and ``log q(a)`` of the sampled token; finite.

    Returns
    -------
    float
        >= 0.

    Raises
    ------
    TypeError
        An argument that is not a real number (named).
    ValueError
        An argument that is not finite: ``"logq must be finite, got nan"``.
    FloatingPointError
        The result overflows for finite but extreme arguments (logits 1e308 apart, a
        log-ratio past 709): ``"kl_k2 overflowed: the result is inf"``.

    Examples
    --------
    >>> import math
    >>> round(rl.kl_k2(math.log(0.5), math.log(0.25)), 4)
    0.2402
    """
    logq = checks.finite("logq", logq)
    return checks.finite_result("kl_k2", kl_kernels.kl_k2(checks.finite("logp", logp), logq))


def kl_k3(logp: float, logq: float) -> float:
    """Schulman's k3 estimate of ``KL(p || q)`` from one token ``a ~ p``: ``(r - 1) - log r``.

    ``r = q(a) / p(a)``. Unbiased, low-variance, never negative (GRPO's KL term).

    Parameters
    ----------
    logp, logq : float
        ``log p(a)`` and ``log q(a)`` of the sampled token; finite.

    Returns
    -------
    float
        >= 0.

    Raises
    ------
    TypeError
        An argument that is not a real number (named).
    ValueError
        An argument that is not finite: ``"logp must be finite, got inf"``.
    FloatingPointError
        The result overflows for finite but extreme arguments (logits 1e308 apart, a
        log-ratio past 709): ``"kl_k3 overflowed: the result is inf"``.

    Examples
    --------
    >>> import math
    >>> round(rl.kl_k3(math.log(0.5), math.log(0.25)), 4)
    0.1931
    """
    logq = checks.finite("logq", logq)
    return checks.finite_result("kl_k3", kl_kernels.kl_k3(checks.finite("logp", logp), logq))


def sample(probs: Sequence[float], rng: random.Random) -> int:
    """Draw an index from ``probs`` by inverse CDF with one ``rng.random()``.

    Returns the first index whose running sum exceeds ``u = rng.random()`` (the last index if
    rounding leaves the total below ``u``), exactly as the lesson's loop.

    Parameters
    ----------
    probs : sequence of float
        A probability distribution: entries >= 0 summing to 1 (within 1e-6).
    rng : random.Random
        Anything with a ``random()`` method; called once.

    Returns
    -------
    int
        An index into ``probs``.

    Raises
    ------
    TypeError
        ``probs`` is not a sequence of real numbers, or ``rng`` has no ``random()``:
        ``"rng must be a random.Random (anything with a random() method), got int"``.
    ValueError
        ``probs`` is not a distribution: ``"probs must be non-negative, got -0.1"``.

    Examples
    --------
    >>> import random
    >>> rl.sample([0.25, 0.25, 0.25, 0.25], random.Random(0))  # u = 0.844...
    3
    """
    return sample_index(checks.probabilities("probs", probs), checks.rng(rng).random())


def expected_score(theta: Policy, w: Mapping[str, float]) -> float:
    """The policy's exact expected RM score: ``sum_x sum_a pi(a|x) R(a) / |PROMPTS|``.

    The lesson's "final RM score" without sampling: ``R(a) = w.get(VOCAB[a], 0.0)`` for each
    one-token response.

    Parameters
    ----------
    theta : dict[str, list[float]] or numpy.ndarray
        The policy: prompt -> 8 logits, or a float64 ``[3, 8]`` array in ``PROMPTS`` order.
    w : Mapping[str, float]
        The reward model.

    Returns
    -------
    float

    Raises
    ------
    TypeError, ValueError
        A malformed policy or ``w``, named: ``"theta has no logits for prompt 'help me'"``,
        ``"theta['help me'][3] must be finite, got nan"``.
    FloatingPointError
        The result overflows for finite but extreme arguments (logits 1e308 apart, a
        log-ratio past 709): ``"expected_score overflowed: the result is inf"``.

    Examples
    --------
    >>> theta = rl.init_policy()
    >>> theta["help me"][1] = 5.0  # "kind"
    >>> round(rl.expected_score(theta, {"kind": 1.0, "rude": -1.0}), 4)
    0.3162
    """
    rows = checks.policy("theta", theta)
    checks.weights(w)
    return checks.finite_result("expected_score", policy_kernels.expected_score(rows, bt.vocab_weights(w)))


def policy_kl(theta: Policy, ref: Policy) -> float:
    """Exact ``KL(pi_theta || pi_ref)``, averaged over ``PROMPTS``, computed in log space.

    Parameters
    ----------
    theta, ref : dict[str, list[float]] or numpy.ndarray
        Two policies: prompt -> 8 logits, or float64 ``[3, 8]`` arrays.

    Returns
    -------
    float
        >= 0.

    Raises
    ------
    TypeError, ValueError
        A malformed policy, named (``theta`` or ``ref``).
    FloatingPointError
        The result overflows for finite but extreme arguments (logits 1e308 apart, a
        log-ratio past 709): ``"policy_kl overflowed: the result is inf"``.

    Examples
    --------
    >>> theta, ref = rl.init_policy(), rl.init_policy()
    >>> rl.policy_kl(theta, ref)
    0.0
    >>> theta["help me"][1] = 5.0
    >>> round(rl.policy_kl(theta, ref), 4)
    0.6027
    """
    rows = checks.policy("theta", theta)
    return checks.finite_result("policy_kl", policy_kernels.policy_kl(rows, checks.policy("ref", ref)))


# ------------------------------------------------------------------------------- PPO


def clipped_surrogate(logits: Sequence[float], a: int, p_old_a: float, advantage: float, eps: float) -> float:
    """PPO's clipped objective for one sampled token: ``min(r A, clip(r, 1 - eps, 1 + eps) A)``.

    ``r = pi(a) / pi_old(a)`` with ``pi = softmax(logits)``; the objective is maximised.

    Parameters
    ----------
    logits : sequence of float
        The current logits of the prompt; finite, at least one.
    a : int
        The sampled token, an index into ``logits``.
    p_old_a : float
        ``pi_old(a)``, the probability the token was sampled with; > 0.
    advantage : float
        ``A``; finite.
    eps : float
        The clip range, > 0 (the lesson's 0.2).

    Returns
    -------
    float

    Raises
    ------
    TypeError, ValueError
        An argument of the wrong type or out of range, named: ``"a must be a token index in
        [0, 8), got 9"``, ``"p_old_a must be > 0, got 0.0"``.
    FloatingPointError
        The result overflows for finite but extreme arguments (logits 1e308 apart, a
        log-ratio past 709): ``"clipped_surrogate overflowed: the result is -inf"``.

    Examples
    --------
    >>> rl.clipped_surrogate([0.0] * 8, 0, 0.125, 1.0, 0.2)  # r = 1
    1.0
    >>> round(rl.clipped_surrogate([1.0] + [0.0] * 7, 0, 0.125, 1.0, 0.2), 4)  # r > 1.2: clipped
    1.2
    """
    logits = checks.logits("logits", logits)
    a = checks.token(a, len(logits))
    p_old_a = checks.positive("p_old_a", p_old_a)
    advantage = checks.finite("advantage", advantage)
    objective = ppo.clipped_surrogate(logits, a, p_old_a, advantage, checks.positive("eps", eps))
    return checks.finite_result("clipped_surrogate", objective)


def clipped_surrogate_grad(
    logits: Sequence[float], a: int, p_old_a: float, advantage: float, eps: float
) -> list[float]:
    """The gradient of :func:`clipped_surrogate` in the logits.

    ``A r (1[j = a] - p_j)`` for each logit ``j``, or all zeros where the objective is clipped
    (the ratio is outside ``[1 - eps, 1 + eps]`` on the side the advantage pushes to).

    Parameters
    ----------
    logits : sequence of float
        The current logits of the prompt; finite, at least one.
    a : int
        The sampled token, an index into ``logits``.
    p_old_a : float
        ``pi_old(a)``; > 0.
    advantage : float
        ``A``; finite.
    eps : float
        The clip range, > 0.

    Returns
    -------
    list[float]
        One entry per logit.

    Raises
    ------
    TypeError, ValueError
        An argument of the wrong type or out of range, named (as :func:`clipped_surrogate`).
    FloatingPointError
        The result overflows for finite but extreme arguments (logits 1e308 apart, a
        log-ratio past 709): ``"clipped_surrogate_grad overflowed: result[0] is inf"``.

    Examples
    --------
    >>> [round(g, 4) for g in rl.clipped_surrogate_grad([0.0] * 4, 0, 0.25, 1.0, 0.2)]
    [0.75, -0.25, -0.25, -0.25]
    >>> rl.clipped_surrogate_grad([1.0, 0.0, 0.0, 0.0], 0, 0.25, 1.0, 0.2)  # clipped
    [0.0, 0.0, 0.0, 0.0]
    """
    logits = checks.logits("logits", logits)
    a = checks.token(a, len(logits))
    p_old_a = checks.positive("p_old_a", p_old_a)
    advantage = checks.finite("advantage", advantage)
    gradient = ppo.clipped_surrogate_grad(logits, a, p_old_a, advantage, checks.positive("eps", eps))
    return checks.finite_result("clipped_surrogate_grad", gradient)


def rlhf_step(
    theta: dict[str, list[float]] | np.ndarray,
    ref: Policy,
    w: Mapping[str, float],
    prompt: str,
    rng: random.Random,
    eps: float = 0.2,
    beta: float = 0.1,
    lr: float = 0.05,
    ppo_epochs: int = 4,
    kl_penalty: str = "full",
    vf_coef: float = 0.0,
    cliprange_value: float = 0.2,
    value: dict[str, float] | list[float] | None = None,
) -> dict[str, float]:
    """One PPO-RLHF step on ``prompt``: sample a token, reward it, clipped-surrogate updates.

    ``reward = R(prompt, token) - beta * penalty``, where the penalty is the exact
    ``KL(pi_theta || pi_ref)`` (``kl_penalty="full"``) or Schulman's estimate ``k1``/``k2``/``k3``
    on the sampled token. Each of ``ppo_epochs`` epochs recomputes the ratio
    ``pi(a) / pi_old(a)``; an epoch whose ratio is outside the clip region on the side the
    advantage pushes to is clipped and changes nothing. Mutates ``theta[prompt]``.

    With ``vf_coef == 0`` (the default) the reward is the return and the advantage (no
    baseline). With ``vf_coef > 0`` a per-prompt value baseline ``value`` (a dict
    prompt -> float or a list in PROMPTS order, updated in place; ``None`` means zeros)
    gives ``advantage = reward - value[prompt]``, and every epoch also takes one SGD step
    of TRL's clipped value loss ``0.5 * max((v - R)^2, (v_clipped - R)^2)`` (docs/METHODS.md
    section 1).

    Parameters
    ----------
    theta : dict[str, list[float]] or numpy.ndarray
        The policy: prompt -> 8 logits (``VOCAB`` order), or a writeable float64 ``[3, 8]``
        array in ``PROMPTS`` order; ``theta[prompt]`` is updated in place.
    ref : dict[str, list[float]] or numpy.ndarray
        The frozen reference policy, a copy (not sharing storage with ``theta``).
    w : Mapping[str, float]
        The reward model (token -> weight); a one-token response scores ``w.get(token, 0.0)``.
    prompt : str
        One of ``PROMPTS``.
    rng : random.Random
        Anything with a ``random()`` method; called once (the sampled token).
    eps : float, optional
        PPO's clip range, > 0 (default 0.2).
    beta : float, optional
        The KL coefficient, >= 0 (default 0.1).
    lr : float, optional
        Learning rate, > 0 (default 0.05).
    ppo_epochs : int, optional
        Updates on the sample, in ``[1, 10000]`` (default 4).
    kl_penalty : str, optional
        ``"full"`` (default), ``"k1"``, ``"k2"`` or ``"k3"``: the KL that enters the reward.
    vf_coef : float, optional
        The value loss's coefficient, >= 0 (default 0.0: no baseline).
    cliprange_value : float, optional
        The value loss's clip range, > 0 (default 0.2).
    value : dict[str, float] or list[float], optional
        The value baseline, updated in place when ``vf_coef > 0`` (default: zeros, not kept).

    Returns
    -------
    dict[str, float]
        The step's record: ``token`` (an index into ``VOCAB``), ``score`` (its RM score), the
        exact ``kl`` before the step, ``reward``, ``clip_frac`` (the share of clipped epochs),
        the ``kl_penalty`` that entered the reward and the ``value_loss`` before the step (0.0
        without a baseline).

    Raises
    ------
    TypeError, ValueError
        An argument of the wrong type or out of range, named in the message: ``"lr must be
        > 0, got 0.0"``, ``"prompt 'hi' is unknown; known prompts: [...]"``, ``"ref must be
        a frozen copy of the policy; it shares storage with theta"``.
    FloatingPointError
        The step would leave a logit or the value overflowed (NaN, or ``2**512`` or more in
        magnitude): ``"rlhf_step diverged: logits overflowed (lr=..., beta=...)"``, or a
        value it returns that is not finite, the first in the record's order:
        ``"rlhf_step diverged: value_loss overflowed (lr=..., beta=...)"``; ``theta`` and
        ``value`` are left as they were.

    Examples
    --------
    >>> import random
    >>> w = rl.train_rm(rl.make_dataset(200, seed=0), epochs=2)
    >>> theta, ref = rl.init_policy(), rl.init_policy()
    >>> record = rl.rlhf_step(theta, ref, w, "help me", random.Random(0))
    >>> record["token"], round(record["score"], 4), round(record["reward"], 4)
    (6, -1.0974, -1.0974)
    >>> [round(v, 4) for v in theta["help me"]]
    [0.0258, 0.0258, 0.0258, 0.0258, 0.0258, 0.0258, -0.1808, 0.0258]
    """
    rows = checks.policy("theta", theta, updated=True)
    ref_rows = checks.policy("ref", ref)
    checks.frozen_copy(theta, ref)
    checks.weights(w)
    x = checks.prompt_index(prompt)
    draw = checks.rng(rng).random
    eps = checks.positive("eps", eps)
    beta = checks.non_negative("beta", beta)
    lr = checks.positive("lr", lr)
    ppo_epochs = checks.count("ppo_epochs", ppo_epochs, 1, MAX_PPO_EPOCHS)
    kl_penalty = checks.option("kl_penalty", kl_penalty, kl_kernels.KL_PENALTIES)
    vf_coef = checks.non_negative("vf_coef", vf_coef)
    cliprange_value = checks.positive("cliprange_value", cliprange_value)
    values = checks.value_baseline(value)
    params = ppo.PpoParams(eps, lr, ppo_epochs, kl_penalty, vf_coef, cliprange_value)  # checked above, in order
    row = rows[x]
    outcome, new_value = ppo.rlhf_step(
        row, log_softmax_row(ref_rows[x]), bt.one_token_scores(w), draw(), beta, params,
        0.0 if values is None else values[x],
    )
    if checks.overflowed(row) or (vf_coef > 0.0 and not abs(new_value) < checks.OVERFLOW):
        raise FloatingPointError(f"rlhf_step diverged: logits overflowed (lr={lr!r}, beta={beta!r})")
    if (key := checks.non_finite(ppo.StepOutcome._fields[1:], outcome[1:])) is not None:  # token is an int
        raise FloatingPointError(f"rlhf_step diverged: {key} overflowed (lr={lr!r}, beta={beta!r})")
    _write_row(theta, x, row)
    if value is not None and vf_coef > 0.0:  # without a baseline, value is never written
        values[x] = new_value
        _write_back_values(value, values)
    return outcome._asdict()


def train_rlhf(
    theta: dict[str, list[float]] | np.ndarray,
    ref: Policy,
    w: Mapping[str, float],
    steps: int,
    seed: int,
    eps: float = 0.2,
    beta: float = 0.1,
    lr: float = 0.05,
    ppo_epochs: int = 4,
    kl_ctl: str = "fixed",
    target: float = KL_TARGET,
    horizon: float = 10000.0,
    kl_threshold: float = KL_THRESHOLD,
    kl_penalty: str = "full",
    vf_coef: float = 0.0,
    cliprange_value: float = 0.2,
    value: dict[str, float] | list[float] | None = None,
) -> dict[str, list]:
    """``steps`` PPO-RLHF steps on one ``random.Random(seed)``; mutates ``theta``.

    Each step draws ``prompt = rng.choice(PROMPTS)`` and calls :func:`rlhf_step` with the
    controller's current beta, then updates the controller with the step's exact KL (one
    sample per step, so ``n_steps = 1``). The lesson's KL monitor watches the running mean of
    the exact KL and warns with :class:`KLWarning` once it passes ``kl_threshold``. The Rust
    backend runs the whole loop off the GIL and stops on Ctrl-C.

    Parameters
    ----------
    theta : dict[str, list[float]] or numpy.ndarray
        The policy: prompt -> 8 logits, or a writeable float64 ``[3, 8]`` array; updated in
        place.
    ref : dict[str, list[float]] or numpy.ndarray
        The frozen reference policy, a copy (not sharing storage with ``theta``).
    w : Mapping[str, float]
        The reward model; one that scores responses by length alone (every ``VOCAB`` weight
        equal) is refused.
    steps : int
        PPO steps, >= 1.
    seed : int
        The seed of the run's ``random.Random``.
    eps, beta, lr, ppo_epochs : optional
        :func:`rlhf_step`'s (defaults 0.2, 0.1, 0.05, 4); ``beta`` is the controller's start.
    kl_ctl : str, optional
        The KL controller: ``"fixed"`` (default), ``"adaptive"`` (TRL's) or ``"doubling"``
        (the lesson's); see :func:`make_kl_controller`.
    target : float, optional
        The controllers' KL target, > 0 (default ``KL_TARGET``); read by ``adaptive`` and
        ``doubling`` only.
    horizon : float, optional
        The adaptive controller's horizon, > 0 (default 10000.0).
    kl_threshold : float, optional
        The KL monitor's threshold, > 0 (default ``KL_THRESHOLD``; ``inf`` never warns).
    kl_penalty, vf_coef, cliprange_value, value : optional
        :func:`rlhf_step`'s; with ``vf_coef > 0`` and ``value=None`` the run keeps its own
        zero-initialised baseline.

    Returns
    -------
    dict[str, list]
        The per-step history, one entry per step (numpy arrays on the Rust backend, lists on
        the reference):

        - ``prompt``: the step's prompt, an index into ``PROMPTS``;
        - ``token``: the sampled token, an index into ``VOCAB``;
        - ``score``: the token's RM score;
        - ``kl``: the exact ``KL(pi_theta || pi_ref)`` on the prompt before the step;
        - ``reward``: ``score - beta * kl_penalty``, what PPO maximised;
        - ``clip_frac``: the share of the step's PPO epochs that were clipped;
        - ``beta``: the KL coefficient the step used (the controller's);
        - ``mean_kl``: the running mean of ``kl`` over the steps so far (the KL monitor);
        - ``kl_penalty``: the KL value that entered the reward (``kl`` for ``"full"``);
        - ``value_loss``: the value loss before the step (0.0 without a baseline).

    Warns
    -----
    KLWarning
        Once, when ``mean_kl`` first passes ``kl_threshold`` (a run that diverges included).

    Raises
    ------
    TypeError, ValueError
        An argument of the wrong type or out of range, named in the message (``"steps must
        be >= 1, got 0"``); a reward model that scores by length alone (``"w scores responses
        by length alone: ..."``); or a history that would not fit in half the machine's
        memory: ``"steps=... needs ... bytes, more than max_memory=... bytes"``.
    FloatingPointError
        A step leaves a logit or the value overflowed: ``"train_rlhf diverged at step 812:
        logits overflowed (lr=..., beta=...)"``, or records a value that is not finite, the
        first in the history's order: ``"train_rlhf diverged at step 3: reward overflowed
        (lr=..., beta=...)"``; ``theta`` and ``value`` then hold that step's update, the
        history does not record it.
    KeyboardInterrupt
        Ctrl-C (Rust backend: ``theta`` is left as it was).

    Examples
    --------
    >>> w = rl.train_rm(rl.make_dataset(200, seed=0), epochs=2)
    >>> theta, ref = rl.init_policy(), rl.init_policy()
    >>> history = rl.train_rlhf(theta, ref, w, steps=200, seed=0)
    >>> list(history)  # doctest: +NORMALIZE_WHITESPACE
    ['prompt', 'token', 'score', 'kl', 'reward', 'clip_frac', 'beta', 'mean_kl',
     'kl_penalty', 'value_loss']
    >>> len(history["kl"]), round(float(history["mean_kl"][-1]), 4)
    (200, 0.3529)
    >>> round(rl.expected_score(theta, w), 4), round(rl.policy_kl(theta, ref), 4)
    (0.915, 0.807)
    """
    rows = checks.policy("theta", theta, updated=True)
    ref_rows = checks.policy("ref", ref)
    checks.frozen_copy(theta, ref)
    checks.weights(w)
    check_not_length_only(bt.vocab_weights(w))
    steps = checks.count("steps", steps, 1)
    seed = checks.integer("seed", seed)
    eps = checks.positive("eps", eps)
    lr = checks.positive("lr", lr)
    ppo_epochs = checks.count("ppo_epochs", ppo_epochs, 1, MAX_PPO_EPOCHS)
    kl_threshold = checks.positive("kl_threshold", kl_threshold)
    controller = make_kl_controller(kl_ctl, beta, target, horizon)
    kl_penalty = checks.option("kl_penalty", kl_penalty, kl_kernels.KL_PENALTIES)
    vf_coef = checks.non_negative("vf_coef", vf_coef)
    cliprange_value = checks.positive("cliprange_value", cliprange_value)
    values = checks.value_baseline(value)
    checks.fits("steps", steps, steps * len(ppo_engine.HISTORY_KEYS) * 8)
    params = ppo.PpoParams(eps, lr, ppo_epochs, kl_penalty, vf_coef, cliprange_value)  # checked above, in order

    baseline = values is not None and vf_coef > 0.0
    run_values = values if baseline else [0.0] * len(PROMPTS)  # the run's own zeros: value is left alone
    try:
        return ppo_engine.train_rlhf(
            rows, ref_rows, bt.one_token_scores(w), steps, seed_key_unchecked(seed), params, controller, run_values,
            kl_threshold,
        )
    finally:  # the caller's theta and value show every update, even a failed run's
        _write_back(theta, rows)
        if baseline:
            _write_back_values(value, run_values)


# ------------------------------------------------------------------------------- DPO


def dpo_step(
    theta: dict[str, list[float]] | np.ndarray,
    ref: Policy,
    x: str,
    y_pos: str,
    y_neg: str,
    beta: float = 0.1,
    lr: float = 0.05,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> float:
    """One SGD step on a DPO loss; mutates ``theta[x]`` and returns the loss before it.

    ``log pi(y)`` is the sum of the tokens' log-probabilities under the prompt's policy, and
    ``h = beta * u`` with ``u = (log pi(y+) - log ref(y+)) - (log pi(y-) - log ref(y-))``.
    ``loss_type`` (TRL's names): ``sigmoid`` ``-log sigmoid(h)`` (the DPO paper; with
    ``label_smoothing`` > 0 the conservative cDPO mix ``(1-ls) softplus(-h) + ls softplus(h)``),
    ``robust`` (the unbiased robust DPO loss), ``ipo`` ``(u - 1/(2 beta))^2`` and ``hinge``
    ``max(0, 1 - h)`` (docs/METHODS.md section 2).

    Parameters
    ----------
    theta : dict[str, list[float]] or numpy.ndarray
        The policy: prompt -> 8 logits, or a writeable float64 ``[3, 8]`` array; ``theta[x]``
        is updated in place.
    ref : dict[str, list[float]] or numpy.ndarray
        The frozen reference policy, a copy.
    x : str
        The prompt, one of ``PROMPTS``.
    y_pos, y_neg : str or sequence of str
        The chosen and the rejected response, every token in ``VOCAB`` (repeats count).
    beta : float, optional
        DPO's temperature, > 0 (default 0.1).
    lr : float, optional
        Learning rate, > 0 (default 0.05).
    loss_type : str, optional
        ``"sigmoid"`` (default), ``"robust"``, ``"ipo"`` or ``"hinge"``.
    label_smoothing : float, optional
        In ``[0, 0.5)``, and non-zero only for ``sigmoid`` and ``robust`` (default 0.0).

    Returns
    -------
    float
        The loss before the step.

    Raises
    ------
    TypeError, ValueError
        An argument of the wrong type or out of range, named: ``"y_pos has token 'new'
        outside VOCAB"``, ``"label_smoothing must be in [0, 0.5), got 0.5"``.
    FloatingPointError
        The step would leave a logit overflowed: ``"dpo_step diverged: logits overflowed
        (lr=..., beta=...)"``, or its loss is not finite: ``"dpo_step diverged: loss
        overflowed (lr=..., beta=...)"``; ``theta`` is left as it was.

    Examples
    --------
    >>> theta, ref = rl.init_policy(), rl.init_policy()
    >>> round(rl.dpo_step(theta, ref, "help me", "clear kind", "rude vague"), 4)
    0.6931
    >>> [round(v, 4) for v in theta["help me"]]
    [0.0025, 0.0025, -0.0025, 0.0, 0.0, 0.0, -0.0025, 0.0]
    """
    rows = checks.policy("theta", theta, updated=True)
    ref_rows = checks.policy("ref", ref)
    checks.frozen_copy(theta, ref)
    row = checks.prompt_index(x, "x")
    chosen = checks.response_tokens("y_pos", y_pos)
    rejected = checks.response_tokens("y_neg", y_neg)
    params = dpo.DpoParams.new(beta, lr, loss_type, label_smoothing)
    logits = rows[row]
    loss = dpo.dpo_update(logits, log_softmax_row(ref_rows[row]), chosen, rejected, params).loss
    if checks.overflowed(logits):
        raise FloatingPointError(f"dpo_step diverged: logits overflowed (lr={params.lr!r}, beta={params.beta!r})")
    if (key := checks.non_finite(("loss",), (loss,))) is not None:
        raise FloatingPointError(f"dpo_step diverged: {key} overflowed (lr={params.lr!r}, beta={params.beta!r})")
    _write_row(theta, row, logits)
    return loss


def train_dpo(
    theta: dict[str, list[float]] | np.ndarray,
    ref: Policy,
    pairs: Sequence[tuple[str, str, str] | Mapping[str, str]],
    epochs: int = 1,
    beta: float = 0.1,
    lr: float = 0.05,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    seed: int | None = None,
) -> dict[str, list]:
    """:func:`dpo_step` over the preference pairs, ``epochs`` times; mutates ``theta``.

    Each epoch walks the pairs in order, or with an int ``seed`` in the order of
    ``order = list(range(n)); rng.shuffle(order)``, one ``rng = random.Random(seed)``
    shuffling a fresh ``list(range(n))`` every epoch. Every pair is checked before the first
    step. The Rust backend runs the whole loop off the GIL and stops on Ctrl-C.

    Parameters
    ----------
    theta : dict[str, list[float]] or numpy.ndarray
        The policy, updated in place.
    ref : dict[str, list[float]] or numpy.ndarray
        The frozen reference policy, a copy.
    pairs : sequence of (str, str, str) or of dict
        ``(prompt, chosen, rejected)`` triples or TRL rows, every prompt in ``PROMPTS`` and
        every token in ``VOCAB``; at least one.
    epochs : int, optional
        Passes over the pairs, >= 1 (default 1).
    beta, lr, loss_type, label_smoothing : optional
        :func:`dpo_step`'s (defaults 0.1, 0.05, ``"sigmoid"``, 0.0).
    seed : int, optional
        Shuffle the pairs every epoch on ``random.Random(seed)`` (default: in order).

    Returns
    -------
    dict[str, list]
        The per-step history in TRL's names, all before each step (numpy arrays on the Rust
        backend, lists on the reference): ``prompt`` (an index into ``PROMPTS``), ``loss``,
        ``rewards/chosen`` (``beta * pos_logratio``), ``rewards/rejected``
        (``beta * neg_logratio``), ``rewards/margins`` (chosen minus rejected) and
        ``rewards/accuracies`` (1.0 where chosen > rejected, else 0.0).

    Raises
    ------
    TypeError, ValueError
        An argument of the wrong type or out of range, named (``"pairs[3] has prompt 'hi',
        unknown; known prompts: [...]"``), or a history that would not fit in half the
        machine's memory: ``"epochs=... needs ... bytes, more than max_memory=... bytes"``.
    FloatingPointError
        A step leaves a logit overflowed: ``"train_dpo diverged at step 41: logits
        overflowed (lr=..., beta=...)"``, or records a value that is not finite, the first in
        the history's order: ``"train_dpo diverged at step 2: rewards/chosen overflowed
        (lr=..., beta=...)"``; ``theta`` then holds that step's update, the history does not
        record it.
    KeyboardInterrupt
        Ctrl-C (Rust backend: ``theta`` is left as it was).

    Examples
    --------
    >>> theta, ref = rl.init_policy(), rl.init_policy()
    >>> history = rl.train_dpo(theta, ref, rl.make_dataset(50, seed=0), epochs=2, seed=0)
    >>> list(history)  # doctest: +NORMALIZE_WHITESPACE
    ['prompt', 'loss', 'rewards/chosen', 'rewards/rejected', 'rewards/margins',
     'rewards/accuracies']
    >>> len(history["loss"]), round(float(history["loss"][-1]), 4)
    (100, 0.6818)
    """
    rows = checks.policy("theta", theta, updated=True)
    ref_rows = checks.policy("ref", ref)
    checks.frozen_copy(theta, ref)
    token_pairs = checks.token_pairs(pairs)
    epochs = checks.count("epochs", epochs, 1)
    params = dpo.DpoParams.new(beta, lr, loss_type, label_smoothing)
    seed = checks.optional(checks.integer)("seed", seed)
    checks.fits("epochs", epochs, epochs * len(token_pairs) * len(dpo_engine.DPO_HISTORY_KEYS) * 8)
    shuffle_seed = None if seed is None else seed_key_unchecked(seed)
    try:
        return dpo_engine.train_dpo(rows, ref_rows, token_pairs, epochs, params, shuffle_seed)
    finally:  # the caller's theta shows every update, even a failed run's
        _write_back(theta, rows)


# ------------------------------------------------------------------------------ GRPO


def grpo_step(
    theta: dict[str, list[float]] | np.ndarray,
    ref: Policy,
    w: Mapping[str, float],
    prompt: str,
    rng: random.Random,
    num_generations: int = 8,
    beta: float = 0.04,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    lr: float = 0.05,
    scale_rewards: str = "group",
    num_iterations: int = 1,
) -> dict:
    """One GRPO step on ``prompt`` (docs/METHODS.md section 3); mutates ``theta[prompt]``.

    Samples a group of ``num_generations`` tokens from the current policy (one
    ``rng.random()`` each), scores them with the RM, and turns the rewards into group-relative
    advantages ``(r - mean) / (std + 1e-4)`` (Bessel-corrected std, TRL's
    ``scale_rewards="group"``) or ``r - mean`` (``"none"``, Dr. GRPO). Then
    ``num_iterations`` gradient steps on the loss
    ``mean_i(-min(ratio_i A_i, clip(ratio_i, 1-epsilon, 1+epsilon_high) A_i) + beta * k3_i)``,
    ``k3`` being Schulman's estimate of ``KL(pi_theta || pi_ref)`` on each sampled token.

    Parameters
    ----------
    theta : dict[str, list[float]] or numpy.ndarray
        The policy; ``theta[prompt]`` is updated in place.
    ref : dict[str, list[float]] or numpy.ndarray
        The frozen reference policy, a copy.
    w : Mapping[str, float]
        The reward model.
    prompt : str
        One of ``PROMPTS``.
    rng : random.Random
        Anything with a ``random()`` method; called ``num_generations`` times.
    num_generations : int, optional
        The group's size, ``G``, in ``[2, 65536]`` (default 8).
    beta : float, optional
        The ``k3`` term's coefficient, >= 0 (default 0.04).
    epsilon : float, optional
        The lower clip range, > 0 (default 0.2).
    epsilon_high : float, optional
        The upper clip range, > 0 (default ``None``: ``epsilon``).
    lr : float, optional
        Learning rate, > 0 (default 0.05).
    scale_rewards : str, optional
        ``"group"`` (default) or ``"none"``.
    num_iterations : int, optional
        Gradient steps on the group, in ``[1, 10000]`` (default 1).

    Returns
    -------
    dict
        ``tokens`` (the group, indices into ``VOCAB``), ``score`` (the mean reward),
        ``reward_std``, the exact ``kl`` before the step, ``clip_frac`` (the share of
        clipped tokens over all iterations) and ``loss`` (at the first iteration).

    Raises
    ------
    TypeError, ValueError
        An argument of the wrong type or out of range, named: ``"num_generations must be
        >= 2, got 1"``.
    FloatingPointError
        The update would leave a logit overflowed: ``"grpo_step diverged: logits overflowed
        (lr=..., beta=...)"``, or a value of the record is not finite, the first in its order:
        ``"grpo_step diverged: reward_std overflowed (lr=..., beta=...)"``; ``theta`` is left
        as it was (the group is still drawn).

    Examples
    --------
    >>> import random
    >>> w = rl.train_rm(rl.make_dataset(200, seed=0), epochs=2)
    >>> theta, ref = rl.init_policy(), rl.init_policy()
    >>> record = rl.grpo_step(theta, ref, w, "help me", random.Random(0))
    >>> record["tokens"], round(record["score"], 4), round(record["reward_std"], 4)
    ([6, 6, 3, 2, 4, 3, 6, 2], -0.8504, 0.7905)
    """
    rows = checks.policy("theta", theta, updated=True)
    ref_rows = checks.policy("ref", ref)
    checks.frozen_copy(theta, ref)
    checks.weights(w)
    x = checks.prompt_index(prompt)
    draw = checks.rng(rng).random
    params = grpo.GrpoParams.new(num_generations, beta, epsilon, epsilon_high, lr, scale_rewards, num_iterations)
    row = rows[x]
    uniforms = [draw() for _ in range(params.num_generations)]
    outcome, tokens = grpo.grpo_update(row, log_softmax_row(ref_rows[x]), bt.vocab_weights(w), uniforms, params)
    if checks.overflowed(row):  # never silent garbage: theta is left as it was
        raise FloatingPointError(f"grpo_step diverged: logits overflowed (lr={params.lr!r}, beta={params.beta!r})")
    if (key := checks.non_finite(grpo.GrpoOutcome._fields, outcome)) is not None:
        raise FloatingPointError(f"grpo_step diverged: {key} overflowed (lr={params.lr!r}, beta={params.beta!r})")
    _write_row(theta, x, row)
    return {"tokens": tokens, **outcome._asdict()}


def train_grpo(
    theta: dict[str, list[float]] | np.ndarray,
    ref: Policy,
    w: Mapping[str, float],
    steps: int,
    seed: int,
    num_generations: int = 8,
    beta: float = 0.04,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    lr: float = 0.05,
    scale_rewards: str = "group",
    num_iterations: int = 1,
    kl_threshold: float = KL_THRESHOLD,
) -> dict[str, list]:
    """``steps`` GRPO steps on one ``random.Random(seed)``; mutates ``theta``.

    Each step draws ``prompt = rng.choice(PROMPTS)`` and calls :func:`grpo_step` on the same
    rng with a fixed ``beta``. The KL monitor warns once with :class:`KLWarning` when the
    running mean of the exact KL passes ``kl_threshold``. The Rust backend runs the whole loop
    off the GIL and stops on Ctrl-C.

    Parameters
    ----------
    theta : dict[str, list[float]] or numpy.ndarray
        The policy, updated in place.
    ref : dict[str, list[float]] or numpy.ndarray
        The frozen reference policy, a copy.
    w : Mapping[str, float]
        The reward model; one that scores responses by length alone is refused.
    steps : int
        GRPO steps (groups), >= 1.
    seed : int
        The seed of the run's ``random.Random``.
    num_generations, beta, epsilon, epsilon_high, lr, scale_rewards, num_iterations : optional
        :func:`grpo_step`'s.
    kl_threshold : float, optional
        The KL monitor's threshold, > 0 (default ``KL_THRESHOLD``).

    Returns
    -------
    dict[str, list]
        The per-step history (numpy arrays on the Rust backend, lists on the reference):
        ``prompt`` (an index into ``PROMPTS``), ``score`` (the group's mean reward),
        ``reward_std``, ``kl`` (exact, before the step), ``clip_frac``, ``loss`` and
        ``mean_kl`` (the running mean of ``kl``).

    Warns
    -----
    KLWarning
        Once, when ``mean_kl`` first passes ``kl_threshold``.

    Raises
    ------
    TypeError, ValueError
        An argument of the wrong type or out of range, named; a reward model that scores by
        length alone (``"w scores responses by length alone: ..."``); or a history that would
        not fit in half the machine's memory: ``"steps=... needs ... bytes, more than
        max_memory=... bytes"``.
    FloatingPointError
        A step leaves a logit overflowed: ``"train_grpo diverged at step 7: logits
        overflowed (lr=..., beta=...)"``, or records a value that is not finite, the first in
        the history's order: ``"train_grpo diverged at step 0: reward_std overflowed (lr=...,
        beta=...)"``; ``theta`` then holds that step's update, the history does not record it.
    KeyboardInterrupt
        Ctrl-C (Rust backend: ``theta`` is left as it was).

    Examples
    --------
    >>> w = rl.train_rm(rl.make_dataset(200, seed=0), epochs=2)
    >>> theta, ref = rl.init_policy(), rl.init_policy()
    >>> history = rl.train_grpo(theta, ref, w, steps=50, seed=0)
    >>> list(history)
    ['prompt', 'score', 'reward_std', 'kl', 'clip_frac', 'loss', 'mean_kl']
    >>> round(float(history["mean_kl"][-1]), 4), round(rl.expected_score(theta, w), 4)
    (0.0013, 0.0987)
    """
    rows = checks.policy("theta", theta, updated=True)
    ref_rows = checks.policy("ref", ref)
    checks.frozen_copy(theta, ref)
    checks.weights(w)
    weights = bt.vocab_weights(w)
    check_not_length_only(weights)
    steps = checks.count("steps", steps, 1)
    seed = checks.integer("seed", seed)
    params = grpo.GrpoParams.new(num_generations, beta, epsilon, epsilon_high, lr, scale_rewards, num_iterations)
    kl_threshold = checks.positive("kl_threshold", kl_threshold)
    # the history's series and the step's sampled tokens, 8 bytes each (nominally)
    checks.fits("steps", steps, steps * (len(grpo_engine.GRPO_HISTORY_KEYS) + params.num_generations) * 8)
    try:
        return grpo_engine.train_grpo(rows, ref_rows, weights, steps, seed_key_unchecked(seed), params, kl_threshold)
    finally:  # the caller's theta shows every update, even a failed run's
        _write_back(theta, rows)


# ------------------------------------------------------------------------- Best-of-N


def best_of_n(
    policy: Policy,
    w: Mapping[str, float],
    n: int,
    samples: int = 0,
    seed: int = 0,
) -> dict:
    """Best-of-N against the reward model: draw ``n`` responses from ``policy``, keep the best.

    Per prompt the law of the kept token is computed exactly (ties go to the first sampled,
    which is ``pi``-proportional within the tie group; docs/METHODS.md section 4). With
    ``samples > 0`` a Monte-Carlo run on ``random.Random(seed)`` checks it: per sample
    ``rng.choice(PROMPTS)``, then ``n`` draws. The Rust backend samples off the GIL and stops
    on Ctrl-C, even inside one draw of a huge ``n``.

    Parameters
    ----------
    policy : dict[str, list[float]] or numpy.ndarray
        The policy to sample from (usually ``ref``, the SFT policy).
    w : Mapping[str, float]
        The reward model; one that scores responses by length alone is refused.
    n : int
        Samples per response, in ``[1, 10**9]``.
    samples : int, optional
        Monte-Carlo samples, >= 0 (default 0: the exact statistics only).
    seed : int, optional
        The Monte-Carlo run's seed (default 0).

    Returns
    -------
    dict
        ``expected_score`` (mean over prompts of ``sum_a P_bon(a) R(a)``), ``kl_analytic``
        (``log n - (n - 1) / n``, the continuous-limit value and an upper bound here),
        ``kl_exact`` (mean over prompts of ``KL(P_bon || pi)``), ``distribution`` (prompt ->
        the 8 probabilities of ``P_bon``) and ``sampled_score`` (the mean kept score of the
        Monte-Carlo run, ``None`` without samples).

    Raises
    ------
    TypeError, ValueError
        An argument of the wrong type or out of range, named (``"n must be >= 1, got 0"``),
        or a reward model that scores by length alone: ``"w scores responses by length
        alone: ..."``.
    KeyboardInterrupt
        Ctrl-C during the Monte-Carlo run (Rust backend).

    Examples
    --------
    >>> w = rl.train_rm(rl.make_dataset(200, seed=0), epochs=2)
    >>> out = rl.best_of_n(rl.init_policy(), w, 4, samples=1000, seed=0)
    >>> names = ("expected_score", "kl_analytic", "kl_exact", "sampled_score")
    >>> {k: round(out[k], 4) for k in names}
    {'expected_score': 0.9654, 'kl_analytic': 0.6363, 'kl_exact': 0.6246, 'sampled_score': 0.9447}
    """
    rows = checks.policy("policy", policy)
    checks.weights(w)
    weights = bt.vocab_weights(w)
    check_not_length_only(weights)
    n = checks.count("n", n, 1, MAX_N)
    samples = checks.count("samples", samples, 0)
    seed = checks.integer("seed", seed)
    outcome = bon_engine.best_of_n(rows, weights, n, samples, seed_key_unchecked(seed))
    result = {
        "expected_score": outcome.expected_score,
        "kl_analytic": outcome.kl_analytic,
        "kl_exact": outcome.kl_exact,
        "distribution": dict(zip(PROMPTS, outcome.p_bon)),
        "sampled_score": outcome.sampled_score,
    }
    return checks.finite_result("best_of_n", result)

