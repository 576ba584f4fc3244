"""The over-optimisation lab: the guard's rule, and Goodhart's law in a world over seeds."""

from __future__ import annotations

import numpy as np
import pytest

import rlhf_fast as rl
from conftest import rust_only
from rlhf_fast.overopt import best_of_n_curve, guard_stop, overoptimization


def test_the_guard_stops_after_patience_falls_while_the_proxy_rises():
    gold = np.array([[0.0, 1.0, 2.0, 1.5, 1.0, 0.5, 0.0],
                     [0.0, 1.0, 0.5, 1.5, 1.0, 2.0, 1.0],  # never two falls in a row
                     [0.0, 1.0, 0.5, 0.0, -1.0, -2.0, -3.0]])
    proxy = np.array([np.arange(7.0), np.arange(7.0), [0, 1, 2, 2, 2, 3, 4]])  # row 3: proxy flat at 3, 4
    np.testing.assert_array_equal(guard_stop(gold, proxy, patience=2), [4, 6, 6])
    np.testing.assert_array_equal(guard_stop(gold, proxy, patience=1), [3, 2, 2])


def test_the_guard_checks_its_histories_and_stops_a_single_record_at_it():
    np.testing.assert_array_equal(guard_stop([[0.0], [1.0]], [[0.0], [1.0]], patience=1), [0, 0])
    with pytest.raises(ValueError, match=r"proxy must have shape \(2, 3\), got \(2, 2\)"):
        guard_stop(np.zeros((2, 3)), np.zeros((2, 2)), patience=1)
    with pytest.raises(ValueError, match=r"gold must have at least one record"):
        guard_stop(np.zeros((2, 0)), np.zeros((2, 0)), patience=1)
    with pytest.raises(ValueError, match=r"gold\[1\] must be finite, got nan"):
        guard_stop([0.0, np.nan], [0.0, 1.0], patience=1)


def test_best_of_n_curve_checks_what_it_is_given():
    world = rl.World(n_prompts=2, vocab=8, response_len=3, seed=0)
    rm = rl.RewardModel(np.zeros(8))
    with pytest.raises(ValueError, match="draws must be >= 1, got 0"):
        best_of_n_curve(world, rm, [1, 2], draws=0, seed=0)
    with pytest.raises(ValueError, match="rm must weigh the world's 8 tokens, got 9 weights"):
        best_of_n_curve(world, rl.RewardModel(np.zeros(9)), [1, 2], draws=4, seed=0)
    with pytest.raises(TypeError, match="ns must be a sequence of ints, got int"):
        best_of_n_curve(world, rm, 4, draws=4, seed=0)


def test_best_of_n_gains_proxy_with_n_and_its_kl_is_the_bound():
    world = rl.World(n_prompts=4, vocab=128, seed=0)
    rm = rl.train_reward_model(world, world.preferences(2000, seed=1))
    rows = best_of_n_curve(world, rm, [1, 4, 16], draws=400, seed=0)
    assert [n for n, *_ in rows] == [1, 4, 16]
    assert rows[0][1] == 0.0 and rows[2][1] == pytest.approx(np.log(16) - 15 / 16)
    proxies = [proxy for *_, proxy in rows]
    assert proxies[0] < proxies[1] < proxies[2]


