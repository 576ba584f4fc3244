//! One error type for the core; the bindings turn it into the matching Python exception.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// An argument the caller passed is unusable; the message names it and its value.
    InvalidArgument(String),
    /// Training produced non-finite logits (Python: `FloatingPointError`).
    Diverged(String),
    /// A caller asked a long computation to stop (Python: the pending `KeyboardInterrupt`).
    Cancelled,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidArgument(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument(message) | Error::Diverged(message) => f.write_str(message),
            Error::Cancelled => f.write_str("cancelled"),
        }
    }
}

impl std::error::Error for Error {}

/// `value` if it is finite, else an error naming `name`.
pub fn finite(name: &str, value: f64) -> Result<f64> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(Error::invalid(format!("{name} must be finite, got {}", py_float(value))))
    }
}

/// `value` if it is finite and > 0.
pub fn positive(name: &str, value: f64) -> Result<f64> {
    let value = finite(name, value)?;
    if value > 0.0 {
        Ok(value)
    } else {
        Err(Error::invalid(format!("{name} must be > 0, got {}", py_float(value))))
    }
}

/// `value` if it is finite and >= 0.
pub fn non_negative(name: &str, value: f64) -> Result<f64> {
    let value = finite(name, value)?;
    if value >= 0.0 {
        Ok(value)
    } else {
        Err(Error::invalid(format!("{name} must be >= 0, got {}", py_float(value))))
    }
}

/// Every entry finite and the slice non-empty (`name[i]` in the message).
pub fn finite_slice(name: &str, values: &[f64]) -> Result<()> {
    if values.is_empty() {
        return Err(Error::invalid(format!("{name} must not be empty")));
    }
    // The label is only formatted for the entry at fault: checks sit on hot paths.
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(Error::invalid(format!("{name}[{i}] must be finite, got {}", py_float(values[i])))),
        None => Ok(()),
    }
}

/// A probability vector: finite, non-negative entries summing to 1 within 1e-6.
pub fn probabilities(name: &str, probs: &[f64]) -> Result<()> {
    finite_slice(name, probs)?;
    let mut total = 0.0;
    for &p in probs {
        if p < 0.0 {
            return Err(Error::invalid(format!("{name} must be non-negative, got {}", py_float(p))));
        }
        total += p;
    }
    if (total - 1.0).abs() > 1e-6 {
        return Err(Error::invalid(format!("{name} must sum to 1 (within 1e-6), got {}", py_float(total))));
    }
    Ok(())
}

/// A float the way Python's `repr` writes it, so messages read the same on both backends.
pub fn py_float(value: f64) -> String {
    if value.is_nan() {
        "nan".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else if value == value.trunc() && value.abs() < 1e16 {
        format!("{value:.1}")
    } else {
        format!("{value}")
    }
}
