//! The JSON-RPC messages of an MCP POST body (MCP Transports, Streamable
//! HTTP): one message, or a batch (protocol 2025-03-26), each a request, a
//! notification or a response.

use serde_json::Value;

use super::strict_json;

/// What one element of the body is.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Request { id: Value },
    Notification,
    Response,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    pub kind: Kind,
    pub method: Option<String>,
    /// `params.name` of a `tools/call`.
    pub tool: Option<String>,
    /// `params.arguments` of a `tools/call` (an empty object when absent).
    pub arguments: Option<Value>,
    /// What `Mcp-Name` must say (MCP 2026-07-28): the tool or prompt name, or the resource URI.
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Body {
    pub batch: bool,
    pub elements: Vec<Element>,
}

/// Why a body is refused before any policy runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON (or duplicate keys): JSON-RPC -32700.
    Parse(String),
    /// JSON, but not valid JSON-RPC/MCP: -32600.
    Invalid(String),
}

/// The MCP tool-name alphabet (MCP 2025-11-25, Tools: names of 1 to 128 of
/// A-Z a-z 0-9 `_` `-` `.`, plus `/` for namespaced names). Anything else
/// (spaces, look-alike Unicode) is refused rather than judged.
pub fn valid_tool_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'))
}

pub fn parse_body(bytes: &[u8]) -> Result<Body, BodyError> {
    let value = strict_json::parse(bytes)
        .map_err(|e| BodyError::Parse(format!("the body is not valid JSON: {e}")))?;
    match value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(BodyError::Invalid("an empty batch".into()));
            }
            let elements = items
                .into_iter()
                .map(element)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Body {
                batch: true,
                elements,
            })
        }
        other => Ok(Body {
            batch: false,
            elements: vec![element(other)?],
        }),
    }
}

fn element(mut v: Value) -> Result<Element, BodyError> {
    // Taken out rather than copied: a large body's arguments are most of it.
    let arguments = v
        .pointer_mut("/params")
        .and_then(Value::as_object_mut)
        .and_then(|p| p.remove("arguments"));
    let Some(obj) = v.as_object() else {
        return Err(BodyError::Invalid(
            "a JSON-RPC message must be an object".into(),
        ));
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(BodyError::Invalid("jsonrpc must be \"2.0\"".into()));
    }
    let id = obj.get("id");
    if let Some(id) = id.filter(|id| !(id.is_string() || id.is_i64() || id.is_u64())) {
        // MCP: the id is a string or integer, never null.
        return Err(BodyError::Invalid(format!("invalid id {id}")));
    }
    let Some(method) = obj.get("method") else {
        if id.is_some() && (obj.contains_key("result") || obj.contains_key("error")) {
            return Ok(Element {
                kind: Kind::Response,
                method: None,
                tool: None,
                arguments: None,
                name: None,
            });
        }
        return Err(BodyError::Invalid(
            "a message needs a method (request or notification) or a result or error (response)"
                .into(),
        ));
    };
    let Some(method) = method.as_str() else {
        return Err(BodyError::Invalid("method must be a string".into()));
    };
    let params = obj.get("params");
    if params.is_some_and(|p| !p.is_object()) {
        return Err(BodyError::Invalid("params must be an object".into()));
    }
    let param = |k: &str| params.and_then(|p| p.get(k));
    let mut e = Element {
        kind: match id {
            Some(id) => Kind::Request { id: id.clone() },
            None => Kind::Notification,
        },
        method: Some(method.to_string()),
        tool: None,
        arguments: None,
        name: None,
    };
    match method {
        "tools/call" => {
            let name = param("name").and_then(Value::as_str).ok_or_else(|| {
                BodyError::Invalid("tools/call needs params.name, a string".into())
            })?;
            if !valid_tool_name(name) {
                return Err(BodyError::Invalid(format!(
                    "{name:?} is not a valid MCP tool name (1 to 128 of A-Z a-z 0-9 _ - . /)"
                )));
            }
            let arguments = match arguments {
                None => Value::Object(Default::default()),
                Some(a) if a.is_object() => a,
                Some(_) => {
                    return Err(BodyError::Invalid(
                        "params.arguments must be an object".into(),
                    ));
                }
            };
            e.tool = Some(name.to_string());
            e.name = Some(name.to_string());
            e.arguments = Some(arguments);
        }
        "prompts/get" => e.name = param("name").and_then(Value::as_str).map(str::to_string),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            e.name = param("uri").and_then(Value::as_str).map(str::to_string)
        }
        _ => {}
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_messages() {
        let b = parse_body(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#).unwrap();
        assert!(!b.batch);
        assert_eq!(b.elements[0].kind, Kind::Request { id: 1.into() });
        assert_eq!(b.elements[0].tool.as_deref(), Some("echo"));
        let b = parse_body(br#"[{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":"a","result":{}}]"#).unwrap();
        assert_eq!(b.elements[0].kind, Kind::Notification);
        assert_eq!(b.elements[1].kind, Kind::Response);
        let b = parse_body(
            br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"whoami"}}"#,
        )
        .unwrap();
        assert_eq!(b.elements[0].arguments, Some(serde_json::json!({})));
        let b = parse_body(
            br#"{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"file:///a"}}"#,
        )
        .unwrap();
        assert_eq!(b.elements[0].name.as_deref(), Some("file:///a"));
    }

    #[test]
    fn refusals() {
        let invalid = |b: &[u8]| matches!(parse_body(b), Err(BodyError::Invalid(_)));
        assert!(matches!(parse_body(b"not json"), Err(BodyError::Parse(_))));
        assert!(matches!(
            parse_body(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"x"}"#),
            Err(BodyError::Parse(_))
        ));
        assert!(invalid(br#"{"jsonrpc":"2.0","id":1,"method":7}"#));
        assert!(invalid(br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#));
        assert!(invalid(br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#));
        assert!(invalid(br#"[]"#));
        assert!(invalid(br#"[1]"#));
        assert!(invalid(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"admin_reset "}}"#
        ));
        assert!(invalid("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"ａｄｍｉｎ_reset\"}}".as_bytes()));
        assert!(invalid(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}"#
        ));
        assert!(invalid(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":[1]}}"#));
        assert!(invalid(br#"{"jsonrpc":"2.0","id":1}"#));
    }
}
