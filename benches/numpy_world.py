"""PPO in a world with NumPy, vectorised across runs: the NumPy peer of benchmark B6.

The same work per step as the Rust engine (``rust/engines/world_ppo.rs``): every run draws a
prompt and a response of ``L`` tokens from its policy's row, scores it with the proxy, takes
the ``k1`` penalty summed over the tokens, and runs ``ppo_epochs`` epochs of the clipped
surrogate with a per-prompt value baseline; every ``record_every`` steps the exact means over
prompts of proxy, gold and KL. NumPy's own random stream, so the numbers are the engine's in
distribution, not bit for bit.
"""

from __future__ import annotations

import numpy as np


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def world_ppo(world, weights, betas, steps, *, eps=0.2, lr=0.05, ppo_epochs=4, vf_coef=0.0,
              cliprange_value=0.2, record_every=0, seed=0):
    """``len(betas)`` runs in lock-step; returns ``(final_logits [R, P, V], records)``."""
    rng = np.random.default_rng(seed)
    n_runs, P, V, L = len(betas), world.n_prompts, world.vocab, world.response_len
    beta = np.asarray(betas, dtype=np.float64)
    theta = np.repeat(world.ref_logits[None], n_runs, axis=0)
    ref_lp = world.ref_log_probs
    gold = world.gold_seen if world.gold == "count_once" else world.gold_token
    value = np.zeros((n_runs, P))
    runs = np.arange(n_runs)
    records = []
    for t in range(steps):
        x = rng.integers(P, size=n_runs)
        rows = theta[runs, x]
        p_old = _softmax(rows)
        cdf = np.cumsum(p_old, axis=-1)
        u = rng.random((n_runs, L)) * cdf[:, -1:]
        tokens = np.minimum((cdf[:, None, :] <= u[:, :, None]).sum(axis=-1), V - 1)
        counts = np.zeros((n_runs, V))
        np.add.at(counts, (runs[:, None], tokens), 1.0)
        score = weights[tokens].sum(axis=1)
        p_old_y = np.take_along_axis(p_old, tokens, axis=1)
        penalty = (np.log(p_old_y) - ref_lp[x[:, None], tokens]).sum(axis=1)
        reward = score - beta * penalty
        v_old = value[runs, x]
        advantage = reward - v_old if vf_coef > 0 else reward
        v = v_old.copy()
        for _ in range(ppo_epochs):
            p = _softmax(rows)
            ratio = np.prod(np.take_along_axis(p, tokens, axis=1) / p_old_y, axis=1)
            clipped = ((advantage >= 0) & (ratio > 1 + eps)) | ((advantage < 0) & (ratio < 1 - eps))
            step = np.where(clipped, 0.0, lr * advantage * ratio)
            rows = rows + step[:, None] * (counts - L * p)
            if vf_coef > 0:
                v_clipped = v_old + np.clip(v - v_old, -cliprange_value, cliprange_value)
                grad = np.where((v - reward) ** 2 >= (v_clipped - reward) ** 2, v - reward, v_clipped - reward)
                v = v - lr * vf_coef * grad
        theta[runs, x] = rows
        value[runs, x] = v
        if record_every and (t + 1) % record_every == 0:
            pi = _softmax(theta)
            log_pi = np.log(pi)
            kl = L * (pi * (log_pi - ref_lp[None])).sum(axis=-1).mean(axis=-1)
            proxy = L * (pi * weights).sum(axis=-1).mean(axis=-1)
            if world.gold == "count_once":
                seen = -np.expm1(L * np.log1p(-np.minimum(pi, 1.0)))
                gold_score = (seen * gold[None]).sum(axis=-1).mean(axis=-1) - world.repeat_penalty * L
            else:
                gold_score = L * (pi * gold[None]).sum(axis=-1).mean(axis=-1)
            records.append((t, proxy, gold_score, kl))
    return theta, records
