//! Reward distillation's binding: `rlhf_fast.distill`'s student fitted in the core.

use numpy::IntoPyArray;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::convert::{float_array, int, real};
use super::detached::run_detached;
use super::world_tables::index_array;
use crate::engines::distill::{self, Features, Scored};
use crate::engines::driver::Monitor;

/// ``(theta, bias, epoch_mse)``: a student head on the frozen features ``phi``
/// (``[vocab, d]``) after ``epochs`` passes of SGD of ``lr`` on the squared error to the
/// teacher's scores ``targets`` (``[n]``) of ``responses`` (``[n, response_len]``), from
/// zero: ``rlhf_fast.distill.distill_reward_model``'s loop. Off the GIL and interruptible; a
/// head that overflows raises ``FloatingPointError`` naming the epoch.
#[pyfunction]
pub fn distill_reward_model<'py>(
    py: Python<'py>,
    phi: &Bound<'py, PyAny>,
    responses: &Bound<'py, PyAny>,
    targets: &Bound<'py, PyAny>,
    epochs: &Bound<'py, PyAny>,
    lr: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyAny>, f64, Bound<'py, PyAny>)> {
    let (phi, shape) = float_array("phi", phi, 2)?;
    let (responses, response_shape) = index_array("responses", responses, 2)?;
    let targets = float_array("targets", targets, 1)?.0;
    let epochs = int("epochs", epochs)?;
    let epochs =
        usize::try_from(epochs).map_err(|_| PyValueError::new_err(format!("epochs must be >= 0, got {epochs}")))?;
    let lr = real("lr", lr)?;
    let features = Features { phi: &phi, vocab: shape[0], d: shape[1] };
    let scored = Scored { responses: &responses, response_len: response_shape[1], targets: &targets };
    let monitor = Monitor::default();
    let student = run_detached(py, &monitor, None, None, || {
        distill::distill_reward_model(features, scored, epochs, lr, &monitor)
    })??;
    Ok((student.theta.into_pyarray(py).into_any(), student.bias, student.epoch_mse.into_pyarray(py).into_any()))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(distill_reward_model, m)?)?;
    Ok(())
}
