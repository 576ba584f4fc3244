//! Softmax, log-softmax, KL(π‖π_ref), sampling and the PPO surrogate gradient over rows of a
//! large vocabulary (`V` up to 65,536 and past it), vectorised *along the row*, one row per
//! task on the rayon pool.
//!
//! [`softmax`](super::softmax) and friends walk a row several times with libm's `exp`; here a
//! row is read from memory once. It is cut into chunks of [`CHUNK`] logits; each chunk's
//! maximum is taken while the chunk sits in L1, the running maximum `M` moves up to it (the
//! sums so far rescaled by `exp(M_old − M)`, one scalar `exp` per chunk), and then every logit
//! of the chunk is exponentiated against `M` ([`fastmath`](super::fastmath)'s vector `exp`)
//! and summed. With the reference row alongside, the same pass gathers
//! `S = Σ e^(z−M)`, `R = Σ e^(r−M_r)` and `T = Σ e^(z−M)·((z−M) − (r−M_r))`, and
//! `KL(π‖π_ref) = T/S − ln S + ln R` (the log-ratio is taken between shifted logits, so logits
//! of ±1e4 lose nothing to cancellation). Kernels that need `π` itself keep the chunk's
//! `e^(z−M_c)` in their output row and scale it by `e^(M_c − M)/S` in a second sweep over
//! that row, which is still in cache.
//!
//! **Against the reference twin** (`reference/kernels/rows.py`, libm's `exp`, sums left to
//! right): every lane runs the same IEEE operations in the same order on every vector unit,
//! so results do not depend on the CPU; they differ from the reference by `exp`'s two ulps
//! and the order of the sums (eight lane sums per chunk), a few ulps relative for `π` and
//! `log π` (tested to 1e-12), and `1e-12 × (1 + Σ π|log π − log π_ref|)` for the KL.
//! **Sampled tokens are the reference's, always**: the fast running sums are within
//! [`sample_margin`] of the reference's, so where `u` is farther than that from both sums
//! around the token picked, the reference picks that token too; closer (a chance of about
//! `1e-10` a row), the row is sampled again exactly as the reference does it, with libm.
//! PPO's clip decision is made safe the same way.
//!
//! Inputs are not checked beforehand (a pass of its own would double the memory traffic):
//! each pass also sums `x − x` over its logits, which is NaN exactly when one is not finite,
//! and the batch functions then name the first such entry.

use rayon::prelude::*;

use crate::error::{py_float, Error, Result};
use crate::kernels::fastmath::exp_nonpositive_rows;
use crate::kernels::sampling::sample_index;
#[cfg(target_arch = "x86_64")]
use crate::kernels::simd::{Avx2, Avx2Isa, Avx512, Avx512Isa};
use crate::kernels::simd::{Portable, Simd, Vector, LANES};
use crate::kernels::softmax::softmax_row;

/// Logits per chunk: 8 KiB of a row, with its reference and its output, stays in L1.
pub const CHUNK: usize = 1024;
/// Vectors exponentiated side by side, so their polynomial chains overlap.
const UNROLL: usize = 4;
/// Padding for a row's last, partial vector: finite, and its `exp` is 0.
const PAD: f64 = f64::MIN;

// ---------------------------------------------------------------------------- one pass

/// What one pass over a row (and its reference row) gathers.
#[derive(Clone, Copy, Debug, Default)]
struct Scan {
    /// The row's maximum and `Σ e^(z−m)`.
    m: f64,
    s: f64,
    /// The same for the reference row (zero without one).
    m_ref: f64,
    s_ref: f64,
    /// `Σ e^(z−m) ((z−m) − (r−m_ref))`.
    t: f64,
    /// NaN exactly when a logit, or a reference logit, is not finite.
    bad: f64,
    bad_ref: f64,
}

impl Scan {
    /// `KL(softmax z ‖ softmax r) = T/S − ln S + ln R`.
    fn kl(&self) -> f64 {
        self.t / self.s - self.s.ln() + self.s_ref.ln()
    }
}

/// Per-chunk records a kernel that needs `π` keeps: the running maximum the chunk's
/// `e^(z−M_c)` were taken against and their sum.
struct Chunks<'a> {
    max: &'a mut [f64],
    sum: &'a mut [f64],
}

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

