//! One policy row of a large vocabulary, vectorised along the row on one thread: the passes
//! a world's PPO step and its exact statistics make over a row (`methods::ppo_rows`,
//! `engines::world_ppo`), each reading the row once with [`exp_nonpositive_fused`] (no libm
//! call per logit).
//!
//! - [`exp_row`]: `e_j = e^(z_j − c)` for a shift `c >= max z`, `S = Σ e_j`, the sums of
//!   blocks of [`BLOCK`] logits (sampling skips whole blocks by them) and, given the
//!   reference's logits `r` and their maximum, `T = Σ e_j ((z_j − c) − (r_j − max r))`: with
//!   `c = max z`, `KL(π‖π_ref) = T/S − ln S + ln S_ref` ([`log_normaliser_on`] gives
//!   `ln S_ref` once), one `exp` per logit and no `ln`;
//! - [`update_row`]: PPO's update `z_j += step (count_j − L π_j)` with `π_j = e_j / S`, and
//!   with it the next epoch's `e^(z_j − c')` and its sum: one pass per epoch instead of an
//!   update and a softmax. The shift `c'` is the old maximum plus the most a logit can move,
//!   `|step| L`; the pass returns the new maximum, and the caller starts over with the true
//!   maximum when the bound did not hold (or lay more than [`SHIFT_SLACK`] above it);
//! - [`locate`]: inverse-CDF sampling from the block sums, `None` where the draw lies within
//!   a margin of a running sum next to it (the caller then samples with libm, as the reference);
//! - [`stats_row`]: a world's exact statistics of one row (`Σ π w`, the gold, the KL), the
//!   count-once gold's `1 − (1 − π)^L` as `π Σ_{k<L} (1 − π)^k`, which does not cancel.
//!
//! Every lane runs the same IEEE operations (fused multiply-adds included) in the same order
//! on every vector unit, and sums are taken in a fixed order, so results do not depend on the
//! CPU or the thread count. Against libm (the reference twin) each `e_j` is within two ulps
//! (0 below `e^−708`), and the sums differ by their order: a few ulps relative for `π`, see
//! [`sample_margin`](super::rows::sample_margin) for the running sums.

use crate::kernels::fastmath::exp_nonpositive_fused;
#[cfg(target_arch = "x86_64")]
use crate::kernels::simd::{Avx2, Avx2Isa, Avx512, Avx512Isa};
use crate::kernels::simd::{Portable, Simd, Vector, LANES};

/// Logits per block of [`exp_row`]'s sums: a draw scans at most `V / BLOCK` sums and one block.
pub const BLOCK: usize = 64;
/// Padding of a row's last, partial vector: finite, below any logit, and its `exp` is 0.
const PAD: f64 = f64::MIN;
/// How far above a row's maximum [`update_row`]'s shift may lie: `S >= e^−64`, far from 0.
pub(crate) const SHIFT_SLACK: f64 = 64.0;

/// Blocks of a row of `v` logits.
pub fn n_blocks(v: usize) -> usize {
    v.div_ceil(BLOCK)
}

