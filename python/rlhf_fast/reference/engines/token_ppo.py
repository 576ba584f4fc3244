"""Twin of rust/engines/token_ppo.rs: PPO on token sequences as TRL runs it, a sweep of runs.

A run starts at the world's reference policy ``theta = ref_logits [P][L][V]`` with a zero
value head ``V [P][L]`` and owns its stream ``random.Random(seed)``. Each step:

1. rollouts with the old policy: ``batch_size`` responses, each to ``prompt = rng.choice(prompts)``
   (as the world engines draw), token by token ``a_t = sample_index(softmax(theta[p][t]),
   rng.random())`` until EOS (token 0) or ``max_len``;
2. per-token rewards, GAE and returns per response, advantages whitened over the batch's
   valid tokens (:mod:`~rlhf_fast.reference.methods.token_ppo`);
3. ``num_ppo_epochs`` epochs, each a fresh ``rng.shuffle`` of the batch (TRL's
   ``np.random.permutation``) cut into ``num_mini_batches`` minibatches, each one plain SGD step
   on ``loss = pg + vf_coef vf`` with learning rate ``lr`` (the lesson's optimiser; TRL uses
   AdamW) on ``theta`` and ``V``.

The step's history is TRL's metrics ('/' written '_'), the batch's mean content length and
its mean gold, and the exact expected proxy score, gold, KL and content length of the policy
after the step (kept steps only); a run's summary is the exact statistics of its final policy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from ... import _checks as checks
from ..kernels.sampling import sample_index
from ..kernels.softmax import log_softmax_row, softmax_row
from ..methods.token_ppo import (
    EOS,
    KL_ESTIMATORS,
    Rollouts,
    TokenPpoParams,
    TokenWorld,
    gae,
    masked_whiten,
    minibatch_loss_and_grads,
    per_token_kl,
    per_token_rewards,
    shaped_score,
)
from ..rng import from_key, seed_key
from .driver import RunOutput, check_summary, sweep
from .sequence_common import sweep_batch_run

TOKEN_PPO_HISTORY_FIELDS = (
    "objective_kl",
    "objective_entropy",
    "objective_non_score_reward",
    "objective_rlhf_reward",
    "objective_scores",
    "policy_approxkl_avg",
    "policy_clipfrac_avg",
    "loss_policy_avg",
    "loss_value_avg",
    "val_clipfrac_avg",
    "policy_entropy_avg",
    "val_ratio",
    "val_ratio_var",
    "val_num_eos_tokens",
    "mean_length",
    "gold_score",
    "expected_proxy_score",
    "expected_gold_score",
    "expected_kl",
    "expected_length",
)
TOKEN_PPO_SUMMARY_FIELDS = ("final_proxy_score", "final_gold_score", "final_kl", "final_length")
MAX_BATCH_SIZE = 1 << 20
MAX_PPO_EPOCHS = 1 << 10


def _mean(values: Sequence[float]) -> float:
    total = 0.0
    for v in values:
        total += v
    return total / len(values)


def _unbiased_var(values: Sequence[float]) -> float:
    """torch's ``.var()`` of the per-minibatch ratios; 0 for a single one (torch: NaN)."""
    if len(values) < 2:
        return 0.0
    mean = _mean(values)
    squares = 0.0
    for v in values:
        squares += (v - mean) * (v - mean)
    return squares / (len(values) - 1)


