//! The lesson's world: its prompts, its words, and the synthetic preference pair it draws.

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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::methods::bradley_terry::Preferences;

    /// `make_dataset(n, seed)`, tokenised as it is drawn.
    pub(crate) fn make_dataset(n: usize, seed: i128) -> Preferences {
        let mut rng = Mt19937::from_seed(seed);
        let mut prefs = Preferences::new();
        for _ in 0..n {
            let (prompt, good, bad) = make_pair(&mut rng);
            prefs.push(prompt, &good, &bad);
        }
        prefs
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
