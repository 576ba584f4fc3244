//! The KL coefficient's controllers: fixed, TRL's proportional one, the lesson's doubling rule.

use crate::error::{non_negative, positive, Error, Result};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KlController {
    Fixed {
        value: f64,
    },
    /// TRL's `AdaptiveKLController` (Ziegler et al. 2019).
    Adaptive {
        value: f64,
        target: f64,
        horizon: f64,
    },
    /// The lesson's rule: double above `target`, halve below `target / 2`.
    Doubling {
        value: f64,
        target: f64,
    },
}

impl KlController {
    /// The controllers' names, as `kl_ctl` takes them.
    pub const NAMES: [&'static str; 3] = ["fixed", "adaptive", "doubling"];

    /// The controller called `kind` starting at `beta` (`target` and `horizon` are used by
    /// the controllers that have them).
    pub fn make(kind: &str, beta: f64, target: f64, horizon: f64) -> Result<Self> {
        match kind {
            "fixed" => KlController::fixed(beta),
            "adaptive" => KlController::adaptive(beta, target, horizon),
            "doubling" => KlController::doubling(beta, target),
            other => {
                Err(Error::invalid(format!("kl_ctl must be one of ('fixed', 'adaptive', 'doubling'), got '{other}'")))
            }
        }
    }

    pub fn fixed(beta: f64) -> Result<Self> {
        Ok(KlController::Fixed { value: non_negative("beta", beta)? })
    }

    pub fn adaptive(init_kl_coef: f64, target: f64, horizon: f64) -> Result<Self> {
        Ok(KlController::Adaptive {
            value: non_negative("beta", init_kl_coef)?,
            target: positive("target", target)?,
            horizon: positive("horizon", horizon)?,
        })
    }

    pub fn doubling(init_kl_coef: f64, target: f64) -> Result<Self> {
        Ok(KlController::Doubling { value: non_negative("beta", init_kl_coef)?, target: positive("target", target)? })
    }

    /// The coefficient in force.
    #[inline]
    pub fn value(&self) -> f64 {
        match *self {
            KlController::Fixed { value }
            | KlController::Adaptive { value, .. }
            | KlController::Doubling { value, .. } => value,
        }
    }

    /// Feeds the controller the KL measured over `n_steps` samples, as TRL's `update`.
    #[inline]
    pub fn update(&mut self, current: f64, n_steps: f64) {
        match self {
            KlController::Fixed { .. } => {}
            KlController::Adaptive { value, target, horizon } => {
                let proportional_error = (current / *target - 1.0).clamp(-0.2, 0.2);
                let mult = 1.0 + proportional_error * n_steps / *horizon;
                *value *= mult;
            }
            KlController::Doubling { value, target } => {
                if current > *target {
                    *value *= 2.0;
                } else if current < *target / 2.0 {
                    *value /= 2.0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_moves_proportionally_and_saturates() {
        let mut c = KlController::adaptive(0.2, 6.0, 10_000.0).unwrap();
        c.update(6.0, 1.0);
        assert_eq!(c.value(), 0.2);
        c.update(7.2, 1.0); // error +0.2 exactly at the clip
        assert_eq!(c.value(), 0.2 * (1.0 + 0.2 / 10_000.0));
        let before = c.value();
        c.update(1e9, 100.0);
        assert_eq!(c.value(), before * (1.0 + 0.2 * 100.0 / 10_000.0));
    }

    #[test]
    fn doubling_doubles_halves_and_holds() {
        let mut c = KlController::doubling(1.0, 2.0).unwrap();
        c.update(3.0, 1.0);
        assert_eq!(c.value(), 2.0);
        c.update(1.5, 1.0);
        assert_eq!(c.value(), 2.0);
        c.update(0.5, 1.0);
        assert_eq!(c.value(), 1.0);
    }

    #[test]
    fn fixed_never_moves_and_arguments_are_checked() {
        let mut c = KlController::fixed(0.1).unwrap();
        c.update(100.0, 1.0);
        assert_eq!(c.value(), 0.1);
        assert!(KlController::fixed(-1.0).unwrap_err().to_string().contains("beta"));
        assert!(KlController::adaptive(0.1, 0.0, 1.0).unwrap_err().to_string().contains("target"));
        assert!(KlController::adaptive(0.1, 1.0, f64::NAN).unwrap_err().to_string().contains("horizon"));
        assert_eq!(
            KlController::make("doubling", 0.5, 2.0, f64::NAN).unwrap(),
            KlController::doubling(0.5, 2.0).unwrap()
        );
        assert!(KlController::make("pid", 0.5, 2.0, 1.0).unwrap_err().to_string().contains("kl_ctl"));
    }
}
