//! Carries out the machine's commands, for every context: a request's own
//! callbacks, and the root context when it wakes a parked request. This is
//! the only place a command becomes a proxy-wasm call.

use proxy_wasm::types::{BufferType, MapType};

use super::waiters::Waiters;
use super::{abi, calls};
use crate::flow::{Command, Event};

/// Who carries the commands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The request's own callback.
    Request,
    /// The root context, for a parked request it woke. A call made now
    /// would answer the root context, not the request, so none is made.
    Woken,
}

/// How carrying out went.
#[derive(Debug, PartialEq)]
pub enum Carried {
    Done,
    /// The host refused a command the request can't go on without.
    Failed,
    /// The host refused the call outright: the machine hears of it as a
    /// failed call.
    CallRefused,
    /// The machine asked to read a body: this is the next event.
    Read(Event),
}

/// Carries out `commands` in order. A request header change the host
/// refuses stops everything (the request must not go on half-changed);
/// response changes are best effort.
pub fn carry_out(commands: Vec<Command>, waiters: &Waiters, role: Role) -> Carried {
    let mut read = None;
    for command in commands {
        let name = name(&command);
        let ok = match command {
            Command::Reply(reply) => {
                let headers: Vec<(&str, &str)> = reply
                    .headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                abi::send_local_response(reply.status, &headers, &reply.body)
            }
            Command::RemoveRequestHeader(name) => {
                abi::remove_header(MapType::HttpRequestHeaders, name)
            }
            Command::SetRequestHeader(name, value) => {
                abi::replace_header(MapType::HttpRequestHeaders, name, &value)
            }
            Command::SetCredential(name, value) => {
                abi::replace_header(MapType::HttpRequestHeaders, name, value.expose())
            }
            Command::SetResponseHeader(name, value) => {
                if !abi::replace_header(MapType::HttpResponseHeaders, name, &value) {
                    log::warn!("could not set the response header {name}");
                }
                true
            }
            Command::RemoveResponseHeader(name) => {
                if !abi::remove_header(MapType::HttpResponseHeaders, name) {
                    log::warn!("could not remove the response header {name}");
                }
                true
            }
            Command::Dispatch(call) => match role {
                Role::Woken => false,
                Role::Request => {
                    if calls::dispatch(&call).is_none() {
                        return Carried::CallRefused;
                    }
                    true
                }
            },
            Command::StartRefresh(job) => {
                waiters.borrow_mut().queue_refresh(*job);
                true
            }
            Command::TokenInUse { route, sub } => {
                waiters.borrow_mut().used(route, sub, abi::now_seconds());
                true
            }
            Command::ReadRequestBody(n) => {
                let body = abi::buffer(BufferType::HttpRequestBody, 0, n).unwrap_or_default();
                read = Some(Event::RequestBodyRead(body));
                true
            }
            Command::ReadResponseBody {
                up_to,
                end_of_stream,
            } => {
                let body = abi::buffer(BufferType::HttpResponseBody, 0, up_to).unwrap_or_default();
                read = Some(Event::ResponseBodyRead {
                    body,
                    end_of_stream,
                });
                true
            }
            Command::ReplaceResponseBody { len, with } => {
                if !abi::set_buffer(BufferType::HttpResponseBody, 0, len, &with) {
                    log::error!("could not rewrite a tools/list answer");
                }
                true
            }
            Command::Log(note) => {
                log::log!(note.level, "{}", note.line);
                true
            }
        };
        if !ok {
            log::error!("host refused a command: {name}");
            return Carried::Failed;
        }
    }
    match read {
        Some(event) => Carried::Read(event),
        None => Carried::Done,
    }
}

/// Answers the request with a 500: what the filter can't carry out, it
/// does not let through.
pub fn fail_closed(why: &str) {
    log::error!("{why}; answering 500");
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

/// Writes a step's log lines (steps that are no request's, such as the
/// root context's refreshes).
pub fn write_notes(notes: Vec<crate::flow::Note>) {
    for note in notes {
        log::log!(note.level, "{}", note.line);
    }
}

fn name(command: &Command) -> &'static str {
    match command {
        Command::Reply(_) => "send reply",
        Command::RemoveRequestHeader(_) => "remove request header",
        Command::SetRequestHeader(..) => "set request header",
        Command::SetCredential(..) => "set credential header",
        Command::SetResponseHeader(..) => "set response header",
        Command::RemoveResponseHeader(_) => "remove response header",
        Command::Dispatch(_) => "dispatch call",
        Command::StartRefresh(_) => "start refresh",
        Command::TokenInUse { .. } => "note token in use",
        Command::ReadRequestBody(_) => "read request body",
        Command::ReadResponseBody { .. } => "read response body",
        Command::ReplaceResponseBody { .. } => "replace response body",
        Command::Log(_) => "log",
    }
}
