"""Twin of rust/methods/sequence_stats.rs: a sequence world's policy's exact statistics.

A response to prompt ``p`` draws ``a_t ~ pi_t = softmax(theta[p, t])`` until its first EOS
(token 0) or ``L`` tokens. With ``alive_0 = 1``, ``alive_{t+1} = alive_t (1 - pi_t(EOS))``:
expected length ``sum_t alive_t`` (the EOS included), content length ``sum_t alive_{t+1}``,
sequence KL ``sum_t alive_t KL(pi_t || ref_t)``, expected copies of ``v`` ``sum_t alive_t
pi_t(v)`` and the chance ``v`` appears, ``1 - sum_t q_t pi_t(EOS) - q_L`` with ``q_0 = 1``,
``q_{t+1} = q_t (1 - pi_t(EOS) - pi_t(v))``. Column 0 of the counts and of the appearances is
the chance of an EOS, ``1 - alive_L``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..kernels.softmax import log_softmax_row

EOS = 0


def prompt_stats(logits: Sequence[Sequence[float]], ref_log_probs: Sequence[Sequence[float]]
                 ) -> tuple[list[float], float, float, float, list[float], list[float]]:
    """``(alive, length, content_length, kl, counts, appears)`` of one prompt's policy rows
    ``logits`` (``[L][V]``, finite) against the reference's log-probabilities (same shape)."""
    max_len, vocab = len(logits), len(logits[0])
    alive = [1.0] * (max_len + 1)
    counts = [0.0] * vocab
    stays = [1.0] * vocab
    never = [0.0] * vocab
    length = kl = 0.0
    for t in range(max_len):
        log_p = log_softmax_row(logits[t])
        p = [math.exp(lp) for lp in log_p]
        eos, now = p[EOS], alive[t]
        length += now
        kl_t = 0.0
        # a token of probability 0 adds nothing (its log-probability may be -inf)
        for pv, lp, lq in zip(p, log_p, ref_log_probs[t]):
            if pv > 0.0:
                kl_t += pv * (lp - lq)
        kl += now * max(kl_t, 0.0)
        for v in range(vocab):
            counts[v] += now * p[v]
            never[v] += stays[v] * eos
            stays[v] *= max(1.0 - eos - p[v], 0.0)
        alive[t + 1] = now * (1.0 - eos)
    ended = 1.0 - alive[max_len]
    appears = [min(max(1.0 - (n + q), 0.0), 1.0) for n, q in zip(never, stays)]
    appears[EOS] = counts[EOS] = ended
    content_length = 0.0
    for a in alive[1:]:
        content_length += a
    return alive, length, content_length, kl, counts, appears


def sequence_stats(logits: Sequence[Sequence[Sequence[float]]], ref_logits: Sequence[Sequence[Sequence[float]]]
                   ) -> tuple[list, list, list, list, list, list]:
    """Every prompt's :func:`prompt_stats`, as six lists over the prompts."""
    out: tuple[list, list, list, list, list, list] = ([], [], [], [], [], [])
    for rows, ref_rows in zip(logits, ref_logits):
        for series, value in zip(out, prompt_stats(rows, [log_softmax_row(row) for row in ref_rows])):
            series.append(value)
    return out
