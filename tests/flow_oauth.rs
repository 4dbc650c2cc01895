#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

//! Whole OAuth sequences through the core, with the fake host of `common`.

mod common;

use common::*;
use jsonwebtoken::Algorithm;
use mcp_oauth_filter::crypto;
use mcp_oauth_filter::flow::Command;
use serde_json::{Value, json};

#[test]
fn full_flow_registration_sign_in_consent_token_and_mcp_request() {
    for alg in [Algorithm::RS256, Algorithm::ES256] {
        let mut w = World::new(json!({}));
        w.idp.alg = Some(alg);
        let client = w.public_client();
        let code = w.code_for(&client, "verifier-verifier-verifier-verifier-verifier-1");
        // Discovery, token, JWKS, userinfo (the ID token had no email).
        let paths: Vec<_> = w
            .idp
            .calls
            .iter()
            .map(|c| c.header_value(":path").unwrap().to_string())
            .collect();
        assert_eq!(
            paths,
            [
                "/.well-known/openid-configuration",
                "/token",
                "/jwks",
                "/me"
            ]
        );
        let (status, tokens) = w.redeem(
            &client,
            &code,
            "verifier-verifier-verifier-verifier-verifier-1",
        );
        assert_eq!(status, 200, "{tokens}");
        assert_eq!(tokens["token_type"], "Bearer");
        let te = tokens["access_token"].as_str().unwrap().to_string();
        assert!(!te.contains("idp-access-token"));
        match w.mcp("/mcp", &te) {
            Done::Forward(effects) => assert_eq!(
                effects,
                vec![
                    Command::RemoveRequestHeader("authorization"),
                    // The browser session cookie never reaches the MCP server.
                    Command::RemoveRequestHeader("cookie"),
                    Command::RemoveRequestHeader("accept-encoding"),
                ]
            ),
            other => panic!("{other:?}"),
        }
        // Another route's token is refused there.
        let r = w.mcp("/other", &te).reply();
        assert_eq!(r.status, 401);
        assert!(
            r.header_value("www-authenticate")
                .unwrap()
                .contains("invalid_token")
        );
    }
}

/// The second authorization of a signed-in browser: no second sign-in. A
/// registered client sees the consent page again (anyone can copy its
/// public metadata and get its client_id), unless the operator allows
/// remembering consent for registered clients.
#[test]
fn second_authorization_reuses_the_session_but_not_consent_for_registered_clients() {
    // REDIRECT is a loopback URI: consent is never remembered for those, so
    // the switch alone does not skip the page here (the e2e tests show it
    // does for an https redirect URI).
    for (remember, expect_code) in [(None, false), (Some(true), false)] {
        let extra = match remember {
            Some(r) => {
                json!({"authorization_server": {"remember_consent_for_registered_clients": r}})
            }
            None => json!({}),
        };
        let mut w = World::new(extra);
        let client = w.public_client();
        w.code_for(&client, "verifier-verifier-verifier-verifier-verifier-1");
        let calls = w.idp.calls.len();
        let challenge = crypto::sha256_b64url(b"verifier-verifier-verifier-verifier-verifier-2");
        let location = w
            .send(
                "GET",
                &World::authorize_url(&client, &challenge, "http://127.0.0.1:10000/mcp"),
                &[],
                None,
            )
            .location();
        if expect_code {
            assert!(
                location.starts_with(REDIRECT) && location.contains("code="),
                "{location}"
            );
        } else {
            assert!(
                location.starts_with("http://127.0.0.1:10000/.oauth/consent?request="),
                "{location}"
            );
        }
        assert_eq!(w.idp.calls.len(), calls, "no second sign-in");
    }
}

