//! Softmax and log-softmax with the max subtracted first, summed left to right.

use crate::error::{finite_slice, Result};

fn max(z: &[f64]) -> f64 {
    z.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// `exp(z - max z) / sum`, written into `out` (same length as `z`). Inputs must be finite.
pub fn softmax_into(z: &[f64], out: &mut [f64]) {
    let m = max(z);
    let mut total = 0.0;
    for (o, &v) in out.iter_mut().zip(z) {
        *o = (v - m).exp();
        total += *o;
    }
    for o in out.iter_mut() {
        *o /= total;
    }
}

/// `z - logsumexp(z)`, written into `out`. Inputs must be finite.
pub fn log_softmax_into(z: &[f64], out: &mut [f64]) {
    let m = max(z);
    let mut total = 0.0;
    for (o, &v) in out.iter_mut().zip(z) {
        *o = v - m;
        total += o.exp();
    }
    let lse = total.ln();
    for o in out.iter_mut() {
        *o -= lse;
    }
}

/// Checked [`softmax_into`]: `z` must be non-empty and finite.
pub fn softmax(z: &[f64]) -> Result<Vec<f64>> {
    finite_slice("z", z)?;
    let mut out = vec![0.0; z.len()];
    softmax_into(z, &mut out);
    Ok(out)
}

/// Checked [`log_softmax_into`]: `z` must be non-empty and finite.
pub fn log_softmax(z: &[f64]) -> Result<Vec<f64>> {
    finite_slice("z", z)?;
    let mut out = vec![0.0; z.len()];
    log_softmax_into(z, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_for_equal_logits() {
        assert_eq!(softmax(&[3.0; 4]).unwrap(), vec![0.25; 4]);
    }

    #[test]
    fn shift_invariant_and_stable_for_huge_logits() {
        let a = softmax(&[1.0, 2.0, 3.0]).unwrap();
        let b = softmax(&[1e4 + 1.0, 1e4 + 2.0, 1e4 + 3.0]).unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-12);
        }
        let c = softmax(&[-1e4, 1e4]).unwrap();
        assert_eq!(c, vec![0.0, 1.0]);
    }

    #[test]
    fn log_softmax_is_log_of_softmax() {
        let z = [0.5, -2.0, 7.0, 0.0];
        let p = softmax(&z).unwrap();
        let lp = log_softmax(&z).unwrap();
        for (x, y) in p.iter().zip(&lp) {
            assert!((x.ln() - y).abs() < 1e-12);
        }
        assert_eq!(log_softmax(&[-1e4, 1e4]).unwrap(), vec![-2e4, 0.0]);
    }

    #[test]
    fn rejects_empty_and_non_finite() {
        assert!(softmax(&[]).is_err());
        assert!(softmax(&[1.0, f64::NAN]).unwrap_err().to_string().contains("z[1]"));
        assert!(log_softmax(&[f64::INFINITY]).is_err());
    }
}
