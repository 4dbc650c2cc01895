//! Evaluating a compiled policy against a user and, when known, one MCP
//! message. Unknown facts (no message yet, at sign-in) make criteria on the
//! message Unknown (three-valued logic), so a route is refused outright only
//! when no message could ever be allowed.

use serde_json::Value;

use super::{Criterion, Expr, Matcher, Op, Policy, Subject};
use crate::oauth::records::User;

/// What a message says, as policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub method: &'a str,
    /// The tool of a `tools/call` (or the tool a `tools/list` entry would call).
    pub tool: Option<&'a str>,
    /// `params.arguments` of a `tools/call`; `None` when unknown (listing).
    pub arguments: Option<&'a Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    True,
    False,
    Unknown,
}

impl Truth {
    fn from(b: bool) -> Self {
        if b { Truth::True } else { Truth::False }
    }
    fn not(self) -> Self {
        match self {
            Truth::True => Truth::False,
            Truth::False => Truth::True,
            Truth::Unknown => Truth::Unknown,
        }
    }
    fn and(items: impl Iterator<Item = Truth>) -> Self {
        let mut out = Truth::True;
        for t in items {
            match t {
                Truth::False => return Truth::False,
                Truth::Unknown => out = Truth::Unknown,
                Truth::True => {}
            }
        }
        out
    }
    fn or(items: impl Iterator<Item = Truth>) -> Self {
        let mut out = Truth::False;
        for t in items {
            match t {
                Truth::True => return Truth::True,
                Truth::Unknown => out = Truth::Unknown,
                Truth::False => {}
            }
        }
        out
    }
}

/// The outcome, and the rule that decided it (for the audit log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub rule: String,
}

/// Allowed when some `allow` holds and no `deny` holds (deny beats allow;
/// nothing allowed means denied). With `message` unknown, "allowed" means
/// "some message could be allowed".
pub fn evaluate(
    policy: &Policy,
    allow_any_authenticated_user: bool,
    user: &User,
    message: Option<&Message<'_>>,
) -> Decision {
    for (i, rule) in policy.rules.iter().enumerate() {
        if rule
            .deny
            .as_ref()
            .is_some_and(|deny| eval(deny, user, message) == Truth::True)
        {
            return Decision {
                allowed: false,
                rule: format!("policy[{i}].deny"),
            };
        }
    }
    if allow_any_authenticated_user {
        return Decision {
            allowed: true,
            rule: "allow_any_authenticated_user".into(),
        };
    }
    let mut possible = None;
    for (i, rule) in policy.rules.iter().enumerate() {
        match rule.allow.as_ref().map(|a| eval(a, user, message)) {
            Some(Truth::True) => {
                return Decision {
                    allowed: true,
                    rule: format!("policy[{i}].allow"),
                };
            }
            Some(Truth::Unknown) if possible.is_none() => possible = Some(i),
            _ => {}
        }
    }
    match possible {
        // Unknown facts: no message yet, or a tool listed without its arguments.
        Some(i) if message.is_none_or(|m| m.arguments.is_none()) => Decision {
            allowed: true,
            rule: format!("policy[{i}].allow"),
        },
        _ => Decision {
            allowed: false,
            rule: "no allow rule matched".into(),
        },
    }
}

fn eval(expr: &Expr, user: &User, message: Option<&Message<'_>>) -> Truth {
    match expr {
        Expr::And(items) => Truth::and(items.iter().map(|e| eval(e, user, message))),
        Expr::Or(items) => Truth::or(items.iter().map(|e| eval(e, user, message))),
        Expr::Not(items) => Truth::and(items.iter().map(|e| eval(e, user, message))).not(),
        Expr::Nor(items) => Truth::or(items.iter().map(|e| eval(e, user, message))).not(),
        Expr::Criterion(c) => criterion(c, user, message),
    }
}

