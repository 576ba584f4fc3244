"""Twin of rust/engines/world_dpo.rs: DPO in a world, one run (:func:`train_world_dpo`) or many.

The policy is one row of logits per prompt, starting at the world's reference (which stays
frozen), and learns from the world's labelled pairs of responses, bags of ``L`` i.i.d.
tokens. The loop is the lesson's DPO (:mod:`.dpo`): ``epochs`` passes over the pairs, in
order or reshuffled every epoch on the run's ``random.Random(seed)``, one
:func:`~rlhf_fast.reference.methods.dpo.bag_dpo_update` a pair, whose label (the probability
that the first response is preferred) :func:`~rlhf_fast.reference.methods.dpo.pair_label`
turns into the chosen response and the pair's label smoothing. What a run records besides the
step's own record (TRL's ``rewards/*``) is exact
(:mod:`~rlhf_fast.reference.methods.world_stats`): the means over prompts of the gold, of the
response's KL ``L KL(pi || pi_ref)`` and, with a reward model, of its score.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from ... import _checks as checks
from ..methods.dpo import DpoOutcome, DpoParams, bag_dpo_update, pair_label
from ..methods.world_stats import ExactMeans, WorldStats, WorldTables
from ..rng import from_key, seed_key
from .dpo import longest_run_steps
from .driver import RunOutput, check_summary, mean, sweep

# The lesson's DPO record (TRL's names, '/' written '_'; the pair's prompt as prompt_index,
# since a world's prompts are not the lesson's) and the exact means over prompts.
WORLD_DPO_HISTORY_FIELDS = (
    "prompt_index",
    "loss",
    "rewards_chosen",
    "rewards_rejected",
    "rewards_margins",
    "rewards_accuracies",
    "proxy_score",
    "gold_score",
    "mean_kl",
)
WORLD_DPO_HISTORY_FIELDS_GOLD = tuple(f for f in WORLD_DPO_HISTORY_FIELDS if f != "proxy_score")
WORLD_DPO_SUMMARY_FIELDS = (
    "final_proxy_score",
    "final_gold_score",
    "final_kl",
    "last_epoch_loss",
    "last_epoch_accuracy",
    "last_epoch_margin",
)
STEP_KEYS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")
MEAN_KEYS = ("proxy_score", "gold_score", "mean_kl")
HISTORY_KEYS = ("pair", "prompt", *STEP_KEYS, *MEAN_KEYS)


class WorldPairs(NamedTuple):
    """A world's labelled pairs (Rust's ``WorldPairs``): per pair its prompt, its two responses
    (lists of ``L`` token indices) and ``target``, the probability that the first is preferred."""

    prompts: list[int]
    first: list[list[int]]
    second: list[list[int]]
    target: list[float]
    response_len: int

    def check(self, world: WorldTables) -> None:
        """The pairs fit ``world`` (its response length, prompts and tokens), hold at least one
        and fewer than 2**32 pairs, and every target is a probability; each error names the
        bindings' argument (``prompts[3]``, ``target[0]``)."""
        n = len(self.prompts)
        if n == 0:
            raise ValueError("pairs must not be empty")
        if n > 2**32 - 1:
            raise ValueError(f"pairs must hold fewer than 2**32 pairs, got {n}")
        if self.response_len != world.response_len:
            raise ValueError(
                f"first must hold responses of the world's {world.response_len} tokens, got {self.response_len}"
            )
        for i, x in enumerate(self.prompts):
            if x >= world.n_prompts:
                raise ValueError(f"prompts[{i}] must be one of the world's {world.n_prompts} prompts, got {x}")
        for name, responses in (("first", self.first), ("second", self.second)):
            for i, response in enumerate(responses):
                for k, a in enumerate(response):
                    if a >= world.vocab_size:
                        raise ValueError(
                            f"{name}[{i}, {k}] must be one of the world's {world.vocab_size} tokens, got {a}"
                        )
        for i, t in enumerate(self.target):
            if not 0.0 <= t <= 1.0:
                raise ValueError(f"target[{i}] must be a probability in [0, 1], got {t!r}")

    def check_labels_for(self, loss_type: str) -> None:
        """Soft labels (strictly between 0 and 1) are a cross-entropy target of the sigmoid
        loss only: refused for any other ``loss_type``, naming the first soft target."""
        if loss_type == "sigmoid":
            return
        for i, t in enumerate(self.target):
            if t != 0.0 and t != 1.0:
                raise ValueError(
                    f"loss_type {loss_type!r} needs hard labels (targets 0 or 1), but target[{i}] is {t!r}: "
                    "soft labels are only defined for loss_type 'sigmoid'"
                )


