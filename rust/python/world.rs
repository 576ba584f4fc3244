//! PPO in a world (`rlhf_fast.worlds`): one bag step, one run, and the sweep. Convert,
//! validate (messages name the argument, as the reference's do), run the core off the GIL,
//! hand back numpy arrays. No numerics here.

use numpy::{IntoPyArray, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::args;
use super::convert::{boolean, count, f64_vec, float_array, history_dict, int, SeedKey};
use super::detached::run_detached;
use super::sweep::{run_sweep, SweepOptions};
use crate::engines::driver::Monitor;
use crate::engines::world_ppo::{self, Table, WorldHistory, WorldPpoEngine, WorldPpoRun, WorldTables};
use crate::error::{self, overflowed, py_float, Error};
use crate::methods::ppo::{bag_rlhf_step as core_bag_rlhf_step, BagScratch, PpoParams};
use crate::methods::world_stats::MAX_RESPONSE_LEN;

/// A world's tables as the bindings receive them: float64 arrays, copied out with their shapes.
pub(super) struct OwnedTables {
    ref_logits: (Vec<f64>, Vec<usize>),
    weights: Vec<f64>,
    gold_token: (Vec<f64>, Vec<usize>),
    count_once: bool,
    response_len: i64,
}

impl OwnedTables {
    /// The arguments' types, in their order (`_checks.float_array`, `boolean`, `int64`).
    pub(super) fn convert(
        ref_logits: &Bound<'_, PyAny>,
        weights: &Bound<'_, PyAny>,
        gold_token: &Bound<'_, PyAny>,
        count_once: &Bound<'_, PyAny>,
        response_len: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        Ok(OwnedTables {
            ref_logits: float_array("ref_logits", ref_logits, 2)?,
            weights: float_array("weights", weights, 1)?.0,
            gold_token: float_array("gold_token", gold_token, 2)?,
            count_once: boolean("count_once", count_once)?,
            response_len: int("response_len", response_len)?,
        })
    }

    /// The tables, checked ([`WorldTables::new`]).
    pub(super) fn world(&self) -> PyResult<WorldTables<'_>> {
        fn table((values, shape): &(Vec<f64>, Vec<usize>)) -> Table<'_> {
            Table { values, rows: shape[0], cols: shape[1] }
        }
        Ok(WorldTables::new(
            table(&self.ref_logits),
            &self.weights,
            table(&self.gold_token),
            self.count_once,
            self.response_len,
        )?)
    }
}

/// PPO's settings of a bag step or a run in a world, checked as `PpoParams.new` checks them.
fn ppo_params(
    eps: f64,
    lr: f64,
    ppo_epochs: i64,
    kl_penalty: &str,
    vf_coef: f64,
    cliprange_value: f64,
) -> PyResult<PpoParams> {
    Ok(PpoParams::new(eps, lr, ppo_epochs)?.completed(kl_penalty, vf_coef, cliprange_value)?)
}

