"""Twin of rust/kernels/rows.rs: softmax, KL, sampling and PPO's gradient over rows of a large
vocabulary, one row at a time.

Each function takes a table (a list of rows of logits) and treats each row exactly as the
lesson's one-row kernels do (:mod:`.softmax`, :mod:`.sampling`): the max subtracted, libm's
``exp``, sums left to right. The Rust file reads each row from memory once, vectorised along
the row, and says how far its floats may stray from these (a few ulps); its sampled tokens
are these, always.

``ref_normalized``: the reference table holds the reference's log-softmax, used as it is
(the Rust kernels then skip the reference's ``exp``).
"""

from __future__ import annotations

from collections.abc import Sequence

from .sampling import sample_index
from .softmax import log_softmax_row, softmax_row

Table = Sequence[Sequence[float]]


def softmax_rows(logits: Table) -> list[list[float]]:
    """:func:`softmax_row` of every row."""
    return [softmax_row(z) for z in logits]


def log_softmax_rows(logits: Table) -> list[list[float]]:
    """:func:`log_softmax_row` of every row."""
    return [log_softmax_row(z) for z in logits]


def kl_row(z: Sequence[float], z_ref: Sequence[float], ref_normalized: bool = False) -> float:
    """``KL(softmax z || softmax z_ref) = sum_j p_j (log p_j - log q_j)``, both logs from
    log-softmax (finite where ``q_j`` underflows), ``0 log 0 = 0``; ``log q = z_ref`` itself
    when ``ref_normalized``."""
    p = softmax_row(z)
    log_p = log_softmax_row(z)
    log_q = list(z_ref) if ref_normalized else log_softmax_row(z_ref)
    total = 0.0
    for pj, lpj, lqj in zip(p, log_p, log_q):
        if pj > 0.0:
            total += pj * (lpj - lqj)
    return total


def kl_rows(logits: Table, ref_logits: Table, ref_normalized: bool = False) -> list[float]:
    """:func:`kl_row` of every pair of rows."""
    return [kl_row(z, r, ref_normalized) for z, r in zip(logits, ref_logits)]


def sample_rows(logits: Table, u: Sequence[float]) -> list[int]:
    """For each row, the token :func:`sample_index` picks from its softmax with draw ``u[i]``."""
    return [sample_index(softmax_row(z), ui) for z, ui in zip(logits, u)]


def ppo_grad_row(z: Sequence[float], a: int, p_old_a: float, advantage: float, eps: float) -> list[float]:
    """PPO's clipped surrogate ``min(r A, clip(r, 1-eps, 1+eps) A)`` differentiated in the logits,
    ``r = p(a) / p_old(a)``: ``A r (1[j = a] - p_j)``, or 0 where the clip is flat.

    The same as ``methods/ppo.py``'s ``clipped_surrogate_grad``, repeated here because a kernel
    imports no method.
    """
    p = softmax_row(z)
    ratio = p[a] / p_old_a
    if (advantage >= 0.0 and ratio > 1.0 + eps) or (advantage < 0.0 and ratio < 1.0 - eps):
        return [0.0] * len(z)
    scale = advantage * ratio
    return [scale * ((1.0 if j == a else 0.0) - p[j]) for j in range(len(z))]


def ppo_grad_rows(
    logits: Table, tokens: Sequence[int], p_old: Sequence[float], advantages: Sequence[float], eps: float
) -> list[list[float]]:
    """:func:`ppo_grad_row` of every row."""
    return [ppo_grad_row(z, a, po, adv, eps) for z, a, po, adv in zip(logits, tokens, p_old, advantages)]


def ppo_batch_step(
    logits: Table,
    ref_logits: Table,
    u: Sequence[float],
    weights: Sequence[float],
    beta: float,
    ref_normalized: bool = False,
) -> tuple[list[int], list[float], list[float], list[float], list[list[float]]]:
    """Benchmark B3's step on every row: the lesson's ``rlhf_step`` up to its first PPO epoch.

    ``p = softmax(z)``; ``a`` sampled with ``u[i]``; ``kl = KL(p || softmax(z_ref))``;
    ``reward = weights[a] - beta * kl``, which is the advantage (no baseline); and the clipped
    surrogate's gradient at the first epoch, where the policy is the one that sampled, so the
    ratio is 1, the clip cannot act and the gradient is ``reward * (1[j = a] - p_j)``.
    Returns ``(tokens, kl, reward, p_token, grad)``.
    """
    tokens, kls, rewards, p_tokens, grads = [], [], [], [], []
    for z, z_ref, ui in zip(logits, ref_logits, u):
        p = softmax_row(z)
        a = sample_index(p, ui)
        kl = kl_row(z, z_ref, ref_normalized)
        reward = weights[a] - beta * kl
        tokens.append(a)
        kls.append(kl)
        rewards.append(reward)
        p_tokens.append(p[a])
        grads.append([reward * ((1.0 if j == a else 0.0) - p[j]) for j in range(len(z))])
    return tokens, kls, rewards, p_tokens, grads


def stream_sum(a: Table, b: Table) -> float:
    """``sum(a) + sum(b)``, left to right: the read-only memory pass of benchmark B3."""
    total = 0.0
    for table in (a, b):
        for row in table:
            for x in row:
                total += x
    return total


def stream_add(a: Table, b: Table) -> list[list[float]]:
    """``a + b`` entry by entry: the memory-ceiling pass of benchmark B3 (two tables read,
    one written)."""
    return [[x + y for x, y in zip(ra, rb)] for ra, rb in zip(a, b)]
