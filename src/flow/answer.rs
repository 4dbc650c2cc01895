//! The MCP server's answer: the upstream token it refused, CORS on the
//! way back, and the `tools/list` rewrite, whose progress (the shape of
//! the answer, an event cut in two between chunks) is part of the stage.

use super::machine::{MAX_HELD_RESPONSE_BYTES, ResponseHead};
use super::{Command, Ctx, Next, Stage, Step, inspect, upstream};
use crate::cors;

/// How a `tools/list` answer is being rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// One JSON body: held whole, then rewritten.
    Json,
    /// An event stream: complete events rewritten as they pass; `tail`
    /// holds an incomplete event until the rest arrives.
    Sse { tail: Vec<u8> },
    /// An answer the filter can't read: replaced whole by an error, never
    /// passed on unfiltered.
    Withhold,
}

impl Rewrite {
    /// The rewrite a `tools/list` answer with these headers needs, if any.
    fn for_answer(head: &ResponseHead) -> Option<Rewrite> {
        let ok = head.status == 200;
        if head.encoded && ok {
            Some(Rewrite::Withhold)
        } else if head.content_type.starts_with("application/json") {
            Some(Rewrite::Json)
        } else if head.content_type.starts_with("text/event-stream") {
            Some(Rewrite::Sse { tail: Vec::new() })
        } else if ok {
            Some(Rewrite::Withhold)
        } else {
            // An error status with a body that is no JSON-RPC answer: no tools in it.
            None
        }
    }
}

/// The response headers arrived.
pub(super) fn headers(ctx: &mut Ctx<'_>, stage: &Stage, head: &ResponseHead) -> Step {
    let Stage::Forwarded {
        route,
        sub,
        allow_origin,
        passage,
    } = stage
    else {
        return match stage {
            // The filter is still answering itself: hold whatever the upstream sent.
            Stage::ReadingBody { .. } | Stage::Waiting { .. } | Stage::Parked { .. } => {
                Step::hold(stage)
            }
            _ => Step::unchanged(stage),
        };
    };
    let mut commands = Vec::new();
    if let (Some(sub), Some(route_cfg)) = (sub, ctx.filter.config.routes.get(*route)) {
        // The server refused the upstream token: revoked at the provider, or too few scopes.
        let insufficient_scope = head.status == 403
            && head
                .www_authenticate
                .as_deref()
                .is_some_and(|w| w.contains("insufficient_scope"));
        if head.status == 401 || insufficient_scope {
            commands.extend(upstream::refused_by_server(
                ctx,
                route_cfg,
                sub,
                passage.upstream_token.as_deref(),
            ));
        }
    }
    if let Some(origin) = allow_origin.as_ref().filter(|_| !head.has_allow_origin) {
        commands.push(Command::SetResponseHeader(
            "access-control-allow-origin",
            origin.clone(),
        ));
        commands.push(Command::SetResponseHeader(
            "access-control-expose-headers",
            cors::EXPOSE_HEADERS.to_string(),
        ));
    }
    let mut next_stage = stage.clone();
    if inspect::filters_tools_list(stage) {
        let rewrite = Rewrite::for_answer(head);
        if rewrite == Some(Rewrite::Withhold) {
            commands.push(Command::SetResponseHeader(
                "content-type",
                "application/json".to_string(),
            ));
            commands.push(Command::RemoveResponseHeader("content-encoding"));
        }
        if rewrite.is_some() {
            // The rewritten body has another length.
            commands.push(Command::RemoveResponseHeader("content-length"));
        }
        if let Stage::Forwarded { passage, .. } = &mut next_stage {
            passage.rewrite = rewrite;
        }
    }
    Step {
        stage: next_stage,
        commands,
        next: Next::Continue,
    }
}

fn rewrite_of(stage: &Stage) -> Option<&Rewrite> {
    match stage {
        Stage::Forwarded { passage, .. } => passage.rewrite.as_ref(),
        _ => None,
    }
}

/// Response body arrived (`size` bytes buffered).
pub(super) fn body(stage: &Stage, size: usize, end_of_stream: bool) -> Step {
    match rewrite_of(stage) {
        None => Step::unchanged(stage),
        Some(Rewrite::Json) if !end_of_stream => Step::hold(stage),
        Some(Rewrite::Withhold) => {
            // Nothing of it is read: each chunk is dropped, and the end
            // replaced by the error.
            let with = if end_of_stream {
                inspect::withheld_tools_list(stage)
            } else {
                Vec::new()
            };
            let mut step = Step::unchanged(stage);
            step.commands
                .push(Command::ReplaceResponseBody { len: size, with });
            if end_of_stream {
                step.stage = done(stage);
            }
            step
        }
        Some(Rewrite::Json | Rewrite::Sse { .. }) => Step::then(
            stage,
            Command::ReadResponseBody {
                up_to: size,
                end_of_stream,
            },
        ),
    }
}

/// Response trailers arrived: the body held is all of it (HTTP/2, or
/// chunked HTTP/1.1). Left alone, Envoy would pass a held `tools/list`
/// answer on unfiltered.
pub(super) fn trailers(stage: &Stage) -> Step {
    match rewrite_of(stage) {
        None => Step::unchanged(stage),
        Some(_) => Step::then(
            stage,
            Command::ReadResponseBody {
                up_to: MAX_HELD_RESPONSE_BYTES,
                end_of_stream: true,
            },
        ),
    }
}

/// The stage once the rewrite is over.
fn done(stage: &Stage) -> Stage {
    let mut stage = stage.clone();
    if let Stage::Forwarded { passage, .. } = &mut stage {
        passage.rewrite = None;
    }
    stage
}

/// The response body a read asked for.
pub(super) fn body_read(ctx: &Ctx<'_>, stage: &Stage, body: &[u8], end_of_stream: bool) -> Step {
    let config = ctx.config();
    let len = body.len();
    let replace = |with: Vec<u8>| Command::ReplaceResponseBody { len, with };
    let mut step = Step::unchanged(stage);
    match rewrite_of(stage) {
        None => {}
        Some(Rewrite::Json) => {
            if let Some(new) = inspect::filter_tools_json(config, stage, body) {
                step.commands.push(replace(new));
            }
        }
        Some(Rewrite::Withhold) => {
            let with = if end_of_stream {
                inspect::withheld_tools_list(stage)
            } else {
                Vec::new()
            };
            step.commands.push(replace(with));
        }
        Some(Rewrite::Sse { tail }) => {
            let mut data = tail.clone();
            data.extend_from_slice(body);
            let (mut out, used) = inspect::filter_tools_sse(config, stage, &data);
            let rest = data.split_off(used.min(data.len()));
            if end_of_stream {
                out.extend_from_slice(&inspect::finish_tools_sse(config, stage, &rest));
            } else if let Stage::Forwarded { passage, .. } = &mut step.stage {
                passage.rewrite = Some(Rewrite::Sse { tail: rest });
            }
            step.commands.push(replace(out));
        }
    }
    if end_of_stream {
        step.stage = done(&step.stage);
    }
    step
}
