//! The toy RLHF pipeline's hot loops, exact to the pure-Python reference.
//!
//! Plain Rust with no Python in it: `cargo test` exercises it alone. Three layers, each
//! using only the ones below it, then the bindings:
//!
//! - `kernels/`: softmax, log-softmax, KL and its estimators, sampling, the logistic
//!   function, a policy table's statistics, vectorisable `exp`/`ln` and the SIMD vector types;
//! - `methods/`: one step of each method on one prompt's row (Bradley-Terry, PPO, the KL
//!   controllers, DPO, GRPO, Best-of-N; on token sequences, token PPO's rewards, GAE and
//!   losses, a process reward model, the Lagrangian) and the reward checks;
//! - `engines/`: whole runs, and the one sweep driver that runs any engine over a grid;
//! - `python/` (feature `python`): the PyO3 bindings, which convert and validate only.
//!
//! Beside them, `rng` (CPython's `random.Random`), `lesson` (the lesson's world) and
//! `error`. Every function has a twin of the same name in `rlhf_fast.reference`, in a module
//! of the same path, and follows it operation for operation (sums left to right, the same
//! libm calls), so that a fused loop seeded like `random.Random(seed)` draws the same tokens
//! and lands on the same floats. Two hot loops trade bit-identity for speed where SPEC's
//! 1e-9 allows it and the error provably stays small: the PPO lanes' vectorised `exp`/`ln`
//! (`kernels/fastmath.rs`) and the reward model's SGD pass
//! (`methods/bradley_terry/preferences.rs`). The large-vocabulary row kernels
//! (`kernels/rows.rs`) likewise use a fused-multiply-add `exp` and sums by vector lanes
//! (floats within 1e-12 of the reference, sampled tokens always the reference's).
//!
//! The crate's public surface is what follows; everything else is `pub(crate)`.

mod engines;
mod error;
mod kernels;
mod lesson;
mod methods;
mod rng;

#[cfg(feature = "python")]
mod python;

