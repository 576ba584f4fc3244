"""The docs a user reads: numpydoc sections on every public function and class, one text for
both backends, and Examples that run (issue 9, item 8).

For every callable of ``rlhf_fast.reference.__all__`` (and the public methods of the classes
among them), the sweep front ends, ``SweepResult`` and ``simd_paths``:

- the reference's docstring has a summary line and the numpydoc sections: Parameters where it
  takes parameters, Returns where it returns something, Examples with ``>>>``;
- the Rust backend's object (a ``_core`` builtin, or a ``_fast`` adapter that takes the
  reference's text) has the same docstring;
- the Examples run as doctests, with ``rl`` the reference and again the Rust backend, so an
  example that prints a wrong value fails on either.
"""

from __future__ import annotations

import ast
import doctest
import inspect
import types
from pathlib import Path

import numpy as np
import pytest

import rlhf_fast
import rlhf_fast.sweep as sweep_module
from rlhf_fast import _core, _fast
from rlhf_fast import reference as ref

SWEEPS = ("sweep_rlhf", "sweep_rm", "sweep_dpo", "sweep_grpo", "sweep_best_of_n")
# The public methods of the classes, beyond their constructors (the reference's
# PreferenceSet.fit is the engine's loop, not a method of the Rust class).
METHODS = {
    "PreferenceSet": ("make_dataset", "vocab", "to_pairs"),
    "FixedKLController": ("update",),
    "AdaptiveKLController": ("update",),
    "DoublingKLController": ("update",),
    "SweepResult": ("from_engine", "run", "w", "nbytes", "summary", "summary_table", "to_pandas", "to_arrow",
                    "plot"),
}


def _python_simd_paths_doc() -> str:
    """The docstring of the python backend's ``simd_paths``, which exists only under that backend."""
    tree = ast.parse(Path(rlhf_fast.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "simd_paths":
            return ast.get_docstring(node)
    raise AssertionError("rlhf_fast/__init__.py defines no simd_paths")


def _doc(obj) -> str:
    """``obj``'s docstring, cleaned, without the ``name(signature)\\n--\\n\\n`` PyO3 may prepend."""
    text = obj if isinstance(obj, str) else obj.__doc__
    assert text, f"{obj!r} has no docstring"
    text = inspect.cleandoc(text)
    head, sep, rest = text.partition("\n--\n\n")
    if sep and "(" in head and "\n" not in head:
        text = rest
    return text


def _member(owner, name: str):
    """A class attribute as documented: the property itself, else the function or descriptor."""
    raw = inspect.getattr_static(owner, name)
    return raw if isinstance(raw, property) else getattr(owner, name)


def _names() -> list[str]:
    names = []
    for name in ref.__all__:
        obj = getattr(ref, name)
        if not callable(obj):
            continue
        names.append(name)
        names.extend(f"{name}.{m}" for m in METHODS.get(name, ()))
    names += [*SWEEPS, "SweepResult", *(f"SweepResult.{m}" for m in METHODS["SweepResult"]), "simd_paths"]
    return names


NAMES = _names()


def _resolve(namespace, dotted: str):
    head, _, method = dotted.partition(".")
    obj = getattr(namespace, head)
    return _member(obj, method) if method else obj


def _reference_namespace():
    ns = types.SimpleNamespace(**{n: getattr(ref, n) for n in dir(ref) if not n.startswith("_")})
    ns.SweepResult = rlhf_fast.SweepResult
    ns.simd_paths = lambda: ["python"]
    for name in SWEEPS:
        setattr(ns, name, getattr(sweep_module, name))
    return ns


def _rust_namespace():
    ns = types.SimpleNamespace(**{n: getattr(_fast, n) for n in dir(_fast) if not n.startswith("_")})
    ns.SweepResult = rlhf_fast.SweepResult
    ns.simd_paths = _core.simd_paths
    for name in SWEEPS:
        setattr(ns, name, getattr(sweep_module, name))
    return ns


BACKENDS = {
    "reference": (_reference_namespace, sweep_module._ReferenceEngines),
    "rust": (_rust_namespace, _core),
}


def _reference_doc(dotted: str) -> str:
    if dotted == "simd_paths":
        return _python_simd_paths_doc()
    return _doc(_resolve(_reference_namespace(), dotted))


def _takes_parameters(obj) -> bool:
    if isinstance(obj, property):
        return False
    if inspect.isclass(obj):
        if issubclass(obj, BaseException):
            return False
        obj = obj.__init__
    try:
        params = list(inspect.signature(obj).parameters.values())
    except (TypeError, ValueError):
        return False
    return any(p.name not in ("self", "cls") for p in params)


def _returns(obj) -> bool:
    if inspect.isclass(obj):
        return False
    if isinstance(obj, property):
        return True
    annotation = inspect.signature(obj).return_annotation
    return annotation not in (None, "None")


def _sections(text: str) -> set[str]:
    lines = text.split("\n")
    return {
        lines[i].strip()
        for i in range(len(lines) - 1)
        if lines[i].strip() and set(lines[i + 1].strip()) == {"-"} and len(lines[i + 1].strip()) == len(lines[i].strip())
    }


@pytest.mark.parametrize("dotted", NAMES)
def test_reference_docstring_has_numpydoc_sections(dotted):
    obj = _resolve(_reference_namespace(), dotted)
    text = _reference_doc(dotted)
    summary = text.split("\n")[0]
    assert summary.strip() and summary.endswith("."), f"{dotted}: the summary must be a sentence"
    assert len(text.split("\n")) == 1 or text.split("\n")[1] == "", f"{dotted}: the summary must be one line"
    sections = _sections(text)
    if _takes_parameters(obj):
        assert "Parameters" in sections, f"{dotted} lacks Parameters"
    if _returns(obj):
        assert sections & {"Returns", "Yields"}, f"{dotted} lacks Returns"
    assert "Examples" in sections and ">>>" in text.split("Examples\n--------", 1)[-1], f"{dotted} lacks Examples"
    indent = 8 if "." in dotted else 4  # a docstring's indentation in its source (or "/// ")
    assert all(len(line) + indent <= 100 for line in text.split("\n")), f"{dotted}: a line over 100 characters"


@pytest.mark.parametrize("dotted", NAMES)
def test_rust_docstring_is_the_reference_text(dotted):
    rust = _resolve(_rust_namespace(), dotted)
    assert _doc(rust) == _reference_doc(dotted)


@pytest.fixture(params=sorted(BACKENDS))
def backend(request, monkeypatch):
    """``rl`` for the examples; the sweep front ends run on the same backend's engines."""
    make_namespace, engines = BACKENDS[request.param]
    monkeypatch.setattr(sweep_module, "_engines", engines)
    return make_namespace()


@pytest.mark.parametrize("dotted", NAMES)
def test_examples_run(dotted, backend):
    obj = _resolve(backend, dotted)
    text = _reference_doc(dotted) if dotted == "simd_paths" else _doc(obj)
    test = doctest.DocTestParser().get_doctest(text, {"rl": backend, "np": np}, dotted, None, 0)
    assert test.examples, f"{dotted} has no examples"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    failures: list[str] = []
    result = runner.run(test, out=failures.append)
    if "matplotlib.pyplot" in __import__("sys").modules:
        __import__("matplotlib.pyplot").pyplot.close("all")
    assert result.failed == 0, "".join(failures)
