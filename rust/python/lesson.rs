//! The lesson's drop-ins on the Rust core: kernels, the PPO-RLHF step and run, a policy's
//! exact statistics. Convert, validate (messages name the argument), call the core.

use numpy::{IntoPyArray, PyArray2, PyArrayMethods, PyReadonlyArray2};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::args;
use super::convert::{
    check_rng, count, f64_vec, finite_result, finite_results, frozen_copy, history_dict, int, kl_threshold_arg,
    policy_table, prompt_index, prompt_values, type_name, vocab_weights, warn_kl, write_back_row, write_back_table,
    write_back_values, SeedKey,
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

/// The logistic function ``1 / (1 + exp(-z))``, stable for any input.
///
/// It never evaluates ``exp`` of a large positive number, so it neither overflows nor warns:
/// ``sigmoid(-1000.0)`` is ``0.0`` and ``sigmoid(1000.0)`` is ``1.0``.
///
/// Parameters
/// ----------
/// z : float
///     Any real number; infinities allowed.
///
/// Returns
/// -------
/// float
///     In ``[0, 1]``.
///
/// Raises
/// ------
/// TypeError
///     ``z`` is not a real number: ``"z must be a real number, got str"``.
/// ValueError
///     ``z`` is NaN: ``"z must not be NaN"``.
///
/// Examples
/// --------
/// >>> rl.sigmoid(0.0), round(rl.sigmoid(2.0), 4), rl.sigmoid(-1000.0)
/// (0.5, 0.8808, 0.0)
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
    finite_results("log_softmax", core_softmax::log_softmax(&f64_vec("z", z)?)?)
}

fn map_rows<'py>(
    z: PyReadonlyArray2<'py, f64>,
    function: &str,
    kernel: fn(&[f64], &mut [f64]),
) -> PyResult<Bound<'py, PyArray2<f64>>> {
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
    finite_results(function, out)?.into_pyarray(py).reshape([rows, cols])
}

/// Row-wise softmax of a float64 matrix.
#[pyfunction]
fn softmax_rows<'py>(z: PyReadonlyArray2<'py, f64>) -> PyResult<Bound<'py, PyArray2<f64>>> {
    map_rows(z, "softmax", core_softmax::softmax_row)
}

/// Row-wise log-softmax of a float64 matrix.
#[pyfunction]
fn log_softmax_rows<'py>(z: PyReadonlyArray2<'py, f64>) -> PyResult<Bound<'py, PyArray2<f64>>> {
    map_rows(z, "log_softmax", core_softmax::log_softmax_row)
}

/// Exact ``KL(p || q) = sum_i p_i (log p_i - log q_i)``, with ``0 log 0 = 0``.
///
/// Parameters
/// ----------
/// p, q : sequence of float
///     Probability distributions of the same length: entries >= 0 summing to 1 (within 1e-6).
///
/// Returns
/// -------
/// float
///     >= 0, finite.
///
/// Raises
/// ------
/// TypeError
///     ``p`` or ``q`` is not a sequence of real numbers (named).
/// ValueError
///     ``p`` or ``q`` is not a distribution (``"p must sum to 1 (within 1e-6), got 0.9"``),
///     their lengths differ (``"p and q must have the same length, got 2 and 3"``), or
///     ``q`` is 0 where ``p`` is not, so that the KL is infinite: ``"q[1] must be > 0 where
///     p[1] > 0 (KL(p || q) is infinite), got 0.0"``.
/// FloatingPointError
///     The result overflows for finite but extreme arguments (logits 1e308 apart, a
///     log-ratio past 709): ``"kl overflowed: the result is inf"``.
///
/// Examples
/// --------
/// >>> round(rl.kl([0.5, 0.5], [0.9, 0.1]), 4)
/// 0.5108
/// >>> round(rl.kl([1.0, 0.0], [0.5, 0.5]), 4)
/// 0.6931
#[pyfunction]
fn kl(p: &Bound<'_, PyAny>, q: &Bound<'_, PyAny>) -> PyResult<f64> {
    let (p, q) = (f64_vec("p", p)?, f64_vec("q", q)?);
    let divergence = core_kl::kl(&p, &q)?;
    if let Some(j) = p.iter().zip(&q).position(|(&p, &q)| q == 0.0 && p > 0.0) {
        return Err(PyValueError::new_err(format!(
            "q[{j}] must be > 0 where p[{j}] > 0 (KL(p || q) is infinite), got {}",
            py_float(q[j])
        )));
    }
    finite_result("kl", divergence)
}

