//! `tools/list` answers rewritten so users see only the tools they may call,
//! as JSON or as Server-Sent Events. Fail closed: an answer (or an event of
//! the stream) that can't be read is withheld, never passed on unfiltered.

use serde_json::{Value, json};

/// What became of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filtered {
    /// Readable, and nothing in it lists tools.
    Unchanged,
    Rewritten(Vec<u8>),
    /// Not JSON (or not UTF-8): to be withheld.
    Unreadable,
}

/// Drops the tools `keep` refuses from every result that lists tools, in
/// one message or a batch. Any result with a `tools` array counts, whatever
/// its id says (a server may answer id `1` as `1.0`). `None`: nothing to change.
pub fn filter_value(value: &Value, keep: &dyn Fn(&str) -> bool) -> Option<Value> {
    match value {
        Value::Array(items) => {
            let mut changed = false;
            let out: Vec<Value> = items
                .iter()
                .map(|m| match filter_message(m, keep) {
                    Some(new) => {
                        changed = true;
                        new
                    }
                    None => m.clone(),
                })
                .collect();
            changed.then_some(Value::Array(out))
        }
        m => filter_message(m, keep),
    }
}

fn filter_message(message: &Value, keep: &dyn Fn(&str) -> bool) -> Option<Value> {
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
pub fn filter_json(body: &[u8], keep: &dyn Fn(&str) -> bool) -> Filtered {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Filtered::Unreadable;
    };
    match filter_value(&value, keep).and_then(|v| serde_json::to_vec(&v).ok()) {
        Some(bytes) => Filtered::Rewritten(bytes),
        None => Filtered::Unchanged,
    }
}

/// The JSON-RPC error that replaces an answer the filter can't read.
pub fn withheld(id: &Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603,
        "message": "the MCP server's tools/list answer could not be filtered by policy (compressed, or not JSON), so it is withheld"}})
}

/// Rewrites the complete events at the front of an SSE stream; returns the
/// rewritten events and how many input bytes they consumed (the rest is an
/// incomplete event, kept for the next chunk). Events without data, and
/// data that lists no tools, pass through byte for byte; data that is not
/// JSON is replaced by [`withheld`] for `id`.
pub fn filter_sse(buffer: &[u8], keep: &dyn Fn(&str) -> bool, id: &Value) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(buffer.len());
    let mut consumed = 0;
    while let Some(end) = event_end(&buffer[consumed..], false) {
        let event = &buffer[consumed..consumed + end];
        out.extend_from_slice(&rewrite_event(event, keep, id).unwrap_or_else(|| event.to_vec()));
        consumed += end;
    }
    (out, consumed)
}

/// The end of the stream: what is left is its last event, even without the
/// blank line that should end it. Judged like any other.
pub fn finish_sse(rest: &[u8], keep: &dyn Fn(&str) -> bool, id: &Value) -> Vec<u8> {
    if rest.iter().all(u8::is_ascii_whitespace) {
        return rest.to_vec();
    }
    rewrite_event(rest, keep, id).unwrap_or_else(|| rest.to_vec())
}

/// Where the line starting at `from` ends and the next one starts. A line
/// ends at CRLF, LF or CR (WHATWG SSE, "Parsing an event stream"); a CR as
/// the last byte may be the first half of a CRLF still to come, so it ends
/// a line only at the end of the stream.
fn line_at(buf: &[u8], from: usize, at_end: bool) -> Option<(usize, usize)> {
    let rel = buf
        .get(from..)?
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')?;
    let end = from + rel;
    match (buf[end], buf.get(end + 1)) {
        (b'\r', Some(b'\n')) => Some((end, end + 2)),
        (b'\r', None) if !at_end => None,
        _ => Some((end, end + 1)),
    }
}

/// The length of the first complete event (through its blank line), if any.
fn event_end(buf: &[u8], at_end: bool) -> Option<usize> {
    let mut from = 0;
    loop {
        let (end, next) = line_at(buf, from, at_end)?;
        if end == from {
            return Some(next);
        }
        from = next;
    }
}

/// The event's lines, without their terminators.
fn lines(event: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut from = 0;
    while from < event.len() {
        match line_at(event, from, true) {
            Some((end, next)) => {
                out.push(&event[from..end]);
                from = next;
            }
            None => {
                out.push(&event[from..]);
                break;
            }
        }
    }
    out
}

