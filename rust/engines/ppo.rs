//! Fused training loops: a whole run in Rust on one seeded stream, drawing exactly what the
//! reference's loop draws.

use crate::error::{finite_slice, Error, Result};
use crate::kl::kl_to_log;
use crate::kl_control::KlController;
use crate::ppo::{rlhf_step, PpoParams, StepScratch};
use crate::rng::Mt19937;
use crate::softmax::{log_softmax_into, softmax_into};

/// A policy table: `n_prompts` rows of `vocab_size` logits, row-major.
fn check_policy(name: &str, logits: &[f64], vocab_size: usize) -> Result<usize> {
    if vocab_size == 0 || logits.is_empty() || !logits.len().is_multiple_of(vocab_size) {
        return Err(Error::invalid(format!(
            "{name} must hold whole rows of {vocab_size} logits, got {} values",
            logits.len()
        )));
    }
    finite_slice(name, logits)?;
    Ok(logits.len() / vocab_size)
}

/// Per-step record of a PPO-RLHF run (TRL: `objective/scores`, `objective/kl`,
/// `objective/rlhf_reward`, `policy/clipfrac_avg`), plus the coefficient used and the
/// running mean KL, the lesson's monitor.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RlhfHistory {
    pub prompt: Vec<u32>,
    pub token: Vec<u32>,
    pub score: Vec<f64>,
    pub kl: Vec<f64>,
    pub reward: Vec<f64>,
    pub clip_frac: Vec<f64>,
    pub beta: Vec<f64>,
    pub mean_kl: Vec<f64>,
    pub kl_penalty: Vec<f64>,
    pub value_loss: Vec<f64>,
}

impl RlhfHistory {
    fn with_capacity(steps: usize) -> Self {
        RlhfHistory {
            prompt: Vec::with_capacity(steps),
            token: Vec::with_capacity(steps),
            score: Vec::with_capacity(steps),
            kl: Vec::with_capacity(steps),
            reward: Vec::with_capacity(steps),
            clip_frac: Vec::with_capacity(steps),
            beta: Vec::with_capacity(steps),
            mean_kl: Vec::with_capacity(steps),
            kl_penalty: Vec::with_capacity(steps),
            value_loss: Vec::with_capacity(steps),
        }
    }
}

/// `steps` PPO-RLHF steps on the stream `random.Random(seed)` (its `init_by_array` key).
///
/// Each step draws the prompt as `rng.choice(PROMPTS)` and the token with `rng.random()`,
/// uses the controller's coefficient, then feeds the controller the step's exact KL.
/// `theta` is updated in place; `reference` is the frozen policy of the same shape,
/// `weights[j]` the reward of token `j`, and `values` the per-prompt baseline (updated only
/// when `params.vf_coef > 0`).
#[allow(clippy::too_many_arguments)]
pub fn train_rlhf(
    theta: &mut [f64],
    reference: &[f64],
    weights: &[f64],
    steps: usize,
    seed_key: &[u32],
    params: &PpoParams,
    mut controller: KlController,
    values: &mut [f64],
) -> Result<RlhfHistory> {
    let vocab_size = weights.len();
    finite_slice("w", weights)?;
    let n_prompts = check_policy("theta", theta, vocab_size)?;
    if check_policy("ref", reference, vocab_size)? != n_prompts {
        return Err(Error::invalid("ref must have the same shape as theta"));
    }
    if values.len() != n_prompts {
        return Err(Error::invalid(format!("value must hold one value per prompt ({n_prompts})")));
    }
    finite_slice("value", values)?;
    if steps == 0 {
        return Err(Error::invalid("steps must be >= 1, got 0"));
    }

    // The frozen reference never changes: its log-probabilities once per prompt.
    let mut ref_log_probs = vec![0.0; reference.len()];
    for (row, out) in reference.chunks_exact(vocab_size).zip(ref_log_probs.chunks_exact_mut(vocab_size)) {
        log_softmax_into(row, out);
    }
    let mut rng = Mt19937::from_key(seed_key);
    let mut scratch = StepScratch::new(vocab_size);
    let mut history = RlhfHistory::with_capacity(steps);
    let mut kl_sum = 0.0;
    for t in 0..steps {
        let prompt = rng.randbelow(n_prompts as u32) as usize;
        let row = prompt * vocab_size..(prompt + 1) * vocab_size;
        let beta = controller.value();
        let u = rng.random();
        let logits = &mut theta[row.clone()];
        let out =
            rlhf_step(logits, &ref_log_probs[row.clone()], weights, u, beta, params, &mut values[prompt], &mut scratch);
        if !theta[row].iter().all(|v| v.is_finite()) {
            return Err(Error::Diverged(format!(
                "train_rlhf diverged at step {t}: non-finite logits (beta={})",
                crate::error::py_float(beta)
            )));
        }
        kl_sum += out.kl;
        history.prompt.push(prompt as u32);
        history.token.push(out.token as u32);
        history.score.push(out.score);
        history.kl.push(out.kl);
        history.reward.push(out.reward);
        history.clip_frac.push(out.clip_frac);
        history.beta.push(beta);
        history.mean_kl.push(kl_sum / (t + 1) as f64);
        history.kl_penalty.push(out.kl_penalty);
        history.value_loss.push(out.value_loss);
        controller.update(out.kl, 1.0);
    }
    Ok(history)
}

