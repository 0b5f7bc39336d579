//! Phase 3: the body. Buffered under the route's cap, parsed as JSON when it claims to be (once,
//! strictly: [`strict`]), and checked for tenant fields: `org_id` / `tenant_id` must be the
//! caller's org, and a `business_id` (top level or in `props`) must be one the caller owns or
//! is on the team of.

pub mod strict;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;
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

pub async fn read(body: Incoming, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    if let Some(len) = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(too_large(limit));
        }
    }
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(too_large(limit)),
        Err(_) => Err(ApiError::new(Code::ValidationFailed, "could not read request body")),
    }
}

/// Bodies up to this size are read and dropped when a request is refused before its body
/// was needed; larger ones are left unread (the connection closes).
const DISCARD_LIMIT: u64 = 4 * 1024 * 1024;

pub async fn discard(body: Incoming, headers: &HeaderMap) {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n == 0 || n > DISCARD_LIMIT) {
        return;
    }
    let limited = http_body_util::Limited::new(body, DISCARD_LIMIT as usize);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), limited.collect()).await;
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
