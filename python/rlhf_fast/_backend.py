"""Which implementation the public API uses: ``RLHF_FAST_BACKEND`` = ``rust`` (default) or ``python``."""

import os

BACKEND = os.environ.get("RLHF_FAST_BACKEND", "rust")
if BACKEND not in ("rust", "python"):
    raise ImportError(f"RLHF_FAST_BACKEND must be 'rust' or 'python', got {BACKEND!r}")
