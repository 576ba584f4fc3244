"""Junk through every public function on both backends: a finite result or one of four errors.

Hypothesis draws a call of each public function (``fuzzing.SPECS``: every name of
``rlhf_fast.reference.__all__``, the controllers' ``update``, ``PreferenceSet.make_dataset``,
the five sweeps, ``sweep_rlhf`` in a world, and the world API of ``rlhf_fast.worlds`` and
``rlhf_fast.overopt``, and the large-vocabulary rows of ``rlhf_fast.rows``), each argument valid, junk or left out, and runs it on the Rust-backed
API and on the reference, whatever ``RLHF_FAST_BACKEND`` says. The outcome must be a result
whose every float is finite, or ``ValueError``/``TypeError``/``MemoryError``/
``FloatingPointError`` with a message, and no warning but ``KLWarning`` (issue 9). A call
with an oversized count runs in a forked, memory-capped child (``sandbox.py``).
``benches/fuzz.py`` makes 100,000 such calls per backend from the same generators, but for
``fuzzing.SLOW`` (the over-optimisation lab, ~0.1 s a valid call), which only runs here.
"""

from __future__ import annotations

import fuzzing
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sandbox import forked

BACKENDS = ["rust", "python"]


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request) -> fuzzing.Backend:
    if request.param == "rust":
        pytest.importorskip("rlhf_fast._fast")
    return fuzzing.Backend(request.param)


def check(backend: fuzzing.Backend, call: fuzzing.Call) -> None:
    fn = backend.function(call.function)

    def run() -> tuple[str, str]:
        with fuzzing.strict_warnings():
            return fuzzing.outcome(lambda: fn(**call.kwargs), call.function)

    if call.oversized:
        result, failure = forked(lambda report: run(), timeout=10.0, headroom=512 << 20)
        status, detail = result if failure is None else ("FAIL:crash", failure)
    else:
        status, detail = run()
    assert not status.startswith("FAIL"), f"[{backend.name}] {status}: {detail}\n{call.describe()}"


