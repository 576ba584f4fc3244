//! A tiny vector type for the sweep engine: one f64 per run of a group.
//!
//! Every operation is an element-wise loop over a fixed-size array, the shape LLVM turns
//! into whatever vector instructions the enclosing function was compiled for (SSE2, AVX2 or
//! AVX-512 under `#[target_feature]`). Masks are bit patterns and selects are bitwise, so
//! no per-lane branch survives to stop that.

// Index loops over lanes are the shape LLVM turns into vector instructions.
#![allow(clippy::needless_range_loop)]

use std::ops::{Add, AddAssign, BitAnd, BitOr, Div, Mul, Not, Sub};

/// Runs per group: one AVX-512 register of f64, two AVX2 ones.
pub const LANES: usize = 8;

/// One f64 per lane.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C, align(64))]
pub struct F64s(pub [f64; LANES]);

/// One all-ones or all-zeros bit pattern per lane.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C, align(64))]
pub struct Mask([u64; LANES]);

macro_rules! elementwise {
    ($trait:ident, $method:ident, $op:tt) => {
        impl $trait for F64s {
            type Output = F64s;
            #[inline(always)]
            fn $method(self, rhs: F64s) -> F64s {
                let mut out = [0.0; LANES];
                for l in 0..LANES {
                    out[l] = self.0[l] $op rhs.0[l];
                }
                F64s(out)
            }
        }
    };
}
elementwise!(Add, add, +);
elementwise!(Sub, sub, -);
elementwise!(Mul, mul, *);
elementwise!(Div, div, /);

impl AddAssign for F64s {
    #[inline(always)]
    fn add_assign(&mut self, rhs: F64s) {
        *self = *self + rhs;
    }
}

macro_rules! comparison {
    ($method:ident, $op:tt) => {
        #[inline(always)]
        pub fn $method(self, rhs: F64s) -> Mask {
            let mut out = [0u64; LANES];
            for l in 0..LANES {
                out[l] = if self.0[l] $op rhs.0[l] { u64::MAX } else { 0 };
            }
            Mask(out)
        }
    };
}

impl F64s {
    pub const ZERO: F64s = F64s([0.0; LANES]);

    #[inline(always)]
    pub fn splat(value: f64) -> F64s {
        F64s([value; LANES])
    }

    #[inline(always)]
    pub fn from_fn(f: impl FnMut(usize) -> f64) -> F64s {
        F64s(std::array::from_fn(f))
    }

    /// `f` on every lane (inlined, so a branch-free `f` vectorises).
    #[inline(always)]
    pub fn map(self, f: impl Fn(f64) -> f64) -> F64s {
        let mut out = [0.0; LANES];
        for l in 0..LANES {
            out[l] = f(self.0[l]);
        }
        F64s(out)
    }

    comparison!(lt, <);
    comparison!(le, <=);
    comparison!(gt, >);
    comparison!(ge, >=);
    comparison!(eq, ==);

    /// The larger of each pair, `self` on ties (Python's `max` keeps the first).
    #[inline(always)]
    pub fn max(self, rhs: F64s) -> F64s {
        rhs.gt(self).select(rhs, self)
    }

    /// The smaller of each pair, `self` on ties.
    #[inline(always)]
    pub fn min(self, rhs: F64s) -> F64s {
        rhs.lt(self).select(rhs, self)
    }
}

impl Mask {
    pub const NONE: Mask = Mask([0; LANES]);
    pub const ALL: Mask = Mask([u64::MAX; LANES]);

    /// `if mask { a } else { b }` per lane, with bit operations.
    #[inline(always)]
    pub fn select(self, a: F64s, b: F64s) -> F64s {
        let mut out = [0.0; LANES];
        for l in 0..LANES {
            out[l] = f64::from_bits((a.0[l].to_bits() & self.0[l]) | (b.0[l].to_bits() & !self.0[l]));
        }
        F64s(out)
    }

    /// 1.0 where set, 0.0 elsewhere.
    #[inline(always)]
    pub fn to_unit(self) -> F64s {
        self.select(F64s::splat(1.0), F64s::ZERO)
    }

    #[inline(always)]
    pub fn any(self) -> bool {
        self.0.iter().fold(0, |acc, &m| acc | m) != 0
    }

    #[inline(always)]
    pub fn test(self, lane: usize) -> bool {
        self.0[lane] != 0
    }
}

impl BitAnd for Mask {
    type Output = Mask;
    #[inline(always)]
    fn bitand(self, rhs: Mask) -> Mask {
        Mask(std::array::from_fn(|l| self.0[l] & rhs.0[l]))
    }
}

impl BitOr for Mask {
    type Output = Mask;
    #[inline(always)]
    fn bitor(self, rhs: Mask) -> Mask {
        Mask(std::array::from_fn(|l| self.0[l] | rhs.0[l]))
    }
}

impl Not for Mask {
    type Output = Mask;
    #[inline(always)]
    fn not(self) -> Mask {
        Mask(std::array::from_fn(|l| !self.0[l]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_comparisons_and_selects_are_per_lane() {
        let a = F64s::from_fn(|l| l as f64);
        let b = F64s::splat(3.5);
        assert_eq!((a + b).0[2], 5.5);
        assert_eq!((a * b - b).0[1], 0.0);
        let below = a.lt(b);
        assert_eq!(below.to_unit().0, [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(below.select(a, b).0[5], 3.5);
        assert_eq!(a.max(b).0, [3.5, 3.5, 3.5, 3.5, 4.0, 5.0, 6.0, 7.0]);
        assert_eq!(a.min(b).0[7], 3.5);
        assert!((below & !a.eq(F64s::ZERO)).test(1));
        assert!(!(below & !below).any());
        assert!((Mask::NONE | Mask::ALL).any());
    }
}
