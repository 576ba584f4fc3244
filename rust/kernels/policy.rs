//! A policy as a table of logits, `[n_prompts, vocab_size]` row-major, and the exact
//! statistics every method reports of one: its expected reward and its KL to a reference.

use crate::error::{finite_slice, Error, Result};
use crate::kernels::kl::kl_to_log;
use crate::kernels::softmax::{log_softmax_row, softmax_row};

/// A table of whole, finite rows of `vocab_size` logits; returns the number of rows.
pub(crate) fn check_table(name: &str, table: &[f64], vocab_size: usize) -> Result<usize> {
    if vocab_size == 0 || table.is_empty() || !table.len().is_multiple_of(vocab_size) {
        return Err(Error::invalid(format!(
            "{name} must hold whole rows of {vocab_size} logits, got {} values",
            table.len()
        )));
    }
    finite_slice(name, table)?;
    Ok(table.len() / vocab_size)
}

/// [`check_table`] for a policy and its reference, which must have the same shape.
pub(crate) fn check_policy_pair(theta: &[f64], reference: &[f64], vocab_size: usize) -> Result<usize> {
    let n_prompts = check_table("theta", theta, vocab_size)?;
    if check_table("ref", reference, vocab_size)? != n_prompts {
        return Err(Error::invalid("ref must have the same shape as theta"));
    }
    Ok(n_prompts)
}

/// Exact `KL(pi_theta || pi_ref)` averaged over the prompts, in log space.
pub fn policy_kl(theta: &[f64], reference: &[f64], vocab_size: usize) -> Result<f64> {
    let n_prompts = check_policy_pair(theta, reference, vocab_size)?;
    let (mut p, mut ln_q) = (vec![0.0; vocab_size], vec![0.0; vocab_size]);
    let mut total = 0.0;
    for (row, ref_row) in theta.chunks_exact(vocab_size).zip(reference.chunks_exact(vocab_size)) {
        softmax_row(row, &mut p);
        log_softmax_row(ref_row, &mut ln_q);
        total += kl_to_log(&p, &ln_q);
    }
    Ok(total / n_prompts as f64)
}

/// Exact expected reward of a policy: `sum_x sum_a pi(a|x) w[a] / n_prompts`.
pub fn expected_score(theta: &[f64], weights: &[f64]) -> Result<f64> {
    let vocab_size = weights.len();
    finite_slice("w", weights)?;
    let n_prompts = check_table("theta", theta, vocab_size)?;
    let mut p = vec![0.0; vocab_size];
    let mut total = 0.0;
    for row in theta.chunks_exact(vocab_size) {
        softmax_row(row, &mut p);
        let mut per_prompt = 0.0;
        for (&pa, &wa) in p.iter().zip(weights) {
            per_prompt += pa * wa;
        }
        total += per_prompt;
    }
    Ok(total / n_prompts as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uniform_policy_scores_the_mean_weight_at_kl_zero() {
        let weights = [1.0, -1.0, 3.0, 0.0];
        assert_eq!(expected_score(&[0.0; 8], &weights).unwrap(), 0.75);
        assert_eq!(policy_kl(&[0.0; 8], &[5.0; 8], 4).unwrap(), 0.0);
        let peaked = [0.0, 0.0, 1e4, 0.0];
        assert_eq!(expected_score(&peaked, &weights).unwrap(), 3.0);
        assert!((policy_kl(&peaked, &[0.0; 4], 4).unwrap() - 4f64.ln()).abs() < 1e-15);
    }

    #[test]
    fn bad_tables_are_named() {
        assert!(check_table("theta", &[0.0; 7], 4).unwrap_err().to_string().contains("theta must hold whole rows"));
        assert!(check_table("ref", &[0.0, f64::NAN], 2).unwrap_err().to_string().contains("ref[1]"));
        assert!(check_policy_pair(&[0.0; 8], &[0.0; 4], 4).unwrap_err().to_string().contains("same shape"));
        assert!(expected_score(&[0.0; 8], &[f64::INFINITY; 4]).unwrap_err().to_string().contains("w[0]"));
    }
}
