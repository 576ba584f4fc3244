//! CPython's `random.Random`: MT19937 seeded the way `random.seed(int)` seeds it.
//!
//! `Mt19937::from_key(&seed_key(seed))` yields the stream `random.Random(seed)` yields:
//! `random()` is CPython's 53-bit `genrand_res53`, `randbelow(n)` is
//! `_randbelow_with_getrandbits` (rejection sampling with `k = n.bit_length()` bits), so
//! `choice(seq)` is `seq[randbelow(len(seq))]`, and `shuffle` is `Random.shuffle`.
//!
//! The hot loops draw 8 to 16 words per step, so per-word bookkeeping would cost as much as
//! the rest of the step: the generator twists the whole state in three straight loops (each
//! reads only words it does not write, so each vectorises) and tempers the block into a
//! buffer the draws then read.

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;
/// `random()` divides 53 random bits by this: 2^53.
pub const TWO_POW_53: f64 = 9_007_199_254_740_992.0;

#[inline(always)]
fn temper(mut y: u32) -> u32 {
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c_5680;
    y ^= (y << 15) & 0xefc6_0000;
    y ^ (y >> 18)
}

#[inline(always)]
fn mix(upper: u32, lower: u32, far: u32) -> u32 {
    let y = (upper & UPPER_MASK) | (lower & LOWER_MASK);
    far ^ (y >> 1) ^ ((y & 1).wrapping_neg() & MATRIX_A)
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

/// MT19937 with CPython's seeding, `random()`, `_randbelow` and `shuffle`.
#[derive(Clone)]
pub struct Mt19937 {
    state: [u32; N],
    /// The current block of output words (the state's words, tempered).
    block: [u32; N],
    index: usize,
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
        Mt19937 { state, block: [0; N], index: N }
    }

    /// `random.Random(seed)` for an integer seed.
    pub fn from_seed(seed: i128) -> Self {
        Self::from_key(&seed_key(seed))
    }

    /// The next 624 words: MT19937's twist, split where its reads cross its writes so each
    /// loop reads only words it does not write, then the tempering.
    #[cold]
    fn refill(&mut self) {
        let old = self.state;
        let new = &mut self.state;
        for k in 0..N - M {
            new[k] = mix(old[k], old[k + 1], old[k + M]);
        }
        // k in N-M..2(N-M) reads the words 0..N-M written above.
        let (done, rest) = new.split_at_mut(N - M);
        for (i, word) in rest[..N - M].iter_mut().enumerate() {
            let k = N - M + i;
            *word = mix(old[k], old[k + 1], done[i]);
        }
        // k in 2(N-M)..N-1 reads the words N-M..M-1 written just above.
        let (done, rest) = new.split_at_mut(2 * (N - M));
        for (i, word) in rest[..N - 1 - 2 * (N - M)].iter_mut().enumerate() {
            let k = 2 * (N - M) + i;
            *word = mix(old[k], old[k + 1], done[k + M - N]);
        }
        new[N - 1] = mix(old[N - 1], new[0], new[M - 1]);
        for (out, &word) in self.block.iter_mut().zip(new.iter()) {
            *out = temper(word);
        }
        self.index = 0;
    }

    /// `genrand_uint32`: the next tempered 32-bit word.
    #[inline(always)]
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.refill();
        }
        let word = self.block[self.index];
        self.index += 1;
        word
    }

    /// Two consecutive words (what one `random()` consumes).
    #[inline(always)]
    pub fn next_pair(&mut self) -> (u32, u32) {
        if self.index + 2 <= N {
            let pair = (self.block[self.index], self.block[self.index + 1]);
            self.index += 2;
            pair
        } else {
            (self.next_u32(), self.next_u32())
        }
    }

    /// `random.random()`: 53 random bits over 2^53, from two words.
    #[inline(always)]
    pub fn random(&mut self) -> f64 {
        let (a, b) = self.next_pair();
        res53(a, b)
    }

    /// `getrandbits(k)` for `1 <= k <= 32`: the top `k` bits of one word.
    #[inline(always)]
    pub fn getrandbits(&mut self, k: u32) -> u32 {
        debug_assert!((1..=32).contains(&k));
        self.next_u32() >> (32 - k)
    }

    /// `_randbelow(n)` for `1 <= n < 2^32`: uniform in `[0, n)` by rejection.
    #[inline(always)]
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

    /// `Random.shuffle`: `for i in reversed(range(1, n)): j = randbelow(i + 1); swap`.
    /// `items` must have fewer than 2^32 entries.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        debug_assert!(items.len() <= u32::MAX as usize);
        for i in (1..items.len()).rev() {
            let j = self.randbelow((i + 1) as u32) as usize;
            items.swap(i, j);
        }
    }
}

