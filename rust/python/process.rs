//! Process vs outcome rewards (issue 11 item 4): the process reward model's loss and fit, the
//! token PPO engine's process-reward tables, and GRPO on sequences with a per-sequence reward.
//! Convert, validate (messages name the argument), run the core off the GIL, hand back numpy
//! arrays. No numerics here.

use numpy::{IntoPyArray, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use pyo3::exceptions::PyTypeError;

use super::args;
use super::convert::{count, finite_result, finite_results, float_array, int, real, type_name, SeedKey};
use super::sweep::{run_sweep, SweepOptions};
use super::token_ppo::{int_array, OwnedWorld};
use crate::engines::process_reward::train_process_reward_model as train;
use crate::engines::verifier_grpo::{VerifierGrpoEngine, VerifierGrpoParams, VerifierGrpoRun};
use crate::error::{non_negative, Error};
use crate::methods::grpo::ScaleRewards;
use crate::methods::process_reward::{prm_loss_and_grad as loss_and_grad, StepLabels};
use crate::methods::token_ppo::TokenWorld;

/// Worker threads a sweep may ask for (as the front ends' `_MAX_THREADS`).
const MAX_THREADS: usize = 1024;

/// The optional `[P, L, V]` tables of a token world's process rewards, copied out.
pub(super) struct ProcessTables {
    step_rewards: Option<Vec<f64>>,
    outcome_factors: Option<Vec<f64>>,
}

impl ProcessTables {
    pub(super) fn convert(
        step_rewards: Option<&Bound<'_, PyAny>>,
        outcome_factors: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let table = |name: &str, obj: Option<&Bound<'_, PyAny>>| -> PyResult<Option<Vec<f64>>> {
            obj.map(|obj| Ok(float_array(name, obj, 3)?.0)).transpose()
        };
        Ok(ProcessTables {
            step_rewards: table("step_rewards", step_rewards)?,
            outcome_factors: table("outcome_factors", outcome_factors)?,
        })
    }

    pub(super) fn apply<'a>(&'a self, world: TokenWorld<'a>) -> PyResult<TokenWorld<'a>> {
        Ok(world.with_process_rewards(self.step_rewards.as_deref(), self.outcome_factors.as_deref())?)
    }
}

/// Owned step labels: prompts, tokens and labels, checked against the shape.
struct OwnedLabels {
    shape: [usize; 3],
    prompts: Vec<usize>,
    tokens: Vec<usize>,
    labels: Vec<f64>,
}

impl OwnedLabels {
    fn convert(
        shape: [usize; 3],
        prompts: &Bound<'_, PyAny>,
        tokens: &Bound<'_, PyAny>,
        labels: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let (prompts, _) = int_array("prompts", prompts, 1)?;
        let (tokens, token_shape) = int_array("tokens", tokens, 2)?;
        let (labels, label_shape) = float_array("labels", labels, 2)?;
        let n = prompts.len();
        for (name, got) in [("tokens", &token_shape), ("labels", &label_shape)] {
            if got[..] != [n, shape[1]] {
                return Err(Error::invalid(format!("{name} must have shape [{n}, {}], got {got:?}", shape[1])).into());
            }
        }
        if let Some(i) = prompts.iter().position(|&p| p < 0) {
            return Err(Error::invalid(format!("prompts[{i}] must be in [0, {}), got {}", shape[0], prompts[i])).into());
        }
        if let Some(i) = tokens.iter().position(|&a| a < 0) {
            let (b, k) = (i / shape[1], i % shape[1]);
            return Err(
                Error::invalid(format!("tokens[{b}, {k}] must be in [0, {}), got {}", shape[2], tokens[i])).into()
            );
        }
        Ok(OwnedLabels {
            shape,
            prompts: prompts.iter().map(|&p| p as usize).collect(),
            tokens: tokens.iter().map(|&a| a as usize).collect(),
            labels,
        })
    }

    fn data(&self) -> PyResult<StepLabels<'_>> {
        Ok(StepLabels::new(self.shape, &self.prompts, &self.tokens, &self.labels)?)
    }
}

