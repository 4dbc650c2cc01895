use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;
use crate::config::KeyEntry;
use crate::env::TestRandom;
use crate::secret::Secret;

const PREFIX: &str = "mcp/";
/// A Unix time on a minute boundary (1_700_000_000 rounded down).
const T0: u64 = 1_699_999_980;

fn key(id: &str, byte: u8) -> KeyEntry {
    KeyEntry {
        id: id.to_string(),
        key: Secret::new(vec![byte; 32]),
    }
}

fn keys() -> Vec<KeyEntry> {
    vec![key("enc-1", 1)]
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    user: String,
    n: u32,
}

fn session(n: u32) -> Session {
    Session {
        user: "alice@example.com".into(),
        n,
    }
}

/// Runs `f` as one step with a vault over `kv` at time `now`: reads
/// answered at once, writes committed at the end (`shared::run`).
fn with_vault<R>(
    kv: &mut dyn Kv,
    keys: &[KeyEntry],
    now: u64,
    mut f: impl FnMut(&mut Vault) -> R,
) -> R {
    shared::run(kv, PREFIX, |view| {
        let mut rng = TestRandom::new(now);
        let mut vault = Vault::new(view, PREFIX, keys, now, &mut rng);
        f(&mut vault)
    })
}

/// Counts, per key, the successful writes of an empty value.
#[derive(Default)]
struct Counting {
    inner: MemoryKv,
    emptied: BTreeMap<String, usize>,
}

impl Kv for Counting {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.inner.get(key)
    }
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        self.inner.set(key, value, cas)?;
        if value.is_empty() {
            *self.emptied.entry(key.to_string()).or_default() += 1;
        }
        Ok(())
    }
}

/// Lets a test act as another worker: `hook` runs on the store just before
/// each write goes through, as if it had happened concurrently.
struct Interleaved<'h, K: Kv> {
    inner: K,
    hook: Hook<'h, K>,
}

type Hook<'h, K> = Box<dyn FnMut(&mut K, &str) + 'h>;

impl<K: Kv> Kv for Interleaved<'_, K> {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.inner.get(key)
    }
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        (self.hook)(&mut self.inner, key);
        self.inner.set(key, value, cas)
    }
}

// ---- MemoryKv keeps Envoy's rules ----

#[test]
fn memory_kv_has_envoy_semantics() {
    let mut kv = MemoryKv::new();
    assert_eq!(kv.get("a"), Ok(None));
    // A missing key is set whatever the cas.
    kv.set("a", b"1", 12345).unwrap();
    let (v, cas1) = kv.get("a").unwrap().unwrap();
    assert_eq!(v, b"1");
    assert_ne!(cas1, 0);
    // A stale cas fails, the current one succeeds and changes the cas.
    assert_eq!(
        kv.set("a", b"2", cas1.wrapping_add(1)),
        Err(StoreError::CasMismatch)
    );
    kv.set("a", b"2", cas1).unwrap();
    let (_, cas2) = kv.get("a").unwrap().unwrap();
    assert_ne!(cas2, cas1);
    assert_eq!(kv.set("a", b"3", cas1), Err(StoreError::CasMismatch));
    // cas 0 is unconditional; every successful set gives a new cas, even the same bytes.
    kv.set("a", b"2", 0).unwrap();
    let (v, cas3) = kv.get("a").unwrap().unwrap();
    assert_eq!(v, b"2");
    assert_ne!(cas3, cas2);
    // No delete: an empty value keeps the key.
    kv.set("a", b"", cas3).unwrap();
    assert_eq!(kv.get("a").unwrap().map(|(v, _)| v), Some(Vec::new()));
    assert_eq!((kv.len(), kv.non_empty_len()), (1, 0));

    kv.set_unavailable(true);
    assert!(matches!(kv.get("a"), Err(StoreError::Unavailable(_))));
    assert!(matches!(
        kv.set("a", b"x", 0),
        Err(StoreError::Unavailable(_))
    ));
    kv.set_unavailable(false);
    assert!(kv.get("a").is_ok());
}

// ---- Vault ----

