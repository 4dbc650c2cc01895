//! Randomness from the host: WASI `random_get`, which Envoy implements with
//! BoringSSL's `RAND_bytes` (proxy-wasm-cpp-host `wasi_unstable_random_get`).
//!
//! Failing closed. [`Random::fill`] cannot report an error, and the core
//! must not have to check every fill, so a failure is made sticky instead:
//! the first failed `random_get` marks the VM unhealthy for good, and
//! [`HostRandom::healthy`] says so. Nothing built from the bytes of a
//! failed fill (zeros: predictable, and a repeated AES-GCM nonce gives the
//! key away) may leave the VM or outlive the step:
//! * `SharedData::set` refuses every write once unhealthy, so the core's
//!   store writes during the step fail (a code or refresh token made of
//!   zeros is never stored, so it can never be redeemed);
//! * the host checks `healthy()` after each core step and before carrying
//!   out its effects, and when false drops them and answers 503 (nothing
//!   sent, no header set, no outbound call made);
//! * the configuration step calls [`HostRandom::probe`], so a host without
//!   randomness is refused up front.
//!
//! Panicking instead would kill the VM, which Envoy does not restart.
//!
//! In practice Envoy only refuses requests over 64 KiB
//! (`PROXY_WASM_HOST_WASI_RANDOM_GET_MAX_SIZE_BYTES`, EINVAL): fills are
//! split below that, so a failure means the host itself is broken.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::env::Random;

/// proxy-wasm-cpp-host's limit on one `random_get`.
const MAX_FILL: usize = 64 * 1024;

/// Set once any fill has failed; never cleared (the VM is one thread, the
/// atomic only avoids `static mut`).
static FAILED: AtomicBool = AtomicBool::new(false);

/// [`Random`] over WASI `random_get`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostRandom;

impl HostRandom {
    /// False once any fill has failed in this VM. Check it after each core
    /// step, before carrying out its effects; if false, discard them and
    /// answer 503 (see the module comment).
    pub fn healthy() -> bool {
        !FAILED.load(Ordering::Relaxed)
    }

    /// Draws a few bytes and reports [`HostRandom::healthy`]: for the
    /// configuration step, so a VM without randomness refuses to start.
    pub fn probe() -> bool {
        HostRandom.fill(&mut [0u8; 16]);
        Self::healthy()
    }
}

impl Random for HostRandom {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(MAX_FILL) {
            if let Err(e) = getrandom::getrandom(chunk)
                && !FAILED.swap(true, Ordering::Relaxed)
            {
                log::error!("host randomness failed ({e}); refusing every request that needs it");
            }
        }
        if FAILED.load(Ordering::Relaxed) {
            // Not random, and flagged: the host discards what this fed.
            buf.fill(0);
        }
    }
}
