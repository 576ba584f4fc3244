"""Twin of rust/methods/kl_control.rs: the KL coefficient's controllers.

A fixed beta; TRL's proportional controller (Ziegler et al. 2019); and the lesson's rule,
which doubles and halves beta, under its own name (SPEC section 2). Each holds the
coefficient in force as ``value`` and is fed the KL measured over ``n_steps`` samples.
"""

from __future__ import annotations

import math

from ... import _checks as checks
from ..lesson import KL_TARGET

KL_CONTROLLERS = ("fixed", "adaptive", "doubling")


def _measured(current: float, n_steps: int) -> tuple[float, int]:
    """An update's arguments, checked: a finite KL and a count of samples."""
    return checks.finite("current", current), checks.count("n_steps", n_steps, 1)


def _updated(controller, value: float, current: float, n_steps: int) -> None:
    """Sets ``controller.value``, or raises ``FloatingPointError`` and leaves it as it was."""
    if not math.isfinite(value):
        raise FloatingPointError(
            f"{type(controller).__name__} overflowed: value {value!r} (current={current!r}, n_steps={n_steps})"
        )
    controller.value = value


class FixedKLController:
    """A constant KL coefficient: ``value`` never changes.

    Parameters
    ----------
    kl_coef : float
        The coefficient, >= 0.

    Attributes
    ----------
    value : float
        The coefficient in force.

    Raises
    ------
    TypeError, ValueError
        ``kl_coef`` not a finite real number >= 0: ``"kl_coef must be >= 0, got -1.0"``.

    Examples
    --------
    >>> ctl = rl.FixedKLController(0.1)
    >>> ctl.update(5.0, 1)
    >>> ctl.value
    0.1
    """

    def __init__(self, kl_coef: float):
        self.value = checks.non_negative("kl_coef", kl_coef)

    def update(self, current: float, n_steps: int) -> None:
        """Feed the controller a measured KL: a fixed coefficient ignores it.

        Parameters
        ----------
        current : float
            The KL measured over ``n_steps`` samples.
        n_steps : int
            How many samples ``current`` was measured on.

        Examples
        --------
        >>> ctl = rl.FixedKLController(0.1)
        >>> ctl.update(5.0, 1)
        >>> ctl.value
        0.1
        """
        _measured(current, n_steps)


class AdaptiveKLController:
    """TRL's proportional KL controller (Ziegler et al. 2019), formula for formula.

    ``err = clip(KL / target - 1, -0.2, 0.2)``; ``beta *= 1 + err * n_steps / horizon``.

    Parameters
    ----------
    init_kl_coef : float
        The starting coefficient, >= 0.
    target : float
        The KL to hold, > 0.
    horizon : float
        How many samples the coefficient takes to react, > 0.

    Attributes
    ----------
    value : float
        The coefficient in force.
    target, horizon : float
        As given.

    Raises
    ------
    TypeError, ValueError
        An argument not a finite real number in range, named: ``"target must be > 0, got
        0.0"``.

    Examples
    --------
    >>> ctl = rl.AdaptiveKLController(0.1, target=1.0, horizon=100.0)
    >>> ctl.update(3.0, 10)  # KL far above target: err = 0.2
    >>> round(ctl.value, 4)
    0.102
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        self.value = checks.non_negative("init_kl_coef", init_kl_coef)
        self.target = checks.positive("target", target)
        self.horizon = checks.positive("horizon", horizon)

    def update(self, current: float, n_steps: int) -> None:
        """Feed the controller a measured KL: ``value *= 1 + err * n_steps / horizon``.

        ``err = clip(KL / target - 1, -0.2, 0.2)``.

        Parameters
        ----------
        current : float
            The KL measured over ``n_steps`` samples.
        n_steps : int
            How many samples ``current`` was measured on.

        Examples
        --------
        >>> ctl = rl.AdaptiveKLController(0.1, target=1.0, horizon=100.0)
        >>> ctl.update(0.5, 10)  # KL below target: err = -0.2
        >>> round(ctl.value, 4)
        0.098
        """
        current, n_steps = _measured(current, n_steps)
        proportional_error = min(max(current / self.target - 1, -0.2), 0.2)
        mult = 1 + proportional_error * n_steps / self.horizon
        _updated(self, self.value * mult, current, n_steps)


class DoublingKLController:
    """The lesson's rule: beta doubles when KL > target and halves when KL < target / 2.

    Parameters
    ----------
    init_kl_coef : float
        The starting coefficient, >= 0.
    target : float
        The KL to hold, > 0.

    Attributes
    ----------
    value : float
        The coefficient in force.
    target : float
        As given.

    Raises
    ------
    TypeError, ValueError
        An argument not a finite real number in range, named: ``"init_kl_coef must be >= 0,
        got -1.0"``.

    Examples
    --------
    >>> ctl = rl.DoublingKLController(0.1, target=1.0)
    >>> ctl.update(2.0, 1)
    >>> ctl.value
    0.2
    """

    def __init__(self, init_kl_coef: float, target: float):
        self.value = checks.non_negative("init_kl_coef", init_kl_coef)
        self.target = checks.positive("target", target)

    def update(self, current: float, n_steps: int) -> None:
        """Feed the controller a measured KL: double or halve ``value``.

        Doubles above ``target``, halves below ``target / 2``.

        Parameters
        ----------
        current : float
            The KL measured over ``n_steps`` samples.
        n_steps : int
            How many samples ``current`` was measured on (unused: the rule looks at ``current``).

        Examples
        --------
        >>> ctl = rl.DoublingKLController(0.1, target=1.0)
        >>> ctl.update(0.2, 1)
        >>> ctl.value
        0.05
        """
        current, n_steps = _measured(current, n_steps)
        if current > self.target:
            _updated(self, self.value * 2.0, current, n_steps)
        elif current < self.target / 2.0:
            self.value /= 2.0


def make_kl_controller(kind: str, beta: float, target: float = KL_TARGET, horizon: float = 10000.0):
    """The controller named ``kind`` (``fixed``, ``adaptive`` or ``doubling``) starting at ``beta``.

    ``target`` and ``horizon`` must be real numbers whatever the kind (the Rust signature takes
    floats); they are checked > 0 where the kind uses them.

    Parameters
    ----------
    kind : str
        ``"fixed"``, ``"adaptive"`` or ``"doubling"`` (``train_rlhf``'s ``kl_ctl``).
    beta : float
        The starting coefficient, >= 0.
    target : float, optional
        The KL to hold (default ``KL_TARGET``, half of ``log len(VOCAB)``).
    horizon : float, optional
        The adaptive controller's horizon (default 10000.0).

    Returns
    -------
    FixedKLController or AdaptiveKLController or DoublingKLController

    Raises
    ------
    TypeError, ValueError
        An argument of the wrong type or out of range, named: ``"kl_ctl must be one of
        ('fixed', 'adaptive', 'doubling'), got 'pid'"``.

    Examples
    --------
    >>> ctl = rl.make_kl_controller("doubling", 0.1, target=1.0)
    >>> type(ctl).__name__, ctl.value
    ('DoublingKLController', 0.1)
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
