//! Direct Preference Optimisation on one prompt's logits, with the lesson's bag-of-tokens
//! likelihood: `log pi(y)` is the sum of its tokens' log-probabilities.
//!
//! The loss family is TRL's (`loss_type` = `sigmoid`, `robust`, `ipo`, `hinge`, with cDPO's
//! `label_smoothing`), written as METHODS.md section 2 writes it: a function of
//! `u = (log pi(y+) - log ref(y+)) - (log pi(y-) - log ref(y-))` and its derivative in `u`,
//! and `du / dlogit_j = (count_j(y+) - |y+| p_j) - (count_j(y-) - |y-| p_j)`. IPO, as TRL
//! computes it, averages each response's log-ratio over its tokens first:
//! `u = (log pi(y+) - log ref(y+)) / |y+| - (log pi(y-) - log ref(y-)) / |y-|`.
//! The loop over a preference set is [`crate::engines::dpo`]'s.

use crate::error::{
    finite, finite_slice, first_nonfinite, overflowed, positive, py_float, record_overflowed, Error, Result,
};
use crate::kernels::logistic::Logistic;
use crate::kernels::softmax::{log_softmax_row, softmax_and_log_softmax_row};

/// TRL's `loss_type` values this crate implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossType {
    /// The DPO paper's `-log sigmoid(beta u)` (cDPO with label smoothing).
    Sigmoid,
    /// Robust DPO (Chowdhury et al. 2024): unbiased under label noise `ls`.
    Robust,
    /// IPO (Azar et al. 2023): `(u - 1 / (2 beta))^2`, each log-ratio averaged over its
    /// response's tokens (TRL's normalisation).
    Ipo,
    /// SLiC's hinge: `max(0, 1 - beta u)`.
    Hinge,
}

impl LossType {
    pub const ALL: [LossType; 4] = [LossType::Sigmoid, LossType::Robust, LossType::Ipo, LossType::Hinge];
    /// TRL's names of [`LossType::ALL`], as `loss_type` takes them.
    pub const NAMES: [&'static str; 4] = ["sigmoid", "robust", "ipo", "hinge"];

    /// TRL's name of the loss.
    pub fn name(self) -> &'static str {
        match self {
            LossType::Sigmoid => "sigmoid",
            LossType::Robust => "robust",
            LossType::Ipo => "ipo",
            LossType::Hinge => "hinge",
        }
    }

    /// The loss called `name`, or an error naming `loss_type`.
    pub fn parse(name: &str) -> Result<Self> {
        LossType::ALL.into_iter().find(|l| l.name() == name).ok_or_else(|| {
            Error::invalid(format!("loss_type must be one of ('sigmoid', 'robust', 'ipo', 'hinge'), got '{name}'"))
        })
    }
}

/// The hyper-parameters of a DPO step, checked once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DpoParams {
    pub beta: f64,
    pub lr: f64,
    pub loss_type: LossType,
    pub label_smoothing: f64,
}

impl DpoParams {
    /// `beta > 0`, `lr > 0`, `label_smoothing` in `[0, 0.5)` and non-zero only for the
    /// `sigmoid` and `robust` losses.
    pub fn new(beta: f64, lr: f64, loss_type: LossType, label_smoothing: f64) -> Result<Self> {
        let beta = positive("beta", beta)?;
        let lr = positive("lr", lr)?;
        let ls = finite("label_smoothing", label_smoothing)?;
        if !(0.0..0.5).contains(&ls) {
            return Err(Error::invalid(format!("label_smoothing must be in [0, 0.5), got {}", py_float(ls))));
        }
        if ls != 0.0 && matches!(loss_type, LossType::Ipo | LossType::Hinge) {
            return Err(Error::invalid(format!(
                "label_smoothing is only defined for loss_type 'sigmoid' and 'robust', got {} with loss_type='{}'",
                py_float(ls),
                loss_type.name()
            )));
        }
        Ok(DpoParams { beta, lr, loss_type, label_smoothing: ls })
    }

