//! Training a process reward model ([`crate::methods::process_reward`]): plain gradient
//! descent from zero logits, `epochs` full passes over the step labels. The reference twin is
//! `python/rlhf_fast/reference/engines/process_reward.py`.

use crate::error::{non_negative, overflowed, positive, py_float, vec_with_capacity, Error, Result};
use crate::methods::process_reward::{prm_loss_and_grad, StepLabels};

/// Most epochs a fit may ask for: its work stays bounded.
pub const MAX_PRM_EPOCHS: usize = 1 << 20;

/// A fitted process reward model: its logits `z [P, K, V]` and the loss before each epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessRewardFit {
    pub logits: Vec<f64>,
    pub losses: Vec<f64>,
}

/// `epochs` steps of `z -= lr * grad` on `data` from `z = 0`; an error naming the epoch if the
/// logits or the loss stop being finite, and naming bad settings.
pub fn train_process_reward_model(data: &StepLabels<'_>, epochs: usize, lr: f64, l2: f64) -> Result<ProcessRewardFit> {
    if !(1..=MAX_PRM_EPOCHS).contains(&epochs) {
        return Err(Error::invalid(format!("epochs must be in [1, {MAX_PRM_EPOCHS}], got {epochs}")));
    }
    let lr = positive("lr", lr)?;
    let l2 = non_negative("l2", l2)?;
    let [p, k, v] = data.shape;
    let cells = p
        .checked_mul(k)
        .and_then(|n| n.checked_mul(v))
        .ok_or_else(|| Error::invalid("shape does not fit in memory"))?;
    let mut logits = vec_with_capacity(cells, "the process reward model")?;
    logits.resize(cells, 0.0);
    let mut grad = vec_with_capacity(cells, "the process reward model's gradient")?;
    grad.resize(cells, 0.0);
    let mut losses = vec_with_capacity(epochs, "the losses")?;
    for epoch in 0..epochs {
        grad.iter_mut().for_each(|g| *g = 0.0);
        let loss = prm_loss_and_grad(&logits, data, l2, &mut grad);
        for (x, &g) in logits.iter_mut().zip(&grad) {
            *x -= lr * g;
        }
        if !loss.is_finite() || overflowed(&logits) {
            return Err(Error::Diverged(format!(
                "the process reward model diverged at epoch {epoch} (lr={}, l2={})",
                py_float(lr),
                py_float(l2)
            )));
        }
        losses.push(loss);
    }
    Ok(ProcessRewardFit { logits, losses })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_labels_are_learnt_and_the_loss_falls() {
        // One prompt, one step, three tokens: token 1 always right, token 0 always wrong.
        let (prompts, tokens, labels) = ([0; 6], [1, 1, 1, 0, 0, 2], [1.0, 1.0, 1.0, 0.0, 0.0, 1.0]);
        let data = StepLabels::new([1, 1, 3], &prompts, &tokens, &labels).unwrap();
        let fit = train_process_reward_model(&data, 300, 0.2, 0.01).unwrap();
        let score = |a: usize| crate::kernels::logistic::sigmoid(fit.logits[a]);
        assert!(score(1) > 0.9 && score(0) < 0.1 && score(2) > 0.5, "{:?}", fit.logits);
        assert!(fit.losses.windows(2).all(|w| w[1] <= w[0]));
        let err = train_process_reward_model(&data, 5, 1e300, 0.0).unwrap_err();
        assert!(err.to_string().starts_with("the process reward model diverged at epoch"), "{err}");
        assert_eq!(
            train_process_reward_model(&data, 0, 0.1, 0.0).unwrap_err().to_string(),
            "epochs must be in [1, 1048576], got 0"
        );
    }
}
