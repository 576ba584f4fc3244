"""One table of bad inputs through both backends: the same exception, the same message.

Every public function of ``rlhf_fast.reference.__all__`` and every sweep front end has a
valid call here, and for each of its arguments the junk that argument can meet (wrong
types, a str for a float, a bool, None; NaN and infinities; negative and zero counts; empty
inputs; mismatched shapes; unknown prompts; wrong dtypes, non-contiguous and read-only
arrays; oversized counts), one argument at a time. Every row runs on the reference and on
the Rust-backed API (``rlhf_fast._fast``, the sweeps on ``rlhf_fast._core``'s engines),
whatever ``RLHF_FAST_BACKEND`` says, and both must give the same outcome: the same
exception type and message (issue 9, spec section 6), or both taking the input. A row also
says what the reference must do: refuse the input with that exception type and a message
naming the argument, or take it.

Rows with oversized counts run in a forked child with a memory cap and a time limit
(``sandbox.py``): a core that allocates from a user's count without checking it would
otherwise abort the test run, or exhaust the machine.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pytest
from fuzzing import on_engines, on_row_kernels
from rlhf_fast import reference as ref
from rlhf_fast import rows as rows_module
from rlhf_fast import sweep as sweep_module
from rlhf_fast.sequences import SequenceRewardModel, SequenceWorld
from rlhf_fast.worlds import Judge, RewardModel, World
from sandbox import forked, outcome_of

NAN, INF = math.nan, math.inf
P, V = len(ref.PROMPTS), len(ref.VOCAB)
W = {tok: (1.0 if tok in ref.GOOD_WORDS else -1.0) for tok in ref.VOCAB}
PAIRS = ref.make_dataset(6, 0)


class Backend:
    """A backend's lesson functions, and the sweep front ends run on its engines."""

    def __init__(self, functions: Any, engines: Any):
        self.functions = functions
        self.engines = engines

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("sweep_"):
            return getattr(self.functions, name)
        return on_engines(name, self.engines)  # "sweep_rlhf[world]" is sweep_rlhf


REFERENCE = Backend(ref, sweep_module._ReferenceEngines)


@pytest.fixture(scope="module")
def rust() -> Backend:
    """The Rust-backed API under either backend setting (skipped only without the extension)."""
    fast = pytest.importorskip("rlhf_fast._fast")
    return Backend(fast, pytest.importorskip("rlhf_fast._core"))


# ------------------------------------------------------------------------------ junk


class Junk(NamedTuple):
    """A bad value for an argument: how to make it (fresh each call), what the reference
    raises for it (None: it takes it), and whether it is an oversized count."""

    label: str
    make: Callable[[], Any]
    exc: type[Exception] | None
    oversized: bool = False


def junk(label: str, value: Any, exc: type[Exception] | None, oversized: bool = False) -> Junk:
    """A value that needs no fresh copy, or a factory (a lambda) for a dict, a list or an array."""
    return Junk(label, value if callable(value) else (lambda: value), exc, oversized)


def axis(values: list[Junk]) -> list[Junk]:
    """Junk for a sweep setting that may be given as a sequence (an axis): a list is no junk."""
    return [bad for bad in values if bad.label != "list"]


def reals(check: str, optional: bool = False) -> list[Junk]:
    """Junk for a float argument checked ``positive``, ``non_negative``, ``finite`` or
    ``not_nan``."""
    out = [
        junk("str", "0.1", TypeError),
        junk("bool", True, TypeError),
        junk("list", lambda: [0.1], TypeError),
        junk("complex", 1j, TypeError),
        junk("nan", NAN, ValueError),
    ]
    if not optional:
        out.append(junk("none", None, TypeError))
    if check != "not_nan":
        out += [junk("inf", INF, ValueError), junk("-inf", -INF, ValueError)]
    if check in ("positive", "non_negative"):
        out.append(junk("negative", -1.0, ValueError))
    if check == "positive":
        out.append(junk("zero", 0.0, ValueError))
    return out


def ints(minimum: int | None = None, maximum: int | None = None, sized: bool = False, optional: bool = False):
    """Junk for an int argument: a count ``>= minimum`` (``<= maximum``; ``sized``: one whose
    outputs are checked against max_memory), or any int (a seed) when ``minimum`` is None.
    The oversized values are the issue's: 10**13 steps aborted the process, 2**62 raised a
    PanicException, 2**64 overflows an i64."""
    out = [
        junk("float", 2.0, TypeError),
        junk("str", "2", TypeError),
        junk("bool", True, TypeError),
        junk("list", lambda: [2], TypeError),
        junk("numpy-float", np.float64(2.0), TypeError),
    ]
    if not optional:
        out.append(junk("none", None, TypeError))
    if minimum is not None:
        out += [junk("below", minimum - 1, ValueError), junk("-2**64", -(2**64), ValueError)]
    if maximum is not None:
        out.append(junk("above", maximum + 1, ValueError, oversized=True))
    if sized:
        out += [junk("10**13", 10**13, ValueError, oversized=True), junk("2**62", 2**62, ValueError, oversized=True)]
    if sized or maximum is not None:
        out.append(junk("2**64", 2**64, ValueError, oversized=True))
    return out


# A group of 2**31 samples: its draws alone would take 16 GiB (the issue's abort).
HUGE_GROUP = junk("2**31", 2**31, ValueError, oversized=True)


def options(choices: tuple[str, ...]) -> list[Junk]:
    return [
        junk("int", 1, TypeError),
        junk("none", None, TypeError),
        junk("list", lambda: [choices[0]], TypeError),
        junk("unknown", "nope", ValueError),
        junk("wrong-case", choices[0].upper(), ValueError),
    ]


def with_row(prompt: str, row: Any) -> dict:
    theta = ref.init_policy()
    theta[prompt] = row
    return theta


def without(prompt: str) -> dict:
    theta = ref.init_policy()
    del theta[prompt]
    return theta


def array(dtype: Any = np.float64, shape: tuple[int, ...] = (P, V), fill: float = 0.0) -> Callable[[], np.ndarray]:
    return lambda: np.full(shape, fill, dtype=dtype)


def readonly() -> np.ndarray:
    a = np.zeros((P, V))
    a.flags.writeable = False
    return a


