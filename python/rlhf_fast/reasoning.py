"""Process vs outcome rewards in a reasoning world (issue 11 item 4).

A :class:`ReasoningWorld` gives each prompt a hidden chain of ``K`` steps; at step ``k`` the
policy picks one of ``V`` candidate tokens, a hidden set of them is right, and a response is
correct when every step is. Policies are tabular, ``theta[P, K, V]`` (position-conditioned, no
end-of-sequence: every response has exactly ``K`` tokens), so the success rate is exact:
``mean_p prod_k sum_{v right} softmax(theta[p, k])_v``.

Two rewards: the **outcome reward**, a verifier (1 if every step is right, else 0), and a
**process reward model** (:func:`train_process_reward_model`) fitted to step labels of sampled
reference responses from a labeller that may flip them; its per-step scores are rewards at each
step's token (Math-Shepherd's step-by-step PPO), its product (Lightman et al. 2023) or minimum
(Math-Shepherd) ranks whole solutions (:meth:`ProcessRewardModel.score`). :func:`process_lab`
compares token PPO with the verifier, token PPO with the PRM's per-step rewards, and GRPO with
the verifier (RL from verifiable rewards): success rate against samples and compute, over seeds.

The token PPO and GRPO engines take a sequence world with an end-of-sequence token 0; this
module gives them ``[P, K, V + 1]`` tables whose column 0 (EOS) has the logit
:data:`NO_EOS_LOGIT`, a finite logit whose probability is exactly 0 in float64 (its
``exp`` underflows), so EOS is never drawn and its logit never moves (its gradient is
``0 - pi(EOS) = 0``): responses are ``K`` tokens long with no engine option.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _checks as check
from ._backend import BACKEND
from .result import new_figure, text_table
from .reference.engines.token_ppo import MAX_BATCH_SIZE
from .token_ppo import sweep_token_ppo_arrays

if BACKEND == "rust":
    from ._core import sweep_verifier_grpo as _grpo_engine
    from ._core import train_process_reward_model as _train_prm
else:
    from .reference.engines.process_reward import train_process_reward_model as _train_prm
    from .reference.engines.verifier_grpo import sweep_verifier_grpo as _grpo_engine

__all__ = ["NO_EOS_LOGIT", "ReasoningWorld", "ProcessRewardModel", "train_process_reward_model", "process_rl",
           "ProcessLab", "process_lab"]

#: The EOS logit of the engines' tables: ``exp(NO_EOS_LOGIT - max)`` is exactly 0.0 in float64.
NO_EOS_LOGIT = -1.0e4
#: The longest RL run :func:`process_rl` takes (as :func:`process_lab`'s checkpoints): it keeps
#: no history, so nothing else would bound a run's time.
MAX_STEPS = 10**6


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _softmax(theta: np.ndarray) -> np.ndarray:
    # logits a whole float range apart: their difference overflows to -inf, whose exp is the 0 it should be
    with np.errstate(over="ignore"):
        e = np.exp(theta - theta.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    # exp(-logit) overflows to inf for a logit below -709: the score is then the 0 it should be
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-logits))


def _responses(name: str, prompts: Any, tokens: Any, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``prompts [n]`` and ``tokens [n, K]`` checked against a ``(P, K, V)`` table."""
    prompts = check.index_array("prompts", prompts, "a 1-D array of prompt indices", ndim=1)
    tokens = check.index_array("tokens", tokens, "an [n, K] array of candidate indices", ndim=2)
    if tokens.shape != (len(prompts), shape[1]):
        raise ValueError(f"tokens must have shape (len(prompts), n_steps) = {(len(prompts), shape[1])}, "
                         f"got {tokens.shape}")
    if prompts.size and prompts.max() >= shape[0]:
        raise ValueError(f"prompts must be < n_prompts={shape[0]} of the {name}, got {int(prompts.max())}")
    if tokens.size and tokens.max() >= shape[2]:
        raise ValueError(f"tokens must be < n_candidates={shape[2]} of the {name}, got {int(tokens.max())}")
    return prompts, tokens


