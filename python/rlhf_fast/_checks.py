"""Argument checks: the Python twin of rust/error.rs, and the one place checks live.

Each function checks one kind of argument and returns it converted (a float, an int, a
list) or raises what the Rust bindings raise for the same input: ``TypeError`` for a wrong
type, ``ValueError`` for a wrong value, with a message naming the argument and the value.
The reference's lesson-level functions (:mod:`rlhf_fast.reference.api`), its engines, the
sweep front-ends and the Rust backend's adapters all check through here, so both backends
word their errors alike.
"""

from __future__ import annotations

import math
import numbers
import os
import random
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import Any

import numpy as np

from .reference.lesson import PROMPTS, VOCAB
from .reference.methods.reward_checks import check_not_length_only

_TOKEN_INDEX = {tok: i for i, tok in enumerate(VOCAB)}

# ------------------------------------------------------------------------------- numbers


def real(name: str, value: Any) -> float:
    """A real number (not a bool), as a float; NaN and infinities pass."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(_too_large(name, value)) from None


def _too_large(name: str, value: Any) -> str:
    """The message for an int past the floats (``float()`` raises OverflowError)."""
    return f"{name} must fit in a float, got an int of {int(value).bit_length()} bits"


def not_nan(name: str, value: Any) -> float:
    """A real number that is not NaN (infinities pass)."""
    value = real(name, value)
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    return value


def finite(name: str, value: Any) -> float:
    """A finite real number, as a float."""
    # real()'s test written out: this runs once per logit of every policy checked
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:
        raise ValueError(_too_large(name, value)) from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def positive(name: str, value: Any) -> float:
    """A finite real number > 0."""
    value = finite(name, value)
    if value <= 0.0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def non_negative(name: str, value: Any) -> float:
    """A finite real number >= 0."""
    value = finite(name, value)
    if value < 0.0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def integer(name: str, value: Any) -> int:
    """An int (not a bool): a seed, a count before its bound is checked."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return int(value)


def count(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """An int >= ``minimum`` (and <= ``maximum``, if given)."""
    value = integer(name, value)
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{name} must fit in 64 bits, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value!r}")
    return value


def int64(name: str, value: Any) -> int:
    """An int (not a bool) that fits in 64 bits, its range checked by the caller."""
    return count(name, value, -(2**63))


def boolean(name: str, value: Any) -> bool:
    """A bool (not an int: ``1`` for ``True`` is a mistake worth naming)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def option(name: str, value: Any, options: tuple[str, ...]) -> str:
    """One of a fixed set of strings: TypeError for a non-str, ValueError for an unknown one."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, one of {options}, got {type(value).__name__}")
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def optional(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    """``check``, letting ``None`` through."""
    return lambda name, value: None if value is None else check(name, value)


def counts(minimum: int, maximum: int | None = None) -> Callable[[str, Any], int]:
    """:func:`count` with its bounds fixed: a check of one argument, for grid axes."""
    return lambda name, value: count(name, value, minimum, maximum)


def one_of(options: tuple[str, ...]) -> Callable[[str, Any], str]:
    """:func:`option` with its options fixed: a check of one argument, for grid axes."""
    return lambda name, value: option(name, value, options)


# ------------------------------------------------------------------------------- results


def finite_result(function: str, value: Any) -> Any:
    """``value`` (a float, a list of floats, an array, or a dict whose float values are checked),
    or a ``FloatingPointError`` naming
    ``function`` and the first entry that is not finite: finite but extreme arguments can
    overflow inside a kernel, and an inf is never handed back (Rust's ``finite_result``)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FloatingPointError(f"{function} overflowed: the result is {value!r}")
        return value
    if isinstance(value, dict):
        for key, v in value.items():
            if isinstance(v, float) and not math.isfinite(v):
                raise FloatingPointError(f"{function} overflowed: result[{key!r}] is {v!r}")
        return value
    entries = value.ravel().tolist() if isinstance(value, np.ndarray) else value
    for j, v in enumerate(entries):
        if not math.isfinite(v):
            raise FloatingPointError(f"{function} overflowed: result[{j}] is {float(v)!r}")
    return value


# ------------------------------------------------------------------------- sequences


def sequence(name: str, values: Any, what: str) -> list:
    """Any iterable but a string, as a list (pairs, read once)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be {what}, got {type(values).__name__}")
    return list(values)


def _is_sequence(values: Any) -> bool:
    """A sequence the Rust bindings can read item by item: not a string, not an iterator."""
    if isinstance(values, np.ndarray):
        return values.ndim > 0
    return isinstance(values, Sequence) and not isinstance(values, (str, bytes))


def logits(name: str, row: Any, size: int | None = None) -> list[float]:
    """A non-empty sequence of finite floats (of ``size`` entries, if given), as a list."""
    if not _is_sequence(row):
        raise TypeError(f"{name} must be a sequence of floats, got {type(row).__name__}")
    row = [finite(f"{name}[{i}]", v) for i, v in enumerate(row)]
    if not row:
        raise ValueError(f"{name} must not be empty")
    if size is not None and len(row) != size:
        raise ValueError(f"{name} must have {size} entries, got {len(row)}")
    return row


def probabilities(name: str, probs: Any) -> list[float]:
    """A probability row: finite, non-negative entries summing to 1 within 1e-6."""
    probs = logits(name, probs)
    total = 0.0
    for p in probs:
        if p < 0.0:
            raise ValueError(f"{name} must be non-negative, got {p!r}")
        total += p
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"{name} must sum to 1 (within 1e-6), got {total!r}")
    return probs


