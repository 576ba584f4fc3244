//! The lesson's world: its prompts, its words, and the synthetic preference pairs it draws.

use crate::error::{default_max_memory, drop_in_background, fits_in_memory, Result};
use crate::methods::bradley_terry::Preferences;
use crate::rng::Mt19937;

pub const PROMPTS: [&str; 3] = ["help me", "answer me", "explain this"];
/// `VOCAB = sorted(GOOD_WORDS + BAD_WORDS)`: the policy's actions and the RM's first ids.
pub const VOCAB: [&str; 8] = ["clear", "kind", "rude", "short", "specific", "thorough", "vague", "wrong"];
/// `GOOD_WORDS` in the reference's order, as ids into [`VOCAB`].
pub const GOOD_WORDS: [u32; 4] = [0, 1, 4, 5];
/// `BAD_WORDS` in the reference's order, as ids into [`VOCAB`].
pub const BAD_WORDS: [u32; 4] = [2, 3, 6, 7];

/// One pair as ids: `(prompt, [good, good], [bad, bad])`, drawn as `make_pair` draws it.
#[inline]
pub fn make_pair(rng: &mut Mt19937) -> (u32, [u32; 2], [u32; 2]) {
    let prompt = rng.randbelow(PROMPTS.len() as u32);
    let good = [GOOD_WORDS[rng.randbelow(4) as usize], GOOD_WORDS[rng.randbelow(4) as usize]];
    let bad = [BAD_WORDS[rng.randbelow(4) as usize], BAD_WORDS[rng.randbelow(4) as usize]];
    (prompt, good, bad)
}

/// Bytes a pair of [`make_dataset`] counts against `max_memory` (the reference counts the
/// same, whatever each really allocates).
pub const DATASET_BYTES_PER_PAIR: u64 = 256;

/// Pairs drawn between two progress reports.
const REPORT_EVERY: usize = 1 << 14;

/// `make_dataset(n, seed)`: `n` calls of [`make_pair`] on the stream of `random.Random(seed)`
/// (its `init_by_array` key), tokenised as they are drawn. `n` is checked against half the
/// machine's memory before anything is allocated; `report(pairs drawn since the last
/// report)` is called every 16384 pairs (a millisecond or two), and its error stops the
/// drawing.
pub fn make_dataset(n: usize, seed_key: &[u32], report: &mut impl FnMut(u64) -> Result<()>) -> Result<Preferences> {
    fits_in_memory("n", n as u64, DATASET_BYTES_PER_PAIR, default_max_memory())?;
    let mut rng = Mt19937::from_key(seed_key);
    let mut prefs = Preferences::new();
    prefs.reserve(n)?;
    let mut left = n;
    while left > 0 {
        let chunk = left.min(REPORT_EVERY);
        for _ in 0..chunk {
            let (prompt, good, bad) = make_pair(&mut rng);
            prefs.push(prompt, &good, &bad);
        }
        left -= chunk;
        if let Err(err) = report(chunk as u64) {
            drop_in_background(prefs);
            return Err(err);
        }
    }
    Ok(prefs)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::error::Error;
    use crate::rng::seed_key;

    /// `make_dataset(n, seed)`, tokenised as it is drawn.
    pub(crate) fn make_dataset(n: usize, seed: i128) -> Preferences {
        super::make_dataset(n, &seed_key(seed), &mut |_| Ok(())).unwrap()
    }

    #[test]
    fn datasets_are_sized_before_they_are_drawn_and_report_as_they_go() {
        let err = super::make_dataset(1 << 60, &[0], &mut |_| Ok(())).unwrap_err();
        let expected = format!("n={} needs {} bytes, more than max_memory=", 1u64 << 60, 256u128 << 60);
        assert!(err.to_string().starts_with(&expected), "{err}");
        let mut reports = Vec::new();
        let prefs = super::make_dataset(100_000, &[3], &mut |n| {
            reports.push(n);
            Ok(())
        })
        .unwrap();
        assert_eq!(reports, [16_384, 16_384, 16_384, 16_384, 16_384, 16_384, 1_696]);
        assert_eq!(prefs, make_dataset(100_000, 3));
        let stopped = super::make_dataset(100_000, &[3], &mut |_| Err(Error::Cancelled));
        assert_eq!(stopped, Err(Error::Cancelled));
    }

    #[test]
    fn vocab_is_sorted_and_word_lists_point_into_it() {
        let mut sorted = VOCAB;
        sorted.sort();
        assert_eq!(sorted, VOCAB);
        let good: Vec<_> = GOOD_WORDS.iter().map(|&i| VOCAB[i as usize]).collect();
        assert_eq!(good, ["clear", "kind", "specific", "thorough"]);
        let bad: Vec<_> = BAD_WORDS.iter().map(|&i| VOCAB[i as usize]).collect();
        assert_eq!(bad, ["rude", "short", "vague", "wrong"]);
    }

    #[test]
    fn first_pair_of_seed_zero_matches_cpython() {
        // CPython: make_dataset(1, 0) == [("answer me", "thorough clear", "vague wrong")]
        let prefs = make_dataset(1, 0);
        assert_eq!(prefs.prompts, vec![1]);
        assert_eq!(prefs.responses(0), (vec![5, 0], vec![6, 7]));
    }
}
