//! Best-of-N in a sequence world: the sweep engine [`SequenceBestOfNEngine`] over runs of
//! `(n, samples, seed)`, each on its own CPython-compatible stream.
//!
//! A run repeats `samples` times: a prompt `x = rng.choice(prompts)` (as every world engine
//! draws it), then `n` responses from the reference policy, each token by token
//! (`a_t = sample_index(softmax(ref[x, t]), rng.random())` until EOS or `max_len`); the first of
//! those the proxy scores highest is kept, and its proxy score, gold and content length are
//! recorded. The summaries are their means and standard errors (Bessel), the analytic KL
//! `log n - (n - 1) / n` (an upper bound where responses tie, which a discrete world's do) and
//! the reference's exact expectations, the `n = 1` values the sampled means start from. The
//! reference twin is `python/rlhf_fast/reference/engines/sequence_best_of_n.py`.

use super::driver::{Engine, Monitor, RunsOut, Ticker};
use super::sequence_common::sample_response;
use crate::error::{vec_with_capacity, Error, Result};
use crate::kernels::softmax::softmax_row;
use crate::methods::best_of_n::bon_kl_analytic;
use crate::methods::token_ppo::{TokenWorld, EOS};
use crate::rng::Mt19937;

/// Per-run results of a sequence Best-of-N sweep.
pub const SEQUENCE_BON_SUMMARY_FIELDS: [&str; 10] = [
    "sampled_proxy_score",
    "sampled_proxy_score_se",
    "sampled_gold_score",
    "sampled_gold_score_se",
    "sampled_length",
    "sampled_length_se",
    "kl_analytic",
    "ref_proxy_score",
    "ref_gold_score",
    "ref_length",
];
/// Responses a run may draw: `n * samples`.
pub const MAX_DRAWS: u64 = 1 << 40;

/// One run: keep the best of `n` responses, `samples` times, on the stream of `seed_key`.
#[derive(Clone, Debug, PartialEq)]
pub struct SequenceBestOfNRun {
    pub n: u64,
    pub samples: usize,
    pub seed_key: Vec<u32>,
}

/// The mean and its standard error (Bessel) of `values` (at least two), summed left to right.
fn mean_and_se(values: &[f64]) -> (f64, f64) {
    let count = values.len() as f64;
    let mean = values.iter().fold(0.0, |total, &v| total + v) / count;
    let squares = values.iter().fold(0.0, |total, &v| total + (v - mean) * (v - mean));
    (mean, (squares / (count - 1.0) / count).sqrt())
}

/// Best-of-N runs in one sequence world, from its reference policy.
#[derive(Clone, Debug)]
pub struct SequenceBestOfNEngine<'a> {
    pub world: TokenWorld<'a>,
    /// The reference's probabilities `[P, L, V]`.
    ref_probs: Vec<f64>,
}

impl<'a> SequenceBestOfNEngine<'a> {
    /// Checks every run: `n >= 1`, `samples >= 2` (a standard error needs two), `n * samples`
    /// at most [`MAX_DRAWS`].
    pub fn new(world: TokenWorld<'a>, runs: &[SequenceBestOfNRun]) -> Result<Self> {
        for run in runs {
            if run.n == 0 {
                return Err(Error::invalid("n must be >= 1, got 0"));
            }
            if run.samples < 2 {
                return Err(Error::invalid(format!("samples must be >= 2, got {}", run.samples)));
            }
            if run.n.checked_mul(run.samples as u64).is_none_or(|draws| draws > MAX_DRAWS) {
                return Err(Error::invalid(format!(
                    "n * samples must be <= {MAX_DRAWS} (the responses a run draws), got {} * {}",
                    run.n, run.samples
                )));
            }
        }
        let mut ref_probs = vec_with_capacity(world.ref_logits.len(), "the reference's probabilities")?;
        ref_probs.resize(world.ref_logits.len(), 0.0);
        for (row, out) in
            world.ref_logits.chunks_exact(world.vocab_size).zip(ref_probs.chunks_exact_mut(world.vocab_size))
        {
            softmax_row(row, out);
        }
        Ok(SequenceBestOfNEngine { world, ref_probs })
    }
}