def tokens(name: str, y: Any) -> list[str]:
    """A response's tokens: a string split on white space, or a sequence of token strings."""
    if isinstance(y, str):
        return y.split()
    if not _is_sequence(y) or not all(isinstance(tok, str) for tok in y):
        raise TypeError(f"{name} must be a str or a sequence of token strings, got {type(y).__name__}")
    return list(y)


def token(a: Any, size: int) -> int:
    """A token index in ``[0, size)``."""
    if isinstance(a, bool) or not isinstance(a, numbers.Integral):
        raise TypeError(f"a must be an int token index, got {type(a).__name__}")
    a = int(a)
    if not 0 <= a < size:
        raise ValueError(f"a must be a token index in [0, {size}), got {a}")
    return a


def response_tokens(name: str, y: Any) -> list[int]:
    """A response of at least one token, every one in ``VOCAB``, as token ids."""
    words = tokens(name, y)
    if not words:
        raise ValueError(f"{name} must have at least one token")
    for tok in words:
        if tok not in _TOKEN_INDEX:
            raise ValueError(f"{name} has token {tok!r} outside VOCAB")
    return [_TOKEN_INDEX[tok] for tok in words]


def triple(i: int, item: Any, name: str = "pairs") -> tuple[str, str, str]:
    """Pair ``i`` of a preference set ``name``: a ``(prompt, chosen, rejected)`` triple or a TRL row."""
    if isinstance(item, Mapping):
        missing = {"prompt", "chosen", "rejected"} - set(item)
        if missing:
            raise ValueError(f"{name}[{i}] lacks {sorted(missing)}")
        return item["prompt"], item["chosen"], item["rejected"]
    if isinstance(item, (str, bytes)) or not isinstance(item, Sequence):
        raise TypeError(f"{name}[{i}] must be a (prompt, chosen, rejected) triple or row, got {type(item).__name__}")
    if len(item) != 3:
        raise ValueError(f"{name}[{i}] must be a (prompt, chosen, rejected) triple, got {len(item)} items")
    return item[0], item[1], item[2]


def preference_triples(name: str, pairs: Any) -> list[tuple[str, list[str], list[str]]]:
    """A reward model's preference pairs (triples or TRL rows; any prompt, any tokens), as
    ``(prompt, chosen tokens, rejected tokens)``."""
    out = []
    for i, item in enumerate(sequence(name, pairs, "an iterable of (prompt, chosen, rejected)")):
        x, y_pos, y_neg = triple(i, item, name)
        if not isinstance(x, str):
            raise TypeError(f"{name}[{i}] prompt must be a str, got {type(x).__name__}")
        out.append((x, tokens(f"{name}[{i}] chosen", y_pos), tokens(f"{name}[{i}] rejected", y_neg)))
    return out


