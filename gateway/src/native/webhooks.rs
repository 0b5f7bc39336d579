//! Webhook endpoints (org admins), ingress (the signature is the credential) and the event
//! listing / replay routes. See `docs/webhooks.md`.

use chrono::{Duration, Utc};
use http::StatusCode;
use serde_json::{json, Value};

use serde::Deserialize;

use super::{parse, parse_or_default, uuid_param};
use crate::db;
use crate::error::{ApiError, Code};
use crate::phases::{Call, Reply};
use crate::policy::Provider;
use crate::role::Actor;
use crate::webhooks::{self, Scheme};

/// Default grace period of a rotated secret.
const DEFAULT_GRACE_SECS: i64 = 24 * 3600;
const MAX_GRACE_SECS: i64 = 7 * 24 * 3600;

fn org(call: &Call<'_>) -> Result<uuid::Uuid, ApiError> {
    call.caller.org.ok_or_else(ApiError::not_found)
}

#[derive(Deserialize)]
struct CreateEndpoint {
    provider: String,
    #[serde(default)]
    scheme: Option<String>,
    #[serde(default)]
    secret: Option<String>,
}

/// `POST /v1/webhook-endpoints {"provider", "scheme"?, "secret"?}` → 201 with the secret (and,
/// for `url-token`, the delivery path that carries it), shown once.
pub async fn create_endpoint(call: Call<'_>) -> Result<Reply, ApiError> {
    let org = org(&call)?;
    let CreateEndpoint { provider, scheme, secret } = parse(&call)?;
    let provider_name = provider.as_str();
    let routing = call.state.routing();
    let policies = &routing.policies;
    let Some(provider) = policies.providers.get(provider_name) else {
        let mut known: Vec<_> = policies.providers.keys().cloned().collect();
        known.sort();
        return Err(ApiError::invalid("provider", &format!("unknown provider (known: {})", known.join(", "))));
    };
    // Checked before a transaction is opened: bad input writes nothing.
    webhooks::endpoint_scheme(provider, scheme.as_deref(), secret.as_deref())?;
    let mut tx = db::begin_tenant(&call.state.pool, org, call.caller.role.into()).await?;
    let created = webhooks::create_endpoint(&mut tx, call.state.endpoints.key(), provider, scheme.as_deref(), secret.as_deref(), call.caller.user).await?;
    tx.commit().await?;
    let (id, scheme) = (created.id, created.scheme);
    tracing::info!(org_id = %org, endpoint_id = %id, provider = provider_name, scheme = scheme.as_str(), "webhook_endpoint_created");
    let mut body = json!({
        "endpoint_id": id, "path": created.path, "provider": provider_name,
        "scheme": scheme.as_str(), "secret": created.secret,
    });
    match scheme {
        Scheme::HmacSha256 => body["signature_header"] = json!(provider.signature_header),
        Scheme::Smartlead => body["signature_header"] = json!(webhooks::verify::SMARTLEAD_SIGNATURE),
        _ => {}
    }
    Ok(Reply::json(StatusCode::CREATED, body))
}

/// `GET /v1/webhook-endpoints`: the org's endpoints (never their secrets).
pub async fn list_endpoints(call: Call<'_>) -> Result<Reply, ApiError> {
    let org = org(&call)?;
    let mut tx = db::begin_tenant(&call.state.pool, org, call.caller.role.into()).await?;
    let rows = db::webhooks::list_endpoints(&mut tx).await?;
    tx.commit().await?;
    let list: Vec<Value> = rows
        .iter()
        .map(|r| json!({
            "endpoint_id": r.id, "path": format!("/v1/webhooks/{}", r.id), "provider": r.provider, "scheme": r.scheme,
            "created_at": r.created_at, "disabled_at": r.disabled_at, "active": r.disabled_at.is_none(),
        }))
        .collect();
    Ok(Reply::json(StatusCode::OK, json!({ "endpoints": list })))
}

#[derive(Deserialize, Default)]
struct Rotate {
    grace_seconds: Option<i64>,
}

