//! Policies: the `policies/*.toml` files that bind routes to targets, roles, limits and plans.
//!
//! Loading is all-or-nothing: any invalid file stops start-up with the file, the line and the
//! reason. The loaded [`PolicySet`] is immutable; a reload builds a new one.
//!
//! This module does not know how requests are served; it only describes them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};

/// Who the caller is, as far as route access goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Member,
    Admin,
    SuperAdmin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
            Role::SuperAdmin => "super_admin",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "member" => Some(Role::Member),
            "admin" => Some(Role::Admin),
            "super_admin" => Some(Role::SuperAdmin),
            _ => None,
        }
    }
}

/// A rate such as `1000/s`, `600/m` or `10000/h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per_secs: u32,
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (n, unit) = s
            .split_once('/')
            .ok_or_else(|| format!("rate {s:?}: expected N/s, N/m or N/h"))?;
        let count: u32 = n.trim().parse().map_err(|_| format!("rate {s:?}: {n:?} is not a count"))?;
        if count == 0 {
            return Err(format!("rate {s:?}: count must be positive"));
        }
        let per_secs = match unit.trim() {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            u => return Err(format!("rate {s:?}: unit {u:?} is not s, m or h")),
        };
        Ok(Rate { count, per_secs })
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A token bucket: a sustained rate and the burst it may absorb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub rate: Rate,
    /// Defaults to the rate's count.
    pub burst: Option<u32>,
}

impl Quota {
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or(self.rate.count).max(1)
    }
    /// `RateLimit-Policy` form: quota units per window (seconds).
    pub fn header_policy(&self, name: &str) -> String {
        format!("\"{name}\";q={};w={}", self.burst(), self.rate.per_secs.max(1))
    }
}

/// A byte size such as `64KiB`, `1MiB` or `4096`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub usize);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        let parse = |s: &str| -> std::result::Result<usize, String> {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (n, unit) = s.split_at(split);
            let n: usize = n.parse().map_err(|_| format!("size {s:?}: no number"))?;
            let mult = match unit.trim() {
                "" | "B" => 1,
                "KiB" | "KB" | "k" => 1024,
                "MiB" | "MB" | "M" => 1024 * 1024,
                u => return Err(format!("size {s:?}: unit {u:?} is not B, KiB or MiB")),
            };
            Ok(n * mult)
        };
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n as usize)),
            Raw::S(s) => parse(&s).map(ByteSize).map_err(serde::de::Error::custom),
        }
    }
}

/// Where a route's requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A handler compiled into the gateway (see `native::NAMES`).
    Native(String),
    /// A WebAssembly plugin by name.
    Plugin(String),
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.split_once(':') {
            Some(("native", n)) if !n.is_empty() => Ok(Target::Native(n.to_string())),
            Some(("plugin", n)) if !n.is_empty() => Ok(Target::Plugin(n.to_string())),
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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub per_org: Option<Quota>,
    pub per_user: Option<Quota>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub per_org: Option<Quota>,
    #[serde(default)]
    pub per_user: Option<Quota>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteSpec {
    id: String,
    /// Required unless `internal`.
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    path: Option<String>,
    target: Target,
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
}

/// Access a plugin has to one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    Read,
    Write,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsSpec {
    /// table name -> "read" | "write".
    #[serde(default)]
    tables: HashMap<String, Access>,
    /// Outbound URL patterns: `scheme://host[:port]`, host may be `*.domain` or `*`, port `*`.
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    http_timeout_ms: Option<u64>,
    #[serde(default)]
    http_max_response: Option<ByteSize>,
    #[serde(default)]
    db_statement_timeout_ms: Option<u64>,
    #[serde(default)]
    db_max_rows: Option<u32>,
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

/// A webhook provider declared by `[providers.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderSpec {
    /// Id of the internal plugin route that processes this provider's events.
    route: String,
    /// For the `hmac-sha256` scheme: the header carrying the hex HMAC-SHA256 of the raw body.
    #[serde(default)]
    signature_header: Option<String>,
    /// For the `hmac-sha256` scheme: JSON pointers whose values, joined by `:`, make the event key.
    #[serde(default)]
    event_key: Vec<String>,
    /// A JSON pointer to the event type (informational, shown in event listings).
    #[serde(default)]
    event_type: Option<String>,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    retry_base_ms: Option<u32>,
}

/// A webhook provider, validated.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    /// The internal route whose plugin processes events.
    pub route: String,
    /// Lower-case header name (hmac-sha256 scheme); `None`: the provider signs with Standard
    /// Webhooks only.
    pub signature_header: Option<String>,
    pub event_key: Vec<String>,
    pub event_type: Option<String>,
    pub max_attempts: u32,
    pub retry_base_ms: u32,
    pub source: String,
}

