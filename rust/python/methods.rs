//! The methods set against PPO (METHODS.md sections 2-4): DPO with TRL's loss family, GRPO,
//! Best-of-N. Convert, validate (messages name the argument), run the core off the GIL,
//! hand back dicts of floats or numpy arrays. No numerics here.

use pyo3::exceptions::PyFloatingPointError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::args;
use super::convert::{
    check_rng, count, dpo_pairs, dpo_params, frozen_copy, grpo_params, history_dict, kl_threshold_arg, policy_table,
    prompt_index, response_tokens, vocab_weights, warn_kl, write_back_row, write_back_table, SeedKey,
};
use super::detached::run_detached;
use crate::engines::dpo::DpoHistory;
use crate::engines::driver::Monitor;
use crate::engines::grpo::GrpoHistory;
use crate::error::{drop_in_background, py_float, vec_with_capacity};
use crate::lesson::{PROMPTS, VOCAB};
use crate::{engines, methods};

const V: usize = VOCAB.len();

/// One DPO step of any TRL loss type on `theta[x]` (updated in place). Returns the loss
/// before the step and TRL's metrics: `{"loss", "rewards/chosen", "rewards/rejected",
/// "rewards/margins", "rewards/accuracies"}`. A step whose logits overflow raises
/// `FloatingPointError` and changes nothing.
#[pyfunction]
#[pyo3(signature = (theta, r#ref, x, y_pos, y_neg, beta=0.1, lr=0.05, loss_type="sigmoid", label_smoothing=0.0))]
#[allow(clippy::too_many_arguments)]
fn dpo_step_metrics<'py>(
    theta: &Bound<'py, PyAny>,
    r#ref: &Bound<'py, PyAny>,
    x: &Bound<'py, PyAny>,
    y_pos: &Bound<'py, PyAny>,
    y_neg: &Bound<'py, PyAny>,
    #[pyo3(from_py_with = args::beta)] beta: f64,
    #[pyo3(from_py_with = args::lr)] lr: f64,
    #[pyo3(from_py_with = args::loss_type)] loss_type: &str,
    #[pyo3(from_py_with = args::label_smoothing)] label_smoothing: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let py = theta.py();
    let theta_table = policy_table("theta", theta, true)?;
    let ref_table = policy_table("ref", r#ref, false)?;
    frozen_copy(theta, r#ref)?;
    let row = prompt_index("x", x)?;
    let ids = |tokens: Vec<usize>| tokens.into_iter().map(|t| t as u32).collect::<Vec<u32>>();
    let chosen = ids(response_tokens("y_pos", y_pos)?);
    let rejected = ids(response_tokens("y_neg", y_neg)?);
    let params = dpo_params(beta, lr, loss_type, label_smoothing)?;
    let mut logits = theta_table[row * V..(row + 1) * V].to_vec();
    let out =
        methods::dpo::dpo_step_metrics(&mut logits, &ref_table[row * V..(row + 1) * V], &chosen, &rejected, &params)?;
    write_back_row(theta, row, &logits)?;
    let record = PyDict::new(py);
    record.set_item("loss", out.loss)?;
    record.set_item("rewards/chosen", out.chosen)?;
    record.set_item("rewards/rejected", out.rejected)?;
    record.set_item("rewards/margins", out.margin)?;
    record.set_item("rewards/accuracies", out.accuracy)?;
    Ok(record)
}

fn dpo_history_dict<'py>(py: Python<'py>, history: DpoHistory) -> PyResult<Bound<'py, PyDict>> {
    history_dict(
        py,
        vec![("prompt", history.prompt)],
        vec![
            ("loss", history.loss),
            ("rewards/chosen", history.chosen),
            ("rewards/rejected", history.rejected),
            ("rewards/margins", history.margin),
            ("rewards/accuracies", history.accuracy),
        ],
    )
}

