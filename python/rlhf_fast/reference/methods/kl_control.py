"""Twin of rust/methods/kl_control.rs: the KL coefficient's controllers.

A fixed beta; TRL's proportional controller (Ziegler et al. 2019); and the lesson's rule,
which doubles and halves beta, under its own name (SPEC section 2). Each holds the
coefficient in force as ``value`` and is fed the KL measured over ``n_steps`` samples.
"""

from __future__ import annotations

from ... import _checks as checks
from ..lesson import KL_TARGET

KL_CONTROLLERS = ("fixed", "adaptive", "doubling")


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, kl_coef: float):
        self.value = checks.non_negative("kl_coef", kl_coef)

    def update(self, current: float, n_steps: int) -> None:
        pass


class AdaptiveKLController:
    """TRL's proportional controller (Ziegler et al. 2019), formula for formula.

    ``err = clip(KL / target - 1, -0.2, 0.2)``; ``beta *= 1 + err * n_steps / horizon``.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        self.value = checks.non_negative("init_kl_coef", init_kl_coef)
        self.target = checks.positive("target", target)
        self.horizon = checks.positive("horizon", horizon)

    def update(self, current: float, n_steps: int) -> None:
        proportional_error = min(max(current / self.target - 1, -0.2), 0.2)
        mult = 1 + proportional_error * n_steps / self.horizon
        self.value *= mult


class DoublingKLController:
    """The lesson's rule: beta doubles when KL > target and halves when KL < target / 2."""

    def __init__(self, init_kl_coef: float, target: float):
        self.value = checks.non_negative("init_kl_coef", init_kl_coef)
        self.target = checks.positive("target", target)

    def update(self, current: float, n_steps: int) -> None:
        if current > self.target:
            self.value *= 2.0
        elif current < self.target / 2.0:
            self.value /= 2.0


def make_kl_controller(kind: str, beta: float, target: float = KL_TARGET, horizon: float = 10000.0):
    """The controller named ``kind`` (``fixed``, ``adaptive`` or ``doubling``) starting at ``beta``.

    ``target`` and ``horizon`` must be real numbers whatever the kind (the Rust signature takes
    floats); they are checked > 0 where the kind uses them.
    """
    kind = checks.option("kl_ctl", kind, KL_CONTROLLERS)
    beta = checks.non_negative("beta", beta)
    target = checks.real("target", target)
    horizon = checks.real("horizon", horizon)
    if kind == "fixed":
        return FixedKLController(beta)
    target = checks.positive("target", target)
    if kind == "adaptive":
        return AdaptiveKLController(beta, target, checks.positive("horizon", horizon))
    return DoublingKLController(beta, target)
