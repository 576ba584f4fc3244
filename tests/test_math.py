"""Mathematical properties of the public API, checked against mathematics, not the reference.

Each property runs on ``api`` (the active backend) and, where cheap, on the reference too, so a
bug shared by both implementations is still caught here.
"""

from __future__ import annotations

import math
import random
import warnings

import numpy as np
import pytest
from conftest import (
    MODULES,
    V,
    assert_close,
    copy_policy,
    floats,
    logits,
    np_log_softmax,
    np_softmax,
    policies,
    prob_vectors,
    prompts,
    responses,
    softplus,
    weight_dicts,
)
from hypothesis import assume, given
from hypothesis import strategies as st

import rlhf_fast as api
from rlhf_fast import reference as ref



def derivative(f, x: float, h: float = 1e-4) -> float:
    """f'(x) by central differences with one Richardson step: error O(h^4) + O(eps |f| / h)."""

    def central(step):
        return (f(x + step) - f(x - step)) / (2 * step)

    return (4 * central(h / 2) - central(h)) / 3


def gradient(f, z, h: float = 1e-4) -> np.ndarray:
    """The gradient of f(list) at z, coordinate by coordinate."""
    z = [float(v) for v in z]

    def along(j):
        return lambda t: f(z[:j] + [t] + z[j + 1 :])

    return np.array([derivative(along(j), z[j], h) for j in range(len(z))])


def test_gradient_helper_is_accurate():
    """Guards the finite-difference helper on a function with a known gradient."""
    g = gradient(lambda v: math.exp(v[0]) * math.sin(v[1]) + v[2] ** 3, [0.3, -1.2, 2.0])
    expected = [math.exp(0.3) * math.sin(-1.2), math.exp(0.3) * math.cos(-1.2), 12.0]
    assert_close(g, expected, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------- softmax


@MODULES
@given(z=logits(max_size=20))
def test_softmax_is_a_distribution(mod, z):
    p = [float(v) for v in mod.softmax(z)]
    assert len(p) == len(z)
    assert all(0.0 <= v <= 1.0 for v in p)
    assert math.fsum(p) == pytest.approx(1.0, abs=1e-12)
    # the largest logit gets the largest probability
    assert p[int(np.argmax(z))] == max(p)


@MODULES
@given(z=logits(min_size=2, max_size=20))
def test_softmax_is_monotone_in_the_logits(mod, z):
    """exp and the shared normaliser are monotone, so the order of z is kept exactly."""
    p = mod.softmax(z)
    for i in range(len(z)):
        for j in range(len(z)):
            if z[i] < z[j]:
                assert p[i] <= p[j]


@MODULES
@given(z=logits(max_size=20), c=floats(-1e3, 1e3))
def test_softmax_is_shift_invariant(mod, z, c):
    shifted = [v + c for v in z]
    # z + c is rounded; compare with the softmax of what was actually passed (mathematically)
    assert_close(mod.softmax(shifted), np_softmax(z), rtol=1e-9, atol=1e-12)


@MODULES
@given(z=logits(max_size=20))
def test_log_softmax_is_log_of_softmax(mod, z):
    ls = np.asarray(mod.log_softmax(z), dtype=float)
    p = np.asarray(mod.softmax(z), dtype=float)
    assert np.all(np.isfinite(ls)), "log_softmax must be finite for finite logits, even +-1e4"
    assert np.all(ls <= 0.0)
    visible = p > 1e-300  # where log(p) is not distorted by underflow
    assert_close(ls[visible], np.log(p[visible]), rtol=1e-9, atol=1e-12)
    # logsumexp of a log-distribution is 0
    assert np.log(np.exp(ls - ls.max()).sum()) + ls.max() == pytest.approx(0.0, abs=1e-12)


@MODULES
@given(z=logits(max_size=20))
def test_log_softmax_matches_independent_computation(mod, z):
    assert_close(mod.log_softmax(z), np_log_softmax(z), rtol=1e-9, atol=1e-9)


@MODULES
@pytest.mark.parametrize(
    "z",
    [[1e4, -1e4], [-1e4, -1e4, -1e4], [1e4, 1e4 - 1.0, -1e4, 0.0], [-1e4] + [0.0] * 7, [1e4] * 8],
    ids=["pm1e4", "all-neg", "mixed", "one-neg", "all-pos"],
)
def test_softmax_and_log_softmax_with_large_finite_logits(mod, z):
    """SPEC section 4: logits as large as 1e4 in magnitude must work (no overflow, no NaN)."""
    p = np.asarray(mod.softmax(z), dtype=float)
    ls = np.asarray(mod.log_softmax(z), dtype=float)
    assert np.all(np.isfinite(p)) and np.all(np.isfinite(ls))
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    assert_close(p, np_softmax(z), atol=1e-300)
    assert_close(ls, np_log_softmax(z), rtol=1e-12, atol=1e-9)


# ------------------------------------------------------------------------------ KL


@MODULES
@given(p=prob_vectors())
def test_kl_of_a_distribution_with_itself_is_zero(mod, p):
    assert mod.kl(p, p) == 0.0


@MODULES
@given(data=st.data())
def test_kl_is_non_negative_and_obeys_pinsker(mod, data):
    """KL >= 2 TV^2 (Pinsker), so it is > 0 whenever p and q really differ."""
    n = data.draw(st.integers(1, 10))
    p = data.draw(prob_vectors(n, n))
    q = data.draw(prob_vectors(n, n, zeros=False))
    d = mod.kl(p, q)
    tv = 0.5 * sum(abs(a - b) for a, b in zip(p, q))
    assert d >= 0.0
    assert d >= 2.0 * tv * tv - 1e-12
    if max(abs(a - b) for a, b in zip(p, q)) > 1e-3:
        assert d > 0.0


@MODULES
@given(data=st.data())
def test_kl_treats_zero_log_zero_as_zero(mod, data):
    """Entries where p_i = 0 contribute nothing, even where q_i = 0 too."""
    n = data.draw(st.integers(2, 10))
    p = data.draw(prob_vectors(n, n, zeros=False))
    q = data.draw(prob_vectors(n, n, zeros=False))
    zero = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    assume(not all(zero))
    # renormalise p on its support; q gets zeros at a subset of p's zeros and is renormalised
    p = [0.0 if z else v for v, z in zip(p, zero)]
    q_zero = [z and data.draw(st.booleans()) for z in zero]
    q = [0.0 if z else v for v, z in zip(q, q_zero)]
    p = [v / math.fsum(p) for v in p]
    q = [v / math.fsum(q) for v in q]
    expected = math.fsum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q) if pi > 0)
    got = mod.kl(p, q)
    assert math.isfinite(got)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)


