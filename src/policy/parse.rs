//! Policy JSON to [`Policy`], with errors that name the field.

use serde_json::{Map, Value};

use super::{Criterion, Expr, Matcher, Op, Policy, Rule, Subject};
use crate::config::ConfigError;

/// Compiles a route's `policy` value: one rule object or a list of them.
/// `field` is the path of the value, for error messages.
pub fn parse_policy(value: &Value, field: &str) -> Result<Policy, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut rules = Vec::new();
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if let Some(rule) = parse_rule(item, &format!("{field}[{i}]"), &mut errors) {
                    rules.push(rule);
                }
            }
        }
        Value::Object(_) => {
            if let Some(rule) = parse_rule(value, field, &mut errors) {
                rules.push(rule);
            }
        }
        _ => errors.push(ConfigError::new(
            field,
            "must be a rule object ({\"allow\": ..., \"deny\": ...}) or a list of them",
        )),
    }
    if errors.is_empty() {
        Ok(Policy { rules })
    } else {
        Err(errors)
    }
}

fn parse_rule(value: &Value, field: &str, errors: &mut Vec<ConfigError>) -> Option<Rule> {
    let Some(obj) = value.as_object() else {
        errors.push(ConfigError::new(
            field,
            "must be an object with `allow` and/or `deny`",
        ));
        return None;
    };
    let mut rule = Rule {
        allow: None,
        deny: None,
    };
    for (key, v) in obj {
        let path = format!("{field}.{key}");
        match key.as_str() {
            "allow" => rule.allow = parse_block(v, &path, errors),
            "deny" => rule.deny = parse_block(v, &path, errors),
            _ => errors.push(ConfigError::new(
                &path,
                "unknown key; expected `allow` or `deny`",
            )),
        }
    }
    if rule.allow.is_none() && rule.deny.is_none() && !obj.is_empty() {
        return None;
    }
    if obj.is_empty() {
        errors.push(ConfigError::new(
            field,
            "a rule needs `allow` and/or `deny`",
        ));
        return None;
    }
    Some(rule)
}

/// `{ "and": [...], "or": [...], "not": [...], "nor": [...] }`; several keys all must hold.
fn parse_block(value: &Value, field: &str, errors: &mut Vec<ConfigError>) -> Option<Expr> {
    let Some(obj) = value.as_object() else {
        errors.push(ConfigError::new(
            field,
            "must be an object with `and`, `or`, `not` or `nor`",
        ));
        return None;
    };
    if obj.is_empty() {
        errors.push(ConfigError::new(
            field,
            "needs at least one of `and`, `or`, `not`, `nor`",
        ));
        return None;
    }
    let mut parts = Vec::new();
    let before = errors.len();
    for (key, v) in obj {
        let path = format!("{field}.{key}");
        let make: fn(Vec<Expr>) -> Expr = match key.as_str() {
            "and" => Expr::And,
            "or" => Expr::Or,
            "not" => Expr::Not,
            "nor" => Expr::Nor,
            _ => {
                errors.push(ConfigError::new(
                    &path,
                    "unknown operator; expected `and`, `or`, `not` or `nor`",
                ));
                continue;
            }
        };
        let Some(items) = v.as_array() else {
            errors.push(ConfigError::new(&path, "must be a list of criteria"));
            continue;
        };
        let exprs: Vec<Expr> = items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| parse_expr(item, &format!("{path}[{i}]"), errors))
            .collect();
        parts.push(make(exprs));
    }
    if errors.len() > before {
        return None;
    }
    Some(if parts.len() == 1 {
        parts.remove(0)
    } else {
        Expr::And(parts)
    })
}

