"""The lesson's hard exercise as one comparison: PPO-RLHF, DPO, GRPO and Best-of-N on the
lesson's data, in final RM score, KL to the reference, held-out preference accuracy and
compute.

Every method starts from the uniform SFT policy, which is also the frozen reference. The
training pairs and the held-out pairs come from :func:`rlhf_fast.heldout.heldout_split`: 500
lesson pairs drawn from 7 of the 10 good and 7 of the 10 bad response bags, and held-out pairs
drawn from the other 3 + 3, so that no held-out response occurs in training (every word
does). The RM (for PPO, GRPO and Best-of-N, and to score every final policy) is
``train_rm(train, epochs=5, lr=0.1)``; DPO trains on the same pairs directly. The held-out
pairs measure how well each policy's implied reward ``log pi(y|x) - log pi_ref(y|x)`` orders
preferences between responses it has never seen.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import reference
from .heldout import heldout_split
from .reference import PROMPTS, VOCAB
from .result import new_figure, place_labels

METHODS = ("PPO", "DPO", "GRPO", "Best-of-N")


@dataclass
class Row:
    """One setting of one method, statistics over its seeds."""

    method: str
    setting: str
    score: np.ndarray  # final exact expected RM score, one per seed
    kl: np.ndarray  # final exact KL(pi || pi_ref), one per seed
    accuracy: np.ndarray  # held-out accuracy of the implied reward, one per seed
    seconds: float  # wall time for all seeds, RM training included where the method needs an RM
    softmaxes: int  # policy softmax evaluations per seed, RM training excluded (it uses none)
    rm_steps: int  # Bradley-Terry SGD steps the method depends on (0 for DPO)


@dataclass
class Comparison:
    """What :func:`compare` measured: one :class:`Row` per method and setting."""

    rows: list[Row]
    train_pairs: int
    heldout_pairs: int
    seeds: int
    rm_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        """One line per method and setting: mean ± std over seeds."""
        header = ["method", "setting", "E[RM score]", "KL to ref", "held-out acc", "wall s", "softmaxes", "RM steps"]
        lines = []
        for row in self.rows:
            lines.append([
                row.method,
                row.setting,
                _spread(row.score),
                _spread(row.kl),
                _spread(row.accuracy),
                f"{row.seconds:.3f}",
                f"{row.softmaxes:,}",
                f"{row.rm_steps:,}",
            ])
        widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
        out = ["  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
        out.append("  ".join("-" * w for w in widths))
        for line in lines:
            out.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))))
        return "\n".join(out)

    def to_rows(self) -> list[dict[str, Any]]:
        """Flat records (mean and std per statistic), e.g. for a CSV."""
        records = []
        for row in self.rows:
            record: dict[str, Any] = {"method": row.method, "setting": row.setting}
            for name in ("score", "kl", "accuracy"):
                values = getattr(row, name)
                record[name] = float(values.mean())
                record[f"{name}_std"] = _std(values)
            record.update(seconds=row.seconds, softmaxes=row.softmaxes, rm_steps=row.rm_steps)
            records.append(record)
        return records

    def plot(self, path: str | os.PathLike | None = None):
        """RM score against KL to the reference for every method: the frontier.

        Each setting is a marker (mean ± std over seeds) with its label beside it, placed by
        :func:`~rlhf_fast.result.place_labels` where it covers no other label, marker, line
        or the legend; settings that land on the same point (DPO's robust loss without label
        smoothing is its sigmoid loss) share one label.

        Parameters
        ----------
        path : str or os.PathLike, optional
            Save the figure there (PNG, PDF, ... by the suffix). From a script that never
            imported pyplot the figure is then a bare one, pyplot's otherwise
            (:func:`~rlhf_fast.result.new_figure`).

        Returns
        -------
        matplotlib.figure.Figure
        """
        fig = new_figure(path, figsize=(9, 6), layout="constrained")
        ax = fig.subplots()
        style = {"PPO": ("tab:blue", "o"), "DPO": ("tab:orange", "s"), "GRPO": ("tab:green", "^"),
                 "Best-of-N": ("tab:red", "D")}
        labels: dict[tuple[str, float, float], list[str]] = {}
        for method in METHODS:
            rows = [r for r in self.rows if r.method == method]
            if not rows:
                continue
            colour, marker = style[method]
            kls = np.array([r.kl.mean() for r in rows])
            scores = np.array([r.score.mean() for r in rows])
            ax.errorbar(kls, scores, xerr=[_std(r.kl) for r in rows], yerr=[_std(r.score) for r in rows],
                        fmt=marker, color=colour, label=method, capsize=3, markersize=7, linestyle="none")
            if method in ("Best-of-N", "PPO"):
                order = np.argsort(kls)
                ax.plot(kls[order], scores[order], color=colour, alpha=0.4)
            for r, x, y in zip(rows, kls, scores):
                labels.setdefault((colour, round(x, 3), round(y, 3)), []).append(r.setting)
        ax.axvline(math.log(len(VOCAB)), color="grey", linestyle=":", linewidth=1, label="log V: a single token")
        ax.set(xlabel="KL(π || π_ref), exact, averaged over prompts", ylabel="expected RM score of the final policy",
               title=f"RM score against KL: PPO, DPO, GRPO, Best-of-N (mean ± std over {self.seeds} seeds)")
        legend = ax.legend(loc="lower right")
        fig.draw_without_rendering()  # the layout and the limits are final: labels are placed on them
        place_labels(ax, [(x, y, " = ".join(settings), colour) for (colour, x, y), settings in labels.items()],
                     avoid=[legend.get_window_extent()], marker_size=7)
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig


def _std(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if values.size > 1 else 0.0


def _spread(values: np.ndarray) -> str:
    # round(., 3) + 0.0: a mean of -7e-16 (the untrained policy's score) is "0.000", not "-0.000"
    return f"{round(float(values.mean()), 3) + 0.0:.3f} ± {_std(values):.3f}"


def _counts(pairs: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    index = {tok: i for i, tok in enumerate(VOCAB)}
    prompts = np.array([PROMPTS.index(x) for x, _, _ in pairs])
    chosen = np.zeros((len(pairs), len(VOCAB)))
    rejected = np.zeros((len(pairs), len(VOCAB)))
    for i, (_, y_pos, y_neg) in enumerate(pairs):
        for tok in y_pos.split():
            chosen[i, index[tok]] += 1
        for tok in y_neg.split():
            rejected[i, index[tok]] += 1
    return prompts, chosen, rejected


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def implied_accuracy(log_policy: np.ndarray, log_ref: np.ndarray, pairs: list) -> np.ndarray:
    """Held-out accuracy of the implied reward ``log pi(y|x) - log pi_ref(y|x)`` of each policy.

    ``log_policy``: ``[..., P, V]`` log-probabilities; one accuracy per leading index.
    """
    prompts, chosen, rejected = _counts(pairs)
    implied = log_policy - log_ref  # [..., P, V]
    rows = implied[..., prompts, :]  # [..., n, V]
    margin = np.einsum("...nv,nv->...n", rows, chosen) - np.einsum("...nv,nv->...n", rows, rejected)
    return (margin > 0).mean(axis=-1)


def compare(
    *,
    seeds: int = 5,
    steps: int = 2000,
    ppo_betas=(0.0, 0.1, 1.0),
    dpo_betas=(0.1, 1.0),
    dpo_loss_types=("sigmoid", "ipo", "hinge", "robust"),
    dpo_epochs: int = 4,
    grpo_betas=(0.04,),
    bon_ns=(1, 2, 4, 8, 16, 64),
    train_pairs: int = 500,
    heldout_pairs: int = 1000,
    progress: bool = False,
) -> Comparison:
    """Runs every method on the lesson's data and returns the :class:`Comparison`.

    PPO: ``sweep_rlhf`` over ``ppo_betas`` x ``seeds`` x ``steps``; DPO: ``sweep_dpo`` over
    ``dpo_betas`` x ``dpo_loss_types`` x ``dpo_epochs`` epochs of the training pairs, each
    seed shuffling their order; GRPO: ``sweep_grpo`` over ``grpo_betas`` x ``seeds`` x
    ``steps`` (8 generations per step); Best-of-N from the SFT policy, exact, for ``bon_ns``.

    Parameters
    ----------
    seeds : int, optional
        Seeds per PPO, DPO and GRPO setting.
    steps : int, optional
        PPO and GRPO steps per run.
    ppo_betas, dpo_betas, grpo_betas : sequence of float, optional
        The KL coefficients of each method, one setting each.
    dpo_loss_types : sequence of str, optional
        DPO's losses, each with every ``dpo_betas``.
    dpo_epochs : int, optional
        DPO's epochs over the training pairs.
    bon_ns : sequence of int, optional
        Best-of-N's ``n``, one setting each.
    train_pairs, heldout_pairs : int, optional
        Sizes of the training and held-out sets of :func:`rlhf_fast.heldout.heldout_split`
        (seed 0), which share no response bag.
    progress : bool, optional
        Show a progress bar over the settings (on stderr).

    Returns
    -------
    Comparison
        One row per method and setting, with the statistics over seeds.

    Raises
    ------
    ValueError, TypeError
        A setting the methods refuse (named by the method's own check).
    """
    from tqdm.auto import tqdm

    import rlhf_fast as rl

    pairs, heldout = heldout_split(train_pairs, heldout_pairs)
    started = time.perf_counter()
    w = rl.train_rm(pairs, epochs=5, lr=0.1)
    rm_seconds = time.perf_counter() - started
    rm_steps = 5 * len(pairs)
    log_ref = _log_softmax(np.zeros((len(PROMPTS), len(VOCAB))))
    rows: list[Row] = []
    settings = len(ppo_betas) + len(dpo_loss_types) * len(dpo_betas) + len(grpo_betas) + len(bon_ns)
    bar = tqdm(total=settings, unit="setting", desc="compare", leave=False, disable=not progress)

    with bar:
        for beta in ppo_betas:
            started = time.perf_counter()
            result = rl.sweep_rlhf(w, betas=[beta], seeds=seeds, steps=steps, record_every=0)
            seconds = time.perf_counter() - started + rm_seconds
            accuracy = implied_accuracy(_log_softmax(result.final_theta[0]), log_ref, heldout)
            rows.append(Row("PPO", f"β={beta:g}", result.runs["final_score"][0], result.runs["final_kl"][0],
                            accuracy, seconds, steps * 4, rm_steps))
            bar.update()

        for loss_type in dpo_loss_types:
            for beta in dpo_betas:
                started = time.perf_counter()
                result = rl.sweep_dpo(pairs, betas=[beta], seeds=seeds, loss_type=loss_type, epochs=dpo_epochs, w=w,
                                      record_every=0)
                seconds = time.perf_counter() - started
                final = result.final_theta.reshape(-1, len(PROMPTS), len(VOCAB))
                accuracy = implied_accuracy(_log_softmax(final), log_ref, heldout)
                # per pair step: log-softmax of the policy and softmax for the gradient (the reference's is cached)
                rows.append(Row("DPO", f"{loss_type} β={beta:g}", result.runs["final_score"].ravel(),
                                result.runs["final_kl"].ravel(), accuracy, seconds, 2 * dpo_epochs * len(pairs), 0))
                bar.update()

        for beta in grpo_betas:
            started = time.perf_counter()
            result = rl.sweep_grpo(w, betas=[beta], seeds=seeds, steps=steps, record_every=0)
            seconds = time.perf_counter() - started + rm_seconds
            final = result.final_theta.reshape(-1, len(PROMPTS), len(VOCAB))
            accuracy = implied_accuracy(_log_softmax(final), log_ref, heldout)
            rows.append(Row("GRPO", f"β={beta:g} G=8", result.runs["final_score"].ravel(),
                            result.runs["final_kl"].ravel(), accuracy, seconds, steps * 2, rm_steps))
            bar.update()

        for n in bon_ns:
            started = time.perf_counter()
            out = rl.best_of_n(reference.init_policy(), w, n)
            seconds = time.perf_counter() - started + rm_seconds
            with np.errstate(divide="ignore"):
                log_bon = np.log(np.array([out["distribution"][x] for x in PROMPTS]))
            accuracy = np.array([implied_accuracy(log_bon, log_ref, heldout)])
            # Best-of-N is deterministic here (exact distribution): no spread over seeds.
            rows.append(Row("Best-of-N", f"N={n}", np.array([out["expected_score"]]), np.array([out["kl_exact"]]),
                            accuracy, seconds, len(PROMPTS), rm_steps))
            bar.update()

    return Comparison(rows=rows, train_pairs=len(pairs), heldout_pairs=len(heldout), seeds=seeds,
                      rm_seconds=rm_seconds, extra={"w": w, "kl_analytic": {n: math.log(n) - (n - 1) / n for n in bon_ns}})