/// `POST /v1/webhook-endpoints/{endpoint_id}/rotate [{"grace_seconds"}]` → a new secret; the
/// previous ones stay valid for the grace period (default 24 h).
pub async fn rotate_endpoint(call: Call<'_>) -> Result<Reply, ApiError> {
    let org = org(&call)?;
    let id = uuid_param(&call, "endpoint_id")?;
    let bad_grace = || ApiError::invalid("grace_seconds", "must be an integer from 0 to 604800");
    let Rotate { grace_seconds } = parse_or_default(&call).map_err(|e| if matches!(call.json, Some(Value::Object(_))) { bad_grace() } else { e })?;
    let grace = match grace_seconds {
        None => DEFAULT_GRACE_SECS,
        Some(g) => Some(g).filter(|g| (0..=MAX_GRACE_SECS).contains(g)).ok_or_else(bad_grace)?,
    };
    let mut tx = db::begin_tenant(&call.state.pool, org, call.caller.role.into()).await?;
    let endpoint = db::webhooks::endpoint_for_update(&mut tx, id).await?.ok_or_else(ApiError::not_found)?;
    if endpoint.disabled_at.is_some() {
        return Err(ApiError::new(Code::Conflict, "this endpoint is disabled"));
    }
    let scheme = Scheme::parse(&endpoint.scheme).ok_or_else(|| ApiError::new(Code::Internal, "unknown scheme"))?;
    let until = Utc::now() + Duration::seconds(grace);
    db::webhooks::expire_secrets(&mut tx, id, until).await?;
    let (secret, key) = webhooks::generate_secret(scheme);
    db::webhooks::add_secret(&mut tx, id, &call.state.endpoints.key().seal(id, &key)).await?;
    let path = webhooks::delivery_path(id, scheme, &secret);
    // Every replica drops its cached copy of the endpoint at commit.
    tx.notify_invalidate().await?;
    tx.commit().await?;
    // This replica at once, without waiting for its own notification to come back.
    call.state.endpoints.forget(id);
    tracing::info!(org_id = %org, endpoint_id = %id, grace_seconds = grace, "webhook_secret_rotated");
    Ok(Reply::json(StatusCode::OK, json!({ "endpoint_id": id, "path": path, "secret": secret, "previous_valid_until": until })))
}

/// `DELETE /v1/webhook-endpoints/{endpoint_id}`: disables the endpoint (deliveries get 404).
pub async fn disable_endpoint(call: Call<'_>) -> Result<Reply, ApiError> {
    let org = org(&call)?;
    let id = uuid_param(&call, "endpoint_id")?;
    let mut tx = db::begin_tenant(&call.state.pool, org, call.caller.role.into()).await?;
    db::webhooks::endpoint_for_update(&mut tx, id).await?.ok_or_else(ApiError::not_found)?;
    db::webhooks::disable_endpoint(&mut tx, id).await?;
    tx.notify_invalidate().await?;
    tx.commit().await?;
    call.state.endpoints.forget(id);
    tracing::info!(org_id = %org, endpoint_id = %id, "webhook_endpoint_disabled");
    Ok(Reply::json(StatusCode::OK, json!({ "endpoint_id": id, "active": false })))
}

/// `POST /v1/webhooks/{endpoint_id}`: the guard resolved the endpoint, the verify phase
/// checked the signature; here the event and its job are committed together before the 200.
pub async fn ingress(call: Call<'_>) -> Result<Reply, ApiError> {
    let (Some(endpoint), Some(_)) = (&call.caller.endpoint, &call.verified) else {
        return Err(ApiError::new(Code::Internal, "webhook ingress without a verified endpoint"));
    };
    let (metrics, provider) = (call.state.metrics.clone(), endpoint.provider.clone());
    let answer = store(call).await;
    let outcome = match &answer {
        Ok((_, true)) => "accepted",
        Ok((_, false)) => "duplicate",
        Err(e) if e.code.status().is_client_error() => "invalid",
        Err(_) => "failed",
    };
    metrics.webhook_delivery(&provider, outcome);
    answer.map(|(reply, _)| reply)
}

