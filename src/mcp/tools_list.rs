//! `tools/list` answers rewritten so users see only the tools they may call,
//! as JSON or as Server-Sent Events.

use serde_json::Value;

/// Rewrites one JSON-RPC message: if it answers one of `ids` with a tool
/// list, drops the tools `keep` refuses. Returns the new JSON, or `None` when
/// the message is left as it is.
pub fn filter_message(
    message: &Value,
    ids: &[Value],
    keep: &dyn Fn(&str) -> bool,
) -> Option<Value> {
    let id = message.get("id")?;
    if !ids.contains(id) {
        return None;
    }
    let tools = message.get("result")?.get("tools")?.as_array()?;
    let kept: Vec<Value> = tools
        .iter()
        .filter(|t| t.get("name").and_then(Value::as_str).is_some_and(keep))
        .cloned()
        .collect();
    let mut out = message.clone();
    out["result"]["tools"] = Value::Array(kept);
    Some(out)
}

/// A whole JSON body (one message or a batch of them).
pub fn filter_json(body: &[u8], ids: &[Value], keep: &dyn Fn(&str) -> bool) -> Option<Vec<u8>> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let rewritten = match &value {
        Value::Array(items) => {
            let mut changed = false;
            let out: Vec<Value> = items
                .iter()
                .map(|m| match filter_message(m, ids, keep) {
                    Some(new) => {
                        changed = true;
                        new
                    }
                    None => m.clone(),
                })
                .collect();
            changed.then_some(Value::Array(out))?
        }
        m => filter_message(m, ids, keep)?,
    };
    serde_json::to_vec(&rewritten).ok()
}

/// Rewrites the complete events at the front of an SSE stream; returns the
/// rewritten events and how many input bytes they consumed (the rest is an
/// incomplete event, kept for the next chunk). Events other than the
/// answer pass through byte for byte.
pub fn filter_sse(buffer: &[u8], ids: &[Value], keep: &dyn Fn(&str) -> bool) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(buffer.len());
    let mut consumed = 0;
    while let Some(end) = event_end(&buffer[consumed..]) {
        let event = &buffer[consumed..consumed + end];
        out.extend_from_slice(&rewrite_event(event, ids, keep).unwrap_or_else(|| event.to_vec()));
        consumed += end;
    }
    (out, consumed)
}

/// The length of the first complete event (through its blank line), if any.
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buf.len() {
        // An event ends at an empty line: "\n\n", "\r\n\r\n" or "\r\r" (WHATWG SSE).
        for sep in [&b"\r\n\r\n"[..], b"\n\n", b"\r\r"] {
            if buf[i..].starts_with(sep) {
                return Some(i + sep.len());
            }
        }
        i += 1;
    }
    None
}

fn rewrite_event(event: &[u8], ids: &[Value], keep: &dyn Fn(&str) -> bool) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(event).ok()?;
    let mut data = String::new();
    let mut other = Vec::new();
    for line in text.lines() {
        match line.strip_prefix("data:") {
            Some(d) => {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(d.strip_prefix(' ').unwrap_or(d));
            }
            None if !line.is_empty() => other.push(line),
            None => {}
        }
    }
    let message: Value = serde_json::from_str(&data).ok()?;
    let rewritten = filter_message(&message, ids, keep)?;
    let mut out = String::new();
    for line in other {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("data: ");
    out.push_str(&rewritten.to_string());
    out.push_str("\n\n");
    Some(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keep(name: &str) -> bool {
        !name.starts_with("admin_")
    }

    fn answer(id: i64) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [{"name": "echo"}, {"name": "admin_reset"}, {"name": "whoami"}]}})
    }

    #[test]
    fn json_answers() {
        let body = serde_json::to_vec(&answer(3)).unwrap();
        let out: Value =
            serde_json::from_slice(&filter_json(&body, &[json!(3)], &keep).unwrap()).unwrap();
        assert_eq!(
            out["result"]["tools"],
            json!([{"name": "echo"}, {"name": "whoami"}])
        );
        // Another id, or not a tool list: untouched.
        assert!(filter_json(&body, &[json!(4)], &keep).is_none());
        assert!(
            filter_json(
                br#"{"jsonrpc":"2.0","id":3,"result":{}}"#,
                &[json!(3)],
                &keep
            )
            .is_none()
        );
    }

    #[test]
    fn sse_answers_in_pieces() {
        let stream = format!(
            "event: message\nid: e1\ndata: {}\n\n: keep-alive\n\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}}\n\n",
            answer(7)
        );
        let bytes = stream.as_bytes();
        // Feed it in two pieces cut inside the first event.
        let (first, used) = filter_sse(&bytes[..20], &[json!(7)], &keep);
        assert_eq!((first.len(), used), (0, 0));
        let (out, used) = filter_sse(bytes, &[json!(7)], &keep);
        assert_eq!(used, bytes.len());
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("event: message\nid: e1\ndata: {"));
        assert!(!text.contains("admin_reset"));
        assert!(text.contains("echo") && text.contains("whoami"));
        assert!(text.contains(": keep-alive\n\n"));
        assert!(text.ends_with("notifications/progress\"}\n\n"));
    }
}
