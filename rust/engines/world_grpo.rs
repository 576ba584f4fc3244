//! GRPO in a world: each step samples a group of responses, bags of `L` tokens drawn i.i.d.
//! from the policy, scores them with the world's linear reward model and takes the lesson's
//! GRPO step on them with TRL's per-token loss. The single-run loop [`train_world_grpo`] and
//! the sweep engine [`WorldGrpoEngine`]; one step is [`bag_grpo_update`].
//!
//! A run starts at the world's reference (SFT) policy and owns its CPython-compatible stream:
//! each step draws the prompt as the lesson's GRPO does (`rng.choice` over the prompts), then
//! the group's `G L` draws of `rng.random()`, response after response. What a run records
//! besides the step's own record is exact ([`ExactMeans`]): the means over prompts of the
//! proxy score, the gold and `L KL(pi || pi_ref)` under the policy after the step.
//!
//! One run is scalar code on one thread: runs are independent, the driver spreads them over
//! the pool, and no result depends on the thread count.

use super::driver::{check_summary, Engine, Keep, Monitor, RunsOut, Ticker};
use crate::error::{
    default_max_memory, fits_in_memory, overflowed, record_overflowed, reserve, vec_with_capacity, Error, Result,
};
use crate::methods::grpo::{bag_grpo_update, check_group_tokens, BagGrpoScratch, GrpoOutcome, GrpoParams};
use crate::methods::world_stats::{check_theta, ExactMeans, WorldStats, WorldTables};
use crate::rng::Mt19937;

/// The per-step series of a world GRPO sweep: the group's record (TRL's names) and the exact
/// means over prompts under the policy after the step.
pub const WORLD_GRPO_HISTORY_FIELDS: [&str; 8] =
    ["reward", "reward_std", "kl", "clip_ratio", "loss", "proxy_score", "gold_score", "mean_kl"];
/// Per-run results of a world GRPO sweep: the final policy's exact means over prompts, then
/// the means over all steps of the group's record.
pub const WORLD_GRPO_SUMMARY_FIELDS: [&str; 8] = [
    "final_proxy_score",
    "final_gold_score",
    "final_kl",
    "mean_score",
    "mean_reward_std",
    "mean_kl",
    "clip_frac",
    "mean_loss",
];

/// A GRPO run in a world on one stream: what [`train_world_grpo`] and the sweep share.
struct WorldGrpoRun<'a> {
    world: &'a WorldTables<'a>,
    theta: &'a mut [f64],
    params: &'a GrpoParams,
    rng: Mt19937,
    /// The step's `G L` draws, in order.
    uniforms: Vec<f64>,
    scratch: BagGrpoScratch,
    exact: ExactMeans,
}

impl<'a> WorldGrpoRun<'a> {
    fn new(world: &'a WorldTables<'a>, theta: &'a mut [f64], params: &'a GrpoParams, seed_key: &[u32]) -> Result<Self> {
        let group_tokens = check_group_tokens(params.num_generations, world.response_len)?;
        let mut uniforms = vec_with_capacity(group_tokens, "the GRPO group")?;
        uniforms.resize(group_tokens, 0.0);
        Ok(WorldGrpoRun {
            world,
            theta,
            params,
            rng: Mt19937::from_key(seed_key),
            uniforms,
            scratch: BagGrpoScratch::new(world.vocab_size, params.num_generations, world.response_len)?,
            exact: ExactMeans::new(world)?,
        })
    }

    /// The work of one step in the monitor's units: each iteration's pass over the row and
    /// the group's tokens, and the draws.
    fn work_per_step(&self) -> u64 {
        let group = self.uniforms.len() as u64;
        u64::from(self.params.num_iterations) * (self.world.vocab_size as u64 + group) + group
    }

    /// The error of step `t` whose record's `key` is not finite.
    fn overflowed(&self, run_name: &str, t: usize, key: &str) -> Error {
        record_overflowed(&format!("{run_name} diverged at step {t}"), key, self.params.lr, self.params.beta)
    }

