"""The world's computations, Rust against the pure-Python twin and both against NumPy.

``rlhf_fast.worlds`` computes a world's tables, its labels, its bag scores, its proxy reward
model, its exact expectations, its frontier and Gao's fit through the backend: the Rust core
(``rlhf_fast._core``) or the reference's twins (``rlhf_fast.reference.methods.world``,
``rlhf_fast.reference.engines.world``), under the core's names in ``worlds._ReferenceEngines``.
Each pair must agree (the same tables and labels, floats within 1e-9), and both must agree
with the NumPy formulas the worlds were first written in (kept here as the oracle): the
tables bit for bit, so every world and figure so far stays the same.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import pytest
from conftest import RUST, assert_close, outcome, rust_only
from hypothesis import example, given
from hypothesis import strategies as st

from rlhf_fast import worlds
from rlhf_fast.worlds import Frontier, Judge, Labeller, RewardModel, World, fit_gao, train_reward_model

REFERENCE = worlds._ReferenceEngines
if RUST:
    from rlhf_fast import _core as CORE
else:
    CORE = None

small_worlds = st.builds(
    World,
    n_prompts=st.integers(1, 4),
    vocab=st.integers(2, 24),
    response_len=st.integers(1, 6),
    zipf=st.sampled_from([0.0, 0.5, 1.1, 3.0]),
    prompt_scale=st.sampled_from([0.0, 0.5, 2.0]),
    gold=st.sampled_from(["count_once", "linear"]),
    seed=st.integers(0, 2**32),
)


# ------------------------------------------------------------------ NumPy's formulas


def libm(function):
    """``function`` (one of ``math``'s: libm's, as the engine and the reference twin call it) on
    every entry. NumPy's own ``exp``, ``log1p`` and the like may differ from libm's by an ulp (on
    CPUs with AVX-512 they are NumPy's SIMD code), so the bit-for-bit oracles use libm's."""
    return np.vectorize(function, otypes=[np.float64])


def numpy_sigmoid(x):
    exp = libm(math.exp)
    return np.where(x >= 0, 1.0 / (1.0 + exp(-np.abs(x))), exp(-np.abs(x)) / (1.0 + exp(-np.abs(x))))


def numpy_bag_score(values, prompts, responses, count_once):
    if count_once:
        responses = np.sort(responses, axis=1)
        first = np.ones_like(responses, dtype=bool)
        first[:, 1:] = responses[:, 1:] != responses[:, :-1]
        return np.where(first, values[prompts[:, None], responses], 0.0).sum(axis=1)
    return values[prompts[:, None], responses].sum(axis=1)


def numpy_expectations(world, logits, weights):
    """``(kl, proxy, gold)`` per prompt, as NumPy computed them."""
    log_p = worlds.log_softmax_rows(logits)
    p = np.exp(log_p)
    with np.errstate(invalid="ignore"):
        per_token = np.where(p > 0.0, p * (log_p - world.ref_log_probs), 0.0).sum(axis=1)
    kl = world.response_len * np.maximum(per_token, 0.0)
    p = worlds.softmax_rows(logits)
    proxy = world.response_len * (p * weights).sum(axis=1)
    if world.gold == "linear":
        gold = world.response_len * (p * world.gold_token).sum(axis=1)
    else:
        with np.errstate(divide="ignore"):
            seen = -np.expm1(world.response_len * np.log1p(-np.minimum(p, 1.0)))
        gold = (seen * world.gold_seen).sum(axis=1) - world.repeat_penalty * world.response_len
    return kl, proxy, gold


def python_train_reward_model(world, pairs, epochs, lr, margins, c):
    """The loop ``train_reward_model`` ran in Python (Python 3.11's ``sum`` adds left to right)."""
    w = [0.0] * world.vocab
    for _ in range(epochs):
        for a, b, t, mu in zip(pairs.first.tolist(), pairs.second.tolist(), pairs.target.tolist(), margins):
            r_a = sum(w[tok] for tok in a)
            r_b = sum(w[tok] for tok in b)
            m = r_a - r_b
            d_m = -t * float(numpy_sigmoid(np.float64(-(m - mu)))) + (1.0 - t) * float(numpy_sigmoid(np.float64(m + mu)))
            d_sum = 2.0 * c * (r_a + r_b)
            for tok in a:
                w[tok] -= lr * (d_m + d_sum)
            for tok in b:
                w[tok] -= lr * (d_sum - d_m)
    return np.array(w)


# ------------------------------------------------------------------ the world


@given(small_worlds)
def test_a_worlds_tables_are_numpys_bit_for_bit(world):
    rng = np.random.default_rng(world.seed)
    ranks = np.argsort(rng.random((world.n_prompts, world.vocab)), axis=1)
    ref_logits = -world.zipf * libm(math.log1p)(ranks.astype(np.float64))
    gold = rng.standard_normal(world.vocab)[None, :] + world.prompt_scale * rng.standard_normal(ref_logits.shape)
    assert np.array_equal(world.ref_logits, ref_logits)
    assert np.array_equal(world.gold_token, gold)


@rust_only
@given(st.integers(1, 3), st.integers(2, 12), st.integers(0, 2**32), st.floats(0, 10), st.floats(0, 10))
def test_the_tables_twins_agree_and_break_ties_by_index(rows, vocab, seed, zipf, prompt_scale):
    rng = np.random.default_rng(seed)
    uniforms = rng.choice([0.0, 0.25, 0.5, 0.75], (rows, vocab))  # ties on purpose
    shared, prompt = rng.standard_normal(vocab), rng.standard_normal((rows, vocab))
    core = CORE.world_tables(uniforms, shared, prompt, zipf, prompt_scale)
    twin = REFERENCE.world_tables(uniforms, shared, prompt, zipf, prompt_scale)
    stable = np.argsort(uniforms, axis=1, kind="stable")
    for ref_logits, gold in (core, twin):
        assert np.array_equal(ref_logits, -zipf * libm(math.log1p)(stable.astype(np.float64)))
        assert np.array_equal(gold, shared[None, :] + prompt_scale * prompt)


@rust_only
def test_the_tables_binding_refuses_bad_draws_by_name():
    good = np.full((2, 3), 0.5)
    for args, message in [
        ((np.full((2, 3), 1.0), np.zeros(3), good, 1.0, 1.0), "rank_uniforms[0]"),
        ((good, np.zeros(2), good, 1.0, 1.0), "shared_normals"),
        ((good, np.zeros(3), np.zeros((3, 2)), 1.0, 1.0), "prompt_normals"),
        ((good, np.zeros(3), good, -1.0, 1.0), "zipf"),
    ]:
        with pytest.raises(ValueError, match=f"^{message}".replace("[", r"\[")):
            CORE.world_tables(*args)


# ------------------------------------------------------------------ the labeller and the judge

labels_inputs = st.integers(0, 2**32).map(np.random.default_rng)


@given(labels_inputs, st.sampled_from([1e-300, 0.1, 1.0, 5.0]), st.sampled_from([0.0, 0.2, 1.0]))
def test_a_labellers_labels_are_numpys(rng, temperature, flip):
    gold_first, gold_second = rng.standard_normal(20) * 3, rng.standard_normal(20) * 3
    prefer, flips = rng.random(20), rng.random(20)
    with np.errstate(over="ignore"):
        expected = ((prefer < numpy_sigmoid((gold_first - gold_second) / temperature)) ^ (flips < flip)).astype(float)
    twin = REFERENCE.labeller_labels(gold_first, gold_second, temperature, flip, prefer, flips)
    assert np.array_equal(twin, expected)
    if RUST:
        assert np.array_equal(CORE.labeller_labels(gold_first, gold_second, temperature, flip, prefer, flips), expected)


@given(labels_inputs, st.sampled_from([0.01, 1.0]), st.sampled_from([0.0, 0.3, 1.0]), st.booleans(), st.booleans())
def test_a_judges_labels_are_numpys(rng, temperature, position_bias, soft, both_orders):
    first, second = rng.standard_normal(20) * 2, rng.standard_normal(20) * 2
    order = np.empty(0) if both_orders else rng.random(20)
    draws = np.empty(0) if soft else rng.random(20)
    preference = numpy_sigmoid((first - second) / temperature)
    shown_first, shown_second = position_bias + (1 - position_bias) * preference, (1 - position_bias) * preference
    p = 0.5 * (shown_first + shown_second) if both_orders else np.where(order < 0.5, shown_first, shown_second)
    expected = p if soft else (draws < p).astype(float)
    args = (first, second, temperature, position_bias, soft, both_orders, order, draws)
    for labels in [REFERENCE.judge_labels(*args)] + ([CORE.judge_labels(*args)] if RUST else []):
        if soft:
            assert_close(labels, expected)
        else:
            assert np.array_equal(labels, expected)


@given(small_worlds, st.floats(-1, 1), st.floats(-3, 3), st.integers(0, 100))
def test_a_judges_token_values_are_numpys(world, rho, bias, seed):
    gold = world.gold_token
    noise = np.random.default_rng(seed).standard_normal(gold.shape)
    familiar = world.ref_log_probs
    # NumPy divided a uniform reference's rounding errors by 1e-12; it has no familiar tokens
    spread = familiar.std() > 1e-12
    familiar = (familiar - familiar.mean()) / familiar.std() * gold.std() if spread else 0.0 * familiar
    expected = rho * gold + math.sqrt(1.0 - rho**2) * noise * gold.std() + bias * familiar
    twin = REFERENCE.judge_token_values(gold, world.ref_logits, noise, rho, bias)
    assert_close(twin, expected, atol=1e-9)
    if RUST:
        assert_close(CORE.judge_token_values(gold, world.ref_logits, noise, rho, bias), twin)


@contextmanager
def engines_of(engines):
    """A block with ``rlhf_fast.worlds`` on other engines."""
    saved = worlds._engines
    worlds._engines = engines
    try:
        yield
    finally:
        worlds._engines = saved


@rust_only
@given(small_worlds, st.integers(0, 60), st.integers(0, 100), st.sampled_from([Labeller(), Labeller(0.3, 0.1),
                                                                                Judge(), Judge(soft=False),
                                                                                Judge(both_orders=True)]))
def test_preferences_are_the_same_on_both_twins(world, n, seed, labeller):
    pairs = world.preferences(n, seed=seed, labeller=labeller)
    with engines_of(REFERENCE):
        twin = world.preferences(n, seed=seed, labeller=labeller)
    assert np.array_equal(pairs.first, twin.first) and np.array_equal(pairs.second, twin.second)
    assert_close(pairs.target, twin.target)


# ------------------------------------------------------------------ gold and proxy scores


@given(small_worlds, st.integers(0, 30), st.integers(0, 100))
def test_gold_and_proxy_scores_are_numpys(world, n, seed):
    rng = np.random.default_rng(seed)
    prompts = rng.integers(0, world.n_prompts, n)
    responses = rng.integers(0, world.vocab, (n, world.response_len))
    if world.gold == "linear":
        expected = numpy_bag_score(world.gold_token, prompts, responses, False)
    else:
        expected = numpy_bag_score(world.gold_seen, prompts, responses, True) - world.repeat_penalty * world.response_len
    assert_close(world.gold_score(prompts, responses), expected)
    rm = RewardModel(rng.standard_normal(world.vocab))
    assert_close(rm.score(responses), rm.weights[responses].sum(axis=1))
    for count_once in (False, True):
        twin = REFERENCE.bag_score(world.gold_token, prompts, responses, count_once, world.repeat_penalty)
        expected = numpy_bag_score(world.gold_token + world.repeat_penalty, prompts, responses, count_once)
        assert_close(twin, expected)
        if RUST:
            assert_close(CORE.bag_score(world.gold_token, prompts, responses, count_once, world.repeat_penalty), twin)


def _policies(world, seed):
    rng = np.random.default_rng(seed)
    shape = world.ref_logits.shape
    return [world.ref_logits, world.ref_logits + 3.0 * rng.standard_normal(shape),
            rng.choice([1e300, -1e300, 1.7e308, -1.7e308, 0.0], shape),  # rows past the floats: p = 0 or 1
            rng.choice([0.0, -800.0], shape)]  # probabilities that underflow


@given(small_worlds, st.integers(0, 100))
def test_the_exact_expectations_are_numpys(world, seed):
    weights = np.random.default_rng(seed).standard_normal(world.vocab)
    rm = RewardModel(weights)
    for logits in _policies(world, seed):
        kl, proxy, gold = numpy_expectations(world, logits, weights)
        assert_close(world.kl(logits), kl, atol=1e-9)
        assert_close(world.expected_score(logits, rm), proxy, atol=1e-9)
        assert_close(world.expected_gold(logits), gold, atol=1e-9)
        args = (world.ref_logits, world.gold_token, world.gold == "count_once", world.repeat_penalty,
                world.response_len, logits, weights)
        if RUST:
            for core, twin in zip(CORE.world_expectations(*args), REFERENCE.world_expectations(*args)):
                assert_close(core, twin)
    assert np.array_equal(world.kl(world.ref_logits), np.zeros(world.n_prompts))


# ------------------------------------------------------------------ train_reward_model

pair_sets = st.tuples(small_worlds, st.integers(1, 40), st.integers(0, 100), st.sampled_from([Labeller(), Judge()]))


@given(pair_sets, st.integers(0, 3), st.sampled_from([0.01, 0.1, 1.0]), st.sampled_from([0.0, 0.01, 0.5]),
       st.booleans())
def test_the_reward_models_sgd_is_the_python_loops_exactly(pair_set, epochs, lr, c, with_margin):
    world, n, seed, labeller = pair_set
    pairs = world.preferences(n, seed=seed, labeller=labeller)
    margins = np.random.default_rng(seed).uniform(0, 1, n) if with_margin else np.zeros(n)
    expected = python_train_reward_model(world, pairs, epochs, lr, margins.tolist(), c)
    train = lambda: train_reward_model(world, pairs, epochs=epochs, lr=lr,  # noqa: E731
                                       margin=margins if with_margin else None, center_rewards_coefficient=c)
    # lr 1 with a strong centring term can blow up: weights of 2**512 or more (or NaN) are an error
    if not (np.abs(expected) < 2.0**512).all():
        with pytest.raises(FloatingPointError, match="^train_reward_model diverged in epoch"):
            train()
        return
    assert np.array_equal(train().weights, expected)
    if RUST:
        args = (world.vocab, pairs.first, pairs.second, pairs.target, margins, epochs, lr, c)
        assert np.array_equal(CORE.train_reward_model(*args), REFERENCE.train_reward_model(*args))


def test_a_reward_model_that_diverges_names_the_epoch_on_both():
    world = World(n_prompts=2, vocab=8, response_len=3, seed=0)
    pairs = world.preferences(20, seed=0)
    args = (world.vocab, pairs.first, pairs.second, pairs.target, np.zeros(20), 50, 1e300, 1.0)
    engines = [REFERENCE] + ([CORE] if RUST else [])
    outcomes = {outcome(e.train_reward_model, *args) for e in engines}
    assert len(outcomes) == 1
    (status, message), = outcomes
    assert status == "FloatingPointError" and message.startswith("train_reward_model diverged in epoch 0:"), message


# ------------------------------------------------------------------ the frontier

betas = st.lists(st.sampled_from([1e-300, 1e-8, 0.01, 0.3, 1.0, 30.0, 1e300]), min_size=1, max_size=5)


@given(small_worlds, betas, st.booleans(), st.integers(0, 100))
def test_the_frontier_is_numpys(world, betas, of_gold, seed):
    rm = RewardModel(np.random.default_rng(seed).standard_normal(world.vocab) * 3)
    frontier = Frontier.of(world, "gold" if of_gold else rm, betas)
    r = world.gold_token if of_gold else rm.weights[None, :]
    r = r - r.max(axis=-1, keepdims=True)
    for i, beta in enumerate(betas):
        with np.errstate(over="ignore"):
            logits = world.ref_logits + np.maximum(r / beta, -1e300)
        kl, proxy, gold = numpy_expectations(world, logits, np.zeros(world.vocab) if of_gold else rm.weights)
        assert_close([frontier.kl[i], frontier.proxy[i], frontier.gold[i]], [kl.mean(), proxy.mean(), gold.mean()],
                     atol=1e-9)
    if RUST:
        args = (world.ref_logits, world.gold_token, world.gold == "count_once", world.repeat_penalty,
                world.response_len, np.ascontiguousarray(r), np.array(betas), None if of_gold else rm.weights)
        for core, twin in zip(CORE.world_frontier(*args), REFERENCE.world_frontier(*args)):
            assert_close(core, twin)


# ------------------------------------------------------------------ the Gao fit


spread_d = st.lists(st.floats(0.05, 8.0), min_size=2, max_size=12, unique=True).filter(
    lambda d: np.ptp(d) > 0.3)  # a spread of points: a well-conditioned design


@given(spread_d, st.integers(0, 100), st.sampled_from(["bon", "rl"]))
@example([1.0, 1.0, 1.0], 0, "rl")  # rank one: d = 1 makes the rl form's second column 0
@example([2.0, 2.0], 1, "bon")  # rank one: one point twice
def test_gaos_fit_is_numpys_least_squares(d, seed, form):
    d = np.array(d)
    gold = np.random.default_rng(seed).normal(0, 2, len(d))
    fit = fit_gao(d, gold, form)
    expected = numpy_fit_gao(d, gold, form)
    assert_close([fit.alpha, fit.beta], expected, rtol=1e-9, atol=1e-12 * max(1.0, np.abs(expected).max()))
    if RUST:
        assert np.allclose(CORE.fit_gao(d, gold, form), REFERENCE.fit_gao(d, gold, form), rtol=1e-12, atol=0)


@pytest.mark.parametrize("d, gold, form", [
    ([1.0, 0.0, np.nan, -1.0], [1.0, 2.0, 3.0, 4.0], "bon"),  # one point left
    ([1.0, 2.0], [np.inf, 1.0], "rl"),
    ([1.0, 1e200], [1.0, 2.0], "bon"),  # the design overflows
    ([1e-300, 2e-300], [1e300, -1e300], "bon"),  # the coefficients overflow: a rank-one design
    ([1e-300, 2e-300], [1e300, -1e300], "rl"),
])
def test_gaos_fit_refuses_what_numpy_refused_in_its_words(d, gold, form):
    d, gold = np.array(d), np.array(gold)
    expected = outcome(numpy_fit_gao, d, gold, form)
    assert expected[0] != "ok"
    engines = [worlds] + ([CORE] if RUST else [])
    assert {outcome(e.fit_gao, d, gold, form) for e in engines} == {expected}


def numpy_fit_gao(d, gold, form):
    """``fit_gao`` as NumPy did it: its refusals and their words."""
    keep = np.isfinite(d) & np.isfinite(gold) & (d > 0)
    if keep.sum() < 2:
        raise ValueError(f"d must hold at least two points with d > 0 and a finite gold, got {int(keep.sum())}")
    d, gold = d[keep], gold[keep]
    with np.errstate(all="ignore"):
        second = -d * d if form == "bon" else -d * np.log(d)
    if not np.isfinite(second).all():
        raise FloatingPointError(f"fit_gao overflowed: d={float(d.max())!r} is too large for the {form!r} form")
    with np.errstate(all="ignore"):
        (alpha, beta), *_ = np.linalg.lstsq(np.stack([d, second], axis=1), gold, rcond=None)
    if not (math.isfinite(alpha) and math.isfinite(beta)):
        raise FloatingPointError(f"fit_gao overflowed: alpha={float(alpha)!r}, beta={float(beta)!r}")
    return alpha, beta
