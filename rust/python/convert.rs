//! Python values in and out: policies (dict of lists or a float64 `[P, V]` array), reward
//! weights (dict token -> weight), responses, and float sequences. Errors name the argument.

use numpy::{
    IntoPyArray, PyReadonlyArray1, PyReadonlyArray2, PyReadonlyArrayDyn, PyReadwriteArray2, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyFloatingPointError, PyKeyError, PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PySequence, PyString, PyTuple, PyType};

use crate::error::{self, py_float};
use crate::lesson::{PROMPTS, VOCAB};
use crate::methods::dpo::{DpoPairs, DpoParams, LossType};
use crate::methods::grpo::{GrpoParams, ScaleRewards};

pub fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".to_owned())
}

// ------------------------------------------------------------------------ scalar arguments
//
// The reference checks its scalar arguments with `_checks.real`, `_checks.integer` and
// `_checks.option`; the functions below are their twins, so a bad argument gets the same
// exception and message on both backends. The bindings apply them through `args.rs`.

static REAL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static INTEGRAL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static MAPPING: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static SEQUENCE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// `isinstance(obj, module.name)` for an abstract base class, looked up once into `abc`.
/// Callers try the concrete types first: an ABC's check runs Python code. Unlike PyO3's own
/// `PyMapping` and `PySequence` checks, an error raised in there (a Ctrl-C arriving at that
/// moment) is raised, not swallowed.
fn is_instance_of_abc(
    obj: &Bound<'_, PyAny>,
    abc: &'static PyOnceLock<Py<PyType>>,
    module: &str,
    name: &str,
) -> PyResult<bool> {
    obj.is_instance(abc.import(obj.py(), module, name)?)
}

/// `isinstance(obj, collections.abc.Mapping)`, a dict at once.
pub fn is_mapping(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(obj.is_instance_of::<PyDict>() || is_instance_of_abc(obj, &MAPPING, "collections.abc", "Mapping")?)
}

/// A real number but a bool, as a float (`_checks.real`), or a `TypeError` naming `name`.
pub fn real(name: &str, obj: &Bound<'_, PyAny>) -> PyResult<f64> {
    if let Ok(float) = obj.cast_exact::<PyFloat>() {
        return Ok(float.value());
    }
    if !obj.is_instance_of::<PyBool>()
        && (obj.is_instance_of::<PyInt>()
            || obj.is_instance_of::<PyFloat>()
            || is_instance_of_abc(obj, &REAL, "numbers", "Real")?)
    {
        // `float(obj)`: an int past the floats is a ValueError naming it, as in `_checks.real`.
        return obj.extract().or_else(|err: PyErr| {
            if !err.is_instance_of::<PyOverflowError>(obj.py()) {
                return Err(err);
            }
            let bits = obj.call_method0("__int__")?.call_method0("bit_length")?;
            Err(PyValueError::new_err(format!("{name} must fit in a float, got an int of {bits} bits")))
        });
    }
    Err(PyTypeError::new_err(format!("{name} must be a real number, got {}", type_name(obj))))
}

/// [`real`], `None` passing as `None`.
pub fn optional_real(name: &str, obj: &Bound<'_, PyAny>) -> PyResult<Option<f64>> {
    if obj.is_none() {
        return Ok(None);
    }
    real(name, obj).map(Some)
}

/// An integral number but a bool (`_checks.integer`), or a `TypeError` naming `name`; an int
/// past 64 bits is a `ValueError` naming it (`_checks.count`: no count of this package gets there).
pub fn int(name: &str, obj: &Bound<'_, PyAny>) -> PyResult<i64> {
    let integral = obj.is_exact_instance_of::<PyInt>()
        || (!obj.is_instance_of::<PyBool>()
            && (obj.is_instance_of::<PyInt>() || is_instance_of_abc(obj, &INTEGRAL, "numbers", "Integral")?));
    if !integral {
        return Err(PyTypeError::new_err(format!("{name} must be an int, got {}", type_name(obj))));
    }
    match obj.extract::<i64>() {
        Err(err) if err.is_instance_of::<PyOverflowError>(obj.py()) => {
            Err(PyValueError::new_err(format!("{name} must fit in 64 bits, got {obj}")))
        }
        converted => converted,
    }
}

