//! PPO's clipped surrogate for one sampled token, and the lesson's PPO-RLHF step.

use crate::error::{at_most, finite, finite_slice, first_nonfinite, non_negative, positive, Error, Result};
use crate::kernels::kl::{kl_to_log, KlPenalty};
use crate::kernels::sampling::sample_index;
use crate::kernels::softmax::softmax_row;

/// Whether `min(r A, clip(r, 1-eps, 1+eps) A)` is flat in the ratio `r` here.
#[inline(always)]
pub(crate) fn is_clipped(advantage: f64, ratio: f64, eps: f64) -> bool {
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
    softmax_row(logits, &mut p);
    let ratio = p[a] / p_old_a;
    let clipped_ratio = ratio.max(1.0 - eps).min(1.0 + eps);
    Ok((ratio * advantage).min(clipped_ratio * advantage))
}

/// Gradient of [`clipped_surrogate`] in the logits: `A r (1[j = a] - p_j)`, zero where clipped.
pub fn clipped_surrogate_grad(logits: &[f64], a: usize, p_old_a: f64, advantage: f64, eps: f64) -> Result<Vec<f64>> {
    check_surrogate_args(logits, a, p_old_a, advantage, eps)?;
    let mut p = vec![0.0; logits.len()];
    softmax_row(logits, &mut p);
    let ratio = p[a] / p_old_a;
    if is_clipped(advantage, ratio, eps) {
        return Ok(vec![0.0; logits.len()]);
    }
    let scale = advantage * ratio;
    Ok(p.iter().enumerate().map(|(j, &pj)| scale * (if j == a { 1.0 } else { 0.0 } - pj)).collect())
}

/// Largest `ppo_epochs`: a step's work stays bounded.
pub const MAX_PPO_EPOCHS: i64 = 10_000;

/// What one PPO-RLHF step did (TRL: `objective/scores`, `objective/kl`, ... per step).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepOutcome {
    pub token: usize,
    pub score: f64,
    /// The exact KL of the policy before the step to the reference: the monitor.
    pub kl: f64,
    /// The KL term that entered the reward (exact, or a sampled estimator).
    pub kl_penalty: f64,
    pub reward: f64,
    pub clip_frac: f64,
    /// TRL's clipped value loss before the step (0 without a value baseline).
    pub value_loss: f64,
}

impl StepOutcome {
    /// The first recorded float that is not finite, by its key: `rlhf_step`'s record order
    /// (score, kl, reward, clip_frac, kl_penalty, value_loss), with a run's `(beta, mean_kl)`
    /// after clip_frac where `train_rlhf`'s history has them.
    #[inline]
    pub fn nonfinite_key(&self, run: Option<(f64, f64)>) -> Option<&'static str> {
        let (beta, mean_kl) = run.unwrap_or((0.0, 0.0));
        first_nonfinite([
            ("score", self.score),
            ("kl", self.kl),
            ("reward", self.reward),
            ("clip_frac", self.clip_frac),
            ("beta", beta),
            ("mean_kl", mean_kl),
            ("kl_penalty", self.kl_penalty),
            ("value_loss", self.value_loss),
        ])
    }
}

/// The hyper-parameters of a PPO-RLHF step, checked once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PpoParams {
    pub eps: f64,
    pub lr: f64,
    pub ppo_epochs: u32,
    pub kl_penalty: KlPenalty,
    /// Weight of the value loss; 0 means no baseline (the reward is the advantage).
    pub vf_coef: f64,
    /// TRL's `cliprange_value`: how far one step's value may move before its loss is clipped.
    pub cliprange_value: f64,
}

impl PpoParams {
    /// The lesson's step: exact KL in the reward, no value baseline.
    pub fn new(eps: f64, lr: f64, ppo_epochs: i64) -> Result<Self> {
        let eps = positive("eps", eps)?;
        let lr = positive("lr", lr)?;
        if ppo_epochs < 1 {
            return Err(Error::invalid(format!("ppo_epochs must be >= 1, got {ppo_epochs}")));
        }
        at_most("ppo_epochs", ppo_epochs, MAX_PPO_EPOCHS)?;
        Ok(PpoParams {
            eps,
            lr,
            ppo_epochs: ppo_epochs as u32,
            kl_penalty: KlPenalty::Full,
            vf_coef: 0.0,
            cliprange_value: 0.2,
        })
    }

    /// Adds the choice of KL penalty and the value baseline (`vf_coef > 0` turns it on).
    pub fn completed(mut self, kl_penalty: &str, vf_coef: f64, cliprange_value: f64) -> Result<Self> {
        self.kl_penalty = KlPenalty::parse(kl_penalty)?;
        self.vf_coef = non_negative("vf_coef", vf_coef)?;
        self.cliprange_value = positive("cliprange_value", cliprange_value)?;
        Ok(self)
    }
}

