#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

//! Policy on MCP messages through the core: the seed policy (allow
//! company.com, deny admin_ tools), batches, malformed bodies, header checks,
//! and filtered tools/list answers.

mod common;

use common::*;
use mcp_oauth_filter::flow::{self, Command, HEADER_MISMATCH, POLICY_DENIED};
use serde_json::{Value, json};

const SEED: &str = "http://127.0.0.1:10000/seed";

fn call(id: i64, tool: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": {}}}).to_string()
}

fn alice() -> (World, String) {
    let mut w = World::new(json!({}));
    let te = w.access_token_for(SEED);
    (w, te)
}

#[test]
fn alice_may_call_echo_but_not_admin_tools() {
    let (mut w, te) = alice();
    assert!(matches!(
        w.rpc("/seed", &te, &call(1, "echo"), &[]),
        Done::Forward(_)
    ));
    assert!(matches!(
        w.rpc("/seed", &te, &call(2, "whoami"), &[]),
        Done::Forward(_)
    ));
    for tool in ["admin_reset", "Admin_reset", "ADMIN_RESET"] {
        let (status, body) = w.rpc("/seed", &te, &call(3, tool), &[]).json();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["id"], 3);
        assert_eq!(body["error"]["code"], POLICY_DENIED);
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(tool) && message.contains("Policy denied"),
            "{message}"
        );
    }
}

#[test]
fn look_alike_and_padded_tool_names_are_refused() {
    let (mut w, te) = alice();
    for tool in [
        "admin_reset ",
        "ａｄｍｉｎ_reset",
        "admin\u{200b}_reset",
        "",
    ] {
        let (status, body) = w.rpc("/seed", &te, &call(1, tool), &[]).json();
        assert_eq!(status, 400, "{tool:?}: {body}");
        assert_eq!(body["error"]["code"], -32600);
    }
}

#[test]
fn another_domain_gets_403_not_a_sign_in_loop() {
    let mut w = World::new(json!({}));
    w.idp.login = Some("bob".into());
    let client = w.public_client();
    let challenge =
        mcp_oauth_filter::crypto::sha256_b64url(b"verifier-verifier-verifier-verifier-verifier-1");
    let location = w
        .send(
            "GET",
            &World::authorize_url(&client, &challenge, SEED),
            &[],
            None,
        )
        .location();
    w.idp.nonce = query_param(&location, "nonce");
    w.idp.code_challenge = query_param(&location, "code_challenge");
    let state = query_param(&location, "state").unwrap();
    let r = w
        .send(
            "GET",
            &format!("/.oauth/callback?code=c&state={state}"),
            &[],
            None,
        )
        .reply();
    assert_eq!(r.status, 403);
    assert!(
        String::from_utf8_lossy(&r.body)
            .contains("bob@other.example is not allowed to use the MCP server seed")
    );
    // The same user is admitted where the route allows anyone.
    let te = w.access_token_for("http://127.0.0.1:10000/mcp");
    assert!(matches!(
        w.rpc("/mcp", &te, &call(1, "echo"), &[]),
        Done::Forward(_)
    ));
    // And a token of that route is no good at the seed route.
    assert_eq!(
        w.rpc("/seed", &te, &call(1, "echo"), &[]).reply().status,
        401
    );
}