pub use engines::best_of_n::{best_of_n, BonEngine, BonOutcome, BonRun, BON_SUMMARY_FIELDS};
pub use engines::distill::{distill_reward_model, Features, Scored, Student, MAX_FEATURES};
pub use engines::dpo::{train_dpo, DpoEngine, DpoHistory, DpoRun, DPO_HISTORY_FIELDS, DPO_SUMMARY_FIELDS};
pub use engines::driver::{sweep, Engine, Monitor, RunsOut, SweepOutput};
pub use engines::grpo::{train_grpo, GrpoEngine, GrpoHistory, GrpoRunSpec, GRPO_HISTORY_FIELDS, GRPO_SUMMARY_FIELDS};
pub use engines::ppo::{train_rlhf, PpoEngine, PpoRun, RlhfHistory, PPO_HISTORY_FIELDS, PPO_SUMMARY_FIELDS};
pub use engines::process_reward::{train_process_reward_model, ProcessRewardFit, MAX_PRM_EPOCHS};
pub use engines::reward_model::{train_rm, RmEngine, RmRun};
pub use engines::safe_world_ppo::{
    SafeWorldPpoEngine, SafeWorldPpoRun, SAFE_WORLD_PPO_HISTORY_FIELDS, SAFE_WORLD_PPO_SUMMARY_FIELDS,
};
pub use engines::sequence_best_of_n::{
    SequenceBestOfNEngine, SequenceBestOfNRun, MAX_DRAWS, SEQUENCE_BON_SUMMARY_FIELDS,
};
pub use engines::sequence_dpo::{
    sequence_dpo_update, SequenceDpoEngine, SequenceDpoRun, SequenceDpoScratch, SequencePairRows,
    SEQUENCE_DPO_HISTORY_FIELDS, SEQUENCE_DPO_HISTORY_FIELDS_GOLD, SEQUENCE_DPO_SUMMARY_FIELDS,
};
pub use engines::sequence_world::{train_reward_model_rows, Rows};
pub use engines::token_ppo::{
    TokenPpoEngine, TokenPpoRun, MAX_BATCH_SIZE, TOKEN_PPO_HISTORY_FIELDS, TOKEN_PPO_SUMMARY_FIELDS,
};
pub use engines::verifier_grpo::{
    VerifierGrpoEngine, VerifierGrpoParams, VerifierGrpoRun, MAX_GRPO_BATCH, VERIFIER_GRPO_HISTORY_FIELDS,
    VERIFIER_GRPO_SUMMARY_FIELDS,
};
pub use engines::world::{
    train_reward_model, world_expectations, world_frontier, Expectations, LabelledPairs, RmSgd, WorldSpec,
};
pub use engines::world_best_of_n::{WorldBonEngine, WorldBonRun, WORLD_BON_SUMMARY_FIELDS};
pub use engines::world_dpo::{
    train_world_dpo, WorldDpoEngine, WorldDpoHistory, WorldDpoRun, WorldPairs, WORLD_DPO_HISTORY_FIELDS,
    WORLD_DPO_HISTORY_FIELDS_GOLD, WORLD_DPO_SUMMARY_FIELDS,
};
pub use engines::world_grpo::{
    train_world_grpo, WorldGrpoEngine, WorldGrpoHistory, WorldGrpoRunSpec, WORLD_GRPO_HISTORY_FIELDS,
    WORLD_GRPO_SUMMARY_FIELDS,
};
pub use engines::world_ppo::{
    train_world_rlhf, Table, WorldHistory, WorldPpoEngine, WorldPpoRun, WorldStats, WorldTables,
    WORLD_PPO_HISTORY_FIELDS, WORLD_PPO_SUMMARY_FIELDS,
};
pub use error::{
    at_most, default_max_memory, finite, finite_slice, fits_in_memory, non_negative, overflowed, positive,
    probabilities, py_float, Error, Result, OVERFLOW,
};
pub use kernels::kl::{kl, kl_k1, kl_k2, kl_k3, KlPenalty};
pub use kernels::logistic::{sigmoid, softplus};
pub use kernels::policy::{expected_score, policy_kl};
pub use kernels::rows::{n_chunks, run_rows, sample_margin, stream_add, stream_sum, RowJob, RowOut, CHUNK};
pub use kernels::sampling::sample_index;
pub use kernels::simd::Simd;
#[cfg(target_arch = "x86_64")]
pub use kernels::simd::{Avx2Isa, Avx512Isa};
pub use kernels::softmax::{log_softmax, log_softmax_row, softmax, softmax_row};
pub use lesson::{make_dataset, make_pair, BAD_WORDS, GOOD_WORDS, PROMPTS, VOCAB};
pub use methods::best_of_n::{bag_gold, bon_distribution, bon_exact, bon_kl_analytic, draw_bag};
pub use methods::bradley_terry::{bag, dot, pairwise_accuracy, rm_train_step, rm_update, Bag, BagEntry, Preferences};
pub use methods::dpo::{
    bag_dpo_update, dpo_step_metrics, dpo_update, pair_label, BagDpoScratch, DpoOutcome, DpoPairs, DpoParams,
    DpoScratch, LossType,
};
pub use methods::grpo::{bag_grpo_update, BagGrpoScratch, MAX_GROUP_TOKENS};
pub use methods::grpo::{grpo_step, grpo_update, GrpoOutcome, GrpoParams, GrpoScratch, ScaleRewards, GROUP_STD_EPS};
pub use methods::kl_control::KlController;
pub use methods::lagrangian::{combined_weights, LagrangeMultiplier, LagrangeParams, MAX_COST_WINDOW};
pub use methods::ppo::{
    bag_rlhf_step, clipped_surrogate, clipped_surrogate_grad, rlhf_step, value_update, BagOutcome, BagScratch,
    PpoParams, StepOutcome, StepScratch,
};
pub use methods::reward_checks::check_not_length_only;
pub use methods::sequence_stats::{prompt_stats, sequence_stats, PromptStats};
pub use methods::world::gao::fit_gao;
pub use methods::world::labels::{judge_labels, labeller_labels, JudgeParams};
pub use methods::world::reward_model::rm_pair_step;
pub use methods::world::scores::{bag_score, ValueTable};
pub use methods::world::tables::{judge_token_values, world_tables, Tables};
pub use rng::{seed_key, Mt19937};
