//! GRPO on token sequences with a per-sequence reward: the sweep engine
//! [`VerifierGrpoEngine`] over runs of `(seed, beta, lr)` in one sequence world
//! ([`TokenWorld`]). The reward of a completion is the world's score of it
//! ([`TokenWorld::rm_score`]: the linear reward model plus the product of its outcome factors),
//! so the same engine runs RL from verifiable rewards (0/1 factors: a verifier) and GRPO
//! against a proxy reward model.
//!
//! A run starts at the world's reference policy and owns its CPython-compatible stream. Each
//! step, `prompts_per_step` times: `p = rng.choice(prompts)`, then `num_generations`
//! completions of `p`, token by token `a_t = sample_index(softmax(theta[p, t]), rng.random())`
//! until EOS (token 0) or `max_len`, as the token PPO engine samples. Then the group-relative
//! advantages and `num_iterations` plain SGD steps (learning rate `lr`) on TRL's per-token loss
//! ([`crate::methods::verifier_grpo`]) over the whole batch. The twin is
//! `python/rlhf_fast/reference/engines/verifier_grpo.py`; a run is on one thread.

use super::driver::{check_summary, Engine, Monitor, RunsOut};
use super::sequence_common::{sweep_batch_run, BatchRun};
use crate::error::{non_negative, overflowed, positive, record_overflowed, vec_with_capacity, Error, Result};
use crate::kernels::sampling::sample_index;
use crate::methods::grpo::ScaleRewards;
use crate::methods::token_ppo::{TokenWorld, EOS};
use crate::methods::verifier_grpo::{group_advantages, grpo_token_term, ExactRows};
use crate::rng::Mt19937;

/// The per-step series: the mean of the groups' mean reward and std (TRL's `reward`,
/// `reward_std`), the share of groups whose rewards are all equal (`frac_reward_zero_std`: no
/// signal), the batch's sampled sequence KL `sum_t log(pi_old / pi_ref)`, the clipped share of
/// token terms, the loss of the first iteration and the mean content length.
/// The batch's statistics (TRL's names), then the exact expectations of the step's policy (the
/// token PPO engine's, computed only for the steps kept: they cost a pass over the policy).
pub const VERIFIER_GRPO_HISTORY_FIELDS: [&str; 11] = [
    "reward",
    "reward_std",
    "frac_reward_zero_std",
    "kl",
    "clip_ratio",
    "loss",
    "mean_length",
    "expected_proxy_score",
    "expected_gold_score",
    "expected_kl",
    "expected_length",
];
/// How many of the history's fields a step's batch gives.
const BATCH_FIELDS: usize = 7;
/// Per-run results: the final policy's exact statistics (the token PPO engine's), means over
/// prompts; `final_proxy_score` includes the expected outcome (a verifier's: the success rate).
pub const VERIFIER_GRPO_SUMMARY_FIELDS: [&str; 4] =
    ["final_proxy_score", "final_gold_score", "final_kl", "final_length"];
/// Most completions a step may sample.
pub const MAX_GRPO_BATCH: usize = 1 << 20;

/// What every run shares besides `beta` and `lr` (TRL's names).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VerifierGrpoParams {
    pub num_generations: usize,
    pub prompts_per_step: usize,
    pub epsilon: f64,
    pub epsilon_high: f64,
    pub scale_rewards: ScaleRewards,
    pub num_iterations: usize,
}

impl VerifierGrpoParams {
    /// `num_generations >= 2`, `prompts_per_step >= 1`, their product at most 2^20,
    /// `epsilon`, `epsilon_high > 0`, `1 <= num_iterations <= 1024`; each error naming its setting.
    pub fn checked(self) -> Result<Self> {
        if self.num_generations < 2 {
            return Err(Error::invalid(format!("num_generations must be >= 2, got {}", self.num_generations)));
        }
        if self.prompts_per_step == 0 {
            return Err(Error::invalid("prompts_per_step must be >= 1, got 0"));
        }
        match self.num_generations.checked_mul(self.prompts_per_step) {
            Some(batch) if batch <= MAX_GRPO_BATCH => {}
            _ => {
                return Err(Error::invalid(format!(
                    "num_generations * prompts_per_step must be <= {MAX_GRPO_BATCH}, got {} * {}",
                    self.num_generations, self.prompts_per_step
                )))
            }
        }
        if !(1..=1024).contains(&self.num_iterations) {
            return Err(Error::invalid(format!("num_iterations must be in [1, 1024], got {}", self.num_iterations)));
        }
        positive("epsilon", self.epsilon)?;
        positive("epsilon_high", self.epsilon_high)?;
        Ok(self)
    }

