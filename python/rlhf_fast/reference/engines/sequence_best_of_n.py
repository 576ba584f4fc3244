"""Twin of rust/engines/sequence_best_of_n.rs: Best-of-N in a sequence world, a sweep of runs.

Run ``(n, samples, seed)`` on one ``random.Random(seed)`` repeats ``samples`` times: a prompt
``x = rng.choice(range(P))``, then ``n`` responses from the reference policy token by token
(:func:`sample_response`), the first of those the proxy scores highest kept; its proxy score,
gold and content length are recorded. Summaries: their means and standard errors (Bessel), the
analytic KL ``log n - (n - 1) / n``, and the reference's exact proxy, gold and content length.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from ... import _checks as checks
from ..kernels.sampling import sample_index
from ..kernels.softmax import softmax_row
from ..methods.best_of_n import bon_kl_analytic
from ..methods.token_ppo import EOS, TokenWorld
from ..rng import from_key, seed_key
from .driver import RunOutput, sweep
from .sequence_dpo import sequence_world

SEQUENCE_BON_SUMMARY_FIELDS = (
    "sampled_proxy_score",
    "sampled_proxy_score_se",
    "sampled_gold_score",
    "sampled_gold_score_se",
    "sampled_length",
    "sampled_length_se",
    "kl_analytic",
    "ref_proxy_score",
    "ref_gold_score",
    "ref_length",
)
MAX_DRAWS = 1 << 40


def sample_response(probs: Sequence[Sequence[float]], rng: Any) -> list[int]:
    """A response drawn from one prompt's rows of probabilities: ``a_t = sample_index(probs[t],
    rng.random())`` until the first EOS (kept) or ``L`` tokens."""
    tokens = []
    for row in probs:
        a = sample_index(row, rng.random())
        tokens.append(a)
        if a == EOS:
            break
    return tokens


def _mean_and_se(values: Sequence[float]) -> tuple[float, float]:
    count = float(len(values))
    total = 0.0
    for v in values:
        total += v
    mean = total / count
    squares = 0.0
    for v in values:
        squares += (v - mean) * (v - mean)
    return mean, math.sqrt(squares / (count - 1.0) / count)


class SequenceBestOfNRun(NamedTuple):
    n: int
    samples: int
    seed_key: list[int]


def best_of_n_draws(world: TokenWorld, ref_probs: Sequence, spec: SequenceBestOfNRun) -> list[tuple[int, list[int],
                                                                                                         float]]:
    """The run's kept responses, in order: ``(prompt, tokens, proxy score)`` each."""
    rng = from_key(spec.seed_key)
    prompts = range(world.n_prompts)
    kept = []
    for _ in range(spec.samples):
        x = rng.choice(prompts)
        best: list[int] = []
        best_score = -math.inf
        for j in range(spec.n):
            tokens = sample_response(ref_probs[x], rng)
            score = world.rm_score(x, tokens)
            if j == 0 or score > best_score:
                best, best_score = tokens, score
        kept.append((x, best, best_score))
    return kept


class SequenceBestOfNEngine:
    """Best-of-N runs in one sequence world, from its reference policy."""

    history_fields: tuple[str, ...] = ()
    summary_fields = SEQUENCE_BON_SUMMARY_FIELDS
    param_shape: tuple[int, ...] = (0,)
    record_every = 0
    kept = 0

    def __init__(self, world: TokenWorld, specs: Sequence[SequenceBestOfNRun]):
        for spec in specs:
            if spec.n * spec.samples > MAX_DRAWS:
                raise ValueError(f"n * samples must be <= {MAX_DRAWS} (the responses a run draws), "
                                 f"got {spec.n} * {spec.samples}")
        self.world = world
        self.ref_probs = [[softmax_row(row) for row in rows] for rows in world.ref_logits]

    def run(self, spec: SequenceBestOfNRun, index: int) -> RunOutput:
        world = self.world
        kept = best_of_n_draws(world, self.ref_probs, spec)
        proxy = _mean_and_se([score for _, _, score in kept])
        gold = _mean_and_se([world.gold(x, tokens) for x, tokens, _ in kept])
        length = _mean_and_se([float(sum(1 for a in tokens if a != EOS)) for _, tokens, _ in kept])
        reference = world.stats(world.ref_logits)
        summary = [*proxy, *gold, *length, bon_kl_analytic(spec.n), reference.proxy_score, reference.gold_score,
                   reference.length]
        return RunOutput({}, [], summary)

    def work(self, spec: SequenceBestOfNRun) -> int:
        return spec.samples


def sweep_sequence_best_of_n(
    ref_logits: Any, w: Any, bias: Any, w_len: Any, g: Any, offset: Any, count_once: Any, runs: Sequence[tuple],
    n_threads: int | None = None, progress: Callable[[int], None] | None = None, max_memory: int | None = None,
) -> dict[str, Any]:
    """Every Best-of-N run of ``runs`` (``(n, samples, seed)``) in the sequence world of these
    arrays. Returns the sweep contract's dict (:func:`~.driver.sweep`)."""
    world = sequence_world(ref_logits, w, bias, w_len, g, offset, count_once)
    specs = [SequenceBestOfNRun(checks.count("n", n, 1), checks.count("samples", samples, 2),
                                seed_key(checks.integer("seed", seed))) for n, samples, seed in runs]
    return sweep(SequenceBestOfNEngine(world, specs), specs, max_memory, progress)
