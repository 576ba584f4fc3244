"""Type stubs for the Rust core. The public API is ``rlhf_fast``; these are its building blocks."""

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeAlias, TypedDict, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "PreferenceSet",
    "bag",
    "bag_grpo_step",
    "bag_rlhf_step",
    "bag_score",
    "best_of_n",
    "check_not_length_only",
    "clipped_surrogate",
    "clipped_surrogate_grad",
    "dot",
    "dpo_step_metrics",
    "expected_score",
    "fit_gao",
    "grpo_step",
    "judge_labels",
    "judge_token_values",
    "kl",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "labeller_labels",
    "log_softmax",
    "log_softmax_rows",
    "make_dataset",
    "pairwise_accuracy",
    "policy_kl",
    "rlhf_step",
    "rm_train_step",
    "sample",
    "seed_key",
    "sigmoid",
    "simd_paths",
    "softmax",
    "softmax_rows",
    "sweep_best_of_n",
    "sweep_dpo",
    "sweep_grpo",
    "sweep_rlhf",
    "sweep_rm",
    "sweep_world_dpo",
    "sweep_world_grpo",
    "sweep_world_rlhf",
    "sweep_safe_world_rlhf",
    "sweep_world_best_of_n",
    "train_dpo",
    "train_grpo",
    "train_reward_model",
    "train_rlhf",
    "train_rm",
    "train_world_dpo",
    "train_world_grpo",
    "rows_kl",
    "rows_log_softmax",
    "rows_ppo_batch_step",
    "rows_ppo_grad",
    "rows_sample",
    "rows_softmax",
    "rows_stream_add",
    "rows_stream_sum",
    "train_reward_model_rows",
    "sequence_stats",
    "distill_reward_model",
    "train_world_rlhf",
    "world_expectations",
    "world_frontier",
    "world_tables",
    "sweep_token_ppo",
    "token_ppo_batch_terms",
    "sweep_sequence_dpo",
    "sweep_sequence_best_of_n",
    "prm_loss_and_grad",
    "train_process_reward_model",
    "sweep_verifier_grpo",
]

_Policy: TypeAlias = Mapping[str, Sequence[float]] | npt.NDArray[np.float64]
_Weights: TypeAlias = Mapping[str, float]
_Response: TypeAlias = str | Sequence[str]
_Pair: TypeAlias = tuple[str, _Response, _Response] | Mapping[str, _Response]
_Progress: TypeAlias = Callable[[int], object] | None

class _Rng(Protocol):
    def random(self) -> float: ...

@final
class PreferenceSet:
    """Pairs tokenised once: bags of token ids; ``train_rm`` and friends take it as is."""

    def __new__(cls, pairs: Iterable[_Pair]) -> PreferenceSet: ...
    @staticmethod
    def make_dataset(n: int, seed: int = 0) -> PreferenceSet: ...
    def __len__(self) -> int: ...
    @property
    def vocab(self) -> list[str]: ...
    def to_pairs(self) -> list[tuple[str, str, str]]: ...

