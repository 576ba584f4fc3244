//! Vectors of one f64 per run of a sweep group, on whatever vector unit the CPU has.
//!
//! The sweep engine is written once, generic over [`Vector`]; it is instantiated with
//! [`Portable`] (element-wise loops over an array: the target's baseline, SSE2 on x86-64),
//! [`Avx2`] (two 256-bit registers) and [`Avx512`] (one 512-bit register). The three give
//! bit-identical results: every operation is a single IEEE operation per lane, and no
//! fused multiply-add is ever formed. Masks are per-lane all-ones/all-zeros patterns and
//! selects are blends, so no per-lane branch survives.

// Index loops over lanes are the shape LLVM turns into vector instructions.
#![allow(clippy::needless_range_loop)]

use std::ops::{Add, BitAnd, BitOr, Div, Mul, Not, Sub};

/// Runs per group: one AVX-512 register of f64, two AVX2 ones.
pub const LANES: usize = 8;

/// One f64 per lane, with the operations the sweep engine needs.
pub trait Vector: Copy + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + Div<Output = Self> {
    type Mask: Copy + BitAnd<Output = Self::Mask> + BitOr<Output = Self::Mask> + Not<Output = Self::Mask>;

    fn splat(value: f64) -> Self;
    fn from_array(values: [f64; LANES]) -> Self;
    fn to_array(self) -> [f64; LANES];
    fn lt(self, rhs: Self) -> Self::Mask;
    fn le(self, rhs: Self) -> Self::Mask;
    fn gt(self, rhs: Self) -> Self::Mask;
    fn ge(self, rhs: Self) -> Self::Mask;
    fn eq(self, rhs: Self) -> Self::Mask;
    /// `if mask { a } else { b }` per lane.
    fn select(mask: Self::Mask, a: Self, b: Self) -> Self;
    fn any(mask: Self::Mask) -> bool;
    /// `2^k` for integral `k` in `[-1022, 1023]`: the low mantissa bits of
    /// `k + 1023 + 1.5 * 2^52` shifted into the exponent field (AVX2 has no f64-to-i64).
    fn pow2(self) -> Self;

    #[inline(always)]
    fn zero() -> Self {
        Self::splat(0.0)
    }

    /// The larger of each pair, `self` on ties (Python's `max` keeps the first).
    #[inline(always)]
    fn max(self, rhs: Self) -> Self {
        Self::select(rhs.gt(self), rhs, self)
    }

    /// The smaller of each pair, `self` on ties.
    #[inline(always)]
    fn min(self, rhs: Self) -> Self {
        Self::select(rhs.lt(self), rhs, self)
    }

    /// 1.0 where the mask is set, 0.0 elsewhere.
    #[inline(always)]
    fn unit(mask: Self::Mask) -> Self {
        Self::select(mask, Self::splat(1.0), Self::zero())
    }

    /// `f` on every lane (for libm calls, which no vector unit takes over).
    #[inline(always)]
    fn map(self, f: impl Fn(f64) -> f64) -> Self {
        Self::from_array(self.to_array().map(f))
    }
}

const POW2_SHIFT: f64 = 6_755_399_441_055_744.0 + 1023.0;

/// The baseline: an array LLVM vectorises as far as the target allows.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C, align(64))]
pub struct Portable(pub [f64; LANES]);

/// A [`Portable`] mask.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C, align(64))]
pub struct PortableMask([u64; LANES]);

macro_rules! portable_arithmetic {
    ($trait:ident, $method:ident, $op:tt) => {
        impl $trait for Portable {
            type Output = Portable;
            #[inline(always)]
            fn $method(mut self, rhs: Portable) -> Portable {
                for l in 0..LANES {
                    self.0[l] $op rhs.0[l];
                }
                self
            }
        }
    };
}
portable_arithmetic!(Add, add, +=);
portable_arithmetic!(Sub, sub, -=);
portable_arithmetic!(Mul, mul, *=);
portable_arithmetic!(Div, div, /=);

macro_rules! portable_mask_logic {
    ($trait:ident, $method:ident, $op:tt) => {
        impl $trait for PortableMask {
            type Output = PortableMask;
            #[inline(always)]
            fn $method(mut self, rhs: PortableMask) -> PortableMask {
                for l in 0..LANES {
                    self.0[l] $op rhs.0[l];
                }
                self
            }
        }
    };
}
portable_mask_logic!(BitAnd, bitand, &=);
portable_mask_logic!(BitOr, bitor, |=);

