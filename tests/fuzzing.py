"""Junk for every public function: the generators behind ``test_fuzz.py`` and ``benches/fuzz.py``.

Every public function of ``rlhf_fast.reference.__all__`` (the controllers' ``update`` and
``PreferenceSet.make_dataset`` included), the five sweep front ends, ``sweep_rlhf``,
``sweep_dpo``, ``sweep_grpo`` and ``sweep_best_of_n`` in a world (``"sweep_rlhf[world]"``, ...),
the world API (``rlhf_fast.worlds``: constructors, functions and methods, a method's instance an
argument named by ``INSTANCES``; ``rlhf_fast.overopt``) and the large-vocabulary rows of
``rlhf_fast.rows`` (``"rows.<name>"``) has a spec here: per
argument, a kind (a policy, a reward model, a positive float, a count, ...) with the values
that argument may take (``valid``) and the junk it may meet (``junk``: wrong types, NaN and
infinities, negative, zero and huge counts, wrong shapes and dtypes, non-contiguous and
read-only arrays, empty inputs, unknown prompts and tokens, dicts with missing keys; a world's
reward model of another vocabulary, pairs of another world, soft targets outside [0, 1]). A call
draws each argument valid, junk or (when it has a default) left out, and may add an unknown
keyword or drop a required one. A value that must fit another argument (logits of the world's
shape, a reward model of its vocabulary) is a ``Later``, made once the others are drawn.

The outcome rule (issue 9): a call returns a result in which every float is finite, or
raises ``ValueError``, ``TypeError``, ``MemoryError`` or ``FloatingPointError`` with a
non-empty message; it warns nothing but ``KLWarning``. Anything else — another exception
(pyo3's ``PanicException``), an empty message, NaN or an infinity in the result, another
warning, an abort, a hang — is a bug.

Draws go through a ``Source``: ``RandomSource`` (a ``random.Random``, for the benchmark's
100,000 calls, where call ``i`` of seed ``s`` is a function of ``(s, i)`` alone, so a crash
can be replayed) or ``HypothesisSource`` (``st.data()``, so that hypothesis shrinks). ``SLOW``
functions (the over-optimisation lab) are left out of the benchmark's draws. This
module lives in ``tests/`` because the suite is also run with nothing but ``tests/`` copied
out (against the wheel); ``benches/fuzz.py`` imports it by path.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from rlhf_fast import distill as distill_module
from rlhf_fast import length as length_module
from rlhf_fast import overopt as overopt_module
from rlhf_fast import reasoning as reasoning_module
from rlhf_fast import reference as ref
from rlhf_fast import rows as rows_module
from rlhf_fast import safety as safety_module
from rlhf_fast import sequences as sequences_module
from rlhf_fast import sweep as sweep_module
from rlhf_fast import worlds as worlds_module
from rlhf_fast.reference.engines import token_ppo as token_ppo_reference
from rlhf_fast.reference.engines import process_reward as process_reward_reference
from rlhf_fast.reference.engines import verifier_grpo as verifier_grpo_reference
from rlhf_fast.reference.methods import process_reward as process_reward_methods
from rlhf_fast.worlds import GaoFit, Judge, Labeller, RewardModel, World, WorldPairs

NAN, INF = math.nan, math.inf
P, V = len(ref.PROMPTS), len(ref.VOCAB)
W = {tok: (1.0 if tok in ref.GOOD_WORDS else -1.0) for tok in ref.VOCAB}
PAIRS = ref.make_dataset(6, 0)
ALLOWED = (ValueError, TypeError, MemoryError, FloatingPointError)


# ------------------------------------------------------------------------------ sources


class RandomSource:
    """Choices from a ``random.Random``."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def index(self, n: int) -> int:
        return self.rng.randrange(n)

    def uniform(self, lo: float, hi: float) -> float:
        return self.rng.uniform(lo, hi)


def call_source(seed: int, i: int) -> RandomSource:
    """The source of call ``i`` of the run seeded ``seed``: the same call on every backend, in any process."""
    return RandomSource(random.Random(seed * 1_000_003 + i))


class HypothesisSource:
    """Choices drawn from hypothesis' ``st.data()``, so that a failure shrinks."""

    def __init__(self, data: Any):
        from hypothesis import strategies as st

        self.data = data
        self.st = st

    def index(self, n: int) -> int:
        return self.data.draw(self.st.integers(0, n - 1)) if n > 1 else 0

    def uniform(self, lo: float, hi: float) -> float:
        return self.data.draw(self.st.floats(lo, hi))


# -------------------------------------------------------------------------------- kinds


class Value(NamedTuple):
    """One way to fill an argument: ``make(source)`` builds a fresh value; ``oversized``: a
    count that a core allocating without checking would die of (run in a sandbox)."""

    label: str
    make: Callable[[Any], Any]
    oversized: bool = False


class Kind(NamedTuple):
    valid: list[Value]
    junk: list[Value]


def val(label: str, value: Any, oversized: bool = False) -> Value:
    """A value: a constant (immutable), or a factory ``lambda s: ...`` of the source."""
    return Value(label, value if callable(value) else (lambda s, v=value: v), oversized)


def fresh(label: str, factory: Callable[[], Any]) -> Value:
    """A mutable value built anew for each call."""
    return Value(label, lambda s: factory())


def some(source: Any, values: list) -> Any:
    return values[source.index(len(values))]


# floats ---------------------------------------------------------------------------------

TINY = 5e-324


def real_junk(check: str, optional: bool = False) -> list[Value]:
    """A float argument checked ``positive``, ``non_negative``, ``finite`` or ``not_nan``."""
    out = [val("str", "0.1"), val("bool", True), fresh("list", lambda: [0.1]), val("complex", 1j), val("nan", NAN),
           val("bytes", b"1"), val("dict", {}), fresh("array-1", lambda: np.array([0.1]))]
    if not optional:
        out.append(val("none", None))
    if check != "not_nan":
        out += [val("inf", INF), val("-inf", -INF)]
    if check in ("positive", "non_negative"):
        out += [val("negative", -1.0), val("-tiny", -TINY), val("-1e300", -1e300)]
    if check == "positive":
        out += [val("zero", 0.0), val("-zero", -0.0)]
    return out


def reals(check: str, lo: float, hi: float, edges: tuple = (), optional: bool = False) -> Kind:
    """Valid: a typical value in ``[lo, hi]``, an int, a numpy float or an edge value."""
    valid = [
        val("uniform", lambda s: s.uniform(lo, hi)),
        val("uniform", lambda s: s.uniform(lo, hi)),
        val("int", lambda s: int(s.uniform(max(lo, 1.0), max(hi, 1.0)))),
        val("numpy", lambda s: np.float64(s.uniform(lo, hi))),
        *[val(f"edge-{e!r}", e) for e in edges],
    ]
    if optional:
        valid.append(val("none", None))
    return Kind(valid, real_junk(check, optional))


def positive(lo: float = 0.01, hi: float = 1.0, big: bool = True) -> Kind:
    edges = (TINY, 1e-300, 1e-8) + ((1e4, 1e200, 1e300, 1.7e308) if big else (10.0,))
    return reals("positive", lo, hi, edges)


def non_negative(lo: float = 0.0, hi: float = 1.0) -> Kind:
    return reals("non_negative", lo, hi, (0.0, -0.0, TINY, 1e-300, 1e4, 1e200, 1e300, 1.7e308))


def finite(lo: float = -5.0, hi: float = 5.0) -> Kind:
    return reals("finite", lo, hi, (0.0, -0.0, TINY, -1e300, 1e300, 1.7e308, -1.7e308))


# ints ------------------------------------------------------------------------------------

HUGE = [10**13, 2**62, 2**63 - 1, 2**63, 2**64, 2**64 + 1, 10**30]


def counts(lo: int, hi: int, minimum: int | None = None, maximum: int | None = None, sized: bool = False,
           huge_ok: tuple = ()) -> Kind:
    """An int in ``[lo, hi]`` (valid and cheap); junk below ``minimum`` / above ``maximum``,
    and the oversized counts (``sized``: refused for the memory they need)."""
    valid = [val("small", lambda s: lo + s.index(hi - lo + 1)), val("numpy-int", lambda s: np.int64(lo + s.index(hi - lo + 1))),
             *[val(f"edge-{v}", v) for v in huge_ok]]
    junk = [val("float", 2.0), val("str", "2"), val("bool", True), fresh("list", lambda: [2]), val("none", None),
            val("numpy-float", np.float64(2.0)), val("complex", 2j), val("nan", NAN), val("inf", INF)]
    if minimum is not None:
        junk += [val("below", minimum - 1), val("-1", -1), val("-2**63", -(2**63)), val("-2**64", -(2**64)),
                 val("-10**30", -(10**30))]
    if maximum is not None:
        junk += [val("above", maximum + 1, True), *[val(f"huge-{h}", h, True) for h in HUGE]]
    elif sized:
        junk += [val(f"huge-{h}", h, True) for h in HUGE]
    return Kind(valid, junk)


def seed_kind() -> Kind:
    """A seed: any int."""
    valid = [val("small", lambda s: s.index(1000)), val("negative", lambda s: -s.index(1000)),
             *[val(f"edge-{v}", v) for v in (0, -1, 2**32, 2**63, 2**64, -(2**64), 2**200 + 7)],
             val("numpy-int", np.int64(7))]
    junk = [val("float", 2.0), val("str", "2"), val("bool", True), fresh("list", lambda: [2]), val("none", None),
            val("numpy-float", np.float64(2.0)), val("nan", NAN)]
    return Kind(valid, junk)


def options(choices: tuple[str, ...]) -> Kind:
    return Kind([val(c, c) for c in choices],
                [val("int", 1), val("none", None), fresh("list", lambda: [choices[0]]), val("unknown", "nope"),
                 val("wrong-case", choices[0].upper()), val("empty", ""), val("bytes", choices[0].encode()),
                 val("padded", f" {choices[0]}")])


# policies ------------------------------------------------------------------------------


def _table(s: Any, scale: float) -> list[list[float]]:
    return [[s.uniform(-scale, scale) for _ in range(V)] for _ in range(P)]


def _dict(rows: list[list[float]]) -> dict:
    return {x: list(row) for x, row in zip(ref.PROMPTS, rows)}


def _with_row(prompt: str, row: Any) -> dict:
    theta = ref.init_policy()
    theta[prompt] = row
    return theta


def _without(prompt: str) -> dict:
    theta = ref.init_policy()
    del theta[prompt]
    return theta


def _array(dtype: Any = np.float64, shape: tuple = (P, V), fill: float = 0.0) -> Callable[[], np.ndarray]:
    return lambda: np.full(shape, fill, dtype=dtype)


def _readonly() -> np.ndarray:
    a = np.zeros((P, V))
    a.flags.writeable = False
    return a


def _matrix() -> np.ndarray:
    with warnings.catch_warnings():  # numpy's PendingDeprecationWarning for np.matrix
        warnings.simplefilter("ignore")
        return np.asmatrix(np.zeros((P, V)))


def policies(updated: bool) -> Kind:
    """A policy: a dict prompt -> row of V logits, or a float64 [P, V] array."""
    valid = [
        fresh("init", ref.init_policy),
        val("dict", lambda s: _dict(_table(s, 5.0))),
        val("dict-extreme", lambda s: _dict([[some(s, [1e4, -1e4, 1e150, -1e150, 0.0, 7.0]) for _ in range(V)]
                                              for _ in range(P)])),
        val("dict-int-entries", lambda s: {x: [s.index(5) - 2 for _ in range(V)] for x in ref.PROMPTS}),
        val("array", lambda s: np.array(_table(s, 5.0))),
        val("array-strided", lambda s: np.repeat(np.array(_table(s, 3.0)), 2, axis=1)[:, ::2]),
        val("array-fortran", lambda s: np.asfortranarray(np.array(_table(s, 3.0)))),
        val("dict-extra-prompt", lambda s: {**_dict(_table(s, 1.0)), "hello": [0.0]}),
    ]
    if not updated:
        valid += [fresh("tuple-row", lambda: _with_row("help me", (0.0,) * V)),
                  fresh("array-row", lambda: _with_row("help me", np.zeros(V))),
                  fresh("array-readonly", _readonly)]
    junk = [
        val("none", None), val("str", "theta"), val("int", 3),
        fresh("nested-list", lambda: [[0.0] * V for _ in range(P)]),
        fresh("missing-prompt", lambda: _without("answer me")),
        fresh("empty-dict", dict),
        fresh("short-row", lambda: _with_row("help me", [0.0] * (V - 1))),
        fresh("long-row", lambda: _with_row("explain this", [0.0] * (V + 1))),
        fresh("empty-row", lambda: _with_row("help me", [])),
        fresh("nan", lambda: _with_row("answer me", [0.0] * (V - 1) + [NAN])),
        fresh("inf", lambda: _with_row("help me", [INF] + [0.0] * (V - 1))),
        fresh("past-2**512", lambda: _with_row("help me", [1e155] + [0.0] * (V - 1))),
        fresh("str-entry", lambda: _with_row("help me", ["0"] * V)),
        fresh("none-entry", lambda: _with_row("help me", [None] * V)),
        fresh("bool-entry", lambda: _with_row("help me", [True] + [0.0] * (V - 1))),
        fresh("complex-entry", lambda: _with_row("help me", [1j] + [0.0] * (V - 1))),
        fresh("row-none", lambda: _with_row("help me", None)),
        fresh("row-str", lambda: _with_row("help me", "abcdefgh")),
        fresh("row-dict", lambda: _with_row("help me", dict.fromkeys(range(V), 0.0))),
        fresh("row-generator", lambda: _with_row("help me", (0.0 for _ in range(V)))),
        fresh("array-2x8", _array(shape=(P - 1, V))),
        fresh("array-3x7", _array(shape=(P, V - 1))),
        fresh("array-0x8", _array(shape=(0, V))),
        fresh("array-8x3", _array(shape=(V, P))),
        fresh("array-flat", _array(shape=(P * V,))),
        fresh("array-3x8x1", _array(shape=(P, V, 1))),
        fresh("array-0d", lambda: np.array(0.0)),
        fresh("array-int64", _array(np.int64)),
        fresh("array-float32", _array(np.float32)),
        fresh("array-float16", _array(np.float16)),
        fresh("array-complex", _array(np.complex128)),
        fresh("array-bool", _array(np.bool_)),
        fresh("array-object", _array(object)),
        fresh("array-big-endian", _array(">f8")),
        fresh("array-nan", _array(fill=NAN)),
        fresh("array-inf", _array(fill=-INF)),
        fresh("array-past-2**512", _array(fill=1e160)),
        fresh("array-str", lambda: np.full((P, V), "a")),
        fresh("matrix", _matrix),
    ]
    if updated:
        junk += [fresh("tuple-row", lambda: _with_row("help me", (0.0,) * V)),
                 fresh("array-row", lambda: _with_row("help me", np.zeros(V))),
                 fresh("array-readonly", _readonly)]
    return Kind(valid, junk)


# reward models -------------------------------------------------------------------------

OOV = ("hello", "Clear", "x", "é", "")


def weights(name: str = "w", content: bool = False) -> Kind:
    """A reward model (``content``: one that must tell words apart)."""
    valid = [
        fresh("W", lambda: dict(W)),
        val("random", lambda s: {t: s.uniform(-3, 3) for t in ref.VOCAB}),
        val("ints", lambda s: {t: s.index(7) - 3 for t in ref.VOCAB}),
        val("oov", lambda s: {**W, some(s, list(OOV)): s.uniform(-1, 1)}),
        val("extreme", lambda s: {t: some(s, [1e150, -1e150, 1e300, -1e300, 0.0, 1.0]) for t in ref.VOCAB}),
        val("partial", lambda s: {t: s.uniform(-2, 2) for t in ref.VOCAB[: 1 + s.index(V)]}),
    ]
    if not content:
        valid += [fresh("empty", dict), fresh("zeros", lambda: dict.fromkeys(ref.VOCAB, 0.0))]
    junk = [
        val("none", None), fresh("list", lambda: [0.0] * V), val("str", name), val("int", 1),
        fresh("nan", lambda: {**W, "clear": NAN}), fresh("inf", lambda: {**W, "rude": INF}),
        fresh("-inf", lambda: {**W, "rude": -INF}),
        fresh("str-value", lambda: {**W, "clear": "1"}), fresh("none-value", lambda: {**W, "kind": None}),
        fresh("bool-value", lambda: {**W, "clear": True}), fresh("complex-value", lambda: {**W, "clear": 1j}),
        fresh("oov-nan", lambda: {**W, "hello": NAN}), fresh("int-key", lambda: {**W, 3: 1.0}),
        fresh("huge-int-value", lambda: {**W, "clear": 10**400}),
    ]
    if content:
        junk += [fresh("empty", dict), fresh("zeros", lambda: dict.fromkeys(ref.VOCAB, 0.0)),
                 fresh("equal", lambda: dict.fromkeys(ref.VOCAB, 0.7)), fresh("oov-only", lambda: {"hello": 1.0})]
    return Kind(valid, junk)


def bag_kind() -> Kind:
    return Kind(
        [fresh("bag", lambda: {"clear": 2}), val("random", lambda s: {t: s.index(4) for t in ref.VOCAB}),
         fresh("empty", dict), fresh("oov", lambda: {"hello": 1})],
        [val("none", None), val("str", "clear"), fresh("list", lambda: ["clear"]), fresh("nan", lambda: {"clear": NAN}),
         fresh("str-value", lambda: {"clear": "2"}), fresh("inf", lambda: {"clear": INF}),
         fresh("int-key", lambda: {1: 1})],
    )


# prompts, responses, rngs ---------------------------------------------------------------

PROMPT = Kind([val(x, x) for x in ref.PROMPTS],
              [val("int", 0), val("none", None), val("bytes", b"help me"), val("unknown", "hello"),
               val("wrong-case", "Help me"), val("padded", " help me"), val("empty", ""), fresh("list", lambda: ["help me"])])

_TOKEN_JUNK = [val("none", None), val("int", 1), fresh("int-tokens", lambda: [1, 2]),
               fresh("generator", lambda: (t for t in ["clear"])), fresh("dict", lambda: {"clear": 1}),
               val("bytes", b"clear"), fresh("nested", lambda: [["clear"]]), fresh("none-token", lambda: ["clear", None])]


def _words(s: Any, pool: tuple, lo: int, hi: int) -> list[str]:
    return [some(s, list(pool)) for _ in range(lo + s.index(hi - lo + 1))]


TOKENS = Kind(  # a response of any tokens
    [val("str", lambda s: " ".join(_words(s, ref.VOCAB + OOV[:3], 0, 5))),
     val("list", lambda s: _words(s, ref.VOCAB + OOV, 0, 5)),
     val("tuple", lambda s: tuple(_words(s, ref.VOCAB, 0, 4))),
     val("odd-space", lambda s: "\u3000clear\x85\t kind\n"), val("empty", "")],
    _TOKEN_JUNK,
)
RESPONSE = Kind(  # a DPO response: at least one token, every one in VOCAB
    [val("str", lambda s: " ".join(_words(s, ref.VOCAB, 1, 5))), val("list", lambda s: _words(s, ref.VOCAB, 1, 5))],
    [*_TOKEN_JUNK, val("empty", ""), val("blank", " \t\n"), fresh("empty-list", list), val("oov", "clear hello"),
     val("wrong-case", "Clear")],
)
RNG = Kind([val("random", lambda s: random.Random(s.index(1000)))],
           [val("none", None), val("int", 0), val("str", "rng"), fresh("dict", dict), val("module", np.random)])

# probability and logit vectors ----------------------------------------------------------


def _probs(s: Any, n: int) -> list[float]:
    raw = [s.uniform(0.0, 1.0) for _ in range(n)]
    total = 0.0
    for v in raw:
        total += v
    return [v / total for v in raw] if total > 0 else [1.0] + [0.0] * (n - 1)


PROBS = Kind(
    [val("random", lambda s: _probs(s, 1 + s.index(8))), fresh("one-hot", lambda: [0.0, 1.0, 0.0]),
     fresh("tiny", lambda: [1.0 - 1e-300, 1e-300]), fresh("subnormal", lambda: [1.0, TINY]),
     val("array", lambda s: np.array(_probs(s, 1 + s.index(8)))),
     fresh("array-strided", lambda: np.array([0.5, 9.0, 0.5])[::2]), fresh("tuple", lambda: (0.25, 0.75))],
    [fresh("empty", list), fresh("nan", lambda: [NAN, 1.0]), fresh("inf", lambda: [INF, 0.0]),
     fresh("negative", lambda: [1.5, -0.5]), fresh("unnormalised", lambda: [0.5, 0.6]),
     fresh("all-zero", lambda: [0.0, 0.0]), fresh("str-entry", lambda: ["0.5", 0.5]),
     fresh("bool-entry", lambda: [True, 0.0]), val("none", None), val("str", "ab"), val("int", 1),
     fresh("generator", lambda: (p for p in [0.5, 0.5])), fresh("array-2d", lambda: np.array([[0.5, 0.5]])),
     fresh("array-empty", lambda: np.zeros(0)), fresh("array-str", lambda: np.array(["a", "b"])),
     fresh("long-list", lambda: [1.0] + [0.0] * 5000)],
)


def _logit_list(s: Any, n: int, scale: float = 10.0) -> list[float]:
    return [s.uniform(-scale, scale) for _ in range(n)]


