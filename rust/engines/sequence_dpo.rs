//! DPO in a sequence world: the policy is a table of logits `theta[P, L, V]` (prompt,
//! position; EOS is token 0), starting at the world's reference (which stays frozen), and
//! learns from labelled pairs of variable-length responses. One step is
//! [`sequence_dpo_update`]; the sweep engine is [`SequenceDpoEngine`].
//!
//! A response's log-probability is the sum over its tokens (the EOS included, the padding
//! excluded) of `log softmax(theta[p, t])[y_t]`, as TRL sums `per_token_logps` over its
//! completion mask. The loss family is the lesson's ([`DpoParams::loss_and_step`]: TRL's
//! `sigmoid`, `robust`, `ipo`, `hinge`, cDPO's label smoothing); IPO divides each response's
//! log-ratio by its length, the EOS included, as TRL's `dpo_trainer.py` divides by
//! `completion_mask.sum(dim=1)` (its chosen and rejected texts end with the EOS it appends).
//! The gradient of `u` at position `t` is `w+ [t < n+] (onehot(y+_t) - pi_t) - w- [t < n-]
//! (onehot(y-_t) - pi_t)`, `w = 1` (`1 / n` for IPO), so only the positions a response reaches
//! move. The reference twin (`python/rlhf_fast/reference/engines/sequence_dpo.py`) computes
//! every float in the same order.

use super::dpo::{longest_run_steps, EpochOrder};
use super::driver::{check_summary, Engine, Keep, Monitor, RunsOut, Ticker};
use super::sequence_common::CachedStats;
use crate::error::{overflowed, py_float, record_overflowed, Error, Result};
use crate::kernels::softmax::softmax_and_log_softmax_row;
use crate::methods::dpo::{pair_label, DpoOutcome, DpoParams, LossType};
use crate::methods::token_ppo::TokenWorld;

/// The per-step series of a sequence DPO sweep with a reward model: the pair's prompt, TRL's
/// record before the step ('/' as '_') and the exact means over prompts after it.
pub const SEQUENCE_DPO_HISTORY_FIELDS: [&str; 10] = [
    "prompt_index",
    "loss",
    "rewards_chosen",
    "rewards_rejected",
    "rewards_margins",
    "rewards_accuracies",
    "proxy_score",
    "gold_score",
    "mean_kl",
    "mean_length",
];
/// [`SEQUENCE_DPO_HISTORY_FIELDS`] without a reward model: no proxy score.
pub const SEQUENCE_DPO_HISTORY_FIELDS_GOLD: [&str; 9] = [
    "prompt_index",
    "loss",
    "rewards_chosen",
    "rewards_rejected",
    "rewards_margins",
    "rewards_accuracies",
    "gold_score",
    "mean_kl",
    "mean_length",
];
/// Per-run results: the final policy's exact means, then the means over the last epoch;
/// without a reward model there is no `final_proxy_score`.
pub const SEQUENCE_DPO_SUMMARY_FIELDS: [&str; 7] = [
    "final_proxy_score",
    "final_gold_score",
    "final_kl",
    "final_length",
    "last_epoch_loss",
    "last_epoch_accuracy",
    "last_epoch_margin",
];
const PROXY_FIELD: usize = 6;

/// Labelled pairs of a sequence world: pair `i` is prompt `prompts[i]`, its first response
/// `first[i L..i L + first_len[i]]` (the EOS included), its second likewise, and `target[i]`,
/// the probability that the first is preferred.
#[derive(Clone, Debug, PartialEq)]
pub struct SequencePairRows {
    pub prompts: Vec<usize>,
    pub first: Vec<usize>,
    pub first_len: Vec<usize>,
    pub second: Vec<usize>,
    pub second_len: Vec<usize>,
    pub target: Vec<f64>,
    pub max_len: usize,
}

impl SequencePairRows {
    fn len(&self) -> usize {
        self.prompts.len()
    }

    fn responses(&self, i: usize) -> (&[usize], &[usize]) {
        let start = i * self.max_len;
        (&self.first[start..start + self.first_len[i]], &self.second[start..start + self.second_len[i]])
    }

