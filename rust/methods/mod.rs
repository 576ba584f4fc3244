//! The middle layer: what each RLHF method computes in one step, on one prompt's row.
//!
//! A method module knows its loss, its gradient and its hyper-parameters; it draws nothing
//! and loops over nothing longer than a row. It builds on [`crate::kernels`] only: no method
//! imports another (what two methods share lives in the kernels). Whole runs and sweeps are
//! [`crate::engines`]'.

pub mod best_of_n;
pub mod bradley_terry;
pub mod dpo;
pub mod grpo;
pub mod kl_control;
pub mod lagrangian;
pub mod ppo;
pub mod ppo_rows;
pub mod process_reward;
pub mod reward_checks;
pub mod sequence_stats;
pub mod token_ppo;
pub mod verifier_grpo;
pub mod world;
pub mod world_stats;
