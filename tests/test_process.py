"""Process vs outcome rewards (issue 11 item 4): the reasoning world, the process reward model,
token PPO's process-reward inputs and GRPO with a verifier; Rust against the reference twin,
against mathematics, and the phenomenon over seeds.

1. Differential (hypothesis): the PRM's loss and gradient and its fit; whole token PPO runs with
   ``step_rewards`` and ``outcome_factors``; whole GRPO runs (worlds with EOS and without, a
   linear reward model and outcome factors). Final logits equal within 1e-9 say every sampled
   token was the same (one different token moves a row's gradient).
2. Mathematics: the exact success rate against the sum over every response of a tiny world and
   against sampled frequencies; the expected product of outcome factors against the sum over
   every response of a world with EOS; the PRM's gradient against finite differences; EOS at
   ``NO_EOS_LOGIT`` is never drawn and never moves.
3. The phenomenon over seeds: token PPO with the PRM's per-step rewards reaches the target
   success rate in fewer samples (its labelled responses included) than PPO with the verifier's
   outcome reward; Best-of-N by the PRM's product beats one sample.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import RUST, rust_only
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_fast.reasoning import (
    NO_EOS_LOGIT,
    ReasoningWorld,
    process_lab,
    process_rl,
    train_process_reward_model,
)
from rlhf_fast.reference.engines import process_reward as ref_prm_engine
from rlhf_fast.reference.engines import token_ppo as ref_ppo
from rlhf_fast.reference.engines import verifier_grpo as ref_grpo
from rlhf_fast.reference.methods import process_reward as ref_prm
from rlhf_fast.reference.methods.token_ppo import TokenWorld

if RUST:
    from rlhf_fast import _core


def step_data(seed: int, p: int, k: int, v: int, n: int):
    rng = np.random.default_rng(seed)
    prompts = rng.integers(p, size=n).astype(np.int64)
    tokens = rng.integers(v, size=(n, k)).astype(np.int64)
    labels = rng.choice([0.0, 1.0, 0.3], size=(n, k))
    return prompts, tokens, labels


def random_world(seed: int, p: int, l: int, v: int, eos: bool):
    """A token world's arrays; without ``eos`` EOS sits at ``NO_EOS_LOGIT``."""
    rng = np.random.default_rng(seed)
    ref_logits = rng.normal(size=(p, l, v))
    if not eos:
        ref_logits[..., 0] = NO_EOS_LOGIT
    w = rng.normal(size=v) * 0.3
    w[0] = 0.0
    return ref_logits, w, rng.normal(size=p) * 0.1, 0.1, w.copy(), np.zeros(p)


# --------------------------------------------------------------------------- differential


@rust_only
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shape=st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 5)),
       n=st.integers(1, 6), l2=st.sampled_from([0.0, 0.5]))
def test_the_prm_loss_gradient_and_fit_are_the_references(seed, shape, n, l2):
    prompts, tokens, labels = step_data(seed, *shape, n)
    z = np.random.default_rng(seed + 1).normal(size=shape) * 2.0
    ours = _core.prm_loss_and_grad(z, prompts, tokens, labels, l2)
    theirs = ref_prm.prm_loss_and_grad(z, prompts, tokens, labels, l2)
    assert abs(ours[0] - theirs[0]) <= 1e-9 * max(1.0, abs(theirs[0]))
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-9, atol=1e-12)
    fit = _core.train_process_reward_model(prompts, tokens, labels, shape, epochs=20, lr=0.2, l2=l2)
    ref_fit = ref_prm_engine.train_process_reward_model(prompts, tokens, labels, shape, epochs=20, lr=0.2, l2=l2)
    for key in ("logits", "losses"):
        np.testing.assert_allclose(fit[key], ref_fit[key], rtol=1e-9, atol=1e-12, err_msg=key)


@rust_only
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), run_seed=st.integers(0, 2**40),
       shape=st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(2, 5)), eos=st.booleans(),
       tables=st.sampled_from(["step", "outcome", "both"]), steps=st.integers(1, 3))
def test_token_ppo_with_process_rewards_is_the_references(seed, run_seed, shape, eos, tables, steps):
    world = random_world(seed, *shape, eos)
    rng = np.random.default_rng(seed + 7)
    kwargs = {}
    if tables in ("step", "both"):
        kwargs["step_rewards"] = rng.random(shape)
    if tables in ("outcome", "both"):
        kwargs["outcome_factors"] = rng.choice([0.0, 1.0, 0.5], size=shape)
    runs = [(run_seed, 0.05, 0.5), (run_seed + 1, 0.0, 2.0)]
    ours = _core.sweep_token_ppo(*world, True, steps, runs, batch_size=4, num_ppo_epochs=2, **kwargs)
    theirs = ref_ppo.sweep_token_ppo(*world, True, steps, runs, batch_size=4, num_ppo_epochs=2, **kwargs)
    for key in ("history", "final_params", "summary"):
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-9, atol=1e-9, err_msg=key)