/// One PPO-RLHF step on one prompt's ``logits`` whose response is a bag of
/// ``len(uniforms)`` tokens, each drawn from ``softmax(logits)`` with one of ``uniforms``
/// (``rng.random()`` draws, in ``[0, 1)``). The reference's
/// ``rlhf_fast.reference.methods.ppo.bag_rlhf_step`` with its ``PpoParams`` spelt out.
/// Returns the step's record with the updated ``logits`` and ``value``: ``{"tokens",
/// "score", "kl", "reward", "clip_frac", "kl_penalty", "value_loss", "logits", "value"}``.
/// A step whose logits or value overflow, or whose record is not finite, raises
/// ``FloatingPointError``.
#[pyfunction]
#[pyo3(signature = (
    logits, ref_log_probs, weights, uniforms, beta, eps=0.2, lr=0.05, ppo_epochs=4, kl_penalty="k1",
    vf_coef=0.0, cliprange_value=0.2, value=0.0,
))]
#[allow(clippy::too_many_arguments)]
pub fn bag_rlhf_step<'py>(
    logits: &Bound<'py, PyAny>,
    ref_log_probs: &Bound<'py, PyAny>,
    weights: &Bound<'py, PyAny>,
    uniforms: &Bound<'py, PyAny>,
    #[pyo3(from_py_with = args::beta)] beta: f64,
    #[pyo3(from_py_with = args::eps)] eps: f64,
    #[pyo3(from_py_with = args::lr)] lr: f64,
    #[pyo3(from_py_with = args::ppo_epochs)] ppo_epochs: i64,
    #[pyo3(from_py_with = args::kl_penalty)] kl_penalty: &str,
    #[pyo3(from_py_with = args::vf_coef)] vf_coef: f64,
    #[pyo3(from_py_with = args::cliprange_value)] cliprange_value: f64,
    #[pyo3(from_py_with = args::value)] value: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let py = logits.py();
    let mut row = f64_vec("logits", logits)?;
    error::finite_slice("logits", &row)?;
    let v = row.len();
    let same_length = |name: &str, values: Vec<f64>| -> PyResult<Vec<f64>> {
        if values.len() != v {
            return Err(
                Error::invalid(format!("{name} must have {v} entries, one per logit, got {}", values.len())).into()
            );
        }
        error::finite_slice(name, &values)?;
        Ok(values)
    };
    let ref_log_probs = same_length("ref_log_probs", f64_vec("ref_log_probs", ref_log_probs)?)?;
    let weights = same_length("weights", f64_vec("weights", weights)?)?;
    let uniforms = f64_vec("uniforms", uniforms)?;
    if uniforms.is_empty() || uniforms.len() as i64 > MAX_RESPONSE_LEN {
        let n = uniforms.len();
        return Err(Error::invalid(format!("uniforms must hold 1 to {MAX_RESPONSE_LEN} draws, got {n}")).into());
    }
    if let Some(i) = uniforms.iter().position(|u| !(0.0..1.0).contains(u)) {
        let message = format!("uniforms[{i}] must be a draw in [0, 1), got {}", py_float(uniforms[i]));
        return Err(Error::invalid(message).into());
    }
    let beta = error::non_negative("beta", beta)?;
    let params = ppo_params(eps, lr, ppo_epochs, kl_penalty, vf_coef, cliprange_value)?;
    let mut value = error::finite("value", value)?;
    let mut scratch = BagScratch::new(v, uniforms.len())?;
    let out =
        core_bag_rlhf_step(&mut row, &ref_log_probs, &weights, &uniforms, beta, &params, &mut value, &mut scratch);
    if overflowed(&row) | overflowed(std::slice::from_ref(&value)) {
        let message =
            format!("bag_rlhf_step diverged: logits overflowed (lr={}, beta={})", py_float(lr), py_float(beta));
        return Err(Error::Diverged(message).into());
    }
    if let Some(key) = out.nonfinite_key() {
        return Err(error::record_overflowed("bag_rlhf_step diverged", key, lr, beta).into());
    }
    let record = PyDict::new(py);
    record.set_item("tokens", PyList::new(py, scratch.tokens())?)?;
    record.set_item("score", out.score)?;
    record.set_item("kl", out.kl)?;
    record.set_item("reward", out.reward)?;
    record.set_item("clip_frac", out.clip_frac)?;
    record.set_item("kl_penalty", out.kl_penalty)?;
    record.set_item("value_loss", out.value_loss)?;
    record.set_item("logits", PyList::new(py, row)?)?;
    record.set_item("value", value)?;
    Ok(record)
}

