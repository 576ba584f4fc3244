//! DPO in a world: the policy is one row of logits per prompt, starting at the world's
//! reference (which stays frozen), and learns from the world's labelled pairs of responses,
//! bags of `L` i.i.d. tokens. The single-run loop [`train_world_dpo`] and the sweep engine
//! [`WorldDpoEngine`]; one step is [`bag_dpo_update`].
//!
//! The loop is the lesson's DPO ([`super::dpo`]): `epochs` passes over the pairs, in order or
//! reshuffled every epoch on the run's CPython-compatible stream, one SGD step a pair. A pair
//! carries the probability that its first response is preferred ([`pair_label`] turns it into
//! the chosen response and the pair's label smoothing). What a run records besides the step's
//! own record (TRL's `rewards/*`) is exact ([`crate::methods::world_stats`]): the means over
//! prompts of the gold, of the response's KL `L KL(pi || pi_ref)` and, with a reward model,
//! of its score. A step changes one prompt's row, so only the rows changed since the last
//! record are recomputed.

use super::dpo::{longest_run_steps, EpochOrder};
use super::driver::{check_summary, Engine, Keep, Monitor, RunsOut, Ticker};
use crate::error::{
    default_max_memory, fits_in_memory, overflowed, py_float, record_overflowed, reserve, Error, Result,
};
use crate::methods::dpo::{bag_dpo_update, pair_label, BagDpoScratch, DpoOutcome, DpoParams, LossType};
use crate::methods::world_stats::{check_theta, ExactMeans, WorldStats, WorldTables};

/// The per-step series of a world DPO sweep with a reward model: the lesson's DPO record
/// (TRL's names, '/' as '_'; the pair's prompt as `prompt_index`, since a world's prompts
/// are not the lesson's) and the exact means over prompts under the policy after the step.
pub const WORLD_DPO_HISTORY_FIELDS: [&str; 9] = [
    "prompt_index",
    "loss",
    "rewards_chosen",
    "rewards_rejected",
    "rewards_margins",
    "rewards_accuracies",
    "proxy_score",
    "gold_score",
    "mean_kl",
];
/// [`WORLD_DPO_HISTORY_FIELDS`] without a reward model: no proxy score.
pub const WORLD_DPO_HISTORY_FIELDS_GOLD: [&str; 8] = [
    "prompt_index",
    "loss",
    "rewards_chosen",
    "rewards_rejected",
    "rewards_margins",
    "rewards_accuracies",
    "gold_score",
    "mean_kl",
];
/// Per-run results of a world DPO sweep: the final policy's exact means, then the means over
/// the last epoch; without a reward model there is no `final_proxy_score` (the rest, in order).
pub const WORLD_DPO_SUMMARY_FIELDS: [&str; 6] = [
    "final_proxy_score",
    "final_gold_score",
    "final_kl",
    "last_epoch_loss",
    "last_epoch_accuracy",
    "last_epoch_margin",
];

/// A world's labelled pairs: for pair `i`, its prompt `prompts[i]`, the tokens of its two
/// responses `first[i L..(i + 1) L]` and `second[...]`, and `target[i]`, the probability that
/// the first is preferred (0 or 1 for a hard label).
#[derive(Clone, Debug, PartialEq)]
pub struct WorldPairs {
    pub prompts: Vec<u32>,
    pub first: Vec<u32>,
    pub second: Vec<u32>,
    pub target: Vec<f64>,
    pub response_len: usize,
}

impl WorldPairs {
    pub fn len(&self) -> usize {
        self.prompts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }

    /// The first and second responses of pair `i`.
    #[inline]
    fn responses(&self, i: usize) -> (&[u32], &[u32]) {
        let span = i * self.response_len..(i + 1) * self.response_len;
        (&self.first[span.clone()], &self.second[span])
    }

