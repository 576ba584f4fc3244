"""Issue 9, section 7b: a training step whose record is not finite ends the run.

Extreme but finite inputs (weights of 1e300, beta near the largest float, lr of 5e-324) can
make a step's recorded floats inf or NaN while every logit stays finite. After a step's update
and the logits overflow check, the step's record is checked in the order of the history's keys;
the first float that is not finite raises ``FloatingPointError("{run} diverged at step {t}:
{key} overflowed (lr=..., beta=...)")``, the step unrecorded and theta holding its update.
Single steps check what they return before writing anything back. Sweeps name the run and
check the summaries they compute at the end.

Backend-agnostic: the single runs are emulated with the single steps of the same backend,
which take the same draws from the same stream, so each test pins the failing step, the
message and the state left behind without a second implementation.
"""

from __future__ import annotations

import copy
import random
import re

import numpy as np
import pytest

import rlhf_fast as rl

PROMPTS, VOCAB = rl.PROMPTS, rl.VOCAB

# 'vague' scores 1e300: a value baseline's loss on it, 0.5 * 1e300**2, is inf.
HUGE = {word: (1e300 if word == "vague" else 1.0) for word in VOCAB}
# Half the words score 1e300, half -1e300: a group holding both has a reward std of inf.
SPLIT = {word: (1e300 if j % 2 == 0 else -1e300) for j, word in enumerate(VOCAB)}


def policy(shift: float = 0.0) -> dict[str, list[float]]:
    """The uniform policy, or one whose every row has its second logit moved by ``shift``."""
    theta = rl.init_policy()
    for row in theta.values():
        row[1] += shift
    return theta


def fails_with(message: str):
    return pytest.raises(FloatingPointError, match="^" + re.escape(message) + "$")


# ----------------------------------------------------------------------- single steps


@pytest.mark.parametrize("as_array", [False, True])
def test_rlhf_step_refuses_an_infinite_value_loss_and_writes_nothing(as_array):
    theta = np.array([rl.init_policy()[p] for p in PROMPTS]) if as_array else rl.init_policy()
    before = copy.deepcopy(theta)
    value = [0.25, 0.5, 0.75]
    with fails_with("rlhf_step diverged: value_loss overflowed (lr=1e-300, beta=0.1)"):
        rl.rlhf_step(theta, rl.init_policy(), HUGE, "answer me", random.Random(0), lr=1e-300, vf_coef=0.7, value=value)
    assert value == [0.25, 0.5, 0.75]
    if as_array:
        np.testing.assert_array_equal(theta, before)
    else:
        assert theta == before


def test_rlhf_step_fuzzer_reproducer():
    theta, ref = rl.init_policy(), rl.init_policy()
    with pytest.raises(FloatingPointError, match=r"^rlhf_step diverged: \w+ overflowed \(lr=5e-324, beta=1\.7e\+308\)$"):
        rl.rlhf_step(
            theta, ref, HUGE, "answer me", random.Random(0), eps=1e4, beta=1.7e308, lr=5e-324, kl_penalty="k1",
            vf_coef=0.7, cliprange_value=1e4,
        )
    assert theta == rl.init_policy()


def test_grpo_step_refuses_an_infinite_reward_std_and_writes_nothing():
    theta = policy(0.5)
    with fails_with("grpo_step diverged: reward_std overflowed (lr=0.05, beta=0.04)"):
        rl.grpo_step(theta, rl.init_policy(), SPLIT, "help me", random.Random(0))
    assert theta == policy(0.5)


def test_dpo_step_refuses_an_infinite_loss_and_writes_nothing():
    theta = policy()
    theta["help me"][0] = -5.0  # u = -5 on ('clear', 'kind'): h = beta * u = -inf
    before = copy.deepcopy(theta)
    with fails_with("dpo_step diverged: loss overflowed (lr=5e-324, beta=1e+308)"):
        rl.dpo_step(theta, rl.init_policy(), "help me", "clear", "kind", beta=1e308, lr=5e-324)
    assert theta == before
    # The same pair on a prompt where u = 0 has a loss of ln 2.
    assert rl.dpo_step(theta, rl.init_policy(), "answer me", "clear", "kind", beta=1e308, lr=5e-324) > 0.69


# ------------------------------------------------------------------------ single runs


