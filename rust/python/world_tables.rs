//! A world's own computations (`rlhf_fast.worlds`): its tables from its draws, the labels,
//! the bag scores, the proxy reward model's SGD, the exact expectations, the frontier and
//! Gao's fit. Convert (float64 and int64 numpy arrays, as `rlhf_fast.worlds` hands them),
//! validate in the core (messages name the argument), run off the GIL, hand back numpy
//! arrays. No numerics here.

use numpy::{IntoPyArray, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use super::convert::{boolean, float_array, int, option, real, type_name};
use super::detached::run_detached;
use crate::engines::driver::Monitor;
use crate::engines::world::{self, Expectations, LabelledPairs, RmSgd, WorldSpec};
use crate::engines::world_ppo::Table;
use crate::error::vec_with_capacity;
use crate::methods::world::{gao, labels, scores, tables};

/// An int64 numpy array of `ndim` dimensions of indices >= 0, copied out with its shape.
pub(super) fn index_array(name: &str, obj: &Bound<'_, PyAny>, ndim: usize) -> PyResult<(Vec<usize>, Vec<usize>)> {
    let wrong = |what: String| PyTypeError::new_err(format!("{name} must be a {ndim}-D int64 array, got {what}"));
    let Ok(untyped) = obj.cast::<PyUntypedArray>() else {
        return Err(wrong(type_name(obj)));
    };
    let Some(array) = obj.extract::<PyReadonlyArrayDyn<'_, i64>>().ok().filter(|array| array.ndim() == ndim) else {
        let dtype = untyped.dtype().str().map(|s| s.to_string()).unwrap_or_default();
        return Err(wrong(format!("a {}-D {dtype} array", untyped.ndim())));
    };
    let view = array.as_array();
    let mut values = vec_with_capacity(view.len(), name)?;
    for &index in view.iter() {
        let Ok(index) = usize::try_from(index) else {
            return Err(PyValueError::new_err(format!("{name} must hold indices >= 0, got {index}")));
        };
        values.push(index);
    }
    Ok((values, array.shape().to_vec()))
}

pub(super) fn floats(name: &str, obj: &Bound<'_, PyAny>) -> PyResult<Vec<f64>> {
    Ok(float_array(name, obj, 1)?.0)
}

/// A 2-D float64 array's values with its shape.
struct Owned2d(Vec<f64>, usize, usize);

impl Owned2d {
    fn convert(name: &str, obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        let (values, shape) = float_array(name, obj, 2)?;
        Ok(Owned2d(values, shape[0], shape[1]))
    }

    fn table(&self) -> Table<'_> {
        Table { values: &self.0, rows: self.1, cols: self.2 }
    }
}

/// A world's `(ref_logits, gold_token)` from its draws: ``rank_uniforms`` and
/// ``prompt_normals`` ``[n_prompts, vocab]``, ``shared_normals`` ``[vocab]``. The reference's
/// logit of token ``j`` is ``-zipf * log1p(order[j])``, ``order`` the row's uniforms'
/// indices in increasing order (ties in index order); its gold value
/// ``shared_normals[j] + prompt_scale * prompt_normals[x, j]``.
#[pyfunction]
pub fn world_tables<'py>(
    rank_uniforms: &Bound<'py, PyAny>,
    shared_normals: &Bound<'py, PyAny>,
    prompt_normals: &Bound<'py, PyAny>,
    zipf: &Bound<'py, PyAny>,
    prompt_scale: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let py = rank_uniforms.py();
    let uniforms = Owned2d::convert("rank_uniforms", rank_uniforms)?;
    let shared = floats("shared_normals", shared_normals)?;
    let prompt = Owned2d::convert("prompt_normals", prompt_normals)?;
    let (zipf, prompt_scale) = (real("zipf", zipf)?, real("prompt_scale", prompt_scale)?);
    let Owned2d(values, rows, vocab) = &uniforms;
    if (prompt.1, prompt.2) != (*rows, *vocab) {
        let message = format!(
            "prompt_normals must have the shape of rank_uniforms, ({rows}, {vocab}), got ({}, {})",
            prompt.1, prompt.2
        );
        return Err(PyValueError::new_err(message));
    }
    let out = py.detach(|| tables::world_tables(values, *vocab, &shared, &prompt.0, zipf, prompt_scale))?;
    let shape = [*rows, *vocab];
    let ref_logits = out.ref_logits.into_pyarray(py).reshape(shape)?.into_any();
    Ok((ref_logits, out.gold_token.into_pyarray(py).reshape(shape)?.into_any()))
}

