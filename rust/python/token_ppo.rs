//! PPO on token sequences (issue 11): one update's terms on stored responses, and the sweep.
//! Convert, validate (messages name the argument), run the core off the GIL, hand back numpy
//! arrays. No numerics here.

use numpy::{IntoPyArray, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::convert::{boolean, count, float_array, int, real, type_name, SeedKey};
use super::process::ProcessTables;
use super::sweep::{run_sweep, SweepOptions};
use crate::engines::token_ppo::{TokenPpoEngine, TokenPpoRun, MAX_BATCH_SIZE};
use crate::error::{non_negative, Error};
use crate::methods::token_ppo::{
    batch_loss_and_grads, response_lengths, KlEstimator, TokenPpoParams, TokenWorld, MAX_PPO_EPOCHS,
};

/// The int arguments, converted as `_checks.int64` converts them (a ValueError past 64 bits).
fn batch_size_arg(obj: &Bound<'_, PyAny>) -> PyResult<i64> {
    int("batch_size", obj)
}
fn num_ppo_epochs_arg(obj: &Bound<'_, PyAny>) -> PyResult<i64> {
    int("num_ppo_epochs", obj)
}
fn num_mini_batches_arg(obj: &Bound<'_, PyAny>) -> PyResult<i64> {
    int("num_mini_batches", obj)
}
fn record_every_arg(obj: &Bound<'_, PyAny>) -> PyResult<i64> {
    int("record_every", obj)
}

/// Worker threads a sweep may ask for (as the front ends' `_MAX_THREADS`).
pub(super) const MAX_THREADS: usize = 1024;

/// A sequence world's arrays as the bindings receive them, copied out with their shapes.
pub(super) struct OwnedWorld {
    ref_logits: (Vec<f64>, Vec<usize>),
    w: Vec<f64>,
    bias: Vec<f64>,
    w_len: f64,
    g: Vec<f64>,
    offset: Vec<f64>,
    count_once: bool,
}

impl OwnedWorld {
    pub(super) fn convert(
        ref_logits: &Bound<'_, PyAny>,
        w: &Bound<'_, PyAny>,
        bias: &Bound<'_, PyAny>,
        w_len: &Bound<'_, PyAny>,
        g: &Bound<'_, PyAny>,
        offset: &Bound<'_, PyAny>,
        count_once: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        Ok(OwnedWorld {
            ref_logits: float_array("ref_logits", ref_logits, 3)?,
            w: float_array("w", w, 1)?.0,
            bias: float_array("bias", bias, 1)?.0,
            w_len: real("w_len", w_len)?,
            g: float_array("g", g, 1)?.0,
            offset: float_array("offset", offset, 1)?.0,
            count_once: boolean("count_once", count_once)?,
        })
    }

    pub(super) fn world(&self) -> PyResult<TokenWorld<'_>> {
        let shape = &self.ref_logits.1;
        Ok(TokenWorld::new(
            &self.ref_logits.0,
            [shape[0], shape[1], shape[2]],
            &self.w,
            &self.bias,
            self.w_len,
            &self.g,
            &self.offset,
            self.count_once,
        )?)
    }
}

/// The engine's settings as Python passes them (PyO3 names a wrong type), checked.
#[allow(clippy::too_many_arguments)]
fn token_ppo_params(
    batch_size: usize,
    gamma: f64,
    lam: f64,
    cliprange: f64,
    cliprange_value: f64,
    vf_coef: f64,
    kl_estimator: &str,
    num_ppo_epochs: i64,
    num_mini_batches: i64,
    missing_eos_penalty: Option<f64>,
    length_normalize: bool,
    length_penalty: f64,
) -> PyResult<TokenPpoParams> {
    let num_ppo_epochs = count("num_ppo_epochs", num_ppo_epochs, 1)?;
    if num_ppo_epochs > MAX_PPO_EPOCHS {
        return Err(Error::invalid(format!("num_ppo_epochs must be <= {MAX_PPO_EPOCHS}, got {num_ppo_epochs}")).into());
    }
    let params = TokenPpoParams {
        gamma,
        lam,
        cliprange,
        cliprange_value,
        vf_coef,
        kl_estimator: KlEstimator::parse(kl_estimator)?,
        num_ppo_epochs,
        num_mini_batches: count("num_mini_batches", num_mini_batches, 1)?,
        missing_eos_penalty: missing_eos_penalty.unwrap_or(0.0),
        length_normalize,
        length_penalty,
    };
    Ok(params.checked(batch_size)?)
}

