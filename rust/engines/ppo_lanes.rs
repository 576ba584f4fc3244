//! The PPO sweep engine: runs in groups of [`LANES`], in lock-step.
//!
//! Every quantity of a step is a vector with one entry per run, so each operation of the
//! lesson's step becomes one vector instruction over the group (8 runs fill an AVX-512
//! register of f64, two AVX2 ones). Each run keeps its own CPython-compatible stream, its own
//! hyper-parameters and controller, and no operation mixes lanes, so a run's numbers do not
//! depend on which group, lane, thread or CPU it ran on.
//!
//! The arithmetic is the reference's, in its order, with two substitutions that stay within
//! an ulp or two: `exp` and `ln` from [`crate::kernels::fastmath`] (vectorisable), and
//! `ln p_i` taken as `(z_i - max z) - ln(sum)` (one logarithm per step instead of one per
//! token). Runs stay within 1e-9 of the reference as long as they are well conditioned; a run
//! whose KL coefficient explodes (the doubling rule below the KL the policy settles at)
//! amplifies those ulps, and `EXACT` then gives libm's functions and bit-identical floats.
//! The frozen reference's `ln q` is computed once; an epoch after a clipped one is skipped
//! when every lane of the group is clipped, since a clipped epoch leaves the logits as they
//! are.

// Index loops over lanes are the shape LLVM turns into vector instructions.
#![allow(clippy::needless_range_loop)]

use super::driver::{check_summary, Engine, Monitor, RunsOut, Ticker};
use super::ppo::{PpoEngine, PpoRun, PPO_HISTORY_FIELDS, PPO_SUMMARY_FIELDS, VOCAB_SIZE};
use crate::error::{record_overflowed, Error, Result, OVERFLOW};
use crate::kernels::fastmath::{exp_nonpositive_rows, ln_positive};
use crate::kernels::kl::{KlPenalty, K3_LOG_RATIO_LIMIT};
use crate::kernels::policy::{expected_score, policy_kl};
#[cfg(target_arch = "x86_64")]
use crate::kernels::simd::{Avx2, Avx2Isa, Avx512, Avx512Isa};
use crate::kernels::simd::{Portable, Simd, Vector, LANES};
use crate::kernels::softmax::log_softmax_row;
use crate::methods::kl_control::KlController;
use crate::methods::ppo::StepOutcome;
use crate::rng::Mt19937;

type Rows<V> = [V; VOCAB_SIZE];
type Masks<V> = [<V as Vector>::Mask; VOCAB_SIZE];

/// Each lane's hyper-parameters, as vectors (a padding lane copies the group's first run).
struct LaneParams<V: Vector> {
    eps: V,
    lr: V,
    epochs: V,
    max_epochs: u32,
    uses_k1: V::Mask,
    uses_k2: V::Mask,
    uses_k3: V::Mask,
    any_k3: bool,
    vf_coef: V,
    cliprange_value: V,
    with_value: V::Mask,
    any_value: bool,
}

impl<V: Vector> LaneParams<V> {
    #[inline(always)]
    fn new<'r>(isa: V::Isa, lane_run: impl Fn(usize) -> &'r PpoRun) -> Self {
        let lanes = |f: &dyn Fn(&PpoRun) -> f64| V::from_array(isa, std::array::from_fn(|l| f(lane_run(l))));
        let uses = |kind: KlPenalty| lanes(&|run| f64::from(u8::from(run.params.kl_penalty == kind))).gt(V::zero(isa));
        let vf_coef = lanes(&|run| run.params.vf_coef);
        let with_value = vf_coef.gt(V::zero(isa));
        LaneParams {
            eps: lanes(&|run| run.params.eps),
            lr: lanes(&|run| run.params.lr),
            epochs: lanes(&|run| f64::from(run.params.ppo_epochs)),
            max_epochs: (0..LANES).map(|l| lane_run(l).params.ppo_epochs).max().unwrap_or(1),
            uses_k1: uses(KlPenalty::K1),
            uses_k2: uses(KlPenalty::K2),
            uses_k3: uses(KlPenalty::K3),
            any_k3: (0..LANES).any(|l| lane_run(l).params.kl_penalty == KlPenalty::K3),
            vf_coef,
            cliprange_value: lanes(&|run| run.params.cliprange_value),
            with_value,
            any_value: V::any(with_value),
        }
    }
}

