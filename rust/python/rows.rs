//! Batches of large-vocabulary rows (`kernels/rows.rs`): numpy `[rows, V]` float64 tables in,
//! numpy out. Convert and validate (messages name the argument; sizes are checked before
//! anything is allocated), then run the kernels off the GIL, interruptible, on the pool.
//! Whether every logit is finite is checked by the kernels' own pass, not by one here.
//! The public, documented front end is `rlhf_fast.rows`.

use numpy::{
    PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use super::convert::type_name;
use super::detached::run_detached;
use crate::engines::driver::Monitor;
use crate::error::py_float;
use crate::kernels::rows::{self, RowJob, RowOut};
use crate::kernels::simd::Simd;

/// What an array argument is, for a message: `a 1-D int64 array`, or the Python type.
fn describe(obj: &Bound<'_, PyAny>) -> String {
    if obj.is_instance_of::<PyUntypedArray>() {
        let dtype = obj.getattr("dtype").and_then(|d| d.str()).map(|s| s.to_string()).unwrap_or_default();
        let ndim = obj.getattr("ndim").map(|d| d.to_string()).unwrap_or_default();
        format!("a {ndim}-D {dtype} array")
    } else {
        type_name(obj)
    }
}

/// A 2-D, C-contiguous, non-empty float64 array.
fn table<'py>(name: &str, obj: &Bound<'py, PyAny>) -> PyResult<PyReadonlyArray2<'py, f64>> {
    let array = obj.cast::<PyArray2<f64>>().map_err(|_| {
        PyTypeError::new_err(format!("{name} must be a 2-D numpy float64 array, got {}", describe(obj)))
    })?;
    if !array.is_c_contiguous() {
        return Err(PyValueError::new_err(format!("{name} must be C-contiguous (use np.ascontiguousarray)")));
    }
    let (rows, cols) = (array.shape()[0], array.shape()[1]);
    if rows == 0 || cols == 0 {
        return Err(PyValueError::new_err(format!("{name} must not be empty, got shape ({rows}, {cols})")));
    }
    array.try_readonly().map_err(|_| PyValueError::new_err(format!("{name} is being written elsewhere")))
}

/// A 1-D float64 or int64 array of `len` entries.
fn vector<'py, T: numpy::Element>(
    name: &str,
    obj: &Bound<'py, PyAny>,
    len: usize,
    dtype: &str,
) -> PyResult<PyReadonlyArray1<'py, T>> {
    let array = obj.cast::<PyArray1<T>>().map_err(|_| {
        PyTypeError::new_err(format!("{name} must be a 1-D numpy {dtype} array, got {}", describe(obj)))
    })?;
    if array.len() != len {
        return Err(PyValueError::new_err(format!("{name} must have {len} entries, got {}", array.len())));
    }
    array.try_readonly().map_err(|_| PyValueError::new_err(format!("{name} is being written elsewhere")))
}

/// Every entry of `values` passing `ok`, else a `ValueError` `{name}[i] must be {what}, got x`.
fn each(name: &str, values: &[f64], what: &str, ok: impl Fn(f64) -> bool) -> PyResult<()> {
    match values.iter().position(|&x| !ok(x)) {
        Some(i) => Err(PyValueError::new_err(format!("{name}[{i}] must be {what}, got {}", py_float(values[i])))),
        None => Ok(()),
    }
}

fn scalar(name: &str, value: f64, what: &str, ok: bool) -> PyResult<f64> {
    if ok {
        Ok(value)
    } else {
        Err(PyValueError::new_err(format!("{name} must be {what}, got {}", py_float(value))))
    }
}

/// `job` over `logits` off the GIL, on `n_threads` threads (default: the process's pool);
/// `out` the rows it writes (empty for scalar kernels).
fn run(
    py: Python<'_>,
    job: RowJob<'_>,
    logits: &[f64],
    v: usize,
    out: &mut [f64],
    n_threads: Option<usize>,
) -> PyResult<Vec<RowOut>> {
    let simd = Simd::detect();
    let monitor = Monitor::default();
    let stop = || monitor.check().is_err();
    Ok(run_detached(py, &monitor, n_threads, None, || rows::run_rows(simd, job, logits, v, out, &stop))??)
}