def test_the_lab_refuses_what_it_cannot_fit():
    with pytest.raises(ValueError, match="betas must include 0.0"):
        overoptimization(rl.World(n_prompts=2, vocab=16), betas=[0.1])
    with pytest.raises(ValueError, match="labellers must be one of"):
        overoptimization(rl.World(n_prompts=2, vocab=16), labellers=["crowd"])
    with pytest.raises(ValueError, match="ns must hold at least two counts above 1"):
        overoptimization(rl.World(n_prompts=2, vocab=16), ns=[1, 8])
    with pytest.raises(ValueError, match="no better than chance"):  # labels that all say the opposite
        overoptimization(rl.World(n_prompts=2, vocab=32), rm_pairs=[200], labellers=[rl.Labeller(flip=1.0)],
                         seeds=1, steps=100)
    with pytest.raises(ValueError, match="record_every must leave at least two recorded steps"):
        overoptimization(rl.World(n_prompts=2, vocab=16), steps=10, record_every=25)
    with pytest.raises(TypeError, match="world must be a World"):
        overoptimization("lesson")
    world = rl.World(n_prompts=2, vocab=16)
    with pytest.raises(TypeError, match="rm_pairs must be a sequence of ints, got int"):
        overoptimization(world, rm_pairs=20)
    with pytest.raises(TypeError, match="labellers must be a sequence of labeller names or labellers, got str"):
        overoptimization(world, labellers="human")
    with pytest.raises(TypeError, match="progress must be a bool, got str"):
        overoptimization(world, progress="yes")
    with pytest.raises(ValueError, match="record_every must leave at least two recorded steps"):
        overoptimization(world, steps=10, record_every=10)


@rust_only  # a 1024-token world takes the reference minutes; differential tests cover its twin
@pytest.mark.parametrize("world_seed", [0, 1, 2])
def test_goodhart_gold_rises_then_falls_and_more_data_moves_the_peak_out_and_up(world_seed):
    """The issue's acceptance: beta = 0 PPO against a misspecified proxy in a 1,024-token world."""
    world = rl.World(n_prompts=16, vocab=1024, response_len=8, seed=world_seed)
    result = overoptimization(world, rm_pairs=(300, 30000), labellers=("human",), betas=(0.0,), ns=(1, 4, 16),
                              seeds=6, steps=2000)
    few, many = result.rows
    curve = next(c for c in result.curves if c.rm_pairs == many.rm_pairs and c.method == "ppo")
    k = int(curve.gold.argmax())
    assert many.peak_gold > 0.2  # the proxy first helps ...
    assert many.final_gold < many.peak_gold - 1.0  # ... then hurts, by a clear margin,
    assert curve.proxy[-1] > curve.proxy[k] + 1.0  # while the proxy keeps rising
    assert (np.diff(curve.proxy[k:]) > -0.05).mean() > 0.9
    assert few.final_gold < few.peak_gold - 1.0  # a small RM is hacked too
    assert many.gold_accuracy > few.gold_accuracy
    assert many.peak_gold > few.peak_gold + 0.1
    assert many.peak_kl > few.peak_kl


def test_a_world_sweep_says_where_the_guard_would_stop():
    world = rl.World(n_prompts=4, vocab=64, seed=0)
    rm = rl.train_reward_model(world, world.preferences(300, seed=1))
    result = rl.sweep_rlhf(rm, world=world, betas=[0.0, 0.5], seeds=3, steps=300, record_every=10)
    guard = result.guard(patience=2)
    stop = guard_stop(result.gold_score, result.proxy_score, 2)
    np.testing.assert_array_equal(guard["step"], result.steps[stop] + 1)
    np.testing.assert_array_equal(guard["gold"], np.take_along_axis(result.gold_score, stop[..., None], -1)[..., 0])
    assert guard["fired"].shape == (2, 3)
    with pytest.raises(ValueError, match="needs a world sweep"):
        rl.sweep_rlhf(rl.train_rm(rl.make_dataset(50, 0)), betas=[0.0], seeds=1, steps=5).guard()


def test_the_overopt_command_writes_its_table_and_plot(tmp_path, capsys):
    from rlhf_fast.__main__ import main

    code = main(["overopt", "--rm-pairs", "300", "3000", "--labellers", "human", "--ns", "1", "4", "16", "--seeds",
                 "1", "--steps", "100", "--record-every", "10", "--vocab", "128", "--out", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and "gold acc" in out and out.count(" human ") == 2
    assert sorted(path.name for path in tmp_path.iterdir()) == ["overopt.csv", "overopt.png"]
    with pytest.raises(SystemExit) as exit_info:
        main(["overopt", "--steps", "10", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "record_every must leave at least two recorded steps" in capsys.readouterr().err
