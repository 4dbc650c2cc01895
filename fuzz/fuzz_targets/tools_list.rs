//! `tools/list` answers rewritten by policy (`mcp::tools_list::filter_json`,
//! `filter_sse` and `finish_sse`): the MCP server's answer bodies, as JSON
//! or as an event stream that may arrive in any number of pieces.
//!
//! Byte 0: where the stream is cut in two (as two response-body chunks);
//! the rest: the body. Checks: no panic; a rewritten JSON answer is JSON
//! with only allowed tools; the event stream comes out the same however it
//! is cut, never consumes more than it was given, and never carries a
//! refused tool in a JSON data line it passed on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_oauth_filter::mcp::tools_list::{Filtered, filter_json, filter_sse, finish_sse};
use serde_json::{Value, json};

fn keep(name: &str) -> bool {
    !name.starts_with("admin_")
}

/// Every result in `message` that lists tools lists only tools `keep` allows.
fn only_allowed(message: &Value) -> bool {
    let answers = |m: &Value| {
        m.get("result")
            .and_then(|r| r.get("tools"))
            .is_some_and(Value::is_array)
    };
    let clean = |m: &Value| {
        !answers(m)
            || m["result"]["tools"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|t| t.get("name").and_then(Value::as_str).is_some_and(keep))
    };
    match message {
        Value::Array(items) => items.iter().all(clean),
        m => clean(m),
    }
}

/// The stream as the filter passes it on, fed in the given pieces (the
/// unconsumed tail is judged at the end of the stream).
fn through(pieces: &[&[u8]], id: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let mut tail = Vec::new();
    for piece in pieces {
        tail.extend_from_slice(piece);
        let (rewritten, used) = filter_sse(&tail, &keep, id);
        assert!(
            used <= tail.len(),
            "consumed {used} of {} bytes",
            tail.len()
        );
        out.extend_from_slice(&rewritten);
        tail.drain(..used);
    }
    out.extend_from_slice(&finish_sse(&tail, &keep, id));
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    let id = json!(1);
    match filter_json(body, &keep) {
        Filtered::Rewritten(new) => {
            let value: Value =
                serde_json::from_slice(&new).expect("a rewritten answer that is not JSON");
            assert!(only_allowed(&value), "a rewritten answer lists a refused tool");
        }
        Filtered::Unchanged => {
            let value: Value = serde_json::from_slice(body).expect("unchanged but not JSON");
            assert!(only_allowed(&value), "an unchanged answer lists a refused tool");
        }
        Filtered::Unreadable => {}
    }
    let at = (cut as usize).min(body.len());
    let whole = through(&[body], &id);
    let cut_in_two = through(&[&body[..at], &body[at..]], &id);
    assert_eq!(
        whole, cut_in_two,
        "the event stream comes out differently when cut at {at}"
    );
});