/// One step's draws, in the reference's order: `rng.choice(PROMPTS)`, then `rng.random()`,
/// and the coefficient each lane's controller holds. Indices travel as f64 so that
/// comparisons and selects stay in vector registers.
struct Draws<V> {
    prompt: V,
    u: V,
    beta: V,
    prompt_of: [f64; LANES],
    beta_of: [f64; LANES],
}

/// What a step knows once it has sampled, before the PPO epochs.
struct Sampled<V: Vector> {
    /// The sampled token and, per vocabulary entry, whether it is that token.
    token: V,
    onehot: Masks<V>,
    score: V,
    p_old_a: V,
    /// Exact `KL(p_old || q)`, the monitor.
    kl: V,
    /// What entered the reward.
    penalty: V,
    reward: V,
}

/// Running sums for the run summaries.
struct Sums<V> {
    kl: V,
    score: V,
    reward: V,
    clip: V,
}

/// A group of up to [`LANES`] runs advancing in lock-step.
struct Lanes<'a, V: Vector, const EXACT: bool> {
    isa: V::Isa,
    engine: &'a PpoEngine<'a>,
    params: LaneParams<V>,
    n_real: usize,
    theta: Vec<Rows<V>>,
    values: Vec<V>,
    /// The frozen reference's log-probabilities, row by row (exactly as the reference).
    ln_ref: Vec<[f64; VOCAB_SIZE]>,
    rngs: Vec<Mt19937>,
    controllers: Vec<KlController>,
    sums: Sums<V>,
}

impl<'a, V: Vector, const EXACT: bool> Lanes<'a, V, EXACT> {
    #[inline(always)]
    fn new(isa: V::Isa, engine: &'a PpoEngine<'a>, runs: &'a [PpoRun]) -> Self {
        let n_real = runs.len();
        let lane_run = move |l: usize| &runs[if l < n_real { l } else { 0 }];
        let n_prompts = engine.n_prompts();
        let theta =
            (0..n_prompts).map(|x| std::array::from_fn(|v| V::splat(isa, engine.theta0[x * VOCAB_SIZE + v]))).collect();
        let mut ln_row = [0.0; VOCAB_SIZE];
        let ln_ref = engine
            .reference
            .chunks_exact(VOCAB_SIZE)
            .map(|row| {
                log_softmax_row(row, &mut ln_row);
                ln_row
            })
            .collect();
        Lanes {
            isa,
            engine,
            params: LaneParams::new(isa, lane_run),
            n_real,
            theta,
            values: vec![V::zero(isa); n_prompts],
            ln_ref,
            rngs: (0..LANES).map(|l| Mt19937::from_key(&lane_run(l).seed_key)).collect(),
            controllers: (0..LANES).map(|l| lane_run(l).controller).collect(),
            sums: Sums { kl: V::zero(isa), score: V::zero(isa), reward: V::zero(isa), clip: V::zero(isa) },
        }
    }

    #[inline(always)]
    fn splat(&self, value: f64) -> V {
        V::splat(self.isa, value)
    }

    #[inline(always)]
    fn draw(&mut self) -> Draws<V> {
        let n_prompts = self.theta.len() as u32;
        let (mut prompt_of, mut u_of, mut beta_of) = ([0.0; LANES], [0.0; LANES], [0.0; LANES]);
        for l in 0..LANES {
            prompt_of[l] = f64::from(self.rngs[l].randbelow(n_prompts));
            u_of[l] = self.rngs[l].random();
            beta_of[l] = self.controllers[l].value();
        }
        Draws {
            prompt: V::from_array(self.isa, prompt_of),
            u: V::from_array(self.isa, u_of),
            beta: V::from_array(self.isa, beta_of),
            prompt_of,
            beta_of,
        }
    }

