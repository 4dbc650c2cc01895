//! The etcd operation against a model of etcd's JSON gateway. The model
//! (a fake: etcd itself runs in the end-to-end tests) answers with the
//! shapes etcd 3.4 gives, checked on this machine: base64 keys and
//! values, int64 as strings, default fields left out, errors as
//! `{"error","message","code"}`.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::wire::Endpoint;
use super::{Env, Op, Progress, Session, Settings};
use crate::outbound::{CallResponse, OutboundCall};
use crate::secret::Secret;
use crate::store::{MemoryKv, StoreError, StoreView};

#[derive(Default)]
struct FakeEtcd {
    kvs: BTreeMap<Vec<u8>, (Vec<u8>, u64, u64, u64)>, // value, create, mod, lease
    revision: u64,
    leases: BTreeSet<u64>,
    next_lease: u64,
    /// `(user, password)` when auth is on.
    auth: Option<(String, String)>,
    tokens: BTreeSet<String>,
    down: bool,
    /// The next commit is applied, but its answer is lost.
    lose_commit_answer: bool,
    calls: Vec<String>,
}

fn reply(status: u32, body: Value) -> CallResponse {
    CallResponse::from_parts(
        vec![(":status".into(), status.to_string())],
        body.to_string().into_bytes(),
    )
}

fn b64(v: &Value) -> Vec<u8> {
    STANDARD.decode(v.as_str().unwrap_or_default()).unwrap()
}

fn int(v: Option<&Value>) -> u64 {
    v.and_then(Value::as_str)
        .map(|s| s.parse().unwrap())
        .unwrap_or(0)
}

impl FakeEtcd {
    fn new() -> Self {
        FakeEtcd {
            revision: 1,
            next_lease: 7_000_000_000_000_000_000,
            ..Default::default()
        }
    }

    fn put(&mut self, key: &str, value: &[u8]) {
        self.revision += 1;
        let create = self.kvs.get(key.as_bytes()).map_or(self.revision, |e| e.1);
        self.kvs.insert(
            key.as_bytes().to_vec(),
            (value.to_vec(), create, self.revision, 0),
        );
    }

    fn handle(&mut self, call: &OutboundCall) -> CallResponse {
        let path = call.header_value(":path").unwrap_or_default().to_string();
        self.calls.push(path.clone());
        assert_eq!(call.cluster, "etcd");
        assert_eq!(call.header_value(":authority"), Some("127.0.0.1:2379"));
        if self.down {
            return CallResponse::failed();
        }
        let body: Value = serde_json::from_slice(&call.body).unwrap();
        if path == "/v3/auth/authenticate" {
            let good = self
                .auth
                .as_ref()
                .is_some_and(|(u, p)| body["name"] == json!(u) && body["password"] == json!(p));
            if !good {
                return reply(
                    400,
                    json!({"error":"etcdserver: authentication failed, invalid user ID or password","code":3,"message":"etcdserver: authentication failed, invalid user ID or password"}),
                );
            }
            let token = format!("tok.{}", self.tokens.len() + 1);
            self.tokens.insert(token.clone());
            return reply(
                200,
                json!({"header": {"revision": self.revision.to_string()}, "token": token}),
            );
        }
        if self.auth.is_some() {
            match call.header_value("authorization") {
                None => {
                    return reply(
                        400,
                        json!({"error":"etcdserver: user name is empty","code":3,"message":"etcdserver: user name is empty"}),
                    );
                }
                Some(t) if !self.tokens.contains(t) => {
                    return reply(
                        401,
                        json!({"error":"etcdserver: invalid auth token","code":16,"message":"etcdserver: invalid auth token"}),
                    );
                }
                Some(_) => {}
            }
        }
        match path.as_str() {
            "/v3/lease/grant" => {
                self.next_lease += 1;
                self.leases.insert(self.next_lease);
                reply(
                    200,
                    json!({"header":{"revision": self.revision.to_string()},"ID": self.next_lease.to_string(),"TTL": body["TTL"]}),
                )
            }
            "/v3/kv/txn" => {
                let answer = self.txn(&body);
                let writes = body["success"]
                    .as_array()
                    .is_some_and(|ops| ops.iter().any(|o| o.get("request_range").is_none()));
                if writes && std::mem::take(&mut self.lose_commit_answer) {
                    return CallResponse::failed();
                }
                answer
            }
            other => panic!("unexpected call {other}"),
        }
    }

