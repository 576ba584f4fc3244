//! Safe RLHF's Lagrange multiplier (Dai et al. 2023): maximise `E[R]` subject to
//! `E[C] <= limit` by PPO on `(R - lambda C) / (1 + lambda)` while `lambda` climbs when the
//! cost is over its limit and falls when it is under.
//!
//! The update is PKU-Alignment's `safe-rlhf` trainer's: SGD on `ln lambda` with the loss
//! `-(J_C - limit) * exp(ln lambda)`, i.e. `ln lambda += lr * lambda * (J_C - limit)`, then
//! `ln lambda` clamped at `ln lambda_max`; `J_C` is the mean cost-model score of the last
//! `window` responses (its `episode_cost_window_size`), or of the policy's last `window`
//! expected scores ([`CostEstimate`]). Working in `ln lambda` keeps `lambda > 0`: a
//! multiplier that starts at 0 stays there, so an adaptive one must start above it.
//!
//! That update is an integral controller: `lambda` answers the cost's error only once the
//! error has summed, and a policy that answers `lambda` only after many steps makes the pair
//! ring, so a run's last policy can sit well over or under its limit. `kp > 0` adds the
//! proportional term of Stooke, Achiam & Abbeel's PID Lagrangian (2020): the multiplier the
//! reward uses is `lambda_I + kp * (J_C - limit)`, clamped to `[0, lambda_max]`, where
//! `lambda_I` is Safe RLHF's `exp(ln lambda)` above (moved by its own value, as before). At
//! `kp = 0` it is Safe RLHF's update exactly.

use std::collections::VecDeque;

use crate::error::{finite, non_negative, positive, vec_with_capacity, Error, Result};

/// What `J_C` averages: the cost-model score of each step's sampled response (Safe RLHF's,
/// as noisy as one response), or the cost model's expected score under the policy, exact in a
/// bag world: the limit of a step that samples many responses, as Safe RLHF's batches do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CostEstimate {
    Sampled,
    Expected,
}

impl CostEstimate {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "sampled" => Ok(CostEstimate::Sampled),
            "expected" => Ok(CostEstimate::Expected),
            other => {
                Err(Error::invalid(format!("cost_estimate must be one of ('sampled', 'expected'), got '{other}'")))
            }
        }
    }
}

/// The most responses a cost window averages (a typo cannot ask for terabytes).
pub const MAX_COST_WINDOW: usize = 1 << 16;

/// How a run's multiplier moves: fixed at `lambda_init` (no `cost_limit`), or adapted towards
/// `cost_limit`.
#[derive(Clone, Debug, PartialEq)]
pub struct LagrangeParams {
    pub lambda_init: f64,
    pub cost_limit: Option<f64>,
    pub lr: f64,
    pub lambda_max: f64,
    pub window: usize,
    /// The proportional gain (0: Safe RLHF's integral update alone).
    pub kp: f64,
}

impl LagrangeParams {
    /// Checked settings: `0 <= lambda_init <= lambda_max`, `lambda_max` finite and `> 0`;
    /// with a `cost_limit` (finite) also `lr > 0`, `lambda_init > 0` and a window of 1 to
    /// [`MAX_COST_WINDOW`] responses; `kp >= 0` and finite. The names are the front end's
    /// arguments.
    pub fn new(
        lambda_init: f64,
        cost_limit: Option<f64>,
        lr: f64,
        lambda_max: f64,
        window: i64,
        kp: f64,
    ) -> Result<Self> {
        let lambda_init = non_negative("lambda_init", lambda_init)?;
        let lambda_max = positive("lambda_max", lambda_max)?;
        if lambda_init > lambda_max {
            return Err(Error::invalid(format!(
                "lambda_init must be <= lambda_max={}, got {}",
                crate::error::py_float(lambda_max),
                crate::error::py_float(lambda_init)
            )));
        }
        let window = match usize::try_from(window) {
            Ok(w) if (1..=MAX_COST_WINDOW).contains(&w) => w,
            _ => {
                return Err(Error::invalid(format!("cost_window must be in [1, {MAX_COST_WINDOW}], got {window}")));
            }
        };
        let lr = non_negative("lagrangian_lr", lr)?;
        let kp = non_negative("lagrangian_kp", kp)?;
        if let Some(limit) = cost_limit {
            finite("cost_limit", limit)?;
            positive("lagrangian_lr", lr)?;
            if lambda_init == 0.0 {
                return Err(Error::invalid(
                    "lambda_init must be > 0 with a cost_limit (the update moves ln lambda: 0 stays 0), got 0.0",
                ));
            }
        }
        Ok(LagrangeParams { lambda_init, cost_limit, lr, lambda_max, window, kp })
    }
}

/// A run's multiplier and the costs it has seen.
#[derive(Clone, Debug)]
pub struct LagrangeMultiplier {
    params: LagrangeParams,
    log_lambda: f64,
    log_lambda_max: f64,
    /// Safe RLHF's `exp(ln lambda)`, the integral term.
    integral: f64,
    /// What the reward uses: the integral, plus the proportional term with `kp > 0`.
    lambda: f64,
    window: VecDeque<f64>,
}

