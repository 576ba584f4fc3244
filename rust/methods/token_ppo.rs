//! PPO on token sequences, as TRL's PPO trainer computes it, on a tabular policy.
//!
//! A response is generated token by token from `theta[p, t, :]` (one row of logits per
//! prompt and position) until EOS (token 0) or `max_len`; the value head is one number per
//! state, `V[p, t]`. What one PPO step computes, read from TRL's
//! `trl/experimental/ppo/ppo_trainer.py` (mirror HEAD f2cd577) and the helpers in that file:
//!
//! - per-token KL and rewards (lines 770-779): `logr = ref_logp - logp`, `kl = -logr` (k1) or
//!   `(exp(logr) - 1) - logr` (k3), `r_t = -kl_coef kl_t`, the score added at the last real
//!   token (TRL adds it one slot after the EOS when the response is padded, its issues #1893
//!   and #3750: we depart, SPEC §7); `missing_eos_penalty` off a response without EOS (757-759);
//! - GAE (786-796): `delta = r_t + gamma V_{t+1} - V_t`, `A_t = delta + gamma lam A_{t+1}`,
//!   `returns = A + V`, with `V` and `r` zero past the response's end (so the value loss, too,
//!   covers the valid tokens only, where TRL's covers one slot more: the same departure);
//! - `masked_whiten` (237-270, 797): mean and unbiased variance over the batch's valid
//!   tokens, `(A - mean) * rsqrt(var + 1e-8)`;
//! - the clipped losses (829-847): `pg = masked_mean(max(-A r, -A clip(r, 1 ± eps)))`,
//!   `vf = 0.5 masked_mean(max((V - R)^2, (clip(V, V_old ± cv) - R)^2))`, `loss = pg + vf_coef
//!   vf`; a `max`'s gradient goes to its larger branch (on a tie autograd halves it between
//!   two equal gradients, the same thing) and a clamp passes none outside its range;
//! - the minibatch statistics (852-868): `approxkl = 0.5 mean(logratio^2)`, `ratio.mean()` and
//!   `entropy.mean()` over every position of the minibatch, padding included (a padded
//!   position's log-ratio is 0, its ratio 1, its entropy that of the state's row).
//!
//! The optimiser is the engine's (plain SGD, the lesson's; TRL's is AdamW). The per-token sums
//! run left to right, as the reference twin (`python/rlhf_fast/reference/methods/token_ppo.py`)
//! sums, with libm's `exp`/`ln`; the policy's rows ([`PolicyRows`]) and their SGD steps are
//! vectorised along the row, within a few ulps of the twin's floats, and sample the twin's
//! tokens (a draw too close to a running sum is decided by libm's softmax).

use crate::error::{finite, non_negative, positive, Error, Result};
use crate::kernels::policy_row::{descend_row_on, exp_entropy_row_on, locate, n_blocks, SHIFT_SLACK};
use crate::kernels::rows::sample_margin;
use crate::kernels::sampling::sample_index;
use crate::kernels::simd::Simd;
use crate::kernels::softmax::{log_softmax_row, softmax_row};
use crate::methods::ppo_rows::DRIFT_MARGIN;
use crate::methods::sequence_stats;

/// The end-of-sequence token.
pub const EOS: usize = 0;
/// TRL's `masked_whiten`: `rsqrt(var + 1e-8)`.
pub const WHITEN_EPSILON: f64 = 1e-8;
pub const MAX_PROMPTS: usize = 1 << 16;
pub const MAX_VOCAB: usize = 1 << 20;
pub const MAX_LEN: usize = 1 << 12;
pub const MAX_PPO_EPOCHS: usize = 1 << 10;

/// TRL's `kl_estimator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KlEstimator {
    K1,
    K3,
}

impl KlEstimator {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "k1" => Ok(KlEstimator::K1),
            "k3" => Ok(KlEstimator::K3),
            _ => Err(Error::invalid(format!("kl_estimator must be one of ('k1', 'k3'), got '{name}'"))),
        }
    }
}

/// What a token PPO step does besides `kl_coef` and `lr`; [`Default`] is TRL's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenPpoParams {
    pub gamma: f64,
    pub lam: f64,
    pub cliprange: f64,
    pub cliprange_value: f64,
    pub vf_coef: f64,
    pub kl_estimator: KlEstimator,
    pub num_ppo_epochs: usize,
    pub num_mini_batches: usize,
    /// Subtracted from the score of a response without EOS (TRL's `None` is 0).
    pub missing_eos_penalty: f64,
    /// Divide the reward model's score by the content length (at least 1).
    pub length_normalize: bool,
    /// Subtract `length_penalty * n_content` from the score.
    pub length_penalty: f64,
}

impl Default for TokenPpoParams {
    fn default() -> Self {
        TokenPpoParams {
            gamma: 1.0,
            lam: 0.95,
            cliprange: 0.2,
            cliprange_value: 0.2,
            vf_coef: 0.1,
            kl_estimator: KlEstimator::K1,
            num_ppo_epochs: 4,
            num_mini_batches: 1,
            missing_eos_penalty: 0.0,
            length_normalize: false,
            length_penalty: 0.0,
        }
    }
}