fn criterion(c: &Criterion, user: &User, message: Option<&Message<'_>>) -> Truth {
    let (subject, matcher) = match c {
        Criterion::Constant(b) => return Truth::from(*b),
        Criterion::AuthenticatedUser => return Truth::True,
        Criterion::Match { subject, matcher } => (subject, matcher),
    };
    match subject {
        // RFC 5321 4.1.2 and RFC 4343: domains are case-insensitive; so are
        // emails in practice (every major identity provider).
        Subject::Domain => {
            let domain = policy_email(user)
                .and_then(|e| e.rsplit_once('@'))
                .map(|(_, d)| d);
            Truth::from(domain.is_some_and(|d| matches(matcher, d, Case::Insensitive)))
        }
        Subject::Email => {
            Truth::from(policy_email(user).is_some_and(|e| matches(matcher, e, Case::Insensitive)))
        }
        Subject::User => Truth::from(matches(matcher, &user.sub, Case::Sensitive)),
        // A list matches when one of its elements does.
        Subject::Groups => Truth::from(list_matches(
            matcher,
            user.groups.iter().map(String::as_str),
        )),
        Subject::Claim(name) => Truth::from(match user.claims.get(name) {
            Some(Value::Array(items)) => {
                list_matches(matcher, items.iter().filter_map(scalar_text_ref))
            }
            Some(v) => scalar_text(v).is_some_and(|t| matches(matcher, &t, Case::Sensitive)),
            None => false,
        }),
        Subject::McpMethod => match message {
            None => Truth::Unknown,
            Some(m) => Truth::from(matches(matcher, m.method, Case::Sensitive)),
        },
        // Tool names compare ASCII case-insensitively, so `Admin_x` can't slip
        // past `starts_with: admin_` on a server that matches loosely; names
        // outside the MCP tool-name alphabet are refused before policy runs.
        Subject::McpTool => match message {
            None => Truth::Unknown,
            Some(m) => Truth::from(
                m.tool
                    .is_some_and(|t| matches(matcher, t, Case::Insensitive)),
            ),
        },
        Subject::McpArgument(pointer) => match message {
            None => Truth::Unknown,
            Some(Message {
                arguments: None,
                tool: Some(_),
                ..
            }) => Truth::Unknown,
            Some(m) => Truth::from(
                m.arguments
                    .and_then(|a| a.pointer(pointer))
                    .and_then(scalar_text)
                    .is_some_and(|t| matches(matcher, &t, Case::Sensitive)),
            ),
        },
    }
}

/// The email policy may trust: none when the identity provider says it is
/// unverified (a user could otherwise claim any domain). Providers that
/// never say (Entra ID) are trusted as they are.
fn policy_email(user: &User) -> Option<&str> {
    user.email
        .as_deref()
        .filter(|_| user.email_verified != Some(false))
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn scalar_text_ref(v: &Value) -> Option<&str> {
    v.as_str()
}

#[derive(Clone, Copy)]
enum Case {
    Sensitive,
    Insensitive,
}

fn list_matches<'a>(matcher: &Matcher, mut items: impl Iterator<Item = &'a str>) -> bool {
    // `not` and `not_in` on a list mean "no element is": checked over all.
    let negative = matcher
        .ops
        .iter()
        .all(|op| matches!(op, Op::Not(_) | Op::NotIn(_)));
    if negative {
        items.all(|i| matches(matcher, i, Case::Sensitive))
    } else {
        items.any(|i| matches(matcher, i, Case::Sensitive))
    }
}

/// Every operator of the matcher holds for `value`.
fn matches(matcher: &Matcher, value: &str, case: Case) -> bool {
    let norm = |s: &str| match case {
        Case::Sensitive => s.to_string(),
        Case::Insensitive => s.to_ascii_lowercase(),
    };
    let v = norm(value);
    matcher.ops.iter().all(|op| match op {
        Op::Is(x) => v == norm(x),
        Op::StartsWith(x) => v.starts_with(&norm(x)),
        Op::EndsWith(x) => v.ends_with(&norm(x)),
        Op::Contains(x) => v.contains(&norm(x)),
        Op::In(xs) => xs.iter().any(|x| v == norm(x)),
        Op::NotIn(xs) => !xs.iter().any(|x| v == norm(x)),
        Op::Not(x) => v != norm(x),
    })
}