    /// At least one pair, fewer than 2^32; the arrays' sizes agree with `world` (prompts and
    /// tokens in range, lengths 1 to `max_len`) and every target is a probability.
    pub fn check(&self, world: &TokenWorld<'_>) -> Result<()> {
        let n = self.len();
        if n == 0 {
            return Err(Error::invalid("pairs must not be empty"));
        }
        if n > u32::MAX as usize {
            return Err(Error::invalid(format!("pairs must hold fewer than 2**32 pairs, got {n}")));
        }
        if self.max_len != world.max_len {
            return Err(Error::invalid(format!(
                "first must hold responses of the world's max_len {}, got {}",
                world.max_len, self.max_len
            )));
        }
        let cells = n * self.max_len;
        let sizes = [self.first.len(), self.second.len()] == [cells, cells]
            && [self.first_len.len(), self.second_len.len(), self.target.len()] == [n, n, n];
        if !sizes {
            return Err(Error::invalid("pairs are malformed: first, second and target must have one row per pair"));
        }
        if let Some(i) = self.prompts.iter().position(|&x| x >= world.n_prompts) {
            return Err(Error::invalid(format!(
                "prompts[{i}] must be one of the world's {} prompts, got {}",
                world.n_prompts, self.prompts[i]
            )));
        }
        for (name, tokens, lengths) in
            [("first", &self.first, &self.first_len), ("second", &self.second, &self.second_len)]
        {
            for (i, &len) in lengths.iter().enumerate() {
                if !(1..=self.max_len).contains(&len) {
                    return Err(Error::invalid(format!(
                        "{name}[{i}] must hold 1 to {} tokens, got {len}",
                        self.max_len
                    )));
                }
                let row = &tokens[i * self.max_len..i * self.max_len + len];
                if let Some(t) = row.iter().position(|&a| a >= world.vocab_size) {
                    return Err(Error::invalid(format!(
                        "{name}[{i}, {t}] must be one of the world's {} tokens, got {}",
                        world.vocab_size, row[t]
                    )));
                }
            }
        }
        if let Some(i) = self.target.iter().position(|t| !(0.0..=1.0).contains(t)) {
            return Err(Error::invalid(format!(
                "target[{i}] must be a probability in [0, 1], got {}",
                py_float(self.target[i])
            )));
        }
        Ok(())
    }

    /// Soft labels are a cross-entropy target of the sigmoid loss only.
    pub fn check_labels_for(&self, loss_type: LossType) -> Result<()> {
        if loss_type == LossType::Sigmoid {
            return Ok(());
        }
        match self.target.iter().position(|&t| t != 0.0 && t != 1.0) {
            Some(i) => Err(Error::invalid(format!(
                "loss_type '{}' needs hard labels (targets 0 or 1), but target[{i}] is {}: soft labels \
                 are only defined for loss_type 'sigmoid'",
                loss_type.name(),
                py_float(self.target[i])
            ))),
            None => Ok(()),
        }
    }
}

/// Scratch of one prompt's rows: probabilities and log-probabilities `[L, V]`.
#[derive(Clone, Debug)]
pub struct SequenceDpoScratch {
    probs: Vec<f64>,
    logp: Vec<f64>,
}

impl SequenceDpoScratch {
    pub fn new(max_len: usize, vocab_size: usize) -> Result<Self> {
        let cells = max_len * vocab_size; // a world's rows: their product fits
        let mut probs = crate::error::vec_with_capacity(cells, "a prompt's rows")?;
        probs.resize(cells, 0.0);
        let logp = probs.clone();
        Ok(SequenceDpoScratch { probs, logp })
    }
}