def policies(updated: bool) -> list[Junk]:
    """Junk for a policy: the dict forms, then the array forms."""
    in_place = TypeError if updated else None  # what a call that updates it says to a fixed form
    return [
        junk("none", None, TypeError),
        junk("str", "theta", TypeError),
        junk("int", 3, TypeError),
        junk("nested-list", lambda: [[0.0] * V for _ in range(P)], TypeError),
        junk("missing-prompt", lambda: without("answer me"), ValueError),
        junk("short-row", lambda: with_row("help me", [0.0] * (V - 1)), ValueError),
        junk("long-row", lambda: with_row("explain this", [0.0] * (V + 1)), ValueError),
        junk("empty-row", lambda: with_row("help me", []), ValueError),
        junk("nan", lambda: with_row("answer me", [0.0] * (V - 1) + [NAN]), ValueError),
        junk("inf", lambda: with_row("help me", [INF] + [0.0] * (V - 1)), ValueError),
        junk("str-entry", lambda: with_row("help me", ["0"] * V), TypeError),
        junk("none-entry", lambda: with_row("help me", [None] * V), TypeError),
        junk("bool-entry", lambda: with_row("help me", [True] + [0.0] * (V - 1)), TypeError),
        junk("row-none", lambda: with_row("help me", None), TypeError),
        junk("row-str", lambda: with_row("help me", "abcdefgh"), TypeError),
        junk("row-dict", lambda: with_row("help me", dict.fromkeys(range(V), 0.0)), TypeError),
        junk("tuple-row", lambda: with_row("help me", (0.0,) * V), in_place),
        junk("array-row", lambda: with_row("help me", np.zeros(V)), in_place),
        junk("array-2x8", array(shape=(P - 1, V)), ValueError),
        junk("array-3x7", array(shape=(P, V - 1)), ValueError),
        junk("array-0x8", array(shape=(0, V)), ValueError),
        junk("array-flat", array(shape=(P * V,)), TypeError),
        junk("array-3x8x1", array(shape=(P, V, 1)), TypeError),
        junk("array-int64", array(np.int64), TypeError),
        junk("array-float32", array(np.float32), TypeError),
        junk("array-object", array(object), TypeError),
        junk("array-big-endian", array(">f8"), TypeError),
        junk("array-nan", array(fill=NAN), ValueError),
        junk("array-inf", array(fill=-INF), ValueError),
        junk("array-readonly", readonly, in_place),
        junk("array-strided", lambda: np.zeros((P, 2 * V))[:, ::2], None),
        junk("array-fortran", lambda: np.asfortranarray(np.zeros((P, V))), None),
    ]


def weights(name: str = "w", content: bool = False) -> list[Junk]:
    """Junk for a reward model (``content``: one the training loops and Best-of-N use, which
    must tell words apart)."""
    out = [
        junk("none", None, TypeError),
        junk("list", lambda: [0.0] * V, TypeError),
        junk("str", name, TypeError),
        junk("nan", lambda: {**W, "clear": NAN}, ValueError),
        junk("inf", lambda: {**W, "rude": INF}, ValueError),
        junk("str-value", lambda: {**W, "clear": "1"}, TypeError),
        junk("none-value", lambda: {**W, "kind": None}, TypeError),
        junk("bool-value", lambda: {**W, "clear": True}, TypeError),
        junk("oov-nan", lambda: {**W, "hello": NAN}, ValueError),
    ]
    if content:
        out += [
            junk("empty", dict, ValueError),
            junk("zeros", lambda: dict.fromkeys(ref.VOCAB, 0.0), ValueError),
            junk("equal", lambda: dict.fromkeys(ref.VOCAB, 0.7), ValueError),
            junk("oov-only", lambda: {"hello": 1.0}, ValueError),
        ]
    return out


PROMPT = [
    junk("int", 0, TypeError),
    junk("none", None, TypeError),
    junk("bytes", b"help me", TypeError),
    junk("unknown", "hello", ValueError),
    junk("wrong-case", "Help me", ValueError),
]
TOKENS = [  # a response of any tokens
    junk("none", None, TypeError),
    junk("int", 1, TypeError),
    junk("int-tokens", lambda: [1, 2], TypeError),
    junk("generator", lambda: (t for t in ["clear"]), TypeError),
    junk("dict", lambda: {"clear": 1}, TypeError),
]
RESPONSE = [  # a DPO response: at least one token, every one in VOCAB
    *TOKENS,
    junk("empty", "", ValueError),
    junk("blank", " \t\n", ValueError),
    junk("empty-list", list, ValueError),
    junk("oov", "clear hello", ValueError),
    junk("wrong-case", "Clear", ValueError),
]
RNG = [junk("none", None, TypeError), junk("int", 0, TypeError), junk("str", "rng", TypeError), junk("dict", dict, TypeError)]
PROBS = [
    junk("empty", list, ValueError),
    junk("nan", lambda: [NAN, 1.0], ValueError),
    junk("inf", lambda: [INF, 0.0], ValueError),
    junk("negative", lambda: [1.5, -0.5], ValueError),
    junk("unnormalised", lambda: [0.5, 0.6], ValueError),
    junk("str-entry", lambda: ["0.5", 0.5], TypeError),
    junk("bool-entry", lambda: [True, 0.0], TypeError),
    junk("none", None, TypeError),
    junk("str", "ab", TypeError),
    junk("int", 1, TypeError),
    junk("generator", lambda: (p for p in [0.5, 0.5]), TypeError),
    junk("array-2d", lambda: np.array([[0.5, 0.5]]), TypeError),
    junk("array-strided", lambda: np.array([0.5, 9.0, 0.5])[::2], None),
]
LOGITS = [
    junk("empty", list, ValueError),
    junk("nan", lambda: [0.0, NAN], ValueError),
    junk("inf", lambda: [0.0, INF], ValueError),
    junk("str-entry", lambda: [0.0, "1"], TypeError),
    junk("none-entry", lambda: [None, 1.0], TypeError),
    junk("bool-entry", lambda: [True, 1.0], TypeError),
    junk("none", None, TypeError),
    junk("str", "01", TypeError),
    junk("int", 1, TypeError),
    junk("generator", lambda: (z for z in [0.0, 1.0]), TypeError),
]
ARRAY_LOGITS = [  # softmax and log_softmax take arrays, 1-D or 2-D (row-wise)
    junk("array-empty", lambda: np.zeros(0), ValueError),
    junk("array-no-columns", lambda: np.zeros((2, 0)), ValueError),
    junk("array-3d", lambda: np.zeros((2, 2, 2)), ValueError),
    junk("array-nan", lambda: np.array([[0.0, 1.0], [NAN, 0.0]]), ValueError),
    junk("array-str", lambda: np.array(["a", "b"]), TypeError),
    junk("array-object", lambda: np.array([1.0, None], dtype=object), TypeError),
    junk("array-complex", lambda: np.array([1j, 0j]), TypeError),
    junk("array-int", lambda: np.array([1, 2]), None),
    junk("array-float32", lambda: np.array([[1.0, 2.0]], dtype=np.float32), None),
    junk("array-strided", lambda: np.arange(12.0).reshape(3, 4)[:, ::2], None),
]
TOKEN_INDEX = [
    junk("float", 1.0, TypeError),
    junk("str", "1", TypeError),
    junk("bool", True, TypeError),
    junk("none", None, TypeError),
    junk("negative", -1, ValueError),
    junk("too-big", 2, ValueError),
    junk("2**64", 2**64, ValueError),
]
VALUE = [
    junk("float", 1.0, TypeError),
    junk("str", "abc", TypeError),
    junk("tuple", (0.0, 0.0, 0.0), TypeError),
    junk("array", lambda: np.zeros(P), TypeError),
    junk("short-list", lambda: [0.0, 0.0], ValueError),
    junk("missing-prompt", lambda: {"help me": 0.0}, ValueError),
    junk("nan", lambda: [0.0, NAN, 0.0], ValueError),
    junk("inf", lambda: {"help me": 0.0, "answer me": INF, "explain this": 0.0}, ValueError),
    junk("str-entry", lambda: {"help me": "1", "answer me": 0.0, "explain this": 0.0}, TypeError),
    junk("bool-entry", lambda: [True, 0.0, 0.0], TypeError),
]
PAIRS_OF_TRIPLES = [  # any preference pairs: a reward model's
    junk("none", None, TypeError),
    junk("int", 5, TypeError),
    junk("str", "abc", TypeError),
    junk("item-int", lambda: [5], TypeError),
    junk("item-str", lambda: ["abc"], TypeError),
    junk("short-triple", lambda: [("help me", "clear")], ValueError),
    junk("long-triple", lambda: [("help me", "clear", "rude", "x")], ValueError),
    junk("row-missing-key", lambda: [{"prompt": "help me", "chosen": "clear"}], ValueError),
    junk("prompt-int", lambda: [(1, "clear", "rude")], TypeError),
    junk("chosen-none", lambda: [("help me", None, "rude")], TypeError),
    junk("rejected-int-tokens", lambda: [("help me", "clear", [1])], TypeError),
]
NON_EMPTY_PAIRS = [*PAIRS_OF_TRIPLES, junk("empty", list, ValueError)]
DPO_PAIRS = [
    *NON_EMPTY_PAIRS,
    junk("unknown-prompt", lambda: [("hello", "clear", "rude")], ValueError),
    junk("oov-token", lambda: [*PAIRS, ("help me", "clear hello", "rude")], ValueError),
    junk("empty-response", lambda: [("help me", "clear", " ")], ValueError),
    junk("generator", lambda: (pair for pair in PAIRS), None),
]
SEEDS = [  # a sweep's seed axis: a count or ints
    junk("10**12", 10**12, ValueError, oversized=True),
    junk("zero", 0, ValueError),
    junk("negative", -3, ValueError),
    junk("float", 2.0, TypeError),
    junk("str", "3", TypeError),
    junk("empty", list, ValueError),
    junk("float-entry", lambda: [0, 1.5], TypeError),
    junk("str-entry", lambda: [0, "1"], TypeError),
    junk("bool-entry", lambda: [0, True], TypeError),
]
AXIS_OF_REALS = [  # a first axis (betas): a sequence only
    junk("scalar", 0.1, TypeError),
    junk("str", "0.1", TypeError),
    junk("none", None, TypeError),
    junk("empty", list, ValueError),
    junk("nan-entry", lambda: [0.1, NAN], ValueError),
    junk("negative-entry", lambda: [-0.1], ValueError),
    junk("str-entry", lambda: ["0.1"], TypeError),
    junk("array-0d", lambda: np.array(0.1), TypeError),
]
PROGRESS = [junk("str", "yes", TypeError), junk("int", 1, TypeError)]
THREADS = [junk("zero", 0, ValueError), junk("float", 2.0, TypeError), junk("str", "2", TypeError)]
MAX_MEMORY = [junk("zero", 0, ValueError), junk("float", 1e9, TypeError), junk("str", "1e9", TypeError)]


