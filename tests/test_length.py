"""Length hacking (issue 11, item 3) and the public token PPO sweep, ``sweep_rlhf(rm,
world=SequenceWorld)``.

1. Differential: the front end on the Rust engine and on the reference twin, with the remedies'
   flags, give the same sampled tokens (content lengths and EOS counts equal) and floats within
   1e-9, the exact per-step statistics included.
2. Mathematics: a kept step's exact statistics are NumPy's (``SequenceWorld.stats``, the
   oracle of tests/test_sequences.py) of the policy after that step, and the last one is the
   run summary; :func:`per_token_worth` against its definition.
3. The phenomenon over world seeds (the lab, Rust only: the reference would take minutes):
   under the proxy trained on length-biased labels the length grows towards ``max_len`` while
   the gold gains less than under the unbiased or the debiased proxy; the length-normalised
   reward and a penalty of twice the proxy's worth of a reference token shrink the length;
   and what the other remedies do, as measured (docs/METHODS.md section 13): a penalty of
   once that worth still lets the length grow, and so does every count-based proxy, even one
   from unbiased labels or from a length-aware judge.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import RUST, rust_only

import rlhf_fast as rl
from rlhf_fast import sweep as sweep_module
from rlhf_fast.length import length_lab, per_token_worth
from rlhf_fast.sequences import SequenceRewardModel, SequenceWorld, train_sequence_reward_model
from rlhf_fast.worlds import Labeller

EXACT = ("expected_proxy_score", "expected_gold_score", "expected_kl", "expected_length")


def biased_proxy(world: SequenceWorld, n: int = 200, length_bias: float = 2.0) -> SequenceRewardModel:
    return train_sequence_reward_model(world, world.preferences(n, seed=1, labeller=Labeller(length_bias=length_bias)))


def on_engines(engines, *args, **kwargs):
    saved = sweep_module._engines
    sweep_module._engines = engines
    try:
        return rl.sweep_rlhf(*args, **kwargs)
    finally:
        sweep_module._engines = saved


@rust_only
@pytest.mark.parametrize("options", [{}, {"length_normalize": True}, {"length_penalty": 0.3, "kl_penalty": "k3"},
                                     {"missing_eos_penalty": 1.0, "num_mini_batches": 2, "vf_coef": 0.5}])
def test_the_front_end_on_either_engine_samples_the_same_tokens(options):
    from rlhf_fast import _core

    world = SequenceWorld(n_prompts=2, vocab=6, max_len=4, seed=3)
    rm = train_sequence_reward_model(world, world.preferences(100, seed=1, labeller=Labeller(length_bias=1.0)),
                                     length_feature=True)
    kwargs = dict(world=world, betas=[0.05, 0.3], seeds=2, steps=6, lr=[0.5, 1.0], batch_size=6, record_every=2,
                  **options)
    ours = on_engines(_core, rm, **kwargs)
    theirs = on_engines(sweep_module._ReferenceEngines, rm, **kwargs)
    assert ours.fields == theirs.fields and ours.axes == theirs.axes == {"beta": [0.05, 0.3], "lr": [0.5, 1.0],
                                                                          "seed": [0, 1]}
    for name in ("mean_length", "val_num_eos_tokens"):
        np.testing.assert_array_equal(getattr(ours, name), getattr(theirs, name))
    np.testing.assert_allclose(ours.history, theirs.history, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ours.final_theta, theirs.final_theta, rtol=1e-9, atol=1e-9)
    for key in ours.runs:
        np.testing.assert_allclose(ours.runs[key], theirs.runs[key], rtol=1e-9, atol=1e-12)


def test_the_exact_history_is_numpys_statistics_of_the_policy():
    world = SequenceWorld(n_prompts=3, vocab=7, max_len=5, seed=2)
    rm = train_sequence_reward_model(world, world.preferences(150, seed=4, labeller=Labeller(length_bias=1.0)),
                                     length_feature=True)
    one_step = rl.sweep_rlhf(rm, world=world, betas=[0.1], seeds=[5], steps=1, lr=1.0, batch_size=8)
    theta = one_step.final_theta[0, 0]
    assert not np.array_equal(theta, world.ref_logits)  # the step moved the policy
    want = (world.expected_score(theta, rm).mean(), world.expected_gold(theta).mean(), world.kl(theta).mean(),
            world.expected_content_length(theta).mean())
    np.testing.assert_allclose([getattr(one_step, name)[0, 0, 0] for name in EXACT], want, rtol=1e-9, atol=1e-12)
    longer = rl.sweep_rlhf(rm, world=world, betas=[0.1], seeds=[5], steps=9, lr=1.0, batch_size=8, record_every=3)
    np.testing.assert_array_equal(longer.steps, [2, 5, 8])
    last = [getattr(longer, name)[0, 0, -1] for name in EXACT]
    summary = [longer.runs[key][0, 0] for key in ("final_proxy_score", "final_gold_score", "final_kl", "final_length")]
    np.testing.assert_array_equal(last, summary)


def test_settings_outside_token_ppo_are_refused_by_name():
    world = SequenceWorld(n_prompts=2, vocab=5, max_len=3, seed=0)
    rm = biased_proxy(world, 50)
    with pytest.raises(ValueError, match="eps must be a single value with a SequenceWorld"):
        rl.sweep_rlhf(rm, world=world, betas=[0.1], seeds=1, steps=2, eps=[0.1, 0.2])
    with pytest.raises(ValueError, match="kl_penalty must be one of"):
        rl.sweep_rlhf(rm, world=world, betas=[0.1], seeds=1, steps=2, kl_penalty="full")
    with pytest.raises(ValueError, match="kl_ctl must be 'fixed'"):
        rl.sweep_rlhf(rm, world=world, betas=[0.1], seeds=1, steps=2, kl_ctl="adaptive")
    with pytest.raises(TypeError, match="w must be a SequenceRewardModel"):
        rl.sweep_rlhf({"a": 1.0}, world=world, betas=[0.1], seeds=1, steps=2)
    with pytest.raises(ValueError, match="length_normalize is a setting of PPO on token sequences"):
        rl.sweep_rlhf(rl.train_rm(rl.make_dataset(50, seed=0)), betas=[0.1], seeds=1, steps=2, length_normalize=True)
    with pytest.raises(ValueError, match="length_penalty must be >= 0"):
        rl.sweep_rlhf(rm, world=world, betas=[0.1], seeds=1, steps=2, length_penalty=-1.0)


def test_per_token_worth_is_the_expected_score_of_one_more_reference_token():
    world = SequenceWorld(n_prompts=3, vocab=9, max_len=5, seed=1)
    rm = SequenceRewardModel(np.r_[0.0, np.linspace(-1.0, 2.0, 8)], length_weight=0.25, bias=np.arange(3.0))
    stats = world.stats(world.ref_logits)
    tokens = (stats.counts[:, 1:] @ rm.weights[1:]).sum()
    assert per_token_worth(world, rm) == pytest.approx(tokens / stats.content_length.sum() + 0.25, rel=1e-12)
    # The gold's own worth of a reference token is 0 (its token values are centred so).
    gold = SequenceRewardModel(np.r_[0.0, world.gold_token[1:]])
    assert per_token_worth(world, gold) == pytest.approx(0.0, abs=1e-12)


@rust_only
@pytest.mark.parametrize("world_seed", [0, 1, 2])
def test_length_hacking_and_its_remedies_over_seeds(world_seed):
    world = SequenceWorld(n_prompts=4, vocab=64, max_len=8, seed=world_seed)
    lab = length_lab(world, steps=150, seeds=2, batch_size=32, record_every=50)
    row = {r.name: r for r in lab.rows}
    ref = lab.ref_length
    # Reproduced: the biased proxy prizes length; PPO grows the response near max_len ...
    assert row["baseline"].rm_per_token > 0.3
    assert row["baseline"].length > ref + 2.5 and row["baseline"].length_curve[-1] > row["baseline"].length_curve[0]
    # ... and the gold does not rise with it: less than under the unbiased or the debiased proxy.
    assert row["baseline"].gold_change < row["unbiased"].gold_change - 0.2
    assert row["baseline"].gold_change < row["debiased"].gold_change
    # Remedied: the normalised reward and a penalty of twice the worth shrink the length.
    assert row["normalised"].length < ref - 1.0
    assert row["penalty x2"].length < ref - 2.0
    # What the others do, as measured: once the worth is not enough (PPO picks better-than-
    # average tokens, each worth more than c), and every count-based proxy grows the length,
    # the length-aware judge's (its taste for familiar tokens) and the unbiased one's included.
    assert ref + 0.5 < row["penalty"].length < row["baseline"].length
    assert abs(row["debiased"].rm_per_token) < 0.15 and row["debiased"].length > ref
    assert row["judge"].rm_per_token > 0.1 and row["judge"].length > ref + 1.0
    assert row["unbiased"].length > ref
    # Where a reader pays 0.1 of a gold unit per token, the hacked run loses gold, the fair one gains.
    assert row["baseline"].net_gold_change < 0.0 < row["unbiased"].net_gold_change, (row["baseline"], row["unbiased"])
    for r in lab.rows:
        assert r.net_gold_change == pytest.approx(r.gold_change - 0.1 * (r.length - ref), abs=1e-9)
    assert lab.table().count("\n") == len(lab.rows) + 1 and len(lab.to_rows()) == len(lab.rows)
    assert "gold Δ − 0.1·Δlength" in lab.table()


@pytest.mark.skipif(RUST, reason="the reference's half of the lab: the bookkeeping on a tiny world")
def test_the_lab_runs_on_the_reference():
    lab = length_lab(SequenceWorld(n_prompts=2, vocab=6, max_len=3, seed=0), pairs=60, steps=4, seeds=1, batch_size=4,
                     record_every=2)
    assert [r.name for r in lab.rows] == ["baseline", "normalised", "penalty", "penalty x2", "debiased", "judge",
                                          "unbiased"]
    np.testing.assert_array_equal(lab.steps, [2, 4])
    assert all(r.length_curve.shape == (2,) for r in lab.rows)


@pytest.mark.parametrize("name, value, error", [("lr", [0.1], TypeError), ("lr", 0.0, ValueError),
                                               ("beta", [0.1], TypeError), ("beta", -1.0, ValueError)])
def test_the_lab_takes_one_lr_and_one_beta(name, value, error):
    """A sequence would become a sweep axis of the lab's runs (found by the fuzzer: an
    IndexError)."""
    with pytest.raises(error, match=f"^{name} must be"):
        length_lab(SequenceWorld(n_prompts=2, vocab=5, max_len=3, seed=0), pairs=1, steps=1, seeds=1, batch_size=2,
                   record_every=1, **{name: value})


def test_the_examples_run():
    import doctest

    from rlhf_fast import length

    failed, attempted = doctest.testmod(length, extraglobs={"rl": rl, "np": np})
    assert attempted and not failed