/// A list element: a nested block (`{"or": [...]}`) or a one-key criterion.
fn parse_expr(value: &Value, field: &str, errors: &mut Vec<ConfigError>) -> Option<Expr> {
    let Some(obj) = value.as_object() else {
        errors.push(ConfigError::new(
            field,
            "must be an object such as {\"domain\": {\"is\": \"example.com\"}}",
        ));
        return None;
    };
    if obj.len() != 1 {
        errors.push(ConfigError::new(field, "a criterion has exactly one key"));
        return None;
    }
    let (key, v) = obj.iter().next()?;
    if matches!(key.as_str(), "and" | "or" | "not" | "nor") {
        return parse_block(value, field, errors);
    }
    parse_criterion(key, v, &format!("{field}.{key}"), errors).map(Expr::Criterion)
}

fn parse_criterion(
    name: &str,
    value: &Value,
    field: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<Criterion> {
    let subject = match name {
        "accept" | "reject" | "authenticated_user" => {
            if value != &Value::Bool(true) {
                errors.push(ConfigError::new(field, "must be `true`"));
                return None;
            }
            return Some(match name {
                "accept" => Criterion::Constant(true),
                "reject" => Criterion::Constant(false),
                _ => Criterion::AuthenticatedUser,
            });
        }
        "domain" => Subject::Domain,
        "email" => Subject::Email,
        "user" => Subject::User,
        "groups" => Subject::Groups,
        "mcp_tool" => Subject::McpTool,
        "mcp_method" => Subject::McpMethod,
        "mcp_argument" => return parse_argument_criterion(value, field, errors),
        _ => match name.strip_prefix("claim/") {
            Some(claim) if !claim.is_empty() => Subject::Claim(claim.to_string()),
            _ => {
                errors.push(ConfigError::new(
                    field,
                    "unknown criterion; expected accept, reject, authenticated_user, domain, email, user, groups, claim/<name>, mcp_tool, mcp_method or mcp_argument",
                ));
                return None;
            }
        },
    };
    let matcher = parse_matcher(value, field, errors, &[])?;
    Some(Criterion::Match { subject, matcher })
}

/// `{"mcp_argument": {"pointer": "/repo/owner", "is": "acme"}}`
fn parse_argument_criterion(
    value: &Value,
    field: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<Criterion> {
    let pointer = match value.get("pointer") {
        Some(Value::String(p)) if p.is_empty() || p.starts_with('/') => p.clone(),
        _ => {
            errors.push(ConfigError::new(
                &format!("{field}.pointer"),
                "required: a JSON pointer (RFC 6901) into params.arguments, such as \"/path\"",
            ));
            return None;
        }
    };
    let matcher = parse_matcher(value, field, errors, &["pointer"])?;
    Some(Criterion::Match {
        subject: Subject::McpArgument(pointer),
        matcher,
    })
}

/// A bare string means `is`; an object holds one or more operators.
fn parse_matcher(
    value: &Value,
    field: &str,
    errors: &mut Vec<ConfigError>,
    skip: &[&str],
) -> Option<Matcher> {
    let obj: Map<String, Value> = match value {
        Value::String(s) => {
            return Some(Matcher {
                ops: vec![Op::Is(s.clone())],
            });
        }
        Value::Object(obj) => obj.clone(),
        _ => {
            errors.push(ConfigError::new(
                field,
                "must be a string or an object of operators (is, starts_with, ends_with, contains, in, not_in, not)",
            ));
            return None;
        }
    };
    let before = errors.len();
    let mut ops = Vec::new();
    for (op, v) in obj.iter().filter(|(k, _)| !skip.contains(&k.as_str())) {
        let path = format!("{field}.{op}");
        let parsed = match op.as_str() {
            // Pomerium spells list membership of a group as `has`.
            "is" | "has" => string(v).map(Op::Is),
            "starts_with" => string(v).map(Op::StartsWith),
            "ends_with" => string(v).map(Op::EndsWith),
            "contains" => string(v).map(Op::Contains),
            "not" => string(v).map(Op::Not),
            "in" => strings(v).map(Op::In),
            "not_in" => strings(v).map(Op::NotIn),
            _ => {
                errors.push(ConfigError::new(
                    &path,
                    "unknown operator; expected is, starts_with, ends_with, contains, in, not_in or not",
                ));
                continue;
            }
        };
        match parsed {
            Some(op) => ops.push(op),
            None => errors.push(ConfigError::new(
                &path,
                if matches!(op.as_str(), "in" | "not_in") {
                    "must be a list of strings"
                } else {
                    "must be a string"
                },
            )),
        }
    }
    if ops.is_empty() && errors.len() == before {
        errors.push(ConfigError::new(field, "needs at least one operator"));
    }
    (errors.len() == before).then_some(Matcher { ops })
}

fn string(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array()?.iter().map(string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errs(v: Value) -> Vec<String> {
        parse_policy(&v, "routes[0].policy")
            .expect_err("should be refused")
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn parses_the_seed_policy() {
        let p = parse_policy(
            &json!({
                "allow": {"and": [{"domain": {"is": "company.com"}}]},
                "deny": {"or": [{"mcp_tool": {"starts_with": "admin_"}}]}
            }),
            "policy",
        )
        .unwrap();
        assert_eq!(p.rules.len(), 1);
        assert_eq!(
            p.rules[0].deny,
            Some(Expr::Or(vec![Expr::Criterion(Criterion::Match {
                subject: Subject::McpTool,
                matcher: Matcher {
                    ops: vec![Op::StartsWith("admin_".into())]
                }
            })]))
        );
    }

    #[test]
    fn bare_string_means_is_and_lists_of_rules_are_accepted() {
        let p = parse_policy(
            &json!([{"allow": {"or": [{"email": "a@b.c"}, {"claim/department": {"in": ["eng", "ops"]}}]}},
                    {"allow": {"and": [{"authenticated_user": true}, {"nor": [{"groups": {"has": "contractors"}}]}]}}]),
            "policy",
        )
        .unwrap();
        assert_eq!(p.rules.len(), 2);
        let Some(Expr::Or(items)) = &p.rules[0].allow else {
            panic!("expected or")
        };
        assert_eq!(
            items[0],
            Expr::Criterion(Criterion::Match {
                subject: Subject::Email,
                matcher: Matcher {
                    ops: vec![Op::Is("a@b.c".into())]
                }
            })
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            errs(json!({"allow": {"and": [{"domian": "x"}]}})),
            vec![
                "routes[0].policy.allow.and[0].domian: unknown criterion; expected accept, reject, authenticated_user, domain, email, user, groups, claim/<name>, mcp_tool, mcp_method or mcp_argument"
            ]
        );
        assert!(
            errs(json!({"allow": {"xor": []}}))[0]
                .starts_with("routes[0].policy.allow.xor: unknown operator")
        );
        assert!(
            errs(json!({"allow": {"and": [{"email": {"begins": "a"}}]}}))[0]
                .starts_with("routes[0].policy.allow.and[0].email.begins: unknown operator")
        );
        assert!(
            errs(json!({"allow": {"and": [{"email": {"in": "a"}}]}}))[0]
                .ends_with("email.in: must be a list of strings")
        );
        assert!(
            errs(json!({"allow": {"and": [{"mcp_argument": {"is": "a"}}]}}))[0]
                .starts_with("routes[0].policy.allow.and[0].mcp_argument.pointer: required")
        );
        assert!(errs(json!({"permit": {}}))[0].starts_with("routes[0].policy.permit: unknown key"));
        assert!(errs(json!(7))[0].starts_with("routes[0].policy: must be a rule object"));
        assert!(
            errs(json!({"allow": {"and": [{"accept": false}]}}))[0]
                .ends_with("accept: must be `true`")
        );
        assert!(
            errs(json!({"allow": {"and": [{"email": "a", "user": "b"}]}}))[0]
                .ends_with("exactly one key")
        );
    }
}
