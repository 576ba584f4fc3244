"""GRPO against a proxy on token sequences, ``sweep_grpo(rm, world=SequenceWorld)`` (issue 11,
item 2): the front end on the Rust engine and on its twin, the exact history against NumPy's
statistics of the policy, refusals by name, and the phenomenon over world seeds."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import rust_only

import rlhf_fast as rl
from rlhf_fast import sweep as sweep_module
from rlhf_fast.sequences import SequenceWorld, train_sequence_reward_model
from rlhf_fast.worlds import Labeller

EXACT = ("expected_proxy_score", "expected_gold_score", "expected_kl", "expected_length")


def on_engines(engines, *args, **kwargs):
    saved = sweep_module._engines
    sweep_module._engines = engines
    try:
        return rl.sweep_grpo(*args, **kwargs)
    finally:
        sweep_module._engines = saved


def proxy(world: SequenceWorld, length_bias: float = 0.0):
    return train_sequence_reward_model(world, world.preferences(200, seed=1, labeller=Labeller(length_bias=length_bias)),
                                       length_feature=True)


@rust_only
@pytest.mark.parametrize("options", [{}, {"num_iterations": 2, "epsilon_high": 0.28},
                                     {"scale_rewards": "none", "num_generations": 3}])
def test_the_front_end_on_either_engine_is_the_same(options):
    from rlhf_fast import _core

    world = SequenceWorld(n_prompts=2, vocab=6, max_len=4, seed=3)
    rm = proxy(world, length_bias=1.0)
    kwargs = dict(world=world, betas=[0.0, 0.3], seeds=2, steps=8, lr=[0.5, 1.0], record_every=2, **options)
    ours = on_engines(_core, rm, **kwargs)
    theirs = on_engines(sweep_module._ReferenceEngines, rm, **kwargs)
    assert ours.method == theirs.method == "sequence_grpo"
    assert ours.axes == theirs.axes == {"beta": [0.0, 0.3], "lr": [0.5, 1.0], "seed": [0, 1]}
    np.testing.assert_array_equal(ours.mean_length, theirs.mean_length)  # the same sampled tokens
    np.testing.assert_allclose(ours.history, theirs.history, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ours.final_theta, theirs.final_theta, rtol=1e-9, atol=1e-9)
    for key in ours.runs:
        np.testing.assert_allclose(ours.runs[key], theirs.runs[key], rtol=1e-9, atol=1e-12)


def test_the_exact_history_is_numpys_statistics_of_the_policy():
    world = SequenceWorld(n_prompts=3, vocab=8, max_len=5, seed=2)
    rm = proxy(world)
    result = rl.sweep_grpo(rm, world=world, betas=[0.1], seeds=1, steps=6, lr=1.0, record_every=3)
    assert result.expected_proxy_score.shape == (1, 1, 2)
    final = result.final_theta[0, 0]
    stats = world.stats(final)
    assert result.expected_kl[0, 0, -1] == pytest.approx(float(stats.kl.mean()), rel=1e-9, abs=1e-12)
    assert result.expected_length[0, 0, -1] == pytest.approx(float(stats.content_length.mean()), rel=1e-9)
    assert result.expected_gold_score[0, 0, -1] == pytest.approx(float(world.expected_gold(final).mean()),
                                                                  rel=1e-9, abs=1e-12)
    assert result.expected_proxy_score[0, 0, -1] == pytest.approx(float(world.expected_score(final, rm).mean()),
                                                                   rel=1e-9, abs=1e-12)
    for name, field in zip(EXACT, ("final_proxy_score", "final_gold_score", "final_kl", "final_length")):
        assert getattr(result, name)[0, 0, -1] == result.runs[field][0, 0]


def test_settings_it_cannot_sweep_are_refused_by_name():
    world = SequenceWorld(n_prompts=2, vocab=6, max_len=4, seed=0)
    rm = proxy(world)
    with pytest.raises(ValueError, match="num_generations must be a single value with a SequenceWorld"):
        rl.sweep_grpo(rm, world=world, betas=[0.1], seeds=1, steps=2, num_generations=[2, 4])
    with pytest.raises(ValueError, match="theta cannot be given with a world"):
        rl.sweep_grpo(rm, world=world, betas=[0.1], seeds=1, steps=2, theta=np.zeros((3, 8)))
    with pytest.raises(TypeError, match="w must be a SequenceRewardModel"):
        rl.sweep_grpo({"a": 1.0}, world=world, betas=[0.1], seeds=1, steps=2)


@rust_only  # a few hundred steps in three worlds: the differential test covers the twin
@pytest.mark.parametrize("world_seed", [0, 1, 2])
def test_grpo_climbs_the_proxy_and_beta_holds_the_kl(world_seed):
    world = SequenceWorld(n_prompts=4, vocab=16, max_len=6, seed=world_seed)
    rm = proxy(world)
    start = float(world.expected_score(world.ref_logits, rm).mean())
    result = rl.sweep_grpo(rm, world=world, betas=[0.0, 1.0], seeds=3, steps=300, lr=0.5, record_every=50)
    free, held = result.runs["final_proxy_score"]
    assert (free > start + 0.2).all(), (start, free)
    kl_free, kl_held = result.runs["final_kl"]
    assert (kl_held < 0.5 * kl_free).all(), (kl_free, kl_held)
    # the proxy climbs along the run, not only at its end
    assert (np.diff(result.expected_proxy_score[0].mean(axis=0)) > -0.05).all()
