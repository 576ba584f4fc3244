//! Sweeps of the methods set against PPO: many DPO, GRPO and Best-of-N runs at once.
//!
//! Each run is the single-run loop ([`crate::dpo::train_dpo`], [`crate::grpo::train_grpo`],
//! [`crate::best_of_n::best_of_n`]) on its own CPython-compatible stream, writing into its
//! own slice of the outputs; rayon spreads the runs over threads. No run reads another's
//! state, so the numbers do not depend on the thread count or the scheduling, and every
//! run is bit-identical to its single-run twin. Runs look at the [`Monitor`] every
//! [`CHUNK`] steps: to report progress and to stop when cancelled.

use std::mem::MaybeUninit;
use std::sync::atomic::Ordering;

use rayon::prelude::*;

use crate::best_of_n::{bon_exact, bon_kl_analytic, bon_sample, check_bon_inputs, softmax_table, BonSampler};
use crate::dpo::{check_table, dpo_update, log_softmax_rows, DpoPairs, DpoParams, DpoScratch, EpochOrder};
use crate::error::{finite_slice, Error, Result};
use crate::grpo::{check_grpo_inputs, GrpoParams, GrpoRun};
use crate::mt_block::BlockMt;
use crate::sweep::{unwritten_pieces, Monitor};
use crate::train::{expected_score, policy_kl};

/// Steps between two looks at the monitor.
pub const CHUNK: usize = 1024;

/// `buf` cut into `n_runs` consecutive pieces of `per_run` (empty pieces when `per_run` is 0).
fn carve<T>(buf: &mut [T], per_run: usize, n_runs: usize) -> Vec<&mut [T]> {
    if per_run == 0 {
        (0..n_runs).map(|_| <&mut [T]>::default()).collect()
    } else {
        buf.chunks_mut(per_run).collect()
    }
}

/// [`carve`] for output each run writes itself, every element once (see [`unwritten_pieces`]).
fn carve_unwritten<T>(buf: &mut Vec<T>, per_run: usize, n_runs: usize) -> Vec<&mut [MaybeUninit<T>]> {
    let mut pieces: Vec<_> = unwritten_pieces(buf, per_run * n_runs, per_run).collect();
    pieces.resize_with(n_runs, Default::default);
    pieces
}

/// Which steps a history keeps: `k-1, 2k-1, ...` for `record_every = k` (none for 0),
/// counted down rather than divided every step.
struct Keep {
    every: usize,
    countdown: usize,
    slot: usize,
}

impl Keep {
    fn new(every: usize) -> Self {
        Keep { every, countdown: every, slot: 0 }
    }

    /// The history slot of the step just taken, if it is kept.
    #[inline(always)]
    fn slot(&mut self) -> Option<usize> {
        if self.every == 0 {
            return None;
        }
        self.countdown -= 1;
        if self.countdown > 0 {
            return None;
        }
        self.countdown = self.every;
        self.slot += 1;
        Some(self.slot - 1)
    }
}

/// Counts `done` steps and says whether to stop.
#[inline]
fn tick(monitor: &Monitor, done: usize) -> Result<()> {
    monitor.steps_done.fetch_add(done as u64, Ordering::Relaxed);
    if monitor.cancel.load(Ordering::Relaxed) {
        return Err(Error::Cancelled);
    }
    Ok(())
}

// ------------------------------------------------------------------------------ DPO

/// One DPO run: its loss settings, its number of epochs and its shuffle stream (`None`:
/// the pairs in order every epoch).
#[derive(Clone, Debug, PartialEq)]
pub struct DpoRunSpec {
    pub params: DpoParams,
    pub epochs: usize,
    pub shuffle_seed: Option<Vec<u32>>,
}

/// What every run of a DPO sweep shares.
#[derive(Clone, Copy, Debug)]
pub struct DpoSweepSpec<'a> {
    /// The starting policy, `[n_prompts, vocab_size]` row-major.
    pub theta0: &'a [f64],
    /// The frozen reference policy, same shape.
    pub reference: &'a [f64],
    pub vocab_size: usize,
    pub pairs: &'a DpoPairs,
    /// A reward model to score the final policies with (`final_score` is NaN without one).
    pub weights: Option<&'a [f64]>,
    /// Keep steps `k-1, 2k-1, ...` of each history; 0 keeps none.
    pub record_every: usize,
}

