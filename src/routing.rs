//! Which route, and which of the filter's endpoints, a request is for.
//!
//! On a route's host every request is either answered by the filter itself
//! (metadata, CORS preflight, the OAuth endpoints) or needs a valid token:
//! nothing on a route's host reaches the MCP server unauthenticated.
//! Requests for other hosts pass through untouched.

use std::collections::HashMap;

use crate::config::Route;

pub use endpoints::PROTECTED_RESOURCE_METADATA;

/// The filter's own endpoints on every route's host.
pub mod endpoints {
    pub const PROTECTED_RESOURCE_METADATA: &str = "/.well-known/oauth-protected-resource";
    pub const AUTHORIZATION_SERVER_METADATA: &str = "/.well-known/oauth-authorization-server";
    pub const OPENID_CONFIGURATION: &str = "/.well-known/openid-configuration";
    pub const AUTHORIZE: &str = "/.oauth/authorize";
    pub const CALLBACK: &str = "/.oauth/callback";
    pub const UPSTREAM_CALLBACK: &str = "/.oauth/upstream/callback";
    pub const CONSENT: &str = "/.oauth/consent";
    pub const TOKEN: &str = "/.oauth/token";
    pub const REGISTER: &str = "/.oauth/register";
    pub const REVOKE: &str = "/.oauth/revoke";
}

/// What a request on a route's host asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// RFC 9728 3.1 protected-resource metadata, path or root form.
    ProtectedResourceMetadata,
    /// RFC 8414 authorization-server metadata (and its OpenID alias).
    AuthorizationServerMetadata,
    Authorize,
    /// The identity provider's redirect back to the filter.
    Callback,
    /// The upstream provider's redirect back to the filter.
    UpstreamCallback,
    Consent,
    Token,
    Register,
    Revoke,
    /// A CORS preflight (Fetch standard, CORS protocol); answered without authentication.
    Preflight,
    /// The MCP endpoint, or any other path of the route's host: a token is required.
    Protected,
}

/// Routes by `:authority`, built once at configuration time.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// Authority (lower-case; with and without the default port) to route
    /// indices, longest MCP path first.
    by_authority: HashMap<String, Vec<usize>>,
}

impl RouteTable {
    pub fn new(routes: &[Route]) -> Self {
        let mut by_authority: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, route) in routes.iter().enumerate() {
            for key in authority_keys(route) {
                by_authority.entry(key).or_default().push(i);
            }
        }
        for indices in by_authority.values_mut() {
            indices.sort_by_key(|&i| std::cmp::Reverse(routes[i].path.len()));
        }
        RouteTable { by_authority }
    }

    /// Picks the route and endpoint for a request, or `None` when no route
    /// serves its host (pass through untouched).
    pub fn classify<'r>(
        &self,
        routes: &'r [Route],
        authority: &str,
        method: &str,
        path: &str,
        is_preflight: bool,
    ) -> Option<(&'r Route, Endpoint)> {
        let indices = self.by_authority.get(&authority.to_ascii_lowercase())?;
        let candidates = || indices.iter().map(|&i| &routes[i]);
        let path = path.split(['?', '#']).next().unwrap_or_default();
        // The first route of the host answers for paths no route's path covers.
        let fallback = &routes[*indices.iter().min()?];

        if let Some(rest) = path.strip_prefix(PROTECTED_RESOURCE_METADATA) {
            if rest.is_empty() || rest == "/" {
                return Some((fallback, Endpoint::ProtectedResourceMetadata));
            }
            if let Some(route) = candidates().find(|r| r.path == rest) {
                return Some((route, Endpoint::ProtectedResourceMetadata));
            }
        }
        let route = candidates()
            .find(|r| path_is_under(path, &r.path))
            .unwrap_or(fallback);
        if is_preflight && method == "OPTIONS" {
            return Some((route, Endpoint::Preflight));
        }
        let own = match path {
            endpoints::AUTHORIZATION_SERVER_METADATA | endpoints::OPENID_CONFIGURATION => {
                Endpoint::AuthorizationServerMetadata
            }
            endpoints::AUTHORIZE => Endpoint::Authorize,
            endpoints::CALLBACK => Endpoint::Callback,
            endpoints::UPSTREAM_CALLBACK => Endpoint::UpstreamCallback,
            endpoints::CONSENT => Endpoint::Consent,
            endpoints::TOKEN => Endpoint::Token,
            endpoints::REGISTER => Endpoint::Register,
            endpoints::REVOKE => Endpoint::Revoke,
            _ => return Some((route, Endpoint::Protected)),
        };
        // The authorization server belongs to the origin: its endpoints answer
        // for the host's first route, and the request names the resource.
        Some((fallback, own))
    }
}

