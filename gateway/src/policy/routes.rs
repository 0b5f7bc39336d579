//! `[[route]]`: method and path, target, who may call, body rules, per-plan limits, and for
//! plugin targets the grants and sandbox. One function per concern; `build` strings them
//! together.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::handlers::{self, Native};
use super::plans::Limits;
use super::router::PathPattern;
use super::units::ByteSize;
use super::valid_identifier;
use crate::plugin::grants::{Access, CredentialGrant, Grants, Inject, Sandbox, MAX_PLUGIN_MEMORY};
use crate::plugin::host::host_pattern::HostPattern;
use crate::role::Role;

pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// Upper bound for any route's `body_limit`.
pub const MAX_BODY_LIMIT: usize = 64 * 1024 * 1024;
pub const DEFAULT_RESPONSE_LIMIT: usize = 1024 * 1024;
/// Upper bound for any route's `response_limit`.
pub const MAX_RESPONSE_LIMIT: usize = 16 * 1024 * 1024;

/// Upper bounds of the sandbox and grant settings a policy may write.
pub mod bounds {
    pub const CPU_MS: u64 = 10_000;
    pub const TIMEOUT_MS: u64 = 60_000;
    pub const HTTP_TIMEOUT_MS: u64 = 30_000;
    pub const HTTP_MAX_RESPONSE: usize = 16 * 1024 * 1024;
    pub const DB_STATEMENT_TIMEOUT_MS: u64 = 30_000;
    pub const DB_MAX_ROWS: u32 = 10_000;
}

/// Response headers a plugin may set only where its route lists them: they change how
/// browsers treat the gateway's origin (cookies, redirects, HSTS, CORS, CSP).
pub const GUARDED_RESPONSE_HEADERS: &[&str] = &[
    "set-cookie",
    "location",
    "refresh",
    "strict-transport-security",
    "content-security-policy",
    "clear-site-data",
    "alt-svc",
    "www-authenticate",
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-headers",
    "access-control-allow-methods",
    "access-control-expose-headers",
    "access-control-max-age",
];

/// Request headers that carry the caller's credentials; plugins see them only where their
/// route lists them (`authorization` never: it is the gateway's own credential).
pub const CREDENTIAL_REQUEST_HEADERS: &[&str] =
    &["cookie", "proxy-authorization", "x-api-key", "api-key", "x-auth-token", "x-access-token", "x-csrf-token"];

/// What a plugin's answer may carry and which credential headers it receives.
#[derive(Debug, Clone)]
pub struct Exposure {
    pub response_limit: usize,
    /// Lower-case names from [`GUARDED_RESPONSE_HEADERS`] this route allows.
    pub response_headers: Vec<String>,
    /// Lower-case names from [`CREDENTIAL_REQUEST_HEADERS`] this route passes on.
    pub pass_headers: Vec<String>,
}

impl Default for Exposure {
    fn default() -> Exposure {
        Exposure { response_limit: DEFAULT_RESPONSE_LIMIT, response_headers: Vec::new(), pass_headers: Vec::new() }
    }
}

/// Where a route's requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A handler compiled into the gateway.
    Native(Native),
    /// A WebAssembly plugin by name.
    Plugin(String),
}

/// A target as written, before the native handler's name is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TargetSpec {
    Native(String),
    Plugin(String),
}

