//! MCP on the wire: the JSON-RPC messages of a request body, the headers
//! that mirror them, and `tools/list` answers.

pub mod headers;
pub mod message;
pub mod strict_json;
pub mod tools_list;
