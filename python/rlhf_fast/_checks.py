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
    return float(value)


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
    value = float(value)
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


def count(name: str, value: Any, minimum: int) -> int:
    """An int >= ``minimum``."""
    value = integer(name, value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
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


def at_least(minimum: int) -> Callable[[str, Any], int]:
    """:func:`count` with its bound fixed: a check of one argument, for grid axes."""
    return lambda name, value: count(name, value, minimum)


def one_of(options: tuple[str, ...]) -> Callable[[str, Any], str]:
    """:func:`option` with its options fixed: a check of one argument, for grid axes."""
    return lambda name, value: option(name, value, options)


# ------------------------------------------------------------------------- sequences


def sequence(name: str, values: Any, what: str = "a sequence of floats") -> list:
    """Any iterable but a string, as a list."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be {what}, got {type(values).__name__}")
    return list(values)


def logits(name: str, row: Any, size: int | None = None) -> list[float]:
    """A non-empty row of finite floats (of ``size`` entries, if given)."""
    row = [finite(f"{name}[{i}]", v) for i, v in enumerate(sequence(name, row))]
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
    """A response's tokens: a string split on white space, or a sequence of tokens."""
    if isinstance(y, str):
        return y.split()
    return sequence(name, y, "a str or a sequence of token strings")


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


def triple(i: int, item: Any) -> tuple[str, str, str]:
    """Pair ``i`` of a preference set: a ``(prompt, chosen, rejected)`` triple or a TRL row."""
    if isinstance(item, Mapping):
        missing = {"prompt", "chosen", "rejected"} - set(item)
        if missing:
            raise ValueError(f"pairs[{i}] lacks {sorted(missing)}")
        return item["prompt"], item["chosen"], item["rejected"]
    if isinstance(item, (str, bytes)) or not isinstance(item, Sequence):
        raise TypeError(f"pairs[{i}] must be a (prompt, chosen, rejected) triple or row, got {type(item).__name__}")
    if len(item) != 3:
        raise ValueError(f"pairs[{i}] must be a (prompt, chosen, rejected) triple, got {len(item)} items")
    return item[0], item[1], item[2]


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


def policy(name: str, policy: Any, updated: bool = False) -> None:
    """A dict prompt -> row of ``len(VOCAB)`` finite logits, for every prompt of ``PROMPTS``;
    list rows where the call updates them in place."""
    if not isinstance(policy, Mapping):
        raise TypeError(f"{name} must be a dict prompt -> list of logits, got {type(policy).__name__}")
    for prompt in PROMPTS:
        if prompt not in policy:
            raise ValueError(f"{name} has no logits for prompt {prompt!r}")
        logits(f"{name}[{prompt!r}]", policy[prompt], len(VOCAB))
        if updated and not isinstance(policy[prompt], list):
            raise TypeError(
                f"{name}[{prompt!r}] must be a list (it is updated in place), got {type(policy[prompt]).__name__}"
            )


def frozen_copy(theta: Mapping[str, Sequence[float]], ref: Mapping[str, Sequence[float]]) -> None:
    """The SPEC's rule: ``ref`` never shares storage with ``theta``."""
    if ref is theta or any(ref[x] is theta[x] for x in PROMPTS):
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


def prompt(prompt: Any, policy: Mapping[str, Sequence[float]]) -> str:
    """One of ``PROMPTS`` that ``policy`` has logits for."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    if prompt not in PROMPTS or prompt not in policy:
        raise ValueError(f"prompt {prompt!r} is unknown; known prompts: {list(PROMPTS)}")
    return prompt


def weights(w: Any, name: str = "w") -> None:
    """A dict token -> finite real weight (any tokens, ``VOCAB``'s or not)."""
    if not isinstance(w, Mapping):
        raise TypeError(f"{name} must be a dict token -> weight, got {type(w).__name__}")
    for tok, value in w.items():
        finite(f"{name}[{tok!r}]", value)


def value_baseline(value: Any) -> None:
    """``None``, a mutable dict prompt -> float, or a list of ``len(PROMPTS)`` floats in PROMPTS order."""
    if value is None:
        return
    if isinstance(value, Mapping):
        if not isinstance(value, MutableMapping):
            raise TypeError(
                f"value must be a mutable dict prompt -> float (it is updated in place), got {type(value).__name__}"
            )
        for x in PROMPTS:
            if x not in value:
                raise ValueError(f"value has no baseline for prompt {x!r}")
            finite(f"value[{x!r}]", value[x])
        return
    if isinstance(value, (str, bytes)) or not (hasattr(value, "__len__") and hasattr(value, "__setitem__")):
        raise TypeError(
            f"value must be a dict prompt -> float or a list of {len(PROMPTS)} floats in PROMPTS order, "
            f"got {type(value).__name__}"
        )
    if len(value) != len(PROMPTS):
        raise ValueError(f"value must have {len(PROMPTS)} entries (one per prompt), got {len(value)}")
    for i in range(len(PROMPTS)):
        finite(f"value[{i}]", value[i])


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
    if value is None or isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        return [check(name, value)], False
    values = [check(f"{name}[{i}]", v) for i, v in enumerate(value)]
    if not values:
        raise ValueError(f"{name} must not be empty")
    return values, True


def seed_axis(seeds: Any, allow_none: bool) -> list:
    """A count ``N`` (seeds ``0..N-1``) or a list of ints (``None``: the pairs in order)."""
    if seeds is None and allow_none:
        return [None]
    if isinstance(seeds, numbers.Integral) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1 (a count) or a list of ints, got {seeds!r}")
        return list(range(int(seeds)))
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, (Sequence, np.ndarray)):
        raise TypeError(f"seeds must be an int count or a sequence of ints, got {type(seeds).__name__}")
    check = optional(integer) if allow_none else integer
    values = [check(f"seeds[{i}]", s) for i, s in enumerate(seeds)]
    if not values:
        raise ValueError("seeds must not be empty")
    return values


def policy_array(name: str, policy: Any) -> np.ndarray:
    """A policy (``None``: uniform; a dict prompt -> row; an array) as a float64 ``[P, V]`` array."""
    if policy is None:
        return np.zeros((len(PROMPTS), len(VOCAB)))
    if isinstance(policy, Mapping):
        missing = [p for p in PROMPTS if p not in policy]
        if missing:
            raise ValueError(f"{name} has no logits for prompt {missing[0]!r}")
        return np.array([list(policy[p]) for p in PROMPTS], dtype=np.float64)
    return np.ascontiguousarray(policy, dtype=np.float64)


def total_memory() -> int:
    """This machine's memory in bytes (8 GiB where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def memory(
    need: int,
    max_memory: int | None,
    what: str,
    advice: str = "pass record_every=k to keep every k-th step (or 0 for summaries only)",
) -> None:
    """A sweep's output fits in ``max_memory`` bytes (``None``: half the machine's memory)."""
    limit = total_memory() // 2 if max_memory is None else max_memory
    if need > limit:
        raise ValueError(
            f"this sweep would keep {need / 2**30:.1f} GiB of history ({what}), over "
            f"max_memory={limit / 2**30:.1f} GiB: {advice}"
        )