# ------------------------------------------------------------------ the functions


def theta0() -> dict:
    return ref.init_policy()


# function -> (its valid arguments, fresh for each call; junk per argument)
FUNCTIONS: dict[str, tuple[Callable[[], dict], dict[str, list[Junk]]]] = {
    "seed_key": (lambda: dict(seed=0), {"seed": ints()}),
    "make_pair": (lambda: dict(rng=random.Random(0)), {"rng": RNG}),
    "make_dataset": (lambda: dict(n=3, seed=0), {"n": ints(0, sized=True), "seed": ints()}),
    "PreferenceSet": (lambda: dict(pairs=PAIRS), {"pairs": PAIRS_OF_TRIPLES}),
    "PreferenceSet.make_dataset": (lambda: dict(n=3, seed=0), {"n": ints(0, sized=True), "seed": ints()}),
    "pairs_to_rows": (lambda: dict(pairs=PAIRS), {"pairs": PAIRS_OF_TRIPLES[:6]}),
    "rows_to_pairs": (
        lambda: dict(rows=ref.pairs_to_rows(PAIRS)),
        {"rows": [junk("none", None, TypeError), junk("item-tuple", lambda: [("help me", "clear", "rude")], TypeError),
                  junk("missing-key", lambda: [{"prompt": "help me", "chosen": "clear"}], ValueError)]},
    ),
    "bag": (lambda: dict(y="clear kind"), {"y": TOKENS}),
    "dot": (lambda: dict(w=dict(W), b={"clear": 2}), {"w": weights(), "b": weights("b")}),
    "sigmoid": (lambda: dict(z=0.5), {"z": reals("not_nan")}),
    "rm_train_step": (
        lambda: dict(w=dict(W), x="help me", y_pos="clear kind", y_neg="rude", lr=0.1),
        {"w": weights(), "y_pos": TOKENS, "y_neg": TOKENS, "lr": reals("positive")},
    ),
    "train_rm": (
        lambda: dict(pairs=PAIRS, epochs=2, lr=0.1, w=None),
        {"pairs": NON_EMPTY_PAIRS, "epochs": ints(0), "lr": reals("positive"), "w": weights()[1:]},
    ),
    "pairwise_accuracy": (lambda: dict(w=dict(W), pairs=PAIRS), {"w": weights(), "pairs": NON_EMPTY_PAIRS}),
    "init_policy": (dict, {}),
    "policy_logits": (lambda: dict(theta=theta0(), prompt="help me"), {"theta": policies(False), "prompt": PROMPT}),
    "softmax": (lambda: dict(z=[0.0, 1.0]), {"z": LOGITS + ARRAY_LOGITS}),
    "log_softmax": (lambda: dict(z=[0.0, 1.0]), {"z": LOGITS + ARRAY_LOGITS}),
    "kl": (
        lambda: dict(p=[0.5, 0.5], q=[0.25, 0.75]),
        {"p": PROBS, "q": [*PROBS, junk("length-mismatch", lambda: [0.25, 0.25, 0.5], ValueError)]},
    ),
    **{
        name: (lambda: dict(logp=-1.0, logq=-2.0), {"logp": reals("finite"), "logq": reals("finite")})
        for name in ("kl_k1", "kl_k2", "kl_k3")
    },
    "sample": (lambda: dict(probs=[0.5, 0.5], rng=random.Random(0)), {"probs": PROBS, "rng": RNG}),
    **{
        name: (
            lambda: dict(logits=[0.0, 1.0], a=0, p_old_a=0.5, advantage=1.0, eps=0.2),
            {"logits": LOGITS, "a": TOKEN_INDEX, "p_old_a": reals("positive"), "advantage": reals("finite"),
             "eps": reals("positive")},
        )
        for name in ("clipped_surrogate", "clipped_surrogate_grad")
    },
    "rlhf_step": (
        lambda: dict(theta=theta0(), ref=theta0(), w=dict(W), prompt="help me", rng=random.Random(0), eps=0.2,
                     beta=0.1, lr=0.05, ppo_epochs=4, kl_penalty="full", vf_coef=0.5, cliprange_value=0.2,
                     value=[0.0, 0.0, 0.0]),
        {"theta": policies(True), "ref": policies(False), "w": weights(), "prompt": PROMPT, "rng": RNG,
         "eps": reals("positive"), "beta": reals("non_negative"), "lr": reals("positive"),
         "ppo_epochs": ints(1, 10_000), "kl_penalty": options(ref.KL_PENALTIES), "vf_coef": reals("non_negative"),
         "cliprange_value": reals("positive"), "value": VALUE},
    ),
    "train_rlhf": (
        lambda: dict(theta=theta0(), ref=theta0(), w=dict(W), steps=5, seed=0, eps=0.2, beta=0.1, lr=0.05,
                     ppo_epochs=4, kl_ctl="adaptive", target=0.5, horizon=100.0, kl_threshold=1.0, kl_penalty="full",
                     vf_coef=0.5, cliprange_value=0.2, value=None),
        {"theta": policies(True), "ref": policies(False), "w": weights(content=True), "steps": ints(1, sized=True),
         "seed": ints(), "eps": reals("positive"), "beta": reals("non_negative"), "lr": reals("positive"),
         "ppo_epochs": ints(1, 10_000), "kl_ctl": options(ref.KL_CONTROLLERS), "target": reals("positive"),
         "horizon": reals("positive"), "kl_threshold": reals("positive"), "kl_penalty": options(ref.KL_PENALTIES),
         "vf_coef": reals("non_negative"), "cliprange_value": reals("positive"), "value": VALUE},
    ),
    "make_kl_controller": (
        lambda: dict(kind="adaptive", beta=0.1, target=0.5, horizon=100.0),
        {"kind": options(ref.KL_CONTROLLERS), "beta": reals("non_negative"), "target": reals("positive"),
         "horizon": reals("positive")},
    ),
    "FixedKLController": (lambda: dict(kl_coef=0.1), {"kl_coef": reals("non_negative")}),
    "AdaptiveKLController": (
        lambda: dict(init_kl_coef=0.1, target=0.5, horizon=100.0),
        {"init_kl_coef": reals("non_negative"), "target": reals("positive"), "horizon": reals("positive")},
    ),
    "DoublingKLController": (
        lambda: dict(init_kl_coef=0.1, target=0.5),
        {"init_kl_coef": reals("non_negative"), "target": reals("positive")},
    ),
    "dpo_step": (
        lambda: dict(theta=theta0(), ref=theta0(), x="help me", y_pos="clear", y_neg="rude", beta=0.1, lr=0.05,
                     loss_type="sigmoid", label_smoothing=0.0),
        {"theta": policies(True), "ref": policies(False), "x": PROMPT, "y_pos": RESPONSE, "y_neg": RESPONSE,
         "beta": reals("positive"), "lr": reals("positive"), "loss_type": options(ref.DPO_LOSS_TYPES),
         "label_smoothing": [*reals("finite"), junk("half", 0.5, ValueError), junk("negative", -0.1, ValueError)]},
    ),
    "train_dpo": (
        lambda: dict(theta=theta0(), ref=theta0(), pairs=PAIRS, epochs=2, beta=0.1, lr=0.05, loss_type="ipo",
                     label_smoothing=0.0, seed=3),
        {"theta": policies(True), "ref": policies(False), "pairs": DPO_PAIRS, "epochs": ints(1, sized=True),
         "beta": reals("positive"), "lr": reals("positive"), "loss_type": options(ref.DPO_LOSS_TYPES),
         "label_smoothing": [*reals("finite"), junk("negative", -0.1, ValueError),
                             junk("with-ipo", 0.1, ValueError)],
         "seed": ints(optional=True)},
    ),
    "grpo_step": (
        lambda: dict(theta=theta0(), ref=theta0(), w=dict(W), prompt="help me", rng=random.Random(0),
                     num_generations=4, beta=0.04, epsilon=0.2, epsilon_high=0.28, lr=0.05, scale_rewards="group",
                     num_iterations=2),
        {"theta": policies(True), "ref": policies(False), "w": weights(), "prompt": PROMPT, "rng": RNG,
         "num_generations": [*ints(2, 65_536), HUGE_GROUP], "beta": reals("non_negative"),
         "epsilon": reals("positive"), "epsilon_high": reals("positive", optional=True), "lr": reals("positive"),
         "scale_rewards": options(ref.SCALE_REWARDS), "num_iterations": ints(1, 10_000)},
    ),
    "train_grpo": (
        lambda: dict(theta=theta0(), ref=theta0(), w=dict(W), steps=4, seed=0, num_generations=4, beta=0.04,
                     epsilon=0.2, epsilon_high=None, lr=0.05, scale_rewards="none", num_iterations=1,
                     kl_threshold=1.0),
        {"theta": policies(True), "ref": policies(False), "w": weights(content=True), "steps": ints(1, sized=True),
         "seed": ints(), "num_generations": [*ints(2, 65_536), HUGE_GROUP], "beta": reals("non_negative"),
         "epsilon": reals("positive"), "epsilon_high": reals("positive", optional=True), "lr": reals("positive"),
         "scale_rewards": options(ref.SCALE_REWARDS), "num_iterations": ints(1, 10_000),
         "kl_threshold": reals("positive")},
    ),
    "best_of_n": (  # no samples: a huge n is only a power in the exact law, not n draws each
        lambda: dict(policy=theta0(), w=dict(W), n=4, samples=0, seed=0),
        {"policy": policies(False), "w": weights(content=True), "n": [*ints(1, 1_000_000_000)], "samples": ints(0),
         "seed": ints()},
    ),
    "expected_score": (lambda: dict(theta=theta0(), w=dict(W)), {"theta": policies(False), "w": weights()}),
    "policy_kl": (lambda: dict(theta=theta0(), ref=theta0()), {"theta": policies(False), "ref": policies(False)}),
}