class TokenPpoRun:
    """One run's state on its stream: the policy, the value head, the step."""

    def __init__(self, world: TokenWorld, theta: list, kl_coef: float, lr: float, params: TokenPpoParams,
                 batch_size: int, seed_key: list[int]):
        self.world = world
        self.theta = theta
        self.values = [[0.0] * world.max_len for _ in range(world.n_prompts)]
        self.kl_coef = kl_coef
        self.lr = lr
        self.params = params
        self.batch_size = batch_size
        self.rng = from_key(seed_key)
        self.prompts = range(world.n_prompts)

    def _diverged(self, name: str, t: int, key: str) -> FloatingPointError:
        return FloatingPointError(
            f"{name} diverged at step {t}: {key} overflowed (lr={self.lr!r}, kl_coef={self.kl_coef!r})"
        )

    def rollout(self) -> tuple[int, list[int]]:
        """One response with the current policy: its prompt and tokens (EOS included)."""
        rng = self.rng
        p = rng.choice(self.prompts)
        tokens = []
        for t in range(self.world.max_len):
            a = sample_index(softmax_row(self.theta[p][t]), rng.random())
            tokens.append(a)
            if a == EOS:
                break
        return p, tokens

    def step(self, t: int, name: str) -> list[float]:
        """Step ``t``; returns its history record (``TOKEN_PPO_HISTORY_FIELDS``' order)."""
        world, params, kl_coef = self.world, self.params, self.kl_coef
        prompts, tokens, old_logp, old_values, raw_advantages, returns = [], [], [], [], [], []
        kl_sum = entropy_sum = non_score_sum = score_sum = length_sum = gold_sum = 0.0
        n_eos = 0
        for _ in range(self.batch_size):
            p, response = self.rollout()
            logp = [log_softmax_row(self.theta[p][i])[a] for i, a in enumerate(response)]
            ref_logp = [world.ref_logp[p][i][a] for i, a in enumerate(response)]
            values = [self.values[p][i] for i in range(len(response))]
            has_eos = response[-1] == EOS
            n_content = len(response) - has_eos
            score = shaped_score(world.rm_score(p, response), n_content, has_eos, params)
            kl = per_token_kl(logp, ref_logp, params.kl_estimator)
            rewards = per_token_rewards(kl, score, kl_coef)
            score_sum += world.add_step_rewards(p, response, rewards)
            advantages, rets = gae(rewards, values, params.gamma, params.lam)
            prompts.append(p)
            tokens.append(response)
            old_logp.append(logp)
            old_values.append(values)
            raw_advantages.append(advantages)
            returns.append(rets)
            response_kl = response_entropy = non_score = 0.0
            for k, lp in zip(kl, logp):
                response_kl += k
                response_entropy -= lp
                non_score += -kl_coef * k
            kl_sum += response_kl
            entropy_sum += response_entropy
            non_score_sum += non_score
            score_sum += score
            length_sum += n_content
            gold_sum += world.gold(p, response)
            n_eos += has_eos
        whitened = masked_whiten([a for advantages in raw_advantages for a in advantages])
        advantages, start = [], 0
        for response in tokens:
            advantages.append(whitened[start : start + len(response)])
            start += len(response)
        rollouts = Rollouts(prompts, tokens, old_logp, old_values, advantages, returns)

        stats: dict[str, list[float]] = {key: [] for key in ("approxkl", "pg_clipfrac", "pg_loss", "vf_loss",
                                                             "vf_clipfrac", "entropy", "ratio")}
        size = self.batch_size // params.num_mini_batches
        for _ in range(params.num_ppo_epochs):
            order = list(range(self.batch_size))  # a fresh permutation per epoch, as TRL's
            self.rng.shuffle(order)
            for m in range(params.num_mini_batches):
                out = minibatch_loss_and_grads(self.theta, self.values, rollouts, order[m * size : (m + 1) * size],
                                               world.max_len, params)
                for rows, grads in zip(self.theta, out.grad_theta):
                    for row, grad in zip(rows, grads):
                        for v, g in enumerate(grad):
                            row[v] -= self.lr * g
                for row, grad in zip(self.values, out.grad_values):
                    for i, g in enumerate(grad):
                        row[i] -= self.lr * g
                for key, value in (("approxkl", out.approxkl), ("pg_clipfrac", out.pg_clipfrac),
                                   ("pg_loss", out.pg_loss), ("vf_loss", out.vf_loss),
                                   ("vf_clipfrac", out.vf_clipfrac), ("entropy", out.entropy_mean),
                                   ("ratio", out.ratio_mean)):
                    stats[key].append(value)
        if any(checks.overflowed(row) for rows in self.theta for row in rows):
            raise self._diverged(name, t, "logits")
        if any(checks.overflowed(row) for row in self.values):
            raise self._diverged(name, t, "values")
        b = self.batch_size
        record = [
            kl_sum / b,
            entropy_sum / b,
            non_score_sum / b,
            non_score_sum / b + score_sum / b,
            score_sum / b,
            _mean(stats["approxkl"]),
            _mean(stats["pg_clipfrac"]),
            _mean(stats["pg_loss"]),
            _mean(stats["vf_loss"]),
            _mean(stats["vf_clipfrac"]),
            _mean(stats["entropy"]),
            _mean(stats["ratio"]),
            _unbiased_var(stats["ratio"]),
            float(n_eos),
            length_sum / b,
            gold_sum / b,
        ]
        if (key := checks.non_finite(TOKEN_PPO_HISTORY_FIELDS, record)) is not None:
            raise self._diverged(name, t, key)
        return record


