//! One step run against etcd: the step runs, its missing reads go out as
//! one txn, it runs again with the answers, and its writes go out as one
//! txn that holds only if nothing the step read or overwrites has changed
//! (serializable: the step's decision stands on what it saw).
//!
//! [`Op::drive`] returns either the step's result or the call to make;
//! [`Op::answer`] takes the call's answer and goes on. The host carries
//! the calls; this code never touches it, so it is tested natively
//! against answers shaped like etcd's.

use std::collections::BTreeMap;

use super::super::txn::{
    Attempt, Entry, Expect, Later, ReadNow, Snapshot, StoreView, Write, attempt,
};
use super::super::{Kv, StoreError};
use super::cache::{self, CacheReads};
use super::wire::{self, Endpoint, Fault};
use crate::outbound::{CallResponse, OutboundCall};
use crate::secret::Secret;

/// The etcd store as configured.
#[derive(Debug, Clone)]
pub struct Settings {
    pub prefix: String,
    pub endpoint: Endpoint,
    pub credentials: Option<(String, Secret)>,
    pub cache_seconds: u64,
}

/// What a VM keeps between operations: its auth token and its leases.
#[derive(Debug, Default)]
pub struct Session {
    token: Option<Secret>,
    /// Lease ids by the Unix second their lease ends.
    leases: BTreeMap<u64, String>,
    /// When a refused password was last logged (once a minute is enough).
    credentials_logged_at: Option<u64>,
    /// After etcd refused the password, no call is made before this
    /// (each authentication costs etcd a bcrypt check).
    credentials_refused_until: u64,
}

/// How long a refused password keeps this VM from calling etcd.
const REFUSED_CREDENTIALS_BACKOFF_SECONDS: u64 = 10;

impl Session {
    /// Why no call may be made now, if none may.
    fn backing_off(&self, now: u64) -> Option<String> {
        (now < self.credentials_refused_until).then(|| Fault::BadCredentials.describe())
    }
}

/// Everything an operation uses besides its step.
pub struct Env<'a> {
    pub settings: &'a Settings,
    pub now: u64,
    /// This Envoy's shared data, for the read cache.
    pub local: &'a mut dyn Kv,
    pub session: &'a mut Session,
    /// False once the host's randomness failed: nothing sealed or made
    /// from it may be stored (values would carry predictable nonces, ids
    /// and secrets).
    pub writes_allowed: bool,
}

/// How far an operation got.
pub enum Progress<T> {
    Done(T),
    Call(OutboundCall),
}

/// Conflicting commits retried before the step is told that writes fail.
const MAX_CONFLICTS: usize = 8;

/// A lease covers every write expiring in one slot, and ends a slot after
/// it: one grant per slot of expiries, not per write. Slots grow with the
/// time left (a minute within the hour, an hour within the week, a day
/// beyond), so a VM holds a few hundred leases at most, whatever the ttls;
/// an entry outlives its expiry by at most two slots (its sealed expiry
/// still holds).
fn lease_end(expires_at: u64, now: u64) -> u64 {
    let left = expires_at.saturating_sub(now);
    let slot = match left {
        0..=3_600 => 60,
        3_601..=604_800 => 3_600,
        _ => 86_400,
    };
    (expires_at / slot + 2) * slot
}

enum Phase<T> {
    Run,
    Reading(Vec<String>),
    Leasing {
        out: T,
        writes: Vec<Write>,
        end: u64,
    },
    Committing {
        out: T,
        /// Each write with the lease it is put under.
        writes: Vec<(Write, Option<String>)>,
        compared: Vec<String>,
    },
    /// The commit's answer was lost: etcd may have applied it. The
    /// written keys are read back; if each holds what was written (sealed
    /// values carry fresh nonces, so no other write looks the same), it
    /// was applied. Else the step hears `why`.
    Verifying {
        out: T,
        writes: Vec<Write>,
        why: String,
    },
    Authenticating(Box<Phase<T>>),
    Finished,
}

pub struct Op<T> {
    snapshot: Snapshot,
    phase: Phase<T>,
    conflicts: usize,
    /// Reads go to etcd, never to the cache (a waiting request looking
    /// whether another replica finished).
    fresh: bool,
    /// A token refused in this operation was renewed once already.
    renewed_token: bool,
    /// A lost lease was replaced once already.
    renewed_lease: bool,
    /// Why etcd failed in this operation: later reads fail at once, so a
    /// step that reads on after an error does not wait out timeouts again.
    down: Option<String>,
}