#[inline(always)]
fn store<V: Vector>(v: V, out: &mut [f64]) {
    let values = v.to_array();
    out.copy_from_slice(&values[..out.len()]);
}

/// Sum of a vector's lanes, first to last.
#[inline(always)]
fn lanes_sum<V: Vector>(v: V) -> f64 {
    v.to_array().iter().fold(0.0, |acc, &x| acc + x)
}

/// Largest of a slice: vector maxima of its lanes, then across them.
#[inline(always)]
fn chunk_max<V: Vector>(isa: V::Isa, xs: &[f64]) -> f64 {
    let mut best = V::splat(isa, f64::NEG_INFINITY);
    for piece in xs.chunks(LANES) {
        best = best.max(load::<V>(isa, piece));
    }
    best.to_array().iter().fold(f64::NEG_INFINITY, |acc, &x| if x > acc { x } else { acc })
}

/// `x − x`: 0 where `x` is finite, NaN where it is not (∞ − ∞ and NaN − NaN are NaN).
#[inline(always)]
#[allow(clippy::eq_op)] // the point is what the subtraction does to non-finite values
fn poison<V: Vector>(x: V) -> V {
    x - x
}

/// Vector accumulators of one chunk.
#[derive(Clone, Copy)]
struct Acc<V> {
    s: V,
    s_ref: V,
    t: V,
    bad: V,
    bad_ref: V,
}

/// `N` vectors of a chunk (`z.len() <= N * LANES`, the last one padded): their `e^(z−M)`
/// added to the accumulators and, with `STORE`, written to `e`.
#[inline(always)]
fn block<V: Vector, const N: usize, const REF: bool, const STORE: bool>(
    isa: V::Isa,
    z: &[f64],
    r: &[f64],
    e: &mut [f64],
    m: V,
    m_ref: V,
    acc: &mut Acc<V>,
) {
    let mut x = [m; N];
    let mut y = [m_ref; N];
    for v in 0..N {
        let lo = (v * LANES).min(z.len());
        let hi = ((v + 1) * LANES).min(z.len());
        let zv = load::<V>(isa, &z[lo..hi]);
        acc.bad = acc.bad + poison(zv);
        x[v] = zv - m;
        if REF {
            let rv = load::<V>(isa, &r[lo..hi]);
            acc.bad_ref = acc.bad_ref + poison(rv);
            y[v] = rv - m_ref;
        }
    }
    let ez = exp_nonpositive_rows(&x);
    let er = if REF { exp_nonpositive_rows(&y) } else { ez };
    for v in 0..N {
        acc.s = acc.s + ez[v];
        if REF {
            acc.s_ref = acc.s_ref + er[v];
            acc.t = acc.t + ez[v] * (x[v] - y[v]);
        }
        if STORE {
            let lo = (v * LANES).min(z.len());
            let hi = ((v + 1) * LANES).min(z.len());
            store(ez[v], &mut e[lo..hi]);
        }
    }
}

