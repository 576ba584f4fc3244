"""B4 (SPEC 5): per-call time of the lesson's functions, rlhf_fast (Rust) vs rlhf_fast.reference.

Lesson-sized inputs: 8 logits, a dict theta from init_policy() slightly perturbed, the B1
reward model w, a random.Random. Each measurement is `--calls` back-to-back calls on fresh
arguments (each backend gets its own copies, since rm_train_step, rlhf_step, dpo_step and
sample mutate theta / w / the rng); best of `--repeats`, the two backends taking turns.
After every measurement the two backends' last results and mutated arguments are compared
(floats within 1e-9), so both did the same work.

    python benches/b4_dropin.py [--calls 20000] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import math
import random

import rlhf_fast as rl
from _common import b1_reward_model, interleaved, ratio, table

ref_impl = rl.reference


def _loop(f, args, n):
    result = None
    for _ in itertools.repeat(None, n):
        result = f(*args)
    return result, args


def same(a, b, tol=1e-9) -> bool:
    """Equal up to ``tol`` relative on floats, recursing into dicts, lists, tuples and rngs."""
    if isinstance(a, random.Random):
        return a.getstate() == b.getstate()
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], tol) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=tol, abs_tol=tol)
    return a == b


def cases(w):
    gauss = random.Random(1).gauss
    z = [gauss(0.0, 1.0) for _ in range(8)]
    theta = ref_impl.init_policy()
    for row in theta.values():
        for j in range(len(row)):
            row[j] += 0.1 * gauss(0.0, 1.0)
    ref = ref_impl.init_policy()
    p = ref_impl.softmax(z)
    q = ref_impl.softmax(theta["help me"])
    x, y_pos, y_neg = "help me", "clear kind", "rude short"
    # name -> a maker of fresh arguments (copied, so neither backend sees the other's mutations)
    return {
        "softmax": lambda: (z,),
        "log_softmax": lambda: (z,),
        "kl": lambda: (p, q),
        "sample": lambda: (p, random.Random(2)),
        "rm_train_step": lambda: (dict(w), x, y_pos, y_neg, 0.1),
        "rlhf_step": lambda: (copy.deepcopy(theta), ref, w, x, random.Random(2)),
        "dpo_step": lambda: (copy.deepcopy(theta), ref, x, y_pos, y_neg),
        "expected_score": lambda: (theta, w),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many measurements")
    parser.add_argument("--quick", action="store_true", help="1000 calls, 1 repeat (smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.repeats = 1000, 1
    n = args.calls

    w = b1_reward_model(rl)
    rows, ratios = [], []
    for name, make_args in cases(w).items():
        contenders = {
            backend: (lambda f=getattr(mod, name): _loop(f, make_args(), n))
            for backend, mod in (("reference", ref_impl), ("rust", rl))
        }
        best, results = interleaved(contenders, args.repeats)
        assert same(results["reference"], results["rust"]), f"{name}: Rust and reference disagree"
        ref_us, rust_us = (best[b] / n * 1e6 for b in ("reference", "rust"))
        rows.append((name, f"{ref_us:.3f}", f"{rust_us:.3f}", ratio(ref_us / rust_us)))
        ratios.append(ref_us / rust_us)

    print(f"B4 drop-in calls: {n} calls per measurement, best of {args.repeats}, µs/call")
    print("(loop overhead included in both columns; results and mutated arguments checked equal)\n")
    table(("function", "reference µs", "rust µs", "reference/rust"), rows)
    print()
    print("ratios reference/rust: " + ", ".join(f"{r[0]} {r[3]}" for r in rows))
    geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    print(f"geometric mean reference/rust: {ratio(geo)}")


if __name__ == "__main__":
    main()
