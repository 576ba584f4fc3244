//! Direct Preference Optimisation on one prompt's logits, with the lesson's bag-of-tokens
//! likelihood: `log pi(y)` is the sum of its tokens' log-probabilities.

use crate::bradley_terry::{sigmoid, softplus};
use crate::error::{positive, Error, Result};
use crate::softmax::{log_softmax_into, softmax_into};

/// One SGD step on `-log sigmoid(beta [(log pi(y+) - log ref(y+)) - (log pi(y-) - log ref(y-))])`.
///
/// `chosen` and `rejected` are token ids (repeats count twice); mutates `logits` and returns
/// the loss before the step.
pub fn dpo_step(
    logits: &mut [f64],
    ref_logits: &[f64],
    chosen: &[usize],
    rejected: &[usize],
    beta: f64,
    lr: f64,
) -> Result<f64> {
    let beta = positive("beta", beta)?;
    let lr = positive("lr", lr)?;
    let vocab_size = logits.len();
    for (name, tokens) in [("y_pos", chosen), ("y_neg", rejected)] {
        if tokens.is_empty() {
            return Err(Error::invalid(format!("{name} must have at least one token")));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t >= vocab_size) {
            return Err(Error::invalid(format!("{name} has token id {bad} outside the vocabulary")));
        }
    }
    let mut logp = vec![0.0; vocab_size];
    let mut logq = vec![0.0; vocab_size];
    log_softmax_into(logits, &mut logp);
    log_softmax_into(ref_logits, &mut logq);
    let log_ratio = |tokens: &[usize]| {
        let mut total = 0.0;
        for &a in tokens {
            total += logp[a] - logq[a];
        }
        total
    };
    let h = beta * (log_ratio(chosen) - log_ratio(rejected));
    let loss = softplus(-h);

    let mut p = vec![0.0; vocab_size];
    softmax_into(logits, &mut p);
    let scale = lr * sigmoid(-h) * beta;
    let count = |tokens: &[usize], j: usize| tokens.iter().filter(|&&t| t == j).count() as f64;
    for (j, logit) in logits.iter_mut().enumerate() {
        let d_chosen = count(chosen, j) - chosen.len() as f64 * p[j];
        let d_rejected = count(rejected, j) - rejected.len() as f64 * p[j];
        *logit += scale * (d_chosen - d_rejected);
    }
    Ok(loss)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loss(logits: &[f64], reference: &[f64], chosen: &[usize], rejected: &[usize], beta: f64) -> f64 {
        let mut probe = logits.to_vec();
        dpo_step(&mut probe, reference, chosen, rejected, beta, 1e-300).unwrap()
    }

    #[test]
    fn step_follows_the_negative_gradient() {
        let theta = [0.2, -0.4, 0.9, 0.0];
        let reference = [0.0, 0.1, -0.3, 0.2];
        let (chosen, rejected) = ([0, 0, 2], [1, 3]);
        let mut stepped = theta;
        let lr = 1e-4;
        dpo_step(&mut stepped, &reference, &chosen, &rejected, 0.5, lr).unwrap();
        for j in 0..4 {
            let h = 1e-6;
            let (mut up, mut down) = (theta, theta);
            up[j] += h;
            down[j] -= h;
            let fd = (loss(&up, &reference, &chosen, &rejected, 0.5)
                - loss(&down, &reference, &chosen, &rejected, 0.5))
                / (2.0 * h);
            assert!(((stepped[j] - theta[j]) + lr * fd).abs() < 1e-10, "j={j}");
        }
    }

    #[test]
    fn loss_is_log_two_at_the_reference() {
        let mut theta = [0.0; 3];
        assert!((dpo_step(&mut theta, &[0.0; 3], &[0], &[1], 0.1, 0.1).unwrap() - 2f64.ln()).abs() < 1e-15);
        assert!(theta[0] > 0.0 && theta[1] < 0.0);
    }

    #[test]
    fn rejects_bad_responses_and_coefficients() {
        let mut theta = [0.0; 3];
        assert!(dpo_step(&mut theta, &[0.0; 3], &[], &[1], 0.1, 0.1).unwrap_err().to_string().contains("y_pos"));
        assert!(dpo_step(&mut theta, &[0.0; 3], &[0], &[5], 0.1, 0.1).unwrap_err().to_string().contains("y_neg"));
        assert!(dpo_step(&mut theta, &[0.0; 3], &[0], &[1], -0.1, 0.1).unwrap_err().to_string().contains("beta"));
    }
}
