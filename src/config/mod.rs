//! The plugin configuration: parsed from JSON, validated, and compiled into
//! the runtime structures the filter uses. Every problem is reported with
//! the path of the offending field; a configuration with any problem is
//! refused as a whole, so the filter never starts half-configured.

mod error;
mod raw;
mod url;

use std::collections::{BTreeMap, HashSet};

use base64::Engine;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

pub use self::error::ConfigError;
use self::raw::*;
pub use self::url::{OutsideUrl, authority_of, is_loopback};
use self::url::{absolute_url, outside_url};
use crate::policy::{self, Policy};
use crate::secret::Secret;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub identity_provider: IdentityProvider,
    pub keys: Keys,
    pub routes: Vec<Route>,
    pub authorization_server: AuthorizationServer,
    pub store: Store,
    pub mcp: McpSettings,
    pub cors: Cors,
    /// What to do with a request whose authority no route serves.
    pub unmatched_hosts: UnmatchedHosts,
}

/// A request for a host no route serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnmatchedHosts {
    /// Answered `404` (the default: nothing reaches a server around the filter).
    Deny,
    /// Passed on untouched, for listeners that also carry other traffic.
    Passthrough,
}

#[derive(Debug, Clone)]
pub struct IdentityProvider {
    /// Issuer URL exactly as configured; discovery is `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    pub discovery: OutsideUrl,
    pub client_id: String,
    pub client_secret: Secret,
    pub scopes: Vec<String>,
    pub token_endpoint_auth_method: ClientAuthMethod,
    pub groups_claim: String,
    pub timeout_ms: u64,
}

/// How a confidential client authenticates at a token endpoint (RFC 6749 2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
}

#[derive(Debug, Clone)]
pub struct Keys {
    /// HS256 keys for the filter-issued token; the first signs, all verify.
    pub token_signing: Vec<KeyEntry>,
    /// AES-256-GCM keys for values at rest; the first encrypts, all decrypt.
    pub encryption: Vec<KeyEntry>,
}

#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub id: String,
    pub key: Secret,
}

#[derive(Debug, Clone)]
pub struct Route {
    /// Stable identifier (the configured `name`, or `from` + path); keys stored state.
    pub name: String,
    /// `scheme://host[:port]` of `from`; the authorization server's issuer.
    pub origin: String,
    /// `host[:port]` matched against a request's `:authority`.
    pub authority: String,
    /// The MCP endpoint's path, such as `/mcp`.
    pub path: String,
    /// The canonical resource URI (RFC 8707, RFC 9728): origin + path.
    pub resource: String,
    pub upstream: Option<UpstreamOAuth2>,
    pub policy: Policy,
    /// Pomerium's `allow_any_authenticated_user`.
    pub allow_any_authenticated_user: bool,
    /// Other paths of the route's host are forwarded (with a valid token,
    /// without the upstream token) instead of refused.
    pub forward_other_paths: bool,
}

#[derive(Debug, Clone)]
pub struct UpstreamOAuth2 {
    pub client_id: String,
    pub client_secret: Secret,
    pub scopes: Vec<String>,
    pub auth_url: String,
    pub token: OutsideUrl,
    pub auth_style: AuthStyle,
    pub authorization_url_params: Vec<(String, String)>,
    pub refresh_skew_seconds: u64,
    /// The code exchange's timeout.
    pub timeout_ms: u64,
    /// A refresh's own timeout; it is never abandoned before.
    pub refresh_timeout_ms: u64,
    /// How long a request with an expired upstream token waits for a refresh.
    pub refresh_wait_ms: u64,
}

/// Where the upstream client's credentials go at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStyle {
    /// HTTP Basic, form-encoded credentials (RFC 6749 2.3.1).
    Header,
    /// `client_id` and `client_secret` in the form body.
    Params,
    /// Header first; on `401`/`invalid_client` retry with params and remember.
    Auto,
}

