//! The HTTP context: feeds request events to the core's state machine and
//! carries out the effects it returns.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};

use super::random::HostRandom;
use super::store_steps::{self, Pending, Ran, StepFn};
use super::waiters::{self, Waiters};
use super::{abi, calls};
use crate::flow::{self, Effect, Filter, Next, RequestHead, Stage, Step};
use crate::outbound::CallResponse;

pub struct Request {
    context_id: u32,
    filter: Option<Rc<Filter>>,
    waiters: Waiters,
    stage: Stage,
    /// How a `tools/list` answer is being rewritten, if it is.
    tools_list: Option<Rewrite>,
    /// A step waiting for the store (etcd): every callback holds the
    /// stream meanwhile, and what arrived is taken up once it is done.
    waiting: Option<Waiting>,
    /// The request had no body (its headers ended it).
    headers_only: bool,
    /// What arrived while a step waited.
    held: Held,
}

/// Most of a held response body read back in its trailers callback.
const MAX_HELD_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// A step waiting for the store.
enum Waiting {
    /// A request step, and the callback that started it.
    Request(Pending<Step>, Origin),
    /// The response headers' step, and what was read of the headers.
    Response(Pending<Vec<Effect>>, ResponseHead),
}

impl Waiting {
    fn token(&self) -> u32 {
        match self {
            Waiting::Request(p, _) => p.token,
            Waiting::Response(p, _) => p.token,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Headers,
    Other,
}

/// Events held while a step waited for the store.
#[derive(Default)]
struct Held {
    /// Some of the request body arrived.
    body_seen: bool,
    /// The request body ended (its last callback, or trailers).
    body_ended: bool,
    /// The response body seen so far: its size, and whether it ended.
    response_body: Option<(usize, bool)>,
}

/// What the response-headers step needs of the headers, and keeps for
/// the `tools/list` rewrite.
#[derive(Clone)]
struct ResponseHead {
    status: u32,
    content_type: String,
    encoded: bool,
}

/// The shape of a `tools/list` answer being rewritten.
enum Rewrite {
    /// One JSON body: read whole, then rewritten.
    Json,
    /// An event stream: complete events rewritten as they pass; `tail` holds
    /// an incomplete event until the rest arrives.
    Sse { tail: Vec<u8> },
    /// An answer the filter can't read: replaced whole by an error.
    Withhold,
}

impl Request {
    pub fn new(context_id: u32, filter: Option<Rc<Filter>>, waiters: Waiters) -> Self {
        Request {
            context_id,
            filter,
            waiters,
            stage: Stage::Start,
            tools_list: None,
            waiting: None,
            headers_only: false,
            held: Held::default(),
        }
    }

    /// Runs one core step with the host's clock, randomness and store,
    /// then carries out its effects. Returns whether the request may go
    /// on; a step that waits for the store holds it (`Stop`) and is
    /// finished in [`Request::store_answered`].
    fn step(&mut self, filter: &Filter, origin: Origin, run: StepFn<Step>) -> Next {
        // The endpoints' steps (token, revoke, register, consent) read etcd
        // itself, not this Envoy's cache: some decide without writing (a
        // refresh token unknown in a stale copy), and they are few.
        let fresh = matches!(self.stage, Stage::ReadingBody { .. });
        match store_steps::start(filter, fresh, run) {
            Ran::Done(step) => self.finish(filter, origin, step),
            Ran::Waiting(pending) => {
                self.waiting = Some(Waiting::Request(pending, origin));
                Next::Stop
            }
        }
    }

    /// A step is done: its effects are carried out.
    fn finish(&mut self, filter: &Filter, origin: Origin, step: Step) -> Next {
        if !HostRandom::healthy() {
            self.fail_closed("host randomness failed");
            return Next::Stop;
        }
        self.stage = step.stage;
        let next = match self.apply(step.effects) {
            Applied::Done => step.next,
            Applied::Failed => {
                self.fail_closed("could not carry out the request decision");
                return Next::Stop;
            }
            // The host refused the call outright: the core hears of it as a failed call.
            Applied::CallRefused => {
                let stage = self.stage.clone();
                return self.step(
                    filter,
                    origin,
                    Box::new(move |ctx| {
                        flow::on_call_response(ctx, &stage, &CallResponse::failed())
                    }),
                );
            }
        };
        let now = abi::now_seconds();
        match &self.stage {
            Stage::Parked { .. } => {
                self.waiters
                    .borrow_mut()
                    .park(self.context_id, self.stage.clone());
            }
            Stage::Forwarded {
                route,
                sub: Some(sub),
                ..
            } => {
                if let Some(route) = filter.config.routes.get(*route) {
                    self.waiters.borrow_mut().used(&route.name, sub, now);
                }
            }
            _ => {}
        }
        if self.waiters.borrow().is_waiting() {
            // Look often while anything waits or a refresh is to start.
            let _ = abi::set_tick_period_ms(waiters::FAST_TICK_MS);
        }
        next
    }

    /// The store answered the waiting step's call.
    fn store_answered(&mut self, filter: &Filter, waiting: Waiting, answer: &CallResponse) {
        match waiting {
            Waiting::Request(pending, origin) => {
                match store_steps::resume(filter, pending, answer) {
                    Ran::Waiting(pending) => {
                        self.waiting = Some(Waiting::Request(pending, origin));
                    }
                    Ran::Done(step) => {
                        let next = self.finish(filter, origin, step);
                        self.went_on(filter, origin, next);
                    }
                }
            }
            Waiting::Response(pending, head) => {
                match store_steps::resume(filter, pending, answer) {
                    Ran::Waiting(pending) => {
                        self.waiting = Some(Waiting::Response(pending, head));
                    }
                    Ran::Done(effects) => {
                        self.response_effects(effects, &head);
                        let go_on = match self.held.response_body.take() {
                            Some((size, ended)) => {
                                self.response_body(filter, size, ended) == Action::Continue
                            }
                            None => true,
                        };
                        if go_on && !abi::resume_response() {
                            log::error!("could not resume a response after a store answer");
                        }
                    }
                }
            }
        }
    }

    /// A request step that waited is done; `next` is its decision. The
    /// stream was held meanwhile, so it is let go here, unless its body
    /// must be judged first. Envoy holds the body of a request whose
    /// headers are paused (proxy-wasm's pause stops all iteration), so
    /// usually none arrived: letting the headers go on hands the body to
    /// the body callback, which judges it before it passes. If parts did
    /// arrive, the body callback has them and lets them go once judged (a
    /// partial body must never be let go unjudged).
    fn went_on(&mut self, filter: &Filter, origin: Origin, next: Next) {
        if self.waiting.is_some() {
            return;
        }
        let needs_body = match &self.stage {
            Stage::ReadingBody { .. } => true,
            Stage::Forwarded { passage, .. } => passage.inspect.is_some(),
            _ => false,
        };
        if origin == Origin::Headers && needs_body && !self.headers_only {
            if std::mem::take(&mut self.held.body_ended) {
                let action = self.whole_body(filter);
                if action == Action::Continue && !abi::resume_request() {
                    log::error!("could not resume a request after judging its body");
                }
                return;
            }
            if std::mem::take(&mut self.held.body_seen) {
                return;
            }
            if !abi::resume_request() {
                log::error!("could not resume a request to read its body");
            }
            return;
        }
        if next == Next::Continue && !abi::resume_request() {
            log::error!("could not resume a request after a store answer");
        }
    }

    /// Carries out effects in order. If a header can't be changed, the
    /// request is answered with an error rather than forwarded half-done.
    fn apply(&mut self, effects: Vec<Effect>) -> Applied {
        for effect in effects {
            let ok = match &effect {
                Effect::SendReply(reply) => {
                    let headers: Vec<(&str, &str)> = reply
                        .headers
                        .iter()
                        .map(|(n, v)| (n.as_str(), v.as_str()))
                        .collect();
                    abi::send_local_response(reply.status, &headers, &reply.body)
                }
                Effect::RemoveRequestHeader(name) => {
                    abi::remove_header(MapType::HttpRequestHeaders, name)
                }
                Effect::SetRequestHeader(name, value) => {
                    abi::replace_header(MapType::HttpRequestHeaders, name, value)
                }
                Effect::SetResponseHeader(name, value) => {
                    abi::replace_header(MapType::HttpResponseHeaders, name, value)
                }
                Effect::Dispatch(call) => {
                    if calls::dispatch(call).is_none() {
                        return Applied::CallRefused;
                    }
                    true
                }
                Effect::StartRefresh(job) => {
                    self.waiters.borrow_mut().queue_refresh((**job).clone());
                    true
                }
            };
            if !ok {
                log::error!("host refused an effect: {}", effect_name(&effect));
                return Applied::Failed;
            }
        }
        Applied::Done
    }

    fn fail_closed(&mut self, why: &str) {
        log::error!("{why}; answering 500");
        self.stage = Stage::Answered;
        let body = br#"{"error":"server_error","error_description":"the authorization filter could not process this request"}"#;
        abi::send_local_response(
            500,
            &[
                ("content-type", "application/json"),
                ("cache-control", "no-store"),
            ],
            body,
        );
    }

    /// Picks up the stage another context gave this one when it woke it.
    fn sync_woken(&mut self) {
        if let Some(stage) = self.waiters.borrow_mut().take_woken(self.context_id) {
            self.stage = stage;
        }
    }
}

enum Applied {
    Done,
    Failed,
    CallRefused,
}

fn effect_name(effect: &Effect) -> &'static str {
    match effect {
        Effect::SendReply(_) => "send reply",
        Effect::RemoveRequestHeader(_) => "remove request header",
        Effect::SetRequestHeader(..) => "set request header",
        Effect::SetResponseHeader(..) => "set response header",
        Effect::Dispatch(_) => "dispatch call",
        Effect::StartRefresh(_) => "start refresh",
    }
}

fn action(next: Next) -> Action {
    match next {
        Next::Continue => Action::Continue,
        Next::Stop => Action::Pause,
    }
}

impl Context for Request {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(filter) = self.filter.clone() else {
            return;
        };
        let answer = calls::answer(num_headers, body_size);
        if let Some(waiting) = self.waiting.take() {
            if waiting.token() == token_id {
                self.store_answered(&filter, waiting, &answer);
            } else {
                log::warn!("an answer came for a call this request is not waiting for");
                self.waiting = Some(waiting);
            }
            return;
        }
        let stage = self.stage.clone();
        let next = self.step(
            &filter,
            Origin::Other,
            Box::new(move |ctx| flow::on_call_response(ctx, &stage, &answer)),
        );
        if next == Next::Continue && !abi::resume_request() {
            log::error!("could not resume a request after a call");
        }
    }