class ReasoningWorld:
    """A reasoning world: ``n_prompts`` prompts, each a hidden chain of ``n_steps`` steps.

    Parameters
    ----------
    n_prompts, n_steps, n_candidates : int
        ``P``, ``K`` and ``V``: at each step the policy picks one of ``V`` candidate tokens.
    n_correct : int
        How many candidates are right at each (prompt, step), drawn uniformly (``1 <= n_correct
        < V``).
    ref_correct : float
        The reference policy's probability of a right step, the same at every step (shared
        equally by the right tokens; the wrong ones share the rest in random proportions), so
        its success rate is ``ref_correct ** K``.
    seed : int
        The tables are drawn from NumPy's PCG64 stream of ``seed``; the world is immutable.

    Examples
    --------
    >>> world = ReasoningWorld(n_prompts=4, n_steps=5, ref_correct=0.5, seed=0)
    >>> round(world.success(world.ref_logits), 6)
    0.03125
    """

    def __init__(self, n_prompts: int = 8, n_steps: int = 6, n_candidates: int = 6, n_correct: int = 1,
                 ref_correct: float = 0.5, seed: int = 0):
        self.n_prompts = check.count("n_prompts", n_prompts, 1, 1 << 16)
        self.n_steps = check.count("n_steps", n_steps, 1, 1 << 12)
        self.n_candidates = check.count("n_candidates", n_candidates, 2, 1 << 16)
        self.n_correct = check.count("n_correct", n_correct, 1, self.n_candidates - 1)
        self.ref_correct = check.finite("ref_correct", ref_correct)
        if not 0.0 < self.ref_correct < 1.0:
            raise ValueError(f"ref_correct must be in (0, 1), got {ref_correct!r}")
        self.seed = check.count("seed", seed, 0)
        p, k, v = self.n_prompts, self.n_steps, self.n_candidates
        # the tables: six float64 [P, K, V] arrays at the peak
        check.fits("n_prompts * n_steps * n_candidates", p * k * v, 48 * p * k * v)
        rng = np.random.default_rng(self.seed)
        order = np.argsort(rng.random((p, k, v)), axis=-1)
        correct = np.zeros((p, k, v), dtype=bool)
        np.put_along_axis(correct, order[..., : self.n_correct], True, axis=-1)
        wrong = np.exp(rng.normal(size=(p, k, v))) * ~correct
        probs = np.where(correct, self.ref_correct / self.n_correct,
                         (1.0 - self.ref_correct) * wrong / wrong.sum(axis=-1, keepdims=True))
        if not probs.min() > 0.0:
            raise ValueError(f"ref_correct={ref_correct!r} leaves a candidate a probability that underflows to 0 "
                             f"(n_correct={self.n_correct}, n_candidates={v}): its logit would be -inf")
        self.correct = _frozen(correct)
        self.ref_logits = _frozen(np.log(probs))

    def __repr__(self) -> str:
        return (f"ReasoningWorld(n_prompts={self.n_prompts}, n_steps={self.n_steps}, n_candidates={self.n_candidates}, "
                f"n_correct={self.n_correct}, ref_correct={self.ref_correct!r}, seed={self.seed})")

    def _theta(self, theta: Any) -> np.ndarray:
        shape = (self.n_prompts, self.n_steps, self.n_candidates)
        what = f"logits [..., P, K, V] = [..., {shape[0]}, {shape[1]}, {shape[2]}]"
        theta = check.as_array("theta", theta, what)
        if theta.shape[-3:] != shape:
            raise ValueError(f"theta must end with shape {shape}, got {theta.shape}")
        # a stack of policies may be a strided view of far more than it holds: a softmax of it is not
        check.fits("theta", theta.size, 4 * 8 * theta.size)
        return check.real_array("theta", theta, what)

    def success(self, theta: Any) -> np.ndarray | float:
        """The exact success rate of a policy: ``mean_p prod_k P(step k right)``.

        Parameters
        ----------
        theta : array_like
            Logits ``[..., P, K, V]`` (leading axes: several policies).

        Returns
        -------
        float or numpy.ndarray
            One rate per policy (a float for a single one).
        """
        right = (_softmax(self._theta(theta)) * self.correct).sum(axis=-1)
        rate = right.prod(axis=-1).mean(axis=-1)
        return float(rate) if np.ndim(rate) == 0 else rate

    def engine_logits(self, theta: Any = None) -> np.ndarray:
        """``theta`` (default the reference) as the engines' ``[P, K, V + 1]`` table: EOS first,
        at :data:`NO_EOS_LOGIT`."""
        theta = self.ref_logits if theta is None else self._theta(theta)
        eos = np.full(theta.shape[:-1] + (1,), NO_EOS_LOGIT)
        return np.concatenate([eos, theta], axis=-1)

    def verifier_factors(self) -> np.ndarray:
        """The verifier as the engines' outcome factors ``[P, K, V + 1]``: 1.0 at the right
        tokens, 0.0 elsewhere (EOS included), so a response's product is 1 iff it is correct."""
        return np.concatenate([np.zeros(self.correct.shape[:-1] + (1,)), self.correct.astype(np.float64)], axis=-1)

    def sample(self, theta: Any, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` responses of a policy: prompts uniform, tokens step by step.

        Returns
        -------
        prompts, tokens : numpy.ndarray
            int64 ``[n]`` and ``[n, K]`` (candidate indices).
        """
        theta = self._theta(theta)
        if theta.ndim != 3:
            raise ValueError(f"theta must be one policy, shape {self.correct.shape}, got {theta.shape}")
        n = check.count("n", n, 1)
        # the cumulative probabilities of every response, and the comparison with its draws
        check.fits("n", n, 2 * 8 * n * self.n_steps * self.n_candidates)
        probs = _softmax(theta)
        rng = np.random.default_rng(check.count("seed", seed, 0))
        prompts = rng.integers(self.n_prompts, size=n)
        cumulative = probs[prompts].cumsum(axis=-1)
        u = rng.random((n, self.n_steps, 1))
        tokens = np.minimum((cumulative <= u).sum(axis=-1), self.n_candidates - 1)
        return prompts.astype(np.int64), tokens.astype(np.int64)

    def step_correct(self, prompts: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Whether each step of each response is right, bool ``[n, K]``."""
        prompts, tokens = _responses("world", prompts, tokens, self.correct.shape)
        return self.correct[prompts[:, None], np.arange(self.n_steps), tokens]

    def verify(self, prompts: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """The verifier: whether every step of each response is right, bool ``[n]``."""
        return self.step_correct(prompts, tokens).all(axis=-1)


@dataclass(frozen=True, eq=False)
class ProcessRewardModel:
    """A tabular process reward model: ``P(step k right) = sigmoid(logits[p, k, v])``.

    Attributes
    ----------
    logits : numpy.ndarray
        ``[P, K, V]``.
    losses : numpy.ndarray
        The fit's loss before each epoch.
    n_responses, label_noise : int, float
        The labelled reference responses it was fitted to and the labeller's flip rate.
    """

    logits: np.ndarray
    losses: np.ndarray
    n_responses: int
    label_noise: float

    def __post_init__(self) -> None:
        logits = check.real_array("logits", self.logits, "a [P, K, V] array of logits", ndim=3)
        if logits.size == 0:
            raise ValueError(f"logits must not be empty, got shape {logits.shape}")
        losses = check.real_array("losses", self.losses, "a 1-D array of losses", ndim=1)
        label_noise = check.finite("label_noise", self.label_noise)
        if not 0.0 <= label_noise < 0.5:
            raise ValueError(f"label_noise must be in [0, 0.5), got {self.label_noise!r}")
        # frozen: the checked values are set as the dataclass itself would
        object.__setattr__(self, "logits", logits)
        object.__setattr__(self, "losses", losses)
        object.__setattr__(self, "n_responses", check.count("n_responses", self.n_responses, 1))
        object.__setattr__(self, "label_noise", label_noise)

    def step_scores(self, prompts: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Each step's score, ``[n, K]``."""
        prompts, tokens = _responses("process reward model", prompts, tokens, self.logits.shape)
        k = np.arange(self.logits.shape[1])
        return _sigmoid(self.logits[prompts[:, None], k, tokens])

    def score(self, prompts: np.ndarray, tokens: np.ndarray, aggregate: str = "product") -> np.ndarray:
        """A solution's score: the product (Lightman et al. 2023) or the minimum (Math-Shepherd) of
        its step scores.

        Parameters
        ----------
        prompts, tokens : numpy.ndarray
            int ``[n]`` and ``[n, K]``.
        aggregate : {"product", "min"}

        Returns
        -------
        numpy.ndarray
            ``[n]``.
        """
        aggregate = check.option("aggregate", aggregate, ("product", "min"))
        scores = self.step_scores(prompts, tokens)
        return scores.prod(axis=-1) if aggregate == "product" else scores.min(axis=-1)

    def step_rewards(self) -> np.ndarray:
        """The per-step rewards as the token PPO engine's ``step_rewards [P, K, V + 1]`` (EOS 0)."""
        scores = _sigmoid(self.logits)
        return np.concatenate([np.zeros(scores.shape[:-1] + (1,)), scores], axis=-1)


def train_process_reward_model(world: ReasoningWorld, n_responses: int = 256, label_noise: float = 0.1, *,
                               epochs: int = 300, lr: float = 0.1, l2: float = 1.0, seed: int = 0) -> ProcessRewardModel:
    """Fit a process reward model to step labels of sampled reference responses.

    ``n_responses`` reference responses are sampled (seed ``seed``), each step labelled right or
    wrong by a labeller who flips each label with probability ``label_noise``; the model is the
    MAP fit of a logistic model per (prompt, step, token) with an ``N(0, 1/l2)`` prior, by
    ``epochs`` steps of gradient descent from zero (the Rust engine, or its twin with
    ``RLHF_FAST_BACKEND=python``). A (prompt, step, token) never sampled keeps the score 0.5.

    Parameters
    ----------
    world : ReasoningWorld
    n_responses : int
    label_noise : float
        In ``[0, 0.5)``.
    epochs, lr, l2 : int, float, float
        Gradient descent on the summed log-loss plus ``(l2 / 2) ||logits||^2``.
    seed : int

    Returns
    -------
    ProcessRewardModel

    Examples
    --------
    >>> world = ReasoningWorld(n_prompts=2, n_steps=3, seed=0)
    >>> prm = train_process_reward_model(world, 200, 0.0, seed=1)
    >>> p, y = world.sample(world.ref_logits, 50, seed=2)
    >>> bool(((prm.step_scores(p, y) > 0.5) == world.step_correct(p, y)).mean() > 0.9)
    True
    """
    if not isinstance(world, ReasoningWorld):
        raise TypeError(f"world must be a ReasoningWorld, got {type(world).__name__}")
    n_responses = check.count("n_responses", n_responses, 1)
    # the sample's tables and the fit's per-response arrays
    check.fits("n_responses", n_responses, 2 * 8 * n_responses * world.n_steps * (world.n_candidates + 2))
    label_noise = check.finite("label_noise", label_noise)
    if not 0.0 <= label_noise < 0.5:
        raise ValueError(f"label_noise must be in [0, 0.5), got {label_noise!r}")
    seed = check.count("seed", seed, 0)
    prompts, tokens = world.sample(world.ref_logits, n_responses, seed)
    flips = np.random.default_rng([seed, 1]).random(tokens.shape) < label_noise
    labels = (world.step_correct(prompts, tokens) ^ flips).astype(np.float64)
    fit = _train_prm(prompts, tokens, labels, (world.n_prompts, world.n_steps, world.n_candidates), epochs=epochs,
                     lr=lr, l2=l2)
    return ProcessRewardModel(_frozen(fit["logits"]), _frozen(fit["losses"]), n_responses, label_noise)


def process_rl(world: ReasoningWorld, method: str, steps: int, *, prm: ProcessRewardModel | None = None,
               seeds: Any = 4, lr: float = 10.0, batch_size: int = 32, num_generations: int = 8,
               kl_coef: float = 0.05, beta: float = 0.0, num_ppo_epochs: int = 4) -> np.ndarray:
    """The final policies of RL runs in a reasoning world, one per seed.

    Parameters
    ----------
    world : ReasoningWorld
    method : {"ppo_outcome", "ppo_prm", "grpo_verifier"}
        Token PPO with the verifier's reward at the last token; token PPO with the PRM's score
        of each step as that token's reward (``prm`` required); GRPO with the verifier's reward
        (``num_generations`` completions per prompt, ``batch_size // num_generations`` prompts
        per step).
    steps : int
        At most :data:`MAX_STEPS`.
    seeds : int or sequence of int
    lr, batch_size, num_generations, kl_coef, beta, num_ppo_epochs
        SGD's learning rate (one for every method), completions per step, GRPO's group size,
        PPO's ``kl_coef`` and epochs, GRPO's ``beta`` (TRL's defaults but ``lr``).

    Returns
    -------
    numpy.ndarray
        float64 ``[seeds, P, K, V]``: each run's final logits (EOS dropped).
    """
    if not isinstance(world, ReasoningWorld):
        raise TypeError(f"world must be a ReasoningWorld, got {type(world).__name__}")
    method = check.option("method", method, ("ppo_outcome", "ppo_prm", "grpo_verifier"))
    steps = check.count("steps", steps, 1, MAX_STEPS)
    lr, kl_coef, beta = check.positive("lr", lr), check.non_negative("kl_coef", kl_coef), check.non_negative("beta", beta)
    seed_axis = check.seed_axis(seeds, False)
    # each run keeps its final [P, K, V + 1] policy (len() of a range past 2**63 raises: 2**64 then)
    n_runs = check._sequence_length(seed_axis)
    check.fits("seeds", n_runs, 8 * n_runs * world.n_prompts * world.n_steps * (world.n_candidates + 1))
    p, v = world.n_prompts, world.n_candidates + 1
    zeros_v, zeros_p = np.zeros(v), np.zeros(p)
    ref = world.engine_logits()
    if method == "grpo_verifier":
        num_generations = check.count("num_generations", num_generations, 2)
        # the completions a step samples, as token PPO's batch_size is bounded
        groups = max(1, check.count("batch_size", batch_size, 2, MAX_BATCH_SIZE) // num_generations)
        out = _grpo_engine(ref, zeros_v, zeros_p, 0.0, zeros_v, zeros_p, False, steps,
                           [(s, beta, lr) for s in seed_axis], num_generations=num_generations,
                           prompts_per_step=groups, outcome_factors=world.verifier_factors(), record_every=0)
        return np.asarray(out["final_params"])[..., 1:]
    if method == "ppo_prm":
        if not isinstance(prm, ProcessRewardModel):
            raise TypeError(f"prm must be a ProcessRewardModel for method='ppo_prm', got {type(prm).__name__}")
        if prm.logits.shape != world.correct.shape:
            raise ValueError(f"prm must be fitted to a world of this shape {world.correct.shape}, "
                             f"got one of {prm.logits.shape}")
        tables = {"step_rewards": prm.step_rewards()}
    else:
        tables = {"outcome_factors": world.verifier_factors()}
    result = sweep_token_ppo_arrays(ref, zeros_v, zeros_p, 0.0, zeros_v, zeros_p, False, steps=steps,
                                    kl_coef=kl_coef, lr=lr, seeds=seed_axis, batch_size=batch_size,
                                    num_ppo_epochs=num_ppo_epochs, record_every=0, progress=False, **tables)
    return np.asarray(result.final_theta).reshape(-1, *ref.shape)[..., 1:]


_METHODS = ("ppo_outcome", "ppo_prm", "grpo_verifier")
_LABELS = {"ppo_outcome": "PPO + outcome (verifier)", "ppo_prm": "PPO + PRM (per-step)",
           "grpo_verifier": "GRPO + verifier (RLVR)"}


@dataclass
class ProcessLab:
    """What :func:`process_lab` measured: success-rate curves per method and seed, and the
    Best-of-N success of each ranking."""

    world: ReasoningWorld
    checkpoints: np.ndarray
    samples: dict[str, np.ndarray]
    compute: dict[str, np.ndarray]
    success: dict[str, np.ndarray]
    target: float
    best_of_n: dict[str, np.ndarray]
    n_values: tuple[int, ...]
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"ProcessLab({self.world!r}, {self.seconds:.1f} s)"

    def samples_to_target(self, method: str) -> np.ndarray:
        """Per seed, the first checkpoint's samples at which the success rate reaches
        ``target`` (``inf`` if never).

        Parameters
        ----------
        method : str
            One of ``"ppo_outcome"``, ``"ppo_prm"``, ``"grpo_verifier"`` (the keys of ``success``).

        Returns
        -------
        numpy.ndarray
        """
        return self._at_target(method, self.samples)

    def compute_to_target(self, method: str) -> np.ndarray:
        """Per seed, the compute at that checkpoint (``inf`` if never); ``method`` as
        :meth:`samples_to_target`'s.

        Returns
        -------
        numpy.ndarray
        """
        return self._at_target(method, self.compute)

    def _at_target(self, method: str, cost: dict[str, np.ndarray]) -> np.ndarray:
        method = check.option("method", method, tuple(self.success))
        hit = self.success[method] >= self.target
        first = np.where(hit.any(axis=1), hit.argmax(axis=1), -1)
        return np.where(first >= 0, cost[method][np.maximum(first, 0)], np.inf)

    def table(self) -> str:
        """One line per method: success at each checkpoint (mean over seeds), samples and
        compute to reach the target, then the Best-of-N lines.

        Returns
        -------
        str
        """
        header = ["method", "start", *[f"@{c}" for c in self.checkpoints], f"samples to {self.target:.2f}",
                  "compute to it", "seeds"]
        lines = []
        for m in _METHODS:
            to, cost = self.samples_to_target(m), self.compute_to_target(m)
            med, med_cost = float(np.median(to)), float(np.median(cost))
            lines.append([_LABELS[m], f"{self.settings['start']:.3f}",
                          *[f"{x:.3f}" for x in self.success[m].mean(axis=0)],
                          f"{med:,.0f}" if np.isfinite(med) else "never",
                          f"{med_cost:,.0f}" if np.isfinite(med_cost) else "-", f"{np.isfinite(to).sum()}/{len(to)}"])
        out = text_table(header, lines)
        bon = text_table(["Best-of-N ranking", *[f"N={n}" for n in self.n_values]],
                         [[name, *[f"{x:.3f}" for x in rates]] for name, rates in self.best_of_n.items()])
        return out + "\n\n" + bon

    def to_rows(self) -> list[dict[str, Any]]:
        """The curves as flat records (for a CSV): method, seed, steps, samples, compute, success.

        Returns
        -------
        list of dict
        """
        return [{"method": m, "seed": s, "steps": int(c), "samples": int(self.samples[m][i]),
                 "compute": int(self.compute[m][i]), "success": float(self.success[m][s, i])}
                for m in _METHODS for s in range(self.success[m].shape[0]) for i, c in enumerate(self.checkpoints)]

    def plot(self, path: str | os.PathLike | None = None):
        """Success rate against samples (left) and compute (right), mean over seeds with each
        seed faint; the target dotted.

        Parameters
        ----------
        path : str or os.PathLike, optional
            Save the figure there.

        Returns
        -------
        matplotlib.figure.Figure
        """
        fig = new_figure(path, figsize=(12.0, 4.5), layout="constrained")
        left, right = fig.subplots(1, 2)
        for m, colour in zip(_METHODS, ("tab:blue", "tab:orange", "tab:green")):
            for ax, x in ((left, self.samples[m]), (right, self.compute[m])):
                ax.plot(x, self.success[m].T, color=colour, alpha=0.2, linewidth=0.8)
                ax.plot(x, self.success[m].mean(axis=0), color=colour, linewidth=2, marker="o", label=_LABELS[m])
        for ax, xlabel in ((left, "responses sampled (PRM: its labelled responses included)"),
                           (right, "compute (policy token-row passes: rollouts and updates)")):
            ax.axhline(self.target, color="grey", linestyle=":", linewidth=1)
            ax.set(xscale="log", xlabel=xlabel, ylabel="exact success rate", ylim=(0, 1))
            ax.legend(loc="upper left", fontsize=8)
        fig.suptitle(f"Process vs outcome rewards: {self.world!r}", fontsize=10)
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig


def process_lab(world: ReasoningWorld | None = None, *,
                checkpoints: Any = (5, 10, 15, 20, 30, 40, 60, 80, 120, 160), seeds: int = 4, lr: float = 10.0,
                batch_size: int = 32, num_generations: int = 8, prm_responses: int = 256, label_noise: float = 0.1,
                target: float = 0.5, n_values: Any = (1, 4, 16, 64), seed: int = 0) -> ProcessLab:
    """Process vs outcome rewards: PPO + verifier, PPO + PRM per-step rewards, GRPO + verifier.

    Each method runs ``seeds`` seeds to every checkpoint (a run to ``c`` steps is the first ``c``
    steps of a longer one: each run owns its stream), and the exact success rate of each final
    policy is recorded against the responses sampled (``steps * batch_size``, plus the PRM's
    labelled ones) and the compute (the policy's token-row passes: ``K`` per response sampled,
    ``K * num_ppo_epochs`` per PPO update, ``K`` per GRPO update; the PRM's fit, ``300`` epochs
    of ``K`` scalar terms per labelled response, is not counted). The table's "samples to" and
    "compute to it" are medians over seeds of the first checkpoint at ``target``. Best-of-N under
    the reference policy ranks ``N`` samples by the PRM's product, its minimum, and the verifier
    (an oracle), 4,000 draws per ``N``.

    Parameters
    ----------
    world : ReasoningWorld, optional
        Default ``ReasoningWorld(seed=seed)`` (8 prompts, 6 steps, 6 candidates, one right,
        reference P(right step) 0.5: success 0.5**6 = 1.6%).
    checkpoints : sequence of int
    seeds : int
    lr, batch_size, num_generations : float, int, int
        As :func:`process_rl` takes them; the same ``lr`` for every method.
    prm_responses, label_noise : int, float
        The PRM's training data (:func:`train_process_reward_model`).
    target : float
        The success rate the table's "samples to" column waits for.
    n_values : sequence of int
    seed : int

    Returns
    -------
    ProcessLab

    Examples
    --------
    >>> lab = process_lab(checkpoints=(5, 20), seeds=2)
    >>> sorted(lab.success)
    ['grpo_verifier', 'ppo_outcome', 'ppo_prm']
    """
    start_time = time.perf_counter()
    world = ReasoningWorld(seed=seed) if world is None else world
    if not isinstance(world, ReasoningWorld):
        raise TypeError(f"world must be a ReasoningWorld, got {type(world).__name__}")
    checkpoints = np.array(sorted(set(check.sequence_of("checkpoints", checkpoints, check.counts(1, 10**6), "ints"))))
    if not len(checkpoints):
        raise ValueError("checkpoints must not be empty")
    seeds = check.count("seeds", seeds, 1, 1000)
    target = check.finite("target", target)
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target must be a success rate in (0, 1], got {target!r}")
    # Best-of-N draws 4,000 groups of n responses: n is bounded so that they take seconds, not minutes.
    n_values = tuple(check.sequence_of("n_values", n_values, check.counts(1, 1024), "ints"))
    prm = train_process_reward_model(world, prm_responses, label_noise, epochs=300, seed=seed)
    k = world.n_steps
    num_ppo_epochs = 4
    samples, compute, success = {}, {}, {}
    for m in _METHODS:
        curve = []
        for c in checkpoints:
            final = process_rl(world, m, int(c), prm=prm, seeds=range(seed, seed + seeds), lr=lr,
                               batch_size=batch_size, num_generations=num_generations,
                               num_ppo_epochs=num_ppo_epochs)
            curve.append(world.success(final))
        success[m] = np.array(curve).T.reshape(seeds, len(checkpoints))
        per_step = batch_size if m != "grpo_verifier" else max(1, batch_size // num_generations) * num_generations
        passes = 1 + (num_ppo_epochs if m != "grpo_verifier" else 1)
        samples[m] = checkpoints * per_step + (prm_responses if m == "ppo_prm" else 0)
        compute[m] = checkpoints * per_step * k * passes
    rng_seed = seed + 12345
    best: dict[str, list[float]] = {"PRM product": [], "PRM min": [], "verifier (oracle)": []}
    draws = 4000
    for n in n_values:
        p, y = world.sample(world.ref_logits, draws * n, seed=rng_seed + n)
        right = world.verify(p, y).reshape(draws, n)
        for name, key in (("PRM product", prm.score(p, y, "product")), ("PRM min", prm.score(p, y, "min")),
                          ("verifier (oracle)", right.astype(float).ravel())):
            pick = key.reshape(draws, n).argmax(axis=1)
            best[name].append(float(right[np.arange(draws), pick].mean()))
    return ProcessLab(world, checkpoints, samples, compute, success, float(target),
                      {name: np.array(v) for name, v in best.items()}, n_values, time.perf_counter() - start_time,
                      {"start": world.success(world.ref_logits), "lr": lr, "batch_size": batch_size,
                       "num_generations": num_generations, "prm_responses": prm_responses,
                       "label_noise": label_noise, "seeds": seeds})
