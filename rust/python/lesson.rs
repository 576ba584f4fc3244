//! The lesson's drop-ins on the Rust core: kernels, the PPO-RLHF step and run, a policy's
//! exact statistics. Convert, validate (messages name the argument), call the core.

use numpy::{IntoPyArray, PyArray2, PyArrayMethods, PyReadonlyArray2};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::args;
use super::convert::{
    check_rng, count, f64_vec, frozen_copy, history_dict, int, kl_threshold_arg, policy_table, prompt_index,
    prompt_values, type_name, vocab_weights, warn_kl, write_back_row, write_back_table, write_back_values, SeedKey,
};
use super::detached::run_detached;
use crate::engines::driver::Monitor;
use crate::engines::{self, ppo::RlhfHistory};
use crate::error::{self, drop_in_background, overflowed, py_float, Error};
use crate::kernels::{kl as core_kl, logistic, policy, sampling, softmax as core_softmax};
use crate::lesson::VOCAB;
use crate::methods::kl_control::KlController;
use crate::methods::ppo::{self, PpoParams, StepScratch};
use crate::methods::reward_checks::check_not_length_only;

/// Logistic function, stable for any input.
#[pyfunction]
fn sigmoid(#[pyo3(from_py_with = args::z)] z: f64) -> PyResult<f64> {
    if z.is_nan() {
        return Err(PyValueError::new_err("z must not be NaN"));
    }
    Ok(logistic::sigmoid(z))
}

/// `exp(z - max z)` normalised, for one row of logits.
#[pyfunction]
fn softmax(z: &Bound<'_, PyAny>) -> PyResult<Vec<f64>> {
    Ok(core_softmax::softmax(&f64_vec("z", z)?)?)
}

/// `z - logsumexp(z)` for one row of logits.
#[pyfunction]
fn log_softmax(z: &Bound<'_, PyAny>) -> PyResult<Vec<f64>> {
    Ok(core_softmax::log_softmax(&f64_vec("z", z)?)?)
}

fn map_rows<'py>(z: PyReadonlyArray2<'py, f64>, kernel: fn(&[f64], &mut [f64])) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let py = z.py();
    let view = z.as_array();
    let (rows, cols) = view.dim();
    if cols == 0 {
        return Err(PyValueError::new_err("z must not be empty"));
    }
    let flat: Vec<f64> = view.iter().copied().collect();
    error::finite_slice("z", &flat)?;
    let out = py.detach(|| {
        let mut out = vec![0.0; flat.len()];
        for (row, dst) in flat.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
            kernel(row, dst);
        }
        out
    });
    out.into_pyarray(py).reshape([rows, cols])
}

/// Row-wise softmax of a float64 matrix.
#[pyfunction]
fn softmax_rows<'py>(z: PyReadonlyArray2<'py, f64>) -> PyResult<Bound<'py, PyArray2<f64>>> {
    map_rows(z, core_softmax::softmax_row)
}

/// Row-wise log-softmax of a float64 matrix.
#[pyfunction]
fn log_softmax_rows<'py>(z: PyReadonlyArray2<'py, f64>) -> PyResult<Bound<'py, PyArray2<f64>>> {
    map_rows(z, core_softmax::log_softmax_row)
}

/// Exact `KL(p || q)` with `0 log 0 = 0`.
#[pyfunction]
fn kl(p: &Bound<'_, PyAny>, q: &Bound<'_, PyAny>) -> PyResult<f64> {
    Ok(core_kl::kl(&f64_vec("p", p)?, &f64_vec("q", q)?)?)
}

/// Schulman's k1 estimator of KL for a sampled token: `log p(a) - log q(a)`.
#[pyfunction]
fn kl_k1(#[pyo3(from_py_with = args::logp)] logp: f64, #[pyo3(from_py_with = args::logq)] logq: f64) -> PyResult<f64> {
    Ok(core_kl::kl_k1(logp, logq)?)
}

/// Schulman's k2 estimator: `(log q(a) - log p(a))^2 / 2`.
#[pyfunction]
fn kl_k2(#[pyo3(from_py_with = args::logp)] logp: f64, #[pyo3(from_py_with = args::logq)] logq: f64) -> PyResult<f64> {
    Ok(core_kl::kl_k2(logp, logq)?)
}

