//! CPython's `random.Random` stream, generated a block of 624 words at a time.
//!
//! [`crate::rng::Mt19937`] twists and tempers one word per call; the methods' hot loops draw
//! 8 to 16 words per step, and there the per-word bookkeeping costs as much as the rest of
//! the step. [`BlockMt`] yields the very same words (it is seeded by `Mt19937` itself and
//! checked against it over many twists): it twists the whole state in three straight
//! loops and tempers the block into a buffer the draws then read.

use crate::rng::Mt19937;

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

#[inline(always)]
fn temper(mut y: u32) -> u32 {
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c_5680;
    y ^= (y << 15) & 0xefc6_0000;
    y ^ (y >> 18)
}

/// The inverse of [`temper`]: the state word behind an output word.
fn untemper(mut y: u32) -> u32 {
    y ^= y >> 18;
    y ^= (y << 15) & 0xefc6_0000;
    let mut x = y;
    for _ in 0..4 {
        x = y ^ ((x << 7) & 0x9d2c_5680);
    }
    let mut z = x;
    for _ in 0..2 {
        z = x ^ (z >> 11);
    }
    z
}

#[inline(always)]
fn mix(upper: u32, lower: u32, far: u32) -> u32 {
    let y = (upper & UPPER_MASK) | (lower & LOWER_MASK);
    far ^ (y >> 1) ^ ((y & 1).wrapping_neg() & MATRIX_A)
}

/// MT19937 with CPython's `random()` and `_randbelow`, a block at a time.
#[derive(Clone)]
pub struct BlockMt {
    state: [u32; N],
    out: [u32; N],
    index: usize,
}

impl BlockMt {
    /// The stream of `random.Random(seed)` for the seed whose `init_by_array` key is `key`.
    pub fn from_key(key: &[u32]) -> Self {
        let mut reference = Mt19937::from_key(key);
        let mut out = [0u32; N];
        for word in out.iter_mut() {
            *word = reference.next_u32();
        }
        // The first block is what `Mt19937` draws; the state behind it continues the stream.
        let mut state = [0u32; N];
        for (s, &word) in state.iter_mut().zip(out.iter()) {
            *s = untemper(word);
        }
        BlockMt { state, out, index: 0 }
    }

    /// The next 624 words: MT19937's twist, split where its reads cross its writes so each
    /// loop reads only words it does not write (and vectorises), then the tempering.
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
        for (o, &s) in self.out.iter_mut().zip(new.iter()) {
            *o = temper(s);
        }
        self.index = 0;
    }

    /// `genrand_uint32`.
    #[inline(always)]
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.refill();
        }
        let word = self.out[self.index];
        self.index += 1;
        word
    }

    /// Two consecutive words (what one `random()` consumes).
    #[inline(always)]
    pub fn next_pair(&mut self) -> (u32, u32) {
        if self.index + 2 <= N {
            let pair = (self.out[self.index], self.out[self.index + 1]);
            self.index += 2;
            pair
        } else {
            (self.next_u32(), self.next_u32())
        }
    }

    /// `random.random()`.
    #[inline(always)]
    pub fn random(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67_108_864.0 + b) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `_randbelow(n)` for `1 <= n < 2^32` (`choice` of `n` items).
    #[inline(always)]
    pub fn randbelow(&mut self, n: u32) -> u32 {
        let k = 32 - n.leading_zeros();
        loop {
            let r = self.next_u32() >> (32 - k);
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
    fn untemper_inverts_temper() {
        let mut rng = Mt19937::from_seed(1);
        for _ in 0..10_000 {
            let y = rng.next_u32();
            assert_eq!(temper(untemper(y)), y);
            assert_eq!(untemper(temper(y)), y);
        }
    }

    #[test]
    fn the_stream_is_mt19937s_across_many_twists() {
        for seed in [0i128, 1, 42, -7, 1 << 40, (1 << 100) + 12345] {
            let key = crate::rng::seed_key(seed);
            let (mut fast, mut slow) = (BlockMt::from_key(&key), Mt19937::from_key(&key));
            for i in 0..5 * N + 17 {
                match i % 4 {
                    0 => assert_eq!(fast.next_u32(), slow.next_u32(), "seed {seed} word {i}"),
                    3 => assert_eq!(fast.next_pair(), (slow.next_u32(), slow.next_u32()), "seed {seed} pair {i}"),
                    1 => assert_eq!(fast.random().to_bits(), slow.random().to_bits(), "seed {seed} draw {i}"),
                    _ => assert_eq!(fast.randbelow(3 + i as u32 % 1000), slow.randbelow(3 + i as u32 % 1000)),
                }
            }
        }
        // random.Random(42).random() in CPython.
        assert_eq!(BlockMt::from_key(&[42]).random(), 0.6394267984578837);
    }
}
