//! The OAuth 2.1 authorization server MCP clients talk to (MCP
//! authorization 2025-06-18 / 2025-11-25).

pub mod access_token;
pub mod clients;
pub mod error;
pub mod form;
pub mod pages;
pub mod records;
pub mod redirect_uri;
pub mod server_metadata;
pub mod session;