_LOGIT_JUNK = [fresh("empty", list), fresh("nan", lambda: [0.0, NAN]), fresh("inf", lambda: [0.0, INF]),
               fresh("-inf", lambda: [-INF, 0.0]), fresh("str-entry", lambda: [0.0, "1"]),
               fresh("none-entry", lambda: [None, 1.0]), fresh("bool-entry", lambda: [True, 1.0]),
               fresh("complex-entry", lambda: [1j, 1.0]), val("none", None), val("str", "01"), val("int", 1),
               fresh("generator", lambda: (z for z in [0.0, 1.0])), fresh("dict", lambda: {0: 1.0})]
_LOGIT_VALID = [val("random", lambda s: _logit_list(s, 1 + s.index(10))),
                val("extreme", lambda s: [some(s, [1e300, -1e300, 1.7e308, -1.7e308, 0.0, 1e4]) for _ in range(1 + s.index(6))]),
                fresh("one", lambda: [3.0]), val("ints", lambda s: [s.index(5) for _ in range(3)]),
                fresh("tuple", lambda: (0.0, 1.0))]
LOGITS = Kind(_LOGIT_VALID, _LOGIT_JUNK)
ARRAY_LOGITS = Kind(  # softmax and log_softmax also take 1-D and 2-D arrays
    [*_LOGIT_VALID, val("array", lambda s: np.array(_logit_list(s, 1 + s.index(8)))),
     val("array-2d", lambda s: np.array(_logit_list(s, 6)).reshape(2, 3)),
     fresh("array-extreme", lambda: np.array([[1.7e308, -1.7e308], [0.0, -1e300]])),
     fresh("array-int", lambda: np.array([1, 2])), fresh("array-float32", lambda: np.array([[1.0, 2.0]], dtype=np.float32)),
     fresh("array-strided", lambda: np.arange(12.0).reshape(3, 4)[:, ::2]),
     fresh("array-readonly", lambda: np.require(np.zeros(3), requirements="C").view().copy()),
     fresh("array-bool", lambda: np.array([True, False])), fresh("array-2d-1row", lambda: np.zeros((1, 5)))],
    [*_LOGIT_JUNK, fresh("array-empty", lambda: np.zeros(0)), fresh("array-no-columns", lambda: np.zeros((2, 0))),
     fresh("array-no-rows", lambda: np.zeros((0, 3))), fresh("array-3d", lambda: np.zeros((2, 2, 2))),
     fresh("array-0d", lambda: np.array(1.0)), fresh("array-nan", lambda: np.array([[0.0, 1.0], [NAN, 0.0]])),
     fresh("array-inf", lambda: np.array([INF, 0.0])), fresh("array-str", lambda: np.array(["a", "b"])),
     fresh("array-object", lambda: np.array([1.0, None], dtype=object)),
     fresh("array-complex", lambda: np.array([1j, 0j]))],
)
TOKEN_INDEX = Kind([val("0", 0), val("1", 1), val("numpy-int", np.int64(1))],
                   [val("float", 1.0), val("str", "1"), val("bool", True), val("none", None), val("negative", -1),
                    val("too-big", 2), val("2**64", 2**64), val("-2**64", -(2**64)), val("2**63", 2**63)])
VALUE = Kind(
    [val("none", None), fresh("list", lambda: [0.0, 0.0, 0.0]),
     val("dict", lambda s: {x: s.uniform(-2, 2) for x in ref.PROMPTS}), val("ints", lambda s: [1, -1, s.index(3)])],
    [val("float", 1.0), val("str", "abc"), val("tuple", (0.0, 0.0, 0.0)), fresh("array", lambda: np.zeros(P)),
     fresh("short-list", lambda: [0.0, 0.0]), fresh("long-list", lambda: [0.0] * (P + 1)),
     fresh("missing-prompt", lambda: {"help me": 0.0}), fresh("nan", lambda: [0.0, NAN, 0.0]),
     fresh("inf", lambda: {"help me": 0.0, "answer me": INF, "explain this": 0.0}),
     fresh("str-entry", lambda: {"help me": "1", "answer me": 0.0, "explain this": 0.0}),
     fresh("bool-entry", lambda: [True, 0.0, 0.0]), fresh("past-2**512", lambda: [1e160, 0.0, 0.0]),
     fresh("frozen-dict", lambda: __import__("types").MappingProxyType({x: 0.0 for x in ref.PROMPTS}))],
)

# preference pairs -------------------------------------------------------------------------


def _pair(s: Any, vocab_only: bool = False) -> tuple[str, str, str]:
    pool = ref.VOCAB if vocab_only else ref.VOCAB + OOV[:3]
    return (some(s, list(ref.PROMPTS)), " ".join(_words(s, pool, 1, 4)), " ".join(_words(s, pool, 1, 4)))


_PAIRS_VALID = [
    fresh("PAIRS", lambda: list(PAIRS)),
    val("dataset", lambda s: ref.make_dataset(1 + s.index(8), s.index(100))),
    val("rows", lambda s: ref.pairs_to_rows(ref.make_dataset(1 + s.index(5), s.index(100)))),
    val("tuple", lambda s: tuple(ref.make_dataset(1 + s.index(5), 1))),
    val("list-triples", lambda s: [list(p) for p in ref.make_dataset(2, s.index(9))]),
]
_PAIRS_JUNK = [
    val("none", None), val("int", 5), val("str", "abc"), fresh("item-int", lambda: [5]),
    fresh("item-str", lambda: ["abc"]), fresh("item-none", lambda: [None]),
    fresh("short-triple", lambda: [("help me", "clear")]), fresh("long-triple", lambda: [("help me", "clear", "rude", "x")]),
    fresh("row-missing-key", lambda: [{"prompt": "help me", "chosen": "clear"}]),
    fresh("prompt-int", lambda: [(1, "clear", "rude")]), fresh("chosen-none", lambda: [("help me", None, "rude")]),
    fresh("rejected-int-tokens", lambda: [("help me", "clear", [1])]), fresh("dict", lambda: {"a": 1}),
]
_PAIRS_VALID.append(val("preference-set", None))  # the backend's own PreferenceSet (see draw_call)
PAIRS_ANY = Kind([*_PAIRS_VALID, val("oov", lambda s: [_pair(s) for _ in range(1 + s.index(4))]), fresh("empty", list)],
                 _PAIRS_JUNK)
NON_EMPTY_PAIRS = Kind([*_PAIRS_VALID, val("oov", lambda s: [_pair(s) for _ in range(1 + s.index(4))])],
                       [*_PAIRS_JUNK, fresh("empty", list)])
DPO_PAIRS = Kind(
    [*_PAIRS_VALID[:-1], val("vocab", lambda s: [_pair(s, True) for _ in range(1 + s.index(4))]),
     fresh("generator", lambda: (pair for pair in PAIRS))],
    [*_PAIRS_JUNK, fresh("empty", list), fresh("unknown-prompt", lambda: [("hello", "clear", "rude")]),
     fresh("oov-token", lambda: [*PAIRS, ("help me", "clear hello", "rude")]),
     fresh("empty-response", lambda: [("help me", "clear", " ")]), val("preference-set", None)],
)
SWEEP_DPO_PAIRS = Kind(DPO_PAIRS.valid[:-1], DPO_PAIRS.junk)
ROWS = Kind([val("rows", lambda s: ref.pairs_to_rows(ref.make_dataset(s.index(4), 0))),
             fresh("extra-key", lambda: [{"prompt": "help me", "chosen": "clear", "rejected": "rude", "x": 1}])],
            [val("none", None), fresh("item-tuple", lambda: [("help me", "clear", "rude")]),
             fresh("missing-key", lambda: [{"prompt": "help me", "chosen": "clear"}]), val("int", 3),
             fresh("none-value", lambda: [{"prompt": None, "chosen": "clear", "rejected": "rude"}])])

# sweep settings ---------------------------------------------------------------------------


def axis(kind: Kind, n: int = 2) -> Kind:
    """A setting that may be a sequence (an axis of up to ``n`` values): the valid ones, or a
    short list of them; a list is no junk, a list holding one junk value is."""
    valid = [*kind.valid, val("axis", lambda s: [some(s, kind.valid).make(s) for _ in range(1 + s.index(n))])]
    junk = [v for v in kind.junk if v.label != "list"]
    junk += [val("axis-junk", lambda s: [kind.valid[0].make(s), some(s, junk[:4]).make(s)]), fresh("empty", list)]
    return Kind(valid, junk)


def first_axis(kind: Kind, n: int = 2) -> Kind:
    """A first axis (``betas``): a sequence only."""
    junk = [v for v in kind.junk if v.label != "list"]
    return Kind(
        [val("list", lambda s: [some(s, kind.valid).make(s) for _ in range(1 + s.index(n))]),
         val("array", lambda s: np.array([float(some(s, kind.valid[:2]).make(s)) for _ in range(1 + s.index(n))]))],
        [val("scalar", 0.1), val("str", "0.1"), val("none", None), fresh("empty", list),
         val("entry-junk", lambda s: [kind.valid[0].make(s), some(s, junk).make(s)]),
         fresh("array-0d", lambda: np.array(0.1)), fresh("array-2d", lambda: np.zeros((1, 2)))],
    )


SEEDS = Kind(
    [val("count", lambda s: 1 + s.index(2)), val("list", lambda s: [s.index(100) for _ in range(1 + s.index(2))]),
     fresh("huge-seeds", lambda: [2**64, -1])],
    [val("10**12", 10**12, True), val("2**62", 2**62, True), val("2**64", 2**64, True), val("zero", 0),
     val("negative", -3), val("float", 2.0), val("str", "3"), fresh("empty", list), fresh("float-entry", lambda: [0, 1.5]),
     fresh("str-entry", lambda: [0, "1"]), fresh("bool-entry", lambda: [0, True]), val("none", None),
     val("range-huge", range(10**12), True)],
)
DPO_SEEDS = Kind([*SEEDS.valid, fresh("none-entry", lambda: [None, 1]), val("none", None)],
                 [v for v in SEEDS.junk if v.label != "none"])
PROGRESS = Kind([val("false", False), val("none", None)], [val("str", "yes"), val("int", 1)])
THREADS = Kind([val("none", None), val("one", 1), val("two", 2)],
               [val("zero", 0), val("float", 2.0), val("str", "2"), val("negative", -1), val("huge", 2**64, True)])
MAX_MEMORY = Kind([val("none", None), val("10MB", 10**7), val("tiny", 1), val("1KB", 1024)],
                  [val("zero", 0), val("float", 1e9), val("str", "1e9"), val("negative", -1), val("2**64", 2**64)])
RECORD_EVERY = Kind([val("0", 0), val("1", 1), val("2", 2), val("huge", 10**30)],
                    [val("float", 1.0), val("str", "1"), val("negative", -1), val("none", None), val("-2**64", -(2**64))])
BOOL = Kind([val("false", False), val("true", True)], [val("str", "yes"), val("int", 1), val("none", None)])
SIMD = Kind([val("none", None), val("scalar", "scalar")], [val("int", 1), val("unknown", "avx9000"), fresh("list", list)])
EPSILON_HIGH = reals("positive", 0.1, 0.5, (1e300,), optional=True)
# sweep_rlhf's vf_coef: None is 0 (TRL's 0.1 in a SequenceWorld)
OPTIONAL_VF_COEF = Kind([val("none", None), *axis(non_negative()).valid],
                        [v for v in axis(non_negative()).junk if v.label != "none"])


def _pset(s: Any, backend: Any) -> Any:
    return backend.PreferenceSet(ref.make_dataset(1 + s.index(6), s.index(50)))


# ------------------------------------------------------------------------------ specs


class Param(NamedTuple):
    name: str
    kind: Kind
    required: bool = False  # keyword without a default: never left out of a valid call


def req(name: str, kind: Kind) -> Param:
    return Param(name, kind, True)


def opt(name: str, kind: Kind) -> Param:
    return Param(name, kind, False)


# function -> its arguments. Valid draws keep every call cheap: a few steps, epochs and seeds.
SPECS: dict[str, list[Param]] = {
    "seed_key": [req("seed", seed_kind())],
    "make_pair": [req("rng", RNG)],
    "make_dataset": [req("n", counts(0, 6, minimum=0, sized=True)), opt("seed", seed_kind())],
    "PreferenceSet": [req("pairs", PAIRS_ANY)],
    "PreferenceSet.make_dataset": [req("n", counts(0, 6, minimum=0, sized=True)), opt("seed", seed_kind())],
    "pairs_to_rows": [req("pairs", PAIRS_ANY)],
    "rows_to_pairs": [req("rows", ROWS)],
    "bag": [req("y", TOKENS)],
    "dot": [req("w", weights()), req("b", bag_kind())],
    "sigmoid": [req("z", reals("not_nan", -50, 50, (INF, -INF, 1.7e308, -1.7e308, 0.0, TINY)))],
    "rm_train_step": [req("w", weights()), req("x", PROMPT), req("y_pos", TOKENS), req("y_neg", TOKENS),
                      req("lr", positive())],
    "train_rm": [req("pairs", NON_EMPTY_PAIRS), opt("epochs", counts(0, 3, minimum=0)), opt("lr", positive()),
                 opt("w", Kind([val("none", None), *weights().valid], weights().junk[1:]))],
    "pairwise_accuracy": [req("w", weights()), req("pairs", NON_EMPTY_PAIRS)],
    "init_policy": [],
    "policy_logits": [req("theta", policies(False)), req("prompt", PROMPT)],
    "softmax": [req("z", ARRAY_LOGITS)],
    "log_softmax": [req("z", ARRAY_LOGITS)],
    "kl": [req("p", PROBS), req("q", PROBS)],
    "kl_k1": [req("logp", finite(-20, 0)), req("logq", finite(-20, 0))],
    "kl_k2": [req("logp", finite(-20, 0)), req("logq", finite(-20, 0))],
    "kl_k3": [req("logp", finite(-20, 0)), req("logq", finite(-20, 0))],
    "sample": [req("probs", PROBS), req("rng", RNG)],
    "clipped_surrogate": [req("logits", LOGITS), req("a", TOKEN_INDEX), req("p_old_a", positive(0.01, 1.0)),
                          req("advantage", finite()), req("eps", positive(0.05, 0.5))],
    "clipped_surrogate_grad": [req("logits", LOGITS), req("a", TOKEN_INDEX), req("p_old_a", positive(0.01, 1.0)),
                               req("advantage", finite()), req("eps", positive(0.05, 0.5))],
    "rlhf_step": [req("theta", policies(True)), req("ref", policies(False)), req("w", weights()), req("prompt", PROMPT),
                  req("rng", RNG), opt("eps", positive(0.05, 0.5)), opt("beta", non_negative()), opt("lr", positive()),
                  opt("ppo_epochs", counts(1, 4, minimum=1, maximum=10_000)),
                  opt("kl_penalty", options(ref.KL_PENALTIES)), opt("vf_coef", non_negative()),
                  opt("cliprange_value", positive(0.05, 0.5)), opt("value", VALUE)],
    "train_rlhf": [req("theta", policies(True)), req("ref", policies(False)), req("w", weights(content=True)),
                   req("steps", counts(1, 6, minimum=1, sized=True)), opt("seed", seed_kind()),
                   opt("eps", positive(0.05, 0.5)), opt("beta", non_negative()), opt("lr", positive()),
                   opt("ppo_epochs", counts(1, 3, minimum=1, maximum=10_000)),
                   opt("kl_ctl", options(ref.KL_CONTROLLERS)), opt("target", positive(0.1, 2.0)),
                   opt("horizon", positive(1.0, 1e4)), opt("kl_threshold", positive(0.1, 5.0)),
                   opt("kl_penalty", options(ref.KL_PENALTIES)), opt("vf_coef", non_negative()),
                   opt("cliprange_value", positive(0.05, 0.5)), opt("value", VALUE)],
    "make_kl_controller": [req("kind", options(ref.KL_CONTROLLERS)), req("beta", non_negative()),
                           opt("target", positive(0.1, 2.0)), opt("horizon", positive(1.0, 1e4))],
    "FixedKLController": [req("kl_coef", non_negative())],
    "AdaptiveKLController": [req("init_kl_coef", non_negative()), req("target", positive(0.1, 2.0)),
                             req("horizon", positive(1.0, 1e4))],
    "DoublingKLController": [req("init_kl_coef", non_negative()), req("target", positive(0.1, 2.0))],
    # a controller's update(current, n_steps): the controller is drawn valid, then updated
    "KLController.update": [req("controller", Kind(
        [val("fixed", lambda s: ref.FixedKLController(s.uniform(0, 1))),
         val("adaptive", lambda s: ref.AdaptiveKLController(s.uniform(0, 1), some(s, [0.5, 1e-300, 1e300]),
                                                             some(s, [100.0, 1e-300, 1e300]))),
         val("doubling", lambda s: ref.DoublingKLController(some(s, [0.1, 1e300, TINY]), some(s, [0.5, 1e-300])))],
        [])),
        req("current", finite(0.0, 2.0)), req("n_steps", counts(1, 3, minimum=0, huge_ok=(2**64,)))],
    "dpo_step": [req("theta", policies(True)), req("ref", policies(False)), req("x", PROMPT), req("y_pos", RESPONSE),
                 req("y_neg", RESPONSE), opt("beta", positive(0.01, 1.0)), opt("lr", positive()),
                 opt("loss_type", options(ref.DPO_LOSS_TYPES)),
                 opt("label_smoothing", reals("finite", 0.0, 0.4, (0.0, 0.49), False))],
    "train_dpo": [req("theta", policies(True)), req("ref", policies(False)), req("pairs", DPO_PAIRS),
                  opt("epochs", counts(1, 2, minimum=1, sized=True)), opt("beta", positive(0.01, 1.0)),
                  opt("lr", positive()), opt("loss_type", options(ref.DPO_LOSS_TYPES)),
                  opt("label_smoothing", reals("finite", 0.0, 0.4, (0.0,), False)), opt("seed", Kind(
                      [*seed_kind().valid, val("none", None)], [v for v in seed_kind().junk if v.label != "none"]))],
    "grpo_step": [req("theta", policies(True)), req("ref", policies(False)), req("w", weights()), req("prompt", PROMPT),
                  req("rng", RNG), opt("num_generations", counts(2, 6, minimum=2, maximum=65_536)),
                  opt("beta", non_negative()), opt("epsilon", positive(0.05, 0.5)), opt("epsilon_high", EPSILON_HIGH),
                  opt("lr", positive()), opt("scale_rewards", options(ref.SCALE_REWARDS)),
                  opt("num_iterations", counts(1, 2, minimum=1, maximum=10_000))],
    "train_grpo": [req("theta", policies(True)), req("ref", policies(False)), req("w", weights(content=True)),
                   req("steps", counts(1, 4, minimum=1, sized=True)), opt("seed", seed_kind()),
                   opt("num_generations", counts(2, 5, minimum=2, maximum=65_536)), opt("beta", non_negative()),
                   opt("epsilon", positive(0.05, 0.5)), opt("epsilon_high", EPSILON_HIGH), opt("lr", positive()),
                   opt("scale_rewards", options(ref.SCALE_REWARDS)),
                   opt("num_iterations", counts(1, 2, minimum=1, maximum=10_000)), opt("kl_threshold", positive(0.1, 5.0))],
    "best_of_n": [req("policy", policies(False)), req("w", weights(content=True)),
                  req("n", counts(1, 16, minimum=1, maximum=1_000_000_000, huge_ok=(10**9, 2**20))),
                  opt("samples", counts(0, 3, minimum=0)), opt("seed", seed_kind())],
    "expected_score": [req("theta", policies(False)), req("w", weights())],
    "policy_kl": [req("theta", policies(False)), req("ref", policies(False))],
    # the sweeps: small grids of a few steps
    "sweep_rlhf": [req("w", weights(content=True)), req("betas", first_axis(non_negative(0.0, 0.5))), req("seeds", SEEDS),
                   req("steps", counts(1, 4, minimum=1, sized=True)), opt("eps", axis(positive(0.05, 0.5))),
                   opt("lr", axis(positive())), opt("ppo_epochs", axis(counts(1, 2, minimum=1, maximum=10_000))),
                   opt("kl_ctl", axis(options(ref.KL_CONTROLLERS))), opt("target", axis(positive(0.1, 2.0))),
                   opt("horizon", axis(positive(1.0, 1e4))), opt("kl_penalty", axis(options(ref.KL_PENALTIES))),
                   opt("vf_coef", OPTIONAL_VF_COEF), opt("cliprange_value", axis(positive(0.05, 0.5))),
                   opt("theta", policies(False)), opt("ref", policies(False)), opt("record_every", RECORD_EVERY),
                   opt("n_threads", THREADS), opt("progress", PROGRESS), opt("exact", BOOL), opt("simd", SIMD),
                   opt("max_memory", MAX_MEMORY)],
    "sweep_rm": [req("pairs", NON_EMPTY_PAIRS),
                 opt("lrs", axis(positive())), opt("epochs", axis(counts(0, 2, minimum=0))),
                 opt("n_pairs", Kind([val("none", None), val("one", 1), fresh("list", lambda: [1, 2])],
                                     [val("zero", 0), val("too-many", 10**6), val("float", 2.0), val("huge", 2**64)])),
                 opt("heldout", Kind([val("none", None), *NON_EMPTY_PAIRS.valid], [*NON_EMPTY_PAIRS.junk[3:], val("int", 5)])),
                 opt("n_threads", THREADS), opt("progress", PROGRESS), opt("max_memory", MAX_MEMORY)],
    "sweep_dpo": [req("pairs", SWEEP_DPO_PAIRS), req("betas", first_axis(positive(0.01, 1.0))), opt("seeds", DPO_SEEDS),
                  opt("loss_type", axis(options(ref.DPO_LOSS_TYPES))),
                  opt("label_smoothing", axis(reals("finite", 0.0, 0.4, (0.0,)))), opt("lr", axis(positive())),
                  opt("epochs", axis(counts(1, 2, minimum=1, sized=True))), opt("theta", policies(False)),
                  opt("ref", policies(False)), opt("w", Kind([val("none", None), *weights().valid], weights().junk[1:])),
                  opt("record_every", RECORD_EVERY), opt("n_threads", THREADS), opt("progress", PROGRESS),
                  opt("max_memory", MAX_MEMORY)],
    "sweep_grpo": [req("w", weights(content=True)), req("betas", first_axis(non_negative(0.0, 0.5))), req("seeds", SEEDS),
                   req("steps", counts(1, 3, minimum=1, sized=True)),
                   opt("num_generations", axis(counts(2, 4, minimum=2, maximum=65_536))),
                   opt("epsilon", axis(positive(0.05, 0.5))), opt("epsilon_high", EPSILON_HIGH),
                   opt("lr", axis(positive())), opt("scale_rewards", options(ref.SCALE_REWARDS)),
                   opt("num_iterations", axis(counts(1, 2, minimum=1, maximum=10_000))), opt("theta", policies(False)),
                   opt("ref", policies(False)), opt("record_every", RECORD_EVERY), opt("n_threads", THREADS),
                   opt("progress", PROGRESS), opt("max_memory", MAX_MEMORY)],
    "sweep_best_of_n": [req("w", weights(content=True)),
                        req("ns", first_axis(counts(1, 8, minimum=1, maximum=1_000_000_000, huge_ok=(10**9,)))),
                        opt("seeds", SEEDS), opt("samples", counts(0, 3, minimum=0)), opt("policy", policies(False)),
                        opt("n_threads", THREADS), opt("progress", PROGRESS), opt("max_memory", MAX_MEMORY)],
}


