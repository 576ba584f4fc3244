"""Twin of rust/methods/world/distill.rs: one SGD step of reward distillation.

A student reward head on frozen features, fitted to a large teacher reward model's scores. The
student sees a token ``a`` only through its feature vector ``phi[a]`` (``d`` numbers, a fixed
random projection of the vocabulary), so its score of a bag of tokens ``y`` is
``b + theta . x(y)`` with ``x(y) = sum_i phi[y_i]``: at most a ``d``-dimensional subspace of
the ``vocab``-dimensional token weights the teacher has. The loss on one response with the
teacher's score ``t`` is the squared error ``(b + theta . x(y) - t)^2 / 2``. The passes over the
responses are ``engines/distill``'s.
"""

from __future__ import annotations

from collections.abc import Sequence


def response_features(phi: Sequence[Sequence[float]], response: Sequence[int]) -> list[float]:
    """``x(y) = sum_i phi[y_i]``, tokens in order."""
    x = [0.0] * len(phi[0])
    for token in response:
        row = phi[token]
        for k in range(len(x)):
            x[k] += row[k]
    return x


def distill_step(theta: list[float], bias: float, x: Sequence[float], target: float, lr: float) -> tuple[float, float]:
    """One step of ``lr`` on the response with features ``x`` and teacher score ``target``:
    with ``e = b + sum_k theta_k x_k - target`` (the sum left to right, from ``b``),
    ``theta_k -= (lr e) x_k`` in place and ``b -= lr e``. Returns ``(b, e)``."""
    prediction = bias
    for t, xk in zip(theta, x):
        prediction += t * xk
    error = prediction - target
    step = lr * error
    for k, xk in enumerate(x):
        theta[k] -= step * xk
    return bias - step, error
