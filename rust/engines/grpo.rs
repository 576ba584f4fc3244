//! GRPO runs: the loop [`train_grpo`], and the sweep engine [`GrpoEngine`].

use super::driver::{check_summary, Engine, Keep, Monitor, RunsOut, Ticker};
use crate::error::{
    default_max_memory, finite_slice, fits_in_memory, overflowed, record_overflowed, reserve, Error, Result,
};
use crate::kernels::policy::{check_policy_pair, expected_score, policy_kl};
use crate::kernels::softmax::log_softmax_rows;
use crate::methods::grpo::{grpo_update, GrpoOutcome, GrpoParams, GrpoScratch};
use crate::methods::reward_checks::check_not_length_only;
use crate::rng::Mt19937;

/// The per-step series of a GRPO sweep's history, TRL's names.
pub const GRPO_HISTORY_FIELDS: [&str; 7] = ["prompt", "reward", "reward_std", "kl", "clip_ratio", "loss", "mean_kl"];
/// Per-run results of a GRPO sweep (means over all steps, the final policy's exact statistics).
pub const GRPO_SUMMARY_FIELDS: [&str; 7] =
    ["final_score", "final_kl", "mean_score", "mean_reward_std", "mean_kl", "clip_frac", "mean_loss"];

/// Checks what every GRPO run shares; returns the number of prompts.
pub(crate) fn check_grpo_inputs(theta: &[f64], reference: &[f64], weights: &[f64], steps: usize) -> Result<usize> {
    let vocab_size = weights.len();
    if vocab_size == 0 || vocab_size > 256 {
        return Err(Error::invalid(format!("w must weigh between 1 and 256 tokens, got {vocab_size}")));
    }
    finite_slice("w", weights)?;
    check_not_length_only(weights)?;
    let n_prompts = check_policy_pair(theta, reference, vocab_size)?;
    if n_prompts > u32::MAX as usize {
        return Err(Error::invalid("theta has too many prompts"));
    }
    if steps == 0 {
        return Err(Error::invalid("steps must be >= 1, got 0"));
    }
    Ok(n_prompts)
}

/// A GRPO run on one stream: what [`train_grpo`] and the sweep share.
struct GrpoRun<'a> {
    theta: &'a mut [f64],
    ref_log_probs: &'a [f64],
    weights: &'a [f64],
    params: &'a GrpoParams,
    rng: Mt19937,
    uniforms: Vec<f64>,
    scratch: GrpoScratch,
    n_prompts: u32,
    /// The exact KLs of the steps so far, summed: the running mean's numerator.
    kl_sum: f64,
}

impl<'a> GrpoRun<'a> {
    fn new(
        theta: &'a mut [f64],
        ref_log_probs: &'a [f64],
        weights: &'a [f64],
        params: &'a GrpoParams,
        seed_key: &[u32],
    ) -> Result<Self> {
        let n_prompts = (theta.len() / weights.len()) as u32;
        let mut uniforms = crate::error::vec_with_capacity(params.num_generations, "the GRPO group")?;
        uniforms.resize(params.num_generations, 0.0);
        Ok(GrpoRun {
            theta,
            ref_log_probs,
            weights,
            params,
            rng: Mt19937::from_key(seed_key),
            uniforms,
            scratch: GrpoScratch::new(weights.len(), params.num_generations)?,
            n_prompts,
            kl_sum: 0.0,
        })
    }

    /// The work of one step in the monitor's units: every iteration walks the group's rows.
    fn work_per_step(&self) -> u64 {
        let group = (self.params.num_generations + 1) as u64;
        u64::from(self.params.num_iterations) * group * self.weights.len() as u64
    }