/// The process reward model's loss at ``logits`` (float64 ``[P, K, V]``) on step labels
/// (``prompts`` int64 ``[n]``, ``tokens`` int64 ``[n, K]``, ``labels`` float64 ``[n, K]`` in
/// ``[0, 1]``) and its gradient: the reference's
/// ``rlhf_fast.reference.methods.process_reward.prm_loss_and_grad``. Returns ``(loss, grad)``.
#[pyfunction]
#[pyo3(signature = (logits, prompts, tokens, labels, l2=0.0))]
pub fn prm_loss_and_grad<'py>(
    py: Python<'py>,
    logits: &Bound<'py, PyAny>,
    prompts: &Bound<'py, PyAny>,
    tokens: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    #[pyo3(from_py_with = l2_arg)] l2: f64,
) -> PyResult<(f64, Bound<'py, PyAny>)> {
    let (z, shape) = float_array("logits", logits, 3)?;
    if shape.contains(&0) {
        return Err(Error::invalid(format!("logits must have a positive shape, got {shape:?}")).into());
    }
    crate::error::finite_slice("logits", &z)?;
    let owned = OwnedLabels::convert([shape[0], shape[1], shape[2]], prompts, tokens, labels)?;
    let data = owned.data()?;
    let l2 = non_negative("l2", l2)?;
    let mut grad = vec![0.0; z.len()];
    let loss = py.detach(|| loss_and_grad(&z, &data, l2, &mut grad));
    // an l2 near the top of the floats overflows the prior's term: an inf is never handed back
    let loss = finite_result("prm_loss_and_grad", loss)?;
    let grad = finite_results("prm_loss_and_grad", grad)?;
    Ok((loss, grad.into_pyarray(py).reshape(shape)?.into_any()))
}

/// Fits a process reward model to step labels by gradient descent from zero logits: the
/// reference's ``rlhf_fast.reference.engines.process_reward.train_process_reward_model``.
/// ``shape`` is ``(P, K, V)``. Returns ``{"logits": [P, K, V], "losses": [epochs]}``.
#[pyfunction]
#[pyo3(signature = (prompts, tokens, labels, shape, epochs=300, lr=0.1, l2=1.0))]
#[allow(clippy::too_many_arguments)]
pub fn train_process_reward_model<'py>(
    py: Python<'py>,
    prompts: &Bound<'py, PyAny>,
    tokens: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    shape: &Bound<'py, PyAny>,
    #[pyo3(from_py_with = args::epochs)] epochs: i64,
    #[pyo3(from_py_with = args::lr)] lr: f64,
    #[pyo3(from_py_with = l2_arg)] l2: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let wrong = || PyTypeError::new_err(format!("shape must be a tuple of three ints, got {}", type_name(shape)));
    let items: Vec<Bound<'py, PyAny>> = shape.extract().map_err(|_| wrong())?;
    if items.len() != 3 {
        return Err(Error::invalid(format!("shape must have three entries (P, K, V), got {}", items.len())).into());
    }
    let mut dims = [0usize; 3];
    for (i, (dim, item)) in dims.iter_mut().zip(&items).enumerate() {
        let name = format!("shape[{i}]");
        *dim = count(&name, int(&name, item)?, 1)?;
    }
    let epochs = count("epochs", epochs, 1)?;
    let owned = OwnedLabels::convert(dims, prompts, tokens, labels)?;
    let data = owned.data()?;
    let fit = py.detach(|| train(&data, epochs, lr, l2))?;
    let out = PyDict::new(py);
    out.set_item("logits", fit.logits.into_pyarray(py).reshape(dims.to_vec())?)?;
    out.set_item("losses", fit.losses.into_pyarray(py))?;
    Ok(out)
}

fn l2_arg(obj: &Bound<'_, PyAny>) -> PyResult<f64> {
    real("l2", obj)
}
fn num_generations_arg(obj: &Bound<'_, PyAny>) -> PyResult<i64> {
    int("num_generations", obj)
}
fn prompts_per_step_arg(obj: &Bound<'_, PyAny>) -> PyResult<i64> {
    int("prompts_per_step", obj)
}
fn num_iterations_arg(obj: &Bound<'_, PyAny>) -> PyResult<i64> {
    int("num_iterations", obj)
}
fn record_every_arg(obj: &Bound<'_, PyAny>) -> PyResult<i64> {
    int("record_every", obj)
}