/// Options as Python writes a tuple of them: `('full', 'k1')`.
fn options_tuple(options: &[&str]) -> String {
    let quoted: Vec<String> = options.iter().map(|option| format!("'{option}'")).collect();
    format!("({})", quoted.join(", "))
}

/// One of `options` (`_checks.option`): a `TypeError` naming `name` for a non-str, a
/// `ValueError` for another str.
pub fn option(name: &str, obj: &Bound<'_, PyAny>, options: &[&'static str]) -> PyResult<&'static str> {
    let Ok(text) = obj.cast::<PyString>() else {
        return Err(PyTypeError::new_err(format!(
            "{name} must be a str, one of {}, got {}",
            options_tuple(options),
            type_name(obj)
        )));
    };
    let text = text.to_str()?;
    match options.iter().find(|&&option| option == text) {
        Some(&option) => Ok(option),
        None => {
            Err(PyValueError::new_err(format!("{name} must be one of {}, got {}", options_tuple(options), obj.repr()?)))
        }
    }
}

// ---------------------------------------------------------------------------------- results
//
// What a call returns is finite, or the call raises (the reference's `api._finite_result`):
// finite but extreme arguments (a log-ratio past 709, logits 1e308 apart) overflow inside a
// kernel, and that is a `FloatingPointError` naming the function, never an inf handed back.

/// `value`, or a `FloatingPointError` if it is not finite.
pub fn finite_result(function: &str, value: f64) -> PyResult<f64> {
    if value.is_finite() {
        return Ok(value);
    }
    Err(PyFloatingPointError::new_err(format!("{function} overflowed: the result is {}", py_float(value))))
}

/// `values`, or a `FloatingPointError` naming the first entry that is not finite.
pub fn finite_results<T: AsRef<[f64]>>(function: &str, values: T) -> PyResult<T> {
    match values.as_ref().iter().position(|v| !v.is_finite()) {
        None => Ok(values),
        Some(j) => Err(PyFloatingPointError::new_err(format!(
            "{function} overflowed: result[{j}] is {}",
            py_float(values.as_ref()[j])
        ))),
    }
}

// ------------------------------------------------------------------------- other arguments

/// A sequence of real numbers (a list, a tuple, a 1-D array) as floats (`_checks.logits`'s
/// type checks): a `TypeError` naming `name`, or `name[i]` for an entry that is not a real
/// number (a bool, a str, None).
pub fn f64_vec(name: &str, obj: &Bound<'_, PyAny>) -> PyResult<Vec<f64>> {
    let not_floats = || PyTypeError::new_err(format!("{name} must be a sequence of floats, got {}", type_name(obj)));
    if obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyBytes>() {
        return Err(not_floats());
    }
    if let Ok(array) = obj.extract::<PyReadonlyArray1<'_, f64>>() {
        return Ok(array.as_array().to_vec());
    }
    // another array (an int dtype, 2-D) is read entry by entry, as the reference does
    let array_of_entries = obj.cast::<PyUntypedArray>().is_ok_and(|array| array.ndim() > 0);
    if !(array_of_entries || obj.is_instance_of::<PySequence>()) {
        return Err(not_floats());
    }
    let mut values = error::vec_with_capacity(obj.len()?, name)?;
    for (i, item) in obj.try_iter()?.enumerate() {
        let item = item?;
        // `real`'s fast path first, so the entry's name is only formatted for an error
        match item.cast_exact::<PyFloat>() {
            Ok(float) => values.push(float.value()),
            Err(_) => values.push(real(&format!("{name}[{i}]"), &item)?),
        }
    }
    Ok(values)
}

/// A float64 numpy array of `ndim` dimensions (`_checks.float_array`), copied out with its
/// shape; its values are the caller's to check. A `TypeError` naming `name` otherwise.
pub fn float_array(name: &str, obj: &Bound<'_, PyAny>, ndim: usize) -> PyResult<(Vec<f64>, Vec<usize>)> {
    let Ok(untyped) = obj.cast::<PyUntypedArray>() else {
        return Err(PyTypeError::new_err(format!("{name} must be a {ndim}-D float64 array, got {}", type_name(obj))));
    };
    let array = obj.extract::<PyReadonlyArrayDyn<'_, f64>>().ok().filter(|array| array.ndim() == ndim);
    let Some(array) = array else {
        let dtype = untyped.dtype().str().map(|s| s.to_string()).unwrap_or_default();
        return Err(PyTypeError::new_err(format!(
            "{name} must be a {ndim}-D float64 array, got a {}-D {dtype} array",
            untyped.ndim()
        )));
    };
    let view = array.as_array();
    let mut values = error::vec_with_capacity(view.len(), name)?;
    values.extend(view.iter().copied());
    Ok((values, array.shape().to_vec()))
}