#[test]
fn pkce_code_reuse_and_redirect_checks() {
    let mut w = World::new(json!({}));
    let client = w.public_client();
    let code = w.code_for(&client, "verifier-verifier-verifier-verifier-verifier-1");
    let (status, err) = w.redeem(
        &client,
        &code,
        "verifier-verifier-verifier-verifier-verifier-X",
    );
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, tokens) = w.redeem(
        &client,
        &code,
        "verifier-verifier-verifier-verifier-verifier-1",
    );
    assert_eq!(status, 200, "{tokens}");
    let te = tokens["access_token"].as_str().unwrap().to_string();
    // Replaying the code fails and revokes what it produced.
    let (status, err) = w.redeem(
        &client,
        &code,
        "verifier-verifier-verifier-verifier-verifier-1",
    );
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(w.mcp("/mcp", &te).reply().status, 401);
    // A redirect_uri the client did not register: a page, not a redirect.
    let challenge = crypto::sha256_b64url(b"verifier-verifier-verifier-verifier-verifier-1");
    let url = World::authorize_url(&client, &challenge, "http://127.0.0.1:10000/mcp")
        .replace("53111%2Fcallback", "53111%2Fevil");
    let r = w.send("GET", &url, &[], None).reply();
    assert_eq!(r.status, 400);
    assert!(r.header_value("location").is_none());
    // The resource of no route here: back to the client with invalid_target.
    let location = w
        .send(
            "GET",
            &World::authorize_url(&client, &challenge, "http://127.0.0.1:10000/nope"),
            &[],
            None,
        )
        .location();
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("invalid_target")
    );
    // PKCE plain is refused.
    let url = World::authorize_url(&client, &challenge, "http://127.0.0.1:10000/mcp")
        .replace("S256", "plain");
    let location = w.send("GET", &url, &[], None).location();
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("invalid_request")
    );
}

#[test]
fn refresh_rotation_grace_and_reuse_revokes_the_family() {
    let mut w = World::new(json!({}));
    let (client, first) = w.redeemed();
    let rt1 = first["refresh_token"].as_str().unwrap().to_string();
    let refresh = |w: &mut World, rt: &str| {
        w.post_form(
            "/.oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt),
                ("client_id", &client),
            ],
        )
        .json()
    };
    let (status, second) = refresh(&mut w, &rt1);
    assert_eq!(status, 200, "{second}");
    let rt2 = second["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt1, rt2);
    // A benign retry within the grace gets the same answer.
    let (status, again) = refresh(&mut w, &rt1);
    assert_eq!((status, &again), (200, &second));
    // After the grace, the old token is a replay: the family is revoked.
    w.now += 11;
    let (status, err) = refresh(&mut w, &rt1);
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, _) = refresh(&mut w, &rt2);
    assert_eq!(status, 400);
    let te = second["access_token"].as_str().unwrap();
    assert_eq!(w.mcp("/mcp", te).reply().status, 401);
}

#[test]
fn expired_and_tampered_tokens_and_revocation() {
    let mut w = World::new(json!({"authorization_server": {"access_token_ttl_seconds": 60}}));
    let (client, tokens) = w.redeemed();
    let te = tokens["access_token"].as_str().unwrap().to_string();
    let mut tampered = te.clone().into_bytes();
    let i = tampered.len() - 5;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    assert_eq!(
        w.mcp("/mcp", std::str::from_utf8(&tampered).unwrap())
            .reply()
            .status,
        401
    );
    w.now += 61;
    let r = w.mcp("/mcp", &te).reply();
    assert_eq!(r.status, 401);
    assert!(
        r.header_value("www-authenticate")
            .unwrap()
            .contains("expired")
    );
    // Revoking the refresh token stops the family.
    let rt = tokens["refresh_token"].as_str().unwrap().to_string();
    let r = w
        .post_form("/.oauth/revoke", &[("token", &rt), ("client_id", &client)])
        .reply();
    assert_eq!(r.status, 200);
    let (status, _) = w
        .post_form(
            "/.oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &rt),
                ("client_id", &client),
            ],
        )
        .json();
    assert_eq!(status, 400);
}

