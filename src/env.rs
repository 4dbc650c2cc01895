//! What the pure core receives from the host besides requests: randomness.
//! Injected as a trait so the core stays pure and tests stay deterministic
//! (DESIGN.md, Layout); the host's implementation is `host::random`.

/// Randomness from the host (WASI `random_get` in Envoy, which proxy-wasm
/// fills from BoringSSL's `RAND_bytes`).
pub trait Random {
    /// Fills `buf` with unpredictable bytes.
    fn fill(&mut self, buf: &mut [u8]);
}

/// A deterministic [`Random`] for tests only (unit tests, the flow tests in
/// `tests/`, the wasm test run): SplitMix64, seeded. It is NOT
/// cryptographic and anyone who knows the seed knows every byte; the filter
/// itself never uses it. It is `pub` rather than `#[cfg(test)]` because
/// integration tests link the library as an ordinary dependency.
#[derive(Debug, Clone)]
pub struct TestRandom {
    state: u64,
}

impl TestRandom {
    pub fn new(seed: u64) -> Self {
        TestRandom { state: seed }
    }

    /// SplitMix64 (Steele, Lea, Flood 2014): every seed, 0 included, gives a
    /// full-period stream, so tests need not pick seeds with care.
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Random for TestRandom {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let (mut a, mut b, mut c) = (TestRandom::new(7), TestRandom::new(7), TestRandom::new(8));
        let (mut x, mut y, mut z) = ([0u8; 21], [0u8; 21], [0u8; 21]);
        a.fill(&mut x);
        b.fill(&mut y);
        c.fill(&mut z);
        assert_eq!(x, y);
        assert_ne!(x, z);
        // Successive fills continue the stream rather than repeat it.
        a.fill(&mut y);
        assert_ne!(x, y);
    }

    #[test]
    fn seed_zero_is_not_all_zeros() {
        let mut buf = [0u8; 16];
        TestRandom::new(0).fill(&mut buf);
        assert_ne!(buf, [0u8; 16]);
    }
}
