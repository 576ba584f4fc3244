//! GRPO on token sequences with one reward per sequence (a verifier's, issue 11 item 4: RL
//! from verifiable rewards), as TRL's `GRPOTrainer` computes it (`trl/trainer/grpo_trainer.py`:
//! `_generate_and_score_completions` and `_compute_loss`):
//!
//! - group-relative advantages: `A_i = (r_i - mean) / (std + 1e-4)` over each prompt's `G`
//!   completions, `std` the unbiased one (torch's `.std()`), or `r_i - mean` (`scale_rewards`
//!   off, Dr. GRPO);
//! - per token `t` of completion `i`: `ratio = exp(log pi - log pi_old)`, the clipped term
//!   `-min(ratio A_i, clip(ratio, 1 - eps, 1 + eps_high) A_i)` and `beta k3`, `k3 = exp(log
//!   pi_ref - log pi) - (log pi_ref - log pi) - 1`; `loss_type="dapo"` (TRL's default) divides
//!   their sum by the number of completion tokens in the batch.
//!
//! The derivative of a token's term in `log pi(a)` is `-A ratio` where the clip does not bind
//! (0 where it does) plus `beta (1 - exp(log pi_ref - log pi))`. Twin:
//! `python/rlhf_fast/reference/methods/verifier_grpo.py`.

use crate::error::{Error, Result};
use crate::kernels::softmax::softmax_and_log_softmax_row;

/// Added to a group's std before dividing by it (TRL's `1e-4`).
pub const GROUP_STD_EPS: f64 = 1e-4;

/// The group's advantages into `out` (one per reward); returns the group's mean and unbiased
/// std. `rewards` holds at least two.
pub fn group_advantages(rewards: &[f64], scale_by_std: bool, out: &mut [f64]) -> (f64, f64) {
    let n = rewards.len() as f64;
    let mean = rewards.iter().fold(0.0, |total, &r| total + r) / n;
    let squares = rewards.iter().fold(0.0, |total, &r| total + (r - mean) * (r - mean));
    let std = (squares / (n - 1.0)).sqrt();
    for (a, &r) in out.iter_mut().zip(rewards) {
        *a = if scale_by_std { (r - mean) / (std + GROUP_STD_EPS) } else { r - mean };
    }
    (mean, std)
}

/// One token's GRPO term: `(loss, d loss / d log pi(a), clipped)`.
#[inline]
pub fn grpo_token_term(
    advantage: f64,
    logp: f64,
    old_logp: f64,
    ref_logp: f64,
    epsilon: f64,
    epsilon_high: f64,
    beta: f64,
) -> (f64, f64, bool) {
    let (lower, upper) = (1.0 - epsilon, 1.0 + epsilon_high);
    let ratio = (logp - old_logp).exp();
    let flat = (advantage >= 0.0 && ratio > upper) || (advantage < 0.0 && ratio < lower);
    let log_ratio_ref = ref_logp - logp;
    let ratio_ref = log_ratio_ref.exp();
    let k3 = ratio_ref - log_ratio_ref - 1.0;
    let clipped_ratio = ratio.max(lower).min(upper);
    let loss = -(ratio * advantage).min(clipped_ratio * advantage) + beta * k3;
    let slope = if flat { 0.0 } else { -advantage * ratio } + beta * (1.0 - ratio_ref);
    (loss, slope, flat)
}

/// The softmax and log-softmax of every state's row of a policy, computed the reference's way
/// (libm) when first asked for after the row last changed: GRPO's engine follows its twin bit
/// for bit, where token PPO's vectorised `PolicyRows` follows it within rounding.
#[derive(Clone, Debug)]
pub struct ExactRows {
    vocab_size: usize,
    probs: Vec<f64>,
    logp: Vec<f64>,
    fresh: Vec<bool>,
}

impl ExactRows {
    /// Room for `n_states` rows of `vocab_size` (sizes checked by the caller).
    pub fn new(n_states: usize, vocab_size: usize) -> Result<Self> {
        let table =
            n_states.checked_mul(vocab_size).ok_or_else(|| Error::invalid("the policy does not fit in memory"))?;
        let zeros = |len: usize| -> Result<Vec<f64>> {
            let mut v = crate::error::vec_with_capacity(len, "the policy's rows")?;
            v.resize(len, 0.0);
            Ok(v)
        };
        Ok(ExactRows { vocab_size, probs: zeros(table)?, logp: zeros(table)?, fresh: vec![false; n_states] })
    }

    /// State `s`'s `(probs, logp)` under `theta`.
    #[inline]
    pub fn row(&mut self, theta: &[f64], s: usize) -> (&[f64], &[f64]) {
        let range = s * self.vocab_size..(s + 1) * self.vocab_size;
        if !self.fresh[s] {
            let (probs, logp) = (&mut self.probs[range.clone()], &mut self.logp[range.clone()]);
            softmax_and_log_softmax_row(&theta[range.clone()], probs, logp);
            self.fresh[s] = true;
        }
        (&self.probs[range.clone()], &self.logp[range])
    }

    /// State `s`'s row changed.
    #[inline]
    pub fn changed(&mut self, s: usize) {
        self.fresh[s] = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advantages_are_centred_and_scaled_by_the_unbiased_std() {
        let mut out = [0.0; 4];
        let (mean, std) = group_advantages(&[1.0, 0.0, 0.0, 1.0], true, &mut out);
        assert_eq!(mean, 0.5);
        assert!((std - (1.0f64 / 3.0).sqrt()).abs() < 1e-15);
        assert!((out[0] - 0.5 / (std + GROUP_STD_EPS)).abs() < 1e-15 && out[0] == -out[1]);
        group_advantages(&[1.0, 1.0, 1.0], true, &mut out[..3]);
        assert_eq!(&out[..3], &[0.0; 3]);
    }

    #[test]
    fn the_slope_is_the_terms_derivative_and_vanishes_where_the_clip_binds() {
        for (adv, logp, old, beta) in [(0.7, -1.0, -1.1, 0.3), (-1.2, -2.0, -1.9, 0.0), (0.5, -0.5, -0.9, 0.2)] {
            let (_, slope, flat) = grpo_token_term(adv, logp, old, -1.3, 0.2, 0.28, beta);
            let at = |x: f64| grpo_token_term(adv, x, old, -1.3, 0.2, 0.28, beta).0;
            let numeric = (at(logp + 1e-7) - at(logp - 1e-7)) / 2e-7;
            assert!((numeric - slope).abs() < 1e-6, "{adv} {logp}: {numeric} vs {slope} ({flat})");
        }
        // exp(0.4) > 1.28 with a positive advantage: clipped, no gradient from the surrogate.
        assert_eq!(grpo_token_term(0.5, -0.5, -0.9, -0.5, 0.2, 0.28, 0.0).1, 0.0);
    }
}
