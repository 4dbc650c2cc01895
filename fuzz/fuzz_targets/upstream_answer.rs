//! The upstream OAuth2 provider's token answers (`upstream::client::parse_answer`):
//! any status, any content type, any body.
//!
//! Bytes 0-1: the status (mod 600); byte 2: the content type; the rest: the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_oauth_filter::outbound::CallResponse;
use mcp_oauth_filter::upstream::client;

const CONTENT_TYPES: [Option<&str>; 6] = [
    Some("application/json"),
    Some("application/x-www-form-urlencoded"),
    Some("application/json; charset=utf-8"),
    Some("text/plain"),
    Some("APPLICATION/X-WWW-FORM-URLENCODED; charset=utf-8"),
    None,
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let status = u16::from_le_bytes([data[0], data[1]]) % 600;
    let mut headers = vec![(":status".to_string(), status.to_string())];
    if let Some(ct) = CONTENT_TYPES[data[2] as usize % CONTENT_TYPES.len()] {
        headers.push(("content-type".to_string(), ct.to_string()));
    }
    let answer = CallResponse::from_parts(headers, data[3..].to_vec());
    assert_eq!(answer.status, u32::from(status));
    if let Ok(token) = client::parse_answer(&answer) {
        assert!(
            (200..300).contains(&status),
            "a token taken from an HTTP {status} answer"
        );
        assert!(!token.access_token.is_empty());
        assert!(token.refresh_token.as_deref() != Some(""));
        assert!(token.expires_in != Some(0));
    }
});