/// `None`: the event goes on as it is.
fn rewrite_event(event: &[u8], keep: &dyn Fn(&str) -> bool, id: &Value) -> Option<Vec<u8>> {
    let mut data: Option<Vec<u8>> = None;
    let mut other = Vec::new();
    for line in lines(event) {
        // A field is `name: value` or `name` alone (value empty).
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => continue,
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None if line.is_empty() => continue,
            None => (line, &b""[..]),
        };
        if name == b"data" {
            let d = data.get_or_insert_with(Vec::new);
            if !d.is_empty() {
                d.push(b'\n');
            }
            d.extend_from_slice(value);
        } else {
            other.push(line);
        }
    }
    let data = data.filter(|d| !d.iter().all(u8::is_ascii_whitespace))?;
    let replacement = match serde_json::from_slice::<Value>(&data) {
        Ok(message) => filter_value(&message, keep)?,
        Err(_) => withheld(id),
    };
    let mut out = Vec::new();
    for line in other {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(replacement.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
    Some(out)
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

    fn rewritten(f: Filtered) -> Value {
        match f {
            Filtered::Rewritten(bytes) => serde_json::from_slice(&bytes).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn json_answers() {
        let body = serde_json::to_vec(&answer(3)).unwrap();
        let out = rewritten(filter_json(&body, &keep));
        assert_eq!(
            out["result"]["tools"],
            json!([{"name": "echo"}, {"name": "whoami"}])
        );
        // Whatever the id says: 3.0 for 3 is still filtered.
        let odd = serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 3.0,
            "result": {"tools": [{"name": "admin_reset"}]}}))
        .unwrap();
        assert_eq!(
            rewritten(filter_json(&odd, &keep))["result"]["tools"],
            json!([])
        );
        // Not a tool list: untouched. Not JSON: unreadable, to be withheld.
        assert_eq!(
            filter_json(br#"{"jsonrpc":"2.0","id":3,"result":{}}"#, &keep),
            Filtered::Unchanged
        );
        assert_eq!(
            filter_json(br#"{"id":3,"result":{"tools":[NaN]}}"#, &keep),
            Filtered::Unreadable
        );
    }

    #[test]
    fn sse_line_endings_and_unreadable_events() {
        let id = json!(7);
        let admin = r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"admin_reset"}]}}"#;
        for stream in [
            format!("data: {admin}\rid: 5\r\r"),
            format!("data: {admin}\n\r\n"),
            format!("data: {admin}\r\n\n"),
            format!("data: {admin}\r\n\r\n"),
        ] {
            let (mut out, used) = filter_sse(stream.as_bytes(), &keep, &id);
            // (A CR as the last byte waits for a possible LF: only the end
            // of the stream settles it.)
            out.extend(finish_sse(&stream.as_bytes()[used..], &keep, &id));
            let text = String::from_utf8_lossy(&out).into_owned();
            assert!(
                !text.contains("admin_reset") && text.contains("\"tools\":[]"),
                "{stream:?}"
            );
        }
        // Not JSON: withheld, not passed on.
        let (out, _) = filter_sse(b"data: {\"tools\": [NaN, \"admin_reset\"]}\n\n", &keep, &id);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("-32603") && !text.contains("admin_reset"),
            "{text}"
        );
        // The stream ends without the blank line: the last event is judged all the same.
        let tail = format!("data: {admin}");
        let (out, used) = filter_sse(tail.as_bytes(), &keep, &id);
        assert_eq!((out.len(), used), (0, 0));
        let last = String::from_utf8(finish_sse(tail.as_bytes(), &keep, &id)).unwrap();
        assert!(
            !last.contains("admin_reset") && last.contains("\"tools\":[]"),
            "{last}"
        );
        // A CR at the end of a chunk waits for a possible LF.
        let (_, used) = filter_sse(b": ping\r", &keep, &id);
        assert_eq!(used, 0);
    }

    #[test]
    fn sse_answers_in_pieces() {
        let stream = format!(
            "event: message\nid: e1\ndata: {}\n\n: keep-alive\n\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}}\n\n",
            answer(7)
        );
        let bytes = stream.as_bytes();
        // Feed it in two pieces cut inside the first event.
        let (first, used) = filter_sse(&bytes[..20], &keep, &json!(7));
        assert_eq!((first.len(), used), (0, 0));
        let (out, used) = filter_sse(bytes, &keep, &json!(7));
        assert_eq!(used, bytes.len());
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("event: message\nid: e1\ndata: {"));
        assert!(!text.contains("admin_reset"));
        assert!(text.contains("echo") && text.contains("whoami"));
        assert!(text.contains(": keep-alive\n\n"));
        assert!(text.ends_with("notifications/progress\"}\n\n"));
    }
}
