//! The browser session cookie and the consent page's CSRF token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::config::{KeyEntry, Route};
use crate::crypto;
use crate::env::Random;

const COOKIE_AAD: &[u8] = b"mcp-oauth-filter session cookie";

/// What the cookie carries, sealed: the session id and the user it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CookieValue {
    pub sid: String,
    pub sub: String,
}

/// `__Host-` on https (RFC 6265bis 4.1.3.2: Secure, Path=/, no Domain), so a
/// sibling host can't plant it; plain name on http (loopback demos).
pub fn cookie_name(route: &Route) -> &'static str {
    if route.origin.starts_with("https:") {
        "__Host-mcpof_session"
    } else {
        "mcpof_session"
    }
}

pub fn set_cookie(
    route: &Route,
    value: &CookieValue,
    key: &KeyEntry,
    max_age: u64,
    random: &mut dyn Random,
) -> String {
    let json = serde_json::to_vec(value).unwrap_or_default();
    let sealed = URL_SAFE_NO_PAD.encode(crypto::seal(key, COOKIE_AAD, &json, random));
    let secure = if route.origin.starts_with("https:") {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{}={sealed}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}",
        cookie_name(route)
    )
}

/// Reads and opens the session cookie from a `Cookie` header.
pub fn read_cookie(
    route: &Route,
    cookie_header: Option<&str>,
    keys: &[KeyEntry],
) -> Option<CookieValue> {
    let name = cookie_name(route);
    let raw = cookie_header?
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)?;
    let sealed = URL_SAFE_NO_PAD.decode(raw).ok()?;
    let json = crypto::open(keys, COOKIE_AAD, &sealed)?;
    serde_json::from_slice(&json).ok()
}

const LOGIN_STATE_AAD: &[u8] = b"mcp-oauth-filter login state";

/// The sign-in cookie: ties the identity provider's redirect back to the
/// browser that started the sign-in (no login CSRF, RFC 6749 10.12).
pub fn login_cookie_name(route: &Route) -> &'static str {
    if route.origin.starts_with("https:") {
        "__Host-mcpof_login"
    } else {
        "mcpof_login"
    }
}

pub fn set_login_cookie(route: &Route, value: &str, max_age: u64) -> String {
    let secure = if route.origin.starts_with("https:") {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}",
        login_cookie_name(route)
    )
}

pub fn read_login_cookie(route: &Route, cookie_header: Option<&str>) -> Option<String> {
    let name = login_cookie_name(route);
    cookie_header?
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_string())
}

/// The OIDC `state`: the sign-in in progress, sealed (and so opaque and
/// unforgeable), so the filter stores nothing until the user has signed in.
pub fn seal_state(
    login: &crate::oauth::records::Login,
    key: &KeyEntry,
    random: &mut dyn Random,
) -> String {
    let json = serde_json::to_vec(login).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(crypto::seal(key, LOGIN_STATE_AAD, &json, random))
}

pub fn open_state(state: &str, keys: &[KeyEntry]) -> Option<crate::oauth::records::Login> {
    let sealed = URL_SAFE_NO_PAD.decode(state).ok()?;
    serde_json::from_slice(&crypto::open(keys, LOGIN_STATE_AAD, &sealed)?).ok()
}

/// The consent form's CSRF token: bound to the browser session and the
/// pending request, so a forged form post from another site fails.
pub fn csrf_token(key: &KeyEntry, sid: &str, pending: &str) -> String {
    URL_SAFE_NO_PAD.encode(crypto::hmac_sha256(
        key.key.expose(),
        format!("csrf|{sid}|{pending}").as_bytes(),
    ))
}

pub fn csrf_matches(keys: &[KeyEntry], sid: &str, pending: &str, presented: &str) -> bool {
    keys.iter().any(|k| {
        crate::secret::constant_time_eq(
            csrf_token(k, sid, pending).as_bytes(),
            presented.as_bytes(),
        )
    })
}
