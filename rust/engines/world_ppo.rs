//! PPO-RLHF in a world: responses are bags of `L` tokens drawn i.i.d. from the policy, the
//! reward model is linear in the tokens, and a hidden gold reward says what the policy is
//! really worth. The single-run loop [`train_world_rlhf`] and the sweep engine
//! [`WorldPpoEngine`]; one step is [`bag_rlhf_step`].
//!
//! A run starts at the world's reference (SFT) policy and owns its CPython-compatible stream:
//! each step draws the prompt as the lesson does (`rng.choice` over the prompts), then the
//! response's `L` draws of `rng.random()`. What a run records besides the step's own record
//! is exact, never sampled: the means over prompts of the proxy score `L sum_a pi(a) w(a)`,
//! the gold (`sum_a g(a) (1 - (1 - pi(a))^L)` when a repeated token counts once, `L sum_a
//! pi(a) g(a)` when every copy counts) and the response's KL `L KL(pi || pi_ref)`
//! ([`crate::methods::world_stats`], which every world engine shares). A step changes one
//! prompt's row, so only the rows changed since the last record are recomputed.
//!
//! One run is on one thread, its steps and statistics vectorised along the row
//! ([`bag_rlhf_step_rows`], [`stats_row_on`]: the reference's tokens, its floats within
//! rounding): runs are independent, the driver spreads them over the pool, and no result
//! depends on the thread count.

use super::driver::{check_summary, Engine, Keep, Monitor, RunsOut, Ticker};
use crate::error::{
    default_max_memory, fits_in_memory, overflowed, record_overflowed, reserve, vec_with_capacity, Error, Result,
};
use crate::kernels::simd::Simd;
use crate::methods::ppo::{bag_rlhf_step, BagOutcome, BagScratch, PpoParams};
use crate::methods::ppo_rows::{bag_rlhf_step_rows, RefRow, RowBagScratch};
use crate::methods::world_stats::{check_theta, ExactMeans};
pub use crate::methods::world_stats::{Table, WorldStats, WorldTables};
use crate::rng::Mt19937;

/// The per-step series of a world PPO sweep: the sampled response's record (TRL's names,
/// '/' as '_') and the exact means over prompts under the policy after the step.
pub const WORLD_PPO_HISTORY_FIELDS: [&str; 7] = [
    "objective_scores",
    "objective_rlhf_reward",
    "policy_clipfrac_avg",
    "penalised_kl",
    "proxy_score",
    "gold_score",
    "mean_kl",
];
/// Per-run results of a world PPO sweep: the final policy's exact means over prompts.
pub const WORLD_PPO_SUMMARY_FIELDS: [&str; 3] = ["final_proxy_score", "final_gold_score", "final_kl"];

/// How a run takes its steps: libm's [`bag_rlhf_step`], or [`bag_rlhf_step_rows`]
/// vectorised along the row (the same tokens, floats within rounding).
enum StepPath {
    Libm(BagScratch),
    Rows(Simd, RowBagScratch),
}

impl StepPath {
    /// The tokens the last step sampled.
    fn tokens(&self) -> &[usize] {
        match self {
            StepPath::Libm(scratch) => scratch.tokens(),
            StepPath::Rows(_, scratch) => scratch.tokens(),
        }
    }
}

/// A PPO run in a world on one stream: what [`train_world_rlhf`] and the sweeps share (the
/// safety engine's too, [`crate::engines::safe_world_ppo`]).
pub(crate) struct WorldRun<'a> {
    world: &'a WorldTables<'a>,
    theta: &'a mut [f64],
    params: PpoParams,
    beta: f64,
    rng: Mt19937,
    /// The step's `L` draws, in order.
    uniforms: Vec<f64>,
    /// Each prompt's value baseline (used when `params.vf_coef > 0`).
    values: Vec<f64>,
    path: StepPath,
    means: ExactMeans,
}

