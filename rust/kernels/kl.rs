//! KL(p || q) exactly, and Schulman's sampled estimators k1, k2, k3.
//!
//! For a token `a` drawn from the policy, `log r = log q(a) - log p(a)`:
//! `k1 = -log r` (unbiased, can be negative), `k2 = (log r)^2 / 2` (biased, low variance),
//! `k3 = (r - 1) - log r` (unbiased, low variance, never negative).

use crate::error::{finite, probabilities, Error, Result};

/// `sum p_i (ln p_i - ln q_i)` with `0 ln 0 = 0`; infinite where `q_i = 0 < p_i`.
pub fn kl_unchecked(p: &[f64], q: &[f64]) -> f64 {
    let mut total = 0.0;
    for (&pi, &qi) in p.iter().zip(q) {
        if pi > 0.0 {
            total += if qi > 0.0 { pi * (pi.ln() - qi.ln()) } else { f64::INFINITY };
        }
    }
    total
}

/// `KL(p || q)` from `ln q`: finite where `q` underflows to 0 but its logarithm does not.
#[inline]
pub fn kl_to_log(p: &[f64], ln_q: &[f64]) -> f64 {
    let mut total = 0.0;
    for (&pi, &ln_qi) in p.iter().zip(ln_q) {
        if pi > 0.0 {
            total += pi * (pi.ln() - ln_qi);
        }
    }
    total
}

/// Checked [`kl_unchecked`]: both arguments probability vectors of one length.
pub fn kl(p: &[f64], q: &[f64]) -> Result<f64> {
    probabilities("p", p)?;
    probabilities("q", q)?;
    if p.len() != q.len() {
        return Err(Error::invalid(format!("p and q must have the same length, got {} and {}", p.len(), q.len())));
    }
    Ok(kl_unchecked(p, q))
}

pub fn kl_k1(logp: f64, logq: f64) -> Result<f64> {
    Ok(finite("logp", logp)? - finite("logq", logq)?)
}

pub fn kl_k2(logp: f64, logq: f64) -> Result<f64> {
    let log_ratio = finite("logq", logq)? - finite("logp", logp)?;
    Ok(0.5 * log_ratio * log_ratio)
}

pub fn kl_k3(logp: f64, logq: f64) -> Result<f64> {
    let log_ratio = finite("logq", logq)? - finite("logp", logp)?;
    if log_ratio > 709.0 {
        return Ok(f64::INFINITY); // e^710 overflows: the reference says infinity too
    }
    Ok(log_ratio.exp_m1() - log_ratio)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_for_equal_positive_otherwise() {
        let p = [0.2, 0.3, 0.5];
        assert_eq!(kl(&p, &p).unwrap(), 0.0);
        assert!(kl(&p, &[0.5, 0.3, 0.2]).unwrap() > 0.0);
    }

    #[test]
    fn zero_log_zero_is_zero_and_missing_support_is_infinite() {
        assert_eq!(kl(&[0.0, 1.0], &[0.5, 0.5]).unwrap(), 2f64.ln());
        assert_eq!(kl(&[0.5, 0.5], &[0.0, 1.0]).unwrap(), f64::INFINITY);
    }

    #[test]
    fn estimators_average_to_the_exact_kl() {
        let p = [0.1, 0.6, 0.3];
        let q = [0.3, 0.3, 0.4];
        let exact = kl(&p, &q).unwrap();
        let (mut e1, mut e3) = (0.0, 0.0);
        for i in 0..3 {
            e1 += p[i] * kl_k1(p[i].ln(), q[i].ln()).unwrap();
            e3 += p[i] * kl_k3(p[i].ln(), q[i].ln()).unwrap();
            assert!(kl_k2(p[i].ln(), q[i].ln()).unwrap() >= 0.0);
        }
        assert!((e1 - exact).abs() < 1e-12);
        assert!((e3 - exact).abs() < 1e-12);
    }

    #[test]
    fn rejects_bad_probabilities() {
        assert!(kl(&[0.5, 0.6], &[0.5, 0.5]).unwrap_err().to_string().contains("p must sum to 1"));
        assert!(kl(&[1.0], &[0.5, 0.5]).is_err());
        assert!(kl(&[1.5, -0.5], &[0.5, 0.5]).unwrap_err().to_string().contains("non-negative"));
        assert!(kl_k3(f64::NAN, 0.0).is_err());
    }
}
