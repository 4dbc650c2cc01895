use serde_json::{Value, json};

use super::*;
use crate::test_support::minimal_config;

fn parse(v: &Value) -> Result<Config, Vec<ConfigError>> {
    Config::parse(v.to_string().as_bytes())
}

/// The configuration's problems, as the log lines name them.
fn problems(v: &Value) -> Vec<String> {
    parse(v)
        .expect_err("should be refused")
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn with(path: &str, value: Value) -> Value {
    let mut c = minimal_config();
    let (parent, key) = path.rsplit_once('/').unwrap();
    match c
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("no {parent}"))
    {
        Value::Array(items) => items[key.parse::<usize>().unwrap()] = value,
        other => {
            other[key] = value;
        }
    }
    c
}

#[test]
fn minimal_configuration_compiles_with_defaults() {
    let c = parse(&minimal_config()).unwrap();
    let r = &c.routes[0];
    assert_eq!(r.origin, "http://127.0.0.1:10000");
    assert_eq!(r.authority, "127.0.0.1:10000");
    assert_eq!(r.resource, "http://127.0.0.1:10000/mcp");
    assert_eq!(r.name, "demo");
    assert!(r.upstream.is_none());
    assert_eq!(c.identity_provider.scopes, ["openid", "email", "profile"]);
    assert_eq!(
        c.identity_provider.discovery.path,
        "/.well-known/openid-configuration"
    );
    assert_eq!(c.identity_provider.discovery.authority, "127.0.0.1:9400");
    assert_eq!(c.keys.token_signing[0].key.len(), 32);
    assert_eq!(c.authorization_server.access_token_ttl_seconds, 3600);
    assert_eq!(c.mcp.max_request_bytes, 1024 * 1024);
    assert_eq!(
        c.store,
        Store::SharedData {
            prefix: "mcp-oauth-filter/".into()
        }
    );
    assert!(c.cors.allowed_origins.is_none());
}

#[test]
fn full_configuration_compiles() {
    let mut c = minimal_config();
    c["routes"][0]["mcp"]["server"]["upstream_oauth2"] = json!({
        "client_id": "gh", "client_secret": "s", "scopes": ["read:user", "repo"],
        "endpoint": {"auth_url": "https://github.com/login/oauth/authorize",
                     "token_url": "https://github.com/login/oauth/access_token?x=1",
                     "auth_style": "params", "cluster": "github"},
        "authorization_url_params": {"access_type": "offline", "prompt": "consent"}
    });
    c["routes"][0]["policy"] = json!({"allow": {"and": [{"domain": {"is": "company.com"}}]},
                                      "deny": {"or": [{"mcp_tool": {"starts_with": "admin_"}}]}});
    c["authorization_server"] = json!({"access_token_ttl_seconds": 600,
        "registration": {"metadata_documents": {"allowed_hosts": ["claude.ai"], "cluster": "cimd"}}});
    c["cors"] = json!({"allowed_origins": ["http://localhost:6274"]});
    let c = parse(&c).unwrap();
    let up = c.routes[0].upstream.as_ref().unwrap();
    assert_eq!(up.auth_style, AuthStyle::Params);
    assert_eq!(up.token.authority, "github.com");
    assert_eq!(up.token.path, "/login/oauth/access_token?x=1");
    assert_eq!(up.token.cluster, "github");
    assert_eq!(up.refresh_skew_seconds, 60);
    assert_eq!(
        up.authorization_url_params[0],
        ("access_type".into(), "offline".into())
    );
    assert_eq!(c.routes[0].policy.rules.len(), 1);
    assert_eq!(c.authorization_server.access_token_ttl_seconds, 600);
    assert_eq!(
        c.authorization_server.metadata_documents.allowed_hosts,
        ["claude.ai"]
    );
}

