//! `GET /.oauth/callback`: the identity provider sends the browser back
//! (OIDC Core 3.1.2.5). The code is exchanged, the ID token verified
//! against the provider's keys, and the user signed in.

use super::*;

/// `GET /.oauth/callback`: the identity provider sends the browser back.
pub(in crate::flow) fn callback(ctx: &mut Ctx<'_>, route: &Route, head: &RequestHead) -> Outcome {
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
        Some(discovery) => exchange(ctx, login, code.into(), discovery),
        None => call_out(
            oidc::discovery_call(&ctx.config().identity_provider),
            Wait::Discovery {
                then: AfterDiscovery::Exchange {
                    login: Box::new(login),
                    code: code.into(),
                },
            },
        ),
    }
}

pub(in crate::flow) fn exchange(
    ctx: &mut Ctx<'_>,
    login: Login,
    code: crate::secret::SecretText,
    discovery: Discovery,
) -> Outcome {
    let Some(route) = ctx.config().route(&login.route) else {
        return sign_in_failed(ctx, "The route of this sign-in is gone");
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
        Err(e) => sign_in_failed(ctx, &e),
    }
}

pub(in crate::flow) fn fetch_jwks(
    ctx: &mut Ctx<'_>,
    login: Login,
    discovery: Discovery,
    id_token: crate::secret::SecretText,
    access_token: Option<crate::secret::SecretText>,
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
        Err(e) => sign_in_failed(ctx, &e),
    }
}

#[allow(clippy::too_many_arguments)]
pub(in crate::flow) fn verify(
    ctx: &mut Ctx<'_>,
    _route: &Route,
    login: Login,
    discovery: Discovery,
    id_token: crate::secret::SecretText,
    access_token: Option<crate::secret::SecretText>,
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
            ctx,
            "The ID token was signed with a key the identity provider does not publish",
        ),
        Err(IdTokenProblem::Invalid(why)) => sign_in_failed(ctx, &why),
    }
}

/// The user is known: start the browser session and go on to consent.
pub(in crate::flow) fn complete_sign_in(
    ctx: &mut Ctx<'_>,
    login: Login,
    claims: Map<String, Value>,
) -> Outcome {
    let config = ctx.config();
    let user = oidc::user_from_claims(claims, &config.identity_provider.groups_claim);
    let session_ttl = config.authorization_server.session_ttl_seconds;
    let Some(route) = config.route(&login.route) else {
        return sign_in_failed(ctx, "The route of this sign-in is gone");
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
        Err(e) => return store_unavailable_page(ctx, e).into(),
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
        return store_unavailable_page(ctx, e).into();
    }
    let Some(key) = config.keys.encryption.first() else {
        return sign_in_failed(ctx, "No encryption key");
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
    ctx.info(format!(
        "signed in: user {} ({})",
        user.sub,
        user.email.as_deref().unwrap_or("no email")
    ));
    let mut pending = login.pending;
    pending.sid = Some(sid);
    let pending_id = ctx.token(24);
    if let Err(e) = ctx
        .vault()
        .put(ns::PENDING, &pending_id, &pending, PENDING_TTL_SECONDS, 0)
    {
        return store_unavailable_page(ctx, e).into();
    }
    let target = config.route(&pending.route).unwrap_or(route);
    after_sign_in(ctx, target, &pending_id, &pending, &user)
        .header("set-cookie", cookie)
        // The sign-in cookie has done its job.
        .header("set-cookie", session::set_login_cookie(route, "", 0))
        .into()
}
