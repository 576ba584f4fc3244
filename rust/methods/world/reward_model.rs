//! One SGD step of a world's proxy reward model, linear in the response's token counts:
//! Bradley-Terry with TRL's RewardTrainer's `margin` and `center_rewards_coefficient`,
//! generalised to soft labels. With `m = R(first) - R(second)` and target `t`, the loss is
//! `-t log sigmoid(m - margin) - (1 - t) log sigmoid(-m - margin) + c (R(first) + R(second))^2`;
//! for a hard label `t = 1` it is TRL's exactly. The passes over the pairs are
//! `engines::world::train_reward_model`'s.

use crate::kernels::logistic::sigmoid;

/// `R(y) = sum_i w[y_i]`, left to right.
#[inline]
fn score(w: &[f64], response: &[usize]) -> f64 {
    let mut total = 0.0;
    for &token in response {
        total += w[token];
    }
    total
}

/// One step of `lr` on the pair `(first, second)` with label `target` and `margin`, `c`
/// being `center_rewards_coefficient`. Tokens must index `w`.
#[inline]
pub fn rm_pair_step(w: &mut [f64], first: &[usize], second: &[usize], target: f64, margin: f64, lr: f64, c: f64) {
    let r_a = score(w, first);
    let r_b = score(w, second);
    let m = r_a - r_b;
    // d loss / d m, each sigmoid taken where it does not cancel
    let d_m = -target * sigmoid(-(m - margin)) + (1.0 - target) * sigmoid(m + margin);
    let d_sum = 2.0 * c * (r_a + r_b);
    for &token in first {
        w[token] -= lr * (d_m + d_sum);
    }
    for &token in second {
        w[token] -= lr * (d_sum - d_m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_step_from_zero_moves_half_a_sigmoid() {
        let mut w = vec![0.0; 3];
        rm_pair_step(&mut w, &[0], &[1], 1.0, 0.0, 0.5, 0.0);
        assert_eq!(w, vec![0.25, -0.25, 0.0]);
        let mut w = vec![0.0; 3];
        rm_pair_step(&mut w, &[0], &[1], 0.5, 0.0, 0.5, 0.0);
        assert_eq!(w, vec![0.0, 0.0, 0.0]);
        // a margin asks for more: the step is larger
        let mut w = vec![0.0; 3];
        rm_pair_step(&mut w, &[0], &[1], 1.0, 1.0, 0.5, 0.0);
        assert_eq!(w[0], 0.5 * sigmoid(1.0));
    }

    #[test]
    fn the_step_follows_the_loss_gradient() {
        let (a, b, t, mu, c) = ([0, 0, 2], [1, 2, 2], 0.8, 0.3, 0.1);
        let loss = |w: &[f64]| {
            let (ra, rb) = (score(w, &a), score(w, &b));
            let m = ra - rb;
            -t * sigmoid(m - mu).ln() - (1.0 - t) * sigmoid(-m - mu).ln() + c * (ra + rb) * (ra + rb)
        };
        let w = vec![0.4, -0.2, 0.7];
        let mut next = w.clone();
        let lr = 1e-3;
        rm_pair_step(&mut next, &a, &b, t, mu, lr, c);
        for k in 0..3 {
            let h = 1e-6;
            let (mut up, mut down) = (w.clone(), w.clone());
            up[k] += h;
            down[k] -= h;
            let gradient = (loss(&up) - loss(&down)) / (2.0 * h);
            assert!(((w[k] - next[k]) / lr - gradient).abs() < 1e-7, "token {k}");
        }
    }
}
