//! The shared-data backend: one Envoy's workers share a [`Kv`] with Envoy's
//! rules. It answers every read at once ([`Reads`]) and carries out a
//! step's writes at once ([`commit`]), so with it a step never waits.
//!
//! Envoy's shared data has no transaction: [`commit`] checks every write's
//! expectation first, then sets each under the cas it expects. Another
//! worker can only get in between in the microseconds between two sets;
//! then the writes already made are put back (if nobody wrote over them
//! since) and the step runs again, as for any conflict.

use super::index;
use super::txn::{Attempt, Entry, Expect, ReadNow, Snapshot, StoreView, Write, attempt};
use super::{Kv, StoreError};

/// The cas of a set meant only for a key that does not exist: Envoy has no
/// create-only write, but a set with a non-zero cas fails when the key
/// exists with another cas. The residual race: a key created meanwhile got
/// exactly this cas from the host's process-wide counter (one value in
/// 2^32 - 1); callers use random ids for create-only keys anyway.
const CAS_IF_NEW: u32 = u32::MAX;

/// Reads answered from shared data, at once.
pub struct Reads<'a>(pub &'a dyn Kv);

impl ReadNow for Reads<'_> {
    fn read_now(&self, key: &str) -> Option<Result<Entry, StoreError>> {
        Some(
            self.0
                .get(key)
                .map(|found| found.map(|(bytes, cas)| (bytes, u64::from(cas)))),
        )
    }
}

/// Why a step's writes were not carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitError {
    /// These entries changed since the step read them: read them again and
    /// run the step again.
    Conflict(Vec<String>),
    /// The store could not take the writes (none of them was kept).
    Unavailable(String),
}

impl From<StoreError> for CommitError {
    fn from(e: StoreError) -> Self {
        CommitError::Unavailable(e.to_string())
    }
}

/// Carries out a step's writes, all or none. `prefix`: the store prefix,
/// under which written keys are indexed for pruning.
pub fn commit(kv: &mut dyn Kv, prefix: &str, writes: &[Write]) -> Result<(), CommitError> {
    // Every expectation first, so a conflict usually costs no write at all.
    let mut before = Vec::with_capacity(writes.len());
    let mut conflicts = Vec::new();
    for w in writes {
        let current = kv.get(&w.key)?;
        let holds = match (w.expect, &current) {
            (Expect::Any, _) => true,
            (Expect::Absent, None) => true,
            (Expect::Version(v), Some((_, cas))) => v == u64::from(*cas),
            _ => false,
        };
        if !holds {
            conflicts.push(w.key.clone());
        }
        before.push(current);
    }
    if !conflicts.is_empty() {
        return Err(CommitError::Conflict(conflicts));
    }
    for (done, (w, current)) in writes.iter().zip(&before).enumerate() {
        let cas = match (w.expect, current) {
            (_, Some((_, cas))) => *cas,
            (Expect::Any, None) => 0,
            (_, None) => CAS_IF_NEW,
        };
        let result = match (&w.value, current) {
            // Deleting what is not there: nothing to do.
            (None, None) => Ok(()),
            (None, Some(_)) => kv.set(&w.key, &[], cas),
            (Some(value), _) => kv.set(&w.key, value, cas),
        };
        if let Err(e) = result {
            undo(kv, &writes[..done], &before[..done]);
            return Err(match e {
                StoreError::CasMismatch => CommitError::Conflict(vec![w.key.clone()]),
                other => other.into(),
            });
        }
    }
    for w in writes.iter().filter(|w| w.value.is_some()) {
        index::index(kv, prefix, &w.key, w.expires_at);
    }
    Ok(())
}

/// Puts back what `writes` replaced, where nobody has written since.
fn undo(kv: &mut dyn Kv, writes: &[Write], before: &[Option<(Vec<u8>, u32)>]) {
    for (w, old) in writes.iter().zip(before) {
        let ours = w.value.clone().unwrap_or_default();
        let Ok(Some((now, cas))) = kv.get(&w.key) else {
            continue;
        };
        if now != ours {
            continue;
        }
        let old = old
            .as_ref()
            .map(|(bytes, _)| bytes.as_slice())
            .unwrap_or(&[]);
        if kv.set(&w.key, old, cas).is_err() {
            log::warn!("store: could not undo a half-done write of {}", w.key);
        }
    }
}

/// Conflicting commits retried before a step is told that writes fail.
const MAX_CONFLICTS: usize = 8;

