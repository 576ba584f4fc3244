"""NumPy implementations of the B1 and B2 benchmark work (SPEC 5), the "numpy" contender.

B1 -- :func:`train_rlhf_batch`: R independent PPO-RLHF runs (one per (beta, seed)) advanced
in lock-step, vectorised ACROSS runs: theta is ``[R, P=3, V=8]``; each step gathers the
sampled prompt's row of every run, does softmax over the last axis, inverse-CDF sampling
(cumsum + argmax), the exact KL to the frozen reference, ``reward = score - beta * KL``,
then ``ppo_epochs`` clipped-surrogate epochs with the clip test per run (a clipped run's
update is masked to zero) and writes the rows back. The arithmetic is the reference's
``methods.ppo.rlhf_step`` operation for operation (sums left to right via cumsum; the frozen
reference's softmax is computed once instead of every step, which gives the same numbers).
The random numbers come from ``np.random.default_rng(seed)`` -- one prompt index and one
uniform per run per step -- so it is the SAME WORK, NOT THE SAME STREAM as
``random.Random(seed)``. Pre-drawn ``prompts`` / ``uniforms`` arrays can be passed instead;
the self-test replays the reference's streams that way and must match it exactly.

B2 -- :func:`tokenise` + :func:`train_rm_sequential`: Bradley-Terry SGD is inherently
sequential (each step reads the weights the previous step wrote), so it cannot be
vectorised across pairs without changing the algorithm into mini-batch SGD. This is the
exact sequential SGD written as a PLAIN PYTHON LOOP over pre-tokenised numpy index/count
arrays (one row per pair, numpy fancy indexing per step); only the tokenisation is
vectorised (np.unique over the response strings).

    python benches/numpy_impl.py --check     # self-test against rlhf_fast.reference
"""

from __future__ import annotations

import argparse
import math
import random

import numpy as np

from rlhf_fast import reference as ref_impl

PROMPTS, VOCAB = ref_impl.PROMPTS, ref_impl.VOCAB
P, V = len(PROMPTS), len(VOCAB)


# ------------------------------------------------------------------------------------ B1


def _softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis; the normaliser is summed left to right like the reference."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / np.cumsum(e, axis=-1)[..., -1:]