    /// The pairs fit `world` (its response length, prompts and tokens), hold at least one and
    /// fewer than 2^32 pairs, and every target is a probability; each error names the field
    /// as the bindings' arguments (`prompts[3]`, `target[0]`).
    pub fn check(&self, world: &WorldTables<'_>) -> Result<()> {
        let n = self.len();
        if n == 0 {
            return Err(Error::invalid("pairs must not be empty"));
        }
        if n > u32::MAX as usize {
            return Err(Error::invalid(format!("pairs must hold fewer than 2**32 pairs, got {n}")));
        }
        if self.response_len != world.response_len {
            return Err(Error::invalid(format!(
                "first must hold responses of the world's {} tokens, got {}",
                world.response_len, self.response_len
            )));
        }
        let tokens = n * self.response_len;
        if self.first.len() != tokens || self.second.len() != tokens || self.target.len() != n {
            return Err(Error::invalid("pairs are malformed: first, second and target must have one row per prompt"));
        }
        if let Some(i) = self.prompts.iter().position(|&x| x as usize >= world.n_prompts) {
            return Err(Error::invalid(format!(
                "prompts[{i}] must be one of the world's {} prompts, got {}",
                world.n_prompts, self.prompts[i]
            )));
        }
        for (name, responses) in [("first", &self.first), ("second", &self.second)] {
            if let Some(k) = responses.iter().position(|&a| a as usize >= world.vocab_size) {
                return Err(Error::invalid(format!(
                    "{name}[{}, {}] must be one of the world's {} tokens, got {}",
                    k / self.response_len,
                    k % self.response_len,
                    world.vocab_size,
                    responses[k]
                )));
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

    /// Soft labels (a target strictly between 0 and 1) are a cross-entropy target of the
    /// sigmoid loss only: refused for any other `loss_type`, naming the first soft target.
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

/// What one step of a world DPO run saw and left: the pair, its prompt, the step's record
/// (before the update) and the exact means after it (when they were asked for).
#[derive(Clone, Copy, Debug, PartialEq)]
struct WorldDpoStep {
    epoch: usize,
    pair: u32,
    prompt: u32,
    outcome: DpoOutcome,
}

/// `epochs` passes of [`bag_dpo_update`] over `pairs` in `world`, in the order of
/// [`EpochOrder`], updating the `[n_prompts, vocab]` table `theta`. After each step
/// `on_step(step, means)` sees what it saw, with `means` a closure giving the exact means
/// after it. A step whose logits overflow, or whose record or means hold a float that is not
/// finite (the first in the history's order is named), stops the loop with an error that
/// `run_name` (`train_world_dpo`, `sweep run 3`) begins.
#[allow(clippy::too_many_arguments)]
fn world_dpo_epochs(
    world: &WorldTables<'_>,
    theta: &mut [f64],
    pairs: &WorldPairs,
    epochs: usize,
    params: &DpoParams,
    shuffle_seed: Option<&[u32]>,
    mut on_step: impl FnMut(&WorldDpoStep, &mut dyn FnMut() -> Result<WorldStats>) -> Result<()>,
    run_name: &str,
    monitor: &Monitor,
) -> Result<()> {
    let v = world.vocab_size;
    let mut order = EpochOrder::new(pairs.len(), shuffle_seed);
    let mut scratch = BagDpoScratch::new(v)?;
    let mut exact = ExactMeans::new(world)?;
    let mut ticker = Ticker::new(monitor);
    let mut t = 0usize;
    for epoch in 0..epochs {
        for &i in order.next_epoch() {
            let x = pairs.prompts[i as usize] as usize;
            let (first, second) = pairs.responses(i as usize);
            let (first_is_chosen, smoothing) = pair_label(pairs.target[i as usize], params.label_smoothing);
            let (chosen, rejected) = if first_is_chosen { (first, second) } else { (second, first) };
            let row = x * v..(x + 1) * v;
            let outcome = bag_dpo_update(
                &mut theta[row.clone()],
                &world.ref_log_probs[row.clone()],
                chosen,
                rejected,
                smoothing,
                params,
                &mut scratch,
            );
            exact.changed(x);
            let diverged =
                |key: &str| record_overflowed(&format!("{run_name} diverged at step {t}"), key, params.lr, params.beta);
            if overflowed(&theta[row]) {
                return Err(diverged("logits"));
            }
            if let Some(key) = outcome.nonfinite_key() {
                return Err(diverged(key));
            }
            let mut recomputed = 0u64;
            let mut means = || {
                let means = exact.means(world, theta);
                recomputed += v as u64;
                match means.nonfinite_key() {
                    Some(key) => Err(diverged(key)),
                    None => Ok(means),
                }
            };
            on_step(&WorldDpoStep { epoch, pair: i, prompt: x as u32, outcome }, &mut means)?;
            t += 1;
            // The step's log-softmax and update, each response once, and a row of statistics.
            ticker.advance(1, (v + 2 * pairs.response_len) as u64 + recomputed)?;
        }
    }
    ticker.flush()
}

/// Per-step record of a DPO run in a world: the pair visited and its prompt, the step's record
/// (TRL's `loss`, `rewards/chosen`, `rewards/rejected`, `rewards/margins`,
/// `rewards/accuracies`, before the step) and the exact means over prompts after it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorldDpoHistory {
    pub pair: Vec<u32>,
    pub prompt: Vec<u32>,
    pub loss: Vec<f64>,
    pub chosen: Vec<f64>,
    pub rejected: Vec<f64>,
    pub margin: Vec<f64>,
    pub accuracy: Vec<f64>,
    pub proxy_score: Vec<f64>,
    pub gold_score: Vec<f64>,
    pub mean_kl: Vec<f64>,
}

/// Bytes a step of [`train_world_dpo`] counts against `max_memory`: ten series of 8 bytes
/// (the reference counts the same).
pub const WORLD_DPO_BYTES_PER_STEP: u64 = 10 * 8;

impl WorldDpoHistory {
    /// Room for `steps` more steps in every series, or [`Error::OutOfMemory`].
    fn reserve(&mut self, steps: usize) -> Result<()> {
        let what = "the history of train_world_dpo";
        reserve(&mut self.pair, steps, what)?;
        reserve(&mut self.prompt, steps, what)?;
        for series in [
            &mut self.loss,
            &mut self.chosen,
            &mut self.rejected,
            &mut self.margin,
            &mut self.accuracy,
            &mut self.proxy_score,
            &mut self.gold_score,
            &mut self.mean_kl,
        ] {
            reserve(series, steps, what)?;
        }
        Ok(())
    }
}

/// `epochs` passes of the bag DPO step over `pairs` in `world` (in order, or reshuffled every
/// epoch with `shuffle_seed`, the `init_by_array` key of `random.Random(seed)`), updating
/// `theta` (a world's runs start at a copy of its `ref_logits`) against the world's frozen
/// reference, appending each step's record to `history`. The proxy score is the world's
/// `weights`' (zeros record zeros).
///
/// A run whose logits overflow, or whose record (the step's, then the exact means) holds a
/// float that is not finite, stops with an error naming the step, `history` as it stood
/// before the failing step and `theta` as that step left it. `epochs` is checked against
/// half the machine's memory before anything is allocated; `monitor` is ticked as the run
/// goes and stops it when cancelled.
#[allow(clippy::too_many_arguments)]
pub fn train_world_dpo(
    world: &WorldTables<'_>,
    theta: &mut [f64],
    pairs: &WorldPairs,
    epochs: usize,
    params: &DpoParams,
    shuffle_seed: Option<&[u32]>,
    history: &mut WorldDpoHistory,
    monitor: &Monitor,
) -> Result<()> {
    check_theta(world, theta)?;
    pairs.check(world)?;
    pairs.check_labels_for(params.loss_type)?;
    if epochs == 0 {
        return Err(Error::invalid("epochs must be >= 1, got 0"));
    }
    // The pairs are in memory, so their count times 80 cannot saturate.
    let bytes_per_epoch = (pairs.len() as u64).saturating_mul(WORLD_DPO_BYTES_PER_STEP);
    fits_in_memory("epochs", epochs as u64, bytes_per_epoch, default_max_memory())?;
    // Fits: the memory check counted 80 bytes a step.
    history.reserve(epochs * pairs.len())?;
    let record = |step: &WorldDpoStep, means: &mut dyn FnMut() -> Result<WorldStats>| {
        let means = means()?;
        let out = &step.outcome;
        history.pair.push(step.pair);
        history.prompt.push(step.prompt);
        history.loss.push(out.loss);
        history.chosen.push(out.chosen);
        history.rejected.push(out.rejected);
        history.margin.push(out.margin);
        history.accuracy.push(out.accuracy);
        history.proxy_score.push(means.proxy_score);
        history.gold_score.push(means.gold_score);
        history.mean_kl.push(means.kl);
        Ok(())
    };
    world_dpo_epochs(world, theta, pairs, epochs, params, shuffle_seed, record, "train_world_dpo", monitor)
}

/// One run of a world DPO sweep: its loss settings, its number of epochs and its shuffle
/// stream (`None`: the pairs in order every epoch).
#[derive(Clone, Debug, PartialEq)]
pub struct WorldDpoRun {
    pub params: DpoParams,
    pub epochs: usize,
    pub shuffle_seed: Option<Vec<u32>>,
}

/// DPO runs in one world over one set of pairs: each is [`train_world_dpo`] from the world's
/// reference, keeping every `record_every`-th step. A run of fewer steps than the longest is
/// padded with NaN.
#[derive(Clone, Debug)]
pub struct WorldDpoEngine<'a> {
    pub world: WorldTables<'a>,
    pub pairs: &'a WorldPairs,
    /// Whether the world's `weights` are a reward model whose score is recorded.
    pub with_proxy: bool,
    /// Keep steps `k-1, 2k-1, ...` of each history; 0 keeps none (summaries only).
    pub record_every: usize,
    /// Steps of the longest run.
    max_steps: usize,
}

impl<'a> WorldDpoEngine<'a> {
    /// Checks the pairs against the world, and every run's epochs and labels.
    pub fn new(
        world: WorldTables<'a>,
        pairs: &'a WorldPairs,
        with_proxy: bool,
        record_every: usize,
        runs: &[WorldDpoRun],
    ) -> Result<Self> {
        pairs.check(&world)?;
        let labels = |r: &WorldDpoRun| pairs.check_labels_for(r.params.loss_type);
        let max_steps = longest_run_steps(runs, |r| r.epochs, pairs.len(), labels)?;
        Ok(WorldDpoEngine { world, pairs, with_proxy, record_every, max_steps })
    }
}

impl Engine for WorldDpoEngine<'_> {
    type Run = WorldDpoRun;

    fn history_fields(&self) -> &'static [&'static str] {
        if self.with_proxy {
            &WORLD_DPO_HISTORY_FIELDS
        } else {
            &WORLD_DPO_HISTORY_FIELDS_GOLD
        }
    }

