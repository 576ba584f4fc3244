"""Issue 9: no crash, no hang, no silent NaN, no unnamed argument.

- Oversized counts are refused before anything is allocated: a ValueError naming the argument
  (and the bytes, for the sizes), never an abort, a panic or the OOM killer. Each call runs in
  a child process with a timeout and an address-space limit, so that the behaviour this
  replaces (an abort, or a loop that grows its history until the machine gives out) fails the
  test instead of taking the test run down with it.
- Forked children can run sweeps after their parent did; many threads get correct results.
- Ctrl-C stops every long call within 100 ms (measured in the child, from the arrival of the
  signal to the ``except KeyboardInterrupt`` block).
- Parameters that overflow raise FloatingPointError naming the step and ``lr``; summaries that
  cannot be computed are absent; empty pairs are refused; a bad scalar argument is named.
"""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import outcome, rust_only
from hypothesis import given
from hypothesis import strategies as st

import rlhf_fast as rl
from rlhf_fast import reference as ref

MAX_MEMORY = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


@pytest.fixture(scope="module")
def w():
    return ref.train_rm(ref.make_dataset(500, 0))


def run_child(script: str, timeout: float, address_space: int | None = None) -> subprocess.CompletedProcess:
    """``script`` in a fresh interpreter (this backend), killed after ``timeout`` seconds."""

    def limit_memory():
        if address_space is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limit_memory,
    )


# ------------------------------------------------------------------------ oversized counts

SETUP = """
    import random, rlhf_fast as rl
    w = rl.train_rm(rl.make_dataset(200, 0))
    theta, frozen = rl.init_policy(), rl.init_policy()
    pairs = rl.make_dataset(10, 0)
"""

OVERSIZED = {
    "train_rlhf steps=10**13": (
        "rl.train_rlhf(theta, frozen, w, steps=10**13, seed=0)",
        f"steps=10000000000000 needs 800000000000000 bytes, more than max_memory={MAX_MEMORY} bytes",
    ),
    "train_rlhf steps=2**62": (
        "rl.train_rlhf(theta, frozen, w, steps=2**62, seed=0)",
        f"steps={2**62} needs {2**62 * 80} bytes, more than max_memory={MAX_MEMORY} bytes",
    ),
    "train_grpo steps=10**13": (
        "rl.train_grpo(theta, frozen, w, steps=10**13, seed=0)",
        f"steps=10000000000000 needs {10**13 * 15 * 8} bytes, more than max_memory={MAX_MEMORY} bytes",
    ),
    "train_dpo epochs=10**13": (
        "rl.train_dpo(theta, frozen, pairs, epochs=10**13)",
        f"epochs=10000000000000 needs {10**13 * 10 * 48} bytes, more than max_memory={MAX_MEMORY} bytes",
    ),
    "make_dataset n=10**13": (
        "rl.make_dataset(10**13)",
        f"n=10000000000000 needs {10**13 * 256} bytes, more than max_memory={MAX_MEMORY} bytes",
    ),
    "PreferenceSet.make_dataset n=10**13": (
        "rl.PreferenceSet.make_dataset(10**13)",
        f"n=10000000000000 needs {10**13 * 256} bytes, more than max_memory={MAX_MEMORY} bytes",
    ),
    "grpo_step num_generations=2**31": (
        "rl.grpo_step(theta, frozen, w, 'help me', random.Random(0), num_generations=2**31)",
        "num_generations must be <= 65536, got 2147483648",
    ),
    "train_grpo num_generations=2**31": (
        "rl.train_grpo(theta, frozen, w, steps=10, seed=0, num_generations=2**31)",
        "num_generations must be <= 65536, got 2147483648",
    ),
    "train_grpo num_iterations=10**9": (
        "rl.train_grpo(theta, frozen, w, steps=10, seed=0, num_iterations=10**9)",
        "num_iterations must be <= 10000, got 1000000000",
    ),
    "rlhf_step ppo_epochs=10**9": (
        "rl.rlhf_step(theta, frozen, w, 'help me', random.Random(0), ppo_epochs=10**9)",
        "ppo_epochs must be <= 10000, got 1000000000",
    ),
    "train_rlhf ppo_epochs=10**9": (
        "rl.train_rlhf(theta, frozen, w, steps=10, seed=0, ppo_epochs=10**9)",
        "ppo_epochs must be <= 10000, got 1000000000",
    ),
    "best_of_n n=10**12": (
        "rl.best_of_n(frozen, w, 10**12, samples=1)",
        "n must be <= 1000000000, got 1000000000000",
    ),
}