/// A bool (`_checks.boolean`): not an int, a `TypeError` naming `name` otherwise.
pub fn boolean(name: &str, obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    match obj.cast::<PyBool>() {
        Ok(value) => Ok(value.is_true()),
        Err(_) => Err(PyTypeError::new_err(format!("{name} must be a bool, got {}", type_name(obj)))),
    }
}

/// The key `random.Random(seed)` feeds MT19937's `init_by_array`: `abs(seed)` in 32-bit
/// little-endian words (`[0]` for 0), for an int seed of any size.
pub fn seed_key(seed: &Bound<'_, PyAny>) -> PyResult<Vec<u32>> {
    if seed.is_none() {
        return Err(PyTypeError::new_err("seed must be an int, got NoneType"));
    }
    if seed.is_instance_of::<PyBool>() || !seed.is_instance_of::<PyInt>() {
        let index = seed.call_method0("__index__").ok().filter(|_| !seed.is_instance_of::<PyBool>());
        return match index {
            Some(int) => seed_key(&int),
            None => Err(PyTypeError::new_err(format!("seed must be an int, got {}", type_name(seed)))),
        };
    }
    let magnitude = seed.call_method0("__abs__")?;
    let bits: usize = magnitude.call_method0("bit_length")?.extract()?;
    let words = bits.div_ceil(32).max(1);
    let bytes: Vec<u8> = magnitude.call_method1("to_bytes", (words * 4, "little"))?.extract()?;
    Ok(bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

/// A seed argument, converted on the way in to the key `random.Random(seed)` would use.
pub struct SeedKey(pub Vec<u32>);

impl Default for SeedKey {
    fn default() -> Self {
        SeedKey(vec![0])
    }
}

impl<'a, 'py> FromPyObject<'a, 'py> for SeedKey {
    type Error = PyErr;

    fn extract(seed: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        Ok(SeedKey(seed_key(&seed)?))
    }
}

/// `PROMPTS.index(prompt)`, or an error naming the argument `name`.
pub fn prompt_index(name: &str, prompt: &Bound<'_, PyAny>) -> PyResult<usize> {
    let text: String = prompt
        .extract()
        .map_err(|_| PyTypeError::new_err(format!("{name} must be a str, got {}", type_name(prompt))))?;
    PROMPTS.iter().position(|&p| p == text).ok_or_else(|| {
        PyValueError::new_err(format!(
            "{name} {} is unknown; known prompts: ['help me', 'answer me', 'explain this']",
            prompt.repr().map(|r| r.to_string()).unwrap_or(text)
        ))
    })
}

/// A policy as a validated, row-major `[len(PROMPTS), len(VOCAB)]` table. A policy the
/// call will update in place must be a writeable array or have list rows.
pub fn policy_table(name: &str, policy: &Bound<'_, PyAny>, updated: bool) -> PyResult<Vec<f64>> {
    let (p, v) = (PROMPTS.len(), VOCAB.len());
    let table: Vec<f64> = if policy.is_instance_of::<PyUntypedArray>() {
        let array: PyReadonlyArray2<'_, f64> = policy.extract().map_err(|_| {
            let dtype = policy.getattr("dtype").and_then(|d| d.str()).map(|s| s.to_string()).unwrap_or_default();
            let ndim = policy.getattr("ndim").map(|d| d.to_string()).unwrap_or_default();
            PyTypeError::new_err(format!(
                "{name} must be a 2-D float64 array, got a {ndim}-D {dtype} array (use .astype(float))"
            ))
        })?;
        if array.shape() != [p, v] {
            return Err(PyValueError::new_err(format!("{name} must have shape ({p}, {v}), got {:?}", array.shape())));
        }
        if updated && !policy.getattr("flags")?.getattr("writeable")?.is_truthy()? {
            return Err(PyTypeError::new_err(format!("{name} must be a writeable array (it is updated in place)")));
        }
        array.as_array().iter().copied().collect()
    } else if is_mapping(policy)? {
        let mut table = Vec::with_capacity(p * v);
        for prompt in PROMPTS {
            let row = policy
                .get_item(prompt)
                .map_err(|_| PyValueError::new_err(format!("{name} has no logits for prompt '{prompt}'")))?;
            let row_name = format!("{name}['{prompt}']");
            let values = f64_vec(&row_name, &row)?;
            if values.len() != v {
                return Err(PyValueError::new_err(format!("{row_name} must have {v} entries, got {}", values.len())));
            }
            if updated && !row.is_instance_of::<PyList>() {
                return Err(PyTypeError::new_err(format!(
                    "{row_name} must be a list (it is updated in place), got {}",
                    type_name(&row)
                )));
            }
            table.extend(values);
        }
        table
    } else {
        return Err(PyTypeError::new_err(format!(
            "{name} must be a dict prompt -> list of logits or a float64 array of shape ({p}, {v}), got {}",
            type_name(policy)
        )));
    };
    for (i, &value) in table.iter().enumerate() {
        if !value.is_finite() {
            let (row, col) = (i / v, i % v);
            return Err(PyValueError::new_err(format!(
                "{name}['{}'][{col}] must be finite, got {}",
                PROMPTS[row],
                py_float(value)
            )));
        }
    }
    Ok(table)
}