    /// Step `t`: `prompt = rng.choice(prompts)`, `G L` draws of `rng.random()`, one bag GRPO
    /// step; returns the prompt and the step's record. A step whose logits overflow, or whose
    /// record holds a float that is not finite, is an error that `run_name`
    /// (`train_world_grpo`, `sweep run 3`) begins.
    #[inline]
    fn step(&mut self, t: usize, run_name: &str) -> Result<(u32, GrpoOutcome)> {
        let v = self.world.vocab_size;
        let x = self.rng.randbelow(self.world.n_prompts as u32) as usize;
        for u in self.uniforms.iter_mut() {
            *u = self.rng.random();
        }
        let row = x * v..(x + 1) * v;
        let out = bag_grpo_update(
            &mut self.theta[row.clone()],
            &self.world.ref_log_probs[row.clone()],
            self.world.weights,
            &self.uniforms,
            self.params,
            &mut self.scratch,
        );
        self.exact.changed(x);
        if overflowed(&self.theta[row]) {
            return Err(self.overflowed(run_name, t, "logits"));
        }
        if let Some(key) = out.nonfinite_key(None) {
            return Err(self.overflowed(run_name, t, key));
        }
        Ok((x as u32, out))
    }

    /// The exact means over prompts after step `t`, or the error naming the first not finite.
    fn recorded_means(&mut self, t: usize, run_name: &str) -> Result<WorldStats> {
        let means = self.exact.means(self.world, self.theta);
        match means.nonfinite_key() {
            Some(key) => Err(self.overflowed(run_name, t, key)),
            None => Ok(means),
        }
    }
}

/// Per-step record of a GRPO run in a world: the prompt, the group's tokens, the step's
/// record ([`GrpoOutcome`]) and the exact means over prompts after the step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorldGrpoHistory {
    pub prompt: Vec<u32>,
    /// `[step, generation, token of the response]`, row-major.
    pub tokens: Vec<u32>,
    pub score: Vec<f64>,
    pub reward_std: Vec<f64>,
    pub kl: Vec<f64>,
    pub clip_frac: Vec<f64>,
    pub loss: Vec<f64>,
    pub proxy_score: Vec<f64>,
    pub gold_score: Vec<f64>,
    pub mean_kl: Vec<f64>,
}

/// Bytes a step of [`train_world_grpo`] counts against `max_memory` with groups of
/// `group_tokens` tokens: ten series of 8 bytes and 8 bytes a token.
pub fn world_grpo_bytes_per_step(group_tokens: usize) -> u64 {
    (10 + group_tokens as u64) * 8
}

impl WorldGrpoHistory {
    /// Room for `steps` more steps of groups of `group_tokens`, or [`Error::OutOfMemory`].
    fn reserve(&mut self, steps: usize, group_tokens: usize) -> Result<()> {
        let what = "the history of train_world_grpo";
        reserve(&mut self.prompt, steps, what)?;
        // Fits: the memory check counted 8 bytes a token.
        reserve(&mut self.tokens, steps * group_tokens, what)?;
        for series in [
            &mut self.score,
            &mut self.reward_std,
            &mut self.kl,
            &mut self.clip_frac,
            &mut self.loss,
            &mut self.proxy_score,
            &mut self.gold_score,
            &mut self.mean_kl,
        ] {
            reserve(series, steps, what)?;
        }
        Ok(())
    }
}