@pytest.mark.parametrize("case", OVERSIZED)
def test_oversized_counts_are_refused_quickly_without_a_crash(case):
    call, message = OVERSIZED[case]
    script = SETUP + f"""
    try:
        {call}
    except ValueError as err:
        print("ValueError:", err)
    """
    started = time.perf_counter()
    try:
        # 4 GiB of address space: room for the interpreter and numpy, not for a runaway history.
        done = run_child(script, timeout=20, address_space=4 << 30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{case}: still running after 20 s")
    assert done.returncode == 0, f"{case}: exit {done.returncode}\n{done.stderr[-2000:]}"
    assert done.stdout.strip().splitlines()[-1] == f"ValueError: {message}", done.stdout + done.stderr[-2000:]
    assert time.perf_counter() - started < 10


# ----------------------------------------------------------------------------- fork, threads

SWEEP_AND_FORK = """
    import os, sys, time, warnings
    import numpy as np
    import rlhf_fast as rl

    w = rl.train_rm(rl.make_dataset(200, 0))

    def small_sweep(seed=0):
        # 24 runs: three groups of eight, so that the sweep does go through the thread pool.
        result = rl.sweep_rlhf(w, betas=[0.0, 0.1, 1.0], seeds=range(seed, seed + 8), steps=300, record_every=0)
        return result.runs["final_score"].tolist()

    expected = small_sweep()  # the parent's pool now exists
"""


@rust_only
def test_a_forked_child_runs_sweeps_after_its_parent_did():
    script = SWEEP_AND_FORK + """
    warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: what this test is about
    pid = os.fork()
    if pid == 0:
        ok = small_sweep() == expected and small_sweep(5) == small_sweep(5)
        os._exit(0 if ok else 3)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            print("child exit", os.waitstatus_to_exitcode(status))
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        print("child hung")
    print("parent again", small_sweep() == expected)
    """
    done = run_child(script, timeout=60)
    assert done.stdout.split("\n")[:2] == ["child exit 0", "parent again True"], done.stdout + done.stderr[-2000:]


@rust_only
def test_multiprocessing_fork_workers_run_sweeps_after_their_parent_did():
    script = SWEEP_AND_FORK + """
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(2) as pool:
        try:
            results = pool.map_async(small_sweep, [0, 5, 0]).get(timeout=30)
        except multiprocessing.TimeoutError:
            print("workers hung")
            pool.terminate()
        else:
            print("workers", results[0] == expected, results[2] == expected, results[1] == small_sweep(5))
    """
    done = run_child(script, timeout=90)
    assert done.stdout.strip() == "workers True True True", done.stdout + done.stderr[-2000:]


def test_many_threads_get_the_results_of_serial_calls(w):
    pairs = rl.make_dataset(300, 1)

    def sweep(seed):
        result = rl.sweep_rlhf(w, betas=[0.0, 1.0], seeds=[seed, seed + 7], steps=200)
        return result.objective_kl.tobytes() + result.final_theta.tobytes()

    def single_run(seed):
        theta = rl.init_policy()
        history = rl.train_rlhf(theta, rl.init_policy(), w, 500, seed, beta=0.2, kl_threshold=100.0)
        return np.asarray(history["token"]).tobytes() + np.asarray([theta[x] for x in rl.PROMPTS]).tobytes()

    def reward_model(seed):
        return sorted(rl.train_rm(rl.make_dataset(200 + seed, seed), epochs=3).items())

    def dpo(seed):
        theta = rl.init_policy()
        rl.train_dpo(theta, rl.init_policy(), pairs, epochs=2, seed=seed)
        return [theta[x] for x in rl.PROMPTS]

    calls = [(f, seed) for seed in range(6) for f in (sweep, single_run, reward_model, dpo)]
    serial = [f(seed) for f, seed in calls]
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(f, seed) for f, seed in calls * 3]
        concurrent = [future.result(timeout=300) for future in futures]
    assert concurrent == serial * 3


# ------------------------------------------------------------------------------------- Ctrl-C

