//! Best-of-N from a policy: one evaluation [`best_of_n`], and the sweep engine [`BonEngine`].

use super::driver::{Engine, Monitor, RunsOut, Ticker};
use crate::error::{at_most, finite_slice, py_float, Error, Result};
use crate::kernels::policy::check_table;
use crate::kernels::sampling::BucketSampler;
use crate::kernels::softmax::softmax_rows;
use crate::methods::best_of_n::{bon_draws, bon_exact, bon_kl_analytic};
use crate::methods::reward_checks::check_not_length_only;
use crate::rng::Mt19937;

/// Per-run results of a Best-of-N sweep; a sweep without samples has no `sampled_score`.
pub const BON_SUMMARY_FIELDS: [&str; 4] = ["expected_score", "kl_analytic", "kl_exact", "sampled_score"];

/// Largest `n`: a billion draws per sample already take seconds.
pub const MAX_N: i64 = 1_000_000_000;

/// Draws of one long Best-of-n sample between two reports to the monitor.
const DRAWS_PER_REPORT: u64 = 1024;

/// What [`best_of_n`] reports.
#[derive(Clone, Debug, PartialEq)]
pub struct BonOutcome {
    /// Mean over prompts of `sum_a P_bon(a) R(a)`.
    pub expected_score: f64,
    /// `log n - (n - 1) / n`.
    pub kl_analytic: f64,
    /// Mean over prompts of `KL(P_bon || pi)`.
    pub kl_exact: f64,
    /// Mean kept score of the Monte-Carlo run (`None` without samples).
    pub sampled_score: Option<f64>,
    /// `[prompt, token]` exact law of the kept token.
    pub p_bon: Vec<f64>,
}

/// Checks a Best-of-N problem; returns the number of prompts.
pub(crate) fn check_bon_inputs(policy: &[f64], weights: &[f64], n: i64, samples: i64) -> Result<usize> {
    let vocab_size = weights.len();
    if vocab_size == 0 {
        return Err(Error::invalid("w must weigh at least one token"));
    }
    finite_slice("w", weights)?;
    check_not_length_only(weights)?;
    let n_prompts = check_table("policy", policy, vocab_size)?;
    if n_prompts > u32::MAX as usize {
        return Err(Error::invalid("policy has too many prompts"));
    }
    if n < 1 {
        return Err(Error::invalid(format!("n must be >= 1, got {n}")));
    }
    at_most("n", n, MAX_N)?;
    if samples < 0 {
        return Err(Error::invalid(format!("samples must be >= 0, got {samples}")));
    }
    Ok(n_prompts)
}

/// The mean kept score of `samples` Monte-Carlo draws on one stream, summed left to right.
/// Each draw is `x = rng.choice(PROMPTS)` and the best of `n` samples from `pi[x]`, taken
/// in pieces of 1024 samples so that even a draw of a billion reports to `monitor` (and
/// stops when cancelled) every millisecond or so.
fn sampled_score(
    sampler: &BucketSampler,
    weights: &[f64],
    n: u64,
    samples: u64,
    seed_key: &[u32],
    monitor: &Monitor,
) -> Result<f64> {
    let mut rng = Mt19937::from_key(seed_key);
    let mut ticker = Ticker::new(monitor);
    let rows = sampler.n_rows() as u32;
    let mut total = 0.0;
    for _ in 0..samples {
        let x = rng.randbelow(rows) as usize;
        let (mut best, mut left) = (f64::NEG_INFINITY, n);
        while left > DRAWS_PER_REPORT {
            best = bon_draws(sampler, weights, x, DRAWS_PER_REPORT, best, &mut rng);
            left -= DRAWS_PER_REPORT;
            ticker.advance(0, DRAWS_PER_REPORT)?;
        }
        total += bon_draws(sampler, weights, x, left, best, &mut rng);
        ticker.advance(1, left)?;
    }
    ticker.flush()?;
    Ok(total / samples as f64)
}

/// Best-of-`n` against `weights` for the `[n_prompts, V]` logits `policy`: the exact
/// distribution and its statistics, plus, with `samples > 0`, the Monte-Carlo mean score on
/// the stream of `random.Random(seed)` (its `init_by_array` key).
pub fn best_of_n(
    policy: &[f64],
    weights: &[f64],
    n: i64,
    samples: i64,
    seed_key: &[u32],
    monitor: &Monitor,
) -> Result<BonOutcome> {
    check_bon_inputs(policy, weights, n, samples)?;
    let (n, samples) = (n as u64, samples as u64);
    let pi = softmax_rows(policy, weights.len());
    let (expected_score, kl_exact, p_bon) = bon_exact(&pi, weights, n);
    let sampled_score = if samples > 0 {
        let sampler = BucketSampler::new(&pi, weights.len());
        Some(sampled_score(&sampler, weights, n, samples, seed_key, monitor)?)
    } else {
        None
    };
    Ok(BonOutcome { expected_score, kl_analytic: bon_kl_analytic(n), kl_exact, sampled_score, p_bon })
}

