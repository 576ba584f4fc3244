//! Softmax, log-softmax, KL(π‖π_ref), sampling and the PPO surrogate gradient over rows of a
//! large vocabulary (`V` up to 65,536 and past it), vectorised *along the row*, rows in
//! parallel on the rayon pool.
//!
//! [`softmax`](super::softmax) and friends walk a row several times with libm's `exp`; here
//! each input row is read from memory once and each output row written to memory once. Every
//! row goes through three passes, and a thread works on three consecutive rows at once, one
//! pass each, in a single loop, so that memory and arithmetic overlap instead of taking turns:
//!
//! - **A** (row `i+1`), the row's first read, from memory: its maximum `M` (and the reference's
//!   `M_r`), and without a reference its plain sum, which is finite exactly when every entry
//!   is (with one, pass B's `S` and `T` show a bad logit or reference entry);
//! - **B** (row `i`, now in cache): `e^(z−M)` per logit ([`exp_nonpositive_fused`]), kept in a
//!   scratch row of the thread, and the sums `S = Σ e^(z−M)`, `R = Σ e^(r−M_r)` and
//!   `T = Σ e^(z−M)·((z−M) − (r−M_r))`, per chunk of [`CHUNK`] logits (sampling skips whole
//!   chunks by their sums); `KL(π‖π_ref) = T/S − ln S + ln R`, with the log-ratio taken between
//!   shifted logits, so logits of ±1e4 lose nothing to cancellation. Given the reference's
//!   log-softmax `lq` instead (`ref_normalized`, computed once per batch when the reference is
//!   fixed), `T = Σ e^(z−M)·((z−M) − lq)` and `KL = T/S − ln S`: one `exp` per logit, not two;
//! - **W** (row `i−1`): its output, `π` scaled as the kernel needs (`e^(z−M)` from the scratch
//!   row times one factor), written with non-temporal stores where 64-byte aligned: the lines
//!   go to memory without being read first.
//!
//! Benchmark B3 (`benches/b3_large_vocab.py`) measures this against a pass that moves the same
//! bytes (`stream_add`). The kernel is bound by arithmetic (two `exp`s a logit with reference
//! logits, each about 20 FMA-unit operations a vector) and by how well memory overlaps it, so
//! pass B does all its `exp`s in one loop per chunk, with pass A's loads and pass W's stores
//! beside them (see [`fused`]). On a 2-core Xeon with AVX-512 (about 3 GHz) that layout reaches
//! 64–70 % of the ceiling (51 % with each pass in a loop of its own); the development machine
//! before it (Zen 3, AVX2) reached 34–46 % with loops of their own. There, one `exp` alone, in a
//! loop of nothing else, cost 1.0–1.2 ns a logit (about 60 % of the FMA units' peak: its chain of
//! ~35 cycles holds it back), and diagnostic builds with the `exp`s replaced by one FMA reached
//! only 56 %. Measured and kept out: Horner's scheme in `r²` for the polynomial (2 % slower); pass
//! A in a loop of its own (3–8 % slower); prefetching a whole chunk ahead (no change); a degree-9
//! `exp` for the reference's normaliser (4–5 % faster, for KL errors of 1.4e-14 where there is
//! only rounding now); the reference's maximum taken in the reference's loop (slower on AVX-512);
//! both `exp`s of a vector evaluated step by step together, `vscalefpd` for `2^k`, and the loop's
//! slices walked as exact chunks without bounds checks (no change on AVX-512).
//!
//! Memory traffic per row is thus the inputs read once and the output written once, the least
//! the kernel can do; the scratch rows (two of `V` doubles per thread) stay in L2/L3.
//!
//! **Against the reference twin** (`reference/kernels/rows.py`, libm's `exp`, sums left to
//! right): every lane runs the same IEEE operations (fused multiply-adds included) in the
//! same order on every vector unit, and a row's arithmetic does not depend on its neighbours,
//! so results do not depend on the CPU or the thread count; they differ from the reference by
//! `exp`'s two ulps (and `exp` flushed to 0 below `e^−708`, an absolute error under
//! `3.4e-308`) and the order of the sums (eight lane sums per chunk): a few ulps relative for
//! `π` and `log π` (tested to 1e-12), and `1e-12 × (1 + Σ π|log π − log π_ref|)` for the KL.
//! **Sampled tokens are the reference's, always**: the fast running sums are within
//! [`sample_margin`] of the reference's, so where `u` is farther than that from both sums
//! around the token picked, the reference picks that token too; closer (a chance of about
//! `1e-10` a row), the row is sampled again exactly as the reference does it, with libm.
//! PPO's clip decision is made safe the same way.
//!
//! Inputs are not checked beforehand (a pass of its own would add a read of every table):
//! pass A's sums, or pass B's, are finite exactly when a row's entries are, and the batch
//! functions then name the first entry that is not. Finite entries whose results pass the
//! floats (a row spanning more than them: `z − M` is −∞) cost nothing on the way either: a KL
//! whose fast sums are not finite is taken again the reference's way (which skips `π = 0`),
//! and what still overflows (a log-softmax, a KL, a reward, a gradient's scale) is a
//! `Diverged` error naming it, the reference twin's message.

use rayon::prelude::*;

use crate::error::{py_float, Error, Result};
use crate::kernels::fastmath::exp_nonpositive_fused;
use crate::kernels::sampling::sample_index;
#[cfg(target_arch = "x86_64")]
use crate::kernels::simd::{Avx2, Avx2Isa, Avx512, Avx512Isa};
use crate::kernels::simd::{Portable, Simd, Vector, LANES};
use crate::kernels::softmax::{log_softmax_row, softmax_row};

/// Logits per chunk, the unit of sampling's running sums.
pub const CHUNK: usize = 1024;
/// Vectors per chunk.
const CHUNK_VECTORS: usize = CHUNK / LANES;
/// Padding for a row's last, partial vector in pass B: finite, and its `exp` is 0.
const PAD: f64 = f64::MIN;

/// What a kernel's second table holds: nothing, reference logits, or the reference's
/// log-softmax (`ref_normalized`).
const NO_REF: u8 = 0;
const REF_LOGITS: u8 = 1;
const REF_LOG_PROBS: u8 = 2;

/// What pass W writes: nothing; `src · a` (`src` the scratch row of `e^(z−M)`); or
/// `(src − a) − b` (`src` the logits: log-softmax).
const W_NONE: u8 = 0;
const W_SCALED: u8 = 1;
const W_SHIFTED: u8 = 2;

// ------------------------------------------------------------------------------ vectors

/// `xs` (at most one vector) as a vector, padded with [`PAD`].
#[inline(always)]
fn load<V: Vector>(isa: V::Isa, xs: &[f64]) -> V {
    match <[f64; LANES]>::try_from(xs) {
        Ok(full) => V::from_array(isa, full),
        Err(_) => {
            let mut padded = [PAD; LANES];
            padded[..xs.len()].copy_from_slice(xs);
            V::from_array(isa, padded)
        }
    }
}

/// The first `out.len()` (at most [`LANES`]) lanes of `v`, written to `out`.
#[inline(always)]
fn store<V: Vector>(v: V, out: &mut [f64]) {
    match <&mut [f64; LANES]>::try_from(&mut *out) {
        Ok(full) => *full = v.to_array(),
        Err(_) => {
            let values = v.to_array();
            for (o, &x) in out.iter_mut().zip(&values) {
                *o = x;
            }
        }
    }
}

/// Sum of a vector's lanes, first to last.
#[inline(always)]
fn lanes_sum<V: Vector>(v: V) -> f64 {
    v.to_array().iter().fold(0.0, |acc, &x| acc + x)
}

/// Largest of a vector's lanes (NaNs skipped).
#[inline(always)]
fn lanes_max<V: Vector>(v: V) -> f64 {
    v.to_array().iter().fold(f64::NEG_INFINITY, |acc, &x| if x > acc { x } else { acc })
}

// ------------------------------------------------------------------------------ passes

/// How far ahead of pass A's reads the next lines are asked for, in logits: the hardware
/// prefetcher alone does not keep enough of them in flight while the core computes.
const PREFETCH: usize = 256;