impl Not for PortableMask {
    type Output = PortableMask;
    #[inline(always)]
    fn not(mut self) -> PortableMask {
        for l in 0..LANES {
            self.0[l] = !self.0[l];
        }
        self
    }
}

macro_rules! portable_comparison {
    ($method:ident, $op:tt) => {
        #[inline(always)]
        fn $method(self, rhs: Portable) -> PortableMask {
            let mut out = [0u64; LANES];
            for l in 0..LANES {
                out[l] = if self.0[l] $op rhs.0[l] { u64::MAX } else { 0 };
            }
            PortableMask(out)
        }
    };
}

impl Vector for Portable {
    type Mask = PortableMask;

    #[inline(always)]
    fn splat(value: f64) -> Self {
        Portable([value; LANES])
    }
    #[inline(always)]
    fn from_array(values: [f64; LANES]) -> Self {
        Portable(values)
    }
    #[inline(always)]
    fn to_array(self) -> [f64; LANES] {
        self.0
    }
    portable_comparison!(lt, <);
    portable_comparison!(le, <=);
    portable_comparison!(gt, >);
    portable_comparison!(ge, >=);
    portable_comparison!(eq, ==);

    #[inline(always)]
    fn select(mask: PortableMask, a: Self, b: Self) -> Self {
        let mut out = [0.0; LANES];
        for l in 0..LANES {
            out[l] = f64::from_bits((a.0[l].to_bits() & mask.0[l]) | (b.0[l].to_bits() & !mask.0[l]));
        }
        Portable(out)
    }
    #[inline(always)]
    fn any(mask: PortableMask) -> bool {
        mask.0.iter().fold(0, |acc, &m| acc | m) != 0
    }
    #[inline(always)]
    fn pow2(self) -> Self {
        let mut out = [0.0; LANES];
        for l in 0..LANES {
            out[l] = f64::from_bits((self.0[l] + POW2_SHIFT).to_bits() << 52);
        }
        Portable(out)
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2, Avx512};

/// The x86-64 vector units. Values of these types are only made inside functions compiled
/// with the matching `#[target_feature]` and entered after runtime detection (see
/// `sweep::run_group_on`), which is what makes the intrinsics below sound.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Vector, LANES, POW2_SHIFT};
    use std::arch::x86_64::*;
    use std::ops::{Add, BitAnd, BitOr, Div, Mul, Not, Sub};

    /// Eight lanes in two AVX2 registers.
    #[derive(Clone, Copy, Debug)]
    pub struct Avx2([__m256d; 2]);

    /// An [`Avx2`] mask: all-ones lanes in two registers.
    #[derive(Clone, Copy, Debug)]
    pub struct Avx2Mask([__m256d; 2]);

    macro_rules! avx2_binary {
        ($type:ident, $trait:ident, $method:ident, $intrinsic:ident) => {
            impl $trait for $type {
                type Output = $type;
                #[inline(always)]
                fn $method(self, rhs: $type) -> $type {
                    // SAFETY: only reached on CPUs with AVX2 (see the module comment).
                    unsafe { $type([$intrinsic(self.0[0], rhs.0[0]), $intrinsic(self.0[1], rhs.0[1])]) }
                }
            }
        };
    }
    avx2_binary!(Avx2, Add, add, _mm256_add_pd);
    avx2_binary!(Avx2, Sub, sub, _mm256_sub_pd);
    avx2_binary!(Avx2, Mul, mul, _mm256_mul_pd);
    avx2_binary!(Avx2, Div, div, _mm256_div_pd);
    avx2_binary!(Avx2Mask, BitAnd, bitand, _mm256_and_pd);
    avx2_binary!(Avx2Mask, BitOr, bitor, _mm256_or_pd);

    impl Not for Avx2Mask {
        type Output = Avx2Mask;
        #[inline(always)]
        fn not(self) -> Avx2Mask {
            // SAFETY: as above.
            unsafe {
                let ones = _mm256_castsi256_pd(_mm256_set1_epi64x(-1));
                Avx2Mask([_mm256_xor_pd(self.0[0], ones), _mm256_xor_pd(self.0[1], ones)])
            }
        }
    }

