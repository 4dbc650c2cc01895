#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

//! Whole OAuth sequences through the core, with a fake host that keeps
//! Envoy's rules: the store is a MemoryKv with shared-data CAS semantics,
//! outside calls are answered by a fake identity provider, and a failed
//! call comes back as a response without headers.

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mcp_oauth_filter::config::Config;
use mcp_oauth_filter::crypto;
use mcp_oauth_filter::env::TestRandom;
use mcp_oauth_filter::flow::{self, Ctx, Effect, Filter, Next, RequestHead, Stage, Step};
use mcp_oauth_filter::outbound::{CallResponse, OutboundCall};
use mcp_oauth_filter::reply::Reply;
use mcp_oauth_filter::store::MemoryKv;
use serde_json::{Value, json};

const ORIGIN: &str = "http://127.0.0.1:10000";
const IDP: &str = "http://127.0.0.1:9400";
const REDIRECT: &str = "http://127.0.0.1:53111/callback";

fn config(extra: Value) -> Filter {
    let mut c = json!({
        "identity_provider": {"issuer": IDP, "client_id": "mcp-oauth-filter", "client_secret": "idp-secret", "cluster": "idp"},
        "keys": {
            "token_signing": [{"id": "te-1", "secret": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}],
            "encryption": [{"id": "enc-1", "key": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}]
        },
        "routes": [
            {"from": ORIGIN, "name": "demo", "mcp": {"server": {"path": "/mcp"}}, "allow_any_authenticated_user": true},
            {"from": ORIGIN, "name": "other", "mcp": {"server": {"path": "/other"}}, "allow_any_authenticated_user": true},
            {"from": "http://127.0.0.1:10000", "name": "closed", "mcp": {"server": {"path": "/closed"}}}
        ],
        "authorization_server": {"refresh_reuse_grace_seconds": 10}
    });
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            c[k] = v;
        }
    }
    Filter::new(Config::parse(c.to_string().as_bytes()).unwrap())
}

/// The fake identity provider: what it saw, and how it answers.
#[derive(Default)]
struct Idp {
    nonce: Option<String>,
    code_challenge: Option<String>,
    alg: Option<Algorithm>,
    calls: Vec<OutboundCall>,
    down: bool,
    email_in_id_token: bool,
}

struct World {
    filter: Filter,
    kv: MemoryKv,
    random: TestRandom,
    now: u64,
    idp: Idp,
    cookies: HashMap<String, String>,
}

/// What the filter did with a request in the end.
#[derive(Debug)]
enum Done {
    Reply(Reply),
    Forward(Vec<Effect>),
}

impl Done {
    fn reply(self) -> Reply {
        match self {
            Done::Reply(r) => r,
            Done::Forward(e) => panic!("expected a reply, got forwarded with {e:?}"),
        }
    }
    fn location(self) -> String {
        let r = self.reply();
        assert_eq!(r.status, 302, "{}", String::from_utf8_lossy(&r.body));
        r.header_value("location").unwrap().to_string()
    }
    fn json(self) -> (u32, Value) {
        let r = self.reply();
        (
            r.status,
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        )
    }
}