class TokenPpoSpec(NamedTuple):
    """One run of a token PPO sweep: its stream and its own settings."""

    seed_key: list[int]
    kl_coef: float
    lr: float


class TokenPpoEngine:
    """The token PPO sweep engine: every run from the world's reference policy."""

    history_fields: tuple[str, ...] = TOKEN_PPO_HISTORY_FIELDS
    summary_fields: tuple[str, ...] = TOKEN_PPO_SUMMARY_FIELDS

    def __init__(self, world: TokenWorld, steps: int, batch_size: int, params: TokenPpoParams, record_every: int):
        self.world = world
        self.steps = steps
        self.batch_size = batch_size
        self.params = params
        self.record_every = record_every
        self.kept = steps // record_every if record_every else 0
        self.param_shape: tuple[int, ...] = (world.n_prompts, world.max_len, world.vocab_size)

    def run(self, spec: TokenPpoSpec, index: int) -> RunOutput:
        theta = [[list(row) for row in rows] for rows in self.world.ref_logits]
        run = TokenPpoRun(self.world, theta, spec.kl_coef, spec.lr, self.params, self.batch_size, spec.seed_key)
        history, summary = sweep_batch_run(self.world, run, theta, self.steps, self.record_every,
                                           self.history_fields, f"sweep run {index}")
        check_summary(self.summary_fields, summary, index, spec.lr, spec.kl_coef)
        return RunOutput(history, theta, summary)

    def work(self, spec: TokenPpoSpec) -> int:
        return self.steps