/// One pass over `z` (and `r` with `REF`): the [`Scan`], and with `STORE` every `e^(z−M_c)`
/// in `e` and each chunk's `M_c` and sum in `chunks`.
#[inline(always)]
fn scan<V: Vector, const REF: bool, const STORE: bool>(
    isa: V::Isa,
    z: &[f64],
    r: &[f64],
    e: &mut [f64],
    chunks: Chunks<'_>,
) -> Scan {
    let mut out = Scan { m: f64::NEG_INFINITY, m_ref: f64::NEG_INFINITY, ..Scan::default() };
    let zero = V::zero(isa);
    let mut total = Acc { s: zero, s_ref: zero, t: zero, bad: zero, bad_ref: zero };
    for (c, start) in (0..z.len()).step_by(CHUNK).enumerate() {
        let end = (start + CHUNK).min(z.len());
        let zc = &z[start..end];
        let rc = if REF { &r[start..end] } else { &r[..0] };
        // The running maxima move up to this chunk's; the sums so far follow them.
        let m = out.m.max(chunk_max::<V>(isa, zc));
        let m_ref = if REF { out.m_ref.max(chunk_max::<V>(isa, rc)) } else { 0.0 };
        if c > 0 {
            let f = if m > out.m { (out.m - m).exp() } else { 1.0 };
            if REF {
                let f_ref = if m_ref > out.m_ref { (out.m_ref - m_ref).exp() } else { 1.0 };
                // Each log-ratio (z−M) − (r−M_ref) moves by −(ΔM − ΔM_ref).
                out.t = f * (out.t - ((m - out.m) - (m_ref - out.m_ref)) * out.s);
                out.s_ref *= f_ref;
            }
            out.s *= f;
        }
        out.m = m;
        out.m_ref = m_ref;
        let mut acc = Acc { s: zero, s_ref: zero, t: zero, bad: total.bad, bad_ref: total.bad_ref };
        let (mv, mv_ref) = (V::splat(isa, m), V::splat(isa, m_ref));
        let ec: &mut [f64] = if STORE { &mut e[start..end] } else { &mut [] };
        let step = UNROLL * LANES;
        let mut i = 0;
        while i + step <= zc.len() {
            let rb = if REF { &rc[i..i + step] } else { rc };
            let eb: &mut [f64] = if STORE { &mut ec[i..i + step] } else { &mut [] };
            block::<V, UNROLL, REF, STORE>(isa, &zc[i..i + step], rb, eb, mv, mv_ref, &mut acc);
            i += step;
        }
        while i < zc.len() {
            let hi = (i + LANES).min(zc.len());
            let rb = if REF { &rc[i..hi] } else { rc };
            let eb: &mut [f64] = if STORE { &mut ec[i..hi] } else { &mut [] };
            block::<V, 1, REF, STORE>(isa, &zc[i..hi], rb, eb, mv, mv_ref, &mut acc);
            i = hi;
        }
        let chunk_sum = lanes_sum(acc.s);
        out.s += chunk_sum;
        if REF {
            out.s_ref += lanes_sum(acc.s_ref);
            out.t += lanes_sum(acc.t);
        }
        if STORE {
            chunks.max[c] = m;
            chunks.sum[c] = chunk_sum;
        }
        total.bad = acc.bad;
        total.bad_ref = acc.bad_ref;
    }
    out.bad = lanes_sum(total.bad);
    out.bad_ref = lanes_sum(total.bad_ref);
    out
}

/// `e[j] *= scale[c]` for chunk `c` of `e`, and `out[j] = shift − x[j]`-style sweeps: `e` is
/// rescaled into `π` here.
#[inline(always)]
fn scale_chunks<V: Vector>(isa: V::Isa, e: &mut [f64], scale: impl Fn(usize) -> f64) {
    for (c, chunk) in e.chunks_mut(CHUNK).enumerate() {
        let f = V::splat(isa, scale(c));
        for piece in chunk.chunks_mut(LANES) {
            let v = load::<V>(isa, piece) * f;
            store(v, piece);
        }
    }
}

/// Chunks of a row of `v` logits.
pub fn n_chunks(v: usize) -> usize {
    v.div_ceil(CHUNK)
}

/// How far the fast running sums of `π` may be from the reference's (libm's `exp`, summed
/// left to right) for a row of `v` logits: each sum of `v` non-negative terms, in any order,
/// is within `(v − 1)·2^−53` of the exact one relative to the total (which is about 1), each
/// `exp` within two ulps, the rescalings and divisions a few more. Twice the sum of both
/// sides' bounds.
pub fn sample_margin(v: usize) -> f64 {
    8.0 * (v as f64 + 64.0) * (f64::EPSILON / 2.0)
}

