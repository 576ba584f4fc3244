//! One error type for the core; the bindings turn it into the matching Python exception.
//! Beside it, the checks every layer shares: numbers, sizes against the memory they would
//! take, and parameters that overflowed.

use std::fmt;
use std::sync::OnceLock;

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// An argument the caller passed is unusable; the message names it and its value.
    InvalidArgument(String),
    /// Training produced non-finite logits (Python: `FloatingPointError`).
    Diverged(String),
    /// A caller asked a long computation to stop (Python: the pending `KeyboardInterrupt`).
    Cancelled,
    /// The system refused memory the computation needs (Python: `MemoryError`); the message
    /// names what could not be allocated.
    OutOfMemory(String),
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
            Error::InvalidArgument(message) | Error::Diverged(message) | Error::OutOfMemory(message) => {
                f.write_str(message)
            }
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

/// `value` if it is at most `max`, else an error naming `name` (the upper bounds on counts
/// that size a step's own work, such as `ppo_epochs`).
pub fn at_most(name: &str, value: i64, max: i64) -> Result<i64> {
    if value > max {
        return Err(Error::invalid(format!("{name} must be <= {max}, got {value}")));
    }
    Ok(value)
}

/// The refusal of a size: `{name}={value} needs {bytes} bytes, more than max_memory={limit}
/// bytes`, worded alike for every size and by the reference.
pub fn memory_message(name: &str, value: impl fmt::Display, bytes: impl fmt::Display, limit: u64) -> String {
    format!("{name}={value} needs {bytes} bytes, more than max_memory={limit} bytes")
}

/// Checks that `value` items of `bytes_per_item` bytes each fit in `limit` bytes, before
/// anything is allocated (`name` is the argument that scales them: `steps`, `epochs`, `n`).
pub fn fits_in_memory(name: &str, value: u64, bytes_per_item: u64, limit: u64) -> Result<()> {
    match value.checked_mul(bytes_per_item) {
        Some(bytes) if bytes <= limit => Ok(()),
        // Past u64 the exact product still fits in u128, so the message gives it whole.
        _ => Err(Error::invalid(memory_message(name, value, u128::from(value) * u128::from(bytes_per_item), limit))),
    }
}

/// What the single runs may allocate: half of this machine's physical memory
/// (`sysconf(_SC_PAGE_SIZE) * sysconf(_SC_PHYS_PAGES) / 2`, 4 GiB where it cannot be read),
/// the same figure the reference computes with `os.sysconf`.
pub fn default_max_memory() -> u64 {
    static HALF_OF_PHYSICAL: OnceLock<u64> = OnceLock::new();
    *HALF_OF_PHYSICAL.get_or_init(|| physical_memory().unwrap_or(8 << 30) / 2)
}

#[cfg(unix)]
fn physical_memory() -> Option<u64> {
    // SAFETY: sysconf only reads a system setting; it has no preconditions and touches no memory of ours.
    let (page_size, pages) = unsafe { (libc::sysconf(libc::_SC_PAGESIZE), libc::sysconf(libc::_SC_PHYS_PAGES)) };
    u64::try_from(page_size).ok()?.checked_mul(u64::try_from(pages).ok()?)
}

#[cfg(not(unix))]
fn physical_memory() -> Option<u64> {
    None
}

/// An empty vector with room for exactly `len` items, or [`Error::OutOfMemory`] naming
/// `what` when the system refuses it: capacity sized by a caller's count is never reserved
/// by an allocation that aborts.
pub fn vec_with_capacity<T>(len: usize, what: &str) -> Result<Vec<T>> {
    let mut vec = Vec::new();
    reserve(&mut vec, len, what)?;
    Ok(vec)
}

/// Room for `additional` more items in `vec`, or [`Error::OutOfMemory`] naming `what`.
pub fn reserve<T>(vec: &mut Vec<T>, additional: usize, what: &str) -> Result<()> {
    vec.try_reserve_exact(additional).map_err(|_| {
        let bytes = u128::from(additional as u64) * std::mem::size_of::<T>() as u128;
        Error::OutOfMemory(format!("cannot allocate {what} ({bytes} bytes)"))
    })
}

