"""Twin of rust/methods/: one step (or one exact computation) of each method of the lesson.

The Bradley-Terry reward model (:mod:`.bradley_terry`), PPO and its KL controllers
(:mod:`.ppo`, :mod:`.kl_control`), DPO (:mod:`.dpo`), GRPO (:mod:`.grpo`) and Best-of-N
(:mod:`.best_of_n`), each on one prompt's row of logits, as docs/METHODS.md specifies them,
and the reward models no method may optimise against (:mod:`.reward_checks`). The loops that
run them over a whole training run are in :mod:`rlhf_fast.reference.engines`.
"""
