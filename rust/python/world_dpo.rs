//! DPO in a world (`rlhf_fast.worlds`): one run and the sweep. Convert, validate (messages
//! name the argument, as the reference's do), run the core off the GIL, hand back numpy
//! arrays. No numerics here.

use numpy::{IntoPyArray, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::args;
use super::convert::{boolean, count, dpo_params, float_array, history_dict, int, type_name, SeedKey};
use super::detached::run_detached;
use super::sweep::{run_sweep, SweepOptions};
use crate::engines::driver::Monitor;
use crate::engines::world_dpo::{self, WorldDpoEngine, WorldDpoHistory, WorldDpoRun, WorldPairs};
use crate::error::{self, Error};
use crate::methods::world_stats::{Table, WorldTables};

/// A world's tables and labelled pairs as the bindings receive them, copied out of their
/// arrays; without a reward model the proxy's weights are zeros and go unrecorded.
struct OwnedWorld {
    ref_logits: (Vec<f64>, Vec<usize>),
    weights: Vec<f64>,
    with_proxy: bool,
    gold_token: (Vec<f64>, Vec<usize>),
    count_once: bool,
    response_len: i64,
    pairs: WorldPairs,
}

/// An int64 array of `ndim` dimensions whose values are token or prompt indices below 2^32
/// (their bound in the world is checked with the world), flattened, with its shape.
fn index_array(name: &str, obj: &Bound<'_, PyAny>, ndim: usize) -> PyResult<(Vec<u32>, Vec<usize>)> {
    let Ok(untyped) = obj.cast::<PyUntypedArray>() else {
        return Err(PyTypeError::new_err(format!("{name} must be a {ndim}-D int64 array, got {}", type_name(obj))));
    };
    let array = obj.extract::<PyReadonlyArrayDyn<'_, i64>>().ok().filter(|array| array.ndim() == ndim);
    let Some(array) = array else {
        let dtype = untyped.dtype().str().map(|s| s.to_string()).unwrap_or_default();
        return Err(PyTypeError::new_err(format!(
            "{name} must be a {ndim}-D int64 array, got a {}-D {dtype} array",
            untyped.ndim()
        )));
    };
    let view = array.as_array();
    let mut values = error::vec_with_capacity(view.len(), name)?;
    for (k, &value) in view.iter().enumerate() {
        let Ok(index) = u32::try_from(value) else {
            let at = if ndim == 2 {
                format!("[{}, {}]", k / array.shape()[1], k % array.shape()[1])
            } else {
                format!("[{k}]")
            };
            return Err(Error::invalid(format!("{name}{at} must be an index in [0, 2**32), got {value}")).into());
        };
        values.push(index);
    }
    Ok((values, array.shape().to_vec()))
}

impl OwnedWorld {
    /// The arguments' types and the pairs' shapes, in the arguments' order.
    #[allow(clippy::too_many_arguments)]
    fn convert(
        ref_logits: &Bound<'_, PyAny>,
        weights: Option<&Bound<'_, PyAny>>,
        gold_token: &Bound<'_, PyAny>,
        count_once: &Bound<'_, PyAny>,
        response_len: &Bound<'_, PyAny>,
        prompts: &Bound<'_, PyAny>,
        first: &Bound<'_, PyAny>,
        second: &Bound<'_, PyAny>,
        target: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let ref_logits = float_array("ref_logits", ref_logits, 2)?;
        let weights = weights.map(|w| float_array("weights", w, 1)).transpose()?.map(|(w, _)| w);
        let gold_token = float_array("gold_token", gold_token, 2)?;
        let count_once = boolean("count_once", count_once)?;
        let response_len = int("response_len", response_len)?;
        let (prompts, _) = index_array("prompts", prompts, 1)?;
        let (first, first_shape) = index_array("first", first, 2)?;
        let (second, second_shape) = index_array("second", second, 2)?;
        let (target, _) = float_array("target", target, 1)?;
        let n = prompts.len();
        if first_shape[0] != n {
            return Err(
                Error::invalid(format!("first must have {n} rows (one per pair), got {}", first_shape[0])).into()
            );
        }
        if second_shape != first_shape {
            let message = format!(
                "second must have the shape of first, ({}, {}), got ({}, {})",
                first_shape[0], first_shape[1], second_shape[0], second_shape[1]
            );
            return Err(Error::invalid(message).into());
        }
        if target.len() != n {
            return Err(
                Error::invalid(format!("target must have {n} entries (one per pair), got {}", target.len())).into()
            );
        }
        let pairs = WorldPairs { prompts, first, second, target, response_len: first_shape[1] };
        let with_proxy = weights.is_some();
        let weights = weights.unwrap_or_else(|| vec![0.0; ref_logits.1[1]]);
        Ok(OwnedWorld { ref_logits, weights, with_proxy, gold_token, count_once, response_len, pairs })
    }

    /// The tables, checked ([`WorldTables::new`]), then the pairs against them.
    fn world(&self) -> PyResult<WorldTables<'_>> {
        fn table((values, shape): &(Vec<f64>, Vec<usize>)) -> Table<'_> {
            Table { values, rows: shape[0], cols: shape[1] }
        }
        let world = WorldTables::new(
            table(&self.ref_logits),
            &self.weights,
            table(&self.gold_token),
            self.count_once,
            self.response_len,
        )?;
        self.pairs.check(&world)?;
        Ok(world)
    }
}

