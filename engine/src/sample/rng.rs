//! The chain's random numbers: xoshiro256** seeded through splitmix64.
//!
//! Both are the published algorithms of Blackman and Vigna (public domain reference code,
//! re-typed here from the description). We need one uniform draw per token, reproducible
//! from a 64-bit seed on every platform; no crate is needed for that.

/// splitmix64: one 64-bit output per step. Used to spread a seed over xoshiro's 256-bit
/// state (xoshiro must not start from all zeros; splitmix never yields four zero words),
/// and wherever loupe needs cheap seeded numbers (benchmark tokens, synthetic weights).
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256**: a small, fast generator with good statistical quality.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut sm = seed;
        Rng {
            s: [
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
            ],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1), from the top 53 bits (every value is an exact f64).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A seed for runs that did not ask for one: the clock's nanoseconds and the process id,
/// mixed. Not for cryptography; only so two runs differ. The caller reports it, so any
/// run can be replayed with `--seed`.
pub fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut s = nanos ^ (u64::from(std::process::id()) << 32);
    splitmix64(&mut s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_reference_values() {
        // First outputs of splitmix64 from seed 0, as printed by the reference C code.
        let mut s = 0u64;
        assert_eq!(splitmix64(&mut s), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(&mut s), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn same_seed_same_stream_and_uniform_range() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let mut c = Rng::new(8);
        let mut differs = false;
        for _ in 0..1000 {
            let x = a.next_f64();
            assert_eq!(x, b.next_f64());
            assert!((0.0..1.0).contains(&x));
            differs |= x != c.next_f64();
        }
        assert!(differs);
    }

    #[test]
    fn mean_of_uniform_draws_is_one_half() {
        let mut r = Rng::new(42);
        let n = 100_000;
        let mean = (0..n).map(|_| r.next_f64()).sum::<f64>() / n as f64;
        // The standard error is 1/sqrt(12 n) ≈ 0.0009.
        assert!((mean - 0.5).abs() < 0.005, "mean {mean}");
    }
}
