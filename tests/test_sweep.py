"""Sweeps against the reference: every run of a grid is a ``reference.train_rlhf`` run."""

from __future__ import annotations

import math
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rlhf_fast as rl
from rlhf_fast import reference

W = reference.train_rm(reference.make_dataset(500, 0))
PAIRS = reference.make_dataset(20, 1)
# train_rlhf's history key -> the sweep's field (TRL's name, '/' written '_').
FIELDS = {
    "prompt": "prompt",
    "token": "token",
    "score": "objective_scores",
    "kl": "objective_kl",
    "reward": "objective_rlhf_reward",
    "clip_frac": "policy_clipfrac_avg",
    "beta": "objective_kl_coef",
    "mean_kl": "mean_kl",
    "kl_penalty": "penalised_kl",
    "value_loss": "loss_value_avg",
}
FLOATS = tuple(key for key in FIELDS if key not in ("prompt", "token"))


def reference_run(steps, seed, **config):
    theta = reference.init_policy()
    history = reference.train_rlhf(theta, reference.init_policy(), W, steps, seed, kl_threshold=1e300, **config)
    return theta, history


def assert_run_matches(result, index, theta, history, rtol=1e-9):
    for name in ("token", "prompt"):
        np.testing.assert_array_equal(getattr(result, name)[index], history[name], err_msg=name)
    for name in FLOATS:
        np.testing.assert_allclose(
            getattr(result, FIELDS[name])[index], history[name], rtol=rtol, atol=1e-12, err_msg=name
        )
    final = np.array([theta[x] for x in reference.PROMPTS])
    np.testing.assert_allclose(result.final_theta[index], final, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(result.runs["final_score"][index], reference.expected_score(theta, W), rtol=rtol)


@pytest.fixture(scope="module")
def lesson_grid():
    return rl.sweep_rlhf(W, betas=[0.0, 0.1, 1.0], seeds=20, steps=500)


def test_every_run_of_a_3x20x500_sweep_is_the_reference_run(lesson_grid):
    assert lesson_grid.objective_scores.shape == (3, 20, 500)
    for i, beta in enumerate([0.0, 0.1, 1.0]):
        for seed in range(20):
            theta, history = reference_run(500, seed, beta=beta)
            assert_run_matches(lesson_grid, (i, seed), theta, history)


@pytest.mark.parametrize("n_threads", [1, 2, 4])
def test_thread_count_changes_nothing(lesson_grid, n_threads):
    again = rl.sweep_rlhf(W, betas=[0.0, 0.1, 1.0], seeds=20, steps=500, n_threads=n_threads)
    for name in ("history", "final_theta"):
        np.testing.assert_array_equal(getattr(again, name), getattr(lesson_grid, name), err_msg=name)


def test_every_vector_path_gives_the_same_arrays(lesson_grid):
    for simd in rl.simd_paths():
        again = rl.sweep_rlhf(W, betas=[0.0, 0.1, 1.0], seeds=20, steps=500, simd=simd)
        for name in ("history", "final_theta"):
            np.testing.assert_array_equal(getattr(again, name), getattr(lesson_grid, name), err_msg=f"{simd}: {name}")


def test_dask_executor_gives_the_same_arrays(lesson_grid):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:
        remote = rl.sweep_rlhf(
            W, betas=[0.0, 0.1, 1.0], seeds=20, steps=500, executor=client.get_executor(), shards=5
        )
    for name in ("history", "final_theta"):
        np.testing.assert_array_equal(getattr(remote, name), getattr(lesson_grid, name), err_msg=name)
    for name, values in lesson_grid.runs.items():
        np.testing.assert_array_equal(remote.runs[name], values, err_msg=name)


def test_exact_mode_is_bit_identical_even_when_the_doubling_rule_explodes_beta():
    result = rl.sweep_rlhf(
        W, betas=[0.2, 1.0], seeds=[3, 11], steps=400, kl_ctl=["adaptive", "doubling"], target=0.5,
        horizon=50.0, ppo_epochs=5, kl_penalty=["full", "k3"], vf_coef=0.5, exact=True,
    )
    for i, beta in enumerate([0.2, 1.0]):
        for j, kl_ctl in enumerate(["adaptive", "doubling"]):
            for k, kl_penalty in enumerate(["full", "k3"]):
                for m, seed in enumerate([3, 11]):
                    theta, history = reference_run(
                        400, seed, beta=beta, kl_ctl=kl_ctl, target=0.5, horizon=50.0, ppo_epochs=5,
                        kl_penalty=kl_penalty, vf_coef=0.5,
                    )
                    assert_run_matches(result, (i, j, k, m), theta, history, rtol=0)


@settings(max_examples=15)
@given(
    beta=st.floats(0.0, 2.0),
    eps=st.floats(0.01, 0.5),
    lr=st.floats(1e-3, 0.5),
    ppo_epochs=st.integers(1, 8),
    steps=st.integers(1, 300),
    seed=st.integers(0, 2**64),
    kl_ctl=st.sampled_from(["fixed", "adaptive"]),
    target=st.floats(0.05, 6.0),
    # An adaptive controller that reacts within ~10 steps can amplify the lanes' two-ulp exp
    # into 4e-9 over 235 steps (horizon=10, lr=0.375, eps=0.5, seed 3, found by CI's
    # hypothesis; the same floats before issue 9): ill-conditioned, as the README says.
    horizon=st.floats(100.0, 1e4),
    kl_penalty=st.sampled_from(["full", "k1", "k2", "k3"]),
    vf_coef=st.sampled_from([0.0, 0.1, 1.0]),
    cliprange_value=st.floats(0.01, 1.0),
)
def test_any_well_conditioned_run_matches_the_reference(
    beta, eps, lr, ppo_epochs, steps, seed, kl_ctl, target, horizon, kl_penalty, vf_coef, cliprange_value
):
    config = dict(
        eps=eps, lr=lr, ppo_epochs=ppo_epochs, kl_ctl=kl_ctl, target=target, horizon=horizon,
        kl_penalty=kl_penalty, vf_coef=vf_coef, cliprange_value=cliprange_value,
    )
    result = rl.sweep_rlhf(W, betas=[beta], seeds=[seed], steps=steps, **config)
    theta, history = reference_run(steps, seed, beta=beta, **config)
    assert_run_matches(result, (0, 0), theta, history)


def test_grid_axes_follow_the_arguments_given_as_sequences():
    result = rl.sweep_rlhf(W, betas=[0.1], seeds=2, steps=50, lr=[0.01, 0.1], ppo_epochs=[1, 4])
    assert list(result.axes) == ["beta", "lr", "ppo_epochs", "seed"]
    assert result.objective_scores.shape == (1, 2, 2, 2, 50)
    theta, history = reference_run(50, 1, beta=0.1, lr=0.1, ppo_epochs=1)
    assert_run_matches(result, (0, 1, 0, 1), theta, history)
    np.testing.assert_array_equal(result.run(lr=0.1, ppo_epochs=1, seed=1)["token"], history["token"])


def test_record_every_keeps_every_kth_step_and_the_summaries():
    full = rl.sweep_rlhf(W, betas=[0.0, 1.0], seeds=3, steps=100)
    thin = rl.sweep_rlhf(W, betas=[0.0, 1.0], seeds=3, steps=100, record_every=7)
    none = rl.sweep_rlhf(W, betas=[0.0, 1.0], seeds=3, steps=100, record_every=0)
    np.testing.assert_array_equal(thin.steps, np.arange(6, 100, 7))
    np.testing.assert_array_equal(thin.history, full.history[..., 6::7])
    assert none.objective_scores.shape == (2, 3, 0)
    for name, values in full.runs.items():
        np.testing.assert_array_equal(none.runs[name], values)
        np.testing.assert_array_equal(thin.runs[name], values)


def test_run_summaries_are_what_their_names_say():
    result = rl.sweep_rlhf(W, betas=[0.0, 1.0], seeds=4, steps=300, kl_ctl="adaptive", target=0.5, horizon=100.0)
    np.testing.assert_allclose(result.runs["mean_score"], result.objective_scores.mean(axis=-1), rtol=1e-12)
    np.testing.assert_allclose(result.runs["clip_frac"], result.policy_clipfrac_avg.mean(axis=-1), rtol=1e-12)
    np.testing.assert_allclose(result.runs["mean_kl"], result.mean_kl[..., -1], rtol=1e-12)
    controller = reference.AdaptiveKLController(result.objective_kl_coef[1, 2, -1], 0.5, 100.0)
    controller.update(result.objective_kl[1, 2, -1], 1)
    assert result.runs["final_beta"][1, 2] == pytest.approx(controller.value, rel=1e-12)
    theta = {x: list(row) for x, row in zip(reference.PROMPTS, result.final_theta[0, 1])}
    exact_kl = sum(
        reference.kl(reference.softmax(theta[x]), reference.softmax([0.0] * 8)) for x in reference.PROMPTS
    ) / 3
    assert result.runs["final_kl"][0, 1] == pytest.approx(exact_kl, rel=1e-12)


def test_summary_pools_seeds_with_their_spread():
    result = rl.sweep_rlhf(W, betas=[0.0, 1.0], seeds=5, steps=200)
    rows = result.summary()
    assert [row["beta"] for row in rows] == [0.0, 1.0]
    for i, row in enumerate(rows):
        assert row["final_score"] == pytest.approx(result.runs["final_score"][i].mean())
        assert row["final_score_std"] == pytest.approx(result.runs["final_score"][i].std(ddof=1))
    assert "final E[score]" in result.summary_table()


def test_long_table_uses_trl_names():
    pd = pytest.importorskip("pandas")
    result = rl.sweep_rlhf(W, betas=[0.0, 1.0], seeds=2, steps=30, record_every=3)
    table = result.to_pandas()
    assert isinstance(table, pd.DataFrame)
    assert len(table) == 2 * 2 * 10
    for name in ("objective_scores", "objective_kl", "objective_rlhf_reward", "policy_clipfrac_avg"):
        assert name in table.columns
    row = table[(table.beta == 1.0) & (table.seed == 1) & (table.step == 29)].iloc[0]
    assert row["objective_kl"] == result.objective_kl[1, 1, -1]


def test_plot_draws_one_curve_per_beta(tmp_path):
    pytest.importorskip("matplotlib")
    result = rl.sweep_rlhf(W, betas=[0.0, 0.1, 1.0], seeds=3, steps=200)
    path = tmp_path / "sweep.png"
    figure = result.plot(path)
    assert path.stat().st_size > 10_000
    front = figure.axes[2]
    assert [line.get_label() for line in front.get_lines()] == ["β=0", "β=0.1", "β=1"]


def test_progress_callback_counts_every_step():
    counted = []
    rl.sweep_rlhf(W, betas=[0.0, 1.0], seeds=10, steps=2000, progress=counted.append)
    assert sum(counted) == 2 * 10 * 2000


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(betas=[]), ValueError, "^betas must not be empty$"),
        (dict(betas=[math.nan]), ValueError, r"^betas\[0\] must be finite, got nan$"),
        (dict(betas=[-0.1]), ValueError, r"^betas\[0\] must be >= 0, got -0.1$"),
        (dict(betas=0.1), TypeError, "^betas must be a sequence of floats, got float$"),
        (dict(betas=["0.1"]), TypeError, r"^betas\[0\] must be a real number, got str$"),
        (dict(steps=0), ValueError, "^steps must be >= 1, got 0$"),
        (dict(steps=-5), ValueError, "^steps must be >= 1, got -5$"),
        (dict(steps=2.0), TypeError, "^steps must be an int, got float$"),
        (dict(seeds=0), ValueError, r"^seeds must be >= 1 \(a count\) or a list of ints, got 0$"),
        (dict(seeds=[]), ValueError, "^seeds must not be empty$"),
        (dict(seeds=2.0), TypeError, "^seeds must be an int count or a sequence of ints, got float$"),
        (dict(seeds=[0, 1.0]), TypeError, r"^seeds\[1\] must be an int, got float$"),
        (dict(eps=[0.2, 0.0]), ValueError, r"^eps\[1\] must be > 0, got 0.0$"),
        (dict(lr=math.inf), ValueError, "^lr must be finite, got inf$"),
        (dict(ppo_epochs=10_001), ValueError, "^ppo_epochs must be <= 10000, got 10001$"),
        (dict(kl_ctl="pid"), ValueError, r"^kl_ctl must be one of \('fixed', 'adaptive', 'doubling'\), got 'pid'$"),
        (dict(record_every=-1), ValueError, "^record_every must be >= 0, got -1$"),
        (dict(seeds=10_000, steps=10_000_000), ValueError, "max_memory"),
        (dict(n_threads=0), ValueError, "^n_threads must be >= 1, got 0$"),
        (dict(max_memory=0), ValueError, "^max_memory must be >= 1, got 0$"),
        (dict(shards=0), ValueError, "^shards must be >= 1, got 0$"),
        (dict(exact="yes"), TypeError, "^exact must be a bool, got str$"),
        (dict(executor=object()), TypeError, r"^executor must be a concurrent.futures.Executor, got object$"),
        (dict(theta=np.zeros((3, 7))), ValueError, r"^theta must have shape \(3, 8\), got \[3, 7\]$"),
        (dict(ref="uniform"), TypeError, "^ref must be a dict prompt -> list of logits or a float64 array"),
    ],
)
def test_bad_grids_are_refused_before_any_work(kwargs, exc, match):
    args = dict(betas=[0.1], seeds=2, steps=10, progress=lambda n: pytest.fail("work started"))
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        rl.sweep_rlhf(W, **args)