/// Schulman's k3 estimator: `(r - 1) - log r`, `r = q(a) / p(a)`.
#[pyfunction]
fn kl_k3(#[pyo3(from_py_with = args::logp)] logp: f64, #[pyo3(from_py_with = args::logq)] logq: f64) -> PyResult<f64> {
    Ok(core_kl::kl_k3(logp, logq)?)
}

/// Inverse-CDF draw of an index from `probs` with one `rng.random()`.
#[pyfunction]
fn sample(probs: &Bound<'_, PyAny>, rng: &Bound<'_, PyAny>) -> PyResult<usize> {
    let probs = f64_vec("probs", probs)?;
    error::probabilities("probs", &probs)?;
    check_rng(rng)?;
    let u: f64 = rng.call_method0("random")?.extract()?;
    Ok(sampling::sample_index(&probs, u))
}

/// `a` as a token index in `[0, vocab_size)` (the reference's `_checks.token`).
fn token_index(a: &Bound<'_, PyAny>, vocab_size: usize) -> PyResult<usize> {
    let out_of_range = || PyValueError::new_err(format!("a must be a token index in [0, {vocab_size}), got {a}"));
    let index = match int("a", a) {
        Ok(index) => index,
        Err(err) if err.is_instance_of::<PyTypeError>(a.py()) => {
            return Err(PyTypeError::new_err(format!("a must be an int token index, got {}", type_name(a))));
        }
        Err(_) => return Err(out_of_range()),
    };
    usize::try_from(index).ok().filter(|&index| index < vocab_size).ok_or_else(out_of_range)
}

/// PPO's clipped objective for token `a`.
#[pyfunction]
fn clipped_surrogate(
    logits: &Bound<'_, PyAny>,
    a: &Bound<'_, PyAny>,
    #[pyo3(from_py_with = args::p_old_a)] p_old_a: f64,
    #[pyo3(from_py_with = args::advantage)] advantage: f64,
    #[pyo3(from_py_with = args::eps)] eps: f64,
) -> PyResult<f64> {
    let logits = f64_vec("logits", logits)?;
    error::finite_slice("logits", &logits)?;
    Ok(ppo::clipped_surrogate(&logits, token_index(a, logits.len())?, p_old_a, advantage, eps)?)
}

/// Gradient of the clipped objective in the logits (zero where clipped).
#[pyfunction]
fn clipped_surrogate_grad(
    logits: &Bound<'_, PyAny>,
    a: &Bound<'_, PyAny>,
    #[pyo3(from_py_with = args::p_old_a)] p_old_a: f64,
    #[pyo3(from_py_with = args::advantage)] advantage: f64,
    #[pyo3(from_py_with = args::eps)] eps: f64,
) -> PyResult<Vec<f64>> {
    let logits = f64_vec("logits", logits)?;
    error::finite_slice("logits", &logits)?;
    Ok(ppo::clipped_surrogate_grad(&logits, token_index(a, logits.len())?, p_old_a, advantage, eps)?)
}

