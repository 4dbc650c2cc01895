//! The upstream token (TI) in the request's life: upstream consent during
//! authorization, and on every MCP request the token injected, refreshed
//! first when it is about to expire (one refresh per user and route across
//! all workers; the others wait for it), or the challenge that restarts
//! consent when the provider revoked it.

use super::signin::{bad_request_page, issue_code, redirect, redirect_error};
use super::{Command, Ctx, Outcome, Passage, RequestHead, Wait};
use crate::config::Route;
use crate::crypto;
use crate::oauth::clients::store_error;
use crate::oauth::error::OAuthError;
use crate::oauth::form::Params;
use crate::oauth::records::{PendingAuthorization, User};
use crate::outbound::OutboundCall;
use crate::reply::{Failure, Reply, reply_for};
use crate::routing::endpoints;
use crate::upstream::client::{self, CredentialsIn, TokenCallError};
use crate::upstream::{
    FAILURE_BACKOFF_SECONDS, Lock, RefreshFailure, StoredToken, UpstreamLogin, first_attempt,
    lock_seconds, ns, token_key,
};

/// How long an upstream consent may take.
const LOGIN_TTL_SECONDS: u64 = 600;

fn callback_uri(route: &Route) -> String {
    format!("{}{}", route.origin, endpoints::UPSTREAM_CALLBACK)
}

/// Consent given: if the route needs an upstream token the user lacks, send
/// the browser to the provider first; otherwise the code goes to the client.
pub(super) fn grant_access(
    ctx: &mut Ctx<'_>,
    route: &Route,
    pending: &PendingAuthorization,
    user: &User,
) -> Reply {
    let Some(up) = &route.upstream else {
        return issue_code(ctx, route, pending, user);
    };
    let key = token_key(&user.sub, &route.name);
    let usable = match ctx.vault().get::<StoredToken>(ns::TOKEN, &key) {
        Ok(found) => found.is_some_and(|t| {
            t.value.refresh_token.is_some() || t.value.is_fresh(ctx.now, up.refresh_skew_seconds)
        }),
        Err(e) => return store_error(e).to_reply(),
    };
    if usable {
        return issue_code(ctx, route, pending, user);
    }
    let state = ctx.token(24);
    let verifier = ctx.token(32);
    let login = UpstreamLogin {
        pending: pending.clone(),
        user: user.clone(),
        code_verifier: verifier.clone().into(),
    };
    if let Err(e) = ctx
        .vault()
        .put(ns::LOGIN, &state, &login, LOGIN_TTL_SECONDS, 0)
    {
        return store_error(e).to_reply();
    }
    let url = client::authorization_url(
        up,
        &callback_uri(route),
        &state,
        &crypto::sha256_b64url(verifier.as_bytes()),
    );
    redirect(&url)
}

/// An error for the client, at its redirect URI (RFC 6749 4.1.2.1).
fn back_to_client(login: &UpstreamLogin, route: &Route, error: OAuthError) -> Outcome {
    redirect_error(
        &login.pending.redirect_uri,
        &error,
        login.pending.state.as_deref(),
        &route.origin,
    )
    .into()
}

