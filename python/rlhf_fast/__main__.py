"""Command line: ``python -m rlhf_fast demo`` runs the lesson end to end; ``sweep`` runs a grid;
``compare`` sets PPO, DPO, GRPO and Best-of-N side by side; ``overopt`` shows reward
over-optimisation in a world (gold against proxy, Gao et al.'s fits); ``lab`` runs one of the
labs of the token-level issue (``lab length``: length hacking and its remedies; ``lab process``:
process against outcome rewards; ``lab distill``: what a distilled reward model's size does to
over-optimisation; ``lab safety``: a separate safety model under a fixed multiplier or Safe
RLHF's Lagrangian).

Bad arguments, and any argument the library refuses, give one line
(``python -m rlhf_fast <command>: error: <message>``) and exit status 2; Ctrl-C gives one line
and status 130. Output files are written under temporary names in the output directory and
renamed once all of them are complete, so an interrupted run leaves none that looks finished.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

import rlhf_fast as rl

from .heldout import HELDOUT_BAGS, heldout_split

HISTORY_FORMATS = ("parquet", "csv")


# ------------------------------------------------------------------------- arguments


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line: ``prog: error: message`` (``--help`` has the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.splitlines())}\n")


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value

    return parse


def _real(bound: float, *, strict: bool) -> Callable[[str], float]:
    """An argparse type: a finite number > ``bound`` (``strict``) or >= ``bound``."""
    relation = ">" if strict else ">="

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value) or value < bound or (strict and value == bound):
            raise argparse.ArgumentTypeError(f"must be a finite number {relation} {bound:g}, got {text}")
        return value

    return parse


def _directory(text: str) -> Path:
    """An argparse type: a directory, existing or to be created (not an existing file)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a directory")
    return path


_POSITIVE = _real(0.0, strict=True)
_NON_NEGATIVE = _real(0.0, strict=False)


def _world_arguments(p: argparse.ArgumentParser) -> None:
    """The options of a command's world (:func:`_world`)."""
    p.add_argument("--prompts", type=_count(1), default=16, help="the world's prompts (default: 16)")
    p.add_argument("--vocab", type=_count(2), default=1024, help="the world's tokens (default: 1024)")
    p.add_argument("--response-len", type=_count(1), default=8, help="tokens per response (default: 8)")
    p.add_argument("--world-seed", type=_count(0), default=0, help="seed of the world's tables (default: 0)")