    fn batch(&self) -> usize {
        self.num_generations * self.prompts_per_step
    }
}

/// One run of a sweep: its stream (the seed's `init_by_array` key), `beta` and `lr`.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifierGrpoRun {
    pub seed_key: Vec<u32>,
    pub beta: f64,
    pub lr: f64,
}

impl VerifierGrpoRun {
    /// A run, `beta >= 0` and `lr > 0` checked.
    pub fn new(seed_key: Vec<u32>, beta: f64, lr: f64) -> Result<Self> {
        Ok(VerifierGrpoRun { seed_key, beta: non_negative("beta", beta)?, lr: positive("lr", lr)? })
    }
}

fn zeros(len: usize, what: &str) -> Result<Vec<f64>> {
    let mut v = vec_with_capacity(len, what)?;
    v.resize(len, 0.0);
    Ok(v)
}

/// One run's state on its stream.
struct GrpoRun<'a> {
    world: &'a TokenWorld<'a>,
    theta: &'a mut [f64],
    params: &'a VerifierGrpoParams,
    beta: f64,
    lr: f64,
    rng: Mt19937,
    rows: ExactRows,
    grad_theta: Vec<f64>,
    prompts: Vec<usize>,
    lengths: Vec<usize>,
    tokens: Vec<usize>,
    old_logp: Vec<f64>,
    ref_logp: Vec<f64>,
    rewards: Vec<f64>,
    advantages: Vec<f64>,
    touched: Vec<usize>,
    marked: Vec<bool>,
}

impl<'a> GrpoRun<'a> {
    fn new(
        world: &'a TokenWorld<'a>,
        theta: &'a mut [f64],
        spec: &VerifierGrpoRun,
        params: &'a VerifierGrpoParams,
    ) -> Result<Self> {
        let (n_states, batch) = (world.n_prompts * world.max_len, params.batch());
        let cells = batch * world.max_len; // fits: the engine checked it
        let what = "a GRPO run's batch";
        Ok(GrpoRun {
            world,
            theta,
            params,
            beta: spec.beta,
            lr: spec.lr,
            rng: Mt19937::from_key(&spec.seed_key),
            rows: ExactRows::new(n_states, world.vocab_size)?,
            grad_theta: zeros(n_states * world.vocab_size, "the policy's gradient")?,
            prompts: vec![0; batch],
            lengths: vec![0; batch],
            tokens: vec![0; cells],
            old_logp: zeros(cells, what)?,
            ref_logp: zeros(cells, what)?,
            rewards: zeros(batch, what)?,
            advantages: zeros(batch, what)?,
            touched: vec_with_capacity(n_states, what)?,
            marked: vec![false; n_states],
        })
    }

    fn diverged(&self, name: &str, t: usize, key: &str) -> Error {
        record_overflowed(&format!("{name} diverged at step {t}"), key, self.lr, self.beta)
    }

    /// Completion `b` of prompt `p` with the current policy, and its reward.
    fn rollout(&mut self, b: usize, p: usize) {
        let (l, v, world) = (self.world.max_len, self.world.vocab_size, self.world);
        self.prompts[b] = p;
        let mut length = l;
        for t in 0..l {
            let s = p * l + t;
            let (probs, logp) = self.rows.row(self.theta, s);
            let a = sample_index(probs, self.rng.random());
            let i = b * l + t;
            self.tokens[i] = a;
            self.old_logp[i] = logp[a];
            self.ref_logp[i] = world.ref_logp[s * v + a];
            if a == EOS {
                length = t + 1;
                break;
            }
        }
        self.lengths[b] = length;
        self.rewards[b] = world.rm_score(p, &self.tokens[b * l..b * l + length]);
    }
}

