//! Whole computations over a world (`rlhf_fast.worlds`): the proxy reward model's passes
//! over labelled pairs ([`train_reward_model`]), a policy's exact expectations per prompt
//! ([`world_expectations`]: `World.kl`, `World.expected_gold`, `World.expected_score`) and the
//! frontier of KL-regularised optima `pi*_beta ∝ pi_ref exp(r / beta)` over beta
//! ([`world_frontier`]: `Frontier.of`).
//!
//! The proxy score and the gold under a policy are [`WorldTables::prompt_stats`]'s, the one
//! place they are computed. The KL is taken in log space, `sum_a pi(a) (log pi(a) - log
//! pi_ref(a))` with `log pi` the policy's log-softmax, and held at 0 from below: the reference's own
//! KL is exactly 0 (its log-probabilities are the same floats), where `prompt_stats`' KL, from
//! `log` of the probabilities, can be a rounding error of either sign. A `"count_once"` gold
//! is the sum of `gold_token + repeat_penalty` over the distinct tokens less
//! `repeat_penalty * response_len`: its tables carry that sum's values.

use super::driver::Monitor;
use super::world_ppo::{Table, WorldStats, WorldTables};
use crate::error::{
    finite, finite_slice, non_negative, overflowed, positive, py_float, vec_with_capacity, Error, Result,
};
use crate::kernels::softmax::{log_softmax_row, softmax_row};
use crate::methods::world::reward_model::rm_pair_step;

/// Most passes over the pairs a reward model's training takes.
pub const MAX_EPOCHS: usize = 10_000;
/// Most tokens a world's vocabulary has.
pub const MAX_VOCAB: usize = 1 << 20;

/// Labelled pairs of responses of `response_len` tokens, row-major.
#[derive(Clone, Copy, Debug)]
pub struct LabelledPairs<'a> {
    pub first: &'a [usize],
    pub second: &'a [usize],
    pub response_len: usize,
    /// The probability that `first` is preferred (0 or 1 for hard labels).
    pub target: &'a [f64],
    /// Per-pair margins (TRL's `margin` column).
    pub margin: &'a [f64],
}

/// A reward model's SGD settings.
#[derive(Clone, Copy, Debug)]
pub struct RmSgd {
    pub epochs: usize,
    pub lr: f64,
    pub center_rewards_coefficient: f64,
}

/// The weights of `vocab` tokens after `sgd.epochs` passes of [`rm_pair_step`] over `pairs`,
/// in order, from zero; the monitor is ticked with each pass's pairs. Weights that overflow
/// (2^512 in magnitude, or NaN) after a pass stop the training: `train_reward_model diverged
/// in epoch k: weights overflowed (lr=...)`.
pub fn train_reward_model(vocab: usize, pairs: LabelledPairs<'_>, sgd: RmSgd, monitor: &Monitor) -> Result<Vec<f64>> {
    let LabelledPairs { first, second, response_len: len, target, margin } = pairs;
    if !(1..=MAX_VOCAB).contains(&vocab) {
        return Err(Error::invalid(format!("vocab must be 1 to {MAX_VOCAB} tokens, got {vocab}")));
    }
    let n = target.len();
    if n == 0 {
        return Err(Error::invalid("pairs must not be empty"));
    }
    for (name, tokens) in [("first", first), ("second", second)] {
        if n.checked_mul(len) != Some(tokens.len()) {
            return Err(Error::invalid(format!("{name} holds {} tokens, not {n} x {len}", tokens.len())));
        }
    }
    check_labels(target, margin)?;
    if let Some(&a) = first.iter().chain(second).find(|&&a| a >= vocab) {
        return Err(Error::invalid(format!("pairs has token {a}, past the world's {vocab} tokens")));
    }
    let pair = |i: usize| (&first[i * len..(i + 1) * len], &second[i * len..(i + 1) * len]);
    reward_model_sgd(vocab, pair, target, margin, sgd, "train_reward_model", monitor)
}

/// Checks a reward model's labels, one per pair: `margin` finite and as long as `target`,
/// `target` probabilities.
pub(crate) fn check_labels(target: &[f64], margin: &[f64]) -> Result<()> {
    let n = target.len();
    if margin.len() != n {
        return Err(Error::invalid(format!("margin must have {n} floats, one per pair, got {}", margin.len())));
    }
    if let Some(i) = target.iter().position(|t| !(0.0..=1.0).contains(t)) {
        let message = format!("target[{i}] must be a probability in [0, 1], got {}", py_float(target[i]));
        return Err(Error::invalid(message));
    }
    finite_slice("margin", margin)
}