SWEEPS: dict[str, tuple[Callable[[], dict], dict[str, list[Junk]]]] = {
    "sweep_rlhf": (
        lambda: dict(w=dict(W), betas=[0.0, 0.1], seeds=2, steps=3, lr=[0.05, 0.1], kl_ctl="doubling", vf_coef=0.5),
        {"w": weights(content=True), "betas": AXIS_OF_REALS, "seeds": SEEDS, "steps": ints(1, sized=True),
         "eps": axis(reals("positive")), "lr": axis(reals("positive")), "ppo_epochs": axis(ints(1, 10_000)),
         "kl_ctl": axis(options(ref.KL_CONTROLLERS)), "target": axis(reals("positive")),
         "horizon": axis(reals("positive")),
         # None is kl_penalty's default: "full" without a world, "k1" in one
         "kl_penalty": [bad for bad in axis(options(ref.KL_PENALTIES)) if bad.label != "none"],
         "vf_coef": axis(reals("non_negative", optional=True)), "cliprange_value": axis(reals("positive")),
         "theta": policies(False)[1:], "ref": policies(False)[1:],
         "world": [junk("str", "lesson", TypeError), junk("int", 1, TypeError)],
         "record_every": ints(0), "n_threads": THREADS, "progress": PROGRESS, "max_memory": MAX_MEMORY,
         "exact": [junk("str", "yes", TypeError)], "simd": [junk("int", 1, TypeError)]},
    ),
    "sweep_rm": (
        lambda: dict(pairs=PAIRS, lrs=[0.1, 0.3], epochs=2, n_pairs=[3, 6], heldout=PAIRS),
        {"pairs": NON_EMPTY_PAIRS, "lrs": axis(reals("positive")), "epochs": axis(ints(0)),
         "n_pairs": [junk("zero", 0, ValueError), junk("too-many", 7, ValueError), junk("float", 2.0, TypeError)],
         "heldout": [junk("empty", list, ValueError), junk("int", 5, TypeError), *PAIRS_OF_TRIPLES[3:]],
         "n_threads": THREADS, "progress": PROGRESS, "max_memory": MAX_MEMORY},
    ),
    "sweep_dpo": (
        lambda: dict(pairs=PAIRS, betas=[0.1, 0.5], seeds=[None, 1], w=dict(W)),
        {"pairs": DPO_PAIRS[:-1], "betas": [*AXIS_OF_REALS, junk("zero-entry", lambda: [0.0], ValueError)],
         "seeds": SEEDS, "loss_type": axis(options(ref.DPO_LOSS_TYPES)),
         "label_smoothing": [*axis(reals("finite")), junk("half", 0.5, ValueError)], "lr": axis(reals("positive")),
         "epochs": axis(ints(1)), "theta": policies(False)[1:], "ref": policies(False)[1:], "w": weights()[1:],
         "record_every": ints(0), "n_threads": THREADS, "progress": PROGRESS, "max_memory": MAX_MEMORY},
    ),
    "sweep_grpo": (
        lambda: dict(w=dict(W), betas=[0.0, 0.04], seeds=2, steps=3, num_generations=[2, 4]),
        {"w": weights(content=True), "betas": AXIS_OF_REALS, "seeds": SEEDS, "steps": ints(1, sized=True),
         "num_generations": axis(ints(2, 65_536)), "epsilon": axis(reals("positive")),
         "epsilon_high": reals("positive", optional=True), "lr": axis(reals("positive")),
         "scale_rewards": options(ref.SCALE_REWARDS), "num_iterations": axis(ints(1, 10_000)),
         "theta": policies(False)[1:], "ref": policies(False)[1:], "record_every": ints(0), "n_threads": THREADS,
         "progress": PROGRESS, "max_memory": MAX_MEMORY},
    ),
    "sweep_best_of_n": (
        lambda: dict(w=dict(W), ns=[1, 4], seeds=2, samples=5),
        {"w": weights(content=True),
         "ns": [junk("scalar", 4, TypeError), junk("empty", list, ValueError),
                junk("zero-entry", lambda: [0], ValueError), junk("float-entry", lambda: [2.0], TypeError),
                junk("above-entry", lambda: [10**9 + 1], ValueError)],
         "seeds": SEEDS, "samples": ints(0, optional=True), "policy": policies(False)[1:], "n_threads": THREADS,
         "progress": PROGRESS, "max_memory": MAX_MEMORY},
    ),
}