/// Stores a verified delivery; `true` when it was new.
async fn store(call: Call<'_>) -> Result<(Reply, bool), ApiError> {
    let (Some(endpoint), Some(verified)) = (&call.caller.endpoint, &call.verified) else {
        return Err(ApiError::new(Code::Internal, "webhook ingress without a verified endpoint"));
    };
    let routing = call.state.routing();
    let policies = &routing.policies;
    let provider = policies.providers.get(&endpoint.provider).ok_or_else(|| {
        tracing::error!(endpoint_id = %endpoint.id, provider = %endpoint.provider, "webhook provider not in the policies");
        ApiError::new(Code::Unavailable, "this endpoint's provider is not configured").with_header("retry-after", "60")
    })?;
    if provider.route.is_none() {
        // Endpoints are refused for such a provider; this one predates a policy that dropped
        // its route, which is the operator's to fix, as above.
        tracing::error!(endpoint_id = %endpoint.id, provider = %endpoint.provider, "webhook provider has no route in the policies");
        return Err(ApiError::new(Code::Unavailable, "this endpoint's provider is not configured").with_header("retry-after", "60"));
    }
    let Identity { event_key, event_type } = identify(verified.webhook_id.as_deref(), &call.body, provider)?;
    let content_type = call.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(|s| s.chars().take(100).collect::<String>());
    let org = endpoint.org;
    let mut tx = db::begin_tenant(&call.state.pool, org, Actor::System).await?;
    let stored = db::webhooks::store_event(
        &mut tx,
        endpoint.id,
        &endpoint.provider,
        &event_key,
        event_type.as_deref(),
        &call.body,
        content_type.as_deref(),
        provider.max_attempts as i32,
        provider.retry_base_ms as i32,
    )
    .await?;
    tx.commit().await?;
    match stored {
        Some(event_id) => {
            tracing::info!(org_id = %org, endpoint_id = %endpoint.id, event_id = %event_id, "webhook_received");
            Ok((Reply::json(StatusCode::OK, json!({ "ok": true, "event_id": event_id })), true))
        }
        None => {
            tracing::info!(org_id = %org, endpoint_id = %endpoint.id, "webhook_duplicate");
            Ok((Reply::json(StatusCode::OK, json!({ "ok": true, "duplicate": true })), false))
        }
    }
}

/// What a delivery is stored under.
#[derive(Debug, PartialEq, Eq)]
pub struct Identity {
    pub event_key: String,
    pub event_type: Option<String>,
}

/// The event key (the verified `webhook-id`, or the values at the provider's `event_key`
/// pointers in the body) and the event type of a verified delivery. Both are stored as text
/// and shown in listings and adapter headers, so a control character in either (U+0000, which
/// PostgreSQL cannot store, among them) refuses the delivery with 400 `VALIDATION_FAILED`:
/// refused before anything is stored, and not retried by the provider as a 5xx would be.
pub fn identify(webhook_id: Option<&str>, body: &[u8], provider: &Provider) -> Result<Identity, ApiError> {
    let printable = |field: &str, text: &str| {
        if text.chars().any(char::is_control) {
            return Err(ApiError::invalid(field, "must not contain control characters"));
        }
        Ok(())
    };
    let parsed = || serde_json::from_slice::<Value>(body);
    let (event_key, json) = match webhook_id {
        Some(id) => {
            printable("webhook-id", id)?;
            (id.to_string(), parsed().ok())
        }
        None => {
            let json = parsed().map_err(|e| {
                ApiError::new(Code::InvalidJson, "request body is not valid JSON")
                    .with_details(json!({ "line": e.line(), "column": e.column() }))
            })?;
            let spec = &provider.event_key;
            let (key, from) = webhooks::find_event_key(&json, body, spec).ok_or_else(|| {
                let field = spec.alternatives.iter().map(|a| a.join(",")).collect::<Vec<_>>().join(" | ");
                ApiError::new(Code::ValidationFailed, "the body lacks the fields that identify the event")
                    .with_details(json!([{ "field": field, "problem": "must be non-empty strings or numbers" }]))
            })?;
            if let Some(pointers) = from {
                printable(&pointers.join(","), &key)?;
            }
            (key, Some(json))
        }
    };
    let event_type = match &json {
        Some(j) => webhooks::event_type(j, &provider.event_type),
        None => None,
    };
    if let Some((t, ptr)) = &event_type {
        printable(ptr, t)?;
    }
    let event_type = event_type.map(|(t, _)| t);
    Ok(Identity { event_key, event_type })
}