    /// Each lane's logits and reference log-probabilities for its prompt, picked by blends
    /// rather than gathers.
    #[inline(always)]
    fn gather(&self, prompt: V) -> (Rows<V>, Rows<V>, V) {
        let mut z = self.theta[0];
        let mut ln_q: Rows<V> = std::array::from_fn(|v| self.splat(self.ln_ref[0][v]));
        let mut v_old = self.values[0];
        for x in 1..self.theta.len() {
            let here = prompt.eq(self.splat(x as f64));
            for v in 0..VOCAB_SIZE {
                z[v] = V::select(here, self.theta[x][v], z[v]);
                ln_q[v] = V::select(here, self.splat(self.ln_ref[x][v]), ln_q[v]);
            }
            v_old = V::select(here, self.values[x], v_old);
        }
        (z, ln_q, v_old)
    }

    /// Lane-wise softmax of `z` into `p`; leaves the shifted logits `z - max z` in `shifted`
    /// and returns each lane's normaliser. `EXACT` takes libm's `exp`, as the reference does.
    #[inline(always)]
    fn softmax(z: &Rows<V>, p: &mut Rows<V>, shifted: &mut Rows<V>) -> V {
        let mut max = z[0];
        for &row in &z[1..] {
            max = max.max(row);
        }
        for v in 0..VOCAB_SIZE {
            shifted[v] = z[v] - max;
        }
        *p = if EXACT { shifted.map(|row| row.map(f64::exp)) } else { exp_nonpositive_rows(shifted) };
        let mut total = z[0].like(0.0);
        for &row in p.iter() {
            total = total + row;
        }
        if EXACT {
            for row in p.iter_mut() {
                *row = *row / total;
            }
        } else {
            // One division per lane instead of one per token; within an ulp of e / total.
            let inverse = total.like(1.0) / total;
            for row in p.iter_mut() {
                *row = *row * inverse;
            }
        }
        total
    }

    /// Samples each lane's token from `p` (the policy before the step) and computes its
    /// score, the exact KL and the penalty that enters the reward.
    #[inline(always)]
    fn sample(&self, draws: &Draws<V>, p: &Rows<V>, shifted: &Rows<V>, total: V, ln_q: &Rows<V>) -> Sampled<V> {
        let zero = self.splat(0.0);
        // Inverse-CDF sampling: the running sum is non-decreasing, so the first index whose
        // running sum exceeds u is the number of indices whose running sum does not (or the
        // last index, if rounding left none).
        let mut running = zero;
        let mut token = zero;
        for &row in p {
            running = running + row;
            token = token + V::unit(self.isa, running.le(draws.u));
        }
        token = token.min(self.splat((VOCAB_SIZE - 1) as f64));
        let mut onehot = [zero.lt(zero); VOCAB_SIZE];
        let (mut score, mut p_old_a) = (zero, zero);
        for v in 0..VOCAB_SIZE {
            onehot[v] = token.eq(self.splat(v as f64));
            score = V::select(onehot[v], self.splat(self.engine.weights[v]), score);
            p_old_a = V::select(onehot[v], p[v], p_old_a);
        }

        // KL(p_old || q) = sum p (ln p - ln q), with 0 ln 0 = 0.
        let ln_total = if EXACT { zero } else { total.map(ln_positive) };
        let ln_p = |v: usize| if EXACT { p[v].map(f64::ln) } else { shifted[v] - ln_total };
        let mut kl = zero;
        for v in 0..VOCAB_SIZE {
            kl = kl + V::select(p[v].gt(zero), p[v] * (ln_p(v) - ln_q[v]), zero);
        }
        let (mut logp_a, mut logq_a) = (zero, zero);
        for v in 0..VOCAB_SIZE {
            logp_a = V::select(onehot[v], ln_p(v), logp_a);
            logq_a = V::select(onehot[v], ln_q[v], logq_a);
        }
        let log_ratio = logq_a - logp_a;
        let params = &self.params;
        let mut penalty = V::select(params.uses_k1, logp_a - logq_a, kl);
        penalty = V::select(params.uses_k2, self.splat(0.5) * log_ratio * log_ratio, penalty);
        if params.any_k3 {
            let k3 = log_ratio.map(|d| if d > K3_LOG_RATIO_LIMIT { f64::INFINITY } else { d.exp_m1() - d });
            penalty = V::select(params.uses_k3, k3, penalty);
        }
        // The KL enters the reward only.
        let reward = score - draws.beta * penalty;
        Sampled { token, onehot, score, p_old_a, kl, penalty, reward }
    }

