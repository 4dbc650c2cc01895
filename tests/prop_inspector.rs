#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

//! Property tests of the MCP inspector: it never panics, and whatever it
//! accepts as a tool call carries a well-formed tool name that the seed
//! policy judges the same way however the name is cased.

use mcp_oauth_filter::mcp::message::{Kind, parse_body, valid_tool_name};
use mcp_oauth_filter::mcp::tools_list;
use mcp_oauth_filter::oauth::records::User;
use mcp_oauth_filter::policy::{Message, evaluate, parse_policy};
use proptest::prelude::*;
use serde_json::{Value, json};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-z_/ ]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn message() -> impl Strategy<Value = Value> {
    (
        prop_oneof![Just("tools/call"), Just("tools/list"), Just("ping"), Just("notifications/x")],
        prop::option::of(prop_oneof![any::<i64>().prop_map(Value::from), "[a-z0-9]{1,5}".prop_map(Value::String)]),
        "[A-Za-z_\\-./ ]{0,20}",
        json_value(),
    )
        .prop_map(|(method, id, name, args)| {
            let mut m = json!({"jsonrpc": "2.0", "method": method, "params": {"name": name, "arguments": args}});
            if let Some(id) = id {
                m["id"] = id;
            }
            m
        })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_body(&bytes);
        let _ = tools_list::filter_json(&bytes, &|_| true);
        let _ = tools_list::filter_sse(&bytes, &|_| true, &json!(1));
        let _ = tools_list::finish_sse(&bytes, &|_| true, &json!(1));
    }

    #[test]
    fn arbitrary_json_never_panics(v in json_value()) {
        let _ = parse_body(v.to_string().as_bytes());
    }

    #[test]
    fn accepted_tool_calls_have_valid_names(batch in prop::collection::vec(message(), 1..4), as_batch in any::<bool>()) {
        let body = if as_batch { Value::Array(batch.clone()) } else { batch[0].clone() };
        if let Ok(parsed) = parse_body(body.to_string().as_bytes()) {
            prop_assert_eq!(parsed.batch, as_batch);
            for e in &parsed.elements {
                if e.method.as_deref() == Some("tools/call") {
                    prop_assert!(valid_tool_name(e.tool.as_deref().unwrap()));
                    prop_assert!(e.arguments.as_ref().unwrap().is_object());
                }
                if let Kind::Request { id } = &e.kind {
                    prop_assert!(id.is_string() || id.is_i64() || id.is_u64());
                }
            }
        }
    }

    #[test]
    fn admin_tools_are_denied_in_any_case(suffix in "[a-z_]{0,10}", mask in prop::collection::vec(any::<bool>(), 6)) {
        let policy = parse_policy(&json!({"allow": {"and": [{"domain": {"is": "company.com"}}]},
                                          "deny": {"or": [{"mcp_tool": {"starts_with": "admin_"}}]}}), "p").unwrap();
        let user = User { sub: "alice".into(), email: Some("alice@company.com".into()), email_verified: None,
                          name: None, groups: vec![], claims: Default::default() };
        let cased: String = "admin_".chars().zip(&mask).map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c }).collect();
        let tool = format!("{cased}{suffix}");
        let args = json!({});
        let m = Message { method: "tools/call", tool: Some(&tool), arguments: Some(&args) };
        prop_assert!(!evaluate(&policy, false, &user, Some(&m)).allowed);
    }
}