def test_a_progress_that_is_neither_a_bool_nor_a_callable_is_refused():
    with pytest.raises(TypeError, match="^progress must be a bool or a callable taking a step count, got str$"):
        rl.sweep_rlhf(W, betas=[0.1], seeds=2, steps=10, progress="yes")


def test_a_huge_grid_is_refused_at_once_before_any_run_is_built():
    """seeds=10**9 used to build list(range(seeds)) first and take the machine with it: the grid's
    size is known from its axes' lengths and refused before any per-run list exists."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ValueError) as refused:
            rl.sweep_rlhf(W, betas=[0.0, 0.1, 1.0], seeds=10**9, steps=10**9)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 1.0
    assert peak < 1 << 20, f"{peak} bytes were allocated before the refusal"
    runs, per_run = 3 * 10**9, (10 * 10**9 + 7 + 24) * 8 + 256
    assert str(refused.value).startswith(
        f"this sweep would keep {runs * per_run} bytes ({runs} runs x {10**9} kept steps), over max_memory="
    )


@pytest.mark.parametrize(
    ("sweep", "kwargs"),
    [
        ("sweep_rlhf", dict(betas=[0.1], seeds=10**12, steps=1, record_every=0)),
        ("sweep_grpo", dict(betas=[0.1], seeds=10**12, steps=1)),
        ("sweep_dpo", dict(betas=[0.1], seeds=10**12)),
        ("sweep_best_of_n", dict(ns=[1, 2], seeds=10**12)),
    ],
)
def test_every_front_end_counts_the_runs_before_building_them(sweep, kwargs):
    first = PAIRS if sweep == "sweep_dpo" else W
    started = time.perf_counter()
    with pytest.raises(ValueError, match=r"runs x \d+ kept steps\), over max_memory=100000 bytes"):
        getattr(rl, sweep)(first, **kwargs, max_memory=100_000)
    assert time.perf_counter() - started < 1.0


def test_the_memory_check_counts_the_bookkeeping_of_every_run():
    """A grid without history still costs 256 bytes a run beyond its summaries and final policy."""
    per_run = (7 + 24) * 8 + 256
    rl.sweep_rlhf(W, betas=[0.1], seeds=4, steps=1, record_every=0, max_memory=4 * per_run)
    with pytest.raises(ValueError, match=f"^this sweep would keep {5 * per_run} bytes "):
        rl.sweep_rlhf(W, betas=[0.1], seeds=5, steps=1, record_every=0, max_memory=4 * per_run)


def test_a_run_that_diverges_is_named_by_its_place_in_the_grid():
    """Run (beta=0.1, lr=1e300, seed=0) is the third of the grid in C order: sweep run 2."""
    with pytest.raises(FloatingPointError, match=r"^sweep run 2 diverged at step 0: logits overflowed "
                                                  r"\(lr=1e\+300, beta=0\.1\)$"):
        rl.sweep_rlhf(W, betas=[0.1], seeds=2, steps=10, lr=[0.05, 1e300])


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(pairs=[]), ValueError, "^pairs must not be empty$"),
        (dict(n_pairs=[0, 5]), ValueError, r"^n_pairs\[0\] must be >= 1, got 0$"),
        (dict(n_pairs=[50]), ValueError, "^n_pairs=50 is more than the 20 pairs given$"),
        (dict(heldout=[]), ValueError, "^heldout must not be empty$"),
        (dict(heldout=7), TypeError, r"^heldout must be an iterable of \(prompt, chosen, rejected\), got int$"),
        (dict(lrs=[0.1, -1.0]), ValueError, r"^lrs\[1\] must be > 0, got -1.0$"),
        (dict(epochs=1.5), TypeError, "^epochs must be an int, got float$"),
    ],
)
def test_sweep_rm_refuses_what_train_rm_refuses(kwargs, exc, match):
    """Model (lr, e, n) is train_rm(pairs[:n], e, lr), which refuses no pairs."""
    args = dict(pairs=PAIRS, lrs=0.1, epochs=1)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        rl.sweep_rm(args.pop("pairs"), **args)


def test_sweep_rm_matches_reference_training_per_grid_point():
    pairs = rl.make_dataset(400, 3)
    heldout = rl.make_dataset(100, 1)
    result = rl.sweep_rm(pairs, lrs=[0.01, 0.1], epochs=[0, 1, 3], n_pairs=[50, 400], heldout=heldout)
    assert result.weights.shape == (2, 3, 2, len(result.vocab))
    for lr in (0.01, 0.1):
        for epochs in (0, 1, 3):
            for n in (50, 400):
                w = reference.train_rm(pairs[:n], epochs=epochs, lr=lr)
                got = result.w(lr=lr, epochs=epochs, n_pairs=n)
                for token, value in w.items():
                    assert got[token] == pytest.approx(value, rel=1e-12, abs=1e-15)
                index = (result.axes["lr"].index(lr), result.axes["epochs"].index(epochs), [50, 400].index(n))
                assert result.accuracy[index] == reference.pairwise_accuracy(w, heldout)


def test_preference_set_is_make_dataset_tokenised():
    generated = rl.PreferenceSet.make_dataset(1000, 7)
    assert len(generated) == 1000
    assert generated.to_pairs() == reference.make_dataset(1000, 7)
    assert generated.vocab == list(reference.VOCAB)
    assert rl.train_rm(generated, epochs=2) == pytest.approx(reference.train_rm(reference.make_dataset(1000, 7), 2))
    rows = reference.pairs_to_rows(reference.make_dataset(20, 2))
    assert rl.PreferenceSet(rows).to_pairs() == reference.make_dataset(20, 2)
