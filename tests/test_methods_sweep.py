"""DPO, GRPO and Best-of-N sweeps against the single-run reference functions."""

from __future__ import annotations

import numpy as np
import pytest

import rlhf_fast as rl
from rlhf_fast import reference

W = reference.train_rm(reference.make_dataset(500, 0))
PAIRS = reference.make_dataset(60, 4)
# train_dpo's history key -> the sweep's field (TRL's name, '/' written '_'); likewise for GRPO.
DPO_FIELDS = {
    "loss": "loss",
    "rewards/chosen": "rewards_chosen",
    "rewards/rejected": "rewards_rejected",
    "rewards/margins": "rewards_margins",
    "rewards/accuracies": "rewards_accuracies",
}
GRPO_FIELDS = {
    "score": "reward",
    "reward_std": "reward_std",
    "kl": "kl",
    "clip_frac": "clip_ratio",
    "loss": "loss",
    "mean_kl": "mean_kl",
}


def close(a, b):
    np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=1e-9, atol=1e-12)


def test_every_dpo_sweep_run_is_train_dpo():
    result = rl.sweep_dpo(PAIRS, betas=[0.1, 1.0], loss_type=["sigmoid", "ipo", "robust"], label_smoothing=0.0,
                          epochs=2, seeds=[None, 3], w=W)
    for beta in (0.1, 1.0):
        for loss_type in ("sigmoid", "ipo", "robust"):
            for seed in (None, 3):
                theta = reference.init_policy()
                history = reference.train_dpo(theta, reference.init_policy(), PAIRS, epochs=2, beta=beta,
                                              loss_type=loss_type, seed=seed)
                run = result.run(beta=beta, loss_type=loss_type, seed=seed)
                np.testing.assert_array_equal(run["prompt"], history["prompt"])
                for name, field in DPO_FIELDS.items():
                    close(run[field], history[name])
                index = result._index({"beta": beta, "loss_type": loss_type, "seed": seed})
                close(result.final_theta[index], [theta[x] for x in reference.PROMPTS])
                assert result.runs["final_score"][index] == pytest.approx(reference.expected_score(theta, W), rel=1e-9)


def test_every_grpo_sweep_run_is_train_grpo():
    result = rl.sweep_grpo(W, betas=[0.0, 0.04], seeds=3, steps=150, num_generations=[4, 8])
    for beta in (0.0, 0.04):
        for group in (4, 8):
            for seed in range(3):
                theta = reference.init_policy()
                history = reference.train_grpo(theta, reference.init_policy(), W, 150, seed, beta=beta,
                                               num_generations=group)
                index = result._index({"beta": beta, "num_generations": group, "seed": seed})
                np.testing.assert_array_equal(result.prompt[index], history["prompt"])
                for name, field in GRPO_FIELDS.items():
                    close(getattr(result, field)[index], history[name])
                close(result.final_theta[index], [theta[x] for x in reference.PROMPTS])


def test_best_of_n_sweep_is_best_of_n_per_n_and_seed():
    result = rl.sweep_best_of_n(W, ns=[1, 3, 16], seeds=2, samples=500)
    for i, n in enumerate((1, 3, 16)):
        for seed in range(2):
            single = reference.best_of_n(reference.init_policy(), W, n, samples=500, seed=seed)
            assert result.expected_score[i, seed] == pytest.approx(single["expected_score"], rel=1e-12)
            assert result.kl_exact[i, seed] == pytest.approx(single["kl_exact"], rel=1e-12, abs=1e-15)
            assert result.kl_analytic[i, seed] == pytest.approx(single["kl_analytic"], rel=1e-12, abs=1e-15)
            assert result.sampled_score[i, seed] == pytest.approx(single["sampled_score"], rel=1e-12)


def test_a_dpo_sweep_without_a_reward_model_has_no_final_score():
    """No silent NaN: what cannot be computed is left out, and the table and plot do without it."""
    result = rl.sweep_dpo(PAIRS, betas=[0.1, 0.5], seeds=2)
    assert "final_score" not in result.runs
    assert list(result.runs) == ["final_kl", "last_epoch_loss", "last_epoch_accuracy", "last_epoch_margin"]
    assert "nan" not in result.summary_table()
    result.plot()
    with_w = rl.sweep_dpo(PAIRS, betas=[0.1, 0.5], seeds=2, w=W)
    np.testing.assert_array_equal(with_w.runs["final_kl"], result.runs["final_kl"])
    assert list(with_w.runs)[0] == "final_score"


def test_a_best_of_n_sweep_without_samples_has_no_sampled_score():
    result = rl.sweep_best_of_n(W, ns=[1, 4], seeds=2)
    assert list(result.runs) == ["expected_score", "kl_analytic", "kl_exact"]
    assert "nan" not in result.summary_table()
    result.plot()
    sampled = rl.sweep_best_of_n(W, ns=[1, 4], seeds=2, samples=10)
    assert list(sampled.runs) == ["expected_score", "kl_analytic", "kl_exact", "sampled_score"]
    assert not np.isnan(sampled.sampled_score).any()


@pytest.mark.parametrize("engines", ["reference", "rust"])
def test_a_best_of_n_engine_refuses_runs_that_mix_sampling(engines):
    """The summary's fields are the same for every run: all sample, or none does."""
    if engines == "rust":
        sweep_best_of_n = pytest.importorskip("rlhf_fast._core").sweep_best_of_n
    else:
        sweep_best_of_n = reference.engines.best_of_n.sweep_best_of_n
    with pytest.raises(ValueError, match=r"(?<![A-Za-z0-9_])samples(?![A-Za-z0-9_])"):
        sweep_best_of_n(np.zeros((3, 8)), W, [(4, 0, 0), (4, 10, 1)])