@MODULES
def test_kl_is_refused_where_q_has_no_mass_but_p_does(mod):
    """KL(p || q) is infinite there: an error naming q, not an inf handed back."""
    with pytest.raises(ValueError, match=r"^q\[1\] must be > 0 where p\[1\] > 0 \(KL\(p \|\| q\) is infinite\), got 0.0$"):
        mod.kl([0.5, 0.5], [1.0, 0.0])
    assert mod.kl([1.0, 0.0], [1.0, 0.0]) == 0.0  # where p has no mass either, 0 log 0 = 0


@MODULES
@given(data=st.data())
def test_kl_estimators_k1_k3_are_unbiased(mod, data):
    """E_{a~p}[k1] = E_{a~p}[k3] = KL(p || q), computed exactly by enumerating tokens."""
    n = data.draw(st.integers(1, 10))
    zp = data.draw(st.lists(floats(-5, 5), min_size=n, max_size=n))
    zq = data.draw(st.lists(floats(-5, 5), min_size=n, max_size=n))
    logp, logq = np_log_softmax(zp), np_log_softmax(zq)
    p = np.exp(logp)
    true_kl = float(np.sum(p * (logp - logq)))
    e_k1 = math.fsum(p[a] * mod.kl_k1(float(logp[a]), float(logq[a])) for a in range(n))
    e_k3 = math.fsum(p[a] * mod.kl_k3(float(logp[a]), float(logq[a])) for a in range(n))
    assert e_k1 == pytest.approx(true_kl, rel=1e-9, abs=1e-12)
    # sum_a p(a) (q(a)/p(a) - 1) = sum q - 1 = 0 only up to rounding of the normalisation
    assert e_k3 == pytest.approx(true_kl, rel=1e-9, abs=1e-12)
    assert mod.kl(list(p / p.sum()), list(np.exp(logq) / np.exp(logq).sum())) == pytest.approx(
        true_kl, rel=1e-9, abs=1e-12
    )


@MODULES
@given(logp=floats(-50, 50), logq=floats(-50, 50))
def test_kl_estimators_k2_k3_are_non_negative(mod, logp, logq):
    assert mod.kl_k2(logp, logq) >= 0.0
    assert mod.kl_k3(logp, logq) >= 0.0
    assert mod.kl_k1(logp, logq) == -mod.kl_k1(logq, logp)
    log_r = logq - logp
    assert mod.kl_k2(logp, logq) == pytest.approx(0.5 * log_r * log_r, rel=1e-12)
    if abs(log_r) > 1e-3:  # away from r = 1 the direct formula has no cancellation
        assert mod.kl_k3(logp, logq) == pytest.approx(math.exp(log_r) - 1.0 - log_r, rel=1e-9)


@MODULES
@pytest.mark.parametrize("logp, logq", [(-710.0, 0.0), (-800.0, -1.0), (-1e4, 0.0)])
def test_kl_k3_with_a_huge_ratio_is_a_floating_point_error(mod, logp, logq):
    """r = q/p = e^710 overflows a float: k3 = r - 1 - log r is +inf, which is raised as a
    FloatingPointError naming the function (never an OverflowError, never an inf returned)."""
    with pytest.raises(FloatingPointError, match=r"^kl_k3 overflowed: the result is inf$"):
        mod.kl_k3(logp, logq)


@MODULES
@given(v=floats(-50, 50))
def test_kl_estimators_vanish_when_p_equals_q(mod, v):
    assert mod.kl_k1(v, v) == 0.0
    assert mod.kl_k2(v, v) == 0.0
    assert mod.kl_k3(v, v) == 0.0


# -------------------------------------------------------------------------- sigmoid


@MODULES
@given(z=st.one_of(floats(-800, 800), st.sampled_from([-1e4, 1e4, -745.0, 745.0, 0.0, -0.0])))
def test_sigmoid_is_the_logistic_function(mod, z):
    s = mod.sigmoid(z)
    assert 0.0 <= s <= 1.0
    assert s + mod.sigmoid(-z) == pytest.approx(1.0, abs=1e-15)
    if abs(z) < 30:
        assert s == pytest.approx(1.0 / (1.0 + math.exp(-z)), rel=1e-14)
    if z < -30:  # the stable branch keeps relative accuracy in the far tail
        assert s == pytest.approx(math.exp(z), rel=1e-12, abs=1e-320)


