//! The token endpoint (RFC 6749 3.2, 4.1.3, 6; OAuth 2.1 4.3), revocation
//! (RFC 7009) and registration (RFC 7591).

use base64::Engine;
use serde_json::{Value, json};

use super::{Ctx, Outcome, RequestHead};
use crate::config::Route;
use crate::crypto;
use crate::oauth::access_token::{self, AccessClaims};
use crate::oauth::clients::{self, store_error};
use crate::oauth::error::OAuthError;
use crate::oauth::form::Params;
use crate::oauth::records::{Client, ClientAuth, CodeGrant, Grant, ns};
use crate::reply::Reply;
use crate::store::StoreError;

/// The client as authenticated at the token or revocation endpoint.
struct Authenticated {
    client_id: String,
    /// The client may use refresh tokens.
    refresh: bool,
}

/// Client authentication (RFC 6749 2.3.1): HTTP Basic, or the secret in the
/// body, or for public clients just `client_id`. Mixing methods is refused.
fn authenticate_client(
    ctx: &mut Ctx<'_>,
    head: &RequestHead,
    params: &Params,
) -> Result<Authenticated, OAuthError> {
    let basic = match head.header("authorization") {
        Some(value) => Some(parse_basic(value).ok_or_else(|| {
            OAuthError::invalid_client(
                "the Authorization header is not valid HTTP Basic credentials",
            )
        })?),
        None => None,
    };
    let (client_id, secret, method) = match (&basic, params.get("client_secret")) {
        (Some(_), Some(_)) => {
            return Err(OAuthError::invalid_request(
                "use one client authentication method, not two",
            ));
        }
        (Some((id, secret)), None) => {
            if params.get("client_id").is_some_and(|b| b != id) {
                return Err(OAuthError::invalid_client(
                    "client_id in the body differs from the Basic credentials",
                ));
            }
            (
                id.clone(),
                Some(secret.clone()),
                ClientAuth::ClientSecretBasic,
            )
        }
        (None, secret) => (
            params.require("client_id")?.to_string(),
            secret.map(str::to_string),
            if secret.is_some() {
                ClientAuth::ClientSecretPost
            } else {
                ClientAuth::None
            },
        ),
    };
    let client = find_client(ctx, &client_id)?
        .ok_or_else(|| OAuthError::invalid_client("unknown client; register again"))?;
    match (client.auth, method, secret) {
        (ClientAuth::None, ClientAuth::None, None) => {}
        (registered, used, Some(secret))
            if registered == used && registered != ClientAuth::None =>
        {
            if !clients::secret_matches(&client, &secret) {
                return Err(OAuthError::invalid_client("client authentication failed"));
            }
        }
        (registered, _, _) => {
            return Err(OAuthError::invalid_client(format!(
                "this client authenticates with {}",
                registered.as_str()
            )));
        }
    }
    Ok(Authenticated {
        refresh: client.grant_types.iter().any(|g| g == "refresh_token"),
        client_id,
    })
}

fn find_client(ctx: &mut Ctx<'_>, client_id: &str) -> Result<Option<Client>, OAuthError> {
    if clients::is_document_url(client_id) {
        // A metadata-document client is public; its document was checked at /authorize,
        // and the code or grant it presents is bound to its client_id.
        let cached = ctx
            .vault()
            .get::<Client>(
                ns::CLIENT_DOCUMENT,
                &crypto::sha256_b64url(client_id.as_bytes()),
            )
            .map_err(store_error)?;
        return Ok(Some(cached.map(|c| c.value).unwrap_or_else(|| Client {
            client_id: client_id.to_string(),
            redirect_uris: Vec::new(),
            auth: ClientAuth::None,
            grant_types: vec!["authorization_code".into(), "refresh_token".into()],
            client_name: None,
            client_uri: None,
            scope: None,
            secret_hash: None,
            verified_document: true,
            issued_at: 0,
            last_used: 0,
        })));
    }
    let expiry = ctx
        .config()
        .authorization_server
        .dynamic_registration
        .unused_expiry_seconds;
    let now = ctx.now;
    clients::registered(&mut ctx.vault(), client_id, expiry, now)
}

/// RFC 6749 2.3.1: Basic credentials are form-encoded before base64.
fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("v={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((unescape(id)?, unescape(secret)?))
}

fn no_store(reply: Reply) -> Reply {
    reply
        .header("cache-control", "no-store")
        .header("pragma", "no-cache")
}

/// `POST /.oauth/token`.
pub(super) fn token(ctx: &mut Ctx<'_>, route: &Route, head: &RequestHead, body: &[u8]) -> Outcome {
    match try_token(ctx, route, head, body) {
        Ok(answer) => no_store(Reply::json(200, &answer)).into(),
        Err(e) => {
            // (A store error was logged where it happened, if it was one.)
            if e.code != "temporarily_unavailable" {
                ctx.info(format!("token request refused: {e}"));
            }
            e.into()
        }
    }
}

