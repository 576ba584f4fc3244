"""B3 (SPEC 5): large-vocabulary rows — softmax, KL to a reference, one sample and PPO's
gradient per row, on a [256, 32768] float64 batch (logits and a reference of that shape).

Contenders, in one process, taking turns (best of `--repeats`):
- rlhf_fast (Rust) `rows.ppo_batch_step`, writing the gradient into a reused `out` array, on
  every core (`n_threads` default) and on one thread; again into a fresh array (whose pages
  the OS faults in and zeroes); and with the reference's log-softmax computed once per batch
  (`ref_normalized=True`: one exp per logit instead of two; its `log_softmax_rows` is timed
  on its own, and added in the "incl. its log-softmax" line);
- a row-chunked NumPy implementation of the same work (`--numpy-rows` rows at a time), which
  runs on one thread (NumPy's ufuncs do; its BLAS threads are held to 1);
- the memory ceiling: `rows.stream_add`, `out = logits + ref` — the same bytes read and
  written as the kernel (two tables read, one written, the write past the caches as the
  kernel writes it), on the same number of threads; and `rows.stream_sum`, the two tables
  only read, for comparison;
- the pure-Python reference twin, timed on `--ref-rows` rows and extrapolated.

Bytes counted per pass (memory traffic, not cache traffic): logits and reference read once
(2 x rows x V x 8 B) and the gradient written once (rows x V x 8 B), for the kernel and for
`stream_add` alike. Not counted, for either: per-row scalars (`u`, the token's weight, the
results), and the kernel's per-thread scratch row of `e^(z-M)` (V x 8 B, reused row after row,
so it stays in L2/L3).

    python benches/b3_large_vocab.py [--rows 256] [--vocab 32768] [--repeats 7] [--quick]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: no idle BLAS threads spinning

import numpy as np  # noqa: E402

import rlhf_fast as rl  # noqa: E402
from _common import interleaved, rate, ratio, table, timed  # noqa: E402
from rlhf_fast import rows  # noqa: E402
from rlhf_fast.reference.kernels import rows as ref_rows  # noqa: E402

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
    parser.add_argument("--repeats", type=int, default=7, help="best of this many measurements")
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
    lq = rows.log_softmax_rows(z_ref)  # the reference's log-softmax, once per batch
    outs = {}
    for name in ("rust", "rust1", "norm", "norm1", "numpy", "ceiling", "ceiling1"):
        outs[name] = np.empty_like(z)
        outs[name].fill(0.0)  # faulted in once, before timing
    table_bytes = z.nbytes
    moved = 3 * table_bytes  # two tables read, one written
    threads = None  # the default pool: every core (or RAYON_NUM_THREADS)
    cores = os.cpu_count()
    pool = os.environ.get("RAYON_NUM_THREADS") or str(cores)

    print(f"B3: [{n}, {v}] float64 logits and reference, backend {rl.BACKEND}, {cores} cores; "
          f"parallel = {pool} threads (RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', '-')}), "
          f"NumPy on 1 thread")
    print(f"bytes per pass: read logits {table_bytes / 2**20:.0f} MiB + reference {table_bytes / 2**20:.0f} MiB, "
          f"write gradient {table_bytes / 2**20:.0f} MiB = {moved / 2**20:.0f} MiB ({moved / 1e6:.0f} MB) "
          f"for the kernel and for stream_add alike; stream_sum reads the first {2 * table_bytes / 2**20:.0f} MiB only")

    nb = f"numpy, {args.numpy_rows} rows a chunk (1 thread)"
    contenders = {
        "ceiling: stream_add, parallel": lambda: rows.stream_add(z, z_ref, outs["ceiling"], n_threads=threads),
        "ceiling: stream_add, 1 thread": lambda: rows.stream_add(z, z_ref, outs["ceiling1"], n_threads=1),
        "read only: stream_sum, parallel": lambda: rows.stream_sum(z, z_ref, n_threads=threads),
        "rust, parallel": lambda: rows.ppo_batch_step(z, z_ref, u, w, BETA, out=outs["rust"], n_threads=threads),
        "rust, 1 thread": lambda: rows.ppo_batch_step(z, z_ref, u, w, BETA, out=outs["rust1"], n_threads=1),
        "rust, fresh output, parallel": lambda: rows.ppo_batch_step(z, z_ref, u, w, BETA, n_threads=threads),
        "rust ref_normalized, parallel": lambda: rows.ppo_batch_step(
            z, lq, u, w, BETA, out=outs["norm"], ref_normalized=True, n_threads=threads),
        "rust ref_normalized, 1 thread": lambda: rows.ppo_batch_step(
            z, lq, u, w, BETA, out=outs["norm1"], ref_normalized=True, n_threads=1),
        "its log_softmax_rows(ref), fresh, par.": lambda: rows.log_softmax_rows(z_ref, n_threads=threads),
        nb: lambda: numpy_step(z, z_ref, u, w, BETA, outs["numpy"], args.numpy_rows),
    }
    best, results = interleaved(contenders, repeats=args.repeats)

    k = min(args.ref_rows, n)
    ref_seconds, ref_out = timed(
        lambda: ref_rows.ppo_batch_step(z[:k].tolist(), z_ref[:k].tolist(), u[:k].tolist(), w.tolist(), BETA)
    )
    best["reference (extrapolated, 1 thread)"] = ref_seconds * n / k

    rust = best["rust, parallel"]
    byte_count = {"read only: stream_sum, parallel": 2 * table_bytes, "its log_softmax_rows(ref), fresh, par.": 2 * table_bytes}
    headers = ["contender", "seconds", "rows/s", "GB/s moved", "rust, parallel is"]
    body = []
    for name, seconds in best.items():
        bytes_ = byte_count.get(name, moved)
        body.append([name, f"{seconds:.4f}", rate(n / seconds), f"{bytes_ / seconds / 1e9:.2f}",
                     ratio(seconds / rust) if name != "rust, parallel" else ""])
    table(headers, body)

    ceiling, ceiling1 = best["ceiling: stream_add, parallel"], best["ceiling: stream_add, 1 thread"]
    numpy_t = best[nb]
    rust1 = best["rust, 1 thread"]
    norm, norm1 = best["rust ref_normalized, parallel"], best["rust ref_normalized, 1 thread"]
    lsm = best["its log_softmax_rows(ref), fresh, par."]
    print()
    print(f"memory ceiling   : {moved / ceiling / 1e9:.1f} GB/s parallel, {moved / ceiling1 / 1e9:.1f} GB/s on 1 thread "
          f"(stream_add, {moved / 2**20:.0f} MiB moved); reading only: "
          f"{2 * table_bytes / best['read only: stream_sum, parallel'] / 1e9:.1f} GB/s (stream_sum)")
    print(f"Rust / reference : {ratio(best['reference (extrapolated, 1 thread)'] / rust)}")
    print(f"Rust / NumPy     : {ratio(numpy_t / rust)} parallel, {ratio(numpy_t / rust1)} on 1 thread   (target >= 5x)")
    print(f"Rust / ceiling   : {100 * ceiling / rust:.0f} % parallel, {100 * ceiling1 / rust1:.0f} % on 1 thread, "
          f"of the same-run stream_add on as many threads   (target >= 60 %)")
    print(f"ref_normalized   : {100 * ceiling / norm:.0f} % parallel, {100 * ceiling1 / norm1:.0f} % on 1 thread; "
          f"Rust / NumPy {ratio(numpy_t / norm)}; incl. its log_softmax_rows (once per batch): "
          f"{100 * ceiling / (norm + lsm):.0f} %, {ratio(numpy_t / (norm + lsm))} NumPy")
    print(f"fresh output     : {100 * ceiling / best['rust, fresh output, parallel']:.0f} % of the ceiling "
          f"(the OS faults in and zeroes the new array's pages)")

    # The same work: tokens equal to the reference's, floats within 1e-12 relative.
    step = results["rust, parallel"]
    tokens_np = results[nb][0]
    ref_tokens, ref_kl, _, _, ref_grad = ref_out
    assert step.tokens[:k].tolist() == ref_tokens, "Rust tokens differ from the reference's"
    for other in ("rust, 1 thread", "rust ref_normalized, parallel", "rust ref_normalized, 1 thread"):
        assert results[other].tokens.tolist() == step.tokens.tolist(), f"{other}: tokens differ"
    assert np.array_equal(results["rust, 1 thread"].grad, step.grad), "1 thread and parallel differ"
    kl_err = np.max(np.abs(step.kl[:k] - ref_kl) / np.abs(ref_kl))
    norm_kl_err = np.max(np.abs(results["rust ref_normalized, parallel"].kl - step.kl) / np.abs(step.kl))
    g = np.array(ref_grad)
    grad_err = np.max(np.abs(step.grad[:k] - g) / np.maximum(np.abs(g), 1e-300))
    same_np = int((tokens_np == step.tokens).sum())
    print(f"check            : Rust tokens = reference's on {k} rows; KL within {kl_err:.1e} rel, gradient within "
          f"{grad_err:.1e} rel; 1 thread = parallel, bit for bit; ref_normalized: same tokens, KL within "
          f"{norm_kl_err:.1e} rel; NumPy picks Rust's token on {same_np}/{n} rows")
    assert kl_err < 1e-12 and grad_err < 1e-12 and norm_kl_err < 1e-12


if __name__ == "__main__":
    main()
