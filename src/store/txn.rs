//! A step's view of the store. A step runs against a [`Txn`]: its reads
//! come from what was read for it before (the [`Snapshot`]), or from a
//! backend that can answer at once ([`ReadNow`]: shared data always can,
//! etcd's per-Envoy cache sometimes); a read nobody can answer now fails
//! with [`StoreError::NotRead`] and is noted. Its writes are held, each with
//! the version it expects ([`Expect`]).
//!
//! [`attempt`] runs a step once: if reads were missing, it asks for them
//! and the caller runs the step again once they are answered (the step
//! must only compute: nothing it did is kept). Otherwise it hands back the
//! step's result and its writes, which the backend applies all or nothing
//! (etcd: one txn) or not at all if anything changed meanwhile; the caller
//! then runs the step again on the fresh values.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use super::StoreError;

/// What a held write expects of the entry it replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Write whatever is there.
    Any,
    /// The key does not exist (never written, deleted, or its lease ended).
    Absent,
    /// The entry is still at this version (shared data's cas, etcd's
    /// `mod_revision`).
    Version(u64),
}

/// A write a step made, to carry out once the step is done.
#[derive(Clone, PartialEq, Eq)]
pub struct Write {
    pub key: String,
    /// The sealed value, or `None` to delete the entry.
    pub value: Option<Vec<u8>>,
    pub expect: Expect,
    /// Unix seconds after which the value reads as absent (for etcd
    /// leases and shared data's pruning index); 0 for a delete.
    pub expires_at: u64,
}

impl std::fmt::Debug for Write {
    // Values are sealed, but their size and bytes help nobody in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Write")
            .field("key", &self.key)
            .field("delete", &self.value.is_none())
            .field("expect", &self.expect)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A stored entry as read: its bytes and version, or `None` if absent.
pub type Entry = Option<(Vec<u8>, u64)>;

/// Answers reads at once when it can; `None`: not now (the read goes out
/// as a command).
pub trait ReadNow {
    fn read_now(&self, key: &str) -> Option<Result<Entry, StoreError>>;
}

/// A backend that never answers at once (every read is a command).
pub struct Later;

impl ReadNow for Later {
    fn read_now(&self, _key: &str) -> Option<Result<Entry, StoreError>> {
        None
    }
}

/// What was read for a step so far, kept between its attempts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    read: BTreeMap<String, Result<Entry, StoreError>>,
    /// Set after writes could not be carried out: the step runs once more
    /// with every write failing this way, to answer with its own error.
    writes_fail: Option<StoreError>,
}

impl Snapshot {
    /// Records the answer to a read.
    pub fn answer(&mut self, key: String, entry: Result<Entry, StoreError>) {
        self.read.insert(key, entry);
    }

    /// Forgets what was read of these keys (they changed): read them again.
    pub fn forget(&mut self, keys: impl IntoIterator<Item = String>) {
        for key in keys {
            self.read.remove(&key);
        }
    }

    /// Every key read so far, with what was read.
    pub fn entries(&self) -> impl Iterator<Item = (&String, &Result<Entry, StoreError>)> {
        self.read.iter()
    }

    /// Whether writes fail (after [`Snapshot::fail_writes`]).
    pub fn writes_failing(&self) -> bool {
        self.writes_fail.is_some()
    }

    /// From now on every write fails with `why`.
    pub fn fail_writes(&mut self, why: StoreError) {
        self.writes_fail = Some(why);
    }
}

/// The versions a step sees for values it wrote itself count down from
/// here (below [`super::vault::CAS_IF_ABSENT`]; far above any real
/// version), a new one for each write, as a store gives each write a new
/// version.
const FIRST_OWN_VERSION: u64 = u64::MAX - 2;

/// One attempt's store: the snapshot, what the backend answers at once,
/// the reads missing, and the writes held.
pub struct Txn<'a> {
    snapshot: RefCell<&'a mut Snapshot>,
    now: &'a dyn ReadNow,
    missing: RefCell<BTreeSet<String>>,
    writes: BTreeMap<String, (Write, u64)>,
    /// Write order, for backends that apply writes one by one.
    order: Vec<String>,
    next_own_version: u64,
}

