"""Twin of rust/engines/verifier_grpo.rs: GRPO on token sequences with a per-sequence reward
(the world's score: its linear reward model plus the product of its outcome factors, a verifier's
with 0/1 factors), a sweep of runs ``(seed, beta, lr)``.

Each step, ``prompts_per_step`` times: ``p = rng.choice(prompts)``, then ``num_generations``
completions of ``p`` sampled token by token as the token PPO engine samples; the group-relative
advantages; then ``num_iterations`` plain SGD steps on TRL's per-token loss over the batch.
"""

from __future__ import annotations


from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from ... import _checks as checks
from ...reference.methods.grpo import SCALE_REWARDS
from ..kernels.sampling import sample_index
from ..kernels.softmax import log_softmax_row, softmax_row
from ..methods.token_ppo import EOS, TokenWorld
from ..methods.verifier_grpo import group_advantages, grpo_token_term
from ..rng import from_key, seed_key
from .driver import RunOutput, check_summary, sweep
from .sequence_common import sweep_batch_run

# The batch's statistics (TRL's names), then the exact expectations of the step's policy (only
# for the steps kept: they cost a pass over the policy).
VERIFIER_GRPO_HISTORY_FIELDS = ("reward", "reward_std", "frac_reward_zero_std", "kl", "clip_ratio", "loss",
                                "mean_length", "expected_proxy_score", "expected_gold_score", "expected_kl",
                                "expected_length")
VERIFIER_GRPO_SUMMARY_FIELDS = ("final_proxy_score", "final_gold_score", "final_kl", "final_length")
MAX_GRPO_BATCH = 1 << 20


class VerifierGrpoParams(NamedTuple):
    """What every run shares besides ``beta`` and ``lr`` (TRL's names)."""

    num_generations: int
    prompts_per_step: int
    epsilon: float
    epsilon_high: float
    scale_rewards: str
    num_iterations: int


class VerifierGrpoSpec(NamedTuple):
    """One run: its stream, ``beta`` and ``lr``."""

    seed_key: list[int]
    beta: float
    lr: float


class VerifierGrpoRun:
    """One run's state on its stream."""

    def __init__(self, world: TokenWorld, theta: list, spec: VerifierGrpoSpec, params: VerifierGrpoParams):
        self.world = world
        self.theta = theta
        self.params = params
        self.beta = spec.beta
        self.lr = spec.lr
        self.rng = from_key(spec.seed_key)
        self.prompts = range(world.n_prompts)

    def _diverged(self, name: str, t: int, key: str) -> FloatingPointError:
        return FloatingPointError(f"{name} diverged at step {t}: {key} overflowed (lr={self.lr!r}, beta={self.beta!r})")

    def rollout(self, p: int) -> tuple[list[int], list[float], list[float]]:
        """One completion of prompt ``p``: its tokens, old and reference log-probabilities."""
        world = self.world
        tokens, old_logp, ref_logp = [], [], []
        for t in range(world.max_len):
            row = self.theta[p][t]
            a = sample_index(softmax_row(row), self.rng.random())
            tokens.append(a)
            old_logp.append(log_softmax_row(row)[a])
            ref_logp.append(world.ref_logp[p][t][a])
            if a == EOS:
                break
        return tokens, old_logp, ref_logp

    def step(self, t: int, name: str) -> list[float]:
        """Step ``t``; its record in ``VERIFIER_GRPO_HISTORY_FIELDS``' order."""
        world, params = self.world, self.params
        g = params.num_generations
        batch: list[tuple[int, list[int], list[float], list[float], float]] = []
        reward_sum = std_sum = 0.0
        zero_std = 0
        for _ in range(params.prompts_per_step):
            p = self.rng.choice(self.prompts)
            group = [self.rollout(p) for _ in range(g)]
            rewards = [world.rm_score(p, tokens) for tokens, _, _ in group]
            advantages, mean, std = group_advantages(rewards, params.scale_rewards == "group")
            reward_sum += mean
            std_sum += std
            zero_std += std == 0.0
            batch.extend((p, tokens, old, ref, adv) for (tokens, old, ref), adv in zip(group, advantages))
        kl_sum = 0.0
        n_tokens = length_sum = 0
        for _, tokens, old, ref, _ in batch:
            response_kl = 0.0
            for lo, lr_ in zip(old, ref):
                response_kl += lo - lr_
            kl_sum += response_kl
            n_tokens += len(tokens)
            length_sum += len(tokens) - (tokens[-1] == EOS)
        loss = 0.0
        clipped = 0
        for iteration in range(params.num_iterations):
            grads: dict[tuple[int, int], list[float]] = {}
            loss_sum = 0.0
            for p, tokens, old, ref, adv in batch:
                for i, a in enumerate(tokens):
                    row = self.theta[p][i]
                    probs = softmax_row(row)
                    logp = log_softmax_row(row)
                    term, slope, flat = grpo_token_term(adv, logp[a], old[i], ref[i], params.epsilon,
                                                        params.epsilon_high, self.beta)
                    loss_sum += term
                    clipped += flat
                    coef = slope / n_tokens
                    grad = grads.setdefault((p, i), [0.0] * world.vocab_size)
                    for u, pu in enumerate(probs):
                        grad[u] += coef * ((1.0 if u == a else 0.0) - pu)
            if iteration == 0:
                loss = loss_sum / n_tokens
            for (p, i), grad in grads.items():
                row = self.theta[p][i]
                for u, gr in enumerate(grad):
                    row[u] -= self.lr * gr
        if any(checks.overflowed(row) for rows in self.theta for row in rows):
            raise self._diverged(name, t, "logits")
        groups, b = params.prompts_per_step, len(batch)
        record = [reward_sum / groups, std_sum / groups, zero_std / groups, kl_sum / b,
                  clipped / (n_tokens * params.num_iterations), loss, length_sum / b]
        if (key := checks.non_finite(VERIFIER_GRPO_HISTORY_FIELDS, record)) is not None:
            raise self._diverged(name, t, key)
        return record