    fn summary_fields(&self) -> &'static [&'static str] {
        if self.with_proxy {
            &WORLD_DPO_SUMMARY_FIELDS
        } else {
            &WORLD_DPO_SUMMARY_FIELDS[1..]
        }
    }

    fn kept_steps(&self, _: &[WorldDpoRun]) -> usize {
        self.max_steps.checked_div(self.record_every).unwrap_or(0)
    }

    fn params_shape(&self) -> Vec<usize> {
        vec![self.world.n_prompts, self.world.vocab_size]
    }

    fn run(&self, runs: &[WorldDpoRun], out: RunsOut<'_>, monitor: &Monitor) -> Result<()> {
        let run = &runs[0];
        let fields = self.history_fields().len();
        let history = &mut *out.history;
        let kept = history.len() / fields;
        let theta = &mut *out.params;
        theta.copy_from_slice(self.world.ref_logits);
        let (mut loss_sum, mut accuracy_sum, mut margin_sum) = (0.0, 0.0, 0.0);
        let mut keep = Keep::new(self.record_every);
        let last_epoch = run.epochs - 1;
        let with_proxy = self.with_proxy;
        let on_step = |step: &WorldDpoStep, means: &mut dyn FnMut() -> Result<WorldStats>| {
            let out = &step.outcome;
            if step.epoch == last_epoch {
                loss_sum += out.loss;
                accuracy_sum += out.accuracy;
                margin_sum += out.margin;
            }
            if let Some(slot) = keep.slot() {
                let means = means()?;
                let record = [f64::from(step.prompt), out.loss, out.chosen, out.rejected, out.margin, out.accuracy];
                let exact = [means.proxy_score, means.gold_score, means.kl];
                let exact = if with_proxy { &exact[..] } else { &exact[1..] };
                for (f, value) in record.into_iter().chain(exact.iter().copied()).enumerate() {
                    history[f * kept + slot] = value;
                }
            }
            Ok(())
        };
        let run_name = format!("sweep run {}", out.first_run);
        world_dpo_epochs(
            &self.world,
            theta,
            self.pairs,
            run.epochs,
            &run.params,
            run.shuffle_seed.as_deref(),
            on_step,
            &run_name,
            monitor,
        )?;
        // A run shorter than the longest: NaN past its end.
        let recorded = keep.recorded();
        for f in 0..fields {
            history[f * kept + recorded..(f + 1) * kept].fill(f64::NAN);
        }
        let last = ExactMeans::new(&self.world)?.means(&self.world, theta);
        let n = self.pairs.len() as f64;
        let all = [last.proxy_score, last.gold_score, last.kl, loss_sum / n, accuracy_sum / n, margin_sum / n];
        out.summary.copy_from_slice(if with_proxy { &all[..] } else { &all[1..] });
        check_summary(&run_name, self.summary_fields(), out.summary, run.params.lr, run.params.beta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::driver::sweep;
    use crate::engines::test_worlds::Tables;
    use crate::rng::{seed_key, Mt19937};

    /// `n` pairs of random responses, labelled by the gold's sign (hard) or softly.
    fn pairs(world: &WorldTables<'_>, n: usize, soft: bool, seed: i128) -> WorldPairs {
        let mut rng = Mt19937::from_key(&seed_key(seed));
        let (v, length) = (world.vocab_size as u32, world.response_len);
        let mut out =
            WorldPairs { prompts: vec![], first: vec![], second: vec![], target: vec![], response_len: length };
        for _ in 0..n {
            let x = rng.randbelow(world.n_prompts as u32);
            let mut gold = [0.0, 0.0];
            for (k, response) in [&mut out.first, &mut out.second].into_iter().enumerate() {
                for _ in 0..length {
                    let a = rng.randbelow(v);
                    gold[k] += world.gold_token[x as usize * v as usize + a as usize];
                    response.push(a);
                }
            }
            out.prompts.push(x);
            let p = 1.0 / (1.0 + (gold[1] - gold[0]).exp());
            out.target.push(if soft {
                p
            } else if rng.random() < p {
                1.0
            } else {
                0.0
            });
        }
        out
    }

    fn params(loss_type: LossType, beta: f64, lr: f64, ls: f64) -> DpoParams {
        DpoParams::new(beta, lr, loss_type, ls).unwrap()
    }

    fn train(
        world: &WorldTables<'_>,
        pairs: &WorldPairs,
        epochs: usize,
        p: &DpoParams,
        seed: Option<i128>,
    ) -> (Vec<f64>, WorldDpoHistory) {
        let mut theta = world.ref_logits.to_vec();
        let mut history = WorldDpoHistory::default();
        let key = seed.map(seed_key);
        train_world_dpo(world, &mut theta, pairs, epochs, p, key.as_deref(), &mut history, &Monitor::default())
            .unwrap();
        (theta, history)
    }

    #[test]
    fn a_run_is_the_bag_step_over_the_shuffled_pairs_and_records_the_exact_means() {
        let tables = Tables::random(3, 12, 4);
        let world = tables.world(true, 5).unwrap();
        let pairs = pairs(&world, 40, true, 1);
        let p = params(LossType::Sigmoid, 0.3, 0.2, 0.1);
        let (theta, history) = train(&world, &pairs, 3, &p, Some(7));
        let mut order = EpochOrder::new(40, Some(&seed_key(7)));
        let mut manual = world.ref_logits.to_vec();
        let mut scratch = BagDpoScratch::new(12).unwrap();
        let mut t = 0;
        for _ in 0..3 {
            for &i in order.next_epoch() {
                assert_eq!(history.pair[t], i);
                let x = pairs.prompts[i as usize] as usize;
                let (first, second) = pairs.responses(i as usize);
                let (first_is_chosen, smoothing) = pair_label(pairs.target[i as usize], 0.1);
                let (c, r) = if first_is_chosen { (first, second) } else { (second, first) };
                let out = bag_dpo_update(
                    &mut manual[x * 12..(x + 1) * 12],
                    &world.ref_log_probs[x * 12..(x + 1) * 12],
                    c,
                    r,
                    smoothing,
                    &p,
                    &mut scratch,
                );
                assert_eq!((history.prompt[t], history.loss[t], history.margin[t]), (x as u32, out.loss, out.margin));
                let mut exact = ExactMeans::new(&world).unwrap();
                let means = exact.means(&world, &manual);
                assert_eq!(
                    (history.proxy_score[t], history.gold_score[t], history.mean_kl[t]),
                    (means.proxy_score, means.gold_score, means.kl)
                );
                t += 1;
            }
        }
        assert_eq!(manual, theta);
        assert!(history.mean_kl.iter().all(|&kl| kl > 0.0));
    }

    #[test]
    fn dpo_on_labelled_pairs_raises_the_gold() {
        let tables = Tables::random(2, 16, 9);
        let world = tables.world(false, 4).unwrap();
        let pairs = pairs(&world, 300, false, 2);
        let (_, history) = train(&world, &pairs, 2, &params(LossType::Sigmoid, 0.5, 0.1, 0.0), Some(1));
        let start = ExactMeans::new(&world).unwrap().means(&world, world.ref_logits);
        assert!(
            history.gold_score[599] > start.gold_score + 0.5,
            "{} vs {}",
            history.gold_score[599],
            start.gold_score
        );
        let late: f64 = history.accuracy[300..].iter().sum::<f64>() / 300.0;
        assert!(late > 0.6, "{late}");
    }

    const RUN_SEEDS: [Option<i128>; 3] = [None, Some(3), Some(1 << 40)];

    fn runs() -> Vec<WorldDpoRun> {
        let mut runs = Vec::new();
        for (k, loss_type) in LossType::ALL.into_iter().enumerate() {
            let ls = if matches!(loss_type, LossType::Sigmoid | LossType::Robust) { 0.1 } else { 0.0 };
            for seed in RUN_SEEDS {
                runs.push(WorldDpoRun {
                    params: params(loss_type, [0.1, 0.5][k % 2], 0.05, ls),
                    epochs: 1 + k % 3,
                    shuffle_seed: seed.map(seed_key),
                });
            }
        }
        runs
    }

    #[test]
    fn a_sweep_keeps_every_kth_step_of_the_single_runs_whatever_the_threads() {
        let tables = Tables::random(3, 10, 5);
        let world = tables.world(true, 3).unwrap();
        let pairs = pairs(&world, 20, false, 3);
        let runs = runs();
        let engine = WorldDpoEngine::new(world.clone(), &pairs, true, 3, &runs).unwrap();
        let out = sweep(&engine, &runs, u64::MAX, &Monitor::default()).unwrap();
        assert_eq!((out.n_kept, out.params_shape.clone()), (20, vec![3, 10]));
        for (r, run) in runs.iter().enumerate() {
            let seed = RUN_SEEDS[r % 3];
            let (theta, h) = train(&world, &pairs, run.epochs, &run.params, seed);
            let steps = h.loss.len();
            let prompts: Vec<f64> = h.prompt.iter().map(|&x| f64::from(x)).collect();
            let series = [
                &prompts,
                &h.loss,
                &h.chosen,
                &h.rejected,
                &h.margin,
                &h.accuracy,
                &h.proxy_score,
                &h.gold_score,
                &h.mean_kl,
            ];
            for (f, values) in series.iter().enumerate() {
                let kept: Vec<f64> = values.iter().skip(2).step_by(3).copied().collect();
                let got = out.kept(r, f);
                assert_eq!(&got[..kept.len()], &kept[..], "run {r} {}", WORLD_DPO_HISTORY_FIELDS[f]);
                assert!(got[kept.len()..].iter().all(|v| v.is_nan()));
            }
            assert_eq!(out.final_params[r * 30..(r + 1) * 30], theta[..], "run {r}");
            let last = steps - 20..steps;
            let summary = &out.summary[r * 6..(r + 1) * 6];
            assert_eq!(summary[..3], [h.proxy_score[steps - 1], h.gold_score[steps - 1], h.mean_kl[steps - 1]]);
            assert!((summary[3] - h.loss[last.clone()].iter().sum::<f64>() / 20.0).abs() < 1e-12);
            assert!((summary[4] - h.accuracy[last].iter().sum::<f64>() / 20.0).abs() < 1e-12);
        }
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let again = pool.install(|| sweep(&engine, &runs, u64::MAX, &Monitor::default())).unwrap();
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&again.history), bits(&out.history), "{threads} threads");
            assert_eq!((again.final_params, again.summary), (out.final_params.clone(), out.summary.clone()));
        }
        // Without a reward model: no proxy score, the same everything else.
        let gold_only = WorldDpoEngine::new(world.clone(), &pairs, false, 3, &runs).unwrap();
        let none = sweep(&gold_only, &runs, u64::MAX, &Monitor::default()).unwrap();
        assert_eq!(
            (none.history_fields, none.summary_fields),
            (&WORLD_DPO_HISTORY_FIELDS_GOLD[..], &WORLD_DPO_SUMMARY_FIELDS[1..])
        );
        for r in 0..runs.len() {
            assert_eq!(none.summary[r * 5..(r + 1) * 5], out.summary[r * 6 + 1..(r + 1) * 6]);
            for f in 0..8 {
                let with = if f < 6 { f } else { f + 1 };
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(none.kept(r, f)), bits(out.kept(r, with)));
            }
        }
    }

    #[test]
    fn bad_pairs_and_labels_are_refused_naming_them() {
        let tables = Tables::random(2, 6, 1);
        let world = tables.world(true, 3).unwrap();
        let good = pairs(&world, 5, true, 1);
        let check = |edit: &dyn Fn(&mut WorldPairs)| {
            let mut bad = good.clone();
            edit(&mut bad);
            bad.check(&world).unwrap_err().to_string()
        };
        assert_eq!(check(&|p| p.prompts[2] = 2), "prompts[2] must be one of the world's 2 prompts, got 2");
        assert_eq!(check(&|p| p.second[4] = 6), "second[1, 1] must be one of the world's 6 tokens, got 6");
        assert_eq!(check(&|p| p.target[3] = 1.5), "target[3] must be a probability in [0, 1], got 1.5");
        assert_eq!(check(&|p| p.target[0] = f64::NAN), "target[0] must be a probability in [0, 1], got nan");
        assert_eq!(check(&|p| p.response_len = 2), "first must hold responses of the world's 3 tokens, got 2");
        assert_eq!(
            check(&|p| *p =
                WorldPairs { prompts: vec![], first: vec![], second: vec![], target: vec![], response_len: 3 }),
            "pairs must not be empty"
        );
        let err = good.check_labels_for(LossType::Ipo).unwrap_err().to_string();
        assert!(err.starts_with("loss_type 'ipo' needs hard labels (targets 0 or 1), but target[0] is 0."), "{err}");
        let hard = pairs(&world, 5, false, 1);
        for loss_type in LossType::ALL {
            hard.check_labels_for(loss_type).unwrap();
        }
        let ipo = WorldDpoRun { params: params(LossType::Ipo, 0.1, 0.1, 0.0), epochs: 1, shuffle_seed: None };
        assert!(WorldDpoEngine::new(world.clone(), &good, true, 1, std::slice::from_ref(&ipo)).is_err());
        let zero = WorldDpoRun { epochs: 0, ..ipo };
        assert_eq!(
            WorldDpoEngine::new(world.clone(), &hard, true, 1, &[zero]).unwrap_err().to_string(),
            "epochs must be >= 1, got 0"
        );
        let mut history = WorldDpoHistory::default();
        let p = params(LossType::Sigmoid, 0.1, 0.1, 0.0);
        let err = train_world_dpo(&world, &mut [0.0; 5], &hard, 1, &p, None, &mut history, &Monitor::default());
        assert!(err.unwrap_err().to_string().starts_with("theta must have the shape of ref_logits"));
    }

    #[test]
    fn divergence_names_the_run_and_the_step_and_cancelling_stops() {
        let tables = Tables::random(2, 8, 2);
        let world = tables.world(false, 3).unwrap();
        let hard = pairs(&world, 30, false, 4);
        let mut runs = runs();
        runs[4].params = params(LossType::Ipo, 1e-3, 1e6, 0.0);
        runs[4].epochs = 50;
        let engine = WorldDpoEngine::new(world.clone(), &hard, true, 1, &runs).unwrap();
        let err = sweep(&engine, &runs, u64::MAX, &Monitor::default()).unwrap_err().to_string();
        assert!(err.starts_with("sweep run 4 diverged at step "), "{err}");
        assert!(err.ends_with(": logits overflowed (lr=1000000.0, beta=0.001)"), "{err}");
        let monitor = Monitor::default();
        let fine = &runs[..3];
        sweep(&WorldDpoEngine::new(world.clone(), &hard, true, 0, fine).unwrap(), fine, u64::MAX, &monitor).unwrap();
        assert_eq!(monitor.steps_done.load(std::sync::atomic::Ordering::Relaxed), 90);
        let cancelled = Monitor::default();
        cancelled.cancel();
        assert_eq!(sweep(&engine, &runs, u64::MAX, &cancelled), Err(Error::Cancelled));
    }
}
