"""Issue 9 section 7b on the reference: a training step whose record is not finite.

After a step's update and the logits' overflow check, the step's recorded floats are checked
in the order of the single run's history keys; the first that is not finite ends the run
with ``FloatingPointError("{run} diverged at step {t}: {key} overflowed (lr=..., beta=...)")``,
the step not recorded and theta holding its update. The single steps check what they return
before writing anything back; the sweeps check every run's steps (``sweep run {r}``) and
its summaries. Each case here is built so that only the record overflows, the logits stay
finite: a policy peaked to 1000 on one token has a gradient of exactly zero, and a reference
logit of -1e308 puts a log-ratio of 1e308 in a record.

Everything runs on ``rlhf_fast.reference`` and the reference sweep engines, whatever
``RLHF_FAST_BACKEND`` says (tests/test_records.py holds the backend-agnostic twin).
"""

from __future__ import annotations

import copy
import math
import random
import re
import warnings

import pytest
from rlhf_fast import _checks as checks
from rlhf_fast import reference as ref
from rlhf_fast import sweep as sweep_module

PROMPTS, VOCAB = ref.PROMPTS, ref.VOCAB
V = len(VOCAB)
CLEAR, KIND, RUDE, WRONG = (VOCAB.index(t) for t in ("clear", "kind", "rude", "wrong"))
W = {tok: (1.0 if tok in ref.GOOD_WORDS else -1.0) for tok in VOCAB}


def peaked(k: int) -> list[float]:
    """Logits whose softmax is exactly one-hot on ``k``: every PPO/GRPO gradient on it is 0."""
    row = [0.0] * V
    row[k] = 1000.0
    return row


def far(k: int) -> list[float]:
    """Reference logits whose log-probability of ``k`` is about -1e308 (the others ``-log 7``)."""
    row = [0.0] * V
    row[k] = -1e308
    return row


def policy(*rows: list[float]) -> dict[str, list[float]]:
    return {p: list(row) for p, row in zip(PROMPTS, rows, strict=True)}


def raises(message: str):
    return pytest.raises(FloatingPointError, match=f"^{re.escape(message)}$")


@pytest.fixture
def reference_engines(monkeypatch):
    """The sweep front ends on the reference's engines (as tests/test_parity.py runs them)."""
    monkeypatch.setattr(sweep_module, "_engines", sweep_module._ReferenceEngines)


def seed_with(choices: list[int], draws: int = 1) -> int:
    """The first seed whose steps draw the prompts ``choices``, each step ``rng.choice(PROMPTS)``
    then ``draws`` calls of ``rng.random()`` (PPO: the token; GRPO: the group)."""
    for seed in range(10_000):
        rng = random.Random(seed)
        drawn = []
        for _ in choices:
            drawn.append(rng.choice(range(len(PROMPTS))))
            for _ in range(draws):
                rng.random()
        if drawn == choices:
            return seed
    raise AssertionError(f"no seed draws {choices}")


# ----------------------------------------------------------------------------- helper


def test_non_finite_names_the_first_key_in_order():
    assert checks.non_finite(("a", "b", "c"), (1.0, 0.0, -2.5)) is None
    assert checks.non_finite(("a", "b", "c"), (1.0, math.inf, math.nan)) == "b"
    assert checks.non_finite(("a", "b", "c"), (math.nan, math.inf, 0.0)) == "a"
    assert checks.non_finite(("a", "b"), (1e308, -math.inf)) == "b"
    assert checks.non_finite((), ()) is None


# --------------------------------------------------------------------------------- PPO

# theta peaked on "clear", whose score 1e155 squares past the floats in the value loss; the
# value itself moves by lr * vf_coef * 1e155 = 5e151, below the overflow bound 2**512.
BIG_SCORE_W = {**{tok: 0.0 for tok in VOCAB}, "clear": 1e155}


