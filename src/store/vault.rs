//! The typed layer over a [`Kv`]: values are JSON, sealed with AES-256-GCM
//! bound to their storage key, and expire.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Kv, StoreError, Versioned};
use crate::config::KeyEntry;
use crate::crypto;
use crate::env::Random;

/// Attempts of a read-modify-write before giving up with `CasMismatch`.
const MAX_CAS_RETRIES: usize = 8;

/// The cas to write a key with when it was read as absent. Envoy has no
/// create-only write, but a set with a non-zero cas fails when the key
/// exists with another cas: so if a second writer creates the key between
/// our read and our write, our write fails instead of overwriting theirs.
/// The residual race: the entry they created got exactly this cas from
/// the host's single, process-wide counter (one value in 2^32 - 1), and
/// then both writes succeed. Callers use random ids for create-only keys,
/// which makes two writers of one missing key unlikely in the first place.
pub(super) const CAS_IF_ABSENT: u32 = u32::MAX;

/// What is sealed: the expiry travels inside the ciphertext, so it can't be
/// extended by someone who can write the store but lacks the key.
#[derive(Serialize)]
struct EnvelopeOut<'v, T> {
    exp: u64,
    v: &'v T,
}

#[derive(Deserialize)]
struct EnvelopeIn<T> {
    exp: u64,
    v: T,
}

/// A key's raw state: its cas if it exists at all, and its live value.
struct Slot<T> {
    cas: Option<u32>,
    live: Option<(T, u64)>,
}

impl<T> Slot<T> {
    /// The cas that writes over exactly what was read.
    fn write_cas(&self) -> u32 {
        self.cas.unwrap_or(CAS_IF_ABSENT)
    }
}

/// The typed, encrypted, expiring store the core uses.
///
/// Keys are `{prefix}{namespace}/{id}`. Values are JSON
/// `{"exp": <unix s>, "v": <T>}` sealed with [`crypto::seal`] under the
/// first encryption key, with the full storage key as associated data: a
/// value copied to another key does not open. Expired, empty ("removed")
/// and undecryptable values all read as absent.
///
/// Ids must not be secrets, since keys are stored in the clear and may be
/// logged: an id derived from a secret (code, token) is
/// `crypto::sha256_b64url(secret)`. Namespaces are fixed names chosen by
/// the code: non-empty, without `/`, and not starting with `_` (reserved
/// for the pruning index).
pub struct Vault<'a> {
    pub(super) kv: &'a mut dyn Kv,
    pub(super) prefix: &'a str,
    pub(super) keys: &'a [KeyEntry],
    pub(super) now: u64,
    random: &'a mut dyn Random,
}

impl<'a> Vault<'a> {
    /// `keys`: the configured encryption keys, the first encrypts, all
    /// decrypt (rotation). `now`: Unix seconds.
    pub fn new(
        kv: &'a mut dyn Kv,
        prefix: &'a str,
        keys: &'a [KeyEntry],
        now: u64,
        random: &'a mut dyn Random,
    ) -> Self {
        Vault {
            kv,
            prefix,
            keys,
            now,
            random,
        }
    }

    /// The storage key of `namespace`/`id`.
    pub fn storage_key(&self, namespace: &str, id: &str) -> Result<String, StoreError> {
        if namespace.is_empty() || namespace.contains('/') || namespace.starts_with('_') {
            return Err(StoreError::Unavailable(format!(
                "invalid store namespace {namespace:?}"
            )));
        }
        if id.is_empty() {
            return Err(StoreError::Unavailable("empty store id".into()));
        }
        Ok(format!("{}{namespace}/{id}", self.prefix))
    }

    pub fn get<T: DeserializeOwned>(
        &self,
        namespace: &str,
        id: &str,
    ) -> Result<Option<Versioned<T>>, StoreError> {
        let key = self.storage_key(namespace, id)?;
        let slot = self.read::<T>(&key)?;
        Ok(match (slot.live, slot.cas) {
            (Some((value, expires_at)), Some(cas)) => Some(Versioned {
                value,
                cas,
                expires_at,
            }),
            _ => None,
        })
    }

    /// Writes `value` to expire `ttl_seconds` from now. `cas`: 0 writes
    /// unconditionally; otherwise the cas of a [`Versioned`] read, and the
    /// write fails with `CasMismatch` if the entry changed since.
    pub fn put<T: Serialize>(
        &mut self,
        namespace: &str,
        id: &str,
        value: &T,
        ttl_seconds: u64,
        cas: u32,
    ) -> Result<(), StoreError> {
        let key = self.storage_key(namespace, id)?;
        self.write(&key, value, ttl_seconds, cas)
    }

    /// Inserts only if the entry is absent, expired, emptied or
    /// undecryptable; `CasMismatch` if a live value is there.
    ///
    /// Envoy has no create-only write, so this reads, then writes with the
    /// cas it read ([`CAS_IF_ABSENT`] for a key never set). A key that
    /// exists is protected by its cas. Two writers of a key that never
    /// existed are told apart too, except in the rare case where the first
    /// one's new entry got the cas [`CAS_IF_ABSENT`] stands for; then both
    /// succeed and the last write wins. Use random ids for such keys.
    pub fn insert_new<T: Serialize>(
        &mut self,
        namespace: &str,
        id: &str,
        value: &T,
        ttl_seconds: u64,
    ) -> Result<(), StoreError> {
        let key = self.storage_key(namespace, id)?;
        let slot = self.read::<serde::de::IgnoredAny>(&key)?;
        if slot.live.is_some() {
            return Err(StoreError::CasMismatch);
        }
        self.write(&key, value, ttl_seconds, slot.write_cas())
    }

