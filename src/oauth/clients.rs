//! Clients: dynamic registration (RFC 7591) and Client ID Metadata
//! Documents (draft-ietf-oauth-client-id-metadata-document, MCP 2025-11-25).

use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

use super::error::OAuthError;
use super::records::{Client, ClientAuth, ns};
use super::redirect_uri;
use crate::config::{Config, DynamicRegistration, MetadataDocuments};
use crate::crypto;
use crate::reply::Reply;
use crate::store::{StoreError, Vault};

/// Largest registration request accepted.
pub const MAX_REGISTRATION_BYTES: usize = 16 * 1024;
/// Registrations are touched at most this often, so use does not mean a write each time.
const LAST_USED_RESOLUTION_SECONDS: u64 = 86_400;

#[derive(Debug, Deserialize)]
struct RegistrationRequest {
    redirect_uris: Option<Vec<String>>,
    token_endpoint_auth_method: Option<String>,
    grant_types: Option<Vec<String>>,
    response_types: Option<Vec<String>>,
    client_name: Option<String>,
    client_uri: Option<String>,
    scope: Option<String>,
}

/// The client metadata, checked and normalised (RFC 7591 2). The error names the field.
fn validate_metadata(
    req: RegistrationRequest,
) -> Result<(Vec<String>, ClientAuth, Vec<String>, RegistrationRequest), OAuthError> {
    let uris = req.redirect_uris.clone().unwrap_or_default();
    if uris.is_empty() {
        return Err(OAuthError::invalid_redirect_uri(
            "redirect_uris: at least one redirect URI is required",
        ));
    }
    for uri in &uris {
        if let Some(problem) = redirect_uri::registration_problem(uri) {
            return Err(OAuthError::invalid_redirect_uri(format!(
                "redirect_uris: {problem}"
            )));
        }
    }
    let auth = match req.token_endpoint_auth_method.as_deref() {
        // RFC 7591 2: the default is client_secret_basic.
        None | Some("client_secret_basic") => ClientAuth::ClientSecretBasic,
        Some("client_secret_post") => ClientAuth::ClientSecretPost,
        Some("none") => ClientAuth::None,
        Some(other) => {
            return Err(OAuthError::invalid_client_metadata(format!(
                "token_endpoint_auth_method: {other:?} is not supported; use none, client_secret_basic or client_secret_post"
            )));
        }
    };
    let grant_types = req
        .grant_types
        .clone()
        .unwrap_or_else(|| vec!["authorization_code".to_string()]);
    if let Some(bad) = grant_types
        .iter()
        .find(|g| !matches!(g.as_str(), "authorization_code" | "refresh_token"))
    {
        return Err(OAuthError::invalid_client_metadata(format!(
            "grant_types: {bad:?} is not supported; use authorization_code and refresh_token"
        )));
    }
    if let Some(bad) = req.response_types.iter().flatten().find(|r| *r != "code") {
        return Err(OAuthError::invalid_client_metadata(format!(
            "response_types: {bad:?} is not supported; use code"
        )));
    }
    if let Some(uri) = &req.client_uri {
        let problem = match crate::untrusted_url::parse_exact(uri) {
            Ok(url) if matches!(url.scheme(), "https" | "http") => None,
            Ok(_) => Some("must be an http(s) URL".to_string()),
            Err(p) => Some(p.to_string()),
        };
        if let Some(problem) = problem {
            return Err(OAuthError::invalid_client_metadata(format!(
                "client_uri: {uri:?} {problem}"
            )));
        }
    }
    if req
        .client_name
        .as_ref()
        .is_some_and(|n| n.chars().any(char::is_control))
    {
        return Err(OAuthError::invalid_client_metadata(
            "client_name: must not contain control characters",
        ));
    }
    if req.client_name.as_ref().is_some_and(|n| n.len() > 200) {
        return Err(OAuthError::invalid_client_metadata(
            "client_name: at most 200 characters",
        ));
    }
    Ok((uris, auth, grant_types, req))
}