/// The SPEC's rule: `ref` is a frozen copy that never shares storage with `theta`.
pub fn frozen_copy(theta: &Bound<'_, PyAny>, reference: &Bound<'_, PyAny>) -> PyResult<()> {
    let shared = if theta.is(reference) {
        true
    } else if theta.is_instance_of::<PyUntypedArray>() && reference.is_instance_of::<PyUntypedArray>() {
        theta.py().import("numpy")?.call_method1("shares_memory", (theta, reference))?.is_truthy()?
    } else if theta.is_instance_of::<PyUntypedArray>() || reference.is_instance_of::<PyUntypedArray>() {
        false
    } else {
        let mut any = false;
        for prompt in PROMPTS {
            any |= theta.get_item(prompt)?.is(&reference.get_item(prompt)?);
        }
        any
    };
    if shared {
        return Err(PyValueError::new_err("ref must be a frozen copy of the policy; it shares storage with theta"));
    }
    Ok(())
}

/// An object with a `random()` method, as `random.Random`.
pub fn check_rng(rng: &Bound<'_, PyAny>) -> PyResult<()> {
    match rng.getattr("random") {
        Ok(method) if method.is_callable() => Ok(()),
        _ => Err(PyTypeError::new_err(format!(
            "rng must be a random.Random (anything with a random() method), got {}",
            type_name(rng)
        ))),
    }
}

/// A per-prompt value baseline: `None` is zeros, else a dict prompt -> float or a list of
/// one float per prompt in `PROMPTS` order (either is updated in place).
pub fn prompt_values(value: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<f64>> {
    let Some(value) = value else { return Ok(vec![0.0; PROMPTS.len()]) };
    let entry =
        |label: String, item: Bound<'_, PyAny>| -> PyResult<f64> { Ok(error::finite(&label, real(&label, &item)?)?) };
    if is_mapping(value)? {
        return PROMPTS
            .iter()
            .map(|prompt| {
                let item = value
                    .get_item(prompt)
                    .map_err(|_| PyValueError::new_err(format!("value has no baseline for prompt '{prompt}'")))?;
                entry(format!("value['{prompt}']"), item)
            })
            .collect();
    }
    let Ok(list) = value.cast::<PyList>() else {
        return Err(PyTypeError::new_err(format!(
            "value must be a dict prompt -> float or a list of {} floats in PROMPTS order, got {}",
            PROMPTS.len(),
            type_name(value)
        )));
    };
    if list.len() != PROMPTS.len() {
        return Err(PyValueError::new_err(format!(
            "value must have {} entries (one per prompt), got {}",
            PROMPTS.len(),
            list.len()
        )));
    }
    (0..PROMPTS.len()).map(|i| entry(format!("value[{i}]"), list.get_item(i)?)).collect()
}

/// Writes the values back into the caller's dict or list, in place (nothing to do for `None`).
pub fn write_back_values(value: Option<&Bound<'_, PyAny>>, values: &[f64]) -> PyResult<()> {
    if let Some(value) = value {
        let by_prompt = is_mapping(value)?;
        for (i, (prompt, &v)) in PROMPTS.iter().zip(values).enumerate() {
            if by_prompt {
                value.set_item(prompt, v)?;
            } else {
                value.set_item(i, v)?;
            }
        }
    }
    Ok(())
}

/// A run's history as the dict of numpy arrays the Python API returns: the index series
/// (prompts, tokens) as int64, then the float series, in the reference's key order.
pub fn history_dict<'py>(
    py: Python<'py>,
    indices: Vec<(&str, Vec<u32>)>,
    series: Vec<(&str, Vec<f64>)>,
) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    for (name, values) in indices {
        out.set_item(name, values.into_iter().map(i64::from).collect::<Vec<_>>().into_pyarray(py))?;
    }
    for (name, values) in series {
        out.set_item(name, values.into_pyarray(py))?;
    }
    Ok(out)
}