/// One DPO step on one prompt's rows `theta [L, V]` from a chosen and a rejected response
/// (their tokens, EOS included, 1 to `L` each, ids below `V`: unchecked), against the
/// reference's log-probabilities `ref_logp [L, V]`; `smoothing` is the pair's label
/// smoothing ([`pair_label`]). Mutates `theta`; returns TRL's record before the step.
#[allow(clippy::too_many_arguments)]
pub fn sequence_dpo_update(
    theta: &mut [f64],
    ref_logp: &[f64],
    vocab: usize,
    chosen: &[usize],
    rejected: &[usize],
    smoothing: f64,
    params: &DpoParams,
    scratch: &mut SequenceDpoScratch,
) -> DpoOutcome {
    let (n_pos, n_neg) = (chosen.len(), rejected.len());
    let reached = n_pos.max(n_neg);
    for t in 0..reached {
        let row = t * vocab..(t + 1) * vocab;
        softmax_and_log_softmax_row(&theta[row.clone()], &mut scratch.probs[row.clone()], &mut scratch.logp[row]);
    }
    let log_ratio = |tokens: &[usize]| {
        let mut total = 0.0;
        for (t, &a) in tokens.iter().enumerate() {
            total += scratch.logp[t * vocab + a] - ref_logp[t * vocab + a];
        }
        total
    };
    let (pos_logratio, neg_logratio) = (log_ratio(chosen), log_ratio(rejected));
    let ipo = params.loss_type == LossType::Ipo;
    let u = if ipo { pos_logratio / n_pos as f64 - neg_logratio / n_neg as f64 } else { pos_logratio - neg_logratio };
    let (loss, step) = DpoParams { label_smoothing: smoothing, ..*params }.loss_and_step(u);
    let (w_pos, w_neg) = if ipo { (1.0 / n_pos as f64, 1.0 / n_neg as f64) } else { (1.0, 1.0) };
    for t in 0..reached {
        let (pos, pos_weight) = if t < n_pos { (chosen[t], w_pos) } else { (usize::MAX, 0.0) };
        let (neg, neg_weight) = if t < n_neg { (rejected[t], w_neg) } else { (usize::MAX, 0.0) };
        let policy_weight = pos_weight - neg_weight;
        let row = &mut theta[t * vocab..(t + 1) * vocab];
        for (v, (x, &p)) in row.iter_mut().zip(&scratch.probs[t * vocab..(t + 1) * vocab]).enumerate() {
            let pos_term = if v == pos { pos_weight } else { 0.0 };
            let neg_term = if v == neg { neg_weight } else { 0.0 };
            *x -= step * (pos_term - neg_term - policy_weight * p);
        }
    }
    let chosen_reward = params.beta * pos_logratio;
    let rejected_reward = params.beta * neg_logratio;
    DpoOutcome {
        loss,
        chosen: chosen_reward,
        rejected: rejected_reward,
        margin: chosen_reward - rejected_reward,
        accuracy: if chosen_reward > rejected_reward { 1.0 } else { 0.0 },
    }
}

/// One run of a sequence DPO sweep: its loss settings, epochs and shuffle stream (`None`: the
/// pairs in order every epoch).
#[derive(Clone, Debug, PartialEq)]
pub struct SequenceDpoRun {
    pub params: DpoParams,
    pub epochs: usize,
    pub shuffle_seed: Option<Vec<u32>>,
}

/// DPO runs in one sequence world over one set of pairs, each from the world's reference,
/// keeping every `record_every`-th step; a run of fewer steps than the longest is NaN past
/// its end.
#[derive(Clone, Debug)]
pub struct SequenceDpoEngine<'a> {
    pub world: TokenWorld<'a>,
    pub pairs: &'a SequencePairRows,
    /// Whether the world's `w` is a reward model whose expected score is recorded.
    pub with_proxy: bool,
    pub record_every: usize,
    max_steps: usize,
}

impl<'a> SequenceDpoEngine<'a> {
    /// Checks the pairs against the world, and every run's epochs and labels.
    pub fn new(
        world: TokenWorld<'a>,
        pairs: &'a SequencePairRows,
        with_proxy: bool,
        record_every: usize,
        runs: &[SequenceDpoRun],
    ) -> Result<Self> {
        pairs.check(&world)?;
        let labels = |r: &SequenceDpoRun| pairs.check_labels_for(r.params.loss_type);
        let max_steps = longest_run_steps(runs, |r| r.epochs, pairs.len(), labels)?;
        Ok(SequenceDpoEngine { world, pairs, with_proxy, record_every, max_steps })
    }
}