    fn txn(&mut self, body: &Value) -> CallResponse {
        let empty = Vec::new();
        let holds = body["compare"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .all(|c| {
                let entry = self.kvs.get(&b64(&c["key"]));
                match c["target"].as_str() {
                    Some("MOD") => entry.map_or(0, |e| e.2) == int(c.get("mod_revision")),
                    Some("CREATE") => entry.map_or(0, |e| e.1) == int(c.get("create_revision")),
                    other => panic!("compare target {other:?}"),
                }
            });
        let ops = if holds {
            &body["success"]
        } else {
            &body["failure"]
        };
        let ops = ops.as_array().cloned().unwrap_or_default();
        // Leases first: a txn with a lost lease fails whole.
        for op in &ops {
            if let Some(lease) = op["request_put"].get("lease")
                && !self.leases.contains(&int(Some(lease)))
            {
                return reply(
                    404,
                    json!({"error":"etcdserver: requested lease not found","code":5,"message":"etcdserver: requested lease not found"}),
                );
            }
        }
        let writes = ops
            .iter()
            .any(|op| op.get("request_put").is_some() || op.get("request_delete_range").is_some());
        if writes {
            self.revision += 1;
        }
        let mut responses = Vec::new();
        for op in &ops {
            if let Some(range) = op.get("request_range") {
                let key = b64(&range["key"]);
                let mut r = json!({"header": {"revision": self.revision.to_string()}});
                if let Some((value, create, modr, lease)) = self.kvs.get(&key) {
                    let mut kv = json!({"key": STANDARD.encode(&key), "create_revision": create.to_string(), "mod_revision": modr.to_string(), "version": "1", "value": STANDARD.encode(value)});
                    if *lease != 0 {
                        kv["lease"] = json!(lease.to_string());
                    }
                    r["kvs"] = json!([kv]);
                    r["count"] = json!("1");
                }
                responses.push(json!({"response_range": r}));
            } else if let Some(put) = op.get("request_put") {
                let key = b64(&put["key"]);
                let create = self.kvs.get(&key).map_or(self.revision, |e| e.1);
                let lease = int(put.get("lease"));
                self.kvs
                    .insert(key, (b64(&put["value"]), create, self.revision, lease));
                responses.push(json!({"response_put": {"header": {}}}));
            } else if let Some(del) = op.get("request_delete_range") {
                self.kvs.remove(&b64(&del["key"]));
                responses.push(json!({"response_delete_range": {"header": {}}}));
            }
        }
        let mut answer =
            json!({"header": {"revision": self.revision.to_string()}, "responses": responses});
        if holds {
            answer["succeeded"] = json!(true);
        }
        reply(200, answer)
    }

    fn value(&self, key: &str) -> Option<Vec<u8>> {
        self.kvs.get(key.as_bytes()).map(|e| e.0.clone())
    }
}

fn settings(credentials: Option<(&str, &str)>) -> Settings {
    Settings {
        prefix: "p/".into(),
        endpoint: Endpoint {
            cluster: "etcd".into(),
            authority: "127.0.0.1:2379".into(),
            timeout_ms: 1000,
        },
        credentials: credentials.map(|(u, p)| (u.to_string(), Secret::from(p))),
        cache_seconds: 5,
    }
}

struct World {
    etcd: FakeEtcd,
    settings: Settings,
    local: MemoryKv,
    session: Session,
    now: u64,
    writes_allowed: bool,
}

impl World {
    fn new() -> Self {
        World {
            etcd: FakeEtcd::new(),
            settings: settings(None),
            local: MemoryKv::new(),
            session: Session::default(),
            now: 1_000_000,
            writes_allowed: true,
        }
    }

