//! The OAuth2 client side towards an upstream provider (GitHub, Google,
//! Notion...): the authorization URL, the token calls, and reading their
//! answers, including the providers' deviations from RFC 6749.

use crate::secret::SecretText;
use serde_json::{Map, Value};

use crate::config::UpstreamOAuth2;
use crate::oauth::form;
use crate::oidc::basic_auth;
use crate::outbound::{CallResponse, OutboundCall};

/// Where the client credentials go on a given attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CredentialsIn {
    /// HTTP Basic with form-encoded credentials (RFC 6749 2.3.1).
    Header,
    /// `client_id` and `client_secret` in the form body.
    Body,
}

/// A token the provider issued (RFC 6749 5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub access_token: SecretText,
    pub refresh_token: Option<SecretText>,
    /// Absent: the token does not expire (GitHub OAuth Apps' classic tokens).
    pub expires_in: Option<u64>,
    pub scope: Option<String>,
}

/// Why a token call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCallError {
    /// The provider refused the grant (RFC 6749 5.2 `invalid_grant` and the
    /// like): the user must consent again.
    Refused {
        error: String,
        description: Option<String>,
    },
    /// The provider refused the client's credentials (`401`, `invalid_client`).
    ClientAuthentication(String),
    /// No usable answer: down, timing out, `5xx`, or garbage. Try later.
    Unavailable(String),
}

impl std::fmt::Display for TokenCallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenCallError::Refused { error, description } => {
                write!(f, "the provider refused the grant ({error}")?;
                if let Some(d) = description {
                    write!(f, ": {d}")?;
                }
                f.write_str(")")
            }
            TokenCallError::ClientAuthentication(why) => {
                write!(f, "the provider refused the client credentials ({why})")
            }
            TokenCallError::Unavailable(why) => {
                write!(f, "the provider's token endpoint is unavailable ({why})")
            }
        }
    }
}

/// Parameters of the authorization request that the filter sets itself and
/// `authorization_url_params` can't replace.
pub fn authorization_url(
    up: &UpstreamOAuth2,
    redirect_uri: &str,
    state: &str,
    code_challenge: &str,
) -> String {
    let scope = up.scopes.join(" ");
    let mut params: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", &up.client_id),
        ("redirect_uri", redirect_uri),
        ("state", state),
        ("code_challenge", code_challenge),
        ("code_challenge_method", "S256"),
    ];
    if !scope.is_empty() {
        params.push(("scope", &scope));
    }
    for (k, v) in &up.authorization_url_params {
        params.push((k, v));
    }
    form::with_query(&up.auth_url, &params)
}

fn token_call<'a>(
    up: &'a UpstreamOAuth2,
    mut params: Vec<(&'a str, &'a str)>,
    credentials: CredentialsIn,
) -> OutboundCall {
    let secret = up.client_secret.expose_str();
    let mut call = OutboundCall {
        cluster: up.token.cluster.clone(),
        headers: vec![
            (":method".into(), "POST".into()),
            (":path".into(), up.token.path.clone()),
            (":authority".into(), up.token.authority.clone()),
            (
                ":scheme".into(),
                if up.token.url.starts_with("https:") {
                    "https"
                } else {
                    "http"
                }
                .into(),
            ),
            // GitHub answers form-encoded unless asked for JSON.
            ("accept".into(), "application/json".into()),
        ],
        body: Vec::new(),
        timeout_ms: up.timeout_ms,
    };
    match credentials {
        CredentialsIn::Header => {
            call.headers
                .push(("authorization".into(), basic_auth(&up.client_id, secret)));
        }
        CredentialsIn::Body => {
            params.push(("client_id", &up.client_id));
            params.push(("client_secret", secret));
        }
    }
    call.form(form::encode(&params))
}

pub fn code_call(
    up: &UpstreamOAuth2,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
    credentials: CredentialsIn,
) -> OutboundCall {
    token_call(
        up,
        vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ],
        credentials,
    )
}

pub fn refresh_call(
    up: &UpstreamOAuth2,
    refresh_token: &str,
    credentials: CredentialsIn,
) -> OutboundCall {
    let mut call = token_call(
        up,
        vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
        credentials,
    );
    // A refresh has its own, longer timeout: abandoned early, the provider's
    // rotated refresh token would be lost with its answer.
    call.timeout_ms = up.refresh_timeout_ms;
    call
}

