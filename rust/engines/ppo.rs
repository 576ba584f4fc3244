//! PPO-RLHF runs: the single-run loop [`train_rlhf`], and the sweep engine [`PpoEngine`] that
//! advances runs eight at a time in the lanes of `ppo_lanes.rs` (where its `Engine` impl is).

use super::driver::{Monitor, Ticker};
use crate::error::{
    default_max_memory, finite_slice, fits_in_memory, overflowed, record_overflowed, reserve, Error, Result,
};
use crate::kernels::policy::check_policy_pair;
use crate::kernels::simd::Simd;
use crate::kernels::softmax::log_softmax_rows;
use crate::methods::kl_control::KlController;
use crate::methods::ppo::{rlhf_step, PpoParams, StepScratch};
use crate::rng::Mt19937;

/// The lane engine's vocabulary size: the lesson's `VOCAB`.
pub const VOCAB_SIZE: usize = 8;

/// The per-step series of a PPO sweep's history, TRL's names where TRL has one ('/' as '_').
pub const PPO_HISTORY_FIELDS: [&str; 10] = [
    "prompt",
    "token",
    "objective_scores",
    "objective_kl",
    "objective_rlhf_reward",
    "policy_clipfrac_avg",
    "objective_kl_coef",
    "mean_kl",
    "penalised_kl",
    "loss_value_avg",
];
/// Per-run results of a PPO sweep, kept whatever the history setting.
pub const PPO_SUMMARY_FIELDS: [&str; 7] =
    ["final_score", "final_kl", "mean_score", "mean_reward", "mean_kl", "clip_frac", "final_beta"];

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

/// Bytes a step of [`train_rlhf`] counts against `max_memory` (ten series of 8 bytes; the
/// reference counts the same).
pub const RLHF_BYTES_PER_STEP: u64 = 10 * 8;

impl RlhfHistory {
    /// Room for `steps` more steps in every series, or [`Error::OutOfMemory`].
    fn reserve(&mut self, steps: usize) -> Result<()> {
        let what = "the history of train_rlhf";
        reserve(&mut self.prompt, steps, what)?;
        reserve(&mut self.token, steps, what)?;
        for series in [
            &mut self.score,
            &mut self.kl,
            &mut self.reward,
            &mut self.clip_frac,
            &mut self.beta,
            &mut self.mean_kl,
            &mut self.kl_penalty,
            &mut self.value_loss,
        ] {
            reserve(series, steps, what)?;
        }
        Ok(())
    }
}

