//! Which route, and which of the filter's endpoints, a request is for.
//!
//! Fail closed: a request whose authority no route serves is refused (unless
//! the operator opted into passthrough), an authority that can be read more
//! than one way is refused, and on a route's host only the MCP endpoint and
//! the filter's own endpoints are served; other paths are refused unless the
//! route forwards them explicitly.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

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
    /// The route's MCP endpoint: a token is required, messages are judged,
    /// the upstream token is injected.
    Mcp,
    /// Another path of the route's host: refused, or with
    /// `forward_other_paths` forwarded with a valid token and nothing injected.
    OtherPath,
}

/// Where a request belongs.
#[derive(Debug, Clone, Copy)]
pub enum Placement<'r> {
    Route(&'r Route, Endpoint),
    /// No route serves this authority.
    NoRoute,
    /// The authority or path can't be read one way only: refused (400).
    Ambiguous(&'static str),
}

/// Routes by `:authority`, built once at configuration time.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// Normalised authority (see [`normalise_authority`]) to route indices,
    /// longest MCP path first.
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
            indices.dedup();
        }
        RouteTable { by_authority }
    }

    /// Picks the route and endpoint for a request.
    pub fn classify<'r>(
        &self,
        routes: &'r [Route],
        authority: &str,
        method: &str,
        path: &str,
        is_preflight: bool,
    ) -> Placement<'r> {
        let key = match normalise_authority(authority) {
            Ok(key) => key,
            Err(why) => return Placement::Ambiguous(why),
        };
        let Some(indices) = self.by_authority.get(&key) else {
            return Placement::NoRoute;
        };
        let Some(&first) = indices.iter().min() else {
            return Placement::NoRoute;
        };
        // The first route of the host answers for paths no route's path covers.
        let fallback = &routes[first];
        let path = match path.split_once('?') {
            Some((p, _)) => p,
            None => path,
        };
        if let Err(why) = check_path(path) {
            return Placement::Ambiguous(why);
        }
        let candidates = || indices.iter().map(|&i| &routes[i]);

        if let Some(rest) = path.strip_prefix(PROTECTED_RESOURCE_METADATA) {
            if rest.is_empty() || rest == "/" {
                return Placement::Route(fallback, Endpoint::ProtectedResourceMetadata);
            }
            if let Some(route) = candidates().find(|r| r.path == rest) {
                return Placement::Route(route, Endpoint::ProtectedResourceMetadata);
            }
        }
        let mcp_route = candidates().find(|r| is_mcp_endpoint(path, &r.path));
        if is_preflight && method == "OPTIONS" {
            return Placement::Route(mcp_route.unwrap_or(fallback), Endpoint::Preflight);
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
            _ => {
                return match mcp_route {
                    Some(route) => Placement::Route(route, Endpoint::Mcp),
                    // Another path: the route whose path is its longest prefix decides.
                    None => Placement::Route(
                        candidates()
                            .find(|r| path_is_under(path, &r.path))
                            .unwrap_or(fallback),
                        Endpoint::OtherPath,
                    ),
                };
            }
        };
        // The authorization server belongs to the origin: its endpoints answer
        // for the host's first route, and the request names the resource.
        Placement::Route(fallback, own)
    }
}

impl RouteTable {
    /// Whether an authority that can't be normalised might still be meant
    /// as one of the routes' hosts (its host part, roughly read, is one of
    /// theirs, or is numeric while a route's host is an IP address). With
    /// `unmatched_hosts: passthrough`, only those are refused.
    pub fn might_be_a_route_host(&self, authority: &str) -> bool {
        let rest = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = match rest.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => rest.split(':').next().unwrap_or_default(),
        };
        let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
        let numeric = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b'x');
        self.by_authority.keys().any(|key| {
            let (route_host, _) = split_port(key);
            let route_host = route_host.trim_start_matches('[').trim_end_matches(']');
            route_host == host
                || authority.starts_with('[') && route_host.contains(':')
                || numeric && route_host.parse::<std::net::IpAddr>().is_ok()
        })
    }
}