#[test]
fn round_trip() {
    let (mut kv, keys) = (MemoryKv::new(), keys());
    with_vault(&mut kv, &keys, T0, |v| {
        assert_eq!(v.get::<Session>("sessions", "s1").unwrap(), None);
        v.put("sessions", "s1", &session(1), 600, 0).unwrap();
        let got = v.get::<Session>("sessions", "s1").unwrap().unwrap();
        assert_eq!(got.value, session(1));
        assert_eq!(got.expires_at, T0 + 600);
        assert_ne!(got.cas, 0);
        assert_eq!(v.get::<Session>("sessions", "s2").unwrap(), None);
        assert_eq!(
            v.get::<Session>("codes", "s1").unwrap(),
            None,
            "namespaces are apart"
        );
    });
    assert!(kv.raw("mcp/sessions/s1").is_some());
}

#[test]
fn expired_values_read_as_absent() {
    let (mut kv, keys) = (MemoryKv::new(), keys());
    with_vault(&mut kv, &keys, T0, |v| {
        v.put("codes", "c", &session(1), 60, 0)
    })
    .unwrap();
    let at = |kv: &mut MemoryKv, now| {
        with_vault(kv, &keys, now, |v| v.get::<Session>("codes", "c").unwrap())
    };
    assert!(at(&mut kv, T0 + 59).is_some());
    assert_eq!(at(&mut kv, T0 + 60), None);
    assert_eq!(at(&mut kv, T0 + 10_000), None);
    // A ttl of zero is expired at once; a huge one does not overflow.
    with_vault(&mut kv, &keys, T0, |v| {
        v.put("codes", "zero", &session(1), 0, 0).unwrap();
        assert_eq!(v.get::<Session>("codes", "zero").unwrap(), None);
        v.put("codes", "forever", &session(1), u64::MAX, 0).unwrap();
        assert_eq!(
            v.get::<Session>("codes", "forever")
                .unwrap()
                .unwrap()
                .expires_at,
            u64::MAX
        );
    });
}

#[test]
fn cas_conflict_second_writer_loses() {
    let (mut kv, keys) = (MemoryKv::new(), keys());
    with_vault(&mut kv, &keys, T0, |v| {
        v.put("sessions", "s", &session(1), 600, 0).unwrap();
        let a = v.get::<Session>("sessions", "s").unwrap().unwrap();
        let b = v.get::<Session>("sessions", "s").unwrap().unwrap();
        assert_eq!(a.cas, b.cas);
        v.put("sessions", "s", &session(2), 600, a.cas).unwrap();
        assert_eq!(
            v.put("sessions", "s", &session(3), 600, b.cas),
            Err(StoreError::CasMismatch)
        );
        assert_eq!(
            v.get::<Session>("sessions", "s").unwrap().unwrap().value,
            session(2)
        );
        // cas 0 overwrites whatever is there.
        v.put("sessions", "s", &session(4), 600, 0).unwrap();
        assert_eq!(
            v.get::<Session>("sessions", "s").unwrap().unwrap().value,
            session(4)
        );
    });
}

#[test]
fn insert_new_only_when_absent() {
    let (mut kv, keys) = (MemoryKv::new(), keys());
    with_vault(&mut kv, &keys, T0, |v| {
        v.insert_new("pending", "p", &session(1), 60).unwrap();
        assert_eq!(
            v.insert_new("pending", "p", &session(2), 60),
            Err(StoreError::CasMismatch)
        );
        assert_eq!(
            v.get::<Session>("pending", "p").unwrap().unwrap().value,
            session(1)
        );
        // A removed entry may be created again.
        let cas = v.get::<Session>("pending", "p").unwrap().unwrap().cas;
        v.remove("pending", "p", cas).unwrap();
        v.insert_new("pending", "p", &session(3), 60).unwrap();
        assert_eq!(
            v.get::<Session>("pending", "p").unwrap().unwrap().value,
            session(3)
        );
    });
    // So may an expired one.
    with_vault(&mut kv, &keys, T0 + 61, |v| {
        v.insert_new("pending", "p", &session(4), 60).unwrap();
        assert_eq!(
            v.get::<Session>("pending", "p").unwrap().unwrap().value,
            session(4)
        );
    });
}

