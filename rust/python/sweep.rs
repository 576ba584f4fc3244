//! The sweep entry points: convert the grid, run it off the GIL on a rayon pool, stay
//! interruptible, report progress, hand numpy arrays back.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use numpy::{IntoPyArray, PyArrayMethods};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::convert::{policy_table, vocab_weights, SeedKey};
use super::kl_controller;
use crate::ppo::PpoParams;
use crate::sweep::{self, Monitor, RunSpec, Simd, SweepSpec, SUMMARY_FIELDS};

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
                            monitor.cancel.store(true, Ordering::Relaxed);
                        }
                    }
                    if let (Some(callback), None) = (&progress, &interrupted) {
                        let done = monitor.steps_done.load(Ordering::Relaxed);
                        if done > reported {
                            if let Err(err) = callback.call1(py, (done - reported,)) {
                                interrupted = Some(err);
                                monitor.cancel.store(true, Ordering::Relaxed);
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
        let done = monitor.steps_done.load(Ordering::Relaxed);
        if done > reported {
            callback.call1(py, (done - reported,))?;
        }
    }
    Ok(result?)
}

fn simd_level(simd: Option<&str>) -> PyResult<Simd> {
    let Some(name) = simd else {
        return Ok(Simd::detect());
    };
    let level = Simd::available().into_iter().find(|level| level.name() == name);
    level.ok_or_else(|| {
        let names: Vec<&str> = Simd::available().iter().map(|l| l.name()).collect();
        PyValueError::new_err(format!("simd must be one of {names:?} on this CPU, got '{name}'"))
    })
}

/// The vector paths this CPU can run, best last (`simd=` values of `sweep_rlhf`).
#[pyfunction]
pub fn simd_paths() -> Vec<&'static str> {
    Simd::available().iter().map(|l| l.name()).collect()
}

/// One sweep run: `(seed, eps, lr, ppo_epochs, kl_ctl, beta, target, horizon, kl_penalty,
/// vf_coef, cliprange_value)`.
type RunTuple = (SeedKey, f64, f64, i64, String, f64, f64, f64, String, f64, f64);

/// Every run of `runs` from the same starting policy, in parallel. Returns run-major numpy
/// arrays: the kept history `[run, kept_step]`, `final_theta [run, P, V]` and `summary
/// [run, field]` (fields in `SUMMARY_FIELDS`).
#[pyfunction]
#[pyo3(signature = (theta, r#ref, w, steps, runs, record_every=1, exact=false, simd=None, n_threads=None, progress=None))]
#[allow(clippy::too_many_arguments)]
pub fn sweep_rlhf<'py>(
    py: Python<'py>,
    theta: &Bound<'py, PyAny>,
    r#ref: &Bound<'py, PyAny>,
    w: &Bound<'py, PyAny>,
    steps: i64,
    runs: Vec<RunTuple>,
    record_every: i64,
    exact: bool,
    simd: Option<&str>,
    n_threads: Option<usize>,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let theta0 = policy_table("theta", theta, false)?;
    let reference = policy_table("ref", r#ref, false)?;
    let weights = vocab_weights(w)?;
    crate::grpo::check_not_length_only(&weights)?;
    if steps < 1 {
        return Err(PyValueError::new_err(format!("steps must be >= 1, got {steps}")));
    }
    if record_every < 0 {
        return Err(PyValueError::new_err(format!("record_every must be >= 0, got {record_every}")));
    }
    let specs = runs
        .into_iter()
        .map(|(seed, eps, lr, ppo_epochs, kl_ctl, beta, target, horizon, kl_penalty, vf_coef, cliprange_value)| {
            Ok(RunSpec {
                seed_key: seed.0,
                params: PpoParams::new(eps, lr, ppo_epochs)?.completed(&kl_penalty, vf_coef, cliprange_value)?,
                controller: kl_controller(&kl_ctl, beta, target, horizon)?,
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    let spec = SweepSpec {
        theta0: &theta0,
        reference: &reference,
        weights: &weights,
        steps: steps as usize,
        record_every: record_every as usize,
        exact,
    };
    let simd = simd_level(simd)?;
    let monitor = Monitor::default();
    let out = run_detached(py, &monitor, n_threads, progress, || sweep::sweep_rlhf(&spec, &specs, simd, &monitor))?;

    let (n, kept) = (out.n_runs, out.n_recorded);
    let result = PyDict::new(py);
    result.set_item("prompt", out.prompt.into_pyarray(py).reshape([n, kept])?)?;
    result.set_item("token", out.token.into_pyarray(py).reshape([n, kept])?)?;
    for (name, values) in [
        ("score", out.score),
        ("kl", out.kl),
        ("reward", out.reward),
        ("clip_frac", out.clip_frac),
        ("beta", out.beta),
        ("mean_kl", out.mean_kl),
        ("kl_penalty", out.kl_penalty),
        ("value_loss", out.value_loss),
    ] {
        result.set_item(name, values.into_pyarray(py).reshape([n, kept])?)?;
    }
    let prompts = theta0.len() / sweep::VOCAB_SIZE;
    result.set_item("final_theta", out.final_theta.into_pyarray(py).reshape([n, prompts, sweep::VOCAB_SIZE])?)?;
    result.set_item("summary", out.summary.into_pyarray(py).reshape([n, SUMMARY_FIELDS.len()])?)?;
    result.set_item("summary_fields", PyList::new(py, SUMMARY_FIELDS)?)?;
    result.set_item("simd", simd.name())?;
    Ok(result)
}