fn query_param(url: &str, name: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

impl World {
    fn new(extra: Value) -> Self {
        World {
            filter: config(extra),
            kv: MemoryKv::new(),
            random: TestRandom::new(42),
            now: 1_800_000_000,
            idp: Idp {
                alg: Some(Algorithm::RS256),
                ..Idp::default()
            },
            cookies: HashMap::new(),
        }
    }

    fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Done {
        let mut h: Vec<(String, Vec<u8>)> = vec![
            (":method".into(), method.into()),
            (":authority".into(), b"127.0.0.1:10000".to_vec()),
            (":path".into(), path.into()),
        ];
        h.extend(
            headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())),
        );
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            h.push(("cookie".into(), jar.join("; ").into_bytes()));
        }
        let head = RequestHead::from_pairs(h);
        let filter = &self.filter;
        let mut ctx = Ctx {
            filter,
            now: self.now,
            random: &mut self.random,
            kv: &mut self.kv,
        };
        let mut step: Step = flow::on_request_headers(&mut ctx, &head);
        loop {
            if let Stage::ReadingBody { .. } = step.stage {
                assert_eq!(step.next, Next::Continue);
                step = flow::on_request_body(&mut ctx, &step.stage, body.unwrap_or_default());
                continue;
            }
            let dispatch = step.effects.iter().find_map(|e| match e {
                Effect::Dispatch(c) => Some(c.clone()),
                _ => None,
            });
            if let Some(call) = dispatch {
                assert_eq!(step.next, Next::Stop);
                let answer = self.idp.answer(&call, self.now);
                step = flow::on_call_response(&mut ctx, &step.stage, &answer);
                continue;
            }
            break;
        }
        for e in &step.effects {
            if let Effect::SendReply(r) = e {
                for (n, v) in &r.headers {
                    if n == "set-cookie" {
                        let (kv, _) = v.split_once(';').unwrap();
                        let (k, v) = kv.split_once('=').unwrap();
                        self.cookies.insert(k.into(), v.into());
                    }
                }
                return Done::Reply(r.clone());
            }
        }
        assert!(
            matches!(step.stage, Stage::Forwarded { .. }),
            "{:?}",
            step.stage
        );
        Done::Forward(step.effects)
    }

    fn post_form(&mut self, path: &str, form: &[(&str, &str)]) -> Done {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.send(
            "POST",
            path,
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(body.as_bytes()),
        )
    }

    fn register(&mut self, metadata: Value) -> (u32, Value) {
        self.send(
            "POST",
            "/.oauth/register",
            &[("content-type", "application/json")],
            Some(metadata.to_string().as_bytes()),
        )
        .json()
    }

    fn public_client(&mut self) -> String {
        let (status, body) = self.register(json!({
            "redirect_uris": ["http://127.0.0.1/callback"], "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"], "client_name": "Test client"
        }));
        assert_eq!(status, 201, "{body}");
        body["client_id"].as_str().unwrap().to_string()
    }

    fn authorize_url(client_id: &str, challenge: &str, resource: &str) -> String {
        mcp_oauth_filter::oauth::form::with_query(
            "/.oauth/authorize",
            &[
                ("response_type", "code"),
                ("client_id", client_id),
                ("redirect_uri", REDIRECT),
                ("code_challenge", challenge),
                ("code_challenge_method", "S256"),
                ("state", "st-1"),
                ("resource", resource),
                ("scope", "mcp"),
            ],
        )
    }

    /// Runs authorize → IdP sign-in → consent; returns the client's redirect.
    fn authorize(&mut self, client_id: &str, verifier: &str, resource: &str) -> String {
        let challenge = crypto::sha256_b64url(verifier.as_bytes());
        let mut location = self
            .send(
                "GET",
                &Self::authorize_url(client_id, &challenge, resource),
                &[],
                None,
            )
            .location();
        if location.starts_with(IDP) {
            // The person signs in at the identity provider, which sends them back.
            self.idp.nonce = query_param(&location, "nonce");
            self.idp.code_challenge = query_param(&location, "code_challenge");
            assert_eq!(
                query_param(&location, "code_challenge_method").as_deref(),
                Some("S256")
            );
            assert_eq!(
                query_param(&location, "redirect_uri").as_deref(),
                Some("http://127.0.0.1:10000/.oauth/callback")
            );
            let state = query_param(&location, "state").unwrap();
            let back = mcp_oauth_filter::oauth::form::with_query(
                "/.oauth/callback",
                &[("code", "idp-code"), ("state", &state)],
            );
            location = self.send("GET", &back, &[], None).location();
        }
        if location.starts_with(&format!("{ORIGIN}/.oauth/consent")) {
            let path = location.strip_prefix(ORIGIN).unwrap().to_string();
            let page = self.send("GET", &path, &[], None).reply();
            assert_eq!(page.status, 200, "{}", String::from_utf8_lossy(&page.body));
            let html = String::from_utf8(page.body).unwrap();
            let request = between(&html, "name=\"request\" value=\"", "\"");
            let csrf = between(&html, "name=\"csrf\" value=\"", "\"");
            location = self
                .post_form(
                    "/.oauth/consent",
                    &[
                        ("request", &request),
                        ("csrf", &csrf),
                        ("decision", "approve"),
                    ],
                )
                .location();
        }
        location
    }

    fn code_for(&mut self, client_id: &str, verifier: &str) -> String {
        let location = self.authorize(client_id, verifier, "http://127.0.0.1:10000/mcp");
        assert!(location.starts_with(REDIRECT), "{location}");
        assert_eq!(query_param(&location, "state").as_deref(), Some("st-1"));
        assert_eq!(query_param(&location, "iss").as_deref(), Some(ORIGIN));
        query_param(&location, "code").unwrap()
    }

    fn redeem(&mut self, client_id: &str, code: &str, verifier: &str) -> (u32, Value) {
        self.post_form(
            "/.oauth/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("client_id", client_id),
                ("code_verifier", verifier),
                ("resource", "http://127.0.0.1:10000/mcp"),
            ],
        )
        .json()
    }

    fn mcp(&mut self, path: &str, token: &str) -> Done {
        let auth = format!("Bearer {token}");
        self.send(
            "POST",
            path,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            Some(b"{}"),
        )
    }
}