#[test]
fn insert_new_loses_to_a_concurrent_creator() {
    let keys = keys();
    // Another worker creates the key between our read and our write.
    let mut other = MemoryKv::new();
    with_vault(&mut other, &keys, T0, |v| {
        v.put("pending", "p", &session(9), 60, 0)
    })
    .unwrap();
    let theirs = other.raw("mcp/pending/p").unwrap().to_vec();
    let mut fired = false;
    let mut kv = Interleaved {
        inner: MemoryKv::new(),
        hook: Box::new(|kv: &mut MemoryKv, key: &str| {
            if key == "mcp/pending/p" && !std::mem::replace(&mut fired, true) {
                kv.set(key, &theirs, 0).unwrap();
            }
        }),
    };
    // Our write conflicts at commit; run again, the step sees theirs.
    let (inserted, seen) = with_vault(&mut kv, &keys, T0, |v| {
        (
            v.insert_new("pending", "p", &session(1), 60),
            v.get::<Session>("pending", "p").unwrap().map(|s| s.value),
        )
    });
    assert_eq!(inserted, Err(StoreError::CasMismatch));
    assert_eq!(seen, Some(session(9)));
}

#[test]
fn remove_empties_and_respects_cas() {
    let (mut kv, keys) = (MemoryKv::new(), keys());
    with_vault(&mut kv, &keys, T0, |v| {
        v.put("codes", "c", &session(1), 60, 0).unwrap();
        let read = v.get::<Session>("codes", "c").unwrap().unwrap();
        v.put("codes", "c", &session(2), 60, read.cas).unwrap();
        assert_eq!(
            v.remove("codes", "c", read.cas),
            Err(StoreError::CasMismatch)
        );
        let read = v.get::<Session>("codes", "c").unwrap().unwrap();
        v.remove("codes", "c", read.cas).unwrap();
        assert_eq!(v.get::<Session>("codes", "c").unwrap(), None);
        // Removing what was never there writes nothing (shared data never frees a key).
        v.remove("codes", "never", 0).unwrap();
    });
    // Written and removed in one step: never written at all.
    assert_eq!(kv.raw("mcp/codes/c"), None);
    assert_eq!(kv.raw("mcp/codes/never"), None);
    // Removed in a later step: emptied (shared data has no delete).
    with_vault(&mut kv, &keys, T0, |v| {
        v.put("codes", "c", &session(1), 60, 0).unwrap();
    });
    with_vault(&mut kv, &keys, T0, |v| {
        let read = v.get::<Session>("codes", "c").unwrap().unwrap();
        v.remove("codes", "c", read.cas).unwrap();
    });
    assert_eq!(kv.raw("mcp/codes/c"), Some(&b""[..]));
}

#[test]
fn update_reads_modifies_writes() {
    let (mut kv, keys) = (MemoryKv::new(), keys());
    with_vault(&mut kv, &keys, T0, |v| {
        let bump = |cur: Option<Session>| Some((session(cur.map_or(0, |s| s.n + 1)), 600));
        assert_eq!(v.update("counters", "x", bump).unwrap(), Some(session(0)));
        assert_eq!(v.update("counters", "x", bump).unwrap(), Some(session(1)));
        assert_eq!(
            v.get::<Session>("counters", "x").unwrap().unwrap().value,
            session(1)
        );
        // Declining leaves the value alone.
        assert_eq!(
            v.update::<Session, _>("counters", "x", |_| None).unwrap(),
            None
        );
        assert_eq!(
            v.get::<Session>("counters", "x").unwrap().unwrap().value,
            session(1)
        );
    });
}

#[test]
fn update_retries_on_a_concurrent_change() {
    let keys = keys();
    let mut other = MemoryKv::new();
    with_vault(&mut other, &keys, T0, |v| {
        v.put("counters", "x", &session(100), 600, 0)
    })
    .unwrap();
    let theirs = other.raw("mcp/counters/x").unwrap().to_vec();

    let mut base = MemoryKv::new();
    with_vault(&mut base, &keys, T0, |v| {
        v.put("counters", "x", &session(1), 600, 0)
    })
    .unwrap();
    let mut fired = false;
    let mut kv = Interleaved {
        inner: base,
        hook: Box::new(|kv: &mut MemoryKv, key: &str| {
            if key == "mcp/counters/x" && !std::mem::replace(&mut fired, true) {
                kv.set(key, &theirs, 0).unwrap();
            }
        }),
    };
    let mut seen = Vec::new();
    let written = with_vault(&mut kv, &keys, T0, |v| {
        v.update("counters", "x", |cur: Option<Session>| {
            let n = cur.map_or(0, |s| s.n);
            seen.push(n);
            Some((session(n + 1), 600))
        })
    });
    assert_eq!(written, Ok(Some(session(101))));
    assert_eq!(
        seen,
        [1, 100],
        "the second attempt saw the other writer's value"
    );
    with_vault(&mut kv, &keys, T0, |v| {
        assert_eq!(
            v.get::<Session>("counters", "x").unwrap().unwrap().value,
            session(101)
        );
    });
}