def train_rlhf_batch(
    w: np.ndarray,
    betas: np.ndarray,
    steps: int,
    seed: int = 0,
    eps: float = 0.2,
    lr: float = 0.05,
    ppo_epochs: int = 4,
    theta: np.ndarray | None = None,
    ref: np.ndarray | None = None,
    prompts: np.ndarray | None = None,
    uniforms: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """``len(betas)`` PPO-RLHF runs of ``steps`` steps in lock-step.

    ``w``: RM weights ``[V]`` in VOCAB order; ``theta``: initial logits ``[R, P, V]``
    (default zeros; updated in place when given); ``ref``: ``[P, V]`` or ``[R, P, V]``
    (default zeros). ``prompts`` (ints in ``[0, P)``) and ``uniforms`` (in ``[0, 1)``), both
    ``[steps, R]``, default to draws from ``np.random.default_rng(seed)``.
    Returns ``token``, ``kl``, ``reward`` (``[steps, R]``) and the final ``theta``.
    """
    betas = np.asarray(betas, dtype=np.float64)
    R = len(betas)
    if theta is None:
        theta = np.zeros((R, P, V))
    ref = np.zeros((P, V)) if ref is None else np.asarray(ref, dtype=np.float64)
    ref = np.broadcast_to(ref, (R, P, V))
    if prompts is None or uniforms is None:
        gen = np.random.default_rng(seed)
        prompts = gen.integers(0, P, size=(steps, R))
        uniforms = gen.random((steps, R))

    q = _softmax(ref)  # the frozen reference: its softmax never changes
    with np.errstate(divide="ignore"):
        log_q = np.log(q)
    runs = np.arange(R)
    vocab = np.arange(V)
    lo, hi = 1.0 - eps, 1.0 + eps
    tokens = np.empty((steps, R), dtype=np.int64)
    kls = np.empty((steps, R))
    rewards = np.empty((steps, R))

    for t in range(steps):
        x = prompts[t]
        logits = theta[runs, x]  # [R, V], a copy: written back at the end of the step
        p_old = _softmax(logits)
        above = np.cumsum(p_old, axis=-1) > uniforms[t][:, None]
        a = np.where(above.any(axis=-1), above.argmax(axis=-1), V - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p_old > 0.0, p_old * (np.log(p_old) - log_q[runs, x]), 0.0)
        kl_t = np.cumsum(terms, axis=-1)[:, -1]
        reward = w[a] - betas * kl_t  # score = R(prompt, [token]) = w[token]
        advantage = reward  # no baseline
        p_old_a = p_old[runs, a]
        onehot = (vocab == a[:, None]).astype(np.float64)
        non_negative = advantage >= 0.0
        for _ in range(ppo_epochs):
            p = _softmax(logits)
            ratio = p[runs, a] / p_old_a
            clipped = np.where(non_negative, ratio > hi, ratio < lo)
            step = np.where(clipped, 0.0, lr * advantage * ratio)  # clipped: no update
            logits += step[:, None] * (onehot - p)
        theta[runs, x] = logits
        tokens[t], kls[t], rewards[t] = a, kl_t, reward
    return {"token": tokens, "kl": kls, "reward": rewards, "theta": theta}


def reference_streams(seeds, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The prompts and uniforms ``reference.train_rlhf`` draws for each seed: ``[steps, len(seeds)]``.

    Replays ``random.Random(seed)``: per step ``rng.choice(PROMPTS)`` then ``rng.random()``.
    """
    prompts = np.empty((steps, len(seeds)), dtype=np.int64)
    uniforms = np.empty((steps, len(seeds)))
    for r, seed in enumerate(seeds):
        rng = random.Random(seed)
        for t in range(steps):
            prompts[t, r] = PROMPTS.index(rng.choice(PROMPTS))
            uniforms[t, r] = rng.random()
    return prompts, uniforms


def w_vector(w) -> np.ndarray:
    return np.array([w.get(tok, 0.0) for tok in VOCAB])


# ------------------------------------------------------------------------------------ B2


def tokenise(pairs) -> dict:
    """Pairs as numpy arrays of bags: ``pos_tok``/``pos_cnt``/``neg_tok``/``neg_cnt``, ``[N, K]``.

    Each response's bag (token id, count) in first-seen order, like ``reference.bag``, padded
    to K entries with the id ``len(vocab)`` (a slot that stays 0) and count 0. Vectorised with
    np.unique: only the distinct responses (16 + 16 here) are split in Python.
    """
    vocab = list(VOCAB)
    index = {tok: i for i, tok in enumerate(vocab)}
    out = {}
    for side, column in (("pos", 1), ("neg", 2)):
        responses = np.array([pair[column] for pair in pairs])
        distinct, inverse = np.unique(responses, return_inverse=True)
        bags = []
        for response in distinct:
            counts = ref_impl.bag(str(response))
            for tok in counts:
                if tok not in index:  # a word outside VOCAB gets the next id
                    index[tok] = len(vocab)
                    vocab.append(tok)
            bags.append([(index[tok], cnt) for tok, cnt in counts.items()])
        out[side] = (bags, inverse)
    pad = len(vocab)
    k = max(len(b) for side in out.values() for b in side[0])
    arrays = {"vocab": vocab}
    for side, (bags, inverse) in out.items():
        tok = np.full((len(bags), k), pad, dtype=np.int64)
        cnt = np.zeros((len(bags), k))
        for i, b in enumerate(bags):
            for j, (t, c) in enumerate(b):
                tok[i, j], cnt[i, j] = t, c
        arrays[f"{side}_tok"], arrays[f"{side}_cnt"] = tok[inverse], cnt[inverse]
    return arrays


def _softplus(z: float) -> float:
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


def _sigmoid(z: float) -> float:
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def train_rm_sequential(data: dict, epochs: int = 1, lr: float = 0.1) -> dict[str, float]:
    """Exact sequential Bradley-Terry SGD, a Python loop over the rows of :func:`tokenise`'s arrays."""
    w = np.zeros(len(data["vocab"]) + 1)  # the last slot is the padding id: it stays 0
    rows = (data["pos_tok"], data["pos_cnt"], data["neg_tok"], data["neg_cnt"])
    for _ in range(epochs):
        for pos_tok, pos_cnt, neg_tok, neg_cnt in zip(*rows):
            # numpy sums < 8 entries left to right: the reference's dot order
            margin = float((w[pos_tok] * pos_cnt).sum()) - float((w[neg_tok] * neg_cnt).sum())
            _softplus(-margin)  # the loss the reference computes (and throws away) every step
            grad = lr * _sigmoid(-margin)
            w[pos_tok] += grad * pos_cnt
            w[neg_tok] -= grad * neg_cnt
    return dict(zip(data["vocab"], w[:-1].tolist()))


# ---------------------------------------------------------------------------- self-test


def _close(a, b, tol: float = 1e-9) -> float:
    """Largest difference relative to max(1, |b|); fails the check above ``tol``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b))))


def check(seeds=(0, 1), betas=(0.0, 0.1, 1.0), steps: int = 2000, n_pairs: int = 20_000) -> None:
    """Replay the reference's streams through the NumPy code and compare (asserts)."""
    w = ref_impl.train_rm(ref_impl.make_dataset(500, 0), epochs=5, lr=0.1)
    runs = [(beta, seed) for beta in betas for seed in seeds]
    prompts, uniforms = reference_streams([seed for _, seed in runs], steps)
    out = train_rlhf_batch(
        w_vector(w), np.array([beta for beta, _ in runs]), steps, prompts=prompts, uniforms=uniforms
    )
    worst = {"kl": 0.0, "reward": 0.0, "theta": 0.0}
    for r, (beta, seed) in enumerate(runs):
        theta = ref_impl.init_policy()
        hist = ref_impl.train_rlhf(theta, ref_impl.init_policy(), w, steps, seed, beta=beta, eps=0.2, lr=0.05)
        assert hist["prompt"] == prompts[:, r].tolist(), f"prompt stream differs (beta={beta}, seed={seed})"
        assert hist["token"] == out["token"][:, r].tolist(), f"tokens differ (beta={beta}, seed={seed})"
        for key in ("kl", "reward"):
            worst[key] = max(worst[key], _close(out[key][:, r], hist[key]))
        worst["theta"] = max(worst["theta"], _close(out["theta"][r], [theta[x] for x in PROMPTS]))
    print(f"B1 numpy vs reference: {len(runs)} runs x {steps} steps, tokens identical; "
          + ", ".join(f"max rel diff {k} {v:.1e}" for k, v in worst.items()))
    assert max(worst.values()) <= 1e-9, worst

    pairs = ref_impl.make_dataset(n_pairs, 0)
    w_np = train_rm_sequential(tokenise(pairs), epochs=1, lr=0.1)
    w_ref = ref_impl.train_rm(pairs, epochs=1, lr=0.1)
    diff = _close([w_np[t] for t in VOCAB], [w_ref[t] for t in VOCAB])
    print(f"B2 numpy vs reference: {n_pairs} pairs, 1 epoch, max rel diff of w {diff:.1e}")
    assert w_np.keys() == w_ref.keys() and diff <= 1e-9, (w_np, w_ref)
    print("numpy_impl self-test passed")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="NumPy B1/B2 implementations")
    parser.add_argument("--check", action="store_true", help="self-test against rlhf_fast.reference")
    parser.add_argument("--quick", action="store_true", help="smaller self-test")
    args = parser.parse_args()
    if args.check or args.quick:
        check(steps=200, n_pairs=2000) if args.quick else check()
    else:
        parser.print_help()