def make_dataset(n: int, seed: int = 0) -> list[tuple[str, str, str]]: ...
def seed_key(seed: int) -> list[int]: ...
def bag(y: _Response) -> dict[str, int]: ...
def dot(w: _Weights, b: Mapping[str, float]) -> float: ...
def sigmoid(z: float) -> float: ...
def rm_train_step(w: dict[str, float], x: str, y_pos: _Response, y_neg: _Response, lr: float) -> float: ...
def train_rm(
    pairs: PreferenceSet | Iterable[_Pair], epochs: int = 5, lr: float = 0.1, w: dict[str, float] | None = None
) -> dict[str, float]: ...
def pairwise_accuracy(w: _Weights, pairs: PreferenceSet | Iterable[_Pair]) -> float: ...
def softmax(z: Sequence[float]) -> list[float]: ...
def log_softmax(z: Sequence[float]) -> list[float]: ...
def softmax_rows(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]: ...
def log_softmax_rows(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]: ...
def kl(p: Sequence[float], q: Sequence[float]) -> float: ...
def kl_k1(logp: float, logq: float) -> float: ...
def kl_k2(logp: float, logq: float) -> float: ...
def kl_k3(logp: float, logq: float) -> float: ...
def sample(probs: Sequence[float], rng: _Rng) -> int: ...
def clipped_surrogate(logits: Sequence[float], a: int, p_old_a: float, advantage: float, eps: float) -> float: ...
def clipped_surrogate_grad(
    logits: Sequence[float], a: int, p_old_a: float, advantage: float, eps: float
) -> list[float]: ...
def rlhf_step(
    theta: _Policy,
    ref: _Policy,
    w: _Weights,
    prompt: str,
    rng: _Rng,
    eps: float = 0.2,
    beta: float = 0.1,
    lr: float = 0.05,
    ppo_epochs: int = 4,
    kl_penalty: str = "full",
    vf_coef: float = 0.0,
    cliprange_value: float = 0.2,
    value: dict[str, float] | list[float] | None = None,
) -> dict[str, float]: ...
def train_rlhf(
    theta: _Policy,
    ref: _Policy,
    w: _Weights,
    steps: int,
    seed: int,
    eps: float,
    beta: float,
    lr: float,
    ppo_epochs: int,
    kl_ctl: str,
    target: float,
    horizon: float,
    kl_penalty: str = "full",
    vf_coef: float = 0.0,
    cliprange_value: float = 0.2,
    value: dict[str, float] | list[float] | None = None,
    kl_threshold: float = ...,
) -> dict[str, npt.NDArray[Any]]: ...
def expected_score(theta: _Policy, w: _Weights) -> float: ...
def policy_kl(theta: _Policy, ref: _Policy) -> float: ...
def dpo_step_metrics(
    theta: _Policy,
    ref: _Policy,
    x: str,
    y_pos: _Response,
    y_neg: _Response,
    beta: float = 0.1,
    lr: float = 0.05,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> dict[str, float]: ...
def train_dpo(
    theta: _Policy,
    ref: _Policy,
    pairs: Iterable[_Pair],
    epochs: int = 1,
    beta: float = 0.1,
    lr: float = 0.05,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    seed: int | None = None,
) -> dict[str, npt.NDArray[Any]]: ...
def grpo_step(
    theta: _Policy,
    ref: _Policy,
    w: _Weights,
    prompt: str,
    rng: _Rng,
    num_generations: int = 8,
    beta: float = 0.04,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    lr: float = 0.05,
    scale_rewards: str = "group",
    num_iterations: int = 1,
) -> _SweepOutput: ...
def train_grpo(
    theta: _Policy,
    ref: _Policy,
    w: _Weights,
    steps: int,
    seed: int,
    num_generations: int = 8,
    beta: float = 0.04,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    lr: float = 0.05,
    scale_rewards: str = "group",
    num_iterations: int = 1,
    kl_threshold: float = ...,
) -> dict[str, npt.NDArray[Any]]: ...
def best_of_n(policy: _Policy, w: _Weights, n: int, samples: int = 0, seed: int = 0) -> dict[str, Any]: ...
def check_not_length_only(w: _Weights) -> None: ...
def simd_paths() -> list[str]: ...
class _SweepOutput(TypedDict):
    """What every sweep entry point returns: the one output of the sweep driver."""

    history: npt.NDArray[np.float64]  # [run, field, kept]
    history_fields: list[str]
    final_params: npt.NDArray[np.float64]  # [run, *params]
    summary: npt.NDArray[np.float64]  # [run, field]
    summary_fields: list[str]  # only what the sweep computes: no final_score without w, ...
    simd: str

class _RMSweepOutput(_SweepOutput):
    vocab: list[str]

def sweep_rlhf(
    theta: _Policy,
    ref: _Policy,
    w: _Weights,
    steps: int,
    runs: Sequence[tuple[int, float, float, int, str, float, float, float, str, float, float]],
    record_every: int = 1,
    exact: bool = False,
    simd: str | None = None,
    n_threads: int | None = None,
    progress: _Progress = None,
    max_memory: int | None = None,
) -> _SweepOutput: ...
def sweep_rm(
    pairs: PreferenceSet | Iterable[_Pair],
    specs: Sequence[tuple[float, int, int, int]],
    w: _Weights | None = None,
    n_threads: int | None = None,
    progress: _Progress = None,
    max_memory: int | None = None,
) -> _RMSweepOutput: ...
def sweep_dpo(
    theta: _Policy,
    ref: _Policy,
    pairs: Iterable[_Pair],
    runs: Sequence[tuple[float, float, str, float, int, int | None]],
    w: _Weights | None = None,
    record_every: int = 1,
    n_threads: int | None = None,
    progress: _Progress = None,
    max_memory: int | None = None,
) -> _SweepOutput: ...
def sweep_grpo(
    theta: _Policy,
    ref: _Policy,
    w: _Weights,
    steps: int,
    runs: Sequence[tuple[int, int, float, float, float | None, float, str, int]],
    record_every: int = 1,
    n_threads: int | None = None,
    progress: _Progress = None,
    max_memory: int | None = None,
) -> _SweepOutput: ...
def sweep_best_of_n(
    policy: _Policy,
    w: _Weights,
    runs: Sequence[tuple[int, int, int]],
    n_threads: int | None = None,
    progress: _Progress = None,
    max_memory: int | None = None,
) -> _SweepOutput: ...

# Large-vocabulary rows (rust/python/rows.rs); the documented front end is rlhf_fast.rows.
def rows_softmax(logits: npt.NDArray[np.float64], *, n_threads: int | None = None) -> npt.NDArray[np.float64]: ...
def rows_log_softmax(logits: npt.NDArray[np.float64], *, n_threads: int | None = None) -> npt.NDArray[np.float64]: ...
def rows_kl(
    logits: npt.NDArray[np.float64],
    ref_logits: npt.NDArray[np.float64],
    *,
    ref_normalized: bool = False,
    n_threads: int | None = None,
) -> npt.NDArray[np.float64]: ...
def rows_sample(
    logits: npt.NDArray[np.float64], u: npt.NDArray[np.float64], *, n_threads: int | None = None
) -> npt.NDArray[np.int64]: ...
def rows_ppo_grad(
    logits: npt.NDArray[np.float64],
    tokens: npt.NDArray[np.int64],
    p_old: npt.NDArray[np.float64],
    advantages: npt.NDArray[np.float64],
    eps: float = 0.2,
    *,
    n_threads: int | None = None,
) -> npt.NDArray[np.float64]: ...
def rows_ppo_batch_step(
    logits: npt.NDArray[np.float64],
    ref_logits: npt.NDArray[np.float64],
    u: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    beta: float = 0.1,
    out: npt.NDArray[np.float64] | None = None,
    *,
    ref_normalized: bool = False,
    n_threads: int | None = None,
) -> tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
]: ...
def rows_stream_sum(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], *, n_threads: int | None = None) -> float: ...
def rows_stream_add(
    a: npt.NDArray[np.float64],
    b: npt.NDArray[np.float64],
    out: npt.NDArray[np.float64],
    *,
    n_threads: int | None = None,
) -> bool: ...
def bag_rlhf_step(
    logits: Sequence[float],
    ref_log_probs: Sequence[float],
    weights: Sequence[float],
    uniforms: Sequence[float],
    beta: float,
    eps: float = 0.2,
    lr: float = 0.05,
    ppo_epochs: int = 4,
    kl_penalty: str = "k1",
    vf_coef: float = 0.0,
    cliprange_value: float = 0.2,
    value: float = 0.0,
) -> _SweepOutput: ...
def train_world_rlhf(
    ref_logits: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    gold_token: npt.NDArray[np.float64],
    count_once: bool,
    response_len: int,
    steps: int,
    seed: int,
    eps: float = 0.2,
    lr: float = 0.05,
    ppo_epochs: int = 4,
    beta: float = 0.1,
    kl_penalty: str = "k1",
    vf_coef: float = 0.0,
    cliprange_value: float = 0.2,
) -> tuple[dict[str, npt.NDArray[Any]], npt.NDArray[np.float64]]: ...
def sweep_world_rlhf(
    ref_logits: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    gold_token: npt.NDArray[np.float64],
    count_once: bool,
    response_len: int,
    steps: int,
    runs: Sequence[tuple[int, float, float, int, float, str, float, float]],
    record_every: int = 1,
    exact: bool = False,
    n_threads: int | None = None,
    progress: _Progress = None,
    max_memory: int | None = None,
) -> _SweepOutput: ...
def sweep_world_best_of_n(
    ref_logits: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    gold_token: npt.NDArray[np.float64],
    count_once: bool,
    response_len: int,
    runs: Sequence[tuple[int, int, int]],
    n_threads: int | None = None,
    progress: _Progress = None,
    max_memory: int | None = None,
) -> _SweepOutput: ...
def train_world_dpo(
    ref_logits: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64] | None,
    gold_token: npt.NDArray[np.float64],
    count_once: bool,
    response_len: int,
    prompts: npt.NDArray[np.int64],
    first: npt.NDArray[np.int64],
    second: npt.NDArray[np.int64],
    target: npt.NDArray[np.float64],
    epochs: int,
    seed: int | None = None,
    beta: float = 0.1,
    lr: float = 0.05,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[dict[str, npt.NDArray[Any]], npt.NDArray[np.float64]]: ...