/// An int64 array of `ndim` dimensions (an int array is converted, as `np.asarray(x,
/// dtype=np.int64)` would), copied out with its shape; a `TypeError` naming `name` otherwise.
pub(super) fn int_array(name: &str, obj: &Bound<'_, PyAny>, ndim: usize) -> PyResult<(Vec<i64>, Vec<usize>)> {
    let wrong = || PyTypeError::new_err(format!("{name} must be a {ndim}-D int64 array, got {}", type_name(obj)));
    if ndim == 1 {
        let array: PyReadonlyArray1<'_, i64> = obj.extract().map_err(|_| wrong())?;
        let values = array.as_array().to_vec();
        let len = values.len();
        return Ok((values, vec![len]));
    }
    let array: PyReadonlyArray2<'_, i64> = obj.extract().map_err(|_| wrong())?;
    let view = array.as_array();
    let shape = view.shape().to_vec();
    Ok((view.iter().copied().collect(), shape))
}

/// One PPO update's terms on stored responses, in Rust: the reference's
/// ``rlhf_fast.reference.methods.token_ppo.batch_loss_and_grads`` on checked arrays.
///
/// ``tokens`` is an int64 ``[B, L]`` array in the contract's layout (the first EOS, token 0,
/// ends a response; -1 after its end), ``prompts`` int64 ``[B]``, ``scores`` float64 ``[B]`` the
/// responses' scores; ``old_theta``/``theta`` float64 ``[P, L, V]`` and
/// ``old_values``/``values`` ``[P, L]``. Returns ``kl``, ``rewards``, ``raw_advantages``,
/// ``advantages`` (whitened), ``returns`` (``[B, L]``, zero past each end), the losses and
/// TRL's statistics, and ``grad_theta``/``grad_values``, the gradients of ``loss``.
#[pyfunction]
#[pyo3(signature = (
    ref_logits, old_theta, theta, old_values, values, prompts, tokens, scores, kl_coef=0.05, gamma=1.0, lam=0.95,
    cliprange=0.2, cliprange_value=0.2, vf_coef=0.1, kl_estimator="k1",
))]
#[allow(clippy::too_many_arguments)]
pub fn token_ppo_batch_terms<'py>(
    py: Python<'py>,
    ref_logits: &Bound<'py, PyAny>,
    old_theta: &Bound<'py, PyAny>,
    theta: &Bound<'py, PyAny>,
    old_values: &Bound<'py, PyAny>,
    values: &Bound<'py, PyAny>,
    prompts: &Bound<'py, PyAny>,
    tokens: &Bound<'py, PyAny>,
    scores: &Bound<'py, PyAny>,
    kl_coef: f64,
    gamma: f64,
    lam: f64,
    cliprange: f64,
    cliprange_value: f64,
    vf_coef: f64,
    kl_estimator: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let (ref_values, shape) = float_array("ref_logits", ref_logits, 3)?;
    let (n_prompts, vocab) = (shape[0], shape.get(2).copied().unwrap_or(0));
    let zeros_p = vec![0.0; n_prompts];
    let zeros_v = vec![0.0; vocab];
    let world = TokenWorld::new(
        &ref_values,
        [shape[0], shape[1], shape[2]],
        &zeros_v,
        &zeros_p,
        0.0,
        &zeros_v,
        &zeros_p,
        false,
    )?;
    let l = world.max_len;
    let same_shape = |name: &str, obj: &Bound<'py, PyAny>, dims: &[usize]| -> PyResult<Vec<f64>> {
        let (values, got) = float_array(name, obj, dims.len())?;
        if got != dims {
            return Err(Error::invalid(format!("{name} must have shape {dims:?}, got {got:?}")).into());
        }
        crate::error::finite_slice(name, &values)?;
        Ok(values)
    };
    let old_theta = same_shape("old_theta", old_theta, &shape)?;
    let theta = same_shape("theta", theta, &shape)?;
    let old_values = same_shape("old_values", old_values, &[n_prompts, l])?;
    let values = same_shape("values", values, &[n_prompts, l])?;
    let (tokens, token_shape) = int_array("tokens", tokens, 2)?;
    if token_shape[1] != l || token_shape[0] < 1 {
        return Err(Error::invalid(format!("tokens must have shape [B >= 1, {l}], got {token_shape:?}")).into());
    }
    let lengths = response_lengths(&tokens, l, vocab)?;
    if lengths.iter().sum::<usize>() < 2 {
        return Err(Error::invalid("tokens must hold at least two tokens in all (whitening needs two)").into());
    }
    let b = token_shape[0];
    let (prompts, prompt_shape) = int_array("prompts", prompts, 1)?;
    if prompt_shape[0] != b {
        return Err(
            Error::invalid(format!("prompts must have {b} entries (one per response), got {}", prompts.len())).into()
        );
    }
    if let Some(i) = prompts.iter().position(|&p| !(0..n_prompts as i64).contains(&p)) {
        return Err(Error::invalid(format!("prompts[{i}] must be in [0, {n_prompts}), got {}", prompts[i])).into());
    }
    let scores = same_shape("scores", scores, &[b])?;
    let kl_coef = non_negative("kl_coef", kl_coef)?;
    let params =
        token_ppo_params(2, gamma, lam, cliprange, cliprange_value, vf_coef, kl_estimator, 1, 1, None, false, 0.0)?;
    let prompts: Vec<usize> = prompts.iter().map(|&p| p as usize).collect();
    // Past a response's end the token is unused: 0 stands in for the -1.
    let tokens: Vec<usize> = tokens.iter().map(|&a| a.max(0) as usize).collect();
    let mut grad_theta = vec![0.0; theta.len()];
    let mut grad_values = vec![0.0; values.len()];
    let terms = py.detach(|| {
        batch_loss_and_grads(
            &world,
            &old_theta,
            &theta,
            &old_values,
            &values,
            &prompts,
            &tokens,
            &lengths,
            &scores,
            kl_coef,
            &params,
            &mut grad_theta,
            &mut grad_values,
        )
    })?;
    let out = PyDict::new(py);
    for (name, series) in [
        ("kl", terms.kl),
        ("rewards", terms.rewards),
        ("raw_advantages", terms.raw_advantages),
        ("advantages", terms.advantages),
        ("returns", terms.returns),
    ] {
        out.set_item(name, series.into_pyarray(py).reshape([b, l])?)?;
    }
    let o = terms.outcome;
    for (name, value) in [
        ("pg_loss", o.pg_loss),
        ("vf_loss", o.vf_loss),
        ("loss", o.loss),
        ("pg_clipfrac", o.pg_clipfrac),
        ("vf_clipfrac", o.vf_clipfrac),
        ("approxkl", o.approxkl),
        ("ratio_mean", o.ratio_mean),
        ("entropy_mean", o.entropy_mean),
    ] {
        out.set_item(name, value)?;
    }
    out.set_item("grad_theta", grad_theta.into_pyarray(py).reshape(shape.clone())?)?;
    out.set_item("grad_values", grad_values.into_pyarray(py).reshape([n_prompts, l])?)?;
    Ok(out)
}

