//! The score of a bag of tokens: a world's gold, an AI judge's score, a reward model's.

use super::check_shape;
use crate::error::{finite, vec_with_capacity, Error, Result};

/// A `[rows, vocab]` table of token values: row `x` scores the responses to prompt `x` (a
/// reward model, which ignores the prompt, is one row).
#[derive(Clone, Copy, Debug)]
pub struct ValueTable<'a> {
    pub values: &'a [f64],
    pub rows: usize,
    pub vocab: usize,
}

/// `[n]`: for each response (`responses`, `[n, response_len]` token indices) the sum of
/// `values[prompts[i], token] + offset` over its tokens, left to right, or over its distinct
/// tokens in increasing order when `count_once`. The gold of `gold="count_once"` is that
/// with `offset = repeat_penalty`, less `repeat_penalty * response_len`.
pub fn bag_score(
    table: ValueTable<'_>,
    prompts: &[usize],
    responses: &[usize],
    response_len: usize,
    count_once: bool,
    offset: f64,
) -> Result<Vec<f64>> {
    let ValueTable { values, rows, vocab } = table;
    check_shape("values", values.len(), rows, vocab)?;
    check_shape("responses", responses.len(), prompts.len(), response_len)?;
    finite("offset", offset)?;
    if let Some(&x) = prompts.iter().find(|&&x| x >= rows) {
        return Err(Error::invalid(format!("prompts must be prompt indices in [0, {rows}), got {x}")));
    }
    if let Some(&a) = responses.iter().find(|&&a| a >= vocab) {
        return Err(Error::invalid(format!("responses must be token indices in [0, {vocab}), got {a}")));
    }
    let mut scores = vec_with_capacity(prompts.len(), "the scores")?;
    let mut sorted = vec_with_capacity(if count_once { response_len } else { 0 }, "a response")?;
    for (i, &x) in prompts.iter().enumerate() {
        let response = &responses[i * response_len..(i + 1) * response_len];
        let row = &values[x * vocab..(x + 1) * vocab];
        let mut total = 0.0;
        if count_once {
            sorted.clear();
            sorted.extend_from_slice(response);
            sorted.sort_unstable();
            sorted.dedup();
            for &a in &sorted {
                total += row[a] + offset;
            }
        } else {
            for &a in response {
                total += row[a] + offset;
            }
        }
        scores.push(total);
    }
    Ok(scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: ValueTable<'static> = ValueTable { values: &[1.0, 2.0, 4.0, 10.0, 20.0, 40.0], rows: 2, vocab: 3 };

    #[test]
    fn linear_counts_every_copy_and_count_once_each_token_once() {
        let responses = [0, 0, 2, 1, 1, 1];
        assert_eq!(bag_score(TABLE, &[0, 1], &responses, 3, false, 0.0).unwrap(), vec![6.0, 60.0]);
        assert_eq!(bag_score(TABLE, &[0, 1], &responses, 3, true, 0.0).unwrap(), vec![5.0, 20.0]);
        assert_eq!(bag_score(TABLE, &[0, 1], &responses, 3, true, 0.5).unwrap(), vec![6.0, 20.5]);
    }

    #[test]
    fn indices_past_the_table_are_refused() {
        assert!(bag_score(TABLE, &[2], &[0], 1, false, 0.0).is_err());
        assert!(bag_score(TABLE, &[0], &[3], 1, true, 0.0).is_err());
        assert!(bag_score(TABLE, &[0], &[0, 1], 1, true, 0.0).is_err());
    }

    #[test]
    fn no_responses_score_nothing() {
        assert_eq!(bag_score(TABLE, &[], &[], 4, true, 0.0).unwrap(), Vec::<f64>::new());
        assert_eq!(bag_score(TABLE, &[1, 0], &[], 0, false, 0.0).unwrap(), vec![0.0, 0.0]);
    }
}