def _index_array(name: str, value: Any, ndim: int) -> np.ndarray:
    """An int64 array of ``ndim`` dimensions of indices in ``[0, 2**32)`` (the bindings')."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a {ndim}-D int64 array, got {type(value).__name__}")
    if value.ndim != ndim or value.dtype != np.int64:
        raise TypeError(f"{name} must be a {ndim}-D int64 array, got a {value.ndim}-D {value.dtype} array")
    bad = np.flatnonzero((value < 0) | (value >= 2**32))
    if bad.size:
        at = np.unravel_index(int(bad[0]), value.shape)
        where = ", ".join(str(int(i)) for i in at)
        raise ValueError(f"{name}[{where}] must be an index in [0, 2**32), got {int(value[at])}")
    return value


def world_and_pairs(
    ref_logits: Any, weights: Any, gold_token: Any, count_once: Any, response_len: Any,
    prompts: Any, first: Any, second: Any, target: Any,
) -> tuple[WorldTables, WorldPairs, bool]:
    """The bindings' checks, in their order: the tables, the pairs' types and shapes, the
    world (:meth:`WorldTables.new`) and the pairs against it. ``weights=None`` scores with
    zeros; the bool says whether there was a reward model."""
    ref_logits = checks.float_array("ref_logits", ref_logits, 2)
    weights = None if weights is None else checks.float_array("weights", weights, 1)
    gold_token = checks.float_array("gold_token", gold_token, 2)
    count_once = checks.boolean("count_once", count_once)
    response_len = checks.int64("response_len", response_len)
    prompts = _index_array("prompts", prompts, 1)
    first = _index_array("first", first, 2)
    second = _index_array("second", second, 2)
    target = checks.float_array("target", target, 1)
    n = len(prompts)
    if first.shape[0] != n:
        raise ValueError(f"first must have {n} rows (one per pair), got {first.shape[0]}")
    if second.shape != first.shape:
        raise ValueError(
            f"second must have the shape of first, ({first.shape[0]}, {first.shape[1]}), "
            f"got ({second.shape[0]}, {second.shape[1]})"
        )
    if len(target) != n:
        raise ValueError(f"target must have {n} entries (one per pair), got {len(target)}")
    with_proxy = weights is not None
    if weights is None:
        weights = np.zeros(ref_logits.shape[1])
    world = WorldTables.new(ref_logits, weights, gold_token, count_once, response_len)
    pairs = WorldPairs(prompts.tolist(), first.tolist(), second.tolist(), target.tolist(), first.shape[1])
    pairs.check(world)
    return world, pairs, with_proxy


def _world_dpo_epochs(
    world: WorldTables,
    theta: list[list[float]],
    pairs: WorldPairs,
    epochs: int,
    params: DpoParams,
    shuffle_seed: list[int] | None,
    on_step: Callable[[int, int, int, DpoOutcome, Callable[[], WorldStats]], None],
    name: str,
) -> None:
    """``epochs`` passes of :func:`bag_dpo_update` over ``pairs`` (Rust's ``world_dpo_epochs``).

    Each epoch walks the pairs in order or, with ``shuffle_seed``, in the order of ``order =
    list(range(n)); rng.shuffle(order)`` on one ``random.Random(seed)``. After each step
    ``on_step(epoch, pair, prompt, outcome, means)`` sees it, ``means()`` giving the exact
    means after it. A step whose logits overflow, or whose record or means hold a float that
    is not finite, raises ``FloatingPointError`` that ``name`` begins.
    """
    rng = None if shuffle_seed is None else from_key(shuffle_seed)
    exact = ExactMeans(world)
    n = len(pairs.prompts)
    t = 0

    def diverged(key: str) -> FloatingPointError:
        return FloatingPointError(
            f"{name} diverged at step {t}: {key} overflowed (lr={params.lr!r}, beta={params.beta!r})"
        )

    def means() -> WorldStats:
        stats = exact.means(world, theta)
        if (key := checks.non_finite(MEAN_KEYS, stats)) is not None:
            raise diverged(key)
        return stats

    for epoch in range(epochs):
        order = list(range(n))
        if rng is not None:
            rng.shuffle(order)
        for i in order:
            x = pairs.prompts[i]
            first_is_chosen, smoothing = pair_label(pairs.target[i], params.label_smoothing)
            first, second = pairs.first[i], pairs.second[i]
            chosen, rejected = (first, second) if first_is_chosen else (second, first)
            logits = theta[x]
            out = bag_dpo_update(logits, world.ref_log_probs[x], chosen, rejected, smoothing, params)
            exact.changed(x)
            if checks.overflowed(logits):
                raise diverged("logits")
            if (key := checks.non_finite(STEP_KEYS, out)) is not None:
                raise diverged(key)
            on_step(epoch, i, x, out, means)
            t += 1


def train_world_dpo(
    world: WorldTables,
    theta: list[list[float]],
    pairs: WorldPairs,
    epochs: int,
    params: DpoParams,
    shuffle_seed: list[int] | None,
    name: str = "train_world_dpo",
) -> dict[str, list]:
    """``epochs`` passes of the bag DPO step over ``pairs`` in ``world``; updates ``theta`` in place.

    ``theta`` is one row of logits per prompt (a world's runs start at a copy of its
    ``ref_logits``). Returns the per-step history (``HISTORY_KEYS``): the pair visited, its
    prompt, the step's record (before the step) and the exact means over prompts after it
    (the proxy score is the world's weights', zeros without a reward model). A step whose
    logits overflow, or whose record (the step's, then the means) holds a float that is not
    finite, raises ``FloatingPointError`` naming the run (``name``), the step, ``lr`` and
    ``beta``; ``theta`` then holds the failing step's update.
    """
    pairs.check_labels_for(params.loss_type)
    history: dict[str, list] = {key: [] for key in HISTORY_KEYS}

    def record(epoch: int, i: int, x: int, out: DpoOutcome, means: Callable[[], WorldStats]) -> None:
        stats = means()
        history["pair"].append(i)
        history["prompt"].append(x)
        for key, value in zip(STEP_KEYS, out):
            history[key].append(value)
        for key, value in zip(MEAN_KEYS, stats):
            history[key].append(value)

    _world_dpo_epochs(world, theta, pairs, epochs, params, shuffle_seed, record, name)
    return history


class WorldDpoRun(NamedTuple):
    """One run of a world DPO sweep: its loss settings, its epochs and its shuffle stream
    (``None``: the pairs in order)."""

    params: DpoParams
    epochs: int
    shuffle_seed: list[int] | None


class WorldDpoEngine:
    """The world DPO sweep engine: every run from the world's reference, over the same pairs."""

    def __init__(self, world: WorldTables, pairs: WorldPairs, with_proxy: bool, record_every: int,
                 specs: Sequence[WorldDpoRun]):
        self.world = world
        self.pairs = pairs
        self.with_proxy = with_proxy
        self.history_fields = WORLD_DPO_HISTORY_FIELDS if with_proxy else WORLD_DPO_HISTORY_FIELDS_GOLD
        self.summary_fields = WORLD_DPO_SUMMARY_FIELDS if with_proxy else WORLD_DPO_SUMMARY_FIELDS[1:]
        self.record_every = record_every
        max_steps = longest_run_steps(specs, len(pairs.prompts),
                                      lambda spec: pairs.check_labels_for(spec.params.loss_type))
        self.kept = max_steps // record_every if record_every else 0
        self.param_shape: tuple[int, ...] = (world.n_prompts, world.vocab_size)

    def run(self, spec: WorldDpoRun, index: int) -> RunOutput:
        theta = [list(row) for row in self.world.ref_logits]
        every = self.record_every
        steps = spec.epochs * len(self.pairs.prompts)
        # The driver keeps steps every-1, 2 every-1, ...: only those are computed.
        history = {field: [math.nan] * steps if every else [] for field in self.history_fields}
        last_epoch: dict[str, list[float]] = {"loss": [], "accuracy": [], "margin": []}
        t = 0

        def on_step(epoch: int, i: int, x: int, out: DpoOutcome, means: Callable[[], WorldStats]) -> None:
            nonlocal t
            if epoch == spec.epochs - 1:
                last_epoch["loss"].append(out.loss)
                last_epoch["accuracy"].append(out.accuracy)
                last_epoch["margin"].append(out.margin)
            if every and (t + 1) % every == 0:
                stats = means()
                exact = tuple(stats) if self.with_proxy else tuple(stats)[1:]
                for field, value in zip(self.history_fields, (float(x), *out, *exact)):
                    history[field][t] = value
            t += 1

        _world_dpo_epochs(self.world, theta, self.pairs, spec.epochs, spec.params, spec.shuffle_seed, on_step,
                          f"sweep run {index}")
        final = ExactMeans(self.world).means(self.world, theta)
        summary = [*final, mean(last_epoch["loss"]), mean(last_epoch["accuracy"]), mean(last_epoch["margin"])]
        if not self.with_proxy:
            summary = summary[1:]
        check_summary(self.summary_fields, summary, index, spec.params.lr, spec.params.beta)
        return RunOutput(history, theta, summary)

    def work(self, spec: WorldDpoRun) -> int:
        return spec.epochs * len(self.pairs.prompts)


def sweep_world_dpo(
    ref_logits: Any,
    weights: Any,
    gold_token: Any,
    count_once: Any,
    response_len: Any,
    prompts: Any,
    first: Any,
    second: Any,
    target: Any,
    runs: Sequence[tuple],
    record_every: Any = 1,
    n_threads: int | None = None,
    progress: Callable[[int], None] | None = None,
    max_memory: int | None = None,
) -> dict[str, Any]:
    """Every DPO run of ``runs`` in the world of these tables over its labelled pairs.

    The tables are :func:`~rlhf_fast.reference.engines.world_ppo.sweep_world_rlhf`'s
    (``weights`` may be ``None``: no proxy score); the pairs are int64 ``prompts [n]``,
    ``first`` and ``second`` ``[n, L]`` and float64 ``target [n]``, the probability that
    ``first`` is preferred. A run is ``(beta, lr, loss_type, label_smoothing, epochs,
    seed_or_None)``: :func:`train_world_dpo` from a copy of ``ref_logits``, keeping every
    ``record_every``-th step (NaN past the end of a run shorter than the longest). Returns the
    sweep contract's dict (:func:`~.driver.sweep`); the summary holds the final policy's exact
    means and the last epoch's mean loss, accuracy and margin. ``n_threads`` chooses how Rust
    computes; the reference computes one way.
    """
    record_every = checks.int64("record_every", record_every)  # the core converts it with the runs
    world, pairs, with_proxy = world_and_pairs(ref_logits, weights, gold_token, count_once, response_len, prompts,
                                               first, second, target)
    record_every = checks.count("record_every", record_every, 0)
    specs = [
        WorldDpoRun(
            DpoParams.new(beta, lr, loss_type, label_smoothing),
            checks.count("epochs", epochs, 1),
            None if seed is None else seed_key(checks.integer("seed", seed)),
        )
        for beta, lr, loss_type, label_smoothing, epochs, seed in runs
    ]
    return sweep(WorldDpoEngine(world, pairs, with_proxy, record_every, specs), specs, max_memory, progress)
