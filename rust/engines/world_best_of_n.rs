//! Best-of-N in a world, from its reference policy: the sweep engine [`WorldBonEngine`].
//!
//! A run `(n, samples, seed)` owns its CPython-compatible stream and draws `samples` times a
//! prompt (`rng.choice` over the prompts, as world PPO draws it), then `n` responses of `L`
//! tokens from the reference's row ([`draw_bag`], world PPO's draw), and keeps the first of
//! those the proxy scores highest. It records the kept responses' mean proxy and gold with
//! their standard errors, the usual `log n - (n - 1) / n` for the KL (Stiennon et al., Gao
//! et al.: an upper bound where responses tie), and the reference's own exact proxy and
//! gold, the `n = 1` expectation the sampled means start from. The exact law of the kept
//! response is out of reach for bags (a sum of `L` weights over `V^L` responses), which is
//! why this engine samples where the lesson's Best-of-N is exact.

use super::driver::{Engine, Monitor, RunsOut, Ticker};
use super::world_ppo::{WorldStats, WorldTables};
use crate::error::{at_most, py_float, vec_with_capacity, Error, Result};
use crate::kernels::sampling::running_sums;
use crate::kernels::softmax::softmax_row;
use crate::methods::best_of_n::{bag_gold, bon_kl_analytic, draw_bag};
use crate::rng::Mt19937;

/// Per-run results of a world Best-of-N sweep: the kept responses' sampled means and their
/// standard errors, the analytic KL, and the reference's exact means over prompts.
pub const WORLD_BON_SUMMARY_FIELDS: [&str; 7] = [
    "sampled_proxy_score",
    "sampled_proxy_score_se",
    "sampled_gold_score",
    "sampled_gold_score_se",
    "kl_analytic",
    "ref_proxy_score",
    "ref_gold_score",
];

/// Largest `n`, as for the lesson's Best-of-N.
pub const MAX_N: i64 = super::best_of_n::MAX_N;

/// One run of a world Best-of-N sweep: `n`, its Monte-Carlo samples and its stream.
#[derive(Clone, Debug, PartialEq)]
pub struct WorldBonRun {
    pub n: u64,
    pub samples: u64,
    pub seed_key: Vec<u32>,
}

impl WorldBonRun {
    /// A run, `1 <= n <= 10^9` and `samples >= 2` (a standard error needs two) checked.
    pub fn new(n: i64, samples: i64, seed_key: Vec<u32>) -> Result<Self> {
        if n < 1 {
            return Err(Error::invalid(format!("n must be >= 1, got {n}")));
        }
        at_most("n", n, MAX_N)?;
        if samples < 2 {
            return Err(Error::invalid(format!(
                "samples must be >= 2 in a world (its Best-of-N is sampled, and a standard error needs two), got {samples}"
            )));
        }
        Ok(WorldBonRun { n: n as u64, samples: samples as u64, seed_key })
    }
}

/// The running mean and sum of squared deviations of a series (Welford), and its plain sum.
#[derive(Clone, Copy, Debug, Default)]
struct Moments {
    count: f64,
    total: f64,
    mean: f64,
    squares: f64,
}

impl Moments {
    fn add(&mut self, x: f64) {
        self.count += 1.0;
        self.total += x;
        let delta = x - self.mean;
        self.mean += delta / self.count;
        self.squares += delta * (x - self.mean);
    }

    /// The mean (the sum over the count, as the lesson's sampled score) and its standard
    /// error `sqrt(s^2 / count)`, `s^2` the unbiased variance.
    fn mean_and_standard_error(&self) -> (f64, f64) {
        (self.total / self.count, (self.squares / (self.count - 1.0) / self.count).sqrt())
    }
}

/// Best-of-N runs from one world's reference policy against one reward model.
#[derive(Clone, Debug)]
pub struct WorldBonEngine<'a> {
    world: WorldTables<'a>,
    /// `[prompt, token]`: each row's running sums of the reference's probabilities.
    cumulative: Vec<f64>,
    /// The reference's exact means over prompts (KL 0).
    reference: WorldStats,
}

impl<'a> WorldBonEngine<'a> {
    /// The reference's running sums and exact means, once for every run.
    pub fn new(world: WorldTables<'a>) -> Result<Self> {
        let v = world.vocab_size;
        let mut cumulative = vec_with_capacity(world.ref_logits.len(), "the reference's running sums")?;
        cumulative.resize(world.ref_logits.len(), 0.0);
        let mut p = vec_with_capacity(v, "a row of the vocabulary")?;
        p.resize(v, 0.0);
        let mut total = WorldStats::default();
        for (x, (row, sums)) in world.ref_logits.chunks_exact(v).zip(cumulative.chunks_exact_mut(v)).enumerate() {
            softmax_row(row, &mut p);
            running_sums(&p, sums);
            let stats = world.prompt_stats(x, row, &mut p);
            total.proxy_score += stats.proxy_score;
            total.gold_score += stats.gold_score;
        }
        let n = world.n_prompts as f64;
        let reference = WorldStats { proxy_score: total.proxy_score / n, gold_score: total.gold_score / n, kl: 0.0 };
        Ok(WorldBonEngine { world, cumulative, reference })
    }
}

