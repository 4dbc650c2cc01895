//! Validation of the URLs in the configuration.

use url::{Host, Url};

use super::ConfigError;

/// An outside URL the filter calls with `dispatch_http_call` through a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutsideUrl {
    pub url: String,
    /// `:authority` for the call: host, and port when not the scheme's default.
    pub authority: String,
    /// `:path` for the call: path and query.
    pub path: String,
    pub cluster: String,
}

/// True for hosts that can only be this machine (RFC 8252 7.3 loopback).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// `host[:port]` as a client sends it in `:authority`, lower-case, without
/// the scheme's default port.
pub fn authority_of(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    }
}

/// Parses an absolute http(s) URL. Plain http is refused except on loopback
/// (OAuth 2.1 section 1.5 requires TLS) unless `allow_insecure_http` is set.
pub fn absolute_url(
    field: &str,
    value: &str,
    allow_insecure_http: bool,
    errors: &mut Vec<ConfigError>,
) -> Option<Url> {
    let url = match crate::untrusted_url::parse_clean(value) {
        Ok(url) => url,
        Err(e) => {
            errors.push(ConfigError::new(field, format!("{value:?} {e}")));
            return None;
        }
    };
    let problem = match url.scheme() {
        _ if url.host_str().is_none_or(str::is_empty) => Some("has no host".to_string()),
        "https" => None,
        "http" if allow_insecure_http || is_loopback(&url) => None,
        "http" => Some(
            "must use https (plain http is allowed only for loopback hosts, or with allow_insecure_http)"
                .to_string(),
        ),
        other => Some(format!("scheme must be https, not {other:?}")),
    };
    let problem = problem.or_else(|| {
        if !url.username().is_empty() || url.password().is_some() {
            Some("must not contain credentials".to_string())
        } else if url.fragment().is_some() {
            Some("must not contain a fragment".to_string())
        } else {
            None
        }
    });
    match problem {
        Some(p) => {
            errors.push(ConfigError::new(field, p));
            None
        }
        None => Some(url),
    }
}

/// An absolute URL reached through an Envoy cluster.
pub fn outside_url(
    field: &str,
    value: &str,
    cluster: &str,
    cluster_field: &str,
    allow_insecure_http: bool,
    errors: &mut Vec<ConfigError>,
) -> Option<OutsideUrl> {
    if cluster.trim().is_empty() {
        errors.push(ConfigError::new(
            cluster_field,
            "must name the Envoy cluster this URL is reached through",
        ));
    }
    let url = absolute_url(field, value, allow_insecure_http, errors)?;
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    Some(OutsideUrl {
        authority: authority_of(&url),
        path,
        url: url.to_string(),
        cluster: cluster.to_string(),
    })
}
