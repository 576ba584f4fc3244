"""PPO on token sequences as TRL runs it (issue 11): the Rust engine against its reference twin,
against mathematics, and the phenomenon over seeds.

1. Differential (hypothesis): one update's terms on stored responses (per-token KL and rewards,
   GAE, returns, whitening, the clipped losses, TRL's statistics, the gradients) and whole short
   runs of the sweep. The engine's rows are vectorised (floats within a few ulps of the twin's);
   a run's final logits within 1e-9 also say that every sampled token was the same (one
   different token moves a row's gradient by far more), and the histories' content lengths and
   EOS counts are compared exactly.
2. Mathematics: GAE against the direct sum of discounted TD errors; whitening's mean 0 and
   unbiased variance 1 over the valid tokens, padding left at 0; the policy and value
   gradients against finite differences of the loss.
3. The phenomenon over seeds: with a reward model that likes some tokens, PPO raises the exact
   expected score, and a larger ``kl_coef`` ends at a smaller exact sequence KL (both computed
   here from the final logits, by the contract's formulas).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import RUST, rust_only
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_fast.reference.engines import token_ppo as ref_engine
from rlhf_fast.reference.methods import token_ppo as ref_methods
from rlhf_fast.token_ppo import sweep_token_ppo_arrays

if RUST:
    from rlhf_fast import _core


def random_world(seed: int, n_prompts: int, max_len: int, vocab: int, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    ref_logits = rng.normal(size=(n_prompts, max_len, vocab)) * scale
    w = rng.normal(size=vocab)
    w[0] = 0.0
    g = rng.normal(size=vocab)
    g[0] = 0.0
    return ref_logits, w, rng.normal(size=n_prompts), float(rng.normal()), g, rng.normal(size=n_prompts)


def random_responses(rng: np.random.Generator, n: int, max_len: int, vocab: int) -> np.ndarray:
    """Stored responses in the contract's layout: the first EOS ends one, -1 after it."""
    tokens = np.full((n, max_len), -1, dtype=np.int64)
    for b in range(n):
        if rng.random() < 0.7:  # ends with EOS
            length = int(rng.integers(1, max_len + 1))
            tokens[b, :length] = rng.integers(1, vocab, size=length)
            tokens[b, length - 1] = 0
        else:  # truncated: max_len content tokens
            tokens[b] = rng.integers(1, vocab, size=max_len)
    return tokens


def batch_inputs(seed: int, n_prompts: int, max_len: int, vocab: int, batch: int, drift: float):
    batch = max(batch, 2)  # whitening needs two tokens
    rng = np.random.default_rng(seed)
    ref_logits = rng.normal(size=(n_prompts, max_len, vocab))
    old_theta = ref_logits + rng.normal(size=ref_logits.shape) * 0.5
    theta = old_theta + rng.normal(size=ref_logits.shape) * drift
    old_values = rng.normal(size=(n_prompts, max_len))
    values = old_values + rng.normal(size=old_values.shape) * drift
    prompts = rng.integers(0, n_prompts, size=batch).astype(np.int64)
    tokens = random_responses(rng, batch, max_len, vocab)
    scores = rng.normal(size=batch) * 2
    return ref_logits, old_theta, theta, old_values, values, prompts, tokens, scores


def reference_terms(ref_logits, old_theta, theta, old_values, values, prompts, tokens, scores, kl_coef=0.05,
                    **settings_):
    n_prompts, _, vocab = ref_logits.shape
    world = ref_methods.TokenWorld.new(ref_logits, np.zeros(vocab), np.zeros(n_prompts), 0.0, np.zeros(vocab),
                                       np.zeros(n_prompts), False)
    lengths = ref_methods.response_lengths(tokens, vocab)
    responses = [list(row[:n]) for row, n in zip(tokens.tolist(), lengths)]
    params = ref_methods.TokenPpoParams(**settings_)
    return ref_methods.batch_loss_and_grads(world, old_theta.tolist(), theta.tolist(), old_values.tolist(),
                                            values.tolist(), prompts.tolist(), responses, scores.tolist(), kl_coef,
                                            params)


def padded(rows, max_len):
    return np.array([list(r) + [0.0] * (max_len - len(r)) for r in rows])


# ------------------------------------------------------------------------------ differential