    fn on_done(&mut self) -> bool {
        self.waiters.borrow_mut().forget(self.context_id);
        true
    }
}

impl Request {
    /// The request body is whole (or ended by trailers): judged, or
    /// handed to the endpoint. Reads up to one byte past the limit,
    /// enough for the core to refuse a larger body.
    fn whole_body(&mut self, filter: &Filter) -> Action {
        let limit = filter
            .config
            .mcp
            .max_request_bytes
            .max(flow::MAX_ENDPOINT_BODY_BYTES)
            + 1;
        let body = abi::buffer(BufferType::HttpRequestBody, 0, limit).unwrap_or_default();
        let reading_body = matches!(self.stage, Stage::ReadingBody { .. });
        let stage = self.stage.clone();
        let next = self.step(
            filter,
            Origin::Other,
            Box::new(move |ctx| flow::on_request_body(ctx, &stage, &body)),
        );
        // The filter's own endpoints never go upstream.
        if reading_body {
            Action::Pause
        } else {
            action(next)
        }
    }

    fn request_body(&mut self, filter: &Filter, body_size: usize, end_of_stream: bool) -> Action {
        match &self.stage {
            Stage::ReadingBody { .. } => {}
            // An MCP POST: its messages are judged once the body is whole.
            Stage::Forwarded { passage, .. } if passage.inspect.is_some() => {
                let max = filter.config.mcp.max_request_bytes;
                if !end_of_stream && body_size <= max {
                    return Action::Pause;
                }
                // Past the limit, one byte more is enough for the core to refuse it.
                let body = abi::buffer(BufferType::HttpRequestBody, 0, body_size.min(max + 1))
                    .unwrap_or_default();
                let stage = self.stage.clone();
                return action(self.step(
                    filter,
                    Origin::Other,
                    Box::new(move |ctx| flow::on_request_body(ctx, &stage, &body)),
                ));
            }
            _ => return Action::Continue,
        }
        if body_size > flow::MAX_ENDPOINT_BODY_BYTES
            && let Some(step) = flow::on_body_too_large(&self.stage)
        {
            return action(self.finish(filter, Origin::Other, step));
        }
        if !end_of_stream {
            // Held here until whole: the body of the filter's endpoints is
            // never forwarded (the buffer filter after this one keeps the
            // headers from the router meanwhile).
            return Action::Pause;
        }
        let body = abi::buffer(BufferType::HttpRequestBody, 0, body_size).unwrap_or_default();
        let stage = self.stage.clone();
        let _ = self.step(
            filter,
            Origin::Other,
            Box::new(move |ctx| flow::on_request_body(ctx, &stage, &body)),
        );
        // The filter answered; the body never goes upstream.
        Action::Pause
    }

