//! The filter's access tokens (`oauth::access_token::verify`), read from
//! every MCP request's Authorization header.
//!
//! First byte 0: the rest is the token as presented (it can't carry a valid
//! MAC, so it must be refused). Otherwise the rest is `header JSON 0xFF
//! claims JSON`, signed here with the filter's key, so the reader is driven
//! past the MAC check into the header and claims checks; whatever it accepts
//! must be for this issuer and audience, unexpired, and live no longer than
//! the configured access-token lifetime.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use mcp_oauth_filter::config::KeyEntry;
use mcp_oauth_filter::oauth::access_token;
use mcp_oauth_filter::secret::Secret;
use sha2::Sha256;

const KEY: [u8; 32] = [7; 32];
const NOW: u64 = 1_000_000;
const MAX_LIFETIME: u64 = 3600;

fuzz_target!(|data: &[u8]| {
    let keys = [KeyEntry {
        id: "k".into(),
        key: Secret::new(KEY.to_vec()),
    }];
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode == 0 {
        if let Ok(token) = std::str::from_utf8(rest) {
            assert!(access_token::verify(token, &keys, "i", "a", NOW, MAX_LIFETIME).is_err());
        }
        return;
    }
    let (header, claims) = match rest.iter().position(|&b| b == 0xff) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (&br#"{"alg":"HS256","typ":"at+jwt","kid":"k"}"#[..], rest),
    };
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&KEY) else {
        return;
    };
    mac.update(signing_input.as_bytes());
    let token = format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    );
    if let Ok(c) = access_token::verify(&token, &keys, "i", "a", NOW, MAX_LIFETIME) {
        assert_eq!((c.iss.as_str(), c.aud.as_str()), ("i", "a"));
        assert!(c.exp > NOW);
        assert!(
            c.exp.saturating_sub(c.iat) <= MAX_LIFETIME,
            "a token living {} s",
            c.exp - c.iat
        );
    }
    // A token is judged the same whether or not it was verified before (cache).
    let again = access_token::verify(&token, &keys, "i", "a", NOW, MAX_LIFETIME);
    let other_key = [KeyEntry {
        id: "k".into(),
        key: Secret::new(vec![8; 32]),
    }];
    access_token::clear_cache();
    assert_eq!(
        again.is_ok(),
        access_token::verify(&token, &keys, "i", "a", NOW, MAX_LIFETIME).is_ok()
    );
    // Signed with another key of the same id: never accepted (the filter
    // clears the cache when its configuration, and so its keys, change).
    access_token::clear_cache();
    assert!(access_token::verify(&token, &other_key, "i", "a", NOW, MAX_LIFETIME).is_err());
});