/// The weights of `vocab` columns after `sgd.epochs` passes of [`rm_pair_step`] over the
/// pairs `pair(i)` (columns already checked below `vocab`) labelled `target[i]` and
/// `margin[i]` ([`check_labels`]), in order, from zero, after checking `sgd`; the monitor is
/// ticked with each pass's pairs. Weights that overflow after a pass stop the training:
/// `{name} diverged in epoch k: weights overflowed (lr=...)`.
pub(crate) fn reward_model_sgd<'p>(
    vocab: usize,
    pair: impl Fn(usize) -> (&'p [usize], &'p [usize]),
    target: &[f64],
    margin: &[f64],
    sgd: RmSgd,
    name: &str,
    monitor: &Monitor,
) -> Result<Vec<f64>> {
    if sgd.epochs > MAX_EPOCHS {
        return Err(Error::invalid(format!("epochs must be <= {MAX_EPOCHS}, got {}", sgd.epochs)));
    }
    let lr = positive("lr", finite("lr", sgd.lr)?)?;
    let c = non_negative("center_rewards_coefficient", sgd.center_rewards_coefficient)?;

    let n = target.len();
    let mut w = vec_with_capacity(vocab, "the reward model's weights")?;
    w.resize(vocab, 0.0);
    for epoch in 0..sgd.epochs {
        for i in 0..n {
            let (first, second) = pair(i);
            rm_pair_step(&mut w, first, second, target[i], margin[i], lr, c);
        }
        if overflowed(&w) {
            return Err(Error::Diverged(format!(
                "{name} diverged in epoch {epoch}: weights overflowed (lr={})",
                py_float(lr)
            )));
        }
        monitor.tick(n as u64)?;
    }
    Ok(w)
}

/// A world as its expectations need it: `[n_prompts, vocab]` tables and its gold's kind.
#[derive(Clone, Copy, Debug)]
pub struct WorldSpec<'a> {
    pub ref_logits: Table<'a>,
    pub gold_token: Table<'a>,
    pub count_once: bool,
    /// What each repeated copy of a token costs a `count_once` gold (0 for a linear gold).
    pub repeat_penalty: f64,
    pub response_len: i64,
}

/// What [`world_expectations`] and [`world_frontier`] return: one entry per prompt, or per beta.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Expectations {
    /// `L KL(pi || pi_ref)` of a response.
    pub kl: Vec<f64>,
    /// The reward model's expected score, `L sum_a pi(a) w(a)` (0 without a model).
    pub proxy: Vec<f64>,
    /// The gold's expectation.
    pub gold: Vec<f64>,
}

/// A world's checked tables with the reward model `weights` (zeros when `None`): the
/// `count_once` gold's table is `gold_token + repeat_penalty`, held in `gold_seen`.
fn checked_tables<'a>(
    world: &WorldSpec<'a>,
    weights: &'a [f64],
    gold_seen: &'a mut Vec<f64>,
) -> Result<WorldTables<'a>> {
    let penalty = non_negative("repeat_penalty", world.repeat_penalty)?;
    if !world.count_once && penalty != 0.0 {
        return Err(Error::invalid(format!("repeat_penalty applies to a count_once gold, got {}", py_float(penalty))));
    }
    let gold = world.gold_token;
    *gold_seen = vec_with_capacity(gold.values.len(), "the gold's table")?;
    gold_seen.extend(gold.values.iter().map(|&g| g + penalty));
    let gold_seen: &'a Vec<f64> = gold_seen;
    let seen = Table { values: gold_seen, ..gold };
    WorldTables::new(world.ref_logits, weights, seen, world.count_once, world.response_len)
}

/// `max(sum_a p(a) (log_p(a) - ref_log_probs(a)), 0)` from the policy's probabilities `p` and
/// log-probabilities `log_p`; a token of probability 0 adds nothing.
fn kl_from_log_probs(p: &[f64], log_p: &[f64], ref_log_probs: &[f64]) -> f64 {
    let mut total = 0.0;
    for ((&pa, &lp), &lq) in p.iter().zip(log_p).zip(ref_log_probs) {
        if pa > 0.0 {
            total += pa * (lp - lq);
        }
    }
    total.max(0.0)
}

/// The reference's log-probabilities, and scratch rows for one prompt's expectations.
struct Rows {
    p: Vec<f64>,
    log_p: Vec<f64>,
    ref_log_probs: Vec<f64>,
}