LONG_CALLS = {
    "train_rlhf": ("", "rl.train_rlhf(theta, frozen, w, steps=2 * 10**7, seed=0, kl_threshold=1e9)"),
    "train_grpo": ("", "rl.train_grpo(theta, frozen, w, steps=10**7, seed=0, kl_threshold=1e9)"),
    "train_dpo": ("pairs = rl.make_dataset(1000, 0)", "rl.train_dpo(theta, frozen, pairs, epochs=2 * 10**4)"),
    "train_rm": ("pairs = rl.PreferenceSet.make_dataset(10**6)", "rl.train_rm(pairs, epochs=2000)"),
    "make_dataset": ("", "rl.make_dataset(10**7)"),
    "PreferenceSet.make_dataset": ("", "rl.PreferenceSet.make_dataset(3 * 10**7)"),
    "best_of_n": ("", "rl.best_of_n(frozen, w, 10**9, samples=100)"),
    # Sweeps whose steps are long: responses of 20,000 tokens, groups of 16,384, epochs over
    # 2*10**7 pairs, draws of 10**9 samples; the monitor is looked at within a step or an epoch.
    "sweep_dpo": (
        "pairs = [(x, 'clear kind ' * 10**4, 'rude vague ' * 10**4) for x in rl.PROMPTS] * 30",
        "rl.sweep_dpo(pairs, betas=[0.1, 0.5], seeds=4, epochs=10**4, record_every=0)",
    ),
    "sweep_grpo": ("", "rl.sweep_grpo(w, betas=[0.0, 0.04], seeds=4, steps=10**6, num_generations=16384, record_every=0)"),
    "sweep_best_of_n": ("", "rl.sweep_best_of_n(w, ns=[10**9], seeds=4, samples=10)"),
    "sweep_rm": ("pairs = rl.PreferenceSet.make_dataset(2 * 10**7)", "rl.sweep_rm(pairs, lrs=[0.1, 0.2], epochs=[10**4])"),
    "sweep_rlhf": ("", "rl.sweep_rlhf(w, betas=[0.0, 0.1, 1.0], seeds=2000, steps=10**6, record_every=0)"),
}

INTERRUPTIBLE = """
    import signal, time, warnings
    import rlhf_fast as rl

    arrived = None

    def on_sigint(signum, frame):
        # Python's own handler, explicitly (the inherited disposition may be SIG_IGN), timed.
        global arrived
        arrived = time.perf_counter()
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, on_sigint)
    warnings.simplefilter("ignore")
    w = rl.train_rm(rl.make_dataset(500, 0))
    theta, frozen = rl.init_policy(), rl.init_policy()
    {setup}
    print("started", flush=True)
    try:
        {call}
        print("finished", flush=True)
    except KeyboardInterrupt:
        stopped = time.perf_counter()
        print("interrupted", stopped - arrived, stopped, flush=True)
"""


def interrupt(script: str, wait: float = 0.4) -> tuple[float, float]:
    """Runs ``script``, sends SIGINT ``wait`` seconds after it printed ``started``; returns the
    child's reaction time (signal handler to except block) and the time from sending the
    signal to the except block (both clocks are CLOCK_MONOTONIC)."""
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "started"
        time.sleep(wait)
        sent = time.perf_counter()
        child.send_signal(signal.SIGINT)
        output, _ = child.communicate(timeout=30)
        fields = output.split()
        assert fields[:1] == ["interrupted"], output
        return float(fields[1]), float(fields[2]) - sent
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@rust_only
@pytest.mark.parametrize("call", LONG_CALLS)
def test_ctrl_c_stops_every_long_call_within_100_ms(call):
    setup, expression = LONG_CALLS[call]
    reaction, since_sent = interrupt(INTERRUPTIBLE.format(setup=setup, call=expression))
    print(f"{call}: KeyboardInterrupt {reaction * 1e3:.1f} ms after the handler, {since_sent * 1e3:.1f} ms after kill()")
    assert since_sent < 0.1, f"{call}: {since_sent * 1e3:.1f} ms"


# --------------------------------------------------------------------------------- overflow


def test_training_that_overflows_names_the_step_and_lr(w):
    theta = rl.init_policy()
    with pytest.raises(FloatingPointError) as err:
        rl.train_rlhf(theta, rl.init_policy(), w, 100, 0, lr=1e300)
    assert str(err.value) == "train_rlhf diverged at step 0: logits overflowed (lr=1e+300, beta=0.1)"
    with pytest.raises(FloatingPointError) as err:
        rl.train_grpo(rl.init_policy(), rl.init_policy(), w, 100, 0, lr=1e300)
    assert str(err.value) == "train_grpo diverged at step 0: logits overflowed (lr=1e+300, beta=0.04)"
    with pytest.raises(FloatingPointError) as err:
        rl.train_dpo(rl.init_policy(), rl.init_policy(), rl.make_dataset(20, 0), lr=1e300)
    assert str(err.value) == "train_dpo diverged at step 0: logits overflowed (lr=1e+300, beta=0.1)"
    with pytest.raises(FloatingPointError) as err:
        rl.train_rm(rl.make_dataset(50, 0), lr=1e300)
    assert str(err.value) == "train_rm diverged in epoch 0: weights overflowed (lr=1e+300)"


