//! A world's tables from its draws, and an AI judge's token values.
//!
//! `rlhf_fast.World` draws, from NumPy's PCG64 stream of its seed, a `[n_prompts, vocab]`
//! table of uniforms (each prompt's order of the tokens), `vocab` shared normals `v` and a
//! `[n_prompts, vocab]` table of per-prompt normals `u`. From them, token `j` of prompt `x`
//! has the reference logit `-zipf * log1p(order[j])`, `order` being the row's uniforms'
//! indices in increasing order (`np.argsort`; equal draws, which PCG64's 53-bit draws make
//! all but impossible, in index order), and the gold value `v[j] + prompt_scale * u[x, j]`.

use super::{check_shape, uniforms};
use crate::error::{finite_slice, non_negative, vec_with_capacity, Error, Result};
use crate::kernels::softmax::log_softmax_row;

/// A world's `[n_prompts, vocab]` tables, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Tables {
    /// The reference (SFT) policy's logits.
    pub ref_logits: Vec<f64>,
    /// The gold value of each token for each prompt.
    pub gold_token: Vec<f64>,
}

/// The tables of a world of `vocab` tokens from its draws (`rank_uniforms` and
/// `prompt_normals` `[n_prompts, vocab]`, `shared_normals` `[vocab]`).
pub fn world_tables(
    rank_uniforms: &[f64],
    vocab: usize,
    shared_normals: &[f64],
    prompt_normals: &[f64],
    zipf: f64,
    prompt_scale: f64,
) -> Result<Tables> {
    if vocab == 0 || !rank_uniforms.len().is_multiple_of(vocab) {
        return Err(Error::invalid(format!(
            "rank_uniforms must hold whole rows of {vocab} draws, got {} draws",
            rank_uniforms.len()
        )));
    }
    uniforms("rank_uniforms", rank_uniforms)?;
    if shared_normals.len() != vocab {
        return Err(Error::invalid(format!(
            "shared_normals must have {vocab} entries (one per token), got {}",
            shared_normals.len()
        )));
    }
    finite_slice("shared_normals", shared_normals)?;
    check_shape("prompt_normals", prompt_normals.len(), rank_uniforms.len() / vocab, vocab)?;
    finite_slice("prompt_normals", prompt_normals)?;
    let zipf = non_negative("zipf", zipf)?;
    let prompt_scale = non_negative("prompt_scale", prompt_scale)?;

    let mut ref_logits = vec_with_capacity(rank_uniforms.len(), "the reference's logits")?;
    let mut order: Vec<usize> = vec_with_capacity(vocab, "a row's order")?;
    for row in rank_uniforms.chunks_exact(vocab) {
        order.clear();
        order.extend(0..vocab);
        order.sort_unstable_by(|&a, &b| row[a].total_cmp(&row[b]).then(a.cmp(&b)));
        ref_logits.extend(order.iter().map(|&rank| -zipf * (rank as f64).ln_1p()));
    }
    let mut gold_token = vec_with_capacity(prompt_normals.len(), "the gold's table")?;
    for row in prompt_normals.chunks_exact(vocab) {
        gold_token.extend(shared_normals.iter().zip(row).map(|(&v, &u)| v + prompt_scale * u));
    }
    Ok(Tables { ref_logits, gold_token })
}

/// The mean and the standard deviation (over `n`, NumPy's `std`) of `values`, summed left
/// to right.
fn mean_and_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mut total = 0.0;
    for &v in values {
        total += v;
    }
    let mean = total / n;
    let mut squares = 0.0;
    for &v in values {
        let centred = v - mean;
        squares += centred * centred;
    }
    (mean, (squares / n).sqrt())
}

/// The spread of the reference's log-probabilities below which it has no familiar tokens.
pub const MIN_SPREAD: f64 = 1e-12;

