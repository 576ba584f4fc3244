//! PPO's clipped surrogate for one sampled token, the lesson's PPO-RLHF step, and its
//! generalisation to a response of `L` tokens drawn i.i.d. from the policy (a world's bag).

use crate::error::{
    at_most, finite, finite_slice, first_nonfinite, non_negative, positive, vec_with_capacity, Error, Result,
};
use crate::kernels::kl::{kl_to_log, KlPenalty};
use crate::kernels::sampling::{running_sums, sample_bisect, sample_index};
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

/// The step's advantage and TRL's value loss before any update (where the clipped and
/// unclipped terms coincide): `reward - v_old` and `0.5 (v_old - reward)^2` with a value
/// baseline (`vf_coef > 0`), else the reward itself (it is the return) and 0.
pub(crate) fn advantage_and_value_loss(reward: f64, v_old: f64, params: &PpoParams) -> (f64, f64) {
    if params.vf_coef > 0.0 {
        (reward - v_old, 0.5 * ((v_old - reward) * (v_old - reward)))
    } else {
        (reward, 0.0)
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
    let (advantage, value_loss) = advantage_and_value_loss(reward, v_old, params);
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

/// What one PPO-RLHF step on a bag of `L` tokens did; the tokens are in [`BagScratch::tokens`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BagOutcome {
    /// The reward model's score of the response: `sum_i w(y_i)`.
    pub score: f64,
    /// `L * KL(p_old || pi_ref)`, the exact KL of the response before the step: the monitor.
    pub kl: f64,
    pub reward: f64,
    pub clip_frac: f64,
    /// The KL term that entered the reward (the exact one, or an estimator summed over tokens).
    pub kl_penalty: f64,
    /// TRL's clipped value loss before the step (0 without a value baseline).
    pub value_loss: f64,
}

impl BagOutcome {
    /// The first recorded float that is not finite, by its key, in the record's order.
    #[inline]
    pub fn nonfinite_key(&self) -> Option<&'static str> {
        first_nonfinite([
            ("score", self.score),
            ("kl", self.kl),
            ("reward", self.reward),
            ("clip_frac", self.clip_frac),
            ("kl_penalty", self.kl_penalty),
            ("value_loss", self.value_loss),
        ])
    }
}

/// Scratch a bag step reuses, allocated once per run: rows of the vocabulary (up to 2^20
/// tokens) are never allocated per step.
#[derive(Clone, Debug)]
pub struct BagScratch {
    p_old: Vec<f64>,
    p: Vec<f64>,
    /// Running sums of `p_old`, which every draw of the response bisects.
    cumulative: Vec<f64>,
    /// `count_j`, the copies of token `j` in the response; all zero between steps.
    counts: Vec<f64>,
    tokens: Vec<usize>,
}

impl BagScratch {
    /// Scratch for a vocabulary of `vocab_size` and responses of `response_len` tokens, or
    /// [`Error::OutOfMemory`].
    pub fn new(vocab_size: usize, response_len: usize) -> Result<Self> {
        let row = || -> Result<Vec<f64>> {
            let mut row = vec_with_capacity(vocab_size, "a row of the vocabulary")?;
            row.resize(vocab_size, 0.0);
            Ok(row)
        };
        Ok(BagScratch {
            p_old: row()?,
            p: row()?,
            cumulative: row()?,
            counts: row()?,
            tokens: vec_with_capacity(response_len, "a response")?,
        })
    }

    /// The tokens the last step sampled, in draw order.
    pub fn tokens(&self) -> &[usize] {
        &self.tokens
    }
}