impl Engine for SequenceDpoEngine<'_> {
    type Run = SequenceDpoRun;

    fn history_fields(&self) -> &'static [&'static str] {
        if self.with_proxy {
            &SEQUENCE_DPO_HISTORY_FIELDS
        } else {
            &SEQUENCE_DPO_HISTORY_FIELDS_GOLD
        }
    }

    fn summary_fields(&self) -> &'static [&'static str] {
        if self.with_proxy {
            &SEQUENCE_DPO_SUMMARY_FIELDS
        } else {
            &SEQUENCE_DPO_SUMMARY_FIELDS[1..]
        }
    }

    fn kept_steps(&self, _: &[SequenceDpoRun]) -> usize {
        self.max_steps.checked_div(self.record_every).unwrap_or(0)
    }

    fn params_shape(&self) -> Vec<usize> {
        vec![self.world.n_prompts, self.world.max_len, self.world.vocab_size]
    }

    fn run(&self, runs: &[SequenceDpoRun], out: RunsOut<'_>, monitor: &Monitor) -> Result<()> {
        let (run, world, pairs) = (&runs[0], &self.world, self.pairs);
        let params = &run.params;
        let fields = self.history_fields().len();
        let kept = out.history.len() / fields;
        // A run shorter than the longest is NaN past its end.
        out.history.fill(f64::NAN);
        let theta = &mut *out.params;
        theta.copy_from_slice(world.ref_logits);
        let (l, v) = (world.max_len, world.vocab_size);
        let block = l * v;
        let mut scratch = SequenceDpoScratch::new(l, v)?;
        let mut stats = CachedStats::new(world.n_prompts);
        let mut order = EpochOrder::new(pairs.len(), run.shuffle_seed.as_deref());
        let mut keep = Keep::new(self.record_every);
        let mut ticker = Ticker::new(monitor);
        let run_name = format!("sweep run {}", out.first_run);
        let (mut loss_sum, mut accuracy_sum, mut margin_sum) = (0.0, 0.0, 0.0);
        let mut t = 0usize;
        for epoch in 0..run.epochs {
            for &i in order.next_epoch() {
                let i = i as usize;
                let x = pairs.prompts[i];
                let (first, second) = pairs.responses(i);
                let (first_is_chosen, smoothing) = pair_label(pairs.target[i], params.label_smoothing);
                let (chosen, rejected) = if first_is_chosen { (first, second) } else { (second, first) };
                let rows = x * block..(x + 1) * block;
                let outcome = sequence_dpo_update(
                    &mut theta[rows.clone()],
                    &world.ref_logp[rows.clone()],
                    v,
                    chosen,
                    rejected,
                    smoothing,
                    params,
                    &mut scratch,
                );
                stats.changed(x);
                let diverged = |key: &str| {
                    record_overflowed(&format!("{run_name} diverged at step {t}"), key, params.lr, params.beta)
                };
                if overflowed(&theta[rows]) {
                    return Err(diverged("logits"));
                }
                if let Some(key) = outcome.nonfinite_key() {
                    return Err(diverged(key));
                }
                if epoch == run.epochs - 1 {
                    loss_sum += outcome.loss;
                    accuracy_sum += outcome.accuracy;
                    margin_sum += outcome.margin;
                }
                let mut recomputed = 0;
                if let Some(slot) = keep.slot() {
                    let (means, n) = stats.means(world, theta);
                    recomputed = n;
                    let record = [
                        x as f64,
                        outcome.loss,
                        outcome.chosen,
                        outcome.rejected,
                        outcome.margin,
                        outcome.accuracy,
                        means.proxy_score,
                        means.gold_score,
                        means.kl,
                        means.length,
                    ];
                    if let Some(f) = record.iter().position(|r| !r.is_finite()) {
                        return Err(diverged(SEQUENCE_DPO_HISTORY_FIELDS[f]));
                    }
                    let kept_fields = record.iter().enumerate().filter(|&(f, _)| self.with_proxy || f != PROXY_FIELD);
                    for (f, (_, &value)) in kept_fields.enumerate() {
                        out.history[f * kept + slot] = value;
                    }
                }
                t += 1;
                let reached = chosen.len().max(rejected.len());
                ticker.advance(1, (2 * reached * v + recomputed * block) as u64)?;
            }
        }
        ticker.flush()?;
        let (means, _) = stats.means(world, theta);
        let n = pairs.len() as f64;
        let summary = [
            means.proxy_score,
            means.gold_score,
            means.kl,
            means.length,
            loss_sum / n,
            accuracy_sum / n,
            margin_sum / n,
        ];
        let summary = if self.with_proxy { &summary[..] } else { &summary[1..] };
        check_summary(&run_name, self.summary_fields(), summary, params.lr, params.beta)?;
        out.summary.copy_from_slice(summary);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::driver::sweep;
    use crate::kernels::softmax::log_softmax_row;

    fn loss_at(theta: &[f64], ref_logp: &[f64], v: usize, chosen: &[usize], rejected: &[usize], p: &DpoParams) -> f64 {
        let ratio = |tokens: &[usize]| {
            let mut total = 0.0;
            let mut logp = vec![0.0; v];
            for (t, &a) in tokens.iter().enumerate() {
                log_softmax_row(&theta[t * v..(t + 1) * v], &mut logp);
                total += logp[a] - ref_logp[t * v + a];
            }
            total
        };
        let (pos, neg) = (ratio(chosen), ratio(rejected));
        let u = if p.loss_type == LossType::Ipo {
            pos / chosen.len() as f64 - neg / rejected.len() as f64
        } else {
            pos - neg
        };
        p.loss_and_step(u).0
    }

    #[test]
    fn the_step_is_lr_times_the_gradient_of_the_loss() {
        let (l, v) = (4, 3);
        let theta: Vec<f64> = (0..l * v).map(|i| ((i * 7 % 5) as f64 - 2.0) / 3.0).collect();
        let mut ref_logp = vec![0.0; l * v];
        let reference: Vec<f64> = (0..l * v).map(|i| ((i * 3 % 4) as f64 - 1.5) / 2.0).collect();
        for t in 0..l {
            log_softmax_row(&reference[t * v..(t + 1) * v], &mut ref_logp[t * v..(t + 1) * v]);
        }
        let (chosen, rejected) = ([2, 1, 1, 0], [1, 0]);
        for loss_type in LossType::ALL {
            let lr = 1e-3;
            let params = DpoParams::new(0.7, lr, loss_type, 0.0).unwrap();
            let mut stepped = theta.clone();
            let mut scratch = SequenceDpoScratch::new(l, v).unwrap();
            sequence_dpo_update(&mut stepped, &ref_logp, v, &chosen, &rejected, 0.0, &params, &mut scratch);
            for k in 0..l * v {
                let h = 1e-6;
                let (mut up, mut down) = (theta.clone(), theta.clone());
                up[k] += h;
                down[k] -= h;
                let fd = (loss_at(&up, &ref_logp, v, &chosen, &rejected, &params)
                    - loss_at(&down, &ref_logp, v, &chosen, &rejected, &params))
                    / (2.0 * h);
                let grad = (theta[k] - stepped[k]) / lr;
                assert!((grad - fd).abs() < 1e-6, "{loss_type:?} {k}: {grad} vs {fd}");
            }
        }
    }

    #[test]
    fn a_sweep_is_the_same_whatever_the_threads() {
        let (p, l, v) = (2, 3, 4);
        let ref_logits: Vec<f64> = (0..p * l * v).map(|i| ((i * 5 % 7) as f64 - 3.0) / 4.0).collect();
        let w = [0.0, 0.5, -0.2, 0.3];
        let zeros = [0.0; 2];
        let world = TokenWorld::new(&ref_logits, [p, l, v], &w, &zeros, 0.1, &w, &zeros, true).unwrap();
        let pairs = SequencePairRows {
            prompts: vec![0, 1, 1],
            first: vec![1, 2, 0, 3, 0, 9, 2, 2, 2],
            first_len: vec![3, 2, 3],
            second: vec![0, 9, 9, 1, 1, 0, 1, 0, 9],
            second_len: vec![1, 3, 2],
            target: vec![1.0, 0.0, 0.7],
            max_len: l,
        };
        let runs: Vec<SequenceDpoRun> = [(0.5, None), (0.1, Some(vec![3u32]))]
            .into_iter()
            .map(|(beta, seed)| SequenceDpoRun {
                params: DpoParams::new(beta, 0.3, LossType::Sigmoid, 0.1).unwrap(),
                epochs: 3,
                shuffle_seed: seed,
            })
            .collect();
        let engine = SequenceDpoEngine::new(world, &pairs, true, 2, &runs).unwrap();
        let out = sweep(&engine, &runs, u64::MAX, &Monitor::default()).unwrap();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        assert_eq!(pool.install(|| sweep(&engine, &runs, u64::MAX, &Monitor::default())).unwrap(), out);
        let hinge =
            [SequenceDpoRun { params: DpoParams::new(0.5, 0.3, LossType::Hinge, 0.0).unwrap(), ..runs[0].clone() }];
        let world = engine.world.clone();
        let err = SequenceDpoEngine::new(world, &pairs, true, 2, &hinge).unwrap_err().to_string();
        assert!(err.starts_with("loss_type 'hinge' needs hard labels"), "{err}");
    }
}
