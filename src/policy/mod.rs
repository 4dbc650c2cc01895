//! Pomerium-style policy: `allow`/`deny` blocks of criteria combined with
//! `and`/`or`/`not`/`nor`, compiled once at configuration time.
//!
//! Semantics (as in Pomerium's PPL): a rule set allows a message when some
//! `allow` block matches and no `deny` block matches; deny beats allow, and
//! nothing allowed means denied.

mod eval;
mod parse;

pub use eval::{Decision, Message, Truth, evaluate};
pub use parse::parse_policy;

/// A route's compiled policy. No rules: nobody is allowed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub allow: Option<Expr>,
    pub deny: Option<Expr>,
}

/// A boolean expression over the user and the MCP message.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Every sub-expression holds.
    And(Vec<Expr>),
    /// At least one sub-expression holds.
    Or(Vec<Expr>),
    /// Not every sub-expression holds (NOT of AND), as Pomerium defines `not`.
    Not(Vec<Expr>),
    /// No sub-expression holds (NOT of OR).
    Nor(Vec<Expr>),
    Criterion(Criterion),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Criterion {
    /// `accept: true` matches everything; `reject: true` nothing.
    Constant(bool),
    /// `authenticated_user: true`: any signed-in user.
    AuthenticatedUser,
    Match {
        subject: Subject,
        matcher: Matcher,
    },
}

/// What a criterion looks at.
#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    Domain,
    Email,
    User,
    Groups,
    Claim(String),
    McpTool,
    McpMethod,
    /// RFC 6901 JSON pointer into `params.arguments`.
    McpArgument(String),
}

/// Operators on one string; all of them must hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    pub ops: Vec<Op>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Is(String),
    StartsWith(String),
    EndsWith(String),
    Contains(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Not(String),
}

/// Whether a signed-in user may use a route at all, before any MCP message
/// is known: some message could be allowed.
pub fn may_use_route(route: &crate::config::Route, user: &crate::oauth::records::User) -> bool {
    evaluate(
        &route.policy,
        route.allow_any_authenticated_user,
        user,
        None,
    )
    .allowed
}

#[cfg(test)]
mod tests;
