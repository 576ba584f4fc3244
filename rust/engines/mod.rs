//! The top layer of the core: whole runs, and sweeps of many runs.
//!
//! Each engine module holds a method's single-run loop (`train_rlhf`, `train_rm`,
//! `train_dpo`, `train_grpo`, `best_of_n`, `train_world_rlhf`, `train_world_dpo`,
//! `train_world_grpo`) and its sweep
//! [`driver::Engine`], which the one [`driver::sweep`] runs over a grid on the rayon pool. Engines build on
//! [`crate::methods`] and [`crate::kernels`].

pub mod best_of_n;
pub mod distill;
pub mod dpo;
pub mod driver;
pub mod grpo;
pub mod ppo;
mod ppo_lanes;
pub mod process_reward;
pub mod reward_model;
pub mod safe_world_ppo;
pub mod sequence_best_of_n;
mod sequence_common;
pub mod sequence_dpo;
pub mod sequence_world;
mod test_worlds;
pub mod token_ppo;
pub mod verifier_grpo;
pub mod world;
pub mod world_best_of_n;
pub mod world_dpo;
pub mod world_grpo;
pub mod world_ppo;
