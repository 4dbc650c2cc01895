//! `/authorize`, sign-in at the identity provider, the callback, and the
//! consent page: everything between a client's authorization request and
//! the code it gets back (RFC 6749 4.1, OIDC Core 3.1, MCP authorization).

mod authorize;
mod consent;
mod idp_callback;
mod waits;

pub(in crate::flow) use authorize::*;
pub(in crate::flow) use consent::*;
pub(in crate::flow) use idp_callback::*;
pub(in crate::flow) use waits::*;

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
        id_token: crate::secret::SecretText,
        access_token: Option<crate::secret::SecretText>,
    },
    /// Userinfo, for the claims the ID token lacks (email).
    Userinfo {
        login: Login,
        claims: Map<String, Value>,
    },
    /// The upstream provider's answer to the code exchange.
    UpstreamCode {
        login: crate::upstream::UpstreamLogin,
        code: crate::secret::SecretText,
        credentials: crate::upstream::client::CredentialsIn,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum AfterDiscovery {
    RedirectToIdp {
        pending: Box<PendingAuthorization>,
    },
    Exchange {
        login: Box<Login>,
        code: crate::secret::SecretText,
    },
}

pub(in crate::flow) fn call_out(call: OutboundCall, wait: Wait) -> Outcome {
    Outcome::Call(call, Box::new(wait))
}

pub(in crate::flow) fn redirect(location: &str) -> Reply {
    Reply::new(302)
        .header("location", location)
        .header("cache-control", "no-store")
}

/// An error sent back to the client's (validated) redirect URI, RFC 6749
/// 4.1.2.1, with RFC 9207 `iss`.
pub(in crate::flow) fn redirect_error(
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
pub(in crate::flow) fn store_unavailable_page(
    ctx: &mut Ctx<'_>,
    e: crate::store::StoreError,
) -> Reply {
    if e != crate::store::StoreError::NotRead {
        ctx.warn(format!("a sign-in step could not use the store: {e}"));
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

pub(in crate::flow) fn bad_request_page(message: &str) -> Outcome {
    pages::error(400, "Authorization request refused", message).into()
}

/// The browser's session, if its cookie opens and the session still stands.
pub(in crate::flow) fn session_of(
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

pub(in crate::flow) fn sign_in_failed(ctx: &mut Ctx<'_>, message: &str) -> Outcome {
    ctx.warn(format!("sign-in failed: {message}"));
    pages::error(
        502,
        "Sign-in failed",
        &format!("{message}. Start again from your application; if it keeps failing, tell the administrator."),
    )
    .into()
}
