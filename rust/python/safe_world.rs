//! PPO in a world under a safety cost (`rlhf_fast.safety`, `sweep_rlhf(..., cost_model=...)`):
//! convert, validate (messages name the argument, as the reference's do), run the core off
//! the GIL. No numerics here.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::args;
use super::convert::{count, float_array, int, SeedKey};
use super::sweep::{run_sweep, SweepOptions};
use super::world::OwnedTables;
use crate::engines::safe_world_ppo::{SafeWorldPpoEngine, SafeWorldPpoRun};
use crate::engines::world_ppo::{Table, WorldPpoRun};
use crate::methods::lagrangian::{CostEstimate, LagrangeParams};
use crate::methods::ppo::PpoParams;

/// One safety sweep run: `((seed, eps, lr, ppo_epochs, beta, kl_penalty, vf_coef,
/// cliprange_value), (lambda_init, cost_limit, lagrangian_lr, lambda_max, cost_window,
/// lagrangian_kp, lr_decay, cost_estimate))`, `cost_limit` None for a fixed multiplier.
type SafeRunTuple =
    ((SeedKey, f64, f64, i64, f64, String, f64, f64), (f64, Option<f64>, f64, f64, i64, f64, bool, String));

/// Every PPO run of `runs` in the world of these tables (float64 `ref_logits [P, V]`,
/// `weights [V]`, `gold_token [P, V]`) under the cost model `cost_weights [V]` and the gold
/// cost `gold_cost [P, V]`, each from its reference policy, in parallel.
#[pyfunction]
#[pyo3(signature = (
    ref_logits, weights, gold_token, count_once, response_len, steps, runs, cost_weights, gold_cost, record_every=1,
    exact=false, n_threads=None, progress=None, max_memory=None,
))]
#[allow(clippy::too_many_arguments)]
pub fn sweep_safe_world_rlhf<'py>(
    py: Python<'py>,
    ref_logits: &Bound<'py, PyAny>,
    weights: &Bound<'py, PyAny>,
    gold_token: &Bound<'py, PyAny>,
    count_once: &Bound<'py, PyAny>,
    response_len: &Bound<'py, PyAny>,
    steps: &Bound<'py, PyAny>,
    runs: Vec<SafeRunTuple>,
    cost_weights: &Bound<'py, PyAny>,
    gold_cost: &Bound<'py, PyAny>,
    #[pyo3(from_py_with = args::record_every)] record_every: i64,
    exact: bool,
    n_threads: Option<usize>,
    progress: Option<Bound<'py, PyAny>>,
    max_memory: Option<u64>,
) -> PyResult<Bound<'py, PyDict>> {
    let tables = OwnedTables::convert(ref_logits, weights, gold_token, count_once, response_len)?;
    let cost_weights = float_array("cost_weights", cost_weights, 1)?.0;
    let (gold_cost, cost_shape) = float_array("gold_cost", gold_cost, 2)?;
    let libm = exact;
    let steps = count("steps", int("steps", steps)?, 1)?;
    let record_every = count("record_every", record_every, 0)?;
    let world = tables.world()?;
    let runs = runs
        .into_iter()
        .map(|((seed, eps, lr, ppo_epochs, beta, kl_penalty, vf_coef, cliprange_value), lagrange)| {
            let (
                lambda_init,
                cost_limit,
                lagrangian_lr,
                lambda_max,
                cost_window,
                lagrangian_kp,
                lr_decay,
                cost_estimate,
            ) = lagrange;
            let params = PpoParams::new(eps, lr, ppo_epochs)?.completed(&kl_penalty, vf_coef, cliprange_value)?;
            let lagrange =
                LagrangeParams::new(lambda_init, cost_limit, lagrangian_lr, lambda_max, cost_window, lagrangian_kp)?;
            let cost_estimate = CostEstimate::parse(&cost_estimate)?;
            Ok(SafeWorldPpoRun { ppo: WorldPpoRun::new(seed.0, params, beta)?, lagrange, lr_decay, cost_estimate })
        })
        .collect::<PyResult<Vec<_>>>()?;
    let simd = if libm { "scalar" } else { world.simd.name() };
    let gold_cost = Table { values: &gold_cost, rows: cost_shape[0], cols: cost_shape[1] };
    let engine =
        SafeWorldPpoEngine { libm, ..SafeWorldPpoEngine::new(world, &cost_weights, gold_cost, steps, record_every)? };
    let options = SweepOptions { n_threads, progress, max_memory };
    run_sweep(py, &engine, &runs, &options, simd)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(sweep_safe_world_rlhf, m)?)?;
    Ok(())
}