def test_single_steps_that_overflow_change_nothing(w):
    theta = rl.init_policy()
    with pytest.raises(FloatingPointError, match=r"^rlhf_step diverged: logits overflowed \(lr=1e\+300, beta=0\.1\)$"):
        rl.rlhf_step(theta, rl.init_policy(), w, "help me", random.Random(0), lr=1e300)
    with pytest.raises(FloatingPointError, match=r"^dpo_step diverged: logits overflowed \(lr=1e\+300, beta=0\.1\)$"):
        rl.dpo_step(theta, rl.init_policy(), "help me", "clear kind", "rude short", lr=1e300)
    with pytest.raises(FloatingPointError, match=r"^grpo_step diverged: logits overflowed \(lr=1e\+300, beta=0\.04\)$"):
        rl.grpo_step(theta, rl.init_policy(), w, "help me", random.Random(0), lr=1e300)
    assert theta == rl.init_policy()
    weights = dict(w)
    with pytest.raises(FloatingPointError, match=r"^rm_train_step diverged: weights overflowed \(lr=1e\+300\)$"):
        rl.rm_train_step(weights, "help me", "clear kind", "rude short", 1e300)
    assert weights == w


# ------------------------------------------------------------------------------ no silent NaN


def test_summaries_that_cannot_be_computed_are_absent(w):
    dpo = rl.sweep_dpo(rl.make_dataset(30, 0), betas=[0.1, 0.5], seeds=2)
    assert "final_score" not in dpo.runs
    assert not any(np.isnan(values).any() for values in dpo.runs.values())
    assert "final_score" in rl.sweep_dpo(rl.make_dataset(30, 0), betas=[0.1], w=w).runs
    bon = rl.sweep_best_of_n(w, ns=[1, 4], seeds=2)
    assert "sampled_score" not in bon.runs
    assert not any(np.isnan(values).any() for values in bon.runs.values())
    assert "sampled_score" in rl.sweep_best_of_n(w, ns=[1, 4], seeds=2, samples=10).runs


@rust_only
def test_a_best_of_n_sweep_mixing_runs_with_and_without_samples_is_refused(w):
    with pytest.raises(ValueError, match="samples"):
        rl._core.sweep_best_of_n(rl.init_policy(), w, [(4, 0, 0), (4, 10, 1)])


def test_training_a_reward_model_on_no_pairs_is_refused():
    for pairs in ([], rl.PreferenceSet([])):
        with pytest.raises(ValueError) as err:
            rl.train_rm(pairs)
        assert str(err.value) == "pairs must not be empty"


# ------------------------------------------------------------------------- argument errors