/// A whole DPO run in a world in Rust, from its reference policy, over the labelled pairs
/// ``(prompts [n], first [n, L], second [n, L], target [n])`` (int64 indices; ``target`` the
/// float64 probability that ``first`` is preferred), reshuffled every epoch on
/// ``random.Random(seed)`` (in order for ``None``): the reference's
/// ``rlhf_fast.reference.engines.world_dpo.train_world_dpo`` on the checked tables;
/// ``weights=None`` records a zero proxy score. Off the GIL and interruptible. Returns
/// ``(history, theta)``: the per-step history as numpy arrays (``pair``, ``prompt``,
/// ``loss``, ``rewards/chosen``, ``rewards/rejected``, ``rewards/margins``,
/// ``rewards/accuracies``, ``proxy_score``, ``gold_score``, ``mean_kl``) and the final
/// ``[n_prompts, vocab]`` logits. A run that diverges raises ``FloatingPointError`` naming the
/// step.
#[pyfunction]
#[pyo3(signature = (
    ref_logits, weights, gold_token, count_once, response_len, prompts, first, second, target, epochs, seed=None,
    beta=0.1, lr=0.05, loss_type="sigmoid", label_smoothing=0.0,
))]
#[allow(clippy::too_many_arguments)]
pub fn train_world_dpo<'py>(
    py: Python<'py>,
    ref_logits: &Bound<'py, PyAny>,
    weights: Option<&Bound<'py, PyAny>>,
    gold_token: &Bound<'py, PyAny>,
    count_once: &Bound<'py, PyAny>,
    response_len: &Bound<'py, PyAny>,
    prompts: &Bound<'py, PyAny>,
    first: &Bound<'py, PyAny>,
    second: &Bound<'py, PyAny>,
    target: &Bound<'py, PyAny>,
    epochs: &Bound<'py, PyAny>,
    seed: Option<SeedKey>,
    #[pyo3(from_py_with = args::beta)] beta: f64,
    #[pyo3(from_py_with = args::lr)] lr: f64,
    #[pyo3(from_py_with = args::loss_type)] loss_type: &str,
    #[pyo3(from_py_with = args::label_smoothing)] label_smoothing: f64,
) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyAny>)> {
    let owned =
        OwnedWorld::convert(ref_logits, weights, gold_token, count_once, response_len, prompts, first, second, target)?;
    let epochs = count("epochs", int("epochs", epochs)?, 1)?;
    let world = owned.world()?;
    let params = dpo_params(beta, lr, loss_type, label_smoothing)?;
    let mut theta = world.ref_logits.to_vec();
    let mut history = WorldDpoHistory::default();
    let monitor = Monitor::default();
    let shuffle_seed = seed.map(|s| s.0);
    run_detached(py, &monitor, None, None, || {
        world_dpo::train_world_dpo(
            &world,
            &mut theta,
            &owned.pairs,
            epochs,
            &params,
            shuffle_seed.as_deref(),
            &mut history,
            &monitor,
        )
    })??;
    let WorldDpoHistory { pair, prompt, loss, chosen, rejected, margin, accuracy, proxy_score, gold_score, mean_kl } =
        history;
    let out = history_dict(
        py,
        vec![("pair", pair), ("prompt", prompt)],
        vec![
            ("loss", loss),
            ("rewards/chosen", chosen),
            ("rewards/rejected", rejected),
            ("rewards/margins", margin),
            ("rewards/accuracies", accuracy),
            ("proxy_score", proxy_score),
            ("gold_score", gold_score),
            ("mean_kl", mean_kl),
        ],
    )?;
    let theta = theta.into_pyarray(py).reshape([world.n_prompts, world.vocab_size])?;
    Ok((out, theta.into_any()))
}

