//! `/authorize`, sign-in at the identity provider, the callback, and the
//! consent page: everything between a client's authorization request and
//! the code it gets back (RFC 6749 4.1, OIDC Core 3.1, MCP authorization).

use jsonwebtoken::jwk::JwkSet;
use serde_json::{Map, Value};

use super::{Ctx, Outcome, RequestHead, route_for_resource, upstream};
use crate::config::Route;
use crate::crypto;
use crate::maintenance::IDP_CACHE_SECONDS;
use crate::oauth::clients;
use crate::oauth::error::OAuthError;
use crate::oauth::form::{self, Params};
use crate::oauth::pages::{self, ConsentView};
use crate::oauth::records::{
    Client, CodeGrant, Consent, Login, PendingAuthorization, Session, User, ns,
};
use crate::oauth::redirect_uri;
use crate::oauth::session::{self, CookieValue};
use crate::oidc::{self, Discovery, IdTokenProblem};
use crate::outbound::{CallResponse, OutboundCall};
use crate::reply::Reply;
use crate::routing::endpoints;

/// How long a pending authorization or a sign-in in progress may take.
const PENDING_TTL_SECONDS: u64 = 600;
/// How long a remembered consent lasts.
const CONSENT_TTL_SECONDS: u64 = 90 * 86_400;

