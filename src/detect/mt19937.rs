//! MT19937 seeded exactly like CPython's `random.Random(int)`.
//!
//! Only used to build Half-Space Trees identical to River's for the same seed (hst.md §3,
//! §10.3). It runs once per model, at construction, never on the hot path.
//!
//! CPython's `random.seed(n)` for an int `n` splits `|n|` into 32-bit words, least significant
//! first (`0` gives `[0]`), and feeds them to the reference `init_by_array`. `random()` takes
//! 53 bits from two outputs: `(a >> 5) * 2^26 + (b >> 6)`, divided by 2^53.

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// The Mersenne Twister state (2.5 KB).
#[derive(Clone)]
pub struct Mt19937 {
    mt: [u32; N],
    mti: usize,
}

impl Mt19937 {
    /// Seeded like Python's `random.Random(seed)` for a non-negative integer seed.
    pub fn from_python_seed(seed: u64) -> Self {
        let lo = seed as u32;
        let hi = (seed >> 32) as u32;
        if hi == 0 {
            Self::from_key(&[lo])
        } else {
            Self::from_key(&[lo, hi])
        }
    }

    fn init_genrand(s: u32) -> Self {
        let mut mt = [0u32; N];
        mt[0] = s;
        for i in 1..N {
            mt[i] = 1_812_433_253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { mt, mti: N }
    }

    /// The reference `init_by_array`. `key` must not be empty.
    fn from_key(key: &[u32]) -> Self {
        debug_assert!(!key.is_empty());
        let mut g = Self::init_genrand(19_650_218);
        let mt = &mut g.mt;
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(key.len()) {
            mt[i] = (mt[i] ^ (mt[i - 1] ^ (mt[i - 1] >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            mt[i] = (mt[i] ^ (mt[i - 1] ^ (mt[i - 1] >> 30)).wrapping_mul(1_566_083_941))
                .wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
        }
        mt[0] = 0x8000_0000;
        g
    }

    fn twist(&mut self) {
        let mt = &mut self.mt;
        for kk in 0..N {
            let y = (mt[kk] & UPPER_MASK) | (mt[(kk + 1) % N] & LOWER_MASK);
            let mut v = mt[(kk + M) % N] ^ (y >> 1);
            if y & 1 != 0 {
                v ^= MATRIX_A;
            }
            mt[kk] = v;
        }
        self.mti = 0;
    }

    /// The next tempered 32-bit output (`genrand_uint32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.mti >= N {
            self.twist();
        }
        let mut y = self.mt[self.mti];
        self.mti += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// Python's `random.random()`: a double in [0, 1) with 53 random bits.
    pub fn random(&mut self) -> f64 {
        let a = self.next_u32() >> 5;
        let b = self.next_u32() >> 6;
        (a as f64 * 67_108_864.0 + b as f64) * (1.0 / 9_007_199_254_740_992.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Python 3.11: `r = random.Random(42); [r.getrandbits(32) for _ in range(3)]`, and
    /// `random.Random(42).random()`. The golden files' `rng_check` covers more seeds.
    #[test]
    fn matches_cpython_seed_42() {
        let mut g = Mt19937::from_python_seed(42);
        assert_eq!(
            [g.next_u32(), g.next_u32(), g.next_u32()],
            [2746317213, 478163327, 107420369]
        );
        let mut g = Mt19937::from_python_seed(42);
        assert_eq!(g.random().to_bits(), 0x3fe4762f307200c5);
    }

    /// Seeds that need one and two key words, and seed 0 (key `[0]`), against CPython 3.11's
    /// `random.Random(seed).getrandbits(32)`.
    #[test]
    fn matches_cpython_edge_seeds() {
        for (seed, want) in [
            (0u64, [3626764237u32, 1654615998]),
            ((1 << 32) + 5, [675479763, 2085189291]),
            (u64::MAX, [93740670, 1068495656]),
        ] {
            let mut g = Mt19937::from_python_seed(seed);
            assert_eq!([g.next_u32(), g.next_u32()], want, "seed {seed}");
        }
        // float.hex(random.Random(2**64-1).random()) == '0x1.659799fd7f980p-6'
        let mut g = Mt19937::from_python_seed(u64::MAX);
        assert_eq!(g.random(), f64::from_bits(0x3f9659799fd7f980));
    }
}