@rust_only
@settings(max_examples=25)
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(2, 5), st.integers(1, 6)),
    drift=st.sampled_from([0.0, 0.05, 0.5]),
    kl_coef=st.sampled_from([0.0, 0.05, 1.0]),
    kl_estimator=st.sampled_from(["k1", "k3"]),
    gamma=st.sampled_from([1.0, 0.9]),
    lam=st.sampled_from([0.95, 0.0, 1.0]),
)
def test_one_updates_terms_are_the_references(seed, shape, drift, kl_coef, kl_estimator, gamma, lam):
    inputs = batch_inputs(seed, *shape, drift)
    max_len = shape[1]
    ours = _core.token_ppo_batch_terms(*inputs, kl_coef=kl_coef, gamma=gamma, lam=lam, kl_estimator=kl_estimator)
    theirs = reference_terms(*inputs, kl_coef=kl_coef, gamma=gamma, lam=lam, kl_estimator=kl_estimator)
    for key in ("kl", "rewards", "raw_advantages", "advantages", "returns"):
        np.testing.assert_allclose(ours[key], padded(getattr(theirs, key), max_len), rtol=1e-9, atol=1e-9,
                                   err_msg=key)
    for key in ("pg_loss", "vf_loss", "loss", "pg_clipfrac", "vf_clipfrac", "approxkl", "ratio_mean", "entropy_mean"):
        np.testing.assert_allclose(ours[key], getattr(theirs.outcome, key), rtol=1e-9, atol=1e-12, err_msg=key)
    np.testing.assert_allclose(ours["grad_theta"], theirs.outcome.grad_theta, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours["grad_values"], theirs.outcome.grad_values, rtol=1e-9, atol=1e-12)


@rust_only
@settings(max_examples=12)
@given(
    seed=st.integers(0, 2**32 - 1),
    run_seed=st.integers(0, 2**40),
    shape=st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(2, 5)),
    batch=st.sampled_from([(2, 1), (4, 2), (6, 3), (5, 1)]),
    kl_estimator=st.sampled_from(["k1", "k3"]),
    epochs=st.integers(1, 3),
    remedy=st.sampled_from([{}, {"length_normalize": True}, {"length_penalty": 0.3}, {"missing_eos_penalty": 1.0}]),
    steps=st.integers(1, 4),
)
def test_whole_runs_are_the_references(seed, run_seed, shape, batch, kl_estimator, epochs, remedy, steps):
    world = random_world(seed, *shape, scale=2.0)
    batch_size, mini = batch
    runs = [(run_seed, 0.05, 0.5), (run_seed + 1, 0.5, 2.0)]
    kwargs = dict(batch_size=batch_size, num_mini_batches=mini, kl_estimator=kl_estimator, num_ppo_epochs=epochs,
                  **remedy)
    ours = _core.sweep_token_ppo(*world, True, steps, runs, **kwargs)
    theirs = ref_engine.sweep_token_ppo(*world, True, steps, runs, **kwargs)
    assert ours["history_fields"] == theirs["history_fields"]
    exact = [ours["history_fields"].index(f) for f in ("val_num_eos_tokens", "mean_length")]
    np.testing.assert_array_equal(ours["history"][:, exact], theirs["history"][:, exact])
    for key in ("history", "final_params", "summary"):
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-9, atol=1e-9, err_msg=key)


# ------------------------------------------------------------------------------ mathematics


def terms(*inputs, **kwargs):
    """One update's terms from the backend under test (the reference on the python backend)."""
    if RUST:
        return _core.token_ppo_batch_terms(*inputs, **kwargs)
    out = reference_terms(*inputs, **kwargs)
    max_len = inputs[0].shape[1]
    result = {key: padded(getattr(out, key), max_len)
              for key in ("kl", "rewards", "raw_advantages", "advantages", "returns")}
    result.update(out.outcome._asdict())
    result["grad_theta"] = np.array(out.outcome.grad_theta)
    result["grad_values"] = np.array(out.outcome.grad_values)
    return result


