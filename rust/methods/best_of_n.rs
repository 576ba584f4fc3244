//! Best-of-N sampling against the reward model (METHODS.md section 4): the exact
//! distribution of the kept token, its expected score and KL to the policy next to the
//! analytic `log N - (N - 1) / N`, and a Monte-Carlo run on a CPython-compatible stream.

use crate::dpo::check_table;
use crate::error::{finite_slice, Error, Result};
use crate::grpo::{check_not_length_only, cumulative_into, sample_cumulative};
use crate::kl::kl_unchecked;
use crate::mt_block::BlockMt;
use crate::softmax::softmax_into;

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

/// What [`best_of_n`] reports.
#[derive(Clone, Debug, PartialEq)]
pub struct BonOutcome {
    /// Mean over prompts of `sum_a P_bon(a) R(a)`.
    pub expected_score: f64,
    /// `log n - (n - 1) / n`.
    pub kl_analytic: f64,
    /// Mean over prompts of `KL(P_bon || pi)`.
    pub kl_exact: f64,
    /// Mean kept score of the Monte-Carlo run (`None` without samples).
    pub sampled_score: Option<f64>,
    /// `[prompt, token]` exact law of the kept token.
    pub p_bon: Vec<f64>,
    /// `[prompt, token]` the policy's probabilities.
    pub pi: Vec<f64>,
}

/// Checks a Best-of-N problem; returns the number of prompts.
pub fn check_bon_inputs(policy: &[f64], weights: &[f64], n: i64, samples: i64) -> Result<usize> {
    let vocab_size = weights.len();
    if vocab_size == 0 {
        return Err(Error::invalid("w must weigh at least one token"));
    }
    finite_slice("w", weights)?;
    check_not_length_only(weights)?;
    let n_prompts = check_table("policy", policy, vocab_size)?;
    if n_prompts > u32::MAX as usize {
        return Err(Error::invalid("policy has too many prompts"));
    }
    if n < 1 {
        return Err(Error::invalid(format!("n must be >= 1, got {n}")));
    }
    if samples < 0 {
        return Err(Error::invalid(format!("samples must be >= 0, got {samples}")));
    }
    Ok(n_prompts)
}

/// The policy's probabilities, row by row.
pub fn softmax_table(policy: &[f64], vocab_size: usize) -> Vec<f64> {
    let mut pi = vec![0.0; policy.len()];
    for (row, dst) in policy.chunks_exact(vocab_size).zip(pi.chunks_exact_mut(vocab_size)) {
        softmax_into(row, dst);
    }
    pi
}

/// The exact part of [`best_of_n`] from the policy's probabilities `pi` (`[prompt, token]`).
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

/// Buckets per prompt of [`BonSampler`]: `u`'s top 8 bits, the top 8 bits of its first word.
const BUCKETS: usize = 256;
const AMBIGUOUS: u32 = u32::MAX;

/// `sample(pi[x], u)` for every prompt `x`, fast: the running sums of `pi[x]` (as `sample`
/// adds them) and, for each slice `[k/256, (k+1)/256)` of `[0, 1)`, the token every draw in
/// it picks when that is one token. The token `sample` picks never decreases as `u` grows,
/// so a slice whose first and last representable draws pick the same token picks it
/// throughout; the few slices a running sum cuts fall back to comparing.
#[derive(Clone, Debug)]
pub struct BonSampler {
    vocab_size: usize,
    cumulative: Vec<f64>,
    buckets: Vec<u32>,
}

impl BonSampler {
    /// From the policy's probabilities `pi` (`[prompt, token]`).
    pub fn new(pi: &[f64], vocab_size: usize) -> Self {
        let n_prompts = pi.len() / vocab_size;
        let mut cumulative = vec![0.0; pi.len()];
        let mut buckets = vec![AMBIGUOUS; n_prompts * BUCKETS];
        let last_draw = 1.0 / 9_007_199_254_740_992.0; // draws are multiples of 2^-53
        for x in 0..n_prompts {
            let row = &mut cumulative[x * vocab_size..(x + 1) * vocab_size];
            cumulative_into(&pi[x * vocab_size..(x + 1) * vocab_size], row);
            for (k, bucket) in buckets[x * BUCKETS..(x + 1) * BUCKETS].iter_mut().enumerate() {
                let low = k as f64 / BUCKETS as f64;
                let high = (k + 1) as f64 / BUCKETS as f64 - last_draw;
                let first = sample_cumulative(row, low);
                if first == sample_cumulative(row, high) {
                    *bucket = first as u32;
                }
            }
        }
        BonSampler { vocab_size, cumulative, buckets }
    }

