//! mcp-oauth-filter: a proxy-wasm filter that puts OAuth in front of MCP
//! servers. Envoy loads it; it is the OAuth 2.1 authorization server MCP
//! clients talk to, signs users in with an OpenID Connect provider, keeps
//! the upstream provider's token for each user and puts it on requests to
//! the MCP server, and judges every JSON-RPC message against a policy.
//!
//! # Layout
//!
//! One request's life is a machine in the pure core: `flow::handle` takes
//! the request's stage and an event (headers, body, trailers, a call's
//! answer, a wake-up, the response's headers and body) and returns the next
//! stage and the commands to carry out (reply, change a header, make a
//! call, read or replace a body, log). Store reads and writes go through
//! the step's transaction: shared data answers at once, etcd answers in a
//! callback and the step runs again with what was read, its writes
//! committed only by the run that counts. Nothing outside [`host`] touches
//! proxy-wasm, so everything else is tested natively (`cargo test`, whose
//! fake host in `tests/common` drives the same `flow::handle`) and on a
//! wasm engine.
//!
//! * [`host`]: the only code that talks to proxy-wasm. `root` (configuration,
//!   the maintenance tick, upstream refreshes, waking parked requests),
//!   `http` (one request: callbacks become events), `executor` (carries out
//!   commands, for every context), `store_steps` (runs a core step on the
//!   configured store, waiting for etcd's answers when it must), `waiters`
//!   (parked requests' machines, refreshes to start, tokens in use),
//!   `calls`, `shared_data`, `abi` (non-panicking ABI wrappers), `random`,
//!   `logger`.
//! * [`flow`]: the machine. `mod.rs` has the stages, commands and steps;
//!   `machine` the events, `handle` and the body limits; `protect` checks
//!   the access token on MCP requests, `inspect` judges their bodies,
//!   `answer` handles the MCP server's answer (refused upstream token,
//!   CORS, the `tools/list` rewrite); `signin` is the browser part, one file
//!   per endpoint (`authorize`, `idp_callback`, `consent`, and `waits` for
//!   the answers they wait for); `tokens` the `/token`, `/revoke` and
//!   `/register` endpoints; `upstream` the upstream token (its callback,
//!   inject, park, single-flight refresh).
//! * [`store`]: state shared by workers and replicas. `txn` (what a step
//!   reads and writes), `vault` (typed, sealed, expiring values), `shared`
//!   (the shared-data backend), `etcd` (the etcd backend and its per-Envoy
//!   cache), `index` (pruning shared data).
//! * [`oauth`]: the authorization server's pieces (access tokens, clients,
//!   errors, forms, pages, records, redirect URIs, sessions, metadata).
//! * [`oidc`]: the identity provider (discovery, keys, ID tokens).
//! * [`upstream`]: the upstream OAuth2 provider's token endpoint client.
//! * [`mcp`], [`policy`], [`audit`]: JSON-RPC messages and headers, the
//!   per-user per-tool policy, the audit line.
//! * [`config`]: the plugin configuration, parsed and checked whole before
//!   anything runs (every problem names its field).
//! * [`routing`], [`cors`], [`metadata`], [`reply`], [`outbound`]: where a
//!   request goes, CORS, the protected-resource metadata, replies, calls.
//! * [`crypto`], [`secret`], [`env`](mod@env), [`untrusted_url`], [`source_address`]:
//!   primitives over RustCrypto, secrets that never print, randomness,
//!   URL and address checks.
//! * [`maintenance`]: the root tick's periodic work.

pub mod audit;
pub mod config;
pub mod cors;
pub mod crypto;
pub mod env;
pub mod flow;
pub mod maintenance;
pub mod mcp;
pub mod metadata;
pub mod oauth;
pub mod oidc;
pub mod outbound;
pub mod policy;
pub mod reply;
pub mod routing;
pub mod secret;
pub mod source_address;
pub mod store;
pub mod untrusted_url;
pub mod upstream;

#[cfg(test)]
mod test_support;

pub mod host;
