//! PyO3 glue: convert Python inputs, validate them, release the GIL around the loops, and
//! turn core errors into `ValueError` / `TypeError` / `FloatingPointError` / `MemoryError`. No
//! numerics here.

mod args;
mod convert;
mod detached;
mod distill;
mod lesson;
mod methods;
mod preferences;
mod process;
mod rows;
mod safe_world;
mod sequence_methods;
mod sequences;
mod sweep;
mod token_ppo;
mod world;
mod world_best_of_n;
mod world_dpo;
mod world_grpo;
mod world_tables;

use pyo3::exceptions::{PyFloatingPointError, PyKeyboardInterrupt, PyMemoryError, PyValueError};
use pyo3::prelude::*;

use crate::error::Error;
use preferences::PreferenceSet;

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        match err {
            Error::InvalidArgument(message) => PyValueError::new_err(message),
            Error::Diverged(message) => PyFloatingPointError::new_err(message),
            Error::OutOfMemory(message) => PyMemoryError::new_err(message),
            // Only raised after the interrupt itself was taken; callers return that instead.
            Error::Cancelled => PyKeyboardInterrupt::new_err("cancelled"),
        }
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PreferenceSet>()?;
    lesson::register(m)?;
    preferences::register(m)?;
    methods::register(m)?;
    rows::register(m)?;
    safe_world::register(m)?;
    sequences::register(m)?;
    sweep::register(m)?;
    world::register(m)?;
    world_best_of_n::register(m)?;
    world_dpo::register(m)?;
    world_grpo::register(m)?;
    world_tables::register(m)?;
    distill::register(m)?;
    token_ppo::register(m)?;
    sequence_methods::register(m)?;
    process::register(m)?;
    Ok(())
}
