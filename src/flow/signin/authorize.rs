//! `GET /.oauth/authorize` (RFC 6749 4.1.1, RFC 7636 4.3, RFC 8707 2): the
//! client, its redirect URI and PKCE are checked, then the user is sent to
//! the identity provider, or straight to consent when already signed in.

use super::*;

/// The authorization request's parameters (RFC 6749 4.1.1, RFC 7636 4.3, RFC 8707 2).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuthorizeParams {
    pub(in crate::flow) client_id: Option<String>,
    pub(in crate::flow) redirect_uri: Option<String>,
    pub(in crate::flow) response_type: Option<String>,
    pub(in crate::flow) state: Option<String>,
    pub(in crate::flow) code_challenge: Option<String>,
    pub(in crate::flow) code_challenge_method: Option<String>,
    pub(in crate::flow) resource: Option<String>,
    pub(in crate::flow) scope: Option<String>,
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

/// `GET /.oauth/authorize`.
pub(in crate::flow) fn authorize(ctx: &mut Ctx<'_>, route: &Route, head: &RequestHead) -> Outcome {
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
            Err(e) => return store_unavailable_page(ctx, e).into(),
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

pub(in crate::flow) fn continue_authorize(
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
            return store_unavailable_page(ctx, e).into();
        }
        return after_sign_in(ctx, target, &pending_id, &pending, &session.user).into();
    }
    start_sign_in(ctx, route, pending)
}

pub(in crate::flow) fn cached_discovery(ctx: &mut Ctx<'_>) -> Option<Discovery> {
    ctx.vault()
        .get::<Discovery>(ns::OIDC, "discovery")
        .ok()
        .flatten()
        .map(|d| d.value)
}

pub(in crate::flow) fn start_sign_in(
    ctx: &mut Ctx<'_>,
    route: &Route,
    pending: PendingAuthorization,
) -> Outcome {
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

pub(in crate::flow) fn callback_uri(route: &Route) -> String {
    format!("{}{}", route.origin, endpoints::CALLBACK)
}

pub(in crate::flow) fn redirect_to_idp(
    ctx: &mut Ctx<'_>,
    route: &Route,
    pending: PendingAuthorization,
    discovery: &Discovery,
) -> Outcome {
    let Some(key) = ctx.config().keys.encryption.first() else {
        return sign_in_failed(ctx, "No encryption key");
    };
    let browser_key = ctx.token(24);
    let verifier = ctx.token(32);
    let login = Login {
        pending,
        nonce: ctx.token(24),
        code_verifier: verifier.clone().into(),
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