/// The DPO series kept per step, in the order of the `history` array's middle axis.
pub const DPO_HISTORY_FIELDS: [&str; 5] =
    ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"];
/// Per-run summaries of a DPO sweep; the `last_epoch_*` fields are means over the last epoch.
pub const DPO_SUMMARY_FIELDS: [&str; 5] =
    ["final_score", "final_kl", "last_epoch_loss", "last_epoch_accuracy", "last_epoch_margin"];

/// A DPO sweep's results; runs of fewer steps than the longest are padded (NaN, prompt -1).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DpoSweepOutput {
    pub n_runs: usize,
    /// Kept steps per run (of the longest run).
    pub n_recorded: usize,
    /// `[run, kept]` prompt row of each kept step.
    pub prompt: Vec<i32>,
    /// `[run, field, kept]` with the fields of [`DPO_HISTORY_FIELDS`].
    pub history: Vec<f64>,
    /// `[run, prompt, token]` final logits.
    pub final_theta: Vec<f64>,
    /// `[run, field]` with the fields of [`DPO_SUMMARY_FIELDS`].
    pub summary: Vec<f64>,
}

/// Every DPO run of `runs` from `spec`, in parallel on the current rayon pool.
pub fn sweep_dpo(spec: &DpoSweepSpec<'_>, runs: &[DpoRunSpec], monitor: &Monitor) -> Result<DpoSweepOutput> {
    let v = spec.vocab_size;
    let n_prompts = check_table("theta", spec.theta0, v)?;
    if check_table("ref", spec.reference, v)? != n_prompts {
        return Err(Error::invalid("ref must have the same shape as theta"));
    }
    if let Some(w) = spec.weights {
        if w.len() != v {
            return Err(Error::invalid(format!("w must give {v} token weights, got {}", w.len())));
        }
        finite_slice("w", w)?;
    }
    spec.pairs.check(n_prompts, v)?;
    if runs.is_empty() {
        return Err(Error::invalid("a sweep needs at least one run"));
    }
    let n_pairs = spec.pairs.len();
    let max_epochs = runs.iter().map(|r| r.epochs).max().unwrap_or(0);
    if let Some(r) = runs.iter().find(|r| r.epochs == 0) {
        return Err(Error::invalid(format!("epochs must be >= 1, got {}", r.epochs)));
    }
    let max_steps = max_epochs
        .checked_mul(n_pairs)
        .ok_or_else(|| Error::invalid(format!("{max_epochs} epochs of {n_pairs} pairs is too many steps")))?;
    let rec = max_steps.checked_div(spec.record_every).unwrap_or(0);
    let n_runs = runs.len();
    let fields = DPO_HISTORY_FIELDS.len();
    let table = spec.theta0.len();
    let mut out = DpoSweepOutput {
        n_runs,
        n_recorded: rec,
        prompt: Vec::with_capacity(n_runs * rec),
        history: Vec::with_capacity(n_runs * fields * rec),
        final_theta: vec![0.0; n_runs * table],
        summary: vec![0.0; n_runs * DPO_SUMMARY_FIELDS.len()],
    };
    let ref_log_probs = log_softmax_rows(spec.reference, v);

    let prompt = carve_unwritten(&mut out.prompt, rec, n_runs);
    let history = carve_unwritten(&mut out.history, fields * rec, n_runs);
    let theta = carve(&mut out.final_theta, table, n_runs);
    let summary = carve(&mut out.summary, DPO_SUMMARY_FIELDS.len(), n_runs);
    let work: Vec<_> = runs.iter().zip(prompt).zip(history).zip(theta).zip(summary).collect();
    work.into_par_iter()
        .map(|((((run, prompt), history), theta), summary)| {
            theta.copy_from_slice(spec.theta0);
            let mut order = EpochOrder::new(n_pairs, run.shuffle_seed.as_deref());
            let mut scratch = DpoScratch::new(v);
            let (mut loss_sum, mut accuracy_sum, mut margin_sum) = (0.0, 0.0, 0.0);
            let mut t = 0usize;
            let mut keep = Keep::new(spec.record_every);
            for epoch in 0..run.epochs {
                let last = epoch + 1 == run.epochs;
                for &i in order.next_epoch() {
                    let i = i as usize;
                    let x = spec.pairs.prompts[i] as usize;
                    let row = x * v..(x + 1) * v;
                    let (chosen, rejected) = spec.pairs.pair(i);
                    let step = dpo_update(
                        &mut theta[row.clone()],
                        &ref_log_probs[row.clone()],
                        chosen,
                        rejected,
                        &run.params,
                        &mut scratch,
                    );
                    if !theta[row].iter().all(|value| value.is_finite()) {
                        return Err(Error::Diverged(format!(
                            "sweep_dpo run diverged at epoch {epoch}: non-finite logits (beta={}, lr={}, loss_type='{}')",
                            crate::error::py_float(run.params.beta),
                            crate::error::py_float(run.params.lr),
                            run.params.loss_type.name()
                        )));
                    }
                    if last {
                        loss_sum += step.loss;
                        accuracy_sum += step.accuracy;
                        margin_sum += step.margin;
                    }
                    if let Some(slot) = keep.slot() {
                        prompt[slot].write(x as i32);
                        let values = [step.loss, step.chosen, step.rejected, step.margin, step.accuracy];
                        for (f, value) in values.into_iter().enumerate() {
                            history[f * rec + slot].write(value);
                        }
                    }
                    t += 1;
                    if t.is_multiple_of(CHUNK) {
                        tick(monitor, CHUNK)?;
                    }
                }
            }
            tick(monitor, t % CHUNK)?;
            // A run shorter than the longest: NaN history and prompt -1 past its end.
            let kept = keep.slot;
            prompt[kept..].fill(MaybeUninit::new(-1));
            for f in 0..fields {
                history[f * rec + kept..(f + 1) * rec].fill(MaybeUninit::new(f64::NAN));
            }
            let n = n_pairs as f64;
            summary.copy_from_slice(&[
                match spec.weights {
                    Some(w) => expected_score(theta, w)?,
                    None => f64::NAN,
                },
                policy_kl(theta, spec.reference, v)?,
                loss_sum / n,
                accuracy_sum / n,
                margin_sum / n,
            ]);
            Ok(())
        })
        .collect::<Result<Vec<()>>>()?;
    // SAFETY: every run finished (an error returned above, dropping the vectors unread) and
    // wrote each element of its pieces: the kept steps, then the padding past its last one.
    unsafe {
        out.prompt.set_len(n_runs * rec);
        out.history.set_len(n_runs * fields * rec);
    }
    Ok(out)
}

