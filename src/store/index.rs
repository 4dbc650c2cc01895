//! Pruning. Envoy shared data has no delete and never shrinks, so expired
//! entries must at least be emptied, and nothing can list keys: every write
//! therefore records its storage key in a time-bucket index, and
//! [`prune`] walks the buckets whose time has passed. (etcd needs none of
//! this: its entries carry leases.)
//!
//! * `{prefix}_idx/<minute>`: JSON list of the storage keys whose value
//!   expires in that minute (Unix seconds / 60), appended with CAS.
//! * `{prefix}_idx/cursor`: the next bucket to prune, as a JSON number. It
//!   starts at the first bucket ever created and is moved on with CAS.
//!
//! The index is not encrypted: it holds storage keys only, which are
//! namespaces plus hashes or random ids, never secrets (see [`Vault`]).
//!
//! Work is shared safely between workers: a pruner claims keys by writing
//! the rest of the bucket back under the bucket's cas, so two pruners never
//! take the same keys, and only the one whose CAS wins moves the cursor.
//! Keys claimed by a VM that dies before emptying them are left behind
//! (shared data lives no longer than the Envoy process anyway).
//!
//! Limits. Emptying frees a value, not its key: the ABI has no delete
//! (proxy-wasm-cpp-host's `SharedData::remove` is reached by no hostcall),
//! so every distinct key keeps its name for the life of the Envoy process.
//! And a bucket is rewritten whole on every append, so one minute with n
//! expiries copies O(n²) bytes: fine for thousands a minute, not millions.

use serde::Deserialize;

use super::vault::{decode, decrypt};
use super::{Kv, StoreError};
use crate::config::KeyEntry;

const MAX_CAS_RETRIES: usize = 8;
/// A bucket is pruned only once a whole minute has passed after its end,
/// for writes at a minute's edge.
const GRACE_MINUTES: u64 = 1;
/// The cas of a set meant only for a key that does not exist yet (see
/// [`super::shared`]).
const CAS_IF_NEW: u32 = u32::MAX;

fn index_key(prefix: &str, name: &str) -> String {
    format!("{prefix}_idx/{name}")
}

/// Records `key`, written to expire at `exp`, in its bucket. Best effort:
/// the value is already stored, so a failure here is logged (the entry
/// will not be pruned) rather than reported.
pub(super) fn index(kv: &mut dyn Kv, prefix: &str, key: &str, exp: u64) {
    if let Err(e) = append(kv, prefix, key, exp / 60) {
        log::warn!("store: could not index {key} for pruning ({e}); it will not be pruned");
    }
}