# --------------------------------------------------------------------- reward model


def bt_loss(w, y_pos, y_neg) -> float:
    """-log sigmoid(R+ - R-), written independently of the package."""
    margin = 0.0
    for tok in (y_pos.split() if isinstance(y_pos, str) else y_pos):
        margin += w.get(tok, 0.0)
    for tok in (y_neg.split() if isinstance(y_neg, str) else y_neg):
        margin -= w.get(tok, 0.0)
    return softplus(-margin)


@MODULES
@given(
    w=weight_dicts(lo=-3, hi=3),
    y_pos=responses(max_tokens=4),
    y_neg=responses(max_tokens=4),
    lr=floats(1e-4, 0.1),
)
def test_rm_train_step_is_gradient_descent_on_bradley_terry_loss(mod, w, y_pos, y_neg, lr):
    """The change of w is -lr x the central finite-difference gradient of the BT loss; the loss returned is the one before the step."""
    w = {k: float(v) for k, v in w.items()}
    before = dict(w)
    loss = mod.rm_train_step(w, "help me", y_pos, y_neg, lr)
    assert loss == pytest.approx(bt_loss(before, y_pos, y_neg), rel=1e-12, abs=1e-300)
    tokens = set(before) | set(y_pos if not isinstance(y_pos, str) else y_pos.split())
    tokens |= set(y_neg if not isinstance(y_neg, str) else y_neg.split())
    # exactly the old keys plus the response tokens are present afterwards
    assert set(w) == tokens
    for tok in sorted(tokens):

        def loss_at(t, tok=tok):
            moved = dict(before)
            moved[tok] = t
            return bt_loss(moved, y_pos, y_neg)

        fd_grad = derivative(loss_at, before.get(tok, 0.0))
        delta = w[tok] - before.get(tok, 0.0)
        assert delta / -lr == pytest.approx(fd_grad, rel=1e-6, abs=1e-9), tok


@MODULES
def test_rm_train_step_moves_towards_the_preferred_response(mod):
    w = {tok: 0.0 for tok in ref.VOCAB}
    loss = mod.rm_train_step(w, "help me", "clear kind", "rude short", 0.1)
    assert loss == pytest.approx(math.log(2.0), rel=1e-15)
    assert w["clear"] > 0 and w["kind"] > 0 and w["rude"] < 0 and w["short"] < 0
    assert w["vague"] == 0.0
    assert bt_loss(w, "clear kind", "rude short") < loss


@MODULES
def test_train_rm_reaches_heldout_accuracy_of_the_lesson(mod):
    """The lesson's easy exercise: 500 pairs, held-out 100 pairs, accuracy above 90%."""
    w = mod.train_rm(mod.make_dataset(500, 0))
    assert mod.pairwise_accuracy(w, mod.make_dataset(100, 1)) >= 0.9
    assert all(w[tok] > 0 for tok in ref.GOOD_WORDS)
    assert all(w[tok] < 0 for tok in ref.BAD_WORDS)


@MODULES
@given(w=weight_dicts(), pairs_seed=st.integers(0, 1000), n=st.integers(1, 40))
def test_pairwise_accuracy_counts_strictly_right_orderings(mod, w, pairs_seed, n):
    pairs = ref.make_dataset(n, pairs_seed)
    right = sum(1 for _, yp, yn in pairs if _margin(w, yp, yn) > 0)
    assert mod.pairwise_accuracy(w, pairs) == right / n


def _margin(w, y_pos, y_neg):
    return math.fsum(w.get(t, 0.0) for t in y_pos.split()) - math.fsum(w.get(t, 0.0) for t in y_neg.split())


@MODULES
def test_pairwise_accuracy_ties_count_as_wrong(mod):
    assert mod.pairwise_accuracy({tok: 0.0 for tok in ref.VOCAB}, ref.make_dataset(10, 0)) == 0.0


@MODULES
@given(seed=st.integers(0, 2**40), n=st.integers(0, 30))
def test_make_dataset_pairs_are_two_good_words_against_two_bad(mod, seed, n):
    pairs = mod.make_dataset(n, seed)
    assert len(pairs) == n
    for x, good, bad in pairs:
        assert x in ref.PROMPTS
        assert len(good.split(" ")) == 2 and set(good.split(" ")) <= set(ref.GOOD_WORDS)
        assert len(bad.split(" ")) == 2 and set(bad.split(" ")) <= set(ref.BAD_WORDS)


@MODULES
@given(seed=st.integers(0, 2**40), n=st.integers(0, 20))
def test_make_dataset_draws_exactly_as_the_spec_says(mod, seed, n):
    """SPEC section 2: one Random(seed); per pair choice(PROMPTS), 2x choice(GOOD), 2x choice(BAD)."""
    rng = random.Random(seed)
    expected = []
    for _ in range(n):
        x = rng.choice(ref.PROMPTS)
        g = rng.choice(ref.GOOD_WORDS) + " " + rng.choice(ref.GOOD_WORDS)
        b = rng.choice(ref.BAD_WORDS) + " " + rng.choice(ref.BAD_WORDS)
        expected.append((x, g, b))
    assert [tuple(p) for p in mod.make_dataset(n, seed)] == expected


# ------------------------------------------------------------------------- sampling


