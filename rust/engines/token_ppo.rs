//! PPO on token sequences as TRL runs it: the sweep engine [`TokenPpoEngine`] over runs of
//! `(seed, kl_coef, lr)` in one sequence world ([`TokenWorld`]).
//!
//! A run starts at the world's reference policy (`theta = ref_logits [P, L, V]`) with a zero
//! value head `V [P, L]` and owns its CPython-compatible stream. Each step:
//!
//! 1. rollouts with the old policy: `batch_size` responses, each to `prompt = rng.choice(prompts)`
//!    (as the world engines draw), token by token `a_t = sample_index(softmax(theta[p, t]),
//!    rng.random())` until EOS (token 0) or `max_len`;
//! 2. per-token rewards, GAE and returns per response, the advantages whitened over the
//!    batch's valid tokens ([`crate::methods::token_ppo`]);
//! 3. `num_ppo_epochs` epochs, each a fresh `rng.shuffle` of the batch (TRL's
//!    `np.random.permutation`) cut into `num_mini_batches` minibatches, each one plain SGD step
//!    on `loss = pg + vf_coef vf` with learning rate `lr` (the lesson's optimiser; TRL's is
//!    AdamW) on `theta` and `V`.
//!
//! The step's history is TRL's metrics ('/' written '_'), the batch's mean content length and
//! mean gold, and the exact expected proxy score, gold, KL and content length of the policy
//! after the step (kept steps only); a run's summary is the exact statistics of its final
//! policy. The policy's rows are vectorised ([`PolicyRows`]: floats within rounding of the
//! reference twin's, `python/rlhf_fast/reference/engines/token_ppo.py`, and its sampled tokens);
//! a run is on one thread and the row kernels give the same bits on every vector unit, so
//! nothing depends on the thread count or the CPU.

use super::driver::{check_summary, Engine, Monitor, RunsOut};
use super::sequence_common::{sweep_batch_run, BatchRun};
use crate::error::{non_negative, overflowed, positive, py_float, vec_with_capacity, Error, Result};
use crate::methods::token_ppo::{
    gae, masked_whiten, minibatch_loss_and_grads, per_token_kl, per_token_rewards, shaped_score, PolicyGradient,
    PolicyRows, Rollouts, TokenPpoParams, TokenWorld, EOS,
};
use crate::rng::Mt19937;

/// The per-step series of a token PPO sweep: TRL's metrics ('/' written '_'), the batch's
/// mean content length and mean gold, then the exact expectations under the policy after the
/// step ([`TokenWorld::stats`], means over prompts), computed only for the kept steps.
pub const TOKEN_PPO_HISTORY_FIELDS: [&str; 20] = [
    "objective_kl",
    "objective_entropy",
    "objective_non_score_reward",
    "objective_rlhf_reward",
    "objective_scores",
    "policy_approxkl_avg",
    "policy_clipfrac_avg",
    "loss_policy_avg",
    "loss_value_avg",
    "val_clipfrac_avg",
    "policy_entropy_avg",
    "val_ratio",
    "val_ratio_var",
    "val_num_eos_tokens",
    "mean_length",
    "gold_score",
    "expected_proxy_score",
    "expected_gold_score",
    "expected_kl",
    "expected_length",
];
/// Per-run results: the exact statistics of the final policy, means over prompts.
pub const TOKEN_PPO_SUMMARY_FIELDS: [&str; 4] = ["final_proxy_score", "final_gold_score", "final_kl", "final_length"];
pub const MAX_BATCH_SIZE: usize = 1 << 20;

/// One run of a token PPO sweep: its stream (the seed's `init_by_array` key) and settings.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenPpoRun {
    pub seed_key: Vec<u32>,
    pub kl_coef: f64,
    pub lr: f64,
}

