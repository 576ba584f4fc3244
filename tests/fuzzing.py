"""Junk for every public function: the generators behind ``test_fuzz.py`` and ``benches/fuzz.py``.

Every public function of ``rlhf_fast.reference.__all__`` (the controllers' ``update`` and
``PreferenceSet.make_dataset`` included) and the five sweep front ends has a spec here: per
argument, a kind (a policy, a reward model, a positive float, a count, ...) with the values
that argument may take (``valid``) and the junk it may meet (``junk``: wrong types, NaN and
infinities, negative, zero and huge counts, wrong shapes and dtypes, non-contiguous and
read-only arrays, empty inputs, unknown prompts and tokens, dicts with missing keys). A call
draws each argument valid, junk or (when it has a default) left out, and may add an unknown
keyword or drop a required one.

The outcome rule (issue 9): a call returns a result in which every float is finite, or
raises ``ValueError``, ``TypeError``, ``MemoryError`` or ``FloatingPointError`` with a
non-empty message; it warns nothing but ``KLWarning``. Anything else — another exception
(pyo3's ``PanicException``), an empty message, NaN or an infinity in the result, another
warning, an abort, a hang — is a bug.

Draws go through a ``Source``: ``RandomSource`` (a ``random.Random``, for the benchmark's
100,000 calls, where call ``i`` of seed ``s`` is a function of ``(s, i)`` alone, so a crash
can be replayed) or ``HypothesisSource`` (``st.data()``, so that hypothesis shrinks). This
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

from rlhf_fast import reference as ref
from rlhf_fast import sweep as sweep_module

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
                   opt("vf_coef", axis(non_negative())), opt("cliprange_value", axis(positive(0.05, 0.5))),
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


FIXUPS: dict[str, Callable[[dict], None]] = {"best_of_n": _cheap_best_of_n, "sweep_best_of_n": _cheap_best_of_n,
                                              "sweep_rlhf": _recorded_steps, "sweep_grpo": _recorded_steps,
                                              "sweep_dpo": _recorded_steps}
FUNCTIONS = list(SPECS)
SWEEPS = [name for name in FUNCTIONS if name.startswith("sweep_")]


# ------------------------------------------------------------------------------ backends


def on_engines(name: str, engines: Any) -> Callable[..., Any]:
    """The sweep front end ``name`` run on ``engines`` (``rlhf_fast._core`` or the reference's),
    whatever ``RLHF_FAST_BACKEND`` chose."""
    front_end = getattr(sweep_module, name)

    def on_these_engines(*args, **kwargs):
        saved = sweep_module._engines
        sweep_module._engines = engines
        try:
            return front_end(*args, **kwargs)
        finally:
            sweep_module._engines = saved

    return on_these_engines



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
        if name.startswith("sweep_"):
            return on_engines(name, self.engines)
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
NAN_DOCUMENTED = {"sweep_dpo": "history"}


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
