//! DPO runs over a preference set: the loop [`train_dpo`], and the sweep engine [`DpoEngine`].

use super::driver::{check_summary, Engine, Keep, Monitor, RunsOut, Ticker};
use crate::error::{
    default_max_memory, drop_in_background, finite_slice, fits_in_memory, overflowed, record_overflowed, reserve,
    Error, Result,
};
use crate::kernels::policy::{check_policy_pair, expected_score, policy_kl};
use crate::kernels::softmax::log_softmax_rows;
use crate::methods::dpo::{dpo_update, DpoOutcome, DpoPairs, DpoParams, DpoScratch};
use crate::rng::Mt19937;

/// The per-step series of a DPO sweep's history, TRL's names ('/' as '_').
pub const DPO_HISTORY_FIELDS: [&str; 6] =
    ["prompt", "loss", "rewards_chosen", "rewards_rejected", "rewards_margins", "rewards_accuracies"];
/// Per-run results of a DPO sweep; the `last_epoch_*` fields are means over the last epoch.
/// Without a reward model there is no `final_score` (the fields are the rest, in order).
pub const DPO_SUMMARY_FIELDS: [&str; 5] =
    ["final_score", "final_kl", "last_epoch_loss", "last_epoch_accuracy", "last_epoch_margin"];

/// Bytes a step of [`train_dpo`] counts against `max_memory` (six series of 8 bytes; the
/// reference counts the same).
pub const DPO_BYTES_PER_STEP: u64 = 6 * 8;

/// The order pairs are visited in, epoch after epoch: `0..n` every epoch, or, with a seed,
/// `order = list(range(n)); rng.shuffle(order)` anew each epoch on one `random.Random(seed)`.
pub(crate) struct EpochOrder {
    order: Vec<u32>,
    rng: Option<Mt19937>,
}

impl EpochOrder {
    /// `n` must be below 2^32 (`DpoPairs::check` makes sure).
    pub(crate) fn new(n: usize, shuffle_seed: Option<&[u32]>) -> Self {
        EpochOrder { order: (0..n as u32).collect(), rng: shuffle_seed.map(Mt19937::from_key) }
    }

    /// The order of the next epoch.
    pub(crate) fn next_epoch(&mut self) -> &[u32] {
        if let Some(rng) = &mut self.rng {
            for (i, slot) in self.order.iter_mut().enumerate() {
                *slot = i as u32;
            }
            rng.shuffle(&mut self.order);
        }
        &self.order
    }
}

/// `epochs` passes of [`dpo_update`] over `pairs`, in the order of [`EpochOrder`], updating
/// the `[n_prompts, vocab_size]` table `theta` against the reference's log-probabilities.
/// After each step `on_step(epoch, prompt, outcome)` sees what the step saw; a step whose
/// logits overflow, or whose record holds a float that is not finite (the first in the
/// history's order is named), stops the loop with an error that `run_name` (`train_dpo`,
/// `sweep run 3`) begins. `monitor` counts the steps and stops the loop when cancelled.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn dpo_epochs(
    theta: &mut [f64],
    ref_log_probs: &[f64],
    vocab_size: usize,
    pairs: &DpoPairs,
    epochs: usize,
    params: &DpoParams,
    shuffle_seed: Option<&[u32]>,
    mut on_step: impl FnMut(usize, u32, &DpoOutcome),
    run_name: &str,
    monitor: &Monitor,
) -> Result<()> {
    let mut order = EpochOrder::new(pairs.len(), shuffle_seed);
    let mut scratch = DpoScratch::new(vocab_size);
    let mut ticker = Ticker::new(monitor);
    let mut t = 0usize;
    for epoch in 0..epochs {
        for &i in order.next_epoch() {
            let i = i as usize;
            let x = pairs.prompts[i] as usize;
            let row = x * vocab_size..(x + 1) * vocab_size;
            let (chosen, rejected) = pairs.pair(i);
            let out = dpo_update(
                &mut theta[row.clone()],
                &ref_log_probs[row.clone()],
                chosen,
                rejected,
                params,
                &mut scratch,
            );
            let diverged =
                |key: &str| record_overflowed(&format!("{run_name} diverged at step {t}"), key, params.lr, params.beta);
            if overflowed(&theta[row]) {
                return Err(diverged("logits"));
            }
            if let Some(key) = out.nonfinite_key() {
                return Err(diverged(key));
            }
            on_step(epoch, x as u32, &out);
            t += 1;
            // The step walks the row twice and each response once.
            ticker.advance(1, (2 * vocab_size + chosen.len() + rejected.len()) as u64)?;
        }
    }
    ticker.flush()
}