    /// The loss at `u` (TRL's "logits") and the SGD step `lr * dloss/du`, as the reference
    /// computes them: for `sigmoid`, `lr * g * beta` with `dloss/du = g * beta` (the
    /// multiplication order of the original sigmoid-only step), `lr * dloss/du` otherwise.
    #[inline]
    pub fn loss_and_step(&self, u: f64) -> (f64, f64) {
        let (beta, ls, lr) = (self.beta, self.label_smoothing, self.lr);
        let h = beta * u;
        match self.loss_type {
            LossType::Sigmoid => {
                let f = Logistic::at(h);
                let loss = (1.0 - ls) * f.softplus(-h) + ls * f.softplus(h);
                let g = ls * f.sigmoid(h) - (1.0 - ls) * f.sigmoid(-h);
                (loss, lr * g * beta)
            }
            LossType::Robust => {
                let f = Logistic::at(h);
                let loss = ((1.0 - ls) * f.softplus(-h) - ls * f.softplus(h)) / (1.0 - 2.0 * ls);
                let dloss_du = -beta * ((1.0 - ls) * f.sigmoid(-h) + ls * f.sigmoid(h)) / (1.0 - 2.0 * ls);
                (loss, lr * dloss_du)
            }
            LossType::Ipo => {
                let t = u - 1.0 / (2.0 * beta);
                (t * t, lr * (2.0 * t))
            }
            LossType::Hinge => {
                let loss = if 1.0 - h > 0.0 { 1.0 - h } else { 0.0 };
                (loss, lr * if h < 1.0 { -beta } else { 0.0 })
            }
        }
    }
}

/// What one DPO step saw before it updated (TRL's `rewards/*` metrics).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DpoOutcome {
    pub loss: f64,
    /// `rewards/chosen = beta * (log pi(y+) - log ref(y+))`.
    pub chosen: f64,
    /// `rewards/rejected = beta * (log pi(y-) - log ref(y-))`.
    pub rejected: f64,
    /// `rewards/margins = chosen - rejected`.
    pub margin: f64,
    /// `rewards/accuracies`: 1.0 if `chosen > rejected` else 0.0.
    pub accuracy: f64,
}

impl DpoOutcome {
    /// The first recorded float that is not finite, by its key in `train_dpo`'s history
    /// (TRL's names: loss, rewards/chosen, rewards/rejected, rewards/margins,
    /// rewards/accuracies).
    #[inline]
    pub fn nonfinite_key(&self) -> Option<&'static str> {
        first_nonfinite([
            ("loss", self.loss),
            ("rewards/chosen", self.chosen),
            ("rewards/rejected", self.rejected),
            ("rewards/margins", self.margin),
            ("rewards/accuracies", self.accuracy),
        ])
    }
}

/// Scratch rows a step reuses: `log pi`, `pi`, and the token counts of both responses.
#[derive(Clone, Debug)]
pub struct DpoScratch {
    logp: Vec<f64>,
    p: Vec<f64>,
    counts: Vec<(f64, f64)>,
}

impl DpoScratch {
    pub fn new(vocab_size: usize) -> Self {
        DpoScratch { logp: vec![0.0; vocab_size], p: vec![0.0; vocab_size], counts: vec![(0.0, 0.0); vocab_size] }
    }
}

/// `sum over tokens a (left to right, repeats count) of logp[a] - logq[a]`.
#[inline]
fn log_ratio(logp: &[f64], logq: &[f64], tokens: &[u32]) -> f64 {
    let mut total = 0.0;
    for &a in tokens {
        let a = a as usize;
        total += logp[a] - logq[a];
    }
    total
}