impl TokenPpoParams {
    /// The settings, each checked and named, for batches of `batch_size` responses.
    pub fn checked(self, batch_size: usize) -> Result<Self> {
        for (name, value) in [("gamma", self.gamma), ("lam", self.lam)] {
            if !(0.0..=1.0).contains(&finite(name, value)?) {
                return Err(Error::invalid(format!("{name} must be in [0, 1], got {}", crate::error::py_float(value))));
            }
        }
        if self.num_mini_batches == 0 {
            return Err(Error::invalid("num_mini_batches must be >= 1, got 0"));
        }
        if !batch_size.is_multiple_of(self.num_mini_batches) {
            return Err(Error::invalid(format!(
                "num_mini_batches must divide batch_size={batch_size}, got {}",
                self.num_mini_batches
            )));
        }
        if batch_size / self.num_mini_batches < 2 {
            return Err(Error::invalid(format!(
                "batch_size / num_mini_batches must be >= 2 (whitening needs two tokens), got {batch_size} / {}",
                self.num_mini_batches
            )));
        }
        if !(1..=MAX_PPO_EPOCHS).contains(&self.num_ppo_epochs) {
            let message = if self.num_ppo_epochs == 0 {
                "num_ppo_epochs must be >= 1, got 0".to_owned()
            } else {
                format!("num_ppo_epochs must be <= {MAX_PPO_EPOCHS}, got {}", self.num_ppo_epochs)
            };
            return Err(Error::invalid(message));
        }
        positive("cliprange", self.cliprange)?;
        positive("cliprange_value", self.cliprange_value)?;
        non_negative("vf_coef", self.vf_coef)?;
        finite("missing_eos_penalty", self.missing_eos_penalty)?;
        non_negative("length_penalty", self.length_penalty)?;
        Ok(self)
    }
}

/// TRL's per-token KL estimate of one response, written into `out`.
pub fn per_token_kl(logp: &[f64], ref_logp: &[f64], estimator: KlEstimator, out: &mut [f64]) {
    for ((o, &lp), &rlp) in out.iter_mut().zip(logp).zip(ref_logp) {
        let logr = rlp - lp;
        *o = match estimator {
            KlEstimator::K1 => -logr,
            KlEstimator::K3 => (logr.exp() - 1.0) - logr,
        };
    }
}

/// `-kl_coef * kl_t` at every token, `score` added at the last (the last real token).
pub fn per_token_rewards(kl: &[f64], score: f64, kl_coef: f64, out: &mut [f64]) {
    for (o, &k) in out.iter_mut().zip(kl) {
        *o = -kl_coef * k;
    }
    if let Some(last) = out.last_mut() {
        *last += score;
    }
}

/// GAE over one response (values zero past its end): advantages, and returns `A + V`.
pub fn gae(rewards: &[f64], values: &[f64], gamma: f64, lam: f64, advantages: &mut [f64], returns: &mut [f64]) {
    let n = rewards.len();
    let mut last = 0.0;
    for t in (0..n).rev() {
        let next_value = if t + 1 < n { values[t + 1] } else { 0.0 };
        let delta = rewards[t] + gamma * next_value - values[t];
        last = delta + gamma * lam * last;
        advantages[t] = last;
    }
    for ((r, &a), &v) in returns.iter_mut().zip(advantages.iter()).zip(values) {
        *r = a + v;
    }
}

/// TRL's `masked_whiten` (shift_mean) of the batch's valid entries, in place: `(x - mean) *
/// rsqrt(var + 1e-8)` with the unbiased variance. `values` holds at least two entries.
pub fn masked_whiten(values: &mut [f64]) {
    let n = values.len() as f64;
    let mean = values.iter().fold(0.0, |total, &v| total + v) / n;
    let squares = values.iter().fold(0.0, |total, &v| total + (v - mean) * (v - mean));
    let var = squares / n * (n / (n - 1.0));
    let scale = 1.0 / (var + WHITEN_EPSILON).sqrt();
    for v in values.iter_mut() {
        *v = (*v - mean) * scale;
    }
}

/// The score PPO is given: the reward model's, length-normalised and length-penalised if
/// asked (issue 11's remedies), less `missing_eos_penalty` without EOS (TRL).
pub fn shaped_score(rm_score: f64, n_content: usize, has_eos: bool, params: &TokenPpoParams) -> f64 {
    let mut score = rm_score;
    if params.length_normalize {
        score /= n_content.max(1) as f64;
    }
    score -= params.length_penalty * n_content as f64;
    if !has_eos {
        score -= params.missing_eos_penalty;
    }
    score
}

/// One token's `max(-A r, -A clip(r))`, its derivative in `logp`, and whether the clipped
/// branch is the larger (TRL's `pg_clipfrac`).
#[inline]
pub fn clipped_policy_term(advantage: f64, logp: f64, old_logp: f64, cliprange: f64) -> (f64, f64, bool) {
    let ratio = (logp - old_logp).exp();
    let unclipped = -advantage * ratio;
    let clipped = -advantage * ratio.max(1.0 - cliprange).min(1.0 + cliprange);
    if clipped > unclipped {
        (clipped, 0.0, true)
    } else {
        (unclipped, unclipped, false)
    }
}

/// One token's `max((V - R)^2, (clip(V, V_old ± cv) - R)^2)`, its derivative in `V`, and
/// whether the clipped branch is the larger (TRL's `vf_clipfrac`).
#[inline]
pub fn clipped_value_term(value: f64, old_value: f64, ret: f64, cliprange_value: f64) -> (f64, f64, bool) {
    let value_clipped = value.max(old_value - cliprange_value).min(old_value + cliprange_value);
    let unclipped = (value - ret) * (value - ret);
    let clipped = (value_clipped - ret) * (value_clipped - ret);
    if clipped > unclipped {
        (clipped, 0.0, true)
    } else {
        (unclipped, 2.0 * (value - ret), false)
    }
}

/// A batch of responses and what the old policy made of them, `[response, position]` with
/// stride `max_len` (entries past a response's length are unused).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rollouts {
    pub max_len: usize,
    pub prompts: Vec<usize>,
    /// Tokens generated, EOS included: 1 to `max_len`.
    pub lengths: Vec<usize>,
    pub tokens: Vec<usize>,
    pub old_logp: Vec<f64>,
    pub old_values: Vec<f64>,
    /// Whitened.
    pub advantages: Vec<f64>,
    pub returns: Vec<f64>,
}