    macro_rules! avx2_comparison {
        ($method:ident, $predicate:ident) => {
            #[inline(always)]
            fn $method(self, rhs: Avx2) -> Avx2Mask {
                // SAFETY: as above.
                unsafe {
                    Avx2Mask([
                        _mm256_cmp_pd::<$predicate>(self.0[0], rhs.0[0]),
                        _mm256_cmp_pd::<$predicate>(self.0[1], rhs.0[1]),
                    ])
                }
            }
        };
    }

    impl Vector for Avx2 {
        type Mask = Avx2Mask;

        #[inline(always)]
        fn splat(value: f64) -> Self {
            // SAFETY: as above.
            unsafe { Avx2([_mm256_set1_pd(value); 2]) }
        }
        #[inline(always)]
        fn from_array(values: [f64; LANES]) -> Self {
            // SAFETY: as above; the loads read the array's 8 values.
            unsafe { Avx2([_mm256_loadu_pd(values.as_ptr()), _mm256_loadu_pd(values.as_ptr().add(4))]) }
        }
        #[inline(always)]
        fn to_array(self) -> [f64; LANES] {
            let mut out = [0.0; LANES];
            // SAFETY: as above; the stores write the array's 8 values.
            unsafe {
                _mm256_storeu_pd(out.as_mut_ptr(), self.0[0]);
                _mm256_storeu_pd(out.as_mut_ptr().add(4), self.0[1]);
            }
            out
        }
        avx2_comparison!(lt, _CMP_LT_OQ);
        avx2_comparison!(le, _CMP_LE_OQ);
        avx2_comparison!(gt, _CMP_GT_OQ);
        avx2_comparison!(ge, _CMP_GE_OQ);
        avx2_comparison!(eq, _CMP_EQ_OQ);

        #[inline(always)]
        fn select(mask: Avx2Mask, a: Self, b: Self) -> Self {
            // SAFETY: as above.
            unsafe { Avx2([_mm256_blendv_pd(b.0[0], a.0[0], mask.0[0]), _mm256_blendv_pd(b.0[1], a.0[1], mask.0[1])]) }
        }
        #[inline(always)]
        fn any(mask: Avx2Mask) -> bool {
            // SAFETY: as above.
            unsafe { (_mm256_movemask_pd(mask.0[0]) | _mm256_movemask_pd(mask.0[1])) != 0 }
        }
        #[inline(always)]
        fn pow2(self) -> Self {
            // SAFETY: as above.
            unsafe {
                let shift = _mm256_set1_pd(POW2_SHIFT);
                let one = |k: __m256d| {
                    _mm256_castsi256_pd(_mm256_slli_epi64::<52>(_mm256_castpd_si256(_mm256_add_pd(k, shift))))
                };
                Avx2([one(self.0[0]), one(self.0[1])])
            }
        }
    }

    /// Eight lanes in one AVX-512 register.
    #[derive(Clone, Copy, Debug)]
    pub struct Avx512(__m512d);

    /// An [`Avx512`] mask: one bit per lane.
    #[derive(Clone, Copy, Debug)]
    pub struct Avx512Mask(__mmask8);

    macro_rules! avx512_binary {
        ($trait:ident, $method:ident, $intrinsic:ident) => {
            impl $trait for Avx512 {
                type Output = Avx512;
                #[inline(always)]
                fn $method(self, rhs: Avx512) -> Avx512 {
                    // SAFETY: only reached on CPUs with AVX-512F (see the module comment).
                    unsafe { Avx512($intrinsic(self.0, rhs.0)) }
                }
            }
        };
    }
    avx512_binary!(Add, add, _mm512_add_pd);
    avx512_binary!(Sub, sub, _mm512_sub_pd);
    avx512_binary!(Mul, mul, _mm512_mul_pd);
    avx512_binary!(Div, div, _mm512_div_pd);

    impl BitAnd for Avx512Mask {
        type Output = Avx512Mask;
        #[inline(always)]
        fn bitand(self, rhs: Avx512Mask) -> Avx512Mask {
            Avx512Mask(self.0 & rhs.0)
        }
    }

    impl BitOr for Avx512Mask {
        type Output = Avx512Mask;
        #[inline(always)]
        fn bitor(self, rhs: Avx512Mask) -> Avx512Mask {
            Avx512Mask(self.0 | rhs.0)
        }
    }

    impl Not for Avx512Mask {
        type Output = Avx512Mask;
        #[inline(always)]
        fn not(self) -> Avx512Mask {
            Avx512Mask(!self.0)
        }
    }

