"""Safe RLHF in a bag world (issue 11 item 5): the safety cost, the cost model, PPO with a cost.

1. The Rust engine against its reference twin (hypothesis; small random worlds; the same
   sampled responses, so the same sampled scores; floats within 1e-9), the logits bit for
   bit with ``exact=True`` (the exact means sum along the row in another order); ``lambda = 0`` is plain world PPO bit for bit.
2. Mathematics: the Lagrange update against its formula, replayed from a run's record; the
   exact expected cost against enumeration of every bag of a tiny world; the world's other
   tables untouched by a safety spec.
3. The phenomenon over seeds (``rust_only``): a larger fixed lambda gives lower cost and lower
   helpfulness; the Lagrangian ends within its limit (a tolerance for the cost model's error)
   while lambda = 0 ends far above it.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from conftest import NUDGE_FACTOR, RUST, assert_close, assert_run_close, floats, nudged, rust_only
from hypothesis import given
from hypothesis import strategies as st

import rlhf_fast as rl
from rlhf_fast import sweep as sweep_module
from rlhf_fast.reference.engines import safe_world_ppo as ref_safe
from rlhf_fast.reference.methods.lagrangian import LagrangeMultiplier, LagrangeParams
from rlhf_fast.safety import calibrate_cost_model, safety_lab
from rlhf_fast.worlds import Labeller, RewardModel, Safety, World, softmax_rows, train_reward_model

if RUST:
    from rlhf_fast import _core

RUN_ATOL = 1e-9


def outcome(fn, *args, **kwargs):
    try:
        return "ok", fn(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - compared between the two implementations
        return type(err).__name__, str(err)


@st.composite
def safe_tables(draw):
    """A small world's tables with a cost model and a gold cost (non-negative, some zero)."""
    n_prompts, vocab, length = draw(st.integers(1, 3)), draw(st.integers(2, 24)), draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32)))
    ref_logits = draw(st.sampled_from([0.0, 1.0, 3.0])) * rng.standard_normal((n_prompts, vocab))
    weights = rng.standard_normal(vocab)
    gold = rng.standard_normal((n_prompts, vocab))
    cost = np.where(rng.random(vocab) < 0.3, rng.random(vocab) + 0.5, 0.0)
    cost_weights = cost + 0.3 * rng.standard_normal(vocab)
    return ref_logits, weights, gold, draw(st.booleans()), length, cost_weights, np.tile(cost, (n_prompts, 1))


run_settings = st.fixed_dictionaries({
    "eps": floats(0.05, 0.5), "lr": floats(1e-3, 0.1), "ppo_epochs": st.integers(1, 4), "beta": floats(0.0, 1.0),
    "kl_penalty": st.sampled_from(("full", "k1", "k3")), "vf_coef": st.one_of(st.just(0.0), floats(0.0, 1.0)),
    "cliprange_value": floats(0.05, 1.0),
    "lambda_init": floats(0.01, 3.0), "cost_limit": st.one_of(st.none(), floats(-1.0, 3.0)),
    "lagrangian_lr": floats(1e-3, 0.5), "lambda_max": floats(3.0, 50.0), "cost_window": st.integers(1, 8),
    "lagrangian_kp": st.one_of(st.just(0.0), floats(0.0, 20.0)), "lr_decay": st.booleans(),
    "cost_estimate": st.sampled_from(("sampled", "expected")),
})


def run_tuple(seed, s):
    return ((seed, s["eps"], s["lr"], s["ppo_epochs"], s["beta"], s["kl_penalty"], s["vf_coef"], s["cliprange_value"]),
            (s["lambda_init"], s["cost_limit"], s["lagrangian_lr"], s["lambda_max"], s["cost_window"],
             s["lagrangian_kp"], s["lr_decay"], s["cost_estimate"]))


# ============================================================== 1. Rust against its twin


@rust_only
@given(world=safe_tables(), settings=st.lists(run_settings, min_size=1, max_size=3), seed=st.integers(0, 2**40),
       steps=st.integers(1, 30), record_every=st.integers(0, 3), exact=st.booleans())