class VerifierGrpoEngine:
    """The sweep engine: every run from the world's reference policy."""

    history_fields: tuple[str, ...] = VERIFIER_GRPO_HISTORY_FIELDS
    summary_fields: tuple[str, ...] = VERIFIER_GRPO_SUMMARY_FIELDS

    def __init__(self, world: TokenWorld, steps: int, params: VerifierGrpoParams, record_every: int):
        self.world = world
        self.steps = steps
        self.params = params
        self.record_every = record_every
        self.kept = steps // record_every if record_every else 0
        self.param_shape: tuple[int, ...] = (world.n_prompts, world.max_len, world.vocab_size)

    def run(self, spec: VerifierGrpoSpec, index: int) -> RunOutput:
        theta = [[list(row) for row in rows] for rows in self.world.ref_logits]
        run = VerifierGrpoRun(self.world, theta, spec, self.params)
        history, summary = sweep_batch_run(self.world, run, theta, self.steps, self.record_every,
                                           self.history_fields, f"sweep run {index}")
        check_summary(self.summary_fields, summary, index, spec.lr, spec.beta)
        return RunOutput(history, theta, summary)

    def work(self, spec: VerifierGrpoSpec) -> int:
        return self.steps


def sweep_verifier_grpo(
    ref_logits: Any,
    w: Any,
    bias: Any,
    w_len: Any,
    g: Any,
    offset: Any,
    count_once: Any,
    steps: Any,
    runs: Sequence[tuple],
    num_generations: Any = 8,
    prompts_per_step: Any = 4,
    epsilon: Any = 0.2,
    epsilon_high: Any = None,
    scale_rewards: Any = "group",
    num_iterations: Any = 1,
    outcome_factors: Any = None,
    record_every: Any = 1,
    n_threads: int | None = None,
    progress: Callable[[int], None] | None = None,
    max_memory: int | None = None,
) -> dict[str, Any]:
    """Every GRPO run of ``runs`` (``(seed, beta, lr)`` each) in the sequence world of these
    arrays (``sweep_token_ppo``'s), from its reference policy; a completion's reward is its
    score in that world, plus the product of ``outcome_factors [P, L, V]`` if given. Returns the
    sweep contract's dict; ``n_threads`` is Rust's (ignored here)."""
    ref_logits = checks.float_array("ref_logits", ref_logits, 3)
    w = checks.float_array("w", w, 1)
    bias = checks.float_array("bias", bias, 1)
    w_len = checks.real("w_len", w_len)
    g = checks.float_array("g", g, 1)
    offset = checks.float_array("offset", offset, 1)
    count_once = checks.boolean("count_once", count_once)
    steps = checks.count("steps", steps, 1)
    num_generations = checks.count("num_generations", num_generations, 2)
    prompts_per_step = checks.count("prompts_per_step", prompts_per_step, 1)
    epsilon = checks.real("epsilon", epsilon)
    epsilon_high = epsilon if epsilon_high is None else checks.real("epsilon_high", epsilon_high)
    scale_rewards = checks.option("scale_rewards", scale_rewards, SCALE_REWARDS)
    num_iterations = checks.count("num_iterations", num_iterations, 1)
    record_every = checks.count("record_every", record_every, 0)
    if outcome_factors is not None:
        outcome_factors = checks.float_array("outcome_factors", outcome_factors, 3)
    world = TokenWorld.new(ref_logits, w, bias, w_len, g, offset, count_once).with_process_rewards(None,
                                                                                                  outcome_factors)
    specs = [VerifierGrpoSpec(seed_key(checks.integer("seed", seed)), checks.non_negative("beta", beta),
                              checks.positive("lr", lr)) for seed, beta, lr in runs]
    if num_generations * prompts_per_step > MAX_GRPO_BATCH:
        raise ValueError(f"num_generations * prompts_per_step must be <= {MAX_GRPO_BATCH}, "
                         f"got {num_generations} * {prompts_per_step}")
    if not 1 <= num_iterations <= 1024:
        raise ValueError(f"num_iterations must be in [1, 1024], got {num_iterations}")
    params = VerifierGrpoParams(num_generations, prompts_per_step, checks.positive("epsilon", epsilon),
                                checks.positive("epsilon_high", epsilon_high), scale_rewards, num_iterations)
    return sweep(VerifierGrpoEngine(world, steps, params, record_every), specs, max_memory, progress)
