//! Phase 4: hand the checked request to its target: a native handler or a WebAssembly plugin,
//! and turn a plugin's [`Outcome`] into HTTP (status, headers it may set, error codes).

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::Value;

use crate::error::{ApiError, Code};
use crate::native;
use crate::plugin::bindings::types::{HandlerError, Header, Response};
use crate::admission::Refused;
use crate::plugin::Outcome;
use crate::policy::routes::{Exposure, CREDENTIAL_REQUEST_HEADERS, GUARDED_RESPONSE_HEADERS};
use crate::phases::guard::Caller;
use crate::policy::{Route, Target};
use crate::state::AppState;

/// A request that passed the guards.
pub struct Call<'a> {
    pub state: &'a AppState,
    pub route: &'a Route,
    pub params: Vec<(String, String)>,
    pub caller: Caller,
    pub request_id: &'a str,
    /// The client's address (the console's sign-in counts failed tokens per address).
    pub peer: std::net::IpAddr,
    pub method: http::Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub json: Option<Value>,
    /// Set on webhook routes, after the `verify` phase accepted the signature.
    pub verified: Option<super::verify::Verified>,
}

impl Call<'_> {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A query-string value (`?name=value`; `Some("")` for a bare `?name`). Not
    /// percent-decoded: native routes take plain tokens only.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.as_deref()?.split('&').find_map(|kv| match kv.split_once('=') {
            Some((k, v)) if k == name => Some(v),
            None if kv == name => Some(""),
            _ => None,
        })
    }
}

