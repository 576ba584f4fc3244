//! Gao, Schulman & Hilton's functional forms fitted to gold against `d = sqrt(KL)` by least
//! squares without an intercept (`R(0) = 0`): `form="bon"` `R(d) = d (alpha - beta d)`,
//! `form="rl"` `R(d) = d (alpha - beta log d)`.
//!
//! Two unknowns: the design's QR factors by Givens rotations, one point at a time, and the
//! triangle is solved by back-substitution (error of the order of the condition number times
//! the rounding, as `numpy.linalg.lstsq`'s SVD). A design whose smaller singular value is at
//! most `eps * max(points, 2)` times the larger is of rank one, as `lstsq` with `rcond=None`
//! decides, and gets its minimum-norm solution, as `lstsq` gives.

use super::same_length;
use crate::error::{py_float, Error, Result};

/// The coefficients of `(d, -d^2)` (`bon`) or `(d, -d log d)` (`rl`) fitted to `gold` over the
/// points with `d > 0` and both finite; at least two are needed.
pub fn fit_gao(d: &[f64], gold: &[f64], bon: bool) -> Result<(f64, f64)> {
    same_length(("d", d.len()), ("gold", gold.len()))?;
    let form = if bon { "'bon'" } else { "'rl'" };
    let mut kept = 0usize;
    let mut d_max = f64::NEG_INFINITY;
    // R = [[r11, r12], [0, r22]] and Q^T gold = (b1, b2), updated point by point
    let (mut r11, mut r12, mut r22, mut b1, mut b2) = (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let mut design_overflowed = false;
    for (&x, &y) in d.iter().zip(gold) {
        if !(x.is_finite() && y.is_finite() && x > 0.0) {
            continue;
        }
        kept += 1;
        d_max = d_max.max(x);
        let second = if bon { -x * x } else { -x * x.ln() };
        if !second.is_finite() {
            design_overflowed = true;
            continue;
        }
        // rotate (x, second | y) into the first row, then what is left into the second
        let h = r11.hypot(x);
        let (c, s) = (r11 / h, x / h);
        let (row_r12, rest) = (c * r12 + s * second, -s * r12 + c * second);
        let (row_b1, rest_y) = (c * b1 + s * y, -s * b1 + c * y);
        (r11, r12, b1) = (h, row_r12, row_b1);
        let h2 = r22.hypot(rest);
        if h2 > 0.0 {
            let (c2, s2) = (r22 / h2, rest / h2);
            b2 = c2 * b2 + s2 * rest_y;
            r22 = h2;
        }
    }
    if kept < 2 {
        return Err(Error::invalid(format!(
            "d must hold at least two points with d > 0 and a finite gold, got {kept}"
        )));
    }
    if design_overflowed {
        return Err(Error::Diverged(format!(
            "fit_gao overflowed: d={} is too large for the {form} form",
            py_float(d_max)
        )));
    }
    let (alpha, beta) = solve(r11, r12, r22, b1, b2, kept);
    if !(alpha.is_finite() && beta.is_finite()) {
        return Err(Error::Diverged(format!("fit_gao overflowed: alpha={}, beta={}", py_float(alpha), py_float(beta))));
    }
    Ok((alpha, beta))
}

/// The least-squares solution from the triangle `[[r11, r12], [0, r22]]` (`r11 > 0`) and
/// `Q^T gold = (b1, b2)`, of minimum norm when the design is of rank one.
fn solve(r11: f64, r12: f64, r22: f64, b1: f64, b2: f64, points: usize) -> (f64, f64) {
    // the triangle scaled to its largest entry, so that no square below overflows
    let scale = r11.abs().max(r12.abs()).max(r22.abs());
    let (a, b, c) = (r11 / scale, r12 / scale, r22 / scale);
    // singular values of [[a, b], [0, c]]: their sum and difference are these two hypots
    let s_max = 0.5 * ((a + c).hypot(b) + (a - c).hypot(b));
    let s_min = (a * c).abs() / s_max;
    if s_min > f64::EPSILON * points.max(2) as f64 * s_max {
        let beta = b2 / r22;
        return ((b1 - r12 * beta) / r11, beta);
    }
    // rank one: the top right singular vector v of the triangle, and x = v (Rv . Q^T gold) / |Rv|^2
    let angle = 0.5 * (2.0 * a * b).atan2(a * a - b * b - c * c);
    let (v1, v2) = (angle.cos(), angle.sin());
    let (w1, w2) = (a * v1 + b * v2, c * v2);
    let along = (w1 * b1 + w2 * b2) / (w1 * w1 + w2 * w2) / scale;
    // a direction the fit does not use has a coefficient of 0, even when the other overflows
    let coefficient = |v: f64| if v == 0.0 { 0.0 } else { v * along };
    (coefficient(v1), coefficient(v2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_data_is_fitted_exactly() {
        let d = [0.5, 1.0, 2.0, 3.0];
        let bon: Vec<f64> = d.iter().map(|&x| x * (1.5 - 0.25 * x)).collect();
        let (alpha, beta) = fit_gao(&d, &bon, true).unwrap();
        assert!((alpha - 1.5).abs() < 1e-12 && (beta - 0.25).abs() < 1e-12, "{alpha} {beta}");
        let rl: Vec<f64> = d.iter().map(|&x| x * (0.7 - 0.3 * x.ln())).collect();
        let (alpha, beta) = fit_gao(&d, &rl, false).unwrap();
        assert!((alpha - 0.7).abs() < 1e-12 && (beta - 0.3).abs() < 1e-12, "{alpha} {beta}");
    }

    #[test]
    fn the_residual_is_orthogonal_to_the_design() {
        let d = [0.3, 0.9, 1.4, 2.2, 4.0];
        let gold = [0.1, 0.5, 0.2, -0.4, -2.0];
        let (alpha, beta) = fit_gao(&d, &gold, false).unwrap();
        let (mut dot_d, mut dot_second) = (0.0, 0.0);
        for (&x, &y) in d.iter().zip(&gold) {
            let residual = y - x * (alpha - beta * x.ln());
            dot_d += residual * x;
            dot_second += residual * -x * x.ln();
        }
        assert!(dot_d.abs() < 1e-12 && dot_second.abs() < 1e-12, "{dot_d} {dot_second}");
    }

    #[test]
    fn one_repeated_point_gets_the_minimum_norm_fit() {
        // d = 1 makes the rl form's second column 0: alpha alone fits, beta is 0
        let (alpha, beta) = fit_gao(&[1.0, 1.0, 1.0], &[0.5, 1.0, 1.5], false).unwrap();
        assert!((alpha - 1.0).abs() < 1e-15 && beta.abs() < 1e-15, "{alpha} {beta}");
        // d = 2 twice for bon: x on the row (2, -4), minimum norm: (2, -4) * mean / 20
        let (alpha, beta) = fit_gao(&[2.0, 2.0], &[1.0, 3.0], true).unwrap();
        assert!((alpha - 0.2).abs() < 1e-15 && (beta + 0.4).abs() < 1e-15, "{alpha} {beta}");
    }

    #[test]
    fn too_few_points_and_overflow_are_refused_by_name() {
        let err = fit_gao(&[1.0, 0.0, f64::NAN], &[1.0, 1.0, 1.0], true).unwrap_err();
        assert_eq!(err.to_string(), "d must hold at least two points with d > 0 and a finite gold, got 1");
        let err = fit_gao(&[1e-300, 2e-300], &[1e300, -1e300], true).unwrap_err();
        assert_eq!(err.to_string(), "fit_gao overflowed: alpha=-inf, beta=0.0");
        let err = fit_gao(&[1.0, 1e200], &[1.0, 1.0], true).unwrap_err();
        assert_eq!(err.to_string(), "fit_gao overflowed: d=1e+200 is too large for the 'bon' form");
        assert!(fit_gao(&[1.0], &[1.0, 2.0], true).is_err());
    }
}
