//! The reward-model side: tokenised preference sets, bags, the BT step and training.

use std::collections::HashMap;

use pyo3::exceptions::{PyKeyError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use super::args;
use super::convert::{
    checked_weights, count, finite_result, pair_fields, seed_key as convert_seed_key, tokens_of, type_name, weight_of,
    SeedKey,
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

/// A preference set tokenised once: each pair's prompt and its two responses as bags.
///
/// ``PreferenceSet(pairs)`` takes ``(prompt, chosen, rejected)`` triples or TRL rows;
/// ``PreferenceSet.make_dataset(n, seed)`` is ``PreferenceSet(make_dataset(n, seed))``.
/// ``train_rm``, ``pairwise_accuracy`` and ``sweep_rm`` take it in place of pairs, so a set
/// used many times is tokenised once. Tokens ``0..8`` are ``VOCAB``; other words follow in
/// first-seen order (``vocab``). ``len(s)`` is the number of pairs.
///
/// Parameters
/// ----------
/// pairs : iterable of (str, str, str) or of dict
///     ``(prompt, chosen, rejected)`` triples or rows with those keys; a response is a string
///     of white-space-separated words or a list of words.
///
/// Raises
/// ------
/// TypeError
///     ``pairs`` is not iterable, or an item is not a triple or row, or a prompt or response
///     is not a string (the message names ``pairs[i]``).
/// ValueError
///     A triple of the wrong length or a row lacking a key (named ``pairs[i]``).
///
/// Examples
/// --------
/// >>> s = rl.PreferenceSet([("help me", "clear kind", "rude vague"), ("help me", "new", "rude")])
/// >>> len(s), s.vocab[8:]
/// (2, ['new'])
/// >>> round(rl.pairwise_accuracy({"kind": 1.0, "rude": -1.0}, s), 4)
/// 1.0
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

    /// ``PreferenceSet(make_dataset(n, seed))``, without the strings in between.
    ///
    /// Parameters
    /// ----------
    /// n : int
    ///     How many pairs, >= 0.
    /// seed : int, optional
    ///     The stream's seed (default 0).
    ///
    /// Returns
    /// -------
    /// PreferenceSet
    ///     The pairs ``make_dataset(n, seed)`` draws, tokenised.
    ///
    /// Raises
    /// ------
    /// TypeError
    ///     ``n`` or ``seed`` is not an int (named).
    /// ValueError
    ///     ``n < 0``, or ``n`` pairs too many for half the machine's memory (refused before any
    ///     is drawn): ``"n=... needs ... bytes, more than max_memory=... bytes"``.
    /// KeyboardInterrupt
    ///     Ctrl-C during a long draw (Rust backend).
    ///
    /// Examples
    /// --------
    /// >>> s = rl.PreferenceSet.make_dataset(1000, seed=0)
    /// >>> len(s), s.to_pairs()[0]
    /// (1000, ('answer me', 'thorough clear', 'vague wrong'))
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

    /// The token strings by id: ``VOCAB``, then every other token in first-seen order.
    ///
    /// Returns
    /// -------
    /// list[str]
    ///     A new list.
    ///
    /// Examples
    /// --------
    /// >>> rl.PreferenceSet([("help me", "kind new", "rude")]).vocab[-2:]
    /// ['wrong', 'new']
    #[getter]
    fn vocab(&self) -> Vec<String> {
        self.vocab.clone()
    }

    /// The pairs, each response rebuilt from its bag (tokens grouped in first-seen order).
    ///
    /// Returns
    /// -------
    /// list[tuple[str, str, str]]
    ///     ``(prompt, chosen, rejected)`` triples; a response repeating a word has its copies
    ///     side by side.
    ///
    /// Examples
    /// --------
    /// >>> rl.PreferenceSet([("help me", "kind clear kind", "rude")]).to_pairs()
    /// [('help me', 'kind kind clear', 'rude')]
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

/// ``n`` synthetic preference pairs, drawn on one ``random.Random(seed)``.
///
/// ``n`` calls of ``make_pair`` on the same stream: the very pairs the lesson's loop draws
/// for the same seed. The Rust backend draws them off the GIL and stops on Ctrl-C.
///
/// Parameters
/// ----------
/// n : int
///     How many pairs, >= 0.
/// seed : int, optional
///     The stream's seed (default 0).
///
/// Returns
/// -------
/// list[tuple[str, str, str]]
///     ``(prompt, chosen, rejected)`` triples: two good words beat two bad ones.
///
/// Raises
/// ------
/// TypeError
///     ``n`` or ``seed`` is not an int (named).
/// ValueError
///     ``n < 0``, or ``n`` pairs would not fit in half the machine's memory:
///     ``"n=... needs ... bytes, more than max_memory=... bytes"``.
/// KeyboardInterrupt
///     Ctrl-C during a long draw (Rust backend).
///
/// Examples
/// --------
/// >>> rl.make_dataset(2, seed=0)  # doctest: +NORMALIZE_WHITESPACE
/// [('answer me', 'thorough clear', 'vague wrong'),
///  ('answer me', 'specific thorough', 'vague short')]
#[pyfunction]
#[pyo3(signature = (n, seed=SeedKey::default()), text_signature = "(n, seed=0)")]
fn make_dataset<'py>(
    py: Python<'py>,
    #[pyo3(from_py_with = args::n)] n: i64,
    seed: SeedKey,
) -> PyResult<Bound<'py, PyList>> {
    PreferenceSet::make_dataset(py, n, seed)?.to_pairs(py)
}

