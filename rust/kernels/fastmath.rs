//! `exp` and `ln` from plain IEEE additions, multiplications and bit operations.
//!
//! The lane engine evaluates these on whole lanes of runs at once; written without
//! branches, libm calls or fused multiply-adds, the same source compiles to SSE2, AVX2 or
//! AVX-512 and gives bit-identical results on every one, so a sweep's numbers do not depend
//! on the CPU it runs on. Both stay within about one ulp of glibc's (tested below), which
//! keeps a sweep within 1e-9 of the reference's libm-based floats.
//!
//! The large-vocabulary row kernels (`rows.rs`) use [`exp_nonpositive_fused`] instead: about
//! half the instructions, by fused multiply-adds (formed alike on every unit, so it too gives
//! the same bits everywhere), a minimax polynomial two degrees shorter than Taylor's, and
//! results below `2^-1022` flushed to 0 instead of rounded to subnormals.

// fdlibm's split of ln 2: the high part has 32 significant bits, so k * LN2_HI is exact.
// Index loops over lanes are the shape LLVM turns into vector instructions.
#![allow(clippy::needless_range_loop)]

use crate::kernels::simd::Vector;

const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
const INV_LN2: f64 = std::f64::consts::LOG2_E;
/// Adding 1.5 * 2^52 rounds to an integer and leaves it in the low mantissa bits.
const ROUND_SHIFT: f64 = 6_755_399_441_055_744.0;
/// Below this `exp` is 0 in double precision (the smallest subnormal is about e^-744.4).
const EXP_FLOOR: f64 = -746.0;

/// 1/n! for n = 2..=13: Taylor's series is within 4e-18 of e^r for |r| <= ln(2)/2.
const EXP_TAYLOR: [f64; 12] = [
    1.0 / 2.0,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5_040.0,
    1.0 / 40_320.0,
    1.0 / 362_880.0,
    1.0 / 3_628_800.0,
    1.0 / 39_916_800.0,
    1.0 / 479_001_600.0,
    1.0 / 6_227_020_800.0,
];

/// `e^x` for `x <= 0` (a softmax's shifted logits), subnormal results included, on every
/// lane of every row: `e^x = 2^k e^r` with `k = round(x / ln 2)` and `|r| <= ln(2) / 2`, `e^r`
/// by Taylor's series. Each step is taken across all rows before the next, so the rows'
/// Horner chains run side by side instead of waiting on one another's latency.
#[inline(always)]
pub(crate) fn exp_nonpositive_rows<V: Vector, const N: usize>(x: &[V; N]) -> [V; N] {
    let isa = x[0].isa();
    let floor = V::splat(isa, EXP_FLOOR);
    let mut r = [V::zero(isa); N];
    let mut k = [V::zero(isa); N];
    for v in 0..N {
        let clamped = V::select(x[v].lt(floor), floor, x[v]);
        let shifted = clamped * V::splat(isa, INV_LN2) + V::splat(isa, ROUND_SHIFT);
        k[v] = shifted - V::splat(isa, ROUND_SHIFT);
        r[v] = (clamped - k[v] * V::splat(isa, LN2_HI)) - k[v] * V::splat(isa, LN2_LO);
    }
    let mut poly = [V::splat(isa, EXP_TAYLOR[11]); N];
    for &c in EXP_TAYLOR[..11].iter().rev() {
        let c = V::splat(isa, c);
        for v in 0..N {
            poly[v] = poly[v] * r[v] + c;
        }
    }
    let lowest = V::splat(isa, -1022.0);
    for v in 0..N {
        // 2^k in two factors, so k below -1022 still yields a (correctly scaled) subnormal.
        let mantissa = V::splat(isa, 1.0) + (r[v] + (r[v] * r[v]) * poly[v]);
        let k_normal = V::select(k[v].lt(lowest), lowest, k[v]);
        r[v] = mantissa * k_normal.pow2() * (k[v] - k_normal).pow2();
    }
    r
}

/// Minimax coefficients (relative error, Remez on `[-0.3466, 0.3466]`) of `e^r ≈ Σ c_i r^i`:
/// within 3.1e-18 of `e^r` in exact arithmetic, 2.3e-17 with the coefficients rounded to
/// doubles, a fifth of a half-ulp.
const EXP_MINIMAX: [f64; 12] = [
    1.0,
    1.0,
    f64::from_bits(0x3fe0_0000_0000_0010), // 0.5000000000000018
    f64::from_bits(0x3fc5_5555_5555_54a2), // 0.1666666666666617
    f64::from_bits(0x3fa5_5555_5554_f361), // 0.041666666666492665
    f64::from_bits(0x3f81_1111_1113_0e25), // 0.00833333333355941
    f64::from_bits(0x3f56_c16c_1878_441b), // 0.0013888888951252346
    f64::from_bits(0x3f2a_01a0_1104_6a2a), // 0.00019841269432492706
    f64::from_bits(0x3efa_0199_2c86_5f3a), // 2.4801486490837905e-05
    f64::from_bits(0x3ec7_1df4_534d_9c8b), // 2.755762262318981e-06
    f64::from_bits(0x3e92_8b31_9c83_460a), // 2.7632304667760673e-07
    f64::from_bits(0x3e5a_d661_3a43_4b75), // 2.4994296091866438e-08
];
/// Below this `e^x` (< 3.4e-308) is returned as 0; at and above it `2^k` is a normal double.
const EXP_FLUSH: f64 = -708.0;