@pytest.mark.parametrize("function", fuzzing.FUNCTIONS)
@settings(max_examples=max(5, settings.default.max_examples // 6))
@given(data=st.data())
def test_junk_gives_a_finite_result_or_an_allowed_error(backend, function, data):
    check(backend, fuzzing.draw_call(fuzzing.HypothesisSource(data), function, backend))


@pytest.mark.parametrize("function", sorted(fuzzing.SLOW))
@settings(max_examples=max(10, settings.default.max_examples // 2))  # ~10 ms a call on average
@given(data=st.data())
def test_slow_functions_too(backend, function, data):
    """The functions too slow for the benchmark's 100,000 calls: a few examples here."""
    check(backend, fuzzing.draw_call(fuzzing.HypothesisSource(data), function, backend))


# Bugs the fuzzer found, kept as explicit cases: (id, function, arguments).
REGRESSIONS = [
    # GRPO on sequences, reference: a huge reward sent a ratio past the floats, and math.exp raised
    # OverflowError where the core's exp gives inf (then a named divergence on both backends)
    ("sequence-grpo-ratio-past-the-floats", "sweep_grpo[sequence]", lambda: dict(
        w=fuzzing.SequenceRewardModel(np.r_[0.0, np.linspace(-1.0, 1.0, 4)], length_weight=4.464e149),
        world=fuzzing.SequenceWorld(n_prompts=2, vocab=5, max_len=3, seed=0), betas=[0.0], seeds=1, steps=1,
        scale_rewards="none", num_iterations=2)),
    # float(10**400) raised OverflowError (both backends): now a ValueError naming the entry
    ("weights-int-past-floats", "expected_score", lambda: dict(theta=fuzzing.ref.init_policy(),
                                                              w={**fuzzing.W, "clear": 10**400})),
    ("sigmoid-int-past-floats", "sigmoid", lambda: dict(z=-(10**400))),
    # np.ndim(range(10**12)) built an 8 TB array before the memory check
    ("sweep-seeds-huge-range", "sweep_best_of_n", lambda: dict(w=dict(fuzzing.W), ns=[1], seeds=range(10**12))),
    # record_every=10**30 overflowed the core's usize (OverflowError, Rust only)
    ("sweep-record-every-huge", "sweep_dpo", lambda: dict(pairs=fuzzing.PAIRS, betas=[0.1], record_every=10**30)),
    ("sweep-rlhf-record-every-huge", "sweep_rlhf", lambda: dict(w=dict(fuzzing.W), betas=[0.1], seeds=1, steps=2,
                                                                record_every=10**30)),
    # n_threads / max_memory past a u64 (OverflowError, Rust only); a million threads
    ("sweep-n-threads-2**64", "sweep_rm", lambda: dict(pairs=fuzzing.PAIRS, n_threads=2**64)),
    # len(range(2**64)) raised OverflowError in the memory check (both backends)
    ("sweep-seeds-2**64", "sweep_rlhf", lambda: dict(w=dict(fuzzing.W), betas=[0.1], seeds=2**64, steps=1)),
    # steps past an i64 with summaries only: OverflowError in the core (Rust only)
    ("sweep-steps-past-i64", "sweep_rlhf", lambda: dict(w=dict(fuzzing.W), betas=[0.1], seeds=1, steps=10**30,
                                                        record_every=0)),
    ("sweep-max-memory-2**64", "sweep_grpo", lambda: dict(w=dict(fuzzing.W), betas=[0.0], seeds=1, steps=1,
                                                          max_memory=2**64)),
    # the world API, fuzzed after it landed (Python's own error or a warning before the fix)
    ("world-prompt-scale-past-floats", "World", lambda: dict(prompt_scale=1.7e308)),  # RuntimeWarning
    ("world-logits-spanning-the-floats", "World.kl",  # RuntimeWarning (overflow, then 0 * -inf)
     lambda: dict(world=fuzzing.SMALL_WORLD, logits=np.tile([1.7e308, -1.7e308, 0, 0, 0, 0, 0, 0], (2, 1)))),
    ("world-logits-complex", "World.expected_gold",  # ComplexWarning
     lambda: dict(world=fuzzing.SMALL_WORLD, logits=np.zeros((2, 8), dtype=complex))),
    ("world-logits-int-past-floats", "World.kl",  # OverflowError
     lambda: dict(world=fuzzing.SMALL_WORLD, logits=[[10**400] * 8] * 2)),
    ("world-expected-score-of-a-dict", "World.expected_score",  # AttributeError
     lambda: dict(world=fuzzing.SMALL_WORLD, logits=fuzzing.SMALL_WORLD.ref_logits, rm=dict(fuzzing.W))),
    ("reward-model-score-past-its-vocab", "RewardModel.score",  # IndexError
     lambda: dict(rm=fuzzing.RewardModel(np.zeros(8)), responses=[[8, 0, 0]])),
    ("train-on-another-worlds-pairs", "train_reward_model",  # IndexError
     lambda: dict(world=fuzzing.SMALL_WORLD,
                  pairs=fuzzing.World(n_prompts=2, vocab=20, response_len=3).preferences(5, seed=0))),
    ("world-pairs-nan-target", "WorldPairs",  # NaN kept in the result
     lambda: dict(prompts=[0], first=[[0]], second=[[1]], target=[float("nan")], cost=0.0)),
    ("frontier-at-a-subnormal-beta", "Frontier.of",  # RuntimeWarning (r / beta)
     lambda: dict(world=fuzzing.SMALL_WORLD, reward="gold", betas=[5e-324])),
    ("labels-at-a-subnormal-temperature", "World.preferences",  # RuntimeWarning (margin / temperature)
     lambda: dict(world=fuzzing.SMALL_WORLD, n=5, seed=0, labeller=fuzzing.Labeller(temperature=5e-324))),
    ("best-of-n-kl-of-zero", "best_of_n_kl", lambda: dict(n=0)),  # RuntimeWarning, -inf
    ("gao-peak-past-the-floats", "GaoFit.peaks", lambda: dict(fit=fuzzing.GaoFit("rl", 1e308, 1.0))),  # OverflowError
    ("gao-peak-kl-past-the-floats", "GaoFit.peaks", lambda: dict(fit=fuzzing.GaoFit("bon", 1.0, 1e-308))),  # ** 2
    ("fit-gao-of-mismatched-shapes", "fit_gao", lambda: dict(d=[1.0, 2.0, 3.0], gold=[1.0], form="bon")),  # IndexError
    ("best-of-n-curve-of-no-draws", "best_of_n_curve",  # 'Mean of empty slice'
     lambda: dict(world=fuzzing.SMALL_WORLD, rm=fuzzing.RewardModel(np.zeros(8)), ns=[1, 2], draws=0, seed=0)),
    # the reasoning world (rlhf_fast.reasoning), fuzzed after it landed
    ("reasoning-theta-nan", "ReasoningWorld.success",  # NaN returned
     lambda: dict(world=fuzzing.SMALL_REASONING_WORLD, theta=np.full((2, 3, 4), np.nan))),
    ("reasoning-theta-spanning-the-floats", "ReasoningWorld.success",  # RuntimeWarning (overflow in subtract)
     lambda: dict(world=fuzzing.SMALL_REASONING_WORLD, theta=np.tile([1.7e308, -1.7e308, 0.0, 0.0], (2, 3, 1)))),
    ("reasoning-theta-huge-stack", "ReasoningWorld.success",  # a softmax of 10**12 policies (a view of one)
     lambda: dict(world=fuzzing.SMALL_REASONING_WORLD, theta=np.broadcast_to(np.zeros((2, 3, 4)), (10**12, 2, 3, 4)))),
    ("reasoning-theta-complex", "ReasoningWorld.engine_logits",  # ComplexWarning
     lambda: dict(world=fuzzing.SMALL_REASONING_WORLD, theta=np.zeros((2, 3, 4), dtype=complex))),
    ("reasoning-no-responses", "ReasoningWorld.step_correct",  # IndexError
     lambda: dict(world=fuzzing.SMALL_REASONING_WORLD, prompts=np.zeros(0, dtype=np.int64), tokens=np.zeros(0, dtype=int))),
    ("reasoning-token-past-candidates", "ReasoningWorld.verify",  # IndexError
     lambda: dict(world=fuzzing.SMALL_REASONING_WORLD, prompts=[0], tokens=[[0, 0, 4]])),
    ("reasoning-sample-10**12", "ReasoningWorld.sample",  # MemoryError with no message
     lambda: dict(world=fuzzing.SMALL_REASONING_WORLD, theta=fuzzing.SMALL_REASONING_WORLD.ref_logits, n=10**12,
                  seed=0)),
    ("reasoning-sample-negative-seed", "ReasoningWorld.sample",  # NumPy's error, not naming seed
     lambda: dict(world=fuzzing.SMALL_REASONING_WORLD, theta=fuzzing.SMALL_REASONING_WORLD.ref_logits, n=2, seed=-1)),
    ("reasoning-world-2**44-entries", "ReasoningWorld",  # each size in bounds, their product allocated
     lambda: dict(n_prompts=1 << 16, n_steps=1 << 12, n_candidates=1 << 16)),
    ("reasoning-ref-correct-underflows", "ReasoningWorld",  # RuntimeWarning (log of 0)
     lambda: dict(n_candidates=4, n_correct=2, ref_correct=5e-324)),
    ("prm-label-noise-complex", "ProcessRewardModel",  # kept in the model
     lambda: dict(logits=np.zeros((2, 3, 4)), losses=np.zeros(1), n_responses=1, label_noise=1j)),
    ("prm-logits-below-exp", "ProcessRewardModel.step_rewards",  # RuntimeWarning (overflow in exp)
     lambda: dict(prm=fuzzing.ProcessRewardModel(np.full((2, 3, 4), -1e300), np.zeros(1), 1, 0.0))),
    ("process-rl-10**12-seeds", "process_rl",  # a list of 10**12 runs built (hangs)
     lambda: dict(world=fuzzing.SMALL_REASONING_WORLD, method="grpo_verifier", steps=1, seeds=10**12)),
    ("process-rl-2**63-seeds", "process_rl",  # OverflowError (len of the range)
     lambda: dict(world=fuzzing.SMALL_REASONING_WORLD, method="ppo_outcome", steps=1, seeds=2**63)),
    ("process-rl-numpy-seed-count", "process_rl",  # 'numpy.int64' object is not iterable
     lambda: dict(world=fuzzing.SMALL_REASONING_WORLD, method="grpo_verifier", steps=1, seeds=np.int64(1))),
    ("process-rl-10**13-steps", "process_rl",  # no history kept: a run of 10**13 steps (hangs)
     lambda: dict(world=fuzzing.SMALL_REASONING_WORLD, method="ppo_outcome", steps=10**13, seeds=1)),
    ("prm-loss-at-the-top-of-the-floats", "core.prm_loss_and_grad",  # inf returned (the prior's term)
     lambda: dict(logits=np.ones((1, 2, 2)), prompts=np.array([0]), tokens=np.array([[0, 1]]),
                  labels=np.array([[0.0, 1.0]]), l2=1.7e308)),
    ("process-rl-prm-of-another-world", "process_rl",  # the engine's error, naming step_rewards
     lambda: dict(world=fuzzing.SMALL_REASONING_WORLD, method="ppo_prm", steps=1, seeds=1,
                  prm=fuzzing.ProcessRewardModel(np.zeros((3, 3, 4)), np.zeros(1), 1, 0.0))),
]


@pytest.mark.parametrize("case", REGRESSIONS, ids=[case[0] for case in REGRESSIONS])
def test_regressions(backend, case):
    _, function, make = case
    kwargs = make()
    check(backend, fuzzing.Call(function, kwargs, {k: "regression" for k in kwargs}, oversized=False))


def test_every_public_function_is_fuzzed():
    public = {name for name in fuzzing.ref.__all__ if callable(getattr(fuzzing.ref, name)) and name != "KLWarning"}
    assert public - set(fuzzing.FUNCTIONS) == set()
    assert {"sweep_rlhf", "sweep_rm", "sweep_dpo", "sweep_grpo", "sweep_best_of_n"} <= set(fuzzing.FUNCTIONS)
    # the world API: every public class (its constructor), function and method
    worlds = {name for name in fuzzing.worlds_module.__all__ if name != "Frontier"} | {"Frontier.of"}
    worlds |= {f"{cls}.{method}" for cls in ("World", "RewardModel", "Judge")
               for method in vars(getattr(fuzzing.worlds_module, cls))
               if not method.startswith("_") and callable(vars(getattr(fuzzing.worlds_module, cls))[method])}
    worlds |= {"GaoFit.__call__", "GaoFit.peaks"}
    lab = {"overoptimization", "guard_stop", "best_of_n_curve"}
    assert worlds | lab | {"sweep_rlhf[world]"} <= set(fuzzing.SPECS), sorted(worlds | lab - set(fuzzing.SPECS))
    assert set(fuzzing.SPECS) == set(fuzzing.FUNCTIONS) | fuzzing.SLOW
    # the reasoning world (rlhf_fast.reasoning): every public class, function and method
    reasoning = fuzzing.reasoning_module
    process = {name for name in reasoning.__all__ if callable(getattr(reasoning, name)) and name != "ProcessLab"}
    process |= {f"{cls}.{method}" for cls in ("ReasoningWorld", "ProcessRewardModel")
                for method in vars(getattr(reasoning, cls))
                if not method.startswith("_") and callable(vars(getattr(reasoning, cls))[method])}
    assert process <= set(fuzzing.SPECS), sorted(process - set(fuzzing.SPECS))
    # the large-vocabulary rows: every public function
    rows = {f"rows.{name}" for name in fuzzing.rows_module.__all__ if name != "PpoBatchStep"}
    assert rows <= set(fuzzing.FUNCTIONS), sorted(rows - set(fuzzing.FUNCTIONS))


def test_the_outcome_rule_refuses_nan_and_other_errors():
    assert fuzzing.outcome(lambda: [1.0, {"a": np.array([0.0, np.nan])}])[0] == "FAIL:non-finite"
    assert fuzzing.outcome(lambda: 1 / 0)[0] == "FAIL:ZeroDivisionError"
    assert fuzzing.outcome(lambda: (_ for _ in ()).throw(ValueError("")))[0] == "FAIL:empty-message"
    assert fuzzing.outcome(lambda: (_ for _ in ()).throw(FloatingPointError("diverged")))[0] == "FloatingPointError"
