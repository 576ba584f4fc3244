"""Best-of-N in a world, ``sweep_best_of_n(rm, world=...)``, and the frontier drawn in world plots.

1. Differential: the Rust sweep engine against its reference twin on small random worlds:
   the same choices (floats within 1e-9), every setting, both golds (``rust_only``).
2. Mathematics: on a tiny world (4 tokens, responses of 3) every one of the 64 responses is
   enumerated, and the exact law of the first of the best of ``n`` (the lesson's
   ``bon_distribution`` over responses) gives E[proxy] and E[gold] of the kept response; the
   sampled means agree within a few standard errors. ``n = 1`` samples the reference, whose
   exact means the result carries.
3. The result: thread-count independence, its table and plot, errors named on both engines.
4. The frontier: drawn (by label) in world plots, and the final policy of every k1 PPO run
   lies on or below it: ``E[r] - beta' KL`` of the run is at most the frontier's at every
   ``beta'`` (each ``pi*_beta'`` maximises it), a mathematical fact checked numerically.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import rlhf_fast as rl
from conftest import RUST, assert_close, rust_only
from hypothesis import given
from hypothesis import strategies as st
from rlhf_fast import sweep as sweep_module
from rlhf_fast.reference.engines import world_best_of_n as ref_world_bon
from rlhf_fast.reference.methods.best_of_n import bon_distribution
from rlhf_fast.result import FRONTIER_BETAS, FRONTIER_LABELS
from rlhf_fast.worlds import Frontier, RewardModel, World, softmax_rows

if RUST:
    from rlhf_fast import _core

ENGINES = pytest.mark.parametrize(
    "engines", [sweep_module._engines, sweep_module._ReferenceEngines], ids=["backend", "reference"]
)
FIELDS = ("sampled_proxy_score", "sampled_proxy_score_se", "sampled_gold_score", "sampled_gold_score_se",
          "kl_analytic", "ref_proxy_score", "ref_gold_score")


def on_engines(engines, **kwargs):
    """``rl.sweep_best_of_n(**kwargs)`` on ``engines``."""
    saved = sweep_module._engines
    sweep_module._engines = engines
    try:
        return sweep_module.sweep_best_of_n(**kwargs)
    finally:
        sweep_module._engines = saved


def outcome(fn, *args, **kwargs):
    try:
        return "ok", fn(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - compared between the two implementations
        return type(err).__name__, str(err)


# ====================================================================== 1. differential


@st.composite
def tables(draw, max_prompts=3, max_vocab=24, max_len=6):
    """``(ref_logits [P, V], weights [V], gold_token [P, V], count_once, L)`` of a small world;
    integer weights now and then, so that responses tie and the first of the best is tested."""
    n_prompts = draw(st.integers(1, max_prompts))
    vocab = draw(st.integers(2, max_vocab))
    length = draw(st.integers(1, max_len))
    rng = np.random.default_rng(draw(st.integers(0, 2**32)))
    ref_logits = draw(st.sampled_from([0.0, 1.0, 4.0])) * rng.standard_normal((n_prompts, vocab))
    weights = rng.standard_normal(vocab)
    if draw(st.booleans()):
        weights = np.round(2.0 * weights)
    gold = rng.standard_normal((n_prompts, vocab))
    return ref_logits, weights, gold, draw(st.booleans()), length


@rust_only
@given(
    world=tables(),
    runs=st.lists(st.tuples(st.integers(1, 6), st.integers(2, 25), st.integers(0, 2**40)), min_size=1, max_size=4),
)
def test_a_world_best_of_n_sweep_is_its_reference_twin(world, runs):
    args = (*world, runs)
    status, got = outcome(_core.sweep_world_best_of_n, *args)
    expected_status, expected = outcome(ref_world_bon.sweep_world_best_of_n, *args)
    assert (status, expected_status) == ("ok", "ok"), (got, expected)
    assert got["summary_fields"] == expected["summary_fields"] == list(FIELDS)
    assert got["summary"].shape == expected["summary"].shape == (len(runs), len(FIELDS))
    assert_close(got["summary"], expected["summary"])


# ===================================================================== 2. mathematics


def exact_best_of_n(world: World, rm: RewardModel, n: int) -> tuple[float, float]:
    """E[proxy] and E[gold] of the first of the best of ``n`` reference responses, by
    enumerating every response: the law of the kept one is ``bon_distribution`` over them,
    their proxy scores summed left to right as the engines sum them."""
    p = softmax_rows(world.ref_logits)
    responses = np.array(list(itertools.product(range(world.vocab), repeat=world.response_len)))
    proxy_total = gold_total = 0.0
    for x in range(world.n_prompts):
        chance = p[x][responses].prod(axis=1).tolist()
        scores = [sum(rm.weights[response].tolist(), 0.0) for response in responses]
        kept = np.array(bon_distribution(chance, scores, n))
        gold = world.gold_score(np.full(len(responses), x), responses)
        proxy_total += float(kept @ np.array(scores))
        gold_total += float(kept @ gold)
    return proxy_total / world.n_prompts, gold_total / world.n_prompts


@pytest.mark.parametrize("gold", ["count_once", "linear"])
def test_the_sampled_means_are_the_exact_best_of_n_of_an_enumerated_world(gold):
    world = World(n_prompts=2, vocab=4, response_len=3, zipf=1.0, gold=gold, seed=3)
    rm = RewardModel(np.array([0.9, -0.4, 0.3, -1.2]))
    ns = [1, 2, 5, 20]
    result = rl.sweep_best_of_n(rm, world=world, ns=ns, seeds=2, samples=4000)
    assert result.method == "world_best_of_n" and result.shape == (4, 2)
    exact = np.array([exact_best_of_n(world, rm, n) for n in ns])  # [n, (proxy, gold)]
    for score, se, column in (("sampled_proxy_score", "sampled_proxy_score_se", 0),
                              ("sampled_gold_score", "sampled_gold_score_se", 1)):
        sampled, error = result.runs[score], result.runs[se]
        assert (error > 0).all()
        gap = np.abs(sampled - exact[:, column, None])
        assert (gap < 4.5 * error).all(), (score, sampled, exact[:, column], error)
    # The proxy climbs with n and the reference's exact means are the n = 1 expectation.
    assert (np.diff(exact[:, 0]) > 0).all()
    assert_close(result.runs["ref_proxy_score"], np.full((4, 2), exact[0, 0]), rtol=1e-12)
    assert_close(result.runs["ref_gold_score"], np.full((4, 2), exact[0, 1]), rtol=1e-12, atol=1e-12)
    assert_close(result.runs["ref_gold_score"][0, 0], world.expected_gold(world.ref_logits).mean(), rtol=1e-12)
    assert_close(result.runs["kl_analytic"], np.array([[math.log(n) - (n - 1) / n] * 2 for n in ns]))


def test_one_candidate_samples_the_reference():
    world = World(n_prompts=4, vocab=64, response_len=8, seed=1)
    rm = RewardModel(np.random.default_rng(2).standard_normal(64))
    result = rl.sweep_best_of_n(rm, world=world, ns=[1], seeds=4, samples=3000)
    for score in ("proxy", "gold"):
        gap = np.abs(result.runs[f"sampled_{score}_score"] - result.runs[f"ref_{score}_score"])
        assert (gap < 4.0 * result.runs[f"sampled_{score}_score_se"]).all(), score
    assert_close(result.runs["ref_proxy_score"], np.full((1, 4), world.expected_score(world.ref_logits, rm).mean()))


# ========================================================================= 3. the result


def test_results_do_not_depend_on_the_thread_count_and_tabulate_and_plot(tmp_path):
    world = World(n_prompts=3, vocab=32, response_len=4, seed=2)
    rm = RewardModel(np.random.default_rng(0).standard_normal(32))
    result = rl.sweep_best_of_n(rm, world=world, ns=[1, 4, 16], seeds=3, samples=100, n_threads=3)
    one = rl.sweep_best_of_n(rm, world=world, ns=[1, 4, 16], seeds=3, samples=100, n_threads=1)
    np.testing.assert_array_equal(np.stack(list(one.runs.values())), np.stack(list(result.runs.values())))
    assert tuple(result.runs) == FIELDS and result.world is world and result.reward_model is rm
    assert repr(result).count("\n") == 1 and "World" not in repr(result)
    table = result.summary_table()
    assert "proxy" in table.splitlines()[0] and len(table.splitlines()) == 5
    fig = result.plot(tmp_path / "bon.png")
    assert len(fig.axes) == 2 and (tmp_path / "bon.png").exists()
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert all(label in labels for label in FRONTIER_LABELS), labels


def engine_args(**changes):
    world = World(n_prompts=2, vocab=8, response_len=3, seed=0)
    args = {"ref_logits": world.ref_logits, "weights": np.linspace(-1.0, 1.0, 8), "gold_token": world.gold_token,
            "count_once": True, "response_len": 3, "runs": [(4, 10, 0)]}
    args.update(changes)
    return args


ENGINE_ERRORS = [
    ({"ref_logits": [[0.0] * 8] * 2}, "TypeError", "ref_logits must be a 2-D float64 array, got list"),
    ({"weights": np.zeros(7)}, "ValueError", "weights must have 8 entries (one per token of ref_logits), got 7"),
    ({"gold_token": np.zeros((3, 8))}, "ValueError", "gold_token must have the shape of ref_logits, (2, 8), got (3, 8)"),
    ({"count_once": 1}, "TypeError", "count_once must be a bool, got int"),
    ({"response_len": 0}, "ValueError", "response_len must be >= 1, got 0"),
    ({"runs": [(0, 10, 0)]}, "ValueError", "n must be >= 1, got 0"),
    ({"runs": [(10**9 + 1, 10, 0)]}, "ValueError", "n must be <= 1000000000, got 1000000001"),
    ({"runs": [(2, 1, 0)]}, "ValueError",
     "samples must be >= 2 in a world (its Best-of-N is sampled, and a standard error needs two), got 1"),
    ({"weights": np.full(8, 1e308)}, "FloatingPointError",
     "sweep run 0 overflowed: sampled_proxy_score is inf (n=4)"),
]


@ENGINES
@pytest.mark.parametrize("changes, kind, message", ENGINE_ERRORS, ids=[e[2][:40] for e in ENGINE_ERRORS])
def test_the_engine_refuses_bad_arguments_by_name(engines, changes, kind, message):
    assert outcome(engines.sweep_world_best_of_n, **engine_args(**changes)) == (kind, message)


def front_end_args(**changes):
    world = World(n_prompts=2, vocab=8, response_len=3, seed=0)
    args = {"w": RewardModel(np.linspace(-1.0, 1.0, 8)), "world": world, "ns": [1, 2], "seeds": 1, "samples": 10}
    args.update(changes)
    return args


FRONT_END_ERRORS = [
    ({"world": "lesson"}, "TypeError", "world must be a rlhf_fast.worlds.World, got str"),
    ({"w": {"clear": 1.0}}, "TypeError",
     "w must be a rlhf_fast.worlds.RewardModel in a world (one weight per token), got dict"),
    ({"w": RewardModel(np.zeros(9))}, "ValueError", "w must weigh the world's 8 tokens, got 9 weights"),
    ({"samples": 1}, "ValueError", "samples must be >= 2, got 1"),
    ({"ns": [0]}, "ValueError", "ns[0] must be >= 1, got 0"),
    ({"ns": 3}, "TypeError", "ns must be a sequence of ints, got int"),
    ({"policy": np.zeros((3, 8))}, "ValueError",
     "policy cannot be given with a world: its Best-of-N samples its reference, world.ref_logits"),
]


@ENGINES
@pytest.mark.parametrize("changes, kind, message", FRONT_END_ERRORS, ids=[e[2][:40] for e in FRONT_END_ERRORS])
def test_the_front_end_refuses_what_a_world_cannot_run(engines, changes, kind, message):
    assert outcome(on_engines, engines, **front_end_args(**changes)) == (kind, message)


def test_samples_default_to_a_thousand_in_a_world_and_none_without():
    result = rl.sweep_best_of_n(**front_end_args(samples=None))
    assert (result.runs["sampled_proxy_score_se"] > 0).all()
    lesson = rl.sweep_best_of_n({tok: float(i) for i, tok in enumerate(rl.VOCAB)}, ns=[2])
    assert "sampled_score" not in lesson.runs


# ======================================================================= 4. the frontier


def test_every_k1_run_ends_on_or_below_the_proxy_frontier_and_the_plot_draws_it(tmp_path):
    world = World(n_prompts=2, vocab=16, response_len=4, seed=4)
    rm = RewardModel(np.random.default_rng(5).standard_normal(16))
    betas = [0.2, 1.0]
    result = rl.sweep_rlhf(rm, world=world, betas=betas, seeds=2, steps=600, lr=0.1, vf_coef=0.5, record_every=100)
    frontier = Frontier.of(world, rm, FRONTIER_BETAS)
    for b, beta in enumerate(betas):
        for s in range(2):
            theta = result.final_theta[b, s]
            proxy, kl = world.expected_score(theta, rm).mean(), world.kl(theta).mean()
            # pi*_beta' maximises E[r] - beta' KL: no policy does better, at any beta'
            frontier_value = frontier.proxy - frontier.betas * frontier.kl
            assert (proxy - frontier.betas * kl <= frontier_value + 1e-9).all(), (beta, s)
            optimum = world.ref_logits + rm.weights / beta
            best = world.expected_score(optimum, rm).mean() - beta * world.kl(optimum).mean()
            assert proxy - beta * kl <= best + 1e-9
            # and k1 gets close to it (measured: within 0.2 of 4.91 at beta 0.2, 0.011 of 1.48 at 1.0)
            assert proxy - beta * kl > best - 0.1 * abs(best) - 0.05, (beta, s, proxy - beta * kl, best)
    fig = result.plot(tmp_path / "ppo.png", points=5)
    front = fig.axes[3]
    lines = {line.get_label(): line for line in front.get_lines()}
    assert all(label in lines for label in FRONTIER_LABELS), list(lines)
    # the proxy frontier line is the proxy's optima, up to the panel's KL and one point past it
    x, y = lines[FRONTIER_LABELS[0]].get_data()
    assert_close(y, frontier.proxy[: len(y)])
    assert_close(x, frontier.kl[: len(x)])
    assert x[-2] <= result.mean_kl.max() * 1.001 + 1e-12


def test_the_comparison_plot_draws_the_rm_frontier_every_method_stays_under(tmp_path):
    from rlhf_fast.compare import Comparison, Row

    w = rl.train_rm(rl.make_dataset(200, seed=0), epochs=2)
    ppo = rl.sweep_rlhf(w, betas=[0.1], seeds=2, steps=300, kl_penalty="k1", record_every=0)
    row = Row("PPO", "β=0.1", ppo.runs["final_score"][0], ppo.runs["final_kl"][0], np.zeros(2), 0.0, 0, 0)
    fig = Comparison([row], 200, 0, 2, 0.0, extra={"w": w}).plot(tmp_path / "compare.png")
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert FRONTIER_LABELS[0] in lines and FRONTIER_LABELS[1] not in lines
    rm = RewardModel(np.array([w[tok] for tok in rl.VOCAB]), rl.VOCAB)
    frontier = Frontier.of(World.lesson(), rm, FRONTIER_BETAS)
    assert_close(lines[FRONTIER_LABELS[0]].get_data()[1], frontier.proxy[: len(lines[FRONTIER_LABELS[0]].get_data()[1])])
    # every final policy under the frontier: E[r] - beta' KL at most the optimum's, at every beta'
    for score, kl in zip(row.score, row.kl):
        assert (score - frontier.betas * kl <= frontier.proxy - frontier.betas * frontier.kl + 1e-9).all()