/// What [`super::Vault`] reads and writes: a [`Txn`] (a trait so that a
/// vault borrows one for less than the transaction lives).
pub trait StoreView {
    /// The entry at `key`: the step's own write if it made one, else as read.
    fn get(&self, key: &str) -> Result<Entry, StoreError>;
    /// Holds a write of `value` (`None`: delete). `cas`: 0 writes whatever
    /// is there; otherwise the version read, and the write (and with it the
    /// step) fails if the entry changed. [`super::vault::CAS_IF_ABSENT`]
    /// expects the key to be absent.
    fn set(
        &mut self,
        key: &str,
        value: Option<Vec<u8>>,
        cas: u64,
        expires_at: u64,
    ) -> Result<(), StoreError>;
}

impl<'a> Txn<'a> {
    pub fn new(snapshot: &'a mut Snapshot, now: &'a dyn ReadNow) -> Self {
        Txn {
            snapshot: RefCell::new(snapshot),
            now,
            missing: RefCell::new(BTreeSet::new()),
            writes: BTreeMap::new(),
            order: Vec::new(),
            next_own_version: FIRST_OWN_VERSION,
        }
    }

    fn own_version(&mut self) -> u64 {
        let v = self.next_own_version;
        self.next_own_version -= 1;
        v
    }

    fn finish(self) -> (BTreeSet<String>, Vec<Write>) {
        let Txn {
            missing,
            mut writes,
            order,
            ..
        } = self;
        let writes = order
            .into_iter()
            .filter_map(|k| writes.remove(&k).map(|(w, _)| w))
            .collect();
        (missing.into_inner(), writes)
    }
}

impl StoreView for Txn<'_> {
    fn get(&self, key: &str) -> Result<Entry, StoreError> {
        if let Some((w, version)) = self.writes.get(key) {
            return Ok(w.value.clone().map(|v| (v, *version)));
        }
        if let Some(entry) = self.snapshot.borrow().read.get(key) {
            return entry.clone();
        }
        match self.now.read_now(key) {
            Some(entry) => {
                self.snapshot
                    .borrow_mut()
                    .read
                    .insert(key.to_string(), entry.clone());
                entry
            }
            None => {
                self.missing.borrow_mut().insert(key.to_string());
                Err(StoreError::NotRead)
            }
        }
    }

    fn set(
        &mut self,
        key: &str,
        value: Option<Vec<u8>>,
        cas: u64,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        if let Some(why) = &self.snapshot.borrow().writes_fail {
            return Err(why.clone());
        }
        let fresh = self.own_version();
        if let Some((held, version)) = self.writes.get_mut(key) {
            // Writing over its own write: the first write's expectation
            // stands, and this one must know the last.
            let deleted = held.value.is_none();
            let knows_it =
                cas == 0 || cas == *version || (deleted && cas == super::vault::CAS_IF_ABSENT);
            if !knows_it {
                return Err(StoreError::CasMismatch);
            }
            held.value = value;
            held.expires_at = expires_at;
            *version = fresh;
            return Ok(());
        }
        let read = self.snapshot.borrow().read.get(key).cloned();
        let expect = match (cas, read) {
            (0, _) => Expect::Any,
            (super::vault::CAS_IF_ABSENT, Some(Ok(None)) | None) => Expect::Absent,
            (cas, Some(Ok(Some((_, version))))) if cas != version => {
                return Err(StoreError::CasMismatch);
            }
            (cas, _) => Expect::Version(cas),
        };
        self.writes.insert(
            key.to_string(),
            (
                Write {
                    key: key.to_string(),
                    value,
                    expect,
                    expires_at,
                },
                fresh,
            ),
        );
        self.order.push(key.to_string());
        Ok(())
    }
}

/// How one attempt of a step ended.
#[derive(Debug)]
pub enum Attempt<T> {
    /// The step is decided; its writes (maybe none) are to be carried out
    /// before its result is acted on.
    Done(T, Vec<Write>),
    /// These keys must be read first; then run the step again.
    Read(Vec<String>),
}

/// Runs `step` once against `snapshot` and `now`. See the module docs.
pub fn attempt<T>(
    snapshot: &mut Snapshot,
    now: &dyn ReadNow,
    step: impl FnOnce(&mut Txn<'_>) -> T,
) -> Attempt<T> {
    let mut txn = Txn::new(snapshot, now);
    let out = step(&mut txn);
    let (missing, writes) = txn.finish();
    if missing.is_empty() {
        Attempt::Done(out, writes)
    } else {
        Attempt::Read(missing.into_iter().collect())
    }
}
