//! The operator console: server-rendered HTML under `/console` for super-admins (orgs and
//! their tokens, the plugin registry, webhook dead letters, the job queue, per-org counts).
//!
//! Its routes are ordinary policy routes (`policies/console.toml`, `auth = "console"`,
//! `target = "native:console"`), so the pipeline's head checks, body caps, deadlines, access
//! log and metrics apply to them as to any route. What differs is the credential: a session
//! cookie, not a bearer token. A super-admin token posted to the sign-in form is exchanged
//! for a random session id kept here, in memory, with an expiry; the token is neither stored
//! nor logged. Every form carries the session's CSRF token, checked on every POST (the
//! sign-in form too: a short-lived anonymous session carries it). Sessions are per replica:
//! behind a load balancer the console needs sticky sessions (docs/operations.md).

mod pages;

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use rand::RngCore;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::error::{ApiError, Code};
use crate::phases::{Call, Reply};
use crate::policy::Route;
use crate::role::Role;
use crate::state::AppState;

pub use crate::auth::Caller;

/// The session cookie's name.
pub const COOKIE: &str = "gateway_console";
/// How long a signed-in session lasts, however active.
const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// How long a sign-in form stays usable.
const ANONYMOUS_TTL: Duration = Duration::from_secs(15 * 60);
/// Sessions kept at most (signed-in and anonymous together); the oldest go first.
const MAX_SESSIONS: usize = 10_000;
/// Orgs the hourly counts track at most: memory stays bounded whatever the traffic.
const MAX_COUNTED_ORGS: usize = 10_000;

#[derive(Default)]
pub struct Console {
    sessions: Mutex<HashMap<String, Session>>,
    pub hourly: Hourly,
}

#[derive(Clone)]
pub struct Session {
    pub csrf: String,
    /// The super-admin token that signed in; `None` before sign-in.
    pub token_id: Option<Uuid>,
    /// That token's SHA-256 digest: each request checks the token is still live.
    digest: Option<[u8; 32]>,
    expires: Instant,
}

fn random_id() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl Console {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live session named by the request's cookie.
    pub fn session(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = cookie(headers)?;
        let mut s = self.lock();
        match s.get(&id) {
            Some(x) if x.expires > Instant::now() => Some((id, x.clone())),
            Some(_) => {
                s.remove(&id);
                None
            }
            None => None,
        }
    }

    /// A new session (anonymous, or signed in by `token_id`); returns its id.
    fn open(&self, signed_in: Option<(Uuid, [u8; 32])>) -> (String, Session) {
        let ttl = if signed_in.is_some() { SESSION_TTL } else { ANONYMOUS_TTL };
        let session = Session {
            csrf: random_id(),
            token_id: signed_in.map(|s| s.0),
            digest: signed_in.map(|s| s.1),
            expires: Instant::now() + ttl,
        };
        let id = random_id();
        let mut s = self.lock();
        if s.len() >= MAX_SESSIONS {
            let now = Instant::now();
            s.retain(|_, x| x.expires > now);
            // Still full: drop the sessions closest to expiring.
            while s.len() >= MAX_SESSIONS {
                let Some(k) = s.iter().min_by_key(|(_, x)| x.expires).map(|(k, _)| k.clone()) else { break };
                s.remove(&k);
            }
        }
        s.insert(id.clone(), session.clone());
        (id, session)
    }

    fn close(&self, id: &str) {
        self.lock().remove(id);
    }
}

/// The session id from a `Cookie` header (there may be several headers).
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, v)| *k == COOKIE && v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|(_, v)| v.to_string())
}

