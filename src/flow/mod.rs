//! A request's life as an explicit state machine: the host hands the current
//! stage and an event to the core, which returns the next stage and the
//! effects to carry out. The core never calls the host; time, randomness
//! and the store come in through [`Ctx`].

mod answer;
mod inspect;
mod machine;
mod protect;
mod signin;
mod tokens;
mod upstream;

use crate::config::{Config, Route, Store, UnmatchedHosts};
use crate::cors;
use crate::env::Random;
use crate::metadata;
use crate::oauth::error::OAuthError;
use crate::oauth::pages;
use crate::oauth::records::User;
use crate::oauth::server_metadata;
use crate::outbound::{CallResponse, OutboundCall};
use crate::reply::{Failure, Reply, reply_for};
use crate::routing::{Endpoint, Placement, RouteTable};
use crate::store::{StoreView, Vault};

pub use answer::Rewrite;
pub use inspect::{HEADER_MISMATCH, POLICY_DENIED, filter_tools_json, filter_tools_sse};
pub use machine::{Event, MAX_HELD_RESPONSE_BYTES, ResponseHead, handle};
pub use signin::Wait;
pub use upstream::{Parked, RefreshJob, proactive_refresh, refresh_answer};

/// Largest body the filter reads for its own endpoints (forms, registration).
pub const MAX_ENDPOINT_BODY_BYTES: usize = 64 * 1024;

/// The filter as configured: everything derived from the configuration once.
#[derive(Debug)]
pub struct Filter {
    pub config: Config,
    pub routes: RouteTable,
    /// The etcd store, when `store.kind` is `etcd`.
    pub etcd: Option<crate::store::etcd::Settings>,
}

impl Filter {
    pub fn new(config: Config) -> Self {
        let routes = RouteTable::new(&config.routes);
        let etcd = match &config.store {
            Store::SharedData { .. } => None,
            Store::Etcd {
                prefix,
                cluster,
                authority,
                timeout_ms,
                credentials,
                cache_seconds,
            } => Some(crate::store::etcd::Settings {
                prefix: prefix.clone(),
                endpoint: crate::store::etcd::wire::Endpoint {
                    cluster: cluster.clone(),
                    authority: authority.clone(),
                    timeout_ms: *timeout_ms,
                },
                credentials: credentials.clone(),
                cache_seconds: *cache_seconds,
            }),
        };
        Filter {
            config,
            routes,
            etcd,
        }
    }

    pub fn route_index(&self, name: &str) -> Option<usize> {
        self.config.routes.iter().position(|r| r.name == name)
    }

    /// The prefix of every storage key.
    pub fn store_prefix(&self) -> &str {
        match &self.config.store {
            Store::SharedData { prefix } | Store::Etcd { prefix, .. } => prefix,
        }
    }
}

/// What a step may use besides the request: the clock, randomness, the store.
pub struct Ctx<'a> {
    pub filter: &'a Filter,
    /// Unix time, seconds.
    pub now: u64,
    pub random: &'a mut dyn Random,
    pub kv: &'a mut dyn StoreView,
    /// Log lines of this run of the step. A step may run more than once
    /// (etcd answers, conflicts); only its last run's lines are written.
    pub notes: Vec<Note>,
}

/// A log line a step asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub level: log::Level,
    pub line: String,
}

impl<'a> Ctx<'a> {
    pub fn vault(&mut self) -> Vault<'_> {
        Vault::new(
            &mut *self.kv,
            self.filter.store_prefix(),
            &self.filter.config.keys.encryption,
            self.now,
            &mut *self.random,
        )
    }

    pub fn token(&mut self, bytes: usize) -> String {
        crate::crypto::random_token(&mut *self.random, bytes)
    }

    /// The configuration, borrowed from the filter (not from the context).
    pub fn config(&self) -> &'a Config {
        &self.filter.config
    }

    pub fn info(&mut self, line: String) {
        self.notes.push(Note {
            level: log::Level::Info,
            line,
        });
    }

    pub fn warn(&mut self, line: String) {
        self.notes.push(Note {
            level: log::Level::Warn,
            line,
        });
    }

    pub fn error(&mut self, line: String) {
        self.notes.push(Note {
            level: log::Level::Error,
            line,
        });
    }
}