def sweep_world_dpo(
    ref_logits: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64] | None,
    gold_token: npt.NDArray[np.float64],
    count_once: bool,
    response_len: int,
    prompts: npt.NDArray[np.int64],
    first: npt.NDArray[np.int64],
    second: npt.NDArray[np.int64],
    target: npt.NDArray[np.float64],
    runs: Sequence[tuple[float, float, str, float, int, int | None]],
    record_every: int = 1,
    n_threads: int | None = None,
    progress: _Progress = None,
    max_memory: int | None = None,
) -> _SweepOutput: ...
def bag_grpo_step(
    logits: Sequence[float],
    ref_log_probs: Sequence[float],
    weights: Sequence[float],
    uniforms: Sequence[float],
    num_generations: int = 8,
    beta: float = 0.04,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    lr: float = 0.05,
    scale_rewards: str = "group",
    num_iterations: int = 1,
) -> _SweepOutput: ...
def train_world_grpo(
    ref_logits: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    gold_token: npt.NDArray[np.float64],
    count_once: bool,
    response_len: int,
    steps: int,
    seed: int,
    num_generations: int = 8,
    beta: float = 0.04,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    lr: float = 0.05,
    scale_rewards: str = "group",
    num_iterations: int = 1,
) -> tuple[dict[str, npt.NDArray[Any]], npt.NDArray[np.float64]]: ...
def sweep_world_grpo(
    ref_logits: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    gold_token: npt.NDArray[np.float64],
    count_once: bool,
    response_len: int,
    steps: int,
    runs: Sequence[tuple[int, int, float, float, float | None, float, str, int]],
    record_every: int = 1,
    n_threads: int | None = None,
    progress: _Progress = None,
    max_memory: int | None = None,
) -> _SweepOutput: ...