impl TokenPpoRun {
    /// A run, `kl_coef >= 0` and `lr > 0` checked.
    pub fn new(seed_key: Vec<u32>, kl_coef: f64, lr: f64) -> Result<Self> {
        Ok(TokenPpoRun { seed_key, kl_coef: non_negative("kl_coef", kl_coef)?, lr: positive("lr", lr)? })
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().fold(0.0, |total, &v| total + v) / values.len() as f64
}

/// torch's `.var()` of the per-minibatch ratios; 0 for a single one (torch: NaN).
fn unbiased_var(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let m = mean(values);
    values.iter().fold(0.0, |total, &v| total + (v - m) * (v - m)) / (values.len() - 1) as f64
}

fn zeros(len: usize, what: &str) -> Result<Vec<f64>> {
    let mut v = vec_with_capacity(len, what)?;
    v.resize(len, 0.0);
    Ok(v)
}

/// Per-minibatch statistics of one step, in TRL's order of logging.
#[derive(Default)]
struct StepStats {
    approxkl: Vec<f64>,
    pg_clipfrac: Vec<f64>,
    pg_loss: Vec<f64>,
    vf_loss: Vec<f64>,
    vf_clipfrac: Vec<f64>,
    entropy: Vec<f64>,
    ratio: Vec<f64>,
}

/// One run's state on its stream.
struct TokenRun<'a> {
    world: &'a TokenWorld<'a>,
    theta: &'a mut [f64],
    values: Vec<f64>,
    kl_coef: f64,
    lr: f64,
    params: &'a TokenPpoParams,
    batch_size: usize,
    rng: Mt19937,
    rows: PolicyRows,
    grad_theta: PolicyGradient,
    grad_values: Vec<f64>,
    rollouts: Rollouts,
    /// The batch's raw advantages of valid tokens, in order, to whiten.
    flat: Vec<f64>,
    /// Per-response scratch of `max_len`: KL, rewards.
    kl: Vec<f64>,
    rewards: Vec<f64>,
    ref_logp: Vec<f64>,
    seen: Vec<bool>,
    order: Vec<usize>,
    touched: Vec<usize>,
    marked: Vec<bool>,
    stats: StepStats,
}

impl<'a> TokenRun<'a> {
    fn new(
        world: &'a TokenWorld<'a>,
        theta: &'a mut [f64],
        spec: &TokenPpoRun,
        params: &'a TokenPpoParams,
        batch_size: usize,
    ) -> Result<Self> {
        let (n_states, l) = (world.n_prompts * world.max_len, world.max_len);
        let cells = batch_size * l; // fits: the engine checked batch_size * max_len
        let what = "a token PPO run's batch";
        Ok(TokenRun {
            world,
            theta,
            values: zeros(n_states, "the value head")?,
            kl_coef: spec.kl_coef,
            lr: spec.lr,
            params,
            batch_size,
            rng: Mt19937::from_key(&spec.seed_key),
            rows: PolicyRows::new(n_states, world.vocab_size)?,
            grad_theta: PolicyGradient::new(n_states, cells)?,
            grad_values: zeros(n_states, "the value head's gradient")?,
            rollouts: Rollouts {
                max_len: l,
                prompts: vec![0; batch_size],
                lengths: vec![0; batch_size],
                tokens: vec![0; cells],
                old_logp: zeros(cells, what)?,
                old_values: zeros(cells, what)?,
                advantages: zeros(cells, what)?,
                returns: zeros(cells, what)?,
            },
            flat: vec_with_capacity(cells, what)?,
            kl: zeros(l, what)?,
            rewards: zeros(l, what)?,
            ref_logp: zeros(l, what)?,
            seen: vec![false; world.vocab_size],
            order: (0..batch_size).collect(),
            touched: vec_with_capacity(n_states, what)?,
            marked: vec![false; n_states],
            stats: StepStats::default(),
        })
    }

    fn diverged(&self, name: &str, t: usize, key: &str) -> Error {
        Error::Diverged(format!(
            "{name} diverged at step {t}: {key} overflowed (lr={}, kl_coef={})",
            py_float(self.lr),
            py_float(self.kl_coef)
        ))
    }

    /// Response `b` of the batch with the current policy: its prompt, tokens, old
    /// log-probabilities and values, into the rollouts.
    fn rollout(&mut self, b: usize) {
        let (l, world) = (self.world.max_len, self.world);
        let p = self.rng.randbelow(world.n_prompts as u32) as usize;
        self.rollouts.prompts[b] = p;
        let mut length = l;
        for t in 0..l {
            let s = p * l + t;
            let a = self.rows.sample(self.theta, s, self.rng.random());
            let logp = self.rows.cached(s).logp(self.theta[s * world.vocab_size + a]);
            let i = b * l + t;
            self.rollouts.tokens[i] = a;
            self.rollouts.old_logp[i] = logp;
            self.rollouts.old_values[i] = self.values[s];
            self.ref_logp[t] = world.ref_logp[s * world.vocab_size + a];
            if a == EOS {
                length = t + 1;
                break;
            }
        }
        self.rollouts.lengths[b] = length;
    }
}

