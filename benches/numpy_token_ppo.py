"""Token-level PPO as TRL runs it, with NumPy, vectorised across runs: the NumPy peer of B7.

The same algorithm as the Rust engine (``rust/engines/token_ppo.rs``, docs/METHODS.md §11),
every run in lock-step with the runs as the leading axis of every array: per step each run
draws ``batch_size`` prompts and a response to each, token by token from its table of logits
``theta [R, P, L, V]`` until EOS (token 0) or ``max_len`` (a row depends on the prompt and the
position only, so all positions are drawn at once and cut at the first EOS); per-token
rewards ``-kl_coef kl_t`` with the score on the last real token, GAE, returns, advantages
whitened over each run's valid tokens; ``num_ppo_epochs`` epochs of ``num_mini_batches``
plain SGD steps on TRL's clipped ``pg + vf_coef vf``. Each update takes the softmax of the
whole table (every state's entropy enters ``policy/entropy_avg``) and the policy gradient
per state, ``-C_s pi_s`` plus ``coef`` at each chosen token (``C_s`` the sum of the state's
token coefficients): the per-token gradient ``coef ([v = a] - pi_v)`` summed. NumPy's own
random stream, so the numbers are the engine's in distribution, not bit for bit; the update
itself (:func:`batch_update`) is the engine's to rounding, which the bench checks.
"""

from __future__ import annotations

import numpy as np

HISTORY_FIELDS = (
    "objective_kl", "objective_entropy", "objective_non_score_reward", "objective_rlhf_reward", "objective_scores",
    "policy_approxkl_avg", "policy_clipfrac_avg", "loss_policy_avg", "loss_value_avg", "val_clipfrac_avg",
    "policy_entropy_avg", "val_ratio", "val_ratio_var", "val_num_eos_tokens", "mean_length", "gold_score",
)


def log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax_and_log_softmax(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(softmax, log_softmax)`` over the last axis, one ``exp`` per entry, in place where it can."""
    logp = z - z.max(axis=-1, keepdims=True)
    p = np.exp(logp)
    total = p.sum(axis=-1, keepdims=True)
    p /= total
    logp -= np.log(total)
    return p, logp


def sample_rows(cdf: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling, ``sample_index``'s rule: for each draw ``u[i]`` the first index of
    ``cdf[rows[i]]`` (running sums, ``[n, V]``) above it, the last if none is; by bisection, all
    draws at once."""
    v = cdf.shape[1]
    flat = cdf.reshape(-1)
    lo = np.zeros(u.shape, dtype=np.int64)
    hi = np.full(u.shape, v - 1, dtype=np.int64)
    base = rows * v
    while (lo < hi).any():
        mid = (lo + hi) >> 1
        above = flat[base + mid] > u
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid + 1)
    return lo


def gae(rewards: np.ndarray, values: np.ndarray, gamma: float, lam: float) -> np.ndarray:
    """Advantages over the last axis, ``rewards`` and ``values`` zero past each response's end."""
    advantages = np.zeros_like(rewards)
    last = np.zeros(rewards.shape[:-1])
    length = rewards.shape[-1]
    for t in range(length - 1, -1, -1):
        next_value = values[..., t + 1] if t + 1 < length else 0.0
        last = rewards[..., t] + gamma * next_value - values[..., t] + gamma * lam * last
        advantages[..., t] = last
    return advantages


def rollout_terms(old_logp, ref_logp, old_values, valid, score, kl_coef, gamma, lam, kl_estimator):
    """Per-token KL, rewards, raw and whitened advantages and returns of ``[R, B, L]`` rollouts
    (``score [R, B]`` on each response's last real token, ``kl_coef [R]``)."""
    logr = (ref_logp - old_logp) * valid
    kl = -logr if kl_estimator == "k1" else np.expm1(logr) - logr
    rewards = -kl_coef[:, None, None] * kl
    last = valid.sum(axis=-1) - 1
    np.put_along_axis(rewards, last[..., None], np.take_along_axis(rewards, last[..., None], axis=-1)
                      + score[..., None], axis=-1)
    raw = gae(rewards, old_values, gamma, lam)
    returns = (raw + old_values) * valid
    n = valid.sum(axis=(1, 2))
    mean = (raw * valid).sum(axis=(1, 2)) / n
    var = (((raw - mean[:, None, None]) * valid) ** 2).sum(axis=(1, 2)) / (n - 1)
    advantages = (raw - mean[:, None, None]) / np.sqrt(var + 1e-8)[:, None, None] * valid
    return kl, rewards, raw, advantages, returns