/// The table keys of a route: `host:port` with the port spelled out, and
/// `host` alone when the port is the scheme's default (RFC 9110 4.2.1, 4.2.2).
fn authority_keys(route: &Route) -> Vec<String> {
    let Ok(normal) = normalise_authority(&route.authority) else {
        return Vec::new();
    };
    let default_port = if route.origin.starts_with("https:") {
        443
    } else {
        80
    };
    match split_port(&normal) {
        (host, Some(port)) if port == default_port.to_string() => {
            vec![normal.clone(), host.to_string()]
        }
        (_, Some(_)) => vec![normal],
        (host, None) => vec![format!("{host}:{default_port}"), host.to_string()],
    }
}

fn split_port(authority: &str) -> (&str, Option<&str>) {
    let host_end = if authority.starts_with('[') {
        authority.find(']').map_or(authority.len(), |i| i + 1)
    } else {
        authority.find(':').unwrap_or(authority.len())
    };
    let (host, rest) = authority.split_at(host_end);
    (host, rest.strip_prefix(':'))
}

/// The one spelling of an authority (RFC 9110 4.2, RFC 3986 3.2.2) used for
/// every comparison: lower case, no trailing dot, IPv6 in its RFC 5952 form,
/// the port as given. Forms that different parsers read differently are
/// refused: userinfo, an empty or zero-padded port, IPv4 octets with leading
/// zeros or fewer than four parts, anything but letters, digits, `-`, `_`, `.`.
pub fn normalise_authority(authority: &str) -> Result<String, &'static str> {
    if authority.is_empty() {
        return Err("the request has no Host");
    }
    if authority.len() > 255 {
        return Err("the Host is too long");
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, rest) = v6
            .split_once(']')
            .ok_or("the Host's IPv6 address is not closed")?;
        let addr: Ipv6Addr = addr
            .parse()
            .map_err(|_| "the Host's IPv6 address is not valid")?;
        let port = match rest {
            "" => None,
            _ => Some(
                rest.strip_prefix(':')
                    .ok_or("the Host has text after its IPv6 address")?,
            ),
        };
        (format!("[{addr}]"), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            || host.split('.').any(str::is_empty)
        {
            return Err("the Host is not a valid host name");
        }
        let host = host.to_ascii_lowercase();
        // URL Standard "ends in a number": a name whose last label is numeric
        // is an IPv4 address to browsers, so it must be one, written plainly.
        let last = host.rsplit('.').next().unwrap_or_default();
        let numeric = last.bytes().all(|b| b.is_ascii_digit())
            || last
                .strip_prefix("0x")
                .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()));
        if numeric {
            let ip: Ipv4Addr = host
                .parse()
                .map_err(|_| "the Host is an IPv4 address in an ambiguous form")?;
            if ip.to_string() != host {
                return Err("the Host is an IPv4 address in an ambiguous form");
            }
        }
        (host, port)
    };
    match port {
        None => Ok(host),
        Some(p) => {
            let plain = !p.is_empty()
                && p.len() <= 5
                && p.bytes().all(|b| b.is_ascii_digit())
                && !p.starts_with('0');
            match p.parse::<u16>() {
                Ok(n) if plain && n > 0 => Ok(format!("{host}:{n}")),
                _ => Err("the Host's port is not a plain port number"),
            }
        }
    }
}

/// Paths a route's host serves must mean one thing to every server behind
/// Envoy: origin-form (RFC 9112 3.2.1), no dot segments, no empty segments,
/// no backslashes, no `;` path parameters (servlet containers strip them),
/// and no percent-encoding of `/`, `\`, `;`, NUL or any unreserved character
/// (RFC 3986 2.3: `/%6dcp` is `/mcp` to a server that normalises, not to the
/// filter), nor a malformed escape.
fn check_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("the request target must be a path starting with '/'");
    }
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            i += 1;
            continue;
        }
        let hex = |at: usize| bytes.get(at).and_then(|&b| (b as char).to_digit(16));
        let Some(decoded) = hex(i + 1).zip(hex(i + 2)).map(|(h, l)| h * 16 + l) else {
            return Err("the request path has a malformed percent-escape");
        };
        let decoded = u8::try_from(decoded).unwrap_or(0);
        if decoded.is_ascii_alphanumeric() || b"-._~/\\;\0".contains(&decoded) {
            return Err("the request path percent-encodes a character that needs no encoding");
        }
        i += 3;
    }
    if path.contains('\\')
        || path.contains("//")
        || path.contains(';')
        || path.split('/').any(|seg| seg == "." || seg == "..")
        || path
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b >= 0x80)
    {
        return Err("the request path is not in a normalised form");
    }
    Ok(())
}

