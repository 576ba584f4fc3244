//! CPython's `random.Random`: MT19937 seeded the way `random.seed(int)` seeds it.
//!
//! `Mt19937::from_key(&key)` with the 32-bit little-endian words of `abs(seed)` (see
//! [`seed_key`]) yields the stream `random.Random(seed)` yields: `random()` is CPython's
//! 53-bit `genrand_res53`, `randbelow(n)` is `_randbelow_with_getrandbits` (rejection
//! sampling with `k = n.bit_length()` bits), so `choice(seq)` is `seq[randbelow(len(seq))]`.

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

#[derive(Clone)]
pub struct Mt19937 {
    state: [u32; N],
    /// The state's words already tempered: tempering a whole block at once vectorises.
    tempered: [u32; N],
    index: usize,
}

/// The key CPython feeds `init_by_array` for an integer seed: `abs(seed)` in 32-bit
/// little-endian words, `[0]` for zero.
pub fn seed_key(seed: i128) -> Vec<u32> {
    let mut magnitude = seed.unsigned_abs();
    let mut key = Vec::new();
    while magnitude != 0 {
        key.push(magnitude as u32);
        magnitude >>= 32;
    }
    if key.is_empty() {
        key.push(0);
    }
    key
}

impl Mt19937 {
    /// `init_genrand(19650218)` then `init_by_array(key)`, as in CPython's `_randommodule.c`.
    pub fn from_key(key: &[u32]) -> Self {
        let mut state = [0u32; N];
        state[0] = 19_650_218;
        for i in 1..N {
            state[i] = 1_812_433_253u32.wrapping_mul(state[i - 1] ^ (state[i - 1] >> 30)).wrapping_add(i as u32);
        }
        let key_len = key.len().max(1);
        let key_at = |j: usize| key.get(j).copied().unwrap_or(0);
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(key_len) {
            state[i] = (state[i] ^ (state[i - 1] ^ (state[i - 1] >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(key_at(j))
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                state[0] = state[N - 1];
                i = 1;
            }
            if j >= key_len {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            state[i] =
                (state[i] ^ (state[i - 1] ^ (state[i - 1] >> 30)).wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                state[0] = state[N - 1];
                i = 1;
            }
        }
        state[0] = 0x8000_0000;
        Mt19937 { state, tempered: [0; N], index: N }
    }

    /// `random.Random(seed)` for an integer seed.
    pub fn from_seed(seed: i128) -> Self {
        Self::from_key(&seed_key(seed))
    }

    fn twist(&mut self) {
        // The three ranges of the classic loop, without its `% N`: each one vectorises.
        #[inline(always)]
        fn mix(upper: u32, lower: u32, far: u32) -> u32 {
            let y = (upper & UPPER_MASK) | (lower & LOWER_MASK);
            far ^ (y >> 1) ^ ((y & 1).wrapping_neg() & MATRIX_A)
        }
        let mt = &mut self.state;
        for k in 0..N - M {
            mt[k] = mix(mt[k], mt[k + 1], mt[k + M]);
        }
        for k in N - M..N - 1 {
            mt[k] = mix(mt[k], mt[k + 1], mt[k + M - N]);
        }
        mt[N - 1] = mix(mt[N - 1], mt[0], mt[M - 1]);
        for (out, &word) in self.tempered.iter_mut().zip(mt.iter()) {
            let mut y = word;
            y ^= y >> 11;
            y ^= (y << 7) & 0x9d2c_5680;
            y ^= (y << 15) & 0xefc6_0000;
            *out = y ^ (y >> 18);
        }
        self.index = 0;
    }

    /// `genrand_uint32`: the next tempered 32-bit word.
    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.twist();
        }
        let word = self.tempered[self.index];
        self.index += 1;
        word
    }

    /// `random.random()`: 53 random bits over 2^53, from two words.
    #[inline]
    pub fn random(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67_108_864.0 + b) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `getrandbits(k)` for `1 <= k <= 32`: the top `k` bits of one word.
    #[inline]
    pub fn getrandbits(&mut self, k: u32) -> u32 {
        debug_assert!((1..=32).contains(&k));
        self.next_u32() >> (32 - k)
    }

    /// `_randbelow(n)` for `1 <= n < 2^32`: uniform in `[0, n)` by rejection.
    #[inline]
    pub fn randbelow(&mut self, n: u32) -> u32 {
        debug_assert!(n >= 1);
        let k = 32 - n.leading_zeros();
        loop {
            let r = self.getrandbits(k);
            if r < n {
                return r;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_key_matches_cpython_words() {
        assert_eq!(seed_key(0), vec![0]);
        assert_eq!(seed_key(5), vec![5]);
        assert_eq!(seed_key(-5), vec![5]);
        assert_eq!(seed_key(1 << 32), vec![0, 1]);
        assert_eq!(seed_key((1 << 40) + 7), vec![7, 256]);
    }

    // Values printed by CPython 3.11: `random.Random(s).random()` and friends.
    #[test]
    fn first_random_matches_cpython() {
        assert_eq!(Mt19937::from_seed(0).random(), 0.8444218515250481);
        assert_eq!(Mt19937::from_seed(42).random(), 0.6394267984578837);
        assert_eq!(Mt19937::from_seed(-42).random(), 0.6394267984578837);
    }

    #[test]
    fn getrandbits_matches_cpython() {
        let mut rng = Mt19937::from_seed(1);
        // random.Random(1).getrandbits(32) == 577090037
        assert_eq!(rng.getrandbits(32), 577_090_037);
    }

    #[test]
    fn randbelow_stays_in_range_and_hits_every_value() {
        let mut rng = Mt19937::from_seed(7);
        let mut seen = [0usize; 3];
        for _ in 0..3000 {
            seen[rng.randbelow(3) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
        assert_eq!(rng.randbelow(1), 0);
    }

    #[test]
    fn long_stream_crosses_twists_identically_to_a_clone() {
        let mut a = Mt19937::from_seed(123);
        let mut b = a.clone();
        for _ in 0..5000 {
            assert_eq!(a.next_u32(), b.next_u32());
        }
    }
}
