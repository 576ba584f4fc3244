//! PPO's bag step ([`bag_rlhf_step`](super::ppo::bag_rlhf_step)) vectorised along the row,
//! for a world's large vocabularies: the same step, within rounding of it, the same tokens.
//!
//! Per step, passes over the row of `V` logits ([`crate::kernels::policy_row`]): its maximum;
//! `e^(z − max)` with the KL's sums (`KL = T/S − ln S + ln S_ref` against the reference's
//! shifted logits, [`RefRow`]: no `ln` per logit) and block sums, which the `L` draws walk; then one pass per PPO epoch,
//! the update fused with the next epoch's `e^(z − c)` (the last epoch's update alone). Against
//! the libm step, a few passes instead of about a dozen, and one vectorised `exp` per logit
//! and epoch instead of a libm `exp` (and a `ln` for the KL).
//!
//! **Tokens are the libm step's**: a draw farther than [`sample_margin`] plus
//! [`DRIFT_MARGIN`] from the running sums around the token picked picks what the libm step
//! picks; closer (about `2 V` times that margin a draw: `1e-6` for `V = 4096`), the row is
//! sampled with libm, as the reference does. PPO's clip decision likewise: a ratio within
//! [`CLIP_MARGIN`] of the clip edge is recomputed with libm's softmax of the step's rows.
//! [`DRIFT_MARGIN`] is there because a run's logits drift from the reference's by rounding,
//! step after step (measured: about `1e-13` after thousands of steps, see the tests), and a
//! draw decides by the reference's logits, not ours.
//!
//! Floats differ from the libm step's by rounding: `e^x` within two ulps, sums in another
//! order, `π_j` as `e_j · (1/S)`; the KL from `T/S − ln S + ln S_ref` (an absolute error of a
//! few ulps of `max |log π − log π_ref|`), exactly 0 where the policy is the reference.

use crate::error::{vec_with_capacity, Result};
use crate::kernels::kl::KlPenalty;
use crate::kernels::policy_row::{exp_row, locate, n_blocks, row_max, update_row, SHIFT_SLACK};
use crate::kernels::rows::sample_margin;
use crate::kernels::sampling::sample_index;
#[cfg(target_arch = "x86_64")]
use crate::kernels::simd::{Avx2, Avx2Isa, Avx512, Avx512Isa};
use crate::kernels::simd::{Portable, Simd, Vector};
use crate::kernels::softmax::softmax_row;
use crate::methods::ppo::{advantage_and_value_loss, is_clipped, value_update, BagOutcome, PpoParams};

/// How far, beyond the arithmetic's own error, a draw must lie from a running sum to be
/// decided without libm: room for the run's logits drifting from the reference's.
pub const DRIFT_MARGIN: f64 = 1e-10;
/// Relative distance from a clip edge below which the ratio is recomputed with libm.
pub const CLIP_MARGIN: f64 = 1e-9;

/// A prompt's reference as [`bag_rlhf_step_rows`] reads it: its logits, their maximum and
/// `ln Σ e^(r − max r)` as [`log_normaliser_on`](crate::kernels::policy_row::log_normaliser_on)
/// sums it. The KL and the log-ratios then come from differences of shifted logits, exactly 0
/// where the policy is the reference (as the reference's own arithmetic finds them there).
#[derive(Clone, Copy, Debug)]
pub struct RefRow<'a> {
    pub logits: &'a [f64],
    pub shift: f64,
    pub log_sum: f64,
}

/// Scratch of [`bag_rlhf_step_rows`], allocated once per run (rows of up to 2^20 tokens are
/// never allocated per step).
#[derive(Clone, Debug)]
pub struct RowBagScratch {
    /// `e^(z − c)` of the current row.
    e: Vec<f64>,
    /// The logits between epochs: the caller's row keeps the step's first logits until the
    /// last epoch, for the libm fallbacks.
    work: Vec<f64>,
    /// `count_j`, the copies of token `j` in the response; all zero between steps.
    counts: Vec<f64>,
    block_sums: Vec<f64>,
    /// libm's softmax of a row, for the fallbacks.
    exact: Vec<f64>,
    tokens: Vec<usize>,
    /// `p_old` of each draw's token.
    p_old: Vec<f64>,
}