/// A fresh `[rows, v]` float64 array (the allocator's zeroed pages) and its data.
fn output<'py>(py: Python<'py>, rows: usize, v: usize) -> Bound<'py, PyArray2<f64>> {
    PyArray2::zeros(py, [rows, v], false)
}

/// Row-wise softmax of a `[rows, V]` float64 table (see `rlhf_fast.rows.softmax_rows`).
#[pyfunction]
#[pyo3(signature = (logits, *, n_threads=None))]
fn rows_softmax<'py>(logits: &Bound<'py, PyAny>, n_threads: Option<usize>) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let py = logits.py();
    let z = table("logits", logits)?;
    let (rows, v) = (z.shape()[0], z.shape()[1]);
    let out = output(py, rows, v);
    {
        let mut dst = out.try_readwrite()?;
        run(py, RowJob::Softmax, z.as_slice()?, v, dst.as_slice_mut()?, n_threads)?;
    }
    Ok(out)
}

/// Row-wise log-softmax of a `[rows, V]` float64 table (see `rlhf_fast.rows.log_softmax_rows`).
#[pyfunction]
#[pyo3(signature = (logits, *, n_threads=None))]
fn rows_log_softmax<'py>(logits: &Bound<'py, PyAny>, n_threads: Option<usize>) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let py = logits.py();
    let z = table("logits", logits)?;
    let (rows, v) = (z.shape()[0], z.shape()[1]);
    let out = output(py, rows, v);
    {
        let mut dst = out.try_readwrite()?;
        run(py, RowJob::LogSoftmax, z.as_slice()?, v, dst.as_slice_mut()?, n_threads)?;
    }
    Ok(out)
}

/// The reference logits' table, of `logits`'s shape.
fn same_shape<'py>(name: &str, obj: &Bound<'py, PyAny>, shape: &[usize]) -> PyResult<PyReadonlyArray2<'py, f64>> {
    same_shape_as(name, obj, "logits", shape)
}

/// `KL(softmax(logits[i]) || softmax(ref_logits[i]))` per row, or against `ref_logits[i]` as
/// log-probabilities with `ref_normalized` (see `rlhf_fast.rows.kl_rows`).
#[pyfunction]
#[pyo3(signature = (logits, ref_logits, *, ref_normalized=false, n_threads=None))]
fn rows_kl<'py>(
    logits: &Bound<'py, PyAny>,
    ref_logits: &Bound<'py, PyAny>,
    ref_normalized: bool,
    n_threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let py = logits.py();
    let z = table("logits", logits)?;
    let r = same_shape("ref_logits", ref_logits, z.shape())?;
    let v = z.shape()[1];
    let job = RowJob::Kl { ref_logits: r.as_slice()?, ref_normalized };
    let out = run(py, job, z.as_slice()?, v, &mut [], n_threads)?;
    Ok(PyArray1::from_iter(py, out.iter().map(|row| row.kl)))
}

/// Draws `u`: one per row, each in `[0, 1)`.
fn draws<'py>(u: &Bound<'py, PyAny>, rows: usize) -> PyResult<PyReadonlyArray1<'py, f64>> {
    let u = vector::<f64>("u", u, rows, "float64")?;
    each("u", u.as_slice()?, "in [0, 1)", |x| (0.0..1.0).contains(&x))?;
    Ok(u)
}

/// One token per row by inverse CDF with draw `u[i]` (see `rlhf_fast.rows.sample_rows`).
#[pyfunction]
#[pyo3(signature = (logits, u, *, n_threads=None))]
fn rows_sample<'py>(
    logits: &Bound<'py, PyAny>,
    u: &Bound<'py, PyAny>,
    n_threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    let py = logits.py();
    let z = table("logits", logits)?;
    let (rows, v) = (z.shape()[0], z.shape()[1]);
    let u = draws(u, rows)?;
    let out = run(py, RowJob::Sample { u: u.as_slice()? }, z.as_slice()?, v, &mut [], n_threads)?;
    Ok(PyArray1::from_iter(py, out.iter().map(|row| row.token)))
}

