//! The per-Envoy read cache, in shared data: what this Envoy last read
//! from etcd or wrote there, answered for `cache_seconds` without asking
//! etcd again. Staleness is bounded by that: a change made at another
//! replica is seen here at most `cache_seconds` later. Writes are safe
//! anyway, since a commit compares every key its step read (see `op`).
//!
//! Entry `{prefix}_cache/{key without prefix}`:
//! `[1 present | 0 absent][valid_until][as_of][mod_revision][sealed value]`,
//! integers u64 big-endian; `as_of` is the etcd revision at which the
//! entry was seen, `mod_revision` the entry's own version (0 if absent).
//! The value stays sealed as etcd holds it. Entries are indexed for
//! pruning at `valid_until` (`store::index`), so the cache does not grow
//! with keys nobody reads any more.

use super::super::index;
use super::super::txn::{Entry, ReadNow};
use super::super::{Kv, StoreError};

const HEADER: usize = 25;

pub fn cache_key(prefix: &str, key: &str) -> String {
    format!("{prefix}_cache/{}", key.strip_prefix(prefix).unwrap_or(key))
}

struct Cached {
    valid_until: u64,
    as_of: u64,
    entry: Entry,
}

fn decode(bytes: &[u8]) -> Option<Cached> {
    if bytes.len() < HEADER {
        return None;
    }
    let valid_until = u64::from_be_bytes(bytes[1..9].try_into().ok()?);
    let as_of = u64::from_be_bytes(bytes[9..17].try_into().ok()?);
    let mod_revision = u64::from_be_bytes(bytes[17..25].try_into().ok()?);
    let entry = match bytes[0] {
        1 => Some((bytes[HEADER..].to_vec(), mod_revision)),
        0 => None,
        _ => return None,
    };
    Some(Cached {
        valid_until,
        as_of,
        entry,
    })
}

/// When a cache entry stops being valid, for pruning; `None` if `bytes`
/// is not one.
pub fn valid_until(bytes: &[u8]) -> Option<u64> {
    decode(bytes).map(|c| c.valid_until)
}

/// Reads answered from the cache when its entry is still valid.
pub struct CacheReads<'a> {
    pub local: &'a dyn Kv,
    pub prefix: &'a str,
    pub now: u64,
}

impl ReadNow for CacheReads<'_> {
    fn read_now(&self, key: &str) -> Option<Result<Entry, StoreError>> {
        let (bytes, _) = self.local.get(&cache_key(self.prefix, key)).ok()??;
        let cached = decode(&bytes)?;
        (cached.valid_until > self.now).then_some(Ok(cached.entry))
    }
}

/// Records what etcd holds at `key` as of revision `as_of`. An entry seen
/// at a later revision already there is kept (a slow answer must not put back
/// an older value). Best effort: the cache is only a cache.
pub fn remember(
    local: &mut dyn Kv,
    prefix: &str,
    key: &str,
    entry: &Entry,
    as_of: u64,
    valid_until: u64,
) {
    let slot = cache_key(prefix, key);
    if let Ok(Some((bytes, _))) = local.get(&slot)
        && let Some(old) = decode(&bytes)
        && old.as_of > as_of
    {
        return;
    }
    let mut bytes = Vec::with_capacity(HEADER + entry.as_ref().map_or(0, |(v, _)| v.len()));
    bytes.push(u8::from(entry.is_some()));
    bytes.extend_from_slice(&valid_until.to_be_bytes());
    bytes.extend_from_slice(&as_of.to_be_bytes());
    bytes.extend_from_slice(&entry.as_ref().map_or(0, |(_, v)| *v).to_be_bytes());
    if let Some((value, _)) = entry {
        bytes.extend_from_slice(value);
    }
    if local.set(&slot, &bytes, 0).is_ok() {
        index::index(local, prefix, &slot, valid_until);
    }
}