    macro_rules! avx512_comparison {
        ($method:ident, $predicate:ident) => {
            #[inline(always)]
            fn $method(self, rhs: Avx512) -> Avx512Mask {
                // SAFETY: as above.
                unsafe { Avx512Mask(_mm512_cmp_pd_mask::<$predicate>(self.0, rhs.0)) }
            }
        };
    }

    impl Vector for Avx512 {
        type Mask = Avx512Mask;

        #[inline(always)]
        fn splat(value: f64) -> Self {
            // SAFETY: as above.
            unsafe { Avx512(_mm512_set1_pd(value)) }
        }
        #[inline(always)]
        fn from_array(values: [f64; LANES]) -> Self {
            // SAFETY: as above; the load reads the array's 8 values.
            unsafe { Avx512(_mm512_loadu_pd(values.as_ptr())) }
        }
        #[inline(always)]
        fn to_array(self) -> [f64; LANES] {
            let mut out = [0.0; LANES];
            // SAFETY: as above; the store writes the array's 8 values.
            unsafe { _mm512_storeu_pd(out.as_mut_ptr(), self.0) };
            out
        }
        avx512_comparison!(lt, _CMP_LT_OQ);
        avx512_comparison!(le, _CMP_LE_OQ);
        avx512_comparison!(gt, _CMP_GT_OQ);
        avx512_comparison!(ge, _CMP_GE_OQ);
        avx512_comparison!(eq, _CMP_EQ_OQ);

        #[inline(always)]
        fn select(mask: Avx512Mask, a: Self, b: Self) -> Self {
            // SAFETY: as above.
            unsafe { Avx512(_mm512_mask_blend_pd(mask.0, b.0, a.0)) }
        }
        #[inline(always)]
        fn any(mask: Avx512Mask) -> bool {
            mask.0 != 0
        }
        #[inline(always)]
        fn pow2(self) -> Self {
            // SAFETY: as above.
            unsafe {
                let biased = _mm512_add_pd(self.0, _mm512_set1_pd(POW2_SHIFT));
                Avx512(_mm512_castsi512_pd(_mm512_slli_epi64::<52>(_mm512_castpd_si512(biased))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise<V: Vector>() -> Vec<[f64; LANES]> {
        let a = V::from_array(std::array::from_fn(|l| l as f64));
        let b = V::splat(3.5);
        let below = a.lt(b);
        vec![
            (a + b).to_array(),
            (a * b - b).to_array(),
            (a / b).to_array(),
            V::unit(below).to_array(),
            V::unit(below & !a.eq(V::zero())).to_array(),
            V::unit(a.le(b) | a.ge(V::splat(7.0))).to_array(),
            V::select(below, a, b).to_array(),
            a.max(b).to_array(),
            a.min(b).to_array(),
            V::from_array([0.0, -1.0, -1022.0, 5.0, 1023.0, -3.0, 10.0, -700.0]).pow2().to_array(),
            [
                f64::from(u8::from(V::any(below))),
                f64::from(u8::from(V::any(below & !below))),
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
            ],
        ]
    }

    #[test]
    fn portable_lanes_compute_what_they_say() {
        let out = exercise::<Portable>();
        assert_eq!(out[0][2], 5.5);
        assert_eq!(out[3], [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(out[4], [0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(out[5], [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
        assert_eq!(out[7], [3.5, 3.5, 3.5, 3.5, 4.0, 5.0, 6.0, 7.0]);
        assert_eq!(out[8][7], 3.5);
        let powers = [0.0, -1.0, -1022.0, 5.0, 1023.0, -3.0, 10.0, -700.0].map(|k: f64| k.exp2());
        assert_eq!(out[9], powers);
        assert_eq!(&out[10][..2], &[1.0, 0.0]);
    }

    #[test]
    fn every_available_vector_unit_agrees_with_the_portable_one() {
        let portable = exercise::<Portable>();
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") {
                #[target_feature(enable = "avx2")]
                fn run() -> Vec<[f64; LANES]> {
                    exercise::<Avx2>()
                }
                // SAFETY: AVX2 was just detected.
                assert_eq!(unsafe { run() }, portable);
            }
            if is_x86_feature_detected!("avx512f") {
                #[target_feature(enable = "avx512f")]
                fn run() -> Vec<[f64; LANES]> {
                    exercise::<Avx512>()
                }
                // SAFETY: AVX-512F was just detected.
                assert_eq!(unsafe { run() }, portable);
            }
        }
    }
}