/// Every token PPO run of ``runs`` (``(seed, kl_coef, lr)`` each) in the sequence world of
/// these arrays (float64 ``ref_logits [P, L, V]``, ``w [V]``, ``bias [P]``, ``g [V]``,
/// ``offset [P]``; ``w_len`` a float, ``count_once`` a bool), each from its reference policy, in
/// parallel: the reference's ``rlhf_fast.reference.engines.token_ppo.sweep_token_ppo``.
#[pyfunction]
#[pyo3(signature = (
    ref_logits, w, bias, w_len, g, offset, count_once, steps, runs, batch_size=64, gamma=1.0, lam=0.95,
    cliprange=0.2, cliprange_value=0.2, vf_coef=0.1, kl_estimator="k1", num_ppo_epochs=4, num_mini_batches=1,
    missing_eos_penalty=None, length_normalize=false, length_penalty=0.0, record_every=1, n_threads=None,
    progress=None, max_memory=None, step_rewards=None, outcome_factors=None,
))]
#[allow(clippy::too_many_arguments)]
pub fn sweep_token_ppo<'py>(
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
    #[pyo3(from_py_with = batch_size_arg)] batch_size: i64,
    gamma: f64,
    lam: f64,
    cliprange: f64,
    cliprange_value: f64,
    vf_coef: f64,
    kl_estimator: &str,
    #[pyo3(from_py_with = num_ppo_epochs_arg)] num_ppo_epochs: i64,
    #[pyo3(from_py_with = num_mini_batches_arg)] num_mini_batches: i64,
    missing_eos_penalty: Option<f64>,
    length_normalize: bool,
    length_penalty: f64,
    #[pyo3(from_py_with = record_every_arg)] record_every: i64,
    n_threads: Option<Bound<'py, PyAny>>,
    progress: Option<Bound<'py, PyAny>>,
    max_memory: Option<Bound<'py, PyAny>>,
    step_rewards: Option<Bound<'py, PyAny>>,
    outcome_factors: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    // Checked here too, not only by the front end: this function is public in `_core`.
    let n_threads = n_threads.map(|n| count("n_threads", int("n_threads", &n)?, 1)).transpose()?;
    if let Some(n) = n_threads.filter(|&n| n > MAX_THREADS) {
        return Err(Error::invalid(format!("n_threads must be <= {MAX_THREADS}, got {n}")).into());
    }
    let max_memory =
        max_memory.map(|m| Ok::<_, PyErr>(count("max_memory", int("max_memory", &m)?, 1)? as u64)).transpose()?;
    let owned = OwnedWorld::convert(ref_logits, w, bias, w_len, g, offset, count_once)?;
    let steps = count("steps", int("steps", steps)?, 1)?;
    let batch_size = count("batch_size", batch_size, 2)?;
    if batch_size > MAX_BATCH_SIZE {
        return Err(Error::invalid(format!("batch_size must be <= {MAX_BATCH_SIZE}, got {batch_size}")).into());
    }
    let params = token_ppo_params(
        batch_size,
        gamma,
        lam,
        cliprange,
        cliprange_value,
        vf_coef,
        kl_estimator,
        num_ppo_epochs,
        num_mini_batches,
        missing_eos_penalty,
        length_normalize,
        length_penalty,
    )?;
    let record_every = count("record_every", record_every, 0)?;
    let process = ProcessTables::convert(step_rewards.as_ref(), outcome_factors.as_ref())?;
    let world = process.apply(owned.world()?)?;
    let runs = runs
        .into_iter()
        .map(|(seed, kl_coef, lr)| Ok(TokenPpoRun::new(seed.0, kl_coef, lr)?))
        .collect::<PyResult<Vec<_>>>()?;
    let engine = TokenPpoEngine::new(world, steps, batch_size, params, record_every)?;
    let options = SweepOptions { n_threads, progress, max_memory };
    run_sweep(py, &engine, &runs, &options, "scalar")
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(token_ppo_batch_terms, m)?)?;
    m.add_function(wrap_pyfunction!(sweep_token_ppo, m)?)?;
    Ok(())
}