/// The key ``random.Random(seed)`` seeds MT19937 with (``init_by_array``).
///
/// ``abs(seed)`` in 32-bit little-endian words, ``[0]`` for 0 (SPEC section 3): two seeds with
/// the same key give the same stream, which is why ``seed`` and ``-seed`` run alike.
///
/// Parameters
/// ----------
/// seed : int
///     Any int, of any size.
///
/// Returns
/// -------
/// list[int]
///     The key's 32-bit words, least significant first.
///
/// Raises
/// ------
/// TypeError
///     ``seed`` is not an int (a bool neither): ``"seed must be an int, got float"``.
///
/// Examples
/// --------
/// >>> rl.seed_key(0), rl.seed_key(-7), rl.seed_key(2**32 + 5)
/// ([0], [7], [5, 1])
#[pyfunction]
fn seed_key(seed: &Bound<'_, PyAny>) -> PyResult<Vec<u32>> {
    convert_seed_key(seed)
}

/// Token counts of a response, in first-seen order.
///
/// Parameters
/// ----------
/// y : str or sequence of str
///     A string (split on white space) or a list of tokens.
///
/// Returns
/// -------
/// dict[str, int]
///     Token -> how many times it occurs.
///
/// Raises
/// ------
/// TypeError
///     ``y`` is neither a string nor a sequence of strings:
///     ``"y must be a str or a sequence of token strings, got int"``.
///
/// Examples
/// --------
/// >>> rl.bag("kind kind clear")
/// {'kind': 2, 'clear': 1}
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

/// The reward of a bag: ``sum(w[tok] * cnt)``, tokens missing from ``w`` weighing 0.
///
/// Parameters
/// ----------
/// w : Mapping[str, float]
///     The reward model: token -> weight.
/// b : Mapping[str, int]
///     A bag (:func:`bag`): token -> count.
///
/// Returns
/// -------
/// float
///     The sum, left to right over ``b``.
///
/// Raises
/// ------
/// TypeError
///     ``w`` or ``b`` is not a dict (named): ``"w must be a dict token -> weight, got list"``.
/// FloatingPointError
///     The result overflows for finite but extreme arguments (logits 1e308 apart, a
///     log-ratio past 709): ``"dot overflowed: the result is inf"``.
///
/// Examples
/// --------
/// >>> rl.dot({"kind": 1.0, "rude": -1.0}, rl.bag("kind kind rude vague"))
/// 1.0
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
    finite_result("dot", total)
}

/// One SGD step on the Bradley-Terry loss ``-log sigmoid(R(y+) - R(y-))``; mutates ``w``.
///
/// ``R(y)`` is :func:`dot` of ``w`` and the response's :func:`bag`. The step adds
/// ``lr * (1 - sigmoid(margin)) * count`` to each chosen token's weight and subtracts it from
/// each rejected token's, creating missing tokens at 0. The prompt ``x`` is not a feature.
///
/// Parameters
/// ----------
/// w : dict[str, float]
///     The reward model, updated in place.
/// x : str
///     The prompt (unused: the lesson's reward model scores responses only).
/// y_pos, y_neg : str or sequence of str
///     The chosen and the rejected response.
/// lr : float
///     Learning rate, > 0.
///
/// Returns
/// -------
/// float
///     The loss before the step.
///
/// Raises
/// ------
/// TypeError, ValueError
///     An argument of the wrong type or out of range, named: ``"lr must be > 0, got 0.0"``.
/// FloatingPointError
///     The step would leave a weight overflowed (NaN, or ``2**512`` or more in magnitude):
///     ``"rm_train_step diverged: weights overflowed (lr=...)"``; ``w`` is left as it was.
///
/// Examples
/// --------
/// >>> w = {}
/// >>> round(rl.rm_train_step(w, "help me", "clear kind", "rude vague", lr=0.1), 4)
/// 0.6931
/// >>> w
/// {'clear': 0.05, 'kind': 0.05, 'rude': -0.05, 'vague': -0.05}
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