/// One PPO-RLHF step on `theta[prompt]` (updated in place); returns the step's record. A
/// step whose logits or value overflow raises `FloatingPointError` and changes nothing.
#[pyfunction]
#[pyo3(signature = (
    theta, r#ref, w, prompt, rng, eps=0.2, beta=0.1, lr=0.05, ppo_epochs=4,
    kl_penalty="full", vf_coef=0.0, cliprange_value=0.2, value=None,
))]
#[allow(clippy::too_many_arguments)]
fn rlhf_step<'py>(
    theta: &Bound<'py, PyAny>,
    r#ref: &Bound<'py, PyAny>,
    w: &Bound<'py, PyAny>,
    prompt: &Bound<'py, PyAny>,
    rng: &Bound<'py, PyAny>,
    #[pyo3(from_py_with = args::eps)] eps: f64,
    #[pyo3(from_py_with = args::beta)] beta: f64,
    #[pyo3(from_py_with = args::lr)] lr: f64,
    #[pyo3(from_py_with = args::ppo_epochs)] ppo_epochs: i64,
    #[pyo3(from_py_with = args::kl_penalty)] kl_penalty: &str,
    #[pyo3(from_py_with = args::vf_coef)] vf_coef: f64,
    #[pyo3(from_py_with = args::cliprange_value)] cliprange_value: f64,
    value: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let py = theta.py();
    let theta_table = policy_table("theta", theta, true)?;
    let ref_table = policy_table("ref", r#ref, false)?;
    frozen_copy(theta, r#ref)?;
    let weights = vocab_weights(w)?;
    let x = prompt_index("prompt", prompt)?;
    check_rng(rng)?;
    error::positive("eps", eps)?;
    let beta = error::non_negative("beta", beta)?;
    let params = PpoParams::new(eps, lr, ppo_epochs)?.completed(kl_penalty, vf_coef, cliprange_value)?;
    let mut values = prompt_values(value)?;
    let u: f64 = rng.call_method0("random")?.extract()?;

    let v = VOCAB.len();
    let mut logits = theta_table[x * v..(x + 1) * v].to_vec();
    let mut ref_log_probs = vec![0.0; v];
    core_softmax::log_softmax_row(&ref_table[x * v..(x + 1) * v], &mut ref_log_probs);
    let mut scratch = StepScratch::new(v);
    let out = ppo::rlhf_step(&mut logits, &ref_log_probs, &weights, u, beta, &params, &mut values[x], &mut scratch);
    if overflowed(&logits) | overflowed(&values[x..=x]) {
        let message = format!("rlhf_step diverged: logits overflowed (lr={}, beta={})", py_float(lr), py_float(beta));
        return Err(Error::Diverged(message).into());
    }
    write_back_row(theta, x, &logits)?;
    write_back_values(value, &values)?;

    let record = PyDict::new(py);
    record.set_item("token", out.token)?;
    record.set_item("score", out.score)?;
    record.set_item("kl", out.kl)?;
    record.set_item("reward", out.reward)?;
    record.set_item("clip_frac", out.clip_frac)?;
    record.set_item("kl_penalty", out.kl_penalty)?;
    record.set_item("value_loss", out.value_loss)?;
    Ok(record)
}

/// A whole PPO-RLHF run in Rust on the stream `random.Random(seed)`, off the GIL and
/// interruptible. Updates `theta` in place and returns the history arrays; warns
/// (`KLWarning`) once the running mean KL passes `kl_threshold`, a run that diverges
/// included. A run whose logits overflow raises `FloatingPointError` naming the step, `lr`
/// and `beta`; an interrupted run changes nothing.
#[pyfunction]
#[pyo3(signature = (
    theta, r#ref, w, steps, seed, eps, beta, lr, ppo_epochs, kl_ctl, target, horizon,
    kl_penalty="full", vf_coef=0.0, cliprange_value=0.2, value=None, kl_threshold=f64::INFINITY,
))]
#[allow(clippy::too_many_arguments)]
fn train_rlhf<'py>(
    theta: &Bound<'py, PyAny>,
    r#ref: &Bound<'py, PyAny>,
    w: &Bound<'py, PyAny>,
    #[pyo3(from_py_with = args::steps)] steps: i64,
    seed: SeedKey,
    #[pyo3(from_py_with = args::eps)] eps: f64,
    #[pyo3(from_py_with = args::beta)] beta: f64,
    #[pyo3(from_py_with = args::lr)] lr: f64,
    #[pyo3(from_py_with = args::ppo_epochs)] ppo_epochs: i64,
    #[pyo3(from_py_with = args::kl_ctl)] kl_ctl: &str,
    target: &Bound<'py, PyAny>,
    horizon: &Bound<'py, PyAny>,
    #[pyo3(from_py_with = args::kl_penalty)] kl_penalty: &str,
    #[pyo3(from_py_with = args::vf_coef)] vf_coef: f64,
    #[pyo3(from_py_with = args::cliprange_value)] cliprange_value: f64,
    value: Option<&Bound<'py, PyAny>>,
    #[pyo3(from_py_with = args::kl_threshold)] kl_threshold: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let py = theta.py();
    let kl_threshold = kl_threshold_arg(kl_threshold)?;
    let mut table = policy_table("theta", theta, true)?;
    let ref_table = policy_table("ref", r#ref, false)?;
    frozen_copy(theta, r#ref)?;
    let weights = vocab_weights(w)?;
    check_not_length_only(&weights)?;
    let steps = count("steps", steps, 1)?;
    let params = PpoParams::new(eps, lr, ppo_epochs)?.completed(kl_penalty, vf_coef, cliprange_value)?;
    // As the reference, only the controller that uses `target` (`horizon`) reads it.
    let target = if kl_ctl == "fixed" { f64::NAN } else { args::target(target)? };
    let horizon = if kl_ctl == "adaptive" { args::horizon(horizon)? } else { f64::NAN };
    let controller = KlController::make(kl_ctl, beta, target, horizon)?;
    let mut values = prompt_values(value)?;

    let mut history = RlhfHistory::default();
    let monitor = Monitor::default();
    let outcome = run_detached(py, &monitor, None, None, || {
        engines::ppo::train_rlhf(
            &mut table,
            &ref_table,
            &weights,
            steps,
            &seed.0,
            &params,
            controller,
            &mut values,
            &mut history,
            &monitor,
        )
    });
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(interrupted) => {
            // theta stays as it was; the history is freed off the way back to Python.
            drop_in_background(history);
            return Err(interrupted);
        }
    };
    // Like the reference, a run that diverges leaves theta as it stood at the failing step,
    // and the KL monitor has seen every step before it.
    write_back_table(theta, &table)?;
    write_back_values(value, &values)?;
    warn_kl(py, &history.mean_kl, kl_threshold)?;
    outcome?;

    history_dict(
        py,
        vec![("prompt", history.prompt), ("token", history.token)],
        vec![
            ("score", history.score),
            ("kl", history.kl),
            ("reward", history.reward),
            ("clip_frac", history.clip_frac),
            ("beta", history.beta),
            ("mean_kl", history.mean_kl),
            ("kl_penalty", history.kl_penalty),
            ("value_loss", history.value_loss),
        ],
    )
}

