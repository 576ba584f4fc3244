"""Command line: ``python -m rlhf_fast demo`` runs the lesson end to end; ``sweep`` runs a grid;
``compare`` sets PPO, DPO, GRPO and Best-of-N side by side."""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import rlhf_fast as rl


def _mean_spread(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {spread:.3f}"


def demo(args: argparse.Namespace) -> int:
    """Reward model, held-out accuracy, then PPO-RLHF for each beta: the lesson in one table."""
    started = time.perf_counter()
    w = rl.train_rm(rl.make_dataset(args.train_pairs, 0), epochs=5, lr=0.1)
    accuracy = rl.pairwise_accuracy(w, rl.make_dataset(args.heldout_pairs, 1))
    rm_seconds = time.perf_counter() - started
    print(f"rlhf_fast {rl.__version__} (backend: {rl.BACKEND})")
    print(f"reward model: {args.train_pairs} pairs, 5 epochs, lr 0.1 -> held-out accuracy {accuracy:.3f}")
    print("weights: " + ", ".join(f"{tok} {w[tok]:+.2f}" for tok in rl.VOCAB))
    print()

    header = f"{'beta':>6}  {'final E[RM score]':>18}  {'mean KL':>15}  {'clip fraction':>15}"
    print(f"PPO-RLHF: {args.steps} steps x {args.seeds} seeds per beta (mean ± std over seeds)")
    print(header)
    print("-" * len(header))
    rlhf_started = time.perf_counter()
    for beta in args.betas:
        scores, kls, clips = [], [], []
        for seed in range(args.seeds):
            theta = rl.init_policy()
            history = rl.train_rlhf(theta, rl.init_policy(), w, args.steps, seed, beta=beta)
            scores.append(rl.expected_score(theta, w))
            kls.append(float(history["mean_kl"][-1]))
            clips.append(float(np.mean(history["clip_frac"])))
        print(f"{beta:>6g}  {_mean_spread(scores):>18}  {_mean_spread(kls):>15}  {_mean_spread(clips):>15}")
    rlhf_seconds = time.perf_counter() - rlhf_started
    total_steps = args.steps * args.seeds * len(args.betas)
    print()
    print(
        f"time: reward model {rm_seconds * 1e3:.1f} ms, PPO-RLHF {rlhf_seconds * 1e3:.1f} ms "
        f"({total_steps / rlhf_seconds:,.0f} steps/s)"
    )
    print("A uniform policy scores 0 and has KL 0; the best token scores max(w) at KL log 8 = 2.08.")
    return 0


def sweep(args: argparse.Namespace) -> int:
    """A beta x seeds PPO-RLHF grid: tables and the plot of the lesson's medium exercise."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    w = rl.train_rm(rl.make_dataset(args.train_pairs, 0), epochs=5, lr=0.1)
    result = rl.sweep_rlhf(
        w,
        betas=args.betas,
        seeds=args.seeds,
        steps=args.steps,
        eps=args.eps,
        lr=args.lr,
        ppo_epochs=args.ppo_epochs,
        kl_ctl=args.kl_ctl,
        target=args.target,
        horizon=args.horizon,
        record_every=args.record_every,
        n_threads=args.threads,
        exact=args.exact,
        progress=not args.quiet,
    )
    n_runs = len(args.betas) * args.seeds
    print(
        f"{n_runs} runs x {args.steps} steps in {result.seconds:.3f} s "
        f"({n_runs * args.steps / result.seconds:,.0f} steps/s, {result.simd} path, backend {rl.BACKEND})"
    )
    print(result.summary_table())

    summary_path = out / "summary.csv"
    rows = result.summary()
    with summary_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    written = [summary_path]
    if args.record_every:
        table = result.to_pandas()
        history_path = out / "history.csv"
        table.to_csv(history_path, index=False)
        written.append(history_path)
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            pass
        else:
            table.to_parquet(out / "history.parquet", index=False)
            written.append(out / "history.parquet")
        plot_path = out / "sweep.png"
        result.plot(plot_path)
        written.append(plot_path)
    print(f"wrote {', '.join(str(p) for p in written)} in {time.perf_counter() - started:.1f} s")
    return 0


def compare(args: argparse.Namespace) -> int:
    """PPO, DPO, GRPO and Best-of-N on the lesson's data: one table and the frontier plot."""
    from .compare import compare as run_comparison

    started = time.perf_counter()
    result = run_comparison(seeds=args.seeds, steps=args.steps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"rlhf_fast {rl.__version__} (backend: {rl.BACKEND}): {args.seeds} seeds per setting, {args.steps} steps "
        f"for PPO and GRPO, DPO 4 epochs over the RM's 500 pairs; held-out: {result.heldout_pairs} pairs never "
        "trained on"
    )
    print(result.table())
    print(
        "E[RM score] and KL are exact (no sampling); held-out acc orders held-out pairs by the policy's implied "
        "reward log pi - log pi_ref; wall s includes the RM's training "
        f"({result.rm_seconds * 1e3:.1f} ms) for the methods that need an RM; softmaxes are the policy softmax "
        "evaluations per run."
    )
    records = result.to_rows()
    with (out / "compare.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    result.plot(out / "compare.png")
    print(f"wrote {out / 'compare.csv'}, {out / 'compare.png'} in {time.perf_counter() - started:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf_fast", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("demo", help="the lesson end to end: RM, held-out accuracy, PPO-RLHF per beta")
    p.add_argument("--betas", type=float, nargs="+", default=[0.0, 0.1, 1.0], help="KL coefficients (default: 0 0.1 1)")
    p.add_argument("--seeds", type=int, default=5, help="runs per beta, seeds 0..N-1 (default: 5)")
    p.add_argument("--steps", type=int, default=2000, help="PPO-RLHF steps per run (default: 2000)")
    p.add_argument("--train-pairs", type=int, default=500, help="RM training pairs, make_dataset(N, 0) (default: 500)")
    p.add_argument("--heldout-pairs", type=int, default=100, help="held-out pairs, make_dataset(N, 1) (default: 100)")
    p.set_defaults(run=demo)

    p = commands.add_parser(
        "sweep",
        help="a beta x seeds PPO-RLHF grid in parallel: summary table, long CSV/Parquet, plot",
        description="Trains the lesson's reward model (make_dataset(500, 0), 5 epochs, lr 0.1), then runs "
        "train_rlhf for every beta x seed in parallel and writes summary.csv, history.csv (and "
        "history.parquet when pyarrow is installed) and sweep.png (RM score and KL over updates, RM score "
        "against KL: the lesson's medium exercise) to --out.",
    )
    p.add_argument("--betas", type=float, nargs="+", required=True, help="KL coefficients, one curve each")
    p.add_argument("--seeds", type=int, default=20, help="runs per beta, seeds 0..N-1 (default: 20)")
    p.add_argument("--steps", type=int, default=2000, help="PPO-RLHF steps per run (default: 2000)")
    p.add_argument("--out", required=True, help="directory for the tables and the plot (created if missing)")
    p.add_argument("--eps", type=float, default=0.2, help="PPO clip range (default: 0.2)")
    p.add_argument("--lr", type=float, default=0.05, help="policy learning rate (default: 0.05)")
    p.add_argument("--ppo-epochs", type=int, default=4, help="clipped-surrogate epochs per sample (default: 4)")
    p.add_argument("--kl-ctl", choices=["fixed", "adaptive", "doubling"], default="fixed",
                   help="KL coefficient control: fixed beta, TRL's adaptive controller, or the lesson's doubling "
                   "rule; the betas are the starting values (default: fixed)")
    p.add_argument("--target", type=float, default=rl.KL_TARGET,
                   help=f"KL target of the adaptive/doubling control (default: log(V)/2 = {rl.KL_TARGET:.3g})")
    p.add_argument("--horizon", type=float, default=10000.0, help="horizon of the adaptive control (default: 10000)")
    p.add_argument("--record-every", type=int, default=1,
                   help="keep every k-th step of the history; 0 keeps summaries only (default: 1)")
    p.add_argument("--threads", type=int, default=None, help="worker threads (default: all cores, or RAYON_NUM_THREADS)")
    p.add_argument("--train-pairs", type=int, default=500, help="RM training pairs, make_dataset(N, 0) (default: 500)")
    p.add_argument("--exact", action="store_true", help="libm's exp/ln in every lane: bit-identical to the reference")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=sweep)

    p = commands.add_parser(
        "compare",
        help="PPO vs DPO vs GRPO vs Best-of-N on the lesson's data: table and RM-score-vs-KL plot",
        description="The lesson's hard exercise: every method from the uniform SFT policy, scored by the lesson's "
        "reward model; prints final expected RM score, KL to the reference, held-out preference accuracy and "
        "compute (wall time, softmax evaluations, RM steps), and writes compare.csv and compare.png to --out.",
    )
    p.add_argument("--seeds", type=int, default=5, help="seeds per setting (default: 5)")
    p.add_argument("--steps", type=int, default=2000, help="PPO and GRPO steps per run (default: 2000)")
    p.add_argument("--out", default=".", help="directory for compare.csv and compare.png (default: .)")
    p.set_defaults(run=compare)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
