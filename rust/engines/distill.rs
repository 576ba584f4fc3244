//! Reward distillation's passes ([`distill_reward_model`]): a student reward head on frozen
//! random features fitted to a teacher's scores by SGD
//! ([`distill_step`](crate::methods::world::distill::distill_step)).

use super::driver::Monitor;
use super::world::{MAX_EPOCHS, MAX_VOCAB};
use crate::error::{finite, finite_slice, overflowed, positive, py_float, vec_with_capacity, Error, Result};
use crate::methods::world::check_shape;
use crate::methods::world::distill::{distill_step, response_features};

/// Most features a student has.
pub const MAX_FEATURES: usize = 1 << 16;

/// A student's frozen features: `phi` is `[vocab, d]` row-major.
#[derive(Clone, Copy, Debug)]
pub struct Features<'a> {
    pub phi: &'a [f64],
    pub vocab: usize,
    pub d: usize,
}

/// Responses of `response_len` tokens, row-major, with the teacher's score of each.
#[derive(Clone, Copy, Debug)]
pub struct Scored<'a> {
    pub responses: &'a [usize],
    pub response_len: usize,
    pub targets: &'a [f64],
}

/// What [`distill_reward_model`] fits: the head `theta` (`d`), its bias, and the mean squared
/// error of each pass (measured on each response before its step).
#[derive(Clone, Debug, PartialEq)]
pub struct Student {
    pub theta: Vec<f64>,
    pub bias: f64,
    pub epoch_mse: Vec<f64>,
}