    /// The PPO epochs on the sampled token: the clipped surrogate's ascent on `z` and, with a
    /// baseline, TRL's clipped value loss on the value. Returns the updated value and the
    /// number of clipped epochs per lane. `p` holds the policy before the step on entry.
    #[inline(always)]
    fn ppo_epochs(
        &self,
        step: &Sampled<V>,
        v_old: V,
        z: &mut Rows<V>,
        p: &mut Rows<V>,
        shifted: &mut Rows<V>,
    ) -> (V, V) {
        let params = &self.params;
        let zero = self.splat(0.0);
        let advantage = V::select(params.with_value, step.reward - v_old, step.reward);
        let pushes_up = advantage.ge(zero);
        let (upper, lower) = (self.splat(1.0) + params.eps, self.splat(1.0) - params.eps);
        let mut value = v_old;
        let mut live = zero.eq(zero);
        let mut clipped = zero;
        for epoch in 0..params.max_epochs {
            let epoch_f = self.splat(f64::from(epoch));
            if epoch > 0 {
                Self::softmax(z, p, shifted);
            }
            let mut p_a = zero;
            for v in 0..VOCAB_SIZE {
                p_a = V::select(step.onehot[v], p[v], p_a);
            }
            let ratio = p_a / step.p_old_a;
            let in_epochs = epoch_f.lt(params.epochs);
            let running = live & in_epochs;
            // Flat clipped surrogate: this epoch changes nothing, so neither will any later one.
            let clip = running & ((pushes_up & ratio.gt(upper)) | (!pushes_up & ratio.lt(lower)));
            clipped = V::select(clip, params.epochs - epoch_f, clipped);
            live = running & !clip;
            let fitting = params.with_value & in_epochs;
            if !(V::any(live) || (params.any_value && V::any(fitting))) {
                break;
            }
            let ascent = V::select(live, params.lr * advantage * ratio, zero);
            for v in 0..VOCAB_SIZE {
                z[v] = z[v] + ascent * (V::unit(self.isa, step.onehot[v]) - p[v]);
            }
            if params.any_value {
                value = V::select(fitting, self.value_update(value, v_old, step.reward), value);
            }
        }
        (value, clipped)
    }

    /// One SGD step of TRL's clipped value loss `0.5 max((v - R)^2, (v_clip - R)^2)`; flat in
    /// `v` where the clipped branch is the larger and clamped.
    #[inline(always)]
    fn value_update(&self, value: V, v_old: V, reward: V) -> V {
        let (cliprange, zero) = (self.params.cliprange_value, self.splat(0.0));
        let v_clipped = v_old + (value - v_old).max(zero - cliprange).min(cliprange);
        let unclipped = (value - reward) * (value - reward);
        let clipped_loss = (v_clipped - reward) * (v_clipped - reward);
        let moved = value - v_old;
        let inside = (zero - cliprange).lt(moved) & moved.lt(cliprange);
        let clipped_grad = V::select(inside, v_clipped - reward, zero);
        let grad = V::select(unclipped.ge(clipped_loss), value - reward, clipped_grad);
        value - self.params.lr * self.params.vf_coef * grad
    }

