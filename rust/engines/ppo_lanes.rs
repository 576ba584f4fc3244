//! Thousands of PPO-RLHF runs at once.
//!
//! Runs advance in groups of [`LANES`] in lock-step: every quantity of a step is an array
//! with one entry per run, so each operation of the lesson's step becomes one vector
//! instruction over the group (8 runs fill an AVX-512 register of f64, two AVX2 ones). Each
//! run keeps its own CPython-compatible stream, its own hyper-parameters and controller, and
//! no operation mixes lanes, so a run's numbers do not depend on which group, lane, thread
//! or CPU it ran on. Groups are spread over threads with rayon.
//!
//! The arithmetic is the reference's, in its order, with two substitutions that stay within
//! an ulp or two: `exp` and `ln` from [`crate::fastmath`] (vectorisable), and `ln p_i`
//! taken as `(z_i - max z) - ln(sum)` (one logarithm per step instead of one per token).
//! Runs stay within 1e-9 of the reference as long as they are well conditioned; a run whose
//! KL coefficient explodes (the doubling rule below the KL the policy settles at) amplifies
//! those ulps, and `SweepSpec::exact` then gives libm's functions and bit-identical floats.
//! The frozen reference's `ln q` is computed once; an epoch after a clipped one is skipped
//! when every lane of the group is clipped, since a clipped epoch leaves the logits as
//! they are.

// Index loops over lanes are the shape LLVM turns into vector instructions.
#![allow(clippy::needless_range_loop)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rayon::prelude::*;
use std::mem::MaybeUninit;

use crate::bradley_terry::Preferences;
use crate::error::{finite_slice, positive, py_float, Error, Result};
use crate::fastmath::{exp_nonpositive_rows, ln_positive};
use crate::kl_control::KlController;
pub use crate::lanes::LANES;
#[cfg(target_arch = "x86_64")]
use crate::lanes::{Avx2, Avx512};
use crate::lanes::{Portable, Vector};
use crate::ppo::{KlPenalty, PpoParams};
use crate::rng::Mt19937;
use crate::softmax::log_softmax_into;
use crate::train::{expected_score, policy_kl};

/// The engine's vocabulary size: the lesson's `VOCAB`.
pub const VOCAB_SIZE: usize = 8;
/// Steps between two looks at the cancel flag (and two progress reports).
const CHUNK: usize = 256;

/// Per-run results kept whatever the history setting, in this order.
pub const SUMMARY_FIELDS: [&str; 7] =
    ["final_score", "final_kl", "mean_score", "mean_reward", "mean_kl", "clip_frac", "final_beta"];

/// One run of a sweep: its stream (the seed's `init_by_array` key), PPO settings and controller.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub seed_key: Vec<u32>,
    pub params: PpoParams,
    pub controller: KlController,
}

/// What every run of a sweep shares.
#[derive(Clone, Copy, Debug)]
pub struct SweepSpec<'a> {
    /// The starting policy, `n_prompts x VOCAB_SIZE` row-major.
    pub theta0: &'a [f64],
    /// The frozen reference policy, same shape.
    pub reference: &'a [f64],
    /// The reward model's weight of each token.
    pub weights: &'a [f64],
    pub steps: usize,
    /// Keep steps `k-1, 2k-1, ...` of the history; 0 keeps none (summaries only).
    pub record_every: usize,
    /// Use libm's `exp` and `ln` per token, as the reference does: every float bit-identical
    /// to `train_rlhf`'s, at a fraction of the speed of the vectorised functions.
    pub exact: bool,
}

impl SweepSpec<'_> {
    pub fn n_prompts(&self) -> usize {
        self.theta0.len() / VOCAB_SIZE
    }

    pub fn n_recorded(&self) -> usize {
        self.steps.checked_div(self.record_every).unwrap_or(0)
    }

    fn check(&self) -> Result<()> {
        if self.weights.len() != VOCAB_SIZE {
            return Err(Error::invalid(format!("w must give {VOCAB_SIZE} token weights")));
        }
        finite_slice("w", self.weights)?;
        for (name, table) in [("theta", self.theta0), ("ref", self.reference)] {
            if table.is_empty() || table.len() % VOCAB_SIZE != 0 || table.len() / VOCAB_SIZE > u32::MAX as usize {
                return Err(Error::invalid(format!("{name} must hold whole rows of {VOCAB_SIZE} logits")));
            }
            finite_slice(name, table)?;
        }
        if self.theta0.len() != self.reference.len() {
            return Err(Error::invalid("ref must have the same shape as theta"));
        }
        if self.steps == 0 {
            return Err(Error::invalid("steps must be >= 1, got 0"));
        }
        Ok(())
    }
}

/// Which vector unit the lane loops are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Simd {
    /// The target's baseline (SSE2 on x86-64): runs anywhere.
    Portable,
    Avx2,
    Avx512,
}

