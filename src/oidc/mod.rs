//! Sign-in at the OpenID Connect identity provider: discovery, the
//! authorization-code exchange, ID token verification, userinfo.

use crate::secret::SecretText;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{ClientAuthMethod, IdentityProvider};
use crate::oauth::form;
use crate::oauth::records::User;
use crate::outbound::{CallResponse, OutboundCall};

/// Largest discovery document, JWKS, token or userinfo answer read.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;
/// Clock skew allowed on ID token times.
const LEEWAY_SECONDS: u64 = 60;

/// The parts of the OpenID Provider Metadata the filter uses (OIDC Discovery 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
}

pub fn discovery_call(idp: &IdentityProvider) -> OutboundCall {
    let mut call = OutboundCall {
        cluster: idp.discovery.cluster.clone(),
        headers: Vec::new(),
        body: Vec::new(),
        timeout_ms: idp.timeout_ms,
    };
    let scheme = if idp.discovery.url.starts_with("https:") {
        "https"
    } else {
        "http"
    };
    call.headers = vec![
        (":method".into(), "GET".into()),
        (":path".into(), idp.discovery.path.clone()),
        (":authority".into(), idp.discovery.authority.clone()),
        (":scheme".into(), scheme.into()),
        ("accept".into(), "application/json".into()),
    ];
    call
}

/// Parses discovery; the issuer must be the configured one (OIDC Discovery 4.3).
pub fn parse_discovery(idp: &IdentityProvider, answer: &CallResponse) -> Result<Discovery, String> {
    let doc: Discovery = json_answer(answer, "discovery document")?;
    if doc.issuer.trim_end_matches('/') != idp.issuer.trim_end_matches('/') {
        return Err(format!(
            "the discovery document's issuer {:?} is not the configured issuer {:?}",
            doc.issuer, idp.issuer
        ));
    }
    // The endpoints go into a Location header and into calls: only their
    // parsed form, and only if they carry no control characters.
    let clean = |name: &str, value: &str| -> Result<String, String> {
        match crate::untrusted_url::parse_clean(value) {
            Ok(url) if matches!(url.scheme(), "https" | "http") => Ok(url.to_string()),
            Ok(_) => Err(format!(
                "the discovery document's {name} is not an http(s) URL"
            )),
            Err(p) => Err(format!("the discovery document's {name} {p}")),
        }
    };
    Ok(Discovery {
        authorization_endpoint: clean("authorization_endpoint", &doc.authorization_endpoint)?,
        token_endpoint: clean("token_endpoint", &doc.token_endpoint)?,
        jwks_uri: clean("jwks_uri", &doc.jwks_uri)?,
        userinfo_endpoint: doc
            .userinfo_endpoint
            .as_deref()
            .map(|u| clean("userinfo_endpoint", u))
            .transpose()?,
        issuer: doc.issuer,
    })
}

pub fn authorization_url(
    idp: &IdentityProvider,
    discovery: &Discovery,
    redirect_uri: &str,
    state: &str,
    nonce: &str,
    code_challenge: &str,
) -> String {
    let scope = idp.scopes.join(" ");
    form::with_query(
        &discovery.authorization_endpoint,
        &[
            ("response_type", "code"),
            ("client_id", &idp.client_id),
            ("redirect_uri", redirect_uri),
            ("scope", &scope),
            ("state", state),
            ("nonce", nonce),
            ("code_challenge", code_challenge),
            ("code_challenge_method", "S256"),
        ],
    )
}

fn idp_call(idp: &IdentityProvider, method: &str, url: &str) -> Result<OutboundCall, String> {
    OutboundCall::new(method, url, &idp.discovery.cluster, idp.timeout_ms)
        .ok_or_else(|| format!("the identity provider endpoint {url:?} is not an http(s) URL"))
        .map(|c| c.header("accept", "application/json"))
}

/// The authorization-code exchange (OIDC Core 3.1.3.1), with PKCE.
pub fn token_call(
    idp: &IdentityProvider,
    discovery: &Discovery,
    code: &str,
    redirect_uri: &str,
    code_verifier: &str,
) -> Result<OutboundCall, String> {
    let mut params = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", code_verifier),
    ];
    let call = idp_call(idp, "POST", &discovery.token_endpoint)?;
    let secret = idp.client_secret.expose_str();
    Ok(match idp.token_endpoint_auth_method {
        ClientAuthMethod::ClientSecretBasic => call
            .header("authorization", basic_auth(&idp.client_id, secret))
            .form(form::encode(&params)),
        ClientAuthMethod::ClientSecretPost => {
            params.push(("client_id", &idp.client_id));
            params.push(("client_secret", secret));
            call.form(form::encode(&params))
        }
    })
}