/// The request line and headers. Header names are lower-case (HTTP/2 and
/// Envoy's header map); values are bytes, since HTTP allows obs-text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHead {
    /// The headers end the request: there is no body.
    pub end_of_stream: bool,
    pub method: String,
    pub path: String,
    pub authority: String,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Envoy's downstream address (`source.address`), read only for the
    /// requests that need it ([`RequestHead::needs_downstream_address`]).
    pub downstream_address: Option<String>,
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

    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }

    /// All `Cookie` headers joined (HTTP/2 may split them, RFC 9113 8.2.3).
    pub fn cookies(&self) -> Option<String> {
        let all: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n == "cookie")
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .collect();
        (!all.is_empty()).then(|| all.join("; "))
    }

    /// The query string of `:path`.
    pub fn query(&self) -> &str {
        self.path
            .split_once('?')
            .map(|(_, q)| q)
            .unwrap_or_default()
    }

    /// Client registration is quota'd per source; other requests don't pay
    /// for reading the address.
    pub fn needs_downstream_address(&self) -> bool {
        self.method == "POST"
            && self.path.split('?').next() == Some(crate::routing::endpoints::REGISTER)
    }

    fn is_preflight(&self) -> bool {
        self.method == "OPTIONS"
            && self.header("origin").is_some()
            && self.header("access-control-request-method").is_some()
    }
}

/// What the filter keeps about a request it lets through to the MCP server.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Passage {
    /// The signed-in user, for policy on the messages.
    pub user: Option<Box<User>>,
    /// A POST whose JSON-RPC body must be judged before it goes on.
    pub inspect: Option<Box<Inspection>>,
    /// Ids of `tools/list` requests whose answers are filtered.
    pub tools_list: Vec<serde_json::Value>,
    /// Request header changes to make when the request goes on (the
    /// filter's own cookies removed, compression refused where an answer
    /// may need rewriting).
    pub header_commands: Vec<Command>,
    /// SHA-256 of the upstream token sent, so that the MCP server refusing
    /// it forgets that token only, not one a refresh stored meanwhile.
    pub upstream_token: Option<String>,
    /// How the `tools/list` answer is being rewritten, once its headers came.
    pub rewrite: Option<Rewrite>,
}

/// The request headers the body is checked against.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Inspection {
    /// A mirrored header (`Mcp-Method`, `Mcp-Name`, `MCP-Protocol-Version`)
    /// sent twice or not as text: refused, never read as absent.
    pub header_problem: Option<String>,
    pub content_type: Option<String>,
    pub protocol: Option<String>,
    pub mcp_method: Option<String>,
    pub mcp_name: Option<String>,
}

/// Where a request is in its life.
#[derive(Debug, Clone, PartialEq, Default)]
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
        /// The user, when the route injects an upstream token.
        sub: Option<String>,
        passage: Passage,
        /// `Access-Control-Allow-Origin` to add to the response, if any.
        allow_origin: Option<String>,
    },
    /// One of the filter's endpoints, waiting for the request body.
    ReadingBody {
        endpoint: Endpoint,
        route: usize,
        head: Box<RequestHead>,
    },
    /// Waiting for a refresh of the upstream token (the root context runs it).
    Parked {
        route: usize,
        origin: Option<String>,
        parked: Parked,
    },
    /// Waiting for the answer to an outside call.
    Waiting {
        route: usize,
        origin: Option<String>,
        wait: Box<Wait>,
    },
}