def emulate_rlhf(theta, ref, w, steps, seed, value, **kw):
    """train_rlhf step by step with rlhf_step on the same stream: the step rlhf_step refuses,
    its prompt and its error (theta and value as they stood before it)."""
    rng = random.Random(seed)
    for t in range(steps):
        x = rng.choice(range(len(PROMPTS)))
        try:
            rl.rlhf_step(theta, ref, w, PROMPTS[x], rng, value=value, **kw)
        except FloatingPointError as err:
            return t, x, str(err)
    raise AssertionError("no step failed")


def test_train_rlhf_stops_at_the_first_infinite_value_loss():
    kw = dict(lr=1e-300, vf_coef=0.7)
    before, before_value = policy(), [0.0, 0.0, 0.0]
    t, x, step_error = emulate_rlhf(before, rl.init_policy(), HUGE, 200, 3, before_value, **kw)
    assert t > 0 and step_error == "rlhf_step diverged: value_loss overflowed (lr=1e-300, beta=0.1)"
    theta, value = policy(), {p: 0.0 for p in PROMPTS}
    with fails_with(f"train_rlhf diverged at step {t}: value_loss overflowed (lr=1e-300, beta=0.1)"):
        rl.train_rlhf(theta, rl.init_policy(), HUGE, 200, 3, value=value, **kw)
    # theta and the baseline hold the failing step's update: only its prompt's row moved.
    for i, p in enumerate(PROMPTS):
        assert (theta[p] != before[p]) == (i == x), p
        assert (value[p] != before_value[i]) == (i == x), p
    # Without a baseline the same run goes through.
    rl.train_rlhf(policy(), rl.init_policy(), HUGE, 200, 3, lr=1e-300)


def test_train_grpo_stops_at_the_first_infinite_reward_std():
    kw = dict(num_generations=2)
    rng, before = random.Random(2), policy(0.5)
    for t in range(200):
        x = rng.choice(range(len(PROMPTS)))
        try:
            rl.grpo_step(before, rl.init_policy(), SPLIT, PROMPTS[x], rng, **kw)
        except FloatingPointError as err:
            assert str(err) == "grpo_step diverged: reward_std overflowed (lr=0.05, beta=0.04)"
            break
    assert t > 0
    theta = policy(0.5)
    with fails_with(f"train_grpo diverged at step {t}: reward_std overflowed (lr=0.05, beta=0.04)"):
        rl.train_grpo(theta, rl.init_policy(), SPLIT, 200, 2, **kw)
    # The failing step's update (its KL term: theta is away from ref) is kept.
    for i, p in enumerate(PROMPTS):
        assert (theta[p] != before[p]) == (i == x), p


def test_train_grpo_fuzzer_reproducer():
    w = {
        "clear": 1.0, "kind": -1e300, "rude": 1e150, "short": -1e300, "specific": 1.0, "thorough": -1e150,
        "vague": 1.0, "wrong": 1e300,
    }
    with fails_with("train_grpo diverged at step 0: reward_std overflowed (lr=1.7e+308, beta=1e-300)"):
        rl.train_grpo(
            rl.init_policy(), rl.init_policy(), w, steps=2, seed=0, lr=1.7e308, epsilon=1.7e308, beta=1e-300
        )


def test_train_dpo_stops_at_the_first_infinite_loss():
    pairs = [("answer me", "clear", "kind"), ("help me", "clear", "kind"), ("explain this", "rude", "short")]
    start = policy()
    start["help me"][0] = -5.0
    theta = copy.deepcopy(start)
    with fails_with("train_dpo diverged at step 1: loss overflowed (lr=5e-324, beta=1e+308)"):
        rl.train_dpo(theta, rl.init_policy(), pairs, epochs=2, beta=1e308, lr=5e-324)
    # Step 0 moved 'answer me' by far less than an ulp; step 1's update on 'help me' is kept.
    assert theta["answer me"] == start["answer me"] and theta["explain this"] == start["explain this"]
    assert theta["help me"] != start["help me"]


# ---------------------------------------------------------------------------- sweeps


def single_error(train, *args, **kw) -> str:
    with pytest.raises(FloatingPointError) as err:
        train(*args, **kw)
    return str(err.value)


def test_sweep_rlhf_names_the_first_failing_run_in_run_order():
    # Each seed's failing step; the sweep's run 0 fails later than its run 1.
    steps = {
        seed: emulate_rlhf(policy(), rl.init_policy(), HUGE, 300, seed, [0.0] * 3, lr=1e-300, vf_coef=0.7)[0]
        for seed in range(8)
    }
    late, early = max(steps, key=steps.get), min(steps, key=steps.get)
    assert steps[late] > steps[early]
    expected = single_error(
        rl.train_rlhf, policy(), rl.init_policy(), HUGE, 300, late, lr=1e-300, vf_coef=0.7
    ).replace("train_rlhf", "sweep run 0")
    assert expected.endswith("value_loss overflowed (lr=1e-300, beta=0.1)")
    for exact in (False, True):
        with fails_with(expected):
            rl.sweep_rlhf(HUGE, betas=[0.1], seeds=[late, early], steps=300, lr=1e-300, vf_coef=0.7, exact=exact)


