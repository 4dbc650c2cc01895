//! Decrypted values, per VM, by storage key and ciphertext. AES-GCM in wasm
//! has no hardware help (about 30 us per KB, measured in `make bench`), and
//! the per-request path reads the same few entries (the grant, the upstream
//! token) over and over. The same ciphertext under the same keys always
//! opens to the same plaintext, so a hit needs the bytes read now to equal
//! the bytes decrypted before (a memory compare, far cheaper than
//! decrypting). Cleared when the configuration, and so maybe the keys,
//! changes.

use std::cell::RefCell;
use std::collections::HashMap;

/// Entries kept before the cache starts over (bounds VM memory).
const MAX_ENTRIES: usize = 4096;

struct Entry {
    sealed: Vec<u8>,
    plain: Vec<u8>,
}

thread_local! {
    static CACHE: RefCell<HashMap<String, Entry>> = RefCell::new(HashMap::new());
}

pub fn get(key: &str, sealed: &[u8]) -> Option<Vec<u8>> {
    CACHE.with(|c| {
        c.borrow()
            .get(key)
            .filter(|e| e.sealed == sealed)
            .map(|e| e.plain.clone())
    })
}

pub fn put(key: &str, sealed: &[u8], plain: &[u8]) {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= MAX_ENTRIES {
            c.clear();
        }
        c.insert(
            key.to_string(),
            Entry {
                sealed: sealed.to_vec(),
                plain: plain.to_vec(),
            },
        );
    });
}

/// Forgets everything (the configuration, and maybe the keys, changed).
pub fn clear() {
    CACHE.with(|c| c.borrow_mut().clear());
}