/// A plugin binary declared by `[plugins.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginSpec {
    /// Path of the component, relative to the plugin directory (`GATEWAY_PLUGIN_DIR`).
    file: String,
    #[serde(default)]
    version: Option<String>,
}

/// One allowed outbound destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    pub scheme: String,
    /// `*` (any), `*.example.com` (subdomains) or an exact host.
    pub host: String,
    /// `None` = any port.
    pub port: Option<u16>,
}

impl HostPattern {
    pub fn parse(s: &str) -> std::result::Result<HostPattern, String> {
        let (scheme, rest) = s.split_once("://").ok_or_else(|| format!("host {s:?}: expected scheme://host[:port]"))?;
        if scheme != "http" && scheme != "https" {
            return Err(format!("host {s:?}: scheme must be http or https"));
        }
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') || rest.is_empty() {
            return Err(format!("host {s:?}: no path allowed"));
        }
        let (host, port) = if let Some(h) = rest.strip_prefix('[') {
            let (h, after) = h.split_once(']').ok_or_else(|| format!("host {s:?}: bad IPv6 literal"))?;
            (format!("[{h}]"), after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (rest.to_string(), None),
            }
        };
        let default_port = if scheme == "https" { 443 } else { 80 };
        let port = match port {
            None => Some(default_port),
            Some("*") => None,
            Some(p) => Some(p.parse().map_err(|_| format!("host {s:?}: bad port {p:?}"))?),
        };
        let host = host.to_ascii_lowercase();
        if host != "*" && host[host.starts_with("*.") as usize * 2..].contains('*') {
            return Err(format!("host {s:?}: wildcards only as `*` or a leading `*.`"));
        }
        Ok(HostPattern { scheme: scheme.to_string(), host, port })
    }

    /// Whether a wildcard is involved (private addresses need an exact host).
    pub fn is_exact(&self) -> bool {
        !self.host.contains('*')
    }

    pub fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        if self.scheme != scheme || self.port.is_some_and(|p| p != port) {
            return false;
        }
        match self.host.as_str() {
            "*" => true,
            h if h.starts_with("*.") => host.ends_with(&h[1..]) && host.len() > h.len() - 1,
            h => h == host,
        }
    }
}

/// What a route's plugin may reach, and how long it may take.
#[derive(Debug, Clone)]
pub struct Grants {
    pub tables: HashMap<String, Access>,
    pub hosts: Vec<HostPattern>,
    pub http_timeout: std::time::Duration,
    pub http_max_response: usize,
    pub db_statement_timeout_ms: u64,
    pub db_max_rows: u32,
}

/// Sandbox limits of a route's plugin.
#[derive(Debug, Clone, Copy)]
pub struct Sandbox {
    pub memory: usize,
    pub cpu: std::time::Duration,
    pub timeout: std::time::Duration,
}

pub const DEFAULT_PLUGIN_MEMORY: usize = 64 * 1024 * 1024;
pub const MAX_PLUGIN_MEMORY: usize = 256 * 1024 * 1024;

/// A declared plugin.
#[derive(Debug, Clone)]
pub struct PluginDecl {
    pub name: String,
    pub file: String,
    pub version: Option<String>,
    pub source: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    plugins: HashMap<String, PluginSpec>,
    #[serde(default)]
    plans: HashMap<String, PlanSpec>,
    #[serde(default)]
    providers: HashMap<String, ProviderSpec>,
    #[serde(default)]
    route: Vec<toml::Spanned<RouteSpec>>,
}

/// One segment of a path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    /// `{*name}`: the rest of the path, possibly empty; last segment only.
    Tail(String),
}

/// A path pattern such as `/v1/admin/orgs/{org_id}/tokens`.
#[derive(Debug, Clone)]
pub struct PathPattern {
    segments: Vec<Segment>,
}