impl Simd {
    pub fn name(self) -> &'static str {
        match self {
            Simd::Portable => "portable",
            Simd::Avx2 => "avx2",
            Simd::Avx512 => "avx512",
        }
    }

    /// Every level this CPU can run, best last.
    pub fn available() -> Vec<Simd> {
        let mut levels = vec![Simd::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                levels.push(Simd::Avx2);
            }
            if is_x86_feature_detected!("avx512f") {
                levels.push(Simd::Avx512);
            }
        }
        levels
    }

    /// The best level this CPU can run.
    pub fn detect() -> Simd {
        *Simd::available().last().unwrap_or(&Simd::Portable)
    }
}

/// Progress and cancellation shared with whoever waits for the sweep.
#[derive(Debug, Default)]
pub struct Monitor {
    /// Run-steps finished so far.
    pub steps_done: AtomicU64,
    /// Set to make every group stop at its next chunk boundary.
    pub cancel: AtomicBool,
}

/// Everything a sweep returns; per-run arrays are run-major (`[run, ...]`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SweepOutput {
    pub n_runs: usize,
    pub n_recorded: usize,
    pub prompt: Vec<u8>,
    pub token: Vec<u8>,
    pub score: Vec<f64>,
    pub kl: Vec<f64>,
    pub reward: Vec<f64>,
    pub clip_frac: Vec<f64>,
    pub beta: Vec<f64>,
    pub mean_kl: Vec<f64>,
    pub kl_penalty: Vec<f64>,
    pub value_loss: Vec<f64>,
    /// `[run, prompt, token]` final logits.
    pub final_theta: Vec<f64>,
    /// `[run, field]` with the fields of [`SUMMARY_FIELDS`].
    pub summary: Vec<f64>,
}

/// One group's share of the outputs, not yet written: the group writes every element once.
struct GroupOut<'a> {
    prompt: &'a mut [MaybeUninit<u8>],
    token: &'a mut [MaybeUninit<u8>],
    score: &'a mut [MaybeUninit<f64>],
    kl: &'a mut [MaybeUninit<f64>],
    reward: &'a mut [MaybeUninit<f64>],
    clip_frac: &'a mut [MaybeUninit<f64>],
    beta: &'a mut [MaybeUninit<f64>],
    mean_kl: &'a mut [MaybeUninit<f64>],
    kl_penalty: &'a mut [MaybeUninit<f64>],
    value_loss: &'a mut [MaybeUninit<f64>],
    final_theta: &'a mut [MaybeUninit<f64>],
    summary: &'a mut [MaybeUninit<f64>],
}