# PPO in a world: each backend's engine (Rust's, the reference twin) behind the one front end.
WORLD = World(n_prompts=2, vocab=8, response_len=3, seed=0)


def world_rm(vocab: int = 8) -> RewardModel:
    return RewardModel(np.linspace(-1.0, 1.0, vocab))


class _Submits:
    """An executor as far as the front end can tell."""

    def submit(self, *args: Any) -> None:
        raise AssertionError("a world sweep must not reach an executor")


SWEEPS["sweep_rlhf[world]"] = (
    lambda: dict(w=world_rm(), world=WORLD, betas=[0.0, 0.1], seeds=2, steps=3, lr=[0.05, 0.1], vf_coef=0.5),
    {"w": [junk("dict", lambda: dict(W), TypeError), junk("none", None, TypeError),
           junk("array", lambda: np.zeros(8), TypeError), junk("wrong-vocab", lambda: world_rm(9), ValueError)],
     "world": [junk("str", "lesson", TypeError), junk("int", 1, TypeError), junk("class", lambda: World, TypeError),
               junk("other-vocab", lambda: World(n_prompts=2, vocab=9, response_len=3), ValueError)],
     "betas": AXIS_OF_REALS, "seeds": SEEDS, "steps": ints(1, sized=True),
     "eps": axis(reals("positive")), "lr": axis(reals("positive")), "ppo_epochs": axis(ints(1, 10_000)),
     # a world's engine keeps beta fixed: any other controller is refused, by name
     "kl_ctl": [*axis(options(ref.KL_CONTROLLERS)), junk("adaptive", "adaptive", ValueError),
                junk("axis-doubling", lambda: ["fixed", "doubling"], ValueError)],
     "target": axis(reals("positive")), "horizon": axis(reals("positive")),
     "kl_penalty": [bad for bad in axis(options(ref.KL_PENALTIES)) if bad.label != "none"],
     "vf_coef": axis(reals("non_negative", optional=True)), "cliprange_value": axis(reals("positive")),
     # the lesson's policies, an executor, shards and a vector path have no place in a world
     "theta": [junk("init", theta0, ValueError), junk("str", "theta", TypeError)],
     "ref": [junk("init", theta0, ValueError), junk("int", 3, TypeError)],
     "executor": [junk("submits", _Submits, ValueError), junk("str", "pool", TypeError)],
     "shards": [junk("two", 2, ValueError), junk("zero", 0, ValueError)],
     "simd": [junk("portable", "portable", ValueError), junk("int", 1, TypeError)],
     "record_every": ints(0), "n_threads": THREADS, "progress": PROGRESS, "max_memory": MAX_MEMORY,
     "exact": [junk("str", "yes", TypeError)]},
)

# Token PPO in a sequence world (world=SequenceWorld), each backend's engine behind the one front end.
SEQUENCE_WORLD = SequenceWorld(n_prompts=2, vocab=5, max_len=3, seed=0)


