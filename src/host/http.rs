//! The HTTP context: turns each proxy-wasm callback into an event for the
//! machine ([`flow::handle`]), runs the step on the store, and has the
//! executor carry out the commands. What it keeps itself is only what a
//! host must: the step waiting for the store (etcd), and the callbacks
//! that came meanwhile.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};

use super::abi;
use super::calls;
use super::executor::{self, Carried, Role};
use super::random::HostRandom;
use super::store_steps::{self, Pending, Ran, StepFn};
use super::waiters::{self, Machine, Waiters};
use crate::flow::{self, Event, Filter, Next, RequestHead, ResponseHead, Stage, Step};
use crate::outbound::CallResponse;

pub struct Request {
    context_id: u32,
    filter: Option<Rc<Filter>>,
    waiters: Waiters,
    /// The request's stage (shared with the registry while it is parked).
    machine: Machine,
    /// A step waiting for the store (etcd): every callback holds the
    /// stream meanwhile, and what arrived is taken up once it is done.
    waiting: Option<Waiting>,
    /// The request had no body (its headers ended it).
    headers_only: bool,
    /// What arrived while a step waited.
    held: Held,
}

/// A step waiting for the store, and the kind of callback that started it.
struct Waiting {
    pending: Pending<Step>,
    origin: Origin,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// The request headers: the stream is paused with all iteration stopped.
    Headers,
    /// Any other request-side callback (body, trailers, a call's answer).
    Request,
    /// A response callback.
    Response,
}

/// Callbacks that came while a step waited for the store.
#[derive(Default)]
struct Held {
    /// Some of the request body arrived.
    body_seen: bool,
    /// The request body ended (its last callback, or trailers).
    body_ended: bool,
    /// The response body seen so far: its size, and whether it ended.
    response_body: Option<(usize, bool)>,
    /// Response trailers arrived.
    response_trailers: bool,
}

impl Request {
    pub fn new(context_id: u32, filter: Option<Rc<Filter>>, waiters: Waiters) -> Self {
        Request {
            context_id,
            filter,
            waiters,
            machine: Machine::default(),
            waiting: None,
            headers_only: false,
            held: Held::default(),
        }
    }

    fn stage(&self) -> Stage {
        self.machine.borrow().clone()
    }

    /// Hands `event` to the machine on the configured store and carries
    /// out the step. Returns whether the stream may go on; a step that
    /// waits for the store holds it, and is finished in
    /// [`Request::store_answered`].
    fn run(&mut self, filter: &Filter, origin: Origin, event: Event) -> Next {
        let stage = self.stage();
        // The endpoints' steps (token, revoke, register, consent) read etcd
        // itself, not this Envoy's cache: some decide without writing (a
        // refresh token unknown in a stale copy), and they are few.
        let fresh = matches!(stage, Stage::ReadingBody { .. });
        let step: StepFn<Step> = Box::new(move |ctx| flow::handle(ctx, &stage, &event));
        match store_steps::start(filter, fresh, step) {
            Ran::Done(step) => self.finish(filter, origin, step),
            Ran::Waiting(pending) => {
                self.waiting = Some(Waiting { pending, origin });
                Next::Stop
            }
        }
    }

    /// A step is done: the stage moves on and its commands are carried out.
    /// A read's bytes, or a call the host refused, are the next event.
    fn finish(&mut self, filter: &Filter, origin: Origin, step: Step) -> Next {
        if !HostRandom::healthy() {
            self.fail_closed("host randomness failed");
            return Next::Stop;
        }
        let Step {
            stage,
            commands,
            next,
        } = step;
        *self.machine.borrow_mut() = stage;
        match executor::carry_out(commands, &self.waiters, Role::Request) {
            Carried::Done => {}
            Carried::Failed => {
                self.fail_closed("could not carry out the request decision");
                return Next::Stop;
            }
            Carried::CallRefused => {
                return self.run(filter, origin, Event::CallAnswer(CallResponse::failed()));
            }
            Carried::Read(event) => return self.run(filter, origin, event),
        }
        if matches!(*self.machine.borrow(), Stage::Parked { .. }) {
            self.waiters
                .borrow_mut()
                .park(self.context_id, self.machine.clone());
        }
        if self.waiters.borrow().is_waiting() {
            // Look often while anything waits or a refresh is to start.
            let _ = abi::set_tick_period_ms(waiters::FAST_TICK_MS);
        }
        next
    }

    /// The store answered the waiting step's call.
    fn store_answered(&mut self, filter: &Filter, waiting: Waiting, answer: &CallResponse) {
        let origin = waiting.origin;
        match store_steps::resume(filter, waiting.pending, answer) {
            Ran::Waiting(pending) => self.waiting = Some(Waiting { pending, origin }),
            Ran::Done(step) => {
                let next = self.finish(filter, origin, step);
                self.went_on(filter, origin, next);
            }
        }
    }

