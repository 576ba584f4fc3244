//! A world's own computations (`rlhf_fast.worlds`): its tables from its draws, the labels of
//! a human labeller and of an AI judge, the score of a bag of tokens, the proxy reward
//! model's SGD and Gao et al.'s fit. The draws themselves stay NumPy's PCG64 (every world
//! and figure so far depends on them): here they are inputs. The exact expectations under a
//! policy and the frontier `pi ∝ pi_ref exp(r / beta)` need a world's checked tables and are
//! an engine's: `engines::world_frontier`.

pub mod distill;
pub mod gao;
pub mod labels;
pub mod reward_model;
pub mod scores;
pub mod tables;

use crate::error::{Error, Result};

/// `values` hold `rows x cols` entries; the error names `name` and the shape expected.
pub(crate) fn check_shape(name: &str, values: usize, rows: usize, cols: usize) -> Result<()> {
    if rows.checked_mul(cols) != Some(values) {
        return Err(Error::invalid(format!("{name} holds {values} values, not {rows} x {cols}")));
    }
    Ok(())
}

/// `a` and `b` have the same length, the error naming both.
pub(crate) fn same_length(a: (&str, usize), b: (&str, usize)) -> Result<()> {
    if a.1 != b.1 {
        return Err(Error::invalid(format!("{} must have the length of {} ({}), got {}", b.0, a.0, a.1, b.1)));
    }
    Ok(())
}

/// Every one of `draws` is a uniform draw in `[0, 1)`.
pub(crate) fn uniforms(name: &str, draws: &[f64]) -> Result<()> {
    match draws.iter().position(|u| !(0.0..1.0).contains(u)) {
        Some(i) => Err(Error::invalid(format!(
            "{name}[{i}] must be a draw in [0, 1), got {}",
            crate::error::py_float(draws[i])
        ))),
        None => Ok(()),
    }
}