impl Rows {
    fn new(world: &WorldTables<'_>) -> Result<Self> {
        let vocab = world.vocab_size;
        let mut ref_log_probs = zeros(world.ref_logits.len(), "the reference's log-probabilities")?;
        for (row, out) in world.ref_logits.chunks_exact(vocab).zip(ref_log_probs.chunks_exact_mut(vocab)) {
            log_softmax_row(row, out);
        }
        Ok(Rows { p: zeros(vocab, "a row")?, log_p: zeros(vocab, "a row")?, ref_log_probs })
    }

    /// Prompt `x`'s exact statistics under the policy row `logits`.
    fn stats(&mut self, world: &WorldTables<'_>, penalty: f64, x: usize, logits: &[f64]) -> WorldStats {
        let v = world.vocab_size;
        let mut stats = world.prompt_stats(x, logits, &mut self.p);
        if world.count_once {
            stats.gold_score -= penalty * world.response_len as f64;
        }
        softmax_row(logits, &mut self.p);
        log_softmax_row(logits, &mut self.log_p);
        let ref_log_p = &self.ref_log_probs[x * v..(x + 1) * v];
        stats.kl = world.response_len as f64 * kl_from_log_probs(&self.p, &self.log_p, ref_log_p);
        stats
    }
}

/// The exact expectations, per prompt, of the policy `logits` (`[n_prompts, vocab]`, finite)
/// in `world` with the reward model `weights` (one per token; the proxy is 0 without one).
pub fn world_expectations(world: &WorldSpec<'_>, weights: Option<&[f64]>, logits: &[f64]) -> Result<Expectations> {
    let vocab = world.ref_logits.cols;
    let none;
    let weights = match weights {
        Some(weights) => weights,
        None => {
            none = zeros(vocab, "the reward model's weights")?;
            &none
        }
    };
    let mut gold_seen = Vec::new();
    let tables = checked_tables(world, weights, &mut gold_seen)?;
    if logits.len() != tables.ref_logits.len() {
        return Err(Error::invalid(format!(
            "logits must have the shape of ref_logits, ({}, {vocab}), got {} values",
            tables.n_prompts,
            logits.len()
        )));
    }
    finite_slice("logits", logits)?;
    let mut rows = Rows::new(&tables)?;
    let mut out = Expectations::default();
    for series in [&mut out.kl, &mut out.proxy, &mut out.gold] {
        *series = vec_with_capacity(tables.n_prompts, "the expectations")?;
    }
    for (x, row) in logits.chunks_exact(vocab).enumerate() {
        let stats = rows.stats(&tables, world.repeat_penalty, x, row);
        out.kl.push(stats.kl);
        out.proxy.push(stats.proxy_score);
        out.gold.push(stats.gold_score);
    }
    Ok(out)
}

/// `len` zeros, or [`Error::OutOfMemory`] naming `what`.
fn zeros(len: usize, what: &str) -> Result<Vec<f64>> {
    let mut zeros = vec_with_capacity(len, what)?;
    zeros.resize(len, 0.0);
    Ok(zeros)
}

