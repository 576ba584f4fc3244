"""The fast API against the reference, function by function (SPEC sections 2 and 3).

Ints, tokens and strings must be identical; floats agree within 1e-9 relative. Under the
python backend ``api`` *is* the reference: a test that only compares the two is
``rust_only``, and what remains checks the reference's own promises (a numpy policy against
the same policy as a dict, the rows a call updates in place, one draw per sample).
"""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
from conftest import (
    MODULES,
    V,
    WHITESPACE,
    assert_close,
    assert_history_equal,
    assert_ok_or_diverged,
    assert_policy_close,
    assert_weights_close,
    copy_policy,
    floats,
    outcome,
    logits,
    policies,
    policy_array,
    prob_vectors,
    prompts,
    responses,
    rng_pair,
    rust_only,
    seeds,
    content_weight_dicts,
    weight_dicts,
)
from hypothesis import given
from hypothesis import strategies as st

import rlhf_fast as api
from rlhf_fast import reference as ref


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# ----------------------------------------------------------------------- data


@rust_only
def test_constants_are_the_references():
    for name in ("PROMPTS", "GOOD_WORDS", "BAD_WORDS", "VOCAB"):
        assert getattr(api, name) == getattr(ref, name), name
        assert isinstance(getattr(api, name), tuple), name


@rust_only
@given(n=st.integers(0, 200), seed=seeds())
def test_make_dataset(n, seed):
    assert api.make_dataset(n, seed) == ref.make_dataset(n, seed)


@rust_only
@given(n=st.integers(0, 50))
def test_make_dataset_default_seed(n):
    assert api.make_dataset(n) == ref.make_dataset(n)


@rust_only
@pytest.mark.parametrize("seed", [np.int64(7), np.uint64(2**63 + 5), 123], ids=["int64", "uint64", "int"])
def test_make_dataset_accepts_integral_seeds(seed):
    assert api.make_dataset(20, seed) == ref.make_dataset(20, seed)


@given(seed=seeds())
def test_seed_key(seed):
    """The init_by_array key: abs(seed) in little-endian 32-bit words, [0] for 0 -- as CPython seeds MT19937."""
    key = api.seed_key(seed)
    assert key == ref.seed_key(seed)
    assert all(is_int(k) and 0 <= k < 2**32 for k in key)
    assert sum(k << (32 * i) for i, k in enumerate(key)) == abs(seed)
    assert key == [0] or key[-1] != 0


@given(n=st.integers(0, 60), seed=st.integers(0, 2**32), data=st.data())
def test_preference_set(n, seed, data):
    """PreferenceSet (pairs tokenised once) stands in for pairs in train_rm and pairwise_accuracy."""
    pairs = ref.make_dataset(n, seed)
    if n and data.draw(st.booleans()):  # odd responses: OOV words, odd whitespace
        pairs = [(x, data.draw(responses(as_list=False)), data.draw(responses(as_list=False))) for x, _, _ in pairs]
    source = ref.pairs_to_rows(pairs) if data.draw(st.booleans()) else pairs
    got, expected = api.PreferenceSet(source), ref.PreferenceSet(source)
    assert len(got) == len(expected) == n
    assert list(got.vocab) == list(expected.vocab)
    assert [tuple(p) for p in got.to_pairs()] == expected.to_pairs()
    epochs, lr = data.draw(st.integers(0, 4)), data.draw(floats(1e-3, 1.0))
    if not n:  # nothing to train on or to score: refused by both, as pairs are
        for mod, prefs in ((api, got), (ref, expected), (ref, pairs)):
            with pytest.raises(ValueError, match="^pairs must not be empty$"):
                mod.train_rm(prefs, epochs, lr)
            with pytest.raises(ValueError, match="^pairs must not be empty$"):
                mod.pairwise_accuracy({}, prefs)
        return
    w = api.train_rm(got, epochs, lr)
    assert_weights_close(w, ref.train_rm(pairs, epochs, lr))
    assert_weights_close(w, ref.train_rm(expected, epochs, lr))
    assert api.pairwise_accuracy(w, got) == ref.pairwise_accuracy(w, pairs) == ref.pairwise_accuracy(w, expected)


@rust_only
@given(n=st.integers(0, 40), seed=seeds())
def test_preference_set_make_dataset(n, seed):
    got = api.PreferenceSet.make_dataset(n, seed)
    assert [tuple(p) for p in got.to_pairs()] == ref.PreferenceSet.make_dataset(n, seed).to_pairs() == ref.make_dataset(n, seed)


