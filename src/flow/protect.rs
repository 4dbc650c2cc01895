//! Requests to the MCP server: a valid access token of this route, for a
//! grant that still stands, or the RFC 9728 challenge.

use super::{Ctx, Effect, Outcome, RequestHead, upstream};
use crate::config::Route;
use crate::oauth::access_token;
use crate::oauth::clients::store_error;
use crate::oauth::records::{Grant, ns};
use crate::reply::{Failure, reply_for};
use crate::upstream::WAIT_SECONDS;

pub(super) fn authorize_request(ctx: &mut Ctx<'_>, route: &Route, head: &RequestHead) -> Outcome {
    let scopes = &ctx.config().authorization_server.scopes_supported;
    match check(ctx, route, head) {
        Ok(grant) if route.upstream.is_some() => {
            let deadline = ctx.now + WAIT_SECONDS;
            upstream::inject(ctx, route, &grant.user.sub, deadline, true)
        }
        Ok(_) => Outcome::Forward {
            // No token passthrough (MCP authorization, Security Considerations):
            // the client's credential never reaches the MCP server.
            effects: vec![Effect::RemoveRequestHeader("authorization")],
            sub: None,
        },
        Err(Check::Failure(failure)) => reply_for(&failure, route, scopes).into(),
        Err(Check::Store(e)) => store_error(e).to_reply().into(),
    }
}

enum Check {
    Failure(Failure),
    Store(crate::store::StoreError),
}

fn check(ctx: &mut Ctx<'_>, route: &Route, head: &RequestHead) -> Result<Grant, Check> {
    let token = bearer_token(head).map_err(Check::Failure)?;
    let config = ctx.config();
    let claims = access_token::verify(
        token,
        &config.keys.token_signing,
        &route.origin,
        &route.resource,
        ctx.now,
    )
    .map_err(|p| Check::Failure(Failure::InvalidToken(p.describe())))?;
    let grant = ctx
        .vault()
        .get::<Grant>(ns::GRANT, &claims.gid)
        .map_err(Check::Store)?;
    match grant {
        Some(g) if !g.value.revoked && g.value.route == route.name => Ok(g.value),
        _ => Err(Check::Failure(Failure::InvalidToken(
            "the token's grant has been revoked",
        ))),
    }
}

/// The bearer token of the `Authorization` header (RFC 6750 2.1).
pub(crate) fn bearer_token(head: &RequestHead) -> Result<&str, Failure> {
    match head.header_count("authorization") {
        0 => return Err(Failure::MissingToken),
        1 => {}
        _ => return Err(Failure::InvalidToken("more than one Authorization header")),
    }
    let value = head
        .header("authorization")
        .ok_or(Failure::InvalidToken(
            "the Authorization header is not valid text",
        ))?
        .trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        // A request with another scheme carries no bearer token (RFC 6750 3.1).
        return Err(Failure::MissingToken);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(Failure::InvalidToken("the bearer token is empty"));
    }
    Ok(token)
}