/// `GET /.oauth/upstream/callback`: the provider sends the browser back.
pub(super) fn callback(ctx: &mut Ctx<'_>, head: &RequestHead) -> Outcome {
    let params = match Params::parse(head.query().as_bytes()) {
        Ok(p) => p,
        Err(e) => return bad_request_page(&e.description),
    };
    let Some(state) = params.get("state") else {
        return bad_request_page("The provider's answer has no state.");
    };
    let found = match ctx.vault().get::<UpstreamLogin>(ns::LOGIN, state) {
        Ok(Some(f)) => f,
        Ok(None) => {
            return bad_request_page(
                "This consent at the provider has expired or was already completed. Start again from your application.",
            );
        }
        Err(e) => return store_error(e).into(),
    };
    // The provider's redirect must come back to the browser that left for
    // it: the state in the URL is no credential. Anyone who saw it could
    // otherwise complete it with a code of their own account at the
    // provider, and the user's MCP calls would act as that account. Checked
    // before the state is used up, so a stranger can't burn it either.
    let route_of_login = ctx.config().route(&found.value.pending.route);
    let same_browser = route_of_login.is_some_and(|route| {
        super::signin::session_of(ctx, route, head.cookies().as_deref())
            .is_some_and(|(cookie, _)| found.value.pending.sid.as_deref() == Some(&cookie.sid))
    });
    if !same_browser {
        return crate::oauth::pages::error(
            403,
            "Wrong browser session",
            "This consent at the provider was started in another browser session. Start again from your application in this browser.",
        )
        .into();
    }
    // Single use: a replayed callback finds nothing.
    if ctx.vault().remove(ns::LOGIN, state, found.cas).is_err() {
        return bad_request_page("This consent at the provider was already completed.");
    }
    let login = found.value;
    let Some(route) = ctx.config().route(&login.pending.route) else {
        return bad_request_page("The MCP server of this request is gone.");
    };
    let back = |e: OAuthError| back_to_client(&login, route, e);
    let Some(up) = &route.upstream else {
        return back(OAuthError::server_error(
            "the route no longer uses an upstream provider",
        ));
    };
    if let Some(error) = params.get("error") {
        let description = params
            .get("error_description")
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        return back(OAuthError::access_denied(format!(
            "the upstream provider refused authorization ({error}{description})"
        )));
    }
    let Some(code) = params.get("code").map(str::to_string) else {
        return back(OAuthError::server_error(
            "the upstream provider sent no code",
        ));
    };
    let credentials = first_attempt(up.auth_style, remembered_style(ctx, route));
    let call = client::code_call(
        up,
        &code,
        &callback_uri(route),
        &login.code_verifier,
        credentials,
    );
    Outcome::Call(
        call,
        Box::new(Wait::UpstreamCode {
            login,
            code: code.into(),
            credentials,
        }),
    )
}

fn remembered_style(ctx: &mut Ctx<'_>, route: &Route) -> Option<CredentialsIn> {
    ctx.vault()
        .get::<CredentialsIn>(ns::STYLE, &route.name)
        .ok()
        .flatten()
        .map(|v| v.value)
}

fn remember_style(ctx: &mut Ctx<'_>, route: &Route, credentials: CredentialsIn) {
    if route
        .upstream
        .as_ref()
        .is_some_and(|u| u.auth_style == crate::config::AuthStyle::Auto)
    {
        let _ = ctx
            .vault()
            .put(ns::STYLE, &route.name, &credentials, 30 * 86_400, 0);
    }
}

/// `auth_style: auto`: a refusal of Basic credentials is retried once with
/// the credentials in the body (RFC 6749 2.3.1 allows both).
fn retry_in_body(route: &Route, error: &TokenCallError, credentials: CredentialsIn) -> bool {
    matches!(error, TokenCallError::ClientAuthentication(_))
        && credentials == CredentialsIn::Header
        && route
            .upstream
            .as_ref()
            .is_some_and(|u| u.auth_style == crate::config::AuthStyle::Auto)
}

/// The provider answered the code exchange.
pub(super) fn code_answer(
    ctx: &mut Ctx<'_>,
    login: UpstreamLogin,
    code: crate::secret::SecretText,
    credentials: CredentialsIn,
    answer: &crate::outbound::CallResponse,
) -> Outcome {
    let Some(route) = ctx.config().route(&login.pending.route) else {
        return bad_request_page("The MCP server of this request is gone.");
    };
    let Some(up) = &route.upstream else {
        return bad_request_page("The route no longer uses an upstream provider.");
    };
    let back = |e: OAuthError| back_to_client(&login, route, e);
    match client::parse_answer(answer) {
        Ok(issued) => {
            remember_style(ctx, route, credentials);
            let key = token_key(&login.user.sub, &route.name);
            let now = ctx.now;
            let token = StoredToken::from_issued(issued, None, now);
            if let Err(e) = ctx
                .vault()
                .put(ns::TOKEN, &key, &token, token.keep_seconds(now), 0)
            {
                return back(store_error(e));
            }
            ctx.info(format!(
                "upstream token stored: user {} route {}",
                login.user.sub, route.name
            ));
            issue_code(ctx, route, &login.pending, &login.user).into()
        }
        Err(e) if retry_in_body(route, &e, credentials) => {
            let call = client::code_call(
                up,
                &code,
                &callback_uri(route),
                &login.code_verifier,
                CredentialsIn::Body,
            );
            Outcome::Call(
                call,
                Box::new(Wait::UpstreamCode {
                    login,
                    code,
                    credentials: CredentialsIn::Body,
                }),
            )
        }
        Err(e) => {
            ctx.warn(format!(
                "upstream code exchange failed for route {}: {e}",
                route.name
            ));
            back(match e {
                TokenCallError::Refused { .. } => OAuthError::access_denied(format!(
                    "the upstream provider refused the authorization: {e}"
                )),
                TokenCallError::ClientAuthentication(_) => OAuthError::server_error(format!(
                    "{e}; the filter's upstream client configuration is wrong"
                )),
                TokenCallError::Unavailable(_) => {
                    OAuthError::temporarily_unavailable(format!("{e}; try again"))
                }
            })
        }
    }
}