impl BatchRun<16> for TokenRun<'_> {
    /// Step `t`; its history record (in [`TOKEN_PPO_HISTORY_FIELDS`]' order), or the error
    /// naming `name` (`sweep run 3`) and the step.
    fn step(&mut self, t: usize, name: &str) -> Result<[f64; 16]> {
        let (l, world, params, kl_coef) = (self.world.max_len, self.world, self.params, self.kl_coef);
        let (mut kl_sum, mut entropy_sum, mut non_score_sum, mut score_sum, mut length_sum, mut gold_sum) =
            (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        let mut n_eos = 0usize;
        self.flat.clear();
        for b in 0..self.batch_size {
            self.rollout(b);
            let (p, n) = (self.rollouts.prompts[b], self.rollouts.lengths[b]);
            let cells = b * l..b * l + n;
            let tokens = &self.rollouts.tokens[cells.clone()];
            let has_eos = tokens[n - 1] == EOS;
            let n_content = n - usize::from(has_eos);
            let score = shaped_score(world.rm_score(p, tokens), n_content, has_eos, params);
            let logp = &self.rollouts.old_logp[cells.clone()];
            per_token_kl(logp, &self.ref_logp[..n], params.kl_estimator, &mut self.kl[..n]);
            per_token_rewards(&self.kl[..n], score, kl_coef, &mut self.rewards[..n]);
            score_sum += world.add_step_rewards(p, tokens, &mut self.rewards[..n]);
            gae(
                &self.rewards[..n],
                &self.rollouts.old_values[cells.clone()],
                params.gamma,
                params.lam,
                &mut self.rollouts.advantages[cells.clone()],
                &mut self.rollouts.returns[cells.clone()],
            );
            self.flat.extend_from_slice(&self.rollouts.advantages[cells.clone()]);
            let (mut response_kl, mut response_entropy, mut non_score) = (0.0, 0.0, 0.0);
            for (&k, &lp) in self.kl[..n].iter().zip(logp) {
                response_kl += k;
                response_entropy -= lp;
                non_score += -kl_coef * k;
            }
            kl_sum += response_kl;
            entropy_sum += response_entropy;
            non_score_sum += non_score;
            score_sum += score;
            length_sum += n_content as f64;
            gold_sum += world.gold(p, tokens, &mut self.seen);
            n_eos += usize::from(has_eos);
        }
        masked_whiten(&mut self.flat);
        let mut start = 0;
        for b in 0..self.batch_size {
            let n = self.rollouts.lengths[b];
            self.rollouts.advantages[b * l..b * l + n].copy_from_slice(&self.flat[start..start + n]);
            start += n;
        }

        let stats = &mut self.stats;
        for series in [
            &mut stats.approxkl,
            &mut stats.pg_clipfrac,
            &mut stats.pg_loss,
            &mut stats.vf_loss,
            &mut stats.vf_clipfrac,
            &mut stats.entropy,
            &mut stats.ratio,
        ] {
            series.clear();
        }
        let size = self.batch_size / params.num_mini_batches;
        for _ in 0..params.num_ppo_epochs {
            // A fresh permutation per epoch, as TRL's `np.random.permutation`.
            for (i, slot) in self.order.iter_mut().enumerate() {
                *slot = i;
            }
            self.rng.shuffle(&mut self.order);
            for m in 0..params.num_mini_batches {
                let indices = &self.order[m * size..(m + 1) * size];
                let out = minibatch_loss_and_grads(
                    self.theta,
                    &self.values,
                    &self.rollouts,
                    indices,
                    params,
                    &mut self.rows,
                    &mut self.grad_theta,
                    &mut self.grad_values,
                );
                // Only the states of the minibatch's tokens have a gradient: the others'
                // entries would move by `lr * 0`, which leaves them as they are.
                for &b in indices {
                    let p = self.rollouts.prompts[b];
                    for s in p * l..p * l + self.rollouts.lengths[b] {
                        if !self.marked[s] {
                            self.marked[s] = true;
                            self.touched.push(s);
                        }
                    }
                }
                // State by state (each state's tokens together, in their order), the row's step
                // and its next softmax while it is in cache.
                let gradient = &mut self.grad_theta;
                gradient.tokens.sort_by_key(|&(s, _, _)| s);
                for group in gradient.tokens.chunk_by(|x, y| x.0 == y.0) {
                    let s = group[0].0;
                    let c = std::mem::take(&mut gradient.coef_sums[s]);
                    self.rows.descend(self.theta, s, c, group, self.lr);
                }
                gradient.tokens.clear();
                for &s in &self.touched {
                    self.values[s] -= self.lr * self.grad_values[s];
                    self.grad_values[s] = 0.0;
                    self.marked[s] = false;
                }
                self.touched.clear();
                stats.approxkl.push(out.approxkl);
                stats.pg_clipfrac.push(out.pg_clipfrac);
                stats.pg_loss.push(out.pg_loss);
                stats.vf_loss.push(out.vf_loss);
                stats.vf_clipfrac.push(out.vf_clipfrac);
                stats.entropy.push(out.entropy_mean);
                stats.ratio.push(out.ratio_mean);
            }
        }
        if overflowed(self.theta) {
            return Err(self.diverged(name, t, "logits"));
        }
        if overflowed(&self.values) {
            return Err(self.diverged(name, t, "values"));
        }
        let b = self.batch_size as f64;
        let record = [
            kl_sum / b,
            entropy_sum / b,
            non_score_sum / b,
            non_score_sum / b + score_sum / b,
            score_sum / b,
            mean(&stats.approxkl),
            mean(&stats.pg_clipfrac),
            mean(&stats.pg_loss),
            mean(&stats.vf_loss),
            mean(&stats.vf_clipfrac),
            mean(&stats.entropy),
            mean(&stats.ratio),
            unbiased_var(&stats.ratio),
            n_eos as f64,
            length_sum / b,
            gold_sum / b,
        ];
        if let Some(f) = record.iter().position(|x| !x.is_finite()) {
            return Err(self.diverged(name, t, TOKEN_PPO_HISTORY_FIELDS[f]));
        }
        Ok(record)
    }

    /// Each epoch's pass over the batch's rows.
    fn work_per_step(&self) -> u64 {
        let cells = (self.batch_size * self.world.max_len * self.world.vocab_size) as u64;
        cells * (1 + self.params.num_ppo_epochs as u64)
    }

    fn theta(&self) -> &[f64] {
        self.theta
    }
}

