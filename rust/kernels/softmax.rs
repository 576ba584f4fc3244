//! Softmax and log-softmax of a row of logits, the max subtracted first, summed left to right.

use crate::error::{finite_slice, Result};

fn max(z: &[f64]) -> f64 {
    z.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// `exp(z - max z) / sum`, written into `out` (same length as `z`). Inputs must be finite.
#[inline]
pub fn softmax_row(z: &[f64], out: &mut [f64]) {
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
#[inline]
pub fn log_softmax_row(z: &[f64], out: &mut [f64]) {
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

/// [`softmax_row`] and [`log_softmax_row`] of one row at once: both exponentiate `z - max z`
/// and sum left to right, so one pass of `exp` serves both, bit for bit.
#[inline]
pub(crate) fn softmax_and_log_softmax_row(z: &[f64], p: &mut [f64], logp: &mut [f64]) {
    let m = max(z);
    let mut total = 0.0;
    for ((&v, pi), lpi) in z.iter().zip(p.iter_mut()).zip(logp.iter_mut()) {
        let shifted = v - m;
        *lpi = shifted;
        *pi = shifted.exp();
        total += *pi;
    }
    let lse = total.ln();
    for (pi, lpi) in p.iter_mut().zip(logp.iter_mut()) {
        *lpi -= lse;
        *pi /= total;
    }
}

/// [`softmax_row`] of every row of a `[rows, vocab_size]` table.
pub(crate) fn softmax_rows(table: &[f64], vocab_size: usize) -> Vec<f64> {
    let mut out = vec![0.0; table.len()];
    for (row, dst) in table.chunks_exact(vocab_size).zip(out.chunks_exact_mut(vocab_size)) {
        softmax_row(row, dst);
    }
    out
}

/// [`log_softmax_row`] of every row of a `[rows, vocab_size]` table.
pub(crate) fn log_softmax_rows(table: &[f64], vocab_size: usize) -> Vec<f64> {
    let mut out = vec![0.0; table.len()];
    for (row, dst) in table.chunks_exact(vocab_size).zip(out.chunks_exact_mut(vocab_size)) {
        log_softmax_row(row, dst);
    }
    out
}

/// Checked [`softmax_row`]: `z` must be non-empty and finite.
pub fn softmax(z: &[f64]) -> Result<Vec<f64>> {
    finite_slice("z", z)?;
    let mut out = vec![0.0; z.len()];
    softmax_row(z, &mut out);
    Ok(out)
}

/// Checked [`log_softmax_row`]: `z` must be non-empty and finite.
pub fn log_softmax(z: &[f64]) -> Result<Vec<f64>> {
    finite_slice("z", z)?;
    let mut out = vec![0.0; z.len()];
    log_softmax_row(z, &mut out);
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
    fn the_fused_row_is_bit_identical_to_the_two_kernels() {
        for z in [[0.3, -1.2, 7.5, 0.0], [1e4, -1e4, 3.0, 2.9], [0.0; 4], [-0.1, 1e-300, 5e-324, 700.0]] {
            let (mut p, mut logp, mut p2, mut logp2) = ([0.0; 4], [0.0; 4], [0.0; 4], [0.0; 4]);
            softmax_and_log_softmax_row(&z, &mut p, &mut logp);
            softmax_row(&z, &mut p2);
            log_softmax_row(&z, &mut logp2);
            assert_eq!((p, logp), (p2, logp2));
        }
    }

    #[test]
    fn tables_are_their_rows() {
        let table = [0.0, 1.0, 2.0, -3.0, 5.0, 5.0];
        let rows = softmax_rows(&table, 3);
        let logs = log_softmax_rows(&table, 3);
        assert_eq!(rows[..3], softmax(&table[..3]).unwrap()[..]);
        assert_eq!(logs[3..], log_softmax(&table[3..]).unwrap()[..]);
    }

    #[test]
    fn rejects_empty_and_non_finite() {
        assert!(softmax(&[]).is_err());
        assert!(softmax(&[1.0, f64::NAN]).unwrap_err().to_string().contains("z[1]"));
        assert!(log_softmax(&[f64::INFINITY]).is_err());
    }
}