def batch_update(theta, values, prompts, tokens, valid, old_logp, old_values, advantages, returns, *, cliprange,
                 cliprange_value, vf_coef):
    """TRL's loss on the minibatch ``[R, M, L]`` under ``theta [R, P, L, V]`` and ``values
    [R, P, L]``: ``(stats, policy_grad, grad_values)``, the stats per run in the engine's order
    ``(approxkl, pg_clipfrac, pg_loss, vf_loss, vf_clipfrac, entropy, ratio)``, the policy's
    gradient as ``(pi, coef_sum [R, P, L], flat_index, coef)``: ``-coef_sum pi`` plus each
    token's ``coef`` at ``theta.flat[flat_index]`` (:func:`dense_gradient`)."""
    n_runs, n_prompts, max_len, vocab = theta.shape
    pi, logpi = softmax_and_log_softmax(theta)
    entropy = -np.einsum("...v,...v->...", pi, logpi)  # [R, P, L]
    runs = np.arange(n_runs)[:, None, None]
    positions = np.arange(max_len)[None, None, :]
    chosen = np.where(valid, tokens, 0)
    logp = logpi[runs, prompts[..., None], positions, chosen]
    n_valid = valid.sum(axis=(1, 2))[:, None, None]
    logratio = (logp - old_logp) * valid
    ratio = np.exp(logratio)
    unclipped = -advantages * ratio
    clipped = -advantages * np.clip(ratio, 1.0 - cliprange, 1.0 + cliprange)
    pg_clipped = (clipped > unclipped) & valid
    pg = np.where(pg_clipped, clipped, unclipped) * valid
    coef = np.where(pg_clipped, 0.0, unclipped) * valid / n_valid
    v = values[runs, prompts[..., None], positions]
    v_clip = np.clip(v, old_values - cliprange_value, old_values + cliprange_value)
    vf_unclipped = (v - returns) ** 2
    vf_clipped_loss = (v_clip - returns) ** 2
    vf_clipped = (vf_clipped_loss > vf_unclipped) & valid
    vf = np.where(vf_clipped, vf_clipped_loss, vf_unclipped) * valid
    v_slope = np.where(vf_clipped, 0.0, 2.0 * (v - returns)) * valid
    n_states = n_prompts * max_len
    flat_state = (runs * n_states + prompts[..., None] * max_len + positions).reshape(-1)
    coef = coef.reshape(-1)
    coef_sum = np.bincount(flat_state, coef, n_runs * n_states).reshape(n_runs, n_prompts, max_len)
    grad_values = np.bincount(flat_state, (vf_coef * 0.5 * v_slope / n_valid).reshape(-1),
                              n_runs * n_states).reshape(values.shape)
    n_valid = n_valid[:, 0, 0]
    stats = (
        0.5 * (logratio**2).mean(axis=(1, 2)),
        pg_clipped.sum(axis=(1, 2)) / n_valid,
        pg.sum(axis=(1, 2)) / n_valid,
        0.5 * (vf.sum(axis=(1, 2)) / n_valid),
        vf_clipped.sum(axis=(1, 2)) / n_valid,
        entropy[runs, prompts[..., None], positions].mean(axis=(1, 2)),
        ratio.mean(axis=(1, 2)),
    )
    return stats, (pi, coef_sum, flat_state * vocab + chosen.reshape(-1), coef), grad_values


def dense_gradient(pi, coef_sum, flat_index, coef) -> np.ndarray:
    """:func:`batch_update`'s policy gradient as an array of ``theta``'s shape."""
    grad = -coef_sum[..., None] * pi
    np.add.at(grad.reshape(-1), flat_index, coef)
    return grad


def exact_stats(theta, ref_logp, w, bias, w_len, g, offset, count_once):
    """Each run's exact expected proxy score, gold, sequence KL and content length, means over
    prompts (the contract's ``alive_t`` recursions), ``[R]`` each."""
    logpi = log_softmax(theta)
    pi = np.exp(logpi)
    n_runs, n_prompts, max_len, vocab = theta.shape
    alive = np.ones((n_runs, n_prompts))
    length = kl = counted_w = np.zeros((n_runs, n_prompts))
    counts = never = np.zeros((n_runs, n_prompts, vocab))
    q = np.ones((n_runs, n_prompts, vocab))
    for t in range(max_len):
        p, eos = pi[:, :, t], pi[:, :, t, :1]
        kl = kl + alive * (p * (logpi[:, :, t] - ref_logp[None, :, t])).sum(axis=-1)
        length = length + alive * (1.0 - eos[..., 0])
        counts = counts + alive[..., None] * p
        counted_w = counted_w + alive * (p[..., 1:] * w[1:]).sum(axis=-1)
        never = never + q * eos
        q = q * (1.0 - eos - p)
        alive = alive * (1.0 - eos[..., 0])
    seen = 1.0 - (never + q) if count_once else counts
    gold = offset + (seen[..., 1:] * g[1:]).sum(axis=-1)
    proxy = bias + counted_w + w_len * length
    return proxy.mean(axis=1), gold.mean(axis=1), kl.mean(axis=1), length.mean(axis=1)