#[test]
fn consent_needs_its_csrf_token_and_deny_is_access_denied() {
    let mut w = World::new(json!({}));
    let state = w.start_sign_in("http://127.0.0.1:10000/mcp");
    let consent = w
        .send(
            "GET",
            &format!("/.oauth/callback?code=c&state={state}"),
            &[],
            None,
        )
        .location();
    let request = query_param(&consent, "request").unwrap();
    let r = w
        .post_form(
            "/.oauth/consent",
            &[("request", &request), ("decision", "approve")],
        )
        .reply();
    assert_eq!(r.status, 403);
    let r = w
        .post_form(
            "/.oauth/consent",
            &[
                ("request", &request),
                ("csrf", "forged"),
                ("decision", "approve"),
            ],
        )
        .reply();
    assert_eq!(r.status, 403);
    let page = String::from_utf8(
        w.send("GET", consent.strip_prefix(ORIGIN).unwrap(), &[], None)
            .reply()
            .body,
    )
    .unwrap();
    let csrf = between(&page, "name=\"csrf\" value=\"", "\"");
    let location = w
        .post_form(
            "/.oauth/consent",
            &[("request", &request), ("csrf", &csrf), ("decision", "deny")],
        )
        .location();
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("access_denied")
    );
    // The callback can't be replayed.
    let r = w
        .send(
            "GET",
            &format!("/.oauth/callback?code=c&state={state}"),
            &[],
            None,
        )
        .reply();
    // Refused: the sign-in cookie was spent by the first callback.
    assert_eq!(r.status, 403);
    // And with the cookie back (a replay from the same browser), refused as completed.
    w.cookies.insert("mcpof_login".into(), "replayed".into());
    let r = w
        .send(
            "GET",
            &format!("/.oauth/callback?code=c&state={state}"),
            &[],
            None,
        )
        .reply();
    assert_eq!(r.status, 403);
}

#[test]
fn the_callback_must_come_back_to_the_browser_that_left() {
    let mut w = World::new(json!({}));
    let client = w.public_client();
    let challenge = crypto::sha256_b64url(b"verifier-verifier-verifier-verifier-verifier-1");
    // The first request fetches (and caches) the identity provider's discovery document.
    w.send(
        "GET",
        &World::authorize_url(&client, &challenge, "http://127.0.0.1:10000/mcp"),
        &[],
        None,
    )
    .location();
    let before = w.kv.non_empty_len();
    let location = w
        .send(
            "GET",
            &World::authorize_url(&client, &challenge, "http://127.0.0.1:10000/mcp"),
            &[],
            None,
        )
        .location();
    let state = query_param(&location, "state").unwrap();
    // Nothing is stored for an anonymous browser.
    assert_eq!(
        w.kv.non_empty_len(),
        before,
        "an anonymous /authorize wrote to the store"
    );
    // Another browser (the victim of a login CSRF) follows the callback link.
    w.cookies.clear();
    let r = w
        .send(
            "GET",
            &format!("/.oauth/callback?code=c&state={state}"),
            &[],
            None,
        )
        .reply();
    assert_eq!(r.status, 403);
    // A state that is not the filter's own is refused too.
    let r = w
        .send("GET", "/.oauth/callback?code=c&state=forged", &[], None)
        .reply();
    assert_eq!(r.status, 400);
}

#[test]
fn a_route_that_admits_nobody_is_refused_after_sign_in() {
    let mut w = World::new(json!({}));
    let state = w.start_sign_in("http://127.0.0.1:10000/closed");
    let r = w
        .send(
            "GET",
            &format!("/.oauth/callback?code=c&state={state}"),
            &[],
            None,
        )
        .reply();
    assert_eq!(r.status, 403);
    assert!(String::from_utf8_lossy(&r.body).contains("alice@company.com is not allowed"));
}

#[test]
fn identity_provider_down_is_a_clear_error() {
    let mut w = World::new(json!({}));
    w.idp.down = true;
    let client = w.public_client();
    let challenge = crypto::sha256_b64url(b"verifier-verifier-verifier-verifier-verifier-1");
    let r = w
        .send(
            "GET",
            &World::authorize_url(&client, &challenge, "http://127.0.0.1:10000/mcp"),
            &[],
            None,
        )
        .reply();
    assert_eq!(r.status, 502);
    assert!(String::from_utf8_lossy(&r.body).contains("did not answer"));
}