impl<T> Op<T> {
    pub fn new(fresh: bool) -> Self {
        Op {
            snapshot: Snapshot::default(),
            phase: Phase::Run,
            conflicts: 0,
            fresh,
            renewed_token: false,
            renewed_lease: false,
            down: None,
        }
    }

    /// Runs the step until it is done or a call must be made.
    pub fn drive(
        &mut self,
        env: &mut Env<'_>,
        step: &mut dyn FnMut(&mut dyn StoreView) -> T,
    ) -> Progress<T> {
        loop {
            let outcome = {
                let cache = CacheReads {
                    local: &*env.local,
                    prefix: &env.settings.prefix,
                    now: env.now,
                };
                let reads: &dyn ReadNow = if self.fresh { &Later } else { &cache };
                attempt(&mut self.snapshot, reads, |txn| step(txn))
            };
            match outcome {
                Attempt::Read(keys) => {
                    if self.down.is_none() {
                        self.down = env.session.backing_off(env.now);
                    }
                    if let Some(why) = &self.down {
                        for key in keys {
                            self.snapshot
                                .answer(key, Err(StoreError::Unavailable(why.clone())));
                        }
                        continue;
                    }
                    return self.issue(env, Phase::Reading(keys));
                }
                Attempt::Done(out, writes) => {
                    if writes.is_empty() || self.snapshot.writes_failing() {
                        return Progress::Done(out);
                    }
                    if !env.writes_allowed {
                        self.snapshot.fail_writes(StoreError::Unavailable(
                            "host randomness failed; store writes refused".into(),
                        ));
                        continue;
                    }
                    if self.down.is_none() {
                        self.down = env.session.backing_off(env.now);
                    }
                    if let Some(why) = &self.down {
                        self.snapshot
                            .fail_writes(StoreError::Unavailable(why.clone()));
                        continue;
                    }
                    return self.next_write_phase(env, out, writes);
                }
            }
        }
    }

    /// The answer to the call last returned.
    pub fn answer(
        &mut self,
        env: &mut Env<'_>,
        step: &mut dyn FnMut(&mut dyn StoreView) -> T,
        answer: &CallResponse,
    ) -> Progress<T> {
        let phase = std::mem::replace(&mut self.phase, Phase::Finished);
        if let Phase::Authenticating(then) = phase {
            return match wire::body_of(answer).and_then(wire::auth_token) {
                Ok(token) => {
                    env.session.token = Some(token);
                    self.issue(env, *then)
                }
                Err(fault) => self.failed(env, step, *then, fault),
            };
        }
        let body = match wire::body_of(answer) {
            Ok(body) => body,
            Err(fault) => return self.failed(env, step, phase, fault),
        };
        match phase {
            Phase::Reading(keys) => {
                let read = wire::txn_answer(body).and_then(|txn| {
                    let entries = txn.ranges(&keys)?;
                    Ok((txn.revision, entries))
                });
                match read {
                    Ok((revision, entries)) => {
                        for (key, entry) in keys.into_iter().zip(entries) {
                            // Absence is not cached: a key created at
                            // another replica must be seen at once.
                            if entry.is_some() {
                                self.remember(env, &key, &entry, revision);
                            }
                            self.snapshot.answer(key, Ok(entry));
                        }
                        self.drive(env, step)
                    }
                    Err(fault) => self.failed(env, step, Phase::Reading(keys), fault),
                }
            }
            Phase::Leasing { out, writes, end } => match wire::lease_id(body) {
                Ok(id) => {
                    env.session.leases.insert(end, id);
                    self.next_write_phase(env, out, writes)
                }
                Err(fault) => self.failed(env, step, Phase::Leasing { out, writes, end }, fault),
            },
            Phase::Committing {
                out,
                writes,
                compared,
            } => {
                let txn = match wire::txn_answer(body) {
                    Ok(txn) => txn,
                    Err(fault) => {
                        let phase = Phase::Committing {
                            out,
                            writes,
                            compared,
                        };
                        return self.failed(env, step, phase, fault);
                    }
                };
                if txn.succeeded {
                    for (w, _) in &writes {
                        let entry = w.value.clone().map(|v| (v, txn.revision));
                        self.remember(env, &w.key, &entry, txn.revision);
                    }
                    return Progress::Done(out);
                }
                // A comparison failed: the failure branch read every
                // compared key back; run the step again on those values.
                match txn.ranges(&compared) {
                    Ok(entries) => {
                        for (key, entry) in compared.into_iter().zip(entries) {
                            // As for reads, absence is not cached.
                            if entry.is_some() {
                                self.remember(env, &key, &entry, txn.revision);
                            }
                            self.snapshot.answer(key, Ok(entry));
                        }
                        self.conflicts += 1;
                        if self.conflicts > MAX_CONFLICTS {
                            // Not "it changed": steps read CasMismatch as an
                            // answer (a code already used), and this is none.
                            self.snapshot.fail_writes(StoreError::Unavailable(
                                "too many concurrent changes; try again".into(),
                            ));
                        }
                        self.drive(env, step)
                    }
                    Err(fault) => {
                        let phase = Phase::Committing {
                            out,
                            writes,
                            compared,
                        };
                        self.failed(env, step, phase, fault)
                    }
                }
            }
            Phase::Verifying { out, writes, why } => {
                let keys: Vec<String> = writes.iter().map(|w| w.key.clone()).collect();
                let read = wire::txn_answer(body).and_then(|txn| {
                    let entries = txn.ranges(&keys)?;
                    Ok((txn.revision, entries))
                });
                let applied = read.as_ref().is_ok_and(|(_, entries)| {
                    writes
                        .iter()
                        .zip(entries)
                        .all(|(w, e)| e.as_ref().map(|(v, _)| v) == w.value.as_ref())
                });
                match read {
                    Ok((revision, entries)) if applied => {
                        for (key, entry) in keys.iter().zip(entries) {
                            self.remember(env, key, &entry, revision);
                        }
                        Progress::Done(out)
                    }
                    _ => {
                        let phase = Phase::Verifying { out, writes, why };
                        self.give_up_verifying(env, step, phase)
                    }
                }
            }
            Phase::Run | Phase::Finished | Phase::Authenticating(_) => {
                log::warn!("etcd store: an answer came for no call; ignored");
                self.drive(env, step)
            }
        }
    }

