"""Twin of rust/methods/world/gao.rs: Gao, Schulman & Hilton's forms fitted by least squares.

Gold against ``d = sqrt(KL)``, without an intercept (``R(0) = 0``): ``form="bon"``
``R(d) = d (alpha - beta d)``, ``form="rl"`` ``R(d) = d (alpha - beta log d)``. Two unknowns:
the design's QR factors by Givens rotations, one point at a time, and the triangle is solved
by back-substitution (an error of the order of the condition number times the rounding, as
``numpy.linalg.lstsq``'s SVD). A design whose smaller singular value is at most
``eps * max(points, 2)`` times the larger is of rank one, as ``lstsq`` with ``rcond=None``
decides, and gets its minimum-norm solution, as ``lstsq`` gives.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

EPSILON = sys.float_info.epsilon


def fit_gao(d: Sequence[float], gold: Sequence[float], bon: bool) -> tuple[float, float]:
    """``(alpha, beta)``: the coefficients of ``(d, -d^2)`` (``bon``) or ``(d, -d log d)``
    (``rl``) fitted to ``gold`` over the points with ``d > 0`` and both finite (two at least)."""
    form = "'bon'" if bon else "'rl'"
    kept = 0
    d_max = -math.inf
    # R = [[r11, r12], [0, r22]] and Q^T gold = (b1, b2), updated point by point
    r11 = r12 = r22 = b1 = b2 = 0.0
    design_overflowed = False
    for x, y in zip(d, gold):
        if not (math.isfinite(x) and math.isfinite(y) and x > 0.0):
            continue
        kept += 1
        d_max = max(d_max, x)
        second = -x * x if bon else -x * math.log(x)
        if not math.isfinite(second):
            design_overflowed = True
            continue
        # rotate (x, second | y) into the first row, then what is left into the second
        h = math.hypot(r11, x)
        c, s = r11 / h, x / h
        row_r12, rest = c * r12 + s * second, -s * r12 + c * second
        row_b1, rest_y = c * b1 + s * y, -s * b1 + c * y
        r11, r12, b1 = h, row_r12, row_b1
        h2 = math.hypot(r22, rest)
        if h2 > 0.0:
            c2, s2 = r22 / h2, rest / h2
            b2 = c2 * b2 + s2 * rest_y
            r22 = h2
    if kept < 2:
        raise ValueError(f"d must hold at least two points with d > 0 and a finite gold, got {kept}")
    if design_overflowed:
        raise FloatingPointError(f"fit_gao overflowed: d={d_max!r} is too large for the {form} form")
    alpha, beta = solve(r11, r12, r22, b1, b2, kept)
    if not (math.isfinite(alpha) and math.isfinite(beta)):
        raise FloatingPointError(f"fit_gao overflowed: alpha={alpha!r}, beta={beta!r}")
    return alpha, beta


def solve(r11: float, r12: float, r22: float, b1: float, b2: float, points: int) -> tuple[float, float]:
    """The least-squares solution from the triangle ``[[r11, r12], [0, r22]]`` (``r11 > 0``)
    and ``Q^T gold = (b1, b2)``, of minimum norm when the design is of rank one."""
    # the triangle scaled to its largest entry, so that no square below overflows
    scale = max(abs(r11), abs(r12), abs(r22))
    a, b, c = r11 / scale, r12 / scale, r22 / scale
    # singular values of [[a, b], [0, c]]: their sum and difference are these two hypots
    s_max = 0.5 * (math.hypot(a + c, b) + math.hypot(a - c, b))
    s_min = abs(a * c) / s_max
    if s_min > EPSILON * max(points, 2) * s_max:
        beta = b2 / r22
        return (b1 - r12 * beta) / r11, beta
    # rank one: the top right singular vector v of the triangle, and x = v (Rv . Q^T gold) / |Rv|^2
    angle = 0.5 * math.atan2(2.0 * a * b, a * a - b * b - c * c)
    v1, v2 = math.cos(angle), math.sin(angle)
    w1, w2 = a * v1 + b * v2, c * v2
    along = (w1 * b1 + w2 * b2) / (w1 * w1 + w2 * w2) / scale
    # a direction the fit does not use has a coefficient of 0, even when the other overflows
    return tuple(0.0 if v == 0.0 else v * along for v in (v1, v2))