/// One epoch of TRL's clipped value loss `0.5 max((v - R)^2, (v_clip - R)^2)` on the value
/// `v` (moved from `v_old` by earlier epochs); returns the updated value.
#[inline]
pub fn value_update(v: f64, v_old: f64, ret: f64, params: &PpoParams) -> f64 {
    let v_clipped = v_old + (v - v_old).max(-params.cliprange_value).min(params.cliprange_value);
    let unclipped = (v - ret) * (v - ret);
    let clipped = (v_clipped - ret) * (v_clipped - ret);
    let inside = -params.cliprange_value < v - v_old && v - v_old < params.cliprange_value;
    let grad = if unclipped >= clipped {
        v - ret
    } else if inside {
        v_clipped - ret // the clamp is inactive: its slope is 1
    } else {
        0.0 // the clamped branch is flat in v
    };
    v - params.lr * params.vf_coef * grad
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

/// One PPO-RLHF step on one prompt's logits (the lesson's `rlhf_step`), with the prompt's
/// value baseline `value` (read and updated only when `params.vf_coef > 0`).
///
/// `ref_log_probs` is the frozen reference's log-softmax for the prompt (it never changes,
/// so callers compute it once; in log space the KL stays finite for logits of 1e4), `weights[j]` the reward model's weight of token `j`, and `u`
/// the `rng.random()` draw that picks the token. The reward `score - beta * penalty` (minus
/// the value, with a baseline) is the advantage; an epoch whose ratio is clipped changes no
/// logit, so every later epoch is clipped too and, without a value to fit, the loop stops
/// there. Inputs must be valid (finite, equal lengths).
#[allow(clippy::too_many_arguments)]
pub fn rlhf_step(
    logits: &mut [f64],
    ref_log_probs: &[f64],
    weights: &[f64],
    u: f64,
    beta: f64,
    params: &PpoParams,
    value: &mut f64,
    scratch: &mut StepScratch,
) -> StepOutcome {
    let StepScratch { p_old, p } = scratch;
    softmax_row(logits, p_old);
    let token = sample_index(p_old, u);
    let kl = kl_to_log(p_old, ref_log_probs);
    let kl_penalty = params.kl_penalty.value(kl, p_old[token].ln(), ref_log_probs[token]);
    let score = weights[token];
    let reward = score - beta * kl_penalty; // the KL enters the reward only
    let with_value = params.vf_coef > 0.0;
    let v_old = *value;
    let (advantage, value_loss) = if with_value {
        (reward - v_old, 0.5 * ((v_old - reward) * (v_old - reward)))
    } else {
        (reward, 0.0) // the reward is the return; no baseline
    };
    let mut clipped = 0;
    let mut frozen = false;
    p.copy_from_slice(p_old);
    for epoch in 0..params.ppo_epochs {
        if epoch > 0 {
            softmax_row(logits, p);
        }
        let ratio = p[token] / p_old[token];
        if !frozen && is_clipped(advantage, ratio, params.eps) {
            clipped = params.ppo_epochs - epoch;
            frozen = true;
            if !with_value {
                break;
            }
        }
        if !frozen {
            let step = params.lr * advantage * ratio;
            for (j, (logit, &pj)) in logits.iter_mut().zip(p.iter()).enumerate() {
                *logit += step * (if j == token { 1.0 } else { 0.0 } - pj);
            }
        }
        if with_value {
            *value = value_update(*value, v_old, reward, params);
        }
    }
    StepOutcome {
        token,
        score,
        kl,
        kl_penalty,
        reward,
        clip_frac: f64::from(clipped) / f64::from(params.ppo_epochs),
        value_loss,
    }
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
        let out = rlhf_step(&mut logits, &ref_probs, &weights, 0.1, 0.0, &params, &mut 0.0, &mut scratch);
        assert_eq!(out.token, 0);
        assert_eq!(out.kl, 0.0);
        assert_eq!(out.reward, 1.0);
        assert!(logits[0] > 0.0 && logits[1] < 0.0);
        assert_eq!(out.clip_frac, 0.0);

        let big = PpoParams::new(0.01, 5.0, 4).unwrap();
        let mut logits = [0.0, 0.0];
        let out = rlhf_step(&mut logits, &ref_probs, &weights, 0.1, 0.0, &big, &mut 0.0, &mut scratch);
        assert_eq!(out.clip_frac, 0.75); // one update, then the ratio sits past 1 + eps
    }

    #[test]
    fn params_reject_nonsense() {
        assert!(PpoParams::new(0.0, 0.1, 4).unwrap_err().to_string().contains("eps"));
        assert!(PpoParams::new(0.2, f64::NAN, 4).unwrap_err().to_string().contains("lr"));
        assert!(PpoParams::new(0.2, 0.1, 0).unwrap_err().to_string().contains("ppo_epochs"));
        assert_eq!(PpoParams::new(0.2, 0.1, 10_001).unwrap_err().to_string(), "ppo_epochs must be <= 10000, got 10001");
        assert_eq!(PpoParams::new(0.2, 0.1, 10_000).unwrap().ppo_epochs, 10_000);
    }
}
