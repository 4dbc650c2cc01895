//! The typed layer over a [`Kv`]: values are JSON, sealed with AES-256-GCM
//! bound to their storage key, and expire.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{StoreError, StoreView, Versioned};
use crate::config::KeyEntry;
use crate::crypto;
use crate::env::Random;

/// The cas to write a key with when it was read as absent: the write
/// expects the key still absent ([`super::Expect::Absent`]).
pub(super) const CAS_IF_ABSENT: u64 = u64::MAX - 1;

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
    cas: Option<u64>,
    live: Option<(T, u64)>,
}

impl<T> Slot<T> {
    /// The cas that writes over exactly what was read.
    fn write_cas(&self) -> u64 {
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
    pub(super) kv: &'a mut dyn StoreView,
    pub(super) prefix: &'a str,
    pub(super) keys: &'a [KeyEntry],
    pub(super) now: u64,
    random: &'a mut dyn Random,
}

impl<'a> Vault<'a> {
    /// `keys`: the configured encryption keys, the first encrypts, all
    /// decrypt (rotation). `now`: Unix seconds.
    pub fn new(
        kv: &'a mut dyn StoreView,
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
        cas: u64,
    ) -> Result<(), StoreError> {
        let key = self.storage_key(namespace, id)?;
        self.write(&key, value, ttl_seconds, cas)
    }

    /// Inserts only if the entry is absent, expired, emptied or
    /// undecryptable; `CasMismatch` if a live value is there.
    ///
    /// A key that exists (expired, emptied) is written under the version
    /// read; one that does not, on condition that it still does not.
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

    /// Deletes the entry (shared data, which has no delete, empties it).
    /// `cas` as for [`Vault::put`].
    pub fn remove(&mut self, namespace: &str, id: &str, cas: u64) -> Result<(), StoreError> {
        let key = self.storage_key(namespace, id)?;
        // Nothing to remove: no write (an emptied shared-data key is never freed).
        if cas == 0 && self.kv.get(&key)?.is_none_or(|(v, _)| v.is_empty()) {
            return Ok(());
        }
        self.kv.set(&key, None, cas, 0)
    }

    /// Read-modify-write: `f` gets the current value (`None` if absent or
    /// expired) and returns the new value and its ttl, or `None` to leave
    /// the entry as it is. The write expects the version read, so if
    /// another writer got in between, the step runs again ([`super::txn`]).
    /// Returns what was written, or `None` if `f` declined.
    pub fn update<T, F>(&mut self, namespace: &str, id: &str, f: F) -> Result<Option<T>, StoreError>
    where
        T: Serialize + DeserializeOwned + Clone,
        F: FnOnce(Option<T>) -> Option<(T, u64)>,
    {
        let key = self.storage_key(namespace, id)?;
        let slot = self.read::<T>(&key)?;
        let cas = slot.write_cas();
        let Some((new, ttl)) = f(slot.live.map(|(v, _)| v)) else {
            return Ok(None);
        };
        self.write(&key, &new, ttl, cas)?;
        Ok(Some(new))
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
    fn read_plain(&self, key: &str) -> Result<(Option<u64>, Option<Vec<u8>>), StoreError> {
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

    fn decrypt(&self, key: &str, bytes: &[u8]) -> Option<Vec<u8>> {
        decrypt(self.keys, key, bytes)
    }

    fn write<T: Serialize>(
        &mut self,
        key: &str,
        value: &T,
        ttl_seconds: u64,
        cas: u64,
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
        cas: u64,
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
        self.kv.set(key, Some(sealed), cas, exp)
    }
}

/// Opens a sealed value with one of `keys`; logs (never the bytes) if none opens it.
pub(super) fn decrypt(keys: &[KeyEntry], key: &str, bytes: &[u8]) -> Option<Vec<u8>> {
    let plain = crypto::open(keys, key.as_bytes(), bytes);
    if plain.is_none() {
        log::warn!(
            "store: the value at {key} does not decrypt with the configured keys (key removed, or tampered); reading it as absent"
        );
    }
    plain
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
