//! `application/x-www-form-urlencoded` bodies and queries (`Params::parse`):
//! /token, /revoke, /register's forms, the consent form, callbacks' queries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_oauth_filter::oauth::form::Params;

fuzz_target!(|data: &[u8]| {
    if let Ok(params) = Params::parse(data) {
        for name in [
            "grant_type",
            "code",
            "code_verifier",
            "redirect_uri",
            "client_id",
            "resource",
            "state",
        ] {
            // Empty values count as absent (RFC 6749 3.1).
            if let Some(v) = params.get(name) {
                assert!(!v.is_empty());
            }
        }
    }
});
