"""Worlds: exact expectations against sampling, labellers against their probabilities, the
reward model's gradient against finite differences, the frontier against its definition, and
over-optimisation itself over seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest

import rlhf_fast as rl
from rlhf_fast import worlds
from rlhf_fast.worlds import Frontier, Judge, Labeller, RewardModel, World, fit_gao, train_reward_model

SMALL = {"n_prompts": 3, "vocab": 12, "response_len": 5}


def random_logits(world: World, seed: int, scale: float = 2.0) -> np.ndarray:
    return world.ref_logits + scale * np.random.default_rng(seed).standard_normal(world.ref_logits.shape)


# ------------------------------------------------------------------------ the world


def test_a_world_is_its_seed():
    a, b, c = World(**SMALL, seed=3), World(**SMALL, seed=3), World(**SMALL, seed=4)
    assert np.array_equal(a.ref_logits, b.ref_logits) and np.array_equal(a.gold_token, b.gold_token)
    assert not np.array_equal(a.gold_token, c.gold_token)
    with pytest.raises(ValueError, match="read-only"):
        a.gold_token[0, 0] = 1.0


def test_the_reference_is_zipf_like_per_prompt():
    world = World(n_prompts=4, vocab=256, zipf=1.1, seed=0)
    p = np.exp(world.ref_log_probs)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    for row in p:
        ordered = np.sort(row)[::-1]
        np.testing.assert_allclose(ordered / ordered[0], np.arange(1, 257) ** -1.1)
    assert not np.array_equal(p[0], p[1])  # each prompt ranks the tokens its own way


def test_the_lesson_world_is_the_lessons():
    world = World.lesson()
    assert (world.n_prompts, world.vocab, world.response_len, world.tokens) == (3, 8, 1, rl.VOCAB)
    assert np.array_equal(world.ref_logits, np.zeros((3, 8)))
    for a, tok in enumerate(rl.VOCAB):
        assert world.gold_token[0, a] == (1.0 if tok in rl.GOOD_WORDS else -1.0)


@pytest.mark.parametrize(("argument", "value", "error", "message"), [
    ("vocab", 1, ValueError, "vocab must be >= 2"),
    ("vocab", 2**40, ValueError, "vocab must be <= 1048576"),
    ("n_prompts", 0, ValueError, "n_prompts must be >= 1"),
    ("response_len", 1.5, TypeError, "response_len must be an int"),
    ("zipf", float("nan"), ValueError, "zipf"),
    ("gold", "quadratic", ValueError, "gold must be one of"),
    ("seed", -1, ValueError, "seed must be >= 0"),
    ("repeat_penalty", -1.0, ValueError, "repeat_penalty"),
])
def test_bad_world_arguments_are_named(argument, value, error, message):
    with pytest.raises(error, match=message):
        World(**{argument: value})


def test_a_linear_gold_has_no_repeat_penalty():
    assert World(gold="linear").repeat_penalty == 0.0
    with pytest.raises(ValueError, match="repeat_penalty applies to gold='count_once'"):
        World(gold="linear", repeat_penalty=0.5)


def test_a_world_too_big_for_memory_is_refused_before_allocating():
    with pytest.raises(ValueError, match="needs .* bytes"):
        World(n_prompts=2**16, vocab=2**20)


# ------------------------------------------------------------- exact expectations


@pytest.mark.parametrize("gold", ["count_once", "linear"])
def test_expected_gold_and_kl_match_sampled_responses(gold):
    world = World(**SMALL, gold=gold, seed=1)
    logits = random_logits(world, 0)
    prompts, responses = world.sample(200_000, seed=2, logits=logits)
    sampled = world.gold_score(prompts, responses)
    exact = world.expected_gold(logits)
    for x in range(world.n_prompts):
        mine = sampled[prompts == x]
        assert abs(mine.mean() - exact[x]) < 5 * mine.std() / math.sqrt(len(mine))
    # KL of a response: the mean of log pi(y) - log ref(y) over the policy's responses
    log_p = worlds.log_softmax_rows(logits)
    log_ratio = (log_p - world.ref_log_probs)[prompts[:, None], responses].sum(axis=1)
    kl = world.kl(logits)
    for x in range(world.n_prompts):
        mine = log_ratio[prompts == x]
        assert abs(mine.mean() - kl[x]) < 5 * mine.std() / math.sqrt(len(mine))


def test_count_once_gold_counts_a_repeated_token_once():
    world = World(**SMALL, seed=0)
    g = world.gold_token
    responses = np.array([[1, 1, 1, 2, 2], [1, 2, 3, 4, 5]])
    np.testing.assert_allclose(world.gold_score(np.array([0, 1]), responses),
                               [g[0, 1] + g[0, 2] - 3 * world.repeat_penalty, g[1, 1:6].sum()])
    assert world.repeat_penalty == 1.0
    linear = World(**SMALL, gold="linear", seed=0)
    assert linear.gold_score(np.array([0]), responses[:1])[0] == pytest.approx(3 * g[0, 1] + 2 * g[0, 2])


def test_a_policy_on_one_token_gets_its_gold_once_and_its_proxy_l_times():
    world = World(**SMALL, repeat_penalty=0.25, seed=0)
    logits = np.full(world.ref_logits.shape, -1e4)
    logits[:, 3] = 0.0
    rm = RewardModel(np.arange(world.vocab, dtype=float))
    np.testing.assert_allclose(world.expected_gold(logits), world.gold_token[:, 3] - 0.25 * (world.response_len - 1))
    np.testing.assert_allclose(world.expected_score(logits, rm), world.response_len * 3.0)
    np.testing.assert_allclose(world.kl(logits), -world.response_len * world.ref_log_probs[:, 3])


def test_the_samplers_frequencies_are_the_policys():
    world = World(n_prompts=2, vocab=6, response_len=3, seed=5)
    logits = random_logits(world, 1)
    prompts, responses = world.sample(60_000, seed=0, logits=logits)
    p = worlds.softmax_rows(logits)
    for x in range(2):
        counts = np.bincount(responses[prompts == x].ravel(), minlength=6)
        n = counts.sum()
        assert np.all(np.abs(counts / n - p[x]) < 5 * np.sqrt(p[x] * (1 - p[x]) / n) + 1e-12)
    assert abs((prompts == 0).mean() - 0.5) < 0.01


# ------------------------------------------------------------------------ labellers


def test_a_human_labeller_prefers_with_bradley_terry_then_flips():
    world = World(**SMALL, seed=0)
    labeller = Labeller(temperature=2.0, flip=0.2)
    pairs = world.preferences(100_000, seed=3, labeller=labeller)
    margin = world.gold_score(pairs.prompts, pairs.first) - world.gold_score(pairs.prompts, pairs.second)
    p_first = 1 / (1 + np.exp(-margin / 2.0))
    expected = 0.8 * p_first + 0.2 * (1 - p_first)
    assert set(np.unique(pairs.target)) <= {0.0, 1.0}
    for lo, hi in [(0.0, 0.3), (0.3, 0.7), (0.7, 1.0)]:
        bucket = (expected >= lo) & (expected < hi)
        assert abs(pairs.target[bucket].mean() - expected[bucket].mean()) < 0.01


def test_a_judge_correlates_with_the_gold_by_rho():
    world = World(n_prompts=4, vocab=2048, seed=0)
    for rho in (0.0, 0.5, 0.9):
        values = Judge(rho=rho, bias=0.0).token_values(world)
        assert np.corrcoef(values.ravel(), world.gold_token.ravel())[0, 1] == pytest.approx(rho, abs=0.03)


def test_a_judges_position_bias_cancels_when_asked_both_ways():
    world = World(**SMALL, seed=0)
    same = world.preferences(2000, seed=1)
    # the same response twice: an unbiased judge says 1/2; one shown first gets position_bias more
    pairs = rl.worlds.WorldPairs(same.prompts, same.first, same.first.copy(), same.target, 0.0)
    judge = Judge(position_bias=0.3, soft=True, both_orders=False)
    target = judge._label(world, pairs.prompts, pairs.first, pairs.second, np.random.default_rng(0))
    assert sorted(set(np.round(target, 12))) == pytest.approx([0.5 * 0.7, 0.3 + 0.5 * 0.7])
    both = Judge(position_bias=0.3, soft=True, both_orders=True)
    np.testing.assert_allclose(both._label(world, pairs.prompts, pairs.first, pairs.second,
                                           np.random.default_rng(0)), 0.5)


def test_judge_labels_are_cheaper():
    world = World(**SMALL, seed=0)
    assert world.preferences(10, 0, Judge()).cost == pytest.approx(0.1 * world.preferences(10, 0).cost)


# ------------------------------------------------------------------- reward models


def loss(world, pairs, w, margin, c):
    r_a, r_b = w[pairs.first].sum(axis=1), w[pairs.second].sum(axis=1)
    m, t = r_a - r_b, pairs.target
    log_sig = lambda z: -np.logaddexp(0.0, -z)  # noqa: E731
    return float(np.sum(-t * log_sig(m - margin) - (1 - t) * log_sig(-m - margin) + c * (r_a + r_b) ** 2))


@pytest.mark.parametrize("soft", [False, True])
def test_one_sgd_step_is_minus_lr_times_the_gradient(soft):
    world = World(**SMALL, seed=0)
    labeller = Judge(soft=True) if soft else Labeller()
    pairs = world.preferences(1, seed=4, labeller=labeller)
    margin, c, lr = np.array([0.3]), 0.05, 1e-6
    rm = train_reward_model(world, pairs, epochs=1, lr=lr, margin=margin, center_rewards_coefficient=c)
    h = 1e-6
    grad = np.zeros(world.vocab)
    for j in range(world.vocab):
        e = np.zeros(world.vocab)
        e[j] = h
        grad[j] = (loss(world, pairs, e, margin, c) - loss(world, pairs, -e, margin, c)) / (2 * h)
    np.testing.assert_allclose(rm.weights, -lr * grad, atol=1e-12)


def test_more_labels_give_better_gold_accuracy():
    world = World(n_prompts=8, vocab=256, seed=0)
    test = world.preferences(4000, seed=99)
    accuracy = [train_reward_model(world, world.preferences(n, seed=1)).gold_accuracy(world, test)
                for n in (30, 3000)]
    assert 0.5 < accuracy[0] < accuracy[1] - 0.05


# ---------------------------------------------------------------------- the frontier


def test_the_frontier_maximises_reward_minus_beta_kl():
    world = World(**SMALL, gold="linear", seed=0)
    rm = RewardModel(np.random.default_rng(0).standard_normal(world.vocab))
    beta = 0.7
    frontier = Frontier.of(world, rm, [beta])
    best = frontier.proxy[0] - beta * frontier.kl[0]
    optimum = world.ref_logits + rm.weights / beta
    for seed in range(20):
        other = optimum + 0.3 * np.random.default_rng(seed).standard_normal(optimum.shape)
        value = world.expected_score(other, rm).mean() - beta * world.kl(other).mean()
        assert value < best


def test_the_frontier_runs_from_the_reference_to_the_best_token():
    world = World(**SMALL, gold="linear", seed=0)
    frontier = Frontier.of(world, "gold", [1e6, 1e-4])
    assert frontier.kl[0] == pytest.approx(0.0, abs=1e-9)
    assert frontier.gold[-1] == pytest.approx(world.response_len * world.gold_token.max(axis=1).mean())


def test_gao_fits_recover_their_coefficients():
    d = np.linspace(0.1, 6, 40)
    for form, alpha, beta in [("bon", 2.0, 0.4), ("rl", 1.5, 0.5)]:
        truth = worlds.GaoFit(form, alpha, beta)
        fit = fit_gao(d, truth(d), form)
        assert (fit.alpha, fit.beta) == pytest.approx((alpha, beta))
    assert worlds.GaoFit("bon", 2.0, 0.4).peak_d == pytest.approx(2.5)
    assert worlds.GaoFit("rl", 1.5, 0.5).peak_d == pytest.approx(math.e**2)


def test_best_of_n_kl_is_exact_for_a_continuous_score():
    """log n - (n-1)/n is the KL of the maximum of n i.i.d. draws of a continuous score."""
    n = 7
    grid = np.linspace(0, 1, 200_001)  # quantiles u; the best-of-n density is n u^(n-1)
    density = n * grid ** (n - 1)
    kl = np.trapezoid(density * np.log(np.where(density > 0, density, 1.0)), grid)
    assert kl == pytest.approx(float(worlds.best_of_n_kl(n)), abs=1e-6)


# ---------------------------------------------------------------- over-optimisation


def test_gold_peaks_then_falls_along_the_proxy_frontier_and_more_data_moves_the_peak():
    """Goodhart in a misspecified world: the proxy keeps rising, the gold does not."""
    betas = np.geomspace(30, 0.01, 60)
    peaks = {}
    for n in (300, 30_000):
        peak_kl, peak_gold = [], []
        for seed in range(3):
            world = World(n_prompts=16, vocab=1024, response_len=8, seed=seed)
            base = world.expected_gold(world.ref_logits).mean()
            rm = train_reward_model(world, world.preferences(n, seed=100 + seed), epochs=1)
            frontier = Frontier.of(world, rm, betas)
            k = int(frontier.gold.argmax())
            assert np.all(np.diff(frontier.proxy) > -1e-9)  # the proxy rises all the way
            assert frontier.gold[-1] < frontier.gold[k] - 1.0  # the gold falls well past its peak
            peak_kl.append(frontier.kl[k])
            peak_gold.append(frontier.gold[k] - base)
        peaks[n] = (np.mean(peak_kl), np.mean(peak_gold))
    assert peaks[30_000][1] > peaks[300][1] + 2.0
    assert peaks[30_000][0] > peaks[300][0]


# ------------------------------------------------------------------ junk, by name

SMALL_WORLD = World(n_prompts=2, vocab=8, response_len=3, seed=0)


def _other_pairs():
    return World(n_prompts=2, vocab=20, response_len=3, seed=0).preferences(5, seed=0)


JUNK = [  # what the fuzzer found taken silently, or refused by Python or numpy in their own words
    (lambda: Judge(soft="yes"), TypeError, "soft must be a bool, got str"),
    (lambda: Judge(both_orders=1), TypeError, "both_orders must be a bool, got int"),
    (lambda: Judge(bias=1e7), ValueError, r"bias must be in \[-1e6, 1e6\]"),
    (lambda: World(zipf=1e7), ValueError, r"zipf must be <= 1e6, got 10000000.0"),
    (lambda: World(prompt_scale=1.7e308), ValueError, "prompt_scale must be <= 1e6"),
    (lambda: RewardModel([1e300, 0.0]), ValueError, r"weights\[0\] must be below 2\*\*512 in magnitude"),
    (lambda: RewardModel(np.zeros(2, dtype=complex)), TypeError, "weights must hold real numbers"),
    (lambda: RewardModel([[0.0], [0.0, 1.0]]), ValueError, "weights must be a 1-D array of token weights"),
    (lambda: RewardModel([0.0, 1.0], tokens="ab"), TypeError, "tokens must be a sequence of token names"),
    (lambda: RewardModel([0.0, 1.0], tokens=("a",)), ValueError, "tokens must name the 2 weights, got 1"),
    (lambda: RewardModel(np.zeros(8)).score([[8, 0, 0]]), ValueError, r"responses must be token indices in \[0, 8\)"),
    (lambda: worlds.WorldPairs([0], [[0]], [[1]], [1.5], 0.0), ValueError, r"target\[0\] must be a probability"),
    (lambda: worlds.WorldPairs([0], [[0]], [[1]], [np.nan], 0.0), ValueError, r"target\[0\] must be finite"),
    (lambda: worlds.WorldPairs([0], [[0.5]], [[1]], [1.0], 0.0), TypeError, "first must hold integers"),
    (lambda: worlds.WorldPairs([0], [[0]], [[1, 2]], [1.0], 0.0), ValueError, r"second must have shape \(1, 1\)"),
    (lambda: SMALL_WORLD.kl(np.zeros((2, 8), dtype=complex)), TypeError, "logits must hold real numbers"),
    (lambda: SMALL_WORLD.kl([[10**400] * 8] * 2), TypeError, "logits must hold real numbers"),
    (lambda: SMALL_WORLD.kl(np.full((2, 8), np.nan)), ValueError, r"logits\[0, 0\] must be finite, got nan"),
    (lambda: SMALL_WORLD.expected_score(SMALL_WORLD.ref_logits, {}), TypeError, "rm must be a RewardModel, got dict"),
    (lambda: SMALL_WORLD.expected_score(SMALL_WORLD.ref_logits, RewardModel(np.zeros(9))), ValueError,
     "rm must weigh the world's 8 tokens, got 9 weights"),
    (lambda: RewardModel(np.zeros(8)).weights_for("lesson"), TypeError, "world must be a World, got str"),
    (lambda: Judge().token_values(None), TypeError, "world must be a World, got NoneType"),
    (lambda: train_reward_model(SMALL_WORLD, _other_pairs()), ValueError, "pairs has token 1[0-9], past the world's 8"),
    (lambda: train_reward_model(SMALL_WORLD, [("a", "b", "c")]), TypeError, "pairs must be a WorldPairs"),
    (lambda: train_reward_model(SMALL_WORLD, SMALL_WORLD.preferences(3, seed=0), margin=[0.0]), ValueError,
     r"margin must have shape \(3,\)"),
    (lambda: train_reward_model(SMALL_WORLD, SMALL_WORLD.preferences(3, seed=0), lr=1e300), FloatingPointError,
     r"train_reward_model diverged in epoch 0: weights overflowed \(lr=1e\+300\)"),
    (lambda: Frontier.of(SMALL_WORLD, "Gold", [1.0]), ValueError, "reward must be a RewardModel or 'gold', got 'Gold'"),
    (lambda: Frontier.of(SMALL_WORLD, "gold", []), ValueError, "betas must not be empty"),
    (lambda: Frontier.of(SMALL_WORLD, "gold", range(1, 10**12)), ValueError, "betas=999999999999 needs"),
    (lambda: worlds.best_of_n_kl(0), ValueError, "n must be >= 1, got 0.0"),
    (lambda: fit_gao([1.0, 2.0, 3.0], [1.0, 2.0], "bon"), ValueError, r"gold must have shape \(3,\), got \(2,\)"),
    (lambda: fit_gao([1e200, 2e200], [1.0, 2.0], "bon"), FloatingPointError, "fit_gao overflowed"),
    (lambda: worlds.GaoFit("bon", float("nan"), 1.0), ValueError, "alpha must be finite"),
    (lambda: worlds.GaoFit("bon", 1.0, 1.0)(-1.0), ValueError, r"d must be >= 0"),
]


@pytest.mark.parametrize(("make", "error", "message"), JUNK, ids=[case[2][:40] for case in JUNK])
def test_junk_is_refused_naming_the_argument(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_a_gao_fit_peaks_at_d_zero_or_later_and_at_inf_past_the_floats():
    assert worlds.GaoFit("bon", -1.0, 1.0).peak_d == 0.0  # it only falls: its peak over d >= 0 is at 0
    assert worlds.GaoFit("bon", 1.0, 1e-308).peak_kl == math.inf
    assert worlds.GaoFit("rl", 1e308, 1.0).peak_d == math.inf
    assert worlds.GaoFit("rl", 1.0, 1.0).peak_d == 1.0


def test_a_frontier_at_a_subnormal_beta_is_the_proxy_s_best_token():
    rm = RewardModel(np.arange(8.0))
    frontier = Frontier.of(SMALL_WORLD, rm, [5e-324])
    assert frontier.proxy[0] == pytest.approx(SMALL_WORLD.response_len * 7.0)