impl LagrangeMultiplier {
    /// The multiplier at `params.lambda_init`, its window empty.
    pub fn new(params: &LagrangeParams) -> Result<Self> {
        let capacity = if params.cost_limit.is_some() { params.window } else { 0 };
        let window: VecDeque<f64> = vec_with_capacity(capacity, "the cost window")?.into();
        Ok(LagrangeMultiplier {
            log_lambda: params.lambda_init.ln(),
            log_lambda_max: params.lambda_max.ln(),
            integral: params.lambda_init,
            lambda: params.lambda_init,
            params: params.clone(),
            window,
        })
    }

    /// The multiplier the next step's reward uses.
    pub fn value(&self) -> f64 {
        self.lambda
    }

    /// The step's cost (a response's cost-model score, or its expectation under the policy):
    /// with a limit, `J_C` (the window's mean, summed oldest first) moves `ln lambda` by
    /// `lr * lambda * (J_C - limit)`, clamped at `ln lambda_max`, and the multiplier becomes
    /// `exp(ln lambda) + kp * (J_C - limit)` in `[0, lambda_max]`; a fixed multiplier ignores
    /// it.
    pub fn observe(&mut self, cost: f64) {
        let Some(limit) = self.params.cost_limit else { return };
        if self.window.len() == self.params.window {
            self.window.pop_front();
        }
        self.window.push_back(cost);
        let mut total = 0.0;
        for &c in &self.window {
            total += c;
        }
        let mean_cost = total / self.window.len() as f64;
        let error = mean_cost - limit;
        self.log_lambda += self.params.lr * self.integral * error;
        if self.log_lambda > self.log_lambda_max {
            self.log_lambda = self.log_lambda_max;
        }
        self.integral = self.log_lambda.exp();
        self.lambda = if self.params.kp > 0.0 {
            (self.integral + self.params.kp * error).clamp(0.0, self.params.lambda_max)
        } else {
            self.integral
        };
    }
}

/// `(w - lambda * cost) / (1 + lambda)` token by token into `out`: the per-token reward whose
/// sum over a response is Safe RLHF's combined advantage `(R - lambda C) / (1 + lambda)`
/// (before the KL penalty, which the caller keeps out of the normalisation).
pub fn combined_weights(weights: &[f64], cost_weights: &[f64], lambda: f64, out: &mut [f64]) {
    let scale = 1.0 + lambda;
    for ((o, &w), &c) in out.iter_mut().zip(weights).zip(cost_weights) {
        *o = (w - lambda * c) / scale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_update_is_the_formula_and_clamps_at_lambda_max() {
        let params = LagrangeParams::new(0.5, Some(1.0), 0.1, 2.0, 2, 0.0).unwrap();
        let mut m = LagrangeMultiplier::new(&params).unwrap();
        m.observe(3.0); // J = 3
        let log1 = 0.5f64.ln() + 0.1 * 0.5 * 2.0;
        assert_eq!(m.value(), log1.exp());
        m.observe(-1.0); // J = (3 - 1) / 2 = 1: no move
        assert_eq!(m.value(), log1.exp());
        m.observe(1e6); // far over: clamped
        assert_eq!(m.value(), 2.0f64.ln().exp());
    }

    #[test]
    fn a_fixed_multiplier_never_moves_and_settings_are_checked() {
        let mut m = LagrangeMultiplier::new(&LagrangeParams::new(0.0, None, 0.0, 1.0, 1, 0.0).unwrap()).unwrap();
        m.observe(5.0);
        assert_eq!(m.value(), 0.0);
        assert!(LagrangeParams::new(0.0, Some(1.0), 0.1, 1.0, 1, 0.0).is_err());
        assert!(LagrangeParams::new(2.0, None, 0.1, 1.0, 1, 0.0).is_err());
        assert!(LagrangeParams::new(1.0, Some(f64::NAN), 0.1, 2.0, 1, 0.0).is_err());
        assert!(LagrangeParams::new(1.0, Some(1.0), 0.0, 2.0, 1, 0.0).is_err());
        assert!(LagrangeParams::new(1.0, Some(1.0), 0.1, 2.0, 0, 0.0).is_err());
        assert!(LagrangeParams::new(1.0, None, 0.1, f64::INFINITY, 1, 0.0).is_err());
    }

    #[test]
    fn the_proportional_term_answers_the_error_now_and_stays_in_bounds() {
        let params = LagrangeParams::new(1.0, Some(0.5), 0.1, 3.0, 1, 2.0).unwrap();
        let mut m = LagrangeMultiplier::new(&params).unwrap();
        m.observe(0.75); // error +0.25: the integral moves by 0.1 * 1 * 0.25
        let integral = (0.1f64 * 0.25).exp();
        assert_eq!(m.value(), integral + 2.0 * 0.25);
        m.observe(-10.0); // window of one: error -10.5, far under: clamped at 0
        assert_eq!(m.value(), 0.0);
        m.observe(10.0); // far over: clamped at lambda_max
        assert_eq!(m.value(), 3.0);
        assert!(LagrangeParams::new(1.0, Some(0.5), 0.1, 3.0, 1, -1.0).is_err());
        assert!(LagrangeParams::new(1.0, Some(0.5), 0.1, 3.0, 1, f64::NAN).is_err());
    }

    #[test]
    fn combined_weights_at_zero_are_the_weights() {
        let (w, c) = ([1.5, -0.25, 0.0], [2.0, 0.0, 3.0]);
        let mut out = [0.0; 3];
        combined_weights(&w, &c, 0.0, &mut out);
        assert_eq!(out, w);
        combined_weights(&w, &c, 1.0, &mut out);
        assert_eq!(out, [-0.25, -0.125, -1.5]);
    }
}