fn between(text: &str, start: &str, end: &str) -> String {
    let from = text.find(start).unwrap() + start.len();
    let len = text[from..].find(end).unwrap();
    text[from..from + len].to_string()
}

impl Idp {
    fn answer(&mut self, call: &OutboundCall, now: u64) -> CallResponse {
        self.calls.push(call.clone());
        if self.down {
            return CallResponse::failed();
        }
        assert_eq!(call.cluster, "idp");
        let path = call.header_value(":path").unwrap().to_string();
        let ok = |body: Value| {
            CallResponse::from_parts(
                vec![(":status".into(), "200".into())],
                body.to_string().into_bytes(),
            )
        };
        match path.as_str() {
            "/.well-known/openid-configuration" => ok(json!({
                "issuer": IDP, "authorization_endpoint": format!("{IDP}/auth"), "token_endpoint": format!("{IDP}/token"),
                "jwks_uri": format!("{IDP}/jwks"), "userinfo_endpoint": format!("{IDP}/me")
            })),
            "/token" => {
                // The filter authenticates with client_secret_basic and PKCE.
                assert!(
                    call.header_value("authorization")
                        .unwrap()
                        .starts_with("Basic ")
                );
                let body = String::from_utf8(call.body.clone()).unwrap();
                let verifier = query_param(&format!("?{body}"), "code_verifier").unwrap();
                assert_eq!(
                    Some(crypto::sha256_b64url(verifier.as_bytes())),
                    self.code_challenge
                );
                let alg = self.alg.unwrap();
                let mut header = Header::new(alg);
                let (kid, key) = match alg {
                    Algorithm::ES256 => (
                        "ec-test",
                        EncodingKey::from_ec_pem(include_bytes!("fixtures/idp-ec.pem")).unwrap(),
                    ),
                    _ => (
                        "rsa-test",
                        EncodingKey::from_rsa_pem(include_bytes!("fixtures/idp-rsa.pem")).unwrap(),
                    ),
                };
                header.kid = Some(kid.into());
                let mut claims = json!({"iss": IDP, "aud": "mcp-oauth-filter", "sub": "alice", "exp": now + 300, "iat": now,
                                        "nonce": self.nonce.clone().unwrap()});
                if self.email_in_id_token {
                    claims["email"] = json!("alice@company.com");
                }
                let id_token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
                ok(
                    json!({"id_token": id_token, "access_token": "idp-access-token", "token_type": "Bearer"}),
                )
            }
            "/jwks" => CallResponse::from_parts(
                vec![(":status".into(), "200".into())],
                include_bytes!("fixtures/idp-jwks.json").to_vec(),
            ),
            "/me" => {
                assert_eq!(
                    call.header_value("authorization"),
                    Some("Bearer idp-access-token")
                );
                ok(json!({"sub": "alice", "email": "alice@company.com", "groups": ["engineering"]}))
            }
            other => panic!("unexpected IdP call {other}"),
        }
    }
}

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
            Done::Forward(effects) => {
                assert_eq!(effects, vec![Effect::RemoveRequestHeader("authorization")])
            }
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