/// The softmax of every state's row of a policy, kept as `e_j = e^(z_j − c)` with its shift `c`
/// (the row's maximum, as the reference shifts, or a little above it after
/// [`PolicyRows::descend`]), `1/S` and `ln S` (`π_j = e_j (1/S)`, `log π_j = (z_j − c) − ln S`,
/// within rounding of the reference's), and its entropy `ln S − Σ e_j (z_j − c) / S`, each
/// computed when first asked for after the row last changed (or with the step that changed
/// it), vectorised along the row: within a few ulps of the reference's libm floats; and the
/// samples drawn from them: the reference's tokens (see [`PolicyRows::sample`]).
#[derive(Clone, Debug)]
pub struct PolicyRows {
    vocab_size: usize,
    simd: Simd,
    e: Vec<f64>,
    /// [`n_blocks`] sums of each row's `e`, for [`locate`].
    block_sums: Vec<f64>,
    /// The shift of each row's `e` (its maximum, or above it after [`PolicyRows::descend`]).
    top: Vec<f64>,
    /// Each row's maximum.
    max: Vec<f64>,
    inv_sum: Vec<f64>,
    log_sum: Vec<f64>,
    entropy: Vec<f64>,
    fresh: Vec<bool>,
    /// A row of zeros: [`exp_entropy_row_on`]'s reference, so that its `T` is `Σ e (z − max z)`.
    zeros: Vec<f64>,
    /// A row of libm's softmax, for the draws too close to call.
    exact: Vec<f64>,
}

/// One state's row of [`PolicyRows`].
#[derive(Clone, Copy, Debug)]
pub struct Row<'r> {
    /// `e^(z_j − top)`.
    pub e: &'r [f64],
    /// The shift: the row's maximum, or above it by at most [`SHIFT_SLACK`].
    pub top: f64,
    pub inv_sum: f64,
    pub log_sum: f64,
    pub entropy: f64,
}

impl Row<'_> {
    /// `log π_a` of the row whose logit `a` is `z_a`.
    #[inline]
    pub fn logp(&self, z_a: f64) -> f64 {
        (z_a - self.top) - self.log_sum
    }
}

impl PolicyRows {
    /// Room for `n_states` rows of `vocab_size` (sizes checked by the caller).
    pub fn new(n_states: usize, vocab_size: usize) -> Result<Self> {
        let table =
            n_states.checked_mul(vocab_size).ok_or_else(|| Error::invalid("the policy does not fit in memory"))?;
        let zeros = |len: usize| -> Result<Vec<f64>> {
            let mut v = crate::error::vec_with_capacity(len, "the policy's rows")?;
            v.resize(len, 0.0);
            Ok(v)
        };
        Ok(PolicyRows {
            vocab_size,
            simd: Simd::detect(),
            e: zeros(table)?,
            block_sums: zeros(n_states * n_blocks(vocab_size))?,
            top: zeros(n_states)?,
            max: zeros(n_states)?,
            inv_sum: zeros(n_states)?,
            log_sum: zeros(n_states)?,
            entropy: zeros(n_states)?,
            fresh: vec![false; n_states],
            zeros: zeros(vocab_size)?,
            exact: zeros(vocab_size)?,
        })
    }

    /// Computes state `s`'s row under `theta` unless it is fresh.
    #[inline]
    pub fn refresh(&mut self, theta: &[f64], s: usize) {
        if !self.fresh[s] {
            let (v, blocks) = (self.vocab_size, n_blocks(self.vocab_size));
            let range = s * v..(s + 1) * v;
            let (top, sum, t) = exp_entropy_row_on(
                self.simd,
                &theta[range.clone()],
                &self.zeros,
                &mut self.e[range],
                &mut self.block_sums[s * blocks..(s + 1) * blocks],
            );
            self.set(s, top, top, sum, t);
        }
    }

    /// State `s`'s row under `theta`.
    #[inline]
    pub fn row(&mut self, theta: &[f64], s: usize) -> Row<'_> {
        self.refresh(theta, s);
        self.cached(s)
    }

    /// State `s`'s row as last computed.
    #[inline]
    pub fn cached(&self, s: usize) -> Row<'_> {
        Row {
            e: &self.e[s * self.vocab_size..(s + 1) * self.vocab_size],
            top: self.top[s],
            inv_sum: self.inv_sum[s],
            log_sum: self.log_sum[s],
            entropy: self.entropy[s],
        }
    }

    /// `sample_index(softmax(theta[s]), u)` as the reference computes it (libm's softmax):
    /// from the cached row when `u` lies farther than the two arithmetics' difference (and the
    /// run's drift from the reference, [`DRIFT_MARGIN`]) from the running sums around the
    /// token; else from libm's softmax of the row, as the reference samples.
    #[inline]
    pub fn sample(&mut self, theta: &[f64], s: usize, u: f64) -> usize {
        self.refresh(theta, s);
        let (v, blocks) = (self.vocab_size, n_blocks(self.vocab_size));
        let margin = sample_margin(v) + DRIFT_MARGIN;
        let e = &self.e[s * v..(s + 1) * v];
        locate(e, &self.block_sums[s * blocks..(s + 1) * blocks], self.inv_sum[s], u, margin).unwrap_or_else(|| {
            softmax_row(&theta[s * v..(s + 1) * v], &mut self.exact);
            sample_index(&self.exact, u)
        })
    }

    /// One SGD step of learning rate `lr` on state `s`'s row of `theta` along the gradient
    /// taken at its current row: `tokens`' `coef` at their chosen tokens, in order (the
    /// gradient's tokens of state `s`), then `−coef_sum π_s` ([`descend_row_on`]), fused with
    /// the row's next softmax. Its `e` are taken against a shift above the new maximum by
    /// construction (the old maximum plus the most a logit can move: `lr (|coef_sum| + Σ
    /// |coef|)`), so the pass needs no maximum first; where rounding breaks the bound, or it
    /// lies more than [`SHIFT_SLACK`] above, the row is computed again from its maximum.
    pub fn descend(&mut self, theta: &mut [f64], s: usize, coef_sum: f64, tokens: &[(usize, usize, f64)], lr: f64) {
        let (v, blocks) = (self.vocab_size, n_blocks(self.vocab_size));
        let row = &mut theta[s * v..(s + 1) * v];
        let mut moved = coef_sum.abs();
        for &(_, a, coef) in tokens {
            row[a] -= lr * coef;
            moved += coef.abs();
        }
        let shift = self.max[s] + lr * moved;
        let (sum, t, max) = descend_row_on(
            self.simd,
            row,
            &mut self.e[s * v..(s + 1) * v],
            self.inv_sum[s],
            coef_sum,
            lr,
            shift,
            &mut self.block_sums[s * blocks..(s + 1) * blocks],
        );
        if max <= shift && shift - max <= SHIFT_SLACK && sum.is_finite() {
            self.set(s, shift, max, sum, t);
        } else {
            self.fresh[s] = false;
            self.refresh(theta, s);
        }
    }

    fn set(&mut self, s: usize, shift: f64, max: f64, sum: f64, t: f64) {
        let log_sum = sum.ln();
        self.top[s] = shift;
        self.max[s] = max;
        self.inv_sum[s] = 1.0 / sum;
        self.log_sum[s] = log_sum;
        self.entropy[s] = log_sum - t / sum;
        self.fresh[s] = true;
    }
}

