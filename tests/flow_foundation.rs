#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

//! The request flow through the core, as the host drives it: headers in,
//! effects out.

mod common;

use mcp_oauth_filter::config::Config;
use mcp_oauth_filter::env::TestRandom;
use mcp_oauth_filter::flow::{self, Command, Filter, Next, RequestHead, Stage, Step};
use mcp_oauth_filter::reply::Reply;
use mcp_oauth_filter::store::MemoryKv;
use serde_json::{Value, json};

fn filter() -> Filter {
    let config = json!({
        "identity_provider": {"issuer": "http://127.0.0.1:9400", "client_id": "f", "client_secret": "s", "cluster": "idp"},
        "keys": {
            "token_signing": [{"id": "te-1", "secret": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}],
            "encryption": [{"id": "enc-1", "key": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}]
        },
        "routes": [
            {"from": "http://127.0.0.1:10000", "name": "demo", "mcp": {"server": {"path": "/mcp"}}},
            {"from": "https://mcp.example.com", "name": "github", "mcp": {"server": {"path": "/github/mcp"}}}
        ]
    });
    Filter::new(Config::parse(config.to_string().as_bytes()).unwrap())
}

fn head(method: &str, authority: &str, path: &str, extra: &[(&str, &[u8])]) -> RequestHead {
    let mut h: Vec<(String, Vec<u8>)> = vec![
        (":method".into(), method.into()),
        (":authority".into(), authority.into()),
        (":path".into(), path.into()),
        (":scheme".into(), b"http".to_vec()),
    ];
    h.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_vec())));
    let mut head = RequestHead::from_pairs(h);
    // As Envoy says of a request without a body.
    head.end_of_stream = method != "POST";
    head
}

/// One request's headers through the core, with a fresh store.
fn run(f: &Filter, head: &RequestHead) -> Step {
    let mut kv = MemoryKv::new();
    let mut random = TestRandom::new(7);
    common::run_core(f, &mut kv, &mut random, 1_000_000, |ctx| {
        flow::handle(
            ctx,
            &Stage::Start,
            &flow::Event::RequestHeaders(head.clone()),
        )
    })
}

fn reply_of(step: &flow::Step) -> &Reply {
    assert_eq!(step.next, Next::Stop);
    assert_eq!(step.stage, Stage::Answered);
    match step.commands.as_slice() {
        [Command::Reply(r)] => r,
        other => panic!("expected one reply, got {other:?}"),
    }
}

fn json_body(r: &Reply) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn unauthenticated_mcp_request_gets_the_rfc9728_challenge() {
    let f = filter();
    for method in ["POST", "GET", "DELETE"] {
        let step = run(&f, &head(method, "127.0.0.1:10000", "/mcp", &[]));
        let r = reply_of(&step);
        assert_eq!(r.status, 401);
        assert_eq!(
            r.header_value("www-authenticate"),
            Some(
                r#"Bearer resource_metadata="http://127.0.0.1:10000/.well-known/oauth-protected-resource/mcp", scope="mcp""#
            )
        );
        assert_eq!(r.header_value("cache-control"), Some("no-store"));
        assert_eq!(json_body(r)["error"], "unauthorized");
    }
}

#[test]
fn other_paths_of_a_route_host_are_refused_even_with_a_token() {
    let f = filter();
    for path in [
        "/",
        "/admin",
        "/_debug/headers",
        "/mcpx",
        "/MCP",
        "/mcp/sub",
        "/.well-known/other",
        "/.well-known/oauth-protected-resource/nope",
    ] {
        for extra in [&[][..], &[("authorization", &b"Bearer anything"[..])][..]] {
            let r = reply_of(&run(&f, &head("GET", "127.0.0.1:10000", path, extra))).clone();
            assert_eq!(r.status, 404, "{path}");
            assert_eq!(json_body(&r)["error"], "not_found");
        }
    }
    // Paths different servers read differently are refused outright.
    for path in [
        "/mcp/../x",
        "//mcp",
        "/mcp%2F..",
        "http://127.0.0.1:10000/mcp",
        "*",
    ] {
        let r = reply_of(&run(&f, &head("POST", "127.0.0.1:10000", path, &[]))).clone();
        assert_eq!(r.status, 400, "{path}");
    }
}

