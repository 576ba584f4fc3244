"""B1 (SPEC 5): the lesson sweep, beta in {0, 0.1, 1.0} x seeds x 2000 PPO-RLHF steps, in steps/s.

Contenders, in one process, taking turns, best of `--repeats`:
  reference  rlhf_fast.reference.train_rlhf, one run at a time, on the first `--ref-seeds`
             seeds per beta only (it is slow); its steps/s is extrapolated per step.
  rust       rlhf_fast.train_rlhf (the public drop-in API) called from Python, one run at a
             time, single-threaded, over every (beta, seed).
  numpy      benches/numpy_impl.py: all runs in lock-step as [R, 3, 8] arrays; same work,
             numpy's own random stream.
The Rust runs of the reference subset must give the reference's tokens exactly (and theta
within 1e-9), and the NumPy code replaying the reference's streams must too: asserted.

    python benches/b1_lesson_sweep.py [--seeds 100] [--ref-seeds 3] [--steps 2000] [--quick]
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

import numpy_impl
import rlhf_fast as rl
from _common import b1_reward_model, interleaved, rate, ratio, table

BETAS = (0.0, 0.1, 1.0)
CONFIG = dict(eps=0.2, lr=0.05, ppo_epochs=4)


def sweep(train_rlhf, w, seeds, steps, keep=()):
    """One run per (beta, seed), one after the other; returns the (tokens, theta) of ``keep`` runs."""
    kept = {}
    for beta in BETAS:
        for seed in seeds:
            theta = rl.init_policy()
            hist = train_rlhf(theta, rl.init_policy(), w, steps, seed, beta=beta, **CONFIG)
            if (beta, seed) in keep:
                kept[beta, seed] = (list(hist["token"]), [theta[x] for x in rl.PROMPTS])
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100, help="seeds per beta (default 100)")
    parser.add_argument("--ref-seeds", type=int, default=3, help="seeds per beta the reference runs")
    parser.add_argument("--steps", type=int, default=2000, help="steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many rounds")
    parser.add_argument("--quick", action="store_true", help="4 seeds, 1 reference seed, 200 steps, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.ref_seeds, args.steps, args.repeats = 4, 1, 200, 1
    args.ref_seeds = min(args.ref_seeds, args.seeds)
    warnings.simplefilter("ignore", rl.KLWarning)  # beta = 0 drifts past the monitor, by design

    w = b1_reward_model(rl)
    seeds, ref_seeds, steps = range(args.seeds), range(args.ref_seeds), args.steps
    subset = {(beta, seed) for beta in BETAS for seed in ref_seeds}
    betas = np.repeat(BETAS, args.seeds)  # one run per (beta, seed)
    w_vec = numpy_impl.w_vector(w)

    best, results = interleaved(
        {
            "reference": lambda: sweep(rl.reference.train_rlhf, w, ref_seeds, steps, subset),
            "rust": lambda: sweep(rl.train_rlhf, w, seeds, steps, subset),
            "numpy": lambda: numpy_impl.train_rlhf_batch(w_vec, betas, steps, seed=0, **CONFIG),
        },
        args.repeats,
    )

    # never time wrong work: Rust must reproduce the reference exactly on the subset ...
    for run, (ref_tokens, ref_theta) in results["reference"].items():
        tokens, theta = results["rust"][run]
        assert tokens == ref_tokens, f"Rust tokens differ from the reference for (beta, seed) = {run}"
        assert np.allclose(theta, ref_theta, rtol=1e-9, atol=1e-9), f"Rust theta differs for {run}"
    # ... and the NumPy code, fed the reference's streams, must too
    runs = sorted(subset)
    prompts, uniforms = numpy_impl.reference_streams([seed for _, seed in runs], steps)
    replay = numpy_impl.train_rlhf_batch(
        w_vec, [beta for beta, _ in runs], steps, prompts=prompts, uniforms=uniforms, **CONFIG
    )
    for r, run in enumerate(runs):
        ref_tokens, ref_theta = results["reference"][run]
        assert replay["token"][:, r].tolist() == ref_tokens, f"NumPy tokens differ for {run}"
        assert np.allclose(replay["theta"][r], ref_theta, rtol=1e-9, atol=1e-9), f"NumPy theta differs for {run}"

    n_runs = {"reference": len(subset), "rust": len(BETAS) * args.seeds, "numpy": len(BETAS) * args.seeds}
    speed = {name: n_runs[name] * steps / best[name] for name in best}
    labels = {
        "reference": f"reference ({args.ref_seeds} seeds/beta, extrapolated)",
        "rust": "rust rl.train_rlhf, one run per call",
        "numpy": "numpy, all runs in lock-step",
    }
    total = len(BETAS) * args.seeds * steps
    seed_list = "seed 0" if args.ref_seeds == 1 else f"seeds 0-{args.ref_seeds - 1}"
    print(f"B1 lesson sweep: beta {BETAS} x {args.seeds} seeds x {steps} steps = {total:,} steps, "
          f"eps 0.2, lr 0.05, ppo_epochs 4; best of {args.repeats}\n")
    table(
        ("contender", "runs", "steps", "seconds", "steps/s"),
        [(labels[n], n_runs[n], f"{n_runs[n] * steps:,}", f"{best[n]:.3f}", rate(speed[n])) for n in best],
    )
    print(f"\nThe reference ran {len(subset)} of the {n_runs['rust']} runs ({seed_list} per beta); "
          f"at its steps/s the full sweep would take {total / speed['reference']:.1f} s.")
    print(f"Checked: Rust tokens == reference tokens (theta within 1e-9) on those {len(subset)} runs; "
          "NumPy too when fed the reference's streams (in the timed run it uses numpy's own RNG).")
    print(f"\nrust/reference {ratio(speed['rust'] / speed['reference'])}   "
          f"rust/numpy {ratio(speed['rust'] / speed['numpy'])}   "
          f"numpy/reference {ratio(speed['numpy'] / speed['reference'])}")


if __name__ == "__main__":
    main()
