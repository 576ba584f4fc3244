//! DPO, GRPO and Best-of-N in a sequence world (issue 11): the sweeps. Convert, validate
//! (messages name the argument), run the core off the GIL, hand back numpy arrays. No
//! numerics here.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::args;
use super::convert::{count, dpo_params, int, SeedKey};
use super::sweep::{run_sweep, SweepOptions};
use super::token_ppo::{int_array, OwnedWorld, MAX_THREADS};
use crate::engines::sequence_best_of_n::{SequenceBestOfNEngine, SequenceBestOfNRun};
use crate::engines::sequence_dpo::{SequenceDpoEngine, SequenceDpoRun, SequencePairRows};
use crate::error::Error;
use crate::methods::token_ppo::{response_lengths, TokenWorld};

/// `n_threads` and `max_memory` as the sweeps take them, checked here too: `_core` is public.
fn sweep_options<'py>(
    n_threads: Option<Bound<'py, PyAny>>,
    progress: Option<Bound<'py, PyAny>>,
    max_memory: Option<Bound<'py, PyAny>>,
) -> PyResult<SweepOptions<'py>> {
    let n_threads = n_threads.map(|n| count("n_threads", int("n_threads", &n)?, 1)).transpose()?;
    if let Some(n) = n_threads.filter(|&n| n > MAX_THREADS) {
        return Err(Error::invalid(format!("n_threads must be <= {MAX_THREADS}, got {n}")).into());
    }
    let max_memory =
        max_memory.map(|m| Ok::<_, PyErr>(count("max_memory", int("max_memory", &m)?, 1)? as u64)).transpose()?;
    Ok(SweepOptions { n_threads, progress, max_memory })
}

/// The labelled pairs: int64 `prompts [n]`, `first`/`second [n, L]` in the contract's layout
/// (the first EOS ends a response, -1 after it), float64 `target [n]`.
fn sequence_pairs(
    world: &TokenWorld<'_>,
    prompts: &Bound<'_, PyAny>,
    first: &Bound<'_, PyAny>,
    second: &Bound<'_, PyAny>,
    target: &Bound<'_, PyAny>,
) -> PyResult<SequencePairRows> {
    let (n_prompts, max_len, vocab) = (world.n_prompts, world.max_len, world.vocab_size);
    let (prompts, _) = int_array("prompts", prompts, 1)?;
    let n = prompts.len();
    if let Some(i) = prompts.iter().position(|&p| !(0..n_prompts as i64).contains(&p)) {
        return Err(Error::invalid(format!("prompts[{i}] must be in [0, {n_prompts}), got {}", prompts[i])).into());
    }
    let side = |name: &str, obj| -> PyResult<(Vec<usize>, Vec<usize>)> {
        let (tokens, token_shape) = int_array(name, obj, 2)?;
        if token_shape != [n, max_len] {
            return Err(Error::invalid(format!("{name} must have shape [{n}, {max_len}], got {token_shape:?}")).into());
        }
        let lengths = response_lengths(&tokens, max_len, vocab)
            .map_err(|e| Error::invalid(e.to_string().replacen("tokens", name, 1)))?;
        // Past a response's end the token is unused: 0 stands in for the -1.
        Ok((tokens.iter().map(|&a| a.max(0) as usize).collect(), lengths))
    };
    let (first, first_len) = side("first", first)?;
    let (second, second_len) = side("second", second)?;
    let (target, _) = super::convert::float_array("target", target, 1)?;
    if target.len() != n {
        return Err(Error::invalid(format!("target must have {n} entries (one per pair), got {}", target.len())).into());
    }
    let prompts = prompts.iter().map(|&p| p as usize).collect();
    Ok(SequencePairRows { prompts, first, first_len, second, second_len, target, max_len })
}

/// One sequence DPO sweep run: `(beta, lr, loss_type, label_smoothing, epochs, seed or None)`.
type SequenceDpoRunTuple = (f64, f64, String, f64, i64, Option<SeedKey>);