    fn response_body(&mut self, filter: &Filter, body_size: usize, end_of_stream: bool) -> Action {
        let Some(rewrite) = self.tools_list.as_mut() else {
            return Action::Continue;
        };
        match rewrite {
            Rewrite::Json => {
                if !end_of_stream {
                    return Action::Pause;
                }
                let body =
                    abi::buffer(BufferType::HttpResponseBody, 0, body_size).unwrap_or_default();
                if let Some(new) = flow::filter_tools_json(&filter.config, &self.stage, &body)
                    && !abi::set_buffer(BufferType::HttpResponseBody, 0, body_size, &new)
                {
                    log::error!("could not rewrite a tools/list answer");
                }
            }
            Rewrite::Withhold => {
                let out = if end_of_stream {
                    flow::withheld_tools_list(&self.stage)
                } else {
                    Vec::new()
                };
                if !abi::set_buffer(BufferType::HttpResponseBody, 0, body_size, &out) {
                    log::error!("could not withhold an unreadable tools/list answer");
                }
            }
            Rewrite::Sse { tail } => {
                let chunk =
                    abi::buffer(BufferType::HttpResponseBody, 0, body_size).unwrap_or_default();
                let mut data = std::mem::take(tail);
                data.extend_from_slice(&chunk);
                let (mut out, used) = flow::filter_tools_sse(&filter.config, &self.stage, &data);
                let rest = data.split_off(used.min(data.len()));
                if end_of_stream {
                    out.extend_from_slice(&flow::finish_tools_sse(
                        &filter.config,
                        &self.stage,
                        &rest,
                    ));
                } else {
                    *tail = rest;
                }
                if !abi::set_buffer(BufferType::HttpResponseBody, 0, body_size, &out) {
                    log::error!("could not rewrite a tools/list event stream");
                }
            }
        }
        Action::Continue
    }