/// Exact expected RM score of the policy, averaged over the prompts.
#[pyfunction]
fn expected_score(theta: &Bound<'_, PyAny>, w: &Bound<'_, PyAny>) -> PyResult<f64> {
    Ok(policy::expected_score(&policy_table("theta", theta, false)?, &vocab_weights(w)?)?)
}

/// Exact `KL(pi_theta || pi_ref)` averaged over the prompts, in log space.
#[pyfunction]
fn policy_kl(theta: &Bound<'_, PyAny>, r#ref: &Bound<'_, PyAny>) -> PyResult<f64> {
    let theta_table = policy_table("theta", theta, false)?;
    Ok(policy::policy_kl(&theta_table, &policy_table("ref", r#ref, false)?, VOCAB.len())?)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(sigmoid, m)?)?;
    m.add_function(wrap_pyfunction!(softmax, m)?)?;
    m.add_function(wrap_pyfunction!(log_softmax, m)?)?;
    m.add_function(wrap_pyfunction!(softmax_rows, m)?)?;
    m.add_function(wrap_pyfunction!(log_softmax_rows, m)?)?;
    m.add_function(wrap_pyfunction!(kl, m)?)?;
    m.add_function(wrap_pyfunction!(kl_k1, m)?)?;
    m.add_function(wrap_pyfunction!(kl_k2, m)?)?;
    m.add_function(wrap_pyfunction!(kl_k3, m)?)?;
    m.add_function(wrap_pyfunction!(sample, m)?)?;
    m.add_function(wrap_pyfunction!(clipped_surrogate, m)?)?;
    m.add_function(wrap_pyfunction!(clipped_surrogate_grad, m)?)?;
    m.add_function(wrap_pyfunction!(rlhf_step, m)?)?;
    m.add_function(wrap_pyfunction!(train_rlhf, m)?)?;
    m.add_function(wrap_pyfunction!(expected_score, m)?)?;
    m.add_function(wrap_pyfunction!(policy_kl, m)?)?;
    Ok(())
}