/// One world DPO sweep run: `(beta, lr, loss_type, label_smoothing, epochs, seed or None)`.
type WorldDpoRunTuple = (f64, f64, String, f64, i64, Option<SeedKey>);

/// Every DPO run of `runs` in the world of these tables over its labelled pairs, each from
/// its reference policy, in parallel. A run shorter than the longest is NaN past its end;
/// without `weights` there is no proxy score.
#[pyfunction]
#[pyo3(signature = (
    ref_logits, weights, gold_token, count_once, response_len, prompts, first, second, target, runs, record_every=1,
    n_threads=None, progress=None, max_memory=None,
))]
#[allow(clippy::too_many_arguments)]
pub fn sweep_world_dpo<'py>(
    py: Python<'py>,
    ref_logits: &Bound<'py, PyAny>,
    weights: Option<&Bound<'py, PyAny>>,
    gold_token: &Bound<'py, PyAny>,
    count_once: &Bound<'py, PyAny>,
    response_len: &Bound<'py, PyAny>,
    prompts: &Bound<'py, PyAny>,
    first: &Bound<'py, PyAny>,
    second: &Bound<'py, PyAny>,
    target: &Bound<'py, PyAny>,
    runs: Vec<WorldDpoRunTuple>,
    #[pyo3(from_py_with = args::record_every)] record_every: i64,
    n_threads: Option<usize>,
    progress: Option<Bound<'py, PyAny>>,
    max_memory: Option<u64>,
) -> PyResult<Bound<'py, PyDict>> {
    let owned =
        OwnedWorld::convert(ref_logits, weights, gold_token, count_once, response_len, prompts, first, second, target)?;
    let world = owned.world()?;
    let record_every = count("record_every", record_every, 0)?;
    let runs = runs
        .into_iter()
        .map(|(beta, lr, loss_type, label_smoothing, epochs, seed)| {
            Ok(WorldDpoRun {
                params: dpo_params(beta, lr, &loss_type, label_smoothing)?,
                epochs: count("epochs", epochs, 1)?,
                shuffle_seed: seed.map(|s| s.0),
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    let engine = WorldDpoEngine::new(world, &owned.pairs, owned.with_proxy, record_every, &runs)?;
    let options = SweepOptions { n_threads, progress, max_memory };
    run_sweep(py, &engine, &runs, &options, "scalar")
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(train_world_dpo, m)?)?;
    m.add_function(wrap_pyfunction!(sweep_world_dpo, m)?)?;
    Ok(())
}