// ----------------------------------------------------------------------------- GRPO

/// One GRPO run: its stream (the seed's `init_by_array` key) and its settings.
#[derive(Clone, Debug, PartialEq)]
pub struct GrpoRunSpec {
    pub seed_key: Vec<u32>,
    pub params: GrpoParams,
}

/// What every run of a GRPO sweep shares.
#[derive(Clone, Copy, Debug)]
pub struct GrpoSweepSpec<'a> {
    pub theta0: &'a [f64],
    pub reference: &'a [f64],
    /// The reward model's weight of each token (the vocabulary size is its length).
    pub weights: &'a [f64],
    pub steps: usize,
    /// Keep steps `k-1, 2k-1, ...` of each history; 0 keeps none.
    pub record_every: usize,
}

/// The GRPO series kept per step, in the order of the `history` array's middle axis.
pub const GRPO_HISTORY_FIELDS: [&str; 6] = ["score", "reward_std", "kl", "clip_frac", "loss", "mean_kl"];
/// Per-run summaries of a GRPO sweep (means over all steps, final policy's exact statistics).
pub const GRPO_SUMMARY_FIELDS: [&str; 7] =
    ["final_score", "final_kl", "mean_score", "mean_reward_std", "mean_kl", "clip_frac", "mean_loss"];