BAD_SCALARS = [
    ("rlhf_step", {"beta": "0.1"}, "TypeError", "beta must be a real number, got str"),
    ("rlhf_step", {"lr": None}, "TypeError", "lr must be a real number, got NoneType"),
    ("rlhf_step", {"eps": True}, "TypeError", "eps must be a real number, got bool"),
    ("rlhf_step", {"ppo_epochs": 2.0}, "TypeError", "ppo_epochs must be an int, got float"),
    ("rlhf_step", {"ppo_epochs": True}, "TypeError", "ppo_epochs must be an int, got bool"),
    (
        "rlhf_step",
        {"kl_penalty": 3},
        "TypeError",
        "kl_penalty must be a str, one of ('full', 'k1', 'k2', 'k3'), got int",
    ),
    ("rlhf_step", {"kl_penalty": "k4"}, "ValueError", "kl_penalty must be one of ('full', 'k1', 'k2', 'k3'), got 'k4'"),
    ("train_rlhf", {"beta": "0.1"}, "TypeError", "beta must be a real number, got str"),
    ("train_rlhf", {"steps": 10.0}, "TypeError", "steps must be an int, got float"),
    ("train_rlhf", {"kl_ctl": "adaptive", "horizon": None}, "TypeError", "horizon must be a real number, got NoneType"),
    ("train_rlhf", {"kl_ctl": "doubling", "target": "6"}, "TypeError", "target must be a real number, got str"),
    ("train_rlhf", {"vf_coef": "0"}, "TypeError", "vf_coef must be a real number, got str"),
    ("train_rm", {"lr": "0.1"}, "TypeError", "lr must be a real number, got str"),
    ("train_rm", {"epochs": True}, "TypeError", "epochs must be an int, got bool"),
    ("rm_train_step", {"lr": None}, "TypeError", "lr must be a real number, got NoneType"),
    ("sigmoid", {"z": "1"}, "TypeError", "z must be a real number, got str"),
    ("kl_k1", {"logp": None}, "TypeError", "logp must be a real number, got NoneType"),
    ("kl_k3", {"logq": b"0"}, "TypeError", "logq must be a real number, got bytes"),
    ("clipped_surrogate", {"eps": "0.2"}, "TypeError", "eps must be a real number, got str"),
    ("clipped_surrogate", {"a": 1.0}, "TypeError", "a must be an int token index, got float"),
    ("make_dataset", {"n": 3.0}, "TypeError", "n must be an int, got float"),
    ("best_of_n", {"samples": "10"}, "TypeError", "samples must be an int, got str"),
]


def bad_call(mod, function, bad, w):
    """``mod.function`` with lesson-sized arguments, ``bad`` replacing some of them."""
    theta, frozen = ref.init_policy(), ref.init_policy()
    calls = {
        "rlhf_step": lambda **k: mod.rlhf_step(theta, frozen, w, "help me", random.Random(0), **k),
        "train_rlhf": lambda **k: mod.train_rlhf(theta, frozen, w, **{"steps": 5, "seed": 0, **k}),
        "train_rm": lambda **k: mod.train_rm(ref.make_dataset(5, 0), **k),
        "rm_train_step": lambda **k: mod.rm_train_step(dict(w), "help me", "clear", "rude", k["lr"]),
        "sigmoid": lambda **k: mod.sigmoid(k["z"]),
        "kl_k1": lambda **k: mod.kl_k1(k["logp"], 0.0),
        "kl_k3": lambda **k: mod.kl_k3(0.0, k["logq"]),
        "clipped_surrogate": lambda **k: mod.clipped_surrogate(
            [0.0] * 8, k.get("a", 1), 0.125, 1.0, k.get("eps", 0.2)
        ),
        "make_dataset": lambda **k: mod.make_dataset(k["n"]),
        "best_of_n": lambda **k: mod.best_of_n(frozen, w, 4, **k),
    }
    return outcome(calls[function], **bad)


@pytest.mark.parametrize("function, bad, kind, message", BAD_SCALARS, ids=[f"{c[0]}-{list(c[1])[-1]}" for c in BAD_SCALARS])
def test_bad_scalar_arguments_are_named_as_the_reference_names_them(w, function, bad, kind, message):
    assert bad_call(rl, function, bad, w) == (kind, message)
    assert bad_call(ref, function, bad, w) == (kind, message)


@given(x=st.floats(allow_nan=False, allow_infinity=False, min_value=0.0, exclude_min=True))
def test_floats_in_messages_are_written_as_python_writes_them(x):
    """The messages print floats with Python's repr: shortest digits, exponents as 1e+300."""
    with pytest.raises(ValueError) as err:
        rl.clipped_surrogate([0.0] * 8, 0, -x, 1.0, 0.2)
    assert str(err.value) == f"p_old_a must be > 0, got {-x!r}"
    with pytest.raises(ValueError) as err:
        rl.train_rm(rl.make_dataset(3, 0), lr=-x)
    assert str(err.value) == f"lr must be > 0, got {-x!r}"


def test_special_floats_in_messages():
    for value, text in ((math.inf, "inf"), (-math.inf, "-inf"), (math.nan, "nan")):
        with pytest.raises(ValueError) as err:
            rl.kl_k1(value, 0.0)
        assert str(err.value) == f"logp must be finite, got {text}"
    for value, text in ((-1e-05, "-1e-05"), (-1e300, "-1e+300"), (-2.0**512, "-1.3407807929942597e+154")):
        with pytest.raises(ValueError) as err:
            rl.clipped_surrogate([0.0] * 8, 0, 0.1, 1.0, value)
        assert str(err.value) == f"eps must be > 0, got {text}"