/// A successful answer, before the wire format is applied.
pub struct Reply {
    pub status: StatusCode,
    pub content_type: HeaderValue,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl Reply {
    pub fn json(status: StatusCode, v: Value) -> Reply {
        Reply {
            status,
            content_type: HeaderValue::from_static("application/json"),
            headers: Vec::new(),
            body: Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
        }
    }
    pub fn no_content() -> Reply {
        Reply {
            status: StatusCode::NO_CONTENT,
            content_type: HeaderValue::from_static("application/json"),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }
}

pub async fn dispatch(call: Call<'_>) -> Result<Reply, ApiError> {
    match &call.route.target {
        Target::Native(handler) => native::call(*handler, call).await,
        Target::Plugin(name) => plugin(name, call).await,
    }
}

/// `/healthz`: the gateway's own health (see [`crate::health`]); never touches a pool.
pub fn healthz(state: &AppState) -> Result<Reply, ApiError> {
    state.health.live().map_err(not_ready)?;
    Ok(Reply::json(StatusCode::OK, serde_json::json!({"ok": true})))
}

/// `/readyz`: whether new work can be served, from the prober's last answer; never waits.
pub fn readyz(state: &AppState) -> Result<Reply, ApiError> {
    state.health.ready().map_err(not_ready)?;
    Ok(Reply::json(StatusCode::OK, serde_json::json!({"ready": true, "routes": state.routing().policies.routes.len()})))
}

fn not_ready(why: crate::health::NotReady) -> ApiError {
    ApiError::new(Code::Unavailable, why.message()).with_header("retry-after", "1")
}

async fn plugin(name: &str, call: Call<'_>) -> Result<Reply, ApiError> {
    use crate::plugin::bindings::types::Request;
    let Some(loaded) = call.state.plugin(name) else {
        let registry_only = call.state.routing().policies.plugins.get(name).is_some_and(|d| d.file.is_none());
        let why = if registry_only {
            format!("plugin {name:?} is registry-only and has no active version (push one and activate it)")
        } else {
            format!("plugin {name:?} is not loaded")
        };
        return Err(ApiError::new(Code::Unavailable, why));
    };
    let org = call.caller.org.ok_or_else(|| ApiError::new(Code::Internal, "plugin route without an org"))?;
    let limits = call
        .caller
        .plan
        .as_deref()
        .and_then(|p| call.state.routing().policies.plan(p).map(|p| p.plugins))
        .unwrap_or_default();
    let permit = call.state.admission.admit(org, limits).await.map_err(|r| refused(&call.state.metrics, r))?;
    let exposure = &call.route.exposure;
    let headers = call
        .headers
        .iter()
        .filter(|(k, _)| passed_to_plugin(k.as_str(), exposure))
        .map(|(k, v)| Header { name: k.as_str().to_string(), value: String::from_utf8_lossy(v.as_bytes()).into_owned() })
        .collect();
    let request = Request {
        method: call.method.as_str().to_string(),
        path: call.path.clone(),
        params: call.params.clone(),
        query: call.query.clone().unwrap_or_default(),
        headers,
        body: call.body.to_vec(),
    };
    let (schema, grants) = call.state.plugin_grants(call.route, name);
    let inv = crate::plugin::Invocation {
        label: &call.route.id,
        grants,
        sandbox: call.route.sandbox,
        pool: &call.state.plugin_pool,
        schema,
        org,
        user: call.caller.user,
        role: call.caller.role,
        request_id: call.request_id,
        request,
        before_commit: chain_hook(call.route),
        credentials: Some(call.state.providers.clone()),
    };
    let started = std::time::Instant::now();
    let (outcome, cpu) = call.state.runtime.invoke_metered(&loaded, inv).await;
    call.state.metrics.plugin_invocation(&loaded.name, &loaded.version, outcome.kind(), started.elapsed());
    if !matches!(outcome, Outcome::Response(_)) {
        call.state.console.hourly.plugin_failed(org);
    }
    permit.charge(cpu);
    drop(permit);
    let answered = matches!(outcome, Outcome::Response(_));
    let reply = plugin_reply_within(exposure, &loaded.version, outcome);
    if let (true, Err(e)) = (answered, &reply) {
        // An answer the gateway cannot pass on: the message is the gateway's own words.
        let failure = crate::plugin::failures::Failure {
            at: chrono::Utc::now(),
            request_id: call.request_id.to_string(),
            org_id: org,
            route: call.route.id.to_string(),
            version: loaded.version.clone(),
            outcome: "invalid_answer".into(),
            detail: e.message.clone(),
            not_granted: None,
        };
        tracing::warn!(request_id = %call.request_id, org_id = %org, plugin = %loaded.name, version = %loaded.version,
            route = %call.route.id, outcome = "invalid_answer", detail = %failure.detail, "plugin_failed");
        call.state.runtime.failures.record(&loaded.name, failure);
    }
    reply
}

/// A route's fail-soft chain (docs/optimizer.md): after a 2xx, one job per step, in the
/// plugin's own transaction (so they exist exactly when its writes do).
fn chain_hook(route: &crate::policy::Route) -> Option<crate::plugin::BeforeCommit<'static>> {
    if route.chain.is_empty() {
        return None;
    }
    let (steps, id) = (route.chain.clone(), route.id.clone());
    Some(Box::new(move |tx, answer| {
        let event = match (200..=299).contains(&answer.status) {
            true => crate::chain::ChainEvent::from_route_answer(&id, &answer.body),
            false => None,
        };
        Box::pin(async move {
            if let Some(ev) = event {
                crate::chain::enqueue(tx, &steps, &ev, None).await?;
            }
            Ok(true)
        })
    }))
}

/// The gateway's own credential never reaches a plugin; the caller's other credentials only
/// where the route passes them on.
fn passed_to_plugin(name: &str, exposure: &Exposure) -> bool {
    name != "authorization" && (!CREDENTIAL_REQUEST_HEADERS.contains(&name) || exposure.pass_headers.iter().any(|p| p == name))
}

fn refused(metrics: &crate::metrics::Metrics, r: Refused) -> ApiError {
    let (scope, message, retry) = match r {
        Refused::Concurrency => ("plugin_concurrency", "too many of this org's plugin invocations are running", 1),
        Refused::Cpu { retry_after } => {
            ("plugin_cpu", "this org's plugin CPU budget is spent", retry_after.as_secs_f64().ceil().max(1.0) as u64)
        }
    };
    metrics.ratelimited(scope);
    ApiError::new(Code::RateLimited, message).with_header("retry-after", retry.to_string())
}

/// What a plugin invocation's outcome means to an HTTP client, under the default response
/// rules (no guarded headers, 1 MiB).
pub fn plugin_reply(version: &str, outcome: Outcome) -> Result<Reply, ApiError> {
    plugin_reply_within(&Exposure::default(), version, outcome)
}

/// [`plugin_reply`] under a route's own response rules.
pub fn plugin_reply_within(exposure: &Exposure, version: &str, outcome: Outcome) -> Result<Reply, ApiError> {
    match outcome {
        Outcome::Response(r) => plugin_response(exposure, version, r),
        Outcome::HandlerError(e) => Err(handler_error(e)),
        Outcome::Trap(_) | Outcome::AnsweredAfterFailedStatement => Err(ApiError::new(Code::PluginFailed, "plugin failed")),
        Outcome::CpuDeadline => Err(ApiError::new(Code::PluginTimeout, "plugin exceeded its CPU deadline")),
        Outcome::MemoryExhausted => Err(ApiError::new(Code::PluginResourceExhausted, "plugin exceeded its memory limit")),
        Outcome::WallTimeout => Err(ApiError::new(Code::PluginTimeout, "plugin exceeded its time limit")),
        Outcome::Busy => Err(ApiError::new(Code::Unavailable, "no room for another plugin instance; retry shortly")
            .with_header("retry-after", "1")),
        Outcome::CommitRefused => Err(ApiError::new(Code::Conflict, "the invocation's bookkeeping refused to commit")),
        Outcome::Database(e) => Err(ApiError::from(e)),
    }
}

/// Response headers a plugin may not set: framing and the gateway's own.
const RESERVED_RESPONSE: &[&str] = &["content-length", "transfer-encoding", "connection", "x-request-id", "x-plugin-version"];
/// Headers a plugin answer may carry, and their total size.
const MAX_RESPONSE_HEADERS: usize = 64;
const MAX_RESPONSE_HEADER_BYTES: usize = 16 * 1024;

fn plugin_response(exposure: &Exposure, version: &str, r: Response) -> Result<Reply, ApiError> {
    let status = StatusCode::from_u16(r.status)
        .ok()
        .filter(|s| s.as_u16() >= 200)
        .ok_or_else(|| ApiError::new(Code::PluginFailed, "plugin returned an invalid status"))?;
    if r.body.len() > exposure.response_limit {
        return Err(ApiError::new(Code::PluginFailed, "plugin answer exceeds the route's response_limit"));
    }
    let header_bytes: usize = r.headers.iter().map(|h| h.name.len() + h.value.len()).sum();
    if r.headers.len() > MAX_RESPONSE_HEADERS || header_bytes > MAX_RESPONSE_HEADER_BYTES {
        return Err(ApiError::new(Code::PluginFailed, "plugin answer has too many or too large headers"));
    }
    let mut content_type = HeaderValue::from_static("application/octet-stream");
    let mut headers = Vec::new();
    for Header { name, value } in r.headers {
        let name = name.to_ascii_lowercase();
        if RESERVED_RESPONSE.contains(&name.as_str()) {
            continue;
        }
        if GUARDED_RESPONSE_HEADERS.contains(&name.as_str()) && !exposure.response_headers.contains(&name) {
            tracing::debug!(header = %name, "plugin response header not allowed on this route; dropped");
            continue;
        }
        let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) else {
            return Err(ApiError::new(Code::PluginFailed, "plugin returned an invalid header"));
        };
        if n == http::header::CONTENT_TYPE {
            content_type = v;
        } else {
            headers.push((n, v));
        }
    }
    if let Ok(v) = HeaderValue::from_str(version) {
        headers.push((HeaderName::from_static("x-plugin-version"), v));
    }
    Ok(Reply { status, content_type, headers, body: Bytes::from(r.body) })
}

