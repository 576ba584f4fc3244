//! Best-of-N in a world (`rlhf_fast.worlds`): the sweep. Convert, validate (messages name
//! the argument, as the reference's do), run the core off the GIL. No numerics here.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::convert::SeedKey;
use super::sweep::{run_sweep, SweepOptions};
use super::world::OwnedTables;
use crate::engines::world_best_of_n::{WorldBonEngine, WorldBonRun};

/// Every Best-of-N run of `runs` (`(n, samples, seed)` each) from the reference policy of
/// the world of these tables (float64 `ref_logits [P, V]`, `weights [V]`, `gold_token [P,
/// V]`), in parallel: the reference's
/// ``rlhf_fast.reference.engines.world_best_of_n.sweep_world_best_of_n``.
#[pyfunction]
#[pyo3(signature = (
    ref_logits, weights, gold_token, count_once, response_len, runs, n_threads=None, progress=None, max_memory=None,
))]
#[allow(clippy::too_many_arguments)]
pub fn sweep_world_best_of_n<'py>(
    py: Python<'py>,
    ref_logits: &Bound<'py, PyAny>,
    weights: &Bound<'py, PyAny>,
    gold_token: &Bound<'py, PyAny>,
    count_once: &Bound<'py, PyAny>,
    response_len: &Bound<'py, PyAny>,
    runs: Vec<(i64, i64, SeedKey)>,
    n_threads: Option<usize>,
    progress: Option<Bound<'py, PyAny>>,
    max_memory: Option<u64>,
) -> PyResult<Bound<'py, PyDict>> {
    let tables = OwnedTables::convert(ref_logits, weights, gold_token, count_once, response_len)?;
    let world = tables.world()?;
    let runs = runs
        .into_iter()
        .map(|(n, samples, seed)| Ok(WorldBonRun::new(n, samples, seed.0)?))
        .collect::<PyResult<Vec<_>>>()?;
    let engine = WorldBonEngine::new(world)?;
    let options = SweepOptions { n_threads, progress, max_memory };
    run_sweep(py, &engine, &runs, &options, "scalar")
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(sweep_world_best_of_n, m)?)?;
    Ok(())
}
