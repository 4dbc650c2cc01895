//! The upstream token vault: the upstream provider's token (TI) per user and
//! route, kept encrypted in the store, refreshed before it expires by one
//! request at a time across all workers, and never shown to the client.

pub mod client;

use crate::secret::SecretText;
use serde::{Deserialize, Serialize};

use crate::crypto;
use client::{CredentialsIn, IssuedToken};

/// Store namespaces of the vault.
pub mod ns {
    /// The token per (user, route).
    pub const TOKEN: &str = "ti";
    /// The refresh lock per (user, route): single-flight across workers.
    pub const LOCK: &str = "ti_lock";
    /// An upstream consent in progress (its `state`).
    pub const LOGIN: &str = "ti_login";
    /// Where a route's client credentials turned out to go (`auth_style: auto`).
    pub const STYLE: &str = "ti_style";
}

/// How long a refresh may hold the lock before another may take over:
/// longer than the refresh can take (two calls with `auth_style: auto`, each
/// bounded by the refresh timeout), so a live holder never loses it.
pub fn lock_seconds(timeout_ms: u64) -> u64 {
    2 * timeout_ms.div_ceil(1000) + 10
}
/// After a failed refresh (provider down), requests fail fast for this long
/// instead of each trying again.
pub const FAILURE_BACKOFF_SECONDS: u64 = 5;
/// How long a token without expiry or refresh token is kept.
const NON_EXPIRING_KEEP_SECONDS: u64 = 365 * 86_400;
/// How long a refresh token is kept when the provider does not say.
const REFRESH_KEEP_SECONDS: u64 = 180 * 86_400;

/// The upstream token of one user for one route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    pub access_token: SecretText,
    #[serde(default)]
    pub refresh_token: Option<SecretText>,
    /// Unix seconds; `None`: does not expire.
    #[serde(default)]
    pub expires_at: Option<u64>,
    #[serde(default)]
    pub scope: Option<String>,
    /// When the last refresh failed for want of an answer (not a refusal).
    #[serde(default)]
    pub failed_at: Option<u64>,
    /// How it failed, to tell the requests that waited for it.
    #[serde(default)]
    pub failure: Option<RefreshFailure>,
}

/// Why the last refresh produced no token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefreshFailure {
    /// The provider answered with an error it may recover from (5xx, 429).
    Unavailable,
    /// No answer within the refresh timeout: the provider may or may not
    /// have rotated the refresh token. The next refresh tells.
    OutcomeUnknown,
    /// The provider refused the gateway's client credentials.
    Misconfigured,
}

impl StoredToken {
    /// A new token; `previous_refresh` is kept when the provider sends no new
    /// one (Google sends a refresh token only on first consent).
    pub fn from_issued(
        issued: IssuedToken,
        previous_refresh: Option<SecretText>,
        now: u64,
    ) -> Self {
        StoredToken {
            access_token: issued.access_token,
            refresh_token: issued.refresh_token.or(previous_refresh),
            // A year at most: an absurd expires_in must not overflow or outlive the refresh token.
            expires_at: issued
                .expires_in
                .map(|e| now.saturating_add(e.min(365 * 86_400))),
            scope: issued.scope,
            failed_at: None,
            failure: None,
        }
    }

    /// Usable as is: not expiring within `skew` seconds.
    pub fn is_fresh(&self, now: u64, skew: u64) -> bool {
        self.expires_at
            .is_none_or(|exp| exp > now.saturating_add(skew))
    }

    /// Still accepted by the provider (if perhaps not for long).
    pub fn is_unexpired(&self, now: u64) -> bool {
        self.is_fresh(now, 0)
    }

    /// How long to keep the record: as long as it can still be used or refreshed.
    pub fn keep_seconds(&self, now: u64) -> u64 {
        match (&self.refresh_token, self.expires_at) {
            (Some(_), _) => REFRESH_KEEP_SECONDS,
            (None, None) => NON_EXPIRING_KEEP_SECONDS,
            (None, Some(exp)) => exp.saturating_sub(now).max(1),
        }
    }
}

/// The refresh lock's holder and its deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub until: u64,
    /// A random id of the holder: only the holder releases it.
    #[serde(default)]
    pub owner: String,
}

/// An upstream consent in progress: what to finish when the provider sends
/// the browser back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamLogin {
    pub pending: crate::oauth::records::PendingAuthorization,
    pub user: crate::oauth::records::User,
    pub code_verifier: SecretText,
}

/// The vault key of (user, route): a hash, so store keys name no one.
pub fn token_key(sub: &str, route: &str) -> String {
    crypto::sha256_b64url(format!("{sub}|{route}").as_bytes())
}

/// The credential placement to try first for a route.
pub fn first_attempt(
    style: crate::config::AuthStyle,
    remembered: Option<CredentialsIn>,
) -> CredentialsIn {
    match style {
        crate::config::AuthStyle::Header => CredentialsIn::Header,
        crate::config::AuthStyle::Params => CredentialsIn::Body,
        crate::config::AuthStyle::Auto => remembered.unwrap_or(CredentialsIn::Header),
    }
}