    /// Runs `step` to its end, the fake answering every call.
    fn run<T>(&mut self, fresh: bool, mut step: impl FnMut(&mut dyn StoreView) -> T) -> T {
        let mut op = Op::new(fresh);
        let mut env = Env {
            settings: &self.settings,
            now: self.now,
            local: &mut self.local,
            session: &mut self.session,
            writes_allowed: self.writes_allowed,
        };
        let mut progress = op.drive(&mut env, &mut step);
        for _ in 0..50 {
            match progress {
                Progress::Done(out) => return out,
                Progress::Call(call) => {
                    let answer = self.etcd.handle(&call);
                    progress = op.answer(&mut env, &mut step, &answer);
                }
            }
        }
        panic!("the operation never ended");
    }
}

fn get(view: &dyn StoreView, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    view.get(key).map(|e| e.map(|(v, _)| v))
}

#[test]
fn reads_go_as_one_txn_then_come_from_the_cache() {
    let mut w = World::new();
    w.etcd.put("p/a/1", b"one");
    let out = w.run(false, |v| (get(v, "p/a/1"), get(v, "p/a/2")));
    assert_eq!(out, (Ok(Some(b"one".to_vec())), Ok(None)));
    assert_eq!(w.etcd.calls, ["/v3/kv/txn"], "both keys in one txn");
    // Within cache_seconds the present value is answered here; the absent
    // one is asked again (absence is not cached).
    w.now += 4;
    let out = w.run(false, |v| get(v, "p/a/1"));
    assert_eq!(out, Ok(Some(b"one".to_vec())));
    assert_eq!(w.etcd.calls.len(), 1);
    w.run(false, |v| get(v, "p/a/2")).unwrap();
    assert_eq!(w.etcd.calls.len(), 2);
    // A fresh operation always asks etcd; so does anyone once the bound passed.
    w.run(true, |v| get(v, "p/a/1")).unwrap();
    assert_eq!(w.etcd.calls.len(), 3);
    // (the fresh read cached it again, from now.)
    w.now += 6;
    w.run(false, |v| get(v, "p/a/1")).unwrap();
    assert_eq!(w.etcd.calls.len(), 4);
}

#[test]
fn writes_commit_with_leases_and_compare_what_was_read() {
    let mut w = World::new();
    w.etcd.put("p/a/1", b"one");
    let now = w.now;
    let out = w.run(false, |v| {
        let (old, version) = v.get("p/a/1")?.unwrap();
        v.set(
            "p/a/1",
            Some([old, b"+".to_vec()].concat()),
            version,
            now + 100,
        )?;
        v.set(
            "p/b/1",
            Some(b"new".to_vec()),
            super::super::vault::CAS_IF_ABSENT,
            now + 100,
        )?;
        v.set("p/c/1", None, 0, 0)
    });
    assert_eq!(out, Ok(()));
    assert_eq!(w.etcd.value("p/a/1"), Some(b"one+".to_vec()));
    assert_eq!(w.etcd.value("p/b/1"), Some(b"new".to_vec()));
    // One read, one lease for the minute of both expiries, one commit.
    assert_eq!(
        w.etcd.calls,
        ["/v3/kv/txn", "/v3/lease/grant", "/v3/kv/txn"]
    );
    let leased = w.etcd.kvs[&b"p/b/1".to_vec()].3;
    assert!(w.etcd.leases.contains(&leased));
    // The commit refreshed this Envoy's cache: the next read asks nobody.
    let out = w.run(false, |v| get(v, "p/a/1"));
    assert_eq!(out, Ok(Some(b"one+".to_vec())));
    assert_eq!(w.etcd.calls.len(), 3);
}

#[test]
fn a_stale_cached_read_conflicts_and_the_step_runs_again_on_etcd_s_value() {
    let mut w = World::new();
    w.etcd.put("p/grant/1", b"live");
    w.run(false, |v| get(v, "p/grant/1")).unwrap();
    // Another replica revokes it; this Envoy's cache still says live.
    w.etcd.put("p/grant/1", b"revoked");
    let calls = w.etcd.calls.len();
    let mut seen = Vec::new();
    let out = w.run(false, |v| {
        let (value, version) = v.get("p/grant/1")?.unwrap();
        seen.push(value.clone());
        if value == b"live" {
            v.set("p/grant/1", Some(b"rotated".to_vec()), version, 0)?;
        }
        Ok::<_, StoreError>(value)
    });
    assert_eq!(seen, [b"live".to_vec(), b"revoked".to_vec()]);
    assert_eq!(out, Ok(b"revoked".to_vec()), "decided on etcd's value");
    assert_eq!(w.etcd.value("p/grant/1"), Some(b"revoked".to_vec()));
    assert_eq!(
        w.etcd.calls.len(),
        calls + 1,
        "the failed commit read the key back"
    );
}

#[test]
fn a_read_only_step_is_compared_too_when_it_writes_elsewhere() {
    // Serializable: a step that read a key and wrote another fails if the
    // key read changed meanwhile.
    let mut w = World::new();
    w.etcd.put("p/session/1", b"s1");
    w.run(false, |v| get(v, "p/session/1")).unwrap();
    // Another replica changes it; this Envoy's cache still has s1, but
    // the commit compares p/session/1.
    let calls_before = w.etcd.calls.len();
    w.etcd.put("p/session/1", b"s2");
    let out = w.run(false, |v| {
        let s = get(v, "p/session/1")?;
        v.set("p/code/2", s.clone(), super::super::vault::CAS_IF_ABSENT, 0)?;
        Ok::<_, StoreError>(s)
    });
    assert_eq!(out, Ok(Some(b"s2".to_vec())));
    assert_eq!(w.etcd.value("p/code/2"), Some(b"s2".to_vec()));
    assert_eq!(
        w.etcd.calls.len(),
        calls_before + 2,
        "conflict, then commit"
    );
}

#[test]
fn a_create_only_lock_is_taken_by_one_replica_only() {
    let mut a = World::new();
    // Both replicas read the lock as absent ...
    a.run(true, |v| get(v, "p/lock/1")).unwrap();
    a.etcd.put("p/lock/1", b"theirs");
    // ... then this one tries to take it: the commit's CREATE == 0 fails.
    let now = a.now;
    let out = a.run(false, |v| match v.get("p/lock/1")? {
        Some(_) => Ok(false),
        None => v
            .set(
                "p/lock/1",
                Some(b"ours".to_vec()),
                super::super::vault::CAS_IF_ABSENT,
                now + 30,
            )
            .map(|()| true),
    });
    assert_eq!(out, Ok(false));
    assert_eq!(a.etcd.value("p/lock/1"), Some(b"theirs".to_vec()));
}

#[test]
fn etcd_down_gives_errors_at_once_and_never_writes() {
    let mut w = World::new();
    w.etcd.put("p/a/1", b"one");
    w.etcd.down = true;
    let out = w.run(true, |v| {
        let a = get(v, "p/a/1");
        // A second read after the error fails at once, without a call.
        let b = get(v, "p/a/2");
        (a, b)
    });
    assert!(matches!(out.0, Err(StoreError::Unavailable(_))));
    assert!(matches!(out.1, Err(StoreError::Unavailable(_))));
    assert_eq!(w.etcd.calls.len(), 1);
    // Writes without reads: the commit fails and the step hears it.
    let out = w.run(true, |v| v.set("p/x/1", Some(b"v".to_vec()), 0, 0));
    assert!(matches!(out, Err(StoreError::Unavailable(_))));
    w.etcd.down = false;
    assert_eq!(w.etcd.value("p/x/1"), None);
    // Back: it works again without anything to reset.
    let out = w.run(true, |v| v.set("p/x/1", Some(b"v".to_vec()), 0, 0));
    assert_eq!(out, Ok(()));
    assert_eq!(w.etcd.value("p/x/1"), Some(b"v".to_vec()));
}

#[test]
fn a_commit_whose_answer_was_lost_is_read_back_not_taken_for_failed() {
    let mut w = World::new();
    // Applied, answer lost: the written key is read back and holds the write.
    w.etcd.lose_commit_answer = true;
    let out = w.run(true, |v| v.set("p/x/1", Some(b"rotated".to_vec()), 0, 0));
    assert_eq!(out, Ok(()));
    assert_eq!(w.etcd.value("p/x/1"), Some(b"rotated".to_vec()));
    assert!(w.etcd.calls.len() >= 2, "{:?}", w.etcd.calls);
    // Not applied (etcd down): the step hears the failure.
    w.etcd.down = true;
    let out = w.run(true, |v| v.set("p/x/2", Some(b"v".to_vec()), 0, 0));
    assert!(matches!(out, Err(StoreError::Unavailable(_))));
    w.etcd.down = false;
    assert_eq!(w.etcd.value("p/x/2"), None);
}

#[test]
fn an_answer_that_cannot_be_read_is_an_error_never_no_value() {
    let bodies = [
        json!({"header": {"revision": "5"}, "succeeded": true}),
        json!({"header": {"revision": "5"}, "succeeded": true, "responses": [{"response_range": {"kvs": [{"key": STANDARD.encode("p/other"), "mod_revision": "3", "value": ""}]}}]}),
        json!({"header": {"revision": "5"}, "succeeded": true, "responses": [{"response_range": {"kvs": [{"key": STANDARD.encode("p/a/1"), "mod_revision": "3", "value": "!!"}]}}]}),
        json!({"succeeded": true, "responses": [{"response_range": {}}]}),
        json!("not an object"),
    ];
    for body in bodies {
        let settings = settings(None);
        let mut local = MemoryKv::new();
        let mut session = Session::default();
        let mut env = Env {
            settings: &settings,
            now: 1,
            local: &mut local,
            session: &mut session,
            writes_allowed: true,
        };
        let mut step = |v: &mut dyn StoreView| get(v, "p/a/1");
        let mut op = Op::new(true);
        let Progress::Call(_) = op.drive(&mut env, &mut step) else {
            panic!("a read goes out");
        };
        let Progress::Done(out) = op.answer(&mut env, &mut step, &reply(200, body.clone())) else {
            panic!("no second call");
        };
        assert!(
            matches!(out, Err(StoreError::Unavailable(_))),
            "{body}: {out:?}"
        );
    }
}

#[test]
fn with_credentials_it_authenticates_and_renews_a_refused_token() {
    let mut w = World::new();
    w.settings = settings(Some(("filter", "s3cret")));
    w.etcd.auth = Some(("filter".into(), "s3cret".into()));
    w.etcd.put("p/a/1", b"one");
    let out = w.run(true, |v| get(v, "p/a/1"));
    assert_eq!(out, Ok(Some(b"one".to_vec())));
    assert_eq!(w.etcd.calls, ["/v3/auth/authenticate", "/v3/kv/txn"]);
    // etcd forgets the token (restart, TTL): refused, renewed once, served.
    w.etcd.tokens.clear();
    let out = w.run(true, |v| get(v, "p/a/1"));
    assert_eq!(out, Ok(Some(b"one".to_vec())));
    assert_eq!(
        w.etcd.calls[2..],
        ["/v3/kv/txn", "/v3/auth/authenticate", "/v3/kv/txn"]
    );
    assert!(
        !format!("{:?}", w.session).contains("tok."),
        "the token never prints"
    );
}

#[test]
fn a_wrong_password_is_an_unavailable_store() {
    let mut w = World::new();
    w.settings = settings(Some(("filter", "wrong")));
    w.etcd.auth = Some(("filter".into(), "s3cret".into()));
    let out = w.run(true, |v| get(v, "p/a/1"));
    let Err(StoreError::Unavailable(why)) = out else {
        panic!("refused: {out:?}");
    };
    assert!(why.contains("store.etcd.password"), "{why}");
    assert!(!why.contains("wrong"));
}

#[test]
fn a_lost_lease_is_granted_again() {
    let mut w = World::new();
    let now = w.now;
    w.run(true, |v| v.set("p/a/1", Some(b"1".to_vec()), 0, now + 10))
        .unwrap();
    // etcd lost the lease (its TTL passed while this VM slept, say).
    w.etcd.leases.clear();
    let out = w.run(true, |v| v.set("p/a/2", Some(b"2".to_vec()), 0, now + 10));
    assert_eq!(out, Ok(()));
    assert_eq!(w.etcd.value("p/a/2"), Some(b"2".to_vec()));
    let lease = w.etcd.kvs[&b"p/a/2".to_vec()].3;
    assert!(w.etcd.leases.contains(&lease));
}

#[test]
fn nothing_is_written_once_randomness_failed() {
    let mut w = World::new();
    w.writes_allowed = false;
    let out = w.run(true, |v| v.set("p/a/1", Some(b"v".to_vec()), 0, 0));
    assert!(matches!(out, Err(StoreError::Unavailable(_))), "{out:?}");
    assert!(
        w.etcd.calls.is_empty(),
        "no call at all: {:?}",
        w.etcd.calls
    );
}

#[test]
fn after_a_refused_password_etcd_is_left_alone_for_a_while() {
    let mut w = World::new();
    w.settings = settings(Some(("filter", "wrong")));
    w.etcd.auth = Some(("filter".into(), "s3cret".into()));
    assert!(w.run(true, |v| get(v, "p/a/1")).is_err());
    assert_eq!(w.etcd.calls.len(), 1);
    w.now += 5;
    assert!(w.run(true, |v| get(v, "p/a/1")).is_err());
    assert_eq!(w.etcd.calls.len(), 1, "backing off");
    w.now += 6;
    assert!(w.run(true, |v| get(v, "p/a/1")).is_err());
    assert_eq!(w.etcd.calls.len(), 2, "tried again");
}

#[test]
fn running_out_of_conflict_retries_is_unavailable_not_a_change() {
    let mut w = World::new();
    w.etcd.put("p/a/1", b"0");
    let mut runs = 0;
    let out = w.run(true, |v| {
        runs += 1;
        let (_, version) = v.get("p/a/1")?.unwrap();
        // A version nobody holds: every commit conflicts.
        v.set("p/a/1", Some(b"x".to_vec()), version, 0)?;
        v.set("p/b/1", Some(b"y".to_vec()), version + 1000, 0)
    });
    assert!(matches!(out, Err(StoreError::Unavailable(_))), "{out:?}");
    assert!(runs > 8);
}

#[test]
fn long_ttls_share_coarse_leases() {
    let mut w = World::new();
    let now = w.now;
    for i in 0..30u64 {
        // Writes a minute apart, expiring in 30 days.
        w.now = now + i * 60;
        let exp = w.now + 30 * 86_400;
        w.run(true, |v| {
            v.set(&format!("p/g/{i}"), Some(b"g".to_vec()), 0, exp)
        })
        .unwrap();
    }
    assert!(w.etcd.leases.len() <= 2, "{} leases", w.etcd.leases.len());
    for i in 0..30u64 {
        let lease = w.etcd.kvs[format!("p/g/{i}").as_bytes()].3;
        assert!(w.etcd.leases.contains(&lease), "every put is leased");
    }
}
