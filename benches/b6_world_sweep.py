"""B6 (issue 10): a world sweep, 16 prompts x 4,096 tokens x responses of 8, 64 runs x 1,000 PPO steps.

Contenders, in one process, taking turns, best of `--repeats`:
  rust       rl.sweep_rlhf(rm, world=world, ...): the 64 runs on the world engine, every core.
  reference  rlhf_fast.reference.engines.world_ppo.sweep_world_rlhf, one run of `--ref-steps`
             steps (it is slow); its steps/s is extrapolated per step. The Rust engine's run with
             the same seed and steps must end with the same logits (within 1e-9): asserted.
  numpy      benches/numpy_world.py: all runs in lock-step as [64, 16, 4096] arrays; the same work,
             NumPy's own random stream.
Every contender records the exact proxy, gold and KL every `--record-every` steps. Beside them,
the machine's memory bandwidth (a streaming sum over 512 MiB, timed in the same run), for scale.

    python benches/b6_world_sweep.py [--runs 64] [--steps 1000] [--vocab 4096] [--quick]
"""

from __future__ import annotations

import argparse

import numpy as np

import numpy_world
import rlhf_fast as rl
from _common import interleaved, rate, table, timed
from rlhf_fast.reference.engines import world_ppo as reference_world

PPO = dict(eps=0.2, lr=0.05, ppo_epochs=4, vf_coef=0.0, cliprange_value=0.2)


def bandwidth(nbytes: int = 512 << 20) -> float:
    """Bytes per second of a streaming sum over ``nbytes`` of float64, best of three."""
    data = np.ones(nbytes // 8)
    data.sum()
    return nbytes / min(timed(data.sum)[0] for _ in range(3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=64, help="runs (default 64)")
    parser.add_argument("--steps", type=int, default=1000, help="PPO steps per run (default 1000)")
    parser.add_argument("--vocab", type=int, default=4096, help="tokens (default 4096)")
    parser.add_argument("--record-every", type=int, default=10, help="steps between records (default 10)")
    parser.add_argument("--ref-steps", type=int, default=20, help="steps of the reference's one run (default 20)")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many rounds (default 2)")
    parser.add_argument("--quick", action="store_true", help="8 runs, 50 steps, 512 tokens, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.steps, args.vocab, args.ref_steps, args.repeats = 8, 50, 512, 5, 1

    world = rl.World(n_prompts=16, vocab=args.vocab, response_len=8, seed=0)
    rm = rl.train_reward_model(world, world.preferences(3000, seed=1))
    betas = np.linspace(0.0, 0.2, args.runs)  # one run per beta, seed 0 each: 64 different runs
    gold = world.gold_seen
    run = (0, PPO["eps"], PPO["lr"], PPO["ppo_epochs"], 0.0, "k1", PPO["vf_coef"], PPO["cliprange_value"])

    def rust():
        return rl.sweep_rlhf(rm, world=world, betas=list(betas), seeds=[0], steps=args.steps, kl_penalty="k1",
                             record_every=args.record_every, **PPO)

    def reference():
        return reference_world.sweep_world_rlhf(world.ref_logits, rm.weights, gold, True, world.response_len,
                                                args.ref_steps, [run], record_every=args.record_every)

    def numpy():
        return numpy_world.world_ppo(world, rm.weights, betas, args.steps, record_every=args.record_every, **PPO)

    best, results = interleaved({"rust": rust, "numpy": numpy, "reference": reference}, args.repeats)
    check = rl.sweep_rlhf(rm, world=world, betas=[0.0], seeds=[0], steps=args.ref_steps, kl_penalty="k1",
                          record_every=args.record_every, **PPO)
    np.testing.assert_allclose(check.final_theta.reshape(-1), np.asarray(results["reference"]["final_params"]).reshape(-1),
                               rtol=1e-9, atol=1e-9)

    steps = {"rust": args.runs * args.steps, "numpy": args.runs * args.steps, "reference": args.ref_steps}
    per_second = {name: steps[name] / best[name] for name in best}
    row_bytes = world.vocab * 8
    print(f"B6: {args.runs} runs x {args.steps} PPO steps, 16 prompts x {world.vocab} tokens, responses of 8, "
          f"records every {args.record_every}; best of {args.repeats}; machine memory bandwidth "
          f"{bandwidth() / 1e9:.1f} GB/s (a step touches a {row_bytes / 1024:.0f} KiB row a few times: cache, not DRAM)")
    table(["contender", "steps", "seconds", "steps/s", "rust is x faster"],
          [[name, f"{steps[name]:,}", f"{best[name]:.3f}", rate(per_second[name]),
            f"{per_second['rust'] / per_second[name]:.1f}"] for name in ("rust", "numpy", "reference")])
    print(f"targets: >= 100x the reference, >= 10x NumPy; the reference's run ends with the Rust run's logits (1e-9)")


if __name__ == "__main__":
    main()