# ------------------------------------------------------------------------------ worlds
#
# rlhf_fast.worlds and rlhf_fast.overopt: one implementation under either backend (NumPy),
# but for the world sweep's engine (sweep_rlhf[world], overoptimization), which is the
# backend's. A value that must fit the call's world (logits of its shape, a reward model of
# its vocabulary, pairs of its responses) is drawn as a ``Later``: made once every other
# argument is drawn, from them (a junk world falls back to ``SMALL_WORLD``).


class Later(NamedTuple):
    """An argument made from the call's other arguments (``make(kwargs)``), after they are drawn."""

    make: Callable[[dict], Any]


class Draws:
    """The few ``numpy.random.Generator`` methods the world values use, read from fixed tables
    at an offset the source chose: as reproducible, a hundred times cheaper to start (a
    generator costs 30 us, and a call may make several)."""

    UNIFORM = np.random.default_rng(0).random(1 << 16)
    NORMAL = np.random.default_rng(1).standard_normal(1 << 16)

    def __init__(self, offset: int):
        self.offset = offset

    def _take(self, table: np.ndarray, size: Any) -> Any:
        shape = () if size is None else (size,) if isinstance(size, (int, np.integer)) else tuple(size)
        n = math.prod(shape)
        out = table[(self.offset + np.arange(n)) % len(table)].reshape(shape)
        self.offset += n
        return out if shape else float(out)

    def random(self, size: Any = None) -> Any:
        return self._take(self.UNIFORM, size)

    def standard_normal(self, size: Any = None) -> Any:
        return self._take(self.NORMAL, size)

    def integers(self, low: int, high: int | None = None, size: Any = None) -> Any:
        low, high = (0, low) if high is None else (low, high)
        u = self.random(size)
        return low + (np.floor(np.asarray(u) * (high - low))).astype(np.int64) if size is not None else low + int(u * (high - low))

    def choice(self, values: Any, size: Any = None) -> Any:
        return np.asarray(values)[self.integers(len(values), size=size)]


def later(label: str, make: Callable[[Any, dict], Any]) -> Value:
    """A value ``make(draws, kwargs)``, its draws (:class:`Draws`) placed by the source at draw time."""
    return Value(label, lambda s: Later(lambda kwargs, offset=s.index(1 << 16): make(Draws(offset), kwargs)))


SMALL_WORLD = World(n_prompts=2, vocab=8, response_len=3, seed=0)
LINEAR_WORLD = World(n_prompts=3, vocab=6, response_len=2, gold="linear", seed=1)


def _world_of(kwargs: dict, key: str = "world") -> World:
    world = kwargs.get(key)
    return world if isinstance(world, World) else SMALL_WORLD


def _vocab_of(kwargs: dict) -> int:
    """The vocabulary of the call's world, or of its reward model (``rm``)."""
    if isinstance(kwargs.get("world"), World):
        return kwargs["world"].vocab
    rm = kwargs.get("rm")
    return len(rm.weights) if isinstance(rm, RewardModel) else SMALL_WORLD.vocab


def _small_world(s: Any, prompts: int = 4, vocab: int = 32, length: int = 4) -> World:
    return World(n_prompts=1 + s.index(prompts), vocab=2 + s.index(vocab - 1), response_len=1 + s.index(length),
                 zipf=some(s, [0.0, 1.1, 3.0]), prompt_scale=some(s, [0.0, 0.5, 2.0]),
                 gold=some(s, list(worlds_module.GOLD_KINDS)), seed=s.index(100))


def _world_pool() -> list[World]:
    """Worlds to draw from: immutable, so made once (a world a call costs 0.1 ms): the edges
    (one prompt, two tokens, one-token responses; the lesson's; a linear gold) and 43 more."""
    rng = random.Random(0)
    pool = [World.lesson(), SMALL_WORLD, LINEAR_WORLD, World(n_prompts=1, vocab=2, response_len=1, seed=3),
            World(n_prompts=4, vocab=32, response_len=4, zipf=3.0, prompt_scale=2.0, seed=4)]
    for k in range(43):
        pool.append(World(n_prompts=rng.randint(1, 4), vocab=rng.randint(2, 32), response_len=rng.randint(1, 4),
                          zipf=rng.choice([0.0, 1.1, 3.0]), prompt_scale=rng.choice([0.0, 0.5, 2.0]),
                          gold=rng.choice(worlds_module.GOLD_KINDS), seed=k))
    return pool


WORLD_POOL = _world_pool()
WORLD_JUNK = [val("none", None), val("str", "lesson"), val("int", 1), fresh("dict", dict), val("class", lambda s: World),
              fresh("reward-model", lambda: RewardModel(np.zeros(8))), fresh("labeller", Labeller)]
# (the caches below hold the worlds they were made for: an id is never reused while cached)
WORLD = Kind([val("pooled", lambda s: some(s, WORLD_POOL)), val("pooled", lambda s: some(s, WORLD_POOL)),
              val("lesson", WORLD_POOL[0]), val("fixed", SMALL_WORLD)], WORLD_JUNK)
INSTANCE_WORLD = Kind(WORLD.valid, [])  # the world a method is called on: always one


_RMS: dict[tuple, RewardModel] = {}  # reward models are immutable (read-only weights): made once


def _rm(r: Draws, vocab: int, scale: float = 1.0, tokens: tuple | None = None) -> RewardModel:
    """One of 8 reward models of ``vocab`` weights (standard normal times ``scale``)."""
    key = (vocab, scale, tokens, r.integers(8))
    if key not in _RMS:
        _RMS[key] = RewardModel(scale * Draws(key[3] * 4099).standard_normal(vocab), tokens)
    return _RMS[key]


RM_FOR_WORLD = [
    later("for-world", lambda r, kw: _rm(r, _world_of(kw).vocab, tokens=_world_of(kw).tokens)),
    later("for-world", lambda r, kw: _rm(r, _world_of(kw).vocab)),
    later("for-world-extreme", lambda r, kw: _rm(r, _world_of(kw).vocab, scale=1e150)),
    later("for-world-zeros", lambda r, kw: _rm(r, _world_of(kw).vocab, scale=0.0)),
]
RM_JUNK = [
    later("wrong-vocab", lambda r, kw: _rm(r, _world_of(kw).vocab + 1)),
    val("dict", lambda s: dict(W)), val("none", None), fresh("array", lambda: np.zeros(8)), val("str", "rm"),
    fresh("world", lambda: SMALL_WORLD),
]
RM = Kind(RM_FOR_WORLD, RM_JUNK)


def _labelled(r: Draws, world: World, labeller: Labeller | Judge | None = None) -> WorldPairs:
    """A few of ``world``'s pairs (1 to 5), labelled by a human unless said otherwise."""
    return world.preferences(1 + int(r.integers(5)), seed=int(r.integers(100)), labeller=labeller)


# A world's labelled pairs for DPO: hard (a human's, a judge's drawn labels) or soft (a judge's
# probabilities); junk: the lesson's pairs, pairs of another response length, none at all.
WORLD_DPO_PAIRS = Kind(
    [later("human", lambda r, kw: _labelled(r, _world_of(kw))),
     later("judge-soft", lambda r, kw: _labelled(r, _world_of(kw), Judge(soft=True))),
     later("judge-hard", lambda r, kw: _labelled(r, _world_of(kw), Judge(soft=False, both_orders=True)))],
    [val("none", None), fresh("lesson-triples", lambda: ref.make_dataset(3, 0)),
     fresh("preference-set", lambda: ref.PreferenceSet.make_dataset(3, 0)),
     later("longer-responses", lambda r, kw: World(n_prompts=_world_of(kw).n_prompts, vocab=_world_of(kw).vocab,
                                                   response_len=_world_of(kw).response_len + 1).preferences(2, 0)),
     later("empty", lambda r, kw: _world_of(kw).preferences(0, 0))])


def _logits_junk() -> list[Value]:
    def shaped(f: Callable[[World], Any]) -> Callable[[Any, dict], Any]:
        return lambda r, kw: f(_world_of(kw))

    return [
        later("one-column-short", shaped(lambda w: np.zeros((w.n_prompts, w.vocab - 1)))),
        later("one-row-more", shaped(lambda w: np.zeros((w.n_prompts + 1, w.vocab)))),
        later("flat", shaped(lambda w: np.zeros(w.n_prompts * w.vocab))),
        later("3d", shaped(lambda w: np.zeros((w.n_prompts, w.vocab, 1)))),
        later("nan", shaped(lambda w: np.where(np.eye(w.n_prompts, w.vocab) > 0, NAN, 0.0))),
        later("inf", shaped(lambda w: np.full((w.n_prompts, w.vocab), -INF))),
        later("str-array", shaped(lambda w: np.full((w.n_prompts, w.vocab), "a"))),
        later("complex", shaped(lambda w: np.zeros((w.n_prompts, w.vocab), dtype=complex))),
        later("object", shaped(lambda w: np.zeros((w.n_prompts, w.vocab), dtype=object))),
        later("bool", shaped(lambda w: np.zeros((w.n_prompts, w.vocab), dtype=bool))),
        later("ragged", shaped(lambda w: [[0.0] * w.vocab] + [[0.0]] * (w.n_prompts))),
        later("none-entry", shaped(lambda w: [[None] * w.vocab for _ in range(w.n_prompts)])),
        later("huge-int-entry", shaped(lambda w: [[10**400] * w.vocab for _ in range(w.n_prompts)])),
        later("str-entry", shaped(lambda w: [["0"] * w.vocab for _ in range(w.n_prompts)])),
        val("none", None), val("str", "logits"), val("float", 0.5), fresh("dict", dict), fresh("empty", list),
        fresh("array-0d", lambda: np.array(0.0)), val("range-huge", range(10**12), True),
    ]


LOGITS_FOR_WORLD = Kind(
    [
        later("reference", lambda r, kw: _world_of(kw).ref_logits),
        later("random", lambda r, kw: _world_of(kw).ref_logits + 3.0 * r.standard_normal(_world_of(kw).ref_logits.shape)),
        later("extreme", lambda r, kw: r.choice([1e300, -1e300, 1.7e308, -1.7e308, 0.0], _world_of(kw).ref_logits.shape)),
        later("ints", lambda r, kw: r.integers(-3, 3, _world_of(kw).ref_logits.shape)),
        later("lists", lambda r, kw: r.standard_normal(_world_of(kw).ref_logits.shape).tolist()),
        later("float32", lambda r, kw: r.standard_normal(_world_of(kw).ref_logits.shape).astype(np.float32)),
        later("strided", lambda r, kw: np.repeat(r.standard_normal(_world_of(kw).ref_logits.shape), 2, axis=1)[:, ::2]),
        later("fortran", lambda r, kw: np.asfortranarray(r.standard_normal(_world_of(kw).ref_logits.shape))),
    ],
    _logits_junk(),
)
OPTIONAL_LOGITS = Kind([val("none", None), *LOGITS_FOR_WORLD.valid], [v for v in LOGITS_FOR_WORLD.junk if v.label != "none"])


def bounded(check: str, lo: float, hi: float, edges: tuple, above: tuple, optional: bool = False) -> Kind:
    """A float checked ``check`` and bounded above (``above``: junk past the bound)."""
    kind = reals(check, lo, hi, edges, optional)
    return Kind(kind.valid, [*kind.junk, *[val(f"above-{a!r}", a) for a in above]])


SCALE = bounded("non_negative", 0.0, 3.0, (0.0, -0.0, TINY, 1e6), (1e6 * (1 + 1e-15), 1e7, 1e300, 1.7e308))
PROBABILITY = bounded("non_negative", 0.0, 1.0, (0.0, 1.0, TINY), (1.0 + 1e-15, 2.0, 1e300))
WORLD_SEED = Kind(  # NumPy's seeds: ints >= 0 (of 64 bits here)
    [val("small", lambda s: s.index(1000)), val("numpy-int", np.int64(7)), val("edge-2**63-1", 2**63 - 1),
     val("edge-2**32", 2**32)],
    [val("float", 2.0), val("str", "2"), val("bool", True), fresh("list", lambda: [2]), val("none", None),
     val("numpy-float", np.float64(2.0)), val("nan", NAN), val("-1", -1), val("2**63", 2**63), val("2**64", 2**64),
     val("-2**64", -(2**64))],
)
TEMPERATURE = positive(0.1, 5.0)
COST = non_negative(0.0, 2.0)
GOLD_OPTIONS = options(worlds_module.GOLD_KINDS)


def _labeller(s: Any) -> Labeller:
    return Labeller(temperature=some(s, [1.0, 0.1, 1e-300, 1e300]), flip=some(s, [0.0, 0.2, 1.0]),
                    cost=some(s, [1.0, 0.0, 1e300]))


def _judge(s: Any) -> Judge:
    return Judge(rho=some(s, [0.8, -1.0, 1.0, 0.0]), bias=some(s, [0.5, 0.0, -1e6, 1e6]),
                 position_bias=some(s, [0.1, 0.0, 1.0]), soft=some(s, [True, False]),
                 both_orders=some(s, [True, False]), temperature=some(s, [1.0, 1e-300, 1e300]), seed=s.index(50),
                 cost=some(s, [0.1, 0.0]))


LABELLER = Kind([val("none", None), val("labeller", _labeller), val("judge", _judge), fresh("default", Labeller)],
                [val("str", "human"), val("int", 1), fresh("dict", dict), val("class", lambda s: Labeller),
                 fresh("world", lambda: SMALL_WORLD)])
JUDGE = Kind([val("judge", _judge), fresh("default", Judge)], [])


def _pairs(r: Draws, world: World, n: int) -> WorldPairs:
    """``n`` pairs of ``world``'s responses with hard or soft labels: what ``preferences`` makes
    (which is fuzzed itself), drawn directly (labelling costs a call 0.3 ms)."""
    shape = (n, world.response_len)
    target = [r.random(n), np.floor(r.random(n) * 2.0), np.full(n, 0.5), np.ones(n)][r.integers(4)]
    return WorldPairs(r.integers(0, world.n_prompts, n), r.integers(0, world.vocab, shape),
                      r.integers(0, world.vocab, shape), target, float(n))


_OTHER: dict[int, tuple[World, World]] = {}


def _other_world(world: World) -> World:
    if id(world) not in _OTHER or _OTHER[id(world)][0] is not world:
        _OTHER[id(world)] = (world, World(n_prompts=world.n_prompts + 1, vocab=world.vocab + 3,
                                          response_len=world.response_len + 1, seed=5))
    return _OTHER[id(world)][1]


PAIRS_JUNK = [
    later("other-world", lambda r, kw: _pairs(r, _other_world(_world_of(kw)), 6)),
    later("longer-responses", lambda r, kw: _pairs(r, _longer(_world_of(kw)), 4)),
    val("none", None), fresh("triples", lambda: list(PAIRS)), val("str", "pairs"),
    fresh("world", lambda: SMALL_WORLD),
]
_LONGER: dict[int, tuple[World, World]] = {}


def _longer(world: World) -> World:
    """A world like ``world`` but for one more token per response: its pairs' tokens are in range."""
    if id(world) not in _LONGER or _LONGER[id(world)][0] is not world:
        _LONGER[id(world)] = (world, World(n_prompts=world.n_prompts, vocab=world.vocab,
                                           response_len=world.response_len + 1))
    return _LONGER[id(world)][1]
PAIR_COUNTS = (1, 2, 3, 7, 20)
WORLD_PAIRS = Kind([later("preferences", lambda r, kw: _pairs(r, _world_of(kw), PAIR_COUNTS[r.integers(5)]))],
                   [*PAIRS_JUNK, later("empty", lambda r, kw: _pairs(r, _world_of(kw), 0))])
ACCURACY_PAIRS = Kind([*WORLD_PAIRS.valid, later("ties", lambda r, kw: _ties(r, _world_of(kw)))], WORLD_PAIRS.junk)


def _ties(r: Draws, world: World) -> WorldPairs:
    """Pairs of a response and itself: no gold differs (gold_accuracy has nothing to score)."""
    first = r.integers(0, world.vocab, (3, world.response_len))
    return WorldPairs(r.integers(0, world.n_prompts, 3), first, first, np.full(3, 0.5), 0.0)


def _margin_valid() -> list[Value]:
    n = lambda kw: len(kw["pairs"]) if isinstance(kw.get("pairs"), WorldPairs) else 3  # noqa: E731
    return [val("none", None), later("zeros", lambda r, kw: np.zeros(n(kw))),
            later("random", lambda r, kw: r.standard_normal(n(kw))), later("list", lambda r, kw: [0.5] * n(kw))]


MARGIN = Kind(_margin_valid(), [
    later("one-short", lambda r, kw: np.zeros(max(0, (len(kw["pairs"]) if isinstance(kw.get("pairs"), WorldPairs) else 3) - 1))),
    later("nan", lambda r, kw: np.full(len(kw["pairs"]) if isinstance(kw.get("pairs"), WorldPairs) else 3, NAN)),
    val("str", "0"), val("float", 0.5), fresh("2d", lambda: np.zeros((1, 1))), fresh("str-entries", lambda: ["0"]),
])


# WorldPairs(prompts, first, second, target, cost): arrays of one length and one response length


def _n(kw: dict) -> int:
    prompts = kw.get("prompts")
    return len(prompts) if isinstance(prompts, (list, np.ndarray)) and np.ndim(prompts) == 1 else 3


def _first_shape(kw: dict) -> tuple[int, int]:
    first = kw.get("first")
    return first.shape if isinstance(first, np.ndarray) and first.ndim == 2 else (_n(kw), 2)