impl PathPattern {
    pub fn parse(p: &str) -> std::result::Result<PathPattern, String> {
        if !p.starts_with('/') {
            return Err(format!("path {p:?} must start with /"));
        }
        let parts: Vec<&str> = p[1..].split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let seg = if let Some(inner) = part.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                if let Some(name) = inner.strip_prefix('*') {
                    if i + 1 != parts.len() {
                        return Err(format!("path {p:?}: {{*{name}}} must be last"));
                    }
                    Segment::Tail(name.to_string())
                } else if inner.is_empty() || !inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!("path {p:?}: bad parameter name {inner:?}"));
                } else {
                    Segment::Param(inner.to_string())
                }
            } else if part.contains(['{', '}']) {
                return Err(format!("path {p:?}: braces only around a whole segment"));
            } else {
                Segment::Literal(part.to_string())
            };
            segments.push(seg);
        }
        Ok(PathPattern { segments })
    }

    /// Matches `path`, returning the named parameters.
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let mut rest = path.strip_prefix('/')?;
        let mut params = Vec::new();
        for (i, seg) in self.segments.iter().enumerate() {
            let (part, next) = match seg {
                Segment::Tail(name) => {
                    params.push((name.clone(), rest.to_string()));
                    return Some(params);
                }
                _ => match rest.split_once('/') {
                    Some((part, next)) => (part, Some(next)),
                    None => (rest, None),
                },
            };
            match seg {
                Segment::Literal(l) if part != l => return None,
                Segment::Param(_) if part.is_empty() => return None,
                Segment::Param(name) => params.push((name.clone(), part.to_string())),
                _ => {}
            }
            match next {
                Some(n) => rest = n,
                None => {
                    return match self.segments.get(i + 1) {
                        None => Some(params),
                        Some(Segment::Tail(name)) => {
                            params.push((name.clone(), String::new()));
                            Some(params)
                        }
                        Some(_) => None,
                    }
                }
            }
        }
        None
    }
}

/// A route, validated.
#[derive(Debug, Clone)]
pub struct Route {
    pub id: String,
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
    pub grants: std::sync::Arc<Grants>,
    pub sandbox: Sandbox,
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

#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub per_org: Option<Quota>,
    pub per_user: Option<Quota>,
}

/// Everything loaded from the policy directory.
#[derive(Debug, Clone)]
pub struct PolicySet {
    pub routes: Vec<Route>,
    pub providers: HashMap<String, Provider>,
    pub plugins: HashMap<String, PluginDecl>,
    pub plans: HashMap<String, Plan>,
    pub default_plan: String,
}

/// The result of looking a request up.
pub enum Lookup<'a> {
    Found(&'a Route, Vec<(String, String)>),
    /// The path exists, with other methods.
    WrongMethod,
    NotFound,
}

pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// Upper bound for any route's `body_limit`.
pub const MAX_BODY_LIMIT: usize = 64 * 1024 * 1024;

