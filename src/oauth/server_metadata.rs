//! Authorization server metadata (RFC 8414), served at
//! `/.well-known/oauth-authorization-server` and its OpenID alias.

use serde_json::{Value, json};

use crate::config::{Config, Route};
use crate::routing::endpoints;

/// The document for the authorization server of a route's origin. `issuer`
/// is byte-identical to the protected-resource metadata's
/// `authorization_servers[0]` (RFC 8414 3.3, RFC 9728 3.3).
pub fn document(route: &Route, config: &Config) -> Value {
    let origin = &route.origin;
    let registration = &config.authorization_server;
    let mut doc = json!({
        "issuer": origin,
        "authorization_endpoint": format!("{origin}{}", endpoints::AUTHORIZE),
        "token_endpoint": format!("{origin}{}", endpoints::TOKEN),
        "revocation_endpoint": format!("{origin}{}", endpoints::REVOKE),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "scopes_supported": registration.scopes_supported,
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": registration.metadata_documents.enabled,
    });
    if registration.dynamic_registration.enabled {
        doc["registration_endpoint"] = json!(format!("{origin}{}", endpoints::REGISTER));
    }
    doc
}
