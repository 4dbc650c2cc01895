//! The filter-issued access token (TE): an HS256 JWT (RFC 9068 profile:
//! `typ: at+jwt`) for one route's resource, bound to a grant. Checked on
//! every MCP request with a symmetric MAC only: asymmetric verification in
//! wasm costs 1.5-2 ms a request (recipes/README.md).

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::KeyEntry;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    /// The route's canonical resource URI (RFC 8707): a token for one route
    /// is refused by every other.
    pub aud: String,
    pub sub: String,
    pub exp: u64,
    pub iat: u64,
    pub jti: String,
    pub client_id: String,
    pub scope: String,
    /// The grant (refresh-token family) the token belongs to; revoking the
    /// grant revokes its access tokens.
    pub gid: String,
}

/// Why a presented token is refused; shown to the client in the challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    Malformed,
    UnknownKey,
    BadSignature,
    WrongAudience,
    Expired,
    /// Lives longer than this server issues tokens for, or issued in the future.
    LifetimeTooLong,
}

/// Clock difference tolerated between workers and replicas.
const CLOCK_SKEW_SECONDS: u64 = 60;

impl TokenProblem {
    pub fn describe(self) -> &'static str {
        match self {
            TokenProblem::Malformed => "the token is not an access token of this server",
            TokenProblem::UnknownKey => "the token was signed with a key this server does not have",
            TokenProblem::BadSignature => "the token's signature is invalid",
            TokenProblem::WrongAudience => "the token was issued for another resource",
            TokenProblem::Expired => "the token has expired",
            TokenProblem::LifetimeTooLong => {
                "the token's lifetime exceeds what this server issues; get a new token"
            }
        }
    }
}

/// Signs with the first (active) key.
pub fn issue(claims: &AccessClaims, keys: &[KeyEntry]) -> Option<String> {
    let key = keys.first()?;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(key.id.clone());
    header.typ = Some("at+jwt".to_string());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(key.key.expose())).ok()
}

/// Tokens whose signature was checked, per VM: the MAC costs about 29 us a
/// request in wasm (`make bench`), and a client sends the same token for an
/// hour. A token's claims never change; what can change (revocation) is
/// checked on the grant, every request. Cleared when the configuration (and
/// maybe the keys) changes.
mod verified {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use super::AccessClaims;

    const MAX_ENTRIES: usize = 4096;

    thread_local! {
        static CACHE: RefCell<HashMap<String, (String, AccessClaims)>> = RefCell::new(HashMap::new());
    }

    /// The claims of `token`, if it was verified with the key `kid` before.
    pub fn get(token: &str) -> Option<(String, AccessClaims)> {
        CACHE.with(|c| c.borrow().get(token).cloned())
    }

    pub fn put(token: &str, kid: &str, claims: &AccessClaims) {
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            if c.len() >= MAX_ENTRIES {
                c.clear();
            }
            c.insert(token.to_string(), (kid.to_string(), claims.clone()));
        });
    }

    pub fn clear() {
        CACHE.with(|c| c.borrow_mut().clear());
    }
}

/// Forgets the verified tokens (the keys may have changed).
pub fn clear_cache() {
    verified::clear();
}

/// Verifies signature, issuer, audience and expiry (against `now`, not the
/// wasm clock, so the core stays pure and testable).
pub fn verify(
    token: &str,
    keys: &[KeyEntry],
    issuer: &str,
    audience: &str,
    now: u64,
    max_lifetime: u64,
) -> Result<AccessClaims, TokenProblem> {
    let claims = match verified::get(token) {
        // A retired key's tokens stop verifying, cached or not.
        Some((kid, claims)) if keys.iter().any(|k| k.id == kid) => claims,
        _ => {
            let (kid, claims) = verify_signature(token, keys)?;
            verified::put(token, &kid, &claims);
            claims
        }
    };
    if claims.iss != issuer {
        return Err(TokenProblem::Malformed);
    }
    if claims.aud != audience {
        return Err(TokenProblem::WrongAudience);
    }
    if claims.exp <= now {
        return Err(TokenProblem::Expired);
    }
    // A valid MAC is not enough: a token minted with a longer lifetime (a
    // leaked key, an older configuration) must not outlive the configured TTL.
    if claims.exp.saturating_sub(claims.iat) > max_lifetime
        || claims.exp > now + max_lifetime + CLOCK_SKEW_SECONDS
        || claims.iat > now + CLOCK_SKEW_SECONDS
    {
        return Err(TokenProblem::LifetimeTooLong);
    }
    Ok(claims)
}

