//! The plugin configuration as written by the operator (JSON), before
//! validation. Shaped like Pomerium's route configuration so a Pomerium user
//! recognises it. Unknown fields are refused so a typo can't silently turn a
//! setting off.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentityProvider {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Envoy cluster the issuer's endpoints (discovery, token, JWKS, userinfo) are reached through.
    pub cluster: String,
    #[serde(default)]
    pub token_endpoint_auth_method: Option<String>,
    /// ID-token or userinfo claim holding the user's groups.
    #[serde(default)]
    pub groups_claim: Option<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeys {
    pub token_signing: Vec<RawSigningKey>,
    pub encryption: Vec<RawEncryptionKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSigningKey {
    pub id: String,
    /// Base64 (standard alphabet) of at least 32 random bytes.
    pub secret: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEncryptionKey {
    pub id: String,
    /// Base64 (standard alphabet) of exactly 32 random bytes (AES-256-GCM).
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub from: String,
    #[serde(default)]
    pub name: Option<String>,
    pub mcp: RawMcp,
    /// Pomerium policy: one rule object or a list of them; compiled by `policy::parse`.
    #[serde(default)]
    pub policy: Option<serde_json::Value>,
    /// Pomerium's shortcut: any signed-in user may use the route.
    #[serde(default)]
    pub allow_any_authenticated_user: bool,
    /// Forward paths of the route's host other than the MCP endpoint (with a
    /// valid token, without the upstream token); refused when false.
    #[serde(default)]
    pub forward_other_paths: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMcp {
    pub server: RawMcpServer,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMcpServer {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub upstream_oauth2: Option<RawUpstreamOAuth2>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamOAuth2 {
    pub client_id: String,
    pub client_secret: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub endpoint: RawEndpoint,
    #[serde(default)]
    pub authorization_url_params: BTreeMap<String, String>,
    /// Refresh the upstream token when it expires within this many seconds.
    #[serde(default)]
    pub refresh_skew_seconds: Option<u64>,
    /// How long a refresh may take before its outcome counts as unknown.
    #[serde(default)]
    pub refresh_timeout_ms: Option<u64>,
    /// How long a request holding an expired upstream token waits for a refresh.
    #[serde(default)]
    pub refresh_wait_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEndpoint {
    pub auth_url: String,
    pub token_url: String,
    #[serde(default)]
    pub auth_style: Option<String>,
    /// Envoy cluster `token_url` is reached through.
    pub cluster: String,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthorizationServer {
    #[serde(default)]
    pub access_token_ttl_seconds: Option<u64>,
    #[serde(default)]
    pub refresh_token_ttl_seconds: Option<u64>,
    #[serde(default)]
    pub authorization_code_ttl_seconds: Option<u64>,
    #[serde(default)]
    pub session_ttl_seconds: Option<u64>,
    /// How long a rotated refresh token still gets the same answer (benign retries).
    #[serde(default)]
    pub refresh_reuse_grace_seconds: Option<u64>,
    #[serde(default)]
    pub scopes_supported: Option<Vec<String>>,
    #[serde(default)]
    pub registration: Option<RawRegistration>,
    /// Remember consent for dynamically registered clients too (not only
    /// for clients verified through a metadata document).
    #[serde(default)]
    pub remember_consent_for_registered_clients: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegistration {
    #[serde(default)]
    pub dynamic: Option<RawDynamicRegistration>,
    #[serde(default)]
    pub metadata_documents: Option<RawMetadataDocuments>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDynamicRegistration {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub max_per_window: Option<u32>,
    #[serde(default)]
    pub max_per_source_per_window: Option<u32>,
    #[serde(default)]
    pub window_seconds: Option<u64>,
    #[serde(default)]
    pub unused_expiry_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetadataDocuments {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub max_bytes: Option<usize>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub cache_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub etcd: Option<RawEtcd>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEtcd {
    pub cluster: String,
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub cache_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMcpSettings {
    #[serde(default)]
    pub max_request_bytes: Option<usize>,
    #[serde(default)]
    pub audit: Option<RawAudit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub include_arguments: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    /// Origins allowed to call the MCP endpoint and the OAuth endpoints from a browser; `*` for any.
    #[serde(default)]
    pub allowed_origins: Option<Vec<String>>,
}