/// Exact `KL(pi_theta || pi_ref)` averaged over the prompts, in log space.
pub fn policy_kl(theta: &[f64], reference: &[f64], vocab_size: usize) -> Result<f64> {
    let n_prompts = check_policy("theta", theta, vocab_size)?;
    if check_policy("ref", reference, vocab_size)? != n_prompts {
        return Err(Error::invalid("ref must have the same shape as theta"));
    }
    let (mut p, mut ln_q) = (vec![0.0; vocab_size], vec![0.0; vocab_size]);
    let mut total = 0.0;
    for (row, ref_row) in theta.chunks_exact(vocab_size).zip(reference.chunks_exact(vocab_size)) {
        softmax_into(row, &mut p);
        log_softmax_into(ref_row, &mut ln_q);
        total += kl_to_log(&p, &ln_q);
    }
    Ok(total / n_prompts as f64)
}

/// Exact expected RM score of a policy: `sum_x sum_a pi(a|x) w[a] / n_prompts`.
pub fn expected_score(theta: &[f64], weights: &[f64]) -> Result<f64> {
    let vocab_size = weights.len();
    finite_slice("w", weights)?;
    let n_prompts = check_policy("theta", theta, vocab_size)?;
    let mut p = vec![0.0; vocab_size];
    let mut total = 0.0;
    for row in theta.chunks_exact(vocab_size) {
        softmax_into(row, &mut p);
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
    use crate::rng::seed_key;

    const WEIGHTS: [f64; 8] = [1.5, 1.5, -1.6, -1.5, 1.6, 1.6, -1.5, -1.5];

    fn run(beta: f64, seed: i128, steps: usize) -> (Vec<f64>, RlhfHistory) {
        let mut theta = vec![0.0; 24];
        let params = PpoParams::new(0.2, 0.05, 4).unwrap();
        let history = train_rlhf(
            &mut theta,
            &[0.0; 24],
            &WEIGHTS,
            steps,
            &seed_key(seed),
            &params,
            KlController::fixed(beta).unwrap(),
            &mut [0.0; 3],
        )
        .unwrap();
        (theta, history)
    }

    #[test]
    fn policy_learns_the_good_words_and_the_kl_monitor_tracks_the_mean() {
        let (theta, history) = run(0.1, 3, 2000);
        let before = expected_score(&[0.0; 24], &WEIGHTS).unwrap();
        let after = expected_score(&theta, &WEIGHTS).unwrap();
        assert!(after > before + 1.0, "{before} -> {after}");
        let mean: f64 = history.kl.iter().sum::<f64>() / 2000.0;
        assert!((history.mean_kl[1999] - mean).abs() < 1e-12);
        assert!(history.kl.iter().all(|&k| k >= 0.0));
        assert_eq!(history.kl[0], 0.0); // theta starts at the reference
    }

    #[test]
    fn same_seed_same_run_other_seed_other_run() {
        assert_eq!(run(0.1, 11, 300), run(0.1, 11, 300));
        assert_ne!(run(0.1, 11, 300).1.token, run(0.1, 12, 300).1.token);
    }

    #[test]
    fn beta_pulls_the_policy_toward_the_reference() {
        let kl_free = run(0.0, 5, 2000).1.mean_kl[1999];
        let held = run(10.0, 5, 2000).1.mean_kl[1999];
        assert!(held < kl_free, "{held} !< {kl_free}");
    }

    #[test]
    fn bad_shapes_and_values_are_errors_not_panics() {
        let params = PpoParams::new(0.2, 0.05, 4).unwrap();
        let fixed = KlController::fixed(0.1).unwrap();
        let mut theta = vec![0.0; 24];
        assert!(train_rlhf(&mut theta, &[0.0; 16], &WEIGHTS, 10, &[0], &params, fixed, &mut [0.0; 3]).is_err());
        assert!(train_rlhf(&mut [0.0; 20], &[0.0; 20], &WEIGHTS, 10, &[0], &params, fixed, &mut [0.0; 3]).is_err());
        assert!(train_rlhf(&mut theta, &[0.0; 24], &WEIGHTS, 0, &[0], &params, fixed, &mut [0.0; 3]).is_err());
        theta[3] = f64::NAN;
        let err = train_rlhf(&mut theta, &[0.0; 24], &WEIGHTS, 10, &[0], &params, fixed, &mut [0.0; 3]).unwrap_err();
        assert!(err.to_string().contains("theta[3]"), "{err}");
    }

    #[test]
    fn divergence_is_reported() {
        // The doubling rule with a target no run stays under sends beta to infinity.
        let params = PpoParams::new(0.2, 0.05, 4).unwrap();
        let mut theta = vec![0.0; 24];
        let runaway = KlController::doubling(1.0, 1e-12).unwrap();
        let err =
            train_rlhf(&mut theta, &[0.0; 24], &WEIGHTS, 5000, &[0], &params, runaway, &mut [0.0; 3]).unwrap_err();
        assert!(matches!(err, Error::Diverged(_)), "{err}");
    }
}
