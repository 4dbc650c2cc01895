//! An in-memory [`Kv`] with exactly Envoy's shared-data rules, for unit
//! tests and the flow tests' fake host.

use std::collections::BTreeMap;

use super::{Kv, StoreError};

/// In-memory [`Kv`]. Like Envoy, one cas counter serves every key: it starts
/// at 1, goes up by one on each successful set, and skips 0 when it wraps
/// (proxy-wasm-cpp-host `SharedData::nextCas`).
#[derive(Debug, Clone)]
pub struct MemoryKv {
    entries: BTreeMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
    unavailable: bool,
}

impl Default for MemoryKv {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryKv {
    pub fn new() -> Self {
        MemoryKv {
            entries: BTreeMap::new(),
            next_cas: 1,
            unavailable: false,
        }
    }

    /// Number of keys, emptied ones included (shared data never shrinks).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of keys holding a non-empty value.
    pub fn non_empty_len(&self) -> usize {
        self.entries.values().filter(|(v, _)| !v.is_empty()).count()
    }

    /// The raw stored bytes of `key`, for tests that check what is at rest.
    pub fn raw(&self, key: &str) -> Option<&[u8]> {
        self.entries.get(key).map(|(v, _)| v.as_slice())
    }

    /// Every key and its raw bytes, in key order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries
            .iter()
            .map(|(k, (v, _))| (k.as_str(), v.as_slice()))
    }

    /// While set, every `get` and `set` fails with
    /// [`StoreError::Unavailable`], to test how callers handle an outage.
    pub fn set_unavailable(&mut self, unavailable: bool) {
        self.unavailable = unavailable;
    }

    fn check_available(&self) -> Result<(), StoreError> {
        if self.unavailable {
            Err(StoreError::Unavailable(
                "memory store set unavailable".into(),
            ))
        } else {
            Ok(())
        }
    }
}

impl Kv for MemoryKv {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.check_available()?;
        Ok(self.entries.get(key).cloned())
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        self.check_available()?;
        if let Some((_, current)) = self.entries.get(key)
            && cas != 0
            && cas != *current
        {
            return Err(StoreError::CasMismatch);
        }
        let new_cas = self.next_cas;
        self.next_cas = match self.next_cas.wrapping_add(1) {
            0 => 1,
            n => n,
        };
        self.entries
            .insert(key.to_string(), (value.to_vec(), new_cas));
        Ok(())
    }
}
