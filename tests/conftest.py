"""Shared configuration, strategies and helpers for the rlhf_fast test suite.

The suite runs once per backend (``RLHF_FAST_BACKEND=python`` or the default ``rust``).
Tests compare ``rlhf_fast`` (``api``) with ``rlhf_fast.reference`` (``ref``, the oracle).
Under the python backend ``api`` *is* the reference: a test that only compares the two is
marked ``rust_only``, and ``MODULES`` runs the reference alone, so that no test passes by
comparing the reference with itself.

Hypothesis profiles (``HYPOTHESIS_PROFILE``): ``dev`` (default, quick) and ``ci`` (thorough).
"""

from __future__ import annotations

import math
import os
import random
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import rlhf_fast as api
from rlhf_fast import reference as ref

# ------------------------------------------------------------------------ hypothesis

settings.register_profile(
    "dev",
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# CI runs the suite twice (once per backend) on 2 cores within a 15-minute budget.
settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    derandomize=False,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# --------------------------------------------------------------------------- backends

RUST = api.BACKEND == "rust"
rust_only = pytest.mark.skipif(not RUST, reason="only the rust backend has this code path")

# Parametrise a test over both implementations: error behaviour must be identical.
MODULES = pytest.mark.parametrize("mod", [api, ref], ids=["api", "reference"])

V = len(ref.VOCAB)
P = len(ref.PROMPTS)

# Float comparison against the reference (SPEC section 3: within 1e-9 relative).
RTOL = 1e-9
ATOL = 1e-12


def assert_close(actual, expected, rtol=RTOL, atol=ATOL, err_msg=""):
    """Floats (scalars or sequences) agree within the suite's tolerance; inf/nan must match."""
    np.testing.assert_allclose(
        np.asarray(actual, dtype=float), np.asarray(expected, dtype=float), rtol=rtol, atol=atol, err_msg=err_msg
    )


# How far a run's floats may follow rounding where the run amplifies it: a multiple of the
# reference's own spread when its inputs move by one ulp (the engines differ from the reference
# by a few ulps a step, where the nudge moves it once).
NUDGE_FACTOR = 1e3


def nudged(table):
    """``table`` with every entry moved by one ulp, up and down in turn."""
    table = np.asarray(table, dtype=float)
    signs = np.where(np.arange(table.size).reshape(table.shape) % 2 == 0, np.inf, -np.inf)
    return np.nextafter(table, signs)


def assert_run_close(actual, expected, nudged_run, atol, err_msg="", axis=0):
    """A run's floats (steps along ``axis``) against its reference twin's: within ``atol`` and
    the suite's ``rtol``, plus ``NUDGE_FACTOR`` times the reference's own distance from
    ``nudged_run``, its run on inputs moved by one ulp (the largest so far at each step).

    A chaotic run (large steps on a wide row: hypothesis finds them) multiplies a rounding
    difference by a few each step, and the reference itself then moves more than 1e-9 under a
    one-ulp nudge: its floats there are rounding, not the method."""
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    spread = np.abs(np.asarray(nudged_run, dtype=float) - expected)
    if spread.ndim:
        spread = np.fmax.accumulate(spread, axis=axis)
    tolerance = atol + RTOL * np.abs(expected) + NUDGE_FACTOR * np.nan_to_num(spread, nan=np.inf)
    same = (actual == expected) | (np.isnan(actual) & np.isnan(expected))
    bad = ~same & ~(np.abs(actual - expected) <= tolerance)
    assert not bad.any(), f"{err_msg}: {actual[bad][:5]} vs {expected[bad][:5]} (tolerance {tolerance[bad][:5]})"


def assert_policy_close(actual, expected, err_msg=""):
    """Two policies (dict prompt -> row, or [3, 8] array) hold the same logits."""
    assert_close(policy_array(actual), policy_array(expected), err_msg=err_msg)


def assert_weights_close(actual, expected):
    """Two weight dicts have the same keys and values within the tolerance."""
    assert set(actual) == set(expected), (sorted(actual), sorted(expected))
    keys = sorted(expected)
    assert_close([actual[k] for k in keys], [expected[k] for k in keys], err_msg=f"keys {keys}")


def assert_history_equal(actual, expected):
    """A ``train_rlhf`` history equals the reference's: ints exactly, floats within 1e-9."""
    assert set(actual) == set(ref.HISTORY_KEYS), sorted(actual)
    for key in ref.HISTORY_KEYS:
        a = np.asarray(actual[key])
        e = np.asarray(expected[key])
        assert a.shape == e.shape, (key, a.shape, e.shape)
        if key in ("prompt", "token"):
            # Report the first divergent step, the most useful thing to know.
            if not np.array_equal(a, e):
                first = int(np.flatnonzero(a != e)[0])
                raise AssertionError(f"history[{key!r}] first differs at step {first}: {a[first]} != {e[first]}")
        else:
            assert_close(a, e, err_msg=f"history[{key!r}]")


def outcome(fn, *args, **kwargs):
    """("ok", result) or (exception type name, message) for an ``Exception``.

    A BaseException such as pyo3's PanicException is deliberately not caught: it fails the test.
    """
    try:
        return "ok", fn(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - compared between the two implementations
        return type(err).__name__, str(err)


# The message of a run or step whose parameters overflowed (issue 9, spec section 3).
DIVERGED = re.compile(
    r"(train_rlhf|train_grpo|train_dpo) diverged at step \d+: logits overflowed \(lr=\S+, beta=\S+\)"
    r"|(rlhf_step|dpo_step|grpo_step) diverged: logits overflowed \(lr=\S+, beta=\S+\)"
    r"|train_rm diverged in epoch \d+: weights overflowed \(lr=\S+\)"
    r"|rm_train_step diverged: weights overflowed \(lr=\S+\)"
)


def assert_ok_or_diverged(status, result):
    """A call on valid arguments returns, or raises the spec's FloatingPointError; nothing else."""
    if status != "ok":
        assert status == "FloatingPointError", (status, result)
        assert DIVERGED.fullmatch(result), result


def copy_policy(theta):
    """A deep copy of a dict policy (fresh lists)."""
    return {x: list(row) for x, row in theta.items()}


def policy_array(theta) -> np.ndarray:
    """A policy as a float64 [3, 8] array in PROMPTS order."""
    if isinstance(theta, np.ndarray):
        return np.asarray(theta, dtype=float)
    return np.array([[float(v) for v in theta[x]] for x in ref.PROMPTS])


def policy_dict(arr) -> dict[str, list[float]]:
    """A [3, 8] array as a dict-of-lists policy."""
    return {x: [float(v) for v in arr[i]] for i, x in enumerate(ref.PROMPTS)}


def np_softmax(z) -> np.ndarray:
    z = np.asarray(z, dtype=float)
    e = np.exp(z - z.max())
    return e / e.sum()


def np_log_softmax(z) -> np.ndarray:
    z = np.asarray(z, dtype=float)
    s = z - z.max()
    return s - np.log(np.exp(s).sum())


def softplus(z: float) -> float:
    """``log(1 + exp(z))`` without overflow, written independently of the package."""
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


def rng_pair(seed: int, burn: int = 0) -> tuple[random.Random, random.Random]:
    """Two independent ``random.Random`` objects in the same state."""
    a = random.Random(seed)
    for _ in range(burn):
        a.random()
    b = random.Random()
    b.setstate(a.getstate())
    return a, b


@pytest.fixture(scope="session")
def rm_weights() -> dict[str, float]:
    """The lesson's reward model: ``train_rm(make_dataset(500, 0))`` by the reference (do not mutate)."""
    return ref.train_rm(ref.make_dataset(500, 0))


# --------------------------------------------------------------------------- strategies

OOV_WORDS = ("hello", "Clear", "great", "x", "é", "vague!", "0")


def floats(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


LARGE = 1e4
extreme_values = st.sampled_from([LARGE, -LARGE, 0.0, 1.0, -1.0])


def logits(min_size: int = 1, max_size: int = 12, lo: float = -50.0, hi: float = 50.0):
    """Finite logits in [lo, hi], and now and then a row with +-1e4 entries."""
    moderate = st.lists(floats(lo, hi), min_size=min_size, max_size=max_size)
    extreme = st.lists(st.one_of(extreme_values, floats(lo, hi)), min_size=min_size, max_size=max_size)
    return st.one_of(moderate, moderate, moderate, extreme)


def logit_row(lo: float = -50.0, hi: float = 50.0, extreme: bool = True):
    """One policy row: exactly V finite logits."""
    return logits(V, V, lo, hi) if extreme else st.lists(floats(lo, hi), min_size=V, max_size=V)


@st.composite
def prob_vectors(draw, min_size: int = 1, max_size: int = 12, zeros: bool = True):
    """Probability vectors (non-negative, summing to 1 within rounding), with exact zeros now and then."""
    n = draw(st.integers(min_size, max_size))
    elem = st.one_of(st.just(0.0), floats(0.0, 1.0)) if zeros else floats(1e-3, 1.0)
    raw = draw(st.lists(elem, min_size=n, max_size=n))
    if sum(raw) < 1e-3:
        raw[draw(st.integers(0, n - 1))] = 1.0
    total = 0.0
    for v in raw:
        total += v
    return [v / total for v in raw]


def policies(lo: float = -10.0, hi: float = 10.0, extreme: bool = False):
    """dict prompt -> list of V logits."""
    return st.fixed_dictionaries({x: logit_row(lo, hi, extreme) for x in ref.PROMPTS})


def policy_arrays(lo: float = -10.0, hi: float = 10.0):
    """float64 [3, 8] policies."""
    return st.lists(floats(lo, hi), min_size=P * V, max_size=P * V).map(lambda v: np.array(v).reshape(P, V))


@st.composite
def weight_dicts(draw, lo: float = -5.0, hi: float = 5.0, extra: bool = True):
    """Reward weights over VOCAB: some words may be missing, some OOV words present, ints allowed."""
    keys = draw(st.lists(st.sampled_from(ref.VOCAB + (OOV_WORDS if extra else ())), unique=True, max_size=V + 3))
    if draw(st.booleans()):
        keys = list(ref.VOCAB) + [k for k in keys if k not in ref.VOCAB]
    value = st.one_of(floats(lo, hi), st.integers(-3, 3))
    return {k: draw(value) for k in keys}


def content_weight_dicts(**kwargs):
    """Reward weights that tell words apart (training loops refuse a length-only reward)."""
    return weight_dicts(**kwargs).filter(lambda w: len({float(w.get(t, 0.0)) for t in ref.VOCAB}) > 1)


def seeds():
    """Seeds as random.Random takes them: mostly 0..2**40, sometimes huge or negative ints."""
    return st.one_of(
        st.integers(0, 2**40),
        st.integers(0, 2**40),
        st.integers(-(2**200), 2**200),
        st.sampled_from([0, 1, -1, 2**32 - 1, 2**32, 2**63, 2**64 - 1, 2**64, -(2**64), 2**128 + 7]),
    )


WHITESPACE = (" ", "  ", "\t", "\n", " \r\n ", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\xa0", "\u2003", "\u3000")


@st.composite
def responses(draw, vocab_only: bool = False, min_tokens: int = 0, max_tokens: int = 5, as_list: bool | None = None):
    """A response: a whitespace-joined string (odd separators included) or a list of tokens."""
    words = st.sampled_from(ref.VOCAB) if vocab_only else st.sampled_from(ref.VOCAB + OOV_WORDS)
    tokens = draw(st.lists(words, min_size=min_tokens, max_size=max_tokens))
    if as_list is None:
        as_list = draw(st.booleans())
    if as_list:
        return tokens
    seps = [draw(st.sampled_from(WHITESPACE)) for _ in tokens]
    lead = draw(st.sampled_from(["", " ", "\n"]))
    return lead + "".join(tok + sep for tok, sep in zip(tokens, seps)).rstrip(" ") if tokens else lead


prompts = st.sampled_from(ref.PROMPTS)