/// Work for the host to carry out, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Answer the request (the filter's own reply; nothing goes upstream).
    Reply(Reply),
    /// Request header changes: the request must not go on half-changed, so
    /// if the host refuses one the request is answered with an error.
    RemoveRequestHeader(&'static str),
    SetRequestHeader(&'static str, String),
    /// A request header that carries a credential (the upstream token):
    /// as [`Command::SetRequestHeader`], but it never prints.
    SetCredential(&'static str, crate::secret::SecretText),
    /// Response header changes: best effort, a refusal must not break the
    /// response.
    SetResponseHeader(&'static str, String),
    RemoveResponseHeader(&'static str),
    /// Make the call; its answer comes back as [`Event::CallAnswer`].
    Dispatch(OutboundCall),
    /// Hand the refresh to the root context, which makes its call and gives
    /// the answer to [`refresh_answer`], whatever became of this request.
    StartRefresh(Box<RefreshJob>),
    /// The user's upstream token went to the MCP server: the root context
    /// refreshes tokens in use before they expire.
    TokenInUse {
        route: String,
        sub: String,
    },
    /// Read the first `n` bytes of the request body; they come back as
    /// [`Event::RequestBodyRead`]. Always the step's last command.
    ReadRequestBody(usize),
    /// Read up to `up_to` bytes of the response body held; they come back
    /// as [`Event::ResponseBodyRead`]. Always the step's last command.
    ReadResponseBody {
        up_to: usize,
        end_of_stream: bool,
    },
    /// Replace the first `len` bytes of the response body held.
    ReplaceResponseBody {
        len: usize,
        with: Vec<u8>,
    },
    Log(Note),
}

/// Whether the host lets the request go on or holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Continue,
    /// Hold the stream (a reply was sent, or a body or call is awaited).
    Stop,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub stage: Stage,
    pub commands: Vec<Command>,
    pub next: Next,
}

impl Step {
    fn pass() -> Self {
        Step {
            stage: Stage::Passthrough,
            commands: Vec::new(),
            next: Next::Continue,
        }
    }

    /// Nothing to do: the request goes on as it is.
    pub(crate) fn unchanged(stage: &Stage) -> Self {
        Step {
            stage: stage.clone(),
            commands: Vec::new(),
            next: Next::Continue,
        }
    }

    fn reply(reply: Reply) -> Self {
        Step {
            stage: Stage::Answered,
            commands: vec![Command::Reply(reply)],
            next: Next::Stop,
        }
    }
}

/// What an endpoint handler decided.
pub(crate) enum Outcome {
    Reply(Reply),
    Call(OutboundCall, Box<Wait>),
    /// Forward to the MCP server; `sub`: the user, when an upstream token was injected.
    Forward {
        commands: Vec<Command>,
        sub: Option<String>,
        passage: Passage,
    },
    /// Wait for a refresh of the upstream token: the one this request
    /// starts (`start`), or one already running.
    Park {
        parked: Parked,
        start: Option<Box<RefreshJob>>,
    },
}

impl From<Reply> for Outcome {
    fn from(r: Reply) -> Self {
        Outcome::Reply(r)
    }
}

impl From<OAuthError> for Outcome {
    fn from(e: OAuthError) -> Self {
        Outcome::Reply(e.to_reply())
    }
}

fn finish(ctx: &Ctx<'_>, route: usize, origin: Option<String>, outcome: Outcome) -> Step {
    match outcome {
        Outcome::Reply(reply) => {
            Step::reply(cors::decorate(reply, &ctx.config().cors, origin.as_deref()))
        }
        Outcome::Call(call, wait) => Step {
            stage: Stage::Waiting {
                route,
                origin,
                wait,
            },
            commands: vec![Command::Dispatch(call)],
            next: Next::Stop,
        },
        Outcome::Park { parked, start } => Step {
            stage: Stage::Parked {
                route,
                origin,
                parked,
            },
            commands: start.map(Command::StartRefresh).into_iter().collect(),
            next: Next::Stop,
        },
        Outcome::Forward {
            mut commands,
            sub,
            passage,
        } => {
            commands.extend(passage.header_commands.iter().cloned());
            if let (Some(sub), Some(route)) = (&sub, ctx.config().routes.get(route)) {
                commands.push(Command::TokenInUse {
                    route: route.name.clone(),
                    sub: sub.clone(),
                });
            }
            Step {
                stage: Stage::Forwarded {
                    route,
                    sub,
                    passage,
                    allow_origin: cors::allow_origin(&ctx.config().cors, origin.as_deref()),
                },
                commands,
                next: Next::Continue,
            }
        }
    }
}

/// The request's headers have arrived.
fn on_request_headers(ctx: &mut Ctx<'_>, head: &RequestHead) -> Step {
    let filter = ctx.filter;
    let routes = &filter.config.routes;
    let (route, endpoint) = match filter.routes.classify(
        routes,
        &head.authority,
        &head.method,
        &head.path,
        head.is_preflight(),
    ) {
        Placement::Route(route, endpoint) => (route, endpoint),
        Placement::NoRoute if filter.config.unmatched_hosts == UnmatchedHosts::Passthrough => {
            return Step::pass();
        }
        // With passthrough, an odd authority of other traffic goes on, unless
        // it may be a route's host spelled so that another matcher reads it
        // differently.
        Placement::Ambiguous(_)
            if filter.config.unmatched_hosts == UnmatchedHosts::Passthrough
                && !filter.routes.might_be_a_route_host(&head.authority) =>
        {
            return Step::pass();
        }
        Placement::NoRoute => return Step::reply(crate::reply::no_route()),
        Placement::Ambiguous(why) => return Step::reply(crate::reply::ambiguous_request(why)),
    };
    let route_index = filter.route_index(&route.name).unwrap_or_default();
    let cors_cfg = &filter.config.cors;
    let origin = head.header("origin").map(str::to_string);
    let scopes = &filter.config.authorization_server.scopes_supported;
    let outcome: Outcome = match endpoint {
        Endpoint::Preflight => {
            return Step::reply(cors::preflight(
                cors_cfg,
                origin.as_deref(),
                head.header("access-control-request-headers"),
            ));
        }
        Endpoint::ProtectedResourceMetadata | Endpoint::AuthorizationServerMetadata => {
            match head.method.as_str() {
                "GET" | "HEAD" => {
                    let doc = if endpoint == Endpoint::ProtectedResourceMetadata {
                        metadata::protected_resource_metadata(
                            route,
                            &filter.config.authorization_server,
                        )
                    } else {
                        server_metadata::document(route, &filter.config)
                    };
                    Reply::json(200, &doc)
                        .header("cache-control", "public, max-age=300")
                        .into()
                }
                _ => reply_for(
                    &Failure::MethodNotAllowed {
                        allow: "GET, HEAD, OPTIONS",
                    },
                    route,
                    scopes,
                )
                .into(),
            }
        }
        Endpoint::Authorize => match head.method.as_str() {
            "GET" => signin::authorize(ctx, route, head),
            _ => reply_for(&Failure::MethodNotAllowed { allow: "GET" }, route, scopes).into(),
        },
        Endpoint::Callback => match head.method.as_str() {
            "GET" => signin::callback(ctx, route, head),
            _ => reply_for(&Failure::MethodNotAllowed { allow: "GET" }, route, scopes).into(),
        },
        Endpoint::UpstreamCallback => match head.method.as_str() {
            "GET" => upstream::callback(ctx, head),
            _ => reply_for(&Failure::MethodNotAllowed { allow: "GET" }, route, scopes).into(),
        },
        Endpoint::Consent if head.method == "GET" => signin::consent_page(ctx, route, head),
        Endpoint::Consent | Endpoint::Token | Endpoint::Register | Endpoint::Revoke => {
            if head.method != "POST" {
                let allow = if endpoint == Endpoint::Consent {
                    "GET, POST"
                } else {
                    "POST"
                };
                reply_for(&Failure::MethodNotAllowed { allow }, route, scopes).into()
            } else {
                return Step {
                    stage: Stage::ReadingBody {
                        endpoint,
                        route: route_index,
                        head: Box::new(head.clone()),
                    },
                    // The headers go on so the body reaches this filter; Envoy's
                    // buffer filter, configured after this one, holds them from
                    // the router until the body is whole, and the filter answers
                    // first. Should it be missing, the router may see the
                    // headers, so nothing that authenticates the request stays
                    // in them, and the path names no real endpoint.
                    commands: vec![
                        Command::RemoveRequestHeader("authorization"),
                        Command::RemoveRequestHeader("cookie"),
                        Command::SetRequestHeader(
                            ":path",
                            "/.well-known/mcp-oauth-filter/pending".to_string(),
                        ),
                    ],
                    next: Next::Continue,
                };
            }
        }
        Endpoint::Mcp => protect::authorize_request(ctx, route, head, true),
        Endpoint::OtherPath if route.forward_other_paths => {
            protect::authorize_request(ctx, route, head, false)
        }
        Endpoint::OtherPath => reply_for(&Failure::PathNotServed, route, scopes).into(),
    };
    finish(ctx, route_index, origin, outcome)
}

/// The whole request body (or as much as the filter reads) has arrived.
fn on_request_body(ctx: &mut Ctx<'_>, stage: &Stage, body: &[u8]) -> Step {
    if let Stage::Forwarded { passage, .. } = stage
        && passage.inspect.is_some()
    {
        return inspect::judge(ctx, stage, body);
    }
    let Stage::ReadingBody {
        endpoint,
        route,
        head,
    } = stage
    else {
        return Step::unchanged(stage);
    };
    let Some(route_cfg) = ctx.filter.config.routes.get(*route) else {
        return Step::reply(OAuthError::server_error("route vanished").to_reply());
    };
    let origin = head.header("origin").map(str::to_string);
    let outcome = if body.len() > MAX_ENDPOINT_BODY_BYTES {
        OAuthError::invalid_request(format!(
            "the request body is larger than {MAX_ENDPOINT_BODY_BYTES} bytes"
        ))
        .into()
    } else {
        match endpoint {
            Endpoint::Token => tokens::token(ctx, route_cfg, head, body),
            Endpoint::Revoke => tokens::revoke(ctx, route_cfg, head, body),
            Endpoint::Register => tokens::register(ctx, head, body),
            Endpoint::Consent => signin::consent_decision(ctx, route_cfg, head, body),
            _ => OAuthError::server_error("unexpected body").into(),
        }
    };
    finish(ctx, *route, origin, outcome)
}

/// The answer to an outside call arrived (status 0: the call failed).
fn on_call_response(ctx: &mut Ctx<'_>, stage: &Stage, answer: &CallResponse) -> Step {
    let Stage::Waiting {
        route,
        origin,
        wait,
    } = stage
    else {
        return Step {
            stage: stage.clone(),
            commands: Vec::new(),
            next: Next::Stop,
        };
    };
    let Some(route_cfg) = ctx.filter.config.routes.get(*route) else {
        return Step::reply(pages::error(
            500,
            "Server error",
            "The route of this request is gone.",
        ));
    };
    let outcome = match (**wait).clone() {
        Wait::UpstreamCode {
            login,
            code,
            credentials,
        } => upstream::code_answer(ctx, login, code, credentials, answer),
        wait => signin::resume(ctx, route_cfg, wait, answer),
    };
    finish(ctx, *route, origin.clone(), outcome)
}

/// A parked request's turn to look again (another request's refresh may
/// have finished). `None`: keep waiting.
fn on_wake(ctx: &mut Ctx<'_>, stage: &Stage) -> Option<Step> {
    let Stage::Parked {
        route,
        origin,
        parked,
    } = stage
    else {
        return None;
    };
    let route_cfg = ctx.filter.config.routes.get(*route)?;
    match upstream::inject(
        ctx,
        route_cfg,
        &parked.sub,
        parked.deadline,
        false,
        parked.passage.clone(),
    ) {
        Outcome::Park { .. } => None,
        outcome => Some(finish(ctx, *route, origin.clone(), outcome)),
    }
}

/// The route serving `resource` on the origin of `route` (RFC 8707), if any.
pub(crate) fn route_for_resource<'a>(
    config: &'a Config,
    route: &Route,
    resource: &str,
) -> Option<&'a Route> {
    config
        .routes
        .iter()
        .find(|r| r.origin == route.origin && r.resource == resource)
}