    /// A step that waited is done; `next` is its decision. The stream was
    /// held meanwhile: the callbacks that came are taken up, then it is let
    /// go (or stays held, if the machine says so).
    fn went_on(&mut self, filter: &Filter, origin: Origin, next: Next) {
        if self.waiting.is_some() {
            return;
        }
        match origin {
            Origin::Headers => self.headers_went_on(filter, next),
            Origin::Request => {
                self.held.body_seen = false;
                self.held.body_ended = false;
                if next == Next::Continue && !abi::resume_request() {
                    log::error!("could not resume a request after a store answer");
                }
            }
            Origin::Response => {
                let mut next = next;
                if let Some((size, end_of_stream)) = self.held.response_body.take() {
                    next = self.run(
                        filter,
                        Origin::Response,
                        Event::ResponseBody {
                            size,
                            end_of_stream,
                        },
                    );
                }
                if std::mem::take(&mut self.held.response_trailers) && self.waiting.is_none() {
                    next = self.run(filter, Origin::Response, Event::ResponseTrailers);
                }
                if self.waiting.is_none() && next == Next::Continue && !abi::resume_response() {
                    log::error!("could not resume a response after a store answer");
                }
            }
        }
    }

    /// The headers' step waited. Envoy holds the body of a request whose
    /// headers are paused (proxy-wasm's pause stops all iteration), so
    /// usually none arrived: letting the headers go on hands the body to
    /// the body callback, which has it judged before it passes. If parts
    /// did arrive, the body callback has them and lets them go once judged
    /// (a partial body must never be let go unjudged).
    fn headers_went_on(&mut self, filter: &Filter, next: Next) {
        let needs_body = match &*self.machine.borrow() {
            Stage::ReadingBody { .. } => true,
            Stage::Forwarded { passage, .. } => passage.inspect.is_some(),
            _ => false,
        };
        if !needs_body || self.headers_only {
            if next == Next::Continue && !abi::resume_request() {
                log::error!("could not resume a request after a store answer");
            }
            return;
        }
        if std::mem::take(&mut self.held.body_ended) {
            let next = self.run(filter, Origin::Request, Event::RequestTrailers);
            if self.waiting.is_none() && next == Next::Continue && !abi::resume_request() {
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
    }

    fn fail_closed(&mut self, why: &str) {
        *self.machine.borrow_mut() = Stage::Answered;
        executor::fail_closed(why);
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
            if waiting.pending.token == token_id {
                self.store_answered(&filter, waiting, &answer);
            } else {
                log::warn!("an answer came for a call this request is not waiting for");
                self.waiting = Some(waiting);
            }
            return;
        }
        let next = self.run(&filter, Origin::Request, Event::CallAnswer(answer));
        if self.waiting.is_none() && next == Next::Continue && !abi::resume_request() {
            log::error!("could not resume a request after a call");
        }
    }

    fn on_done(&mut self) -> bool {
        self.waiters.borrow_mut().forget(self.context_id);
        true
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
        action(self.run(&filter, Origin::Headers, Event::RequestHeaders(head)))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.waiting.is_some() {
            // Taken up when the step is done.
            self.held.body_seen = true;
            self.held.body_ended |= end_of_stream;
            return Action::Pause;
        }
        let Some(filter) = self.filter.clone() else {
            return Action::Pause;
        };
        action(self.run(
            &filter,
            Origin::Request,
            Event::RequestBody {
                size: body_size,
                end_of_stream,
            },
        ))
    }

    /// Trailers end a request whose body the filter holds (HTTP/2, or
    /// chunked HTTP/1.1): the body callback never sees `end_of_stream`, so
    /// the machine hears of the end here; left to the default, Envoy would
    /// forward the body unjudged.
    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.waiting.is_some() {
            self.held.body_ended = true;
            return Action::Pause;
        }
        let Some(filter) = self.filter.clone() else {
            return Action::Pause;
        };
        action(self.run(&filter, Origin::Request, Event::RequestTrailers))
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.waiting.is_some() {
            return Action::Pause;
        }
        let Some(filter) = self.filter.clone() else {
            return Action::Continue;
        };
        let headers = abi::headers(MapType::HttpResponseHeaders).unwrap_or_default();
        let head = ResponseHead::from_pairs(&headers);
        action(self.run(&filter, Origin::Response, Event::ResponseHeaders(head)))
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
        action(self.run(
            &filter,
            Origin::Response,
            Event::ResponseBody {
                size: body_size,
                end_of_stream,
            },
        ))
    }

    /// Trailers end a response whose body is being rewritten (HTTP/2, or
    /// chunked HTTP/1.1): the body callback never sees `end_of_stream`, so
    /// the machine finishes the rewrite here; left to the default, Envoy
    /// would pass the held `tools/list` answer on unfiltered.
    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.waiting.is_some() {
            self.held.response_trailers = true;
            return Action::Pause;
        }
        let Some(filter) = self.filter.clone() else {
            return Action::Continue;
        };
        action(self.run(&filter, Origin::Response, Event::ResponseTrailers))
    }
}