impl BatchRun<BATCH_FIELDS> for GrpoRun<'_> {
    /// Step `t`; its batch's record in [`VERIFIER_GRPO_HISTORY_FIELDS`]' order.
    fn step(&mut self, t: usize, name: &str) -> Result<[f64; BATCH_FIELDS]> {
        let (l, v, params) = (self.world.max_len, self.world.vocab_size, self.params);
        let g = params.num_generations;
        let (mut reward_sum, mut std_sum, mut zero_std, mut kl_sum, mut length_sum) = (0.0, 0.0, 0usize, 0.0, 0usize);
        for group in 0..params.prompts_per_step {
            let p = self.rng.randbelow(self.world.n_prompts as u32) as usize;
            for b in group * g..(group + 1) * g {
                self.rollout(b, p);
            }
            let range = group * g..(group + 1) * g;
            let (mean, std) = group_advantages(
                &self.rewards[range.clone()],
                params.scale_rewards == ScaleRewards::Group,
                &mut self.advantages[range],
            );
            reward_sum += mean;
            std_sum += std;
            zero_std += usize::from(std == 0.0);
        }
        let batch = params.batch();
        let mut n_tokens = 0usize;
        for b in 0..batch {
            let n = self.lengths[b];
            let mut response_kl = 0.0;
            for i in b * l..b * l + n {
                response_kl += self.old_logp[i] - self.ref_logp[i];
            }
            kl_sum += response_kl;
            n_tokens += n;
            length_sum += n - usize::from(self.tokens[b * l + n - 1] == EOS);
        }
        let n_terms = n_tokens as f64;
        let (mut loss, mut clipped) = (0.0, 0usize);
        for iteration in 0..params.num_iterations {
            let mut loss_sum = 0.0;
            for b in 0..batch {
                let p = self.prompts[b];
                for (t, i) in (b * l..b * l + self.lengths[b]).enumerate() {
                    let (s, a) = (p * l + t, self.tokens[i]);
                    let (probs, logp) = self.rows.row(self.theta, s);
                    let (term, slope, flat) = grpo_token_term(
                        self.advantages[b],
                        logp[a],
                        self.old_logp[i],
                        self.ref_logp[i],
                        params.epsilon,
                        params.epsilon_high,
                        self.beta,
                    );
                    loss_sum += term;
                    clipped += usize::from(flat);
                    let coef = slope / n_terms;
                    for (u, (grad, &pu)) in self.grad_theta[s * v..(s + 1) * v].iter_mut().zip(probs).enumerate() {
                        let chosen = if u == a { 1.0 } else { 0.0 };
                        *grad += coef * (chosen - pu);
                    }
                    if !self.marked[s] {
                        self.marked[s] = true;
                        self.touched.push(s);
                    }
                }
            }
            if iteration == 0 {
                loss = loss_sum / n_terms;
            }
            for &s in &self.touched {
                let (row, grad) = (&mut self.theta[s * v..(s + 1) * v], &mut self.grad_theta[s * v..(s + 1) * v]);
                for (x, gr) in row.iter_mut().zip(grad.iter_mut()) {
                    *x -= self.lr * *gr;
                    *gr = 0.0;
                }
                self.rows.changed(s);
                self.marked[s] = false;
            }
            self.touched.clear();
        }
        if overflowed(self.theta) {
            return Err(self.diverged(name, t, "logits"));
        }
        let (groups, b) = (params.prompts_per_step as f64, batch as f64);
        let record = [
            reward_sum / groups,
            std_sum / groups,
            zero_std as f64 / groups,
            kl_sum / b,
            clipped as f64 / (n_terms * params.num_iterations as f64),
            loss,
            length_sum as f64 / b,
        ];
        if let Some(f) = record.iter().position(|x| !x.is_finite()) {
            return Err(self.diverged(name, t, VERIFIER_GRPO_HISTORY_FIELDS[f]));
        }
        Ok(record)
    }

    /// Each completion's rows, sampled once and walked by every iteration.
    fn work_per_step(&self) -> u64 {
        (self.params.batch() * self.world.max_len * self.world.vocab_size) as u64
            * (1 + self.params.num_iterations as u64)
    }

    fn theta(&self) -> &[f64] {
        self.theta
    }
}

/// GRPO runs in one sequence world, each from the world's reference policy, keeping every
/// `record_every`-th step's record.
#[derive(Clone, Debug)]
pub struct VerifierGrpoEngine<'a> {
    pub world: TokenWorld<'a>,
    pub steps: usize,
    pub params: VerifierGrpoParams,
    /// Keep steps `k-1, 2k-1, ...`; 0 keeps none (summaries only).
    pub record_every: usize,
}

impl<'a> VerifierGrpoEngine<'a> {
    /// Checks `steps >= 1`, the settings, and that a run's arrays fit in memory.
    pub fn new(world: TokenWorld<'a>, steps: usize, params: VerifierGrpoParams, record_every: usize) -> Result<Self> {
        if steps == 0 {
            return Err(Error::invalid("steps must be >= 1, got 0"));
        }
        let params = params.checked()?;
        let table = world.ref_logp.len() as u64;
        let cells = (params.batch() * world.max_len) as u64;
        crate::error::fits_in_memory("ref_logits", 4 * table + 3 * cells, 8, crate::error::default_max_memory())?;
        Ok(VerifierGrpoEngine { world, steps, params, record_every })
    }
}