/// PPO's clipped-surrogate gradient in the logits, per row (see `rlhf_fast.rows.ppo_grad_rows`).
#[pyfunction]
#[pyo3(signature = (logits, tokens, p_old, advantages, eps=0.2, *, n_threads=None))]
fn rows_ppo_grad<'py>(
    logits: &Bound<'py, PyAny>,
    tokens: &Bound<'py, PyAny>,
    p_old: &Bound<'py, PyAny>,
    advantages: &Bound<'py, PyAny>,
    eps: f64,
    n_threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let py = logits.py();
    let z = table("logits", logits)?;
    let (rows, v) = (z.shape()[0], z.shape()[1]);
    let tokens = vector::<i64>("tokens", tokens, rows, "int64")?;
    if let Some(i) = tokens.as_slice()?.iter().position(|&t| t < 0 || t as u64 >= v as u64) {
        return Err(PyValueError::new_err(format!("tokens[{i}] must be in [0, {v}), got {}", tokens.as_slice()?[i])));
    }
    let p_old = vector::<f64>("p_old", p_old, rows, "float64")?;
    each("p_old", p_old.as_slice()?, "in (0, 1]", |x| x > 0.0 && x <= 1.0)?;
    let advantages = vector::<f64>("advantages", advantages, rows, "float64")?;
    each("advantages", advantages.as_slice()?, "finite", f64::is_finite)?;
    let eps = scalar("eps", eps, "finite and > 0", eps.is_finite() && eps > 0.0)?;
    let out = output(py, rows, v);
    {
        let mut dst = out.try_readwrite()?;
        let job = RowJob::PpoGrad {
            tokens: tokens.as_slice()?,
            p_old: p_old.as_slice()?,
            advantages: advantages.as_slice()?,
            eps,
        };
        run(py, job, z.as_slice()?, v, dst.as_slice_mut()?, n_threads)?;
    }
    Ok(out)
}

/// Benchmark B3's fused step (see `rlhf_fast.rows.ppo_batch_step`): returns `(tokens, kl,
/// reward, p_token, grad)`; `grad` is `out` when given. With `ref_normalized`, `ref_logits`
/// is the reference's log-softmax.
#[pyfunction]
#[pyo3(signature = (logits, ref_logits, u, weights, beta=0.1, out=None, *, ref_normalized=false, n_threads=None))]
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
fn rows_ppo_batch_step<'py>(
    logits: &Bound<'py, PyAny>,
    ref_logits: &Bound<'py, PyAny>,
    u: &Bound<'py, PyAny>,
    weights: &Bound<'py, PyAny>,
    beta: f64,
    out: Option<&Bound<'py, PyAny>>,
    ref_normalized: bool,
    n_threads: Option<usize>,
) -> PyResult<(
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray2<f64>>,
)> {
    let py = logits.py();
    let z = table("logits", logits)?;
    let r = same_shape("ref_logits", ref_logits, z.shape())?;
    let (rows, v) = (z.shape()[0], z.shape()[1]);
    let u = draws(u, rows)?;
    let weights = vector::<f64>("weights", weights, v, "float64")?;
    each("weights", weights.as_slice()?, "finite", f64::is_finite)?;
    let beta = scalar("beta", beta, "finite and >= 0", beta.is_finite() && beta >= 0.0)?;
    let grad = match out {
        None => output(py, rows, v),
        Some(given) => {
            let array = given.cast::<PyArray2<f64>>().map_err(|_| {
                PyTypeError::new_err(format!("out must be a 2-D numpy float64 array, got {}", describe(given)))
            })?;
            if array.shape() != z.shape() || !array.is_c_contiguous() {
                return Err(PyValueError::new_err(format!(
                    "out must be a C-contiguous array of the shape of logits {:?}",
                    z.shape()
                )));
            }
            array.clone()
        }
    };
    let results = {
        let mut dst = grad.try_readwrite().map_err(|_| {
            PyValueError::new_err("out must be writeable and share no memory with logits or ref_logits")
        })?;
        let job = RowJob::PpoStep {
            ref_logits: r.as_slice()?,
            ref_normalized,
            u: u.as_slice()?,
            weights: weights.as_slice()?,
            beta,
        };
        run(py, job, z.as_slice()?, v, dst.as_slice_mut()?, n_threads)?
    };
    Ok((
        PyArray1::from_iter(py, results.iter().map(|row| row.token)),
        PyArray1::from_iter(py, results.iter().map(|row| row.kl)),
        PyArray1::from_iter(py, results.iter().map(|row| row.reward)),
        PyArray1::from_iter(py, results.iter().map(|row| row.p_token)),
        grad,
    ))
}