#[test]
fn a_batch_hiding_a_denied_call_is_refused_element_by_element() {
    let (mut w, te) = alice();
    let batch = format!(
        "[{},{},{}]",
        call(1, "echo"),
        call(2, "admin_reset"),
        r#"{"jsonrpc":"2.0","method":"notifications/progress"}"#
    );
    let (status, body) = w.rpc("/seed", &te, &batch, &[]).json();
    assert_eq!(status, 200);
    let answers = body.as_array().unwrap();
    assert_eq!(answers.len(), 2, "one answer per request: {body}");
    assert_eq!(answers[0]["id"], 1);
    assert!(
        answers[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Not executed")
    );
    assert_eq!(answers[1]["id"], 2);
    assert!(
        answers[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("admin_reset")
    );
    // A batch of allowed calls goes on.
    let ok = format!("[{},{}]", call(1, "echo"), call(2, "whoami"));
    assert!(matches!(w.rpc("/seed", &te, &ok, &[]), Done::Forward(_)));
}

#[test]
fn malformed_bodies_are_refused_with_their_error() {
    let (mut w, te) = alice();
    let cases: Vec<(&str, u32, i64)> = vec![
        ("not json", 400, -32700),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"admin_reset"}}"#,
            400,
            -32700,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":["tools/call"]}"#,
            400,
            -32600,
        ),
        (r#"[]"#, 400, -32600),
    ];
    for (body, status, code) in cases {
        let (s, b) = w.rpc("/seed", &te, body, &[]).json();
        assert_eq!(
            (s, b["error"]["code"].as_i64()),
            (status, Some(code)),
            "{body}"
        );
    }
    // Not JSON at all by content type.
    let r = w
        .send(
            "POST",
            "/seed",
            &[
                ("authorization", &format!("Bearer {te}")),
                ("content-type", "text/plain"),
            ],
            Some(call(1, "echo").as_bytes()),
        )
        .reply();
    assert_eq!(r.status, 415);
    // Oversize.
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{}"}}}}}}"#,
        "x".repeat(1_100_000)
    );
    assert_eq!(w.rpc("/seed", &te, &big, &[]).json().0, 413);
}

#[test]
fn mirrored_headers_must_match_the_body() {
    let (mut w, te) = alice();
    let h = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "echo"),
    ];
    assert!(matches!(
        w.rpc("/seed", &te, &call(1, "echo"), &h),
        Done::Forward(_)
    ));
    let b64 = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "=?base64?ZWNobw==?="),
    ];
    assert!(matches!(
        w.rpc("/seed", &te, &call(1, "echo"), &b64),
        Done::Forward(_)
    ));
    let lie = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "echo"),
    ];
    let (status, body) = w.rpc("/seed", &te, &call(7, "admin_reset"), &lie).json();
    assert_eq!(
        (status, body["error"]["code"].as_i64(), body["id"].as_i64()),
        (400, Some(HEADER_MISMATCH), Some(7))
    );
    let missing = [("mcp-protocol-version", "2026-07-28")];
    assert_eq!(
        w.rpc("/seed", &te, &call(1, "echo"), &missing).json().0,
        400
    );
}

#[test]
fn tools_list_answers_show_only_allowed_tools() {
    let (mut w, te) = alice();
    assert!(matches!(
        w.rpc(
            "/seed",
            &te,
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#,
            &[]
        ),
        Done::Forward(_)
    ));
    let stage = w.last_stage.clone().unwrap();
    let answer = json!({"jsonrpc": "2.0", "id": 5, "result": {"tools": [{"name": "whoami"}, {"name": "echo"}, {"name": "admin_reset"}]}});
    let out: Value = serde_json::from_slice(
        &flow::filter_tools_json(&w.filter.config, &stage, answer.to_string().as_bytes()).unwrap(),
    )
    .unwrap();
    let names: Vec<_> = out["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["whoami", "echo"]);
    let sse = format!("event: message\ndata: {answer}\n\n");
    let (out, used) = flow::filter_tools_sse(&w.filter.config, &stage, sse.as_bytes());
    assert_eq!(used, sse.len());
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("echo") && !text.contains("admin_reset"));
}

fn tools_answer(id: u64) -> String {
    json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [{"name": "whoami"}, {"name": "echo"}, {"name": "admin_reset"}]}}).to_string()
}

fn tools_list_forwarded(id: u64) -> World {
    let (mut w, te) = alice();
    let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list"}}"#);
    assert!(matches!(w.rpc("/seed", &te, &body, &[]), Done::Forward(_)));
    w
}