/// The token inverse-CDF sampling picks with draw `u`, from the stored `e^(z−M_c)`: `None`
/// when `u` lies within [`sample_margin`] of a running sum next to it, where only the
/// reference's own arithmetic can say.
fn locate(e: &[f64], chunk_max: &[f64], chunk_sum: &[f64], m: f64, s: f64, u: f64) -> Option<usize> {
    let v = e.len();
    let margin = sample_margin(v);
    let mut below = 0.0;
    for (c, (&mc, &sc)) in chunk_max.iter().zip(chunk_sum).enumerate() {
        let f = (mc - m).exp() / s;
        let next = below + sc * f;
        if next > u {
            let start = c * CHUNK;
            let mut running = below;
            for (j, &ej) in e[start..(start + CHUNK).min(v)].iter().enumerate() {
                let high = running + ej * f;
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
    Kl {
        ref_logits: &'a [f64],
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
    /// The fused B3 step: reference logits, draws, the reward model's weight per token, β.
    PpoStep {
        ref_logits: &'a [f64],
        u: &'a [f64],
        weights: &'a [f64],
        beta: f64,
    },
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
    bad: f64,
    bad_ref: f64,
}

/// Scratch a thread reuses from row to row: the per-chunk records, and a row for kernels
/// whose output is not a row.
#[derive(Debug, Default)]
struct Scratch {
    chunk_max: Vec<f64>,
    chunk_sum: Vec<f64>,
    row: Vec<f64>,
}

impl Scratch {
    fn new(v: usize, needs_row: bool) -> Self {
        let c = n_chunks(v);
        Scratch { chunk_max: vec![0.0; c], chunk_sum: vec![0.0; c], row: vec![0.0; if needs_row { v } else { 0 }] }
    }
}

/// Row `i` of `job` on vector unit `V`; `out` is the row's output (empty for kernels with
/// scalar results only).
#[inline(always)]
fn run_row<V: Vector>(
    isa: V::Isa,
    job: RowJob<'_>,
    i: usize,
    z: &[f64],
    out: &mut [f64],
    scratch: &mut Scratch,
) -> RowOut {
    let v = z.len();
    let no_chunks = || Chunks { max: &mut [], sum: &mut [] };
    match job {
        RowJob::Softmax => {
            let chunks = Chunks { max: &mut scratch.chunk_max, sum: &mut scratch.chunk_sum };
            let sc = scan::<V, false, true>(isa, z, &[], out, chunks);
            let cm = &scratch.chunk_max;
            scale_chunks::<V>(isa, out, |c| (cm[c] - sc.m).exp() / sc.s);
            RowOut { bad: sc.bad, ..RowOut::default() }
        }
        RowJob::LogSoftmax => {
            let sc = scan::<V, false, false>(isa, z, &[], &mut [], no_chunks());
            let (m, ln_s) = (V::splat(isa, sc.m), V::splat(isa, sc.s.ln()));
            for (zs, os) in z.chunks(LANES).zip(out.chunks_mut(LANES)) {
                store((load::<V>(isa, zs) - m) - ln_s, os);
            }
            RowOut { bad: sc.bad, ..RowOut::default() }
        }
        RowJob::Kl { ref_logits } => {
            let r = &ref_logits[i * v..(i + 1) * v];
            let sc = scan::<V, true, false>(isa, z, r, &mut [], no_chunks());
            RowOut { kl: sc.kl(), bad: sc.bad, bad_ref: sc.bad_ref, ..RowOut::default() }
        }
        RowJob::Sample { u } => {
            let chunks = Chunks { max: &mut scratch.chunk_max, sum: &mut scratch.chunk_sum };
            let sc = scan::<V, false, true>(isa, z, &[], &mut scratch.row, chunks);
            let u = u[i];
            let token = locate(&scratch.row, &scratch.chunk_max, &scratch.chunk_sum, sc.m, sc.s, u)
                .unwrap_or_else(|| sample_exactly(z, u));
            RowOut { token: token as i64, bad: sc.bad, ..RowOut::default() }
        }
        RowJob::PpoGrad { tokens, p_old, advantages, eps } => {
            let chunks = Chunks { max: &mut scratch.chunk_max, sum: &mut scratch.chunk_sum };
            let sc = scan::<V, false, true>(isa, z, &[], out, chunks);
            let (a, advantage, p_old) = (tokens[i] as usize, advantages[i], p_old[i]);
            let cm = &scratch.chunk_max;
            let p_a = out[a] * ((cm[a / CHUNK] - sc.m).exp() / sc.s);
            let mut ratio = p_a / p_old;
            let edge = if advantage >= 0.0 { 1.0 + eps } else { 1.0 - eps };
            if (ratio - edge).abs() <= CLIP_MARGIN * edge {
                ratio = probability_exactly(z, a) / p_old;
            }
            if is_clipped(advantage, ratio, eps) {
                out.fill(0.0);
                return RowOut { clipped: true, bad: sc.bad, ..RowOut::default() };
            }
            let scale = advantage * ratio;
            // grad_j = scale (1[j = a] − π_j) = −(scale π_j) off the token.
            scale_chunks::<V>(isa, out, |c| -scale * ((cm[c] - sc.m).exp() / sc.s));
            out[a] = scale * (1.0 - p_a);
            RowOut { bad: sc.bad, ..RowOut::default() }
        }
        RowJob::PpoStep { ref_logits, u, weights, beta } => {
            let r = &ref_logits[i * v..(i + 1) * v];
            let chunks = Chunks { max: &mut scratch.chunk_max, sum: &mut scratch.chunk_sum };
            let sc = scan::<V, true, true>(isa, z, r, out, chunks);
            let cm = &scratch.chunk_max;
            let u = u[i];
            let a = locate(out, cm, &scratch.chunk_sum, sc.m, sc.s, u).unwrap_or_else(|| sample_exactly(z, u));
            let kl = sc.kl();
            let reward = weights[a] - beta * kl;
            let p_a = out[a] * ((cm[a / CHUNK] - sc.m).exp() / sc.s);
            // The first PPO epoch: the policy is the one that sampled, the ratio is 1 and the
            // clip cannot act, so the gradient is A (1[j = a] − π_j) with A the reward.
            scale_chunks::<V>(isa, out, |c| -reward * ((cm[c] - sc.m).exp() / sc.s));
            out[a] = reward * (1.0 - p_a);
            RowOut { token: a as i64, kl, reward, p_token: p_a, bad: sc.bad, bad_ref: sc.bad_ref, ..RowOut::default() }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn run_row_avx2(isa: Avx2Isa, job: RowJob<'_>, i: usize, z: &[f64], out: &mut [f64], scratch: &mut Scratch) -> RowOut {
    run_row::<Avx2>(isa, job, i, z, out, scratch)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn run_row_avx512(
    isa: Avx512Isa,
    job: RowJob<'_>,
    i: usize,
    z: &[f64],
    out: &mut [f64],
    scratch: &mut Scratch,
) -> RowOut {
    run_row::<Avx512>(isa, job, i, z, out, scratch)
}

/// [`run_row`] on `simd`'s vector unit.
fn run_row_on(simd: Simd, job: RowJob<'_>, i: usize, z: &[f64], out: &mut [f64], scratch: &mut Scratch) -> RowOut {
    match simd {
        Simd::Portable => run_row::<Portable>((), job, i, z, out, scratch),
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2(isa) => {
            // SAFETY: `isa` is an `Avx2Isa`, which only `Simd::available` mints, after
            // detecting AVX2 on this CPU: the AVX2 code of `run_row_avx2` can run here.
            unsafe { run_row_avx2(isa, job, i, z, out, scratch) }
        }
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512(isa) => {
            // SAFETY: `isa` is an `Avx512Isa`, which only `Simd::available` mints, after
            // detecting AVX-512F on this CPU: the AVX-512F code of `run_row_avx512` can run here.
            unsafe { run_row_avx512(isa, job, i, z, out, scratch) }
        }
    }
}

// --------------------------------------------------------------------------- batches

/// The first entry of `name` that is not finite, as an error naming `name[row, column]`.
fn non_finite(name: &str, rows: &[RowOut], table: &[f64], v: usize, flag: impl Fn(&RowOut) -> f64) -> Result<()> {
    if let Some(i) = rows.iter().position(|row| flag(row).is_nan()) {
        let row = &table[i * v..(i + 1) * v];
        if let Some(j) = row.iter().position(|x| !x.is_finite()) {
            return Err(Error::invalid(format!("{name}[{i}, {j}] must be finite, got {}", py_float(row[j]))));
        }
    }
    Ok(())
}

/// `job` on every row of the `[rows, v]` table `logits`, in parallel across rows on the
/// current rayon pool; `out` is the `[rows, v]` output for kernels that write rows (empty
/// otherwise). `stop` is asked between rows, and an error returned once it says so. The
/// first non-finite logit (then reference logit) is an error naming it.
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
    let writes_rows = !matches!(job, RowJob::Kl { .. } | RowJob::Sample { .. });
    let results: Vec<RowOut> = if writes_rows {
        out.par_chunks_mut(v)
            .zip(logits.par_chunks(v))
            .enumerate()
            .map_init(
                || Scratch::new(v, false),
                |scratch, (i, (row_out, z))| {
                    if stop() {
                        return Err(Error::Cancelled);
                    }
                    Ok(run_row_on(simd, job, i, z, row_out, scratch))
                },
            )
            .collect::<Result<_>>()?
    } else {
        logits
            .par_chunks(v)
            .enumerate()
            .map_init(
                || Scratch::new(v, matches!(job, RowJob::Sample { .. })),
                |scratch, (i, z)| {
                    if stop() {
                        return Err(Error::Cancelled);
                    }
                    Ok(run_row_on(simd, job, i, z, &mut [], scratch))
                },
            )
            .collect::<Result<_>>()?
    };
    non_finite("logits", &results, logits, v, |row| row.bad)?;
    if let RowJob::Kl { ref_logits } | RowJob::PpoStep { ref_logits, .. } = job {
        non_finite("ref_logits", &results, ref_logits, v, |row| row.bad_ref)?;
    }
    Ok(results)
}

/// `Σ a + Σ b` over two tables, in parallel, as fast as memory delivers them: the memory
/// ceiling the row kernels are measured against (benchmark B3 reads the same bytes).
pub fn stream_sum(simd: Simd, a: &[f64], b: &[f64]) -> f64 {
    const PIECE: usize = 1 << 16;
    let pieces: Vec<f64> = a
        .par_chunks(PIECE)
        .chain(b.par_chunks(PIECE))
        .map(|piece| match simd {
            Simd::Portable => sum_piece::<Portable>((), piece),
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2(isa) => {
                // SAFETY: `isa` proves AVX2 was detected on this CPU (only `Simd::available` mints one).
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

#[inline(always)]
fn sum_piece<V: Vector>(isa: V::Isa, xs: &[f64]) -> f64 {
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sum_piece_avx2(isa: Avx2Isa, xs: &[f64]) -> f64 {
    sum_piece::<Avx2>(isa, xs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn sum_piece_avx512(isa: Avx512Isa, xs: &[f64]) -> f64 {
    sum_piece::<Avx512>(isa, xs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::softmax::log_softmax_row;
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
    fn every_vector_unit_gives_the_same_bits() {
        let v = 2 * CHUNK + 77;
        let z = table(4, v, 8.0, 1);
        let r = table(4, v, 8.0, 2);
        let u: Vec<f64> = (0..4).map(|i| 0.2 * i as f64 + 0.1).collect();
        let w = table(1, v, 1.0, 3);
        let job = RowJob::PpoStep { ref_logits: &r, u: &u, weights: &w, beta: 0.1 };
        let portable = rows_of(job, Simd::Portable, &z, v, true);
        for simd in Simd::available() {
            let other = rows_of(job, simd, &z, v, true);
            assert_eq!(other.0, portable.0, "{}", simd.name());
            assert_eq!(
                other.1.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                portable.1.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn kl_is_the_two_pass_sum() {
        for (v, scale) in [(5, 2.0), (CHUNK + 1, 10.0), (4 * CHUNK, 1e4)] {
            let z = table(2, v, scale, 5);
            let r = table(2, v, scale, 6);
            let (rows, _) = rows_of(RowJob::Kl { ref_logits: &r }, Simd::detect(), &z, v, false);
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
        // The same row twice: KL 0, to rounding.
        let z = table(1, 3000, 50.0, 9);
        let (rows, _) = rows_of(RowJob::Kl { ref_logits: &z }, Simd::detect(), &z, 3000, false);
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
        let err = run_rows(Simd::detect(), RowJob::Kl { ref_logits: &bad_ref }, &r, 10, &mut [], &never).unwrap_err();
        assert_eq!(err.to_string(), "ref_logits[0, 7] must be finite, got -inf");
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
}
