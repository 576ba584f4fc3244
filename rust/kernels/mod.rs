//! The bottom layer: numerical kernels every method shares, knowing nothing of RLHF.
//!
//! Rows of logits in, probabilities, log-probabilities, divergences and samples out
//! ([`softmax`], [`kl`], [`sampling`], [`logistic`], [`policy`]), the vectorisable `exp`/`ln`
//! ([`fastmath`]) and the vector types the lane engine computes with ([`simd`]); [`rows`]
//! runs softmax, KL, sampling and PPO's gradient over batches of large-vocabulary rows.

pub mod fastmath;
pub mod kl;
pub mod logistic;
pub mod policy;
pub mod policy_row;
pub mod rows;
pub mod sampling;
pub mod simd;
pub mod softmax;
