//! Bradley-Terry reward models: the training loop [`train_rm`], and the sweep engine
//! [`RmEngine`] that trains many at once.

use super::driver::{Engine, Monitor, RunsOut};
use crate::error::{overflowed, positive, py_float, Error, Result};
use crate::methods::bradley_terry::Preferences;

/// `epochs` passes of `rm_train_step` over the pairs in order, updating `w` in place.
///
/// Where every bag has at most four distinct tokens and `lr * |d|^2 <= 8` for every pair,
/// the passes take the shortcut described in `methods/bradley_terry/preferences.rs`, within a
/// few ulps per step of the reference; otherwise they follow the reference operation for
/// operation. An epoch that leaves a weight overflowed (see [`crate::error::overflowed`]) is
/// an error, `w` as that epoch left it; `monitor` counts the steps and stops the passes when
/// cancelled.
pub fn train_rm(pairs: &Preferences, epochs: usize, lr: f64, w: &mut [f64], monitor: &Monitor) -> Result<()> {
    let lr = positive("lr", lr)?;
    if pairs.is_empty() {
        return Err(Error::invalid("pairs must not be empty"));
    }
    check_vocabulary(pairs, w)?;
    fit(pairs, 0..pairs.len(), epochs, lr, w, monitor, "train_rm")
}

/// `epochs` passes over `pairs[range]`, each checked for overflow (the error begins with
/// `run_name`).
fn fit(
    pairs: &Preferences,
    range: std::ops::Range<usize>,
    epochs: usize,
    lr: f64,
    w: &mut [f64],
    monitor: &Monitor,
    run_name: &str,
) -> Result<()> {
    for epoch in 0..epochs {
        pairs.fit_epoch(range.clone(), lr, w, &mut |done| monitor.tick(done))?;
        if overflowed(w) {
            return Err(Error::Diverged(format!(
                "{run_name} diverged in epoch {epoch}: weights overflowed (lr={})",
                py_float(lr)
            )));
        }
    }
    Ok(())
}

fn check_vocabulary(pairs: &Preferences, w: &[f64]) -> Result<()> {
    if pairs.vocab_size() > w.len() {
        return Err(Error::invalid(format!(
            "w has {} weights but the pairs use token id {}",
            w.len(),
            pairs.vocab_size() - 1
        )));
    }
    Ok(())
}

/// One reward model of an RM sweep: SGD on `pairs[start..stop]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmRun {
    pub lr: f64,
    pub epochs: usize,
    pub start: usize,
    pub stop: usize,
}

/// Reward models trained from the same starting weights on ranges of one preference set:
/// each run is [`train_rm`] on `pairs[start..stop]`. Progress counts SGD steps.
#[derive(Clone, Copy, Debug)]
pub struct RmEngine<'a> {
    pub pairs: &'a Preferences,
    pub w0: &'a [f64],
}

impl<'a> RmEngine<'a> {
    /// Checks the starting weights against the pairs and every run's range and rate.
    pub fn new(pairs: &'a Preferences, w0: &'a [f64], runs: &[RmRun]) -> Result<Self> {
        check_vocabulary(pairs, w0)?;
        for run in runs {
            positive("lr", run.lr)?;
            if run.start > run.stop || run.stop > pairs.len() {
                return Err(Error::invalid(format!(
                    "pair range {}..{} is outside the {} pairs",
                    run.start,
                    run.stop,
                    pairs.len()
                )));
            }
        }
        Ok(RmEngine { pairs, w0 })
    }
}

