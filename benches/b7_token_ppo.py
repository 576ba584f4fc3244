"""B7 (issue 11): token-level PPO as TRL runs it, 16 prompts x 512 tokens x max_len 16, batch 64, 64 runs x 200 steps.

Contenders, in one process, taking turns, best of `--repeats`:
  rust       sweep_token_ppo_arrays (rlhf_fast.token_ppo): the 64 runs on the token PPO engine,
             every core.
  reference  rlhf_fast.reference.engines.token_ppo.sweep_token_ppo, one run of `--ref-steps`
             steps (it is slow); its steps/s is extrapolated per step. The Rust engine's run with
             the same seed and steps must end with the same logits and history (within 1e-9,
             content lengths and EOS counts exactly: the same tokens): asserted.
  numpy      benches/numpy_token_ppo.py: all runs in lock-step as [64, 16, 16, 512] arrays; the
             same algorithm, NumPy's own random stream. Asserted: its update on a stored batch is
             the reference's (1e-9), and its runs end where the engine's do in distribution (each
             final exact statistic's mean over runs within 5 standard errors of the engine's).
The world is a SequenceWorld (the reference's content length uniform on 0..16), the proxy a
linear reward model trained on 3,000 of its preferences; every run kl_coef 0.05 and SGD at
`--lr` (TRL's other defaults: gamma 1, lam 0.95, clip 0.2, value clip 0.2, vf_coef 0.1, k1,
4 PPO epochs, 1 minibatch), one seed each; every contender records TRL's metrics every
`--record-every` steps.

    python benches/b7_token_ppo.py [--runs 64] [--steps 200] [--quick]
"""

from __future__ import annotations

import argparse
import os

import numpy as np

import numpy_token_ppo
import rlhf_fast as rl
from _common import interleaved, rate, table
from rlhf_fast.reference.engines import token_ppo as reference_engine
from rlhf_fast.token_ppo import sweep_token_ppo_arrays

KL_COEF = 0.05


def check_numpy_update(arrays, seed: int = 0) -> None:
    """The NumPy peer's update on a stored batch (old and current policies apart, every clip
    branch taken) is the engine's, float for float within 1e-9."""
    from rlhf_fast import _core

    ref_logits = arrays[0]
    n_prompts, max_len, vocab = ref_logits.shape
    rng = np.random.default_rng(seed)
    old_theta = ref_logits + rng.normal(size=ref_logits.shape) * 0.5
    theta = old_theta + rng.normal(size=ref_logits.shape) * 0.3
    old_values = rng.normal(size=(n_prompts, max_len))
    values = old_values + rng.normal(size=old_values.shape) * 0.3
    batch = 64
    prompts = rng.integers(0, n_prompts, size=batch)
    lengths = rng.integers(1, max_len + 1, size=batch)
    tokens = rng.integers(1, vocab, size=(batch, max_len))
    positions = np.arange(max_len)
    valid = positions < lengths[:, None]
    ends = (lengths < max_len) | (rng.random(batch) < 0.8)  # a response without EOS is max_len long
    tokens[np.arange(batch)[ends], lengths[ends] - 1] = 0
    stored = np.where(valid, tokens, -1)
    scores = rng.normal(size=batch) * 2
    ours = _core.token_ppo_batch_terms(ref_logits, old_theta, theta, old_values, values, prompts, stored, scores,
                                       kl_coef=KL_COEF)
    chosen = np.where(valid, tokens, 0)
    old_logp = numpy_token_ppo.log_softmax(old_theta)[prompts[:, None], positions, chosen] * valid
    ref_logp = numpy_token_ppo.log_softmax(ref_logits)[prompts[:, None], positions, chosen] * valid
    old_v = old_values[prompts[:, None], positions] * valid
    _, _, _, advantages, returns = numpy_token_ppo.rollout_terms(
        old_logp[None], ref_logp[None], old_v[None], valid[None], scores[None], np.array([KL_COEF]), 1.0, 0.95, "k1")
    np.testing.assert_allclose(advantages[0], ours["advantages"], rtol=1e-9, atol=1e-9)
    stats, policy_grad, grad_values = numpy_token_ppo.batch_update(
        theta[None], values[None], prompts[None], chosen[None], valid[None], old_logp[None], old_v[None], advantages,
        returns, cliprange=0.2, cliprange_value=0.2, vf_coef=0.1)
    names = ("approxkl", "pg_clipfrac", "pg_loss", "vf_loss", "vf_clipfrac", "entropy_mean", "ratio_mean")
    np.testing.assert_allclose([s[0] for s in stats], [ours[k] for k in names], rtol=1e-9, atol=1e-12)
    assert 0 < ours["pg_clipfrac"] < 1 and 0 < ours["vf_clipfrac"] < 1, "every clip branch taken"
    np.testing.assert_allclose(numpy_token_ppo.dense_gradient(*policy_grad)[0], ours["grad_theta"], rtol=1e-9,
                               atol=1e-12)
    np.testing.assert_allclose(grad_values[0], ours["grad_values"], rtol=1e-9, atol=1e-12)