@pytest.mark.parametrize("seed", range(4))
def test_gae_is_the_discounted_sum_of_td_errors_and_whitening_is_masked(seed):
    inputs = batch_inputs(seed, 2, 5, 4, 6, 0.0)
    _, _, _, old_values, _, prompts, tokens, _ = inputs
    gamma, lam = 0.9, 0.8
    out = terms(*inputs, gamma=gamma, lam=lam)
    valid = tokens >= 0
    for b, p in enumerate(prompts):
        n = int(valid[b].sum())
        r = out["rewards"][b, :n]
        v = old_values[p, :n]
        nxt = np.append(v[1:], 0.0)
        delta = r + gamma * nxt - v
        direct = [sum((gamma * lam) ** (k - t) * delta[k] for k in range(t, n)) for t in range(n)]
        np.testing.assert_allclose(out["raw_advantages"][b, :n], direct, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(out["returns"][b, :n], out["raw_advantages"][b, :n] + v, rtol=1e-12, atol=1e-12)
        assert (out["advantages"][b, n:] == 0).all() and (out["raw_advantages"][b, n:] == 0).all()
        # the score sits on the last real token, the KL penalty on every token
        np.testing.assert_allclose(r[:-1], -0.05 * out["kl"][b, : n - 1], rtol=1e-12, atol=1e-15)
    whitened = out["advantages"][valid]
    assert abs(whitened.mean()) < 1e-12
    raw = out["raw_advantages"][valid]
    np.testing.assert_allclose(whitened.var(ddof=1), raw.var(ddof=1) / (raw.var(ddof=1) + 1e-8), rtol=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_gradients_are_finite_differences_of_the_loss(seed):
    inputs = list(batch_inputs(seed, 2, 3, 4, 5, 0.05))
    out = terms(*inputs, vf_coef=0.3)
    rng = np.random.default_rng(seed)
    h = 1e-6
    for which, grad in ((2, out["grad_theta"]), (4, out["grad_values"])):
        for flat in rng.choice(inputs[which].size, size=min(8, inputs[which].size), replace=False):
            at = np.unravel_index(flat, inputs[which].shape)
            losses = []
            for sign in (1, -1):
                moved = list(inputs)
                moved[which] = inputs[which].copy()
                moved[which][at] += sign * h
                losses.append(terms(*moved, vf_coef=0.3)["loss"])
            numeric = (losses[0] - losses[1]) / (2 * h)
            assert abs(numeric - grad[at]) < 1e-6 * max(1.0, abs(numeric)), (which, at, numeric, grad[at])


# ------------------------------------------------------------------------------ phenomenon


def exact_stats(theta, ref_logits, w, bias, w_len):
    """Means over prompts of the exact expected score, sequence KL and content length (the
    contract's formulas, with numpy)."""
    def softmax(z):
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    pi, ref = softmax(theta), softmax(ref_logits)
    score = kl = length = 0.0
    for p in range(theta.shape[0]):
        alive = 1.0
        for t in range(theta.shape[1]):
            kl += alive * float(np.sum(pi[p, t] * (np.log(pi[p, t]) - np.log(ref[p, t]))))
            length += alive * (1 - pi[p, t, 0])
            score += alive * float(np.dot(pi[p, t, 1:], w[1:]))
            alive *= 1 - pi[p, t, 0]
    n = theta.shape[0]
    return (float(bias.mean()) + score / n + w_len * length / n), kl / n, length / n


def test_ppo_raises_the_exact_score_and_a_larger_kl_coef_keeps_it_closer():
    rng = np.random.default_rng(7)
    n_prompts, max_len, vocab = 2, 4, 6
    ref_logits = rng.normal(size=(n_prompts, max_len, vocab)) * 0.5
    w = np.array([0.0, 1.0, 1.0, -1.0, -1.0, 0.0])  # likes tokens 1 and 2
    bias, g = np.zeros(n_prompts), w.copy()
    result = sweep_token_ppo_arrays(ref_logits, w, bias, 0.0, g, np.zeros(n_prompts), False, steps=40,
                                    kl_coef=[0.02, 1.0], lr=1.0, seeds=3, batch_size=8, record_every=0)
    start_score, _, _ = exact_stats(ref_logits, ref_logits, w, bias, 0.0)
    final = result.final_theta
    for i in range(2):
        for s in range(3):
            score, kl, length = exact_stats(final[i, s], ref_logits, w, bias, 0.0)
            np.testing.assert_allclose([score, kl, length], [result.runs[k][i, s] for k in
                                       ("final_proxy_score", "final_kl", "final_length")], rtol=1e-9, atol=1e-12)
            if i == 0:
                assert score > start_score + 0.3, (s, score, start_score)
    weak, strong = result.runs["final_kl"]
    assert (strong < weak).all(), (weak, strong)


def test_bad_arguments_are_named():
    world = random_world(0, 2, 3, 4)
    ok = dict(steps=2, batch_size=4)
    with pytest.raises(ValueError, match="num_mini_batches must divide batch_size=4, got 3"):
        sweep_token_ppo_arrays(*world, True, num_mini_batches=3, **ok)
    with pytest.raises(ValueError, match="kl_estimator"):
        sweep_token_ppo_arrays(*world, True, kl_estimator="k2", **ok)
    bad = world[0].copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"ref_logits\[1, 2, 3\] must be finite, got nan"):
        sweep_token_ppo_arrays(bad, *world[1:], True, **ok)
    with pytest.raises(ValueError, match="w must have 4 entries"):
        sweep_token_ppo_arrays(world[0], world[1][:3], *world[2:], True, **ok)
    with pytest.raises(FloatingPointError, match=r"sweep run 0 diverged at step \d+: logits overflowed"):
        sweep_token_ppo_arrays(*world, True, lr=1e300, **ok)