/// The guard for `auth = "console"` routes. A route with roles (every page but sign-in and
/// the stylesheet) needs a signed-in session whose token is still a live super-admin's (a
/// revoked token ends its sessions): the caller is then that token. A route without roles is
/// open: its caller is an anonymous member of no org, and its handler grants nothing on that.
pub async fn guard(state: &AppState, route: &Route, headers: &HeaderMap, peer: IpAddr) -> Result<Caller, ApiError> {
    let anonymous = Caller { role: Role::Member, token_id: Uuid::nil(), user: None, org: None, plan: None, endpoint: None };
    if route.roles.is_empty() {
        if let Some(wait) = state.strangers.blocked(peer) {
            state.metrics.ratelimited("unknown_credential");
            return Err(ApiError::new(Code::RateLimited, "too many unknown credentials from this address")
                .with_header("retry-after", (wait.as_secs_f64().ceil() as u64).max(1).to_string()));
        }
        return Ok(anonymous);
    }
    let signed_out = || ApiError::new(Code::Unauthenticated, "sign in to the console");
    let Some((id, Session { token_id: Some(token_id), digest: Some(digest), .. })) = state.console.session(headers) else {
        return Err(signed_out());
    };
    match state.directory.authenticate_digest(&state.pool, digest).await? {
        Some(p) if p.role == Role::SuperAdmin && p.token_id == token_id => {
            Ok(Caller { role: Role::SuperAdmin, token_id, ..anonymous })
        }
        _ => {
            state.console.close(&id);
            Err(signed_out())
        }
    }
}

/// The answer to a console page without a session.
pub fn to_sign_in() -> Reply {
    redirect("/console/sign-in")
}