/// `sum(a) + sum(b)` as fast as memory delivers it, off the GIL on `n_threads` threads: how
/// fast the row kernels' inputs can be read (see `rlhf_fast.rows.stream_sum`).
#[pyfunction]
#[pyo3(signature = (a, b, *, n_threads=None))]
fn rows_stream_sum(a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>, n_threads: Option<usize>) -> PyResult<f64> {
    let py = a.py();
    let (a, b) = (table("a", a)?, table("b", b)?);
    let (a, b) = (a.as_slice()?, b.as_slice()?);
    let simd = Simd::detect();
    let monitor = Monitor::default();
    Ok(run_detached(py, &monitor, n_threads, None, || Ok(rows::stream_sum(simd, a, b)))??)
}

/// `out = a + b` as fast as memory moves the bytes, off the GIL on `n_threads` threads: the
/// memory ceiling of benchmark B3 (see `rlhf_fast.rows.stream_add`). Returns whether every
/// entry of `out` is finite (the front end names the culprit when one is not).
#[pyfunction]
#[pyo3(signature = (a, b, out, *, n_threads=None))]
fn rows_stream_add<'py>(
    a: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
    out: &Bound<'py, PyAny>,
    n_threads: Option<usize>,
) -> PyResult<bool> {
    let py = a.py();
    let ta = table("a", a)?;
    let tb = same_shape_as("b", b, "a", ta.shape())?;
    let dst = out
        .cast::<PyArray2<f64>>()
        .map_err(|_| PyTypeError::new_err(format!("out must be a 2-D numpy float64 array, got {}", describe(out))))?;
    if dst.shape() != ta.shape() || !dst.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "out must be a C-contiguous array of the shape of a {:?}",
            ta.shape()
        )));
    }
    {
        let mut dst = dst
            .try_readwrite()
            .map_err(|_| PyValueError::new_err("out must be writeable and share no memory with a or b"))?;
        let (sa, sb, so) = (ta.as_slice()?, tb.as_slice()?, dst.as_slice_mut()?);
        let simd = Simd::detect();
        let monitor = Monitor::default();
        Ok(run_detached(py, &monitor, n_threads, None, || Ok(rows::stream_add(simd, sa, sb, so)))??)
    }
}

/// A table of the shape of `other` (named `other_name`).
fn same_shape_as<'py>(
    name: &str,
    obj: &Bound<'py, PyAny>,
    other_name: &str,
    shape: &[usize],
) -> PyResult<PyReadonlyArray2<'py, f64>> {
    let array = table(name, obj)?;
    if array.shape() != shape {
        return Err(PyValueError::new_err(format!(
            "{name} must have the shape of {other_name} {:?}, got {:?}",
            shape,
            array.shape()
        )));
    }
    Ok(array)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(rows_softmax, m)?)?;
    m.add_function(wrap_pyfunction!(rows_log_softmax, m)?)?;
    m.add_function(wrap_pyfunction!(rows_kl, m)?)?;
    m.add_function(wrap_pyfunction!(rows_sample, m)?)?;
    m.add_function(wrap_pyfunction!(rows_ppo_grad, m)?)?;
    m.add_function(wrap_pyfunction!(rows_ppo_batch_step, m)?)?;
    m.add_function(wrap_pyfunction!(rows_stream_sum, m)?)?;
    m.add_function(wrap_pyfunction!(rows_stream_add, m)?)?;
    Ok(())
}