PAIR_PROMPTS = Kind(
    [val("array", lambda s: np.array([s.index(4) for _ in range(s.index(6))], dtype=np.int64)),
     val("list", lambda s: [s.index(4) for _ in range(1 + s.index(5))]),
     val("int32", lambda s: np.arange(1 + s.index(4), dtype=np.int32)), fresh("empty", lambda: np.zeros(0, dtype=int))],
    [val("none", None), val("int", 3), val("str", "0 1"), fresh("float", lambda: np.zeros(3)),
     fresh("negative", lambda: np.array([0, -1, 0])), fresh("2d", lambda: np.zeros((3, 1), dtype=int)),
     fresh("bool", lambda: np.zeros(3, dtype=bool)), fresh("huge", lambda: [2**64, 0, 0]),
     fresh("uint64-huge", lambda: np.array([2**64 - 1, 0, 0], dtype=np.uint64)), val("range-huge", range(10**12), True)],
)
PAIR_FIRST = Kind(
    [later("ints", lambda r, kw: r.integers(0, 8, (_n(kw), 1 + int(r.integers(4))))),
     later("lists", lambda r, kw: r.integers(0, 8, (_n(kw), 2)).tolist())],
    [later("one-row-more", lambda r, kw: np.zeros((_n(kw) + 1, 2), dtype=int)),
     later("float", lambda r, kw: np.zeros((_n(kw), 2))), later("negative", lambda r, kw: np.full((_n(kw), 2), -1)),
     later("1d", lambda r, kw: np.zeros(_n(kw), dtype=int)), later("no-tokens", lambda r, kw: np.zeros((_n(kw), 0), dtype=int)),
     val("none", None), val("str", "clear"), later("ragged", lambda r, kw: [[0, 1], [0]] * max(1, _n(kw) // 2))],
)
PAIR_SECOND = Kind(
    [later("ints", lambda r, kw: r.integers(0, 8, _first_shape(kw)))],
    [later("longer", lambda r, kw: np.zeros((_first_shape(kw)[0], _first_shape(kw)[1] + 1), dtype=int)),
     later("float", lambda r, kw: np.zeros(_first_shape(kw))), val("none", None)],
)
PAIR_TARGET = Kind(
    [later("hard", lambda r, kw: r.integers(0, 2, _n(kw)).astype(float)),
     later("soft", lambda r, kw: r.random(_n(kw))), later("ones-list", lambda r, kw: [1.0] * _n(kw)),
     later("int", lambda r, kw: np.ones(_n(kw), dtype=int))],
    [later("above-one", lambda r, kw: np.full(_n(kw), 1.5)), later("negative", lambda r, kw: np.full(_n(kw), -0.1)),
     later("nan", lambda r, kw: np.full(_n(kw), NAN)), later("one-more", lambda r, kw: np.zeros(_n(kw) + 1)),
     later("str", lambda r, kw: ["1"] * _n(kw)), val("none", None), val("float", 0.5),
     later("bool", lambda r, kw: np.ones(_n(kw), dtype=bool))],
)

# responses and prompts of a world (gold_score), responses of a reward model (score)


def _responses_valid(n_of: Callable[[dict], int]) -> list[Value]:
    def length(kw: dict) -> int:
        return _world_of(kw).response_len if isinstance(kw.get("world"), World) else 3

    return [later("ints", lambda r, kw: r.integers(0, _vocab_of(kw), (n_of(kw), length(kw)))),
            later("lists", lambda r, kw: r.integers(0, _vocab_of(kw), (n_of(kw), length(kw))).tolist()),
            later("int32", lambda r, kw: r.integers(0, _vocab_of(kw), (n_of(kw), length(kw))).astype(np.int32)),
            later("uint8", lambda r, kw: r.integers(0, min(_vocab_of(kw), 255), (n_of(kw), length(kw))).astype(np.uint8))]


def _responses_junk(n_of: Callable[[dict], int]) -> list[Value]:
    return [later("past-vocab", lambda r, kw: np.full((n_of(kw), 3), _vocab_of(kw))),
            later("negative", lambda r, kw: np.full((n_of(kw), 3), -1)),
            later("float", lambda r, kw: np.zeros((n_of(kw), 3))), later("1d", lambda r, kw: np.zeros(n_of(kw), dtype=int)),
            later("3d", lambda r, kw: np.zeros((n_of(kw), 3, 1), dtype=int)),
            later("bool", lambda r, kw: np.zeros((n_of(kw), 3), dtype=bool)),
            later("ragged", lambda r, kw: [[0, 1], [0]]), val("none", None), val("str", "clear kind"), val("int", 0),
            fresh("array-0d", lambda: np.array(0)), val("range-huge", range(10**12), True),
            later("huge-int", lambda r, kw: [[2**64] * 3])]


def _prompt_count(kw: dict) -> int:
    prompts = kw.get("prompts")
    return len(prompts) if isinstance(prompts, np.ndarray) and prompts.ndim == 1 else 2


GOLD_PROMPTS = Kind(
    [later("ints", lambda r, kw: r.integers(0, _world_of(kw).n_prompts, int(r.integers(6)))),
     later("list", lambda r, kw: [0] * int(r.integers(1, 4)))],
    [later("past-prompts", lambda r, kw: np.array([_world_of(kw).n_prompts])), fresh("negative", lambda: np.array([-1])),
     fresh("float", lambda: np.zeros(2)), fresh("2d", lambda: np.zeros((2, 1), dtype=int)), val("none", None),
     val("str", "help me"), fresh("bool", lambda: np.zeros(2, dtype=bool))],
)
GOLD_RESPONSES = Kind(_responses_valid(lambda kw: len(kw["prompts"]) if isinstance(kw.get("prompts"), (list, np.ndarray))
                                       and np.ndim(kw["prompts"]) == 1 else 2),
                      _responses_junk(_prompt_count))
SCORE_RESPONSES = Kind(_responses_valid(lambda kw: 4), _responses_junk(lambda kw: 4))

# a reward model built, and the one a method is called on


def _rm_weights_valid() -> list[Value]:
    return [val("random", lambda s: [s.uniform(-3, 3) for _ in range(1 + s.index(32))]),
            val("array", lambda s: np.array([s.uniform(-3, 3) for _ in range(2 + s.index(31))])),
            val("ints", lambda s: [s.index(7) - 3 for _ in range(2 + s.index(8))]),
            fresh("float32", lambda: np.ones(8, dtype=np.float32)), fresh("strided", lambda: np.arange(16.0)[::2]),
            val("extreme", lambda s: [some(s, [1e150, -1e150, 0.0]) for _ in range(2 + s.index(6))]),
            fresh("readonly", lambda: np.require(np.zeros(8), requirements="C").view())]


RM_WEIGHTS = Kind(_rm_weights_valid(), [
    val("none", None), val("str", "weights"), val("float", 1.0), fresh("empty", list), fresh("2d", lambda: np.zeros((2, 4))),
    fresh("nan", lambda: [0.0, NAN]), fresh("inf", lambda: [INF, 0.0]), fresh("past-2**512", lambda: [1e300, 0.0]),
    fresh("complex", lambda: np.zeros(3, dtype=complex)), fresh("bool", lambda: np.zeros(3, dtype=bool)),
    fresh("object", lambda: np.array([1.0, None], dtype=object)), fresh("huge-int", lambda: [10**400, 0]),
    fresh("ragged", lambda: [[0.0], [0.0, 1.0]]), fresh("dict", lambda: {"clear": 1.0}), fresh("str-entries", lambda: ["1", "2"]),
    val("range-huge", range(10**12), True), fresh("array-0d", lambda: np.array(1.0)),
])


def _tokens_for(kw: dict) -> int:
    weights = kw.get("weights")  # not np.ndim: of range(10**12) it builds an array
    if isinstance(weights, np.ndarray):
        return len(weights) if weights.ndim == 1 else 8
    return len(weights) if isinstance(weights, (list, tuple)) else 8


RM_TOKENS = Kind([val("none", None), later("names", lambda r, kw: tuple(f"t{i}" for i in range(_tokens_for(kw)))),
                  later("list", lambda r, kw: [f"t{i}" for i in range(_tokens_for(kw))])],
                 [later("one-short", lambda r, kw: tuple(f"t{i}" for i in range(_tokens_for(kw) - 1))),
                  later("int-names", lambda r, kw: tuple(range(_tokens_for(kw)))), val("str", "abcdefgh"), val("int", 8),
                  later("none-entry", lambda r, kw: (None,) * _tokens_for(kw))])
INSTANCE_RM = Kind([*RM_FOR_WORLD, val("random", lambda s: RewardModel([s.uniform(-2, 2) for _ in range(2 + s.index(31))])),
                    fresh("named", lambda: RewardModel(np.arange(8.0), ref.VOCAB))], [])

# the frontier, Gao's fits and the guard

FRONTIER_REWARD = Kind([*RM_FOR_WORLD, val("gold", "gold")], [val("wrong-case", "Gold"), *RM_JUNK])
BETAS_POSITIVE = Kind(
    [val("list", lambda s: [s.uniform(0.01, 10.0) for _ in range(1 + s.index(3))]),
     val("array", lambda s: np.geomspace(100.0, 0.01, 1 + s.index(5))),
     val("edges", lambda s: [some(s, [TINY, 1e-300, 1e-8, 1e300, 1.7e308]) for _ in range(1 + s.index(3))]),
     fresh("ints", lambda: [1, 2])],
    [fresh("empty", list), val("scalar", 0.1), val("str", "0.1"), val("none", None), fresh("zero", lambda: [0.0]),
     fresh("negative", lambda: [0.1, -1.0]), fresh("nan", lambda: [NAN]), fresh("inf", lambda: [INF]),
     fresh("2d", lambda: np.ones((2, 2))), fresh("str-entry", lambda: ["0.1"]), fresh("bool", lambda: [True]),
     val("range-huge", range(1, 10**12), True)],
)
BON_N = Kind(
    [val("int", lambda s: 1 + s.index(100)), val("list", lambda s: [1 + s.index(64) for _ in range(1 + s.index(4))]),
     val("array", lambda s: np.arange(1, 2 + s.index(8))), val("float", 2.5), val("huge", 1e300), val("numpy-int", np.int64(4))],
    [val("zero", 0), val("negative", -1), val("nan", NAN), val("inf", INF), val("str", "4"), val("none", None),
     fresh("zero-entry", lambda: [0, 2]), val("bool", True), val("complex", 2j), fresh("empty", list),
     val("range-huge", range(1, 10**12), True), fresh("str-entries", lambda: np.array(["1"]))],
)
FIT_D = Kind(
    [val("random", lambda s: [s.uniform(0.0, 3.0) for _ in range(2 + s.index(8))]),
     val("array", lambda s: np.sqrt(np.linspace(0.0, s.uniform(0.1, 10.0), 2 + s.index(8)))),
     fresh("with-nan", lambda: [0.5, NAN, 1.0, 2.0]), fresh("with-zero", lambda: [0.0, 1.0, 2.0]),
     val("tiny", lambda s: [some(s, [TINY, 1e-300, 1e-150]) for _ in range(3)]),
     val("large", lambda s: [some(s, [1e100, 1e150, 1e200, 1.7e308]) for _ in range(3)]),
     fresh("equal", lambda: [1.0, 1.0, 1.0])],
    [fresh("one-point", lambda: [1.0]), fresh("empty", list), val("none", None), val("str", "1 2"), val("scalar", 1.0),
     fresh("2d", lambda: np.ones((3, 2))), fresh("complex", lambda: np.ones(3, dtype=complex)),
     fresh("str-entries", lambda: ["1", "2"]), val("range-huge", range(10**12), True)],
)


def _like(key: str, scale: float = 1.0) -> Callable[[Any, dict], Any]:
    def make(r: Draws, kw: dict) -> Any:
        shape = np.shape(kw[key]) if isinstance(kw.get(key), (list, np.ndarray)) else (3,)
        return scale * r.standard_normal(shape)

    return make


FIT_GOLD = Kind([later("like-d", _like("d")), later("large", _like("d", 1e300))],
                [later("one-more", lambda r, kw: np.zeros(len(kw["d"]) + 1 if isinstance(kw.get("d"), list) else 5)),
                 val("none", None), val("str", "1"), fresh("nan", lambda: [NAN, NAN, NAN]), val("scalar", 1.0)])
GAO_FIT = Kind([val("fit", lambda s: GaoFit(some(s, ["bon", "rl"]), s.uniform(-2, 2), s.uniform(-2, 2))),
                val("extreme", lambda s: GaoFit(some(s, ["bon", "rl"]), some(s, [1e308, -1e308, 0.0, 1.0, 1e3]),
                                                some(s, [1e-308, 0.0, -1.0, 1.0, TINY, 1e308])))], [])
GAO_D = Kind([val("scalar", lambda s: s.uniform(0.0, 5.0)), val("array", lambda s: np.linspace(0.0, s.uniform(0.1, 5.0), 5)),
              fresh("zero", lambda: 0.0), fresh("list", lambda: [0.0, 0.5, 1.0]), val("large", 1e300),
              val("tiny", TINY)],
             [val("nan", NAN), val("negative", -1.0), val("inf", INF), val("str", "1"), val("none", None),
              fresh("complex", lambda: [1j]), fresh("nan-entry", lambda: [0.0, NAN])])
GUARD_GOLD = Kind(
    [val("records", lambda s: np.array([s.uniform(-1, 1) for _ in range(1 + s.index(8))])),
     val("seeds", lambda s: np.array([[s.uniform(-1, 1) for _ in range(5)] for _ in range(1 + s.index(3))])),
     fresh("list", lambda: [0.0, 1.0, 2.0, 1.5, 1.0, 0.5])],
    [fresh("empty", list), fresh("no-records", lambda: np.zeros((2, 0))), fresh("0d", lambda: np.array(1.0)),
     val("none", None), val("str", "0 1"), fresh("nan", lambda: [0.0, NAN, 1.0]), fresh("str-entries", lambda: ["0", "1"])],
)
def _has_records(kw: dict) -> bool:
    return isinstance(kw.get("gold"), (list, np.ndarray)) and np.ndim(kw["gold"]) >= 1


GUARD_PROXY = Kind([later("like-gold", lambda r, kw: np.cumsum(r.random(np.shape(kw["gold"])), axis=-1)
                          if _has_records(kw) else np.arange(3.0))],
                   [later("one-more", lambda r, kw: np.zeros(np.shape(kw["gold"])[-1] + 1)
                          if _has_records(kw) else np.zeros(9)),
                    val("none", None), fresh("nan", lambda: [NAN, 0.0, 1.0]), val("scalar", 1.0)])
NS = Kind([val("list", lambda s: sorted({1 + s.index(8) for _ in range(1 + s.index(3))})), fresh("tuple", lambda: (1, 2, 4))],
          [fresh("empty", list), val("scalar", 4), val("str", "124"), fresh("zero-entry", lambda: [0, 2]),
           fresh("float-entry", lambda: [1, 2.5]), fresh("huge-entry", lambda: [1, 2**40]), val("none", None),
           fresh("bool-entry", lambda: [True, 2])])

# the lab: tiny worlds, a few pairs, steps and draws

LAB_WORLD = Kind([val("tiny", lambda s: _small_world(s, prompts=2, vocab=16, length=3)), fresh("lesson", World.lesson)],
                 [v for v in WORLD_JUNK[:5] if v.label != "none"])  # None is World(): 16 x 1024
LAB_NS = Kind([fresh("1-2-4", lambda: (1, 2, 4)), fresh("2-3", lambda: [2, 3]), val("three", lambda s: [1, 2 + s.index(2), 5])],
              [fresh("one-above-one", lambda: [1, 8]), fresh("zero-entry", lambda: [0, 2, 4]), fresh("empty", list),
               val("str", "124"), val("int", 4), fresh("huge-entry", lambda: [2, 2**17])])
LAB_RM_PAIRS = Kind([val("one", lambda s: [2 + s.index(19)]), val("two", lambda s: (2 + s.index(9), 12 + s.index(9)))],
                    [fresh("empty", list), fresh("one-pair", lambda: [1]), val("int", 20), val("str", "20"),
                     fresh("float-entry", lambda: [2.5]), fresh("huge-entry", lambda: [10**8]), val("none", None)])
LAB_LABELLERS = Kind([fresh("human", lambda: ("human",)), fresh("ai", lambda: ["ai"]), fresh("both", lambda: ("human", "ai"))],
                     [val("str", "human"), fresh("unknown", lambda: ["crowd"]), fresh("empty", list), val("none", None),
                      fresh("int-entry", lambda: [1])])
LAB_BETAS = Kind([fresh("zero", lambda: [0.0]), val("two", lambda s: (0.0, s.uniform(0.01, 1.0)))],
                 [fresh("no-zero", lambda: [0.1]), fresh("negative", lambda: [0.0, -1.0]), fresh("nan", lambda: [0.0, NAN]),
                  fresh("empty", list), val("str", "0"), val("scalar", 0.0), fresh("str-entry", lambda: [0.0, "0.1"])])

WORLD_SPECS: dict[str, list[Param]] = {
    "World": [opt("n_prompts", counts(1, 4, minimum=1, maximum=worlds_module.MAX_PROMPTS)),
              opt("vocab", Kind(counts(2, 32).valid, [*counts(2, 32, minimum=2, maximum=worlds_module.MAX_VOCAB).junk,
                                                      val("2**40", 2**40, True)])),
              opt("response_len", counts(1, 4, minimum=1, maximum=worlds_module.MAX_RESPONSE_LEN)),
              opt("zipf", SCALE), opt("prompt_scale", SCALE), opt("gold", GOLD_OPTIONS),
              opt("repeat_penalty", Kind([val("none", None), *SCALE.valid], SCALE.junk)), opt("seed", WORLD_SEED)],
    "World.lesson": [],
    "World.kl": [req("world", INSTANCE_WORLD), req("logits", LOGITS_FOR_WORLD)],
    "World.expected_gold": [req("world", INSTANCE_WORLD), req("logits", LOGITS_FOR_WORLD)],
    "World.expected_score": [req("world", INSTANCE_WORLD), req("logits", LOGITS_FOR_WORLD), req("rm", RM)],
    "World.sample": [req("world", INSTANCE_WORLD), req("n", counts(0, 20, minimum=0, sized=True)), req("seed", WORLD_SEED),
                     opt("logits", OPTIONAL_LOGITS)],
    "World.gold_score": [req("world", INSTANCE_WORLD), req("prompts", GOLD_PROMPTS), req("responses", GOLD_RESPONSES)],
    "World.preferences": [req("world", INSTANCE_WORLD), req("n", counts(0, 20, minimum=0, sized=True)),
                          req("seed", WORLD_SEED), opt("labeller", LABELLER)],
    "Labeller": [opt("temperature", TEMPERATURE), opt("flip", PROBABILITY), opt("cost", COST)],
    "Judge": [opt("rho", bounded("finite", -1.0, 1.0, (-1.0, 1.0, 0.0), (1.0 + 1e-15, -1.5, 2.0))),
              opt("bias", bounded("finite", -2.0, 2.0, (0.0, 1e6, -1e6), (1e7, -1e7, 1e300, -1.7e308))),
              opt("position_bias", PROBABILITY), opt("soft", BOOL), opt("both_orders", BOOL), opt("temperature", TEMPERATURE),
              opt("seed", WORLD_SEED), opt("cost", COST)],
    "Judge.token_values": [req("judge", JUDGE), req("world", WORLD)],
    "WorldPairs": [req("prompts", PAIR_PROMPTS), req("first", PAIR_FIRST), req("second", PAIR_SECOND),
                   req("target", PAIR_TARGET), req("cost", COST)],
    "RewardModel": [req("weights", RM_WEIGHTS), opt("tokens", RM_TOKENS)],
    "RewardModel.score": [req("rm", INSTANCE_RM), req("responses", SCORE_RESPONSES)],
    "RewardModel.gold_accuracy": [req("world", WORLD), req("rm", INSTANCE_RM), req("pairs", ACCURACY_PAIRS)],
    "RewardModel.as_dict": [req("rm", INSTANCE_RM)],
    "RewardModel.weights_for": [req("world", WORLD), req("rm", INSTANCE_RM)],
    "train_reward_model": [req("world", WORLD), req("pairs", WORLD_PAIRS),
                           opt("epochs", counts(0, 3, minimum=0, maximum=10_000)), opt("lr", positive()),
                           opt("margin", MARGIN), opt("center_rewards_coefficient", non_negative(0.0, 0.1))],
    "Frontier.of": [req("world", WORLD), req("reward", FRONTIER_REWARD), req("betas", BETAS_POSITIVE)],
    "best_of_n_kl": [req("n", BON_N)],
    "fit_gao": [req("d", FIT_D), req("gold", FIT_GOLD), req("form", options(("bon", "rl")))],
    "GaoFit": [req("form", options(("bon", "rl"))), req("alpha", finite()), req("beta", finite())],
    "GaoFit.__call__": [req("fit", GAO_FIT), req("d", GAO_D)],
    "GaoFit.peaks": [req("fit", GAO_FIT)],
    "guard_stop": [req("gold", GUARD_GOLD), req("proxy", GUARD_PROXY), req("patience", counts(1, 3, minimum=1))],
    "best_of_n_curve": [req("world", WORLD), req("rm", RM), req("ns", NS),
                        req("draws", counts(1, 20, minimum=1, maximum=1 << 20)), req("seed", WORLD_SEED)],
    # PPO in a world on the backend's engine: a RewardModel of the world's vocabulary
    "sweep_rlhf[world]": [
        req("w", RM), req("world", WORLD), req("betas", first_axis(non_negative(0.0, 0.5))), req("seeds", SEEDS),
        req("steps", counts(1, 3, minimum=1, sized=True)), opt("eps", axis(positive(0.05, 0.5))),
        opt("lr", axis(positive())), opt("ppo_epochs", axis(counts(1, 2, minimum=1, maximum=10_000))),
        opt("kl_ctl", Kind([val("fixed", "fixed"), fresh("axis", lambda: ["fixed", "fixed"])],
                           [*options(ref.KL_CONTROLLERS).junk, val("adaptive", "adaptive"),
                            fresh("axis-doubling", lambda: ["fixed", "doubling"])])),
        opt("target", axis(positive(0.1, 2.0))), opt("horizon", axis(positive(1.0, 1e4))),
        opt("kl_penalty", Kind([val("none", None), *axis(options(ref.KL_PENALTIES)).valid],
                               [v for v in axis(options(ref.KL_PENALTIES)).junk if v.label != "none"])),
        opt("vf_coef", OPTIONAL_VF_COEF), opt("cliprange_value", axis(positive(0.05, 0.5))),
        opt("theta", Kind([val("none", None)], [fresh("array", lambda: np.zeros((P, V))), val("str", "theta")])),
        opt("ref", Kind([val("none", None)], [fresh("init", ref.init_policy)])),
        opt("executor", Kind([val("none", None)], [val("str", "pool"), fresh("object", object)])),
        opt("shards", Kind([val("none", None)], [val("two", 2), val("zero", 0)])),
        opt("simd", Kind([val("none", None)], [val("portable", "portable"), val("int", 1)])),
        opt("record_every", RECORD_EVERY), opt("n_threads", THREADS), opt("progress", PROGRESS), opt("exact", BOOL),
        opt("max_memory", MAX_MEMORY)],
    # Best-of-N in a world on the backend's engine: a RewardModel of the world's vocabulary, sampled
    "sweep_best_of_n[world]": [
        req("w", RM), req("world", WORLD), req("ns", first_axis(counts(1, 8, minimum=1, maximum=1_000_000_000))),
        opt("seeds", SEEDS),
        # (a huge count is only a long run: it needs no memory, and Ctrl-C stops it)
        opt("samples", Kind([val("none", None), *counts(2, 6).valid], counts(2, 6, minimum=2).junk)),
        opt("policy", Kind([val("none", None)], [fresh("array", lambda: np.zeros((P, V))), val("str", "policy")])),
        opt("n_threads", THREADS), opt("progress", PROGRESS), opt("max_memory", MAX_MEMORY)],
    # DPO in a world on the backend's engine: the world's labelled pairs, a RewardModel of it or none
    "sweep_dpo[world]": [
        req("pairs", WORLD_DPO_PAIRS), req("world", WORLD), req("betas", first_axis(positive(0.01, 1.0))),
        opt("seeds", DPO_SEEDS), opt("loss_type", axis(options(ref.DPO_LOSS_TYPES))),
        opt("label_smoothing", axis(reals("finite", 0.0, 0.4, (0.0,)))), opt("lr", axis(positive())),
        opt("epochs", axis(counts(1, 2, minimum=1, sized=True))),
        opt("theta", Kind([val("none", None)], [fresh("array", lambda: np.zeros((P, V))), val("str", "theta")])),
        opt("ref", Kind([val("none", None)], [fresh("init", ref.init_policy)])),
        opt("w", Kind([val("none", None), *RM_FOR_WORLD], [v for v in RM_JUNK if v.label != "none"])),
        opt("record_every", RECORD_EVERY), opt("n_threads", THREADS), opt("progress", PROGRESS),
        opt("max_memory", MAX_MEMORY)],
    # GRPO in a world on the backend's engine: a RewardModel of the world's vocabulary
    "sweep_grpo[world]": [
        req("w", RM), req("world", WORLD), req("betas", first_axis(non_negative(0.0, 0.5))), req("seeds", SEEDS),
        req("steps", counts(1, 3, minimum=1, sized=True)),
        opt("num_generations", axis(counts(2, 4, minimum=2, maximum=65_536))),
        opt("epsilon", axis(positive(0.05, 0.5))), opt("epsilon_high", EPSILON_HIGH),
        opt("lr", axis(positive())), opt("scale_rewards", options(ref.SCALE_REWARDS)),
        opt("num_iterations", axis(counts(1, 2, minimum=1, maximum=10_000))),
        opt("theta", Kind([val("none", None)], [fresh("array", lambda: np.zeros((P, V))), val("str", "theta")])),
        opt("ref", Kind([val("none", None)], [fresh("init", ref.init_policy)])),
        opt("record_every", RECORD_EVERY), opt("n_threads", THREADS), opt("progress", PROGRESS),
        opt("max_memory", MAX_MEMORY)],
    # the lab, tiny: a few pairs, a step or three, a handful of draws (see SLOW)
    "overoptimization": [
        req("world", LAB_WORLD), opt("rm_pairs", LAB_RM_PAIRS), opt("labellers", LAB_LABELLERS), opt("betas", LAB_BETAS),
        req("ns", LAB_NS), req("seeds", counts(1, 1, minimum=1, maximum=10_000)),
        # Gao's fit needs two recorded steps: valid is 2 or 3 steps, each recorded
        req("steps", Kind(counts(2, 3).valid, counts(2, 3, minimum=1, sized=True).junk + [val("one", 1)])),
        opt("lr", positive()), req("record_every", Kind(counts(1, 1).valid, counts(1, 1, minimum=1, sized=True).junk + [
            val("above-steps", 4)])), opt("patience", counts(1, 3, minimum=1)),
        req("bon_draws", counts(1, 10, minimum=1, maximum=1 << 20)), opt("progress", Kind(BOOL.valid[:1], BOOL.junk))],
}
SPECS.update(WORLD_SPECS)


# Safe RLHF in a world (rlhf_fast.safety, and sweep_rlhf with a cost model): worlds with a
# safety cost; a cost model is a RewardModel of the world's vocabulary.
SAFE_WORLD_POOL = [World(n_prompts=1 + k % 3, vocab=2 + 5 * k, response_len=1 + k % 4, gold=("linear", "count_once")[k % 2],
                         seed=k, safety=worlds_module.Safety(unsafe_share=(0.0, 0.1, 0.5, 1.0)[k % 4],
                                                             correlation=(-1.0, 0.0, 0.7, 1.0)[k % 4]))
                   for k in range(8)]
SAFE_WORLD = Kind([val("pooled", lambda s: some(s, SAFE_WORLD_POOL)), val("first", SAFE_WORLD_POOL[0])],
                  [*WORLD_JUNK, val("no-safety", SMALL_WORLD)])
INSTANCE_SAFE_WORLD = Kind(SAFE_WORLD.valid, [])
SAFETY = Kind([val("none", None), fresh("default", worlds_module.Safety),
               val("random", lambda s: worlds_module.Safety(s.uniform(0.0, 1.0), s.uniform(-1.0, 1.0), s.uniform(0.1, 3.0)))],
              [val("str", "yes"), val("int", 1), val("class", lambda s: worlds_module.Safety)])
SAFETY_LABELLER = Kind([val("none", None), val("labeller", _labeller), fresh("default", Labeller)],
                       [val("judge", _judge), val("str", "human"), val("int", 1)])
LAMBDA_SETTING = Kind([val("none", None), *axis(non_negative(0.0, 3.0)).valid],
                      [v for v in axis(non_negative(0.0, 3.0)).junk if v.label != "none"])
COST_LIMIT = Kind([val("none", None), val("zero", 0.0), val("axis-with-none", [None, 0.5]), *axis(finite(-1.0, 3.0)).valid],
                  [v for v in axis(finite(-1.0, 3.0)).junk if v.label != "none"])
OPTIONAL_POSITIVE = Kind([val("none", None), *axis(positive(0.01, 1.0)).valid],
                         [v for v in axis(positive(0.01, 1.0)).junk if v.label != "none"])
COST_WINDOW = Kind([val("none", None), *axis(counts(1, 8, minimum=1, maximum=1 << 16)).valid],
                   [v for v in axis(counts(1, 8, minimum=1, maximum=1 << 16)).junk if v.label != "none"])
OPTIONAL_GAIN = Kind([val("none", None), *axis(non_negative(0.0, 20.0)).valid],
                     [v for v in axis(non_negative(0.0, 20.0)).junk if v.label != "none"])
OPTIONAL_BOOL_AXIS = Kind([val("none", None), *BOOL.valid, val("axis", [False, True])],
                          [v for v in BOOL.junk if v.label != "none"] + [val("axis-of-ints", [0, 1])])
SAFETY_SPECS: dict[str, list[Param]] = {
    "World[safety]": [opt("n_prompts", counts(1, 4, minimum=1, maximum=worlds_module.MAX_PROMPTS)),
                      opt("vocab", counts(2, 32)), opt("response_len", counts(1, 4)), opt("seed", WORLD_SEED),
                      opt("safety", SAFETY)],
    "Safety": [opt("unsafe_share", PROBABILITY),
               opt("correlation", bounded("finite", -1.0, 1.0, (-1.0, 1.0, 0.0), (1.0 + 1e-15, -1.5, 2.0))),
               opt("severity", positive(0.1, 3.0))],
    "World.expected_cost": [req("world", INSTANCE_SAFE_WORLD), req("logits", LOGITS_FOR_WORLD)],
    "World.cost_score": [req("world", INSTANCE_SAFE_WORLD), req("prompts", GOLD_PROMPTS), req("responses", GOLD_RESPONSES)],
    "World.safety_preferences": [req("world", INSTANCE_SAFE_WORLD), req("n", counts(0, 20, minimum=0, sized=True)),
                                 req("seed", WORLD_SEED), opt("labeller", SAFETY_LABELLER), opt("logits", OPTIONAL_LOGITS)],
    "calibrate_cost_model": [req("world", SAFE_WORLD), req("cost_model", RM), opt("n", counts(2, 20, minimum=2)),
                             opt("seed", WORLD_SEED), opt("logits", OPTIONAL_LOGITS)],
    # PPO in a world under a cost, on the backend's engine
    "sweep_rlhf[safety]": [
        req("w", RM), req("world", SAFE_WORLD), req("cost_model", RM), req("betas", first_axis(non_negative(0.0, 0.5))),
        req("seeds", SEEDS), req("steps", counts(1, 3, minimum=1, sized=True)), opt("lr", axis(positive())),
        opt("lambda_init", LAMBDA_SETTING), opt("cost_limit", COST_LIMIT), opt("lagrangian_lr", OPTIONAL_POSITIVE),
        opt("lambda_max", Kind([val("none", None), *axis(positive(3.0, 100.0)).valid],
                               [v for v in axis(positive(3.0, 100.0)).junk if v.label != "none"])),
        opt("cost_window", COST_WINDOW), opt("lagrangian_kp", OPTIONAL_GAIN), opt("lr_decay", OPTIONAL_BOOL_AXIS),
        opt("cost_estimate", Kind([val("none", None), *axis(options(("sampled", "expected"))).valid],
                                  [v for v in axis(options(("sampled", "expected"))).junk if v.label != "none"])),
        opt("record_every", RECORD_EVERY), opt("exact", BOOL), opt("max_memory", MAX_MEMORY)],
    # the lab, tiny (see SLOW)
    "safety_lab": [req("world", SAFE_WORLD), opt("lambdas", Kind([fresh("two", lambda: (0.0, 1.0))], [val("str", "0")])),
                   opt("cost_limits", Kind([fresh("one", lambda: [0.5])], [val("none", None)])),
                   opt("seeds", counts(1, 2, minimum=1, maximum=10_000)), opt("steps", counts(1, 5, minimum=1)),
                   opt("rm_pairs", counts(1, 20, minimum=1)), opt("cost_pairs", counts(1, 20, minimum=1)),
                   opt("calibration", counts(2, 20, minimum=2)), opt("lagrangian_kp", non_negative(0.0, 20.0)),
                   opt("lr_decay", BOOL), opt("margin_z", non_negative(0.0, 5.0)), opt("beta", non_negative(0.0, 1.0)),
                   opt("lambda_init", positive(0.1, 5.0)), opt("lagrangian_lr", positive(0.01, 0.5)),
                   opt("lambda_max", positive(5.0, 50.0)), opt("cost_window", counts(1, 8, minimum=1, maximum=1 << 16)),
                   opt("cost_epochs", counts(0, 2, minimum=0, maximum=10_000))],
}
SPECS.update(SAFETY_SPECS)


# ------------------------------------------------------------------------------ rows
#
# rlhf_fast.rows ("rows.<name>"): NumPy tables in, the backend's kernels (the Rust core's or
# the reference twin's) chosen per call (ROW_CALLS). Tables are small (a few rows of up to
# 2,049 logits: past a chunk of 1,024, so that sampling's chunk sums are crossed); a table that
# must fit the logits (the reference's, ``out``, ``u``, ``tokens``) is a ``Later``.

ROW_VOCABS = (1, 2, 3, 5, 8, 17, 64, 1025, 2049)


def _row_table(r: Draws, scale: float = 3.0) -> np.ndarray:
    shape = (1 + r.integers(4), ROW_VOCABS[r.integers(len(ROW_VOCABS))])
    return scale * r.standard_normal(shape)


def _row_shape(kw: dict) -> tuple[int, int]:
    """The shape of the call's logits (``a`` for the streams), or (2, 3) for junk."""
    x = kw.get("logits", kw.get("a"))
    return x.shape if isinstance(x, np.ndarray) and x.ndim == 2 and 0 < x.size <= 1 << 16 else (2, 3)


def _row_extreme(r: Draws, values: list[float]) -> np.ndarray:
    shape = (1 + r.integers(3), ROW_VOCABS[r.integers(6)])
    return r.choice(values, shape).astype(np.float64)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(axis=1, keepdims=True)
    return np.minimum(shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True)), 0.0)


def _table_junk(shape_of: Callable[[dict], tuple[int, int]]) -> list[Value]:
    def shaped(f: Callable[[tuple[int, int]], Any]) -> Callable[[Any, dict], Any]:
        return lambda r, kw: f(shape_of(kw))

    return [
        val("none", None), val("float", 0.5), val("str", "logits"), fresh("list", lambda: [[0.0, 1.0]]),
        fresh("1d", lambda: np.zeros(3)), fresh("3d", lambda: np.zeros((2, 3, 1))), fresh("0d", lambda: np.array(0.0)),
        fresh("no-rows", lambda: np.zeros((0, 3))), fresh("no-columns", lambda: np.zeros((2, 0))),
        later("float32", shaped(lambda s: np.zeros(s, dtype=np.float32))),
        later("int64", shaped(lambda s: np.zeros(s, dtype=np.int64))),
        later("complex", shaped(lambda s: np.zeros(s, dtype=complex))),
        later("object", shaped(lambda s: np.zeros(s, dtype=object))),
        later("bool", shaped(lambda s: np.zeros(s, dtype=bool))),
        later("big-endian", shaped(lambda s: np.zeros(s, dtype=">f8"))),
        later("str-array", shaped(lambda s: np.full(s, "a"))),
        later("strided", shaped(lambda s: np.zeros((s[0], 2 * s[1]))[:, ::2] if s[1] > 1 else np.zeros((2, 4))[:, ::2])),
        later("fortran", shaped(lambda s: np.asfortranarray(np.zeros((max(s[0], 2), max(s[1], 2)))))),
        fresh("broadcast-huge", lambda: np.broadcast_to(np.zeros(1), (1 << 30, 1 << 20))),
        later("nan", shaped(lambda s: np.where(np.eye(*s) > 0, NAN, 0.0))),
        later("inf", shaped(lambda s: np.full(s, INF))),
        later("-inf-one", shaped(lambda s: np.where(np.eye(*s)[::-1] > 0, -INF, 0.0))),
        later("one-column-more", shaped(lambda s: np.zeros((s[0], s[1] + 1)))),
        later("one-row-more", shaped(lambda s: np.zeros((s[0] + 1, s[1])))),
    ]


ROW_LOGITS = Kind(
    [
        later("random", lambda r, kw: _row_table(r)),
        later("random", lambda r, kw: _row_table(r, 30.0)),
        later("extreme", lambda r, kw: _row_extreme(r, [1e4, -1e4, 1e300, -1e300, 1.7e308, -1.7e308, 0.0])),
        later("ties", lambda r, kw: _row_extreme(r, [0.0, 1.0])),
        later("tiny", lambda r, kw: _row_extreme(r, [TINY, -TINY, 0.0, 1e-300])),
        later("readonly", lambda r, kw: _frozen(_row_table(r))),
        fresh("matrix", _matrix),
        fresh("one-logit", lambda: np.zeros((3, 1))),
    ],
    _table_junk(lambda kw: (2, 3)),
)
ROW_REF = Kind(
    [
        later("random", lambda r, kw: 3.0 * r.standard_normal(_row_shape(kw))),
        later("same", lambda r, kw: kw["logits"].copy() if isinstance(kw.get("logits"), np.ndarray)
              and kw["logits"].dtype == np.float64 and kw["logits"].shape == _row_shape(kw) else np.zeros(_row_shape(kw))),
        later("extreme", lambda r, kw: r.choice([1e4, -1e4, 1e300, -1.7e308, 1.7e308, 0.0], _row_shape(kw)).astype(float)),
        later("log-softmax", lambda r, kw: _log_softmax(3.0 * r.standard_normal(_row_shape(kw)))),
        later("log-softmax-extreme", lambda r, kw: _log_softmax(r.choice([1e4, -1e4, 0.0, -1e300], _row_shape(kw)).astype(float))),
    ],
    [*_table_junk(_row_shape), later("shares-logits", lambda r, kw: kw.get("logits"))],
)
ROW_U = Kind(
    [later("random", lambda r, kw: r.random(_row_shape(kw)[0])),
     later("edges", lambda r, kw: r.choice([0.0, -0.0, 1.0 - 2.0**-53, 0.5, TINY], _row_shape(kw)[0]).astype(float))],
    [later("one", lambda r, kw: np.ones(_row_shape(kw)[0])), later("nan", lambda r, kw: np.full(_row_shape(kw)[0], NAN)),
     later("negative", lambda r, kw: np.full(_row_shape(kw)[0], -TINY)),
     later("one-short", lambda r, kw: np.zeros(_row_shape(kw)[0] - 1)),
     later("list", lambda r, kw: [0.5] * _row_shape(kw)[0]), later("float32", lambda r, kw: np.zeros(_row_shape(kw)[0], np.float32)),
     later("2d", lambda r, kw: np.zeros((_row_shape(kw)[0], 1))), val("none", None), val("float", 0.5)],
)
ROW_WEIGHTS = Kind(
    [later("random", lambda r, kw: r.standard_normal(_row_shape(kw)[1])),
     later("extreme", lambda r, kw: r.choice([1e300, -1e300, 1.7e308, -1.7e308, 0.0], _row_shape(kw)[1]).astype(float))],
    [later("nan", lambda r, kw: np.full(_row_shape(kw)[1], NAN)), later("inf", lambda r, kw: np.full(_row_shape(kw)[1], -INF)),
     later("one-more", lambda r, kw: np.zeros(_row_shape(kw)[1] + 1)), later("list", lambda r, kw: [0.0] * _row_shape(kw)[1]),
     later("int64", lambda r, kw: np.zeros(_row_shape(kw)[1], np.int64)), val("none", None), val("float", 1.0)],
)
ROW_TOKENS = Kind(
    [later("random", lambda r, kw: r.integers(0, _row_shape(kw)[1], _row_shape(kw)[0])),
     later("last", lambda r, kw: np.full(_row_shape(kw)[0], _row_shape(kw)[1] - 1, dtype=np.int64))],
    [later("past-vocab", lambda r, kw: np.full(_row_shape(kw)[0], _row_shape(kw)[1], dtype=np.int64)),
     later("negative", lambda r, kw: np.full(_row_shape(kw)[0], -1, dtype=np.int64)),
     later("huge", lambda r, kw: np.full(_row_shape(kw)[0], 2**62, dtype=np.int64)),
     later("int32", lambda r, kw: np.zeros(_row_shape(kw)[0], np.int32)),
     later("uint64", lambda r, kw: np.zeros(_row_shape(kw)[0], np.uint64)),
     later("float", lambda r, kw: np.zeros(_row_shape(kw)[0])), later("list", lambda r, kw: [0] * _row_shape(kw)[0]),
     later("one-more", lambda r, kw: np.zeros(_row_shape(kw)[0] + 1, np.int64)), val("none", None), val("int", 0)],
)
ROW_P_OLD = Kind(
    [later("random", lambda r, kw: 0.01 + 0.99 * r.random(_row_shape(kw)[0])),
     later("edges", lambda r, kw: r.choice([1.0, TINY, 1e-300, 1e-8, 0.5], _row_shape(kw)[0]).astype(float))],
    [later("zero", lambda r, kw: np.zeros(_row_shape(kw)[0])), later("above-one", lambda r, kw: np.full(_row_shape(kw)[0], 1.5)),
     later("nan", lambda r, kw: np.full(_row_shape(kw)[0], NAN)), later("inf", lambda r, kw: np.full(_row_shape(kw)[0], INF)),
     later("one-short", lambda r, kw: np.ones(_row_shape(kw)[0] - 1)), later("list", lambda r, kw: [0.5] * _row_shape(kw)[0]),
     val("none", None)],
)
ROW_ADVANTAGES = Kind(
    [later("random", lambda r, kw: r.standard_normal(_row_shape(kw)[0])),
     later("extreme", lambda r, kw: r.choice([1e300, -1e300, 1.7e308, -1.7e308, 0.0, TINY], _row_shape(kw)[0]).astype(float))],
    [later("nan", lambda r, kw: np.full(_row_shape(kw)[0], NAN)), later("inf", lambda r, kw: np.full(_row_shape(kw)[0], INF)),
     later("one-more", lambda r, kw: np.zeros(_row_shape(kw)[0] + 1)), later("int64", lambda r, kw: np.zeros(_row_shape(kw)[0], np.int64)),
     val("none", None), val("float", 1.0)],
)
ROW_OUT = Kind(
    [val("none", None), later("fresh", lambda r, kw: np.full(_row_shape(kw), NAN)),
     later("fresh", lambda r, kw: np.empty(_row_shape(kw)))],
    [later("wrong-shape", lambda r, kw: np.zeros((_row_shape(kw)[0], _row_shape(kw)[1] + 1))),
     later("float32", lambda r, kw: np.zeros(_row_shape(kw), np.float32)),
     later("readonly", lambda r, kw: np.broadcast_to(np.zeros(1), _row_shape(kw))),
     later("read-only-flag", lambda r, kw: _frozen(np.zeros(_row_shape(kw)))),
     later("fortran", lambda r, kw: np.asfortranarray(np.zeros((max(2, _row_shape(kw)[0]), max(2, _row_shape(kw)[1]))))),
     later("is-logits", lambda r, kw: kw.get("logits", kw.get("a"))),
     later("overlaps-ref", lambda r, kw: kw.get("ref_logits", kw.get("b"))),
     val("list", lambda s: [[0.0]]), val("str", "out")],
)
ROW_THREADS = Kind(THREADS.valid, [*THREADS.junk, val("huge-valid-int", 10**6), val("past-u64", 2**70),
                                   val("bool", True), val("numpy-float", np.float64(2.0))])
ROW_FLAG = Kind([val("false", False), val("true", True), val("numpy-bool", np.bool_(True))],
                [val("str", "yes"), val("int", 1), val("none", None)])


def _frozen(x: np.ndarray) -> np.ndarray:
    x.flags.writeable = False
    return x


ROW_SPECS: dict[str, list[Param]] = {
    "rows.softmax_rows": [req("logits", ROW_LOGITS), opt("n_threads", ROW_THREADS)],
    "rows.log_softmax_rows": [req("logits", ROW_LOGITS), opt("n_threads", ROW_THREADS)],
    "rows.kl_rows": [req("logits", ROW_LOGITS), req("ref_logits", ROW_REF), opt("ref_normalized", ROW_FLAG),
                     opt("n_threads", ROW_THREADS)],
    "rows.sample_rows": [req("logits", ROW_LOGITS), req("u", ROW_U), opt("n_threads", ROW_THREADS)],
    "rows.ppo_grad_rows": [req("logits", ROW_LOGITS), req("tokens", ROW_TOKENS), req("p_old", ROW_P_OLD),
                           req("advantages", ROW_ADVANTAGES), opt("eps", positive(0.05, 0.5)),
                           opt("n_threads", ROW_THREADS)],
    "rows.ppo_batch_step": [req("logits", ROW_LOGITS), req("ref_logits", ROW_REF), req("u", ROW_U),
                            req("weights", ROW_WEIGHTS), opt("beta", non_negative()), opt("out", ROW_OUT),
                            opt("ref_normalized", ROW_FLAG), opt("n_threads", ROW_THREADS)],
    "rows.stream_sum": [req("a", ROW_LOGITS), req("b", Kind([*ROW_LOGITS.valid, *ROW_REF.valid[:3]], ROW_LOGITS.junk)),
                        opt("n_threads", ROW_THREADS)],
    "rows.stream_add": [req("a", ROW_LOGITS),
                        req("b", Kind(ROW_REF.valid[:3], [*_table_junk(_row_shape),
                                                          later("is-a", lambda r, kw: kw.get("a"))])),
                        opt("out", Kind(ROW_OUT.valid, ROW_OUT.junk)), opt("n_threads", ROW_THREADS)],
}
SPECS.update(ROW_SPECS)

# The token PPO engine (issue 11, "core.sweep_token_ppo"): the Rust core's sweep_token_ppo or its
# reference twin, on a tiny sequence world's arrays; arrays that must fit ref_logits are Laters.


def _token_shape(kw: dict) -> tuple[int, int, int]:
    x = kw.get("ref_logits")
    return x.shape if isinstance(x, np.ndarray) and x.ndim == 3 and 0 < x.size <= 1 << 12 else (2, 3, 4)


def _token_vector(axis: int) -> Kind:
    """A float64 vector of ref_logits' prompts (axis 0) or tokens (axis 2)."""
    return Kind(
        [later("fits", lambda r, kw: r.standard_normal(_token_shape(kw)[axis]))],
        [later("short", lambda r, kw: np.zeros(max(_token_shape(kw)[axis] - 1, 0))),
         later("nan", lambda r, kw: np.full(_token_shape(kw)[axis], NAN)),
         later("int", lambda r, kw: np.zeros(_token_shape(kw)[axis], dtype=np.int64)),
         val("list", [0.0, 1.0]), val("none", None)],
    )


TOKEN_REF = Kind(
    [val("small", lambda s: Draws(s.index(1 << 16)).standard_normal((1 + s.index(3), 1 + s.index(4), 2 + s.index(4)))),
     val("extreme", lambda s: np.tile(np.array([1e4, -1e4, 0.0]), (2, 2, 1)))],
    [val("nan", lambda s: np.full((2, 2, 3), NAN)), val("2-D", lambda s: np.zeros((2, 3))),
     val("one-token", lambda s: np.zeros((2, 2, 1))), val("empty", lambda s: np.zeros((0, 2, 3))),
     val("list", [[[0.0, 1.0]]]), val("int", lambda s: np.zeros((2, 2, 3), dtype=np.int64))],
)
TOKEN_RUNS = Kind(
    [val("two", lambda s: [(s.index(100), 0.05, 0.1), (s.index(100), 0.5, 1.0)])],
    [val("empty", []), val("nan-lr", [(0, 0.05, NAN)]), val("negative-kl", [(0, -1.0, 0.1)]),
     val("huge-lr", [(0, 0.05, 1e300)]), val("short-tuple", [(0, 0.05)]), val("str-seed", [("a", 0.05, 0.1)])],
)
TOKEN_BATCH = counts(2, 6, minimum=2, maximum=1 << 20)
TOKEN_SPECS: dict[str, list[Param]] = {
    "core.sweep_token_ppo": [
        req("ref_logits", TOKEN_REF), req("w", _token_vector(2)), req("bias", _token_vector(0)),
        req("w_len", finite()), req("g", _token_vector(2)), req("offset", _token_vector(0)), req("count_once", BOOL),
        req("steps", counts(1, 3, minimum=1)), req("runs", TOKEN_RUNS), opt("batch_size", TOKEN_BATCH),
        opt("gamma", reals("finite", 0.0, 1.0, (1.5, -0.1))), opt("lam", reals("finite", 0.0, 1.0, (2.0,))),
        opt("cliprange", positive()), opt("cliprange_value", positive()), opt("vf_coef", non_negative()),
        opt("kl_estimator", options(("k1", "k3"))), opt("num_ppo_epochs", counts(1, 3, minimum=1, maximum=1 << 10)),
        opt("num_mini_batches", counts(1, 2, minimum=1)), opt("missing_eos_penalty", reals("finite", 0.0, 2.0, optional=True)),
        opt("length_normalize", BOOL), opt("length_penalty", non_negative()), opt("record_every", RECORD_EVERY),
        opt("n_threads", THREADS), opt("max_memory", MAX_MEMORY),
    ],
}
SPECS.update(TOKEN_SPECS)

# Process vs outcome rewards (issue 11 item 4): the token PPO engine's process-reward tables,
# GRPO on sequences with a per-sequence reward, and the process reward model's loss and fit
# ("core.*": the Rust core's functions or their reference twins).


def _token_table() -> Kind:
    """An optional float64 table of ref_logits' shape."""
    return Kind(
        [later("fits", lambda r, kw: r.standard_normal(_token_shape(kw))), val("none", None)],
        [val("wrong-shape", lambda s: np.zeros((1, 1, 1))), later("nan", lambda r, kw: np.full(_token_shape(kw), NAN)),
         later("int", lambda r, kw: np.zeros(_token_shape(kw), dtype=np.int64)), val("list", [[[0.0, 1.0]]])],
    )


TOKEN_SPECS["core.sweep_token_ppo"] += [opt("step_rewards", _token_table()), opt("outcome_factors", _token_table())]


def _prm_shape(kw: dict) -> tuple[int, int, int]:
    x = kw.get("logits")
    if isinstance(x, np.ndarray) and x.ndim == 3 and 0 < x.size <= 1 << 12:
        return x.shape
    shape = kw.get("shape")
    return tuple(shape) if isinstance(shape, tuple) and len(shape) == 3 and all(  # type: ignore[return-value]
        isinstance(d, int) and 0 < d < 8 for d in shape) else (2, 3, 4)


def _prm_n(kw: dict) -> int:
    x = kw.get("prompts")
    return len(x) if isinstance(x, np.ndarray) and x.ndim == 1 and 0 < len(x) < 64 else 3


PRM_LOGITS = Kind(
    [val("small", lambda s: Draws(s.index(1 << 16)).standard_normal((1 + s.index(3), 1 + s.index(4), 1 + s.index(4))))],
    [val("nan", lambda s: np.full((2, 2, 3), NAN)), val("2-D", lambda s: np.zeros((2, 3))),
     val("empty", lambda s: np.zeros((0, 2, 3))), val("list", [[[0.0, 1.0]]]),
     val("int", lambda s: np.zeros((2, 2, 3), dtype=np.int64))],
)
PRM_PROMPTS = Kind(
    [later("fits", lambda r, kw: r.integers(_prm_shape(kw)[0], size=3).astype(np.int64))],
    [val("empty", lambda s: np.zeros(0, dtype=np.int64)), val("negative", lambda s: np.array([-1, 0, 0])),
     val("too-big", lambda s: np.array([9, 0, 0])), val("float", lambda s: np.zeros(3)), val("list", [0, 0, 0])],
)
PRM_TOKENS = Kind(
    [later("fits", lambda r, kw: r.integers(_prm_shape(kw)[2], size=(_prm_n(kw), _prm_shape(kw)[1])).astype(np.int64))],
    [later("negative", lambda r, kw: np.full((_prm_n(kw), _prm_shape(kw)[1]), -1, dtype=np.int64)),
     later("too-big", lambda r, kw: np.full((_prm_n(kw), _prm_shape(kw)[1]), 9, dtype=np.int64)),
     val("1-D", lambda s: np.zeros(3, dtype=np.int64)), val("float", lambda s: np.zeros((3, 2)))],
)
PRM_LABELS = Kind(
    [later("fits", lambda r, kw: (r.random((_prm_n(kw), _prm_shape(kw)[1])) < 0.5).astype(np.float64))],
    [later("above-1", lambda r, kw: np.full((_prm_n(kw), _prm_shape(kw)[1]), 2.0)),
     later("nan", lambda r, kw: np.full((_prm_n(kw), _prm_shape(kw)[1]), NAN)),
     val("wrong-shape", lambda s: np.zeros((1, 1))), val("int", lambda s: np.zeros((3, 2), dtype=np.int64))],
)
PRM_SHAPE = Kind(
    [val("small", lambda s: (1 + s.index(3), 1 + s.index(4), 1 + s.index(4)))],
    [val("two", (2, 3)), val("zero", (0, 2, 3)), val("str", "abc"), val("none", None), val("float", (2.0, 3, 4))],
)
PROCESS_SPECS: dict[str, list[Param]] = {
    "core.sweep_verifier_grpo": [
        req("ref_logits", TOKEN_REF), req("w", _token_vector(2)), req("bias", _token_vector(0)),
        req("w_len", finite()), req("g", _token_vector(2)), req("offset", _token_vector(0)), req("count_once", BOOL),
        req("steps", counts(1, 3, minimum=1)), req("runs", TOKEN_RUNS),
        opt("num_generations", counts(2, 4, minimum=2)), opt("prompts_per_step", counts(1, 2, minimum=1)),
        opt("epsilon", positive()), opt("epsilon_high", reals("positive", 0.1, 0.5, optional=True)),
        opt("scale_rewards", options(("group", "none"))), opt("num_iterations", counts(1, 2, minimum=1, maximum=1024)),
        opt("outcome_factors", _token_table()), opt("record_every", RECORD_EVERY), opt("n_threads", THREADS),
        opt("max_memory", MAX_MEMORY),
    ],
    "core.prm_loss_and_grad": [req("logits", PRM_LOGITS), req("prompts", PRM_PROMPTS), req("tokens", PRM_TOKENS),
                               req("labels", PRM_LABELS), opt("l2", non_negative())],
    "core.train_process_reward_model": [req("prompts", PRM_PROMPTS), req("tokens", PRM_TOKENS),
                                        req("labels", PRM_LABELS), req("shape", PRM_SHAPE),
                                        opt("epochs", counts(1, 3, minimum=1, maximum=1 << 20)),
                                        opt("lr", positive()), opt("l2", non_negative())],
}
SPECS.update(PROCESS_SPECS)
PROCESS_REFERENCE: dict[str, Callable[..., Any]] = {
    "core.sweep_verifier_grpo": verifier_grpo_reference.sweep_verifier_grpo,
    "core.prm_loss_and_grad": process_reward_methods.prm_loss_and_grad,
    "core.train_process_reward_model": process_reward_reference.train_process_reward_model,
}


# ------------------------------------------------------------------------ sequence worlds
#
# rlhf_fast.sequences: a SequenceWorld's constructor and methods (called on the instance
# named "world"), its pairs and proxy, the proxy's trainer; the labellers' length options.

SequenceWorld = sequences_module.SequenceWorld
SequencePairs = sequences_module.SequencePairs
SequenceRewardModel = sequences_module.SequenceRewardModel
SMALL_SEQUENCE_WORLD = SequenceWorld(n_prompts=2, vocab=5, max_len=3, seed=0)
SEQUENCE_WORLD_POOL = [SMALL_SEQUENCE_WORLD, SequenceWorld(n_prompts=1, vocab=2, max_len=1, seed=1),
                       SequenceWorld(n_prompts=3, vocab=9, max_len=4, zipf=3.0, prompt_scale=2.0, count_once=False,
                                     seed=2),
                       *[SequenceWorld(n_prompts=1 + k % 3, vocab=2 + k, max_len=1 + k % 4, seed=k) for k in range(8)]]


def _sequence_world_of(kwargs: dict) -> SequenceWorld:
    world = kwargs.get("world")
    return world if isinstance(world, SequenceWorld) else SMALL_SEQUENCE_WORLD


def _sequence_shape(kwargs: dict) -> tuple[int, int, int]:
    return _sequence_world_of(kwargs).ref_logits.shape


def _sequence_responses(r: Draws, world: SequenceWorld, n: int) -> np.ndarray:
    """``n`` well-formed responses of ``world``: content tokens, an EOS where a draw stops them."""
    tokens = r.integers(1, max(world.vocab, 2), (n, world.max_len)) if world.vocab > 1 else np.zeros((n, world.max_len))
    lengths = 1 + r.integers(0, world.max_len, n)
    ends = r.random(n) < 0.7
    for i in range(n):
        tokens[i, lengths[i]:] = -1
        if ends[i] or lengths[i] < world.max_len:
            tokens[i, lengths[i] - 1] = 0
    return tokens.astype(np.int64)


def _sequence_pairs(r: Draws, world: SequenceWorld, n: int) -> SequencePairs:
    target = [r.random(n), np.floor(r.random(n) * 2.0), np.full(n, 0.5)][r.integers(3)]
    return SequencePairs(r.integers(0, world.n_prompts, n), _sequence_responses(r, world, n),
                         _sequence_responses(r, world, n), target, float(n))


def _sequence_rm(r: Draws, vocab: int, scale: float = 1.0, n_prompts: int | None = None) -> SequenceRewardModel:
    weights = scale * r.standard_normal(vocab)
    weights[0] = 0.0
    bias = None if n_prompts is None else r.standard_normal(n_prompts)
    return SequenceRewardModel(weights, scale * r.standard_normal(), bias)


SEQUENCE_WORLD = Kind([val("pooled", lambda s: some(s, SEQUENCE_WORLD_POOL)), val("fixed", SMALL_SEQUENCE_WORLD)],
                      [val("none", None), val("bag-world", SMALL_WORLD), val("str", "world"), fresh("dict", dict)])
SEQUENCE_INSTANCE_WORLD = Kind(SEQUENCE_WORLD.valid, [])
SEQUENCE_LOGITS = Kind(
    [later("reference", lambda r, kw: _sequence_world_of(kw).ref_logits),
     later("random", lambda r, kw: _sequence_world_of(kw).ref_logits + 3.0 * r.standard_normal(_sequence_shape(kw))),
     later("extreme", lambda r, kw: r.choice([1e300, -1e300, 1.7e308, -1.7e308, 0.0], _sequence_shape(kw))),
     later("lists", lambda r, kw: r.standard_normal(_sequence_shape(kw)).tolist())],
    [later("one-column-short", lambda r, kw: np.zeros(_sequence_shape(kw)[:2] + (_sequence_shape(kw)[2] - 1,))),
     later("2d", lambda r, kw: np.zeros(_sequence_shape(kw)[::2])),
     later("nan", lambda r, kw: np.full(_sequence_shape(kw), NAN)),
     later("inf", lambda r, kw: np.full(_sequence_shape(kw), -INF)),
     later("str-array", lambda r, kw: np.full(_sequence_shape(kw), "a")),
     later("bool", lambda r, kw: np.zeros(_sequence_shape(kw), dtype=bool)),
     val("none", None), val("str", "logits"), fresh("empty", list), val("range-huge", range(10**12), True)])
SEQUENCE_OPTIONAL_LOGITS = Kind([val("none", None), *SEQUENCE_LOGITS.valid],
                                [v for v in SEQUENCE_LOGITS.junk if v.label != "none"])
SEQUENCE_RM = Kind(
    [later("for-world", lambda r, kw: _sequence_rm(r, _sequence_world_of(kw).vocab)),
     later("with-bias", lambda r, kw: _sequence_rm(r, _sequence_world_of(kw).vocab,
                                                   n_prompts=_sequence_world_of(kw).n_prompts)),
     later("extreme", lambda r, kw: _sequence_rm(r, _sequence_world_of(kw).vocab, scale=1e150))],
    [later("wrong-vocab", lambda r, kw: _sequence_rm(r, _sequence_world_of(kw).vocab + 1)),
     later("wrong-bias", lambda r, kw: _sequence_rm(r, _sequence_world_of(kw).vocab,
                                                    n_prompts=_sequence_world_of(kw).n_prompts + 1)),
     fresh("bag-rm", lambda: RewardModel(np.zeros(5))), val("none", None), val("str", "rm")])
SEQUENCE_INSTANCE_RM = Kind([later("rm", lambda r, kw: _sequence_rm(r, 5))], [])


def _sequence_count(kw: dict) -> int:
    prompts = kw.get("prompts")
    return len(prompts) if isinstance(prompts, (list, np.ndarray)) and np.ndim(prompts) == 1 else 2


SEQUENCE_PROMPTS = Kind(
    [later("ints", lambda r, kw: r.integers(0, _sequence_world_of(kw).n_prompts, int(r.integers(5)))),
     later("list", lambda r, kw: [0] * int(r.integers(1, 4)))],
    [later("past-prompts", lambda r, kw: np.array([_sequence_world_of(kw).n_prompts])),
     fresh("negative", lambda: np.array([-1])), fresh("float", lambda: np.zeros(2)), val("none", None)])
SEQUENCE_RESPONSES = Kind(
    [later("well-formed", lambda r, kw: _sequence_responses(r, _sequence_world_of(kw), _sequence_count(kw))),
     later("lists", lambda r, kw: _sequence_responses(r, _sequence_world_of(kw), _sequence_count(kw)).tolist())],
    [later("past-vocab", lambda r, kw: np.full((_sequence_count(kw), _sequence_world_of(kw).max_len),
                                               _sequence_world_of(kw).vocab)),
     later("eos-then-token", lambda r, kw: np.tile([0, 1] + [1] * _sequence_world_of(kw).max_len,
                                                   (_sequence_count(kw), 1))[:, :_sequence_world_of(kw).max_len]),
     later("padding-first", lambda r, kw: np.full((_sequence_count(kw), _sequence_world_of(kw).max_len), -1)),
     later("below-padding", lambda r, kw: np.full((_sequence_count(kw), _sequence_world_of(kw).max_len), -2)),
     later("float", lambda r, kw: np.zeros((_sequence_count(kw), _sequence_world_of(kw).max_len))),
     later("1d", lambda r, kw: np.zeros(_sequence_count(kw), dtype=int)), val("none", None), val("str", "clear"),
     later("ragged", lambda r, kw: [[1, 0], [0]]), fresh("huge-int", lambda: [[2**64, 0]])])
SEQUENCE_PAIRS = Kind(
    [later("pairs", lambda r, kw: _sequence_pairs(r, _sequence_world_of(kw), 1 + int(r.integers(6))))],
    [later("empty", lambda r, kw: _sequence_pairs(r, _sequence_world_of(kw), 0)),
     later("longer", lambda r, kw: _sequence_pairs(r, SequenceWorld(n_prompts=_sequence_world_of(kw).n_prompts,
                                                                    vocab=_sequence_world_of(kw).vocab,
                                                                    max_len=_sequence_world_of(kw).max_len + 1), 3)),
     later("bag-pairs", lambda r, kw: _pairs(r, SMALL_WORLD, 3)), val("none", None), val("str", "pairs")])
LENGTH_BIAS = bounded("finite", -2.0, 2.0, (0.0, 1e6, -1e6), (1e6 * (1 + 1e-15), -1e7, 1e300))


def _sequence_labeller(s: Any) -> Labeller | Judge:
    if s.index(2):
        return Labeller(temperature=some(s, [1.0, 1e-300, 1e300]), flip=some(s, [0.0, 0.2]),
                        length_bias=some(s, [0.0, 1.0, -1e6, 1e6]))
    return Judge(soft=some(s, [True, False]), both_orders=some(s, [True, False]),
                 length_bias=some(s, [0.0, 1.0, 1e6]), length_aware=some(s, [0.0, 0.5, 1.0]))


SEQUENCE_LABELLER = Kind([val("none", None), val("labeller", _sequence_labeller)], LABELLER.junk)
SEQUENCE_COUNT = counts(0, 12, minimum=0, sized=True)

SEQUENCE_SPECS: dict[str, list[Param]] = {
    "SequenceWorld": [opt("n_prompts", counts(1, 3, minimum=1, maximum=worlds_module.MAX_PROMPTS)),
                      opt("vocab", counts(2, 12, minimum=2, maximum=worlds_module.MAX_VOCAB)),
                      opt("max_len", counts(1, 4, minimum=1, maximum=sequences_module.MAX_LEN)),
                      opt("zipf", SCALE), opt("prompt_scale", SCALE), opt("count_once", BOOL), opt("seed", WORLD_SEED)],
    **{f"SequenceWorld.{name}": [req("world", SEQUENCE_INSTANCE_WORLD), req("logits", SEQUENCE_LOGITS)]
       for name in ("stats", "kl", "expected_length", "expected_content_length", "expected_gold")},
    "SequenceWorld.expected_score": [req("world", SEQUENCE_INSTANCE_WORLD), req("logits", SEQUENCE_LOGITS),
                                     req("rm", SEQUENCE_RM)],
    "SequenceWorld.sample": [req("world", SEQUENCE_INSTANCE_WORLD), req("n", SEQUENCE_COUNT), req("seed", WORLD_SEED),
                             opt("logits", SEQUENCE_OPTIONAL_LOGITS)],
    "SequenceWorld.gold_score": [req("world", SEQUENCE_INSTANCE_WORLD), req("prompts", SEQUENCE_PROMPTS),
                                 req("responses", SEQUENCE_RESPONSES)],
    "SequenceWorld.preferences": [req("world", SEQUENCE_INSTANCE_WORLD), req("n", SEQUENCE_COUNT),
                                  req("seed", WORLD_SEED), opt("labeller", SEQUENCE_LABELLER)],
    "SequenceWorld.judge_values": [req("world", SEQUENCE_INSTANCE_WORLD),
                                   req("judge", Kind(JUDGE.valid, [fresh("labeller", Labeller), val("none", None)]))],
    "SequencePairs": [req("prompts", PAIR_PROMPTS), req("first", SEQUENCE_RESPONSES), req("second", SEQUENCE_RESPONSES),
                      req("target", PAIR_TARGET), req("cost", COST)],
    "SequenceRewardModel": [req("weights", Kind([later("eos-zero", lambda r, kw: np.concatenate([[0.0], r.standard_normal(
        1 + int(r.integers(8)))]))], [fresh("eos-weighed", lambda: np.ones(4)), fresh("one", lambda: np.zeros(1)),
                                      *RM_WEIGHTS.junk])),
                            opt("length_weight", bounded("finite", -2.0, 2.0, (0.0, 1e150), (2.0**512, 1e300, -1.7e308))),
                            opt("bias", Kind([val("none", None), fresh("zeros", lambda: np.zeros(3))],
                                             [fresh("nan", lambda: np.full(3, NAN)), fresh("2d", lambda: np.zeros((1, 1))),
                                              fresh("huge", lambda: np.full(2, 1e300)), val("str", "0")]))],
    "SequenceRewardModel.score": [req("rm", SEQUENCE_INSTANCE_RM), req("prompts", SEQUENCE_PROMPTS),
                                  req("responses", SEQUENCE_RESPONSES)],
    "SequenceRewardModel.debiased": [req("rm", SEQUENCE_INSTANCE_RM)],
    "SequenceRewardModel.gold_accuracy": [req("rm", Kind(SEQUENCE_RM.valid[:1], SEQUENCE_RM.junk[:1])),
                                          req("world", SEQUENCE_WORLD), req("pairs", SEQUENCE_PAIRS)],
    "train_sequence_reward_model": [req("world", SEQUENCE_WORLD), req("pairs", SEQUENCE_PAIRS),
                                    opt("epochs", counts(0, 3, minimum=0, maximum=10_000)), opt("lr", positive()),
                                    opt("margin", Kind([val("none", None)], [val("str", "0"), val("float", 0.5),
                                                                               fresh("nan", lambda: [NAN])])),
                                    opt("center_rewards_coefficient", non_negative(0.0, 0.1)),
                                    opt("length_feature", BOOL)],
    "response_lengths": [req("responses", SEQUENCE_RESPONSES)],
}
SPECS.update(SEQUENCE_SPECS)
# DPO and Best-of-N in a sequence world on the backend's engine (issue 11)
SEQUENCE_SWEEP_SPECS: dict[str, list[Param]] = {
    "sweep_dpo[sequence]": [
        req("pairs", SEQUENCE_PAIRS), req("world", SEQUENCE_WORLD), req("betas", first_axis(positive(0.01, 1.0))),
        opt("seeds", DPO_SEEDS), opt("loss_type", axis(options(ref.DPO_LOSS_TYPES))),
        opt("label_smoothing", axis(reals("finite", 0.0, 0.4, (0.0,)))), opt("lr", axis(positive())),
        opt("epochs", axis(counts(1, 2, minimum=1, sized=True))),
        opt("theta", Kind([val("none", None)], [fresh("array", lambda: np.zeros((2, 3, 5))), val("str", "theta")])),
        opt("w", Kind([val("none", None), *SEQUENCE_RM.valid], [v for v in SEQUENCE_RM.junk if v.label != "none"])),
        opt("record_every", RECORD_EVERY), opt("n_threads", THREADS), opt("progress", PROGRESS),
        opt("max_memory", MAX_MEMORY)],
    "sweep_best_of_n[sequence]": [
        req("w", SEQUENCE_RM), req("world", SEQUENCE_WORLD),
        req("ns", first_axis(counts(1, 8, minimum=1, maximum=1_000_000_000))), opt("seeds", SEEDS),
        opt("samples", Kind([val("none", None), *counts(2, 6).valid], counts(2, 6, minimum=2).junk)),
        opt("policy", Kind([val("none", None)], [fresh("array", lambda: np.zeros((2, 3, 5))), val("str", "policy")])),
        opt("n_threads", THREADS), opt("progress", PROGRESS), opt("max_memory", MAX_MEMORY)],
}
SPECS.update(SEQUENCE_SWEEP_SPECS)
WORLD_SPECS["Labeller"].append(opt("length_bias", LENGTH_BIAS))
WORLD_SPECS["Judge"] += [opt("length_bias", LENGTH_BIAS), opt("length_aware", PROBABILITY)]

# Reward distillation (rlhf_fast.distill): a student head fitted to a RewardModel of the world
DISTILL_SPECS: dict[str, list[Param]] = {
    "distill_reward_model": [
        req("world", WORLD), req("teacher", RM), req("dim", counts(1, 6, minimum=1, maximum=distill_module.MAX_FEATURES)),
        opt("samples", counts(1, 30, minimum=1, sized=True)), opt("epochs", counts(0, 3, minimum=0, maximum=10_000)),
        opt("lr", Kind([val("none", None), *positive(0.001, 0.05).valid], positive().junk)), opt("seed", WORLD_SEED)],
    # the lab, tiny (see SLOW)
    "distillation": [
        req("world", LAB_WORLD), req("teacher_pairs", counts(2, 40, minimum=2, maximum=10**7)),
        req("dims", Kind([fresh("two", lambda: [1, 3])], [val("int", 3), fresh("zero", lambda: [0]), val("str", "3")])),
        req("seeds", counts(1, 1, minimum=1, maximum=1000)), req("samples", counts(1, 20, minimum=1)),
        opt("epochs", counts(0, 2, minimum=0, maximum=10_000)),
        req("steps", Kind(counts(2, 3).valid, counts(2, 3, minimum=1, sized=True).junk + [val("one", 1)])),
        opt("lr", positive()), req("record_every", Kind(counts(1, 1).valid, counts(1, 1, minimum=1, sized=True).junk)),
        opt("progress", Kind(BOOL.valid[:1], BOOL.junk))],
}
SPECS.update(DISTILL_SPECS)


def _optional(kind: Kind) -> Kind:
    """``kind``, or None (a token PPO setting left at TRL's default)."""
    return Kind([val("none", None), *kind.valid], [v for v in kind.junk if v.label != "none"])


# Token PPO through sweep_rlhf (world=SequenceWorld) and the length-hacking lab (rlhf_fast.length)
LENGTH_SPECS: dict[str, list[Param]] = {
    "sweep_rlhf[sequence]": [
        req("w", SEQUENCE_RM), req("world", SEQUENCE_WORLD), req("betas", first_axis(non_negative(0.0, 0.5))),
        req("seeds", SEEDS), req("steps", counts(1, 3, minimum=1, sized=True)), opt("eps", positive(0.05, 0.5)),
        opt("lr", axis(positive())), opt("ppo_epochs", counts(1, 2, minimum=1, maximum=1 << 10)),
        opt("kl_penalty", Kind([val("none", None), *options(("k1", "k3")).valid],
                               [*[v for v in options(("k1", "k3")).junk if v.label != "none"], val("full", "full")])),
        opt("vf_coef", _optional(non_negative())), opt("cliprange_value", positive(0.05, 0.5)),
        opt("batch_size", _optional(TOKEN_BATCH)), opt("gamma", _optional(reals("finite", 0.0, 1.0, (1.5, -0.1)))),
        opt("lam", _optional(reals("finite", 0.0, 1.0, (2.0,)))), opt("num_mini_batches", _optional(counts(1, 2, minimum=1))),
        opt("missing_eos_penalty", reals("finite", 0.0, 2.0, optional=True)), opt("length_normalize", _optional(BOOL)),
        opt("length_penalty", _optional(non_negative())),
        opt("executor", Kind([val("none", None)], [val("str", "pool")])),
        opt("record_every", RECORD_EVERY), opt("n_threads", THREADS), opt("progress", PROGRESS), opt("exact", BOOL),
        opt("max_memory", MAX_MEMORY)],
    # GRPO against a proxy on sequences: the engine shares every setting but beta, lr and the seed
    "sweep_grpo[sequence]": [
        req("w", SEQUENCE_RM), req("world", SEQUENCE_WORLD), req("betas", first_axis(non_negative(0.0, 0.5))),
        req("seeds", SEEDS), req("steps", counts(1, 3, minimum=1, sized=True)),
        opt("num_generations", counts(2, 4, minimum=2, maximum=65_536)), opt("epsilon", positive(0.05, 0.5)),
        opt("epsilon_high", EPSILON_HIGH), opt("lr", axis(positive())), opt("scale_rewards", options(ref.SCALE_REWARDS)),
        opt("num_iterations", counts(1, 2, minimum=1, maximum=10_000)),
        opt("theta", Kind([val("none", None)], [fresh("array", lambda: np.zeros((P, V))), val("str", "theta")])),
        opt("record_every", RECORD_EVERY), opt("n_threads", THREADS), opt("progress", PROGRESS),
        opt("max_memory", MAX_MEMORY)],
    "per_token_worth": [req("world", SEQUENCE_WORLD), req("rm", SEQUENCE_RM)],
    # the lab, tiny (see SLOW)
    "length_lab": [
        req("world", SEQUENCE_WORLD), opt("length_bias", bounded("non_negative", 0.0, 3.0, (0.0,), (1e7, 1e300))),
        req("pairs", counts(1, 30, minimum=1, maximum=10**7)), opt("rm_epochs", counts(1, 2, minimum=1, maximum=10_000)),
        req("steps", Kind(counts(1, 3).valid, counts(1, 3, minimum=1, sized=True).junk)), opt("lr", positive()),
        opt("beta", non_negative()), req("seeds", counts(1, 1, minimum=1, maximum=1000)),
        opt("length_penalty", reals("non_negative", 0.0, 1.0, optional=True)), opt("judge_aware", PROBABILITY),
        opt("reading_cost", non_negative(0.0, 0.5)),
        req("batch_size", Kind(TOKEN_BATCH.valid[:1], TOKEN_BATCH.junk)),
        req("record_every", Kind(counts(1, 1).valid, counts(1, 1, minimum=1, sized=True).junk)),
        opt("n_threads", THREADS), opt("progress", Kind(BOOL.valid[:1], BOOL.junk))],
}
SPECS.update(LENGTH_SPECS)


# ------------------------------------------------------------------------ reasoning worlds
#
# rlhf_fast.reasoning (issue 11's process-vs-outcome lab): a ReasoningWorld's constructor and
# methods (called on "world"), a ProcessRewardModel's (called on "prm"), its trainer, the RL
# runs and the lab. Their engines are module globals of reasoning.py and token_ppo.py, chosen
# at import: on_reasoning_engines swaps them for the backend's.

ReasoningWorld = reasoning_module.ReasoningWorld
ProcessRewardModel = reasoning_module.ProcessRewardModel
SMALL_REASONING_WORLD = ReasoningWorld(n_prompts=2, n_steps=3, n_candidates=4, seed=0)
REASONING_WORLD_POOL = [SMALL_REASONING_WORLD, ReasoningWorld(n_prompts=1, n_steps=1, n_candidates=2, seed=1),
                        ReasoningWorld(n_prompts=3, n_steps=4, n_candidates=5, n_correct=2, ref_correct=0.9, seed=2),
                        ReasoningWorld(n_prompts=2, n_steps=2, n_candidates=3, ref_correct=1e-300, seed=3)]


def _reasoning_prm(world: ReasoningWorld, scale: float = 1.0) -> ProcessRewardModel:
    """A PRM of ``world``'s shape without a fit (the fit is fuzzed on its own)."""
    shape = world.correct.shape
    logits = scale * Draws(world.seed).standard_normal(shape)
    return ProcessRewardModel(logits, np.zeros(3), 10, 0.1)


REASONING_PRM_POOL = [_reasoning_prm(w) for w in REASONING_WORLD_POOL] + [_reasoning_prm(SMALL_REASONING_WORLD, 1e300)]


def _reasoning_world_of(kwargs: dict) -> ReasoningWorld:
    world = kwargs.get("world")
    return world if isinstance(world, ReasoningWorld) else SMALL_REASONING_WORLD


def _reasoning_shape(kwargs: dict) -> tuple[int, int, int]:
    prm = kwargs.get("prm")
    if "world" not in kwargs and isinstance(prm, ProcessRewardModel) and np.ndim(prm.logits) == 3:
        return prm.logits.shape
    return _reasoning_world_of(kwargs).correct.shape


def _reasoning_n(kwargs: dict) -> int:
    prompts = kwargs.get("prompts")
    return len(prompts) if isinstance(prompts, (list, np.ndarray)) and np.ndim(prompts) == 1 and len(prompts) < 64 else 3


def _huge_stack(r: Draws, kwargs: dict) -> np.ndarray:
    """10**12 policies in a view of one (no memory), which the functions would materialise."""
    return np.broadcast_to(np.zeros(_reasoning_shape(kwargs)), (10**12, *_reasoning_shape(kwargs)))


REASONING_WORLD = Kind(
    [val("pooled", lambda s: some(s, REASONING_WORLD_POOL)), val("fixed", SMALL_REASONING_WORLD)],
    [val("none", None), val("bag-world", SMALL_WORLD), val("sequence-world", SMALL_SEQUENCE_WORLD),
     val("str", "world"), fresh("dict", dict), val("class", lambda s: ReasoningWorld)])
REASONING_INSTANCE_WORLD = Kind(REASONING_WORLD.valid, [])
REASONING_THETA = Kind(
    [later("reference", lambda r, kw: _reasoning_world_of(kw).ref_logits),
     later("random", lambda r, kw: _reasoning_world_of(kw).ref_logits + 3.0 * r.standard_normal(_reasoning_shape(kw))),
     later("stacked", lambda r, kw: r.standard_normal((2, *_reasoning_shape(kw)))),
     later("extreme", lambda r, kw: r.choice([1e300, -1e300, 1.7e308, -1.7e308, 0.0], _reasoning_shape(kw))),
     later("lists", lambda r, kw: r.standard_normal(_reasoning_shape(kw)).tolist()),
     later("int", lambda r, kw: np.zeros(_reasoning_shape(kw), dtype=np.int64))],
    [later("one-column-short", lambda r, kw: np.zeros(_reasoning_shape(kw)[:2] + (_reasoning_shape(kw)[2] - 1,))),
     later("engine-table", lambda r, kw: _reasoning_world_of(kw).engine_logits()),
     later("2d", lambda r, kw: np.zeros(_reasoning_shape(kw)[1:])),
     later("nan", lambda r, kw: np.full(_reasoning_shape(kw), NAN)),
     later("inf", lambda r, kw: np.full(_reasoning_shape(kw), INF)),
     later("-inf", lambda r, kw: np.full(_reasoning_shape(kw), -INF)),
     later("str-array", lambda r, kw: np.full(_reasoning_shape(kw), "a")),
     later("bool", lambda r, kw: np.zeros(_reasoning_shape(kw), dtype=bool)),
     later("complex", lambda r, kw: np.zeros(_reasoning_shape(kw), dtype=complex)),
     later("int-past-floats", lambda r, kw: np.full(_reasoning_shape(kw), 10**400, dtype=object).tolist()),
     Value("huge-stack", later("", _huge_stack).make, True),
     val("none", None), val("str", "theta"), fresh("empty", list), fresh("dict", dict),
     val("range-huge", range(10**12), True)])
REASONING_OPTIONAL_THETA = Kind([val("none", None), *REASONING_THETA.valid],
                                [v for v in REASONING_THETA.junk if v.label != "none"])
REASONING_PROMPTS = Kind(
    [later("ints", lambda r, kw: r.integers(0, _reasoning_shape(kw)[0], 1 + int(r.integers(5)))),
     later("list", lambda r, kw: [0] * int(r.integers(1, 4))), fresh("empty", lambda: np.zeros(0, dtype=np.int64))],
    [later("past-prompts", lambda r, kw: np.array([_reasoning_shape(kw)[0]])), fresh("negative", lambda: np.array([-1])),
     fresh("float", lambda: np.zeros(2)), fresh("bool", lambda: np.zeros(2, dtype=bool)),
     fresh("2d", lambda: np.zeros((1, 1), dtype=np.int64)), fresh("huge-int", lambda: [2**64]),
     val("none", None), val("str", "prompts"), val("int", 0), val("range-huge", range(10**12), True)])
REASONING_TOKENS = Kind(
    [later("fits", lambda r, kw: r.integers(0, _reasoning_shape(kw)[2], (_reasoning_n(kw), _reasoning_shape(kw)[1]))),
     later("lists", lambda r, kw: r.integers(0, _reasoning_shape(kw)[2],
                                             (_reasoning_n(kw), _reasoning_shape(kw)[1])).tolist())],
    [later("past-candidates", lambda r, kw: np.full((_reasoning_n(kw), _reasoning_shape(kw)[1]), _reasoning_shape(kw)[2])),
     later("negative", lambda r, kw: np.full((_reasoning_n(kw), _reasoning_shape(kw)[1]), -1)),
     later("one-step-more", lambda r, kw: np.zeros((_reasoning_n(kw), _reasoning_shape(kw)[1] + 1), dtype=np.int64)),
     later("one-response-more", lambda r, kw: np.zeros((_reasoning_n(kw) + 1, _reasoning_shape(kw)[1]), dtype=np.int64)),
     later("float", lambda r, kw: np.zeros((_reasoning_n(kw), _reasoning_shape(kw)[1]))),
     later("1d", lambda r, kw: np.zeros(_reasoning_n(kw), dtype=np.int64)),
     later("ragged", lambda r, kw: [[0], [0, 0]]), fresh("huge-int", lambda: [[2**64]]),
     val("none", None), val("str", "tokens")])
REASONING_PRM = Kind(
    [later("for-world", lambda r, kw: _reasoning_prm(_reasoning_world_of(kw))),
     later("extreme", lambda r, kw: _reasoning_prm(_reasoning_world_of(kw), 1e300))],
    [later("other-world", lambda r, kw: _reasoning_prm(ReasoningWorld(n_prompts=_reasoning_world_of(kw).n_prompts + 1))),
     fresh("bag-rm", lambda: RewardModel(np.zeros(5))), val("str", "prm"), fresh("dict", dict)])
REASONING_INSTANCE_PRM = Kind([val("pooled", lambda s: some(s, REASONING_PRM_POOL))], [])
REASONING_COUNT = counts(1, 12, minimum=1, sized=True)
LABEL_NOISE = bounded("non_negative", 0.0, 0.4, (0.0, 0.49), (0.5, 1.0, 1e300))
REASONING_SEEDS = Kind(
    [val("count", lambda s: 1 + s.index(2)), val("list", lambda s: [s.index(100), s.index(100)]),
     val("range", range(3, 4)), val("numpy-int", np.int64(1))],
    [val("zero", 0), val("-1", -1), fresh("empty", list), val("str", "1"), val("float", 1.0), val("bool", True),
     fresh("float-list", lambda: [1.0]), val("none", None), *[val(f"huge-{h}", h, True) for h in HUGE],
     val("range-huge", range(10**12), True)])
REASONING_STEPS = counts(1, 3, minimum=1, maximum=reasoning_module.MAX_STEPS)

REASONING_SPECS: dict[str, list[Param]] = {
    "ReasoningWorld": [opt("n_prompts", counts(1, 3, minimum=1, maximum=1 << 16)),
                       opt("n_steps", counts(1, 4, minimum=1, maximum=1 << 12)),
                       opt("n_candidates", counts(2, 6, minimum=2, maximum=1 << 16)),
                       opt("n_correct", counts(1, 1, minimum=1, maximum=1 << 16)),
                       opt("ref_correct", bounded("positive", 0.05, 0.95, (TINY, 1 - 1e-16), (1.0, 2.0, 1e300))),
                       opt("seed", WORLD_SEED)],
    **{f"ReasoningWorld.{name}": [req("world", REASONING_INSTANCE_WORLD), req("theta", REASONING_THETA)]
       for name in ("success",)},
    "ReasoningWorld.engine_logits": [req("world", REASONING_INSTANCE_WORLD), opt("theta", REASONING_OPTIONAL_THETA)],
    "ReasoningWorld.verifier_factors": [req("world", REASONING_INSTANCE_WORLD)],
    "ReasoningWorld.sample": [req("world", REASONING_INSTANCE_WORLD), req("theta", REASONING_THETA),
                              req("n", REASONING_COUNT), req("seed", WORLD_SEED)],
    **{f"ReasoningWorld.{name}": [req("world", REASONING_INSTANCE_WORLD), req("prompts", REASONING_PROMPTS),
                                  req("tokens", REASONING_TOKENS)] for name in ("step_correct", "verify")},
    "ProcessRewardModel": [
        req("logits", Kind([later("for-world", lambda r, kw: r.standard_normal(SMALL_REASONING_WORLD.correct.shape))],
                           [fresh("nan", lambda: np.full((2, 3, 4), NAN)), fresh("2d", lambda: np.zeros((2, 3))),
                            fresh("empty", lambda: np.zeros((0, 3, 4))), val("str", "logits"), val("none", None),
                            fresh("complex", lambda: np.zeros((2, 3, 4), dtype=complex)),
                            fresh("huge", lambda: np.full((2, 3, 4), 1e300))])),
        req("losses", Kind([fresh("few", lambda: np.ones(3)), fresh("none", lambda: np.zeros(0))],
                           [fresh("nan", lambda: np.array([NAN])), fresh("2d", lambda: np.zeros((1, 1))),
                            val("str", "losses"), val("none", None)])),
        req("n_responses", counts(1, 100, minimum=1)), req("label_noise", LABEL_NOISE)],
    "ProcessRewardModel.step_scores": [req("prm", REASONING_INSTANCE_PRM), req("prompts", REASONING_PROMPTS),
                                       req("tokens", REASONING_TOKENS)],
    "ProcessRewardModel.score": [req("prm", REASONING_INSTANCE_PRM), req("prompts", REASONING_PROMPTS),
                                 req("tokens", REASONING_TOKENS), opt("aggregate", options(("product", "min")))],
    "ProcessRewardModel.step_rewards": [req("prm", REASONING_INSTANCE_PRM)],
    "train_process_reward_model": [
        req("world", REASONING_WORLD), opt("n_responses", counts(1, 20, minimum=1, sized=True)),
        opt("label_noise", LABEL_NOISE), opt("epochs", counts(1, 3, minimum=1, maximum=1 << 20)),
        opt("lr", positive()), opt("l2", non_negative()), opt("seed", WORLD_SEED)],
    "process_rl": [
        req("world", REASONING_WORLD), req("method", options(("ppo_outcome", "ppo_prm", "grpo_verifier"))),
        req("steps", REASONING_STEPS), opt("prm", REASONING_PRM), opt("seeds", REASONING_SEEDS),
        opt("lr", positive()), opt("batch_size", counts(2, 6, minimum=2, maximum=1 << 20)),
        opt("num_generations", counts(2, 4, minimum=2, maximum=1 << 20)), opt("kl_coef", non_negative()),
        opt("beta", non_negative()), opt("num_ppo_epochs", counts(1, 2, minimum=1, maximum=1 << 10))],
    # the lab, tiny (see SLOW and _cheap_process_lab)
    "process_lab": [
        opt("world", Kind([val("none", None), *REASONING_WORLD.valid], REASONING_WORLD.junk[1:])),
        req("checkpoints", Kind([fresh("two", lambda: [1, 2])],
                                [val("int", 3), fresh("zero", lambda: [0]), val("str", "3"), fresh("empty", list),
                                 fresh("huge", lambda: [10**13]), val("range-huge", range(10**12), True)])),
        req("seeds", counts(1, 1, minimum=1, maximum=1000)), opt("lr", positive()),
        opt("batch_size", counts(2, 6, minimum=2, maximum=1 << 20)),
        opt("num_generations", counts(2, 4, minimum=2, maximum=1 << 20)),
        req("prm_responses", counts(1, 20, minimum=1, sized=True)), opt("label_noise", LABEL_NOISE),
        opt("target", bounded("positive", 0.1, 1.0, (1.0,), (1.0 + 1e-15, 2.0))),
        req("n_values", Kind([fresh("two", lambda: [1, 2])],
                             [val("int", 2), fresh("zero", lambda: [0]), fresh("huge", lambda: [10**13]),
                              fresh("empty", list), val("str", "2")])),
        opt("seed", WORLD_SEED)],
}
SPECS.update(REASONING_SPECS)


def _cheap_best_of_n(kwargs: dict) -> None:
    """Monte-Carlo Best-of-N costs ``samples * n`` draws: a valid huge ``n`` gets no samples
    (the exact law alone), so that a valid call stays cheap."""
    ns = kwargs.get("n", kwargs.get("ns"))
    ns = list(ns) if isinstance(ns, list) or (isinstance(ns, np.ndarray) and ns.ndim == 1) else [ns]
    big = any(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and 64 < n <= 10**9 for n in ns)
    samples = kwargs.get("samples")
    if big and isinstance(samples, (int, np.integer)) and samples > 0:
        kwargs["samples"] = 0


# function -> an adjustment of a drawn call's arguments (kept cheap)
def _recorded_steps(kwargs: dict) -> None:
    """A huge step (or epoch) count is junk for the memory its history needs; summaries only
    (``record_every=0``), it is only a very long run: keep a history then."""

    def huge(count: Any) -> bool:
        counts = count if isinstance(count, (list, tuple, np.ndarray)) else [count]
        return any(isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c > 10**6 for c in counts)

    if kwargs.get("record_every") == 0 and (huge(kwargs.get("steps")) or huge(kwargs.get("epochs"))):
        kwargs["record_every"] = 1


def _cheap_world_best_of_n(kwargs: dict) -> None:
    """A world's Best-of-N samples ``samples * n`` responses (1,000 samples by default): a call
    that leaves them out gets a few, so that a valid call stays cheap."""
    if kwargs.get("samples") is None:
        kwargs["samples"] = 3


def _cheap_lab(kwargs: dict) -> None:
    """The lab's defaults are a real study (30,000 pairs, 2,000 steps): a setting left out
    (or dropped) gets a tiny one instead; a huge step count keeps a history, as for the sweeps."""
    for name, value in (("rm_pairs", [4]), ("labellers", ["human"]), ("betas", [0.0]), ("ns", [1, 2, 4]),
                        ("seeds", 1), ("steps", 2), ("record_every", 1), ("bon_draws", 4)):
        kwargs.setdefault(name, value)
    steps = kwargs["steps"]
    if isinstance(steps, (int, np.integer)) and not isinstance(steps, bool) and steps > 10**6:
        kwargs["record_every"] = 1


FIXUPS: dict[str, Callable[[dict], None]] = {"best_of_n": _cheap_best_of_n, "sweep_best_of_n": _cheap_best_of_n,
                                              "sweep_rlhf": _recorded_steps, "sweep_grpo": _recorded_steps,
                                              "sweep_dpo": _recorded_steps, "sweep_rlhf[world]": _recorded_steps,
                                              "sweep_dpo[world]": _recorded_steps, "overoptimization": _cheap_lab,
                                              "sweep_grpo[world]": _recorded_steps,
                                              "sweep_best_of_n[world]": _cheap_world_best_of_n,
                                              "core.sweep_token_ppo": _recorded_steps,
                                              "sweep_dpo[sequence]": _recorded_steps,
                                              "sweep_best_of_n[sequence]": _cheap_world_best_of_n,
                                              "sweep_rlhf[sequence]": _recorded_steps,
                                              "sweep_grpo[sequence]": _recorded_steps,
                                              "core.sweep_verifier_grpo": _recorded_steps}
# Too slow for the benchmark's 100,000 calls (a valid call trains reward models, labels 4,000
# held-out pairs and traces an 80-point frontier: ~0.1 s): hypothesis' examples only.
SLOW = {"overoptimization", "distillation", "safety_lab", "length_lab"}
SLOW.add("process_lab")  # 3 methods x checkpoints x seeds, a PRM fit and Best-of-N
FUNCTIONS = [name for name in SPECS if name not in SLOW]  # what benches/fuzz.py draws from
ALL_FUNCTIONS = list(SPECS)  # what tests/test_fuzz.py runs
SWEEPS = [name for name in FUNCTIONS if name.startswith("sweep_")]


# ------------------------------------------------------------------------------ backends


def on_engines(name: str, engines: Any) -> Callable[..., Any]:
    """The sweep front end ``name`` run on ``engines`` (``rlhf_fast._core`` or the reference's),
    whatever ``RLHF_FAST_BACKEND`` chose; ``"sweep_rlhf[world]"`` is ``sweep_rlhf``."""
    return with_engines(getattr(sweep_module, name.split("[")[0]), engines)


def with_engines(front_end: Callable[..., Any], engines: Any) -> Callable[..., Any]:
    """``front_end`` (a sweep, or what calls one) run on ``engines``."""

    def on_these_engines(*args, **kwargs):
        saved = sweep_module._engines
        sweep_module._engines = engines
        try:
            return front_end(*args, **kwargs)
        finally:
            sweep_module._engines = saved

    return on_these_engines


def on_row_kernels(name: str, rust: bool) -> Callable[..., Any]:
    """``rlhf_fast.rows.<name>`` run on the Rust core's kernels or the reference twin's,
    whatever ``RLHF_FAST_BACKEND`` chose at import."""
    front_end = getattr(rows_module, name.split(".")[1])

    def on_these_kernels(*args, **kwargs):
        saved = rows_module._RUST, vars(rows_module).get("_core")
        rows_module._RUST = rust
        if rust:
            from rlhf_fast import _core

            rows_module._core = _core
        try:
            return front_end(*args, **kwargs)
        finally:
            rows_module._RUST, rows_module._core = saved

    return on_these_kernels


# The world functions: NumPy under either backend, but for the sweep's engine (ON_ENGINES).
# A method is called on its instance, the argument INSTANCES names.
INSTANCES = {"World": "world", "RewardModel": "rm", "Judge": "judge", "GaoFit": "fit"}
ON_ENGINES = {"overoptimization", "distillation", "length_lab"}


def _method(name: str) -> Callable[..., Any]:
    cls, method = name.split(".")
    instance = INSTANCES[cls]

    def call(**kwargs):
        if instance not in kwargs:  # dropped: the bound method's own complaint
            raise TypeError(f"{name}() needs a {cls} to be called on")
        return getattr(kwargs.pop(instance), method)(**kwargs)

    return call


def _peaks(fit: GaoFit) -> tuple[float, float]:
    return fit.peak_d, fit.peak_kl


WORLD_CALLS: dict[str, Callable[..., Any]] = {
    **{name: _method(name) for name in WORLD_SPECS
       if "." in name and name.split(".")[0] in INSTANCES and name not in ("World.lesson", "GaoFit.peaks")},
    "World": World, "World.lesson": World.lesson, "Labeller": Labeller, "Judge": Judge, "WorldPairs": WorldPairs,
    "RewardModel": RewardModel, "train_reward_model": worlds_module.train_reward_model,
    "Frontier.of": worlds_module.Frontier.of, "best_of_n_kl": worlds_module.best_of_n_kl,
    "fit_gao": worlds_module.fit_gao, "GaoFit": GaoFit, "GaoFit.peaks": lambda fit: _peaks(fit),
    "guard_stop": overopt_module.guard_stop, "best_of_n_curve": overopt_module.best_of_n_curve,
    "overoptimization": overopt_module.overoptimization,
}
INSTANCES.update({"SequenceWorld": "world", "SequenceRewardModel": "rm"})
WORLD_CALLS.update({name: _method(name) for name in SEQUENCE_SPECS if "." in name})
WORLD_CALLS.update({"SequenceWorld": SequenceWorld, "SequencePairs": SequencePairs,
                    "SequenceRewardModel": SequenceRewardModel,
                    "train_sequence_reward_model": sequences_module.train_sequence_reward_model,
                    "response_lengths": sequences_module.response_lengths})
WORLD_CALLS.update({"distill_reward_model": distill_module.distill_reward_model,
                    "distillation": distill_module.distillation})
WORLD_CALLS.update({"per_token_worth": length_module.per_token_worth, "length_lab": length_module.length_lab})


def _cheap_safety_lab(kwargs: dict) -> None:
    """The safety lab's defaults are a study (8,000 cost pairs, 2,000 steps, 8 seeds, two
    controllers): a setting left out gets a tiny one instead."""
    for name, value in (("lambdas", [0.0]), ("cost_limits", [0.5]), ("seeds", 1), ("steps", 3), ("rm_pairs", 8),
                        ("cost_pairs", 8), ("calibration", 4), ("lagrangian_kp", 0.0)):
        kwargs.setdefault(name, value)


FIXUPS.update({"sweep_rlhf[safety]": _recorded_steps, "safety_lab": _cheap_safety_lab})
_SAFE_METHODS = ("World.expected_cost", "World.cost_score", "World.safety_preferences")
WORLD_CALLS.update({**{name: _method(name) for name in _SAFE_METHODS}, "World[safety]": World,
                    "Safety": worlds_module.Safety, "calibrate_cost_model": safety_module.calibrate_cost_model,
                    "safety_lab": safety_module.safety_lab})
ON_ENGINES.add("safety_lab")


def _cheap_process_lab(kwargs: dict) -> None:
    """The lab's defaults are a study (10 checkpoints to 160 steps, 4 seeds, 256 PRM responses,
    N up to 64): a setting left out gets a tiny one."""
    for name, value in (("checkpoints", [1, 2]), ("seeds", 1), ("prm_responses", 8), ("n_values", [1, 2])):
        kwargs.setdefault(name, value)


def on_reasoning_engines(front_end: Callable[..., Any], rust: bool) -> Callable[..., Any]:
    """``front_end`` of :mod:`rlhf_fast.reasoning` with the PRM trainer, the GRPO engine and
    token PPO's engine of the Rust core or of the reference, whatever ``RLHF_FAST_BACKEND`` chose."""
    from rlhf_fast import token_ppo as token_ppo_module

    if rust:
        from rlhf_fast import _core

        engines = (_core.train_process_reward_model, _core.sweep_verifier_grpo, _core.sweep_token_ppo)
    else:
        engines = (process_reward_reference.train_process_reward_model, verifier_grpo_reference.sweep_verifier_grpo,
                   token_ppo_reference.sweep_token_ppo)

    def on_these_engines(*args, **kwargs):
        saved = reasoning_module._train_prm, reasoning_module._grpo_engine, token_ppo_module._engine
        reasoning_module._train_prm, reasoning_module._grpo_engine, token_ppo_module._engine = engines
        try:
            return front_end(*args, **kwargs)
        finally:
            reasoning_module._train_prm, reasoning_module._grpo_engine, token_ppo_module._engine = saved

    return on_these_engines


FIXUPS["process_lab"] = _cheap_process_lab
INSTANCES.update({"ReasoningWorld": "world", "ProcessRewardModel": "prm"})
WORLD_CALLS.update({name: _method(name) for name in REASONING_SPECS if "." in name})
WORLD_CALLS.update({"ReasoningWorld": ReasoningWorld, "ProcessRewardModel": ProcessRewardModel})
ON_REASONING_ENGINES = {"train_process_reward_model": reasoning_module.train_process_reward_model,
                        "process_rl": reasoning_module.process_rl, "process_lab": reasoning_module.process_lab}


class Backend:
    """A backend's public functions: the lesson functions of ``rlhf_fast._fast`` (Rust) or
    ``rlhf_fast.reference``, and the sweep front ends run on its engines."""

    def __init__(self, name: str):
        self.name = name
        if name == "rust":
            from rlhf_fast import _core, _fast

            self.functions, self.engines = _fast, _core
        else:
            self.functions, self.engines = ref, sweep_module._ReferenceEngines
        self.PreferenceSet = self.functions.PreferenceSet

    def function(self, name: str) -> Callable[..., Any]:
        if name in ON_REASONING_ENGINES:
            return on_reasoning_engines(ON_REASONING_ENGINES[name], self.name == "rust")
        if name in WORLD_CALLS:
            fn = WORLD_CALLS[name]
            return with_engines(fn, self.engines) if name in ON_ENGINES else fn
        if name.startswith("sweep_"):
            return on_engines(name, self.engines)
        if name.startswith("rows."):
            return on_row_kernels(name, self.name == "rust")
        if name == "core.sweep_token_ppo":
            return self.engines.sweep_token_ppo if self.name == "rust" else token_ppo_reference.sweep_token_ppo
        if name in PROCESS_SPECS:
            return getattr(self.engines, name[5:]) if self.name == "rust" else PROCESS_REFERENCE[name]
        if name == "KLController.update":
            return lambda controller, **kwargs: (controller.update(**kwargs), controller.value)[1]
        target: Any = self.functions
        for part in name.split("."):
            target = getattr(target, part)
        return target


# ------------------------------------------------------------------------------- calls


class Call(NamedTuple):
    function: str
    kwargs: dict[str, Any]
    labels: dict[str, str]  # argument -> how it was drawn ("valid:uniform", "junk:nan", "omitted")
    oversized: bool

    def describe(self, limit: int = 160) -> str:
        parts = []
        for name, label in self.labels.items():
            if name in self.kwargs:
                text = repr(self.kwargs[name])
                if len(text) > limit:
                    text = text[:limit] + "..."
                parts.append(f"{name}={text}  # {label}")
            else:
                parts.append(f"# {name} {label}")
        return f"{self.function}(\n    " + ",\n    ".join(parts) + "\n)"


def draw_call(source: Any, function: str | None = None, backend: Backend | None = None) -> Call:
    """A call of ``function`` (drawn when None): each argument valid, junk or left out.

    About a quarter of the calls are all valid; the rest have one or two junk arguments (now
    and then more, a required argument missing or an unknown keyword)."""
    if function is None:
        function = FUNCTIONS[source.index(len(FUNCTIONS))]
    params = SPECS[function]
    n_junk = (0, 0, 1, 1, 1, 2, 2, 3)[source.index(8)]
    junk_at = {source.index(len(params)) for _ in range(n_junk)} if params else set()
    kwargs: dict[str, Any] = {}
    labels: dict[str, str] = {}
    oversized = False
    for k, param in enumerate(params):
        kind = param.kind
        if k in junk_at and kind.junk:
            choice = some(source, kind.junk)
            labels[param.name] = f"junk:{choice.label}"
        elif not param.required and source.index(3) == 0:
            labels[param.name] = "omitted"
            continue
        else:
            choice = some(source, kind.valid)
            labels[param.name] = f"valid:{choice.label}"
        if choice.label == "preference-set":  # the backend's own tokenised set
            value = _pset(source, backend or Backend("python"))
        else:
            value = choice.make(source)
        kwargs[param.name] = value
        oversized = oversized or choice.oversized
    for name, value in list(kwargs.items()):  # in the order drawn: a Later sees the ones before it
        if isinstance(value, Later):
            kwargs[name] = value.make(kwargs)
    if function in FIXUPS:
        FIXUPS[function](kwargs)
    extra = source.index(40)
    if extra == 0:
        kwargs["bogus"] = 1
        labels["bogus"] = "junk:unknown-keyword"
    elif extra == 1 and any(p.required for p in params):
        name = some(source, [p.name for p in params if p.required])
        kwargs.pop(name)
        labels[name] = "junk:missing"
    return Call(function, kwargs, labels, oversized)


# ------------------------------------------------------------------------------ outcomes


# What a function is documented to hold as NaN: sweep_dpo's history past the end of a run
# with fewer epochs than the longest (docstring of rlhf_fast.sweep_dpo).
NAN_DOCUMENTED = {"sweep_dpo": "history", "sweep_dpo[world]": "history", "sweep_dpo[sequence]": "history"}
# What is documented as +inf: where a Gao fit peaks when it never turns down (GaoFit.peak_d).
INF_DOCUMENTED = {"GaoFit.peaks"}


def non_finite(result: Any, path: str = "result", depth: int = 0, nan_under: str | None = None,
               nan_ok: bool = False) -> str | None:
    """Where ``result`` holds NaN or an infinity (or a complex number), else None; NaN passes
    under a dict key or attribute named ``nan_under``."""
    if depth > 8:
        return None
    if isinstance(result, float):
        return None if math.isfinite(result) or (nan_ok and math.isnan(result)) else f"{path} = {result!r}"
    if isinstance(result, (bool, int, str, bytes)) or result is None:
        return None
    if isinstance(result, complex):
        return f"{path} = {result!r} (complex)"
    if isinstance(result, np.ndarray):
        if result.dtype.kind in "fc":
            bad = np.isinf(result) if nan_ok and result.dtype.kind == "f" else ~np.isfinite(result)
            if bad.any():
                where = tuple(int(i) for i in np.argwhere(bad)[0])
                return f"{path}[{where}] = {result[where]!r}"
            return None
        if result.dtype.kind == "O":
            for i, v in enumerate(result.ravel().tolist()):
                found = non_finite(v, f"{path}.flat[{i}]", depth + 1, nan_under, nan_ok)
                if found:
                    return found
        return None
    if isinstance(result, np.generic):
        return non_finite(result.item(), path, depth + 1, nan_under, nan_ok)
    if isinstance(result, dict):
        for key, v in result.items():
            found = non_finite(v, f"{path}[{key!r}]", depth + 1, nan_under, nan_ok or key == nan_under)
            if found:
                return found
        return None
    if isinstance(result, (list, tuple)):
        for i, v in enumerate(result):
            found = non_finite(v, f"{path}[{i}]", depth + 1, nan_under, nan_ok)
            if found:
                return found
        return None
    if hasattr(result, "__dict__") and not isinstance(result, (random.Random, type)):
        return non_finite(vars(result), f"{path}.", depth + 1, nan_under, nan_ok)
    return None


def outcome(fn: Callable[[], Any], function: str | None = None) -> tuple[str, str]:
    """``(class, detail)`` of one call, class one of ``ok``, the four allowed exception
    names, or ``FAIL:...`` (a bug: what went wrong in ``detail``). Warnings must be turned into
    errors by the caller (see :func:`strict_warnings`)."""
    try:
        result = fn()
    except ALLOWED as err:
        message = str(err)
        if not message.strip():
            return "FAIL:empty-message", f"{type(err).__name__} with an empty message"
        return type(err).__name__, message
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as err:  # noqa: BLE001 - PanicException, warnings as errors, anything else
        return f"FAIL:{type(err).__name__}", f"{type(err).__module__}.{type(err).__name__}: {err}"
    if function in INF_DOCUMENTED and isinstance(result, tuple):
        result = tuple(0.0 if v == INF else v for v in result)
    found = non_finite(result, nan_under=NAN_DOCUMENTED.get(function or ""))
    if found:
        return "FAIL:non-finite", found
    return "ok", ""


class strict_warnings(warnings.catch_warnings):
    """Every warning an error (so that :func:`outcome` sees it), except ``KLWarning``."""

    def __enter__(self):
        out = super().__enter__()
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=ref.KLWarning)
        return out