/// Checks a presented client secret against the stored hash.
pub fn secret_matches(client: &Client, presented: &str) -> bool {
    client.secret_hash.as_deref().is_some_and(|h| {
        crate::secret::constant_time_eq(
            h.as_bytes(),
            crypto::sha256_b64url(presented.as_bytes()).as_bytes(),
        )
    })
}

/// Fresh randomness for a confidential registration: a client id suffix and a secret.
pub struct Fresh {
    pub id: String,
    pub secret: String,
}

/// `POST /.oauth/register`. `source`: the quota key of the sender
/// ([`crate::source_address::quota_key`]).
pub fn register(
    body: &[u8],
    config: &Config,
    vault: &mut Vault<'_>,
    now: u64,
    fresh: Fresh,
    source: Option<&str>,
) -> Reply {
    match try_register(body, config, vault, now, fresh, source) {
        Ok(reply) => reply,
        Err(e) => e.to_reply(),
    }
}

fn try_register(
    body: &[u8],
    config: &Config,
    vault: &mut Vault<'_>,
    now: u64,
    fresh: Fresh,
    source: Option<&str>,
) -> Result<Reply, OAuthError> {
    let settings = &config.authorization_server.dynamic_registration;
    if !settings.enabled {
        return Err(OAuthError::new(
            "access_denied",
            403,
            "dynamic client registration is turned off on this server",
        ));
    }
    if body.len() > MAX_REGISTRATION_BYTES {
        return Err(OAuthError::invalid_client_metadata(format!(
            "the registration request is larger than {MAX_REGISTRATION_BYTES} bytes"
        )));
    }
    let req: RegistrationRequest = serde_json::from_slice(body).map_err(|e| {
        OAuthError::invalid_client_metadata(format!("the body is not client metadata JSON: {e}"))
    })?;
    let (redirect_uris, auth, grant_types, req) = validate_metadata(req)?;
    // A public client: identical metadata, identical client (idempotent
    // registration, no secret to hand out twice). A confidential one: a new
    // client with a new secret each time, or anyone registering the same
    // public metadata would get its secret.
    let confidential = auth != ClientAuth::None;
    let client_id = if confidential {
        format!("mcpc_{}", fresh.id)
    } else {
        let canonical = json!({
            "redirect_uris": redirect_uris, "auth": auth.as_str(), "grant_types": grant_types,
            "client_name": req.client_name, "client_uri": req.client_uri, "scope": req.scope,
        });
        format!(
            "mcp_{}",
            &crypto::sha256_b64url(canonical.to_string().as_bytes())[..32]
        )
    };
    let ttl = settings.unused_expiry_seconds;
    let existing = vault
        .get::<Client>(ns::CLIENT, &client_id)
        .map_err(store_error)?;
    let client = match existing {
        Some(found) => found.value,
        None => {
            take_quota(vault, settings, source, now)?;
            let client = Client {
                client_id: client_id.clone(),
                redirect_uris,
                auth,
                grant_types,
                client_name: req.client_name,
                client_uri: req.client_uri,
                scope: req.scope,
                secret_hash: confidential.then(|| crypto::sha256_b64url(fresh.secret.as_bytes())),
                verified_document: false,
                issued_at: now,
                last_used: now,
            };
            vault
                .put(ns::CLIENT, &client_id, &client, ttl, 0)
                .map_err(store_error)?;
            client
        }
    };
    let mut answer = json!({
        "client_id": client.client_id,
        "client_id_issued_at": client.issued_at,
        "redirect_uris": client.redirect_uris,
        "token_endpoint_auth_method": client.auth.as_str(),
        "grant_types": client.grant_types,
        "response_types": ["code"],
    });
    for (k, v) in [
        ("client_name", &client.client_name),
        ("client_uri", &client.client_uri),
        ("scope", &client.scope),
    ] {
        if let Some(v) = v {
            answer[k] = json!(v);
        }
    }
    if confidential {
        // Shown once; only its hash is kept.
        answer["client_secret"] = json!(fresh.secret);
        answer["client_secret_expires_at"] = json!(0);
    }
    Ok(Reply::json(201, &answer).header("cache-control", "no-store"))
}