def _parser() -> _Parser:
    parser = _Parser(prog="python -m rlhf_fast", description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"rlhf_fast {rl.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{demo,sweep,compare,overopt,lab}")

    p = commands.add_parser(
        "demo",
        help="the lesson end to end: RM, held-out accuracy, PPO-RLHF per beta",
        description="Trains the lesson's reward model (5 epochs, lr 0.1) on --train-pairs pairs, measures "
        "its accuracy on --heldout-pairs pairs whose chosen and rejected bags occur in no training pair "
        "(rlhf_fast.heldout), then runs train_rlhf for every beta and seed.",
    )
    p.add_argument("--betas", type=_NON_NEGATIVE, nargs="+", default=[0.0, 0.1, 1.0],
                   help="KL coefficients (default: 0 0.1 1)")
    p.add_argument("--seeds", type=_count(1), default=5, help="runs per beta, seeds 0..N-1 (default: 5)")
    p.add_argument("--steps", type=_count(1), default=2000, help="PPO-RLHF steps per run (default: 2000)")
    p.add_argument("--train-pairs", type=_count(1), default=500, help="RM training pairs (default: 500)")
    p.add_argument("--heldout-pairs", type=_count(1), default=100,
                   help="held-out pairs, no bag shared with training (default: 100)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=demo, parser=p)

    p = commands.add_parser(
        "sweep",
        help="a beta x seeds PPO-RLHF grid in parallel: summary table, long Parquet/CSV history, plot",
        description="Trains the lesson's reward model (make_dataset(500, 0), 5 epochs, lr 0.1), then runs "
        "train_rlhf for every beta x seed in parallel and writes summary.csv, the long history table "
        "(history.parquet, or as --format says) and sweep.png (RM score and KL over updates, RM score "
        "against KL: the lesson's medium exercise) to --out.",
    )
    p.add_argument("--betas", type=_NON_NEGATIVE, nargs="+", required=True, help="KL coefficients, one curve each")
    p.add_argument("--seeds", type=_count(1), default=20, help="runs per beta, seeds 0..N-1 (default: 20)")
    p.add_argument("--steps", type=_count(1), default=2000, help="PPO-RLHF steps per run (default: 2000)")
    p.add_argument("--out", type=_directory, required=True,
                   help="directory for the tables and the plot (created if missing)")
    p.add_argument("--format", nargs="+", choices=HISTORY_FORMATS, default=["parquet"],
                   help="the history table's formats, one or both (default: parquet)")
    p.add_argument("--eps", type=_POSITIVE, default=0.2, help="PPO clip range (default: 0.2)")
    p.add_argument("--lr", type=_POSITIVE, default=0.05, help="policy learning rate (default: 0.05)")
    p.add_argument("--ppo-epochs", type=_count(1), default=4, help="clipped-surrogate epochs per sample (default: 4)")
    p.add_argument("--kl-ctl", choices=["fixed", "adaptive", "doubling"], default="fixed",
                   help="KL coefficient control: fixed beta, TRL's adaptive controller, or the lesson's doubling "
                   "rule; the betas are the starting values (default: fixed)")
    p.add_argument("--target", type=_POSITIVE, default=rl.KL_TARGET,
                   help=f"KL target of the adaptive/doubling control (default: log(V)/2 = {rl.KL_TARGET:.3g})")
    p.add_argument("--horizon", type=_POSITIVE, default=10000.0,
                   help="horizon of the adaptive control (default: 10000)")
    p.add_argument("--record-every", type=_count(0), default=1,
                   help="keep every k-th step of the history; 0 keeps summaries only (default: 1)")
    p.add_argument("--threads", type=_count(1), default=None,
                   help="worker threads (default: all cores, or RAYON_NUM_THREADS)")
    p.add_argument("--train-pairs", type=_count(1), default=500,
                   help="RM training pairs, make_dataset(N, 0) (default: 500)")
    p.add_argument("--exact", action="store_true", help="libm's exp/ln in every lane: bit-identical to the reference")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=sweep, parser=p)

    p = commands.add_parser(
        "compare",
        help="PPO vs DPO vs GRPO vs Best-of-N on the lesson's data: table and RM-score-vs-KL plot",
        description="The lesson's hard exercise: every method from the uniform SFT policy, scored by the lesson's "
        "reward model; prints final expected RM score, KL to the reference, preference accuracy on held-out "
        "pairs whose bags occur in no training pair, and compute (wall time, softmax evaluations, RM steps), "
        "and writes compare.csv and compare.png to --out.",
    )
    p.add_argument("--seeds", type=_count(1), default=5, help="seeds per setting (default: 5)")
    p.add_argument("--steps", type=_count(1), default=2000, help="PPO and GRPO steps per run (default: 2000)")
    p.add_argument("--out", type=_directory, default=Path("."),
                   help="directory for compare.csv and compare.png (default: .)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=compare, parser=p)

    p = commands.add_parser(
        "overopt",
        help="reward over-optimisation in a world: gold and proxy against KL for PPO and Best-of-N",
        description="Goodhart's law, measured (Gao, Schulman & Hilton 2022). In a world of --prompts prompts, "
        "--vocab tokens and responses of --response-len tokens, whose hidden gold counts a repeated token once "
        "(less a repeat penalty), proxy reward models are trained on --rm-pairs labelled pairs from human "
        "labels and from an AI judge; PPO (kl_penalty k1) at each beta and Best-of-N optimise each proxy. "
        "Prints one table row per reward model (held-out gold accuracy, where the gold peaks, where it ends, "
        "what the guard, beta and more data do, Gao's fitted peaks) and writes overopt.csv and overopt.png "
        "to --out.",
    )
    p.add_argument("--rm-pairs", type=_count(2), nargs="+", default=[300, 3000, 30000],
                   help="labelled pairs per reward model (default: 300 3000 30000)")
    p.add_argument("--labellers", choices=["human", "ai"], nargs="+", default=["human", "ai"],
                   help="who labels the pairs (default: human ai)")
    p.add_argument("--betas", type=_NON_NEGATIVE, nargs="+", default=[0.0, 0.2],
                   help="PPO KL coefficients, 0 among them (default: 0 0.2)")
    p.add_argument("--ns", type=_count(1), nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 128, 256],
                   help="Best-of-N candidate counts (default: 1 2 4 ... 256)")
    p.add_argument("--seeds", type=_count(1), default=4, help="PPO runs per setting (default: 4)")
    p.add_argument("--steps", type=_count(1), default=2000, help="PPO steps per run (default: 2000)")
    p.add_argument("--record-every", type=_count(1), default=50,
                   help="evaluate gold, proxy and KL every k steps: the curves' points and the guard's "
                   "evaluations (default: 50)")
    _world_arguments(p)
    p.add_argument("--out", type=_directory, default=Path("."),
                   help="directory for overopt.csv and overopt.png (default: .)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=overopt, parser=p)

    lab = commands.add_parser("lab", help="a lab of RLHF's phenomena, with a table and a plot: length, process, distill, safety",
                              description="Each lab prints a table and writes <lab>.csv and <lab>.png to --out.")
    labs = lab.add_subparsers(dest="lab", required=True, metavar="{length,process,distill,safety}")
    p = labs.add_parser(
        "length",
        help="length hacking: a length-biased labeller's proxy grows responses; the remedies, each measured",
        description="In a sequence world (8 prompts, 128 tokens, responses of up to 8 tokens ended by an EOS), a "
        "proxy is trained on pairs from a labeller who prefers longer answers by --length-bias (the gold does not). "
        "Token PPO (TRL's layout) optimises it, and each remedy the lesson names in turn: a length-normalised "
        "reward, a length penalty (at the proxy's worth of a token, and twice it), a length-aware RM with its "
        "length weight dropped, RLAIF with a length-aware judge; and an unbiased control. The table gives each "
        "one's exact final length, gold, proxy and KL; writes length.csv and length.png to --out.",
    )
    p.add_argument("--length-bias", type=_NON_NEGATIVE, default=2.0,
                   help="the labeller's preference per extra token, in gold units (default: 2)")
    p.add_argument("--pairs", type=_count(2), default=400, help="labelled pairs per proxy (default: 400)")
    p.add_argument("--steps", type=_count(1), default=400, help="PPO steps per run (default: 400)")
    p.add_argument("--seeds", type=_count(1), default=3, help="PPO runs per remedy (default: 3)")
    p.add_argument("--reading-cost", type=_NON_NEGATIVE, default=0.1,
                   help="what a reader pays per token, in gold units: the table adds the gold's change net of it "
                   "(0: no such column; default: 0.1)")
    p.add_argument("--out", type=_directory, default=Path("."),
                   help="directory for length.csv and length.png (default: .)")
    p.set_defaults(run=lab_length, parser=p)

    p = labs.add_parser(
        "process",
        help="process vs outcome rewards in a reasoning world: success against samples and compute",
        description="In a reasoning world (8 prompts, chains of 6 steps of 6 candidates, one right each; the "
        "reference solves 1.6%), PPO with the outcome reward (a verifier), PPO with a process reward model's "
        "per-step rewards, and GRPO with the verifier are run to each checkpoint; the table gives the exact success "
        "rate against the responses sampled and the compute, and Best-of-N ranked by the PRM; writes process.csv "
        "and process.png to --out.",
    )
    p.add_argument("--seeds", type=_count(1), default=4, help="runs per method (default: 4)")
    p.add_argument("--target", type=_POSITIVE, default=0.5,
                   help="the success rate the 'samples to' column waits for (default: 0.5)")
    p.add_argument("--out", type=_directory, default=Path("."),
                   help="directory for process.csv and process.png (default: .)")
    p.set_defaults(run=lab_process, parser=p)

    p = labs.add_parser(
        "distill",
        help="reward distillation: how a distilled reward model's size moves the over-optimisation peak",
        description="A teacher reward model is trained on --teacher-pairs labelled pairs in a world of --prompts "
        "prompts, --vocab tokens and responses of --response-len tokens (gold counting a repeated token once). "
        "Students of --dims features per token (a frozen random projection of the vocabulary, --seeds projections "
        "each) are fitted to its scores on --samples reference responses. Each reward model is optimised along "
        "its exact optima pi ~ pi_ref exp(r/beta) and by PPO at beta=0; the table gives each one's fit, held-out "
        "gold accuracy, and where the gold peaks and ends. Writes distill.csv and distill.png to --out.",
    )
    p.add_argument("--teacher-pairs", type=_count(2), default=30000,
                   help="labelled pairs the teacher is trained on (default: 30000)")
    p.add_argument("--dims", type=_count(1), nargs="+", default=[16, 64, 256, 1024],
                   help="student sizes, features per token (default: 16 64 256 1024)")
    p.add_argument("--seeds", type=_count(1), default=3, help="projections per size (default: 3)")
    p.add_argument("--samples", type=_count(1), default=20000, help="distillation responses (default: 20000)")
    p.add_argument("--epochs", type=_count(0), default=5, help="distillation passes (default: 5)")
    p.add_argument("--steps", type=_count(1), default=1500, help="PPO steps per run (default: 1500)")
    p.add_argument("--record-every", type=_count(1), default=50, help="record gold, score and KL every k steps "
                   "(default: 50)")
    _world_arguments(p)
    p.add_argument("--out", type=_directory, default=Path("."),
                   help="directory for distill.csv and distill.png (default: .)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=lab_distill, parser=p)

    p = labs.add_parser(
        "safety",
        help="Safe RLHF: a separate safety (cost) model, a fixed multiplier against the Lagrangian",
        description="In a world of 8 prompts and 128 tokens where a tenth of the tokens are unsafe (and tend to "
        "look helpful), a helpfulness reward model and a cost model are trained on their own labels; PPO "
        "maximises helpfulness - lambda * cost for each fixed --lambdas (the helpfulness/safety frontier) and "
        "with Safe RLHF's multiplier adapting towards each --cost-limits, by its own update and with a PID "
        "Lagrangian's proportional term (--kp), which damps the ringing of the update alone; then pilot runs "
        "that observe the cost model's expected cost rather than sampled responses, and runs on fresh seeds "
        "aimed below each limit by the pilots' overshoot and --margin-z standard deviations, which end "
        "within it. The table gives each run's gold helpfulness and gold cost; writes safety.csv and "
        "safety.png to --out.",
    )
    p.add_argument("--lambdas", type=_NON_NEGATIVE, nargs="+", default=[0.0, 0.25, 0.5, 1.0, 2.0, 4.0],
                   help="fixed multipliers (default: 0 0.25 0.5 1 2 4)")
    p.add_argument("--cost-limits", type=_POSITIVE, nargs="+", default=[0.5, 0.8],
                   help="the Lagrangian runs' cost limits, in the gold cost's units; the reference policy costs "
                   "0.41 (default: 0.5 0.8)")
    p.add_argument("--kp", type=_NON_NEGATIVE, default=10.0,
                   help="the proportional gain beside Safe RLHF's update; 0 runs the update alone (default: 10)")
    p.add_argument("--margin-z", type=_NON_NEGATIVE, default=3.0,
                   help="the aimed runs' margin under each limit, in standard deviations of the pilots' gold "
                   "cost over seeds (default: 3)")
    p.add_argument("--seeds", type=_count(1), default=8, help="PPO runs per setting (default: 8)")
    p.add_argument("--steps", type=_count(1), default=2000, help="PPO steps per run (default: 2000)")
    p.add_argument("--beta", type=_NON_NEGATIVE, default=0.2, help="the KL coefficient, k1 (default: 0.2)")
    p.add_argument("--out", type=_directory, default=Path("."),
                   help="directory for safety.csv and safety.png (default: .)")
    p.set_defaults(run=lab_safety, parser=p)
    return parser


# --------------------------------------------------------------------------- outputs


class _Staged:
    """Output files written under temporary names beside their own, renamed at the end.

    ``with _Staged(directory) as staged:`` hands out ``staged.path(name)``, a hidden
    ``.<stem>.<pid>.partial<suffix>`` in the directory (the suffix kept, so writers that go
    by it still can). When the block completes, every file is renamed to its name; when it
    raises (Ctrl-C included), every one is deleted. A reader never sees a file that stops
    half-way, and never this run's summary beside a previous run's history.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.staged: dict[Path, Path] = {}  # final path -> temporary path

    def path(self, name: str) -> Path:
        final = self.directory / name
        temporary = self.directory / f".{final.stem}.{os.getpid()}.partial{final.suffix}"
        self.staged[final] = temporary
        return temporary

    def __enter__(self) -> _Staged:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if error is not None:
            for temporary in self.staged.values():
                temporary.unlink(missing_ok=True)
            return
        for final, temporary in self.staged.items():
            os.replace(temporary, final)

    @property
    def written(self) -> str:
        return ", ".join(str(final) for final in self.staged)


def _make_directory(args: argparse.Namespace) -> None:
    """``--out``, created before any work, so that a directory we cannot write fails at once."""
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        args.parser.error(f"argument --out: cannot create {str(args.out)!r}: {err.strerror}")


def _write_csv(path: Path, records: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)


def _write_history(result: rl.SweepResult, paths: dict[str, Path], progress: bool) -> None:
    """The sweep's long history table (:meth:`~rlhf_fast.SweepResult.to_arrow`) in each format of
    ``paths``, piece by piece (:meth:`~rlhf_fast.SweepResult.to_arrow_batches`): a history of
    gigabytes is never copied whole into a table."""
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.parquet
    from tqdm import tqdm

    writers = []
    rows = math.prod(result.shape) * len(result.steps)
    bar = tqdm(total=rows, desc="writing history", unit="row", unit_scale=True, disable=not progress)
    with contextlib.ExitStack() as closing:
        closing.enter_context(bar)
        for piece in result.to_arrow_batches():
            if not writers:
                dictionaries = {f.name for f in piece.schema if pa.types.is_dictionary(f.type)}
                floats = set(result.fields) - dictionaries
                for fmt, path in paths.items():
                    if fmt == "parquet":
                        # Dictionary pages only for the columns whose values repeat (the axes,
                        # step, prompt, token): for the float fields, nearly all distinct,
                        # building one first doubles the write time and then falls back to
                        # plain pages anyway.
                        repeated = [name for name in piece.column_names if name not in floats]
                        writer = pyarrow.parquet.ParquetWriter(path, piece.schema, use_dictionary=repeated)
                    else:
                        writer = pyarrow.csv.CSVWriter(path, piece.schema)
                    writers.append(closing.enter_context(writer))
            for writer in writers:
                writer.write_table(piece)
            bar.update(piece.num_rows)


def _close(figure) -> None:
    """Let pyplot forget a saved figure, if it made it: :func:`main` may run many times in a process."""
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close(figure)


# -------------------------------------------------------------------------- commands


def _mean_spread(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {spread:.3f}"


def _bags(words: Iterable[str]) -> str:
    return ", ".join(" ".join(bag) for bag in sorted(HELDOUT_BAGS) if bag[0] in words)


def demo(args: argparse.Namespace) -> int:
    """Reward model, held-out accuracy, then PPO-RLHF for each beta: the lesson in one table."""
    from tqdm import tqdm

    started = time.perf_counter()
    train, heldout = heldout_split(args.train_pairs, args.heldout_pairs)
    w = rl.train_rm(train, epochs=5, lr=0.1)
    accuracy = rl.pairwise_accuracy(w, heldout)
    rm_seconds = time.perf_counter() - started
    print(f"rlhf_fast {rl.__version__} (backend: {rl.BACKEND})")
    print(f"reward model: {len(train)} pairs, 5 epochs, lr 0.1 -> held-out accuracy {accuracy:.3f} "
          f"on {len(heldout)} pairs")
    print(f"held-out bags, never in training: {_bags(rl.GOOD_WORDS)} (chosen); {_bags(rl.BAD_WORDS)} (rejected)")
    print("weights: " + ", ".join(f"{tok} {w[tok]:+.2f}" for tok in rl.VOCAB))
    print()

    rows = []
    rlhf_started = time.perf_counter()
    with tqdm(total=len(args.betas) * args.seeds * args.steps, unit="step", unit_scale=True, desc="PPO-RLHF",
              leave=False, disable=args.quiet) as bar:
        for beta in args.betas:
            scores, kls, clips, alarms = [], [], [], 0
            for seed in range(args.seeds):
                theta = rl.init_policy()
                # The lesson's KL monitor: counted in the table rather than printed once per run.
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", rl.KLWarning)
                    history = rl.train_rlhf(theta, rl.init_policy(), w, args.steps, seed, beta=beta)
                alarms += any(issubclass(c.category, rl.KLWarning) for c in caught)
                for c in caught:
                    if not issubclass(c.category, rl.KLWarning):
                        warnings.warn_explicit(c.message, c.category, c.filename, c.lineno)
                scores.append(rl.expected_score(theta, w))
                kls.append(float(history["mean_kl"][-1]))
                clips.append(float(np.mean(history["clip_frac"])))
                bar.update(args.steps)
            rows.append((beta, scores, kls, clips, alarms))
    rlhf_seconds = time.perf_counter() - rlhf_started

    header = (f"{'beta':>6}  {'final E[RM score]':>18}  {'mean KL':>15}  {'clip fraction':>15}  "
              f"{'KL alarms':>9}")
    print(f"PPO-RLHF: {args.steps} steps x {args.seeds} seeds per beta (mean ± std over seeds)")
    print(header)
    print("-" * len(header))
    for beta, scores, kls, clips, alarms in rows:
        print(f"{beta:>6g}  {_mean_spread(scores):>18}  {_mean_spread(kls):>15}  {_mean_spread(clips):>15}  "
              f"{f'{alarms}/{args.seeds}':>9}")
    total_steps = args.steps * args.seeds * len(args.betas)
    print()
    print(
        f"time: data and reward model {rm_seconds * 1e3:.1f} ms, PPO-RLHF {rlhf_seconds * 1e3:.1f} ms "
        f"({total_steps / rlhf_seconds:,.0f} steps/s)"
    )
    print("A uniform policy scores 0 and has KL 0; the best token scores max(w) at KL log 8 = 2.08.")
    print(f"KL alarms: runs whose mean KL passed kl_threshold = 0.75 log 8 = {rl.KL_THRESHOLD:.2f} (KLWarning).")
    return 0


def sweep(args: argparse.Namespace) -> int:
    """A beta x seeds PPO-RLHF grid: tables and the plot of the lesson's medium exercise."""
    _make_directory(args)
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

    with _Staged(args.out) as staged:
        _write_csv(staged.path("summary.csv"), result.summary())
        if args.record_every:
            paths = {fmt: staged.path(f"history.{fmt}") for fmt in dict.fromkeys(args.format)}
            # The table's copies and pyarrow's writer run mostly without the GIL: the history goes
            # to disk while matplotlib imports and draws, the longest part of the B1 command.
            with ThreadPoolExecutor(max_workers=1) as pool:
                history_written = pool.submit(_write_history, result, paths, not args.quiet)
                _close(result.plot(staged.path("sweep.png")))
                history_written.result()
    print(f"wrote {staged.written} in {time.perf_counter() - started:.1f} s")
    return 0


def compare(args: argparse.Namespace) -> int:
    """PPO, DPO, GRPO and Best-of-N on the lesson's data: one table and the frontier plot."""
    from .compare import compare as run_comparison

    _make_directory(args)
    started = time.perf_counter()
    result = run_comparison(seeds=args.seeds, steps=args.steps, progress=not args.quiet)
    print(
        f"rlhf_fast {rl.__version__} (backend: {rl.BACKEND}): {args.seeds} seeds per setting, {args.steps} steps "
        f"for PPO and GRPO, DPO 4 epochs over the RM's {result.train_pairs} pairs; held-out: "
        f"{result.heldout_pairs} pairs whose bags occur in no training pair"
    )
    print(result.table())
    print(
        "E[RM score] and KL are exact (no sampling); held-out acc orders held-out pairs by the policy's implied "
        "reward log pi - log pi_ref; wall s includes the RM's training "
        f"({result.rm_seconds * 1e3:.1f} ms) for the methods that need an RM; softmaxes are the policy softmax "
        "evaluations per run."
    )
    with _Staged(args.out) as staged:
        _write_csv(staged.path("compare.csv"), result.to_rows())
        _close(result.plot(staged.path("compare.png")))
    print(f"wrote {staged.written} in {time.perf_counter() - started:.1f} s")
    return 0


def _world(args: argparse.Namespace) -> rl.World:
    """The world of ``--prompts``, ``--vocab``, ``--response-len`` and ``--world-seed``."""
    return rl.World(n_prompts=args.prompts, vocab=args.vocab, response_len=args.response_len, seed=args.world_seed)


def _write_lab(args: argparse.Namespace, result: Any, stem: str) -> int:
    """A lab's table as ``<stem>.csv`` and its plot as ``<stem>.png`` in ``--out``."""
    with _Staged(args.out) as staged:
        _write_csv(staged.path(f"{stem}.csv"), result.to_rows())
        _close(result.plot(staged.path(f"{stem}.png")))
    print(f"wrote {staged.written} in {result.seconds:.1f} s")
    return 0


def overopt(args: argparse.Namespace) -> int:
    """Reward over-optimisation in a world: one table row per reward model and the plot."""
    from .overopt import overoptimization

    _make_directory(args)
    world = _world(args)
    result = overoptimization(world, rm_pairs=args.rm_pairs, labellers=args.labellers, betas=args.betas, ns=args.ns,
                              seeds=args.seeds, steps=args.steps, record_every=args.record_every,
                              progress=not args.quiet)
    print(f"rlhf_fast {rl.__version__} (backend: {rl.BACKEND}): {world!r}; PPO {args.steps} steps x {args.seeds} "
          f"seeds per beta, kl_penalty k1; scores relative to the reference policy's")
    print(result.table())
    print("peak gold / at KL: the beta=0 PPO runs' mean gold at its highest; end: after the last step; guard: where "
          "it stops a run (gold fell 3 evaluations in a row while the proxy rose); beta=b: a run's final gold, and in "
          "brackets the beta=0 runs' gold at the same KL (equal if beta only moves a run along the curve, as Gao "
          "et al. found); fit peak KL: Gao's R_RL and R_bon forms fitted.")
    return _write_lab(args, result, "overopt")


def lab_length(args: argparse.Namespace) -> int:
    """Length hacking and its remedies: one table row per remedy, and the plot."""
    from .length import length_lab

    _make_directory(args)
    result = length_lab(length_bias=args.length_bias, pairs=args.pairs, steps=args.steps, seeds=args.seeds,
                        reading_cost=args.reading_cost)
    print(f"rlhf_fast {rl.__version__} (backend: {rl.BACKEND}): {result.world!r}; token PPO {args.steps} steps x "
          f"{args.seeds} seeds per remedy; exact expectations of the final policies")
    print(result.table())
    return _write_lab(args, result, "length")


def lab_process(args: argparse.Namespace) -> int:
    """Process vs outcome rewards: success against samples and compute, and the plot."""
    from .reasoning import process_lab

    _make_directory(args)
    result = process_lab(seeds=args.seeds, target=args.target)
    print(f"rlhf_fast {rl.__version__} (backend: {rl.BACKEND}): {result.world!r}; {args.seeds} seeds per method")
    print(result.table())
    return _write_lab(args, result, "process")


def lab_distill(args: argparse.Namespace) -> int:
    """Reward distillation: one table row per student size and the teacher, and the plot."""
    from .distill import distillation

    _make_directory(args)
    world = _world(args)
    result = distillation(world, teacher_pairs=args.teacher_pairs, dims=args.dims, seeds=args.seeds,
                          samples=args.samples, epochs=args.epochs, steps=args.steps, record_every=args.record_every,
                          progress=not args.quiet)
    print(f"rlhf_fast {rl.__version__} (backend: {rl.BACKEND}): {world!r}; teacher on {args.teacher_pairs} pairs; "
          f"PPO beta=0, {args.steps} steps; scores relative to the reference policy's")
    print(result.table())
    print("R² to teacher: on fresh reference responses; optimum: the gold along the reward model's optima "
          "pi ~ pi_ref exp(r/beta), at its highest; PPO: the runs' gold at its highest and after the last step. "
          "Means over the projections (students) or the PPO seeds (teacher).")
    return _write_lab(args, result, "distill")


def lab_safety(args: argparse.Namespace) -> int:
    """Safe RLHF: the frontier of fixed multipliers and the Lagrangian runs."""
    from .safety import safety_lab

    _make_directory(args)
    result = safety_lab(lambdas=args.lambdas, cost_limits=args.cost_limits, seeds=args.seeds, steps=args.steps,
                        beta=args.beta, lagrangian_kp=args.kp, margin_z=args.margin_z)
    print(f"rlhf_fast {rl.__version__} (backend: {rl.BACKEND}): {result.world!r}; PPO {args.steps} steps x "
          f"{args.seeds} seeds, beta {args.beta:g}")
    print(result.table())
    return _write_lab(args, result, "safety")


def main(argv: list[str] | None = None) -> int:
    """Run the command line.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after ``python -m rlhf_fast`` (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 when the command succeeded; 141, silently, when standard output's reader has gone
        (``... | head``).

    Raises
    ------
    SystemExit
        Status 2 with one line on stderr for a bad argument, or one the library refuses
        (``ValueError``, ``TypeError``); 1 for a run that fails (a diverged run, no memory, a
        file that cannot be written); 130 on Ctrl-C; 0 for ``--help`` and ``--version``.
    """
    args = _parser().parse_args(argv)
    command = args.parser
    try:
        status = args.run(args)
        sys.stdout.flush()  # a reader gone is seen here, not as the interpreter exits
        return status
    except KeyboardInterrupt:
        command.exit(130, f"{command.prog}: interrupted\n")
    except (ValueError, TypeError) as err:
        command.error(str(err))
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, as a tool killed by SIGPIPE does,
        # and send what is still buffered nowhere, so that exiting does not raise it again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (ArithmeticError, MemoryError, OSError) as err:
        command.exit(1, f"{command.prog}: error: {err}\n")


if __name__ == "__main__":
    # A command lives seconds and makes few reference cycles; the collector's passes over the
    # objects matplotlib creates as it imports and draws are a tenth of the B1 sweep command,
    # and the interpreter's last collection (0.3 s after it) frees memory the process is about
    # to hand back anyway. Reference counting still frees every array as soon as it is dropped.
    gc.disable()
    try:
        sys.exit(main())
    finally:
        gc.freeze()