/// A refresh of one user's upstream token, carried out by the root context
/// (not by the request that needed it, so it is never abandoned when that
/// request gives up or goes away). It holds the refresh lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshJob {
    pub route: String,
    pub sub: String,
    pub credentials: CredentialsIn,
    /// The owner id of the lock this refresh holds.
    pub lock: String,
    /// SHA-256 of the refresh token sent.
    pub used: String,
    pub call: OutboundCall,
}

/// A request that waits for a refresh of the token it needs (its own was
/// expired).
#[derive(Debug, Clone, PartialEq)]
pub struct Parked {
    pub sub: String,
    pub deadline: u64,
    /// What the request carries on with once woken.
    pub passage: super::Passage,
}

fn challenge(ctx: &Ctx<'_>, route: &Route, why: &'static str) -> Outcome {
    reply_for(
        &Failure::InvalidToken(why),
        route,
        &ctx.config().authorization_server.scopes_supported,
    )
    .into()
}

fn unavailable(why: &str, retry_after: u64) -> Outcome {
    OAuthError::temporarily_unavailable(why)
        .with_retry_after(retry_after)
        .to_reply()
        .into()
}

/// What a request that can't wait any longer is told.
fn no_token_yet(token: &StoredToken, retry_after: u64) -> Outcome {
    let why = match token.failure {
        Some(RefreshFailure::OutcomeUnknown) => {
            "the upstream provider did not answer the refresh of your token in time; its outcome is not known yet; try again shortly"
        }
        Some(RefreshFailure::Misconfigured) => {
            "the upstream provider refused the gateway's client credentials; ask the operator to check mcp.server.upstream_oauth2"
        }
        Some(RefreshFailure::Unavailable) => {
            "the upstream provider's token endpoint is unavailable; try again shortly"
        }
        None => "the upstream token is being refreshed; try again shortly",
    };
    unavailable(why, retry_after)
}

fn forward_with(
    token: &StoredToken,
    sub: &str,
    mut passage: Passage,
    start: Option<RefreshJob>,
) -> Outcome {
    // The refresh is handed over first: whatever fails after, it runs and
    // releases its lock.
    let mut commands: Vec<Command> = start
        .map(|job| Command::StartRefresh(Box::new(job)))
        .into_iter()
        .collect();
    // The client's credential is replaced by the upstream token (no token passthrough).
    commands.push(Command::SetCredential(
        "authorization",
        format!("Bearer {}", token.access_token.expose()).into(),
    ));
    passage.upstream_token = Some(crypto::sha256_b64url(token.access_token.as_bytes()));
    Outcome::Forward {
        commands,
        sub: Some(sub.to_string()),
        passage,
    }
}

