//! The reward-model side: tokenised preference sets, bags, the BT step and training.

use std::collections::HashMap;

use pyo3::exceptions::{PyKeyError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use super::args;
use super::convert::{
    checked_weights, count, pair_fields, seed_key as convert_seed_key, tokens_of, type_name, weight_of, SeedKey,
};
use super::detached::run_detached;
use super::sweep::{run_sweep, SweepOptions};
use crate::engines::driver::Monitor;
use crate::engines::reward_model::{self, RmEngine, RmRun};
use crate::error::{self, overflowed, py_float, Error};
use crate::lesson::{self, PROMPTS, VOCAB};
use crate::methods::bradley_terry::{self as bt, Preferences};

/// Pairs written out between two looks for Ctrl-C where a loop holds the GIL.
const CHECK_SIGNALS_EVERY: usize = 1 << 14;

/// A preference set tokenised once: `(prompt, chosen, rejected)` triples as bags of token ids.
///
/// Ids `0..8` are `VOCAB`; other words get the next ids in first-seen order. Build one from
/// pairs or rows with `PreferenceSet(pairs)`, or draw `make_dataset` straight into one with
/// `PreferenceSet.make_dataset(n, seed)`; `train_rm` and `pairwise_accuracy` take it as is.
#[pyclass(module = "rlhf_fast._core", frozen)]
pub struct PreferenceSet {
    prefs: Preferences,
    prompts: Vec<String>,
    vocab: Vec<String>,
}

struct Interner {
    vocab: Vec<String>,
    index: HashMap<String, u32>,
}

impl Interner {
    fn new() -> Self {
        let vocab: Vec<String> = VOCAB.iter().map(|&t| t.to_owned()).collect();
        let index = vocab.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        Interner { vocab, index }
    }

    fn id(&mut self, token: &str) -> u32 {
        if let Some(&id) = self.index.get(token) {
            return id;
        }
        let id = self.vocab.len() as u32;
        self.vocab.push(token.to_owned());
        self.index.insert(token.to_owned(), id);
        id
    }
}

impl PreferenceSet {
    fn tokenise(pairs: &Bound<'_, PyAny>) -> PyResult<Self> {
        let mut interner = Interner::new();
        let mut prompt_ids: HashMap<String, u32> = HashMap::new();
        let mut prompts = Vec::new();
        let mut prefs = Preferences::new();
        // `_checks.preference_triples`: any iterable but a string
        let not_pairs = || {
            PyTypeError::new_err(format!(
                "pairs must be an iterable of (prompt, chosen, rejected), got {}",
                type_name(pairs)
            ))
        };
        if pairs.is_instance_of::<PyString>() || pairs.is_instance_of::<PyBytes>() {
            return Err(not_pairs());
        }
        let iter = pairs.try_iter().map_err(|_| not_pairs())?;
        for (i, item) in iter.enumerate() {
            // A pair's responses can be long: look for Ctrl-C at every one (a flag test).
            pairs.py().check_signals()?;
            let item = item?;
            let (x, chosen, rejected) = pair_fields(i, &item)?;
            let x: String = x
                .extract()
                .map_err(|_| PyTypeError::new_err(format!("pairs[{i}] prompt must be a str, got {}", type_name(&x))))?;
            let next = prompt_ids.len() as u32;
            let prompt = *prompt_ids.entry(x.clone()).or_insert_with(|| {
                prompts.push(x);
                next
            });
            let chosen: Vec<u32> =
                tokens_of(format_args!("pairs[{i}] chosen"), &chosen)?.iter().map(|t| interner.id(t)).collect();
            let rejected: Vec<u32> =
                tokens_of(format_args!("pairs[{i}] rejected"), &rejected)?.iter().map(|t| interner.id(t)).collect();
            prefs.push(prompt, &chosen, &rejected);
        }
        Ok(PreferenceSet { prefs, prompts, vocab: interner.vocab })
    }

    fn response(&self, bag: bt::Bag) -> String {
        let mut words = Vec::new();
        for (token, count) in bag.entries() {
            for _ in 0..count as usize {
                words.push(self.vocab[token as usize].as_str());
            }
        }
        words.join(" ")
    }
}

/// `pairs` as a tokenised set: a `PreferenceSet` as is, anything else tokenised now.
fn with_preferences<T>(pairs: &Bound<'_, PyAny>, f: impl FnOnce(&PreferenceSet) -> PyResult<T>) -> PyResult<T> {
    match pairs.cast::<PreferenceSet>() {
        Ok(set) => f(set.get()),
        Err(_) => f(&PreferenceSet::tokenise(pairs)?),
    }
}

#[pymethods]
impl PreferenceSet {
    #[new]
    fn new(pairs: &Bound<'_, PyAny>) -> PyResult<Self> {
        Self::tokenise(pairs)
    }

    /// `PreferenceSet(make_dataset(n, seed))`, drawn and tokenised in Rust, off the GIL and
    /// interruptible; `n` is checked against half the machine's memory first.
    #[staticmethod]
    #[pyo3(signature = (n, seed=SeedKey::default()), text_signature = "(n, seed=0)")]
    fn make_dataset(py: Python<'_>, #[pyo3(from_py_with = args::n)] n: i64, seed: SeedKey) -> PyResult<Self> {
        let n = count("n", n, 0)?;
        let monitor = Monitor::default();
        let prefs = run_detached(py, &monitor, None, None, || {
            lesson::make_dataset(n, &seed.0, &mut |pairs| monitor.tick(pairs))
        })??;
        Ok(PreferenceSet {
            prefs,
            prompts: PROMPTS.iter().map(|&p| p.to_owned()).collect(),
            vocab: VOCAB.iter().map(|&t| t.to_owned()).collect(),
        })
    }

    fn __len__(&self) -> usize {
        self.prefs.len()
    }

    fn __repr__(&self) -> String {
        format!("PreferenceSet({} pairs, {} tokens)", self.prefs.len(), self.vocab.len())
    }

    /// Token strings by id.
    #[getter]
    fn vocab(&self) -> Vec<String> {
        self.vocab.clone()
    }

    /// The pairs as `(prompt, chosen, rejected)` strings, each response rebuilt from its bag.
    fn to_pairs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let prompts: Vec<Bound<'py, PyString>> = self.prompts.iter().map(|p| PyString::new(py, p)).collect();
        // Equal bags share one string (the lesson has 16 chosen and 16 rejected responses), so a
        // million pairs cost a million tuples, not three million strings.
        let mut memo: HashMap<Vec<(u32, u64)>, Bound<'py, PyString>> = HashMap::new();
        let mut text = |bag: bt::Bag| -> Bound<'py, PyString> {
            let key: Vec<(u32, u64)> = bag.entries().map(|(token, count)| (token, count.to_bits())).collect();
            memo.entry(key).or_insert_with(|| PyString::new(py, &self.response(bag))).clone()
        };
        let out = PyList::empty(py);
        for i in 0..self.prefs.len() {
            if i % CHECK_SIGNALS_EVERY == CHECK_SIGNALS_EVERY - 1 {
                py.check_signals()?;
            }
            let (chosen, rejected) = self.prefs.pair(i);
            let row = [prompts[self.prefs.prompts[i] as usize].clone(), text(chosen), text(rejected)];
            out.append(PyTuple::new(py, row)?)?;
        }
        Ok(out)
    }
}

