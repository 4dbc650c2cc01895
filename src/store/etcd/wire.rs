//! etcd's v3 HTTP/JSON gateway, as far as the store uses it: the calls
//! (`/v3/kv/txn`, `/v3/lease/grant`, `/v3/auth/authenticate`) and strict
//! readers of their answers.
//!
//! The gateway is grpc-gateway over etcd's protobuf API: keys and values
//! are base64 (standard alphabet), int64 fields are JSON strings, and a
//! field at its default (0, false, empty) is left out. An answer that does
//! not have the shape asked for is an error, never "no value".

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};

use super::super::txn::{Entry, Expect, Write};
use crate::outbound::{CallResponse, OutboundCall};
use crate::secret::Secret;

/// Where the calls go.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub cluster: String,
    pub authority: String,
    pub timeout_ms: u64,
}

impl Endpoint {
    fn post(&self, path: &str, body: &Value, token: Option<&Secret>) -> OutboundCall {
        let mut headers = vec![
            (":method".to_string(), "POST".to_string()),
            (":path".to_string(), path.to_string()),
            (":authority".to_string(), self.authority.clone()),
            (":scheme".to_string(), "http".to_string()),
            ("content-type".to_string(), "application/json".to_string()),
        ];
        // etcd takes its auth token bare in `Authorization` (no scheme).
        if let Some(token) = token {
            headers.push(("authorization".to_string(), token.expose_str().to_string()));
        }
        OutboundCall {
            cluster: self.cluster.clone(),
            headers,
            body: body.to_string().into_bytes(),
            timeout_ms: self.timeout_ms,
        }
    }

    /// One txn reading `keys`, in order.
    pub fn read(&self, keys: &[String], token: Option<&Secret>) -> OutboundCall {
        let ops: Vec<Value> = keys.iter().map(|k| range_op(k)).collect();
        self.post("/v3/kv/txn", &json!({"compare": [], "success": ops}), token)
    }

    /// One txn making `writes` if every comparison holds; else it reads
    /// the compared keys back, so a conflict costs no second round trip.
    pub fn commit(
        &self,
        compares: &[(String, Expect)],
        writes: &[(Write, Option<String>)],
        token: Option<&Secret>,
    ) -> OutboundCall {
        let compare: Vec<Value> = compares
            .iter()
            .filter_map(|(key, expect)| compare_op(key, *expect))
            .collect();
        let success: Vec<Value> = writes
            .iter()
            .map(|(w, lease)| match &w.value {
                Some(value) => {
                    let mut put =
                        json!({"key": STANDARD.encode(&w.key), "value": STANDARD.encode(value)});
                    if let Some(lease) = lease {
                        put["lease"] = Value::String(lease.clone());
                    }
                    json!({"request_put": put})
                }
                None => json!({"request_delete_range": {"key": STANDARD.encode(&w.key)}}),
            })
            .collect();
        let failure: Vec<Value> = compares.iter().map(|(k, _)| range_op(k)).collect();
        self.post(
            "/v3/kv/txn",
            &json!({"compare": compare, "success": success, "failure": failure}),
            token,
        )
    }

    /// A lease of `ttl` seconds.
    pub fn grant_lease(&self, ttl: u64, token: Option<&Secret>) -> OutboundCall {
        self.post("/v3/lease/grant", &json!({"TTL": ttl.to_string()}), token)
    }

    /// Exchanges the user name and password for a token.
    pub fn authenticate(&self, user: &str, password: &Secret) -> OutboundCall {
        self.post(
            "/v3/auth/authenticate",
            &json!({"name": user, "password": password.expose_str()}),
            None,
        )
    }
}

fn range_op(key: &str) -> Value {
    json!({"request_range": {"key": STANDARD.encode(key)}})
}

fn compare_op(key: &str, expect: Expect) -> Option<Value> {
    let key = STANDARD.encode(key);
    match expect {
        Expect::Any => None,
        // A key that does not exist has create_revision 0.
        Expect::Absent => {
            Some(json!({"key": key, "result": "EQUAL", "target": "CREATE", "create_revision": "0"}))
        }
        Expect::Version(v) => Some(
            json!({"key": key, "result": "EQUAL", "target": "MOD", "mod_revision": v.to_string()}),
        ),
    }
}

/// Why a call did not give the answer asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// No answer, or etcd could not serve: retry later.
    Unavailable(String),
    /// The auth token is missing, expired or unknown: authenticate again.
    NeedsToken,
    /// The user name or password was refused.
    BadCredentials,
    /// A lease this VM held is gone (it ended, or etcd lost it).
    LeaseNotFound,
}