fn handler_error(e: HandlerError) -> ApiError {
    use crate::plugin::bindings::types::Problem;
    let with = |code: Code, p: Problem| {
        let mut err = ApiError::new(code, p.message);
        if let Some(c) = p.code.filter(|c| valid_code(c)) {
            err = err.with_code(c);
        }
        if let Some(d) = p.details {
            err = err.with_details(serde_json::from_str(&d).unwrap_or(serde_json::Value::String(d)));
        }
        err
    };
    match e {
        HandlerError::Invalid(p) => with(Code::ValidationFailed, p),
        HandlerError::Forbidden(p) => with(Code::Forbidden, p),
        HandlerError::NotFound(_) => ApiError::not_found(),
        HandlerError::Conflict(p) => with(Code::Conflict, p),
        HandlerError::Unprocessable(p) => with(Code::Unprocessable, p),
        HandlerError::Unavailable(m) => ApiError::new(Code::Unavailable, m),
        HandlerError::Failed(m) => ApiError::new(Code::PluginFailed, m),
    }
}

/// Plugin-chosen codes: `SCREAMING_SNAKE_CASE`, 3 to 64 characters.
fn valid_code(c: &str) -> bool {
    (3..=64).contains(&c.len())
        && c.as_bytes()[0].is_ascii_uppercase()
        && c.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}
