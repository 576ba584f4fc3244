//! The sweep entry points: convert a method's runs, hand them to the one driver off the GIL
//! on a rayon pool, stay interruptible, report progress, return the one output dict.

use numpy::{IntoPyArray, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::convert::{count, dpo_pairs, dpo_params, grpo_params, policy_table, vocab_weights, SeedKey};
use super::detached::run_detached;
use crate::engines::best_of_n::{BonEngine, BonRun};
use crate::engines::dpo::{DpoEngine, DpoRun};
use crate::engines::driver::{sweep, Engine, Monitor, SweepOutput};
use crate::engines::grpo::{GrpoEngine, GrpoRunSpec};
use crate::engines::ppo::{PpoEngine, PpoRun};
use crate::kernels::simd::Simd;
use crate::lesson::VOCAB;
use crate::methods::kl_control::KlController;
use crate::methods::ppo::PpoParams;
use crate::methods::reward_checks::check_not_length_only;

/// What every sweep entry point takes besides its own arguments.
pub struct SweepOptions<'py> {
    pub n_threads: Option<usize>,
    pub progress: Option<Bound<'py, PyAny>>,
    /// Bytes the outputs may take (no limit when `None`).
    pub max_memory: Option<u64>,
}

/// The one sweep binding: `runs` through `engine` on the driver, off the GIL, as the output
/// dict every sweep returns (`history [run, field, kept]`, `history_fields`, `final_params
/// [run, ...]`, `summary [run, field]`, `summary_fields`, `simd`).
pub fn run_sweep<'py, E: Engine>(
    py: Python<'py>,
    engine: &E,
    runs: &[E::Run],
    options: &SweepOptions<'py>,
    simd: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let monitor = Monitor::default();
    let max_memory = options.max_memory.unwrap_or(u64::MAX);
    let out = run_detached(py, &monitor, options.n_threads, options.progress.as_ref(), || {
        sweep(engine, runs, max_memory, &monitor)
    })??;
    output_dict(py, out, simd)
}

fn output_dict<'py>(py: Python<'py>, out: SweepOutput, simd: &str) -> PyResult<Bound<'py, PyDict>> {
    let SweepOutput { n_runs, history_fields, n_kept, history, params_shape, final_params, summary_fields, summary } =
        out;
    let dict = PyDict::new(py);
    dict.set_item("history", history.into_pyarray(py).reshape([n_runs, history_fields.len(), n_kept])?)?;
    dict.set_item("history_fields", PyList::new(py, history_fields)?)?;
    let params_dims: Vec<usize> = std::iter::once(n_runs).chain(params_shape).collect();
    dict.set_item("final_params", final_params.into_pyarray(py).reshape(params_dims)?)?;
    dict.set_item("summary", summary.into_pyarray(py).reshape([n_runs, summary_fields.len()])?)?;
    dict.set_item("summary_fields", PyList::new(py, summary_fields)?)?;
    dict.set_item("simd", simd)?;
    Ok(dict)
}

/// The vector paths the sweep engine can run on this CPU, best last.
///
/// These are the values ``sweep_rlhf(..., simd=...)`` takes; ``"portable"`` is always there
/// (the reference backend has no vector unit: ``["python"]``).
///
/// Returns
/// -------
/// list[str]
///     Path names: ``"portable"``, then ``"avx2"`` and ``"avx512"`` where the CPU has them.
///
/// Examples
/// --------
/// >>> paths = rl.simd_paths()
/// >>> paths[0] in ("portable", "python")
/// True
#[pyfunction]
pub fn simd_paths() -> Vec<&'static str> {
    Simd::available().iter().map(|unit| unit.name()).collect()
}

/// One PPO sweep run: `(seed, eps, lr, ppo_epochs, kl_ctl, beta, target, horizon, kl_penalty,
/// vf_coef, cliprange_value)`.
type PpoRunTuple = (SeedKey, f64, f64, i64, String, f64, f64, f64, String, f64, f64);