    /// Step `t`: `prompt = rng.choice(PROMPTS)`, `G` draws of `rng.random()`, one update;
    /// returns the prompt, the outcome and the running mean KL. A step whose logits overflow,
    /// or whose record holds a float that is not finite, is an error that `run_name`
    /// (`train_grpo`, `sweep run 3`) begins.
    #[inline]
    fn step(&mut self, t: usize, run_name: &str) -> Result<(u32, GrpoOutcome, f64)> {
        let v = self.weights.len();
        let prompt = self.rng.randbelow(self.n_prompts);
        for u in self.uniforms.iter_mut() {
            *u = self.rng.random();
        }
        let row = prompt as usize * v..(prompt as usize + 1) * v;
        let out = grpo_update(
            &mut self.theta[row.clone()],
            &self.ref_log_probs[row.clone()],
            self.weights,
            &self.uniforms,
            self.params,
            &mut self.scratch,
        );
        let diverged = |key: &str| {
            record_overflowed(&format!("{run_name} diverged at step {t}"), key, self.params.lr, self.params.beta)
        };
        if overflowed(&self.theta[row]) {
            return Err(diverged("logits"));
        }
        self.kl_sum += out.kl;
        let mean_kl = self.kl_sum / (t + 1) as f64;
        if let Some(key) = out.nonfinite_key(Some(mean_kl)) {
            return Err(diverged(key));
        }
        Ok((prompt, out, mean_kl))
    }
}

/// Per-step record of a GRPO run (TRL: `reward`, `reward_std`, `kl`, `clip_ratio`, `loss`),
/// the prompt row, and the running mean KL (the lesson's monitor).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GrpoHistory {
    pub prompt: Vec<u32>,
    pub score: Vec<f64>,
    pub reward_std: Vec<f64>,
    pub kl: Vec<f64>,
    pub clip_frac: Vec<f64>,
    pub loss: Vec<f64>,
    pub mean_kl: Vec<f64>,
    /// `[step, generation]` sampled tokens, row-major.
    pub tokens: Vec<u8>,
}

/// Bytes a step of [`train_grpo`] counts against `max_memory`, groups of `num_generations`:
/// seven series of 8 bytes and 8 bytes a sampled token (the reference counts the same).
pub fn grpo_bytes_per_step(num_generations: usize) -> u64 {
    (7 + num_generations as u64) * 8
}

impl GrpoHistory {
    /// Room for `steps` more steps of groups of `num_generations`, or [`Error::OutOfMemory`].
    fn reserve(&mut self, steps: usize, num_generations: usize) -> Result<()> {
        let what = "the history of train_grpo";
        reserve(&mut self.prompt, steps, what)?;
        for series in [
            &mut self.score,
            &mut self.reward_std,
            &mut self.kl,
            &mut self.clip_frac,
            &mut self.loss,
            &mut self.mean_kl,
        ] {
            reserve(series, steps, what)?;
        }
        // Fits: the memory check counted 8 bytes a token.
        reserve(&mut self.tokens, steps * num_generations, what)
    }
}

/// `steps` GRPO steps on the stream `random.Random(seed)` (its `init_by_array` key),
/// appending each step's record to `history`: each step draws `prompt =
/// rng.choice(PROMPTS)` and then the group's `G` tokens. `theta` is updated in place;
/// `reference` is the frozen policy of the same shape, `weights[a]` the reward of token `a`.
/// A run whose logits overflow, or whose step records a float that is not finite (the first
/// in the history's order is named), stops with an error, `history` as it stood before the failing
/// step (the lesson's KL monitor reads it) and `theta` as that step left it. `steps` is
/// checked against half the machine's memory before anything is allocated; `monitor` is
/// ticked as the run goes and stops it when cancelled.
#[allow(clippy::too_many_arguments)]
pub fn train_grpo(
    theta: &mut [f64],
    reference: &[f64],
    weights: &[f64],
    steps: usize,
    seed_key: &[u32],
    params: &GrpoParams,
    history: &mut GrpoHistory,
    monitor: &Monitor,
) -> Result<()> {
    check_grpo_inputs(theta, reference, weights, steps)?;
    fits_in_memory("steps", steps as u64, grpo_bytes_per_step(params.num_generations), default_max_memory())?;
    history.reserve(steps, params.num_generations)?;
    let ref_log_probs = log_softmax_rows(reference, weights.len());
    let mut run = GrpoRun::new(theta, &ref_log_probs, weights, params, seed_key)?;
    let mut ticker = Ticker::new(monitor);
    let work_per_step = run.work_per_step();
    for t in 0..steps {
        let (prompt, out, mean_kl) = run.step(t, "train_grpo")?;
        history.prompt.push(prompt);
        history.score.push(out.score);
        history.reward_std.push(out.reward_std);
        history.kl.push(out.kl);
        history.clip_frac.push(out.clip_frac);
        history.loss.push(out.loss);
        history.mean_kl.push(mean_kl);
        history.tokens.extend(run.scratch.tokens().iter().map(|&a| a as u8));
        ticker.advance(1, work_per_step)?;
    }
    ticker.flush()
}