@rust_only
@given(seed=seeds(), burn=st.integers(0, 5), k=st.integers(1, 10))
def test_make_pair_draws_like_the_reference(seed, burn, k):
    r_api, r_ref = rng_pair(seed, burn)
    for _ in range(k):
        assert api.make_pair(r_api) == ref.make_pair(r_ref)
    assert r_api.getstate() == r_ref.getstate()


@rust_only
@given(n=st.integers(0, 30), seed=st.integers(0, 2**32))
def test_rows_round_trip(n, seed):
    pairs = ref.make_dataset(n, seed)
    rows = api.pairs_to_rows(pairs)
    assert rows == ref.pairs_to_rows(pairs)
    assert api.rows_to_pairs(rows) == ref.rows_to_pairs(rows) == pairs


# --------------------------------------------------------------- reward model


text_with_odd_whitespace = st.text(
    alphabet=st.one_of(st.sampled_from("".join(WHITESPACE) + "\u200b\u2028\u180e\x00"), st.sampled_from("abcé")),
    max_size=30,
)


@rust_only
@given(y=st.one_of(responses(), text_with_odd_whitespace))
def test_bag(y):
    """bag splits like str.split(): Python's whitespace set (\\x1c-\\x1f, \\x85, \\xa0, ...), not Rust's."""
    got = api.bag(y)
    assert isinstance(got, dict)
    assert got == ref.bag(y)
    assert all(is_int(c) for c in got.values())


@rust_only
@given(w=weight_dicts(), y=responses())
def test_dot(w, y):
    b = ref.bag(y)
    got = api.dot(w, b)
    assert isinstance(got, float)
    assert_close(got, ref.dot(w, b))


@rust_only
@given(
    z=st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        floats(-800, 800),
        st.sampled_from([-1e4, 1e4, -700.0, 700.0, -709.8, 709.8, -745.2, 745.2, 0.0, -0.0, 5e-324, -5e-324]),
    )
)
def test_sigmoid(z):
    got = api.sigmoid(z)
    assert isinstance(got, float)
    assert_close(got, ref.sigmoid(z))


@rust_only
@given(w=weight_dicts(), y_pos=responses(), y_neg=responses(), lr=floats(1e-4, 1.0))
def test_rm_train_step(w, y_pos, y_neg, lr):
    w_api, w_ref = dict(w), dict(w)
    loss_api = api.rm_train_step(w_api, "help me", y_pos, y_neg, lr)
    loss_ref = ref.rm_train_step(w_ref, "help me", y_pos, y_neg, lr)
    assert isinstance(loss_api, float)
    assert_close(loss_api, loss_ref)
    assert_weights_close(w_api, w_ref)


@rust_only
@given(
    seed=st.integers(0, 2**32),
    idx=st.lists(st.integers(0, 199), min_size=1, max_size=60),
    epochs=st.integers(0, 6),
    lr=floats(1e-3, 1.0),
    w=st.one_of(st.none(), weight_dicts()),
)
def test_train_rm(seed, idx, epochs, lr, w):
    data = ref.make_dataset(200, seed)
    pairs = [data[i] for i in idx]
    if w is None:
        got, expected = api.train_rm(pairs, epochs, lr), ref.train_rm(pairs, epochs, lr)
    else:
        w_api, w_ref = dict(w), dict(w)
        got, expected = api.train_rm(pairs, epochs, lr, w_api), ref.train_rm(pairs, epochs, lr, w_ref)
        assert got is w_api, "a given w is updated in place and returned"
    assert isinstance(got, dict)
    assert_weights_close(got, expected)


@rust_only
@given(pairs_seed=st.integers(0, 2**32), n=st.integers(1, 20), data=st.data())
def test_train_rm_on_arbitrary_responses(pairs_seed, n, data):
    """Pairs whose responses contain OOV words and odd whitespace (new keys appear in w)."""
    pairs = [
        (data.draw(prompts), data.draw(responses(as_list=False)), data.draw(responses(as_list=False)))
        for _ in range(n)
    ]
    assert_weights_close(api.train_rm(pairs, 3, 0.3), ref.train_rm(pairs, 3, 0.3))


