//! The etcd backend: several Envoy replicas share one store through etcd's
//! v3 HTTP/JSON gateway, reached with `dispatch_http_call`.
//!
//! * [`wire`]: the calls and strict readers of their answers.
//! * [`op`]: one step run against etcd (reads as one txn, writes as one
//!   compare-and-swap txn over everything the step read), as a machine
//!   the host feeds call answers to.
//! * [`cache`]: the per-Envoy read cache in shared data, with bounded
//!   staleness (`store.etcd.cache_seconds`).
//!
//! Expiry uses etcd leases (one per slot of expiries and VM, see
//! `op::lease_end`), so etcd needs no pruning. Values stay sealed as in every backend.

pub mod cache;
pub mod op;
pub mod wire;

pub use op::{Env, Op, Progress, Session, Settings};

#[cfg(test)]
mod tests;