/// Writes one prompt's logits back into the caller's policy, in place.
pub fn write_back_row(policy: &Bound<'_, PyAny>, row: usize, logits: &[f64]) -> PyResult<()> {
    if policy.is_instance_of::<PyUntypedArray>() {
        let mut array: PyReadwriteArray2<'_, f64> = policy.extract()?;
        let mut view = array.as_array_mut();
        for (dst, &value) in view.row_mut(row).iter_mut().zip(logits) {
            *dst = value;
        }
    } else {
        let target = policy.get_item(PROMPTS[row])?;
        for (j, &value) in logits.iter().enumerate() {
            target.set_item(j, value)?;
        }
    }
    Ok(())
}

/// Writes a whole `[P, V]` table back into the caller's policy, in place.
pub fn write_back_table(policy: &Bound<'_, PyAny>, table: &[f64]) -> PyResult<()> {
    for (row, logits) in table.chunks_exact(VOCAB.len()).enumerate() {
        write_back_row(policy, row, logits)?;
    }
    Ok(())
}

/// A reward-weight mapping (`_checks.weights`): every value a finite real number, or an
/// error naming the entry at fault.
pub fn checked_weights(name: &str, w: &Bound<'_, PyAny>) -> PyResult<()> {
    let check = |token: Bound<'_, PyAny>, value: Bound<'_, PyAny>| -> PyResult<()> {
        // Floats pass at a glance; the entry's label is only written for a closer look.
        if value.cast_exact::<PyFloat>().is_ok_and(|v| v.value().is_finite()) {
            return Ok(());
        }
        let label = format!("{name}[{}]", token.repr()?);
        error::finite(&label, real(&label, &value)?)?;
        Ok(())
    };
    if let Ok(dict) = w.cast::<PyDict>() {
        return dict.iter().try_for_each(|(token, value)| check(token, value));
    }
    if !is_mapping(w)? {
        return Err(PyTypeError::new_err(format!("{name} must be a dict token -> weight, got {}", type_name(w))));
    }
    for item in w.call_method0("items")?.try_iter()? {
        let (token, value) = item?.extract()?;
        check(token, value)?;
    }
    Ok(())
}

/// `w.get(token, 0.0)` for `token` in `VOCAB`, after checking every weight.
pub fn vocab_weights(w: &Bound<'_, PyAny>) -> PyResult<Vec<f64>> {
    checked_weights("w", w)?;
    VOCAB.iter().map(|token| weight_of(w, token)).collect()
}

/// `w.get(token, 0.0)` of an already checked mapping.
pub fn weight_of(w: &Bound<'_, PyAny>, token: &str) -> PyResult<f64> {
    match w.get_item(token) {
        Ok(value) => value.extract(),
        Err(err) if err.is_instance_of::<PyKeyError>(w.py()) => Ok(0.0),
        Err(err) => Err(err),
    }
}

/// Python's `str.split()` with no argument: runs of white space separate tokens.
pub fn split_tokens(text: &str) -> impl Iterator<Item = &str> {
    // Python also counts the ASCII separators \x1c..\x1f as white space; Rust does not.
    text.split(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)).filter(|t| !t.is_empty())
}

/// A response's tokens: a string split on white space, or a sequence of token strings.
pub fn tokens_of(name: impl std::fmt::Display, y: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if let Ok(text) = y.cast::<PyString>() {
        return Ok(split_tokens(&text.to_cow()?).map(str::to_owned).collect());
    }
    y.extract::<Vec<String>>().map_err(|_| {
        PyTypeError::new_err(format!("{name} must be a str or a sequence of token strings, got {}", type_name(y)))
    })
}

