"""SweepResult from synthetic engine outputs: shapes, views, names, tables, frames and plots."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from rlhf_fast.reference import PROMPTS, VOCAB
from rlhf_fast.result import SweepResult

PPO_FIELDS = ("prompt", "token", "objective_scores", "objective_kl", "objective_rlhf_reward", "policy_clipfrac_avg",
              "objective_kl_coef", "mean_kl", "kl_penalty", "loss_value_avg")
PPO_SUMMARY = ("final_score", "final_kl", "mean_score", "mean_reward", "mean_kl", "clip_frac", "final_beta")
DPO_FIELDS = ("prompt", "loss", "rewards_chosen", "rewards_rejected", "rewards_margins", "rewards_accuracies")
DPO_SUMMARY = ("final_score", "final_kl", "last_epoch_loss", "last_epoch_accuracy", "last_epoch_margin")
GRPO_FIELDS = ("prompt", "reward", "reward_std", "kl", "clip_ratio", "loss", "mean_kl")
GRPO_SUMMARY = ("final_score", "final_kl", "mean_score", "mean_reward_std", "mean_kl", "clip_frac", "mean_loss")
BON_SUMMARY = ("expected_score", "kl_analytic", "kl_exact", "sampled_score")
BETAS, SEEDS = [0.0, 0.1], [0, 1, 2]
LOGITS = (len(PROMPTS), len(VOCAB))


def engine_out(n_runs, fields, summary_fields, kept, params=LOGITS, seed=0, simd="scalar"):
    """An engine dict as contract.md has it: run-major float64 arrays, categoricals as floats."""
    rng = np.random.default_rng(seed)
    history = rng.normal(size=(n_runs, len(fields), kept))
    for f, name in enumerate(fields):
        if name == "prompt":
            history[:, f] = rng.integers(0, len(PROMPTS), size=(n_runs, kept))
        if name == "token":
            history[:, f] = rng.integers(0, len(VOCAB), size=(n_runs, kept))
    return {
        "history": history,
        "history_fields": list(fields),
        "final_params": rng.normal(size=(n_runs, *params)),
        "summary": rng.normal(size=(n_runs, len(summary_fields))),
        "summary_fields": list(summary_fields),
        "simd": simd,
    }


def ppo(total_steps=12, record_every=3, axes=None):
    axes = axes or {"beta": BETAS, "seed": SEEDS}
    kept = total_steps // record_every if record_every else 0
    out = engine_out(math.prod(len(v) for v in axes.values()), PPO_FIELDS, PPO_SUMMARY, kept, simd="avx2")
    result = SweepResult.from_engine("ppo", axes, out, total_steps=total_steps, record_every=record_every,
                                     seconds=0.25)
    return result, out


def rm(accuracy=True):
    axes = {"lr": [0.01, 0.1], "epochs": [1, 3, 5], "n_pairs": [500]}
    out = engine_out(6, (), (), 0, params=(len(VOCAB),))
    out["vocab"] = list(VOCAB)
    extra = {"accuracy": np.linspace(0.5, 1.0, 6)} if accuracy else None
    return SweepResult.from_engine("rm", axes, out, extra_runs=extra), out


def best_of_n(sampled=True):
    out = engine_out(3 * 2, (), BON_SUMMARY, 0, params=(0,))
    if not sampled:
        out["summary"][:, 3] = np.nan
    return SweepResult.from_engine("best_of_n", {"n": [1, 4, 16], "seed": [0, 1]}, out), out


# ------------------------------------------------------------------------ shapes and views


def test_arrays_take_the_grid_shape_as_views_of_the_engine_output():
    result, out = ppo()
    assert result.method == "ppo"
    assert result.shape == (2, 3)
    assert result.fields == PPO_FIELDS
    np.testing.assert_array_equal(result.steps, [2, 5, 8, 11])
    assert result.total_steps == 12
    assert result.history.shape == (2, 3, len(PPO_FIELDS), 4)
    assert np.shares_memory(result.history, out["history"])
    for f, name in enumerate(PPO_FIELDS[2:], start=2):
        series = getattr(result, name)
        assert series.shape == (2, 3, 4)
        assert np.shares_memory(series, out["history"])
        np.testing.assert_array_equal(series, out["history"][:, f].reshape(2, 3, 4))
    assert result.final_theta.shape == (2, 3, len(PROMPTS), len(VOCAB))
    assert np.shares_memory(result.final_theta, out["final_params"])
    assert result.weights is None and result.vocab is None
    assert list(result.runs) == list(PPO_SUMMARY)
    for i, name in enumerate(PPO_SUMMARY):
        np.testing.assert_array_equal(result.runs[name], out["summary"][:, i].reshape(2, 3))
    assert result.simd == "avx2" and result.seconds == 0.25
    assert result.nbytes >= out["history"].nbytes + out["final_params"].nbytes


def test_run_summaries_are_attributes_and_history_wins_a_shared_name():
    result, _ = ppo()
    assert result.final_score is result.runs["final_score"]
    # mean_kl is a history field and a run summary: the attribute is the history.
    assert result.mean_kl.shape == (2, 3, 4)
    assert result.runs["mean_kl"].shape == (2, 3)
    assert {"objective_kl", "final_beta", "prompt"} <= set(dir(result))


def test_unknown_attributes_list_what_there_is():
    result, _ = ppo()
    with pytest.raises(AttributeError, match="objective_kl.*final_score"):
        result.score  # noqa: B018 - today's name, gone


def test_categorical_fields_are_int_indices_with_minus_one_for_padding():
    result, out = ppo()
    assert result.prompt.dtype == np.int64 and result.token.dtype == np.int64
    np.testing.assert_array_equal(result.prompt, out["history"][:, 0].reshape(2, 3, 4))
    np.testing.assert_array_equal(result.token, out["history"][:, 1].reshape(2, 3, 4))

    out = engine_out(2, DPO_FIELDS, DPO_SUMMARY, 6)
    out["history"][1, :, 3:] = np.nan  # run 1 has half the steps of run 0
    dpo = SweepResult.from_engine("dpo", {"beta": [0.1], "epochs": [2, 1], "seed": [None]}, out, total_steps=6,
                                  record_every=1)
    np.testing.assert_array_equal(dpo.prompt[0, 1, 0, 3:], [-1, -1, -1])
    np.testing.assert_array_equal(dpo.prompt[0, 0, 0], out["history"][0, 0])
    assert np.isnan(dpo.loss[0, 1, 0, 3:]).all()
    np.testing.assert_array_equal(dpo.run(epochs=1)["prompt"][3:], [-1, -1, -1])


def test_run_picks_one_runs_history():
    result, out = ppo()
    one = result.run(beta=0.1, seed=2)
    assert list(one) == list(PPO_FIELDS)
    r = 1 * 3 + 2  # C order: beta 1, seed 2
    for f, name in enumerate(PPO_FIELDS):
        np.testing.assert_array_equal(one[name], out["history"][r, f])
    assert one["token"].dtype == np.int64


def test_index_names_the_axis_and_its_values():
    result, _ = ppo(axes={"beta": BETAS, "lr": [0.05], "seed": SEEDS})
    assert result._index({"beta": 0.1, "seed": 1}) == (1, 0, 1)  # lr has one value: may be left out
    assert result._index({"beta": 0.0, "lr": 0.05, "seed": 0}) == (0, 0, 0)
    with pytest.raises(ValueError, match=r"say which seed: one of \[0, 1, 2\]"):
        result._index({"beta": 0.1})
    with pytest.raises(ValueError, match=r"beta is not on this grid; it has \[0.0, 0.1\]"):
        result._index({"beta": 0.5, "seed": 0})
    with pytest.raises(ValueError, match=r"unknown axes \['eps'\]; the grid's axes are \['beta', 'lr', 'seed'\]"):
        result._index({"beta": 0.1, "seed": 0, "eps": 0.2})
    with pytest.raises(ValueError, match="say which beta"):
        result.run(seed=0)


def test_from_engine_refuses_sizes_that_disagree():
    _, out = ppo()
    with pytest.raises(ValueError, match="expected 4 runs"):
        SweepResult.from_engine("ppo", {"beta": BETAS, "seed": [0, 1]}, out, total_steps=12, record_every=3)
    with pytest.raises(ValueError, match="record_every=2"):
        SweepResult.from_engine("ppo", {"beta": BETAS, "seed": SEEDS}, out, total_steps=12, record_every=2)
    with pytest.raises(ValueError, match="method must be one of"):
        SweepResult.from_engine("sft", {"beta": BETAS, "seed": SEEDS}, out, total_steps=12, record_every=3)
    with pytest.raises(ValueError, match="already a summary"):
        SweepResult.from_engine("ppo", {"beta": BETAS, "seed": SEEDS}, out, total_steps=12, record_every=3,
                                extra_runs={"final_kl": np.zeros(6)})
    del out["simd"]
    with pytest.raises(ValueError, match="lacks.*simd"):
        SweepResult.from_engine("ppo", {"beta": BETAS, "seed": SEEDS}, out, total_steps=12, record_every=3)


def test_no_history_kept_leaves_the_summaries():
    result, _ = ppo(total_steps=100, record_every=0)
    assert result.steps.shape == (0,)
    assert result.objective_kl.shape == (2, 3, 0)
    assert result.run(beta=0.0, seed=0)["token"].shape == (0,)
    assert result.final_score.shape == (2, 3)


# ------------------------------------------------------------------------------ summaries


def test_summary_pools_seeds_with_numpy_mean_and_sample_std():
    result, out = ppo()
    rows = result.summary()
    assert [row["beta"] for row in rows] == BETAS
    for i, row in enumerate(rows):
        assert row["seeds"] == 3
        for f, name in enumerate(PPO_SUMMARY):
            over_seeds = out["summary"][3 * i: 3 * i + 3, f]
            assert row[name] == pytest.approx(over_seeds.mean(), rel=1e-12)
            assert row[f"{name}_std"] == pytest.approx(over_seeds.std(ddof=1), rel=1e-12)


def test_one_seed_has_zero_spread():
    result, out = ppo(axes={"beta": BETAS, "seed": [7]})
    rows = result.summary()
    assert rows[1]["final_kl"] == out["summary"][1, 1]
    assert rows[1]["final_kl_std"] == 0.0


def test_summary_table_has_the_methods_columns():
    result, _ = ppo()
    lines = result.summary_table().splitlines()
    assert len(lines) == 2 + 2
    for title in ("beta", "seeds", "final E[score]", "final KL", "mean KL", "clip frac"):
        assert title in lines[0]
    row = result.summary()[1]
    assert f"{row['final_score']:.3f} ± {row['final_score_std']:.3f}" in lines[3]
    assert len({len(line) for line in lines}) == 1  # aligned

    bon, _ = best_of_n()
    for title in ("n", "E[score]", "sampled score", "KL exact", "KL analytic"):
        assert title in bon.summary_table().splitlines()[0]


def test_rm_grid_pools_nothing():
    result, _ = rm()
    rows = result.summary()
    assert len(rows) == 6
    assert [row["accuracy"] for row in rows] == pytest.approx(np.linspace(0.5, 1.0, 6))
    assert all(row["seeds"] == 1 and row["accuracy_std"] == 0.0 for row in rows)
    table = result.summary_table().splitlines()
    assert "accuracy" in table[0] and "seeds" not in table[0] and "±" not in table[2]
    assert len(table) == 2 + 6
    bare, _ = rm(accuracy=False)
    assert bare.summary_table().splitlines()[0].split() == ["lr", "epochs", "n_pairs"]


# -------------------------------------------------------------------- other methods


def test_rm_w_is_the_lessons_dict_of_each_model():
    result, out = rm()
    assert result.weights.shape == (2, 3, 1, len(VOCAB))
    assert np.shares_memory(result.weights, out["final_params"])
    assert result.vocab == VOCAB and result.final_theta is None
    got = result.w(lr=0.1, epochs=3)  # n_pairs has one value
    assert got == dict(zip(VOCAB, out["final_params"][1 * 3 + 1].tolist()))
    with pytest.raises(ValueError, match="epochs is not on this grid"):
        result.w(lr=0.1, epochs=4)
    np.testing.assert_array_equal(result.accuracy, np.linspace(0.5, 1.0, 6).reshape(2, 3, 1))
    with pytest.raises(ValueError, match="no history"):
        result.run(lr=0.1, epochs=3)
    ppo_result, _ = ppo()
    with pytest.raises(ValueError, match="rm sweep"):
        ppo_result.w(beta=0.1, seed=0)


def test_best_of_n_has_summaries_and_no_history():
    result, out = best_of_n()
    assert result.fields == () and result.history.shape == (3, 2, 0, 0)
    assert result.final_theta is None and result.weights is None
    assert result.steps.shape == (0,)
    np.testing.assert_array_equal(result.sampled_score, out["summary"][:, 3].reshape(3, 2))
    assert result.summary()[2]["n"] == 16
    with pytest.raises(ValueError, match="no history"):
        result.run(n=4, seed=0)


# ------------------------------------------------------------------------------- repr


def test_repr_is_a_few_short_lines_whatever_the_size():
    axes = {"beta": [0.0, 0.1, 1.0], "seed": list(range(100))}
    out = engine_out(1, PPO_FIELDS, PPO_SUMMARY, 0, simd="avx2")
    # calloc'd zeros: the size of the real thing without touching its memory.
    out["history"] = np.zeros((300, len(PPO_FIELDS), 2000))
    out["final_params"] = np.zeros((300, len(PROMPTS), len(VOCAB)))
    out["summary"] = np.zeros((300, len(PPO_SUMMARY)))
    result = SweepResult.from_engine("ppo", axes, out, total_steps=2000, record_every=1, seconds=0.21)
    text = repr(result)
    assert len(text.splitlines()) <= 3 and len(text) < 300, text
    for part in ("'ppo'", "beta[3] x seed[100] = 300 runs", "2000 (2000 kept)", "10 fields", "45.8 MiB", "'avx2'",
                 "0.21 s"):
        assert part in text
    assert "summaries: accuracy" in repr(rm()[0])


def test_results_pickle():
    import pickle

    result, _ = ppo()
    back = pickle.loads(pickle.dumps(result))
    np.testing.assert_array_equal(back.objective_kl, result.objective_kl)
    assert back.axes == result.axes and back.runs.keys() == result.runs.keys()


# ------------------------------------------------------------------------------ pandas


def test_to_pandas_is_long_with_categorical_prompt_and_token():
    pd = pytest.importorskip("pandas")
    result, out = ppo()
    out["history"][3, 0, 2] = np.nan  # one missing prompt: beta 0.1, seed 0, step 8
    table = result.to_pandas()
    assert len(table) == 6 * 4
    assert list(table.columns) == ["beta", "seed", "step", *PPO_FIELDS]
    assert isinstance(table["prompt"].dtype, pd.CategoricalDtype)
    assert list(table["prompt"].cat.categories) == list(PROMPTS)
    assert list(table["token"].cat.categories) == list(VOCAB)
    assert table["beta"].dtype == np.float64 and table["seed"].dtype == np.int64
    row = table[(table.beta == 0.1) & (table.seed == 1) & (table.step == 8)].iloc[0]
    r = 1 * 3 + 1
    assert row["objective_kl"] == out["history"][r, 3, 2]
    assert row["prompt"] == PROMPTS[int(out["history"][r, 0, 2])]
    assert row["token"] == VOCAB[int(out["history"][r, 1, 2])]
    assert table["prompt"].isna().sum() == 1
    assert pd.isna(table[(table.beta == 0.1) & (table.seed == 0) & (table.step == 8)].iloc[0]["prompt"])


def test_to_pandas_renames_an_axis_that_shares_a_fields_name():
    pytest.importorskip("pandas")
    result, _ = ppo(axes={"beta": BETAS, "kl_penalty": ["k1", "k3"], "seed": SEEDS})
    table = result.to_pandas()
    assert list(table.columns[:4]) == ["beta", "kl_penalty_axis", "seed", "step"]
    assert set(table["kl_penalty_axis"]) == {"k1", "k3"}
    assert table["kl_penalty"].dtype == np.float64


def test_to_pandas_without_history_has_one_row_per_run():
    pytest.importorskip("pandas")
    result, out = rm()
    table = result.to_pandas()
    assert list(table.columns) == ["lr", "epochs", "n_pairs", "accuracy", *(f"w[{tok}]" for tok in VOCAB)]
    assert len(table) == 6
    np.testing.assert_array_equal(table[f"w[{VOCAB[2]}]"], out["final_params"][:, 2])
    assert list(table.epochs) == [1, 3, 5, 1, 3, 5]

    bon, out = best_of_n()
    table = bon.to_pandas()
    assert list(table.columns) == ["n", "seed", *BON_SUMMARY]
    np.testing.assert_array_equal(table.expected_score, out["summary"][:, 0])
    assert list(table.n) == [1, 1, 4, 4, 16, 16]


def test_to_pandas_without_pandas_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    result, _ = ppo()
    with pytest.raises(ImportError, match="pip install pandas"):
        result.to_pandas()


# ------------------------------------------------------------------------------- plots


@pytest.fixture
def pyplot():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def assert_png_with_legends(figure, path, n_panels):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(figure.axes) == n_panels
    for ax in figure.axes:
        assert ax.get_legend() is not None, ax.get_title()


def test_ppo_plot_draws_one_curve_per_point(pyplot, tmp_path):
    result, _ = ppo(axes={"beta": [0.0, 0.1, 1.0], "seed": SEEDS})
    figure = result.plot(tmp_path / "ppo.png", points=3)
    assert_png_with_legends(figure, tmp_path / "ppo.png", 3)
    front = figure.axes[2]
    assert [line.get_label() for line in front.get_lines()] == ["β=0", "β=0.1", "β=1"]
    # Window means of the seed means: 4 kept steps in 3 windows (2, 1, 1).
    x, y = figure.axes[1].get_lines()[1].get_data()
    np.testing.assert_allclose(x, [(2 + 5) / 2 + 1, 9, 12])
    kl = result.objective_kl[1].mean(axis=0)
    np.testing.assert_allclose(y, [(kl[0] + kl[1]) / 2, kl[2], kl[3]])
    assert "log V: a single token" in [t.get_text() for t in figure.axes[1].get_legend().get_texts()]


def test_a_plot_to_show_belongs_to_pyplot_and_one_to_save_from_a_script_does_not(pyplot, tmp_path):
    """plt.show() shows the first; a script that never imported pyplot saves the second without it."""
    result, _ = ppo(axes={"beta": [0.0], "seed": SEEDS})
    shown = result.plot(points=3)
    assert pyplot.fignum_exists(shown.number)
    script = ("import sys, rlhf_fast as rl; w = rl.train_rm(rl.make_dataset(50, 0)); "
              "result = rl.sweep_rlhf(w, betas=[0.0], seeds=2, steps=10); "
              f"figure = result.plot({str(tmp_path / 'saved.png')!r}); "
              "print('matplotlib.pyplot' in sys.modules, type(figure.canvas).__name__)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout == "False FigureCanvasAgg\n"
    assert (tmp_path / "saved.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("method", ["grpo", "dpo"])
def test_grpo_and_dpo_plots(pyplot, tmp_path, method):
    fields, summary = (GRPO_FIELDS, GRPO_SUMMARY) if method == "grpo" else (DPO_FIELDS, DPO_SUMMARY)
    axes = {"beta": [0.04, 0.1], "seed": SEEDS}
    out = engine_out(6, fields, summary, 10)
    result = SweepResult.from_engine(method, axes, out, total_steps=10, record_every=1)
    figure = result.plot(tmp_path / f"{method}.png")
    assert_png_with_legends(figure, tmp_path / f"{method}.png", 3)
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[2].startswith("RM score against KL")


def test_dpo_plot_without_an_rm_still_has_legends(pyplot, tmp_path):
    out = engine_out(2, DPO_FIELDS, DPO_SUMMARY, 10)
    out["summary"][:, 0] = np.nan  # no w: no final score
    result = SweepResult.from_engine("dpo", {"beta": [0.1, 0.5], "seed": [None]}, out, total_steps=10,
                                     record_every=1)
    assert_png_with_legends(result.plot(tmp_path / "dpo.png"), tmp_path / "dpo.png", 3)


@pytest.mark.parametrize("sampled", [True, False])
def test_best_of_n_plot(pyplot, tmp_path, sampled):
    result, _ = best_of_n(sampled)
    figure = result.plot(tmp_path / "bon.png")
    assert_png_with_legends(figure, tmp_path / "bon.png", 2)
    labels = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert ("sampled score, exact KL" in labels) == sampled
    assert figure.axes[1].get_xscale() == "linear"  # n from 1 to 16: not two decades
    assert figure.axes[1].get_title() == "KL of Best-of-N to the policy against n"


def test_axes_over_decades_are_drawn_on_a_log_scale(pyplot):
    out = engine_out(3, (), BON_SUMMARY, 0, params=(0,))
    result = SweepResult.from_engine("best_of_n", {"n": [1, 16, 256], "seed": [0]}, out)
    assert result.plot().axes[1].get_xscale() == "log"


def test_rm_plot_draws_accuracy_per_other_point(pyplot, tmp_path):
    result, _ = rm()
    figure = result.plot(tmp_path / "rm.png")
    assert_png_with_legends(figure, tmp_path / "rm.png", 1)
    assert figure.axes[0].get_xlabel() == "lr"
    assert [t.get_text() for t in figure.axes[0].get_legend().get_texts()] == ["epochs=1", "epochs=3", "epochs=5"]
    with pytest.raises(ValueError, match="no run summaries"):
        rm(accuracy=False)[0].plot()


def test_plot_over_updates_needs_history(pyplot):
    result, _ = ppo(total_steps=100, record_every=0)
    with pytest.raises(ValueError, match="record_every=0"):
        result.plot()


def test_plot_without_matplotlib_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        ppo()[0].plot()
