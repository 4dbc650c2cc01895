//! The consent page and its decision, and the code the client gets once
//! the user agreed (RFC 6749 4.1.2).

use super::*;

pub(in crate::flow) fn consent_key(user: &User, client_id: &str, route: &str) -> String {
    crypto::sha256_b64url(format!("{}|{client_id}|{route}", user.sub).as_bytes())
}

/// Signed in: may this user use the route at all, and did they already consent?
pub(in crate::flow) fn after_sign_in(
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
pub(in crate::flow) fn issue_code(
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
        return store_unavailable_page(ctx, e);
    }
    let mut params = vec![("code", code.as_str())];
    if let Some(s) = &pending.state {
        params.push(("state", s));
    }
    params.push(("iss", &route.origin));
    redirect(&form::with_query(&pending.redirect_uri, &params))
}

/// The pending request and session behind a consent page or its answer.
pub(in crate::flow) type ConsentContext = (
    CookieValue,
    Session,
    crate::store::Versioned<PendingAuthorization>,
);

pub(in crate::flow) fn consent_context(
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
        Err(e) => return Err(Box::new(store_unavailable_page(ctx, e).into())),
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
pub(in crate::flow) fn consent_page(
    ctx: &mut Ctx<'_>,
    route: &Route,
    head: &RequestHead,
) -> Outcome {
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
pub(in crate::flow) fn consent_decision(
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
