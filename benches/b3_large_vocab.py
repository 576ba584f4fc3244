"""B3 (SPEC 5): large-vocabulary rows — softmax, KL to a reference, one sample and PPO's
gradient per row, on a [256, 32768] float64 batch (logits and a reference of that shape).

Contenders, in one process, taking turns (best of `--repeats`):
- rlhf_fast (Rust) `rows.ppo_batch_step`, writing the gradient into a reused `out` array, and
  again into a fresh array (whose pages the kernel faults in);
- a row-chunked NumPy implementation of the same work (`--numpy-rows` rows at a time);
- the memory ceiling: `rows.stream_sum`, a parallel vector sum over the same two arrays —
  the fastest this machine reads those bytes;
- the pure-Python reference twin, timed on `--ref-rows` rows and extrapolated.

Figures: rows/s and GB/s of the input arrays (2 x rows x V x 8 bytes) for each, and the
ratios Rust/reference, Rust/NumPy and Rust as a fraction of the ceiling. The Rust and NumPy
tokens are checked against the reference's on the rows it ran, and Rust's floats against it.

    python benches/b3_large_vocab.py [--rows 256] [--vocab 32768] [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import os

import numpy as np

import rlhf_fast as rl
from _common import interleaved, rate, ratio, table, timed
from rlhf_fast import rows
from rlhf_fast.reference.kernels import rows as ref_rows

BETA = 0.1


def numpy_step(z, z_ref, u, w, beta, out, chunk):
    """The same step as `rows.ppo_batch_step`, vectorised over `chunk` rows at a time."""
    n, v = z.shape
    tokens = np.empty(n, dtype=np.int64)
    kl = np.empty(n)
    reward = np.empty(n)
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        zc, rc = z[lo:hi], z_ref[lo:hi]
        shifted = zc - zc.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        s = e.sum(axis=1, keepdims=True)
        p = e / s
        log_p = shifted - np.log(s)
        shifted_ref = rc - rc.max(axis=1, keepdims=True)
        log_q = shifted_ref - np.log(np.exp(shifted_ref).sum(axis=1, keepdims=True))
        kl[lo:hi] = np.einsum("ij,ij->i", p, log_p - log_q)
        running = np.cumsum(p, axis=1)
        a = np.minimum((running <= u[lo:hi, None]).sum(axis=1), v - 1)
        tokens[lo:hi] = a
        reward[lo:hi] = w[a] - beta * kl[lo:hi]
        g = out[lo:hi]
        np.multiply(p, -reward[lo:hi, None], out=g)
        idx = np.arange(hi - lo)
        g[idx, a] = reward[lo:hi] * (1.0 - p[idx, a])
    return tokens, kl, reward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--repeats", type=int, default=5, help="best of this many measurements")
    parser.add_argument("--ref-rows", type=int, default=2, help="rows the reference runs (extrapolated)")
    parser.add_argument("--numpy-rows", type=int, default=16, help="rows per NumPy chunk")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.vocab, args.repeats, args.ref_rows = 16, 3000, 1, 2
    n, v = args.rows, args.vocab

    gen = np.random.default_rng(0)
    z = gen.normal(0.0, 2.0, size=(n, v))
    z_ref = z + gen.normal(0.0, 0.5, size=(n, v))
    u = gen.random(n)
    w = gen.normal(0.0, 1.0, size=v)
    out_rust = np.empty_like(z)
    out_rust.fill(0.0)  # faulted in once, before timing
    out_numpy = np.zeros_like(z)
    out_numpy.fill(0.0)
    nbytes = z.nbytes + z_ref.nbytes

    print(f"B3: [{n}, {v}] float64 logits and reference ({nbytes / 2**20:.0f} MiB read per pass), "
          f"backend {rl.BACKEND}, {os.cpu_count()} cores, RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', '-')}")

    contenders = {
        "memory ceiling (stream_sum)": lambda: rows.stream_sum(z, z_ref),
        "rlhf_fast, out= reused": lambda: rows.ppo_batch_step(z, z_ref, u, w, BETA, out=out_rust),
        "rlhf_fast, fresh output": lambda: rows.ppo_batch_step(z, z_ref, u, w, BETA),
        f"numpy, {args.numpy_rows} rows a chunk": lambda: numpy_step(z, z_ref, u, w, BETA, out_numpy, args.numpy_rows),
    }
    best, results = interleaved(contenders, repeats=args.repeats)

    k = min(args.ref_rows, n)
    ref_seconds, ref_out = timed(
        lambda: ref_rows.ppo_batch_step(z[:k].tolist(), z_ref[:k].tolist(), u[:k].tolist(), w.tolist(), BETA)
    )
    best["reference (extrapolated)"] = ref_seconds * n / k

    rust = best["rlhf_fast, out= reused"]
    headers = ["contender", "seconds", "rows/s", "GB/s", "Rust is"]
    body = []
    for name, seconds in best.items():
        body.append([name, f"{seconds:.4f}", rate(n / seconds), f"{nbytes / seconds / 1e9:.2f}",
                     ratio(seconds / rust) if name != "rlhf_fast, out= reused" else ""])
    table(headers, body)

    ceiling = best["memory ceiling (stream_sum)"]
    numpy_t = best[f"numpy, {args.numpy_rows} rows a chunk"]
    print()
    print(f"Rust / reference : {ratio(best['reference (extrapolated)'] / rust)}")
    print(f"Rust / NumPy     : {ratio(numpy_t / rust)}   (target >= 5x)")
    print(f"Rust / ceiling   : {100 * ceiling / rust:.0f} % of the same-run memory ceiling "
          f"({nbytes / ceiling / 1e9:.1f} GB/s)   (target >= 60 %)")
    print(f"fresh output     : {100 * ceiling / best['rlhf_fast, fresh output']:.0f} % of the ceiling")

    # The same work: tokens equal to the reference's, floats within 1e-12 relative.
    step = results["rlhf_fast, out= reused"]
    tokens_np = results[f"numpy, {args.numpy_rows} rows a chunk"][0]
    ref_tokens, ref_kl, _, _, ref_grad = ref_out
    assert step.tokens[:k].tolist() == ref_tokens, "Rust tokens differ from the reference's"
    kl_err = np.max(np.abs(step.kl[:k] - ref_kl) / np.abs(ref_kl))
    g = np.array(ref_grad)
    grad_err = np.max(np.abs(step.grad[:k] - g) / np.maximum(np.abs(g), 1e-300))
    same_np = int((tokens_np == step.tokens).sum())
    print(f"check            : Rust tokens = reference's on {k} rows; KL within {kl_err:.1e} rel, "
          f"gradient within {grad_err:.1e} rel; NumPy picks Rust's token on {same_np}/{n} rows")
    assert kl_err < 1e-12 and grad_err < 1e-12


if __name__ == "__main__":
    main()