/// One GRPO run of a sweep: its stream (the seed's `init_by_array` key) and its settings.
#[derive(Clone, Debug, PartialEq)]
pub struct GrpoRunSpec {
    pub seed_key: Vec<u32>,
    pub params: GrpoParams,
}

/// GRPO runs from one starting policy against one reward model: each run is [`train_grpo`]
/// from `theta0`.
#[derive(Clone, Debug)]
pub struct GrpoEngine<'a> {
    pub theta0: &'a [f64],
    pub reference: &'a [f64],
    /// The reward model's weight of each token (the vocabulary size is its length).
    pub weights: &'a [f64],
    pub steps: usize,
    /// Keep steps `k-1, 2k-1, ...` of each history; 0 keeps none.
    pub record_every: usize,
    ref_log_probs: Vec<f64>,
}

impl<'a> GrpoEngine<'a> {
    /// Checks what the runs share.
    pub fn new(
        theta0: &'a [f64],
        reference: &'a [f64],
        weights: &'a [f64],
        steps: usize,
        record_every: usize,
    ) -> Result<Self> {
        check_grpo_inputs(theta0, reference, weights, steps)?;
        let ref_log_probs = log_softmax_rows(reference, weights.len());
        Ok(GrpoEngine { theta0, reference, weights, steps, record_every, ref_log_probs })
    }
}

