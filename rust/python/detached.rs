//! The one way a long computation runs from Python: off the GIL, interruptible, with progress,
//! on a thread pool that survives `fork`.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::engines::driver::Monitor;

/// How often the waiting thread looks for Ctrl-C and reports progress.
const POLL: Duration = Duration::from_millis(25);

/// This process's pool and the process it belongs to.
struct ProcessPool {
    pid: u32,
    pool: Arc<ThreadPool>,
}

static PROCESS_POOL: Mutex<Option<ProcessPool>> = Mutex::new(None);

/// The pool of this process (`RAYON_NUM_THREADS` threads, else one per core), built on first
/// use and built again in a child after `fork`: a pool is its threads, `fork` copies none of
/// them, and an inherited pool would take jobs that no thread ever runs (rayon's global pool
/// hangs a forked child that way).
///
/// Called with the GIL held, so that no thread is inside the lock when Python forks (Python
/// forks holding the GIL): a child never inherits the lock taken.
fn process_pool() -> PyResult<Arc<ThreadPool>> {
    let mut slot = PROCESS_POOL.lock().unwrap_or_else(PoisonError::into_inner);
    let pid = std::process::id();
    if let Some(current) = slot.as_ref().filter(|current| current.pid == pid) {
        return Ok(Arc::clone(&current.pool));
    }
    // A parent's pool: its threads do not exist here, and dropping it would wake them through
    // locks they may have held at the fork. It stays unused instead.
    if let Some(inherited) = slot.take() {
        std::mem::forget(inherited);
    }
    let pool = Arc::new(
        ThreadPoolBuilder::new()
            .thread_name(|i| format!("rlhf_fast-{i}"))
            .build()
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the thread pool: {e}")))?,
    );
    *slot = Some(ProcessPool { pid, pool: Arc::clone(&pool) });
    Ok(pool)
}

/// Runs `work` on a pool thread with the GIL released — on this process's pool, or on a pool
/// of its own of `n_threads` threads — while this thread wakes every 25 ms to check for Ctrl-C
/// (which cancels `monitor`, so the work stops at its next tick, and re-raises
/// `KeyboardInterrupt`) and to hand the steps finished since its last look to `progress`.
/// Returns only once the work has finished: no worker outlives the call.
///
/// The outer error is the interruption (or an error of `progress`), after which the caller
/// leaves its arguments as they were; the inner result is the work's own.
pub fn run_detached<T: Send>(
    py: Python<'_>,
    monitor: &Monitor,
    n_threads: Option<usize>,
    progress: Option<&Bound<'_, PyAny>>,
    work: impl FnOnce() -> crate::Result<T> + Send,
) -> PyResult<crate::Result<T>> {
    let pool = match n_threads {
        Some(0) => return Err(PyValueError::new_err("n_threads must be >= 1, got 0")),
        Some(n) => Arc::new(
            ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .map_err(|e| PyRuntimeError::new_err(format!("cannot start {n} threads: {e}")))?,
        ),
        None => process_pool()?,
    };
    let progress = progress.map(|p| p.clone().unbind());
    let steps_done = || monitor.steps_done.load(Ordering::Relaxed);
    let mut reported = 0u64;
    let mut interrupted: Option<PyErr> = None;
    let finished = py.detach(|| {
        let (done_tx, done_rx) = mpsc::channel();
        pool.in_place_scope(|scope| {
            // The job goes to the pool's threads; this thread only waits and polls.
            scope.spawn(move |_| {
                let _ = done_tx.send(panic::catch_unwind(AssertUnwindSafe(work)));
            });
            loop {
                match done_rx.recv_timeout(POLL) {
                    Err(RecvTimeoutError::Timeout) => Python::attach(|py| {
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
                    }),
                    // `None`: the job ended without an answer (it cannot, short of an abort).
                    received => break received.ok(),
                }
            }
        })
    });
    if let Some(err) = interrupted {
        return Err(err);
    }
    let result = match finished {
        Some(Ok(result)) => result,
        Some(Err(_)) | None => return Err(PyRuntimeError::new_err("internal error: a worker panicked")),
    };
    if let (Some(callback), Ok(_)) = (&progress, &result) {
        let done = steps_done();
        if done > reported {
            callback.call1(py, (done - reported,))?;
        }
    }
    Ok(result)
}
