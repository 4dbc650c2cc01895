use serde_json::{Value, json};

use super::*;
use crate::oauth::records::User;

fn user(email: &str, groups: &[&str]) -> User {
    User {
        sub: format!("sub-{email}"),
        email: Some(email.to_string()),
        email_verified: Some(true),
        name: None,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        claims: json!({"department": "eng", "level": 3, "roles": ["dev", "oncall"]})
            .as_object()
            .cloned()
            .unwrap(),
    }
}

fn call<'a>(tool: &'a str, args: &'a Value) -> Message<'a> {
    Message {
        method: "tools/call",
        tool: Some(tool),
        arguments: Some(args),
    }
}

fn allowed(policy: Value, u: &User, m: Option<&Message<'_>>) -> bool {
    let p = parse_policy(&policy, "policy").unwrap();
    evaluate(&p, false, u, m).allowed
}

/// The seed policy: allow company.com, deny tools starting with admin_.
fn seed() -> Value {
    json!({"allow": {"and": [{"domain": {"is": "company.com"}}]},
           "deny": {"or": [{"mcp_tool": {"starts_with": "admin_"}}]}})
}

#[test]
fn seed_policy_table() {
    let alice = user("alice@company.com", &[]);
    let bob = user("bob@other.example", &[]);
    let none = json!({});
    let cases: Vec<(&User, &str, bool)> = vec![
        (&alice, "echo", true),
        (&alice, "whoami", true),
        (&alice, "admin_reset", false),
        // Case tricks do not slip past the deny.
        (&alice, "Admin_reset", false),
        (&alice, "ADMIN_RESET", false),
        (&alice, "admin_", false),
        (&alice, "xadmin_reset", true),
        (&bob, "echo", false),
        (&bob, "admin_reset", false),
    ];
    for (u, tool, want) in cases {
        assert_eq!(
            allowed(seed(), u, Some(&call(tool, &none))),
            want,
            "{:?} {tool}",
            u.email
        );
    }
    // Domain matching ignores case; a look-alike domain does not match.
    assert!(allowed(
        seed(),
        &user("carol@Company.COM", &[]),
        Some(&call("echo", &none))
    ));
    assert!(!allowed(
        seed(),
        &user("eve@company.com.evil", &[]),
        Some(&call("echo", &none))
    ));
    assert!(!allowed(
        seed(),
        &user("eve@evilcompany.com", &[]),
        Some(&call("echo", &none))
    ));
    // An email the identity provider marks unverified counts for nothing.
    let mut unverified = user("mallory@company.com", &[]);
    unverified.email_verified = Some(false);
    assert!(!allowed(seed(), &unverified, Some(&call("echo", &none))));
    // Methods other than tools/call: no tool, so the tool deny does not apply.
    let list = Message {
        method: "tools/list",
        tool: None,
        arguments: None,
    };
    assert!(allowed(seed(), &alice, Some(&list)));
}

#[test]
fn route_level_decision_before_any_message() {
    let p = parse_policy(&seed(), "policy").unwrap();
    assert!(evaluate(&p, false, &user("alice@company.com", &[]), None).allowed);
    let d = evaluate(&p, false, &user("bob@other.example", &[]), None);
    assert!(!d.allowed);
    assert_eq!(d.rule, "no allow rule matched");
    // A deny on the user alone refuses the route outright.
    let p = parse_policy(&json!({"allow": {"and": [{"accept": true}]}, "deny": {"and": [{"email": "mallory@company.com"}]}}), "p").unwrap();
    assert!(!evaluate(&p, false, &user("mallory@company.com", &[]), None).allowed);
    // An allow that depends on the message admits the user to the route.
    let p = parse_policy(&json!({"allow": {"and": [{"mcp_tool": "echo"}]}}), "p").unwrap();
    assert!(evaluate(&p, false, &user("x@y.z", &[]), None).allowed);
    assert!(
        !evaluate(
            &p,
            false,
            &user("x@y.z", &[]),
            Some(&call("whoami", &json!({})))
        )
        .allowed
    );
    // No rules: nobody; allow_any_authenticated_user: everybody, deny still applies.
    assert!(!evaluate(&Policy::default(), false, &user("x@y.z", &[]), None).allowed);
    let p = parse_policy(
        &json!({"deny": {"or": [{"mcp_tool": {"starts_with": "admin_"}}]}}),
        "p",
    )
    .unwrap();
    assert!(
        evaluate(
            &p,
            true,
            &user("x@y.z", &[]),
            Some(&call("echo", &json!({})))
        )
        .allowed
    );
    assert!(
        !evaluate(
            &p,
            true,
            &user("x@y.z", &[]),
            Some(&call("admin_x", &json!({})))
        )
        .allowed
    );
}