/// `genrand_res53`: the float `random()` makes of two words `a` and `b`.
#[inline(always)]
pub fn res53(a: u32, b: u32) -> f64 {
    ((a >> 5) as f64 * 67_108_864.0 + (b >> 6) as f64) * (1.0 / TWO_POW_53)
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

    // The values below were printed by CPython 3.11.
    #[test]
    fn first_random_matches_cpython() {
        assert_eq!(Mt19937::from_seed(0).random(), 0.8444218515250481);
        assert_eq!(Mt19937::from_seed(42).random(), 0.6394267984578837);
        assert_eq!(Mt19937::from_seed(-42).random(), 0.6394267984578837);
        assert_eq!(Mt19937::from_seed(1).getrandbits(32), 577_090_037);
    }

    #[test]
    fn a_long_stream_matches_cpython_across_many_twists() {
        // r = random.Random(123); w = [r.getrandbits(32) for _ in range(5000)]
        let mut rng = Mt19937::from_seed(123);
        let words: Vec<u32> = (0..5000).map(|_| rng.getrandbits(32)).collect();
        assert_eq!(
            [words[0], words[623], words[624], words[1247], words[4999]],
            [224_899_942, 331_007_188, 4_224_834_062, 3_301_299_072, 3_897_538_529]
        );
        assert_eq!(words.iter().map(|&w| u64::from(w)).sum::<u64>(), 10_689_429_024_415);
        // r = random.Random(2**100 + 12345); r.random(), r.randrange(1000), r.random()
        let mut rng = Mt19937::from_seed((1 << 100) + 12345);
        assert_eq!(rng.random(), 0.44487310994347073);
        assert_eq!(rng.randbelow(1000), 309);
        assert_eq!(rng.random(), 0.5962987593883547);
        // r = random.Random(-7); [r.randrange(3) for _ in range(10)]
        let mut rng = Mt19937::from_seed(-7);
        let draws: Vec<u32> = (0..10).map(|_| rng.randbelow(3)).collect();
        assert_eq!(draws, [1, 0, 1, 2, 0, 0, 2, 0, 1, 2]);
    }

    #[test]
    fn pairs_and_words_are_one_stream() {
        let (mut words, mut pairs) = (Mt19937::from_seed(9), Mt19937::from_seed(9));
        for i in 0..3 * N {
            // Odd offsets make pairs straddle the block boundary.
            if i % 7 == 3 {
                assert_eq!(words.next_u32(), pairs.next_u32());
            } else {
                assert_eq!((words.next_u32(), words.next_u32()), pairs.next_pair(), "pair {i}");
            }
        }
    }

    #[test]
    fn shuffle_matches_cpython() {
        // l = list(range(10)); random.Random(3).shuffle(l)
        let mut rng = Mt19937::from_seed(3);
        let mut order: Vec<u32> = (0..10).collect();
        rng.shuffle(&mut order);
        assert_eq!(order, [1, 5, 6, 0, 9, 4, 7, 2, 8, 3]);
        // ... and the same rng shuffling a fresh list(range(10)) again.
        let mut again: Vec<u32> = (0..10).collect();
        rng.shuffle(&mut again);
        assert_eq!(again, [2, 0, 6, 8, 9, 5, 1, 3, 4, 7]);
        // random.Random(2**40 + 5).shuffle(list(range(1000))): sum(i * v) and the head.
        let mut long: Vec<u32> = (0..1000).collect();
        Mt19937::from_seed((1 << 40) + 5).shuffle(&mut long);
        assert_eq!(long.iter().enumerate().map(|(i, &v)| i as u64 * u64::from(v)).sum::<u64>(), 246_011_851);
        assert_eq!(long[..10], [207, 690, 542, 290, 700, 351, 177, 707, 551, 415]);
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
}