/// `steps` PPO-RLHF steps on the stream `random.Random(seed)` (its `init_by_array` key),
/// appending each step's record to `history`.
///
/// Each step draws the prompt as `rng.choice(PROMPTS)` and the token with `rng.random()`,
/// uses the controller's coefficient, then feeds the controller the step's exact KL.
/// `theta` is updated in place; `reference` is the frozen policy of the same shape,
/// `weights[j]` the reward of token `j`, and `values` the per-prompt baseline (updated only
/// when `params.vf_coef > 0`). A run whose logits or value overflow (see
/// [`crate::error::overflowed`]), or whose step records a float that is not finite (the
/// first in the history's order is named), stops with an error, `history` as it stood before the failing
/// step (the lesson's KL monitor reads it) and `theta` as that step left it. `steps` is
/// checked against half the machine's memory before anything is allocated; `monitor` is
/// ticked as the run goes and stops it when cancelled.
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
    history: &mut RlhfHistory,
    monitor: &Monitor,
) -> Result<()> {
    let vocab_size = weights.len();
    finite_slice("w", weights)?;
    let n_prompts = check_policy_pair(theta, reference, vocab_size)?;
    if values.len() != n_prompts {
        return Err(Error::invalid(format!("value must hold one value per prompt ({n_prompts})")));
    }
    finite_slice("value", values)?;
    if steps == 0 {
        return Err(Error::invalid("steps must be >= 1, got 0"));
    }
    fits_in_memory("steps", steps as u64, RLHF_BYTES_PER_STEP, default_max_memory())?;
    history.reserve(steps)?;

    // The frozen reference never changes: its log-probabilities once per prompt.
    let ref_log_probs = log_softmax_rows(reference, vocab_size);
    let mut rng = Mt19937::from_key(seed_key);
    let mut scratch = StepScratch::new(vocab_size);
    let mut kl_sum = 0.0;
    let mut ticker = Ticker::new(monitor);
    let work_per_step = (1 + u64::from(params.ppo_epochs)) * vocab_size as u64;
    for t in 0..steps {
        let prompt = rng.randbelow(n_prompts as u32) as usize;
        let row = prompt * vocab_size..(prompt + 1) * vocab_size;
        let beta = controller.value();
        let u = rng.random();
        let logits = &mut theta[row.clone()];
        let out =
            rlhf_step(logits, &ref_log_probs[row.clone()], weights, u, beta, params, &mut values[prompt], &mut scratch);
        let diverged = |key: &str| record_overflowed(&format!("train_rlhf diverged at step {t}"), key, params.lr, beta);
        if overflowed(&theta[row]) | overflowed(std::slice::from_ref(&values[prompt])) {
            return Err(diverged("logits"));
        }
        kl_sum += out.kl;
        let mean_kl = kl_sum / (t + 1) as f64;
        if let Some(key) = out.nonfinite_key(Some((beta, mean_kl))) {
            return Err(diverged(key));
        }
        history.prompt.push(prompt as u32);
        history.token.push(out.token as u32);
        history.score.push(out.score);
        history.kl.push(out.kl);
        history.reward.push(out.reward);
        history.clip_frac.push(out.clip_frac);
        history.beta.push(beta);
        history.mean_kl.push(mean_kl);
        history.kl_penalty.push(out.kl_penalty);
        history.value_loss.push(out.value_loss);
        controller.update(out.kl, 1.0);
        if !controller.value().is_finite() {
            // the doubling rule, doubled past the floats: the step stays recorded
            return Err(record_overflowed(&format!("train_rlhf diverged at step {t}"), "beta", params.lr, beta));
        }
        ticker.advance(1, work_per_step)?;
    }
    ticker.flush()
}

/// One run of a PPO sweep: its stream (the seed's `init_by_array` key), PPO settings and
/// KL controller.
#[derive(Clone, Debug)]
pub struct PpoRun {
    pub seed_key: Vec<u32>,
    pub params: PpoParams,
    pub controller: KlController,
}

/// What every run of a PPO sweep shares: each run is [`train_rlhf`] from `theta0` with its
/// own zero value baseline, on the lesson's vocabulary.
#[derive(Clone, Copy, Debug)]
pub struct PpoEngine<'a> {
    /// The starting policy, `n_prompts x VOCAB_SIZE` row-major.
    pub theta0: &'a [f64],
    /// The frozen reference policy, same shape.
    pub reference: &'a [f64],
    /// The reward model's weight of each token.
    pub weights: &'a [f64],
    pub steps: usize,
    /// Keep steps `k-1, 2k-1, ...` of the history; 0 keeps none (summaries only).
    pub record_every: usize,
    /// Use libm's `exp` and `ln` per token, as the reference does: every float bit-identical
    /// to `train_rlhf`'s, at a fraction of the speed of the vectorised functions.
    pub exact: bool,
    pub simd: Simd,
}