def sequence_rm(vocab: int = 5) -> SequenceRewardModel:
    return SequenceRewardModel(np.r_[0.0, np.linspace(-1.0, 1.0, vocab - 1)], length_weight=0.5)


SWEEPS["sweep_rlhf[sequence]"] = (
    lambda: dict(w=sequence_rm(), world=SEQUENCE_WORLD, betas=[0.0, 0.1], seeds=2, steps=3, lr=[0.05, 0.1],
                 batch_size=4),
    {"w": [junk("dict", lambda: dict(W), TypeError), junk("none", None, TypeError),
           junk("bag-rm", lambda: world_rm(5), TypeError), junk("wrong-vocab", lambda: sequence_rm(6), ValueError)],
     "betas": AXIS_OF_REALS, "seeds": SEEDS, "steps": ints(1, sized=True),
     # the engine shares every setting but beta, lr and the seed between runs
     "eps": [*axis(reals("positive")), junk("axis", lambda: [0.1, 0.2], ValueError)],
     "lr": axis(reals("positive")), "ppo_epochs": [*axis(ints(1, 1 << 10)), junk("axis", lambda: [1, 2], ValueError)],
     "kl_ctl": [junk("adaptive", "adaptive", ValueError), junk("int", 1, TypeError)],
     "kl_penalty": [junk("full", "full", ValueError), junk("int", 1, TypeError)],
     "vf_coef": axis(reals("non_negative", optional=True)), "cliprange_value": axis(reals("positive")),
     "batch_size": [junk("one", 1, ValueError), junk("str", "4", TypeError)],
     "length_normalize": [junk("str", "yes", TypeError)],
     "length_penalty": [junk("negative", -1.0, ValueError), junk("nan", NAN, ValueError)],
     "theta": [junk("init", theta0, ValueError)], "simd": [junk("portable", "portable", ValueError)],
     "record_every": ints(0), "n_threads": THREADS, "progress": PROGRESS, "max_memory": MAX_MEMORY,
     "exact": [junk("str", "yes", TypeError)]},
)

# Best-of-N in a world, on each backend's engine behind the one front end.
SWEEPS["sweep_best_of_n[world]"] = (
    lambda: dict(w=world_rm(), world=WORLD, ns=[1, 4], seeds=2, samples=5),
    {"w": [junk("dict", lambda: dict(W), TypeError), junk("none", None, TypeError),
           junk("array", lambda: np.zeros(8), TypeError), junk("wrong-vocab", lambda: world_rm(9), ValueError)],
     "world": [junk("str", "lesson", TypeError), junk("int", 1, TypeError), junk("class", lambda: World, TypeError),
               junk("other-vocab", lambda: World(n_prompts=2, vocab=9, response_len=3), ValueError)],
     "ns": [junk("scalar", 4, TypeError), junk("empty", list, ValueError), junk("zero-entry", lambda: [0], ValueError),
            junk("float-entry", lambda: [2.0], TypeError), junk("above-entry", lambda: [10**9 + 1], ValueError)],
     "seeds": SEEDS, "samples": ints(2, optional=True),
     # a world's Best-of-N samples its own reference
     "policy": [junk("init", theta0, ValueError), junk("str", "policy", ValueError)],
     "n_threads": THREADS, "progress": PROGRESS, "max_memory": MAX_MEMORY},
)


# DPO in a world: its labelled pairs, each backend's engine behind the one front end.
WORLD_PAIRS = WORLD.preferences(5, seed=1)

SWEEPS["sweep_dpo[world]"] = (
    lambda: dict(pairs=WORLD_PAIRS, world=WORLD, betas=[0.1, 0.5], seeds=[None, 1], epochs=[1, 2], w=world_rm()),
    {"pairs": [junk("lesson-triples", lambda: PAIRS, TypeError), junk("none", None, TypeError),
               junk("preference-set", lambda: ref.PreferenceSet.make_dataset(3, 0), TypeError),
               junk("longer-responses", lambda: World(n_prompts=2, vocab=8, response_len=4).preferences(2, 0),
                    ValueError),
               junk("empty", lambda: WORLD.preferences(0, 0), ValueError),
               junk("soft-judge", lambda: WORLD.preferences(3, 0, labeller=Judge(soft=True)), None)],
     "world": [junk("str", "lesson", TypeError), junk("int", 1, TypeError), junk("class", lambda: World, TypeError)],
     "w": [junk("dict", lambda: dict(W), TypeError), junk("array", lambda: np.zeros(8), TypeError),
           junk("wrong-vocab", lambda: world_rm(9), ValueError)],
     "betas": [*AXIS_OF_REALS, junk("zero-entry", lambda: [0.0], ValueError)], "seeds": SEEDS,
     "loss_type": axis(options(ref.DPO_LOSS_TYPES)),
     "label_smoothing": [*axis(reals("finite")), junk("half", 0.5, ValueError)], "lr": axis(reals("positive")),
     "epochs": axis(ints(1)),
     "theta": [junk("init", theta0, ValueError), junk("str", "theta", ValueError)],
     "ref": [junk("init", theta0, ValueError)],
     "record_every": ints(0), "n_threads": THREADS, "progress": PROGRESS, "max_memory": MAX_MEMORY},
)


# GRPO in a world: the same world, the same refusals of the lesson's policies.
SWEEPS["sweep_grpo[world]"] = (
    lambda: dict(w=world_rm(), world=WORLD, betas=[0.0, 0.1], seeds=2, steps=3, num_generations=[2, 4], lr=0.5),
    {"w": [junk("dict", lambda: dict(W), TypeError), junk("none", None, TypeError),
           junk("array", lambda: np.zeros(8), TypeError), junk("wrong-vocab", lambda: world_rm(9), ValueError)],
     "world": [junk("str", "lesson", TypeError), junk("int", 1, TypeError), junk("class", lambda: World, TypeError),
               junk("other-vocab", lambda: World(n_prompts=2, vocab=9, response_len=3), ValueError)],
     "betas": AXIS_OF_REALS, "seeds": SEEDS, "steps": ints(1, sized=True),
     "num_generations": axis(ints(2, 65_536)), "epsilon": axis(reals("positive")),
     "epsilon_high": reals("positive", optional=True), "lr": axis(reals("positive")),
     "scale_rewards": options(ref.SCALE_REWARDS), "num_iterations": axis(ints(1, 10_000)),
     "theta": [junk("init", theta0, ValueError), junk("str", "theta", TypeError)],
     "ref": [junk("init", theta0, ValueError), junk("int", 3, TypeError)],
     "record_every": ints(0), "n_threads": THREADS, "progress": PROGRESS, "max_memory": MAX_MEMORY},
)


class Row(NamedTuple):
    id: str
    call: Callable[[Any], Any]  # call(backend)
    named: str  # the argument the reference's message names
    exc: type[Exception] | None  # what the reference raises (None: it takes the input)
    oversized: bool