@rust_only
@given(
    n=st.integers(1, 30),
    epochs=st.integers(1, 4),
    lr=floats(1e-3, 3.0),
    data=st.data(),
)
def test_train_rm_on_every_layout_and_step_size(n, epochs, lr, data):
    """Bags of 0-5 distinct tokens (the packed narrow and wide layouts and the ragged one) and
    step sizes on both sides of the bound below which the Rust pass takes its margin shortcut."""
    response = responses(vocab_only=True, max_tokens=5, as_list=True)
    pairs = [(data.draw(prompts), data.draw(response), data.draw(response)) for _ in range(n)]
    as_text = [(x, " ".join(y_pos), " ".join(y_neg)) for x, y_pos, y_neg in pairs]
    expected = ref.train_rm(as_text, epochs, lr)
    assert_weights_close(api.train_rm(as_text, epochs, lr), expected)
    assert_weights_close(api.train_rm(api.PreferenceSet(as_text), epochs, lr), expected)


@rust_only
def test_train_rm_lesson_reward_model(rm_weights):
    """The RM the acceptance test uses: train_rm(make_dataset(500, 0)), defaults epochs=5, lr=0.1."""
    assert_weights_close(api.train_rm(api.make_dataset(500, 0)), rm_weights)


@rust_only
@given(w=weight_dicts(), seed=st.integers(0, 2**32), n=st.integers(1, 60), data=st.data())
def test_pairwise_accuracy(w, seed, n, data):
    pairs = ref.make_dataset(n, seed)
    if data.draw(st.booleans()):  # arbitrary responses too, ties included
        pairs = [(x, data.draw(responses(as_list=False)), data.draw(responses(as_list=False))) for x, _, _ in pairs]
    got = api.pairwise_accuracy(w, pairs)
    assert isinstance(got, float)
    assert got == ref.pairwise_accuracy(w, pairs)


# --------------------------------------------------------------------- policy


def test_init_policy():
    got = api.init_policy()
    assert got == ref.init_policy()
    assert all(isinstance(row, list) for row in got.values())


@given(theta=policies(-50, 50, extreme=True), x=prompts)
def test_policy_logits(theta, x):
    assert api.policy_logits(theta, x) is ref.policy_logits(theta, x)


def as_container(z, kind):
    return {"list": list, "tuple": tuple, "numpy": np.array}[kind](z)


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
@given(z=logits(max_size=20), kind=st.sampled_from(["list", "tuple", "numpy"]))
def test_softmax_and_log_softmax(fn, z, kind):
    got = getattr(api, fn)(as_container(z, kind))
    assert_close(got, getattr(ref, fn)(z))
    if kind == "numpy":  # numpy in -> numpy out; else a list
        assert isinstance(got, np.ndarray) and got.dtype == np.float64 and got.shape == (len(z),)
    else:
        assert isinstance(got, list)


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
@given(data=st.data(), rows=st.integers(1, 6), cols=st.integers(1, 12))
def test_softmax_and_log_softmax_2d_row_wise(fn, data, rows, cols):
    """A 2-D array is taken row by row, as the rows given one at a time as lists."""
    z = np.array([data.draw(logits(cols, cols)) for _ in range(rows)])
    got = getattr(api, fn)(z)
    assert isinstance(got, np.ndarray) and got.shape == z.shape
    for i in range(rows):
        assert_close(got[i], getattr(ref, fn)(list(z[i])), err_msg=f"row {i}")


@st.composite
def nearly_normalised(draw, min_size=1, max_size=12):
    """Probability vectors, sometimes off 1 by up to 9e-7 (inside the 1e-6 tolerance)."""
    p = draw(prob_vectors(min_size, max_size))
    if draw(st.booleans()):
        d = draw(floats(-9e-7, 9e-7))
        p = [v * (1 + d) for v in p]
    return p


@rust_only
@given(data=st.data())
def test_kl(data):
    n = data.draw(st.integers(1, 12))
    p = data.draw(nearly_normalised(n, n))
    q = data.draw(nearly_normalised(n, n))
    assert_same_outcome(lambda m: m.kl(p, q))  # a q without mass where p has some: refused alike


@rust_only
@pytest.mark.parametrize("fn", ["kl_k1", "kl_k2", "kl_k3"])
@given(logp=floats(-800, 0), logq=floats(-800, 0))
def test_kl_estimators(fn, logp, logq):
    assert_same_outcome(lambda m: getattr(m, fn)(logp, logq))  # k3 past a log-ratio of 709 overflows