/// One Best-of-N run of a sweep: `n`, the Monte-Carlo sample count and its stream.
#[derive(Clone, Debug, PartialEq)]
pub struct BonRun {
    pub n: i64,
    pub samples: i64,
    pub seed_key: Vec<u32>,
}

/// Best-of-N runs from one policy against one reward model: each run is [`best_of_n`].
/// Progress counts Monte-Carlo samples. Either every run samples (and the summary has a
/// `sampled_score`) or none does (and it has none).
#[derive(Clone, Debug)]
pub struct BonEngine<'a> {
    pub weights: &'a [f64],
    pi: Vec<f64>,
    sampler: BucketSampler,
    sampled: bool,
}

impl<'a> BonEngine<'a> {
    /// Checks the policy, the reward model and every run.
    pub fn new(policy: &[f64], weights: &'a [f64], runs: &[BonRun]) -> Result<Self> {
        check_bon_inputs(policy, weights, 1, 0)?;
        for run in runs {
            check_bon_inputs(policy, weights, run.n, run.samples)?;
        }
        let sampled = runs.iter().any(|run| run.samples > 0);
        if sampled && runs.iter().any(|run| run.samples == 0) {
            return Err(Error::invalid(
                "samples must be > 0 in every run or 0 in every run (no sampled_score), got both",
            ));
        }
        let pi = softmax_rows(policy, weights.len());
        let sampler = BucketSampler::new(&pi, weights.len());
        Ok(BonEngine { weights, pi, sampler, sampled })
    }
}