/// Job statuses as the API names them.
fn api_status(job_status: Option<&str>) -> &'static str {
    match job_status {
        Some("done") => "processed",
        Some("processing") => "processing",
        Some("dead") => "dead",
        _ => "pending",
    }
}

fn event_json(r: &db::webhooks::EventRow) -> Value {
    json!({
        "event_id": r.id, "endpoint_id": r.endpoint_id, "provider": r.provider, "event_type": r.event_type,
        "received_at": r.received_at, "status": api_status(r.status.as_deref()), "attempts": r.attempts.unwrap_or(0),
        "max_attempts": r.max_attempts, "last_error": r.last_error,
        "next_attempt_at": if matches!(r.status.as_deref(), Some("pending")) { json!(r.next_attempt_at) } else { Value::Null },
        "processed_at": if matches!(r.status.as_deref(), Some("done")) { json!(r.finished_at) } else { Value::Null },
    })
}

/// `GET /v1/webhook-events?status=&limit=`: newest first.
pub async fn list_events(call: Call<'_>) -> Result<Reply, ApiError> {
    let org = org(&call)?;
    let status = match call.query_param("status") {
        None | Some("") => None,
        Some("pending") => Some("pending"),
        Some("processing") => Some("processing"),
        Some("processed") => Some("done"),
        Some("dead") => Some("dead"),
        Some(_) => return Err(ApiError::invalid("status", "must be pending, processing, processed or dead")),
    };
    let limit = match call.query_param("limit") {
        None | Some("") => 50,
        Some(v) => v.parse::<i64>().ok().filter(|n| (1..=500).contains(n)).ok_or_else(|| ApiError::invalid("limit", "must be 1 to 500"))?,
    };
    let mut tx = db::begin_tenant(&call.state.pool, org, call.caller.role.into()).await?;
    let rows = db::webhooks::list_events(&mut tx, status, limit).await?;
    tx.commit().await?;
    Ok(Reply::json(StatusCode::OK, json!({ "events": rows.iter().map(event_json).collect::<Vec<_>>() })))
}

/// `GET /v1/webhook-events/{event_id}`.
pub async fn get_event(call: Call<'_>) -> Result<Reply, ApiError> {
    let org = org(&call)?;
    let id = uuid_param(&call, "event_id")?;
    let mut tx = db::begin_tenant(&call.state.pool, org, call.caller.role.into()).await?;
    let row = db::webhooks::event(&mut tx, id).await?.ok_or_else(ApiError::not_found)?;
    tx.commit().await?;
    Ok(Reply::json(StatusCode::OK, event_json(&row)))
}

