//! Vectors of one f64 per run of a sweep group, on whatever vector unit the CPU has.
//!
//! The lane engine is written once, generic over [`Vector`]; it is instantiated with
//! [`Portable`] (element-wise loops over an array: the target's baseline, SSE2 on x86-64),
//! `Avx2` (two 256-bit registers) and `Avx512` (one 512-bit register). The three give
//! bit-identical results: every operation is a single IEEE operation per lane, and a fused
//! multiply-add is formed only where [`Vector::mul_add`] asks for one, on every unit alike
//! (one rounding: `f64::mul_add` on the portable unit, the FMA instructions on the others).
//! Masks are per-lane all-ones/all-zeros patterns and selects are blends, so no per-lane
//! branch survives.
//!
//! **Soundness.** Executing an AVX2 instruction on a CPU without AVX2 is undefined behaviour,
//! so a value of an x86 vector type must not exist on such a CPU. Every such value is made
//! from another one or from the unit's [`Vector::Isa`] token, and the only way to get a token
//! is [`Simd::available`], which mints it after runtime feature detection. So an `Avx2` value
//! is itself the proof that the CPU has AVX2 and FMA (the `Avx2` unit is only offered where
//! both are, as on every x86-64-v3 CPU), and each `unsafe` block below relies on exactly that.

// Index loops over lanes are the shape LLVM turns into vector instructions.
#![allow(clippy::needless_range_loop)]

use std::ops::{Add, BitAnd, BitOr, Div, Mul, Not, Sub};

use crate::error::{Error, Result};

/// Runs per group: one AVX-512 register of f64, two AVX2 ones.
pub(crate) const LANES: usize = 8;

