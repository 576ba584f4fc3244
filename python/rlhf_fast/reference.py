"""The lesson's toy RLHF pipeline in plain, readable Python: the oracle for every test.

Synthetic preferences -> Bradley-Terry reward model -> PPO against the reward model with
a KL penalty to a frozen reference, and the methods the lesson sets against it: DPO (and
its IPO / hinge / robust / label-smoothed variants), GRPO and Best-of-N, exactly as
docs/METHODS.md specifies them. Every function here has a Rust
twin in ``rlhf_fast`` that must return the same numbers for the same inputs and seeds
(SPEC sections 2 and 3).

Floats are summed left to right in explicit loops, never with ``sum()``: Python 3.12
changed what ``sum()`` of floats returns, and the compiled core follows these loops
operation for operation.
"""

from __future__ import annotations

import math
import numbers
import random
import warnings
from collections.abc import Iterable, Mapping, MutableMapping, Sequence

__all__ = [
    "PROMPTS",
    "GOOD_WORDS",
    "BAD_WORDS",
    "VOCAB",
    "KLWarning",
    "seed_key",
    "make_pair",
    "make_dataset",
    "PreferenceSet",
    "pairs_to_rows",
    "rows_to_pairs",
    "bag",
    "dot",
    "sigmoid",
    "rm_train_step",
    "train_rm",
    "pairwise_accuracy",
    "init_policy",
    "policy_logits",
    "softmax",
    "log_softmax",
    "kl",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "sample",
    "clipped_surrogate",
    "clipped_surrogate_grad",
    "rlhf_step",
    "train_rlhf",
    "FixedKLController",
    "AdaptiveKLController",
    "DoublingKLController",
    "make_kl_controller",
    "dpo_step",
    "train_dpo",
    "grpo_step",
    "train_grpo",
    "best_of_n",
    "expected_score",
    "policy_kl",
]

# Sorted tuples, not the lesson's sets: a set of strings iterates in a hash-randomised
# order, so the lesson's data differs from one process to the next (SPEC section 2).
PROMPTS = ("help me", "answer me", "explain this")
GOOD_WORDS = ("clear", "kind", "specific", "thorough")
BAD_WORDS = ("rude", "short", "vague", "wrong")
VOCAB = tuple(sorted(GOOD_WORDS + BAD_WORDS))
_TOKEN_INDEX = {tok: i for i, tok in enumerate(VOCAB)}


class KLWarning(UserWarning):
    """The running mean KL(pi_theta || pi_ref) passed the monitor's threshold."""


# --------------------------------------------------------------------------- validation


def _finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def _positive(name: str, value: float) -> float:
    value = _finite(name, value)
    if value <= 0.0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def _non_negative(name: str, value: float) -> float:
    value = _finite(name, value)
    if value < 0.0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def _count(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def _seed(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"seed must be an int, got {type(value).__name__}")
    return int(value)


def _sequence(name: str, values: Iterable, what: str = "a sequence of floats") -> list:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be {what}, got {type(values).__name__}")
    return list(values)


def _logits(name: str, row: Sequence[float], size: int | None = None) -> list[float]:
    row = [_finite(f"{name}[{i}]", v) for i, v in enumerate(_sequence(name, row))]
    if not row:
        raise ValueError(f"{name} must not be empty")
    if size is not None and len(row) != size:
        raise ValueError(f"{name} must have {size} entries, got {len(row)}")
    return row


def _probabilities(name: str, probs: Sequence[float]) -> list[float]:
    probs = _logits(name, probs)
    total = 0.0
    for p in probs:
        if p < 0.0:
            raise ValueError(f"{name} must be non-negative, got {p!r}")
        total += p
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"{name} must sum to 1 (within 1e-6), got {total!r}")
    return probs


def _policy(name: str, policy: Mapping[str, Sequence[float]], updated: bool = False) -> None:
    if not isinstance(policy, Mapping):
        raise TypeError(f"{name} must be a dict prompt -> list of logits, got {type(policy).__name__}")
    for prompt in PROMPTS:
        if prompt not in policy:
            raise ValueError(f"{name} has no logits for prompt {prompt!r}")
        _logits(f"{name}[{prompt!r}]", policy[prompt], len(VOCAB))
        if updated and not isinstance(policy[prompt], list):
            raise TypeError(
                f"{name}[{prompt!r}] must be a list (it is updated in place), got {type(policy[prompt]).__name__}"
            )


def _frozen_copy(theta: Mapping[str, Sequence[float]], ref: Mapping[str, Sequence[float]]) -> None:
    """The SPEC's rule: ``ref`` never shares storage with ``theta``."""
    if ref is theta or any(ref[x] is theta[x] for x in PROMPTS):
        raise ValueError("ref must be a frozen copy of the policy; it shares storage with theta")


def _rng(rng: random.Random) -> random.Random:
    if not callable(getattr(rng, "random", None)):
        raise TypeError(f"rng must be a random.Random (anything with a random() method), got {type(rng).__name__}")
    return rng


def _tokens(name: str, y: str | Sequence[str]) -> list[str]:
    if isinstance(y, str):
        return y.split()
    return _sequence(name, y, "a str or a sequence of token strings")


def _token(a: int, size: int) -> int:
    if isinstance(a, bool) or not isinstance(a, numbers.Integral):
        raise TypeError(f"a must be an int token index, got {type(a).__name__}")
    a = int(a)
    if not 0 <= a < size:
        raise ValueError(f"a must be a token index in [0, {size}), got {a}")
    return a


def _prompt(prompt: str, policy: Mapping[str, Sequence[float]]) -> str:
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    if prompt not in PROMPTS or prompt not in policy:
        raise ValueError(f"prompt {prompt!r} is unknown; known prompts: {list(PROMPTS)}")
    return prompt


def _weights(w: Mapping[str, float], name: str = "w") -> None:
    if not isinstance(w, Mapping):
        raise TypeError(f"{name} must be a dict token -> weight, got {type(w).__name__}")
    for tok, value in w.items():
        _finite(f"{name}[{tok!r}]", value)


def _scores_by_content(w: Mapping[str, float]) -> None:
    """The lesson's "Ship It" refusal: a reward model that cannot tell one word from another.

    If every word of ``VOCAB`` weighs the same (an all-zero or empty ``w`` included), every
    one-token response gets the same reward: the score depends on the response's length
    alone, and optimising a policy against it is pointless (PPO's and GRPO's advantages are
    all equal or zero, Best-of-N keeps the first sample). Refused by the training loops and
    ``best_of_n``; the single-step functions take any ``w`` (they are drop-in).
    """
    first = float(w.get(VOCAB[0], 0.0))
    if all(float(w.get(tok, 0.0)) == first for tok in VOCAB):
        raise ValueError(
            f"w scores responses by length alone: every word of VOCAB weighs {first!r}, so every "
            "one-token response gets the same reward and there is nothing to optimise "
            "(train the reward model first)"
        )