#[test]
fn second_authorization_reuses_session_and_remembered_consent() {
    let mut w = World::new(json!({}));
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
    assert!(
        location.starts_with(REDIRECT) && location.contains("code="),
        "{location}"
    );
    assert_eq!(w.idp.calls.len(), calls, "no second sign-in");
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
    let client = w.public_client();
    let code = w.code_for(&client, "verifier-verifier-verifier-verifier-verifier-1");
    let (_, first) = w.redeem(
        &client,
        &code,
        "verifier-verifier-verifier-verifier-verifier-1",
    );
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
    let client = w.public_client();
    let code = w.code_for(&client, "verifier-verifier-verifier-verifier-verifier-1");
    let (_, tokens) = w.redeem(
        &client,
        &code,
        "verifier-verifier-verifier-verifier-verifier-1",
    );
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
    let client = w.public_client();
    let challenge = crypto::sha256_b64url(b"verifier-verifier-verifier-verifier-verifier-1");
    let location = w
        .send(
            "GET",
            &World::authorize_url(&client, &challenge, "http://127.0.0.1:10000/mcp"),
            &[],
            None,
        )
        .location();
    w.idp.nonce = query_param(&location, "nonce");
    w.idp.code_challenge = query_param(&location, "code_challenge");
    let state = query_param(&location, "state").unwrap();
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
    assert_eq!(r.status, 400);
}

#[test]
fn a_route_that_admits_nobody_is_refused_after_sign_in() {
    let mut w = World::new(json!({}));
    let client = w.public_client();
    let challenge = crypto::sha256_b64url(b"verifier-verifier-verifier-verifier-verifier-1");
    let location = w
        .send(
            "GET",
            &World::authorize_url(&client, &challenge, "http://127.0.0.1:10000/closed"),
            &[],
            None,
        )
        .location();
    w.idp.nonce = query_param(&location, "nonce");
    w.idp.code_challenge = query_param(&location, "code_challenge");
    let state = query_param(&location, "state").unwrap();
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
    let meta = json!({"redirect_uris": ["https://app.example.com/cb"], "client_name": "A"});
    let (s1, a) = w.register(meta.clone());
    let (s2, b) = w.register(meta);
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(a["client_id"], b["client_id"]);
    assert_eq!(a["client_secret"], b["client_secret"]);
    assert_eq!(a["token_endpoint_auth_method"], "client_secret_basic");
    let (s, e) = w.register(json!({"redirect_uris": ["http://app.example.com/cb"]}));
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("invalid_redirect_uri"))
    );
    let (s, _) = w.register(json!({"redirect_uris": ["https://b.example.com/cb"]}));
    assert_eq!(s, 201);
    let (s, e) = w.register(json!({"redirect_uris": ["https://c.example.com/cb"]}));
    assert_eq!(
        (s, e["error"].as_str()),
        (429, Some("temporarily_unavailable"))
    );
}

#[test]
fn confidential_client_authenticates() {
    let mut w = World::new(json!({}));
    let (_, reg) = w.register(json!({"redirect_uris": [REDIRECT], "grant_types": ["authorization_code", "refresh_token"]}));
    let id = reg["client_id"].as_str().unwrap().to_string();
    let secret = reg["client_secret"].as_str().unwrap().to_string();
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
    let filter = &w.filter;
    let mut ctx = Ctx {
        filter,
        now: w.now,
        random: &mut w.random,
        kv: &mut w.kv,
    };
    let calls = maintenance::tick(&mut ctx);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, Purpose::Discovery);
    let answer = w.idp.answer(&calls[0].1, ctx.now);
    let (purpose, call) = maintenance::on_answer(&mut ctx, Purpose::Discovery, &answer).unwrap();
    assert_eq!(purpose, Purpose::Jwks);
    let answer = w.idp.answer(&call, ctx.now);
    assert!(maintenance::on_answer(&mut ctx, Purpose::Jwks, &answer).is_none());
    // Warm: nothing to do until shortly before they expire.
    assert!(maintenance::tick(&mut ctx).is_empty());
    ctx.now += maintenance::IDP_CACHE_SECONDS - 300;
    assert_eq!(maintenance::tick(&mut ctx)[0].0, Purpose::Discovery);
}