    fn remember(&self, env: &mut Env<'_>, key: &str, entry: &Entry, as_of: u64) {
        if env.settings.cache_seconds == 0 {
            return;
        }
        let valid_until = env.now + env.settings.cache_seconds;
        cache::remember(
            env.local,
            &env.settings.prefix,
            key,
            entry,
            as_of,
            valid_until,
        );
    }

    /// A lease for the next write that needs one, or the commit.
    fn next_write_phase(&mut self, env: &mut Env<'_>, out: T, writes: Vec<Write>) -> Progress<T> {
        env.session.leases.retain(|end, _| *end > env.now);
        let ends: Vec<Option<u64>> = writes
            .iter()
            .map(|w| {
                (w.value.is_some() && w.expires_at > 0).then(|| lease_end(w.expires_at, env.now))
            })
            .collect();
        let missing = ends
            .iter()
            .flatten()
            .find(|end| !env.session.leases.contains_key(end));
        if let Some(&end) = missing {
            return self.issue(env, Phase::Leasing { out, writes, end });
        }
        // Every lease is known now: each write keeps the one it was given.
        let compared = self.compared(&writes);
        let writes = writes
            .into_iter()
            .zip(ends)
            .map(|(w, end)| {
                let lease = end.and_then(|end| env.session.leases.get(&end).cloned());
                (w, lease)
            })
            .collect();
        self.issue(
            env,
            Phase::Committing {
                out,
                writes,
                compared: compared.into_iter().map(|(k, _)| k).collect(),
            },
        )
    }

    /// What the commit compares: every key the step read, at the version
    /// read, and every key written with an expectation.
    fn compared(&self, writes: &[Write]) -> Vec<(String, Expect)> {
        let mut compares: BTreeMap<String, Expect> = BTreeMap::new();
        for (key, entry) in self.snapshot.entries() {
            match entry {
                Ok(Some((_, version))) => {
                    compares.insert(key.clone(), Expect::Version(*version));
                }
                Ok(None) => {
                    compares.insert(key.clone(), Expect::Absent);
                }
                Err(_) => {}
            }
        }
        for w in writes {
            if w.expect != Expect::Any {
                compares.insert(w.key.clone(), w.expect);
            }
        }
        compares.into_iter().collect()
    }