#[derive(Debug, Clone)]
pub struct AuthorizationServer {
    pub access_token_ttl_seconds: u64,
    pub refresh_token_ttl_seconds: u64,
    pub authorization_code_ttl_seconds: u64,
    pub session_ttl_seconds: u64,
    pub refresh_reuse_grace_seconds: u64,
    pub scopes_supported: Vec<String>,
    pub dynamic_registration: DynamicRegistration,
    pub metadata_documents: MetadataDocuments,
    /// Remember consent for dynamically registered clients too; by default
    /// only clients verified through a metadata document skip the page.
    pub remember_consent_for_registered_clients: bool,
}

#[derive(Debug, Clone)]
pub struct DynamicRegistration {
    pub enabled: bool,
    /// The ceiling for all sources together.
    pub max_per_window: u32,
    pub max_per_source_per_window: u32,
    pub window_seconds: u64,
    pub unused_expiry_seconds: u64,
}

#[derive(Debug, Clone)]
pub struct MetadataDocuments {
    pub enabled: bool,
    pub allowed_hosts: Vec<String>,
    pub cluster: String,
    pub max_bytes: usize,
    pub timeout_ms: u64,
    pub cache_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// proxy-wasm shared data: one Envoy, all its workers.
    SharedData { prefix: String },
    /// etcd v3 JSON gateway: several Envoy replicas sharing state.
    Etcd {
        prefix: String,
        /// The Envoy cluster that reaches etcd's v3 HTTP/JSON gateway.
        cluster: String,
        /// `:authority` of the calls.
        authority: String,
        timeout_ms: u64,
        /// User name and password exchanged at `/v3/auth/authenticate`.
        credentials: Option<(String, crate::secret::Secret)>,
        /// How long this Envoy may answer a read from its own cache
        /// (shared data) instead of etcd: the bound on how late a change
        /// made at another replica is seen by read-only steps.
        cache_seconds: u64,
    },
}

#[derive(Debug, Clone)]
pub struct McpSettings {
    pub max_request_bytes: usize,
    pub audit: bool,
    pub audit_arguments: bool,
}

#[derive(Debug, Clone)]
pub struct Cors {
    /// `None`: any origin (`*`).
    pub allowed_origins: Option<Vec<String>>,
}

const TOP_LEVEL_FIELDS: &[&str] = &[
    "identity_provider",
    "keys",
    "routes",
    "authorization_server",
    "store",
    "mcp",
    "cors",
    "allow_insecure_http",
    "unmatched_hosts",
];

const DEFAULT_TIMEOUT_MS: u64 = 5_000;
const DEFAULT_REFRESH_TIMEOUT_MS: u64 = 30_000;
const DEFAULT_REFRESH_WAIT_MS: u64 = 5_000;
const MIN_SIGNING_KEY_BYTES: usize = 32;
const ENCRYPTION_KEY_BYTES: usize = 32;
/// OAuth 2.0 parameters that `authorization_url_params` may not replace.
const RESERVED_AUTHORIZATION_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
];

impl Config {
    /// The route of that name.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }

    /// Parses and validates the plugin configuration. On failure, every
    /// problem found, each naming its field.
    pub fn parse(bytes: &[u8]) -> Result<Config, Vec<ConfigError>> {
        let root: Value = serde_json::from_slice(bytes).map_err(|e| {
            vec![ConfigError::new(
                "",
                format!("not valid JSON ({e}); the configuration is a JSON object"),
            )]
        })?;
        let Value::Object(root) = root else {
            return Err(vec![ConfigError::new("", "must be a JSON object")]);
        };
        let mut c = Compiler::default();
        c.compile(&root).ok_or(c.errors)
    }
}

#[derive(Default)]
struct Compiler {
    errors: Vec<ConfigError>,
    allow_insecure_http: bool,
}

impl Compiler {
    fn error(&mut self, field: &str, problem: impl Into<String>) {
        self.errors.push(ConfigError::new(field, problem));
    }

