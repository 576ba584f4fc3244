"""Bad input: a ValueError or TypeError that names the argument (SPEC section 4).

Every case runs on both ``api`` and the reference, which must behave identically: the same
exception type, a message naming the argument. Nothing else is acceptable -- in particular
not pyo3's PanicException, which derives from BaseException and so escapes
``pytest.raises((ValueError, TypeError))`` and fails the test, as it should.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from conftest import MODULES, P, V, assert_close, assert_history_equal, copy_policy, policy_array, rust_only

import rlhf_fast as api
from rlhf_fast import reference as ref

NAN, INF = math.nan, math.inf
PAIRS = ref.make_dataset(5, 0)
W = {tok: (1.0 if tok in ref.GOOD_WORDS else -1.0) for tok in ref.VOCAB}


def theta0():
    return ref.init_policy()


def with_row(prompt, row):
    theta = ref.init_policy()
    theta[prompt] = row
    return theta


def without(prompt):
    theta = ref.init_policy()
    del theta[prompt]
    return theta


def rng():
    return random.Random(0)


def name(arg: str) -> str:
    """A regex matching the argument's name as a word (``p`` must not match ``prompt``)."""
    return rf"(?<![A-Za-z0-9_]){arg}(?![A-Za-z0-9_])"


# (id, call(mod), exception type, argument named in the message)
CASES = [
    # ------------------------------------------------------------ softmax / log_softmax
    *[
        case
        for fn in ("softmax", "log_softmax")
        for case in [
            (f"{fn}-empty", lambda m, fn=fn: getattr(m, fn)([]), ValueError, "z"),
            (f"{fn}-nan", lambda m, fn=fn: getattr(m, fn)([0.0, NAN]), ValueError, "z"),
            (f"{fn}-inf", lambda m, fn=fn: getattr(m, fn)([0.0, INF]), ValueError, "z"),
            (f"{fn}-neg-inf", lambda m, fn=fn: getattr(m, fn)([-INF, 0.0]), ValueError, "z"),
            (f"{fn}-str-entry", lambda m, fn=fn: getattr(m, fn)([0.0, "1.0"]), TypeError, "z"),
            (f"{fn}-none-entry", lambda m, fn=fn: getattr(m, fn)([None, 1.0]), TypeError, "z"),
            (f"{fn}-not-a-sequence", lambda m, fn=fn: getattr(m, fn)(None), TypeError, "z"),
            (f"{fn}-numpy-nan", lambda m, fn=fn: getattr(m, fn)(np.array([0.0, NAN, 1.0])), ValueError, "z"),
            (f"{fn}-numpy-empty", lambda m, fn=fn: getattr(m, fn)(np.array([])), ValueError, "z"),
        ]
    ],
    # ------------------------------------------------------------------------------ kl
    ("kl-p-nan", lambda m: m.kl([NAN, 1.0], [0.5, 0.5]), ValueError, "p"),
    ("kl-q-inf", lambda m: m.kl([0.5, 0.5], [INF, 0.5]), ValueError, "q"),
    ("kl-p-negative", lambda m: m.kl([1.5, -0.5], [0.5, 0.5]), ValueError, "p"),
    ("kl-q-negative", lambda m: m.kl([0.5, 0.5], [-0.5, 1.5]), ValueError, "q"),
    ("kl-p-not-normalised", lambda m: m.kl([0.5, 0.4], [0.5, 0.5]), ValueError, "p"),
    ("kl-q-not-normalised", lambda m: m.kl([0.5, 0.5], [0.5, 0.5 + 2e-6]), ValueError, "q"),
    ("kl-p-empty", lambda m: m.kl([], [1.0]), ValueError, "p"),
    ("kl-q-empty", lambda m: m.kl([1.0], []), ValueError, "q"),
    ("kl-length-mismatch", lambda m: m.kl([0.5, 0.5], [0.25, 0.25, 0.5]), ValueError, "q"),
    ("kl-p-str", lambda m: m.kl(["a", 1.0], [0.5, 0.5]), TypeError, "p"),
    ("kl-q-not-a-sequence", lambda m: m.kl([1.0], 1.0), TypeError, "q"),
    *[
        case
        for fn in ("kl_k1", "kl_k2", "kl_k3")
        for case in [
            (f"{fn}-logp-nan", lambda m, fn=fn: getattr(m, fn)(NAN, -1.0), ValueError, "logp"),
            (f"{fn}-logq-inf", lambda m, fn=fn: getattr(m, fn)(-1.0, -INF), ValueError, "logq"),
            (f"{fn}-logp-str", lambda m, fn=fn: getattr(m, fn)("-1", -1.0), TypeError, "logp"),
            (f"{fn}-logq-none", lambda m, fn=fn: getattr(m, fn)(-1.0, None), TypeError, "logq"),
        ]
    ],
    # -------------------------------------------------------------------------- sample
    ("sample-empty", lambda m: m.sample([], rng()), ValueError, "probs"),
    ("sample-nan", lambda m: m.sample([NAN, 1.0], rng()), ValueError, "probs"),
    ("sample-negative", lambda m: m.sample([1.2, -0.2], rng()), ValueError, "probs"),
    ("sample-not-normalised", lambda m: m.sample([0.3, 0.3], rng()), ValueError, "probs"),
    ("sample-off-by-2e-6", lambda m: m.sample([0.5, 0.5 - 2e-6], rng()), ValueError, "probs"),
    ("sample-str", lambda m: m.sample(["0.5", 0.5], rng()), TypeError, "probs"),
    ("sample-rng-none", lambda m: m.sample([0.5, 0.5], None), TypeError, "rng"),
    # ---------------------------------------------------------------- helpers (sigmoid, bag, dot)
    ("sigmoid-nan", lambda m: m.sigmoid(NAN), ValueError, "z"),
    ("sigmoid-str", lambda m: m.sigmoid("1.0"), TypeError, "z"),
    ("bag-none", lambda m: m.bag(None), TypeError, "y"),
    ("dot-w-none", lambda m: m.dot(None, {"clear": 1}), TypeError, "w"),
    ("dot-w-nan", lambda m: m.dot({"clear": NAN}, {"clear": 1}), ValueError, "w"),
    # ---------------------------------------------------------------------- reward model
    ("rm_train_step-lr-zero", lambda m: m.rm_train_step(dict(W), "help me", "clear", "rude", 0.0), ValueError, "lr"),
    ("rm_train_step-lr-negative", lambda m: m.rm_train_step(dict(W), "help me", "clear", "rude", -0.1), ValueError, "lr"),
    ("rm_train_step-lr-nan", lambda m: m.rm_train_step(dict(W), "help me", "clear", "rude", NAN), ValueError, "lr"),
    ("rm_train_step-lr-inf", lambda m: m.rm_train_step(dict(W), "help me", "clear", "rude", INF), ValueError, "lr"),
    ("rm_train_step-lr-str", lambda m: m.rm_train_step(dict(W), "help me", "clear", "rude", "0.1"), TypeError, "lr"),
    ("rm_train_step-w-nan", lambda m: m.rm_train_step({"clear": NAN}, "help me", "clear", "rude", 0.1), ValueError, "w"),
    ("rm_train_step-w-inf", lambda m: m.rm_train_step({"rude": -INF}, "help me", "clear", "rude", 0.1), ValueError, "w"),
    ("rm_train_step-w-str", lambda m: m.rm_train_step({"clear": "1"}, "help me", "clear", "rude", 0.1), TypeError, "w"),
    ("rm_train_step-w-none", lambda m: m.rm_train_step(None, "help me", "clear", "rude", 0.1), TypeError, "w"),
    ("rm_train_step-y_pos-none", lambda m: m.rm_train_step(dict(W), "help me", None, "rude", 0.1), TypeError, "y_pos"),
    ("train_rm-epochs-negative", lambda m: m.train_rm(PAIRS, -1), ValueError, "epochs"),
    ("train_rm-epochs-float", lambda m: m.train_rm(PAIRS, 2.0), TypeError, "epochs"),
    ("train_rm-lr-zero", lambda m: m.train_rm(PAIRS, 1, 0.0), ValueError, "lr"),
    ("train_rm-lr-nan", lambda m: m.train_rm(PAIRS, 1, NAN), ValueError, "lr"),
    ("train_rm-w-inf", lambda m: m.train_rm(PAIRS, 1, 0.1, {"clear": INF}), ValueError, "w"),
    ("train_rm-w-list", lambda m: m.train_rm(PAIRS, 1, 0.1, [0.0] * V), TypeError, "w"),
    ("train_rm-pairs-none", lambda m: m.train_rm(None), TypeError, "pairs"),
    ("pairwise_accuracy-empty", lambda m: m.pairwise_accuracy(W, []), ValueError, "pairs"),
    ("pairwise_accuracy-w-nan", lambda m: m.pairwise_accuracy({"clear": NAN}, PAIRS), ValueError, "w"),
    ("pairwise_accuracy-w-none", lambda m: m.pairwise_accuracy(None, PAIRS), TypeError, "w"),
    # ---------------------------------------------------------------------------- data
    ("make_dataset-n-negative", lambda m: m.make_dataset(-1, 0), ValueError, "n"),
    ("make_dataset-n-float", lambda m: m.make_dataset(3.0, 0), TypeError, "n"),
    ("make_dataset-n-str", lambda m: m.make_dataset("3", 0), TypeError, "n"),
    ("make_dataset-seed-float", lambda m: m.make_dataset(3, 1.0), TypeError, "seed"),
    ("make_dataset-seed-str", lambda m: m.make_dataset(3, "1"), TypeError, "seed"),
    ("make_dataset-seed-none", lambda m: m.make_dataset(3, None), TypeError, "seed"),
    ("seed_key-float", lambda m: m.seed_key(1.0), TypeError, "seed"),
    ("seed_key-str", lambda m: m.seed_key("7"), TypeError, "seed"),
    ("PreferenceSet-row-missing-key", lambda m: m.PreferenceSet([{"prompt": "help me", "chosen": "clear"}]), ValueError, "pairs"),
    ("PreferenceSet-short-triple", lambda m: m.PreferenceSet([("help me", "clear")]), ValueError, "pairs"),
    ("PreferenceSet.make_dataset-n-negative", lambda m: m.PreferenceSet.make_dataset(-1), ValueError, "n"),
    ("PreferenceSet.make_dataset-seed-float", lambda m: m.PreferenceSet.make_dataset(3, 0.5), TypeError, "seed"),
    ("train_rm-empty-preference-set-accuracy", lambda m: m.pairwise_accuracy(W, m.PreferenceSet([])), ValueError, "pairs"),
    ("make_pair-rng-none", lambda m: m.make_pair(None), TypeError, "rng"),
    ("rows_to_pairs-missing-key", lambda m: m.rows_to_pairs([{"prompt": "help me", "chosen": "clear"}]), ValueError, "rows"),
    # -------------------------------------------------------------------------- policy
    ("policy_logits-unknown-prompt", lambda m: m.policy_logits(theta0(), "hello"), ValueError, "prompt"),
    ("policy_logits-prompt-int", lambda m: m.policy_logits(theta0(), 0), TypeError, "prompt"),
    # --------------------------------------------------------------- clipped surrogate
    *[
        case
        for fn in ("clipped_surrogate", "clipped_surrogate_grad")
        for case in [
            (f"{fn}-logits-empty", lambda m, fn=fn: getattr(m, fn)([], 0, 0.5, 1.0, 0.2), ValueError, "logits"),
            (f"{fn}-logits-nan", lambda m, fn=fn: getattr(m, fn)([0.0, NAN], 0, 0.5, 1.0, 0.2), ValueError, "logits"),
            (f"{fn}-a-too-big", lambda m, fn=fn: getattr(m, fn)([0.0, 0.0], 2, 0.5, 1.0, 0.2), ValueError, "a"),
            (f"{fn}-a-negative", lambda m, fn=fn: getattr(m, fn)([0.0, 0.0], -1, 0.5, 1.0, 0.2), ValueError, "a"),
            (f"{fn}-a-float", lambda m, fn=fn: getattr(m, fn)([0.0, 0.0], 1.0, 0.5, 1.0, 0.2), TypeError, "a"),
            (f"{fn}-p_old_a-zero", lambda m, fn=fn: getattr(m, fn)([0.0, 0.0], 0, 0.0, 1.0, 0.2), ValueError, "p_old_a"),
            (f"{fn}-p_old_a-nan", lambda m, fn=fn: getattr(m, fn)([0.0, 0.0], 0, NAN, 1.0, 0.2), ValueError, "p_old_a"),
            (f"{fn}-advantage-nan", lambda m, fn=fn: getattr(m, fn)([0.0, 0.0], 0, 0.5, NAN, 0.2), ValueError, "advantage"),
            (f"{fn}-advantage-str", lambda m, fn=fn: getattr(m, fn)([0.0, 0.0], 0, 0.5, "1", 0.2), TypeError, "advantage"),
            (f"{fn}-eps-zero", lambda m, fn=fn: getattr(m, fn)([0.0, 0.0], 0, 0.5, 1.0, 0.0), ValueError, "eps"),
            (f"{fn}-eps-negative", lambda m, fn=fn: getattr(m, fn)([0.0, 0.0], 0, 0.5, 1.0, -0.2), ValueError, "eps"),
            (f"{fn}-eps-nan", lambda m, fn=fn: getattr(m, fn)([0.0, 0.0], 0, 0.5, 1.0, NAN), ValueError, "eps"),
        ]
    ],
    # ----------------------------------------------------------------------- rlhf_step
    ("rlhf_step-theta-none", lambda m: m.rlhf_step(None, theta0(), W, "help me", rng()), TypeError, "theta"),
    ("rlhf_step-theta-missing-prompt", lambda m: m.rlhf_step(without("answer me"), theta0(), W, "help me", rng()), ValueError, "theta"),
    ("rlhf_step-theta-short-row", lambda m: m.rlhf_step(with_row("help me", [0.0] * 7), theta0(), W, "help me", rng()), ValueError, "theta"),
    ("rlhf_step-theta-nan", lambda m: m.rlhf_step(with_row("help me", [NAN] + [0.0] * 7), theta0(), W, "help me", rng()), ValueError, "theta"),
    ("rlhf_step-theta-inf-other-row", lambda m: m.rlhf_step(with_row("explain this", [INF] + [0.0] * 7), theta0(), W, "help me", rng()), ValueError, "theta"),
    ("rlhf_step-theta-str", lambda m: m.rlhf_step(with_row("help me", ["0"] * 8), theta0(), W, "help me", rng()), TypeError, "theta"),
    ("rlhf_step-theta-tuple-row", lambda m: m.rlhf_step(with_row("help me", (0.0,) * 8), theta0(), W, "help me", rng()), TypeError, "theta"),
    ("rlhf_step-ref-missing-prompt", lambda m: m.rlhf_step(theta0(), without("help me"), W, "help me", rng()), ValueError, "ref"),
    ("rlhf_step-ref-long-row", lambda m: m.rlhf_step(theta0(), with_row("help me", [0.0] * 9), W, "help me", rng()), ValueError, "ref"),
    ("rlhf_step-ref-nan", lambda m: m.rlhf_step(theta0(), with_row("answer me", [0.0] * 7 + [NAN]), W, "help me", rng()), ValueError, "ref"),
    ("rlhf_step-w-nan", lambda m: m.rlhf_step(theta0(), theta0(), {"clear": NAN}, "help me", rng()), ValueError, "w"),
    ("rlhf_step-w-none", lambda m: m.rlhf_step(theta0(), theta0(), None, "help me", rng()), TypeError, "w"),
    ("rlhf_step-unknown-prompt", lambda m: m.rlhf_step(theta0(), theta0(), W, "hello", rng()), ValueError, "prompt"),
    ("rlhf_step-prompt-int", lambda m: m.rlhf_step(theta0(), theta0(), W, 1, rng()), TypeError, "prompt"),
    ("rlhf_step-prompt-only-in-theta", lambda m: m.rlhf_step({**theta0(), "foo": [0.0] * V}, theta0(), W, "foo", rng()), ValueError, "prompt"),
    ("rlhf_step-rng-none", lambda m: m.rlhf_step(theta0(), theta0(), W, "help me", None), TypeError, "rng"),
    ("rlhf_step-eps-zero", lambda m: m.rlhf_step(theta0(), theta0(), W, "help me", rng(), eps=0.0), ValueError, "eps"),
    ("rlhf_step-eps-negative", lambda m: m.rlhf_step(theta0(), theta0(), W, "help me", rng(), eps=-0.1), ValueError, "eps"),
    ("rlhf_step-eps-nan", lambda m: m.rlhf_step(theta0(), theta0(), W, "help me", rng(), eps=NAN), ValueError, "eps"),
    ("rlhf_step-beta-negative", lambda m: m.rlhf_step(theta0(), theta0(), W, "help me", rng(), beta=-0.1), ValueError, "beta"),
    ("rlhf_step-beta-nan", lambda m: m.rlhf_step(theta0(), theta0(), W, "help me", rng(), beta=NAN), ValueError, "beta"),
    ("rlhf_step-beta-inf", lambda m: m.rlhf_step(theta0(), theta0(), W, "help me", rng(), beta=INF), ValueError, "beta"),
    ("rlhf_step-beta-str", lambda m: m.rlhf_step(theta0(), theta0(), W, "help me", rng(), beta="0.1"), TypeError, "beta"),
    ("rlhf_step-lr-zero", lambda m: m.rlhf_step(theta0(), theta0(), W, "help me", rng(), lr=0.0), ValueError, "lr"),
    ("rlhf_step-lr-negative", lambda m: m.rlhf_step(theta0(), theta0(), W, "help me", rng(), lr=-1.0), ValueError, "lr"),
    ("rlhf_step-lr-nan", lambda m: m.rlhf_step(theta0(), theta0(), W, "help me", rng(), lr=NAN), ValueError, "lr"),
    ("rlhf_step-ppo_epochs-zero", lambda m: m.rlhf_step(theta0(), theta0(), W, "help me", rng(), ppo_epochs=0), ValueError, "ppo_epochs"),
    ("rlhf_step-ppo_epochs-float", lambda m: m.rlhf_step(theta0(), theta0(), W, "help me", rng(), ppo_epochs=4.0), TypeError, "ppo_epochs"),
    # ---------------------------------------------------------------------- train_rlhf
    ("train_rlhf-theta-missing-prompt", lambda m: m.train_rlhf(without("help me"), theta0(), W, 10, 0), ValueError, "theta"),
    ("train_rlhf-theta-short-row", lambda m: m.train_rlhf(with_row("answer me", [0.0]), theta0(), W, 10, 0), ValueError, "theta"),
    ("train_rlhf-theta-nan", lambda m: m.train_rlhf(with_row("answer me", [NAN] * 8), theta0(), W, 10, 0), ValueError, "theta"),
    ("train_rlhf-theta-list", lambda m: m.train_rlhf([[0.0] * V] * P, theta0(), W, 10, 0), TypeError, "theta"),
    ("train_rlhf-ref-inf", lambda m: m.train_rlhf(theta0(), with_row("help me", [-INF] * 8), W, 10, 0), ValueError, "ref"),
    ("train_rlhf-w-nan", lambda m: m.train_rlhf(theta0(), theta0(), {"kind": NAN}, 10, 0), ValueError, "w"),
    ("train_rlhf-steps-zero", lambda m: m.train_rlhf(theta0(), theta0(), W, 0, 0), ValueError, "steps"),
    ("train_rlhf-steps-negative", lambda m: m.train_rlhf(theta0(), theta0(), W, -5, 0), ValueError, "steps"),
    ("train_rlhf-steps-float", lambda m: m.train_rlhf(theta0(), theta0(), W, 10.0, 0), TypeError, "steps"),
    ("train_rlhf-seed-float", lambda m: m.train_rlhf(theta0(), theta0(), W, 10, 1.5), TypeError, "seed"),
    ("train_rlhf-seed-whole-float", lambda m: m.train_rlhf(theta0(), theta0(), W, 10, 1.0), TypeError, "seed"),
    ("train_rlhf-seed-str", lambda m: m.train_rlhf(theta0(), theta0(), W, 10, "1"), TypeError, "seed"),
    ("train_rlhf-seed-none", lambda m: m.train_rlhf(theta0(), theta0(), W, 10, None), TypeError, "seed"),
    ("train_rlhf-eps-zero", lambda m: m.train_rlhf(theta0(), theta0(), W, 10, 0, eps=0.0), ValueError, "eps"),
    ("train_rlhf-eps-negative", lambda m: m.train_rlhf(theta0(), theta0(), W, 10, 0, eps=-0.2), ValueError, "eps"),
    ("train_rlhf-beta-negative", lambda m: m.train_rlhf(theta0(), theta0(), W, 10, 0, beta=-1.0), ValueError, "beta"),
    ("train_rlhf-beta-nan", lambda m: m.train_rlhf(theta0(), theta0(), W, 10, 0, beta=NAN), ValueError, "beta"),
    ("train_rlhf-lr-zero", lambda m: m.train_rlhf(theta0(), theta0(), W, 10, 0, lr=0.0), ValueError, "lr"),
    ("train_rlhf-lr-negative", lambda m: m.train_rlhf(theta0(), theta0(), W, 10, 0, lr=-0.05), ValueError, "lr"),
    ("train_rlhf-lr-nan", lambda m: m.train_rlhf(theta0(), theta0(), W, 10, 0, lr=NAN), ValueError, "lr"),
    ("train_rlhf-ppo_epochs-zero", lambda m: m.train_rlhf(theta0(), theta0(), W, 10, 0, ppo_epochs=0), ValueError, "ppo_epochs"),
    ("train_rlhf-ppo_epochs-str", lambda m: m.train_rlhf(theta0(), theta0(), W, 10, 0, ppo_epochs="4"), TypeError, "ppo_epochs"),
    ("train_rlhf-kl_ctl-unknown", lambda m: m.train_rlhf(theta0(), theta0(), W, 10, 0, kl_ctl="pid"), ValueError, "kl_ctl"),
    ("train_rlhf-kl_ctl-wrong-case", lambda m: m.train_rlhf(theta0(), theta0(), W, 10, 0, kl_ctl="Adaptive"), ValueError, "kl_ctl"),
    ("train_rlhf-target-zero", lambda m: m.train_rlhf(theta0(), theta0(), W, 10, 0, kl_ctl="adaptive", target=0.0), ValueError, "target"),
    ("train_rlhf-target-nan", lambda m: m.train_rlhf(theta0(), theta0(), W, 10, 0, kl_ctl="doubling", target=NAN), ValueError, "target"),
    ("train_rlhf-horizon-negative", lambda m: m.train_rlhf(theta0(), theta0(), W, 10, 0, kl_ctl="adaptive", horizon=-1.0), ValueError, "horizon"),
    ("train_rlhf-kl_threshold-zero", lambda m: m.train_rlhf(theta0(), theta0(), W, 10, 0, kl_threshold=0.0), ValueError, "kl_threshold"),
    ("train_rlhf-kl_threshold-nan", lambda m: m.train_rlhf(theta0(), theta0(), W, 10, 0, kl_threshold=NAN), ValueError, "kl_threshold"),
    # -------------------------------------------------------------- make_kl_controller
    ("make_kl_controller-unknown", lambda m: m.make_kl_controller("pid", 0.1), ValueError, "kl_ctl"),
    ("make_kl_controller-beta-negative", lambda m: m.make_kl_controller("fixed", -0.1), ValueError, "beta"),
    ("make_kl_controller-target-negative", lambda m: m.make_kl_controller("adaptive", 0.1, -6.0), ValueError, "target"),
    # ------------------------------------------------------------------------ dpo_step
    ("dpo_step-unknown-prompt", lambda m: m.dpo_step(theta0(), theta0(), "hello", "clear", "rude"), ValueError, "x"),
    ("dpo_step-prompt-only-in-theta", lambda m: m.dpo_step({**theta0(), "foo": [0.0] * V}, theta0(), "foo", "clear", "rude"), ValueError, "x"),
    ("dpo_step-y_pos-oov", lambda m: m.dpo_step(theta0(), theta0(), "help me", "clear hello", "rude"), ValueError, "y_pos"),
    ("dpo_step-y_neg-oov", lambda m: m.dpo_step(theta0(), theta0(), "help me", "clear", "Rude"), ValueError, "y_neg"),
    ("dpo_step-y_pos-empty", lambda m: m.dpo_step(theta0(), theta0(), "help me", "", "rude"), ValueError, "y_pos"),
    ("dpo_step-y_neg-blank", lambda m: m.dpo_step(theta0(), theta0(), "help me", "clear", "  \t"), ValueError, "y_neg"),
    ("dpo_step-y_pos-empty-list", lambda m: m.dpo_step(theta0(), theta0(), "help me", [], "rude"), ValueError, "y_pos"),
    ("dpo_step-beta-zero", lambda m: m.dpo_step(theta0(), theta0(), "help me", "clear", "rude", beta=0.0), ValueError, "beta"),
    ("dpo_step-beta-negative", lambda m: m.dpo_step(theta0(), theta0(), "help me", "clear", "rude", beta=-0.1), ValueError, "beta"),
    ("dpo_step-beta-nan", lambda m: m.dpo_step(theta0(), theta0(), "help me", "clear", "rude", beta=NAN), ValueError, "beta"),
    ("dpo_step-lr-zero", lambda m: m.dpo_step(theta0(), theta0(), "help me", "clear", "rude", lr=0.0), ValueError, "lr"),
    ("dpo_step-lr-nan", lambda m: m.dpo_step(theta0(), theta0(), "help me", "clear", "rude", lr=NAN), ValueError, "lr"),
    ("dpo_step-theta-missing-prompt", lambda m: m.dpo_step(without("explain this"), theta0(), "help me", "clear", "rude"), ValueError, "theta"),
    ("dpo_step-theta-tuple-row", lambda m: m.dpo_step(with_row("help me", (0.0,) * 8), theta0(), "help me", "clear", "rude"), TypeError, "theta"),
    ("dpo_step-ref-nan", lambda m: m.dpo_step(theta0(), with_row("help me", [NAN] * 8), "help me", "clear", "rude"), ValueError, "ref"),
    # ------------------------------------------------------------------ expected_score
    ("expected_score-theta-missing-prompt", lambda m: m.expected_score(without("help me"), W), ValueError, "theta"),
    ("expected_score-theta-nan", lambda m: m.expected_score(with_row("help me", [NAN] * 8), W), ValueError, "theta"),
    ("expected_score-w-inf", lambda m: m.expected_score(theta0(), {"clear": INF}), ValueError, "w"),
    ("expected_score-w-none", lambda m: m.expected_score(theta0(), None), TypeError, "w"),
    # ---------------------------------------------------------------------- policy_kl
    ("policy_kl-theta-missing-prompt", lambda m: m.policy_kl(without("help me"), theta0()), ValueError, "theta"),
    ("policy_kl-theta-nan", lambda m: m.policy_kl(with_row("help me", [NAN] * 8), theta0()), ValueError, "theta"),
    ("policy_kl-ref-short-row", lambda m: m.policy_kl(theta0(), with_row("help me", [0.0] * 7)), ValueError, "ref"),
    ("policy_kl-ref-none", lambda m: m.policy_kl(theta0(), None), TypeError, "ref"),
]