/// An AI judge's ``[n_prompts, vocab]`` token values from the world's ``gold_token`` and
/// ``ref_logits`` and the judge's ``noise`` (standard normals of that shape).
#[pyfunction]
pub fn judge_token_values<'py>(
    gold_token: &Bound<'py, PyAny>,
    ref_logits: &Bound<'py, PyAny>,
    noise: &Bound<'py, PyAny>,
    rho: &Bound<'py, PyAny>,
    bias: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = gold_token.py();
    let Owned2d(gold, rows, vocab) = Owned2d::convert("gold_token", gold_token)?;
    let reference = Owned2d::convert("ref_logits", ref_logits)?;
    let noise = Owned2d::convert("noise", noise)?;
    for (name, table) in [("ref_logits", &reference), ("noise", &noise)] {
        if (table.1, table.2) != (rows, vocab) {
            let message =
                format!("{name} must have the shape of gold_token, ({rows}, {vocab}), got ({}, {})", table.1, table.2);
            return Err(PyValueError::new_err(message));
        }
    }
    let (rho, bias) = (real("rho", rho)?, real("bias", bias)?);
    let values = py.detach(|| tables::judge_token_values(&gold, &reference.0, vocab, &noise.0, rho, bias))?;
    Ok(values.into_pyarray(py).reshape([rows, vocab])?.into_any())
}

/// A human labeller's hard labels from the gold of both responses of each pair and its
/// draws (``World.preferences``' order).
#[pyfunction]
pub fn labeller_labels<'py>(
    gold_first: &Bound<'py, PyAny>,
    gold_second: &Bound<'py, PyAny>,
    temperature: &Bound<'py, PyAny>,
    flip: &Bound<'py, PyAny>,
    prefer_uniforms: &Bound<'py, PyAny>,
    flip_uniforms: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = gold_first.py();
    let labels = labels::labeller_labels(
        &floats("gold_first", gold_first)?,
        &floats("gold_second", gold_second)?,
        real("temperature", temperature)?,
        real("flip", flip)?,
        &floats("prefer_uniforms", prefer_uniforms)?,
        &floats("flip_uniforms", flip_uniforms)?,
    )?;
    Ok(labels.into_pyarray(py).into_any())
}

/// An AI judge's labels from its scores of both responses of each pair and its draws:
/// ``order_uniforms`` unless ``both_orders``, ``draw_uniforms`` unless ``soft`` (empty
/// arrays otherwise).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn judge_labels<'py>(
    score_first: &Bound<'py, PyAny>,
    score_second: &Bound<'py, PyAny>,
    temperature: &Bound<'py, PyAny>,
    position_bias: &Bound<'py, PyAny>,
    soft: &Bound<'py, PyAny>,
    both_orders: &Bound<'py, PyAny>,
    order_uniforms: &Bound<'py, PyAny>,
    draw_uniforms: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = score_first.py();
    let params = labels::JudgeParams {
        temperature: real("temperature", temperature)?,
        position_bias: real("position_bias", position_bias)?,
        soft: boolean("soft", soft)?,
        both_orders: boolean("both_orders", both_orders)?,
    };
    let labels = labels::judge_labels(
        &floats("score_first", score_first)?,
        &floats("score_second", score_second)?,
        params,
        &floats("order_uniforms", order_uniforms)?,
        &floats("draw_uniforms", draw_uniforms)?,
    )?;
    Ok(labels.into_pyarray(py).into_any())
}