    /// Deserialises one field of an object, reporting the full path of any problem.
    fn field<T: DeserializeOwned>(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        base: &str,
    ) -> Option<T> {
        let path = join(base, key);
        let value = obj.get(key).cloned().unwrap_or(Value::Null);
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let inner = e.path().to_string();
                let at = if inner == "." {
                    path
                } else {
                    join(&path, &inner)
                };
                let msg = e.into_inner().to_string();
                let msg = if msg.starts_with("invalid type: null") {
                    "required".to_string()
                } else {
                    msg
                };
                self.error(&at, msg);
                None
            }
        }
    }

    fn compile(&mut self, root: &Map<String, Value>) -> Option<Config> {
        for key in root.keys() {
            if !TOP_LEVEL_FIELDS.contains(&key.as_str()) {
                self.error(
                    key,
                    format!(
                        "unknown field; expected one of {}",
                        TOP_LEVEL_FIELDS.join(", ")
                    ),
                );
            }
        }
        self.allow_insecure_http = self
            .field::<Option<bool>>(root, "allow_insecure_http", "")
            .flatten()
            .unwrap_or(false);

        let idp = self
            .field::<RawIdentityProvider>(root, "identity_provider", "")
            .and_then(|raw| self.identity_provider(raw));
        let keys = self
            .field::<RawKeys>(root, "keys", "")
            .and_then(|raw| self.keys(raw));
        let routes = self.routes(root);
        let authorization_server = self
            .field::<Option<RawAuthorizationServer>>(root, "authorization_server", "")
            .map(|raw| self.authorization_server(raw.unwrap_or_default()));
        let store = self
            .field::<Option<RawStore>>(root, "store", "")
            .and_then(|raw| self.store(raw.unwrap_or_default()));
        let mcp = self
            .field::<Option<RawMcpSettings>>(root, "mcp", "")
            .and_then(|raw| self.mcp(raw.unwrap_or_default()));
        let cors = self
            .field::<Option<RawCors>>(root, "cors", "")
            .and_then(|raw| self.cors(raw.unwrap_or_default()));
        let unmatched_hosts = match self
            .field::<Option<String>>(root, "unmatched_hosts", "")
            .flatten()
            .as_deref()
        {
            None | Some("deny") => UnmatchedHosts::Deny,
            Some("passthrough") => UnmatchedHosts::Passthrough,
            Some(other) => {
                self.error(
                    "unmatched_hosts",
                    format!("{other:?} is not one of \"deny\", \"passthrough\""),
                );
                UnmatchedHosts::Deny
            }
        };

        if !self.errors.is_empty() {
            return None;
        }
        Some(Config {
            identity_provider: idp?,
            keys: keys?,
            routes: routes?,
            authorization_server: authorization_server?,
            store: store?,
            mcp: mcp?,
            cors: cors?,
            unmatched_hosts,
        })
    }

    fn identity_provider(&mut self, raw: RawIdentityProvider) -> Option<IdentityProvider> {
        let base = "identity_provider";
        let issuer = raw.issuer.trim_end_matches('/');
        let discovery = outside_url(
            &join(base, "issuer"),
            &format!("{issuer}/.well-known/openid-configuration"),
            &raw.cluster,
            &join(base, "cluster"),
            self.allow_insecure_http,
            &mut self.errors,
        );
        self.non_empty(&join(base, "client_id"), &raw.client_id);
        self.non_empty(&join(base, "client_secret"), &raw.client_secret);
        let scopes = raw
            .scopes
            .unwrap_or_else(|| ["openid", "email", "profile"].map(String::from).to_vec());
        if !scopes.iter().any(|s| s == "openid") {
            self.error(
                &join(base, "scopes"),
                "must include \"openid\" (OpenID Connect Core 3.1.2.1)",
            );
        }
        self.scope_tokens(&join(base, "scopes"), &scopes);
        let method = match raw.token_endpoint_auth_method.as_deref() {
            None | Some("client_secret_basic") => ClientAuthMethod::ClientSecretBasic,
            Some("client_secret_post") => ClientAuthMethod::ClientSecretPost,
            Some(other) => {
                self.error(
                    &join(base, "token_endpoint_auth_method"),
                    format!("{other:?} is not supported; use \"client_secret_basic\" or \"client_secret_post\""),
                );
                ClientAuthMethod::ClientSecretBasic
            }
        };
        let timeout_ms = self.timeout(&join(base, "timeout_ms"), raw.timeout_ms);
        Some(IdentityProvider {
            issuer: raw.issuer.clone(),
            discovery: discovery?,
            client_id: raw.client_id,
            client_secret: Secret::from(raw.client_secret.as_str()),
            scopes,
            token_endpoint_auth_method: method,
            groups_claim: raw.groups_claim.unwrap_or_else(|| "groups".to_string()),
            timeout_ms,
        })
    }

    fn keys(&mut self, raw: RawKeys) -> Option<Keys> {
        let token_signing = self.key_list("keys.token_signing", raw.token_signing.into_iter().map(|k| (k.id, k.secret)), |len| {
            (len < MIN_SIGNING_KEY_BYTES).then(|| {
                format!("must decode to at least {MIN_SIGNING_KEY_BYTES} bytes (RFC 7518 3.2), got {len}")
            })
        }, "secret");
        let encryption = self.key_list(
            "keys.encryption",
            raw.encryption.into_iter().map(|k| (k.id, k.key)),
            |len| {
                (len != ENCRYPTION_KEY_BYTES).then(|| {
                    format!(
                        "must decode to exactly {ENCRYPTION_KEY_BYTES} bytes (AES-256), got {len}"
                    )
                })
            },
            "key",
        );
        Some(Keys {
            token_signing: token_signing?,
            encryption: encryption?,
        })
    }

    fn key_list(
        &mut self,
        base: &str,
        entries: impl Iterator<Item = (String, String)>,
        check_len: impl Fn(usize) -> Option<String>,
        value_name: &str,
    ) -> Option<Vec<KeyEntry>> {
        let before = self.errors.len();
        let mut ids = HashSet::new();
        let mut keys = Vec::new();
        for (i, (id, encoded)) in entries.enumerate() {
            let at = format!("{base}[{i}]");
            if id.trim().is_empty()
                || id.len() > 64
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                self.error(
                    &join(&at, "id"),
                    "must be a key id of 1 to 64 letters, digits, '-', '_' or '.'",
                );
            } else if !ids.insert(id.clone()) {
                self.error(&join(&at, "id"), format!("duplicate key id {id:?}"));
            }
            match base64::engine::general_purpose::STANDARD.decode(encoded.trim()) {
                Ok(bytes) => match check_len(bytes.len()) {
                    Some(problem) => self.error(&join(&at, value_name), problem),
                    None => keys.push(KeyEntry {
                        id,
                        key: Secret::new(bytes),
                    }),
                },
                Err(_) => self.error(&join(&at, value_name), "must be standard base64"),
            }
        }
        if keys.is_empty() && self.errors.len() == before {
            self.error(base, "needs at least one key");
        }
        (self.errors.len() == before).then_some(keys)
    }

    fn routes(&mut self, root: &Map<String, Value>) -> Option<Vec<Route>> {
        let Some(items) = root.get("routes") else {
            self.error("routes", "required: a list of routes");
            return None;
        };
        let Some(items) = items.as_array() else {
            self.error("routes", "must be a list of routes");
            return None;
        };
        if items.is_empty() {
            self.error("routes", "needs at least one route");
            return None;
        }
        let before = self.errors.len();
        let mut routes: Vec<Route> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("routes[{i}]");
            let Some(obj) = item.as_object() else {
                self.error(&at, "must be an object");
                continue;
            };
            let Some(raw) = self.field_of_value::<RawRoute>(obj, &at) else {
                continue;
            };
            let Some(route) = self.route(raw, &at) else {
                continue;
            };
            if routes.iter().any(|r| r.name == route.name) {
                self.error(
                    &join(&at, "name"),
                    format!("duplicate route name {:?}", route.name),
                );
            } else if routes.iter().any(|r| r.resource == route.resource) {
                self.error(
                    &at,
                    format!(
                        "duplicate route: another route already serves {}",
                        route.resource
                    ),
                );
            } else {
                routes.push(route);
            }
        }
        (self.errors.len() == before).then_some(routes)
    }

    fn field_of_value<T: DeserializeOwned>(
        &mut self,
        obj: &Map<String, Value>,
        at: &str,
    ) -> Option<T> {
        let mut wrapper = Map::new();
        wrapper.insert("v".to_string(), Value::Object(obj.clone()));
        let before = self.errors.len();
        let v = self.field::<T>(&wrapper, "v", "");
        for e in &mut self.errors[before..] {
            e.field = format!("{at}{}", e.field.strip_prefix('v').unwrap_or(&e.field));
        }
        v
    }

    fn route(&mut self, raw: RawRoute, at: &str) -> Option<Route> {
        let before = self.errors.len();
        let from = absolute_url(
            &join(at, "from"),
            &raw.from,
            self.allow_insecure_http,
            &mut self.errors,
        );
        if from
            .as_ref()
            .is_some_and(|url| url.path() != "/" || url.query().is_some())
        {
            self.error(
                &join(at, "from"),
                "must be an origin only (scheme://host[:port]); the MCP endpoint's path goes in mcp.server.path",
            );
        }
        // The issuer, the resource and the cookies come from `from`: it must
        // already be the one spelling requests are normalised to.
        if let Some(url) = &from
            && crate::routing::normalise_authority(&authority_of(url))
                .ok()
                .as_deref()
                != Some(authority_of(url).as_str())
        {
            self.error(
                &join(at, "from"),
                format!(
                    "the host must be written as requests are matched: lower case, no trailing dot, no zero-padded or default port ({:?})",
                    authority_of(url)
                ),
            );
        }
        let path = raw.mcp.server.path.unwrap_or_else(|| "/mcp".to_string());
        self.mcp_path(&join(at, "mcp.server.path"), &path);
        let upstream = raw
            .mcp
            .server
            .upstream_oauth2
            .and_then(|u| self.upstream(u, &join(at, "mcp.server.upstream_oauth2")));
        let policy = match &raw.policy {
            None => Policy::default(),
            Some(v) => match policy::parse_policy(v, &join(at, "policy")) {
                Ok(p) => p,
                Err(errs) => {
                    self.errors.extend(errs);
                    Policy::default()
                }
            },
        };
        if raw.name.as_ref().is_some_and(|n| {
            n.trim().is_empty() || n.len() > 128 || n.chars().any(char::is_control)
        }) {
            self.error(&join(at, "name"), "must be 1 to 128 printable characters");
        }
        if self.errors.len() > before {
            return None;
        }
        let from = from?;
        let origin = from.origin().ascii_serialization();
        let resource = format!("{origin}{path}");
        Some(Route {
            name: raw.name.unwrap_or_else(|| resource.clone()),
            authority: authority_of(&from),
            origin,
            path,
            resource,
            upstream,
            policy,
            allow_any_authenticated_user: raw.allow_any_authenticated_user,
            forward_other_paths: raw.forward_other_paths,
        })
    }

    fn mcp_path(&mut self, field: &str, path: &str) {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/%".contains(c);
        let problem = if !path.starts_with('/') {
            Some("must start with '/'")
        } else if !path.chars().all(ok_char) {
            Some("may contain only URL path characters (no query, fragment or spaces)")
        } else if path.split('/').any(|seg| seg == "." || seg == "..") || path.contains("//") {
            Some("must be a normalised path (no '.', '..' or empty segments)")
        } else if path.starts_with("/.well-known/") || path.starts_with("/.oauth/") {
            Some("collides with the filter's own endpoints (/.well-known/, /.oauth/)")
        } else {
            None
        };
        if let Some(p) = problem {
            self.error(field, format!("{p}: {path:?}"));
        }
    }

    fn upstream(&mut self, raw: RawUpstreamOAuth2, at: &str) -> Option<UpstreamOAuth2> {
        let before = self.errors.len();
        self.non_empty(&join(at, "client_id"), &raw.client_id);
        self.non_empty(&join(at, "client_secret"), &raw.client_secret);
        self.scope_tokens(&join(at, "scopes"), &raw.scopes);
        let ep = join(at, "endpoint");
        let auth_url = absolute_url(
            &join(&ep, "auth_url"),
            &raw.endpoint.auth_url,
            self.allow_insecure_http,
            &mut self.errors,
        );
        let token = outside_url(
            &join(&ep, "token_url"),
            &raw.endpoint.token_url,
            &raw.endpoint.cluster,
            &join(&ep, "cluster"),
            self.allow_insecure_http,
            &mut self.errors,
        );
        let auth_style = match raw.endpoint.auth_style.as_deref() {
            None | Some("auto") => AuthStyle::Auto,
            Some("header") => AuthStyle::Header,
            Some("params") => AuthStyle::Params,
            Some(other) => {
                self.error(
                    &join(&ep, "auth_style"),
                    format!("{other:?} is not one of \"header\", \"params\", \"auto\""),
                );
                AuthStyle::Auto
            }
        };
        let timeout_ms = self.timeout(&join(&ep, "timeout_ms"), raw.endpoint.timeout_ms);
        // A refresh rotates a single-use refresh token at the provider: given
        // up too early, the provider's answer (the new token) is lost and the
        // user must consent again. 30 s outlasts a provider's slow moments;
        // requests don't wait that long (refresh_wait_ms) but the refresh does.
        if raw.refresh_skew_seconds.is_some_and(|s| s > 3600) {
            self.error(
                &join(at, "refresh_skew_seconds"),
                "must be at most 3600 seconds",
            );
        }
        let refresh_timeout_ms = raw.refresh_timeout_ms.unwrap_or(DEFAULT_REFRESH_TIMEOUT_MS);
        if !(1_000..=120_000).contains(&refresh_timeout_ms) {
            self.error(
                &join(at, "refresh_timeout_ms"),
                "must be between 1000 and 120000 milliseconds",
            );
        }
        let refresh_wait_ms = raw.refresh_wait_ms.unwrap_or(DEFAULT_REFRESH_WAIT_MS);
        if !(100..=refresh_timeout_ms.max(100)).contains(&refresh_wait_ms) {
            self.error(
                &join(at, "refresh_wait_ms"),
                "must be between 100 milliseconds and refresh_timeout_ms",
            );
        }
        for key in raw.authorization_url_params.keys() {
            if RESERVED_AUTHORIZATION_PARAMS.contains(&key.as_str()) {
                self.error(
                    &format!("{at}.authorization_url_params.{key}"),
                    "is set by the filter and cannot be overridden",
                );
            }
        }
        if self.errors.len() > before {
            return None;
        }
        Some(UpstreamOAuth2 {
            client_id: raw.client_id,
            client_secret: Secret::from(raw.client_secret.as_str()),
            scopes: raw.scopes,
            auth_url: auth_url?.to_string(),
            token: token?,
            auth_style,
            authorization_url_params: raw
                .authorization_url_params
                .into_iter()
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect(),
            refresh_skew_seconds: raw.refresh_skew_seconds.unwrap_or(60),
            timeout_ms,
            refresh_timeout_ms,
            refresh_wait_ms,
        })
    }

    fn authorization_server(&mut self, raw: RawAuthorizationServer) -> AuthorizationServer {
        let base = "authorization_server";
        let ttl = |c: &mut Self, name: &str, v: Option<u64>, default: u64, max: u64| -> u64 {
            let v = v.unwrap_or(default);
            if v == 0 || v > max {
                c.error(
                    &join(base, name),
                    format!("must be between 1 and {max} seconds, got {v}"),
                );
            }
            v
        };
        let access = ttl(
            self,
            "access_token_ttl_seconds",
            raw.access_token_ttl_seconds,
            3600,
            86_400,
        );
        let refresh = ttl(
            self,
            "refresh_token_ttl_seconds",
            raw.refresh_token_ttl_seconds,
            30 * 86_400,
            365 * 86_400,
        );
        let code = ttl(
            self,
            "authorization_code_ttl_seconds",
            raw.authorization_code_ttl_seconds,
            60,
            600,
        );
        let session = ttl(
            self,
            "session_ttl_seconds",
            raw.session_ttl_seconds,
            12 * 3600,
            30 * 86_400,
        );
        let grace = raw.refresh_reuse_grace_seconds.unwrap_or(10);
        if grace > 300 {
            self.error(
                &join(base, "refresh_reuse_grace_seconds"),
                "must be at most 300 seconds",
            );
        }
        let scopes_supported = raw
            .scopes_supported
            .unwrap_or_else(|| vec!["mcp".to_string()]);
        if scopes_supported.is_empty() {
            self.error(&join(base, "scopes_supported"), "needs at least one scope");
        }
        self.scope_tokens(&join(base, "scopes_supported"), &scopes_supported);

        let reg = raw.registration.unwrap_or_default();
        let dynamic = reg.dynamic.unwrap_or_default();
        let dyn_base = join(base, "registration.dynamic");
        let dynamic_registration = DynamicRegistration {
            enabled: dynamic.enabled.unwrap_or(true),
            max_per_window: dynamic.max_per_window.unwrap_or(1000),
            max_per_source_per_window: dynamic.max_per_source_per_window.unwrap_or(60),
            window_seconds: ttl(
                self,
                "registration.dynamic.window_seconds",
                dynamic.window_seconds,
                3600,
                86_400,
            ),
            unused_expiry_seconds: ttl(
                self,
                "registration.dynamic.unused_expiry_seconds",
                dynamic.unused_expiry_seconds,
                7 * 86_400,
                365 * 86_400,
            ),
        };
        if dynamic_registration.max_per_window == 0 {
            self.error(
                &join(&dyn_base, "max_per_window"),
                "must be at least 1 (set enabled: false to turn registration off)",
            );
        }
        if dynamic_registration.max_per_source_per_window == 0 {
            self.error(
                &join(&dyn_base, "max_per_source_per_window"),
                "must be at least 1 (set enabled: false to turn registration off)",
            );
        }
        let docs = reg.metadata_documents.unwrap_or_default();
        let docs_base = join(base, "registration.metadata_documents");
        let mut allowed_hosts = Vec::new();
        for (i, host) in docs.allowed_hosts.iter().enumerate() {
            let h = host.trim().to_ascii_lowercase();
            if h.is_empty() || h.contains('/') || h.contains(':') && !h.starts_with('[') {
                self.error(
                    &format!("{docs_base}.allowed_hosts[{i}]"),
                    format!("must be a host name, got {host:?}"),
                );
            }
            allowed_hosts.push(h);
        }
        let cluster = docs.cluster.unwrap_or_default();
        let enabled = docs.enabled.unwrap_or(true);
        if enabled && !allowed_hosts.is_empty() && cluster.trim().is_empty() {
            self.error(
                &join(&docs_base, "cluster"),
                "must name the Envoy cluster client metadata documents are fetched through",
            );
        }
        let max_bytes = docs.max_bytes.unwrap_or(5 * 1024);
        if !(256..=65_536).contains(&max_bytes) {
            self.error(
                &join(&docs_base, "max_bytes"),
                "must be between 256 and 65536",
            );
        }
        let metadata_documents = MetadataDocuments {
            enabled,
            allowed_hosts,
            cluster,
            max_bytes,
            timeout_ms: self.timeout(&join(&docs_base, "timeout_ms"), docs.timeout_ms),
            cache_seconds: ttl(
                self,
                "registration.metadata_documents.cache_seconds",
                docs.cache_seconds,
                3600,
                86_400,
            ),
        };
        AuthorizationServer {
            access_token_ttl_seconds: access,
            refresh_token_ttl_seconds: refresh,
            authorization_code_ttl_seconds: code,
            session_ttl_seconds: session,
            refresh_reuse_grace_seconds: grace,
            scopes_supported,
            dynamic_registration,
            metadata_documents,
            remember_consent_for_registered_clients: raw
                .remember_consent_for_registered_clients
                .unwrap_or(false),
        }
    }

    fn store(&mut self, raw: RawStore) -> Option<Store> {
        let prefix = raw
            .prefix
            .unwrap_or_else(|| "mcp-oauth-filter/".to_string());
        if prefix.is_empty() || prefix.len() > 64 || prefix.chars().any(char::is_control) {
            self.error("store.prefix", "must be 1 to 64 printable characters");
        }
        match (raw.kind.as_deref(), raw.etcd) {
            (None | Some("shared_data"), None) => Some(Store::SharedData { prefix }),
            (None | Some("shared_data"), Some(_)) => {
                self.error("store.etcd", "is set but store.kind is not \"etcd\"");
                None
            }
            (Some("etcd"), Some(etcd)) => {
                if etcd.cluster.trim().is_empty() {
                    self.error(
                        "store.etcd.cluster",
                        "must name the Envoy cluster of the etcd gateway",
                    );
                }
                let timeout_ms = self.timeout("store.etcd.timeout_ms", etcd.timeout_ms);
                let cache_seconds = etcd.cache_seconds.unwrap_or(5);
                if cache_seconds > 300 {
                    self.error(
                        "store.etcd.cache_seconds",
                        "must be at most 300 (it bounds how late a revocation is seen)",
                    );
                }
                let credentials = match (etcd.username, etcd.password) {
                    (None, None) => None,
                    (Some(user), Some(password)) if !user.is_empty() && !password.is_empty() => {
                        Some((user, crate::secret::Secret::from(password.as_str())))
                    }
                    (Some(_), None) | (Some(_), Some(_)) => {
                        self.error(
                            "store.etcd.password",
                            "required (and not empty) with store.etcd.username",
                        );
                        None
                    }
                    (None, Some(_)) => {
                        self.error("store.etcd.username", "required with store.etcd.password");
                        None
                    }
                };
                if !prefix.ends_with('/') {
                    self.error(
                        "store.prefix",
                        "must end with \"/\" with etcd (an etcd role grants the prefix)",
                    );
                }
                Some(Store::Etcd {
                    prefix,
                    authority: etcd.authority.unwrap_or_else(|| etcd.cluster.clone()),
                    cluster: etcd.cluster,
                    timeout_ms,
                    credentials,
                    cache_seconds,
                })
            }
            (Some("etcd"), None) => {
                self.error("store.etcd", "required when store.kind is \"etcd\"");
                None
            }
            (Some(other), _) => {
                self.error(
                    "store.kind",
                    format!("{other:?} is not one of \"shared_data\", \"etcd\""),
                );
                None
            }
        }
    }

    fn mcp(&mut self, raw: RawMcpSettings) -> Option<McpSettings> {
        let max = raw.max_request_bytes.unwrap_or(1024 * 1024);
        if !(1024..=64 * 1024 * 1024).contains(&max) {
            self.error("mcp.max_request_bytes", "must be between 1024 and 67108864");
        }
        let audit = raw.audit.unwrap_or_default();
        Some(McpSettings {
            max_request_bytes: max,
            audit: audit.enabled.unwrap_or(true),
            audit_arguments: audit.include_arguments.unwrap_or(false),
        })
    }

    fn cors(&mut self, raw: RawCors) -> Option<Cors> {
        let Some(origins) = raw.allowed_origins else {
            return Some(Cors {
                allowed_origins: None,
            });
        };
        if origins.iter().any(|o| o == "*") {
            return Some(Cors {
                allowed_origins: None,
            });
        }
        for (i, o) in origins.iter().enumerate() {
            let ok = ::url::Url::parse(o)
                .map(|u| u.origin().ascii_serialization() == o.trim_end_matches('/'))
                .unwrap_or(false);
            if !ok {
                self.error(
                    &format!("cors.allowed_origins[{i}]"),
                    format!("must be an origin such as https://app.example.com, got {o:?}"),
                );
            }
        }
        Some(Cors {
            allowed_origins: Some(
                origins
                    .into_iter()
                    .map(|o| o.trim_end_matches('/').to_string())
                    .collect(),
            ),
        })
    }

    fn non_empty(&mut self, field: &str, value: &str) {
        if value.trim().is_empty() {
            self.error(field, "must not be empty");
        }
    }

    /// Scope tokens per RFC 6749 3.3: printable ASCII without space, `"` or `\`.
    fn scope_tokens(&mut self, field: &str, scopes: &[String]) {
        for (i, s) in scopes.iter().enumerate() {
            let ok = !s.is_empty()
                && s.bytes()
                    .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
            if !ok {
                self.error(
                    &format!("{field}[{i}]"),
                    format!("{s:?} is not a valid scope token (RFC 6749 3.3)"),
                );
            }
        }
    }

    fn timeout(&mut self, field: &str, v: Option<u64>) -> u64 {
        let v = v.unwrap_or(DEFAULT_TIMEOUT_MS);
        if !(100..=60_000).contains(&v) {
            self.error(field, "must be between 100 and 60000 milliseconds");
        }
        v
    }
}

fn join(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_string()
    } else if key.starts_with('[') {
        format!("{base}{key}")
    } else {
        format!("{base}.{key}")
    }
}

#[cfg(test)]
mod tests;
