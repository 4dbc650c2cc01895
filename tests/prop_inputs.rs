#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

//! Property tests over everything that reads outside input: no input makes
//! the core panic (a panic kills the VM in Envoy). `make fuzz` runs these
//! with many more cases (PROPTEST_CASES).

use mcp_oauth_filter::config::{Config, KeyEntry};
use mcp_oauth_filter::flow::RequestHead;
use mcp_oauth_filter::host::map_codec;
use mcp_oauth_filter::oauth::access_token;
use mcp_oauth_filter::oauth::form::Params;
use mcp_oauth_filter::outbound::CallResponse;
use mcp_oauth_filter::secret::Secret;
use mcp_oauth_filter::upstream::client;
use proptest::prelude::*;

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..512)
}

proptest! {
    #[test]
    fn configuration_never_panics(b in bytes()) {
        let _ = Config::parse(&b);
    }

    #[test]
    fn configuration_json_never_panics(s in "\\{(\"[a-z_]{1,12}\":(\"[ -~]{0,20}\"|\\[\\]|\\{\\}|[0-9]{1,4}|true),?){0,6}\\}") {
        let _ = Config::parse(s.as_bytes());
    }

    #[test]
    fn header_maps_never_panic(b in bytes()) {
        if let Some(map) = map_codec::decode(&b) {
            let _ = RequestHead::from_pairs(map);
        }
    }

    #[test]
    fn forms_never_panic(b in bytes()) {
        let _ = Params::parse(&b);
    }

    #[test]
    fn access_tokens_never_panic(s in "[A-Za-z0-9_.-]{0,300}") {
        let keys = [KeyEntry { id: "k".into(), key: Secret::new(vec![7; 32]) }];
        prop_assert!(access_token::verify(&s, &keys, "i", "a", 0, 3600).is_err());
    }

    #[test]
    fn upstream_answers_never_panic(status in 0u32..600, b in bytes(), json in any::<bool>()) {
        let content_type = if json { "application/json" } else { "application/x-www-form-urlencoded" };
        let answer = CallResponse::from_parts(
            vec![(":status".into(), status.to_string()), ("content-type".into(), content_type.into())], b);
        let _ = client::parse_answer(&answer);
    }
}
