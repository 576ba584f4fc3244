//! The toy RLHF pipeline's hot loops, exact to the pure-Python reference.
//!
//! Plain Rust with no Python in it: `cargo test` exercises it alone. Every public function
//! here has a twin of the same name in `rlhf_fast.reference`, and follows it operation for
//! operation (sums left to right, the same libm calls), so that a fused loop seeded like
//! `random.Random(seed)` draws the same tokens and lands on the same floats. Two hot loops
//! trade bit-identity for speed where SPEC's 1e-9 allows it and the error provably stays
//! small: the sweep lanes' vectorised `exp`/`ln` (`fastmath`) and the reward model's SGD
//! pass (`preferences`).
//! The PyO3 bindings live in `python/` behind the `python` feature.

pub mod best_of_n;
pub mod bradley_terry;
pub mod data;
pub mod dpo;
pub mod error;
pub mod fastmath;
pub mod grpo;
pub mod kl;
pub mod kl_control;
pub mod lanes;
pub mod methods_sweep;
pub mod mt_block;
pub mod ppo;
pub mod preferences;
pub mod rng;
pub mod sampling;
pub mod softmax;
pub mod sweep;
pub mod train;

#[cfg(feature = "python")]
mod python;

pub use error::{Error, Result};
