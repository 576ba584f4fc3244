//! A sequence world's computations (`rlhf_fast.sequences`): the proxy reward model's SGD on
//! rows of feature columns, and a policy's exact statistics. Convert (int64 and float64 numpy arrays, as `rlhf_fast.sequences`
//! hands them), validate in the core (messages name the argument), run off the GIL, hand back
//! numpy arrays. No numerics here.

use numpy::{IntoPyArray, PyArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::convert::{float_array, int, real};
use super::detached::run_detached;
use super::world_tables::{floats, index_array};
use crate::engines::driver::Monitor;
use crate::engines::sequence_world::{self, Rows};
use crate::engines::world::RmSgd;
use crate::methods::sequence_stats::{self as stats, PromptStats};

/// A proxy reward model's ``[vocab]`` column weights after ``epochs`` passes of
/// Bradley-Terry SGD over pairs of rows (``first`` and ``second`` ``[n, width]`` int64
/// columns, read up to ``first_len`` and ``second_len`` ``[n]``; ``target`` and ``margin``
/// ``[n]``) from zero: ``rlhf_fast.train_sequence_reward_model``'s loop. Off the GIL and
/// interruptible; weights that overflow raise ``FloatingPointError`` naming the epoch.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn train_reward_model_rows<'py>(
    py: Python<'py>,
    vocab: &Bound<'py, PyAny>,
    first: &Bound<'py, PyAny>,
    first_len: &Bound<'py, PyAny>,
    second: &Bound<'py, PyAny>,
    second_len: &Bound<'py, PyAny>,
    target: &Bound<'py, PyAny>,
    margin: &Bound<'py, PyAny>,
    epochs: &Bound<'py, PyAny>,
    lr: &Bound<'py, PyAny>,
    center_rewards_coefficient: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let vocab = int("vocab", vocab)?;
    let (first, first_shape) = index_array("first", first, 2)?;
    let (first_len, _) = index_array("first_len", first_len, 1)?;
    let (second, second_shape) = index_array("second", second, 2)?;
    let (second_len, _) = index_array("second_len", second_len, 1)?;
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
    let first = Rows { columns: &first, lengths: &first_len, width: first_shape[1] };
    let second = Rows { columns: &second, lengths: &second_len, width: second_shape[1] };
    let monitor = Monitor::default();
    let weights = run_detached(py, &monitor, None, None, || {
        sequence_world::train_reward_model_rows(vocab, first, second, &target, &margin, sgd, &monitor)
    })??;
    Ok(weights.into_pyarray(py).into_any())
}

/// A policy's exact statistics per prompt, from ``logits`` and ``ref_logits`` (float64
/// ``[n_prompts, max_len, vocab]``): ``(alive [P, L + 1], length [P], content_length [P],
/// kl [P], counts [P, V], appears [P, V])``, ``rlhf_fast.SequenceWorld.stats``' arrays. Off
/// the GIL.
#[pyfunction]
pub fn sequence_stats<'py>(
    py: Python<'py>,
    logits: &Bound<'py, PyAny>,
    ref_logits: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyTuple>> {
    let (logits, shape) = float_array("logits", logits, 3)?;
    let (ref_logits, ref_shape) = float_array("ref_logits", ref_logits, 3)?;
    if ref_shape != shape {
        return Err(PyValueError::new_err(format!(
            "ref_logits must have the shape of logits, {shape:?}, got {ref_shape:?}"
        )));
    }
    let shape = [shape[0], shape[1], shape[2]];
    let per_prompt = py.detach(|| stats::sequence_stats(&logits, &ref_logits, shape))?;
    let [n_prompts, max_len, vocab] = shape;
    let flat = |part: fn(&PromptStats) -> &[f64]| -> Vec<f64> {
        per_prompt.iter().flat_map(|s| part(s).iter().copied()).collect()
    };
    let scalar = |part: fn(&PromptStats) -> f64| -> Vec<f64> { per_prompt.iter().map(part).collect() };
    let out = [
        flat(|s| &s.alive).into_pyarray(py).reshape([n_prompts, max_len + 1])?.into_any(),
        scalar(|s| s.length).into_pyarray(py).into_any(),
        scalar(|s| s.content_length).into_pyarray(py).into_any(),
        scalar(|s| s.kl).into_pyarray(py).into_any(),
        flat(|s| &s.counts).into_pyarray(py).reshape([n_prompts, vocab])?.into_any(),
        flat(|s| &s.appears).into_pyarray(py).reshape([n_prompts, vocab])?.into_any(),
    ];
    PyTuple::new(py, out)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(train_reward_model_rows, m)?)?;
    m.add_function(wrap_pyfunction!(sequence_stats, m)?)?;
    Ok(())
}