/// Every PPO-RLHF run of `runs` from the same starting policy, in parallel.
#[pyfunction]
#[pyo3(signature = (
    theta, r#ref, w, steps, runs, record_every=1, exact=false, simd=None, n_threads=None, progress=None,
    max_memory=None,
))]
#[allow(clippy::too_many_arguments)]
pub fn sweep_rlhf<'py>(
    py: Python<'py>,
    theta: &Bound<'py, PyAny>,
    r#ref: &Bound<'py, PyAny>,
    w: &Bound<'py, PyAny>,
    steps: i64,
    runs: Vec<PpoRunTuple>,
    record_every: i64,
    exact: bool,
    simd: Option<&str>,
    n_threads: Option<usize>,
    progress: Option<Bound<'py, PyAny>>,
    max_memory: Option<u64>,
) -> PyResult<Bound<'py, PyDict>> {
    let theta0 = policy_table("theta", theta, false)?;
    let reference = policy_table("ref", r#ref, false)?;
    let weights = vocab_weights(w)?;
    check_not_length_only(&weights)?;
    let steps = count("steps", steps, 1)?;
    let record_every = count("record_every", record_every, 0)?;
    let runs = runs
        .into_iter()
        .map(|(seed, eps, lr, ppo_epochs, kl_ctl, beta, target, horizon, kl_penalty, vf_coef, cliprange_value)| {
            Ok(PpoRun {
                seed_key: seed.0,
                params: PpoParams::new(eps, lr, ppo_epochs)?.completed(&kl_penalty, vf_coef, cliprange_value)?,
                controller: KlController::make(&kl_ctl, beta, target, horizon)?,
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    let simd = match simd {
        Some(name) => Simd::named(name)?,
        None => Simd::detect(),
    };
    let engine = PpoEngine::new(&theta0, &reference, &weights, steps, record_every, exact, simd)?;
    let options = SweepOptions { n_threads, progress, max_memory };
    run_sweep(py, &engine, &runs, &options, simd.name())
}

/// One DPO sweep run: `(beta, lr, loss_type, label_smoothing, epochs, seed or None)`.
type DpoRunTuple = (f64, f64, String, f64, i64, Option<SeedKey>);

/// Every DPO run of `runs` over the same `pairs` from the same starting policy, in parallel.
/// A run shorter than the longest is NaN past its end; without `w` the summary has no
/// `final_score`.
#[pyfunction]
#[pyo3(signature = (theta, r#ref, pairs, runs, w=None, record_every=1, n_threads=None, progress=None, max_memory=None))]
#[allow(clippy::too_many_arguments)]
pub fn sweep_dpo<'py>(
    py: Python<'py>,
    theta: &Bound<'py, PyAny>,
    r#ref: &Bound<'py, PyAny>,
    pairs: &Bound<'py, PyAny>,
    runs: Vec<DpoRunTuple>,
    w: Option<&Bound<'py, PyAny>>,
    record_every: i64,
    n_threads: Option<usize>,
    progress: Option<Bound<'py, PyAny>>,
    max_memory: Option<u64>,
) -> PyResult<Bound<'py, PyDict>> {
    let theta0 = policy_table("theta", theta, false)?;
    let reference = policy_table("ref", r#ref, false)?;
    let pairs = dpo_pairs(pairs)?;
    let weights = w.map(vocab_weights).transpose()?;
    let record_every = count("record_every", record_every, 0)?;
    let runs = runs
        .into_iter()
        .map(|(beta, lr, loss_type, label_smoothing, epochs, seed)| {
            Ok(DpoRun {
                params: dpo_params(beta, lr, &loss_type, label_smoothing)?,
                epochs: count("epochs", epochs, 1)?,
                shuffle_seed: seed.map(|s| s.0),
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    let engine = DpoEngine::new(&theta0, &reference, VOCAB.len(), &pairs, weights.as_deref(), record_every, &runs)?;
    let options = SweepOptions { n_threads, progress, max_memory };
    run_sweep(py, &engine, &runs, &options, "scalar")
}

/// One GRPO sweep run: `(seed, num_generations, beta, epsilon, epsilon_high or None, lr,
/// scale_rewards, num_iterations)`.
type GrpoRunTuple = (SeedKey, i64, f64, f64, Option<f64>, f64, String, i64);

/// Every GRPO run of `runs` from the same starting policy, in parallel.
#[pyfunction]
#[pyo3(signature = (theta, r#ref, w, steps, runs, record_every=1, n_threads=None, progress=None, max_memory=None))]
#[allow(clippy::too_many_arguments)]
pub fn sweep_grpo<'py>(
    py: Python<'py>,
    theta: &Bound<'py, PyAny>,
    r#ref: &Bound<'py, PyAny>,
    w: &Bound<'py, PyAny>,
    steps: i64,
    runs: Vec<GrpoRunTuple>,
    record_every: i64,
    n_threads: Option<usize>,
    progress: Option<Bound<'py, PyAny>>,
    max_memory: Option<u64>,
) -> PyResult<Bound<'py, PyDict>> {
    let theta0 = policy_table("theta", theta, false)?;
    let reference = policy_table("ref", r#ref, false)?;
    let weights = vocab_weights(w)?;
    let steps = count("steps", steps, 1)?;
    let record_every = count("record_every", record_every, 0)?;
    let runs = runs
        .into_iter()
        .map(|(seed, g, beta, epsilon, epsilon_high, lr, scale_rewards, iterations)| {
            Ok(GrpoRunSpec {
                seed_key: seed.0,
                params: grpo_params(g, beta, epsilon, epsilon_high, lr, &scale_rewards, iterations)?,
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    let engine = GrpoEngine::new(&theta0, &reference, &weights, steps, record_every)?;
    let options = SweepOptions { n_threads, progress, max_memory };
    run_sweep(py, &engine, &runs, &options, "scalar")
}

/// Every Best-of-N run of `runs` (`(n, samples, seed)` each) for one policy, in parallel.
/// Either every run samples or none does; without samples the summary has no
/// `sampled_score`.
#[pyfunction]
#[pyo3(signature = (policy, w, runs, n_threads=None, progress=None, max_memory=None))]
pub fn sweep_best_of_n<'py>(
    py: Python<'py>,
    policy: &Bound<'py, PyAny>,
    w: &Bound<'py, PyAny>,
    runs: Vec<(i64, i64, SeedKey)>,
    n_threads: Option<usize>,
    progress: Option<Bound<'py, PyAny>>,
    max_memory: Option<u64>,
) -> PyResult<Bound<'py, PyDict>> {
    let table = policy_table("policy", policy, false)?;
    let weights = vocab_weights(w)?;
    let runs: Vec<BonRun> =
        runs.into_iter().map(|(n, samples, seed)| BonRun { n, samples, seed_key: seed.0 }).collect();
    let engine = BonEngine::new(&table, &weights, &runs)?;
    let options = SweepOptions { n_threads, progress, max_memory };
    run_sweep(py, &engine, &runs, &options, "scalar")
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(simd_paths, m)?)?;
    m.add_function(wrap_pyfunction!(sweep_rlhf, m)?)?;
    m.add_function(wrap_pyfunction!(sweep_dpo, m)?)?;
    m.add_function(wrap_pyfunction!(sweep_grpo, m)?)?;
    m.add_function(wrap_pyfunction!(sweep_best_of_n, m)?)?;
    Ok(())
}
