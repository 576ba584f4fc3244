//! PPO in a world with a safety constraint (Safe RLHF, Dai et al. 2023): a helpfulness
//! reward model `w`, a cost model `w_c` (a reward model of cost, trained on "which is less
//! safe" labels), and a per-token gold cost the trainer never sees.
//!
//! Each step is world PPO's ([`crate::engines::world_ppo`]'s run, [`crate::methods::ppo::bag_rlhf_step`])
//! on the combined per-token reward `(w - lambda w_c) / (1 + lambda)`
//! ([`combined_weights`]): the response's reward is `(R - lambda C) / (1 + lambda) - beta *
//! penalty`, Safe RLHF's advantage `(A_R - lambda A_C) / (1 + lambda)` with its KL penalty kept
//! out of the normalisation (as the `safe-rlhf` trainer does by giving half of it to the
//! reward and half to the cost). After the step the run's [`LagrangeMultiplier`] (fixed, or
//! Safe RLHF's update towards a cost limit) observes the cost: the response's cost-model score
//! `C`, or with [`CostEstimate::Expected`] the cost model's exact expected score under the
//! updated policy, mean over prompts; the next step's reward uses the multiplier it leaves. With `lr_decay` the
//! policy's learning rate falls linearly to 0 over the run (step `t` of `T` at
//! `lr * (1 - t / T)`, the linear schedule of TRL's and safe-rlhf's trainers), so a run ends
//! on a settled policy rather than wherever its last steps' noise left it. What a run records
//! besides world PPO's is exact: the means over prompts of the cost model's expected score
//! `L sum_a pi(a) w_c(a)` and of the gold cost `L sum_a pi(a) c(x, a)`, computed as a second
//! world's proxy and linear gold ([`ExactMeans`] on the cost tables).

use super::driver::{check_summary, Engine, Keep, Monitor, RunsOut, Ticker};
use super::world_ppo::{WorldPpoRun, WorldRun};
use crate::error::{vec_with_capacity, Error, Result};
use crate::kernels::softmax::softmax_row;
use crate::methods::lagrangian::{combined_weights, CostEstimate, LagrangeMultiplier, LagrangeParams};
use crate::methods::world_stats::{ExactMeans, Table, WorldTables};

/// The per-step series of a safety sweep: world PPO's, the sampled response's cost-model
/// score, the exact means of the cost model and the gold cost, and the multiplier after the
/// step's update.
pub const SAFE_WORLD_PPO_HISTORY_FIELDS: [&str; 11] = [
    "objective_scores",
    "objective_costs",
    "objective_rlhf_reward",
    "policy_clipfrac_avg",
    "penalised_kl",
    "proxy_score",
    "gold_score",
    "mean_kl",
    "cost_score",
    "gold_cost",
    "lagrange_multiplier",
];
/// Per-run results: the final policy's exact means over prompts and the final multiplier.
pub const SAFE_WORLD_PPO_SUMMARY_FIELDS: [&str; 6] =
    ["final_proxy_score", "final_gold_score", "final_kl", "final_cost_score", "final_gold_cost", "final_lambda"];

/// One run of a safety sweep: world PPO's run, its multiplier's settings, whether its
/// learning rate decays linearly to 0 and what cost its multiplier observes.
#[derive(Clone, Debug, PartialEq)]
pub struct SafeWorldPpoRun {
    pub ppo: WorldPpoRun,
    pub lagrange: LagrangeParams,
    pub lr_decay: bool,
    pub cost_estimate: CostEstimate,
}

/// PPO runs in one world under a cost: each from the world's reference, keeping every
/// `record_every`-th step.
#[derive(Clone, Debug)]
pub struct SafeWorldPpoEngine<'a> {
    pub world: WorldTables<'a>,
    /// The cost's tables as a world: the cost model as its weights, the gold cost
    /// `[n_prompts, vocab]` as its linear gold.
    pub cost: WorldTables<'a>,
    pub steps: usize,
    pub record_every: usize,
    /// Steps with libm's `bag_rlhf_step` (the reference's floats, bit for bit).
    pub libm: bool,
}

impl<'a> SafeWorldPpoEngine<'a> {
    /// The engine, the cost tables checked against the world's: `cost_weights` one per token,
    /// `gold_cost` of `ref_logits`' shape, both finite.
    pub fn new(
        world: WorldTables<'a>,
        cost_weights: &'a [f64],
        gold_cost: Table<'a>,
        steps: usize,
        record_every: usize,
    ) -> Result<Self> {
        if steps == 0 {
            return Err(Error::invalid("steps must be >= 1, got 0"));
        }
        let reference = Table { values: world.ref_logits, rows: world.n_prompts, cols: world.vocab_size };
        let cost = WorldTables::new(reference, cost_weights, gold_cost, false, world.response_len as i64)
            .map_err(|e| rename(e, &[("weights", "cost_weights"), ("gold_token", "gold_cost")]))?;
        Ok(SafeWorldPpoEngine { world, cost, steps, record_every, libm: false })
    }
}

