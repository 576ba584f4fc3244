//! The methods set against PPO (METHODS.md sections 2-4): DPO with TRL's loss family, GRPO,
//! Best-of-N, and their sweeps. Convert, validate (messages name the argument), run the core
//! off the GIL, hand back dicts of floats or numpy arrays. No numerics here.

use numpy::{IntoPyArray, PyArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyMapping, PySequence, PyString};

use super::convert::{
    check_rng, frozen_copy, history_dict, policy_table, prompt_index, response_tokens, vocab_weights, write_back_row,
    write_back_table, SeedKey,
};
use super::sweep::run_detached;
use crate::best_of_n as bon;
use crate::data::{PROMPTS, VOCAB};
use crate::dpo::{self, DpoHistory, DpoPairs, DpoParams, LossType};
use crate::grpo::{self, GrpoParams, ScaleRewards};
use crate::methods_sweep::{
    self, BonRunSpec, DpoRunSpec, DpoSweepSpec, GrpoRunSpec, GrpoSweepSpec, BON_FIELDS, DPO_HISTORY_FIELDS,
    DPO_SUMMARY_FIELDS, GRPO_HISTORY_FIELDS, GRPO_SUMMARY_FIELDS,
};
use crate::sweep::Monitor;

const V: usize = VOCAB.len();

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".to_owned())
}

fn count_arg(name: &str, value: i64, minimum: i64) -> PyResult<usize> {
    if value < minimum {
        return Err(PyValueError::new_err(format!("{name} must be >= {minimum}, got {value}")));
    }
    usize::try_from(value).map_err(|_| PyValueError::new_err(format!("{name} is too large, got {value}")))
}

fn dpo_params(beta: f64, lr: f64, loss_type: &str, label_smoothing: f64) -> PyResult<DpoParams> {
    Ok(DpoParams::new(beta, lr, LossType::parse(loss_type)?, label_smoothing)?)
}

#[allow(clippy::too_many_arguments)]
fn grpo_params(
    num_generations: i64,
    beta: f64,
    epsilon: f64,
    epsilon_high: Option<f64>,
    lr: f64,
    scale_rewards: &str,
    num_iterations: i64,
) -> PyResult<GrpoParams> {
    Ok(GrpoParams::new(
        num_generations,
        beta,
        epsilon,
        epsilon_high,
        lr,
        ScaleRewards::parse(scale_rewards)?,
        num_iterations,
    )?)
}

/// One DPO step of any TRL loss type on `theta[x]` (updated in place). Returns the loss
/// before the step and TRL's metrics: `{"loss", "rewards/chosen", "rewards/rejected",
/// "rewards/margins", "rewards/accuracies"}`.
#[pyfunction]
#[pyo3(signature = (theta, r#ref, x, y_pos, y_neg, beta=0.1, lr=0.05, loss_type="sigmoid", label_smoothing=0.0))]
#[allow(clippy::too_many_arguments)]
fn dpo_step_metrics<'py>(
    theta: &Bound<'py, PyAny>,
    r#ref: &Bound<'py, PyAny>,
    x: &Bound<'py, PyAny>,
    y_pos: &Bound<'py, PyAny>,
    y_neg: &Bound<'py, PyAny>,
    beta: f64,
    lr: f64,
    loss_type: &str,
    label_smoothing: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let py = theta.py();
    let theta_table = policy_table("theta", theta, true)?;
    let ref_table = policy_table("ref", r#ref, false)?;
    frozen_copy(theta, r#ref)?;
    let row = prompt_index(x)?;
    let ids = |tokens: Vec<usize>| tokens.into_iter().map(|t| t as u32).collect::<Vec<u32>>();
    let chosen = ids(response_tokens("y_pos", y_pos)?);
    let rejected = ids(response_tokens("y_neg", y_neg)?);
    let params = dpo_params(beta, lr, loss_type, label_smoothing)?;
    let mut logits = theta_table[row * V..(row + 1) * V].to_vec();
    let out = dpo::dpo_step_metrics(&mut logits, &ref_table[row * V..(row + 1) * V], &chosen, &rejected, &params)?;
    write_back_row(theta, row, &logits)?;
    let record = PyDict::new(py);
    record.set_item("loss", out.loss)?;
    record.set_item("rewards/chosen", out.chosen)?;
    record.set_item("rewards/rejected", out.rejected)?;
    record.set_item("rewards/margins", out.margin)?;
    record.set_item("rewards/accuracies", out.accuracy)?;
    Ok(record)
}

/// `(prompt, chosen, rejected)` of pair `i`: a row with those keys, or a triple.
fn pair_fields<'py>(
    i: usize,
    item: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    if let Ok(row) = item.cast::<PyMapping>() {
        // The reference's message: every missing key, sorted.
        let mut missing = Vec::new();
        for key in ["chosen", "prompt", "rejected"] {
            if !row.contains(key)? {
                missing.push(format!("'{key}'"));
            }
        }
        if !missing.is_empty() {
            return Err(PyValueError::new_err(format!("pairs[{i}] lacks [{}]", missing.join(", "))));
        }
        return Ok((row.get_item("prompt")?, row.get_item("chosen")?, row.get_item("rejected")?));
    }
    let not_a_triple = || {
        PyTypeError::new_err(format!(
            "pairs[{i}] must be a (prompt, chosen, rejected) triple or row, got {}",
            type_name(item)
        ))
    };
    if item.is_instance_of::<PyString>() {
        return Err(not_a_triple());
    }
    let sequence = item.cast::<PySequence>().map_err(|_| not_a_triple())?;
    let len = sequence.len()?;
    if len != 3 {
        return Err(PyValueError::new_err(format!(
            "pairs[{i}] must be a (prompt, chosen, rejected) triple, got {len} items"
        )));
    }
    Ok((sequence.get_item(0)?, sequence.get_item(1)?, sequence.get_item(2)?))
}