/// ``[n]``: each response's sum of ``values[prompts[i], token] + offset`` over its tokens (its
/// distinct tokens if ``count_once``).
#[pyfunction]
pub fn bag_score<'py>(
    values: &Bound<'py, PyAny>,
    prompts: &Bound<'py, PyAny>,
    responses: &Bound<'py, PyAny>,
    count_once: &Bound<'py, PyAny>,
    offset: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = values.py();
    let Owned2d(values, rows, vocab) = Owned2d::convert("values", values)?;
    let (prompts, _) = index_array("prompts", prompts, 1)?;
    let (responses, shape) = index_array("responses", responses, 2)?;
    let (count_once, offset) = (boolean("count_once", count_once)?, real("offset", offset)?);
    let table = scores::ValueTable { values: &values, rows, vocab };
    let scores = py.detach(|| scores::bag_score(table, &prompts, &responses, shape[1], count_once, offset))?;
    Ok(scores.into_pyarray(py).into_any())
}

/// A proxy reward model's ``[vocab]`` weights after ``epochs`` passes of Bradley-Terry SGD
/// over the pairs (``first`` and ``second`` ``[n, response_len]``, ``target`` and ``margin``
/// ``[n]``) from zero: ``rlhf_fast.worlds.train_reward_model``'s loop. Off the GIL and
/// interruptible; weights that overflow raise ``FloatingPointError`` naming the epoch.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn train_reward_model<'py>(
    py: Python<'py>,
    vocab: &Bound<'py, PyAny>,
    first: &Bound<'py, PyAny>,
    second: &Bound<'py, PyAny>,
    target: &Bound<'py, PyAny>,
    margin: &Bound<'py, PyAny>,
    epochs: &Bound<'py, PyAny>,
    lr: &Bound<'py, PyAny>,
    center_rewards_coefficient: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let vocab = int("vocab", vocab)?;
    let (first, shape) = index_array("first", first, 2)?;
    let (second, second_shape) = index_array("second", second, 2)?;
    if second_shape != shape {
        return Err(PyValueError::new_err(format!(
            "second must have the shape of first, {shape:?}, got {second_shape:?}"
        )));
    }
    let (target, margin) = (floats("target", target)?, floats("margin", margin)?);
    let epochs = int("epochs", epochs)?;
    let sgd = RmSgd {
        epochs: usize::try_from(epochs)
            .map_err(|_| PyValueError::new_err(format!("epochs must be >= 0, got {epochs}")))?,
        lr: real("lr", lr)?,
        center_rewards_coefficient: real("center_rewards_coefficient", center_rewards_coefficient)?,
    };
    let vocab =
        usize::try_from(vocab).map_err(|_| PyValueError::new_err(format!("vocab must be >= 1, got {vocab}")))?;
    let pairs =
        LabelledPairs { first: &first, second: &second, response_len: shape[1], target: &target, margin: &margin };
    let monitor = Monitor::default();
    let weights = run_detached(py, &monitor, None, None, || world::train_reward_model(vocab, pairs, sgd, &monitor))??;
    Ok(weights.into_pyarray(py).into_any())
}

/// A world's tables as the expectations need them, converted.
struct OwnedWorld {
    ref_logits: Owned2d,
    gold_token: Owned2d,
    count_once: bool,
    repeat_penalty: f64,
    response_len: i64,
}

impl OwnedWorld {
    fn convert(
        ref_logits: &Bound<'_, PyAny>,
        gold_token: &Bound<'_, PyAny>,
        count_once: &Bound<'_, PyAny>,
        repeat_penalty: &Bound<'_, PyAny>,
        response_len: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        Ok(OwnedWorld {
            ref_logits: Owned2d::convert("ref_logits", ref_logits)?,
            gold_token: Owned2d::convert("gold_token", gold_token)?,
            count_once: boolean("count_once", count_once)?,
            repeat_penalty: real("repeat_penalty", repeat_penalty)?,
            response_len: int("response_len", response_len)?,
        })
    }

    fn spec(&self) -> WorldSpec<'_> {
        WorldSpec {
            ref_logits: self.ref_logits.table(),
            gold_token: self.gold_token.table(),
            count_once: self.count_once,
            repeat_penalty: self.repeat_penalty,
            response_len: self.response_len,
        }
    }
}

type Series<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>);