impl<'a> WorldRun<'a> {
    pub(crate) fn new(
        world: &'a WorldTables<'a>,
        theta: &'a mut [f64],
        params: &'a PpoParams,
        beta: f64,
        seed_key: &[u32],
        libm: bool,
    ) -> Result<Self> {
        let (n_prompts, vocab_size) = (world.n_prompts, world.vocab_size);
        let path = if libm {
            StepPath::Libm(BagScratch::new(vocab_size, world.response_len)?)
        } else {
            StepPath::Rows(world.simd, RowBagScratch::new(vocab_size, world.response_len)?)
        };
        let zeros = |len: usize, what: &str| -> Result<Vec<f64>> {
            let mut row = vec_with_capacity(len, what)?;
            row.resize(len, 0.0);
            Ok(row)
        };
        Ok(WorldRun {
            world,
            theta,
            params: *params,
            beta,
            rng: Mt19937::from_key(seed_key),
            uniforms: zeros(world.response_len, "a response")?,
            values: zeros(n_prompts, "the value baselines")?,
            path,
            means: ExactMeans::new(world)?,
        })
    }

    /// The work of one step in the monitor's units: the epochs' passes over the row, the draws.
    fn work_per_step(&self) -> u64 {
        (1 + u64::from(self.params.ppo_epochs)) * self.world.vocab_size as u64 + self.world.response_len as u64
    }

    /// The error of step `t` whose record's `key` is not finite.
    fn overflowed(&self, run_name: &str, t: usize, key: &str) -> Error {
        record_overflowed(&format!("{run_name} diverged at step {t}"), key, self.params.lr, self.beta)
    }

    /// Step `t`: `prompt = rng.choice(prompts)`, `L` draws of `rng.random()`, one bag step;
    /// returns the prompt and the step's record. A step whose logits or value overflow, or
    /// whose record holds a float that is not finite, is an error that `run_name`
    /// (`train_world_rlhf`, `sweep run 3`) begins.
    #[inline]
    fn step(&mut self, t: usize, run_name: &str) -> Result<(u32, BagOutcome)> {
        let weights = self.world.weights;
        self.step_with(t, run_name, weights)
    }

    /// [`WorldRun::step`] with the reward model's `weights` in place of the world's (the
    /// safety engine's per-step combination of reward and cost).
    #[inline]
    pub(crate) fn step_with(&mut self, t: usize, run_name: &str, weights: &[f64]) -> Result<(u32, BagOutcome)> {
        let v = self.world.vocab_size;
        let x = self.rng.randbelow(self.world.n_prompts as u32) as usize;
        for u in self.uniforms.iter_mut() {
            *u = self.rng.random();
        }
        let row = x * v..(x + 1) * v;
        let (logits, ref_log_probs) = (&mut self.theta[row.clone()], &self.world.ref_log_probs[row.clone()]);
        let (uniforms, beta, params, value) = (&self.uniforms, self.beta, &self.params, &mut self.values[x]);
        let out = match &mut self.path {
            StepPath::Libm(scratch) => {
                bag_rlhf_step(logits, ref_log_probs, weights, uniforms, beta, params, value, scratch)
            }
            StepPath::Rows(simd, scratch) => {
                let (shift, log_sum) = self.world.ref_normalisers[x];
                let reference = RefRow { logits: &self.world.ref_logits[row.clone()], shift, log_sum };
                bag_rlhf_step_rows(*simd, logits, reference, weights, uniforms, beta, params, value, scratch)
            }
        };
        self.means.changed(x);
        if overflowed(&self.theta[row]) | overflowed(&self.values[x..=x]) {
            return Err(self.overflowed(run_name, t, "logits"));
        }
        if let Some(key) = out.nonfinite_key() {
            return Err(self.overflowed(run_name, t, key));
        }
        Ok((x as u32, out))
    }

    /// The learning rate of the steps from now on (a schedule's).
    pub(crate) fn set_lr(&mut self, lr: f64) {
        self.params.lr = lr;
    }

    /// The tokens the last step sampled.
    pub(crate) fn tokens(&self) -> &[usize] {
        self.path.tokens()
    }

    /// The policy's logits, `[n_prompts, vocab]`.
    pub(crate) fn theta(&self) -> &[f64] {
        self.theta
    }

    /// The work of one step in the monitor's units.
    pub(crate) fn step_work(&self) -> u64 {
        self.work_per_step()
    }

    /// The exact means over prompts under the current policy ([`ExactMeans::means`]).
    pub(crate) fn exact_means(&mut self) -> WorldStats {
        self.means.means(self.world, self.theta)
    }