def _option(name: str, value: str, options: tuple[str, ...]) -> str:
    """One of a fixed set of strings: TypeError for a non-str, ValueError for an unknown one."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, one of {options}, got {type(value).__name__}")
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def _optional_positive(name: str, value: float | None) -> float | None:
    return None if value is None else _positive(name, value)


def _optional_seed(value: int | None) -> int | None:
    return None if value is None else _seed(value)


# --------------------------------------------------------------------------------- data


def make_pair(rng: random.Random) -> tuple[str, str, str]:
    """One synthetic preference ``(prompt, chosen, rejected)``: two good words beat two bad ones."""
    if not callable(getattr(rng, "choice", None)):
        raise TypeError(f"rng must be a random.Random, got {type(rng).__name__}")
    x = rng.choice(PROMPTS)
    y_good = rng.choice(GOOD_WORDS) + " " + rng.choice(GOOD_WORDS)
    y_bad = rng.choice(BAD_WORDS) + " " + rng.choice(BAD_WORDS)
    return (x, y_good, y_bad)


def make_dataset(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """``n`` calls of :func:`make_pair` on one ``random.Random(seed)``."""
    _count("n", n, 0)
    rng = random.Random(_seed(seed))
    return [make_pair(rng) for _ in range(n)]


def seed_key(seed: int) -> list[int]:
    """The key ``random.Random(seed)`` seeds MT19937 with (``init_by_array``): ``abs(seed)``
    in 32-bit little-endian words, ``[0]`` for 0 (SPEC section 3)."""
    magnitude = abs(_seed(seed))
    key = []
    while magnitude:
        key.append(magnitude & 0xFFFFFFFF)
        magnitude >>= 32
    return key or [0]


def pairs_to_rows(pairs: Iterable[tuple[str, str, str]]) -> list[dict[str, str]]:
    """Pairs as ``{"prompt", "chosen", "rejected"}`` rows (the TRL / HF datasets format)."""
    return [{"prompt": x, "chosen": y_pos, "rejected": y_neg} for x, y_pos, y_neg in pairs]


def rows_to_pairs(rows: Iterable[Mapping[str, str]]) -> list[tuple[str, str, str]]:
    """Rows in the TRL preference format back to ``(prompt, chosen, rejected)`` pairs."""
    pairs = []
    for i, row in enumerate(rows):
        missing = {"prompt", "chosen", "rejected"} - set(row)
        if missing:
            raise ValueError(f"rows[{i}] lacks {sorted(missing)}")
        pairs.append((row["prompt"], row["chosen"], row["rejected"]))
    return pairs


class PreferenceSet:
    """A preference set tokenised once: each pair's prompt and its responses as bags.

    ``PreferenceSet(pairs)`` takes ``(prompt, chosen, rejected)`` triples or TRL rows;
    ``PreferenceSet.make_dataset(n, seed)`` is ``PreferenceSet(make_dataset(n, seed))``.
    :func:`train_rm` and :func:`pairwise_accuracy` take it in place of pairs.
    """

    def __init__(self, pairs: Iterable[tuple[str, str, str] | Mapping[str, str]]):
        self.prompts: list[str] = []
        self.bags: list[tuple[dict[str, int], dict[str, int]]] = []
        for i, item in enumerate(_sequence("pairs", pairs, "an iterable of (prompt, chosen, rejected)")):
            x, y_pos, y_neg = _triple(i, item)
            self.prompts.append(x)
            self.bags.append((_bag(_tokens("chosen", y_pos)), _bag(_tokens("rejected", y_neg))))

    @classmethod
    def make_dataset(cls, n: int, seed: int = 0) -> PreferenceSet:
        return cls(make_dataset(n, seed))

    def __len__(self) -> int:
        return len(self.bags)

    @property
    def vocab(self) -> list[str]:
        """``VOCAB``, then every other token in first-seen order."""
        seen = dict.fromkeys(VOCAB)
        for b_pos, b_neg in self.bags:
            seen.update(dict.fromkeys(b_pos))
            seen.update(dict.fromkeys(b_neg))
        return list(seen)

    def to_pairs(self) -> list[tuple[str, str, str]]:
        """The pairs, each response rebuilt from its bag (tokens grouped in first-seen order)."""

        def text(b: dict[str, int]) -> str:
            return " ".join(tok for tok, cnt in b.items() for _ in range(cnt))

        return [(x, text(b_pos), text(b_neg)) for x, (b_pos, b_neg) in zip(self.prompts, self.bags)]


def _triple(i: int, item: tuple[str, str, str] | Mapping[str, str]) -> tuple[str, str, str]:
    if isinstance(item, Mapping):
        missing = {"prompt", "chosen", "rejected"} - set(item)
        if missing:
            raise ValueError(f"pairs[{i}] lacks {sorted(missing)}")
        return item["prompt"], item["chosen"], item["rejected"]
    if isinstance(item, (str, bytes)) or not isinstance(item, Sequence):
        raise TypeError(f"pairs[{i}] must be a (prompt, chosen, rejected) triple or row, got {type(item).__name__}")
    if len(item) != 3:
        raise ValueError(f"pairs[{i}] must be a (prompt, chosen, rejected) triple, got {len(item)} items")
    return item[0], item[1], item[2]


def _bags(pairs: Sequence[tuple[str, str, str]] | PreferenceSet) -> list[tuple[dict[str, int], dict[str, int]]]:
    if isinstance(pairs, PreferenceSet):
        return pairs.bags
    return PreferenceSet(pairs).bags


# ------------------------------------------------------------------------- reward model


def bag(y: str | Sequence[str]) -> dict[str, int]:
    """Token counts of a response (a string split on white space, or a list of tokens)."""
    return _bag(_tokens("y", y))


def _bag(tokens: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for tok in tokens:
        counts[tok] = counts.get(tok, 0) + 1
    return counts


def dot(w: Mapping[str, float], b: Mapping[str, int]) -> float:
    """``sum(w[tok] * cnt)`` over the bag, tokens missing from ``w`` weighing 0."""
    _weights(w)
    _weights(b, "b")
    return _dot(w, b)


def _dot(w: Mapping[str, float], b: Mapping[str, int]) -> float:
    total = 0.0
    for tok, cnt in b.items():
        total += w.get(tok, 0.0) * cnt
    return total


def sigmoid(z: float) -> float:
    """Logistic function, stable for any input (never evaluates ``exp`` of a large positive)."""
    if isinstance(z, bool) or not isinstance(z, numbers.Real):
        raise TypeError(f"z must be a real number, got {type(z).__name__}")
    if math.isnan(z):
        raise ValueError("z must not be NaN")
    return _sigmoid(float(z))


def _sigmoid(z: float) -> float:
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _softplus(z: float) -> float:
    """``log(1 + exp(z))`` without overflow: the loss ``-log sigmoid(m)`` is ``softplus(-m)``."""
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


def rm_train_step(w: dict[str, float], x: str, y_pos: str, y_neg: str, lr: float) -> float:
    """One SGD step on the Bradley-Terry loss ``-log sigmoid(R(y+) - R(y-))``.

    Mutates ``w`` and returns the loss before the step. The prompt ``x`` is not a feature.
    """
    _weights(w)
    return _rm_train_step(w, _bag(_tokens("y_pos", y_pos)), _bag(_tokens("y_neg", y_neg)), _positive("lr", lr))


def _rm_train_step(w: dict[str, float], b_pos: dict[str, int], b_neg: dict[str, int], lr: float) -> float:
    margin = _dot(w, b_pos) - _dot(w, b_neg)
    loss = _softplus(-margin)
    grad = _sigmoid(-margin)  # 1 - sigmoid(margin), without the cancellation
    for tok, cnt in b_pos.items():
        w[tok] = w.get(tok, 0.0) + lr * grad * cnt
    for tok, cnt in b_neg.items():
        w[tok] = w.get(tok, 0.0) - lr * grad * cnt
    return loss


def train_rm(
    pairs: Sequence[tuple[str, str, str]] | PreferenceSet,
    epochs: int = 5,
    lr: float = 0.1,
    w: dict[str, float] | None = None,
) -> dict[str, float]:
    """Walk the pairs in order ``epochs`` times with :func:`rm_train_step`; return ``w``.

    A new ``w`` starts at 0 for every word of ``VOCAB``; a given one is updated in place.
    """
    _count("epochs", epochs, 0)
    lr = _positive("lr", lr)
    if w is None:
        w = {tok: 0.0 for tok in VOCAB}
    else:
        _weights(w)
    bags = _bags(pairs)
    for _ in range(epochs):
        for b_pos, b_neg in bags:
            _rm_train_step(w, b_pos, b_neg, lr)
    return w


def pairwise_accuracy(w: Mapping[str, float], pairs: Sequence[tuple[str, str, str]] | PreferenceSet) -> float:
    """Share of pairs the reward model orders strictly right: ``R(y+) > R(y-)``."""
    _weights(w)
    bags = _bags(pairs)
    if not bags:
        raise ValueError("pairs must not be empty")
    right = 0
    for b_pos, b_neg in bags:
        if _dot(w, b_pos) > _dot(w, b_neg):
            right += 1
    return right / len(bags)


# ----------------------------------------------------------------------------- policy


def init_policy() -> dict[str, list[float]]:
    """All-zero logits for every prompt: the uniform pi_SFT. Call it twice for a frozen ``ref``."""
    return {x: [0.0] * len(VOCAB) for x in PROMPTS}


def policy_logits(theta: Mapping[str, Sequence[float]], prompt: str) -> Sequence[float]:
    """The logits row of ``prompt`` (the row itself, so updates to it update ``theta``)."""
    return theta[_prompt(prompt, theta)]


def softmax(z: Sequence[float]) -> list[float]:
    """``exp(z - max z)`` normalised: exact for logits as large as 1e4 in magnitude."""
    z = _logits("z", z)
    return _softmax(z)


def _softmax(z: Sequence[float]) -> list[float]:
    m = max(z)
    e = [math.exp(v - m) for v in z]
    total = 0.0
    for v in e:
        total += v
    return [v / total for v in e]


def log_softmax(z: Sequence[float]) -> list[float]:
    """``z - logsumexp(z)``, with the max subtracted before exponentiating."""
    return _log_softmax(_logits("z", z))


def _log_softmax(z: Sequence[float]) -> list[float]:
    m = max(z)
    shifted = [v - m for v in z]
    total = 0.0
    for v in shifted:
        total += math.exp(v)
    lse = math.log(total)
    return [v - lse for v in shifted]


def kl(p: Sequence[float], q: Sequence[float]) -> float:
    """Exact ``KL(p || q) = sum p_i (log p_i - log q_i)`` with ``0 log 0 = 0``."""
    p = _probabilities("p", p)
    q = _probabilities("q", q)
    if len(p) != len(q):
        raise ValueError(f"p and q must have the same length, got {len(p)} and {len(q)}")
    return _kl(p, q)


def _kl(p: Sequence[float], q: Sequence[float]) -> float:
    total = 0.0
    for pi, qi in zip(p, q):
        if pi > 0.0:
            total += pi * (math.log(pi) - math.log(qi)) if qi > 0.0 else math.inf
    return total


def _kl_to_log(p: Sequence[float], log_q: Sequence[float]) -> float:
    """``KL(p || q)`` from ``log q``: finite even where ``q`` underflows to 0 (logits of 1e4)."""
    total = 0.0
    for pi, log_qi in zip(p, log_q):
        if pi > 0.0:
            total += pi * (math.log(pi) - log_qi)
    return total


def policy_kl(theta: Mapping[str, Sequence[float]], ref: Mapping[str, Sequence[float]]) -> float:
    """Exact ``KL(pi_theta || pi_ref)`` averaged over ``PROMPTS``, in log space."""
    _policy("theta", theta)
    _policy("ref", ref)
    total = 0.0
    for x in PROMPTS:
        total += _kl_to_log(_softmax(theta[x]), _log_softmax(ref[x]))
    return total / len(PROMPTS)


# Schulman's sampled KL estimators, for a token drawn from the policy: with
# log r = log q(a) - log p(a), k1 = -log r, k2 = (log r)^2 / 2, k3 = (r - 1) - log r.


def kl_k1(logp: float, logq: float) -> float:
    """Unbiased, high-variance, can be negative: ``log p(a) - log q(a)``."""
    return _kl_k1(_finite("logp", logp), _finite("logq", logq))


def kl_k2(logp: float, logq: float) -> float:
    """Biased, low-variance, never negative: ``(log q(a) - log p(a))^2 / 2``."""
    logq = _finite("logq", logq)
    return _kl_k2(_finite("logp", logp), logq)


def kl_k3(logp: float, logq: float) -> float:
    """Unbiased, low-variance, never negative: ``(r - 1) - log r`` with ``r = q(a) / p(a)``."""
    logq = _finite("logq", logq)
    return _kl_k3(_finite("logp", logp), logq)


def _kl_k1(logp: float, logq: float) -> float:
    return logp - logq


def _kl_k2(logp: float, logq: float) -> float:
    log_ratio = logq - logp
    return 0.5 * log_ratio * log_ratio


def _kl_k3(logp: float, logq: float) -> float:
    log_ratio = logq - logp
    if log_ratio > 709.0:  # e^710 overflows: the estimate is infinite
        return math.inf
    return math.expm1(log_ratio) - log_ratio


_KL_ESTIMATORS = {"k1": _kl_k1, "k2": _kl_k2, "k3": _kl_k3}
KL_PENALTIES = ("full", "k1", "k2", "k3")


def sample(probs: Sequence[float], rng: random.Random) -> int:
    """Inverse-CDF draw: the first index whose running sum exceeds ``rng.random()``."""
    return _sample(_probabilities("probs", probs), _rng(rng).random())


def _sample(probs: Sequence[float], u: float) -> int:
    running = 0.0
    for i, p in enumerate(probs):
        running += p
        if running > u:
            return i
    return len(probs) - 1  # rounding left the running sum at or below u


# ------------------------------------------------------------------------------- PPO


def _is_clipped(advantage: float, ratio: float, eps: float) -> bool:
    """Whether ``min(ratio A, clip(ratio, 1-eps, 1+eps) A)`` is flat in the ratio here."""
    return (advantage >= 0.0 and ratio > 1.0 + eps) or (advantage < 0.0 and ratio < 1.0 - eps)


def clipped_surrogate(logits: Sequence[float], a: int, p_old_a: float, advantage: float, eps: float) -> float:
    """PPO's objective for one sampled token: ``min(r A, clip(r, 1-eps, 1+eps) A)``, ``r = pi(a) / pi_old(a)``."""
    logits = _logits("logits", logits)
    a = _token(a, len(logits))
    ratio = _softmax(logits)[a] / _positive("p_old_a", p_old_a)
    advantage = _finite("advantage", advantage)
    eps = _positive("eps", eps)
    clipped_ratio = min(max(ratio, 1.0 - eps), 1.0 + eps)
    return min(ratio * advantage, clipped_ratio * advantage)


