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
    """The key ``random.Random(seed)`` seeds MT19937 with (``init_by_array``): ``abs(seed)``
    in 32-bit little-endian words, ``[0]`` for 0 (SPEC section 3)."""
    return seed_key_unchecked(checks.integer("seed", seed))


def make_pair(rng: random.Random) -> tuple[str, str, str]:
    """One synthetic preference ``(prompt, chosen, rejected)``: two good words beat two bad ones."""
    return lesson.make_pair(checks.choice_rng(rng))


def make_dataset(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """``n`` calls of :func:`make_pair` on one ``random.Random(seed)``."""
    n = checks.count("n", n, 0)
    seed = checks.integer("seed", seed)
    checks.fits("n", n, n * PAIR_BYTES)
    return lesson.make_dataset(n, seed)


def pairs_to_rows(pairs: Sequence[tuple[str, str, str]]) -> list[dict[str, str]]:
    """Pairs as ``{"prompt", "chosen", "rejected"}`` rows (the TRL / HF datasets format)."""
    rows = []
    for i, item in enumerate(checks.sequence("pairs", pairs, "an iterable of (prompt, chosen, rejected) triples")):
        if isinstance(item, Mapping):
            raise TypeError(f"pairs[{i}] must be a (prompt, chosen, rejected) triple, got {type(item).__name__}")
        x, y_pos, y_neg = checks.triple(i, item)
        rows.append({"prompt": x, "chosen": y_pos, "rejected": y_neg})
    return rows


def rows_to_pairs(rows: Sequence[Mapping[str, str]]) -> list[tuple[str, str, str]]:
    """Rows in the TRL preference format back to ``(prompt, chosen, rejected)`` pairs."""
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
    """Token counts of a response (a string split on white space, or a list of tokens)."""
    return bt.bag(checks.tokens("y", y))


def dot(w: Mapping[str, float], b: Mapping[str, int]) -> float:
    """``sum(w[tok] * cnt)`` over the bag, tokens missing from ``w`` weighing 0."""
    checks.weights(w)
    checks.weights(b, "b")
    return bt.dot(w, b)


def sigmoid(z: float) -> float:
    """Logistic function, stable for any input (never evaluates ``exp`` of a large positive)."""
    return sigmoid_unchecked(checks.not_nan("z", z))


def rm_train_step(w: dict[str, float], x: str, y_pos: str, y_neg: str, lr: float) -> float:
    """One SGD step on the Bradley-Terry loss ``-log sigmoid(R(y+) - R(y-))``.

    Mutates ``w`` and returns the loss before the step. The prompt ``x`` is not a feature.
    A step that would leave one of the responses' weights overflowed raises
    ``FloatingPointError`` and leaves ``w`` as it was.
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
    """Walk the pairs in order ``epochs`` times with :func:`rm_train_step`; return ``w``.

    A new ``w`` starts at 0 for every word of ``VOCAB``; a given one is updated in place.
    There must be at least one pair. An epoch that leaves a weight overflowed raises
    ``FloatingPointError`` naming it, ``w`` as that epoch left it.
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
    """Share of pairs the reward model orders strictly right: ``R(y+) > R(y-)``."""
    checks.weights(w)
    prefs = _preference_set(pairs)
    if not len(prefs):
        raise ValueError("pairs must not be empty")
    return bt.pairwise_accuracy(w, prefs)


# ----------------------------------------------------------------------------- policy


def init_policy() -> dict[str, list[float]]:
    """All-zero logits for every prompt: the uniform pi_SFT. Call it twice for a frozen ``ref``."""
    return {x: [0.0] * len(VOCAB) for x in PROMPTS}


def policy_logits(theta: Policy, prompt: str) -> Sequence[float]:
    """The logits row of ``prompt``: the row itself (a dict's list, a view of an array's row),
    so updates to it update ``theta``."""
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
    """``exp(z - max z)`` normalised: exact for logits as large as 1e4 in magnitude. A numpy
    array gets a numpy array back (2-D: row-wise)."""
    if isinstance(z, np.ndarray):
        return _array_rows(z, softmax_row)
    return softmax_row(checks.logits("z", z))


def log_softmax(z: Sequence[float] | np.ndarray) -> list[float] | np.ndarray:
    """``z - logsumexp(z)``, with the max subtracted before exponentiating. A numpy array gets
    a numpy array back (2-D: row-wise)."""
    if isinstance(z, np.ndarray):
        return _array_rows(z, log_softmax_row)
    return log_softmax_row(checks.logits("z", z))


def kl(p: Sequence[float], q: Sequence[float]) -> float:
    """Exact ``KL(p || q) = sum p_i (log p_i - log q_i)`` with ``0 log 0 = 0``."""
    p = checks.probabilities("p", p)
    q = checks.probabilities("q", q)
    if len(p) != len(q):
        raise ValueError(f"p and q must have the same length, got {len(p)} and {len(q)}")
    return kl_kernels.kl_unchecked(p, q)


def kl_k1(logp: float, logq: float) -> float:
    """Unbiased, high-variance, can be negative: ``log p(a) - log q(a)``."""
    return kl_kernels.kl_k1(checks.finite("logp", logp), checks.finite("logq", logq))


def kl_k2(logp: float, logq: float) -> float:
    """Biased, low-variance, never negative: ``(log q(a) - log p(a))^2 / 2``."""
    logq = checks.finite("logq", logq)
    return kl_kernels.kl_k2(checks.finite("logp", logp), logq)


def kl_k3(logp: float, logq: float) -> float:
    """Unbiased, low-variance, never negative: ``(r - 1) - log r`` with ``r = q(a) / p(a)``."""
    logq = checks.finite("logq", logq)
    return kl_kernels.kl_k3(checks.finite("logp", logp), logq)


def sample(probs: Sequence[float], rng: random.Random) -> int:
    """Inverse-CDF draw: the first index whose running sum exceeds ``rng.random()``."""
    return sample_index(checks.probabilities("probs", probs), checks.rng(rng).random())


def expected_score(theta: Policy, w: Mapping[str, float]) -> float:
    """Exact expected RM score of the policy: ``sum_x sum_a pi(a|x) R(a) / |PROMPTS|``."""
    rows = checks.policy("theta", theta)
    checks.weights(w)
    return policy_kernels.expected_score(rows, bt.vocab_weights(w))


def policy_kl(theta: Policy, ref: Policy) -> float:
    """Exact ``KL(pi_theta || pi_ref)`` averaged over ``PROMPTS``, in log space."""
    rows = checks.policy("theta", theta)
    return policy_kernels.policy_kl(rows, checks.policy("ref", ref))


# ------------------------------------------------------------------------------- PPO


def clipped_surrogate(logits: Sequence[float], a: int, p_old_a: float, advantage: float, eps: float) -> float:
    """PPO's objective for one sampled token: ``min(r A, clip(r, 1-eps, 1+eps) A)``, ``r = pi(a) / pi_old(a)``."""
    logits = checks.logits("logits", logits)
    a = checks.token(a, len(logits))
    p_old_a = checks.positive("p_old_a", p_old_a)
    advantage = checks.finite("advantage", advantage)
    return ppo.clipped_surrogate(logits, a, p_old_a, advantage, checks.positive("eps", eps))


def clipped_surrogate_grad(
    logits: Sequence[float], a: int, p_old_a: float, advantage: float, eps: float
) -> list[float]:
    """Gradient of :func:`clipped_surrogate` in the logits: ``A r (1[j = a] - p_j)``, or 0 where clipped."""
    logits = checks.logits("logits", logits)
    a = checks.token(a, len(logits))
    p_old_a = checks.positive("p_old_a", p_old_a)
    advantage = checks.finite("advantage", advantage)
    return ppo.clipped_surrogate_grad(logits, a, p_old_a, advantage, checks.positive("eps", eps))


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
    section 1). The record holds ``token``, ``score``, the exact ``kl``, ``reward``,
    ``clip_frac``, the ``kl_penalty`` that entered the reward and the ``value_loss`` before
    the step (0.0 without a baseline). ``theta`` may also be a float64 ``[3, 8]`` array. A step
    that would leave a logit or the value overflowed raises ``FloatingPointError`` and
    leaves ``theta`` and ``value`` as they were.
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
    sample per step, so ``n_steps = 1``). Returns the per-step history: ``prompt`` (index
    into ``PROMPTS``), ``token`` (index into ``VOCAB``), ``score``, ``kl``, ``reward``,
    ``clip_frac``, the ``beta`` used, ``mean_kl``, the running mean of the exact KL (the
    lesson's monitor, which warns with :class:`KLWarning` once it passes ``kl_threshold``),
    ``kl_penalty`` (what entered the reward) and ``value_loss``.

    ``kl_penalty``, ``vf_coef``, ``cliprange_value`` and ``value`` are :func:`rlhf_step`'s;
    with ``vf_coef > 0`` and ``value=None`` the run keeps its own zero-initialised baseline.
    A reward model that scores responses by length alone is refused (ValueError naming ``w``),
    and so is a run whose history would not fit in half the machine's memory (``steps``).
    A step that leaves a logit or the value overflowed raises ``FloatingPointError`` naming
    the step, ``lr`` and its beta; ``theta`` and ``value`` then hold that step's update.
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
    ``max(0, 1 - h)`` (docs/METHODS.md section 2). ``label_smoothing`` is in ``[0, 0.5)``
    and only allowed for ``sigmoid`` and ``robust``. ``theta`` may also be a float64
    ``[3, 8]`` array. A step that would leave a logit overflowed raises
    ``FloatingPointError`` and leaves ``theta`` as it was.
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

    ``pairs`` are ``(prompt, chosen, rejected)`` triples or TRL rows, every prompt in
    ``PROMPTS`` and every token in ``VOCAB`` (all checked before the first step). Each epoch
    walks the pairs in order, or with an int ``seed`` in the order of
    ``order = list(range(n)); rng.shuffle(order)``, one ``rng = random.Random(seed)``
    shuffling a fresh ``list(range(n))`` every epoch. Returns the history in TRL's names,
    all before each step: ``prompt`` (index into ``PROMPTS``), ``loss``, ``rewards/chosen``
    (``beta * pos_logratio``), ``rewards/rejected``, ``rewards/margins`` (chosen minus
    rejected) and ``rewards/accuracies`` (1.0 where chosen > rejected, else 0.0).

    A run whose history would not fit in half the machine's memory is refused (ValueError
    naming ``epochs``). A step that leaves a logit overflowed raises ``FloatingPointError``
    naming the step, ``lr`` and ``beta``; ``theta`` then holds that step's update.
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
    ``mean_i(-min(ratio_i A_i, clip(ratio_i, 1-epsilon, 1+epsilon_high) A_i) + beta * k3_i)``
    (``epsilon_high=None`` means ``epsilon``), ``k3`` being Schulman's estimate of
    ``KL(pi_theta || pi_ref)`` on each sampled token. Returns ``tokens``, ``score`` (the
    mean reward), ``reward_std``, the exact ``kl`` before the step, ``clip_frac`` and the
    ``loss`` at the first iteration. An update that would leave a logit overflowed raises
    ``FloatingPointError`` and leaves ``theta`` as it was (the group is still drawn).
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
    rng with a fixed ``beta``. Returns the per-step history: ``prompt`` (index into
    ``PROMPTS``), ``score``, ``reward_std``, ``kl``, ``clip_frac``, ``loss`` and ``mean_kl``
    (the running mean of the exact KL), warning once with :class:`KLWarning` when it passes
    ``kl_threshold``. A reward model that scores responses by length alone is refused
    (ValueError naming ``w``), and so is a run whose history would not fit in half the
    machine's memory (``steps``). A step that leaves a logit overflowed raises
    ``FloatingPointError`` naming the step, ``lr`` and ``beta``; ``theta`` then holds that
    step's update.
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
    rows = checks.policy("policy", policy)
    checks.weights(w)
    weights = bt.vocab_weights(w)
    check_not_length_only(weights)
    n = checks.count("n", n, 1, MAX_N)
    samples = checks.count("samples", samples, 0)
    seed = checks.integer("seed", seed)
    outcome = bon_engine.best_of_n(rows, weights, n, samples, seed_key_unchecked(seed))
    return {
        "expected_score": outcome.expected_score,
        "kl_analytic": outcome.kl_analytic,
        "kl_exact": outcome.kl_exact,
        "distribution": dict(zip(PROMPTS, outcome.p_bon)),
        "sampled_score": outcome.sampled_score,
    }