def token_ppo_params(gamma: Any, lam: Any, cliprange: Any, cliprange_value: Any, vf_coef: Any, kl_estimator: Any,
                     num_ppo_epochs: Any, num_mini_batches: Any, missing_eos_penalty: Any, length_normalize: Any,
                     length_penalty: Any, batch_size: int) -> TokenPpoParams:
    """The engine's settings, each checked and named (Rust's ``TokenPpoParams::new``)."""
    gamma = checks.finite("gamma", gamma)
    lam = checks.finite("lam", lam)
    for name, value in (("gamma", gamma), ("lam", lam)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    num_mini_batches = checks.count("num_mini_batches", num_mini_batches, 1)
    if batch_size % num_mini_batches:
        raise ValueError(f"num_mini_batches must divide batch_size={batch_size}, got {num_mini_batches}")
    if batch_size // num_mini_batches < 2:
        raise ValueError(
            f"batch_size / num_mini_batches must be >= 2 (whitening needs two tokens), got {batch_size} / {num_mini_batches}"
        )
    return TokenPpoParams(
        gamma=gamma,
        lam=lam,
        cliprange=checks.positive("cliprange", cliprange),
        cliprange_value=checks.positive("cliprange_value", cliprange_value),
        vf_coef=checks.non_negative("vf_coef", vf_coef),
        kl_estimator=checks.option("kl_estimator", kl_estimator, KL_ESTIMATORS),
        num_ppo_epochs=checks.count("num_ppo_epochs", num_ppo_epochs, 1, MAX_PPO_EPOCHS),
        num_mini_batches=num_mini_batches,
        missing_eos_penalty=0.0 if missing_eos_penalty is None else checks.finite("missing_eos_penalty",
                                                                                   missing_eos_penalty),
        length_normalize=checks.boolean("length_normalize", length_normalize),
        length_penalty=checks.non_negative("length_penalty", length_penalty),
    )


def sweep_token_ppo(
    ref_logits: Any,
    w: Any,
    bias: Any,
    w_len: Any,
    g: Any,
    offset: Any,
    count_once: Any,
    steps: Any,
    runs: Sequence[tuple],
    batch_size: Any = 64,
    gamma: Any = 1.0,
    lam: Any = 0.95,
    cliprange: Any = 0.2,
    cliprange_value: Any = 0.2,
    vf_coef: Any = 0.1,
    kl_estimator: Any = "k1",
    num_ppo_epochs: Any = 4,
    num_mini_batches: Any = 1,
    missing_eos_penalty: Any = None,
    length_normalize: Any = False,
    length_penalty: Any = 0.0,
    record_every: Any = 1,
    n_threads: int | None = None,
    progress: Callable[[int], None] | None = None,
    max_memory: int | None = None,
    step_rewards: Any = None,
    outcome_factors: Any = None,
) -> dict[str, Any]:
    """Every token PPO run of ``runs`` (``(seed, kl_coef, lr)`` each) in the sequence world of
    these arrays (``ref_logits [P, L, V]``, ``w [V]``, ``bias [P]``, ``g [V]``, ``offset [P]``
    float64; ``w_len`` a float, ``count_once`` a bool), from its reference policy. Returns the
    sweep contract's dict (:func:`~.driver.sweep`); ``n_threads`` is Rust's (ignored here).
    ``step_rewards`` and ``outcome_factors`` (``[P, L, V]`` or None) are the world's process
    rewards (:meth:`TokenWorld.with_process_rewards`)."""
    ref_logits = checks.float_array("ref_logits", ref_logits, 3)
    w = checks.float_array("w", w, 1)
    bias = checks.float_array("bias", bias, 1)
    w_len = checks.real("w_len", w_len)
    g = checks.float_array("g", g, 1)
    offset = checks.float_array("offset", offset, 1)
    count_once = checks.boolean("count_once", count_once)
    steps = checks.count("steps", steps, 1)
    batch_size = checks.count("batch_size", batch_size, 2, MAX_BATCH_SIZE)
    params = token_ppo_params(gamma, lam, cliprange, cliprange_value, vf_coef, kl_estimator, num_ppo_epochs,
                              num_mini_batches, missing_eos_penalty, length_normalize, length_penalty, batch_size)
    record_every = checks.count("record_every", record_every, 0)
    if step_rewards is not None:
        step_rewards = checks.float_array("step_rewards", step_rewards, 3)
    if outcome_factors is not None:
        outcome_factors = checks.float_array("outcome_factors", outcome_factors, 3)
    world = TokenWorld.new(ref_logits, w, bias, w_len, g, offset, count_once).with_process_rewards(step_rewards,
                                                                                                  outcome_factors)
    specs = [
        TokenPpoSpec(seed_key(checks.integer("seed", seed)), checks.non_negative("kl_coef", kl_coef),
                     checks.positive("lr", lr))
        for seed, kl_coef, lr in runs
    ]
    return sweep(TokenPpoEngine(world, steps, batch_size, params, record_every), specs, max_memory, progress)