/// The MCP endpoint is one path (MCP Transports, Streamable HTTP), with or
/// without a trailing slash.
fn is_mcp_endpoint(path: &str, mcp_path: &str) -> bool {
    path == mcp_path || path.strip_suffix('/') == Some(mcp_path)
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

    fn placed<'r>(p: Placement<'r>) -> (&'r Route, Endpoint) {
        match p {
            Placement::Route(r, e) => (r, e),
            other => panic!("not placed: {other:?}"),
        }
    }

    #[test]
    fn matches_normalised_authorities_only() {
        let c =
            config(serde_json::json!([{"from": "https://mcp.example.com", "mcp": {"server": {}}}]));
        let t = RouteTable::new(&c.routes);
        for authority in [
            "mcp.example.com",
            "MCP.Example.com",
            "mcp.example.com:443",
            "mcp.example.com.",
            "mcp.example.com.:443",
        ] {
            let (route, ep) = placed(t.classify(&c.routes, authority, "POST", "/mcp", false));
            assert_eq!(route.resource, "https://mcp.example.com/mcp");
            assert_eq!(ep, Endpoint::Mcp, "{authority}");
        }
        for other in [
            "mcp.example.com:8443",
            "other.example.com",
            "example.com",
            "127.0.0.1",
        ] {
            assert!(
                matches!(
                    t.classify(&c.routes, other, "POST", "/mcp", false),
                    Placement::NoRoute
                ),
                "{other}"
            );
        }
        for ambiguous in [
            "",
            "mcp.example.com:0443",
            "mcp.example.com:",
            "mcp.example.com:443:443",
            "mcp.example.com:65536",
            "mcp.example.com:+443",
            "user@mcp.example.com",
            "mcp.example.com..",
            "mcp example.com",
            "mcp.example.com\r\n",
            "127.000.0.1",
            "127.1",
            "0x7f.0.0.1",
            "[::1",
            "[::1]x",
        ] {
            assert!(
                matches!(
                    t.classify(&c.routes, ambiguous, "POST", "/mcp", false),
                    Placement::Ambiguous(_)
                ),
                "{ambiguous:?}"
            );
        }
    }

    #[test]
    fn explicit_ports_and_loopback() {
        let c =
            config(serde_json::json!([{"from": "http://127.0.0.1:10000", "mcp": {"server": {}}}]));
        let t = RouteTable::new(&c.routes);
        assert!(matches!(
            t.classify(&c.routes, "127.0.0.1:10000", "POST", "/mcp", false),
            Placement::Route(..)
        ));
        assert!(matches!(
            t.classify(&c.routes, "127.0.0.1:10000.", "POST", "/mcp", false),
            Placement::Ambiguous(_)
        ));
        for other in [
            "127.0.0.1",
            "localhost:10000",
            "[::1]:10000",
            "127.0.0.2:10000",
        ] {
            assert!(
                matches!(
                    t.classify(&c.routes, other, "POST", "/mcp", false),
                    Placement::NoRoute
                ),
                "{other}"
            );
        }
        assert!(matches!(
            t.classify(&c.routes, "127.0.0.1:010000", "POST", "/mcp", false),
            Placement::Ambiguous(_)
        ));
    }

    #[test]
    fn metadata_path_and_root_forms_and_longest_path_wins() {
        let c = config(serde_json::json!([
            {"from": "http://127.0.0.1:10000", "name": "a", "mcp": {"server": {"path": "/mcp"}}},
            {"from": "http://127.0.0.1:10000", "name": "b", "mcp": {"server": {"path": "/mcp/github"}}}
        ]));
        let t = RouteTable::new(&c.routes);
        let get = |path: &str| {
            let (r, ep) = placed(t.classify(&c.routes, "127.0.0.1:10000", "GET", path, false));
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
        assert_eq!(get("/mcp/github?x=1"), ("b".into(), Endpoint::Mcp));
        assert_eq!(get("/mcp/github/"), ("b".into(), Endpoint::Mcp));
        assert_eq!(get("/mcp"), ("a".into(), Endpoint::Mcp));
        assert_eq!(get("/mcp/githubx"), ("a".into(), Endpoint::OtherPath));
        assert_eq!(get("/mcp/github/x"), ("b".into(), Endpoint::OtherPath));
        // Unknown paths, metadata for unknown resources and tricks are other paths.
        assert_eq!(get("/anything"), ("a".into(), Endpoint::OtherPath));
        assert_eq!(get("/_debug/headers"), ("a".into(), Endpoint::OtherPath));
        assert_eq!(get("/MCP"), ("a".into(), Endpoint::OtherPath));
        assert_eq!(
            get("/.well-known/oauth-protected-resource/nope"),
            ("a".into(), Endpoint::OtherPath)
        );
        assert_eq!(
            get("/.well-known/oauth-protected-resourcex"),
            ("a".into(), Endpoint::OtherPath)
        );
    }

    #[test]
    fn paths_that_mean_different_things_to_different_servers_are_refused() {
        let c =
            config(serde_json::json!([{"from": "http://127.0.0.1:10000", "mcp": {"server": {}}}]));
        let t = RouteTable::new(&c.routes);
        for path in [
            "/mcp/../_debug/headers",
            "/mcp/./",
            "//mcp",
            "/mcp%2f..",
            "/%2e%2e/mcp",
            "/mcp\\x",
            "http://127.0.0.1:10000/mcp",
            "*",
            "mcp",
            "/mcp%00",
            "/%6dcp",
            "/m%63p",
            "/mcp;x",
            "/mcp%3b",
            "/mcp%3B",
            "/mcp%",
            "/mcp%zz",
        ] {
            assert!(
                matches!(
                    t.classify(&c.routes, "127.0.0.1:10000", "POST", path, false),
                    Placement::Ambiguous(_)
                ),
                "{path:?}"
            );
        }
        // An escape that must be one (a space, a question mark) is fine.
        assert_eq!(
            placed(t.classify(&c.routes, "127.0.0.1:10000", "POST", "/a%20b%3F", false)).1,
            Endpoint::OtherPath
        );
    }

    #[test]
    fn preflight_only_for_options() {
        let c =
            config(serde_json::json!([{"from": "http://127.0.0.1:10000", "mcp": {"server": {}}}]));
        let t = RouteTable::new(&c.routes);
        let ep = |method: &str, preflight: bool| {
            placed(t.classify(&c.routes, "127.0.0.1:10000", method, "/mcp", preflight)).1
        };
        assert_eq!(ep("OPTIONS", true), Endpoint::Preflight);
        assert_eq!(ep("OPTIONS", false), Endpoint::Mcp);
        assert_eq!(ep("POST", true), Endpoint::Mcp);
    }

    #[test]
    fn ipv6_authorities() {
        let c = config(serde_json::json!([{"from": "http://[::1]:10000", "mcp": {"server": {}}}]));
        let t = RouteTable::new(&c.routes);
        for a in ["[::1]:10000", "[0:0:0:0:0:0:0:1]:10000", "[::0001]:10000"] {
            assert!(
                matches!(
                    t.classify(&c.routes, a, "POST", "/mcp", false),
                    Placement::Route(..)
                ),
                "{a}"
            );
        }
        let c = config(serde_json::json!([{"from": "http://[::1]", "mcp": {"server": {}}}]));
        let t = RouteTable::new(&c.routes);
        for a in ["[::1]", "[::1]:80"] {
            assert!(
                matches!(
                    t.classify(&c.routes, a, "POST", "/mcp", false),
                    Placement::Route(..)
                ),
                "{a}"
            );
        }
    }
}
