"""Mathematical properties of the methods of docs/METHODS.md, checked against mathematics.

PPO completed (sampled KL penalties, the clipped value baseline), the DPO family (sigmoid /
cDPO label smoothing, robust, IPO, hinge), GRPO and Best-of-N. Each property runs on the
reference and on ``api`` (the Rust backend; on the python backend ``api`` is the reference,
which runs once), so a bug shared by both is still caught here.
"""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
from conftest import (
    MODULES,
    V,
    assert_close,
    copy_policy,
    floats,
    np_log_softmax,
    np_softmax,
    policies,
    prompts,
    responses,
    softplus,
    weight_dicts,
)
from hypothesis import assume, given
from hypothesis import strategies as st

from rlhf_fast import reference as ref

MODS = MODULES


def word(arg: str) -> str:
    """A regex matching the argument's name as a word (``w`` must not match ``weights``)."""
    return rf"(?<![A-Za-z0-9_]){arg}(?![A-Za-z0-9_])"


def derivative(f, x: float, h: float = 1e-4) -> float:
    """f'(x) by central differences with one Richardson step: error O(h^4) + O(eps |f| / h)."""

    def central(step):
        return (f(x + step) - f(x - step)) / (2 * step)

    return (4 * central(h / 2) - central(h)) / 3


def gradient(f, z, h: float = 1e-4) -> np.ndarray:
    """The gradient of f(list) at z, coordinate by coordinate."""
    z = [float(v) for v in z]

    def along(j):
        return lambda t: f(z[:j] + [t] + z[j + 1 :])

    return np.array([derivative(along(j), z[j], h) for j in range(len(z))])


class FixedU(random.Random):
    """A Random whose random() returns the given values in turn."""

    def __init__(self, *values):
        super().__init__(0)
        self.values = list(values)

    def random(self):
        return self.values.pop(0)


def u_for_token(p, a: int) -> float:
    """A uniform in the middle of token ``a``'s inverse-CDF interval (running sums left to right)."""
    running = 0.0
    for v in p[:a]:
        running += float(v)
    return running + float(p[a]) / 2


def reward_of(w, a: int) -> float:
    return float(w.get(ref.VOCAB[a], 0.0))


def exact_kl(row, ref_row) -> float:
    logp, logq = np_log_softmax(row), np_log_softmax(ref_row)
    return float(np.sum(np.exp(logp) * (logp - logq)))


def not_length_only(w) -> bool:
    return len({reward_of(w, a) for a in range(V)}) > 1


small_rows = policies(-3, 3)


# ============================================================ 1. PPO completed


@MODS
@given(theta=policies(-5, 5), ref_policy=policies(-5, 5), w=weight_dicts(), prompt=prompts, seed=st.integers(0, 2**32), beta=floats(0.0, 2.0))
def test_kl_penalty_full_is_the_exact_kl_and_no_value_loss(mod, theta, ref_policy, w, prompt, seed, beta):
    before = copy_policy(theta)
    out = mod.rlhf_step(theta, ref_policy, w, prompt, random.Random(seed), beta=beta, kl_penalty="full")
    assert out["kl_penalty"] == out["kl"]
    assert out["kl"] == pytest.approx(exact_kl(before[prompt], ref_policy[prompt]), rel=1e-9, abs=1e-12)
    assert out["reward"] == pytest.approx(out["score"] - beta * out["kl_penalty"], rel=1e-12, abs=1e-12)
    assert out["value_loss"] == 0.0


