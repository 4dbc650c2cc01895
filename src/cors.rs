//! CORS for browser-based MCP clients (MCP Inspector, web apps): preflights
//! are answered without authentication, and the filter's replies and the
//! MCP server's responses expose the headers clients must read.

use crate::config::Cors;
use crate::reply::Reply;

/// Methods of the streamable HTTP transport (MCP 2025-06-18, Transports) and OAuth endpoints.
const ALLOW_METHODS: &str = "GET, POST, DELETE, OPTIONS";
/// Used when a preflight names no headers or names ones we can't echo safely.
const DEFAULT_ALLOW_HEADERS: &str = "authorization, content-type, accept, mcp-protocol-version, mcp-session-id, last-event-id, mcp-method, mcp-name";
/// Response headers a browser client needs to read (the challenge, the session).
pub const EXPOSE_HEADERS: &str = "www-authenticate, mcp-session-id, mcp-protocol-version";
const MAX_AGE_SECONDS: &str = "86400";

/// The `Access-Control-Allow-Origin` value for a request's `Origin`, if allowed.
pub fn allow_origin(cors: &Cors, origin: Option<&str>) -> Option<String> {
    let origin = origin?;
    match &cors.allowed_origins {
        None => Some("*".to_string()),
        Some(list) => list.iter().any(|o| o == origin).then(|| origin.to_string()),
    }
}

/// `204` for a preflight; without the allow headers when the origin is not allowed,
/// so the browser refuses the real request.
pub fn preflight(cors: &Cors, origin: Option<&str>, requested_headers: Option<&str>) -> Reply {
    let mut reply = Reply::new(204);
    if let Some(allowed) = allow_origin(cors, origin) {
        let headers = requested_headers
            .filter(|h| {
                !h.trim().is_empty() && h.len() <= 1024 && h.bytes().all(is_header_list_byte)
            })
            .map(|h| h.to_ascii_lowercase())
            .unwrap_or_else(|| DEFAULT_ALLOW_HEADERS.to_string());
        let vary = allowed != "*";
        reply = reply
            .header("access-control-allow-origin", allowed)
            .header("access-control-allow-methods", ALLOW_METHODS)
            .header("access-control-allow-headers", headers)
            .header("access-control-max-age", MAX_AGE_SECONDS);
        if vary {
            reply = reply.header("vary", "origin");
        }
    }
    reply
}

/// Adds the CORS response headers to a reply of the filter's own.
pub fn decorate(reply: Reply, cors: &Cors, origin: Option<&str>) -> Reply {
    match allow_origin(cors, origin) {
        Some(allowed) if reply.header_value("access-control-allow-origin").is_none() => {
            let vary = allowed != "*";
            let reply = reply
                .header("access-control-allow-origin", allowed)
                .header("access-control-expose-headers", EXPOSE_HEADERS);
            if vary {
                reply.header("vary", "origin")
            } else {
                reply
            }
        }
        _ => reply,
    }
}

/// RFC 9110 token characters, plus the list separators.
fn is_header_list_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~, ".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any() -> Cors {
        Cors {
            allowed_origins: None,
        }
    }

    #[test]
    fn preflight_echoes_safe_requested_headers() {
        let r = preflight(
            &any(),
            Some("http://localhost:6274"),
            Some("Authorization, Content-Type, mcp-protocol-version"),
        );
        assert_eq!(r.status, 204);
        assert_eq!(r.header_value("access-control-allow-origin"), Some("*"));
        assert_eq!(
            r.header_value("access-control-allow-headers"),
            Some("authorization, content-type, mcp-protocol-version")
        );
        assert!(
            r.header_value("access-control-allow-methods")
                .unwrap()
                .contains("POST")
        );
        let r = preflight(&any(), Some("http://x"), Some("x\r\nset-cookie: a"));
        assert_eq!(
            r.header_value("access-control-allow-headers"),
            Some(DEFAULT_ALLOW_HEADERS)
        );
    }

    #[test]
    fn listed_origins_only() {
        let cors = Cors {
            allowed_origins: Some(vec!["https://app.example.com".into()]),
        };
        let ok = preflight(&cors, Some("https://app.example.com"), None);
        assert_eq!(
            ok.header_value("access-control-allow-origin"),
            Some("https://app.example.com")
        );
        assert_eq!(ok.header_value("vary"), Some("origin"));
        let refused = preflight(&cors, Some("https://evil.example.com"), None);
        assert_eq!(refused.status, 204);
        assert_eq!(refused.header_value("access-control-allow-origin"), None);
    }

    #[test]
    fn decorate_exposes_the_challenge() {
        let r = decorate(Reply::new(401), &any(), Some("http://localhost:6274"));
        assert!(
            r.header_value("access-control-expose-headers")
                .unwrap()
                .contains("www-authenticate")
        );
        let r = decorate(Reply::new(401), &any(), None);
        assert_eq!(r.header_value("access-control-allow-origin"), None);
    }
}