/// Counts a new registration against its source's quota and the global
/// ceiling (CAS increments), so one flooding source can't lock everybody out.
fn take_quota(
    vault: &mut Vault<'_>,
    settings: &DynamicRegistration,
    source: Option<&str>,
    now: u64,
) -> Result<(), OAuthError> {
    let window = settings.window_seconds.max(1);
    let bucket = now / window;
    let retry = window - now % window;
    let refused = |what: String| {
        OAuthError::new(
            "temporarily_unavailable",
            429,
            format!("{what}; try again in {retry} seconds"),
        )
        .with_retry_after(retry)
    };
    // Sources are keyed by a hash: store keys name no address.
    let source_key = format!(
        "{bucket}|{}",
        crypto::sha256_b64url(source.unwrap_or("unknown").as_bytes())
    );
    if !count(
        vault,
        &source_key,
        settings.max_per_source_per_window,
        window,
    )? {
        return Err(refused(format!(
            "too many client registrations from your address; at most {} per {window} seconds",
            settings.max_per_source_per_window
        )));
    }
    if !count(vault, &bucket.to_string(), settings.max_per_window, window)? {
        return Err(refused(format!(
            "too many client registrations on this server; at most {} per {window} seconds",
            settings.max_per_window
        )));
    }
    Ok(())
}

/// Increments a counter unless it reached `max`; false when it had.
fn count(vault: &mut Vault<'_>, key: &str, max: u32, ttl: u64) -> Result<bool, OAuthError> {
    let mut under = false;
    vault
        .update::<u32, _>(ns::REGISTRATION_QUOTA, key, |count| {
            let count = count.unwrap_or(0);
            under = count < max;
            under.then_some((count + 1, ttl))
        })
        .map_err(store_error)?;
    Ok(under)
}

/// The store failed: the client is told to try again; what failed (an
/// etcd message, say) goes to the log only. A read not made yet is no
/// failure (the step runs again once it is answered), so it is not logged.
pub fn store_error(e: StoreError) -> OAuthError {
    if e != StoreError::NotRead {
        log::warn!("store: {e}");
    }
    OAuthError::temporarily_unavailable(
        "the authorization server's store is unavailable; try again",
    )
}

/// A registered client, refreshing its last-use time (at most daily).
pub fn registered(
    vault: &mut Vault<'_>,
    client_id: &str,
    unused_expiry: u64,
    now: u64,
) -> Result<Option<Client>, OAuthError> {
    let Some(found) = vault
        .get::<Client>(ns::CLIENT, client_id)
        .map_err(store_error)?
    else {
        return Ok(None);
    };
    let mut client = found.value;
    if now.saturating_sub(client.last_used) >= LAST_USED_RESOLUTION_SECONDS {
        client.last_used = now;
        // Best effort: a lost race only delays the refresh of the expiry.
        let _ = vault.put(ns::CLIENT, client_id, &client, unused_expiry, found.cas);
    }
    Ok(Some(client))
}

/// True when `client_id` has the shape of a metadata-document URL.
pub fn is_document_url(client_id: &str) -> bool {
    client_id.starts_with("https://")
}

/// Checks a metadata-document client id before fetching it: https, a path,
/// no dot segments, fragment or credentials, and a host on the allowlist.
pub fn document_url(client_id: &str, settings: &MetadataDocuments) -> Result<Url, OAuthError> {
    if !settings.enabled {
        return Err(OAuthError::invalid_client(
            "client ID metadata documents are turned off on this server; register the client instead",
        ));
    }
    // Exact: the document's client_id is compared with this string (CIMD 4.1).
    let url = crate::untrusted_url::parse_exact(client_id)
        .map_err(|p| OAuthError::invalid_client(format!("the client_id URL {p}")))?;
    let raw_path = client_id.splitn(4, '/').nth(3).unwrap_or_default();
    let bad = url.scheme() != "https"
        || url.path() == "/"
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
        || raw_path.split(['/', '?']).any(|s| s == "." || s == "..");
    if bad {
        return Err(OAuthError::invalid_client(
            "a client_id URL must be https with a path, and no fragment, credentials or dot segments",
        ));
    }
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    if !settings
        .allowed_hosts
        .iter()
        .any(|h| h == &host || h == "*" && !internal_host(&url))
    {
        return Err(OAuthError::invalid_client(format!(
            "client metadata documents from {host} are not allowed on this server (authorization_server.registration.metadata_documents.allowed_hosts)"
        )));
    }
    Ok(url)
}