def test_a_safety_sweep_is_its_reference_twin(world, settings, seed, steps, record_every, exact):
    ref_logits, weights, gold, count_once, length, cost_weights, gold_cost = world
    runs = [run_tuple(seed + i, s) for i, s in enumerate(settings)]
    args = (ref_logits, weights, gold, count_once, length, steps, runs, cost_weights, gold_cost)
    status, got = outcome(_core.sweep_safe_world_rlhf, *args, record_every=record_every, exact=exact)
    expected_status, expected = outcome(ref_safe.sweep_safe_world_rlhf, *args, record_every=record_every)
    assert (status, expected_status) == ("ok", "ok") or (status, got) == (expected_status, expected)
    if status != "ok":
        return
    assert got["history_fields"] == expected["history_fields"]
    assert got["summary_fields"] == expected["summary_fields"]
    for key in ("history", "final_params", "summary"):
        assert got[key].shape == expected[key].shape, key
        if exact and key == "final_params":  # libm's steps: the reference's logits exactly
            np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    try:
        for key in ("history", "final_params", "summary"):
            assert_close(got[key], expected[key], atol=RUN_ATOL, err_msg=key)
    except AssertionError:
        if exact:
            raise
        # The vectorised steps on a chaotic run (tests/test_worlds_ppo.py): allowed a thousand
        # times the reference's own spread when its reference logits move by one ulp.
        nudged_sweep = ref_safe.sweep_safe_world_rlhf(nudged(ref_logits), *args[1:], record_every=record_every)
        assert_run_close(got["history"], expected["history"], nudged_sweep["history"], RUN_ATOL, "history", axis=-1)
        for key in ("final_params", "summary"):
            # Per run: its largest spread anywhere.
            far = np.abs(nudged_sweep[key] - expected[key]).reshape(len(runs), -1).max(axis=1)
            for run, (a, b) in enumerate(zip(got[key], expected[key])):
                assert_close(a, b, atol=RUN_ATOL + NUDGE_FACTOR * far[run], err_msg=f"{key}, run {run}")


@pytest.fixture(scope="module")
def small_world():
    world = World(n_prompts=3, vocab=24, response_len=4, gold="linear", seed=5, safety=Safety(unsafe_share=0.3))
    rm = train_reward_model(world, world.preferences(200, seed=1))
    cm = train_reward_model(world, world.safety_preferences(200, seed=2))
    return world, rm, cm


def test_lambda_zero_is_plain_world_ppo_bit_for_bit(small_world):
    world, rm, cm = small_world
    plain = rl.sweep_rlhf(rm, world=world, betas=[0.1], seeds=2, steps=60, exact=True)
    safe = rl.sweep_rlhf(rm, world=world, cost_model=cm, lambda_init=0.0, betas=[0.1], seeds=2, steps=60, exact=True)
    np.testing.assert_array_equal(safe.final_theta, plain.final_theta)
    for name in ("objective_scores", "objective_rlhf_reward", "gold_score", "mean_kl"):
        np.testing.assert_array_equal(getattr(safe, name), getattr(plain, name))


def test_both_engines_of_the_front_end_agree(small_world):
    world, rm, cm = small_world
    results = []
    for engines in (sweep_module._engines, sweep_module._ReferenceEngines):
        saved, sweep_module._engines = sweep_module._engines, engines
        try:
            results.append(rl.sweep_rlhf(rm, world=world, cost_model=cm, betas=[0.1], seeds=2, steps=40, exact=True,
                                         lambda_init=[0.5], cost_limit=[None, 0.2], cost_window=4))
        finally:
            sweep_module._engines = saved
    np.testing.assert_array_equal(results[0].final_theta, results[1].final_theta)
    assert_close(results[0].history, results[1].history, atol=RUN_ATOL)
    for name in results[0].runs:
        assert_close(results[0].runs[name], results[1].runs[name], atol=RUN_ATOL, err_msg=name)


# ============================================================== 2. mathematics