/// `steps` GRPO steps in `world` on the stream `random.Random(seed)` (its `init_by_array`
/// key), from the policy `theta` (updated in place; a world's runs start at a copy of its
/// `ref_logits`), appending each step's record to `history`.
///
/// A run whose logits overflow, or whose record (the step's, then the exact means) holds a
/// float that is not finite, stops with an error naming the step, `history` as it stood
/// before the failing step and `theta` as that step left it. `steps` is checked against half
/// the machine's memory before anything is allocated; `monitor` is ticked as the run goes and
/// stops it when cancelled.
pub fn train_world_grpo(
    world: &WorldTables<'_>,
    theta: &mut [f64],
    steps: usize,
    seed_key: &[u32],
    params: &GrpoParams,
    history: &mut WorldGrpoHistory,
    monitor: &Monitor,
) -> Result<()> {
    check_theta(world, theta)?;
    if steps == 0 {
        return Err(Error::invalid("steps must be >= 1, got 0"));
    }
    let group_tokens = check_group_tokens(params.num_generations, world.response_len)?;
    fits_in_memory("steps", steps as u64, world_grpo_bytes_per_step(group_tokens), default_max_memory())?;
    history.reserve(steps, group_tokens)?;
    let mut run = WorldGrpoRun::new(world, theta, params, seed_key)?;
    let mut ticker = Ticker::new(monitor);
    let work_per_step = run.work_per_step() + world.vocab_size as u64;
    for t in 0..steps {
        let (prompt, out) = run.step(t, "train_world_grpo")?;
        let means = run.recorded_means(t, "train_world_grpo")?;
        history.prompt.push(prompt);
        history.tokens.extend(run.scratch.tokens().iter().map(|&a| a as u32));
        history.score.push(out.score);
        history.reward_std.push(out.reward_std);
        history.kl.push(out.kl);
        history.clip_frac.push(out.clip_frac);
        history.loss.push(out.loss);
        history.proxy_score.push(means.proxy_score);
        history.gold_score.push(means.gold_score);
        history.mean_kl.push(means.kl);
        ticker.advance(1, work_per_step)?;
    }
    ticker.flush()
}

/// One run of a world GRPO sweep: its stream (the seed's `init_by_array` key) and its settings.
#[derive(Clone, Debug, PartialEq)]
pub struct WorldGrpoRunSpec {
    pub seed_key: Vec<u32>,
    pub params: GrpoParams,
}

/// GRPO runs in one world: each is [`train_world_grpo`] from the world's reference, keeping
/// every `record_every`-th step of the group's record and of the exact means.
#[derive(Clone, Debug)]
pub struct WorldGrpoEngine<'a> {
    pub world: WorldTables<'a>,
    pub steps: usize,
    /// Keep steps `k-1, 2k-1, ...` of each history; 0 keeps none (summaries only).
    pub record_every: usize,
}

impl<'a> WorldGrpoEngine<'a> {
    /// Checks what the runs share.
    pub fn new(world: WorldTables<'a>, steps: usize, record_every: usize) -> Result<Self> {
        if steps == 0 {
            return Err(Error::invalid("steps must be >= 1, got 0"));
        }
        Ok(WorldGrpoEngine { world, steps, record_every })
    }
}

