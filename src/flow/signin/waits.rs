//! A sign-in step that waited for an outside call takes up its answer:
//! the client's metadata document, the provider's discovery document,
//! token answer, keys and userinfo.

use super::*;

/// An outside call answered: carry on where the request waited.
pub(in crate::flow) fn resume(
    ctx: &mut Ctx<'_>,
    route: &Route,
    wait: Wait,
    answer: &CallResponse,
) -> Outcome {
    match wait {
        // The upstream callback's own wait: `flow::upstream` takes it up.
        Wait::UpstreamCode { .. } => OAuthError::server_error("misrouted upstream answer").into(),
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
                Err(e) => return sign_in_failed(ctx, &e),
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
                Err(e) => return sign_in_failed(ctx, &e),
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
                Err(e) => return sign_in_failed(ctx, &e),
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
                Err(e) => sign_in_failed(ctx, &e),
            }
        }
    }
}