/// RFC 6749 2.3.1: credentials are form-encoded before Basic encoding.
pub fn basic_auth(client_id: &str, secret: &str) -> String {
    use base64::Engine;
    let id = form::encode_component(client_id);
    let secret = form::encode_component(secret);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

#[derive(Debug, Clone, Deserialize)]
pub struct TokenAnswer {
    pub id_token: SecretText,
    #[serde(default)]
    pub access_token: Option<SecretText>,
}

pub fn parse_token_answer(answer: &CallResponse) -> Result<TokenAnswer, String> {
    if !answer.is_success() {
        let detail: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        return Err(
            match (answer.status, detail.get("error").and_then(Value::as_str)) {
                (0, _) => "the identity provider's token endpoint did not answer".to_string(),
                (status, Some(code)) => {
                    format!("the identity provider refused the code ({status} {code})")
                }
                (status, None) => {
                    format!("the identity provider's token endpoint answered {status}")
                }
            },
        );
    }
    json_answer(answer, "token answer")
}

pub fn jwks_call(idp: &IdentityProvider, discovery: &Discovery) -> Result<OutboundCall, String> {
    idp_call(idp, "GET", &discovery.jwks_uri)
}

pub fn parse_jwks(answer: &CallResponse) -> Result<JwkSet, String> {
    json_answer(answer, "JWKS")
}

pub fn userinfo_call(
    idp: &IdentityProvider,
    discovery: &Discovery,
    access_token: &str,
) -> Option<OutboundCall> {
    let url = discovery.userinfo_endpoint.as_deref()?;
    idp_call(idp, "GET", url)
        .ok()
        .map(|c| c.header("authorization", format!("Bearer {access_token}")))
}

pub fn parse_userinfo(answer: &CallResponse, sub: &str) -> Result<Map<String, Value>, String> {
    let claims: Map<String, Value> = json_answer(answer, "userinfo answer")?;
    // OIDC Core 5.3.2: the userinfo sub MUST match the ID token's.
    if claims.get("sub").and_then(Value::as_str) != Some(sub) {
        return Err("the userinfo answer is for another user".to_string());
    }
    Ok(claims)
}

/// Why an ID token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdTokenProblem {
    /// Signed with a key the cached JWKS lacks: fetch the JWKS again once.
    UnknownKey,
    Invalid(String),
}

/// Verifies an ID token (OIDC Core 3.1.3.7): RS256 or ES256 signature with
/// a key from the provider's JWKS, `iss`, `aud`, `exp`, `nonce`.
pub fn verify_id_token(
    id_token: &str,
    jwks: &JwkSet,
    idp: &IdentityProvider,
    issuer: &str,
    nonce: &str,
    now: u64,
) -> Result<Map<String, Value>, IdTokenProblem> {
    let invalid = |why: &str| IdTokenProblem::Invalid(why.to_string());
    let header =
        jsonwebtoken::decode_header(id_token).map_err(|_| invalid("the ID token is not a JWT"))?;
    let alg = header.alg;
    if !matches!(
        alg,
        Algorithm::RS256
            | Algorithm::ES256
            | Algorithm::PS256
            | Algorithm::ES384
            | Algorithm::RS384
            | Algorithm::RS512
    ) {
        return Err(invalid("the ID token's algorithm is not supported"));
    }
    let jwk = match &header.kid {
        Some(kid) => jwks.find(kid).ok_or(IdTokenProblem::UnknownKey)?,
        // Without a kid, a JWKS with exactly one key is unambiguous (OIDC Core 10.1).
        None if jwks.keys.len() == 1 => &jwks.keys[0],
        None => {
            return Err(invalid(
                "the ID token has no key id and the JWKS has several keys",
            ));
        }
    };
    let key = DecodingKey::from_jwk(jwk)
        .map_err(|_| invalid("the provider's signing key is unusable"))?;
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.set_audience(&[&idp.client_id]);
    validation.set_issuer(&[issuer]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<Map<String, Value>>(id_token, &key, &validation)
        .map_err(|e| IdTokenProblem::Invalid(format!("the ID token is invalid ({e})")))?;
    let claims = data.claims;
    let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
    if exp + LEEWAY_SECONDS <= now {
        return Err(invalid("the ID token has expired"));
    }
    if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
        return Err(invalid("the ID token's nonce does not match this sign-in"));
    }
    if claims
        .get("sub")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(invalid("the ID token has no subject"));
    }
    Ok(claims)
}

/// The user from ID token claims merged with userinfo claims.
pub fn user_from_claims(mut claims: Map<String, Value>, groups_claim: &str) -> User {
    let text =
        |c: &Map<String, Value>, k: &str| c.get(k).and_then(Value::as_str).map(str::to_string);
    let groups = match claims.get(groups_claim) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(s)) => s
            .split([',', ' '])
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    let user = User {
        sub: text(&claims, "sub").unwrap_or_default(),
        email: text(&claims, "email"),
        email_verified: claims.get("email_verified").and_then(Value::as_bool),
        name: text(&claims, "name").or_else(|| text(&claims, "preferred_username")),
        groups,
        claims: Map::new(),
    };
    // Keep the claims policy may name; drop token plumbing.
    for k in [
        "iss",
        "aud",
        "exp",
        "iat",
        "nbf",
        "nonce",
        "at_hash",
        "c_hash",
        "auth_time",
        "azp",
        "sid",
        "jti",
    ] {
        claims.remove(k);
    }
    User { claims, ..user }
}

fn json_answer<T: serde::de::DeserializeOwned>(
    answer: &CallResponse,
    what: &str,
) -> Result<T, String> {
    if answer.status == 0 {
        return Err(format!(
            "the identity provider did not answer (the {what} could not be fetched)"
        ));
    }
    if !answer.is_success() {
        return Err(format!(
            "the identity provider answered {} for the {what}",
            answer.status
        ));
    }
    if answer.body.len() > MAX_ANSWER_BYTES {
        return Err(format!("the identity provider's {what} is too large"));
    }
    serde_json::from_slice(&answer.body)
        .map_err(|e| format!("the identity provider's {what} is not valid JSON ({e})"))
}