impl Engine for WorldBonEngine<'_> {
    type Run = WorldBonRun;

    fn history_fields(&self) -> &'static [&'static str] {
        &[]
    }

    fn summary_fields(&self) -> &'static [&'static str] {
        &WORLD_BON_SUMMARY_FIELDS
    }

    fn kept_steps(&self, _: &[WorldBonRun]) -> usize {
        0
    }

    fn params_shape(&self) -> Vec<usize> {
        vec![0]
    }

    fn run(&self, runs: &[WorldBonRun], out: RunsOut<'_>, monitor: &Monitor) -> Result<()> {
        let run = &runs[0];
        let world = &self.world;
        let (v, length) = (world.vocab_size, world.response_len);
        let mut rng = Mt19937::from_key(&run.seed_key);
        let mut ticker = Ticker::new(monitor);
        let zeros = |what: &str| -> Result<Vec<usize>> {
            let mut bag = vec_with_capacity(length, what)?;
            bag.resize(length, 0);
            Ok(bag)
        };
        let (mut kept, mut bag, mut distinct) = (zeros("a response")?, zeros("a response")?, zeros("a response")?);
        let (mut proxy, mut gold) = (Moments::default(), Moments::default());
        for _ in 0..run.samples {
            let x = rng.randbelow(world.n_prompts as u32) as usize;
            let row = x * v..(x + 1) * v;
            let cumulative = &self.cumulative[row.clone()];
            // The first response is kept whatever it scores; a later one only if it scores more.
            let mut best = draw_bag(cumulative, world.weights, &mut kept, &mut rng);
            ticker.advance(0, length as u64)?;
            for _ in 1..run.n {
                let score = draw_bag(cumulative, world.weights, &mut bag, &mut rng);
                if score > best {
                    best = score;
                    std::mem::swap(&mut kept, &mut bag);
                }
                ticker.advance(0, length as u64)?;
            }
            proxy.add(best);
            gold.add(bag_gold(&world.gold_token[row], &kept, world.count_once, &mut distinct));
            ticker.advance(1, 0)?;
        }
        ticker.flush()?;
        let (proxy_mean, proxy_se) = proxy.mean_and_standard_error();
        let (gold_mean, gold_se) = gold.mean_and_standard_error();
        out.summary.copy_from_slice(&[
            proxy_mean,
            proxy_se,
            gold_mean,
            gold_se,
            bon_kl_analytic(run.n),
            self.reference.proxy_score,
            self.reference.gold_score,
        ]);
        // Weights near the floats' end can overflow a sum; nothing trains, so nothing "diverged".
        match WORLD_BON_SUMMARY_FIELDS.iter().zip(out.summary.iter()).find(|(_, value)| !value.is_finite()) {
            None => Ok(()),
            Some((field, &value)) => Err(Error::Diverged(format!(
                "sweep run {} overflowed: {field} is {} (n={})",
                out.first_run,
                py_float(value),
                run.n
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::driver::sweep;
    use crate::engines::test_worlds::Tables;
    use crate::engines::world_ppo::Table;
    use crate::kernels::sampling::sample_index;
    use crate::rng::seed_key;

    /// A world of `n_prompts` prompts and `vocab_size` tokens, reference logits in `[-2, 2)`.
    fn tables(n_prompts: usize, vocab_size: usize, seed: i128) -> Tables {
        Tables::with_ref_scale(n_prompts, vocab_size, seed, 4.0)
    }

    /// One run by hand: `sample_index` on the softmax of the row, the first of the best kept.
    fn by_hand(t: &Tables, count_once: bool, length: usize, run: &WorldBonRun) -> (f64, f64) {
        let (n_prompts, v) = t.shape;
        let mut rng = Mt19937::from_key(&run.seed_key);
        let (mut proxy, mut gold) = (0.0, 0.0);
        for _ in 0..run.samples {
            let x = rng.randbelow(n_prompts as u32) as usize;
            let p = crate::kernels::softmax::softmax(&t.ref_logits[x * v..(x + 1) * v]).unwrap();
            let mut best: Option<(f64, Vec<usize>)> = None;
            for _ in 0..run.n {
                let bag: Vec<usize> = (0..length).map(|_| sample_index(&p, rng.random())).collect();
                let score = bag.iter().fold(0.0, |s, &a| s + t.weights[a]);
                if best.as_ref().is_none_or(|(b, _)| score > *b) {
                    best = Some((score, bag));
                }
            }
            let (score, mut bag) = best.unwrap();
            proxy += score;
            if count_once {
                bag.sort_unstable();
                bag.dedup();
            }
            gold += bag.iter().fold(0.0, |s, &a| s + t.gold[x * v + a]);
        }
        (proxy / run.samples as f64, gold / run.samples as f64)
    }

    #[test]
    fn a_run_keeps_the_first_of_the_best_of_n_reference_bags_whatever_the_threads() {
        let t = tables(3, 6, 1);
        for count_once in [true, false] {
            let engine = WorldBonEngine::new(t.world(count_once, 4).unwrap()).unwrap();
            let runs: Vec<WorldBonRun> = [(1, 50, 0), (3, 40, 1), (8, 30, 2), (3, 40, 3)]
                .into_iter()
                .map(|(n, samples, seed)| WorldBonRun::new(n, samples, seed_key(seed)).unwrap())
                .collect();
            let monitor = Monitor::default();
            let out = sweep(&engine, &runs, u64::MAX, &monitor).unwrap();
            assert_eq!(monitor.steps_done.load(std::sync::atomic::Ordering::Relaxed), 160);
            let f = WORLD_BON_SUMMARY_FIELDS.len();
            for (r, run) in runs.iter().enumerate() {
                let (proxy, gold) = by_hand(&t, count_once, 4, run);
                let summary = &out.summary[r * f..(r + 1) * f];
                assert!((summary[0] - proxy).abs() < 1e-12, "run {r}: {} vs {proxy}", summary[0]);
                assert!((summary[2] - gold).abs() < 1e-12, "run {r}: {} vs {gold}", summary[2]);
                assert!(summary[1] > 0.0 && summary[3] > 0.0);
                assert_eq!(summary[4], bon_kl_analytic(run.n));
            }
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let again = pool.install(|| sweep(&engine, &runs, u64::MAX, &Monitor::default())).unwrap();
                assert_eq!(again, out, "{threads} threads");
            }
        }
    }

    #[test]
    fn more_candidates_raise_the_proxy_from_the_reference() {
        let t = tables(2, 16, 4);
        let engine = WorldBonEngine::new(t.world(false, 3).unwrap()).unwrap();
        let runs: Vec<WorldBonRun> =
            [1, 16].into_iter().map(|n| WorldBonRun::new(n, 4000, seed_key(n as i128)).unwrap()).collect();
        let out = sweep(&engine, &runs, u64::MAX, &Monitor::default()).unwrap();
        let (one, sixteen) = (&out.summary[..7], &out.summary[7..]);
        // n = 1 samples the reference: its mean is the exact one within a few standard errors.
        assert!((one[0] - one[5]).abs() < 4.0 * one[1], "{one:?}");
        assert!((one[2] - one[6]).abs() < 4.0 * one[3], "{one:?}");
        assert!(sixteen[0] > one[0] + 10.0 * (one[1] + sixteen[1]), "{one:?} {sixteen:?}");
    }

    #[test]
    fn bad_runs_are_refused_and_cancelling_stops() {
        assert_eq!(WorldBonRun::new(0, 5, vec![0]).unwrap_err().to_string(), "n must be >= 1, got 0");
        assert_eq!(
            WorldBonRun::new(MAX_N + 1, 5, vec![0]).unwrap_err().to_string(),
            "n must be <= 1000000000, got 1000000001"
        );
        assert!(WorldBonRun::new(2, 1, vec![0]).unwrap_err().to_string().starts_with("samples must be >= 2"));
        let t = tables(2, 4, 0);
        let engine = WorldBonEngine::new(t.world(true, 2).unwrap()).unwrap();
        let runs = [WorldBonRun::new(MAX_N, 3, vec![0]).unwrap()];
        let cancelled = Monitor::default();
        cancelled.cancel();
        assert_eq!(sweep(&engine, &runs, u64::MAX, &cancelled), Err(Error::Cancelled));
        let huge: Vec<f64> = vec![1e308; 4];
        let overflowing = WorldTables::new(
            Table { values: &t.ref_logits, rows: 2, cols: 4 },
            &huge,
            Table { values: &t.gold, rows: 2, cols: 4 },
            true,
            2,
        )
        .unwrap();
        let engine = WorldBonEngine::new(overflowing).unwrap();
        let err = sweep(&engine, &[WorldBonRun::new(2, 3, vec![0]).unwrap()], u64::MAX, &Monitor::default());
        assert_eq!(err, Err(Error::Diverged("sweep run 0 overflowed: sampled_proxy_score is inf (n=2)".into())));
    }
}
