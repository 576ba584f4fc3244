"""Twin of rust/methods/process_reward.rs: a tabular process reward model's loss and gradient.

``score[p, k, v] = sigmoid(z[p, k, v])`` models P(step correct); the loss is the step labels'
negative log-likelihood (a sum) plus an L2 prior, ``sum_i sum_k (softplus(z) - y z) + (l2 / 2)
sum z^2``, its gradient ``sum (sigmoid(z) - y) + l2 z`` per cell. Summed left to right as Rust
sums: responses, then steps, then the cells in order.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ... import _checks as checks
from ..kernels.logistic import sigmoid, softplus


class StepLabels(NamedTuple):
    """Step labels of ``n`` responses of ``K`` steps in a world of ``[P, K, V]`` cells, checked."""

    shape: tuple[int, int, int]
    prompts: list[int]
    tokens: list[list[int]]
    labels: list[list[float]]


def int_array(name: str, value: Any, ndim: int) -> np.ndarray:
    """An int64 numpy array of ``ndim`` dimensions, or a ``TypeError`` naming ``name`` (Rust's
    ``int_array``)."""
    if not isinstance(value, np.ndarray) or value.dtype != np.int64 or value.ndim != ndim:
        raise TypeError(f"{name} must be a {ndim}-D int64 array, got {type(value).__name__}")
    return value


def step_labels(shape: tuple[int, int, int], prompts: Any, tokens: Any, labels: Any) -> StepLabels:
    """The arrays checked in the bindings' order, each error naming its argument and entry."""
    n_prompts, n_steps, vocab = shape
    prompts = int_array("prompts", prompts, 1)
    tokens = int_array("tokens", tokens, 2)
    labels = checks.float_array("labels", labels, 2)
    n = len(prompts)
    for name, got in (("tokens", tokens.shape), ("labels", labels.shape)):
        if list(got) != [n, n_steps]:
            raise ValueError(f"{name} must have shape [{n}, {n_steps}], got {list(got)}")
    bad = np.flatnonzero(prompts < 0)
    if bad.size:
        raise ValueError(f"prompts[{bad[0]}] must be in [0, {n_prompts}), got {prompts[bad[0]]}")
    bad = np.flatnonzero(tokens.reshape(-1) < 0)
    if bad.size:
        b, k = divmod(int(bad[0]), n_steps)
        raise ValueError(f"tokens[{b}, {k}] must be in [0, {vocab}), got {tokens[b, k]}")
    if n == 0:
        raise ValueError("prompts must hold at least one response, got 0")
    bad = np.flatnonzero(prompts >= n_prompts)
    if bad.size:
        raise ValueError(f"prompts[{bad[0]}] must be in [0, {n_prompts}), got {prompts[bad[0]]}")
    bad = np.flatnonzero(tokens.reshape(-1) >= vocab)
    if bad.size:
        b, k = divmod(int(bad[0]), n_steps)
        raise ValueError(f"tokens[{b}, {k}] must be in [0, {vocab}), got {tokens[b, k]}")
    bad = np.flatnonzero(~((labels.reshape(-1) >= 0.0) & (labels.reshape(-1) <= 1.0)))
    if bad.size:
        b, k = divmod(int(bad[0]), n_steps)
        raise ValueError(f"labels[{b}, {k}] must be in [0, 1], got {float(labels[b, k])!r}")
    return StepLabels((n_prompts, n_steps, vocab), prompts.tolist(), tokens.tolist(), labels.tolist())


def loss_and_grad(z: list[float], data: StepLabels, l2: float) -> tuple[float, list[float]]:
    """The loss at flat logits ``z`` (``[P, K, V]`` row-major) and its gradient."""
    _, n_steps, vocab = data.shape
    grad = [0.0] * len(z)
    loss = 0.0
    for p, tokens, labels in zip(data.prompts, data.tokens, data.labels):
        for k in range(n_steps):
            a, y = tokens[k], labels[k]
            c = (p * n_steps + k) * vocab + a
            loss += softplus(z[c]) - y * z[c]
            grad[c] += sigmoid(z[c]) - y
    squares = 0.0
    for c, x in enumerate(z):
        squares += x * x
        grad[c] += l2 * x
    return loss + 0.5 * l2 * squares, grad


def prm_loss_and_grad(logits: Any, prompts: Any, tokens: Any, labels: Any, l2: Any = 0.0) -> tuple[float, np.ndarray]:
    """The loss at ``logits`` (float64 ``[P, K, V]``) on step labels (``prompts`` int64 ``[n]``,
    ``tokens`` int64 ``[n, K]``, ``labels`` float64 ``[n, K]`` in ``[0, 1]``) and its gradient
    (the binding ``_core.prm_loss_and_grad``)."""
    logits = checks.float_array("logits", logits, 3)
    if 0 in logits.shape:
        raise ValueError(f"logits must have a positive shape, got {list(logits.shape)}")
    if not np.all(np.isfinite(logits)):
        i = int(np.flatnonzero(~np.isfinite(logits.reshape(-1)))[0])
        raise ValueError(f"logits[{i}] must be finite, got {float(logits.reshape(-1)[i])!r}")
    data = step_labels(logits.shape, prompts, tokens, labels)
    l2 = checks.non_negative("l2", l2)
    loss, grad = loss_and_grad(logits.reshape(-1).tolist(), data, l2)
    # an l2 near the top of the floats overflows the prior's term: an inf is never handed back
    loss = checks.finite_result("prm_loss_and_grad", loss)
    return loss, np.array(checks.finite_result("prm_loss_and_grad", grad)).reshape(logits.shape)