impl Engine for SequenceBestOfNEngine<'_> {
    type Run = SequenceBestOfNRun;

    fn history_fields(&self) -> &'static [&'static str] {
        &[]
    }

    fn summary_fields(&self) -> &'static [&'static str] {
        &SEQUENCE_BON_SUMMARY_FIELDS
    }

    fn kept_steps(&self, _: &[SequenceBestOfNRun]) -> usize {
        0
    }

    fn params_shape(&self) -> Vec<usize> {
        vec![]
    }

    fn run(&self, runs: &[SequenceBestOfNRun], out: RunsOut<'_>, monitor: &Monitor) -> Result<()> {
        let (run, world) = (&runs[0], &self.world);
        let (l, v) = (world.max_len, world.vocab_size);
        let mut rng = Mt19937::from_key(&run.seed_key);
        let what = "a Best-of-N run's samples";
        let (mut proxies, mut golds, mut lengths) = (
            vec_with_capacity(run.samples, what)?,
            vec_with_capacity(run.samples, what)?,
            vec_with_capacity(run.samples, what)?,
        );
        let (mut tokens, mut best) = (Vec::with_capacity(l), Vec::with_capacity(l));
        let mut seen = vec![false; v];
        let mut ticker = Ticker::new(monitor);
        for _ in 0..run.samples {
            let x = rng.randbelow(world.n_prompts as u32) as usize;
            let probs = &self.ref_probs[x * l * v..(x + 1) * l * v];
            let mut best_score = f64::NEG_INFINITY;
            for j in 0..run.n {
                sample_response(probs, v, &mut rng, &mut tokens);
                let score = world.rm_score(x, &tokens);
                if j == 0 || score > best_score {
                    best_score = score;
                    std::mem::swap(&mut best, &mut tokens);
                }
            }
            proxies.push(best_score);
            golds.push(world.gold(x, &best, &mut seen));
            lengths.push(best.iter().filter(|&&a| a != EOS).count() as f64);
            ticker.advance(1, run.n * l as u64)?;
        }
        ticker.flush()?;
        let reference = world.stats(world.ref_logits);
        let ((proxy, proxy_se), (gold, gold_se), (length, length_se)) =
            (mean_and_se(&proxies), mean_and_se(&golds), mean_and_se(&lengths));
        out.summary.copy_from_slice(&[
            proxy,
            proxy_se,
            gold,
            gold_se,
            length,
            length_se,
            bon_kl_analytic(run.n),
            reference.proxy_score,
            reference.gold_score,
            reference.length,
        ]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::driver::sweep;
    use crate::rng::seed_key;

    #[test]
    fn the_proxy_rises_with_n_and_runs_do_not_depend_on_the_threads() {
        let (p, l, v) = (2, 4, 5);
        let ref_logits: Vec<f64> = (0..p * l * v).map(|i| ((i * 5 % 7) as f64 - 3.0) / 4.0).collect();
        let w = [0.0, 1.0, -0.5, 0.3, -1.0];
        let zeros = [0.0; 2];
        let world = TokenWorld::new(&ref_logits, [p, l, v], &w, &zeros, 0.2, &w, &zeros, true).unwrap();
        let runs: Vec<SequenceBestOfNRun> =
            [1, 4, 16].iter().map(|&n| SequenceBestOfNRun { n, samples: 400, seed_key: seed_key(n as i128) }).collect();
        let engine = SequenceBestOfNEngine::new(world, &runs).unwrap();
        let out = sweep(&engine, &runs, u64::MAX, &Monitor::default()).unwrap();
        let proxy: Vec<f64> = (0..3).map(|r| out.summary[r * 10]).collect();
        assert!(proxy[0] < proxy[1] && proxy[1] < proxy[2], "{proxy:?}");
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        assert_eq!(pool.install(|| sweep(&engine, &runs, u64::MAX, &Monitor::default())).unwrap(), out);
        let bad = [SequenceBestOfNRun { n: 2, samples: 1, seed_key: vec![0] }];
        let err = SequenceBestOfNEngine::new(engine.world.clone(), &bad).unwrap_err();
        assert_eq!(err.to_string(), "samples must be >= 2, got 1");
    }
}
