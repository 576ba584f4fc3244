//! The one way a long computation runs from Python: off the GIL, interruptible, with progress.

use std::sync::mpsc;
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::engines::driver::Monitor;

/// How often the waiting thread looks for Ctrl-C and reports progress.
const POLL: Duration = Duration::from_millis(25);

/// Runs `work` on a rayon pool (`n_threads` threads, or the global pool sized by
/// `RAYON_NUM_THREADS`) with the GIL released, while this thread wakes every 25 ms to
/// check for Ctrl-C (which cancels the work and re-raises `KeyboardInterrupt`) and to hand
/// the steps finished since its last look to `progress`.
pub fn run_detached<T: Send>(
    py: Python<'_>,
    monitor: &Monitor,
    n_threads: Option<usize>,
    progress: Option<&Bound<'_, PyAny>>,
    work: impl FnOnce() -> crate::Result<T> + Send,
) -> PyResult<T> {
    let pool = match n_threads {
        Some(0) => return Err(PyValueError::new_err("n_threads must be >= 1, got 0")),
        Some(n) => Some(
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .map_err(|e| PyRuntimeError::new_err(format!("cannot start {n} threads: {e}")))?,
        ),
        None => None,
    };
    let progress = progress.map(|p| p.clone().unbind());
    let steps_done = || monitor.steps_done.load(std::sync::atomic::Ordering::Relaxed);
    let mut reported = 0u64;
    let mut interrupted: Option<PyErr> = None;
    let outcome = py.detach(|| {
        std::thread::scope(|scope| {
            let (done_tx, done_rx) = mpsc::channel::<()>();
            let worker = scope.spawn(move || {
                let result = match &pool {
                    Some(pool) => pool.install(work),
                    None => work(),
                };
                let _ = done_tx.send(());
                result
            });
            while let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(POLL) {
                Python::attach(|py| {
                    if interrupted.is_none() {
                        if let Err(err) = py.check_signals() {
                            interrupted = Some(err);
                            monitor.cancel();
                        }
                    }
                    if let (Some(callback), None) = (&progress, &interrupted) {
                        let done = steps_done();
                        if done > reported {
                            if let Err(err) = callback.call1(py, (done - reported,)) {
                                interrupted = Some(err);
                                monitor.cancel();
                            }
                            reported = done;
                        }
                    }
                });
            }
            worker.join()
        })
    });
    if let Some(err) = interrupted {
        return Err(err);
    }
    let result = outcome.map_err(|_| PyRuntimeError::new_err("internal error: a sweep worker panicked"))?;
    if let (Some(callback), Ok(_)) = (&progress, &result) {
        let done = steps_done();
        if done > reported {
            callback.call1(py, (done - reported,))?;
        }
    }
    Ok(result?)
}