/// The policy's gradient of a minibatch's loss, sparse: a token `a` of state `s` with
/// coefficient `coef` adds `coef ([v = a] − π_v)` to the row, so a state's row is
/// `−coef_sums[s] π_s` plus each of its tokens' `coef` at its `a` ([`PolicyGradient::add_to`]).
#[derive(Clone, Debug, Default)]
pub struct PolicyGradient {
    /// Per state, the sum of its tokens' coefficients.
    pub coef_sums: Vec<f64>,
    /// `(state, token, coef)` of every token of the minibatch.
    pub tokens: Vec<(usize, usize, f64)>,
}

impl PolicyGradient {
    /// Empty, for `n_states` states and minibatches of up to `cells` tokens.
    pub fn new(n_states: usize, cells: usize) -> Result<Self> {
        let mut coef_sums = crate::error::vec_with_capacity(n_states, "the policy's gradient")?;
        coef_sums.resize(n_states, 0.0);
        Ok(PolicyGradient { coef_sums, tokens: crate::error::vec_with_capacity(cells, "the policy's gradient")? })
    }

    /// Adds the gradient into the dense `grad [P, L, V]`, under the rows it was taken at.
    pub fn add_to(&self, rows: &PolicyRows, grad: &mut [f64]) {
        let v = rows.vocab_size;
        for (s, &c) in self.coef_sums.iter().enumerate() {
            let row = rows.cached(s);
            for (g, &e) in grad[s * v..(s + 1) * v].iter_mut().zip(row.e) {
                *g -= c * (e * row.inv_sum);
            }
        }
        for &(s, a, coef) in &self.tokens {
            grad[s * v + a] += coef;
        }
    }
}

/// The losses of one minibatch and TRL's statistics of it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MinibatchOutcome {
    pub pg_loss: f64,
    pub vf_loss: f64,
    pub loss: f64,
    pub pg_clipfrac: f64,
    pub vf_clipfrac: f64,
    pub approxkl: f64,
    pub ratio_mean: f64,
    pub entropy_mean: f64,
}

/// TRL's loss `pg + vf_coef vf` on the responses `indices` of `rollouts` under the current
/// `theta [P, L, V]` (its rows through `rows`) and `values [P, L]`, adding its gradients into
/// `grad_theta` (sparse, `d log pi(a) / d theta_v = [v = a] - pi_v`) and `grad_values`; the
/// statistics as TRL logs them. `indices` is not empty.
#[allow(clippy::too_many_arguments)]
pub fn minibatch_loss_and_grads(
    theta: &[f64],
    values: &[f64],
    rollouts: &Rollouts,
    indices: &[usize],
    params: &TokenPpoParams,
    rows: &mut PolicyRows,
    grad_theta: &mut PolicyGradient,
    grad_values: &mut [f64],
) -> MinibatchOutcome {
    let (max_len, vocab) = (rollouts.max_len, rows.vocab_size);
    let n_valid = indices.iter().map(|&b| rollouts.lengths[b]).sum::<usize>() as f64;
    let (mut pg_sum, mut vf_sum, mut squares, mut ratios, mut entropies) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut pg_clipped, mut vf_clipped) = (0usize, 0usize);
    for &b in indices {
        let p = rollouts.prompts[b];
        for t in 0..max_len {
            let s = p * max_len + t;
            let row = rows.row(theta, s);
            entropies += row.entropy;
            if t >= rollouts.lengths[b] {
                ratios += 1.0; // a padded position: log-ratio 0
                continue;
            }
            let i = b * max_len + t;
            let a = rollouts.tokens[i];
            let logp = row.logp(theta[s * vocab + a]);
            let logratio = logp - rollouts.old_logp[i];
            squares += logratio * logratio;
            ratios += logratio.exp();
            let (loss, slope, clipped) =
                clipped_policy_term(rollouts.advantages[i], logp, rollouts.old_logp[i], params.cliprange);
            pg_sum += loss;
            pg_clipped += usize::from(clipped);
            let coef = slope / n_valid;
            grad_theta.coef_sums[s] += coef;
            grad_theta.tokens.push((s, a, coef));
            let (vloss, vslope, vclipped) =
                clipped_value_term(values[s], rollouts.old_values[i], rollouts.returns[i], params.cliprange_value);
            vf_sum += vloss;
            vf_clipped += usize::from(vclipped);
            grad_values[s] += params.vf_coef * 0.5 * vslope / n_valid;
        }
    }
    let positions = (indices.len() * max_len) as f64;
    let pg_loss = pg_sum / n_valid;
    let vf_loss = 0.5 * (vf_sum / n_valid);
    MinibatchOutcome {
        pg_loss,
        vf_loss,
        loss: pg_loss + params.vf_coef * vf_loss,
        pg_clipfrac: pg_clipped as f64 / n_valid,
        vf_clipfrac: vf_clipped as f64 / n_valid,
        approxkl: 0.5 * (squares / positions),
        ratio_mean: ratios / positions,
        entropy_mean: entropies / positions,
    }
}

