//! PPO's clipped surrogate for one sampled token, and the lesson's PPO-RLHF step.

use crate::error::{finite, finite_slice, positive, Error, Result};
use crate::kl::kl_to_log;
use crate::sampling::sample_index;
use crate::softmax::softmax_into;

/// Whether `min(r A, clip(r, 1-eps, 1+eps) A)` is flat in the ratio `r` here.
#[inline(always)]
pub fn is_clipped(advantage: f64, ratio: f64, eps: f64) -> bool {
    // `&` and `|` rather than `&&` and `||`: no branches, so lane loops vectorise it.
    ((advantage >= 0.0) & (ratio > 1.0 + eps)) | ((advantage < 0.0) & (ratio < 1.0 - eps))
}

fn check_surrogate_args(logits: &[f64], a: usize, p_old_a: f64, advantage: f64, eps: f64) -> Result<()> {
    finite_slice("logits", logits)?;
    if a >= logits.len() {
        return Err(Error::invalid(format!("a must be a token index in [0, {}), got {a}", logits.len())));
    }
    positive("p_old_a", p_old_a)?;
    finite("advantage", advantage)?;
    positive("eps", eps)?;
    Ok(())
}

/// PPO's objective for token `a`: `min(r A, clip(r, 1-eps, 1+eps) A)` with `r = pi(a) / p_old_a`.
pub fn clipped_surrogate(logits: &[f64], a: usize, p_old_a: f64, advantage: f64, eps: f64) -> Result<f64> {
    check_surrogate_args(logits, a, p_old_a, advantage, eps)?;
    let mut p = vec![0.0; logits.len()];
    softmax_into(logits, &mut p);
    let ratio = p[a] / p_old_a;
    let clipped_ratio = ratio.max(1.0 - eps).min(1.0 + eps);
    Ok((ratio * advantage).min(clipped_ratio * advantage))
}

/// Gradient of [`clipped_surrogate`] in the logits: `A r (1[j = a] - p_j)`, zero where clipped.
pub fn clipped_surrogate_grad(logits: &[f64], a: usize, p_old_a: f64, advantage: f64, eps: f64) -> Result<Vec<f64>> {
    check_surrogate_args(logits, a, p_old_a, advantage, eps)?;
    let mut p = vec![0.0; logits.len()];
    softmax_into(logits, &mut p);
    let ratio = p[a] / p_old_a;
    if is_clipped(advantage, ratio, eps) {
        return Ok(vec![0.0; logits.len()]);
    }
    let scale = advantage * ratio;
    Ok(p.iter().enumerate().map(|(j, &pj)| scale * (if j == a { 1.0 } else { 0.0 } - pj)).collect())
}

/// What one PPO-RLHF step did (TRL: `objective/scores`, `objective/kl`, ... per step).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepOutcome {
    pub token: usize,
    pub score: f64,
    pub kl: f64,
    pub reward: f64,
    pub clip_frac: f64,
}

/// The hyper-parameters of a PPO-RLHF step, checked once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PpoParams {
    pub eps: f64,
    pub lr: f64,
    pub ppo_epochs: u32,
}

impl PpoParams {
    pub fn new(eps: f64, lr: f64, ppo_epochs: i64) -> Result<Self> {
        let eps = positive("eps", eps)?;
        let lr = positive("lr", lr)?;
        if !(1..=i64::from(u32::MAX)).contains(&ppo_epochs) {
            return Err(Error::invalid(format!("ppo_epochs must be >= 1, got {ppo_epochs}")));
        }
        Ok(PpoParams { eps, lr, ppo_epochs: ppo_epochs as u32 })
    }
}

/// Scratch rows a step reuses: the policy before the step and during the epochs.
#[derive(Clone, Debug)]
pub struct StepScratch {
    p_old: Vec<f64>,
    p: Vec<f64>,
}

impl StepScratch {
    pub fn new(vocab_size: usize) -> Self {
        StepScratch { p_old: vec![0.0; vocab_size], p: vec![0.0; vocab_size] }
    }
}