#[test]
fn registration_is_idempotent_validated_and_rate_limited() {
    let mut w = World::new(
        json!({"authorization_server": {"registration": {"dynamic": {"max_per_window": 2}}}}),
    );
    // Public clients: the same metadata is the same client (no quota used twice).
    let public = json!({"redirect_uris": ["https://app.example.com/cb"], "client_name": "A", "token_endpoint_auth_method": "none"});
    let (s1, a) = w.register(public.clone());
    let (s2, b) = w.register(public);
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(a["client_id"], b["client_id"]);
    assert!(a.get("client_secret").is_none());
    // Confidential clients: a new client and secret each time, so nobody
    // learns another's secret by registering the same metadata.
    let confidential = json!({"redirect_uris": ["https://b.example.com/cb"]});
    let (s, c) = w.register(confidential.clone());
    assert_eq!(s, 201);
    assert_eq!(c["token_endpoint_auth_method"], "client_secret_basic");
    let (s, e) = w.register(json!({"redirect_uris": ["http://app.example.com/cb"]}));
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("invalid_redirect_uri"))
    );
    let (s, e) = w.register(confidential);
    assert_eq!(
        (s, e["error"].as_str()),
        (429, Some("temporarily_unavailable"))
    );
}

#[test]
fn confidential_client_authenticates() {
    let mut w = World::new(json!({}));
    let meta = json!({"redirect_uris": [REDIRECT], "grant_types": ["authorization_code", "refresh_token"]});
    let (_, reg) = w.register(meta.clone());
    let id = reg["client_id"].as_str().unwrap().to_string();
    let secret = reg["client_secret"].as_str().unwrap().to_string();
    // Registering the same metadata again yields another client, not this one's secret.
    let (_, other) = w.register(meta);
    assert_ne!(other["client_id"], reg["client_id"]);
    assert_ne!(other["client_secret"], reg["client_secret"]);
    let code = w.code_for(&id, "verifier-verifier-verifier-verifier-verifier-1");
    use base64::Engine;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:wrong"))
    );
    let body = format!(
        "grant_type=authorization_code&code={code}&code_verifier=verifier-verifier-verifier-verifier-verifier-1"
    );
    let (s, e) = w
        .send(
            "POST",
            "/.oauth/token",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("authorization", &basic),
            ],
            Some(body.as_bytes()),
        )
        .json();
    assert_eq!((s, e["error"].as_str()), (401, Some("invalid_client")));
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    );
    let (s, t) = w
        .send(
            "POST",
            "/.oauth/token",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("authorization", &basic),
            ],
            Some(body.as_bytes()),
        )
        .json();
    assert_eq!(s, 200, "{t}");
}

#[test]
fn metadata_documents() {
    let mut w = World::new(json!({}));
    let r = w
        .send("GET", "/.well-known/oauth-authorization-server", &[], None)
        .reply();
    let doc: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(doc["issuer"], ORIGIN);
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(
        doc["registration_endpoint"],
        "http://127.0.0.1:10000/.oauth/register"
    );
    assert_eq!(doc["authorization_response_iss_parameter_supported"], true);
    let r2 = w
        .send("GET", "/.well-known/openid-configuration", &[], None)
        .reply();
    assert_eq!(r.body, r2.body);
}

#[test]
fn nothing_is_stored_in_the_clear() {
    let mut w = World::new(json!({}));
    let client = w.public_client();
    let code = w.code_for(&client, "verifier-verifier-verifier-verifier-verifier-1");
    let (_, tokens) = w.redeem(
        &client,
        &code,
        "verifier-verifier-verifier-verifier-verifier-1",
    );
    let rt = tokens["refresh_token"].as_str().unwrap();
    for (key, value) in w.kv.entries() {
        let text = String::from_utf8_lossy(value);
        for secret in [code.as_str(), rt, "alice@company.com", "idp-access-token"] {
            assert!(
                !key.contains(secret) && !text.contains(secret),
                "{key} holds a secret in the clear"
            );
        }
    }
}