#[test]
fn update_gives_up_under_endless_contention() {
    let keys = keys();
    let mut counter = 0u8;
    let mut kv = Interleaved {
        inner: MemoryKv::new(),
        hook: Box::new(|kv: &mut MemoryKv, key: &str| {
            if key == "mcp/counters/x" {
                counter += 1;
                kv.set(key, &[counter], 0).unwrap();
            }
        }),
    };
    let mut calls = 0;
    let result = with_vault(&mut kv, &keys, T0, |v| {
        v.update("counters", "x", |_: Option<Session>| {
            calls += 1;
            Some((session(1), 60))
        })
    });
    // Every commit conflicts: the step runs again a bounded number of
    // times, then once more with writes failing, and gives up.
    assert_eq!(result, Err(StoreError::CasMismatch));
    assert!((2..=10).contains(&calls), "{calls} runs");
}

#[test]
fn nothing_is_stored_in_the_clear() {
    let (mut kv, keys) = (MemoryKv::new(), keys());
    let secret_token = "upstream-access-token-ZXhhbXBsZQ";
    let id = crate::crypto::sha256_b64url(secret_token.as_bytes());
    with_vault(&mut kv, &keys, T0, |v| {
        let value = Session {
            user: secret_token.into(),
            n: 424_242,
        };
        v.put("tokens", &id, &value, 600, 0).unwrap();
        assert_eq!(
            v.get::<Session>("tokens", &id).unwrap().unwrap().value,
            value
        );
    });
    assert!(kv.len() >= 2, "the value and its index bucket");
    for (k, raw) in kv.entries() {
        assert!(!k.contains(secret_token), "key {k}");
        for needle in [secret_token.as_bytes(), b"424242", b"\"exp\"", b"\"v\""] {
            assert!(
                !raw.windows(needle.len()).any(|w| w == needle),
                "{k} holds {needle:?} in the clear"
            );
        }
    }
}

#[test]
fn a_value_copied_to_another_key_does_not_open() {
    let (mut kv, keys) = (MemoryKv::new(), keys());
    with_vault(&mut kv, &keys, T0, |v| {
        v.put("sessions", "alice", &session(1), 600, 0)
    })
    .unwrap();
    let raw = kv.raw("mcp/sessions/alice").unwrap().to_vec();
    kv.set("mcp/sessions/mallory", &raw, 0).unwrap();
    kv.set("mcp/admins/alice", &raw, 0).unwrap();
    with_vault(&mut kv, &keys, T0, |v| {
        assert!(v.get::<Session>("sessions", "alice").unwrap().is_some());
        assert_eq!(v.get::<Session>("sessions", "mallory").unwrap(), None);
        assert_eq!(v.get::<Session>("admins", "alice").unwrap(), None);
    });
}

#[test]
fn tampered_or_unparsable_values_read_as_absent() {
    let (mut kv, keys) = (MemoryKv::new(), keys());
    with_vault(&mut kv, &keys, T0, |v| {
        v.put("sessions", "s", &session(1), 600, 0)
    })
    .unwrap();
    let mut raw = kv.raw("mcp/sessions/s").unwrap().to_vec();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    kv.set("mcp/sessions/s", &raw, 0).unwrap();
    with_vault(&mut kv, &keys, T0, |v| {
        assert_eq!(v.get::<Session>("sessions", "s").unwrap(), None);
        // A value of another shape (a schema change) reads as absent, not as an error.
        v.put("sessions", "t", &"just a string", 600, 0).unwrap();
        assert_eq!(v.get::<Session>("sessions", "t").unwrap(), None);
        // And an absent-looking slot can be created afresh.
        v.insert_new("sessions", "s", &session(2), 600).unwrap();
        assert_eq!(
            v.get::<Session>("sessions", "s").unwrap().unwrap().value,
            session(2)
        );
    });
}