def _upper_normal_quantile(alpha: float) -> float:
    """z with P(N(0,1) > z) = alpha, by bisection on erfc."""
    lo, hi = 0.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if 0.5 * math.erfc(mid / math.sqrt(2.0)) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


def chi2_critical(df: int, alpha: float = 1e-6) -> float:
    """Upper alpha-quantile of chi-square(df), Wilson-Hilferty, padded by 10% (conservative)."""
    z = _upper_normal_quantile(alpha)
    c = 2.0 / (9.0 * df)
    return 1.1 * df * (1.0 - c + z * math.sqrt(c)) ** 3


def test_chi2_critical_value_is_sane():
    """Guards the helper itself: known quantiles chi2_{0.999}(1) = 10.83, chi2_{0.999}(7) = 24.32."""
    assert 10.83 <= chi2_critical(1, 1e-3) <= 1.2 * 10.83
    assert 24.32 <= chi2_critical(7, 1e-3) <= 1.2 * 24.32


SAMPLING_CASES = {
    "uniform8": [1 / 8] * 8,
    "skewed": list(np_softmax([2.0, 1.0, 0.0, -1.0, 0.5, 0.25, -0.5, 3.0])),
    "with-zeros": [0.0, 0.3, 0.0, 0.5, 0.2, 0.0],
    "two": [0.9, 0.1],
}


@MODULES
@pytest.mark.parametrize("probs", list(SAMPLING_CASES.values()), ids=list(SAMPLING_CASES))
def test_sample_frequencies_match_probabilities(mod, probs):
    """20,000 draws: chi-square goodness of fit at p-value 1e-6; zero-probability tokens never drawn."""
    n = 20_000
    rng = random.Random(12345)
    counts = np.zeros(len(probs), dtype=int)
    for _ in range(n):
        counts[mod.sample(probs, rng)] += 1
    probs = np.asarray(probs)
    assert np.all(counts[probs == 0.0] == 0)
    live = probs > 0
    expected = n * probs[live]
    stat = float(np.sum((counts[live] - expected) ** 2 / expected))
    df = int(live.sum()) - 1
    if df > 0:
        assert stat < chi2_critical(df), (stat, counts.tolist())


class FixedU(random.Random):
    """A Random whose random() returns given values and counts the calls."""

    def __init__(self, *values):
        super().__init__(0)
        self.values = list(values)
        self.calls = 0

    def random(self):
        self.calls += 1
        return self.values.pop(0)


@MODULES
@given(p=prob_vectors(max_size=10), u=st.floats(0.0, 1.0, exclude_max=True))
def test_sample_is_the_inverse_cdf(mod, p, u):
    """The first index whose running sum exceeds u; one rng.random() call per sample."""
    rng = FixedU(u)
    got = mod.sample(p, rng)
    assert rng.calls == 1
    running, expected = 0.0, len(p) - 1
    for i, v in enumerate(p):
        running += v
        if running > u:
            expected = i
            break
    assert got == expected


@MODULES
def test_sample_boundaries(mod):
    """u exactly on a cumulative boundary goes right; a sum left below u by rounding gives the last index."""
    assert mod.sample([0.5, 0.5], FixedU(0.5)) == 1
    assert mod.sample([0.5, 0.5], FixedU(0.0)) == 0
    assert mod.sample([0.0, 1.0], FixedU(0.0)) == 1
    short = [0.25, 0.25, 0.5 - 5e-7]  # sums to 1 - 5e-7: valid within 1e-6
    assert mod.sample(short, FixedU(1.0 - 1e-7)) == 2


# ------------------------------------------------------------------- PPO surrogate


def surrogate(logits_, a, p_old_a, adv, eps):
    r = np_softmax(logits_)[a] / p_old_a
    return min(r * adv, min(max(r, 1 - eps), 1 + eps) * adv)


@st.composite
def surrogate_points(draw):
    """(logits, a, p_old_a, advantage, eps, ratio) with the ratio chosen directly."""
    z = draw(st.lists(floats(-5, 5), min_size=2, max_size=10))
    a = draw(st.integers(0, len(z) - 1))
    eps = draw(floats(0.02, 0.5))
    adv = draw(floats(-5, 5))
    ratio = draw(floats(0.2, 2.5))
    p_a = float(np_softmax(z)[a])
    assume(p_a / ratio <= 1.0)  # p_old_a is a probability
    return z, a, p_a / ratio, adv, eps, ratio


@MODULES
@given(pt=surrogate_points())
def test_clipped_surrogate_is_min_of_unclipped_and_clipped(mod, pt):
    z, a, p_old_a, adv, eps, _ = pt
    assert mod.clipped_surrogate(z, a, p_old_a, adv, eps) == pytest.approx(
        surrogate(z, a, p_old_a, adv, eps), rel=1e-12, abs=1e-15
    )


@MODULES
@given(pt=surrogate_points())
def test_clipped_surrogate_grad_matches_finite_differences(mod, pt):
    z, a, p_old_a, adv, eps, ratio = pt
    # stay clear of the kinks at 1 +- eps, where the derivative jumps
    assume(abs(ratio - (1 + eps)) > 1e-3 and abs(ratio - (1 - eps)) > 1e-3)
    grad = np.asarray(mod.clipped_surrogate_grad(z, a, p_old_a, adv, eps), dtype=float)
    assert grad.shape == (len(z),)
    fd = gradient(lambda v: mod.clipped_surrogate(v, a, p_old_a, adv, eps), z)
    assert_close(grad, fd, rtol=1e-6, atol=1e-9)