/// A GRPO sweep's results.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GrpoSweepOutput {
    pub n_runs: usize,
    pub n_recorded: usize,
    /// `[run, kept]` prompt row of each kept step.
    pub prompt: Vec<u8>,
    /// `[run, field, kept]` with the fields of [`GRPO_HISTORY_FIELDS`].
    pub history: Vec<f64>,
    /// `[run, prompt, token]` final logits.
    pub final_theta: Vec<f64>,
    /// `[run, field]` with the fields of [`GRPO_SUMMARY_FIELDS`].
    pub summary: Vec<f64>,
}

/// Every GRPO run of `runs` from `spec`, in parallel on the current rayon pool.
pub fn sweep_grpo(spec: &GrpoSweepSpec<'_>, runs: &[GrpoRunSpec], monitor: &Monitor) -> Result<GrpoSweepOutput> {
    check_grpo_inputs(spec.theta0, spec.reference, spec.weights, spec.steps)?;
    if spec.theta0.len() / spec.weights.len() > 256 {
        return Err(Error::invalid("a GRPO sweep takes at most 256 prompts"));
    }
    if runs.is_empty() {
        return Err(Error::invalid("a sweep needs at least one run"));
    }
    let v = spec.weights.len();
    let rec = spec.steps.checked_div(spec.record_every).unwrap_or(0);
    let n_runs = runs.len();
    let fields = GRPO_HISTORY_FIELDS.len();
    let table = spec.theta0.len();
    let mut out = GrpoSweepOutput {
        n_runs,
        n_recorded: rec,
        prompt: Vec::with_capacity(n_runs * rec),
        history: Vec::with_capacity(n_runs * fields * rec),
        final_theta: vec![0.0; n_runs * table],
        summary: vec![0.0; n_runs * GRPO_SUMMARY_FIELDS.len()],
    };
    let ref_log_probs = log_softmax_rows(spec.reference, v);

    let prompt = carve_unwritten(&mut out.prompt, rec, n_runs);
    let history = carve_unwritten(&mut out.history, fields * rec, n_runs);
    let theta = carve(&mut out.final_theta, table, n_runs);
    let summary = carve(&mut out.summary, GRPO_SUMMARY_FIELDS.len(), n_runs);
    let work: Vec<_> = runs.iter().zip(prompt).zip(history).zip(theta).zip(summary).collect();
    work.into_par_iter()
        .map(|((((run, prompt), history), theta), summary)| {
            theta.copy_from_slice(spec.theta0);
            let mut state = GrpoRun::new(theta, &ref_log_probs, spec.weights, &run.params, &run.seed_key);
            let (mut kl_sum, mut score_sum, mut std_sum, mut clip_sum, mut loss_sum) = (0.0, 0.0, 0.0, 0.0, 0.0);
            let mut keep = Keep::new(spec.record_every);
            for t in 0..spec.steps {
                let (x, step) = state.step(t, "sweep_grpo run")?;
                kl_sum += step.kl;
                score_sum += step.score;
                std_sum += step.reward_std;
                clip_sum += step.clip_frac;
                loss_sum += step.loss;
                if let Some(slot) = keep.slot() {
                    prompt[slot].write(x as u8);
                    let mean_kl = kl_sum / (t + 1) as f64;
                    let values = [step.score, step.reward_std, step.kl, step.clip_frac, step.loss, mean_kl];
                    for (f, value) in values.into_iter().enumerate() {
                        history[f * rec + slot].write(value);
                    }
                }
                if (t + 1) % CHUNK == 0 {
                    tick(monitor, CHUNK)?;
                }
            }
            tick(monitor, spec.steps % CHUNK)?;
            let theta = &*state.theta;
            let steps = spec.steps as f64;
            summary.copy_from_slice(&[
                expected_score(theta, spec.weights)?,
                policy_kl(theta, spec.reference, v)?,
                score_sum / steps,
                std_sum / steps,
                kl_sum / steps,
                clip_sum / steps,
                loss_sum / steps,
            ]);
            Ok(())
        })
        .collect::<Result<Vec<()>>>()?;
    // SAFETY: every run finished (an error returned above, dropping the vectors unread) and,
    // running all `steps`, wrote each of its `rec` kept steps.
    unsafe {
        out.prompt.set_len(n_runs * rec);
        out.history.set_len(n_runs * fields * rec);
    }
    Ok(out)
}

