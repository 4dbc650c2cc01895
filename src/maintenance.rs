//! Periodic work each VM does on its root context's tick: pruning expired
//! store entries (shared data never shrinks) and refreshing the identity
//! provider's discovery document and keys before they expire, so sign-ins
//! rarely wait for them and rotated keys are known early.

use jsonwebtoken::jwk::JwkSet;

use crate::flow::Ctx;
use crate::oauth::records::ns;
use crate::oidc::{self, Discovery};
use crate::outbound::{CallResponse, OutboundCall};

/// How often the host calls [`tick`].
pub const TICK_SECONDS: u64 = 30;
/// Shared-data entries checked per prune, to bound the work of one tick.
pub const PRUNE_PER_TICK: usize = 500;
/// The cached IdP documents are refreshed when they expire within this.
const REFRESH_BEFORE_SECONDS: u64 = 600;
/// How long fetched IdP documents are cached.
pub const IDP_CACHE_SECONDS: u64 = 3600;

/// What a maintenance call was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Discovery,
    Jwks,
}

/// One tick: the calls to make to keep the IdP caches warm. (Pruning is
/// the shared-data backend's: `store::prune`.)
pub fn tick(ctx: &mut Ctx<'_>) -> Vec<(Purpose, OutboundCall)> {
    let now = ctx.now;
    let idp = &ctx.config().identity_provider;
    let discovery = ctx
        .vault()
        .get::<Discovery>(ns::OIDC, "discovery")
        .ok()
        .flatten();
    match discovery {
        Some(d) if d.expires_at > now + REFRESH_BEFORE_SECONDS => {
            let jwks_fresh = ctx
                .vault()
                .get::<JwkSet>(ns::OIDC, "jwks")
                .ok()
                .flatten()
                .is_some_and(|j| j.expires_at > now + REFRESH_BEFORE_SECONDS);
            if jwks_fresh {
                return Vec::new();
            }
            oidc::jwks_call(idp, &d.value)
                .map(|c| vec![(Purpose::Jwks, c)])
                .unwrap_or_default()
        }
        _ => vec![(Purpose::Discovery, oidc::discovery_call(idp))],
    }
}

/// A maintenance call answered; may ask for a follow-up call (the keys after discovery).
pub fn on_answer(
    ctx: &mut Ctx<'_>,
    purpose: Purpose,
    answer: &CallResponse,
) -> Option<(Purpose, OutboundCall)> {
    let idp = &ctx.config().identity_provider;
    match purpose {
        Purpose::Discovery => match oidc::parse_discovery(idp, answer) {
            Ok(d) => {
                let _ = ctx
                    .vault()
                    .put(ns::OIDC, "discovery", &d, IDP_CACHE_SECONDS, 0);
                oidc::jwks_call(idp, &d).ok().map(|c| (Purpose::Jwks, c))
            }
            Err(e) => {
                log::warn!("refreshing the identity provider's discovery document failed: {e}");
                None
            }
        },
        Purpose::Jwks => {
            match oidc::parse_jwks(answer) {
                Ok(jwks) => {
                    let _ = ctx
                        .vault()
                        .put(ns::OIDC, "jwks", &jwks, IDP_CACHE_SECONDS, 0);
                }
                Err(e) => log::warn!("refreshing the identity provider's keys failed: {e}"),
            }
            None
        }
    }
}
