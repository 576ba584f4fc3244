//! A sequence world's proxy reward model (`rlhf_fast.sequences`): Bradley-Terry SGD on pairs
//! of responses of different lengths. `rlhf_fast.train_sequence_reward_model` hands each
//! response as a row of feature columns (its content tokens, then the length column once per
//! content token when the length is a feature) with the row's length; a row is read up to its
//! length only. Each pair's step is the bag world's [`rm_pair_step`] on the two rows.
//!
//! [`rm_pair_step`]: crate::methods::world::reward_model::rm_pair_step

use super::driver::Monitor;
use super::world::{check_labels, reward_model_sgd, RmSgd, MAX_VOCAB};
use crate::error::{Error, Result};

/// One side of the labelled pairs: `[n, width]` feature columns, row-major, and how many of
/// each row's columns are read.
#[derive(Clone, Copy, Debug)]
pub struct Rows<'a> {
    pub columns: &'a [usize],
    pub lengths: &'a [usize],
    pub width: usize,
}

impl Rows<'_> {
    fn check(&self, name: &str, n: usize, vocab: usize) -> Result<()> {
        if self.lengths.len() != n {
            return Err(Error::invalid(format!("{name}_len must have {n} row lengths, got {}", self.lengths.len())));
        }
        if n.checked_mul(self.width) != Some(self.columns.len()) {
            return Err(Error::invalid(format!(
                "{name} holds {} columns, not {n} x {}",
                self.columns.len(),
                self.width
            )));
        }
        if let Some(i) = self.lengths.iter().position(|&len| len > self.width) {
            let message =
                format!("{name}_len[{i}] must be at most the row width {}, got {}", self.width, self.lengths[i]);
            return Err(Error::invalid(message));
        }
        for i in 0..n {
            if let Some(&a) = self.row(i).iter().find(|&&a| a >= vocab) {
                return Err(Error::invalid(format!("{name} has column {a}, past the model's {vocab} columns")));
            }
        }
        Ok(())
    }

    fn row(&self, i: usize) -> &[usize] {
        &self.columns[i * self.width..i * self.width + self.lengths[i]]
    }
}

/// The weights of `vocab` columns after `sgd.epochs` passes of [`rm_pair_step`] over the
/// pairs of rows (`first`'s row `i` against `second`'s, label `target[i]`, margin
/// `margin[i]`), in order, from zero; the monitor is ticked with each pass's pairs. Weights
/// that overflow (2^512 in magnitude, or NaN) after a pass stop the training.
///
/// [`rm_pair_step`]: crate::methods::world::reward_model::rm_pair_step
pub fn train_reward_model_rows(
    vocab: usize,
    first: Rows<'_>,
    second: Rows<'_>,
    target: &[f64],
    margin: &[f64],
    sgd: RmSgd,
    monitor: &Monitor,
) -> Result<Vec<f64>> {
    if !(1..=MAX_VOCAB + 1).contains(&vocab) {
        return Err(Error::invalid(format!("vocab must be 1 to {} columns, got {vocab}", MAX_VOCAB + 1)));
    }
    let n = target.len();
    if n == 0 {
        return Err(Error::invalid("pairs must not be empty"));
    }
    first.check("first", n, vocab)?;
    second.check("second", n, vocab)?;
    check_labels(target, margin)?;
    let pair = |i| (first.row(i), second.row(i));
    reward_model_sgd(vocab, pair, target, margin, sgd, "train_sequence_reward_model", monitor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::world::{train_reward_model, LabelledPairs};

    const SGD: RmSgd = RmSgd { epochs: 3, lr: 0.3, center_rewards_coefficient: 0.01 };

    #[test]
    fn full_rows_train_as_the_bag_world_does() {
        let (first, second) = ([1, 2, 2, 0], [3, 1, 0, 0]);
        let (target, margin) = ([1.0, 0.25], [0.0, 0.5]);
        let pairs = LabelledPairs { first: &first, second: &second, response_len: 2, target: &target, margin: &margin };
        let bag = train_reward_model(4, pairs, SGD, &Monitor::default()).unwrap();
        let full = [2, 2];
        let rows = |columns| Rows { columns, lengths: &full, width: 2 };
        let seq = train_reward_model_rows(4, rows(&first), rows(&second), &target, &margin, SGD, &Monitor::default());
        assert_eq!(seq.unwrap(), bag);
    }

    #[test]
    fn columns_past_a_row_length_are_never_read_or_trained() {
        // column 3 sits past each row's end: its weight stays 0, and the rest are those of the short rows
        let (first, second) = ([1, 3, 3], [2, 2, 3]);
        let long = train_reward_model_rows(
            4,
            Rows { columns: &first, lengths: &[1], width: 3 },
            Rows { columns: &second, lengths: &[2], width: 3 },
            &[1.0],
            &[0.0],
            SGD,
            &Monitor::default(),
        )
        .unwrap();
        let short = train_reward_model_rows(
            4,
            Rows { columns: &[1], lengths: &[1], width: 1 },
            Rows { columns: &[2, 2], lengths: &[2], width: 2 },
            &[1.0],
            &[0.0],
            SGD,
            &Monitor::default(),
        )
        .unwrap();
        assert_eq!(long, short);
        assert_eq!(long[3], 0.0);
        assert!(long[1] > 0.0 && long[2] < 0.0);
    }

    #[test]
    fn bad_rows_are_refused_naming_the_argument() {
        let rows = |columns, lengths| Rows { columns, lengths, width: 2 };
        let run = |a: Rows<'_>, b: Rows<'_>| {
            train_reward_model_rows(3, a, b, &[1.0], &[0.0], SGD, &Monitor::default()).unwrap_err().to_string()
        };
        assert!(run(rows(&[1, 2], &[3]), rows(&[1, 2], &[1])).starts_with("first_len[0] must be at most"));
        assert!(run(rows(&[1, 2], &[1]), rows(&[1, 5], &[2])).starts_with("second has column 5"));
        // a column past the row's end is not read, so it may be anything
        assert_eq!(run(rows(&[1, 9], &[1]), rows(&[1], &[1])), "second holds 1 columns, not 1 x 2");
    }
}