/// On an MCP request whose access token is valid: the upstream token to
/// send. A token within its refresh skew is sent as it is while a refresh
/// runs beside it; only a request whose token has expired waits, until its
/// deadline. `may_refresh`: false for a request woken from waiting, which
/// only takes what the refresh stored.
pub(super) fn inject(
    ctx: &mut Ctx<'_>,
    route: &Route,
    sub: &str,
    deadline: u64,
    may_refresh: bool,
    passage: Passage,
) -> Outcome {
    let Some(up) = &route.upstream else {
        return Outcome::Forward {
            commands: vec![Command::RemoveRequestHeader("authorization")],
            sub: None,
            passage,
        };
    };
    let now = ctx.now;
    let key = token_key(sub, &route.name);
    let token = match ctx.vault().get::<StoredToken>(ns::TOKEN, &key) {
        Ok(Some(t)) => t.value,
        Ok(None) => {
            return challenge(
                ctx,
                route,
                "the upstream provider's authorization is missing or was revoked; authorize again",
            );
        }
        Err(e) => return store_error(e).into(),
    };
    if token.is_fresh(now, up.refresh_skew_seconds) {
        return forward_with(&token, sub, passage, None);
    }
    let usable = token.is_unexpired(now);
    if token.refresh_token.is_none() {
        if usable {
            return forward_with(&token, sub, passage, None);
        }
        let _ = remove(ctx, ns::TOKEN, &key);
        return challenge(
            ctx,
            route,
            "the upstream token expired and can't be refreshed; authorize again",
        );
    }
    let wait = |passage: Passage| -> Outcome {
        if now >= deadline {
            let retry = up.refresh_wait_ms.div_ceil(1000).max(1);
            return no_token_yet(&token, retry);
        }
        Outcome::Park {
            parked: Parked {
                sub: sub.to_string(),
                deadline,
                passage,
            },
            start: None,
        }
    };
    let backing_off = token
        .failed_at
        .is_some_and(|f| now.saturating_sub(f) < FAILURE_BACKOFF_SECONDS);
    if backing_off || !may_refresh {
        if usable {
            return forward_with(&token, sub, passage, None);
        }
        return match lock_held(ctx, &key, now) {
            Ok(true) if may_refresh || now < deadline => wait(passage),
            Ok(_) => no_token_yet(&token, FAILURE_BACKOFF_SECONDS),
            Err(e) => store_error(e).into(),
        };
    }
    match start_refresh(ctx, route, sub, &token) {
        Ok(Some(job)) if usable => forward_with(&token, sub, passage, Some(job)),
        Ok(Some(job)) => Outcome::Park {
            parked: Parked {
                sub: sub.to_string(),
                deadline,
                passage,
            },
            start: Some(Box::new(job)),
        },
        // Someone else refreshes it: go on with the current token while it lasts.
        Ok(None) if usable => forward_with(&token, sub, passage, None),
        Ok(None) => wait(passage),
        Err(e) => store_error(e).into(),
    }
}

fn lock_held(ctx: &mut Ctx<'_>, key: &str, now: u64) -> Result<bool, crate::store::StoreError> {
    Ok(ctx
        .vault()
        .get::<Lock>(ns::LOCK, key)?
        .is_some_and(|l| l.value.until > now))
}

/// Takes the refresh lock of (user, route) and makes the refresh to run;
/// `None` when another refresh holds the lock.
fn start_refresh(
    ctx: &mut Ctx<'_>,
    route: &Route,
    sub: &str,
    token: &StoredToken,
) -> Result<Option<RefreshJob>, crate::store::StoreError> {
    let (Some(up), Some(refresh_token)) = (&route.upstream, &token.refresh_token) else {
        return Ok(None);
    };
    let now = ctx.now;
    let key = token_key(sub, &route.name);
    let lock = ctx.vault().get::<Lock>(ns::LOCK, &key)?;
    if lock.as_ref().is_some_and(|l| l.value.until > now) {
        return Ok(None);
    }
    let hold = lock_seconds(up.refresh_timeout_ms);
    let owner = ctx.token(12);
    let mine = Lock {
        until: now + hold,
        owner: owner.clone(),
    };
    let taken = match &lock {
        // An expired lock: its holder died; take it over.
        Some(old) => ctx.vault().put(ns::LOCK, &key, &mine, hold, old.cas),
        None => ctx.vault().insert_new(ns::LOCK, &key, &mine, hold),
    };
    match taken {
        Ok(()) => {}
        Err(crate::store::StoreError::CasMismatch) => return Ok(None),
        Err(e) => return Err(e),
    }
    // A refresh that ended between our reading the token and taking the
    // lock has stored its token (it stores before it releases): refreshing
    // again would spend a rotated refresh token twice.
    let current = ctx.vault().get::<StoredToken>(ns::TOKEN, &key);
    let unchanged = matches!(&current, Ok(Some(c)) if c.value.refresh_token.as_ref().map(|t| t.expose()) == Some(refresh_token.expose()));
    if !unchanged {
        release(ctx, &key, &owner);
        return current.map(|_| None);
    }
    let credentials = first_attempt(up.auth_style, remembered_style(ctx, route));
    Ok(Some(RefreshJob {
        route: route.name.clone(),
        sub: sub.to_string(),
        credentials,
        lock: owner,
        used: crypto::sha256_b64url(refresh_token.as_bytes()),
        call: client::refresh_call(up, refresh_token, credentials),
    }))
}

