//! Calls the filter makes to the outside world (`dispatch_http_call` through
//! an Envoy cluster), as values the host carries out.

use url::Url;

/// An HTTP call to make through an Envoy cluster.
#[derive(Clone, PartialEq, Eq)]
pub struct OutboundCall {
    pub cluster: String,
    /// Request headers, pseudo-headers (`:method`, `:path`, `:authority`, `:scheme`) first.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

/// Names only: header values and the body carry credentials (a client
/// secret, a refresh token, etcd's password or auth token), and the path
/// may carry a query.
impl std::fmt::Debug for OutboundCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("OutboundCall")
            .field("cluster", &self.cluster)
            .field("headers", &names)
            .field("body_bytes", &self.body.len())
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

impl OutboundCall {
    /// A call to `url`; `None` if it is not an absolute http(s) URL.
    pub fn new(method: &str, url: &str, cluster: &str, timeout_ms: u64) -> Option<Self> {
        let parsed = Url::parse(url).ok()?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return None;
        }
        let authority = crate::config::authority_of(&parsed);
        let path = match parsed.query() {
            Some(q) => format!("{}?{q}", parsed.path()),
            None => parsed.path().to_string(),
        };
        Some(OutboundCall {
            cluster: cluster.to_string(),
            headers: vec![
                (":method".into(), method.into()),
                (":path".into(), path),
                (":authority".into(), authority),
                (":scheme".into(), parsed.scheme().into()),
            ],
            body: Vec::new(),
            timeout_ms,
        })
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn form(mut self, body: String) -> Self {
        self.headers.push((
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        ));
        self.body = body.into_bytes();
        self
    }

    pub fn header_value(&self, name: &str) -> Option<&str> {
        crate::reply::find_header(&self.headers, name)
    }
}

/// The answer to a call. Envoy reports a failed call (no connection,
/// timeout, unknown cluster) as a response without headers: `status` 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallResponse {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl CallResponse {
    pub fn failed() -> Self {
        CallResponse::default()
    }

    pub fn from_parts(headers: Vec<(String, String)>, body: Vec<u8>) -> Self {
        let status = headers
            .iter()
            .find(|(n, _)| n == ":status")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        CallResponse {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        crate::reply::find_header(&self.headers, name)
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}