/// Runs a step on shared data from start to end: reads are answered at
/// once, its writes are committed; on a conflict the step runs again on
/// fresh values, and if the writes can't be made it runs once more with
/// every write failing, to answer with its own error. The step must only
/// compute: only its last run's result counts.
pub fn run<T>(kv: &mut dyn Kv, prefix: &str, mut step: impl FnMut(&mut dyn StoreView) -> T) -> T {
    let mut snapshot = Snapshot::default();
    let mut conflicts = 0;
    loop {
        let outcome = {
            let reads = Reads(&*kv);
            attempt(&mut snapshot, &reads, |txn| step(txn))
        };
        let (out, writes) = match outcome {
            Attempt::Done(out, writes) => (out, writes),
            // Shared data answers every read at once.
            Attempt::Read(keys) => {
                for key in keys {
                    snapshot.answer(key, Err(StoreError::Unavailable("unread".into())));
                }
                continue;
            }
        };
        if writes.is_empty() || snapshot.writes_failing() {
            return out;
        }
        match commit(kv, prefix, &writes) {
            Ok(()) => return out,
            Err(CommitError::Conflict(keys)) if conflicts < MAX_CONFLICTS => {
                conflicts += 1;
                snapshot.forget(keys);
            }
            Err(CommitError::Conflict(_)) => snapshot.fail_writes(StoreError::CasMismatch),
            Err(CommitError::Unavailable(why)) => {
                snapshot.fail_writes(StoreError::Unavailable(why))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryKv;
    use crate::store::txn::Later;

    fn write(key: &str, value: Option<&[u8]>, expect: Expect) -> Write {
        Write {
            key: key.into(),
            value: value.map(<[u8]>::to_vec),
            expect,
            expires_at: 0,
        }
    }

    fn cas_of(kv: &MemoryKv, key: &str) -> u64 {
        u64::from(kv.get(key).unwrap().unwrap().1)
    }

    #[test]
    fn commit_checks_every_expectation_before_writing_anything() {
        let mut kv = MemoryKv::new();
        kv.set("a", b"1", 0).unwrap();
        let a = cas_of(&kv, "a");
        kv.set("b", b"1", 0).unwrap();
        let writes = [
            write("a", Some(b"2"), Expect::Version(a)),
            // b exists: "absent" does not hold.
            write("b", Some(b"2"), Expect::Absent),
            write("c", Some(b"2"), Expect::Absent),
        ];
        assert_eq!(
            commit(&mut kv, "p/", &writes),
            Err(CommitError::Conflict(vec!["b".into()]))
        );
        assert_eq!(kv.raw("a"), Some(&b"1"[..]));
        assert_eq!(kv.raw("c"), None);
        // A stale version conflicts too; a version of a missing key is stale.
        let stale = [
            write("a", Some(b"3"), Expect::Version(a + 100)),
            write("d", None, Expect::Version(7)),
        ];
        assert_eq!(
            commit(&mut kv, "p/", &stale),
            Err(CommitError::Conflict(vec!["a".into(), "d".into()]))
        );
        let fine = [
            write("a", Some(b"2"), Expect::Version(a)),
            write("c", Some(b"2"), Expect::Absent),
            write("b", None, Expect::Any),
            // Deleting what is not there writes nothing.
            write("never", None, Expect::Any),
        ];
        assert_eq!(commit(&mut kv, "p/", &fine), Ok(()));
        assert_eq!(kv.raw("a"), Some(&b"2"[..]));
        assert_eq!(kv.raw("c"), Some(&b"2"[..]));
        assert_eq!(kv.raw("b"), Some(&b""[..]));
        assert_eq!(kv.raw("never"), None);
    }

    /// A Kv where another worker writes `key` just before our set of it.
    struct Racing {
        inner: MemoryKv,
        key: &'static str,
        fired: bool,
    }

    impl Kv for Racing {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            self.inner.get(key)
        }
        fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
            if key == self.key && !std::mem::replace(&mut self.fired, true) {
                self.inner.set(key, b"theirs", 0)?;
            }
            self.inner.set(key, value, cas)
        }
    }

    #[test]
    fn a_write_lost_to_a_race_puts_back_the_writes_before_it() {
        let mut kv = Racing {
            inner: MemoryKv::new(),
            key: "b",
            fired: false,
        };
        kv.inner.set("a", b"old", 0).unwrap();
        let a = cas_of(&kv.inner, "a");
        let writes = [
            write("a", Some(b"new"), Expect::Version(a)),
            write("b", Some(b"ours"), Expect::Absent),
        ];
        assert_eq!(
            commit(&mut kv, "p/", &writes),
            Err(CommitError::Conflict(vec!["b".into()]))
        );
        assert_eq!(kv.inner.raw("a"), Some(&b"old"[..]), "put back");
        assert_eq!(kv.inner.raw("b"), Some(&b"theirs"[..]));
    }

    #[test]
    fn an_unavailable_store_fails_the_commit() {
        let mut kv = MemoryKv::new();
        kv.set_unavailable(true);
        let writes = [write("a", Some(b"1"), Expect::Any)];
        assert!(matches!(
            commit(&mut kv, "p/", &writes),
            Err(CommitError::Unavailable(_))
        ));
    }

    #[test]
    fn a_step_sees_its_own_writes_and_reads_go_out_when_nobody_can_answer() {
        let mut snapshot = Snapshot::default();
        // Nothing can answer now: the read is asked for.
        let out = attempt(&mut snapshot, &Later, |txn| txn.get("k").map(|_| ()));
        assert!(matches!(out, Attempt::Read(ref keys) if keys == &["k".to_string()]));
        snapshot.answer("k".into(), Ok(Some((b"v".to_vec(), 5))));
        let out = attempt(&mut snapshot, &Later, |txn| {
            let read = txn.get("k").unwrap();
            txn.set("k", Some(b"w".to_vec()), 5, 99).unwrap();
            let (value, version) = txn.get("k").unwrap().unwrap();
            // A write under the version read before its own write is stale.
            let stale = txn.set("k", Some(b"x".to_vec()), 5, 99);
            (read, value, version != 5, stale)
        });
        let Attempt::Done((read, value, new_version, stale), writes) = out else {
            panic!("the read was answered");
        };
        assert_eq!(read, Some((b"v".to_vec(), 5)));
        assert_eq!(value, b"w");
        assert!(new_version);
        assert_eq!(stale, Err(StoreError::CasMismatch));
        assert_eq!(
            writes,
            vec![Write {
                key: "k".into(),
                value: Some(b"w".to_vec()),
                expect: Expect::Version(5),
                expires_at: 99,
            }]
        );
    }
}
