//! Best-of-N sampling against the reward model (METHODS.md section 4): the exact
//! distribution of the kept token, its expected score and KL to the policy next to the
//! analytic `log N - (N - 1) / N`, and one Monte-Carlo draw on a CPython-compatible stream.

use crate::kernels::kl::kl_unchecked;
use crate::kernels::sampling::{sample_bisect, BucketSampler};
use crate::rng::Mt19937;

/// The exact law of the token Best-of-`n` keeps when sampling from `pi`, written into `out`.
///
/// For token `a` in the tie group `T` of tokens scoring exactly `R(a)`:
/// `P(a) = pi(a) / pi(T) * (F_le^n - F_lt^n)`, with `F_le` (`F_lt`) the mass of the tokens
/// scoring `<= R(a)` (`< R(a)`), each sum taken over the tokens in index order. A tie
/// group without mass is never kept (`P = 0`).
pub fn bon_distribution(pi: &[f64], weights: &[f64], n: u64, out: &mut [f64]) {
    let n = n as f64;
    for (a, slot) in out.iter_mut().enumerate() {
        let score = weights[a];
        let (mut f_le, mut f_lt, mut p_tie) = (0.0, 0.0, 0.0);
        for (&p_b, &score_b) in pi.iter().zip(weights) {
            if score_b <= score {
                f_le += p_b;
            }
            if score_b < score {
                f_lt += p_b;
            }
            if score_b == score {
                p_tie += p_b;
            }
        }
        *slot = if p_tie > 0.0 { pi[a] / p_tie * (f_le.powf(n) - f_lt.powf(n)) } else { 0.0 };
    }
}

/// `log n - (n - 1) / n`: the KL of Best-of-n to the policy the usual bound gives.
pub fn bon_kl_analytic(n: u64) -> f64 {
    let n = n as f64;
    n.ln() - (n - 1.0) / n
}

/// The exact statistics of Best-of-`n` from the policy's probabilities `pi` (`[prompt, token]`):
/// the mean over prompts of the expected score and of `KL(P_bon || pi)`, and `P_bon` itself.
pub fn bon_exact(pi: &[f64], weights: &[f64], n: u64) -> (f64, f64, Vec<f64>) {
    let v = weights.len();
    let n_prompts = pi.len() / v;
    let mut p_bon = vec![0.0; pi.len()];
    let (mut score_total, mut kl_total) = (0.0, 0.0);
    for (row, out) in pi.chunks_exact(v).zip(p_bon.chunks_exact_mut(v)) {
        bon_distribution(row, weights, n, out);
        let mut per_prompt = 0.0;
        for (&p, &r) in out.iter().zip(weights) {
            per_prompt += p * r;
        }
        score_total += per_prompt;
        kl_total += kl_unchecked(out, row);
    }
    (score_total / n_prompts as f64, kl_total / n_prompts as f64, p_bon)
}

/// `draws` more draws of `sample(pi[x], rng)` in a Best-of-n draw that has kept `best` so
/// far (`-inf` before the first): the highest score among them and `best`. One Best-of-n
/// draw is `x = rng.choice(PROMPTS)`, then this over `n` draws, in as many pieces as the
/// caller likes (only the score is reported, and the first of the highest scores the
/// highest); the pieces let a draw of a billion samples stop between them.
#[inline]
pub fn bon_draws(sampler: &BucketSampler, weights: &[f64], x: usize, draws: u64, best: f64, rng: &mut Mt19937) -> f64 {
    let mut best = best;
    for _ in 0..draws {
        best = best.max(weights[sampler.sample(x, rng)]);
    }
    best
}

/// One response of a world: `bag.len()` tokens drawn i.i.d. from the prompt's row whose
/// running sums are `cumulative`, one `rng.random()` each, as world PPO's bag step draws
/// them. Returns the bag's proxy score `sum_i w(y_i)`, summed left to right from 0.0.
#[inline]
pub fn draw_bag(cumulative: &[f64], weights: &[f64], bag: &mut [usize], rng: &mut Mt19937) -> f64 {
    for token in bag.iter_mut() {
        *token = sample_bisect(cumulative, rng.random());
    }
    let mut score = 0.0;
    for &a in bag.iter() {
        score += weights[a];
    }
    score
}

