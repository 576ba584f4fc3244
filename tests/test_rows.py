"""Large-vocabulary row kernels (issue 10, item 6): ``rlhf_fast.rows`` against the reference
twin ``rlhf_fast.reference.kernels.rows``, and the maths both must satisfy.

Differential tests (Rust against the reference) are ``rust_only``; property tests (softmax
sums to 1, KL against the direct two-pass formula, the gradient against finite differences)
and the refusals of bad inputs run on both backends.

Tolerances: probabilities and gradients within 1e-12 relative (1e-300 absolute, for
underflowing entries); log-probabilities within 1e-12 relative or 1e-12 absolute (an entry
near 0 carries the normaliser's absolute rounding); a KL within 1e-12 of the scale its terms
have, ``1 + sum p (|log p| + |log q|)``. Sampled tokens: equal, always.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlhf_fast import rows
from rlhf_fast.reference.kernels import rows as ref
from rlhf_fast.reference.kernels.softmax import log_softmax_row, softmax_row

from conftest import rust_only

REL = 1e-12


def _logits(seed: int, n: int, v: int, scale: float, peaked: bool = False) -> np.ndarray:
    gen = np.random.default_rng(seed)
    z = gen.normal(0.0, scale, size=(n, v))
    if peaked:  # a few dominant tokens, the rest far below (underflowing probabilities)
        z[:, gen.integers(0, v, size=3)] += 50 * scale
    return np.ascontiguousarray(z)


tables = st.builds(
    _logits,
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 4),
    v=st.sampled_from([1, 2, 7, 8, 9, 100, 1023, 1024, 1025, 3000, 4133]),
    scale=st.sampled_from([0.01, 1.0, 5.0, 40.0, 1e4]),
    peaked=st.booleans(),
)


def _close(got, want, rel=REL, abs_=1e-300) -> None:
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    err = np.abs(got - want)
    bound = rel * np.maximum(np.abs(got), np.abs(want)) + abs_
    assert (err <= bound).all(), f"worst {np.max(err - bound):.3e} past the bound"


# ------------------------------------------------------------------------ differential


@rust_only
@given(tables)
def test_softmax_and_log_softmax_match_the_reference(z):
    _close(rows.softmax_rows(z), ref.softmax_rows(z.tolist()))
    _close(rows.log_softmax_rows(z), ref.log_softmax_rows(z.tolist()), abs_=1e-12)


@rust_only
@given(tables, st.integers(0, 2**32 - 1))
def test_kl_matches_the_reference(z, seed):
    z_ref = z + np.random.default_rng(seed).normal(0.0, 1.0, size=z.shape)
    got = rows.kl_rows(z, z_ref)
    for i, (zi, ri) in enumerate(zip(z.tolist(), z_ref.tolist())):
        p, lp, lq = softmax_row(zi), log_softmax_row(zi), log_softmax_row(ri)
        size = 1.0 + sum(pj * (abs(a) + abs(b)) for pj, a, b in zip(p, lp, lq))
        assert abs(got[i] - ref.kl_row(zi, ri)) <= REL * size


def _draws_at_ties(z: np.ndarray, picks: list[tuple[float, int, int]]) -> np.ndarray:
    """For each row a draw: at, or an ulp or two beside, one of the reference's running sums
    (or a plain uniform draw)."""
    u = []
    for row, (plain, k, shift) in zip(z.tolist(), picks):
        if shift == 99:
            u.append(plain)
            continue
        p = softmax_row(row)
        running = 0.0
        for pj in p[: k % len(p) + 1]:
            running += pj
        x = running
        for _ in range(abs(shift)):
            x = math.nextafter(x, math.inf if shift > 0 else -math.inf)
        u.append(min(max(x, 0.0), math.nextafter(1.0, 0.0)))
    return np.array(u)


@rust_only
@given(
    tables,
    st.lists(
        st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 5000), st.sampled_from([-2, -1, 0, 1, 2, 99])),
        min_size=4,
        max_size=4,
    ),
)
def test_sampled_tokens_are_the_references_even_at_ties(z, picks):
    u = _draws_at_ties(z, picks)
    assert rows.sample_rows(z, u).tolist() == ref.sample_rows(z.tolist(), u.tolist())
    w = np.linspace(-1.0, 1.0, z.shape[1])
    step = rows.ppo_batch_step(z, z[::-1].copy(), u, w, 0.3)
    assert step.tokens.tolist() == ref.sample_rows(z.tolist(), u.tolist())


@rust_only
def test_many_rows_sample_the_references_tokens():
    z = _logits(3, 400, 2000, 3.0)
    u = np.random.default_rng(4).random(400)
    assert rows.sample_rows(z, u).tolist() == ref.sample_rows(z.tolist(), u.tolist())


@rust_only
@given(tables, st.integers(0, 2**32 - 1), st.floats(0.0, 2.0))
def test_the_fused_step_matches_the_reference(z, seed, beta):
    gen = np.random.default_rng(seed)
    z_ref = z + gen.normal(0.0, 0.5, size=z.shape)
    u = gen.random(z.shape[0])
    w = gen.normal(0.0, 1.0, size=z.shape[1])
    got = rows.ppo_batch_step(z, z_ref, u, w, beta)
    tokens, kl, reward, p_token, grad = ref.ppo_batch_step(z.tolist(), z_ref.tolist(), u.tolist(), w.tolist(), beta)
    assert got.tokens.tolist() == tokens
    _close(got.p_token, p_token)
    for i in range(z.shape[0]):
        zi, ri = z[i].tolist(), z_ref[i].tolist()
        p, lp, lq = softmax_row(zi), log_softmax_row(zi), log_softmax_row(ri)
        size = 1.0 + sum(pj * (abs(a) + abs(b)) for pj, a, b in zip(p, lp, lq))
        assert abs(got.kl[i] - kl[i]) <= REL * size
        assert abs(got.reward[i] - reward[i]) <= REL * (abs(w[tokens[i]]) + beta * size)
        # The gradient is reward * (onehot - p): its error is the reward's plus p's, relative
        # off the token; at the token, 1 - p_a keeps p_a's absolute error, which is all of
        # 1 - p_a's when p_a is next to 1 (no implementation that does not round p_a exactly
        # as the reference does can be closer).
        g = got.grad[i] / got.reward[i] if got.reward[i] else got.grad[i]
        want = np.array(grad[i]) / reward[i] if reward[i] else np.array(grad[i])
        a = tokens[i]
        _close(np.delete(g, a), np.delete(want, a), rel=REL * size, abs_=REL * size * 1e-300)
        assert abs(g[a] - want[a]) <= REL * size * abs(want[a]) + REL * max(1.0, abs(want[a]))


@rust_only
@given(tables, st.integers(0, 2**32 - 1), st.floats(0.05, 0.5))
def test_the_gradient_matches_the_reference(z, seed, eps):
    gen = np.random.default_rng(seed)
    n, v = z.shape
    tokens = gen.integers(0, v, size=n)
    p = np.array(ref.softmax_rows(z.tolist()))
    p_old = np.clip(p[np.arange(n), tokens] * gen.choice([0.5, 0.9, 1.0, 1.1, 2.0], size=n), 1e-300, 1.0)
    adv = gen.normal(0.0, 1.0, size=n)
    got = rows.ppo_grad_rows(z, tokens, p_old, adv, eps)
    want = ref.ppo_grad_rows(z.tolist(), tokens.tolist(), p_old.tolist(), adv.tolist(), eps)
    _close(got, want)


@rust_only
def test_a_vocabulary_of_65536_matches_the_reference():
    z = _logits(5, 2, 65536, 4.0)
    z_ref = _logits(6, 2, 65536, 4.0)
    u = np.array([0.3, 0.97])
    w = np.random.default_rng(7).normal(size=65536)
    got = rows.ppo_batch_step(z, z_ref, u, w, 0.1)
    tokens, kl, reward, _, grad = ref.ppo_batch_step(z.tolist(), z_ref.tolist(), u.tolist(), w.tolist(), 0.1)
    assert got.tokens.tolist() == tokens
    _close(got.kl, kl, rel=1e-12)
    _close(got.grad, grad, rel=1e-12)


@rust_only
@given(tables, st.integers(0, 2**32 - 1), st.floats(0.0, 2.0))
def test_the_fused_step_given_the_references_log_softmax_matches_the_reference(z, seed, beta):
    gen = np.random.default_rng(seed)
    z_ref = z + gen.normal(0.0, 0.5, size=z.shape)
    lq = np.array(ref.log_softmax_rows(z_ref.tolist()))
    u = gen.random(z.shape[0])
    w = gen.normal(0.0, 1.0, size=z.shape[1])
    got = rows.ppo_batch_step(z, lq, u, w, beta, ref_normalized=True)
    tokens, kl, reward, p_token, grad = ref.ppo_batch_step(z.tolist(), lq.tolist(), u.tolist(), w.tolist(), beta, True)
    assert got.tokens.tolist() == tokens
    assert got.tokens.tolist() == rows.ppo_batch_step(z, z_ref, u, w, beta).tokens.tolist()
    _close(got.p_token, p_token)
    for i in range(z.shape[0]):
        p, lp = softmax_row(z[i].tolist()), log_softmax_row(z[i].tolist())
        size = 1.0 + sum(pj * (abs(a) + abs(b)) for pj, a, b in zip(p, lp, lq[i]))
        assert abs(got.kl[i] - kl[i]) <= REL * size


@rust_only
def test_results_do_not_depend_on_the_thread_count():
    z = _logits(21, 9, 5000, 3.0)
    z_ref = _logits(22, 9, 5000, 3.0)
    u = np.random.default_rng(23).random(9)
    w = np.random.default_rng(24).normal(size=5000)
    one = rows.ppo_batch_step(z, z_ref, u, w, 0.1, n_threads=1)
    for n_threads in (2, 3, None):
        other = rows.ppo_batch_step(z, z_ref, u, w, 0.1, n_threads=n_threads)
        for a, b in zip(one, other):
            assert np.array_equal(a, b)
    assert np.array_equal(rows.softmax_rows(z, n_threads=1), rows.softmax_rows(z, n_threads=4))
    assert np.array_equal(rows.kl_rows(z, z_ref, n_threads=1), rows.kl_rows(z, z_ref, n_threads=2))


# -------------------------------------------------------------------------- properties


@given(tables)
def test_softmax_rows_sum_to_one_and_log_softmax_is_its_log(z):
    p = rows.softmax_rows(z)
    assert np.allclose(p.sum(axis=1), 1.0, rtol=0.0, atol=1e-12)
    assert (p >= 0.0).all()
    lp = rows.log_softmax_rows(z)
    assert (lp <= 1e-12).all()
    visible = p > 1e-300
    _close(np.exp(lp[visible]), p[visible], rel=1e-11)


@given(tables, st.integers(0, 2**32 - 1))
def test_kl_is_the_direct_two_pass_sum(z, seed):
    z_ref = z + np.random.default_rng(seed).normal(0.0, 2.0, size=z.shape)
    got = rows.kl_rows(z, z_ref)
    for i in range(z.shape[0]):
        # Two passes with numpy: log-softmax of each row, then sum p (log p - log q).
        lp = z[i] - z[i].max()
        lp -= np.log(np.exp(lp).sum())
        lq = z_ref[i] - z_ref[i].max()
        lq -= np.log(np.exp(lq).sum())
        p = np.exp(lp)
        direct = math.fsum(p * (lp - lq))
        size = 1.0 + math.fsum(p * (np.abs(lp) + np.abs(lq)))
        assert abs(got[i] - direct) <= 1e-12 * size * max(1.0, math.log(z.shape[1]))
        assert got[i] >= -1e-12 * size
    assert np.all(np.abs(rows.kl_rows(z, z.copy())) <= 1e-12)


def _surrogate(z, a, p_old, adv, eps):
    p = np.exp(z - z.max())
    ratio = p[a] / p.sum() / p_old
    return min(ratio * adv, min(max(ratio, 1 - eps), 1 + eps) * adv)


@given(st.integers(0, 2**32 - 1), st.integers(2, 300), st.floats(-2.0, 2.0), st.sampled_from([0.5, 0.95, 1.0, 1.1, 3.0]))
def test_the_gradient_is_the_surrogates_finite_difference(seed, v, adv, old_scale):
    gen = np.random.default_rng(seed)
    z = gen.normal(0.0, 1.0, size=(1, v))
    a = int(gen.integers(0, v))
    p = np.exp(z[0] - z[0].max())
    p /= p.sum()
    p_old = min(p[a] * old_scale, 1.0)
    ratio = p[a] / p_old
    eps = 0.2
    if min(abs(ratio - 1 - eps), abs(ratio - 1 + eps)) < 1e-3:
        return  # the surrogate has a kink there
    g = rows.ppo_grad_rows(z, np.array([a]), np.array([p_old]), np.array([adv]), eps)[0]
    h = 1e-6
    for j in {0, a, v - 1, int(gen.integers(0, v))}:
        up, down = z[0].copy(), z[0].copy()
        up[j] += h
        down[j] -= h
        numeric = (_surrogate(up, a, p_old, adv, eps) - _surrogate(down, a, p_old, adv, eps)) / (2 * h)
        assert abs(g[j] - numeric) <= 1e-6 * (1 + abs(numeric)), (j, g[j], numeric)


def test_the_fused_step_is_its_parts():
    z = _logits(11, 5, 3001, 3.0)
    z_ref = _logits(12, 5, 3001, 3.0)
    u = np.random.default_rng(13).random(5)
    w = np.random.default_rng(14).normal(size=3001)
    step = rows.ppo_batch_step(z, z_ref, u, w, 0.2)
    assert step.tokens.tolist() == rows.sample_rows(z, u).tolist()
    _close(step.kl, rows.kl_rows(z, z_ref), rel=0.0, abs_=0.0)
    _close(step.reward, w[step.tokens] - 0.2 * step.kl, rel=1e-15)
    p = rows.softmax_rows(z)
    onehot = np.zeros_like(p)
    onehot[np.arange(5), step.tokens] = 1.0
    _close(step.grad, step.reward[:, None] * (onehot - p), rel=1e-12)
    _close(step.p_token, p[np.arange(5), step.tokens], rel=1e-15)
    out = np.full_like(z, 7.0)
    again = rows.ppo_batch_step(z, z_ref, u, w, 0.2, out=out)
    assert again.grad is out
    _close(out, step.grad, rel=0.0, abs_=0.0)


def test_the_stream_sum_adds_both_tables():
    a, b = np.arange(12.0).reshape(3, 4), np.full((2, 2), 0.25)
    assert rows.stream_sum(a, b) == 67.0
    assert rows.stream_sum(a, b, n_threads=1) == 67.0


def test_the_stream_add_adds_entry_by_entry():
    a = np.arange(3 * 70001.0).reshape(3, 70001)
    b = np.full((3, 70001), 0.5)
    assert np.array_equal(rows.stream_add(a, b), a + b)
    out = np.empty((3, 70001))
    assert rows.stream_add(a, b, out, n_threads=1) is out
    assert np.array_equal(out, a + b)


@given(tables, st.integers(0, 2**32 - 1))
def test_kl_given_the_references_log_softmax_is_the_kl(z, seed):
    z_ref = z + np.random.default_rng(seed).normal(0.0, 2.0, size=z.shape)
    lq = rows.log_softmax_rows(z_ref)
    given = rows.kl_rows(z, lq, ref_normalized=True)
    full = rows.kl_rows(z, z_ref)
    for i in range(z.shape[0]):
        p, lp = softmax_row(z[i].tolist()), log_softmax_row(z[i].tolist())
        size = 1.0 + sum(pj * (abs(a) + abs(b)) for pj, a, b in zip(p, lp, lq[i]))
        assert abs(given[i] - full[i]) <= 2 * REL * size


# ----------------------------------------------------------------------------- refusals

Z = np.zeros((2, 3))
U = np.array([0.1, 0.2])
W = np.zeros(3)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: rows.softmax_rows([[0.0, 1.0]]), TypeError, "logits must be a 2-D numpy float64 array, got list"),
        (lambda: rows.softmax_rows(np.zeros((2, 3), dtype=np.int64)), TypeError, "got a 2-D int64 array"),
        (lambda: rows.log_softmax_rows(np.zeros(3)), TypeError, "logits must be a 2-D"),
        (lambda: rows.softmax_rows(np.zeros((3, 4))[:, ::2]), ValueError, "logits must be C-contiguous"),
        (lambda: rows.softmax_rows(np.zeros((0, 4))), ValueError, "logits must not be empty"),
        (lambda: rows.softmax_rows(np.array([[0.0, 1.0], [2.0, np.nan]])), ValueError,
         "logits[1, 1] must be finite, got nan"),
        (lambda: rows.log_softmax_rows(np.array([[np.inf, 1.0]])), ValueError, "logits[0, 0] must be finite, got inf"),
        (lambda: rows.kl_rows(Z, np.zeros((2, 4))), ValueError, "ref_logits must have the shape of logits [2, 3]"),
        (lambda: rows.kl_rows(Z, np.array([[0.0, 0, 0], [0, -np.inf, 0]])), ValueError,
         "ref_logits[1, 1] must be finite, got -inf"),
        (lambda: rows.sample_rows(Z, [0.1, 0.2]), TypeError, "u must be a 1-D numpy float64 array, got list"),
        (lambda: rows.sample_rows(Z, np.array([0.1])), ValueError, "u must have 2 entries, got 1"),
        (lambda: rows.sample_rows(Z, np.array([0.1, 1.0])), ValueError, "u[1] must be in [0, 1), got 1.0"),
        (lambda: rows.sample_rows(Z, np.array([np.nan, 0.5])), ValueError, "u[0] must be in [0, 1), got nan"),
        (lambda: rows.ppo_grad_rows(Z, np.array([0, 3]), U, U), ValueError, "tokens[1] must be in [0, 3), got 3"),
        (lambda: rows.ppo_grad_rows(Z, np.array([0.0, 1.0]), U, U), TypeError, "tokens must be a 1-D numpy int64"),
        (lambda: rows.ppo_grad_rows(Z, np.array([0, 1]), np.array([0.0, 1.0]), U), ValueError,
         "p_old[0] must be in (0, 1], got 0.0"),
        (lambda: rows.ppo_grad_rows(Z, np.array([0, 1]), U, np.array([1.0, np.inf])), ValueError,
         "advantages[1] must be finite, got inf"),
        (lambda: rows.ppo_grad_rows(Z, np.array([0, 1]), U, U, eps=0.0), ValueError,
         "eps must be finite and > 0, got 0.0"),
        (lambda: rows.ppo_grad_rows(Z, np.array([0, 1]), U, U, eps="0.2"), TypeError, "eps must be a real number"),
        (lambda: rows.ppo_batch_step(Z, Z, U, np.zeros(4)), ValueError, "weights must have 3 entries, got 4"),
        (lambda: rows.ppo_batch_step(Z, Z, U, np.array([0.0, np.nan, 0.0])), ValueError,
         "weights[1] must be finite, got nan"),
        (lambda: rows.ppo_batch_step(Z, Z, U, W, beta=-1.0), ValueError, "beta must be finite and >= 0, got -1.0"),
        (lambda: rows.ppo_batch_step(Z, Z, U, W, out=np.zeros((2, 4))), ValueError, "out must be a C-contiguous"),
        (lambda: rows.ppo_batch_step(Z, Z.copy(), U, W, out=Z), ValueError, "out must be writeable and share no"),
        (lambda: rows.ppo_batch_step(Z, np.zeros((2, 3), dtype=np.float32), U, W), TypeError,
         "ref_logits must be a 2-D numpy float64 array, got a 2-D float32 array"),
        (lambda: rows.ppo_batch_step(Z, np.array([[-1.0, -2.0, -3.0], [-1.0, 0.5, -3.0]]), U, W, ref_normalized=True),
         ValueError, "ref_logits[1, 1] must be <= 0 with ref_normalized=True (a log-softmax"),
        (lambda: rows.kl_rows(Z, np.array([[0.0, 0.0, 1e-9], [0.0, 0.0, 0.0]]), ref_normalized=True), ValueError,
         "ref_logits[0, 2] must be <= 0 with ref_normalized=True"),
        (lambda: rows.kl_rows(Z, Z, ref_normalized="yes"), TypeError, "ref_normalized must be a bool, got str"),
        (lambda: rows.softmax_rows(Z, n_threads=0), ValueError, "n_threads must be >= 1, got 0"),
        (lambda: rows.sample_rows(Z, U, n_threads=1.5), TypeError, "n_threads must be an int, got float"),
        (lambda: rows.stream_add(Z, np.zeros((3, 2))), ValueError, "b must have the shape of a [2, 3], got [3, 2]"),
        (lambda: rows.stream_add(Z, Z, np.zeros((2, 4))), ValueError, "out must be a C-contiguous array of the shape"),
        (lambda: rows.stream_add(Z, Z.copy(), Z), ValueError, "out must be writeable and share no memory with a or b"),
    ],
)
def test_bad_inputs_are_refused_by_name(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert message in str(info.value)


@rust_only
def test_the_core_refuses_bad_inputs_by_itself():
    from rlhf_fast import _core

    with pytest.raises(TypeError, match="logits must be a 2-D numpy float64 array, got list"):
        _core.rows_softmax([[1.0]])
    with pytest.raises(ValueError, match=r"u\[0\] must be in \[0, 1\), got -0.5"):
        _core.rows_sample(Z, np.array([-0.5, 0.1]))
    with pytest.raises(ValueError, match="out must be writeable and share no memory"):
        _core.rows_ppo_batch_step(Z, Z, U, W, 0.1, Z)
    with pytest.raises(ValueError, match="tokens"):
        _core.rows_ppo_grad(Z, np.array([-1, 0]), U, U)
    with pytest.raises(ValueError, match=r"ref_logits\[0, 1\] must be <= 0 with ref_normalized=True"):
        _core.rows_kl(Z, np.array([[0.0, 2.0, 0.0], [0.0, 0.0, 0.0]]), ref_normalized=True)
    with pytest.raises(ValueError, match="b must have the shape of a"):
        _core.rows_stream_add(Z, np.zeros((3, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="out must be writeable and share no memory with a or b"):
        _core.rows_stream_add(Z, Z, Z)


@rust_only
def test_the_core_log_softmax_and_stream_sum_are_the_reference_twins():
    from rlhf_fast import _core
    from rlhf_fast.reference.kernels import rows as ref_rows

    z = np.random.default_rng(0).normal(scale=5.0, size=(3, 70))
    np.testing.assert_allclose(_core.rows_log_softmax(z), ref_rows.log_softmax_rows(z.tolist()), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_core.rows_stream_sum(z, 2 * z), ref_rows.stream_sum(z.tolist(), (2 * z).tolist()), rtol=1e-12)
    with pytest.raises(TypeError, match="logits must be a 2-D numpy float64 array, got list"):
        _core.rows_log_softmax([[1.0]])