/// Token PPO runs in one sequence world, each from the world's reference policy, keeping
/// every `record_every`-th step of TRL's metrics.
#[derive(Clone, Debug)]
pub struct TokenPpoEngine<'a> {
    pub world: TokenWorld<'a>,
    pub steps: usize,
    pub batch_size: usize,
    pub params: TokenPpoParams,
    /// Keep steps `k-1, 2k-1, ...`; 0 keeps none (summaries only).
    pub record_every: usize,
}

impl<'a> TokenPpoEngine<'a> {
    /// Checks what the runs share: `steps >= 1`, `2 <= batch_size <= 2^20`, the settings, and
    /// that a run's working arrays (the policy's rows and gradient, the batch) fit in memory.
    pub fn new(
        world: TokenWorld<'a>,
        steps: usize,
        batch_size: usize,
        params: TokenPpoParams,
        record_every: usize,
    ) -> Result<Self> {
        if steps == 0 {
            return Err(Error::invalid("steps must be >= 1, got 0"));
        }
        if !(2..=MAX_BATCH_SIZE).contains(&batch_size) {
            let message = if batch_size < 2 {
                format!("batch_size must be >= 2, got {batch_size}")
            } else {
                format!("batch_size must be <= {MAX_BATCH_SIZE}, got {batch_size}")
            };
            return Err(Error::invalid(message));
        }
        let params = params.checked(batch_size)?;
        // Three tables of the policy's size and the batch's five arrays, per run at once:
        // refused before any run allocates them.
        let table = world.ref_logp.len() as u64;
        let batch = (batch_size * world.max_len) as u64;
        crate::error::fits_in_memory(
            "batch_size",
            batch_size as u64,
            8 * 5 * world.max_len as u64,
            crate::error::default_max_memory(),
        )?;
        crate::error::fits_in_memory("ref_logits", 3 * table + 5 * batch, 8, crate::error::default_max_memory())?;
        Ok(TokenPpoEngine { world, steps, batch_size, params, record_every })
    }
}