def assert_same_outcome(call) -> None:
    """``call(api)`` and ``call(ref)``: floats within the tolerance, or the same error."""
    outcomes = []
    for module in (api, ref):
        try:
            outcomes.append(call(module))
        except (ValueError, FloatingPointError) as err:
            outcomes.append((type(err), str(err)))
    got, want = outcomes
    if isinstance(want, tuple):
        assert got == want
    else:
        assert isinstance(got, float)
        assert_close(got, want)


@rust_only
@given(
    p=st.one_of(nearly_normalised(), nearly_normalised().map(np.array), nearly_normalised().map(tuple)),
    seed=seeds(),
    burn=st.integers(0, 3),
    k=st.integers(1, 20),
)
def test_sample_draws_like_the_reference(p, seed, burn, k):
    """Two Random copies: same tokens, and the rngs end in the same state (one random() per draw)."""
    r_api, r_ref = rng_pair(seed, burn)
    for _ in range(k):
        a = api.sample(p, r_api)
        assert is_int(a)
        assert a == ref.sample(p, r_ref)
    assert r_api.getstate() == r_ref.getstate()


@given(p=nearly_normalised(), u=st.one_of(st.floats(0.0, 1.0, exclude_max=True), st.sampled_from([0.0, 1 - 2**-53])))
def test_sample_with_a_random_subclass(p, u):
    """A random.Random subclass overriding random() is honoured: exactly one call per sample."""

    class Fixed(random.Random):
        calls = 0

        def random(self):
            self.calls += 1
            return u

    r_api, r_ref = Fixed(0), Fixed(0)
    assert api.sample(p, r_api) == ref.sample(p, r_ref)
    assert r_api.calls == r_ref.calls == 1


# ----------------------------------------------------------------------- PPO


@st.composite
def surrogate_args(draw):
    z = draw(logits(1, 12))
    a = draw(st.integers(0, len(z) - 1))
    eps = draw(floats(0.01, 0.5))
    adv = draw(st.one_of(floats(-10, 10), st.just(0.0)))
    p_a = float(ref.softmax(z)[a])
    kind = draw(st.sampled_from(["free", "kink+", "kink-", "ratio"]))
    if kind == "free" or p_a == 0.0:
        p_old_a = draw(floats(1e-6, 1.0))
    elif kind == "kink+":  # right on the clip edges: both implementations must take the same branch
        p_old_a = p_a / (1 + eps)
    elif kind == "kink-":
        p_old_a = min(p_a / (1 - eps), 1.0)
    else:
        p_old_a = min(p_a / draw(floats(0.2, 3.0)), 1.0)
    return z, a, p_old_a, adv, eps


@rust_only
@pytest.mark.parametrize("fn", ["clipped_surrogate", "clipped_surrogate_grad"])
@given(args=surrogate_args())
def test_clipped_surrogate_and_grad(fn, args):
    got = getattr(api, fn)(*args)
    if fn == "clipped_surrogate":
        assert isinstance(got, float)
    assert_close(got, getattr(ref, fn)(*args))


def assert_step_output_equal(got, expected):
    assert set(got) == set(expected), sorted(got)
    assert is_int(got["token"]) and got["token"] == expected["token"]
    for key in ("score", "kl", "reward", "clip_frac"):
        assert isinstance(got[key], float), key
        assert_close(got[key], expected[key], err_msg=key)


@rust_only
@given(
    theta=policies(-10, 10, extreme=True),
    ref_policy=policies(-10, 10, extreme=True),
    w=weight_dicts(),
    prompt=prompts,
    seed=seeds(),
    eps=floats(0.01, 0.5),
    beta=floats(0.0, 2.0),
    lr=floats(1e-3, 0.5),
    ppo_epochs=st.integers(1, 6),
    k=st.integers(1, 5),
)
def test_rlhf_step(theta, ref_policy, w, prompt, seed, eps, beta, lr, ppo_epochs, k):
    """k consecutive steps on the same rng: tokens identical, outputs and theta within 1e-9, rng states equal."""
    t_api, t_ref = copy_policy(theta), copy_policy(theta)
    rows = {x: t_api[x] for x in ref.PROMPTS}
    r_api, r_ref = rng_pair(seed)
    for _ in range(k):
        status, expected = outcome(ref.rlhf_step, t_ref, ref_policy, w, prompt, r_ref, eps, beta, lr, ppo_epochs)
        got_status, got = outcome(api.rlhf_step, t_api, ref_policy, w, prompt, r_api, eps, beta, lr, ppo_epochs)
        assert_ok_or_diverged(status, expected)
        assert got_status == status, (got, expected)
        assert_policy_close(t_api, t_ref)
        if status != "ok":
            assert got == expected
            break
        assert_step_output_equal(got, expected)
    assert all(t_api[x] is rows[x] for x in ref.PROMPTS), "theta's rows are mutated in place"
    assert r_api.getstate() == r_ref.getstate()