/// Per-step record of a DPO run, before each step: TRL's `loss`, `rewards/chosen`,
/// `rewards/rejected`, `rewards/margins`, `rewards/accuracies`, and the pair's prompt row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DpoHistory {
    pub prompt: Vec<u32>,
    pub loss: Vec<f64>,
    pub chosen: Vec<f64>,
    pub rejected: Vec<f64>,
    pub margin: Vec<f64>,
    pub accuracy: Vec<f64>,
}

impl DpoHistory {
    /// Room for `steps` more steps in every series, or [`Error::OutOfMemory`].
    fn reserve(&mut self, steps: usize) -> Result<()> {
        let what = "the history of train_dpo";
        reserve(&mut self.prompt, steps, what)?;
        for series in [&mut self.loss, &mut self.chosen, &mut self.rejected, &mut self.margin, &mut self.accuracy] {
            reserve(series, steps, what)?;
        }
        Ok(())
    }
}

/// `epochs` passes of the DPO step over `pairs` (in order, or reshuffled every epoch with
/// `shuffle_seed`, the `init_by_array` key of `random.Random(seed)`), updating the
/// `[n_prompts, vocab_size]` table `theta` in place against the frozen `reference`. A step
/// whose logits overflow is an error, `theta` as that step left it. `epochs` is checked
/// against half the machine's memory before anything is allocated; `monitor` is ticked as
/// the run goes and stops it when cancelled.
#[allow(clippy::too_many_arguments)]
pub fn train_dpo(
    theta: &mut [f64],
    reference: &[f64],
    vocab_size: usize,
    pairs: &DpoPairs,
    epochs: usize,
    params: &DpoParams,
    shuffle_seed: Option<&[u32]>,
    monitor: &Monitor,
) -> Result<DpoHistory> {
    let n_prompts = check_policy_pair(theta, reference, vocab_size)?;
    pairs.check(n_prompts, vocab_size)?;
    // The pairs are in memory, so their count times 48 cannot saturate.
    let bytes_per_epoch = (pairs.len() as u64).saturating_mul(DPO_BYTES_PER_STEP);
    fits_in_memory("epochs", epochs as u64, bytes_per_epoch, default_max_memory())?;
    let mut history = DpoHistory::default();
    // Fits: the memory check counted 48 bytes a step.
    history.reserve(epochs * pairs.len())?;
    let ref_log_probs = log_softmax_rows(reference, vocab_size);
    let record = |_: usize, x: u32, out: &DpoOutcome| {
        history.prompt.push(x);
        history.loss.push(out.loss);
        history.chosen.push(out.chosen);
        history.rejected.push(out.rejected);
        history.margin.push(out.margin);
        history.accuracy.push(out.accuracy);
    };
    let outcome = dpo_epochs(
        theta,
        &ref_log_probs,
        vocab_size,
        pairs,
        epochs,
        params,
        shuffle_seed,
        record,
        "train_dpo",
        monitor,
    );
    match outcome {
        Ok(()) => Ok(history),
        Err(err) => {
            drop_in_background(history);
            Err(err)
        }
    }
}

/// One DPO run of a sweep: its loss settings, its number of epochs and its shuffle stream
/// (`None`: the pairs in order every epoch).
#[derive(Clone, Debug, PartialEq)]
pub struct DpoRun {
    pub params: DpoParams,
    pub epochs: usize,
    pub shuffle_seed: Option<Vec<u32>>,
}

/// Steps of the longest of DPO sweep runs of `epochs(run)` passes over `n_pairs` pairs,
/// after checking, run by run, that it has an epoch and passes `check`.
pub(crate) fn longest_run_steps<R>(
    runs: &[R],
    epochs: impl Fn(&R) -> usize,
    n_pairs: usize,
    check: impl Fn(&R) -> Result<()>,
) -> Result<usize> {
    for run in runs {
        if epochs(run) == 0 {
            return Err(Error::invalid("epochs must be >= 1, got 0"));
        }
        check(run)?;
    }
    let max_epochs = runs.iter().map(epochs).max().unwrap_or(0);
    max_epochs
        .checked_mul(n_pairs)
        .ok_or_else(|| Error::invalid(format!("{max_epochs} epochs of {n_pairs} pairs is too many steps")))
}

