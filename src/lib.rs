//! mcp-oauth-filter: a proxy-wasm filter that puts OAuth in front of MCP
//! servers. See DESIGN.md for the architecture: `host` is the only module
//! that talks to proxy-wasm; everything else is a pure core, testable natively.

pub mod config;
pub mod cors;
pub mod flow;
pub mod metadata;
pub mod policy;
pub mod reply;
pub mod routing;
pub mod secret;

#[cfg(test)]
mod test_support;

pub mod host;