/// The MAC check proper: header, key by id, signature, claims' shape.
fn verify_signature(
    token: &str,
    keys: &[KeyEntry],
) -> Result<(String, AccessClaims), TokenProblem> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenProblem::Malformed)?;
    if header.alg != Algorithm::HS256 || header.typ.as_deref() != Some("at+jwt") {
        return Err(TokenProblem::Malformed);
    }
    let kid = header.kid.ok_or(TokenProblem::Malformed)?;
    let key = keys
        .iter()
        .find(|k| k.id == kid)
        .ok_or(TokenProblem::UnknownKey)?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<AccessClaims>(
        token,
        &DecodingKey::from_secret(key.key.expose()),
        &validation,
    )
    .map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenProblem::BadSignature,
        _ => TokenProblem::Malformed,
    })?;
    Ok((kid, data.claims))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn keys() -> Vec<KeyEntry> {
        vec![
            KeyEntry {
                id: "k2".into(),
                key: Secret::new(vec![2; 32]),
            },
            KeyEntry {
                id: "k1".into(),
                key: Secret::new(vec![1; 32]),
            },
        ]
    }

    fn claims() -> AccessClaims {
        AccessClaims {
            iss: "http://127.0.0.1:10000".into(),
            aud: "http://127.0.0.1:10000/mcp".into(),
            sub: "alice".into(),
            exp: 2_000,
            iat: 1_000,
            jti: "j".into(),
            client_id: "c".into(),
            scope: "mcp".into(),
            gid: "g".into(),
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let keys = keys();
        let t = issue(&claims(), &keys).unwrap();
        let ok = verify(
            &t,
            &keys,
            "http://127.0.0.1:10000",
            "http://127.0.0.1:10000/mcp",
            1_500,
            1_000,
        );
        assert_eq!(ok.unwrap(), claims());
        assert_eq!(
            verify(
                &t,
                &keys,
                "http://127.0.0.1:10000",
                "http://127.0.0.1:10000/other",
                1_500,
                1_000
            ),
            Err(TokenProblem::WrongAudience)
        );
        assert_eq!(
            verify(
                &t,
                &keys,
                "http://127.0.0.1:10000",
                "http://127.0.0.1:10000/mcp",
                2_000,
                1_000
            ),
            Err(TokenProblem::Expired)
        );
        assert_eq!(
            verify(
                &t,
                &keys[1..],
                "http://127.0.0.1:10000",
                "http://127.0.0.1:10000/mcp",
                1_500,
                1_000
            ),
            Err(TokenProblem::UnknownKey)
        );
        assert_eq!(
            verify(
                &t,
                &keys,
                "http://evil",
                "http://127.0.0.1:10000/mcp",
                1_500,
                1_000
            ),
            Err(TokenProblem::Malformed)
        );
        // Tampered payload: flip a character in the middle part.
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        let mut p = parts[1].clone().into_bytes();
        p[5] = if p[5] == b'A' { b'B' } else { b'A' };
        parts[1] = String::from_utf8(p).unwrap();
        let tampered = parts.join(".");
        assert!(
            verify(
                &tampered,
                &keys,
                "http://127.0.0.1:10000",
                "http://127.0.0.1:10000/mcp",
                1_500,
                1_000
            )
            .is_err()
        );
        assert_eq!(
            verify("garbage", &keys, "i", "a", 0, 1_000),
            Err(TokenProblem::Malformed)
        );
    }

    #[test]
    fn a_valid_mac_does_not_make_an_overlong_token_valid() {
        let keys = keys();
        let (iss, aud) = ("http://127.0.0.1:10000", "http://127.0.0.1:10000/mcp");
        let t = issue(&claims(), &keys).unwrap();
        // exp - iat = 1000: fine with a TTL of 1000, too long for 999.
        assert!(verify(&t, &keys, iss, aud, 1_500, 1_000).is_ok());
        assert_eq!(
            verify(&t, &keys, iss, aud, 1_500, 999),
            Err(TokenProblem::LifetimeTooLong)
        );
        // A small exp - iat but an exp far beyond now + TTL: iat in the future.
        let future = AccessClaims {
            iat: 1_900,
            exp: 2_000,
            ..claims()
        };
        let t = issue(&future, &keys).unwrap();
        assert_eq!(
            verify(&t, &keys, iss, aud, 1_000, 1_000),
            Err(TokenProblem::LifetimeTooLong)
        );
        assert!(verify(&t, &keys, iss, aud, 1_850, 1_000).is_ok());
    }

    #[test]
    fn rotated_keys_still_verify() {
        let keys = keys();
        let old = issue(&claims(), &keys[1..]).unwrap();
        assert!(
            verify(
                &old,
                &keys,
                "http://127.0.0.1:10000",
                "http://127.0.0.1:10000/mcp",
                1_500,
                1_000
            )
            .is_ok()
        );
    }

    #[test]
    fn alg_none_and_other_algs_are_refused() {
        // {"alg":"none","typ":"at+jwt","kid":"k2"} . claims . (no signature)
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let h = b64.encode(br#"{"alg":"none","typ":"at+jwt","kid":"k2"}"#);
        let c = b64.encode(serde_json::to_vec(&claims()).unwrap());
        assert!(
            verify(
                &format!("{h}.{c}."),
                &keys(),
                "http://127.0.0.1:10000",
                "http://127.0.0.1:10000/mcp",
                1_500,
                1_000
            )
            .is_err()
        );
    }
}