/// DPO runs over one preference set from one starting policy: each run is [`train_dpo`]
/// from `theta0`. A run of fewer steps than the longest is padded with NaN.
#[derive(Clone, Debug)]
pub struct DpoEngine<'a> {
    pub theta0: &'a [f64],
    pub reference: &'a [f64],
    pub vocab_size: usize,
    pub pairs: &'a DpoPairs,
    /// A reward model to score the final policies with (no `final_score` without one).
    pub weights: Option<&'a [f64]>,
    /// Keep steps `k-1, 2k-1, ...` of each history; 0 keeps none.
    pub record_every: usize,
    ref_log_probs: Vec<f64>,
    /// Steps of the longest run.
    max_steps: usize,
}

impl<'a> DpoEngine<'a> {
    /// Checks what the runs share and every run's epochs.
    pub fn new(
        theta0: &'a [f64],
        reference: &'a [f64],
        vocab_size: usize,
        pairs: &'a DpoPairs,
        weights: Option<&'a [f64]>,
        record_every: usize,
        runs: &[DpoRun],
    ) -> Result<Self> {
        let n_prompts = check_policy_pair(theta0, reference, vocab_size)?;
        if let Some(w) = weights {
            if w.len() != vocab_size {
                return Err(Error::invalid(format!("w must give {vocab_size} token weights, got {}", w.len())));
            }
            finite_slice("w", w)?;
        }
        pairs.check(n_prompts, vocab_size)?;
        let max_steps = longest_run_steps(runs, |r| r.epochs, pairs.len(), |_| Ok(()))?;
        let ref_log_probs = log_softmax_rows(reference, vocab_size);
        Ok(DpoEngine { theta0, reference, vocab_size, pairs, weights, record_every, ref_log_probs, max_steps })
    }
}