@rust_only
@given(theta=policies(-5, 5), w=weight_dicts(), prompt=prompts, seed=st.integers(0, 2**32))
def test_rlhf_step_defaults(theta, w, prompt, seed):
    ref_policy = ref.init_policy()
    t_api, t_ref = copy_policy(theta), copy_policy(theta)
    r_api, r_ref = rng_pair(seed)
    assert_step_output_equal(api.rlhf_step(t_api, ref_policy, w, prompt, r_api), ref.rlhf_step(t_ref, ref_policy, w, prompt, r_ref))
    assert_policy_close(t_api, t_ref)


@rust_only
@given(
    theta=policies(-10, 10, extreme=True),
    ref_policy=policies(-10, 10, extreme=True),
    x=prompts,
    y_pos=responses(vocab_only=True, min_tokens=1),
    y_neg=responses(vocab_only=True, min_tokens=1),
    beta=floats(1e-3, 5.0),
    lr=floats(1e-3, 0.5),
)
def test_dpo_step(theta, ref_policy, x, y_pos, y_neg, beta, lr):
    t_api, t_ref = copy_policy(theta), copy_policy(theta)
    row = t_api[x]
    got = api.dpo_step(t_api, ref_policy, x, y_pos, y_neg, beta, lr)
    expected = ref.dpo_step(t_ref, ref_policy, x, y_pos, y_neg, beta=beta, lr=lr)
    assert isinstance(got, float)
    assert_close(got, expected)
    assert_policy_close(t_api, t_ref)
    assert t_api[x] is row


@rust_only
@given(theta=policies(-50, 50, extreme=True), w=weight_dicts())
def test_expected_score(theta, w):
    got = api.expected_score(theta, w)
    assert isinstance(got, float)
    assert_close(got, ref.expected_score(theta, w))


@rust_only
@given(
    kind=st.sampled_from(["fixed", "adaptive", "doubling"]),
    beta=floats(0.0, 2.0),
    target=floats(0.01, 10.0),
    horizon=floats(1.0, 1e5),
    kls=st.lists(floats(0.0, 30.0), max_size=40),
)
def test_kl_controllers(kind, beta, target, horizon, kls):
    c_api = api.make_kl_controller(kind, beta, target, horizon)
    c_ref = ref.make_kl_controller(kind, beta, target, horizon)
    assert type(c_api).__name__ == type(c_ref).__name__
    assert c_api.value == c_ref.value
    for kl_t in kls:
        c_api.update(kl_t, 1)
        c_ref.update(kl_t, 1)
        assert_close(c_api.value, c_ref.value)


# ---------------------------------------------------------------- train_rlhf


