//! The request pipeline, one module per phase, in order:
//!
//! `head` (Host, target length, header size) → `guard` (who, for which org, may they) → `limit` (rate limits) → `payload` (body cap) →
//! `verify` (webhook signatures over the raw body) → `payload` again (JSON, tenant fields in
//! the body) → `dispatch` (native handler or plugin) → `respond` (wire format) → `log` (one
//! access line, and the request's metrics). Logging always runs, whichever phase ended the
//! request, and so does recording its metrics.

pub mod dispatch;
pub mod guard;
pub mod head;
pub mod limit;
pub mod log;
pub mod payload;
pub mod respond;
pub mod verify;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::error::{ApiError, Code};
use crate::policy::Lookup;
use crate::state::AppState;

pub use dispatch::{Call, Reply};

/// What the pipeline knows of the connection a request came on.
#[derive(Clone)]
pub struct Client {
    pub addr: IpAddr,
    pub body: payload::BodyTimeouts,
}

/// Serves one request end to end. Never fails: every error becomes a coded response. The
/// access line and the request's metrics are written whichever phase ended it.
pub async fn handle(state: Arc<AppState>, req: Request<Incoming>, client: &Client) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let _active = state.metrics.active_request();
    let mut entry = log::Entry::new(respond::request_id(req.headers()), &req);
    let reply = pipeline(&state, req, client, &mut entry).await;
    let resp = respond::finish(reply, &entry.request_id);
    entry.status = resp.status().as_u16();
    entry.error_code = resp.extensions().get::<respond::ErrorCode>().map(|c| c.0);
    let elapsed = started.elapsed();
    log::emit(&entry, elapsed);
    if let Some(org) = entry.org {
        state.console.hourly.request(org, entry.status);
    }
    state.metrics.request(&entry.method, entry.route.as_ref(), entry.status, entry.org, elapsed);
    resp
}

async fn pipeline(state: &AppState, req: Request<Incoming>, client: &Client, entry: &mut log::Entry) -> Result<Reply, ApiError> {
    let (parts, body) = req.into_parts();
    if let Err(e) = head::check(&parts) {
        payload::discard(body, &parts.headers, &client.body).await;
        return Err(e);
    }
    let peer = client.addr;
    let path = parts.uri.path();
    if parts.method == http::Method::GET {
        match path {
            "/healthz" => return dispatch::healthz(state),
            "/readyz" => return dispatch::readyz(state),
            _ => {}
        }
    }
    // Seed 002: tenants never manage tokens themselves, whatever the policies say.
    if path == "/v1/auth/tokens" || path.starts_with("/v1/auth/tokens/") {
        return Err(ApiError::forbidden("token management is reserved to super-admins"));
    }
    let routing = state.routing();
    let policies = &routing.policies;
    let (route, params) = match policies.lookup(&parts.method, path) {
        Lookup::Found(r, p) => (r, p),
        Lookup::WrongMethod => {
            return Err(ApiError::new(Code::MethodNotAllowed, "method not allowed on this path"))
        }
        Lookup::NotFound => return Err(ApiError::not_found()),
    };
    entry.route = Some(route.id.clone());
    let checked = async {
        let caller = guard::check(state, route, &params, &parts.headers, peer).await?;
        // Known from here: a refused request's access line and counts still name its org.
        entry.org = caller.org;
        entry.role = (route.auth != crate::policy::Auth::Public).then_some(caller.role);
        limit::check(state, route, &caller).await?;
        Ok::<_, ApiError>(caller)
    };
    // Looking up a credential waits on the database too.
    let checked = async {
        tokio::time::timeout(state.request_timeout, checked).await.unwrap_or_else(|_| Err(deadline_exceeded(route, state.request_timeout)))
    };
    let caller = match checked.await {
        Ok(c) => c,
        Err(e) => {
            // Refused before reading the body: read (and drop) a small one anyway, so closing
            // the connection with unread bytes does not reset it under the client's answer.
            payload::discard(body, &parts.headers, &client.body).await;
            // The console's pages send a browser without a session to its sign-in page.
            if route.auth == crate::policy::Auth::Console && e.code == Code::Unauthenticated {
                return Ok(crate::console::to_sign_in());
            }
            return Err(e);
        }
    };
    let body = payload::read(body, &parts.headers, route.body_limit, &client.body).await?;
    let verified = verify::check(policies, &state.metrics, &caller, &parts.headers, parts.uri.query(), &body)?;
    // From here on the request waits only on the database and the plugin: both are bounded
    // by its deadline, so a database that stops answering (frozen, partitioned) fails the
    // request with 503 instead of holding it for as long as the outage lasts.
    let deadline = deadline(state, route);
    let answered = tokio::time::timeout(deadline, async {
        let json = payload::inspect(state, route, &caller, &parts.headers, &body).await?;
        let call = Call {
            state,
            route,
            params,
            caller,
            request_id: &entry.request_id,
            peer,
            method: parts.method.clone(),
            path: path.to_string(),
            query: parts.uri.query().map(str::to_string),
            headers: parts.headers,
            body,
            json,
            verified,
        };
        dispatch::dispatch(call).await
    })
    .await;
    answered.unwrap_or_else(|_| Err(deadline_exceeded(route, deadline)))
}

fn deadline_exceeded(route: &crate::policy::Route, deadline: std::time::Duration) -> ApiError {
    tracing::warn!(route = %route.id, deadline_ms = deadline.as_millis() as u64, "request_deadline_exceeded");
    ApiError::new(Code::Unavailable, "the request did not complete in time (the database is not answering)")
        .with_header("retry-after", "1")
}

/// Above a plugin's own wall clock: its admission queue, settling its transaction, and
/// scheduling. The plugin runtime bounds each of these itself; this is the backstop.
const PLUGIN_DEADLINE_SLACK: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a request may take once its body is read: the route's plugin wall clock (plus
/// slack), or the gateway's `request_timeout` for native handlers.
fn deadline(state: &AppState, route: &crate::policy::Route) -> std::time::Duration {
    match route.target {
        crate::policy::Target::Plugin(_) => route.sandbox.timeout + PLUGIN_DEADLINE_SLACK,
        crate::policy::Target::Native(_) => state.request_timeout,
    }
}
