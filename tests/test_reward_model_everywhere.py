"""A ``RewardModel`` of the lesson's VOCAB is accepted wherever the lesson takes a reward model ``w``.

Every function of ``rlhf_fast._checks.READS_REWARD_MODEL`` (the lesson's functions that read
a reward model, and the sweeps without a world), on the active backend, gives the same
result, bit for bit, for ``train_reward_model(World.lesson(), ...)`` as for its ``as_dict()``;
a ``RewardModel`` of another vocabulary is refused with a ``ValueError`` naming ``w``.
Functions that train a reward model in place (``rm_train_step``, ``train_rm``'s ``w``) keep
refusing one: it is read-only.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import rlhf_fast as rl
from rlhf_fast._checks import READS_REWARD_MODEL
from rlhf_fast.result import SweepResult
from rlhf_fast.worlds import RewardModel, World, train_reward_model

PAIRS = rl.make_dataset(20, seed=3)


@pytest.fixture(scope="module")
def lesson_rm() -> RewardModel:
    world = World.lesson()
    return train_reward_model(world, world.preferences(300, seed=0), epochs=2)


def rlhf_step(w):
    theta = rl.init_policy()
    return rl.rlhf_step(theta, rl.init_policy(), w, "help me", random.Random(4), beta=0.1, kl_penalty="k1"), theta


def grpo_step(w):
    theta = rl.init_policy()
    return rl.grpo_step(theta, rl.init_policy(), w, "answer me", random.Random(2)), theta


# name -> a call taking the reward model; every one cheap
CALLS = {
    "dot": lambda w: rl.dot(w, rl.bag("clear and kind")),
    "pairwise_accuracy": lambda w: rl.pairwise_accuracy(w, PAIRS),
    "expected_score": lambda w: rl.expected_score(rl.init_policy(), w),
    "rlhf_step": rlhf_step,
    "train_rlhf": lambda w: rl.train_rlhf(rl.init_policy(), rl.init_policy(), w=w, steps=30, seed=1, kl_penalty="k3"),
    "grpo_step": grpo_step,
    "train_grpo": lambda w: rl.train_grpo(rl.init_policy(), rl.init_policy(), w, 10, 5),
    "best_of_n": lambda w: rl.best_of_n(rl.init_policy(), w, 4, samples=50, seed=2),
    "sweep_rlhf": lambda w: rl.sweep_rlhf(w, betas=[0.0, 0.1], seeds=2, steps=20),
    "sweep_dpo": lambda w: rl.sweep_dpo(PAIRS, betas=[0.1], seeds=1, w=w),
    "sweep_grpo": lambda w: rl.sweep_grpo(w=w, betas=[0.04], seeds=2, steps=10),
    "sweep_best_of_n": lambda w: rl.sweep_best_of_n(w, ns=[1, 4], seeds=2, samples=20),
}


def test_every_function_that_reads_a_reward_model_is_tested_here():
    assert sorted(CALLS) == sorted(READS_REWARD_MODEL)


def assert_identical(got, expected, path="result"):
    if isinstance(expected, SweepResult):
        assert isinstance(got, SweepResult)
        for name in ("history", "final_theta"):
            assert_identical(getattr(got, name), getattr(expected, name), f"{path}.{name}")
        assert_identical(got.runs, expected.runs, f"{path}.runs")
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and list(got) == list(expected), path
        for key in expected:
            assert_identical(got[key], expected[key], f"{path}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected), path
        for i, (a, b) in enumerate(zip(got, expected)):
            assert_identical(a, b, f"{path}[{i}]")
    elif isinstance(expected, (np.ndarray, float)):
        np.testing.assert_array_equal(got, expected, err_msg=path)
    else:
        assert got == expected, path


@pytest.mark.parametrize("name", sorted(CALLS))
def test_a_reward_model_of_the_lessons_vocab_is_its_dict_bit_for_bit(lesson_rm, name):
    assert lesson_rm.tokens == rl.VOCAB
    got = CALLS[name](lesson_rm)
    expected = CALLS[name](lesson_rm.as_dict())
    assert_identical(got, expected)


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("other", [RewardModel(np.linspace(-1, 1, 8)), RewardModel(np.ones(3), ("a", "b", "c"))],
                         ids=["unnamed", "other-tokens"])
def test_a_reward_model_of_another_vocabulary_is_refused_naming_w(name, other):
    with pytest.raises(ValueError, match=r"^w must be a dict token -> weight or a RewardModel of the lesson's 8 VOCAB"):
        CALLS[name](other)


def test_what_trains_a_reward_model_in_place_still_wants_a_dict(lesson_rm):
    with pytest.raises(TypeError, match="^w must be a dict"):
        rl.rm_train_step(lesson_rm, "help me", "clear", "rude", 0.1)
