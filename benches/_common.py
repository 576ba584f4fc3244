"""Helpers shared by the benchmark scripts: timing, tables, the B1 reward model.

Every script runs all of its contenders in one process and compares them only with each
other: the machine is small and noisy, so a number from another run means nothing.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """``(seconds, result)`` of one call, garbage collection off (as ``timeit`` does)."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
    finally:
        if enabled:
            gc.enable()
    return seconds, result


def interleaved(contenders: dict[str, Callable[[], object]], repeats: int = 3) -> tuple[dict, dict]:
    """Best-of-``repeats`` seconds per contender, the contenders taking turns every round.

    Returns ``(best_seconds, last_result)``, both keyed like ``contenders``. Interleaving
    spreads the machine's noise over all of them instead of landing on one.
    """
    best = {name: float("inf") for name in contenders}
    results: dict[str, object] = {}
    for _ in range(repeats):
        for name, fn in contenders.items():
            seconds, results[name] = timed(fn)
            best[name] = min(best[name], seconds)
    return best, results


def paired_ratios(slow: Callable[[], object], fast: Callable[[], object], rounds: int) -> list[float]:
    """``time(slow) / time(fast)`` for ``rounds`` back-to-back pairs, sorted, the order swapped
    every round. A ratio of two neighbouring calls cancels slow drifts of the machine (another
    tenant, a clock that changes with the number of busy cores), and their median ignores
    outliers."""
    ratios = []
    for k in range(rounds):
        if k % 2:
            t_fast, t_slow = timed(fast)[0], timed(slow)[0]
        else:
            t_slow, t_fast = timed(slow)[0], timed(fast)[0]
        ratios.append(t_slow / t_fast)
    return sorted(ratios)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], left: int = 1) -> None:
    """Print an aligned table: the first ``left`` columns left-aligned, the rest right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row):
        return "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print(line(row))


def rate(x: float) -> str:
    """A throughput with an SI suffix: 1234567 -> '1.23 M'."""
    for scale, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if x >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}  "


def ratio(x: float) -> str:
    return f"{x:.1f}x" if x >= 10 else f"{x:.2f}x"


def b1_reward_model(rl):
    """The B1 reward model (SPEC 5): ``make_dataset(500, seed=0)``, 5 epochs, lr 0.1."""
    return rl.train_rm(rl.make_dataset(500, 0), epochs=5, lr=0.1)