/// Drops `value` on a short-lived thread of its own, so that a stopped call returns at once
/// rather than after the kernel took back the pages it wrote (about 0.2 ms a megabyte: a
/// second for a few gigabytes of history). Drops it here if no thread can be started.
pub fn drop_in_background<T: Send + 'static>(value: T) {
    let _ = std::thread::Builder::new().name("rlhf_fast-free".to_owned()).spawn(move || drop(value));
}

/// Magnitude from which a parameter counts as overflowed: `2^512`, past which squaring it
/// (as the losses do) overflows.
pub const OVERFLOW: f64 = 1.3407807929942597e154;

/// Whether some parameter reached [`OVERFLOW`] in magnitude or is not finite (Python's
/// `not (abs(x) < 2**512)`, which NaN fails).
#[inline]
pub fn overflowed(params: &[f64]) -> bool {
    // One pass without early exit: the loops call this after every step.
    params.iter().fold(false, |any, &x| any | (x.abs() >= OVERFLOW) | x.is_nan())
}

/// The key of the first value of a step's `record` (in the record's order) that is not
/// finite: the value that ends a run (issue 9, section 7b).
#[inline]
pub fn first_nonfinite<const N: usize>(record: [(&'static str, f64); N]) -> Option<&'static str> {
    record.into_iter().find(|&(_, x)| !x.is_finite()).map(|(key, _)| key)
}

/// The error of a run or step whose recorded `key` is not finite: `"{what}: {key}
/// overflowed (lr=..., beta=...)"`, `what` being e.g. `"train_rlhf diverged at step 3"`,
/// `"rlhf_step diverged"` or `"sweep run 2 diverged"`.
pub fn record_overflowed(what: &str, key: &str, lr: f64, beta: f64) -> Error {
    Error::Diverged(format!("{what}: {key} overflowed (lr={}, beta={})", py_float(lr), py_float(beta)))
}

/// A float the way Python's `repr` writes it, so that messages read the same on both
/// backends: the shortest digits that round-trip, in scientific notation with a signed
/// two-digit exponent outside `1e-4 <= |x| < 1e16`, `.0` on integral values, `inf`, `nan`.
pub fn py_float(value: f64) -> String {
    if value.is_nan() {
        return "nan".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    // Python's repr: the fewest significant digits that read back as `value` (the count
    // `{:e}` finds), and of those the nearest to `value`: the digits correctly rounded to
    // that count (`{:.N$e}`, exact, half to even) where they read back, as they do unless
    // `value` sits next to a power of two. Rust's own shortest digits break a tie the other
    // way (562949953421312.25 is `...312.3` there, `...312.2` in Python).
    let shortest = format!("{:e}", value.abs());
    let count = shortest.split('e').next().map_or(1, |m| m.chars().filter(char::is_ascii_digit).count());
    let rounded = format!("{:.*e}", count - 1, value.abs());
    let scientific = if rounded.parse::<f64>() == Ok(value.abs()) { rounded } else { shortest };
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if value.is_sign_negative() { "-" } else { "" };
    if (-4..16).contains(&exponent) {
        let point = exponent + 1; // digits before the decimal point
        let text = if point <= 0 {
            format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            let (whole, fraction) = digits.split_at(point as usize);
            format!("{whole}.{fraction}")
        };
        format!("{sign}{text}")
    } else {
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exponent_sign}{:02}", exponent.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn py_float_is_cpythons_repr() {
        // (bits, repr(float)) as CPython 3.12 prints them.
        let cases = [
            (0x0000000000000000, "0.0"),
            (0x8000000000000000, "-0.0"),
            (0x3ff0000000000000, "1.0"),
            (0xbff0000000000000, "-1.0"),
            (0x3fb999999999999a, "0.1"),
            (0x3ee4f8b588e368f1, "1e-05"),
            (0x3f1a36e2eb1c432d, "0.0001"),
            (0x3f202e4b6ce5dc68, "0.00012345"),
            (0x4341c37937e08000, "1e+16"),
            (0x4341c37937e07fff, "9999999999999998.0"),
            (0x430c6bf526340000, "1000000000000000.0"),
            (0x42dc12218377de66, "123456789012345.6"),
            (0x4300000000000002, "562949953421312.2"), // a tie of two shortest digits: half to even
            (0x3e70000000000000, "5.960464477539063e-08"), // 2**-24: the rounded digits would not read back
            (0x7e37e43c8800759c, "1e+300"),
            (0x5fef06d5a4bf631f, "1.3e+154"),
            (0x5ff0000000000000, "1.3407807929942597e+154"),
            (0xdff0000000000000, "-1.3407807929942597e+154"),
            (0x0000000000000001, "5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0x4004000000000000, "2.5"),
            (0x4480f0cf064dd592, "1e+22"),
            (0x3e8421f5f40d8376, "1.5e-07"),
            (0x3fd3333333333334, "0.30000000000000004"),
            (0x405edd2f1a9fbe77, "123.456"),
            (0xbddb7cdfd9d7bdbb, "-1e-10"),
            (0x400921f9f01b866e, "3.14159"),
            (0x54b249ad2594c37d, "1e+100"),
            (0x0000000000000003, "1.5e-323"),
            (0x44dfe185ca57c517, "6.02214076e+23"),
            (0x43e56a95319d63e1, "1.2345678901234567e+19"),
            (0x3f50624dd2f1a9fc, "0.001"),
            (0x4059000000000000, "100.0"),
        ];
        for (bits, expected) in cases {
            assert_eq!(py_float(f64::from_bits(bits)), expected, "{}", f64::from_bits(bits));
        }
        assert_eq!(py_float(f64::NAN), "nan");
        assert_eq!(py_float(f64::INFINITY), "inf");
        assert_eq!(py_float(f64::NEG_INFINITY), "-inf");
    }

    #[test]
    fn overflow_is_reaching_two_to_the_512_or_not_finite() {
        assert_eq!(OVERFLOW, 2f64.powi(512));
        assert!(!overflowed(&[0.0, -1e154, 1.3407807929942595e154]));
        assert!(overflowed(&[0.0, -OVERFLOW]));
        assert!(overflowed(&[f64::NAN, 0.0]));
        assert!(overflowed(&[1.0, f64::INFINITY]));
        assert!(!overflowed(&[]));
    }

    #[test]
    fn sizes_are_refused_with_the_exact_bytes() {
        assert!(fits_in_memory("steps", 100, 80, 8000).is_ok());
        let err = fits_in_memory("steps", 101, 80, 8000).unwrap_err();
        assert_eq!(err.to_string(), "steps=101 needs 8080 bytes, more than max_memory=8000 bytes");
        let err = fits_in_memory("steps", 1 << 62, 80, u64::MAX).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("steps={} needs {} bytes, more than max_memory={} bytes", 1u64 << 62, 80u128 << 62, u64::MAX)
        );
        assert!(at_most("n", 10, 10).is_ok());
        assert_eq!(at_most("n", 11, 10).unwrap_err().to_string(), "n must be <= 10, got 11");
        assert!(default_max_memory() >= 1 << 20);
    }

    #[test]
    fn refused_allocations_are_errors_not_aborts() {
        let err = vec_with_capacity::<f64>(usize::MAX / 4, "the history").unwrap_err();
        assert!(matches!(err, Error::OutOfMemory(_)), "{err}");
        assert!(err.to_string().starts_with("cannot allocate the history ("), "{err}");
        assert_eq!(vec_with_capacity::<u8>(10, "x").unwrap().capacity(), 10);
    }
}
