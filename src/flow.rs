//! A request's life as an explicit state machine: the host hands the current
//! stage and an event to the core, which returns the next stage and the
//! effects to carry out. The core never calls the host.

use crate::config::{Config, Route};
use crate::cors;
use crate::metadata;
use crate::reply::{Failure, Reply, reply_for};
use crate::routing::{Endpoint, RouteTable};

/// The filter as configured: everything derived from the configuration once.
#[derive(Debug)]
pub struct Filter {
    pub config: Config,
    pub routes: RouteTable,
}

impl Filter {
    pub fn new(config: Config) -> Self {
        let routes = RouteTable::new(&config.routes);
        Filter { config, routes }
    }
}

/// The request line and headers. Header names are lower-case (HTTP/2 and
/// Envoy's header map); values are bytes, since HTTP allows obs-text.
#[derive(Debug, Clone, Default)]
pub struct RequestHead {
    pub method: String,
    pub path: String,
    pub authority: String,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl RequestHead {
    pub fn from_pairs(headers: Vec<(String, Vec<u8>)>) -> Self {
        let mut head = RequestHead::default();
        for (name, value) in &headers {
            let text = || String::from_utf8_lossy(value).into_owned();
            match name.as_str() {
                ":method" => head.method = text(),
                ":path" => head.path = text(),
                ":authority" => head.authority = text(),
                _ => {}
            }
        }
        head.headers = headers;
        head
    }

    /// The header's value when it occurs once and is valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut values = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name));
        let first = values.next()?;
        if values.next().is_some() {
            return None;
        }
        std::str::from_utf8(&first.1).ok()
    }

    fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }

    fn is_preflight(&self) -> bool {
        self.method == "OPTIONS"
            && self.header("origin").is_some()
            && self.header("access-control-request-method").is_some()
    }
}

/// Where a request is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Stage {
    #[default]
    Start,
    /// Not for a route's host: the filter stays out of the way.
    Passthrough,
    /// The filter answered it itself.
    Answered,
    /// Authorized and forwarded to the MCP server.
    Forwarded {
        route: usize,
        /// `Access-Control-Allow-Origin` to add to the response, if any.
        allow_origin: Option<String>,
    },
}

/// Work for the host to carry out, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    SendReply(Reply),
    RemoveRequestHeader(&'static str),
    SetRequestHeader(&'static str, String),
    SetResponseHeader(&'static str, String),
}

/// Whether the host lets the request go on or holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Continue,
    /// Hold the stream (a reply was sent, or a call is outstanding).
    Stop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub stage: Stage,
    pub effects: Vec<Effect>,
    pub next: Next,
}

impl Step {
    fn pass() -> Self {
        Step {
            stage: Stage::Passthrough,
            effects: Vec::new(),
            next: Next::Continue,
        }
    }

    fn reply(reply: Reply) -> Self {
        Step {
            stage: Stage::Answered,
            effects: vec![Effect::SendReply(reply)],
            next: Next::Stop,
        }
    }
}

/// The request's headers have arrived.
pub fn on_request_headers(filter: &Filter, head: &RequestHead) -> Step {
    let routes = &filter.config.routes;
    let Some((route, endpoint)) = filter.routes.classify(
        routes,
        &head.authority,
        &head.method,
        &head.path,
        head.is_preflight(),
    ) else {
        return Step::pass();
    };
    let cors_cfg = &filter.config.cors;
    let origin = head.header("origin");
    let scopes = &filter.config.authorization_server.scopes_supported;
    match endpoint {
        Endpoint::Preflight => Step::reply(cors::preflight(
            cors_cfg,
            origin,
            head.header("access-control-request-headers"),
        )),
        Endpoint::ProtectedResourceMetadata => {
            let reply = match head.method.as_str() {
                "GET" | "HEAD" => Reply::json(
                    200,
                    &metadata::protected_resource_metadata(
                        route,
                        &filter.config.authorization_server,
                    ),
                )
                .header("cache-control", "public, max-age=300"),
                _ => reply_for(
                    &Failure::MethodNotAllowed {
                        allow: "GET, HEAD, OPTIONS",
                    },
                    route,
                    scopes,
                ),
            };
            Step::reply(cors::decorate(reply, cors_cfg, origin))
        }
        Endpoint::Protected => match authenticate(head, route) {
            Err(failure) => Step::reply(cors::decorate(
                reply_for(&failure, route, scopes),
                cors_cfg,
                origin,
            )),
            Ok(()) => Step {
                stage: Stage::Forwarded {
                    route: routes
                        .iter()
                        .position(|r| r.name == route.name)
                        .unwrap_or_default(),
                    allow_origin: cors::allow_origin(cors_cfg, origin),
                },
                // No token passthrough (MCP authorization, Security Considerations):
                // the client's credential never reaches the MCP server.
                effects: vec![Effect::RemoveRequestHeader("authorization")],
                next: Next::Continue,
            },
        },
    }
}

/// The upstream response's headers have arrived. `has_allow_origin`: the MCP
/// server already set `Access-Control-Allow-Origin`.
pub fn on_response_headers(stage: &Stage, has_allow_origin: bool) -> Vec<Effect> {
    match stage {
        Stage::Forwarded {
            allow_origin: Some(origin),
            ..
        } if !has_allow_origin => vec![
            Effect::SetResponseHeader("access-control-allow-origin", origin.clone()),
            Effect::SetResponseHeader(
                "access-control-expose-headers",
                cors::EXPOSE_HEADERS.to_string(),
            ),
        ],
        _ => Vec::new(),
    }
}

/// Checks the request's bearer token (RFC 6750 2.1) for this route.
fn authenticate(head: &RequestHead, _route: &Route) -> Result<(), Failure> {
    match head.header_count("authorization") {
        0 => return Err(Failure::MissingToken),
        1 => {}
        _ => return Err(Failure::InvalidToken("more than one Authorization header")),
    }
    let value = head.header("authorization").ok_or(Failure::InvalidToken(
        "the Authorization header is not valid text",
    ))?;
    let value = value.trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        // A request with another scheme carries no bearer token (RFC 6750 3.1).
        return Err(Failure::MissingToken);
    }
    if token.trim().is_empty() {
        return Err(Failure::InvalidToken("the bearer token is empty"));
    }
    // The filter does not issue tokens yet, so no token can be one of ours.
    Err(Failure::InvalidToken(
        "the token was not issued by this server",
    ))
}