/// How long before expiry a token in use is refreshed by the maintenance
/// tick: its skew plus one tick, so the tick gets there before a request.
pub fn proactive_refresh(ctx: &mut Ctx<'_>, route_name: &str, sub: &str) -> Option<RefreshJob> {
    let route = ctx.config().route(route_name)?;
    let up = route.upstream.as_ref()?;
    let key = token_key(sub, &route.name);
    let token = ctx.vault().get::<StoredToken>(ns::TOKEN, &key).ok()??.value;
    let now = ctx.now;
    let soon = up.refresh_skew_seconds + crate::maintenance::TICK_SECONDS;
    let backing_off = token
        .failed_at
        .is_some_and(|f| now.saturating_sub(f) < FAILURE_BACKOFF_SECONDS);
    if token.is_fresh(now, soon) || backing_off {
        return None;
    }
    start_refresh(ctx, route, sub, &token).ok().flatten()
}

fn remove(ctx: &mut Ctx<'_>, namespace: &str, key: &str) -> Result<(), crate::store::StoreError> {
    ctx.vault().remove(namespace, key, 0)
}

/// Releases the refresh lock if this refresh still holds it.
fn release(ctx: &mut Ctx<'_>, key: &str, owner: &str) {
    let held = ctx.vault().get::<Lock>(ns::LOCK, key).ok().flatten();
    if let Some(lock) = held.filter(|l| l.value.owner == owner) {
        let _ = ctx.vault().remove(ns::LOCK, key, lock.cas);
    }
}

/// The stored token, if it still holds the refresh token this refresh used
/// (else someone else refreshed meanwhile, and their result stands).
fn still_ours(current: &Option<crate::store::Versioned<StoredToken>>, used: &str) -> bool {
    current.as_ref().is_some_and(|c| {
        c.value
            .refresh_token
            .as_deref()
            .is_some_and(|rt| crypto::sha256_b64url(rt.as_bytes()) == used)
    })
}