/// What a request waits for while an outside call is out.
#[derive(Debug, Clone, PartialEq)]
pub enum Wait {
    /// `/authorize`: the client's metadata document.
    ClientDocument {
        request: AuthorizeParams,
        cookies: Option<String>,
    },
    /// The identity provider's discovery document, then `then`.
    Discovery { then: AfterDiscovery },
    /// The identity provider's answer to the code exchange.
    IdpToken { login: Login, discovery: Discovery },
    /// The identity provider's keys, to verify the ID token.
    Jwks {
        login: Login,
        discovery: Discovery,
        id_token: String,
        access_token: Option<String>,
    },
    /// Userinfo, for the claims the ID token lacks (email).
    Userinfo {
        login: Login,
        claims: Map<String, Value>,
    },
    /// The upstream provider's answer to the code exchange.
    UpstreamCode {
        login: crate::upstream::UpstreamLogin,
        code: String,
        credentials: crate::upstream::client::CredentialsIn,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum AfterDiscovery {
    RedirectToIdp { pending: Box<PendingAuthorization> },
    Exchange { login: Box<Login>, code: String },
}

/// The authorization request's parameters (RFC 6749 4.1.1, RFC 7636 4.3, RFC 8707 2).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuthorizeParams {
    client_id: Option<String>,
    redirect_uri: Option<String>,
    response_type: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    resource: Option<String>,
    scope: Option<String>,
}

impl AuthorizeParams {
    fn from_params(p: &Params) -> Self {
        let get = |k: &str| p.get(k).map(str::to_string);
        AuthorizeParams {
            client_id: get("client_id"),
            redirect_uri: get("redirect_uri"),
            response_type: get("response_type"),
            state: get("state"),
            code_challenge: get("code_challenge"),
            code_challenge_method: get("code_challenge_method"),
            resource: get("resource"),
            scope: get("scope"),
        }
    }
}

fn call_out(call: OutboundCall, wait: Wait) -> Outcome {
    Outcome::Call(call, Box::new(wait))
}

pub(super) fn redirect(location: &str) -> Reply {
    Reply::new(302)
        .header("location", location)
        .header("cache-control", "no-store")
}

/// An error sent back to the client's (validated) redirect URI, RFC 6749
/// 4.1.2.1, with RFC 9207 `iss`.
pub(super) fn redirect_error(
    redirect_uri: &str,
    error: &OAuthError,
    state: Option<&str>,
    issuer: &str,
) -> Reply {
    let mut params = vec![
        ("error", error.code),
        ("error_description", error.description.as_str()),
    ];
    if let Some(s) = state {
        params.push(("state", s));
    }
    params.push(("iss", issuer));
    redirect(&form::with_query(redirect_uri, &params))
}

/// A browser step the store could not serve: a page, and `Retry-After`.
pub(super) fn store_unavailable_page(e: crate::store::StoreError) -> Reply {
    if e != crate::store::StoreError::NotRead {
        log::warn!("a sign-in step could not use the store: {e}");
    }
    pages::error(
        503,
        "Temporarily unavailable",
        "The sign-in service cannot reach its store right now. Wait a moment, then reload this page.",
    )
    .header(
        "retry-after",
        crate::oauth::error::RETRY_UNAVAILABLE_SECONDS.to_string(),
    )
}

pub(super) fn bad_request_page(message: &str) -> Outcome {
    pages::error(400, "Authorization request refused", message).into()
}

/// `GET /.oauth/authorize`.
pub(super) fn authorize(ctx: &mut Ctx<'_>, route: &Route, head: &RequestHead) -> Outcome {
    let params = match Params::parse(head.query().as_bytes()) {
        Ok(p) => p,
        Err(e) => return bad_request_page(&e.description),
    };
    let request = AuthorizeParams::from_params(&params);
    let Some(client_id) = request.client_id.clone() else {
        return bad_request_page("The request names no client (client_id is missing).");
    };
    let settings = &ctx.config().authorization_server;
    if clients::is_document_url(&client_id) {
        let url = match clients::document_url(&client_id, &settings.metadata_documents) {
            Ok(url) => url,
            Err(e) => return bad_request_page(&e.description),
        };
        let cached = match ctx.vault().get::<Client>(
            ns::CLIENT_DOCUMENT,
            &crypto::sha256_b64url(client_id.as_bytes()),
        ) {
            Ok(c) => c,
            Err(e) => return store_unavailable_page(e).into(),
        };
        if let Some(client) = cached {
            return continue_authorize(ctx, route, request, client.value, head.cookies());
        }
        let docs = &settings.metadata_documents;
        let Some(call) = OutboundCall::new("GET", url.as_str(), &docs.cluster, docs.timeout_ms)
        else {
            return bad_request_page("The client_id URL can't be fetched.");
        };
        let call = call.header("accept", "application/json");
        return call_out(
            call,
            Wait::ClientDocument {
                request,
                cookies: head.cookies(),
            },
        );
    }
    let expiry = settings.dynamic_registration.unused_expiry_seconds;
    let now = ctx.now;
    match clients::registered(&mut ctx.vault(), &client_id, expiry, now) {
        Ok(Some(client)) => continue_authorize(ctx, route, request, client, head.cookies()),
        Ok(None) => bad_request_page(
            "This application is not registered with this server (unknown client_id). Registrations expire when unused; the application should register again.",
        ),
        Err(e) => e.into(),
    }
}

fn continue_authorize(
    ctx: &mut Ctx<'_>,
    route: &Route,
    request: AuthorizeParams,
    client: Client,
    cookies: Option<String>,
) -> Outcome {
    // Until the redirect URI is known to be the client's, errors go to the person, not to it.
    let redirect_uri = match &request.redirect_uri {
        Some(uri) if redirect_uri::matches(&client.redirect_uris, uri) => uri.clone(),
        Some(_) => {
            return bad_request_page(
                "The redirect_uri is not one this application registered, so the server will not send you there.",
            );
        }
        // Registered before redirect URIs had to be canonical? Checked again.
        None if client.redirect_uris.len() == 1
            && redirect_uri::registration_problem(&client.redirect_uris[0]).is_none() =>
        {
            client.redirect_uris[0].clone()
        }
        None if client.redirect_uris.len() == 1 => {
            return bad_request_page(
                "This application's registered redirect_uri is not valid; it should register again.",
            );
        }
        None => {
            return bad_request_page(
                "The request has no redirect_uri and the application registered several.",
            );
        }
    };
    let issuer = route.origin.clone();
    let state = request.state.clone();
    let back = |e: OAuthError| -> Outcome {
        redirect_error(&redirect_uri, &e, state.as_deref(), &issuer).into()
    };
    if request.response_type.as_deref() != Some("code") {
        return back(OAuthError::new(
            "unsupported_response_type",
            400,
            "response_type must be \"code\"",
        ));
    }
    if !client.grant_types.iter().any(|g| g == "authorization_code") {
        return back(OAuthError::unauthorized_client(
            "this client did not register the authorization_code grant",
        ));
    }
    let Some(challenge) = request.code_challenge.clone() else {
        return back(OAuthError::invalid_request(
            "PKCE is required: send code_challenge with code_challenge_method=S256",
        ));
    };
    if request.code_challenge_method.as_deref() != Some("S256") {
        return back(OAuthError::invalid_request(
            "code_challenge_method must be S256 (plain is not accepted)",
        ));
    }
    if challenge.len() != 43
        || !challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return back(OAuthError::invalid_request(
            "code_challenge must be the base64url SHA-256 of the verifier (43 characters)",
        ));
    }
    let config = ctx.config();
    let target = match &request.resource {
        Some(resource) => match route_for_resource(config, route, resource) {
            Some(r) => r,
            None => {
                return back(OAuthError::invalid_target(format!(
                    "the resource {resource:?} is not served by this authorization server"
                )));
            }
        },
        None => route,
    };
    let supported = &config.authorization_server.scopes_supported;
    let scope = match &request.scope {
        Some(s) => {
            if let Some(bad) = s
                .split(' ')
                .filter(|x| !x.is_empty())
                .find(|x| !supported.iter().any(|y| y == x))
            {
                return back(OAuthError::invalid_scope(format!(
                    "the scope {bad:?} is not offered; offered: {}",
                    supported.join(" ")
                )));
            }
            s.split(' ')
                .filter(|x| !x.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        }
        None => supported.join(" "),
    };
    let mut pending = PendingAuthorization {
        route: target.name.clone(),
        client_id: client.client_id.clone(),
        client_name: client.client_name.clone(),
        client_verified: client.verified_document,
        redirect_uri,
        state: request.state.clone(),
        code_challenge: challenge,
        resource: target.resource.clone(),
        scope,
        sid: None,
    };
    let pending_id = ctx.token(24);
    // A signed-in browser goes straight on to consent.
    let signed_in = session_of(ctx, route, cookies.as_deref());
    if let Some((cookie, session)) = signed_in {
        pending.sid = Some(cookie.sid);
        if let Err(e) = ctx
            .vault()
            .put(ns::PENDING, &pending_id, &pending, PENDING_TTL_SECONDS, 0)
        {
            return store_unavailable_page(e).into();
        }
        return after_sign_in(ctx, target, &pending_id, &pending, &session.user).into();
    }
    start_sign_in(ctx, route, pending)
}

/// The browser's session, if its cookie opens and the session still stands.
pub(super) fn session_of(
    ctx: &mut Ctx<'_>,
    route: &Route,
    cookies: Option<&str>,
) -> Option<(CookieValue, Session)> {
    let cookie = session::read_cookie(route, cookies, &ctx.config().keys.encryption)?;
    let found = ctx
        .vault()
        .get::<Session>(ns::SESSION, &cookie.sid)
        .ok()??;
    (found.value.user.sub == cookie.sub).then_some((cookie, found.value))
}

fn cached_discovery(ctx: &mut Ctx<'_>) -> Option<Discovery> {
    ctx.vault()
        .get::<Discovery>(ns::OIDC, "discovery")
        .ok()
        .flatten()
        .map(|d| d.value)
}

fn start_sign_in(ctx: &mut Ctx<'_>, route: &Route, pending: PendingAuthorization) -> Outcome {
    match cached_discovery(ctx) {
        Some(discovery) => redirect_to_idp(ctx, route, pending, &discovery),
        None => call_out(
            oidc::discovery_call(&ctx.config().identity_provider),
            Wait::Discovery {
                then: AfterDiscovery::RedirectToIdp {
                    pending: Box::new(pending),
                },
            },
        ),
    }
}

fn callback_uri(route: &Route) -> String {
    format!("{}{}", route.origin, endpoints::CALLBACK)
}

fn redirect_to_idp(
    ctx: &mut Ctx<'_>,
    route: &Route,
    pending: PendingAuthorization,
    discovery: &Discovery,
) -> Outcome {
    let Some(key) = ctx.config().keys.encryption.first() else {
        return sign_in_failed("No encryption key");
    };
    let browser_key = ctx.token(24);
    let verifier = ctx.token(32);
    let login = Login {
        pending,
        nonce: ctx.token(24),
        code_verifier: verifier.clone(),
        route: route.name.clone(),
        exp: ctx.now + PENDING_TTL_SECONDS,
        browser: crypto::sha256_b64url(browser_key.as_bytes()),
    };
    let state = session::seal_state(&login, key, &mut *ctx.random);
    let url = oidc::authorization_url(
        &ctx.config().identity_provider,
        discovery,
        &callback_uri(route),
        &state,
        &login.nonce,
        &crypto::sha256_b64url(verifier.as_bytes()),
    );
    redirect(&url)
        .header(
            "set-cookie",
            session::set_login_cookie(route, &browser_key, PENDING_TTL_SECONDS),
        )
        .into()
}

fn sign_in_failed(message: &str) -> Outcome {
    log::warn!("sign-in failed: {message}");
    pages::error(
        502,
        "Sign-in failed",
        &format!("{message}. Start again from your application; if it keeps failing, tell the administrator."),
    )
    .into()
}

/// `GET /.oauth/callback`: the identity provider sends the browser back.
pub(super) fn callback(ctx: &mut Ctx<'_>, route: &Route, head: &RequestHead) -> Outcome {
    let params = match Params::parse(head.query().as_bytes()) {
        Ok(p) => p,
        Err(e) => return bad_request_page(&e.description),
    };
    let Some(state) = params.get("state") else {
        return bad_request_page("The identity provider's answer has no state.");
    };
    let Some(login) =
        session::open_state(state, &ctx.config().keys.encryption).filter(|l| l.exp > ctx.now)
    else {
        return bad_request_page(
            "This sign-in has expired or is not one of this server's. Start again from your application.",
        );
    };
    // The browser that comes back must be the one that left (login CSRF).
    let browser = session::read_login_cookie(route, head.cookies().as_deref())
        .map(|k| crypto::sha256_b64url(k.as_bytes()));
    if !browser
        .is_some_and(|b| crate::secret::constant_time_eq(b.as_bytes(), login.browser.as_bytes()))
    {
        return pages::error(
            403,
            "Sign-in refused",
            "This sign-in was started in another browser (or its cookie expired). Start again from your application.",
        )
        .into();
    }
    if let Some(error) = params.get("error") {
        let description = params
            .get("error_description")
            .unwrap_or("the identity provider refused the sign-in");
        let p = &login.pending;
        return redirect_error(
            &p.redirect_uri,
            &OAuthError::access_denied(format!(
                "sign-in failed at the identity provider: {error}: {description}"
            )),
            p.state.as_deref(),
            &route.origin,
        )
        .into();
    }
    let Some(code) = params.get("code").map(str::to_string) else {
        return bad_request_page("The identity provider's answer has no code.");
    };
    match cached_discovery(ctx) {
        Some(discovery) => exchange(ctx, login, code, discovery),
        None => call_out(
            oidc::discovery_call(&ctx.config().identity_provider),
            Wait::Discovery {
                then: AfterDiscovery::Exchange {
                    login: Box::new(login),
                    code,
                },
            },
        ),
    }
}

fn exchange(ctx: &mut Ctx<'_>, login: Login, code: String, discovery: Discovery) -> Outcome {
    let Some(route) = ctx.config().route(&login.route) else {
        return sign_in_failed("The route of this sign-in is gone");
    };
    let idp = &ctx.config().identity_provider;
    match oidc::token_call(
        idp,
        &discovery,
        &code,
        &callback_uri(route),
        &login.code_verifier,
    ) {
        Ok(call) => call_out(call, Wait::IdpToken { login, discovery }),
        Err(e) => sign_in_failed(&e),
    }
}

/// An outside call answered: carry on where the request waited.
pub(super) fn resume(
    ctx: &mut Ctx<'_>,
    route: &Route,
    wait: Wait,
    answer: &CallResponse,
) -> Outcome {
    match wait {
        Wait::UpstreamCode {
            login,
            code,
            credentials,
        } => upstream::code_answer(ctx, login, code, credentials, answer),
        Wait::ClientDocument { request, cookies } => {
            let client_id = request.client_id.clone().unwrap_or_default();
            if !answer.is_success() {
                // The client's URL is wrong (4xx): its fault, a 400. No answer or 5xx: 502.
                let (status, why) = match answer.status {
                    0 => (502, "did not answer".to_string()),
                    s if s < 500 => (400, format!("answered {s}")),
                    s => (502, format!("answered {s}")),
                };
                return pages::error(
                    status,
                    "Authorization request refused",
                    &format!("The application's client metadata document at {client_id} {why}."),
                )
                .into();
            }
            let docs = &ctx.config().authorization_server.metadata_documents;
            let (max, ttl) = (docs.max_bytes, docs.cache_seconds);
            match clients::client_from_document(&client_id, &answer.body, max, ctx.now) {
                Ok(client) => {
                    let _ = ctx.vault().put(
                        ns::CLIENT_DOCUMENT,
                        &crypto::sha256_b64url(client_id.as_bytes()),
                        &client,
                        ttl,
                        0,
                    );
                    continue_authorize(ctx, route, request, client, cookies)
                }
                Err(e) => bad_request_page(&e.description),
            }
        }
        Wait::Discovery { then } => {
            let discovery = match oidc::parse_discovery(&ctx.config().identity_provider, answer) {
                Ok(d) => d,
                Err(e) => return sign_in_failed(&e),
            };
            let _ = ctx
                .vault()
                .put(ns::OIDC, "discovery", &discovery, IDP_CACHE_SECONDS, 0);
            match then {
                AfterDiscovery::RedirectToIdp { pending } => {
                    redirect_to_idp(ctx, route, *pending, &discovery)
                }
                AfterDiscovery::Exchange { login, code } => exchange(ctx, *login, code, discovery),
            }
        }
        Wait::IdpToken { login, discovery } => {
            let tokens = match oidc::parse_token_answer(answer) {
                Ok(t) => t,
                Err(e) => return sign_in_failed(&e),
            };
            let cached = ctx
                .vault()
                .get::<JwkSet>(ns::OIDC, "jwks")
                .ok()
                .flatten()
                .map(|j| j.value);
            match cached {
                Some(jwks) => verify(
                    ctx,
                    route,
                    login,
                    discovery,
                    tokens.id_token,
                    tokens.access_token,
                    &jwks,
                    false,
                ),
                None => fetch_jwks(ctx, login, discovery, tokens.id_token, tokens.access_token),
            }
        }
        Wait::Jwks {
            login,
            discovery,
            id_token,
            access_token,
        } => {
            let jwks = match oidc::parse_jwks(answer) {
                Ok(j) => j,
                Err(e) => return sign_in_failed(&e),
            };
            let _ = ctx
                .vault()
                .put(ns::OIDC, "jwks", &jwks, IDP_CACHE_SECONDS, 0);
            verify(
                ctx,
                route,
                login,
                discovery,
                id_token,
                access_token,
                &jwks,
                true,
            )
        }
        Wait::Userinfo { login, claims } => {
            let sub = claims
                .get("sub")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            match oidc::parse_userinfo(answer, &sub) {
                Ok(info) => {
                    let mut merged = info;
                    merged.extend(claims);
                    complete_sign_in(ctx, login, merged)
                }
                Err(e) => sign_in_failed(&e),
            }
        }
    }
}

fn fetch_jwks(
    ctx: &mut Ctx<'_>,
    login: Login,
    discovery: Discovery,
    id_token: String,
    access_token: Option<String>,
) -> Outcome {
    match oidc::jwks_call(&ctx.config().identity_provider, &discovery) {
        Ok(call) => call_out(
            call,
            Wait::Jwks {
                login,
                discovery,
                id_token,
                access_token,
            },
        ),
        Err(e) => sign_in_failed(&e),
    }
}

#[allow(clippy::too_many_arguments)]
fn verify(
    ctx: &mut Ctx<'_>,
    _route: &Route,
    login: Login,
    discovery: Discovery,
    id_token: String,
    access_token: Option<String>,
    jwks: &JwkSet,
    fresh_keys: bool,
) -> Outcome {
    let idp = &ctx.config().identity_provider;
    match oidc::verify_id_token(
        &id_token,
        jwks,
        idp,
        &discovery.issuer,
        &login.nonce,
        ctx.now,
    ) {
        Ok(claims) => {
            let wants_userinfo = claims.get("email").is_none();
            match (
                wants_userinfo,
                access_token
                    .as_deref()
                    .and_then(|t| oidc::userinfo_call(idp, &discovery, t)),
            ) {
                (true, Some(call)) => call_out(call, Wait::Userinfo { login, claims }),
                _ => complete_sign_in(ctx, login, claims),
            }
        }
        // A key the cached set lacks: the provider rotated its keys (OIDC Core 10.1.1).
        Err(IdTokenProblem::UnknownKey) if !fresh_keys => {
            fetch_jwks(ctx, login, discovery, id_token, access_token)
        }
        Err(IdTokenProblem::UnknownKey) => sign_in_failed(
            "The ID token was signed with a key the identity provider does not publish",
        ),
        Err(IdTokenProblem::Invalid(why)) => sign_in_failed(&why),
    }
}

/// The user is known: start the browser session and go on to consent.
fn complete_sign_in(ctx: &mut Ctx<'_>, login: Login, claims: Map<String, Value>) -> Outcome {
    let config = ctx.config();
    let user = oidc::user_from_claims(claims, &config.identity_provider.groups_claim);
    let session_ttl = config.authorization_server.session_ttl_seconds;
    let Some(route) = config.route(&login.route) else {
        return sign_in_failed("The route of this sign-in is gone");
    };
    // Each sign-in completes once: its state is marked used (only now,
    // after the identity provider vouched for the user, so anonymous
    // requests never write to the store).
    let used = crypto::sha256_b64url(format!("{}|{}", login.nonce, login.browser).as_bytes());
    match ctx
        .vault()
        .insert_new(ns::LOGIN, &used, &true, PENDING_TTL_SECONDS)
    {
        Ok(()) => {}
        Err(crate::store::StoreError::CasMismatch) => {
            return bad_request_page(
                "This sign-in was already completed. Start again from your application.",
            );
        }
        Err(e) => return store_unavailable_page(e).into(),
    }
    let sid = ctx.token(24);
    let now = ctx.now;
    if let Err(e) = ctx.vault().put(
        ns::SESSION,
        &sid,
        &Session {
            user: user.clone(),
            created_at: now,
        },
        session_ttl,
        0,
    ) {
        return store_unavailable_page(e).into();
    }
    let Some(key) = config.keys.encryption.first() else {
        return sign_in_failed("No encryption key");
    };
    let cookie = session::set_cookie(
        route,
        &CookieValue {
            sid: sid.clone(),
            sub: user.sub.clone(),
        },
        key,
        session_ttl,
        &mut *ctx.random,
    );
    log::info!(
        "signed in: user {} ({})",
        user.sub,
        user.email.as_deref().unwrap_or("no email")
    );
    let mut pending = login.pending;
    pending.sid = Some(sid);
    let pending_id = ctx.token(24);
    if let Err(e) = ctx
        .vault()
        .put(ns::PENDING, &pending_id, &pending, PENDING_TTL_SECONDS, 0)
    {
        return store_unavailable_page(e).into();
    }
    let target = config.route(&pending.route).unwrap_or(route);
    after_sign_in(ctx, target, &pending_id, &pending, &user)
        .header("set-cookie", cookie)
        // The sign-in cookie has done its job.
        .header("set-cookie", session::set_login_cookie(route, "", 0))
        .into()
}

fn consent_key(user: &User, client_id: &str, route: &str) -> String {
    crypto::sha256_b64url(format!("{}|{client_id}|{route}", user.sub).as_bytes())
}

/// Signed in: may this user use the route at all, and did they already consent?
fn after_sign_in(
    ctx: &mut Ctx<'_>,
    route: &Route,
    pending_id: &str,
    pending: &PendingAuthorization,
    user: &User,
) -> Reply {
    if !crate::policy::may_use_route(route, user) {
        let who = user.email.as_deref().unwrap_or(&user.sub);
        return pages::error(
            403,
            "Access denied",
            &format!("{who} is not allowed to use the MCP server {}.", route.name),
        );
    }
    // A dynamically registered client is anyone who copied a known client's
    // public metadata: remembered consent would hand it a code without the
    // person seeing whom they authorize (MCP Security Best Practices,
    // confused deputy). Only a metadata-document client has a verified identity.
    // Nor for a loopback redirect URI, whatever the client: any local
    // program can listen on a loopback port and receive the code (Client ID
    // Metadata Document draft, Security Considerations; RFC 8252 8.6).
    let loopback =
        url::Url::parse(&pending.redirect_uri).is_ok_and(|u| crate::config::is_loopback(&u));
    let may_remember = !loopback
        && (pending.client_verified
            || ctx
                .config()
                .authorization_server
                .remember_consent_for_registered_clients);
    let remembered = may_remember
        && ctx
            .vault()
            .get::<Consent>(
                ns::CONSENT,
                &consent_key(user, &pending.client_id, &route.name),
            )
            .ok()
            .flatten()
            .is_some_and(|c| {
                pending
                    .scope
                    .split(' ')
                    .all(|s| c.value.scope.split(' ').any(|g| g == s))
            });
    if remembered {
        let found = ctx
            .vault()
            .get::<PendingAuthorization>(ns::PENDING, pending_id)
            .ok()
            .flatten();
        if let Some(found) = found {
            let _ = ctx.vault().remove(ns::PENDING, pending_id, found.cas);
        }
        return upstream::grant_access(ctx, route, pending, user);
    }
    redirect(&form::with_query(
        &format!("{}{}", route.origin, endpoints::CONSENT),
        &[("request", pending_id)],
    ))
}

/// The code goes back to the client (RFC 6749 4.1.2, RFC 9207 `iss`).
pub(super) fn issue_code(
    ctx: &mut Ctx<'_>,
    route: &Route,
    pending: &PendingAuthorization,
    user: &User,
) -> Reply {
    let code = ctx.token(32);
    let record = CodeGrant {
        client_id: pending.client_id.clone(),
        redirect_uri: pending.redirect_uri.clone(),
        code_challenge: pending.code_challenge.clone(),
        resource: pending.resource.clone(),
        scope: pending.scope.clone(),
        route: route.name.clone(),
        user: user.clone(),
        redeemed_by: None,
    };
    let ttl = ctx
        .config()
        .authorization_server
        .authorization_code_ttl_seconds;
    // Codes are kept under their hash: the store never holds a usable code.
    if let Err(e) = ctx.vault().put(
        ns::CODE,
        &crypto::sha256_b64url(code.as_bytes()),
        &record,
        ttl,
        0,
    ) {
        return store_unavailable_page(e);
    }
    let mut params = vec![("code", code.as_str())];
    if let Some(s) = &pending.state {
        params.push(("state", s));
    }
    params.push(("iss", &route.origin));
    redirect(&form::with_query(&pending.redirect_uri, &params))
}

/// The pending request and session behind a consent page or its answer.
type ConsentContext = (
    CookieValue,
    Session,
    crate::store::Versioned<PendingAuthorization>,
);

fn consent_context(
    ctx: &mut Ctx<'_>,
    route: &Route,
    head: &RequestHead,
    pending_id: &str,
) -> Result<ConsentContext, Box<Outcome>> {
    let found = match ctx
        .vault()
        .get::<PendingAuthorization>(ns::PENDING, pending_id)
    {
        Ok(Some(p)) => p,
        Ok(None) => {
            return Err(Box::new(bad_request_page(
                "This authorization request has expired or was already answered. Start again from your application.",
            )));
        }
        Err(e) => return Err(Box::new(store_unavailable_page(e).into())),
    };
    let Some((cookie, session)) = session_of(ctx, route, head.cookies().as_deref()) else {
        return Err(Box::new(pages::error(403, "Not signed in", "This consent page belongs to a signed-in browser session; start again from your application.").into()));
    };
    if found.value.sid.as_deref() != Some(cookie.sid.as_str()) {
        return Err(Box::new(
            pages::error(
                403,
                "Wrong session",
                "This authorization request belongs to another browser session.",
            )
            .into(),
        ));
    }
    Ok((cookie, session, found))
}

/// `GET /.oauth/consent?request=...`.
pub(super) fn consent_page(ctx: &mut Ctx<'_>, route: &Route, head: &RequestHead) -> Outcome {
    let params = Params::parse(head.query().as_bytes()).unwrap_or_default();
    let Some(pending_id) = params.get("request") else {
        return bad_request_page("The consent page needs its request parameter.");
    };
    let (cookie, session, found) = match consent_context(ctx, route, head, pending_id) {
        Ok(c) => c,
        Err(o) => return *o,
    };
    let pending = found.value;
    let config = ctx.config();
    let Some(key) = config.keys.token_signing.first() else {
        return OAuthError::server_error("no signing key").into();
    };
    let csrf = session::csrf_token(key, &cookie.sid, pending_id);
    let target = config.route(&pending.route).unwrap_or(route);
    let redirect_host = url::Url::parse(&pending.redirect_uri)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let user = session.user.email.as_deref().unwrap_or(&session.user.sub);
    let action = endpoints::CONSENT;
    pages::consent(&ConsentView {
        client_name: pending.client_name.as_deref().unwrap_or(&pending.client_id),
        client_id: &pending.client_id,
        client_verified: pending.client_verified,
        redirect_host: &redirect_host,
        route_name: &target.name,
        resource: &target.resource,
        scopes: &pending.scope,
        user,
        request: pending_id,
        csrf: &csrf,
        action,
    })
    .into()
}

/// `POST /.oauth/consent`: the person's answer.
pub(super) fn consent_decision(
    ctx: &mut Ctx<'_>,
    route: &Route,
    head: &RequestHead,
    body: &[u8],
) -> Outcome {
    let params = match Params::parse(body) {
        Ok(p) => p,
        Err(e) => return bad_request_page(&e.description),
    };
    let Some(pending_id) = params.get("request") else {
        return bad_request_page("The consent form is missing its request field.");
    };
    let (cookie, session, found) = match consent_context(ctx, route, head, pending_id) {
        Ok(c) => c,
        Err(o) => return *o,
    };
    let csrf_ok = params.get("csrf").is_some_and(|t| {
        session::csrf_matches(&ctx.config().keys.token_signing, &cookie.sid, pending_id, t)
    });
    if !csrf_ok {
        return pages::error(403, "Request refused", "The consent form's CSRF token is missing or wrong. Reload the consent page and answer again.").into();
    }
    // Single use: the request is answered once.
    if ctx
        .vault()
        .remove(ns::PENDING, pending_id, found.cas)
        .is_err()
    {
        return bad_request_page("This authorization request was already answered.");
    }
    let pending = found.value;
    let config = ctx.config();
    let target = config.route(&pending.route).unwrap_or(route);
    if params.get("decision") != Some("approve") {
        return redirect_error(
            &pending.redirect_uri,
            &OAuthError::access_denied("the user denied the authorization request"),
            pending.state.as_deref(),
            &route.origin,
        )
        .into();
    }
    let consent = Consent {
        approved_at: ctx.now,
        scope: pending.scope.clone(),
    };
    let key = consent_key(&session.user, &pending.client_id, &target.name);
    let _ = ctx
        .vault()
        .put(ns::CONSENT, &key, &consent, CONSENT_TTL_SECONDS, 0);
    upstream::grant_access(ctx, target, &pending, &session.user).into()
}
