"""Reward distillation: the core's SGD against its twin and against least squares, and what a
student's size does to over-optimisation, over seeds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rlhf_fast as rl
from conftest import RUST, assert_close, rust_only
from rlhf_fast.distill import distill_reward_model, distillation
from rlhf_fast.reference.engines.distill import distill_reward_model as reference_fit

if RUST:
    from rlhf_fast._core import distill_reward_model as core_fit


@st.composite
def problems(draw):
    vocab, d, length, n = (draw(st.integers(1, 6)), draw(st.integers(1, 5)), draw(st.integers(1, 4)),
                           draw(st.integers(1, 12)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    phi = rng.normal(0.0, draw(st.sampled_from([0.1, 1.0, 3.0])), size=(vocab, d))
    responses = rng.integers(vocab, size=(n, length))
    targets = rng.normal(0.0, 2.0, size=n)
    return phi, responses, targets, draw(st.integers(0, 6)), draw(st.sampled_from([1e-3, 0.05, 0.3, 2.0]))


def outcome(fit, phi, responses, targets, epochs, lr):
    try:
        return fit(phi, responses, targets, epochs, lr)
    except FloatingPointError as err:
        return str(err)


@rust_only
@settings(max_examples=150, deadline=None)
@given(problems())
def test_the_cores_distillation_is_its_twins(problem):
    phi, responses, targets, epochs, lr = problem
    core = outcome(core_fit, phi, responses, targets, epochs, lr)
    twin = outcome(reference_fit, phi.tolist(), responses.tolist(), targets.tolist(), epochs, lr)
    if isinstance(twin, str):
        assert core == twin  # the same divergence, named alike
        return
    theta, bias, mse = core
    assert_close(theta, twin[0])
    assert_close(bias, twin[1])
    assert_close(mse, twin[2])


def test_distillation_settles_on_the_least_squares_fit():
    # The decaying step lets SGD settle: after enough passes the head is the least-squares one.
    rng = np.random.default_rng(3)
    vocab, d, n = 12, 4, 60
    phi = rng.normal(0.0, 0.5, size=(vocab, d))
    responses = rng.integers(vocab, size=(n, 3))
    targets = rng.normal(size=n)
    fit = core_fit if RUST else (lambda *a: reference_fit(a[0].tolist(), a[1].tolist(), a[2].tolist(), *a[3:]))
    theta, bias, mse = fit(phi, responses, targets, 5000, 0.03)
    x = phi[responses].sum(axis=1)
    design = np.c_[x, np.ones(n)]
    best, *_ = np.linalg.lstsq(design, targets, rcond=None)
    np.testing.assert_allclose(np.r_[theta, bias], best, atol=2e-3)
    assert mse[-1] == pytest.approx(np.mean((design @ best - targets) ** 2), rel=1e-3)


def test_a_student_as_wide_as_the_vocabulary_can_be_the_teacher():
    world = rl.World(n_prompts=4, vocab=32, response_len=4, seed=2)
    teacher = rl.train_reward_model(world, world.preferences(3000, seed=1))
    wide = distill_reward_model(world, teacher, 64, samples=2000, epochs=40)
    narrow = distill_reward_model(world, teacher, 2, samples=2000, epochs=40)
    assert wide.heldout_r2 > 0.98 > narrow.heldout_r2
    assert wide.rm.weights.shape == (32,) and wide.phi.shape == (32, 64)
    # the RewardModel scores exactly as the head does (the bias spread over the tokens)
    _, responses = world.sample(50, seed=9)
    head = wide.phi[responses].sum(axis=1) @ wide.theta + wide.bias
    np.testing.assert_allclose(wide.rm.score(responses), head, rtol=1e-12, atol=1e-12)
    assert repr(narrow).startswith("Distilled(dim=2, vocab=32, heldout_r2=")


def test_distillation_refuses_what_it_cannot_fit():
    world = rl.World(n_prompts=2, vocab=8, response_len=2)
    teacher = rl.RewardModel(np.arange(8.0))
    with pytest.raises(ValueError, match="dim must be >= 1, got 0"):
        distill_reward_model(world, teacher, 0)
    with pytest.raises(ValueError, match="teacher must weigh the world's 8 tokens, got 9 weights"):
        distill_reward_model(world, rl.RewardModel(np.zeros(9)), 2)
    with pytest.raises(TypeError, match="teacher must be a RewardModel, got dict"):
        distill_reward_model(world, {"a": 1.0}, 2)
    with pytest.raises(ValueError, match="lr must be > 0"):
        distill_reward_model(world, teacher, 2, lr=-1.0)
    with pytest.raises(FloatingPointError, match="distill_reward_model diverged in epoch 0"):
        distill_reward_model(world, rl.RewardModel(np.full(8, 1e150)), 2, lr=5.0, samples=50)
    # The head swings past 1e154 and back within the pass: its loss overflows, the head does not
    # (the fuzzer's find: epoch_mse came back [inf]).
    world = rl.World(n_prompts=3, vocab=20, response_len=2, gold="count_once", repeat_penalty=1, seed=12)
    teacher = rl.RewardModel(np.random.default_rng(0).standard_normal(20))
    with pytest.raises(FloatingPointError, match="diverged in epoch 0: its squared error overflowed"):
        distill_reward_model(world, teacher, 2, epochs=1, lr=1)
    with pytest.raises(ValueError, match="record_every must leave at least two recorded steps"):
        distillation(world, steps=10, record_every=10)


@rust_only  # a 1024-token world takes the reference minutes; the differential test covers its twin
def test_a_smaller_student_over_optimises_sooner_and_peaks_lower():
    # The data behind "refuse a reward model smaller than the target policy": along each
    # reward model's optima, and under PPO at beta = 0, the gold peaks lower, at a smaller KL,
    # the fewer features the student has; a student as wide as the vocabulary is nearly the teacher.
    lab = distillation(dims=(16, 256, 1024), seeds=3, epochs=3, steps=1000, record_every=40)
    small, medium, wide, teacher = lab.rows
    assert teacher.dim is None and [r.dim for r in (small, medium, wide)] == [16, 256, 1024]
    assert small.heldout_r2 < medium.heldout_r2 < wide.heldout_r2 < 1.0
    assert small.gold_accuracy < medium.gold_accuracy < wide.gold_accuracy <= teacher.gold_accuracy + 0.01
    assert small.frontier_peak_gold + 1.0 < medium.frontier_peak_gold < wide.frontier_peak_gold - 1.0
    assert small.frontier_peak_kl < medium.frontier_peak_kl < wide.frontier_peak_kl
    assert wide.frontier_peak_gold > 0.8 * teacher.frontier_peak_gold
    assert small.ppo_peak_gold + 0.3 < medium.ppo_peak_gold and small.ppo_peak_kl < medium.ppo_peak_kl
    for row in lab.rows:  # and then each is hacked: the gold ends below its peak
        assert row.ppo_final_gold < row.ppo_peak_gold - 0.3
    assert "dim 16" in lab.table() and len(lab.to_rows()) == 4


def test_the_lab_command_writes_its_table_and_plot(tmp_path, capsys):
    from rlhf_fast.__main__ import main

    args = ["lab", "distill", "--dims", "2", "8", "--seeds", "1", "--samples", "200", "--steps", "40",
            "--record-every", "20", "--teacher-pairs", "500", "--vocab", "32", "--prompts", "2", "--quiet",
            "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "dim 2" in out and "teacher" in out
    lines = (tmp_path / "distill.csv").read_text().splitlines()
    assert lines[0].startswith("reward_model,dim,teacher_pairs,heldout_r2") and len(lines) == 4
    assert (tmp_path / "distill.png").stat().st_size > 10_000
    with pytest.raises(SystemExit) as stop:
        main(["lab", "distill", "--dims", "0"])
    assert stop.value.code == 2
    assert "argument --dims: must be an integer >= 1, got 0" in capsys.readouterr().err
