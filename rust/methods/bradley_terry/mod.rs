//! The Bradley-Terry reward model: a linear score over a bag of tokens, trained by SGD on
//! `-log sigmoid(R(y+) - R(y-))`.
//!
//! Tokens are ids into a vocabulary (the lesson's `VOCAB` first, then any other words in
//! first-seen order); a bag is its `(token, count)` entries in first-seen order, the order
//! the reference's dict iterates in, so sums round the same way.

use crate::error::{positive, Error, Result};
pub use crate::preferences::{Bag, Preferences};

/// One `(token id, count)` entry of a bag; the count is kept as the float it is multiplied as.
pub type BagEntry = (u32, f64);

/// Logistic function, stable for any finite input: `1 / (1 + e^-z)` for `z >= 0`, else
/// `e^z / (1 + e^z)`, both from `e^-|z|`. Choosing the numerator instead of the branch keeps a
/// sign change of `z` (frequent in training loops) from mispredicting.
#[inline]
pub fn sigmoid(z: f64) -> f64 {
    let e = (-z.abs()).exp();
    let numerator = if z >= 0.0 { 1.0 } else { e };
    numerator / (1.0 + e)
}

/// `ln(1 + e^z)` without overflow; the BT loss is `softplus(-margin)`.
#[inline]
pub fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// `R(y) = sum w[token] * count` over the bag, left to right.
#[inline]
pub fn dot(w: &[f64], bag: Bag) -> f64 {
    // The reference starts from 0.0; starting from the first term skips an addition on
    // the SGD loop's critical path and differs only in the sign of a zero total.
    let mut entries = bag.entries();
    let Some((token, count)) = entries.next() else { return 0.0 };
    let mut total = w[token as usize] * count;
    for (token, count) in entries {
        total += w[token as usize] * count;
    }
    total
}

/// A response's bag: each distinct token id with its count, in first-seen order.
pub fn bag(tokens: &[u32]) -> Vec<BagEntry> {
    let mut entries: Vec<BagEntry> = Vec::new();
    for &token in tokens {
        match entries.iter_mut().find(|(t, _)| *t == token) {
            Some((_, count)) => *count += 1.0,
            None => entries.push((token, 1.0)),
        }
    }
    entries
}

/// One SGD step on the BT loss; returns the loss before the step. Token ids must index `w`.
#[inline]
pub fn rm_train_step(w: &mut [f64], chosen: Bag, rejected: Bag, lr: f64) -> f64 {
    softplus(-rm_update(w, chosen, rejected, lr))
}

/// [`rm_train_step`] without the loss (training loops never read it); returns the margin.
#[inline]
pub fn rm_update(w: &mut [f64], chosen: Bag, rejected: Bag, lr: f64) -> f64 {
    let margin = dot(w, chosen) - dot(w, rejected);
    let grad = sigmoid(-margin); // 1 - sigmoid(margin) without the cancellation
    for (token, count) in chosen.entries() {
        w[token as usize] += lr * grad * count;
    }
    for (token, count) in rejected.entries() {
        w[token as usize] -= lr * grad * count;
    }
    margin
}

/// `epochs` passes of [`rm_train_step`] over the pairs in order, updating `w` in place.
///
/// Where every bag has at most four distinct tokens and `lr * |d|^2 <= 8` for every pair,
/// the passes take the shortcut described in [`crate::preferences`], within a few ulps per
/// step of the reference; otherwise they follow the reference operation for operation.
pub fn train_rm(pairs: &Preferences, epochs: usize, lr: f64, w: &mut [f64]) -> Result<()> {
    let lr = positive("lr", lr)?;
    if pairs.vocab_size() > w.len() {
        return Err(Error::invalid(format!(
            "w has {} weights but the pairs use token id {}",
            w.len(),
            pairs.vocab_size() - 1
        )));
    }
    pairs.fit(0..pairs.len(), epochs, lr, w);
    Ok(())
}

/// Share of pairs scored strictly right, `R(y+) > R(y-)`.
pub fn pairwise_accuracy(w: &[f64], pairs: &Preferences) -> Result<f64> {
    if pairs.is_empty() {
        return Err(Error::invalid("pairs must not be empty"));
    }
    if pairs.vocab_size() > w.len() {
        return Err(Error::invalid("w does not cover every token of pairs"));
    }
    let right = (0..pairs.len())
        .filter(|&i| {
            let (chosen, rejected) = pairs.pair(i);
            dot(w, chosen) > dot(w, rejected)
        })
        .count();
    Ok(right as f64 / pairs.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_is_stable_and_symmetric() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert_eq!(sigmoid(1e4), 1.0);
        assert_eq!(sigmoid(-1e4), 0.0);
        assert!((sigmoid(3.0) + sigmoid(-3.0) - 1.0).abs() < 1e-15);
    }

    #[test]
    fn softplus_matches_the_naive_formula_where_it_does_not_overflow() {
        for z in [-30.0, -1.0, 0.0, 2.5, 30.0] {
            assert!((softplus(z) - (1.0 + f64::exp(z)).ln()).abs() < 1e-12);
        }
        assert_eq!(softplus(1e4), 1e4);
    }

    #[test]
    fn bags_count_repeated_tokens_in_first_seen_order() {
        let mut prefs = Preferences::new();
        prefs.push(0, &[4, 1, 4], &[2]);
        let (chosen, rejected) = prefs.pair(0);
        assert_eq!(chosen.entries().collect::<Vec<_>>(), [(4, 2.0), (1, 1.0)]);
        assert_eq!(rejected.entries().collect::<Vec<_>>(), [(2, 1.0)]);
        assert_eq!(bag(&[4, 1, 4]), [(4, 2.0), (1, 1.0)]);
        assert_eq!(prefs.vocab_size(), 5);
    }

    #[test]
    fn step_follows_the_negative_gradient() {
        // dL/dw_t = -sigmoid(-margin) * (count+ - count-), checked by central differences.
        let (chosen, rejected) = (Bag::Ragged(&[(0, 2.0), (1, 1.0)]), Bag::Ragged(&[(1, 1.0), (2, 1.0)]));
        let w0 = vec![0.3, -0.2, 0.5];
        let loss = |w: &[f64]| softplus(-(dot(w, chosen) - dot(w, rejected)));
        let mut w = w0.clone();
        let lr = 1e-3;
        let before = rm_train_step(&mut w, chosen, rejected, lr);
        assert_eq!(before, loss(&w0));
        for t in 0..3 {
            let h = 1e-6;
            let (mut up, mut down) = (w0.clone(), w0.clone());
            up[t] += h;
            down[t] -= h;
            let grad = (loss(&up) - loss(&down)) / (2.0 * h);
            assert!(((w[t] - w0[t]) + lr * grad).abs() < 1e-9, "token {t}");
        }
    }

    #[test]
    fn training_separates_good_from_bad_and_checks_arguments() {
        let mut prefs = Preferences::new();
        prefs.push(0, &[0, 1], &[2, 3]);
        let mut w = vec![0.0; 4];
        train_rm(&prefs, 50, 0.1, &mut w).unwrap();
        assert!(w[0] > 0.0 && w[2] < 0.0);
        assert_eq!(pairwise_accuracy(&w, &prefs).unwrap(), 1.0);
        assert!(train_rm(&prefs, 1, f64::NAN, &mut w).unwrap_err().to_string().contains("lr"));
        assert!(train_rm(&prefs, 1, 0.1, &mut [0.0; 2]).is_err());
        assert!(pairwise_accuracy(&w, &Preferences::new()).is_err());
    }
}