    pub fn n_prompts(&self) -> usize {
        self.cumulative.len() / self.vocab_size
    }

    /// `sample(pi[x], rng.random())`: consumes the two words `random()` consumes.
    #[inline(always)]
    pub fn sample(&self, x: usize, rng: &mut BlockMt) -> usize {
        let (first, second) = rng.next_pair();
        let token = self.buckets[x * BUCKETS + (first >> 24) as usize];
        if token != AMBIGUOUS {
            return token as usize;
        }
        let u = ((first >> 5) as f64 * 67_108_864.0 + (second >> 6) as f64) * (1.0 / 9_007_199_254_740_992.0);
        sample_cumulative(&self.cumulative[x * self.vocab_size..(x + 1) * self.vocab_size], u)
    }
}

/// One Monte-Carlo Best-of-`n` draw on `rng`: `x = rng.choice(PROMPTS)`, then `n` draws of
/// `sample(pi[x], rng)`; returns the score of the first of the highest-scoring tokens
/// (only the score is reported, and the first of the highest scores the highest).
#[inline]
pub fn bon_sample(sampler: &BonSampler, weights: &[f64], n: u64, rng: &mut BlockMt) -> f64 {
    let x = rng.randbelow(sampler.n_prompts() as u32) as usize;
    let mut best = weights[sampler.sample(x, rng)];
    for _ in 1..n {
        best = best.max(weights[sampler.sample(x, rng)]);
    }
    best
}

/// `samples` Monte-Carlo draws on `random.Random(seed)`: the mean kept score, summed left to right.
pub fn bon_sampled_score(pi: &[f64], weights: &[f64], n: u64, samples: u64, seed_key: &[u32]) -> f64 {
    let sampler = BonSampler::new(pi, weights.len());
    let mut rng = BlockMt::from_key(seed_key);
    let mut total = 0.0;
    for _ in 0..samples {
        total += bon_sample(&sampler, weights, n, &mut rng);
    }
    total / samples as f64
}

