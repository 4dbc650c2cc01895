//! mcp-oauth-filter: a proxy-wasm filter that puts OAuth in front of MCP
//! servers. See DESIGN.md for the architecture: `host` is the only module
//! that talks to proxy-wasm; everything else is a pure core, testable natively.

pub mod audit;
pub mod config;
pub mod cors;
pub mod crypto;
pub mod env;
pub mod flow;
pub mod maintenance;
pub mod mcp;
pub mod metadata;
pub mod oauth;
pub mod oidc;
pub mod outbound;
pub mod policy;
pub mod reply;
pub mod routing;
pub mod secret;
pub mod source_address;
pub mod store;
pub mod untrusted_url;
pub mod upstream;

#[cfg(test)]
mod test_support;

pub mod host;