/// An AI judge's `[n_prompts, vocab]` token values: `rho` times the gold's, plus
/// `sqrt(1 - rho^2)` times `noise` (standard normals, one per entry) at the gold's spread,
/// plus `bias` times the reference's log-probabilities standardised to the gold's spread (a
/// judge that favours familiar text; none when their spread is at most [`MIN_SPREAD`]).
pub fn judge_token_values(
    gold_token: &[f64],
    ref_logits: &[f64],
    vocab: usize,
    noise: &[f64],
    rho: f64,
    bias: f64,
) -> Result<Vec<f64>> {
    if vocab < 2 || !gold_token.len().is_multiple_of(vocab) || gold_token.is_empty() {
        return Err(Error::invalid(format!(
            "gold_token must hold whole rows of {vocab} >= 2 values, got {} values",
            gold_token.len()
        )));
    }
    let rows = gold_token.len() / vocab;
    finite_slice("gold_token", gold_token)?;
    check_shape("ref_logits", ref_logits.len(), rows, vocab)?;
    finite_slice("ref_logits", ref_logits)?;
    check_shape("noise", noise.len(), rows, vocab)?;
    finite_slice("noise", noise)?;
    if !(-1.0..=1.0).contains(&rho) {
        return Err(Error::invalid(format!(
            "rho must be a correlation in [-1, 1], got {}",
            crate::error::py_float(rho)
        )));
    }
    crate::error::finite("bias", bias)?;

    let mut familiar = vec_with_capacity(ref_logits.len(), "the reference's log-probabilities")?;
    familiar.resize(ref_logits.len(), 0.0);
    for (row, out) in ref_logits.chunks_exact(vocab).zip(familiar.chunks_exact_mut(vocab)) {
        log_softmax_row(row, out);
    }
    let (_, gold_std) = mean_and_std(gold_token);
    let (familiar_mean, familiar_std) = mean_and_std(&familiar);
    let noise_weight = (1.0 - rho * rho).sqrt();
    let mut values = vec_with_capacity(gold_token.len(), "the judge's token values")?;
    for ((&g, &z), &f) in gold_token.iter().zip(noise).zip(&familiar) {
        // A reference with no spread (uniform everywhere) has no familiar tokens: its
        // log-probabilities differ by rounding alone, which standardising would blow up.
        let standardised = if familiar_std > MIN_SPREAD { (f - familiar_mean) / familiar_std * gold_std } else { 0.0 };
        values.push(rho * g + noise_weight * (z * gold_std) + bias * standardised);
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_follow_the_uniforms_and_ties_go_by_index() {
        let tables = world_tables(&[0.5, 0.1, 0.5, 0.0], 4, &[1.0, 2.0, 3.0, 4.0], &[0.0; 4], 2.0, 1.0).unwrap();
        // order: 3 (0.0), 1 (0.1), 0 (0.5), 2 (0.5)
        let expected: Vec<f64> = [3.0f64, 1.0, 0.0, 2.0].iter().map(|&r| -2.0 * r.ln_1p()).collect();
        assert_eq!(tables.ref_logits, expected);
        assert_eq!(tables.gold_token, vec![1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn gold_is_shared_plus_scaled_prompt_part() {
        let tables = world_tables(&[0.1, 0.2, 0.3, 0.4], 2, &[1.0, -1.0], &[0.5, 0.25, -2.0, 4.0], 1.0, 2.0).unwrap();
        assert_eq!(tables.gold_token, vec![2.0, -0.5, -3.0, 7.0]);
    }

    #[test]
    fn bad_draws_and_shapes_are_refused_by_name() {
        let err = world_tables(&[0.1, 1.0], 2, &[0.0; 2], &[0.0; 2], 1.0, 1.0).unwrap_err();
        assert!(err.to_string().starts_with("rank_uniforms[1]"), "{err}");
        let err = world_tables(&[0.1, 0.2, 0.3], 2, &[0.0; 2], &[0.0; 2], 1.0, 1.0).unwrap_err();
        assert!(err.to_string().starts_with("rank_uniforms"), "{err}");
        let err = world_tables(&[0.1, 0.2], 2, &[0.0; 2], &[0.0; 4], 1.0, 1.0).unwrap_err();
        assert!(err.to_string().starts_with("prompt_normals"), "{err}");
        assert!(world_tables(&[0.1, 0.2], 0, &[], &[], 1.0, 1.0).is_err());
    }

    #[test]
    fn judge_with_rho_one_and_no_bias_is_the_gold() {
        let gold = [0.5, -1.0, 2.0, 0.25];
        let values = judge_token_values(&gold, &[0.0, 1.0, 2.0, 3.0], 2, &[9.0; 4], 1.0, 0.0).unwrap();
        assert_eq!(values, gold.to_vec());
    }

    #[test]
    fn judge_bias_standardises_the_reference() {
        // each row's log-probabilities: a uniform reference is one value, its spread 0
        let values = judge_token_values(&[1.0, -1.0, 1.0, -1.0], &[0.0; 4], 2, &[0.0; 4], 0.0, 3.0).unwrap();
        assert!(values.iter().all(|&v| v == 0.0), "{values:?}");
        let values = judge_token_values(&[1.0, -1.0], &[0.0, 10.0], 2, &[0.0; 2], 0.0, 1.0).unwrap();
        // standardised to mean 0 and the gold's spread (1): -1 and +1
        assert!((values[0] + 1.0).abs() < 1e-12 && (values[1] - 1.0).abs() < 1e-12, "{values:?}");
    }
}