#[test]
fn forward_other_paths_needs_a_token_and_injects_nothing() {
    let mut config = serde_json::from_str::<Value>(
        &json!({
            "identity_provider": {"issuer": "http://127.0.0.1:9400", "client_id": "f", "client_secret": "s", "cluster": "idp"},
            "keys": {
                "token_signing": [{"id": "te-1", "secret": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}],
                "encryption": [{"id": "enc-1", "key": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}]
            },
            "routes": [{"from": "http://127.0.0.1:10000", "name": "demo", "forward_other_paths": true,
                        "mcp": {"server": {"path": "/mcp"}}}]
        })
        .to_string(),
    )
    .unwrap();
    let f = Filter::new(Config::parse(config.to_string().as_bytes()).unwrap());
    let r = reply_of(&run(&f, &head("GET", "127.0.0.1:10000", "/admin", &[]))).clone();
    assert_eq!(r.status, 401);
    config["routes"][0]["forward_other_paths"] = json!(false);
    let f = Filter::new(Config::parse(config.to_string().as_bytes()).unwrap());
    let r = reply_of(&run(&f, &head("GET", "127.0.0.1:10000", "/admin", &[]))).clone();
    assert_eq!(r.status, 404);
}

#[test]
fn presented_tokens_are_invalid_until_this_server_issues_them() {
    let f = filter();
    let cases: [&[(&str, &[u8])]; 4] = [
        &[("authorization", b"Bearer abc.def.ghi")],
        &[("authorization", b"bearer ")],
        &[
            ("authorization", b"Bearer a"),
            ("authorization", b"Bearer b"),
        ],
        &[("authorization", b"Bearer \xff\xfe")],
    ];
    for extra in cases {
        let step = run(&f, &head("POST", "127.0.0.1:10000", "/mcp", extra));
        let r = reply_of(&step);
        assert_eq!(r.status, 401);
        let challenge = r.header_value("www-authenticate").unwrap();
        assert!(
            challenge.starts_with(r#"Bearer error="invalid_token""#),
            "{challenge}"
        );
        assert!(challenge.contains(
            r#"resource_metadata="http://127.0.0.1:10000/.well-known/oauth-protected-resource/mcp""#
        ));
        assert_eq!(json_body(r)["error"], "invalid_token");
    }
    // Another scheme carries no bearer token: a plain challenge (RFC 6750 3.1).
    let step = run(
        &f,
        &head(
            "POST",
            "127.0.0.1:10000",
            "/mcp",
            &[("authorization", b"Basic dTpw")],
        ),
    );
    assert!(
        !reply_of(&step)
            .header_value("www-authenticate")
            .unwrap()
            .contains("error=")
    );
}

#[test]
fn protected_resource_metadata_in_path_and_root_forms() {
    let f = filter();
    for (authority, path, resource, issuer) in [
        (
            "127.0.0.1:10000",
            "/.well-known/oauth-protected-resource/mcp",
            "http://127.0.0.1:10000/mcp",
            "http://127.0.0.1:10000",
        ),
        (
            "127.0.0.1:10000",
            "/.well-known/oauth-protected-resource",
            "http://127.0.0.1:10000/mcp",
            "http://127.0.0.1:10000",
        ),
        (
            "mcp.example.com",
            "/.well-known/oauth-protected-resource/github/mcp",
            "https://mcp.example.com/github/mcp",
            "https://mcp.example.com",
        ),
        (
            "mcp.example.com:443",
            "/.well-known/oauth-protected-resource",
            "https://mcp.example.com/github/mcp",
            "https://mcp.example.com",
        ),
    ] {
        let step = run(&f, &head("GET", authority, path, &[]));
        let r = reply_of(&step);
        assert_eq!(r.status, 200, "{authority}{path}");
        assert_eq!(r.header_value("content-type"), Some("application/json"));
        let doc = json_body(r);
        assert_eq!(doc["resource"], resource);
        assert_eq!(doc["authorization_servers"], json!([issuer]));
        assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
        assert_eq!(doc["scopes_supported"], json!(["mcp"]));
    }
    let step = run(
        &f,
        &head(
            "POST",
            "127.0.0.1:10000",
            "/.well-known/oauth-protected-resource",
            &[],
        ),
    );
    assert_eq!(reply_of(&step).status, 405);
}

#[test]
fn cors_preflight_is_answered_without_authentication() {
    let f = filter();
    let step = run(
        &f,
        &head(
            "OPTIONS",
            "127.0.0.1:10000",
            "/mcp",
            &[
                ("origin", b"http://localhost:6274"),
                ("access-control-request-method", b"POST"),
                (
                    "access-control-request-headers",
                    b"authorization, content-type",
                ),
            ],
        ),
    );
    let r = reply_of(&step);
    assert_eq!(r.status, 204);
    assert_eq!(r.header_value("access-control-allow-origin"), Some("*"));
    assert_eq!(
        r.header_value("access-control-allow-headers"),
        Some("authorization, content-type")
    );
    // The challenge is readable by a browser client.
    let step = run(
        &f,
        &head(
            "POST",
            "127.0.0.1:10000",
            "/mcp",
            &[("origin", b"http://localhost:6274")],
        ),
    );
    assert!(
        reply_of(&step)
            .header_value("access-control-expose-headers")
            .unwrap()
            .contains("www-authenticate")
    );
}

#[test]
fn other_hosts_are_refused_unless_passthrough_is_configured() {
    let f = filter();
    for authority in [
        "other.example",
        "127.0.0.1:10001",
        "127.0.0.1",
        "localhost:10000",
        "[::1]:10000",
        "mcp.example.com:8443",
    ] {
        let step = run(
            &f,
            &head(
                "POST",
                authority,
                "/mcp",
                &[("authorization", b"Bearer keep-me")],
            ),
        );
        let r = reply_of(&step);
        assert_eq!(r.status, 404, "{authority}");
        assert_eq!(r.body, b"No MCP route serves this host.\n");
    }
    // Spellings of a route's host that parsers read differently: 400, always.
    for authority in [
        "",
        "127.0.0.1:010000",
        "127.0.0.1:10000.",
        "user@127.0.0.1:10000",
        "127.0.0.01:10000",
    ] {
        let r = reply_of(&run(&f, &head("POST", authority, "/mcp", &[]))).clone();
        assert_eq!(r.status, 400, "{authority:?}");
    }
    // The same spelled another way still reaches the route.
    for authority in ["MCP.EXAMPLE.COM", "mcp.example.com.", "mcp.example.com:443"] {
        let r = reply_of(&run(&f, &head("POST", authority, "/github/mcp", &[]))).clone();
        assert_eq!(r.status, 401, "{authority}");
    }
}

#[test]
fn with_passthrough_other_hosts_go_on_untouched() {
    let mut f = filter();
    f.config.unmatched_hosts = mcp_oauth_filter::config::UnmatchedHosts::Passthrough;
    for authority in ["other.example", "127.0.0.1:10001", "mcp.example.com:8443"] {
        let step = run(
            &f,
            &head(
                "POST",
                authority,
                "/mcp",
                &[("authorization", b"Bearer keep-me")],
            ),
        );
        assert_eq!(step.stage, Stage::Passthrough);
        assert_eq!(step.next, Next::Continue);
        assert!(step.commands.is_empty());
        let (mut kv, mut random) = (MemoryKv::new(), TestRandom::new(1));
        let head = flow::ResponseHead {
            status: 200,
            ..Default::default()
        };
        let answer = common::run_core(&f, &mut kv, &mut random, 1_000_000, |ctx| {
            flow::handle(
                ctx,
                &step.stage,
                &flow::Event::ResponseHeaders(head.clone()),
            )
        });
        assert!(answer.commands.is_empty());
        assert_eq!(answer.next, Next::Continue);
    }
    // Ambiguous spellings that may mean a route's host stay refused...
    for authority in [
        "127.0.0.1:010000",
        "127.1:10000",
        "user@127.0.0.1:10000",
        "MCP.example.com..",
    ] {
        let r = reply_of(&run(&f, &head("POST", authority, "/mcp", &[]))).clone();
        assert_eq!(r.status, 400, "{authority}");
    }
    // ...other traffic's odd hosts go on.
    for authority in ["", "foo.0xbar", "host_with~tilde:80", "other.example:"] {
        let step = run(&f, &head("GET", authority, "/", &[]));
        assert_eq!(step.stage, Stage::Passthrough, "{authority:?}");
    }
}

#[test]
fn a_body_under_get_or_delete_is_refused_not_forwarded_unjudged() {
    let f = filter();
    for method in ["GET", "DELETE", "HEAD"] {
        let mut h = head(method, "127.0.0.1:10000", "/mcp", &[]);
        h.end_of_stream = false;
        let r = reply_of(&run(&f, &h)).clone();
        assert_eq!(r.status, 400, "{method}");
        assert_eq!(json_body(&r)["error"], "invalid_request");
    }
}
