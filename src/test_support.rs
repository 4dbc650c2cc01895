//! Shared pieces for the unit tests.

use serde_json::{Value, json};

/// A valid configuration with one route at `http://127.0.0.1:10000/mcp`.
pub fn minimal_config() -> Value {
    json!({
        "identity_provider": {
            "issuer": "http://127.0.0.1:9400",
            "client_id": "mcp-oauth-filter",
            "client_secret": "idp-secret",
            "cluster": "idp"
        },
        "keys": {
            "token_signing": [{"id": "te-1", "secret": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}],
            "encryption": [{"id": "enc-1", "key": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}]
        },
        "routes": [{"from": "http://127.0.0.1:10000", "name": "demo", "mcp": {"server": {"path": "/mcp"}}}]
    })
}