@MODULES
@given(
    z=st.lists(floats(-5, 5), min_size=2, max_size=10),
    data=st.data(),
    eps=floats(0.02, 0.5),
    delta=floats(1e-3, 0.9),
)
def test_clipped_surrogate_grad_is_exactly_zero_where_clipped(mod, z, data, eps, delta):
    """A >= 0 with ratio > 1+eps, or A < 0 with ratio < 1-eps: the objective is flat, the gradient exactly 0."""
    a = data.draw(st.integers(0, len(z) - 1))
    p_a = float(np_softmax(z)[a])
    positive = data.draw(st.booleans())
    if positive:
        adv = data.draw(floats(0.0, 5.0))
        p_old_a = p_a / ((1 + eps) * (1 + delta))
    else:
        adv = data.draw(floats(-5.0, -1e-6))
        p_old_a = p_a / ((1 - eps) * (1 - delta))
    assume(p_old_a <= 1.0)  # p_old_a is a probability
    grad = mod.clipped_surrogate_grad(z, a, p_old_a, adv, eps)
    assert [float(g) for g in grad] == [0.0] * len(z)
    bound = (1 + eps) if positive else (1 - eps)
    assert mod.clipped_surrogate(z, a, p_old_a, adv, eps) == pytest.approx(bound * adv, rel=1e-12)


@MODULES
@given(
    z=st.lists(floats(-5, 5), min_size=2, max_size=10),
    data=st.data(),
    eps=floats(0.02, 0.5),
    delta=floats(1e-3, 0.9),
)
def test_clipped_surrogate_grad_is_not_clipped_on_the_unhelpful_side(mod, z, data, eps, delta):
    """A > 0 with ratio < 1-eps (or A < 0 with ratio > 1+eps) still gets the full gradient A r (1[j=a] - p)."""
    a = data.draw(st.integers(0, len(z) - 1))
    p = np_softmax(z)
    if data.draw(st.booleans()):
        adv, ratio = data.draw(floats(0.1, 5.0)), (1 - eps) * (1 - delta)
    else:
        adv, ratio = data.draw(floats(-5.0, -0.1)), (1 + eps) * (1 + delta)
    p_old_a = float(p[a]) / ratio
    assume(p_old_a <= 1.0)  # p_old_a is a probability
    expected = adv * (p[a] / p_old_a) * (np.eye(len(z))[a] - p)
    assert_close(mod.clipped_surrogate_grad(z, a, p_old_a, adv, eps), expected, rtol=1e-9, atol=1e-15)


@MODULES
def test_clipped_surrogate_with_large_finite_logits(mod):
    z = [1e4, -1e4, 0.0, 1e4 - 2.0]
    p = np_softmax(z)
    for a in range(len(z)):
        if p[a] == 0.0:
            continue
        g = np.asarray(mod.clipped_surrogate_grad(z, a, float(p[a]), 1.0, 0.2), dtype=float)
        assert np.all(np.isfinite(g))
        assert math.isfinite(mod.clipped_surrogate(z, a, float(p[a]), 1.0, 0.2))


# ------------------------------------------------------------------------ rlhf_step


@MODULES
@given(
    theta=policies(-5, 5),
    ref_policy=policies(-5, 5),
    w=weight_dicts(),
    prompt=prompts,
    seed=st.integers(0, 2**32),
    eps=floats(0.01, 0.5),
    beta=floats(0.0, 2.0),
    lr=floats(1e-3, 0.5),
    ppo_epochs=st.integers(1, 6),
)
def test_rlhf_step_follows_the_spec_pseudocode(mod, theta, ref_policy, w, prompt, seed, eps, beta, lr, ppo_epochs):
    """SPEC section 2's rlhf_step, rewritten with numpy: token, score, kl, reward, clip_frac, update."""
    before = copy_policy(theta)
    rng = random.Random(seed)
    u = random.Random(seed).random()
    out = mod.rlhf_step(theta, ref_policy, w, prompt, rng, eps, beta, lr, ppo_epochs)

    z = np.array(before[prompt])
    p_old = np_softmax(z)
    cdf = np.cumsum(p_old)
    a = int(np.argmax(cdf > u)) if np.any(cdf > u) else V - 1
    q = np_softmax(ref_policy[prompt])
    kl_t = float(np.sum(np.where(p_old > 0, p_old * (np.log(np.where(p_old > 0, p_old, 1)) - np.log(q)), 0.0)))
    score = w.get(ref.VOCAB[a], 0.0)
    reward = score - beta * kl_t
    clipped = 0
    for _ in range(ppo_epochs):
        p = np_softmax(z)
        ratio = p[a] / p_old[a]
        # a ratio within rounding of a clip edge could go either way in two implementations
        assume(abs(ratio - (1 + eps)) > 1e-9 and abs(ratio - (1 - eps)) > 1e-9)
        if (reward >= 0 and ratio > 1 + eps) or (reward < 0 and ratio < 1 - eps):
            clipped += 1
            continue
        z = z + lr * reward * ratio * (np.eye(V)[a] - p)

    assert out["token"] == a
    assert out["score"] == pytest.approx(score, rel=1e-12, abs=1e-15)
    assert out["kl"] == pytest.approx(kl_t, rel=1e-9, abs=1e-12)
    assert out["reward"] == pytest.approx(reward, rel=1e-9, abs=1e-9)
    assert out["clip_frac"] == clipped / ppo_epochs
    assert_close(theta[prompt], z, rtol=1e-8, atol=1e-10)
    for x in ref.PROMPTS:
        if x != prompt:
            assert theta[x] == before[x], "only theta[prompt] may change"