impl Fault {
    pub fn describe(&self) -> String {
        match self {
            Fault::Unavailable(why) => why.clone(),
            Fault::NeedsToken => "etcd refused the auth token".into(),
            Fault::BadCredentials => {
                "etcd refused the user name or password (store.etcd.username, store.etcd.password)"
                    .into()
            }
            Fault::LeaseNotFound => "etcd lost a lease".into(),
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    code: i64,
}

/// gRPC codes etcd answers with (`google.golang.org/grpc/codes`).
const CODE_PERMISSION_DENIED: i64 = 7;
const CODE_UNAUTHENTICATED: i64 = 16;

/// The body of a successful answer, or why there is none.
pub fn body_of(answer: &CallResponse) -> Result<&[u8], Fault> {
    if answer.status == 0 {
        return Err(Fault::Unavailable(
            "etcd did not answer (no connection, or the timeout passed)".into(),
        ));
    }
    if answer.status == 200 {
        return Ok(&answer.body);
    }
    let Ok(err) = serde_json::from_slice::<ErrorBody>(&answer.body) else {
        return Err(Fault::Unavailable(format!(
            "etcd answered HTTP {} with a body that is not etcd's error JSON",
            answer.status
        )));
    };
    let message = if err.message.is_empty() {
        err.error
    } else {
        err.message
    };
    if message.contains("authentication failed") {
        return Err(Fault::BadCredentials);
    }
    // Auth on and no token sent: "user name is empty"; a token etcd no
    // longer knows (restart, TTL): "invalid auth token".
    if err.code == CODE_UNAUTHENTICATED
        || message.contains("user name is empty")
        || message.contains("invalid auth token")
    {
        return Err(Fault::NeedsToken);
    }
    if message.contains("requested lease not found") {
        return Err(Fault::LeaseNotFound);
    }
    let message: String = message
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    if err.code == CODE_PERMISSION_DENIED {
        return Err(Fault::Unavailable(format!(
            "etcd denied permission ({message}): the user's role must cover the store prefix"
        )));
    }
    Err(Fault::Unavailable(format!(
        "etcd answered HTTP {}: {message}",
        answer.status
    )))
}

fn unreadable(what: &str) -> Fault {
    Fault::Unavailable(format!("etcd's answer could not be read: {what}"))
}

/// An int64 as the gateway writes it: a JSON string (a number is accepted).
fn int(value: &Value) -> Option<u64> {
    match value {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

fn field_int(obj: &Value, name: &str) -> Result<u64, Fault> {
    match obj.get(name) {
        None => Ok(0),
        Some(v) => int(v).ok_or_else(|| unreadable(&format!("{name} is not an integer"))),
    }
}

fn bytes_field(obj: &Value, name: &str) -> Result<Vec<u8>, Fault> {
    match obj.get(name) {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => STANDARD
            .decode(s)
            .map_err(|_| unreadable(&format!("{name} is not base64"))),
        Some(_) => Err(unreadable(&format!("{name} is not a string"))),
    }
}

/// A txn answer: whether its comparisons held, its revision, and its
/// responses.
pub struct TxnAnswer {
    pub succeeded: bool,
    pub revision: u64,
    responses: Vec<Value>,
}

pub fn txn_answer(body: &[u8]) -> Result<TxnAnswer, Fault> {
    let value: Value = serde_json::from_slice(body).map_err(|_| unreadable("not JSON"))?;
    let header = value.get("header").ok_or_else(|| unreadable("no header"))?;
    let revision = field_int(header, "revision")?;
    if revision == 0 {
        return Err(unreadable("no revision"));
    }
    let succeeded = match value.get("succeeded") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(unreadable("succeeded is not a boolean")),
    };
    let responses = match value.get("responses") {
        None => Vec::new(),
        Some(Value::Array(items)) => items.clone(),
        Some(_) => return Err(unreadable("responses is not a list")),
    };
    Ok(TxnAnswer {
        succeeded,
        revision,
        responses,
    })
}

impl TxnAnswer {
    /// The entries of the range responses, which must be one per key, in
    /// order, each holding that key or nothing.
    pub fn ranges(&self, keys: &[String]) -> Result<Vec<Entry>, Fault> {
        if self.responses.len() != keys.len() {
            return Err(unreadable("not one response per key"));
        }
        keys.iter()
            .zip(&self.responses)
            .map(|(key, response)| {
                let range = response
                    .get("response_range")
                    .ok_or_else(|| unreadable("a response is not a range"))?;
                let kvs = match range.get("kvs") {
                    None => return Ok(None),
                    Some(Value::Array(kvs)) => kvs,
                    Some(_) => return Err(unreadable("kvs is not a list")),
                };
                match kvs.as_slice() {
                    [] => Ok(None),
                    [kv] => {
                        if bytes_field(kv, "key")? != key.as_bytes() {
                            return Err(unreadable("a range answered another key"));
                        }
                        let revision = field_int(kv, "mod_revision")?;
                        if revision == 0 {
                            return Err(unreadable("an entry without mod_revision"));
                        }
                        Ok(Some((bytes_field(kv, "value")?, revision)))
                    }
                    _ => Err(unreadable("a range of one key answered several")),
                }
            })
            .collect()
    }
}

/// The id of a granted lease.
pub fn lease_id(body: &[u8]) -> Result<String, Fault> {
    let value: Value = serde_json::from_slice(body).map_err(|_| unreadable("not JSON"))?;
    let id = value
        .get("ID")
        .and_then(int)
        .filter(|id| *id != 0)
        .ok_or_else(|| unreadable("a lease grant without ID"))?;
    Ok(id.to_string())
}

/// The token of an authentication.
pub fn auth_token(body: &[u8]) -> Result<Secret, Fault> {
    let value: Value = serde_json::from_slice(body).map_err(|_| unreadable("not JSON"))?;
    match value.get("token") {
        Some(Value::String(t))
            if !t.is_empty() && crate::untrusted_url::is_safe_header_value(t) =>
        {
            Ok(Secret::from(t.as_str()))
        }
        _ => Err(unreadable("an authentication without a usable token")),
    }
}