/// `POST /v1/webhook-events/{event_id}/replay`: a dead event goes back in the queue with fresh
/// attempts; any other status is 409.
pub async fn replay_event(call: Call<'_>) -> Result<Reply, ApiError> {
    let org = org(&call)?;
    let id = uuid_param(&call, "event_id")?;
    let mut tx = db::begin_tenant(&call.state.pool, org, call.caller.role.into()).await?;
    if !db::webhooks::replay(&mut tx, id).await? {
        let exists = db::webhooks::event(&mut tx, id).await?.is_some();
        return Err(if exists { ApiError::new(Code::Conflict, "only dead events can be replayed") } else { ApiError::not_found() });
    }
    tx.commit().await?;
    tracing::info!(org_id = %org, event_id = %id, "webhook_event_replayed");
    Ok(Reply::json(StatusCode::OK, json!({ "event_id": id, "status": "pending" })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic() -> Provider {
        Provider {
            name: "generic".into(),
            route: Some("webhook_generic".into()),
            signature_header: Some("x-webhook-signature".into()),
            event_key: crate::policy::EventKey::all_of(&["/id", "/type"]),
            event_type: vec!["/type".into()],
            max_attempts: 5,
            retry_base_ms: 1000,
            capability: None,
            base_url: None,
            pace: None,
            verify: None,
            chain: Vec::new(),
            source: "webhooks.toml".into(),
        }
    }

    fn refused(r: Result<Identity, ApiError>) -> (u16, String) {
        let e = r.expect_err("refused");
        (e.code.status().as_u16(), e.details.map(|d| d[0]["field"].as_str().unwrap_or_default().to_string()).unwrap_or_default())
    }

    #[test]
    fn keys_and_types_come_from_the_header_or_the_body() {
        let p = generic();
        let body = br#"{"id": "m1", "type": "email.replied"}"#;
        let want = |k: &str| Identity { event_key: k.into(), event_type: Some("email.replied".into()) };
        assert_eq!(identify(Some("msg_1"), body, &p).unwrap(), want("msg_1"));
        assert_eq!(identify(None, body, &p).unwrap(), want("m1:email.replied"));
        // Standard Webhooks does not need a JSON body.
        assert_eq!(identify(Some("msg_1"), b"\x00not json", &p).unwrap(), Identity { event_key: "msg_1".into(), event_type: None });
    }

    #[test]
    fn control_characters_in_a_key_or_type_are_a_400_naming_the_field() {
        let p = generic();
        assert_eq!(refused(identify(Some("msg\t1"), b"{}", &p)), (400, "webhook-id".into()));
        assert_eq!(refused(identify(None, br#"{"id": "m\u0000", "type": "t"}"#, &p)), (400, "/id,/type".into()));
        assert_eq!(refused(identify(None, br#"{"id": "m1", "type": "t\u0000"}"#, &p)), (400, "/id,/type".into()));
        assert_eq!(refused(identify(Some("msg_1"), br#"{"type": "a\u0000b"}"#, &p)), (400, "/type".into()));
        assert_eq!(refused(identify(Some("msg_1"), br#"{"type": "line\nbreak"}"#, &p)), (400, "/type".into()));
        assert_eq!(refused(identify(Some("msg_1"), "{\"type\": \"c1\u{85}\"}".as_bytes(), &p)), (400, "/type".into()));
        // Not JSON, or no key: as before.
        assert_eq!(identify(None, b"nope", &p).unwrap_err().code, Code::InvalidJson);
        assert_eq!(refused(identify(None, br#"{"id": "m1"}"#, &p)), (400, "/id,/type".into()));
    }

    #[test]
    fn alternatives_fall_back_to_the_body_hash_and_types_to_the_next_pointer() {
        let p = Provider {
            event_key: crate::policy::EventKey::first_of(&[&["/reply_message/message_id", "/event_type"], &["/stats_id", "/event"]]),
            event_type: vec!["/event_type".into(), "/event".into()],
            ..generic()
        };
        let old = br#"{"event": "EMAIL_REPLIED", "stats_id": "s1"}"#;
        assert_eq!(identify(None, old, &p).unwrap(), Identity { event_key: "s1:EMAIL_REPLIED".into(), event_type: Some("EMAIL_REPLIED".into()) });
        let click = br#"{"event_type": "EMAIL_LINK_CLICK"}"#;
        let i = identify(None, click, &p).unwrap();
        assert!(i.event_key.starts_with("sha256:") && i.event_key.len() == 7 + 64, "{i:?}");
        assert_eq!(identify(None, click, &p).unwrap(), i);
        // A control character in the alternative that matched names that alternative.
        assert_eq!(refused(identify(None, br#"{"event": "E", "stats_id": "s\u0001"}"#, &p)), (400, "/stats_id,/event".into()));
        assert_eq!(identify(None, b"not json", &p).unwrap_err().code, Code::InvalidJson);
    }
}