@pytest.mark.parametrize(
    ("sweep", "kwargs", "message"),
    [
        ("sweep_dpo", dict(betas=[0.1], lr=[0.05, 1e300]),
         r"^sweep run 1 diverged at step 0: logits overflowed \(lr=1e\+300, beta=0\.1\)$"),
        ("sweep_grpo", dict(betas=[0.04], seeds=2, steps=5, lr=[1e300, 0.05]),
         r"^sweep run 0 diverged at step 0: logits overflowed \(lr=1e\+300, beta=0\.04\)$"),
    ],
)
def test_a_run_that_diverges_is_named_by_its_place_in_the_grid(sweep, kwargs, message):
    first = PAIRS if sweep == "sweep_dpo" else W
    with pytest.raises(FloatingPointError, match=message):
        getattr(rl, sweep)(first, **kwargs)


@pytest.mark.parametrize(
    ("sweep", "kwargs", "exc", "match"),
    [
        ("sweep_grpo", dict(betas=[0.04], seeds=2, steps=5, num_generations=65_537), ValueError,
         "^num_generations must be <= 65536, got 65537$"),
        ("sweep_grpo", dict(betas=[0.04], seeds=2, steps=5, num_iterations=[1, 10_001]), ValueError,
         r"^num_iterations\[1\] must be <= 10000, got 10001$"),
        ("sweep_best_of_n", dict(ns=[4, 10**9 + 1]), ValueError, r"^ns\[1\] must be <= 1000000000, got 1000000001$"),
        ("sweep_best_of_n", dict(ns=4), TypeError, "^ns must be a sequence of ints, got int$"),
        ("sweep_best_of_n", dict(ns=[4], samples=-1), ValueError, "^samples must be >= 0, got -1$"),
        ("sweep_dpo", dict(betas=[0.1], seeds=[None, 1.5]), TypeError, r"^seeds\[1\] must be an int, got float$"),
        ("sweep_dpo", dict(betas=[0.1], label_smoothing=[0.0, 0.1], loss_type=["sigmoid", "ipo"]), ValueError,
         "^label_smoothing is only defined for loss_type 'sigmoid' and 'robust'"),
    ],
)
def test_method_sweeps_bound_their_counts(sweep, kwargs, exc, match):
    first = PAIRS if sweep == "sweep_dpo" else W
    with pytest.raises(exc, match=match):
        getattr(rl, sweep)(first, **kwargs)


@pytest.mark.parametrize("n_threads", [1, 3])
def test_method_sweeps_do_not_depend_on_the_thread_count(n_threads):
    dpo = [rl.sweep_dpo(PAIRS, betas=[0.1, 0.5], seeds=3, n_threads=t) for t in (None, n_threads)]
    np.testing.assert_array_equal(dpo[0].loss, dpo[1].loss)
    np.testing.assert_array_equal(dpo[0].final_theta, dpo[1].final_theta)
    grpo = [rl.sweep_grpo(W, betas=[0.04], seeds=5, steps=100, n_threads=t) for t in (None, n_threads)]
    np.testing.assert_array_equal(grpo[0].reward, grpo[1].reward)
    np.testing.assert_array_equal(grpo[0].final_theta, grpo[1].final_theta)
    bon = [rl.sweep_best_of_n(W, ns=[4], seeds=5, samples=300, n_threads=t) for t in (None, n_threads)]
    np.testing.assert_array_equal(bon[0].sampled_score, bon[1].sampled_score)


@pytest.mark.parametrize("sweep", ["sweep_grpo", "sweep_best_of_n"])
def test_length_only_reward_models_are_refused_by_the_sweeps(sweep):
    flat = {tok: 0.7 for tok in reference.VOCAB}
    kwargs = dict(betas=[0.1], seeds=2, steps=10) if sweep == "sweep_grpo" else dict(ns=[2])
    with pytest.raises(ValueError, match="length alone"):
        getattr(rl, sweep)(flat, **kwargs)
    with pytest.raises(ValueError, match="length alone"):
        rl.sweep_rlhf(flat, betas=[0.1], seeds=2, steps=10)


def test_core_helpers_behind_the_api(api_is_rust):
    """The Rust entry points the Python layer wraps, named and checked directly."""
    from rlhf_fast import _core

    z = np.array([[0.0, 1.0, -2.0, 1e4], [3.0, 3.0, 3.0, 3.0]])
    for row, got in zip(z, _core.softmax_rows(z)):
        close(got, reference.softmax(list(row)))
    for row, got in zip(z, _core.log_softmax_rows(z)):
        close(got, reference.log_softmax(list(row)))
    with pytest.raises(ValueError, match="length alone"):
        _core.check_not_length_only({})
    _core.check_not_length_only(W)
    theta, theta_ref = reference.init_policy(), reference.init_policy()
    record = _core.dpo_step_metrics(theta, reference.init_policy(), "help me", "clear kind", "rude wrong", 0.5,
                                    0.1, "hinge", 0.0)
    loss = reference.dpo_step(theta_ref, reference.init_policy(), "help me", "clear kind", "rude wrong", beta=0.5,
                              lr=0.1, loss_type="hinge")
    assert record["loss"] == pytest.approx(loss, rel=1e-12)
    close([theta[x] for x in reference.PROMPTS], [theta_ref[x] for x in reference.PROMPTS])


@pytest.fixture
def api_is_rust():
    if rl.BACKEND != "rust":
        pytest.skip("the Rust entry points themselves")