    /// Carries out the response-headers step's effects and sets up the
    /// `tools/list` rewrite. Response header changes are best effort: a
    /// refusal must not break the response.
    fn response_effects(&mut self, effects: Vec<Effect>, head: &ResponseHead) {
        for effect in effects {
            if let Effect::SetResponseHeader(name, value) = effect {
                let _ = abi::replace_header(MapType::HttpResponseHeaders, name, &value);
            }
        }
        if !flow::filters_tools_list(&self.stage) {
            return;
        }
        let status = head.status;
        self.tools_list = if head.encoded && status == 200 {
            Some(Rewrite::Withhold)
        } else if head.content_type.starts_with("application/json") {
            Some(Rewrite::Json)
        } else if head.content_type.starts_with("text/event-stream") {
            Some(Rewrite::Sse { tail: Vec::new() })
        } else if status == 200 {
            Some(Rewrite::Withhold)
        } else {
            None
        };
        if let Some(Rewrite::Withhold) = self.tools_list {
            let _ = abi::replace_header(
                MapType::HttpResponseHeaders,
                "content-type",
                "application/json",
            );
            let _ = abi::remove_header(MapType::HttpResponseHeaders, "content-encoding");
        }
        // The rewritten body has another length.
        if self.tools_list.is_some() {
            let _ = abi::remove_header(MapType::HttpResponseHeaders, "content-length");
        }
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(filter) = self.filter.clone() else {
            self.fail_closed("no valid configuration");
            return Action::Pause;
        };
        let Some(pairs) = abi::headers(MapType::HttpRequestHeaders) else {
            self.fail_closed("could not read the request headers");
            return Action::Pause;
        };
        let mut head = RequestHead::from_pairs(pairs);
        head.end_of_stream = end_of_stream;
        self.headers_only = end_of_stream;
        if head.needs_downstream_address() {
            head.downstream_address = abi::property(&["source", "address"])
                .and_then(|bytes| String::from_utf8(bytes).ok());
        }
        action(self.step(
            &filter,
            Origin::Headers,
            Box::new(move |ctx| flow::on_request_headers(ctx, &head)),
        ))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.waiting.is_some() {
            // Taken up when the step is done.
            self.held.body_seen = true;
            self.held.body_ended |= end_of_stream;
            return Action::Pause;
        }
        self.sync_woken();
        let Some(filter) = self.filter.clone() else {
            return Action::Pause;
        };
        self.request_body(&filter, body_size, end_of_stream)
    }