def token_ppo(ref_logits, w, bias, w_len, g, offset, count_once, *, steps, kl_coef, lr, batch_size=64, gamma=1.0,
              lam=0.95, cliprange=0.2, cliprange_value=0.2, vf_coef=0.1, kl_estimator="k1", num_ppo_epochs=4,
              num_mini_batches=1, record_every=1, seed=0):
    """``len(kl_coef)`` runs (``kl_coef``, ``lr`` one per run) in lock-step from ``ref_logits [P, L, V]``;
    returns ``{"history": [R, kept, 16] in HISTORY_FIELDS' order, "summary": [R, 4], "final_theta"}``."""
    rng = np.random.default_rng(seed)
    kl_coef = np.asarray(kl_coef, dtype=np.float64)
    lr = np.asarray(lr, dtype=np.float64)
    n_runs = len(kl_coef)
    n_prompts, max_len, vocab = ref_logits.shape
    ref_logp = log_softmax(ref_logits)
    theta = np.repeat(ref_logits[None], n_runs, axis=0)
    values = np.zeros((n_runs, n_prompts, max_len))
    runs = np.arange(n_runs)[:, None, None]
    runs2 = np.arange(n_runs)[:, None]
    positions = np.arange(max_len)
    size = batch_size // num_mini_batches
    history = []
    for step in range(steps):
        prompts = rng.integers(n_prompts, size=(n_runs, batch_size))
        pi, logpi = softmax_and_log_softmax(theta)
        cdf = np.cumsum(pi, axis=-1, out=pi).reshape(-1, vocab)
        rows = (runs * n_prompts + prompts[..., None]) * max_len + positions
        tokens = sample_rows(cdf, rows, rng.random(rows.shape))
        is_eos = tokens == 0
        has_eos = is_eos.any(axis=-1)
        length = np.where(has_eos, is_eos.argmax(axis=-1) + 1, max_len)
        valid = positions < length[..., None]
        old_logp = logpi[runs, prompts[..., None], positions, tokens] * valid
        ref_lp = ref_logp[prompts[..., None], positions, tokens] * valid
        old_values = values[runs, prompts[..., None], positions] * valid
        content = valid & ~is_eos
        n_content = content.sum(axis=-1)
        score = bias[prompts] + (w[tokens] * content).sum(axis=-1) + w_len * n_content
        kl, rewards, _, advantages, returns = rollout_terms(old_logp, ref_lp, old_values, valid, score, kl_coef,
                                                            gamma, lam, kl_estimator)
        ordered = np.sort(np.where(content, tokens, -1), axis=-1)
        first = np.ones_like(content)
        first[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
        counted = (ordered > 0) & (first if count_once else True)
        gold = offset[prompts] + (g[np.maximum(ordered, 0)] * counted).sum(axis=-1)

        stats = []
        for _ in range(num_ppo_epochs):
            order = np.argsort(rng.random((n_runs, batch_size)), axis=1)
            for m in range(num_mini_batches):
                pick = order[:, m * size:(m + 1) * size]
                take = lambda x: x[runs2, pick]  # noqa: E731
                out, (pi, coef_sum, flat_index, coef), grad_values = batch_update(
                    theta, values, take(prompts), take(tokens), take(valid), take(old_logp), take(old_values),
                    take(advantages), take(returns), cliprange=cliprange, cliprange_value=cliprange_value,
                    vf_coef=vf_coef)
                # theta -= lr * dense_gradient(...), without the dense array
                pi *= (lr[:, None, None] * coef_sum)[..., None]
                theta += pi
                np.subtract.at(theta.reshape(-1), flat_index, np.repeat(lr, len(coef) // n_runs) * coef)
                values -= lr[:, None, None] * grad_values
                stats.append(out)
        if record_every and (step + 1) % record_every == 0:
            stats = np.array(stats)  # [updates, 7, R]
            ratio = stats[:, 6]
            ratio_var = ratio.var(axis=0, ddof=1) if len(stats) > 1 else np.zeros(n_runs)
            kl_sum = kl.sum(axis=-1).mean(axis=1)
            non_score = (-kl_coef[:, None, None] * kl).sum(axis=-1).mean(axis=1)
            history.append(np.column_stack([
                kl_sum, -(old_logp.sum(axis=-1)).mean(axis=1), non_score, non_score + score.mean(axis=1),
                score.mean(axis=1), *stats.mean(axis=0), ratio_var, has_eos.sum(axis=1), n_content.mean(axis=1),
                gold.mean(axis=1),
            ]))
    if not np.isfinite(theta).all():
        raise FloatingPointError("the NumPy token PPO diverged")
    summary = np.column_stack(exact_stats(theta, ref_logp, w, bias, w_len, g, offset, count_once))
    return {"history": np.stack(history, axis=1) if history else np.zeros((n_runs, 0, 16)), "summary": summary,
            "final_theta": theta}