#[test]
fn maintenance_tick_warms_the_identity_provider_caches() {
    use mcp_oauth_filter::maintenance::{self, Purpose};
    let mut w = World::new(json!({}));
    let calls = w.core(maintenance::tick);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, Purpose::Discovery);
    let answer = w.idp.answer(&calls[0].1, w.now);
    let (purpose, call) = w
        .core(|ctx| maintenance::on_answer(ctx, Purpose::Discovery, &answer))
        .unwrap();
    assert_eq!(purpose, Purpose::Jwks);
    let answer = w.idp.answer(&call, w.now);
    assert!(
        w.core(|ctx| maintenance::on_answer(ctx, Purpose::Jwks, &answer))
            .is_none()
    );
    // Warm: nothing to do until shortly before they expire.
    assert!(w.core(maintenance::tick).is_empty());
    w.now += maintenance::IDP_CACHE_SECONDS - 300;
    assert_eq!(w.core(maintenance::tick)[0].0, Purpose::Discovery);
}

#[test]
fn a_guessed_refresh_token_does_not_revoke_the_grant() {
    let mut w = World::new(json!({}));
    let (client, tokens) = w.redeemed();
    let rt = tokens["refresh_token"].as_str().unwrap().to_string();
    let gid = rt.split('.').next().unwrap();
    let refresh = |w: &mut World, rt: &str| {
        w.post_form(
            "/.oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt),
                ("client_id", &client),
            ],
        )
        .json()
    };
    let (status, err) = refresh(&mut w, &format!("{gid}.not-the-secret"));
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // The real token still works: a guess is no replay.
    let (status, next) = refresh(&mut w, &rt);
    assert_eq!(status, 200, "{next}");
    // A token two rotations old is a replay: the family goes.
    let (_, third) = refresh(&mut w, next["refresh_token"].as_str().unwrap());
    w.now += 11;
    let (status, _) = refresh(&mut w, &rt);
    assert_eq!(status, 400);
    let (status, _) = refresh(&mut w, third["refresh_token"].as_str().unwrap());
    assert_eq!(status, 400, "the family was revoked");
}

fn revoke(w: &mut World, client: &str, token: &str) -> u32 {
    w.post_form("/.oauth/revoke", &[("token", token), ("client_id", client)])
        .reply()
        .status
}

#[test]
fn revocation_needs_the_token_itself_not_the_grant_id() {
    // By the refresh token, or by the access token: either revokes the grant.
    for by_refresh_token in [true, false] {
        let mut w = World::new(json!({}));
        let (client, tokens) = w.redeemed();
        let te = tokens["access_token"].as_str().unwrap().to_string();
        let rt = tokens["refresh_token"].as_str().unwrap().to_string();
        // The grant id is readable in every access token's payload.
        let gid = rt.split('.').next().unwrap();
        for forged in [
            format!("{gid}.anything"),
            format!("{gid}."),
            gid.to_string(),
        ] {
            // RFC 7009 2.2: an unknown token is a no-op.
            assert_eq!(revoke(&mut w, &client, &forged), 200);
            assert!(
                matches!(w.mcp("/mcp", &te), Done::Forward(_)),
                "{forged} revoked the grant"
            );
        }
        let real = if by_refresh_token { &rt } else { &te };
        assert_eq!(revoke(&mut w, &client, real), 200);
        assert_eq!(w.mcp("/mcp", &te).reply().status, 401);
    }
}

