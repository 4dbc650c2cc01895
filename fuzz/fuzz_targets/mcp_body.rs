//! MCP POST bodies (`mcp::message::parse_body`): what the filter judges by
//! policy. Whatever it accepts as a tool call carries a well-formed tool
//! name and an object of arguments; requests' ids are strings or integers
//! (as tests/prop_inspector.rs checks on generated messages).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_oauth_filter::mcp::message::{Kind, parse_body, valid_tool_name};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = parse_body(data) else {
        return;
    };
    assert!(!body.elements.is_empty());
    if !body.batch {
        assert_eq!(body.elements.len(), 1);
    }
    for e in &body.elements {
        if e.method.as_deref() == Some("tools/call") {
            let tool = e.tool.as_deref().expect("a tools/call without a tool");
            assert!(valid_tool_name(tool), "accepted tool name {tool:?}");
            assert!(e.arguments.as_ref().is_some_and(|a| a.is_object()));
        }
        if let Kind::Request { id } = &e.kind {
            assert!(
                id.is_string() || id.is_i64() || id.is_u64(),
                "accepted id {id}"
            );
        }
    }
});