/// `e^x` for `x <= 0`, one lane at a time, with fused multiply-adds: `e^x = 2^k e^r` with
/// `k = round(x / ln 2)`, `r = x − k ln 2` (two FMAs against fdlibm's split of `ln 2`) and `e^r`
/// by [`EXP_MINIMAX`]'s degree-11 polynomial, evaluated by Estrin's scheme (pairs
/// `c_i + c_{i+1} r`, then powers `r^2`, `r^4`, `r^8`: 11 FMAs and 3 multiplications, but a
/// dependency chain five FMAs deep instead of Horner's eleven, so that the vector unit is not
/// left waiting on latency). Within two ulps of libm for `x` in `[−708, 0]` (tested); 0 for
/// `x < −708`, where the true value is below `3.4e-308` (an absolute error the row kernels'
/// bounds include); NaN for NaN (so that a sum of results shows it). Every unit forms the
/// same FMAs in the same order, so the result's bits do not depend on the vector unit.
#[inline(always)]
pub(crate) fn exp_nonpositive_fused<V: Vector>(x: V) -> V {
    // (No closure for the constants: closures do not get the caller's target features.)
    let c = EXP_MINIMAX;
    let shift = x.like(ROUND_SHIFT + 1023.0);
    // t's low mantissa bits hold k + 1023, in [2, 1023] for x in [−708, 0].
    let t = x.mul_add(x.like(INV_LN2), shift);
    let k = t - shift;
    let r = k.mul_add(x.like(-LN2_LO), k.mul_add(x.like(-LN2_HI), x));
    let r2 = r * r;
    let r4 = r2 * r2;
    let r8 = r4 * r4;
    let p01 = x.like(c[1]).mul_add(r, x.like(c[0]));
    let p23 = x.like(c[3]).mul_add(r, x.like(c[2]));
    let p45 = x.like(c[5]).mul_add(r, x.like(c[4]));
    let p67 = x.like(c[7]).mul_add(r, x.like(c[6]));
    let p89 = x.like(c[9]).mul_add(r, x.like(c[8]));
    let pab = x.like(c[11]).mul_add(r, x.like(c[10]));
    let p03 = p23.mul_add(r2, p01);
    let p47 = p67.mul_add(r2, p45);
    let p8b = pab.mul_add(r2, p89);
    let p07 = p47.mul_add(r4, p03);
    let poly = p8b.mul_add(r8, p07);
    // 0 below the floor (−∞ included); NaN stays NaN, for the callers' checks.
    (poly * t.shift_to_exponent()).zero_where(x.lt(x.like(EXP_FLUSH)))
}

// fdlibm's __ieee754_log: log(1+f) = f - f^2/2 + s (f^2/2 + R(s^2)), s = f / (2 + f).
const LG1: f64 = f64::from_bits(0x3fe5_5555_5555_5593);
const LG2: f64 = f64::from_bits(0x3fd9_9999_9997_fa04);
const LG3: f64 = f64::from_bits(0x3fd2_4924_9422_9359);
const LG4: f64 = f64::from_bits(0x3fcc_71c5_1d8e_78af);
const LG5: f64 = f64::from_bits(0x3fc7_4664_96cb_03de);
const LG6: f64 = f64::from_bits(0x3fc3_9a09_d078_c69f);
const LG7: f64 = f64::from_bits(0x3fc2_f112_df3e_5244);