/// Schulman's k1 estimate of ``KL(p || q)`` from one token ``a ~ p``: ``log p(a) - log q(a)``.
///
/// Unbiased, high-variance, and can be negative.
///
/// Parameters
/// ----------
/// logp, logq : float
///     ``log p(a)`` and ``log q(a)`` of the sampled token; finite.
///
/// Returns
/// -------
/// float
///
/// Raises
/// ------
/// TypeError
///     An argument that is not a real number (named).
/// ValueError
///     An argument that is not finite: ``"logp must be finite, got -inf"``.
/// FloatingPointError
///     The result overflows for finite but extreme arguments (logits 1e308 apart, a
///     log-ratio past 709): ``"kl_k1 overflowed: the result is inf"``.
///
/// Examples
/// --------
/// >>> import math
/// >>> round(rl.kl_k1(math.log(0.5), math.log(0.25)), 4)
/// 0.6931
#[pyfunction]
fn kl_k1(#[pyo3(from_py_with = args::logp)] logp: f64, #[pyo3(from_py_with = args::logq)] logq: f64) -> PyResult<f64> {
    finite_result("kl_k1", core_kl::kl_k1(logp, logq)?)
}

/// Schulman's k2 estimate of ``KL(p || q)`` from one token ``a ~ p``.
///
/// ``(log q(a) - log p(a))^2 / 2``: biased, low-variance, never negative.
///
/// Parameters
/// ----------
/// logp, logq : float
///     ``log p(a)`` and ``log q(a)`` of the sampled token; finite.
///
/// Returns
/// -------
/// float
///     >= 0.
///
/// Raises
/// ------
/// TypeError
///     An argument that is not a real number (named).
/// ValueError
///     An argument that is not finite: ``"logq must be finite, got nan"``.
/// FloatingPointError
///     The result overflows for finite but extreme arguments (logits 1e308 apart, a
///     log-ratio past 709): ``"kl_k2 overflowed: the result is inf"``.
///
/// Examples
/// --------
/// >>> import math
/// >>> round(rl.kl_k2(math.log(0.5), math.log(0.25)), 4)
/// 0.2402
#[pyfunction]
fn kl_k2(#[pyo3(from_py_with = args::logp)] logp: f64, #[pyo3(from_py_with = args::logq)] logq: f64) -> PyResult<f64> {
    finite_result("kl_k2", core_kl::kl_k2(logp, logq)?)
}

/// Schulman's k3 estimate of ``KL(p || q)`` from one token ``a ~ p``: ``(r - 1) - log r``.
///
/// ``r = q(a) / p(a)``. Unbiased, low-variance, never negative (GRPO's KL term).
///
/// Parameters
/// ----------
/// logp, logq : float
///     ``log p(a)`` and ``log q(a)`` of the sampled token; finite.
///
/// Returns
/// -------
/// float
///     >= 0.
///
/// Raises
/// ------
/// TypeError
///     An argument that is not a real number (named).
/// ValueError
///     An argument that is not finite: ``"logp must be finite, got inf"``.
/// FloatingPointError
///     The result overflows for finite but extreme arguments (logits 1e308 apart, a
///     log-ratio past 709): ``"kl_k3 overflowed: the result is inf"``.
///
/// Examples
/// --------
/// >>> import math
/// >>> round(rl.kl_k3(math.log(0.5), math.log(0.25)), 4)
/// 0.1931
#[pyfunction]
fn kl_k3(#[pyo3(from_py_with = args::logp)] logp: f64, #[pyo3(from_py_with = args::logq)] logq: f64) -> PyResult<f64> {
    finite_result("kl_k3", core_kl::kl_k3(logp, logq)?)
}