/// The lengths of stored responses `tokens [B, L]` (the contract's layout: tokens, the first
/// EOS ends a response, -1 after its end), each checked, or an error naming `tokens[b, t]`.
#[cfg_attr(not(feature = "python"), allow(dead_code))] // the bindings' input
pub fn response_lengths(tokens: &[i64], max_len: usize, vocab_size: usize) -> Result<Vec<usize>> {
    let mut lengths = Vec::with_capacity(tokens.len() / max_len.max(1));
    for (b, response) in tokens.chunks_exact(max_len).enumerate() {
        let length = response.iter().position(|&a| a == EOS as i64).map_or(max_len, |t| t + 1);
        for (t, &a) in response.iter().enumerate() {
            let ok = if t < length { (0..vocab_size as i64).contains(&a) } else { a == -1 };
            if !ok {
                let want = if t < length {
                    format!("a token in [0, {vocab_size})")
                } else {
                    "-1 (padding after EOS)".to_owned()
                };
                return Err(Error::invalid(format!("tokens[{b}, {t}] must be {want}, got {a}")));
            }
        }
        lengths.push(length);
    }
    Ok(lengths)
}

/// Per-token terms of a batch, `[B, L]` (zero past each response's end), and the loss.
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(not(feature = "python"), allow(dead_code))] // the bindings' output
pub struct BatchTerms {
    pub kl: Vec<f64>,
    pub rewards: Vec<f64>,
    pub raw_advantages: Vec<f64>,
    pub advantages: Vec<f64>,
    pub returns: Vec<f64>,
    pub outcome: MinibatchOutcome,
}

/// One PPO update's terms on stored responses, as the engine computes them: the old policy
/// `old_theta` and value head `old_values` give the per-token KL (to `world`'s reference),
/// rewards (with the responses' given `scores`), GAE, returns and whitened advantages; the
/// loss over the whole batch is then taken under `theta` and `values`, its gradients added
/// into `grad_theta` and `grad_values`. The arguments' sizes are the caller's to check.
#[cfg_attr(not(feature = "python"), allow(dead_code))] // a binding, for the differential tests
#[allow(clippy::too_many_arguments)]
pub fn batch_loss_and_grads(
    world: &TokenWorld<'_>,
    old_theta: &[f64],
    theta: &[f64],
    old_values: &[f64],
    values: &[f64],
    prompts: &[usize],
    tokens: &[usize],
    lengths: &[usize],
    scores: &[f64],
    kl_coef: f64,
    params: &TokenPpoParams,
    grad_theta: &mut [f64],
    grad_values: &mut [f64],
) -> Result<BatchTerms> {
    let (l, v, n_states) = (world.max_len, world.vocab_size, world.n_prompts * world.max_len);
    let cells = prompts.len() * l;
    let mut rollouts = Rollouts {
        max_len: l,
        prompts: prompts.to_vec(),
        lengths: lengths.to_vec(),
        tokens: tokens.to_vec(),
        old_logp: vec![0.0; cells],
        old_values: vec![0.0; cells],
        advantages: vec![0.0; cells],
        returns: vec![0.0; cells],
    };
    let mut terms = BatchTerms { kl: vec![0.0; cells], rewards: vec![0.0; cells], ..Default::default() };
    let mut old_rows = PolicyRows::new(n_states, v)?;
    let mut ref_logp = vec![0.0; l];
    let mut flat = Vec::with_capacity(cells);
    for (b, (&p, &n)) in prompts.iter().zip(lengths).enumerate() {
        let range = b * l..b * l + n;
        for t in 0..n {
            let (s, a) = (p * l + t, tokens[b * l + t]);
            rollouts.old_logp[b * l + t] = old_rows.row(old_theta, s).logp(old_theta[s * v + a]);
            rollouts.old_values[b * l + t] = old_values[s];
            ref_logp[t] = world.ref_logp[s * v + a];
        }
        per_token_kl(
            &rollouts.old_logp[range.clone()],
            &ref_logp[..n],
            params.kl_estimator,
            &mut terms.kl[range.clone()],
        );
        per_token_rewards(&terms.kl[range.clone()], scores[b], kl_coef, &mut terms.rewards[range.clone()]);
        world.add_step_rewards(p, &tokens[range.clone()], &mut terms.rewards[range.clone()]);
        gae(
            &terms.rewards[range.clone()],
            &rollouts.old_values[range.clone()],
            params.gamma,
            params.lam,
            &mut rollouts.advantages[range.clone()],
            &mut rollouts.returns[range.clone()],
        );
        flat.extend_from_slice(&rollouts.advantages[range]);
    }
    terms.raw_advantages = rollouts.advantages.clone();
    masked_whiten(&mut flat);
    let mut start = 0;
    for (b, &n) in lengths.iter().enumerate() {
        rollouts.advantages[b * l..b * l + n].copy_from_slice(&flat[start..start + n]);
        start += n;
    }
    let indices: Vec<usize> = (0..prompts.len()).collect();
    let mut rows = PolicyRows::new(n_states, v)?;
    let mut gradient = PolicyGradient::new(n_states, cells)?;
    terms.outcome =
        minibatch_loss_and_grads(theta, values, &rollouts, &indices, params, &mut rows, &mut gradient, grad_values);
    for s in 0..n_states {
        rows.refresh(theta, s);
    }
    gradient.add_to(&rows, grad_theta);
    terms.advantages = rollouts.advantages;
    terms.returns = rollouts.returns;
    Ok(terms)
}

/// Exact expectations over responses under a policy (issue 11's contract): one prompt's, or
/// their means over prompts.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SequenceStats {
    /// `bias[p] + sum of content w + w_len n_content`.
    pub proxy_score: f64,
    /// `offset[p] + sum of content g`, each distinct token once when `count_once`.
    pub gold_score: f64,
    /// `KL(pi || pi_ref)` of whole responses.
    pub kl: f64,
    /// Content tokens.
    pub length: f64,
}