impl<'de> Deserialize<'de> for TargetSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.split_once(':') {
            Some(("native", n)) if !n.is_empty() => Ok(TargetSpec::Native(n.to_string())),
            Some(("plugin", n)) if !n.is_empty() => Ok(TargetSpec::Plugin(n.to_string())),
            _ => Err(serde::de::Error::custom(format!(
                "target {s:?}: expected \"native:<handler>\" or \"plugin:<name>\""
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The route acts inside one org (from the token, or `X-Org-Id` for a super-admin).
    #[default]
    Tenant,
    /// The route acts on the platform itself (super-admin only, no org context).
    Platform,
}

/// What authenticates a route's callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Auth {
    /// `Authorization: Bearer <token>`; the org comes from the token.
    #[default]
    Bearer,
    /// Webhook ingress: the `{endpoint_id}` path parameter names the endpoint, the endpoint
    /// decides the org, and its signature (checked by the `verify` phase) is the credential.
    Webhook,
    /// No credential, no org: a native handler that serves what anyone may read (the
    /// OpenAPI document). It never reaches tenant data.
    Public,
    /// The operator console (`native:console`): a session cookie from the console's sign-in,
    /// never a bearer token. Routes with no roles (sign-in, the stylesheet) need no session.
    Console,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Idempotency {
    #[default]
    None,
    /// An `Idempotency-Key` header is passed on when present.
    Optional,
    /// Requests without an `Idempotency-Key` header are refused (400 VALIDATION_FAILED).
    Required,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyKind {
    #[default]
    Json,
    Raw,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteSpec {
    pub(super) id: String,
    /// Required unless `internal`.
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    path: Option<String>,
    target: TargetSpec,
    /// Not reachable over HTTP: a plugin route that jobs invoke (e.g. a provider's webhook
    /// adapter), with its own grants and sandbox.
    #[serde(default)]
    internal: bool,
    #[serde(default)]
    auth: Auth,
    #[serde(default)]
    roles: Vec<Role>,
    #[serde(default)]
    scope: Scope,
    #[serde(default)]
    body_limit: Option<ByteSize>,
    #[serde(default)]
    idempotency: Idempotency,
    /// `json` (default): a non-empty body must be JSON and is checked for tenant fields;
    /// `raw`: passed through as bytes (e.g. component uploads).
    #[serde(default)]
    body: BodyKind,
    /// Per-plan overrides of the plan's own limits, for this route alone.
    #[serde(default)]
    rate_limit: HashMap<String, Limits>,
    /// Sandbox limits for a plugin target.
    #[serde(default)]
    sandbox: Option<SandboxSpec>,
    /// What a plugin target may reach.
    #[serde(default)]
    grants: Option<GrantsSpec>,
    /// Largest plugin answer (default 1 MiB).
    #[serde(default)]
    response_limit: Option<ByteSize>,
    /// Response headers a plugin may set beyond the ordinary ones (`set-cookie`, `location`,
    /// `strict-transport-security`, CORS headers ... are dropped unless listed here).
    #[serde(default)]
    response_headers: Vec<String>,
    /// Credential-bearing request headers passed to the plugin (`cookie`,
    /// `proxy-authorization`, API-key headers ... are removed unless listed here).
    #[serde(default)]
    pass_headers: Vec<String>,
    /// Secondary steps enqueued after a 2xx, in the plugin's transaction (docs/optimizer.md).
    #[serde(default)]
    chain: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsSpec {
    /// table name -> "read" | "write".
    #[serde(default)]
    tables: HashMap<String, Access>,
    /// Outbound URL patterns: `scheme://host[:port]`, host may be `*.domain` or `*`, port `*`;
    /// or `{ url = "...", allow_private = true }` for an IP literal on a private network.
    #[serde(default)]
    hosts: Vec<HostSpec>,
    #[serde(default)]
    http_timeout_ms: Option<u64>,
    #[serde(default)]
    http_max_response: Option<ByteSize>,
    #[serde(default)]
    db_statement_timeout_ms: Option<u64>,
    #[serde(default)]
    db_max_rows: Option<u32>,
    /// May the plugin take advisory locks (`lock`, `try-lock`)?
    #[serde(default)]
    locks: bool,
    /// Provider credentials the host adds to requests to the org's configured origin.
    #[serde(default)]
    credentials: Vec<CredentialSpec>,
}

/// One `grants.credentials` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialSpec {
    provider: String,
    name: String,
    /// `query:<parameter>`, `header:<name>` or `bearer`.
    inject: String,
}

/// Headers a credential may not be injected as: the host's own (framing, hop-by-hop), and
/// those whose value is a scheme plus a credential (`Authorization: Bearer …`), which the
/// host would fill with the bare secret (`inject = "bearer"` is the form for that).
const NOT_INJECTABLE: &[&str] = &["authorization", "cookie", "set-cookie", "proxy-authenticate", "www-authenticate"];

/// One `grants.hosts` entry: a URL pattern, or a table carrying options with it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostSpec {
    url: String,
    allow_private: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostTable {
    url: String,
    #[serde(default)]
    allow_private: bool,
}

impl<'de> Deserialize<'de> for HostSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        // By hand rather than `untagged`, so a bad table says which key is wrong.
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = HostSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a URL pattern \"scheme://host[:port]\" or a table { url = \"...\", allow_private = true }")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<HostSpec, E> {
                Ok(HostSpec { url: s.to_string(), allow_private: false })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> std::result::Result<HostSpec, A::Error> {
                let t = HostTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(HostSpec { url: t.url, allow_private: t.allow_private })
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SandboxSpec {
    #[serde(default)]
    memory: Option<ByteSize>,
    #[serde(default)]
    cpu_ms: Option<u64>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// A route, validated.
#[derive(Debug, Clone)]
pub struct Route {
    pub id: Arc<str>,
    pub method: http::Method,
    pub path: String,
    pub pattern: PathPattern,
    pub target: Target,
    pub roles: Vec<Role>,
    pub scope: Scope,
    pub auth: Auth,
    /// Invoked by jobs only, never matched against requests.
    pub internal: bool,
    pub body_limit: usize,
    pub idempotency: Idempotency,
    pub body: BodyKind,
    pub rate_limit: HashMap<String, Limits>,
    /// For plugin targets: grants and sandbox limits (defaults when not declared).
    pub grants: Arc<Grants>,
    pub sandbox: Sandbox,
    /// What a plugin's answer may carry, and which request headers it sees.
    pub exposure: Exposure,
    /// The fail-soft chain enqueued after a 2xx answer (plugin routes only).
    pub chain: Vec<super::ChainStep>,
    /// `file:line`, for messages.
    pub source: String,
}


impl Route {
    /// Super-admins may call every route (tenant routes with `X-Org-Id`); others need their
    /// role listed.
    pub fn allows(&self, role: Role) -> bool {
        role == Role::SuperAdmin || self.roles.contains(&role)
    }
}

/// Validates one `[[route]]` against the routes read before it; errors are the reason only
/// (the caller adds file, line and route id).
pub(super) fn build(r: RouteSpec, earlier: &[Route], source: String) -> Result<Route, String> {
    let (method, path, pattern) = endpoint(&r)?;
    if let Some(other) = earlier.iter().find(|o| *o.id == *r.id) {
        return Err(format!("id already used at {}", other.source));
    }
    if let Some(other) = earlier.iter().find(|o| !r.internal && !o.internal && o.method == method && o.path == path) {
        return Err(format!("{method} {path} already routed at {}", other.source));
    }
    let target = target(&r, &path)?;
    access(&r)?;
    if r.body_limit.is_some_and(|b| b.0 > MAX_BODY_LIMIT) {
        return Err(format!("body_limit above {} MiB", MAX_BODY_LIMIT >> 20));
    }
    let is_plugin = matches!(target, Target::Plugin(_));
    let shapes_answer = r.response_limit.is_some() || !r.response_headers.is_empty() || !r.pass_headers.is_empty();
    if !is_plugin && (r.grants.is_some() || r.sandbox.is_some() || shapes_answer) {
        return Err("grants, sandbox, response_limit, response_headers and pass_headers apply to plugin targets only".into());
    }
    let grants = Arc::new(grants(r.grants.clone().unwrap_or_default())?);
    let sandbox = sandbox(r.sandbox.clone().unwrap_or_default())?;
    let exposure = exposure(&r)?;
    let chain = super::chain::build(&r.chain)?;
    if !chain.is_empty() && (!is_plugin || r.internal) {
        return Err("chain applies to plugin routes served over HTTP only".into());
    }
    Ok(Route {
        chain,
        source,
        id: r.id.into(),
        method,
        path,
        pattern,
        target,
        roles: r.roles,
        scope: r.scope,
        auth: r.auth,
        internal: r.internal,
        body_limit: r.body_limit.map(|b| b.0).unwrap_or(DEFAULT_BODY_LIMIT),
        idempotency: r.idempotency,
        // A webhook body is the provider's bytes, signed as they are: never read as the
        // caller's JSON (its `org_id` fields are the provider's business).
        body: if r.auth == Auth::Webhook { BodyKind::Raw } else { r.body },
        rate_limit: r.rate_limit,
        grants,
        sandbox,
        exposure,
    })
}

/// `response_limit`, `response_headers`, `pass_headers`.
fn exposure(r: &RouteSpec) -> Result<Exposure, String> {
    let response_limit = r.response_limit.map(|b| b.0).unwrap_or(DEFAULT_RESPONSE_LIMIT);
    if !(1..=MAX_RESPONSE_LIMIT).contains(&response_limit) {
        return Err(format!("response_limit must be between 1 byte and {} MiB", MAX_RESPONSE_LIMIT >> 20));
    }
    let names = |list: &[String], known: &[&str], key: &str| -> Result<Vec<String>, String> {
        list.iter()
            .map(|h| {
                let h = h.to_ascii_lowercase();
                if known.contains(&h.as_str()) {
                    Ok(h)
                } else {
                    Err(format!("{key}: {h:?} is not one of {}", known.join(", ")))
                }
            })
            .collect()
    };
    Ok(Exposure {
        response_limit,
        response_headers: names(&r.response_headers, GUARDED_RESPONSE_HEADERS, "response_headers")?,
        pass_headers: names(&r.pass_headers, CREDENTIAL_REQUEST_HEADERS, "pass_headers")?,
    })
}

/// A policy value within its bound.
fn bounded<T: PartialOrd + std::fmt::Display + Copy>(key: &str, v: Option<T>, min: T, max: T) -> Result<Option<T>, String> {
    match v {
        Some(x) if x < min || x > max => Err(format!("{key} must be between {min} and {max}")),
        other => Ok(other),
    }
}

/// Method, path and pattern; internal routes get `POST /internal/<id>`, never matched.
fn endpoint(r: &RouteSpec) -> Result<(http::Method, String, PathPattern), String> {
    let (method_text, path) = match (r.internal, &r.method, &r.path) {
        (false, Some(m), Some(p)) => (m.clone(), p.clone()),
        (false, _, _) => return Err("method and path are required (or `internal = true`)".into()),
        (true, None, None) => ("POST".to_string(), format!("/internal/{}", r.id)),
        (true, _, _) => return Err("an internal route has no method or path".into()),
    };
    let method = http::Method::from_bytes(method_text.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("method {method_text:?} is not an HTTP method"))?;
    let pattern = PathPattern::parse(&path)?;
    Ok((method, path, pattern))
}

/// Resolves the target (a native handler's name becomes a [`Native`]) and checks the rules
/// that tie targets to internal routes and webhook authentication.
fn target(r: &RouteSpec, path: &str) -> Result<Target, String> {
    let target = match &r.target {
        TargetSpec::Plugin(p) => Target::Plugin(p.clone()),
        TargetSpec::Native(n) => Target::Native(
            Native::parse(n).ok_or_else(|| format!("unknown native handler {n:?} (known: {})", handlers::names()))?,
        ),
    };
    if r.internal && !matches!(target, Target::Plugin(_)) {
        return Err("an internal route must target a plugin".into());
    }
    let ingress = target == Target::Native(Native::WebhookIngress);
    if r.auth == Auth::Webhook {
        if !ingress {
            return Err("auth = \"webhook\" is for target \"native:webhook_ingress\"".into());
        }
        if !path.contains("{endpoint_id}") {
            return Err("a webhook route's path names {endpoint_id}".into());
        }
    } else if ingress {
        return Err("native:webhook_ingress needs auth = \"webhook\"".into());
    }
    let public_handler = matches!(target, Target::Native(n) if PUBLIC_HANDLERS.contains(&n));
    if r.auth == Auth::Public && (!public_handler || !r.roles.is_empty() || r.scope != Scope::Platform) {
        let names: Vec<String> = PUBLIC_HANDLERS.iter().map(|n| format!("native:{}", n.name())).collect();
        return Err(format!(
            "auth = \"public\" is for scope = \"platform\" routes without roles, targeting {}",
            names.join(", ")
        ));
    }
    let console = target == Target::Native(Native::Console);
    if console != (r.auth == Auth::Console) {
        return Err("auth = \"console\" and target \"native:console\" go together".into());
    }
    if console && (r.scope != Scope::Platform || !path.starts_with("/console")) {
        return Err("console routes are platform routes under /console".into());
    }
    Ok(target)
}

/// The handlers that may be served without a credential: none of them reads tenant data.
const PUBLIC_HANDLERS: &[Native] = &[Native::OpenApi];

/// Scope and roles agree: platform routes are for super-admins, tenant routes name a role.
fn access(r: &RouteSpec) -> Result<(), String> {
    if r.scope == Scope::Platform && r.roles.iter().any(|x| *x != Role::SuperAdmin) {
        return Err("platform routes are for super_admin only".into());
    }
    if r.scope == Scope::Tenant && r.roles.is_empty() && r.auth == Auth::Bearer && !r.internal {
        return Err("a tenant route needs at least one role".into());
    }
    Ok(())
}

fn valid_plugin_name(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `[route.grants]`, with defaults for what is not written.
fn grants(g: GrantsSpec) -> Result<Grants, String> {
    let hosts = host_patterns(&g.hosts)?;
    for t in g.tables.keys() {
        // Another plugin's table is granted as `<plugin>.<table>`; plugin-owned tables are
        // never named by their physical `plg_` name (docs/plugin-manifest.md).
        let ok = match t.split_once('.') {
            Some((plugin, table)) => valid_plugin_name(plugin) && valid_identifier(table) && !table.contains("__"),
            None => valid_identifier(t) && !t.starts_with(crate::db::plugin_storage::PREFIX),
        };
        if !ok {
            return Err(format!(
                "grant names table {t:?}, which is neither a plain identifier nor a plugin's table as \"<plugin>.<table>\" (plugin-owned tables are never named by their `plg_` table)"
            ));
        }
    }
    let d = Grants::default();
    let http_timeout_ms = bounded("http_timeout_ms", g.http_timeout_ms, 1, bounds::HTTP_TIMEOUT_MS)?;
    let http_max_response = bounded("http_max_response", g.http_max_response.map(|b| b.0), 1, bounds::HTTP_MAX_RESPONSE)?;
    let db_statement_timeout_ms = bounded("db_statement_timeout_ms", g.db_statement_timeout_ms, 1, bounds::DB_STATEMENT_TIMEOUT_MS)?;
    let db_max_rows = bounded("db_max_rows", g.db_max_rows, 1, bounds::DB_MAX_ROWS)?;
    let credentials = credentials(&g.credentials)?;
    Ok(Grants {
        credentials,
        tables: g.tables,
        physical: HashMap::new(),
        hosts,
        locks: g.locks,
        http_timeout: http_timeout_ms.map(Duration::from_millis).unwrap_or(d.http_timeout),
        http_max_response: http_max_response.unwrap_or(d.http_max_response),
        db_statement_timeout_ms: db_statement_timeout_ms.unwrap_or(d.db_statement_timeout_ms),
        db_max_rows: db_max_rows.unwrap_or(d.db_max_rows),
    })
}

/// `grants.hosts`. Two entries naming the same destinations are refused: the winner among
/// matching patterns is the most specific one, and two equally specific ones would leave it
/// (and its `allow_private`) to the order they are written in.
fn host_patterns(specs: &[HostSpec]) -> Result<Vec<HostPattern>, String> {
    let mut out: Vec<HostPattern> = Vec::with_capacity(specs.len());
    for h in specs {
        let p = if h.allow_private { HostPattern::parse_private(&h.url)? } else { HostPattern::parse(&h.url)? };
        if let Some(other) = out.iter().find(|o| o.same_destinations(&p)) {
            return Err(format!("host {:?}: the same destinations as an earlier entry ({other})", h.url));
        }
        out.push(p);
    }
    Ok(out)
}

/// `grants.credentials`: each names a provider (checked against `[providers.*]` once every
/// file is read, which also sets its pace), a credential name and where it goes.
fn credentials(specs: &[CredentialSpec]) -> Result<Vec<CredentialGrant>, String> {
    let mut out: Vec<CredentialGrant> = Vec::with_capacity(specs.len());
    for c in specs {
        let bad = |why: String| format!("credentials: {{ provider = {:?}, name = {:?} }}: {why}", c.provider, c.name);
        let name_ok = |n: &str| {
            let b = n.as_bytes();
            !b.is_empty() && b.len() <= 64 && b[0].is_ascii_lowercase() && b.iter().all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || *x == b'_')
        };
        if !name_ok(&c.name) {
            return Err(bad("name must be lower-case letters, digits and _, starting with a letter".into()));
        }
        let inject = match c.inject.split_once(':') {
            None if c.inject == "bearer" => Inject::Bearer,
            Some(("query", p)) => {
                if p.is_empty() || p.len() > 64 || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)) {
                    return Err(bad(format!("inject {:?}: a query parameter is 1 to 64 letters, digits, -, ., _ or ~", c.inject)));
                }
                Inject::Query(p.to_string())
            }
            Some(("header", h)) => {
                let h = h.to_ascii_lowercase();
                if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    return Err(bad(format!("inject {:?}: {h:?} is not a header name", c.inject)));
                }
                if crate::plugin::host::outbound_http::RESERVED.contains(&h.as_str()) || NOT_INJECTABLE.contains(&h.as_str()) {
                    return Err(bad(format!(
                        "inject {:?}: the host never puts a bare credential in {h} (it owns the framing headers, and a bare secret is no {h} value; use inject = \"bearer\" for authorization: Bearer)",
                        c.inject
                    )));
                }
                Inject::Header(h)
            }
            _ => return Err(bad(format!("inject {:?}: expected \"query:<parameter>\", \"header:<name>\" or \"bearer\"", c.inject))),
        };
        if let Some(other) = out.iter().find(|o| o.provider == c.provider && (o.name == c.name || o.inject == inject)) {
            return Err(bad(format!("provider {:?} already has a grant for this name or place ({:?})", other.provider, other.name)));
        }
        out.push(CredentialGrant { provider: c.provider.clone(), name: c.name.clone(), inject, pace: None });
    }
    Ok(out)
}

/// `[route.sandbox]`, with defaults for what is not written.
fn sandbox(sb: SandboxSpec) -> Result<Sandbox, String> {
    let d = Sandbox::default();
    let memory = sb.memory.map(|b| b.0).unwrap_or(d.memory);
    if !(1024 * 1024..=MAX_PLUGIN_MEMORY).contains(&memory) {
        return Err(format!("sandbox memory must be between 1MiB and {}MiB", MAX_PLUGIN_MEMORY >> 20));
    }
    let cpu_ms = bounded("cpu_ms", sb.cpu_ms, 1, bounds::CPU_MS)?;
    let timeout_ms = bounded("timeout_ms", sb.timeout_ms, 1, bounds::TIMEOUT_MS)?;
    Ok(Sandbox {
        memory,
        cpu: cpu_ms.map(Duration::from_millis).unwrap_or(d.cpu),
        timeout: timeout_ms.map(Duration::from_millis).unwrap_or(d.timeout),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::host::host_pattern::Host;

    fn hosts(toml_text: &str) -> Result<Vec<HostPattern>, String> {
        let spec: GrantsSpec = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        grants(spec).map(|g| g.hosts)
    }

    #[test]
    fn hosts_accept_strings_and_tables() {
        let h = hosts(r#"hosts = ["https://api.example.com", { url = "http://10.0.0.5:8080", allow_private = true }, { url = "http://*:*" }]"#)
            .unwrap();
        assert_eq!(h.len(), 3);
        assert_eq!((h[0].host.clone(), h[0].port, h[0].allow_private), (Host::Name("api.example.com".into()), Some(443), false));
        assert_eq!((h[1].host.clone(), h[1].port, h[1].allow_private), (Host::Ip("10.0.0.5".parse().unwrap()), Some(8080), true));
        assert_eq!((h[2].host.clone(), h[2].port, h[2].allow_private), (Host::Any, None, false));
        assert!(hosts("").unwrap().is_empty());
    }

    #[test]
    fn hosts_refusals_are_clear() {
        for (text, why) in [
            (r#"hosts = [{ url = "https://api.example.com", allow_private = true }]"#, "only for an IP-literal pattern"),
            (r#"hosts = [{ url = "http://*.corp.example:*", allow_private = true }]"#, "never a wildcard"),
            (r#"hosts = [{ url = "http://*:*", allow_private = true }]"#, "never a wildcard"),
            (r#"hosts = [{ url = "http://169.254.169.254", allow_private = true }]"#, "link-local"),
            (r#"hosts = [{ url = "http://10.0.0.5", allow_privat = true }]"#, "allow_privat"),
            (r#"hosts = [{ allow_private = true }]"#, "url"),
            (r#"hosts = [42]"#, "URL pattern"),
            (r#"hosts = ["http://10.0.0.5:8080", { url = "http://10.0.0.5:8080", allow_private = true }]"#, "same destinations"),
            (r#"hosts = ["http://[::1]:*", "http://[0::1]:*"]"#, "same destinations"),
            (r#"hosts = ["https://*.example.com", "https://*.EXAMPLE.COM:443"]"#, "same destinations"),
        ] {
            let e = hosts(text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
        // Different ports or schemes are different destinations.
        assert_eq!(hosts(r#"hosts = ["http://10.0.0.5:8080", "http://10.0.0.5:*", "https://10.0.0.5:8080"]"#).unwrap().len(), 3);
    }

    fn creds(toml_text: &str) -> Result<Vec<CredentialGrant>, String> {
        let spec: GrantsSpec = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        grants(spec).map(|g| g.credentials)
    }

    #[test]
    fn credential_grants_say_where_the_secret_goes() {
        let c = creds(
            r#"credentials = [{ provider = "smartlead", name = "api_key", inject = "query:api_key" },
                              { provider = "heyreach", name = "api_key", inject = "header:X-API-KEY" },
                              { provider = "openai", name = "api_key", inject = "bearer" }]"#,
        )
        .unwrap();
        assert_eq!(c[0].inject, Inject::Query("api_key".into()));
        assert_eq!(c[1].inject, Inject::Header("x-api-key".into()));
        assert_eq!(c[2].inject, Inject::Bearer);
        assert!(c.iter().all(|g| g.pace.is_none()));
    }

    #[test]
    fn credential_grant_refusals_are_clear() {
        for (inject, why) in [
            ("header:Authorization", "authorization"),
            ("header:cookie", "cookie"),
            ("header:Host", "host"),
            ("header:Transfer-Encoding", "transfer-encoding"),
            ("header:Connection", "connection"),
            ("header:bad header", "not a header name"),
            ("query:", "query parameter"),
            ("query:a&b", "query parameter"),
            ("body:api_key", "expected"),
            ("api_key", "expected"),
            ("Bearer", "expected"),
            ("bearer:x", "expected"),
        ] {
            let e = creds(&format!(r#"credentials = [{{ provider = "p", name = "api_key", inject = "{inject}" }}]"#)).unwrap_err();
            assert!(e.contains(why), "{inject}: {e}");
        }
        let e = creds(r#"credentials = [{ provider = "p", name = "Api-Key", inject = "query:k" }]"#).unwrap_err();
        assert!(e.contains("lower-case"), "{e}");
        let e = creds(r#"credentials = [{ provider = "p", name = "a", inject = "query:k" }, { provider = "p", name = "b", inject = "query:k" }]"#)
            .unwrap_err();
        assert!(e.contains("already has a grant"), "{e}");
        let e = creds(r#"credentials = [{ provider = "p", name = "a", inject = "bearer" }, { provider = "p", name = "b", inject = "bearer" }]"#)
            .unwrap_err();
        assert!(e.contains("already has a grant"), "{e}");
        let e = creds(r#"credentials = [{ provider = "p", name = "a", inject = "query:k", extra = 1 }]"#).unwrap_err();
        assert!(e.contains("extra"), "{e}");
    }
}