@pytest.mark.parametrize("kp, estimate", [(0.0, "sampled"), (2.0, "sampled"), (2.0, "expected")])
def test_the_lagrange_update_is_its_formula_replayed_from_a_run(small_world, kp, estimate):
    """Every recorded multiplier is ``exp(ln lambda) + kp (J_C - limit)`` (clamped to ``[0,
    lambda_max]``) after ``ln lambda += lr exp(ln lambda) (J_C - limit)`` (clamped), ``J_C`` the
    mean over the window of the sampled responses' cost-model scores or, with
    ``cost_estimate="expected"``, of the cost model's exact expected scores after each step."""
    world, rm, cm = small_world
    limit, lr, window, lam_max = 0.5, 0.3, 3, 4.0
    result = rl.sweep_rlhf(rm, world=world, cost_model=cm, betas=[0.1], seeds=1, steps=80, lambda_init=1.5,
                           cost_limit=limit, lagrangian_lr=lr, cost_window=window, lambda_max=lam_max,
                           lagrangian_kp=kp, cost_estimate=estimate)
    costs = (result.objective_costs if estimate == "sampled" else result.cost_score)[0, 0]
    recorded = result.lagrange_multiplier[0, 0]
    log_lam, integral = math.log(1.5), 1.5
    for t, cost in enumerate(costs):
        seen = costs[max(0, t - window + 1):t + 1]
        error = sum(seen) / len(seen) - limit
        log_lam = min(log_lam + lr * integral * error, math.log(lam_max))
        integral = math.exp(log_lam)
        lam = min(max(integral + kp * error, 0.0), lam_max) if kp else integral
        assert math.isclose(recorded[t], lam, rel_tol=1e-12, abs_tol=1e-15), t
    assert recorded.max() > 1.5 or recorded.min() < 1.5  # it moved


def test_a_fixed_multiplier_stays_and_the_reference_update_clamps():
    params = LagrangeParams.new(0.5, None, 0.1, 2.0, 4, 0.0)
    fixed = LagrangeMultiplier(params)
    fixed.observe(100.0)
    assert fixed.value == 0.5
    adaptive = LagrangeMultiplier(LagrangeParams.new(0.5, 0.0, 0.1, 2.0, 1, 0.0))
    adaptive.observe(1.0)
    assert adaptive.value == math.exp(math.log(0.5) + 0.1 * 0.5 * 1.0)
    adaptive.observe(1e9)
    assert adaptive.value == math.exp(math.log(2.0))
    adaptive.observe(-1e9)  # far under: the multiplier falls towards 0, never below
    assert 0.0 <= adaptive.value < 1e-300 or adaptive.value == 0.0


def test_expected_cost_is_the_enumeration_of_every_bag():
    world = World(n_prompts=2, vocab=4, response_len=3, seed=3, safety=Safety(unsafe_share=0.5, correlation=0.3))
    assert (world.cost_token > 0).any()
    logits = np.random.default_rng(0).standard_normal((2, 4))
    p = softmax_rows(logits)
    bags = np.array(list(itertools.product(range(4), repeat=3)))
    for x in range(2):
        costs = world.cost_score(np.full(len(bags), x), bags)
        probs = np.prod(p[x][bags], axis=1)
        assert_close(world.expected_cost(logits)[x], float(probs @ costs), rtol=1e-12, atol=1e-12)
        assert_close(costs, world.cost_token[bags].sum(axis=1), rtol=0, atol=1e-12)


def test_a_safety_spec_changes_no_other_table_and_no_repr():
    plain, safe = World(n_prompts=3, vocab=50, seed=7), World(n_prompts=3, vocab=50, seed=7, safety=Safety())
    np.testing.assert_array_equal(plain.ref_logits, safe.ref_logits)
    np.testing.assert_array_equal(plain.gold_token, safe.gold_token)
    assert plain.cost_token is None and repr(plain) == "World(n_prompts=3, vocab=50, response_len=8, zipf=1.1, " \
        "gold='count_once', repeat_penalty=1, seed=7)"
    assert "safety=Safety(" in repr(safe)
    assert (safe.cost_token >= 0).all()


