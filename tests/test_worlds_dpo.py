"""DPO in a world: ``sweep_dpo(pairs, world=...)``, its engine and its bag step (docs/METHODS.md section 7).

1. Differential: the Rust single run and sweep against their reference twins on small random
   worlds with hard and soft labels: pairs visited and prompts identical, floats within 1e-9
   (``rust_only``).
2. Mathematics: the bag step moves the logits along minus ``lr`` times the gradient of its
   loss (finite differences); a soft label is the cross-entropy it claims and a hard label is
   the lesson's step; the recorded gold, KL and proxy are the expectations over every response
   of a tiny world.
3. The phenomenon over three worlds: a smaller beta ends further from the reference, the gold
   rises above the reference's within the first epoch, and at a small beta the gold peaks and
   then falls as the KL keeps growing (over-optimisation of direct alignment, Rafailov et al.
   2024), while at a larger beta it does not.
4. Errors: wrong types, the pairs or reward model of another world, soft labels with a loss
   that has no meaning for them; named, the same message on both backends. Thread counts.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from conftest import RUST, assert_close, floats, outcome, rust_only
from hypothesis import given
from hypothesis import strategies as st

import rlhf_fast as rl
from rlhf_fast import sweep as sweep_module
from rlhf_fast.reference.engines import world_dpo as ref_world_dpo
from rlhf_fast.reference.kernels.logistic import sigmoid
from rlhf_fast.reference.kernels.softmax import log_softmax_row
from rlhf_fast.reference.methods.dpo import DpoParams, bag_dpo_update, dpo_update, pair_label
from rlhf_fast.reference.rng import seed_key
from rlhf_fast.worlds import Judge, Labeller, RewardModel, World, WorldPairs

if RUST:
    from rlhf_fast import _core

STEP_KEYS = ref_world_dpo.STEP_KEYS
MEAN_KEYS = ref_world_dpo.MEAN_KEYS
ENGINES = pytest.mark.parametrize(
    "engines", [sweep_module._engines, sweep_module._ReferenceEngines], ids=["backend", "reference"]
)


def on_engines(engines, **kwargs):
    """``rl.sweep_dpo(**kwargs)`` on ``engines``."""
    saved = sweep_module._engines
    sweep_module._engines = engines
    try:
        return sweep_module.sweep_dpo(**kwargs)
    finally:
        sweep_module._engines = saved


# ----------------------------------------------------------------------- small worlds


@st.composite
def worlds_and_pairs(draw, max_prompts=3, max_vocab=24, max_len=6, max_pairs=12):
    """The bindings' arguments of a small world with labelled pairs: ``(ref_logits, weights or
    None, gold_token, count_once, L, prompts, first, second, target)``; ``target`` hard or soft."""
    n_prompts = draw(st.integers(1, max_prompts))
    vocab = draw(st.integers(2, max_vocab))
    length = draw(st.integers(1, max_len))
    n = draw(st.integers(1, max_pairs))
    rng = np.random.default_rng(draw(st.integers(0, 2**32)))
    ref_logits = draw(st.sampled_from([0.0, 1.0, 4.0])) * rng.standard_normal((n_prompts, vocab))
    weights = None if draw(st.booleans()) else rng.standard_normal(vocab)
    gold = rng.standard_normal((n_prompts, vocab))
    prompts = rng.integers(0, n_prompts, n)
    first = rng.integers(0, vocab, (n, length))
    second = rng.integers(0, vocab, (n, length))
    soft = draw(st.booleans())
    target = rng.random(n) if soft else rng.integers(0, 2, n).astype(np.float64)
    return ref_logits, weights, gold, draw(st.booleans()), length, prompts, first, second, target


dpo_settings = st.fixed_dictionaries({
    "beta": floats(0.01, 2.0),
    "lr": floats(1e-3, 2.0),
    "loss_type": st.sampled_from(["sigmoid", "robust", "ipo", "hinge"]),
    "label_smoothing": st.sampled_from([0.0, 0.0, 0.1, 0.3]),
    "epochs": st.integers(1, 3),
    "seed": st.one_of(st.none(), st.integers(0, 2**40)),
})


def reference_run(args, s):
    """The reference's :func:`train_world_dpo` on the bindings' arguments: ``(history, theta)``."""
    world, pairs, _ = ref_world_dpo.world_and_pairs(*args)
    params = DpoParams.new(s["beta"], s["lr"], s["loss_type"], s["label_smoothing"])
    theta = [list(row) for row in world.ref_logits]
    shuffle = None if s["seed"] is None else seed_key(s["seed"])
    return ref_world_dpo.train_world_dpo(world, theta, pairs, s["epochs"], params, shuffle), np.array(theta)


# ============================================================== 1. Rust against its twin


@rust_only
@given(world=worlds_and_pairs(), s=dpo_settings)
def test_a_world_dpo_run_is_its_reference_twin(world, s):
    status, got = outcome(_core.train_world_dpo, *world, s["epochs"], s["seed"], s["beta"], s["lr"], s["loss_type"],
                          s["label_smoothing"])
    expected_status, expected = outcome(reference_run, world, s)
    assert status == expected_status, (got, expected)
    if status != "ok":
        assert got == expected
        return
    (history, theta), (expected_history, expected_theta) = got, expected
    # The same shuffles: the same pairs visited, in the same order.
    np.testing.assert_array_equal(history["pair"], expected_history["pair"])
    np.testing.assert_array_equal(history["prompt"], expected_history["prompt"])
    for key in STEP_KEYS + MEAN_KEYS:
        assert_close(history[key], expected_history[key], err_msg=key)
    assert_close(theta, expected_theta, err_msg="theta")


@rust_only
@given(world=worlds_and_pairs(), settings=st.lists(dpo_settings, min_size=1, max_size=4),
       record_every=st.integers(0, 4))
def test_a_world_dpo_sweep_is_its_reference_twin(world, settings, record_every):
    runs = [(s["beta"], s["lr"], s["loss_type"], s["label_smoothing"], s["epochs"], s["seed"]) for s in settings]
    status, got = outcome(_core.sweep_world_dpo, *world, runs, record_every=record_every)
    expected_status, expected = outcome(ref_world_dpo.sweep_world_dpo, *world, runs, record_every=record_every)
    assert (status, expected_status) == ("ok", "ok") or (status, got) == (expected_status, expected)
    if status != "ok":
        return
    for key in ("history_fields", "summary_fields"):
        assert got[key] == expected[key]
    for key in ("history", "final_params", "summary"):
        assert got[key].shape == expected[key].shape, key
        assert_close(got[key], expected[key], err_msg=key)


# ====================================================================== 2. mathematics


def bag_loss(logits, logq, first, second, target, params):
    first_is_chosen, smoothing = pair_label(target, params.label_smoothing)
    chosen, rejected = (first, second) if first_is_chosen else (second, first)
    return bag_dpo_update(list(logits), logq, chosen, rejected, smoothing, params).loss


@pytest.mark.parametrize("loss_type, label_smoothing, target", [
    ("sigmoid", 0.0, 1.0), ("sigmoid", 0.0, 0.0), ("sigmoid", 0.2, 1.0), ("sigmoid", 0.0, 0.3),
    ("sigmoid", 0.1, 0.85), ("sigmoid", 0.0, 0.5), ("robust", 0.3, 0.0), ("ipo", 0.0, 1.0), ("hinge", 0.0, 0.0),
])
def test_the_bag_step_follows_the_gradient_of_its_loss(loss_type, label_smoothing, target):
    rng = np.random.default_rng(3)
    logits = rng.standard_normal(7).tolist()
    logq = log_softmax_row(rng.standard_normal(7).tolist())
    first, second = [0, 0, 3, 6, 2], [1, 3, 3, 5, 5]
    params = DpoParams.new(0.7, 1e-3, loss_type, label_smoothing)
    stepped = list(logits)
    first_is_chosen, smoothing = pair_label(target, label_smoothing)
    chosen, rejected = (first, second) if first_is_chosen else (second, first)
    bag_dpo_update(stepped, logq, chosen, rejected, smoothing, params)
    h = 1e-6
    for j in range(7):
        up, down = list(logits), list(logits)
        up[j] += h
        down[j] -= h
        fd = (bag_loss(up, logq, first, second, target, params) - bag_loss(down, logq, first, second, target, params))
        assert stepped[j] - logits[j] == pytest.approx(-params.lr * fd / (2 * h), abs=1e-10), j
    # Only the responses' tokens move (token 4 is in neither).
    assert stepped[4] == logits[4]


def test_a_soft_label_is_its_cross_entropy_and_a_hard_label_the_lessons_step():
    rng = np.random.default_rng(5)
    logits = rng.standard_normal(5).tolist()
    logq = log_softmax_row(rng.standard_normal(5).tolist())
    first, second = [0, 2, 2], [1, 4, 0]
    h = bag_dpo_update(list(logits), logq, first, second, 0.0, DpoParams.new(0.6, 0.1, "sigmoid", 0.0)).margin
    for target, ls in [(0.7, 0.0), (0.2, 0.0), (0.7, 0.1), (0.5, 0.3), (1.0, 0.2)]:
        smoothed = (1 - ls) * target + ls * (1 - target)
        expected = -smoothed * math.log(sigmoid(h)) - (1 - smoothed) * math.log(sigmoid(-h))
        assert bag_loss(logits, logq, first, second, target, DpoParams.new(0.6, 0.1, "sigmoid", ls)) == pytest.approx(
            expected, rel=1e-12)
    for loss_type, ls in [("sigmoid", 0.2), ("robust", 0.1), ("ipo", 0.0), ("hinge", 0.0)]:
        params = DpoParams.new(0.6, 0.1, loss_type, ls)
        assert pair_label(1.0, ls) == (True, ls) and pair_label(0.0, ls) == (False, ls)
        bag, lesson = list(logits), list(logits)
        assert bag_dpo_update(bag, logq, first, second, ls, params) == dpo_update(lesson, logq, first, second, params)
        assert_close(bag, lesson, rtol=0, atol=1e-14)


def enumerated(world, theta, rm):
    """Means over prompts of the gold, the proxy and the KL, summed over every response."""
    vocab, length = world.vocab, world.response_len
    responses = np.array(list(itertools.product(range(vocab), repeat=length)))
    totals = np.zeros(3)
    for x in range(world.n_prompts):
        logp = log_softmax_row(theta[x].tolist())
        logq = world.ref_log_probs[x]
        log_chance = np.array(logp)[responses].sum(axis=1)
        chance = np.exp(log_chance)
        gold = world.gold_score(np.full(len(responses), x), responses)
        totals += [chance @ gold, chance @ rm.score(responses), chance @ (log_chance - logq[responses].sum(axis=1))]
    return totals / world.n_prompts


@pytest.mark.parametrize("gold", ["count_once", "linear"])
def test_the_recorded_means_are_the_expectations_over_every_response(gold):
    world = World(n_prompts=2, vocab=4, response_len=3, gold=gold, repeat_penalty=0.7 if gold == "count_once" else 0.0,
                  seed=4)
    rm = RewardModel(np.array([0.5, -1.0, 2.0, 0.1]))
    pairs = world.preferences(30, seed=2)
    result = rl.sweep_dpo(pairs, world=world, betas=[0.5], seeds=[3], epochs=2, lr=0.5, w=rm, record_every=60)
    theta = result.final_theta[0, 0]
    gold_mean, proxy_mean, kl_mean = enumerated(world, theta, rm)
    assert result.runs["final_gold_score"][0, 0] == pytest.approx(gold_mean, rel=1e-12, abs=1e-12)
    assert result.runs["final_proxy_score"][0, 0] == pytest.approx(proxy_mean, rel=1e-12, abs=1e-12)
    assert result.runs["final_kl"][0, 0] == pytest.approx(kl_mean, rel=1e-9, abs=1e-12)
    assert result.gold_score[0, 0, -1] == result.runs["final_gold_score"][0, 0]
    assert kl_mean > 0.01  # the policy moved


# ======================================================================= 3. the phenomenon

WORLD_SEEDS = (0, 1, 2)
SMALL_BETA, LARGE_BETA = 0.03, 0.3


@pytest.fixture(scope="module")
def phenomenon():
    """Per world: gold (relative to the reference's) and KL over training at a small and a
    larger beta, recorded every fifth of an epoch for 15 epochs over 200 human-labelled pairs.

    The lesson's DPO is plain SGD, whose step is ``lr * beta * ...`` for the sigmoid loss: at
    one ``lr`` a smaller beta is mostly a smaller step (measured: at ``lr=0.5`` after 30 epochs,
    beta 0.03 ends *nearer* the reference than beta 1). TRL trains with AdamW, which is nearly
    blind to the gradient's scale; ``lr = 0.05 / beta`` is plain SGD's equivalent, so that the
    runs differ in beta and not in step size.
    """
    out = []
    for seed in WORLD_SEEDS:
        world = World(n_prompts=4, vocab=32, response_len=8, seed=seed)
        pairs = world.preferences(200, seed=10 + seed)
        reference_gold = world.expected_gold(world.ref_logits).mean()
        runs = {}
        for beta in (SMALL_BETA, LARGE_BETA):
            result = rl.sweep_dpo(pairs, world=world, betas=[beta], epochs=15, lr=0.05 / beta, record_every=40)
            runs[beta] = (result.gold_score[0, 0] - reference_gold, result.mean_kl[0, 0])
        out.append(runs)
    return out


def test_a_smaller_beta_ends_further_from_the_reference(phenomenon):
    for runs in phenomenon:
        (_, kl_small), (_, kl_large) = runs[SMALL_BETA], runs[LARGE_BETA]
        assert kl_small[-1] > 1.5 * kl_large[-1], (kl_small[-1], kl_large[-1])


def test_dpo_on_human_labels_raises_the_gold_early(phenomenon):
    for runs in phenomenon:
        for beta, (gold, _) in runs.items():
            assert gold[0] > 0.0, (beta, gold[0])  # a fifth of an epoch in
            assert gold[4] > 0.5, (beta, gold[4])  # one epoch in


def test_at_a_small_beta_the_gold_peaks_then_falls_as_the_kl_grows(phenomenon):
    for runs in phenomenon:
        gold, kl = runs[SMALL_BETA]
        peak = int(np.argmax(gold))
        assert gold[peak] - gold[-1] > 0.5, (gold[peak], gold[-1])
        assert kl[-1] > kl[peak] + 3.0, (kl[peak], kl[-1])
        large_gold, _ = runs[LARGE_BETA]
        assert large_gold.max() - large_gold[-1] < gold[peak] - gold[-1]


# ============================================================ 4. errors and the result


def front_end_args(**changes):
    world = World(n_prompts=2, vocab=8, response_len=3, seed=0)
    args = {"pairs": world.preferences(6, seed=1), "world": world, "betas": [0.1], "seeds": 1,
            "w": RewardModel(np.linspace(-1.0, 1.0, 8))}
    args.update(changes)
    return args


OTHER_WORLD = World(n_prompts=2, vocab=8, response_len=4, seed=0)
SOFT_PAIRS = World(n_prompts=2, vocab=8, response_len=3, seed=0).preferences(6, seed=1, labeller=Judge(soft=True))
FRONT_END_ERRORS = [
    ({"world": "lesson"}, "TypeError", "world must be a rlhf_fast.worlds.World, got str"),
    ({"pairs": rl.PreferenceSet.make_dataset(5, 0)}, "TypeError",
     "pairs must be a WorldPairs (World.preferences), got PreferenceSet"),
    ({"pairs": rl.make_dataset(5, 0)}, "TypeError", "pairs must be a WorldPairs (World.preferences), got list"),
    ({"pairs": OTHER_WORLD.preferences(4, seed=0)}, "ValueError",
     "pairs must hold responses of the world's 3 tokens, got 4"),
    ({"pairs": WorldPairs(np.zeros(2, int), np.full((2, 3), 8), np.zeros((2, 3), int), np.ones(2), 0.0)},
     "ValueError", "pairs has token 8, past the world's 8 tokens"),
    ({"pairs": WorldPairs(np.array([0, 2]), np.zeros((2, 3), int), np.zeros((2, 3), int), np.ones(2), 0.0)},
     "ValueError", "pairs has prompt 2, past the world's 2 prompts"),
    ({"pairs": WorldPairs(np.zeros(0, int), np.zeros((0, 3), int), np.zeros((0, 3), int), np.ones(0), 0.0)},
     "ValueError", "pairs must not be empty"),
    ({"w": {"clear": 1.0}}, "TypeError",
     "w must be a rlhf_fast.worlds.RewardModel in a world (one weight per token), got dict"),
    ({"w": RewardModel(np.zeros(9))}, "ValueError", "w must weigh the world's 8 tokens, got 9 weights"),
    ({"theta": np.zeros((2, 8))}, "ValueError",
     "theta cannot be given with a world: its runs start at its reference, world.ref_logits"),
    ({"ref": np.zeros((2, 8))}, "ValueError", "ref cannot be given with a world: its reference is world.ref_logits"),
    ({"pairs": SOFT_PAIRS, "loss_type": ["sigmoid", "ipo"]}, "ValueError",
     "loss_type 'ipo' needs hard labels (targets 0 or 1), but pairs.target[0] is "
     f"{float(SOFT_PAIRS.target[0])!r}, a soft label (a Judge's with soft=True): soft labels are only defined for "
     "loss_type 'sigmoid'"),
    ({"label_smoothing": 0.5}, "ValueError", "label_smoothing must be in [0, 0.5), got 0.5"),
    ({"loss_type": "hinge", "label_smoothing": 0.1}, "ValueError",
     "label_smoothing is only defined for loss_type 'sigmoid' and 'robust', got 0.1 with loss_type='hinge': sweep "
     "those losses separately"),
    ({"epochs": 0}, "ValueError", "epochs must be >= 1, got 0"),
    ({"lr": 1e300}, "FloatingPointError", "sweep run 0 diverged at step 0: logits overflowed (lr=1e+300, beta=0.1)"),
]


@ENGINES
@pytest.mark.parametrize("changes, kind, message", FRONT_END_ERRORS, ids=[e[2][:40] for e in FRONT_END_ERRORS])
def test_the_front_end_refuses_what_a_world_cannot_run(engines, changes, kind, message):
    assert outcome(on_engines, engines, **front_end_args(**changes)) == (kind, message)


def test_world_pairs_need_their_world():
    with pytest.raises(TypeError, match=r"pairs is a rlhf_fast.worlds.WorldPairs: pass the world it came from too"):
        rl.sweep_dpo(front_end_args()["pairs"], betas=[0.1])


def engine_args():
    world = World(n_prompts=2, vocab=8, response_len=3, seed=0)
    pairs = world.preferences(5, seed=1)
    return [world.ref_logits, np.zeros(8), world.gold_token, True, 3, pairs.prompts, pairs.first, pairs.second,
            pairs.target]


ENGINE_ERRORS = [
    ({5: pairs_prompts}, kind, message) for pairs_prompts, kind, message in [
        (np.array([0, 1, 2, 0, 1]), "ValueError", "prompts[2] must be one of the world's 2 prompts, got 2"),
        (np.array([0, 1, -1, 0, 1]), "ValueError", "prompts[2] must be an index in [0, 2**32), got -1"),
        (np.zeros(5), "TypeError", "prompts must be a 1-D int64 array, got a 1-D float64 array"),
        ([0, 1, 0, 0, 1], "TypeError", "prompts must be a 1-D int64 array, got list"),
    ]
] + [
    ({6: np.full((5, 3), 9)}, "ValueError", "first[0, 0] must be one of the world's 8 tokens, got 9"),
    ({7: np.zeros((5, 2), dtype=np.int64)}, "ValueError", "second must have the shape of first, (5, 3), got (5, 2)"),
    ({6: np.zeros((4, 3), dtype=np.int64)}, "ValueError", "first must have 5 rows (one per pair), got 4"),
    ({8: np.full(5, 1.5)}, "ValueError", "target[0] must be a probability in [0, 1], got 1.5"),
    ({8: np.ones(4)}, "ValueError", "target must have 5 entries (one per pair), got 4"),
    ({1: np.zeros(9)}, "ValueError", "weights must have 8 entries (one per token of ref_logits), got 9"),
    ({4: 2}, "ValueError", "first must hold responses of the world's 2 tokens, got 3"),
    ({8: np.full(5, 0.25), "runs": [(0.1, 0.1, "robust", 0.0, 1, None)]}, "ValueError",
     "loss_type 'robust' needs hard labels (targets 0 or 1), but target[0] is 0.25: soft labels are only defined "
     "for loss_type 'sigmoid'"),
    ({"runs": [(0.1, 0.1, "sigmoid", 0.0, 0, None)]}, "ValueError", "epochs must be >= 1, got 0"),
    ({"runs": [(-0.1, 0.1, "sigmoid", 0.0, 1, None)]}, "ValueError", "beta must be > 0, got -0.1"),
]


@ENGINES
@pytest.mark.parametrize("changes, kind, message", ENGINE_ERRORS, ids=[e[2][:40] for e in ENGINE_ERRORS])
def test_the_engine_refuses_bad_arguments_by_name(engines, changes, kind, message):
    args = engine_args()
    runs = changes.get("runs", [(0.1, 0.1, "sigmoid", 0.0, 1, 0)])
    for i, value in changes.items():
        if i != "runs":
            args[i] = value
    assert outcome(engines.sweep_world_dpo, *args, runs) == (kind, message)


def test_a_world_dpo_sweep_tabulates_plots_guards_and_ignores_threads(tmp_path):
    world = World(n_prompts=3, vocab=32, response_len=4, seed=2)
    pairs = world.preferences(40, seed=3)
    rm = rl.train_reward_model(world, world.preferences(200, seed=4))
    result = rl.sweep_dpo(pairs, world=world, betas=[0.1, 1.0], seeds=2, epochs=[1, 2], w=rm, record_every=4)
    assert result.method == "world_dpo" and result.axes["epochs"] == [1, 2]
    assert result.fields == ("prompt_index", "loss", "rewards_chosen", "rewards_rejected", "rewards_margins",
                             "rewards_accuracies", "proxy_score", "gold_score", "mean_kl")
    assert result.gold_score.shape == (2, 2, 2, 20) and result.final_theta.shape == (2, 2, 2, 3, 32)
    assert np.isnan(result.gold_score[:, 0, :, 10:]).all()  # one epoch: NaN past its end
    for index in np.ndindex(2, 2, 2):
        theta = result.final_theta[index]
        assert result.runs["final_gold_score"][index] == pytest.approx(world.expected_gold(theta).mean(), rel=1e-12)
        assert result.runs["final_proxy_score"][index] == pytest.approx(world.expected_score(theta, rm).mean(),
                                                                        rel=1e-12, abs=1e-12)
        assert result.runs["final_kl"][index] == pytest.approx(world.kl(theta).mean(), rel=1e-9, abs=1e-12)
    assert_close(result.runs["final_gold_score"][:, 1], result.gold_score[:, 1, :, -1])
    assert "final gold" in result.summary_table().splitlines()[0]
    assert len(result.plot(tmp_path / "dpo.png", points=5).axes) == 4 and (tmp_path / "dpo.png").exists()
    # The guard reads every kept step: a sweep whose runs all have the same length.
    assert rl.sweep_dpo(pairs, world=world, betas=[0.1, 1.0], epochs=2, w=rm, record_every=4).guard()[
        "fired"].shape == (2, 1)
    assert result.to_pandas().shape == (2 * 2 * 2 * 20, 4 + 9)
    one = rl.sweep_dpo(pairs, world=world, betas=[0.1, 1.0], seeds=2, epochs=[1, 2], w=rm, record_every=4,
                       n_threads=1)
    np.testing.assert_array_equal(one.history, result.history)
    np.testing.assert_array_equal(one.final_theta, result.final_theta)
    # Without a reward model: no proxy anywhere, everything else the same.
    gold_only = rl.sweep_dpo(pairs, world=world, betas=[0.1, 1.0], seeds=2, epochs=[1, 2], record_every=4,
                             n_threads=3)
    assert "proxy_score" not in gold_only.fields and "final_proxy_score" not in gold_only.runs
    np.testing.assert_array_equal(gold_only.gold_score, result.gold_score)
    np.testing.assert_array_equal(gold_only.final_theta, result.final_theta)
    assert len(gold_only.plot(points=5).axes) == 4
    with pytest.raises(ValueError, match="needs a world sweep with a proxy .* without w"):
        gold_only.guard()
    # AI-judge labels, soft: the sigmoid loss takes them as targets.
    judged = world.preferences(40, seed=3, labeller=Judge(soft=True))
    soft = rl.sweep_dpo(judged, world=world, betas=[0.1], epochs=2, label_smoothing=[0.0, 0.2], record_every=0)
    assert soft.runs["final_kl"].shape == (1, 2, 1) and (soft.runs["final_kl"] > 0).all()
    human = world.preferences(40, seed=3, labeller=Labeller(flip=0.1))
    assert rl.sweep_dpo(human, world=world, betas=[0.1], loss_type=["robust", "ipo", "hinge"]).shape == (1, 3, 1)