/// A DPO response as `VOCAB` ids; every token must be in `VOCAB`.
pub fn response_tokens(name: &str, y: &Bound<'_, PyAny>) -> PyResult<Vec<usize>> {
    let tokens = tokens_of(name, y)?;
    if tokens.is_empty() {
        return Err(PyValueError::new_err(format!("{name} must have at least one token")));
    }
    tokens
        .iter()
        .map(|t| {
            VOCAB
                .iter()
                .position(|v| v == t)
                .ok_or_else(|| PyValueError::new_err(format!("{name} has token '{t}' outside VOCAB")))
        })
        .collect()
}

/// A count argument: at least `minimum`, or a `ValueError` naming it.
pub fn count(name: &str, value: i64, minimum: i64) -> PyResult<usize> {
    if value < minimum {
        return Err(PyValueError::new_err(format!("{name} must be >= {minimum}, got {value}")));
    }
    usize::try_from(value).map_err(|_| PyValueError::new_err(format!("{name} is too large, got {value}")))
}

/// `(prompt, chosen, rejected)` of pair `i`: a row with those keys, or a triple.
pub fn pair_fields<'py>(
    i: usize,
    item: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    // Triples first: they are what most sets hold, and checking them against the Mapping ABC
    // would run Python code for every pair.
    let triple = item.is_instance_of::<PyTuple>() || item.is_instance_of::<PyList>();
    if !triple && is_mapping(item)? {
        let row = item;
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
    let text = item.is_instance_of::<PyString>() || item.is_instance_of::<PyBytes>();
    if text || !(triple || is_instance_of_abc(item, &SEQUENCE, "collections.abc", "Sequence")?) {
        return Err(not_a_triple());
    }
    let len = item.len()?;
    if len != 3 {
        return Err(PyValueError::new_err(format!(
            "pairs[{i}] must be a (prompt, chosen, rejected) triple, got {len} items"
        )));
    }
    Ok((item.get_item(0)?, item.get_item(1)?, item.get_item(2)?))
}

/// DPO pairs (triples or TRL rows) as prompt rows and `VOCAB` token ids, in token order.
pub fn dpo_pairs(pairs: &Bound<'_, PyAny>) -> PyResult<DpoPairs> {
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
        // A pair's responses can be long: look for Ctrl-C at every one (a flag test).
        pairs.py().check_signals()?;
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

/// DPO hyper-parameters, `loss_type` by TRL's name.
pub fn dpo_params(beta: f64, lr: f64, loss_type: &str, label_smoothing: f64) -> PyResult<DpoParams> {
    Ok(DpoParams::new(beta, lr, LossType::parse(loss_type)?, label_smoothing)?)
}

#[allow(clippy::too_many_arguments)]
pub fn grpo_params(
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

/// `kl_threshold`: a positive float, infinite for no monitor.
pub fn kl_threshold_arg(kl_threshold: f64) -> PyResult<f64> {
    if kl_threshold.is_infinite() && kl_threshold > 0.0 {
        return Ok(kl_threshold);
    }
    Ok(error::positive("kl_threshold", kl_threshold)?)
}

/// The lesson's KL monitor: a `KLWarning` at the first step whose running mean KL passed
/// `kl_threshold`, raised on the line that called the Python function calling this one.
pub fn warn_kl(py: Python<'_>, mean_kl: &[f64], kl_threshold: f64) -> PyResult<()> {
    let Some(t) = mean_kl.iter().position(|&k| k > kl_threshold) else { return Ok(()) };
    let format = py.import("builtins")?.getattr("format")?;
    let (mean, threshold) = (format.call1((mean_kl[t], ".4g"))?, format.call1((kl_threshold, ".4g"))?);
    let message = format!(
        "mean KL(pi_theta || pi_ref) passed kl_threshold={threshold} at step {t} ({mean} nats): \
         the policy is drifting from the reference (raise beta or stop early)"
    );
    let category = py.import("rlhf_fast.reference")?.getattr("KLWarning")?;
    let message = std::ffi::CString::new(message).map_err(|e| PyValueError::new_err(e.to_string()))?;
    PyErr::warn(py, &category, &message, 2)
}