def test_unsafe_tokens_look_helpful_and_the_cost_model_learns_the_cost():
    world = World(n_prompts=4, vocab=400, seed=0, safety=Safety(unsafe_share=0.2, correlation=0.8))
    unsafe = world.cost_token > 0
    helpful = world.gold_token.mean(axis=0)
    assert 0.1 < unsafe.mean() < 0.3
    assert helpful[unsafe].mean() > helpful[~unsafe].mean() + 0.5
    pairs = world.safety_preferences(3000, 1, Labeller(temperature=0.25), logits=np.zeros((4, 400)))
    cm = calibrate_cost_model(world, train_reward_model(world, pairs, epochs=3), 400, 2, np.zeros((4, 400)))
    assert np.corrcoef(cm.weights, world.cost_token)[0, 1] > 0.8
    # the labels say "first is less safe" with the cost's Bradley-Terry probability
    costs = world.cost_score(pairs.prompts, pairs.first) - world.cost_score(pairs.prompts, pairs.second)
    assert pairs.target[costs > 1.0].mean() > 0.9 and pairs.target[costs < -1.0].mean() < 0.1


def test_refusals_name_the_argument(small_world):
    world, rm, cm = small_world
    with pytest.raises(ValueError, match="cost_limit applies with a cost_model"):
        rl.sweep_rlhf(rm, world=world, betas=[0.1], seeds=1, steps=2, cost_limit=0.3)
    with pytest.raises(ValueError, match="world must have a safety cost"):
        rl.sweep_rlhf(rm, world=World(n_prompts=3, vocab=24, response_len=4), cost_model=cm, betas=[0.1], seeds=1,
                      steps=2)
    with pytest.raises(ValueError, match="lambda_init must be > 0 with a cost_limit"):
        rl.sweep_rlhf(rm, world=world, cost_model=cm, betas=[0.1], seeds=1, steps=2, lambda_init=0.0, cost_limit=0.3)
    with pytest.raises(ValueError, match="lambda_init must be <= lambda_max"):
        rl.sweep_rlhf(rm, world=world, cost_model=cm, betas=[0.1], seeds=1, steps=2, lambda_init=5.0, lambda_max=2.0)
    with pytest.raises(ValueError, match="cost_model must weigh"):
        rl.sweep_rlhf(rm, world=world, cost_model=RewardModel(np.zeros(5)), betas=[0.1], seeds=1, steps=2)
    with pytest.raises(ValueError, match="no safety cost"):
        World(n_prompts=2, vocab=4).expected_cost(np.zeros((2, 4)))
    with pytest.raises(TypeError, match="safety must be a Safety"):
        World(n_prompts=2, vocab=4, safety="yes")
    with pytest.raises(ValueError, match="unsafe_share"):
        Safety(unsafe_share=1.5)


# ============================================================== 3. the phenomenon


@rust_only
def test_the_frontier_and_the_lagrangian_over_seeds():
    """Fixed lambda 0 < 1 < 4: the gold cost and the gold helpfulness both fall (mean over eight
    seeds), and lambda = 0 ends above 1.5. The Lagrangian (limit 0.5; the reference costs 0.41)
    by Safe RLHF's update alone rings, so its seeds end scattered around the limit; with the
    PID Lagrangian's proportional term they end within a tighter band, centred on the limit (the
    calibrated cost model reads a little under the gold on the policies PPO reaches)."""
    lab = safety_lab(lambdas=[0.0, 1.0, 4.0], cost_limits=[0.5], seeds=8)
    rows = lab.to_rows()
    fixed, (integral, pid) = rows[:3], rows[3:5]
    costs = [row["final_gold_cost"] for row in fixed]
    golds = [row["final_gold_score"] for row in fixed]
    assert costs[0] > costs[1] > costs[2], costs
    assert golds[0] > golds[1] > golds[2], golds
    assert costs[0] > 1.5
    assert (integral["lagrangian_kp"], pid["lagrangian_kp"]) == (0.0, 10.0)
    assert pid["final_gold_cost_sd"] < 0.5 * integral["final_gold_cost_sd"], (pid, integral)
    assert pid["max_gold_cost"] < integral["max_gold_cost"] - 0.1, (pid, integral)
    assert abs(pid["final_gold_cost"] - 0.5) < 0.05, pid
    assert pid["max_gold_cost"] < 0.5 + 0.15, pid
    assert abs(pid["final_cost_score"] - 0.5) < 0.05, pid  # what the multiplier sees, on its limit
    for row in (integral, pid):
        assert row["final_gold_score"] > golds[2]  # cheaper in helpfulness than the safest fixed lambda
    assert lab.lagrangian.runs["final_lambda"].min() >= 0.0