@MODULES
def test_rlhf_step_with_one_epoch_is_never_clipped(mod, rm_weights):
    """With one epoch the ratio is exactly 1: the lesson's step, where the clip can never act."""
    rng = random.Random(7)
    theta, ref_policy = ref.init_policy(), ref.init_policy()
    for _ in range(200):
        out = mod.rlhf_step(theta, ref_policy, rm_weights, ref.PROMPTS[rng.randrange(3)], rng, ppo_epochs=1)
        assert out["clip_frac"] == 0.0


@MODULES
def test_rlhf_step_with_large_finite_policy_logits(mod, rm_weights):
    """SPEC section 4: +-1e4 policy logits must work: finite outputs and a finite policy."""
    theta = ref.init_policy()
    theta["help me"] = [1e4, -1e4, 0.0, 1e4, -1e4, 5.0, 0.0, -1e4]
    out = mod.rlhf_step(theta, ref.init_policy(), rm_weights, "help me", random.Random(0))
    assert all(math.isfinite(out[k]) for k in ("score", "kl", "reward", "clip_frac"))
    assert all(math.isfinite(v) for v in theta["help me"])


@MODULES
@pytest.mark.parametrize("beta", [0.0, 0.1])
def test_rlhf_step_with_large_finite_reference_logits_is_not_silently_nan(mod, rm_weights, beta):
    """SPEC section 4: +-1e4 reference logits must work, and never leave a silent NaN in theta.

    softmax underflows the reference's small probabilities to 0, so a naive KL is inf; the
    step must then either keep the policy finite or raise -- not write NaN/inf logits.
    """
    theta, ref_policy = ref.init_policy(), ref.init_policy()
    ref_policy["help me"] = [1e4] + [-1e4] * 7
    try:
        mod.rlhf_step(theta, ref_policy, rm_weights, "help me", random.Random(0), beta=beta)
    except (ValueError, FloatingPointError):
        return
    assert all(math.isfinite(v) for v in theta["help me"]), theta["help me"]


# ------------------------------------------------------------------------------ DPO


def dpo_loss(row, ref_row, pos, neg, beta) -> float:
    """-log sigmoid(beta [(log pi(y+) - log ref(y+)) - (log pi(y-) - log ref(y-))]), from log-softmax."""
    logp, logq = np_log_softmax(row), np_log_softmax(ref_row)
    idx = {tok: i for i, tok in enumerate(ref.VOCAB)}
    pos = [idx[t] for t in (pos.split() if isinstance(pos, str) else pos)]
    neg = [idx[t] for t in (neg.split() if isinstance(neg, str) else neg)]
    h = beta * (sum(logp[a] - logq[a] for a in pos) - sum(logp[a] - logq[a] for a in neg))
    return softplus(-float(h))


@MODULES
@given(
    theta=policies(-10, 10),
    ref_policy=policies(-10, 10),
    x=prompts,
    y_pos=responses(vocab_only=True, min_tokens=1, max_tokens=4),
    y_neg=responses(vocab_only=True, min_tokens=1, max_tokens=4),
    beta=floats(0.01, 5.0),
    lr=floats(1e-3, 0.5),
)
def test_dpo_step_is_gradient_descent_on_the_dpo_loss(mod, theta, ref_policy, x, y_pos, y_neg, beta, lr):
    before = copy_policy(theta)
    loss = mod.dpo_step(theta, ref_policy, x, y_pos, y_neg, beta, lr)
    assert loss == pytest.approx(dpo_loss(before[x], ref_policy[x], y_pos, y_neg, beta), rel=1e-9, abs=1e-12)
    fd = gradient(lambda row: dpo_loss(row, ref_policy[x], y_pos, y_neg, beta), before[x])
    delta = np.asarray(theta[x]) - np.asarray(before[x])
    assert_close(delta, -lr * fd, rtol=1e-6, atol=1e-9)
    for other in ref.PROMPTS:
        if other != x:
            assert theta[other] == before[other]


@MODULES
@given(theta=policies(-10, 10), x=prompts, beta=floats(0.01, 5.0))
def test_dpo_loss_is_log_two_at_the_reference(mod, theta, x, beta):
    """When pi = pi_ref the implicit reward margin is 0 and the loss is -log sigmoid(0) = log 2."""
    ref_policy = copy_policy(theta)
    assert mod.dpo_step(theta, ref_policy, x, "clear kind", "rude", beta, 0.05) == pytest.approx(
        math.log(2.0), rel=1e-12
    )


@MODULES
def test_dpo_steps_raise_the_preferred_response(mod):
    theta, ref_policy = ref.init_policy(), ref.init_policy()
    losses = [mod.dpo_step(theta, ref_policy, "help me", "clear", "rude", 0.5, 0.5) for _ in range(20)]
    assert all(b < a for a, b in zip(losses, losses[1:]))
    p = np_softmax(theta["help me"])
    assert p[ref.VOCAB.index("clear")] > 1 / V > p[ref.VOCAB.index("rude")]