def call_with(name: str, base: Callable[[], dict], param: str | None = None, bad: Junk | None = None):
    """``name(**base())`` on a backend, ``param`` replaced by a fresh ``bad`` value."""

    def call(backend: Backend) -> Any:
        kwargs = base()
        if param is not None:
            kwargs[param] = bad.make()
        target = backend
        for part in name.split("."):
            target = getattr(target, part)  # "sweep_rlhf[world]": sweep_rlhf, on the backend's engines
        return target(**kwargs)

    return call


def _rows() -> list[Row]:
    rows = []
    for table in (FUNCTIONS, SWEEPS):
        for name, (base, params) in table.items():
            rows.append(Row(f"{name}-valid", call_with(name, base), "", None, False))
            for param, bad_values in params.items():
                for bad in bad_values:
                    named = param
                    if name.startswith("sweep_") and param in ("seeds", "steps") and bad.label != "2**64":
                        # the grid is refused for its size; a count past 64 bits for itself
                        named = "max_memory" if bad.oversized else param
                    if param == "kind":
                        named = "kl_ctl"  # make_kl_controller(kind) is train_rlhf's kl_ctl
                    rows.append(Row(f"{name}-{param}-{bad.label}", call_with(name, base, param, bad), named, bad.exc,
                                    bad.oversized))
    return rows


def diverging(name: str, message: str, exc_named: str = "lr", **overrides: Any) -> Row:
    """A valid call whose parameters overflow: the spec's FloatingPointError on both."""
    base = (FUNCTIONS | SWEEPS)[name][0]
    return Row(f"{name}-diverges-{message}", call_with(name, lambda: {**base(), **overrides}), exc_named,
               FloatingPointError, False)


# lr=1e300 overflows the first update to values near 1e300; lr=1e200 leaves finite logits past
# 2**512 (~1.3e154), which count as overflowed too.
DIVERGING = [
    row
    for lr, label in ((1e300, "huge"), (1e200, "finite-past-2**512"))
    for row in (
        diverging("rm_train_step", label, lr=lr),
        diverging("train_rm", label, lr=lr),
        diverging("rlhf_step", label, lr=lr),
        diverging("train_rlhf", label, lr=lr),
        diverging("dpo_step", label, lr=lr),
        diverging("train_dpo", label, lr=lr),
        diverging("grpo_step", label, lr=lr, num_generations=8),
        diverging("train_grpo", label, lr=lr),
        diverging("sweep_rlhf", label, lr=[0.05, lr]),
        diverging("sweep_rm", label, lrs=[0.1, lr]),
        diverging("sweep_dpo", label, lr=[lr, 0.05]),
        diverging("sweep_grpo", label, lr=lr),
        diverging("sweep_rlhf[world]", label, lr=[0.05, lr]),
        diverging("sweep_dpo[world]", label, lr=[lr, 0.05]),
        diverging("sweep_grpo[world]", label, lr=lr),
    )
] + [
    # a beta past the floats overflows a world's full penalty: each engine names the run's beta
    diverging("sweep_rlhf[world]", "beta-past-floats", "beta", betas=[0.1, 1.7e308], kl_penalty="full"),
]
ROWS = _rows() + DIVERGING


# The large-vocabulary rows (rlhf_fast.rows): the Rust core's kernels or the reference twin's
# behind the one front end, whatever RLHF_FAST_BACKEND chose.
def _z() -> np.ndarray:
    return np.log(np.array([[0.25, 0.5, 0.25], [0.1, 0.1, 0.8]]))


def table_junk(name: str) -> list[Junk]:
    return [
        junk("list", lambda: [[0.0, 1.0, 2.0]] * 2, TypeError), junk("none", None, TypeError),
        junk("1d", lambda: np.zeros(3), TypeError), junk("float32", lambda: np.zeros((2, 3), np.float32), TypeError),
        junk("int64", lambda: np.zeros((2, 3), np.int64), TypeError),
        junk("strided", lambda: np.zeros((2, 6))[:, ::2], ValueError),
        junk("fortran", lambda: np.asfortranarray(np.zeros((2, 3))), ValueError),
        junk("empty", lambda: np.zeros((0, 3)), ValueError),
        junk("nan", lambda: np.array([[0.0, 0.0, 0.0], [0.0, NAN, 0.0]]), ValueError),
        junk("-inf", lambda: np.array([[0.0, -INF, 0.0], [0.0, 0.0, 0.0]]), ValueError),
    ]


ROW_THREADS = [*THREADS, junk("above", 1025, ValueError), junk("2**64", 2**64, ValueError)]
ROW_LOGITS = table_junk("logits")
ROW_REF = [*table_junk("ref_logits"), junk("other-shape", lambda: np.zeros((2, 4)), ValueError)]
ROW_U = [junk("list", lambda: [0.1, 0.2], TypeError), junk("short", lambda: np.array([0.1]), ValueError),
         junk("one", lambda: np.array([0.1, 1.0]), ValueError), junk("nan", lambda: np.array([NAN, 0.1]), ValueError)]
ROW_FLAG = [junk("str", "yes", TypeError), junk("int", 1, TypeError)]
ROW_KERNELS: dict[str, tuple[Callable[[], dict], dict[str, list[Junk]]]] = {
    "softmax_rows": (lambda: dict(logits=_z()), {"logits": ROW_LOGITS, "n_threads": ROW_THREADS}),
    "log_softmax_rows": (lambda: dict(logits=_z()), {"logits": ROW_LOGITS, "n_threads": ROW_THREADS}),
    "kl_rows": (lambda: dict(logits=_z(), ref_logits=np.zeros((2, 3))),
                {"logits": ROW_LOGITS, "ref_logits": ROW_REF, "ref_normalized": ROW_FLAG, "n_threads": ROW_THREADS}),
    "sample_rows": (lambda: dict(logits=_z(), u=np.array([0.3, 0.95])),
                    {"logits": ROW_LOGITS, "u": ROW_U, "n_threads": ROW_THREADS}),
    "ppo_grad_rows": (
        lambda: dict(logits=_z(), tokens=np.array([1, 2]), p_old=np.array([0.5, 0.7]), advantages=np.array([1.0, -1.0]),
                     eps=0.2),
        {"logits": ROW_LOGITS, "tokens": [junk("past-vocab", lambda: np.array([0, 3]), ValueError),
                                          junk("float", lambda: np.zeros(2), TypeError)],
         "p_old": [junk("zero", lambda: np.array([0.0, 0.5]), ValueError),
                   junk("above-one", lambda: np.array([0.5, 1.5]), ValueError)],
         "advantages": [junk("inf", lambda: np.array([0.0, INF]), ValueError),
                        junk("short", lambda: np.zeros(1), ValueError)],
         "eps": reals("positive"), "n_threads": ROW_THREADS}),
    "ppo_batch_step": (
        lambda: dict(logits=_z(), ref_logits=np.zeros((2, 3)), u=np.array([0.3, 0.95]), weights=np.array([0.0, 1.0, 2.0]),
                     beta=0.1),
        {"logits": ROW_LOGITS, "ref_logits": [*ROW_REF, junk("positive-log-probs", lambda: np.ones((2, 3)), None)],
         "u": ROW_U, "weights": [junk("nan", lambda: np.array([0.0, NAN, 0.0]), ValueError),
                                 junk("long", lambda: np.zeros(4), ValueError)],
         "beta": reals("non_negative"), "out": [junk("wrong-shape", lambda: np.zeros((2, 4)), ValueError),
                                                junk("read-only", lambda: np.broadcast_to(np.zeros(1), (2, 3)), ValueError)],
         "ref_normalized": ROW_FLAG, "n_threads": ROW_THREADS}),
    "stream_sum": (lambda: dict(a=_z(), b=np.ones((1, 2))), {"a": table_junk("a"), "b": table_junk("b")}),
    "stream_add": (lambda: dict(a=_z(), b=np.ones((2, 3))),
                   {"a": table_junk("a")[:8], "b": [*table_junk("b"), junk("other-shape", lambda: np.zeros((3, 2)), ValueError)],
                    "out": [junk("wrong-shape", lambda: np.zeros((2, 4)), ValueError)], "n_threads": ROW_THREADS}),
}


