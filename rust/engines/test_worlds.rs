//! The random worlds that the world engines' tests train in, drawn one way for all of them
//! so that a test reads the same world whichever engine it checks.
#![cfg(test)]

use crate::error::Result;
use crate::methods::world_stats::{Table, WorldTables};
use crate::rng::{seed_key, Mt19937};

/// A small world drawn from a stream: `[P, V]` reference logits and gold, `V` weights.
pub(crate) struct Tables {
    pub(crate) ref_logits: Vec<f64>,
    pub(crate) weights: Vec<f64>,
    pub(crate) gold: Vec<f64>,
    pub(crate) shape: (usize, usize),
}

impl Tables {
    /// Reference logits in `[-3, 3)`, then weights and gold in `[-2, 2)`, drawn from
    /// `random.Random(seed)`.
    pub(crate) fn random(n_prompts: usize, vocab_size: usize, seed: i128) -> Self {
        Self::with_ref_scale(n_prompts, vocab_size, seed, 6.0)
    }

    /// [`Tables::random`] with reference logits in `[-ref_scale / 2, ref_scale / 2)`.
    pub(crate) fn with_ref_scale(n_prompts: usize, vocab_size: usize, seed: i128, ref_scale: f64) -> Self {
        let mut rng = Mt19937::from_key(&seed_key(seed));
        let mut draw = |n: usize, scale: f64| (0..n).map(|_| scale * (rng.random() - 0.5)).collect::<Vec<_>>();
        let ref_logits = draw(n_prompts * vocab_size, ref_scale);
        let weights = draw(vocab_size, 4.0);
        let gold = draw(n_prompts * vocab_size, 4.0);
        Tables { ref_logits, weights, gold, shape: (n_prompts, vocab_size) }
    }

    /// The world of these tables (an error for a `response_len` the world refuses).
    pub(crate) fn world(&self, count_once: bool, response_len: i64) -> Result<WorldTables<'_>> {
        let (rows, cols) = self.shape;
        WorldTables::new(
            Table { values: &self.ref_logits, rows, cols },
            &self.weights,
            Table { values: &self.gold, rows, cols },
            count_once,
            response_len,
        )
    }
}