    /// Writes each lane's updated row and value back to its prompt.
    #[inline(always)]
    fn scatter(&mut self, prompt: V, z: &Rows<V>, value: V) {
        for x in 0..self.theta.len() {
            let here = prompt.eq(self.splat(x as f64));
            for v in 0..VOCAB_SIZE {
                self.theta[x][v] = V::select(here, z[v], self.theta[x][v]);
            }
            self.values[x] = V::select(here, value, self.values[x]);
        }
    }

    /// The first lane below `limit` whose logits or value overflowed: reached `2^512` in
    /// magnitude or stopped being finite (`crate::error::overflowed`, one mask test per row).
    #[inline(always)]
    fn diverged_lane(&self, z: &Rows<V>, value: V, limit: usize) -> Option<usize> {
        let (upper, lower) = (self.splat(OVERFLOW), self.splat(-OVERFLOW));
        // Ordered comparisons: a NaN lane is outside.
        let inside = |x: V| x.lt(upper) & x.gt(lower);
        let mut all_inside = inside(value);
        for &row in z {
            all_inside = all_inside & inside(row);
        }
        if !V::any(!all_inside) {
            return None;
        }
        let outside = V::unit(self.isa, !all_inside).to_array();
        (0..limit).find(|&l| outside[l] != 0.0)
    }

    /// The first lane below `limit` whose step recorded a float that is not finite, and that
    /// float's key in `train_rlhf`'s history ([`StepOutcome::nonfinite_key`]). `x * 0` is 0
    /// for a finite `x` and NaN otherwise, so one sum and one mask test clear every lane.
    #[inline(always)]
    fn nonfinite_lane(
        &self,
        step: &Sampled<V>,
        clip_frac: V,
        beta: V,
        mean_kl: V,
        value_loss: V,
        limit: usize,
    ) -> Option<(usize, &'static str)> {
        let zero = self.splat(0.0);
        let record = [step.score, step.kl, step.reward, clip_frac, beta, mean_kl, step.penalty, value_loss];
        let probe = record.iter().fold(zero, |sum, &x| sum + x * zero);
        if !V::any(!probe.eq(zero)) {
            return None;
        }
        let [score, kl, reward, clip_frac, beta, mean_kl, kl_penalty, value_loss] = record.map(V::to_array);
        (0..limit).find_map(|l| {
            let out = StepOutcome {
                token: 0,
                score: score[l],
                kl: kl[l],
                kl_penalty: kl_penalty[l],
                reward: reward[l],
                clip_frac: clip_frac[l],
                value_loss: value_loss[l],
            };
            out.nonfinite_key(Some((beta[l], mean_kl[l]))).map(|key| (l, key))
        })
    }

