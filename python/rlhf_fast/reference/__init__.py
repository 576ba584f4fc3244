"""The lesson's toy RLHF pipeline in plain, readable Python: the oracle for every test.

Synthetic preferences -> Bradley-Terry reward model -> PPO against the reward model with
a KL penalty to a frozen reference, and the methods the lesson sets against it: DPO (and
its IPO / hinge / robust / label-smoothed variants), GRPO and Best-of-N, exactly as
docs/METHODS.md specifies them. Every function here has a Rust twin in ``rlhf_fast`` that
must return the same numbers for the same inputs and seeds (SPEC sections 2 and 3).

The package mirrors ``rust/`` file for file, with the Rust names and argument order (minus
out-buffers and scratch, returning what Rust writes), so each module can be read beside its
Rust twin: :mod:`.lesson` and :mod:`.rng`; :mod:`.kernels` (softmax, logistic, KL,
sampling, a policy's exact statistics); :mod:`.methods` (one step of Bradley-Terry, PPO,
DPO, GRPO, Best-of-N); :mod:`.engines` (whole runs and sweeps of them); and :mod:`.api`, the
lesson's functions as the lesson calls them (dicts in, arguments checked), the twin of the
PyO3 bindings, whose names this package exports. Argument checks live in
:mod:`rlhf_fast._checks`.

Floats are summed left to right in explicit loops, never with ``sum()``: Python 3.12
changed what ``sum()`` of floats returns, and the compiled core follows these loops
operation for operation.
"""

# ``import X as X``: public beyond ``__all__`` (which keeps to the lesson's names), the names
# of the options and of the records, for the tests and the front-ends.
from .api import (
    bag,
    best_of_n,
    clipped_surrogate,
    clipped_surrogate_grad,
    dot,
    dpo_step,
    expected_score,
    grpo_step,
    init_policy,
    kl,
    kl_k1,
    kl_k2,
    kl_k3,
    log_softmax,
    make_dataset,
    make_pair,
    pairs_to_rows,
    pairwise_accuracy,
    policy_kl,
    policy_logits,
    rlhf_step,
    rm_train_step,
    rows_to_pairs,
    sample,
    seed_key,
    sigmoid,
    softmax,
    train_dpo,
    train_grpo,
    train_rlhf,
    train_rm,
)
from .engines.dpo import DPO_HISTORY_KEYS as DPO_HISTORY_KEYS
from .engines.driver import KLWarning
from .engines.grpo import GRPO_HISTORY_KEYS as GRPO_HISTORY_KEYS
from .engines.ppo import HISTORY_KEYS as HISTORY_KEYS
from .kernels.kl import KL_PENALTIES as KL_PENALTIES
from .lesson import BAD_WORDS, GOOD_WORDS, KL_TARGET, KL_THRESHOLD, PROMPTS, VOCAB
from .methods.bradley_terry.preferences import PreferenceSet
from .methods.dpo import DPO_LOSS_TYPES as DPO_LOSS_TYPES
from .methods.grpo import SCALE_REWARDS as SCALE_REWARDS
from .methods.kl_control import KL_CONTROLLERS as KL_CONTROLLERS
from .methods.kl_control import (
    AdaptiveKLController,
    DoublingKLController,
    FixedKLController,
    make_kl_controller,
)

__all__ = [
    "PROMPTS",
    "GOOD_WORDS",
    "BAD_WORDS",
    "VOCAB",
    "KL_TARGET",
    "KL_THRESHOLD",
    "KLWarning",
    "seed_key",
    "make_pair",
    "make_dataset",
    "PreferenceSet",
    "pairs_to_rows",
    "rows_to_pairs",
    "bag",
    "dot",
    "sigmoid",
    "rm_train_step",
    "train_rm",
    "pairwise_accuracy",
    "init_policy",
    "policy_logits",
    "softmax",
    "log_softmax",
    "kl",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "sample",
    "clipped_surrogate",
    "clipped_surrogate_grad",
    "rlhf_step",
    "train_rlhf",
    "FixedKLController",
    "AdaptiveKLController",
    "DoublingKLController",
    "make_kl_controller",
    "dpo_step",
    "train_dpo",
    "grpo_step",
    "train_grpo",
    "best_of_n",
    "expected_score",
    "policy_kl",
]