def test_sweep_rlhf_checks_the_summaries():
    # Scores near f64.max / 3: every record is finite, the sum of five steps' scores is not.
    w = {word: (5e307 if j % 2 == 0 else 4.5e307) for j, word in enumerate(VOCAB)}
    rl.train_rlhf(policy(), rl.init_policy(), w, 5, 0, beta=0.0, lr=1e-310)
    with fails_with("sweep run 0 diverged: mean_score overflowed (lr=1e-310, beta=0.0)"):
        rl.sweep_rlhf(w, betas=[0.0], seeds=2, steps=5, lr=1e-310)


def test_sweep_grpo_names_the_run_and_the_step():
    expected = single_error(rl.train_grpo, policy(0.5), rl.init_policy(), SPLIT, 200, 2, num_generations=2)
    assert "reward_std overflowed" in expected
    with fails_with(expected.replace("train_grpo", "sweep run 0")):
        rl.sweep_grpo(SPLIT, betas=[0.04], seeds=[2], steps=200, num_generations=[2], theta=policy(0.5))


def test_sweep_grpo_checks_the_summaries():
    # beta = 1e307: each step's loss is finite, the sum of 400 is not.
    start = policy()
    for row in start.values():
        row[0] = 1.0
    w = {word: (1.0 if j % 2 == 0 else -1.0) for j, word in enumerate(VOCAB)}
    rl.train_grpo(copy.deepcopy(start), rl.init_policy(), w, 400, 2, beta=1e307, lr=5e-324)
    with fails_with("sweep run 0 diverged: mean_loss overflowed (lr=5e-324, beta=1e+307)"):
        rl.sweep_grpo(w, betas=[1e307], seeds=[2], steps=400, lr=5e-324, theta=start)


def test_sweep_dpo_names_the_run_and_checks_the_summaries():
    start = policy()
    start["help me"][0] = -5.0
    pairs = [("answer me", "clear", "kind"), ("help me", "clear", "kind")]
    with fails_with("sweep run 1 diverged at step 1: loss overflowed (lr=5e-324, beta=1e+308)"):
        rl.sweep_dpo(pairs, betas=[0.1, 1e308], lr=5e-324, theta=start)
    # beta = 2e307: the loss on 'help me' is 1e308, two of them in the last epoch sum to inf.
    pairs = [("help me", "clear", "kind")] * 2
    rl.train_dpo(copy.deepcopy(start), rl.init_policy(), pairs, beta=2e307, lr=5e-324)
    with fails_with("sweep run 0 diverged: last_epoch_loss overflowed (lr=5e-324, beta=2e+307)"):
        rl.sweep_dpo(pairs, betas=[2e307], lr=5e-324, theta=start)


def test_a_doubling_controller_past_the_floats_ends_the_run_on_that_step():
    """lr=5e-324 keeps the logits still, so KL stays above the target and beta doubles from 1
    every step: 2**1023 * 2 is past the floats on step 1023, which stays recorded."""
    theta = policy()
    for prompt in PROMPTS:
        theta[prompt][0] = 1.0
    w = rl.train_rm(rl.make_dataset(100, 0))
    with pytest.raises(FloatingPointError, match=re.escape(
        "train_rlhf diverged at step 1023: beta overflowed (lr=5e-324, beta=8.98846567431158e+307)"
    )):
        rl.train_rlhf(theta, policy(), w, steps=3000, seed=0, kl_ctl="doubling", beta=1.0, target=1e-9, lr=5e-324)


def test_best_of_n_scores_that_overflow_are_raised_not_returned():
    w = {word: (1.7e308 if word in rl.GOOD_WORDS else -1.7e308) for word in VOCAB}
    with pytest.raises(FloatingPointError, match=re.escape("best_of_n overflowed: result['expected_score'] is inf")):
        rl.best_of_n(policy(), w, 4, samples=10)
    with pytest.raises(FloatingPointError, match=re.escape("sweep run 0 overflowed: sampled_score is -inf (n=1)")):
        rl.sweep_best_of_n(w, ns=[1, 4], seeds=2, samples=10)