/// Every DPO run of ``runs`` (``(beta, lr, loss_type, label_smoothing, epochs, seed or None)``)
/// in the sequence world of these arrays (``ref_logits [P, L, V]``, the reward model ``w``,
/// ``bias``, ``w_len``, the gold ``g``, ``offset``, ``count_once``) over its labelled pairs
/// (int64 ``prompts [n]``, ``first``/``second [n, L]`` padded with -1, float64 ``target [n]``),
/// each from the reference policy, in parallel: the reference's
/// ``rlhf_fast.reference.engines.sequence_dpo.sweep_sequence_dpo``. ``with_proxy=False``
/// records no proxy score.
#[pyfunction]
#[pyo3(signature = (
    ref_logits, w, bias, w_len, g, offset, count_once, prompts, first, second, target, runs, with_proxy=true,
    record_every=1, n_threads=None, progress=None, max_memory=None,
))]
#[allow(clippy::too_many_arguments)]
pub fn sweep_sequence_dpo<'py>(
    py: Python<'py>,
    ref_logits: &Bound<'py, PyAny>,
    w: &Bound<'py, PyAny>,
    bias: &Bound<'py, PyAny>,
    w_len: &Bound<'py, PyAny>,
    g: &Bound<'py, PyAny>,
    offset: &Bound<'py, PyAny>,
    count_once: &Bound<'py, PyAny>,
    prompts: &Bound<'py, PyAny>,
    first: &Bound<'py, PyAny>,
    second: &Bound<'py, PyAny>,
    target: &Bound<'py, PyAny>,
    runs: Vec<SequenceDpoRunTuple>,
    with_proxy: bool,
    #[pyo3(from_py_with = args::record_every)] record_every: i64,
    n_threads: Option<Bound<'py, PyAny>>,
    progress: Option<Bound<'py, PyAny>>,
    max_memory: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let options = sweep_options(n_threads, progress, max_memory)?;
    let owned = OwnedWorld::convert(ref_logits, w, bias, w_len, g, offset, count_once)?;
    let world = owned.world()?;
    let pairs = sequence_pairs(&world, prompts, first, second, target)?;
    let record_every = count("record_every", record_every, 0)?;
    let runs = runs
        .into_iter()
        .map(|(beta, lr, loss_type, label_smoothing, epochs, seed)| {
            Ok(SequenceDpoRun {
                params: dpo_params(beta, lr, &loss_type, label_smoothing)?,
                epochs: count("epochs", epochs, 1)?,
                shuffle_seed: seed.map(|s| s.0),
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    let engine = SequenceDpoEngine::new(world, &pairs, with_proxy, record_every, &runs)?;
    run_sweep(py, &engine, &runs, &options, "scalar")
}

/// Every Best-of-N run of ``runs`` (``(n, samples, seed)``) in the sequence world of these
/// arrays, from its reference policy, in parallel: the reference's
/// ``rlhf_fast.reference.engines.sequence_best_of_n.sweep_sequence_best_of_n``.
#[pyfunction]
#[pyo3(signature = (ref_logits, w, bias, w_len, g, offset, count_once, runs, n_threads=None, progress=None, max_memory=None))]
#[allow(clippy::too_many_arguments)]
pub fn sweep_sequence_best_of_n<'py>(
    py: Python<'py>,
    ref_logits: &Bound<'py, PyAny>,
    w: &Bound<'py, PyAny>,
    bias: &Bound<'py, PyAny>,
    w_len: &Bound<'py, PyAny>,
    g: &Bound<'py, PyAny>,
    offset: &Bound<'py, PyAny>,
    count_once: &Bound<'py, PyAny>,
    runs: Vec<(i64, i64, SeedKey)>,
    n_threads: Option<Bound<'py, PyAny>>,
    progress: Option<Bound<'py, PyAny>>,
    max_memory: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let options = sweep_options(n_threads, progress, max_memory)?;
    let owned = OwnedWorld::convert(ref_logits, w, bias, w_len, g, offset, count_once)?;
    let world = owned.world()?;
    let runs = runs
        .into_iter()
        .map(|(n, samples, seed)| {
            Ok(SequenceBestOfNRun {
                n: count("n", n, 1)? as u64,
                samples: count("samples", samples, 2)?,
                seed_key: seed.0,
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    let engine = SequenceBestOfNEngine::new(world, &runs)?;
    run_sweep(py, &engine, &runs, &options, "scalar")
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(sweep_sequence_dpo, m)?)?;
    m.add_function(wrap_pyfunction!(sweep_sequence_best_of_n, m)?)?;
    Ok(())
}