@rust_only
@pytest.mark.parametrize("world_seed", [0, 1])
def test_every_seed_ends_within_its_limit_aimed_below_by_the_pilots_spread(world_seed):
    """Observing the cost model's expected cost takes the sampled responses' noise out of the
    multiplier's reading: the pilots' cost-model scores end in a band under half as wide as with
    sampled costs. Their gold costs still straddle the limit (the cost model's error and PPO's
    spread), and aimed below it by their mean overshoot and three standard deviations, fresh seeds
    all end within it at both limits: sixteen runs per world, none over, each limit's runs still
    more helpful than the reference policy."""
    world = World(n_prompts=8, vocab=128, gold="linear", safety=Safety(), seed=world_seed)
    lab = safety_lab(world, lambdas=[4.0], cost_limits=[0.5, 0.8], seeds=8)
    rows = lab.to_rows()
    pilots_within = 0
    for i, limit in enumerate((0.5, 0.8)):
        _, pid, pilot, aimed = rows[1 + 4 * i:5 + 4 * i]
        assert (pid["run"], pilot["run"], aimed["run"]) == ("lagrangian", "expected", "aimed")
        assert pilot["final_cost_score_sd"] < 0.5 * pid["final_cost_score_sd"], (pilot, pid)
        pilots_within += pilot["seeds_within_limit"]
        gold, read = lab.expected.runs["final_gold_cost"][0, i], lab.expected.runs["final_cost_score"][0, i]
        overshoot = gold - read + np.maximum(read - limit, 0.0)
        assert aimed["target"] == pytest.approx(limit - max(0.0, overshoot.mean() + 3.0 * overshoot.std(ddof=1)))
        assert aimed["target"] < limit
        assert aimed["seeds_within_limit"] == 8, aimed
        assert aimed["final_gold_score"] > lab.reference["gold"] + 0.5, aimed  # still better than the SFT policy
    assert pilots_within < 16  # the pilots end at their limits, some seeds over
    assert lab.aimed.axes["seed"] == list(range(8, 16))  # fresh seeds, not the pilots'


@pytest.mark.parametrize("name, value, error", [
    ("lambda_init", [1.0, 2.0], TypeError), ("lagrangian_lr", [0.03], TypeError), ("lambda_max", [10.0], TypeError),
    ("cost_window", [8, 16], TypeError), ("beta", [0.1], TypeError), ("steps", [5], TypeError),
    ("lambdas", 1.0, TypeError), ("cost_limits", [], ValueError), ("cost_limits", [math.nan], ValueError),
])
def test_the_lab_takes_one_value_per_setting(small_world, name, value, error):
    """A sequence where the lab takes one value would become a sweep axis that the table does not
    show: refused, naming the lab's argument."""
    world, _, _ = small_world
    with pytest.raises(error, match=f"^{name} must"):
        safety_lab(world, **{**dict(lambdas=[0.0], seeds=1, steps=2, rm_pairs=10, cost_pairs=10, calibration=4),
                             name: value})


def test_the_lab_reports(tmp_path, small_world):
    world, _, _ = small_world
    lab = safety_lab(world, lambdas=[0.0, 2.0], cost_limits=[0.8], seeds=2, steps=40, rm_pairs=100, cost_pairs=100,
                     calibration=50)
    assert "fixed λ" in lab.table()
    rows = lab.to_rows()
    assert [row["run"] for row in rows] == ["fixed", "fixed", "lagrangian", "lagrangian", "expected", "aimed"]
    assert "Safe RLHF" in lab.table() and "+ P (kp=10)" in lab.table()
    assert f"+ P (kp=10), E[C], aim {lab.targets[0]:.3f}" in lab.table()
    lab.plot(tmp_path / "frontier.png")
    assert (tmp_path / "frontier.png").stat().st_size > 1000
    assert "one pilot seed" not in lab.table()
    single = safety_lab(world, lambdas=[0.0], cost_limits=[0.8], seeds=1, steps=10, rm_pairs=100, cost_pairs=100,
                        calibration=50)
    assert "one pilot seed: no spread to measure" in single.table()