#[test]
fn a_json_tools_list_answer_is_held_whole_and_rewritten() {
    for trailers in [false, true] {
        let mut w = tools_list_forwarded(5);
        let answer = tools_answer(5);
        let (a, b) = answer.as_bytes().split_at(20);
        let (out, commands) = w.respond(
            &[
                (":status", "200"),
                ("content-type", "application/json"),
                ("content-length", "99"),
            ],
            &[a, b],
            trailers,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("echo") && !text.contains("admin_reset"),
            "{trailers}: {text}"
        );
        assert!(commands.contains(&Command::RemoveResponseHeader("content-length")));
    }
}

#[test]
fn an_event_stream_tools_list_answer_is_rewritten_across_chunks_and_trailers() {
    for trailers in [false, true] {
        let mut w = tools_list_forwarded(6);
        let sse = format!("event: message\ndata: {}\n\n", tools_answer(6));
        // Cut inside the data line: the first chunk holds no complete event.
        let (a, b) = sse.as_bytes().split_at(40);
        let (out, _) = w.respond(
            &[(":status", "200"), ("content-type", "text/event-stream")],
            &[a, b],
            trailers,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("echo") && !text.contains("admin_reset"),
            "{trailers}: {text}"
        );
    }
    // An event the stream ends in, unterminated, is judged too.
    let mut w = tools_list_forwarded(7);
    let sse = format!("data: {}", tools_answer(7));
    let (out, _) = w.respond(
        &[(":status", "200"), ("content-type", "text/event-stream")],
        &[sse.as_bytes()],
        true,
    );
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains("admin_reset"), "{text}");
}

#[test]
fn an_answer_to_other_requests_is_left_alone() {
    let (mut w, te) = alice();
    assert!(matches!(
        w.rpc("/seed", &te, &call(1, "echo"), &[]),
        Done::Forward(_)
    ));
    let answer = tools_answer(1);
    let (out, commands) = w.respond(
        &[(":status", "200"), ("content-type", "application/json")],
        &[answer.as_bytes()],
        true,
    );
    assert_eq!(out, answer.as_bytes());
    assert!(!commands.iter().any(|c| matches!(
        c,
        Command::ReplaceResponseBody { .. } | Command::ReadResponseBody { .. }
    )));
}

#[test]
fn methods_outside_streamable_http_are_refused() {
    let (mut w, te) = alice();
    for method in ["PUT", "PATCH"] {
        let r = w
            .send(
                method,
                "/seed",
                &[
                    ("authorization", &format!("Bearer {te}")),
                    ("content-type", "application/json"),
                ],
                Some(call(1, "admin_reset").as_bytes()),
            )
            .reply();
        assert_eq!(r.status, 405, "{method}");
    }
}

/// The world again, with the same tools/list request forwarded last.
fn w_again(w: &mut World) -> World {
    let _ = w;
    tools_list_forwarded(9)
}

#[test]
fn an_unreadable_tools_list_answer_is_withheld() {
    let (mut w, te) = alice();
    assert!(matches!(
        w.rpc(
            "/seed",
            &te,
            r#"{"jsonrpc":"2.0","id":9,"method":"tools/list"}"#,
            &[]
        ),
        Done::Forward(_)
    ));
    for (headers, trailers) in [
        (
            vec![
                (":status", "200"),
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            false,
        ),
        (
            vec![
                (":status", "200"),
                ("content-type", "application/json"),
                ("content-encoding", "br"),
            ],
            true,
        ),
        (
            vec![(":status", "200"), ("content-type", "text/plain")],
            false,
        ),
    ] {
        let mut w = w_again(&mut w);
        let answer = tools_answer(9);
        let (out, commands) = w.respond(
            &headers,
            &[b"\x1f\x8b garbage", answer.as_bytes()],
            trailers,
        );
        assert!(commands.contains(&Command::RemoveResponseHeader("content-encoding")));
        let body: Value = serde_json::from_slice(&out)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out)));
        assert_eq!(body["id"], 9);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("withheld")
        );
    }
    // The same through the core's function, for the id.
    let stage = w.last_stage.clone().unwrap();
    let body: Value = serde_json::from_slice(
        &flow::filter_tools_json(&w.filter.config, &stage, b"not json").unwrap(),
    )
    .unwrap();
    assert_eq!(body["id"], 9);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("withheld")
    );
}