fn try_token(
    ctx: &mut Ctx<'_>,
    route: &Route,
    head: &RequestHead,
    body: &[u8],
) -> Result<Value, OAuthError> {
    if !head.header("content-type").is_some_and(|c| {
        c.to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    }) {
        return Err(OAuthError::invalid_request(
            "the token request must be application/x-www-form-urlencoded",
        ));
    }
    let params = Params::parse(body)?;
    let grant_type = params.require("grant_type")?.to_string();
    let client = authenticate_client(ctx, head, &params)?;
    match grant_type.as_str() {
        "authorization_code" => redeem_code(ctx, route, &params, &client),
        "refresh_token" => refresh(ctx, route, &params, &client),
        other => Err(OAuthError::unsupported_grant_type(format!(
            "grant_type {other:?} is not supported; use authorization_code or refresh_token"
        ))),
    }
}

fn redeem_code(
    ctx: &mut Ctx<'_>,
    route: &Route,
    params: &Params,
    client: &Authenticated,
) -> Result<Value, OAuthError> {
    let code = params.require("code")?;
    let code_key = crypto::sha256_b64url(code.as_bytes());
    let found = ctx
        .vault()
        .get::<CodeGrant>(ns::CODE, &code_key)
        .map_err(store_error)?
        .ok_or_else(|| OAuthError::invalid_grant("the authorization code is unknown or expired"))?;
    let record = found.value.clone();
    if let Some(gid) = &record.redeemed_by {
        // RFC 6749 4.1.2: a code used twice revokes what it was used for.
        revoke_grant(ctx, gid);
        return Err(OAuthError::invalid_grant(
            "the authorization code was already used; the tokens issued for it are revoked",
        ));
    }
    if record.client_id != client.client_id {
        return Err(OAuthError::invalid_grant(
            "the authorization code was issued to another client",
        ));
    }
    if params
        .get("redirect_uri")
        .is_some_and(|r| r != record.redirect_uri)
    {
        return Err(OAuthError::invalid_grant(
            "redirect_uri differs from the authorization request's",
        ));
    }
    let verifier = params
        .get("code_verifier")
        .ok_or_else(|| OAuthError::invalid_request("code_verifier is required (PKCE)"))?;
    if !crypto::pkce_s256_matches(verifier, &record.code_challenge) {
        return Err(OAuthError::invalid_grant(
            "the code_verifier does not match the code_challenge (PKCE)",
        ));
    }
    if params.get("resource").is_some_and(|r| r != record.resource) {
        return Err(OAuthError::invalid_target(
            "the resource differs from the one this code was issued for",
        ));
    }
    let target = ctx
        .config()
        .route(&record.route)
        .filter(|r| r.origin == route.origin)
        .ok_or_else(|| OAuthError::invalid_grant("the code's MCP server is not served here"))?;
    let gid = ctx.token(16);
    // Mark the code used before issuing anything: of two concurrent redemptions one wins.
    let mut used = record.clone();
    used.redeemed_by = Some(gid.clone());
    let ttl = found.expires_at.saturating_sub(ctx.now).max(1);
    match ctx.vault().put(ns::CODE, &code_key, &used, ttl, found.cas) {
        Ok(()) => {}
        Err(StoreError::CasMismatch) => {
            return Err(OAuthError::invalid_grant(
                "the authorization code was already used",
            ));
        }
        Err(e) => return Err(store_error(e)),
    }
    let refresh_secret = ctx.token(32);
    let refresh_token = format!("{gid}.{refresh_secret}");
    let mut grant = Grant {
        user: record.user,
        client_id: record.client_id,
        route: target.name.clone(),
        resource: record.resource,
        scope: record.scope,
        current_refresh: crypto::sha256_b64url(refresh_token.as_bytes()),
        previous_refresh: None,
        retired_refresh: Vec::new(),
        rotated_at: ctx.now,
        last_answer: None,
        revoked: false,
    };
    let answer = token_answer(
        ctx,
        target,
        &grant,
        &gid,
        client.refresh.then_some(refresh_token.as_str()),
    )?;
    grant.last_answer = None;
    let ttl = ctx.config().authorization_server.refresh_token_ttl_seconds;
    ctx.vault()
        .put(ns::GRANT, &gid, &grant, ttl, 0)
        .map_err(store_error)?;
    ctx.info(format!(
        "issued tokens: user {} client {} route {}",
        grant.user.sub, grant.client_id, grant.route
    ));
    Ok(answer)
}