@MODULES
def test_dpo_step_with_large_finite_logits(mod):
    theta, ref_policy = ref.init_policy(), ref.init_policy()
    theta["help me"] = [1e4, -1e4] * 4
    ref_policy["help me"] = [-1e4, 1e4] * 4
    loss = mod.dpo_step(theta, ref_policy, "help me", "clear", "kind", 0.1, 0.05)
    assert math.isfinite(loss)
    assert all(math.isfinite(v) for v in theta["help me"])


# ------------------------------------------------------------------- expected_score


@MODULES
@given(theta=policies(-50, 50, extreme=True), w=weight_dicts())
def test_expected_score_is_the_brute_force_sum(mod, theta, w):
    total = 0.0
    for x in ref.PROMPTS:
        p = np_softmax(theta[x])
        total += sum(p[a] * w.get(tok, 0.0) for a, tok in enumerate(ref.VOCAB))
    assert mod.expected_score(theta, w) == pytest.approx(total / len(ref.PROMPTS), rel=1e-12, abs=1e-12)


# ---------------------------------------------------------------- KL controllers


kl_sequences = st.lists(st.one_of(floats(0.0, 50.0), st.just(0.0)), min_size=1, max_size=50)


@MODULES
@given(
    init=floats(0.0, 2.0),
    target=floats(0.1, 20.0),
    horizon=floats(1.0, 1e5),
    kls=kl_sequences,
    n_steps=st.lists(st.integers(1, 512), min_size=50, max_size=50),
)
def test_adaptive_kl_controller_is_trls_formula(mod, init, target, horizon, kls, n_steps):
    """TRL: err = np.clip(KL / target - 1, -0.2, 0.2); value *= 1 + err * n_steps / horizon -- exactly."""
    for ctl in (mod.AdaptiveKLController(init, target, horizon), mod.make_kl_controller("adaptive", init, target, horizon)):
        value = init
        for kl_t, n in zip(kls, n_steps):
            proportional_error = np.clip(kl_t / target - 1, -0.2, 0.2)
            mult = 1 + proportional_error * n / horizon
            value *= mult
            ctl.update(kl_t, n)
            assert ctl.value == value


@MODULES
@given(init=floats(1e-3, 2.0), target=floats(0.1, 20.0), kls=kl_sequences)
def test_doubling_kl_controller_doubles_and_halves(mod, init, target, kls):
    for ctl in (mod.DoublingKLController(init, target), mod.make_kl_controller("doubling", init, target)):
        value = init
        for kl_t in kls:
            ctl.update(kl_t, 1)
            if kl_t > target:
                value *= 2.0
            elif kl_t < target / 2:
                value /= 2.0
            assert ctl.value == value


@MODULES
@given(init=floats(0.0, 2.0), kls=kl_sequences)
def test_fixed_kl_controller_never_moves(mod, init, kls):
    ctl = mod.make_kl_controller("fixed", init)
    for kl_t in kls:
        ctl.update(kl_t, 1)
        assert ctl.value == init


# --------------------------------------------------------------------- train_rlhf


