"""Twin of rust/engines/sequence_common.rs' sweep loop: what the batch-stepping sequence-world
engines (token PPO, GRPO with a verifier) share."""

from __future__ import annotations

import math
from typing import Any

from ..methods.token_ppo import TokenWorld


def sweep_batch_run(world: TokenWorld, run: Any, theta: list, steps: int, record_every: int,
                    history_fields: tuple[str, ...], name: str) -> tuple[dict[str, list[float]], list[float]]:
    """``steps`` steps of ``run`` (whose ``step(t, name)`` returns its record and moves
    ``theta``): each step's record, then the exact proxy score, gold score, KL and length of
    the policy after it where the step is kept (NaN elsewhere: they cost a pass over the
    policy), as ``history``; and those four statistics of the final policy."""
    history: dict[str, list[float]] = {field: [] for field in history_fields}
    for t in range(steps):
        record = run.step(t, name)
        kept = record_every and (t + 1) % record_every == 0
        record.extend(world.stats(theta) if kept else [math.nan] * 4)
        for field, value in zip(history_fields, record):
            history[field].append(value)
    return history, list(world.stats(theta))