#[test]
fn rotation_new_key_encrypts_old_keys_decrypt() {
    let mut kv = MemoryKv::new();
    let (old, new) = (key("2024", 1), key("2025", 2));
    with_vault(&mut kv, std::slice::from_ref(&old), T0, |v| {
        v.put("sessions", "a", &session(1), 600, 0)
    })
    .unwrap();
    let rotated = [new.clone(), old.clone()];
    with_vault(&mut kv, &rotated, T0, |v| {
        assert_eq!(
            v.get::<Session>("sessions", "a").unwrap().unwrap().value,
            session(1)
        );
        v.put("sessions", "b", &session(2), 600, 0).unwrap();
    });
    assert!(kv.raw("mcp/sessions/a").unwrap().starts_with(b"\x042024"));
    assert!(kv.raw("mcp/sessions/b").unwrap().starts_with(b"\x042025"));
    // Once the old key is retired its values read as absent.
    with_vault(&mut kv, &[new], T0, |v| {
        assert_eq!(v.get::<Session>("sessions", "a").unwrap(), None);
        assert!(v.get::<Session>("sessions", "b").unwrap().is_some());
    });
}

#[test]
fn bad_namespaces_and_ids_are_refused() {
    let (mut kv, keys) = (MemoryKv::new(), keys());
    with_vault(&mut kv, &keys, T0, |v| {
        assert!(matches!(
            v.put("x", "", &1, 60, 0),
            Err(StoreError::Unavailable(_))
        ));
        for ns in ["", "a/b", "_idx"] {
            assert!(
                matches!(v.put(ns, "id", &1, 60, 0), Err(StoreError::Unavailable(_))),
                "{ns:?}"
            );
        }
        assert_eq!(v.storage_key("codes", "abc").unwrap(), "mcp/codes/abc");
    });
    assert!(kv.is_empty());
}

#[test]
fn store_errors_pass_through() {
    let (mut kv, keys) = (MemoryKv::new(), keys());
    kv.set_unavailable(true);
    let (read, put, updated) = with_vault(&mut kv, &keys, T0, |v| {
        (
            v.get::<Session>("s", "a"),
            v.put("s", "a", &session(1), 60, 0),
            v.update("s", "b", |_: Option<Session>| Some((session(1), 60))),
        )
    });
    assert!(matches!(read, Err(StoreError::Unavailable(_))));
    // Writes are held until the step is done; their failure reaches the
    // step when it runs again with every write failing.
    assert!(matches!(put, Err(StoreError::Unavailable(_))), "{put:?}");
    assert!(
        matches!(updated, Err(StoreError::Unavailable(_))),
        "{updated:?}"
    );
    kv.set_unavailable(false);
    let put = with_vault(&mut kv, &[], T0, |v| v.put("s", "a", &session(1), 60, 0));
    assert!(matches!(put, Err(StoreError::Unavailable(_))));
    assert_eq!(
        StoreError::CasMismatch.to_string(),
        "the stored value changed concurrently"
    );
    assert_eq!(
        StoreError::Unavailable("down".into()).to_string(),
        "store unavailable: down"
    );
}

// ---- Pruning ----

fn live(kv: &mut dyn Kv, keys: &[KeyEntry], now: u64, id: &str) -> bool {
    with_vault(kv, keys, now, |v| {
        v.get::<Session>("s", id).unwrap().is_some()
    })
}