fn append(kv: &mut dyn Kv, prefix: &str, key: &str, minute: u64) -> Result<(), StoreError> {
    let bucket = index_key(prefix, &minute.to_string());
    for _ in 0..MAX_CAS_RETRIES {
        let (mut keys, cas) = match kv.get(&bucket)? {
            Some((bytes, cas)) => (parse_list(&bytes), cas),
            None => (Vec::new(), CAS_IF_NEW),
        };
        if keys.iter().any(|k| k == key) {
            return Ok(());
        }
        let new_bucket = keys.is_empty();
        keys.push(key.to_string());
        match kv.set(&bucket, &encode_list(&keys), cas) {
            Ok(()) if new_bucket => return lower_cursor(kv, prefix, minute),
            Ok(()) => return Ok(()),
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::CasMismatch)
}

/// Moves the cursor back to `minute` if it is later (or unset), so a
/// new bucket is never behind it. Normally buckets are created ahead of
/// the cursor and this only sets it once, at the first write.
fn lower_cursor(kv: &mut dyn Kv, prefix: &str, minute: u64) -> Result<(), StoreError> {
    let cursor = index_key(prefix, "cursor");
    for _ in 0..MAX_CAS_RETRIES {
        let cas = match kv.get(&cursor)? {
            Some((bytes, cas)) => match parse_minute(&bytes) {
                Some(current) if current <= minute => return Ok(()),
                _ => cas,
            },
            None => CAS_IF_NEW,
        };
        match kv.set(&cursor, minute.to_string().as_bytes(), cas) {
            Err(StoreError::CasMismatch) => continue,
            other => return other,
        }
    }
    Err(StoreError::CasMismatch)
}

/// Empties expired shared-data entries, walking the index buckets whose
/// minute has passed. Bounded: at most `max_keys` keys checked, and as
/// many turns in all (passing a drained bucket or losing a claim costs
/// one). Returns how many entries it emptied. A key is emptied only if its
/// value, read again now, has expired (it may have been written again with
/// a later expiry, and then sits in a later bucket too) and only under the
/// cas just read. Values that do not decrypt are left alone: they may be
/// sealed with a key a newer configuration added.
pub fn prune(
    kv: &mut dyn Kv,
    prefix: &str,
    keys: &[KeyEntry],
    now: u64,
    max_keys: usize,
) -> Result<usize, StoreError> {
    let cursor = index_key(prefix, "cursor");
    let due_before = (now / 60).saturating_sub(GRACE_MINUTES);
    let mut budget = max_keys;
    let mut emptied = 0;
    // Every turn spends at least one unit, so the loop ends.
    while budget > 0 {
        let Some((bytes, cursor_cas)) = kv.get(&cursor)? else {
            break; // nothing was ever indexed
        };
        let Some(minute) = parse_minute(&bytes) else {
            log::warn!("store: the pruning cursor {cursor} is corrupt; pruning stopped");
            break;
        };
        if minute >= due_before {
            break;
        }
        let bucket = index_key(prefix, &minute.to_string());
        let (listed, bucket_cas) = match kv.get(&bucket)? {
            Some((bytes, cas)) => (parse_list(&bytes), cas),
            None => (Vec::new(), 0),
        };
        if listed.is_empty() {
            // Drained: move on. If the CAS fails another pruner moved the
            // cursor (or a late bucket moved it back); read it again.
            budget -= 1;
            match kv.set(&cursor, (minute + 1).to_string().as_bytes(), cursor_cas) {
                Ok(()) | Err(StoreError::CasMismatch) => continue,
                Err(e) => return Err(e),
            }
        }
        // Claim a share by writing the rest back under the bucket's cas:
        // if another pruner (or a writer) got in between, this claims
        // nothing and looks again.
        let take = listed.len().min(budget);
        let (mine, rest) = listed.split_at(take);
        let rest = if rest.is_empty() {
            Vec::new()
        } else {
            encode_list(rest)
        };
        match kv.set(&bucket, &rest, bucket_cas) {
            Ok(()) => budget -= take,
            Err(StoreError::CasMismatch) => {
                budget -= 1;
                continue;
            }
            Err(e) => return Err(e),
        }
        for key in mine {
            if empty_if_expired(kv, prefix, keys, now, key)? {
                emptied += 1;
            }
        }
    }
    Ok(emptied)
}

fn empty_if_expired(
    kv: &mut dyn Kv,
    prefix: &str,
    keys: &[KeyEntry],
    now: u64,
    key: &str,
) -> Result<bool, StoreError> {
    if !key.starts_with(prefix) {
        return Ok(false);
    }
    let Some((bytes, cas)) = kv.get(key)? else {
        return Ok(false);
    };
    if bytes.is_empty() {
        return Ok(false);
    }
    // etcd's read cache: its own header says until when it is valid.
    let exp = if key[prefix.len()..].starts_with("_cache/") {
        super::etcd::cache::valid_until(&bytes)
    } else {
        decrypt(keys, key, &bytes)
            .and_then(|plain| decode::<serde::de::IgnoredAny>(key, &plain))
            .map(|(_, exp)| exp)
    };
    let Some(exp) = exp else {
        return Ok(false);
    };
    if exp > now {
        return Ok(false);
    }
    match kv.set(key, &[], cas) {
        Ok(()) => Ok(true),
        // Written again meanwhile: it is someone else's now.
        Err(StoreError::CasMismatch) => Ok(false),
        Err(e) => Err(e),
    }
}

fn parse_list(bytes: &[u8]) -> Vec<String> {
    if bytes.is_empty() {
        return Vec::new();
    }
    #[derive(Deserialize)]
    #[serde(transparent)]
    struct List(Vec<String>);
    match serde_json::from_slice::<List>(bytes) {
        Ok(List(keys)) => keys,
        Err(e) => {
            log::warn!("store: an index bucket does not parse ({e}); its keys will not be pruned");
            Vec::new()
        }
    }
}

fn encode_list(keys: &[String]) -> Vec<u8> {
    // Serialising strings into JSON cannot fail.
    serde_json::to_vec(keys).unwrap_or_default()
}

fn parse_minute(bytes: &[u8]) -> Option<u64> {
    serde_json::from_slice(bytes).ok()
}