/// `xs` (at most one vector) as a vector, the missing lanes `pad`.
#[inline(always)]
fn load<V: Vector>(isa: V::Isa, xs: &[f64], pad: f64) -> V {
    match <[f64; LANES]>::try_from(xs) {
        Ok(full) => V::from_array(isa, full),
        Err(_) => {
            let mut padded = [pad; LANES];
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
        Err(_) => out.copy_from_slice(&v.to_array()[..out.len()]),
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

/// The vector spans of a row of `v`: `(start, end)`, whole vectors then the partial one.
#[inline(always)]
fn spans(lo: usize, hi: usize) -> impl Iterator<Item = (usize, usize)> {
    (lo..hi).step_by(LANES).map(move |j| (j, (j + LANES).min(hi)))
}

/// The largest of `z` (NaNs skipped).
#[inline(always)]
pub(crate) fn row_max<V: Vector>(isa: V::Isa, z: &[f64]) -> f64 {
    let mut m = V::splat(isa, f64::NEG_INFINITY);
    for (j, end) in spans(0, z.len()) {
        m = load::<V>(isa, &z[j..end], PAD).max_or_rhs(m);
    }
    lanes_max(m)
}

/// `e_j = e^(z_j − shift)` into `e` (`shift >= max z`), each block's sum into `block_sums`
/// ([`n_blocks`] of them); returns `(S, T)`: `S` the block sums added in order, and with `REF`
/// `T = Σ e_j ((z_j − shift) − (r_j − ref_shift))` (else 0): given the reference's logits
/// shifted by their maximum, `T` is exactly 0 where the row is the reference.
#[inline(always)]
pub(crate) fn exp_row<V: Vector, const REF: bool>(
    isa: V::Isa,
    z: &[f64],
    shift: f64,
    r: &[f64],
    ref_shift: f64,
    e: &mut [f64],
    block_sums: &mut [f64],
) -> (f64, f64) {
    let v = z.len();
    let (c, c_ref) = (V::splat(isa, shift), V::splat(isa, ref_shift));
    let (mut total, mut t) = (0.0, V::zero(isa));
    for (b, block_sum) in block_sums.iter_mut().enumerate() {
        let mut s = V::zero(isa);
        for (j, end) in spans(b * BLOCK, ((b + 1) * BLOCK).min(v)) {
            let x = load::<V>(isa, &z[j..end], PAD) - c;
            let ez = exp_nonpositive_fused(x);
            s = s + ez;
            if REF {
                // Padded lanes: e = 0 times a finite log-ratio.
                t = ez.mul_add(x - (load::<V>(isa, &r[j..end], 0.0) - c_ref), t);
            }
            store(ez, &mut e[j..end]);
        }
        *block_sum = lanes_sum(s);
        total += *block_sum;
    }
    (total, lanes_sum(t))
}

/// PPO's update of a row, `z_j += step (count_j − L π_j)` with `π_j = e_j inv_s`: from `src`
/// (`None`: `dst` itself) into `dst`. With `EXP`, also `e_j = e^(z_j − shift)` of the updated
/// row; returns `(Σ e_j, max z)` of the updated row then (else `(0, 0)`). The caller checks
/// `max z <= shift` (the `exp` is of non-positive arguments only) and starts over if not.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn update_row<V: Vector, const EXP: bool>(
    isa: V::Isa,
    src: Option<&[f64]>,
    dst: &mut [f64],
    e: &mut [f64],
    counts: &[f64],
    step: f64,
    length: f64,
    inv_s: f64,
    shift: f64,
) -> (f64, f64) {
    let (step, minus_length, inv_s, c) =
        (V::splat(isa, step), V::splat(isa, -length), V::splat(isa, inv_s), V::splat(isa, shift));
    let (mut s, mut top) = (V::zero(isa), V::splat(isa, f64::NEG_INFINITY));
    for (j, end) in spans(0, dst.len()) {
        let z = load::<V>(isa, src.map_or(&dst[j..end], |src| &src[j..end]), PAD);
        let p = load::<V>(isa, &e[j..end], 0.0) * inv_s;
        let moved = step.mul_add(minus_length.mul_add(p, load::<V>(isa, &counts[j..end], 0.0)), z);
        store(moved, &mut dst[j..end]);
        if EXP {
            // Padded lanes stay at PAD: e = 0, below any maximum.
            let ez = exp_nonpositive_fused(moved - c);
            s = s + ez;
            top = moved.max_or_rhs(top);
            store(ez, &mut e[j..end]);
        }
    }
    if EXP {
        (lanes_sum(s), lanes_max(top))
    } else {
        (0.0, 0.0)
    }
}

/// The token inverse-CDF sampling picks with draw `u` from `π = e inv_s` ([`exp_row`]'s `e` and
/// block sums): the first whose running sum exceeds `u`, the last if none does. `None` when
/// `u` lies within `margin` of a running sum next to it, where only the reference's own
/// arithmetic can say.
pub(crate) fn locate(e: &[f64], block_sums: &[f64], inv_s: f64, u: f64, margin: f64) -> Option<usize> {
    let v = e.len();
    let mut below = 0.0;
    for (b, &block_sum) in block_sums.iter().enumerate() {
        let next = below + block_sum * inv_s;
        if next > u {
            let start = b * BLOCK;
            let mut running = below;
            for (j, &ej) in e[start..(start + BLOCK).min(v)].iter().enumerate() {
                let high = running + ej * inv_s;
                if high > u {
                    let k = start + j;
                    let clear_below = k == 0 || u - running > margin;
                    let clear_above = k == v - 1 || high - u > margin;
                    return (clear_below && clear_above).then_some(k);
                }
                running = high;
            }
            return None; // the block's sum crossed u, its running sums did not: a near tie
        }
        below = next;
    }
    (u - below > margin).then_some(v - 1)
}

/// One row's exact statistics in a world, before the factors of `L`: `Σ π w`, the gold
/// (`Σ g (1 − (1 − π)^L)` counting a token once, else `Σ π g`) and `KL(π‖π_ref)`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct RowStats {
    pub proxy: f64,
    pub gold: f64,
    pub kl: f64,
}

/// `Σ_{k<L} q^k` by the bits of `L`, highest first: `n → 2n` is `S_2n = S_n (1 + q^n)`, `n →
/// n + 1` is `S_(n+1) = S_n + q^n` (at most two operations and a squaring a bit). Every term
/// is positive: with `q = 1 − p` rounded (relative error `2^−53`), the result is within
/// about `(L + 2 log2 L) 2^−53` relative.
#[inline(always)]
fn geometric_sum<V: Vector>(q: V, length: usize) -> V {
    let (mut sum, mut power) = (q.like(0.0), q.like(1.0));
    for bit in (0..usize::BITS - length.leading_zeros()).rev() {
        sum = power.mul_add(sum, sum);
        power = power * power;
        if (length >> bit) & 1 == 1 {
            sum = sum + power;
            power = power * q;
        }
    }
    sum
}

/// [`RowStats`] of the row `z` against the reference's log-softmax `lq`, the reward model's
/// weights `w` and the gold `g`; `e` is scratch of a row. Three passes: the maximum;
/// `e^(z − max)` with `S`, `Σ e w`, `T` (and `Σ e g`); with `count_once`, the gold.
///
/// `1 − (1 − p)^L = p Σ_{k<L} (1 − p)^k` ([`geometric_sum`]): a sum of positive terms, with
/// no cancellation for tiny `p` (where the reference takes libm's `−expm1(L log1p(−p))`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn stats_row<V: Vector>(
    isa: V::Isa,
    z: &[f64],
    lq: &[f64],
    w: &[f64],
    g: &[f64],
    count_once: bool,
    length: usize,
    e: &mut [f64],
) -> RowStats {
    let c = V::splat(isa, row_max::<V>(isa, z));
    let zero = V::zero(isa);
    let (mut s, mut ew, mut eg, mut t) = (zero, zero, zero, zero);
    for (j, end) in spans(0, z.len()) {
        let x = load::<V>(isa, &z[j..end], PAD) - c;
        let ez = exp_nonpositive_fused(x);
        s = s + ez;
        ew = ez.mul_add(load::<V>(isa, &w[j..end], 0.0), ew);
        t = ez.mul_add(x - load::<V>(isa, &lq[j..end], 0.0), t);
        if count_once {
            store(ez, &mut e[j..end]);
        } else {
            eg = ez.mul_add(load::<V>(isa, &g[j..end], 0.0), eg);
        }
    }
    let total = lanes_sum(s);
    let inv_s = 1.0 / total;
    let kl = lanes_sum(t) * inv_s - total.ln();
    let proxy = lanes_sum(ew) * inv_s;
    if !count_once {
        return RowStats { proxy, gold: lanes_sum(eg) * inv_s, kl };
    }
    let (inv, one) = (V::splat(isa, inv_s), V::splat(isa, 1.0));
    let mut gold = zero;
    for (j, end) in spans(0, z.len()) {
        let p = load::<V>(isa, &e[j..end], 0.0) * inv;
        // π rounds to a little above 1 at most: then q = 0 and the token is seen.
        let q = (one - p).max_or_rhs(zero);
        let seen = p * geometric_sum(q, length);
        gold = seen.mul_add(load::<V>(isa, &g[j..end], 0.0), gold);
    }
    RowStats { proxy, gold: lanes_sum(gold), kl }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn stats_row_avx2(
    isa: Avx2Isa,
    z: &[f64],
    lq: &[f64],
    w: &[f64],
    g: &[f64],
    count_once: bool,
    length: usize,
    e: &mut [f64],
) -> RowStats {
    stats_row::<Avx2>(isa, z, lq, w, g, count_once, length, e)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
fn stats_row_avx512(
    isa: Avx512Isa,
    z: &[f64],
    lq: &[f64],
    w: &[f64],
    g: &[f64],
    count_once: bool,
    length: usize,
    e: &mut [f64],
) -> RowStats {
    stats_row::<Avx512>(isa, z, lq, w, g, count_once, length, e)
}

/// `(max z, ln S)` of a row, `S = Σ e^(z − max z)` summed as [`exp_row`] sums it (bit for
/// bit), on `V`; `e` is scratch of a row.
#[inline(always)]
fn log_normaliser<V: Vector>(isa: V::Isa, z: &[f64], e: &mut [f64]) -> (f64, f64) {
    let top = row_max::<V>(isa, z);
    let mut block_sums = vec![0.0; n_blocks(z.len())];
    (top, exp_row::<V, false>(isa, z, top, &[], 0.0, e, &mut block_sums).0.ln())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn log_normaliser_avx2(isa: Avx2Isa, z: &[f64], e: &mut [f64]) -> (f64, f64) {
    log_normaliser::<Avx2>(isa, z, e)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn log_normaliser_avx512(isa: Avx512Isa, z: &[f64], e: &mut [f64]) -> (f64, f64) {
    log_normaliser::<Avx512>(isa, z, e)
}

/// [`log_normaliser`] on `simd`'s vector unit (the same bits on every one).
pub(crate) fn log_normaliser_on(simd: Simd, z: &[f64], e: &mut [f64]) -> (f64, f64) {
    match simd {
        Simd::Portable => log_normaliser::<Portable>((), z, e),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Avx2Isa` is minted only by `Simd::available`, after detecting AVX2 and
        // FMA on this CPU: `log_normaliser_avx2`'s code can run here.
        Simd::Avx2(isa) => unsafe { log_normaliser_avx2(isa, z, e) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Avx512Isa` is minted only by `Simd::available`, after detecting
        // AVX-512F on this CPU: `log_normaliser_avx512`'s code can run here.
        Simd::Avx512(isa) => unsafe { log_normaliser_avx512(isa, z, e) },
    }
}

/// [`stats_row`] on `simd`'s vector unit.
#[allow(clippy::too_many_arguments)]
pub(crate) fn stats_row_on(
    simd: Simd,
    z: &[f64],
    lq: &[f64],
    w: &[f64],
    g: &[f64],
    count_once: bool,
    length: usize,
    e: &mut [f64],
) -> RowStats {
    match simd {
        Simd::Portable => stats_row::<Portable>((), z, lq, w, g, count_once, length, e),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Avx2Isa` is minted only by `Simd::available`, after detecting AVX2 and
        // FMA on this CPU: `stats_row_avx2`'s code can run here.
        Simd::Avx2(isa) => unsafe { stats_row_avx2(isa, z, lq, w, g, count_once, length, e) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Avx512Isa` is minted only by `Simd::available`, after detecting
        // AVX-512F on this CPU: `stats_row_avx512`'s code can run here.
        Simd::Avx512(isa) => unsafe { stats_row_avx512(isa, z, lq, w, g, count_once, length, e) },
    }
}

/// A row's `e_j = e^(z_j − max z)` into `e` (by [`exp_row`], its block sums into
/// `block_sums`); returns `(max z, S, T)`, `S = Σ e_j`, `T = Σ e_j (z_j − max z)` (`zeros`: a
/// row of zeros, [`exp_row`]'s reference): `π_j = e_j / S`, `log π_j = (z_j − max z) − ln S`
/// and the entropy `−Σ π log π = ln S − T / S`, with no pass to normalise the row.
#[inline(always)]
pub(crate) fn exp_entropy_row<V: Vector>(
    isa: V::Isa,
    z: &[f64],
    zeros: &[f64],
    e: &mut [f64],
    block_sums: &mut [f64],
) -> (f64, f64, f64) {
    let top = row_max::<V>(isa, z);
    let (sum, t) = exp_row::<V, true>(isa, z, top, zeros, 0.0, e, block_sums);
    (top, sum, t)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_entropy_row_avx2(
    isa: Avx2Isa,
    z: &[f64],
    zeros: &[f64],
    e: &mut [f64],
    block_sums: &mut [f64],
) -> (f64, f64, f64) {
    exp_entropy_row::<Avx2>(isa, z, zeros, e, block_sums)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn exp_entropy_row_avx512(
    isa: Avx512Isa,
    z: &[f64],
    zeros: &[f64],
    e: &mut [f64],
    block_sums: &mut [f64],
) -> (f64, f64, f64) {
    exp_entropy_row::<Avx512>(isa, z, zeros, e, block_sums)
}

/// [`exp_entropy_row`] on `simd`'s vector unit (the same bits on every one).
pub(crate) fn exp_entropy_row_on(
    simd: Simd,
    z: &[f64],
    zeros: &[f64],
    e: &mut [f64],
    block_sums: &mut [f64],
) -> (f64, f64, f64) {
    match simd {
        Simd::Portable => exp_entropy_row::<Portable>((), z, zeros, e, block_sums),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Avx2Isa` is minted only by `Simd::available`, after detecting AVX2 and
        // FMA on this CPU: `exp_entropy_row_avx2`'s code can run here.
        Simd::Avx2(isa) => unsafe { exp_entropy_row_avx2(isa, z, zeros, e, block_sums) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Avx512Isa` is minted only by `Simd::available`, after detecting
        // AVX-512F on this CPU: `exp_entropy_row_avx512`'s code can run here.
        Simd::Avx512(isa) => unsafe { exp_entropy_row_avx512(isa, z, zeros, e, block_sums) },
    }
}

/// `z_j −= lr g_j` with `g_j = −(c (e_j inv_s))`: a row's step along `−c π` (`π = e inv_s`),
/// the part of a policy gradient `Σ_i coef_i ([v = a_i] − π_v)` that is not at a chosen token
/// (`c = Σ_i coef_i`), lane by lane as the scalar expression rounds it; fused with the next
/// softmax of the updated row, as [`exp_row`] computes it with `shift` (which must be at
/// least the updated row's maximum): `e` receives `e^(z_j − shift)` (it held the old row's
/// `e`), `block_sums` their block sums. Returns `(S, T, max z)` of the updated row, `T = Σ e_j
/// (z_j − shift)`; the caller checks `max z <= shift` and starts over if not.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn descend_row<V: Vector>(
    isa: V::Isa,
    z: &mut [f64],
    e: &mut [f64],
    inv_s: f64,
    c: f64,
    lr: f64,
    shift: f64,
    block_sums: &mut [f64],
) -> (f64, f64, f64) {
    let v = z.len();
    let (inv_s, c, lr, zero, shift) =
        (V::splat(isa, inv_s), V::splat(isa, c), V::splat(isa, lr), V::zero(isa), V::splat(isa, shift));
    let (mut total, mut t, mut top) = (0.0, V::zero(isa), V::splat(isa, f64::NEG_INFINITY));
    for (b, block_sum) in block_sums.iter_mut().enumerate() {
        let mut s = V::zero(isa);
        for (j, end) in spans(b * BLOCK, ((b + 1) * BLOCK).min(v)) {
            let g = zero - c * (load::<V>(isa, &e[j..end], 0.0) * inv_s);
            let updated = load::<V>(isa, &z[j..end], PAD) - lr * g;
            top = updated.max_or_rhs(top);
            let x = updated - shift;
            let ez = exp_nonpositive_fused(x);
            s = s + ez;
            // Padded lanes: e = 0 times a finite (z − shift).
            t = ez.mul_add(x, t);
            store(updated, &mut z[j..end]);
            store(ez, &mut e[j..end]);
        }
        *block_sum = lanes_sum(s);
        total += *block_sum;
    }
    (total, lanes_sum(t), lanes_max(top))
}

#[allow(clippy::too_many_arguments)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn descend_row_avx2(
    isa: Avx2Isa,
    z: &mut [f64],
    e: &mut [f64],
    inv_s: f64,
    c: f64,
    lr: f64,
    shift: f64,
    block_sums: &mut [f64],
) -> (f64, f64, f64) {
    descend_row::<Avx2>(isa, z, e, inv_s, c, lr, shift, block_sums)
}

#[allow(clippy::too_many_arguments)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn descend_row_avx512(
    isa: Avx512Isa,
    z: &mut [f64],
    e: &mut [f64],
    inv_s: f64,
    c: f64,
    lr: f64,
    shift: f64,
    block_sums: &mut [f64],
) -> (f64, f64, f64) {
    descend_row::<Avx512>(isa, z, e, inv_s, c, lr, shift, block_sums)
}

/// [`descend_row`] on `simd`'s vector unit (the same bits on every one).
#[allow(clippy::too_many_arguments)]
pub(crate) fn descend_row_on(
    simd: Simd,
    z: &mut [f64],
    e: &mut [f64],
    inv_s: f64,
    c: f64,
    lr: f64,
    shift: f64,
    block_sums: &mut [f64],
) -> (f64, f64, f64) {
    match simd {
        Simd::Portable => descend_row::<Portable>((), z, e, inv_s, c, lr, shift, block_sums),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Avx2Isa` is minted only by `Simd::available`, after detecting AVX2 and
        // FMA on this CPU: `descend_row_avx2`'s code can run here.
        Simd::Avx2(isa) => unsafe { descend_row_avx2(isa, z, e, inv_s, c, lr, shift, block_sums) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Avx512Isa` is minted only by `Simd::available`, after detecting
        // AVX-512F on this CPU: `descend_row_avx512`'s code can run here.
        Simd::Avx512(isa) => unsafe { descend_row_avx512(isa, z, e, inv_s, c, lr, shift, block_sums) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::kl::kl_to_log;
    use crate::kernels::rows::sample_margin;
    use crate::kernels::sampling::sample_index;
    use crate::kernels::softmax::{log_softmax_row, softmax_row};
    use crate::rng::Mt19937;

    /// `n` draws in `[−scale/2, scale/2)`.
    fn draws(rng: &mut Mt19937, n: usize, scale: f64) -> Vec<f64> {
        (0..n).map(|_| scale * (rng.random() - 0.5)).collect()
    }

    /// The reference's statistics of a row, with libm (`WorldTables.prompt_stats`' loops).
    fn libm_stats(z: &[f64], lq: &[f64], w: &[f64], g: &[f64], count_once: bool, length: usize) -> RowStats {
        let mut p = vec![0.0; z.len()];
        softmax_row(z, &mut p);
        let l = length as f64;
        let proxy = p.iter().zip(w).fold(0.0, |acc, (&pa, &wa)| acc + pa * wa);
        let gold = if count_once {
            p.iter()
                .zip(g)
                .fold(0.0, |acc, (&pa, &ga)| acc + ga * if pa < 1.0 { -(l * (-pa).ln_1p()).exp_m1() } else { 1.0 })
        } else {
            p.iter().zip(g).fold(0.0, |acc, (&pa, &ga)| acc + pa * ga)
        };
        RowStats { proxy, gold, kl: kl_to_log(&p, lq) }
    }

    fn stats_on_every_unit(z: &[f64], lq: &[f64], w: &[f64], g: &[f64], count_once: bool, length: usize) -> RowStats {
        let mut e = vec![0.0; z.len()];
        let units: Vec<RowStats> = Simd::available()
            .into_iter()
            .map(|simd| stats_row_on(simd, z, lq, w, g, count_once, length, &mut e))
            .collect();
        let bits = |s: &RowStats| [s.proxy, s.gold, s.kl].map(f64::to_bits);
        assert!(units.iter().all(|s| bits(s) == bits(&units[0])), "{units:?}");
        units[0]
    }

    #[test]
    fn the_statistics_are_libms_within_rounding_and_the_same_on_every_unit() {
        let mut rng = Mt19937::from_seed(4);
        for (case, v) in [2, 3, 7, 8, 9, 64, 65, 200, 4096].into_iter().enumerate() {
            for (length, scale) in [(1, 2.0), (8, 12.0), (100, 30.0), (4096, 4.0)] {
                let z = draws(&mut rng, v, scale);
                let mut lq = draws(&mut rng, v, 8.0);
                log_softmax_row(&lq.clone(), &mut lq);
                let (w, g) = (draws(&mut rng, v, 4.0), draws(&mut rng, v, 4.0));
                for count_once in [true, false] {
                    let fast = stats_on_every_unit(&z, &lq, &w, &g, count_once, length);
                    let exact = libm_stats(&z, &lq, &w, &g, count_once, length);
                    let size = |values: &[f64]| values.iter().map(|x| x.abs()).sum::<f64>();
                    for (got, want, scale) in [
                        (fast.proxy, exact.proxy, size(&w)),
                        (fast.gold, exact.gold, size(&g)),
                        (fast.kl, exact.kl, 30.0 + scale),
                    ] {
                        let bound = 1e-14 * scale + 1e-15 * (length as f64) * size(&g);
                        assert!((got - want).abs() <= bound, "case {case} L={length}: {got} vs {want}");
                    }
                }
            }
        }
        // One token holds all the mass: it is seen, the others are not.
        let z = [0.0, -800.0, -900.0];
        let stats = stats_on_every_unit(&z, &[0.0, -800.0, -900.0], &[1.0, 2.0, 3.0], &[5.0, 7.0, 9.0], true, 8);
        assert_eq!((stats.proxy, stats.gold, stats.kl), (1.0, 5.0, 0.0));
    }

    #[test]
    fn a_rows_softmax_and_entropy_are_libms_within_rounding_and_the_same_on_every_unit() {
        let mut rng = Mt19937::from_seed(11);
        for v in [2, 3, 7, 8, 9, 64, 65, 200, 512, 4096] {
            for scale in [0.5, 12.0, 80.0, 2000.0] {
                let z = draws(&mut rng, v, scale);
                let zeros = vec![0.0; v];
                type Unit = (f64, f64, f64, Vec<f64>, Vec<f64>);
                let units: Vec<Unit> = Simd::available()
                    .into_iter()
                    .map(|simd| {
                        let (mut e, mut block_sums) = (vec![0.0; v], vec![0.0; n_blocks(v)]);
                        let (top, sum, t) = exp_entropy_row_on(simd, &z, &zeros, &mut e, &mut block_sums);
                        (top, sum, t, e, block_sums)
                    })
                    .collect();
                let bits = |u: &Unit| {
                    let mut all = vec![u.0, u.1, u.2];
                    all.extend(&u.3);
                    all.extend(&u.4);
                    all.into_iter().map(f64::to_bits).collect::<Vec<_>>()
                };
                assert!(units.iter().all(|u| bits(u) == bits(&units[0])), "V={v} scale={scale}");
                let (top, sum, t, e, block_sums) = &units[0];
                let (mut p, mut logp) = (vec![0.0; v], vec![0.0; v]);
                softmax_row(&z, &mut p);
                log_softmax_row(&z, &mut logp);
                let entropy = p.iter().zip(&logp).fold(0.0, |acc, (&pj, &lj)| acc - pj * lj);
                let (inv_s, log_sum) = (1.0 / sum, sum.ln());
                for j in 0..v {
                    assert!((e[j] * inv_s - p[j]).abs() <= 1e-14 * p[j] + 1e-300, "V={v} p[{j}]");
                    let lj = (z[j] - top) - log_sum;
                    assert!((lj - logp[j]).abs() <= 1e-14 * (1.0 + logp[j].abs()), "V={v} logp[{j}]");
                }
                assert!(((log_sum - t / sum) - entropy).abs() <= 1e-13 * (1.0 + scale), "V={v} entropy");
                let blocks: f64 = block_sums.iter().sum();
                assert!((blocks - sum).abs() <= 1e-15 * v as f64 * sum);
            }
        }
    }

    #[test]
    fn a_descent_is_the_scalar_step_and_its_softmax_exp_rows_the_same_on_every_unit() {
        let mut rng = Mt19937::from_seed(12);
        for v in [2, 5, 8, 9, 512, 1001] {
            let z = draws(&mut rng, v, 10.0);
            let e_old: Vec<f64> = draws(&mut rng, v, 1.0).iter().map(|x| x.abs()).collect();
            let (inv_s, c, lr) = (0.37, -0.021, 4.5);
            let scalar: Vec<f64> = z.iter().zip(&e_old).map(|(&x, &ej)| x - lr * -(c * (ej * inv_s))).collect();
            let top = scalar.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let shift = top + 0.25;
            let zeros = vec![0.0; v];
            let (mut e_want, mut blocks_want) = (vec![0.0; v], vec![0.0; n_blocks(v)]);
            let (s_want, t_want) =
                exp_row::<Portable, true>((), &scalar, shift, &zeros, 0.0, &mut e_want, &mut blocks_want);
            for simd in Simd::available() {
                let (mut row, mut e, mut block_sums) = (z.clone(), e_old.clone(), vec![0.0; n_blocks(v)]);
                let (s, t, max) = descend_row_on(simd, &mut row, &mut e, inv_s, c, lr, shift, &mut block_sums);
                assert_eq!((row, max), (scalar.clone(), top), "{} V={v}", simd.name());
                assert_eq!((e, block_sums, s, t), (e_want.clone(), blocks_want.clone(), s_want, t_want));
            }
        }
    }

    #[test]
    fn a_geometric_sum_is_the_sum_of_its_powers() {
        let isa = ();
        for length in [1usize, 2, 3, 7, 8, 13, 64, 100] {
            for q in [0.0, 0.25, 0.5, 0.9, 1.0] {
                let got = geometric_sum(Portable::splat(isa, q), length).to_array()[0];
                let want: f64 = (0..length).map(|k| q.powi(k as i32)).sum();
                assert!((got - want).abs() <= 1e-14 * want, "L={length} q={q}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn located_draws_are_sample_index_s_and_the_rest_lie_within_the_margin() {
        let mut rng = Mt19937::from_seed(9);
        for v in [2, 5, 63, 64, 65, 1000, 4096] {
            let mut z = draws(&mut rng, v, 16.0);
            z[v / 2] = 40.0; // one block holds most of the mass
            let (mut e, mut sums, mut p) = (vec![0.0; v], vec![0.0; n_blocks(v)], vec![0.0; v]);
            let top = row_max::<Portable>((), &z);
            let (s, _) = exp_row::<Portable, false>((), &z, top, &[], 0.0, &mut e, &mut sums);
            softmax_row(&z, &mut p);
            let margin = sample_margin(v);
            let mut running = 0.0;
            let mut edges = vec![0.0, 1.0 - f64::EPSILON / 2.0];
            for &pa in &p {
                running += pa;
                edges.extend([running, running.next_down(), running.next_up()]);
            }
            let draws: Vec<f64> = (0..3000).map(|_| rng.random()).chain(edges).filter(|u| *u < 1.0).collect();
            let mut deferred = 0;
            for u in draws {
                match locate(&e, &sums, 1.0 / s, u, margin) {
                    Some(k) => assert_eq!(k, sample_index(&p, u), "V={v} u={u}"),
                    None => deferred += 1,
                }
            }
            assert!(deferred <= 3 * v + 2, "V={v}: {deferred} deferred"); // the edges, not the draws
        }
    }

    #[test]
    fn an_update_pass_is_the_update_and_the_next_exponentials() {
        let mut rng = Mt19937::from_seed(2);
        for v in [3, 8, 21, 130] {
            let z = draws(&mut rng, v, 6.0);
            let mut counts = vec![0.0; v];
            counts[1] = 2.0;
            counts[v - 1] = 1.0;
            let (mut e, mut sums) = (vec![0.0; v], vec![0.0; n_blocks(v)]);
            let top = row_max::<Portable>((), &z);
            let (s, _) = exp_row::<Portable, false>((), &z, top, &[], 0.0, &mut e, &mut sums);
            let (step, length) = (0.3, 3.0);
            let shift = top + step * length;
            let mut moved = vec![0.0; v];
            let mut next = e.clone();
            let (s_new, top_new) = update_row::<Portable, true>(
                (),
                Some(&z),
                &mut moved,
                &mut next,
                &counts,
                step,
                length,
                1.0 / s,
                shift,
            );
            let mut in_place = z.clone();
            update_row::<Portable, false>((), None, &mut in_place, &mut e.clone(), &counts, step, length, 1.0 / s, 0.0);
            assert_eq!(in_place, moved);
            for j in 0..v {
                let want = z[j] + step * (counts[j] - length * e[j] / s);
                assert!((moved[j] - want).abs() < 1e-14, "V={v} j={j}");
                assert!((next[j] - (moved[j] - shift).exp()).abs() <= 1e-15 * (moved[j] - shift).exp());
            }
            assert_eq!(top_new, row_max::<Portable>((), &moved));
            assert!((s_new - next.iter().sum::<f64>()).abs() < 1e-14 * s_new);
        }
    }
}