def clipped_surrogate_grad(
    logits: Sequence[float], a: int, p_old_a: float, advantage: float, eps: float
) -> list[float]:
    """Gradient of :func:`clipped_surrogate` in the logits: ``A r (1[j = a] - p_j)``, or 0 where clipped."""
    logits = _logits("logits", logits)
    a = _token(a, len(logits))
    p = _softmax(logits)
    ratio = p[a] / _positive("p_old_a", p_old_a)
    advantage = _finite("advantage", advantage)
    if _is_clipped(advantage, ratio, _positive("eps", eps)):
        return [0.0] * len(logits)
    scale = advantage * ratio
    return [scale * ((1.0 if j == a else 0.0) - p[j]) for j in range(len(logits))]


def _value_baseline(value) -> None:
    """``None``, a dict prompt -> float, or a list of ``len(PROMPTS)`` floats in PROMPTS order."""
    if value is None:
        return
    if isinstance(value, Mapping):
        if not isinstance(value, MutableMapping):
            raise TypeError(
                f"value must be a mutable dict prompt -> float (it is updated in place), got {type(value).__name__}"
            )
        for x in PROMPTS:
            if x not in value:
                raise ValueError(f"value has no baseline for prompt {x!r}")
            _finite(f"value[{x!r}]", value[x])
        return
    if isinstance(value, (str, bytes)) or not (hasattr(value, "__len__") and hasattr(value, "__setitem__")):
        raise TypeError(
            f"value must be a dict prompt -> float or a list of {len(PROMPTS)} floats in PROMPTS order, "
            f"got {type(value).__name__}"
        )
    if len(value) != len(PROMPTS):
        raise ValueError(f"value must have {len(PROMPTS)} entries (one per prompt), got {len(value)}")
    for i in range(len(PROMPTS)):
        _finite(f"value[{i}]", value[i])