    /// Sets `phase` and returns its call, authenticating first if a
    /// token is needed and there is none.
    fn issue(&mut self, env: &mut Env<'_>, phase: Phase<T>) -> Progress<T> {
        if let Some((user, password)) = &env.settings.credentials
            && env.session.token.is_none()
        {
            let call = env.settings.endpoint.authenticate(user, password);
            self.phase = Phase::Authenticating(Box::new(phase));
            return Progress::Call(call);
        }
        let token = env.session.token.as_ref();
        let endpoint = &env.settings.endpoint;
        let call = match &phase {
            Phase::Reading(keys) => endpoint.read(keys, token),
            Phase::Leasing { end, .. } => {
                endpoint.grant_lease(end.saturating_sub(env.now).max(60), token)
            }
            Phase::Committing { writes, .. } => {
                let plain: Vec<Write> = writes.iter().map(|(w, _)| w.clone()).collect();
                endpoint.commit(&self.compared(&plain), writes, token)
            }
            Phase::Verifying { writes, .. } => {
                let keys: Vec<String> = writes.iter().map(|w| w.key.clone()).collect();
                endpoint.read(&keys, token)
            }
            Phase::Run | Phase::Finished | Phase::Authenticating(_) => {
                // Not reached: only phases with a call are issued.
                self.phase = phase;
                return Progress::Call(endpoint.read(&[], token));
            }
        };
        self.phase = phase;
        Progress::Call(call)
    }

    /// The call for `phase` failed with `fault`.
    fn failed(
        &mut self,
        env: &mut Env<'_>,
        step: &mut dyn FnMut(&mut dyn StoreView) -> T,
        phase: Phase<T>,
        fault: Fault,
    ) -> Progress<T> {
        match fault {
            Fault::NeedsToken if env.settings.credentials.is_some() && !self.renewed_token => {
                self.renewed_token = true;
                env.session.token = None;
                return self.issue(env, phase);
            }
            Fault::LeaseNotFound if !self.renewed_lease => {
                self.renewed_lease = true;
                env.session.leases.clear();
                match phase {
                    Phase::Committing { out, writes, .. } => {
                        let writes = writes.into_iter().map(|(w, _)| w).collect();
                        return self.next_write_phase(env, out, writes);
                    }
                    Phase::Leasing { out, writes, .. } => {
                        return self.next_write_phase(env, out, writes);
                    }
                    other => return self.give_up(env, step, other, Fault::LeaseNotFound),
                }
            }
            Fault::BadCredentials => {
                env.session.token = None;
                env.session.credentials_refused_until =
                    env.now + REFUSED_CREDENTIALS_BACKOFF_SECONDS;
                let logged = env.session.credentials_logged_at;
                if logged.is_none_or(|at| env.now >= at + 60) {
                    env.session.credentials_logged_at = Some(env.now);
                    log::error!("store.etcd.password: {}", fault.describe());
                }
            }
            _ => {}
        }
        match (phase, fault) {
            // No answer to a commit: it may have been applied.
            (Phase::Committing { out, writes, .. }, Fault::Unavailable(why)) => {
                let writes = writes.into_iter().map(|(w, _)| w).collect();
                self.issue(env, Phase::Verifying { out, writes, why })
            }
            (phase @ Phase::Verifying { .. }, _) => self.give_up_verifying(env, step, phase),
            (phase, fault) => self.give_up(env, step, phase, fault),
        }
    }

    /// The lost commit was not applied, or can't be told: the step hears
    /// why the commit failed.
    fn give_up_verifying(
        &mut self,
        env: &mut Env<'_>,
        step: &mut dyn FnMut(&mut dyn StoreView) -> T,
        phase: Phase<T>,
    ) -> Progress<T> {
        let why = match &phase {
            Phase::Verifying { why, .. } => why.clone(),
            _ => "etcd did not answer".into(),
        };
        self.give_up(env, step, phase, Fault::Unavailable(why))
    }

    /// The call for `phase` failed for good: the step hears it.
    fn give_up(
        &mut self,
        env: &mut Env<'_>,
        step: &mut dyn FnMut(&mut dyn StoreView) -> T,
        phase: Phase<T>,
        fault: Fault,
    ) -> Progress<T> {
        let why = fault.describe();
        log::warn!("etcd store: {why}");
        self.down = Some(why.clone());
        match phase {
            Phase::Reading(keys) => {
                for key in keys {
                    self.snapshot
                        .answer(key, Err(StoreError::Unavailable(why.clone())));
                }
            }
            // Nothing was written: the step answers with its own error.
            _ => self.snapshot.fail_writes(StoreError::Unavailable(why)),
        }
        self.drive(env, step)
    }
}