/// DPO pairs (triples or TRL rows) as prompt rows and `VOCAB` token ids, in token order.
fn dpo_pairs(pairs: &Bound<'_, PyAny>) -> PyResult<DpoPairs> {
    if pairs.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(
            "pairs must be a sequence of (prompt, chosen, rejected) triples or rows, got str",
        ));
    }
    let iter = pairs.try_iter().map_err(|_| {
        PyTypeError::new_err(format!(
            "pairs must be a sequence of (prompt, chosen, rejected) triples or rows, got {}",
            type_name(pairs)
        ))
    })?;
    let mut out = DpoPairs::new();
    for (i, item) in iter.enumerate() {
        let item = item?;
        let (x, chosen, rejected) = pair_fields(i, &item)?;
        let text: String = x
            .extract()
            .map_err(|_| PyTypeError::new_err(format!("pairs[{i}] prompt must be a str, got {}", type_name(&x))))?;
        let prompt = PROMPTS.iter().position(|&p| p == text).ok_or_else(|| {
            PyValueError::new_err(format!(
                "pairs[{i}] has prompt {}, unknown; known prompts: ['help me', 'answer me', 'explain this']",
                x.repr().map(|r| r.to_string()).unwrap_or(text.clone())
            ))
        })?;
        let ids = |name: &str, y: &Bound<'_, PyAny>| -> PyResult<Vec<u32>> {
            Ok(response_tokens(&format!("pairs[{i}] {name}"), y)?.into_iter().map(|t| t as u32).collect())
        };
        out.push(prompt as u32, &ids("chosen", &chosen)?, &ids("rejected", &rejected)?);
    }
    if out.is_empty() {
        return Err(PyValueError::new_err("pairs must not be empty"));
    }
    Ok(out)
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
/// `rewards/accuracies`, all before each step) as numpy arrays.
#[pyfunction]
#[pyo3(signature = (theta, r#ref, pairs, epochs=1, beta=0.1, lr=0.05, loss_type="sigmoid", label_smoothing=0.0, seed=None))]
#[allow(clippy::too_many_arguments)]
fn train_dpo<'py>(
    theta: &Bound<'py, PyAny>,
    r#ref: &Bound<'py, PyAny>,
    pairs: &Bound<'py, PyAny>,
    epochs: i64,
    beta: f64,
    lr: f64,
    loss_type: &str,
    label_smoothing: f64,
    seed: Option<SeedKey>,
) -> PyResult<Bound<'py, PyDict>> {
    let py = theta.py();
    let mut table = policy_table("theta", theta, true)?;
    let ref_table = policy_table("ref", r#ref, false)?;
    frozen_copy(theta, r#ref)?;
    let pairs = dpo_pairs(pairs)?;
    let epochs = count_arg("epochs", epochs, 1)?;
    let params = dpo_params(beta, lr, loss_type, label_smoothing)?;
    let seed = seed.map(|s| s.0);
    let history = py.detach(|| dpo::train_dpo(&mut table, &ref_table, V, &pairs, epochs, &params, seed.as_deref()));
    // Like train_rlhf, a run that diverges leaves theta as it stood at the failing step.
    write_back_table(theta, &table)?;
    dpo_history_dict(py, history?)
}

/// One GRPO step on `theta[prompt]` (updated in place): `num_generations` tokens drawn with
/// `rng.random()`, group-normalised advantages, clipped surrogate and `k3` KL. Returns
/// `{"tokens", "score", "reward_std", "kl", "clip_frac", "loss"}`.
#[pyfunction]
#[pyo3(signature = (theta, r#ref, w, prompt, rng, num_generations=8, beta=0.04, epsilon=0.2, epsilon_high=None, lr=0.05, scale_rewards="group", num_iterations=1))]
#[allow(clippy::too_many_arguments)]
fn grpo_step<'py>(
    theta: &Bound<'py, PyAny>,
    r#ref: &Bound<'py, PyAny>,
    w: &Bound<'py, PyAny>,
    prompt: &Bound<'py, PyAny>,
    rng: &Bound<'py, PyAny>,
    num_generations: i64,
    beta: f64,
    epsilon: f64,
    epsilon_high: Option<f64>,
    lr: f64,
    scale_rewards: &str,
    num_iterations: i64,
) -> PyResult<Bound<'py, PyDict>> {
    let py = theta.py();
    let theta_table = policy_table("theta", theta, true)?;
    let ref_table = policy_table("ref", r#ref, false)?;
    frozen_copy(theta, r#ref)?;
    let weights = vocab_weights(w)?;
    let x = prompt_index(prompt)?;
    check_rng(rng)?;
    let params = grpo_params(num_generations, beta, epsilon, epsilon_high, lr, scale_rewards, num_iterations)?;
    let mut uniforms = Vec::with_capacity(params.num_generations);
    for _ in 0..params.num_generations {
        uniforms.push(rng.call_method0("random")?.extract::<f64>()?);
    }
    let mut logits = theta_table[x * V..(x + 1) * V].to_vec();
    let (out, tokens) = grpo::grpo_step(&mut logits, &ref_table[x * V..(x + 1) * V], &weights, &uniforms, &params)?;
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
/// history arrays (`prompt`, `score`, `reward_std`, `kl`, `clip_frac`, `loss`, `mean_kl`).
#[pyfunction]
#[pyo3(signature = (theta, r#ref, w, steps, seed, num_generations=8, beta=0.04, epsilon=0.2, epsilon_high=None, lr=0.05, scale_rewards="group", num_iterations=1))]
#[allow(clippy::too_many_arguments)]
fn train_grpo<'py>(
    theta: &Bound<'py, PyAny>,
    r#ref: &Bound<'py, PyAny>,
    w: &Bound<'py, PyAny>,
    steps: i64,
    seed: SeedKey,
    num_generations: i64,
    beta: f64,
    epsilon: f64,
    epsilon_high: Option<f64>,
    lr: f64,
    scale_rewards: &str,
    num_iterations: i64,
) -> PyResult<Bound<'py, PyDict>> {
    let py = theta.py();
    let mut table = policy_table("theta", theta, true)?;
    let ref_table = policy_table("ref", r#ref, false)?;
    frozen_copy(theta, r#ref)?;
    let weights = vocab_weights(w)?;
    grpo::check_not_length_only(&weights)?;
    let steps = count_arg("steps", steps, 1)?;
    let params = grpo_params(num_generations, beta, epsilon, epsilon_high, lr, scale_rewards, num_iterations)?;
    let history = py.detach(|| grpo::train_grpo(&mut table, &ref_table, &weights, steps, &seed.0, &params));
    write_back_table(theta, &table)?;
    let history = history?;

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
/// statistics, plus, with `samples > 0`, a Monte-Carlo run on `random.Random(seed)`.
/// Returns `{"expected_score", "kl_analytic", "kl_exact", "distribution" {prompt: the law
/// of the kept token}, "sampled_score" (None without samples)}`.
#[pyfunction]
#[pyo3(signature = (policy, w, n, samples=0, seed=SeedKey::default()), text_signature = "(policy, w, n, samples=0, seed=0)")]
fn best_of_n<'py>(
    py: Python<'py>,
    policy: &Bound<'py, PyAny>,
    w: &Bound<'py, PyAny>,
    n: i64,
    samples: i64,
    seed: SeedKey,
) -> PyResult<Bound<'py, PyDict>> {
    let table = policy_table("policy", policy, false)?;
    let weights = vocab_weights(w)?;
    let out = py.detach(|| bon::best_of_n(&table, &weights, n, samples, &seed.0))?;
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

/// One DPO sweep run: `(beta, lr, loss_type, label_smoothing, epochs, seed or None)`.
type DpoRunTuple = (f64, f64, String, f64, i64, Option<SeedKey>);

/// Every DPO run of `runs` over the same `pairs` from the same starting policy, in
/// parallel. Returns run-major numpy arrays: `prompt [run, kept]` (-1 past a run's end),
/// `history [run, field, kept]` (NaN past a run's end; fields in `history_fields`),
/// `final_theta [run, P, V]`, `summary [run, field]` (fields in `summary_fields`).
#[pyfunction]
#[pyo3(signature = (theta, r#ref, pairs, runs, w=None, record_every=1, n_threads=None, progress=None))]
#[allow(clippy::too_many_arguments)]
fn sweep_dpo<'py>(
    py: Python<'py>,
    theta: &Bound<'py, PyAny>,
    r#ref: &Bound<'py, PyAny>,
    pairs: &Bound<'py, PyAny>,
    runs: Vec<DpoRunTuple>,
    w: Option<&Bound<'py, PyAny>>,
    record_every: i64,
    n_threads: Option<usize>,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let theta0 = policy_table("theta", theta, false)?;
    let reference = policy_table("ref", r#ref, false)?;
    let pairs = dpo_pairs(pairs)?;
    let weights = w.map(vocab_weights).transpose()?;
    let record_every = count_arg("record_every", record_every, 0)?;
    let specs = runs
        .into_iter()
        .map(|(beta, lr, loss_type, label_smoothing, epochs, seed)| {
            Ok(DpoRunSpec {
                params: dpo_params(beta, lr, &loss_type, label_smoothing)?,
                epochs: count_arg("epochs", epochs, 1)?,
                shuffle_seed: seed.map(|s| s.0),
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    let spec = DpoSweepSpec {
        theta0: &theta0,
        reference: &reference,
        vocab_size: V,
        pairs: &pairs,
        weights: weights.as_deref(),
        record_every,
    };
    let monitor = Monitor::default();
    let out = run_detached(py, &monitor, n_threads, progress, || methods_sweep::sweep_dpo(&spec, &specs, &monitor))?;
    let (n, kept, fields) = (out.n_runs, out.n_recorded, DPO_HISTORY_FIELDS.len());
    let result = PyDict::new(py);
    result.set_item("prompt", out.prompt.into_pyarray(py).reshape([n, kept])?)?;
    result.set_item("history", out.history.into_pyarray(py).reshape([n, fields, kept])?)?;
    result.set_item("history_fields", PyList::new(py, DPO_HISTORY_FIELDS)?)?;
    result.set_item("final_theta", out.final_theta.into_pyarray(py).reshape([n, PROMPTS.len(), V])?)?;
    result.set_item("summary", out.summary.into_pyarray(py).reshape([n, DPO_SUMMARY_FIELDS.len()])?)?;
    result.set_item("summary_fields", PyList::new(py, DPO_SUMMARY_FIELDS)?)?;
    Ok(result)
}

/// One GRPO sweep run: `(seed, num_generations, beta, epsilon, epsilon_high or None, lr,
/// scale_rewards, num_iterations)`.
type GrpoRunTuple = (SeedKey, i64, f64, f64, Option<f64>, f64, String, i64);

/// Every GRPO run of `runs` from the same starting policy, in parallel. Returns run-major
/// numpy arrays: `prompt [run, kept]`, `history [run, field, kept]` (fields in
/// `history_fields`), `final_theta [run, P, V]`, `summary [run, field]`.
#[pyfunction]
#[pyo3(signature = (theta, r#ref, w, steps, runs, record_every=1, n_threads=None, progress=None))]
#[allow(clippy::too_many_arguments)]
fn sweep_grpo<'py>(
    py: Python<'py>,
    theta: &Bound<'py, PyAny>,
    r#ref: &Bound<'py, PyAny>,
    w: &Bound<'py, PyAny>,
    steps: i64,
    runs: Vec<GrpoRunTuple>,
    record_every: i64,
    n_threads: Option<usize>,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let theta0 = policy_table("theta", theta, false)?;
    let reference = policy_table("ref", r#ref, false)?;
    let weights = vocab_weights(w)?;
    let steps = count_arg("steps", steps, 1)?;
    let record_every = count_arg("record_every", record_every, 0)?;
    let specs = runs
        .into_iter()
        .map(|(seed, g, beta, epsilon, epsilon_high, lr, scale_rewards, iterations)| {
            Ok(GrpoRunSpec {
                seed_key: seed.0,
                params: grpo_params(g, beta, epsilon, epsilon_high, lr, &scale_rewards, iterations)?,
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    let spec = GrpoSweepSpec { theta0: &theta0, reference: &reference, weights: &weights, steps, record_every };
    let monitor = Monitor::default();
    let out = run_detached(py, &monitor, n_threads, progress, || methods_sweep::sweep_grpo(&spec, &specs, &monitor))?;
    let (n, kept, fields) = (out.n_runs, out.n_recorded, GRPO_HISTORY_FIELDS.len());
    let result = PyDict::new(py);
    result.set_item("prompt", out.prompt.into_pyarray(py).reshape([n, kept])?)?;
    result.set_item("history", out.history.into_pyarray(py).reshape([n, fields, kept])?)?;
    result.set_item("history_fields", PyList::new(py, GRPO_HISTORY_FIELDS)?)?;
    result.set_item("final_theta", out.final_theta.into_pyarray(py).reshape([n, PROMPTS.len(), V])?)?;
    result.set_item("summary", out.summary.into_pyarray(py).reshape([n, GRPO_SUMMARY_FIELDS.len()])?)?;
    result.set_item("summary_fields", PyList::new(py, GRPO_SUMMARY_FIELDS)?)?;
    Ok(result)
}

/// Every Best-of-N run of `runs` (`(n, samples, seed)` each) for one policy, in parallel.
/// Returns `{"results": [run, field], "fields": [...]}` (`sampled_score` NaN without samples).
#[pyfunction]
#[pyo3(signature = (policy, w, runs, n_threads=None, progress=None))]
fn sweep_best_of_n<'py>(
    py: Python<'py>,
    policy: &Bound<'py, PyAny>,
    w: &Bound<'py, PyAny>,
    runs: Vec<(i64, i64, SeedKey)>,
    n_threads: Option<usize>,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let table = policy_table("policy", policy, false)?;
    let weights = vocab_weights(w)?;
    let specs: Vec<BonRunSpec> =
        runs.into_iter().map(|(n, samples, seed)| BonRunSpec { n, samples, seed_key: seed.0 }).collect();
    let monitor = Monitor::default();
    let out = run_detached(py, &monitor, n_threads, progress, || {
        methods_sweep::sweep_best_of_n(&table, &weights, &specs, &monitor)
    })?;
    let result = PyDict::new(py);
    result.set_item("results", out.into_pyarray(py).reshape([specs.len(), BON_FIELDS.len()])?)?;
    result.set_item("fields", PyList::new(py, BON_FIELDS)?)?;
    Ok(result)
}

/// Refuses a reward model whose every `VOCAB` weight is equal (it scores by length alone).
#[pyfunction]
fn check_not_length_only(w: &Bound<'_, PyAny>) -> PyResult<()> {
    Ok(grpo::check_not_length_only(&vocab_weights(w)?)?)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(dpo_step_metrics, m)?)?;
    m.add_function(wrap_pyfunction!(train_dpo, m)?)?;
    m.add_function(wrap_pyfunction!(grpo_step, m)?)?;
    m.add_function(wrap_pyfunction!(train_grpo, m)?)?;
    m.add_function(wrap_pyfunction!(best_of_n, m)?)?;
    m.add_function(wrap_pyfunction!(sweep_dpo, m)?)?;
    m.add_function(wrap_pyfunction!(sweep_grpo, m)?)?;
    m.add_function(wrap_pyfunction!(sweep_best_of_n, m)?)?;
    m.add_function(wrap_pyfunction!(check_not_length_only, m)?)?;
    Ok(())
}