impl RowBagScratch {
    /// Scratch for a vocabulary of `vocab_size` and responses of `response_len` tokens, or
    /// [`Error::OutOfMemory`](crate::error::Error::OutOfMemory).
    pub fn new(vocab_size: usize, response_len: usize) -> Result<Self> {
        let zeros = |len: usize, what: &str| -> Result<Vec<f64>> {
            let mut row = vec_with_capacity(len, what)?;
            row.resize(len, 0.0);
            Ok(row)
        };
        let row = "a row of the vocabulary";
        Ok(RowBagScratch {
            e: zeros(vocab_size, row)?,
            work: zeros(vocab_size, row)?,
            counts: zeros(vocab_size, row)?,
            block_sums: zeros(n_blocks(vocab_size), row)?,
            exact: zeros(vocab_size, row)?,
            tokens: vec_with_capacity(response_len, "a response")?,
            p_old: vec_with_capacity(response_len, "a response")?,
        })
    }

    /// The tokens the last step sampled, in draw order.
    pub fn tokens(&self) -> &[usize] {
        &self.tokens
    }
}

/// `prod_i π(y_i) / p_old(y_i)` from libm's softmax of the step's first logits (`old`) and of
/// the current ones: the reference's ratio, for a decision too close to the clip edge.
fn ratio_exactly(old: &[f64], current: &[f64], tokens: &[usize], exact: &mut [f64], p_old: &mut [f64]) -> f64 {
    softmax_row(old, exact);
    for (p, &a) in p_old.iter_mut().zip(tokens) {
        *p = exact[a];
    }
    softmax_row(current, exact);
    tokens.iter().zip(p_old.iter()).fold(1.0, |ratio, (&a, &p)| ratio * (exact[a] / p))
}