impl Engine for BonEngine<'_> {
    type Run = BonRun;

    fn history_fields(&self) -> &'static [&'static str] {
        &[]
    }

    fn summary_fields(&self) -> &'static [&'static str] {
        if self.sampled {
            &BON_SUMMARY_FIELDS
        } else {
            &BON_SUMMARY_FIELDS[..3]
        }
    }

    fn kept_steps(&self, _: &[BonRun]) -> usize {
        0
    }

    fn params_shape(&self) -> Vec<usize> {
        vec![0]
    }

    fn run(&self, runs: &[BonRun], out: RunsOut<'_>, monitor: &Monitor) -> Result<()> {
        let run = &runs[0];
        let n = run.n as u64;
        let (expected, kl_exact, _) = bon_exact(&self.pi, self.weights, n);
        out.summary[..3].copy_from_slice(&[expected, bon_kl_analytic(n), kl_exact]);
        if self.sampled {
            out.summary[3] = sampled_score(&self.sampler, self.weights, n, run.samples as u64, &run.seed_key, monitor)?;
        }
        // Weights near the floats' end can overflow a mean; nothing trains, so nothing "diverged".
        match self.summary_fields().iter().zip(out.summary.iter()).find(|(_, value)| !value.is_finite()) {
            None => Ok(()),
            Some((field, &value)) => Err(Error::Diverged(format!(
                "sweep run {} overflowed: {field} is {} (n={n})",
                out.first_run,
                py_float(value)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::driver::sweep;
    use crate::rng::seed_key;

    const WEIGHTS: [f64; 8] = [1.5, 1.5, -1.6, -1.5, 1.6, 1.6, -1.5, -1.5];

    fn evaluate(policy: &[f64], n: i64, samples: i64, seed: &[u32]) -> Result<BonOutcome> {
        best_of_n(policy, &WEIGHTS, n, samples, seed, &Monitor::default())
    }

    #[test]
    fn monte_carlo_agrees_with_the_exact_score_and_follows_the_stream() {
        let policy = [0.0; 24];
        let out = evaluate(&policy, 4, 200_000, &[5]).unwrap();
        let sampled = out.sampled_score.unwrap();
        assert!((sampled - out.expected_score).abs() < 0.01, "{sampled} vs {}", out.expected_score);
        assert_eq!(evaluate(&policy, 4, 1000, &[5]), evaluate(&policy, 4, 1000, &[5]));
        assert_eq!(evaluate(&policy, 4, 0, &[5]).unwrap().sampled_score, None);
    }

    #[test]
    fn bad_arguments_are_errors_not_panics() {
        let policy = [0.0; 24];
        assert!(evaluate(&policy, 0, 0, &[0]).unwrap_err().to_string().contains('n'));
        assert!(evaluate(&policy, 2, -1, &[0]).unwrap_err().to_string().contains("samples"));
        let flat = best_of_n(&policy, &[1.0; 8], 2, 0, &[0], &Monitor::default()).unwrap_err();
        assert!(flat.to_string().contains("by length alone"));
        assert!(evaluate(&policy[..20], 2, 0, &[0]).unwrap_err().to_string().contains("policy"));
        let mut nan = policy;
        nan[5] = f64::INFINITY;
        assert!(evaluate(&nan, 2, 0, &[0]).unwrap_err().to_string().contains("policy[5]"));
        // Large finite logits: the law stays a distribution.
        let mut peaked = [0.0; 8];
        peaked[2] = 1e4;
        peaked[4] = -1e4;
        let out = evaluate(&peaked, 8, 10, &[0]).unwrap();
        assert!(out.p_bon.iter().all(|p| p.is_finite()));
        assert_eq!(out.p_bon[2], 1.0);
        assert!((out.sampled_score.unwrap() + 1.6).abs() < 1e-12);
    }

    #[test]
    fn the_sweep_is_best_of_n_per_run_whatever_the_threads() {
        let policy: Vec<f64> = (0..24).map(|i| ((i * 37) % 11) as f64 / 5.0 - 1.0).collect();
        let runs: Vec<BonRun> = [(1, 1000, 0), (4, 3000, 1), (16, 5000, 2), (4, 3000, 3), (3000, 7, 4)]
            .into_iter()
            .map(|(n, samples, seed)| BonRun { n, samples, seed_key: seed_key(seed) })
            .collect();
        let engine = BonEngine::new(&policy, &WEIGHTS, &runs).unwrap();
        let monitor = Monitor::default();
        let out = sweep(&engine, &runs, u64::MAX, &monitor).unwrap();
        assert_eq!(monitor.steps_done.load(std::sync::atomic::Ordering::Relaxed), 12_007);
        for (r, run) in runs.iter().enumerate() {
            let single = evaluate(&policy, run.n, run.samples, &run.seed_key).unwrap();
            assert_eq!(out.summary[r * 4..r * 4 + 3], [single.expected_score, single.kl_analytic, single.kl_exact]);
            assert_eq!(out.summary[r * 4 + 3], single.sampled_score.unwrap());
        }
        // Without samples there is no sampled score: three fields, the same values.
        let exact_only: Vec<BonRun> = runs.iter().map(|run| BonRun { samples: 0, ..run.clone() }).collect();
        let engine_exact = BonEngine::new(&policy, &WEIGHTS, &exact_only).unwrap();
        let exact = sweep(&engine_exact, &exact_only, u64::MAX, &Monitor::default()).unwrap();
        assert_eq!(exact.summary_fields, &BON_SUMMARY_FIELDS[..3]);
        for r in 0..runs.len() {
            assert_eq!(exact.summary[r * 3..r * 3 + 3], out.summary[r * 4..r * 4 + 3]);
        }
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let again = pool.install(|| sweep(&engine, &runs, u64::MAX, &Monitor::default())).unwrap();
            assert_eq!(bits(&again.summary), bits(&out.summary));
        }
    }

    #[test]
    fn cancelling_stops_and_bad_runs_are_refused() {
        let runs = [BonRun { n: 2, samples: 10_000, seed_key: vec![0] }];
        let engine = BonEngine::new(&[0.0; 24], &WEIGHTS, &runs).unwrap();
        let cancelled = Monitor::default();
        cancelled.cancel();
        assert_eq!(sweep(&engine, &runs, u64::MAX, &cancelled), Err(Error::Cancelled));
        let flat = BonEngine::new(&[0.0; 24], &[0.0; 8], &runs).unwrap_err();
        assert!(flat.to_string().contains("by length alone"));
        let bad_n = [BonRun { n: 0, samples: 0, seed_key: vec![0] }];
        assert!(BonEngine::new(&[0.0; 24], &WEIGHTS, &bad_n).unwrap_err().to_string().contains("n must be"));
        let huge_n = [BonRun { n: MAX_N + 1, samples: 0, seed_key: vec![0] }];
        let err = BonEngine::new(&[0.0; 24], &WEIGHTS, &huge_n).unwrap_err();
        assert_eq!(err.to_string(), "n must be <= 1000000000, got 1000000001");
        let mixed = [BonRun { n: 2, samples: 0, seed_key: vec![0] }, BonRun { n: 2, samples: 5, seed_key: vec![0] }];
        assert!(BonEngine::new(&[0.0; 24], &WEIGHTS, &mixed).unwrap_err().to_string().starts_with("samples must be"));
    }

    #[test]
    fn a_billion_draws_stop_when_cancelled() {
        let runs = [BonRun { n: MAX_N, samples: 3, seed_key: vec![0] }];
        let engine = BonEngine::new(&[0.0; 24], &WEIGHTS, &runs).unwrap();
        let monitor = Monitor::default();
        let started = std::time::Instant::now();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(20));
                monitor.cancel();
            });
            assert_eq!(sweep(&engine, &runs, u64::MAX, &monitor), Err(Error::Cancelled));
        });
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "{:?}", started.elapsed());
    }
}