/// Best-of-`n` against `weights` for the `[n_prompts, V]` logits `policy`: the exact
/// distribution and its statistics, plus, with `samples > 0`, the Monte-Carlo mean score on
/// the stream of `random.Random(seed)` (its `init_by_array` key).
pub fn best_of_n(policy: &[f64], weights: &[f64], n: i64, samples: i64, seed_key: &[u32]) -> Result<BonOutcome> {
    check_bon_inputs(policy, weights, n, samples)?;
    let (n, samples) = (n as u64, samples as u64);
    let pi = softmax_table(policy, weights.len());
    let (expected_score, kl_exact, p_bon) = bon_exact(&pi, weights, n);
    let sampled_score = (samples > 0).then(|| bon_sampled_score(&pi, weights, n, samples, seed_key));
    Ok(BonOutcome { expected_score, kl_analytic: bon_kl_analytic(n), kl_exact, sampled_score, p_bon, pi })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Mt19937;

    const WEIGHTS: [f64; 8] = [1.5, 1.5, -1.6, -1.5, 1.6, 1.6, -1.5, -1.5];

    #[test]
    fn one_sample_keeps_the_policy_and_the_law_sums_to_one() {
        let policy = [0.3, -0.2, 0.8, 0.0, -0.5, 0.1, 0.4, -0.3];
        let out = best_of_n(&policy, &WEIGHTS, 1, 0, &[0]).unwrap();
        for (a, b) in out.p_bon.iter().zip(&out.pi) {
            assert!((a - b).abs() < 1e-15);
        }
        assert_eq!(out.kl_analytic, 0.0);
        assert!(out.kl_exact.abs() < 1e-15);
        assert_eq!(out.sampled_score, None);
        for n in [2, 4, 16, 1000] {
            let out = best_of_n(&policy, &WEIGHTS, n, 0, &[0]).unwrap();
            assert!((out.p_bon.iter().sum::<f64>() - 1.0).abs() < 1e-12, "n={n}");
            assert!(out.kl_exact <= out.kl_analytic + 1e-12, "n={n}: the analytic KL bounds the exact one");
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
    fn monte_carlo_agrees_with_the_exact_score_and_follows_the_stream() {
        let policy = [0.0; 24];
        let out = best_of_n(&policy, &WEIGHTS, 4, 200_000, &[5]).unwrap();
        let sampled = out.sampled_score.unwrap();
        assert!((sampled - out.expected_score).abs() < 0.01, "{sampled} vs {}", out.expected_score);
        // By hand: randbelow(3), then four random() draws, keep the first of the best.
        let mut rng = Mt19937::from_seed(5);
        let x = rng.randbelow(3);
        assert!(x < 3);
        let scores: Vec<f64> =
            (0..4).map(|_| WEIGHTS[crate::sampling::sample_index(&[0.125; 8], rng.random())]).collect();
        let best = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(bon_sampled_score(&[0.125; 24], &WEIGHTS, 4, 1, &[5]), best);
        assert_eq!(best_of_n(&policy, &WEIGHTS, 4, 1000, &[5]), best_of_n(&policy, &WEIGHTS, 4, 1000, &[5]));
    }

    #[test]
    fn the_bucketed_sampler_picks_what_sample_picks() {
        let mut logits = vec![0.0; 8];
        logits.extend([0.3, -1.0, 2.0, 0.0, 1e-3, -7.0, 0.5, 0.5]);
        logits.extend([1e4, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1e4]);
        logits.extend([-40.0, 3.0, 3.0 + 1e-15, -2.0, 0.1, 0.0, 0.0, 9.0]);
        let pi = softmax_table(&logits, 8);
        let sampler = BonSampler::new(&pi, 8);
        // The sampler's words and the reference's draws from the same stream.
        let (mut fast, mut slow) = (BlockMt::from_key(&[8]), Mt19937::from_key(&[8]));
        for i in 0..200_000 {
            let x = i % 4;
            let expected = crate::sampling::sample_index(&pi[x * 8..(x + 1) * 8], slow.random());
            assert_eq!(sampler.sample(x, &mut fast), expected, "draw {i}");
        }
        // Draws at and next to every running sum and slice edge.
        let mut cumulative = [0.0; 8];
        for x in 0..4 {
            cumulative_into(&pi[x * 8..(x + 1) * 8], &mut cumulative);
            let mut edges: Vec<f64> = cumulative.to_vec();
            edges.extend((0..=256).map(|k| k as f64 / 256.0));
            for edge in edges {
                let m = (edge * 9_007_199_254_740_992.0).floor() as i64;
                for m in [m - 1, m, m + 1].into_iter().filter(|&m| (0..1 << 53).contains(&m)) {
                    let a = (m >> 26) as u32; // random()'s first 27 bits
                    let u = m as f64 / 9_007_199_254_740_992.0;
                    let token = sampler.buckets[x * BUCKETS + (a >> 19) as usize];
                    let picked = if token != AMBIGUOUS {
                        token as usize
                    } else {
                        sample_cumulative(&sampler.cumulative[x * 8..(x + 1) * 8], u)
                    };
                    assert_eq!(picked, crate::sampling::sample_index(&pi[x * 8..(x + 1) * 8], u), "x={x} m={m}");
                }
            }
        }
    }

    #[test]
    fn bad_arguments_are_errors_not_panics() {
        let policy = [0.0; 24];
        assert!(best_of_n(&policy, &WEIGHTS, 0, 0, &[0]).unwrap_err().to_string().contains('n'));
        assert!(best_of_n(&policy, &WEIGHTS, 2, -1, &[0]).unwrap_err().to_string().contains("samples"));
        assert!(best_of_n(&policy, &[1.0; 8], 2, 0, &[0]).unwrap_err().to_string().contains("by length alone"));
        assert!(best_of_n(&policy[..20], &WEIGHTS, 2, 0, &[0]).unwrap_err().to_string().contains("policy"));
        let mut nan = policy;
        nan[5] = f64::INFINITY;
        assert!(best_of_n(&nan, &WEIGHTS, 2, 0, &[0]).unwrap_err().to_string().contains("policy[5]"));
        // Large finite logits: the law stays a distribution.
        let mut peaked = [0.0; 8];
        peaked[2] = 1e4;
        peaked[4] = -1e4;
        let out = best_of_n(&peaked, &WEIGHTS, 8, 10, &[0]).unwrap();
        assert!(out.p_bon.iter().all(|p| p.is_finite()));
        assert_eq!(out.p_bon[2], 1.0);
        assert!((out.sampled_score.unwrap() + 1.6).abs() < 1e-12);
    }
}
