"""Twin of rust/methods/lagrangian.rs: Safe RLHF's Lagrange multiplier (Dai et al. 2023).

PPO maximises ``E[R]`` subject to ``E[C] <= limit`` on the combined per-token reward
``(w - lambda w_c) / (1 + lambda)``, while ``lambda`` moves as PKU-Alignment's ``safe-rlhf``
trainer moves it: SGD on ``ln lambda`` with the loss ``-(J_C - limit) exp(ln lambda)``, i.e.
``ln lambda += lr * lambda * (J_C - limit)``, then ``ln lambda`` clamped at ``ln lambda_max``;
``J_C`` is the mean cost-model score of the last ``window`` responses (or, with
``cost_estimate="expected"``, of the policy's last ``window`` expected scores). A multiplier that
starts at 0 stays there (its logarithm is ``-inf``), so an adaptive one must start above it.

That update is an integral controller, and with a policy that answers ``lambda`` only after
many steps the pair rings. ``kp > 0`` adds the proportional term of Stooke, Achiam & Abbeel's
PID Lagrangian (2020): the multiplier the reward uses is ``lambda_I + kp * (J_C - limit)``
clamped to ``[0, lambda_max]``, ``lambda_I`` being Safe RLHF's ``exp(ln lambda)``; at
``kp = 0`` it is Safe RLHF's update exactly.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from ... import _checks as checks

MAX_COST_WINDOW = 1 << 16
# What J_C averages: each step's sampled response's cost-model score (Safe RLHF's), or the cost
# model's expected score under the policy, exact in a bag world (Rust's CostEstimate).
COST_ESTIMATES = ("sampled", "expected")


class LagrangeParams:
    """How a run's multiplier moves: fixed at ``lambda_init`` (``cost_limit`` None) or adapted."""

    def __init__(self, lambda_init: float, cost_limit: float | None, lr: float, lambda_max: float, window: int,
                 kp: float):
        self.lambda_init = lambda_init
        self.cost_limit = cost_limit
        self.lr = lr
        self.lambda_max = lambda_max
        self.window = window
        self.kp = kp

    @classmethod
    def new(cls, lambda_init, cost_limit, lr, lambda_max, window, kp) -> LagrangeParams:
        """Checked as Rust's ``LagrangeParams::new``: ``0 <= lambda_init <= lambda_max``,
        ``lambda_max`` finite and > 0; with a ``cost_limit`` (finite) also ``lagrangian_lr > 0``,
        ``lambda_init > 0``; ``cost_window`` in ``[1, 2**16]``; ``lagrangian_kp >= 0``."""
        lambda_init = checks.non_negative("lambda_init", lambda_init)
        lambda_max = checks.positive("lambda_max", lambda_max)
        if lambda_init > lambda_max:
            raise ValueError(f"lambda_init must be <= lambda_max={lambda_max!r}, got {lambda_init!r}")
        window = checks.integer("cost_window", window)
        if not 1 <= window <= MAX_COST_WINDOW:
            raise ValueError(f"cost_window must be in [1, {MAX_COST_WINDOW}], got {window}")
        lr = checks.non_negative("lagrangian_lr", lr)
        kp = checks.non_negative("lagrangian_kp", kp)
        if cost_limit is not None:
            cost_limit = checks.finite("cost_limit", cost_limit)
            checks.positive("lagrangian_lr", lr)
            if lambda_init == 0.0:
                raise ValueError("lambda_init must be > 0 with a cost_limit (the update moves ln lambda: 0 stays 0), "
                                 "got 0.0")
        return cls(lambda_init, cost_limit, lr, lambda_max, window, kp)


class LagrangeMultiplier:
    """A run's multiplier and the costs it has seen."""

    def __init__(self, params: LagrangeParams):
        self.params = params
        self.log_lambda = math.log(params.lambda_init) if params.lambda_init > 0.0 else -math.inf
        self.log_lambda_max = math.log(params.lambda_max)
        self.integral = params.lambda_init  # Safe RLHF's exp(ln lambda)
        self.value = params.lambda_init  # what the next step's reward uses
        self.window: deque[float] = deque()

    def observe(self, cost: float) -> None:
        """The step's cost (a response's cost-model score, or its expectation under the policy):
        with a limit, ``J_C`` (the window's mean, summed oldest first) moves ``ln lambda`` by
        ``lr * lambda * (J_C - limit)``, clamped at ``ln lambda_max``, and the multiplier becomes
        ``exp(ln lambda) + kp * (J_C - limit)`` in ``[0, lambda_max]``; a fixed multiplier
        ignores it."""
        limit = self.params.cost_limit
        if limit is None:
            return
        if len(self.window) == self.params.window:
            self.window.popleft()
        self.window.append(cost)
        total = 0.0
        for c in self.window:
            total += c
        mean_cost = total / len(self.window)
        error = mean_cost - limit
        self.log_lambda += self.params.lr * self.integral * error
        if self.log_lambda > self.log_lambda_max:
            self.log_lambda = self.log_lambda_max
        self.integral = math.exp(self.log_lambda)
        if self.params.kp > 0.0:
            self.value = min(max(self.integral + self.params.kp * error, 0.0), self.params.lambda_max)
        else:
            self.value = self.integral


def combined_weights(weights: Sequence[float], cost_weights: Sequence[float], lam: float) -> list[float]:
    """``(w - lambda * cost) / (1 + lambda)`` token by token: the per-token reward whose sum over a
    response is Safe RLHF's ``(R - lambda C) / (1 + lambda)`` (before the KL penalty)."""
    scale = 1.0 + lam
    return [(w - lam * c) / scale for w, c in zip(weights, cost_weights)]
