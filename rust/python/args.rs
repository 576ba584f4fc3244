//! One converter per scalar argument name, for `#[pyo3(from_py_with = args::beta)]`.
//!
//! PyO3 converts a plain `f64` argument itself and words its own error (`must be real
//! number, not str`, without the argument's name). These converters apply the reference's
//! checks instead (`convert::real`, `convert::int`, `convert::option`), so a bad argument gets
//! the same exception and message on both backends; PyO3 passes their errors through as they
//! are. Each is named after its argument because `from_py_with` takes a path, not a call,
//! and keeps the argument's default a plain literal in the signature Python sees.

use pyo3::prelude::*;

use super::convert::{int, option, optional_real, real};
use crate::kernels::kl::KlPenalty;
use crate::methods::dpo::LossType;
use crate::methods::grpo::ScaleRewards;
use crate::methods::kl_control::KlController;

/// `pub fn name(arg) -> PyResult<type>`, checking `arg` with `check("name", arg)`.
macro_rules! converters {
    ($check:ident -> $type:ty: $($name:ident),+ $(,)?) => {
        $(
            pub fn $name(arg: &Bound<'_, PyAny>) -> PyResult<$type> {
                $check(stringify!($name), arg)
            }
        )+
    };
}

converters!(real -> f64:
    z, logp, logq, p_old_a, advantage, eps, beta, lr, target, horizon, vf_coef, cliprange_value, kl_threshold,
    label_smoothing, epsilon, value,
);
converters!(optional_real -> Option<f64>: epsilon_high);
converters!(int -> i64: steps, ppo_epochs, epochs, num_generations, num_iterations, n, samples, record_every);

pub fn kl_penalty(arg: &Bound<'_, PyAny>) -> PyResult<&'static str> {
    option("kl_penalty", arg, &KlPenalty::NAMES)
}

pub fn kl_ctl(arg: &Bound<'_, PyAny>) -> PyResult<&'static str> {
    option("kl_ctl", arg, &KlController::NAMES)
}

pub fn loss_type(arg: &Bound<'_, PyAny>) -> PyResult<&'static str> {
    option("loss_type", arg, &LossType::NAMES)
}

pub fn scale_rewards(arg: &Bound<'_, PyAny>) -> PyResult<&'static str> {
    option("scale_rewards", arg, &ScaleRewards::NAMES)
}