    /// The group's runs from start to finish, writing their kept steps, final logits and
    /// summaries into `out`.
    ///
    /// A lane that diverges (its logits or value overflow, or its step records a float that
    /// is not finite) fails its run there; the lanes before it carry on, since one of them
    /// failing later, or its summary failing, comes first in run order (as the reference,
    /// which runs them one after the other, reports). Lanes after it no longer matter.
    #[inline(always)]
    fn run(mut self, out: RunsOut<'_>, monitor: &Monitor) -> Result<()> {
        let engine = self.engine;
        let fields = PPO_HISTORY_FIELDS.len();
        let kept = engine.n_kept();
        let zeros: Rows<V> = [self.splat(0.0); VOCAB_SIZE];
        // `p` holds the policy before the step until the first epoch's update, then each epoch's.
        let (mut p, mut shifted) = (zeros, zeros);
        let mut ticker = Ticker::new(monitor);
        let work_per_step = (1 + u64::from(self.params.max_epochs)) * (LANES * VOCAB_SIZE) as u64;
        // The first failed lane and its error: lanes from it on are no longer checked.
        let mut failed: Option<(usize, Error)> = None;
        for t in 0..engine.steps {
            let limit = failed.as_ref().map_or(self.n_real, |&(l, _)| l);
            let draws = self.draw();
            let (mut z, ln_q, v_old) = self.gather(draws.prompt);
            let total = Self::softmax(&z, &mut p, &mut shifted);
            let step = self.sample(&draws, &p, &shifted, total, &ln_q);
            let value_loss = V::select(
                self.params.with_value,
                self.splat(0.5) * ((v_old - step.reward) * (v_old - step.reward)),
                self.splat(0.0),
            );
            let (value, clipped) = self.ppo_epochs(&step, v_old, &mut z, &mut p, &mut shifted);
            self.scatter(draws.prompt, &z, value);
            let clip_frac = clipped / self.params.epochs;
            self.sums.kl = self.sums.kl + step.kl;
            let mean_kl = self.sums.kl / self.splat((t + 1) as f64);
            let lane_failed = if let Some(l) = self.diverged_lane(&z, value, limit) {
                Some((l, "logits"))
            } else {
                self.nonfinite_lane(&step, clip_frac, draws.beta, mean_kl, value_loss, limit)
            };
            if let Some((l, key)) = lane_failed {
                let what = format!("sweep run {} diverged at step {t}", out.first_run + l);
                let error = record_overflowed(&what, key, self.params.lr.to_array()[l], draws.beta_of[l]);
                if l == 0 {
                    return Err(error); // no lane comes before it
                }
                failed = Some((l, error));
            }

            self.sums.score = self.sums.score + step.score;
            self.sums.reward = self.sums.reward + step.reward;
            self.sums.clip = self.sums.clip + clip_frac;
            let kl_of = step.kl.to_array();
            if kept > 0 && (t + 1) % engine.record_every == 0 {
                let slot = (t + 1) / engine.record_every - 1;
                // In PPO_HISTORY_FIELDS' order.
                let series = [
                    draws.prompt_of,
                    step.token.to_array(),
                    step.score.to_array(),
                    kl_of,
                    step.reward.to_array(),
                    clip_frac.to_array(),
                    draws.beta_of,
                    mean_kl.to_array(),
                    step.penalty.to_array(),
                    value_loss.to_array(),
                ];
                for l in 0..self.n_real {
                    let run = &mut out.history[l * fields * kept..(l + 1) * fields * kept];
                    for (f, values) in series.iter().enumerate() {
                        run[f * kept + slot] = values[l];
                    }
                }
            }
            for l in 0..self.n_real {
                self.controllers[l].update(kl_of[l], 1.0);
            }
            // The doubling rule can take a coefficient past the floats: its run ends on this
            // step, recorded (the reference's controller refuses the update).
            let limit = failed.as_ref().map_or(self.n_real, |&(l, _)| l);
            if let Some(l) = (0..limit).find(|&l| !self.controllers[l].value().is_finite()) {
                let what = format!("sweep run {} diverged at step {t}", out.first_run + l);
                let error = record_overflowed(&what, "beta", self.params.lr.to_array()[l], draws.beta_of[l]);
                if l == 0 {
                    return Err(error);
                }
                failed = Some((l, error));
            }
            ticker.advance(self.n_real as u64, work_per_step)?;
        }
        ticker.flush()?;
        self.finish(out, failed)
    }