def test_rlhf_step_value_loss_leaves_theta_and_value():
    theta = policy(peaked(CLEAR), peaked(CLEAR), peaked(CLEAR))
    reference = copy.deepcopy(theta)
    before = copy.deepcopy(theta)
    value = {p: 0.0 for p in PROMPTS}
    with raises("rlhf_step diverged: value_loss overflowed (lr=0.05, beta=0.1)"):
        ref.rlhf_step(theta, reference, BIG_SCORE_W, "help me", random.Random(0), vf_coef=0.01, ppo_epochs=1,
                      value=value)
    assert theta == before
    assert value == {p: 0.0 for p in PROMPTS}
    # without a baseline the record is finite and the step goes through (its update is 0)
    record = ref.rlhf_step(theta, reference, BIG_SCORE_W, "help me", random.Random(0))
    assert record["score"] == 1e155 and record["value_loss"] == 0.0


def test_train_rlhf_value_loss_keeps_the_failing_steps_value_update():
    theta = policy(peaked(CLEAR), peaked(CLEAR), peaked(CLEAR))
    reference = copy.deepcopy(theta)
    value = [0.0, 0.0, 0.0]
    x = random.Random(0).choice(range(len(PROMPTS)))
    with raises("train_rlhf diverged at step 0: value_loss overflowed (lr=0.05, beta=0.1)"):
        ref.train_rlhf(theta, reference, BIG_SCORE_W, 5, 0, vf_coef=0.01, ppo_epochs=1, value=value)
    # the step's value update stands, as theta's would (v - lr * vf_coef * (v - 1e155))
    assert value == [0.05 * 0.01 * 1e155 if i == x else 0.0 for i in range(len(PROMPTS))]
    assert theta == policy(peaked(CLEAR), peaked(CLEAR), peaked(CLEAR))


