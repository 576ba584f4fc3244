//! Inverse-CDF sampling from one uniform draw, and the faster forms of the same choice.

use crate::rng::{res53, Mt19937, TWO_POW_53};

/// The first index whose running sum exceeds `u`; the last index if rounding leaves none.
#[inline]
pub fn sample_index(probs: &[f64], u: f64) -> usize {
    let mut running = 0.0;
    for (i, &p) in probs.iter().enumerate() {
        running += p;
        if running > u {
            return i;
        }
    }
    probs.len() - 1
}

/// The running sums [`sample_index`] compares its draw with, `sums[i] = p[0] + ... + p[i]`,
/// added left to right exactly as it adds them.
#[inline]
pub(crate) fn running_sums(probs: &[f64], sums: &mut [f64]) {
    let mut running = 0.0;
    for (s, &p) in sums.iter_mut().zip(probs) {
        running += p;
        *s = running;
    }
}

/// [`sample_index`] from the running sums, without branches: the first index whose running
/// sum exceeds `u` is the number of running sums that do not (they never decrease), or the
/// last index if rounding left none above `u`.
#[inline]
pub(crate) fn sample_running(sums: &[f64], u: f64) -> usize {
    // The lesson's eight tokens: a fixed-size loop the compiler unrolls and vectorises.
    if let Ok(eight) = <&[f64; 8]>::try_from(sums) {
        let below = eight.iter().map(|&c| usize::from(c <= u)).sum::<usize>();
        return below.min(7);
    }
    let below = sums.iter().map(|&c| usize::from(c <= u)).sum::<usize>();
    below.min(sums.len() - 1)
}

/// [`sample_index`] from the running sums, by bisection: the running sums never decrease, so
/// the first one above `u` is where `sum <= u` stops holding. `O(log V)` a draw, for many
/// draws from one large row (a world's response of `L` tokens from a vocabulary of 2^20).
#[inline]
pub(crate) fn sample_bisect(sums: &[f64], u: f64) -> usize {
    sums.partition_point(|&running| running <= u).min(sums.len() - 1)
}

/// Buckets per row of [`BucketSampler`]: a draw's top 8 bits, the top 8 bits of its first word.
const BUCKETS: usize = 256;
const AMBIGUOUS: u32 = u32::MAX;

/// `sample_index(rows[x], rng.random())` for every row `x` of a table of distributions, fast:
/// the running sums of each row and, for each slice `[k/256, (k+1)/256)` of `[0, 1)`, the
/// index every draw in it picks when that is one index. The index `sample_index` picks never
/// decreases as `u` grows, so a slice whose first and last representable draws pick the same
/// index picks it throughout; the few slices a running sum cuts fall back to comparing.
#[derive(Clone, Debug)]
pub(crate) struct BucketSampler {
    row_len: usize,
    sums: Vec<f64>,
    buckets: Vec<u32>,
}

impl BucketSampler {
    /// From a `[rows, row_len]` table of probabilities.
    pub(crate) fn new(probs: &[f64], row_len: usize) -> Self {
        let n_rows = probs.len() / row_len;
        let mut sums = vec![0.0; probs.len()];
        let mut buckets = vec![AMBIGUOUS; n_rows * BUCKETS];
        let last_draw = 1.0 / TWO_POW_53; // draws are multiples of 2^-53
        for x in 0..n_rows {
            let row = &mut sums[x * row_len..(x + 1) * row_len];
            running_sums(&probs[x * row_len..(x + 1) * row_len], row);
            for (k, bucket) in buckets[x * BUCKETS..(x + 1) * BUCKETS].iter_mut().enumerate() {
                let low = k as f64 / BUCKETS as f64;
                let high = (k + 1) as f64 / BUCKETS as f64 - last_draw;
                let first = sample_running(row, low);
                if first == sample_running(row, high) {
                    *bucket = first as u32;
                }
            }
        }
        BucketSampler { row_len, sums, buckets }
    }

    pub(crate) fn n_rows(&self) -> usize {
        self.sums.len() / self.row_len
    }

