"""DPO, GRPO and Best-of-N sweeps: Rust vs the reference vs NumPy, in one process.

Per method, a sweep of many runs (Rust, every core and one thread), the same work in NumPy
vectorised across runs (numpy's own random stream where the method samples: the same work,
not the same stream), and the reference on one run, extrapolated per step (said so below).
A DPO step is one preference pair, a GRPO step one group of 8 samples, a Best-of-N step one
Monte-Carlo draw of n samples.
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import b1_reward_model, interleaved, rate, ratio, table
from numpy_impl import _softmax, w_vector

import rlhf_fast as rl
from rlhf_fast import reference as ref_impl

P, V = len(ref_impl.PROMPTS), len(ref_impl.VOCAB)
ZEROS = np.zeros((P, V))


def _log_softmax(z):
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def numpy_dpo(pairs, betas, epochs, lr=0.05):
    """Sigmoid-loss DPO for every beta at once: one pair at a time, all runs in lock-step."""
    index = {tok: i for i, tok in enumerate(ref_impl.VOCAB)}
    prompts = np.array([ref_impl.PROMPTS.index(x) for x, _, _ in pairs])
    count_pos, count_neg = np.zeros((len(pairs), V)), np.zeros((len(pairs), V))
    for i, (_, y_pos, y_neg) in enumerate(pairs):
        for tok in y_pos.split():
            count_pos[i, index[tok]] += 1
        for tok in y_neg.split():
            count_neg[i, index[tok]] += 1
    betas = np.asarray(betas)[:, None]
    theta = np.zeros((len(betas), P, V))
    log_q = _log_softmax(ZEROS)
    for _ in range(epochs):
        for i, x in enumerate(prompts):
            logits = theta[:, x]
            log_p = _log_softmax(logits)
            u = (log_p - log_q[x]) @ (count_pos[i] - count_neg[i])
            scale = lr / (1.0 + np.exp(betas[:, 0] * u)) * betas[:, 0]  # lr * sigmoid(-beta u) * beta
            p = np.exp(log_p)
            du = (count_pos[i] - count_neg[i]) - (count_pos[i].sum() - count_neg[i].sum()) * p
            theta[:, x] = logits + scale[:, None] * du
    return theta


def numpy_grpo(w, betas, steps, group=8, eps=0.2, lr=0.05, seed=0):
    """GRPO (one iteration a step, k3 KL, group-scaled advantages) for every run in lock-step."""
    gen = np.random.default_rng(seed)
    runs = np.arange(len(betas))
    betas = np.asarray(betas)
    theta = np.zeros((len(betas), P, V))
    log_q = _log_softmax(ZEROS)
    for _ in range(steps):
        x = gen.integers(0, P, size=len(runs))
        logits = theta[runs, x]
        p = _softmax(logits)
        cdf = np.cumsum(p, axis=-1)
        tokens = np.minimum((gen.random((len(runs), group))[..., None] >= cdf[:, None, :]).sum(-1), V - 1)
        rewards = w[tokens]
        adv = (rewards - rewards.mean(1, keepdims=True)) / (rewards.std(1, ddof=1, keepdims=True) + 1e-4)
        p_a = np.take_along_axis(p, tokens, axis=1)
        coef = -adv + betas[:, None] * (1.0 - np.exp(log_q[x][runs[:, None], tokens] - np.log(p_a)))
        onehot = tokens[..., None] == np.arange(V)
        grad = (coef[..., None] * (onehot - p[:, None, :])).sum(1) / group
        theta[runs, x] = logits - lr * grad
    return theta


def numpy_best_of_n(w, n, samples, seed=0):
    """Monte-Carlo Best-of-N from the uniform policy: mean kept score."""
    gen = np.random.default_rng(seed)
    tokens = np.minimum((gen.random((samples, n))[..., None] >= np.cumsum(_softmax(ZEROS[0]))).sum(-1), V - 1)
    return w[tokens].max(axis=1).mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many rounds (default 3)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round")
    args = parser.parse_args()
    scale = 0.05 if args.quick else 1.0
    if args.quick:
        args.repeats = 1

    w = b1_reward_model(rl)
    wv = w_vector(w)
    pairs = ref_impl.make_dataset(500, 0)
    dpo_betas = list(np.linspace(0.05, 1.0, max(2, int(40 * scale))))
    dpo_epochs = 4
    grpo_runs, grpo_steps = max(2, int(100 * scale)), max(20, int(2000 * scale))
    bon_seeds, bon_samples = max(2, int(100 * scale)), max(100, int(5000 * scale))

    cases = {
        "DPO (sigmoid, 500 pairs x 4 epochs)": (
            len(dpo_betas) * len(pairs) * dpo_epochs,
            lambda t: rl.sweep_dpo(pairs, betas=dpo_betas, epochs=dpo_epochs, record_every=0, n_threads=t),
            lambda: numpy_dpo(pairs, dpo_betas, dpo_epochs),
            len(pairs) * dpo_epochs,
            lambda: ref_impl.train_dpo(ref_impl.init_policy(), ref_impl.init_policy(), pairs, epochs=dpo_epochs),
        ),
        "GRPO (G=8, 1 iteration)": (
            grpo_runs * grpo_steps,
            lambda t: rl.sweep_grpo(w, betas=[0.04], seeds=grpo_runs, steps=grpo_steps, record_every=0, n_threads=t),
            lambda: numpy_grpo(wv, [0.04] * grpo_runs, grpo_steps),
            grpo_steps // 2,
            lambda: ref_impl.train_grpo(ref_impl.init_policy(), ref_impl.init_policy(), w, grpo_steps // 2, 0),
        ),
        "Best-of-N (n=8, Monte-Carlo)": (
            bon_seeds * bon_samples,
            lambda t: rl.sweep_best_of_n(w, ns=[8], seeds=bon_seeds, samples=bon_samples, n_threads=t),
            lambda: numpy_best_of_n(wv, 8, bon_seeds * bon_samples),
            bon_samples,
            lambda: ref_impl.best_of_n(ref_impl.init_policy(), w, 8, samples=bon_samples, seed=0),
        ),
    }
    rows, ratios = [], []
    for name, (steps, rust, numpy_fn, ref_steps, reference_fn) in cases.items():
        best, _ = interleaved(
            {"all": lambda: rust(None), "one": lambda: rust(1), "numpy": numpy_fn, "ref": reference_fn}, args.repeats
        )
        speed = {k: (ref_steps if k == "ref" else steps) / s for k, s in best.items()}
        rows += [
            [name, "rust sweep, all cores", f"{steps:,}", rate(speed["all"])],
            ["", "rust sweep, 1 thread", f"{steps:,}", rate(speed["one"])],
            ["", "numpy, runs in lock-step", f"{steps:,}", rate(speed["numpy"])],
            ["", "reference, one run (extrapolated)", f"{ref_steps:,}", rate(speed["ref"])],
        ]
        ratios.append(
            f"{name}: rust/reference {ratio(speed['all'] / speed['ref'])}   rust/numpy "
            f"{ratio(speed['all'] / speed['numpy'])}   all cores/1 thread {ratio(speed['all'] / speed['one'])}"
        )
    print(f"DPO, GRPO, Best-of-N sweeps; best of {args.repeats}, steps/s (a step: see the docstring)\n")
    table(["method", "contender", "steps", "steps/s"], rows, left=2)
    print("\nThe reference runs one run and is extrapolated per step; NumPy draws from its own stream.")
    print("\n".join(ratios))


if __name__ == "__main__":
    main()