fn security_headers(mut headers: Vec<(HeaderName, HeaderValue)>) -> Vec<(HeaderName, HeaderValue)> {
    headers.extend([
        (
            http::header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        ),
        (http::header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (http::header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (http::header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (http::header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ]);
    headers
}

fn redirect(to: &'static str) -> Reply {
    redirect_to(to.to_string(), Vec::new())
}

fn redirect_to(to: String, mut headers: Vec<(HeaderName, HeaderValue)>) -> Reply {
    if let Ok(v) = HeaderValue::from_str(&to) {
        headers.push((http::header::LOCATION, v));
    }
    Reply {
        status: StatusCode::SEE_OTHER,
        content_type: HeaderValue::from_static("text/plain; charset=utf-8"),
        headers: security_headers(headers),
        body: Bytes::new(),
    }
}

fn html(status: StatusCode, page: maud::Markup, headers: Vec<(HeaderName, HeaderValue)>) -> Reply {
    Reply {
        status,
        content_type: HeaderValue::from_static("text/html; charset=utf-8"),
        headers: security_headers(headers),
        body: Bytes::from(page.into_string()),
    }
}

/// `Set-Cookie` for a session: HttpOnly, SameSite=Strict, Path=/console, Secure when the
/// gateway's public URL is https.
fn set_cookie(state: &AppState, id: &str, ttl: Duration) -> (HeaderName, HeaderValue) {
    let secure = if state.public_url().starts_with("https://") { "; Secure" } else { "" };
    let v = format!("{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{secure}", ttl.as_secs());
    (http::header::SET_COOKIE, HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("")))
}

fn clear_cookie(state: &AppState) -> (HeaderName, HeaderValue) {
    set_cookie(state, "", Duration::ZERO)
}

/// A POSTed form's fields.
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(body: &[u8]) -> Form {
        Form(form_urlencoded::parse(body).into_owned().collect())
    }
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Whether the form's CSRF token is the session's (constant time).
fn csrf_ok(session: &Session, form: &Form) -> bool {
    form.get("csrf").is_some_and(|t| bool::from(t.as_bytes().ct_eq(session.csrf.as_bytes())))
}

fn refused_csrf() -> Reply {
    html(StatusCode::FORBIDDEN, pages::message("Refused", "The form's CSRF token does not match your session. Reload the page and try again."), Vec::new())
}

/// Serves every `native:console` route, by its id in `policies/console.toml`.
pub async fn handle(call: Call<'_>) -> Result<Reply, ApiError> {
    let id: &str = &call.route.id;
    match id {
        "console.style" => Ok(Reply {
            status: StatusCode::OK,
            content_type: HeaderValue::from_static("text/css; charset=utf-8"),
            headers: security_headers(vec![(http::header::CACHE_CONTROL, HeaderValue::from_static("max-age=300"))]),
            body: Bytes::from_static(include_bytes!("style.css")),
        }),
        "console.sign_in_form" => sign_in_form(&call),
        "console.sign_in" => sign_in(&call).await,
        _ => {
            // Every other route has roles: the guard found a signed-in session.
            let Some((sid, session)) = call.state.console.session(&call.headers) else {
                return Ok(to_sign_in());
            };
            if call.method == http::Method::POST {
                let form = Form::parse(&call.body);
                if !csrf_ok(&session, &form) {
                    tracing::warn!(route = id, "console_csrf_refused");
                    return Ok(refused_csrf());
                }
                post(&call, id, &sid, &form).await
            } else {
                let page = pages::get(&call, id, &session).await?;
                Ok(html(StatusCode::OK, page, Vec::new()))
            }
        }
    }
}

fn sign_in_form(call: &Call<'_>) -> Result<Reply, ApiError> {
    if let Some((_, Session { token_id: Some(_), .. })) = call.state.console.session(&call.headers) {
        return Ok(redirect("/console/orgs"));
    }
    let (sid, session) = match call.state.console.session(&call.headers) {
        Some(s) => s,
        None => call.state.console.open(None),
    };
    let cookie = set_cookie(call.state, &sid, ANONYMOUS_TTL);
    Ok(html(StatusCode::OK, pages::sign_in(&session.csrf, None), vec![cookie]))
}

async fn sign_in(call: &Call<'_>) -> Result<Reply, ApiError> {
    let form = Form::parse(&call.body);
    let Some((sid, session)) = call.state.console.session(&call.headers) else {
        return Ok(refused_csrf());
    };
    if !csrf_ok(&session, &form) {
        tracing::warn!(route = "console.sign_in", "console_csrf_refused");
        return Ok(refused_csrf());
    }
    let token = form.get("token").map(str::trim).filter(|t| !t.is_empty() && t.len() <= 256);
    let principal = match token {
        Some(t) => call.state.directory.authenticate(&call.state.pool, t).await?,
        None => None,
    };
    match principal {
        Some(p) if p.role == Role::SuperAdmin => {
            // A fresh id on sign-in: an id planted before it is worth nothing after.
            call.state.console.close(&sid);
            let digest = crate::auth::digest(token.unwrap_or_default());
            let (new_id, _) = call.state.console.open(Some((p.token_id, digest)));
            tracing::info!(token_id = %p.token_id, "console_signed_in");
            Ok(redirect_to("/console/orgs".into(), vec![set_cookie(call.state, &new_id, SESSION_TTL)]))
        }
        other => {
            if other.is_none() {
                call.state.strangers.failed(call.peer);
            }
            tracing::warn!("console_sign_in_refused");
            Ok(html(
                StatusCode::UNAUTHORIZED,
                pages::sign_in(&session.csrf, Some("That is not a live super-admin token.")),
                Vec::new(),
            ))
        }
    }
}

fn back_to(path: String) -> Result<Reply, ApiError> {
    Ok(redirect_to(path, Vec::new()))
}

async fn post(call: &Call<'_>, id: &str, sid: &str, form: &Form) -> Result<Reply, ApiError> {
    let state = call.state;
    let actor = Some(call.caller.token_id);
    match id {
        "console.sign_out" => {
            state.console.close(sid);
            Ok(redirect_to("/console/sign-in".into(), vec![clear_cookie(state)]))
        }
        "console.token_revoke" => {
            let token = uuid(call, "token_id")?;
            let org = form.get("org").and_then(|o| Uuid::parse_str(o).ok());
            crate::ops::revoke_token(&state.pool, token).await?;
            tracing::info!(token_id = %token, actor = ?actor, "console_token_revoked");
            back_to(org.map_or("/console/orgs".into(), |o| format!("/console/orgs/{o}")))
        }
        "console.plugin_rollback" => {
            let name = plugin_name(call)?;
            let (from, to) = crate::registry::rollback(&state.pool, name, actor).await?;
            crate::registry::sync(state, Some(name)).await?;
            back_to(format!("/console/plugins?done={name}:{}:{}", from.unwrap_or(0), to.unwrap_or(0)))
        }
        "console.plugin_activate" => {
            let name = plugin_name(call)?;
            let version = form
                .get("version")
                .and_then(|v| v.parse::<i32>().ok())
                .filter(|v| *v > 0)
                .ok_or_else(|| ApiError::invalid("version", "must be a positive integer"))?;
            let (from, to) = crate::registry::activate(&state.pool, &state.routing().policies, name, version, actor).await?;
            crate::registry::sync(state, Some(name)).await?;
            back_to(format!("/console/plugins?done={name}:{}:{to}", from.unwrap_or(0)))
        }
        "console.event_replay" => {
            let org = uuid(call, "org_id")?;
            let event = uuid(call, "event_id")?;
            let mut tx = crate::db::begin_tenant(&state.pool, org, Role::SuperAdmin.into()).await?;
            if !crate::db::webhooks::replay(&mut tx, event).await? {
                let exists = crate::db::webhooks::event(&mut tx, event).await?.is_some();
                return Err(if exists { ApiError::new(Code::Conflict, "only dead events can be replayed") } else { ApiError::not_found() });
            }
            tx.commit().await?;
            tracing::info!(org_id = %org, event_id = %event, "webhook_event_replayed");
            back_to(format!("/console/orgs/{org}?replayed={event}"))
        }
        "console.approval_approve" | "console.approval_reject" => review(call, id == "console.approval_approve", form).await,
        _ => Err(ApiError::not_found()),
    }
}

/// Approves or rejects a proposed change inside its org, through `crate::optimizer` (the
/// tenant routes' path), as `super_admin:<token id>`. A refusal (expired, superseded, no longer
/// proposed) keeps what it records and returns to the queue with a notice, not an error page.
async fn review(call: &Call<'_>, approve: bool, form: &Form) -> Result<Reply, ApiError> {
    let state = call.state;
    let org = uuid(call, "org_id")?;
    let change = uuid(call, "optimization_id")?;
    let reason = match form.get("reason").map(|r| r.replace("\r\n", "\n")) {
        Some(r) if !r.trim().is_empty() => {
            let r = r.trim().to_string();
            if r.chars().count() > 500 || r.chars().any(|c| c.is_control() && c != '\n') {
                return Err(ApiError::invalid("reason", "must be at most 500 characters, without control characters"));
            }
            Some(r)
        }
        _ => None,
    };
    let actor = format!("super_admin:{}", call.caller.token_id);
    let mut tx = crate::db::begin_tenant(&state.pool, org, Role::SuperAdmin.into()).await?;
    let done = if approve {
        crate::optimizer::approve(&mut tx, &crate::optimizer::Retries::of(state), change, &actor).await
    } else {
        crate::optimizer::reject(&mut tx, change, &actor, reason.as_deref()).await
    };
    let outcome = match done {
        Ok(_) => {
            tx.commit().await?;
            "done"
        }
        Err(refused @ crate::optimizer::Refused::Conflict { .. }) => {
            if refused.commit() {
                tx.commit().await?;
            } else {
                let _ = tx.rollback().await;
            }
            "refused"
        }
        Err(refused) => {
            let _ = tx.rollback().await;
            return Err(refused.into_api());
        }
    };
    tracing::info!(org_id = %org, optimization_id = %change, approve, outcome, "console_change_reviewed");
    back_to(format!("/console/approvals?{outcome}={org}:{change}"))
}

fn uuid(call: &Call<'_>, name: &str) -> Result<Uuid, ApiError> {
    call.param(name).and_then(|v| Uuid::parse_str(v).ok()).ok_or_else(ApiError::not_found)
}

fn plugin_name<'a>(call: &'a Call<'_>) -> Result<&'a str, ApiError> {
    call.param("name").ok_or_else(ApiError::not_found)
}

/// Rate-limited requests and failed plugin invocations per org, by minute over the last hour,
/// in memory (this replica's), for the console. Bounded: at most [`MAX_COUNTED_ORGS`] orgs,
/// 60 buckets each.
#[derive(Default)]
pub struct Hourly {
    orgs: Mutex<HashMap<Uuid, VecDeque<Bucket>>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    minute: u64,
    counts: HourCounts,
}

/// One org's counts over the last hour (this replica's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HourCounts {
    /// Requests the org's credentials made (any route, any status).
    pub requests: u64,
    /// Of those, answered 4xx or 5xx.
    pub errors: u64,
    pub rate_limited: u64,
    pub plugin_failures: u64,
}

fn minute_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() / 60).unwrap_or(0)
}