@MODULES
@pytest.mark.parametrize("call, exc, arg", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_naming_the_argument(mod, call, exc, arg):
    with pytest.raises(exc, match=name(arg)):
        call(mod)


@rust_only
@pytest.mark.parametrize("call", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_same_exception_type_as_the_reference(call):
    """Drop-in: the API raises exactly the exception type the reference raises."""

    def raised(mod):
        try:
            call(mod)
        except Exception as err:  # noqa: BLE001 - compared, not swallowed
            return type(err)
        return None

    assert raised(api) is raised(ref)


def test_every_public_function_has_an_error_case():
    """Guards this file: a new public function must get bad-input cases here (or, for DPO, GRPO
    and Best-of-N, in test_methods_differential.py, which has its own guard)."""
    from test_methods_differential import CASES as METHOD_CASES

    covered = {case[0].split("-")[0].split(".")[0] for case in (*CASES, *METHOD_CASES)}
    exempt = {"init_policy", "pairs_to_rows"}  # no argument to get wrong / any iterable of triples
    functions = {n for n in ref.__all__ if callable(getattr(ref, n)) and n[0].islower()}
    assert functions - covered - exempt == set()


@MODULES
@pytest.mark.parametrize(
    "probs",
    [[0.5, 0.5 + 9e-7], [0.5, 0.5 - 9e-7], [1.0 - 1e-7], [0.2] * 5],
    ids=["over-by-9e-7", "under-by-9e-7", "single", "fifths"],
)
def test_probabilities_within_1e_6_are_accepted(mod, probs):
    """The tolerance is 1e-6 on the sum: just inside it is valid input."""
    assert mod.sample(probs, random.Random(0)) in range(len(probs))
    assert mod.kl(probs, probs) == 0.0


# --------------------------------------------------- nothing changes on bad input


@MODULES
def test_failed_rlhf_step_changes_nothing(mod):
    """Validation happens before any mutation or any draw from the rng."""
    for kwargs in ({"lr": NAN}, {"ppo_epochs": 0}, {"beta": -1.0}, {"eps": 0.0}):
        theta = {x: [0.1 * i for i in range(V)] for x in ref.PROMPTS}
        before = copy_policy(theta)
        r = random.Random(5)
        state = r.getstate()
        with pytest.raises(ValueError, match=name(next(iter(kwargs)))):
            mod.rlhf_step(theta, ref.init_policy(), W, "help me", r, **kwargs)
        assert theta == before
        assert r.getstate() == state


@MODULES
def test_failed_train_rlhf_changes_nothing(mod):
    for kwargs, exc in (
        ({"lr": 0.0}, ValueError),
        ({"kl_ctl": "pid"}, ValueError),
        ({"seed": 1.5}, TypeError),
        ({"steps": 0}, ValueError),
        ({"kl_threshold": -1.0}, ValueError),
    ):
        theta = ref.init_policy()
        args = {"steps": 10, "seed": 0, **kwargs}
        with pytest.raises(exc, match=name(next(iter(kwargs)))):
            mod.train_rlhf(theta, ref.init_policy(), W, **args)
        assert theta == ref.init_policy()


@MODULES
def test_failed_rm_train_step_changes_nothing(mod):
    w = dict(W)
    with pytest.raises(ValueError):
        mod.rm_train_step(w, "help me", "clear", "rude", -1.0)
    assert w == W
    w_bad = {**W, "zzz": NAN}
    with pytest.raises(ValueError):
        mod.train_rm(PAIRS, 1, 0.1, w_bad)
    assert w_bad["clear"] == W["clear"]


@MODULES
def test_failed_dpo_step_changes_nothing(mod):
    theta = ref.init_policy()
    with pytest.raises(ValueError):
        mod.dpo_step(theta, ref.init_policy(), "help me", "clear", "clear hello")
    assert theta == ref.init_policy()


@MODULES
def test_failed_sample_does_not_draw(mod):
    r = random.Random(3)
    state = r.getstate()
    with pytest.raises(ValueError):
        mod.sample([0.5, 0.6], r)
    assert r.getstate() == state


# --------------------------------------------------------- large finite inputs work


@MODULES
def test_large_finite_inputs_are_not_errors(mod):
    """+-1e4 is valid everywhere a logit is taken (SPEC section 4)."""
    big = [1e4, -1e4, 1e4, 0.0, -1e4, 3.0, 1e4, -1e4]
    theta = {x: list(big) for x in ref.PROMPTS}
    assert math.isfinite(mod.expected_score(theta, W))
    mod.softmax(big)
    mod.log_softmax(big)
    mod.clipped_surrogate(big, 0, 0.25, 1.0, 0.2)
    mod.clipped_surrogate_grad(big, 0, 0.25, -1.0, 0.2)
    mod.dpo_step(theta, ref.init_policy(), "help me", "clear", "wrong")
    mod.rlhf_step(theta, ref.init_policy(), W, "answer me", random.Random(1))
    mod.train_rlhf(theta, ref.init_policy(), W, 50, 0)
    assert mod.sigmoid(1e4) == 1.0 and mod.sigmoid(-1e4) == 0.0
    assert mod.kl_k1(-1e4, 0.0) == -1e4


# ------------------------------------------------------------------ numpy policies

# An array policy of the wrong shape: (its array, the exception that refuses it)
BAD_SHAPES = {
    "2x8": (np.zeros((2, V)), ValueError),
    "3x7": (np.zeros((P, V - 1)), ValueError),
    "flat24": (np.zeros(P * V), TypeError),
    "3x8x1": (np.zeros((P, V, 1)), TypeError),
    "empty": (np.zeros((0, V)), ValueError),
}

NUMPY_POLICY_CALLS = {
    "rlhf_step": lambda m, th, rf: m.rlhf_step(th, rf, W, "help me", random.Random(0)),
    "dpo_step": lambda m, th, rf: m.dpo_step(th, rf, "help me", "clear", "rude"),
    "train_rlhf": lambda m, th, rf: m.train_rlhf(th, rf, W, 20, 0),
    "expected_score": lambda m, th, rf: m.expected_score(th, W),
}
MUTATING = {"rlhf_step", "dpo_step", "train_rlhf"}


@MODULES
@pytest.mark.parametrize("fn", list(NUMPY_POLICY_CALLS))
@pytest.mark.parametrize("shape", list(BAD_SHAPES))
@pytest.mark.parametrize("which", ["theta", "ref"])
def test_numpy_policy_with_wrong_shape_is_refused(mod, fn, shape, which):
    if fn == "expected_score" and which == "ref":
        pytest.skip("expected_score has no ref argument")
    bad, exc = BAD_SHAPES[shape]
    good = np.zeros((P, V))
    args = (bad.copy(), good) if which == "theta" else (good, bad.copy())
    with pytest.raises(exc, match=name(which)):
        NUMPY_POLICY_CALLS[fn](mod, *args)


@MODULES
@pytest.mark.parametrize("fn", list(NUMPY_POLICY_CALLS))
def test_numpy_policy_with_nan_is_refused(mod, fn):
    bad = np.zeros((P, V))
    bad[2, 5] = NAN
    with pytest.raises(ValueError, match=r"^theta\['explain this'\]\[5\] must be finite, got nan$"):
        NUMPY_POLICY_CALLS[fn](mod, bad, np.zeros((P, V)))


def _readonly(a):
    a.flags.writeable = False
    return a


def _policy_variants():
    """Arrays holding the same logits: (the array, whether a call that reads it takes it, whether
    a call that updates it in place takes it). Only a writeable float64 array can be either."""
    base = np.arange(P * V, dtype=float).reshape(P, V) / 10.0
    wide = np.zeros((P, 2 * V))
    wide[:, ::2] = base
    return {
        "int64": (base.astype(np.int64), False, False),
        "float32": (base.astype(np.float32), False, False),
        "strided": (wide[:, ::2], True, True),
        "fortran": (np.asfortranarray(base), True, True),
        "readonly": (_readonly(base.copy()), True, False),
        "big-endian": (base.astype(">f8"), False, False),
    }


@MODULES
@pytest.mark.parametrize("fn", list(NUMPY_POLICY_CALLS))
@pytest.mark.parametrize("variant", list(_policy_variants()))
def test_numpy_policy_with_unusual_layout_is_taken_or_refused(mod, fn, variant):
    """A float64 array of any layout is taken (and updated in place, however strided); any other
    dtype is refused with a TypeError naming theta, as is a read-only array the call would
    update: never silently copied and left untrained."""
    arr, readable, updatable = _policy_variants()[variant]
    original = np.array(arr, dtype=float)
    if not (updatable if fn in MUTATING else readable):
        with pytest.raises(TypeError, match=name("theta")):
            NUMPY_POLICY_CALLS[fn](mod, arr, np.zeros((P, V)))
        assert np.array_equal(np.asarray(arr, dtype=float), original), "a refused call must not mutate theta"
        return
    theta_ref = {x: [float(v) for v in original[i]] for i, x in enumerate(ref.PROMPTS)}
    got = NUMPY_POLICY_CALLS[fn](mod, arr, np.zeros((P, V)))
    expected = NUMPY_POLICY_CALLS[fn](ref, theta_ref, ref.init_policy())
    if fn == "train_rlhf":
        assert_history_equal(got, expected)
    elif fn == "rlhf_step":
        assert got["token"] == expected["token"]
        assert_close([got[k] for k in ("score", "kl", "reward")], [expected[k] for k in ("score", "kl", "reward")])
    else:
        assert_close(got, expected)
    if fn in MUTATING:
        assert_close(np.asarray(arr, dtype=float), policy_array(theta_ref), err_msg="theta must be updated in place")


@MODULES
@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
@pytest.mark.parametrize(
    "z, exc, message",
    [
        (np.zeros((2, 0)), ValueError, "z must not be empty"),
        (np.zeros((0, 3)), ValueError, "z must not be empty"),
        (np.zeros((2, 2, 2)), ValueError, "z must be 1-D or 2-D, got 3-D"),
        (np.array([[0.0, 1.0], [NAN, 0.0]]), ValueError, r"z\[2\] must be finite, got nan"),
        (np.array([["a", "b"]]), TypeError, "z must be an array of real numbers, got dtype <U1"),
    ],
    ids=["no-columns", "no-rows", "3d", "nan-row", "str-dtype"],
)
def test_numpy_softmax_bad_arrays(mod, fn, z, exc, message):
    with pytest.raises(exc, match=f"^{message}$"):
        getattr(mod, fn)(z)


@MODULES
@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
@pytest.mark.parametrize(
    "z",
    [
        np.array([[1, 2, 3], [0, 0, 5]]),
        np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]], dtype=np.float32),
        np.arange(12.0).reshape(3, 4)[:, ::2],
        np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    ],
    ids=["int", "float32", "strided", "fortran"],
)
def test_numpy_softmax_converts_arrays_of_real_numbers(mod, fn, z):
    got = getattr(mod, fn)(z)
    assert isinstance(got, np.ndarray) and got.dtype == np.float64 and got.shape == z.shape
    for i in range(z.shape[0]):
        assert_close(got[i], getattr(ref, fn)([float(v) for v in z[i]]))
