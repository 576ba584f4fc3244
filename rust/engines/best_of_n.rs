//! Best-of-N from a policy: one evaluation [`best_of_n`], and the sweep engine [`BonEngine`].

use super::driver::{Engine, Monitor, RunsOut};
use crate::error::{finite_slice, Error, Result};
use crate::kernels::policy::check_table;
use crate::kernels::sampling::BucketSampler;
use crate::kernels::softmax::softmax_rows;
use crate::methods::best_of_n::{bon_exact, bon_kl_analytic, bon_sample};
use crate::methods::reward_checks::check_not_length_only;
use crate::rng::Mt19937;

/// Per-run results of a Best-of-N sweep (`sampled_score` is NaN without samples).
pub const BON_SUMMARY_FIELDS: [&str; 4] = ["expected_score", "kl_analytic", "kl_exact", "sampled_score"];

/// Monte-Carlo draws between two looks at the monitor (fewer when `n` is large).
const CHUNK: u64 = 1024;

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
    if samples < 0 {
        return Err(Error::invalid(format!("samples must be >= 0, got {samples}")));
    }
    Ok(n_prompts)
}

/// The mean kept score of `samples` Monte-Carlo draws on one stream, summed left to right,
/// ticking `monitor` every few draws (in chunks: the same draws as one long loop).
fn sampled_score(
    sampler: &BucketSampler,
    weights: &[f64],
    n: u64,
    samples: u64,
    seed_key: &[u32],
    monitor: &Monitor,
) -> Result<f64> {
    let mut rng = Mt19937::from_key(seed_key);
    let mut total = 0.0;
    let chunk = (CHUNK / n.max(1)).max(1);
    let mut left = samples;
    while left > 0 {
        let take = left.min(chunk);
        for _ in 0..take {
            total += bon_sample(sampler, weights, n, &mut rng);
        }
        left -= take;
        monitor.tick(take)?;
    }
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
/// Progress counts Monte-Carlo samples.
#[derive(Clone, Debug)]
pub struct BonEngine<'a> {
    pub weights: &'a [f64],
    pi: Vec<f64>,
    sampler: BucketSampler,
}

impl<'a> BonEngine<'a> {
    /// Checks the policy, the reward model and every run.
    pub fn new(policy: &[f64], weights: &'a [f64], runs: &[BonRun]) -> Result<Self> {
        check_bon_inputs(policy, weights, 1, 0)?;
        for run in runs {
            check_bon_inputs(policy, weights, run.n, run.samples)?;
        }
        let pi = softmax_rows(policy, weights.len());
        let sampler = BucketSampler::new(&pi, weights.len());
        Ok(BonEngine { weights, pi, sampler })
    }
}

impl Engine for BonEngine<'_> {
    type Run = BonRun;

    fn history_fields(&self) -> &'static [&'static str] {
        &[]
    }

    fn summary_fields(&self) -> &'static [&'static str] {
        &BON_SUMMARY_FIELDS
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
        let sampled = if run.samples > 0 {
            sampled_score(&self.sampler, self.weights, n, run.samples as u64, &run.seed_key, monitor)?
        } else {
            f64::NAN
        };
        out.summary.copy_from_slice(&[expected, bon_kl_analytic(n), kl_exact, sampled]);
        Ok(())
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
        let runs: Vec<BonRun> = [(1, 0, 0), (4, 3000, 1), (16, 5000, 2), (4, 3000, 3)]
            .into_iter()
            .map(|(n, samples, seed)| BonRun { n, samples, seed_key: seed_key(seed) })
            .collect();
        let engine = BonEngine::new(&policy, &WEIGHTS, &runs).unwrap();
        let monitor = Monitor::default();
        let out = sweep(&engine, &runs, u64::MAX, &monitor).unwrap();
        assert_eq!(monitor.steps_done.load(std::sync::atomic::Ordering::Relaxed), 11_000);
        for (r, run) in runs.iter().enumerate() {
            let single = evaluate(&policy, run.n, run.samples, &run.seed_key).unwrap();
            assert_eq!(out.summary[r * 4..r * 4 + 3], [single.expected_score, single.kl_analytic, single.kl_exact]);
            match single.sampled_score {
                Some(s) => assert_eq!(out.summary[r * 4 + 3], s),
                None => assert!(out.summary[r * 4 + 3].is_nan()),
            }
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
    }
}