/// Draw an index from ``probs`` by inverse CDF with one ``rng.random()``.
///
/// Returns the first index whose running sum exceeds ``u = rng.random()`` (the last index if
/// rounding leaves the total below ``u``), exactly as the lesson's loop.
///
/// Parameters
/// ----------
/// probs : sequence of float
///     A probability distribution: entries >= 0 summing to 1 (within 1e-6).
/// rng : random.Random
///     Anything with a ``random()`` method; called once.
///
/// Returns
/// -------
/// int
///     An index into ``probs``.
///
/// Raises
/// ------
/// TypeError
///     ``probs`` is not a sequence of real numbers, or ``rng`` has no ``random()``:
///     ``"rng must be a random.Random (anything with a random() method), got int"``.
/// ValueError
///     ``probs`` is not a distribution: ``"probs must be non-negative, got -0.1"``.
///
/// Examples
/// --------
/// >>> import random
/// >>> rl.sample([0.25, 0.25, 0.25, 0.25], random.Random(0))  # u = 0.844...
/// 3
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

/// PPO's clipped objective for one sampled token: ``min(r A, clip(r, 1 - eps, 1 + eps) A)``.
///
/// ``r = pi(a) / pi_old(a)`` with ``pi = softmax(logits)``; the objective is maximised.
///
/// Parameters
/// ----------
/// logits : sequence of float
///     The current logits of the prompt; finite, at least one.
/// a : int
///     The sampled token, an index into ``logits``.
/// p_old_a : float
///     ``pi_old(a)``, the probability the token was sampled with; > 0.
/// advantage : float
///     ``A``; finite.
/// eps : float
///     The clip range, > 0 (the lesson's 0.2).
///
/// Returns
/// -------
/// float
///
/// Raises
/// ------
/// TypeError, ValueError
///     An argument of the wrong type or out of range, named: ``"a must be a token index in
///     [0, 8), got 9"``, ``"p_old_a must be > 0, got 0.0"``.
/// FloatingPointError
///     The result overflows for finite but extreme arguments (logits 1e308 apart, a
///     log-ratio past 709): ``"clipped_surrogate overflowed: the result is -inf"``.
///
/// Examples
/// --------
/// >>> rl.clipped_surrogate([0.0] * 8, 0, 0.125, 1.0, 0.2)  # r = 1
/// 1.0
/// >>> round(rl.clipped_surrogate([1.0] + [0.0] * 7, 0, 0.125, 1.0, 0.2), 4)  # r > 1.2: clipped
/// 1.2
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
    finite_result(
        "clipped_surrogate",
        ppo::clipped_surrogate(&logits, token_index(a, logits.len())?, p_old_a, advantage, eps)?,
    )
}

/// The gradient of :func:`clipped_surrogate` in the logits.
///
/// ``A r (1[j = a] - p_j)`` for each logit ``j``, or all zeros where the objective is clipped
/// (the ratio is outside ``[1 - eps, 1 + eps]`` on the side the advantage pushes to).
///
/// Parameters
/// ----------
/// logits : sequence of float
///     The current logits of the prompt; finite, at least one.
/// a : int
///     The sampled token, an index into ``logits``.
/// p_old_a : float
///     ``pi_old(a)``; > 0.
/// advantage : float
///     ``A``; finite.
/// eps : float
///     The clip range, > 0.
///
/// Returns
/// -------
/// list[float]
///     One entry per logit.
///
/// Raises
/// ------
/// TypeError, ValueError
///     An argument of the wrong type or out of range, named (as :func:`clipped_surrogate`).
/// FloatingPointError
///     The result overflows for finite but extreme arguments (logits 1e308 apart, a
///     log-ratio past 709): ``"clipped_surrogate_grad overflowed: result[0] is inf"``.
///
/// Examples
/// --------
/// >>> [round(g, 4) for g in rl.clipped_surrogate_grad([0.0] * 4, 0, 0.25, 1.0, 0.2)]
/// [0.75, -0.25, -0.25, -0.25]
/// >>> rl.clipped_surrogate_grad([1.0, 0.0, 0.0, 0.0], 0, 0.25, 1.0, 0.2)  # clipped
/// [0.0, 0.0, 0.0, 0.0]
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
    let gradient = ppo::clipped_surrogate_grad(&logits, token_index(a, logits.len())?, p_old_a, advantage, eps)?;
    finite_results("clipped_surrogate_grad", gradient)
}