/// One PPO-RLHF step on one prompt's logits (the lesson's `rlhf_step`).
///
/// `ref_log_probs` is the frozen reference's log-softmax for the prompt (it never changes,
/// so callers compute it once; in log space the KL stays finite for logits of 1e4), `weights[j]` the reward model's weight of token `j`, and `u`
/// the `rng.random()` draw that picks the token. The reward `score - beta * KL` is the
/// advantage; an epoch whose ratio is clipped changes nothing, so every later epoch is
/// clipped too and the loop stops there. Inputs must be valid (finite, equal lengths).
pub fn rlhf_step(
    logits: &mut [f64],
    ref_log_probs: &[f64],
    weights: &[f64],
    u: f64,
    beta: f64,
    params: &PpoParams,
    scratch: &mut StepScratch,
) -> StepOutcome {
    let StepScratch { p_old, p } = scratch;
    softmax_into(logits, p_old);
    let token = sample_index(p_old, u);
    let kl = kl_to_log(p_old, ref_log_probs);
    let score = weights[token];
    let reward = score - beta * kl; // the KL enters the reward only
    let advantage = reward; // the reward is the return; no baseline
    let mut clipped = 0;
    p.copy_from_slice(p_old);
    for epoch in 0..params.ppo_epochs {
        if epoch > 0 {
            softmax_into(logits, p);
        }
        let ratio = p[token] / p_old[token];
        if is_clipped(advantage, ratio, params.eps) {
            clipped = params.ppo_epochs - epoch;
            break;
        }
        let step = params.lr * advantage * ratio;
        for (j, (logit, &pj)) in logits.iter_mut().zip(p.iter()).enumerate() {
            *logit += step * (if j == token { 1.0 } else { 0.0 } - pj);
        }
    }
    StepOutcome { token, score, kl, reward, clip_frac: f64::from(clipped) / f64::from(params.ppo_epochs) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_matches_central_differences() {
        let logits = [0.3, -1.0, 0.8, 0.1];
        for (a, p_old_a, adv) in [(2, 0.4, 1.5), (0, 0.2, -0.7), (1, 0.05, 2.0)] {
            let grad = clipped_surrogate_grad(&logits, a, p_old_a, adv, 0.2).unwrap();
            for j in 0..logits.len() {
                let h = 1e-6;
                let (mut up, mut down) = (logits, logits);
                up[j] += h;
                down[j] -= h;
                let fd = (clipped_surrogate(&up, a, p_old_a, adv, 0.2).unwrap()
                    - clipped_surrogate(&down, a, p_old_a, adv, 0.2).unwrap())
                    / (2.0 * h);
                assert!((grad[j] - fd).abs() < 1e-7, "a={a} j={j}: {} vs {fd}", grad[j]);
            }
        }
    }

    #[test]
    fn gradient_is_zero_outside_the_clip_region() {
        let logits = [0.0; 4]; // pi(a) = 0.25
        assert_eq!(clipped_surrogate_grad(&logits, 1, 0.1, 1.0, 0.2).unwrap(), vec![0.0; 4]); // r = 2.5 > 1.2
        assert_eq!(clipped_surrogate_grad(&logits, 1, 0.9, -1.0, 0.2).unwrap(), vec![0.0; 4]); // r < 0.8
        assert_ne!(clipped_surrogate_grad(&logits, 1, 0.9, 1.0, 0.2).unwrap(), vec![0.0; 4]);
    }

    #[test]
    fn first_epoch_ascends_the_surrogate_and_clipping_stops_later_epochs() {
        let weights = [1.0, -1.0];
        let ref_probs = [0.5f64.ln(), 0.5f64.ln()];
        let mut scratch = StepScratch::new(2);
        let mut logits = [0.0, 0.0];
        let params = PpoParams::new(0.2, 0.05, 4).unwrap();
        let out = rlhf_step(&mut logits, &ref_probs, &weights, 0.1, 0.0, &params, &mut scratch);
        assert_eq!(out.token, 0);
        assert_eq!(out.kl, 0.0);
        assert_eq!(out.reward, 1.0);
        assert!(logits[0] > 0.0 && logits[1] < 0.0);
        assert_eq!(out.clip_frac, 0.0);

        let big = PpoParams::new(0.01, 5.0, 4).unwrap();
        let mut logits = [0.0, 0.0];
        let out = rlhf_step(&mut logits, &ref_probs, &weights, 0.1, 0.0, &big, &mut scratch);
        assert_eq!(out.clip_frac, 0.75); // one update, then the ratio sits past 1 + eps
    }

    #[test]
    fn params_reject_nonsense() {
        assert!(PpoParams::new(0.0, 0.1, 4).unwrap_err().to_string().contains("eps"));
        assert!(PpoParams::new(0.2, f64::NAN, 4).unwrap_err().to_string().contains("lr"));
        assert!(PpoParams::new(0.2, 0.1, 0).unwrap_err().to_string().contains("ppo_epochs"));
    }
}