/// A whole PPO run in a world in Rust, from its reference policy, on the stream
/// ``random.Random(seed)`` with a fixed ``beta``: the reference's
/// ``rlhf_fast.reference.engines.world_ppo.train_world_rlhf`` on the checked tables. Off the
/// GIL and interruptible. Returns ``(history, theta)``: the per-step history as numpy arrays
/// (``prompt``, ``tokens`` ``[steps, response_len]``, ``score``, ``kl``, ``reward``,
/// ``clip_frac``, ``kl_penalty``, ``value_loss``, ``proxy_score``, ``gold_score``,
/// ``mean_kl``) and the final ``[n_prompts, vocab]`` logits. A run that diverges raises
/// ``FloatingPointError`` naming the step.
#[pyfunction]
#[pyo3(signature = (
    ref_logits, weights, gold_token, count_once, response_len, steps, seed, eps=0.2, lr=0.05, ppo_epochs=4,
    beta=0.1, kl_penalty="k1", vf_coef=0.0, cliprange_value=0.2,
))]
#[allow(clippy::too_many_arguments)]
pub fn train_world_rlhf<'py>(
    py: Python<'py>,
    ref_logits: &Bound<'py, PyAny>,
    weights: &Bound<'py, PyAny>,
    gold_token: &Bound<'py, PyAny>,
    count_once: &Bound<'py, PyAny>,
    response_len: &Bound<'py, PyAny>,
    steps: &Bound<'py, PyAny>,
    seed: SeedKey,
    #[pyo3(from_py_with = args::eps)] eps: f64,
    #[pyo3(from_py_with = args::lr)] lr: f64,
    #[pyo3(from_py_with = args::ppo_epochs)] ppo_epochs: i64,
    #[pyo3(from_py_with = args::beta)] beta: f64,
    #[pyo3(from_py_with = args::kl_penalty)] kl_penalty: &str,
    #[pyo3(from_py_with = args::vf_coef)] vf_coef: f64,
    #[pyo3(from_py_with = args::cliprange_value)] cliprange_value: f64,
) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyAny>)> {
    let tables = OwnedTables::convert(ref_logits, weights, gold_token, count_once, response_len)?;
    let steps = count("steps", int("steps", steps)?, 1)?;
    let world = tables.world()?;
    let params = ppo_params(eps, lr, ppo_epochs, kl_penalty, vf_coef, cliprange_value)?;
    let beta = error::non_negative("beta", beta)?;
    let mut theta = world.ref_logits.to_vec();
    let mut history = WorldHistory::default();
    let monitor = Monitor::default();
    run_detached(py, &monitor, None, None, || {
        world_ppo::train_world_rlhf(&world, &mut theta, steps, &seed.0, &params, beta, &mut history, &monitor)
    })??;
    let WorldHistory {
        prompt,
        tokens,
        score,
        kl,
        reward,
        clip_frac,
        kl_penalty,
        value_loss,
        proxy_score,
        gold_score,
        mean_kl,
    } = history;
    let out = history_dict(
        py,
        vec![("prompt", prompt)],
        vec![
            ("score", score),
            ("kl", kl),
            ("reward", reward),
            ("clip_frac", clip_frac),
            ("kl_penalty", kl_penalty),
            ("value_loss", value_loss),
            ("proxy_score", proxy_score),
            ("gold_score", gold_score),
            ("mean_kl", mean_kl),
        ],
    )?;
    let tokens: Vec<i64> = tokens.into_iter().map(i64::from).collect();
    out.set_item("tokens", tokens.into_pyarray(py).reshape([steps, world.response_len])?)?;
    let theta = theta.into_pyarray(py).reshape([world.n_prompts, world.vocab_size])?;
    Ok((out, theta.into_any()))
}

/// One world PPO sweep run: `(seed, eps, lr, ppo_epochs, beta, kl_penalty, vf_coef,
/// cliprange_value)`.
type WorldRunTuple = (SeedKey, f64, f64, i64, f64, String, f64, f64);

/// Every PPO run of `runs` in the world of these tables (float64 `ref_logits [P, V]`,
/// `weights [V]`, `gold_token [P, V]`), each from its reference policy with a fixed beta,
/// in parallel.
#[pyfunction]
#[pyo3(signature = (
    ref_logits, weights, gold_token, count_once, response_len, steps, runs, record_every=1, exact=false,
    n_threads=None, progress=None, max_memory=None,
))]
#[allow(clippy::too_many_arguments)]
pub fn sweep_world_rlhf<'py>(
    py: Python<'py>,
    ref_logits: &Bound<'py, PyAny>,
    weights: &Bound<'py, PyAny>,
    gold_token: &Bound<'py, PyAny>,
    count_once: &Bound<'py, PyAny>,
    response_len: &Bound<'py, PyAny>,
    steps: &Bound<'py, PyAny>,
    runs: Vec<WorldRunTuple>,
    #[pyo3(from_py_with = args::record_every)] record_every: i64,
    exact: bool,
    n_threads: Option<usize>,
    progress: Option<Bound<'py, PyAny>>,
    max_memory: Option<u64>,
) -> PyResult<Bound<'py, PyDict>> {
    let tables = OwnedTables::convert(ref_logits, weights, gold_token, count_once, response_len)?;
    let libm = exact;
    let steps = count("steps", int("steps", steps)?, 1)?;
    let record_every = count("record_every", record_every, 0)?;
    let world = tables.world()?;
    let runs = runs
        .into_iter()
        .map(|(seed, eps, lr, ppo_epochs, beta, kl_penalty, vf_coef, cliprange_value)| {
            let params = ppo_params(eps, lr, ppo_epochs, &kl_penalty, vf_coef, cliprange_value)?;
            Ok(WorldPpoRun::new(seed.0, params, beta)?)
        })
        .collect::<PyResult<Vec<_>>>()?;
    let simd = if libm { "scalar" } else { world.simd.name() };
    let engine = WorldPpoEngine { libm, ..WorldPpoEngine::new(world, steps, record_every)? };
    let options = SweepOptions { n_threads, progress, max_memory };
    run_sweep(py, &engine, &runs, &options, simd)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(bag_rlhf_step, m)?)?;
    m.add_function(wrap_pyfunction!(train_world_rlhf, m)?)?;
    m.add_function(wrap_pyfunction!(sweep_world_rlhf, m)?)?;
    Ok(())
}
