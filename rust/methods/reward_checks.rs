//! Reward models no method should optimise against, refused before any work.

use crate::error::{py_float, Error, Result};

/// Refuses a reward model that gives every token the same weight: on one-token responses it
/// scores by length alone, so every group's advantages are zero and Best-of-N is blind.
pub fn check_not_length_only(weights: &[f64]) -> Result<()> {
    if let Some(&first) = weights.first() {
        if weights.iter().all(|&w| w == first) {
            return Err(Error::invalid(format!(
                "w scores responses by length alone: every word of VOCAB weighs {}, so every one-token \
                 response gets the same reward and there is nothing to optimise (train the reward model first)",
                py_float(first)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_weights_are_refused_and_any_difference_passes() {
        assert!(check_not_length_only(&[0.7; 8]).unwrap_err().to_string().contains("by length alone"));
        assert!(check_not_length_only(&[0.0; 8]).unwrap_err().to_string().contains("weighs 0.0"));
        assert!(check_not_length_only(&[0.0, 0.0, 1e-300]).is_ok());
    }
}
