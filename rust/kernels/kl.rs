//! KL(p || q) exactly, and Schulman's sampled estimators k1, k2, k3.
//!
//! For a token `a` drawn from the policy, `log r = log q(a) - log p(a)`:
//! `k1 = -log r` (unbiased, can be negative), `k2 = (log r)^2 / 2` (biased, low variance),
//! `k3 = (r - 1) - log r` (unbiased, low variance, never negative).

use crate::error::{finite, probabilities, Error, Result};

/// Past this log-ratio `k3` is reported infinite, as the reference reports it (`e^x`
/// overflows a double a little above 709.78).
pub(crate) const K3_LOG_RATIO_LIMIT: f64 = 709.0;

/// `sum p_i (ln p_i - ln q_i)` with `0 ln 0 = 0`; infinite where `q_i = 0 < p_i`.
pub(crate) fn kl_unchecked(p: &[f64], q: &[f64]) -> f64 {
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
pub(crate) fn kl_to_log(p: &[f64], ln_q: &[f64]) -> f64 {
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
    Ok(KlPenalty::K1.value(0.0, finite("logp", logp)?, finite("logq", logq)?))
}

pub fn kl_k2(logp: f64, logq: f64) -> Result<f64> {
    let logq = finite("logq", logq)?;
    Ok(KlPenalty::K2.value(0.0, finite("logp", logp)?, logq))
}

pub fn kl_k3(logp: f64, logq: f64) -> Result<f64> {
    let logq = finite("logq", logq)?;
    Ok(KlPenalty::K3.value(0.0, finite("logp", logp)?, logq))
}

/// Which KL enters a reward (TRL's `kl_penalty`): the exact one, or Schulman's estimators on
/// the sampled token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KlPenalty {
    Full,
    K1,
    K2,
    K3,
}

impl KlPenalty {
    pub const NAMES: [&'static str; 4] = ["full", "k1", "k2", "k3"];

    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "full" => Ok(KlPenalty::Full),
            "k1" => Ok(KlPenalty::K1),
            "k2" => Ok(KlPenalty::K2),
            "k3" => Ok(KlPenalty::K3),
            other => {
                Err(Error::invalid(format!("kl_penalty must be one of ('full', 'k1', 'k2', 'k3'), got '{other}'")))
            }
        }
    }

    /// The penalty for a sampled token, given the exact KL and the token's log-probabilities
    /// under the policy (`logp`) and the reference (`logq`).
    #[inline]
    pub fn value(self, exact_kl: f64, logp: f64, logq: f64) -> f64 {
        let log_ratio = logq - logp;
        match self {
            KlPenalty::Full => exact_kl,
            KlPenalty::K1 => logp - logq,
            KlPenalty::K2 => 0.5 * log_ratio * log_ratio,
            KlPenalty::K3 if log_ratio > K3_LOG_RATIO_LIMIT => f64::INFINITY,
            KlPenalty::K3 => log_ratio.exp_m1() - log_ratio,
        }
    }
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
        assert_eq!(kl_to_log(&[0.0, 1.0], &[f64::NEG_INFINITY, 0.0]), 0.0);
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
        assert_eq!(kl_k3(-800.0, 0.0).unwrap(), f64::INFINITY);
    }

    #[test]
    fn penalties_are_parsed_by_their_trl_names() {
        for (name, kind) in KlPenalty::NAMES.iter().zip([KlPenalty::Full, KlPenalty::K1, KlPenalty::K2, KlPenalty::K3])
        {
            assert_eq!(KlPenalty::parse(name).unwrap(), kind);
        }
        assert!(KlPenalty::parse("k4").unwrap_err().to_string().contains("kl_penalty"));
        assert_eq!(KlPenalty::Full.value(0.7, -1.0, -2.0), 0.7);
    }

    #[test]
    fn rejects_bad_probabilities() {
        assert!(kl(&[0.5, 0.6], &[0.5, 0.5]).unwrap_err().to_string().contains("p must sum to 1"));
        assert!(kl(&[1.0], &[0.5, 0.5]).is_err());
        assert!(kl(&[1.5, -0.5], &[0.5, 0.5]).unwrap_err().to_string().contains("non-negative"));
        assert!(kl_k3(f64::NAN, 0.0).is_err());
    }
}