fn token_answer(
    ctx: &mut Ctx<'_>,
    route: &Route,
    grant: &Grant,
    gid: &str,
    refresh_token: Option<&str>,
) -> Result<Value, OAuthError> {
    let ttl = ctx.config().authorization_server.access_token_ttl_seconds;
    let claims = AccessClaims {
        iss: route.origin.clone(),
        aud: route.resource.clone(),
        sub: grant.user.sub.clone(),
        exp: ctx.now + ttl,
        iat: ctx.now,
        jti: ctx.token(12),
        client_id: grant.client_id.clone(),
        scope: grant.scope.clone(),
        gid: gid.to_string(),
    };
    let access = access_token::issue(&claims, &ctx.config().keys.token_signing)
        .ok_or_else(|| OAuthError::server_error("could not sign the access token"))?;
    let mut answer = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ttl,
        "scope": grant.scope,
    });
    if let Some(rt) = refresh_token {
        answer["refresh_token"] = json!(rt);
    }
    Ok(answer)
}

/// The grant id of a refresh token (`<gid>.<secret>`).
fn grant_id_of(refresh_token: &str) -> Option<&str> {
    let (gid, secret) = refresh_token.split_once('.')?;
    (!gid.is_empty() && !secret.is_empty()).then_some(gid)
}