/// `n` synthetic preference pairs, the very ones `random.Random(seed)` draws (interruptible;
/// `n` is checked against half the machine's memory first).
#[pyfunction]
#[pyo3(signature = (n, seed=SeedKey::default()), text_signature = "(n, seed=0)")]
fn make_dataset<'py>(
    py: Python<'py>,
    #[pyo3(from_py_with = args::n)] n: i64,
    seed: SeedKey,
) -> PyResult<Bound<'py, PyList>> {
    PreferenceSet::make_dataset(py, n, seed)?.to_pairs(py)
}

/// The key `random.Random(seed)` seeds MT19937 with: `abs(seed)` in 32-bit words.
#[pyfunction]
fn seed_key(seed: &Bound<'_, PyAny>) -> PyResult<Vec<u32>> {
    convert_seed_key(seed)
}

/// Token counts of a response, in first-seen order.
#[pyfunction]
fn bag<'py>(y: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
    let counts = PyDict::new(y.py());
    for token in tokens_of("y", y)? {
        let count: i64 = match counts.get_item(&token)? {
            Some(c) => c.extract::<i64>()? + 1,
            None => 1,
        };
        counts.set_item(token, count)?;
    }
    Ok(counts)
}

/// `sum w.get(tok, 0) * cnt` over the bag.
#[pyfunction]
fn dot(w: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<f64> {
    checked_weights("w", w)?;
    checked_weights("b", b)?;
    let mut total = 0.0;
    for item in b.call_method0("items")?.try_iter()? {
        let (token, count): (Bound<'_, PyAny>, f64) = item?.extract()?;
        let weight: f64 = match w.get_item(&token) {
            Ok(value) => value.extract()?,
            Err(err) if err.is_instance_of::<PyKeyError>(w.py()) => 0.0,
            Err(err) => return Err(err),
        };
        total += weight * count;
    }
    Ok(total)
}

/// One Bradley-Terry SGD step; mutates `w` and returns the loss before the step. A step
/// whose weights overflow raises `FloatingPointError` and changes nothing.
#[pyfunction]
fn rm_train_step(
    w: &Bound<'_, PyAny>,
    x: &Bound<'_, PyAny>,
    y_pos: &Bound<'_, PyAny>,
    y_neg: &Bound<'_, PyAny>,
    #[pyo3(from_py_with = args::lr)] lr: f64,
) -> PyResult<f64> {
    let _ = x; // the prompt is not a feature of this reward model
    checked_weights("w", w)?;
    let lr = error::positive("lr", lr)?;
    let mut interner_tokens: Vec<String> = Vec::new();
    let mut id_of = |token: String| match interner_tokens.iter().position(|t| *t == token) {
        Some(i) => i as u32,
        None => {
            interner_tokens.push(token);
            interner_tokens.len() as u32 - 1
        }
    };
    let chosen: Vec<u32> = tokens_of("y_pos", y_pos)?.into_iter().map(&mut id_of).collect();
    let rejected: Vec<u32> = tokens_of("y_neg", y_neg)?.into_iter().map(&mut id_of).collect();
    let (chosen, rejected) = (bt::bag(&chosen), bt::bag(&rejected));
    let mut weights = interner_tokens.iter().map(|t| weight_of(w, t)).collect::<PyResult<Vec<f64>>>()?;
    let loss = bt::rm_train_step(&mut weights, bt::Bag::Ragged(&chosen), bt::Bag::Ragged(&rejected), lr);
    if overflowed(&weights) {
        return Err(Error::Diverged(format!("rm_train_step diverged: weights overflowed (lr={})", py_float(lr))).into());
    }
    for (token, value) in interner_tokens.iter().zip(&weights) {
        w.set_item(token, value)?;
    }
    Ok(loss)
}

/// `epochs` SGD passes over the pairs (a `PreferenceSet`, pairs or rows); returns `w`.
///
/// Where every response has at most four distinct tokens and `lr * |d|^2 <= 8` for every pair
/// (`d`: chosen minus rejected token counts; the lesson's pairs qualify up to lr = 1), each
/// margin is computed from the weights before the previous step plus that step's effect, which
/// halves the loop's latency; the weights then stay within a few ulps of the reference's.
/// Otherwise the loop is the reference's, operation for operation.
///
/// Runs off the GIL and stops on Ctrl-C (an interrupted call changes nothing). Refuses empty
/// `pairs`; an epoch whose weights overflow raises `FloatingPointError` naming it and `lr`,
/// `w` as that epoch left it.
#[pyfunction]
#[pyo3(signature = (pairs, epochs=5, lr=0.1, w=None))]
fn train_rm<'py>(
    py: Python<'py>,
    pairs: &Bound<'py, PyAny>,
    #[pyo3(from_py_with = args::epochs)] epochs: i64,
    #[pyo3(from_py_with = args::lr)] lr: f64,
    w: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let epochs = count("epochs", epochs, 0)?;
    let lr = error::positive("lr", lr)?;
    let w = match w {
        Some(w) => {
            checked_weights("w", w)?;
            w.clone()
        }
        None => {
            let fresh = PyDict::new(py);
            for token in VOCAB {
                fresh.set_item(token, 0.0)?;
            }
            fresh.into_any()
        }
    };
    with_preferences(pairs, |set| {
        let mut weights = set.vocab.iter().map(|t| weight_of(&w, t)).collect::<PyResult<Vec<f64>>>()?;
        let monitor = Monitor::default();
        let outcome = run_detached(py, &monitor, None, None, || {
            reward_model::train_rm(&set.prefs, epochs, lr, &mut weights, &monitor)
        })?;
        if matches!(outcome, Err(Error::InvalidArgument(_))) {
            return Ok(outcome?); // refused before any step: w stays as it was
        }
        // Trained (or diverged, as the reference leaves w after the failing epoch).
        let used = set.prefs.used_tokens();
        for (id, token) in set.vocab.iter().enumerate() {
            let present = w.contains(token.as_str())?;
            if present || (epochs > 0 && used.get(id) == Some(&true)) {
                w.set_item(token, weights[id])?;
            }
        }
        Ok(outcome?)
    })?;
    Ok(w)
}

/// Share of pairs with `R(chosen) > R(rejected)` strictly.
#[pyfunction]
fn pairwise_accuracy(w: &Bound<'_, PyAny>, pairs: &Bound<'_, PyAny>) -> PyResult<f64> {
    checked_weights("w", w)?;
    with_preferences(pairs, |set| {
        let weights = set.vocab.iter().map(|t| weight_of(w, t)).collect::<PyResult<Vec<f64>>>()?;
        Ok(bt::pairwise_accuracy(&weights, &set.prefs)?)
    })
}

/// Many reward models at once: one per `(lr, epochs, start, stop)` spec, each SGD from `w`
/// (zeros when `None`) over `pairs[start:stop]`, in parallel. Returns the sweep output dict
/// (`final_params [spec, token]`) with the tokens under `vocab`.
#[pyfunction]
#[pyo3(signature = (pairs, specs, w=None, n_threads=None, progress=None, max_memory=None))]
fn sweep_rm<'py>(
    py: Python<'py>,
    pairs: &Bound<'py, PyAny>,
    specs: Vec<(f64, i64, i64, i64)>,
    w: Option<&Bound<'py, PyAny>>,
    n_threads: Option<usize>,
    progress: Option<Bound<'py, PyAny>>,
    max_memory: Option<u64>,
) -> PyResult<Bound<'py, PyDict>> {
    let runs = specs
        .into_iter()
        .map(|(lr, epochs, start, stop)| {
            Ok(RmRun {
                lr,
                epochs: count("epochs", epochs, 0)?,
                start: count("start", start, 0)?,
                stop: count("stop", stop, 0)?,
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    if let Some(w) = w {
        checked_weights("w", w)?;
    }
    let options = SweepOptions { n_threads, progress, max_memory };
    with_preferences(pairs, |set| {
        let w0 = match w {
            Some(w) => set.vocab.iter().map(|t| weight_of(w, t)).collect::<PyResult<Vec<f64>>>()?,
            None => vec![0.0; set.vocab.len()],
        };
        let engine = RmEngine::new(&set.prefs, &w0, &runs)?;
        let out = run_sweep(py, &engine, &runs, &options, "scalar")?;
        out.set_item("vocab", PyList::new(py, &set.vocab)?)?;
        Ok(out)
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(make_dataset, m)?)?;
    m.add_function(wrap_pyfunction!(seed_key, m)?)?;
    m.add_function(wrap_pyfunction!(bag, m)?)?;
    m.add_function(wrap_pyfunction!(dot, m)?)?;
    m.add_function(wrap_pyfunction!(rm_train_step, m)?)?;
    m.add_function(wrap_pyfunction!(train_rm, m)?)?;
    m.add_function(wrap_pyfunction!(pairwise_accuracy, m)?)?;
    m.add_function(wrap_pyfunction!(sweep_rm, m)?)?;
    Ok(())
}