def token_pairs(pairs: Any) -> list[tuple[int, list[int], list[int]]]:
    """DPO's preference pairs, at least one: ``(prompt index, chosen ids, rejected ids)`` each,
    every prompt in ``PROMPTS`` and every token in ``VOCAB``."""
    items = sequence("pairs", pairs, "a sequence of (prompt, chosen, rejected) triples or rows")
    if not items:
        raise ValueError("pairs must not be empty")
    out = []
    for i, item in enumerate(items):
        x, y_pos, y_neg = triple(i, item)
        if not isinstance(x, str):
            raise TypeError(f"pairs[{i}] prompt must be a str, got {type(x).__name__}")
        if x not in PROMPTS:
            raise ValueError(f"pairs[{i}] has prompt {x!r}, unknown; known prompts: {list(PROMPTS)}")
        out.append(
            (
                PROMPTS.index(x),
                response_tokens(f"pairs[{i}] chosen", y_pos),
                response_tokens(f"pairs[{i}] rejected", y_neg),
            )
        )
    return out


# -------------------------------------------------------------------- the lesson's objects


def policy(name: str, policy: Any, updated: bool = False) -> list[list[float]]:
    """A policy's rows in ``PROMPTS`` order, as new lists of floats.

    A policy is a dict prompt -> row of ``len(VOCAB)`` logits (list rows where the call
    updates them in place) or a float64 ``[len(PROMPTS), len(VOCAB)]`` array (writeable
    where the call updates it). Checked in the order of Rust's ``policy_table``: the
    container, each row's entries and length, then every logit finite.
    """
    shape = (len(PROMPTS), len(VOCAB))
    if isinstance(policy, np.ndarray):
        if policy.ndim != 2 or policy.dtype != np.float64:
            raise TypeError(
                f"{name} must be a 2-D float64 array, got a {policy.ndim}-D {policy.dtype} array (use .astype(float))"
            )
        if policy.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {list(policy.shape)}")
        if updated and not policy.flags.writeable:
            raise TypeError(f"{name} must be a writeable array (it is updated in place)")
        rows = policy.tolist()
    elif isinstance(policy, Mapping):
        rows = []
        for prompt in PROMPTS:
            if prompt not in policy:
                raise ValueError(f"{name} has no logits for prompt {prompt!r}")
            row_name = f"{name}[{prompt!r}]"
            row = policy[prompt]
            if not _is_sequence(row):
                raise TypeError(f"{row_name} must be a sequence of floats, got {type(row).__name__}")
            values = [real(f"{row_name}[{j}]", v) for j, v in enumerate(row)]
            if len(values) != len(VOCAB):
                raise ValueError(f"{row_name} must have {len(VOCAB)} entries, got {len(values)}")
            if updated and not isinstance(row, list):
                raise TypeError(f"{row_name} must be a list (it is updated in place), got {type(row).__name__}")
            rows.append(values)
    else:
        raise TypeError(
            f"{name} must be a dict prompt -> list of logits or a float64 array of shape {shape}, "
            f"got {type(policy).__name__}"
        )
    for prompt, row in zip(PROMPTS, rows):
        for j, v in enumerate(row):
            if not math.isfinite(v):
                raise ValueError(f"{name}[{prompt!r}][{j}] must be finite, got {v!r}")
    return rows


def frozen_copy(theta: Any, ref: Any) -> None:
    """The SPEC's rule: ``ref`` never shares storage with ``theta`` (two checked policies)."""
    if isinstance(theta, np.ndarray) and isinstance(ref, np.ndarray):
        shared = np.shares_memory(theta, ref)
    elif isinstance(theta, np.ndarray) or isinstance(ref, np.ndarray):
        shared = False  # a dict's lists cannot be an array's memory
    else:
        shared = ref is theta or any(ref[x] is theta[x] for x in PROMPTS)
    if shared:
        raise ValueError("ref must be a frozen copy of the policy; it shares storage with theta")


def rng(rng: Any) -> random.Random:
    """Something to draw ``rng.random()`` from (a ``random.Random``)."""
    if not callable(getattr(rng, "random", None)):
        raise TypeError(f"rng must be a random.Random (anything with a random() method), got {type(rng).__name__}")
    return rng