def run_train_rlhf(mod, theta, ref_policy, w, steps, seed, **kw):
    """(outcome, history or error message, KL warnings count); theta is mutated."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        try:
            result = ("ok", mod.train_rlhf(theta, ref_policy, w, steps, seed, **kw))
        except FloatingPointError as err:
            result = ("FloatingPointError", str(err))
    kl_warnings = [r for r in record if issubclass(r.category, ref.KLWarning)]
    others = [r for r in record if not issubclass(r.category, ref.KLWarning)]
    assert not others, [str(r.message) for r in others]
    return result, len(kl_warnings)


def assert_train_rlhf_equal(theta, ref_policy, w, steps, seed, **kw):
    t_api, t_ref = copy_policy(theta), copy_policy(theta)
    rows = {x: t_api[x] for x in ref.PROMPTS}
    (status_api, out_api), warned_api = run_train_rlhf(api, t_api, ref_policy, w, steps, seed, **kw)
    (status_ref, out_ref), warned_ref = run_train_rlhf(ref, t_ref, ref_policy, w, steps, seed, **kw)
    assert status_api == status_ref, (out_api if status_api != "ok" else "", out_ref if status_ref != "ok" else "")
    if status_ref == "ok":
        assert_history_equal(out_api, out_ref)
    else:
        assert_ok_or_diverged(status_ref, out_ref)
        assert out_api == out_ref
    assert warned_api == warned_ref
    assert_policy_close(t_api, t_ref, err_msg="final theta" if status_ref == "ok" else "theta after FloatingPointError")
    assert all(t_api[x] is rows[x] for x in ref.PROMPTS), "theta's rows are mutated in place"
    return out_ref if status_ref == "ok" else None


@rust_only
@given(
    theta=st.one_of(st.just(None), policies(-5, 5)),
    ref_policy=st.one_of(st.just(None), policies(-5, 5)),
    w=st.one_of(st.just(None), content_weight_dicts()),
    seed=seeds(),
    beta=floats(0.0, 2.0),
    eps=st.floats(0.01, 0.5, exclude_min=True),
    lr=st.floats(1e-3, 0.5, exclude_min=True),
    ppo_epochs=st.integers(1, 8),
    steps=st.integers(1, 300),
    kl_ctl=st.sampled_from(["fixed", "adaptive", "doubling"]),
    target=floats(0.05, 8.0),
    horizon=floats(1.0, 20000.0),
    kl_threshold=st.one_of(st.just(5.0), floats(0.01, 10.0)),
)
def test_train_rlhf(rm_weights, theta, ref_policy, w, seed, beta, eps, lr, ppo_epochs, steps, kl_ctl, target, horizon, kl_threshold):
    assert_train_rlhf_equal(
        theta or ref.init_policy(),
        ref_policy or ref.init_policy(),
        w or rm_weights,
        steps,
        seed,
        eps=eps,
        beta=beta,
        lr=lr,
        ppo_epochs=ppo_epochs,
        kl_ctl=kl_ctl,
        target=target,
        horizon=horizon,
        kl_threshold=kl_threshold,
    )


@rust_only
@pytest.mark.parametrize("seed", range(3))
def test_train_rlhf_divergence_matches(rm_weights, seed):
    """Both raise FloatingPointError at the same step, leaving theta in the same state.

    The reference updates theta in place step by step, so after the error theta holds every
    update up to the failing step (the diverged row included); the API must leave the same.
    """
    ref_policy = {x: [1e4] + [-1e4] * 7 for x in ref.PROMPTS}
    assert_train_rlhf_equal(ref.init_policy(), ref_policy, rm_weights, 20, seed, beta=0.5)
    assert_train_rlhf_equal(ref.init_policy(), ref.init_policy(), rm_weights, 20, seed, lr=1e308)


@MODULES
@pytest.mark.parametrize("alias", ["same dict", "shared row"])
def test_ref_sharing_storage_with_theta_is_refused(rm_weights, mod, alias):
    """SPEC: ref is a frozen copy that never shares storage with theta; aliasing it is a mistake to name."""
    theta = ref.init_policy()
    frozen = theta if alias == "same dict" else {**ref.init_policy(), "help me": theta["help me"]}
    message = "^ref must be a frozen copy of the policy; it shares storage with theta$"
    with pytest.raises(ValueError, match=message):
        mod.train_rlhf(theta, frozen, rm_weights, 10, 4, beta=0.5)
    with pytest.raises(ValueError, match=message):
        mod.rlhf_step(theta, frozen, rm_weights, "help me", random.Random(0))
    assert theta == ref.init_policy()


# The acceptance test (not hypothesis): the lesson's medium exercise at scale.
ACCEPTANCE_SEEDS = range(50)
ACCEPTANCE_BETAS = (0.0, 0.1, 1.0)


@rust_only
@pytest.mark.parametrize("beta", ACCEPTANCE_BETAS)
@pytest.mark.parametrize("seed", ACCEPTANCE_SEEDS)
def test_acceptance_train_rlhf_2000_steps(rm_weights, seed, beta):
    """RM from train_rm(make_dataset(500, 0)); 2,000 steps: tokens identical, floats and final theta within 1e-9."""
    t_api, t_ref = ref.init_policy(), ref.init_policy()
    h_api = api.train_rlhf(t_api, ref.init_policy(), rm_weights, 2000, seed, beta=beta)
    h_ref = ref.train_rlhf(t_ref, ref.init_policy(), rm_weights, 2000, seed, beta=beta)
    assert_history_equal(h_api, h_ref)
    assert_policy_close(t_api, t_ref)
    assert api.expected_score(t_api, rm_weights) == pytest.approx(ref.expected_score(t_ref, rm_weights), rel=1e-9)


# ------------------------------------- numpy [3, 8] policies against the same dicts


@given(
    theta=policies(-10, 10),
    ref_policy=policies(-10, 10),
    ref_as_array=st.booleans(),
    w=weight_dicts(),
    prompt=prompts,
    seed=seeds(),
    eps=floats(0.01, 0.5),
    beta=floats(0.0, 2.0),
    lr=floats(1e-3, 0.5),
    ppo_epochs=st.integers(1, 6),
)
def test_rlhf_step_numpy_policy(theta, ref_policy, ref_as_array, w, prompt, seed, eps, beta, lr, ppo_epochs):
    arr = policy_array(theta)
    ref_arg = policy_array(ref_policy) if ref_as_array else ref_policy
    t_ref = copy_policy(theta)
    r_api, r_ref = rng_pair(seed)
    got = api.rlhf_step(arr, ref_arg, w, prompt, r_api, eps, beta, lr, ppo_epochs)
    expected = ref.rlhf_step(t_ref, ref_policy, w, prompt, r_ref, eps, beta, lr, ppo_epochs)
    assert_step_output_equal(got, expected)
    assert_close(arr, policy_array(t_ref))  # mutated in place, only the prompt's row
    assert r_api.getstate() == r_ref.getstate()


@given(
    theta=policies(-10, 10),
    ref_policy=policies(-10, 10),
    x=prompts,
    y_pos=responses(vocab_only=True, min_tokens=1),
    y_neg=responses(vocab_only=True, min_tokens=1),
    beta=floats(1e-3, 5.0),
    lr=floats(1e-3, 0.5),
)
def test_dpo_step_numpy_policy(theta, ref_policy, x, y_pos, y_neg, beta, lr):
    arr, ref_arr = policy_array(theta), policy_array(ref_policy)
    t_ref = copy_policy(theta)
    assert_close(api.dpo_step(arr, ref_arr, x, y_pos, y_neg, beta, lr), ref.dpo_step(t_ref, ref_policy, x, y_pos, y_neg, beta, lr))
    assert_close(arr, policy_array(t_ref))


@given(
    theta=policies(-5, 5),
    ref_policy=policies(-5, 5),
    seed=seeds(),
    beta=floats(0.0, 2.0),
    ppo_epochs=st.integers(1, 8),
    steps=st.integers(1, 300),
    kl_ctl=st.sampled_from(["fixed", "adaptive", "doubling"]),
)
def test_train_rlhf_numpy_policy(rm_weights, theta, ref_policy, seed, beta, ppo_epochs, steps, kl_ctl):
    arr = policy_array(theta)
    t_ref = copy_policy(theta)
    kw = dict(beta=beta, ppo_epochs=ppo_epochs, kl_ctl=kl_ctl, target=0.5, horizon=100.0)
    (status_api, h_api), warned_api = run_train_rlhf(api, arr, policy_array(ref_policy), rm_weights, steps, seed, **kw)
    (status_ref, h_ref), warned_ref = run_train_rlhf(ref, t_ref, ref_policy, rm_weights, steps, seed, **kw)
    assert status_api == status_ref
    if status_ref == "ok":
        assert_history_equal(h_api, h_ref)
    assert warned_api == warned_ref
    assert_close(arr, policy_array(t_ref))


@given(theta=policies(-50, 50, extreme=True), w=weight_dicts())
def test_expected_score_numpy_policy(theta, w):
    assert_close(api.expected_score(policy_array(theta), w), ref.expected_score(theta, w))


def test_numpy_theta_train_rlhf_acceptance_subset(rm_weights):
    """A few acceptance runs through the numpy path (the researcher's entry point)."""
    for seed in range(5):
        arr = np.zeros((3, V))
        t_ref = ref.init_policy()
        h_api = api.train_rlhf(arr, np.zeros((3, V)), rm_weights, 2000, seed, beta=0.1)
        h_ref = ref.train_rlhf(t_ref, ref.init_policy(), rm_weights, 2000, seed, beta=0.1)
        assert_history_equal(h_api, h_ref)
        assert_close(arr, policy_array(t_ref))