// ------------------------------------------------------------------------ Best-of-N

/// One Best-of-N run: `n`, the Monte-Carlo sample count and its stream.
#[derive(Clone, Debug, PartialEq)]
pub struct BonRunSpec {
    pub n: i64,
    pub samples: i64,
    pub seed_key: Vec<u32>,
}

/// Per-run results of a Best-of-N sweep (`sampled_score` is NaN without samples).
pub const BON_FIELDS: [&str; 4] = ["expected_score", "kl_analytic", "kl_exact", "sampled_score"];

/// Every Best-of-N run of `runs` for `policy` (`[n_prompts, V]` logits) against `weights`,
/// in parallel; returns `[run, field]` with the fields of [`BON_FIELDS`]. Progress counts
/// Monte-Carlo samples.
pub fn sweep_best_of_n(policy: &[f64], weights: &[f64], runs: &[BonRunSpec], monitor: &Monitor) -> Result<Vec<f64>> {
    if runs.is_empty() {
        return Err(Error::invalid("a sweep needs at least one run"));
    }
    for run in runs {
        check_bon_inputs(policy, weights, run.n, run.samples)?;
    }
    let pi = softmax_table(policy, weights.len());
    let sampler = BonSampler::new(&pi, weights.len());
    let mut out = vec![0.0; runs.len() * BON_FIELDS.len()];
    out.par_chunks_mut(BON_FIELDS.len())
        .zip(runs.par_iter())
        .map(|(row, run)| {
            let n = run.n as u64;
            let (expected, kl_exact, _) = bon_exact(&pi, weights, n);
            // The Monte-Carlo run in chunks on one stream: the same draws as one long loop.
            let mut rng = BlockMt::from_key(&run.seed_key);
            let mut total = 0.0;
            let mut left = run.samples as u64;
            let chunk = (CHUNK as u64 / n.max(1)).max(1);
            while left > 0 {
                let take = left.min(chunk);
                for _ in 0..take {
                    total += bon_sample(&sampler, weights, n, &mut rng);
                }
                left -= take;
                tick(monitor, take as usize)?;
            }
            let sampled = if run.samples > 0 { total / run.samples as f64 } else { f64::NAN };
            row.copy_from_slice(&[expected, bon_kl_analytic(n), kl_exact, sampled]);
            Ok(())
        })
        .collect::<Result<Vec<()>>>()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::best_of_n::best_of_n;
    use crate::dpo::{train_dpo, LossType};
    use crate::grpo::{train_grpo, ScaleRewards};
    use crate::rng::seed_key;

    const WEIGHTS: [f64; 8] = [1.54, 1.51, -1.68, -1.54, 1.56, 1.59, -1.51, -1.47];
    const ZEROS: [f64; 24] = [0.0; 24];

    fn pairs(n: usize) -> DpoPairs {
        let prefs = crate::data::make_dataset(n, 0);
        let mut pairs = DpoPairs::new();
        for i in 0..prefs.len() {
            let (chosen, rejected) = prefs.responses(i);
            pairs.push(prefs.prompts[i], &chosen, &rejected);
        }
        pairs
    }

    fn dpo_runs() -> Vec<DpoRunSpec> {
        let mut runs = Vec::new();
        for (k, loss_type) in LossType::ALL.into_iter().enumerate() {
            let ls = if matches!(loss_type, LossType::Sigmoid | LossType::Robust) { 0.1 } else { 0.0 };
            for seed in [None, Some(3), Some(1 << 40)] {
                runs.push(DpoRunSpec {
                    params: DpoParams::new([0.1, 0.5][k % 2], 0.05, loss_type, ls).unwrap(),
                    epochs: 1 + k % 3,
                    shuffle_seed: seed.map(seed_key),
                });
            }
        }
        runs
    }

    fn in_pool<T: Send>(threads: usize, work: impl FnOnce() -> T + Send) -> T {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(work)
    }

    #[test]
    fn dpo_sweep_runs_are_the_single_runs_padded_to_the_longest() {
        let pairs = pairs(50);
        let runs = dpo_runs();
        let spec = DpoSweepSpec {
            theta0: &ZEROS,
            reference: &ZEROS,
            vocab_size: 8,
            pairs: &pairs,
            weights: Some(&WEIGHTS),
            record_every: 1,
        };
        let out = sweep_dpo(&spec, &runs, &Monitor::default()).unwrap();
        assert_eq!(out.n_recorded, 150);
        for (r, run) in runs.iter().enumerate() {
            let mut theta = ZEROS.to_vec();
            let history =
                train_dpo(&mut theta, &ZEROS, 8, &pairs, run.epochs, &run.params, run.shuffle_seed.as_deref()).unwrap();
            assert_eq!(out.final_theta[r * 24..(r + 1) * 24], theta[..], "run {r}");
            let steps = history.loss.len();
            let hist = &out.history[r * 5 * 150..(r + 1) * 5 * 150];
            assert_eq!(hist[..steps], history.loss[..]);
            assert_eq!(hist[150..150 + steps], history.chosen[..]);
            assert_eq!(hist[600..600 + steps], history.accuracy[..]);
            assert!(hist[steps..150].iter().all(|v| v.is_nan()));
            let prompts: Vec<u32> = out.prompt[r * 150..r * 150 + steps].iter().map(|&p| p as u32).collect();
            assert_eq!(prompts, history.prompt);
            let summary = &out.summary[r * 5..(r + 1) * 5];
            assert_eq!(summary[0], expected_score(&theta, &WEIGHTS).unwrap());
            assert_eq!(summary[1], policy_kl(&theta, &ZEROS, 8).unwrap());
            let last = steps - 50..steps;
            assert!((summary[2] - history.loss[last.clone()].iter().sum::<f64>() / 50.0).abs() < 1e-12);
            assert!((summary[3] - history.accuracy[last].iter().sum::<f64>() / 50.0).abs() < 1e-12);
        }
    }

    #[test]
    fn sweeps_do_not_depend_on_the_thread_count() {
        let pairs = pairs(40);
        let dpo_spec = DpoSweepSpec {
            theta0: &ZEROS,
            reference: &ZEROS,
            vocab_size: 8,
            pairs: &pairs,
            weights: None,
            record_every: 3,
        };
        let grpo_spec =
            GrpoSweepSpec { theta0: &ZEROS, reference: &ZEROS, weights: &WEIGHTS, steps: 300, record_every: 1 };
        let grpo = grpo_runs();
        let bon: Vec<BonRunSpec> =
            (0..12).map(|i| BonRunSpec { n: 1 + i % 5, samples: 500, seed_key: seed_key(i as i128) }).collect();
        let one = in_pool(1, || {
            (
                sweep_dpo(&dpo_spec, &dpo_runs(), &Monitor::default()).unwrap(),
                sweep_grpo(&grpo_spec, &grpo, &Monitor::default()).unwrap(),
                sweep_best_of_n(&ZEROS, &WEIGHTS, &bon, &Monitor::default()).unwrap(),
            )
        });
        for threads in [2, 5] {
            let many = in_pool(threads, || {
                (
                    sweep_dpo(&dpo_spec, &dpo_runs(), &Monitor::default()).unwrap(),
                    sweep_grpo(&grpo_spec, &grpo, &Monitor::default()).unwrap(),
                    sweep_best_of_n(&ZEROS, &WEIGHTS, &bon, &Monitor::default()).unwrap(),
                )
            });
            // NaN padding compares unequal: compare bit patterns.
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&many.0.history), bits(&one.0.history), "{threads} threads");
            assert_eq!(bits(&many.0.summary), bits(&one.0.summary));
            assert_eq!(many.0.final_theta, one.0.final_theta);
            assert_eq!(many.1, one.1, "{threads} threads");
            assert_eq!(many.2, one.2, "{threads} threads");
        }
    }

    fn grpo_runs() -> Vec<GrpoRunSpec> {
        (0..9)
            .map(|i| GrpoRunSpec {
                seed_key: seed_key(i as i128 * 7919),
                params: GrpoParams::new(
                    2 + (i % 4) as i64 * 2,
                    [0.0, 0.04, 0.5][i % 3],
                    0.2,
                    if i % 2 == 0 { None } else { Some(0.28) },
                    [0.05, 0.2][i % 2],
                    if i % 3 == 0 { ScaleRewards::None } else { ScaleRewards::Group },
                    1 + (i % 3) as i64,
                )
                .unwrap(),
            })
            .collect()
    }

    #[test]
    fn grpo_sweep_runs_are_bit_identical_to_train_grpo() {
        let runs = grpo_runs();
        let spec = GrpoSweepSpec { theta0: &ZEROS, reference: &ZEROS, weights: &WEIGHTS, steps: 400, record_every: 1 };
        let out = sweep_grpo(&spec, &runs, &Monitor::default()).unwrap();
        let f = GRPO_HISTORY_FIELDS.len();
        for (r, run) in runs.iter().enumerate() {
            let mut theta = ZEROS.to_vec();
            let history = train_grpo(&mut theta, &ZEROS, &WEIGHTS, 400, &run.seed_key, &run.params).unwrap();
            let hist = &out.history[r * f * 400..(r + 1) * f * 400];
            assert_eq!(hist[..400], history.score[..], "run {r}");
            assert_eq!(hist[400..800], history.reward_std[..]);
            assert_eq!(hist[800..1200], history.kl[..]);
            assert_eq!(hist[1200..1600], history.clip_frac[..]);
            assert_eq!(hist[1600..2000], history.loss[..]);
            assert_eq!(hist[2000..2400], history.mean_kl[..]);
            assert_eq!(out.final_theta[r * 24..(r + 1) * 24], theta[..]);
            let prompts: Vec<u32> = out.prompt[r * 400..(r + 1) * 400].iter().map(|&p| u32::from(p)).collect();
            assert_eq!(prompts, history.prompt);
            assert_eq!(out.summary[r * 7 + 4], history.mean_kl[399]);
        }
        let thin = sweep_grpo(&GrpoSweepSpec { record_every: 7, ..spec }, &runs, &Monitor::default()).unwrap();
        assert_eq!(thin.n_recorded, 57);
        assert_eq!(thin.history[6], out.history[6 * 7 + 6]);
        assert_eq!(thin.summary, out.summary);
        let none = sweep_grpo(&GrpoSweepSpec { record_every: 0, ..spec }, &runs, &Monitor::default()).unwrap();
        assert!(none.history.is_empty());
        assert_eq!(none.final_theta, out.final_theta);
    }

    #[test]
    fn best_of_n_sweep_matches_best_of_n() {
        let policy: Vec<f64> = (0..24).map(|i| ((i * 37) % 11) as f64 / 5.0 - 1.0).collect();
        let runs: Vec<BonRunSpec> = [(1, 0, 0), (4, 3000, 1), (16, 5000, 2), (4, 3000, 3)]
            .into_iter()
            .map(|(n, samples, seed)| BonRunSpec { n, samples, seed_key: seed_key(seed) })
            .collect();
        let monitor = Monitor::default();
        let out = sweep_best_of_n(&policy, &WEIGHTS, &runs, &monitor).unwrap();
        assert_eq!(monitor.steps_done.load(Ordering::Relaxed), 11_000);
        for (r, run) in runs.iter().enumerate() {
            let single = best_of_n(&policy, &WEIGHTS, run.n, run.samples, &run.seed_key).unwrap();
            assert_eq!(out[r * 4], single.expected_score);
            assert_eq!(out[r * 4 + 1], single.kl_analytic);
            assert_eq!(out[r * 4 + 2], single.kl_exact);
            match single.sampled_score {
                Some(s) => assert_eq!(out[r * 4 + 3], s),
                None => assert!(out[r * 4 + 3].is_nan()),
            }
        }
    }

    #[test]
    fn progress_counts_every_step_and_cancelling_stops() {
        let pairs = pairs(30);
        let spec = DpoSweepSpec {
            theta0: &ZEROS,
            reference: &ZEROS,
            vocab_size: 8,
            pairs: &pairs,
            weights: None,
            record_every: 0,
        };
        let monitor = Monitor::default();
        let runs = dpo_runs();
        sweep_dpo(&spec, &runs, &monitor).unwrap();
        let expected: usize = runs.iter().map(|r| r.epochs * 30).sum();
        assert_eq!(monitor.steps_done.load(Ordering::Relaxed), expected as u64);
        let grpo_spec =
            GrpoSweepSpec { theta0: &ZEROS, reference: &ZEROS, weights: &WEIGHTS, steps: 2500, record_every: 0 };
        let monitor = Monitor::default();
        sweep_grpo(&grpo_spec, &grpo_runs(), &monitor).unwrap();
        assert_eq!(monitor.steps_done.load(Ordering::Relaxed), 9 * 2500);
        let cancelled = Monitor::default();
        cancelled.cancel.store(true, Ordering::Relaxed);
        assert_eq!(sweep_grpo(&grpo_spec, &grpo_runs(), &cancelled), Err(Error::Cancelled));
        assert_eq!(sweep_dpo(&spec, &runs, &cancelled), Err(Error::Cancelled));
        let bon = [BonRunSpec { n: 2, samples: 10_000, seed_key: vec![0] }];
        assert_eq!(sweep_best_of_n(&ZEROS, &WEIGHTS, &bon, &cancelled), Err(Error::Cancelled));
    }

    #[test]
    fn bad_sweeps_are_refused() {
        let monitor = Monitor::default();
        let pairs = pairs(5);
        let spec = DpoSweepSpec {
            theta0: &ZEROS,
            reference: &ZEROS,
            vocab_size: 8,
            pairs: &pairs,
            weights: None,
            record_every: 1,
        };
        assert!(sweep_dpo(&spec, &[], &monitor).is_err());
        let zero_epochs = DpoRunSpec { epochs: 0, ..dpo_runs()[0].clone() };
        assert!(sweep_dpo(&spec, &[zero_epochs], &monitor).unwrap_err().to_string().contains("epochs"));
        let short_w = DpoSweepSpec { weights: Some(&WEIGHTS[..3]), ..spec };
        assert!(sweep_dpo(&short_w, &dpo_runs(), &monitor).unwrap_err().to_string().contains('w'));
        let empty = DpoPairs::new();
        assert!(sweep_dpo(&DpoSweepSpec { pairs: &empty, ..spec }, &dpo_runs(), &monitor).is_err());
        let grpo_spec =
            GrpoSweepSpec { theta0: &ZEROS, reference: &ZEROS, weights: &[2.0; 8], steps: 10, record_every: 1 };
        let err = sweep_grpo(&grpo_spec, &grpo_runs(), &monitor).unwrap_err();
        assert!(err.to_string().contains("w scores responses by length alone"), "{err}");
        assert!(
            sweep_grpo(&GrpoSweepSpec { weights: &WEIGHTS, steps: 0, ..grpo_spec }, &grpo_runs(), &monitor).is_err()
        );
        assert!(sweep_grpo(&GrpoSweepSpec { weights: &WEIGHTS, ..grpo_spec }, &[], &monitor).is_err());
        let err = sweep_best_of_n(&ZEROS, &[0.0; 8], &[BonRunSpec { n: 2, samples: 0, seed_key: vec![0] }], &monitor);
        assert!(err.unwrap_err().to_string().contains("by length alone"));
        let bad_n = [BonRunSpec { n: 0, samples: 0, seed_key: vec![0] }];
        assert!(sweep_best_of_n(&ZEROS, &WEIGHTS, &bad_n, &monitor).unwrap_err().to_string().contains("n must be"));
    }
}