fn series(py: Python<'_>, out: Expectations) -> Series<'_> {
    (out.kl.into_pyarray(py).into_any(), out.proxy.into_pyarray(py).into_any(), out.gold.into_pyarray(py).into_any())
}

/// ``(kl, proxy, gold)``, each ``[n_prompts]``: the exact expectations of the policy
/// ``logits`` (``[n_prompts, vocab]``) in the world of these tables, the proxy under the
/// reward model ``weights`` (``[vocab]``; 0 without one).
#[pyfunction]
#[pyo3(signature = (ref_logits, gold_token, count_once, repeat_penalty, response_len, logits, weights=None))]
pub fn world_expectations<'py>(
    ref_logits: &Bound<'py, PyAny>,
    gold_token: &Bound<'py, PyAny>,
    count_once: &Bound<'py, PyAny>,
    repeat_penalty: &Bound<'py, PyAny>,
    response_len: &Bound<'py, PyAny>,
    logits: &Bound<'py, PyAny>,
    weights: Option<&Bound<'py, PyAny>>,
) -> PyResult<Series<'py>> {
    let py = ref_logits.py();
    let world = OwnedWorld::convert(ref_logits, gold_token, count_once, repeat_penalty, response_len)?;
    let logits = Owned2d::convert("logits", logits)?;
    let shape = (world.ref_logits.1, world.ref_logits.2);
    if (logits.1, logits.2) != shape {
        let message = format!("logits must have the shape of ref_logits, {shape:?}, got ({}, {})", logits.1, logits.2);
        return Err(PyValueError::new_err(message));
    }
    let weights = weights.map(|w| floats("weights", w)).transpose()?;
    let out = py.detach(|| world::world_expectations(&world.spec(), weights.as_deref(), &logits.0))?;
    Ok(series(py, out))
}

/// ``(kl, proxy, gold)``, each ``[len(betas)]``: the means over prompts along the frontier of
/// ``reward`` (``[1, vocab]`` or ``[n_prompts, vocab]``), ``pi ∝ pi_ref exp(reward / beta)``,
/// the proxy under ``weights`` (0 without).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (ref_logits, gold_token, count_once, repeat_penalty, response_len, reward, betas, weights=None))]
pub fn world_frontier<'py>(
    ref_logits: &Bound<'py, PyAny>,
    gold_token: &Bound<'py, PyAny>,
    count_once: &Bound<'py, PyAny>,
    repeat_penalty: &Bound<'py, PyAny>,
    response_len: &Bound<'py, PyAny>,
    reward: &Bound<'py, PyAny>,
    betas: &Bound<'py, PyAny>,
    weights: Option<&Bound<'py, PyAny>>,
) -> PyResult<Series<'py>> {
    let py = ref_logits.py();
    let world = OwnedWorld::convert(ref_logits, gold_token, count_once, repeat_penalty, response_len)?;
    let reward = Owned2d::convert("reward", reward)?;
    let betas = floats("betas", betas)?;
    let weights = weights.map(|w| floats("weights", w)).transpose()?;
    let out = py.detach(|| world::world_frontier(&world.spec(), reward.table(), weights.as_deref(), &betas))?;
    Ok(series(py, out))
}

/// ``(alpha, beta)``: Gao et al.'s ``form`` (``"bon"`` or ``"rl"``) fitted to ``gold`` against
/// ``d`` by least squares, over the points with ``d > 0`` and both finite.
#[pyfunction]
pub fn fit_gao(d: &Bound<'_, PyAny>, gold: &Bound<'_, PyAny>, form: &Bound<'_, PyAny>) -> PyResult<(f64, f64)> {
    let bon = option("form", form, &["bon", "rl"])? == "bon";
    Ok(gao::fit_gao(&floats("d", d)?, &floats("gold", gold)?, bon)?)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(world_tables, m)?)?;
    m.add_function(wrap_pyfunction!(judge_token_values, m)?)?;
    m.add_function(wrap_pyfunction!(labeller_labels, m)?)?;
    m.add_function(wrap_pyfunction!(judge_labels, m)?)?;
    m.add_function(wrap_pyfunction!(bag_score, m)?)?;
    m.add_function(wrap_pyfunction!(train_reward_model, m)?)?;
    m.add_function(wrap_pyfunction!(world_expectations, m)?)?;
    m.add_function(wrap_pyfunction!(world_frontier, m)?)?;
    m.add_function(wrap_pyfunction!(fit_gao, m)?)?;
    Ok(())
}
