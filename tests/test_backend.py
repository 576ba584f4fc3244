"""Backend selection (SPEC section 1, STYLE "Two backends, one API").

The default backend is Rust and is never silently replaced: if the extension is missing the
default-backend test fails (no skip), so a broken build cannot pass as "slow but green".
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest
from conftest import RUST, rust_only

import rlhf_fast as api
from rlhf_fast import reference as ref

# What the Rust backend computes itself: its own objects, from rlhf_fast._core or the thin
# wrappers of rlhf_fast._fast ...
COMPUTE_FUNCTIONS = (
    "seed_key",
    "make_dataset",
    "PreferenceSet",
    "bag",
    "dot",
    "sigmoid",
    "rm_train_step",
    "train_rm",
    "pairwise_accuracy",
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
    "dpo_step",
    "train_dpo",
    "grpo_step",
    "train_grpo",
    "best_of_n",
    "expected_score",
    "policy_kl",
)
# ... and the plumbing with nothing to compute that it takes from the reference as is.
SHARED = (
    "PROMPTS",
    "GOOD_WORDS",
    "BAD_WORDS",
    "VOCAB",
    "KL_TARGET",
    "KL_THRESHOLD",
    "KLWarning",
    "make_pair",
    "pairs_to_rows",
    "rows_to_pairs",
    "init_policy",
    "policy_logits",
    "FixedKLController",
    "AdaptiveKLController",
    "DoublingKLController",
    "make_kl_controller",
)

PROBE = (
    "import rlhf_fast\n"
    "print(rlhf_fast.BACKEND)\n"
    "print(rlhf_fast.softmax is rlhf_fast.reference.softmax)\n"
)


def run_python(code: str, backend: str | None, tmp_path) -> subprocess.CompletedProcess:
    """A fresh interpreter with RLHF_FAST_BACKEND set to ``backend`` (removed if None)."""
    env = dict(os.environ)
    env.pop("RLHF_FAST_BACKEND", None)
    if backend is not None:
        env["RLHF_FAST_BACKEND"] = backend
    return subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )


def test_default_backend_is_rust(tmp_path):
    """Fails (never skips) when the Rust extension is missing or broken."""
    proc = run_python(PROBE, None, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["rust", "False"], proc.stdout


def test_python_backend_is_the_reference(tmp_path):
    proc = run_python(PROBE, "python", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["python", "True"], proc.stdout


@pytest.mark.parametrize("value", ["cuda", "", "Python", "RUST", " rust"])
def test_invalid_backend_raises_import_error(tmp_path, value):
    code = (
        "try:\n"
        "    import rlhf_fast\n"
        "except ImportError as err:\n"
        "    print('ImportError:', err)\n"
        "else:\n"
        "    print('imported', rlhf_fast.BACKEND)\n"
    )
    proc = run_python(code, value, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ImportError:"), proc.stdout
    assert "RLHF_FAST_BACKEND" in proc.stdout


def test_backend_attribute_matches_environment():
    assert api.BACKEND == os.environ.get("RLHF_FAST_BACKEND", "rust")
    assert api.reference is ref


def test_api_exports_every_reference_name():
    for name in ref.__all__:
        assert hasattr(api, name), name
        assert name in api.__all__, name
    assert "BACKEND" in api.__all__


def test_constants_and_warning_class():
    for name in ("PROMPTS", "GOOD_WORDS", "BAD_WORDS", "VOCAB"):
        assert getattr(api, name) == getattr(ref, name)
    assert issubclass(api.KLWarning, ref.KLWarning)
    assert issubclass(api.KLWarning, UserWarning)


@pytest.mark.parametrize("name", [n for n in ref.__all__ if callable(getattr(ref, n)) and n != "KLWarning"])
def test_signatures_match_the_reference(name):
    """Drop-in: same parameter names, kinds and defaults as the reference."""
    expected = inspect.signature(getattr(ref, name))
    try:
        got = inspect.signature(getattr(api, name))
    except (TypeError, ValueError) as err:  # a builtin without a text signature
        pytest.fail(f"api.{name} has no inspectable signature: {err}")
    as_tuples = lambda sig: [(p.name, p.kind, p.default) for p in sig.parameters.values()]  # noqa: E731
    assert as_tuples(got) == as_tuples(expected)


@pytest.mark.skipif(RUST, reason="python backend only")
@pytest.mark.parametrize("name", ref.__all__)
def test_python_backend_uses_the_reference_objects(name):
    assert getattr(api, name) is getattr(ref, name)


def test_every_reference_name_is_tested_here():
    """A name added to reference.__all__ must be classified: computed in Rust or shared."""
    assert not set(COMPUTE_FUNCTIONS) & set(SHARED)
    assert sorted((*COMPUTE_FUNCTIONS, *SHARED)) == sorted(ref.__all__)


@rust_only
@pytest.mark.parametrize("name", COMPUTE_FUNCTIONS)
def test_rust_backend_replaces_compute_functions(name):
    got = getattr(api, name)
    assert got is not getattr(ref, name)
    assert got.__module__ in ("rlhf_fast._core", "rlhf_fast._fast"), got.__module__


@rust_only
@pytest.mark.parametrize("name", SHARED)
def test_rust_backend_shares_the_plumbing_with_the_reference(name):
    assert getattr(api, name) is getattr(ref, name)


@rust_only
def test_rust_extension_is_loaded():
    import rlhf_fast._core as core

    assert core.__file__.endswith((".so", ".pyd"))
