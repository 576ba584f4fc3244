//! The one sweep driver: any engine over a list of runs, in parallel on the rayon pool.
//!
//! An [`Engine`] says what its runs record (named history fields, final parameters, named
//! summaries) and runs a group of them, writing into the group's rows of the outputs; the
//! driver checks the sizes before anything is allocated, hands every group its rows and
//! collects the errors. Every sweep returns the same [`SweepOutput`]: `history[run, field,
//! kept]`, `final_params[run, ...]`, `summary[run, field]`. No group reads another's state,
//! so the numbers do not depend on the thread count or the scheduling; errors are reported
//! for the first failing run in run order, whichever thread met it first.

use std::alloc::{alloc_zeroed, Layout};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rayon::prelude::*;

use crate::error::{drop_in_background, Error, Result};

/// Progress and cancellation shared between a sweep and whoever waits for it.
#[derive(Debug, Default)]
pub struct Monitor {
    /// Run-steps finished so far.
    pub steps_done: AtomicU64,
    cancelled: AtomicBool,
}

impl Monitor {
    /// Counts `steps` more finished run-steps; an error once cancellation was asked for, so an
    /// engine's loop stops at its next tick.
    #[inline]
    pub fn tick(&self, steps: u64) -> Result<()> {
        self.steps_done.fetch_add(steps, Ordering::Relaxed);
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        Ok(())
    }

    /// Asks every engine loop to stop at its next tick.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// An error once cancellation was asked for (a tick that finished no step).
    #[inline]
    pub fn check(&self) -> Result<()> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        Ok(())
    }
}

/// Work between two looks at the monitor, in the loops' own units (about one multiply-add
/// on one token each): 2^16 of them take a few dozen microseconds, so a cancelled loop
/// stops within a millisecond or so whatever its settings, and the look (an atomic add and
/// a load) costs nothing measurable.
pub(crate) const TICK_WORK: u64 = 1 << 16;

/// Ticks a [`Monitor`] once per [`TICK_WORK`] units of work rather than once per step, so
/// a step costing one unit or a million is looked at equally often.
pub(crate) struct Ticker<'a> {
    monitor: &'a Monitor,
    steps: u64,
    work: u64,
}

impl<'a> Ticker<'a> {
    pub(crate) fn new(monitor: &'a Monitor) -> Self {
        Ticker { monitor, steps: 0, work: 0 }
    }

    /// Counts `steps` finished steps that took `work` units; ticks once enough work piled up.
    #[inline(always)]
    pub(crate) fn advance(&mut self, steps: u64, work: u64) -> Result<()> {
        self.steps += steps;
        self.work += work;
        if self.work >= TICK_WORK {
            return self.flush();
        }
        Ok(())
    }

    /// Hands the steps counted so far to the monitor (call once more at the end of a loop).
    pub(crate) fn flush(&mut self) -> Result<()> {
        let steps = std::mem::take(&mut self.steps);
        self.work = 0;
        self.monitor.tick(steps)
    }
}

/// A group's rows of the sweep's outputs: its runs' history, final parameters and summaries.
#[derive(Debug)]
pub struct RunsOut<'a> {
    /// The index of the group's first run in the sweep (for messages).
    pub first_run: usize,
    /// `[run, field, kept]`, zeroed.
    pub history: &'a mut [f64],
    /// `[run, param]`, zeroed.
    pub params: &'a mut [f64],
    /// `[run, field]`, zeroed.
    pub summary: &'a mut [f64],
}

/// A kind of run the driver can sweep.
pub trait Engine: Sync {
    /// One run's own settings.
    type Run: Sync;
    /// Runs one call of [`Engine::run`] advances together (the PPO lane engine: eight).
    const GROUP: usize = 1;

    /// The per-step series each run records, in the order of the history's middle axis.
    fn history_fields(&self) -> &'static [&'static str];
    /// The per-run results, in the order of the summary's last axis.
    fn summary_fields(&self) -> &'static [&'static str];
    /// Kept steps per run (the longest run's, where runs differ in length).
    fn kept_steps(&self, runs: &[Self::Run]) -> usize;
    /// The shape of one run's final parameters (`[]`: none).
    fn params_shape(&self) -> Vec<usize>;
    /// Runs `runs` (at most [`Engine::GROUP`] of them), writing each one's kept steps, final
    /// parameters and summary into `out`, and ticking `monitor` as it goes.
    fn run(&self, runs: &[Self::Run], out: RunsOut<'_>, monitor: &Monitor) -> Result<()>;
}