impl PolicySet {
    /// Loads every `*.toml` in `dir` (sorted by name). `known_native` names the native handlers.
    pub fn load(dir: &Path, known_native: &[&str]) -> Result<PolicySet> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::Policy {
                file: dir.display().to_string(),
                reason: format!("cannot read policy directory: {e}"),
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        let mut sources = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|e| Error::Policy {
                file: f.display().to_string(),
                reason: e.to_string(),
            })?;
            sources.push((f.display().to_string(), text));
        }
        Self::from_sources(&sources, known_native)
    }

    /// Builds a set from `(file name, text)` pairs.
    pub fn from_sources(sources: &[(String, String)], known_native: &[&str]) -> Result<PolicySet> {
        let mut routes: Vec<Route> = Vec::new();
        let mut plans: HashMap<String, Plan> = HashMap::new();
        let mut plugins: HashMap<String, PluginDecl> = HashMap::new();
        let mut providers: HashMap<String, Provider> = HashMap::new();
        let mut default_plan: Option<(String, String)> = None;
        for (file, text) in sources {
            let fail = |line: Option<usize>, reason: String| Error::Policy {
                file: match line {
                    Some(l) => format!("{file}:{l}"),
                    None => file.clone(),
                },
                reason,
            };
            let spec: FileSpec = toml::from_str(text).map_err(|e| {
                let line = e.span().map(|s| line_of(text, s.start));
                fail(line, e.message().to_string())
            })?;
            let mut plugin_names: Vec<_> = spec.plugins.keys().cloned().collect();
            plugin_names.sort();
            for name in plugin_names {
                let p = &spec.plugins[&name];
                if let Some(other) = plugins.get(&name) {
                    return Err(fail(None, format!("plugin {name:?} already declared in {}", other.source)));
                }
                if !valid_name(&name) {
                    return Err(fail(None, format!("plugin name {name:?}: use lower-case letters, digits and -")));
                }
                plugins.insert(
                    name.clone(),
                    PluginDecl { name, file: p.file.clone(), version: p.version.clone(), source: file.clone() },
                );
            }
            let mut plan_names: Vec<_> = spec.plans.keys().cloned().collect();
            plan_names.sort();
            for name in plan_names {
                let p = &spec.plans[&name];
                if plans.contains_key(&name) {
                    return Err(fail(None, format!("plan {name:?} declared twice")));
                }
                if p.default {
                    if let Some((other, f)) = &default_plan {
                        return Err(fail(None, format!(
                            "plan {name:?} is default, but so is {other:?} ({f})"
                        )));
                    }
                    default_plan = Some((name.clone(), file.clone()));
                }
                plans.insert(name.clone(), Plan { name, per_org: p.per_org, per_user: p.per_user });
            }
            let mut provider_names: Vec<_> = spec.providers.keys().cloned().collect();
            provider_names.sort();
            for name in provider_names {
                let p = &spec.providers[&name];
                let bad = |reason: String| fail(None, format!("provider {name:?}: {reason}"));
                if let Some(other) = providers.get(&name) {
                    return Err(bad(format!("already declared in {}", other.source)));
                }
                if !valid_name(&name) {
                    return Err(bad("use lower-case letters, digits and -".into()));
                }
                for ptr in p.event_key.iter().chain(&p.event_type) {
                    if !ptr.starts_with('/') {
                        return Err(bad(format!("{ptr:?} is not a JSON pointer (starts with /)")));
                    }
                }
                let header = match &p.signature_header {
                    Some(h) => {
                        let h = h.to_ascii_lowercase();
                        if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                            return Err(bad(format!("signature_header {h:?} is not a header name")));
                        }
                        if p.event_key.is_empty() {
                            return Err(bad("signature_header needs event_key (JSON pointers to the message id and type)".into()));
                        }
                        Some(h)
                    }
                    None => None,
                };
                let max_attempts = p.max_attempts.unwrap_or(5);
                if !(1..=50).contains(&max_attempts) {
                    return Err(bad("max_attempts must be between 1 and 50".into()));
                }
                providers.insert(
                    name.clone(),
                    Provider {
                        name,
                        route: p.route.clone(),
                        signature_header: header,
                        event_key: p.event_key.clone(),
                        event_type: p.event_type.clone(),
                        max_attempts,
                        retry_base_ms: p.retry_base_ms.unwrap_or(1000).clamp(1, 3_600_000),
                        source: file.clone(),
                    },
                );
            }
            for spanned in spec.route {
                let line = line_of(text, spanned.span().start);
                let r = spanned.into_inner();
                let bad = |reason: String| fail(Some(line), format!("route {:?}: {reason}", r.id));
                let (method_text, path) = match (r.internal, &r.method, &r.path) {
                    (false, Some(m), Some(p)) => (m.clone(), p.clone()),
                    (false, _, _) => return Err(bad("method and path are required (or `internal = true`)".into())),
                    (true, None, None) => ("POST".to_string(), format!("/internal/{}", r.id)),
                    (true, _, _) => return Err(bad("an internal route has no method or path".into())),
                };
                let method = http::Method::from_bytes(method_text.to_ascii_uppercase().as_bytes())
                    .map_err(|_| bad(format!("method {method_text:?} is not an HTTP method")))?;
                let pattern = PathPattern::parse(&path).map_err(bad)?;
                if let Some(other) = routes.iter().find(|o| o.id == r.id) {
                    return Err(bad(format!("id already used at {}", other.source)));
                }
                if let Some(other) =
                    routes.iter().find(|o| !r.internal && !o.internal && o.method == method && o.path == path)
                {
                    return Err(bad(format!("{method} {path} already routed at {}", other.source)));
                }
                if r.internal && !matches!(r.target, Target::Plugin(_)) {
                    return Err(bad("an internal route must target a plugin".into()));
                }
                if r.auth == Auth::Webhook {
                    if r.target != Target::Native("webhook_ingress".into()) {
                        return Err(bad("auth = \"webhook\" is for target \"native:webhook_ingress\"".into()));
                    }
                    if !path.contains("{endpoint_id}") {
                        return Err(bad("a webhook route's path names {endpoint_id}".into()));
                    }
                } else if r.target == Target::Native("webhook_ingress".into()) {
                    return Err(bad("native:webhook_ingress needs auth = \"webhook\"".into()));
                }
                if let Target::Native(n) = &r.target {
                    if !known_native.contains(&n.as_str()) {
                        return Err(bad(format!(
                            "unknown native handler {n:?} (known: {})",
                            known_native.join(", ")
                        )));
                    }
                }
                if r.body_limit.is_some_and(|b| b.0 > MAX_BODY_LIMIT) {
                    return Err(bad(format!("body_limit above {} MiB", MAX_BODY_LIMIT >> 20)));
                }
                let is_plugin = matches!(r.target, Target::Plugin(_));
                if !is_plugin && (r.grants.is_some() || r.sandbox.is_some()) {
                    return Err(bad("grants and sandbox apply to plugin targets only".into()));
                }
                let g = r.grants.clone().unwrap_or_default();
                let mut hosts = Vec::new();
                for h in &g.hosts {
                    hosts.push(HostPattern::parse(h).map_err(&bad)?);
                }
                for t in g.tables.keys() {
                    if !valid_identifier(t) {
                        return Err(bad(format!("grant names table {t:?}, which is not a plain identifier")));
                    }
                }
                let grants = std::sync::Arc::new(Grants {
                    tables: g.tables,
                    hosts,
                    http_timeout: std::time::Duration::from_millis(g.http_timeout_ms.unwrap_or(5_000)),
                    http_max_response: g.http_max_response.map(|b| b.0).unwrap_or(1024 * 1024),
                    db_statement_timeout_ms: g.db_statement_timeout_ms.unwrap_or(2_000),
                    db_max_rows: g.db_max_rows.unwrap_or(1_000).max(1),
                });
                let sb = r.sandbox.clone().unwrap_or_default();
                let memory = sb.memory.map(|b| b.0).unwrap_or(DEFAULT_PLUGIN_MEMORY);
                if !(1024 * 1024..=MAX_PLUGIN_MEMORY).contains(&memory) {
                    return Err(bad(format!("sandbox memory must be between 1MiB and {}MiB", MAX_PLUGIN_MEMORY >> 20)));
                }
                let sandbox = Sandbox {
                    memory,
                    cpu: std::time::Duration::from_millis(sb.cpu_ms.unwrap_or(200).max(1)),
                    timeout: std::time::Duration::from_millis(sb.timeout_ms.unwrap_or(10_000).max(1)),
                };
                if r.scope == Scope::Platform && r.roles.iter().any(|x| *x != Role::SuperAdmin) {
                    return Err(bad("platform routes are for super_admin only".into()));
                }
                if r.scope == Scope::Tenant && r.roles.is_empty() && r.auth == Auth::Bearer && !r.internal {
                    return Err(bad("a tenant route needs at least one role".into()));
                }
                routes.push(Route {
                    source: format!("{file}:{line}"),
                    id: r.id,
                    method,
                    path,
                    pattern,
                    target: r.target,
                    roles: r.roles,
                    scope: r.scope,
                    auth: r.auth,
                    internal: r.internal,
                    body_limit: r.body_limit.map(|b| b.0).unwrap_or(DEFAULT_BODY_LIMIT),
                    idempotency: r.idempotency,
                    // A webhook body is the provider's bytes, signed as they are: never read as
                    // the caller's JSON (its `org_id` fields are the provider's business).
                    body: if r.auth == Auth::Webhook { BodyKind::Raw } else { r.body },
                    rate_limit: r.rate_limit,
                    grants,
                    sandbox,
                });
            }
        }
        let Some((default_plan, _)) = default_plan else {
            return Err(Error::Policy {
                file: sources.first().map(|s| s.0.clone()).unwrap_or_else(|| "policies".into()),
                reason: "no plan is marked `default = true`".into(),
            });
        };
        for r in &routes {
            if let Target::Plugin(p) = &r.target {
                if !plugins.contains_key(p) {
                    return Err(Error::Policy {
                        file: r.source.clone(),
                        reason: format!("route {:?}: plugin {p:?} is not declared in any [plugins.*]", r.id),
                    });
                }
            }
            for plan in r.rate_limit.keys() {
                if !plans.contains_key(plan) {
                    return Err(Error::Policy {
                        file: r.source.clone(),
                        reason: format!("route {:?}: rate_limit names unknown plan {plan:?}", r.id),
                    });
                }
            }
        }
        for p in providers.values() {
            let ok = routes.iter().any(|r| r.id == p.route && r.internal);
            if !ok {
                return Err(Error::Policy {
                    file: p.source.clone(),
                    reason: format!("provider {:?}: route {:?} is not an internal plugin route", p.name, p.route),
                });
            }
        }
        Ok(PolicySet { routes, providers, plugins, plans, default_plan })
    }

    pub fn lookup(&self, method: &http::Method, path: &str) -> Lookup<'_> {
        let mut path_seen = false;
        for r in self.routes.iter().filter(|r| !r.internal) {
            if let Some(params) = r.pattern.matches(path) {
                if r.method == *method {
                    return Lookup::Found(r, params);
                }
                path_seen = true;
            }
        }
        if path_seen {
            Lookup::WrongMethod
        } else {
            Lookup::NotFound
        }
    }

    pub fn plan(&self, name: &str) -> Option<&Plan> {
        self.plans.get(name)
    }

    pub fn route(&self, id: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.id == id)
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A plain SQL identifier: lower-case letters, digits and `_`, not starting with a digit.
pub fn valid_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.as_bytes()[0].is_ascii_digit()
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLANS: &str = "[plans.standard]\ndefault = true\nper_user = { rate = \"20/s\" }\n";

    fn load(route: &str) -> Result<PolicySet> {
        PolicySet::from_sources(
            &[("plans.toml".into(), PLANS.into()), ("r.toml".into(), route.into())],
            &["whoami"],
        )
    }

    #[test]
    fn patterns_match_params_and_tails() {
        let p = PathPattern::parse("/v1/orgs/{org_id}/tokens").unwrap();
        assert_eq!(p.matches("/v1/orgs/abc/tokens").unwrap(), vec![("org_id".into(), "abc".into())]);
        assert!(p.matches("/v1/orgs//tokens").is_none());
        assert!(p.matches("/v1/orgs/abc/tokens/x").is_none());
        let t = PathPattern::parse("/v1/auth/tokens/{*rest}").unwrap();
        assert_eq!(t.matches("/v1/auth/tokens/a/b").unwrap()[0].1, "a/b");
        assert!(PathPattern::parse("/a/{*x}/b").is_err());
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = load("[[route]]\nid = \"w\"\nmethod = \"GET\"\npath = \"/v1/whoami\"\ntarget = \"native:nope\"\nroles = [\"member\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("r.toml:1") && e.contains("nope"), "{e}");
        let e = load("\n\n[[route]]\nid = \"w\"\nmethod = \"GET\"\npath = \"/v1/whoami\"\ntarget = \"native:whoami\"\nroles = [\"root\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("r.toml:8") && e.contains("root"), "{e}");
        let e = load("[[route]]\nid = \"w\"\nmethod = \"GET\"\npath = \"/v1/whoami\"\ntarget = \"native:whoami\"\nroles = [\"member\"]\n[route.rate_limit.standard]\nper_org = { rate = \"5/fortnight\" }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("r.toml:8") && e.contains("fortnight"), "{e}");
    }

    #[test]
    fn host_patterns() {
        let p = HostPattern::parse("https://api.example.com").unwrap();
        assert!(p.matches("https", "api.example.com", 443));
        assert!(!p.matches("https", "api.example.com", 8443));
        assert!(!p.matches("http", "api.example.com", 443));
        let w = HostPattern::parse("https://*.example.com:*").unwrap();
        assert!(w.matches("https", "a.b.example.com", 1));
        assert!(!w.matches("https", "example.com", 443));
        assert!(!w.matches("https", "evilexample.com", 443));
        assert!(!w.is_exact());
        let l = HostPattern::parse("http://127.0.0.1:*").unwrap();
        assert!(l.is_exact() && l.matches("http", "127.0.0.1", 9));
        let v6 = HostPattern::parse("http://[::1]:8080").unwrap();
        assert!(v6.matches("http", "[::1]", 8080));
        assert!(HostPattern::parse("ftp://x").is_err());
        assert!(HostPattern::parse("https://a.*.com").is_err());
        assert!(HostPattern::parse("https://x/path").is_err());
    }

    #[test]
    fn lookup_distinguishes_wrong_method() {
        let set = load("[[route]]\nid = \"w\"\nmethod = \"GET\"\npath = \"/v1/whoami\"\ntarget = \"native:whoami\"\nroles = [\"member\"]\n").unwrap();
        assert!(matches!(set.lookup(&http::Method::GET, "/v1/whoami"), Lookup::Found(..)));
        assert!(matches!(set.lookup(&http::Method::POST, "/v1/whoami"), Lookup::WrongMethod));
        assert!(matches!(set.lookup(&http::Method::GET, "/v1/who"), Lookup::NotFound));
        assert_eq!(set.default_plan, "standard");
    }
}
