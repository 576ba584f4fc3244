"""B2 (SPEC 5): reward-model throughput, make_dataset(1_000_000, seed=0), 1 epoch of train_rm, lr 0.1.

Phases are timed separately (pairs/s), the contenders taking turns, best of `--repeats`:
  rust       PreferenceSet.make_dataset(n, 0):
             generate + tokenise in Rust;
             train_rm(that set, epochs=1): the training figure (tokenised once).
             Also the Python-tuples path: rl.make_dataset (tuples out) and rl.train_rm(pairs),
             which tokenises the tuples and trains.
  reference  rlhf_fast.reference on the first `--ref-pairs` pairs only, extrapolated per pair:
             make_dataset, tokenise (reference.PreferenceSet), train_rm on that set, and
             train_rm(pairs) end to end.
  numpy      benches/numpy_impl.py on the first `--numpy-pairs` pairs: np.unique tokenisation,
             exact sequential SGD as a Python loop over numpy index arrays.
Checked (asserts): on the reference subset the datasets are identical and the Rust weights
(both paths) and the NumPy weights equal the reference's within 1e-9.

    python benches/b2_rm_throughput.py [--pairs 1000000] [--ref-pairs 50000] [--numpy-pairs 50000] [--quick]
"""

from __future__ import annotations

import argparse
import math

import numpy_impl
import rlhf_fast as rl
from _common import interleaved, rate, ratio, table

ref_impl = rl.reference
LR = 0.1


def assert_close(name, w, w_ref):
    assert w.keys() == w_ref.keys(), f"{name}: different tokens {sorted(w)} vs {sorted(w_ref)}"
    bad = {t: (w[t], w_ref[t]) for t in w_ref if not math.isclose(w[t], w_ref[t], rel_tol=1e-9, abs_tol=1e-9)}
    assert not bad, f"{name}: weights differ from the reference: {bad}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1_000_000, help="pairs for the Rust contenders")
    parser.add_argument("--ref-pairs", type=int, default=50_000, help="pairs the reference runs")
    parser.add_argument("--numpy-pairs", type=int, default=50_000, help="pairs the NumPy version runs")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many rounds")
    parser.add_argument("--quick", action="store_true", help="20k / 5k / 5k pairs, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.ref_pairs, args.numpy_pairs, args.repeats = 20_000, 5_000, 5_000, 1
    n, n_ref, n_np = args.pairs, min(args.ref_pairs, args.pairs), min(args.numpy_pairs, args.pairs)
    np_pairs = rl.make_dataset(n_np, 0)  # NumPy's input: Python tuples, generated once, untimed

    data = {}  # each phase's output, read by the next phase of the same contender

    def phase(name, fn):
        def run():
            data[name] = fn()
            return data[name]

        return run

    phases = {  # name -> (contender, what, pairs, fn); run in this order every round
        "rust gen": ("rust", "generate+tokenise: PreferenceSet.make_dataset", n, lambda: rl.PreferenceSet.make_dataset(n, 0)),
        "rust train": ("rust", "train 1 epoch: train_rm(PreferenceSet)", n,
                       lambda: rl.train_rm(data["rust gen"], epochs=1, lr=LR)),
        "rust tuples": ("rust", "generate tuples: rl.make_dataset", n, lambda: rl.make_dataset(n, 0)),
        "rust train_rm": ("rust", "tokenise+train: rl.train_rm(tuples)", n,
                          lambda: rl.train_rm(data["rust tuples"], epochs=1, lr=LR)),
        "ref gen": ("reference", "generate: make_dataset", n_ref, lambda: ref_impl.make_dataset(n_ref, 0)),
        "ref tok": ("reference", "tokenise: PreferenceSet(pairs)", n_ref, lambda: ref_impl.PreferenceSet(data["ref gen"])),
        "ref train": ("reference", "train 1 epoch: train_rm(PreferenceSet)", n_ref,
                      lambda: ref_impl.train_rm(data["ref tok"], epochs=1, lr=LR)),
        "ref train_rm": ("reference", "tokenise+train: train_rm(tuples)", n_ref,
                         lambda: ref_impl.train_rm(data["ref gen"], epochs=1, lr=LR)),
        "np tok": ("numpy", "tokenise: np.unique", n_np, lambda: numpy_impl.tokenise(np_pairs)),
        "np train": ("numpy", "train 1 epoch: Python loop, numpy rows", n_np,
                     lambda: numpy_impl.train_rm_sequential(data["np tok"], epochs=1, lr=LR)),
    }
    best, _ = interleaved({name: phase(name, p[3]) for name, p in phases.items()}, args.repeats)
    speed = {name: phases[name][2] / best[name] for name in phases}

    # never time wrong work: same data, same weights as the reference on the subsets
    ref_pairs = data["ref gen"]
    assert rl.make_dataset(n_ref, 0) == ref_pairs, "rl.make_dataset differs from the reference"
    subset_set = rl.PreferenceSet.make_dataset(n_ref, 0)
    assert subset_set.to_pairs() == ref_pairs, "PreferenceSet.make_dataset differs from the reference"
    w_ref = data["ref train_rm"]
    assert_close("reference, tokenised once", data["ref train"], w_ref)
    assert_close("rust train_rm(PreferenceSet)", rl.train_rm(subset_set, epochs=1, lr=LR), w_ref)
    assert_close("rust train_rm(tuples)", rl.train_rm(ref_pairs, epochs=1, lr=LR), w_ref)
    assert_close("numpy", data["np train"], ref_impl.train_rm(np_pairs, epochs=1, lr=LR))
    assert_close("rust, full set: PreferenceSet vs tuples", data["rust train"], data["rust train_rm"])

    print(f"B2 reward-model throughput: make_dataset({n:,}, seed=0), 1 epoch, lr {LR}; best of {args.repeats}")
    print(f"The reference runs the first {n_ref:,} pairs and NumPy the first {n_np:,}: their pairs/s are "
          "extrapolated per pair.\n")
    table(
        ("contender", "phase", "pairs", "seconds", "pairs/s"),
        [(c, what, f"{m:,}", f"{best[name]:.3f}", rate(speed[name])) for name, (c, what, m, _) in phases.items()],
        left=2,
    )
    print(f"\nChecked: identical datasets and weights within 1e-9 of the reference on the first {n_ref:,} pairs "
          f"(Rust, both paths) / {n_np:,} pairs (NumPy).")

    def per_pair(*names):  # pairs/s of phases run one after the other
        return 1.0 / sum(1.0 / speed[name] for name in names)

    rust_e2e, ref_e2e = per_pair("rust gen", "rust train"), per_pair("ref gen", "ref train_rm")
    print("\nratios (per pair):")
    print(f"  train 1 epoch, tokenised once (the B2 figure): rust/reference "
          f"{ratio(speed['rust train'] / speed['ref train'])}   rust/numpy "
          f"{ratio(speed['rust train'] / speed['np train'])}   numpy/reference "
          f"{ratio(speed['np train'] / speed['ref train'])}")
    print(f"  train_rm from Python tuples (tokenise+train):  rust/reference "
          f"{ratio(speed['rust train_rm'] / speed['ref train_rm'])}")
    print(f"  generate+tokenise+train end to end:            rust/reference {ratio(rust_e2e / ref_e2e)} "
          f"(rust {rate(rust_e2e)}, reference {rate(ref_e2e)} pairs/s)")


if __name__ == "__main__":
    main()