def check_same_distribution(rust, numpy) -> list[str]:
    """Each final exact statistic's mean over runs, the engine's and NumPy's within 5 standard
    errors of their difference; returns the table's lines."""
    lines = []
    for i, name in enumerate(("final_proxy_score", "final_gold_score", "final_kl", "final_length")):
        a, b = rust.runs[name].reshape(-1), numpy["summary"][:, i]
        se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
        gap = abs(a.mean() - b.mean())
        assert gap <= 5 * se + 1e-9, f"{name}: engine {a.mean()} vs NumPy {b.mean()} (standard error {se})"
        lines.append(f"  {name:<18} engine {a.mean():.4f}  NumPy {b.mean():.4f}  gap {gap / se if se else 0:.1f} SE")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=64, help="runs (default 64)")
    parser.add_argument("--steps", type=int, default=200, help="PPO steps per run (default 200)")
    parser.add_argument("--lr", type=float, default=5.0, help="SGD learning rate (default 5)")
    parser.add_argument("--record-every", type=int, default=10, help="steps between records (default 10)")
    parser.add_argument("--ref-steps", type=int, default=3, help="steps of the reference's one run (default 3)")
    parser.add_argument("--numpy-steps", type=int, default=None,
                        help="steps of NumPy's runs, its steps/s extrapolated per step (default: --steps)")
    parser.add_argument("--repeats", type=int, default=1, help="best of this many rounds (default 1)")
    parser.add_argument("--quick", action="store_true", help="8 runs, 10 steps, 1 reference step")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.steps, args.ref_steps, args.record_every = 8, 10, 1, 5
    numpy_steps = args.steps if args.numpy_steps is None else args.numpy_steps

    world = rl.SequenceWorld(n_prompts=16, vocab=512, max_len=16, seed=0)
    rm = rl.train_sequence_reward_model(world, world.preferences(3000, seed=1))
    arrays = (world.ref_logits, rm.weights, rm.prompt_bias(world.n_prompts), rm.length_weight, world.gold_token,
              world.gold_offset, world.count_once)
    check_numpy_update(arrays)

    def rust():
        return sweep_token_ppo_arrays(*arrays, steps=args.steps, kl_coef=KL_COEF, lr=args.lr, seeds=args.runs,
                                      record_every=args.record_every)

    def reference():
        return reference_engine.sweep_token_ppo(*arrays, args.ref_steps, [(0, KL_COEF, args.lr)], record_every=1)

    def numpy():
        return numpy_token_ppo.token_ppo(*arrays, steps=numpy_steps, kl_coef=np.full(args.runs, KL_COEF),
                                         lr=np.full(args.runs, args.lr), record_every=args.record_every)

    best, results = interleaved({"rust": rust, "numpy": numpy, "reference": reference}, args.repeats)
    check = sweep_token_ppo_arrays(*arrays, steps=args.ref_steps, kl_coef=KL_COEF, lr=args.lr, seeds=[0],
                                   record_every=1)
    theirs = results["reference"]
    np.testing.assert_allclose(check.final_theta.reshape(-1), np.asarray(theirs["final_params"]).reshape(-1),
                               rtol=1e-9, atol=1e-9)
    fields = list(theirs["history_fields"])
    ours_history = np.stack([getattr(check, f).reshape(-1) for f in fields], axis=-1)
    exact = [fields.index(f) for f in ("val_num_eos_tokens", "mean_length")]
    np.testing.assert_array_equal(ours_history[:, exact], np.asarray(theirs["history"])[0].T[:, exact])
    np.testing.assert_allclose(ours_history, np.asarray(theirs["history"])[0].T, rtol=1e-9, atol=1e-9)
    same_steps = results["rust"] if numpy_steps == args.steps else sweep_token_ppo_arrays(
        *arrays, steps=numpy_steps, kl_coef=KL_COEF, lr=args.lr, seeds=args.runs, record_every=0)
    lines = check_same_distribution(same_steps, results["numpy"])

    steps = {"rust": args.runs * args.steps, "numpy": args.runs * numpy_steps, "reference": args.ref_steps}
    per_second = {name: steps[name] / best[name] for name in best}
    print(f"B7: {args.runs} runs x {args.steps} token PPO steps, 16 prompts x 512 tokens x max_len 16, batch 64, "
          f"lr {args.lr:g}, kl_coef {KL_COEF}; records every {args.record_every}; best of {args.repeats}; "
          f"{os.cpu_count()} cores")
    table(["contender", "steps", "seconds", "steps/s", "rust is x faster"],
          [[name, f"{steps[name]:,}", f"{best[name]:.3f}", rate(per_second[name]),
            f"{per_second['rust'] / per_second[name]:.1f}"] for name in ("rust", "numpy", "reference")])
    print(f"after {numpy_steps} steps, the final policies' exact statistics, means over the {args.runs} runs "
          "(the same distribution: within 5 SE):")
    print("\n".join(lines))
    print("targets: >= 100x the reference, >= 10x NumPy; the reference's run ends with the Rust run's logits and "
          "history (1e-9, the same tokens); NumPy's update is the engine's (1e-9)")


if __name__ == "__main__":
    main()