#[test]
fn each_problem_names_its_field() {
    let cases: Vec<(Value, &str)> = vec![
        (
            with("/routes/0/from", json!("not a url")),
            "routes[0].from: \"not a url\" is not an absolute URL",
        ),
        (
            with(
                "/routes/0/mcp/server/upstream_oauth2",
                json!({"client_id": "c", "client_secret": "s", "endpoint": {
                    "auth_url": "https://github.com/login/oauth/authorize\r\nSet-Cookie: a=b",
                    "token_url": "https://github.com/login/oauth/access_token",
                    "cluster": "github"}}),
            ),
            "routes[0].mcp.server.upstream_oauth2.endpoint.auth_url: \"https://github.com/login/oauth/authorize\\r\\nSet-Cookie: a=b\" contains a control character",
        ),
        (
            with("/routes/0/from", json!("https://mcp.example.com.")),
            "routes[0].from: the host must be written as requests are matched",
        ),
        (
            with("/unmatched_hosts", json!("allow")),
            "unmatched_hosts: \"allow\" is not one of",
        ),
        (
            with("/routes/0/from", json!("http://mcp.example.com")),
            "routes[0].from: must use https",
        ),
        (
            with("/routes/0/from", json!("ftp://127.0.0.1")),
            "routes[0].from: scheme must be https",
        ),
        (
            with("/routes/0/from", json!("http://127.0.0.1:10000/mcp")),
            "routes[0].from: must be an origin only",
        ),
        (
            with("/routes/0/mcp/server/path", json!("mcp")),
            "routes[0].mcp.server.path: must start with '/'",
        ),
        (
            with("/routes/0/mcp/server/path", json!("/a/../b")),
            "routes[0].mcp.server.path: must be a normalised path",
        ),
        (
            with("/routes/0/mcp/server/path", json!("/.oauth/x")),
            "routes[0].mcp.server.path: collides",
        ),
        (
            with("/routes/0/mcp/server/path", json!(7)),
            "routes[0].mcp.server.path: invalid type: integer `7`, expected a string",
        ),
        (
            with("/routes/0/mcp", json!({"server": {}, "srv": 1})),
            "routes[0].mcp.srv: unknown field `srv`",
        ),
        (
            with("/routes", json!([])),
            "routes: needs at least one route",
        ),
        (
            with("/keys/encryption/0/key", json!("c2hvcnQ=")),
            "keys.encryption[0].key: must decode to exactly 32 bytes",
        ),
        (
            with("/keys/encryption", json!([])),
            "keys.encryption: needs at least one key",
        ),
        (
            with("/keys/token_signing/0/secret", json!("!!")),
            "keys.token_signing[0].secret: must be standard base64",
        ),
        (
            with("/keys/token_signing/0/secret", json!("c2hvcnQ=")),
            "keys.token_signing[0].secret: must decode to at least 32 bytes",
        ),
        (
            with("/identity_provider/cluster", json!("")),
            "identity_provider.cluster: must name the Envoy cluster",
        ),
        (
            with("/identity_provider/scopes", json!(["email"])),
            "identity_provider.scopes: must include \"openid\"",
        ),
        (
            with(
                "/identity_provider/token_endpoint_auth_method",
                json!("private_key_jwt"),
            ),
            "identity_provider.token_endpoint_auth_method: \"private_key_jwt\" is not supported",
        ),
        (
            with(
                "/routes/0/policy",
                json!({"allow": {"and": [{"domian": "x"}]}}),
            ),
            "routes[0].policy.allow.and[0].domian: unknown criterion",
        ),
    ];
    for (config, expected) in cases {
        let found = problems(&config);
        assert!(
            found.iter().any(|p| p.starts_with(expected)),
            "expected {expected:?}, got {found:?}"
        );
    }
}

#[test]
fn missing_sections_and_unknown_fields() {
    let mut c = minimal_config();
    c.as_object_mut().unwrap().remove("keys");
    c["rotues"] = json!([]);
    let found = problems(&c);
    assert!(found.contains(&"keys: required".to_string()), "{found:?}");
    assert!(
        found.iter().any(|p| p.starts_with("rotues: unknown field")),
        "{found:?}"
    );
    let mut c = minimal_config();
    c["routes"][0]["frm"] = json!("x");
    assert!(
        problems(&c)[0].starts_with("routes[0].frm: unknown field `frm`"),
        "{:?}",
        problems(&c)
    );
    assert_eq!(problems(&json!([1]))[0], "(root): must be a JSON object");
    assert!(
        Config::parse(b"{").unwrap_err()[0]
            .to_string()
            .starts_with("(root): not valid JSON")
    );
    assert!(Config::parse(b"").is_err());
}

#[test]
fn every_problem_is_reported_not_only_the_first() {
    let mut c = minimal_config();
    c["routes"] = json!([
        {"from": "nope", "mcp": {"server": {}}},
        {"from": "http://127.0.0.1:1", "mcp": {"server": {"path": "x"}}}
    ]);
    c["keys"]["encryption"][0]["key"] = json!("c2hvcnQ=");
    let found = problems(&c);
    assert_eq!(found.len(), 3, "{found:?}");
}