impl Engine for RmEngine<'_> {
    type Run = RmRun;

    fn history_fields(&self) -> &'static [&'static str] {
        &[]
    }

    fn summary_fields(&self) -> &'static [&'static str] {
        &[]
    }

    fn kept_steps(&self, _: &[RmRun]) -> usize {
        0
    }

    fn params_shape(&self) -> Vec<usize> {
        vec![self.w0.len()]
    }

    fn run(&self, runs: &[RmRun], out: RunsOut<'_>, monitor: &Monitor) -> Result<()> {
        for (r, (run, w)) in runs.iter().zip(out.params.chunks_mut(self.w0.len().max(1))).enumerate() {
            w.copy_from_slice(self.w0);
            let run_name = format!("sweep run {}", out.first_run + r);
            fit(self.pairs, run.start..run.stop, run.epochs, run.lr, w, monitor, &run_name)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::driver::sweep;
    use crate::lesson::tests::make_dataset;
    use crate::methods::bradley_terry::pairwise_accuracy;

    #[test]
    fn training_separates_good_from_bad_and_checks_arguments() {
        let mut prefs = Preferences::new();
        prefs.push(0, &[0, 1], &[2, 3]);
        let mut w = vec![0.0; 4];
        let monitor = Monitor::default();
        train_rm(&prefs, 50, 0.1, &mut w, &monitor).unwrap();
        assert_eq!(monitor.steps_done.load(std::sync::atomic::Ordering::Relaxed), 50);
        assert!(w[0] > 0.0 && w[2] < 0.0);
        assert_eq!(pairwise_accuracy(&w, &prefs).unwrap(), 1.0);
        assert!(train_rm(&prefs, 1, f64::NAN, &mut w, &monitor).unwrap_err().to_string().contains("lr"));
        assert!(train_rm(&prefs, 1, 0.1, &mut [0.0; 2], &monitor).is_err());
        assert!(pairwise_accuracy(&w, &Preferences::new()).is_err());
        let empty = train_rm(&Preferences::new(), 1, 0.1, &mut w, &monitor).unwrap_err();
        assert_eq!(empty, Error::invalid("pairs must not be empty"));
    }

    #[test]
    fn overflowing_weights_and_cancelling_stop_training() {
        let pairs = make_dataset(300, 0);
        let mut w = [0.0; 8];
        let err = train_rm(&pairs, 5, 1e300, &mut w, &Monitor::default()).unwrap_err();
        assert_eq!(err, Error::Diverged("train_rm diverged in epoch 0: weights overflowed (lr=1e+300)".to_owned()));
        let cancelled = Monitor::default();
        cancelled.cancel();
        assert_eq!(train_rm(&pairs, 5, 0.1, &mut [0.0; 8], &cancelled), Err(Error::Cancelled));
        let runs =
            [RmRun { lr: 0.1, epochs: 2, start: 0, stop: 300 }, RmRun { lr: 1e300, epochs: 2, start: 0, stop: 300 }];
        let engine = RmEngine::new(&pairs, &[0.0; 8], &runs).unwrap();
        let err = sweep(&engine, &runs, u64::MAX, &Monitor::default()).unwrap_err();
        assert_eq!(err.to_string(), "sweep run 1 diverged in epoch 0: weights overflowed (lr=1e+300)");
    }

    #[test]
    fn rm_sweep_matches_sequential_training() {
        let pairs = make_dataset(300, 0);
        let runs = [
            RmRun { lr: 0.1, epochs: 5, start: 0, stop: 300 },
            RmRun { lr: 0.01, epochs: 2, start: 0, stop: 100 },
            RmRun { lr: 0.5, epochs: 0, start: 0, stop: 300 },
        ];
        let engine = RmEngine::new(&pairs, &[0.0; 8], &runs).unwrap();
        let monitor = Monitor::default();
        let out = sweep(&engine, &runs, u64::MAX, &monitor).unwrap();
        assert_eq!(out.params_shape, [8]);
        for (k, run) in runs.iter().enumerate() {
            let mut w = [0.0; 8];
            let mut subset = Preferences::new();
            for i in run.start..run.stop {
                let (chosen, rejected) = pairs.responses(i);
                subset.push(0, &chosen, &rejected);
            }
            train_rm(&subset, run.epochs, run.lr, &mut w, &Monitor::default()).unwrap();
            assert_eq!(&out.final_params[k * 8..(k + 1) * 8], &w);
        }
        assert_eq!(monitor.steps_done.load(std::sync::atomic::Ordering::Relaxed), 5 * 300 + 2 * 100);
        let bad = [RmRun { lr: 0.1, epochs: 1, start: 0, stop: 301 }];
        assert!(RmEngine::new(&pairs, &[0.0; 8], &bad).unwrap_err().to_string().contains("outside"));
        assert!(RmEngine::new(&pairs, &[0.0; 4], &runs).unwrap_err().to_string().contains("w has 4 weights"));
    }
}
