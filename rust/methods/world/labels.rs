//! Who labels a world's pairs: a human (Bradley-Terry on the gold, then a flip) or an AI
//! judge (its own token values, a position bias, soft labels, one order or both). Each gets
//! the scores of both responses of every pair and its uniform draws in the order
//! `World.preferences` draws them (NumPy's PCG64), and returns the label of each pair: the
//! probability that the first response is preferred (0 or 1 when the label is hard).

use super::{same_length, uniforms};
use crate::error::{finite, non_negative, positive, py_float, vec_with_capacity, Error, Result};
use crate::kernels::logistic::sigmoid;

/// A probability in `[0, 1]`, else an error naming `name`.
fn probability(name: &str, value: f64) -> Result<f64> {
    let value = non_negative(name, value)?;
    if value > 1.0 {
        return Err(Error::invalid(format!("{name} must be a probability in [0, 1], got {}", py_float(value))));
    }
    Ok(value)
}

/// `sigmoid((first - second) / temperature)` of each pair: a temperature so small that the
/// margin passes the floats makes the preference certain.
fn preferences(score_first: &[f64], score_second: &[f64], temperature: f64) -> Result<Vec<f64>> {
    same_length(("score_first", score_first.len()), ("score_second", score_second.len()))?;
    positive("temperature", finite("temperature", temperature)?)?;
    let mut out = vec_with_capacity(score_first.len(), "the labels")?;
    out.extend(score_first.iter().zip(score_second).map(|(&a, &b)| sigmoid((a - b) / temperature)));
    Ok(out)
}

/// A human labeller's hard labels: the first response is preferred when
/// `prefer_uniforms[i] < sigmoid((gold_first - gold_second) / temperature)`, and the label is
/// flipped when `flip_uniforms[i] < flip`.
pub fn labeller_labels(
    gold_first: &[f64],
    gold_second: &[f64],
    temperature: f64,
    flip: f64,
    prefer_uniforms: &[f64],
    flip_uniforms: &[f64],
) -> Result<Vec<f64>> {
    let flip = probability("flip", flip)?;
    for (name, draws) in [("prefer_uniforms", prefer_uniforms), ("flip_uniforms", flip_uniforms)] {
        same_length(("gold_first", gold_first.len()), (name, draws.len()))?;
        uniforms(name, draws)?;
    }
    let mut labels = preferences(gold_first, gold_second, temperature)?;
    for ((label, &u_prefer), &u_flip) in labels.iter_mut().zip(prefer_uniforms).zip(flip_uniforms) {
        let prefer_first = u_prefer < *label;
        let flipped = u_flip < flip;
        *label = if prefer_first != flipped { 1.0 } else { 0.0 };
    }
    Ok(labels)
}

/// How an AI judge labels a pair (its token values are the caller's: the scores).
#[derive(Clone, Copy, Debug)]
pub struct JudgeParams {
    pub temperature: f64,
    /// Chance of preferring the response shown first regardless.
    pub position_bias: f64,
    /// Labels are the judge's probabilities rather than draws from them.
    pub soft: bool,
    /// Ask with both orders and average (cancels the position bias).
    pub both_orders: bool,
}

/// An AI judge's labels from its scores of both responses: `P(first preferred)` is
/// `position_bias + (1 - position_bias) * preference` when the first is shown first,
/// `(1 - position_bias) * preference` when it is shown second; shown first when
/// `order_uniforms[i] < 0.5` (none with `both_orders`, which averages the two), and the hard
/// label is `draw_uniforms[i] < P` (none when `soft`, which returns `P`).
pub fn judge_labels(
    score_first: &[f64],
    score_second: &[f64],
    params: JudgeParams,
    order_uniforms: &[f64],
    draw_uniforms: &[f64],
) -> Result<Vec<f64>> {
    let pb = probability("position_bias", params.position_bias)?;
    let n = score_first.len();
    for (name, draws, needed) in
        [("order_uniforms", order_uniforms, !params.both_orders), ("draw_uniforms", draw_uniforms, !params.soft)]
    {
        let expected = if needed { n } else { 0 };
        if draws.len() != expected {
            return Err(Error::invalid(format!("{name} must hold {expected} draws, got {}", draws.len())));
        }
        uniforms(name, draws)?;
    }
    let mut labels = preferences(score_first, score_second, params.temperature)?;
    for (i, label) in labels.iter_mut().enumerate() {
        let shown_first = pb + (1.0 - pb) * *label;
        let shown_second = (1.0 - pb) * *label;
        let p = if params.both_orders {
            0.5 * (shown_first + shown_second)
        } else if order_uniforms[i] < 0.5 {
            shown_first
        } else {
            shown_second
        };
        *label = if params.soft {
            p
        } else if draw_uniforms[i] < p {
            1.0
        } else {
            0.0
        };
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cold_labeller_prefers_the_better_gold_and_a_flip_inverts_it() {
        let labels = labeller_labels(&[2.0, 0.0], &[0.0, 2.0], 1e-300, 0.0, &[0.999, 0.999], &[0.5, 0.5]).unwrap();
        assert_eq!(labels, vec![1.0, 0.0]);
        let labels = labeller_labels(&[2.0, 0.0], &[0.0, 2.0], 1e-300, 1.0, &[0.999, 0.999], &[0.5, 0.5]).unwrap();
        assert_eq!(labels, vec![0.0, 1.0]);
    }

    #[test]
    fn a_labeller_draws_against_the_bradley_terry_probability() {
        let p = sigmoid(1.0);
        let below = labeller_labels(&[1.0], &[0.0], 1.0, 0.0, &[p - 1e-12], &[0.0]).unwrap();
        let above = labeller_labels(&[1.0], &[0.0], 1.0, 0.0, &[p], &[0.0]).unwrap();
        assert_eq!((below[0], above[0]), (1.0, 0.0));
    }

    #[test]
    fn a_judge_asked_both_ways_has_no_position_bias() {
        let params = JudgeParams { temperature: 1.0, position_bias: 0.3, soft: true, both_orders: true };
        let labels = judge_labels(&[0.0], &[0.0], params, &[], &[]).unwrap();
        assert!((labels[0] - 0.5).abs() < 1e-15, "{labels:?}");
        let one_way = JudgeParams { both_orders: false, ..params };
        let first = judge_labels(&[0.0], &[0.0], one_way, &[0.1], &[]).unwrap();
        let second = judge_labels(&[0.0], &[0.0], one_way, &[0.9], &[]).unwrap();
        assert_eq!((first[0], second[0]), (0.3 + 0.7 * 0.5, 0.7 * 0.5));
    }

    #[test]
    fn draws_must_match_what_the_judge_asks() {
        let params = JudgeParams { temperature: 1.0, position_bias: 0.0, soft: false, both_orders: true };
        assert!(judge_labels(&[0.0], &[0.0], params, &[], &[]).is_err());
        assert!(judge_labels(&[0.0], &[0.0], params, &[0.5], &[0.5]).is_err());
        assert_eq!(judge_labels(&[0.0], &[0.0], params, &[], &[0.49]).unwrap(), vec![1.0]);
        let bad = JudgeParams { position_bias: 1.5, ..params };
        assert!(judge_labels(&[0.0], &[0.0], bad, &[], &[0.5]).is_err());
    }
}
