"""B1 (SPEC 5) through ``sweep_rlhf``: 3 betas x 100 seeds x 2,000 steps, all runs at once.

Contenders, in one process, taking turns (best of ``--repeats``):
  rust sweep   ``rl.sweep_rlhf`` on every core, and again on one thread (the scaling figure);
  numpy        ``benches/numpy_impl.py``: every run in lock-step, vectorised across runs;
  reference    ``rlhf_fast.reference.train_rlhf`` on ``--ref-seeds`` seeds per beta,
               extrapolated per step (said so in the output).
Also the time to answer: a fresh ``python -c`` that imports rlhf_fast, trains the RM and runs
the whole sweep, interpreter start included.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np
from _common import b1_reward_model, interleaved, paired_ratios, rate, ratio, table
from numpy_impl import train_rlhf_batch, w_vector

import rlhf_fast as rl
from rlhf_fast import reference as ref_impl

BETAS = (0.0, 0.1, 1.0)
TIME_TO_ANSWER = """
import rlhf_fast as rl
w = rl.train_rm(rl.make_dataset(500, 0), epochs=5, lr=0.1)
result = rl.sweep_rlhf(w, betas=[0.0, 0.1, 1.0], seeds={seeds}, steps={steps}, record_every={record_every})
print(result.summary_table())
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=100, help="seeds per beta (default 100)")
    parser.add_argument("--steps", type=int, default=2000, help="steps per run (default 2000)")
    parser.add_argument("--ref-seeds", type=int, default=3, help="seeds per beta the reference runs (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many rounds (default 3)")
    parser.add_argument("--pairs", type=int, default=9, help="1-thread/all-cores pairs for the scaling median (default 9)")
    parser.add_argument("--quick", action="store_true", help="8 seeds, 200 steps, 1 reference seed, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.steps, args.ref_seeds, args.repeats, args.pairs = 8, 200, 1, 1, 1

    w = b1_reward_model(rl)
    n_runs = len(BETAS) * args.seeds
    steps = n_runs * args.steps
    ref_steps = len(BETAS) * args.ref_seeds * args.steps
    numpy_betas = np.repeat(BETAS, args.seeds)

    def reference_subset():
        runs = []
        for beta in BETAS:
            for seed in range(args.ref_seeds):
                theta = ref_impl.init_policy()
                runs.append(ref_impl.train_rlhf(theta, ref_impl.init_policy(), w, args.steps, seed, beta=beta))
        return runs

    def rust_sweep(**options):
        return lambda: rl.sweep_rlhf(w, betas=list(BETAS), seeds=args.seeds, steps=args.steps, **options)

    contenders = {
        "rust sweep, all cores": rust_sweep(),
        "rust sweep, 1 thread": rust_sweep(n_threads=1),
        "rust sweep, summaries only": rust_sweep(record_every=0),
        "numpy, runs in lock-step": lambda: train_rlhf_batch(w_vector(w), numpy_betas, args.steps),
        "reference (subset)": reference_subset,
    }
    best, results = interleaved(contenders, args.repeats)

    sweep = results["rust sweep, all cores"]
    for i in range(len(BETAS)):
        for seed in range(args.ref_seeds):
            expected = results["reference (subset)"][i * args.ref_seeds + seed]
            np.testing.assert_array_equal(sweep.token[i, seed], expected["token"])
            np.testing.assert_allclose(sweep.objective_kl[i, seed], expected["kl"], rtol=1e-9, atol=1e-12)

    per_second = {name: (ref_steps if name.startswith("reference") else steps) / s for name, s in best.items()}
    print(
        f"B1 via sweep_rlhf: betas {BETAS} x {args.seeds} seeds x {args.steps} steps = {steps:,} steps; "
        f"{os.cpu_count()} cores, {sweep.simd} vector path; best of {args.repeats}\n"
    )
    table(
        ["contender", "steps", "seconds", "steps/s"],
        [
            [name, f"{ref_steps if name.startswith('reference') else steps:,}", f"{best[name]:.3f}", rate(per_second[name])]
            for name in contenders
        ],
    )
    print(
        f"\nThe reference ran {args.ref_seeds} seed(s) per beta ({ref_steps:,} steps) and is extrapolated per step; "
        "the sweep's runs for those seeds were checked against it (tokens identical, KL within 1e-9)."
    )
    print("NumPy does the same work on numpy's own random stream (benches/numpy_impl.py checks its arithmetic).")

    scaling = paired_ratios(rust_sweep(n_threads=1), rust_sweep(), args.pairs)

    script = TIME_TO_ANSWER.format(seeds=args.seeds, steps=args.steps, record_every=1)
    answer, _ = interleaved({"time to answer": lambda: subprocess.run([sys.executable, "-c", script], check=True,
                                                                         capture_output=True)}, args.repeats)
    fast = per_second["rust sweep, all cores"]
    print(
        f"\nratios: sweep/reference {ratio(fast / per_second['reference (subset)'])}   "
        f"sweep/numpy {ratio(fast / per_second['numpy, runs in lock-step'])}   "
        f"summaries-only/full history {ratio(per_second['rust sweep, summaries only'] / fast)}"
    )
    print(
        f"all cores/1 thread: median {ratio(scaling[len(scaling) // 2])} of {len(scaling)} back-to-back pairs "
        f"(range {ratio(scaling[0])}-{ratio(scaling[-1])}); best all cores/best 1 thread "
        f"{ratio(fast / per_second['rust sweep, 1 thread'])}"
    )
    print(
        f"time to answer (fresh interpreter: import, RM, the whole sweep, print the summary): "
        f"{answer['time to answer']:.3f} s"
    )


if __name__ == "__main__":
    main()
