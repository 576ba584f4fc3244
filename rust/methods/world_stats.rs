//! A world's tables and the exact statistics every world engine records of a policy in it.
//!
//! A world's responses are bags of `L` tokens drawn i.i.d. from the policy's row for the
//! prompt, so what a run records of its policy is exact, never sampled: per prompt, the
//! proxy score `L sum_a pi(a) w(a)`, the gold (`sum_a g(a) (1 - (1 - pi(a))^L)` when a
//! repeated token counts once, `L sum_a pi(a) g(a)` when every copy counts) and the
//! response's KL `L KL(pi || pi_ref)`; [`ExactMeans`] keeps their means over prompts,
//! recomputing only the rows a step changed. Shared by the world engines (PPO, DPO), so
//! that they record the same numbers; built on the kernels only.

use crate::error::{finite_slice, py_float, vec_with_capacity, Error, Result};
use crate::kernels::policy_row::{log_normaliser_on, stats_row_on};
use crate::kernels::simd::Simd;
use crate::kernels::softmax::log_softmax_row;

/// Most prompts a world has (its tables are `[prompts, vocab]`).
pub const MAX_PROMPTS: usize = 1 << 16;
/// Most tokens a world's vocabulary has.
pub const MAX_VOCAB: usize = 1 << 20;
/// Most tokens a response has.
pub const MAX_RESPONSE_LEN: i64 = 1 << 12;

/// A `[rows, cols]` table of floats, row-major.
#[derive(Clone, Copy, Debug)]
pub struct Table<'a> {
    pub values: &'a [f64],
    pub rows: usize,
    pub cols: usize,
}

/// `table` holds `rows x cols` values, every one finite: `name[row, col]` in the message.
fn finite_table(name: &str, table: Table<'_>) -> Result<()> {
    if table.rows.checked_mul(table.cols) != Some(table.values.len()) {
        return Err(Error::invalid(format!(
            "{name} holds {} values, not {} x {}",
            table.values.len(),
            table.rows,
            table.cols
        )));
    }
    match table.values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(Error::invalid(format!(
            "{name}[{}, {}] must be finite, got {}",
            i / table.cols,
            i % table.cols,
            py_float(table.values[i])
        ))),
        None => Ok(()),
    }
}

/// The exact means over prompts a world run records, or one prompt's share of them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WorldStats {
    /// The reward model's expected score of a response: `L sum_a pi(a) w(a)`.
    pub proxy_score: f64,
    /// The gold's expectation over responses.
    pub gold_score: f64,
    /// The response's KL to the reference, `L KL(pi || pi_ref)` (log space).
    pub kl: f64,
}

impl WorldStats {
    /// The first that is not finite, by its history field's name.
    pub(crate) fn nonfinite_key(&self) -> Option<&'static str> {
        crate::error::first_nonfinite([
            ("proxy_score", self.proxy_score),
            ("gold_score", self.gold_score),
            ("mean_kl", self.kl),
        ])
    }
}

/// A world's tables, checked: what every run in it shares.
#[derive(Clone, Debug)]
pub struct WorldTables<'a> {
    /// `[n_prompts, vocab_size]`: the reference (SFT) policy's logits; a run starts there.
    pub ref_logits: &'a [f64],
    /// The reward model's weight of each token.
    pub weights: &'a [f64],
    /// `[n_prompts, vocab_size]`: the gold value of each token for each prompt.
    pub gold_token: &'a [f64],
    /// Whether the gold counts a repeated token once (else every copy counts).
    pub count_once: bool,
    pub response_len: usize,
    pub n_prompts: usize,
    pub vocab_size: usize,
    /// The reference's log-probabilities, once: it never changes.
    pub(crate) ref_log_probs: Vec<f64>,
    /// Each prompt's reference logits' maximum and log-normaliser ([`log_normaliser_on`]).
    pub(crate) ref_normalisers: Vec<(f64, f64)>,
    /// The vector unit the rows are computed on.
    pub(crate) simd: Simd,
}