/// One f64 per lane, with the operations the lane engine needs.
pub(crate) trait Vector:
    Copy + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + Div<Output = Self>
{
    /// Proof that this CPU has the vector unit: only [`Simd::available`] makes one.
    type Isa: Copy;
    type Mask: Copy + BitAnd<Output = Self::Mask> + BitOr<Output = Self::Mask> + Not<Output = Self::Mask>;

    fn splat(isa: Self::Isa, value: f64) -> Self;
    fn from_array(isa: Self::Isa, values: [f64; LANES]) -> Self;
    fn to_array(self) -> [f64; LANES];
    /// The token this value proves: it exists, so its unit does.
    fn isa(self) -> Self::Isa;
    fn lt(self, rhs: Self) -> Self::Mask;
    fn le(self, rhs: Self) -> Self::Mask;
    fn gt(self, rhs: Self) -> Self::Mask;
    fn ge(self, rhs: Self) -> Self::Mask;
    fn eq(self, rhs: Self) -> Self::Mask;
    /// `if mask { a } else { b }` per lane.
    fn select(mask: Self::Mask, a: Self, b: Self) -> Self;
    fn any(mask: Self::Mask) -> bool;
    /// `self * b + c` with one rounding (a fused multiply-add), the same bits on every unit.
    fn mul_add(self, b: Self, c: Self) -> Self;
    /// Each lane's bit pattern shifted left by 52: its low 12 mantissa bits become the sign
    /// and exponent fields (with `k + 1023 + 1.5 * 2^52`, integral `k` in `[-1022, 1023]`, that
    /// is `2^k`: AVX2 has no f64-to-i64 conversion).
    fn shift_to_exponent(self) -> Self;
    /// `self` where `self > rhs`, else `rhs` (ties and NaNs give `rhs`): the rule of x86's
    /// `maxpd`, one instruction where [`max`](Vector::max) takes two.
    fn max_or_rhs(self, rhs: Self) -> Self;
    /// 0 where `mask` is set, `self` elsewhere (one `andnot`, where a select takes more).
    fn zero_where(self, mask: Self::Mask) -> Self;
    /// Writes the lanes to `out` (`LANES` long): past the caches (a non-temporal store) where
    /// `out` is 64-byte aligned and the unit has such stores, else an ordinary store. Call
    /// [`stream_fence`](Vector::stream_fence) before anything else reads or writes `out`.
    fn stream(self, out: &mut [f64]);
    /// Orders the [`stream`](Vector::stream) stores made so far before every later store.
    fn stream_fence(isa: Self::Isa);

    /// `2^k` for integral `k` in `[-1022, 1023]`.
    #[inline(always)]
    fn pow2(self) -> Self {
        (self + self.like(POW2_SHIFT)).shift_to_exponent()
    }

    #[inline(always)]
    fn zero(isa: Self::Isa) -> Self {
        Self::splat(isa, 0.0)
    }

    /// A constant with this value's unit.
    #[inline(always)]
    fn like(self, value: f64) -> Self {
        Self::splat(self.isa(), value)
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
    fn unit(isa: Self::Isa, mask: Self::Mask) -> Self {
        Self::select(mask, Self::splat(isa, 1.0), Self::zero(isa))
    }

    /// `f` on every lane (for libm calls, which no vector unit takes over).
    #[inline(always)]
    fn map(self, f: impl Fn(f64) -> f64) -> Self {
        Self::from_array(self.isa(), self.to_array().map(f))
    }
}

/// `k + POW2_SHIFT` holds the biased exponent of `2^k` in its low mantissa bits.
const POW2_SHIFT: f64 = 6_755_399_441_055_744.0 + 1023.0;

/// The baseline: an array LLVM vectorises as far as the target allows.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C, align(64))]
pub(crate) struct Portable(pub [f64; LANES]);

/// A [`Portable`] mask.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C, align(64))]
pub(crate) struct PortableMask([u64; LANES]);

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
    /// Plain floats run on every CPU: nothing to prove.
    type Isa = ();
    type Mask = PortableMask;

    #[inline(always)]
    fn splat((): (), value: f64) -> Self {
        Portable([value; LANES])
    }
    #[inline(always)]
    fn from_array((): (), values: [f64; LANES]) -> Self {
        Portable(values)
    }
    #[inline(always)]
    fn to_array(self) -> [f64; LANES] {
        self.0
    }
    #[inline(always)]
    fn isa(self) {}
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
    fn mul_add(self, b: Self, c: Self) -> Self {
        let mut out = [0.0; LANES];
        for l in 0..LANES {
            out[l] = self.0[l].mul_add(b.0[l], c.0[l]);
        }
        Portable(out)
    }
    #[inline(always)]
    fn shift_to_exponent(self) -> Self {
        Portable(self.0.map(|x| f64::from_bits(x.to_bits() << 52)))
    }
    #[inline(always)]
    fn max_or_rhs(self, rhs: Self) -> Self {
        let mut out = rhs.0;
        for l in 0..LANES {
            if self.0[l] > rhs.0[l] {
                out[l] = self.0[l];
            }
        }
        Portable(out)
    }
    #[inline(always)]
    fn zero_where(self, mask: PortableMask) -> Self {
        let mut out = [0.0; LANES];
        for l in 0..LANES {
            out[l] = f64::from_bits(self.0[l].to_bits() & !mask.0[l]);
        }
        Portable(out)
    }
    #[inline(always)]
    fn stream(self, out: &mut [f64]) {
        out.copy_from_slice(&self.0);
    }
    #[inline(always)]
    fn stream_fence((): ()) {}
}

/// Which vector unit the lane loops run on, with the proof that this CPU has it.
#[derive(Clone, Copy, Debug)]
pub enum Simd {
    /// The target's baseline (SSE2 on x86-64): runs anywhere.
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2(x86::Avx2Isa),
    #[cfg(target_arch = "x86_64")]
    Avx512(x86::Avx512Isa),
}

impl PartialEq for Simd {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Simd {
    pub fn name(self) -> &'static str {
        match self {
            Simd::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2(_) => "avx2",
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512(_) => "avx512",
        }
    }

