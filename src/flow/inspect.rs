//! Policy on the MCP messages of a POST: the body is read whole (up to
//! `mcp.max_request_bytes`), parsed once, checked against the headers that
//! mirror it, and every message judged; anything that can't be judged is
//! refused. `tools/list` answers are filtered to the tools the user may call.

use serde_json::{Value, json};

use super::{Ctx, Next, Passage, Stage, Step};
use crate::audit;
use crate::config::Route;
use crate::mcp::headers;
use crate::mcp::message::{BodyError, Element, Kind, parse_body};
use crate::mcp::tools_list;
use crate::oauth::records::User;
use crate::policy::{self, Message};
use crate::reply::Reply;

/// The JSON-RPC error code of a message policy denied (implementation-defined
/// server error range, JSON-RPC 2.0 section 5.1).
pub const POLICY_DENIED: i64 = -32003;
/// MCP 2026-07-28: headers that do not mirror the body.
pub const HEADER_MISMATCH: i64 = -32020;

fn rpc_error(status: u32, id: Value, code: i64, message: String) -> Reply {
    Reply::json(
        status,
        &json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}),
    )
    .header("cache-control", "no-store")
}

fn refuse(step_reply: Reply) -> Step {
    Step {
        stage: Stage::Answered,
        commands: vec![super::Command::Reply(step_reply)],
        next: Next::Stop,
    }
}

fn describe(e: &Element) -> String {
    match (&e.method, &e.tool) {
        (Some(m), Some(t)) => format!("{m} of tool {t:?}"),
        (Some(m), None) => m.clone(),
        _ => "response".into(),
    }
}

/// The body of a forwarded POST arrived whole: judge it.
pub(super) fn judge(ctx: &mut Ctx<'_>, stage: &Stage, body: &[u8]) -> Step {
    let Stage::Forwarded {
        route,
        sub,
        allow_origin,
        passage,
    } = stage
    else {
        return Step::unchanged(stage);
    };
    let Some(route_cfg) = ctx.filter.config.routes.get(*route) else {
        return refuse(rpc_error(
            500,
            Value::Null,
            -32603,
            "the route of this request is gone".into(),
        ));
    };
    let (Some(inspection), Some(user)) = (&passage.inspect, &passage.user) else {
        return Step::unchanged(stage);
    };
    let settings = &ctx.config().mcp;
    let is_json = inspection.content_type.as_deref().is_some_and(|c| {
        c.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    });
    if !is_json {
        return refuse(rpc_error(
            415,
            Value::Null,
            -32600,
            "an MCP POST must have Content-Type: application/json".into(),
        ));
    }
    if let Some(problem) = &inspection.header_problem {
        return refuse(rpc_error(
            400,
            Value::Null,
            HEADER_MISMATCH,
            format!("HeaderMismatch: {problem}"),
        ));
    }
    if body.len() > settings.max_request_bytes {
        return refuse(rpc_error(
            413,
            Value::Null,
            -32600,
            format!(
                "the request body is larger than {} bytes (mcp.max_request_bytes)",
                settings.max_request_bytes
            ),
        ));
    }
    let parsed = match parse_body(body) {
        Ok(b) => b,
        Err(BodyError::Parse(why)) => {
            return refuse(rpc_error(
                400,
                Value::Null,
                -32700,
                format!("Parse error: {why}"),
            ));
        }
        Err(BodyError::Invalid(why)) => {
            return refuse(rpc_error(
                400,
                Value::Null,
                -32600,
                format!("Invalid request: {why}"),
            ));
        }
    };
    let header_check = match parsed.elements.as_slice() {
        [single] if !parsed.batch => headers::check(
            inspection.protocol.as_deref(),
            inspection.mcp_method.as_deref(),
            inspection.mcp_name.as_deref(),
            single,
        ),
        _ if inspection.mcp_method.is_some() || inspection.mcp_name.is_some() => {
            Err("Mcp-Method and Mcp-Name describe one message, not a batch".to_string())
        }
        _ => Ok(()),
    };
    if let Err(why) = header_check {
        let id = match parsed.elements.first().map(|e| &e.kind) {
            Some(Kind::Request { id }) => id.clone(),
            _ => Value::Null,
        };
        return refuse(rpc_error(
            400,
            id,
            HEADER_MISMATCH,
            format!("HeaderMismatch: {why}"),
        ));
    }
    let decisions: Vec<(bool, String)> = parsed
        .elements
        .iter()
        .map(|e| {
            let (allowed, rule) = match &e.method {
                // A response the client sends the server (to sampling, elicitation) carries no call.
                None => (true, "response".to_string()),
                Some(method) => {
                    let message = Message {
                        method,
                        tool: e.tool.as_deref(),
                        arguments: e.arguments.as_ref(),
                    };
                    let d = policy::evaluate(
                        &route_cfg.policy,
                        route_cfg.allow_any_authenticated_user,
                        user,
                        Some(&message),
                    );
                    (d.allowed, d.rule)
                }
            };
            if settings.audit {
                ctx.info(audit::message(
                    route_cfg,
                    user,
                    e.method.as_deref(),
                    e.tool.as_deref(),
                    e.arguments.as_ref(),
                    allowed,
                    &rule,
                    settings.audit_arguments,
                ));
            }
            (allowed, rule)
        })
        .collect();
    if decisions.iter().all(|(allowed, _)| *allowed) {
        let tools_list = parsed
            .elements
            .iter()
            .filter(|e| e.method.as_deref() == Some("tools/list"))
            .filter_map(|e| match &e.kind {
                Kind::Request { id } => Some(id.clone()),
                _ => None,
            })
            .collect();
        let passage = Passage {
            user: passage.user.clone(),
            inspect: None,
            tools_list,
            header_commands: Vec::new(),
            upstream_token: passage.upstream_token.clone(),
            rewrite: None,
        };
        return Step {
            stage: Stage::Forwarded {
                route: *route,
                sub: sub.clone(),
                allow_origin: allow_origin.clone(),
                passage,
            },
            commands: Vec::new(),
            next: Next::Continue,
        };
    }
    let who = user.email.as_deref().unwrap_or(&user.sub);
    let denial = |e: &Element| format!("Policy denied {} for {who}", describe(e));
    if !parsed.batch {
        let e = &parsed.elements[0];
        return refuse(match &e.kind {
            Kind::Request { id } => rpc_error(200, id.clone(), POLICY_DENIED, denial(e)),
            _ => rpc_error(403, Value::Null, POLICY_DENIED, denial(e)),
        });
    }
    // A batch is answered whole: one result per request, none executed.
    let answers: Vec<Value> = parsed
        .elements
        .iter()
        .zip(&decisions)
        .filter_map(|(e, (allowed, _))| match &e.kind {
            Kind::Request { id } => {
                let message = if *allowed {
                    "Not executed: the batch contains a message policy denied".to_string()
                } else {
                    denial(e)
                };
                Some(json!({"jsonrpc": "2.0", "id": id, "error": {"code": POLICY_DENIED, "message": message}}))
            }
            _ => None,
        })
        .collect();
    if answers.is_empty() {
        return refuse(rpc_error(
            403,
            Value::Null,
            POLICY_DENIED,
            "Policy denied a message of this batch".into(),
        ));
    }
    refuse(Reply::json(200, &Value::Array(answers)).header("cache-control", "no-store"))
}