    /// Empties the entry (Envoy has no delete). `cas` as for [`Vault::put`].
    pub fn remove(&mut self, namespace: &str, id: &str, cas: u32) -> Result<(), StoreError> {
        let key = self.storage_key(namespace, id)?;
        // An unconditional remove of a key that was never set would create
        // it, and shared-data keys are never freed: skip the write.
        if cas == 0 && self.kv.get(&key)?.is_none_or(|(v, _)| v.is_empty()) {
            return Ok(());
        }
        self.kv.set(&key, &[], cas)
    }

    /// Read-modify-write with compare-and-swap, retried up to 8 times when
    /// another writer got in between. `f` gets the current value (`None` if
    /// absent or expired) and returns the new value and its ttl, or `None`
    /// to leave the entry as it is; it may run more than once, so it must
    /// only compute. Returns what was written, or `None` if `f` declined.
    pub fn update<T, F>(
        &mut self,
        namespace: &str,
        id: &str,
        mut f: F,
    ) -> Result<Option<T>, StoreError>
    where
        T: Serialize + DeserializeOwned + Clone,
        F: FnMut(Option<T>) -> Option<(T, u64)>,
    {
        let key = self.storage_key(namespace, id)?;
        for _ in 0..MAX_CAS_RETRIES {
            let slot = self.read::<T>(&key)?;
            let cas = slot.write_cas();
            let Some((new, ttl)) = f(slot.live.map(|(v, _)| v)) else {
                return Ok(None);
            };
            match self.write(&key, &new, ttl, cas) {
                Ok(()) => return Ok(Some(new)),
                Err(StoreError::CasMismatch) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::CasMismatch)
    }

    // The generic methods below only (de)serialise; the work they share
    // (store calls, AES-GCM, logging) sits in non-generic helpers, so each
    // value type stored adds little to the module.

    /// Reads and opens `key`. Undecryptable or unparsable values are
    /// logged (never their bytes) and read as absent.
    fn read<T: DeserializeOwned>(&self, key: &str) -> Result<Slot<T>, StoreError> {
        let (cas, plain) = self.read_plain(key)?;
        Ok(Slot {
            cas,
            live: plain
                .and_then(|p| decode::<T>(key, &p))
                .filter(|(_, exp)| *exp > self.now),
        })
    }

    /// The cas of `key` if it exists, and its decrypted envelope if it
    /// holds one that opens.
    fn read_plain(&self, key: &str) -> Result<(Option<u32>, Option<Vec<u8>>), StoreError> {
        Ok(match self.kv.get(key)? {
            None => (None, None),
            Some((bytes, cas)) if bytes.is_empty() => (Some(cas), None),
            // A retired key's values must stop opening, cached or not.
            Some((bytes, cas)) => match super::plain_cache::get(key, &bytes)
                .filter(|_| crypto::sealed_with_one_of(self.keys, &bytes))
            {
                Some(plain) => (Some(cas), Some(plain)),
                None => {
                    let plain = self.decrypt(key, &bytes);
                    if let Some(p) = &plain {
                        super::plain_cache::put(key, &bytes, p);
                    }
                    (Some(cas), plain)
                }
            },
        })
    }

    pub(super) fn decrypt(&self, key: &str, bytes: &[u8]) -> Option<Vec<u8>> {
        let plain = crypto::open(self.keys, key.as_bytes(), bytes);
        if plain.is_none() {
            log::warn!(
                "store: the value at {key} does not decrypt with the configured keys (key removed, or tampered); reading it as absent"
            );
        }
        plain
    }

    fn write<T: Serialize>(
        &mut self,
        key: &str,
        value: &T,
        ttl_seconds: u64,
        cas: u32,
    ) -> Result<(), StoreError> {
        let exp = self.now.saturating_add(ttl_seconds);
        let plain = serde_json::to_vec(&EnvelopeOut { exp, v: value }).map_err(|e| {
            StoreError::Unavailable(format!("cannot encode the value for {key}: {e}"))
        })?;
        self.seal_and_set(key, &plain, exp, cas)
    }

    fn seal_and_set(
        &mut self,
        key: &str,
        plain: &[u8],
        exp: u64,
        cas: u32,
    ) -> Result<(), StoreError> {
        let Some(key_entry) = self.keys.first() else {
            return Err(StoreError::Unavailable(
                "no encryption key configured".into(),
            ));
        };
        let sealed = crypto::seal(key_entry, key.as_bytes(), plain, self.random);
        if sealed.is_empty() {
            // An empty value would read as "removed": refuse rather than lose data silently.
            return Err(StoreError::Unavailable("encryption key unusable".into()));
        }
        self.kv.set(key, &sealed, cas)?;
        self.index(key, exp);
        Ok(())
    }
}

/// Parses a decrypted envelope: `(value, exp)`, expired or not.
pub(super) fn decode<T: DeserializeOwned>(key: &str, plain: &[u8]) -> Option<(T, u64)> {
    match serde_json::from_slice::<EnvelopeIn<T>>(plain) {
        Ok(e) => Some((e.v, e.exp)),
        Err(e) => {
            unparsable(key, &e);
            None
        }
    }
}

fn unparsable(key: &str, e: &serde_json::Error) {
    // serde_json's message names a position and the expected type, not the value.
    log::warn!("store: the value at {key} does not parse ({e}); reading it as absent");
}