fn authority_keys(route: &Route) -> Vec<String> {
    let mut keys = vec![route.authority.clone()];
    // A client may spell the default port out (RFC 9110 4.2.1, 4.2.2).
    let has_port = match route.authority.strip_prefix('[') {
        Some(v6) => !v6.ends_with(']'),
        None => route.authority.contains(':'),
    };
    if !has_port {
        let default_port = if route.origin.starts_with("https:") {
            443
        } else {
            80
        };
        keys.push(format!("{}:{default_port}", route.authority));
    }
    keys
}

/// `/mcp` covers `/mcp`, `/mcp/` and `/mcp/x`, not `/mcpx`.
fn path_is_under(path: &str, prefix: &str) -> bool {
    path == prefix
        || prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config(routes: serde_json::Value) -> Config {
        let mut c = crate::test_support::minimal_config();
        c["routes"] = routes;
        Config::parse(c.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn matches_by_authority_with_or_without_default_port() {
        let c =
            config(serde_json::json!([{"from": "https://mcp.example.com", "mcp": {"server": {}}}]));
        let t = RouteTable::new(&c.routes);
        for authority in ["mcp.example.com", "MCP.Example.com", "mcp.example.com:443"] {
            let (route, ep) = t
                .classify(&c.routes, authority, "POST", "/mcp", false)
                .unwrap();
            assert_eq!(route.resource, "https://mcp.example.com/mcp");
            assert_eq!(ep, Endpoint::Protected);
        }
        assert!(
            t.classify(&c.routes, "mcp.example.com:8443", "POST", "/mcp", false)
                .is_none()
        );
        assert!(
            t.classify(&c.routes, "other.example.com", "POST", "/mcp", false)
                .is_none()
        );
    }

    #[test]
    fn metadata_path_and_root_forms_and_longest_path_wins() {
        let c = config(serde_json::json!([
            {"from": "http://127.0.0.1:10000", "name": "a", "mcp": {"server": {"path": "/mcp"}}},
            {"from": "http://127.0.0.1:10000", "name": "b", "mcp": {"server": {"path": "/mcp/github"}}}
        ]));
        let t = RouteTable::new(&c.routes);
        let get = |path: &str| {
            let (r, ep) = t
                .classify(&c.routes, "127.0.0.1:10000", "GET", path, false)
                .unwrap();
            (r.name.clone(), ep)
        };
        assert_eq!(
            get("/.well-known/oauth-protected-resource/mcp/github"),
            ("b".into(), Endpoint::ProtectedResourceMetadata)
        );
        assert_eq!(
            get("/.well-known/oauth-protected-resource/mcp"),
            ("a".into(), Endpoint::ProtectedResourceMetadata)
        );
        assert_eq!(
            get("/.well-known/oauth-protected-resource"),
            ("a".into(), Endpoint::ProtectedResourceMetadata)
        );
        assert_eq!(get("/mcp/github?x=1"), ("b".into(), Endpoint::Protected));
        assert_eq!(get("/mcp/githubx"), ("a".into(), Endpoint::Protected));
        // Unknown paths, metadata for unknown resources and tricks stay protected.
        assert_eq!(get("/anything"), ("a".into(), Endpoint::Protected));
        assert_eq!(
            get("/.well-known/oauth-protected-resource/nope"),
            ("a".into(), Endpoint::Protected)
        );
        assert_eq!(
            get("/.well-known/oauth-protected-resourcex"),
            ("a".into(), Endpoint::Protected)
        );
    }

    #[test]
    fn preflight_only_for_options() {
        let c =
            config(serde_json::json!([{"from": "http://127.0.0.1:10000", "mcp": {"server": {}}}]));
        let t = RouteTable::new(&c.routes);
        assert_eq!(
            t.classify(&c.routes, "127.0.0.1:10000", "OPTIONS", "/mcp", true)
                .unwrap()
                .1,
            Endpoint::Preflight
        );
        assert_eq!(
            t.classify(&c.routes, "127.0.0.1:10000", "OPTIONS", "/mcp", false)
                .unwrap()
                .1,
            Endpoint::Protected
        );
        assert_eq!(
            t.classify(&c.routes, "127.0.0.1:10000", "POST", "/mcp", true)
                .unwrap()
                .1,
            Endpoint::Protected
        );
    }

    #[test]
    fn ipv6_authorities() {
        let c = config(serde_json::json!([{"from": "http://[::1]:10000", "mcp": {"server": {}}}]));
        let t = RouteTable::new(&c.routes);
        assert!(
            t.classify(&c.routes, "[::1]:10000", "POST", "/mcp", false)
                .is_some()
        );
        let c = config(serde_json::json!([{"from": "http://[::1]", "mcp": {"server": {}}}]));
        let t = RouteTable::new(&c.routes);
        assert!(
            t.classify(&c.routes, "[::1]", "POST", "/mcp", false)
                .is_some()
        );
        assert!(
            t.classify(&c.routes, "[::1]:80", "POST", "/mcp", false)
                .is_some()
        );
    }
}
