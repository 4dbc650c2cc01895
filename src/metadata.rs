//! OAuth 2.0 Protected Resource Metadata (RFC 9728) for a route's MCP endpoint.

use serde_json::{Value, json};

use crate::config::{AuthorizationServer, Route};

/// The RFC 9728 section 2 document. The filter is the route's authorization
/// server, so `authorization_servers` is the route's own origin, the issuer
/// of its authorization-server metadata (RFC 8414).
pub fn protected_resource_metadata(route: &Route, server: &AuthorizationServer) -> Value {
    json!({
        "resource": route.resource,
        "authorization_servers": [route.origin],
        "scopes_supported": server.scopes_supported,
        "bearer_methods_supported": ["header"],
        "resource_name": route.name,
    })
}