@rust_only
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), run_seed=st.integers(0, 2**40),
       shape=st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(2, 5)), eos=st.booleans(),
       group=st.sampled_from([(2, 1), (3, 2), (4, 1)]), iterations=st.integers(1, 3),
       scale=st.sampled_from(["group", "none"]), outcome=st.booleans(), steps=st.integers(1, 3))
def test_grpo_runs_are_the_references(seed, run_seed, shape, eos, group, iterations, scale, outcome, steps):
    world = random_world(seed, *shape, eos)
    factors = np.random.default_rng(seed + 3).choice([0.0, 1.0], size=shape) if outcome else None
    runs = [(run_seed, 0.0, 1.0), (run_seed + 1, 0.1, 3.0)]
    kwargs = dict(num_generations=group[0], prompts_per_step=group[1], num_iterations=iterations,
                  scale_rewards=scale, outcome_factors=factors, epsilon_high=0.28)
    ours = _core.sweep_verifier_grpo(*world, True, steps, runs, **kwargs)
    theirs = ref_grpo.sweep_verifier_grpo(*world, True, steps, runs, **kwargs)
    assert ours["history_fields"] == theirs["history_fields"]
    for key in ("history", "final_params", "summary"):
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-9, atol=1e-9, err_msg=key)


# --------------------------------------------------------------------------- mathematics


def test_the_exact_success_rate_is_the_sum_over_every_response_and_the_sampled_frequency():
    world = ReasoningWorld(n_prompts=2, n_steps=3, n_candidates=3, n_correct=1, ref_correct=0.3, seed=4)
    theta = np.random.default_rng(0).normal(size=(2, 3, 3))
    probs = np.exp(theta) / np.exp(theta).sum(axis=-1, keepdims=True)
    total = 0.0
    for p in range(2):
        for tokens in itertools.product(range(3), repeat=3):
            chance = np.prod([probs[p, k, a] for k, a in enumerate(tokens)])
            total += chance * world.verify(np.array([p]), np.array([tokens]))[0] / 2
    assert abs(world.success(theta) - total) < 1e-12
    assert abs(world.success(world.ref_logits) - 0.3**3) < 1e-12
    prompts, tokens = world.sample(theta, 40_000, seed=1)
    freq = world.verify(prompts, tokens).mean()
    assert abs(freq - total) < 4 * np.sqrt(total * (1 - total) / 40_000)


def test_the_expected_outcome_is_the_sum_over_every_response_with_eos():
    p_n, l, v = 2, 3, 3
    rng = np.random.default_rng(5)
    ref_logits, theta, factors = rng.normal(size=(p_n, l, v)), rng.normal(size=(p_n, l, v)), rng.random((p_n, l, v))
    zeros_v, zeros_p = np.zeros(v), np.zeros(p_n)
    world = TokenWorld.new(ref_logits, zeros_v, zeros_p, 0.0, zeros_v, zeros_p, False)
    world.with_process_rewards(None, factors)
    probs = np.exp(theta) / np.exp(theta).sum(axis=-1, keepdims=True)
    for p in range(p_n):
        total = 0.0
        for n in range(1, l + 1):
            for tokens in itertools.product(range(v), repeat=n):
                if 0 in tokens[:-1] or (n < l and tokens[-1] != 0):
                    continue  # not a response: EOS ends one, only a full one may lack it
                chance = np.prod([probs[p, t, a] for t, a in enumerate(tokens)])
                total += chance * world.outcome(p, tokens)
        assert abs(world.expected_outcome(p, theta[p].tolist()) - total) < 1e-12


def _prm_loss_and_grad(*args):
    return _core.prm_loss_and_grad(*args) if RUST else ref_prm.prm_loss_and_grad(*args)


