//! Phase 3: the body. Buffered under the route's cap, parsed as JSON when it claims to be (once,
//! strictly: [`strict`]), and checked for tenant fields: `org_id` / `tenant_id` must be the
//! caller's org, and a `business_id` (top level or in `props`) must be one the caller owns or
//! is on the team of.

pub mod strict;

use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;
use tokio::sync::watch;
use uuid::Uuid;

use crate::db;
use crate::error::{ApiError, Code};
use crate::phases::guard::Caller;
use crate::role::Role;
use crate::policy::{BodyKind, Idempotency, Route};
use crate::state::AppState;

fn too_large(limit: usize) -> ApiError {
    ApiError::new(Code::PayloadTooLarge, format!("body exceeds this route's limit of {limit} bytes"))
}

/// How long a request body may take, and the signal that cuts it short when the gateway drains.
///
/// Two clocks: `idle` (the longest pause between two reads) frees a dead client's connection
/// early, `total` bounds one that trickles a byte now and then, which no idle timeout catches.
#[derive(Clone)]
pub struct BodyTimeouts {
    pub idle: Duration,
    pub total: Duration,
    /// Becomes `true` when the gateway starts draining.
    pub draining: watch::Receiver<bool>,
}

/// After a shutdown signal, a body still being received gets this long to finish: a body that
/// has not arrived is not a request in flight, and must not hold the drain.
pub const DRAIN_BODY_GRACE: Duration = Duration::from_secs(1);

/// Why a body was not read to its end.
#[derive(Debug, PartialEq, Eq)]
enum Cut {
    TooLarge,
    /// The idle or total timeout ran out.
    Timeout,
    /// The gateway is draining and the grace ran out.
    Draining,
    /// The body was malformed (chunk framing) or the connection broke.
    Broken,
}

/// Reads `body` to its end, within `limit` bytes and `t`'s clocks.
async fn collect<B>(body: B, limit: usize, t: &BodyTimeouts) -> Result<Bytes, Cut>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    let mut body = body;
    let total = tokio::time::sleep(t.total);
    let mut draining = t.draining.clone();
    let drain = async move {
        if draining.wait_for(|d| *d).await.is_err() {
            // No one will ever signal: never cut.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(DRAIN_BODY_GRACE).await;
    };
    tokio::pin!(total, drain);
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    loop {
        let frame = tokio::select! {
            f = tokio::time::timeout(t.idle, body.frame()) => f.map_err(|_| Cut::Timeout)?,
            _ = &mut total => return Err(Cut::Timeout),
            _ = &mut drain => return Err(Cut::Draining),
        };
        let Some(frame) = frame else { break };
        // Trailers are ignored, as before.
        if let Ok(data) = frame.map_err(|_| Cut::Broken)?.into_data() {
            len += data.len();
            if len > limit {
                return Err(Cut::TooLarge);
            }
            if !data.is_empty() {
                chunks.push(data);
            }
        }
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => Bytes::from(chunks.concat()),
    })
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

pub async fn read(body: Incoming, headers: &HeaderMap, limit: usize, t: &BodyTimeouts) -> Result<Bytes, ApiError> {
    if declared_length(headers).is_some_and(|len| len > limit as u64) {
        // Read (and drop) a body small enough to, like any refused request's, so closing with
        // unread bytes does not reset the connection under the client's answer.
        discard(body, headers, t).await;
        return Err(too_large(limit));
    }
    match collect(body, limit, t).await {
        Ok(b) => Ok(b),
        Err(Cut::TooLarge) => Err(too_large(limit)),
        // The rest of the body is never read: the connection closes after the answer.
        Err(Cut::Timeout) => Err(ApiError::new(Code::RequestTimeout, "the request body did not arrive in time")
            .with_header("connection", "close")),
        Err(Cut::Draining) => Err(ApiError::new(Code::Unavailable, "the gateway is shutting down")
            .with_header("retry-after", "1")
            .with_header("connection", "close")),
        Err(Cut::Broken) => Err(ApiError::new(Code::ValidationFailed, "could not read request body")),
    }
}

/// Bodies up to this size are read and dropped when a request is refused before its body
/// was needed; larger ones are left unread (the connection closes).
const DISCARD_LIMIT: u64 = 4 * 1024 * 1024;

