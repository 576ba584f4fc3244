"""Twin of rust/methods/dpo.rs: Direct Preference Optimisation on one prompt's logits.

The lesson's bag-of-tokens likelihood: ``log pi(y)`` is the sum of its tokens'
log-probabilities (tokens drawn independently, matching the bag-of-tokens RM). TRL's loss
family (``loss_type`` ``sigmoid``, ``robust``, ``ipo``, ``hinge``, with cDPO's
``label_smoothing``) is written as docs/METHODS.md section 2 writes it: a function of
``u = (log pi(y+) - log ref(y+)) - (log pi(y-) - log ref(y-))`` and its derivative in ``u``,
with ``du / dlogit_j = (count_j(y+) - |y+| p_j) - (count_j(y-) - |y-| p_j)``. IPO, as TRL
computes it, averages each response's log-ratio over its tokens first:
``u = (log pi(y+) - log ref(y+)) / |y+| - (log pi(y-) - log ref(y-)) / |y-|``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

from ... import _checks as checks
from ..kernels.logistic import sigmoid, softplus
from ..kernels.softmax import log_softmax_row, softmax_row

DPO_LOSS_TYPES = ("sigmoid", "robust", "ipo", "hinge")


@dataclass(frozen=True, slots=True)
class DpoParams:
    """The hyper-parameters of a DPO step (TRL's names)."""

    beta: float
    lr: float
    loss_type: str
    label_smoothing: float

    @classmethod
    def new(cls, beta: float, lr: float, loss_type: str, label_smoothing: float) -> DpoParams:
        """The parameters, checked: ``beta > 0``, ``lr > 0``, ``label_smoothing`` in ``[0, 0.5)``
        and non-zero only for the ``sigmoid`` and ``robust`` losses."""
        beta = checks.positive("beta", beta)
        lr = checks.positive("lr", lr)
        loss_type = checks.option("loss_type", loss_type, DPO_LOSS_TYPES)
        ls = checks.finite("label_smoothing", label_smoothing)
        if not 0.0 <= ls < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {ls!r}")
        if ls != 0.0 and loss_type not in ("sigmoid", "robust"):
            raise ValueError(
                f"label_smoothing is only defined for loss_type 'sigmoid' and 'robust', "
                f"got {ls!r} with loss_type={loss_type!r}"
            )
        return cls(beta, lr, loss_type, ls)

    def loss_and_step(self, u: float) -> tuple[float, float]:
        """The loss at ``u`` (TRL's "logits") and the SGD step ``lr * dloss/du`` on it."""
        beta = self.beta
        lr = self.lr
        ls = self.label_smoothing
        h = beta * u
        if self.loss_type == "sigmoid":
            loss = (1 - ls) * softplus(-h) + ls * softplus(h)
            # dloss/du = g * beta; the step multiplies lr * g * beta in this order, the
            # multiplication order of the original dpo_step (bit-identical for ls = 0).
            g = ls * sigmoid(h) - (1 - ls) * sigmoid(-h)
            return loss, lr * g * beta
        if self.loss_type == "robust":
            loss = ((1 - ls) * softplus(-h) - ls * softplus(h)) / (1 - 2 * ls)
            dloss_du = -beta * ((1 - ls) * sigmoid(-h) + ls * sigmoid(h)) / (1 - 2 * ls)
            return loss, lr * dloss_du
        if self.loss_type == "ipo":
            t = u - 1 / (2 * beta)
            dloss_du = 2 * t
            return t * t, lr * dloss_du
        # hinge
        dloss_du = -beta if h < 1 else 0.0
        return max(0.0, 1 - h), lr * dloss_du


class DpoOutcome(NamedTuple):
    """What one DPO step saw before it updated (TRL's ``rewards/*`` metrics)."""

    loss: float
    chosen: float  # rewards/chosen = beta * (log pi(y+) - log ref(y+))
    rejected: float  # rewards/rejected = beta * (log pi(y-) - log ref(y-))
    margin: float  # rewards/margins = chosen - rejected
    accuracy: float  # rewards/accuracies: 1.0 if chosen > rejected else 0.0


def dpo_update(
    logits: list[float],
    ref_log_probs: Sequence[float],
    chosen: Sequence[int],
    rejected: Sequence[int],
    params: DpoParams,
) -> DpoOutcome:
    """One DPO step on one prompt's ``logits``; mutates them, returns what it saw before.

    ``ref_log_probs`` is the frozen reference's log-softmax for the prompt, ``chosen`` and
    ``rejected`` the responses' token ids (left to right, repeats count).
    """
    logp = log_softmax_row(logits)
    pos_logratio = 0.0
    for a in chosen:
        pos_logratio += logp[a] - ref_log_probs[a]
    neg_logratio = 0.0
    for a in rejected:
        neg_logratio += logp[a] - ref_log_probs[a]
    len_pos = float(len(chosen))
    len_neg = float(len(rejected))
    # TRL's IPO averages each response's log-ratio over its tokens; the other losses sum them.
    ipo = params.loss_type == "ipo"
    if ipo:
        u = pos_logratio / len_pos - neg_logratio / len_neg
    else:
        u = pos_logratio - neg_logratio
    loss, step = params.loss_and_step(u)

    # d u / d logits_j = (count_j(y+) - len(y+) p_j) - (count_j(y-) - len(y-) p_j), each term
    # divided by its response's length for IPO
    p = softmax_row(logits)
    for j in range(len(logits)):
        count_pos = float(chosen.count(j))
        count_neg = float(rejected.count(j))
        if ipo:
            du_j = (count_pos / len_pos - p[j]) - (count_neg / len_neg - p[j])
        else:
            du_j = (count_pos - len_pos * p[j]) - (count_neg - len_neg * p[j])
        logits[j] -= step * du_j
    chosen_reward = params.beta * pos_logratio
    rejected_reward = params.beta * neg_logratio
    return DpoOutcome(
        loss,
        chosen_reward,
        rejected_reward,
        chosen_reward - rejected_reward,
        1.0 if chosen_reward > rejected_reward else 0.0,
    )


def pair_label(target: float, label_smoothing: float) -> tuple[bool, float]:
    """How DPO learns from a pair labelled ``target`` (the probability its first response is
    preferred): ``(first_is_chosen, smoothing)``.

    The chosen response is the one the label favours (the first when ``target >= 0.5``) and
    ``smoothing`` the chance its label is wrong: ``s = min(target, 1 - target)``, itself
    flipped with probability ``label_smoothing`` (cDPO's), ``s + ls - 2 s ls``. With that as
    the step's label smoothing the sigmoid loss is ``-t' log sigmoid(h) - (1 - t') log
    sigmoid(-h)``, ``h`` the DPO logit of the first over the second and ``t' = (1 - ls) target
    + ls (1 - target)``; a hard label (0 or 1) gives ``label_smoothing`` itself, bit for bit.
    """
    first_is_chosen = target >= 0.5
    own = 1.0 - target if first_is_chosen else target  # exact for target in [0.5, 1] (Sterbenz)
    return first_is_chosen, own + label_smoothing - 2.0 * own * label_smoothing


def bag_dpo_update(
    logits: list[float],
    ref_log_probs: Sequence[float],
    chosen: Sequence[int],
    rejected: Sequence[int],
    smoothing: float,
    params: DpoParams,
) -> DpoOutcome:
    """One DPO step on one prompt's ``logits`` from two responses of the same length ``L``.

    The loss and metrics are :func:`dpo_update`'s with the pair's label ``smoothing``
    (:func:`pair_label`) in place of ``params``'; the gradient is its ``du / dlogit_j`` with
    the policy's terms cancelled, as they do for equal lengths: ``count_j(y+) - count_j(y-)``
    (over ``L`` for IPO), so only the responses' tokens move, each once, in the order they
    first occur. Mutates ``logits``; returns what the step saw before the update.
    """
    logp = log_softmax_row(logits)
    pos_logratio = 0.0
    for a in chosen:
        pos_logratio += logp[a] - ref_log_probs[a]
    neg_logratio = 0.0
    for a in rejected:
        neg_logratio += logp[a] - ref_log_probs[a]
    length = float(len(chosen))
    ipo = params.loss_type == "ipo"
    u = pos_logratio / length - neg_logratio / length if ipo else pos_logratio - neg_logratio
    loss, step = replace(params, label_smoothing=smoothing).loss_and_step(u)

    counts: dict[int, int] = {}
    for a in chosen:
        counts[a] = counts.get(a, 0) + 1
    for a in rejected:
        counts[a] = counts.get(a, 0) - 1
    for a, difference in counts.items():
        if difference:
            du = difference / length if ipo else float(difference)
            logits[a] -= step * du
    chosen_reward = params.beta * pos_logratio
    rejected_reward = params.beta * neg_logratio
    return DpoOutcome(
        loss,
        chosen_reward,
        rejected_reward,
        chosen_reward - rejected_reward,
        1.0 if chosen_reward > rejected_reward else 0.0,
    )