/// Asks the CPU to start loading the cache line of `x` (a hint: it reads nothing, cannot
/// fault, and changes no result).
#[inline(always)]
fn prefetch(x: &f64) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` is SSE (every x86-64 CPU has it) and only hints at an address,
    // here that of a live reference.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((x as *const f64).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// Pass A's findings on a row: its maximum `m` (NaNs skipped); without a reference, the
/// row's plain sum, finite exactly when every entry is (or, harmlessly, when finite entries of
/// ~1e308 add up past the largest double: the search for the culprit then finds none); with
/// one, the reference's maximum `m_ref` (its finiteness, and the row's, show in pass B's `T`);
/// for log-softmax (`low`), the row's minimum: `min − M` is −∞ exactly when an output is.
#[derive(Clone, Copy, Debug, Default)]
struct Peek {
    m: f64,
    sum: f64,
    m_ref: f64,
    low: f64,
}

/// Pass A's vector accumulators: the row's maximum, its sum or the reference's maximum, and
/// (log-softmax only) its minimum.
#[derive(Clone, Copy)]
struct PeekAcc<V> {
    m: V,
    other: V,
    minus_low: V,
}

impl<V: Vector> PeekAcc<V> {
    #[inline(always)]
    fn new<const REF: u8>(isa: V::Isa) -> Self {
        let low = V::splat(isa, f64::NEG_INFINITY);
        PeekAcc { m: low, other: if REF == NO_REF { V::zero(isa) } else { low }, minus_low: low }
    }

    /// One whole vector of the row at `j` (and of the reference, unless `REF` is `NO_REF`;
    /// with `track_low`, the minimum too).
    #[inline(always)]
    fn add<const REF: u8>(&mut self, isa: V::Isa, z: &[f64], r: &[f64], j: usize, track_low: bool) {
        let zv = load::<V>(isa, &z[j..j + LANES]);
        self.m = zv.max_or_rhs(self.m);
        if track_low {
            // min(z) = −max(−z); NaNs are pass A's sum's to find.
            self.minus_low = (V::zero(isa) - zv).max_or_rhs(self.minus_low);
        }
        if REF == NO_REF {
            self.other = self.other + zv;
        } else {
            self.other = load::<V>(isa, &r[j..j + LANES]).max_or_rhs(self.other);
        }
    }

    /// The findings, with the row's last `len % LANES` entries (from `start`) added one by one.
    #[inline(always)]
    fn finish<const REF: u8>(&self, z: &[f64], r: &[f64], start: usize, track_low: bool) -> Peek {
        let mut peek = Peek { m: lanes_max(self.m), sum: 0.0, m_ref: 0.0, low: 0.0 };
        for &x in &z[start..] {
            peek.m = if x > peek.m { x } else { peek.m };
        }
        if track_low {
            peek.low = -lanes_max(self.minus_low);
            for &x in &z[start..] {
                peek.low = if x < peek.low { x } else { peek.low };
            }
        }
        if REF == NO_REF {
            peek.sum = lanes_sum(self.other) + z[start..].iter().fold(0.0, |acc, &x| acc + x);
        } else {
            peek.m_ref = lanes_max(self.other);
            for &x in &r[start..] {
                peek.m_ref = if x > peek.m_ref { x } else { peek.m_ref };
            }
        }
        peek
    }
}

/// Pass A alone: a task's first row.
#[inline(always)]
fn peek_row<V: Vector, const REF: u8>(isa: V::Isa, z: &[f64], r: &[f64], track_low: bool) -> Peek {
    let whole = z.len() / LANES * LANES;
    let mut acc = PeekAcc::<V>::new::<REF>(isa);
    for j in (0..whole).step_by(LANES) {
        acc.add::<REF>(isa, z, r, j, track_low);
    }
    acc.finish::<REF>(z, r, whole, track_low)
}

/// Pass B's totals.
#[derive(Clone, Copy, Debug)]
struct Sums {
    /// `S = Σ e^(z−M)`, `R = Σ e^(r−M_r)` (1 without reference logits), `T`.
    s: f64,
    s_ref: f64,
    t: f64,
}

/// How pass W writes a row: `src · a` or `(src − a) − b`, as the kernel's `W` says.
#[derive(Clone, Copy, Debug, Default)]
struct WriteSpec {
    a: f64,
    b: f64,
}

/// Pass W's value for the vector of `src` at `j` (whole or, at the ends, padded).
#[inline(always)]
fn written<V: Vector, const W: u8>(isa: V::Isa, src: &[f64], spec: WriteSpec, lo: usize, hi: usize) -> V {
    let x = load::<V>(isa, &src[lo..hi]);
    if W == W_SCALED {
        x * V::splat(isa, spec.a)
    } else {
        (x - V::splat(isa, spec.a)) - V::splat(isa, spec.b)
    }
}

/// Pass W's ordinary stores: `out`'s elements before its first 64-byte boundary (`head` of
/// them) and after its last whole aligned vector (from `tail`).
#[inline(always)]
fn write_ends<V: Vector, const W: u8>(
    isa: V::Isa,
    src: &[f64],
    out: &mut [f64],
    spec: WriteSpec,
    head: usize,
    tail: usize,
) {
    for (lo, hi) in [(0, head), (tail, out.len())] {
        let mut j = lo;
        while j < hi {
            let end = (j + LANES).min(hi);
            store(written::<V, W>(isa, src, spec, j, end), &mut out[j..end]);
            j = end;
        }
    }
}

/// Where `out`'s aligned whole vectors start (`head`) and how many there are.
#[inline(always)]
fn aligned(out: &[f64]) -> (usize, usize) {
    // `align_offset` is `usize::MAX` when `out` is not even 8-byte aligned: all ordinary stores.
    let head = out.as_ptr().align_offset(64).min(out.len());
    (head, (out.len() - head) / LANES)
}

/// Pass W alone: a task's last row.
#[inline(always)]
fn write_row<V: Vector, const W: u8>(isa: V::Isa, src: &[f64], out: &mut [f64], spec: WriteSpec) {
    let (head, n) = aligned(out);
    for g in 0..n {
        write_vector::<V, W>(isa, src, out, spec, (head, n), g);
    }
    write_ends::<V, W>(isa, src, out, spec, head, head + n * LANES);
}

/// Pass W's streamed store of whole aligned vector `g` of `n_w` (as [`aligned`] gives them), at
/// `head + g·LANES`.
#[inline(always)]
fn write_vector<V: Vector, const W: u8>(
    isa: V::Isa,
    src: &[f64],
    out: &mut [f64],
    spec: WriteSpec,
    (head, n_w): (usize, usize),
    g: usize,
) {
    if W != W_NONE && g < n_w {
        let k = head + g * LANES;
        written::<V, W>(isa, src, spec, k, k + LANES).stream(&mut out[k..k + LANES]);
    }
}

/// Pass B over row `z` (and `r`, as `REF` says), whose pass A found `peek`, fused with pass A
/// over the next row `next` and pass W of the previous row into `w_out` (empty: none): the
/// next row's [`Peek`] and this row's [`Sums`]; with `STORE`, every `e^(z−M)` in `e`; each
/// chunk's `Σ e^(z−M)` in `chunk_sums`.
///
/// Per chunk of [`CHUNK`] logits, one loop does the arithmetic that needs an `exp` with all of
/// the row's memory traffic beside it (pass A's loads, prefetched [`PREFETCH`] logits ahead,
/// and, with reference logits, pass W's streamed stores), so that memory never waits on a loop
/// of its own: `e^(z−M)`, and with reference logits `e^(r−M_r)` and `T` too. Given the
/// reference's log-softmax, `T` and pass W follow in a second loop; without a reference, pass W
/// alone. (The reference's `exp` in a loop of its own, then pass W in a third, as the AVX2
/// development machine preferred, left the memory idle for most of a chunk: on a 2-core Xeon
/// with AVX-512 the one loop took B3 from 51 % of the ceiling to 64–70 %, and on its AVX2 unit
/// from 30 % to 43 %.)
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn fused<V: Vector, const REF: u8, const STORE: bool, const W: u8>(
    isa: V::Isa,
    next: (&[f64], &[f64]),
    z: &[f64],
    r: &[f64],
    peek: &Peek,
    e: &mut [f64],
    chunk_sums: &mut [f64],
    w_src: &[f64],
    w_out: &mut [f64],
    spec: WriteSpec,
) -> (Peek, Sums) {
    let v = z.len();
    let whole = v / LANES;
    let (head, n_w) = if W == W_NONE { (0, 0) } else { aligned(w_out) };
    let zero = V::zero(isa);
    let (m, m_ref) = (V::splat(isa, peek.m), V::splat(isa, peek.m_ref));
    let mut ahead = PeekAcc::<V>::new::<REF>(isa);
    // A chunk's e^(z−M) when the caller keeps none and the reference needs them.
    let mut local = [0.0; CHUNK];
    let keep = STORE || REF != NO_REF;
    let mut sums = Sums { s: 0.0, s_ref: if REF == REF_LOGITS { 0.0 } else { 1.0 }, t: 0.0 };
    let n_c = chunk_sums.len();
    for (c, chunk_sum) in chunk_sums.iter_mut().enumerate() {
        let (g0, g1) = (c * CHUNK_VECTORS, ((c + 1) * CHUNK_VECTORS).min(whole));
        let (lo, hi) = (c * CHUNK, ((c + 1) * CHUNK).min(v));
        let ec: &mut [f64] = if STORE { &mut e[lo..hi] } else { &mut local[..hi - lo] };
        let last = c + 1 == n_c && whole * LANES < v;
        let (mut s, mut s_ref, mut t) = (zero, zero, zero);
        for g in g0..g1 {
            let j = g * LANES;
            if let Some(x) = next.0.get(j + PREFETCH) {
                prefetch(x);
            }
            if REF != NO_REF {
                if let Some(x) = next.1.get(j + PREFETCH) {
                    prefetch(x);
                }
            }
            ahead.add::<REF>(isa, next.0, next.1, j, W == W_SHIFTED);
            let x = load::<V>(isa, &z[j..j + LANES]) - m;
            let ez = exp_nonpositive_fused(x);
            s = s + ez;
            if keep {
                store(ez, &mut ec[j - lo..j - lo + LANES]);
            }
            if REF == REF_LOGITS {
                let y = load::<V>(isa, &r[j..j + LANES]) - m_ref;
                s_ref = s_ref + exp_nonpositive_fused(y);
                t = ez.mul_add(x - y, t);
                write_vector::<V, W>(isa, w_src, w_out, spec, (head, n_w), g);
            }
        }
        if last {
            // The row's last, partial vector (in the last chunk, chunks being whole vectors):
            // padded lanes have e = 0 and add nothing.
            let j = whole * LANES;
            let ez = exp_nonpositive_fused(load::<V>(isa, &z[j..]) - m);
            s = s + ez;
            if keep {
                store(ez, &mut ec[j - lo..]);
            }
        }
        *chunk_sum = lanes_sum(s);
        sums.s += *chunk_sum;
        if REF == REF_LOG_PROBS {
            // T, given the reference's log-softmax, with the previous row's write.
            for g in g0..g1 {
                let j = g * LANES;
                let x = load::<V>(isa, &z[j..j + LANES]) - m;
                let ez = load::<V>(isa, &ec[j - lo..j - lo + LANES]);
                t = ez.mul_add(x - load::<V>(isa, &r[j..j + LANES]), t);
                write_vector::<V, W>(isa, w_src, w_out, spec, (head, n_w), g);
            }
        }
        if REF != NO_REF {
            if last {
                let j = whole * LANES;
                let x = load::<V>(isa, &z[j..]) - m;
                // Padded lanes: e = 0 (not the padding) times a finite log-ratio.
                let ez = load::<V>(isa, &ec[j - lo..]).max_or_rhs(zero);
                if REF == REF_LOGITS {
                    let y = load::<V>(isa, &r[j..]) - m_ref;
                    s_ref = s_ref + exp_nonpositive_fused(y);
                    t = ez.mul_add(x - y, t);
                } else {
                    t = ez.mul_add(x - load::<V>(isa, &r[j..]), t);
                }
            }
            if REF == REF_LOGITS {
                sums.s_ref += lanes_sum(s_ref);
            }
            sums.t += lanes_sum(t);
        } else {
            // Without a reference: the previous row's write, past the caches.
            for g in g0..g1 {
                write_vector::<V, W>(isa, w_src, w_out, spec, (head, n_w), g);
            }
        }
    }
    if W != W_NONE && !w_out.is_empty() {
        write_ends::<V, W>(isa, w_src, w_out, spec, head, head + n_w * LANES);
    }
    (ahead.finish::<REF>(next.0, next.1, whole * LANES, W == W_SHIFTED), sums)
}

/// Chunks of a row of `v` logits.
pub fn n_chunks(v: usize) -> usize {
    v.div_ceil(CHUNK)
}

/// How far the fast running sums of `π` may be from the reference's (libm's `exp`, summed
/// left to right) for a row of `v` logits: each sum of `v` non-negative terms, in any order,
/// is within `(v − 1)·2^−53` of the exact one relative to the total (which is about 1), each
/// `exp` within two ulps (flushed to 0 below `3.4e-308`: at most `v·3.4e-308` absolute), the
/// divisions a few ulps more. Twice the sum of both sides' bounds.
pub fn sample_margin(v: usize) -> f64 {
    8.0 * (v as f64 + 64.0) * (f64::EPSILON / 2.0) + 2.0 * v as f64 * 3.4e-308
}

/// The token inverse-CDF sampling picks with draw `u`, from the stored `e^(z−M)` (`π = e/S`):
/// `None` when `u` lies within [`sample_margin`] of a running sum next to it, where only the
/// reference's own arithmetic can say.
fn locate(e: &[f64], chunk_sums: &[f64], s: f64, u: f64) -> Option<usize> {
    let v = e.len();
    let margin = sample_margin(v);
    let inv_s = 1.0 / s;
    let mut below = 0.0;
    for (c, &sc) in chunk_sums.iter().enumerate() {
        let next = below + sc * inv_s;
        if next > u {
            let start = c * CHUNK;
            let mut running = below;
            for (j, &ej) in e[start..(start + CHUNK).min(v)].iter().enumerate() {
                let high = running + ej * inv_s;
                if high > u {
                    let k = start + j;
                    let clear_below = k == 0 || u - running > margin;
                    let clear_above = k == v - 1 || high - u > margin;
                    return (clear_below && clear_above).then_some(k);
                }
                running = high;
            }
            return None; // the chunk's own sum crossed u, its running sums did not: a near tie
        }
        below = next;
    }
    (u - below > margin).then_some(v - 1)
}

/// The reference's sample, computed the reference's way (libm `exp`, left-to-right sums).
fn sample_exactly(z: &[f64], u: f64) -> usize {
    let mut p = vec![0.0; z.len()];
    softmax_row(z, &mut p);
    sample_index(&p, u)
}

/// The reference's `softmax(z)[a]`, computed the reference's way.
fn probability_exactly(z: &[f64], a: usize) -> f64 {
    let mut p = vec![0.0; z.len()];
    softmax_row(z, &mut p);
    p[a]
}

/// The reference's `KL(softmax z ‖ softmax r)` (`r` itself as log-probabilities when
/// `normalized`), computed the reference's way: terms with `π_j = 0` skipped.
fn kl_exactly(z: &[f64], r: &[f64], normalized: bool) -> f64 {
    let (mut p, mut log_p) = (vec![0.0; z.len()], vec![0.0; z.len()]);
    softmax_row(z, &mut p);
    log_softmax_row(z, &mut log_p);
    let log_q = if normalized {
        r.to_vec()
    } else {
        let mut log_q = vec![0.0; r.len()];
        log_softmax_row(r, &mut log_q);
        log_q
    };
    let mut total = 0.0;
    for ((&pj, &lpj), &lqj) in p.iter().zip(&log_p).zip(&log_q) {
        if pj > 0.0 {
            total += pj * (lpj - lqj);
        }
    }
    total
}

/// Whether PPO's clipped surrogate is flat at this ratio (`reference/methods/ppo.py`).
fn is_clipped(advantage: f64, ratio: f64, eps: f64) -> bool {
    (advantage >= 0.0 && ratio > 1.0 + eps) || (advantage < 0.0 && ratio < 1.0 - eps)
}

/// Relative distance from a clip edge below which the ratio is recomputed exactly.
const CLIP_MARGIN: f64 = 1e-9;

// --------------------------------------------------------------------------- row kernels

/// What each row of a batch needs besides its logits.
#[derive(Clone, Copy, Debug)]
pub enum RowJob<'a> {
    Softmax,
    LogSoftmax,
    /// `ref_logits` is the reference's log-softmax when `ref_normalized` (entries `<= 0`).
    Kl {
        ref_logits: &'a [f64],
        ref_normalized: bool,
    },
    Sample {
        u: &'a [f64],
    },
    /// `tokens`, `p_old` (π_old of the token) and `advantages` per row; PPO's clip range.
    PpoGrad {
        tokens: &'a [i64],
        p_old: &'a [f64],
        advantages: &'a [f64],
        eps: f64,
    },
    /// The fused B3 step: reference logits (or log-softmax, `ref_normalized`), draws, the
    /// reward model's weight per token, β.
    PpoStep {
        ref_logits: &'a [f64],
        ref_normalized: bool,
        u: &'a [f64],
        weights: &'a [f64],
        beta: f64,
    },
}

impl RowJob<'_> {
    /// The reference table, and whether it holds log-probabilities.
    fn reference(&self) -> Option<(&[f64], bool)> {
        match *self {
            RowJob::Kl { ref_logits, ref_normalized } | RowJob::PpoStep { ref_logits, ref_normalized, .. } => {
                Some((ref_logits, ref_normalized))
            }
            _ => None,
        }
    }

    /// Whether the job writes a `[rows, V]` output.
    fn writes_rows(&self) -> bool {
        !matches!(self, RowJob::Kl { .. } | RowJob::Sample { .. })
    }
}

/// One row's scalar results.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RowOut {
    /// The sampled token (sampling and the fused step).
    pub token: i64,
    /// `KL(π‖π_ref)` (KL and the fused step).
    pub kl: f64,
    /// `weights[token] − β KL` (the fused step).
    pub reward: f64,
    /// `π(token)` (the fused step): the `p_old` of later PPO epochs.
    pub p_token: f64,
    /// Whether the row was clipped (the gradient kernel).
    pub clipped: bool,
    /// Not finite exactly when a logit (a reference entry) is not.
    sum: f64,
    sum_ref: f64,
    /// The largest reference entry (given log-probabilities, which must be `<= 0`).
    top_ref: f64,
    /// What may overflow with finite inputs: log-softmax's `min − M` (−∞ when an output is),
    /// the gradient's scale `A·π(a)/π_old(a)`; 0 for the other kernels.
    overflow: f64,
}

/// A row's results, how pass W writes it, and the one entry written after (the gradient at
/// the sampled token).
struct Finished {
    out: RowOut,
    spec: WriteSpec,
    fix: Option<(usize, f64)>,
}

/// Row `i`'s results from its passes: `z` its logits, `e` its `e^(z−M)`.
fn finish(job: RowJob<'_>, i: usize, z: &[f64], peek: &Peek, sums: &Sums, e: &[f64], chunk_sums: &[f64]) -> Finished {
    // Not finite exactly when a logit (or a reference entry) is not: pass A's sum without a
    // reference; with one, S (NaN, +∞ logits) and T (−∞ logits: 0 · −∞; any bad reference).
    let (sum, sum_ref) = match job.reference() {
        None => (peek.sum, 0.0),
        Some(_) => (sums.s + sums.t, sums.t),
    };
    let base = RowOut { sum, sum_ref, top_ref: peek.m_ref, ..RowOut::default() };
    // Finite logits whose shifted values overflow (a row spanning more than the floats: e = 0
    // times −∞ in T) are left to the reference's arithmetic, which skips terms with π = 0.
    let kl = || {
        let fast = sums.t / sums.s - sums.s.ln() + sums.s_ref.ln();
        match job.reference() {
            Some((r, normalized)) if !fast.is_finite() => kl_exactly(z, &r[i * z.len()..(i + 1) * z.len()], normalized),
            _ => fast,
        }
    };
    let inv_s = 1.0 / sums.s;
    let plain = |out: RowOut, a: f64| Finished { out, spec: WriteSpec { a, b: 0.0 }, fix: None };
    match job {
        RowJob::Softmax => plain(base, inv_s),
        RowJob::LogSoftmax => Finished {
            out: RowOut { overflow: peek.low - peek.m, ..base },
            spec: WriteSpec { a: peek.m, b: sums.s.ln() },
            fix: None,
        },
        RowJob::Kl { .. } => plain(RowOut { kl: kl(), ..base }, 0.0),
        RowJob::Sample { u } => {
            let token = locate(e, chunk_sums, sums.s, u[i]).unwrap_or_else(|| sample_exactly(z, u[i]));
            plain(RowOut { token: token as i64, ..base }, 0.0)
        }
        RowJob::PpoGrad { tokens, p_old, advantages, eps } => {
            let (a, advantage, p_old) = (tokens[i] as usize, advantages[i], p_old[i]);
            let p_a = e[a] * inv_s;
            let mut ratio = p_a / p_old;
            let edge = if advantage >= 0.0 { 1.0 + eps } else { 1.0 - eps };
            if (ratio - edge).abs() <= CLIP_MARGIN * edge {
                ratio = probability_exactly(z, a) / p_old;
            }
            if is_clipped(advantage, ratio, eps) {
                // A flat surrogate: a gradient of zeros (e · 0, e finite and >= 0).
                return plain(RowOut { clipped: true, ..base }, 0.0);
            }
            let scale = advantage * ratio;
            // grad_j = scale (1[j = a] − π_j) = −(scale π_j) off the token.
            Finished {
                out: RowOut { overflow: scale, ..base },
                spec: WriteSpec { a: -scale * inv_s, b: 0.0 },
                fix: Some((a, scale * (1.0 - p_a))),
            }
        }
        RowJob::PpoStep { u, weights, beta, .. } => {
            let a = locate(e, chunk_sums, sums.s, u[i]).unwrap_or_else(|| sample_exactly(z, u[i]));
            let kl = kl();
            let reward = weights[a] - beta * kl;
            let p_a = e[a] * inv_s;
            // The first PPO epoch: the policy is the one that sampled, the ratio is 1 and the
            // clip cannot act, so the gradient is A (1[j = a] − π_j) with A the reward.
            Finished {
                out: RowOut { token: a as i64, kl, reward, p_token: p_a, ..base },
                spec: WriteSpec { a: -reward * inv_s, b: 0.0 },
                fix: Some((a, reward * (1.0 - p_a))),
            }
        }
    }
}

/// A row whose pass W is still to come: its index in the task, how it is written, and the one
/// entry written after it.
struct Pending {
    row: usize,
    spec: WriteSpec,
    fix: Option<(usize, f64)>,
}

/// `job` on a task's consecutive rows `first..`: `z` their logits, `r` their reference rows
/// (empty without), `out` their output rows (empty for kernels with scalar results only).
/// Row `k` is pass B while row `k+1` is pass A and row `k−1` pass W.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn run_task<V: Vector, const REF: u8, const STORE: bool, const W: u8>(
    isa: V::Isa,
    job: RowJob<'_>,
    first: usize,
    z: &[f64],
    r: &[f64],
    out: &mut [f64],
    v: usize,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<Vec<RowOut>> {
    let n = z.len() / v;
    let row = |k: usize| &z[k * v..(k + 1) * v];
    let ref_row = |k: usize| if REF == NO_REF { &r[..0] } else { &r[k * v..(k + 1) * v] };
    let mut e = vec![0.0; if STORE { v } else { 0 }];
    let mut e_prev = vec![0.0; if STORE && W == W_SCALED { v } else { 0 }];
    let mut chunk_sums = vec![0.0; n_chunks(v)];
    let mut results = Vec::with_capacity(n);
    let mut peek = peek_row::<V, REF>(isa, row(0), ref_row(0), W == W_SHIFTED);
    // The previous row's write.
    let mut pending: Option<Pending> = None;
    for k in 0..n {
        if stop() {
            return Err(Error::Cancelled);
        }
        // The last row peeks at itself (from cache; the finding is not used).
        let next = if k + 1 < n { (row(k + 1), ref_row(k + 1)) } else { (row(k), ref_row(k)) };
        let (w_out, w_src, spec): (&mut [f64], &[f64], WriteSpec) = match pending {
            Some(Pending { row: p, spec, .. }) if W != W_NONE => {
                let src = if W == W_SCALED { &e_prev[..] } else { row(p) };
                (&mut out[p * v..(p + 1) * v], src, spec)
            }
            _ => (&mut [], &[], WriteSpec::default()),
        };
        let (next_peek, sums) = fused::<V, REF, STORE, W>(
            isa,
            next,
            row(k),
            ref_row(k),
            &peek,
            &mut e,
            &mut chunk_sums,
            w_src,
            w_out,
            spec,
        );
        if let Some(Pending { row: p, fix, .. }) = pending.take() {
            if W != W_NONE {
                // The streamed stores reach `out` before the one entry written after them.
                V::stream_fence(isa);
                if let Some((a, value)) = fix {
                    out[p * v + a] = value;
                }
            }
        }
        let done = finish(job, first + k, row(k), &peek, &sums, &e, &chunk_sums);
        results.push(done.out);
        pending = Some(Pending { row: k, spec: done.spec, fix: done.fix });
        if STORE && W == W_SCALED {
            std::mem::swap(&mut e, &mut e_prev);
        }
        peek = next_peek;
    }
    if let (Some(Pending { row: p, spec, fix }), true) = (pending, W != W_NONE) {
        let src = if W == W_SCALED { &e_prev[..] } else { row(p) };
        write_row::<V, W>(isa, src, &mut out[p * v..(p + 1) * v], spec);
        V::stream_fence(isa);
        if let Some((a, value)) = fix {
            out[p * v + a] = value;
        }
    }
    Ok(results)
}

/// [`run_task`] for `job`'s passes.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn run_job<V: Vector>(
    isa: V::Isa,
    job: RowJob<'_>,
    first: usize,
    z: &[f64],
    r: &[f64],
    out: &mut [f64],
    v: usize,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<Vec<RowOut>> {
    match job {
        RowJob::Softmax | RowJob::PpoGrad { .. } => {
            run_task::<V, NO_REF, true, W_SCALED>(isa, job, first, z, r, out, v, stop)
        }
        RowJob::LogSoftmax => run_task::<V, NO_REF, false, W_SHIFTED>(isa, job, first, z, r, out, v, stop),
        RowJob::Sample { .. } => run_task::<V, NO_REF, true, W_NONE>(isa, job, first, z, r, out, v, stop),
        RowJob::Kl { ref_normalized: false, .. } => {
            run_task::<V, REF_LOGITS, false, W_NONE>(isa, job, first, z, r, out, v, stop)
        }
        RowJob::Kl { ref_normalized: true, .. } => {
            run_task::<V, REF_LOG_PROBS, false, W_NONE>(isa, job, first, z, r, out, v, stop)
        }
        RowJob::PpoStep { ref_normalized: false, .. } => {
            run_task::<V, REF_LOGITS, true, W_SCALED>(isa, job, first, z, r, out, v, stop)
        }
        RowJob::PpoStep { ref_normalized: true, .. } => {
            run_task::<V, REF_LOG_PROBS, true, W_SCALED>(isa, job, first, z, r, out, v, stop)
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn run_job_avx2(
    isa: Avx2Isa,
    job: RowJob<'_>,
    first: usize,
    z: &[f64],
    r: &[f64],
    out: &mut [f64],
    v: usize,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<Vec<RowOut>> {
    run_job::<Avx2>(isa, job, first, z, r, out, v, stop)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
fn run_job_avx512(
    isa: Avx512Isa,
    job: RowJob<'_>,
    first: usize,
    z: &[f64],
    r: &[f64],
    out: &mut [f64],
    v: usize,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<Vec<RowOut>> {
    run_job::<Avx512>(isa, job, first, z, r, out, v, stop)
}

/// [`run_job`] on `simd`'s vector unit.
#[allow(clippy::too_many_arguments)]
fn run_job_on(
    simd: Simd,
    job: RowJob<'_>,
    first: usize,
    z: &[f64],
    r: &[f64],
    out: &mut [f64],
    v: usize,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<Vec<RowOut>> {
    match simd {
        Simd::Portable => run_job::<Portable>((), job, first, z, r, out, v, stop),
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2(isa) => {
            // SAFETY: `isa` is an `Avx2Isa`, which only `Simd::available` mints, after
            // detecting AVX2 and FMA on this CPU: the code of `run_job_avx2` can run here.
            unsafe { run_job_avx2(isa, job, first, z, r, out, v, stop) }
        }
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512(isa) => {
            // SAFETY: `isa` is an `Avx512Isa`, which only `Simd::available` mints, after
            // detecting AVX-512F on this CPU: the AVX-512F code of `run_job_avx512` can run here.
            unsafe { run_job_avx512(isa, job, first, z, r, out, v, stop) }
        }
    }
}

// --------------------------------------------------------------------------- batches

/// The first entry of `name` that is not finite, as an error naming `name[row, column]`.
fn non_finite(name: &str, rows: &[RowOut], table: &[f64], v: usize, flag: impl Fn(&RowOut) -> f64) -> Result<()> {
    for (i, _) in rows.iter().enumerate().filter(|(_, row)| !flag(row).is_finite()) {
        let row = &table[i * v..(i + 1) * v];
        if let Some(j) = row.iter().position(|x| !x.is_finite()) {
            return Err(Error::invalid(format!("{name}[{i}, {j}] must be finite, got {}", py_float(row[j]))));
        }
    }
    Ok(())
}

/// The first positive entry of a reference given as log-probabilities, as an error.
fn not_log_probs(rows: &[RowOut], table: &[f64], v: usize) -> Result<()> {
    if let Some(i) = rows.iter().position(|row| row.top_ref > 0.0) {
        let row = &table[i * v..(i + 1) * v];
        if let Some(j) = row.iter().position(|&x| x > 0.0) {
            return Err(Error::invalid(format!(
                "ref_logits[{i}, {j}] must be <= 0 with ref_normalized=True (a log-softmax, such as \
                 log_softmax_rows(ref_logits)), got {}",
                py_float(row[j])
            )));
        }
    }
    Ok(())
}

/// `job` on every row of the `[rows, v]` table `logits`, in parallel across tasks of
/// consecutive rows on the current rayon pool; `out` is the `[rows, v]` output for kernels
/// that write rows (empty otherwise). `stop` is asked between rows, and an error returned
/// once it says so. The first non-finite logit (then reference entry) is an error naming it,
/// and so is a positive entry of a reference given as log-probabilities.
///
/// The caller has checked the shapes: `logits.len() == rows * v`, the per-row arguments
/// `rows` long, tokens in `0..v`, `weights` `v` long.
pub fn run_rows(
    simd: Simd,
    job: RowJob<'_>,
    logits: &[f64],
    v: usize,
    out: &mut [f64],
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<Vec<RowOut>> {
    if v == 0 {
        return Err(Error::invalid("logits must have at least one column"));
    }
    let rows = logits.len() / v;
    if rows == 0 {
        return Ok(Vec::new());
    }
    // Two tasks a thread: few pipeline fills, and a thread that finishes early takes another.
    let per_task = rows.div_ceil(2 * rayon::current_num_threads()).max(1) * v;
    let reference = job.reference().map_or(&[][..], |(table, _)| table);
    let tasks: Vec<Vec<RowOut>> = if job.writes_rows() {
        out.par_chunks_mut(per_task)
            .zip(logits.par_chunks(per_task))
            .enumerate()
            .map(|(t, (o, z))| {
                let first = t * per_task / v;
                let r = if reference.is_empty() { reference } else { &reference[first * v..first * v + z.len()] };
                run_job_on(simd, job, first, z, r, o, v, stop)
            })
            .collect::<Result<_>>()?
    } else {
        logits
            .par_chunks(per_task)
            .enumerate()
            .map(|(t, z)| {
                let first = t * per_task / v;
                let r = if reference.is_empty() { reference } else { &reference[first * v..first * v + z.len()] };
                run_job_on(simd, job, first, z, r, &mut [], v, stop)
            })
            .collect::<Result<_>>()?
    };
    let results: Vec<RowOut> = tasks.into_iter().flatten().collect();
    non_finite("logits", &results, logits, v, |row| row.sum)?;
    if let Some((ref_logits, normalized)) = job.reference() {
        non_finite("ref_logits", &results, ref_logits, v, |row| row.sum_ref)?;
        if normalized {
            not_log_probs(&results, ref_logits, v)?;
        }
    }
    overflowed(job, &results, logits, v)?;
    Ok(results)
}

/// Finite inputs whose results overflow, as a `Diverged` error naming the function and the
/// first result that is not finite (the reference twin's message): a log-softmax of a row
/// spanning more than the floats, a KL past them, a reward `w[a] − β KL` past them, a
/// gradient scaled by `A·π(a)/π_old(a)` past them.
fn overflowed(job: RowJob<'_>, rows: &[RowOut], logits: &[f64], v: usize) -> Result<()> {
    let first = |value: fn(&RowOut) -> f64| rows.iter().map(value).enumerate().find(|(_, x)| !x.is_finite());
    let message = match job {
        RowJob::LogSoftmax => first(|row| row.overflow).map(|(i, _)| {
            let z = &logits[i * v..(i + 1) * v];
            let m = z.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x));
            let j = z.iter().position(|&x| x - m == f64::NEG_INFINITY).unwrap_or(0);
            format!("log_softmax_rows overflowed: result[{i}, {j}] is -inf")
        }),
        RowJob::Kl { .. } => {
            first(|row| row.kl).map(|(i, kl)| format!("kl_rows overflowed: result[{i}] is {}", py_float(kl)))
        }
        RowJob::PpoStep { .. } => first(|row| row.kl)
            .map(|(i, kl)| format!("ppo_batch_step overflowed: kl[{i}] is {}", py_float(kl)))
            .or_else(|| {
                first(|row| row.reward)
                    .map(|(i, reward)| format!("ppo_batch_step overflowed: reward[{i}] is {}", py_float(reward)))
            }),
        RowJob::PpoGrad { .. } => first(|row| row.overflow).map(|(i, scale)| {
            format!(
                "ppo_grad_rows overflowed: row {i}'s gradient is scaled by advantages[{i}] * ratio = {}",
                py_float(scale)
            )
        }),
        RowJob::Softmax | RowJob::Sample { .. } => None,
    };
    message.map_or(Ok(()), |message| Err(Error::Diverged(message)))
}

// --------------------------------------------------------------------------- ceilings

const PIECE: usize = 1 << 16;

/// `Σ a + Σ b` over two tables, in parallel, as fast as memory delivers them: how fast this
/// machine reads the bytes a row kernel reads.
pub fn stream_sum(simd: Simd, a: &[f64], b: &[f64]) -> f64 {
    let pieces: Vec<f64> = a
        .par_chunks(PIECE)
        .chain(b.par_chunks(PIECE))
        .map(|piece| match simd {
            Simd::Portable => sum_piece::<Portable>((), piece),
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2(isa) => {
                // SAFETY: `isa` proves AVX2 and FMA were detected on this CPU (only `Simd::available` mints one).
                unsafe { sum_piece_avx2(isa, piece) }
            }
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512(isa) => {
                // SAFETY: `isa` proves AVX-512F was detected on this CPU (only `Simd::available` mints one).
                unsafe { sum_piece_avx512(isa, piece) }
            }
        })
        .collect();
    pieces.iter().fold(0.0, |acc, &x| acc + x)
}

/// `out = a + b` element by element, in parallel, written the way the row kernels write
/// their output rows (non-temporal stores where aligned): how fast this machine moves the
/// bytes a row kernel that reads two tables and writes a third moves — the memory ceiling of
/// benchmark B3. Whether every entry of `out` is finite (a NaN or an infinity in an input, or
/// a sum past the floats, makes one that is not). The caller has checked that the three have
/// one length.
pub fn stream_add(simd: Simd, a: &[f64], b: &[f64], out: &mut [f64]) -> bool {
    // Every piece is written, whatever the others find (no short cut).
    let pieces = out.par_chunks_mut(PIECE).zip(a.par_chunks(PIECE)).zip(b.par_chunks(PIECE));
    pieces
        .map(|((o, a), b)| match simd {
            Simd::Portable => add_piece::<Portable>((), a, b, o),
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2(isa) => {
                // SAFETY: `isa` proves AVX2 and FMA were detected on this CPU (only `Simd::available` mints one).
                unsafe { add_piece_avx2(isa, a, b, o) }
            }
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512(isa) => {
                // SAFETY: `isa` proves AVX-512F was detected on this CPU (only `Simd::available` mints one).
                unsafe { add_piece_avx512(isa, a, b, o) }
            }
        })
        .reduce(|| true, |x, y| x & y)
}

#[inline(always)]
fn sum_piece<V: Vector>(isa: V::Isa, xs: &[f64]) -> f64 {
    const UNROLL: usize = 4;
    let mut acc = [V::zero(isa); UNROLL];
    let mut blocks = xs.chunks_exact(UNROLL * LANES);
    for block in blocks.by_ref() {
        for (k, a) in acc.iter_mut().enumerate() {
            *a = *a + load::<V>(isa, &block[k * LANES..(k + 1) * LANES]);
        }
    }
    let tail = blocks.remainder().iter().fold(0.0, |s, &x| s + x);
    acc.iter().fold(tail, |s, &a| s + lanes_sum(a))
}

/// `out = a + b`, and whether every entry of `out` is finite.
#[inline(always)]
fn add_piece<V: Vector>(isa: V::Isa, a: &[f64], b: &[f64], out: &mut [f64]) -> bool {
    let (head, n) = aligned(out);
    let sum = |lo: usize, hi: usize| load::<V>(isa, &a[lo..hi]) + load::<V>(isa, &b[lo..hi]);
    // Σ x·0: 0 while every x is finite, NaN from the first that is not.
    let zero = V::zero(isa);
    let mut check = zero;
    for g in 0..n {
        let j = head + g * LANES;
        let x = load::<V>(isa, &a[j..j + LANES]) + load::<V>(isa, &b[j..j + LANES]);
        check = x.mul_add(zero, check);
        x.stream(&mut out[j..j + LANES]);
    }
    let mut ends_finite = true;
    for (lo, hi) in [(0, head), (head + n * LANES, out.len())] {
        let mut j = lo;
        while j < hi {
            let end = (j + LANES).min(hi);
            store(sum(j, end), &mut out[j..end]);
            // (a partial vector's padded lanes are not the output's)
            ends_finite &= out[j..end].iter().all(|x| x.is_finite());
            j = end;
        }
    }
    V::stream_fence(isa);
    ends_finite && lanes_sum(check) == 0.0
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn sum_piece_avx2(isa: Avx2Isa, xs: &[f64]) -> f64 {
    sum_piece::<Avx2>(isa, xs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn sum_piece_avx512(isa: Avx512Isa, xs: &[f64]) -> f64 {
    sum_piece::<Avx512>(isa, xs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn add_piece_avx2(isa: Avx2Isa, a: &[f64], b: &[f64], out: &mut [f64]) -> bool {
    add_piece::<Avx2>(isa, a, b, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn add_piece_avx512(isa: Avx512Isa, a: &[f64], b: &[f64], out: &mut [f64]) -> bool {
    add_piece::<Avx512>(isa, a, b, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Mt19937;

    fn never() -> bool {
        false
    }

    /// A `[rows, v]` table of logits with a spread of `scale`, from a seeded stream.
    fn table(rows: usize, v: usize, scale: f64, seed: u64) -> Vec<f64> {
        let mut rng = Mt19937::from_seed(seed.into());
        (0..rows * v).map(|_| scale * (2.0 * rng.random() - 1.0)).collect()
    }

    fn close(a: f64, b: f64, rel: f64, abs: f64) -> bool {
        (a - b).abs() <= rel * a.abs().max(b.abs()) + abs
    }

    fn rows_of(job: RowJob<'_>, simd: Simd, z: &[f64], v: usize, writes: bool) -> (Vec<RowOut>, Vec<f64>) {
        let mut out = vec![0.0; if writes { z.len() } else { 0 }];
        let rows = run_rows(simd, job, z, v, &mut out, &never).unwrap();
        (rows, out)
    }

    #[test]
    fn softmax_and_log_softmax_match_libm_rows() {
        for (v, scale) in [(1, 3.0), (7, 1.0), (1000, 5.0), (3 * CHUNK + 13, 30.0), (5000, 1e4)] {
            let z = table(3, v, scale, v as u64);
            for simd in Simd::available() {
                let (_, p) = rows_of(RowJob::Softmax, simd, &z, v, true);
                let (_, lp) = rows_of(RowJob::LogSoftmax, simd, &z, v, true);
                let (mut want_p, mut want_lp) = (vec![0.0; v], vec![0.0; v]);
                for i in 0..3 {
                    softmax_row(&z[i * v..(i + 1) * v], &mut want_p);
                    log_softmax_row(&z[i * v..(i + 1) * v], &mut want_lp);
                    for j in 0..v {
                        assert!(close(p[i * v + j], want_p[j], 1e-13, 1e-300), "{v} {i} {j}");
                        assert!(close(lp[i * v + j], want_lp[j], 1e-13, 1e-13), "{v} {i} {j}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_vector_unit_and_thread_count_gives_the_same_bits() {
        let v = 2 * CHUNK + 77;
        let z = table(5, v, 8.0, 1);
        let r = table(5, v, 8.0, 2);
        let mut lq = vec![0.0; r.len()];
        run_rows(Simd::detect(), RowJob::LogSoftmax, &r, v, &mut lq, &never).unwrap();
        let u: Vec<f64> = (0..5).map(|i| 0.2 * i as f64 + 0.1).collect();
        let w = table(1, v, 1.0, 3);
        let (tokens, p_old, adv) =
            ([3i64, 0, 700, v as i64 - 1, 5], [0.01, 0.5, 1e-4, 1e-3, 0.2], [1.0, -1.0, 0.5, 2.0, -0.1]);
        let jobs = [
            (RowJob::PpoStep { ref_logits: &r, ref_normalized: false, u: &u, weights: &w, beta: 0.1 }, true),
            (RowJob::PpoStep { ref_logits: &lq, ref_normalized: true, u: &u, weights: &w, beta: 0.1 }, true),
            (RowJob::PpoGrad { tokens: &tokens, p_old: &p_old, advantages: &adv, eps: 0.2 }, true),
            (RowJob::Softmax, true),
            (RowJob::LogSoftmax, true),
            (RowJob::Kl { ref_logits: &r, ref_normalized: false }, false),
            (RowJob::Sample { u: &u }, false),
        ];
        let bits = |(rows, out): (Vec<RowOut>, Vec<f64>)| (rows, out.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        for (job, writes) in jobs {
            let portable = bits(rows_of(job, Simd::Portable, &z, v, writes));
            for simd in Simd::available() {
                for threads in [1, 2, 3] {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                    let other = bits(pool.install(|| rows_of(job, simd, &z, v, writes)));
                    assert!(other == portable, "{job:?} on {} with {threads} threads", simd.name());
                }
            }
        }
    }

    #[test]
    fn outputs_at_any_alignment_are_written_alike() {
        let v = CHUNK + 21;
        let z = table(3, v, 5.0, 4);
        let (_, want) = rows_of(RowJob::Softmax, Simd::detect(), &z, v, true);
        let mut buffer = vec![0.0; z.len() + 8];
        for offset in 0..8 {
            let out = &mut buffer[offset..offset + z.len()];
            out.fill(f64::NAN);
            run_rows(Simd::detect(), RowJob::Softmax, &z, v, out, &never).unwrap();
            assert!(out.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "offset {offset}");
        }
    }

    #[test]
    fn kl_is_the_two_pass_sum() {
        for (v, scale) in [(5, 2.0), (CHUNK + 1, 10.0), (4 * CHUNK, 1e4)] {
            let z = table(2, v, scale, 5);
            let r = table(2, v, scale, 6);
            let (rows, _) = rows_of(RowJob::Kl { ref_logits: &r, ref_normalized: false }, Simd::detect(), &z, v, false);
            for i in 0..2 {
                let (mut p, mut lp, mut lq) = (vec![0.0; v], vec![0.0; v], vec![0.0; v]);
                softmax_row(&z[i * v..(i + 1) * v], &mut p);
                log_softmax_row(&z[i * v..(i + 1) * v], &mut lp);
                log_softmax_row(&r[i * v..(i + 1) * v], &mut lq);
                let (mut kl, mut size) = (0.0, 0.0);
                for j in 0..v {
                    kl += p[j] * (lp[j] - lq[j]);
                    size += p[j] * (lp[j].abs() + lq[j].abs());
                }
                assert!(close(rows[i].kl, kl, 0.0, 1e-13 * (1.0 + size)), "{} vs {kl}", rows[i].kl);
            }
        }
        // Given the reference's log-softmax: the same KL, to rounding.
        let (v, z, r) = (3 * CHUNK + 5, table(3, 3 * CHUNK + 5, 20.0, 7), table(3, 3 * CHUNK + 5, 20.0, 8));
        let mut lq = vec![0.0; r.len()];
        run_rows(Simd::detect(), RowJob::LogSoftmax, &r, v, &mut lq, &never).unwrap();
        let (full, _) = rows_of(RowJob::Kl { ref_logits: &r, ref_normalized: false }, Simd::detect(), &z, v, false);
        let (given, _) = rows_of(RowJob::Kl { ref_logits: &lq, ref_normalized: true }, Simd::detect(), &z, v, false);
        for (a, b) in full.iter().zip(&given) {
            assert!(close(a.kl, b.kl, 1e-13, 1e-13), "{} vs {}", a.kl, b.kl);
        }
        // The same row twice: KL 0, to rounding.
        let z = table(1, 3000, 50.0, 9);
        let (rows, _) = rows_of(RowJob::Kl { ref_logits: &z, ref_normalized: false }, Simd::detect(), &z, 3000, false);
        assert!(rows[0].kl.abs() < 1e-14);
    }

    #[test]
    fn sampled_tokens_are_the_references_even_at_ties() {
        let v = 2 * CHUNK + 5;
        let z = table(1, v, 4.0, 7);
        let mut p = vec![0.0; v];
        softmax_row(&z, &mut p);
        // Draws at, next to and between the reference's own running sums.
        let mut draws = vec![0.0, 0.5, 1.0 - f64::EPSILON];
        let mut running = 0.0;
        for &pj in &p {
            running += pj;
            for d in [running, running.next_down(), running.next_up(), running - 1e-12, running + 1e-12] {
                if (0.0..1.0).contains(&d) {
                    draws.push(d);
                }
            }
        }
        let rows = z.repeat(draws.len());
        let (out, _) = rows_of(RowJob::Sample { u: &draws }, Simd::detect(), &rows, v, false);
        for (k, &u) in draws.iter().enumerate() {
            assert_eq!(out[k].token as usize, sample_index(&p, u), "u = {u}");
        }
    }

    #[test]
    fn the_gradient_is_the_clipped_surrogates() {
        let v = CHUNK + 3;
        let z = table(3, v, 3.0, 8);
        let tokens = [0i64, 500, v as i64 - 1];
        let mut p0 = vec![0.0; v];
        softmax_row(&z[..v], &mut p0);
        // Row 0 unclipped, row 1 clipped (ratio ≫ 1 + eps with A > 0), row 2 at A < 0.
        let p_old = [p0[0] * 1.05, 1e-9, 0.5];
        let adv = [1.5, 2.0, -0.7];
        let job = RowJob::PpoGrad { tokens: &tokens, p_old: &p_old, advantages: &adv, eps: 0.2 };
        let (rows, g) = rows_of(job, Simd::detect(), &z, v, true);
        assert_eq!(rows.iter().map(|r| r.clipped).collect::<Vec<_>>(), [false, true, true]);
        let ratio = p0[0] / p_old[0];
        for j in 0..v {
            let want = adv[0] * ratio * (f64::from(u8::from(j == 0)) - p0[j]);
            assert!(close(g[j], want, 1e-13, 1e-300), "{j}");
        }
        assert!(g[v..].iter().all(|&x| x == 0.0));
    }

    #[test]
    fn non_finite_entries_are_named() {
        let mut z = table(3, 10, 1.0, 1);
        let r = z.clone();
        z[2 * 10 + 4] = f64::NAN;
        let mut out = vec![0.0; 30];
        let err = run_rows(Simd::detect(), RowJob::Softmax, &z, 10, &mut out, &never).unwrap_err();
        assert_eq!(err.to_string(), "logits[2, 4] must be finite, got nan");
        let mut bad_ref = r.clone();
        bad_ref[7] = f64::NEG_INFINITY;
        let err = run_rows(
            Simd::detect(),
            RowJob::Kl { ref_logits: &bad_ref, ref_normalized: false },
            &r,
            10,
            &mut [],
            &never,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "ref_logits[0, 7] must be finite, got -inf");
        // Every non-finite value, in logits and references, on every kernel.
        let u = [0.5; 3];
        let w = vec![0.0; 10];
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut z = table(3, 10, 1.0, 2);
            z[10 + 3] = bad;
            let message = format!("logits[1, 3] must be finite, got {}", py_float(bad));
            let lq = vec![-3.0; 30];
            let (tokens, p_old, adv) = ([0i64; 3], [0.1; 3], [1.0; 3]);
            for (job, writes) in [
                (RowJob::Softmax, true),
                (RowJob::LogSoftmax, true),
                (RowJob::Sample { u: &u }, false),
                (RowJob::PpoGrad { tokens: &tokens, p_old: &p_old, advantages: &adv, eps: 0.2 }, true),
                (RowJob::Kl { ref_logits: &r, ref_normalized: false }, false),
                (RowJob::Kl { ref_logits: &lq, ref_normalized: true }, false),
                (RowJob::PpoStep { ref_logits: &r, ref_normalized: false, u: &u, weights: &w, beta: 0.1 }, true),
                (RowJob::PpoStep { ref_logits: &lq, ref_normalized: true, u: &u, weights: &w, beta: 0.1 }, true),
            ] {
                let mut out = vec![0.0; if writes { 30 } else { 0 }];
                let err = run_rows(Simd::detect(), job, &z, 10, &mut out, &never).unwrap_err();
                assert_eq!(err.to_string(), message, "{job:?}");
            }
            let mut bad_ref = vec![-3.0; 30];
            bad_ref[29] = bad;
            let z = table(3, 10, 1.0, 3);
            for normalized in [false, true] {
                let job =
                    RowJob::PpoStep { ref_logits: &bad_ref, ref_normalized: normalized, u: &u, weights: &w, beta: 0.1 };
                let mut out = vec![0.0; 30];
                let err = run_rows(Simd::detect(), job, &z, 10, &mut out, &never).unwrap_err();
                assert_eq!(err.to_string(), format!("ref_logits[2, 9] must be finite, got {}", py_float(bad)));
            }
        }
        // A reference given as log-probabilities has no positive entry.
        let mut lq = vec![-1.0; 30];
        lq[12] = 0.25;
        let err =
            run_rows(Simd::detect(), RowJob::Kl { ref_logits: &lq, ref_normalized: true }, &r, 10, &mut [], &never)
                .unwrap_err();
        assert!(err.to_string().starts_with("ref_logits[1, 2] must be <= 0 with ref_normalized=True"), "{err}");
        let stop = || true;
        assert_eq!(run_rows(Simd::detect(), RowJob::Softmax, &r, 10, &mut out, &stop), Err(Error::Cancelled));
    }

    #[test]
    fn the_stream_sum_adds_both_tables() {
        let a: Vec<f64> = (0..100_003).map(|i| i as f64).collect();
        let b = vec![0.5; 17];
        for simd in Simd::available() {
            assert_eq!(stream_sum(simd, &a, &b), 100_002.0 * 100_003.0 / 2.0 + 8.5);
        }
    }

    fn diverged(result: Result<Vec<RowOut>>) -> String {
        match result {
            Err(Error::Diverged(message)) => message,
            other => panic!("expected an overflow, got {other:?}"),
        }
    }

    #[test]
    fn rows_spanning_more_than_the_floats_give_finite_results_or_say_what_overflowed() {
        let v = 3;
        let wide = [0.5, 0.5, 0.0, 1.7e308, -1.7e308, 0.0];
        let flat = [0.0; 6];
        for simd in Simd::available() {
            let (_, p) = rows_of(RowJob::Softmax, simd, &wide, v, true);
            assert_eq!(&p[3..], &[1.0, 0.0, 0.0]);
            let mut out = vec![0.0; 6];
            let message = diverged(run_rows(simd, RowJob::LogSoftmax, &wide, v, &mut out, &never));
            assert_eq!(message, "log_softmax_rows overflowed: result[1, 1] is -inf");
            // The policy spans the floats: terms with π = 0 count 0, as in the reference.
            let (rows, _) = rows_of(RowJob::Kl { ref_logits: &flat, ref_normalized: false }, simd, &wide, v, false);
            assert_eq!(rows[1].kl, kl_exactly(&wide[3..], &flat[3..], false));
            assert!(rows[1].kl.is_finite() && rows[1].kl > 0.0);
            // The reference does, where the policy has mass: the KL is past the floats.
            let job = RowJob::Kl { ref_logits: &wide, ref_normalized: false };
            let message = diverged(run_rows(simd, job, &flat, v, &mut [], &never));
            assert_eq!(message, "kl_rows overflowed: result[1] is inf");
            let (u, w) = ([0.5, 0.5], [0.0; 3]);
            let job = RowJob::PpoStep { ref_logits: &wide, ref_normalized: false, u: &u, weights: &w, beta: 0.1 };
            let message = diverged(run_rows(simd, job, &flat, v, &mut out, &never));
            assert_eq!(message, "ppo_batch_step overflowed: kl[1] is inf");
            let w = [-1.7e308; 3];
            let job = RowJob::PpoStep { ref_logits: &flat, ref_normalized: false, u: &u, weights: &w, beta: 1.7e308 };
            let message = diverged(run_rows(simd, job, &wide, v, &mut out, &never));
            assert_eq!(message, "ppo_batch_step overflowed: reward[1] is -inf");
        }
    }

    #[test]
    fn a_gradient_scaled_past_the_floats_is_an_overflow() {
        let z = [0.0, 0.0, 0.0, 0.0];
        let (tokens, p_old, advantages) = ([0, 1], [0.5, 5e-324], [1.0, -1.0]);
        for simd in Simd::available() {
            let job = RowJob::PpoGrad { tokens: &tokens, p_old: &p_old, advantages: &advantages, eps: 0.2 };
            let mut out = vec![0.0; 4];
            let message = diverged(run_rows(simd, job, &z, 2, &mut out, &never));
            assert_eq!(message, "ppo_grad_rows overflowed: row 1's gradient is scaled by advantages[1] * ratio = -inf");
        }
    }

    #[test]
    fn the_stream_add_says_whether_its_sums_are_finite() {
        let n = PIECE + 5;
        let a = vec![1e308; n];
        for simd in Simd::available() {
            let mut out = vec![0.0; n];
            assert!(stream_add(simd, &a, &vec![-1e308; n], &mut out));
            assert!(!stream_add(simd, &a, &a, &mut out));
            let mut b = vec![0.0; n];
            b[n - 1] = f64::NAN;
            assert!(!stream_add(simd, &a, &b, &mut out));
        }
    }

    #[test]
    fn the_stream_add_adds_them_entry_by_entry() {
        let n = 3 * PIECE + 13;
        let a: Vec<f64> = (0..n).map(|i| i as f64).collect();
        let b: Vec<f64> = (0..n).map(|i| 0.5 * i as f64).collect();
        let mut buffer = vec![0.0; n + 8];
        for simd in Simd::available() {
            for offset in [0, 3] {
                let out = &mut buffer[offset..offset + n];
                assert!(stream_add(simd, &a, &b, out));
                assert!(out.iter().enumerate().all(|(i, &x)| x == 1.5 * i as f64), "{} {offset}", simd.name());
            }
        }
    }
}