impl Hourly {
    pub fn rate_limited(&self, org: Uuid) {
        self.note(org, |b| b.counts.rate_limited += 1);
    }

    pub fn plugin_failed(&self, org: Uuid) {
        self.note(org, |b| b.counts.plugin_failures += 1);
    }

    /// A request of the org answered with `status` (the traffic an operator sees per org).
    pub fn request(&self, org: Uuid, status: u16) {
        self.note(org, |b| {
            b.counts.requests += 1;
            if status >= 400 {
                b.counts.errors += 1;
            }
        });
    }

    fn note(&self, org: Uuid, f: impl FnOnce(&mut Bucket)) {
        let now = minute_now();
        let mut orgs = self.orgs.lock().unwrap_or_else(|p| p.into_inner());
        if !orgs.contains_key(&org) && orgs.len() >= MAX_COUNTED_ORGS {
            orgs.retain(|_, q| q.back().is_some_and(|b| b.minute + 60 > now));
            if orgs.len() >= MAX_COUNTED_ORGS {
                return;
            }
        }
        let q = orgs.entry(org).or_default();
        while q.front().is_some_and(|b| b.minute + 60 <= now) {
            q.pop_front();
        }
        if q.back().is_none_or(|b| b.minute != now) {
            q.push_back(Bucket { minute: now, counts: HourCounts::default() });
        }
        if let Some(b) = q.back_mut() {
            f(b);
        }
    }