/// `ln x` for positive normal `x` (a softmax's normaliser, which lies in `[1, V]`).
#[inline(always)]
pub(crate) fn ln_positive(x: f64) -> f64 {
    let bits = x.to_bits();
    let mut exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut mantissa = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    // Centre the mantissa on 1: [sqrt(1/2), sqrt(2)).
    let high = mantissa > std::f64::consts::SQRT_2;
    mantissa = if high { mantissa * 0.5 } else { mantissa };
    exponent += high as i64;
    let f = mantissa - 1.0;
    let k = exponent as f64;
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * (LG2 + w * (LG4 + w * LG6));
    let t2 = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7)));
    let r = t2 + t1;
    let hfsq = 0.5 * f * f;
    k * LN2_HI - ((hfsq - (s * (hfsq + r) + k * LN2_LO)) - f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::simd::{Portable, LANES};

    fn ulps(a: f64, b: f64) -> u64 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs()
    }

    /// `exp_nonpositive_rows` of each value, eight lanes at a time on the portable unit.
    fn exp_of(values: &[f64]) -> Vec<f64> {
        values
            .chunks(LANES)
            .flat_map(|chunk| {
                let lanes = Portable(std::array::from_fn(|l| chunk.get(l).copied().unwrap_or(0.0)));
                exp_nonpositive_rows(&[lanes])[0].0.into_iter().take(chunk.len())
            })
            .collect()
    }

    #[test]
    fn exp_is_within_two_ulps_of_libm() {
        let xs: Vec<f64> = (0..968_000).map(|i| -0.000_731_3 * i as f64).collect();
        let worst = xs.iter().zip(exp_of(&xs)).map(|(&x, ours)| ulps(ours, x.exp())).max().unwrap();
        assert!(worst <= 2, "worst {worst} ulps");
        assert_eq!(exp_of(&[0.0, -0.0]), [1.0, 1.0]);
    }

    #[test]
    fn every_row_is_computed_alike() {
        let rows: [Portable; 3] =
            std::array::from_fn(|v| Portable(std::array::from_fn(|l| -((v * 8 + l) as f64).powf(2.7) / 3.0)));
        let together = exp_nonpositive_rows(&rows);
        for v in 0..3 {
            assert_eq!(together[v], exp_nonpositive_rows(&[rows[v]])[0], "row {v}");
        }
    }

    #[test]
    fn exp_handles_the_subnormal_range_and_underflow() {
        let xs = [-709.0, -720.5, -740.0, -744.0];
        for (&x, ours) in xs.iter().zip(exp_of(&xs)) {
            let libm = x.exp();
            assert!((ours - libm).abs() <= libm * 1e-12 + f64::from_bits(2), "{x}: {ours} vs {libm}");
        }
        assert_eq!(exp_of(&[-746.0, -2e4, f64::NEG_INFINITY]), [0.0, 0.0, 0.0]);
    }

    /// `exp_nonpositive_fused` of each value, eight lanes at a time, on `unit`.
    fn fused_exp_of(unit: crate::kernels::simd::Simd, values: &[f64]) -> Vec<f64> {
        use crate::kernels::simd::Simd;
        fn on<V: Vector>(isa: V::Isa, values: &[f64]) -> Vec<f64> {
            values
                .chunks(LANES)
                .flat_map(|chunk| {
                    let lanes = V::from_array(isa, std::array::from_fn(|l| chunk.get(l).copied().unwrap_or(0.0)));
                    exp_nonpositive_fused(lanes).to_array().into_iter().take(chunk.len())
                })
                .collect()
        }
        match unit {
            Simd::Portable => on::<Portable>((), values),
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2(isa) => {
                #[target_feature(enable = "avx2,fma")]
                fn run(isa: crate::kernels::simd::Avx2Isa, values: &[f64]) -> Vec<f64> {
                    on::<crate::kernels::simd::Avx2>(isa, values)
                }
                // SAFETY: `isa` was minted by `Simd::available` after detecting AVX2 and FMA.
                unsafe { run(isa, values) }
            }
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512(isa) => {
                #[target_feature(enable = "avx512f")]
                fn run(isa: crate::kernels::simd::Avx512Isa, values: &[f64]) -> Vec<f64> {
                    on::<crate::kernels::simd::Avx512>(isa, values)
                }
                // SAFETY: `isa` was minted by `Simd::available` after detecting AVX-512F.
                unsafe { run(isa, values) }
            }
        }
    }

    #[test]
    fn fused_exp_is_within_two_ulps_of_libm_and_the_same_on_every_unit() {
        use crate::kernels::simd::Simd;
        let mut xs: Vec<f64> = (0..1_000_000).map(|i| -0.000_708 * i as f64).collect();
        xs.extend((0..100_000).map(|i| -1e-9 * i as f64));
        xs.extend([0.0, -0.0, -0.5 * std::f64::consts::LN_2, -708.0, -707.999_999]);
        let portable = fused_exp_of(Simd::Portable, &xs);
        let worst = xs.iter().zip(&portable).map(|(&x, &ours)| ulps(ours, x.exp())).max().unwrap();
        assert!(worst <= 2, "worst {worst} ulps");
        assert_eq!(&portable[portable.len() - 5..portable.len() - 3], [1.0, 1.0]);
        for unit in Simd::available() {
            let got = fused_exp_of(unit, &xs);
            assert!(got.iter().zip(&portable).all(|(a, b)| a.to_bits() == b.to_bits()), "{}", unit.name());
        }
        // Flushed below −708, where e^x < 3.4e-308; NaN for what is not finite.
        let low = [-708.000_001, -720.0, -745.5, -1e5, -1e300, f64::NEG_INFINITY];
        assert_eq!(fused_exp_of(Simd::detect(), &low), [0.0; 6]);
        assert!(fused_exp_of(Simd::detect(), &[f64::NAN])[0].is_nan());
        assert!((-708.0f64).exp() < 3.4e-308);
    }

    #[test]
    fn ln_is_within_one_ulp_of_libm() {
        let mut worst = 0;
        let mut x = 1e-300;
        while x < 1e300 {
            worst = worst.max(ulps(ln_positive(x), x.ln()));
            x *= 1.000_913;
        }
        let mut x = 1.0;
        while x < 9.0 {
            worst = worst.max(ulps(ln_positive(x), x.ln()));
            x += 1e-5;
        }
        assert!(worst <= 1, "worst {worst} ulps");
        assert_eq!(ln_positive(1.0), 0.0);
    }
}
