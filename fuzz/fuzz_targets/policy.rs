//! Route policies (`policy::parse_policy`, `policy::evaluate`) over MCP
//! bodies (`mcp::message::parse_body`).
//!
//! The input is `policy JSON 0xFF body`; byte 0 of the body part picks the
//! user. Checks: no panic; a user refused before any message is known (at
//! sign-in) is refused every message; `mcp_tool` judges tool names ASCII
//! case-insensitively.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_oauth_filter::mcp::message::parse_body;
use mcp_oauth_filter::oauth::records::User;
use mcp_oauth_filter::policy::{Message, evaluate, parse_policy};
use serde_json::{Value, json};

fn user(pick: u8) -> User {
    let (sub, email, groups) = match pick % 3 {
        0 => (
            "alice",
            Some("alice@company.com"),
            vec!["admins".to_string()],
        ),
        1 => ("bob", Some("bob@other.example"), vec![]),
        _ => ("carol", None, vec!["Dev".to_string(), "ops".to_string()]),
    };
    let mut claims = serde_json::Map::new();
    claims.insert("tenant".into(), json!("t1"));
    claims.insert("roles".into(), json!(["reader", 7]));
    User {
        sub: sub.into(),
        email: email.map(str::to_string),
        email_verified: Some(pick & 4 != 0),
        name: None,
        groups,
        claims,
    }
}

fuzz_target!(|data: &[u8]| {
    let (policy, rest) = match data.iter().position(|&b| b == 0xff) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(value) = serde_json::from_slice::<Value>(policy) else {
        return;
    };
    let Ok(policy) = parse_policy(&value, "policy") else {
        return;
    };
    let (pick, body) = rest.split_first().map_or((0, &[][..]), |(p, b)| (*p, b));
    let any_user = pick & 8 != 0;
    let user = user(pick);
    let at_sign_in = evaluate(&policy, any_user, &user, None).allowed;
    let Ok(body) = parse_body(body) else {
        return;
    };
    for e in &body.elements {
        let Some(method) = e.method.as_deref() else {
            continue;
        };
        let message = Message {
            method,
            tool: e.tool.as_deref(),
            arguments: e.arguments.as_ref(),
        };
        let allowed = evaluate(&policy, any_user, &user, Some(&message)).allowed;
        assert!(
            at_sign_in || !allowed,
            "refused at sign-in, yet {method} {:?} is allowed",
            e.tool
        );
        if let Some(tool) = e.tool.as_deref() {
            for cased in [tool.to_ascii_uppercase(), tool.to_ascii_lowercase()] {
                let m = Message {
                    tool: Some(&cased),
                    ..message
                };
                assert_eq!(
                    evaluate(&policy, any_user, &user, Some(&m)).allowed,
                    allowed,
                    "tool {tool:?} and {cased:?} judged differently"
                );
            }
        }
    }
});
