//! The audit trail: one structured log line per MCP message, and per
//! refusal of a route: who, what, the decision and the rule that made it.
//! Never a token or secret; arguments only when configured.

use serde_json::{Value, json};

use crate::config::Route;
use crate::oauth::records::User;

fn who(user: &User) -> Value {
    json!({"sub": user.sub, "email": user.email})
}

/// A user the route admits for no message.
pub fn route_refused(route: &Route, user: &User) -> String {
    json!({"audit": "mcp", "route": route.name, "user": who(user), "decision": "deny", "rule": "route"}).to_string()
}

/// One judged message.
#[allow(clippy::too_many_arguments)]
pub fn message(
    route: &Route,
    user: &User,
    method: Option<&str>,
    tool: Option<&str>,
    arguments: Option<&Value>,
    allowed: bool,
    rule: &str,
    include_arguments: bool,
) -> String {
    let mut line = json!({
        "audit": "mcp",
        "route": route.name,
        "user": who(user),
        "method": method,
        "tool": tool,
        "decision": if allowed { "allow" } else { "deny" },
        "rule": rule,
    });
    if include_arguments && let Some(a) = arguments {
        line["arguments"] = a.clone();
    }
    line.to_string()
}