    /// Every unit this CPU can run, best last: the only place a token is minted.
    pub fn available() -> Vec<Simd> {
        #[allow(unused_mut)] // other targets have only the portable path
        let mut units = vec![Simd::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                units.push(Simd::Avx2(x86::Avx2Isa(())));
            }
            if is_x86_feature_detected!("avx512f") {
                units.push(Simd::Avx512(x86::Avx512Isa(())));
            }
        }
        units
    }

    /// The best unit this CPU can run.
    pub fn detect() -> Simd {
        Simd::available().pop().unwrap_or(Simd::Portable)
    }

    /// The unit called `name` (`"portable"`, `"avx2"`, `"avx512"`), if this CPU has it.
    pub fn named(name: &str) -> Result<Simd> {
        let units = Simd::available();
        units.iter().copied().find(|unit| unit.name() == name).ok_or_else(|| {
            let names: Vec<&str> = units.iter().map(|unit| unit.name()).collect();
            Error::invalid(format!("simd must be one of {names:?} on this CPU, got '{name}'"))
        })
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};
#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2Isa, Avx512Isa};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Vector, LANES};
    use std::arch::x86_64::*;
    use std::ops::{Add, BitAnd, BitOr, Div, Mul, Not, Sub};

    /// Proof that this CPU has AVX2 and FMA; minted only by `Simd::available` after detection.
    #[derive(Clone, Copy, Debug)]
    pub struct Avx2Isa(pub(super) ());

    /// Proof that this CPU has AVX-512F (which includes 512-bit FMA); minted only by
    /// `Simd::available` after detection.
    #[derive(Clone, Copy, Debug)]
    pub struct Avx512Isa(pub(super) ());

    /// Eight lanes in two AVX2 registers. Exists only where an [`Avx2Isa`] does.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx2([__m256d; 2]);

    /// An [`Avx2`] mask: all-ones lanes in two registers, made only from `Avx2` values.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx2Mask([__m256d; 2]);

    macro_rules! avx2_binary {
        ($type:ident, $trait:ident, $method:ident, $intrinsic:ident) => {
            impl $trait for $type {
                type Output = $type;
                #[inline(always)]
                fn $method(self, rhs: $type) -> $type {
                    // SAFETY: `self` is an AVX2 value, and those exist only on CPUs with AVX2.
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
            // SAFETY: `self` is an AVX2 mask, and those exist only on CPUs with AVX2.
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
                // SAFETY: `self` is an AVX2 value, and those exist only on CPUs with AVX2.
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
        type Isa = Avx2Isa;
        type Mask = Avx2Mask;

        #[inline(always)]
        fn splat(_: Avx2Isa, value: f64) -> Self {
            // SAFETY: the caller holds an `Avx2Isa`, minted only after AVX2 was detected.
            unsafe { Avx2([_mm256_set1_pd(value); 2]) }
        }
        #[inline(always)]
        fn from_array(_: Avx2Isa, values: [f64; LANES]) -> Self {
            // SAFETY: the caller holds an `Avx2Isa` (AVX2 was detected); the two unaligned
            // loads read the array's eight values, 0..4 and 4..8.
            unsafe { Avx2([_mm256_loadu_pd(values.as_ptr()), _mm256_loadu_pd(values.as_ptr().add(4))]) }
        }
        #[inline(always)]
        fn to_array(self) -> [f64; LANES] {
            let mut out = [0.0; LANES];
            // SAFETY: `self` is an AVX2 value (AVX2 was detected); the two unaligned stores
            // write the array's eight values, 0..4 and 4..8.
            unsafe {
                _mm256_storeu_pd(out.as_mut_ptr(), self.0[0]);
                _mm256_storeu_pd(out.as_mut_ptr().add(4), self.0[1]);
            }
            out
        }
        #[inline(always)]
        fn isa(self) -> Avx2Isa {
            Avx2Isa(())
        }
        avx2_comparison!(lt, _CMP_LT_OQ);
        avx2_comparison!(le, _CMP_LE_OQ);
        avx2_comparison!(gt, _CMP_GT_OQ);
        avx2_comparison!(ge, _CMP_GE_OQ);
        avx2_comparison!(eq, _CMP_EQ_OQ);

        #[inline(always)]
        fn select(mask: Avx2Mask, a: Self, b: Self) -> Self {
            // SAFETY: `a` is an AVX2 value, and those exist only on CPUs with AVX2.
            unsafe { Avx2([_mm256_blendv_pd(b.0[0], a.0[0], mask.0[0]), _mm256_blendv_pd(b.0[1], a.0[1], mask.0[1])]) }
        }
        #[inline(always)]
        fn any(mask: Avx2Mask) -> bool {
            // SAFETY: `mask` is an AVX2 mask, and those exist only on CPUs with AVX2.
            unsafe { (_mm256_movemask_pd(mask.0[0]) | _mm256_movemask_pd(mask.0[1])) != 0 }
        }
        #[inline(always)]
        fn mul_add(self, b: Self, c: Self) -> Self {
            // SAFETY: `self` is an AVX2 value, and those exist only on CPUs with AVX2 and FMA.
            unsafe { Avx2([_mm256_fmadd_pd(self.0[0], b.0[0], c.0[0]), _mm256_fmadd_pd(self.0[1], b.0[1], c.0[1])]) }
        }
        #[inline(always)]
        fn shift_to_exponent(self) -> Self {
            // SAFETY: `self` is an AVX2 value, and those exist only on CPUs with AVX2.
            unsafe {
                let one = |x: __m256d| _mm256_castsi256_pd(_mm256_slli_epi64::<52>(_mm256_castpd_si256(x)));
                Avx2([one(self.0[0]), one(self.0[1])])
            }
        }
        #[inline(always)]
        fn max_or_rhs(self, rhs: Self) -> Self {
            // SAFETY: `self` is an AVX2 value, and those exist only on CPUs with AVX2.
            unsafe { Avx2([_mm256_max_pd(self.0[0], rhs.0[0]), _mm256_max_pd(self.0[1], rhs.0[1])]) }
        }
        #[inline(always)]
        fn zero_where(self, mask: Avx2Mask) -> Self {
            // SAFETY: `self` is an AVX2 value, and those exist only on CPUs with AVX2.
            unsafe { Avx2([_mm256_andnot_pd(mask.0[0], self.0[0]), _mm256_andnot_pd(mask.0[1], self.0[1])]) }
        }
        #[inline(always)]
        fn stream(self, out: &mut [f64]) {
            assert_eq!(out.len(), LANES);
            let ptr = out.as_mut_ptr();
            // SAFETY: `self` is an AVX2 value (AVX2 was detected); `out` holds eight values,
            // 0..4 and 4..8 are written, with the aligned streaming store only where `ptr` is
            // 64-byte aligned (so both halves are 32-byte aligned, as it requires).
            unsafe {
                if (ptr as usize).is_multiple_of(64) {
                    _mm256_stream_pd(ptr, self.0[0]);
                    _mm256_stream_pd(ptr.add(4), self.0[1]);
                } else {
                    _mm256_storeu_pd(ptr, self.0[0]);
                    _mm256_storeu_pd(ptr.add(4), self.0[1]);
                }
            }
        }
        #[inline(always)]
        fn stream_fence(_: Avx2Isa) {
            // SAFETY: `sfence` is SSE, which every x86-64 CPU has.
            unsafe { _mm_sfence() }
        }
    }

    /// Eight lanes in one AVX-512 register. Exists only where an [`Avx512Isa`] does.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx512(__m512d);

    /// An [`Avx512`] mask: one bit per lane (plain integer logic, no instruction to guard).
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx512Mask(__mmask8);

    macro_rules! avx512_binary {
        ($trait:ident, $method:ident, $intrinsic:ident) => {
            impl $trait for Avx512 {
                type Output = Avx512;
                #[inline(always)]
                fn $method(self, rhs: Avx512) -> Avx512 {
                    // SAFETY: `self` is an AVX-512 value, and those exist only on CPUs with AVX-512F.
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
                // SAFETY: `self` is an AVX-512 value, and those exist only on CPUs with AVX-512F.
                unsafe { Avx512Mask(_mm512_cmp_pd_mask::<$predicate>(self.0, rhs.0)) }
            }
        };
    }

    impl Vector for Avx512 {
        type Isa = Avx512Isa;
        type Mask = Avx512Mask;

        #[inline(always)]
        fn splat(_: Avx512Isa, value: f64) -> Self {
            // SAFETY: the caller holds an `Avx512Isa`, minted only after AVX-512F was detected.
            unsafe { Avx512(_mm512_set1_pd(value)) }
        }
        #[inline(always)]
        fn from_array(_: Avx512Isa, values: [f64; LANES]) -> Self {
            // SAFETY: the caller holds an `Avx512Isa` (AVX-512F was detected); the unaligned
            // load reads the array's eight values.
            unsafe { Avx512(_mm512_loadu_pd(values.as_ptr())) }
        }
        #[inline(always)]
        fn to_array(self) -> [f64; LANES] {
            let mut out = [0.0; LANES];
            // SAFETY: `self` is an AVX-512 value (AVX-512F was detected); the unaligned store
            // writes the array's eight values.
            unsafe { _mm512_storeu_pd(out.as_mut_ptr(), self.0) };
            out
        }
        #[inline(always)]
        fn isa(self) -> Avx512Isa {
            Avx512Isa(())
        }
        avx512_comparison!(lt, _CMP_LT_OQ);
        avx512_comparison!(le, _CMP_LE_OQ);
        avx512_comparison!(gt, _CMP_GT_OQ);
        avx512_comparison!(ge, _CMP_GE_OQ);
        avx512_comparison!(eq, _CMP_EQ_OQ);

        #[inline(always)]
        fn select(mask: Avx512Mask, a: Self, b: Self) -> Self {
            // SAFETY: `a` is an AVX-512 value, and those exist only on CPUs with AVX-512F.
            unsafe { Avx512(_mm512_mask_blend_pd(mask.0, b.0, a.0)) }
        }
        #[inline(always)]
        fn any(mask: Avx512Mask) -> bool {
            mask.0 != 0
        }
        #[inline(always)]
        fn mul_add(self, b: Self, c: Self) -> Self {
            // SAFETY: `self` is an AVX-512 value, and those exist only on CPUs with AVX-512F.
            unsafe { Avx512(_mm512_fmadd_pd(self.0, b.0, c.0)) }
        }
        #[inline(always)]
        fn shift_to_exponent(self) -> Self {
            // SAFETY: `self` is an AVX-512 value, and those exist only on CPUs with AVX-512F.
            unsafe { Avx512(_mm512_castsi512_pd(_mm512_slli_epi64::<52>(_mm512_castpd_si512(self.0)))) }
        }
        #[inline(always)]
        fn max_or_rhs(self, rhs: Self) -> Self {
            // SAFETY: `self` is an AVX-512 value, and those exist only on CPUs with AVX-512F.
            unsafe { Avx512(_mm512_max_pd(self.0, rhs.0)) }
        }
        #[inline(always)]
        fn zero_where(self, mask: Avx512Mask) -> Self {
            // SAFETY: `self` is an AVX-512 value, and those exist only on CPUs with AVX-512F.
            unsafe { Avx512(_mm512_maskz_mov_pd(!mask.0, self.0)) }
        }
        #[inline(always)]
        fn stream(self, out: &mut [f64]) {
            assert_eq!(out.len(), LANES);
            let ptr = out.as_mut_ptr();
            // SAFETY: `self` is an AVX-512 value (AVX-512F was detected); `out` holds eight
            // values, written by the aligned streaming store only where `ptr` is 64-byte
            // aligned, as it requires.
            unsafe {
                if (ptr as usize).is_multiple_of(64) {
                    _mm512_stream_pd(ptr, self.0);
                } else {
                    _mm512_storeu_pd(ptr, self.0);
                }
            }
        }
        #[inline(always)]
        fn stream_fence(_: Avx512Isa) {
            // SAFETY: `sfence` is SSE, which every x86-64 CPU has.
            unsafe { _mm_sfence() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise<V: Vector>(isa: V::Isa) -> Vec<[f64; LANES]> {
        let a = V::from_array(isa, std::array::from_fn(|l| l as f64));
        let b = V::splat(isa, 3.5);
        let below = a.lt(b);
        vec![
            (a + b).to_array(),
            (a * b - b).to_array(),
            (a / b).to_array(),
            V::unit(isa, below).to_array(),
            V::unit(isa, below & !a.eq(V::zero(isa))).to_array(),
            V::unit(isa, a.le(b) | a.ge(a.like(7.0))).to_array(),
            V::select(below, a, b).to_array(),
            a.max(b).to_array(),
            a.min(b).to_array(),
            V::from_array(isa, [0.0, -1.0, -1022.0, 5.0, 1023.0, -3.0, 10.0, -700.0]).pow2().to_array(),
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
            a.map(|x| x * x).to_array(),
            a.mul_add(a.like(0.1), a.like(-0.3)).to_array(),
            V::from_array(isa, [0.0, -0.0, 3.0, f64::NAN, 1.0, -2.0, 4.0, 3.5]).max_or_rhs(b).to_array(),
            a.zero_where(a.lt(b)).to_array(),
            {
                let mut out = [0.0; 2 * LANES];
                let start = out.as_ptr().align_offset(64).min(LANES);
                (a + b).stream(&mut out[start..start + LANES]);
                V::stream_fence(isa);
                out[start..start + LANES].try_into().unwrap()
            },
        ]
    }

    #[test]
    fn portable_lanes_compute_what_they_say() {
        let out = exercise::<Portable>(());
        assert_eq!(out[0][2], 5.5);
        assert_eq!(out[3], [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(out[4], [0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(out[5], [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
        assert_eq!(out[7], [3.5, 3.5, 3.5, 3.5, 4.0, 5.0, 6.0, 7.0]);
        assert_eq!(out[8][7], 3.5);
        let powers = [0.0, -1.0, -1022.0, 5.0, 1023.0, -3.0, 10.0, -700.0].map(|k: f64| k.exp2());
        assert_eq!(out[9], powers);
        assert_eq!(&out[10][..2], &[1.0, 0.0]);
        assert_eq!(out[11][3], 9.0);
        // 3 * 0.1 - 0.3 with one rounding is 2.78e-17; rounded twice, 5.55e-17.
        assert_eq!(out[12][3], 3.0f64.mul_add(0.1, -0.3));
        assert_ne!(out[12][3], 3.0 * 0.1 - 0.3);
        assert_eq!(out[13].map(f64::to_bits), [3.5, 3.5, 3.5, 3.5, 3.5, 3.5, 4.0, 3.5].map(f64::to_bits));
        assert_eq!(out[14], [0.0, 0.0, 0.0, 0.0, 4.0, 5.0, 6.0, 7.0]);
        assert_eq!(out[15], out[0]);
    }

    #[test]
    fn every_available_vector_unit_agrees_with_the_portable_one() {
        let portable = exercise::<Portable>(());
        for unit in Simd::available() {
            let out = match unit {
                Simd::Portable => exercise::<Portable>(()),
                #[cfg(target_arch = "x86_64")]
                Simd::Avx2(isa) => {
                    #[target_feature(enable = "avx2,fma")]
                    fn run(isa: x86::Avx2Isa) -> Vec<[f64; LANES]> {
                        exercise::<Avx2>(isa)
                    }
                    // SAFETY: `isa` was minted by `Simd::available` after detecting AVX2 and FMA.
                    unsafe { run(isa) }
                }
                #[cfg(target_arch = "x86_64")]
                Simd::Avx512(isa) => {
                    #[target_feature(enable = "avx512f")]
                    fn run(isa: x86::Avx512Isa) -> Vec<[f64; LANES]> {
                        exercise::<Avx512>(isa)
                    }
                    // SAFETY: `isa` was minted by `Simd::available` after detecting AVX-512F.
                    unsafe { run(isa) }
                }
            };
            assert_eq!(out, portable, "{}", unit.name());
        }
    }

    #[test]
    fn units_are_found_by_name() {
        assert_eq!(Simd::named("portable").unwrap(), Simd::Portable);
        assert_eq!(Simd::named(Simd::detect().name()).unwrap(), Simd::detect());
        assert!(Simd::named("neon").unwrap_err().to_string().contains("simd must be one of"));
    }
}