#[test]
fn prune_empties_expired_entries_and_keeps_live_ones() {
    let (mut kv, keys) = (MemoryKv::new(), keys());
    with_vault(&mut kv, &keys, T0, |v| {
        v.put("s", "short", &session(1), 30, 0).unwrap();
        v.put("s", "short2", &session(1), 90, 0).unwrap();
        v.put("s", "long", &session(2), 3600, 0).unwrap();
    });
    // Nothing is due yet.
    assert_eq!(prune(&mut kv, PREFIX, &keys, T0, 100), Ok(0));
    // The minute after expiry is grace: still nothing.
    assert_eq!(prune(&mut kv, PREFIX, &keys, T0 + 90, 100), Ok(0));
    assert!(kv.raw("mcp/s/short").is_some_and(|r| !r.is_empty()));
    assert_eq!(prune(&mut kv, PREFIX, &keys, T0 + 240, 100), Ok(2));
    assert_eq!(kv.raw("mcp/s/short"), Some(&b""[..]));
    assert_eq!(kv.raw("mcp/s/short2"), Some(&b""[..]));
    assert!(live(&mut kv, &keys, T0 + 240, "long"));
    // Pruned buckets are emptied too.
    assert_eq!(kv.raw(&format!("mcp/_idx/{}", T0 / 60)), Some(&b""[..]));
    assert_eq!(kv.raw(&format!("mcp/_idx/{}", T0 / 60 + 1)), Some(&b""[..]));
    // Later, the long one goes as well; then nothing is left to do.
    assert_eq!(prune(&mut kv, PREFIX, &keys, T0 + 3600 + 120, 1000), Ok(1));
    assert_eq!(prune(&mut kv, PREFIX, &keys, T0 + 3600 + 120, 1000), Ok(0));
    assert_eq!(kv.non_empty_len(), 1, "only the cursor holds a value");
}

#[test]
fn prune_keeps_a_key_written_again_with_a_later_expiry() {
    let (mut kv, keys) = (MemoryKv::new(), keys());
    with_vault(&mut kv, &keys, T0, |v| v.put("s", "a", &session(1), 60, 0)).unwrap();
    with_vault(&mut kv, &keys, T0 + 30, |v| {
        v.put("s", "a", &session(2), 3600, 0)
    })
    .unwrap();
    assert_eq!(prune(&mut kv, PREFIX, &keys, T0 + 600, 100), Ok(0));
    assert!(live(&mut kv, &keys, T0 + 600, "a"));
    assert_eq!(
        prune(&mut kv, PREFIX, &keys, T0 + 30 + 3600 + 120, 100),
        Ok(1)
    );
    assert!(!live(&mut kv, &keys, T0 + 30 + 3600 + 120, "a"));
}

#[test]
fn prune_is_bounded_and_resumes() {
    let (mut kv, keys) = (Counting::default(), keys());
    with_vault(&mut kv, &keys, T0, |v| {
        for i in 0..10 {
            v.put("s", &format!("k{i}"), &session(i), 60 * u64::from(i % 3), 0)
                .unwrap();
        }
    });
    let later = T0 + 3600;
    let mut total = 0;
    let mut calls = 0;
    loop {
        let n = prune(&mut kv, PREFIX, &keys, later, 3).unwrap();
        assert!(n <= 3);
        total += n;
        calls += 1;
        if n == 0 && calls > 10 {
            break;
        }
    }
    assert_eq!(total, 10);
    for i in 0..10 {
        assert_eq!(
            kv.emptied.get(&format!("mcp/s/k{i}")),
            Some(&1),
            "k{i} emptied exactly once"
        );
    }
    assert_eq!(kv.inner.non_empty_len(), 1, "only the cursor holds a value");
}

#[test]
fn prune_walks_past_long_idle_stretches() {
    let (mut kv, keys) = (MemoryKv::new(), keys());
    with_vault(&mut kv, &keys, T0, |v| v.put("s", "a", &session(1), 60, 0)).unwrap();
    with_vault(&mut kv, &keys, T0 + 86_400, |v| {
        v.put("s", "b", &session(1), 60, 0)
    })
    .unwrap();
    let now = T0 + 86_400 + 600;
    let mut emptied = 0;
    // A day of empty buckets costs one unit each; a few calls get through it.
    for _ in 0..20 {
        emptied += prune(&mut kv, PREFIX, &keys, now, 100).unwrap();
    }
    assert_eq!(emptied, 2);
    let cursor = kv.raw("mcp/_idx/cursor").unwrap();
    assert_eq!(cursor, (now / 60 - 1).to_string().as_bytes());
}

#[test]
fn two_workers_pruning_in_turn_share_the_work() {
    let (mut kv, keys) = (Counting::default(), keys());
    with_vault(&mut kv, &keys, T0, |v| {
        for i in 0..20 {
            v.put("s", &format!("k{i}"), &session(i), 30, 0).unwrap();
        }
    });
    let now = T0 + 600;
    let (mut a, mut b) = (0, 0);
    for _ in 0..5 {
        a += prune(&mut kv, PREFIX, &keys, now, 3).unwrap();
        b += prune(&mut kv, PREFIX, &keys, now, 3).unwrap();
    }
    assert_eq!(a + b, 20);
    assert!(a > 0 && b > 0);
    assert!(
        kv.emptied
            .iter()
            .filter(|(k, _)| k.starts_with("mcp/s/"))
            .all(|(_, n)| *n == 1)
    );
}