    /// Trailers end a request whose body the filter holds (HTTP/2, or
    /// chunked HTTP/1.1): the body callback never sees `end_of_stream`, so
    /// the body is judged here; left to the default, Envoy would forward it
    /// unjudged.
    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.waiting.is_some() {
            self.held.body_ended = true;
            return Action::Pause;
        }
        self.sync_woken();
        let holds_body = match &self.stage {
            Stage::ReadingBody { .. } => true,
            Stage::Forwarded { passage, .. } => passage.inspect.is_some(),
            _ => false,
        };
        if !holds_body {
            return Action::Continue;
        }
        let Some(filter) = self.filter.clone() else {
            return Action::Pause;
        };
        self.whole_body(&filter)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.waiting.is_some() {
            // The buffer holds everything so far; taken up when the step is done.
            self.held.response_body = Some((body_size, end_of_stream));
            return Action::Pause;
        }
        let Some(filter) = self.filter.clone() else {
            return Action::Continue;
        };
        self.response_body(&filter, body_size, end_of_stream)
    }

    /// Trailers end a response whose body is being rewritten (HTTP/2, or
    /// chunked HTTP/1.1): the body callback never sees `end_of_stream`, so
    /// the rewrite is finished here; left to the default, Envoy would pass
    /// the held `tools/list` answer on unfiltered.
    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.waiting.is_some() {
            return Action::Pause;
        }
        if self.tools_list.is_none() {
            return Action::Continue;
        }
        let Some(filter) = self.filter.clone() else {
            return Action::Continue;
        };
        let held = abi::buffer(BufferType::HttpResponseBody, 0, MAX_HELD_RESPONSE_BYTES)
            .map_or(0, |b| b.len());
        let action = self.response_body(&filter, held, true);
        self.tools_list = None;
        action
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.waiting.is_some() {
            return Action::Pause;
        }
        self.sync_woken();
        match &self.stage {
            Stage::Forwarded { .. } => {}
            // The filter is still answering itself: hold whatever the upstream sent.
            Stage::ReadingBody { .. } | Stage::Waiting { .. } | Stage::Parked { .. } => {
                return Action::Pause;
            }
            _ => return Action::Continue,
        }
        let Some(filter) = self.filter.clone() else {
            return Action::Continue;
        };
        let headers = abi::headers(MapType::HttpResponseHeaders).unwrap_or_default();
        let value = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, v)| std::str::from_utf8(v).ok())
                .map(str::to_string)
        };
        let status = value(":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        let www_authenticate = value("www-authenticate");
        let has_allow_origin = value("access-control-allow-origin").is_some();
        let head = ResponseHead {
            status,
            content_type: value("content-type")
                .unwrap_or_default()
                .to_ascii_lowercase(),
            encoded: value("content-encoding").is_some_and(|e| !e.eq_ignore_ascii_case("identity")),
        };
        let stage = self.stage.clone();
        let run = Box::new(move |ctx: &mut flow::Ctx<'_>| {
            flow::on_response_headers(
                ctx,
                &stage,
                status,
                www_authenticate.as_deref(),
                has_allow_origin,
            )
        });
        match store_steps::start(&filter, false, run) {
            Ran::Done(effects) => {
                self.response_effects(effects, &head);
                Action::Continue
            }
            Ran::Waiting(pending) => {
                self.waiting = Some(Waiting::Response(pending, head));
                Action::Pause
            }
        }
    }
}
