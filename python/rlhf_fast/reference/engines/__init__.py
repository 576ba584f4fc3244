"""Twin of rust/engines/: whole runs of each method, one at a time or a sweep of many.

Each module has the method's single-run loop (``train_rlhf``, ``train_rm``, ``train_dpo``,
``train_grpo``, ``best_of_n``: tables of logits in ``PROMPTS`` order, weights in ``VOCAB``
order, seed keys; nothing checked, the callers have; and ``train_world_rlhf``, PPO in a
world of :mod:`rlhf_fast.worlds`, on its checked tables) and its sweep engine (``sweep_*``,
which checks its inputs and returns the sweep contract's arrays through :mod:`.driver`).

``rust/engines/ppo_lanes.rs`` runs eight PPO runs in lock-step in SIMD lanes; its twin is
:func:`.ppo.train_rlhf`, run by run.
"""