impl Engine for WorldGrpoEngine<'_> {
    type Run = WorldGrpoRunSpec;

    fn history_fields(&self) -> &'static [&'static str] {
        &WORLD_GRPO_HISTORY_FIELDS
    }

    fn summary_fields(&self) -> &'static [&'static str] {
        &WORLD_GRPO_SUMMARY_FIELDS
    }

    fn kept_steps(&self, _: &[WorldGrpoRunSpec]) -> usize {
        self.steps.checked_div(self.record_every).unwrap_or(0)
    }

    fn params_shape(&self) -> Vec<usize> {
        vec![self.world.n_prompts, self.world.vocab_size]
    }

    fn run(&self, runs: &[WorldGrpoRunSpec], out: RunsOut<'_>, monitor: &Monitor) -> Result<()> {
        let spec = &runs[0];
        let kept = out.history.len() / WORLD_GRPO_HISTORY_FIELDS.len();
        out.params.copy_from_slice(self.world.ref_logits);
        let mut run = WorldGrpoRun::new(&self.world, out.params, &spec.params, &spec.seed_key)?;
        let run_name = format!("sweep run {}", out.first_run);
        let mut ticker = Ticker::new(monitor);
        let work_per_step = run.work_per_step();
        let (mut score_sum, mut std_sum, mut kl_sum, mut clip_sum, mut loss_sum) = (0.0, 0.0, 0.0, 0.0, 0.0);
        let mut keep = Keep::new(self.record_every);
        for t in 0..self.steps {
            let (_, step) = run.step(t, &run_name)?;
            score_sum += step.score;
            std_sum += step.reward_std;
            kl_sum += step.kl;
            clip_sum += step.clip_frac;
            loss_sum += step.loss;
            let mut work = work_per_step;
            if let Some(slot) = keep.slot() {
                let means = run.recorded_means(t, &run_name)?;
                let values = [
                    step.score,
                    step.reward_std,
                    step.kl,
                    step.clip_frac,
                    step.loss,
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
        let last = run.exact.means(&self.world, run.theta);
        let steps = self.steps as f64;
        out.summary.copy_from_slice(&[
            last.proxy_score,
            last.gold_score,
            last.kl,
            score_sum / steps,
            std_sum / steps,
            kl_sum / steps,
            clip_sum / steps,
            loss_sum / steps,
        ]);
        check_summary(&run_name, &WORLD_GRPO_SUMMARY_FIELDS, out.summary, spec.params.lr, spec.params.beta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::driver::sweep;
    use crate::engines::test_worlds::Tables;
    use crate::error::py_float;
    use crate::methods::grpo::ScaleRewards;
    use crate::rng::seed_key;

    fn params(g: i64, beta: f64, lr: f64, iterations: i64) -> GrpoParams {
        GrpoParams::new(g, beta, 0.2, None, lr, ScaleRewards::Group, iterations).unwrap()
    }

    fn train(world: &WorldTables<'_>, steps: usize, seed: i128, p: &GrpoParams) -> (Vec<f64>, WorldGrpoHistory) {
        let mut theta = world.ref_logits.to_vec();
        let mut history = WorldGrpoHistory::default();
        train_world_grpo(world, &mut theta, steps, &seed_key(seed), p, &mut history, &Monitor::default()).unwrap();
        (theta, history)
    }

    fn runs(n: usize) -> Vec<WorldGrpoRunSpec> {
        (0..n)
            .map(|i| WorldGrpoRunSpec {
                seed_key: seed_key(500 + i as i128),
                params: GrpoParams::new(
                    2 + (i % 3) as i64 * 3,
                    [0.0, 0.04, 0.5][i % 3],
                    0.2,
                    if i % 2 == 0 { None } else { Some(0.28) },
                    [0.05, 0.3][i % 2],
                    if i % 4 == 3 { ScaleRewards::None } else { ScaleRewards::Group },
                    1 + (i % 2) as i64,
                )
                .unwrap(),
            })
            .collect()
    }

    #[test]
    fn a_sweep_keeps_every_kth_step_of_the_single_runs_whatever_the_threads() {
        let tables = Tables::random(3, 20, 5);
        let world = tables.world(true, 4).unwrap();
        let runs = runs(6);
        let engine = |every| WorldGrpoEngine::new(world.clone(), 50, every).unwrap();
        let out = sweep(&engine(3), &runs, u64::MAX, &Monitor::default()).unwrap();
        assert_eq!((out.n_kept, out.params_shape.clone()), (16, vec![3, 20]));
        for (r, run) in runs.iter().enumerate() {
            let (theta, h) = train(&world, 50, 500 + r as i128, &run.params);
            assert_eq!(h.tokens.len(), 50 * run.params.num_generations * 4);
            let series =
                [&h.score, &h.reward_std, &h.kl, &h.clip_frac, &h.loss, &h.proxy_score, &h.gold_score, &h.mean_kl];
            for (f, values) in series.iter().enumerate() {
                let kept: Vec<f64> = values.iter().skip(2).step_by(3).copied().collect();
                assert_eq!(out.kept(r, f), &kept[..], "run {r} {}", WORLD_GRPO_HISTORY_FIELDS[f]);
            }
            assert_eq!(out.final_params[r * 60..(r + 1) * 60], theta[..], "run {r}");
            let mean = |v: &[f64]| v.iter().sum::<f64>() / 50.0;
            let expected = [
                h.proxy_score[49],
                h.gold_score[49],
                h.mean_kl[49],
                mean(&h.score),
                mean(&h.reward_std),
                mean(&h.kl),
                mean(&h.clip_frac),
                mean(&h.loss),
            ];
            assert_eq!(out.summary[r * 8..(r + 1) * 8], expected);
        }
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let again = pool.install(|| sweep(&engine(3), &runs, u64::MAX, &Monitor::default()));
            assert_eq!(again.unwrap(), out, "{threads} threads");
        }
        let none = sweep(&engine(0), &runs, u64::MAX, &Monitor::default()).unwrap();
        assert!(none.history.is_empty());
        assert_eq!((none.final_params, none.summary), (out.final_params, out.summary));
    }

    #[test]
    fn a_run_draws_the_prompt_then_the_group_and_climbs_the_proxy() {
        let tables = Tables::random(2, 16, 11);
        let world = tables.world(false, 4).unwrap();
        let p = params(8, 0.0, 0.5, 1);
        let (theta, history) = train(&world, 400, 3, &p);
        let mut rng = Mt19937::from_key(&seed_key(3));
        let prompt = rng.randbelow(2) as usize;
        let uniforms: Vec<f64> = (0..32).map(|_| rng.random()).collect();
        let mut row = tables.ref_logits[prompt * 16..(prompt + 1) * 16].to_vec();
        let mut scratch = BagGrpoScratch::new(16, 8, 4).unwrap();
        let first = bag_grpo_update(
            &mut row,
            &world.ref_log_probs[prompt * 16..],
            &tables.weights,
            &uniforms,
            &p,
            &mut scratch,
        );
        assert_eq!(history.prompt[0] as usize, prompt);
        assert_eq!(history.tokens[..32].iter().map(|&a| a as usize).collect::<Vec<_>>(), scratch.tokens());
        assert_eq!((history.score[0], history.loss[0], history.kl[0]), (first.score, first.loss, first.kl));
        assert!(history.proxy_score[399] > history.proxy_score[0] + 1.0, "{}", history.proxy_score[399]);
        assert!(history.mean_kl[399] > 0.1);
        assert_eq!(train(&world, 400, 3, &p), (theta, history));
    }

    #[test]
    fn bad_inputs_and_divergence_are_errors_naming_what_failed() {
        let tables = Tables::random(2, 8, 2);
        let world = tables.world(true, 3).unwrap();
        let mut history = WorldGrpoHistory::default();
        let monitor = Monitor::default();
        let p = params(4, 0.1, 0.05, 1);
        let err = train_world_grpo(&world, &mut [0.0; 7], 5, &[0], &p, &mut history, &monitor).unwrap_err();
        assert!(err.to_string().starts_with("theta must have the shape of ref_logits"), "{err}");
        let err = train_world_grpo(&world, &mut tables.ref_logits.clone(), 0, &[0], &p, &mut history, &monitor);
        assert_eq!(err.unwrap_err().to_string(), "steps must be >= 1, got 0");
        assert!(WorldGrpoEngine::new(world.clone(), 0, 1).unwrap_err().to_string().contains("steps"));
        let mut specs = runs(3);
        specs[1].params.lr = 1e300;
        let err = sweep(&WorldGrpoEngine::new(world.clone(), 20, 1).unwrap(), &specs, u64::MAX, &monitor);
        let beta = py_float(specs[1].params.beta);
        assert_eq!(
            err.unwrap_err(),
            Error::Diverged(format!("sweep run 1 diverged at step 0: logits overflowed (lr=1e+300, beta={beta})"))
        );
        let cancelled = Monitor::default();
        cancelled.cancel();
        let out = sweep(&WorldGrpoEngine::new(world, 400, 0).unwrap(), &runs(3), u64::MAX, &cancelled);
        assert_eq!(out, Err(Error::Cancelled));
    }
}