def row_kernel_call(name: str, base: Callable[[], dict], param: str | None = None, bad: Junk | None = None):
    """``rlhf_fast.rows.<name>(**base())`` on a backend's kernels, ``param`` replaced by ``bad``."""

    def call(backend: Backend) -> Any:
        kwargs = base()
        if param is not None:
            kwargs[param] = bad.make()
        return on_row_kernels(f"rows.{name}", backend is not REFERENCE)(**kwargs)

    return call


ROWS += [Row(f"rows.{name}-valid", row_kernel_call(name, base), "", None, False) for name, (base, _) in ROW_KERNELS.items()]
ROWS += [Row(f"rows.{name}-{param}-{bad.label}", row_kernel_call(name, base, param, bad), param, bad.exc, False)
         for name, (base, params) in ROW_KERNELS.items() for param, bads in params.items() for bad in bads]
# Finite inputs whose results pass the floats: a FloatingPointError naming what overflowed.
WIDE = lambda: np.array([[0.0, 0.0, 0.0], [1.7e308, -1.7e308, 0.0]])  # noqa: E731
ROWS += [
    Row("rows.log_softmax_rows-overflows", row_kernel_call("log_softmax_rows", lambda: dict(logits=WIDE())), "result",
        FloatingPointError, False),
    Row("rows.kl_rows-of-a-wide-policy", row_kernel_call("kl_rows", lambda: dict(logits=WIDE(), ref_logits=_z())), "",
        None, False),
    Row("rows.kl_rows-overflows", row_kernel_call("kl_rows", lambda: dict(logits=_z(), ref_logits=WIDE())), "result",
        FloatingPointError, False),
    Row("rows.ppo_batch_step-reward-overflows",
        row_kernel_call("ppo_batch_step", lambda: dict(logits=_z(), ref_logits=np.zeros((2, 3)), u=np.array([0.1, 0.1]),
                                                       weights=np.full(3, -1.7e308), beta=1e308)),
        "reward", FloatingPointError, False),
    Row("rows.ppo_grad_rows-overflows",
        row_kernel_call("ppo_grad_rows", lambda: dict(logits=_z(), tokens=np.array([0, 2]), p_old=np.array([0.5, 5e-324]),
                                                      advantages=np.array([1.0, -1.0]))),
        "advantages", FloatingPointError, False),
    Row("rows.stream_add-overflows",
        row_kernel_call("stream_add", lambda: dict(a=np.full((2, 3), 1e308), b=np.full((2, 3), 1e308))), "out",
        FloatingPointError, False),
    Row("rows.stream_sum-overflows",
        row_kernel_call("stream_sum", lambda: dict(a=np.full((2, 3), 1e308), b=np.ones((1, 1)))), "sum",
        FloatingPointError, False),
]


def word(arg: str) -> str:
    """A regex matching the argument's name as a word (``n`` must not match ``num_generations``)."""
    return rf"(?<![A-Za-z0-9_]){re.escape(arg)}(?![A-Za-z0-9_])"


def run(row: Row, backend: Backend) -> tuple[str, str]:
    """The row's outcome on ``backend``; an oversized count in a forked child."""
    if not row.oversized:
        return outcome_of(lambda: row.call(backend))
    result, failure = forked(lambda report: outcome_of(lambda: row.call(backend)), timeout=5.0, headroom=256 << 20)
    return result if failure is None else ("crashed", failure)


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_the_reference_refuses_naming_the_argument(row):
    """The contract's content: the reference refuses the row's input with its exception type
    and a message naming the argument, or takes it."""
    status, message = run(row, REFERENCE)
    expected = "ok" if row.exc is None else row.exc.__name__
    assert status == expected, message
    if row.exc is not None:
        assert message and re.search(word(row.named), message), message


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_the_rust_backend_does_what_the_reference_does(row, rust):
    """The same exception type and message, or both taking the input."""
    assert run(row, rust) == run(row, REFERENCE)


def test_every_public_function_and_sweep_has_rows():
    functions = {name for name in ref.__all__ if callable(getattr(ref, name)) and name != "KLWarning"}
    covered = {name.split(".")[0] for name in FUNCTIONS} | {"PreferenceSet"}
    assert functions - covered == set()
    assert {name.split("[")[0] for name in SWEEPS} == set(sweep_module.__all__) - {"SweepResult"}
    assert "sweep_rlhf[world]" in SWEEPS
    rows_public = {name for name in rows_module.__all__ if name != "PpoBatchStep"}
    assert set(ROW_KERNELS) == rows_public


SWEEPS["sweep_grpo[sequence]"] = (
    lambda: dict(w=sequence_rm(), world=SEQUENCE_WORLD, betas=[0.0, 0.1], seeds=2, steps=3, lr=[0.05, 0.1],
                 num_generations=3),
    {"w": [junk("dict", lambda: dict(W), TypeError), junk("none", None, TypeError),
           junk("bag-rm", lambda: world_rm(5), TypeError), junk("wrong-vocab", lambda: sequence_rm(6), ValueError)],
     "betas": AXIS_OF_REALS, "seeds": SEEDS, "steps": ints(1, sized=True),
     # the engine shares every setting but beta, lr and the seed between runs
     "num_generations": [junk("one", 1, ValueError), junk("axis", lambda: [2, 3], ValueError)],
     "epsilon": [*axis(reals("positive")), junk("axis", lambda: [0.1, 0.2], ValueError)],
     "lr": axis(reals("positive")), "scale_rewards": [junk("batch", "batch", ValueError), junk("int", 1, TypeError)],
     "theta": [junk("init", theta0, ValueError)],
     "record_every": ints(0), "n_threads": THREADS, "progress": PROGRESS, "max_memory": MAX_MEMORY},
)
