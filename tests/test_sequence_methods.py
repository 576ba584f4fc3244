"""DPO (with IPO) and Best-of-N on sequence worlds (issue 11): the Rust engines against their
reference twins, against mathematics, and the phenomena over seeds.

1. Differential (hypothesis): whole sweeps of small random worlds and pairs on both engines;
   the twins compute every float in the same order, so the arrays agree bit for bit (the
   final logits of DPO, the means of Best-of-N's kept responses, whose equality to the last
   bit says every sampled token was the same).
2. Mathematics: the DPO step is ``lr`` times the gradient of the loss (finite differences of
   the sum-over-tokens log-probability, for every loss type, IPO with each log-ratio over its
   response's length, EOS included); Best-of-N's kept responses against the exact law of the
   first argmax, enumerated over every response of a ``V = 3``, ``L = 2`` world.
3. Phenomena over seeds: DPO on length-biased labels lengthens the responses, whether the
   loss is the sigmoid or IPO's length-normalised one (measured: IPO's normalisation does not
   stop it, METHODS section 12), while fair labels do not; Best-of-N's proxy rises with ``n``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
from conftest import RUST, rust_only
from hypothesis import given, settings
from hypothesis import strategies as st

import rlhf_fast as rl
from rlhf_fast.reference.engines import sequence_best_of_n as ref_bon
from rlhf_fast.reference.engines import sequence_dpo as ref_dpo
from rlhf_fast.reference.kernels.softmax import log_softmax_row
from rlhf_fast.reference.methods.dpo import DpoParams
from rlhf_fast.sequence_sweeps import _world_arrays
from rlhf_fast.sequences import SequenceRewardModel, SequenceWorld, train_sequence_reward_model
from rlhf_fast.worlds import Labeller

if RUST:
    from rlhf_fast import _core


def small_world(seed: int, n_prompts: int, vocab: int, max_len: int) -> SequenceWorld:
    return SequenceWorld(n_prompts=n_prompts, vocab=vocab, max_len=max_len, seed=seed)


def random_rm(world: SequenceWorld, seed: int) -> SequenceRewardModel:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=world.vocab)
    w[0] = 0.0
    return SequenceRewardModel(w, float(rng.normal()), rng.normal(size=world.n_prompts))


def pair_arrays(pairs):
    return (np.asarray(pairs.prompts, dtype=np.int64), np.asarray(pairs.first, dtype=np.int64),
            np.asarray(pairs.second, dtype=np.int64), np.asarray(pairs.target, dtype=np.float64))


# ------------------------------------------------------------------------- 1. differential


@rust_only
@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n_prompts=st.integers(1, 3),
    vocab=st.integers(2, 6),
    max_len=st.integers(1, 4),
    n_pairs=st.integers(1, 12),
    flip=st.booleans(),
    with_proxy=st.booleans(),
)
def test_dpo_sweeps_agree_bit_for_bit(seed, n_prompts, vocab, max_len, n_pairs, flip, with_proxy):
    world = small_world(seed, n_prompts, vocab, max_len)
    labeller = Labeller(length_bias=0.5, flip=0.2 if flip else 0.0)
    pairs = world.preferences(n_pairs, seed=seed + 1, labeller=labeller)
    arrays = _world_arrays(world, random_rm(world, seed) if with_proxy else None)
    hard = bool(np.isin(pairs.target, (0.0, 1.0)).all())
    losses = ["sigmoid", "robust", "ipo", "hinge"] if hard else ["sigmoid"]
    runs = [(0.3 + k, 0.4, loss, 0.1 if loss in ("sigmoid", "robust") else 0.0, 1 + k % 2, seed if k % 2 else None)
            for k, loss in enumerate(losses)]
    args = (*arrays, *pair_arrays(pairs), runs)
    rust = _core.sweep_sequence_dpo(*args, with_proxy=with_proxy, record_every=1)
    reference = ref_dpo.sweep_sequence_dpo(*args, with_proxy=with_proxy, record_every=1)
    for key in ("history", "final_params", "summary"):
        np.testing.assert_allclose(rust[key], reference[key], rtol=0, atol=1e-9, err_msg=key)
    assert rust["history_fields"] == reference["history_fields"]
    assert rust["summary_fields"] == reference["summary_fields"]


@rust_only
@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n_prompts=st.integers(1, 3),
    vocab=st.integers(2, 6),
    max_len=st.integers(1, 4),
    n=st.integers(1, 6),
    samples=st.integers(2, 40),
)
def test_best_of_n_sweeps_agree_bit_for_bit(seed, n_prompts, vocab, max_len, n, samples):
    world = small_world(seed, n_prompts, vocab, max_len)
    arrays = _world_arrays(world, random_rm(world, seed))
    runs = [(n, samples, seed), (n + 1, samples, seed + 1)]
    rust = _core.sweep_sequence_best_of_n(*arrays, runs)
    reference = ref_bon.sweep_sequence_best_of_n(*arrays, runs)
    np.testing.assert_array_equal(rust["summary"], reference["summary"])
    assert rust["summary_fields"] == reference["summary_fields"]


# ---------------------------------------------------------------------------- 2. mathematics


def sequence_logp(theta, tokens):
    return sum(log_softmax_row(theta[t])[a] for t, a in enumerate(tokens))


@pytest.mark.parametrize("loss_type,smoothing", [("sigmoid", 0.0), ("sigmoid", 0.2), ("robust", 0.1),
                                                 ("ipo", 0.0), ("hinge", 0.0)])
def test_the_dpo_step_is_lr_times_the_gradient_of_the_loss(loss_type, smoothing):
    rng = np.random.default_rng(3)
    max_len, vocab = 4, 5
    theta = rng.normal(size=(max_len, vocab))
    ref = rng.normal(size=(max_len, vocab))
    ref_logp = [log_softmax_row(row) for row in ref.tolist()]
    chosen, rejected = [3, 1, 1, 0], [2, 0]  # the EOS counts as a token; the padding does not
    params = DpoParams.new(0.7, 1e-3, loss_type, smoothing)

    def loss(th):
        pos = sequence_logp(th, chosen) - sum(ref_logp[t][a] for t, a in enumerate(chosen))
        neg = sequence_logp(th, rejected) - sum(ref_logp[t][a] for t, a in enumerate(rejected))
        u = pos / len(chosen) - neg / len(rejected) if loss_type == "ipo" else pos - neg
        return replace(params, label_smoothing=smoothing).loss_and_step(u)[0]

    stepped = theta.tolist()
    ref_dpo.sequence_dpo_update(stepped, ref_logp, chosen, rejected, smoothing, params)
    gradient = (theta - np.array(stepped)) / params.lr
    h = 1e-6
    for t, v in itertools.product(range(max_len), range(vocab)):
        up, down = theta.copy(), theta.copy()
        up[t, v] += h
        down[t, v] -= h
        fd = (loss(up.tolist()) - loss(down.tolist())) / (2 * h)
        assert gradient[t, v] == pytest.approx(fd, abs=1e-6), (t, v)
    if loss_type != "ipo":  # where both responses reach, the policy's terms cancel: only their tokens move
        assert all(gradient[t, v] == 0.0 for t in range(2) for v in range(vocab) if v not in (chosen[t], rejected[t]))


def every_response(max_len: int, vocab: int):
    """Every response of a world: content tokens, then the EOS (or none at ``max_len``)."""
    for n in range(max_len + 1):
        for content in itertools.product(range(1, vocab), repeat=n):
            yield list(content) + ([0] if n < max_len else [])


def test_best_of_n_keeps_the_first_argmax_with_its_exact_law():
    world = small_world(4, 1, 3, 2)
    rm = SequenceRewardModel(np.array([0.0, 0.7, -0.4]), 0.3)  # ties: the same content, any order
    tw = ref_dpo.sequence_world(*_world_arrays(world, rm))
    n, samples = 3, 6000
    spec = ref_bon.SequenceBestOfNRun(n, samples, [11])
    ref_probs = ref_bon.SequenceBestOfNEngine(tw, [spec]).ref_probs
    probs = ref_probs[0]
    responses = list(every_response(2, 3))
    law = []
    for r in responses:
        p = 1.0
        for t, a in enumerate(r):
            p *= probs[t][a]
        law.append(p)
    assert sum(law) == pytest.approx(1.0)
    scores = [tw.rm_score(0, r) for r in responses]
    kept = ref_bon.best_of_n_draws(tw, ref_probs, spec)
    counts = {tuple(r): 0 for r in responses}
    for _, tokens, _ in kept:
        counts[tuple(tokens)] += 1
    for r, p, s in zip(responses, law, scores):
        below = sum(q for q, z in zip(law, scores) if z < s)
        tied = sum(q for q, z in zip(law, scores) if z == s)
        # P(the best score is s) split among the responses scoring s by their own chance
        exact = p / tied * ((below + tied) ** n - below ** n)
        frequency = counts[tuple(r)] / samples
        assert abs(frequency - exact) < 5 * math.sqrt(exact * (1 - exact) / samples) + 1e-3, (r, frequency, exact)


# ----------------------------------------------------------------------------- 3. phenomena


def test_dpo_on_length_biased_labels_lengthens_responses_with_or_without_ipo():
    for seed in range(3):
        world = SequenceWorld(n_prompts=4, vocab=16, max_len=8, seed=seed)
        reference_length = float(world.expected_content_length(world.ref_logits).mean())
        lengths = {}
        for bias in (0.0, 1.0):
            pairs = world.preferences(400, seed=seed + 10, labeller=Labeller(length_bias=bias))
            for loss_type, lr in (("sigmoid", 2.0), ("ipo", 0.02)):
                r = rl.sweep_dpo(pairs, world=world, betas=[0.1], seeds=[seed], epochs=3, lr=lr, loss_type=loss_type,
                                 record_every=0)
                lengths[bias, loss_type] = float(r.runs["final_length"].item())
                assert 0.3 < float(r.runs["final_kl"].item()) < 3.0  # comparable distances from the reference
        for loss_type in ("sigmoid", "ipo"):
            assert lengths[1.0, loss_type] > reference_length + 1.5, (seed, loss_type, lengths)
            assert lengths[0.0, loss_type] < reference_length + 0.5, (seed, loss_type, lengths)


def test_best_of_n_proxy_rises_with_n():
    for seed in range(3):
        world = SequenceWorld(n_prompts=4, vocab=16, max_len=6, seed=seed)
        rm = train_sequence_reward_model(world, world.preferences(300, seed=seed + 1), epochs=2)
        r = rl.sweep_best_of_n(rm, world=world, ns=[1, 4, 16], seeds=[seed], samples=300)
        proxy = r.sampled_proxy_score.ravel()
        assert proxy[0] < proxy[1] < proxy[2], (seed, proxy)
        assert abs(proxy[0] - r.ref_proxy_score.ravel()[0]) < 4 * r.sampled_proxy_score_se.ravel()[0]
        assert r.kl_analytic.ravel().tolist() == pytest.approx([0.0, math.log(4) - 0.75, math.log(16) - 15 / 16])


def test_bad_arguments_are_refused_naming_them():
    world = small_world(0, 2, 4, 3)
    pairs = world.preferences(5, seed=1)
    with pytest.raises(ValueError, match="theta cannot be given with a world"):
        rl.sweep_dpo(pairs, world=world, betas=[0.1], theta=np.zeros((2, 3, 4)))
    with pytest.raises(TypeError, match="pairs must be a SequencePairs"):
        rl.sweep_dpo(SequenceWorld(n_prompts=2, vocab=4, max_len=3), world=world, betas=[0.1])
    with pytest.raises(ValueError, match="samples must be >= 2"):
        rl.sweep_best_of_n(random_rm(world, 0), world=world, ns=[2], samples=1)
    with pytest.raises(ValueError, match="must weigh the world's 4 tokens"):
        rl.sweep_best_of_n(SequenceRewardModel(np.zeros(3)), world=world, ns=[2])
