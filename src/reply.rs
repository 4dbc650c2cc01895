//! Replies the filter sends itself, and the one place that maps a failure to
//! its reply, so every failure answers the same way.

use serde_json::{Value, json};

use crate::config::Route;

/// A local reply: status, headers, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn new(status: u32) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn json(status: u32, body: &Value) -> Self {
        Reply::new(status)
            .header("content-type", "application/json")
            .with_body(body.to_string().into_bytes())
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn with_body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }

    pub fn header_value(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// A header's value in a list of (name, value) pairs; names compare
/// case-insensitively (RFC 9110 5.1).
pub fn find_header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Why the filter answers a request itself instead of forwarding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No bearer token (RFC 6750 3.1: no error code in the challenge).
    MissingToken,
    /// A bearer token that is not a valid token of this route.
    InvalidToken(&'static str),
    MethodNotAllowed {
        allow: &'static str,
    },
    /// A path of a route's host that is neither the MCP endpoint nor the filter's own.
    PathNotServed,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::MissingToken => f.write_str("no bearer token"),
            Failure::InvalidToken(why) => write!(f, "invalid bearer token: {why}"),
            Failure::MethodNotAllowed { allow } => {
                write!(f, "method not allowed (allowed: {allow})")
            }
            Failure::PathNotServed => f.write_str("path not served"),
        }
    }
}

/// The RFC 9728 section 5.1 challenge pointing clients at the route's
/// protected-resource metadata (path form, section 3.1).
pub fn challenge(route: &Route, scopes: &[String], error: Option<(&str, &str)>) -> String {
    let mut params = Vec::new();
    if let Some((code, description)) = error {
        params.push(format!("error=\"{code}\""));
        params.push(format!("error_description=\"{description}\""));
    }
    params.push(format!(
        "resource_metadata=\"{}\"",
        resource_metadata_url(route)
    ));
    if !scopes.is_empty() {
        // MCP authorization (2025-11-25) "Scope Selection Strategy": the challenge names the scopes to ask for.
        params.push(format!("scope=\"{}\"", scopes.join(" ")));
    }
    format!("Bearer {}", params.join(", "))
}

pub fn resource_metadata_url(route: &Route) -> String {
    format!(
        "{}{}{}",
        route.origin,
        crate::routing::PROTECTED_RESOURCE_METADATA,
        route.path
    )
}

/// The one mapping from a failure to what the client receives.
pub fn reply_for(failure: &Failure, route: &Route, scopes: &[String]) -> Reply {
    match failure {
        Failure::MissingToken => Reply::json(
            401,
            &json!({
                "error": "unauthorized",
                "error_description": format!(
                    "This MCP server requires an access token from its authorization server; see {}",
                    resource_metadata_url(route)
                ),
            }),
        )
        .header("www-authenticate", challenge(route, scopes, None)),
        Failure::InvalidToken(why) => Reply::json(
            401,
            &json!({"error": "invalid_token", "error_description": why}),
        )
        .header(
            "www-authenticate",
            challenge(route, scopes, Some(("invalid_token", why))),
        ),
        Failure::MethodNotAllowed { allow } => Reply::json(
            405,
            &json!({"error": "method_not_allowed", "error_description": format!("use {allow}")}),
        )
        .header("allow", *allow),
        Failure::PathNotServed => Reply::json(
            404,
            &json!({
                "error": "not_found",
                "error_description": format!(
                    "this path is not served; the MCP endpoint is {}", route.resource
                ),
            }),
        ),
    }
    .header("cache-control", "no-store")
}

/// A request for a host no route serves (`unmatched_hosts: deny`).
pub fn no_route() -> Reply {
    Reply::new(404)
        .header("content-type", "text/plain; charset=utf-8")
        .header("cache-control", "no-store")
        .with_body(b"No MCP route serves this host.\n".to_vec())
}

/// A request whose authority or path can be read more than one way.
pub fn ambiguous_request(why: &str) -> Reply {
    Reply::json(
        400,
        &json!({"error": "invalid_request", "error_description": why}),
    )
    .header("cache-control", "no-store")
}
