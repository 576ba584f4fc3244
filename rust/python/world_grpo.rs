//! GRPO in a world (`rlhf_fast.worlds`): one bag step, one run, and the sweep. Convert,
//! validate (messages name the argument, as the reference's do), run the core off the GIL,
//! hand back numpy arrays. No numerics here.

use numpy::{IntoPyArray, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::args;
use super::convert::{count, f64_vec, grpo_params, history_dict, int, SeedKey};
use super::detached::run_detached;
use super::sweep::{run_sweep, SweepOptions};
use super::world::OwnedTables;
use crate::engines::driver::Monitor;
use crate::engines::world_grpo::{self, WorldGrpoEngine, WorldGrpoHistory, WorldGrpoRunSpec};
use crate::error::{self, overflowed, py_float, Error};
use crate::methods::grpo::{bag_grpo_update, check_group_tokens, BagGrpoScratch};

/// One GRPO step on one prompt's ``logits`` whose ``num_generations`` responses are bags of
/// ``len(uniforms) // num_generations`` tokens, each drawn from ``softmax(logits)`` with one
/// of ``uniforms`` (``rng.random()`` draws in ``[0, 1)``, response after response). The
/// reference's ``rlhf_fast.reference.methods.grpo.bag_grpo_update`` with its ``GrpoParams``
/// spelt out. Returns the step's record with the updated ``logits``: ``{"tokens", "score",
/// "reward_std", "kl", "clip_frac", "loss", "logits"}``. A step whose logits overflow, or
/// whose record is not finite, raises ``FloatingPointError``.
#[pyfunction]
#[pyo3(signature = (
    logits, ref_log_probs, weights, uniforms, num_generations=8, beta=0.04, epsilon=0.2, epsilon_high=None, lr=0.05,
    scale_rewards="group", num_iterations=1,
))]
#[allow(clippy::too_many_arguments)]
pub fn bag_grpo_step<'py>(
    logits: &Bound<'py, PyAny>,
    ref_log_probs: &Bound<'py, PyAny>,
    weights: &Bound<'py, PyAny>,
    uniforms: &Bound<'py, PyAny>,
    #[pyo3(from_py_with = args::num_generations)] num_generations: i64,
    #[pyo3(from_py_with = args::beta)] beta: f64,
    #[pyo3(from_py_with = args::epsilon)] epsilon: f64,
    #[pyo3(from_py_with = args::epsilon_high)] epsilon_high: Option<f64>,
    #[pyo3(from_py_with = args::lr)] lr: f64,
    #[pyo3(from_py_with = args::scale_rewards)] scale_rewards: &str,
    #[pyo3(from_py_with = args::num_iterations)] num_iterations: i64,
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
    let params = grpo_params(num_generations, beta, epsilon, epsilon_high, lr, scale_rewards, num_iterations)?;
    let g = params.num_generations;
    if uniforms.is_empty() || uniforms.len() % g != 0 {
        let n = uniforms.len();
        let message = format!("uniforms must hold a positive multiple of num_generations={g} draws, got {n}");
        return Err(Error::invalid(message).into());
    }
    check_group_tokens(g, uniforms.len() / g)?;
    if let Some(i) = uniforms.iter().position(|u| !(0.0..1.0).contains(u)) {
        let message = format!("uniforms[{i}] must be a draw in [0, 1), got {}", py_float(uniforms[i]));
        return Err(Error::invalid(message).into());
    }
    let mut scratch = BagGrpoScratch::new(v, g, uniforms.len() / g)?;
    let out = bag_grpo_update(&mut row, &ref_log_probs, &weights, &uniforms, &params, &mut scratch);
    if overflowed(&row) {
        let message = format!(
            "bag_grpo_step diverged: logits overflowed (lr={}, beta={})",
            py_float(params.lr),
            py_float(params.beta)
        );
        return Err(Error::Diverged(message).into());
    }
    if let Some(key) = out.nonfinite_key(None) {
        return Err(error::record_overflowed("bag_grpo_step diverged", key, params.lr, params.beta).into());
    }
    let record = PyDict::new(py);
    record.set_item("tokens", PyList::new(py, scratch.tokens())?)?;
    record.set_item("score", out.score)?;
    record.set_item("reward_std", out.reward_std)?;
    record.set_item("kl", out.kl)?;
    record.set_item("clip_frac", out.clip_frac)?;
    record.set_item("loss", out.loss)?;
    record.set_item("logits", PyList::new(py, row)?)?;
    Ok(record)
}