    /// [`WorldRun::exact_means`] after step `t`, or the error naming the first not finite.
    pub(crate) fn recorded_means(&mut self, t: usize, run_name: &str) -> Result<WorldStats> {
        let means = self.exact_means();
        match means.nonfinite_key() {
            Some(key) => Err(self.overflowed(run_name, t, key)),
            None => Ok(means),
        }
    }
}

/// Per-step record of a PPO run in a world: the prompt, the response's tokens, the step's
/// record ([`BagOutcome`]) and the exact means over prompts after the step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorldHistory {
    pub prompt: Vec<u32>,
    /// `[step, token of the response]`, row-major.
    pub tokens: Vec<u32>,
    pub score: Vec<f64>,
    pub kl: Vec<f64>,
    pub reward: Vec<f64>,
    pub clip_frac: Vec<f64>,
    pub kl_penalty: Vec<f64>,
    pub value_loss: Vec<f64>,
    pub proxy_score: Vec<f64>,
    pub gold_score: Vec<f64>,
    pub mean_kl: Vec<f64>,
}

/// Bytes a step of [`train_world_rlhf`] counts against `max_memory` with responses of
/// `response_len` tokens: eleven series of 8 bytes and 8 bytes a token (the reference counts
/// the same).
pub fn world_bytes_per_step(response_len: usize) -> u64 {
    (11 + response_len as u64) * 8
}

impl WorldHistory {
    /// Room for `steps` more steps of responses of `response_len`, or [`Error::OutOfMemory`].
    fn reserve(&mut self, steps: usize, response_len: usize) -> Result<()> {
        let what = "the history of train_world_rlhf";
        reserve(&mut self.prompt, steps, what)?;
        // Fits: the memory check counted 8 bytes a token.
        reserve(&mut self.tokens, steps * response_len, what)?;
        for series in [
            &mut self.score,
            &mut self.kl,
            &mut self.reward,
            &mut self.clip_frac,
            &mut self.kl_penalty,
            &mut self.value_loss,
            &mut self.proxy_score,
            &mut self.gold_score,
            &mut self.mean_kl,
        ] {
            reserve(series, steps, what)?;
        }
        Ok(())
    }
}

/// `steps` PPO steps in `world` with a fixed `beta` on the stream `random.Random(seed)` (its
/// `init_by_array` key), from the policy `theta` (updated in place; a world's runs start at
/// a copy of its `ref_logits`) with a zero value baseline per prompt, appending each step's
/// record to `history`.
///
/// A run whose logits or value overflow, or whose record (the step's, then the exact means)
/// holds a float that is not finite, stops with an error naming the step, `history` as it
/// stood before the failing step and `theta` as that step left it. `steps` is checked against
/// half the machine's memory before anything is allocated; `monitor` is ticked as the run
/// goes and stops it when cancelled.
#[allow(clippy::too_many_arguments)]
pub fn train_world_rlhf(
    world: &WorldTables<'_>,
    theta: &mut [f64],
    steps: usize,
    seed_key: &[u32],
    params: &PpoParams,
    beta: f64,
    history: &mut WorldHistory,
    monitor: &Monitor,
) -> Result<()> {
    train_world_on(world, theta, steps, seed_key, params, beta, history, monitor, false)
}

/// [`train_world_rlhf`], its steps taken with libm's [`bag_rlhf_step`] when `libm` (the
/// reference's arithmetic, bit for bit), else vectorised along the row.
#[allow(clippy::too_many_arguments)]
fn train_world_on(
    world: &WorldTables<'_>,
    theta: &mut [f64],
    steps: usize,
    seed_key: &[u32],
    params: &PpoParams,
    beta: f64,
    history: &mut WorldHistory,
    monitor: &Monitor,
    libm: bool,
) -> Result<()> {
    check_theta(world, theta)?;
    if steps == 0 {
        return Err(Error::invalid("steps must be >= 1, got 0"));
    }
    fits_in_memory("steps", steps as u64, world_bytes_per_step(world.response_len), default_max_memory())?;
    history.reserve(steps, world.response_len)?;
    let mut run = WorldRun::new(world, theta, params, beta, seed_key, libm)?;
    let mut ticker = Ticker::new(monitor);
    let work_per_step = run.work_per_step();
    for t in 0..steps {
        let (prompt, out) = run.step(t, "train_world_rlhf")?;
        let means = run.recorded_means(t, "train_world_rlhf")?;
        history.prompt.push(prompt);
        history.tokens.extend(run.path.tokens().iter().map(|&a| a as u32));
        history.score.push(out.score);
        history.kl.push(out.kl);
        history.reward.push(out.reward);
        history.clip_frac.push(out.clip_frac);
        history.kl_penalty.push(out.kl_penalty);
        history.value_loss.push(out.value_loss);
        history.proxy_score.push(means.proxy_score);
        history.gold_score.push(means.gold_score);
        history.mean_kl.push(means.kl);
        ticker.advance(1, work_per_step + world.vocab_size as u64)?;
    }
    ticker.flush()
}