#[test]
fn duplicate_routes_are_refused() {
    let mut c = minimal_config();
    let r = c["routes"][0].clone();
    let mut other_name = r.clone();
    other_name["name"] = json!("other");
    c["routes"] = json!([r.clone(), other_name]);
    assert!(problems(&c)[0].starts_with("routes[1]: duplicate route"));
    c["routes"] = json!([r.clone(), r]);
    assert!(problems(&c)[0].starts_with("routes[1].name: duplicate route name"));
}

#[test]
fn upstream_checks() {
    let mut c = minimal_config();
    c["routes"][0]["mcp"]["server"]["upstream_oauth2"] = json!({
        "client_id": "", "client_secret": "s", "scopes": ["bad scope"],
        "endpoint": {"auth_url": "https://a.example/auth", "token_url": "http://a.example/token",
                     "auth_style": "basic", "cluster": ""},
        "authorization_url_params": {"state": "x", "prompt": "consent"}
    });
    let found = problems(&c);
    let base = "routes[0].mcp.server.upstream_oauth2";
    for expected in [
        format!("{base}.client_id: must not be empty"),
        format!("{base}.scopes[0]: \"bad scope\" is not a valid scope token"),
        format!("{base}.endpoint.token_url: must use https"),
        format!("{base}.endpoint.cluster: must name the Envoy cluster"),
        format!("{base}.endpoint.auth_style: \"basic\" is not one of"),
        format!("{base}.authorization_url_params.state: is set by the filter"),
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(&expected)),
            "expected {expected:?} in {found:?}"
        );
    }
}

#[test]
fn insecure_http_only_when_asked() {
    let c = with("/routes/0/from", json!("http://mcp.internal"));
    assert!(parse(&c).is_err());
    let mut c = c;
    c["allow_insecure_http"] = json!(true);
    assert_eq!(
        parse(&c).unwrap().routes[0].resource,
        "http://mcp.internal/mcp"
    );
}

#[test]
fn secrets_do_not_appear_in_debug_output() {
    let c = parse(&minimal_config()).unwrap();
    let dump = format!("{c:?}");
    assert!(!dump.contains("idp-secret"));
    assert!(!dump.contains("48, 49, 50"), "key bytes leaked");
}

#[test]
fn store_and_settings_errors() {
    let mut c = minimal_config();
    c["store"] = json!({"kind": "redis"});
    assert!(problems(&c)[0].starts_with("store.kind: \"redis\" is not one of"));
    c["store"] = json!({"kind": "etcd"});
    assert!(problems(&c)[0].starts_with("store.etcd: required"));
    c["store"] = json!({"kind": "etcd", "etcd": {"cluster": "etcd"}});
    assert!(parse(&c).is_ok(), "a minimal etcd store is accepted");
    c["store"] = json!({"kind": "etcd", "etcd": {"cluster": "etcd", "username": "u"}});
    assert!(problems(&c)[0].starts_with("store.etcd.password: required"));
    c["store"] = json!({"kind": "etcd", "etcd": {"cluster": "etcd", "password": "p"}});
    assert!(problems(&c)[0].starts_with("store.etcd.username: required"));
    c["store"] = json!({"kind": "etcd", "etcd": {"cluster": "etcd", "cache_seconds": 301}});
    assert!(problems(&c)[0].starts_with("store.etcd.cache_seconds"));
    c["store"] = json!({"kind": "etcd", "prefix": "p", "etcd": {"cluster": "etcd"}});
    assert!(problems(&c)[0].starts_with("store.prefix: must end with"));
    let mut c = minimal_config();
    c["mcp"] = json!({"max_request_bytes": 10});
    assert!(problems(&c)[0].starts_with("mcp.max_request_bytes"));
    let mut c = minimal_config();
    c["authorization_server"] = json!({"access_token_ttl_seconds": 0});
    assert!(problems(&c)[0].starts_with("authorization_server.access_token_ttl_seconds"));
    let mut c = minimal_config();
    c["authorization_server"] =
        json!({"registration": {"metadata_documents": {"allowed_hosts": ["claude.ai"]}}});
    assert!(
        problems(&c)[0].starts_with("authorization_server.registration.metadata_documents.cluster")
    );
    let mut c = minimal_config();
    c["cors"] = json!({"allowed_origins": ["localhost"]});
    assert!(problems(&c)[0].starts_with("cors.allowed_origins[0]"));
}