def _value_key(value, prompt: str):
    """Where ``prompt``'s baseline lives in ``value``: the prompt itself, or its index in PROMPTS."""
    return prompt if isinstance(value, Mapping) else PROMPTS.index(prompt)


def rlhf_step(
    theta: dict[str, list[float]],
    ref: Mapping[str, Sequence[float]],
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
    section 1). The record holds ``token``, ``score``, the exact ``kl``, ``reward``,
    ``clip_frac``, the ``kl_penalty`` that entered the reward and the ``value_loss`` before
    the step (0.0 without a baseline).
    """
    _policy("theta", theta, updated=True)
    _policy("ref", ref)
    _frozen_copy(theta, ref)
    _weights(w)
    _prompt(prompt, theta)
    random_ = _rng(rng).random
    eps = _positive("eps", eps)
    beta = _non_negative("beta", beta)
    lr = _positive("lr", lr)
    ppo_epochs = _count("ppo_epochs", ppo_epochs, 1)
    kl_penalty = _option("kl_penalty", kl_penalty, KL_PENALTIES)
    vf_coef = _non_negative("vf_coef", vf_coef)
    cliprange_value = _positive("cliprange_value", cliprange_value)
    _value_baseline(value)
    if value is None:
        value = {x: 0.0 for x in PROMPTS}
    return _rlhf_step(
        theta, ref, w, prompt, random_, eps, beta, lr, ppo_epochs, kl_penalty, vf_coef, cliprange_value, value
    )


def _rlhf_step(
    theta, ref, w, prompt, random_, eps, beta, lr, ppo_epochs,
    kl_penalty="full", vf_coef=0.0, cliprange_value=0.2, value=None,
):
    logits = theta[prompt]
    p_old = _softmax(logits)
    a = _sample(p_old, random_())
    logq = _log_softmax(ref[prompt])
    kl_t = _kl_to_log(p_old, logq)  # the monitor: always the exact KL
    score = dot(w, bag([VOCAB[a]]))
    if kl_penalty == "full":
        penalty = kl_t
    else:  # Schulman's estimator on the sampled token, log p_old(a) from the softmax value
        penalty = _KL_ESTIMATORS[kl_penalty](math.log(p_old[a]), logq[a])
    reward = score - beta * penalty  # the KL enters the reward only
    baseline = vf_coef > 0.0
    if baseline:
        key = _value_key(value, prompt)
        v_old = float(value[key])
        advantage = reward - v_old
        ret = reward
    else:
        advantage = reward  # the reward is the return; no baseline
    value_loss = 0.0
    clipped = 0
    for epoch in range(ppo_epochs):
        p = _softmax(logits)
        ratio = p[a] / p_old[a]
        if _is_clipped(advantage, ratio, eps):
            clipped += 1  # the clipped surrogate is flat here: no gradient, no update
        else:
            step = lr * advantage * ratio
            for j in range(len(logits)):
                logits[j] += step * ((1.0 if j == a else 0.0) - p[j])
        if baseline:  # TRL's clipped value loss 0.5 * max(unclipped, clipped), one SGD step
            v = float(value[key])
            v_clipped = v_old + min(max(v - v_old, -cliprange_value), cliprange_value)
            d_unclipped = v - ret
            d_clipped = v_clipped - ret
            loss_unclipped = d_unclipped * d_unclipped
            loss_clipped = d_clipped * d_clipped
            if epoch == 0:
                value_loss = 0.5 * max(loss_unclipped, loss_clipped)
            if loss_unclipped >= loss_clipped:
                grad = v - ret  # d(0.5 * (v - ret)^2) / dv
            elif -cliprange_value < v - v_old < cliprange_value:
                # the clamp is inactive: v_clipped is v up to the rounding of v_old + (v - v_old),
                # which can make the clipped loss the larger by an ulp; its slope is still 1
                grad = v_clipped - ret
            else:
                grad = 0.0  # the clamped branch is flat in v
            value[key] = v - lr * vf_coef * grad
    return {
        "token": a,
        "score": score,
        "kl": kl_t,
        "reward": reward,
        "clip_frac": clipped / ppo_epochs,
        "kl_penalty": penalty,
        "value_loss": value_loss,
    }


# ------------------------------------------------------------------- KL coefficient control


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current: float, n_steps: int) -> None:
        pass


class AdaptiveKLController:
    """TRL's proportional controller (Ziegler et al. 2019), formula for formula.

    ``err = clip(KL / target - 1, -0.2, 0.2)``; ``beta *= 1 + err * n_steps / horizon``.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        self.value = init_kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current: float, n_steps: int) -> None:
        proportional_error = min(max(current / self.target - 1, -0.2), 0.2)
        mult = 1 + proportional_error * n_steps / self.horizon
        self.value *= mult