def test_train_rlhf_mean_kl_at_a_later_step_keeps_the_steps_before():
    """Two steps of KL 1e308 each: the running mean's sum overflows on the second, whose kl
    is finite. Steps on 'help me' (uniform, a normal reference) learn as usual before it."""
    theta0 = policy([0.0] * V, peaked(KIND), peaked(KIND))
    reference = policy([0.0] * V, far(KIND), far(KIND))
    seed = seed_with([0, 1, 0, 2])
    fail = 3

    # what the run must leave: its steps as rlhf_step takes them, on the same stream
    # (rlhf_step does not record the running mean, so it takes the failing step too)
    expected = copy.deepcopy(theta0)
    rng = random.Random(seed)
    for _ in range(fail + 1):
        ref.rlhf_step(expected, reference, W, rng.choice(PROMPTS), rng, beta=0.0)
    assert expected["help me"] != theta0["help me"]

    theta = copy.deepcopy(theta0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with raises(f"train_rlhf diverged at step {fail}: mean_kl overflowed (lr=0.05, beta=0.0)"):
            ref.train_rlhf(theta, reference, W, 10, seed, beta=0.0)
    assert theta == expected
    # the monitor warned once, at the first big step, before the failing one
    assert [str(c.message).split(" at step ")[1].split(" ")[0] for c in caught] == ["1"]


# -------------------------------------------------------------------------------- GRPO

# +-1e300 on "clear" and "wrong": any group holding one of them has squares past the floats,
# reward_std inf, and advantages (r - mean) / inf = 0, so the logits do not move.
EXTREME_W = {**W, "clear": 1e300, "wrong": -1e300}


def grpo_theta() -> dict[str, list[float]]:
    """'help me' never samples the extreme tokens (and learns); the other prompts are uniform."""
    row = [0.0] * V
    row[CLEAR] = row[WRONG] = -1000.0
    return policy(row, [0.0] * V, [0.0] * V)


def test_grpo_step_reward_std_leaves_theta():
    theta = policy([0.0] * V, [0.0] * V, [0.0] * V)
    reference = copy.deepcopy(theta)
    before = copy.deepcopy(theta)
    rng = random.Random(2)  # the group [7, 7, 0, 0, 6, 5, 5, 2] holds "wrong" and "clear"
    with raises("grpo_step diverged: reward_std overflowed (lr=0.05, beta=0.04)"):
        ref.grpo_step(theta, reference, EXTREME_W, "help me", rng)
    assert theta == before
    assert rng.getstate() != random.Random(2).getstate()  # the group was drawn


def test_train_grpo_reward_std_at_a_later_step_keeps_the_steps_before():
    theta0 = grpo_theta()
    reference = copy.deepcopy(theta0)
    seed = seed_with([0, 0, 1], draws=8)

    # grpo_step on the same stream: the failing step is the first it refuses
    expected = copy.deepcopy(theta0)
    rng = random.Random(seed)
    for fail in range(50):
        try:
            ref.grpo_step(expected, reference, EXTREME_W, rng.choice(PROMPTS), rng)
        except FloatingPointError as e:
            assert str(e) == "grpo_step diverged: reward_std overflowed (lr=0.05, beta=0.04)"
            break
    else:
        raise AssertionError("no step overflowed")
    assert fail >= 2 and expected["help me"] != theta0["help me"]

    theta = copy.deepcopy(theta0)
    with raises(f"train_grpo diverged at step {fail}: reward_std overflowed (lr=0.05, beta=0.04)"):
        ref.train_grpo(theta, reference, EXTREME_W, 50, seed)
    assert theta == expected  # the failing step's update is 0: its advantages are r / inf


def test_train_grpo_fuzzer_19454_shape():
    """Every weight +-1e300, an extreme lr and a tiny beta: reward_std, not a silent inf (a
    mixed group's advantages are r / inf = 0, so even lr = 1.7e308 leaves the logits)."""
    theta = policy([0.0] * V, [0.0] * V, [0.0] * V)
    w = {tok: 1e300 * weight for tok, weight in W.items()}
    with raises("train_grpo diverged at step 0: reward_std overflowed (lr=1.7e+308, beta=1e-300)"):
        ref.train_grpo(theta, copy.deepcopy(theta), w, 3, 0, lr=1.7e308, beta=1e-300)
    assert theta == policy([0.0] * V, [0.0] * V, [0.0] * V)


# --------------------------------------------------------------------------------- DPO

# 'answer me''s reference puts about -1e308 on "rude": a response holding it has a log-ratio
# of about 1e308, which beta = 10 takes past the floats.
def dpo_reference() -> dict[str, list[float]]:
    return policy([0.0] * V, far(RUDE), [0.0] * V)


def test_dpo_step_loss_leaves_theta():
    theta = policy([0.0] * V, [0.0] * V, [0.0] * V)
    before = copy.deepcopy(theta)
    with raises("dpo_step diverged: loss overflowed (lr=0.05, beta=10.0)"):
        ref.dpo_step(theta, dpo_reference(), "answer me", "clear", "rude", beta=10.0)
    assert theta == before


def test_dpo_step_checks_only_its_loss():
    """dpo_step returns the loss alone: a chosen reward past the floats with a finite loss
    (the hinge's max(0, 1 - h) at h = +inf) is not its record, and the step (whose gradient
    is 0) goes through."""
    theta = policy([0.0] * V, [0.0] * V, [0.0] * V)
    assert ref.dpo_step(theta, dpo_reference(), "answer me", "rude", "clear", beta=10.0, loss_type="hinge") == 0.0
    assert theta == policy([0.0] * V, [0.0] * V, [0.0] * V)


def test_train_dpo_loss_keeps_the_failing_steps_update():
    pairs = [("help me", "clear kind", "rude vague"), ("answer me", "clear", "rude"), ("help me", "kind", "wrong")]
    theta = policy([0.0] * V, [0.0] * V, [0.0] * V)
    expected = copy.deepcopy(theta)
    ref.dpo_step(expected, dpo_reference(), *pairs[0], beta=10.0)
    with raises("train_dpo diverged at step 1: loss overflowed (lr=0.05, beta=10.0)"):
        ref.train_dpo(theta, dpo_reference(), pairs, beta=10.0)
    assert theta["help me"] == expected["help me"]  # step 0, and not step 2
    # step 1's update stands: h = -inf, dloss/du = -beta, lr * beta = 0.5 on 'clear' and 'rude'
    assert theta["answer me"] == [0.5 if j == CLEAR else -0.5 if j == RUDE else 0.0 for j in range(V)]
    assert theta["explain this"] == [0.0] * V


def test_train_dpo_names_the_history_key():
    """The hinge's loss is 0 at h = +inf; the chosen reward, beta * 1e308, is the record that
    overflows, named by its history key. (The sigmoid loss would be 0 * inf = NaN first.)"""
    pairs = [("help me", "clear kind", "rude vague"), ("answer me", "rude", "clear")]
    with raises("train_dpo diverged at step 1: rewards/chosen overflowed (lr=0.05, beta=10.0)"):
        ref.train_dpo(policy([0.0] * V, [0.0] * V, [0.0] * V), dpo_reference(), pairs, beta=10.0, loss_type="hinge")


# ------------------------------------------------------------------------------ sweeps


def test_sweep_rlhf_step_names_the_run_and_the_train_key(reference_engines):
    theta = policy(peaked(CLEAR), peaked(CLEAR), peaked(CLEAR))
    with raises("sweep run 1 diverged at step 0: value_loss overflowed (lr=0.05, beta=0.1)"):
        sweep_module.sweep_rlhf(BIG_SCORE_W, betas=[0.1], seeds=1, steps=5, ppo_epochs=1, vf_coef=[0.0, 0.01],
                                theta=theta, ref=copy.deepcopy(theta))
    # run 0 alone (no baseline) is finite
    sweep_module.sweep_rlhf(BIG_SCORE_W, betas=[0.1], seeds=1, steps=5, ppo_epochs=1, vf_coef=[0.0], theta=theta,
                            ref=copy.deepcopy(theta))


def test_sweep_rlhf_summary(reference_engines):
    """Scores of 1.7e308 on 'help me': every record finite, their mean past the floats (the
    final expected score, (1.7e308 + 1 + 1) / 3, is not)."""
    theta = policy(peaked(CLEAR), peaked(KIND), peaked(KIND))
    w = {**{tok: 0.0 for tok in VOCAB}, "clear": 1.7e308, "kind": 1.0}
    with raises("sweep run 0 diverged: mean_score overflowed (lr=0.05, beta=0.1)"):
        sweep_module.sweep_rlhf(w, betas=[0.1], seeds=[seed_with([0, 0])], steps=2, theta=theta,
                                ref=copy.deepcopy(theta))


def test_sweep_grpo_step_matches_train_grpo(reference_engines):
    theta = grpo_theta()
    reference = copy.deepcopy(theta)
    clean, bad = seed_with([0, 0, 0], draws=8), seed_with([0, 0, 1], draws=8)
    ref.train_grpo(copy.deepcopy(theta), reference, EXTREME_W, 3, clean)  # finite
    with pytest.raises(FloatingPointError) as single:
        ref.train_grpo(copy.deepcopy(theta), reference, EXTREME_W, 3, bad)
    message = str(single.value).replace("train_grpo", "sweep run 1")
    assert message.startswith("sweep run 1 diverged at step 2: reward_std overflowed")
    with raises(message):
        sweep_module.sweep_grpo(EXTREME_W, betas=[0.04], seeds=[clean, bad], steps=3, theta=theta, ref=reference)


def test_sweep_grpo_summary(reference_engines):
    """Groups of two 8e307s: each step's score is finite, three of them sum past the floats."""
    theta = policy(peaked(CLEAR), peaked(KIND), peaked(KIND))
    w = {**{tok: 0.0 for tok in VOCAB}, "clear": 8e307, "kind": 1.0}
    with raises("sweep run 0 diverged: mean_score overflowed (lr=0.05, beta=0.04)"):
        sweep_module.sweep_grpo(w, betas=[0.04], seeds=[seed_with([0, 0, 0], draws=2)], steps=3, num_generations=2,
                                theta=theta, ref=copy.deepcopy(theta))


def test_sweep_dpo_step_names_the_run(reference_engines):
    pairs = [("help me", "clear kind", "rude vague"), ("answer me", "clear", "rude")]
    theta = policy([0.0] * V, [0.0] * V, [0.0] * V)
    # beta = 0.1 keeps the loss at 1e307; beta = 10 takes it past the floats
    with raises("sweep run 1 diverged at step 1: loss overflowed (lr=0.05, beta=10.0)"):
        sweep_module.sweep_dpo(pairs, betas=[0.1, 10.0], theta=theta, ref=dpo_reference())


def test_sweep_dpo_summary(reference_engines):
    """Margins of 1e308 on each of two pairs: finite records, their last-epoch mean is not."""
    pairs = [("answer me", "rude", "clear"), ("answer me", "rude", "kind")]
    with raises("sweep run 0 diverged: last_epoch_margin overflowed (lr=0.05, beta=1.0)"):
        sweep_module.sweep_dpo(pairs, betas=[1.0], theta=policy([0.0] * V, [0.0] * V, [0.0] * V),
                               ref=dpo_reference())