/// A sequence world's arrays, checked: what every run in it shares.
#[derive(Clone, Debug)]
pub struct TokenWorld<'a> {
    /// `[P, L, V]`; EOS is token 0.
    pub ref_logits: &'a [f64],
    pub w: &'a [f64],
    pub bias: &'a [f64],
    pub w_len: f64,
    pub g: &'a [f64],
    pub offset: &'a [f64],
    pub count_once: bool,
    pub n_prompts: usize,
    pub max_len: usize,
    pub vocab_size: usize,
    /// The frozen reference's log-probabilities, `[P, L, V]`.
    pub ref_logp: Vec<f64>,
    /// Process rewards `[P, L, V]` (issue 11 item 4): `step_rewards[p, t, a_t]` is added to
    /// the reward of token `t`; `None` adds none ([`TokenWorld::with_process_rewards`]).
    pub step_rewards: Option<&'a [f64]>,
    /// Outcome factors `[P, L, V]`: the score gains the product of a response's factors, so
    /// 0/1 factors are a verifier's "1 if every step is right"; `None` adds nothing.
    pub outcome_factors: Option<&'a [f64]>,
}

fn first_nonfinite_at(name: &str, values: &[f64], shape: &[usize]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(flat) => {
            let mut at = vec![0; shape.len()];
            let mut rest = flat;
            for (i, &d) in shape.iter().enumerate().rev() {
                at[i] = rest % d;
                rest /= d;
            }
            let at: Vec<String> = at.iter().map(usize::to_string).collect();
            let value = crate::error::py_float(values[flat]);
            Err(Error::invalid(format!("{name}[{}] must be finite, got {value}", at.join(", "))))
        }
    }
}