    /// An org's counts over the last 60 minutes.
    pub fn last_hour(&self, org: Uuid) -> HourCounts {
        let now = minute_now();
        let orgs = self.orgs.lock().unwrap_or_else(|p| p.into_inner());
        orgs.get(&org).map_or(HourCounts::default(), |q| {
            q.iter().filter(|b| b.minute + 60 > now).fold(HourCounts::default(), |a, b| HourCounts {
                requests: a.requests + b.counts.requests,
                errors: a.errors + b.counts.errors,
                rate_limited: a.rate_limited + b.counts.rate_limited,
                plugin_failures: a.plugin_failures + b.counts.plugin_failures,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hourly_counts_per_org() {
        let h = Hourly::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        h.rate_limited(a);
        h.rate_limited(a);
        h.plugin_failed(a);
        h.plugin_failed(b);
        h.request(a, 200);
        h.request(a, 404);
        assert_eq!(h.last_hour(a), HourCounts { requests: 2, errors: 1, rate_limited: 2, plugin_failures: 1 });
        assert_eq!(h.last_hour(b), HourCounts { plugin_failures: 1, ..HourCounts::default() });
        assert_eq!(h.last_hour(Uuid::new_v4()), HourCounts::default());
    }

    #[test]
    fn cookie_is_read_only_when_well_formed() {
        let mut h = HeaderMap::new();
        let id = random_id();
        h.insert(http::header::COOKIE, HeaderValue::from_str(&format!("a=b; {COOKIE}={id}")).unwrap());
        assert_eq!(cookie(&h), Some(id));
        h.insert(http::header::COOKIE, HeaderValue::from_static("gateway_console=short"));
        assert_eq!(cookie(&h), None);
    }

    #[test]
    fn sessions_expire_and_close() {
        let c = Console::default();
        let (id, s) = c.open(Some((Uuid::nil(), [0; 32])));
        let mut h = HeaderMap::new();
        h.insert(http::header::COOKIE, HeaderValue::from_str(&format!("{COOKIE}={id}")).unwrap());
        assert_eq!(c.session(&h).map(|(_, x)| x.csrf), Some(s.csrf));
        c.close(&id);
        assert!(c.session(&h).is_none());
    }
}