/// One run of a world PPO sweep: its stream (the seed's `init_by_array` key), its PPO
/// settings and its (fixed) KL coefficient.
#[derive(Clone, Debug, PartialEq)]
pub struct WorldPpoRun {
    pub seed_key: Vec<u32>,
    pub params: PpoParams,
    pub beta: f64,
}

impl WorldPpoRun {
    /// A run, `beta >= 0` checked.
    pub fn new(seed_key: Vec<u32>, params: PpoParams, beta: f64) -> Result<Self> {
        Ok(WorldPpoRun { seed_key, params, beta: crate::error::non_negative("beta", beta)? })
    }
}

/// PPO runs in one world: each is [`train_world_rlhf`] from the world's reference, keeping
/// every `record_every`-th step of the sampled response's record and of the exact means.
#[derive(Clone, Debug)]
pub struct WorldPpoEngine<'a> {
    pub world: WorldTables<'a>,
    pub steps: usize,
    /// Keep steps `k-1, 2k-1, ...` of each history; 0 keeps none (summaries only).
    pub record_every: usize,
    /// Take the steps with libm's [`bag_rlhf_step`] (the reference's floats, bit for bit)
    /// instead of vectorised along the row.
    pub libm: bool,
}

impl<'a> WorldPpoEngine<'a> {
    /// Checks what the runs share; the steps vectorised along the row.
    pub fn new(world: WorldTables<'a>, steps: usize, record_every: usize) -> Result<Self> {
        if steps == 0 {
            return Err(Error::invalid("steps must be >= 1, got 0"));
        }
        Ok(WorldPpoEngine { world, steps, record_every, libm: false })
    }
}