/// Train a Bradley-Terry reward model: ``epochs`` passes of ``rm_train_step`` over the pairs.
///
/// The pairs are walked in order, every epoch. A new ``w`` starts at 0 for every word of
/// ``VOCAB``; a given one is updated in place. The Rust backend runs off the GIL and stops on
/// Ctrl-C (an interrupted call changes nothing). Where every response has at most four distinct
/// tokens and ``lr * |d|^2 <= 8`` for every pair (``d``: chosen minus rejected token counts; the
/// lesson's pairs qualify up to lr = 1) it computes each margin from the weights before the
/// previous step plus that step's effect, which halves the loop's latency; the weights then stay
/// within a few ulps of the reference's. Otherwise it follows the reference operation for
/// operation.
///
/// Parameters
/// ----------
/// pairs : PreferenceSet or iterable of pairs
///     A :class:`PreferenceSet`, or ``(prompt, chosen, rejected)`` triples or TRL rows; at
///     least one.
/// epochs : int, optional
///     Passes over the pairs, >= 0 (default 5).
/// lr : float, optional
///     Learning rate, > 0 (default 0.1).
/// w : dict[str, float], optional
///     Weights to start from, updated in place (default: a new dict of zeros).
///
/// Returns
/// -------
/// dict[str, float]
///     ``w``: token -> weight.
///
/// Raises
/// ------
/// TypeError, ValueError
///     An argument of the wrong type or out of range, named (``"epochs must be >= 0, got
///     -1"``), or empty ``pairs``: ``"pairs must not be empty"``.
/// FloatingPointError
///     An epoch leaves a weight overflowed: ``"train_rm diverged in epoch 3: weights
///     overflowed (lr=...)"``; ``w`` holds what that epoch left.
/// KeyboardInterrupt
///     Ctrl-C (Rust backend; ``w`` is left as it was).
///
/// Examples
/// --------
/// >>> w = rl.train_rm(rl.make_dataset(200, seed=0), epochs=2, lr=0.1)
/// >>> {tok: round(v, 4) for tok, v in w.items()}  # doctest: +NORMALIZE_WHITESPACE
/// {'clear': 1.0973, 'kind': 1.0421, 'rude': -1.2735, 'short': -1.0278,
///  'specific': 1.0913, 'thorough': 1.1054, 'vague': -1.0974, 'wrong': -0.9374}
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

/// The share of pairs the reward model orders strictly right: ``R(chosen) > R(rejected)``.
///
/// A tie counts as wrong: a pair whose two responses score the same (an untrained all-zero
/// ``w``, or two responses with the same bag) adds 0, not 1/2, so a reward model that scores
/// everything alike has accuracy 0.0. Tokens missing from ``w`` weigh 0.
///
/// Parameters
/// ----------
/// w : Mapping[str, float]
///     The reward model: token -> weight.
/// pairs : PreferenceSet or iterable of pairs
///     A :class:`PreferenceSet`, or ``(prompt, chosen, rejected)`` triples or TRL rows; at
///     least one.
///
/// Returns
/// -------
/// float
///     In ``[0, 1]``.
///
/// Raises
/// ------
/// TypeError, ValueError
///     ``w`` not a dict, a malformed pair (named ``pairs[i]``), or empty ``pairs``:
///     ``"pairs must not be empty"``.
///
/// Examples
/// --------
/// >>> pairs = [("help me", "clear kind", "rude vague"), ("help me", "kind", "vague")]
/// >>> rl.pairwise_accuracy({"clear": 1.0, "rude": -1.0}, pairs)  # the second pair ties: wrong
/// 0.5
/// >>> rl.pairwise_accuracy({}, pairs)
/// 0.0
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