impl Engine for DpoEngine<'_> {
    type Run = DpoRun;

    fn history_fields(&self) -> &'static [&'static str] {
        &DPO_HISTORY_FIELDS
    }

    fn summary_fields(&self) -> &'static [&'static str] {
        match self.weights {
            Some(_) => &DPO_SUMMARY_FIELDS,
            None => &DPO_SUMMARY_FIELDS[1..],
        }
    }

    fn kept_steps(&self, _: &[DpoRun]) -> usize {
        self.max_steps.checked_div(self.record_every).unwrap_or(0)
    }

    fn params_shape(&self) -> Vec<usize> {
        vec![self.theta0.len() / self.vocab_size, self.vocab_size]
    }

    fn run(&self, runs: &[DpoRun], out: RunsOut<'_>, monitor: &Monitor) -> Result<()> {
        let (run, theta) = (&runs[0], &mut *out.params);
        let history = &mut *out.history;
        let kept = history.len() / DPO_HISTORY_FIELDS.len();
        theta.copy_from_slice(self.theta0);
        let (mut loss_sum, mut accuracy_sum, mut margin_sum) = (0.0, 0.0, 0.0);
        let mut keep = Keep::new(self.record_every);
        let last_epoch = run.epochs - 1;
        let on_step = |epoch: usize, x: u32, step: &DpoOutcome| {
            if epoch == last_epoch {
                loss_sum += step.loss;
                accuracy_sum += step.accuracy;
                margin_sum += step.margin;
            }
            if let Some(slot) = keep.slot() {
                let values = [f64::from(x), step.loss, step.chosen, step.rejected, step.margin, step.accuracy];
                for (f, value) in values.into_iter().enumerate() {
                    history[f * kept + slot] = value;
                }
            }
        };
        let run_name = format!("sweep run {}", out.first_run);
        let shuffle_seed = run.shuffle_seed.as_deref();
        let pairs = self.pairs;
        dpo_epochs(
            theta,
            &self.ref_log_probs,
            self.vocab_size,
            pairs,
            run.epochs,
            &run.params,
            shuffle_seed,
            on_step,
            &run_name,
            monitor,
        )?;
        // A run shorter than the longest: NaN past its end.
        let recorded = keep.recorded();
        for f in 0..DPO_HISTORY_FIELDS.len() {
            history[f * kept + recorded..(f + 1) * kept].fill(f64::NAN);
        }
        let n = pairs.len() as f64;
        let rest = [policy_kl(theta, self.reference, self.vocab_size)?, loss_sum / n, accuracy_sum / n, margin_sum / n];
        match self.weights {
            Some(w) => {
                out.summary[0] = expected_score(theta, w)?;
                out.summary[1..].copy_from_slice(&rest);
            }
            None => out.summary.copy_from_slice(&rest),
        }
        check_summary(&run_name, self.summary_fields(), out.summary, run.params.lr, run.params.beta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::driver::{sweep, SweepOutput};
    use crate::lesson::tests::make_dataset;
    use crate::methods::dpo::{dpo_step_metrics, LossType};
    use crate::rng::seed_key;

    const WEIGHTS: [f64; 8] = [1.54, 1.51, -1.68, -1.54, 1.56, 1.59, -1.51, -1.47];
    const ZEROS: [f64; 24] = [0.0; 24];

    fn lesson_pairs(n: usize) -> DpoPairs {
        let prefs = make_dataset(n, 0);
        let mut pairs = DpoPairs::new();
        for i in 0..prefs.len() {
            let (chosen, rejected) = prefs.responses(i);
            pairs.push(prefs.prompts[i], &chosen, &rejected);
        }
        pairs
    }

    #[test]
    fn epochs_are_shuffled_as_cpython_shuffles() {
        // r = random.Random(3); shuffle list(range(10)) twice, each from scratch.
        let mut epochs = EpochOrder::new(10, Some(&[3]));
        assert_eq!(epochs.next_epoch(), [1, 5, 6, 0, 9, 4, 7, 2, 8, 3]);
        assert_eq!(epochs.next_epoch(), [2, 0, 6, 8, 9, 5, 1, 3, 4, 7]);
        let mut unshuffled = EpochOrder::new(4, None);
        assert_eq!(unshuffled.next_epoch(), [0, 1, 2, 3]);
        assert_eq!(unshuffled.next_epoch(), [0, 1, 2, 3]);
    }

    #[test]
    fn train_dpo_is_the_step_applied_in_order_and_learns_the_preference() {
        let pairs = lesson_pairs(60);
        let p = DpoParams::new(0.1, 0.5, LossType::Sigmoid, 0.0).unwrap();
        let mut theta = vec![0.0; 24];
        let history = train_dpo(&mut theta, &[0.0; 24], 8, &pairs, 3, &p, None, &Monitor::default()).unwrap();
        assert_eq!(history.loss.len(), 180);
        assert_eq!(history.loss[0], 2f64.ln());
        let mut manual = vec![0.0; 24];
        for _ in 0..3 {
            for i in 0..pairs.len() {
                let x = pairs.prompts[i] as usize;
                let (c, r) = pairs.pair(i);
                dpo_step_metrics(&mut manual[x * 8..(x + 1) * 8], &[0.0; 8], c, r, &p).unwrap();
            }
        }
        assert_eq!(manual, theta);
        let late: f64 = history.accuracy[120..].iter().sum::<f64>() / 60.0;
        assert!(late > 0.9, "{late}");
        assert!(expected_score(&theta, &[1.0, 1.0, -1.0, -1.0, 1.0, 1.0, -1.0, -1.0]).unwrap() > 0.0);
    }

    #[test]
    fn shuffled_epochs_visit_pairs_in_cpythons_order() {
        let pairs = lesson_pairs(60);
        let p = DpoParams::new(0.1, 0.1, LossType::Robust, 0.1).unwrap();
        let mut theta = vec![0.0; 24];
        let history = train_dpo(&mut theta, &[0.0; 24], 8, &pairs, 2, &p, Some(&[7]), &Monitor::default()).unwrap();
        let mut order = EpochOrder::new(pairs.len(), Some(&[7]));
        let mut expected = Vec::new();
        for _ in 0..2 {
            expected.extend(order.next_epoch().iter().map(|&i| pairs.prompts[i as usize]));
        }
        assert_eq!(history.prompt, expected);
        let mut again = vec![0.0; 24];
        assert_eq!(
            train_dpo(&mut again, &[0.0; 24], 8, &pairs, 2, &p, Some(&[7]), &Monitor::default()).unwrap(),
            history
        );
        let mut other = vec![0.0; 24];
        assert_ne!(
            train_dpo(&mut other, &[0.0; 24], 8, &pairs, 2, &p, Some(&[8]), &Monitor::default()).unwrap().prompt,
            history.prompt
        );
    }

    #[test]
    fn train_dpo_refuses_bad_input_and_reports_divergence() {
        let p = DpoParams::new(0.1, 0.1, LossType::Sigmoid, 0.0).unwrap();
        let mut theta = vec![0.0; 24];
        assert!(train_dpo(&mut theta, &[0.0; 24], 8, &DpoPairs::new(), 1, &p, None, &Monitor::default()).is_err());
        let mut bad = DpoPairs::new();
        bad.push(3, &[0], &[1]);
        assert!(train_dpo(&mut theta, &[0.0; 24], 8, &bad, 1, &p, None, &Monitor::default())
            .unwrap_err()
            .to_string()
            .contains("prompt"));
        let mut oov = DpoPairs::new();
        oov.push(0, &[0], &[9]);
        assert!(train_dpo(&mut theta, &[0.0; 24], 8, &oov, 1, &p, None, &Monitor::default())
            .unwrap_err()
            .to_string()
            .contains("rejected"));
        let mut empty = DpoPairs::new();
        empty.push(0, &[], &[1]);
        assert!(train_dpo(&mut theta, &[0.0; 24], 8, &empty, 1, &p, None, &Monitor::default())
            .unwrap_err()
            .to_string()
            .contains("chosen"));
        assert!(train_dpo(&mut theta, &[0.0; 16], 8, &lesson_pairs(60), 1, &p, None, &Monitor::default()).is_err());
        // IPO with a huge step overshoots further every step until the logits overflow.
        let wild = DpoParams::new(1e-3, 1e6, LossType::Ipo, 0.0).unwrap();
        let err =
            train_dpo(&mut theta, &[0.0; 24], 8, &lesson_pairs(60), 50, &wild, None, &Monitor::default()).unwrap_err();
        assert!(err.to_string().starts_with("train_dpo diverged at step"), "{err}");
        assert!(err.to_string().ends_with(": logits overflowed (lr=1000000.0, beta=0.001)"), "{err}");
        let epochs = usize::MAX / 1000;
        let err = train_dpo(&mut theta, &[0.0; 24], 8, &lesson_pairs(60), epochs, &p, None, &Monitor::default());
        let expected = format!("epochs={epochs} needs {} bytes, more than max_memory=", epochs as u128 * 60 * 48);
        assert!(err.unwrap_err().to_string().starts_with(&expected));
        let cancelled = Monitor::default();
        cancelled.cancel();
        let stopped = train_dpo(&mut [0.0; 24], &[0.0; 24], 8, &lesson_pairs(60), 10_000, &p, None, &cancelled);
        assert_eq!(stopped, Err(Error::Cancelled));
    }

    /// Prompt 0's chosen token 0 sits 5 logits below the rest, so `u = -5` there: a pair on
    /// it with `beta = 1e308` has `h = -inf` and an infinite loss, while a pair on prompt 1
    /// (`u = 0`) has a loss of ln 2. lr = 5e-324 keeps every logit finite.
    fn lopsided() -> ([f64; 24], DpoPairs) {
        let mut theta0 = [0.0; 24];
        theta0[0] = -5.0;
        let mut pairs = DpoPairs::new();
        pairs.push(1, &[0], &[1]);
        pairs.push(0, &[0], &[1]);
        pairs.push(1, &[2], &[3]);
        (theta0, pairs)
    }

    #[test]
    fn a_record_that_is_not_finite_stops_the_run_unrecorded() {
        let (theta0, pairs) = lopsided();
        let wild = DpoParams::new(1e308, 5e-324, LossType::Sigmoid, 0.0).unwrap();
        let mut theta = theta0.to_vec();
        let err = train_dpo(&mut theta, &ZEROS, 8, &pairs, 2, &wild, None, &Monitor::default()).unwrap_err();
        assert_eq!(
            err,
            Error::Diverged("train_dpo diverged at step 1: loss overflowed (lr=5e-324, beta=1e+308)".into())
        );
        // theta holds the failing step's update (the first step's is far below an ulp).
        let mut first = theta0.to_vec();
        let mut one = DpoPairs::new();
        one.push(1, &[0], &[1]);
        train_dpo(&mut first, &ZEROS, 8, &one, 1, &wild, None, &Monitor::default()).unwrap();
        assert_ne!(first, theta);
        // The sweep names its run; the history is not a record of the failing step.
        let runs = [
            DpoRun {
                params: DpoParams::new(0.1, 0.05, LossType::Sigmoid, 0.0).unwrap(),
                epochs: 2,
                shuffle_seed: None,
            },
            DpoRun { params: wild, epochs: 2, shuffle_seed: None },
        ];
        let engine = DpoEngine::new(&theta0, &ZEROS, 8, &pairs, None, 1, &runs).unwrap();
        let err = sweep(&engine, &runs, u64::MAX, &Monitor::default()).unwrap_err();
        assert_eq!(err.to_string(), "sweep run 1 diverged at step 1: loss overflowed (lr=5e-324, beta=1e+308)");
    }

    #[test]
    fn a_summary_that_is_not_finite_fails_the_sweep() {
        // beta = 2e307: the loss on prompt 0 is 1e308, finite; two such pairs in the last
        // epoch sum to inf.
        let (theta0, _) = lopsided();
        let mut pairs = DpoPairs::new();
        pairs.push(0, &[0], &[1]);
        pairs.push(0, &[0], &[1]);
        let params = DpoParams::new(2e307, 5e-324, LossType::Sigmoid, 0.0).unwrap();
        let history = train_dpo(&mut theta0.to_vec(), &ZEROS, 8, &pairs, 1, &params, None, &Monitor::default());
        assert!(history.unwrap().loss.iter().all(|&l| l > 1e307 && l.is_finite()));
        let runs = [DpoRun { params, epochs: 1, shuffle_seed: None }];
        for (weights, expected) in [(None, "last_epoch_loss"), (Some(&WEIGHTS[..]), "last_epoch_loss")] {
            let engine = DpoEngine::new(&theta0, &ZEROS, 8, &pairs, weights, 1, &runs).unwrap();
            let err = sweep(&engine, &runs, u64::MAX, &Monitor::default()).unwrap_err();
            let message = format!("sweep run 0 diverged: {expected} overflowed (lr=5e-324, beta=2e+307)");
            assert_eq!(err.to_string(), message);
        }
    }

    // ------------------------------------------------------------------------- the sweep

    const F: usize = DPO_HISTORY_FIELDS.len();

    fn runs() -> Vec<DpoRun> {
        let mut runs = Vec::new();
        for (k, loss_type) in LossType::ALL.into_iter().enumerate() {
            let ls = if matches!(loss_type, LossType::Sigmoid | LossType::Robust) { 0.1 } else { 0.0 };
            for seed in [None, Some(3), Some(1 << 40)] {
                runs.push(DpoRun {
                    params: DpoParams::new([0.1, 0.5][k % 2], 0.05, loss_type, ls).unwrap(),
                    epochs: 1 + k % 3,
                    shuffle_seed: seed.map(seed_key),
                });
            }
        }
        runs
    }

    fn run_sweep(pairs: &DpoPairs, weights: Option<&[f64]>, record_every: usize, runs: &[DpoRun]) -> SweepOutput {
        let engine = DpoEngine::new(&ZEROS, &ZEROS, 8, pairs, weights, record_every, runs).unwrap();
        sweep(&engine, runs, u64::MAX, &Monitor::default()).unwrap()
    }

    #[test]
    fn sweep_runs_are_the_single_runs_padded_to_the_longest() {
        let pairs = lesson_pairs(50);
        let runs = runs();
        let out = run_sweep(&pairs, Some(&WEIGHTS), 1, &runs);
        assert_eq!(out.n_kept, 150);
        for (r, run) in runs.iter().enumerate() {
            let mut theta = ZEROS.to_vec();
            let history = train_dpo(
                &mut theta,
                &ZEROS,
                8,
                &pairs,
                run.epochs,
                &run.params,
                run.shuffle_seed.as_deref(),
                &Monitor::default(),
            )
            .unwrap();
            assert_eq!(out.final_params[r * 24..(r + 1) * 24], theta[..], "run {r}");
            let steps = history.loss.len();
            let hist = &out.history[r * F * 150..(r + 1) * F * 150];
            let prompts: Vec<u32> = hist[..steps].iter().map(|&p| p as u32).collect();
            assert_eq!(prompts, history.prompt);
            assert_eq!(hist[150..150 + steps], history.loss[..]);
            assert_eq!(hist[300..300 + steps], history.chosen[..]);
            assert_eq!(hist[750..750 + steps], history.accuracy[..]);
            assert!(hist[steps..150].iter().all(|v| v.is_nan()));
            assert!(hist[150 + steps..300].iter().all(|v| v.is_nan()));
            let summary = &out.summary[r * 5..(r + 1) * 5];
            assert_eq!(summary[0], expected_score(&theta, &WEIGHTS).unwrap());
            assert_eq!(summary[1], policy_kl(&theta, &ZEROS, 8).unwrap());
            let last = steps - 50..steps;
            assert!((summary[2] - history.loss[last.clone()].iter().sum::<f64>() / 50.0).abs() < 1e-12);
            assert!((summary[3] - history.accuracy[last].iter().sum::<f64>() / 50.0).abs() < 1e-12);
        }
        let none = run_sweep(&pairs, None, 0, &runs);
        // Without a reward model there is no final score: the other fields, the same values.
        assert!(none.history.is_empty());
        assert_eq!(none.summary_fields, &DPO_SUMMARY_FIELDS[1..]);
        for r in 0..runs.len() {
            assert_eq!(none.summary[r * 4..(r + 1) * 4], out.summary[r * 5 + 1..(r + 1) * 5]);
        }
        assert_eq!(none.final_params, out.final_params);
    }

    #[test]
    fn the_sweep_does_not_depend_on_the_thread_count() {
        let pairs = lesson_pairs(40);
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let in_pool = |threads| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| run_sweep(&pairs, None, 3, &runs()))
        };
        let one = in_pool(1);
        for threads in [2, 5] {
            let many = in_pool(threads);
            // NaN padding compares unequal: compare bit patterns.
            assert_eq!(bits(&many.history), bits(&one.history), "{threads} threads");
            assert_eq!(bits(&many.summary), bits(&one.summary));
            assert_eq!(many.final_params, one.final_params);
        }
    }

    #[test]
    fn progress_counts_every_step_and_cancelling_stops() {
        let pairs = lesson_pairs(30);
        let runs = runs();
        let engine = DpoEngine::new(&ZEROS, &ZEROS, 8, &pairs, None, 0, &runs).unwrap();
        let monitor = Monitor::default();
        sweep(&engine, &runs, u64::MAX, &monitor).unwrap();
        let expected: usize = runs.iter().map(|r| r.epochs * 30).sum();
        assert_eq!(monitor.steps_done.load(std::sync::atomic::Ordering::Relaxed), expected as u64);
        let cancelled = Monitor::default();
        cancelled.cancel();
        assert_eq!(sweep(&engine, &runs, u64::MAX, &cancelled), Err(Error::Cancelled));
    }

    #[test]
    fn bad_sweeps_are_refused() {
        let pairs = lesson_pairs(5);
        let new = |weights, runs: &[DpoRun]| DpoEngine::new(&ZEROS, &ZEROS, 8, &pairs, weights, 1, runs);
        let zero_epochs = DpoRun { epochs: 0, ..runs()[0].clone() };
        assert!(new(None, &[zero_epochs]).unwrap_err().to_string().contains("epochs"));
        assert!(new(Some(&WEIGHTS[..3]), &runs()).unwrap_err().to_string().contains('w'));
        let empty = DpoPairs::new();
        assert!(DpoEngine::new(&ZEROS, &ZEROS, 8, &empty, None, 1, &runs()).is_err());
        let wild = [DpoRun { params: DpoParams::new(1e-3, 1e6, LossType::Ipo, 0.0).unwrap(), ..runs()[0].clone() }];
        let mut wild_runs = runs();
        wild_runs.extend(wild.iter().cloned().map(|r| DpoRun { epochs: 50, ..r }));
        let pairs = lesson_pairs(60);
        let engine = DpoEngine::new(&ZEROS, &ZEROS, 8, &pairs, None, 1, &wild_runs).unwrap();
        let err = sweep(&engine, &wild_runs, u64::MAX, &Monitor::default()).unwrap_err();
        let expected = format!("sweep run {} diverged at step ", wild_runs.len() - 1);
        assert!(err.to_string().starts_with(&expected), "{err}");
        assert!(err.to_string().ends_with(": logits overflowed (lr=1000000.0, beta=0.001)"), "{err}");
    }
}