# A world's own computations (rust/python/world_tables.rs): float64 and int64 arrays in and out.
_Floats: TypeAlias = npt.NDArray[np.float64]
_Indices: TypeAlias = npt.NDArray[np.int64]
_Series: TypeAlias = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]

def world_tables(
    rank_uniforms: _Floats, shared_normals: _Floats, prompt_normals: _Floats, zipf: float, prompt_scale: float
) -> tuple[_Floats, _Floats]: ...
def judge_token_values(gold_token: _Floats, ref_logits: _Floats, noise: _Floats, rho: float, bias: float) -> _Floats: ...
def labeller_labels(
    gold_first: _Floats,
    gold_second: _Floats,
    temperature: float,
    flip: float,
    prefer_uniforms: _Floats,
    flip_uniforms: _Floats,
) -> _Floats: ...
def judge_labels(
    score_first: _Floats,
    score_second: _Floats,
    temperature: float,
    position_bias: float,
    soft: bool,
    both_orders: bool,
    order_uniforms: _Floats,
    draw_uniforms: _Floats,
) -> _Floats: ...
def bag_score(values: _Floats, prompts: _Indices, responses: _Indices, count_once: bool, offset: float) -> _Floats: ...
def train_reward_model(
    vocab: int,
    first: _Indices,
    second: _Indices,
    target: _Floats,
    margin: _Floats,
    epochs: int,
    lr: float,
    center_rewards_coefficient: float,
) -> _Floats: ...
# A sequence world's proxy (rust/python/sequences.rs); the front end is rlhf_fast.sequences.
def train_reward_model_rows(
    vocab: int,
    first: _Indices,
    first_len: _Indices,
    second: _Indices,
    second_len: _Indices,
    target: _Floats,
    margin: _Floats,
    epochs: int,
    lr: float,
    center_rewards_coefficient: float,
) -> _Floats: ...
def sequence_stats(
    logits: _Floats, ref_logits: _Floats
) -> tuple[_Floats, _Floats, _Floats, _Floats, _Floats, _Floats]: ...
# Reward distillation's SGD (rust/python/distill.rs); the front end is rlhf_fast.distill.
def distill_reward_model(
    phi: _Floats, responses: _Indices, targets: _Floats, epochs: int, lr: float
) -> tuple[_Floats, float, _Floats]: ...
def world_expectations(
    ref_logits: _Floats,
    gold_token: _Floats,
    count_once: bool,
    repeat_penalty: float,
    response_len: int,
    logits: _Floats,
    weights: _Floats | None = None,
) -> _Series: ...
def world_frontier(
    ref_logits: _Floats,
    gold_token: _Floats,
    count_once: bool,
    repeat_penalty: float,
    response_len: int,
    reward: _Floats,
    betas: _Floats,
    weights: _Floats | None = None,
) -> _Series: ...
def fit_gao(d: _Floats, gold: _Floats, form: str) -> tuple[float, float]: ...
def token_ppo_batch_terms(
    ref_logits: npt.NDArray[np.float64],
    old_theta: npt.NDArray[np.float64],
    theta: npt.NDArray[np.float64],
    old_values: npt.NDArray[np.float64],
    values: npt.NDArray[np.float64],
    prompts: npt.NDArray[np.int64],
    tokens: npt.NDArray[np.int64],
    scores: npt.NDArray[np.float64],
    kl_coef: float = 0.05,
    gamma: float = 1.0,
    lam: float = 0.95,
    cliprange: float = 0.2,
    cliprange_value: float = 0.2,
    vf_coef: float = 0.1,
    kl_estimator: str = "k1",
) -> dict[str, Any]: ...
def sweep_token_ppo(
    ref_logits: npt.NDArray[np.float64],
    w: npt.NDArray[np.float64],
    bias: npt.NDArray[np.float64],
    w_len: float,
    g: npt.NDArray[np.float64],
    offset: npt.NDArray[np.float64],
    count_once: bool,
    steps: int,
    runs: Sequence[tuple[int, float, float]],
    batch_size: int = 64,
    gamma: float = 1.0,
    lam: float = 0.95,
    cliprange: float = 0.2,
    cliprange_value: float = 0.2,
    vf_coef: float = 0.1,
    kl_estimator: str = "k1",
    num_ppo_epochs: int = 4,
    num_mini_batches: int = 1,
    missing_eos_penalty: float | None = None,
    length_normalize: bool = False,
    length_penalty: float = 0.0,
    record_every: int = 1,
    n_threads: int | None = None,
    progress: _Progress = None,
    max_memory: int | None = None,
    step_rewards: npt.NDArray[np.float64] | None = None,
    outcome_factors: npt.NDArray[np.float64] | None = None,
) -> _SweepOutput: ...
def prm_loss_and_grad(
    logits: npt.NDArray[np.float64],
    prompts: npt.NDArray[np.int64],
    tokens: npt.NDArray[np.int64],
    labels: npt.NDArray[np.float64],
    l2: float = 0.0,
) -> tuple[float, npt.NDArray[np.float64]]: ...
def train_process_reward_model(
    prompts: npt.NDArray[np.int64],
    tokens: npt.NDArray[np.int64],
    labels: npt.NDArray[np.float64],
    shape: tuple[int, int, int],
    epochs: int = 300,
    lr: float = 0.1,
    l2: float = 1.0,
) -> dict[str, npt.NDArray[np.float64]]: ...
def sweep_verifier_grpo(
    ref_logits: npt.NDArray[np.float64],
    w: npt.NDArray[np.float64],
    bias: npt.NDArray[np.float64],
    w_len: float,
    g: npt.NDArray[np.float64],
    offset: npt.NDArray[np.float64],
    count_once: bool,
    steps: int,
    runs: Sequence[tuple[int, float, float]],
    num_generations: int = 8,
    prompts_per_step: int = 4,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    scale_rewards: str = "group",
    num_iterations: int = 1,
    outcome_factors: npt.NDArray[np.float64] | None = None,
    record_every: int = 1,
    n_threads: int | None = None,
    progress: _Progress = None,
    max_memory: int | None = None,
) -> _SweepOutput: ...
def sweep_safe_world_rlhf(
    ref_logits: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    gold_token: npt.NDArray[np.float64],
    count_once: bool,
    response_len: int,
    steps: int,
    runs: Sequence[
        tuple[
            tuple[int, float, float, int, float, str, float, float],
            tuple[float, float | None, float, float, int, float, bool, str],
        ]
    ],
    cost_weights: npt.NDArray[np.float64],
    gold_cost: npt.NDArray[np.float64],
    record_every: int = 1,
    exact: bool = False,
    n_threads: int | None = None,
    progress: _Progress = None,
    max_memory: int | None = None,
) -> _SweepOutput: ...
def sweep_sequence_dpo(
    ref_logits: npt.NDArray[np.float64],
    w: npt.NDArray[np.float64],
    bias: npt.NDArray[np.float64],
    w_len: float,
    g: npt.NDArray[np.float64],
    offset: npt.NDArray[np.float64],
    count_once: bool,
    prompts: npt.NDArray[np.int64],
    first: npt.NDArray[np.int64],
    second: npt.NDArray[np.int64],
    target: npt.NDArray[np.float64],
    runs: Sequence[tuple[float, float, str, float, int, int | None]],
    with_proxy: bool = True,
    record_every: int = 1,
    n_threads: int | None = None,
    progress: _Progress = None,
    max_memory: int | None = None,
) -> _SweepOutput: ...
def sweep_sequence_best_of_n(
    ref_logits: npt.NDArray[np.float64],
    w: npt.NDArray[np.float64],
    bias: npt.NDArray[np.float64],
    w_len: float,
    g: npt.NDArray[np.float64],
    offset: npt.NDArray[np.float64],
    count_once: bool,
    runs: Sequence[tuple[int, int, int]],
    n_threads: int | None = None,
    progress: _Progress = None,
    max_memory: int | None = None,
) -> _SweepOutput: ...