/// A run's summary as the engine computed it at the end, checked: the first field (in
/// `fields`' order) that is not finite ends the sweep with `"{run_name} diverged: {field}
/// overflowed (lr=..., beta=...)"`.
pub(crate) fn check_summary(run_name: &str, fields: &[&str], summary: &[f64], lr: f64, beta: f64) -> Result<()> {
    match fields.iter().zip(summary).find(|(_, x)| !x.is_finite()) {
        Some((field, _)) => Err(crate::error::record_overflowed(&format!("{run_name} diverged"), field, lr, beta)),
        None => Ok(()),
    }
}

/// Which steps a history keeps: `k-1, 2k-1, ...` for `record_every = k` (none for 0),
/// counted down rather than divided every step.
pub(crate) struct Keep {
    every: usize,
    countdown: usize,
    recorded: usize,
}

impl Keep {
    pub(crate) fn new(every: usize) -> Self {
        Keep { every, countdown: every, recorded: 0 }
    }

    /// The history slot of the step just taken, if it is kept.
    #[inline(always)]
    pub(crate) fn slot(&mut self) -> Option<usize> {
        if self.every == 0 {
            return None;
        }
        self.countdown -= 1;
        if self.countdown > 0 {
            return None;
        }
        self.countdown = self.every;
        self.recorded += 1;
        Some(self.recorded - 1)
    }

    /// How many steps were kept so far.
    pub(crate) fn recorded(&self) -> usize {
        self.recorded
    }
}

/// Everything a sweep returns, run-major.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SweepOutput {
    pub n_runs: usize,
    pub history_fields: &'static [&'static str],
    /// Kept steps per run.
    pub n_kept: usize,
    /// `[run, field, kept]`.
    pub history: Vec<f64>,
    pub params_shape: Vec<usize>,
    /// `[run, *params_shape]`.
    pub final_params: Vec<f64>,
    pub summary_fields: &'static [&'static str],
    /// `[run, field]`.
    pub summary: Vec<f64>,
}

#[cfg(test)]
impl SweepOutput {
    /// Run `run`'s history field `field` (in `history_fields` order), all kept steps.
    pub(crate) fn kept(&self, run: usize, field: usize) -> &[f64] {
        let start = (run * self.history_fields.len() + field) * self.n_kept;
        &self.history[start..start + self.n_kept]
    }
}

/// `n` consecutive pieces of `len` from `buf` (empty pieces when `len` is 0).
fn pieces(buf: &mut [f64], len: usize, n: usize) -> Vec<&mut [f64]> {
    if len == 0 {
        (0..n).map(|_| <&mut [f64]>::default()).collect()
    } else {
        buf.chunks_mut(len).collect()
    }
}