def choice_rng(rng: Any) -> random.Random:
    """Something to draw ``rng.choice(seq)`` from (a ``random.Random``): ``make_pair``'s rng."""
    if not callable(getattr(rng, "choice", None)):
        raise TypeError(f"rng must be a random.Random, got {type(rng).__name__}")
    return rng


def prompt_index(prompt: Any, name: str = "prompt") -> int:
    """The index in ``PROMPTS`` of the argument ``name``."""
    if not isinstance(prompt, str):
        raise TypeError(f"{name} must be a str, got {type(prompt).__name__}")
    if prompt not in PROMPTS:
        raise ValueError(f"{name} {prompt!r} is unknown; known prompts: {list(PROMPTS)}")
    return PROMPTS.index(prompt)


def weights(w: Any, name: str = "w") -> None:
    """A dict token -> finite real weight (any tokens, ``VOCAB``'s or not)."""
    if not isinstance(w, Mapping):
        raise TypeError(f"{name} must be a dict token -> weight, got {type(w).__name__}")
    for tok, value in w.items():
        finite(f"{name}[{tok!r}]", value)


def value_baseline(value: Any) -> list[float] | None:
    """``None``, or the baseline in ``PROMPTS`` order of a mutable dict prompt -> float or a
    list of ``len(PROMPTS)`` floats (both are updated in place)."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        if not isinstance(value, MutableMapping):
            raise TypeError(
                f"value must be a mutable dict prompt -> float (it is updated in place), got {type(value).__name__}"
            )
        values = []
        for x in PROMPTS:
            if x not in value:
                raise ValueError(f"value has no baseline for prompt {x!r}")
            values.append(finite(f"value[{x!r}]", value[x]))
        return values
    if not isinstance(value, list):
        raise TypeError(
            f"value must be a dict prompt -> float or a list of {len(PROMPTS)} floats in PROMPTS order, "
            f"got {type(value).__name__}"
        )
    if len(value) != len(PROMPTS):
        raise ValueError(f"value must have {len(PROMPTS)} entries (one per prompt), got {len(value)}")
    return [finite(f"value[{i}]", v) for i, v in enumerate(value)]


def table(name: str, table: Any) -> list[list[float]]:
    """A policy table (Rust's ``check_table``): one row of ``len(VOCAB)`` finite logits per
    prompt of ``PROMPTS`` (a ``[P, V]`` array or nested sequences), as lists of floats."""
    rows = sequence(name, table, f"a [{len(PROMPTS)}, {len(VOCAB)}] table of logits")
    if len(rows) != len(PROMPTS):
        raise ValueError(f"{name} must have {len(PROMPTS)} rows (one per prompt), got {len(rows)}")
    return [logits(f"{name}[{i}]", row, len(VOCAB)) for i, row in enumerate(rows)]


def scores_by_content(w: Any) -> None:
    """A dict of real weights whose ``VOCAB`` words do not all weigh the same (the sweeps' rule:
    :func:`~rlhf_fast.reference.methods.reward_checks.check_not_length_only`)."""
    if not isinstance(w, Mapping):
        raise TypeError(f"w must be a dict token -> weight, got {type(w).__name__}")
    check_not_length_only([real(f"w[{tok!r}]", w.get(tok, 0.0)) for tok in VOCAB])


# ----------------------------------------------------------------------- sweep grids


def grid_axis(name: str, value: Any, check: Callable[[str, Any], Any]) -> tuple[list, bool]:
    """``(values, is_axis)``: a sequence is a grid axis (every value checked), a scalar a constant."""
    # not np.ndim(value): of a range it builds an array (range(10**12): 8 TB)
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)) or (
        isinstance(value, np.ndarray) and value.ndim == 0
    ):
        return [check(name, value)], False
    values = [check(f"{name}[{i}]", v) for i, v in enumerate(value)]
    if not values:
        raise ValueError(f"{name} must not be empty")
    return values, True


def seed_axis(seeds: Any, allow_none: bool) -> Sequence:
    """A count ``N`` as ``range(N)`` (never a list: ``N`` may be far too many runs to keep,
    which the memory check says before anything is built), or a list of ints (``None``: the
    pairs in order)."""
    if seeds is None and allow_none:
        return [None]
    if isinstance(seeds, numbers.Integral) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1 (a count) or a list of ints, got {seeds!r}")
        return range(int(seeds))
    if isinstance(seeds, range):  # ints already, and kept a range: the memory check sizes it
        if not seeds:
            raise ValueError("seeds must not be empty")
        return seeds
    # np.ndim of a range builds an array of it: range(10**12) would take 8 TB
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, (Sequence, np.ndarray)) or (
        isinstance(seeds, np.ndarray) and seeds.ndim == 0
    ):
        raise TypeError(f"seeds must be an int count or a sequence of ints, got {type(seeds).__name__}")
    check = optional(integer) if allow_none else integer
    values = [check(f"seeds[{i}]", s) for i, s in enumerate(seeds)]
    if not values:
        raise ValueError("seeds must not be empty")
    return values


def float_array(name: str, value: Any, ndim: int) -> np.ndarray:
    """A float64 numpy array of ``ndim`` dimensions (a world's tables), as it is: its shape and
    values are the caller's to check."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a {ndim}-D float64 array, got {type(value).__name__}")
    if value.ndim != ndim or value.dtype != np.float64:
        raise TypeError(f"{name} must be a {ndim}-D float64 array, got a {value.ndim}-D {value.dtype} array")
    return value


# ------------------------------------------------------------------- array_like arguments


def _sequence_length(values: Sequence) -> int:
    """``len(values)``; a ``range`` past ``sys.maxsize`` counts as 2**64."""
    try:
        return len(values)
    except OverflowError:
        return 2**64


def as_array(name: str, value: Any, what: str) -> np.ndarray:
    """``value`` as a numpy array (an array is returned as it is): nested sequences of numbers,
    an object with ``__array__`` or a number. A sequence's length is checked against
    :func:`default_max_memory` before it is converted (``range(10**12)`` would take 8 TB), and a
    ragged one is refused naming ``name``; ``what`` is what ``name`` should be."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (str, bytes, Mapping)) or not (
        isinstance(value, (Sequence, numbers.Number)) or hasattr(value, "__array__")
    ):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}")
    if isinstance(value, Sequence):
        n = _sequence_length(value)
        fits(name, n, 8 * n)
    try:
        return np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        raise ValueError(f"{name} must be {what}, got a ragged or mixed {type(value).__name__}") from None


def _at(array: np.ndarray, flat: int) -> str:
    """The index of the flat position ``flat`` of ``array``, as ``[i, j]`` (nothing for a 0-d array)."""
    if array.ndim == 0:
        return ""
    return "[" + ", ".join(str(int(i)) for i in np.unravel_index(flat, array.shape)) + "]"


def _shape_of(name: str, array: np.ndarray, ndim: int | None, shape: tuple[int, ...] | None) -> None:
    if shape is not None and array.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {array.shape}")
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got a {array.ndim}-D array of shape {array.shape}")


def real_array(
    name: str,
    value: Any,
    what: str = "an array of real numbers",
    *,
    ndim: int | None = None,
    shape: tuple[int, ...] | None = None,
    finite: bool = True,
) -> np.ndarray:
    """A float64 array of ints or floats (not bools, not complex numbers, not objects), of
    ``ndim`` dimensions or ``shape`` if given, every entry finite unless ``finite=False``:
    :func:`as_array`, then its dtype, its shape and its values, in that order. A float64
    array passes uncopied (read-only, strided: as it is); the caller must not write to it."""
    array = as_array(name, value, what)
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers, got an array of {array.dtype.name}")
    _shape_of(name, array, ndim, shape)
    array = array.astype(np.float64, copy=False)
    if finite and not np.isfinite(array).all():
        flat = int(np.flatnonzero(~np.isfinite(array))[0])
        raise ValueError(f"{name}{_at(array, flat)} must be finite, got {float(array.flat[flat])!r}")
    return array


def index_array(
    name: str, value: Any, what: str, *, ndim: int | None = None, shape: tuple[int, ...] | None = None
) -> np.ndarray:
    """An int64 array of indices >= 0 (ints, not bools or floats; an empty list passes) of
    ``ndim`` dimensions or ``shape``; their upper bound is the caller's to check."""
    array = as_array(name, value, what)
    if array.dtype.kind not in "iu" and not (array.size == 0 and array.dtype.kind == "f"):
        raise TypeError(f"{name} must hold integers, got an array of {array.dtype.name}")
    _shape_of(name, array, ndim, shape)
    if array.size and array.dtype.kind == "u" and array.max() > 2**63 - 1:
        flat = int(array.argmax())
        raise ValueError(f"{name}{_at(array, flat)} must fit in 64 bits, got {int(array.flat[flat])}")
    array = array.astype(np.int64, copy=False)
    if array.size and array.min() < 0:
        flat = int(array.argmin())
        raise ValueError(f"{name}{_at(array, flat)} must be >= 0, got {int(array.flat[flat])}")
    return array


def sequence_of(name: str, values: Any, check: Callable[[str, Any], Any], what: str) -> list:
    """A non-empty sequence (or 1-D array) whose every value passes ``check(name, value)``, as a
    list; its length is checked against memory before it is read."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)) or (
        isinstance(values, np.ndarray) and values.ndim != 1
    ):
        raise TypeError(f"{name} must be a sequence of {what}, got {type(values).__name__}")
    n = _sequence_length(values)
    fits(name, n, 8 * n)
    out = [check(name, v) for v in values]
    if not out:
        raise ValueError(f"{name} must not be empty")
    return out


def policy_array(name: str, value: Any) -> np.ndarray:
    """A sweep's starting or reference policy (``None``: uniform; else a policy :func:`policy`
    takes) as a new float64 ``[P, V]`` array."""
    if value is None:
        return np.zeros((len(PROMPTS), len(VOCAB)))
    return np.array(policy(name, value), dtype=np.float64)


# ---------------------------------------------------------------------------- sizes


def total_memory() -> int:
    """This machine's memory in bytes (8 GiB where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def default_max_memory() -> int:
    """What one call may take unless told otherwise: half of this machine's memory."""
    return total_memory() // 2


def fits(name: str, value: int, need: int) -> None:
    """A call whose outputs scale with the argument ``name`` (``value``) and need ``need`` bytes
    (the nominal formula both backends share) fits in :func:`default_max_memory`; checked before any
    work, so that a huge count is refused instead of exhausting the machine."""
    limit = default_max_memory()
    if need > limit:
        raise ValueError(f"{name}={value} needs {need} bytes, more than max_memory={limit} bytes")


def memory(need: int, max_memory: int | None, n_runs: int, kept: int) -> None:
    """A sweep's ``n_runs`` runs, keeping ``kept`` steps of history each, fit in ``need`` bytes
    of at most ``max_memory`` (``None``: :func:`default_max_memory`)."""
    limit = default_max_memory() if max_memory is None else max_memory
    if need > limit:
        advice = "pass record_every=k to keep every k-th step (or 0 for summaries only)" if kept else "sweep fewer runs"
        raise ValueError(
            f"this sweep would keep {need} bytes ({n_runs} runs x {kept} kept steps), over max_memory={limit} bytes: "
            f"{advice}"
        )


# ------------------------------------------------------------------------ divergence

# A parameter (a logit, a reward-model weight, a value baseline) whose magnitude reaches
# 2**512 has overflowed: squaring it, as the losses do, would overflow a double. NaN counts too.
OVERFLOW = 2.0**512


def overflowed(values: Iterable[float]) -> bool:
    """Whether any of ``values`` is NaN or at least ``OVERFLOW`` in magnitude."""
    for v in values:
        if not abs(v) < OVERFLOW:
            return True
    return False


def non_finite(keys: Iterable[str], values: Iterable[float]) -> str | None:
    """The first of ``keys`` whose value (``values``, in the same order) is not finite, or ``None``.

    A training step's record (issue 9, section 7b): checked after the logits' overflow check, in
    the order of the history's keys; the key it returns names the record in the step's
    ``FloatingPointError`` (``"... diverged at step 3: reward_std overflowed (lr=..., beta=...)"``).
    """
    isfinite = math.isfinite
    for key, v in zip(keys, values):
        if not isfinite(v):
            return key
    return None