/// [`bag_rlhf_step`](super::ppo::bag_rlhf_step) on vector unit `V`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn step_on<V: Vector>(
    isa: V::Isa,
    logits: &mut [f64],
    reference: RefRow<'_>,
    weights: &[f64],
    uniforms: &[f64],
    beta: f64,
    params: &PpoParams,
    value: &mut f64,
    scratch: &mut RowBagScratch,
) -> BagOutcome {
    let RowBagScratch { e, work, counts, block_sums, exact, tokens, p_old } = scratch;
    let v = logits.len();
    let length = uniforms.len() as f64;
    let mut top = row_max::<V>(isa, logits);
    let (sum, t) = exp_row::<V, true>(isa, logits, top, reference.logits, reference.shift, e, block_sums);
    let mut inv_s = 1.0 / sum;
    // log π − log π_ref = ((z − max z) − (r − max r)) − (ln S − ln S_ref).
    let log_gap = sum.ln() - reference.log_sum;
    let kl = length * (t * inv_s - log_gap);
    let margin = sample_margin(v) + DRIFT_MARGIN;
    let mut exact_ready = false;
    tokens.clear();
    for &u in uniforms {
        let token = locate(e, block_sums, inv_s, u, margin).unwrap_or_else(|| {
            if !exact_ready {
                softmax_row(logits, exact);
                exact_ready = true;
            }
            sample_index(exact, u)
        });
        tokens.push(token);
    }
    p_old.clear();
    p_old.extend(tokens.iter().map(|&a| e[a] * inv_s));
    let mut score = 0.0;
    for &a in tokens.iter() {
        score += weights[a];
    }
    let (first, ref_shift) = (&*logits, reference.shift);
    let log_ratio = |a: usize| ((first[a] - top) - (reference.logits[a] - ref_shift)) - log_gap;
    // `value(kl, logp, logq)` reads only `logp − logq`: the log-ratio, exact at the reference.
    let penalty_of = |i: usize| params.kl_penalty.value(kl, log_ratio(tokens[i]), 0.0);
    let mut kl_penalty = penalty_of(0);
    if params.kl_penalty != KlPenalty::Full {
        for i in 1..tokens.len() {
            kl_penalty += penalty_of(i);
        }
    }
    let reward = score - beta * kl_penalty; // the KL enters the reward only
    let with_value = params.vf_coef > 0.0;
    let v_old = *value;
    let (advantage, value_loss) = advantage_and_value_loss(reward, v_old, params);
    for &a in tokens.iter() {
        counts[a] += 1.0;
    }
    let edge = if advantage >= 0.0 { 1.0 + params.eps } else { 1.0 - params.eps };
    let mut clipped = 0;
    let mut frozen = false;
    // Whether the current logits are in `work` (else in `logits`).
    let mut in_work = false;
    for epoch in 0..params.ppo_epochs {
        // A clipped epoch changes no logit: from then on the policy and its ratio stay put.
        if frozen {
            if !with_value {
                break;
            }
        } else {
            // The first epoch's policy is the one that sampled: the ratio is 1 (the reference's
            // factors are each exactly 1).
            let mut ratio = 1.0;
            if epoch > 0 {
                for (&a, &p) in tokens.iter().zip(p_old.iter()) {
                    ratio *= (e[a] * inv_s) / p;
                }
                if (ratio - edge).abs() <= CLIP_MARGIN * edge {
                    let mut old = vec![0.0; tokens.len()];
                    ratio = ratio_exactly(logits, work, tokens, exact, &mut old);
                }
            }
            if is_clipped(advantage, ratio, params.eps) {
                clipped = params.ppo_epochs - epoch;
                frozen = true;
            } else {
                let step = params.lr * advantage * ratio;
                if epoch + 1 == params.ppo_epochs {
                    let src = if in_work { Some(&work[..]) } else { None };
                    update_row::<V, false>(isa, src, logits, e, counts, step, length, inv_s, 0.0);
                    in_work = false;
                } else {
                    // No logit moves by more than |step| L: a shift at or above the new maximum.
                    let reach = top + (step * length).abs();
                    let shift = reach + 4.0 * f64::EPSILON * (reach.abs() + (step * length).abs());
                    let src = if in_work { None } else { Some(&logits[..]) };
                    let (mut sum, new_top) =
                        update_row::<V, true>(isa, src, work, e, counts, step, length, inv_s, shift);
                    in_work = true;
                    top = new_top;
                    if !(top <= shift && top >= shift - SHIFT_SLACK) {
                        top = row_max::<V>(isa, work);
                        sum = exp_row::<V, false>(isa, work, top, &[], 0.0, e, block_sums).0;
                    }
                    inv_s = 1.0 / sum;
                }
            }
        }
        if with_value {
            *value = value_update(*value, v_old, reward, params);
        }
    }
    if in_work {
        logits.copy_from_slice(work);
    }
    for &a in tokens.iter() {
        counts[a] = 0.0;
    }
    BagOutcome {
        score,
        kl,
        kl_penalty,
        reward,
        clip_frac: f64::from(clipped) / f64::from(params.ppo_epochs),
        value_loss,
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn step_avx2(
    isa: Avx2Isa,
    logits: &mut [f64],
    reference: RefRow<'_>,
    weights: &[f64],
    uniforms: &[f64],
    beta: f64,
    params: &PpoParams,
    value: &mut f64,
    scratch: &mut RowBagScratch,
) -> BagOutcome {
    step_on::<Avx2>(isa, logits, reference, weights, uniforms, beta, params, value, scratch)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
fn step_avx512(
    isa: Avx512Isa,
    logits: &mut [f64],
    reference: RefRow<'_>,
    weights: &[f64],
    uniforms: &[f64],
    beta: f64,
    params: &PpoParams,
    value: &mut f64,
    scratch: &mut RowBagScratch,
) -> BagOutcome {
    step_on::<Avx512>(isa, logits, reference, weights, uniforms, beta, params, value, scratch)
}

/// [`bag_rlhf_step`](super::ppo::bag_rlhf_step) vectorised along the row on `simd`'s unit,
/// the tokens in [`RowBagScratch::tokens`]: the same tokens, the floats within rounding (see
/// the module's notes). Inputs must be valid, as for `bag_rlhf_step`.
#[allow(clippy::too_many_arguments)]
pub fn bag_rlhf_step_rows(
    simd: Simd,
    logits: &mut [f64],
    reference: RefRow<'_>,
    weights: &[f64],
    uniforms: &[f64],
    beta: f64,
    params: &PpoParams,
    value: &mut f64,
    scratch: &mut RowBagScratch,
) -> BagOutcome {
    match simd {
        Simd::Portable => step_on::<Portable>((), logits, reference, weights, uniforms, beta, params, value, scratch),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Avx2Isa` is minted only by `Simd::available`, after detecting AVX2 and
        // FMA on this CPU: `step_avx2`'s code can run here.
        Simd::Avx2(isa) => unsafe {
            step_avx2(isa, logits, reference, weights, uniforms, beta, params, value, scratch)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Avx512Isa` is minted only by `Simd::available`, after detecting
        // AVX-512F on this CPU: `step_avx512`'s code can run here.
        Simd::Avx512(isa) => unsafe {
            step_avx512(isa, logits, reference, weights, uniforms, beta, params, value, scratch)
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::ppo::{bag_rlhf_step, BagScratch};
    use crate::rng::Mt19937;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * (1.0 + b.abs())
    }

    #[test]
    fn a_row_step_takes_the_libm_steps_tokens_and_floats_within_rounding_on_every_unit() {
        let mut rng = Mt19937::from_seed(23);
        for case in 0..240 {
            let v = [2, 3, 8, 13, 64, 65, 300, 1024][case % 8];
            let length = [1, 4, 8, 33][case % 4];
            let logits: Vec<f64> = (0..v).map(|_| [6.0, 20.0][case % 2] * (rng.random() - 0.5)).collect();
            let reference: Vec<f64> = (0..v).map(|_| 6.0 * (rng.random() - 0.5)).collect();
            let mut ref_log_probs = vec![0.0; v];
            crate::kernels::softmax::log_softmax_row(&reference, &mut ref_log_probs);
            let weights: Vec<f64> = (0..v).map(|_| 4.0 * rng.random() - 2.0).collect();
            let uniforms: Vec<f64> = (0..length).map(|_| rng.random()).collect();
            let params = PpoParams::new(0.05 + 0.3 * rng.random(), [0.01, 0.1, 1.0][case % 3], 1 + (case % 6) as i64)
                .and_then(|p| p.completed(KlPenalty::NAMES[case % 4], [0.0, 0.0, 0.5][case % 3], 0.1))
                .unwrap();
            let (beta, v0) = (rng.random(), rng.random() - 0.5);
            let (mut libm, mut libm_value) = (logits.clone(), v0);
            let mut scratch = BagScratch::new(v, length).unwrap();
            let want = bag_rlhf_step(
                &mut libm,
                &ref_log_probs,
                &weights,
                &uniforms,
                beta,
                &params,
                &mut libm_value,
                &mut scratch,
            );
            let mut runs = Vec::new();
            for simd in Simd::available() {
                let (mut row, mut value) = (logits.clone(), v0);
                let mut rows = RowBagScratch::new(v, length).unwrap();
                let (shift, log_sum) =
                    crate::kernels::policy_row::log_normaliser_on(simd, &reference, &mut vec![0.0; v]);
                let got = bag_rlhf_step_rows(
                    simd,
                    &mut row,
                    RefRow { logits: &reference, shift, log_sum },
                    &weights,
                    &uniforms,
                    beta,
                    &params,
                    &mut value,
                    &mut rows,
                );
                assert_eq!(rows.tokens(), scratch.tokens(), "case {case}");
                assert_eq!(got.clip_frac, want.clip_frac, "case {case}");
                for (a, b) in [
                    (got.score, want.score),
                    (got.kl, want.kl),
                    (got.reward, want.reward),
                    (got.kl_penalty, want.kl_penalty),
                    (got.value_loss, want.value_loss),
                    (value, libm_value),
                ] {
                    assert!(close(a, b), "case {case}: {a} vs {b}");
                }
                assert!(row.iter().zip(&libm).all(|(&a, &b)| close(a, b)), "case {case}");
                assert!(rows.counts.iter().all(|&c| c == 0.0));
                runs.push((row.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), got.reward.to_bits()));
            }
            assert!(runs.iter().all(|run| *run == runs[0]), "case {case}: the units differ");
        }
    }
}