impl Engine for GrpoEngine<'_> {
    type Run = GrpoRunSpec;

    fn history_fields(&self) -> &'static [&'static str] {
        &GRPO_HISTORY_FIELDS
    }

    fn summary_fields(&self) -> &'static [&'static str] {
        &GRPO_SUMMARY_FIELDS
    }

    fn kept_steps(&self, _: &[GrpoRunSpec]) -> usize {
        self.steps.checked_div(self.record_every).unwrap_or(0)
    }

    fn params_shape(&self) -> Vec<usize> {
        vec![self.theta0.len() / self.weights.len(), self.weights.len()]
    }

    fn run(&self, runs: &[GrpoRunSpec], out: RunsOut<'_>, monitor: &Monitor) -> Result<()> {
        let spec = &runs[0];
        let kept = out.history.len() / GRPO_HISTORY_FIELDS.len();
        out.params.copy_from_slice(self.theta0);
        let mut run = GrpoRun::new(out.params, &self.ref_log_probs, self.weights, &spec.params, &spec.seed_key)?;
        let run_name = format!("sweep run {}", out.first_run);
        let mut ticker = Ticker::new(monitor);
        let work_per_step = run.work_per_step();
        let (mut score_sum, mut std_sum, mut clip_sum, mut loss_sum) = (0.0, 0.0, 0.0, 0.0);
        let mut keep = Keep::new(self.record_every);
        for t in 0..self.steps {
            let (x, step, mean_kl) = run.step(t, &run_name)?;
            score_sum += step.score;
            std_sum += step.reward_std;
            clip_sum += step.clip_frac;
            loss_sum += step.loss;
            if let Some(slot) = keep.slot() {
                let values = [f64::from(x), step.score, step.reward_std, step.kl, step.clip_frac, step.loss, mean_kl];
                for (f, value) in values.into_iter().enumerate() {
                    out.history[f * kept + slot] = value;
                }
            }
            ticker.advance(1, work_per_step)?;
        }
        ticker.flush()?;
        let theta = &*run.theta;
        let steps = self.steps as f64;
        out.summary.copy_from_slice(&[
            expected_score(theta, self.weights)?,
            policy_kl(theta, self.reference, self.weights.len())?,
            score_sum / steps,
            std_sum / steps,
            run.kl_sum / steps,
            clip_sum / steps,
            loss_sum / steps,
        ]);
        check_summary(&run_name, &GRPO_SUMMARY_FIELDS, out.summary, spec.params.lr, spec.params.beta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::driver::{sweep, SweepOutput};
    use crate::methods::grpo::{grpo_step, ScaleRewards};
    use crate::rng::seed_key;

    const WEIGHTS: [f64; 8] = [1.5, 1.5, -1.6, -1.5, 1.6, 1.6, -1.5, -1.5];
    const ZEROS: [f64; 24] = [0.0; 24];

    /// [`train_grpo`]: the history (up to a failing step) and the outcome.
    fn train(
        theta: &mut [f64],
        reference: &[f64],
        weights: &[f64],
        steps: usize,
        key: &[u32],
        p: &GrpoParams,
    ) -> (GrpoHistory, Result<()>) {
        let mut history = GrpoHistory::default();
        let outcome = train_grpo(theta, reference, weights, steps, key, p, &mut history, &Monitor::default());
        (history, outcome)
    }

    fn run(seed: i128, steps: usize, p: &GrpoParams) -> (Vec<f64>, GrpoHistory) {
        let mut theta = vec![0.0; 24];
        let (history, outcome) = train(&mut theta, &[0.0; 24], &WEIGHTS, steps, &seed_key(seed), p);
        outcome.unwrap();
        (theta, history)
    }

    #[test]
    fn train_grpo_draws_the_prompt_then_the_group_and_learns() {
        let p = GrpoParams::new(8, 0.04, 0.2, None, 0.05, ScaleRewards::Group, 1).unwrap();
        let (theta, history) = run(3, 1500, &p);
        let after = expected_score(&theta, &WEIGHTS).unwrap();
        assert!(after > 1.0, "{after}");
        assert_eq!(history.kl[0], 0.0);
        assert_eq!(history.tokens.len(), 1500 * 8);
        let mean: f64 = history.kl.iter().sum::<f64>() / 1500.0;
        assert!((history.mean_kl[1499] - mean).abs() < 1e-12);
        // The first step by hand: randbelow(3), then eight random() draws.
        let mut rng = Mt19937::from_seed(3);
        let prompt = rng.randbelow(3);
        let uniforms: Vec<f64> = (0..8).map(|_| rng.random()).collect();
        let mut row = [0.0; 8];
        let (out, tokens) = grpo_step(&mut row, &[0.0; 8], &WEIGHTS, &uniforms, &p).unwrap();
        assert_eq!(history.prompt[0], prompt);
        assert_eq!(history.tokens[..8].iter().map(|&t| t as usize).collect::<Vec<_>>(), tokens);
        assert_eq!(history.loss[0], out.loss);
        assert_eq!(run(3, 1500, &p), (theta, history));
    }

    #[test]
    fn bad_arguments_are_errors_not_panics() {
        let p = GrpoParams::new(2, 0.04, 0.2, None, 0.05, ScaleRewards::None, 1).unwrap();
        let mut theta = vec![0.0; 24];
        let length_only = train(&mut theta, &[0.0; 24], &[0.7; 8], 10, &[0], &p).1.unwrap_err();
        assert!(length_only.to_string().contains("w scores responses by length alone"), "{length_only}");
        assert!(train(&mut theta, &[0.0; 16], &WEIGHTS, 10, &[0], &p).1.is_err());
        assert!(train(&mut theta, &[0.0; 24], &WEIGHTS, 0, &[0], &p).1.is_err());
        let nan = train(&mut theta, &[0.0; 24], &[f64::NAN; 8], 1, &[0], &p).1.unwrap_err();
        assert!(nan.to_string().contains("w[0]"), "{nan}");
    }

    #[test]
    fn runaway_learning_rates_are_reported_as_divergence() {
        let p = GrpoParams::new(8, 0.0, 1e9, None, 1e308, ScaleRewards::None, 4).unwrap();
        let mut theta = vec![0.0; 24];
        let (history, outcome) = train(&mut theta, &[0.0; 24], &WEIGHTS, 100, &[1], &p);
        let err = outcome.unwrap_err();
        assert!(matches!(err, Error::Diverged(_)), "{err}");
        assert!(err.to_string().contains(&format!("at step {}:", history.kl.len())), "{err}");
        let p = GrpoParams::new(8, 0.04, 0.2, None, 1e300, ScaleRewards::Group, 1).unwrap();
        let err = train(&mut [0.0; 24], &ZEROS, &WEIGHTS, 100, &[1], &p).1.unwrap_err();
        assert_eq!(
            err,
            Error::Diverged("train_grpo diverged at step 0: logits overflowed (lr=1e+300, beta=0.04)".into())
        );
        let mut specs = runs();
        specs[4].params = p;
        let engine = GrpoEngine::new(&ZEROS, &ZEROS, &WEIGHTS, 100, 1).unwrap();
        let err = sweep(&engine, &specs, u64::MAX, &Monitor::default()).unwrap_err();
        assert_eq!(err.to_string(), "sweep run 4 diverged at step 0: logits overflowed (lr=1e+300, beta=0.04)");
    }

    #[test]
    fn a_record_that_is_not_finite_stops_the_run_unrecorded() {
        // A group holding the 1e300 token has a reward std of inf; its advantages are then
        // 0 and the logits stay finite.
        let weights = [1e300, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0];
        let p = GrpoParams::new(2, 0.04, 0.2, None, 0.05, ScaleRewards::Group, 1).unwrap();
        // Away from the reference, so that the KL term moves the logits on every step.
        let theta0: Vec<f64> = (0..24).map(|i| if i % 8 == 1 { 0.5 } else { 0.0 }).collect();
        let mut theta = theta0.clone();
        let (history, outcome) = train(&mut theta, &ZEROS, &weights, 1000, &[5], &p);
        let t = history.kl.len();
        assert!(t > 0 && !history.tokens.contains(&0), "{t}");
        let expected = format!("train_grpo diverged at step {t}: reward_std overflowed (lr=0.05, beta=0.04)");
        assert_eq!(outcome, Err(Error::Diverged(expected)));
        let mut before = theta0.clone();
        let (short, outcome) = train(&mut before, &ZEROS, &weights, t, &[5], &p);
        outcome.unwrap();
        assert_eq!(short, history);
        // theta holds the failing step's update (the KL term still moves the logits).
        assert!(before.iter().zip(&theta).any(|(a, b)| a != b));
        // The sweep stops there too.
        let specs = vec![GrpoRunSpec { seed_key: vec![5], params: p }; 2];
        let engine = GrpoEngine::new(&theta0, &ZEROS, &weights, 1000, 1).unwrap();
        let err = sweep(&engine, &specs, u64::MAX, &Monitor::default()).unwrap_err();
        let expected = format!("sweep run 0 diverged at step {t}: reward_std overflowed (lr=0.05, beta=0.04)");
        assert_eq!(err.to_string(), expected);
    }

    #[test]
    fn a_summary_that_is_not_finite_fails_the_sweep() {
        // beta = 1e307: each step's loss (beta times a k3 below 0.4) is finite, the sum of
        // 400 steps' losses is not; lr = 5e-324 keeps the logits where they are.
        let mut theta0 = [0.0; 24];
        for x in 0..3 {
            theta0[x * 8] = 1.0;
        }
        let p = GrpoParams::new(8, 1e307, 0.2, None, 5e-324, ScaleRewards::Group, 1).unwrap();
        let (history, outcome) = train(&mut theta0.to_vec(), &ZEROS, &WEIGHTS, 400, &[2], &p);
        outcome.unwrap();
        assert!(history.loss.iter().sum::<f64>().is_infinite());
        let engine = GrpoEngine::new(&theta0, &ZEROS, &WEIGHTS, 400, 0).unwrap();
        let spec = GrpoRunSpec { seed_key: vec![2], params: p };
        let err = sweep(&engine, &[spec], u64::MAX, &Monitor::default()).unwrap_err();
        assert_eq!(err.to_string(), "sweep run 0 diverged: mean_loss overflowed (lr=5e-324, beta=1e+307)");
    }

    #[test]
    fn runs_are_sized_before_they_start() {
        let p = GrpoParams::new(65536, 0.04, 0.2, None, 0.05, ScaleRewards::Group, 1).unwrap();
        let steps = usize::MAX / (1 << 20);
        let err = train(&mut [0.0; 24], &ZEROS, &WEIGHTS, steps, &[0], &p).1.unwrap_err();
        let expected = format!("steps={steps} needs {} bytes, more than max_memory=", steps as u128 * (7 + 65536) * 8);
        assert!(err.to_string().starts_with(&expected), "{err}");
    }

    // ------------------------------------------------------------------------- the sweep

    const F: usize = GRPO_HISTORY_FIELDS.len();

    fn runs() -> Vec<GrpoRunSpec> {
        (0..9)
            .map(|i| GrpoRunSpec {
                seed_key: seed_key(i as i128 * 7919),
                params: GrpoParams::new(
                    2 + (i % 4) as i64 * 2,
                    [0.0, 0.04, 0.5][i % 3],
                    0.2,
                    if i % 2 == 0 { None } else { Some(0.28) },
                    [0.05, 0.2][i % 2],
                    if i % 3 == 0 { ScaleRewards::None } else { ScaleRewards::Group },
                    1 + (i % 3) as i64,
                )
                .unwrap(),
            })
            .collect()
    }

    fn run_sweep(steps: usize, record_every: usize, monitor: &Monitor) -> Result<SweepOutput> {
        let engine = GrpoEngine::new(&ZEROS, &ZEROS, &WEIGHTS, steps, record_every)?;
        sweep(&engine, &runs(), u64::MAX, monitor)
    }

    #[test]
    fn sweep_runs_are_bit_identical_to_train_grpo() {
        let out = run_sweep(400, 1, &Monitor::default()).unwrap();
        for (r, spec) in runs().iter().enumerate() {
            let mut theta = ZEROS.to_vec();
            let (history, outcome) = train(&mut theta, &ZEROS, &WEIGHTS, 400, &spec.seed_key, &spec.params);
            outcome.unwrap();
            let hist = &out.history[r * F * 400..(r + 1) * F * 400];
            let prompts: Vec<u32> = hist[..400].iter().map(|&p| p as u32).collect();
            assert_eq!(prompts, history.prompt);
            assert_eq!(hist[400..800], history.score[..], "run {r}");
            assert_eq!(hist[800..1200], history.reward_std[..]);
            assert_eq!(hist[1200..1600], history.kl[..]);
            assert_eq!(hist[1600..2000], history.clip_frac[..]);
            assert_eq!(hist[2000..2400], history.loss[..]);
            assert_eq!(hist[2400..2800], history.mean_kl[..]);
            assert_eq!(out.final_params[r * 24..(r + 1) * 24], theta[..]);
            assert_eq!(out.summary[r * 7 + 4], history.mean_kl[399]);
        }
        let thin = run_sweep(400, 7, &Monitor::default()).unwrap();
        assert_eq!(thin.n_kept, 57);
        assert_eq!(thin.history[57 + 6], out.history[400 + 6 * 7 + 6]);
        assert_eq!(thin.summary, out.summary);
        let none = run_sweep(400, 0, &Monitor::default()).unwrap();
        assert!(none.history.is_empty());
        assert_eq!(none.final_params, out.final_params);
    }

    #[test]
    fn the_sweep_does_not_depend_on_the_thread_count() {
        let in_pool = |threads| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| run_sweep(300, 1, &Monitor::default()).unwrap())
        };
        let one = in_pool(1);
        assert_eq!(in_pool(2), one);
        assert_eq!(in_pool(5), one);
    }

    #[test]
    fn progress_counts_every_step_and_cancelling_stops() {
        let monitor = Monitor::default();
        run_sweep(2500, 0, &monitor).unwrap();
        assert_eq!(monitor.steps_done.load(std::sync::atomic::Ordering::Relaxed), 9 * 2500);
        let cancelled = Monitor::default();
        cancelled.cancel();
        assert_eq!(run_sweep(2500, 0, &cancelled), Err(Error::Cancelled));
    }

    #[test]
    fn bad_sweeps_are_refused() {
        let err = GrpoEngine::new(&ZEROS, &ZEROS, &[2.0; 8], 10, 1).unwrap_err();
        assert!(err.to_string().contains("w scores responses by length alone"), "{err}");
        assert!(GrpoEngine::new(&ZEROS, &ZEROS, &WEIGHTS, 0, 1).is_err());
        let engine = GrpoEngine::new(&ZEROS, &ZEROS, &WEIGHTS, 10, 1).unwrap();
        assert!(sweep(&engine, &[], u64::MAX, &Monitor::default()).is_err());
    }
}