/// The cost model's expected score under `theta`, mean over prompts, with libm's softmax and
/// sums left to right (the reference's floats, which [`ExactMeans`]' vectorised rows are not):
/// what a libm run's multiplier observes with [`CostEstimate::Expected`].
fn expected_cost_libm(cost: &WorldTables<'_>, theta: &[f64], p: &mut [f64]) -> f64 {
    let length = cost.response_len as f64;
    let mut total = 0.0;
    for row in theta.chunks_exact(cost.vocab_size) {
        softmax_row(row, p);
        let mut score = 0.0;
        for (&pa, &wa) in p.iter().zip(cost.weights) {
            score += pa * wa;
        }
        total += length * score;
    }
    total / cost.n_prompts as f64
}

/// `error` with the world's argument names replaced by the cost's.
fn rename(error: Error, names: &[(&str, &str)]) -> Error {
    match error {
        Error::InvalidArgument(mut message) => {
            for (from, to) in names {
                if message.starts_with(from) {
                    message = format!("{to}{}", &message[from.len()..]);
                }
            }
            Error::InvalidArgument(message)
        }
        other => other,
    }
}

impl Engine for SafeWorldPpoEngine<'_> {
    type Run = SafeWorldPpoRun;

    fn history_fields(&self) -> &'static [&'static str] {
        &SAFE_WORLD_PPO_HISTORY_FIELDS
    }

    fn summary_fields(&self) -> &'static [&'static str] {
        &SAFE_WORLD_PPO_SUMMARY_FIELDS
    }

    fn kept_steps(&self, _: &[SafeWorldPpoRun]) -> usize {
        self.steps.checked_div(self.record_every).unwrap_or(0)
    }

    fn params_shape(&self) -> Vec<usize> {
        vec![self.world.n_prompts, self.world.vocab_size]
    }

    fn run(&self, runs: &[SafeWorldPpoRun], out: RunsOut<'_>, monitor: &Monitor) -> Result<()> {
        let spec = &runs[0];
        let (ppo, v) = (&spec.ppo, self.world.vocab_size);
        let kept = out.history.len() / SAFE_WORLD_PPO_HISTORY_FIELDS.len();
        out.params.copy_from_slice(self.world.ref_logits);
        let mut run = WorldRun::new(&self.world, out.params, &ppo.params, ppo.beta, &ppo.seed_key, self.libm)?;
        let mut multiplier = LagrangeMultiplier::new(&spec.lagrange)?;
        let mut cost_means = ExactMeans::new(&self.cost)?;
        let mut combined: Vec<f64> = vec_with_capacity(v, "the combined reward")?;
        combined.resize(v, 0.0);
        let row_len = if self.libm { v } else { 0 };
        let mut row: Vec<f64> = vec_with_capacity(row_len, "a row of the vocabulary")?;
        row.resize(row_len, 0.0);
        let mut lambda = multiplier.value();
        combined_weights(self.world.weights, self.cost.weights, lambda, &mut combined);
        let run_name = format!("sweep run {}", out.first_run);
        let mut ticker = Ticker::new(monitor);
        let work_per_step = run.step_work();
        let mut keep = Keep::new(self.record_every);
        for t in 0..self.steps {
            if multiplier.value() != lambda {
                lambda = multiplier.value();
                combined_weights(self.world.weights, self.cost.weights, lambda, &mut combined);
            }
            if spec.lr_decay {
                run.set_lr(ppo.params.lr * (1.0 - t as f64 / self.steps as f64));
            }
            let (x, step) = run.step_with(t, &run_name, &combined)?;
            cost_means.changed(x as usize);
            let (mut helpful, mut cost) = (0.0, 0.0);
            for &a in run.tokens() {
                helpful += self.world.weights[a];
                cost += self.cost.weights[a];
            }
            let mut work = work_per_step + v as u64;
            match spec.cost_estimate {
                CostEstimate::Sampled => multiplier.observe(cost),
                CostEstimate::Expected if self.libm => {
                    multiplier.observe(expected_cost_libm(&self.cost, run.theta(), &mut row));
                    work += (self.world.n_prompts * v) as u64;
                }
                CostEstimate::Expected => {
                    multiplier.observe(cost_means.means(&self.cost, run.theta()).proxy_score);
                    work += 2 * v as u64;
                }
            }
            if let Some(slot) = keep.slot() {
                let means = run.recorded_means(t, &run_name)?;
                let costs = cost_means.means(&self.cost, run.theta());
                let values = [
                    helpful,
                    cost,
                    step.reward,
                    step.clip_frac,
                    step.kl_penalty,
                    means.proxy_score,
                    means.gold_score,
                    means.kl,
                    costs.proxy_score,
                    costs.gold_score,
                    multiplier.value(),
                ];
                for (f, value) in values.into_iter().enumerate() {
                    out.history[f * kept + slot] = value;
                }
                work += 2 * v as u64;
            }
            ticker.advance(1, work)?;
        }
        ticker.flush()?;
        let last = run.exact_means();
        let costs = cost_means.means(&self.cost, run.theta());
        out.summary.copy_from_slice(&[
            last.proxy_score,
            last.gold_score,
            last.kl,
            costs.proxy_score,
            costs.gold_score,
            multiplier.value(),
        ]);
        check_summary(&run_name, &SAFE_WORLD_PPO_SUMMARY_FIELDS, out.summary, ppo.params.lr, ppo.beta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::driver::{sweep, Monitor};
    use crate::engines::test_worlds::Tables;
    use crate::engines::world_ppo::WorldPpoRun;
    use crate::methods::ppo::PpoParams;
    use crate::rng::seed_key;

    const LIMIT: f64 = 3.0;
    const LR: f64 = 0.05;
    const LAMBDA_MAX: f64 = 10.0;

    #[test]
    fn an_expected_cost_multiplier_moves_by_the_cost_models_exact_expectation() {
        // Window 1, no proportional term: after step t, ln lambda moves by
        // lr * lambda * (E_t - limit), clamped at ln lambda_max, E_t the cost model's expected
        // score the step leaves, which the history records as `cost_score`.
        let tables = Tables::random(3, 16, 7);
        let cost_weights: Vec<f64> = tables.weights.iter().map(|w| w.abs()).collect();
        let (rows, cols) = tables.shape;
        let gold_cost = Table { values: &tables.gold, rows, cols };
        let params = PpoParams::new(0.2, 0.05, 2).and_then(|p| p.completed("k1", 0.0, 0.2)).unwrap();
        let lagrange = LagrangeParams::new(1.0, Some(LIMIT), LR, LAMBDA_MAX, 1, 0.0).unwrap();
        let run = SafeWorldPpoRun {
            ppo: WorldPpoRun::new(seed_key(3), params, 0.1).unwrap(),
            lagrange,
            lr_decay: false,
            cost_estimate: CostEstimate::Expected,
        };
        for libm in [false, true] {
            let engine = SafeWorldPpoEngine {
                libm,
                ..SafeWorldPpoEngine::new(tables.world(false, 4).unwrap(), &cost_weights, gold_cost, 40, 1).unwrap()
            };
            let out = sweep(&engine, std::slice::from_ref(&run), u64::MAX, &Monitor::default()).unwrap();
            let field = |name: &str| {
                let f = SAFE_WORLD_PPO_HISTORY_FIELDS.iter().position(|&n| n == name).unwrap();
                &out.history[f * out.n_kept..(f + 1) * out.n_kept]
            };
            let (expected_cost, recorded) = (field("cost_score"), field("lagrange_multiplier"));
            let mut log_lambda = 0.0f64;
            for (t, (&cost, &lambda)) in expected_cost.iter().zip(recorded).enumerate() {
                log_lambda = (log_lambda + LR * log_lambda.exp() * (cost - LIMIT)).min(LAMBDA_MAX.ln());
                assert!((lambda - log_lambda.exp()).abs() <= 1e-12 * lambda, "step {t}, libm {libm}");
            }
            let moved = |lambda: f64| (lambda - 1.0).abs() > 1e-3 && (lambda - LAMBDA_MAX).abs() > 1e-3;
            assert!(recorded.iter().filter(|&&lambda| moved(lambda)).count() > 10, "the multiplier moved freely");
        }
    }

    #[test]
    fn a_cost_estimate_is_one_of_its_names() {
        assert_eq!(CostEstimate::parse("sampled").unwrap(), CostEstimate::Sampled);
        assert_eq!(CostEstimate::parse("expected").unwrap(), CostEstimate::Expected);
        let message = CostEstimate::parse("mean").unwrap_err().to_string();
        assert!(message.starts_with("cost_estimate must be one of ('sampled', 'expected')"), "{message}");
    }
}