/// `epochs` passes of the DPO step over `pairs` (triples or TRL rows), in order, or with an
/// int `seed` reshuffled every epoch (`order = list(range(n)); rng.shuffle(order)` on one
/// `random.Random(seed)`). Updates `theta` in place; returns the per-step history
/// (`prompt`, `loss`, `rewards/chosen`, `rewards/rejected`, `rewards/margins`,
/// `rewards/accuracies`, all before each step) as numpy arrays. Runs off the GIL and stops on
/// Ctrl-C (an interrupted run changes nothing); a run whose logits overflow raises
/// `FloatingPointError` naming the step, `lr` and `beta`.
#[pyfunction]
#[pyo3(signature = (theta, r#ref, pairs, epochs=1, beta=0.1, lr=0.05, loss_type="sigmoid", label_smoothing=0.0, seed=None))]
#[allow(clippy::too_many_arguments)]
fn train_dpo<'py>(
    theta: &Bound<'py, PyAny>,
    r#ref: &Bound<'py, PyAny>,
    pairs: &Bound<'py, PyAny>,
    #[pyo3(from_py_with = args::epochs)] epochs: i64,
    #[pyo3(from_py_with = args::beta)] beta: f64,
    #[pyo3(from_py_with = args::lr)] lr: f64,
    #[pyo3(from_py_with = args::loss_type)] loss_type: &str,
    #[pyo3(from_py_with = args::label_smoothing)] label_smoothing: f64,
    seed: Option<SeedKey>,
) -> PyResult<Bound<'py, PyDict>> {
    let py = theta.py();
    let mut table = policy_table("theta", theta, true)?;
    let ref_table = policy_table("ref", r#ref, false)?;
    frozen_copy(theta, r#ref)?;
    let pairs = dpo_pairs(pairs)?;
    let epochs = count("epochs", epochs, 1)?;
    let params = dpo_params(beta, lr, loss_type, label_smoothing)?;
    let seed = seed.map(|s| s.0);
    let monitor = Monitor::default();
    let history = run_detached(py, &monitor, None, None, || {
        engines::dpo::train_dpo(&mut table, &ref_table, V, &pairs, epochs, &params, seed.as_deref(), &monitor)
    })?;
    // Like train_rlhf, a run that diverges leaves theta as it stood at the failing step.
    write_back_table(theta, &table)?;
    dpo_history_dict(py, history?)
}

/// One GRPO step on `theta[prompt]` (updated in place): `num_generations` tokens drawn with
/// `rng.random()`, group-normalised advantages, clipped surrogate and `k3` KL. Returns
/// `{"tokens", "score", "reward_std", "kl", "clip_frac", "loss"}`. A step whose logits
/// overflow raises `FloatingPointError` and changes nothing.
#[pyfunction]
#[pyo3(signature = (theta, r#ref, w, prompt, rng, num_generations=8, beta=0.04, epsilon=0.2, epsilon_high=None, lr=0.05, scale_rewards="group", num_iterations=1))]
#[allow(clippy::too_many_arguments)]
fn grpo_step<'py>(
    theta: &Bound<'py, PyAny>,
    r#ref: &Bound<'py, PyAny>,
    w: &Bound<'py, PyAny>,
    prompt: &Bound<'py, PyAny>,
    rng: &Bound<'py, PyAny>,
    #[pyo3(from_py_with = args::num_generations)] num_generations: i64,
    #[pyo3(from_py_with = args::beta)] beta: f64,
    #[pyo3(from_py_with = args::epsilon)] epsilon: f64,
    #[pyo3(from_py_with = args::epsilon_high)] epsilon_high: Option<f64>,
    #[pyo3(from_py_with = args::lr)] lr: f64,
    #[pyo3(from_py_with = args::scale_rewards)] scale_rewards: &str,
    #[pyo3(from_py_with = args::num_iterations)] num_iterations: i64,
) -> PyResult<Bound<'py, PyDict>> {
    let py = theta.py();
    let theta_table = policy_table("theta", theta, true)?;
    let ref_table = policy_table("ref", r#ref, false)?;
    frozen_copy(theta, r#ref)?;
    let weights = vocab_weights(w)?;
    let x = prompt_index("prompt", prompt)?;
    check_rng(rng)?;
    let params = grpo_params(num_generations, beta, epsilon, epsilon_high, lr, scale_rewards, num_iterations)?;
    let mut uniforms = vec_with_capacity(params.num_generations, "the GRPO group")?;
    for _ in 0..params.num_generations {
        uniforms.push(rng.call_method0("random")?.extract::<f64>()?);
    }
    let mut logits = theta_table[x * V..(x + 1) * V].to_vec();
    let (out, tokens) =
        methods::grpo::grpo_step(&mut logits, &ref_table[x * V..(x + 1) * V], &weights, &uniforms, &params)?;
    write_back_row(theta, x, &logits)?;
    let record = PyDict::new(py);
    record.set_item("tokens", PyList::new(py, tokens)?)?;
    record.set_item("score", out.score)?;
    record.set_item("reward_std", out.reward_std)?;
    record.set_item("kl", out.kl)?;
    record.set_item("clip_frac", out.clip_frac)?;
    record.set_item("loss", out.loss)?;
    Ok(record)
}

/// A whole GRPO run in Rust on the stream `random.Random(seed)`: per step
/// `prompt = rng.choice(PROMPTS)`, then the group. Updates `theta` in place; returns the
/// history arrays (`prompt`, `score`, `reward_std`, `kl`, `clip_frac`, `loss`, `mean_kl`);
/// warns (`KLWarning`) once the running mean KL passes `kl_threshold`, a run that diverges
/// included. Runs off the GIL and stops on Ctrl-C (an interrupted run changes nothing); a
/// run whose logits overflow raises `FloatingPointError` naming the step, `lr` and `beta`.
#[pyfunction]
#[pyo3(signature = (theta, r#ref, w, steps, seed, num_generations=8, beta=0.04, epsilon=0.2, epsilon_high=None, lr=0.05, scale_rewards="group", num_iterations=1, kl_threshold=f64::INFINITY))]
#[allow(clippy::too_many_arguments)]
fn train_grpo<'py>(
    theta: &Bound<'py, PyAny>,
    r#ref: &Bound<'py, PyAny>,
    w: &Bound<'py, PyAny>,
    #[pyo3(from_py_with = args::steps)] steps: i64,
    seed: SeedKey,
    #[pyo3(from_py_with = args::num_generations)] num_generations: i64,
    #[pyo3(from_py_with = args::beta)] beta: f64,
    #[pyo3(from_py_with = args::epsilon)] epsilon: f64,
    #[pyo3(from_py_with = args::epsilon_high)] epsilon_high: Option<f64>,
    #[pyo3(from_py_with = args::lr)] lr: f64,
    #[pyo3(from_py_with = args::scale_rewards)] scale_rewards: &str,
    #[pyo3(from_py_with = args::num_iterations)] num_iterations: i64,
    #[pyo3(from_py_with = args::kl_threshold)] kl_threshold: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let py = theta.py();
    let kl_threshold = kl_threshold_arg(kl_threshold)?;
    let mut table = policy_table("theta", theta, true)?;
    let ref_table = policy_table("ref", r#ref, false)?;
    frozen_copy(theta, r#ref)?;
    let weights = vocab_weights(w)?;
    methods::reward_checks::check_not_length_only(&weights)?;
    let steps = count("steps", steps, 1)?;
    let params = grpo_params(num_generations, beta, epsilon, epsilon_high, lr, scale_rewards, num_iterations)?;
    let mut history = GrpoHistory::default();
    let monitor = Monitor::default();
    let outcome = run_detached(py, &monitor, None, None, || {
        engines::grpo::train_grpo(&mut table, &ref_table, &weights, steps, &seed.0, &params, &mut history, &monitor)
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
    warn_kl(py, &history.mean_kl, kl_threshold)?;
    outcome?;

    history_dict(
        py,
        vec![("prompt", history.prompt)],
        vec![
            ("score", history.score),
            ("reward_std", history.reward_std),
            ("kl", history.kl),
            ("clip_frac", history.clip_frac),
            ("loss", history.loss),
            ("mean_kl", history.mean_kl),
        ],
    )
}

/// Best-of-`n` from `policy` against `w`: the exact law of the kept token and its
/// statistics, plus, with `samples > 0`, a Monte-Carlo run on `random.Random(seed)` (off
/// the GIL, stopped by Ctrl-C even inside a draw of `n = 10**9`). Returns
/// `{"expected_score", "kl_analytic", "kl_exact", "distribution" {prompt: the law of the
/// kept token}, "sampled_score" (None without samples)}`.
#[pyfunction]
#[pyo3(signature = (policy, w, n, samples=0, seed=SeedKey::default()), text_signature = "(policy, w, n, samples=0, seed=0)")]
fn best_of_n<'py>(
    py: Python<'py>,
    policy: &Bound<'py, PyAny>,
    w: &Bound<'py, PyAny>,
    #[pyo3(from_py_with = args::n)] n: i64,
    #[pyo3(from_py_with = args::samples)] samples: i64,
    seed: SeedKey,
) -> PyResult<Bound<'py, PyDict>> {
    let table = policy_table("policy", policy, false)?;
    let weights = vocab_weights(w)?;
    let monitor = Monitor::default();
    let out = run_detached(py, &monitor, None, None, || {
        engines::best_of_n::best_of_n(&table, &weights, n, samples, &seed.0, &monitor)
    })??;
    let scores = [("expected_score", out.expected_score), ("kl_analytic", out.kl_analytic), ("kl_exact", out.kl_exact)];
    let sampled = out.sampled_score.map(|score| ("sampled_score", score));
    if let Some((key, value)) = scores.into_iter().chain(sampled).find(|(_, value)| !value.is_finite()) {
        return Err(PyFloatingPointError::new_err(format!(
            "best_of_n overflowed: result['{key}'] is {}",
            py_float(value)
        )));
    }
    let result = PyDict::new(py);
    result.set_item("expected_score", out.expected_score)?;
    result.set_item("kl_analytic", out.kl_analytic)?;
    result.set_item("kl_exact", out.kl_exact)?;
    let distribution = PyDict::new(py);
    for (prompt, row) in PROMPTS.iter().zip(out.p_bon.chunks_exact(V)) {
        distribution.set_item(prompt, PyList::new(py, row)?)?;
    }
    result.set_item("distribution", distribution)?;
    result.set_item("sampled_score", out.sampled_score)?;
    Ok(result)
}

/// Refuses a reward model whose every `VOCAB` weight is equal (it scores by length alone).
#[pyfunction]
fn check_not_length_only(w: &Bound<'_, PyAny>) -> PyResult<()> {
    Ok(methods::reward_checks::check_not_length_only(&vocab_weights(w)?)?)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(dpo_step_metrics, m)?)?;
    m.add_function(wrap_pyfunction!(train_dpo, m)?)?;
    m.add_function(wrap_pyfunction!(grpo_step, m)?)?;
    m.add_function(wrap_pyfunction!(train_grpo, m)?)?;
    m.add_function(wrap_pyfunction!(best_of_n, m)?)?;
    m.add_function(wrap_pyfunction!(check_not_length_only, m)?)?;
    Ok(())
}
