//! `Mcp-Method` and `Mcp-Name` (MCP 2026-07-28, Streamable HTTP): headers
//! that mirror the body so proxies can route without parsing it. A proxy
//! that decides on the body must make sure they agree, or a server that
//! routes on the headers would run something policy never judged.

use base64::Engine;

use super::message::{Element, Kind};

/// The first protocol revision with these headers.
const HEADERS_SINCE: &str = "2026-07-28";

/// A header value, decoded from the `=?base64?...?=` form when used
/// (for values that are not plain ASCII).
pub fn decode(value: &str) -> Option<String> {
    match value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    {
        Some(encoded) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()?;
            String::from_utf8(bytes).ok()
        }
        None => Some(value.to_string()),
    }
}

/// Checks the headers against a single (non-batch) message. Required from
/// 2026-07-28 on; for older revisions, checked only when sent.
pub fn check(
    protocol: Option<&str>,
    mcp_method: Option<&str>,
    mcp_name: Option<&str>,
    element: &Element,
) -> Result<(), String> {
    if element.kind == Kind::Response {
        return Ok(());
    }
    let required = protocol.is_some_and(|p| p >= HEADERS_SINCE);
    let method = element.method.as_deref().unwrap_or_default();
    match mcp_method {
        None if required => return Err("the Mcp-Method header is required".into()),
        None => {}
        Some(h) => {
            let decoded = decode(h).ok_or("the Mcp-Method header is not valid base64 UTF-8")?;
            if decoded != method {
                return Err(format!(
                    "Mcp-Method {decoded:?} does not match the body's method {method:?}"
                ));
            }
        }
    }
    match (&element.name, mcp_name) {
        (Some(_), None) if required => Err(format!("the Mcp-Name header is required for {method}")),
        (Some(name), Some(h)) => {
            let decoded = decode(h).ok_or("the Mcp-Name header is not valid base64 UTF-8")?;
            if &decoded == name {
                Ok(())
            } else {
                Err(format!(
                    "Mcp-Name {decoded:?} does not match the body's {name:?}"
                ))
            }
        }
        (None, Some(h)) => Err(format!(
            "Mcp-Name {h:?} was sent for {method}, which names nothing"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::message::parse_body;

    fn el(body: &str) -> Element {
        parse_body(body.as_bytes()).unwrap().elements.remove(0)
    }

    #[test]
    fn headers_must_mirror_the_body() {
        let call = el(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#);
        assert!(check(Some("2026-07-28"), Some("tools/call"), Some("echo"), &call).is_ok());
        assert!(
            check(
                Some("2026-07-28"),
                Some("tools/call"),
                Some("=?base64?ZWNobw==?="),
                &call
            )
            .is_ok()
        );
        assert!(
            check(
                Some("2026-07-28"),
                Some("tools/call"),
                Some("admin_reset"),
                &call
            )
            .is_err()
        );
        assert!(check(Some("2026-07-28"), Some("tools/list"), Some("echo"), &call).is_err());
        assert!(check(Some("2026-07-28"), None, Some("echo"), &call).is_err());
        assert!(check(Some("2026-07-28"), Some("tools/call"), None, &call).is_err());
        assert!(
            check(
                Some("2026-07-28"),
                Some("tools/call"),
                Some("=?base64?!!?="),
                &call
            )
            .is_err()
        );
        // Older revisions: optional, but checked when present.
        assert!(check(Some("2025-11-25"), None, None, &call).is_ok());
        assert!(
            check(
                Some("2025-11-25"),
                Some("tools/call"),
                Some("admin_reset"),
                &call
            )
            .is_err()
        );
        let list = el(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
        assert!(check(Some("2026-07-28"), Some("tools/list"), None, &list).is_ok());
        assert!(check(Some("2026-07-28"), Some("tools/list"), Some("x"), &list).is_err());
    }
}