@MODULES
@given(
    seed=st.integers(0, 2**32),
    kl_ctl=st.sampled_from(["fixed", "adaptive", "doubling"]),
    beta=floats(0.0, 1.0),
    target=floats(0.05, 3.0),
    horizon=floats(1.0, 1000.0),
    steps=st.integers(1, 150),
)
def test_train_rlhf_history_is_consistent(mod, rm_weights, seed, kl_ctl, beta, target, horizon, steps):
    """The beta column follows the controller, mean_kl is the running mean, reward = score - beta*kl."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ref.KLWarning)
        h = mod.train_rlhf(
            ref.init_policy(), ref.init_policy(), rm_weights, steps, seed, beta=beta, kl_ctl=kl_ctl, target=target, horizon=horizon
        )
    kls = [float(v) for v in h["kl"]]
    betas = [float(v) for v in h["beta"]]
    assert len(kls) == steps
    assert betas[0] == beta
    value = beta
    for t in range(steps - 1):
        if kl_ctl == "adaptive":
            value *= 1 + np.clip(kls[t] / target - 1, -0.2, 0.2) * 1 / horizon
        elif kl_ctl == "doubling":
            value = value * 2.0 if kls[t] > target else value / 2.0 if kls[t] < target / 2 else value
        assert betas[t + 1] == value, t
    running = np.cumsum(kls) / np.arange(1, steps + 1)
    assert_close(h["mean_kl"], running, rtol=1e-9, atol=1e-12)
    assert_close(h["reward"], np.asarray(h["score"]) - np.asarray(betas) * np.asarray(kls), rtol=1e-12, atol=1e-12)
    assert all(k >= 0 for k in kls)
    assert set(int(v) for v in h["prompt"]) <= {0, 1, 2}
    assert set(int(v) for v in h["token"]) <= set(range(V))


@MODULES
def test_train_rlhf_draws_prompts_like_the_spec(mod, rm_weights):
    """The first prompt is Random(seed).choice(PROMPTS), and its token is sampled from the uniform policy."""
    for seed in range(20):
        h = mod.train_rlhf(ref.init_policy(), ref.init_policy(), rm_weights, 1, seed)
        rng = random.Random(seed)
        x = rng.choice(ref.PROMPTS)
        assert int(h["prompt"][0]) == ref.PROMPTS.index(x)
        assert int(h["token"][0]) == min(int(rng.random() * V), V - 1)
        assert float(h["kl"][0]) == 0.0


@MODULES
def test_train_rlhf_without_kl_penalty_increases_expected_score(mod, rm_weights):
    theta = ref.init_policy()
    start = mod.expected_score(theta, rm_weights)
    mod.train_rlhf(theta, ref.init_policy(), rm_weights, 500, 0, beta=0.0)
    assert mod.expected_score(theta, rm_weights) > start + 0.5


@MODULES
def test_train_rlhf_warns_once_when_mean_kl_passes_threshold(mod, rm_weights):
    with pytest.warns(ref.KLWarning) as record:
        h = mod.train_rlhf(ref.init_policy(), ref.init_policy(), rm_weights, 300, 0, beta=0.0, kl_threshold=0.01)
    kl_warnings = [r for r in record if issubclass(r.category, ref.KLWarning)]
    assert len(kl_warnings) == 1
    assert issubclass(kl_warnings[0].category, api.KLWarning)
    assert max(float(v) for v in h["mean_kl"]) > 0.01


@MODULES
def test_train_rlhf_does_not_warn_below_threshold(mod, rm_weights):
    """filterwarnings=error turns any warning into a failure here."""
    mod.train_rlhf(ref.init_policy(), ref.init_policy(), rm_weights, 300, 0, beta=0.1, kl_threshold=50.0)


@MODULES
def test_train_rlhf_raises_floating_point_error_on_divergence(mod, rm_weights):
    """A learning rate of 1e308 overflows the first update: train_rlhf must raise, not go on."""
    theta = ref.init_policy()
    message = r"train_rlhf diverged at step 0: logits overflowed \(lr=1e\+308, beta=0\.0\)"
    with pytest.raises(FloatingPointError, match=f"^{message}$"):
        mod.train_rlhf(theta, ref.init_policy(), rm_weights, 50, 0, beta=0.0, lr=1e308)


@MODULES
def test_train_rlhf_with_large_finite_policy_logits(mod, rm_weights):
    theta = {x: [1e4, -1e4, 0.0, -1e4, 1e4 - 1.0, -1e4, -1e4, -1e4] for x in ref.PROMPTS}
    h = mod.train_rlhf(theta, ref.init_policy(), rm_weights, 100, 3)
    assert np.all(np.isfinite(np.asarray(h["kl"], dtype=float)))
    assert all(math.isfinite(v) for x in ref.PROMPTS for v in theta[x])


@MODULES
@given(theta=policies(-20, 20), x=prompts)
def test_policy_logits_is_the_row_itself(mod, theta, x):
    assert mod.policy_logits(theta, x) is theta[x]


@MODULES
def test_init_policy_is_uniform_and_fresh(mod):
    a, b = mod.init_policy(), mod.init_policy()
    assert list(a) == list(ref.PROMPTS)
    assert all(list(a[x]) == [0.0] * V for x in ref.PROMPTS)
    a["help me"][0] = 1.0
    assert b["help me"][0] == 0.0, "two init_policy() calls must never share storage"
    assert a["answer me"][0] == 0.0, "rows must not share storage"


@MODULES
@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.log_softmax([1.7e308, -1.7e308]), r"^log_softmax overflowed: result\[1\] is -inf$"),
        (lambda m: m.log_softmax(np.array([[0.0, 1.0], [1.7e308, -1.7e308]])),
         r"^log_softmax overflowed: result\[3\] is -inf$"),
        (lambda m: m.kl_k1(-1e308, 1e308), r"^kl_k1 overflowed: the result is -inf$"),
        (lambda m: m.kl_k2(-1e300, 1e300), r"^kl_k2 overflowed: the result is inf$"),
        (lambda m: m.clipped_surrogate([0.0, 1.0], 1, 0.5, -1.7e308, 0.4),
         r"^clipped_surrogate overflowed: the result is -inf$"),
        (lambda m: m.clipped_surrogate_grad([0.0, 1.0], 1, 0.13, -1.7e308, 0.39),
         r"^clipped_surrogate_grad overflowed: result\[0\] is inf$"),
        (lambda m: m.dot({"kind": 1.7e308}, {"kind": 2}), r"^dot overflowed: the result is inf$"),
    ],
    ids=["log_softmax", "log_softmax-array", "kl_k1", "kl_k2", "clipped_surrogate", "clipped_surrogate_grad", "dot"],
)
def test_a_result_that_overflows_is_a_floating_point_error(mod, call, message):
    """Finite but extreme arguments overflow inside the kernel: raised, named, never returned."""
    with pytest.raises(FloatingPointError, match=message):
        call(mod)


@MODULES
def test_kl_controllers_refuse_bad_measurements_and_keep_a_finite_value(mod):
    ctl = mod.make_kl_controller("doubling", 1.7e308, target=1.0)
    with pytest.raises(FloatingPointError, match=r"^DoublingKLController overflowed: value inf \(current=5\.0, n_steps=1\)$"):
        ctl.update(5.0, 1)
    assert ctl.value == 1.7e308
    with pytest.raises(TypeError, match="^current must be a real number, got complex$"):
        ctl.update(1j, 1)
    with pytest.raises(ValueError, match="^current must be finite, got nan$"):
        ctl.update(math.nan, 1)
    with pytest.raises(ValueError, match="^n_steps must be >= 1, got 0$"):
        mod.make_kl_controller("fixed", 0.1).update(0.5, 0)
    adaptive = mod.make_kl_controller("adaptive", 1e300, target=1.0, horizon=1.0)
    with pytest.raises(FloatingPointError, match=r"^AdaptiveKLController overflowed: value inf"):
        adaptive.update(5.0, 2**62)
    assert adaptive.value == 1e300