/// The provider answered a refresh (status 0: no answer within the refresh
/// timeout). Whatever it said is stored: its new tokens, its refusal, or
/// the failure the waiting requests are told of. Returns the retry to run
/// (`auth_style: auto` moving the credentials into the body), still holding
/// the lock; otherwise the lock is released.
pub fn refresh_answer(
    ctx: &mut Ctx<'_>,
    job: RefreshJob,
    answer: &crate::outbound::CallResponse,
) -> Option<RefreshJob> {
    let route = ctx.config().route(&job.route)?;
    let up = route.upstream.as_ref()?;
    let key = token_key(&job.sub, &route.name);
    let now = ctx.now;
    let current = ctx
        .vault()
        .get::<StoredToken>(ns::TOKEN, &key)
        .ok()
        .flatten();
    let failure = match client::parse_answer(answer) {
        Ok(issued) => {
            remember_style(ctx, route, job.credentials);
            let previous_refresh = current.and_then(|c| c.value.refresh_token);
            // Stored unconditionally: the provider just rotated the refresh
            // token for us, so ours is the one that works now.
            let token = StoredToken::from_issued(issued, previous_refresh, now);
            if let Err(e) = ctx
                .vault()
                .put(ns::TOKEN, &key, &token, token.keep_seconds(now), 0)
            {
                ctx.error(format!(
                    "upstream refresh for route {} succeeded but could not be stored ({e}); the user may have to authorize again",
                    route.name
                ));
            }
            None
        }
        Err(e) if retry_in_body(route, &e, job.credentials) => {
            let refresh_token = current.and_then(|c| c.value.refresh_token);
            if let Some(refresh_token) = refresh_token {
                return Some(RefreshJob {
                    credentials: CredentialsIn::Body,
                    call: client::refresh_call(up, &refresh_token, CredentialsIn::Body),
                    ..job
                });
            }
            None
        }
        Err(e @ TokenCallError::Refused { .. }) => {
            // Only if nobody refreshed meanwhile: a newer token stands.
            if still_ours(&current, &job.used) {
                ctx.warn(format!(
                    "upstream refresh refused for route {} ({e}): the user must authorize again",
                    route.name
                ));
                let _ = remove(ctx, ns::TOKEN, &key);
            }
            None
        }
        Err(e @ TokenCallError::ClientAuthentication(_)) => {
            ctx.error(format!(
                "upstream refresh for route {}: {e}; check mcp.server.upstream_oauth2 client_id, client_secret and auth_style",
                route.name
            ));
            Some(RefreshFailure::Misconfigured)
        }
        // No answer, or Envoy's own 502/504 for a connection lost or timed
        // out after the request went: the provider may have acted on it.
        Err(e @ TokenCallError::Unavailable(_)) if matches!(answer.status, 0 | 502 | 504) => {
            ctx.warn(format!(
                "upstream refresh outcome unknown for route {}: {e} within {} ms; the provider may have rotated the refresh token; the next refresh will tell",
                route.name,
                up.refresh_timeout_ms
            ));
            Some(RefreshFailure::OutcomeUnknown)
        }
        Err(e @ TokenCallError::Unavailable(_)) => {
            ctx.warn(format!(
                "upstream refresh for route {} failed: {e}",
                route.name
            ));
            Some(RefreshFailure::Unavailable)
        }
    };
    let stored = ctx
        .vault()
        .get::<StoredToken>(ns::TOKEN, &key)
        .ok()
        .flatten();
    if let (Some(failure), Some(mut failed)) = (failure, stored)
        && still_ours(&Some(failed.clone()), &job.used)
    {
        // The token is kept: a failure that is not a refusal never costs the grant.
        failed.value.failed_at = Some(now);
        failed.value.failure = Some(failure);
        let keep = failed.value.keep_seconds(now);
        let _ = ctx
            .vault()
            .put(ns::TOKEN, &key, &failed.value, keep, failed.cas);
    }
    release(ctx, &key, &job.lock);
    None
}

/// The MCP server refused the upstream token (`401`, or `403` with
/// `insufficient_scope`): forget it, and answer with the challenge that
/// sends the client through consent again.
pub(super) fn refused_by_server(
    ctx: &mut Ctx<'_>,
    route: &Route,
    sub: &str,
    sent: Option<&str>,
) -> Vec<Command> {
    let key = token_key(sub, &route.name);
    // Only the token the server refused: a refresh may have stored a newer
    // one while this request was out (versioned delete).
    if let Ok(Some(stored)) = ctx.vault().get::<StoredToken>(ns::TOKEN, &key)
        && sent.is_some_and(|s| crypto::sha256_b64url(stored.value.access_token.as_bytes()) == s)
    {
        let _ = ctx.vault().remove(ns::TOKEN, &key, stored.cas);
    }
    ctx.warn(format!(
        "the MCP server of route {} refused the upstream token; the user must authorize again",
        route.name
    ));
    let reply = reply_for(
        &Failure::InvalidToken(
            "the upstream provider no longer accepts the authorization; authorize again",
        ),
        route,
        &ctx.config().authorization_server.scopes_supported,
    );
    vec![
        Command::SetResponseHeader(":status", "401".to_string()),
        Command::SetResponseHeader(
            "www-authenticate",
            reply
                .header_value("www-authenticate")
                .unwrap_or_default()
                .to_string(),
        ),
    ]
}
