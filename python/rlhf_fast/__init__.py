"""rlhf_fast: the lesson's toy RLHF pipeline, exact and fast.

``import rlhf_fast as rl`` gives the lesson's functions (same names, arguments and numbers
for the same seed) backed by a Rust core, and sweeps of thousands of runs of any method
(:func:`sweep_rlhf`, :func:`sweep_rm`, :func:`sweep_dpo`, :func:`sweep_grpo`,
:func:`sweep_best_of_n`), each returning a :class:`SweepResult`. ``RLHF_FAST_BACKEND=python``
switches every function to its pure-Python twin in :mod:`rlhf_fast.reference`;
``rlhf_fast.BACKEND`` says which is active. The Rust backend is never replaced silently: if
the extension does not import, importing ``rlhf_fast`` fails.
"""

from . import reference
from ._backend import BACKEND

if BACKEND == "rust":
    from ._core import simd_paths
    from ._fast import *  # noqa: F403
    from ._fast import __all__ as _api
else:
    from .reference import *  # noqa: F403
    from .reference import __all__ as _api

    def simd_paths() -> list[str]:
        """The vector paths the sweep engine can run on this CPU, best last.

        These are the values ``sweep_rlhf(..., simd=...)`` takes; ``"portable"`` is always there
        (the reference backend has no vector unit: ``["python"]``).

        Returns
        -------
        list[str]
            Path names: ``"portable"``, then ``"avx2"`` and ``"avx512"`` where the CPU has them.

        Examples
        --------
        >>> paths = rl.simd_paths()
        >>> paths[0] in ("portable", "python")
        True
        """
        return ["python"]


from .result import SweepResult
from .sweep import sweep_best_of_n, sweep_dpo, sweep_grpo, sweep_rlhf, sweep_rm
from . import worlds
from .worlds import Judge, Labeller, RewardModel, World, WorldPairs, train_reward_model
from . import sequences
from .sequences import (SequencePairs, SequenceRewardModel, SequenceStats, SequenceWorld, response_lengths,
                        train_sequence_reward_model)
from . import distill
from .distill import Distilled, distill_reward_model, distillation
from .worlds import Safety
from . import safety
from .safety import safety_lab
from . import length, reasoning
from .length import length_lab
from .reasoning import ReasoningWorld, process_lab

__all__ = [
    "BACKEND",
    "reference",
    *_api,
    "simd_paths",
    "SweepResult",
    "sweep_rlhf",
    "sweep_rm",
    "sweep_dpo",
    "sweep_grpo",
    "sweep_best_of_n",
    "worlds",
    "World",
    "Labeller",
    "Judge",
    "WorldPairs",
    "RewardModel",
    "train_reward_model",
    "sequences",
    "SequenceWorld",
    "SequenceStats",
    "SequencePairs",
    "SequenceRewardModel",
    "train_sequence_reward_model",
    "response_lengths",
    "distill",
    "Distilled",
    "distill_reward_model",
    "distillation",
    "Safety",
    "safety",
    "safety_lab",
    "length",
    "length_lab",
    "reasoning",
    "ReasoningWorld",
    "process_lab",
]
__version__ = "0.1.0"
