"""Twin of rust/engines/process_reward.rs: fitting a process reward model by gradient descent
from zero logits, ``epochs`` full passes over the step labels."""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import _checks as checks
from ..methods.process_reward import loss_and_grad, step_labels

MAX_PRM_EPOCHS = 1 << 20


def _shape(shape: Any) -> tuple[int, int, int]:
    """``(P, K, V)``, each a positive int (the binding's checks)."""
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__"):
        raise TypeError(f"shape must be a tuple of three ints, got {type(shape).__name__}")
    if len(shape) != 3:
        raise ValueError(f"shape must have three entries (P, K, V), got {len(shape)}")
    return tuple(checks.count(f"shape[{i}]", dim, 1) for i, dim in enumerate(shape))  # type: ignore[return-value]


def train_process_reward_model(prompts: Any, tokens: Any, labels: Any, shape: Any, epochs: Any = 300, lr: Any = 0.1,
                               l2: Any = 1.0) -> dict[str, np.ndarray]:
    """``epochs`` steps of ``z -= lr * grad`` from ``z = 0`` on the step labels; returns
    ``{"logits": [P, K, V], "losses": [epochs]}`` (the loss before each step). A
    ``FloatingPointError`` naming the epoch if the logits or the loss stop being finite."""
    shape = _shape(shape)
    epochs = checks.count("epochs", epochs, 1)
    data = step_labels(shape, prompts, tokens, labels)
    lr = checks.real("lr", lr)
    l2 = checks.real("l2", l2)
    if not 1 <= epochs <= MAX_PRM_EPOCHS:
        raise ValueError(f"epochs must be in [1, {MAX_PRM_EPOCHS}], got {epochs}")
    lr = checks.positive("lr", lr)
    l2 = checks.non_negative("l2", l2)
    z = [0.0] * (shape[0] * shape[1] * shape[2])
    losses = []
    for epoch in range(epochs):
        loss, grad = loss_and_grad(z, data, l2)
        z = [x - lr * g for x, g in zip(z, grad)]
        if not np.isfinite(loss) or checks.overflowed(z):
            raise FloatingPointError(f"the process reward model diverged at epoch {epoch} (lr={lr!r}, l2={l2!r})")
        losses.append(loss)
    return {"logits": np.array(z).reshape(shape), "losses": np.array(losses)}