/// A whole GRPO run in a world in Rust, from its reference policy, on the stream
/// ``random.Random(seed)``: the reference's
/// ``rlhf_fast.reference.engines.world_grpo.train_world_grpo`` on the checked tables. Off the
/// GIL and interruptible. Returns ``(history, theta)``: the per-step history as numpy arrays
/// (``prompt``, ``tokens`` ``[steps, num_generations, response_len]``, ``score``,
/// ``reward_std``, ``kl``, ``clip_frac``, ``loss``, ``proxy_score``, ``gold_score``,
/// ``mean_kl``) and the final ``[n_prompts, vocab]`` logits. A run that diverges raises
/// ``FloatingPointError`` naming the step.
#[pyfunction]
#[pyo3(signature = (
    ref_logits, weights, gold_token, count_once, response_len, steps, seed, num_generations=8, beta=0.04,
    epsilon=0.2, epsilon_high=None, lr=0.05, scale_rewards="group", num_iterations=1,
))]
#[allow(clippy::too_many_arguments)]
pub fn train_world_grpo<'py>(
    py: Python<'py>,
    ref_logits: &Bound<'py, PyAny>,
    weights: &Bound<'py, PyAny>,
    gold_token: &Bound<'py, PyAny>,
    count_once: &Bound<'py, PyAny>,
    response_len: &Bound<'py, PyAny>,
    steps: &Bound<'py, PyAny>,
    seed: SeedKey,
    #[pyo3(from_py_with = args::num_generations)] num_generations: i64,
    #[pyo3(from_py_with = args::beta)] beta: f64,
    #[pyo3(from_py_with = args::epsilon)] epsilon: f64,
    #[pyo3(from_py_with = args::epsilon_high)] epsilon_high: Option<f64>,
    #[pyo3(from_py_with = args::lr)] lr: f64,
    #[pyo3(from_py_with = args::scale_rewards)] scale_rewards: &str,
    #[pyo3(from_py_with = args::num_iterations)] num_iterations: i64,
) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyAny>)> {
    let tables = OwnedTables::convert(ref_logits, weights, gold_token, count_once, response_len)?;
    let steps = count("steps", int("steps", steps)?, 1)?;
    let world = tables.world()?;
    let params = grpo_params(num_generations, beta, epsilon, epsilon_high, lr, scale_rewards, num_iterations)?;
    check_group_tokens(params.num_generations, world.response_len)?;
    let mut theta = world.ref_logits.to_vec();
    let mut history = WorldGrpoHistory::default();
    let monitor = Monitor::default();
    run_detached(py, &monitor, None, None, || {
        world_grpo::train_world_grpo(&world, &mut theta, steps, &seed.0, &params, &mut history, &monitor)
    })??;
    let WorldGrpoHistory { prompt, tokens, score, reward_std, kl, clip_frac, loss, proxy_score, gold_score, mean_kl } =
        history;
    let out = history_dict(
        py,
        vec![("prompt", prompt)],
        vec![
            ("score", score),
            ("reward_std", reward_std),
            ("kl", kl),
            ("clip_frac", clip_frac),
            ("loss", loss),
            ("proxy_score", proxy_score),
            ("gold_score", gold_score),
            ("mean_kl", mean_kl),
        ],
    )?;
    let tokens: Vec<i64> = tokens.into_iter().map(i64::from).collect();
    out.set_item("tokens", tokens.into_pyarray(py).reshape([steps, params.num_generations, world.response_len])?)?;
    let theta = theta.into_pyarray(py).reshape([world.n_prompts, world.vocab_size])?;
    Ok((out, theta.into_any()))
}

/// One world GRPO sweep run: `(seed, num_generations, beta, epsilon, epsilon_high or None,
/// lr, scale_rewards, num_iterations)`, as the lesson's GRPO sweep takes it.
type WorldGrpoRunTuple = (SeedKey, i64, f64, f64, Option<f64>, f64, String, i64);

/// Every GRPO run of `runs` in the world of these tables (float64 `ref_logits [P, V]`,
/// `weights [V]`, `gold_token [P, V]`), each from its reference policy, in parallel.
#[pyfunction]
#[pyo3(signature = (
    ref_logits, weights, gold_token, count_once, response_len, steps, runs, record_every=1, n_threads=None,
    progress=None, max_memory=None,
))]
#[allow(clippy::too_many_arguments)]
pub fn sweep_world_grpo<'py>(
    py: Python<'py>,
    ref_logits: &Bound<'py, PyAny>,
    weights: &Bound<'py, PyAny>,
    gold_token: &Bound<'py, PyAny>,
    count_once: &Bound<'py, PyAny>,
    response_len: &Bound<'py, PyAny>,
    steps: &Bound<'py, PyAny>,
    runs: Vec<WorldGrpoRunTuple>,
    #[pyo3(from_py_with = args::record_every)] record_every: i64,
    n_threads: Option<usize>,
    progress: Option<Bound<'py, PyAny>>,
    max_memory: Option<u64>,
) -> PyResult<Bound<'py, PyDict>> {
    let tables = OwnedTables::convert(ref_logits, weights, gold_token, count_once, response_len)?;
    let steps = count("steps", int("steps", steps)?, 1)?;
    let record_every = count("record_every", record_every, 0)?;
    let world = tables.world()?;
    let runs = runs
        .into_iter()
        .map(|(seed, g, beta, epsilon, epsilon_high, lr, scale_rewards, iterations)| {
            let params = grpo_params(g, beta, epsilon, epsilon_high, lr, &scale_rewards, iterations)?;
            Ok(WorldGrpoRunSpec { seed_key: seed.0, params })
        })
        .collect::<PyResult<Vec<_>>>()?;
    for run in &runs {
        check_group_tokens(run.params.num_generations, world.response_len)?;
    }
    let engine = WorldGrpoEngine::new(world, steps, record_every)?;
    let options = SweepOptions { n_threads, progress, max_memory };
    run_sweep(py, &engine, &runs, &options, "scalar")
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(bag_grpo_step, m)?)?;
    m.add_function(wrap_pyfunction!(train_world_grpo, m)?)?;
    m.add_function(wrap_pyfunction!(sweep_world_grpo, m)?)?;
    Ok(())
}