/// The student after `epochs` passes of [`distill_step`] over the scored responses, in order,
/// from `theta = 0`, `b = 0`, the step decaying linearly from `lr` towards 0 over the `K =
/// epochs * n` steps (step `k` takes `lr * ((K - k) / K)`, transformers' default schedule: a
/// constant step leaves SGD circling the least-squares fit at a distance set by the step; the
/// decay lets it settle); the monitor ticked with each pass's responses. A head
/// that overflows (2^512 in magnitude, or NaN) after a pass, or a pass whose squared error
/// does, stops the training: `distill diverged in epoch k`.
pub fn distill_reward_model(
    features: Features<'_>,
    scored: Scored<'_>,
    epochs: usize,
    lr: f64,
    monitor: &Monitor,
) -> Result<Student> {
    let Features { phi, vocab, d } = features;
    let Scored { responses, response_len: len, targets } = scored;
    if !(1..=MAX_VOCAB).contains(&vocab) {
        return Err(Error::invalid(format!("phi must have 1 to {MAX_VOCAB} rows (tokens), got {vocab}")));
    }
    if !(1..=MAX_FEATURES).contains(&d) {
        return Err(Error::invalid(format!("phi must have 1 to {MAX_FEATURES} columns (features), got {d}")));
    }
    check_shape("phi", phi.len(), vocab, d)?;
    finite_slice("phi", phi)?;
    let n = targets.len();
    if n == 0 {
        return Err(Error::invalid("targets must not be empty"));
    }
    check_shape("responses", responses.len(), n, len)?;
    finite_slice("targets", targets)?;
    if let Some(&a) = responses.iter().find(|&&a| a >= vocab) {
        return Err(Error::invalid(format!("responses has token {a}, past phi's {vocab} rows")));
    }
    if epochs > MAX_EPOCHS {
        return Err(Error::invalid(format!("epochs must be <= {MAX_EPOCHS}, got {epochs}")));
    }
    let lr = positive("lr", finite("lr", lr)?)?;

    let mut theta = vec_with_capacity(d, "the student's head")?;
    theta.resize(d, 0.0);
    let mut x = vec_with_capacity(d, "a response's features")?;
    x.resize(d, 0.0);
    let mut epoch_mse = vec_with_capacity(epochs, "the loss per epoch")?;
    let mut bias = 0.0;
    let total = (epochs * n) as f64;
    for epoch in 0..epochs {
        let mut squared = 0.0;
        for (i, &target) in targets.iter().enumerate() {
            response_features(phi, d, &responses[i * len..(i + 1) * len], &mut x);
            let remaining = total - (epoch * n + i) as f64;
            let error = distill_step(&mut theta, &mut bias, &x, target, lr * (remaining / total));
            squared += error * error;
        }
        let overflow = if overflowed(&theta) || overflowed(&[bias]) {
            Some("the student's head")
        } else if !squared.is_finite() {
            // The head can swing past 1e154 and back within a pass as the step decays.
            Some("its squared error")
        } else {
            None
        };
        if let Some(what) = overflow {
            return Err(Error::Diverged(format!(
                "distill_reward_model diverged in epoch {epoch}: {what} overflowed (lr={})",
                py_float(lr)
            )));
        }
        epoch_mse.push(squared / n as f64);
        monitor.tick(n as u64)?;
    }
    Ok(Student { theta, bias, epoch_mse })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fit(phi: &[f64], vocab: usize, d: usize, responses: &[usize], len: usize, targets: &[f64]) -> Result<Student> {
        let features = Features { phi, vocab, d };
        distill_reward_model(features, Scored { responses, response_len: len, targets }, 200, 0.2, &Monitor::default())
    }

    #[test]
    fn a_student_with_the_teachers_own_features_recovers_it() {
        // phi = identity: the student can be the teacher exactly, and least squares finds it.
        let teacher = [0.5, -1.0, 2.0];
        let phi = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        let responses = [0, 1, 1, 2, 0, 2, 2, 2, 0, 0, 1, 0];
        let targets: Vec<f64> = responses.chunks(2).map(|y| teacher[y[0]] + teacher[y[1]]).collect();
        let student = fit(&phi, 3, 3, &responses, 2, &targets).unwrap();
        for (y, t) in responses.chunks(2).zip(&targets) {
            let s = student.bias + student.theta[y[0]] + student.theta[y[1]];
            assert!((s - t).abs() < 1e-9, "{y:?}: {s} vs {t}");
        }
        assert!(student.epoch_mse[0] > 0.1 && *student.epoch_mse.last().unwrap() < 1e-18);
    }

    #[test]
    fn refusals_name_their_argument() {
        let bad = |phi: &[f64], d, responses: &[usize], targets: &[f64], lr: f64| {
            let features = Features { phi, vocab: 2, d };
            let scored = Scored { responses, response_len: 1, targets };
            distill_reward_model(features, scored, 1, lr, &Monitor::default()).unwrap_err().to_string()
        };
        assert!(bad(&[1.0, 2.0], 2, &[0], &[1.0], 0.1).contains("phi holds 2 values, not 2 x 2"));
        assert!(bad(&[1.0, f64::NAN], 1, &[0], &[1.0], 0.1).contains("phi"));
        assert!(bad(&[1.0, 2.0], 1, &[2], &[1.0], 0.1).contains("token 2"));
        assert!(bad(&[1.0, 2.0], 1, &[0], &[f64::INFINITY], 0.1).contains("targets"));
        assert!(bad(&[1.0, 2.0], 1, &[0], &[], 0.1).contains("targets must not be empty"));
        assert!(bad(&[1.0, 2.0], 1, &[0], &[1.0], -1.0).contains("lr"));
        assert!(bad(&[1.0, 2.0], 0, &[0], &[1.0], 0.1).contains("columns"));
    }

    #[test]
    fn a_step_too_large_diverges_by_name() {
        let phi = [1.0, 1.0];
        let features = Features { phi: &phi, vocab: 1, d: 2 };
        let scored = Scored { responses: &[0, 0, 0, 0], response_len: 4, targets: &[1.0] };
        let err = distill_reward_model(features, scored, 10_000, 10.0, &Monitor::default()).unwrap_err();
        assert!(err.to_string().contains("distill_reward_model diverged in epoch"), "{err}");
    }

    #[test]
    fn a_pass_whose_squared_error_overflows_diverges_though_its_head_does_not() {
        // The first error is -1e155: its square passes the floats, the head moves by 1e145.
        let features = Features { phi: &[1.0], vocab: 1, d: 1 };
        let scored = Scored { responses: &[0], response_len: 1, targets: &[1e155] };
        let err = distill_reward_model(features, scored, 1, 1e-10, &Monitor::default()).unwrap_err();
        assert!(err.to_string().contains("diverged in epoch 0: its squared error overflowed"), "{err}");
    }
}