/// Whether a `tools/list` answer to this request is to be filtered.
pub fn filters_tools_list(stage: &Stage) -> bool {
    matches!(stage, Stage::Forwarded { passage, .. } if !passage.tools_list.is_empty() && passage.user.is_some())
}

fn keeper<'a>(route: &'a Route, user: &'a User) -> impl Fn(&str) -> bool + 'a {
    move |name: &str| {
        let message = Message {
            method: "tools/call",
            tool: Some(name),
            arguments: None,
        };
        policy::evaluate(
            &route.policy,
            route.allow_any_authenticated_user,
            user,
            Some(&message),
        )
        .allowed
    }
}

/// The body that replaces a `tools/list` answer the filter can't read
/// (compressed, or neither JSON nor an event stream): withheld, not passed
/// on unfiltered.
pub fn withheld_tools_list(stage: &Stage) -> Vec<u8> {
    tools_list::withheld(&tools_list_id(stage))
        .to_string()
        .into_bytes()
}

/// The id answers are withheld under: the first `tools/list` request's.
fn tools_list_id(stage: &Stage) -> Value {
    match stage {
        Stage::Forwarded { passage, .. } => {
            passage.tools_list.first().cloned().unwrap_or(Value::Null)
        }
        _ => Value::Null,
    }
}

/// A whole JSON `tools/list` answer, rewritten; `None` to leave it as is.
/// An answer that is not JSON is withheld.
pub fn filter_tools_json(
    config: &crate::config::Config,
    stage: &Stage,
    body: &[u8],
) -> Option<Vec<u8>> {
    let Stage::Forwarded { route, passage, .. } = stage else {
        return None;
    };
    let route = config.routes.get(*route)?;
    let user = passage.user.as_deref()?;
    match tools_list::filter_json(body, &keeper(route, user)) {
        tools_list::Filtered::Unchanged => None,
        tools_list::Filtered::Rewritten(bytes) => Some(bytes),
        tools_list::Filtered::Unreadable => Some(withheld_tools_list(stage)),
    }
}

/// The complete events at the front of an SSE answer, rewritten, and how
/// many bytes they used.
pub fn filter_tools_sse(
    config: &crate::config::Config,
    stage: &Stage,
    buffer: &[u8],
) -> (Vec<u8>, usize) {
    let Stage::Forwarded { route, passage, .. } = stage else {
        return (buffer.to_vec(), buffer.len());
    };
    let (Some(route), Some(user)) = (config.routes.get(*route), passage.user.as_deref()) else {
        return (buffer.to_vec(), buffer.len());
    };
    tools_list::filter_sse(buffer, &keeper(route, user), &tools_list_id(stage))
}

/// The end of an SSE answer: its last, unterminated event, judged.
pub fn finish_tools_sse(config: &crate::config::Config, stage: &Stage, rest: &[u8]) -> Vec<u8> {
    let Stage::Forwarded { route, passage, .. } = stage else {
        return rest.to_vec();
    };
    let (Some(route), Some(user)) = (config.routes.get(*route), passage.user.as_deref()) else {
        return rest.to_vec();
    };
    tools_list::finish_sse(rest, &keeper(route, user), &tools_list_id(stage))
}
