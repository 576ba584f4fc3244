"""Sequence worlds (``rlhf_fast.sequences``): exact statistics against enumeration and sampling,
labellers against their probabilities, the length bias a proxy learns, and the reward model's
Rust loop against its twin."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from conftest import RUST, outcome, rust_only
from hypothesis import given
from hypothesis import strategies as st

import rlhf_fast as rl
from rlhf_fast import sequences
from rlhf_fast.sequences import (SequencePairs, SequenceRewardModel, SequenceWorld, response_lengths,
                                 train_sequence_reward_model)
from rlhf_fast.worlds import Judge, Labeller, World

REFERENCE = sequences._ReferenceEngines
TINY = SequenceWorld(n_prompts=2, vocab=3, max_len=3, zipf=1.0, prompt_scale=1.0, seed=5)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def random_policy(world, seed, scale=1.0):
    return world.ref_logits + scale * np.random.default_rng(seed).standard_normal(world.ref_logits.shape)


def random_rm(world, seed):
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal(world.vocab)
    weights[0] = 0.0
    return SequenceRewardModel(weights, float(rng.standard_normal()), rng.standard_normal(world.n_prompts))


def every_response(world):
    """Every response a world can give: tokens then an EOS, or ``max_len`` content tokens."""
    for length in range(1, world.max_len + 1):
        for content in itertools.product(range(1, world.vocab), repeat=length - 1):
            yield (*content, 0)
        if length == world.max_len:
            yield from itertools.product(range(1, world.vocab), repeat=length)


def padded(response, max_len):
    return list(response) + [-1] * (max_len - len(response))


# ------------------------------------------------------------------ exact statistics


def numpy_stats(logits, ref_log_probs):
    """The statistics as NumPy computes them, vectorised over prompts (the oracle the twins
    are held to)."""
    log_p = rl.worlds.log_softmax_rows(logits)
    p = np.exp(log_p)
    n_prompts, max_len, _ = p.shape
    eos = p[:, :, 0]
    alive = np.ones((n_prompts, max_len + 1))
    alive[:, 1:] = np.cumprod(1.0 - eos, axis=1)
    # a token of probability 0 adds nothing (its log-probability may be -inf)
    seen = p > 0.0
    kl_terms = np.zeros_like(p)
    kl_terms[seen] = p[seen] * (log_p[seen] - ref_log_probs[seen])
    per_position_kl = np.maximum(kl_terms.sum(axis=2), 0.0)
    counts = (alive[:, :max_len, None] * p).sum(axis=1)
    # q_t: alive at t with no copy of v yet; a response never holds v if it stops (0) first or
    # runs out of positions
    stay = np.maximum(1.0 - eos[:, :, None] - p, 0.0)
    q = np.ones((n_prompts, max_len + 1, p.shape[2]))
    q[:, 1:] = np.cumprod(stay, axis=1)
    never = (q[:, :max_len] * eos[:, :, None]).sum(axis=1) + q[:, max_len]
    appears = np.clip(1.0 - never, 0.0, 1.0)
    appears[:, 0] = counts[:, 0] = 1.0 - alive[:, max_len]
    return sequences.SequenceStats(alive, alive[:, :max_len].sum(axis=1), alive[:, 1:].sum(axis=1),
                         (alive[:, :max_len] * per_position_kl).sum(axis=1), counts, appears)


world_shapes = st.tuples(st.integers(1, 3), st.integers(2, 7), st.integers(1, 5), st.integers(0, 2**16),
                         st.sampled_from([0.0, 1.0, 5.0]))


@given(world_shapes)
def test_the_statistics_are_numpys(case):
    n_prompts, vocab, max_len, seed, scale = case
    world = SequenceWorld(n_prompts=n_prompts, vocab=vocab, max_len=max_len, seed=seed)
    logits = random_policy(world, seed, scale)
    if scale == 5.0:  # a row spanning more than the floats: tokens of probability exactly 0
        logits[0, 0, 1] = 1e308
        logits[0, 0, 0] = -1e308
    for got, want in zip(world.stats(logits), numpy_stats(logits, world.ref_log_probs)):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


@rust_only
@given(world_shapes)
def test_the_core_statistics_are_their_twins(case):
    n_prompts, vocab, max_len, seed, scale = case
    world = SequenceWorld(n_prompts=n_prompts, vocab=vocab, max_len=max_len, seed=seed)
    logits = random_policy(world, seed, scale)
    core = rl._core.sequence_stats(logits, world.ref_logits)
    for got, want in zip(core, REFERENCE.sequence_stats(logits, world.ref_logits)):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


@rust_only
def test_the_core_statistics_refuse_bad_tables_by_name():
    ok = np.zeros((1, 2, 3))
    with pytest.raises(ValueError, match="ref_logits must have the shape of logits"):
        rl._core.sequence_stats(ok, np.zeros((1, 2, 4)))
    with pytest.raises(ValueError, match="logits must be finite|logits.*finite"):
        rl._core.sequence_stats(np.full((1, 2, 3), np.nan), ok)
    with pytest.raises(TypeError, match="logits must be a 3-D float64 array"):
        rl._core.sequence_stats(np.zeros((2, 3)), ok)
    with pytest.raises(ValueError, match="at least 1 prompt, 1 position and 2 tokens"):
        rl._core.sequence_stats(np.zeros((1, 2, 1)), np.zeros((1, 2, 1)))


def test_the_reference_spreads_its_lengths_uniformly():
    for max_len in (1, 4, 9):
        world = SequenceWorld(n_prompts=3, vocab=10, max_len=max_len, seed=max_len)
        stats = world.stats(world.ref_logits)
        np.testing.assert_allclose(stats.content_length, max_len / 2, rtol=1e-12)
        np.testing.assert_allclose(stats.length, max_len / 2 + max_len / (max_len + 1), rtol=1e-12)
        np.testing.assert_allclose(stats.alive[:, -1], 1 / (max_len + 1), rtol=1e-12)
        assert (stats.kl == 0.0).all()


@pytest.mark.parametrize("count_once", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_exact_statistics_are_the_sums_over_every_response(count_once, seed):
    world = SequenceWorld(n_prompts=2, vocab=3, max_len=3, prompt_scale=1.0, count_once=count_once, seed=seed)
    logits = random_policy(world, seed, scale=1.5)
    rm = random_rm(world, seed)
    log_p, log_ref = rl.worlds.log_softmax_rows(logits), world.ref_log_probs
    responses = list(every_response(world))
    rows = np.array([padded(y, world.max_len) for y in responses])
    for x in range(world.n_prompts):
        log_prob = np.array([sum(log_p[x, t, a] for t, a in enumerate(y)) for y in responses])
        prob = np.exp(log_prob)
        assert math.isclose(prob.sum(), 1.0, rel_tol=1e-12)
        log_ratio = log_prob - np.array([sum(log_ref[x, t, a] for t, a in enumerate(y)) for y in responses])
        lengths = np.array([len(y) for y in responses])
        n_content = np.array([sum(a != 0 for a in y) for y in responses])
        prompts = np.full(len(responses), x)
        stats = world.stats(logits)
        np.testing.assert_allclose(stats.length[x], prob @ lengths, rtol=1e-12)
        np.testing.assert_allclose(stats.content_length[x], prob @ n_content, rtol=1e-12)
        np.testing.assert_allclose(stats.kl[x], prob @ log_ratio, rtol=1e-10)
        for v in range(world.vocab):
            copies = np.array([y.count(v) for y in responses])
            np.testing.assert_allclose(stats.counts[x, v], prob @ copies, rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(stats.appears[x, v], prob @ (copies > 0), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(world.expected_gold(logits)[x], prob @ world.gold_score(prompts, rows), rtol=1e-12)
        np.testing.assert_allclose(world.expected_score(logits, rm)[x], prob @ rm.score(prompts, rows), rtol=1e-12)


def test_count_once_gold_counts_a_distinct_token_once():
    world = SequenceWorld(n_prompts=1, vocab=5, max_len=4, prompt_scale=0.0, seed=2)
    linear = SequenceWorld(n_prompts=1, vocab=5, max_len=4, prompt_scale=0.0, count_once=False, seed=2)
    g = world.gold_token
    responses = [[3, 3, 3, 0], [2, 4, 2, 4], [0, -1, -1, -1]]
    assert world.gold_score([0, 0, 0], responses).tolist() == [g[3], g[2] + g[4], 0.0]
    np.testing.assert_allclose(linear.gold_score([0, 0, 0], responses), [3 * g[3], 2 * g[2] + 2 * g[4], 0.0])


@pytest.mark.parametrize("seed", [0, 1])
def test_sampled_frequencies_match_the_exact_statistics(seed):
    world = SequenceWorld(n_prompts=3, vocab=6, max_len=5, prompt_scale=1.0, seed=seed)
    logits = random_policy(world, seed + 10)
    rm = random_rm(world, seed)
    n = 30_000
    prompts, responses, lengths, has_eos = world.sample(n, seed=seed, logits=logits)
    assert np.array_equal(response_lengths(responses), (lengths, has_eos))
    stats = world.stats(logits)
    gold = world.gold_score(prompts, responses)
    score = rm.score(prompts, responses)
    for x in range(world.n_prompts):
        mine = prompts == x
        assert abs(mine.mean() - 1 / world.n_prompts) < 5 * math.sqrt(2 / 9 / n)
        for name, values, exact in [("length", lengths, stats.length[x]),
                                    ("content length", lengths - has_eos, stats.content_length[x]),
                                    ("truncated", ~has_eos, stats.alive[x, -1]),
                                    ("gold", gold, world.expected_gold(logits)[x]),
                                    ("proxy", score, world.expected_score(logits, rm)[x])]:
            sample = values[mine].astype(float)
            error = 5 * sample.std() / math.sqrt(len(sample)) + 1e-12
            assert abs(sample.mean() - exact) < error, (name, x, sample.mean(), exact)
        for v in range(1, world.vocab):
            appears = (responses[mine] == v).any(axis=1)
            p = stats.appears[x, v]
            assert abs(appears.mean() - p) < 5 * math.sqrt(p * (1 - p) / mine.sum()) + 1e-12, (x, v)


def test_sampling_is_seeded_and_lowered_eos_lengthens():
    world = SequenceWorld(n_prompts=2, vocab=8, max_len=6, seed=3)
    first = world.sample(50, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(first, world.sample(50, seed=4)))
    longer = world.ref_logits.copy()
    longer[:, :, 0] -= 2.0
    assert (world.expected_length(longer) > world.expected_length(world.ref_logits) + 1).all()
    assert world.sample(2000, seed=5, logits=longer)[2].mean() > world.sample(2000, seed=5)[2].mean() + 1


# ------------------------------------------------------------------ labels


def label_probability(world, pairs, temperature, flip, length_bias):
    n_first, n_second = pairs.content_lengths()
    margin = world.gold_score(pairs.prompts, pairs.first) - world.gold_score(pairs.prompts, pairs.second)
    prefer = sigmoid((margin + length_bias * (n_first - n_second)) / temperature)
    return flip + (1 - 2 * flip) * prefer, n_first - n_second


@pytest.mark.parametrize("temperature, flip, length_bias", [(1.0, 0.0, 0.0), (0.5, 0.1, 1.0), (2.0, 0.0, -0.5)])
def test_human_labels_come_at_their_probabilities(temperature, flip, length_bias):
    world = SequenceWorld(n_prompts=4, vocab=16, max_len=6, seed=1)
    pairs = world.preferences(6000, seed=2, labeller=Labeller(temperature, flip, length_bias=length_bias))
    assert set(np.unique(pairs.target)) <= {0.0, 1.0}
    p, gap = label_probability(world, pairs, temperature, flip, length_bias)
    variance = p * (1 - p)
    assert abs((pairs.target - p).sum()) < 5 * math.sqrt(variance.sum())
    assert abs(((pairs.target - p) * gap).sum()) < 5 * math.sqrt((variance * gap**2).sum())
    # the same labels are far from what a labeller with another length bias would give
    other, _ = label_probability(world, pairs, temperature, flip, length_bias + 1.0)
    assert abs(((pairs.target - other) * gap).sum()) > 5 * math.sqrt((other * (1 - other) * gap**2).sum())


def test_a_judge_adds_its_length_bias_to_its_margin_and_length_aware_removes_it():
    world = SequenceWorld(n_prompts=3, vocab=12, max_len=5, seed=2)
    judge = Judge(position_bias=0.2, soft=True, both_orders=True, temperature=0.7, length_bias=0.8)
    pairs = world.preferences(300, seed=3, labeller=judge)
    values = world.judge_values(judge)
    assert (values[:, 0] == 0).all()

    def judged(responses):
        return np.array([sum(values[x, a] for a in set(row) if a > 0) for x, row in zip(pairs.prompts, responses)])

    n_first, n_second = pairs.content_lengths()
    margin = judged(pairs.first) - judged(pairs.second) + 0.8 * (n_first - n_second)
    np.testing.assert_allclose(pairs.target, 0.1 + 0.8 * sigmoid(margin / 0.7), rtol=1e-12)
    aware = world.preferences(300, seed=3, labeller=Judge(position_bias=0.2, soft=True, both_orders=True,
                                                          temperature=0.7, length_bias=0.8, length_aware=1.0))
    unbiased = world.preferences(300, seed=3, labeller=Judge(position_bias=0.2, soft=True, both_orders=True,
                                                             temperature=0.7))
    assert np.array_equal(aware.target, unbiased.target)
    assert Judge(length_bias=0.8, length_aware=0.25).effective_length_bias == pytest.approx(0.6)


def test_a_bag_worlds_labels_ignore_length_bias():
    world = World(n_prompts=3, vocab=32, response_len=4, seed=1)
    for plain, biased in [(Labeller(), Labeller(length_bias=3.0)), (Judge(soft=False), Judge(soft=False, length_bias=3.0))]:
        a, b = world.preferences(200, seed=7, labeller=plain), world.preferences(200, seed=7, labeller=biased)
        assert np.array_equal(a.target, b.target) and np.array_equal(a.first, b.first)


# ------------------------------------------------------------------ proxies and length bias


def python_train(pairs, vocab, epochs, lr, c, length_feature):
    """The loop, written out on the responses themselves: features are content-token counts and
    (``length_feature``) the content length in column ``vocab``."""
    w = [0.0] * (vocab + 1)

    def features(row):
        tokens = [a for a in row if a > 0]
        return tokens + ([vocab] * len(tokens) if length_feature else [])

    for _ in range(epochs):
        for a, b, t in zip(pairs.first.tolist(), pairs.second.tolist(), pairs.target.tolist()):
            a, b = features(a), features(b)
            r_a, r_b = sum(w[k] for k in a), sum(w[k] for k in b)
            m = r_a - r_b
            d_m = -t * sigmoid(-m) + (1.0 - t) * sigmoid(m)
            d_sum = 2.0 * c * (r_a + r_b)
            for k in a:
                w[k] -= lr * (d_m + d_sum)
            for k in b:
                w[k] -= lr * (d_sum - d_m)
    return np.array(w[:vocab]), w[vocab]


@pytest.mark.parametrize("length_feature", [False, True])
def test_the_proxy_is_bradley_terry_sgd_on_content_counts_and_length(length_feature):
    world = SequenceWorld(n_prompts=3, vocab=10, max_len=5, seed=4)
    pairs = world.preferences(200, seed=5, labeller=Judge(soft=True, length_bias=0.5))
    rm = train_sequence_reward_model(world, pairs, epochs=2, lr=0.2, center_rewards_coefficient=0.01,
                                     length_feature=length_feature)
    weights, length_weight = python_train(pairs, world.vocab, 2, 0.2, 0.01, length_feature)
    np.testing.assert_allclose(rm.weights, weights, rtol=1e-12, atol=1e-15)
    assert rm.length_weight == pytest.approx(length_weight if length_feature else 0.0, rel=1e-12, abs=1e-15)
    assert rm.weights[0] == 0.0


def shifted_eos(world, shift):
    logits = world.ref_logits.copy()
    logits[:, :, 0] -= shift
    return logits


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_length_biased_labeller_teaches_the_proxy_to_reward_length_which_the_gold_does_not(seed):
    world = SequenceWorld(n_prompts=6, vocab=32, max_len=8, seed=seed)
    held_out = world.preferences(2000, seed=100 + seed)
    biased = train_sequence_reward_model(world, world.preferences(3000, seed=seed, labeller=Labeller(length_bias=1.0)),
                                         length_feature=True)
    fair = train_sequence_reward_model(world, world.preferences(3000, seed=seed), length_feature=True)
    # the length column is collinear with a shift of every token's weight, so even fair labels
    # give it some weight (either sign, about 0.5 at most here); biased ones near their bias
    assert biased.length_weight > 0.5 and biased.length_weight > fair.length_weight + 0.5
    assert biased.debiased().length_weight == 0.0
    assert np.array_equal(biased.debiased().weights, biased.weights)
    policies = [shifted_eos(world, shift) for shift in (0.0, 0.5, 1.0, 2.0)]
    length = [world.expected_content_length(p).mean() for p in policies]
    proxy = [world.expected_score(p, biased).mean() for p in policies]
    debiased = [world.expected_score(p, biased.debiased()).mean() for p in policies]
    gold = [world.expected_gold(p).mean() for p in policies]
    assert np.all(np.diff(length) > 0.3)
    assert np.all(np.diff(proxy) > 0.3)
    # the gold does not follow, and the debiased proxy follows far less
    assert gold[-1] - gold[0] < 0.2 * (proxy[-1] - proxy[0])
    assert debiased[-1] - debiased[0] < 0.5 * (proxy[-1] - proxy[0])
    # held-out gold accuracy: well above chance from fair labels, and the length weight costs it
    assert fair.gold_accuracy(world, held_out) > 0.75
    assert biased.debiased().gold_accuracy(world, held_out) > biased.gold_accuracy(world, held_out) + 0.05


# ------------------------------------------------------------------ Rust against the twin

row_pairs = st.integers(1, 6).flatmap(lambda vocab: st.tuples(
    st.just(vocab),
    st.lists(st.tuples(st.lists(st.integers(0, vocab - 1), max_size=5), st.lists(st.integers(0, vocab - 1), max_size=5),
                       st.sampled_from([0.0, 1.0, 0.3]), st.sampled_from([0.0, 0.5])), min_size=1, max_size=12),
    st.integers(0, 3), st.sampled_from([0.1, 1.0, 1e3]), st.sampled_from([0.0, 0.01, 1.0])))


def rows_of(lists, width):
    rows = np.zeros((len(lists), width), dtype=np.int64)
    for i, row in enumerate(lists):
        rows[i, :len(row)] = row
    return rows, np.array([len(row) for row in lists], dtype=np.int64)


@rust_only
@given(row_pairs)
def test_the_rows_trainer_is_its_twins(case):
    vocab, pairs, epochs, lr, c = case
    first, first_len = rows_of([p[0] for p in pairs], 5)
    second, second_len = rows_of([p[1] for p in pairs], 5)
    args = (vocab, first, first_len, second, second_len, np.array([p[2] for p in pairs]),
            np.array([p[3] for p in pairs]), epochs, lr, c)
    rust, python = outcome(rl._core.train_reward_model_rows, *args), outcome(REFERENCE.train_reward_model_rows, *args)
    if rust[0] == "ok":
        assert python[0] == "ok"
        np.testing.assert_allclose(rust[1], python[1], rtol=1e-9, atol=1e-9)
    else:
        assert rust[0] == python[0] == "FloatingPointError", (rust, python)
        assert rust[1] == python[1]


@rust_only
def test_the_rows_trainer_refuses_bad_rows_by_name():
    ok = np.zeros((2, 3), dtype=np.int64), np.array([1, 2])
    target, margin = np.array([1.0, 0.0]), np.zeros(2)
    with pytest.raises(ValueError, match="first_len\\[1\\] must be at most the row width 3"):
        rl._core.train_reward_model_rows(4, ok[0], np.array([1, 4]), *ok, target, margin, 1, 0.1, 0.0)
    with pytest.raises(ValueError, match="second has column 7"):
        rl._core.train_reward_model_rows(4, *ok, np.full((2, 3), 7), ok[1], target, margin, 1, 0.1, 0.0)
    with pytest.raises(ValueError, match="second_len must hold indices >= 0"):
        rl._core.train_reward_model_rows(4, *ok, ok[0], np.array([-1, 0]), target, margin, 1, 0.1, 0.0)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize("call, error, message", [
    (lambda: SequenceWorld(vocab=1), ValueError, "vocab must be >= 2"),
    (lambda: SequenceWorld(max_len=0), ValueError, "max_len must be >= 1"),
    (lambda: SequenceWorld(count_once=1), TypeError, "count_once must be a bool"),
    (lambda: SequenceWorld(zipf=-1.0), ValueError, "zipf must be"),
    (lambda: TINY.stats(np.zeros((2, 3, 4))), ValueError, "logits must have shape"),
    (lambda: TINY.kl(np.full(TINY.ref_logits.shape, np.nan)), ValueError, "logits\\[0, 0, 0\\] must be finite"),
    (lambda: TINY.gold_score([0], [[1, -1, 2]]), ValueError, "responses\\[0\\] must be tokens then -1 padding"),
    (lambda: TINY.gold_score([0], [[0, 1, -1]]), ValueError, "responses\\[0\\] must end at its first EOS"),
    (lambda: TINY.gold_score([0], [[1, 2, -1]]), ValueError, "responses\\[0\\] must end with an EOS"),
    (lambda: TINY.gold_score([0], [[1, 3, 0]]), ValueError, "responses must be tokens in \\[0, 3\\)"),
    (lambda: TINY.gold_score([2], [[1, 0, -1]]), ValueError, "prompts must be prompt indices"),
    (lambda: TINY.gold_score([0], [[1, -2, 0]]), ValueError, "responses\\[0, 1\\] must be a token >= 0"),
    (lambda: TINY.gold_score([0], [[1.0, 0.0, -1.0]]), TypeError, "responses must hold integers"),
    (lambda: TINY.sample(-1, 0), ValueError, "n must be >= 0"),
    (lambda: TINY.preferences(3, 0, labeller="human"), TypeError, "labeller must be a Labeller or a Judge"),
    (lambda: Labeller(length_bias=math.nan), ValueError, "length_bias must be finite"),
    (lambda: Judge(length_bias=2e6), ValueError, "length_bias must be in"),
    (lambda: Judge(length_aware=1.5), ValueError, "length_aware must be in \\[0, 1\\]"),
    (lambda: Judge(length_aware=True), TypeError, "length_aware must be a real number"),
    (lambda: SequenceRewardModel(np.ones(3)), ValueError, "weights\\[0\\] is the EOS's and must be 0"),
    (lambda: SequenceRewardModel(np.zeros(3), math.inf), ValueError, "length_weight must be finite"),
    (lambda: TINY.expected_score(TINY.ref_logits, SequenceRewardModel(np.zeros(4))), ValueError, "rm must weigh"),
    (lambda: TINY.expected_score(TINY.ref_logits, rl.RewardModel(np.zeros(3))), TypeError,
     "rm must be a SequenceRewardModel"),
    (lambda: SequencePairs([0], [[1, 0, -1]], [[1, 0]], [1.0], 0.0), ValueError, "second must have shape"),
    (lambda: SequencePairs([0], [[1, 0, -1]], [[1, 0, -1]], [1.5], 0.0), ValueError, "target\\[0\\] must be"),
    (lambda: train_sequence_reward_model(TINY, TINY.preferences(0, 0)), ValueError, "pairs must not be empty"),
    (lambda: train_sequence_reward_model(TINY, TINY.preferences(3, 0), length_feature="yes"), TypeError,
     "length_feature must be a bool"),
    (lambda: train_sequence_reward_model(TINY, TINY.preferences(3, 0), lr=0.0), ValueError, "lr must be > 0"),
    (lambda: train_sequence_reward_model(World(), TINY.preferences(3, 0)), TypeError, "world must be a SequenceWorld"),
    (lambda: train_sequence_reward_model(SequenceWorld(max_len=4), TINY.preferences(3, 0)), ValueError,
     "pairs must hold responses of the world's max_len 4"),
])
def test_bad_arguments_are_refused_by_name(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_a_world_is_immutable_and_seeded():
    world = SequenceWorld(n_prompts=2, vocab=5, max_len=3, seed=9)
    assert repr(world) == "SequenceWorld(n_prompts=2, vocab=5, max_len=3, zipf=1.1, count_once=True, seed=9)"
    assert np.array_equal(world.ref_logits, SequenceWorld(n_prompts=2, vocab=5, max_len=3, seed=9).ref_logits)
    with pytest.raises(ValueError):
        world.ref_logits[0, 0, 0] = 1.0
    assert world.gold_token[0] == 0.0
    assert not np.array_equal(world.gold_token, SequenceWorld(n_prompts=2, vocab=5, max_len=3, seed=8).gold_token)
    assert RUST == (rl.BACKEND == "rust")


def test_the_examples_run():
    import doctest

    failed, attempted = doctest.testmod(sequences, extraglobs={"rl": rl})
    assert attempted >= 10 and failed == 0
