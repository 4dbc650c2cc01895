//! What the pure core receives from the host besides requests: randomness.
//! Injected as a trait so the core stays pure and tests stay deterministic;
//! the host's implementation is `host::random`.

/// Randomness from the host (WASI `random_get` in Envoy, which proxy-wasm
/// fills from BoringSSL's `RAND_bytes`).
pub trait Random {
    /// Fills `buf` with unpredictable bytes.
    fn fill(&mut self, buf: &mut [u8]);
}

/// The bytes a step drew, replayed when the step runs again. A step that
/// waits for the store runs again once its reads are answered (see
/// `store::txn`): it must make the same random ids each time, or a read
/// keyed by a fresh id would never be answered.
#[derive(Default)]
pub struct Replayed {
    drawn: Vec<Vec<u8>>,
    next: usize,
}

impl Replayed {
    /// The draws of the step's next run, in order, over `source`.
    pub fn rerun<'a>(&'a mut self, source: &'a mut dyn Random) -> ReplayRandom<'a> {
        self.next = 0;
        ReplayRandom {
            replayed: self,
            source,
        }
    }
}

/// See [`Replayed`]: a draw of the same size as the earlier run's gets
/// its bytes; anything else is drawn anew and replaces the rest.
pub struct ReplayRandom<'a> {
    replayed: &'a mut Replayed,
    source: &'a mut dyn Random,
}

impl Random for ReplayRandom<'_> {
    fn fill(&mut self, buf: &mut [u8]) {
        let r = &mut *self.replayed;
        match r.drawn.get(r.next) {
            Some(earlier) if earlier.len() == buf.len() => buf.copy_from_slice(earlier),
            _ => {
                self.source.fill(buf);
                r.drawn.truncate(r.next);
                r.drawn.push(buf.to_vec());
            }
        }
        r.next += 1;
    }
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

#[cfg(test)]
mod replay_tests {
    use super::*;

    #[test]
    fn a_rerun_draws_the_same_bytes_and_new_draws_after_them() {
        let mut source = TestRandom::new(7);
        let mut replayed = Replayed::default();
        let (mut a, mut b) = ([0u8; 16], [0u8; 8]);
        {
            let mut r = replayed.rerun(&mut source);
            r.fill(&mut a);
            r.fill(&mut b);
        }
        let (mut a2, mut b2, mut c2) = ([0u8; 16], [0u8; 8], [0u8; 8]);
        {
            let mut r = replayed.rerun(&mut source);
            r.fill(&mut a2);
            r.fill(&mut b2);
            r.fill(&mut c2);
        }
        assert_eq!((a, b), (a2, b2));
        assert_ne!(c2, b2);
        // A draw of another size is new, and so is everything after it.
        let mut other = [0u8; 4];
        let mut r = replayed.rerun(&mut source);
        r.fill(&mut other);
        let mut again = [0u8; 8];
        r.fill(&mut again);
        assert_ne!(again, b);
    }
}