@MODS
@pytest.mark.parametrize("kl_penalty", ["k1", "k2", "k3"])
@given(theta=policies(-5, 5), ref_policy=policies(-5, 5), w=weight_dicts(), prompt=prompts, seed=st.integers(0, 2**32), beta=floats(0.0, 2.0))
def test_kl_penalty_estimators_on_the_sampled_token(mod, kl_penalty, theta, ref_policy, w, prompt, seed, beta):
    """Schulman's k1, k2, k3 of log r = log q(a) - log p_old(a) enter the reward; the record's kl stays exact."""
    before = copy_policy(theta)
    out = mod.rlhf_step(theta, ref_policy, w, prompt, random.Random(seed), beta=beta, kl_penalty=kl_penalty)
    a = out["token"]
    logp = math.log(float(np_softmax(before[prompt])[a]))
    logq = float(np_log_softmax(ref_policy[prompt])[a])
    log_r = logq - logp
    expected = {"k1": -log_r, "k2": 0.5 * log_r * log_r, "k3": math.expm1(log_r) - log_r}[kl_penalty]
    assert out["kl_penalty"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert out["kl"] == pytest.approx(exact_kl(before[prompt], ref_policy[prompt]), rel=1e-9, abs=1e-12)
    assert out["reward"] == pytest.approx(out["score"] - beta * out["kl_penalty"], rel=1e-12, abs=1e-12)
    if kl_penalty != "k1":
        assert out["kl_penalty"] >= 0.0


@MODS
@given(theta=small_rows, ref_policy=small_rows, prompt=prompts)
def test_kl_penalties_k1_and_k3_are_unbiased(mod, theta, ref_policy, prompt):
    """Enumerate the token: sum_a p_old(a) * penalty(a) is the exact KL for k1 and k3 (k2 is biased, >= 0)."""
    p_old = np_softmax(theta[prompt])
    exact = exact_kl(theta[prompt], ref_policy[prompt])
    w = {tok: 1.0 for tok in ref.VOCAB}
    for kl_penalty in ("k1", "k2", "k3"):
        mean = 0.0
        for a in range(V):
            out = mod.rlhf_step(copy_policy(theta), ref_policy, w, prompt, FixedU(u_for_token(p_old, a)), beta=0.0, kl_penalty=kl_penalty)
            assert out["token"] == a
            assert out["kl"] == pytest.approx(exact, rel=1e-9, abs=1e-12)
            mean += p_old[a] * out["kl_penalty"]
            if kl_penalty == "k2":
                assert out["kl_penalty"] >= 0.0
        if kl_penalty != "k2":
            assert mean == pytest.approx(exact, rel=1e-9, abs=1e-12), kl_penalty


@MODS
@given(theta=policies(-5, 5), w=weight_dicts(), prompt=prompts, seed=st.integers(0, 2**32), v=st.lists(floats(-5, 5), min_size=3, max_size=3))
def test_value_is_untouched_when_vf_coef_is_zero(mod, theta, w, prompt, seed, v):
    value = dict(zip(ref.PROMPTS, v))
    saved = dict(value)
    t_plain, t_value = copy_policy(theta), copy_policy(theta)
    plain = mod.rlhf_step(t_plain, ref.init_policy(), w, prompt, random.Random(seed))
    with_value = mod.rlhf_step(t_value, ref.init_policy(), w, prompt, random.Random(seed), vf_coef=0.0, value=value)
    assert value == saved
    assert with_value == plain
    assert t_value == t_plain
    assert with_value["value_loss"] == 0.0


@MODS
@given(
    theta=policies(-3, 3),
    w=weight_dicts(),
    prompt=prompts,
    seed=st.integers(0, 2**32),
    v_old=floats(-5, 5),
    vf_coef=floats(0.01, 2.0),
    lr=floats(1e-3, 0.5),
    beta=floats(0.0, 1.0),
)
def test_value_baseline_is_subtracted_from_the_reward(mod, theta, w, prompt, seed, v_old, vf_coef, lr, beta):
    """One epoch (ratio 1): theta moves by lr (reward - v_old) (1[j=a] - p); value_loss = 0.5 (v_old - reward)^2."""
    before = copy_policy(theta)
    value = {x: (v_old if x == prompt else 123.0) for x in ref.PROMPTS}
    out = mod.rlhf_step(theta, ref.init_policy(), w, prompt, random.Random(seed), beta=beta, lr=lr, ppo_epochs=1, vf_coef=vf_coef, value=value)
    advantage = out["reward"] - v_old
    p = np_softmax(before[prompt])
    expected = np.asarray(before[prompt]) + lr * advantage * (np.eye(V)[out["token"]] - p)
    assert_close(theta[prompt], expected, rtol=1e-9, atol=1e-12)
    assert out["value_loss"] == pytest.approx(0.5 * (v_old - out["reward"]) ** 2, rel=1e-12, abs=1e-15)
    assert value[prompt] == pytest.approx(v_old - lr * vf_coef * (v_old - out["reward"]), rel=1e-12, abs=1e-12)
    assert all(value[x] == 123.0 for x in ref.PROMPTS if x != prompt), "only the prompt's baseline moves"


def trl_value_loss(v: float, v_old: float, ret: float, cliprange_value: float) -> float:
    """TRL: 0.5 * max((v - R)^2, (v_old + clamp(v - v_old, -c, c) - R)^2)."""
    v_clipped = v_old + min(max(v - v_old, -cliprange_value), cliprange_value)
    return 0.5 * max((v - ret) ** 2, (v_clipped - ret) ** 2)


@MODS
@given(
    theta=policies(-3, 3),
    w=weight_dicts(),
    prompt=prompts,
    seed=st.integers(0, 2**32),
    v_old=floats(-5, 5),
    vf_coef=floats(0.05, 3.0),
    lr=floats(0.01, 0.7),
    cliprange_value=floats(0.01, 2.0),
    ppo_epochs=st.integers(1, 6),
)
def test_value_update_is_gradient_descent_on_the_clipped_value_loss(mod, theta, w, prompt, seed, v_old, vf_coef, lr, cliprange_value, ppo_epochs):
    """Each epoch: v -= lr * vf_coef * d/dv [0.5 max(...)] (finite differences), zero where the clipped branch wins."""
    value = {x: v_old for x in ref.PROMPTS}
    out = mod.rlhf_step(
        theta, ref.init_policy(), w, prompt, random.Random(seed),
        lr=lr, ppo_epochs=ppo_epochs, vf_coef=vf_coef, cliprange_value=cliprange_value, value=value,
    )
    ret = out["reward"]
    assert out["value_loss"] == pytest.approx(trl_value_loss(v_old, v_old, ret, cliprange_value), rel=1e-12, abs=1e-15)
    v = v_old
    for _ in range(ppo_epochs):
        # stay clear of the kinks: the clip edges and, outside them, where the two branches cross
        assume(abs(abs(v - v_old) - cliprange_value) > 1e-3)
        v_clipped = v_old + min(max(v - v_old, -cliprange_value), cliprange_value)
        if abs(v - v_old) > cliprange_value:
            assume(abs(abs(v - ret) - abs(v_clipped - ret)) > 1e-3)
        g = derivative(lambda t: trl_value_loss(t, v_old, ret, cliprange_value), v)
        v = v - lr * vf_coef * g
    assert value[prompt] == pytest.approx(v, rel=1e-7, abs=1e-9)


@MODS
def test_value_update_stops_when_the_clipped_branch_dominates(mod):
    """A baseline far from the return jumps past v_old + c in epoch 1; from then on 0.5 (v_clipped - R)^2 wins: no update."""
    w = {tok: 2.0 for tok in ref.VOCAB}  # every token's reward is 2 (beta = 0): R = 2 whatever is sampled
    for epochs in (1, 2, 4):
        value = {x: -10.0 for x in ref.PROMPTS}
        out = mod.rlhf_step(
            ref.init_policy(), ref.init_policy(), w, "help me", random.Random(0),
            beta=0.0, lr=0.5, ppo_epochs=epochs, vf_coef=1.0, cliprange_value=0.2, value=value,
        )
        assert out["reward"] == 2.0
        assert value["help me"] == -10.0 - 0.5 * 1.0 * (-10.0 - 2.0)  # one step, whatever the epochs: -4
        assert out["value_loss"] == 0.5 * 12.0**2


@MODS
def test_value_keeps_learning_through_clipped_policy_epochs(mod):
    """The early exit after a clipped policy epoch applies only without a baseline: the value still steps."""
    w = {tok: 2.0 for tok in ref.VOCAB}
    value = {x: 1.9 for x in ref.PROMPTS}  # advantage 0.1; the value stays inside the clip range
    out = mod.rlhf_step(
        ref.init_policy(), ref.init_policy(), w, "help me", random.Random(0),
        eps=0.01, beta=0.0, lr=0.5, ppo_epochs=4, vf_coef=1.0, cliprange_value=0.2, value=value,
    )
    assert out["clip_frac"] == 0.75  # epoch 1 moves the ratio past 1.01; epochs 2-4 are clipped
    v = 1.9
    for _ in range(4):
        v = v - 0.5 * 1.0 * (v - 2.0)
    assert value["help me"] == pytest.approx(v, rel=1e-15)


@MODS
@given(theta=policies(-3, 3), w=weight_dicts(), prompt=prompts, seed=st.integers(0, 2**32), v=st.lists(floats(-3, 3), min_size=3, max_size=3))
def test_value_as_a_list_in_prompts_order(mod, theta, w, prompt, seed, v):
    """A list of 3 baselines in PROMPTS order works like the dict, updated in place."""
    as_list, as_dict = list(v), dict(zip(ref.PROMPTS, v))
    t_list, t_dict = copy_policy(theta), copy_policy(theta)
    kw = dict(vf_coef=0.5, ppo_epochs=3, lr=0.1)
    out_list = mod.rlhf_step(t_list, ref.init_policy(), w, prompt, random.Random(seed), value=as_list, **kw)
    out_dict = mod.rlhf_step(t_dict, ref.init_policy(), w, prompt, random.Random(seed), value=as_dict, **kw)
    assert out_list == out_dict
    assert t_list == t_dict
    assert as_list == [as_dict[x] for x in ref.PROMPTS]


@MODS
@pytest.mark.parametrize("kl_penalty", ["full", "k1", "k2", "k3"])
def test_train_rlhf_history_records_the_penalty_and_the_value_loss(mod, rm_weights, kl_penalty):
    value = {x: 0.0 for x in ref.PROMPTS}
    theta = ref.init_policy()
    h = mod.train_rlhf(theta, ref.init_policy(), rm_weights, 200, 3, beta=0.2, kl_penalty=kl_penalty, vf_coef=0.5, value=value)
    kl, pen = np.asarray(h["kl"], dtype=float), np.asarray(h["kl_penalty"], dtype=float)
    assert_close(h["reward"], np.asarray(h["score"]) - 0.2 * pen, rtol=1e-12, atol=1e-12)
    assert_close(h["mean_kl"], np.cumsum(kl) / np.arange(1, 201), rtol=1e-9, atol=1e-12)  # the monitor: exact KL
    if kl_penalty == "full":
        assert np.array_equal(kl, pen)
    else:
        assert not np.array_equal(kl, pen)
    assert np.all(np.asarray(h["value_loss"]) >= 0.0)
    assert any(value[x] != 0.0 for x in ref.PROMPTS), "the given baseline is updated in place"
    # the baseline learns the mean return of each prompt: late value losses are smaller than early ones
    vl = np.asarray(h["value_loss"], dtype=float)
    assert vl[150:].mean() < vl[:50].mean()


@MODS
def test_train_rlhf_baseline_none_keeps_its_own_zeros(mod, rm_weights):
    """value=None with vf_coef > 0: a fresh zero baseline for the run, the same as passing zeros."""
    t_none, t_zero = ref.init_policy(), ref.init_policy()
    h_none = mod.train_rlhf(t_none, ref.init_policy(), rm_weights, 100, 5, vf_coef=0.3)
    h_zero = mod.train_rlhf(t_zero, ref.init_policy(), rm_weights, 100, 5, vf_coef=0.3, value={x: 0.0 for x in ref.PROMPTS})
    for key in ref.HISTORY_KEYS:
        assert_close(h_none[key], h_zero[key], rtol=0, atol=0)
    assert t_none == t_zero
    assert float(h_none["value_loss"][0]) > 0.0


# ================================================================== 2. DPO

DPO_CASES = [("sigmoid", 0.0), ("sigmoid", 0.1), ("sigmoid", 0.3), ("robust", 0.0), ("robust", 0.1), ("robust", 0.3), ("ipo", 0.0), ("hinge", 0.0)]
DPO_IDS = [f"{t}-ls{ls}" for t, ls in DPO_CASES]


def token_ids(y):
    return [ref.VOCAB.index(t) for t in (y.split() if isinstance(y, str) else y)]


def dpo_u(row, ref_row, pos, neg, per_token=False) -> float:
    """The margin of log-ratios; ``per_token``: each averaged over its response, as TRL's IPO does."""
    logp, logq = np_log_softmax(row), np_log_softmax(ref_row)
    pos_ids, neg_ids = token_ids(pos), token_ids(neg)
    pos_sum = float(sum(logp[a] - logq[a] for a in pos_ids))
    neg_sum = float(sum(logp[a] - logq[a] for a in neg_ids))
    if per_token:
        return pos_sum / len(pos_ids) - neg_sum / len(neg_ids)
    return pos_sum - neg_sum


def dpo_loss(row, ref_row, pos, neg, beta, loss_type, ls) -> float:
    """TRL's DPO losses, written independently of the package from log_softmax."""
    u = dpo_u(row, ref_row, pos, neg, per_token=loss_type == "ipo")
    h = beta * u
    if loss_type == "sigmoid":
        return (1 - ls) * softplus(-h) + ls * softplus(h)
    if loss_type == "robust":
        return ((1 - ls) * softplus(-h) - ls * softplus(h)) / (1 - 2 * ls)
    if loss_type == "ipo":
        return (u - 1 / (2 * beta)) ** 2
    return max(0.0, 1 - h)


@MODS
@pytest.mark.parametrize("loss_type, ls", DPO_CASES, ids=DPO_IDS)
@given(
    theta=policies(-5, 5),
    ref_policy=policies(-5, 5),
    x=prompts,
    y_pos=responses(vocab_only=True, min_tokens=1, max_tokens=4),
    y_neg=responses(vocab_only=True, min_tokens=1, max_tokens=4),
    beta=floats(0.05, 5.0),
    lr=floats(1e-3, 0.5),
)
def test_dpo_step_is_gradient_descent_on_its_loss(mod, loss_type, ls, theta, ref_policy, x, y_pos, y_neg, beta, lr):
    """The loss returned is the loss before the step, and theta moves by -lr x its finite-difference gradient."""
    before = copy_policy(theta)
    if loss_type == "hinge":  # the kink at h = 1: finite differences across it are meaningless
        assume(abs(1 - beta * dpo_u(before[x], ref_policy[x], y_pos, y_neg)) > 1e-2)
    loss = mod.dpo_step(theta, ref_policy, x, y_pos, y_neg, beta, lr, loss_type=loss_type, label_smoothing=ls)
    expected = dpo_loss(before[x], ref_policy[x], y_pos, y_neg, beta, loss_type, ls)
    assert loss == pytest.approx(expected, rel=1e-9, abs=1e-12)
    fd = gradient(lambda row: dpo_loss(row, ref_policy[x], y_pos, y_neg, beta, loss_type, ls), before[x])
    delta = np.asarray(theta[x]) - np.asarray(before[x])
    assert_close(delta, -lr * fd, rtol=1e-6, atol=1e-9 * max(1.0, abs(expected)))
    for other in ref.PROMPTS:
        if other != x:
            assert theta[other] == before[other]


def legacy_dpo_step(theta, ref_policy, x, pos, neg, beta, lr):
    """The original dpo_step (before loss_type existed), operation for operation."""
    logits = theta[x]
    logp, logq = ref.log_softmax(logits), ref.log_softmax(ref_policy[x])
    pos, neg = token_ids(pos), token_ids(neg)
    pos_logratio = 0.0
    for a in pos:
        pos_logratio += logp[a] - logq[a]
    neg_logratio = 0.0
    for a in neg:
        neg_logratio += logp[a] - logq[a]
    h = beta * (pos_logratio - neg_logratio)
    loss = softplus(-h)
    p = ref.softmax(logits)
    scale = lr * ref.sigmoid(-h) * beta
    for j in range(len(logits)):
        logits[j] += scale * ((pos.count(j) - len(pos) * p[j]) - (neg.count(j) - len(neg) * p[j]))
    return loss


@given(
    theta=policies(-50, 50, extreme=True),
    ref_policy=policies(-50, 50, extreme=True),
    x=prompts,
    y_pos=responses(vocab_only=True, min_tokens=1),
    y_neg=responses(vocab_only=True, min_tokens=1),
    beta=st.one_of(floats(1e-3, 5.0), floats(5.0, 500.0)),
    lr=floats(1e-3, 1.0),
)
def test_reference_dpo_sigmoid_without_smoothing_is_the_original_step_bit_for_bit(theta, ref_policy, x, y_pos, y_neg, beta, lr):
    """The defaults keep today's numbers exactly (METHODS.md: step = lr * g * beta, in that order)."""
    t_new, t_old = copy_policy(theta), copy_policy(theta)
    assert ref.dpo_step(t_new, ref_policy, x, y_pos, y_neg, beta, lr) == legacy_dpo_step(t_old, ref_policy, x, y_pos, y_neg, beta, lr)
    assert t_new == t_old


@MODS
@given(theta=policies(-5, 5), ref_policy=policies(-5, 5), x=prompts, beta=floats(0.05, 5.0), lr=floats(1e-3, 0.5))
def test_dpo_robust_without_smoothing_is_sigmoid(mod, theta, ref_policy, x, beta, lr):
    t_sig, t_rob = copy_policy(theta), copy_policy(theta)
    l_sig = mod.dpo_step(t_sig, ref_policy, x, "clear kind", "rude", beta, lr, loss_type="sigmoid")
    l_rob = mod.dpo_step(t_rob, ref_policy, x, "clear kind", "rude", beta, lr, loss_type="robust")
    assert l_rob == pytest.approx(l_sig, rel=1e-12, abs=1e-15)
    assert_close(t_rob[x], t_sig[x], rtol=1e-12, atol=1e-15)


@MODS
@pytest.mark.parametrize("loss_type, ls", DPO_CASES, ids=DPO_IDS)
@given(theta=policies(-5, 5), x=prompts, beta=floats(0.05, 5.0))
def test_dpo_losses_at_the_reference(mod, loss_type, ls, theta, x, beta):
    """pi = pi_ref: u = 0, so sigmoid and robust give log 2 (any smoothing), IPO (1 / 2 beta)^2, hinge 1."""
    expected = {"sigmoid": math.log(2.0), "robust": math.log(2.0), "ipo": (1 / (2 * beta)) ** 2, "hinge": 1.0}[loss_type]
    loss = mod.dpo_step(theta, copy_policy(theta), x, "clear kind", "rude", beta, 0.05, loss_type=loss_type, label_smoothing=ls)
    assert loss == pytest.approx(expected, rel=1e-12)


def fixed_point_run(mod, loss_type, ls, beta, steps=3000, lr=0.5):
    theta, ref_policy = ref.init_policy(), ref.init_policy()
    for _ in range(steps):
        mod.dpo_step(theta, ref_policy, "help me", "clear", "rude", beta, lr, loss_type=loss_type, label_smoothing=ls)
    return beta * dpo_u(theta["help me"], ref_policy["help me"], "clear", "rude")


@MODS
@pytest.mark.parametrize("ls", [0.1, 0.3])
def test_dpo_label_smoothing_converges_to_the_cdpo_margin(mod, ls):
    """cDPO: the gradient vanishes where sigmoid(h) = 1 - ls, i.e. h = log((1 - ls) / ls) -- not at infinity."""
    assert fixed_point_run(mod, "sigmoid", ls, 1.0) == pytest.approx(math.log((1 - ls) / ls), rel=1e-6)


@MODS
@pytest.mark.parametrize("beta", [0.25, 1.0])
def test_dpo_ipo_converges_to_its_target_margin(mod, beta):
    """IPO regresses u to 1 / (2 beta)."""
    h = fixed_point_run(mod, "ipo", 0.0, beta, lr=0.1)
    assert h / beta == pytest.approx(1 / (2 * beta), rel=1e-6)


@MODS
@pytest.mark.parametrize("beta", [0.25, 1.0])
def test_dpo_ipo_regresses_the_per_token_margin_as_trl_does(mod, beta):
    """TRL's IPO averages each log-ratio over its response's tokens: with a two-token chosen and a
    three-token rejected response, the per-token margin (not the summed one) goes to 1 / (2 beta)."""
    theta, ref_policy = ref.init_policy(), ref.init_policy()
    for _ in range(3000):
        mod.dpo_step(theta, ref_policy, "help me", "clear kind", "rude short vague", beta, 0.1, loss_type="ipo")
    per_token = dpo_u(theta["help me"], ref_policy["help me"], "clear kind", "rude short vague", per_token=True)
    summed = dpo_u(theta["help me"], ref_policy["help me"], "clear kind", "rude short vague")
    assert per_token == pytest.approx(1 / (2 * beta), rel=1e-6)
    assert abs(summed - 1 / (2 * beta)) > 0.1


@MODS
def test_dpo_hinge_stops_once_the_margin_is_reached(mod):
    theta, ref_policy = ref.init_policy(), ref.init_policy()
    losses = [mod.dpo_step(theta, ref_policy, "help me", "clear", "rude", 0.5, 0.5, loss_type="hinge") for _ in range(200)]
    assert losses[0] == 1.0 and losses[-1] == 0.0
    frozen = list(theta["help me"])
    assert mod.dpo_step(theta, ref_policy, "help me", "clear", "rude", 0.5, 0.5, loss_type="hinge") == 0.0
    assert theta["help me"] == frozen, "loss 0: zero gradient, no update"


def replay_dpo(theta, ref_policy, pairs, epochs, beta, lr, loss_type, ls, seed):
    """METHODS.md's walk, written out: fresh order every epoch, shuffled by one Random(seed)."""
    rng = random.Random(seed) if seed is not None else None
    hist = {k: [] for k in ref.DPO_HISTORY_KEYS}
    for _ in range(epochs):
        order = list(range(len(pairs)))
        if rng is not None:
            rng.shuffle(order)
        for i in order:
            x, y_pos, y_neg = pairs[i]
            logp, logq = np_log_softmax(theta[x]), np_log_softmax(ref_policy[x])
            chosen = beta * float(sum(logp[a] - logq[a] for a in token_ids(y_pos)))
            rejected = beta * float(sum(logp[a] - logq[a] for a in token_ids(y_neg)))
            loss = ref.dpo_step(theta, ref_policy, x, y_pos, y_neg, beta, lr, loss_type=loss_type, label_smoothing=ls)
            hist["prompt"].append(ref.PROMPTS.index(x))
            hist["loss"].append(loss)
            hist["rewards/chosen"].append(chosen)
            hist["rewards/rejected"].append(rejected)
            hist["rewards/margins"].append(chosen - rejected)
            hist["rewards/accuracies"].append(1.0 if chosen > rejected else 0.0)
    return hist


@MODS
@pytest.mark.parametrize("loss_type, ls", [("sigmoid", 0.0), ("sigmoid", 0.2), ("robust", 0.1), ("ipo", 0.0), ("hinge", 0.0)])
@given(
    pairs_seed=st.integers(0, 2**32),
    n=st.integers(1, 12),
    epochs=st.integers(1, 3),
    seed=st.one_of(st.none(), st.integers(0, 2**40)),
    beta=floats(0.05, 2.0),
    lr=floats(1e-3, 0.5),
    rows=st.booleans(),
)
def test_train_dpo_walks_the_pairs_as_specified(mod, loss_type, ls, pairs_seed, n, epochs, seed, beta, lr, rows):
    train_dpo = mod.train_dpo
    pairs = ref.make_dataset(n, pairs_seed)
    theta, expected_theta = ref.init_policy(), ref.init_policy()
    h = train_dpo(theta, ref.init_policy(), ref.pairs_to_rows(pairs) if rows else pairs, epochs, beta, lr, loss_type, ls, seed)
    expected = replay_dpo(expected_theta, ref.init_policy(), pairs, epochs, beta, lr, loss_type, ls, seed)
    assert set(h) == set(ref.DPO_HISTORY_KEYS)
    assert [int(v) for v in h["prompt"]] == expected["prompt"]
    for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins"):
        assert_close(h[key], expected[key], rtol=1e-9, atol=1e-12, err_msg=key)
    chosen, rejected = np.asarray(h["rewards/chosen"], dtype=float), np.asarray(h["rewards/rejected"], dtype=float)
    assert_close(h["rewards/margins"], chosen - rejected, rtol=0, atol=0)
    assert_close(h["rewards/accuracies"], (chosen > rejected).astype(float), rtol=0, atol=0)
    # the independent replay orders chosen and rejected the same way wherever they are not within rounding
    clear = np.abs(np.asarray(expected["rewards/margins"])) > 1e-9
    assert_close(np.asarray(h["rewards/accuracies"])[clear], np.asarray(expected["rewards/accuracies"])[clear], rtol=0, atol=0)
    assert_close([theta[x] for x in ref.PROMPTS], [expected_theta[x] for x in ref.PROMPTS], rtol=1e-12, atol=1e-15)


@MODS
def test_train_dpo_learns_the_lesson_preferences(mod, rm_weights):
    train_dpo = mod.train_dpo
    theta = ref.init_policy()
    start = ref.expected_score(theta, rm_weights)
    h = train_dpo(theta, ref.init_policy(), ref.make_dataset(300, 0), 3, 0.1, 0.5, seed=0)
    acc = np.asarray(h["rewards/accuracies"], dtype=float)
    loss = np.asarray(h["loss"], dtype=float)
    assert loss[0] == pytest.approx(math.log(2.0), rel=1e-12)  # pi = pi_ref at the start
    assert acc[-300:].mean() > 0.95
    assert loss[-300:].mean() < loss[:300].mean()
    assert ref.expected_score(theta, rm_weights) > start + 1.0


# ================================================================= 3. GRPO


def group_advantages(rewards, scale_rewards):
    """Group-relative advantages; the mean summed left to right as the spec does, so signs match exactly."""
    total = 0.0
    for r in rewards:
        total += r
    mean = total / len(rewards)
    std = float(np.std(np.asarray(rewards) - mean, ddof=1))
    adv = [(r - mean) / (std + 1e-4) if scale_rewards == "group" else r - mean for r in rewards]
    return adv, mean, std


def grpo_loss(row, p_old, logq, tokens, adv, beta, eps, eps_high) -> float:
    """mean_i(-min(r_i A_i, clip(r_i, 1-eps, 1+eps_high) A_i) + beta k3_i), independently of the package."""
    p = np_softmax(row)
    logp = np_log_softmax(row)
    total = 0.0
    for a, A in zip(tokens, adv):
        ratio = p[a] / p_old[a]
        clipped = min(max(ratio, 1 - eps), 1 + eps_high)
        log_r = logq[a] - logp[a]
        total += -min(ratio * A, clipped * A) + beta * (math.exp(log_r) - log_r - 1)
    return total / len(tokens)


def inverse_cdf_tokens(p, seed, G):
    rng = random.Random(seed)
    cdf = np.cumsum(p)
    out = []
    for _ in range(G):
        u = rng.random()
        out.append(int(np.argmax(cdf > u)) if np.any(cdf > u) else V - 1)
    return out


grpo_common = dict(
    theta=small_rows,
    ref_policy=small_rows,
    w=weight_dicts(),
    prompt=prompts,
    seed=st.integers(0, 2**40),
    G=st.integers(2, 16),
    beta=st.one_of(st.just(0.0), floats(0.0, 0.5)),
    eps=floats(0.01, 0.5),
    eps_high=st.one_of(st.none(), floats(0.01, 0.6)),
    scale_rewards=st.sampled_from(["group", "none"]),
    lr=floats(1e-3, 0.5),
)


@MODS
@given(**grpo_common)
def test_grpo_step_is_gradient_descent_on_its_loss(mod, theta, ref_policy, w, prompt, seed, G, beta, eps, eps_high, scale_rewards, lr):
    """num_iterations = 1: the loss recorded is the GRPO loss, and theta moves by -lr x its FD gradient."""
    grpo_step = mod.grpo_step
    before = copy_policy(theta)
    out = grpo_step(theta, ref_policy, w, prompt, random.Random(seed), G, beta, eps, eps_high, lr, scale_rewards, 1)
    p_old = np_softmax(before[prompt])
    logq = np_log_softmax(ref_policy[prompt])
    tokens = [int(a) for a in out["tokens"]]
    assert tokens == inverse_cdf_tokens(p_old, seed, G)
    rewards = [reward_of(w, a) for a in tokens]
    adv, mean, std = group_advantages(rewards, scale_rewards)
    assert out["score"] == pytest.approx(mean, rel=1e-12, abs=1e-12)
    assert out["reward_std"] == pytest.approx(std, rel=1e-9, abs=1e-12)
    assert out["kl"] == pytest.approx(exact_kl(before[prompt], ref_policy[prompt]), rel=1e-9, abs=1e-12)
    assert out["clip_frac"] == 0.0, "at the first iteration every ratio is exactly 1"
    high = eps if eps_high is None else eps_high
    loss = grpo_loss(before[prompt], p_old, logq, tokens, adv, beta, eps, high)
    scale = max(1.0, abs(loss), float(np.max(np.abs(adv))))
    assert out["loss"] == pytest.approx(loss, rel=1e-9, abs=1e-12 * scale)
    fd = gradient(lambda row: grpo_loss(row, p_old, logq, tokens, adv, beta, eps, high), before[prompt])
    delta = np.asarray(theta[prompt]) - np.asarray(before[prompt])
    assert_close(delta, -lr * fd, rtol=1e-6, atol=1e-9 * scale)
    for other in ref.PROMPTS:
        if other != prompt:
            assert theta[other] == before[other]


def require(ok: bool) -> None:
    assert ok, "a ratio within rounding of a clip edge: pick another case"


def grpo_numpy(row, ref_row, tokens, adv, beta, eps, eps_high, lr, iterations, away_from_kinks=assume):
    """METHODS.md section 3's loop over iterations, in numpy: (final row, clipped count, first loss)."""
    z = np.asarray(row, dtype=float)
    p_old = np_softmax(z)
    logq = np_log_softmax(ref_row)
    G = len(tokens)
    clipped, first_loss = 0, None
    for it in range(iterations):
        p = np_softmax(z)
        if it == 0:
            first_loss = grpo_loss(z, p_old, logq, tokens, adv, beta, eps, eps_high)
        grad = np.zeros(V)
        for a, A in zip(tokens, adv):
            ratio = p[a] / p_old[a]
            # a ratio within rounding of a clip edge could go either way
            away_from_kinks(abs(ratio - (1 + eps_high)) > 1e-9 and abs(ratio - (1 - eps)) > 1e-9)
            flat = (A >= 0 and ratio > 1 + eps_high) or (A < 0 and ratio < 1 - eps)
            coef = 0.0 if flat else -A * ratio
            clipped += flat
            # np.log: a probability that underflowed to 0 (a diverging step) gives -inf, not an error
            coef += beta * (1 - math.exp(logq[a] - float(np.log(p[a]))))
            grad += coef * (np.eye(V)[a] - p)
        z = z - lr * grad / G
    return z, clipped, first_loss


@MODS
@given(**{**grpo_common, "lr": floats(1e-3, 2.0)}, iterations=st.integers(1, 4))
def test_grpo_step_follows_the_spec_over_iterations(mod, theta, ref_policy, w, prompt, seed, G, beta, eps, eps_high, scale_rewards, lr, iterations):
    """Several iterations on one group: ratios move off 1 and the clip acts (flat samples keep only the KL term)."""
    grpo_step = mod.grpo_step
    before = copy_policy(theta)
    high = eps if eps_high is None else eps_high
    try:
        out = grpo_step(
            theta, ref_policy, w, prompt, random.Random(seed), G, beta, eps, eps_high, lr, scale_rewards, iterations
        )
    except FloatingPointError:
        # Large steps can overflow: then the spec itself leaves non-finite logits, and theta is untouched.
        rng = random.Random(seed)
        tokens = [ref.sample(ref.softmax(before[prompt]), rng) for _ in range(G)]
        adv, _, _ = group_advantages([reward_of(w, a) for a in tokens], scale_rewards)
        with np.errstate(all="ignore"):
            z, _, _ = grpo_numpy(before[prompt], ref_policy[prompt], tokens, adv, beta, eps, high, lr, iterations)
        assert not np.all(np.isfinite(z)), z
        assert theta == before
        return
    tokens = [int(a) for a in out["tokens"]]
    adv, _, _ = group_advantages([reward_of(w, a) for a in tokens], scale_rewards)
    z, clipped, loss = grpo_numpy(before[prompt], ref_policy[prompt], tokens, adv, beta, eps, high, lr, iterations)
    assert_close(theta[prompt], z, rtol=1e-8, atol=1e-10)
    assert out["clip_frac"] == clipped / (G * iterations)
    assert out["loss"] == pytest.approx(loss, rel=1e-9, abs=1e-12 * max(1.0, float(np.max(np.abs(adv)))))


@MODS
@given(
    theta=small_rows,
    w=weight_dicts(),
    prompt=prompts,
    seed=st.integers(0, 2**40),
    G=st.integers(2, 16),
    scale_rewards=st.sampled_from(["group", "none"]),
    lr=floats(0.01, 0.5),
)
def test_grpo_advantages_are_zero_mean_with_unit_std(mod, theta, w, prompt, seed, G, scale_rewards, lr):
    """Read the advantages back from the implementation (beta = 0, one iteration, ratio 1):

    the recorded loss is -mean(A), so ~0; and theta_j moves by lr/G * sum_{i: a_i = j} A_i
    (given sum A = 0), so each sampled token's advantage is recovered; they have Bessel std
    std/(std + 1e-4) ~ 1 with scale_rewards="group", and are r - mean with "none".
    """
    grpo_step = mod.grpo_step
    before = copy_policy(theta)
    out = grpo_step(theta, ref.init_policy(), w, prompt, random.Random(seed), G, 0.0, 0.2, None, lr, scale_rewards, 1)
    tokens = [int(a) for a in out["tokens"]]
    rewards = [reward_of(w, a) for a in tokens]
    spread = max(1.0, max(abs(r) for r in rewards))
    std = float(out["reward_std"])
    scale = 1.0 / (std + 1e-4) if scale_rewards == "group" else 1.0
    assert out["loss"] == pytest.approx(0.0, abs=1e-13 * spread * scale * G)
    delta = np.asarray(theta[prompt]) - np.asarray(before[prompt])
    counts = np.bincount(tokens, minlength=V)
    recovered = {a: delta[a] * G / (lr * counts[a]) for a in set(tokens)}
    adv = np.array([recovered[a] for a in tokens])
    tol = 1e-9 * spread * scale * G
    assert abs(adv.mean()) <= tol
    for a in range(V):
        if counts[a] == 0:
            assert abs(delta[a]) <= 1e-12 * spread * scale * lr, "an unsampled token moves only by -lr/G p_j sum(A) ~ 0"
    if scale_rewards == "none":
        assert_close(adv, np.asarray(rewards) - float(out["score"]), rtol=1e-7, atol=tol)
    elif std > 0.0:
        assert float(np.std(adv, ddof=1)) == pytest.approx(std / (std + 1e-4), rel=1e-6, abs=tol)
        if std > 0.1:  # std >> 1e-4: unit std
            assert float(np.std(adv, ddof=1)) == pytest.approx(1.0, abs=2e-3)


@MODS
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_grpo_group_with_equal_rewards_has_no_gradient(mod, beta):
    """A policy that always samples the same token: std 0, advantages 0; at pi = pi_ref the k3 gradient is 0 too."""
    theta = {x: [60.0] + [0.0] * (V - 1) for x in ref.PROMPTS}
    out = mod.grpo_step(theta, copy_policy(theta), {"clear": 1.0}, "help me", random.Random(1), num_generations=8, beta=beta)
    assert [int(a) for a in out["tokens"]] == [0] * 8
    assert out["reward_std"] == 0.0 and out["loss"] == 0.0
    assert theta["help me"] == [60.0] + [0.0] * (V - 1)


@MODS
def test_grpo_clips_only_from_the_second_iteration(mod, rm_weights):
    grpo_step = mod.grpo_step
    one = grpo_step(ref.init_policy(), ref.init_policy(), rm_weights, "help me", random.Random(0), 16, 0.0, 0.01, None, 2.0, "group", 1)
    four = grpo_step(ref.init_policy(), ref.init_policy(), rm_weights, "help me", random.Random(0), 16, 0.0, 0.01, None, 2.0, "group", 4)
    assert one["clip_frac"] == 0.0
    assert 0.0 < four["clip_frac"] <= 0.75
    assert [int(a) for a in one["tokens"]] == [int(a) for a in four["tokens"]]
    assert one["loss"] == four["loss"], "the loss is recorded at the first iteration"


@MODS
@pytest.mark.parametrize("seed", range(4))
def test_grpo_epsilon_high_widens_only_the_upper_clip(mod, rm_weights, seed):
    """DAPO's clip-higher: with epsilon_high huge, positive advantages are never clipped; negative
    ones still are at 1 - epsilon. Both runs follow the spec's loop exactly."""
    grpo_step = mod.grpo_step
    runs = {}
    for high in (None, 1e3):
        theta = ref.init_policy()
        out = grpo_step(theta, ref.init_policy(), rm_weights, "help me", random.Random(seed), 16, 0.0, 0.01, high, 2.0, "group", 4)
        tokens = [int(a) for a in out["tokens"]]
        adv, _, _ = group_advantages([reward_of(rm_weights, a) for a in tokens], "group")
        z, clipped, _ = grpo_numpy(
            [0.0] * V, [0.0] * V, tokens, adv, 0.0, 0.01, 0.01 if high is None else high, 2.0, 4, away_from_kinks=require
        )
        assert_close(theta["help me"], z, rtol=1e-8, atol=1e-10)
        assert out["clip_frac"] == clipped / 64
        runs[high] = (out["clip_frac"], sum(1 for a in adv if a < 0))
    symmetric, (asymmetric, negatives) = runs[None][0], runs[1e3]
    assert 0.0 < asymmetric < symmetric
    assert asymmetric <= negatives * 3 / 64  # only negative advantages, from the second iteration on


@MODS
@given(
    theta=small_rows,
    ref_policy=small_rows,
    w=weight_dicts(),
    prompt=prompts,
    seed=st.integers(0, 2**40),
    eps=floats(0.01, 0.5),
    iterations=st.integers(1, 4),
)
def test_grpo_epsilon_high_none_means_epsilon(mod, theta, ref_policy, w, prompt, seed, eps, iterations):
    grpo_step = mod.grpo_step
    t1, t2 = copy_policy(theta), copy_policy(theta)
    o1 = grpo_step(t1, ref_policy, w, prompt, random.Random(seed), 6, 0.04, eps, None, 0.5, "group", iterations)
    o2 = grpo_step(t2, ref_policy, w, prompt, random.Random(seed), 6, 0.04, eps, eps, 0.5, "group", iterations)
    assert [int(a) for a in o1["tokens"]] == [int(a) for a in o2["tokens"]]
    for key in ("score", "reward_std", "kl", "clip_frac", "loss"):
        assert o1[key] == o2[key], key
    assert t1 == t2


def replay_grpo(theta, ref_policy, w, steps, seed, **kw):
    rng = random.Random(seed)
    hist = {k: [] for k in ref.GRPO_HISTORY_KEYS}
    kl_sum = 0.0
    for t in range(steps):
        x = rng.choice(ref.PROMPTS)
        out = ref.grpo_step(theta, ref_policy, w, x, rng, **kw)
        kl_sum += out["kl"]
        hist["prompt"].append(ref.PROMPTS.index(x))
        for k in ("score", "reward_std", "kl", "clip_frac", "loss"):
            hist[k].append(out[k])
        hist["mean_kl"].append(kl_sum / (t + 1))
    return hist


@MODS
@given(
    seed=st.integers(0, 2**40),
    steps=st.integers(1, 40),
    G=st.integers(2, 10),
    beta=floats(0.0, 0.5),
    eps_high=st.one_of(st.none(), floats(0.05, 0.5)),
    scale_rewards=st.sampled_from(["group", "none"]),
    iterations=st.integers(1, 3),
)
def test_train_grpo_is_grpo_steps_on_one_stream(mod, rm_weights, seed, steps, G, beta, eps_high, scale_rewards, iterations):
    train_grpo = mod.train_grpo
    kw = dict(num_generations=G, beta=beta, epsilon=0.2, epsilon_high=eps_high, lr=0.1, scale_rewards=scale_rewards, num_iterations=iterations)
    theta, expected_theta = ref.init_policy(), ref.init_policy()
    h = train_grpo(theta, ref.init_policy(), rm_weights, steps, seed, kl_threshold=1e9, **kw)
    expected = replay_grpo(expected_theta, ref.init_policy(), rm_weights, steps, seed, **kw)
    assert set(h) == set(ref.GRPO_HISTORY_KEYS)
    assert [int(v) for v in h["prompt"]] == expected["prompt"]
    for key in ref.GRPO_HISTORY_KEYS[1:]:
        assert_close(h[key], expected[key], rtol=1e-9, atol=1e-12, err_msg=key)
    assert float(h["kl"][0]) == 0.0  # theta = ref at the start
    assert_close([theta[x] for x in ref.PROMPTS], [expected_theta[x] for x in ref.PROMPTS], rtol=1e-12, atol=1e-15)


@MODS
def test_train_grpo_increases_expected_score(mod, rm_weights):
    train_grpo = mod.train_grpo
    theta = ref.init_policy()
    start = ref.expected_score(theta, rm_weights)
    train_grpo(theta, ref.init_policy(), rm_weights, 300, 0)
    assert ref.expected_score(theta, rm_weights) > start + 0.5


@MODS
def test_train_grpo_warns_once_when_mean_kl_passes_threshold(mod, rm_weights):
    train_grpo = mod.train_grpo
    with pytest.warns(ref.KLWarning) as record:
        h = train_grpo(ref.init_policy(), ref.init_policy(), rm_weights, 200, 0, beta=0.0, lr=0.5, kl_threshold=0.01)
    assert len([r for r in record if issubclass(r.category, ref.KLWarning)]) == 1
    assert max(float(v) for v in h["mean_kl"]) > 0.01
    # filterwarnings=error: a run that stays under the threshold must not warn at all
    train_grpo(ref.init_policy(), ref.init_policy(), rm_weights, 100, 0, kl_threshold=50.0)


@MODS
def test_train_grpo_raises_floating_point_error_on_divergence(mod, rm_weights):
    message = r"train_grpo diverged at step 0: logits overflowed \(lr=1e\+308, beta=0\.04\)"
    with pytest.raises(FloatingPointError, match=f"^{message}$"):
        mod.train_grpo(ref.init_policy(), ref.init_policy(), rm_weights, 50, 0, lr=1e308)


# ============================================================= 4. Best-of-N


def brute_force_best_of_n(pi, scores, n) -> np.ndarray:
    """Enumerate all V^n draws: keep the first of the highest score; the kept token's law."""
    draws = np.array(list(itertools.product(range(V), repeat=n)))
    s = np.asarray(scores)[draws]
    kept = draws[np.arange(len(draws)), np.argmax(s, axis=1)]  # argmax: the first maximum
    prob = np.prod(np.asarray(pi)[draws], axis=1)
    return np.bincount(kept, weights=prob, minlength=V)


@st.composite
def tied_weights(draw):
    """Weights over VOCAB drawn from a few values, so ties are common; never length-only."""
    values = draw(st.lists(floats(-3, 3), min_size=2, max_size=4, unique=True))
    w = {tok: draw(st.sampled_from(values)) for tok in ref.VOCAB}
    assume(not_length_only(w))
    return w


bon_weights = st.one_of(tied_weights(), weight_dicts().filter(not_length_only))


@MODS
@given(policy=policies(-3, 3), w=bon_weights, n=st.integers(1, 4))
def test_best_of_n_distribution_is_exact(mod, policy, w, n):
    """Against enumeration of all 8^n draws, ties included (the first sampled of the best is kept)."""
    out = mod.best_of_n(policy, w, n)
    scores = [reward_of(w, a) for a in range(V)]
    for x in ref.PROMPTS:
        got = np.asarray(out["distribution"][x], dtype=float)
        assert got.shape == (V,)
        assert_close(got, brute_force_best_of_n(np_softmax(policy[x]), scores, n), rtol=1e-9, atol=1e-12)


@MODS
@given(policy=policies(-10, 10), w=bon_weights, n=st.integers(1, 64))
def test_best_of_n_distribution_is_a_distribution(mod, policy, w, n):
    out = mod.best_of_n(policy, w, n)
    scores = np.array([reward_of(w, a) for a in range(V)])
    score = 0.0
    for x in ref.PROMPTS:
        d = np.asarray(out["distribution"][x], dtype=float)
        assert np.all(d >= 0.0)
        assert d.sum() == pytest.approx(1.0, abs=1e-12)
        # the kept token never scores below the policy's own average, and the law only moves mass upward
        assert d @ scores >= np_softmax(policy[x]) @ scores - 1e-12
        score += float(d @ scores)
    assert out["expected_score"] == pytest.approx(score / 3, rel=1e-12, abs=1e-12)
    assert out["kl_analytic"] == pytest.approx(math.log(n) - (n - 1) / n, rel=1e-15, abs=1e-300)
    assert out["sampled_score"] is None


@MODS
@given(policy=policies(-10, 10, extreme=True), w=bon_weights)
def test_best_of_one_is_the_policy(mod, policy, w):
    out = mod.best_of_n(policy, w, 1)
    for x in ref.PROMPTS:
        # F_le - F_lt cancels: P_bon(a) is exact to ~1 ulp of 1, absolutely (not relatively)
        assert_close(out["distribution"][x], np_softmax(policy[x]), rtol=1e-12, atol=1e-15)
    assert out["kl_exact"] == pytest.approx(0.0, abs=1e-12)
    assert out["kl_analytic"] == 0.0
    assert out["expected_score"] == pytest.approx(ref.expected_score(policy, w), rel=1e-12, abs=1e-12)


@MODS
@given(policy=policies(-3, 3), w=bon_weights, ns=st.lists(st.integers(1, 64), min_size=2, max_size=5, unique=True))
def test_best_of_n_kl_is_bounded_by_the_analytic_value_and_grows_with_n(mod, policy, w, ns):
    """KL(P_bon || pi) <= log n - (n-1)/n (exact only in the continuous limit), non-decreasing in n; so is the score."""
    best_of_n = mod.best_of_n
    outs = [best_of_n(policy, w, n) for n in sorted(ns)]
    for out in outs:
        # (P_bon is pi only up to rounding at n = 1: the KL may be -1e-17)
        assert -1e-15 <= out["kl_exact"] <= out["kl_analytic"] + 1e-12
    for small, large in zip(outs, outs[1:]):
        assert large["kl_exact"] >= small["kl_exact"] - 1e-12
        assert large["expected_score"] >= small["expected_score"] - 1e-12


@MODS
def test_best_of_n_ties_go_to_the_first_sampled(mod):
    """Two words share the top score: the kept token is split between them pi-proportionally."""
    policy = {x: [math.log(k + 1.0) for k in range(V)] for x in ref.PROMPTS}
    w = {tok: 0.0 for tok in ref.VOCAB}
    w[ref.VOCAB[2]] = w[ref.VOCAB[5]] = 1.0
    pi = np_softmax(policy["help me"])
    top = pi[2] + pi[5]
    d = np.asarray(mod.best_of_n(policy, w, 3)["distribution"]["help me"])
    assert d[2] == pytest.approx(pi[2] / top * (1 - (1 - top) ** 3), rel=1e-12)
    assert d[5] / d[2] == pytest.approx(pi[5] / pi[2], rel=1e-12)


@MODS
@pytest.mark.parametrize("n, seed", [(1, 0), (2, 1), (4, 2), (16, 3)])
def test_best_of_n_monte_carlo_agrees_with_the_exact_score(mod, rm_weights, n, seed):
    """20,000 samples: the sampled mean kept score is within 5 standard errors of the exact expectation."""
    policy = {x: [0.3 * ((i * 5 + k * 3) % 7) - 1.0 for k in range(V)] for i, x in enumerate(ref.PROMPTS)}
    out = mod.best_of_n(policy, rm_weights, n, samples=20_000, seed=seed)
    scores = np.array([reward_of(rm_weights, a) for a in range(V)])
    second = np.mean([np.asarray(out["distribution"][x], dtype=float) @ scores**2 for x in ref.PROMPTS])
    se = math.sqrt(max(second - out["expected_score"] ** 2, 0.0) / 20_000)
    assert abs(out["sampled_score"] - out["expected_score"]) <= 5 * se + 1e-12


# ========================================================== 5. "Ship It" refusal

LENGTH_ONLY = {
    "empty": {},
    "all-zero": {tok: 0.0 for tok in ref.VOCAB},
    "all-equal": {tok: 1.5 for tok in ref.VOCAB},
    "ints-equal": {tok: 2 for tok in ref.VOCAB},
    "oov-only": {"hello": 3.0, "great": -1.0},
    "one-zero": {"clear": 0.0},
}

REFUSING = {
    "train_rlhf": lambda m, th, w: m.train_rlhf(th, ref.init_policy(), w, 10, 0),
    "train_grpo": lambda m, th, w: m.train_grpo(th, ref.init_policy(), w, 10, 0),
    "best_of_n": lambda m, th, w: m.best_of_n(th, w, 4, samples=10),
}


@MODS
@pytest.mark.parametrize("fn", list(REFUSING))
@pytest.mark.parametrize("w", list(LENGTH_ONLY.values()), ids=list(LENGTH_ONLY))
def test_length_only_reward_model_is_refused(mod, fn, w):
    theta = ref.init_policy()
    with pytest.raises(ValueError, match=word("w")) as err:
        REFUSING[fn](mod, theta, dict(w))
    assert "scores responses by length alone" in str(err.value)
    assert theta == ref.init_policy()


@MODS
@pytest.mark.parametrize("fn", list(REFUSING))
def test_one_distinct_word_is_enough(mod, fn):
    REFUSING[fn](mod, ref.init_policy(), {"clear": 1e-9})


@MODS
def test_step_functions_take_a_length_only_reward_model(mod):
    """rlhf_step and grpo_step stay drop-in: an all-zero w is fine there (no reward signal, no refusal)."""
    zero = {tok: 0.0 for tok in ref.VOCAB}
    theta = ref.init_policy()
    out = mod.rlhf_step(theta, ref.init_policy(), zero, "help me", random.Random(0))
    assert out["score"] == 0.0 and out["reward"] == 0.0
    assert theta == ref.init_policy(), "advantage 0: no update"
    out = mod.grpo_step(theta, ref.init_policy(), zero, "help me", random.Random(0))
    assert out["reward_std"] == 0.0 and theta == ref.init_policy()
