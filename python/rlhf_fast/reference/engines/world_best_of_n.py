"""Twin of rust/engines/world_best_of_n.rs: Best-of-N in a world, from its reference policy.

A run ``(n, samples, seed)`` owns its stream and draws ``samples`` times a prompt
(``rng.choice`` over the prompts, as world PPO draws it), then ``n`` responses of ``L``
tokens from the reference's row (:func:`~..methods.best_of_n.draw_bag`, world PPO's draw),
and keeps the first of those the proxy scores highest. It records the kept responses' mean
proxy and gold with their standard errors, ``log n - (n - 1) / n`` for the KL (an upper
bound where responses tie), and the reference's own exact proxy and gold, the ``n = 1``
expectation the sampled means start from. The exact law of the kept response is out of reach
for bags (a sum of ``L`` weights over ``V^L`` responses): this engine samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from ... import _checks as checks
from ..kernels.softmax import softmax_row
from ..methods.best_of_n import MAX_N, bag_gold, bon_kl_analytic, draw_bag
from ..rng import from_key, seed_key
from .driver import RunOutput, sweep
from .world_ppo import WorldTables

WORLD_BON_SUMMARY_FIELDS = (
    "sampled_proxy_score",
    "sampled_proxy_score_se",
    "sampled_gold_score",
    "sampled_gold_score_se",
    "kl_analytic",
    "ref_proxy_score",
    "ref_gold_score",
)


class WorldBonRun(NamedTuple):
    """One run of a world Best-of-N sweep: ``n``, its Monte-Carlo samples and its stream."""

    n: int
    samples: int
    seed_key: list[int]


class Moments:
    """The running mean and sum of squared deviations of a series (Welford), and its plain sum."""

    def __init__(self) -> None:
        self.count = 0.0
        self.total = 0.0
        self.mean = 0.0
        self.squares = 0.0

    def add(self, x: float) -> None:
        self.count += 1.0
        self.total += x
        delta = x - self.mean
        self.mean += delta / self.count
        self.squares += delta * (x - self.mean)

    def mean_and_standard_error(self) -> tuple[float, float]:
        """The mean (the sum over the count) and its standard error, ``sqrt(s^2 / count)``."""
        return self.total / self.count, math.sqrt(self.squares / (self.count - 1.0) / self.count)


class WorldBonEngine:
    """The world Best-of-N sweep engine: every run from the world's reference policy."""

    history_fields: tuple[str, ...] = ()
    summary_fields: tuple[str, ...] = WORLD_BON_SUMMARY_FIELDS
    record_every = 0
    kept = 0
    param_shape: tuple[int, ...] = (0,)

    def __init__(self, world: WorldTables):
        self.world = world
        self.p = [softmax_row(row) for row in world.ref_logits]
        proxy = gold = 0.0
        for x, row in enumerate(world.ref_logits):
            stats = world.prompt_stats(x, row)
            proxy += stats.proxy_score
            gold += stats.gold_score
        self.reference = (proxy / world.n_prompts, gold / world.n_prompts)

    def run(self, spec: WorldBonRun, index: int) -> RunOutput:
        world = self.world
        length, weights = world.response_len, world.weights
        rng = from_key(spec.seed_key)
        prompts = range(world.n_prompts)
        proxy, gold = Moments(), Moments()
        for _ in range(spec.samples):
            x = rng.choice(prompts)
            p = self.p[x]
            # The first response is kept whatever it scores; a later one only if it scores more.
            kept, best = draw_bag(p, weights, length, rng)
            for _ in range(spec.n - 1):
                bag, score = draw_bag(p, weights, length, rng)
                if score > best:
                    kept, best = bag, score
            proxy.add(best)
            gold.add(bag_gold(world.gold_token[x], kept, world.count_once))
        summary = [*proxy.mean_and_standard_error(), *gold.mean_and_standard_error(), bon_kl_analytic(spec.n),
                   *self.reference]
        if (field := checks.non_finite(self.summary_fields, summary)) is not None:
            value = summary[self.summary_fields.index(field)]
            raise FloatingPointError(f"sweep run {index} overflowed: {field} is {value!r} (n={spec.n})")
        return RunOutput({}, [], summary)

    def work(self, spec: WorldBonRun) -> int:
        return spec.samples


def _samples(value: Any) -> int:
    samples = checks.int64("samples", value)
    if samples < 2:
        raise ValueError(
            f"samples must be >= 2 in a world (its Best-of-N is sampled, and a standard error needs two), got {samples}"
        )
    return samples


def sweep_world_best_of_n(
    ref_logits: Any,
    weights: Any,
    gold_token: Any,
    count_once: Any,
    response_len: Any,
    runs: Sequence[tuple],
    n_threads: int | None = None,
    progress: Callable[[int], None] | None = None,
    max_memory: int | None = None,
) -> dict[str, Any]:
    """Every Best-of-N run of ``runs`` from the reference policy of the world of these tables.

    ``ref_logits`` and ``gold_token`` are float64 ``[n_prompts, vocab]`` arrays, ``weights``
    the reward model's float64 ``[vocab]``, ``count_once`` a bool, ``response_len`` the
    tokens of a response. A run is ``(n, samples, seed)``: ``1 <= n <= 10**9``, ``samples >=
    2``. Returns the sweep contract's dict (:func:`~.driver.sweep`): no history, no
    parameters, the summary ``WORLD_BON_SUMMARY_FIELDS``. ``n_threads`` chooses how Rust
    computes; the reference computes one way.
    """
    ref_logits = checks.float_array("ref_logits", ref_logits, 2)
    weights = checks.float_array("weights", weights, 1)
    gold_token = checks.float_array("gold_token", gold_token, 2)
    count_once = checks.boolean("count_once", count_once)
    response_len = checks.int64("response_len", response_len)
    world = WorldTables.new(ref_logits, weights, gold_token, count_once, response_len)
    specs = []
    for n, samples, seed in runs:
        n = checks.int64("n", n)
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if n > MAX_N:
            raise ValueError(f"n must be <= {MAX_N}, got {n}")
        specs.append(WorldBonRun(n, _samples(samples), seed_key(checks.integer("seed", seed))))
    return sweep(WorldBonEngine(world), specs, max_memory, progress)
