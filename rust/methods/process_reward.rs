//! A process reward model (issue 11 item 4; SPEC §7): a tabular logistic model of
//! `P(step correct)` per (prompt, step, token), `score[p, k, v] = sigmoid(z[p, k, v])`, fitted
//! to step labels of sampled responses. Its loss is the step labels' negative log-likelihood
//! (a sum, so a cell's curvature grows with its count) plus an L2 prior on the logits:
//!
//! ```text
//! loss = sum_i sum_k (softplus(z[p_i, k, a_ik]) - y_ik z[p_i, k, a_ik]) + (l2 / 2) sum z^2
//! d loss / d z[c] = sum over the labels of cell c of (sigmoid(z[c]) - y) + l2 z[c]
//! ```
//!
//! Sums run left to right (responses, then steps; then the cells in order), as the reference
//! twin (`python/rlhf_fast/reference/methods/process_reward.py`) sums.

use crate::error::{Error, Result};
use crate::kernels::logistic::{sigmoid, softplus};

/// Step labels of `n` responses of `K` steps in a world of `[P, K, V]` cells, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct StepLabels<'a> {
    pub shape: [usize; 3],
    /// `[n]`, each in `[0, P)`.
    pub prompts: &'a [usize],
    /// `[n, K]`, each in `[0, V)`.
    pub tokens: &'a [usize],
    /// `[n, K]`, each in `[0, 1]` (1: the labeller says the step is right).
    pub labels: &'a [f64],
}

impl<'a> StepLabels<'a> {
    /// Checks the sizes and ranges, each error naming its argument and entry.
    pub fn new(shape: [usize; 3], prompts: &'a [usize], tokens: &'a [usize], labels: &'a [f64]) -> Result<Self> {
        let [n_prompts, n_steps, vocab] = shape;
        if n_prompts == 0 || n_steps == 0 || vocab == 0 {
            return Err(Error::invalid(format!("shape must be positive, got {shape:?}")));
        }
        let n = prompts.len();
        if n == 0 {
            return Err(Error::invalid("prompts must hold at least one response, got 0"));
        }
        for (name, len) in [("tokens", tokens.len()), ("labels", labels.len())] {
            if Some(len) != n.checked_mul(n_steps) {
                return Err(Error::invalid(format!("{name} must have shape [{n}, {n_steps}], got {len} values")));
            }
        }
        if let Some(i) = prompts.iter().position(|&p| p >= n_prompts) {
            return Err(Error::invalid(format!("prompts[{i}] must be in [0, {n_prompts}), got {}", prompts[i])));
        }
        if let Some(i) = tokens.iter().position(|&a| a >= vocab) {
            let (b, k) = (i / n_steps, i % n_steps);
            return Err(Error::invalid(format!("tokens[{b}, {k}] must be in [0, {vocab}), got {}", tokens[i])));
        }
        if let Some(i) = labels.iter().position(|y| !(0.0..=1.0).contains(y)) {
            let (b, k) = (i / n_steps, i % n_steps);
            return Err(Error::invalid(format!(
                "labels[{b}, {k}] must be in [0, 1], got {}",
                crate::error::py_float(labels[i])
            )));
        }
        Ok(StepLabels { shape, prompts, tokens, labels })
    }
}

/// The loss at logits `z [P, K, V]` on `data`; its gradient is added into `grad`.
pub fn prm_loss_and_grad(z: &[f64], data: &StepLabels<'_>, l2: f64, grad: &mut [f64]) -> f64 {
    let [_, n_steps, vocab] = data.shape;
    let mut loss = 0.0;
    for (i, &p) in data.prompts.iter().enumerate() {
        for k in 0..n_steps {
            let (a, y) = (data.tokens[i * n_steps + k], data.labels[i * n_steps + k]);
            let c = (p * n_steps + k) * vocab + a;
            loss += softplus(z[c]) - y * z[c];
            grad[c] += sigmoid(z[c]) - y;
        }
    }
    let mut squares = 0.0;
    for (g, &x) in grad.iter_mut().zip(z) {
        squares += x * x;
        *g += l2 * x;
    }
    loss + 0.5 * l2 * squares
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gradient_is_the_loss_slope() {
        let shape = [2, 2, 3];
        let (prompts, tokens, labels) = ([0, 1, 1], [0, 2, 1, 2, 1, 0], [1.0, 0.0, 0.25, 1.0, 0.0, 1.0]);
        let data = StepLabels::new(shape, &prompts, &tokens, &labels).unwrap();
        let z: Vec<f64> = (0..12).map(|i| ((i * 7 % 5) as f64 - 2.0) / 3.0).collect();
        let mut grad = vec![0.0; 12];
        prm_loss_and_grad(&z, &data, 0.3, &mut grad);
        for c in 0..12 {
            let at = |h: f64| {
                let mut moved = z.clone();
                moved[c] += h;
                prm_loss_and_grad(&moved, &data, 0.3, &mut [0.0; 12])
            };
            let slope = (at(1e-6) - at(-1e-6)) / 2e-6;
            assert!((slope - grad[c]).abs() < 1e-7, "{c}: {slope} vs {}", grad[c]);
        }
    }

    #[test]
    fn bad_labels_are_refused_naming_the_entry() {
        let err = |prompts: &[usize], tokens: &[usize], labels: &[f64]| {
            StepLabels::new([2, 2, 3], prompts, tokens, labels).unwrap_err().to_string()
        };
        assert_eq!(err(&[0], &[0, 3], &[1.0, 0.0]), "tokens[0, 1] must be in [0, 3), got 3");
        assert_eq!(err(&[2], &[0, 1], &[1.0, 0.0]), "prompts[0] must be in [0, 2), got 2");
        assert_eq!(err(&[0], &[0, 1], &[1.0, 1.5]), "labels[0, 1] must be in [0, 1], got 1.5");
        assert_eq!(err(&[0], &[0], &[1.0]), "tokens must have shape [1, 2], got 1 values");
    }
}