/// Every GRPO run of ``runs`` (``(seed, beta, lr)`` each) in the sequence world of these arrays
/// (``sweep_token_ppo``'s), the reward of a completion its score in that world (the linear
/// reward model plus the product of ``outcome_factors``, a verifier's with 0/1 factors), in
/// parallel: the reference's ``rlhf_fast.reference.engines.verifier_grpo.sweep_verifier_grpo``.
#[pyfunction]
#[pyo3(signature = (
    ref_logits, w, bias, w_len, g, offset, count_once, steps, runs, num_generations=8, prompts_per_step=4,
    epsilon=0.2, epsilon_high=None, scale_rewards="group", num_iterations=1, outcome_factors=None, record_every=1,
    n_threads=None, progress=None, max_memory=None,
))]
#[allow(clippy::too_many_arguments)]
pub fn sweep_verifier_grpo<'py>(
    py: Python<'py>,
    ref_logits: &Bound<'py, PyAny>,
    w: &Bound<'py, PyAny>,
    bias: &Bound<'py, PyAny>,
    w_len: &Bound<'py, PyAny>,
    g: &Bound<'py, PyAny>,
    offset: &Bound<'py, PyAny>,
    count_once: &Bound<'py, PyAny>,
    steps: &Bound<'py, PyAny>,
    runs: Vec<(SeedKey, f64, f64)>,
    #[pyo3(from_py_with = num_generations_arg)] num_generations: i64,
    #[pyo3(from_py_with = prompts_per_step_arg)] prompts_per_step: i64,
    #[pyo3(from_py_with = args::epsilon)] epsilon: f64,
    #[pyo3(from_py_with = args::epsilon_high)] epsilon_high: Option<f64>,
    #[pyo3(from_py_with = args::scale_rewards)] scale_rewards: &str,
    #[pyo3(from_py_with = num_iterations_arg)] num_iterations: i64,
    outcome_factors: Option<Bound<'py, PyAny>>,
    #[pyo3(from_py_with = record_every_arg)] record_every: i64,
    n_threads: Option<Bound<'py, PyAny>>,
    progress: Option<Bound<'py, PyAny>>,
    max_memory: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let n_threads = n_threads.map(|n| count("n_threads", int("n_threads", &n)?, 1)).transpose()?;
    if let Some(n) = n_threads.filter(|&n| n > MAX_THREADS) {
        return Err(Error::invalid(format!("n_threads must be <= {MAX_THREADS}, got {n}")).into());
    }
    let max_memory =
        max_memory.map(|m| Ok::<_, PyErr>(count("max_memory", int("max_memory", &m)?, 1)? as u64)).transpose()?;
    let owned = OwnedWorld::convert(ref_logits, w, bias, w_len, g, offset, count_once)?;
    let steps = count("steps", int("steps", steps)?, 1)?;
    let params = VerifierGrpoParams {
        num_generations: count("num_generations", num_generations, 2)?,
        prompts_per_step: count("prompts_per_step", prompts_per_step, 1)?,
        epsilon,
        epsilon_high: epsilon_high.unwrap_or(epsilon),
        scale_rewards: ScaleRewards::parse(scale_rewards)?,
        num_iterations: count("num_iterations", num_iterations, 1)?,
    };
    let record_every = count("record_every", record_every, 0)?;
    let process = ProcessTables::convert(None, outcome_factors.as_ref())?;
    let world = process.apply(owned.world()?)?;
    let runs = runs
        .into_iter()
        .map(|(seed, beta, lr)| Ok(VerifierGrpoRun::new(seed.0, beta, lr)?))
        .collect::<PyResult<Vec<_>>>()?;
    let engine = VerifierGrpoEngine::new(world, steps, params, record_every)?;
    let options = SweepOptions { n_threads, progress, max_memory };
    run_sweep(py, &engine, &runs, &options, "scalar")
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(prm_loss_and_grad, m)?)?;
    m.add_function(wrap_pyfunction!(train_process_reward_model, m)?)?;
    m.add_function(wrap_pyfunction!(sweep_verifier_grpo, m)?)?;
    Ok(())
}
