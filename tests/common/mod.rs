#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)] // test code

//! The fake host for the flow tests: it keeps Envoy's rules. The store is a
//! MemoryKv with shared-data CAS semantics, outside calls are answered by
//! fake providers, and a failed call comes back as a response without headers.

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mcp_oauth_filter::config::Config;
use mcp_oauth_filter::crypto;
use mcp_oauth_filter::env::TestRandom;
use mcp_oauth_filter::flow::{
    self, Command, Ctx, Event, Filter, Next, RefreshJob, RequestHead, ResponseHead, Stage, Step,
};
use mcp_oauth_filter::outbound::{CallResponse, OutboundCall};
use mcp_oauth_filter::reply::Reply;
use mcp_oauth_filter::store::MemoryKv;
use serde_json::{Value, json};

pub const ORIGIN: &str = "http://127.0.0.1:10000";
pub const IDP: &str = "http://127.0.0.1:9400";
pub const REDIRECT: &str = "http://127.0.0.1:53111/callback";

pub fn config(extra: Value) -> Filter {
    let mut c = json!({
        "identity_provider": {"issuer": IDP, "client_id": "mcp-oauth-filter", "client_secret": "idp-secret", "cluster": "idp"},
        "keys": {
            "token_signing": [{"id": "te-1", "secret": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}],
            "encryption": [{"id": "enc-1", "key": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}]
        },
        "routes": [
            {"from": ORIGIN, "name": "demo", "mcp": {"server": {"path": "/mcp"}}, "allow_any_authenticated_user": true},
            {"from": ORIGIN, "name": "other", "mcp": {"server": {"path": "/other"}}, "allow_any_authenticated_user": true},
            {"from": "http://127.0.0.1:10000", "name": "closed", "mcp": {"server": {"path": "/closed"}}},
            {"from": ORIGIN, "name": "seed", "mcp": {"server": {"path": "/seed"}},
             "policy": {"allow": {"and": [{"domain": {"is": "company.com"}}]},
                        "deny": {"or": [{"mcp_tool": {"starts_with": "admin_"}}]}}},
            {"from": ORIGIN, "name": "gh", "allow_any_authenticated_user": true, "mcp": {"server": {"path": "/gh",
                "upstream_oauth2": {"client_id": "gh-client", "client_secret": "gh-secret", "scopes": ["read:user", "repo"],
                    "endpoint": {"auth_url": "http://127.0.0.1:9500/login/oauth/authorize",
                                 "token_url": "http://127.0.0.1:9500/login/oauth/access_token", "cluster": "upstream"},
                    "authorization_url_params": {"prompt": "consent"}}}}}
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
pub struct Idp {
    /// Who signs in (default alice@company.com; anyone else is @other.example).
    pub login: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub alg: Option<Algorithm>,
    pub calls: Vec<OutboundCall>,
    pub down: bool,
    pub email_in_id_token: bool,
}

pub struct World {
    pub up: Upstream,
    /// The stage of the last forwarded MCP request (for response tests).
    pub last_stage: Option<Stage>,
    pub filter: Filter,
    pub kv: MemoryKv,
    pub random: TestRandom,
    pub now: u64,
    pub idp: Idp,
    pub cookies: HashMap<String, String>,
    /// Envoy's downstream address for the requests sent.
    pub source: Option<String>,
    /// The log lines the machine asked for.
    pub logs: Vec<String>,
}

/// What the filter did with a request in the end.
#[derive(Debug)]
pub enum Done {
    Reply(Reply),
    Forward(Vec<Command>),
}

impl Done {
    pub fn reply(self) -> Reply {
        match self {
            Done::Reply(r) => r,
            Done::Forward(e) => panic!("expected a reply, got forwarded with {e:?}"),
        }
    }
    pub fn location(self) -> String {
        let r = self.reply();
        assert_eq!(r.status, 302, "{}", String::from_utf8_lossy(&r.body));
        r.header_value("location").unwrap().to_string()
    }
    pub fn json(self) -> (u32, Value) {
        let r = self.reply();
        (
            r.status,
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        )
    }
}

pub fn query_param(url: &str, name: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

impl World {
    /// Runs one core step on this world's store, clock and randomness.
    pub fn core<T>(&mut self, f: impl FnMut(&mut Ctx<'_>) -> T) -> T {
        run_core(&self.filter, &mut self.kv, &mut self.random, self.now, f)
    }

    pub fn new(extra: Value) -> Self {
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
            up: Upstream {
                ttl: 300,
                ..Upstream::default()
            },
            last_stage: None,
            source: Some("127.0.0.1:40000".into()),
            logs: Vec::new(),
        }
    }

    pub fn send(
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
        let mut head = RequestHead::from_pairs(h);
        // As Envoy says of a request without a body.
        head.end_of_stream = body.is_none() && method != "POST";
        if head.needs_downstream_address() {
            head.downstream_address = self.source.clone();
        }
        let body = body.unwrap_or_default();
        let mut step = self.event(&Stage::Start, Event::RequestHeaders(head), body);
        let mut body_sent = false;
        loop {
            // The root context's part: a refresh runs to its end, then the
            // parked request looks again.
            if let Some(job) = Self::refresh_of(&step) {
                run_refresh(self, job);
                if let Stage::Parked { .. } = step.stage {
                    let stage = step.stage.clone();
                    step = self.event(&stage, Event::Wake, body);
                    assert!(
                        !matches!(step.stage, Stage::Parked { .. }),
                        "woken after the refresh"
                    );
                    continue;
                }
            }
            let wants_body = match &step.stage {
                Stage::ReadingBody { .. } => true,
                Stage::Forwarded { passage, .. } => passage.inspect.is_some(),
                _ => false,
            };
            if wants_body && !body_sent {
                // Envoy hands the body over once the headers went on.
                assert_eq!(step.next, Next::Continue);
                body_sent = true;
                let forwarded = step.commands.clone();
                let stage = step.stage.clone();
                let size = body.len();
                step = self.event(
                    &stage,
                    Event::RequestBody {
                        size,
                        end_of_stream: true,
                    },
                    body,
                );
                if step.next == Next::Continue && matches!(step.stage, Stage::Forwarded { .. }) {
                    self.last_stage = Some(step.stage.clone());
                    return Done::Forward(forwarded);
                }
                continue;
            }
            let dispatch = step.commands.iter().find_map(|e| match e {
                Command::Dispatch(c) => Some(c.clone()),
                _ => None,
            });
            if let Some(call) = dispatch {
                assert_eq!(step.next, Next::Stop);
                let answer = if call.cluster == "upstream" {
                    self.up.answer(&call, self.now)
                } else {
                    self.idp.answer(&call, self.now)
                };
                let stage = step.stage.clone();
                step = self.event(&stage, Event::CallAnswer(answer), body);
                continue;
            }
            break;
        }
        for e in &step.commands {
            if let Command::Reply(r) = e {
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
        Done::Forward(step.commands)
    }

    pub fn post_form(&mut self, path: &str, form: &[(&str, &str)]) -> Done {
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

    pub fn register(&mut self, metadata: Value) -> (u32, Value) {
        self.send(
            "POST",
            "/.oauth/register",
            &[("content-type", "application/json")],
            Some(metadata.to_string().as_bytes()),
        )
        .json()
    }

    pub fn public_client(&mut self) -> String {
        let (status, body) = self.register(json!({
            "redirect_uris": ["http://127.0.0.1/callback"], "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"], "client_name": "Test client"
        }));
        assert_eq!(status, 201, "{body}");
        body["client_id"].as_str().unwrap().to_string()
    }

    pub fn authorize_url(client_id: &str, challenge: &str, resource: &str) -> String {
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
    pub fn authorize(&mut self, client_id: &str, verifier: &str, resource: &str) -> String {
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
        if location.starts_with("http://127.0.0.1:9500/login/oauth/authorize") {
            // The provider's consent: it sends the browser back with a code.
            self.up.authorize_params = Some(location.clone());
            let state = query_param(&location, "state").unwrap();
            assert_eq!(
                query_param(&location, "redirect_uri").as_deref(),
                Some("http://127.0.0.1:10000/.oauth/upstream/callback")
            );
            let back = if self.up.user_refuses {
                mcp_oauth_filter::oauth::form::with_query(
                    "/.oauth/upstream/callback",
                    &[("error", "access_denied"), ("state", &state)],
                )
            } else {
                self.up.challenge = query_param(&location, "code_challenge");
                mcp_oauth_filter::oauth::form::with_query(
                    "/.oauth/upstream/callback",
                    &[("code", "up-code"), ("state", &state)],
                )
            };
            if self.up.stranger_first {
                // Someone else's browser (no session cookie) tries the state first.
                let cookies = std::mem::take(&mut self.cookies);
                let status = self.send("GET", &back, &[], None).reply().status;
                self.up.stranger_status = Some(status);
                self.cookies = cookies;
            }
            location = self.send("GET", &back, &[], None).location();
        }
        location
    }

    /// A new public client's authorization request, up to the identity
    /// provider (which learns its nonce and PKCE challenge): the IdP state.
    pub fn start_sign_in(&mut self, resource: &str) -> String {
        let client = self.public_client();
        let challenge = crypto::sha256_b64url(b"verifier-verifier-verifier-verifier-verifier-1");
        let location = self
            .send(
                "GET",
                &Self::authorize_url(&client, &challenge, resource),
                &[],
                None,
            )
            .location();
        self.idp.nonce = query_param(&location, "nonce");
        self.idp.code_challenge = query_param(&location, "code_challenge");
        query_param(&location, "state").unwrap()
    }

    /// A public client signed in at `/mcp` with the usual verifier, its code
    /// redeemed: the client id and the token answer.
    pub fn redeemed(&mut self) -> (String, Value) {
        let client = self.public_client();
        let verifier = "verifier-verifier-verifier-verifier-verifier-1";
        let code = self.code_for(&client, verifier);
        let (status, tokens) = self.redeem(&client, &code, verifier);
        assert_eq!(status, 200, "{tokens}");
        (client, tokens)
    }

    /// The access token (TE) for `resource`, after signing in and consenting.
    pub fn access_token_for(&mut self, resource: &str) -> String {
        self.tokens_for(resource)["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Signs in, consents (upstream too) and redeems: the tokens for `resource`.
    pub fn tokens_for(&mut self, resource: &str) -> Value {
        let client = self.public_client();
        let verifier = "verifier-verifier-verifier-verifier-verifier-9";
        let location = self.authorize(&client, verifier, resource);
        let code =
            query_param(&location, "code").unwrap_or_else(|| panic!("no code in {location}"));
        let (status, tokens) = self
            .post_form(
                "/.oauth/token",
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", REDIRECT),
                    ("client_id", &client),
                    ("code_verifier", verifier),
                ],
            )
            .json();
        assert_eq!(status, 200, "{tokens}");
        tokens
    }

    /// Starts an MCP request without answering its calls: for concurrency tests.
    pub fn start_mcp(&mut self, path: &str, token: &str) -> Step {
        let auth = format!("Bearer {token}");
        let head = RequestHead::from_pairs(vec![
            (":method".into(), b"POST".to_vec()),
            (":authority".into(), b"127.0.0.1:10000".to_vec()),
            (":path".into(), path.as_bytes().to_vec()),
            ("authorization".into(), auth.into_bytes()),
        ]);
        self.event(&Stage::Start, Event::RequestHeaders(head), b"")
    }

    /// Runs the refresh a step started, as the root context does, with the
    /// fake upstream; then the request looks again (`None`: still parked).
    pub fn answer_upstream(&mut self, step: &Step) -> Option<Step> {
        let job = step
            .commands
            .iter()
            .find_map(|e| match e {
                Command::StartRefresh(job) => Some((**job).clone()),
                _ => None,
            })
            .expect("a refresh");
        run_refresh(self, job);
        self.wake(step)
    }

    /// The refresh a step started, without running it.
    pub fn refresh_of(step: &Step) -> Option<RefreshJob> {
        step.commands.iter().find_map(|e| match e {
            Command::StartRefresh(job) => Some((**job).clone()),
            _ => None,
        })
    }

    /// The root context's part of a refresh, answered by `answer`.
    pub fn finish_refresh(&mut self, job: RefreshJob, answer: &CallResponse) -> Option<RefreshJob> {
        self.core(|ctx| flow::refresh_answer(ctx, job.clone(), answer))
    }

    /// A parked request looks again; `None`: still parked.
    pub fn wake(&mut self, step: &Step) -> Option<Step> {
        let woken = self.event(&step.stage, Event::Wake, b"");
        (!matches!(woken.stage, Stage::Parked { .. })).then_some(woken)
    }

    /// One event through the machine, as the host carries it out: a read
    /// command is answered from `body` (the request body Envoy holds) and
    /// the machine goes on with its bytes. The log lines are kept in `logs`.
    pub fn event(&mut self, stage: &Stage, event: Event, body: &[u8]) -> Step {
        let mut step = self.core(|ctx| flow::handle(ctx, stage, &event));
        loop {
            let mut read = None;
            step.commands.retain(|c| match c {
                Command::ReadRequestBody(n) => {
                    read = Some(Event::RequestBodyRead(
                        body[..(*n).min(body.len())].to_vec(),
                    ));
                    false
                }
                Command::Log(note) => {
                    self.logs.push(note.line.clone());
                    false
                }
                _ => true,
            });
            let Some(read) = read else {
                return step;
            };
            let mut done = step.commands;
            let stage = step.stage.clone();
            step = self.core(|ctx| flow::handle(ctx, &stage, &read));
            done.append(&mut step.commands);
            step.commands = done;
        }
    }

    /// The MCP server's response headers for a request at `stage`: the commands.
    pub fn response_headers(
        &mut self,
        stage: &Stage,
        status: u32,
        www_authenticate: Option<&str>,
    ) -> Vec<Command> {
        let head = ResponseHead {
            status,
            www_authenticate: www_authenticate.map(str::to_string),
            ..ResponseHead::default()
        };
        let step = self.core(|ctx| flow::handle(ctx, stage, &Event::ResponseHeaders(head.clone())));
        self.without_logs(step.commands)
    }

    /// The commands but the log lines, which go to `logs`.
    pub fn without_logs(&mut self, commands: Vec<Command>) -> Vec<Command> {
        commands
            .into_iter()
            .filter(|c| match c {
                Command::Log(note) => {
                    self.logs.push(note.line.clone());
                    false
                }
                _ => true,
            })
            .collect()
    }

    /// An MCP server's response to the request forwarded last, through the
    /// machine: headers, then the body in `chunks` (trailers end it when
    /// `trailers`). Returns the body the client gets and every command.
    pub fn respond(
        &mut self,
        headers: &[(&str, &str)],
        chunks: &[&[u8]],
        trailers: bool,
    ) -> (Vec<u8>, Vec<Command>) {
        let mut stage = self.last_stage.clone().expect("a forwarded request");
        let pairs: Vec<(String, Vec<u8>)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect();
        let mut all = Vec::new();
        let step = self.core(|ctx| {
            flow::handle(
                ctx,
                &stage,
                &Event::ResponseHeaders(ResponseHead::from_pairs(&pairs)),
            )
        });
        stage = step.stage;
        all.extend(self.without_logs(step.commands));
        // Envoy's buffer: what is held, and what went to the client.
        let mut held: Vec<u8> = Vec::new();
        let mut sent: Vec<u8> = Vec::new();
        let count = chunks.len();
        for (i, chunk) in chunks.iter().enumerate() {
            held.extend_from_slice(chunk);
            let end_of_stream = !trailers && i + 1 == count;
            let event = Event::ResponseBody {
                size: held.len(),
                end_of_stream,
            };
            let next = self.response_event(&mut stage, event, &mut held, &mut all);
            if next == Next::Continue {
                sent.append(&mut held);
            }
        }
        if trailers {
            let next =
                self.response_event(&mut stage, Event::ResponseTrailers, &mut held, &mut all);
            assert_eq!(next, Next::Continue);
        }
        sent.append(&mut held);
        (sent, all)
    }

    fn response_event(
        &mut self,
        stage: &mut Stage,
        event: Event,
        held: &mut Vec<u8>,
        all: &mut Vec<Command>,
    ) -> Next {
        let mut event = Some(event);
        let mut next = Next::Continue;
        while let Some(e) = event.take() {
            let step = self.core(|ctx| flow::handle(ctx, stage, &e));
            *stage = step.stage;
            next = step.next;
            for c in self.without_logs(step.commands) {
                match &c {
                    Command::ReadResponseBody {
                        up_to,
                        end_of_stream,
                    } => {
                        let body = held[..(*up_to).min(held.len())].to_vec();
                        event = Some(Event::ResponseBodyRead {
                            body,
                            end_of_stream: *end_of_stream,
                        });
                    }
                    Command::ReplaceResponseBody { len, with } => {
                        held.splice(..(*len).min(held.len()), with.iter().cloned());
                    }
                    _ => {}
                }
                all.push(c);
            }
        }
        next
    }

    pub fn code_for(&mut self, client_id: &str, verifier: &str) -> String {
        let location = self.authorize(client_id, verifier, "http://127.0.0.1:10000/mcp");
        assert!(location.starts_with(REDIRECT), "{location}");
        assert_eq!(query_param(&location, "state").as_deref(), Some("st-1"));
        assert_eq!(query_param(&location, "iss").as_deref(), Some(ORIGIN));
        query_param(&location, "code").unwrap()
    }

    pub fn redeem(&mut self, client_id: &str, code: &str, verifier: &str) -> (u32, Value) {
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

    pub fn mcp(&mut self, path: &str, token: &str) -> Done {
        let auth = format!("Bearer {token}");
        self.send(
            "POST",
            path,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            Some(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
        )
    }

    /// An MCP POST with this JSON-RPC body (and extra headers).
    pub fn rpc(&mut self, path: &str, token: &str, body: &str, extra: &[(&str, &str)]) -> Done {
        let auth = format!("Bearer {token}");
        let mut headers = vec![
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        headers.extend_from_slice(extra);
        self.send("POST", path, &headers, Some(body.as_bytes()))
    }
}

/// Runs one core step as the host does on shared data: reads answered at
/// once from `kv`, writes committed when the step is done.
pub fn run_core<T>(
    filter: &Filter,
    kv: &mut MemoryKv,
    random: &mut TestRandom,
    now: u64,
    mut f: impl FnMut(&mut Ctx<'_>) -> T,
) -> T {
    mcp_oauth_filter::store::shared::run(kv, filter.store_prefix(), |view| {
        let mut ctx = Ctx {
            filter,
            now,
            random: &mut *random,
            kv: view,
            notes: Vec::new(),
        };
        f(&mut ctx)
    })
}

/// A refresh to its end, retries included, as the root context runs it.
pub fn run_refresh(w: &mut World, job: RefreshJob) {
    let mut job = Some(job);
    while let Some(j) = job.take() {
        let answer = w.up.answer(&j.call, w.now);
        job = w.core(|ctx| flow::refresh_answer(ctx, j.clone(), &answer));
    }
}

pub fn between(text: &str, start: &str, end: &str) -> String {
    let from = text.find(start).unwrap() + start.len();
    let len = text[from..].find(end).unwrap();
    text[from..from + len].to_string()
}

impl Idp {
    pub fn user(&self) -> &str {
        self.login.as_deref().unwrap_or("alice")
    }

    pub fn domain(&self) -> &str {
        if self.user() == "alice" {
            "company.com"
        } else {
            "other.example"
        }
    }

    pub fn answer(&mut self, call: &OutboundCall, now: u64) -> CallResponse {
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
                        EncodingKey::from_ec_pem(include_bytes!("../fixtures/idp-ec.pem")).unwrap(),
                    ),
                    _ => (
                        "rsa-test",
                        EncodingKey::from_rsa_pem(include_bytes!("../fixtures/idp-rsa.pem"))
                            .unwrap(),
                    ),
                };
                header.kid = Some(kid.into());
                let mut claims = json!({"iss": IDP, "aud": "mcp-oauth-filter", "sub": self.user(), "exp": now + 300, "iat": now,
                                        "nonce": self.nonce.clone().unwrap()});
                if self.email_in_id_token {
                    claims["email"] = json!(format!("{}@{}", self.user(), self.domain()));
                }
                let id_token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
                ok(
                    json!({"id_token": id_token, "access_token": "idp-access-token", "token_type": "Bearer"}),
                )
            }
            "/jwks" => CallResponse::from_parts(
                vec![(":status".into(), "200".into())],
                include_bytes!("../fixtures/idp-jwks.json").to_vec(),
            ),
            "/me" => {
                assert_eq!(
                    call.header_value("authorization"),
                    Some("Bearer idp-access-token")
                );
                ok(
                    json!({"sub": self.user(), "email": format!("{}@{}", self.user(), self.domain()), "groups": ["engineering"]}),
                )
            }
            other => panic!("unexpected IdP call {other}"),
        }
    }
}

/// A fake upstream OAuth2 provider (GitHub-like when `github` is set):
/// short-lived access tokens, single-use rotating refresh tokens.
#[derive(Default)]
pub struct Upstream {
    pub ttl: u64,
    pub calls: Vec<OutboundCall>,
    pub down: bool,
    pub revoked: bool,
    /// Answer like GitHub: form-encoded unless asked for JSON, errors as 200.
    pub github: bool,
    /// Refuse Basic credentials (like a provider that only reads the body).
    pub body_credentials_only: bool,
    /// Classic tokens: no expiry, no refresh token.
    pub classic: bool,
    /// Like Google on refresh: no new refresh token.
    pub keep_refresh_token: bool,
    pub user_refuses: bool,
    pub authorize_params: Option<String>,
    pub challenge: Option<String>,
    pub issued: u64,
    pub valid_refresh: Option<String>,
    /// Before the browser's own redirect back, a stranger's browser sends it.
    pub stranger_first: bool,
    pub stranger_status: Option<u32>,
}

impl Upstream {
    pub fn refreshes(&self) -> usize {
        self.calls
            .iter()
            .filter(|c| String::from_utf8_lossy(&c.body).contains("grant_type=refresh_token"))
            .count()
    }

    pub fn answer(&mut self, call: &OutboundCall, _now: u64) -> CallResponse {
        self.calls.push(call.clone());
        if self.down {
            return CallResponse::failed();
        }
        assert_eq!(
            call.header_value(":path"),
            Some("/login/oauth/access_token")
        );
        assert_eq!(call.header_value("accept"), Some("application/json"));
        let body = String::from_utf8(call.body.clone()).unwrap();
        let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        let basic = call.header_value("authorization").is_some();
        let reply = |status: u32, fields: Value, github: bool| {
            if github {
                let pairs: Vec<(String, String)> = fields
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.as_str()
                                .map(String::from)
                                .unwrap_or_else(|| v.to_string()),
                        )
                    })
                    .collect();
                let text = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(pairs)
                    .finish();
                CallResponse::from_parts(
                    vec![
                        (":status".into(), "200".into()),
                        (
                            "content-type".into(),
                            "application/x-www-form-urlencoded; charset=utf-8".into(),
                        ),
                    ],
                    text.into_bytes(),
                )
            } else {
                CallResponse::from_parts(
                    vec![
                        (":status".into(), status.to_string()),
                        ("content-type".into(), "application/json".into()),
                    ],
                    fields.to_string().into_bytes(),
                )
            }
        };
        if self.body_credentials_only && basic {
            return reply(401, json!({"error": "invalid_client"}), false);
        }
        if basic {
            assert_eq!(
                call.header_value("authorization"),
                Some("Basic Z2gtY2xpZW50OmdoLXNlY3JldA==")
            );
        } else {
            assert_eq!(
                (
                    form.get("client_id").map(String::as_str),
                    form.get("client_secret").map(String::as_str)
                ),
                (Some("gh-client"), Some("gh-secret"))
            );
        }
        // GitHub answers JSON when asked (the filter always asks); the form is for the flag.
        let github = self.github;
        match form.get("grant_type").map(String::as_str) {
            Some("authorization_code") => {
                assert_eq!(form.get("code").map(String::as_str), Some("up-code"));
                let verifier = form.get("code_verifier").unwrap();
                assert_eq!(
                    Some(crypto::sha256_b64url(verifier.as_bytes())),
                    self.challenge
                );
            }
            Some("refresh_token") => {
                let presented = form.get("refresh_token").cloned();
                if self.revoked || presented != self.valid_refresh {
                    return if github {
                        reply(
                            200,
                            json!({"error": "bad_refresh_token", "error_description": "The refresh token passed is incorrect or expired."}),
                            true,
                        )
                    } else {
                        reply(400, json!({"error": "invalid_grant"}), false)
                    };
                }
            }
            other => panic!("unexpected grant {other:?}"),
        }
        self.issued += 1;
        let n = self.issued;
        let mut fields = json!({"access_token": format!("ghu_{n}"), "token_type": "bearer", "scope": "read:user,repo"});
        if !self.classic {
            fields["expires_in"] = json!(self.ttl);
            let refreshing = form.get("grant_type").map(String::as_str) == Some("refresh_token");
            if !(refreshing && self.keep_refresh_token) {
                let rt = format!("ghr_{n}");
                fields["refresh_token"] = json!(rt.clone());
                self.valid_refresh = Some(rt);
            }
        }
        reply(200, fields, github)
    }

    /// The access token the provider accepts now (the newest issued).
    pub fn current_token(&self) -> String {
        format!("ghu_{}", self.issued)
    }
}
