"""Twin of rust/kernels/: the numerical kernels every method shares, knowing nothing of RLHF.

Rows of logits in; probabilities, log-probabilities, divergences, samples and a policy's
exact statistics out (:mod:`.softmax`, :mod:`.logistic`, :mod:`.kl`, :mod:`.sampling`,
:mod:`.policy`). Nothing here checks its arguments: the callers have
(:mod:`rlhf_fast._checks`).

``rust/kernels/fastmath.rs`` (vectorisable ``exp``/``ln``) and ``rust/kernels/simd.rs`` (the
vector types) have no twin: theirs is libm's ``math.exp``/``math.log`` on plain floats, which
they approximate or vectorise.
"""