/// The longest a refused request's body is read for.
const DISCARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the client waits for `100 Continue` before sending its body (hyper sends it the
/// first time the body is read).
pub fn expects_continue(headers: &HeaderMap) -> bool {
    headers.get(http::header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

pub async fn discard(body: Incoming, headers: &HeaderMap, t: &BodyTimeouts) {
    // Reading would invite the body of a request we refuse; unread, hyper closes the
    // connection after the answer instead of sending `100 Continue`.
    if expects_continue(headers) {
        return;
    }
    if declared_length(headers).is_some_and(|n| n == 0 || n > DISCARD_LIMIT) {
        return;
    }
    let t = BodyTimeouts { total: t.total.min(DISCARD_TIMEOUT), ..t.clone() };
    let _ = collect(body, DISCARD_LIMIT as usize, &t).await;
}

pub async fn inspect(
    state: &AppState,
    route: &Route,
    caller: &Caller,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Option<Value>, ApiError> {
    if route.idempotency == Idempotency::Required && !headers.contains_key("idempotency-key") {
        return Err(ApiError::invalid("Idempotency-Key", "this route requires an Idempotency-Key header"));
    }
    if body.is_empty() || route.body == BodyKind::Raw {
        return Ok(None);
    }
    let json = parse_json(body)?;
    let Some(org) = caller.org else { return Ok(Some(json)) };
    check_tenant_fields(&json, org, &route.id)?;
    if let Value::Object(map) = &json {
        let business = map
            .get("business_id")
            .or_else(|| map.get("props").and_then(|p| p.get("business_id")));
        if let Some(b) = business.filter(|b| !b.is_null()) {
            check_business(state, &route.id, caller, org, b).await?;
        }
    }
    Ok(Some(json))
}

/// A JSON body, or 400 `INVALID_JSON` saying where and why: not JSON, a duplicate key, or
/// U+0000 in a string.
pub fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    strict::parse(body).map_err(|e| {
        let mut details = serde_json::json!({ "line": e.line, "column": e.column });
        let message = match e.refusal {
            strict::Refusal::Syntax => "request body is not valid JSON",
            strict::Refusal::DuplicateKey(key) => {
                details["duplicate_key"] = key.chars().take(64).collect::<String>().into();
                "request body has a duplicate key in an object"
            }
            strict::Refusal::Nul => "request body has a string containing U+0000 (NUL)",
        };
        ApiError::new(Code::InvalidJson, message).with_details(details)
    })
}

/// A top-level `org_id` / `tenant_id` must name the caller's org (403 `TENANT_MISMATCH`).
pub fn check_tenant_fields(json: &Value, org: Uuid, route_id: &str) -> Result<(), ApiError> {
    let Value::Object(map) = json else { return Ok(()) };
    for field in ["org_id", "tenant_id"] {
        if let Some(v) = map.get(field) {
            let same = v.as_str().and_then(|s| Uuid::parse_str(s).ok()) == Some(org);
            if !same {
                tracing::warn!(org_id = %org, field, route = route_id, "tenant_mismatch");
                return Err(ApiError::new(Code::TenantMismatch, format!("{field} in the body does not match your org")));
            }
        }
    }
    Ok(())
}

async fn check_business(state: &AppState, route_id: &str, caller: &Caller, org: Uuid, b: &Value) -> Result<(), ApiError> {
    let denied = || {
        // e.g. `crm_track_unauthorized_business` (seed 001's audit event name).
        let event = format!("{}_unauthorized_business", route_id.replace('.', "_"));
        tracing::warn!(org_id = %org, route = route_id, event = %event, "unauthorized_business");
        ApiError::new(Code::UnauthorizedBusiness, "business_id is not a business you belong to")
    };
    let business = b.as_str().and_then(|s| Uuid::parse_str(s).ok()).ok_or_else(denied)?;
    if caller.role == Role::SuperAdmin {
        // Acting on behalf of the org: the business must still be the org's.
        let mut tx = db::begin_tenant(&state.pool, org, caller.role.into()).await?;
        let exists = db::businesses::owner_of(&mut tx, business).await?.is_some();
        tx.commit().await?;
        return if exists { Ok(()) } else { Err(denied()) };
    }
    let user = caller.user.ok_or_else(denied)?;
    let mut tx = db::begin_tenant(&state.pool, org, caller.role.into()).await?;
    let ok = db::businesses::is_owner_or_member(&mut tx, business, user).await?;
    tx.commit().await?;
    if ok {
        Ok(())
    } else {
        Err(denied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;
    use futures::SinkExt;
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    use std::time::Instant;

    type Item = Result<Frame<Bytes>, std::io::Error>;
    type Tx = mpsc::Sender<Item>;

    fn body() -> (Tx, StreamBody<mpsc::Receiver<Item>>) {
        let (tx, rx) = mpsc::channel(16);
        (tx, StreamBody::new(rx))
    }

    fn timeouts(idle_ms: u64, total_ms: u64) -> (watch::Sender<bool>, BodyTimeouts) {
        let (tx, draining) = watch::channel(false);
        (tx, BodyTimeouts { idle: Duration::from_millis(idle_ms), total: Duration::from_millis(total_ms), draining })
    }

    /// Sends a byte every `every` until the receiver is gone.
    fn trickle(mut tx: Tx, every: Duration) {
        tokio::spawn(async move {
            while tx.send(Ok(Frame::data(Bytes::from_static(b"x")))).await.is_ok() {
                tokio::time::sleep(every).await;
            }
        });
    }

    #[tokio::test]
    async fn a_complete_body_is_read_within_its_limit() {
        let (_d, t) = timeouts(1_000, 1_000);
        let (mut tx, b) = body();
        tx.send(Ok(Frame::data(Bytes::from_static(b"ab")))).await.unwrap();
        tx.send(Ok(Frame::data(Bytes::from_static(b"cd")))).await.unwrap();
        drop(tx);
        assert_eq!(collect(b, 4, &t).await.unwrap(), Bytes::from_static(b"abcd"));
        let (mut tx, b) = body();
        tx.send(Ok(Frame::data(Bytes::from_static(b"abcde")))).await.unwrap();
        assert_eq!(collect(b, 4, &t).await, Err(Cut::TooLarge));
    }

    #[tokio::test]
    async fn a_body_that_trickles_is_cut_at_the_total_deadline() {
        // A byte every 20 ms never trips the 500 ms idle timeout; the 300 ms total does.
        let (_d, t) = timeouts(500, 300);
        let (tx, b) = body();
        trickle(tx, Duration::from_millis(20));
        let started = Instant::now();
        assert_eq!(collect(b, 1 << 20, &t).await, Err(Cut::Timeout));
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test]
    async fn a_body_that_pauses_is_cut_at_the_idle_timeout() {
        let (_d, t) = timeouts(200, 10_000);
        let (mut tx, b) = body();
        tx.send(Ok(Frame::data(Bytes::from_static(b"{")))).await.unwrap();
        let started = Instant::now();
        assert_eq!(collect(b, 1 << 20, &t).await, Err(Cut::Timeout));
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(2), "{took:?}");
        drop(tx);
    }

    #[tokio::test]
    async fn draining_cuts_a_body_after_the_grace() {
        let (drain, t) = timeouts(10_000, 60_000);
        let (tx, b) = body();
        trickle(tx, Duration::from_millis(20));
        let started = Instant::now();
        drain.send(true).unwrap();
        assert_eq!(collect(b, 1 << 20, &t).await, Err(Cut::Draining));
        let took = started.elapsed();
        assert!(took >= DRAIN_BODY_GRACE && took < DRAIN_BODY_GRACE * 3, "{took:?}");
    }

    #[tokio::test]
    async fn a_body_that_ends_within_the_grace_is_read() {
        let (drain, t) = timeouts(10_000, 60_000);
        drain.send(true).unwrap();
        let (mut tx, b) = body();
        tx.send(Ok(Frame::data(Bytes::from_static(b"ok")))).await.unwrap();
        drop(tx);
        assert_eq!(collect(b, 16, &t).await.unwrap(), Bytes::from_static(b"ok"));
    }

    #[test]
    fn expect_continue_is_recognised_whatever_its_case() {
        let mut h = HeaderMap::new();
        assert!(!expects_continue(&h));
        h.insert(http::header::EXPECT, http::HeaderValue::from_static("100-Continue"));
        assert!(expects_continue(&h));
    }
}