impl Engine for WorldPpoEngine<'_> {
    type Run = WorldPpoRun;

    fn history_fields(&self) -> &'static [&'static str] {
        &WORLD_PPO_HISTORY_FIELDS
    }

    fn summary_fields(&self) -> &'static [&'static str] {
        &WORLD_PPO_SUMMARY_FIELDS
    }

    fn kept_steps(&self, _: &[WorldPpoRun]) -> usize {
        self.steps.checked_div(self.record_every).unwrap_or(0)
    }

    fn params_shape(&self) -> Vec<usize> {
        vec![self.world.n_prompts, self.world.vocab_size]
    }

    fn run(&self, runs: &[WorldPpoRun], out: RunsOut<'_>, monitor: &Monitor) -> Result<()> {
        let spec = &runs[0];
        let kept = out.history.len() / WORLD_PPO_HISTORY_FIELDS.len();
        out.params.copy_from_slice(self.world.ref_logits);
        let mut run = WorldRun::new(&self.world, out.params, &spec.params, spec.beta, &spec.seed_key, self.libm)?;
        let run_name = format!("sweep run {}", out.first_run);
        let mut ticker = Ticker::new(monitor);
        let work_per_step = run.work_per_step();
        let mut keep = Keep::new(self.record_every);
        for t in 0..self.steps {
            let (_, step) = run.step(t, &run_name)?;
            let mut work = work_per_step;
            if let Some(slot) = keep.slot() {
                let means = run.recorded_means(t, &run_name)?;
                let values = [
                    step.score,
                    step.reward,
                    step.clip_frac,
                    step.kl_penalty,
                    means.proxy_score,
                    means.gold_score,
                    means.kl,
                ];
                for (f, value) in values.into_iter().enumerate() {
                    out.history[f * kept + slot] = value;
                }
                work += self.world.vocab_size as u64;
            }
            ticker.advance(1, work)?;
        }
        ticker.flush()?;
        let last = run.exact_means();
        out.summary.copy_from_slice(&[last.proxy_score, last.gold_score, last.kl]);
        check_summary(&run_name, &WORLD_PPO_SUMMARY_FIELDS, out.summary, spec.params.lr, spec.beta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::driver::sweep;
    use crate::engines::ppo::{train_rlhf, RlhfHistory};
    use crate::engines::test_worlds::Tables;
    use crate::error::py_float;
    use crate::methods::kl_control::KlController;
    use crate::rng::seed_key;

    fn params(kl_penalty: &str, vf_coef: f64, ppo_epochs: i64) -> PpoParams {
        PpoParams::new(0.2, 0.05, ppo_epochs).and_then(|p| p.completed(kl_penalty, vf_coef, 0.2)).unwrap()
    }

    fn train(world: &WorldTables<'_>, steps: usize, seed: i128, p: &PpoParams, beta: f64) -> (Vec<f64>, WorldHistory) {
        let mut theta = world.ref_logits.to_vec();
        let mut history = WorldHistory::default();
        train_world_rlhf(world, &mut theta, steps, &seed_key(seed), p, beta, &mut history, &Monitor::default())
            .unwrap();
        (theta, history)
    }

    /// [`train`] with libm's steps: the reference's arithmetic.
    fn train_libm(
        world: &WorldTables<'_>,
        steps: usize,
        seed: i128,
        p: &PpoParams,
        beta: f64,
    ) -> (Vec<f64>, WorldHistory) {
        let mut theta = world.ref_logits.to_vec();
        let mut history = WorldHistory::default();
        let key = seed_key(seed);
        train_world_on(world, &mut theta, steps, &key, p, beta, &mut history, &Monitor::default(), true).unwrap();
        (theta, history)
    }

    #[test]
    fn in_the_lessons_world_a_run_with_libm_is_the_lessons_run_bit_for_bit() {
        // The lesson's world: 3 prompts, 8 words, a uniform reference, one-word responses.
        let weights = [1.5, 1.5, -1.6, -0.0, 1.6, 1.6, -1.5, -1.5];
        let one_token_scores: Vec<f64> = weights.iter().map(|&w| 0.0 + w).collect();
        let zeros = [0.0; 24];
        let world = WorldTables::new(
            Table { values: &zeros, rows: 3, cols: 8 },
            &weights,
            Table { values: &zeros, rows: 3, cols: 8 },
            false,
            1,
        )
        .unwrap();
        for (i, kl_penalty) in ["full", "k1", "k2", "k3"].into_iter().enumerate() {
            let p = params(kl_penalty, [0.0, 0.5][i % 2], 1 + i as i64);
            let (theta, history) = train_libm(&world, 500, 40 + i as i128, &p, 0.3);
            let mut lesson_theta = zeros.to_vec();
            let mut lesson = RlhfHistory::default();
            let fixed = KlController::fixed(0.3).unwrap();
            let key = seed_key(40 + i as i128);
            let monitor = Monitor::default();
            let values = &mut [0.0; 3];
            train_rlhf(
                &mut lesson_theta,
                &zeros,
                &one_token_scores,
                500,
                &key,
                &p,
                fixed,
                values,
                &mut lesson,
                &monitor,
            )
            .unwrap();
            assert_eq!(history.prompt, lesson.prompt, "{kl_penalty}");
            assert_eq!(history.tokens, lesson.token, "{kl_penalty}");
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            for (ours, theirs) in [
                (&history.score, &lesson.score),
                (&history.kl, &lesson.kl),
                (&history.reward, &lesson.reward),
                (&history.clip_frac, &lesson.clip_frac),
                (&history.kl_penalty, &lesson.kl_penalty),
                (&history.value_loss, &lesson.value_loss),
            ] {
                assert_eq!(bits(ours), bits(theirs), "{kl_penalty}");
            }
            assert_eq!(bits(&theta), bits(&lesson_theta), "{kl_penalty}");
        }
    }

    #[test]
    fn a_run_vectorised_along_the_row_takes_the_libm_runs_tokens_and_floats_within_1e_9() {
        let tables = Tables::random(4, 700, 21);
        for (i, kl_penalty) in ["k1", "full", "k3"].into_iter().enumerate() {
            let world = tables.world(i != 1, 8).unwrap();
            let p = params(kl_penalty, [0.0, 0.5][i % 2], 4);
            let (theta, history) = train(&world, 1500, 5 + i as i128, &p, 0.1);
            let (libm_theta, libm) = train_libm(&world, 1500, 5 + i as i128, &p, 0.1);
            assert_eq!(history.tokens, libm.tokens, "{kl_penalty}");
            // The logits' drift from the reference's arithmetic: far inside ppo_rows::DRIFT_MARGIN.
            let drift = theta.iter().zip(&libm_theta).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(drift < 1e-11, "{kl_penalty}: logits drifted by {drift}");
            for (ours, theirs) in [
                (&history.score, &libm.score),
                (&history.reward, &libm.reward),
                (&history.kl_penalty, &libm.kl_penalty),
                (&history.proxy_score, &libm.proxy_score),
                (&history.gold_score, &libm.gold_score),
                (&history.mean_kl, &libm.mean_kl),
            ] {
                assert!(ours.iter().zip(theirs).all(|(a, b)| (a - b).abs() <= 1e-9 * (1.0 + b.abs())), "{kl_penalty}");
            }
            assert_eq!(history.clip_frac, libm.clip_frac, "{kl_penalty}");
        }
    }

    /// `L * KL`, the proxy and the gold of one prompt, by summing over every response.
    fn enumerated(world: &WorldTables<'_>, x: usize, logits: &[f64]) -> WorldStats {
        let (v, length) = (world.vocab_size, world.response_len);
        let p = crate::kernels::softmax::softmax(logits).unwrap();
        let q = crate::kernels::softmax::softmax(&world.ref_logits[x * v..(x + 1) * v]).unwrap();
        let mut stats = WorldStats::default();
        for response in 0..v.pow(length as u32) {
            let tokens: Vec<usize> = (0..length).map(|i| response / v.pow(i as u32) % v).collect();
            let chance: f64 = tokens.iter().map(|&a| p[a]).product();
            let ref_chance: f64 = tokens.iter().map(|&a| q[a]).product();
            let proxy: f64 = tokens.iter().map(|&a| world.weights[a]).sum();
            let gold: f64 = (0..v)
                .map(|a| {
                    let copies = tokens.iter().filter(|&&t| t == a).count() as f64;
                    let counted = if world.count_once { copies.min(1.0) } else { copies };
                    counted * world.gold_token[x * v + a]
                })
                .sum();
            stats.proxy_score += chance * proxy;
            stats.gold_score += chance * gold;
            stats.kl += chance * (chance / ref_chance).ln();
        }
        stats
    }

    #[test]
    fn the_exact_statistics_are_the_expectations_over_every_response() {
        let tables = Tables::random(2, 4, 7);
        for count_once in [true, false] {
            for length in [1, 3, 5] {
                let world = tables.world(count_once, length).unwrap();
                let mut p = vec![0.0; 4];
                for x in 0..2 {
                    let logits = [0.3, -1.2, 2.0, 0.0];
                    let exact = world.prompt_stats(x, &logits, &mut p);
                    let summed = enumerated(&world, x, &logits);
                    for (a, b) in [
                        (exact.proxy_score, summed.proxy_score),
                        (exact.gold_score, summed.gold_score),
                        (exact.kl, summed.kl),
                    ] {
                        assert!((a - b).abs() < 1e-12 * b.abs().max(1.0), "L={length} x={x}: {a} vs {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_means_recomputed_row_by_row_are_the_means_computed_afresh() {
        let tables = Tables::random(4, 16, 3);
        let world = tables.world(true, 4).unwrap();
        let p = params("k1", 0.5, 4);
        let (theta, history) = train(&world, 60, 9, &p, 0.5);
        let mut scratch = vec![0.0; 16];
        let (mut proxy, mut gold, mut kl) = (0.0, 0.0, 0.0);
        for x in 0..4 {
            let stats = world.prompt_stats(x, &theta[x * 16..(x + 1) * 16], &mut scratch);
            proxy += stats.proxy_score;
            gold += stats.gold_score;
            kl += stats.kl;
        }
        assert_eq!(
            (history.proxy_score[59], history.gold_score[59], history.mean_kl[59]),
            (proxy / 4.0, gold / 4.0, kl / 4.0)
        );
        assert_eq!(history.tokens.len(), 60 * 4);
        assert_eq!(history.mean_kl.iter().position(|&k| k > 0.0), Some(0)); // the first step moves a row
    }

    fn engine<'a>(world: WorldTables<'a>, steps: usize, record_every: usize) -> WorldPpoEngine<'a> {
        WorldPpoEngine::new(world, steps, record_every).unwrap()
    }

    fn runs(n: usize) -> Vec<WorldPpoRun> {
        (0..n)
            .map(|i| {
                let p = PpoParams::new([0.2, 0.1][i % 2], [0.05, 0.2, 0.01][i % 3], 1 + (i % 4) as i64)
                    .and_then(|p| p.completed(["k1", "full", "k3", "k2"][i % 4], [0.0, 0.7][i % 2], 0.2))
                    .unwrap();
                WorldPpoRun::new(seed_key(1000 + i as i128), p, [0.0, 0.1, 0.5][i % 3]).unwrap()
            })
            .collect()
    }

    #[test]
    fn a_sweep_keeps_every_kth_step_of_the_single_runs_whatever_the_threads() {
        let tables = Tables::random(3, 24, 5);
        let world = tables.world(true, 6).unwrap();
        let runs = runs(7);
        let out = sweep(&engine(world.clone(), 90, 4), &runs, u64::MAX, &Monitor::default()).unwrap();
        assert_eq!((out.n_kept, out.params_shape.clone()), (22, vec![3, 24]));
        for (r, run) in runs.iter().enumerate() {
            let (theta, h) = train(&world, 90, 1000 + r as i128, &run.params, run.beta);
            let series = [&h.score, &h.reward, &h.clip_frac, &h.kl_penalty, &h.proxy_score, &h.gold_score, &h.mean_kl];
            for (f, values) in series.iter().enumerate() {
                let kept: Vec<f64> = values.iter().skip(3).step_by(4).copied().collect();
                assert_eq!(out.kept(r, f), &kept[..], "run {r} {}", WORLD_PPO_HISTORY_FIELDS[f]);
            }
            assert_eq!(out.final_params[r * 72..(r + 1) * 72], theta[..], "run {r}");
            assert_eq!(out.summary[r * 3..(r + 1) * 3], [h.proxy_score[89], h.gold_score[89], h.mean_kl[89]]);
        }
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let again = pool.install(|| sweep(&engine(world.clone(), 90, 4), &runs, u64::MAX, &Monitor::default()));
            assert_eq!(again.unwrap(), out, "{threads} threads");
        }
        let none = sweep(&engine(world.clone(), 90, 0), &runs, u64::MAX, &Monitor::default()).unwrap();
        assert!(none.history.is_empty());
        assert_eq!((none.final_params, none.summary), (out.final_params, out.summary));
    }

    #[test]
    fn with_k1_the_policy_climbs_the_proxy_and_pays_in_kl() {
        let tables = Tables::random(2, 16, 11);
        let world = tables.world(false, 4).unwrap();
        let (_, history) = train(&world, 3000, 1, &params("k1", 0.5, 4), 0.5);
        assert!(
            history.proxy_score[2999] > history.proxy_score[0] + 0.5,
            "{:?}",
            (history.proxy_score[0], history.proxy_score[2999])
        );
        assert!(history.mean_kl[2999] > 0.1);
        assert!(history.clip_frac.iter().all(|&c| (0.0..=1.0).contains(&c)));
    }

    fn table(values: &[f64], rows: usize, cols: usize) -> Table<'_> {
        Table { values: &values[..rows * cols], rows, cols }
    }

    #[test]
    fn bad_tables_are_refused_naming_the_argument() {
        let tables = Tables::random(2, 4, 1);
        let (values, weights, gold) = (&tables.ref_logits, &tables.weights, &tables.gold);
        let new = |ref_logits: Table<'_>, weights: &[f64], gold: Table<'_>, response_len| {
            WorldTables::new(ref_logits, weights, gold, true, response_len).map(|_| ()).unwrap_err().to_string()
        };
        assert_eq!(
            new(table(values, 0, 4), weights, table(gold, 2, 4), 3),
            "ref_logits must have 1 to 65536 rows (one per prompt), got 0"
        );
        assert_eq!(
            new(table(values, 8, 1), weights, table(gold, 2, 4), 3),
            "ref_logits must have 2 to 1048576 columns (one per token), got 1"
        );
        assert_eq!(
            new(table(values, 2, 4), &weights[..3], table(gold, 2, 4), 3),
            "weights must have 4 entries (one per token of ref_logits), got 3"
        );
        assert_eq!(
            new(table(values, 2, 4), weights, table(gold, 1, 4), 3),
            "gold_token must have the shape of ref_logits, (2, 4), got (1, 4)"
        );
        assert_eq!(new(table(values, 2, 4), weights, table(gold, 2, 4), 0), "response_len must be >= 1, got 0");
        assert_eq!(
            new(table(values, 2, 4), weights, table(gold, 2, 4), 4097),
            "response_len must be <= 4096, got 4097"
        );
        let mut nan = values.clone();
        nan[6] = f64::NAN;
        assert_eq!(new(table(&nan, 2, 4), weights, table(gold, 2, 4), 3), "ref_logits[1, 2] must be finite, got nan");
        let mut inf = weights.clone();
        inf[1] = f64::NEG_INFINITY;
        assert_eq!(new(table(values, 2, 4), &inf, table(gold, 2, 4), 3), "weights[1] must be finite, got -inf");
        assert_eq!(new(table(values, 2, 4), weights, table(&nan, 2, 4), 3), "gold_token[1, 2] must be finite, got nan");
        let short = Table { values: &values[..7], rows: 2, cols: 4 };
        assert_eq!(new(short, weights, table(gold, 2, 4), 3), "ref_logits holds 7 values, not 2 x 4");
        let world = tables.world(true, 3).unwrap();
        let mut history = WorldHistory::default();
        let err = train_world_rlhf(
            &world,
            &mut [0.0; 7],
            5,
            &[0],
            &params("k1", 0.0, 4),
            0.1,
            &mut history,
            &Monitor::default(),
        );
        assert!(err.unwrap_err().to_string().starts_with("theta must have the shape of ref_logits"));
        assert!(WorldPpoEngine::new(world, 0, 1).unwrap_err().to_string().contains("steps"));
        assert_eq!(
            WorldPpoRun::new(vec![0], params("k1", 0.0, 1), -1.0).unwrap_err().to_string(),
            "beta must be >= 0, got -1.0"
        );
    }

    #[test]
    fn divergence_names_the_run_and_the_step() {
        let tables = Tables::random(2, 8, 2);
        let world = tables.world(false, 3).unwrap();
        let mut runs = runs(4);
        runs[2].params.lr = 1e300;
        let err = sweep(&engine(world.clone(), 50, 1), &runs, u64::MAX, &Monitor::default()).unwrap_err();
        let beta = py_float(runs[2].beta);
        assert_eq!(
            err,
            Error::Diverged(format!("sweep run 2 diverged at step 0: logits overflowed (lr=1e+300, beta={beta})"))
        );
        // A reward model scoring 1e300: the value loss overflows while the logits stay small.
        let huge: Vec<f64> = (0..8).map(|i| if i == 0 { 1e300 } else { 1.0 }).collect();
        let world = WorldTables::new(
            Table { values: &tables.ref_logits, rows: 2, cols: 8 },
            &huge,
            Table { values: &tables.gold, rows: 2, cols: 8 },
            false,
            3,
        )
        .unwrap();
        let p = PpoParams::new(0.2, 1e-300, 2).and_then(|p| p.completed("k1", 0.5, 0.2)).unwrap();
        let mut theta = tables.ref_logits.clone();
        let mut history = WorldHistory::default();
        let err = train_world_rlhf(&world, &mut theta, 1000, &[4], &p, 0.1, &mut history, &Monitor::default());
        let t = history.score.len();
        assert_eq!(
            err,
            Err(Error::Diverged(format!(
                "train_world_rlhf diverged at step {t}: value_loss overflowed (lr=1e-300, beta=0.1)"
            )))
        );
    }

    #[test]
    fn progress_counts_every_step_and_cancelling_stops_the_sweep() {
        let tables = Tables::random(2, 8, 2);
        let monitor = Monitor::default();
        sweep(&engine(tables.world(true, 2).unwrap(), 40, 0), &runs(5), u64::MAX, &monitor).unwrap();
        assert_eq!(monitor.steps_done.load(std::sync::atomic::Ordering::Relaxed), 200);
        let cancelled = Monitor::default();
        cancelled.cancel();
        let out = sweep(&engine(tables.world(true, 2).unwrap(), 40, 0), &runs(5), u64::MAX, &cancelled);
        assert_eq!(out, Err(Error::Cancelled));
    }
}