impl Engine for TokenPpoEngine<'_> {
    type Run = TokenPpoRun;

    fn history_fields(&self) -> &'static [&'static str] {
        &TOKEN_PPO_HISTORY_FIELDS
    }

    fn summary_fields(&self) -> &'static [&'static str] {
        &TOKEN_PPO_SUMMARY_FIELDS
    }

    fn kept_steps(&self, _: &[TokenPpoRun]) -> usize {
        self.steps.checked_div(self.record_every).unwrap_or(0)
    }

    fn params_shape(&self) -> Vec<usize> {
        vec![self.world.n_prompts, self.world.max_len, self.world.vocab_size]
    }

    fn run(&self, runs: &[TokenPpoRun], out: RunsOut<'_>, monitor: &Monitor) -> Result<()> {
        let spec = &runs[0];
        out.params.copy_from_slice(self.world.ref_logits);
        let mut run = TokenRun::new(&self.world, out.params, spec, &self.params, self.batch_size)?;
        let run_name = format!("sweep run {}", out.first_run);
        let summary =
            sweep_batch_run(&self.world, &mut run, self.steps, self.record_every, &run_name, out.history, monitor)?;
        check_summary(&run_name, &TOKEN_PPO_SUMMARY_FIELDS, &summary, spec.lr, spec.kl_coef)?;
        out.summary.copy_from_slice(&summary);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::driver::sweep;
    use crate::rng::seed_key;

    struct Arrays {
        ref_logits: Vec<f64>,
        w: Vec<f64>,
        g: Vec<f64>,
        bias: Vec<f64>,
        offset: Vec<f64>,
        shape: [usize; 3],
    }

    impl Arrays {
        fn new(p: usize, l: usize, v: usize) -> Self {
            let n = p * l * v;
            let ref_logits = (0..n).map(|i| ((i * 37 % 17) as f64 - 8.0) / 6.0).collect();
            let mut w: Vec<f64> = (0..v).map(|a| ((a * 5 % 7) as f64 - 3.0) / 2.0).collect();
            w[0] = 0.0;
            let g = (0..v).map(|a| ((a * 3 % 5) as f64 - 1.0) / 2.0).collect();
            Arrays { ref_logits, w, g, bias: vec![0.1; p], offset: vec![0.0; p], shape: [p, l, v] }
        }

        fn world(&self) -> TokenWorld<'_> {
            TokenWorld::new(&self.ref_logits, self.shape, &self.w, &self.bias, 0.0, &self.g, &self.offset, true)
                .unwrap()
        }
    }

    fn runs() -> Vec<TokenPpoRun> {
        [(0.0, 0.5), (0.05, 0.5), (0.5, 0.2)]
            .iter()
            .enumerate()
            .map(|(i, &(kl_coef, lr))| TokenPpoRun::new(seed_key(i as i128), kl_coef, lr).unwrap())
            .collect()
    }

    #[test]
    fn a_sweep_is_the_same_whatever_the_threads_and_ppo_climbs_the_proxy() {
        let arrays = Arrays::new(3, 4, 6);
        let engine = TokenPpoEngine::new(arrays.world(), 60, 8, TokenPpoParams::default(), 10).unwrap();
        let out = sweep(&engine, &runs(), u64::MAX, &Monitor::default()).unwrap();
        assert_eq!((out.n_kept, out.params_shape.clone()), (6, vec![3, 4, 6]));
        let start = arrays.world().stats(&arrays.ref_logits);
        assert!(out.summary[0] > start.proxy_score + 0.3, "{} vs {}", out.summary[0], start.proxy_score);
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let again = pool.install(|| sweep(&engine, &runs(), u64::MAX, &Monitor::default())).unwrap();
            assert_eq!(again, out, "{threads} threads");
        }
        let clipfrac = TOKEN_PPO_HISTORY_FIELDS.iter().position(|&f| f == "policy_clipfrac_avg").unwrap();
        let series = out.kept(0, clipfrac);
        assert!(series.iter().all(|c| (0.0..=1.0).contains(c)));
    }

    #[test]
    fn divergence_names_the_run_and_the_step_and_bad_settings_are_refused() {
        let arrays = Arrays::new(2, 3, 5);
        let engine = TokenPpoEngine::new(arrays.world(), 20, 4, TokenPpoParams::default(), 1).unwrap();
        let mut runs = runs();
        runs[1].lr = 1e300;
        let err = sweep(&engine, &runs, u64::MAX, &Monitor::default()).unwrap_err();
        assert_eq!(
            err,
            Error::Diverged("sweep run 1 diverged at step 0: logits overflowed (lr=1e+300, kl_coef=0.05)".into())
        );
        let refused = |batch: usize| TokenPpoEngine::new(arrays.world(), 5, batch, TokenPpoParams::default(), 1);
        assert_eq!(refused(1).unwrap_err().to_string(), "batch_size must be >= 2, got 1");
        assert!(TokenPpoRun::new(vec![0], -1.0, 0.1).unwrap_err().to_string().starts_with("kl_coef must be >= 0"));
    }

    #[test]
    fn progress_counts_every_step_and_cancelling_stops_the_sweep() {
        let arrays = Arrays::new(2, 3, 5);
        let engine = TokenPpoEngine::new(arrays.world(), 7, 4, TokenPpoParams::default(), 0).unwrap();
        let monitor = Monitor::default();
        sweep(&engine, &runs(), u64::MAX, &monitor).unwrap();
        assert_eq!(monitor.steps_done.load(std::sync::atomic::Ordering::Relaxed), 21);
        let cancelled = Monitor::default();
        cancelled.cancel();
        assert_eq!(sweep(&engine, &runs(), u64::MAX, &cancelled), Err(Error::Cancelled));
    }
}