class DoublingKLController:
    """The lesson's rule: beta doubles when KL > target and halves when KL < target / 2."""

    def __init__(self, init_kl_coef: float, target: float):
        self.value = init_kl_coef
        self.target = target

    def update(self, current: float, n_steps: int) -> None:
        if current > self.target:
            self.value *= 2.0
        elif current < self.target / 2.0:
            self.value /= 2.0


KL_CONTROLLERS = ("fixed", "adaptive", "doubling")


def make_kl_controller(kind: str, beta: float, target: float = 6.0, horizon: float = 10000.0):
    """The controller named ``kind`` (``fixed``, ``adaptive`` or ``doubling``) starting at ``beta``."""
    beta = _non_negative("beta", beta)
    if kind == "fixed":
        return FixedKLController(beta)
    target = _positive("target", target)
    if kind == "adaptive":
        return AdaptiveKLController(beta, target, _positive("horizon", horizon))
    if kind == "doubling":
        return DoublingKLController(beta, target)
    raise ValueError(f"kl_ctl must be one of {KL_CONTROLLERS}, got {kind!r}")


HISTORY_KEYS = (
    "prompt", "token", "score", "kl", "reward", "clip_frac", "beta", "mean_kl", "kl_penalty", "value_loss"
)


def _warn_kl(mean_kl: float, kl_threshold: float, t: int) -> None:
    warnings.warn(
        f"mean KL(pi_theta || pi_ref) = {mean_kl:.3g} passed {kl_threshold:g} at step {t}: "
        "the policy is drifting from the reference (raise beta or stop early)",
        KLWarning,
        stacklevel=3,
    )


def train_rlhf(
    theta: dict[str, list[float]],
    ref: Mapping[str, Sequence[float]],
    w: Mapping[str, float],
    steps: int,
    seed: int,
    eps: float = 0.2,
    beta: float = 0.1,
    lr: float = 0.05,
    ppo_epochs: int = 4,
    kl_ctl: str = "fixed",
    target: float = 6.0,
    horizon: float = 10000.0,
    kl_threshold: float = 5.0,
    kl_penalty: str = "full",
    vf_coef: float = 0.0,
    cliprange_value: float = 0.2,
    value: dict[str, float] | list[float] | None = None,
) -> dict[str, list]:
    """``steps`` PPO-RLHF steps on one ``random.Random(seed)``; mutates ``theta``.

    Each step draws ``prompt = rng.choice(PROMPTS)`` and calls :func:`rlhf_step` with the
    controller's current beta, then updates the controller with the step's exact KL (one
    sample per step, so ``n_steps = 1``). Returns the per-step history: ``prompt`` (index
    into ``PROMPTS``), ``token`` (index into ``VOCAB``), ``score``, ``kl``, ``reward``,
    ``clip_frac``, the ``beta`` used, ``mean_kl``, the running mean of the exact KL (the
    lesson's monitor, which warns with :class:`KLWarning` once it passes ``kl_threshold``),
    ``kl_penalty`` (what entered the reward) and ``value_loss``.

    ``kl_penalty``, ``vf_coef``, ``cliprange_value`` and ``value`` are :func:`rlhf_step`'s;
    with ``vf_coef > 0`` and ``value=None`` the run keeps its own zero-initialised baseline.
    A reward model that scores responses by length alone is refused (ValueError naming ``w``).
    """
    _policy("theta", theta, updated=True)
    _policy("ref", ref)
    _frozen_copy(theta, ref)
    _weights(w)
    _scores_by_content(w)
    steps = _count("steps", steps, 1)
    rng = random.Random(_seed(seed))
    eps = _positive("eps", eps)
    lr = _positive("lr", lr)
    ppo_epochs = _count("ppo_epochs", ppo_epochs, 1)
    kl_threshold = _positive("kl_threshold", kl_threshold)
    controller = make_kl_controller(kl_ctl, beta, target, horizon)
    kl_penalty = _option("kl_penalty", kl_penalty, KL_PENALTIES)
    vf_coef = _non_negative("vf_coef", vf_coef)
    cliprange_value = _positive("cliprange_value", cliprange_value)
    _value_baseline(value)
    if value is None:
        value = {x: 0.0 for x in PROMPTS}

    history: dict[str, list] = {key: [] for key in HISTORY_KEYS}
    kl_sum = 0.0
    warned = False
    for t in range(steps):
        prompt = rng.choice(PROMPTS)
        beta_t = controller.value
        out = _rlhf_step(
            theta, ref, w, prompt, rng.random, eps, beta_t, lr, ppo_epochs, kl_penalty, vf_coef, cliprange_value, value
        )
        if not all(math.isfinite(v) for v in theta[prompt]):
            raise FloatingPointError(f"train_rlhf diverged at step {t}: non-finite logits (beta={beta_t!r})")
        kl_sum += out["kl"]
        mean_kl = kl_sum / (t + 1)
        history["prompt"].append(PROMPTS.index(prompt))
        for key in ("token", "score", "kl", "reward", "clip_frac"):
            history[key].append(out[key])
        history["beta"].append(beta_t)
        history["mean_kl"].append(mean_kl)
        history["kl_penalty"].append(out["kl_penalty"])
        history["value_loss"].append(out["value_loss"])
        controller.update(out["kl"], 1)  # the controllers are fed the exact KL
        if not warned and mean_kl > kl_threshold:
            warned = True
            _warn_kl(mean_kl, kl_threshold, t)
    return history