    /// `sample_index(rows[x], rng.random())`: consumes the two words `random()` consumes.
    #[inline(always)]
    pub(crate) fn sample(&self, x: usize, rng: &mut Mt19937) -> usize {
        let (first, second) = rng.next_pair();
        let index = self.buckets[x * BUCKETS + (first >> 24) as usize];
        if index != AMBIGUOUS {
            return index as usize;
        }
        sample_running(&self.sums[x * self.row_len..(x + 1) * self.row_len], res53(first, second))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::softmax::{softmax, softmax_rows};

    #[test]
    fn picks_the_interval_containing_u() {
        let p = [0.25, 0.5, 0.25];
        assert_eq!(sample_index(&p, 0.0), 0);
        assert_eq!(sample_index(&p, 0.2499), 0);
        assert_eq!(sample_index(&p, 0.25), 1);
        assert_eq!(sample_index(&p, 0.75), 2);
    }

    #[test]
    fn falls_back_to_the_last_index_when_rounding_leaves_none() {
        assert_eq!(sample_index(&[0.3, 0.3, 0.3], 0.95), 2);
    }

    #[test]
    fn branchless_sampling_is_sample_index() {
        let mut rng = Mt19937::from_seed(11);
        for probs in [
            vec![0.25, 0.5, 0.25],
            vec![0.3, 0.3, 0.3],
            vec![0.0, 1.0, 0.0],
            vec![0.1, 0.0, 0.0, 0.9],
            softmax(&[0.3, -1.0, 2.0, 0.0, 1e-3, -7.0, 0.5, 0.5]).unwrap(),
        ] {
            let mut sums = vec![0.0; probs.len()];
            running_sums(&probs, &mut sums);
            let edges = sums.clone();
            for u in
                (0..2000).map(|_| rng.random()).chain([0.0, 0.25, 0.75, 0.9, 0.95, 1.0 - f64::EPSILON]).chain(edges)
            {
                assert_eq!(sample_running(&sums, u), sample_index(&probs, u), "{probs:?} u={u}");
            }
        }
    }

    #[test]
    fn bisecting_the_running_sums_is_sample_index() {
        let mut rng = Mt19937::from_seed(5);
        let mut rows = vec![vec![0.25, 0.5, 0.25], vec![0.3, 0.3, 0.3], vec![0.0, 1.0, 0.0], vec![0.1, 0.0, 0.0, 0.9]];
        rows.push(vec![1.0]);
        let z: Vec<f64> = (0..1000).map(|i| ((i * 7919) % 1000) as f64 / 97.0 - 5.0).collect();
        rows.push(softmax(&z).unwrap());
        for probs in rows {
            let mut sums = vec![0.0; probs.len()];
            running_sums(&probs, &mut sums);
            let edges: Vec<f64> = sums.iter().flat_map(|&s| [s, s.next_down(), s.next_up()]).collect();
            for u in (0..2000).map(|_| rng.random()).chain([0.0, 0.75, 0.95, 1.0 - f64::EPSILON]).chain(edges) {
                assert_eq!(sample_bisect(&sums, u), sample_index(&probs, u), "{} tokens, u={u}", probs.len());
            }
        }
    }

    #[test]
    fn the_bucketed_sampler_picks_what_sample_index_picks() {
        let mut logits = vec![0.0; 8];
        logits.extend([0.3, -1.0, 2.0, 0.0, 1e-3, -7.0, 0.5, 0.5]);
        logits.extend([1e4, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1e4]);
        logits.extend([-40.0, 3.0, 3.0 + 1e-15, -2.0, 0.1, 0.0, 0.0, 9.0]);
        let pi = softmax_rows(&logits, 8);
        let sampler = BucketSampler::new(&pi, 8);
        let (mut fast, mut slow) = (Mt19937::from_key(&[8]), Mt19937::from_key(&[8]));
        for i in 0..200_000 {
            let x = i % 4;
            let expected = sample_index(&pi[x * 8..(x + 1) * 8], slow.random());
            assert_eq!(sampler.sample(x, &mut fast), expected, "draw {i}");
        }
        // Draws at and next to every running sum and slice edge.
        let mut sums = [0.0; 8];
        for x in 0..4 {
            running_sums(&pi[x * 8..(x + 1) * 8], &mut sums);
            let mut edges: Vec<f64> = sums.to_vec();
            edges.extend((0..=256).map(|k| k as f64 / 256.0));
            for edge in edges {
                let m = (edge * TWO_POW_53).floor() as i64;
                for m in [m - 1, m, m + 1].into_iter().filter(|&m| (0..1 << 53).contains(&m)) {
                    let a = (m >> 26) as u32; // random()'s first 27 bits
                    let u = m as f64 / TWO_POW_53;
                    let index = sampler.buckets[x * BUCKETS + (a >> 19) as usize];
                    let picked = if index != AMBIGUOUS {
                        index as usize
                    } else {
                        sample_running(&sampler.sums[x * 8..(x + 1) * 8], u)
                    };
                    assert_eq!(picked, sample_index(&pi[x * 8..(x + 1) * 8], u), "x={x} m={m}");
                }
            }
        }
    }
}
