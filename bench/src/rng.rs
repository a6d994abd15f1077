//! A tiny deterministic pseudo random number generator (SplitMix64).
//!
//! Every workload seeds its generators from constants and thread indices, so
//! all allocators see exactly the same sequence of requests and every
//! single-run checksum is the same for every allocator. No external crate:
//! the benchmark should not measure a dependency's generator either.

/// SplitMix64: one add and three xor-shift-multiplies per number, good enough
/// statistical quality for choosing sizes and slots.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`; different seeds give unrelated sequences.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the tiny bias is irrelevant here).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..hi`.
    #[inline]
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        debug_assert!(lo < hi);
        lo + self.below((hi - lo) as u64) as usize
    }

    /// Size in `lo..hi` whose binary logarithm is (roughly) uniform: every
    /// power-of-two range between `lo` and `hi` is picked equally often, and
    /// the size is uniform inside it. `lo` and `hi` must be powers of two.
    #[inline]
    pub fn log_uniform(&mut self, lo: usize, hi: usize) -> usize {
        debug_assert!(lo.is_power_of_two() && hi.is_power_of_two() && lo < hi);
        let binades = (hi.trailing_zeros() - lo.trailing_zeros()) as u64;
        let base = lo << self.below(binades);
        self.range(base, base * 2)
    }

    /// True once in `n` calls on average.
    #[inline]
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn ranges_stay_in_bounds() {
        let mut r = Rng::new(7);
        for _ in 0..10_000 {
            let x = r.range(16, 1024);
            assert!((16..1024).contains(&x));
            let y = r.log_uniform(8, 1 << 20);
            assert!((8..1 << 20).contains(&y));
        }
    }

    #[test]
    fn deterministic() {
        let a: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::new(1);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::new(1);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
    }
}