#[test]
fn every_operator() {
    let u = user("alice@company.com", &["eng", "oncall"]);
    let m = json!({});
    let c = call("files_read", &m);
    let table: Vec<(Value, bool)> = vec![
        (json!({"mcp_tool": "files_read"}), true),
        (json!({"mcp_tool": {"is": "files_read"}}), true),
        (json!({"mcp_tool": {"is": "files"}}), false),
        (json!({"mcp_tool": {"starts_with": "files_"}}), true),
        (json!({"mcp_tool": {"ends_with": "_read"}}), true),
        (json!({"mcp_tool": {"ends_with": "_write"}}), false),
        (json!({"mcp_tool": {"contains": "es_re"}}), true),
        (json!({"mcp_tool": {"in": ["a", "files_read"]}}), true),
        (json!({"mcp_tool": {"in": ["a", "b"]}}), false),
        (json!({"mcp_tool": {"not_in": ["a", "b"]}}), true),
        (json!({"mcp_tool": {"not_in": ["files_read"]}}), false),
        (json!({"mcp_tool": {"not": "files_read"}}), false),
        (json!({"mcp_tool": {"not": "x"}}), true),
        (
            json!({"mcp_tool": {"starts_with": "files_", "not": "files_read"}}),
            false,
        ),
        (json!({"mcp_method": "tools/call"}), true),
        (json!({"mcp_method": {"starts_with": "resources/"}}), false),
        (json!({"email": {"ends_with": "@company.com"}}), true),
        (json!({"user": "sub-alice@company.com"}), true),
        (json!({"groups": {"has": "oncall"}}), true),
        (json!({"groups": "admins"}), false),
        (json!({"groups": {"not_in": ["admins"]}}), true),
        (json!({"groups": {"not": "eng"}}), false),
        (json!({"claim/department": "eng"}), true),
        (json!({"claim/level": "3"}), true),
        (json!({"claim/roles": {"in": ["oncall"]}}), true),
        (json!({"claim/missing": "x"}), false),
        (json!({"authenticated_user": true}), true),
        (json!({"reject": true}), false),
    ];
    for (criterion, want) in table {
        let policy = json!({"allow": {"and": [criterion.clone()]}});
        assert_eq!(allowed(policy, &u, Some(&c)), want, "{criterion}");
    }
}

#[test]
fn combinators() {
    let u = user("alice@company.com", &[]);
    let m = json!({});
    let c = call("echo", &m);
    let t = json!({"accept": true});
    let f = json!({"reject": true});
    let table: Vec<(Value, bool)> = vec![
        (json!({"and": [t, t]}), true),
        (json!({"and": [t, f]}), false),
        (json!({"or": [f, t]}), true),
        (json!({"or": [f, f]}), false),
        // Pomerium: not = NOT(all), nor = NOT(any).
        (json!({"not": [t, f]}), true),
        (json!({"not": [t, t]}), false),
        (json!({"nor": [f, f]}), true),
        (json!({"nor": [f, t]}), false),
        (json!({"and": [{"or": [f, t]}, {"nor": [f]}]}), true),
        // Several operators in one block must all hold.
        (json!({"and": [t], "or": [f]}), false),
    ];
    for (block, want) in table {
        assert_eq!(
            allowed(json!({"allow": block.clone()}), &u, Some(&c)),
            want,
            "{block}"
        );
    }
}

#[test]
fn arguments_by_json_pointer() {
    let u = user("alice@company.com", &[]);
    let policy = json!({"allow": {"and": [{"accept": true}]},
                        "deny": {"or": [{"mcp_argument": {"pointer": "/repo/owner", "not": "acme"}}]}});
    let ok = json!({"repo": {"owner": "acme", "name": "x"}});
    let bad = json!({"repo": {"owner": "evil"}});
    let missing = json!({});
    assert!(allowed(policy.clone(), &u, Some(&call("git", &ok))));
    assert!(!allowed(policy.clone(), &u, Some(&call("git", &bad))));
    // A missing argument does not match `not: acme` (nothing to compare): allowed.
    assert!(allowed(policy, &u, Some(&call("git", &missing))));
    let policy =
        json!({"allow": {"and": [{"mcp_argument": {"pointer": "/count", "in": ["1", "2"]}}]}});
    assert!(allowed(
        policy.clone(),
        &u,
        Some(&call("t", &json!({"count": 2})))
    ));
    assert!(!allowed(policy, &u, Some(&call("t", &json!({"count": 3})))));
}

#[test]
fn first_deny_names_the_rule() {
    let p = parse_policy(
        &json!([
            {"allow": {"and": [{"accept": true}]}},
            {"deny": {"or": [{"mcp_tool": "b"}]}}
        ]),
        "p",
    )
    .unwrap();
    let u = user("a@b.c", &[]);
    let m = json!({});
    assert_eq!(
        evaluate(&p, false, &u, Some(&call("b", &m))).rule,
        "policy[1].deny"
    );
    assert_eq!(
        evaluate(&p, false, &u, Some(&call("a", &m))).rule,
        "policy[0].allow"
    );
}