impl Engine for VerifierGrpoEngine<'_> {
    type Run = VerifierGrpoRun;

    fn history_fields(&self) -> &'static [&'static str] {
        &VERIFIER_GRPO_HISTORY_FIELDS
    }

    fn summary_fields(&self) -> &'static [&'static str] {
        &VERIFIER_GRPO_SUMMARY_FIELDS
    }

    fn kept_steps(&self, _: &[VerifierGrpoRun]) -> usize {
        self.steps.checked_div(self.record_every).unwrap_or(0)
    }

    fn params_shape(&self) -> Vec<usize> {
        vec![self.world.n_prompts, self.world.max_len, self.world.vocab_size]
    }

    fn run(&self, runs: &[VerifierGrpoRun], out: RunsOut<'_>, monitor: &Monitor) -> Result<()> {
        let spec = &runs[0];
        out.params.copy_from_slice(self.world.ref_logits);
        let mut run = GrpoRun::new(&self.world, out.params, spec, &self.params)?;
        let run_name = format!("sweep run {}", out.first_run);
        let summary =
            sweep_batch_run(&self.world, &mut run, self.steps, self.record_every, &run_name, out.history, monitor)?;
        check_summary(&run_name, &VERIFIER_GRPO_SUMMARY_FIELDS, &summary, spec.lr, spec.beta)?;
        out.summary.copy_from_slice(&summary);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::driver::sweep;
    use crate::rng::seed_key;

    /// Two prompts, three steps, EOS never drawn (logit -1e4), token 1 right everywhere.
    fn arrays() -> (Vec<f64>, Vec<f64>) {
        let (p, l, v) = (2, 3, 4);
        let mut ref_logits = vec![0.0; p * l * v];
        let mut factors = vec![0.0; p * l * v];
        for s in 0..p * l {
            ref_logits[s * v] = -1e4;
            factors[s * v + 1] = 1.0;
        }
        (ref_logits, factors)
    }

    fn params() -> VerifierGrpoParams {
        VerifierGrpoParams {
            num_generations: 8,
            prompts_per_step: 2,
            epsilon: 0.2,
            epsilon_high: 0.2,
            scale_rewards: ScaleRewards::Group,
            num_iterations: 2,
        }
    }

    #[test]
    fn grpo_learns_the_verifier_the_same_whatever_the_threads() {
        let (ref_logits, factors) = arrays();
        let (zeros_v, zeros_p) = ([0.0; 4], [0.0; 2]);
        let world = TokenWorld::new(&ref_logits, [2, 3, 4], &zeros_v, &zeros_p, 0.0, &zeros_v, &zeros_p, false)
            .unwrap()
            .with_process_rewards(None, Some(&factors))
            .unwrap();
        let start = world.stats(&ref_logits).proxy_score;
        assert!((start - (1.0f64 / 3.0).powi(3)).abs() < 1e-12, "{start}");
        let engine = VerifierGrpoEngine::new(world, 60, params(), 10).unwrap();
        let runs: Vec<VerifierGrpoRun> = (0..3).map(|i| VerifierGrpoRun::new(seed_key(i), 0.0, 1.0).unwrap()).collect();
        let out = sweep(&engine, &runs, u64::MAX, &Monitor::default()).unwrap();
        for run in 0..3 {
            assert!(out.summary[run * 4] > 0.5, "run {run}: success {}", out.summary[run * 4]);
            assert_eq!(out.summary[run * 4 + 3], 3.0);
        }
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        assert_eq!(pool.install(|| sweep(&engine, &runs, u64::MAX, &Monitor::default())).unwrap(), out);
    }

    #[test]
    fn bad_settings_are_refused_naming_them() {
        let bad = |p: VerifierGrpoParams| p.checked().unwrap_err().to_string();
        assert_eq!(bad(VerifierGrpoParams { num_generations: 1, ..params() }), "num_generations must be >= 2, got 1");
        assert_eq!(bad(VerifierGrpoParams { prompts_per_step: 0, ..params() }), "prompts_per_step must be >= 1, got 0");
        assert!(VerifierGrpoRun::new(vec![0], 0.0, 0.0).unwrap_err().to_string().starts_with("lr must be > 0"));
    }
}
