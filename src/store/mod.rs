//! State shared by workers (and, with etcd, by Envoy replicas): a small
//! key-value trait with compare-and-swap ([`Kv`]), an in-memory
//! implementation with Envoy's exact rules ([`MemoryKv`]), and the typed,
//! encrypted, expiring layer the core uses ([`Vault`]). DESIGN.md, State.
//!
//! Keys are never secret: they are `{prefix}{namespace}/{id}`, and an id
//! derived from a secret (a code, a refresh token) is its hash,
//! `crypto::sha256_b64url(secret)`, never the secret itself. Values are
//! sealed with AES-256-GCM, bound to their key.

mod index;
mod memory;
mod plain_cache;
mod vault;

use std::fmt;

pub use self::memory::MemoryKv;
pub use self::plain_cache::clear as clear_cache;
pub use self::vault::Vault;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The entry changed since it was read (or, for a create, it exists).
    CasMismatch,
    /// The store could not do the operation; the text says why (no secrets).
    Unavailable(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::CasMismatch => f.write_str("the stored value changed concurrently"),
            StoreError::Unavailable(why) => write!(f, "store unavailable: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// A key-value store with Envoy shared-data semantics, kept exactly (an
/// implementation, the test fake included, must be no kinder than Envoy's
/// `SharedData::set` in proxy-wasm-cpp-host):
///
/// * `get` returns the value and its cas, or `None` if the key was never set;
/// * `set` with cas 0 is unconditional;
/// * `set` with a non-zero cas fails with [`StoreError::CasMismatch`] if the
///   key exists and its current cas differs;
/// * setting a key that does not exist succeeds whatever cas is given;
/// * every successful `set` gives the entry a new cas (never 0);
/// * there is no delete: "removing" writes an empty value, and the key stays.
pub trait Kv {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError>;
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError>;
}

/// A stored value with its version, for compare-and-swap updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    /// Pass back to [`Vault::put`] or [`Vault::remove`] to write only if
    /// nobody wrote in between.
    pub cas: u32,
    /// Unix seconds; the value reads as absent from then on.
    pub expires_at: u64,
}

#[cfg(test)]
mod tests;