#[test]
fn two_workers_pruning_at_once_never_take_the_same_keys() {
    let keys = keys();
    let mut base = Counting::default();
    with_vault(&mut base, &keys, T0, |v| {
        for i in 0..20 {
            v.put("s", &format!("k{i}"), &session(i), 30, 0).unwrap();
        }
    });
    let now = T0 + 600;
    let bucket = format!("mcp/_idx/{}", T0 / 60);
    // Worker B prunes the bucket between worker A's read of it and A's claim.
    let b_emptied = std::cell::Cell::new(0);
    let mut kv = Interleaved {
        inner: base,
        hook: Box::new(|kv: &mut Counting, key: &str| {
            if key == bucket && b_emptied.get() == 0 {
                let n = prune(kv, PREFIX, &keys, now, 5).unwrap();
                b_emptied.set(n);
            }
        }),
    };
    let a_emptied = prune(&mut kv, PREFIX, &keys, now, 100).unwrap();
    let counting = kv.inner;
    assert_eq!(b_emptied.get(), 5);
    assert_eq!(a_emptied, 15, "A's first claim failed; it took what B left");
    for i in 0..20 {
        assert_eq!(
            counting.emptied.get(&format!("mcp/s/k{i}")),
            Some(&1),
            "k{i}"
        );
    }
}

#[test]
fn a_late_bucket_moves_the_cursor_back() {
    let (mut kv, keys) = (MemoryKv::new(), keys());
    with_vault(&mut kv, &keys, T0, |v| v.put("s", "a", &session(1), 30, 0)).unwrap();
    assert_eq!(prune(&mut kv, PREFIX, &keys, T0 + 600, 100), Ok(1));
    // A replica whose clock lags writes into a bucket already passed.
    with_vault(&mut kv, &keys, T0 + 5, |v| {
        v.put("s", "b", &session(1), 30, 0)
    })
    .unwrap();
    assert_eq!(
        kv.raw("mcp/_idx/cursor"),
        Some((T0 / 60).to_string().as_bytes())
    );
    assert_eq!(prune(&mut kv, PREFIX, &keys, T0 + 600, 100), Ok(1));
    assert_eq!(kv.raw("mcp/s/b"), Some(&b""[..]));
}

#[test]
fn index_holds_keys_only() {
    let (mut kv, keys) = (MemoryKv::new(), keys());
    with_vault(&mut kv, &keys, T0, |v| {
        v.put("s", "a", &session(1), 60, 0).unwrap();
        v.put("s", "a", &session(2), 60, 0).unwrap();
        v.put("s", "b", &session(3), 65, 0).unwrap();
    });
    let bucket = kv.raw(&format!("mcp/_idx/{}", T0 / 60 + 1)).unwrap();
    assert_eq!(bucket, br#"["mcp/s/a","mcp/s/b"]"#, "listed once each");
    assert_eq!(
        kv.raw("mcp/_idx/cursor"),
        Some((T0 / 60 + 1).to_string().as_bytes())
    );
}

#[test]
fn cached_plaintext_is_used_only_for_the_same_ciphertext() {
    let mut kv = MemoryKv::new();
    let keys = keys();
    with_vault(&mut kv, &keys, T0, |v| {
        v.put("sessions", "c", &session(1), 600, 0).unwrap();
        // Read twice: the second read is served from the plaintext cache.
        assert_eq!(
            v.get::<Session>("sessions", "c").unwrap().unwrap().value,
            session(1)
        );
        assert_eq!(
            v.get::<Session>("sessions", "c").unwrap().unwrap().value,
            session(1)
        );
    });
    // Tamper with the stored bytes: the cache must not answer for them.
    let mut raw = kv.raw("mcp/sessions/c").unwrap().to_vec();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    kv.set("mcp/sessions/c", &raw, 0).unwrap();
    with_vault(&mut kv, &keys, T0, |v| {
        assert_eq!(v.get::<Session>("sessions", "c").unwrap(), None);
    });
}
