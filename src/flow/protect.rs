//! Requests to the MCP server: a valid access token of this route, for a
//! grant that still stands, or the RFC 9728 challenge.

use super::{Command, Ctx, Inspection, Outcome, Passage, RequestHead, Stage, inspect, upstream};
use crate::config::Route;
use crate::oauth::access_token;
use crate::oauth::clients::store_error;
use crate::oauth::error::OAuthError;
use crate::oauth::records::{Grant, ns};
use crate::reply::{Failure, reply_for};

/// `mcp`: the request is for the MCP endpoint (its messages are judged and
/// the upstream token is injected); else for another path the route
/// forwards (`forward_other_paths`), which gets neither.
pub(super) fn authorize_request(
    ctx: &mut Ctx<'_>,
    route: &Route,
    head: &RequestHead,
    mcp: bool,
) -> Outcome {
    let scopes = &ctx.config().authorization_server.scopes_supported;
    // Streamable HTTP uses GET, POST and DELETE (MCP Transports); a body
    // under another method would go on unjudged.
    if !matches!(head.method.as_str(), "GET" | "HEAD" | "POST" | "DELETE") {
        return reply_for(
            &crate::reply::Failure::MethodNotAllowed {
                allow: "GET, POST, DELETE",
            },
            route,
            scopes,
        )
        .into();
    }
    // A body under GET, HEAD or DELETE would reach the server unjudged.
    if head.method != "POST" && !head.end_of_stream {
        return OAuthError::invalid_request(format!(
            "a {} request to the MCP endpoint carries no body (MCP Transports: messages are POSTed)",
            head.method
        ))
        .to_reply()
        .into();
    }
    let grant = match check(ctx, route, head) {
        Ok(grant) => grant,
        Err(Check::Failure(failure)) => return reply_for(&failure, route, scopes).into(),
        Err(Check::Store(e)) => return store_error(e).to_reply().into(),
    };
    // A user the route admits for no message at all is told so (not sent round a sign-in loop).
    if !crate::policy::may_use_route(route, &grant.user) {
        let who = grant.user.email.as_deref().unwrap_or(&grant.user.sub);
        ctx.info(crate::audit::route_refused(route, &grant.user));
        return OAuthError::access_denied(format!(
            "{who} is not allowed to use the MCP server {}",
            route.name
        ))
        .to_reply()
        .into();
    }
    if !mcp {
        let mut effects = own_cookies_removed(route, head);
        effects.push(Command::RemoveRequestHeader("authorization"));
        return Outcome::Forward {
            commands: effects,
            sub: None,
            passage: Passage::default(),
        };
    }
    let inspect = (head.method == "POST").then(|| {
        let mut problems = Vec::new();
        let mut mirrored = |name: &str| match mirrored_header(head, name) {
            Ok(v) => v,
            Err(why) => {
                problems.push(why);
                None
            }
        };
        let protocol = mirrored("mcp-protocol-version");
        let mcp_method = mirrored("mcp-method");
        let mcp_name = mirrored("mcp-name");
        Box::new(Inspection {
            header_problem: (!problems.is_empty()).then(|| problems.join("; ")),
            content_type: head.header("content-type").map(str::to_string),
            protocol,
            mcp_method,
            mcp_name,
        })
    });
    // A POST without a body has no message to judge: refused like any bad body.
    if head.end_of_stream && inspect.is_some() {
        let stage = Stage::Forwarded {
            route: ctx.filter.route_index(&route.name).unwrap_or_default(),
            sub: None,
            allow_origin: None,
            passage: Passage {
                user: Some(Box::new(grant.user.clone())),
                inspect: inspect.clone(),
                ..Passage::default()
            },
        };
        if let Some(Command::Reply(reply)) =
            inspect::judge(ctx, &stage, b"").commands.into_iter().next()
        {
            return reply.into();
        }
    }
    let mut header_commands = own_cookies_removed(route, head);
    if inspect.is_some() {
        // A tools/list answer must be readable to be filtered.
        header_commands.push(Command::RemoveRequestHeader("accept-encoding"));
    }
    let sub = grant.user.sub.clone();
    let passage = Passage {
        user: Some(Box::new(grant.user)),
        inspect,
        tools_list: Vec::new(),
        header_commands,
        upstream_token: None,
        rewrite: None,
    };
    // A request with an expired upstream token waits this long for the
    // refresh: at least refresh_wait_ms, at most a second more (the core's
    // clock counts whole seconds).
    let wait_ms = route.upstream.as_ref().map_or(0, |u| u.refresh_wait_ms);
    let deadline = ctx.now + wait_ms.div_ceil(1000) + 1;
    // Without upstream_oauth2 the Authorization header is removed (no token
    // passthrough, MCP authorization Security Considerations); with it, the
    // upstream token replaces it.
    upstream::inject(ctx, route, &sub, deadline, true, passage)
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
        config.authorization_server.access_token_ttl_seconds,
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

/// The `Cookie` header without the filter's own cookies: the MCP server
/// must not get the browser session (it could act as the user at the
/// consent page).
fn own_cookies_removed(route: &Route, head: &RequestHead) -> Vec<Command> {
    let Some(cookies) = head.cookies() else {
        return Vec::new();
    };
    let ours = [
        crate::oauth::session::cookie_name(route),
        crate::oauth::session::login_cookie_name(route),
    ];
    let rest: Vec<&str> = cookies
        .split(';')
        .map(str::trim)
        .filter(|c| {
            !c.is_empty()
                && !ours
                    .iter()
                    .any(|o| c.split_once('=').is_some_and(|(n, _)| n == *o))
        })
        .collect();
    if rest.len() == cookies.split(';').filter(|c| !c.trim().is_empty()).count() {
        return Vec::new();
    }
    if rest.is_empty() {
        vec![Command::RemoveRequestHeader("cookie")]
    } else {
        vec![Command::SetRequestHeader("cookie", rest.join("; "))]
    }
}

/// A header that must occur at most once and be text.
fn mirrored_header(head: &RequestHead, name: &str) -> Result<Option<String>, String> {
    match head.header_count(name) {
        0 => Ok(None),
        1 => head
            .header(name)
            .map(|v| Some(v.to_string()))
            .ok_or_else(|| format!("the {name} header is not valid text")),
        _ => Err(format!("the {name} header is sent more than once")),
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
