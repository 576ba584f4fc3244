"""rlhf_fast: the lesson's toy RLHF pipeline, exact and fast.

``import rlhf_fast as rl`` gives the lesson's functions (same names, arguments and numbers
for the same seed) backed by a Rust core. ``RLHF_FAST_BACKEND=python`` switches every
function to the pure-Python twin in :mod:`rlhf_fast.reference`; ``rlhf_fast.BACKEND`` says
which one is active. The Rust backend is never replaced silently: if the extension does
not import, importing ``rlhf_fast`` fails.
"""

import os as _os

from . import reference

BACKEND = _os.environ.get("RLHF_FAST_BACKEND", "rust")

if BACKEND == "rust":
    from ._fast import *  # noqa: F403
    from ._fast import __all__
elif BACKEND == "python":
    from .reference import *  # noqa: F403
    from .reference import __all__
else:
    raise ImportError(f"RLHF_FAST_BACKEND must be 'rust' or 'python', got {BACKEND!r}")

__all__ = ["BACKEND", "reference", *__all__]
__version__ = "0.1.0"