    /// Each real lane's final logits and its summary (the fields of `PPO_SUMMARY_FIELDS`),
    /// checked; `failed`, the first lane that failed a step, fails the group after the lanes
    /// before it.
    fn finish(self, out: RunsOut<'_>, failed: Option<(usize, Error)>) -> Result<()> {
        let engine = self.engine;
        let table = self.theta.len() * VOCAB_SIZE;
        let steps = engine.steps as f64;
        let (score_sum, reward_sum) = (self.sums.score.to_array(), self.sums.reward.to_array());
        let (kl_sum, clip_sum) = (self.sums.kl.to_array(), self.sums.clip.to_array());
        let summaries = PPO_SUMMARY_FIELDS.len();
        let lr = self.params.lr.to_array();
        let limit = failed.as_ref().map_or(self.n_real, |&(l, _)| l);
        for l in 0..limit {
            let final_row = &mut out.params[l * table..(l + 1) * table];
            for (x, rows) in self.theta.iter().enumerate() {
                for v in 0..VOCAB_SIZE {
                    final_row[x * VOCAB_SIZE + v] = rows[v].to_array()[l];
                }
            }
            out.summary[l * summaries..(l + 1) * summaries].copy_from_slice(&[
                expected_score(final_row, engine.weights)?,
                policy_kl(final_row, engine.reference, VOCAB_SIZE)?,
                score_sum[l] / steps,
                reward_sum[l] / steps,
                kl_sum[l] / steps,
                clip_sum[l] / steps,
                self.controllers[l].value(),
            ]);
            let run_name = format!("sweep run {}", out.first_run + l);
            let summary = &out.summary[l * summaries..(l + 1) * summaries];
            check_summary(&run_name, &PPO_SUMMARY_FIELDS, summary, lr[l], self.controllers[l].value())?;
        }
        failed.map_or(Ok(()), |(_, error)| Err(error))
    }
}

/// Runs one group of up to [`LANES`] runs on the vector unit `V` (`EXACT`: libm's `exp`/`ln`).
#[inline(always)]
fn run_group<V: Vector, const EXACT: bool>(
    isa: V::Isa,
    engine: &PpoEngine<'_>,
    runs: &[PpoRun],
    out: RunsOut<'_>,
    monitor: &Monitor,
) -> Result<()> {
    Lanes::<V, EXACT>::new(isa, engine, runs).run(out, monitor)
}

impl Engine for PpoEngine<'_> {
    type Run = PpoRun;
    const GROUP: usize = LANES;

    fn history_fields(&self) -> &'static [&'static str] {
        &PPO_HISTORY_FIELDS
    }

    fn summary_fields(&self) -> &'static [&'static str] {
        &PPO_SUMMARY_FIELDS
    }

    fn kept_steps(&self, _: &[PpoRun]) -> usize {
        self.n_kept()
    }

    fn params_shape(&self) -> Vec<usize> {
        vec![self.n_prompts(), VOCAB_SIZE]
    }

    fn run(&self, runs: &[PpoRun], out: RunsOut<'_>, monitor: &Monitor) -> Result<()> {
        if self.exact {
            // libm's exp and ln are calls no vector unit takes over: one path serves.
            return run_group::<Portable, true>((), self, runs, out, monitor);
        }
        match self.simd {
            Simd::Portable => run_group::<Portable, false>((), self, runs, out, monitor),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `isa` was minted by `Simd::available` after detecting AVX2 on this CPU.
            Simd::Avx2(isa) => unsafe { run_group_avx2(isa, self, runs, out, monitor) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `isa` was minted by `Simd::available` after detecting AVX-512F on this CPU.
            Simd::Avx512(isa) => unsafe { run_group_avx512(isa, self, runs, out, monitor) },
        }
    }
}

/// [`run_group`] compiled for AVX2, so the `Avx2` operations inline as AVX2 instructions.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn run_group_avx2(
    isa: Avx2Isa,
    engine: &PpoEngine<'_>,
    runs: &[PpoRun],
    out: RunsOut<'_>,
    monitor: &Monitor,
) -> Result<()> {
    run_group::<Avx2, false>(isa, engine, runs, out, monitor)
}

/// [`run_group`] compiled for AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn run_group_avx512(
    isa: Avx512Isa,
    engine: &PpoEngine<'_>,
    runs: &[PpoRun],
    out: RunsOut<'_>,
    monitor: &Monitor,
) -> Result<()> {
    run_group::<Avx512, false>(isa, engine, runs, out, monitor)
}
