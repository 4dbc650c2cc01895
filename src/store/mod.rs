//! State shared by workers (and, with etcd, by Envoy replicas).
//!
//! * [`Txn`]: what a step of the core reads and writes. Reads the backend
//!   can answer at once are answered; others go out as commands and the
//!   step runs again with their answers ([`attempt`]). Writes are held and
//!   go out together, each with the version it expects, once the step is
//!   done: so a step's decision takes effect only if its store writes do.
//! * [`Vault`]: the typed, encrypted, expiring layer over a [`Txn`].
//! * [`etcd`]: the etcd backend, for replicas sharing state, with a
//!   per-Envoy read cache in shared data.
//! * [`shared`]: the shared-data backend, over a [`Kv`] with Envoy's rules
//!   (the host's shared data, or [`MemoryKv`] in tests).
//!
//! Keys are never secret: they are `{prefix}{namespace}/{id}`, and an id
//! derived from a secret (a code, a refresh token) is its hash,
//! `crypto::sha256_b64url(secret)`, never the secret itself. Values are
//! sealed with AES-256-GCM, bound to their key.

pub mod etcd;
mod index;
mod memory;
mod plain_cache;
pub mod shared;
mod txn;
mod vault;

use std::fmt;

pub use self::index::prune;
pub use self::memory::MemoryKv;
pub use self::plain_cache::clear as clear_cache;
pub use self::txn::{
    Attempt, Entry, Expect, Later, ReadNow, Snapshot, StoreView, Txn, Write, attempt,
};
pub use self::vault::Vault;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The entry changed since it was read (or, for a create, it exists).
    CasMismatch,
    /// The store could not do the operation; the text says why (no secrets).
    Unavailable(String),
    /// The key has not been read yet: its read goes out as a command and
    /// the step runs again with the answer ([`Txn`]).
    NotRead,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::CasMismatch => f.write_str("the stored value changed concurrently"),
            StoreError::Unavailable(why) => write!(f, "store unavailable: {why}"),
            StoreError::NotRead => f.write_str("the value has not been read yet"),
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
///
/// The core never calls it during a step: steps read and write a [`Txn`],
/// and [`shared`] answers its reads and commits its writes on a `Kv`.
pub trait Kv {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError>;
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError>;
}

/// A stored value with its version, for compare-and-swap updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    /// Pass back to [`Vault::put`] or [`Vault::remove`] to write only if
    /// nobody wrote in between. Shared data's cas, or etcd's `mod_revision`.
    pub cas: u64,
    /// Unix seconds; the value reads as absent from then on.
    pub expires_at: u64,
}

#[cfg(test)]
mod tests;