/// The gold of one bag from one prompt's row `gold_row`: every copy counted (`count_once`
/// false, summed in the bag's order), or each distinct token once, summed in increasing token
/// order (`distinct` is scratch). A count-once world's constant repeat penalty is the caller's.
pub fn bag_gold(gold_row: &[f64], bag: &[usize], count_once: bool, distinct: &mut Vec<usize>) -> f64 {
    let mut gold = 0.0;
    if count_once {
        distinct.clear();
        distinct.extend_from_slice(bag);
        distinct.sort_unstable();
        distinct.dedup();
        for &a in distinct.iter() {
            gold += gold_row[a];
        }
    } else {
        for &a in bag {
            gold += gold_row[a];
        }
    }
    gold
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::softmax::softmax_rows;

    const WEIGHTS: [f64; 8] = [1.5, 1.5, -1.6, -1.5, 1.6, 1.6, -1.5, -1.5];

    #[test]
    fn one_sample_keeps_the_policy_and_the_law_sums_to_one() {
        let pi = softmax_rows(&[0.3, -0.2, 0.8, 0.0, -0.5, 0.1, 0.4, -0.3], 8);
        let (_, kl_exact, p_bon) = bon_exact(&pi, &WEIGHTS, 1);
        for (a, b) in p_bon.iter().zip(&pi) {
            assert!((a - b).abs() < 1e-15);
        }
        assert_eq!(bon_kl_analytic(1), 0.0);
        assert!(kl_exact.abs() < 1e-15);
        for n in [2, 4, 16, 1000] {
            let (_, kl_exact, p_bon) = bon_exact(&pi, &WEIGHTS, n);
            assert!((p_bon.iter().sum::<f64>() - 1.0).abs() < 1e-12, "n={n}");
            assert!(kl_exact <= bon_kl_analytic(n) + 1e-12, "n={n}: the analytic KL bounds the exact one");
        }
    }

    #[test]
    fn ties_share_in_proportion_to_the_policy_and_matches_the_brute_force_law() {
        // Uniform over 8 tokens with 4 score levels, each held by two tokens.
        let pi = [0.125; 8];
        let mut out = [0.0; 8];
        bon_distribution(&pi, &WEIGHTS, 3, &mut out);
        // Top level (1.6: tokens 4 and 5): 1 - (6/8)^3, split evenly.
        assert!((out[4] - (1.0 - 0.75f64.powi(3)) / 2.0).abs() < 1e-15);
        assert_eq!(out[4], out[5]);
        // Brute force over all 8^3 ordered triples: keep the first of the highest.
        let mut brute = [0.0; 8];
        for i in 0..512 {
            let draws = [i % 8, (i / 8) % 8, i / 64];
            let mut kept = draws[0];
            for &d in &draws[1..] {
                if WEIGHTS[d] > WEIGHTS[kept] {
                    kept = d;
                }
            }
            brute[kept] += 1.0 / 512.0;
        }
        for a in 0..8 {
            assert!((out[a] - brute[a]).abs() < 1e-15, "token {a}");
        }
    }

    #[test]
    fn one_draw_keeps_the_first_of_the_best_of_n_samples() {
        // By hand: randbelow(3), then four random() draws, keep the best score.
        let pi = [0.125; 24];
        let sampler = BucketSampler::new(&pi, 8);
        for seed in 0..50 {
            let mut rng = Mt19937::from_seed(seed);
            assert!(rng.randbelow(3) < 3);
            let best = (0..4)
                .map(|_| WEIGHTS[crate::kernels::sampling::sample_index(&pi[..8], rng.random())])
                .fold(f64::NEG_INFINITY, f64::max);
            let mut rng = Mt19937::from_seed(seed);
            let x = rng.randbelow(3) as usize;
            assert_eq!(bon_draws(&sampler, &WEIGHTS, x, 4, f64::NEG_INFINITY, &mut rng), best, "seed {seed}");
            // In pieces: the same draws, the same best.
            let mut rng = Mt19937::from_seed(seed);
            let x = rng.randbelow(3) as usize;
            let first = bon_draws(&sampler, &WEIGHTS, x, 1, f64::NEG_INFINITY, &mut rng);
            assert_eq!(bon_draws(&sampler, &WEIGHTS, x, 3, first, &mut rng), best, "seed {seed}");
        }
    }

    #[test]
    fn a_bag_is_drawn_as_world_ppo_draws_it_and_its_gold_counts_as_asked() {
        let p = crate::kernels::softmax::softmax(&[0.3, -1.0, 2.0, 0.0]).unwrap();
        let mut cumulative = [0.0; 4];
        crate::kernels::sampling::running_sums(&p, &mut cumulative);
        let weights = [1.0, -2.0, 0.5, 3.0];
        for seed in 0..20 {
            let mut rng = Mt19937::from_seed(seed);
            let mut bag = [0; 5];
            let score = draw_bag(&cumulative, &weights, &mut bag, &mut rng);
            let mut by_hand = Mt19937::from_seed(seed);
            let tokens: Vec<usize> =
                (0..5).map(|_| crate::kernels::sampling::sample_index(&p, by_hand.random())).collect();
            assert_eq!(bag[..], tokens[..], "seed {seed}");
            assert_eq!(score, tokens.iter().fold(0.0, |s, &a| s + weights[a]));
        }
        let gold = [10.0, 20.0, 40.0, 80.0];
        let mut scratch = Vec::new();
        assert_eq!(bag_gold(&gold, &[2, 0, 2, 2], true, &mut scratch), 50.0);
        assert_eq!(bag_gold(&gold, &[2, 0, 2, 2], false, &mut scratch), 130.0);
    }
}
