//! What the authorization server keeps in the store between requests. Every
//! record lives in the (encrypted) store, never in one VM's memory, since
//! Envoy's workers share nothing else.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Store namespaces.
pub mod ns {
    pub const CLIENT: &str = "client";
    pub const CLIENT_DOCUMENT: &str = "cimd";
    pub const REGISTRATION_QUOTA: &str = "dcrq";
    pub const PENDING: &str = "pending";
    /// Sign-ins completed (by the hash of their state): each completes once.
    pub const LOGIN: &str = "login";
    pub const SESSION: &str = "session";
    pub const CODE: &str = "code";
    pub const GRANT: &str = "grant";
    pub const CONSENT: &str = "consent";
    pub const OIDC: &str = "oidc";
}

/// Who signed in, as the identity provider told us.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub sub: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub email_verified: Option<bool>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Other claims from the ID token and userinfo, for `claim/<name>` policy criteria.
    #[serde(default)]
    pub claims: Map<String, Value>,
}

/// How a client authenticates at the token endpoint (RFC 7591 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    None,
    ClientSecretBasic,
    ClientSecretPost,
}

impl ClientAuth {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::None => "none",
            ClientAuth::ClientSecretBasic => "client_secret_basic",
            ClientAuth::ClientSecretPost => "client_secret_post",
        }
    }
}

/// A client the server knows: registered (RFC 7591) or described by its
/// metadata document (Client ID Metadata Documents).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Client {
    pub client_id: String,
    pub redirect_uris: Vec<String>,
    pub auth: ClientAuth,
    pub grant_types: Vec<String>,
    #[serde(default)]
    pub client_name: Option<String>,
    #[serde(default)]
    pub client_uri: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    /// SHA-256 of a confidential client's secret (the secret itself is shown once).
    #[serde(default)]
    pub secret_hash: Option<String>,
    /// True when the client's identity was checked by fetching its metadata document.
    #[serde(default)]
    pub verified_document: bool,
    pub issued_at: u64,
    /// When the registration was last used, to expire unused ones.
    #[serde(default)]
    pub last_used: u64,
}

/// An authorization request waiting for sign-in and consent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingAuthorization {
    pub route: String,
    pub client_id: String,
    pub client_name: Option<String>,
    pub client_verified: bool,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub code_challenge: String,
    pub resource: String,
    pub scope: String,
    /// The browser session that may complete it, once signed in.
    #[serde(default)]
    pub sid: Option<String>,
}

/// A sign-in at the identity provider in progress (the OIDC `state`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Login {
    /// The client's request, carried (sealed) through the sign-in: nothing
    /// is stored for a browser that has not signed in yet.
    pub pending: PendingAuthorization,
    pub nonce: String,
    pub code_verifier: crate::secret::SecretText,
    pub route: String,
    /// Unix seconds after which the sign-in can't complete.
    pub exp: u64,
    /// SHA-256 of the login cookie set in the browser that started it.
    pub browser: String,
}

/// A signed-in browser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub user: User,
    pub created_at: u64,
}

/// An authorization code, single use (RFC 6749 4.1.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodeGrant {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub resource: String,
    pub scope: String,
    pub route: String,
    pub user: User,
    /// Set once redeemed: the grant it created, revoked if the code is replayed.
    #[serde(default)]
    pub redeemed_by: Option<String>,
}

/// A grant: one client's authorization for one user and route, and its
/// refresh-token family (OAuth 2.1 4.3.1 rotation; reuse revokes the family).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    pub user: User,
    pub client_id: String,
    pub route: String,
    pub resource: String,
    pub scope: String,
    /// SHA-256 of the refresh token currently valid.
    pub current_refresh: String,
    /// SHA-256 of the one before it, honoured within the reuse grace.
    #[serde(default)]
    pub previous_refresh: Option<String>,
    #[serde(default)]
    pub rotated_at: u64,
    /// SHA-256 of older refresh tokens of this family: presenting one of
    /// these (not an unknown token) is what proves a leak.
    #[serde(default)]
    pub retired_refresh: Vec<String>,
    /// The answer given for the last rotation, repeated to a benign retry within the grace.
    #[serde(default)]
    pub last_answer: Option<Value>,
    #[serde(default)]
    pub revoked: bool,
}

/// A remembered approval of (user, client, route).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Consent {
    pub approved_at: u64,
    pub scope: String,
}