/// Asks the kernel to back the 2 MiB-aligned part of `buf` with transparent huge pages, so
/// that the first writes fault in a few huge pages instead of thousands of small ones.
#[cfg(target_os = "linux")]
fn advise_huge_pages(buf: &mut [f64]) {
    const HUGE_PAGE: usize = 2 << 20;
    let start = buf.as_mut_ptr() as usize;
    let (first, last) =
        (start.next_multiple_of(HUGE_PAGE), (start + std::mem::size_of_val(buf)) / HUGE_PAGE * HUGE_PAGE);
    if last > first {
        // SAFETY: `first..last` lies inside `buf`'s allocation; MADV_HUGEPAGE only changes how
        // those pages are backed, never their contents, and its failure leaves them as they were.
        unsafe { libc::madvise(first as *mut libc::c_void, last - first, libc::MADV_HUGEPAGE) };
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_: &mut [f64]) {}

/// `len` zeros, or [`Error::OutOfMemory`] naming `what` if the system refuses them. The
/// allocator's zeroed memory (`calloc`): a large block comes as fresh pages that the kernel
/// zeroes on their first touch, so no pass over it is made here, and the first writes of
/// the runs fault it in, spread over the threads that fill the rows and between their ticks
/// (a pass here took seconds for a large history, before any progress or Ctrl-C).
fn zeroed(len: usize, what: &str) -> Result<Vec<f64>> {
    let refused = || {
        let bytes = u128::from(len as u64) * std::mem::size_of::<f64>() as u128;
        Error::OutOfMemory(format!("cannot allocate {what} ({bytes} bytes)"))
    };
    if len == 0 {
        return Ok(Vec::new());
    }
    let layout = Layout::array::<f64>(len).map_err(|_| refused())?;
    // SAFETY: `layout` has a non-zero size (`len > 0` and an f64 is 8 bytes).
    let ptr = unsafe { alloc_zeroed(layout) }.cast::<f64>();
    if ptr.is_null() {
        return Err(refused());
    }
    // SAFETY: `ptr` comes from the global allocator with `Layout::array::<f64>(len)`, the
    // layout of a `Vec<f64>` of capacity `len`, and all `len` values are initialised: an f64
    // whose bits are all zero is 0.0.
    let mut buf = unsafe { Vec::from_raw_parts(ptr, len, len) };
    advise_huge_pages(&mut buf);
    Ok(buf)
}

fn too_big(what: &str) -> Error {
    Error::invalid(format!("this sweep's {what} does not fit in memory"))
}

/// Every run of `runs` with `engine`, on the current rayon pool, refusing a sweep whose
/// outputs would need more than `max_memory` bytes before any work.
pub fn sweep<E: Engine>(engine: &E, runs: &[E::Run], max_memory: u64, monitor: &Monitor) -> Result<SweepOutput> {
    if runs.is_empty() {
        return Err(Error::invalid("a sweep needs at least one run"));
    }
    let n_runs = runs.len();
    let (history_fields, summary_fields) = (engine.history_fields(), engine.summary_fields());
    let n_kept = engine.kept_steps(runs);
    let params_shape = engine.params_shape();
    let n_params = params_shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(|| too_big("policy"))?;
    let history_per_run = history_fields.len().checked_mul(n_kept).ok_or_else(|| too_big("history"))?;
    let per_run = history_per_run
        .checked_add(n_params)
        .and_then(|n| n.checked_add(summary_fields.len()))
        .ok_or_else(|| too_big("history"))?;
    let bytes = per_run.checked_mul(n_runs).and_then(|n| n.checked_mul(8)).ok_or_else(|| too_big("history"))?;
    if bytes as u64 > max_memory {
        return Err(Error::invalid(format!(
            "this sweep would keep {bytes} bytes ({n_runs} runs x {n_kept} kept steps), over max_memory={max_memory}: \
             pass record_every=k to keep every k-th step (or 0 for summaries only)"
        )));
    }

    // The products below fit: their sum times 8 was checked above.
    let mut history = zeroed(n_runs * history_per_run, "this sweep's history")?;
    let mut final_params = zeroed(n_runs * n_params, "this sweep's final parameters")?;
    let mut summary = zeroed(n_runs * summary_fields.len(), "this sweep's summaries")?;
    let n_groups = n_runs.div_ceil(E::GROUP);
    let groups: Vec<_> = runs
        .chunks(E::GROUP)
        .enumerate()
        .zip(pieces(&mut history, E::GROUP * history_per_run, n_groups))
        .zip(pieces(&mut final_params, E::GROUP * n_params, n_groups))
        .zip(pieces(&mut summary, E::GROUP * summary_fields.len(), n_groups))
        .map(|((((g, runs), history), params), summary)| {
            (runs, RunsOut { first_run: g * E::GROUP, history, params, summary })
        })
        .collect();
    // A group not yet started when the sweep is cancelled does not start.
    let outcomes: Vec<Result<()>> = groups
        .into_par_iter()
        .map(|(runs, out)| monitor.check().and_then(|()| engine.run(runs, out, monitor)))
        .collect();
    // The first error in run order, not the first to happen: the same whatever the threads.
    if let Err(err) = outcomes.into_iter().collect::<Result<()>>() {
        drop_in_background((history, final_params, summary));
        return Err(err);
    }
    Ok(SweepOutput { n_runs, history_fields, n_kept, history, params_shape, final_params, summary_fields, summary })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each run counts to its length, recording every step it reaches; runs shorter than the
    /// longest leave their tail at zero.
    struct Counting;

    impl Engine for Counting {
        type Run = usize;
        const GROUP: usize = 3;

        fn history_fields(&self) -> &'static [&'static str] {
            &["step", "twice"]
        }
        fn summary_fields(&self) -> &'static [&'static str] {
            &["length"]
        }
        fn kept_steps(&self, runs: &[usize]) -> usize {
            runs.iter().copied().max().unwrap_or(0)
        }
        fn params_shape(&self) -> Vec<usize> {
            vec![2]
        }
        fn run(&self, runs: &[usize], out: RunsOut<'_>, monitor: &Monitor) -> Result<()> {
            let kept = out.history.len() / (2 * runs.len());
            for (r, &length) in runs.iter().enumerate() {
                if length == 13 {
                    return Err(Error::invalid(format!("run {} is unlucky", out.first_run + r)));
                }
                for t in 0..length {
                    out.history[(2 * r) * kept + t] = t as f64;
                    out.history[(2 * r + 1) * kept + t] = 2.0 * t as f64;
                    monitor.tick(1)?;
                }
                out.params[2 * r..2 * r + 2].copy_from_slice(&[r as f64, out.first_run as f64]);
                out.summary[r] = length as f64;
            }
            Ok(())
        }
    }

    #[test]
    fn groups_write_their_own_rows_in_run_order() {
        let runs = [4, 1, 3, 4, 2, 0, 4];
        let monitor = Monitor::default();
        let out = sweep(&Counting, &runs, u64::MAX, &monitor).unwrap();
        assert_eq!((out.n_runs, out.n_kept, out.params_shape.clone()), (7, 4, vec![2]));
        assert_eq!(out.summary, [4.0, 1.0, 3.0, 4.0, 2.0, 0.0, 4.0]);
        assert_eq!(out.history[8 * 2..8 * 3], [0.0, 1.0, 2.0, 0.0, 0.0, 2.0, 4.0, 0.0]); // run 2
        assert_eq!(out.final_params[2 * 4..2 * 5], [1.0, 3.0]); // run 4: second of the group at 3
        assert_eq!(monitor.steps_done.load(Ordering::Relaxed), 18);
    }

    #[test]
    fn the_first_failing_run_is_reported_whatever_the_threads() {
        let runs = [1, 13, 2, 2, 2, 2, 13, 1];
        for threads in [1, 4] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let err = pool.install(|| sweep(&Counting, &runs, u64::MAX, &Monitor::default())).unwrap_err();
            assert_eq!(err.to_string(), "run 1 is unlucky");
        }
    }

    #[test]
    fn sizes_are_checked_before_anything_is_allocated() {
        let err = sweep(&Counting, &[usize::MAX / 2], u64::MAX, &Monitor::default()).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
        let err = sweep(&Counting, &[100; 10], 1000, &Monitor::default()).unwrap_err();
        assert!(err.to_string().contains("max_memory=1000"), "{err}");
        assert!(sweep(&Counting, &[], u64::MAX, &Monitor::default()).is_err());
    }

    #[test]
    fn keep_picks_every_kth_step() {
        let mut every_third = Keep::new(3);
        let slots: Vec<Option<usize>> = (0..7).map(|_| every_third.slot()).collect();
        assert_eq!(slots, [None, None, Some(0), None, None, Some(1), None]);
        assert_eq!(every_third.recorded(), 2);
        let mut none = Keep::new(0);
        assert!((0..5).all(|_| none.slot().is_none()));
    }

    #[test]
    fn the_ticker_looks_at_the_monitor_once_per_tick_of_work_and_counts_every_step() {
        let monitor = Monitor::default();
        let mut ticker = Ticker::new(&monitor);
        for _ in 0..10 {
            ticker.advance(1, TICK_WORK / 4).unwrap();
        }
        assert_eq!(monitor.steps_done.load(Ordering::Relaxed), 8); // two ticks of four steps
        ticker.flush().unwrap();
        assert_eq!(monitor.steps_done.load(Ordering::Relaxed), 10);
        monitor.cancel();
        assert_eq!(ticker.advance(1, 1), Ok(())); // not a tick yet
        assert_eq!(ticker.advance(0, TICK_WORK), Err(Error::Cancelled));
        assert_eq!(monitor.check(), Err(Error::Cancelled));
    }

    #[test]
    fn a_cancelled_sweep_stops() {
        let monitor = Monitor::default();
        monitor.cancel();
        assert_eq!(sweep(&Counting, &[5, 5], u64::MAX, &monitor), Err(Error::Cancelled));
    }
}