/// Runs every spec of `runs` from `spec`, in parallel on the current rayon pool.
pub fn sweep_rlhf(spec: &SweepSpec<'_>, runs: &[RunSpec], simd: Simd, monitor: &Monitor) -> Result<SweepOutput> {
    spec.check()?;
    if runs.is_empty() {
        return Err(Error::invalid("a sweep needs at least one run"));
    }
    if !Simd::available().contains(&simd) {
        return Err(Error::invalid(format!("this CPU cannot run the {} path", simd.name())));
    }
    let n_runs = runs.len();
    let rec = spec.n_recorded();
    let table = spec.theta0.len();
    // The outputs are left unwritten here: zeroing them would touch every page (tens of
    // megabytes, often page faults) from this one thread before the parallel part starts.
    let (history, thetas, summaries) = (n_runs * rec, n_runs * table, n_runs * SUMMARY_FIELDS.len());
    let mut out = SweepOutput {
        n_runs,
        n_recorded: rec,
        prompt: Vec::with_capacity(history),
        token: Vec::with_capacity(history),
        score: Vec::with_capacity(history),
        kl: Vec::with_capacity(history),
        reward: Vec::with_capacity(history),
        clip_frac: Vec::with_capacity(history),
        beta: Vec::with_capacity(history),
        mean_kl: Vec::with_capacity(history),
        kl_penalty: Vec::with_capacity(history),
        value_loss: Vec::with_capacity(history),
        final_theta: Vec::with_capacity(thetas),
        summary: Vec::with_capacity(summaries),
    };

    let group_rec = LANES * rec;
    let mut groups: Vec<(usize, &[RunSpec], GroupOut<'_>)> = Vec::with_capacity(n_runs.div_ceil(LANES));
    let mut prompt = unwritten_pieces(&mut out.prompt, history, group_rec);
    let mut token = unwritten_pieces(&mut out.token, history, group_rec);
    let mut score = unwritten_pieces(&mut out.score, history, group_rec);
    let mut kl = unwritten_pieces(&mut out.kl, history, group_rec);
    let mut reward = unwritten_pieces(&mut out.reward, history, group_rec);
    let mut clip_frac = unwritten_pieces(&mut out.clip_frac, history, group_rec);
    let mut beta = unwritten_pieces(&mut out.beta, history, group_rec);
    let mut mean_kl = unwritten_pieces(&mut out.mean_kl, history, group_rec);
    let mut kl_penalty = unwritten_pieces(&mut out.kl_penalty, history, group_rec);
    let mut value_loss = unwritten_pieces(&mut out.value_loss, history, group_rec);
    let mut final_theta = unwritten_pieces(&mut out.final_theta, thetas, LANES * table);
    let mut summary = unwritten_pieces(&mut out.summary, summaries, LANES * SUMMARY_FIELDS.len());
    for (g, group_runs) in runs.chunks(LANES).enumerate() {
        groups.push((
            g * LANES,
            group_runs,
            GroupOut {
                prompt: prompt.next().unwrap_or_default(),
                token: token.next().unwrap_or_default(),
                score: score.next().unwrap_or_default(),
                kl: kl.next().unwrap_or_default(),
                reward: reward.next().unwrap_or_default(),
                clip_frac: clip_frac.next().unwrap_or_default(),
                beta: beta.next().unwrap_or_default(),
                mean_kl: mean_kl.next().unwrap_or_default(),
                kl_penalty: kl_penalty.next().unwrap_or_default(),
                value_loss: value_loss.next().unwrap_or_default(),
                final_theta: final_theta.next().unwrap_or_default(),
                summary: summary.next().unwrap_or_default(),
            },
        ));
    }

    groups
        .into_par_iter()
        .map(|(first_run, group_runs, mut group_out)| {
            run_group_on(simd, spec, group_runs, first_run, &mut group_out, monitor)
        })
        .collect::<Result<Vec<()>>>()?;
    // SAFETY: every group finished (an error returned above, dropping the vectors unread),
    // and a group writes each element of its pieces: every kept step of each of its runs,
    // their final policies and their summaries. The pieces cover the first `len` elements.
    unsafe {
        out.prompt.set_len(history);
        out.token.set_len(history);
        for v in [
            &mut out.score,
            &mut out.kl,
            &mut out.reward,
            &mut out.clip_frac,
            &mut out.beta,
            &mut out.mean_kl,
            &mut out.kl_penalty,
            &mut out.value_loss,
        ] {
            v.set_len(history);
        }
        out.final_theta.set_len(thetas);
        out.summary.set_len(summaries);
    }
    Ok(out)
}

fn run_group_on(
    simd: Simd,
    spec: &SweepSpec<'_>,
    runs: &[RunSpec],
    first_run: usize,
    out: &mut GroupOut<'_>,
    monitor: &Monitor,
) -> Result<()> {
    if spec.exact {
        // libm's exp and ln are calls the vector units cannot take over: one path serves.
        return run_group::<Portable, true>(spec, runs, first_run, out, monitor);
    }
    match simd {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `sweep_rlhf` only accepts a level `Simd::available()` detected on this CPU.
        Simd::Avx512 => unsafe { run_group_avx512(spec, runs, first_run, out, monitor) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Simd::Avx2 => unsafe { run_group_avx2(spec, runs, first_run, out, monitor) },
        _ => run_group::<Portable, false>(spec, runs, first_run, out, monitor),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn run_group_avx2(
    spec: &SweepSpec<'_>,
    runs: &[RunSpec],
    first_run: usize,
    out: &mut GroupOut<'_>,
    monitor: &Monitor,
) -> Result<()> {
    run_group::<Avx2, false>(spec, runs, first_run, out, monitor)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn run_group_avx512(
    spec: &SweepSpec<'_>,
    runs: &[RunSpec],
    first_run: usize,
    out: &mut GroupOut<'_>,
    monitor: &Monitor,
) -> Result<()> {
    run_group::<Avx512, false>(spec, runs, first_run, out, monitor)
}

type Rows<V> = [V; VOCAB_SIZE];

/// Lane-wise softmax of `z` into `p`; leaves the shifted logits `z - max z` in `shifted`
/// and returns each lane's normaliser. `EXACT` takes libm's `exp`, as the reference does.
#[inline(always)]
fn softmax_lanes<V: Vector, const EXACT: bool>(z: &Rows<V>, p: &mut Rows<V>, shifted: &mut Rows<V>) -> V {
    let mut max = z[0];
    for &row in &z[1..] {
        max = max.max(row);
    }
    for v in 0..VOCAB_SIZE {
        shifted[v] = z[v] - max;
    }
    *p = if EXACT { shifted.map(|row| row.map(f64::exp)) } else { exp_nonpositive_rows(shifted) };
    let mut total = V::zero();
    for &row in p.iter() {
        total = total + row;
    }
    if EXACT {
        for row in p.iter_mut() {
            *row = *row / total;
        }
    } else {
        // One division per lane instead of one per token; within an ulp of e / total.
        let inverse = V::splat(1.0) / total;
        for row in p.iter_mut() {
            *row = *row * inverse;
        }
    }
    total
}

/// One group: up to `LANES` runs (padded with copies of the first, whose results are dropped).
#[inline(always)]
fn run_group<V: Vector, const EXACT: bool>(
    spec: &SweepSpec<'_>,
    runs: &[RunSpec],
    first_run: usize,
    out: &mut GroupOut<'_>,
    monitor: &Monitor,
) -> Result<()> {
    let n_real = runs.len();
    let lane_run = |l: usize| &runs[if l < n_real { l } else { 0 }];
    let n_prompts = spec.n_prompts();
    let rec = spec.n_recorded();

    let mut theta: Vec<Rows<V>> =
        (0..n_prompts).map(|x| std::array::from_fn(|v| V::splat(spec.theta0[x * VOCAB_SIZE + v]))).collect();
    // The frozen reference never changes: its log-probabilities once (exactly as the reference).
    let mut ln_row = [0.0; VOCAB_SIZE];
    let ln_ref: Vec<[f64; VOCAB_SIZE]> = spec
        .reference
        .chunks_exact(VOCAB_SIZE)
        .map(|row| {
            log_softmax_into(row, &mut ln_row);
            ln_row
        })
        .collect();

    let mut rngs: Vec<Mt19937> = (0..LANES).map(|l| Mt19937::from_key(&lane_run(l).seed_key)).collect();
    let mut controllers: Vec<KlController> = (0..LANES).map(|l| lane_run(l).controller).collect();
    let eps = V::from_array(std::array::from_fn(|l| lane_run(l).params.eps));
    let lr = V::from_array(std::array::from_fn(|l| lane_run(l).params.lr));
    let epochs = V::from_array(std::array::from_fn(|l| f64::from(lane_run(l).params.ppo_epochs)));
    let max_epochs = (0..LANES).map(|l| lane_run(l).params.ppo_epochs).max().unwrap_or(1);
    // TRL's options, per lane: which KL enters the reward, and the value baseline.
    let penalty_of = |kind: KlPenalty| {
        V::from_array(std::array::from_fn(|l| f64::from(u8::from(lane_run(l).params.kl_penalty == kind))))
    };
    let (uses_k1, uses_k2, uses_k3) = (penalty_of(KlPenalty::K1), penalty_of(KlPenalty::K2), penalty_of(KlPenalty::K3));
    let (uses_k1, uses_k2, uses_k3) = (uses_k1.gt(V::zero()), uses_k2.gt(V::zero()), uses_k3.gt(V::zero()));
    let any_k3 = (0..LANES).any(|l| lane_run(l).params.kl_penalty == KlPenalty::K3);
    let vf_coef = V::from_array(std::array::from_fn(|l| lane_run(l).params.vf_coef));
    let cliprange_value = V::from_array(std::array::from_fn(|l| lane_run(l).params.cliprange_value));
    let with_value = vf_coef.gt(V::zero());
    let any_value = V::any(with_value);
    let mut values: Vec<V> = vec![V::zero(); n_prompts];
    let last_token = V::splat((VOCAB_SIZE - 1) as f64);

    let (mut kl_sum, mut score_sum, mut reward_sum, mut clip_sum) = (V::zero(), V::zero(), V::zero(), V::zero());
    let zeros: Rows<V> = [V::zero(); VOCAB_SIZE];
    // `p` holds the policy before the step until the first epoch's update, then each epoch's.
    let (mut p, mut shifted, mut onehot) = (zeros, zeros, [V::zero().lt(V::zero()); VOCAB_SIZE]);

    for t in 0..spec.steps {
        if t % CHUNK == 0 && t > 0 {
            monitor.steps_done.fetch_add((CHUNK * n_real) as u64, Ordering::Relaxed);
            if monitor.cancel.load(Ordering::Relaxed) {
                return Err(Error::Cancelled);
            }
        }
        // The reference's draws, in its order: rng.choice(PROMPTS), then rng.random().
        // Indices travel as f64 so that comparisons and selects stay in vector registers.
        let (mut prompt_of, mut u_of, mut beta_of) = ([0.0; LANES], [0.0; LANES], [0.0; LANES]);
        for l in 0..LANES {
            prompt_of[l] = f64::from(rngs[l].randbelow(n_prompts as u32));
            u_of[l] = rngs[l].random();
            beta_of[l] = controllers[l].value();
        }
        let (prompt, u, beta) = (V::from_array(prompt_of), V::from_array(u_of), V::from_array(beta_of));
        // Each lane's prompt row, picked by blends rather than gathers.
        let mut z = theta[0];
        let mut ln_q: Rows<V> = std::array::from_fn(|v| V::splat(ln_ref[0][v]));
        for x in 1..n_prompts {
            let here = prompt.eq(V::splat(x as f64));
            for v in 0..VOCAB_SIZE {
                z[v] = V::select(here, theta[x][v], z[v]);
                ln_q[v] = V::select(here, V::splat(ln_ref[x][v]), ln_q[v]);
            }
        }

        let total = softmax_lanes::<V, EXACT>(&z, &mut p, &mut shifted);
        // Inverse-CDF sampling: the running sum is non-decreasing, so the first index whose
        // running sum exceeds u is the number of indices whose running sum does not (or the
        // last index, if rounding left none).
        let mut running = V::zero();
        let mut token = V::zero();
        for &row in &p {
            running = running + row;
            token = token + V::unit(running.le(u));
        }
        token = token.min(last_token);
        let mut score = V::zero();
        let mut p_old_a = V::zero();
        for v in 0..VOCAB_SIZE {
            onehot[v] = token.eq(V::splat(v as f64));
            score = V::select(onehot[v], V::splat(spec.weights[v]), score);
            p_old_a = V::select(onehot[v], p[v], p_old_a);
        }

        // KL(p_old || q) = sum p (ln p - ln q), with 0 ln 0 = 0.
        let ln_total = if EXACT { V::zero() } else { total.map(ln_positive) };
        let mut kl = V::zero();
        for v in 0..VOCAB_SIZE {
            let ln_p = if EXACT { p[v].map(f64::ln) } else { shifted[v] - ln_total };
            kl = kl + V::select(p[v].gt(V::zero()), p[v] * (ln_p - ln_q[v]), V::zero());
        }
        // The reward is the advantage: the KL enters it only, and there is no baseline.
        let mut logp_a = V::zero();
        let mut logq_a = V::zero();
        for v in 0..VOCAB_SIZE {
            let ln_p = if EXACT { p[v].map(f64::ln) } else { shifted[v] - ln_total };
            logp_a = V::select(onehot[v], ln_p, logp_a);
            logq_a = V::select(onehot[v], ln_q[v], logq_a);
        }
        let log_ratio = logq_a - logp_a;
        let mut penalty = V::select(uses_k1, logp_a - logq_a, kl);
        penalty = V::select(uses_k2, V::splat(0.5) * log_ratio * log_ratio, penalty);
        if any_k3 {
            let k3 = log_ratio.map(|d| if d > 709.0 { f64::INFINITY } else { d.exp_m1() - d });
            penalty = V::select(uses_k3, k3, penalty);
        }
        let reward = score - beta * penalty;
        let mut v_old = values[0];
        for (x, &row) in values.iter().enumerate().skip(1) {
            v_old = V::select(prompt.eq(V::splat(x as f64)), row, v_old);
        }
        let advantage = V::select(with_value, reward - v_old, reward);
        let value_loss = V::select(with_value, V::splat(0.5) * ((v_old - reward) * (v_old - reward)), V::zero());
        let mut value = v_old;
        let pushes_up = advantage.ge(V::zero());
        let (upper, lower) = (V::splat(1.0) + eps, V::splat(1.0) - eps);

        let mut live = V::zero().eq(V::zero());
        let mut clipped = V::zero();
        for epoch in 0..max_epochs {
            let epoch_f = V::splat(f64::from(epoch));
            if epoch > 0 {
                softmax_lanes::<V, EXACT>(&z, &mut p, &mut shifted);
            }
            let mut p_a = V::zero();
            for v in 0..VOCAB_SIZE {
                p_a = V::select(onehot[v], p[v], p_a);
            }
            let ratio = p_a / p_old_a;
            let in_epochs = epoch_f.lt(epochs);
            let running = live & in_epochs;
            // Flat clipped surrogate: this epoch changes nothing, so neither will any later one.
            let clip = running & ((pushes_up & ratio.gt(upper)) | (!pushes_up & ratio.lt(lower)));
            clipped = V::select(clip, epochs - epoch_f, clipped);
            live = running & !clip;
            let fitting = with_value & in_epochs;
            if !(V::any(live) || (any_value && V::any(fitting))) {
                break;
            }
            let step = V::select(live, lr * advantage * ratio, V::zero());
            for v in 0..VOCAB_SIZE {
                z[v] = z[v] + step * (V::unit(onehot[v]) - p[v]);
            }
            if any_value {
                // TRL's clipped value loss 0.5 max((v - R)^2, (v_clip - R)^2); flat in v where clipped.
                let v_clipped = v_old + (value - v_old).max(V::zero() - cliprange_value).min(cliprange_value);
                let unclipped = (value - reward) * (value - reward);
                let clipped_loss = (v_clipped - reward) * (v_clipped - reward);
                let moved = value - v_old;
                let inside = (V::zero() - cliprange_value).lt(moved) & moved.lt(cliprange_value);
                let clipped_grad = V::select(inside, v_clipped - reward, V::zero());
                let grad = V::select(unclipped.ge(clipped_loss), value - reward, clipped_grad);
                value = V::select(fitting, value - lr * vf_coef * grad, value);
            }
        }

        for (x, rows) in theta.iter_mut().enumerate() {
            let here = prompt.eq(V::splat(x as f64));
            for v in 0..VOCAB_SIZE {
                rows[v] = V::select(here, z[v], rows[v]);
            }
            values[x] = V::select(here, value, values[x]);
        }
        // 0 * z is 0 for finite logits and NaN otherwise.
        let mut non_finite = V::zero();
        for &row in &z {
            non_finite = non_finite + V::zero() * row;
        }
        if let Some(l) = (0..n_real).find(|&l| non_finite.to_array()[l].is_nan()) {
            return Err(Error::Diverged(format!(
                "sweep run {} diverged at step {t}: non-finite logits (beta={})",
                first_run + l,
                py_float(beta_of[l])
            )));
        }

        let clip_frac = clipped / epochs;
        kl_sum = kl_sum + kl;
        score_sum = score_sum + score;
        reward_sum = reward_sum + reward;
        clip_sum = clip_sum + clip_frac;
        let kl_of = kl.to_array();
        if rec > 0 && (t + 1) % spec.record_every == 0 {
            let slot = (t + 1) / spec.record_every - 1;
            let (token, score, reward) = (token.to_array(), score.to_array(), reward.to_array());
            let (penalty, value_loss) = (penalty.to_array(), value_loss.to_array());
            let (clip_frac, mean_kl) = (clip_frac.to_array(), (kl_sum / V::splat((t + 1) as f64)).to_array());
            for l in 0..n_real {
                let i = l * rec + slot;
                out.prompt[i].write(prompt_of[l] as u8);
                out.token[i].write(token[l] as u8);
                out.score[i].write(score[l]);
                out.kl[i].write(kl_of[l]);
                out.reward[i].write(reward[l]);
                out.clip_frac[i].write(clip_frac[l]);
                out.beta[i].write(beta_of[l]);
                out.mean_kl[i].write(mean_kl[l]);
                out.kl_penalty[i].write(penalty[l]);
                out.value_loss[i].write(value_loss[l]);
            }
        }
        for l in 0..n_real {
            controllers[l].update(kl_of[l], 1.0);
        }
    }
    monitor.steps_done.fetch_add(((spec.steps - 1) % CHUNK + 1) as u64 * n_real as u64, Ordering::Relaxed);

    let table = n_prompts * VOCAB_SIZE;
    let steps = spec.steps as f64;
    let (score_sum, reward_sum) = (score_sum.to_array(), reward_sum.to_array());
    let (kl_sum, clip_sum) = (kl_sum.to_array(), clip_sum.to_array());
    let mut final_row = vec![0.0; table];
    for l in 0..n_real {
        for x in 0..n_prompts {
            for v in 0..VOCAB_SIZE {
                final_row[x * VOCAB_SIZE + v] = theta[x][v].to_array()[l];
            }
        }
        write_all(&mut out.final_theta[l * table..(l + 1) * table], &final_row);
        let summary = [
            expected_score(&final_row, spec.weights)?,
            policy_kl(&final_row, spec.reference, VOCAB_SIZE)?,
            score_sum[l] / steps,
            reward_sum[l] / steps,
            kl_sum[l] / steps,
            clip_sum[l] / steps,
            controllers[l].value(),
        ];
        write_all(&mut out.summary[l * SUMMARY_FIELDS.len()..(l + 1) * SUMMARY_FIELDS.len()], &summary);
    }
    Ok(())
}

/// The first `len` elements of `v`'s spare capacity in pieces of `piece` (none if `piece` is
/// 0): output the parallel workers write themselves, so that no one thread touches all of it
/// first. The caller sets `v`'s length once every element is written.
pub(crate) fn unwritten_pieces<T>(
    v: &mut Vec<T>,
    len: usize,
    piece: usize,
) -> std::slice::ChunksMut<'_, MaybeUninit<T>> {
    v.spare_capacity_mut()[..len].chunks_mut(piece.max(1))
}

fn write_all(dst: &mut [MaybeUninit<f64>], src: &[f64]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        d.write(s);
    }
}

/// One reward model of an RM sweep: SGD on `pairs[start..stop]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmSpec {
    pub lr: f64,
    pub epochs: usize,
    pub start: usize,
    pub stop: usize,
}

/// Trains one reward model per spec from `w0`, in parallel; returns `[spec, token]` weights.
pub fn sweep_rm(pairs: &Preferences, w0: &[f64], specs: &[RmSpec], monitor: &Monitor) -> Result<Vec<f64>> {
    if specs.is_empty() {
        return Err(Error::invalid("a sweep needs at least one reward model"));
    }
    for spec in specs {
        positive("lr", spec.lr)?;
        if spec.start > spec.stop || spec.stop > pairs.len() {
            return Err(Error::invalid(format!(
                "pair range {}..{} is outside the {} pairs",
                spec.start,
                spec.stop,
                pairs.len()
            )));
        }
    }
    if pairs.vocab_size() > w0.len() {
        return Err(Error::invalid("w does not cover every token of pairs"));
    }
    let vocab = w0.len();
    let mut weights = vec![0.0; specs.len() * vocab];
    weights
        .par_chunks_mut(vocab.max(1))
        .zip(specs.par_iter())
        .map(|(w, spec)| {
            w.copy_from_slice(w0);
            for _ in 0..spec.epochs {
                if monitor.cancel.load(Ordering::Relaxed) {
                    return Err(Error::Cancelled);
                }
                pairs.fit(spec.start..spec.stop, 1, spec.lr, w);
                monitor.steps_done.fetch_add((spec.stop - spec.start) as u64, Ordering::Relaxed);
            }
            Ok(())
        })
        .collect::<Result<Vec<()>>>()?;
    Ok(weights)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::seed_key;
    use crate::train::{train_rlhf, RlhfHistory};

    const WEIGHTS: [f64; 8] = [1.54, 1.51, -1.68, -1.54, 1.56, 1.59, -1.51, -1.47];
    const ZEROS: [f64; 24] = [0.0; 24];

    fn runs(n: usize) -> Vec<RunSpec> {
        (0..n)
            .map(|i| RunSpec {
                seed_key: seed_key(i as i128 * 7919),
                params: PpoParams::new([0.2, 0.1, 0.3][i % 3], [0.05, 0.2][i % 2], 1 + (i % 5) as i64)
                    .and_then(|p| {
                        p.completed(
                            ["full", "k1", "k2", "k3"][i % 4],
                            [0.0, 0.0, 0.7][i % 3],
                            0.1 + 0.1 * (i % 2) as f64,
                        )
                    })
                    .unwrap(),
                controller: match i % 3 {
                    0 => KlController::fixed(0.0).unwrap(),
                    1 => KlController::adaptive(0.5, 0.3, 50.0).unwrap(),
                    _ => KlController::doubling(0.2, 1.0).unwrap(),
                },
            })
            .collect()
    }

    fn spec(steps: usize, record_every: usize) -> SweepSpec<'static> {
        SweepSpec { theta0: &ZEROS, reference: &ZEROS, weights: &WEIGHTS, steps, record_every, exact: false }
    }

    fn single_runs(runs: &[RunSpec], steps: usize) -> Vec<(Vec<f64>, RlhfHistory)> {
        runs.iter()
            .map(|run| {
                let mut theta = ZEROS.to_vec();
                let history = train_rlhf(
                    &mut theta,
                    &ZEROS,
                    &WEIGHTS,
                    steps,
                    &run.seed_key,
                    &run.params,
                    run.controller,
                    &mut [0.0; 3],
                )
                .unwrap();
                (theta, history)
            })
            .collect()
    }

    fn assert_close(fast: &[f64], exact: &[f64], tolerance: f64, what: &str) {
        for (a, b) in fast.iter().zip(exact) {
            assert!((a - b).abs() <= tolerance * b.abs().max(1.0), "{what}: {a} vs {b}");
        }
    }

    #[test]
    fn exact_sweep_is_bit_identical_to_the_single_run_loop_even_when_beta_explodes() {
        let runs = runs(19);
        let exact_spec = SweepSpec { exact: true, ..spec(400, 1) };
        let out = sweep_rlhf(&exact_spec, &runs, Simd::detect(), &Monitor::default()).unwrap();
        for (r, (theta, history)) in single_runs(&runs, 400).into_iter().enumerate() {
            let row = r * 400..(r + 1) * 400;
            assert!(out.token[row.clone()].iter().zip(&history.token).all(|(&a, &b)| u32::from(a) == b));
            assert_eq!(out.kl[row.clone()], history.kl[..], "run {r}");
            assert_eq!(out.reward[row.clone()], history.reward[..], "run {r}");
            assert_eq!(out.mean_kl[row.clone()], history.mean_kl[..], "run {r}");
            assert_eq!(out.kl_penalty[row.clone()], history.kl_penalty[..], "run {r}");
            assert_eq!(out.value_loss[row], history.value_loss[..], "run {r}");
            assert_eq!(out.final_theta[r * 24..(r + 1) * 24], theta[..], "run {r}");
        }
    }

    #[test]
    fn fast_sweep_stays_within_1e9_of_the_single_run_loop() {
        // Well-conditioned runs: the doubling rule's exploding coefficients left out.
        let runs: Vec<RunSpec> =
            runs(19).into_iter().filter(|r| !matches!(r.controller, KlController::Doubling { .. })).collect();
        let out = sweep_rlhf(&spec(400, 1), &runs, Simd::detect(), &Monitor::default()).unwrap();
        for (r, (theta, history)) in single_runs(&runs, 400).into_iter().enumerate() {
            let row = r * 400..(r + 1) * 400;
            let tokens: Vec<u32> = out.token[row.clone()].iter().map(|&t| u32::from(t)).collect();
            assert_eq!(tokens, history.token, "run {r}");
            assert_close(&out.score[row.clone()], &history.score, 1e-9, "score");
            assert_close(&out.kl[row.clone()], &history.kl, 1e-9, "kl");
            assert_close(&out.reward[row.clone()], &history.reward, 1e-9, "reward");
            assert_close(&out.clip_frac[row.clone()], &history.clip_frac, 1e-9, "clip_frac");
            assert_close(&out.beta[row.clone()], &history.beta, 1e-9, "beta");
            assert_close(&out.mean_kl[row.clone()], &history.mean_kl, 1e-9, "mean_kl");
            assert_close(&out.kl_penalty[row.clone()], &history.kl_penalty, 1e-9, "kl_penalty");
            assert_close(&out.value_loss[row], &history.value_loss, 1e-9, "value_loss");
            assert_close(&out.final_theta[r * 24..(r + 1) * 24], &theta, 1e-9, "theta");
        }
    }

    #[test]
    fn results_do_not_depend_on_the_vector_unit_or_the_thread_count() {
        let runs = runs(21);
        let reference = sweep_rlhf(&spec(300, 1), &runs, Simd::Portable, &Monitor::default()).unwrap();
        for simd in Simd::available() {
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let out = pool.install(|| sweep_rlhf(&spec(300, 1), &runs, simd, &Monitor::default())).unwrap();
                assert_eq!(out, reference, "{simd:?} on {threads} threads");
            }
        }
    }

    #[test]
    fn record_every_keeps_every_kth_step_and_summaries_stay() {
        let runs = runs(5);
        let full = sweep_rlhf(&spec(100, 1), &runs, Simd::detect(), &Monitor::default()).unwrap();
        let thin = sweep_rlhf(&spec(100, 7), &runs, Simd::detect(), &Monitor::default()).unwrap();
        let none = sweep_rlhf(&spec(100, 0), &runs, Simd::detect(), &Monitor::default()).unwrap();
        assert_eq!((thin.n_recorded, none.n_recorded), (14, 0));
        for r in 0..5 {
            for k in 0..14 {
                assert_eq!(thin.score[r * 14 + k], full.score[r * 100 + 7 * k + 6]);
                assert_eq!(thin.mean_kl[r * 14 + k], full.mean_kl[r * 100 + 7 * k + 6]);
            }
        }
        assert_eq!(thin.summary, full.summary);
        assert_eq!(none.final_theta, full.final_theta);
        assert!(none.score.is_empty());
    }

    #[test]
    fn summaries_are_the_means_of_the_history() {
        let out = sweep_rlhf(&spec(250, 1), &runs(3), Simd::detect(), &Monitor::default()).unwrap();
        let fields = SUMMARY_FIELDS.len();
        for r in 0..3 {
            let mean = |v: &[f64]| v[r * 250..(r + 1) * 250].iter().sum::<f64>() / 250.0;
            let summary = &out.summary[r * fields..(r + 1) * fields];
            assert!((summary[2] - mean(&out.score)).abs() < 1e-12);
            assert!((summary[4] - out.mean_kl[r * 250 + 249]).abs() < 1e-12);
            assert!((summary[5] - mean(&out.clip_frac)).abs() < 1e-12);
            let theta = &out.final_theta[r * 24..(r + 1) * 24];
            assert_eq!(summary[0], expected_score(theta, &WEIGHTS).unwrap());
        }
    }

    #[test]
    fn cancelling_stops_the_sweep_and_progress_counts_every_step() {
        let monitor = Monitor::default();
        sweep_rlhf(&spec(1000, 0), &runs(10), Simd::detect(), &monitor).unwrap();
        assert_eq!(monitor.steps_done.load(Ordering::Relaxed), 10_000);
        let cancelled = Monitor::default();
        cancelled.cancel.store(true, Ordering::Relaxed);
        assert_eq!(sweep_rlhf(&spec(1000, 0), &runs(10), Simd::detect(), &cancelled), Err(Error::Cancelled));
    }

    #[test]
    fn bad_sweeps_are_refused() {
        let monitor = Monitor::default();
        assert!(sweep_rlhf(&spec(10, 1), &[], Simd::Portable, &monitor).is_err());
        assert!(sweep_rlhf(&spec(0, 1), &runs(1), Simd::Portable, &monitor).is_err());
        let short = SweepSpec { weights: &WEIGHTS[..4], ..spec(10, 1) };
        assert!(sweep_rlhf(&short, &runs(1), Simd::Portable, &monitor).is_err());
    }

    #[test]
    fn rm_sweep_matches_sequential_training() {
        let pairs = crate::data::make_dataset(300, 0);
        let specs = [
            RmSpec { lr: 0.1, epochs: 5, start: 0, stop: 300 },
            RmSpec { lr: 0.01, epochs: 2, start: 0, stop: 100 },
            RmSpec { lr: 0.5, epochs: 0, start: 0, stop: 300 },
        ];
        let weights = sweep_rm(&pairs, &[0.0; 8], &specs, &Monitor::default()).unwrap();
        for (k, spec) in specs.iter().enumerate() {
            let mut w = [0.0; 8];
            let mut subset = Preferences::new();
            for i in spec.start..spec.stop {
                let (chosen, rejected) = pairs.responses(i);
                subset.push(0, &chosen, &rejected);
            }
            crate::bradley_terry::train_rm(&subset, spec.epochs, spec.lr, &mut w).unwrap();
            assert_eq!(&weights[k * 8..(k + 1) * 8], &w);
        }
        let bad = [RmSpec { lr: 0.1, epochs: 1, start: 0, stop: 301 }];
        assert!(sweep_rm(&pairs, &[0.0; 8], &bad, &Monitor::default()).is_err());
    }
}