# ------------------------------------------------------------------------------- DPO


def _response_tokens(name: str, y: str | Sequence[str]) -> list[int]:
    tokens = _tokens(name, y)
    if not tokens:
        raise ValueError(f"{name} must have at least one token")
    for tok in tokens:
        if tok not in _TOKEN_INDEX:
            raise ValueError(f"{name} has token {tok!r} outside VOCAB")
    return [_TOKEN_INDEX[tok] for tok in tokens]


DPO_LOSS_TYPES = ("sigmoid", "robust", "ipo", "hinge")
DPO_HISTORY_KEYS = (
    "prompt", "loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"
)


def _dpo_options(beta: float, lr: float, loss_type: str, label_smoothing: float) -> tuple[float, float, str, float]:
    beta = _positive("beta", beta)
    lr = _positive("lr", lr)
    loss_type = _option("loss_type", loss_type, DPO_LOSS_TYPES)
    ls = _finite("label_smoothing", label_smoothing)
    if not 0.0 <= ls < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {ls!r}")
    if ls != 0.0 and loss_type not in ("sigmoid", "robust"):
        raise ValueError(
            f"label_smoothing is only defined for loss_type 'sigmoid' and 'robust', "
            f"got {ls!r} with loss_type={loss_type!r}"
        )
    return beta, lr, loss_type, ls


