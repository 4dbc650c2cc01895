//! OAuth errors (RFC 6749 4.1.2.1, 5.2; RFC 7591 3.2.2) and how they answer.

use serde_json::json;

use crate::reply::Reply;

/// `Retry-After` of a 503 that names no better time.
pub const RETRY_UNAVAILABLE_SECONDS: u64 = 2;

/// An OAuth error: the code the spec defines, a description a person can act
/// on, and the HTTP status of a direct (non-redirect) answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub code: &'static str,
    pub description: String,
    pub status: u32,
    /// Seconds for `Retry-After` (RFC 9110 10.2.3), on a 429 or 503.
    pub retry_after: Option<u64>,
}

impl OAuthError {
    pub fn new(code: &'static str, status: u32, description: impl Into<String>) -> Self {
        OAuthError {
            code,
            description: description.into(),
            status,
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new("invalid_request", 400, d)
    }
    pub fn invalid_client(d: impl Into<String>) -> Self {
        Self::new("invalid_client", 401, d)
    }
    pub fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new("invalid_grant", 400, d)
    }
    pub fn unauthorized_client(d: impl Into<String>) -> Self {
        Self::new("unauthorized_client", 400, d)
    }
    pub fn unsupported_grant_type(d: impl Into<String>) -> Self {
        Self::new("unsupported_grant_type", 400, d)
    }
    pub fn invalid_scope(d: impl Into<String>) -> Self {
        Self::new("invalid_scope", 400, d)
    }
    pub fn invalid_target(d: impl Into<String>) -> Self {
        // RFC 8707 section 2.
        Self::new("invalid_target", 400, d)
    }
    pub fn access_denied(d: impl Into<String>) -> Self {
        Self::new("access_denied", 403, d)
    }
    pub fn server_error(d: impl Into<String>) -> Self {
        Self::new("server_error", 500, d)
    }
    /// A 503: always with `Retry-After` (a store or provider that is
    /// down answers again soon; callers may set a better figure).
    pub fn temporarily_unavailable(d: impl Into<String>) -> Self {
        Self::new("temporarily_unavailable", 503, d).with_retry_after(RETRY_UNAVAILABLE_SECONDS)
    }
    pub fn invalid_redirect_uri(d: impl Into<String>) -> Self {
        Self::new("invalid_redirect_uri", 400, d)
    }
    pub fn invalid_client_metadata(d: impl Into<String>) -> Self {
        Self::new("invalid_client_metadata", 400, d)
    }

    /// The RFC 6749 5.2 JSON answer, never cached.
    pub fn to_reply(&self) -> Reply {
        let mut reply = Reply::json(
            self.status,
            &json!({"error": self.code, "error_description": self.description}),
        )
        .header("cache-control", "no-store")
        .header("pragma", "no-cache");
        if let Some(seconds) = self.retry_after {
            reply = reply.header("retry-after", seconds.to_string());
        }
        if self.status == 401 {
            // RFC 6749 5.2: invalid_client with 401 carries a challenge for the client's scheme.
            reply = reply.header("www-authenticate", "Basic realm=\"oauth\"");
        }
        reply
    }
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.description)
    }
}