/// Reads a token answer: JSON, or GitHub's form encoding; errors as RFC 6749
/// 5.2 JSON or GitHub's `200` with `error=...`.
pub fn parse_answer(answer: &CallResponse) -> Result<IssuedToken, TokenCallError> {
    if answer.status == 0 {
        return Err(TokenCallError::Unavailable(
            "no answer (timeout or connection failure)".into(),
        ));
    }
    // Server trouble or "slow down" (RFC 9110 15.5.9, RFC 6585 4): never a
    // verdict on the grant, whatever the body says.
    if answer.status >= 500 || matches!(answer.status, 408 | 425 | 429) {
        return Err(TokenCallError::Unavailable(format!(
            "HTTP {}",
            answer.status
        )));
    }
    let fields = read_fields(answer);
    let text = |k: &str| fields.get(k).and_then(value_text);
    if let Some(error) = text("error") {
        let description = text("error_description");
        // GitHub: incorrect_client_credentials; RFC 6749: invalid_client.
        if error == "invalid_client"
            || error == "incorrect_client_credentials"
            || error == "unauthorized_client" && answer.status == 401
        {
            return Err(TokenCallError::ClientAuthentication(error));
        }
        // Errors that say "not now" (RFC 6749 4.1.2.1, RFC 8628 3.5, and
        // providers' own rate-limit codes): try again later, keep the grant.
        if matches!(
            error.as_str(),
            "temporarily_unavailable" | "server_error" | "slow_down" | "rate_limit_exceeded"
        ) {
            return Err(TokenCallError::Unavailable(format!(
                "the provider answered {error}"
            )));
        }
        return Err(TokenCallError::Refused { error, description });
    }
    if answer.status == 401 {
        return Err(TokenCallError::ClientAuthentication("HTTP 401".into()));
    }
    if !answer.is_success() {
        // Only an OAuth error code (above) says the grant is gone. A 4xx
        // without one (429 rate limit, 408, a proxy's 403) is no verdict on
        // the refresh token: try again later rather than forget it.
        return Err(TokenCallError::Unavailable(format!(
            "HTTP {} without an OAuth error",
            answer.status
        )));
    }
    let access_token = text("access_token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| TokenCallError::Unavailable("the answer has no access_token".into()))?;
    // RFC 6749 7.1: the type is case-insensitive; GitHub says "bearer".
    if let Some(kind) = text("token_type").filter(|k| !k.eq_ignore_ascii_case("bearer")) {
        return Err(TokenCallError::Unavailable(format!(
            "token_type {kind:?} is not bearer"
        )));
    }
    let expires_in = match fields.get("expires_in") {
        Some(Value::Number(n)) => n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|&e| e > 0);
    Ok(IssuedToken {
        access_token: access_token.into(),
        refresh_token: text("refresh_token")
            .filter(|t| !t.is_empty())
            .map(SecretText::from),
        expires_in,
        // GitHub separates scopes with commas.
        scope: text("scope").map(|s| s.replace(',', " ")),
    })
}

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn read_fields(answer: &CallResponse) -> Map<String, Value> {
    let content_type = answer
        .header("content-type")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let as_json = || serde_json::from_slice::<Map<String, Value>>(&answer.body).ok();
    let as_form = || -> Map<String, Value> {
        url::form_urlencoded::parse(&answer.body)
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect()
    };
    if content_type.contains("x-www-form-urlencoded") {
        as_form()
    } else {
        as_json().unwrap_or_else(|| {
            if content_type.contains("json") {
                Map::new()
            } else {
                as_form()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u32, content_type: &str, body: &str) -> CallResponse {
        CallResponse::from_parts(
            vec![
                (":status".into(), status.to_string()),
                ("content-type".into(), content_type.into()),
            ],
            body.as_bytes().to_vec(),
        )
    }

    #[test]
    fn json_answers() {
        let t = parse_answer(&answer(200, "application/json", r#"{"access_token":"a","token_type":"Bearer","expires_in":3599,"refresh_token":"r","scope":"x y"}"#)).unwrap();
        assert_eq!(
            t,
            IssuedToken {
                access_token: "a".into(),
                refresh_token: Some("r".into()),
                expires_in: Some(3599),
                scope: Some("x y".into())
            }
        );
        // Google on refresh: no new refresh token.
        let t = parse_answer(&answer(
            200,
            "application/json",
            r#"{"access_token":"b","token_type":"Bearer","expires_in":"60"}"#,
        ))
        .unwrap();
        assert_eq!((t.refresh_token, t.expires_in), (None, Some(60)));
    }

    #[test]
    fn github_quirks() {
        let t = parse_answer(&answer(200, "application/x-www-form-urlencoded; charset=utf-8", "access_token=ghu_1&expires_in=28800&refresh_token=ghr_1&scope=repo%2Cread%3Auser&token_type=bearer")).unwrap();
        assert_eq!(t.scope.as_deref(), Some("repo read:user"));
        assert_eq!(t.expires_in, Some(28800));
        // Classic OAuth App token: never expires, no refresh token.
        let t = parse_answer(&answer(
            200,
            "application/json",
            r#"{"access_token":"gho_1","token_type":"bearer","scope":""}"#,
        ))
        .unwrap();
        assert_eq!((t.expires_in, t.refresh_token), (None, None));
        // Errors come as HTTP 200.
        let e = parse_answer(&answer(200, "application/x-www-form-urlencoded", "error=bad_refresh_token&error_description=The+refresh+token+passed+is+incorrect+or+expired.")).unwrap_err();
        assert!(
            matches!(e, TokenCallError::Refused { ref error, .. } if error == "bad_refresh_token")
        );
        let e = parse_answer(&answer(
            200,
            "application/json",
            r#"{"error":"incorrect_client_credentials"}"#,
        ))
        .unwrap_err();
        assert!(matches!(e, TokenCallError::ClientAuthentication(_)));
    }

    #[test]
    fn standard_errors_and_outages() {
        let e = parse_answer(&answer(
            400,
            "application/json",
            r#"{"error":"invalid_grant","error_description":"grant revoked"}"#,
        ))
        .unwrap_err();
        assert!(matches!(e, TokenCallError::Refused { ref error, .. } if error == "invalid_grant"));
        assert!(matches!(
            parse_answer(&answer(
                401,
                "application/json",
                r#"{"error":"invalid_client"}"#
            )),
            Err(TokenCallError::ClientAuthentication(_))
        ));
        assert!(matches!(
            parse_answer(&answer(401, "text/plain", "nope")),
            Err(TokenCallError::ClientAuthentication(_))
        ));
        assert!(matches!(
            parse_answer(&answer(503, "text/plain", "down")),
            Err(TokenCallError::Unavailable(_))
        ));
        // "Not now", with or without an OAuth error, keeps the grant.
        for (status, body) in [
            (429, r#"{"error":"rate_limit_exceeded"}"#),
            (429, r#"{"error":"invalid_grant"}"#),
            (400, r#"{"error":"slow_down"}"#),
            (400, r#"{"error":"temporarily_unavailable"}"#),
            (200, r#"{"error":"server_error"}"#),
        ] {
            assert!(
                matches!(
                    parse_answer(&answer(status, "application/json", body)),
                    Err(TokenCallError::Unavailable(_))
                ),
                "{status} {body}"
            );
        }
        // A 4xx without an OAuth error is no verdict on the grant.
        for status in [408, 429, 403] {
            assert!(matches!(
                parse_answer(&answer(status, "text/html", "<h1>busy</h1>")),
                Err(TokenCallError::Unavailable(_))
            ));
        }
        assert!(matches!(
            parse_answer(&CallResponse::failed()),
            Err(TokenCallError::Unavailable(_))
        ));
        assert!(matches!(
            parse_answer(&answer(
                200,
                "application/json",
                r#"{"access_token":"a","token_type":"mac"}"#
            )),
            Err(TokenCallError::Unavailable(_))
        ));
        assert!(matches!(
            parse_answer(&answer(200, "text/html", "<html>")),
            Err(TokenCallError::Unavailable(_))
        ));
    }
}