def test_the_prm_gradient_is_the_slope_of_its_loss():
    shape = (2, 3, 4)
    prompts, tokens, labels = step_data(3, *shape, 5)
    z = np.random.default_rng(2).normal(size=shape)
    _, grad = _prm_loss_and_grad(z, prompts, tokens, labels, 0.7)
    for index in np.ndindex(shape):
        up, down = z.copy(), z.copy()
        up[index] += 1e-6
        down[index] -= 1e-6
        slope = (_prm_loss_and_grad(up, prompts, tokens, labels, 0.7)[0]
                 - _prm_loss_and_grad(down, prompts, tokens, labels, 0.7)[0]) / 2e-6
        assert abs(slope - grad[index]) < 1e-6, index


def test_eos_is_never_drawn_nor_moved_and_the_verifier_summary_is_the_success_rate():
    world = ReasoningWorld(n_prompts=2, n_steps=3, n_candidates=4, seed=1)
    final = process_rl(world, "ppo_outcome", 4, seeds=2, batch_size=8, num_ppo_epochs=1, lr=5.0)
    assert final.shape == (2, 2, 3, 4)
    from rlhf_fast.token_ppo import sweep_token_ppo_arrays

    zeros_v, zeros_p = np.zeros(5), np.zeros(2)
    result = sweep_token_ppo_arrays(world.engine_logits(), zeros_v, zeros_p, 0.0, zeros_v, zeros_p, False, steps=4,
                                    seeds=2, batch_size=8, num_ppo_epochs=1, lr=5.0, progress=False,
                                    outcome_factors=world.verifier_factors())
    theta = np.asarray(result.final_theta).reshape(2, 2, 3, 5)
    assert np.all(theta[..., 0] == NO_EOS_LOGIT)
    np.testing.assert_array_equal(result.runs["final_length"].ravel(), 3.0)
    np.testing.assert_allclose(result.runs["final_proxy_score"].ravel(), world.success(theta[..., 1:]), atol=1e-12)
    np.testing.assert_allclose(theta[..., 1:], final, atol=0)


def test_bad_arguments_are_refused_naming_them():
    with pytest.raises(ValueError, match="ref_correct must be in"):
        ReasoningWorld(ref_correct=1.0)
    world = ReasoningWorld(n_prompts=2, n_steps=2, n_candidates=3)
    with pytest.raises(ValueError, match="label_noise must be in"):
        train_process_reward_model(world, 10, 0.5)
    with pytest.raises(TypeError, match="prm must be a ProcessRewardModel"):
        process_rl(world, "ppo_prm", 2)
    prompts, tokens, labels = step_data(0, 2, 2, 3, 2)
    with pytest.raises(ValueError, match=r"labels\[0, 1\] must be in \[0, 1\], got 2.0"):
        labels[0, 1] = 2.0
        _prm_loss_and_grad(np.zeros((2, 2, 3)), prompts, tokens, labels, 0.0)


# --------------------------------------------------------------------------- the phenomenon


def test_the_prm_learns_the_step_labels_through_the_noise_and_ranks_solutions():
    world = ReasoningWorld(n_prompts=3, n_steps=4, n_candidates=4, seed=2)
    prm = train_process_reward_model(world, 300, 0.2, epochs=200, seed=1)
    prompts, tokens = world.sample(world.ref_logits, 2000, seed=3)
    agree = ((prm.step_scores(prompts, tokens) > 0.5) == world.step_correct(prompts, tokens)).mean()
    assert agree > 0.95
    right = world.verify(prompts, tokens)
    for aggregate in ("product", "min"):
        score = prm.score(prompts, tokens, aggregate)
        assert score[right].mean() > score[~right].mean() + 0.3


@rust_only
def test_process_rewards_reach_the_target_in_fewer_samples_than_the_outcome_reward_over_seeds():
    lab = process_lab(checkpoints=(10, 20, 30, 40, 60, 80), seeds=4, n_values=(1, 16))
    prm, outcome = lab.samples_to_target("ppo_prm"), lab.samples_to_target("ppo_outcome")
    assert np.median(prm) < np.median(outcome) and np.sum(prm < outcome) >= 3, (prm, outcome)
    # the PRM's per-step rewards lead at every checkpoint up to 40 steps, seed by seed on average
    lead = lab.success["ppo_prm"][:, :4] - lab.success["ppo_outcome"][:, :4]
    assert np.all(lead.mean(axis=0) > 0.05), lead
    best = lab.best_of_n["PRM product"]
    assert best[1] > best[0] + 0.1
    assert "PPO + PRM" in lab.table() and len(lab.to_rows()) == 3 * 4 * 6
    with pytest.raises(ValueError, match="method must be one of"):
        lab.samples_to_target("ppo")
    with pytest.raises(TypeError, match="method must be a str"):
        lab.compute_to_target(0)
