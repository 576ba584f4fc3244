//! The logistic function and its log-partner softplus, stable for any finite input.

/// `1 / (1 + e^-z)` for `z >= 0`, else `e^z / (1 + e^z)`, both from `e^-|z|`. Choosing the
/// numerator instead of the branch keeps a sign change of `z` (frequent in training loops)
/// from mispredicting.
#[inline]
pub fn sigmoid(z: f64) -> f64 {
    let e = (-z.abs()).exp();
    let numerator = if z >= 0.0 { 1.0 } else { e };
    numerator / (1.0 + e)
}

/// `ln(1 + e^z)` without overflow: `-log sigmoid(m)` is `softplus(-m)`.
#[inline]
pub fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// [`sigmoid`] and [`softplus`] at `h` and `-h` from one exponential: all four exponentiate
/// `-|h|`, so sharing `e = exp(-|h|)` and `ln_1p(e)` gives each one's value bit for bit.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Logistic {
    e: f64,
    ln_1p_e: f64,
}

impl Logistic {
    #[inline(always)]
    pub(crate) fn at(h: f64) -> Self {
        let e = (-h.abs()).exp();
        Logistic { e, ln_1p_e: e.ln_1p() }
    }

    /// `softplus(z)` for `z = h` or `z = -h`.
    #[inline(always)]
    pub(crate) fn softplus(self, z: f64) -> f64 {
        z.max(0.0) + self.ln_1p_e
    }

    /// `sigmoid(z)` for `z = h` or `z = -h`.
    #[inline(always)]
    pub(crate) fn sigmoid(self, z: f64) -> f64 {
        if z >= 0.0 {
            1.0 / (1.0 + self.e)
        } else {
            self.e / (1.0 + self.e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Mt19937;

    #[test]
    fn sigmoid_is_stable_and_symmetric() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert_eq!(sigmoid(1e4), 1.0);
        assert_eq!(sigmoid(-1e4), 0.0);
        assert!((sigmoid(3.0) + sigmoid(-3.0) - 1.0).abs() < 1e-15);
    }

    #[test]
    fn softplus_matches_the_naive_formula_where_it_does_not_overflow() {
        for z in [-30.0, -1.0, 0.0, 2.5, 30.0] {
            assert!((softplus(z) - (1.0 + f64::exp(z)).ln()).abs() < 1e-12);
        }
        assert_eq!(softplus(1e4), 1e4);
    }

    #[test]
    fn shared_exponentials_give_the_same_bits() {
        let mut rng = Mt19937::from_seed(2);
        let mut hs = vec![0.0, -0.0, 1e-300, -1e-300, 5e-324, 1.0, -1.0, 36.7, -36.7, 709.0, -745.0, 1e4, -1e4, 1e308];
        hs.extend((0..2000).map(|_| (rng.random() - 0.5) * 10f64.powf(rng.random() * 6.0 - 3.0)));
        for h in hs {
            let f = Logistic::at(h);
            for z in [h, -h] {
                assert_eq!(f.softplus(z).to_bits(), softplus(z).to_bits(), "softplus({z})");
                assert_eq!(f.sigmoid(z).to_bits(), sigmoid(z).to_bits(), "sigmoid({z})");
            }
        }
    }
}
