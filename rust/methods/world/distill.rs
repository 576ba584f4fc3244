//! One SGD step of reward distillation: a small student reward head on frozen features,
//! fitted to a large teacher reward model's scores.
//!
//! The student sees a token `a` only through its feature vector `phi[a]` (`d` numbers, a
//! fixed random projection of the vocabulary), so its score of a bag of tokens `y` is
//! `b + theta . x(y)` with `x(y) = sum_i phi[y_i]`: at most a `d`-dimensional subspace of the
//! `vocab`-dimensional token weights the teacher has. The loss on one response with the
//! teacher's score `t` is the squared error `(b + theta . x(y) - t)^2 / 2` (reward
//! distillation as regression on scores). The passes over the responses are
//! `engines::distill::distill_reward_model`'s.

/// `x(y) = sum_i phi[y_i]` into `x` (`d` long), tokens in order; `phi` is `[vocab, d]`
/// row-major and every token indexes a row of it.
#[inline]
pub fn response_features(phi: &[f64], d: usize, response: &[usize], x: &mut [f64]) {
    x.fill(0.0);
    for &token in response {
        for (xk, &p) in x.iter_mut().zip(&phi[token * d..(token + 1) * d]) {
            *xk += p;
        }
    }
}

/// One step of `lr` on the response with features `x` and teacher score `target`: with
/// `e = b + sum_k theta_k x_k - target` (the sum left to right, from `b`), `theta_k -= (lr e)
/// x_k` and `b -= lr e`. Returns `e`.
#[inline]
pub fn distill_step(theta: &mut [f64], bias: &mut f64, x: &[f64], target: f64, lr: f64) -> f64 {
    let mut prediction = *bias;
    for (&t, &xk) in theta.iter().zip(x) {
        prediction += t * xk;
    }
    let error = prediction - target;
    let step = lr * error;
    for (t, &xk) in theta.iter_mut().zip(x) {
        *t -= step * xk;
    }
    *bias -= step;
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_add_the_rows_of_the_tokens() {
        let phi = [1.0, 2.0, 10.0, 20.0, 100.0, 200.0];
        let mut x = [7.0, 7.0];
        response_features(&phi, 2, &[2, 0, 2], &mut x);
        assert_eq!(x, [201.0, 402.0]);
    }

    #[test]
    fn the_step_follows_the_squared_error_gradient() {
        let x = [0.3, -1.2, 0.7];
        let target = 0.9;
        let loss = |theta: &[f64], b: f64| {
            let e = b + theta.iter().zip(&x).map(|(t, xk)| t * xk).sum::<f64>() - target;
            0.5 * e * e
        };
        let (theta, bias) = (vec![0.4, -0.2, 0.5], 0.1);
        let (mut next, mut next_bias) = (theta.clone(), bias);
        let lr = 1e-3;
        distill_step(&mut next, &mut next_bias, &x, target, lr);
        let h = 1e-6;
        for k in 0..3 {
            let (mut up, mut down) = (theta.clone(), theta.clone());
            up[k] += h;
            down[k] -= h;
            let gradient = (loss(&up, bias) - loss(&down, bias)) / (2.0 * h);
            assert!(((theta[k] - next[k]) / lr - gradient).abs() < 1e-8, "theta[{k}]");
        }
        let gradient = (loss(&theta, bias + h) - loss(&theta, bias - h)) / (2.0 * h);
        assert!(((bias - next_bias) / lr - gradient).abs() < 1e-8, "bias");
    }

    #[test]
    fn a_full_step_on_a_unit_feature_lands_on_the_target() {
        // lr = 1 / (|x|^2 + 1): the prediction moves exactly to the target.
        let x = [1.0, 0.0];
        let (mut theta, mut bias) = (vec![0.0, 0.0], 0.0);
        distill_step(&mut theta, &mut bias, &x, 3.0, 0.5);
        assert_eq!(bias + theta[0], 3.0);
    }
}