/// One PPO-RLHF step on ``prompt``: sample a token, reward it, clipped-surrogate updates.
///
/// ``reward = R(prompt, token) - beta * penalty``, where the penalty is the exact
/// ``KL(pi_theta || pi_ref)`` (``kl_penalty="full"``) or Schulman's estimate ``k1``/``k2``/``k3``
/// on the sampled token. Each of ``ppo_epochs`` epochs recomputes the ratio
/// ``pi(a) / pi_old(a)``; an epoch whose ratio is outside the clip region on the side the
/// advantage pushes to is clipped and changes nothing. Mutates ``theta[prompt]``.
///
/// With ``vf_coef == 0`` (the default) the reward is the return and the advantage (no
/// baseline). With ``vf_coef > 0`` a per-prompt value baseline ``value`` (a dict
/// prompt -> float or a list in PROMPTS order, updated in place; ``None`` means zeros)
/// gives ``advantage = reward - value[prompt]``, and every epoch also takes one SGD step
/// of TRL's clipped value loss ``0.5 * max((v - R)^2, (v_clipped - R)^2)`` (docs/METHODS.md
/// section 1).
///
/// Parameters
/// ----------
/// theta : dict[str, list[float]] or numpy.ndarray
///     The policy: prompt -> 8 logits (``VOCAB`` order), or a writeable float64 ``[3, 8]``
///     array in ``PROMPTS`` order; ``theta[prompt]`` is updated in place.
/// ref : dict[str, list[float]] or numpy.ndarray
///     The frozen reference policy, a copy (not sharing storage with ``theta``).
/// w : Mapping[str, float]
///     The reward model (token -> weight); a one-token response scores ``w.get(token, 0.0)``.
/// prompt : str
///     One of ``PROMPTS``.
/// rng : random.Random
///     Anything with a ``random()`` method; called once (the sampled token).
/// eps : float, optional
///     PPO's clip range, > 0 (default 0.2).
/// beta : float, optional
///     The KL coefficient, >= 0 (default 0.1).
/// lr : float, optional
///     Learning rate, > 0 (default 0.05).
/// ppo_epochs : int, optional
///     Updates on the sample, in ``[1, 10000]`` (default 4).
/// kl_penalty : str, optional
///     ``"full"`` (default), ``"k1"``, ``"k2"`` or ``"k3"``: the KL that enters the reward.
/// vf_coef : float, optional
///     The value loss's coefficient, >= 0 (default 0.0: no baseline).
/// cliprange_value : float, optional
///     The value loss's clip range, > 0 (default 0.2).
/// value : dict[str, float] or list[float], optional
///     The value baseline, updated in place when ``vf_coef > 0`` (default: zeros, not kept).
///
/// Returns
/// -------
/// dict[str, float]
///     The step's record: ``token`` (an index into ``VOCAB``), ``score`` (its RM score), the
///     exact ``kl`` before the step, ``reward``, ``clip_frac`` (the share of clipped epochs),
///     the ``kl_penalty`` that entered the reward and the ``value_loss`` before the step (0.0
///     without a baseline).
///
/// Raises
/// ------
/// TypeError, ValueError
///     An argument of the wrong type or out of range, named in the message: ``"lr must be
///     > 0, got 0.0"``, ``"prompt 'hi' is unknown; known prompts: [...]"``, ``"ref must be
///     a frozen copy of the policy; it shares storage with theta"``.
/// FloatingPointError
///     The step would leave a logit or the value overflowed (NaN, or ``2**512`` or more in
///     magnitude): ``"rlhf_step diverged: logits overflowed (lr=..., beta=...)"``, or a
///     value it returns that is not finite, the first in the record's order:
///     ``"rlhf_step diverged: value_loss overflowed (lr=..., beta=...)"``; ``theta`` and
///     ``value`` are left as they were.
///
/// Examples
/// --------
/// >>> import random
/// >>> w = rl.train_rm(rl.make_dataset(200, seed=0), epochs=2)
/// >>> theta, ref = rl.init_policy(), rl.init_policy()
/// >>> record = rl.rlhf_step(theta, ref, w, "help me", random.Random(0))
/// >>> record["token"], round(record["score"], 4), round(record["reward"], 4)
/// (6, -1.0974, -1.0974)
/// >>> [round(v, 4) for v in theta["help me"]]
/// [0.0258, 0.0258, 0.0258, 0.0258, 0.0258, 0.0258, -0.1808, 0.0258]
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
    if let Some(key) = out.nonfinite_key(None) {
        return Err(error::record_overflowed("rlhf_step diverged", key, lr, beta).into());
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

/// The policy's exact expected RM score: ``sum_x sum_a pi(a|x) R(a) / |PROMPTS|``.
///
/// The lesson's "final RM score" without sampling: ``R(a) = w.get(VOCAB[a], 0.0)`` for each
/// one-token response.
///
/// Parameters
/// ----------
/// theta : dict[str, list[float]] or numpy.ndarray
///     The policy: prompt -> 8 logits, or a float64 ``[3, 8]`` array in ``PROMPTS`` order.
/// w : Mapping[str, float]
///     The reward model.
///
/// Returns
/// -------
/// float
///
/// Raises
/// ------
/// TypeError, ValueError
///     A malformed policy or ``w``, named: ``"theta has no logits for prompt 'help me'"``,
///     ``"theta['help me'][3] must be finite, got nan"``.
/// FloatingPointError
///     The result overflows for finite but extreme arguments (logits 1e308 apart, a
///     log-ratio past 709): ``"expected_score overflowed: the result is inf"``.
///
/// Examples
/// --------
/// >>> theta = rl.init_policy()
/// >>> theta["help me"][1] = 5.0  # "kind"
/// >>> round(rl.expected_score(theta, {"kind": 1.0, "rude": -1.0}), 4)
/// 0.3162
#[pyfunction]
fn expected_score(theta: &Bound<'_, PyAny>, w: &Bound<'_, PyAny>) -> PyResult<f64> {
    finite_result("expected_score", policy::expected_score(&policy_table("theta", theta, false)?, &vocab_weights(w)?)?)
}

/// Exact ``KL(pi_theta || pi_ref)``, averaged over ``PROMPTS``, computed in log space.
///
/// Parameters
/// ----------
/// theta, ref : dict[str, list[float]] or numpy.ndarray
///     Two policies: prompt -> 8 logits, or float64 ``[3, 8]`` arrays.
///
/// Returns
/// -------
/// float
///     >= 0.
///
/// Raises
/// ------
/// TypeError, ValueError
///     A malformed policy, named (``theta`` or ``ref``).
/// FloatingPointError
///     The result overflows for finite but extreme arguments (logits 1e308 apart, a
///     log-ratio past 709): ``"policy_kl overflowed: the result is inf"``.
///
/// Examples
/// --------
/// >>> theta, ref = rl.init_policy(), rl.init_policy()
/// >>> rl.policy_kl(theta, ref)
/// 0.0
/// >>> theta["help me"][1] = 5.0
/// >>> round(rl.policy_kl(theta, ref), 4)
/// 0.6027
#[pyfunction]
fn policy_kl(theta: &Bound<'_, PyAny>, r#ref: &Bound<'_, PyAny>) -> PyResult<f64> {
    let theta_table = policy_table("theta", theta, false)?;
    finite_result("policy_kl", policy::policy_kl(&theta_table, &policy_table("ref", r#ref, false)?, VOCAB.len())?)
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
