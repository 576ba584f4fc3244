//! The Bradley-Terry reward model: a linear score over a bag of tokens, trained by SGD on
//! `-log sigmoid(R(y+) - R(y-))`.
//!
//! Tokens are ids into a vocabulary (the lesson's `VOCAB` first, then any other words in
//! first-seen order); a bag is its `(token, count)` entries in first-seen order, the order
//! the reference's dict iterates in, so sums round the same way.

mod preferences;

use crate::error::{Error, Result};
use crate::kernels::logistic::{sigmoid, softplus};
pub use preferences::{Bag, Preferences};

/// One `(token id, count)` entry of a bag; the count is kept as the float it is multiplied as.
pub type BagEntry = (u32, f64);

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
    use crate::kernels::logistic::softplus;

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
}