#[test]
fn the_registration_quota_is_per_source_under_a_global_ceiling() {
    let mut w = World::new(
        json!({"authorization_server": {"registration": {"dynamic": {
        "max_per_source_per_window": 2, "max_per_window": 4}}}}),
    );
    let register = |w: &mut World, n: u32| {
        w.send(
            "POST",
            "/.oauth/register",
            &[("content-type", "application/json")],
            Some(json!({"redirect_uris": [format!("https://app{n}.example.com/cb")], "token_endpoint_auth_method": "none"}).to_string().as_bytes()),
        )
        .reply()
    };
    w.source = Some("10.0.0.1:5000".into());
    assert_eq!(register(&mut w, 1).status, 201);
    assert_eq!(register(&mut w, 2).status, 201);
    let r = register(&mut w, 3);
    assert_eq!(r.status, 429);
    assert!(
        r.header_value("retry-after")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body).unwrap()["error"],
        "temporarily_unavailable"
    );
    // Another port of the same address is the same source; a forwarded
    // header is never read by the filter (Envoy decides the address).
    w.source = Some("10.0.0.1:5001".into());
    let r = w
        .send(
            "POST",
            "/.oauth/register",
            &[("content-type", "application/json"), ("x-forwarded-for", "1.2.3.4")],
            Some(br#"{"redirect_uris": ["https://x.example.com/cb"], "token_endpoint_auth_method": "none"}"#),
        )
        .reply();
    assert_eq!(r.status, 429);
    // Another source is not locked out by the first one's flood.
    w.source = Some("10.0.0.2:5000".into());
    assert_eq!(register(&mut w, 4).status, 201);
    assert_eq!(register(&mut w, 5).status, 201);
    // The global ceiling holds for everyone.
    w.source = Some("10.0.0.3:5000".into());
    assert_eq!(register(&mut w, 6).status, 429);
}

#[test]
fn control_characters_never_reach_a_location_header() {
    let mut w = World::new(json!({}));
    for uri in [
        "https://app.example/cb\r\nSet-Cookie: planted=1",
        "https://app.example/cb\nSet-Cookie: planted=1",
        "https://app.example/cb\rX",
        "https://app.example/c\tb",
        "https://app.example/cb\u{0}",
        "https://app.example/cb\u{b}",
        "https://app.example/cb\r\n\r\n<h1>body</h1>",
        "https://App.Example/cb",
    ] {
        let (status, e) =
            w.register(json!({"redirect_uris": [uri], "token_endpoint_auth_method": "none"}));
        assert_eq!(
            (status, e["error"].as_str()),
            (400, Some("invalid_redirect_uri")),
            "{uri:?}"
        );
    }
    let (status, e) = w.register(json!({"redirect_uris": ["https://app.example/cb"],
        "client_uri": "https://app.example/\r\nx", "token_endpoint_auth_method": "none"}));
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("invalid_client_metadata"))
    );
    // A loopback client may use any port, but not a URI the parser would clean up.
    let client = w.public_client();
    let challenge = crypto::sha256_b64url(b"verifier-verifier-verifier-verifier-verifier-1");
    let url = World::authorize_url(&client, &challenge, "http://127.0.0.1:10000/mcp").replace(
        "redirect_uri=http%3A%2F%2F127.0.0.1%3A53111%2Fcallback",
        "redirect_uri=http%3A%2F%2F127.0.0.1%3A5555%2Fcallback%0D%0ASet-Cookie%3A+planted%3D1",
    );
    assert!(url.contains("%0D%0A"), "{url}");
    let r = w.send("GET", &url, &[], None).reply();
    assert_eq!(r.status, 400);
    assert!(r.header_value("location").is_none());
    assert!(r.headers.iter().all(|(n, _)| n != "set-cookie"));
}

#[test]
fn the_machine_logs_what_it_did_and_never_a_token() {
    let mut w = World::new(json!({}));
    let (client, tokens) = w.redeemed();
    let te = tokens["access_token"].as_str().unwrap().to_string();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    // Reusing a rotated refresh token is logged as reuse (and revokes the grant).
    let rotate = |w: &mut World, token: &str| {
        w.post_form(
            "/.oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", token),
                ("client_id", &client),
            ],
        )
        .json()
    };
    let (status, _) = rotate(&mut w, &refresh);
    assert_eq!(status, 200);
    w.now += 3600;
    let (status, _) = rotate(&mut w, &refresh);
    assert_eq!(status, 400);
    let logs = w.logs.join("\n");
    assert!(logs.contains("signed in: user"), "{logs}");
    assert!(logs.contains("issued tokens: user"), "{logs}");
    assert!(logs.contains("refresh token reuse"), "{logs}");
    for secret in [te.as_str(), refresh.as_str(), "idp-secret"] {
        assert!(!logs.contains(secret), "a secret reached the log: {logs}");
    }
}
