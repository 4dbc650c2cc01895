//! The machine's front door: every event of a request's life goes through
//! [`handle`], with the stage the request is in, and comes back as the next
//! stage and the commands to carry out. The host (`host::http`, and the
//! root context when it wakes a parked request) and the flow tests' fake
//! host drive the machine through this one function.
//!
//! Reading a body is a command too: the machine says how much it wants
//! ([`Command::ReadRequestBody`], [`Command::ReadResponseBody`]), and the
//! bytes come back as the next event. So the limits on what the filter
//! reads are decided here, once, not by each host.

use super::{Command, Ctx, Next, RequestHead, Stage, Step, answer};
use crate::outbound::CallResponse;

/// Most of a response body read back when trailers end it.
pub const MAX_HELD_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Something that happened to the request.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The request line and headers.
    RequestHeaders(RequestHead),
    /// Request body arrived: `size` bytes are buffered so far, and
    /// `end_of_stream` says whether that is all of it.
    RequestBody { size: usize, end_of_stream: bool },
    /// Request trailers arrived: the body held so far is all of it.
    RequestTrailers,
    /// The bytes a [`Command::ReadRequestBody`] asked for.
    RequestBodyRead(Vec<u8>),
    /// The answer to the call the request waits for (status 0: it failed).
    CallAnswer(CallResponse),
    /// A refresh of the upstream token the parked request waits for may
    /// have finished: look again.
    Wake,
    /// The MCP server's response headers.
    ResponseHeaders(ResponseHead),
    /// Response body arrived, as for [`Event::RequestBody`].
    ResponseBody { size: usize, end_of_stream: bool },
    /// Response trailers arrived: the response body held is all of it.
    ResponseTrailers,
    /// The bytes a [`Command::ReadResponseBody`] asked for.
    ResponseBodyRead { body: Vec<u8>, end_of_stream: bool },
}

/// What the machine reads of the MCP server's response headers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResponseHead {
    /// `:status`; 0 if missing or not a number.
    pub status: u32,
    /// `Content-Type`, lower-case.
    pub content_type: String,
    /// The body is compressed (`Content-Encoding` other than `identity`).
    pub encoded: bool,
    pub www_authenticate: Option<String>,
    /// The server set `Access-Control-Allow-Origin` itself.
    pub has_allow_origin: bool,
}

impl ResponseHead {
    pub fn from_pairs(headers: &[(String, Vec<u8>)]) -> Self {
        let value = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| std::str::from_utf8(v).ok())
        };
        ResponseHead {
            status: value(":status").and_then(|s| s.parse().ok()).unwrap_or(0),
            content_type: value("content-type")
                .unwrap_or_default()
                .to_ascii_lowercase(),
            encoded: value("content-encoding").is_some_and(|e| !e.eq_ignore_ascii_case("identity")),
            www_authenticate: value("www-authenticate").map(str::to_string),
            has_allow_origin: value("access-control-allow-origin").is_some(),
        }
    }
}

/// The request is at `stage` and `event` happened: the next stage, and
/// what to do.
pub fn handle(ctx: &mut Ctx<'_>, stage: &Stage, event: &Event) -> Step {
    let mut step = step(ctx, stage, event);
    // The step's log lines go first: a read command ends the list.
    let mut commands: Vec<Command> = ctx.notes.drain(..).map(Command::Log).collect();
    if !commands.is_empty() {
        commands.append(&mut step.commands);
        step.commands = commands;
    }
    step
}

fn step(ctx: &mut Ctx<'_>, stage: &Stage, event: &Event) -> Step {
    match event {
        Event::RequestHeaders(head) => super::on_request_headers(ctx, head),
        Event::RequestBody {
            size,
            end_of_stream,
        } => request_body(ctx, stage, *size, *end_of_stream),
        Event::RequestTrailers => match request_body_limit(ctx, stage) {
            // One byte past the limit is enough to refuse a larger body.
            Some(limit) => Step::then(stage, Command::ReadRequestBody(limit + 1)),
            None => Step::unchanged(stage),
        },
        Event::RequestBodyRead(body) => super::on_request_body(ctx, stage, body),
        Event::CallAnswer(answer) => super::on_call_response(ctx, stage, answer),
        Event::Wake => super::on_wake(ctx, stage).unwrap_or_else(|| Step::hold(stage)),
        Event::ResponseHeaders(head) => answer::headers(ctx, stage, head),
        Event::ResponseBody {
            size,
            end_of_stream,
        } => answer::body(stage, *size, *end_of_stream),
        Event::ResponseTrailers => answer::trailers(stage),
        Event::ResponseBodyRead {
            body,
            end_of_stream,
        } => answer::body_read(ctx, stage, body, *end_of_stream),
    }
}

/// The most request body the filter reads at this stage, if it reads it
/// at all: the filter's own endpoints, and MCP POSTs whose messages are
/// judged.
fn request_body_limit(ctx: &Ctx<'_>, stage: &Stage) -> Option<usize> {
    match stage {
        Stage::ReadingBody { .. } => Some(super::MAX_ENDPOINT_BODY_BYTES),
        Stage::Forwarded { passage, .. } if passage.inspect.is_some() => {
            Some(ctx.config().mcp.max_request_bytes)
        }
        _ => None,
    }
}

/// Request body arrived: held until whole, then read. A body past the
/// limit is read up to one byte past it, for the step to refuse it.
fn request_body(ctx: &Ctx<'_>, stage: &Stage, size: usize, end_of_stream: bool) -> Step {
    let Some(limit) = request_body_limit(ctx, stage) else {
        return Step::unchanged(stage);
    };
    if !end_of_stream && size <= limit {
        // Held here until whole: the endpoints' bodies never go upstream,
        // and an MCP POST goes on only once its messages are judged.
        return Step::hold(stage);
    }
    Step::then(stage, Command::ReadRequestBody(size.min(limit + 1)))
}

impl Step {
    /// Nothing changes and the stream stays held.
    pub(crate) fn hold(stage: &Stage) -> Self {
        Step {
            stage: stage.clone(),
            commands: Vec::new(),
            next: Next::Stop,
        }
    }

    /// The stage stays; the one command is carried out (a read, whose
    /// answer is the next event).
    pub(crate) fn then(stage: &Stage, command: Command) -> Self {
        Step {
            stage: stage.clone(),
            commands: vec![command],
            next: Next::Stop,
        }
    }
}