impl<'a> WorldTables<'a> {
    /// Checks the tables' shapes (`ref_logits` 1 to 2^16 prompts by 2 to 2^20 tokens,
    /// `weights` one per token, `gold_token` of `ref_logits`' shape), their values (finite)
    /// and `1 <= response_len <= 4096`, each error naming its argument.
    pub fn new(
        ref_logits: Table<'a>,
        weights: &'a [f64],
        gold_token: Table<'a>,
        count_once: bool,
        response_len: i64,
    ) -> Result<Self> {
        let Table { rows: n_prompts, cols: vocab_size, .. } = ref_logits;
        if !(1..=MAX_PROMPTS).contains(&n_prompts) {
            return Err(Error::invalid(format!(
                "ref_logits must have 1 to {MAX_PROMPTS} rows (one per prompt), got {n_prompts}"
            )));
        }
        if !(2..=MAX_VOCAB).contains(&vocab_size) {
            return Err(Error::invalid(format!(
                "ref_logits must have 2 to {MAX_VOCAB} columns (one per token), got {vocab_size}"
            )));
        }
        finite_table("ref_logits", ref_logits)?;
        if weights.len() != vocab_size {
            return Err(Error::invalid(format!(
                "weights must have {vocab_size} entries (one per token of ref_logits), got {}",
                weights.len()
            )));
        }
        finite_slice("weights", weights)?;
        if (gold_token.rows, gold_token.cols) != (n_prompts, vocab_size) {
            return Err(Error::invalid(format!(
                "gold_token must have the shape of ref_logits, ({n_prompts}, {vocab_size}), got ({}, {})",
                gold_token.rows, gold_token.cols
            )));
        }
        finite_table("gold_token", gold_token)?;
        if response_len < 1 {
            return Err(Error::invalid(format!("response_len must be >= 1, got {response_len}")));
        }
        crate::error::at_most("response_len", response_len, MAX_RESPONSE_LEN)?;
        let mut ref_log_probs = vec_with_capacity(ref_logits.values.len(), "the reference's log-probabilities")?;
        ref_log_probs.resize(ref_logits.values.len(), 0.0);
        for (row, out) in ref_logits.values.chunks_exact(vocab_size).zip(ref_log_probs.chunks_exact_mut(vocab_size)) {
            log_softmax_row(row, out);
        }
        let simd = Simd::detect();
        let mut ref_normalisers = vec_with_capacity(n_prompts, "the reference's normalisers")?;
        let mut scratch = vec_with_capacity(vocab_size, "a row of the vocabulary")?;
        scratch.resize(vocab_size, 0.0);
        for row in ref_logits.values.chunks_exact(vocab_size) {
            ref_normalisers.push(log_normaliser_on(simd, row, &mut scratch));
        }
        Ok(WorldTables {
            ref_logits: ref_logits.values,
            weights,
            gold_token: gold_token.values,
            count_once,
            response_len: response_len as usize,
            n_prompts,
            vocab_size,
            ref_log_probs,
            ref_normalisers,
            simd,
        })
    }

    /// Prompt `x`'s exact statistics under the policy row `logits`; `p` is scratch of a row.
    /// Vectorised along the row ([`stats_row_on`]): within a few ulps of the reference's
    /// libm arithmetic, relative to the sums' magnitudes.
    pub fn prompt_stats(&self, x: usize, logits: &[f64], p: &mut [f64]) -> WorldStats {
        let row = x * self.vocab_size..(x + 1) * self.vocab_size;
        let length = self.response_len;
        let stats = stats_row_on(
            self.simd,
            logits,
            &self.ref_log_probs[row.clone()],
            self.weights,
            &self.gold_token[row],
            self.count_once,
            length,
            p,
        );
        let l = length as f64;
        WorldStats {
            proxy_score: l * stats.proxy,
            gold_score: if self.count_once { stats.gold } else { l * stats.gold },
            kl: l * stats.kl,
        }
    }
}

/// Checks a policy for `world`: one row of finite logits per prompt.
pub(crate) fn check_theta(world: &WorldTables<'_>, theta: &[f64]) -> Result<()> {
    if theta.len() != world.ref_logits.len() {
        return Err(Error::invalid(format!(
            "theta must have the shape of ref_logits, ({}, {}), got {} values",
            world.n_prompts,
            world.vocab_size,
            theta.len()
        )));
    }
    finite_table("theta", Table { values: theta, rows: world.n_prompts, cols: world.vocab_size })
}

/// The exact means over prompts of a run's policy, each prompt's statistics kept until a
/// step changes its row.
#[derive(Clone, Debug)]
pub(crate) struct ExactMeans {
    /// Each prompt's exact statistics, and whether a step changed its row since.
    stats: Vec<WorldStats>,
    stale: Vec<bool>,
    /// A row of probabilities for the statistics.
    p: Vec<f64>,
}

impl ExactMeans {
    /// Every prompt of `world` stale: nothing computed yet.
    pub(crate) fn new(world: &WorldTables<'_>) -> Result<Self> {
        let mut stats = vec_with_capacity(world.n_prompts, "the statistics of each prompt")?;
        stats.resize(world.n_prompts, WorldStats::default());
        let mut stale = vec_with_capacity(world.n_prompts, "the statistics of each prompt")?;
        stale.resize(world.n_prompts, true);
        let mut p = vec_with_capacity(world.vocab_size, "a row of the vocabulary")?;
        p.resize(world.vocab_size, 0.0);
        Ok(ExactMeans { stats, stale, p })
    }

    /// A step changed prompt `x`'s row.
    #[inline]
    pub(crate) fn changed(&mut self, x: usize) {
        self.stale[x] = true;
    }

    /// The exact means over prompts under the policy `theta` (each prompt's statistics summed
    /// left to right, over the number of prompts), recomputing the rows changed since the
    /// last call.
    pub(crate) fn means(&mut self, world: &WorldTables<'_>, theta: &[f64]) -> WorldStats {
        let v = world.vocab_size;
        let mut total = WorldStats::default();
        for x in 0..world.n_prompts {
            if self.stale[x] {
                self.stats[x] = world.prompt_stats(x, &theta[x * v..(x + 1) * v], &mut self.p);
                self.stale[x] = false;
            }
            total.proxy_score += self.stats[x].proxy_score;
            total.gold_score += self.stats[x].gold_score;
            total.kl += self.stats[x].kl;
        }
        let n = world.n_prompts as f64;
        WorldStats { proxy_score: total.proxy_score / n, gold_score: total.gold_score / n, kl: total.kl / n }
    }
}