/// One DPO step on one prompt's logits, unchecked: `ref_log_probs` is the frozen reference's
/// log-softmax for the prompt, `chosen`/`rejected` token ids below `logits.len()`, the
/// scratch sized for the vocabulary. Mutates `logits`; returns what it saw before the update.
#[inline]
pub fn dpo_update(
    logits: &mut [f64],
    ref_log_probs: &[f64],
    chosen: &[u32],
    rejected: &[u32],
    params: &DpoParams,
    scratch: &mut DpoScratch,
) -> DpoOutcome {
    let DpoScratch { logp, p, counts } = scratch;
    if logits.len() == 8 {
        // The lesson's vocabulary: the same code with every row's length a constant, so the
        // row loops unroll (no arithmetic changes).
        let rows = (&mut logits[..8], &ref_log_probs[..8], &mut logp[..8], &mut p[..8], &mut counts[..8]);
        return dpo_core(rows.0, rows.1, chosen, rejected, params, rows.2, rows.3, rows.4);
    }
    dpo_core(logits, ref_log_probs, chosen, rejected, params, logp, p, counts)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn dpo_core(
    logits: &mut [f64],
    ref_log_probs: &[f64],
    chosen: &[u32],
    rejected: &[u32],
    params: &DpoParams,
    logp: &mut [f64],
    p: &mut [f64],
    counts: &mut [(f64, f64)],
) -> DpoOutcome {
    softmax_and_log_softmax_row(logits, p, logp);
    let pos_logratio = log_ratio(logp, ref_log_probs, chosen);
    let neg_logratio = log_ratio(logp, ref_log_probs, rejected);
    let (len_pos, len_neg) = (chosen.len() as f64, rejected.len() as f64);
    // TRL's IPO averages each response's log-ratio over its tokens; the other losses sum them.
    let ipo = params.loss_type == LossType::Ipo;
    let u = if ipo { pos_logratio / len_pos - neg_logratio / len_neg } else { pos_logratio - neg_logratio };
    let (loss, step) = params.loss_and_step(u);

    counts.iter_mut().for_each(|c| *c = (0.0, 0.0));
    for &a in chosen {
        counts[a as usize].0 += 1.0;
    }
    for &a in rejected {
        counts[a as usize].1 += 1.0;
    }
    for ((logit, &pj), &(count_pos, count_neg)) in logits.iter_mut().zip(p.iter()).zip(counts.iter()) {
        let du = if ipo {
            (count_pos / len_pos - pj) - (count_neg / len_neg - pj)
        } else {
            (count_pos - len_pos * pj) - (count_neg - len_neg * pj)
        };
        *logit -= step * du;
    }
    let chosen_reward = params.beta * pos_logratio;
    let rejected_reward = params.beta * neg_logratio;
    DpoOutcome {
        loss,
        chosen: chosen_reward,
        rejected: rejected_reward,
        margin: chosen_reward - rejected_reward,
        accuracy: if chosen_reward > rejected_reward { 1.0 } else { 0.0 },
    }
}

fn check_response(name: &str, tokens: &[u32], vocab_size: usize) -> Result<()> {
    if tokens.is_empty() {
        return Err(Error::invalid(format!("{name} must have at least one token")));
    }
    if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab_size) {
        return Err(Error::invalid(format!("{name} has token id {bad} outside the vocabulary")));
    }
    Ok(())
}

/// Checked [`dpo_update`] from the reference's logits: one step of any loss type, with the
/// step's metrics. Mutates `logits` only when every argument is valid, the step leaves them
/// within bounds and its loss is finite (else an error naming `lr` and `beta`, the logits
/// left as they were).
pub fn dpo_step_metrics(
    logits: &mut [f64],
    ref_logits: &[f64],
    chosen: &[u32],
    rejected: &[u32],
    params: &DpoParams,
) -> Result<DpoOutcome> {
    finite_slice("theta", logits)?;
    finite_slice("ref", ref_logits)?;
    if logits.len() != ref_logits.len() {
        return Err(Error::invalid("ref must have the same shape as theta"));
    }
    check_response("y_pos", chosen, logits.len())?;
    check_response("y_neg", rejected, logits.len())?;
    let mut logq = vec![0.0; logits.len()];
    log_softmax_row(ref_logits, &mut logq);
    let mut scratch = DpoScratch::new(logits.len());
    let mut updated = logits.to_vec();
    let out = dpo_update(&mut updated, &logq, chosen, rejected, params, &mut scratch);
    if overflowed(&updated) {
        return Err(Error::Diverged(format!(
            "dpo_step diverged: logits overflowed (lr={}, beta={})",
            py_float(params.lr),
            py_float(params.beta)
        )));
    }
    // `dpo_step` returns the loss alone: that is what must be finite.
    if !out.loss.is_finite() {
        return Err(record_overflowed("dpo_step diverged", "loss", params.lr, params.beta));
    }
    logits.copy_from_slice(&updated);
    Ok(out)
}

/// A tokenised DPO preference set: for pair `i`, its prompt row `prompts[i]`, the chosen
/// tokens `tokens[bounds[2i]..bounds[2i+1]]` and the rejected `tokens[bounds[2i+1]..bounds[2i+2]]`,
/// in their order (the log-ratios are summed token by token, left to right).
#[derive(Clone, Debug, PartialEq)]
pub struct DpoPairs {
    pub prompts: Vec<u32>,
    pub tokens: Vec<u32>,
    pub bounds: Vec<usize>,
}

impl Default for DpoPairs {
    fn default() -> Self {
        Self::new()
    }
}

impl DpoPairs {
    pub fn new() -> Self {
        DpoPairs { prompts: Vec::new(), tokens: Vec::new(), bounds: vec![0] }
    }

    pub fn len(&self) -> usize {
        self.prompts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }

    pub fn push(&mut self, prompt: u32, chosen: &[u32], rejected: &[u32]) {
        self.prompts.push(prompt);
        self.tokens.extend_from_slice(chosen);
        self.bounds.push(self.tokens.len());
        self.tokens.extend_from_slice(rejected);
        self.bounds.push(self.tokens.len());
    }

    /// The chosen and rejected tokens of pair `i`.
    #[inline]
    pub fn pair(&self, i: usize) -> (&[u32], &[u32]) {
        let (a, b, c) = (self.bounds[2 * i], self.bounds[2 * i + 1], self.bounds[2 * i + 2]);
        (&self.tokens[a..b], &self.tokens[b..c])
    }

    /// Every pair's prompt below `n_prompts`, every response non-empty and in the vocabulary.
    pub fn check(&self, n_prompts: usize, vocab_size: usize) -> Result<()> {
        if self.is_empty() {
            return Err(Error::invalid("pairs must not be empty"));
        }
        if self.len() > u32::MAX as usize {
            return Err(Error::invalid(format!("pairs must hold fewer than 2**32 pairs, got {}", self.len())));
        }
        if self.bounds.len() != 2 * self.len() + 1 || self.bounds.last() != Some(&self.tokens.len()) {
            return Err(Error::invalid("pairs are malformed: bounds do not match the tokens"));
        }
        for i in 0..self.len() {
            if self.prompts[i] as usize >= n_prompts {
                return Err(Error::invalid(format!("pairs[{i}] has prompt row {} of {n_prompts}", self.prompts[i])));
            }
            let (chosen, rejected) = self.pair(i);
            check_response(&format!("pairs[{i}] chosen"), chosen, vocab_size)?;
            check_response(&format!("pairs[{i}] rejected"), rejected, vocab_size)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(loss_type: LossType, beta: f64, ls: f64) -> DpoParams {
        DpoParams::new(beta, 1e-4, loss_type, ls).unwrap()
    }

    fn loss_at(logits: &[f64], reference: &[f64], chosen: &[u32], rejected: &[u32], p: &DpoParams) -> f64 {
        let mut probe = logits.to_vec();
        dpo_step_metrics(&mut probe, reference, chosen, rejected, p).unwrap().loss
    }

    #[test]
    fn dpo_step_refuses_a_loss_that_is_not_finite_and_leaves_the_logits() {
        let wild = DpoParams::new(1e308, 5e-324, LossType::Sigmoid, 0.0).unwrap();
        let mut logits = [-5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let err = dpo_step_metrics(&mut logits, &[0.0; 8], &[0], &[1], &wild).unwrap_err();
        assert_eq!(err, Error::Diverged("dpo_step diverged: loss overflowed (lr=5e-324, beta=1e+308)".into()));
        assert_eq!(logits, [-5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        // Only the loss is dpo_step's to return: infinite rewards beside a finite loss pass.
        let ipo = DpoParams::new(1e308, 5e-324, LossType::Hinge, 0.0).unwrap();
        let out = dpo_step_metrics(&mut logits, &[0.0; 8], &[1], &[0], &ipo).unwrap();
        assert!(out.loss.is_finite() && out.chosen.is_finite() && out.rejected.is_infinite(), "{out:?}");
    }

    #[test]
    fn every_loss_type_steps_along_its_negative_gradient() {
        let theta = [0.2, -0.4, 0.9, 0.0, 0.3];
        let reference = [0.0, 0.1, -0.3, 0.2, -0.1];
        let (chosen, rejected) = ([0u32, 0, 2], [1u32, 3]);
        let cases = [
            (LossType::Sigmoid, 0.5, 0.0),
            (LossType::Sigmoid, 0.5, 0.2),
            (LossType::Robust, 0.7, 0.0),
            (LossType::Robust, 0.7, 0.3),
            (LossType::Ipo, 0.5, 0.0),
            (LossType::Ipo, 2.0, 0.0),
            (LossType::Hinge, 0.5, 0.0), // h < 1: the hinge is active
        ];
        for (loss_type, beta, ls) in cases {
            let p = params(loss_type, beta, ls);
            let mut stepped = theta;
            dpo_step_metrics(&mut stepped, &reference, &chosen, &rejected, &p).unwrap();
            for j in 0..theta.len() {
                let h = 1e-6;
                let (mut up, mut down) = (theta, theta);
                up[j] += h;
                down[j] -= h;
                let fd = (loss_at(&up, &reference, &chosen, &rejected, &p)
                    - loss_at(&down, &reference, &chosen, &rejected, &p))
                    / (2.0 * h);
                let moved = stepped[j] - theta[j];
                assert!((moved + p.lr * fd).abs() < 1e-10, "{loss_type:?} ls={ls} j={j}: {moved} vs {}", -p.lr * fd);
            }
        }
    }

    #[test]
    fn hinge_is_flat_past_the_margin_and_robust_without_smoothing_is_sigmoid() {
        // beta u >= 1: no loss, no update.
        let mut theta = [3.0, -3.0, 0.0];
        let before = theta;
        let out = dpo_step_metrics(&mut theta, &[0.0; 3], &[0], &[1], &params(LossType::Hinge, 1.0, 0.0)).unwrap();
        assert_eq!(out.loss, 0.0);
        assert_eq!(theta, before);
        let (mut a, mut b) = ([0.2, -0.1, 0.4], [0.2, -0.1, 0.4]);
        let sig = dpo_step_metrics(&mut a, &[0.0; 3], &[0, 2], &[1], &params(LossType::Sigmoid, 0.3, 0.0)).unwrap();
        let rob = dpo_step_metrics(&mut b, &[0.0; 3], &[0, 2], &[1], &params(LossType::Robust, 0.3, 0.0)).unwrap();
        assert_eq!(sig.loss, rob.loss);
        assert_eq!(a, b);
    }

    #[test]
    fn metrics_are_trls_rewards() {
        let mut theta = [0.5, -0.5, 0.0];
        let reference = [0.0; 3];
        let out = dpo_step_metrics(&mut theta, &reference, &[0, 0], &[1], &params(LossType::Ipo, 0.1, 0.0)).unwrap();
        let logp = crate::kernels::softmax::log_softmax(&[0.5, -0.5, 0.0]).unwrap();
        let logq = (1.0f64 / 3.0).ln();
        assert!((out.chosen - 0.1 * 2.0 * (logp[0] - logq)).abs() < 1e-15);
        assert!((out.rejected - 0.1 * (logp[1] - logq)).abs() < 1e-15);
        assert_eq!(out.margin, out.chosen - out.rejected);
        assert_eq!(out.accuracy, 1.0);
        // IPO's margin averages each log-ratio over its response: two tokens chosen, one rejected.
        let t = (out.chosen / 2.0 - out.rejected) / 0.1 - 5.0;
        assert!((out.loss - t * t).abs() < 1e-12);
    }

    fn dpo_step(
        logits: &mut [f64],
        reference: &[f64],
        chosen: &[u32],
        rejected: &[u32],
        beta: f64,
        lr: f64,
    ) -> Result<f64> {
        let params = DpoParams::new(beta, lr, LossType::Sigmoid, 0.0)?;
        Ok(dpo_step_metrics(logits, reference, chosen, rejected, &params)?.loss)
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
        assert!(dpo_step(&mut theta, &[0.0; 3], &[0], &[1], 0.1, f64::NAN).unwrap_err().to_string().contains("lr"));
        assert_eq!(theta, [0.0; 3]);
        let err = |loss, ls| DpoParams::new(0.1, 0.1, loss, ls).unwrap_err().to_string();
        assert!(err(LossType::Sigmoid, 0.5).contains("label_smoothing"));
        assert!(err(LossType::Sigmoid, -0.1).contains("label_smoothing"));
        assert!(err(LossType::Robust, f64::NAN).contains("label_smoothing"));
        assert!(err(LossType::Ipo, 0.1).contains("label_smoothing"));
        assert!(err(LossType::Hinge, 0.1).contains("label_smoothing"));
        assert!(LossType::parse("kto").unwrap_err().to_string().contains("loss_type"));
        assert_eq!(LossType::parse("ipo").unwrap(), LossType::Ipo);
        let p = params(LossType::Sigmoid, 0.1, 0.0);
        let mut nan_theta = [0.0, f64::NAN, 0.0];
        assert!(dpo_step_metrics(&mut nan_theta, &[0.0; 3], &[0], &[1], &p).unwrap_err().to_string().contains("theta"));
        assert!(dpo_step_metrics(&mut theta, &[0.0; 2], &[0], &[1], &p).is_err());
        let wild = DpoParams::new(0.1, 1e300, LossType::Sigmoid, 0.0).unwrap();
        let err = dpo_step_metrics(&mut theta, &[0.0; 3], &[0], &[1], &wild).unwrap_err();
        assert_eq!(err, Error::Diverged("dpo_step diverged: logits overflowed (lr=1e+300, beta=0.1)".to_owned()));
        assert_eq!(theta, [0.0; 3]);
    }
}