fn refresh(
    ctx: &mut Ctx<'_>,
    route: &Route,
    params: &Params,
    client: &Authenticated,
) -> Result<Value, OAuthError> {
    if !client.refresh {
        return Err(OAuthError::unauthorized_client(
            "this client did not register the refresh_token grant",
        ));
    }
    let presented = params.require("refresh_token")?;
    let unknown = || OAuthError::invalid_grant("the refresh token is unknown, expired or revoked");
    let gid = grant_id_of(presented).ok_or_else(unknown)?.to_string();
    let presented_hash = crypto::sha256_b64url(presented.as_bytes());
    let grace = ctx
        .config()
        .authorization_server
        .refresh_reuse_grace_seconds;
    let ttl = ctx.config().authorization_server.refresh_token_ttl_seconds;
    // CAS loop: of two concurrent refreshes, one rotates; the other sees the
    // rotation and, within the grace, gets the same answer.
    for _ in 0..4 {
        let found = ctx
            .vault()
            .get::<Grant>(ns::GRANT, &gid)
            .map_err(store_error)?
            .ok_or_else(unknown)?;
        let mut grant = found.value;
        if grant.revoked {
            return Err(unknown());
        }
        if grant.client_id != client.client_id {
            return Err(OAuthError::invalid_grant(
                "the refresh token was issued to another client",
            ));
        }
        if params.get("resource").is_some_and(|r| r != grant.resource) {
            return Err(OAuthError::invalid_target(
                "the resource differs from the one this grant is for",
            ));
        }
        let not_granted = params.get("scope").and_then(|scope| {
            scope
                .split(' ')
                .filter(|s| !s.is_empty())
                .find(|s| !grant.scope.split(' ').any(|g| g == *s))
        });
        if let Some(bad) = not_granted {
            return Err(OAuthError::invalid_scope(format!(
                "the scope {bad:?} was not granted"
            )));
        }
        if crate::secret::constant_time_eq(
            grant.current_refresh.as_bytes(),
            presented_hash.as_bytes(),
        ) {
            let target = ctx
                .config()
                .route(&grant.route)
                .filter(|r| r.origin == route.origin)
                .ok_or_else(|| {
                    OAuthError::invalid_grant("the grant's MCP server is not served here")
                })?;
            let new_refresh = format!("{gid}.{}", ctx.token(32));
            let answer = token_answer(ctx, target, &grant, &gid, Some(&new_refresh))?;
            if let Some(older) = grant.previous_refresh.take() {
                grant.retired_refresh.push(older);
                let excess = grant
                    .retired_refresh
                    .len()
                    .saturating_sub(RETIRED_REFRESH_KEPT);
                grant.retired_refresh.drain(..excess);
            }
            grant.previous_refresh = Some(std::mem::replace(
                &mut grant.current_refresh,
                crypto::sha256_b64url(new_refresh.as_bytes()),
            ));
            grant.rotated_at = ctx.now;
            grant.last_answer = (grace > 0).then(|| answer.clone());
            match ctx.vault().put(ns::GRANT, &gid, &grant, ttl, found.cas) {
                Ok(()) => return Ok(answer),
                Err(StoreError::CasMismatch) => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
        let is_previous = grant.previous_refresh.as_deref().is_some_and(|p| {
            crate::secret::constant_time_eq(p.as_bytes(), presented_hash.as_bytes())
        });
        if is_previous
            && ctx.now.saturating_sub(grant.rotated_at) <= grace
            && let Some(answer) = grant.last_answer.clone()
        {
            return Ok(answer);
        }
        let is_retired = is_previous
            || grant
                .retired_refresh
                .iter()
                .any(|h| crate::secret::constant_time_eq(h.as_bytes(), presented_hash.as_bytes()));
        if !is_retired {
            // Never issued: a guess (the grant id is no secret), not a replay. No side effects.
            return Err(unknown());
        }
        // OAuth 2.1 4.3.1: a rotated refresh token used again means it leaked: revoke the family.
        ctx.warn(format!(
            "refresh token reuse: grant of user {} client {} revoked",
            grant.user.sub, grant.client_id
        ));
        revoke_grant(ctx, &gid);
        return Err(OAuthError::invalid_grant(
            "the refresh token was already used; every token of this grant is revoked, sign in again",
        ));
    }
    Err(OAuthError::temporarily_unavailable(
        "the grant is changing too fast; try again",
    ))
}

/// How many rotated refresh tokens a grant remembers, to tell a replay from a guess.
const RETIRED_REFRESH_KEPT: usize = 16;

/// Marks a grant revoked: its refresh tokens and access tokens stop working.
fn revoke_grant(ctx: &mut Ctx<'_>, gid: &str) {
    let result = ctx.vault().update::<Grant, _>(ns::GRANT, gid, |g| {
        g.filter(|g| !g.revoked).map(|mut g| {
            g.revoked = true;
            g.last_answer = None;
            (g, 86_400)
        })
    });
    if let Err(e) = result {
        ctx.error(format!("could not revoke a grant: {e}"));
    }
}

/// `POST /.oauth/revoke` (RFC 7009): always 200 for a valid request.
///
/// The token is checked exactly as the token endpoint checks it: a refresh
/// token must be the grant's live one (its hash, not just its grant id,
/// which every access token shows), an access token must carry a valid MAC.
/// Anything else is an unknown token, a no-op (RFC 7009 2.2).
pub(super) fn revoke(ctx: &mut Ctx<'_>, route: &Route, head: &RequestHead, body: &[u8]) -> Outcome {
    let result = (|| -> Result<(), OAuthError> {
        let params = Params::parse(body)?;
        let client = authenticate_client(ctx, head, &params)?;
        let token = params.require("token")?;
        let gid = match live_refresh_grant(ctx, token)? {
            Some(gid) => Some(gid),
            None => ctx
                .config()
                .routes
                .iter()
                .filter(|r| r.origin == route.origin)
                .find_map(|r| {
                    access_token::verify(
                        token,
                        &ctx.config().keys.token_signing,
                        &r.origin,
                        &r.resource,
                        ctx.now,
                        ctx.config().authorization_server.access_token_ttl_seconds,
                    )
                    .ok()
                })
                .map(|c| c.gid),
        };
        if let Some(gid) = gid {
            let owned = ctx
                .vault()
                .get::<Grant>(ns::GRANT, &gid)
                .map_err(store_error)?;
            // RFC 7009 2.1: only the client the token was issued to may revoke it.
            if owned.is_some_and(|g| g.value.client_id == client.client_id) {
                revoke_grant(ctx, &gid);
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => no_store(Reply::new(200)).into(),
        Err(e) => e.into(),
    }
}

/// The grant whose live refresh token `token` is: the current one, or the
/// previous one within the reuse grace (a client that missed the rotation's
/// answer still holds it). `None` for anything else.
fn live_refresh_grant(ctx: &mut Ctx<'_>, token: &str) -> Result<Option<String>, OAuthError> {
    let Some(gid) = grant_id_of(token).filter(|_| token.matches('.').count() == 1) else {
        return Ok(None);
    };
    let Some(found) = ctx
        .vault()
        .get::<Grant>(ns::GRANT, gid)
        .map_err(store_error)?
    else {
        return Ok(None);
    };
    let grant = found.value;
    let presented = crypto::sha256_b64url(token.as_bytes());
    let same = |h: &str| crate::secret::constant_time_eq(h.as_bytes(), presented.as_bytes());
    let grace = ctx
        .config()
        .authorization_server
        .refresh_reuse_grace_seconds;
    let live = same(&grant.current_refresh)
        || grant.previous_refresh.as_deref().is_some_and(same)
            && ctx.now.saturating_sub(grant.rotated_at) <= grace;
    Ok((live && !grant.revoked).then(|| gid.to_string()))
}

/// `POST /.oauth/register`.
pub(super) fn register(ctx: &mut Ctx<'_>, head: &RequestHead, body: &[u8]) -> Outcome {
    let source = crate::source_address::quota_key(head.downstream_address.as_deref());
    let now = ctx.now;
    let filter = ctx.filter;
    let fresh = clients::Fresh {
        id: ctx.token(16),
        secret: ctx.token(32),
    };
    clients::register(
        body,
        &filter.config,
        &mut ctx.vault(),
        now,
        fresh,
        source.as_deref(),
    )
    .into()
}