/// Hosts a wildcard never admits: IP literals and local names, so `*`
/// can't be used to make the filter fetch from inside the network (SSRF).
/// An operator who means such a host names it in `allowed_hosts`.
fn internal_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => {
            let d = d.to_ascii_lowercase();
            !d.contains('.')
                || d == "localhost"
                || [".localhost", ".local", ".internal", ".lan"]
                    .iter()
                    .any(|s| d.ends_with(s))
        }
        Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) | None => true,
    }
}

/// Validates a fetched metadata document for `client_id`.
pub fn client_from_document(
    client_id: &str,
    body: &[u8],
    max_bytes: usize,
    now: u64,
) -> Result<Client, OAuthError> {
    if body.len() > max_bytes {
        return Err(OAuthError::invalid_client(format!(
            "the client metadata document is larger than {max_bytes} bytes"
        )));
    }
    let doc: Value = serde_json::from_slice(body)
        .map_err(|_| OAuthError::invalid_client("the client metadata document is not JSON"))?;
    if doc.get("client_id").and_then(Value::as_str) != Some(client_id) {
        return Err(OAuthError::invalid_client(
            "the client metadata document's client_id differs from the URL it was fetched from",
        ));
    }
    if doc.get("client_secret").is_some() || doc.get("client_secret_expires_at").is_some() {
        return Err(OAuthError::invalid_client(
            "a client metadata document must not contain a client secret",
        ));
    }
    let req: RegistrationRequest = serde_json::from_value(doc.clone()).map_err(|e| {
        OAuthError::invalid_client(format!("the client metadata document is invalid: {e}"))
    })?;
    let auth_method = req.token_endpoint_auth_method.clone();
    let (redirect_uris, _, grant_types, req) = validate_metadata(req).map_err(|e| {
        OAuthError::invalid_client(format!(
            "the client metadata document is invalid: {}",
            e.description
        ))
    })?;
    if !matches!(auth_method.as_deref(), None | Some("none")) {
        return Err(OAuthError::invalid_client(
            "only public clients (token_endpoint_auth_method \"none\") may use a client metadata document here",
        ));
    }
    Ok(Client {
        client_id: client_id.to_string(),
        redirect_uris,
        auth: ClientAuth::None,
        grant_types: if doc.get("grant_types").is_some() {
            grant_types
        } else {
            vec!["authorization_code".into(), "refresh_token".into()]
        },
        client_name: req.client_name,
        client_uri: req.client_uri,
        scope: req.scope,
        secret_hash: None,
        verified_document: true,
        issued_at: now,
        last_used: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(hosts: &[&str]) -> MetadataDocuments {
        MetadataDocuments {
            enabled: true,
            allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            cluster: "cimd".into(),
            max_bytes: 5120,
            timeout_ms: 1000,
            cache_seconds: 60,
        }
    }

    #[test]
    fn document_urls_and_the_allowlist() {
        let any = settings(&["*"]);
        assert!(document_url("https://app.example.com/client.json", &any).is_ok());
        for internal in [
            "https://10.0.0.1/c.json",
            "https://[::1]/c.json",
            "https://localhost/c.json",
            "https://metadata/c.json",
            "https://db.internal/c.json",
        ] {
            assert!(document_url(internal, &any).is_err(), "{internal}");
        }
        // Named explicitly, a local host is the operator's choice.
        assert!(document_url("https://localhost:8443/c.json", &settings(&["localhost"])).is_ok());
        assert!(
            document_url(
                "https://evil.example.com/c.json",
                &settings(&["app.example.com"])
            )
            .is_err()
        );
        for bad in [
            "http://app.example.com/c.json",
            "https://app.example.com/",
            "https://app.example.com/a/../c.json",
            "https://u:p@app.example.com/c.json",
        ] {
            assert!(document_url(bad, &any).is_err(), "{bad}");
        }
    }
}