impl PpoEngine<'_> {
    /// Checks what the runs share.
    pub fn new<'a>(
        theta0: &'a [f64],
        reference: &'a [f64],
        weights: &'a [f64],
        steps: usize,
        record_every: usize,
        exact: bool,
        simd: Simd,
    ) -> Result<PpoEngine<'a>> {
        if weights.len() != VOCAB_SIZE {
            return Err(Error::invalid(format!("w must give {VOCAB_SIZE} token weights")));
        }
        finite_slice("w", weights)?;
        let n_prompts = check_policy_pair(theta0, reference, VOCAB_SIZE)?;
        if n_prompts > u32::MAX as usize {
            return Err(Error::invalid("theta has too many prompts"));
        }
        if steps == 0 {
            return Err(Error::invalid("steps must be >= 1, got 0"));
        }
        Ok(PpoEngine { theta0, reference, weights, steps, record_every, exact, simd })
    }

    pub fn n_prompts(&self) -> usize {
        self.theta0.len() / VOCAB_SIZE
    }

    /// Kept steps per run.
    pub fn n_kept(&self) -> usize {
        self.steps.checked_div(self.record_every).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::driver::{sweep, SweepOutput};
    use crate::error::py_float;
    use crate::kernels::policy::{expected_score, policy_kl};
    use crate::rng::seed_key;

    const WEIGHTS: [f64; 8] = [1.5, 1.5, -1.6, -1.5, 1.6, 1.6, -1.5, -1.5];
    const ZEROS: [f64; 24] = [0.0; 24];

    /// [`train_rlhf`] from `theta` with a zero baseline: the history (up to a failing step) and
    /// the outcome.
    fn train(
        theta: &mut [f64],
        reference: &[f64],
        weights: &[f64],
        steps: usize,
        key: &[u32],
        params: &PpoParams,
        controller: KlController,
    ) -> (RlhfHistory, Result<()>) {
        let mut history = RlhfHistory::default();
        let values = &mut vec![0.0; theta.len() / VOCAB_SIZE];
        let outcome = train_rlhf(
            theta,
            reference,
            weights,
            steps,
            key,
            params,
            controller,
            values,
            &mut history,
            &Monitor::default(),
        );
        (history, outcome)
    }

    fn run(beta: f64, seed: i128, steps: usize) -> (Vec<f64>, RlhfHistory) {
        let mut theta = vec![0.0; 24];
        let params = PpoParams::new(0.2, 0.05, 4).unwrap();
        let controller = KlController::fixed(beta).unwrap();
        let (history, outcome) = train(&mut theta, &[0.0; 24], &WEIGHTS, steps, &seed_key(seed), &params, controller);
        outcome.unwrap();
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
        assert!(train(&mut theta, &[0.0; 16], &WEIGHTS, 10, &[0], &params, fixed).1.is_err());
        assert!(train(&mut [0.0; 20], &[0.0; 20], &WEIGHTS, 10, &[0], &params, fixed).1.is_err());
        assert!(train(&mut theta, &[0.0; 24], &WEIGHTS, 0, &[0], &params, fixed).1.is_err());
        let mut short = RlhfHistory::default();
        let values = &mut [0.0; 2];
        let monitor = Monitor::default();
        assert!(train_rlhf(&mut theta, &[0.0; 24], &WEIGHTS, 1, &[0], &params, fixed, values, &mut short, &monitor)
            .is_err());
        theta[3] = f64::NAN;
        let err = train(&mut theta, &[0.0; 24], &WEIGHTS, 10, &[0], &params, fixed).1.unwrap_err();
        assert!(err.to_string().contains("theta[3]"), "{err}");
    }

    #[test]
    fn divergence_is_reported() {
        // The doubling rule with a target no run stays under sends beta to infinity.
        let params = PpoParams::new(0.2, 0.05, 4).unwrap();
        let mut theta = vec![0.0; 24];
        let runaway = KlController::doubling(1.0, 1e-12).unwrap();
        let (history, outcome) = train(&mut theta, &[0.0; 24], &WEIGHTS, 5000, &[0], &params, runaway);
        let err = outcome.unwrap_err();
        assert!(matches!(err, Error::Diverged(_)), "{err}");
        // The history stops before the failing step, and theta stands as it was then.
        let failed_at = history.kl.len();
        assert!(err.to_string().contains(&format!("at step {failed_at}:")), "{err}");
        assert!(history.mean_kl.iter().all(|k| k.is_finite()));
    }

    // ------------------------------------------------------------------------- the sweep

    const SWEEP_WEIGHTS: [f64; 8] = [1.54, 1.51, -1.68, -1.54, 1.56, 1.59, -1.51, -1.47];
    const F: usize = PPO_HISTORY_FIELDS.len();

    fn runs(n: usize) -> Vec<PpoRun> {
        (0..n)
            .map(|i| PpoRun {
                seed_key: seed_key(i as i128 * 7919),
                params: PpoParams::new([0.2, 0.1, 0.3][i % 3], [0.05, 0.2][i % 2], 1 + (i % 5) as i64)
                    .and_then(|p| {
                        p.completed(
                            ["full", "k1", "k2", "k3"][i % 4],
                            [0.0, 0.0, 0.7][i % 3],
                            0.1 + 0.1 * (i % 2) as f64,
                        )
                    })
                    .unwrap(),
                controller: match i % 3 {
                    0 => KlController::fixed(0.0).unwrap(),
                    1 => KlController::adaptive(0.5, 0.3, 50.0).unwrap(),
                    _ => KlController::doubling(0.2, 1.0).unwrap(),
                },
            })
            .collect()
    }

    fn engine(steps: usize, record_every: usize, exact: bool, simd: Simd) -> PpoEngine<'static> {
        PpoEngine::new(&ZEROS, &ZEROS, &SWEEP_WEIGHTS, steps, record_every, exact, simd).unwrap()
    }

    fn run_sweep(engine: &PpoEngine<'_>, runs: &[PpoRun], monitor: &Monitor) -> Result<SweepOutput> {
        sweep(engine, runs, u64::MAX, monitor)
    }

    fn single_runs(runs: &[PpoRun], steps: usize) -> Vec<(Vec<f64>, RlhfHistory)> {
        runs.iter()
            .map(|run| {
                let mut theta = ZEROS.to_vec();
                let (history, outcome) =
                    train(&mut theta, &ZEROS, &SWEEP_WEIGHTS, steps, &run.seed_key, &run.params, run.controller);
                outcome.unwrap();
                (theta, history)
            })
            .collect()
    }

    /// Every series of a single run, in `PPO_HISTORY_FIELDS` order.
    fn series(history: &RlhfHistory) -> [Vec<f64>; F] {
        let ids = |v: &[u32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
        [
            ids(&history.prompt),
            ids(&history.token),
            history.score.clone(),
            history.kl.clone(),
            history.reward.clone(),
            history.clip_frac.clone(),
            history.beta.clone(),
            history.mean_kl.clone(),
            history.kl_penalty.clone(),
            history.value_loss.clone(),
        ]
    }

    #[test]
    fn exact_sweep_is_bit_identical_to_the_single_run_loop_even_when_beta_explodes() {
        let runs = runs(19);
        let out = run_sweep(&engine(400, 1, true, Simd::detect()), &runs, &Monitor::default()).unwrap();
        for (r, (theta, history)) in single_runs(&runs, 400).into_iter().enumerate() {
            for (f, expected) in series(&history).iter().enumerate() {
                assert_eq!(out.kept(r, f), &expected[..], "run {r} {}", PPO_HISTORY_FIELDS[f]);
            }
            assert_eq!(out.final_params[r * 24..(r + 1) * 24], theta[..], "run {r}");
        }
    }

    #[test]
    fn fast_sweep_stays_within_1e9_of_the_single_run_loop() {
        // Well-conditioned runs: the doubling rule's exploding coefficients left out.
        let runs: Vec<PpoRun> =
            runs(19).into_iter().filter(|r| !matches!(r.controller, KlController::Doubling { .. })).collect();
        let out = run_sweep(&engine(400, 1, false, Simd::detect()), &runs, &Monitor::default()).unwrap();
        let close = |fast: &[f64], exact: &[f64], what: &str| {
            for (a, b) in fast.iter().zip(exact) {
                assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{what}: {a} vs {b}");
            }
        };
        for (r, (theta, history)) in single_runs(&runs, 400).into_iter().enumerate() {
            let expected = series(&history);
            assert_eq!(out.kept(r, 1), &expected[1][..], "run {r}: tokens");
            for (f, values) in expected.iter().enumerate() {
                close(out.kept(r, f), values, PPO_HISTORY_FIELDS[f]);
            }
            close(&out.final_params[r * 24..(r + 1) * 24], &theta, "theta");
        }
    }

    #[test]
    fn results_do_not_depend_on_the_vector_unit_or_the_thread_count() {
        let runs = runs(21);
        let reference = run_sweep(&engine(300, 1, false, Simd::Portable), &runs, &Monitor::default()).unwrap();
        for simd in Simd::available() {
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let out = pool.install(|| run_sweep(&engine(300, 1, false, simd), &runs, &Monitor::default())).unwrap();
                assert_eq!(out, reference, "{} on {threads} threads", simd.name());
            }
        }
    }

    #[test]
    fn record_every_keeps_every_kth_step_and_summaries_stay() {
        let runs = runs(5);
        let full = run_sweep(&engine(100, 1, false, Simd::detect()), &runs, &Monitor::default()).unwrap();
        let thin = run_sweep(&engine(100, 7, false, Simd::detect()), &runs, &Monitor::default()).unwrap();
        let none = run_sweep(&engine(100, 0, false, Simd::detect()), &runs, &Monitor::default()).unwrap();
        assert_eq!((thin.n_kept, none.n_kept), (14, 0));
        for r in 0..5 {
            for f in 0..F {
                for k in 0..14 {
                    assert_eq!(thin.kept(r, f)[k], full.kept(r, f)[7 * k + 6]);
                }
            }
        }
        assert_eq!(thin.summary, full.summary);
        assert_eq!(none.final_params, full.final_params);
        assert!(none.history.is_empty());
    }

    #[test]
    fn summaries_are_the_means_of_the_history() {
        let out = run_sweep(&engine(250, 1, false, Simd::detect()), &runs(3), &Monitor::default()).unwrap();
        let fields = PPO_SUMMARY_FIELDS.len();
        for r in 0..3 {
            let mean = |f: usize| out.kept(r, f).iter().sum::<f64>() / 250.0;
            let summary = &out.summary[r * fields..(r + 1) * fields];
            assert!((summary[2] - mean(2)).abs() < 1e-12);
            assert!((summary[4] - out.kept(r, 7)[249]).abs() < 1e-12);
            assert!((summary[5] - mean(5)).abs() < 1e-12);
            let theta = &out.final_params[r * 24..(r + 1) * 24];
            assert_eq!(summary[0], expected_score(theta, &SWEEP_WEIGHTS).unwrap());
            assert_eq!(summary[1], policy_kl(theta, &ZEROS, VOCAB_SIZE).unwrap());
        }
    }

    #[test]
    fn cancelling_stops_the_sweep_and_progress_counts_every_step() {
        // 800 steps: past about 890 the doubling runs' logits overflow.
        let monitor = Monitor::default();
        run_sweep(&engine(800, 0, false, Simd::detect()), &runs(10), &monitor).unwrap();
        assert_eq!(monitor.steps_done.load(std::sync::atomic::Ordering::Relaxed), 8_000);
        let cancelled = Monitor::default();
        cancelled.cancel();
        let out = run_sweep(&engine(1000, 0, false, Simd::detect()), &runs(10), &cancelled);
        assert_eq!(out, Err(Error::Cancelled));
    }

    #[test]
    fn divergence_names_the_run() {
        let mut runaway = runs(11);
        for run in runaway.iter_mut() {
            run.controller = KlController::fixed(0.1).unwrap();
        }
        runaway[9].controller = KlController::doubling(1.0, 1e-12).unwrap();
        let err = run_sweep(&engine(5000, 0, false, Simd::detect()), &runaway, &Monitor::default()).unwrap_err();
        assert!(err.to_string().starts_with("sweep run 9 diverged"), "{err}");
        // Exact lanes stop at the single run's step, with its message but for the name.
        let err = run_sweep(&engine(5000, 0, true, Simd::Portable), &runaway, &Monitor::default()).unwrap_err();
        let mut theta = ZEROS.to_vec();
        let single = train(
            &mut theta,
            &ZEROS,
            &SWEEP_WEIGHTS,
            5000,
            &runaway[9].seed_key,
            &runaway[9].params,
            runaway[9].controller,
        );
        let single = single.1.unwrap_err().to_string();
        assert_eq!(err.to_string(), single.replace("train_rlhf", "sweep run 9"));
        for simd in Simd::available() {
            let mut wild = runs(3);
            wild[2].params.lr = 1e300;
            let err = run_sweep(&engine(100, 1, false, simd), &wild, &Monitor::default()).unwrap_err();
            let expected = format!(
                "sweep run 2 diverged at step 0: logits overflowed (lr=1e+300, beta={})",
                py_float(wild[2].controller.value())
            );
            assert_eq!(err.to_string(), expected, "{}", simd.name());
        }
    }

    #[test]
    fn runs_are_sized_before_they_start_and_stop_when_cancelled_or_overflowing() {
        let params = PpoParams::new(0.2, 0.05, 4).unwrap();
        let fixed = KlController::fixed(0.1).unwrap();
        let mut theta = vec![0.0; 24];
        let err = train(&mut theta, &ZEROS, &WEIGHTS, usize::MAX / 64, &[0], &params, fixed).1.unwrap_err();
        let steps = usize::MAX / 64;
        let expected = format!("steps={steps} needs {} bytes, more than max_memory=", steps as u128 * 80);
        assert!(err.to_string().starts_with(&expected), "{err}");
        let wild = PpoParams::new(0.2, 1e300, 4).unwrap();
        let (history, outcome) = train(&mut theta, &ZEROS, &WEIGHTS, 100, &[0], &wild, fixed);
        let err = outcome.unwrap_err();
        assert_eq!(
            err,
            Error::Diverged("train_rlhf diverged at step 0: logits overflowed (lr=1e+300, beta=0.1)".into())
        );
        assert!(history.kl.is_empty());
        let cancelled = Monitor::default();
        cancelled.cancel();
        let mut history = RlhfHistory::default();
        let values = &mut [0.0; 3];
        let mut theta = vec![0.0; 24];
        let outcome =
            train_rlhf(&mut theta, &ZEROS, &WEIGHTS, 1_000_000, &[0], &params, fixed, values, &mut history, &cancelled);
        assert_eq!(outcome, Err(Error::Cancelled));
        assert!(history.kl.len() < 100_000, "a cancelled run stops within a tick: {} steps", history.kl.len());
    }

    // A reward model whose first token scores 1e300: a baseline's value loss on it is
    // 0.5 * 1e300^2 = inf, while a tiny lr keeps every logit finite.
    const HUGE_FIRST: [f64; 8] = [1e300, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0];

    fn value_run(seed: i128, vf_coef: f64) -> PpoRun {
        PpoRun {
            seed_key: seed_key(seed),
            params: PpoParams::new(0.2, 1e-300, 4).and_then(|p| p.completed("full", vf_coef, 0.2)).unwrap(),
            controller: KlController::fixed(0.1).unwrap(),
        }
    }

    /// The single run of `run` on `HUGE_FIRST`: its theta, history and error.
    fn huge_first_run(run: &PpoRun, steps: usize) -> (Vec<f64>, RlhfHistory, Error) {
        let mut theta = ZEROS.to_vec();
        let (history, outcome) =
            train(&mut theta, &ZEROS, &HUGE_FIRST, steps, &run.seed_key, &run.params, run.controller);
        (theta, history, outcome.unwrap_err())
    }

    #[test]
    fn a_record_that_is_not_finite_stops_the_run_unrecorded() {
        let run = value_run(4, 0.7);
        let (theta, history, err) = huge_first_run(&run, 1000);
        let t = history.kl.len();
        assert_eq!(history.token.iter().filter(|&&a| a == 0).count(), 0, "token 0 fails its step");
        assert_eq!(
            err,
            Error::Diverged(format!("train_rlhf diverged at step {t}: value_loss overflowed (lr=1e-300, beta=0.1)"))
        );
        // The history stands before the failing step; theta holds that step's update.
        let (mut before, _) = (ZEROS.to_vec(), ());
        let (short, outcome) = train(&mut before, &ZEROS, &HUGE_FIRST, t, &run.seed_key, &run.params, run.controller);
        outcome.unwrap();
        assert_eq!(short, history);
        assert_ne!(before, theta);
        // Without a baseline the same stream runs through.
        let plain = value_run(4, 0.0);
        let mut theta = ZEROS.to_vec();
        train(&mut theta, &ZEROS, &HUGE_FIRST, 1000, &plain.seed_key, &plain.params, plain.controller).1.unwrap();
    }

    #[test]
    fn a_lane_whose_record_is_not_finite_fails_the_first_run_in_run_order() {
        // Each seed's failing step; lane 1 fails late and lane 3 early.
        let mut fails: Vec<(usize, i128)> =
            (0..12).map(|seed| (huge_first_run(&value_run(seed, 0.7), 1000).1.kl.len(), seed)).collect();
        fails.sort();
        let (early, late) = (fails[0], fails[11]);
        assert!(early.0 < late.0, "{fails:?}");
        let mut runs: Vec<PpoRun> = (0..5).map(|seed| value_run(100 + seed, 0.0)).collect();
        runs[1] = value_run(late.1, 0.7);
        runs[3] = value_run(early.1, 0.7);
        let single = huge_first_run(&runs[1], 1000).2.to_string().replace("train_rlhf", "sweep run 1");
        for (exact, simd) in
            [(true, Simd::Portable)].into_iter().chain(Simd::available().into_iter().map(|s| (false, s)))
        {
            let engine = PpoEngine::new(&ZEROS, &ZEROS, &HUGE_FIRST, 1000, 1, exact, simd).unwrap();
            let err = run_sweep(&engine, &runs, &Monitor::default()).unwrap_err();
            assert_eq!(err.to_string(), single, "{}", simd.name());
            // Alone, lane 3's run fails at its own step.
            let err = run_sweep(&engine, &runs[2..], &Monitor::default()).unwrap_err();
            let single = huge_first_run(&runs[3], 1000).2.to_string().replace("train_rlhf", "sweep run 1");
            assert_eq!(err.to_string(), single, "{}", simd.name());
        }
    }

    #[test]
    fn a_summary_that_is_not_finite_fails_the_sweep() {
        // Scores near f64::MAX / 3: every step's record and the final policy's score (a sum
        // over the three prompts) are finite, the sum of five steps' scores is not.
        let weights = [5e307, 4.5e307, 5e307, 4.5e307, 5e307, 4.5e307, 5e307, 4.5e307];
        let mut runs: Vec<PpoRun> = (0..3).map(|seed| value_run(seed, 0.0)).collect();
        for run in runs.iter_mut() {
            run.params.lr = 1e-310;
            run.controller = KlController::fixed(0.0).unwrap();
        }
        let mut theta = ZEROS.to_vec();
        let (_, outcome) =
            train(&mut theta, &ZEROS, &weights, 5, &runs[0].seed_key, &runs[0].params, runs[0].controller);
        outcome.unwrap();
        for simd in Simd::available() {
            let engine = PpoEngine::new(&ZEROS, &ZEROS, &weights, 5, 1, false, simd).unwrap();
            let err = run_sweep(&engine, &runs, &Monitor::default()).unwrap_err();
            assert_eq!(err.to_string(), "sweep run 0 diverged: mean_score overflowed (lr=1e-310, beta=0.0)");
        }
    }

    #[test]
    fn bad_sweeps_are_refused() {
        let new = |theta: &'static [f64], weights: &'static [f64], steps| {
            PpoEngine::new(theta, &ZEROS, weights, steps, 1, false, Simd::Portable)
        };
        assert!(new(&ZEROS, &SWEEP_WEIGHTS, 0).unwrap_err().to_string().contains("steps"));
        assert!(new(&ZEROS, &SWEEP_WEIGHTS[..4], 10).unwrap_err().to_string().contains('w'));
        assert!(new(&ZEROS[..16], &SWEEP_WEIGHTS, 10).unwrap_err().to_string().contains("same shape"));
        assert!(run_sweep(&engine(10, 1, false, Simd::Portable), &[], &Monitor::default()).is_err());
    }
}