def dpo_step(
    theta: dict[str, list[float]],
    ref: Mapping[str, Sequence[float]],
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
    ``max(0, 1 - h)`` (docs/METHODS.md section 2). ``label_smoothing`` is in ``[0, 0.5)``
    and only allowed for ``sigmoid`` and ``robust``.
    """
    _policy("theta", theta, updated=True)
    _policy("ref", ref)
    _frozen_copy(theta, ref)
    _prompt(x, theta)
    pos = _response_tokens("y_pos", y_pos)
    neg = _response_tokens("y_neg", y_neg)
    beta, lr, loss_type, ls = _dpo_options(beta, lr, loss_type, label_smoothing)
    loss, _, _ = _dpo_step(theta[x], ref[x], pos, neg, beta, lr, loss_type, ls)
    return loss


def _dpo_step(logits, ref_logits, pos, neg, beta, lr, loss_type, ls):
    """The step on one row; returns ``(loss, pos_logratio, neg_logratio)`` before the step."""
    logp = _log_softmax(logits)
    logq = _log_softmax(ref_logits)
    pos_logratio = 0.0
    for a in pos:
        pos_logratio += logp[a] - logq[a]
    neg_logratio = 0.0
    for a in neg:
        neg_logratio += logp[a] - logq[a]
    u = pos_logratio - neg_logratio  # TRL: "logits"
    h = beta * u
    if loss_type == "sigmoid":
        loss = (1 - ls) * _softplus(-h) + ls * _softplus(h)
        # dloss/du = g * beta; the step multiplies lr * g * beta in this order, the
        # multiplication order of the original dpo_step (bit-identical for ls = 0).
        g = ls * _sigmoid(h) - (1 - ls) * _sigmoid(-h)
        step = lr * g * beta
    elif loss_type == "robust":
        loss = ((1 - ls) * _softplus(-h) - ls * _softplus(h)) / (1 - 2 * ls)
        dloss_du = -beta * ((1 - ls) * _sigmoid(-h) + ls * _sigmoid(h)) / (1 - 2 * ls)
        step = lr * dloss_du
    elif loss_type == "ipo":
        t = u - 1 / (2 * beta)
        loss = t * t
        dloss_du = 2 * t
        step = lr * dloss_du
    else:  # hinge
        loss = max(0.0, 1 - h)
        dloss_du = -beta if h < 1 else 0.0
        step = lr * dloss_du

    # d u / d logits_j = (count_j(y+) - len(y+) p_j) - (count_j(y-) - len(y-) p_j)
    p = _softmax(logits)
    for j in range(len(logits)):
        du_j = (pos.count(j) - len(pos) * p[j]) - (neg.count(j) - len(neg) * p[j])
        logits[j] -= step * du_j
    return loss, pos_logratio, neg_logratio


def train_dpo(
    theta: dict[str, list[float]],
    ref: Mapping[str, Sequence[float]],
    pairs: Sequence[tuple[str, str, str] | Mapping[str, str]],
    epochs: int = 1,
    beta: float = 0.1,
    lr: float = 0.05,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    seed: int | None = None,
) -> dict[str, list]:
    """:func:`dpo_step` over the preference pairs, ``epochs`` times; mutates ``theta``.

    ``pairs`` are ``(prompt, chosen, rejected)`` triples or TRL rows, every prompt in
    ``PROMPTS`` and every token in ``VOCAB`` (all checked before the first step). Each epoch
    walks the pairs in order, or with an int ``seed`` in the order of
    ``order = list(range(n)); rng.shuffle(order)``, one ``rng = random.Random(seed)``
    shuffling a fresh ``list(range(n))`` every epoch. Returns the history in TRL's names,
    all before each step: ``prompt`` (index into ``PROMPTS``), ``loss``, ``rewards/chosen``
    (``beta * pos_logratio``), ``rewards/rejected``, ``rewards/margins`` (chosen minus
    rejected) and ``rewards/accuracies`` (1.0 where chosen > rejected, else 0.0).
    """
    _policy("theta", theta, updated=True)
    _policy("ref", ref)
    _frozen_copy(theta, ref)
    items = _sequence("pairs", pairs, "a sequence of (prompt, chosen, rejected) triples or rows")
    if not items:
        raise ValueError("pairs must not be empty")
    data = []
    for i, item in enumerate(items):
        x, y_pos, y_neg = _triple(i, item)
        if not isinstance(x, str):
            raise TypeError(f"pairs[{i}] prompt must be a str, got {type(x).__name__}")
        if x not in PROMPTS:
            raise ValueError(f"pairs[{i}] has prompt {x!r}, unknown; known prompts: {list(PROMPTS)}")
        data.append((x, _response_tokens(f"pairs[{i}] chosen", y_pos), _response_tokens(f"pairs[{i}] rejected", y_neg)))
    epochs = _count("epochs", epochs, 1)
    beta, lr, loss_type, ls = _dpo_options(beta, lr, loss_type, label_smoothing)
    seed = _optional_seed(seed)
    rng = None if seed is None else random.Random(seed)

    history: dict[str, list] = {key: [] for key in DPO_HISTORY_KEYS}
    n = len(data)
    t = 0
    for _ in range(epochs):
        order = list(range(n))
        if rng is not None:
            rng.shuffle(order)
        for i in order:
            x, pos, neg = data[i]
            loss, pos_logratio, neg_logratio = _dpo_step(theta[x], ref[x], pos, neg, beta, lr, loss_type, ls)
            if not all(math.isfinite(v) for v in theta[x]):
                raise FloatingPointError(f"train_dpo diverged at step {t}: non-finite logits")
            chosen = beta * pos_logratio
            rejected = beta * neg_logratio
            history["prompt"].append(PROMPTS.index(x))
            history["loss"].append(loss)
            history["rewards/chosen"].append(chosen)
            history["rewards/rejected"].append(rejected)
            history["rewards/margins"].append(chosen - rejected)
            history["rewards/accuracies"].append(1.0 if chosen > rejected else 0.0)
            t += 1
    return history


def expected_score(theta: Mapping[str, Sequence[float]], w: Mapping[str, float]) -> float:
    """Exact expected RM score of the policy: ``sum_x sum_a pi(a|x) R(a) / |PROMPTS|``."""
    _policy("theta", theta)
    _weights(w)
    total = 0.0
    for x in PROMPTS:
        p = _softmax(theta[x])
        per_prompt = 0.0
        for a, tok in enumerate(VOCAB):
            per_prompt += p[a] * w.get(tok, 0.0)
        total += per_prompt
    return total / len(PROMPTS)


# ------------------------------------------------------------------------------ GRPO


SCALE_REWARDS = ("group", "none")
GRPO_HISTORY_KEYS = ("prompt", "score", "reward_std", "kl", "clip_frac", "loss", "mean_kl")


def _log(v: float) -> float:
    """libm ``log``: ``-inf`` at 0 where Python's ``math.log`` raises."""
    return math.log(v) if v > 0.0 else -math.inf


def _exp(v: float) -> float:
    """libm ``exp``: ``inf`` on overflow where Python's ``math.exp`` raises."""
    try:
        return math.exp(v)
    except OverflowError:
        return math.inf


def _reward(w: Mapping[str, float], a: int) -> float:
    """``R(a) = w.get(VOCAB[a], 0.0)`` for the one-token response ``VOCAB[a]``."""
    return float(w.get(VOCAB[a], 0.0))


def _grpo_options(num_generations, beta, epsilon, epsilon_high, lr, scale_rewards, num_iterations):
    num_generations = _count("num_generations", num_generations, 2)
    beta = _non_negative("beta", beta)
    epsilon = _positive("epsilon", epsilon)
    epsilon_high = _optional_positive("epsilon_high", epsilon_high)
    lr = _positive("lr", lr)
    scale_rewards = _option("scale_rewards", scale_rewards, SCALE_REWARDS)
    num_iterations = _count("num_iterations", num_iterations, 1)
    return (
        num_generations,
        beta,
        epsilon,
        epsilon if epsilon_high is None else epsilon_high,
        lr,
        scale_rewards,
        num_iterations,
    )


def grpo_step(
    theta: dict[str, list[float]],
    ref: Mapping[str, Sequence[float]],
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
    ``mean_i(-min(ratio_i A_i, clip(ratio_i, 1-epsilon, 1+epsilon_high) A_i) + beta * k3_i)``
    (``epsilon_high=None`` means ``epsilon``), ``k3`` being Schulman's estimate of
    ``KL(pi_theta || pi_ref)`` on each sampled token. Returns ``tokens``, ``score`` (the
    mean reward), ``reward_std``, the exact ``kl`` before the step, ``clip_frac`` and the
    ``loss`` at the first iteration. An update that would leave non-finite logits raises
    ``FloatingPointError`` and leaves ``theta`` as it was (the group is still drawn).
    """
    _policy("theta", theta, updated=True)
    _policy("ref", ref)
    _frozen_copy(theta, ref)
    _weights(w)
    _prompt(prompt, theta)
    random_ = _rng(rng).random
    options = _grpo_options(num_generations, beta, epsilon, epsilon_high, lr, scale_rewards, num_iterations)
    row = list(theta[prompt])
    out = _grpo_step({prompt: row}, ref, w, prompt, random_, *options)
    if not all(math.isfinite(v) for v in row):  # never a silent NaN: theta is left as it was
        raise FloatingPointError("grpo_step diverged: non-finite logits")
    theta[prompt][:] = row
    return out


def _grpo_step(theta, ref, w, prompt, random_, G, beta, epsilon, epsilon_high, lr, scale_rewards, num_iterations):
    logits = theta[prompt]
    p_old = _softmax(logits)
    logq = _log_softmax(ref[prompt])
    tokens = [_sample(p_old, random_()) for _ in range(G)]
    rewards = [_reward(w, a) for a in tokens]
    total = 0.0
    for r in rewards:
        total += r
    mean = total / G
    squares = 0.0
    for r in rewards:
        d = r - mean
        squares += d * d
    std = math.sqrt(squares / (G - 1))  # Bessel-corrected, as torch.std
    if scale_rewards == "group":
        advantages = [(r - mean) / (std + 1e-4) for r in rewards]
    else:  # "none": Dr. GRPO
        advantages = [r - mean for r in rewards]
    kl_t = _kl_to_log(p_old, logq)  # the monitor

    clipped = 0
    loss = 0.0
    for iteration in range(num_iterations):
        p = _softmax(logits)
        grad = [0.0] * len(logits)
        loss_sum = 0.0
        for i in range(G):
            a = tokens[i]
            adv = advantages[i]
            ratio = p[a] / p_old[a]
            flat = (adv >= 0 and ratio > 1 + epsilon_high) or (adv < 0 and ratio < 1 - epsilon)
            if flat:  # min(r A, clip(r) A) is the clipped, constant branch
                clipped += 1
                coef = 0.0
            else:
                coef = -adv * ratio
            log_r = logq[a] - _log(p[a])  # log(pi_ref(a) / pi(a))
            coef += beta * (1 - _exp(log_r))  # d(beta * k3) / d log pi(a)
            if iteration == 0:
                clipped_ratio = min(max(ratio, 1 - epsilon), 1 + epsilon_high)
                k3 = _exp(log_r) - log_r - 1
                loss_sum += -min(ratio * adv, clipped_ratio * adv) + beta * k3
            for j in range(len(logits)):
                grad[j] += coef * ((1.0 if j == a else 0.0) - p[j])
        if iteration == 0:
            loss = loss_sum / G
        for j in range(len(logits)):
            logits[j] -= lr * grad[j] / G
    return {
        "tokens": tokens,
        "score": mean,
        "reward_std": std,
        "kl": kl_t,
        "clip_frac": clipped / (G * num_iterations),
        "loss": loss,
    }


def train_grpo(
    theta: dict[str, list[float]],
    ref: Mapping[str, Sequence[float]],
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
    kl_threshold: float = 5.0,
) -> dict[str, list]:
    """``steps`` GRPO steps on one ``random.Random(seed)``; mutates ``theta``.

    Each step draws ``prompt = rng.choice(PROMPTS)`` and calls :func:`grpo_step` on the same
    rng with a fixed ``beta``. Returns the per-step history: ``prompt`` (index into
    ``PROMPTS``), ``score``, ``reward_std``, ``kl``, ``clip_frac``, ``loss`` and ``mean_kl``
    (the running mean of the exact KL), warning once with :class:`KLWarning` when it passes
    ``kl_threshold``. A reward model that scores responses by length alone is refused
    (ValueError naming ``w``).
    """
    _policy("theta", theta, updated=True)
    _policy("ref", ref)
    _frozen_copy(theta, ref)
    _weights(w)
    _scores_by_content(w)
    steps = _count("steps", steps, 1)
    rng = random.Random(_seed(seed))
    options = _grpo_options(num_generations, beta, epsilon, epsilon_high, lr, scale_rewards, num_iterations)
    kl_threshold = _positive("kl_threshold", kl_threshold)

    history: dict[str, list] = {key: [] for key in GRPO_HISTORY_KEYS}
    kl_sum = 0.0
    warned = False
    for t in range(steps):
        prompt = rng.choice(PROMPTS)
        out = _grpo_step(theta, ref, w, prompt, rng.random, *options)
        if not all(math.isfinite(v) for v in theta[prompt]):
            raise FloatingPointError(f"train_grpo diverged at step {t}: non-finite logits")
        kl_sum += out["kl"]
        mean_kl = kl_sum / (t + 1)
        history["prompt"].append(PROMPTS.index(prompt))
        for key in ("score", "reward_std", "kl", "clip_frac", "loss"):
            history[key].append(out[key])
        history["mean_kl"].append(mean_kl)
        if not warned and mean_kl > kl_threshold:
            warned = True
            _warn_kl(mean_kl, kl_threshold, t)
    return history


# ------------------------------------------------------------------------- Best-of-N


def _best_of_n_distribution(pi: Sequence[float], scores: Sequence[float], n: int) -> list[float]:
    """The exact law of the kept token: ``pi(a) / pi(T) * (F_le^n - F_lt^n)`` for ``a`` in tie group ``T``."""
    out = []
    for a in range(len(pi)):
        f_le = 0.0
        f_lt = 0.0
        pi_tie = 0.0
        for b in range(len(pi)):
            if scores[b] <= scores[a]:
                f_le += pi[b]
            if scores[b] < scores[a]:
                f_lt += pi[b]
            if scores[b] == scores[a]:
                pi_tie += pi[b]
        if pi_tie > 0.0:
            out.append(pi[a] / pi_tie * (math.pow(f_le, n) - math.pow(f_lt, n)))
        else:  # the whole tie group underflowed to probability 0: it is never drawn
            out.append(0.0)
    return out


def best_of_n(
    policy: Mapping[str, Sequence[float]],
    w: Mapping[str, float],
    n: int,
    samples: int = 0,
    seed: int = 0,
) -> dict:
    """Best-of-N against the reward model: draw ``n`` responses from ``policy``, keep the best.

    ``policy`` is a dict prompt -> logits (usually ``ref``, the SFT policy). Per prompt the
    law of the kept token is computed exactly (ties go to the first sampled, which is
    ``pi``-proportional within the tie group; docs/METHODS.md section 4). Returns a dict:
    ``expected_score`` (mean over prompts of ``sum_a P_bon(a) R(a)``), ``kl_analytic``
    (``log n - (n - 1) / n``, the continuous-limit value and an upper bound here),
    ``kl_exact`` (mean over prompts of ``KL(P_bon || pi)``), ``distribution`` (prompt -> the
    8 probabilities of ``P_bon``) and ``sampled_score``: with ``samples > 0`` the mean kept
    score of a Monte-Carlo run on ``random.Random(seed)`` (per sample ``rng.choice(PROMPTS)``,
    then ``n`` draws), else ``None``. A reward model that scores responses by length alone
    is refused (ValueError naming ``w``).
    """
    _policy("policy", policy)
    _weights(w)
    _scores_by_content(w)
    n = _count("n", n, 1)
    samples = _count("samples", samples, 0)
    seed = _seed(seed)

    scores = [_reward(w, a) for a in range(len(VOCAB))]
    probs = {x: _softmax(policy[x]) for x in PROMPTS}
    distribution: dict[str, list[float]] = {}
    score_sum = 0.0
    kl_sum = 0.0
    for x in PROMPTS:
        pi = probs[x]
        p_bon = _best_of_n_distribution(pi, scores, n)
        distribution[x] = p_bon
        per_prompt = 0.0
        for a in range(len(VOCAB)):
            per_prompt += p_bon[a] * scores[a]
        score_sum += per_prompt
        kl_sum += _kl(p_bon, pi)

    sampled_score = None
    if samples > 0:
        rng = random.Random(seed)
        total = 0.0
        for _ in range(samples):
            pi = probs[rng.choice(PROMPTS)]
            best = scores[_sample(pi, rng.random())]
            for _ in range(n - 1):
                s = scores[_sample(pi, rng.random())]
                if s > best:  # strictly better: ties keep the first sampled
                    best = s
            total += best
        sampled_score = total / samples

    return {
        "expected_score": score_sum / len(PROMPTS),
        "kl_analytic": math.log(n) - (n - 1) / n,
        "kl_exact": kl_sum / len(PROMPTS),
        "distribution": distribution,
        "sampled_score": sampled_score,
    }