impl<'a> TokenWorld<'a> {
    /// Checks the shapes (1 to 2^16 prompts, 1 to 4096 positions, 2 to 2^20 tokens; `w` and
    /// `g` one per token, `bias` and `offset` one per prompt) and that every value is finite,
    /// each error naming its argument as the reference's does.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ref_logits: &'a [f64],
        shape: [usize; 3],
        w: &'a [f64],
        bias: &'a [f64],
        w_len: f64,
        g: &'a [f64],
        offset: &'a [f64],
        count_once: bool,
    ) -> Result<Self> {
        let [n_prompts, max_len, vocab_size] = shape;
        if !(1..=MAX_PROMPTS).contains(&n_prompts) {
            return Err(Error::invalid(format!("ref_logits must have 1 to {MAX_PROMPTS} prompts, got {n_prompts}")));
        }
        if !(1..=MAX_LEN).contains(&max_len) {
            return Err(Error::invalid(format!(
                "ref_logits must have 1 to {MAX_LEN} positions (max_len), got {max_len}"
            )));
        }
        if !(2..=MAX_VOCAB).contains(&vocab_size) {
            return Err(Error::invalid(format!(
                "ref_logits must have 2 to {MAX_VOCAB} tokens (EOS is token 0), got {vocab_size}"
            )));
        }
        let cells = n_prompts
            .checked_mul(max_len)
            .and_then(|n| n.checked_mul(vocab_size))
            .ok_or_else(|| Error::invalid("ref_logits does not fit in memory"))?;
        if ref_logits.len() != cells {
            return Err(Error::invalid(format!(
                "ref_logits holds {} values, not {n_prompts} x {max_len} x {vocab_size}",
                ref_logits.len()
            )));
        }
        first_nonfinite_at("ref_logits", ref_logits, &shape)?;
        for (name, values, size, what) in [
            ("w", w, vocab_size, "token"),
            ("bias", bias, n_prompts, "prompt"),
            ("g", g, vocab_size, "token"),
            ("offset", offset, n_prompts, "prompt"),
        ] {
            if values.len() != size {
                return Err(Error::invalid(format!(
                    "{name} must have {size} entries (one per {what}), got {}",
                    values.len()
                )));
            }
            first_nonfinite_at(name, values, &[size])?;
        }
        finite("w_len", w_len)?;
        let mut ref_logp = crate::error::vec_with_capacity(cells, "the reference's log-probabilities")?;
        ref_logp.resize(cells, 0.0);
        for (row, out) in ref_logits.chunks_exact(vocab_size).zip(ref_logp.chunks_exact_mut(vocab_size)) {
            log_softmax_row(row, out);
        }
        Ok(TokenWorld {
            ref_logits,
            w,
            bias,
            w_len,
            g,
            offset,
            count_once,
            n_prompts,
            max_len,
            vocab_size,
            ref_logp,
            step_rewards: None,
            outcome_factors: None,
        })
    }

    /// The world with process rewards and outcome factors (each `[P, L, V]` like
    /// `ref_logits`, finite), each error naming its argument.
    pub fn with_process_rewards(
        mut self,
        step_rewards: Option<&'a [f64]>,
        outcome_factors: Option<&'a [f64]>,
    ) -> Result<Self> {
        let shape = [self.n_prompts, self.max_len, self.vocab_size];
        for (name, table) in [("step_rewards", step_rewards), ("outcome_factors", outcome_factors)] {
            if let Some(values) = table {
                if values.len() != self.ref_logits.len() {
                    return Err(Error::invalid(format!(
                        "{name} must have the shape of ref_logits, {shape:?}: got {} values",
                        values.len()
                    )));
                }
                first_nonfinite_at(name, values, &shape)?;
            }
        }
        self.step_rewards = step_rewards;
        self.outcome_factors = outcome_factors;
        Ok(self)
    }

    /// The product of a response's outcome factors (EOS's included), 0 without them.
    pub fn outcome(&self, p: usize, tokens: &[usize]) -> f64 {
        let Some(factors) = self.outcome_factors else { return 0.0 };
        let (l, v) = (self.max_len, self.vocab_size);
        tokens.iter().enumerate().fold(1.0, |product, (t, &a)| product * factors[(p * l + t) * v + a])
    }

    /// Adds each token's process reward to `rewards` (one per token); returns their sum.
    pub fn add_step_rewards(&self, p: usize, tokens: &[usize], rewards: &mut [f64]) -> f64 {
        let Some(table) = self.step_rewards else { return 0.0 };
        let (l, v) = (self.max_len, self.vocab_size);
        let mut total = 0.0;
        for ((t, &a), r) in tokens.iter().enumerate().zip(rewards.iter_mut()) {
            let step = table[(p * l + t) * v + a];
            *r += step;
            total += step;
        }
        total
    }

    /// The exact expected [`TokenWorld::outcome`] of prompt `p` under `rows [L, V]`, `O(L V)`:
    /// `sum_t (prod_{s<t} m_s) e_t + prod_s m_s`, with `m_s = sum_{v != EOS} pi_s(v) f_s(v)`
    /// (going on) and `e_t = pi_t(EOS) f_t(EOS)` (ending at `t`).
    pub fn expected_outcome(&self, p: usize, rows: &[f64]) -> f64 {
        let Some(factors) = self.outcome_factors else { return 0.0 };
        let v_size = self.vocab_size;
        let (mut going, mut ended) = (1.0, 0.0);
        let mut probs = vec![0.0; v_size];
        for t in 0..self.max_len {
            softmax_row(&rows[t * v_size..(t + 1) * v_size], &mut probs);
            let f = &factors[(p * self.max_len + t) * v_size..(p * self.max_len + t + 1) * v_size];
            ended += going * (probs[EOS] * f[EOS]);
            going *= (1..v_size).fold(0.0, |total, v| total + probs[v] * f[v]);
        }
        ended + going
    }

    /// The reward model's score of a response: `bias[p] + sum of content w + w_len n_content`.
    pub fn rm_score(&self, p: usize, tokens: &[usize]) -> f64 {
        let mut score = self.bias[p];
        let mut n_content = 0usize;
        for &a in tokens.iter().filter(|&&a| a != EOS) {
            score += self.w[a];
            n_content += 1;
        }
        score + self.w_len * n_content as f64 + self.outcome(p, tokens)
    }

    /// The gold of a response: `offset[p] + sum of content g`, each distinct token once when
    /// `count_once` (`seen` is a scratch of `vocab_size` falses, left so).
    pub fn gold(&self, p: usize, tokens: &[usize], seen: &mut [bool]) -> f64 {
        let mut gold = self.offset[p];
        for &a in tokens.iter().filter(|&&a| a != EOS) {
            if !(self.count_once && seen[a]) {
                gold += self.g[a];
                seen[a] = true;
            }
        }
        for &a in tokens {
            seen[a] = false;
        }
        gold
    }

    /// One prompt's [`SequenceStats`] under the rows `rows [L, V]` of a policy, `O(L V)`, from
    /// [`sequence_stats::prompt_stats`] (the sequence world's one implementation of the
    /// `alive_t` recursions): the proxy weighs the expected copies of each token, the gold the
    /// chance each appears (`count_once`) or its copies.
    pub fn prompt_stats(&self, p: usize, rows: &[f64]) -> SequenceStats {
        let per_prompt = self.max_len * self.vocab_size;
        let ref_logp = &self.ref_logp[p * per_prompt..(p + 1) * per_prompt];
        let stats = sequence_stats::prompt_stats(rows, ref_logp, self.vocab_size);
        let (mut counted_w, mut gold) = (0.0, self.offset[p]);
        for v in 1..self.vocab_size {
            counted_w += self.w[v] * stats.counts[v];
            gold += self.g[v] * if self.count_once { stats.appears[v] } else { stats.counts[v] };
        }
        SequenceStats {
            proxy_score: self.bias[p] + counted_w + self.w_len * stats.content_length,
            gold_score: gold,
            kl: stats.kl,
            length: stats.content_length,
        }
    }

    /// [`TokenWorld::prompt_stats`] of every prompt under `theta [P, L, V]`, means over prompts.
    pub fn stats(&self, theta: &[f64]) -> SequenceStats {
        let per_prompt = self.max_len * self.vocab_size;
        let mut total = SequenceStats::default();
        for p in 0..self.n_prompts {
            let s = self.prompt_stats(p, &theta[p * per_prompt..(p + 1) * per_prompt]);
            total.proxy_score += s.proxy_score + self.expected_outcome(p, &theta[p * per_prompt..(p + 1) * per_prompt]);
            total.gold_score += s.gold_score;
            total.kl += s.kl;
            total.length += s.length;
        }
        let n = self.n_prompts as f64;
        SequenceStats {
            proxy_score: total.proxy_score / n,
            gold_score: total.gold_score / n,
            kl: total.kl / n,
            length: total.length / n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gae_is_the_discounted_sum_of_td_errors() {
        let rewards = [0.3, -0.1, 0.0, 1.2, -0.4];
        let values = [0.5, -0.2, 0.1, 0.7, 0.05];
        let (gamma, lam) = (0.9, 0.8);
        let (mut adv, mut ret) = ([0.0; 5], [0.0; 5]);
        gae(&rewards, &values, gamma, lam, &mut adv, &mut ret);
        let next = |t: usize| if t + 1 < 5 { values[t + 1] } else { 0.0 };
        for t in 0..5 {
            let direct: f64 =
                (t..5).map(|k| (gamma * lam).powi((k - t) as i32) * (rewards[k] + gamma * next(k) - values[k])).sum();
            assert!((adv[t] - direct).abs() < 1e-12, "{t}: {} vs {direct}", adv[t]);
            assert_eq!(ret[t], adv[t] + values[t]);
        }
    }

    #[test]
    fn whitening_has_mean_zero_and_unbiased_variance_one() {
        let mut values = [1.0, 4.0, -2.0, 0.5, 3.0, 3.0];
        masked_whiten(&mut values);
        let mean = values.iter().sum::<f64>() / 6.0;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 5.0;
        assert!(mean.abs() < 1e-12 && (var - 1.0).abs() < 1e-8, "{mean} {var}");
    }

    #[test]
    fn k1_and_k3_are_trls_estimators() {
        let mut out = [0.0; 2];
        per_token_kl(&[-1.0, -2.0], &[-1.5, -1.0], KlEstimator::K1, &mut out);
        assert_eq!(out, [0.5, -1.0]);
        per_token_kl(&[-1.0, -2.0], &[-1.5, -1.0], KlEstimator::K3, &mut out);
        assert_eq!(out, [((-0.5f64).exp() - 1.0) + 0.5, (1.0f64.exp() - 1.0) - 1.0]);
        assert!(out.iter().all(|&k| k >= 0.0));
        let mut rewards = [0.0; 2];
        per_token_rewards(&[0.5, -1.0], 2.0, 0.1, &mut rewards);
        assert_eq!(rewards, [-0.05, 0.1 + 2.0]);
    }

    #[test]
    fn the_clipped_terms_pass_no_gradient_where_the_clip_binds() {
        // A positive advantage with the ratio above 1 + eps: the clipped branch binds.
        let (loss, slope, clipped) = clipped_policy_term(1.0, 0.5, 0.0, 0.2);
        assert_eq!((loss, slope, clipped), (-1.2, 0.0, true));
        let (loss, slope, clipped) = clipped_policy_term(-1.0, 0.5, 0.0, 0.2);
        assert_eq!((loss, slope, clipped), (0.5f64.exp(), 0.5f64.exp(), false));
        // V = 1 left its clip range [-0.2, 0.2]: towards R = 2 the clipped value is worse (binds),
        // away from R = -1 the unclipped one is, and its gradient passes.
        let (loss, slope, clipped) = clipped_value_term(1.0, 0.0, 2.0, 0.2);
        assert!((loss - 3.24).abs() < 1e-15 && slope == 0.0 && clipped);
        let (loss, slope, clipped) = clipped_value_term(1.0, 0.0, -1.0, 0.2);
        assert_eq!((loss, slope, clipped), (4.0, 4.0, false));
    }

    #[test]
    fn shaped_scores_apply_the_remedies_then_the_eos_penalty() {
        let params = TokenPpoParams {
            length_normalize: true,
            length_penalty: 0.5,
            missing_eos_penalty: 2.0,
            ..Default::default()
        };
        assert_eq!(shaped_score(6.0, 3, true, &params), 2.0 - 1.5);
        assert_eq!(shaped_score(6.0, 0, false, &params), 6.0 - 2.0);
    }

    #[test]
    fn bad_settings_are_refused_naming_them() {
        let bad = |params: TokenPpoParams, batch: usize| params.checked(batch).unwrap_err().to_string();
        assert_eq!(bad(TokenPpoParams { lam: 1.5, ..Default::default() }, 4), "lam must be in [0, 1], got 1.5");
        assert_eq!(
            bad(TokenPpoParams { num_mini_batches: 3, ..Default::default() }, 4),
            "num_mini_batches must divide batch_size=4, got 3"
        );
        assert!(bad(TokenPpoParams { num_mini_batches: 4, ..Default::default() }, 4).contains("whitening"));
        assert_eq!(bad(TokenPpoParams { cliprange: 0.0, ..Default::default() }, 4), "cliprange must be > 0, got 0.0");
        assert_eq!(
            KlEstimator::parse("k2").unwrap_err().to_string(),
            "kl_estimator must be one of ('k1', 'k3'), got 'k2'"
        );
    }

    /// Every response of a tiny world, with its probability under `theta`.
    fn responses(world: &TokenWorld<'_>, p: usize, theta: &[f64]) -> Vec<(Vec<usize>, f64, f64)> {
        let (l, v) = (world.max_len, world.vocab_size);
        let mut out = vec![(vec![], 1.0, 1.0)];
        let mut done = vec![];
        for t in 0..l {
            let s = (p * l + t) * v;
            let probs = crate::kernels::softmax::softmax(&theta[s..s + v]).unwrap();
            let refs = crate::kernels::softmax::softmax(&world.ref_logits[s..s + v]).unwrap();
            let mut next = vec![];
            for (tokens, chance, ref_chance) in out {
                for a in 0..v {
                    let mut longer: Vec<usize> = tokens.clone();
                    longer.push(a);
                    let item = (longer, chance * probs[a], ref_chance * refs[a]);
                    if a == EOS || t + 1 == l {
                        done.push(item);
                    } else {
                        next.push(item);
                    }
                }
            }
            out = next;
        }
        done
    }

    #[test]
    fn the_exact_statistics_are_the_expectations_over_every_response() {
        let (p_n, l, v) = (2, 3, 4);
        let ref_logits: Vec<f64> = (0..p_n * l * v).map(|i| ((i * 7 % 11) as f64 - 5.0) / 4.0).collect();
        let theta: Vec<f64> = (0..p_n * l * v).map(|i| ((i * 5 % 13) as f64 - 6.0) / 5.0).collect();
        let (w, g) = ([0.0, 1.0, -0.5, 2.0], [0.0, 0.7, 1.5, -1.0]);
        for count_once in [true, false] {
            let world =
                TokenWorld::new(&ref_logits, [p_n, l, v], &w, &[0.3, -0.2], 0.25, &g, &[1.0, 2.0], count_once).unwrap();
            let mut seen = vec![false; v];
            let mut expected = SequenceStats::default();
            for p in 0..p_n {
                for (tokens, chance, ref_chance) in responses(&world, p, &theta) {
                    let n_content = tokens.iter().filter(|&&a| a != EOS).count() as f64;
                    expected.proxy_score += chance * world.rm_score(p, &tokens) / p_n as f64;
                    expected.gold_score += chance * world.gold(p, &tokens, &mut seen) / p_n as f64;
                    expected.kl += chance * (chance / ref_chance).ln() / p_n as f64;
                    expected.length += chance * n_content / p_n as f64;
                }
            }
            let exact = world.stats(&theta);
            for (a, b) in [
                (exact.proxy_score, expected.proxy_score),
                (exact.gold_score, expected.gold_score),
                (exact.kl, expected.kl),
                (exact.length, expected.length),
            ] {
                assert!((a - b).abs() < 1e-12, "count_once={count_once}: {a} vs {b}");
            }
        }
    }
}