/// The frontier of the reward `reward` (`[1, vocab]`, a reward model's weights, or
/// `[n_prompts, vocab]`, the gold's values): for each of `betas` (> 0), the means over prompts
/// of the KL, the proxy (the reward model's score, `weights`; 0 without) and the gold under
/// `pi ∝ pi_ref exp(r / beta)`. The tilt is taken from each row's maximum, `(r - max r) /
/// beta <= 0`; where it passes the floats (a tiny beta), its `-inf` is held at `-1e300`, a
/// probability of 0.
pub fn world_frontier(
    world: &WorldSpec<'_>,
    reward: Table<'_>,
    weights: Option<&[f64]>,
    betas: &[f64],
) -> Result<Expectations> {
    let vocab = world.ref_logits.cols;
    let none;
    let weights = match weights {
        Some(weights) => weights,
        None => {
            none = zeros(vocab, "the reward model's weights")?;
            &none
        }
    };
    let mut gold_seen = Vec::new();
    let tables = checked_tables(world, weights, &mut gold_seen)?;
    let n_prompts = tables.n_prompts;
    if reward.cols != vocab || !(reward.rows == 1 || reward.rows == n_prompts) {
        return Err(Error::invalid(format!(
            "reward must have 1 or {n_prompts} rows of {vocab} values, got ({}, {})",
            reward.rows, reward.cols
        )));
    }
    finite_slice("reward", reward.values)?;
    if betas.is_empty() {
        return Err(Error::invalid("betas must not be empty"));
    }
    if let Some(i) = betas.iter().position(|&beta| !(beta > 0.0 && beta.is_finite())) {
        return Err(Error::invalid(format!("betas[{i}] must be > 0 and finite, got {}", py_float(betas[i]))));
    }
    let mut tilt = vec_with_capacity(reward.values.len(), "the reward's tilt")?;
    for row in reward.values.chunks_exact(vocab) {
        let top = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        tilt.extend(row.iter().map(|&r| r - top));
    }
    let mut rows = Rows::new(&tables)?;
    let mut logits = zeros(vocab, "a row of logits")?;
    let mut out = Expectations::default();
    for series in [&mut out.kl, &mut out.proxy, &mut out.gold] {
        *series = vec_with_capacity(betas.len(), "the frontier")?;
    }
    let n = n_prompts as f64;
    for &beta in betas {
        let mut total = WorldStats::default();
        for x in 0..n_prompts {
            let reference = &tables.ref_logits[x * vocab..(x + 1) * vocab];
            let r = if reward.rows == 1 { &tilt[..] } else { &tilt[x * vocab..(x + 1) * vocab] };
            for ((logit, &ref_logit), &ra) in logits.iter_mut().zip(reference).zip(r) {
                *logit = ref_logit + (ra / beta).max(-1e300);
            }
            let stats = rows.stats(&tables, world.repeat_penalty, x, &logits);
            total.kl += stats.kl;
            total.proxy_score += stats.proxy_score;
            total.gold_score += stats.gold_score;
        }
        out.kl.push(total.kl / n);
        out.proxy.push(total.proxy_score / n);
        out.gold.push(total.gold_score / n);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REF: [f64; 3] = [0.0, -1.0, 0.5];
    const GOLD: [f64; 3] = [1.0, -2.0, 0.25];

    fn world(count_once: bool, repeat_penalty: f64, response_len: i64) -> WorldSpec<'static> {
        WorldSpec {
            ref_logits: Table { values: &REF, rows: 1, cols: 3 },
            gold_token: Table { values: &GOLD, rows: 1, cols: 3 },
            count_once,
            repeat_penalty,
            response_len,
        }
    }

    /// Every response of `len` tokens drawn from `p`, with its probability.
    fn responses(p: &[f64], len: usize) -> Vec<(Vec<usize>, f64)> {
        let mut out = vec![(Vec::new(), 1.0)];
        for _ in 0..len {
            out = out
                .into_iter()
                .flat_map(|(tokens, q)| {
                    (0..p.len()).map(move |a| ([tokens.clone(), vec![a]].concat(), q * p[a])).collect::<Vec<_>>()
                })
                .collect();
        }
        out
    }

    #[test]
    fn expectations_match_enumerating_every_response() {
        let logits = [0.3, 0.9, -0.4];
        let weights = [0.5, 2.0, -1.0];
        let (mut p, mut ref_p) = ([0.0; 3], [0.0; 3]);
        crate::kernels::softmax::softmax_row(&logits, &mut p);
        crate::kernels::softmax::softmax_row(&REF, &mut ref_p);
        for (count_once, penalty) in [(true, 0.0), (true, 0.75), (false, 0.0)] {
            let out = world_expectations(&world(count_once, penalty, 3), Some(&weights), &logits).unwrap();
            let (mut gold, mut proxy, mut kl) = (0.0, 0.0, 0.0);
            for (tokens, q) in responses(&p, 3) {
                let mut distinct = tokens.clone();
                distinct.sort_unstable();
                distinct.dedup();
                let g = if count_once {
                    distinct.iter().map(|&a| GOLD[a]).sum::<f64>() - penalty * (3 - distinct.len()) as f64
                } else {
                    tokens.iter().map(|&a| GOLD[a]).sum::<f64>()
                };
                gold += q * g;
                proxy += q * tokens.iter().map(|&a| weights[a]).sum::<f64>();
                let q_ref: f64 = tokens.iter().map(|&a| ref_p[a]).product();
                kl += q * (q / q_ref).ln();
            }
            assert!((out.gold[0] - gold).abs() < 1e-12, "{count_once} {penalty}: {} {gold}", out.gold[0]);
            assert!((out.proxy[0] - proxy).abs() < 1e-12);
            assert!((out.kl[0] - kl).abs() < 1e-12);
        }
    }

    #[test]
    fn the_reference_is_at_kl_zero_and_without_a_model_the_proxy_is_zero() {
        let out = world_expectations(&world(true, 1.0, 4), None, &REF).unwrap();
        assert_eq!((out.kl[0], out.proxy[0]), (0.0, 0.0));
    }

    #[test]
    fn the_frontier_runs_from_the_reference_to_the_best_token() {
        let gold = Table { values: &GOLD, rows: 1, cols: 3 };
        let out = world_frontier(&world(false, 0.0, 2), gold, None, &[1e300, 1e-300]).unwrap();
        let reference = world_expectations(&world(false, 0.0, 2), None, &REF).unwrap();
        assert!(out.kl[0] < 1e-200 && (out.gold[0] - reference.gold[0]).abs() < 1e-12, "{out:?}");
        // beta -> 0: all mass on token 0 (gold 1), KL = L log(1 / ref(0))
        let mut ref_p = [0.0; 3];
        crate::kernels::softmax::softmax_row(&REF, &mut ref_p);
        assert_eq!(out.gold[1], 2.0);
        assert!((out.kl[1] - 2.0 * -ref_p[0].ln()).abs() < 1e-12);
        assert_eq!(out.proxy, vec![0.0, 0.0]);
    }

    #[test]
    fn bad_frontiers_and_policies_are_refused_by_name() {
        let gold = Table { values: &GOLD, rows: 1, cols: 3 };
        for betas in [&[][..], &[0.0], &[f64::INFINITY]] {
            assert!(world_frontier(&world(false, 0.0, 2), gold, None, betas).is_err());
        }
        let narrow = Table { values: &GOLD[..2], rows: 1, cols: 2 };
        assert!(world_frontier(&world(false, 0.0, 2), narrow, None, &[1.0]).is_err());
        assert!(world_expectations(&world(false, 0.0, 2), None, &[0.0, f64::NAN, 0.0]).is_err());
        assert!(world_expectations(&world(false, 0.5, 2), None, &REF).is_err());
        assert!(world_expectations(&world(false, 0.0, 0), None, &REF).is_err());
    }

    fn pairs<'a>(first: &'a [usize], second: &'a [usize], target: &'a [f64], margin: &'a [f64]) -> LabelledPairs<'a> {
        LabelledPairs { first, second, response_len: first.len() / target.len().max(1), target, margin }
    }

    #[test]
    fn training_is_passes_of_pair_steps_in_order() {
        let (first, second, target, margin) = ([0, 1, 2, 2], [1, 1, 0, 2], [1.0, 0.25], [0.0, 0.5]);
        let sgd = RmSgd { epochs: 3, lr: 0.1, center_rewards_coefficient: 0.01 };
        let w = train_reward_model(4, pairs(&first, &second, &target, &margin), sgd, &Monitor::default()).unwrap();
        let mut expected = vec![0.0; 4];
        for _ in 0..3 {
            rm_pair_step(&mut expected, &first[..2], &second[..2], 1.0, 0.0, 0.1, 0.01);
            rm_pair_step(&mut expected, &first[2..], &second[2..], 0.25, 0.5, 0.1, 0.01);
        }
        assert_eq!(w, expected);
    }

    #[test]
    fn training_that_overflows_or_is_cancelled_stops() {
        let p = pairs(&[0], &[1], &[1.0], &[0.0]);
        let sgd = RmSgd { epochs: 10_000, lr: 1e300, center_rewards_coefficient: 1.0 };
        let err = train_reward_model(2, p, sgd, &Monitor::default()).unwrap_err();
        assert!(err.to_string().starts_with("train_reward_model diverged in epoch "), "{err}");
        let monitor = Monitor::default();
        monitor.cancel();
        let sgd = RmSgd { epochs: 2, lr: 0.1, center_rewards_coefficient: 0.0 };
        assert_eq!(train_reward_model(2, p, sgd, &monitor), Err(Error::Cancelled));
    }

    #[test]
    fn bad_pairs_are_refused_by_name() {
        let sgd = RmSgd { epochs: 1, lr: 0.1, center_rewards_coefficient: 0.0 };
        let run = |p, vocab| train_reward_model(vocab, p, sgd, &Monitor::default()).unwrap_err().to_string();
        assert!(run(pairs(&[0], &[2], &[1.0], &[0.0]), 2).starts_with("pairs has token 2"));
        assert!(run(pairs(&[0], &[1], &[1.5], &[0.0]), 2).starts_with("target[0]"));
        assert!(run(pairs(&[0], &[1], &[1.0], &[f64::NAN]), 2).starts_with("margin[0]"));
        assert!(run(pairs(&[], &[], &[], &[]), 2).starts_with("pairs must not be empty"));
        assert!(run(pairs(&[0], &[1], &[1.0], &[0.0]), 0).starts_with("vocab"));
        let too_many = RmSgd { epochs: MAX_EPOCHS + 1, ..sgd };
        let err = train_reward_model(2, pairs(&[0], &[1], &[1.0], &[0.0]), too_many, &Monitor::default());
        assert!(err.is_err());
    }
}
