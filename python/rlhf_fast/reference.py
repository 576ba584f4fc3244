"""The lesson's toy RLHF pipeline in plain, readable Python: the oracle for every test.

Synthetic preferences -> Bradley-Terry reward model -> PPO against the reward model with
a KL penalty to a frozen reference, plus the DPO step. Every function here has a Rust
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
from collections.abc import Iterable, Mapping, Sequence

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
    return _finite("logp", logp) - _finite("logq", logq)


def kl_k2(logp: float, logq: float) -> float:
    """Biased, low-variance, never negative: ``(log q(a) - log p(a))^2 / 2``."""
    log_ratio = _finite("logq", logq) - _finite("logp", logp)
    return 0.5 * log_ratio * log_ratio


def kl_k3(logp: float, logq: float) -> float:
    """Unbiased, low-variance, never negative: ``(r - 1) - log r`` with ``r = q(a) / p(a)``."""
    log_ratio = _finite("logq", logq) - _finite("logp", logp)
    if log_ratio > 709.0:  # e^710 overflows: the estimate is infinite
        return math.inf
    return math.expm1(log_ratio) - log_ratio


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
) -> dict[str, float]:
    """One PPO-RLHF step on ``prompt``: sample a token, reward it, clipped-surrogate updates.

    ``reward = R(prompt, token) - beta * KL(pi_theta || pi_ref)`` is the return and the
    advantage (no baseline). Each of ``ppo_epochs`` epochs recomputes the ratio
    ``pi(a) / pi_old(a)``; an epoch whose ratio is outside the clip region on the side the
    advantage pushes to is clipped and changes nothing. Mutates ``theta[prompt]``.
    """
    _policy("theta", theta, updated=True)
    _policy("ref", ref)
    _frozen_copy(theta, ref)
    _weights(w)
    _prompt(prompt, theta)
    return _rlhf_step(
        theta,
        ref,
        w,
        prompt,
        _rng(rng).random,
        _positive("eps", eps),
        _non_negative("beta", beta),
        _positive("lr", lr),
        _count("ppo_epochs", ppo_epochs, 1),
    )


def _rlhf_step(theta, ref, w, prompt, random_, eps, beta, lr, ppo_epochs):
    logits = theta[prompt]
    p_old = _softmax(logits)
    a = _sample(p_old, random_())
    kl_t = _kl_to_log(p_old, _log_softmax(ref[prompt]))
    score = dot(w, bag([VOCAB[a]]))
    reward = score - beta * kl_t  # the KL enters the reward only
    advantage = reward  # the reward is the return; no baseline
    clipped = 0
    for _ in range(ppo_epochs):
        p = _softmax(logits)
        ratio = p[a] / p_old[a]
        if _is_clipped(advantage, ratio, eps):
            clipped += 1  # the clipped surrogate is flat here: no gradient, no update
            continue
        step = lr * advantage * ratio
        for j in range(len(logits)):
            logits[j] += step * ((1.0 if j == a else 0.0) - p[j])
    return {"token": a, "score": score, "kl": kl_t, "reward": reward, "clip_frac": clipped / ppo_epochs}


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


HISTORY_KEYS = ("prompt", "token", "score", "kl", "reward", "clip_frac", "beta", "mean_kl")


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
) -> dict[str, list]:
    """``steps`` PPO-RLHF steps on one ``random.Random(seed)``; mutates ``theta``.

    Each step draws ``prompt = rng.choice(PROMPTS)`` and calls :func:`rlhf_step` with the
    controller's current beta, then updates the controller with the step's exact KL (one
    sample per step, so ``n_steps = 1``). Returns the per-step history: ``prompt`` (index
    into ``PROMPTS``), ``token`` (index into ``VOCAB``), ``score``, ``kl``, ``reward``,
    ``clip_frac``, the ``beta`` used, and ``mean_kl``, the running mean of the KL: the
    lesson's monitor, which warns with :class:`KLWarning` once it passes ``kl_threshold``.
    """
    _policy("theta", theta, updated=True)
    _policy("ref", ref)
    _frozen_copy(theta, ref)
    _weights(w)
    steps = _count("steps", steps, 1)
    rng = random.Random(_seed(seed))
    eps = _positive("eps", eps)
    lr = _positive("lr", lr)
    ppo_epochs = _count("ppo_epochs", ppo_epochs, 1)
    kl_threshold = _positive("kl_threshold", kl_threshold)
    controller = make_kl_controller(kl_ctl, beta, target, horizon)

    history: dict[str, list] = {key: [] for key in HISTORY_KEYS}
    kl_sum = 0.0
    warned = False
    for t in range(steps):
        prompt = rng.choice(PROMPTS)
        beta_t = controller.value
        out = _rlhf_step(theta, ref, w, prompt, rng.random, eps, beta_t, lr, ppo_epochs)
        if not all(math.isfinite(v) for v in theta[prompt]):
            raise FloatingPointError(f"train_rlhf diverged at step {t}: non-finite logits (beta={beta_t!r})")
        kl_sum += out["kl"]
        mean_kl = kl_sum / (t + 1)
        history["prompt"].append(PROMPTS.index(prompt))
        for key in ("token", "score", "kl", "reward", "clip_frac"):
            history[key].append(out[key])
        history["beta"].append(beta_t)
        history["mean_kl"].append(mean_kl)
        controller.update(out["kl"], 1)
        if not warned and mean_kl > kl_threshold:
            warned = True
            warnings.warn(
                f"mean KL(pi_theta || pi_ref) = {mean_kl:.3g} passed {kl_threshold:g} at step {t}: "
                "the policy is drifting from the reference (raise beta or stop early)",
                KLWarning,
                stacklevel=2,
            )
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


def dpo_step(
    theta: dict[str, list[float]],
    ref: Mapping[str, Sequence[float]],
    x: str,
    y_pos: str,
    y_neg: str,
    beta: float = 0.1,
    lr: float = 0.05,
) -> float:
    """One SGD step on the DPO sigmoid loss; mutates ``theta[x]`` and returns the loss before it.

    ``log pi(y)`` is the sum of the tokens' log-probabilities under the prompt's policy, and
    the loss is ``-log sigmoid(beta * [(log pi(y+) - log ref(y+)) - (log pi(y-) - log ref(y-))])``.
    """
    _policy("theta", theta, updated=True)
    _policy("ref", ref)
    _frozen_copy(theta, ref)
    _prompt(x, theta)
    pos = _response_tokens("y_pos", y_pos)
    neg = _response_tokens("y_neg", y_neg)
    beta = _positive("beta", beta)
    lr = _positive("lr", lr)

    logits = theta[x]
    logp = log_softmax(logits)
    logq = log_softmax(ref[x])
    pos_logratio = 0.0
    for a in pos:
        pos_logratio += logp[a] - logq[a]
    neg_logratio = 0.0
    for a in neg:
        neg_logratio += logp[a] - logq[a]
    h = beta * (pos_logratio - neg_logratio)
    loss = _softplus(-h)

    # d(-loss)/d logits_j = sigmoid(-h) * beta * (d log pi(y+) - d log pi(y-)) / d logits_j,
    # with d log pi(y) / d logits_j = count_j(y) - len(y) * p_j.
    p = _softmax(logits)
    scale = lr * _sigmoid(-h) * beta
    for j in range(len(logits)):
        d_pos = pos.count(j) - len(pos) * p[j]
        d_neg = neg.count(j) - len(neg) * p[j]
        logits[j] += scale * (d_pos - d_neg)
    return loss


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