/// One PPO-RLHF step on one prompt's logits whose response is a bag of `L = uniforms.len()`
/// tokens drawn i.i.d. from `p_old = softmax(logits)`, one per draw of `rng.random()` (as
/// [`sample_index`] picks it); `value` is the prompt's baseline, as in [`rlhf_step`].
///
/// With `L = 1` this is [`rlhf_step`] bit for bit, and the arithmetic is written for that:
/// the score `sum_i w(y_i)` is summed from 0.0 (the lesson's score of one token is
/// `0.0 + w(a)`, so a weight of -0.0 scores 0.0); the exact penalty is `L * KL`, and an
/// estimator's penalty starts from the first token's term (TRL sums the per-token KL over
/// the response); the ratio `prod_i pi(y_i) / p_old(y_i)` starts from 1.0; and the
/// gradient of `log ratio` in logit `j` is `count_j - L p_j`, the lesson's `1[j = a] - p_j`.
/// Inputs must be valid: finite, `L >= 1`, the scratch sized for `logits.len()` and `L`.
#[allow(clippy::too_many_arguments)]
pub fn bag_rlhf_step(
    logits: &mut [f64],
    ref_log_probs: &[f64],
    weights: &[f64],
    uniforms: &[f64],
    beta: f64,
    params: &PpoParams,
    value: &mut f64,
    scratch: &mut BagScratch,
) -> BagOutcome {
    let BagScratch { p_old, p, cumulative, counts, tokens } = scratch;
    softmax_row(logits, p_old);
    running_sums(p_old, cumulative);
    tokens.clear();
    tokens.extend(uniforms.iter().map(|&u| sample_bisect(cumulative, u)));
    let length = tokens.len() as f64;
    let kl = length * kl_to_log(p_old, ref_log_probs);
    let mut score = 0.0;
    for &a in tokens.iter() {
        score += weights[a];
    }
    let penalty_of = |a: usize| params.kl_penalty.value(kl, p_old[a].ln(), ref_log_probs[a]);
    let mut kl_penalty = penalty_of(tokens[0]);
    if params.kl_penalty != KlPenalty::Full {
        for &a in &tokens[1..] {
            kl_penalty += penalty_of(a);
        }
    }
    let reward = score - beta * kl_penalty; // the KL enters the reward only
    let with_value = params.vf_coef > 0.0;
    let v_old = *value;
    let (advantage, value_loss) = advantage_and_value_loss(reward, v_old, params);
    for &a in tokens.iter() {
        counts[a] += 1.0;
    }
    let mut clipped = 0;
    let mut frozen = false;
    p.copy_from_slice(p_old);
    for epoch in 0..params.ppo_epochs {
        // A clipped epoch changes no logit: from then on the policy and its ratio stay put.
        if frozen {
            if !with_value {
                break;
            }
        } else {
            if epoch > 0 {
                softmax_row(logits, p);
            }
            let mut ratio = 1.0;
            for &a in tokens.iter() {
                ratio *= p[a] / p_old[a];
            }
            if is_clipped(advantage, ratio, params.eps) {
                clipped = params.ppo_epochs - epoch;
                frozen = true;
            } else {
                let step = params.lr * advantage * ratio;
                for ((logit, &pj), &count) in logits.iter_mut().zip(p.iter()).zip(counts.iter()) {
                    *logit += step * (count - length * pj);
                }
            }
        }
        if with_value {
            *value = value_update(*value, v_old, reward, params);
        }
    }
    for &a in tokens.iter() {
        counts[a] = 0.0;
    }
    BagOutcome {
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

    /// Random logits of `n` tokens in [-3, 3] and a reference's log-probabilities.
    fn random_row(rng: &mut crate::rng::Mt19937, n: usize) -> (Vec<f64>, Vec<f64>) {
        let logits: Vec<f64> = (0..n).map(|_| 6.0 * rng.random() - 3.0).collect();
        let reference: Vec<f64> = (0..n).map(|_| 6.0 * rng.random() - 3.0).collect();
        let mut ref_log_probs = vec![0.0; n];
        crate::kernels::softmax::log_softmax_row(&reference, &mut ref_log_probs);
        (logits, ref_log_probs)
    }

    #[test]
    fn a_bag_of_one_token_is_the_lessons_step_bit_for_bit() {
        let mut rng = crate::rng::Mt19937::from_seed(17);
        for case in 0..400 {
            let (logits, ref_log_probs) = random_row(&mut rng, 8);
            let mut weights: Vec<f64> = (0..8).map(|_| 4.0 * rng.random() - 2.0).collect();
            weights[case % 8] = -0.0;
            // The lesson's scores of one-token responses (`one_token_scores`): `0.0 + w(a)`.
            let one_token_scores: Vec<f64> = weights.iter().map(|&w| 0.0 + w).collect();
            let params = PpoParams::new(0.05 + 0.3 * rng.random(), 0.01 + rng.random(), 1 + (case % 6) as i64)
                .and_then(|p| p.completed(KlPenalty::NAMES[case % 4], [0.0, 0.0, 0.5][case % 3], 0.1))
                .unwrap();
            let (u, beta, v0) = (rng.random(), rng.random(), rng.random() - 0.5);
            let (mut lesson, mut bag) = (logits.clone(), logits);
            let (mut lesson_value, mut bag_value) = (v0, v0);
            let expected = rlhf_step(
                &mut lesson,
                &ref_log_probs,
                &one_token_scores,
                u,
                beta,
                &params,
                &mut lesson_value,
                &mut StepScratch::new(8),
            );
            let mut scratch = BagScratch::new(8, 1).unwrap();
            let got =
                bag_rlhf_step(&mut bag, &ref_log_probs, &weights, &[u], beta, &params, &mut bag_value, &mut scratch);
            assert_eq!(scratch.tokens(), [expected.token], "case {case}");
            let bits = |o: [f64; 6]| o.map(f64::to_bits);
            assert_eq!(
                bits([got.score, got.kl, got.reward, got.clip_frac, got.kl_penalty, got.value_loss]),
                bits([
                    expected.score,
                    expected.kl,
                    expected.reward,
                    expected.clip_frac,
                    expected.kl_penalty,
                    expected.value_loss
                ]),
                "case {case}"
            );
            assert_eq!(bag.map_bits(), lesson.map_bits(), "case {case}");
            assert_eq!(bag_value.to_bits(), lesson_value.to_bits(), "case {case}");
        }
    }

    trait Bits {
        fn map_bits(&self) -> Vec<u64>;
    }

    impl Bits for Vec<f64> {
        fn map_bits(&self) -> Vec<u64> {
            self.iter().map(|x| x.to_bits()).collect()
        }
    }

    /// `A * prod_i pi(y_i) / p_old(y_i)` at `logits`: the bag's surrogate where it is not clipped.
    fn bag_surrogate(logits: &[f64], tokens: &[usize], p_old: &[f64], advantage: f64) -> f64 {
        let p = crate::kernels::softmax::softmax(logits).unwrap();
        advantage * tokens.iter().fold(1.0, |ratio, &a| ratio * (p[a] / p_old[a]))
    }

    #[test]
    fn a_bag_epoch_ascends_the_sequence_ratio_by_its_gradient() {
        let mut rng = crate::rng::Mt19937::from_seed(3);
        let weights: Vec<f64> = (0..12).map(|_| 2.0 * rng.random() - 1.0).collect();
        for length in [1, 2, 5, 9] {
            let (logits, ref_log_probs) = random_row(&mut rng, 12);
            let uniforms: Vec<f64> = (0..length).map(|_| rng.random()).collect();
            // One epoch, no KL: the step is lr * grad of the surrogate at p_old (ratio 1).
            let params = PpoParams::new(0.2, 1e-3, 1).unwrap();
            let mut scratch = BagScratch::new(12, length).unwrap();
            let mut stepped = logits.clone();
            let out =
                bag_rlhf_step(&mut stepped, &ref_log_probs, &weights, &uniforms, 0.0, &params, &mut 0.0, &mut scratch);
            let tokens = scratch.tokens().to_vec();
            let p_old = crate::kernels::softmax::softmax(&logits).unwrap();
            for j in 0..12 {
                let h = 1e-6;
                let (mut up, mut down) = (logits.clone(), logits.clone());
                up[j] += h;
                down[j] -= h;
                let fd = (bag_surrogate(&up, &tokens, &p_old, out.reward)
                    - bag_surrogate(&down, &tokens, &p_old, out.reward))
                    / (2.0 * h);
                let step = (stepped[j] - logits[j]) / params.lr;
                assert!((step - fd).abs() < 1e-6 * fd.abs().max(1.0), "L={length} j={j}: {step} vs {fd}");
            }
        }
    }

    #[test]
    fn the_bag_penalty_is_l_times_the_kl_or_the_estimators_summed_over_tokens() {
        let mut rng = crate::rng::Mt19937::from_seed(8);
        let (logits, ref_log_probs) = random_row(&mut rng, 6);
        let weights = [1.0, -0.5, 0.25, 2.0, -1.0, 0.0];
        let uniforms = [0.1, 0.9, 0.5, 0.5];
        let mut scratch = BagScratch::new(6, 4).unwrap();
        let mut p_old = vec![0.0; 6];
        softmax_row(&logits, &mut p_old);
        let kl = kl_to_log(&p_old, &ref_log_probs);
        for name in KlPenalty::NAMES {
            let params = PpoParams::new(0.2, 0.1, 3).and_then(|p| p.completed(name, 0.0, 0.2)).unwrap();
            let out = bag_rlhf_step(
                &mut logits.clone(),
                &ref_log_probs,
                &weights,
                &uniforms,
                0.3,
                &params,
                &mut 0.0,
                &mut scratch,
            );
            let tokens = scratch.tokens();
            assert_eq!(tokens.len(), 4);
            assert_eq!(tokens[2], tokens[3]); // the same draw, the same token
            let score: f64 = tokens.iter().map(|&a| weights[a]).sum();
            assert!((out.score - score).abs() < 1e-15);
            assert_eq!(out.kl, 4.0 * kl);
            let expected = match params.kl_penalty {
                KlPenalty::Full => 4.0 * kl,
                kind => tokens.iter().map(|&a| kind.value(kl, p_old[a].ln(), ref_log_probs[a])).sum(),
            };
            assert!((out.kl_penalty - expected).abs() < 1e-14, "{name}");
            assert_eq!(out.reward, out.score - 0.3 * out.kl_penalty);
        }
    }

    #[test]
    fn a_bag_step_leaves_its_scratch_as_a_fresh_one() {
        let mut rng = crate::rng::Mt19937::from_seed(2);
        let (logits, ref_log_probs) = random_row(&mut rng, 10);
        let weights: Vec<f64> = (0..10).map(|i| f64::from(i) - 4.5).collect();
        let params = PpoParams::new(0.2, 0.3, 4).and_then(|p| p.completed("k3", 0.5, 0.2)).unwrap();
        let mut used = BagScratch::new(10, 3).unwrap();
        let mut twice = logits.clone();
        let mut value = 0.0;
        for _ in 0..2 {
            bag_rlhf_step(&mut twice, &ref_log_probs, &weights, &[0.3, 0.7, 0.9], 0.1, &params, &mut value, &mut used);
        }
        let (mut once, mut fresh_value) = (logits.clone(), 0.0);
        let mut fresh = BagScratch::new(10, 3).unwrap();
        bag_rlhf_step(
            &mut once,
            &ref_log_probs,
            &weights,
            &[0.3, 0.7, 0.9],
            0.1,
            &params,
            &mut fresh_value,
            &mut fresh,
        );
        let (mut again, mut reused_value) = (logits, 0.0);
        bag_rlhf_step(
            &mut again,
            &ref_log_probs,
            &weights,
            &[0.3, 0.7, 0.9],
            0.1,
            &params,
            &mut reused_value,
            &mut used,
        );
        assert_eq!((again, reused_value), (once, fresh_value));
        assert!(used.counts.iter().all(|&c| c == 0.0));
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
